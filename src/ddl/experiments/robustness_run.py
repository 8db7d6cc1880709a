"""``ddl robustness``: load a classifier and a defence, run :func:`ddl.robustness.evaluate_robustness`
on the first ``n_images`` test images, write ``robustness.json`` and print a table.

An experiments-layer module: it composes the library (data, zoo, defence, robustness) and is
called by the CLI and by ``ddl reproduce``; the library knows nothing of it.

Caching: the fitted dictionary (``cache/dictionary-<key>.pt``) and every (attack, ε, chunk of
images) result (``cache/<key>-<attack>-<eps>-<start>-<stop>-<entry key>.json``, with its verified
record) are stored in the output folder. ``<key>`` (:func:`cache_key`) holds the model file's
hash, the defence's description and the SHA-256 of its state, the OMP kernel, the images, the
ordered attack list, every budget and the seed; each entry's own key holds all of that again, from
the tensors themselves (:mod:`ddl.robustness._cache`). An interrupted evaluation resumes at the
next chunk of images and a repeated one recomputes nothing. One process at a time writes the
output folder (its lock is held as ``ddl reproduce`` holds its run folder): a second run on the
same folder waits, then finds everything in the cache.

``robustness.json`` records what produced it under ``machine``
(:func:`ddl.provenance.machine_record`: ddl version and commit, torch, BLAS, OMP kernel, compiler,
CPU and the hash of its flags, threads).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["TABLE_LEGEND", "build_defence", "cache_key", "format_table", "run_robustness"]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tensor_sha(t: torch.Tensor) -> str:
    return _sha(t.detach().cpu().contiguous().numpy().tobytes())


def _defence_config(name: str, dataset: str):
    from ddl.experiments import config

    if name == "tuned":
        tuned = config.load_tuned()
        if dataset not in tuned:
            raise ValueError(f"ddl robustness: no tuned defence for {dataset!r}; have {sorted(tuned)}.")
        return tuned[dataset]
    return config.PAPER.defence[dataset]


def build_defence(spec: str, dataset: str, *, data_dir=None, cache: Path | None = None,
                  progress: bool = True):
    """The defence named by ``--defence``, and its description for ``robustness.json``.

    - ``"none"`` → None;
    - ``"tuned"`` / ``"paper"`` → that preset's DictionaryDenoiser fitted on the clean training
      set: the run folder's cached dictionary if there is one, else the zoo's fitted defence when
      its parameters are the preset's (``ddl.zoo.load_defence``, SHA-256 checked), else fitted
      here (and cached);
    - ``"NAME:VALUE"`` → a baseline purifier of :mod:`ddl.defence.purifiers` with its main
      parameter set: ``bits:4`` (bit depth), ``median:3`` (window), ``gauss:1.0`` (sigma),
      ``jpeg:75`` (quality), ``tv:0.1`` (weight), ``wavelet:0.05`` (sigma); ``NAME`` alone uses
      the defaults;
    - a path → ``DictionaryDenoiser.load``.

    Returns ``(defence or None, description dict or None)``."""
    from ddl import zoo
    from ddl.defence import DictionaryDenoiser
    from ddl.defence.purifiers import PURIFIERS

    if spec == "none":
        return None, None
    if spec in ("tuned", "paper"):
        cfg = _defence_config(spec, dataset)
        params = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)
                  if f.name != "dictionary_source"}
        key = _sha(json.dumps([dataset, params], sort_keys=True).encode())[:16]
        path = cache / f"dictionary-{spec}-{dataset}-{key}.pt" if cache is not None else None
        shipped = zoo.find_defence(dataset, spec)
        if path is not None and path.is_file():
            den = DictionaryDenoiser.load(path)
        elif shipped is not None and shipped.get("params") == params:
            den = zoo.load_defence(dataset, spec)   # the same fit, done once by tools/fit_zoo_defences.py
        else:
            from ddl.data import load_dataset

            if progress:
                print(f"fitting the {spec} dictionary on the {dataset} training set ...", flush=True)
            x_train, _ = load_dataset(dataset, "train", data_dir=data_dir)
            den = DictionaryDenoiser(**params).fit(x_train)
            if path is not None:
                den.save(path)
        return den, {"name": spec, **params, "dictionary_sha256": _tensor_sha(den.dictionary_)}
    name, _, value = spec.partition(":")
    if name in PURIFIERS:
        cls, param, kind = PURIFIERS[name]
        try:
            params = {} if not value else {param: kind(value)}
        except ValueError:
            raise ValueError(f"ddl robustness: --defence {spec}: {param} must be "
                             f"{'an int' if kind is int else 'a number'}; got {value!r}.") from None
        purifier = cls(**params)
        try:
            purifier.fit()
        except ValueError as exc:
            raise ValueError(f"ddl robustness: --defence {spec}: {exc}") from None
        desc_params = purifier.get_params()
        desc_params.pop("grad")          # the threat model, not the defence, sets the backward
        label = f"{name}:{desc_params[param]!r}"
        return purifier, {"name": label, "purifier": cls.__name__, **desc_params}
    path = Path(spec)
    if not path.is_file():
        examples = ", ".join(f"{n}:{v}" for n, v in (("bits", 4), ("median", 3), ("gauss", 1.0),
                                                     ("jpeg", 75), ("tv", 0.1), ("wavelet", 0.05)))
        raise ValueError(f"ddl robustness: --defence must be none, paper, tuned, a purifier "
                         f"NAME:VALUE with NAME one of {', '.join(PURIFIERS)} (e.g. {examples}) or "
                         f"a file written by DictionaryDenoiser.save; got {spec!r} (no such file).")
    den = _load_dictionary(spec, dataset)
    params = den.get_params()
    params["device"] = str(params["device"])
    return den, {"name": str(path), **params, "dictionary_sha256": _tensor_sha(den.dictionary_)}


def _load_dictionary(spec: str, dataset: str):
    """The DictionaryDenoiser of ``--defence FILE``, checked against ``dataset``'s images; every
    error names ``--defence`` (a dictionary of the other data set failed inside the first attack
    with "DictionaryDenoiser.transform: x has 1 channels...")."""
    from ddl._validate import check_int_pair, load_torch_file
    from ddl.data import DATASETS as FACTS
    from ddl.defence import DictionaryDenoiser

    blob = load_torch_file(spec, where="ddl robustness", what="--defence")
    if not isinstance(blob, dict) or blob.get("format") != "ddl.DictionaryDenoiser":
        raise ValueError(f"ddl robustness: --defence {spec} is not a file written by DictionaryDenoiser.save "
                         f"(or `ddl denoise --dictionary`).")
    try:
        den = DictionaryDenoiser.load(spec)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"ddl robustness: --defence {spec} is damaged: {type(exc).__name__}: {exc}") from None
    channels, height, width = FACTS[dataset]["shape"]
    hint = f"(fit one on {dataset}: `ddl denoise --fit-dataset {dataset} --dictionary FILE ...`)."
    if den.n_channels_ != channels:
        raise ValueError(f"ddl robustness: --defence {spec} was fitted on {den.n_channels_}-channel images; "
                         f"{dataset} images have {channels} channel{'s' if channels > 1 else ''} {hint}")
    ph, pw = check_int_pair("ddl robustness", "--defence patch_size", den.patch_size)
    if ph > height or pw > width:
        raise ValueError(f"ddl robustness: --defence {spec} has {ph}×{pw} patches, larger than the {height}×{width} "
                         f"{dataset} images {hint}")
    return den


def cache_key(parts: dict[str, Any], *, defence, attacks, budgets: dict[str, Any], seed: int) -> str:
    """The 16-hex-digit name of one evaluation's cache files: SHA-256 of ``parts`` (model, defence
    description, images), the SHA-256 of the defence's state, the OMP kernel that codes its
    patches, the attack list in order, the budgets (β, EOT samples, steps, restarts, iterations,
    queries, cascade...), the seed and the seeding scheme."""
    from ddl.robustness._cache import RNG_SCHEME, module_sha256, omp_kernel_name

    blob = {**parts, "defence_sha256": module_sha256(defence),
            "omp_kernel": omp_kernel_name("cpu") if defence is not None else "none",
            "attacks": list(attacks), "budgets": dict(budgets), "seed": seed, "rng": RNG_SCHEME}
    return _sha(json.dumps(blob, sort_keys=True, default=str).encode())[:16]


def run_robustness(*, dataset: str, model_name: str | None = None, checkpoint: str | None = None,
                   defence: str = "tuned", eps, n_images: int = 200, attacks=None, seed: int = 0,
                   out: str | Path, data_dir=None, budgets: dict[str, Any] | None = None,
                   progress: bool | None = None, variant: str = "standard", wait: bool = True,
                   engine=None) -> dict[str, Any]:
    """Evaluate one (data set, model, defence); write and return the ``robustness.json`` record.

    ``variant`` picks the zoo model's variant (``"denoised"``: fine-tuned on the tuned defence's
    reconstructions); only with ``model_name``.

    One process at a time writes ``out``: its lock (:func:`ddl._io.lock_run_folder`, as
    ``ddl reproduce`` holds its run folder) is taken after the options are checked and before
    the model is loaded, and held until ``robustness.json`` is written. A second run on the same
    folder waits for the first (``wait=False``: refuses at once) and then finds every result in
    the cache; a folder that cannot be written is refused before anything is computed.

    ``progress``: ``None`` shows the per-attack bars when stderr is a terminal and a line when a
    dictionary is fitted; ``False`` prints nothing; ``True`` shows the bars anywhere.

    ``engine``: a :class:`ddl._parallel.Engine` that runs the units (ε × chunk of 100 images) as
    Ray tasks; None runs them here. The record is the same either way (times aside)."""
    import contextlib

    from ddl._io import check_writable, lock_run_folder
    from ddl._validate import check_int
    from ddl.errors import RunFolderError
    from ddl.robustness import DEFAULT_ATTACKS, parse_attack

    if (model_name is None) == (checkpoint is None):
        raise ValueError("ddl robustness: give exactly one of --zoo MODEL or --checkpoint FILE.")
    n_images = check_int("ddl robustness", "--n-images", n_images, 1)
    if variant != "standard" and model_name is None:
        raise ValueError(f"ddl robustness: --variant selects a zoo model; got --variant {variant} with --checkpoint.")
    attacks = tuple(attacks) if attacks else DEFAULT_ATTACKS
    for a in attacks:  # a misspelt attack is refused before the folder is locked and the model loaded
        parse_attack(a)
    entry = _zoo_entry(model_name, dataset, variant) if model_name is not None else None
    out = Path(out)
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(lock_run_folder(out, wait=wait))
            check_writable(out)
        except RunFolderError as exc:
            raise RunFolderError(f"ddl robustness: --out {out}: {exc}") from None
        return _evaluate(dataset=dataset, model_name=model_name, entry=entry, checkpoint=checkpoint,
                         variant=variant, defence=defence, eps=eps, n_images=n_images, attacks=attacks,
                         seed=seed, out=out, data_dir=data_dir, budgets=budgets, progress=progress,
                         engine=engine)


def _zoo_entry(model_name: str, dataset: str, variant: str):
    """The zoo's index entry of ``--zoo``; a name it lacks is an error with the close match."""
    import difflib

    from ddl import zoo

    entry = zoo.find(model_name, dataset, variant)
    if entry is None:
        names = sorted({e.model for e in zoo.entries() if e.variant == variant and e.dataset == dataset})
        close = difflib.get_close_matches(model_name, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"ddl robustness: --zoo must be one of {names} for {dataset} ({variant}); got "
                         f"{model_name!r}{hint}.")
    return entry


