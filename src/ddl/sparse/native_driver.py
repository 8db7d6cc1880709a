"""The driver of the compiled C kernel (:mod:`ddl.sparse._omp_native`) from torch: OMP over
chunks of signals, and the denoiser's whole patch pipeline with its exact backward.

Public seam: :func:`native_omp` (used by :func:`ddl.sparse.omp.omp` and its siblings when
:func:`ddl.sparse.kernel.native_library` gives a kernel), :func:`denoise` and
:func:`denoise_exact` (used by :class:`ddl.defence.DictionaryDenoiser`). The GEMM ``X Dᵀ``
stays in torch; the per-signal loop runs in C on several Python threads
(:mod:`ddl.sparse.threads`), ctypes releasing the GIL.
"""

from __future__ import annotations

import ctypes

import torch
from torch import Tensor

from ddl.sparse.threads import held_at_one_thread, run_workers, worker_count

__all__ = ["ExactDenoise", "chunk_rows", "denoise", "denoise_exact", "native_omp"]


def _ptr(t: Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


@torch.no_grad()
def native_omp(lib, X, dictionary, gram, k_max, tol, chunk_size, ols, *, codes=False,
                support=False, coef=False, recon=False):
    """Code every row of X with the C kernel; returns (dict of the requested outputs,
    n_dependent).

    Rows that certainly need no atom (see ``ddl.sparse.omp._omp_chunks``) are dropped before the GEMM.
    The rest go in chunks: one torch GEMM ``Xc Dᵀ`` into a reused (m, K) buffer, then one C
    call that writes the outputs' rows in place. With ``torch.get_num_threads() = T > 1``
    the chunks are shared by T Python threads (ctypes releases the GIL) while torch runs
    single-threaded: threads that block instead of OpenMP workers that spin, so a busy
    machine never makes the default slower than one thread (bench/README.md, thread table).
    """
    n_samples, n_features = X.shape
    n_components = dictionary.shape[0]
    dtype = X.dtype
    X = X.contiguous()
    D = dictionary.contiguous()
    if gram is None:
        gram = D @ D.T
    gram = gram.contiguous()
    gmax = float(gram.diagonal().max())
    eps = torch.finfo(dtype).eps
    norms2 = torch.linalg.vector_norm(X, dim=1).square_()
    todo = norms2 * gmax >= eps
    if tol is not None:
        todo &= norms2 > tol
    rows = None
    if not bool(todo.all()):
        rows = todo.nonzero()[:, 0].contiguous()
        norms2 = norms2.index_select(0, rows)     # the rows of X are gathered chunk by chunk
    # Outputs: rows never coded stay zero (-1 for the support). The C code writes whole rows,
    # so the dense codes are zeroed only where it never writes (one pass over them, not two).
    new = torch.empty if rows is None else torch.zeros
    out = {}
    if codes:
        out["codes"] = torch.empty((n_samples, n_components), dtype=dtype)
        if rows is not None:
            out["codes"].index_fill_(0, (~todo).nonzero()[:, 0], 0.0)
    if support:
        out["support"] = torch.full((n_samples, k_max), -1, dtype=torch.long) if rows is not None \
            else torch.empty((n_samples, k_max), dtype=torch.long)
    if coef:
        out["coef"] = new((n_samples, k_max), dtype=dtype)
    if recon:
        out["recon"] = new((n_samples, n_features), dtype=dtype)
    n_todo = X.shape[0] if rows is None else rows.shape[0]
    if n_todo == 0:
        return out, 0
    fn = lib.fns["omp_float" if dtype == torch.float32 else "omp_double"]
    m_max = min(chunk_rows(n_components, chunk_size), n_todo)
    starts = list(range(0, n_todo, m_max))
    n_threads = min(worker_count(), len(starts))
    work_len = (k_max + 2) * n_components + k_max * k_max + 2 * k_max
    Dt = D.T
    tol_c = -1.0 if tol is None else float(tol)
    strides = {"support": k_max, "coef": k_max, "codes": n_components, "recon": n_features}
    dependent = [0] * n_threads

    errors = []

    def worker(w: int) -> None:
        try:
            _work(w)
        except BaseException as exc:                               # re-raised below
            errors.append(exc)

    def _work(w: int) -> None:
        A = torch.empty((m_max, n_components), dtype=dtype)
        Xbuf = None if rows is None else torch.empty((m_max, n_features), dtype=dtype)
        work = torch.empty(work_len, dtype=dtype)
        n_dep = ctypes.c_int64(0)
        for start in starts[w::n_threads]:
            m = min(m_max, n_todo - start)
            Am = A[:m]
            if rows is None:
                Xc = X[start:start + m]
            else:                                   # gathered into a cache-sized buffer
                Xc = torch.index_select(X, 0, rows[start:start + m], out=Xbuf[:m])
            torch.mm(Xc, Dt, out=Am)                                # α⁰ = X Dᵀ, (m, K)
            if rows is None:                                       # outputs at row `start`
                ptrs = {name: t.data_ptr() + start * strides[name] * t.element_size()
                        for name, t in out.items()}
                row_ptr = None
            else:
                ptrs = {name: t.data_ptr() for name, t in out.items()}
                row_ptr = rows.data_ptr() + start * 8
            fn(m, n_components, n_features, Am.data_ptr(), n_components,
               norms2.data_ptr() + start * norms2.element_size(), gram.data_ptr(), gmax,
               k_max, tol_c, int(ols), row_ptr, work.data_ptr(), ptrs.get("support"),
               ptrs.get("coef"), ptrs.get("codes"), D.data_ptr() if recon else None,
               ptrs.get("recon"), ctypes.byref(n_dep))
        dependent[w] = n_dep.value

    run_workers(worker, n_threads)
    if errors:
        raise errors[0]
    return out, sum(dependent)



def chunk_rows(n_components: int, chunk_size: int) -> int:
    """Rows per GEMM chunk for the C kernel: the (m, K) correlation block stays near 512 kB,
    where the GEMM runs at its best rate (measured: 33-34 GFLOP/s at 0.5-1 MB against 13-20 at
    4 MB for 7x7 patches, 256 atoms)."""
    return max(64, min(chunk_size, (1 << 17) // max(1, n_components)))


def denoise(lib, x: Tensor, *args, **kwargs) -> tuple[Tensor, int]:
    """:func:`_denoise_body` with torch held at one thread (see
    :func:`ddl.sparse.threads.held_at_one_thread`)."""
    with held_at_one_thread():
        return _denoise_body(lib, x, *args, **kwargs)


@torch.no_grad()
def _denoise_body(lib, x: Tensor, dictionary: Tensor, patch, step, k_max: int, tol,
                    remove_mean: bool, chunk_size: int = 2048, support: Tensor | None = None
                    ) -> tuple[Tensor, int]:
    """The whole patch pipeline of the denoiser for images x (N, C, H, W) on the CPU, no graph.

    Per chunk of patches: the C code cuts the patches out of the images, removes their means
    and drops the ones that need no atom (zero/flat), one torch GEMM gives the correlations,
    the C kernel codes them and writes the reconstructions, and the C code adds each patch
    (+ its mean) back into the image sums. No (n_patches, n_features) array is ever held.
    Returns (averaged images, not clipped; number of signals stopped by dependent atoms).
    Images are shared among ``torch.get_num_threads()`` Python threads (see ``native_omp``).
    ``support``: an (n_patches, k_max) int64 tensor filled with -1 receives each coded patch's
    atoms (for the exact backward, :class:`ExactDenoise`).
    """
    dtype = x.dtype
    x = x.contiguous()
    N, C, H, W = x.shape
    (ph, pw), (sh, sw) = patch, step
    n_h, n_w = (H - ph) // sh + 1, (W - pw) // sw + 1
    per = n_h * n_w
    D = dictionary.contiguous()
    K, F = D.shape
    gram = (D @ D.T).contiguous()
    gmax = float(gram.diagonal().max())
    real = "float" if dtype == torch.float32 else "double"
    code, cut, fold = lib.fns[f"omp_{real}"], lib.fns[f"patches_{real}"], lib.fns[f"fold_{real}"]
    m_max = chunk_rows(K, chunk_size)
    sums = torch.zeros_like(x)
    tol_c = -1.0 if tol is None else float(tol)
    n_threads = max(1, min(worker_count(), N))
    bounds = [N * w // n_threads for w in range(n_threads + 1)]     # images per thread
    work_len = (k_max + 2) * K + k_max * k_max + 2 * k_max
    dependent = [0] * n_threads
    errors = []
    Dt = D.T

    def work(w: int) -> None:
        P = torch.empty((m_max, F), dtype=dtype)
        A = torch.empty((m_max, K), dtype=dtype)
        R = torch.empty((m_max, F), dtype=dtype)
        idx = torch.empty(m_max, dtype=torch.long)
        norms2 = torch.empty(m_max, dtype=dtype)
        means = torch.empty(m_max, dtype=dtype)
        buf = torch.empty(work_len, dtype=dtype)
        sup = None if support is None else torch.empty((m_max, k_max), dtype=torch.long)
        n_dep = ctypes.c_int64(0)
        for p0 in range(bounds[w] * per, bounds[w + 1] * per, m_max):
            p1 = min(p0 + m_max, bounds[w + 1] * per)
            cnt = cut(x.data_ptr(), C, H, W, ph, pw, sh, sw, p0, p1, int(remove_mean), gmax,
                      tol_c, P.data_ptr(), idx.data_ptr(), norms2.data_ptr(), means.data_ptr())
            if cnt:
                torch.mm(P[:cnt], Dt, out=A[:cnt])                       # (cnt, K)
                code(cnt, K, F, A.data_ptr(), K, norms2.data_ptr(), gram.data_ptr(), gmax,
                     k_max, tol_c, 0, None, buf.data_ptr(), _ptr(sup), None, None,
                     D.data_ptr(), R.data_ptr(), ctypes.byref(n_dep))
                if sup is not None:
                    support.index_copy_(0, idx[:cnt], sup[:cnt])
            fold(sums.data_ptr(), C, H, W, ph, pw, sh, sw, p0, p1, R.data_ptr(),
                 idx.data_ptr(), cnt, means.data_ptr())
        dependent[w] = n_dep.value

    def worker(w: int) -> None:
        try:
            work(w)
        except BaseException as exc:                               # re-raised below
            errors.append(exc)

    run_workers(worker, n_threads)
    if errors:
        raise errors[0]
    ones = torch.ones((1, ph * pw, per), dtype=dtype)
    counts = torch.nn.functional.fold(ones, (H, W), (ph, pw), stride=(sh, sw))   # (1, 1, H, W)
    return sums.div_(counts), sum(dependent)


class ExactDenoise(torch.autograd.Function):
    """The CPU denoiser pipeline with grad="exact": forward in C (:func:`denoise`,
    keeping each patch's support), backward in C with the supports held fixed.

    The denoiser is linear in x for fixed supports: out = clip(Uᵀ (Π_S C + 11ᵀ/F) U x / counts)
    with U the patch extraction, C the mean removal and Π_S each patch's projection on its
    atoms, the last two symmetric; the backward applies the transpose patch by patch
    (``backward_<real>`` in the C source), O(k·F) per patch with no GEMM. Gradients flow to x
    only; the caller uses the autograd path when the dictionary needs a gradient.
    """

    @staticmethod
    def forward(ctx, x, lib, dictionary, patch, step, k_max, tol, remove_mean, clip, counter):
        N, C, H, W = x.shape
        n_h, n_w = (H - patch[0]) // step[0] + 1, (W - patch[1]) // step[1] + 1
        support = torch.full((N * n_h * n_w, k_max), -1, dtype=torch.long)
        avg, counter[0] = denoise(lib, x.detach(), dictionary.detach(), patch, step,
                                          k_max, tol, remove_mean, support=support)
        ctx.lib, ctx.patch, ctx.step, ctx.remove_mean = lib, patch, step, remove_mean
        ctx.support = support
        ctx.dictionary = dictionary.detach().contiguous()
        ctx.mask = ((avg >= 0) & (avg <= 1)) if clip else None
        return avg.clamp(0.0, 1.0) if clip else avg

    @staticmethod
    def backward(ctx, grad_out):
        (ph, pw), (sh, sw) = ctx.patch, ctx.step
        g = grad_out if ctx.mask is None else grad_out * ctx.mask
        N, C, H, W = g.shape
        dtype = g.dtype
        per = ((H - ph) // sh + 1) * ((W - pw) // sw + 1)
        counts = torch.nn.functional.fold(torch.ones((1, ph * pw, per), dtype=dtype), (H, W),
                                          (ph, pw), stride=(sh, sw))
        g = (g / counts).contiguous()
        gx = torch.zeros_like(g)
        D = ctx.dictionary.to(dtype)
        K, F = D.shape
        gram = (D @ D.T).contiguous()
        k = ctx.support.shape[1]
        fn = ctx.lib.fns["backward_float" if dtype == torch.float32 else "backward_double"]
        n_threads = max(1, min(worker_count(), N))
        bounds = [N * w // n_threads for w in range(n_threads + 1)]
        errors = []

        def worker(w: int) -> None:
            try:
                p0, p1 = bounds[w] * per, bounds[w + 1] * per
                buf = torch.empty(F + k * k + 2 * k, dtype=dtype)
                fn(g.data_ptr(), gx.data_ptr(), C, H, W, ph, pw, sh, sw, p0, p1,
                   ctx.support[p0:p1].data_ptr(), k, D.data_ptr(), gram.data_ptr(), K,
                   int(ctx.remove_mean), buf.data_ptr())
            except BaseException as exc:                           # re-raised below
                errors.append(exc)

        with held_at_one_thread():
            run_workers(worker, n_threads)
        if errors:
            raise errors[0]
        return (gx,) + (None,) * 9


def denoise_exact(lib, x, dictionary, patch, step, k_max, tol, remove_mean, clip):
    """(images, n_dependent) through :class:`ExactDenoise`; x requires grad, the dictionary
    not."""
    counter = [0]
    out = ExactDenoise.apply(x.contiguous(), lib, dictionary, tuple(patch), tuple(step), k_max,
                              tol, remove_mean, clip, counter)
    return out, counter[0]
