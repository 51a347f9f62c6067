"""dwsep_conv2d: slimops' fused depthwise -> act -> 1x1 kernel against PyTorch eager running the same BN-folded
chain, depthwise conv -> act -> 1x1 conv, in channels_last and in NCHW, on the MobileNetV2 and EfficientNet-B0
blocks of ANCHORS.md, plus whole-suite rows that run every block of a suite back to back. On the CPU: float32
against oneDNN; on CUDA (scripts/gpu_check.sh, which allows the unverified Triton kernel): fp16 against cuDNN."""
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

    def __init__(self, c, h, stride, o, k, act, batch, gen, device="cpu", dtype=torch.float32):
        self.stride, self.pad, self.act = stride, (k - 1) // 2, act

        def make(*shape, scale=1.0):
            return (torch.randn(*shape, generator=gen) * scale).to(device, dtype)

        self.x_nchw = make(batch, c, h, h)
        self.x_cl = self.x_nchw.contiguous(memory_format=torch.channels_last)
        self.dw = make(c, 1, k, k, scale=1 / k)
        self.db = make(c, scale=0.1)
        self.pw = make(o, c, 1, 1, scale=1 / c**0.5)
        self.pb = make(o, scale=0.1)
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
        elements = self.x_nchw.numel() + b * ho * ho * self.o + self.c * (self.k * self.k + self.o)
        return self.x_nchw.element_size() * elements, ops


def run(device="cpu", quick=False, budget_s=1.5, log=print):
    import slimops  # noqa: F401  (registers torch.ops.slimops)

    configs = [("mobilenet_v2", 1)] if quick else [("mobilenet_v2", 1), ("mobilenet_v2", 32), ("efficientnet_b0", 1)]
    dtype = torch.float16 if device == "cuda" else torch.float32
    rows = []
    for suite, batch in configs:
        shapes, k, act = SUITES[suite]
        gen = torch.Generator().manual_seed(batch)
        # Made outside inference mode, as a model's parameters are: slimops packs such weights once
        # (backends/dwsep_weights.py), as it would for a DWSepConv2d layer.
        blocks = [Block(c, h, s, o, k, act, batch, gen, device, dtype) for c, h, s, o in (shapes[:2] if quick else shapes)]
        with torch.inference_mode():
            # On CUDA only the whole-suite rows: the GPU check's time goes to compiling the Triton configs.
            for block in blocks if device == "cpu" else []:
                rows.append(_row(suite, batch, [block], device, budget_s, _block_targets(suite, batch, device)))
            rows.append(_row(suite, batch, blocks, device, budget_s * 2, _suite_targets(suite, batch, device)))
    return rows


def _block_targets(suite, batch, device):
    # Issue 5: every MobileNetV2 shape >= 1.3x at batch 1 (channels_last, the faster eager format here).
    if device == "cpu" and (suite, batch) == ("mobilenet_v2", 1):
        return [Target(1.3, "eager-cl", "issue 5: every shape")]
    return []


def _suite_targets(suite, batch, device):
    # Issue 5 on the CPU; ANCHORS.md on the GPU (fp16 NHWC: >= 4x eager at batch 1 and 32).
    goals = {("mobilenet_v2", 1): 2.0, ("mobilenet_v2", 32): 1.5, ("efficientnet_b0", 1): 1.5}
    goal = 4.0 if device == "cuda" else goals[suite, batch]
    if device == "cuda" and suite != "mobilenet_v2":
        return []
    return [Target(goal, "eager-cl", "whole suite vs eager channels_last")]


def _row(suite, batch, blocks, device, budget_s, targets):
    def chain(fn):
        return lambda: [fn(b) for b in blocks]

    notes = [_check_once(blocks[0])] if len(blocks) == 1 else [f"{len(blocks)} blocks back to back"]
    candidates = [
        Candidate(SUBJECT, [chain(Block.slimops)]),
        Candidate("eager-cl", [chain(lambda b: b.eager(b.x_cl))]),
        Candidate("eager-nchw", [chain(lambda b: b.eager(b.x_nchw))]),
    ]
    nbytes, ops = (sum(v) for v in zip(*(b.counts() for b in blocks)))
    compute = "fp16" if device == "cuda" else "fp32"
    floor = (*ceilings.floor_ms(ceilings.for_machine(device, cpu_flags()), nbytes, ops, compute), nbytes, ops)
    b0 = blocks[0]
    shape = {"suite": suite, "batch": batch}
    if len(blocks) == 1:
        shape.update(C=b0.c, H=b0.h, stride=b0.stride, O=b0.o, k=b0.k, act=b0.act)
    else:
        shape["blocks"] = "all"
    if device == "cuda":
        import slimops

        args = (b0.x_cl, b0.dw, b0.db, b0.pw, b0.pb, [b0.stride] * 2, [b0.pad] * 4, [1, 1], b0.act, "none", False)
        kernel = slimops.backends.registry.choose(OP, b0.x_cl.device, b0.x_cl.dtype, args).name
        notes.append(f"slimops ran its {kernel!r} kernel")
    return measure(OP, shape, "hot", candidates, BASELINES, floor, targets, device, budget_s, notes)


def _check_once(block):
    """slimops and the eager chain against the float64 NumPy reference of the same block."""
    from slimops import reference

    p = block.pad
    host = [t.double().cpu().numpy() for t in (block.x_nchw, block.dw, block.db, block.pw, block.pb)]
    want = reference.dwsep_conv2d(*host, (block.stride,) * 2, (p, p, p, p), (1, 1), block.act, "none")
    scale = max(float(np.max(np.abs(want))), 1e-30)
    errs = {name: float(np.max(np.abs(y.double().cpu().numpy() - want))) / scale
            for name, y in (("slimops", block.slimops()), ("eager", block.eager(block.x_cl)))}
    limit = 1e-2 if block.x_cl.dtype == torch.float16 else 1e-5
    verdict = "" if max(errs.values()) <= limit else f" EXCEEDS {limit:g}"
    return "vs reference, max rel err: " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items()) + verdict