def _evaluate(*, dataset, model_name, entry, checkpoint, variant, defence, eps, n_images, attacks, seed,
              out: Path, data_dir, budgets, progress, engine) -> dict[str, Any]:
    """The body of :func:`run_robustness`, run while ``out`` is locked."""
    from ddl import zoo
    from ddl._io import atomic_write_json
    from ddl.data import load_dataset
    from ddl.provenance import machine_record
    from ddl.robustness import evaluate_robustness

    cache = out / "cache"
    if model_name is not None:
        model = zoo.load(model_name, dataset, variant=variant)
        model_file = entry.path
        model_desc = {"source": "zoo", "name": model_name, "variant": variant, "test_accuracy": entry.accuracy}
        if entry.defence is not None:
            model_desc["trained_behind"] = entry.defence
    else:
        from ddl.models.checkpoint import load_checkpoint

        model, meta = load_checkpoint(checkpoint, where="ddl robustness", what="--checkpoint")
        model_file = Path(checkpoint)
        model_desc = {"source": "checkpoint", "path": str(checkpoint)}
        if meta.get("adversarial"):
            model_desc["adversarial"] = meta["adversarial"]
    model.eval()
    model_sha = (_sha(Path(model_file).read_bytes()) if model_file is not None and Path(model_file).is_file()
                 else _sha(b"".join(_tensor_sha(t).encode() for t in model.state_dict().values())))
    x, y = load_dataset(dataset, "test", data_dir=data_dir)
    if n_images > len(x):
        raise ValueError(f"ddl robustness: --n-images must be <= the {len(x)} {dataset} test images; "
                         f"got {n_images}.")
    x, y = x[:n_images], y[:n_images]
    den, den_desc = build_defence(defence, dataset, data_dir=data_dir, cache=cache, progress=progress is not False)
    budgets = dict(budgets or {})
    key = cache_key({"model": model_sha, "defence": den_desc, "n": n_images, "dataset": dataset},
                    defence=den, attacks=attacks, budgets=budgets, seed=seed)
    t0 = time.perf_counter()
    # adversarially trained on raw images (zoo variant adversarial, or a checkpoint that records
    # --adversarial without a defence): PGD on the bare model is not expected to break it, so the
    # weak_attack flag is not computed. A model trained through a defence (adversarial-ddl) saw
    # only reconstructions and falls bare (0.2 % at MNIST 0.3): there the flag still checks the attack.
    robust_bare = variant == "adversarial" or (
        "adversarial" in model_desc and model_desc["adversarial"].get("defence_sha256") is None)
    res = evaluate_robustness(model, x, y, defence=den, eps=list(eps), attacks=attacks, seed=seed,
                              cache_dir=cache, cache_key=key, progress=progress, engine=engine,
                              robust_bare_model=robust_bare, **budgets)
    record = {
        "dataset": dataset,
        "model": model_name or str(checkpoint),
        "model_info": {**model_desc, "sha256": model_sha},
        "defence": den_desc,
        "n_images": n_images,
        "image_indices": list(range(n_images)),
        "image_indices_rule": f"the first {n_images} images of the {dataset} test set",
        **res.to_dict(),
        # wall time of this invocation (a resumed run reads cached results) and the seconds the
        # attacks took when they were computed: wall time, and CPU time (None when a cached unit
        # predates ddl keeping it)
        "wall_seconds": time.perf_counter() - t0,
        "compute_seconds": sum(res.seconds.values()),
        "compute_cpu_seconds": (None if any(v is None for v in res.cpu_seconds.values())
                                else sum(res.cpu_seconds.values())),
        "threads": torch.get_num_threads(),
        "engine": "serial" if engine is None else engine.describe(),
        "machine": machine_record(str(x.device)),
    }
    record["seconds"] = record.pop("seconds")
    record["cpu_seconds"] = record.pop("cpu_seconds")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "robustness.json", record)
    return record


