"""Sparse coding core: patches, batched OMP, dictionary learning.

Orientation everywhere in ddl: atoms are the ROWS of ``dictionary``, shape
(n_components, n_features), codes are (n_samples, n_components) and ``X ≈ codes @ dictionary``
(scikit-learn's layout). The papers (Rubinstein et al. 2008, Mairal et al. 2010, Mitro et al.
2018) write D with atoms as columns; this is the only place that says so.

- :func:`extract_patches`, :func:`reconstruct_from_patches`, :func:`center_patches`
  (``ddl.sparse.patches``): unfold/fold with exact overlap averaging.
- :func:`omp`, :func:`omp_reconstruct` (``ddl.sparse.omp``): Batch-OMP over chunks of signals,
  CPU or CUDA, with exact / BPDA / no gradient for the reconstruction.
- :func:`set_omp_kernel`, :func:`kernel_name` (``ddl.sparse.kernel``): the compiled C kernel or
  the torch kernel on the CPU (``DDL_OMP_KERNEL``, ``--omp-kernel``).
- :func:`learn_dictionary` (``ddl.sparse.dictionary``): online, K-SVD and MOD learning.
"""

from ddl.sparse.dictionary import learn_dictionary
from ddl.sparse.kernel import get_omp_kernel, kernel_name, set_omp_kernel
from ddl.sparse.omp import omp, omp_reconstruct
from ddl.sparse.patches import center_patches, extract_patches, reconstruct_from_patches

__all__ = [
    "center_patches",
    "extract_patches",
    "get_omp_kernel",
    "kernel_name",
    "learn_dictionary",
    "omp",
    "omp_reconstruct",
    "reconstruct_from_patches",
    "set_omp_kernel",
]
