"""Write results/robustness-default/README.md: the tuned defence under the whole default suite of
``ddl robustness`` at its default budgets (issue 19, item 6), beside the committed suite's run on
the same 1,000 images (results/robustness/), with the paired difference per ε and the cost.

The main table and figure are ddl's own (:func:`ddl.experiments.robustness_report.
write_robustness_report`); this adds, per record found in both folders:

- the worst case of each suite and the paired difference (default − committed; exact McNemar,
  Newcombe interval): how many images the stronger budgets break that the committed ones left;
- seconds per attack (cascade: each attack on the images the earlier ones left) and per 1,000
  images, with the threads and CPU that spent them;
- ``notes.md`` of the folder, if there is one (what the records cannot say: where units were
  computed), appended as written.

    .venv/bin/python tools/robustness_default_table.py [results/robustness-default] [results/robustness]
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from ddl._io import atomic_write_bytes  # noqa: E402
from ddl._stats import mcnemar  # noqa: E402
from ddl.experiments.robustness_report import (  # noqa: E402
    budget_text, eps_label, load_record_files, load_records, pct_ci, write_robustness_report)


def comparison(default: dict, committed: dict) -> list[str]:
    name = f"{default['dataset']} {default['model']}"
    if default["image_indices"] != committed["image_indices"]:
        raise SystemExit(f"robustness_default_table: {name}: the two records are not on the same images")
    if default["clean_correct"] != committed["clean_correct"]:
        raise SystemExit(f"robustness_default_table: {name}: the two records disagree on clean images "
                         f"(not the same model or defence)")
    rows = []
    for e in sorted(set(default["worst_survival"]) & set(committed["worst_survival"]), key=float):
        t = mcnemar(default["worst_survival"][e], committed["worst_survival"][e])
        lo, hi = t["difference_ci"]
        rows.append(f"| {name} | {eps_label(float(e), default['dataset'])} | {pct_ci(committed, 'worst_case', e)} | "
                    f"{pct_ci(default, 'worst_case', e)} | {100 * t['difference']:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] | "
                    f"{t['b10']} / {t['b01']} | {t['p_value']:.3g} |")
    return rows


def cost(rec: dict) -> list[str]:
    n = rec["n_images"]
    secs = rec["seconds"]
    m = rec["machine"]
    cpu = m.get("cpu", {})
    where = f"{cpu.get('model', '?')}, {rec.get('threads', '?')} thread(s)"
    eps = ", ".join(eps_label(e, rec["dataset"]) for e in rec["eps"])
    cells = " · ".join(f"{a} {s:.0f} s" for a, s in secs.items())
    total = sum(secs.values())
    return [f"| {rec['dataset']} {rec['model']} | {eps} | {cells} | {total:.0f} s | "
            f"{1000 * total / n:.0f} s | {where} |"]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    folder = Path(argv[0] if argv else REPO / "results" / "robustness-default")
    committed_folder = Path(argv[1] if len(argv) > 1 else REPO / "results" / "robustness")
    write_robustness_report(folder)
    records = load_records(folder)
    committed_records = load_records(committed_folder)
    out = [(folder / "README.md").read_text().rstrip("\n"), "",
           "## The default budgets against the committed suite (same images, same model and defence)", "",
           "Worst case over each suite, % [95 % Wilson interval]; difference default − committed in points "
           "(exact McNemar on the same images, Newcombe's 95 % interval; b10: images only the default "
           "suite leaves standing, b01: only the committed suite). Committed suite: the attacks of the "
           f"records in `{committed_folder.resolve().relative_to(REPO)}/`; "
           + (budget_text(committed_records, committed_records[0]["dataset"]) if committed_records else "")
           + " Default: the seven attacks of `ddl robustness` at its defaults.", "",
           "| model | ε | committed suite | default budgets | difference | b10 / b01 | p |",
           "|---|---|---|---|---|---|---|"]
    committed = {(r["dataset"], r["model"]): r for r in committed_records}
    for rec in records:
        if (rec["dataset"], rec["model"]) in committed:
            out += comparison(rec, committed[(rec["dataset"], rec["model"])])
    out += ["", "## Cost", "",
            "Seconds each attack spent over all ε of the record (cascade: on the images the earlier "
            "attacks left), their sum, and the sum per 1,000 images, with the CPU and threads of the "
            "process that wrote the record (units read from the cache count with the seconds they "
            "took when computed).", "",
            "| model | ε | seconds per attack | total | per 1,000 images | CPU, threads |", "|---|---|---|---|---|---|"]
    for rec in records:
        out += cost(rec)
    other = load_record_files(folder / "cross-machine")
    if other:
        out += ["", "## The same units on another machine", "",
                "Records in `cross-machine/`, computed elsewhere with the same command, against the record "
                "above of the same model, image by image (survival of every attack, the worst case, the "
                "bare-model PGD and the clean predictions):", "",
                "| record | ε | machine | attacks with identical survivals | worst case identical | "
                "bare PGD identical | clean identical |", "|---|---|---|---|---|---|---|"]
        by_name = {(r["dataset"], r["model"]): r for r in records}
        for path, rec in other:
            ref = by_name.get((rec["dataset"], rec["model"]))
            if ref is None:
                raise SystemExit(f"robustness_default_table: {path.name}: no record of {rec['dataset']} "
                                 f"{rec['model']} in {folder}")
            m = rec["machine"]
            where = (f"{m['cpu']['model']}, {m['cpu']['cores']} cores (flags {m['cpu']['flags_sha256']}), "
                     f"torch {m['torch']}, {m['threads']['torch']} threads, OMP kernel "
                     f"{m['omp_kernel']['used']} ({m['omp_kernel'].get('compiler', '')})")
            for e in rec["worst_survival"]:
                same = sum(rec["survival"][a][e] == ref["survival"][a][e] for a in rec["survival"])
                out.append(f"| {path.name} | {eps_label(float(e), rec['dataset'])} | {where} | "
                           f"{same} of {len(rec['survival'])} | "
                           f"{'yes' if rec['worst_survival'][e] == ref['worst_survival'][e] else 'no'} | "
                           f"{'yes' if rec['bare_survival'][e] == ref['bare_survival'][e] else 'no'} | "
                           f"{'yes' if rec['clean_correct'] == ref['clean_correct'] else 'no'} |")
    notes = folder / "notes.md"
    if notes.is_file():
        out += ["", notes.read_text().rstrip("\n")]
    atomic_write_bytes(folder / "README.md", ("\n".join(out) + "\n").encode())
    print(f"wrote {folder / 'README.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
