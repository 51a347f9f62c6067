"""What the model converters share: replacing a submodule by name, the bytes a
layer holds, and an optional progress bar."""

from torch import nn

# Below this many layers a progress bar is noise.
_PROGRESS_MIN_LAYERS = 50


def module_bytes(module: nn.Module) -> int:
    """Bytes of the module's own parameters and buffers (not its children's)."""
    tensors = list(module.parameters(recurse=False)) + list(module.buffers(recurse=False))
    return sum(t.numel() * t.element_size() for t in tensors)


def progress_bar(items, enabled: bool | None):
    """items, wrapped in a tqdm bar when enabled (None: for 50 or more items) and tqdm is installed."""
    if enabled is None:
        enabled = len(items) >= _PROGRESS_MIN_LAYERS
    if not enabled:
        return items
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress is a nicety, not a requirement
        return items
    return tqdm(items, desc="slimops.convert", unit="layer")


def set_child(model: nn.Module, qualified_name: str, new: nn.Module) -> None:
    parent_name, _, child = qualified_name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
