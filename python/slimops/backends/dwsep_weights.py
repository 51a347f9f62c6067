"""dwsep_conv2d's weights in the CPU kernel's layout, packed once per layer.

A model calls each layer with the same weight tensors every time, and packing
them (the 1x1 weights transposed to [C][O]) was up to half of a late
MobileNetV2 block's time when done on every call. Entries are found by the 1x1
weight tensor's id, and a packing is reused while each of the four tensors is
over the same storage object, at the same address, with the same version
counter, shape, strides and dtype: in-place updates of the tensors (an
optimizer step, load_state_dict, copy_ under no_grad) bump the version, and
`.data = ...` or torch.utils.swap_tensors replace the storage, so all repack.
Writes that autograd does not see — in place through `.data` (`w.data.mul_(2)`)
or through a NumPy view — change neither: call clear() after them. Entries hold
weak references to the storages only (a weak reference to a tensor would make
swap_tensors, and so `module.to()` under
torch.__future__.set_swap_module_params_on_conversion(True), refuse it): a
layer's entry goes with the storage of its 1x1 weight. Tensors that do not
count versions (made in inference mode) get no entry: the kernel packs them
itself on every call, into a buffer of its own.

An entry also keeps the layer's last call (backends/cpu.py): a repeat of it
with the weights unchanged skips the op's checks and the kernel choice."""

import weakref

import torch

from .. import _C

_MAX_ENTRIES = 4096  # a bound for callers that make new weight tensors per call; cleared when reached


class _Entry:
    __slots__ = ("storages", "key", "packed", "finalizer", "call")

    def __init__(self):
        self.storages, self.key, self.packed, self.finalizer = (), None, None, None
        self.call = None  # the CPU kernel's record of the last call it ran with these weights

    def update(self, tensors, key, packed):
        """Now the packing of these tensors (a call recorded for the old weights is forgotten)."""
        self.storages = tuple(None if t is None else weakref.ref(t.untyped_storage()) for t in tensors)
        self.key, self.packed, self.call = key, packed, None

    def unchanged(self, tensors):
        """Whether these (dw_weight, dw_bias, pw_weight, pw_bias) are the entry's, unchanged."""
        key = _key(tensors)
        return key is not None and self.matches(tensors, key)

    def matches(self, tensors, key):
        if self.key != key:  # the key has None where the entry's tensor was None
            return False
        for storage, t in zip(self.storages, tensors):
            if t is not None and storage() is not t.untyped_storage():
                return False
        return True


_entries: dict[int, _Entry] = {}  # by id(pw_weight)


def clear() -> None:
    """Drop every packing (after writing weights where their version counter does not see it)."""
    entries = list(_entries.values())  # a snapshot: another thread may add an entry while we detach
    _entries.clear()
    for entry in entries:
        entry.finalizer.detach()


def _drop(key, entry):
    """The finalizer of an entry's 1x1 weight storage: forget the entry, unless its id now names another."""
    if _entries.get(key) is entry:
        del _entries[key]


def _tensor_key(t):
    # The dtype too: `.data = w.data.view(torch.int32)` keeps the address, shape and strides.
    return None if t is None else (t.data_ptr(), t._version, t.shape, t.stride(), t.dtype)


def _key(tensors):
    dw_weight, dw_bias, pw_weight, pw_bias = tensors  # spelled out: a generator here cost a microsecond a call
    try:
        return (_tensor_key(dw_weight), _tensor_key(dw_bias), _tensor_key(pw_weight), _tensor_key(pw_bias))
    except RuntimeError:  # "Inference tensors do not track version counter"
        return None


def _pack(dw_weight, dw_bias, pw_weight, pw_bias):
    c, o, taps = dw_weight.shape[0], pw_weight.shape[0], dw_weight.shape[2] * dw_weight.shape[3]
    floats = _C.dwsep_packed_floats(c, o, taps)
    if floats < 0:
        raise ValueError(f"slimops.dwsep_conv2d: sizes out of range (C={c}, O={o}, taps={taps})")
    dw, pw = dw_weight.contiguous(), pw_weight.contiguous()
    db = None if dw_bias is None else dw_bias.contiguous()
    pb = None if pw_bias is None else pw_bias.contiguous()
    packed = torch.empty(floats, dtype=torch.float32)
    _C.dwsep_pack_weights_cpu(dw.data_ptr(), 0 if db is None else db.data_ptr(), pw.data_ptr(),
                              0 if pb is None else pb.data_ptr(), c, o, taps, packed.data_ptr(),
                              torch.get_num_threads())
    return packed


def entry_of(pw_weight) -> _Entry | None:
    """The entry made for this 1x1 weight tensor, if any, whether or not the weights changed since
    (see _Entry.unchanged)."""
    return _entries.get(id(pw_weight))


def entry_for(dw_weight, dw_bias, pw_weight, pw_bias) -> _Entry | None:
    """The entry holding the packed float32 weights of these tensors (float32 CPU, shapes checked by
    the op), packing them if they changed, or None for tensors that do not count versions."""
    tensors = (dw_weight, dw_bias, pw_weight, pw_bias)
    key = _key(tensors)
    if key is None:
        return None
    entry = _entries.get(id(pw_weight))
    if entry is not None and entry.matches(tensors, key):
        return entry
    packed = _pack(*tensors)
    if entry is None:
        if len(_entries) >= _MAX_ENTRIES:
            clear()
        entry = _entries[id(pw_weight)] = _Entry()
    old_storage = entry.storages[2]() if entry.storages else None
    entry.update(tensors, key, packed)
    storage = pw_weight.untyped_storage()
    if old_storage is not storage:  # a first packing, or new storage: one finalizer, on the storage now used
        if entry.finalizer is not None:
            entry.finalizer.detach()
        entry.finalizer = weakref.finalize(storage, _drop, id(pw_weight), entry)
    return entry
