"""The experiment, top to bottom: load → model → dictionary → attack → denoise → evaluate → write.

This is the only module that imports from data, models, attacks, defence and metrics. Each stage
reads only what the previous stage produced and stores its own output in ``<run_dir>/cache``
under a key derived from every input that determines it, written atomically; a second run with
the same configuration recomputes nothing, and an interrupted run resumes (model training resumes
at epoch granularity).

Threat model: the attacks here are computed on the *undefended* model (oblivious / non-adaptive,
as in the paper). That shows what the denoiser removes from perturbations made without knowledge
of it; it does not show robustness against an attacker who differentiates through the denoiser.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

import ddl
from ddl import metrics
from ddl._io import atomic_torch_save, atomic_write_json, safe_torch_load
from ddl.config import AttackConfig, ExperimentConfig, config_key

CACHE = "cache"


def run_experiment(cfg: ExperimentConfig, run_dir: str | Path, *, cache_dir: str | Path | None = None,
                   progress: bool = True) -> dict:
    """Run every attack of ``cfg`` against one model and one denoiser; write ``results.json``.

    Returns the results dict ``{"ddl_version", "config", "records": [...], "seconds"}``; one
    record per attack (see DESIGN.md §7 for the fields). Per-image arrays (PSNR, SSIM,
    predictions, a few example images) go to ``run_dir/arrays/``. ``cache_dir`` (default
    ``run_dir/cache``) may be shared between runs: every cached file is keyed by its inputs.
    """
    run_dir = Path(run_dir)
    cache = Path(cache_dir) if cache_dir is not None else run_dir / CACHE
    cache.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "config.json", cfg.to_dict())
    timings: dict[str, float] = {}

    t = time.perf_counter()
    x_train, y_train, x_test, y_test = load_data(cfg)
    timings["data"] = time.perf_counter() - t

    t = time.perf_counter()
    model, model_info = get_model(cfg, x_train, y_train, x_test, y_test, cache, progress=progress)
    timings["model"] = time.perf_counter() - t

    records = []
    denoiser = None
    for attack in cfg.attacks:
        n = attack.n_images or len(x_test)
        x, y = x_test[:n], y_test[:n]
        computed: dict[str, float | None] = {}  # seconds each stage took when it was computed
        t = time.perf_counter()
        x_adv = get_adversarial(cfg, attack, model, model_info["key"], x, y, cache, stats=computed)
        t_attack = time.perf_counter() - t

        t = time.perf_counter()
        if denoiser is None or cfg.defence.dictionary_source == "perturbed":
            fit_on = x_train if cfg.defence.dictionary_source == "clean" else x_adv
            denoiser, den_key = get_denoiser(cfg, fit_on, cache, progress=progress, stats=computed)
        t_dict = time.perf_counter() - t

        t = time.perf_counter()
        x_den = get_denoised(denoiser, den_key, x_adv, cache, cfg.device, stats=computed)
        # the whole clean test set once per dictionary (denoising is per image), then the subset
        clean_stats: dict[str, float | None] = {}
        x_den_clean = get_denoised(denoiser, den_key, x_test, cache, cfg.device, stats=clean_stats)[:n]
        computed["denoise_clean_test_set"] = clean_stats.get("denoise")
        t_denoise = time.perf_counter() - t

        t = time.perf_counter()
        record, arrays = evaluate(cfg, attack, model, x, y, x_adv, x_den, x_den_clean)
        arrays_path = run_dir / "arrays" / f"{cfg.data.dataset}-{cfg.model.name}-{attack.label}.pt"
        atomic_torch_save(arrays_path, arrays)
        record["files"] = {"arrays": str(arrays_path.relative_to(run_dir))}
        record["seconds"] = {
            "attack": t_attack,
            "dictionary": t_dict,
            "denoise": t_denoise,
            "evaluate": time.perf_counter() - t,
        }
        # what the cached stages cost when they were computed (None: cached by an older ddl)
        record["computed_seconds"] = computed
        record["model_info"] = {k: v for k, v in model_info.items() if k != "key"}
        records.append(record)
        if progress:
            print(format_record(record))

    results = {
        "ddl_version": ddl.__version__,
        "config": cfg.to_dict(),
        "records": records,
        "seconds": timings,
        "machine": {"platform": platform.platform(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "device": cfg.device},
    }
    atomic_write_json(run_dir / "results.json", results)
    return results


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


def get_model(cfg, x_train, y_train, x_test, y_test, cache: Path, *, progress=True):
    """A zoo checkpoint when one matches (full data only), else a model trained once and cached."""
    from ddl.models import build_model
    from ddl.models.checkpoint import load_checkpoint, save_checkpoint
    from ddl.models.train import fit, predict

    m, d = cfg.model, cfg.data
    if m.use_zoo and d.source == "full":
        from ddl import zoo

        entry = zoo.find(m.name, d.dataset)
        if entry is not None:
            model = zoo.load(m.name, d.dataset, device=cfg.device)
            return model, {"source": "zoo", "key": entry.sha256, "path": str(entry.path),
                           "epochs": entry.epochs, "test_accuracy": entry.accuracy}
    key = config_key("model", m.name, m.epochs, m.batch_size, m.lr, m.seed,
                     d.dataset, d.source, d.n_train, ddl.__version__)
    path = cache / f"model-{m.name}-{key}.pt"
    if path.exists():
        model, meta = load_checkpoint(path, device=cfg.device)
        return model, {"source": "cache", "key": key, "path": str(path), **_short(meta)}
    model = build_model(m.name, tuple(x_train.shape[1:]), n_classes=int(y_train.max()) + 1)
    t = time.perf_counter()
    fit(model, x_train, y_train, epochs=m.epochs, batch_size=m.batch_size, lr=m.lr, seed=m.seed,
        device=cfg.device, checkpoint_path=path.with_suffix(".resume.pt"), progress=progress)
    model.eval()
    acc = metrics.accuracy(predict(model, x_test, device=cfg.device), y_test)
    meta = {"architecture": m.name, "dataset": d.dataset, "source": d.source,
            "input_shape": list(x_train.shape[1:]), "n_classes": int(y_train.max()) + 1,
            "epochs": m.epochs, "seconds": time.perf_counter() - t, "test_accuracy": acc}
    save_checkpoint(path, model, meta)
    path.with_suffix(".resume.pt").unlink(missing_ok=True)
    return model, {"source": "trained", "key": key, "path": str(path), **_short(meta)}


def _short(meta: dict) -> dict:
    return {k: meta.get(k) for k in ("epochs", "test_accuracy", "seconds")}


def _timed_path(path: Path) -> Path:
    return path.with_name(path.name + ".seconds.json")


def _read_seconds(path: Path) -> float | None:
    """Seconds the cached file ``path`` took to compute (None when no record was kept)."""
    try:
        return float(json.loads(_timed_path(path).read_text())["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _cached_stage(path: Path, stage: str, stats: dict | None, load, compute, save):
    """``load(path)`` if the cache file exists, else ``compute()`` then ``save(path, value)``.

    The seconds ``compute`` took are kept beside the file (``<file>.seconds.json``), so
    ``stats[stage]`` (when ``stats`` is given) reports them also for a value read from the cache
    (None if the file was cached without that record)."""
    if path.exists():
        if stats is not None:
            stats[stage] = _read_seconds(path)
        return load(path)
    t = time.perf_counter()
    value = compute()
    seconds = time.perf_counter() - t
    save(path, value)
    atomic_write_json(_timed_path(path), {"seconds": seconds})
    if stats is not None:
        stats[stage] = seconds
    return value


def get_denoiser(cfg: ExperimentConfig, x_fit: torch.Tensor, cache: Path, *, progress=True,
                 stats: dict | None = None):
    """(fitted DictionaryDenoiser, its key), learned once per (defence config, fitting data).

    ``stats``, when given, receives ``stats["dictionary"]``: the seconds the fit took when it
    was computed (see ``_cached_stage``)."""
    from ddl.defence import DictionaryDenoiser

    p = cfg.defence
    data_id = _tensor_fingerprint(x_fit)
    key = config_key("dictionary", _defence_params(p), data_id, ddl.__version__)
    den = _cached_stage(
        cache / f"dictionary-{key}.pt", "dictionary", stats,
        load=lambda path: DictionaryDenoiser.load(path).to(cfg.device),
        compute=lambda: DictionaryDenoiser(**_defence_params(p), device=cfg.device).fit(x_fit),
        save=lambda path, d: d.save(path))
    return den, key


def get_denoised(denoiser, den_key: str, x: torch.Tensor, cache: Path, device: str, *,
                 stats: dict | None = None) -> torch.Tensor:
    """``denoiser.transform(x)``, computed once per (dictionary, images) and cached.

    ``stats``, when given, receives ``stats["denoise"]`` (see ``_cached_stage``)."""
    def compute():
        with torch.no_grad():
            return denoiser.transform(x.to(device)).cpu()

    return _cached_stage(
        cache / f"denoised-{config_key(den_key, _tensor_fingerprint(x))}.pt", "denoise", stats,
        load=lambda path: safe_torch_load(path)["x"], compute=compute,
        save=lambda path, v: atomic_torch_save(path, {"x": v}))


def _defence_params(p) -> dict:
    return {"patch_size": p.patch_size, "n_components": p.n_components,
            "n_nonzero_coefs": p.n_nonzero_coefs, "step": p.step, "method": p.method,
            "n_epochs": p.n_epochs, "max_patches": p.max_patches, "remove_mean": p.remove_mean,
            "random_state": p.random_state}


def get_adversarial(cfg, attack: AttackConfig, model, model_key: str, x, y, cache: Path, *,
                    stats: dict | None = None):
    """Attacked images, computed once per (model, attack, parameters, data subset) and cached.

    ``stats``, when given, receives ``stats["attack"]`` (see ``_cached_stage``)."""
    key = config_key("adv", model_key, attack.name, attack.params, _tensor_fingerprint(x),
                     ddl.__version__)
    return _cached_stage(
        cache / f"adv-{attack.name}-{key}.pt", "attack", stats,
        load=lambda path: safe_torch_load(path)["x_adv"],
        compute=lambda: run_attack(attack, model, x.to(cfg.device), y.to(cfg.device)).cpu(),
        save=lambda path, v: atomic_torch_save(path, {"x_adv": v, "attack": attack.name,
                                                      "params": dict(attack.params)}))


def run_attack(attack: AttackConfig, model, x, y):
    """Call ``ddl.attacks.ATTACKS[name]``; JSMA takes a target (random wrong class from ``y``)."""
    from ddl.attacks import ATTACKS

    fn = ATTACKS[attack.name]
    if attack.name == "jsma":
        return fn(model, x, None, y=y, **attack.params)
    return fn(model, x, y, **attack.params)


def _tensor_fingerprint(x: torch.Tensor) -> str:
    """Cheap content hash of an image tensor (shape, sums, a strided sample of values)."""
    flat = x.reshape(-1)
    sample = flat[:: max(1, flat.numel() // 4096)]
    return config_key(list(x.shape), str(x.dtype), float(flat.double().sum()),
                      [round(v, 6) for v in sample.double().tolist()])


def evaluate(cfg, attack: AttackConfig, model, x, y, x_adv, x_den, x_den_clean) -> tuple[dict, dict]:
    """One results record (accuracies, confidences, PSNR/SSIM, the high-confidence subset) and
    its per-image arrays (PSNR, SSIM, predictions, the first 8 images of each kind in float16)."""
    from ddl.models.train import predict

    logits = {name: predict(model, v, device=cfg.device).cpu()
              for name, v in (("clean", x), ("perturbed", x_adv), ("denoised", x_den),
                              ("denoised_clean", x_den_clean))}
    acc = {name: metrics.accuracy(lg, y) for name, lg in logits.items()}
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
    arrays = {**per_image, "y": y.to(label_dtype),
              **{f"pred_{k}": lg.argmax(1).to(label_dtype) for k, lg in logits.items()},
              "high_confidence_mask": mask,
              **{f"examples_{k}": v[:8].to(torch.float16) for k, v in (("clean", x), ("perturbed", x_adv),
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
        "confidence": conf,
        # PSNR of an image identical to its clean version is +inf (e.g. JSMA finds nothing to
        # change); the mean is over the other images and the identical ones are counted.
        "psnr": {**{k: _finite_mean(per_image[f"psnr_{k}"]) for k in ("perturbed", "denoised", "denoised_clean")},
                 "n_identical": {k: int(torch.isinf(per_image[f"psnr_{k}"]).sum())
                                 for k in ("perturbed", "denoised", "denoised_clean")}},
        "ssim": {k: float(per_image[f"ssim_{k}"].mean()) for k in ("perturbed", "denoised", "denoised_clean")},
    }
    return record, arrays


def _finite_mean(v: torch.Tensor) -> float | None:
    finite = v[torch.isfinite(v)]
    return float(finite.double().mean()) if len(finite) else None


def _pixel_summary(x: torch.Tensor, n: int = 20_000) -> torch.Tensor:
    """A strided sample of ``n`` pixel values (float16): enough for the QQ and density figures
    without keeping the images."""
    flat = x.reshape(-1)
    return flat[:: max(1, flat.numel() // n)][:n].to(torch.float16).clone()


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
