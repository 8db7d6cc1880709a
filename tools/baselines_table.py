"""Write results/baselines/README.md: the table of the baseline purifiers beside the tuned
dictionary defence, read from the robustness.json records tools/baselines.sh copied there.

Usage: .venv/bin/python tools/baselines_table.py [results/baselines]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from ddl._stats import wilson_interval  # noqa: E402
from ddl.experiments.robustness_report import eps_label  # noqa: E402
ORDER = ["none", "tuned", "bits", "median", "gauss", "jpeg", "tv", "wavelet"]


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.0f}"


def _pct1(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def _describe(d: dict | None) -> str:
    if not d:
        return "none"
    if d["name"] in ("tuned", "paper"):
        return (f"{d['name']} (dictionary {d['patch_size']}×{d['patch_size']}, {d['n_components']} atoms, "
                f"{d['n_nonzero_coefs']} per patch)")
    params = ", ".join(f"{k}={v}" for k, v in d.items() if k not in ("name", "purifier"))
    return f"`{d['name']}` ({d['purifier']}: {params})"


def fgsm_table(fgsm: dict, ds: str) -> list[str]:
    """The paper's protocol for every defence: FGSM on the bare model, then the defence
    (tools/baselines_fgsm.py, first N test images)."""
    rows = [r for r in fgsm["rows"] if r["dataset"] == ds]
    if not rows:
        return []
    keys = list(rows[0]["fgsm"]["defended"])
    labels = [eps_label(float(k), ds) for k in keys]
    head = (["defence", "clean (bare → defended)"] + [f"oblivious FGSM ε={lab}" for lab in labels]
            + ["defence seconds"])
    lines = [f"Oblivious FGSM (the paper's protocol), first {fgsm['n_images']} test images; bare model "
             f"under FGSM: " + ", ".join(f"ε={lab}: {_pct1(rows[0]['fgsm']['bare'][k])}"
                                        for lab, k in zip(labels, keys)) + ".", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(
            [_describe(r["defence"]), f"{_pct1(r['clean']['bare'])} → {_pct1(r['clean']['defended'])}"]
            + [_pct1(r["fgsm"]["defended"][k]) for k in keys] + [f"{r['seconds']:.1f}"]) + " |")
    return lines + [""]


def table(records: list[dict]) -> list[str]:
    """One table per (images, cascade) group of ``records`` (a data set re-run on more images
    while the rest are the older, smaller run shows both, each labelled), largest first."""
    groups: dict[tuple[int, bool], list[dict]] = {}
    for r in records:
        groups.setdefault((r["n_images"], r["params"]["cascade"]), []).append(r)
    out: list[str] = []
    for key in sorted(groups, reverse=True):
        out += _table(groups[key]) + [""]
    return out[:-1]


def _worst_ci(r: dict, k: str) -> tuple[float, float]:
    if "accuracy_ci" in r:
        return tuple(r["accuracy_ci"]["worst_case"][k])
    return wilson_interval(round(r["worst_case"][k] * r["n_images"]), r["n_images"])


def _table(records: list[dict]) -> list[str]:
    r0 = records[0]
    ds, keys = r0["dataset"], [repr(float(e)) for e in r0["eps"]]
    labels = [eps_label(e, ds) for e in r0["eps"]]
    cascade = r0["params"]["cascade"]
    head = ["defence", "clean (bare → defended)"]
    exact = any("pgd:exact" in r["attacks"] for r in records)      # its column only where it ran
    for lab in labels:       # under cascade each column counts the images every attack so far left
        cols = ([f"oblivious PGD ε={lab}", f"+ BPDA ε={lab}", f"+ exact ε={lab}", f"+ Square ε={lab}"] if cascade
                else [f"oblivious PGD ε={lab}", f"BPDA PGD ε={lab}", f"exact PGD ε={lab}", f"Square ε={lab}"])
        head += [c for c in cols if exact or "exact" not in c]
        head.append(f"**worst ε={lab}** [95 % interval]")
    head.append("seconds")
    lines = [f"Adaptive and black-box attacks, first {r0['n_images']} test images"
             + (" (cascade: each attack column is cumulative)" if cascade else "") + ". "
             f"Bare model under PGD (no defence): " + ", ".join(
                 f"ε={lab}: {_pct(r0['bare_pgd'][k])}" for lab, k in zip(labels, keys)) + ".", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        a = r["attacks"]
        row = [_describe(r["defence"]),
               f"{_pct(r['clean_accuracy']['bare'])} → {_pct(r['clean_accuracy']['defended'])}"]
        for k in keys:
            row += [_pct(a.get("pgd:oblivious", {}).get(k)), _pct(a.get("pgd:bpda", {}).get(k))]
            row += [_pct(a.get("pgd:exact", {}).get(k))] if exact else []
            lo, hi = _worst_ci(r, k)
            row += [_pct(a.get("square", {}).get(k)), f"**{_pct1(r['worst_case'][k])}** [{_pct1(lo)}, {_pct1(hi)}]"]
        row.append(f"{sum(r['seconds'].values()):.0f}")
        lines.append("| " + " | ".join(row) + " |")
    flags = [(r["defence"]["name"], f) for r in records for f in r["flags"]]
    lines += ["", "Flags:" + ("" if flags else " none.")]
    lines += [f"- {n}: `{f['code']}`: {f['message']}" for n, f in flags]
    return lines


def main(argv=None) -> int:
    folder = Path((argv or sys.argv[1:] or [REPO / "results" / "baselines"])[0])
    by_ds: dict[tuple[str, str], list[dict]] = {}
    fgsm_path = folder / "fgsm.json"
    fgsm = json.loads(fgsm_path.read_text()) if fgsm_path.is_file() else None
    for path in sorted(folder.glob("*.json")):
        if path == fgsm_path:
            continue
        r = json.loads(path.read_text())
        if "cascade" not in r["params"]:
            raise SystemExit(f"{path}: written by a ddl older than per-image PGD starts (no params.cascade); "
                             f"re-run tools/baselines.sh")
        by_ds.setdefault((r["dataset"], r["model"]), []).append(r)
    n = max(r["n_images"] for recs in by_ds.values() for r in recs)
    exact = sorted({f"{r['dataset']} {r['defence']['name']}" for recs in by_ds.values() for r in recs
                    if "pgd:exact" in r["attacks"] and r["defence"]})
    cascade = any(r["params"]["cascade"] for recs in by_ds.values() for r in recs)
    older = sorted({r["n_images"] for recs in by_ds.values() for r in recs} - {n})
    out = [
        "# Baseline purifiers beside the dictionary defence",
        "",
        "Written by `tools/baselines.sh` (runs `ddl robustness`) and `tools/baselines_table.py`. Same",
        f"classifier (zoo), same images (the first {n} of the test set"
        + (f"; rows not yet re-run come from the older run on the first {', '.join(map(str, older))}, in "
           f"their own table" if older else "") + "), same attacks for every defence:",
        "PGD on the bare model then defended (*oblivious*, the paper's protocol), PGD through the",
        "defence with the identity as its backward (*BPDA*), and the score-based Square attack on the",
        "defended model; 20 PGD steps, 1 restart, 200 Square queries, seed 0, one thread. *Worst* counts",
        "an image as robust only if it is classified correctly clean and under every attack; it is",
        f"given with its 95 % Wilson interval over the images (one image of {n} is {100 / n:g} points).",
        "Purifier parameters are the usual literature values, not tuned (bit depth 1 on MNIST and 5",
        "on CIFAR-10 as Xu et al. 2018).",
        "",
        "The first table of each data set is the paper's own protocol, FGSM on the bare classifier",
        "and then the defence, on more images (`tools/baselines_fgsm.py`, `fgsm.json`): what the",
        "paper would have reported for each purifier. The second holds the attacks that know the",
        "defence; judge each defence by its *worst* column there.",
        "",
        ("*Exact PGD* (autograd through the purifier) is run for " + ", ".join(exact) + "; the others "
         "have no torch gradient or were not run with it (—)." if exact else
         "*Exact PGD* (autograd through the purifier, possible for median and Gaussian blur, written "
         "in torch) was not run for this table."),
        "Not run here: the",
        "dictionary's soft surrogate (`pgd:soft`, its strongest attack, which takes the tuned MNIST",
        "defence to 0 % at ε = 0.3 in `results/robustness/`), more steps, restarts, APGD: the",
        "*worst* column is an upper bound on robustness. *Seconds*: attack compute, one thread, on",
        "a shared 2-core machine. " + (
            "Cascade (AutoAttack's scheme): each attack runs only on the images the attacks before it "
            "left standing, so each attack column is the accuracy after that attack and those before "
            "it, the last one is the worst case, and the worst case per image is the one a run without "
            "cascade gives (ddl's randomness is per image)." if cascade else
            f"Every attack runs on all {n} images (no cascade).") + (
            " The older rows ran every attack on every image (no cascade)." if older and cascade else "") + " PGD random",
        "starts drawn per image (ddl 79ec390 and later)." + (
            " The `zero_gradients` flag of the median is what its exact gradient is: each window passes "
            "the gradient to the one pixel it selected, so some input values get none." if exact else ""),
        "",
    ]
    for (ds, _m), recs in sorted(by_ds.items(), key=lambda kv: kv[0][0] != "mnist"):
        recs.sort(key=lambda r: ORDER.index((r["defence"] or {"name": "none"})["name"].split(":")[0]))
        out += [f"### {ds} / {recs[0]['model']} — accuracy %", ""]
        out += (fgsm_table(fgsm, ds) if fgsm else []) + table(recs) + [""]
    (folder / "README.md").write_text("\n".join(out))
    print(f"wrote {folder / 'README.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
