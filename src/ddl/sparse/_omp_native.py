"""The per-signal Batch-OMP loop in C, compiled on first use, with the pure-torch kernel as fallback.

Why: on a CPU, the torch kernel of :mod:`ddl.sparse.omp` runs every OMP step as ~20 tensor
operations over a (n_components, chunk) block; per signal a step then costs several passes
through memory plus per-operator dispatch, and the ``K·k²`` Gram–Schmidt term is ``k²/2``
full passes (profile in bench/README.md: at k = 38, 46 % of the time in ``addcmul_`` alone, and
the torch kernel reached 0.4x SPAMS there). Done one signal at a time with the signal's state
(its correlations, ``k`` Gram–Schmidt columns, L) in L1/L2 cache, the same arithmetic is a few
vectorised loops of length ``n_components`` per step, with no temporaries: 3-10x faster than the
torch kernel at k >= 2 on the machine measured. The GEMM ``X Dᵀ`` stays in torch (MKL).

How it is built: :func:`load` compiles the C source below with the system C compiler (``$CC``,
split like a shell word list, else ``cc``) into a shared library loaded by ``ctypes``, cached in
``$DDL_CACHE_DIR/native`` or else ``~/.cache/ddl/native``. The file name holds a hash of the
source, the flags, the compiler, the CPU model and its sorted instruction-set flags, so another
source, compiler or vector unit rebuilds (a home folder shared by two machines never loads an
AVX-512 build on a CPU without it). Nothing is compiled at install time, so the README's install
commands need no compiler; the first OMP call on a machine pays ~1 s of compilation.

Safety: compiled code is loaded only from a place this user owns and no one else can write. The
cache folder is created 0700 and checked (owner, no group/other write, every folder above it
owned by this user or root and not writable by others unless sticky); the library file is opened
without following links and checked by ``fstat`` (regular, ours, not group/other-writable)
before it is loaded. A folder or file that
fails is passed over with a one-line notice, and the kernel is built in a private ``mkdtemp``
folder instead (removed once loaded); there is no shared temporary folder. No compiler, a failed
or hung build (one timeout), an unloadable file: :func:`load` returns None, :func:`reason` says
why, and :mod:`ddl.sparse.kernel` runs the torch kernel (saying so once) unless ``native`` was
required.

Same bits on any x86-64: the flags forbid contraction into FMAs (``-ffp-contract=off``) and
fast-math; the vectorised loops are element-wise or max-reductions, exact in any order. So a
``-march=native`` build and a baseline ``-march=x86-64`` build code the same bits (tested); the
GEMM ``X Dᵀ`` is torch's (MKL), whose instruction set :mod:`ddl.provenance` records.

Why a hand-made loader and not Numba or an install-time build (a reasoned choice, Numba not
measured here): Numba is not among ddl's run-time dependencies (it brings llvmlite), and without
``fastmath`` (the contraction we must avoid) LLVM does not vectorise the float max-reduction of
the argmax scan that dominates k = 1; an install-time
build needs a compiler at ``pip install``, which the README's set-up commands must not. The C
kernel keeps W1 at 2-4x SPAMS (bench/README.md); the loader is the ~150 lines below.

``ctypes`` releases the GIL during the call, so chunks can be coded by several Python threads
(see ``_omp_native_run`` in :mod:`ddl.sparse.omp`).

The algorithm is the one documented in :mod:`ddl.sparse.omp` (Batch-OMP, Rubinstein et al. 2008,
Algorithm 5, with the correlations updated by Gram–Schmidt in the correlation domain), with the
same selection, tie-breaking (first index), stopping and dependent-atom rules.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import threading

_TEMPLATE = r"""
/* Batch-OMP per signal: a (K) correlations, Q (k_max x K) normalised Gram-Schmidt columns
   q_i = G_S L^-T e_i, L (k_max x k_max) Cholesky factor of G_SS, z = L^-1 a0_S. */

static REAL max_abs_REAL(const REAL* a, int64_t K)
{
    REAL mx = 0;
#pragma omp simd reduction(max:mx)
    for (int64_t t = 0; t < K; t++) { REAL v = FABS(a[t]); mx = v > mx ? v : mx; }
    return mx;
}