#: The terminal table's legend: what "oblivious", "adaptive" and the worst case mean.
TABLE_LEGEND = (
    "oblivious: PGD on the bare model, then the image is denoised (the paper's protocol: the "
    "attacker never sees the defence)",
    "adaptive: every other attack row attacks through the defence (bpda, exact, soft: how the "
    "gradient passes it; square: no gradient, queries only)",
    "judge the defence by WORST CASE: an image counts as robust only if every attack failed on it",
)


def _cpu(record: dict[str, Any], attack: str) -> str:
    """An attack's CPU seconds for the terminal table; "-" where a record or a cached unit is from
    before ddl kept CPU time."""
    v = record.get("cpu_seconds", {}).get(attack)
    return f"{v:7.1f}" if v is not None else f"{'-':>7}"


def format_table(record: dict[str, Any]) -> str:
    """The terminal table: a legend (oblivious, adaptive, worst case), accuracy % [95 % interval]
    per attack and ε (under cascade the attack rows are labelled cumulative), the worst case, the
    paired tests, the flags and (when recorded) the machine."""
    from ddl.experiments.robustness_report import (attack_label, eps_label, machine_lines, paired_test_lines,
                                                   pct_ci)

    keys = [repr(float(e)) for e in record["eps"]]
    labels = [eps_label(e, record["dataset"]) for e in record["eps"]]
    cascade = bool(record.get("params", {}).get("cascade"))
    # under cascade the first attack ran on every image: only the later rows are cumulative
    rows = {a: attack_label(a, cascade and i > 0) for i, a in enumerate(record["attacks"])}
    width = max(16, *(len(label) for label in rows.values()))
    cell = 19
    lines = [f"{record['dataset']} / {record['model']} / defence: "
             f"{(record['defence'] or {}).get('name', 'none')} — {record['n_images']} test images, "
             f"accuracy % [95 % Wilson interval] (misclassified clean images count as broken)",
             *TABLE_LEGEND]
    if cascade:
        lines.append("cascade: each attack after the first ran only on the images the attacks above it "
                     "left, so its row is cumulative (the accuracy after it and every attack above it)")
    lines += [f"clean: bare {pct_ci(record, 'clean_accuracy', 'bare')}   defended "
              f"{pct_ci(record, 'clean_accuracy', 'defended')}",
              f"{'eps':<{width}} " + " ".join(f"{lab:>{cell}}" for lab in labels)
              + "   seconds (wall, cpu of all threads)"]
    lines.append(f"{'bare model, PGD':<{width}} " + " ".join(f"{pct_ci(record, 'bare_pgd', k):>{cell}}" for k in keys))
    for a in record["attacks"]:
        lines.append(f"{rows[a]:<{width}} " + " ".join(f"{pct_ci(record, 'attacks', a, k):>{cell}}" for k in keys)
                     + f"   {record['seconds'].get(a, 0):7.1f} {_cpu(record, a)}")
    lines.append(f"{'WORST CASE':<{width}} " + " ".join(f"{pct_ci(record, 'worst_case', k):>{cell}}" for k in keys))
    strongest = record.get("strongest_attack") or {}
    if strongest:
        lines.append(f"{'strongest':<{width}} " + " ".join(f"{strongest.get(k, ''):>{cell}}" for k in keys))
    if record.get("unbounded_accuracy") is not None:
        lines.append(f"eps = 1 (unbounded): {pct_ci(record, 'unbounded_accuracy')} %")
    paired = paired_test_lines(record)
    if paired:
        lines.append("paired tests (exact McNemar on the same images; A − B in points, 95 % interval):")
        lines += [f"  {line}" for line in paired]
    if record["flags"]:
        lines.append("FLAGS:")
        lines += [f"  [{f['code']}] {f['message']}" for f in record["flags"]]
    else:
        lines.append("flags: none")
    if record.get("params", {}).get("weak_attack_checked") is False:
        lines.append("  (weak_attack not checked: the bare model is adversarially trained, PGD is not "
                     "expected to break it)")
    if record.get("machine"):
        lines.append("produced by: " + "; ".join(machine_lines(record)))
    return "\n".join(lines)


