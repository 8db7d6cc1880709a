"""The experiment, top to bottom: load → model → dictionary → attack → denoise → evaluate → write.

This is the only module that imports from data, models, attacks, defence and metrics.

Caching. Each stage stores its output in ``<run_dir>/cache`` under a key of every input that
determines it (configuration, ddl version, and the SHA-256 of the images it reads), and **is a
pure function of that key**: it seeds its own random generators from the key inside
``torch.random.fork_rng`` (never reading or changing the caller's global RNG state), and the value
a run goes on with is the one read back from the cache file it just wrote (the model checkpoint
keeps float16 weights, so the model is evaluated after rounding them). An interrupted, resumed,
reordered or repeated run therefore gives bit-identical accuracies and per-image predictions.

Each cache file has a record beside it (``<file>.entry.json``: stage, key, the keys of its inputs,
ddl version, size, SHA-256; see ``ddl._io``); a file that does not match its record (edited,
swapped, truncated) is reported in one line naming it and recomputed, or with ``strict=True``
stops the run (:class:`~ddl.errors.CacheError`). Each stage says what it did: "cached",
"computing" or "resumed from epoch N" (model training resumes at epoch granularity); records say
which stages were resumed. One process writes a run folder at a time (``ddl._io.lock_run_folder``).

Threat model: the attacks here are computed on the *undefended* model (oblivious / non-adaptive,
as in the paper). That shows what the denoiser removes from perturbations made without knowledge
of it; it does not show robustness against an attacker who differentiates through the denoiser.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

import ddl
from ddl import metrics
from ddl._io import (_warn, atomic_torch_save, atomic_write_json, check_entry, check_writable,
                     folder_error, lock_run_folder, remove_entry, safe_torch_load, write_entry_record)
from ddl.experiments.config import AttackConfig, ExperimentConfig, config_key
from ddl.errors import CacheError

CACHE = "cache"
#: level of the interval of every accuracy (Wilson score interval over images) and of the paired
#: differences (DESIGN.md §5b)
CONFIDENCE = 0.95
#: fields of a results file that differ between runs of the same configuration (timings, the
#: machine, what this run computed); see ``write_results``
VOLATILE = ("seconds", "machine", "stages")


def run_experiment(cfg: ExperimentConfig, run_dir: str | Path, *, cache_dir: str | Path | None = None,
                   progress: bool = True, strict: bool = False, wait: bool = True,
                   lock_cache: bool = True) -> dict:
    """Run every attack of ``cfg`` against one model and one denoiser; write ``results.json``.

    Returns the results dict ``{"ddl_version", "config", "records": [...], "seconds", "machine"}``;
    one record per attack (see DESIGN.md §7 for the fields; ``stages`` says what this run did for
    each stage, ``resumed_stages`` which stages were resumed when computed). Per-image arrays (PSNR,
    SSIM, predictions, a few example images) go to ``run_dir/arrays/``. ``cache_dir`` (default
    ``run_dir/cache``) may be shared between runs: every cached file is keyed by its inputs.
    ``strict``: a cache entry that fails verification raises ``CacheError`` instead of being
    recomputed. ``wait``: when another process holds the run folder, wait for it (else raise
    ``RunFolderError``). Files whose content would not change are not rewritten, so a finished
    run folder can be re-run from a read-only location. ``lock_cache=False``: the caller holds the
    cache folder's lock for several cells that run at once (``ddl reproduce --workers``; every
    stage is a pure function of its key and written atomically, so two cells that compute the
    same stage write the same bytes once).
    """
    run_dir = Path(run_dir)
    cache = Path(cache_dir) if cache_dir is not None else run_dir / CACHE
    with lock_run_folder(run_dir, wait=wait), (lock_run_folder(cache, wait=wait) if lock_cache
                                               else contextlib.nullcontext()):
        return _run(cfg, run_dir, cache, progress=progress, strict=strict)


def _run(cfg: ExperimentConfig, run_dir: Path, cache: Path, *, progress: bool, strict: bool) -> dict:
    atomic_write_json(run_dir / "config.json", cfg.to_dict())
    opts = {"strict": strict, "progress": progress}
    timings: dict[str, float] = {}
    with timed(timings, "data"):
        x_train, y_train, x_test, y_test = load_data(cfg)
    with timed(timings, "model"):
        model, model_info = get_model(cfg, x_train, y_train, x_test, y_test, cache, status=(status := {}), **opts)
    dictionary = _DictionaryStage(cfg, x_train, cache)  # fitted once, or once per attack
    records = []
    for attack in cfg.attacks:
        n = attack.n_images  # the first n test images (None: all)
        x, y, log = x_test[:n], y_test[:n], _StageLog(opts, model=status["model"])
        with log.timed("attack"):
            x_adv = get_adversarial(cfg, attack, model, model_info["key"], x, y, cache, **log.args)
        with log.timed("dictionary"):
            denoiser, den_key = dictionary.for_attack(x_adv, log)
        with log.timed("denoise"):
            x_den = get_denoised(denoiser, den_key, x_adv, cache, cfg.device, **log.args)
            x_den_clean = _denoise_test_set(denoiser, den_key, x_test, cache, cfg.device, log)[:n]
        with log.timed("evaluate"):
            record, arrays = evaluate(cfg, attack, model, x, y, x_adv, x_den, x_den_clean)
            record["files"] = {"arrays": _save_arrays(run_dir, cfg, attack, arrays)}
            record["dictionary"] = dictionary.info
        records.append(log.finish(record, model_info))
        if progress:
            print(format_record(record))
    results = {"ddl_version": ddl.__version__, "config": cfg.to_dict(), "records": records,
               "seconds": timings, "machine": _machine(cfg)}
    write_results(run_dir / "results.json", results)
    return results


# --- what _run records about its stages ---------------------------------------------------------
@contextlib.contextmanager
def timed(seconds: dict, stage: str):
    """``seconds[stage]`` = the wall time of the block (set only when the block completes)."""
    t = time.perf_counter()
    yield
    seconds[stage] = time.perf_counter() - t


class _StageLog:
    """One record's account of its stages: ``seconds`` (wall time of each stage in this run),
    ``computed`` (what each stage cost when it was computed; None: cached by an older ddl) and
    ``stages`` (what this run did: "cached", "computing", "resumed from epoch N")."""

    def __init__(self, opts: dict, **stages: str):
        self.opts = opts  # the run's strict and progress
        self.seconds: dict[str, float] = {}
        self.computed: dict[str, float | None] = {}
        self.stages: dict[str, str] = dict(stages)

    def timed(self, stage: str):
        return timed(self.seconds, stage)

    @property
    def args(self) -> dict:
        """The keyword arguments of a stage function: ``stats``/``status`` filled by this log (see
        ``_cached_stage``), the run's ``strict`` and ``progress``."""
        return {"stats": self.computed, "status": self.stages, **self.opts}

    def finish(self, record: dict, model_info: dict) -> dict:
        """``record`` with what this run did for each stage (DESIGN.md §7)."""
        record["seconds"] = self.seconds
        # what the cached stages cost when they were computed (None: cached by an older ddl)
        record["computed_seconds"] = self.computed
        record["model_info"] = {k: v for k, v in model_info.items() if k not in ("key", "resumed_from_epoch")}
        record["stages"] = self.stages  # what this run did: "cached", "computing", "resumed from epoch N"
        # stages whose cached result was resumed: {stage: epoch}
        record["resumed_stages"] = ({"model": model_info["resumed_from_epoch"]}
                                    if model_info.get("resumed_from_epoch") else {})
        return record


