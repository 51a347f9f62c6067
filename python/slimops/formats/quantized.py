"""QuantizedWeight: a linearly quantized [N, K] weight as plain tensors.

Layout version 1 (``state_dict()`` keys):
  qdata       int8 [N, K] (symmetric 8-bit), uint8 [N, K] (asymmetric 8-bit),
              uint8 [N, ceil(K/2)] (4-bit, two per byte; see quantization.pack_int4)
  scale       float32 [N, G] ([1, 1] per tensor; G = 1 per channel, K/group_size per group)
  zero_point  int32 [N, G] (asymmetric only)
  meta        int64 [5]: layout version, bits, group_size, symmetric, K
Loading checks every field against the others and refuses anything else.
"""

from dataclasses import dataclass

import torch

LAYOUT_VERSION = 1


@dataclass(frozen=True, eq=False)  # eq=False: == on tensors is elementwise, not a bool
class QuantizedWeight:
    qdata: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor | None
    bits: int
    group_size: int
    symmetric: bool
    shape: tuple[int, int]

    def __post_init__(self):
        _validate(self)

    def int_values(self) -> torch.Tensor:
        """The quantized integers, unpacked, as int8 (symmetric) or uint8."""
        if self.bits == 4:
            from ..quantization import unpack_int4

            return unpack_int4(self.qdata, self.shape[1], self.symmetric)
        return self.qdata

    def dequantize(self) -> torch.Tensor:
        """float32 [N, K]."""
        from ..quantization import dequantize_tensor

        return dequantize_tensor(self.int_values(), self.scale, self.zero_point, self.group_size)

    def state_dict(self) -> dict[str, torch.Tensor]:
        meta = torch.tensor([LAYOUT_VERSION, self.bits, self.group_size, int(self.symmetric), self.shape[1]])
        out = {"qdata": self.qdata, "scale": self.scale, "meta": meta}
        if self.zero_point is not None:
            out["zero_point"] = self.zero_point
        return out

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> "QuantizedWeight":
        missing = {"qdata", "scale", "meta"} - state.keys()
        if missing:
            raise ValueError(f"not a slimops QuantizedWeight state_dict: missing {sorted(missing)}")
        meta = state["meta"]
        if meta.dtype != torch.int64 or meta.shape != (5,):
            raise ValueError("QuantizedWeight state_dict: 'meta' must be int64 [5]")
        version, bits, group_size, symmetric, k = (int(v) for v in meta)
        if version != LAYOUT_VERSION:
            raise ValueError(
                f"QuantizedWeight layout version {version} is not supported (this slimops reads version {LAYOUT_VERSION})"
            )
        n = state["qdata"].shape[0] if state["qdata"].dim() == 2 else -1
        return cls(state["qdata"], state["scale"], state.get("zero_point"), bits, group_size, bool(symmetric), (n, k))


def _validate(w: QuantizedWeight) -> None:
    def fail(msg):
        raise ValueError(f"invalid QuantizedWeight: {msg}")

    if w.bits not in (4, 8):
        fail(f"bits must be 4 or 8, got {w.bits}")
    n, k = w.shape
    if n < 0 or k < 0:
        fail(f"bad shape {w.shape}")
    if w.group_size == 0:
        groups_shape = (1, 1)
    elif w.group_size == -1:
        groups_shape = (n, 1)
    elif w.group_size > 0 and k % w.group_size == 0:
        groups_shape = (n, k // w.group_size)
    else:
        fail(f"group_size {w.group_size} does not divide K={k}")
    packed_k = (k + 1) // 2 if w.bits == 4 else k
    qdtype = torch.uint8 if (w.bits == 4 or not w.symmetric) else torch.int8
    if w.qdata.dtype != qdtype or tuple(w.qdata.shape) != (n, packed_k):
        fail(f"qdata must be {qdtype} {(n, packed_k)}, got {w.qdata.dtype} {tuple(w.qdata.shape)}")
    if w.scale.dtype != torch.float32 or tuple(w.scale.shape) != groups_shape:
        fail(f"scale must be float32 {groups_shape}, got {w.scale.dtype} {tuple(w.scale.shape)}")
    if not bool(torch.isfinite(w.scale).all()):
        fail("scale holds NaN or Inf")
    if w.bits == 4 and w.symmetric and w.qdata.numel():
        # Symmetric nibbles hold q + 8 with q in [-7, 7]: a 0 nibble is corrupt.
        if bool(((w.qdata & 0xF) == 0).any()) or bool(((w.qdata >> 4) == 0).any()):
            fail("a symmetric 4-bit nibble is 0 (values are stored as q + 8, q in [-7, 7])")
    if w.symmetric:
        if w.zero_point is not None:
            fail("a symmetric weight has no zero_point")
    else:
        qmax = 2**w.bits - 1
        zp = w.zero_point
        if zp is None or zp.dtype != torch.int32 or tuple(zp.shape) != groups_shape:
            fail(f"zero_point must be int32 {groups_shape}")
        if zp.numel() and (int(zp.min()) < 0 or int(zp.max()) > qmax):
            fail(f"zero_point outside [0, {qmax}]")
