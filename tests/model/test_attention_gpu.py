"""The Triton kernels compiled and run on a real GPU, against PyTorch's SDPA.

Every other attention test runs the kernels in Triton's interpreter (tests/conftest.py sets
TRITON_INTERPRET=1 for the whole session, and Triton reads it once, at import), which executes
the same code but not the GPU compiler, its layouts or CUDA's launch limits. So the check runs
in a child process without TRITON_INTERPRET. It skips where no CUDA device is visible.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="needs a CUDA GPU: runs the compiled Triton kernels, not the "
                              "interpreter"),
]

_CHILD = r'''
import importlib.util
import sys
import warnings

import torch

from urbangeo.model import triton_attention as ta
from urbangeo.model.attention import attention, select_backend

assert not ta.INTERPRETED, "the child must run the compiled kernels"
# A silent fallback to SDPA would make the check vacuous.
warnings.filterwarnings("error", message=".*cannot run this call.*", category=RuntimeWarning)
torch.backends.cuda.matmul.allow_tf32 = False  # fp32 cases: the kernel then uses IEEE dots
spec = importlib.util.spec_from_file_location("bench_attention", sys.argv[1])
bench = sys.modules["bench_attention"] = importlib.util.module_from_spec(spec)  # dataclasses
spec.loader.exec_module(bench)
Shape = bench.Shape


def run(inputs, shape, backend):
    q, k, v = (inputs[n] for n in "qkv")
    out = attention(q, k, v, causal=shape.causal, key_padding_mask=inputs["mask"],
                    backend=backend)
    return (out, *torch.autograd.grad(out, (q, k, v), inputs["grad_out"]))


def check(shape, dtype, mask=None, compare=None):
    """Ours within 2x SDPA's own error of float64 (plus ~2.5 ulps of the largest value, as
    either may round the other way), forward and gradients, over the batch rows ``compare``
    (default all: rows with no visible key are checked by the caller)."""
    inputs = bench.make_inputs(shape, dtype, torch.device("cuda"), seed=7, grad=True)
    if mask is not None:
        inputs["mask"] = mask
    assert select_backend(inputs["q"], inputs["k"], inputs["v"], inputs["mask"],
                          backend="triton") == ("triton", None), shape
    exact = dict(inputs, grad_out=inputs["grad_out"].double(),
                 **{n: inputs[n].detach().double().requires_grad_() for n in "qkv"})
    ref = run(exact, shape, "sdpa")
    ours = run(inputs, shape, "triton")
    theirs = run(inputs, shape, "sdpa")
    ulps = 1e-5 if dtype == torch.float32 else 1e-2
    rows = slice(None) if compare is None else torch.tensor(compare, device="cuda")
    for name, o, t, r in zip(("out", "dq", "dk", "dv"), ours, theirs, ref, strict=True):
        assert o.isfinite().all(), (shape, name)
        o, t, r = o[rows], t[rows], r[rows]
        err = (o.double() - r).abs().max().item()
        limit = 2 * (t.double() - r).abs().max().item() + ulps * max(1.0, r.abs().max().item())
        assert err <= limit, f"{shape.describe()} {dtype} {name}: error {err:.2e} > {limit:.2e}"
    print("ok", shape.name, shape.describe(), dtype, flush=True)
    return ours


for shape in bench.GPU_SHAPES:
    check(shape, torch.bfloat16)
for shape in (Shape("vit_fp32", 8, 12, 197, 197, 64), Shape("d128_fp32", 4, 4, 77, 256, 128)):
    check(shape, torch.float32)
for lq, lk in ((100, 300), (300, 100), (1, 77), (77, 1)):
    check(Shape(f"causal_{lq}x{lk}", 2, 4, lq, lk, 64, causal=True), torch.bfloat16)

# Fully masked rows: batch 1 has no visible key; its outputs and gradients must be exactly 0.
masked = Shape("fully_masked", 3, 4, 50, 70, 64, padded=True)
mask = torch.zeros(3, 70, dtype=torch.bool, device="cuda")
mask[1] = True
mask[2, 35:] = True
out, dq, dk, dv = check(masked, torch.bfloat16, mask, compare=[0, 2])
for name, t in (("out", out), ("dq", dq), ("dk", dk), ("dv", dv)):
    assert torch.equal(t[1], torch.zeros_like(t[1])), name
assert torch.equal(dk[2, :, 35:], torch.zeros_like(dk[2, :, 35:]))

# More batch*heads than CUDA allows on grid axes 1 and 2 (65,535).
many = Shape("many_heads", 4375, 16, 5, 9, 16, causal=True, padded=True)
assert many.batch * many.heads > 65535
check(many, torch.bfloat16)
check(Shape("many_heads_fp32", 4375, 16, 9, 5, 16), torch.float32)
print("ALL OK")
'''


@pytest.mark.timeout(1800)  # first use autotunes every shape: many kernel compilations
def test_compiled_kernels_match_sdpa_on_the_gpu(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton-cache")
    done = subprocess.run([sys.executable, "-c", _CHILD, str(REPO / "bench" / "attention.py")],
                          env=env, cwd=REPO, text=True, capture_output=True, timeout=1700)
    print(done.stdout)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-4000:])
    assert done.stdout.rstrip().endswith("ALL OK")
