"""ddl: denoising dictionary learning against adversarial perturbations.

Importing ddl has no side effects (no files written, no downloads) and does not import torch.
The public entry points are ``ddl.DictionaryDenoiser`` and the sub-packages ``ddl.attacks``,
``ddl.data``, ``ddl.defence``, ``ddl.metrics``, ``ddl.models``, ``ddl.robustness``,
``ddl.sparse`` and ``ddl.zoo``, each imported on first use (``import ddl; ddl.zoo.load(...)``
works, as ``import ddl.zoo`` does).
"""

__version__ = "0.1.0"

#: The sub-packages reachable as ``ddl.<name>`` after ``import ddl`` (imported on first access).
SUBPACKAGES = ("attacks", "data", "defence", "metrics", "models", "robustness", "sparse", "zoo")


def __getattr__(name):
    # Lazy so that `import ddl` stays cheap (no torch import) for `ddl --help` and report code.
    if name in SUBPACKAGES:
        import importlib

        return importlib.import_module(f"ddl.{name}")  # the import also sets ddl.<name>
    if name == "DictionaryDenoiser":
        from ddl.defence.denoiser import DictionaryDenoiser

        return DictionaryDenoiser
    import difflib

    close = difflib.get_close_matches(name, (*SUBPACKAGES, "DictionaryDenoiser"), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise AttributeError(f"module 'ddl' has no attribute {name!r}{hint}")


def __dir__():
    return sorted({*globals(), *SUBPACKAGES, "DictionaryDenoiser"})