class _DictionaryStage:
    """The denoiser of each attack: one dictionary learned from the clean training images, or
    (``dictionary_source="perturbed"``) one learned from each attacked set.

    A dictionary reused from an earlier attack repeats that fit's status in the record and adds
    no computed seconds (it was not fitted for this attack)."""

    def __init__(self, cfg: ExperimentConfig, x_train: torch.Tensor, cache: Path):
        self.cfg, self.x_train, self.cache = cfg, x_train, cache
        self.denoiser, self.key, self.status = None, None, {}

    def for_attack(self, x_adv: torch.Tensor, log: _StageLog):
        per_attack = self.cfg.defence.dictionary_source == "perturbed"
        if self.denoiser is None or per_attack:
            self.status = {}
            self.denoiser, self.key = get_denoiser(self.cfg, x_adv if per_attack else self.x_train, self.cache,
                                                   **log.opts, stats=log.computed, status=self.status)
        log.stages.update(self.status)
        return self.denoiser, self.key

    @property
    def info(self) -> dict:
        """Which dictionary the records rest on: the zoo's shipped one (name, SHA-256) or a fit
        (with the OMP kernel that fitted it: fits with the two kernels differ)."""
        if self.status.get("dictionary") == "zoo":
            shipped = _trained_behind(self.cfg)
            return {"source": "zoo", "name": shipped["name"], "sha256": shipped["sha256"],
                    "omp_kernel": _kernel_name(self.cfg.device)}
        return {"source": "fitted", "omp_kernel": _kernel_name(self.cfg.device)}


