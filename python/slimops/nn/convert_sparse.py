"""slimops.convert(model, SparseConfig(...)): replace a model's nn.Linear layers by
SparseLinear modules, in place."""

import fnmatch
from collections import Counter
from dataclasses import dataclass, field

from torch import nn

from ..sparse_layout import describe
from ._replace import module_bytes, progress_bar, set_child
from .sparse_linear import SparseLinear, check_layout_options


@dataclass(frozen=True)
class SparseConfig:
    """SparseLinear.from_linear's layout, sparsity, block, pattern and expected_rows for
    every nn.Linear convert() matches. skip: fnmatch patterns of qualified module names
    to leave alone (e.g. "classifier", "*.lm_head"); min_features: layers with fewer
    input features stay nn.Linear."""

    layout: str = "auto"
    sparsity: float | None = None
    block: tuple[int, int] = (16, 16)
    pattern: tuple[int, int] | None = None
    expected_rows: int = 1
    skip: tuple[str, ...] = ()
    min_features: int = 0


@dataclass
class SparseConversionSummary:
    layouts: dict[str, str] = field(default_factory=dict)  # converted layer -> its layout, e.g. "csr", "nm 2:4"
    skipped: list[str] = field(default_factory=list)
    bytes_before: int = 0  # of the converted layers' parameters and buffers
    bytes_after: int = 0

    @property
    def converted(self) -> list[str]:
        return list(self.layouts)

    def __str__(self) -> str:
        counts = ", ".join(f"{layout} {count}" for layout, count in Counter(self.layouts.values()).items())
        ratio = self.bytes_before / self.bytes_after if self.bytes_after else float("nan")
        return (
            f"slimops.convert: {len(self.layouts)} layers made SparseLinear ({counts or 'none'}), "
            f"{len(self.skipped)} left nn.Linear; {_size(self.bytes_before)} -> {_size(self.bytes_after)} "
            f"({ratio:.2f}x smaller)"
        )


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:.1f} MiB" if n_bytes >= 2**20 else f"{n_bytes / 2**10:.1f} KiB"


def sparsify(model: nn.Module, config: SparseConfig, progress: bool | None = None) -> SparseConversionSummary:
    """Replace every nn.Linear of model that config selects by SparseLinear.from_linear.
    Every layer is converted before any is swapped in, so a layer that cannot take the
    layout (a ValueError naming it) leaves the model unchanged."""
    check_layout_options(config.layout, config.sparsity, config.pattern, config.expected_rows)
    linears = [(name, m) for name, m in model.named_modules() if type(m) is nn.Linear]
    summary = SparseConversionSummary(skipped=[name for name, m in linears if not _selected(name, m, config)])
    replacements = []
    for name, linear in progress_bar([(n, m) for n, m in linears if _selected(n, m, config)], progress):
        try:
            sparse = SparseLinear.from_linear(linear, config.layout, config.sparsity, config.block, config.pattern,
                                              config.expected_rows)
        except ValueError as error:
            raise ValueError(f"slimops.convert: layer {name!r}: {error}") from error
        sparse.train(linear.training)
        replacements.append((name, linear, sparse))
    for name, linear, sparse in replacements:
        set_child(model, name, sparse)
        summary.layouts[name] = describe(sparse.layout, sparse.block, sparse.pattern)
        summary.bytes_before += module_bytes(linear)
        summary.bytes_after += module_bytes(sparse)
    return summary


def _selected(name: str, linear: nn.Linear, config: SparseConfig) -> bool:
    return not (any(fnmatch.fnmatchcase(name, pattern) for pattern in config.skip)
                or linear.in_features < config.min_features)
