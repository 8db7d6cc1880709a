"""results/robust-training/: adversarial training with and without the dictionary (issue 21).

Reads the ``ddl robustness`` records of the arms on the same test images (each a
``robustness.json``), and writes ``results/robust-training/README.md`` (table with 95 % Wilson
intervals, paired McNemar tests of adversarial-ddl − adversarial and of the test-time-only arm,
training curves and seconds per epoch from zoo_logs/), ``summary.json`` and ``accuracy_vs_eps.png``
(worst-case accuracy vs ε with intervals, one line per arm: the standard and denoised zoo models
behind the defence are arms too, given their records on the same images).

    R=results/robust-training
    .venv/bin/python tools/robust_training_table.py --dataset mnist --model convnet \\
        --arm "adversarial=$R/mnist-convnet-adversarial.json+$R/mnist-convnet-adversarial-autoattack.json" \\
        --arm "adversarial + dictionary at test=$R/mnist-convnet-adversarial-tuned.json+$R/mnist-convnet-adversarial-tuned-default.json" \\
        --arm "adversarial-ddl=$R/mnist-convnet-adversarial-ddl.json+$R/mnist-convnet-adversarial-ddl-default.json" \\
        --arm "standard + dictionary=results/robustness/mnist-convnet.json+results/robustness-default/mnist-convnet.json" \\
        --arm "denoised + dictionary=results/denoised-training/robustness/mnist-convnet.json" \\
        --reading results/robust-training/reading.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from ddl._stats import mcnemar, wilson_interval  # noqa: E402
from ddl.experiments.robustness_report import eps_label  # noqa: E402


def _worst(record: dict, eps: str) -> list[bool]:
    return [bool(v) for v in record["worst_survival"][eps]]


def _clean(record: dict) -> list[bool]:
    return [bool(v) for v in record["clean_correct"]["defended"]]


def _union(records: list[dict], names: list[str]) -> dict:
    """One arm evaluated by several runs on the same images (``FILE1+FILE2``): an image is robust
    at ε only if it survived every run that attacked it at ε (the worst case over all of them);
    everything else is the first record's. Each extra run's attacks are listed in ``params``."""
    first = dict(records[0])
    for name, rec in zip(names[1:], records[1:]):
        if rec["image_indices"] != first["image_indices"] or rec["clean_correct"] != first["clean_correct"]:
            raise SystemExit(f"robust_training_table: {name} is not on the same images (or model) as {names[0]}")
    worst = {e: [all(bool(r["worst_survival"][e][i]) for r in records if e in r["worst_survival"])
                 for i in range(first["n_images"])] for e in first["worst_survival"]}
    flags = [f for r in records for f in r.get("flags", [])]
    params = {**first["params"], "also": [{"file": n, "attacks": r["params"]["attacks"],
                                          "eps": sorted(r["worst_survival"], key=float)} for n, r in
                                         zip(names[1:], records[1:])]}
    return {**first, "worst_survival": worst, "flags": flags, "params": params}


def _where(file: str, out: str) -> str:
    """``file`` as a reader of ``out``'s README finds it: relative to ``out``, else to the repository."""
    p = Path(file).resolve()
    for base in (Path(out).resolve(), REPO):
        try:
            return str(p.relative_to(base))
        except ValueError:
            pass
    return str(p)


