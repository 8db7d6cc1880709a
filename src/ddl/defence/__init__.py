"""Defences: the patch-dictionary denoiser of Mitro et al. (2018) and evaluation checks.

See :mod:`ddl.defence.denoiser` for what the defence does and does not prove.
"""

from ddl.defence.checks import warn_if_zero_gradients
from ddl.defence.denoiser import DictionaryDenoiser, NotFittedError

__all__ = ["DictionaryDenoiser", "NotFittedError", "warn_if_zero_gradients"]
