"""Defences: the patch-dictionary denoiser of Mitro et al. (2018), baseline purifiers (bit depth,
median, Gaussian blur, JPEG, total variation, wavelet shrinkage) and evaluation checks.

See :mod:`ddl.defence.denoiser` and :mod:`ddl.defence.purifiers` for what the defences do and do
not prove.
"""

from ddl.defence.checks import warn_if_zero_gradients
from ddl.defence.denoiser import DictionaryDenoiser, NotFittedError
from ddl.defence.purifiers import (
    PURIFIERS,
    BitDepthReduction,
    GaussianBlur,
    JPEGCompression,
    MedianSmoothing,
    TotalVariation,
    WaveletShrinkage,
)

__all__ = ["PURIFIERS", "BitDepthReduction", "DictionaryDenoiser", "GaussianBlur", "JPEGCompression",
           "MedianSmoothing", "NotFittedError", "TotalVariation", "WaveletShrinkage",
           "warn_if_zero_gradients"]
