"""Fused FlashAttention-2-style attention in Triton: forward, backward and an autograd.Function.

Why our own kernel: one fused path for every attention in UrbanCLIP (ViT self-attention, causal
text, cross-attention, Lq=1 and Lq=256 poolers) with key padding masks and bottom-right causal
alignment built in, instead of materialising a (B, 1, Lq, Lk) boolean mask for SDPA.

Numerics: scores are scaled by ``scale * log2(e)`` so the online softmax runs on ``exp2``; the
forward saves the per-row log-sum-exp (base 2) and the backward recomputes probabilities from
it. Everything accumulates in float32. A row whose keys are all masked keeps ``l = 0``: its
output is written as 0 and its log-sum-exp as +inf, so the backward's ``exp2(s - lse)`` is 0
there and its gradients are exactly zero (never NaN).

Backward: ``delta = rowsum(dO * O)`` first, then one kernel per key block (dK, dV: loops over
query blocks) and one per query block (dQ: loops over key blocks). No atomics, so two runs are
bitwise equal.

Head dims must be a power of two in 16..128 (one tile holds the whole head); lengths are
arbitrary (masked loads/stores). Inputs may be strided: every pointer uses explicit strides.
On the GPU block sizes are autotuned per (Lq, Lk, D, causal, mask, dtype, TF32 or not) among
configs that fit an H100's shared memory; under ``TRITON_INTERPRET=1`` (CPU tests) one small
fixed config is used, as autotuning there is slow. Launches use a 1-D grid (one program per
block per batch*head), so any B*H up to CUDA's 2**31 - 1 programs works.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os

import torch
import triton
import triton.language as tl
from torch import Tensor

LOG2E = 1.4426950408889634  # log2(e): scores scaled by it turn exp into exp2
# Read the way Triton does when it decorates the kernels below (triton.knobs is 3.4+ only).
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on",
                                                                         "yes", "y")
HEAD_DIMS = (16, 32, 64, 128)
DTYPES = (torch.float16, torch.bfloat16, torch.float32)


# Triton 3.8's interpreter multiplies bf16 operands of tl.dot as their uint16 bit patterns.
_INTERPRETER_BF16_DOT = tl.constexpr(INTERPRETED)


@triton.jit
def _mm(a, b, DOT_PREC: tl.constexpr):
    """``a @ b`` accumulated in fp32.

    Under the interpreter bf16 operands are widened to fp32 first (see above); that is exact,
    since a product of two bf16 values fits in fp32, so tests still see the GPU's numerics.
    """
    if _INTERPRETER_BF16_DOT:
        if a.dtype == tl.bfloat16:
            a = a.to(tl.float32)
            b = b.to(tl.float32)
    return tl.dot(a, b, input_precision=DOT_PREC)


@triton.jit
def _program(L, BLOCK: tl.constexpr):
    """(batch*head index, first row) of this program in the flat 1-D launch grid.

    One grid axis, blocks of one head adjacent (the launch order of a (blocks, B*H) grid, good
    for K/V reuse in L2), but bounded by 2**31 - 1 programs instead of CUDA's 65,535 limit on
    axes 1 and 2, which B*H alone exceeds for a ViT-B at batch 5,462.
    """
    n_blocks = tl.cdiv(L, BLOCK)
    pid = tl.program_id(0)
    return (pid // n_blocks).to(tl.int64), (pid % n_blocks) * BLOCK


@triton.jit
def _scores(q, k_ptrs, kpm_ptrs, offs_m, offs_n, Lk, diag, qk_scale,
            HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, BOUNDARY: tl.constexpr,
            DOT_PREC: tl.constexpr):
    """Load one key tile and return it with the base-2 scaled scores, masked to -inf.

    ``BOUNDARY`` blocks may hold keys past ``Lk`` or cross the causal diagonal; interior blocks
    skip those checks (the common case, so they stay cheap).
    """
    if BOUNDARY:
        k = tl.load(k_ptrs, mask=(offs_n < Lk)[:, None], other=0.0)
    else:
        k = tl.load(k_ptrs)
    s = _mm(q, tl.trans(k), DOT_PREC) * qk_scale
    if BOUNDARY:
        keep = (offs_n < Lk)[None, :]
        if CAUSAL:
            keep = keep & (offs_n[None, :] <= offs_m[:, None] + diag)
        s = tl.where(keep, s, float("-inf"))
    if HAS_MASK:
        if BOUNDARY:
            pad = tl.load(kpm_ptrs, mask=offs_n < Lk, other=1)
        else:
            pad = tl.load(kpm_ptrs)
        s = tl.where((pad == 0)[None, :], s, float("-inf"))
    return k, s


@triton.jit
def _fwd_blocks(acc, l_i, m_i, q, k_base, v_base, kpm_base, offs_m, lo, hi, Lk, diag, qk_scale,
                stride_kn, stride_kd, stride_vn, stride_vd, stride_mn,
                HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, BOUNDARY: tl.constexpr,
                DOT_PREC: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_D: tl.constexpr):
    """Online-softmax update over key blocks [lo, hi)."""
    offs_d = tl.arange(0, HEAD_D)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k_ptrs = k_base + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd
        _, s = _scores(q, k_ptrs, kpm_base + offs_n * stride_mn, offs_m, offs_n, Lk, diag,
                       qk_scale, HAS_MASK, CAUSAL, BOUNDARY, DOT_PREC)
        m_new = tl.maximum(m_i, tl.max(s, 1))
        # A row with no visible key so far has m_new = -inf; shift by 0 so exp2 gives 0, not NaN.
        m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(s - m_shift[:, None])
        alpha = tl.math.exp2(m_i - m_shift)
        l_i = l_i * alpha + tl.sum(p, 1)
        v_ptrs = v_base + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd
        if BOUNDARY:
            v = tl.load(v_ptrs, mask=(offs_n < Lk)[:, None], other=0.0)
        else:
            v = tl.load(v_ptrs)
        acc = acc * alpha[:, None] + _mm(p.to(v.dtype), v, DOT_PREC)
        m_i = m_new
    return acc, l_i, m_i


@triton.jit
def _fwd_kernel(Q, K, V, Out, LSE, KPM,
                stride_qb, stride_qh, stride_qm, stride_qd,
                stride_kb, stride_kh, stride_kn, stride_kd,
                stride_vb, stride_vh, stride_vn, stride_vd,
                stride_ob, stride_oh, stride_om, stride_od,
                stride_mb, stride_mn,
                H, Lq, Lk, LQ_BUCKET, LK_BUCKET, qk_scale,
                HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, HEAD_D: tl.constexpr,
                DOT_PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    bh, start_m = _program(Lq, BLOCK_M)
    b = bh // H
    h = bh % H
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_D)
    row_ok = offs_m < Lq
    q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm
                + offs_d[None, :] * stride_qd, mask=row_ok[:, None], other=0.0)
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    kpm_base = KPM + b * stride_mb
    diag = Lk - Lq  # bottom-right causal: query i sees keys j <= i + diag
    if CAUSAL:
        hi = tl.minimum(Lk, tl.maximum(start_m + BLOCK_M + diag, 0))
        full_hi = tl.minimum(hi, tl.maximum(start_m + diag + 1, 0))
    else:
        hi = Lk
        full_hi = Lk
    full_hi = (full_hi // BLOCK_N) * BLOCK_N
    acc = tl.zeros([BLOCK_M, HEAD_D], dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    acc, l_i, m_i = _fwd_blocks(acc, l_i, m_i, q, k_base, v_base, kpm_base, offs_m, 0, full_hi,
                                Lk, diag, qk_scale, stride_kn, stride_kd, stride_vn, stride_vd,
                                stride_mn, HAS_MASK, CAUSAL, False, DOT_PREC, BLOCK_N, HEAD_D)
    acc, l_i, m_i = _fwd_blocks(acc, l_i, m_i, q, k_base, v_base, kpm_base, offs_m, full_hi, hi,
                                Lk, diag, qk_scale, stride_kn, stride_kd, stride_vn, stride_vd,
                                stride_mn, HAS_MASK, CAUSAL, True, DOT_PREC, BLOCK_N, HEAD_D)
    empty = l_i == 0.0
    out = acc / tl.where(empty, 1.0, l_i)[:, None]
    lse = tl.where(empty, float("inf"), m_i + tl.math.log2(tl.where(empty, 1.0, l_i)))
    tl.store(LSE + bh * Lq + offs_m, lse, mask=row_ok)
    tl.store(Out + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om
             + offs_d[None, :] * stride_od, out.to(Out.dtype.element_ty), mask=row_ok[:, None])


@triton.jit
def _bwd_delta_kernel(Out, DO, DELTA,
                      stride_ob, stride_oh, stride_om, stride_od,
                      stride_db, stride_dh, stride_dm, stride_dd,
                      H, Lq, HEAD_D: tl.constexpr, BLOCK_M: tl.constexpr):
    """delta[b, h, i] = sum_d dO * O, the softmax-Jacobian term shared by dQ and dK."""
    bh, start_m = _program(Lq, BLOCK_M)
    b = bh // H
    h = bh % H
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_D)
    row_ok = (offs_m < Lq)[:, None]
    o = tl.load(Out + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_om
                + offs_d[None, :] * stride_od, mask=row_ok, other=0.0)
    do = tl.load(DO + b * stride_db + h * stride_dh + offs_m[:, None] * stride_dm
                 + offs_d[None, :] * stride_dd, mask=row_ok, other=0.0)
    delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
    tl.store(DELTA + bh * Lq + offs_m, delta, mask=offs_m < Lq)


@triton.jit
def _dkdv_blocks(dk, dv, k, v, q_base, do_base, lse_base, delta_base, offs_n, lo, hi, Lq, diag,
                 qk_scale, stride_qm, stride_qd, stride_dm, stride_dd,
                 CAUSAL: tl.constexpr, BOUNDARY: tl.constexpr, DOT_PREC: tl.constexpr,
                 BLOCK_M: tl.constexpr, HEAD_D: tl.constexpr):
    """Accumulate dK (unscaled) and dV of one key block over query blocks [lo, hi).

    Works on transposed tiles (keys x queries) so P^T and dS^T feed the matmuls straight from
    registers, with no register transpose. Query rows past Lq load q = dO = 0 and lse = +inf,
    so they contribute exactly nothing. Keys past Lk or padded only touch their own (unstored
    or zeroed) rows of dK/dV.
    """
    offs_d = tl.arange(0, HEAD_D)
    for start_m in range(lo, hi, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        row_ok = offs_m < Lq
        q_t = tl.load(q_base + offs_d[:, None] * stride_qd + offs_m[None, :] * stride_qm,
                      mask=row_ok[None, :], other=0.0)
        do = tl.load(do_base + offs_m[:, None] * stride_dm + offs_d[None, :] * stride_dd,
                     mask=row_ok[:, None], other=0.0)
        lse = tl.load(lse_base + offs_m, mask=row_ok, other=float("inf"))
        delta = tl.load(delta_base + offs_m, mask=row_ok, other=0.0)
        p_t = tl.math.exp2(_mm(k, q_t, DOT_PREC) * qk_scale - lse[None, :])
        if BOUNDARY:
            if CAUSAL:
                p_t = tl.where(offs_n[:, None] <= offs_m[None, :] + diag, p_t, 0.0)
        dv += _mm(p_t.to(do.dtype), do, DOT_PREC)
        dp_t = _mm(v, tl.trans(do), DOT_PREC)
        ds_t = (p_t * (dp_t - delta[None, :])).to(q_t.dtype)
        dk += _mm(ds_t, tl.trans(q_t), DOT_PREC)
    return dk, dv


@triton.jit
def _bwd_dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, KPM,
                     stride_qb, stride_qh, stride_qm, stride_qd,
                     stride_kb, stride_kh, stride_kn, stride_kd,
                     stride_vb, stride_vh, stride_vn, stride_vd,
                     stride_db, stride_dh, stride_dm, stride_dd,
                     stride_dkb, stride_dkh, stride_dkn, stride_dkd,
                     stride_dvb, stride_dvh, stride_dvn, stride_dvd,
                     stride_mb, stride_mn,
                     H, Lq, Lk, LQ_BUCKET, LK_BUCKET, qk_scale, scale,
                     HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, HEAD_D: tl.constexpr,
                     DOT_PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    bh, start_n = _program(Lk, BLOCK_N)
    b = bh // H
    h = bh % H
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_D)
    col_ok = offs_n < Lk
    k = tl.load(K + b * stride_kb + h * stride_kh + offs_n[:, None] * stride_kn
                + offs_d[None, :] * stride_kd, mask=col_ok[:, None], other=0.0)
    v = tl.load(V + b * stride_vb + h * stride_vh + offs_n[:, None] * stride_vn
                + offs_d[None, :] * stride_vd, mask=col_ok[:, None], other=0.0)
    q_base = Q + b * stride_qb + h * stride_qh
    do_base = DO + b * stride_db + h * stride_dh
    lse_base = LSE + bh * Lq
    delta_base = DELTA + bh * Lq
    diag = Lk - Lq
    q_end = tl.cdiv(Lq, BLOCK_M) * BLOCK_M
    if CAUSAL:
        # Queries below lo see none of this block; from full_lo on they see all of it.
        lo = (tl.maximum(start_n - diag, 0) // BLOCK_M) * BLOCK_M
        full_lo = tl.minimum(tl.cdiv(tl.maximum(start_n + BLOCK_N - 1 - diag, 0), BLOCK_M)
                             * BLOCK_M, q_end)
    else:
        lo = 0
        full_lo = 0
    dk = tl.zeros([BLOCK_N, HEAD_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_D], dtype=tl.float32)
    dk, dv = _dkdv_blocks(dk, dv, k, v, q_base, do_base, lse_base, delta_base, offs_n, lo,
                          full_lo, Lq, diag, qk_scale, stride_qm, stride_qd, stride_dm, stride_dd,
                          CAUSAL, True, DOT_PREC, BLOCK_M, HEAD_D)
    dk, dv = _dkdv_blocks(dk, dv, k, v, q_base, do_base, lse_base, delta_base, offs_n, full_lo,
                          q_end, Lq, diag, qk_scale, stride_qm, stride_qd, stride_dm, stride_dd,
                          CAUSAL, False, DOT_PREC, BLOCK_M, HEAD_D)
    dk = dk * scale
    if HAS_MASK:
        keep = (tl.load(KPM + b * stride_mb + offs_n * stride_mn, mask=col_ok, other=1) == 0)
        dk = tl.where(keep[:, None], dk, 0.0)
        dv = tl.where(keep[:, None], dv, 0.0)
    tl.store(DK + b * stride_dkb + h * stride_dkh + offs_n[:, None] * stride_dkn
             + offs_d[None, :] * stride_dkd, dk.to(DK.dtype.element_ty), mask=col_ok[:, None])
    tl.store(DV + b * stride_dvb + h * stride_dvh + offs_n[:, None] * stride_dvn
             + offs_d[None, :] * stride_dvd, dv.to(DV.dtype.element_ty), mask=col_ok[:, None])


@triton.jit
def _dq_blocks(dq, q, do, lse, delta, k_base, v_base, kpm_base, offs_m, lo, hi, Lk, diag,
               qk_scale, stride_kn, stride_kd, stride_vn, stride_vd, stride_mn,
               HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, BOUNDARY: tl.constexpr,
               DOT_PREC: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_D: tl.constexpr):
    """Accumulate dQ (unscaled) of one query block over key blocks [lo, hi)."""
    offs_d = tl.arange(0, HEAD_D)
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k_ptrs = k_base + offs_n[:, None] * stride_kn + offs_d[None, :] * stride_kd
        k, s = _scores(q, k_ptrs, kpm_base + offs_n * stride_mn, offs_m, offs_n, Lk, diag,
                       qk_scale, HAS_MASK, CAUSAL, BOUNDARY, DOT_PREC)
        p = tl.math.exp2(s - lse[:, None])
        v_ptrs = v_base + offs_n[:, None] * stride_vn + offs_d[None, :] * stride_vd
        if BOUNDARY:
            v = tl.load(v_ptrs, mask=(offs_n < Lk)[:, None], other=0.0)
        else:
            v = tl.load(v_ptrs)
        dp = _mm(do, tl.trans(v), DOT_PREC)
        ds = (p * (dp - delta[:, None])).to(k.dtype)
        dq += _mm(ds, k, DOT_PREC)
    return dq


@triton.jit
def _bwd_dq_kernel(Q, K, V, DO, LSE, DELTA, DQ, KPM,
                   stride_qb, stride_qh, stride_qm, stride_qd,
                   stride_kb, stride_kh, stride_kn, stride_kd,
                   stride_vb, stride_vh, stride_vn, stride_vd,
                   stride_db, stride_dh, stride_dm, stride_dd,
                   stride_dqb, stride_dqh, stride_dqm, stride_dqd,
                   stride_mb, stride_mn,
                   H, Lq, Lk, LQ_BUCKET, LK_BUCKET, qk_scale, scale,
                   HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, HEAD_D: tl.constexpr,
                   DOT_PREC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    bh, start_m = _program(Lq, BLOCK_M)
    b = bh // H
    h = bh % H
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_D)
    row_ok = offs_m < Lq
    q = tl.load(Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qm
                + offs_d[None, :] * stride_qd, mask=row_ok[:, None], other=0.0)
    do = tl.load(DO + b * stride_db + h * stride_dh + offs_m[:, None] * stride_dm
                 + offs_d[None, :] * stride_dd, mask=row_ok[:, None], other=0.0)
    lse = tl.load(LSE + bh * Lq + offs_m, mask=row_ok, other=float("inf"))
    delta = tl.load(DELTA + bh * Lq + offs_m, mask=row_ok, other=0.0)
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    kpm_base = KPM + b * stride_mb
    diag = Lk - Lq
    if CAUSAL:
        hi = tl.minimum(Lk, tl.maximum(start_m + BLOCK_M + diag, 0))
        full_hi = tl.minimum(hi, tl.maximum(start_m + diag + 1, 0))
    else:
        hi = Lk
        full_hi = Lk
    full_hi = (full_hi // BLOCK_N) * BLOCK_N
    dq = tl.zeros([BLOCK_M, HEAD_D], dtype=tl.float32)
    dq = _dq_blocks(dq, q, do, lse, delta, k_base, v_base, kpm_base, offs_m, 0, full_hi, Lk, diag,
                    qk_scale, stride_kn, stride_kd, stride_vn, stride_vd, stride_mn,
                    HAS_MASK, CAUSAL, False, DOT_PREC, BLOCK_N, HEAD_D)
    dq = _dq_blocks(dq, q, do, lse, delta, k_base, v_base, kpm_base, offs_m, full_hi, hi, Lk,
                    diag, qk_scale, stride_kn, stride_kd, stride_vn, stride_vd, stride_mn,
                    HAS_MASK, CAUSAL, True, DOT_PREC, BLOCK_N, HEAD_D)
    tl.store(DQ + b * stride_dqb + h * stride_dqh + offs_m[:, None] * stride_dqm
             + offs_d[None, :] * stride_dqd, (dq * scale).to(DQ.dtype.element_ty),
             mask=row_ok[:, None])


# ---------------------------------------------------------------------------------------------
# Launch configurations.
# Tuned per power-of-two length bucket (LQ_BUCKET/LK_BUCKET are passed only for this), not per
# exact length: KV-cached decoding grows Lk by one each step and must not re-tune every time.
# DOT_PREC is in the key: fp32 with and without TF32 run different instructions. (Triton adds
# the tensors' dtypes to the key itself.)
_TUNE_KEY = ["LQ_BUCKET", "LK_BUCKET", "HEAD_D", "CAUSAL", "HAS_MASK", "DOT_PREC"]
# (BLOCK_M, BLOCK_N, num_warps, num_stages) candidates. Small BLOCK_M serves the Lq=1 pooler
# and short decodes; the dK/dV kernel prefers wide key blocks and the dQ kernel wide query
# blocks. Few on purpose: each is compiled per (dtype, D, causal, mask) on first use.
_FWD_CONFIGS = [(128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (64, 64, 4, 3),
                (64, 32, 4, 3), (16, 64, 4, 3), (16, 32, 4, 2)]
_DKDV_CONFIGS = [(32, 128, 4, 3), (32, 128, 8, 3), (64, 128, 8, 3), (32, 64, 4, 3),
                 (64, 64, 4, 3), (16, 128, 4, 3), (16, 64, 4, 2)]
_DQ_CONFIGS = [(128, 32, 4, 3), (128, 64, 8, 3), (64, 32, 4, 3), (64, 64, 4, 3),
               (16, 32, 4, 2), (16, 64, 4, 3)]
# One small fixed config for the interpreter; BLOCK_M != BLOCK_N so tests catch axis mix-ups.
_INTERPRET_BLOCKS = {"BLOCK_M": 16, "BLOCK_N": 32}
MIN_BLOCK = 16  # the smallest block of any config above (and of the delta kernel)
MAX_PROGRAMS = 2**31 - 1  # CUDA's limit on grid axis 0, the only axis the launches use
SMEM_LIMIT = 227 * 1024  # shared memory one block may opt into on sm_90 (H100)


def _configs(candidates: list[tuple[int, int, int, int]]) -> list[triton.Config]:
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s)
            for bm, bn, w, s in candidates]


def _bucket(n: int) -> int:
    return max(16, triton.next_power_of_2(n))


def smem_estimate(streamed: int, resident: int, residents: int, head_d: int, element_size: int,
                  stages: int) -> int:
    """Shared memory (bytes) of a config, as Triton lays it out for sm_90: two tiles streamed
    per pipeline stage (K and V, or Q and dO) of ``streamed`` rows, plus ``residents`` tiles
    loaded once of ``resident`` rows, plus 1 KiB for small scratch (row statistics). At or above
    the truth for every config in this module at head dims 64 and 128 in bf16 and fp32 (checked
    against kernels compiled for sm_90), which is the safe side for pruning."""
    return (2 * stages * streamed + residents * resident) * head_d * element_size + 1024


def config_smem(config: triton.Config, streams: str, residents: int, head_d: int,
                element_size: int) -> int:
    """:func:`smem_estimate` of ``config`` for a kernel whose loop streams ``streams`` blocks
    ("BLOCK_N": forward and dQ, over keys; "BLOCK_M": dK/dV, over queries) and keeps
    ``residents`` tiles of the other block (forward: Q; dQ: Q, dO; dK/dV: K, V)."""
    resident = "BLOCK_M" if streams == "BLOCK_N" else "BLOCK_N"
    return smem_estimate(config.kwargs[streams], config.kwargs[resident], residents, head_d,
                         element_size, config.num_stages)


def _prune(configs: list[triton.Config], named_args: dict, *, streams: str, residents: int,
           **kwargs: object) -> list[triton.Config]:
    """Drop configs that cannot fit or do not fit the sequence.

    Too much shared memory for an H100 (:func:`config_smem` over ``SMEM_LIMIT``: the forward
    in fp32 at head dim 128 with 128x128 blocks compiles to 458,752 B), blocks far longer than
    the sequence they tile (e.g. BLOCK_M=128 for Lq=1), and the 16-row query blocks (meant for
    poolers and decoding) on long query sequences. Never returns an empty list.
    """
    cap_m, cap_n = named_args["LQ_BUCKET"], named_args["LK_BUCKET"]
    element_size = named_args["Q"].element_size()
    head_d = int(kwargs["HEAD_D"])
    fits = [c for c in configs
            if config_smem(c, streams, residents, head_d, element_size) <= SMEM_LIMIT] or configs
    kept = [c for c in fits if c.kwargs["BLOCK_M"] <= cap_m and c.kwargs["BLOCK_N"] <= cap_n
            and (c.kwargs["BLOCK_M"] > 16 or cap_m <= 64)]
    return kept or [min(fits, key=lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"])]


def _tuned(kernel, candidates: list[tuple[int, int, int, int]], streams: str, residents: int):
    """The kernel autotuned on the GPU, or with the fixed config in the interpreter."""
    if INTERPRETED:
        return lambda grid, *args, **kw: kernel[grid](*args, **kw, **_INTERPRET_BLOCKS)
    tuned = triton.autotune(_configs(candidates), key=_TUNE_KEY,
                            prune_configs_by={"early_config_prune": functools.partial(
                                _prune, streams=streams, residents=residents)})(kernel)
    return lambda grid, *args, **kw: tuned[grid](*args, **kw)


# (kernel, candidates, the block its loop streams, how many tiles of the other block stay)
_fwd = _tuned(_fwd_kernel, _FWD_CONFIGS, "BLOCK_N", 1)
_dkdv = _tuned(_bwd_dkdv_kernel, _DKDV_CONFIGS, "BLOCK_M", 2)
_dq = _tuned(_bwd_dq_kernel, _DQ_CONFIGS, "BLOCK_N", 2)
_DELTA_BLOCK_M = 16 if INTERPRETED else 64


# ---------------------------------------------------------------------------------------------
# Host side.
def unsupported_reason(q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None
                       ) -> str | None:
    """Why the kernel cannot take these inputs (None when it can); the caller falls back."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        return "q, k and v must be 4-D (B, H, L, D)"
    if not (q.device == k.device == v.device):
        return "q, k and v are on different devices"
    if not (q.is_cuda or INTERPRETED):
        return f"tensors on {q.device.type} need CUDA (or TRITON_INTERPRET=1 for tests)"
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in DTYPES:
        return f"dtypes {q.dtype}/{k.dtype}/{v.dtype}: the kernel needs one of fp16, bf16, fp32"
    b, h, lq, d = q.shape
    if k.shape != v.shape or k.shape[:2] != (b, h) or k.shape[-1] != d:
        return (f"shapes q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)} "
                "differ in B, H or D")
    if d not in HEAD_DIMS:
        return f"head dim {d} is not a power of two in 16..128"
    if lq == 0 or k.shape[2] == 0:
        return "empty sequence"
    if max(launch_grid(max(lq, k.shape[2]), MIN_BLOCK, b * h)) > MAX_PROGRAMS:
        return (f"B*H={b * h} with sequences of {max(lq, k.shape[2])} needs more than "
                f"{MAX_PROGRAMS} programs; split the batch")
    if key_padding_mask is not None and tuple(key_padding_mask.shape) not in (
            (b, k.shape[2]), (1, k.shape[2])):
        return f"key_padding_mask shape {tuple(key_padding_mask.shape)} is not (B, Lk)"
    return None