def _denoise_test_set(denoiser, den_key: str, x_test: torch.Tensor, cache: Path, device: str,
                      log: _StageLog) -> torch.Tensor:
    """The whole clean test set denoised, once per dictionary (denoising is per image; callers take
    their subset), recorded as stage "denoise_clean_test_set"."""
    stats: dict[str, float | None] = {}
    status: dict[str, str] = {}
    x_den = get_denoised(denoiser, den_key, x_test, cache, device, **log.opts, stats=stats, status=status)
    log.computed["denoise_clean_test_set"] = stats.get("denoise")
    log.stages["denoise_clean_test_set"] = status["denoise"]
    return x_den


def _save_arrays(run_dir: Path, cfg: ExperimentConfig, attack: AttackConfig, arrays: dict) -> str:
    """Write one record's per-image arrays; returns their path relative to ``run_dir``."""
    path = run_dir / "arrays" / f"{cfg.data.dataset}-{cfg.model.name}-{attack.label}.pt"
    atomic_torch_save(path, arrays)
    return str(path.relative_to(run_dir))


def _machine(cfg: ExperimentConfig) -> dict:
    """What produced the numbers (``ddl.provenance.machine_record``: ddl version and commit, torch,
    BLAS, OMP kernel and compiler, CPU, threads, device); the report prints it."""
    from ddl.provenance import machine_record

    return machine_record(cfg.device)


def run_robustness_cell(cfg: ExperimentConfig, cache: Path, *, n_images: int, eps, attacks=(),
                        budgets=None, progress: bool = True, strict: bool = False, engine=None) -> dict:
    """The adaptive suite (:mod:`ddl.robustness`) on the first ``n_images`` test images of one
    cell: its cached model and its cached clean-patch dictionary, attacked through the defence.
    Every (attack, ε) result is cached under the cell's model and dictionary keys, so an
    interrupted run resumes. Returns the record stored under ``results["robustness"]``."""
    from ddl.experiments.robustness_run import robustness_cell

    if cfg.defence.dictionary_source != "clean":
        raise ValueError(f"run_robustness_cell: the defence of {cfg.name} learns its dictionary from "
                         f"the perturbed set, which depends on the attack; only 'clean' is evaluated.")
    x_train, y_train, x_test, y_test = load_data(cfg)
    model, model_info = get_model(cfg, x_train, y_train, x_test, y_test, cache, progress=progress,
                                  strict=strict, status={})
    denoiser, den_key = get_denoiser(cfg, x_train, cache, progress=progress, strict=strict, status={})
    t = time.perf_counter()
    record = robustness_cell(model=model, defence=denoiser, x=x_test, y=y_test,
                             dataset=cfg.data.dataset, model_name=cfg.model.name, eps=eps,
                             n_images=n_images, cache=cache,
                             key_parts={"model": model_info["key"], "dictionary": den_key},
                             budgets=dict(budgets or {}), attacks=tuple(attacks) or None,
                             progress=progress, engine=engine)
    p = cfg.defence
    record["defence"] = {"name": f"dictionary {p.patch_size}x{p.patch_size}, {p.n_components} atoms, "
                                 f"k={p.n_nonzero_coefs}",
                         **_defence_params(p), "dictionary_key": den_key}
    record["wall_seconds"] = time.perf_counter() - t
    if progress:
        from ddl.experiments.robustness_run import format_table

        print(format_table(record))
    return record


def computed_something(records: list[dict]) -> bool:
    """Whether any stage of these records was computed (or resumed) by this run."""
    return any(s == "computing" or s.startswith("resumed") for r in records for s in r["stages"].values())


def _stable(results: dict) -> str:
    """The results without their ``VOLATILE`` fields, as canonical JSON (NaN-safe comparison)."""
    out = {k: v for k, v in results.items() if k not in VOLATILE}
    for name in ("records", "sweep"):
        if isinstance(out.get(name), list):
            out[name] = [{k: v for k, v in r.items() if k not in VOLATILE} for r in out[name]]
    return json.dumps(out, sort_keys=True)


def write_results(path: str | Path, results: dict) -> bool:
    """Write ``results`` to ``path`` unless the file there already holds the same results apart
    from timings and what was cached (``VOLATILE``). Returns whether the file was written.

    A re-run of a finished run folder thus changes no file (and needs no write permission)."""
    path = Path(path)
    with contextlib.suppress(OSError, ValueError):
        if _stable(json.loads(path.read_text())) == _stable(json.loads(json.dumps(results))):
            return False
    atomic_write_json(path, results)
    return True