/* First t with |a[t]| == mx (mx = max |a|, so one exists for finite a). */
static int64_t find_abs_REAL(const REAL* a, int64_t K, REAL mx)
{
    int64_t t = 0;
#if defined(__AVX2__) && IS_FLOAT
    const __m256 sign = _mm256_set1_ps(-0.0f), vm = _mm256_set1_ps(mx);
    for (; t + 8 <= K; t += 8) {
        int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(a + t)),
                                                    vm, _CMP_EQ_OQ));
        if (mask) return t + __builtin_ctz(mask);
    }
#elif defined(__AVX2__)
    const __m256d sign = _mm256_set1_pd(-0.0), vm = _mm256_set1_pd(mx);
    for (; t + 4 <= K; t += 4) {
        int mask = _mm256_movemask_pd(_mm256_cmp_pd(_mm256_andnot_pd(sign, _mm256_loadu_pd(a + t)),
                                                    vm, _CMP_EQ_OQ));
        if (mask) return t + __builtin_ctz(mask);
    }
#endif
    for (; t < K; t++)
        if (FABS(a[t]) == mx) return t;
    return 0;
}

/* Codes m signals. A: (m, lda) correlations D x (row s = signal s), overwritten (each row is
   that signal's working correlations, so nothing is copied); norms2: (m) |x|^2;
   G: (K, K) Gram matrix; rows: (m) output row of each signal or NULL (= s);
   outputs (each may be NULL), indexed by output row: support (., k_max) int64 (-1 unused),
   coef (., k_max), codes (., K) dense, recon (., n) = codes @ D with D (K, n).
   work: (k_max + 2) * K + k_max * k_max + 2 * k_max REALs. tol < 0: none.
   Returns the largest number of atoms used; *n_dependent counts signals stopped by
   dependent atoms. */