def launch_grid(length: int, block: int, batch_heads: int) -> tuple[int]:
    """The 1-D grid of a launch: one program per block of ``length`` rows per batch*head (the
    kernels unflatten it in ``_program``)."""
    return (triton.cdiv(length, block) * batch_heads,)


def _dot_precision(dtype: torch.dtype) -> str:
    # fp32 inputs honour PyTorch's TF32 switch, so the kernel matches what torch.matmul would do.
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"


def _mask_args(key_padding_mask: Tensor | None, q: Tensor, lk: int) -> tuple[Tensor, int, int]:
    """The padding mask as bytes (B, Lk), any strides; a 1-element dummy when absent."""
    if key_padding_mask is None:
        return torch.zeros(1, dtype=torch.uint8, device=q.device), 0, 0
    mask = key_padding_mask.to(device=q.device, dtype=torch.bool).expand(q.shape[0], lk)
    mask = mask.view(torch.uint8)
    return mask, mask.stride(0), mask.stride(1)


def _device_guard(t: Tensor) -> contextlib.AbstractContextManager:
    """Launch on the tensors' GPU, not whichever is current (multi-GPU machines)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def flash_forward(q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False,
                  key_padding_mask: Tensor | None = None, scale: float | None = None,
                  out: Tensor | None = None, lse: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Run the forward kernel; returns (out, lse2) with lse2 the base-2 log-sum-exp (B, H, Lq).

    ``out``/``lse`` may be given preallocated (tests pre-fill them with NaN to prove every
    element is written).
    """
    b, h, lq, d = q.shape
    lk = k.shape[2]
    scale = d ** -0.5 if scale is None else float(scale)
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device) if out is None else out
    lse = torch.empty((b, h, lq), dtype=torch.float32, device=q.device) if lse is None else lse
    mask, smb, smn = _mask_args(key_padding_mask, q, lk)

    with _device_guard(q):
        _fwd(lambda meta: launch_grid(lq, meta["BLOCK_M"], b * h),
             q, k, v, out, lse, mask, *q.stride(), *k.stride(), *v.stride(), *out.stride(),
             smb, smn, h, lq, lk, _bucket(lq), _bucket(lk), scale * LOG2E,
             HAS_MASK=key_padding_mask is not None, CAUSAL=bool(causal), HEAD_D=d,
             DOT_PREC=_dot_precision(q.dtype))
    return out, lse