# --- stages ------------------------------------------------------------------------------------
def load_data(cfg: ExperimentConfig):
    """→ x_train, y_train, x_test, y_test: float32 (N, C, H, W) in [0, 1] and int64 (N,)."""
    from ddl import data

    d = cfg.data
    if d.source == "sample":
        x_train, y_train = data.load_sample("train")
        x_test, y_test = data.load_sample("test")
    elif d.source == "synthetic":
        shape = (1, 28, 28) if d.dataset == "mnist" else (3, 32, 32)
        x_train, y_train = data.synthetic.make_blobs_images(d.n_train or 200, shape=shape, seed=0)
        x_test, y_test = data.synthetic.make_blobs_images(d.n_test or 40, shape=shape, seed=1)
    else:
        x_train, y_train = data.load_dataset(d.dataset, "train", data_dir=d.data_dir)
        x_test, y_test = data.load_dataset(d.dataset, "test", data_dir=d.data_dir)
    for n, name in ((d.n_train, "n_train"), (d.n_test, "n_test")):
        have = len(x_train) if name == "n_train" else len(x_test)
        if n is not None and n > have:
            raise ValueError(f"load_data: {name}={n} but the {d.source} {d.dataset} split has only {have} images.")
    x_train, y_train = x_train[: d.n_train], y_train[: d.n_train]
    x_test, y_test = x_test[: d.n_test], y_test[: d.n_test]
    return x_train, y_train, x_test, y_test


@contextlib.contextmanager
def _stage_rng(key: str, device: str):
    """Global torch RNG seeded from ``key`` inside the block, the caller's state restored after."""
    dev = torch.device(device)
    devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(key[:15], 16))
        yield


def _say(progress: bool, stage: str, what: str, path: Path) -> None:
    """One flushed line per stage event (readable in a log file, unlike a carriage-return bar)."""
    if progress:
        print(f"  {stage:<24}{what:<24}{path.name}", flush=True)


def _epoch_line(line: str) -> None:
    """Model training's line per epoch (and its resume line), under the stage's line."""
    print(f"    {line}", flush=True)


def _cache_failure(path: Path, reason: str, strict: bool) -> None:
    message = f"cache entry {path} failed verification: {reason}"
    if strict:
        raise CacheError(f"{message}; delete it to have it recomputed, or run without --strict")
    _warn(f"warning: {message}; recomputing it")
    remove_entry(path)


def _cached_stage(path: Path, stage: str, stats: dict | None, load, compute, save, *, key: str,
                  inputs: dict, device: str = "cpu", strict: bool = False, status: dict | None = None,
                  progress: bool = True, resume=None):
    """The verified cache entry ``path`` if there is one, else ``compute()`` under RNG seeded by
    ``key``, ``save(path, value)``, write the entry's record, and read it back.

    Returns ``(value, record)``. ``stats[stage]`` receives the seconds ``compute`` took (also for a
    value read from the cache; None if its record lacks them), ``status[stage]`` what happened
    ("cached", "computing", "resumed from epoch N"). ``resume()``, when given, is called before
    computing and returns the epoch a partial computation resumes from (or None)."""
    state, record, reason = check_entry(path, key=key, stage=stage)
    if state == "bad":
        _cache_failure(path, reason, strict)
    elif state == "ok":
        try:
            with _stage_rng(key, device):  # loading may build a module: random init, then weights
                value = load(path)
        except Exception as exc:  # verified bytes that do not load: another ddl's format
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            _cache_failure(path, f"it cannot be loaded ({first})", strict)
        else:
            _say(progress, stage, "cached", path)
            if stats is not None:
                stats[stage] = record.get("seconds")
            if status is not None:
                status[stage] = "cached"
            return value, record
    check_writable(path.parent)  # a read-only run folder: say so before computing
    epoch = resume() if resume is not None else None
    what = f"resumed from epoch {epoch}" if epoch else "computing"
    _say(progress, stage, what, path)
    t = time.perf_counter()
    with _stage_rng(key, device):
        value = compute()
    seconds = time.perf_counter() - t
    _say(progress, stage, f"done in {seconds:.1f} s", path)
    save(path, value)
    record = write_entry_record(path, key=key, stage=stage, inputs=inputs, seconds=seconds,
                                **({"resumed_from_epoch": epoch} if resume is not None else {}))
    with _stage_rng(key, device):
        value = load(path)  # go on with exactly what a later run will read
    if stats is not None:
        stats[stage] = seconds
    if status is not None:
        status[stage] = what
    return value, record