int64_t omp_REAL(int64_t m, int64_t K, int64_t n, REAL* A, int64_t lda,
                 const REAL* norms2, const REAL* G, REAL gmax, int64_t k_max, double tol,
                 int ols, const int64_t* rows, REAL* work,
                 int64_t* support, REAL* coef, REAL* codes, const REAL* D, REAL* recon,
                 int64_t* n_dependent)
{
    const REAL eps = EPS;
    REAL* Q = work + K;
    REAL* s = Q + k_max * K;                 /* OLS: |P_perp d_t|^2 */
    REAL* L = s + K;
    REAL* z = L + k_max * k_max;
    REAL* gam = z + k_max;
    int64_t sup[k_max > 0 ? k_max : 1];
    int64_t max_steps = 0, dep = 0;
    for (int64_t i = 0; i < m; i++) {
        const int64_t row = rows ? rows[i] : i;
        REAL r2 = norms2[i];
        int64_t steps = 0;
        if (r2 * gmax >= eps && !(tol >= 0 && r2 <= tol)) {
            REAL* a = A + i * lda;
            REAL mx = ols ? 0 : max_abs_REAL(a, K);   /* max |a|, kept up to date below */
            if (ols)
                for (int64_t t = 0; t < K; t++) s[t] = G[t * K + t];
            for (int64_t k = 0; k < k_max; k++) {
                int64_t j;
                if (ols) {                          /* argmax a_t^2 / |P_perp d_t|^2 */
                    REAL best = -1; j = 0;
                    for (int64_t t = 0; t < K; t++) {
                        REAL v = a[t] * a[t] / s[t];
                        if (v > best) { best = v; j = t; }
                    }
                } else {
                    j = find_abs_REAL(a, K, mx);
                }
                const REAL val = a[j];
                REAL d2 = G[j * K + j];
                REAL* Lk = L + k * k_max;
                for (int64_t l = 0; l < k; l++) {
                    const REAL c = Q[l * K + j];
                    Lk[l] = c;
                    d2 -= c * c;
                }
                if (val * val < eps) break;
                if (d2 <= eps) { dep++; break; }
                const REAL Lkk = SQRT(d2), inv = 1 / Lkk, zk = val * inv;
                Lk[k] = Lkk;
                z[k] = zk;
                sup[k] = j;
                steps = k + 1;
                int done = 0;
                if (tol >= 0) { r2 -= zk * zk; done = r2 <= tol; }
                if (k == k_max - 1 || done) break;
                /* q_k = (G_j - sum_l c_l q_l) / L_kk and a -= z_k q_k: the columns go 4 at a
                   time, the last block fused with the normalisation, the update of a and
                   the next max |a| (one pass over K per step up to k = 4). */
                REAL* q = Q + k * K;
                const REAL* src = G + j * K;
                int64_t l = 0;
                for (; l + 4 < k; l += 4) {
                    const REAL c0 = Lk[l], c1 = Lk[l + 1], c2 = Lk[l + 2], c3 = Lk[l + 3];
                    const REAL *q0 = Q + l * K, *q1 = q0 + K, *q2 = q1 + K, *q3 = q2 + K;
#pragma omp simd
                    for (int64_t t = 0; t < K; t++)
                        q[t] = src[t] - (c0 * q0[t] + c1 * q1[t] + c2 * q2[t] + c3 * q3[t]);
                    src = q;
                }
                const int64_t nb = k - l;                   /* 0..4 columns left */
                const REAL c0 = nb > 0 ? Lk[l] : 0, c1 = nb > 1 ? Lk[l + 1] : 0,
                           c2 = nb > 2 ? Lk[l + 2] : 0, c3 = nb > 3 ? Lk[l + 3] : 0;
                const REAL* q0 = Q + l * K;
                const REAL *q1 = q0 + K, *q2 = q1 + K, *q3 = q2 + K;
                REAL nm = 0;
#define DDL_FUSED(EXPR)                                                        \
                _Pragma("omp simd reduction(max:nm)")                          \
                for (int64_t t = 0; t < K; t++) {                              \
                    REAL v = (EXPR) * inv;                                     \
                    q[t] = v;                                                  \
                    REAL na = a[t] - zk * v;                                   \
                    a[t] = na;                                                 \
                    na = FABS(na);                                             \
                    nm = na > nm ? na : nm;                                    \
                }
                switch (nb) {
                case 0: DDL_FUSED(src[t]) break;
                case 1: DDL_FUSED(src[t] - c0 * q0[t]) break;
                case 2: DDL_FUSED(src[t] - (c0 * q0[t] + c1 * q1[t])) break;
                case 3: DDL_FUSED(src[t] - (c0 * q0[t] + c1 * q1[t] + c2 * q2[t])) break;
                default: DDL_FUSED(src[t] - (c0 * q0[t] + c1 * q1[t] + c2 * q2[t] + c3 * q3[t])) break;
                }
#undef DDL_FUSED
                mx = nm;
                if (ols) {
                    for (int64_t t = 0; t < K; t++) {
                        REAL v = s[t] - q[t] * q[t];
                        s[t] = v > eps ? v : eps;
                    }
                    s[j] = (REAL)INFINITY;
                }
            }
        }
        /* gamma = L^-T z (back substitution) */
        for (int64_t l = steps - 1; l >= 0; l--) {
            REAL acc = z[l];
            for (int64_t p = l + 1; p < steps; p++) acc -= L[p * k_max + l] * gam[p];
            gam[l] = acc / L[l * k_max + l];
        }
        if (steps > max_steps) max_steps = steps;
        if (support) {
            int64_t* o = support + row * k_max;
            for (int64_t l = 0; l < k_max; l++) o[l] = l < steps ? sup[l] : -1;
        }
        if (coef) {
            REAL* o = coef + row * k_max;
            for (int64_t l = 0; l < k_max; l++) o[l] = l < steps ? gam[l] : 0;
        }
        if (codes) {
            REAL* o = codes + row * K;
            memset(o, 0, K * sizeof(REAL));
            for (int64_t l = 0; l < steps; l++) o[sup[l]] = gam[l];
        }
        if (recon) {
            REAL* o = recon + row * n;
            if (steps == 0) {
                memset(o, 0, n * sizeof(REAL));
            } else {
                const REAL g0 = gam[0];
                const REAL* d0 = D + sup[0] * n;
#pragma omp simd
                for (int64_t f = 0; f < n; f++) o[f] = g0 * d0[f];
                for (int64_t l = 1; l < steps; l++) {
                    const REAL g = gam[l];
                    const REAL* d = D + sup[l] * n;
#pragma omp simd
                    for (int64_t f = 0; f < n; f++) o[f] += g * d[f];
                }
            }
        }
    }
    *n_dependent += dep;
    return max_steps;
}