def flash_backward(do: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor, *,
                   causal: bool = False, key_padding_mask: Tensor | None = None,
                   scale: float | None = None,
                   grads: tuple[Tensor, Tensor, Tensor] | None = None
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients (dq, dk, dv) from the saved forward output and base-2 log-sum-exp.

    ``grads`` may be preallocated (dq, dk, dv) buffers; tests poison them.
    """
    b, h, lq, d = q.shape
    lk = k.shape[2]
    scale = d ** -0.5 if scale is None else float(scale)
    if grads is None:
        grads = (torch.empty_like(q, memory_format=torch.contiguous_format),
                 torch.empty_like(k, memory_format=torch.contiguous_format),
                 torch.empty_like(v, memory_format=torch.contiguous_format))
    dq, dk, dv = grads
    delta = torch.empty((b, h, lq), dtype=torch.float32, device=q.device)
    mask, smb, smn = _mask_args(key_padding_mask, q, lk)
    flags = {"HAS_MASK": key_padding_mask is not None, "CAUSAL": bool(causal), "HEAD_D": d,
             "DOT_PREC": _dot_precision(q.dtype)}
    with _device_guard(q):
        _bwd_delta_kernel[launch_grid(lq, _DELTA_BLOCK_M, b * h)](
            out, do, delta, *out.stride(), *do.stride(), h, lq, HEAD_D=d, BLOCK_M=_DELTA_BLOCK_M)
        _dkdv(lambda meta: launch_grid(lk, meta["BLOCK_N"], b * h),
              q, k, v, do, lse, delta, dk, dv, mask, *q.stride(), *k.stride(), *v.stride(),
              *do.stride(), *dk.stride(), *dv.stride(), smb, smn, h, lq, lk, _bucket(lq),
              _bucket(lk), scale * LOG2E, scale, **flags)
        _dq(lambda meta: launch_grid(lq, meta["BLOCK_M"], b * h),
            q, k, v, do, lse, delta, dq, mask, *q.stride(), *k.stride(), *v.stride(),
            *do.stride(), *dq.stride(), smb, smn, h, lq, lk, _bucket(lq), _bucket(lk),
            scale * LOG2E, scale, **flags)
    return dq, dk, dv


class FlashAttention(torch.autograd.Function):
    """Fused attention with the Triton forward and backward kernels."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None,
                causal: bool, scale: float | None) -> Tensor:
        out, lse = flash_forward(q, k, v, causal=causal, key_padding_mask=key_padding_mask,
                                 scale=scale)
        ctx.save_for_backward(q, k, v, out, lse, key_padding_mask)
        ctx.causal = causal
        ctx.scale = scale
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, do: Tensor) -> tuple[Tensor | None, ...]:
        q, k, v, out, lse, key_padding_mask = ctx.saved_tensors
        dq, dk, dv = flash_backward(do, q, k, v, out, lse, causal=ctx.causal,
                                    key_padding_mask=key_padding_mask, scale=ctx.scale)
        return dq, dk, dv, None, None, None


def flash_attention(q: Tensor, k: Tensor, v: Tensor, *, causal: bool = False,
                    key_padding_mask: Tensor | None = None, scale: float | None = None) -> Tensor:
    """Differentiable fused attention; the caller has checked :func:`unsupported_reason`."""
    if scale is not None and not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    return FlashAttention.apply(q, k, v, key_padding_mask, causal, scale)