def get_model(cfg, x_train, y_train, x_test, y_test, cache: Path, *, progress=True, strict=False,
              status: dict | None = None):
    """A zoo checkpoint when one matches (full data only), else a model trained once and cached.

    Returns ``(model in eval mode, info)``; ``info`` holds ``source``, ``key``, ``path`` (the file
    name for a cached model), ``epochs``, ``test_accuracy``, ``seconds`` and, for a trained model,
    ``resumed_from_epoch`` (None when it was trained in one go). The accuracy is that of the
    stored model (float16 weights)."""
    from ddl.models import build_model
    from ddl.models.checkpoint import load_checkpoint, round_to_float16, save_checkpoint
    from ddl.models.train import fit, predict

    m, d = cfg.model, cfg.data
    variant = getattr(m, "variant", "standard")
    if m.use_zoo and d.source == "full":
        from ddl import zoo

        entry = zoo.find(m.name, d.dataset, variant)
        if entry is not None:
            model = zoo.load(m.name, d.dataset, variant=variant, device=cfg.device)
            if status is not None:
                status["model"] = "zoo"
            info = {"source": "zoo", "key": entry.sha256, "path": str(entry.path),
                    "epochs": entry.epochs, "test_accuracy": entry.accuracy}
            if variant != "standard":
                info.update(variant=variant, trained_behind=entry.defence,
                            denoised_clean_accuracy=entry.extra.get("denoised_clean_accuracy"))
            return model, info
    if variant != "standard":
        raise LookupError(f"get_model: no {variant!r} variant of {m.name!r} for {d.dataset!r} "
                          f"({d.source} data) in the zoo; the pipeline trains only standard models "
                          f"(fine-tune one with tools/train_zoo.py --variant {variant}).")
    key = config_key("model", m.name, m.epochs, m.batch_size, m.lr, m.seed, d.dataset, d.source,
                     d.n_train, _tensor_fingerprint(x_train), _tensor_fingerprint(y_train),
                     _tensor_fingerprint(x_test), _tensor_fingerprint(y_test), ddl.__version__)
    path = cache / f"model-{m.name}-{key}.pt"
    resume_path = path.with_suffix(".resume.pt")

    def resume() -> int | None:
        """Epochs done in a resume state left by an interrupted run (an unreadable one is
        reported and removed, or stops the run when strict)."""
        if not resume_path.is_file():
            return None
        try:
            state = safe_torch_load(resume_path)
            return int(state["epoch"])
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            message = f"training resume state {resume_path} cannot be read ({first})"
            if strict:
                raise CacheError(f"{message}; delete it to train from the start, or run without --strict") from exc
            _warn(f"warning: {message}; training from the start")
            try:
                resume_path.unlink()
            except OSError as err:
                raise folder_error(err, resume_path.parent) from err
            return None

    def compute():
        model = build_model(m.name, tuple(x_train.shape[1:]), n_classes=int(y_train.max()) + 1)
        history = fit(model, x_train, y_train, epochs=m.epochs, batch_size=m.batch_size, lr=m.lr,
                      seed=m.seed, device=cfg.device, checkpoint_path=resume_path,
                      # a bar only on a terminal; a line per epoch in any case (logs)
                      progress=progress and sys.stderr.isatty(), log=_epoch_line if progress else None)
        round_to_float16(model.eval())  # the weights the checkpoint stores
        acc = metrics.accuracy(predict(model, x_test, device=cfg.device), y_test)
        meta = {"architecture": m.name, "dataset": d.dataset, "source": d.source,
                "input_shape": list(x_train.shape[1:]), "n_classes": int(y_train.max()) + 1,
                "epochs": m.epochs, "seconds": float(sum(history.seconds)), "test_accuracy": acc}
        return model, meta

    (model, meta), record = _cached_stage(
        path, "model", None, load=lambda p: load_checkpoint(p, device=cfg.device), compute=compute,
        save=lambda p, v: save_checkpoint(p, *v), key=key, device=cfg.device, strict=strict,
        status=status, progress=progress, resume=resume,
        inputs={"train_images": _tensor_fingerprint(x_train), "test_images": _tensor_fingerprint(x_test)})
    try:
        resume_path.unlink(missing_ok=True)  # finished: the resume state is no longer needed
    except OSError as exc:
        if resume_path.exists():
            raise folder_error(exc, resume_path.parent) from exc
    return model, {"source": "trained", "key": key, "path": path.name, **_short(meta),
                   "resumed_from_epoch": record.get("resumed_from_epoch")}


def _short(meta: dict) -> dict:
    return {k: meta.get(k) for k in ("epochs", "test_accuracy", "seconds")}