def robustness_cell(*, model, defence, x, y, dataset: str, model_name: str, eps, n_images: int,
                    cache: Path, key_parts: dict[str, Any], budgets: dict[str, Any] | None = None,
                    attacks=None, seed: int = 0, progress: bool = False, engine=None) -> dict[str, Any]:
    """The adaptive suite on one reproduction cell (its model and defence already built): the
    first ``n_images`` of ``x``; results cached under ``cache`` by ``key_parts`` (the cell's
    model and defence keys). Returns the record ``ddl reproduce`` stores in results.json."""
    from ddl.robustness import DEFAULT_ATTACKS, evaluate_robustness

    n = min(n_images, len(x))
    budgets = dict(budgets or {})
    attacks = tuple(attacks) if attacks else DEFAULT_ATTACKS
    key = cache_key({**key_parts, "n": n}, defence=defence, attacks=attacks, budgets=budgets, seed=seed)
    res = evaluate_robustness(model, x[:n], y[:n], defence=defence, eps=list(eps), attacks=attacks,
                              seed=seed, cache_dir=cache, cache_key=f"robust-{key}",
                              progress=progress, engine=engine, **budgets)
    return {"dataset": dataset, "model": model_name, "n_images": n,
            "image_indices": list(range(n)), **res.to_dict()}
