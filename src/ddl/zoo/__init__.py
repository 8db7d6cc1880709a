"""Pretrained zoo: the five models of Mitro et al. 2018 trained on MNIST and CIFAR-10.

The checkpoints (``<model>_<dataset>.pt``, float16 weights, a few MB each) sit beside this file
with ``index.json``, which lists for each one the clean test accuracy measured on the **full**
test set with the stored (float16-rounded) weights, the epochs and seconds of training, the
training settings and the file's SHA-256. ``tools/train_zoo.py`` writes both; ``load`` verifies
the SHA-256 before unpickling anything (and unpickles weights-only).

Accuracies are fractions in [0, 1], as everywhere in ddl's results.

Examples
--------
>>> import ddl.zoo
>>> [(e.model, e.dataset) for e in ddl.zoo.entries()][:1]  # doctest: +SKIP
[('autoencoder', 'cifar10')]
>>> model = ddl.zoo.load("convnet", "mnist")  # doctest: +SKIP

Fitted defences ship beside the checkpoints too: ``defence_<name>_<dataset>.pt`` holds the
dictionary of the ``tuned`` (``ddl.experiments.config.load_tuned()``) or ``paper`` (``ddl.experiments.config.PAPER``)
denoiser, fitted on the full clean training set (``tools/fit_zoo_defences.py``), listed under
``"defences"`` in ``index.json`` with its parameters and SHA-256 (this module reads the
parameters from the index, never from ``ddl.experiments.config``: the library does not import the
experiments layer). A defended classifier is one line:

>>> import torch
>>> defended = torch.nn.Sequential(ddl.zoo.load_defence("cifar10"),
...                                ddl.zoo.load("resnet", "cifar10"))  # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ddl._io import atomic_write_json, lock_run_folder
from ddl._validate import check_choice
from ddl.constants import ZOO_VARIANTS

#: Folder holding index.json and the checkpoints (tests monkeypatch this).
ZOO_DIR = Path(__file__).resolve().parent
INDEX_NAME = "index.json"
_FIELDS = ("model", "dataset", "accuracy", "path", "epochs", "seconds", "sha256")


@dataclass(frozen=True)
class ZooEntry:
    """One pretrained checkpoint listed in ``index.json``.

    Attributes
    ----------
    model, dataset : str
        Architecture name (a key of ``ddl.models.MODELS``) and "mnist" or "cifar10".
    accuracy : float
        Clean accuracy on the full test set, fraction in [0, 1], of the stored weights.
    path : Path
        Absolute path of the checkpoint file.
    epochs : int
        Training epochs.
    seconds : float
        Training wall-clock seconds (all epochs, resumed runs added up).
    sha256 : str
        Hex SHA-256 of the checkpoint file.
    extra : dict
        Other recorded settings (preset, batch_size, lr, lr_schedule, augment, seed, threads,
        target accuracy, ...).
    """

    model: str
    dataset: str
    accuracy: float
    path: Path
    epochs: int
    seconds: float
    sha256: str
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def variant(self) -> str:
        """``"standard"`` (trained on clean images) or ``"denoised"`` (trained on reconstructions
        by a fitted defence of the zoo, see :attr:`defence`)."""
        return self.extra.get("variant", "standard")

    @property
    def defence(self) -> dict[str, Any] | None:
        """For a ``denoised`` variant: the defence it was trained behind (``name``, ``sha256`` of
        its dictionary file, ``params``); None for a standard model."""
        return self.extra.get("defence")


#: The variants a zoo model comes in: trained on clean images, or on the reconstructions of the
#: zoo's fitted defence (``ddl.models.train.fit(..., transform=load_defence(dataset))``).
VARIANTS = ZOO_VARIANTS


def _index_path() -> Path:
    return Path(ZOO_DIR) / INDEX_NAME


def _read_index_file() -> dict[str, Any]:
    path = _index_path()
    if not path.is_file():
        return {"format_version": 1, "entries": []}
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise ValueError(f"ddl.zoo: {path} must hold {{'entries': [...]}}; got {type(data).__name__}.")
    if not isinstance(data.get("defences", []), list):
        raise ValueError(f"ddl.zoo: 'defences' in {path} must be a list; got "
                         f"{type(data['defences']).__name__}.")
    return data


def _read_index() -> list[dict[str, Any]]:
    return _read_index_file()["entries"]


def _write_index(entries_: list[dict[str, Any]] | None = None,
                 defences_: list[dict[str, Any]] | None = None) -> Path:
    """Rewrite index.json atomically, replacing the lists given and keeping the others."""
    data = _read_index_file()
    out: dict[str, Any] = {"format_version": 1,
                           "entries": data["entries"] if entries_ is None else entries_}
    defences_ = data.get("defences", []) if defences_ is None else defences_
    if defences_:
        out["defences"] = defences_
    return atomic_write_json(_index_path(), out)


def _to_entry(record: dict[str, Any]) -> ZooEntry:
    missing = [k for k in _FIELDS if k not in record]
    if missing:
        raise ValueError(f"ddl.zoo: entry {record!r} in {_index_path()} lacks {', '.join(missing)}.")
    root = Path(ZOO_DIR).resolve()
    path = (root / record["path"]).resolve()
    if root not in path.parents:
        raise ValueError(f"ddl.zoo: entry path {record['path']!r} points outside the zoo folder {root}.")
    extra = {k: v for k, v in record.items() if k not in _FIELDS}
    return ZooEntry(
        model=record["model"], dataset=record["dataset"], accuracy=float(record["accuracy"]), path=path,
        epochs=int(record["epochs"]), seconds=float(record["seconds"]), sha256=record["sha256"], extra=extra,
    )


def entries() -> list[ZooEntry]:
    """All checkpoints listed in the zoo index, sorted by (dataset, model).

    Returns
    -------
    list of ZooEntry
        Empty when there is no index yet.
    """
    return sorted((_to_entry(r) for r in _read_index()),
                  key=lambda e: (e.dataset, e.model, VARIANTS.index(e.variant) if e.variant in VARIANTS else 9))


def _check_variant(func: str, variant: str) -> None:
    check_choice(func, "variant", variant, VARIANTS)


def find(model: str, dataset: str, variant: str = "standard") -> ZooEntry | None:
    """The zoo entry for ``(model, dataset, variant)``, or None when there is none."""
    _check_variant("ddl.zoo.find", variant)
    for entry in entries():
        if entry.model == model and entry.dataset == dataset and entry.variant == variant:
            return entry
    return None


def load(model: str, dataset: str, *, variant: str = "standard", device: str = "cpu"):
    """Load a pretrained model from the zoo, in eval mode, after checking its SHA-256.

    Parameters
    ----------
    model : str
        "autoencoder", "convnet", "hrnn", "mlp" or "resnet".
    dataset : str
        "mnist" or "cifar10".
    variant : {"standard", "denoised"}, default "standard"
        ``denoised``: the model fine-tuned on the reconstructions of the zoo's tuned defence;
        use it behind that defence, ``nn.Sequential(load_defence(dataset), load(model, dataset,
        variant="denoised"))`` (the entry's ``defence`` names the dictionary it was trained with).
    device : str, default "cpu"

    Returns
    -------
    nn.Module
        Float32, in eval mode, on ``device``; maps (N, C, H, W) float32 in [0, 1] to logits.

    Raises
    ------
    LookupError
        No such entry (the message lists what the zoo holds).
    ValueError
        The file's SHA-256 differs from the index (tampered or corrupt), or it is not a
        weights-only ddl checkpoint.
    """
    from ddl.models.checkpoint import load_checkpoint

    entry = find(model, dataset, variant)
    if entry is None:
        from ddl._validate import close_match

        held = [e for e in entries() if e.variant == variant]
        have = ", ".join(f"{e.model}/{e.dataset}" for e in held) or "nothing yet"
        hint = close_match(model, sorted({e.model for e in held} - {model}))
        what = "pretrained" if variant == "standard" else f"{variant!r} variant of"
        raise LookupError(
            f"ddl.zoo.load: no {what} {model!r} for {dataset!r}; the zoo holds"
            f"{'' if variant == 'standard' else ' (' + variant + ')'}: {have}{hint}. "
            f"Train one with `ddl train --model {model} --dataset {dataset}"
            f"{'' if variant == 'standard' else ' --defence tuned'}` and load it with "
            f"ddl.models.checkpoint.load_checkpoint."
        )
    net, meta = load_checkpoint(entry.path, device=device, sha256=entry.sha256)
    stored_variant = meta.get("variant", "standard")
    if meta.get("architecture") != model or meta.get("dataset") != dataset or stored_variant != variant:
        raise ValueError(
            f"ddl.zoo.load: {entry.path} holds {meta.get('architecture')!r}/{meta.get('dataset')!r} "
            f"({stored_variant}), not {model!r}/{dataset!r} ({variant}) as index.json says."
        )
    return net


def _entry_key(record: dict[str, Any]) -> tuple[str, str, str]:
    return record["model"], record["dataset"], record.get("variant", "standard")


def update_index(record: dict[str, Any]) -> Path:
    """Add or replace the index record for ``(model, dataset, variant)`` of ``record``, atomically.

    ``record['path']`` is relative to the zoo folder. Used by ``tools/train_zoo.py``.
    """
    entry = _to_entry(record)  # validates the record
    _check_variant("ddl.zoo.update_index", entry.variant)
    with lock_run_folder(ZOO_DIR):  # two trainings publishing at once must not lose an entry
        records = [r for r in _read_index() if _entry_key(r) != _entry_key(record)]
        records.append(record)
        records.sort(key=lambda r: (r["dataset"], r["model"], r.get("variant", "standard") != "standard"))
        return _write_index(entries_=records)


# --- fitted defences ---------------------------------------------------------------------------

#: The defences the zoo can hold: the presets' dictionary denoisers.
DEFENCE_NAMES = ("tuned", "paper")
_DEFENCE_FIELDS = ("name", "dataset", "path", "sha256", "params")


def defence_file_name(dataset: str, name: str) -> str:
    """``defence_<name>_<dataset>.pt``: the file of a fitted defence in the zoo folder."""
    return f"defence_{name}_{dataset}.pt"


def defence_records() -> list[dict[str, Any]]:
    """The ``"defences"`` records of ``index.json`` (name, dataset, path, sha256, params, ...)."""
    return list(_read_index_file().get("defences", []))


def find_defence(dataset: str, name: str = "tuned") -> dict[str, Any] | None:
    """The index record of a fitted defence, or None when the zoo has none."""
    for record in defence_records():
        if record.get("dataset") == dataset and record.get("name") == name:
            return record
    return None


def _defence_path(record: dict[str, Any]) -> Path:
    missing = [k for k in _DEFENCE_FIELDS if k not in record]
    if missing:
        raise ValueError(f"ddl.zoo: defence record {record!r} in {_index_path()} lacks {', '.join(missing)}.")
    root = Path(ZOO_DIR).resolve()
    path = (root / record["path"]).resolve()
    if root not in path.parents:
        raise ValueError(f"ddl.zoo: defence path {record['path']!r} points outside the zoo folder {root}.")
    return path


def load_defence(dataset: str, name: str = "tuned", *, device: str = "cpu", grad: str = "exact"):
    """The fitted dictionary denoiser of a preset, as shipped in the zoo.

    Parameters
    ----------
    dataset : str
        "mnist" or "cifar10".
    name : {"tuned", "paper"}, default "tuned"
        ``tuned``: the defence chosen on a validation split (``ddl.experiments.config.load_tuned()``);
        ``paper``: the paper's reading (``ddl.experiments.config.PAPER.defence``).
    device : str, default "cpu"
    grad : {"exact", "bpda", "none"}, default "exact"
        The denoiser's backward pass (see :class:`ddl.defence.DictionaryDenoiser`).

    Returns
    -------
    DictionaryDenoiser
        Fitted: its dictionary is ``DictionaryDenoiser(**params).fit(x_train)`` on the full clean
        training set, ``params`` the preset's (recorded in ``index.json``). Maps (N, C, H, W) in
        [0, 1] to the same shape; ``nn.Sequential(load_defence(ds), load(model, ds))`` is a
        defended classifier.

    Raises
    ------
    LookupError
        The zoo holds no such defence (the message lists what it holds).
    ValueError
        The file's SHA-256 differs from the index (tampered or corrupt; nothing is unpickled),
        or it is not a file written by ``DictionaryDenoiser.save`` for these parameters.
    """
    from ddl._validate import BadFileError
    from ddl.defence import DictionaryDenoiser
    from ddl.models.checkpoint import sha256_file

    func = "ddl.zoo.load_defence"
    check_choice(func, "name", name, DEFENCE_NAMES)
    record = find_defence(dataset, name)
    if record is None:
        have = ", ".join(f"{r['name']}/{r['dataset']}" for r in defence_records()) or "none"
        raise LookupError(f"{func}: no fitted {name!r} defence for {dataset!r}; the zoo holds: {have}. "
                          f"Fit one with tools/fit_zoo_defences.py.")
    path = _defence_path(record)
    if not path.is_file():
        raise BadFileError(f"{func}: {path} is listed in {_index_path()} but missing.")
    actual = sha256_file(path)
    if actual != record["sha256"]:
        raise BadFileError(f"{func}: SHA-256 mismatch for {path}: expected {record['sha256']}, got "
                           f"{actual}; the file was changed or corrupted, refusing to load it.")
    try:
        den = DictionaryDenoiser.load(path, device=device)       # weights-only torch.load
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one line
        raise BadFileError(f"{func}: {path} is not a fitted DictionaryDenoiser ({type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}).") from exc
    stored = {k: v for k, v in den.get_params().items() if k in record["params"]}
    if stored != record["params"]:
        raise BadFileError(f"{func}: {path} holds parameters {stored} but index.json says {record['params']}.")
    den.grad = grad
    den._check_params(func)
    return den


def update_defence_index(record: dict[str, Any]) -> Path:
    """Add or replace the ``"defences"`` record for ``(record['name'], record['dataset'])``.

    ``record['path']`` is relative to the zoo folder. Used by ``tools/fit_zoo_defences.py``.
    """
    _defence_path(record)  # validates the record
    key = (record["name"], record["dataset"])
    with lock_run_folder(ZOO_DIR):
        records = [r for r in defence_records() if (r["name"], r["dataset"]) != key]
        records.append(record)
        records.sort(key=lambda r: (r["dataset"], r["name"]))
        return _write_index(defences_=records)


def entry_as_dict(entry: ZooEntry) -> dict[str, Any]:
    """A ``ZooEntry`` as a JSON-style dict (path as str)."""
    d = asdict(entry)
    d["path"] = str(entry.path)
    return d


__all__ = ["DEFENCE_NAMES", "VARIANTS", "ZOO_DIR", "ZooEntry", "defence_file_name", "defence_records",
           "entries", "entry_as_dict", "find", "find_defence", "load", "load_defence", "update_defence_index",
           "update_index"]