def get_denoiser(cfg: ExperimentConfig, x_fit: torch.Tensor, cache: Path, *, progress=True,
                 stats: dict | None = None, strict: bool = False, status: dict | None = None):
    """(fitted DictionaryDenoiser, its key), learned once per (defence config, fitting data).

    ``stats``/``status``, when given, receive ``["dictionary"]`` (see ``_cached_stage``)."""
    from ddl.defence import DictionaryDenoiser

    p = cfg.defence
    shipped = _trained_behind(cfg)
    if shipped is not None:  # the very dictionary the classifier was fine-tuned behind
        from ddl import zoo

        den = zoo.load_defence(cfg.data.dataset, shipped["name"], device=cfg.device)
        if status is not None:
            status["dictionary"] = "zoo"
        _say(progress, "dictionary", "zoo", Path(zoo.defence_file_name(cfg.data.dataset, shipped["name"])))
        # the kernel is in the key: the images it denoises (cached under this key) differ by kernel
        return den, config_key("dictionary", _defence_params(p), "zoo", shipped["sha256"],
                               *_kernel_key_part(cfg.device))
    data_id = _tensor_fingerprint(x_fit)
    # the OMP kernel is part of the key: a fit with the C kernel is a different dictionary from a
    # fit with the torch kernel (ddl.sparse.omp.kernel_name), so a cache never mixes the two
    key = config_key("dictionary", _defence_params(p), data_id, ddl.__version__,
                     *_kernel_key_part(cfg.device))
    den, _ = _cached_stage(
        cache / f"dictionary-{key}.pt", "dictionary", stats,
        load=lambda path: DictionaryDenoiser.load(path).to(cfg.device),
        compute=lambda: DictionaryDenoiser(**_defence_params(p), device=cfg.device).fit(x_fit, progress=_bars(progress)),
        save=lambda path, d: d.save(path), key=key, device=cfg.device,
        inputs={"images": data_id, "omp_kernel": _kernel_name(cfg.device)},
        strict=strict, status=status, progress=progress)
    return den, key


def _kernel_name(device: str) -> str:
    from ddl.sparse.omp import kernel_name

    return kernel_name(device)


def _kernel_key_part(device: str) -> tuple[str, ...]:
    """``()`` for the torch kernel (the keys of caches written before the C kernel existed stay
    valid: those dictionaries were fitted with it), ``("omp-native",)`` for the C kernel."""
    return ("omp-native",) if _kernel_name(device) == "native" else ()


def _trained_behind(cfg: ExperimentConfig) -> dict | None:
    """The zoo defence (``name``, ``sha256``) this cell uses as shipped instead of a fit, or None.

    - a zoo ``denoised`` variant evaluated behind the defence it was trained with (same
      parameters, clean dictionary): that very dictionary;
    - any other cell on the full data sets with a clean dictionary whose parameters equal a
      shipped defence's (the ``paper`` and ``tuned`` presets): that defence, so a committed run
      reproduces on another machine or OMP kernel (online dictionary learning amplifies float
      rounding: a re-fit is another dictionary). ``refit_dictionary=True`` fits instead.
    """
    if cfg.refit_dictionary or not cfg.model.use_zoo or cfg.data.source != "full" \
            or cfg.defence.dictionary_source != "clean":
        return None
    from ddl import zoo

    params = _defence_params(cfg.defence)
    variant = getattr(cfg.model, "variant", "standard")
    if variant != "standard":
        entry = zoo.find(cfg.model.name, cfg.data.dataset, variant)
        behind = entry.defence if entry is not None else None
        if not behind:
            return None
        record = zoo.find_defence(cfg.data.dataset, behind["name"])
        if record is None or record["sha256"] != behind["sha256"] or record["params"] != params:
            return None
        return {"name": behind["name"], "sha256": behind["sha256"]}
    if cfg.data.n_train is not None:          # the shipped ones were fitted on the whole set
        return None
    for record in zoo.defence_records():
        if record["dataset"] == cfg.data.dataset and record["params"] == params:
            return {"name": record["name"], "sha256": record["sha256"]}
    return None


def get_denoised(denoiser, den_key: str, x: torch.Tensor, cache: Path, device: str, *,
                 stats: dict | None = None, strict: bool = False, status: dict | None = None,
                 progress: bool = True) -> torch.Tensor:
    """``denoiser.transform(x)``, computed once per (dictionary, images) and cached.

    ``stats``/``status``, when given, receive ``["denoise"]`` (see ``_cached_stage``)."""
    def compute():
        with torch.no_grad():
            return denoiser.transform(x.to(device), progress=_bars(progress)).cpu()

    images = _tensor_fingerprint(x)
    key = config_key(den_key, images)
    value, _ = _cached_stage(
        cache / f"denoised-{key}.pt", "denoise", stats,
        load=lambda path: safe_torch_load(path)["x"], compute=compute,
        save=lambda path, v: atomic_torch_save(path, {"x": v}), key=key,
        inputs={"dictionary": den_key, "images": images}, device=device, strict=strict,
        status=status, progress=progress)
    return value


def _defence_params(p) -> dict:
    return {"patch_size": p.patch_size, "n_components": p.n_components,
            "n_nonzero_coefs": p.n_nonzero_coefs, "step": p.step, "method": p.method,
            "n_epochs": p.n_epochs, "max_patches": p.max_patches, "remove_mean": p.remove_mean,
            "random_state": p.random_state}


