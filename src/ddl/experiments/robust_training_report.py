"""The "adversarial training with and without the dictionary" section, from saved robustness records.

An *arm* is one model behind what it runs at test time (``adversarial`` with no defence, the same
model behind the dictionary, ``adversarial-ddl`` behind the dictionary it was trained through, the
standard and denoised models behind it), evaluated by ``ddl robustness`` on the same test images.
An arm may have several runs on those images (the committed suite, then AutoAttack or the whole
default suite at its budgets): :func:`union` takes the worst case over all of them, image by image.

:func:`summarise` turns the arms into ``summary.json`` (counts with 95 % Wilson intervals over
images, exact McNemar tests of every arm against the first on the same images, the training curve
of each adversarially trained arm from its zoo log); :func:`section_blocks` renders a summary as
report blocks: ``tools/robust_training_table.py`` writes them as ``results/robust-training/README.md``
and ``ddl report RUN --robust-training results/robust-training`` embeds them as a section.
Reads only saved records; never re-runs an attack.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ddl._stats import mcnemar, wilson_interval
from ddl.constants import DATASET_TITLES, DATASETS
from ddl.experiments._blocks import Block
from ddl.experiments.robustness_report import eps_label

#: the section's title, in ``ddl report`` and as the README's heading
TITLE = "Adversarial training with and without the dictionary"

_BUDGETS = ("pgd_steps", "apgd_iter", "square_queries", "cascade", "eot_samples")


def _worst(record: dict, eps: str) -> list[bool]:
    return [bool(v) for v in record["worst_survival"][eps]]


def _clean(record: dict) -> list[bool]:
    return [bool(v) for v in record["clean_correct"]["defended"]]


def union(records: list[dict], names: list[str]) -> dict:
    """One arm evaluated by several runs on the same images: an image is robust at ε only if it
    survived every run that attacked it at ε (the worst case over all of them); everything else is
    the first record's. Each later run's file, attacks and ε are listed in ``params["also"]``, the
    flags of every run are kept once each, and ``compute_seconds`` is the sum over the runs (None
    when a run did not record it). ``names`` (one per record, e.g. the files) are for the error and
    for ``also``."""
    first = dict(records[0])
    for name, rec in zip(names[1:], records[1:]):
        if rec["image_indices"] != first["image_indices"] or rec["clean_correct"] != first["clean_correct"]:
            i = next((i for i, (a, b) in enumerate(zip(rec["clean_correct"]["defended"],
                                                       first["clean_correct"]["defended"])) if a != b), None)
            got = (f"images {rec['image_indices'][:1]}… ({rec['n_images']})" if i is None
                   else f"clean predictions differ first at image {i}")
            raise ValueError(f"robust_training_report.union: records must be runs on the same images and model; "
                             f"{name} is not on those of {names[0]} ({got})")
    worst = {e: [all(bool(r["worst_survival"][e][i]) for r in records if e in r["worst_survival"])
                 for i in range(first["n_images"])] for e in first["worst_survival"]}
    flags, seen = [], set()
    for f in (f for r in records for f in r.get("flags", [])):
        if f["code"] not in seen:
            seen.add(f["code"])
            flags.append(f)
    secs = [r.get("compute_seconds") for r in records]
    params = {**first["params"], "also": [{"file": n, "attacks": r["params"]["attacks"],
                                          "eps": sorted(r["worst_survival"], key=float)} for n, r in
                                         zip(names[1:], records[1:])]}
    return {**first, "worst_survival": worst, "flags": flags, "params": params,
            "compute_seconds": None if None in secs else sum(secs)}


def summarise(arms: dict[str, dict], *, dataset: str, model: str, zoo_logs: str | Path | None = None) -> dict:
    """The summary of ``arms`` (name → robustness record, or a :func:`union`); the first arm is the
    reference of the paired tests. ε are those every arm was evaluated at. ``zoo_logs``: the folder
    of the zoo's training logs (``<model>_<dataset>_<variant>.json``); an arm named after its
    variant gets that log's adversarial settings, per-epoch history and seconds."""
    names = list(arms)
    if not names:
        raise ValueError("robust_training_report.summarise: arms must hold at least one arm; got none")
    first = arms[names[0]]
    n = first["n_images"]
    for name, rec in arms.items():
        if rec["n_images"] != n or rec["image_indices"] != first["image_indices"]:
            raise ValueError(f"robust_training_report.summarise: every arm must be on the images of {names[0]!r} "
                             f"({n} images from {first['image_indices'][0]}); arm {name!r} has {rec['n_images']} "
                             f"from {rec['image_indices'][0]}")
    eps_keys = sorted(set.intersection(*(set(r["worst_survival"]) for r in arms.values())), key=float)
    p = first["params"]
    summary: dict[str, Any] = {
        "dataset": dataset, "model": model, "n_images": n, "eps": eps_keys,
        "suite": {"attacks": p["attacks"], **{k: p.get(k) for k in _BUDGETS}},
        "arms": {}, "paired": []}
    for name, rec in arms.items():
        clean = _clean(rec)
        defence = rec["defence"].get("name") if isinstance(rec["defence"], dict) else rec["defence"]
        entry = {"clean": {"k": sum(clean), "ci": wilson_interval(sum(clean), n)},
                 "defence": rec["defence"], "defence_name": defence or "none", "model_info": rec["model_info"],
                 "flags": rec.get("flags", []), "attacks": rec["params"]["attacks"],
                 "budgets": {k: rec["params"].get(k) for k in _BUDGETS},
                 "also": rec["params"].get("also", []),
                 "worst_case": {}, "strongest_attack": rec.get("strongest_attack"),
                 "machine": rec.get("machine"), "compute_seconds": rec.get("compute_seconds")}
        for e in eps_keys:
            w = _worst(rec, e)
            entry["worst_case"][e] = {"k": sum(w), "ci": wilson_interval(sum(w), n)}
        variant = rec["model_info"].get("variant")
        log = Path(zoo_logs) / f"{model}_{dataset}_{variant}.json" if zoo_logs and variant else None
        if log is not None and name == variant and log.is_file():
            h = json.loads(log.read_text())
            entry["training"] = {"settings": h.get("adversarial"), "history": h["history"],
                                 "seconds": h.get("finetune_seconds")}
        summary["arms"][name] = entry
    for name in names[1:]:
        for e in ["clean"] + eps_keys:
            a = _clean(arms[name]) if e == "clean" else _worst(arms[name], e)
            b = _clean(first) if e == "clean" else _worst(first, e)
            summary["paired"].append({"a": name, "b": names[0], "eps": e, **mcnemar(a, b)})
    return summary


