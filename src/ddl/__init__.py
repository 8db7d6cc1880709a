"""ddl: denoising dictionary learning against adversarial perturbations.

Importing ddl has no side effects (no files written, no downloads). The public entry points are
``ddl.DictionaryDenoiser`` and the sub-packages ``ddl.data``, ``ddl.models``, ``ddl.attacks``,
``ddl.sparse``, ``ddl.metrics``.
"""

__version__ = "0.1.0"


def __getattr__(name):
    # Lazy so that `import ddl` stays cheap (no torch import) for `ddl --help` and report code.
    if name == "DictionaryDenoiser":
        from ddl.defence.denoiser import DictionaryDenoiser

        return DictionaryDenoiser
    raise AttributeError(f"module 'ddl' has no attribute {name!r}")