def get_adversarial(cfg, attack: AttackConfig, model, model_key: str, x, y, cache: Path, *,
                    stats: dict | None = None, strict: bool = False, status: dict | None = None,
                    progress: bool = True):
    """Attacked images, computed once per (model, attack, parameters, images, labels) and cached.

    ``stats``/``status``, when given, receive ``["attack"]`` (see ``_cached_stage``)."""
    images, labels = _tensor_fingerprint(x), _tensor_fingerprint(y)
    key = config_key("adv", model_key, attack.name, attack.params, images, labels, ddl.__version__)
    value, _ = _cached_stage(
        cache / f"adv-{attack.name}-{key}.pt", "attack", stats,
        load=lambda path: safe_torch_load(path)["x_adv"],
        compute=lambda: run_attack(attack, model, x.to(cfg.device), y.to(cfg.device), progress=_bars(progress)).cpu(),
        save=lambda path, v: atomic_torch_save(path, {"x_adv": v, "attack": attack.name,
                                                      "params": dict(attack.params)}),
        key=key, inputs={"model": model_key, "images": images, "labels": labels}, device=cfg.device,
        strict=strict, status=status, progress=progress)
    return value


def run_attack(attack: AttackConfig, model, x, y, *, progress: bool = False):
    """Call ``ddl.attacks.ATTACKS[name](model, x, y, **params)`` (JSMA draws a random wrong
    class of ``y`` as each image's target). ``progress``: a bar for the iterative attacks (PGD,
    JSMA); FGSM is one gradient step and has none."""
    from ddl.attacks import ATTACKS

    extra = {"progress": True} if progress and attack.name in ("pgd", "jsma") else {}
    return ATTACKS[attack.name](model, x, y, **attack.params, **extra)


def _bars(progress: bool) -> bool:
    """Progress bars only on a terminal; a log file gets the stage lines of ``_say`` instead."""
    return bool(progress) and sys.stderr.isatty()


def _tensor_fingerprint(x: torch.Tensor) -> str:
    """SHA-256 of a tensor's shape, dtype and every value (a cache key of the images; ~0.2 s for
    the MNIST training set)."""
    a = x.detach().cpu().contiguous()
    h = hashlib.sha256(f"{tuple(a.shape)}|{a.dtype}|".encode())
    h.update(a.reshape(-1).view(torch.uint8).numpy())  # the raw bytes, without a copy
    return h.hexdigest()[:16]


def evaluate(cfg, attack: AttackConfig, model, x, y, x_adv, x_den, x_den_clean) -> tuple[dict, dict]:
    """One results record (accuracies, confidences, PSNR/SSIM, the high-confidence subset) and
    its per-image arrays (PSNR, SSIM, predictions, the first 8 images of each kind in float16).

    Every accuracy has its 95 % Wilson interval over the images in ``accuracy_ci`` (same keys as
    ``accuracy``; None where the subset is empty), and each comparison on the same images its
    exact McNemar test in ``paired_tests`` (denoised vs perturbed, denoised clean vs clean, and
    denoised vs perturbed on the high-confidence subset)."""
    from ddl.models.train import predict

    logits = {name: predict(model, v, device=cfg.device).cpu()
              for name, v in (("clean", x), ("perturbed", x_adv), ("denoised", x_den),
                              ("denoised_clean", x_den_clean))}
    acc = {name: metrics.accuracy(lg, y) for name, lg in logits.items()}
    correct = {name: lg.argmax(1) == y for name, lg in logits.items()}  # (N,) bool per kind
    conf = {name: metrics.mean_confidence(lg) for name, lg in logits.items()}
    thr = cfg.high_confidence_threshold
    mask = metrics.high_confidence_misclassified(logits["perturbed"], y, threshold=thr)
    n_hc = int(mask.sum())
    high = {"threshold": thr, "n_images": n_hc,
            "perturbed": metrics.accuracy(logits["perturbed"][mask], y[mask]) if n_hc else None,
            "denoised": metrics.accuracy(logits["denoised"][mask], y[mask]) if n_hc else None}
    per_image = {f"{m.__name__}_{name}": m(v, x, reduction="none")
                 for m in (metrics.psnr, metrics.ssim)
                 for name, v in (("perturbed", x_adv), ("denoised", x_den), ("denoised_clean", x_den_clean))}
    # stored compactly (results are committed): float32 metrics, labels in the smallest int type
    label_dtype = torch.uint8 if logits["clean"].shape[1] <= 256 else torch.int64
    per_image = {k: v.float() for k, v in per_image.items()}
    from ddl.plots.examples import pick_examples  # the figure's examples include successful attacks

    ex = pick_examples(y, logits["clean"].argmax(1), logits["perturbed"].argmax(1), n=8)
    arrays = {**per_image, "y": y.to(label_dtype),
              **{f"pred_{k}": lg.argmax(1).to(label_dtype) for k, lg in logits.items()},
              "high_confidence_mask": mask,
              "examples_index": ex,
              **{f"examples_{k}": v[ex].to(torch.float16) for k, v in (("clean", x), ("perturbed", x_adv),
                                                              ("denoised", x_den))},
              **{f"pixels_{k}": _pixel_summary(v) for k, v in (("clean", x), ("perturbed", x_adv),
                                                              ("denoised", x_den))}}
    record = {
        "dataset": cfg.data.dataset,
        "model": cfg.model.name,
        "attack": attack.name,
        "attack_params": dict(attack.params),
        "defence_params": {**_defence_params(cfg.defence),
                           "dictionary_source": cfg.defence.dictionary_source},
        "n_images": len(x),
        "accuracy": {**acc, "high_confidence": high},
        "accuracy_ci": _accuracy_intervals(correct, mask),
        "accuracy_ci_method": {"method": "wilson", "confidence": CONFIDENCE},
        "paired_tests": _paired_tests(correct, mask),
        "confidence": conf,
        # PSNR of an image identical to its clean version is +inf (e.g. JSMA finds nothing to
        # change); the mean is over the other images and the identical ones are counted.
        "psnr": {**{k: _finite_mean(per_image[f"psnr_{k}"]) for k in ("perturbed", "denoised", "denoised_clean")},
                 "n_identical": {k: int(torch.isinf(per_image[f"psnr_{k}"]).sum())
                                 for k in ("perturbed", "denoised", "denoised_clean")}},
        "ssim": {k: float(per_image[f"ssim_{k}"].mean()) for k in ("perturbed", "denoised", "denoised_clean")},
    }
    return record, arrays