def _pct(k: int, n: int) -> str:
    lo, hi = wilson_interval(k, n)
    return f"{100 * k / n:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}]"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--arm", action="append", required=True, metavar="NAME=FILE[+FILE...]",
                   help="an arm's name and its robustness.json, or several joined by + (runs of the same arm on the same "
                        "images: the worst case over all of them); the first arm is the reference of the paired tests")
    p.add_argument("--out", default=str(REPO / "results" / "robust-training"))
    p.add_argument("--zoo-logs", default=str(REPO / "zoo_logs"))
    p.add_argument("--reading", default=None, help="a Markdown file appended as the README's reading of the table")
    args = p.parse_args(argv)

    arms = {}
    for spec in args.arm:
        name, _, path = spec.partition("=")
        paths = path.split("+")
        records = [json.loads(Path(q).read_text()) for q in paths]
        arms[name] = records[0] if len(records) == 1 else _union(records, paths)
    names = list(arms)
    first = arms[names[0]]
    n = first["n_images"]
    for name, rec in arms.items():
        if rec["n_images"] != n or rec["image_indices"] != first["image_indices"]:
            raise SystemExit(f"robust_training_table: arm {name!r} is not on the same images as {names[0]!r}")
    eps_keys = sorted(set.intersection(*(set(r["worst_survival"]) for r in arms.values())), key=float)

    rows, summary = [], {"dataset": args.dataset, "model": args.model, "n_images": n, "arms": {}, "paired": []}
    for name, rec in arms.items():
        clean = _clean(rec)
        entry = {"clean": {"k": sum(clean), "ci": wilson_interval(sum(clean), n)},
                 "defence": rec["defence"], "model_info": rec["model_info"], "flags": rec.get("flags", []),
                 "attacks": rec["params"]["attacks"], "budgets": {k: rec["params"].get(k) for k in (
                     "pgd_steps", "apgd_iter", "square_queries", "cascade", "eot_samples")},
                 "worst_case": {}, "strongest_attack": rec.get("strongest_attack"),
                 "machine": rec.get("machine"), "compute_seconds": rec.get("compute_seconds")}
        cells = [_pct(sum(clean), n)]
        for e in eps_keys:
            w = _worst(rec, e)
            entry["worst_case"][e] = {"k": sum(w), "ci": wilson_interval(sum(w), n)}
            cells.append(_pct(sum(w), n))
        flags = ", ".join(f["code"] for f in rec.get("flags", [])) or "none"
        defence = (rec["defence"] or {}).get("name") if isinstance(rec["defence"], dict) else rec["defence"]
        rows.append(f"| {name} | {defence or 'none'} | "
                    + " | ".join(cells) + f" | {flags} |")
        summary["arms"][name] = entry

    paired_lines = []
    for name in names[1:]:
        for e in ["clean"] + eps_keys:
            a = _clean(arms[name]) if e == "clean" else _worst(arms[name], e)
            b = _clean(first) if e == "clean" else _worst(first, e)
            t = mcnemar(a, b)
            summary["paired"].append({"a": name, "b": names[0], "eps": e, **t})
            lo, hi = t["difference_ci"]
            paired_lines.append(f"| {name} − {names[0]} | {e if e == 'clean' else eps_label(float(e), args.dataset)} | {100 * t['difference']:+.1f} points "
                                f"[{100 * lo:+.1f}, {100 * hi:+.1f}] | {t['b10']} / {t['b01']} | "
                                f"{t['p_value']:.3g} |")

    curves = []
    for name, rec in arms.items():
        variant = rec["model_info"].get("variant")
        log = Path(args.zoo_logs) / f"{args.model}_{args.dataset}_{variant}.json"
        if variant and log.is_file() and name == variant:
            h = json.loads(log.read_text())
            hist = h["history"]
            summary["arms"][name]["training"] = {"settings": h.get("adversarial"), "history": hist,
                                                 "seconds": h.get("finetune_seconds")}
            for i in range(len(hist["loss"])):
                curves.append(f"| {variant} | {i + 1} | {hist['eps'][i]:.3g} | {100 * hist['accuracy'][i]:.2f} | "
                              f"{100 * hist['robust_accuracy'][i]:.2f} | {100 * hist['val_accuracy'][i]:.2f} | "
                              f"{hist['seconds'][i]:.0f} |")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    eps_head = " | ".join(f"worst case ε {eps_label(float(e), args.dataset)}" for e in eps_keys)
    first_rec = arms[names[0]]
    text = [
        f"# Adversarial training with and without the dictionary ({args.dataset} {args.model})",
        "",
        f"{n} test images (the first {n} of the test set), the same for every arm; accuracy % with its 95 % "
        "Wilson interval over images; an image counts as robust only if **every** attack of the suite failed "
        "on it (worst case per image; a clean mistake counts as broken).",
        "",
        f"Suite: {' '.join(first_rec['params']['attacks'])}; budgets "
        f"PGD {first_rec['params']['pgd_steps']} steps, APGD {first_rec['params']['apgd_iter']} iterations, "
        f"Square {first_rec['params']['square_queries']} queries; cascade {first_rec['params']['cascade']}. "
        "Every arm is attacked through what it runs at test time (defence none: the bare model).",
        *[f"{name}: also attacked by `{' '.join(a['attacks'])}` (`{_where(a['file'], args.out)}`, ε "
          f"{', '.join(eps_label(float(e), args.dataset) for e in a['eps'])}, its budgets in the file); its worst case is over every run."
          for name, rec in arms.items() for a in rec["params"].get("also", [])],
        "",
        f"| arm | defence at test time | clean | {eps_head} | flags |",
        "|---|---|---|" + "---|" * len(eps_keys) + "---|",
        *rows,
        "",
        f"## Paired tests against {names[0]} (exact McNemar on the same images; difference A − B with "
        f"Newcombe's 95 % interval; b10: images only A gets right, b01: only B)",
        "",
        "| A − B | ε | difference | b10 / b01 | p |",
        "|---|---|---|---|---|",
        *paired_lines,
    ]
    if curves:
        text += ["", "## Training curves (per epoch: ε of the epoch, clean and robust training accuracy of the "
                 "epoch's batches, clean test accuracy, seconds on one CPU thread)", "",
                 "| variant | epoch | ε | clean train % | robust train % | clean test % | seconds |",
                 "|---|---|---|---|---|---|---|", *curves]
    if args.reading:
        text += ["", Path(args.reading).read_text().rstrip()]
    (out / "README.md").write_text("\n".join(text) + "\n")
    _figure(arms, eps_keys, n, out / "accuracy_vs_eps.png")
    print("\n".join(text))
    return 0


def _figure(arms: dict, eps_keys: list[str], n: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, rec in arms.items():
        xs, ys, lo, hi = [], [], [], []
        for e in eps_keys:
            k = sum(_worst(rec, e))
            a, b = wilson_interval(k, n)
            xs.append(float(e)), ys.append(100 * k / n), lo.append(100 * (k / n - a)), hi.append(100 * (b - k / n))
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=name)
    ax.set_xlabel("ε (L∞)")
    ax.set_ylabel("worst-case accuracy % (95 % interval)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