/* Patches [p0, p1) of the images x (N, C, H, W), contiguous; patch p = (image, row, column) in
   raster order of n_h x n_w positions, features channel-major (extract_patches' layout).
   Writes means[p - p0] (0 without remove_mean) and, compacted, the rows that need coding:
   P (cnt, C*ph*pw) centered, idx (cnt) = p, norms2 (cnt). A patch needs no atom when
   |x|^2 * gmax < eps or |x|^2 <= tol (tol >= 0), as in omp. Returns cnt. */
int64_t patches_REAL(const REAL* x, int64_t C, int64_t H, int64_t W, int64_t ph, int64_t pw,
                     int64_t sh, int64_t sw, int64_t p0, int64_t p1, int remove_mean,
                     REAL gmax, double tol, REAL* P, int64_t* idx, REAL* norms2, REAL* means)
{
    const int64_t n_h = (H - ph) / sh + 1, n_w = (W - pw) / sw + 1, per = n_h * n_w;
    const int64_t F = C * ph * pw;
    const REAL eps = EPS;
    int64_t cnt = 0;
    for (int64_t p = p0; p < p1; p++) {
        const int64_t img = p / per, pos = p % per, top = (pos / n_w) * sh, left = (pos % n_w) * sw;
        REAL* row = P + cnt * F;
        REAL sum = 0;
        int64_t f = 0;
        for (int64_t c = 0; c < C; c++) {
            const REAL* base = x + ((img * C + c) * H + top) * W + left;
            for (int64_t r = 0; r < ph; r++)
                for (int64_t q = 0; q < pw; q++) {
                    const REAL v = base[r * W + q];
                    row[f++] = v;
                    sum += v;
                }
        }
        const REAL mean = remove_mean ? sum / (REAL)F : 0;
        REAL n2 = 0;
        for (f = 0; f < F; f++) {
            const REAL v = row[f] - mean;
            row[f] = v;
            n2 += v * v;
        }
        means[p - p0] = mean;
        if (n2 * gmax >= eps && !(tol >= 0 && n2 <= tol)) {
            idx[cnt] = p;
            norms2[cnt] = n2;
            cnt++;
        }
    }
    return cnt;
}

/* Adds patches [p0, p1) back into sums (N, C, H, W): patch p is means[p - p0] plus, if it was
   coded (idx[l] = p for the compact row l of R (cnt, C*ph*pw)), that row. */
void fold_REAL(REAL* sums, int64_t C, int64_t H, int64_t W, int64_t ph, int64_t pw,
               int64_t sh, int64_t sw, int64_t p0, int64_t p1, const REAL* R,
               const int64_t* idx, int64_t cnt, const REAL* means)
{
    const int64_t n_h = (H - ph) / sh + 1, n_w = (W - pw) / sw + 1, per = n_h * n_w;
    const int64_t F = C * ph * pw;
    int64_t l = 0;
    for (int64_t p = p0; p < p1; p++) {
        const int64_t img = p / per, pos = p % per, top = (pos / n_w) * sh, left = (pos % n_w) * sw;
        const REAL mean = means[p - p0];
        const REAL* row = NULL;
        if (l < cnt && idx[l] == p) row = R + (l++) * F;
        int64_t f = 0;
        for (int64_t c = 0; c < C; c++) {
            REAL* base = sums + ((img * C + c) * H + top) * W + left;
            for (int64_t r = 0; r < ph; r++) {
                REAL* o = base + r * W;
                if (row)
                    for (int64_t q = 0; q < pw; q++) o[q] += mean + row[f + q];
                else
                    for (int64_t q = 0; q < pw; q++) o[q] += mean;
                f += pw;
            }
        }
    }
}

/* Backward of the denoiser with the supports held fixed (grad="exact"): for patches [p0, p1)
   of the image gradient g (N, C, H, W) (already divided by the overlap counts and masked by
   the clip), adds (C Pi_S + 11^T/F) g_p (remove_mean) or Pi_S g_p into gx at the patch's
   place, Pi_S = D_S^T G_SS^-1 D_S the projection on the patch's atoms support[p - p0, :k]
   (-1 = unused), C = I - 11^T/F the centering; both are symmetric, so this is the transpose
   of the forward Jacobian. work: F + k*k + 2*k REALs. */