def _interval(correct: torch.Tensor) -> list[float] | None:
    """The Wilson interval of the accuracy of ``correct`` (None for no image)."""
    n = len(correct)
    return list(metrics.wilson_interval(int(correct.sum()), n, CONFIDENCE)) if n else None


def _accuracy_intervals(correct: dict[str, torch.Tensor], mask: torch.Tensor) -> dict:
    """``accuracy_ci`` of a record: the interval of every accuracy in ``accuracy``, same keys."""
    return {**{name: _interval(c) for name, c in correct.items()},
            "high_confidence": {k: _interval(correct[k][mask]) for k in ("perturbed", "denoised")}}


def _paired_tests(correct: dict[str, torch.Tensor], mask: torch.Tensor) -> dict:
    """McNemar tests of the record's comparisons on the same images (``ddl.metrics.mcnemar``: A
    vs B, ``difference`` = accuracy(A) − accuracy(B)); None for an empty high-confidence subset."""
    return {"denoised_vs_perturbed": metrics.mcnemar(correct["denoised"], correct["perturbed"]),
            "denoised_clean_vs_clean": metrics.mcnemar(correct["denoised_clean"], correct["clean"]),
            "high_confidence_denoised_vs_perturbed": (
                metrics.mcnemar(correct["denoised"][mask], correct["perturbed"][mask]) if mask.any() else None)}


def _finite_mean(v: torch.Tensor) -> float | None:
    finite = v[torch.isfinite(v)]
    return float(finite.double().mean()) if len(finite) else None


def _pixel_summary(x: torch.Tensor, n: int = 20_000) -> torch.Tensor:
    """``n`` pixel values at seeded random positions (float16; ``ddl.plots.sample_pixels``):
    enough for the QQ and density figures without keeping the images."""
    from ddl.plots.distributions import sample_pixels

    return sample_pixels(x, n, seed=0)


def format_record(r: dict) -> str:
    """A small terminal table for one record."""
    a, s = r["accuracy"], r["ssim"]
    p = {k: float("nan") if v is None else v for k, v in r["psnr"].items() if k != "n_identical"}
    head = f"{r['dataset']} · {r['model']} · {r['attack']} {r['attack_params']} · {r['n_images']} images"
    rows = [
        f"{'':<16}{'accuracy':>10}{'PSNR dB':>10}{'SSIM':>8}",
        f"{'clean':<16}{a['clean'] * 100:>9.2f}%{'':>10}{'':>8}",
        f"{'perturbed':<16}{a['perturbed'] * 100:>9.2f}%{p['perturbed']:>10.2f}{s['perturbed']:>8.3f}",
        f"{'denoised':<16}{a['denoised'] * 100:>9.2f}%{p['denoised']:>10.2f}{s['denoised']:>8.3f}",
        f"{'denoised clean':<16}{a['denoised_clean'] * 100:>9.2f}%{p['denoised_clean']:>10.2f}"
        f"{s['denoised_clean']:>8.3f}",
    ]
    return "\n".join([head, *rows])