def _pct(cell: dict, n: int) -> str:
    """A summary cell (``k`` of ``n`` images and its Wilson ``ci``) as "50.0 % [40.1, 59.9]"."""
    lo, hi = cell["ci"]
    return f"{100 * cell['k'] / n:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}]"


def section_blocks(summary: dict, *, heading: str = "h3", title: str | None = None) -> list:
    """``summary`` (:func:`summarise`) as report blocks: a heading at level ``heading`` (``title``,
    by default the data set and model), what was measured, the arms' table, the paired tests against the first arm and the
    training curves. The other runs' files are named as they were given to :func:`union`."""
    ds, n, keys = summary["dataset"], summary["n_images"], summary["eps"]
    sub = {"h1": "h2", "h2": "h3", "h3": "h4"}[heading]
    s = summary["suite"]
    arms = summary["arms"]
    reference = next(iter(arms))
    blocks = [
        Block(heading, title or f"{DATASET_TITLES.get(ds, ds)} {summary['model']}"),
        Block("p", f"{n} test images (the first {n} of the test set), the same for every arm; accuracy % with its "
                   "95 % Wilson interval over images; an image counts as robust only if **every** attack of the "
                   "suite failed on it (worst case per image; a clean mistake counts as broken)."),
        Block("p", f"Suite: {' '.join(s['attacks'])}; budgets PGD {s['pgd_steps']} steps, APGD {s['apgd_iter']} "
                   f"iterations, Square {s['square_queries']} queries"
                   f"{'; cascade (each attack runs on the images the earlier ones left)' if s['cascade'] else ''}. "
                   "Every arm is attacked "
                   "through what it runs at test time (defence none: the bare model)."),
    ]
    for name, arm in arms.items():
        for a in arm.get("also", []):
            blocks.append(Block("p", f"{name}: also attacked by `{' '.join(a['attacks'])}` "
                                     f"(`{a['file']}`, ε "
                                     f"{', '.join(eps_label(float(e), ds) for e in a['eps'])}, its budgets in the "
                                     "file); its worst case is over every run."))
    rows = [["arm", "defence at test time", "clean", *(f"worst case ε {eps_label(float(e), ds)}" for e in keys),
             "flags"]]
    for name, arm in arms.items():
        rows.append([name, arm["defence_name"], _pct(arm["clean"], n),
                     *(_pct(arm["worst_case"][e], n) for e in keys),
                     ", ".join(f["code"] for f in arm["flags"]) or "none"])
    blocks.append(Block("table", rows=rows))
    blocks.append(Block(sub, f"Paired tests against {reference} (exact McNemar on the same images; difference "
                             f"A − B with Newcombe's 95 % interval; b10: images only A gets right, b01: only B)"))
    paired = [["A − B", "ε", "difference", "b10 / b01", "p"]]
    for t in summary["paired"]:
        lo, hi = t["difference_ci"]
        paired.append([f"{t['a']} − {t['b']}", t["eps"] if t["eps"] == "clean" else eps_label(float(t["eps"]), ds),
                       f"{100 * t['difference']:+.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}]",
                       f"{t['b10']} / {t['b01']}", f"{t['p_value']:.3g}"])
    blocks.append(Block("table", rows=paired))
    hists = {name: h for name, arm in arms.items() if (h := (arm.get("training") or {}).get("history"))}
    cpu = any(v is not None for h in hists.values() for v in h.get("cpu_seconds", []))
    curves = [["variant", "epoch", "ε", "clean train %", "robust train %", "clean test %", "seconds",
               *(["cpu seconds"] if cpu else [])]]
    for name, hist in hists.items():
        cpus = hist.get("cpu_seconds") or [None] * len(hist["loss"])
        for i, c in enumerate(cpus):
            curves.append([name, str(i + 1), eps_label(hist["eps"][i], ds), f"{100 * hist['accuracy'][i]:.2f}",
                           f"{100 * hist['robust_accuracy'][i]:.2f}", f"{100 * hist['val_accuracy'][i]:.2f}",
                           f"{hist['seconds'][i]:.0f}", *([("—" if c is None else f"{c:.0f}")] if cpu else [])])
    if len(curves) > 1:
        blocks += [Block(sub, "Training curves (per epoch: ε of the epoch, clean and robust training accuracy of "
                              "the epoch's batches, clean test accuracy, wall seconds"
                              + (" and CPU seconds (all threads; — : not recorded)" if cpu else "") + ")"),
                   Block("table", rows=curves)]
    return blocks