void backward_REAL(const REAL* g, REAL* gx, int64_t C, int64_t H, int64_t W, int64_t ph,
                   int64_t pw, int64_t sh, int64_t sw, int64_t p0, int64_t p1,
                   const int64_t* support, int64_t k, const REAL* D, const REAL* G, int64_t K,
                   int remove_mean, REAL* work)
{
    const int64_t n_h = (H - ph) / sh + 1, n_w = (W - pw) / sw + 1, per = n_h * n_w;
    const int64_t F = C * ph * pw;
    REAL* gp = work;
    REAL* L = gp + F;
    REAL* c = L + k * k;
    REAL* y = c + k;
    for (int64_t p = p0; p < p1; p++) {
        const int64_t img = p / per, pos = p % per, top = (pos / n_w) * sh, left = (pos % n_w) * sw;
        const int64_t* S = support + (p - p0) * k;
        int64_t f = 0;
        REAL gsum = 0;
        for (int64_t ch = 0; ch < C; ch++) {
            const REAL* base = g + ((img * C + ch) * H + top) * W + left;
            for (int64_t r = 0; r < ph; r++)
                for (int64_t q = 0; q < pw; q++) { REAL v = base[r * W + q]; gp[f++] = v; gsum += v; }
        }
        int64_t s = 0;
        while (s < k && S[s] >= 0) s++;
        REAL add = remove_mean ? gsum / (REAL)F : 0;
        if (s > 0) {
            /* rhs = D_S gp; Cholesky of G_SS; c = G_SS^-1 rhs */
            for (int64_t l = 0; l < s; l++) {
                const REAL* d = D + S[l] * F;
                REAL acc = 0;
                for (f = 0; f < F; f++) acc += d[f] * gp[f];
                y[l] = acc;
                for (int64_t m = 0; m <= l; m++) {
                    REAL v = G[S[l] * K + S[m]];
                    for (int64_t t = 0; t < m; t++) v -= L[l * k + t] * L[m * k + t];
                    L[l * k + m] = (m == l) ? SQRT(v) : v / L[m * k + m];
                }
            }
            for (int64_t l = 0; l < s; l++) {              /* L y' = y */
                REAL v = y[l];
                for (int64_t t = 0; t < l; t++) v -= L[l * k + t] * y[t];
                y[l] = v / L[l * k + l];
            }
            for (int64_t l = s - 1; l >= 0; l--) {         /* L^T c = y' */
                REAL v = y[l];
                for (int64_t t = l + 1; t < s; t++) v -= L[t * k + l] * c[t];
                c[l] = v / L[l * k + l];
            }
            for (f = 0; f < F; f++) gp[f] = 0;
            REAL psum = 0;
            for (int64_t l = 0; l < s; l++) {
                const REAL* d = D + S[l] * F;
                const REAL cl = c[l];
                for (f = 0; f < F; f++) gp[f] += cl * d[f];
            }
            if (remove_mean) {
                for (f = 0; f < F; f++) psum += gp[f];
                add -= psum / (REAL)F;
            }
        } else {
            for (f = 0; f < F; f++) gp[f] = 0;
        }
        f = 0;
        for (int64_t ch = 0; ch < C; ch++) {
            REAL* base = gx + ((img * C + ch) * H + top) * W + left;
            for (int64_t r = 0; r < ph; r++) {
                REAL* o = base + r * W;
                for (int64_t q = 0; q < pw; q++) o[q] += gp[f + q] + add;
                f += pw;
            }
        }
    }
}
"""

_HEADER = r"""
#include <stdint.h>
#include <string.h>
#include <math.h>
#include <float.h>
#if defined(__AVX2__)
#include <immintrin.h>
#endif
"""

# No contraction (-ffp-contract=off) and no fast-math: every operation of the C code is one IEEE
# operation in source order, whatever vector unit -march=native selects. The vectorised loops are
# element-wise or max-reductions (exact in any order), so a build for AVX-512 and one for plain
# x86-64 give the same bits (tested: test_omp_native.py::test_two_isa_builds_code_bit_identically).
_BASE_FLAGS = ("-O3", "-fopenmp-simd", "-fPIC", "-shared", "-std=gnu99", "-ffp-contract=off",
               "-fno-math-errno")
MARCH = "native"
_COMPILE_TIMEOUT_S = 60


def flags(march: str = MARCH, fp_contract: str = "off") -> list[str]:
    """The compiler flags of a build for ``-march=<march>``. ``fp_contract="fast"`` exists only
    so that a test and a benchmark can show what contraction changes; ddl never loads it."""
    base = [f if f != "-ffp-contract=off" else f"-ffp-contract={fp_contract}" for f in _BASE_FLAGS]
    return [*base[:1], f"-march={march}", *base[1:]]


def _source() -> str:
    parts = [_HEADER]
    for real, fabs, sqrt, eps, is_float in (("float", "fabsf", "sqrtf", "FLT_EPSILON", 1),
                                            ("double", "fabs", "sqrt", "DBL_EPSILON", 0)):
        body = _TEMPLATE
        for key, value in (("REAL", real), ("FABS", fabs), ("SQRT", sqrt), ("EPS", eps),
                           ("IS_FLOAT", str(is_float))):
            body = body.replace(key, value)
        parts.append(body)
    return "\n".join(parts)


# ----------------------------------------------------------------------------- the machine
def cpu_info(path: str = "/proc/cpuinfo") -> dict[str, str]:
    """``{"model": ..., "flags": ...}`` of this CPU (``/proc/cpuinfo``; empty strings elsewhere).

    ``flags`` is the instruction-set feature list (``flags`` on x86, ``Features`` on ARM),
    sorted, whatever line order the kernel prints: the cache key and the recorded machine use
    it, so two CPUs with one model name and different vector units never share a build.
    """
    model, feats = "", ""
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Processor", "cpu model") and not model:
                    model = value.strip()
                elif key in ("flags", "Features") and not feats:
                    feats = " ".join(sorted(value.split()))
                if model and feats:
                    break
    except OSError:
        pass
    return {"model": model or platform.processor() or platform.machine(), "flags": feats}


def compiler_version(cc: str | None = None) -> str | None:
    """First line of ``<cc> --version`` (None without a working compiler)."""
    argv = _compiler_argv(cc)
    if argv is None:
        return None
    try:
        proc = subprocess.run([*argv, "--version"], capture_output=True, text=True,
                              errors="replace", timeout=_COMPILE_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError):
        return None
    out = proc.stdout.strip().splitlines()
    return out[0] if proc.returncode == 0 and out else None


def _compiler_argv(cc: str | None = None) -> list[str] | None:
    """``$CC`` (else ``cc``) split like a shell word list (``CC="gcc -m64"`` works); None when
    the program is not on the PATH."""
    try:
        argv = shlex.split(cc if cc is not None else (os.environ.get("CC") or "cc"))
    except ValueError:
        return None
    if not argv or shutil.which(argv[0]) is None:
        return None
    return argv


def library_name(argv: list[str], march: str = MARCH, fp_contract: str = "off") -> str:
    """File name of the build: a hash of the source, flags, compiler, CPU model, CPU flags and
    architecture, so another source, compiler or instruction set never loads this build."""
    cpu = cpu_info()
    key = hashlib.sha256("\0".join([_source(), " ".join(flags(march, fp_contract)), " ".join(argv),
                                    cpu["model"], cpu["flags"], platform.machine()]).encode())
    return f"ddl_omp_{key.hexdigest()[:16]}.so"


# ----------------------------------------------------------------------------- safe folders
class UnsafePath(Exception):
    """A cache folder or library another user could have written: never loaded."""


def _uid() -> int:
    return os.getuid()


def check_private(path: str, *, directory: bool) -> None:
    """Raise UnsafePath unless ``path`` is a real directory (or regular file) that this user
    owns and that neither its group nor others can write, and every folder above it is owned
    by this user or root and writable by neither its group nor others (unless sticky, as
    ``/tmp``: then others cannot rename or remove what is ours inside it)."""
    uid = _uid()
    st = os.lstat(path)
    kind = stat.S_ISDIR if directory else stat.S_ISREG
    if not kind(st.st_mode):
        raise UnsafePath(f"{path} is not a {'folder' if directory else 'regular file'}"
                         " (a link or another kind of file)")
    if st.st_uid != uid:
        raise UnsafePath(f"{path} is owned by uid {st.st_uid}, not by this user (uid {uid})")
    if st.st_mode & 0o022:
        raise UnsafePath(f"{path} is writable by its group or others "
                         f"(mode {stat.S_IMODE(st.st_mode):04o})")
    # the folders above both the written path and the real one (a symlinked ~/.cache or
    # DDL_CACHE_DIR must not hide an open folder above its target)
    for above in dict.fromkeys((os.path.dirname(os.path.abspath(path)),
                                os.path.dirname(os.path.realpath(path)))):
        _check_above(above, path, uid)


def _check_above(parent: str, path: str, uid: int) -> None:
    while True:
        st = os.stat(parent)
        if st.st_uid not in (uid, 0):
            raise UnsafePath(f"{parent} (above {path}) is owned by uid {st.st_uid}, "
                             "neither this user nor root")
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            raise UnsafePath(f"{parent} (above {path}) is writable by its group or others and "
                             f"not sticky (mode {stat.S_IMODE(st.st_mode):04o})")
        up = os.path.dirname(parent)
        if up == parent:
            return
        parent = up


def _private_folder(path: str) -> str:
    """``path`` created mode 0700 if absent, then checked (UnsafePath if someone else could
    write it)."""
    missing = []
    p = os.path.abspath(path)
    while not os.path.lexists(p):
        missing.append(p)
        p = os.path.dirname(p)
    for p in reversed(missing):              # each created 0700 whatever the umask
        try:
            os.mkdir(p, 0o700)
        except FileExistsError:
            pass
    check_private(path, directory=True)
    return path


def _cache_folders():
    """Where a build may be cached: ``$DDL_CACHE_DIR/native``, else ``~/.cache/ddl/native``
    (when a home folder is known). No shared temporary folder: without either, :func:`_load`
    builds into a private ``mkdtemp`` folder removed after loading."""
    env = os.environ.get("DDL_CACHE_DIR")
    if env:
        yield os.path.join(env, "native")
        return
    home = os.path.expanduser("~")
    if home and home != "~" and os.path.isabs(home):
        yield os.path.join(home, ".cache", "ddl", "native")


def _build(argv: list[str], src: str, target: str, march: str = MARCH,
           fp_contract: str = "off") -> None:
    """Compile ``src`` into ``target`` (atomically: a concurrent builder never sees half a
    file). Raises BuildError with the reason."""
    folder = os.path.dirname(target)
    fd, tmp_c = tempfile.mkstemp(suffix=".c", dir=folder)
    with os.fdopen(fd, "w") as f:
        f.write(src)
    tmp_so = tmp_c[:-2] + ".so"
    try:
        try:
            proc = subprocess.run([*argv, *flags(march, fp_contract), tmp_c, "-o", tmp_so, "-lm"],
                                  capture_output=True, text=True, errors="replace",
                                  timeout=_COMPILE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise BuildError(f"{' '.join(argv)} did not finish in {_COMPILE_TIMEOUT_S} s") from None
        except OSError as e:
            raise BuildError(f"{' '.join(argv)} could not run ({e})") from None
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no message"])[-1]  # text, errors replaced
            raise BuildError(f"{' '.join(argv)} failed (exit {proc.returncode}): {last}")
        os.chmod(tmp_so, 0o600)
        os.replace(tmp_so, target)
    finally:
        for p in (tmp_c, tmp_so):
            if os.path.exists(p):
                os.unlink(p)


class BuildError(Exception):
    """The compiler is missing, failed or hung: the torch kernel runs instead."""


def _open_checked(target: str):
    """Load ``target`` after checking it (opened without following links, checked with fstat:
    a regular file of this user's that no one else can write). Its folder was checked private,
    so no one else can swap the file between the check and the load. (Loading through
    ``/proc/self/fd/N`` instead would let the dynamic loader return an earlier library that was
    loaded under the same ``/proc/self/fd/N`` name.)"""
    fd = os.open(target, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != _uid() or st.st_mode & 0o022:
            raise UnsafePath(f"{target} is not a regular file owned by this user and writable "
                             f"by no one else (uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o})")
        lib = _Lib(ctypes.CDLL(os.path.abspath(target)))
        after = os.stat(target)
        if (after.st_dev, after.st_ino) != (st.st_dev, st.st_ino):
            raise UnsafePath(f"{target} was replaced while it was being loaded")
        return lib
    finally:
        os.close(fd)


def build_into(folder: str, march: str = MARCH, cc: str | None = None,
               fp_contract: str = "off") -> "_Lib":
    """Build (if absent) and load the kernel for ``-march=<march>`` in ``folder`` (which must be
    private: see :func:`check_private`). Raises BuildError or UnsafePath with the reason."""
    argv = _compiler_argv(cc)
    if argv is None:
        raise BuildError(f"no C compiler ({os.environ.get('CC') or 'cc'} is not on the PATH)")
    _private_folder(folder)
    target = os.path.join(folder, library_name(argv, march, fp_contract))
    if not os.path.lexists(target):
        _build(argv, _source(), target, march, fp_contract)
    return _open_checked(target)


_lock = threading.Lock()
_lib = None
_tried = False
_reason: str | None = None          # why the kernel is not loaded (None: loaded or not tried)


class _Lib:
    def __init__(self, cdll):
        i64, ptr, dbl, cint = ctypes.c_int64, ctypes.c_void_p, ctypes.c_double, ctypes.c_int
        self.fns = {}
        for name, real in (("omp_float", ctypes.c_float), ("omp_double", ctypes.c_double)):
            fn = getattr(cdll, name)
            fn.restype = i64
            fn.argtypes = [i64, i64, i64, ptr, i64, ptr, ptr, real, i64, dbl, cint, ptr, ptr,
                           ptr, ptr, ptr, ptr, ptr, ptr]
            self.fns[name] = fn
        for real in ("float", "double"):
            fn = getattr(cdll, f"patches_{real}")
            fn.restype = i64
            fn.argtypes = [ptr, i64, i64, i64, i64, i64, i64, i64, i64, i64, cint,
                           ctypes.c_float if real == "float" else ctypes.c_double, dbl,
                           ptr, ptr, ptr, ptr]
            self.fns[f"patches_{real}"] = fn
            fn = getattr(cdll, f"fold_{real}")
            fn.restype = None
            fn.argtypes = [ptr, i64, i64, i64, i64, i64, i64, i64, i64, i64, ptr, ptr, i64, ptr]
            self.fns[f"fold_{real}"] = fn
            fn = getattr(cdll, f"backward_{real}")
            fn.restype = None
            fn.argtypes = [ptr, ptr, i64, i64, i64, i64, i64, i64, i64, i64, i64, ptr, i64, ptr,
                           ptr, i64, cint, ptr]
            self.fns[f"backward_{real}"] = fn
        self.cdll = cdll


def load():
    """The compiled kernel (an object with ``fns["omp_float"/"omp_double"]``), or None; then
    :func:`reason` says why."""
    global _lib, _tried, _reason
    if _tried:
        return _lib
    with _lock:
        if _tried:
            return _lib
        try:
            _lib, _reason = _load()
        except Exception as e:                   # never a traceback: the torch kernel runs
            _lib, _reason = None, f"the C kernel could not be loaded ({type(e).__name__}: {e})"
        finally:
            _tried = True
    return _lib


def reason() -> str | None:
    """Why :func:`load` returned None (None when the kernel loaded or was not tried)."""
    return _reason


def _reset() -> None:
    """Forget the loaded kernel (tests; the library stays mapped in the process)."""
    global _lib, _tried, _reason
    with _lock:
        _lib, _tried, _reason = None, False, None


def _load():
    """(kernel, None) or (None, reason). Cached builds come only from private folders; a folder
    that fails the check is passed over with a one-line notice (the reason) on stderr, and the
    kernel is built in a private temporary folder instead."""
    if sys.platform == "win32":
        return None, "the C kernel is not built on Windows"
    argv = _compiler_argv()
    if argv is None:
        return None, f"no C compiler ({os.environ.get('CC') or 'cc'} is not on the PATH)"
    for folder in _cache_folders():
        try:
            return build_into(folder), None
        except UnsafePath as e:
            print(f"ddl: not using the OMP kernel cache: {e}; building in a private "
                  "temporary folder", file=sys.stderr)
        except BuildError as e:
            return None, str(e)               # the compiler failed: no point in other folders
        except (OSError, AttributeError) as e:  # unwritable folder, unloadable or foreign file
            print(f"ddl: not using the OMP kernel cache {folder}: {e}; building in a private "
                  "temporary folder", file=sys.stderr)
    tmp = tempfile.mkdtemp(prefix="ddl-native-")   # 0700, ours, random name: never shared
    try:
        return build_into(tmp), None
    except (BuildError, UnsafePath, OSError, AttributeError) as e:
        return None, str(e)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)    # the loaded library stays mapped
