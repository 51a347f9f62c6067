"""dwsep_conv2d on CPU: slimops' fused depthwise -> act -> 1x1 kernel against PyTorch eager (oneDNN) running the
same BN-folded chain, depthwise conv -> act -> 1x1 conv, in channels_last and in NCHW, on the MobileNetV2 and
EfficientNet-B0 blocks of ANCHORS.md; plus whole-suite rows that run every block of a suite back to back."""
import numpy as np
import torch
import torch.nn.functional as F

from . import ceilings
from .harness import Candidate, cpu_flags
from .row import SUBJECT, Target, measure

OP = "dwsep_conv2d"
# (C into the depthwise, H = W, stride, 1x1 output channels), ANCHORS.md "Benchmark shapes".
MOBILENET_V2 = [(32, 112, 1, 16), (96, 112, 2, 24), (144, 56, 1, 24), (144, 56, 2, 32), (192, 28, 1, 32),
                (192, 28, 2, 64), (384, 14, 1, 64), (384, 14, 1, 96), (576, 14, 2, 160), (960, 7, 1, 160),
                (960, 7, 1, 320)]
EFFICIENTNET_B0 = [(144, 56, 2, 40), (240, 28, 1, 40), (480, 14, 1, 112), (672, 14, 1, 112), (672, 14, 2, 192),
                   (1152, 7, 1, 192)]
SUITES = {"mobilenet_v2": (MOBILENET_V2, 3, "relu6"), "efficientnet_b0": (EFFICIENTNET_B0, 5, "silu")}
BASELINES = ["eager-cl", "eager-nchw"]
ACTIVATIONS = {"relu6": F.relu6, "silu": F.silu}


class Block:
    """One depthwise-separable block's weights and input, and the ways to run it."""

    def __init__(self, c, h, stride, o, k, act, batch, gen):
        self.stride, self.pad, self.act = stride, (k - 1) // 2, act
        self.x_nchw = torch.randn(batch, c, h, h, generator=gen)
        self.x_cl = self.x_nchw.contiguous(memory_format=torch.channels_last)
        self.dw = torch.randn(c, 1, k, k, generator=gen) / k
        self.db = torch.randn(c, generator=gen) * 0.1
        self.pw = torch.randn(o, c, 1, 1, generator=gen) / c**0.5
        self.pb = torch.randn(o, generator=gen) * 0.1
        self.c, self.h, self.o, self.k = c, h, o, k

    def slimops(self):
        p = self.pad
        return torch.ops.slimops.dwsep_conv2d(self.x_cl, self.dw, self.db, self.pw, self.pb, [self.stride] * 2,
                                              [p, p, p, p], [1, 1], self.act, "none", False)

    def eager(self, x):
        d = F.conv2d(x, self.dw, self.db, stride=self.stride, padding=self.pad, groups=self.c)
        return F.conv2d(ACTIVATIONS[self.act](d), self.pw, self.pb)

    def counts(self):
        ho = (self.h - 1) // self.stride + 1
        b = self.x_nchw.shape[0]
        ops = 2 * b * ho * ho * self.c * (self.k * self.k + self.o)
        nbytes = 4 * (self.x_nchw.numel() + b * ho * ho * self.o + self.c * (self.k * self.k + self.o))
        return nbytes, ops


def run(device="cpu", quick=False, budget_s=1.5, log=print):
    if device != "cpu":
        log("note: dwsep_conv2d is benchmarked on the CPU here; the Triton kernel is checked by scripts/gpu_check.sh")
        return []
    import slimops  # noqa: F401  (registers torch.ops.slimops)

    configs = [("mobilenet_v2", 1)] if quick else [("mobilenet_v2", 1), ("mobilenet_v2", 32), ("efficientnet_b0", 1)]
    rows = []
    with torch.inference_mode():
        for suite, batch in configs:
            shapes, k, act = SUITES[suite]
            gen = torch.Generator().manual_seed(batch)
            blocks = [Block(c, h, s, o, k, act, batch, gen) for c, h, s, o in (shapes[:2] if quick else shapes)]
            for block in blocks:
                rows.append(_row(suite, batch, [block], budget_s, _block_targets(suite, batch)))
            rows.append(_row(suite, batch, blocks, budget_s * 2, _suite_targets(suite, batch)))
    return rows


def _block_targets(suite, batch):
    # Issue 5: every MobileNetV2 shape >= 1.3x at batch 1 (channels_last, the faster eager format here).
    return [Target(1.3, "eager-cl", "issue 5: every shape")] if (suite, batch) == ("mobilenet_v2", 1) else []


def _suite_targets(suite, batch):
    goal = {("mobilenet_v2", 1): 2.0, ("mobilenet_v2", 32): 1.5, ("efficientnet_b0", 1): 1.5}[suite, batch]
    return [Target(goal, b, "issue 5: whole suite vs eager in its faster format") for b in BASELINES]


def _row(suite, batch, blocks, budget_s, targets):
    def chain(fn):
        return lambda: [fn(b) for b in blocks]

    notes = [_check_once(blocks[0])] if len(blocks) == 1 else [f"{len(blocks)} blocks back to back"]
    candidates = [
        Candidate(SUBJECT, [chain(Block.slimops)]),
        Candidate("eager-cl", [chain(lambda b: b.eager(b.x_cl))]),
        Candidate("eager-nchw", [chain(lambda b: b.eager(b.x_nchw))]),
    ]
    nbytes, ops = (sum(v) for v in zip(*(b.counts() for b in blocks)))
    floor = (*ceilings.floor_ms(ceilings.for_machine("cpu", cpu_flags()), nbytes, ops, "fp32"), nbytes, ops)
    b0 = blocks[0]
    shape = {"suite": suite, "batch": batch}
    if len(blocks) == 1:
        shape.update(C=b0.c, H=b0.h, stride=b0.stride, O=b0.o, k=b0.k, act=b0.act)
    else:
        shape["blocks"] = "all"
    return measure(OP, shape, "hot", candidates, BASELINES, floor, targets, "cpu", budget_s, notes)


def _check_once(block):
    """slimops and the eager chain against the float64 NumPy reference of the same block."""
    from slimops import reference

    p = block.pad
    want = reference.dwsep_conv2d(block.x_nchw.numpy(), block.dw.numpy(), block.db.numpy(), block.pw.numpy(),
                                  block.pb.numpy(), (block.stride,) * 2, (p, p, p, p), (1, 1), block.act, "none")
    scale = max(float(np.max(np.abs(want))), 1e-30)
    errs = {name: float(np.max(np.abs(y.double().numpy() - want))) / scale
            for name, y in (("slimops", block.slimops()), ("eager", block.eager(block.x_cl)))}
    verdict = "" if max(errs.values()) <= 1e-5 else " EXCEEDS 1e-5"
    return "vs reference, max rel err: " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()) + verdict