#: what :func:`section_blocks` reads of a summary and of each of its arms
_KEYS = {"dataset", "model", "n_images", "eps", "suite", "arms", "paired"}
_ARM_KEYS = {"clean", "defence_name", "worst_case", "flags"}      # clean, worst_case[ε]: {"k", "ci"}


def load_summaries(folder: str | Path) -> list[dict]:
    """Every ``summary.json`` under ``folder`` (itself and its subfolders), in ddl's data-set
    order, then path order. Raises ``FileNotFoundError`` when there is none and ``ValueError`` (one
    line, naming the file) for one that cannot be read or lacks what the section needs (e.g.
    written by an older tools/robust_training_table.py)."""
    folder = Path(folder)
    found = []
    for path in sorted(folder.rglob("summary.json")):
        try:
            blob = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path} cannot be read as JSON ({type(exc).__name__}: {exc})") from None
        missing = sorted(_KEYS - set(blob)) if isinstance(blob, dict) else sorted(_KEYS)
        if not missing:
            missing = sorted({f"arms.{a}.{k}" for a, arm in blob["arms"].items() for k in _ARM_KEYS - set(arm)})
        if missing:
            raise ValueError(f"{path} is not a summary of tools/robust_training_table.py as this ddl writes it "
                             f"(missing {', '.join(missing)}); rerun tools/robust_training_tables.sh")
        found.append(blob)
    if not found:
        raise FileNotFoundError(f"no summary.json of tools/robust_training_table.py in {folder}")
    order = {d: i for i, d in enumerate(DATASETS)}
    return sorted(found, key=lambda b: order.get(b["dataset"], len(order)))


def figure(summary: dict, path: str | Path) -> None:
    """Worst-case accuracy against ε with 95 % intervals, one line per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, keys = summary["n_images"], summary["eps"]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, arm in summary["arms"].items():
        xs, ys, lo, hi = [], [], [], []
        for e in keys:
            k, (a, b) = arm["worst_case"][e]["k"], arm["worst_case"][e]["ci"]
            xs.append(float(e)), ys.append(100 * k / n), lo.append(100 * (k / n - a)), hi.append(100 * (b - k / n))
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=name)
    ax.set_xlabel("ε (L∞)")
    ax.set_ylabel("worst-case accuracy % (95 % interval)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
