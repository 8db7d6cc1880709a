"""Write results/denoised-training/README.md: the zoo's denoised variants behind the tuned defence
beside the standard models behind the same defence and beside the paper, per cell, with the
targets of the issue "A defence that earns its numbers" checked, the adaptive worst case of both,
and the training times.

Usage: .venv/bin/python tools/denoised_training_table.py [results/denoised-training]

Reads: <folder>/results.json (``ddl reproduce --preset denoised-training``), results/tuned/results.json
(the standard models, the paper's protocol, the tuned defence), results/robustness/*.json (the
standard models' adaptive suite, 1,000 images), <folder>/robustness/*.json (the denoised variants'
1,000-image records, tools/robustness_zoo.sh with VARIANT=denoised; else results.json's 50 images), the zoo index (training
times, the standard models' clean accuracy) and the paper's tables.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = ("mlp", "convnet", "autoencoder", "resnet", "hrnn")
TITLES = {"mnist": "MNIST", "cifar10": "CIFAR-10"}


def _pct(v, nd=2) -> str:
    return "–" if v is None else f"{100 * v:.{nd}f}"


def _cells(results: dict) -> dict:
    return {(r["dataset"], r["model"], r["attack"]): r for r in results["records"]}


def main(argv=None) -> int:
    sys.path.insert(0, str(REPO / "src"))
    import ddl.zoo
    from ddl.experiments.report import load_paper_tables

    folder = Path((argv or sys.argv[1:] or [REPO / "results" / "denoised-training"])[0])
    new = json.loads((folder / "results.json").read_text())
    old = json.loads((REPO / "results" / "tuned" / "results.json").read_text())
    paper = {(r["dataset"], r["model"], r["attack"]): r["accuracy_percent"] for r in load_paper_tables()["records"]}
    cn, co = _cells(new), _cells(old)
    out = ["# Classifiers trained behind the defence (`denoised-training`)", "",
           "Written by `tools/denoised_training_table.py` from `results.json` (`ddl reproduce --preset "
           "denoised-training`; its report is `report.md`). Every classifier is the zoo's `denoised` "
           "variant: the standard zoo checkpoint fine-tuned on the tuned defence's reconstructions of "
           "the augmented training images (`tools/train_zoo.py --variant denoised`: 2 epochs on MNIST, "
           "3 on CIFAR-10, half the standard learning rate, cosine decay; the defence is the zoo's "
           "shipped dictionary, `ddl.zoo.load_defence(dataset)`). The attacks follow the paper: computed "
           "on the classifier, then the images are denoised (oblivious). *standard* columns: "
           "`results/tuned/` (standard zoo models behind the tuned defence: same parameters, its "
           "dictionary fitted with the torch OMP kernel, the zoo's with the C kernel, see "
           "`ddl.sparse.omp.kernel_name`). Accuracies in %, full test sets (JSMA: the first 1,000 "
           "MNIST / 500 CIFAR-10 images). *defended clean* is the classifier on the denoised clean "
           "test images: the clean accuracy of the defended classifier.", ""]
    for attack in ("fgsm", "jsma"):
        out += [f"## {attack.upper()}", "",
                "| data set | model | paper clean | paper denoised | standard: clean / defended clean / perturbed / denoised "
                "| denoised variant: clean / defended clean / perturbed / denoised |",
                "|---|---|---|---|---|---|"]
        for ds in ("mnist", "cifar10"):
            for m in MODELS:
                key = (ds, m, attack)
                if key not in cn:
                    continue
                p, a, b = paper.get(key, {}), co.get(key, {}).get("accuracy", {}), cn[key]["accuracy"]
                fmt = lambda acc: " / ".join(_pct(acc.get(k)) for k in ("clean", "denoised_clean", "perturbed", "denoised"))
                out.append(f"| {TITLES[ds]} | {m} | {p.get('clean', '–')} | {p.get('denoised', '–')} | "
                           f"{fmt(a) if a else '–'} | {fmt(b)} |")
        out.append("")
    # targets
    out += ["## Targets", "",
            "CIFAR-10: the defended clean accuracy of each denoised variant ≥ the paper's clean accuracy, "
            "and its FGSM 8/255 denoised accuracy ≥ the paper's denoised accuracy. MNIST: defended clean "
            "within 0.3 points of the standard model's clean accuracy, and FGSM 0.1 denoised ≥ the standard "
            "model's behind the tuned defence (`results/tuned/`).", "",
            "| data set | model | quantity | target | measured | met |", "|---|---|---|---|---|---|"]
    met_all = []
    for ds in ("cifar10", "mnist"):
        for m in MODELS:
            key = (ds, m, "fgsm")
            if key not in cn:
                continue
            b = cn[key]["accuracy"]
            if ds == "cifar10":
                checks = [("defended clean", paper[key]["clean"], 100 * b["denoised_clean"]),
                          ("FGSM 8/255 denoised", paper[key]["denoised"], 100 * b["denoised"])]
            else:
                std = ddl.zoo.find(m, ds)
                a = co.get(key, {}).get("accuracy", {})
                checks = [("defended clean", round(100 * std.accuracy - 0.3, 2), 100 * b["denoised_clean"]),
                          ("FGSM 0.1 denoised", round(100 * a["denoised"], 2) if a else None, 100 * b["denoised"])]
            for what, target, got in checks:
                ok = target is not None and got >= target - 1e-9
                met_all.append(ok)
                out.append(f"| {TITLES[ds]} | {m} | {what} | ≥ {target} | {got:.2f} | {'yes' if ok else '**no**'} |")
    out += ["", f"{sum(met_all)} of {len(met_all)} targets met.", ""]
    # adaptive: the 1,000-image records of results/denoised-training/robustness/ where they exist
    # (tools/robustness_zoo.sh with VARIANT=denoised), else the run's own 50-image evaluation
    rob = {(r["dataset"], r["model"]): r for r in new.get("robustness", [])}
    for path in sorted((folder / "robustness").glob("*.json")):
        r = json.loads(path.read_text())
        rob[(r["dataset"], r["model"])] = r
    if rob:
        from ddl._stats import mcnemar, wilson_interval
        from ddl.experiments.robustness_report import eps_label

        out += ["## Adaptive attacks: worst case, standard vs denoised variant", "",
                "The suite of `results/robustness/` (the first N test images; PGD 20 steps oblivious, BPDA "
                "and soft-surrogate; APGD-CE 20 iterations through the soft surrogate; Square 200 queries; "
                "cascade). *worst*: an image counts only if every attack failed on it, with its 95 % Wilson "
                "interval. Both models on the same first N images (the standard model's 1,000-image record "
                "cut to N where the variant's has fewer: every image's outcome depends only on its own "
                "randomness); *variant − standard*: paired difference of the worst case in points, 95 % "
                "Newcombe interval, exact McNemar p. Accuracy %.", "",
                "| data set | model | ε | N | standard: defended clean / oblivious / **worst** | "
                "denoised variant: defended clean / oblivious / **worst** | variant − standard (worst) |",
                "|---|---|---|---|---|---|---|"]

        def worst(rec, k, n):
            w = [bool(v) for v in rec["worst_survival"][k][:n]]
            lo, hi = wilson_interval(sum(w), n)
            return w, f"**{100 * sum(w) / n:.1f}** [{100 * lo:.1f}, {100 * hi:.1f}]"

        for ds in ("mnist", "cifar10"):
            for m in MODELS:
                r = rob.get((ds, m))
                if r is None:
                    continue
                path = REPO / "results" / "robustness" / f"{ds}-{m}.json"
                s = json.loads(path.read_text()) if path.is_file() else None
                for k in r["worst_case"]:
                    eps = float(k)
                    lab = eps_label(eps, ds)
                    n = r["n_images"] if s is None else min(r["n_images"], s["n_images"])
                    wv, right_w = worst(r, k, n)
                    right = (f"{_pct(r['clean_accuracy']['defended'], 1)} / "
                             f"{_pct(r['attacks']['pgd:oblivious'].get(k), 1)} / {right_w}")
                    left, diff = "–", "–"
                    if s is not None and k in s["worst_survival"]:
                        ws, left_w = worst(s, k, n)
                        clean_s = sum(bool(v) for v in s["clean_correct"]["defended"][:n]) / n
                        obl_s = sum(bool(v) for v in s["survival"]["pgd:oblivious"][k][:n]) / n
                        left = f"{_pct(clean_s, 1)} / {_pct(obl_s, 1)} / {left_w}"
                        t = mcnemar(wv, ws)
                        diff = (f"{100 * t['difference']:+.1f} [{100 * t['difference_ci'][0]:+.1f}, "
                                f"{100 * t['difference_ci'][1]:+.1f}], p = {t['p_value']:.2g}")
                    out.append(f"| {TITLES[ds]} | {m} | {lab} | {n} | {left} | {right} | {diff} |")
        out.append("")
    # training
    out += ["## Training (fine-tuning) of the denoised variants", "",
            "One thread each on a shared 2-core machine (2-5 jobs ran at once, so seconds are upper bounds).", "",
            "| data set | model | standard clean | variant clean | variant defended clean | fine-tune epochs | seconds |",
            "|---|---|---|---|---|---|---|"]
    for e in ddl.zoo.entries():
        if e.variant != "denoised":
            continue
        std = ddl.zoo.find(e.model, e.dataset)
        out.append(f"| {TITLES[e.dataset]} | {e.model} | {_pct(std.accuracy)} | {_pct(e.accuracy)} | "
                   f"{_pct(e.extra.get('denoised_clean_accuracy'))} | {e.extra.get('finetune_epochs')} | "
                   f"{e.extra.get('finetune_seconds')} |")
    (folder / "README.md").write_text("\n".join(out) + "\n")
    print(f"wrote {folder / 'README.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
