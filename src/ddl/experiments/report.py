"""Reports from ``results.json``: the paper's Tables 1–2 beside ours, every parameter, the figures.

``build_report`` turns a results dict and the paper's numbers (``reference/paper_tables.json``)
into a list of blocks (headings, paragraphs, tables, figures), rendered both as Markdown
(``report.md``) and as one self-contained HTML file (``report.html``, figures embedded as
base64 PNG). This module never imports torch: a report can be rebuilt from the files alone.

Every accuracy is printed with its 95 % Wilson interval over the images, ``93.21 [92.7, 93.7]``
(DESIGN.md §5b): the one recorded in the record's ``accuracy_ci``, or, for results written
before ddl recorded intervals, the one of ``k = accuracy · n_images`` correct images when that is
a whole number (it is for every accuracy ddl writes: a count divided by the image count). The
paired McNemar tests of a record's comparisons (``paired_tests``) have their own table; they need
the per-image predictions, so results written before them have none.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ddl._io import atomic_write_bytes
from ddl._stats import count_interval
from ddl.constants import DATASET_TITLES as DATASET_NAMES
from ddl.constants import DATASETS
from ddl.constants import MODEL_NAMES as MODELS
from ddl.experiments._blocks import Block
from ddl.experiments.robustness_report import eps_label

#: Marks of a cell that meets / misses its target (``reference/verdicts.json``).
MARKS = {"meets": "✓", "misses": "✗"}
ATTACK_TITLES = {"fgsm": "Table 1 — FGSM", "jsma": "Table 2 — JSMA"}

COLUMNS = (
    "Columns: *clean*, accuracy of the classifier on the clean test images (JSMA: the first n "
    "images, see Attacks below); *perturbed*, on the attacked images; *denoised*, on the attacked "
    "images after the dictionary denoiser; *denoised clean*, on the clean images after the denoiser "
    "(what the defence costs on benign inputs, not in the paper); *high-conf. subset*, the number of "
    "images the attack made misclassified with confidence ≥ 0.9 and the denoised accuracy on them "
    "(the paper's \"previously misclassified with high confidence\"). Each cell reads *paper → ours*; "
    "– : not reported or not run. Our accuracies are followed by their 95 % Wilson interval over the "
    "images, in brackets."
)

NO_INTERVAL = ("An accuracy without brackets has no interval: none was recorded, and its image count does "
               "not give a whole number of correct images.")

NOT_COMPARABLE = (
    "**Not comparable with the paper.** This run uses {source} data and short training ({what}); "
    "its numbers show that the pipeline works end to end, not what the defence achieves. The "
    "paper-scale results are `ddl reproduce --preset paper` / `--preset tuned` on the full data sets."
)

DENOISED_VARIANT = (
    "**Classifiers trained behind the defence.** Every classifier here is the zoo's `denoised` "
    "variant: the standard zoo model fine-tuned on the defence's reconstructions of the augmented "
    "training images (`ddl.zoo.load(model, dataset, variant=\"denoised\")`, "
    "`tools/train_zoo.py --variant denoised`). The paper's protocol is unchanged: each attack is "
    "computed on that classifier, then the images are denoised. *clean* is the fine-tuned "
    "classifier on clean images without the defence, which it was not trained for; the defended "
    "classifier's clean accuracy is *denoised clean*."
)

THREAT_MODEL = (
    "**What this evaluation does not show.** As in the paper, every attack here is computed on the "
    "undefended classifier (an *oblivious* or *non-adaptive* threat model): the attacker does not "
    "know the denoiser is there. The denoised accuracies therefore measure how much of a "
    "perturbation crafted for the bare model survives sparse reconstruction, not robustness. An "
    "attacker who differentiates through the denoiser (ddl offers `grad=\"exact\"` and BPDA "
    "gradients for this) or who uses EOT over its randomness can be expected to do much better; "
    "Carlini et al. (2019), *On Evaluating Adversarial Robustness*, explain why oblivious numbers "
    "must not be read as a security guarantee. The cost of the defence on benign inputs is the "
    "*denoised clean* column, which the paper does not report."
)

ROBUST_TRAINING = (
    "Does a sparse-coding front end add robustness to adversarial training, or cost it? Each arm is a "
    "model behind what it runs at test time: *adversarial* (PGD or fast adversarial training, no "
    "defence), the same model with the dictionary put in front only at test time, *adversarial-ddl* "
    "(the same training through the dictionary, evaluated behind it), and the standard and denoised "
    "models behind the dictionary. All are attacked adaptively on the same test images (worst case "
    "per image over every run of the arm), and every arm is paired with the first (exact McNemar). "
    "From `tools/robust_training_table.py`'s summaries; the readings are in the READMEs beside them "
    "(`results/robust-training/README.md` for MNIST, `results/robust-training/cifar10/README.md`)."
)

NOT_EVALUATED = "not evaluated"

ADAPTIVE_NOTE = (
    "**Adaptive worst case** (the column after *denoised*): the same defence in front of the same "
    "classifier when the attacker knows the denoiser, at the table's ε, on the first N test images of "
    "the record named below, with its 95 % Wilson interval over those images. An image counts only if "
    "the defended classifier gets it right clean and every attack of the record's suite (gradient "
    "attacks through the denoiser and a black-box attack) failed on it. The *denoised* column is the "
    "paper's oblivious protocol (the attack is computed on the bare classifier, which does not know the "
    "denoiser) and overstates what the defence is worth: judge it by the worst case. *{none}*: no "
    "adaptive record of this defence for that model at that ε."
).format(none=NOT_EVALUATED)

ADAPTIVE_SOURCES = (
    "Where each adaptive number comes from: the record, its images and attacks, its own oblivious PGD "
    "beside its worst case on the same images (like for like; the *denoised* column is FGSM on the "
    "table's images), and what produced it."
)

#: the defence parameters on which an adaptive record must agree with a cell to be "the same defence"
DEFENCE_KEYS = ("patch_size", "n_components", "n_nonzero_coefs", "step", "method", "n_epochs", "max_patches",
                "remove_mean", "random_state")


def load_paper_tables() -> dict:
    """The paper's reported numbers (RobustBench style: one record per dataset × model × attack)."""
    ref = resources.files("ddl") / "reference" / "paper_tables.json"
    return json.loads(ref.read_text())


def load_verdicts() -> dict:
    """The verdict on each committed cell (``reference/verdicts.json``): per preset, data set,
    model, attack and quantity ("clean", "denoised"), our value, the target, "meets"/"misses" and
    the measured reason of a miss. ``tests/test_reproduce.py`` checks it against the committed
    results; the report marks the cells with it."""
    ref = resources.files("ddl") / "reference" / "verdicts.json"
    return json.loads(ref.read_text())


def verdict_lookup(verdicts: dict, preset: str) -> dict:
    """{(dataset, model, attack, what): cell} of one preset (empty for a preset without verdicts)."""
    return {(c["dataset"], c["model"], c["attack"], c["what"]): c for c in verdicts["cells"] if c["preset"] == preset}


def paper_lookup(paper: dict) -> dict:
    """{(dataset, model, attack): {"clean", "perturbed", "denoised"} in percent}."""
    return {(r["dataset"], r["model"], r["attack"]): r["accuracy_percent"] for r in paper["records"]}


def _pct(v) -> str:
    return "–" if v is None else f"{v * 100:.2f}"


def _num(v, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def _params_text(dataset: str, params: dict) -> str:
    return ", ".join(f"{k}={eps_label(v, dataset) if k == 'eps' else v}" for k, v in sorted(params.items()))


def _paper_ours(paper_value, ours_fraction, ci=None) -> str:
    p = "–" if paper_value is None else f"{paper_value:g}"
    return f"{p} → {_pct_ci(ours_fraction, ci)}"


def _pct_ci(v, ci) -> str:
    """``"93.21 [92.7, 93.7]"``: an accuracy in percent and its interval (``ci``: [low, high] as
    fractions, or None: the value alone)."""
    if v is None or ci is None:
        return _pct(v)
    return f"{v * 100:.2f} [{ci[0] * 100:.1f}, {ci[1] * 100:.1f}]"


def interval_of(record: dict, kind: str, subset: str | None = None) -> list[float] | None:
    """The 95 % interval of ``record["accuracy"][kind]`` (of ``["high_confidence"][kind]`` with
    ``subset="high_confidence"``): the recorded one (``accuracy_ci``) or, in a record written
    before intervals were recorded, the Wilson interval of ``k = round(accuracy · n)`` of ``n``
    images when ``k / n`` gives back the accuracy (it does for every accuracy ddl writes). None
    when neither is available."""
    recorded = record.get("accuracy_ci")
    if recorded is not None:
        ci = (recorded.get(subset) or {}) if subset else recorded
        return ci.get(kind)
    acc = record.get("accuracy") or {}
    if subset:
        acc = acc.get(subset) or {}
    n = acc.get("n_images") if subset else record.get("n_images")
    return count_interval(acc.get(kind), n)


def mark_rules(verdicts: dict) -> dict[str, str]:
    """What a ✓ of each quantity certifies, as the column headers say it: ``{"clean": "✓ ≥ paper on
    the full test set", "denoised": "✓ ≥ paper under the paper's oblivious protocol"}`` (``≥ paper
    − 3 points`` where the preset's slack is 3; ``verdicts``: ``verdict_lookup`` of the preset)."""
    out = {}
    for what, where in (("clean", "on the full test set"), ("denoised", "under the paper's oblivious protocol")):
        cell = next((c for c in verdicts.values() if c["what"] == what), None)
        if cell is not None:
            slack = round(cell["paper"] - cell["target"], 4)
            out[what] = f"✓ ≥ paper{f' − {slack:g} points' if slack else ''} {where}"
    return out


def comparison_table(records: list[dict], paper: dict, attack: str, verdicts: dict | None = None,
                     adaptive: dict | None = None) -> list[list[str]]:
    """Rows for one attack: per model and data set, clean/perturbed/denoised as paper → ours.

    ``verdicts`` (``verdict_lookup`` of the run's preset) marks clean and denoised cells that meet
    (✓) or miss (✗) their target, and the headers say what a ✓ certifies (:func:`mark_rules`).
    ``adaptive`` (:func:`adaptive_cells`) adds, after *denoised*, the adaptive worst case of the
    same defence at the row's ε: {(dataset, model): cell text}; a model without one reads "not
    evaluated"."""
    ref = paper_lookup(paper)
    verdicts = verdicts or {}
    rules = mark_rules(verdicts)

    def mark(dataset, model, what):
        v = verdicts.get((dataset, model, attack, what))
        return f" {MARKS[v['status']]}" if v else ""

    def title(what: str) -> str:
        return f"{what} (paper → ours; {rules[what]})" if what in rules else f"{what} (paper → ours)"

    ours = {(r["dataset"], r["model"]): r for r in records if r["attack"] == attack}
    header = ["model", "data set", title("clean"), "perturbed (paper → ours)", title("denoised"),
              *(["adaptive worst case, same ε (ours)"] if adaptive is not None else []),
              "denoised clean (ours)", "high-conf. subset: n, denoised"]
    rows = [header]
    for dataset in DATASETS:
        for model in MODELS:
            p = ref.get((dataset, model, attack), {})
            r = ours.get((dataset, model))
            acc = r["accuracy"] if r else {}
            hc = acc.get("high_confidence") or {}
            ci = (lambda kind, subset=None: interval_of(r, kind, subset)) if r else (lambda *a: None)
            hc_text = "–" if not r else \
                f"{hc.get('n_images', 0)}, {_pct_ci(hc.get('denoised'), ci('denoised', 'high_confidence'))}"
            rows.append([model, DATASET_NAMES[dataset],
                         _paper_ours(p.get("clean"), acc.get("clean"), ci("clean")) + mark(dataset, model, "clean"),
                         _paper_ours(p.get("perturbed"), acc.get("perturbed"), ci("perturbed")),
                         _paper_ours(p.get("denoised"), acc.get("denoised"), ci("denoised"))
                         + mark(dataset, model, "denoised"),
                         *([adaptive.get((dataset, model), NOT_EVALUATED)] if adaptive is not None else []),
                         _pct_ci(acc.get("denoised_clean"), ci("denoised_clean")), hc_text])
    return rows


#: the paired tests of a record (``paired_tests``), as (key, what is compared) in the table's order
PAIRED = (("denoised_vs_perturbed", "denoised − perturbed"),
          ("denoised_clean_vs_clean", "denoised clean − clean"),
          ("high_confidence_denoised_vs_perturbed", "high-conf. subset: denoised − perturbed"))


def _p_value(p: float) -> str:
    """Two significant digits; below 1e-4 in scientific notation (0: below the smallest float)."""
    if p == 0:
        return "< 1e-300"
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def _paired_text(t: dict | None) -> list[str]:
    """[difference in points with its interval, discordant counts, p] of one McNemar record."""
    if not t:
        return ["–", "–", "–"]
    lo, hi = t["difference_ci"]
    return [f"{t['difference'] * 100:+.2f} [{lo * 100:+.1f}, {hi * 100:+.1f}]", f"{t['b10']} / {t['b01']}",
            _p_value(t["p_value"])]


def paired_table(records: list[dict]) -> list[list[str]]:
    """One row per record with paired tests and per comparison: the difference in accuracy
    (points) with its 95 % interval, the discordant images (A alone right / B alone right) and
    McNemar's exact p-value."""
    header = ["data set", "model", "attack", "images"]
    for _, what in PAIRED:
        header += [f"{what} (points)", "right: A only / B only", "p"]
    rows = [header]
    for r in records:
        tests = r.get("paired_tests")
        if tests:
            rows.append([DATASET_NAMES.get(r["dataset"], r["dataset"]), r["model"], r["attack"], str(r["n_images"]),
                         *(c for key, _ in PAIRED for c in _paired_text(tests.get(key)))])
    return rows


def _paired_blocks(records: list[dict]) -> list[Block]:
    rows = paired_table(records)
    missing = sum(1 for r in records if not r.get("paired_tests"))
    text = ("Each comparison on the same images: the difference in accuracy, A − B in percentage points, "
            "with its 95 % interval (Newcombe's paired score interval), the images that only A / only B "
            "classifies right, and the exact two-sided McNemar p-value (binomial test of those discordant "
            "images).")
    if missing:
        text += (f" No paired test is recorded for {missing} of the {len(records)} cells: their results were "
                 f"written before ddl recorded them (it needs the per-image predictions, which re-running the "
                 f"same command reads from the cache).")
    return [Block("h2", "Paired tests"), Block("p", text)] + ([Block("table", rows=rows)] if len(rows) > 1 else [])


def produced_by(machine: dict | None) -> list[str]:
    """What produced the results (``results["machine"]``), one item per line."""
    from ddl.provenance import format_machine

    return format_machine(machine)


def quality_table(records: list[dict]) -> list[list[str]]:
    rows = [["data set", "model", "attack", "images", "PSNR perturbed", "PSNR denoised",
             "SSIM perturbed", "SSIM denoised", "confidence perturbed → denoised"]]
    for r in records:
        c = r.get("confidence", {})
        rows.append([DATASET_NAMES.get(r["dataset"], r["dataset"]), r["model"], r["attack"],
                     str(r["n_images"]), _num(r["psnr"]["perturbed"], ".2f"), _num(r["psnr"]["denoised"], ".2f"),
                     f"{r['ssim']['perturbed']:.3f}", f"{r['ssim']['denoised']:.3f}",
                     f"{c.get('perturbed', float('nan')):.3f} → {c.get('denoised', float('nan')):.3f}"])
    return rows


def parameters_tables(records: list[dict]) -> dict[str, list[list[str]]]:
    """The protocol once, not once per cell: the defence of each data set, the attacks, the
    classifiers (each distinct setting one row)."""
    defence = [["data set", "defence parameters"]]
    attacks = [["data set", "attack", "parameters", "images"]]
    models = [["data set", "model", "classifier", "epochs", "clean accuracy, full test set"]]
    for r in records:
        ds = DATASET_NAMES.get(r["dataset"], r["dataset"])
        row = [ds, ", ".join(f"{k}={v}" for k, v in sorted(r.get("defence_params", {}).items()))]
        if row not in defence:
            defence.append(row)
        row = [ds, r["attack"], _params_text(r["dataset"], r["attack_params"]), str(r["n_images"])]
        if row not in attacks:
            attacks.append(row)
        mi = r.get("model_info", {})
        row = [ds, r["model"], str(mi.get("source", "?")), str(mi.get("epochs", "?")), _pct(mi.get("test_accuracy"))]
        if row not in models:
            models.append(row)
    return {"Defence": defence, "Attacks": attacks, "Classifiers": models}


def sweep_table(sweep: list[dict]) -> list[list[str]]:
    """Accuracy vs ε (FGSM): one row per data set, model and ε."""
    rows = [["data set", "model", "eps", "images", "clean", "perturbed", "denoised", "denoised clean"]]
    for r in sorted(sweep, key=lambda r: (r["dataset"], r["model"], r["attack_params"]["eps"])):
        a = r["accuracy"]
        rows.append([DATASET_NAMES.get(r["dataset"], r["dataset"]), r["model"],
                     eps_label(r["attack_params"]["eps"], r["dataset"]), str(r["n_images"]),
                     *(_pct_ci(a[k], interval_of(r, k)) for k in ("clean", "perturbed", "denoised", "denoised_clean"))])
    return rows


def matched_eps_table(sweep: list[dict], paper: dict) -> list[list[str]]:
    """The paper's FGSM ε is unknown: compare at the swept ε whose perturbed accuracy is nearest
    the paper's perturbed accuracy (equal attack strength), one row per data set and model."""
    ref = paper_lookup(paper)
    rows = [["data set", "model", "paper perturbed", "ε (ours, nearest)", "ours perturbed",
             "paper denoised", "ours denoised", "ours denoised clean"]]
    cells = sorted({(r["dataset"], r["model"]) for r in sweep})
    for dataset, model in cells:
        p = ref.get((dataset, model, "fgsm"))
        if p is None:
            continue
        runs = [r for r in sweep if (r["dataset"], r["model"]) == (dataset, model)]
        best = min(runs, key=lambda r: (abs(100 * r["accuracy"]["perturbed"] - p["perturbed"]),
                                        r["attack_params"]["eps"]))
        a = best["accuracy"]
        rows.append([DATASET_NAMES.get(dataset, dataset), model, f"{p['perturbed']:g}",
                     eps_label(best["attack_params"]["eps"], dataset), _pct_ci(a["perturbed"], interval_of(best, "perturbed")),
                     f"{p['denoised']:g}", _pct_ci(a["denoised"], interval_of(best, "denoised")),
                     _pct_ci(a["denoised_clean"], interval_of(best, "denoised_clean"))])
    return rows


def compute_time_table(records: list[dict]) -> list[list[str]]:
    """Per cell: seconds of attack, dictionary, denoising (perturbed, clean test set) when computed."""
    stages = ("attack", "dictionary", "denoise", "denoise_clean_test_set")

    def fmt(v):
        return "—" if v is None else f"{v:.1f}"

    rows = [["data set", "model", "attack", "n", "attack s", "dictionary s", "denoise s", "denoise clean test set s"]]
    for r in records:
        c = r.get("computed_seconds") or {}
        rows.append([DATASET_NAMES.get(r["dataset"], r["dataset"]), r["model"], r["attack"], str(r["n_images"]),
                     *(fmt(c.get(k)) for k in stages)])
    return rows


def build_report(results: dict, paper: dict | None = None, *, figures: list[tuple[str, str]] = (),
                 adaptive: list[AdaptiveRecord] = (), robust_training: list[dict] = ()) -> list[Block]:
    """The report as blocks. ``figures`` are (caption, path relative to the run folder);
    ``adaptive``: robustness records of other runs (:func:`adaptive_from_folder`) whose worst case
    the first table puts beside the oblivious number where they are of this run's defence (the
    run's own ``robustness`` records are always used); ``robust_training``: summaries of
    :mod:`ddl.experiments.robust_training_report`, one subsection each."""
    paper = paper or load_paper_tables()
    records = results["records"]
    cfg = results.get("config", {})
    name = cfg.get("name") or cfg.get("preset") or "run"
    blocks = [Block("h1", f"ddl reproduction report — {name}"),
              Block("p", f"ddl {results.get('ddl_version', '?')}. Paper: {paper['source']}. "
                         "Accuracies in percent; each cell reads *paper → ours*.")]
    source = cfg.get("source") or (cfg.get("data") or {}).get("source")
    if source and source != "full":
        epochs = sorted({str((r.get("model_info") or {}).get("epochs", "?")) for r in records})
        blocks.append(Block("p", NOT_COMPARABLE.format(
            source={"sample": "the bundled MNIST sample", "synthetic": "synthetic"}.get(source, source),
            what=f"{', '.join(epochs)} epochs")))
    if cfg.get("variant", "standard") != "standard":
        blocks.append(Block("p", DENOISED_VARIANT))
    blocks.append(Block("toc"))
    verdicts = verdict_lookup(load_verdicts(), name)
    for attack in ("fgsm", "jsma"):
        if any(r["attack"] == attack for r in records):
            settings = list(dict.fromkeys(
                f"{DATASET_NAMES.get(r['dataset'], r['dataset'])} "
                f"{_params_text(r['dataset'], {k: v for k, v in r['attack_params'].items() if k != 'seed'})}"
                for d in DATASETS for r in records if r["attack"] == attack and r["dataset"] == d))
            found = adaptive_cells(results, adaptive) if attack == "fgsm" else None
            blocks += [Block("h2", ATTACK_TITLES[attack]),
                       Block("p", "Attack: " + "; ".join(settings) + "."),
                       Block("table", rows=comparison_table(records, paper, attack, verdicts,
                                                            found.cells if found else None))]
            if found:
                blocks += _adaptive_blocks(found, verdicts)
    if records:
        blocks.append(Block("p", COLUMNS))
        everything = records + list(results.get("sweep") or [])
        if any(interval_of(r, k) is None for r in everything for k in ("clean", "perturbed", "denoised")
               if (r.get("accuracy") or {}).get(k) is not None):
            blocks.append(Block("p", NO_INTERVAL))
        blocks += _paired_blocks(records)
    if verdicts:
        blocks += _verdict_blocks(verdicts)
    if results.get("sweep"):
        blocks += [Block("h2", "FGSM ε sweep"),
                   Block("p", "Accuracy (%) of each classifier against FGSM at several budgets ε, on the first "
                              "*images* test images: *clean*, *perturbed*, *denoised* (the attacked images after "
                              "the denoiser) and *denoised clean* (the clean images after the denoiser)."),
                   Block("table", rows=sweep_table(results["sweep"])),
                   Block("p", "The paper does not give its ε. Below, each model is compared at the swept ε "
                              "whose perturbed accuracy is nearest the paper's perturbed accuracy, i.e. at "
                              "a comparable attack strength (sweep subset, see its image count above)."),
                   Block("table", rows=matched_eps_table(results["sweep"], paper))]
    if results.get("robustness"):
        blocks += _robustness_blocks(results["robustness"])
    if robust_training:
        from ddl.experiments.robust_training_report import TITLE, section_blocks

        blocks += [Block("h2", TITLE), Block("p", ROBUST_TRAINING)]
        for summary in robust_training:
            blocks += section_blocks(summary, heading="h3")
    blocks += [Block("h2", "Reconstruction quality"),
               Block("p", "Mean PSNR (dB, images identical to the clean ones left out) and SSIM of the perturbed "
                          "and of the denoised images against the clean ones, and the classifier's mean "
                          "confidence in its prediction on the perturbed → denoised images."),
               Block("table", rows=quality_table(records)),
               Block("h2", "Threat model"), Block("p", THREAT_MODEL),
               Block("h2", "Protocol and parameters")]
    for title, rows in parameters_tables(records).items():
        blocks += [Block("h3", title), Block("table", rows=rows)]
    for note in paper.get("notes", []):
        blocks.append(Block("p", f"Paper note: {note}"))
    blocks += [Block("h2", "Produced by"), Block("code", "\n".join(produced_by(results.get("machine"))))]
    timed = any(r.get("computed_seconds") for r in records)
    if results.get("seconds") or timed:
        blocks.append(Block("h2", "Time"))
    if results.get("seconds"):
        blocks.append(Block("table", rows=[["stage", "seconds"]] + [
            [k, f"{v:.1f}"] for k, v in results["seconds"].items()]))
    if timed:
        blocks += [Block("p", "Compute time of each cell's stages, in seconds, as measured when the stage was "
                              "computed (a resumed run reads them from the cache; — : not recorded). The "
                              "denoised clean test set is computed once per dictionary and shared by the "
                              "cells that use it."),
                   Block("table", rows=compute_time_table(records))]
        blocks += _recomputed_times_blocks(records)
        unrecorded = [DATASET_NAMES.get(r["dataset"], r["dataset"]) for r in records
                      if not any(v is not None for v in (r.get("computed_seconds") or {}).values())]
        if unrecorded:
            counts = ", ".join(f"{name}: {unrecorded.count(name)}" for name in sorted(set(unrecorded)))
            blocks.append(Block("p", f"Rows without times ({counts} cells): every stage of these cells was read "
                                     f"from a cache written by an earlier ddl that did not record stage times; "
                                     f"their wall time per cell is in the table of stages above."))
    if figures:
        blocks.append(Block("h2", "Figures"))
        blocks += [Block("figure", text=caption, path=path) for caption, path in figures]
    return blocks


@dataclass
class AdaptiveRecord:
    """A robustness record (``ddl robustness``) offered to the first table, and where it comes from."""
    source: str  # the file it was read from, or "results.json (robustness)" for the run's own
    record: dict
    machine: dict | None  # what produced it (the record's own; the run's for its own records)
    own: bool = False  # the run's own record: of its defence by construction


@dataclass
class Adaptive:
    """What the first table shows of the adaptive records (:func:`adaptive_cells`)."""
    cells: dict[tuple[str, str], str]  # (dataset, model) -> the adaptive column's text
    used: list[tuple[AdaptiveRecord, str | None]]  # the record behind each cell and its ε key (None: no such ε)
    rejected: list[tuple[AdaptiveRecord, str]]  # records of another defence or classifier, and why


def adaptive_from_folder(folder: str | Path) -> list[AdaptiveRecord]:
    """The robustness records in ``folder`` (``results/robustness``), each with its file."""
    from ddl.experiments.robustness_report import load_record_files

    return [AdaptiveRecord(str(path), rec, rec.get("machine")) for path, rec in load_record_files(folder)]


def defence_mismatch(cell: dict, record: dict, variant: str = "standard") -> str | None:
    """Why the robustness ``record`` is not of the defence and classifier of the report's ``cell``
    (a results.json record; ``variant``: the run's classifier variant); None when it is: the same
    defence parameters (:data:`DEFENCE_KEYS`), the same dictionary name where both name one, a
    classifier of the same source and variant. A record that names no defence is never borrowed."""
    ours, theirs = cell.get("defence_params") or {}, record.get("defence") or {}
    if not any(k in theirs for k in DEFENCE_KEYS):
        return "the record does not say which defence it attacked"
    why = [f"{k} {ours[k]} here, {theirs[k]} there" for k in DEFENCE_KEYS
           if k in ours and k in theirs and ours[k] != theirs[k]]
    name = (cell.get("dictionary") or {}).get("name")
    if name and theirs.get("name") and name != theirs["name"]:
        why.append(f"dictionary {name!r} here, {theirs['name']!r} there")
    mine, its = cell.get("model_info") or {}, record.get("model_info") or {}
    if mine.get("source") and its.get("source") and mine["source"] != its["source"]:
        why.append(f"classifier from {mine['source']} here, from {its['source']} there")
    if its.get("variant", "standard") != variant:
        why.append(f"classifier variant {variant} here, {its.get('variant')} there")
    return "; ".join(why) or None


def adaptive_cells(results: dict, offered: list[AdaptiveRecord] = ()) -> Adaptive:
    """The adaptive worst case of each FGSM cell of ``results``, at the cell's ε: from the run's own
    ``robustness`` records, else from the ``offered`` record of the same data set, model, defence
    and classifier (:func:`defence_mismatch`) with the most images. The cell reads
    ``"93.2 [91.5, 94.6], N = 1000"`` (:func:`ddl.experiments.robustness_report.pct_ci`), "not
    evaluated at ε …" when the record has no such ε, and is absent when no record is of this
    defence (the table prints "not evaluated")."""
    from ddl.experiments.robustness_report import pct_ci

    own = [AdaptiveRecord("results.json (robustness)", r, results.get("machine"), own=True)
           for r in results.get("robustness") or []]
    variant = (results.get("config") or {}).get("variant", "standard")
    found = Adaptive({}, [], [])
    for cell in (r for r in results["records"] if r["attack"] == "fgsm"):
        ds, model = cell["dataset"], cell["model"]
        same = [a for a in [*own, *offered] if (a.record.get("dataset"), a.record.get("model")) == (ds, model)]
        fit = []
        for a in same:
            why = None if a.own else defence_mismatch(cell, a.record, variant)
            if why:
                found.rejected.append((a, why))
            else:
                fit.append(a)
        if not fit:
            continue
        best = max(fit, key=lambda a: (a.own, a.record.get("n_images") or 0))  # max keeps the first of ties
        eps = float(cell["attack_params"]["eps"])
        key = next((repr(float(e)) for e in best.record.get("eps", []) if abs(float(e) - eps) < 1e-9), None)
        found.used.append((best, key))
        found.cells[(ds, model)] = (f"{pct_ci(best.record, 'worst_case', key)}, N = {best.record['n_images']}"
                                    if key else f"{NOT_EVALUATED} at ε {eps_label(eps, ds)}")
    return found


def _machine_short(machine: dict | None) -> str:
    """ddl version and commit, CPU and threads of ``machine`` (:func:`produced_by`), one line."""
    lines = produced_by(machine)
    keep = [line for line in lines if line.startswith(("ddl ", "CPU ", "threads", "machine:"))]
    return "; ".join(keep or lines)


def adaptive_sources_table(found: Adaptive) -> list[list[str]]:
    """One row per adaptive number of the first table: the record it comes from, its images,
    attacks and budgets, its oblivious PGD → worst case on the same images, what produced it."""
    from ddl.experiments.robustness_report import md_escape, pct_ci

    rows = [["data set", "model", "record", "N", "attacks and budgets", "oblivious PGD → worst case, same images",
             "produced by"]]
    for a, key in found.used:
        r, prm = a.record, a.record.get("params") or {}
        budgets = (f"PGD {prm.get('pgd_steps', '?')} steps × {prm.get('pgd_restarts', '?')}, APGD "
                   f"{prm.get('apgd_iter', '?')} iterations, Square {prm.get('square_queries', '?')} queries"
                   + ("; `--cascade`" if prm.get("cascade") else ""))
        attacks = ", ".join(md_escape(k) for k in r.get("attacks", {}))
        if key is None:
            at = ", ".join(eps_label(float(e), r["dataset"]) for e in r.get("eps", []))
            versus = f"the record has ε {at} only"
        else:
            versus = (f"ε {eps_label(float(key), r['dataset'])}: {pct_ci(r, 'attacks', 'pgd:oblivious', key)} → "
                      f"{pct_ci(r, 'worst_case', key)}")
        source = a.source if a.own else f"`{a.source}`"
        rows.append([DATASET_NAMES.get(r["dataset"], r["dataset"]), md_escape(r["model"]), source,
                     str(r["n_images"]), f"{attacks}; {budgets}", versus, _machine_short(a.machine)])
    return rows


def _adaptive_blocks(found: Adaptive, verdicts: dict) -> list[Block]:
    """Below the first table: what the adaptive column is and where its numbers come from (or that
    the run's defence was not evaluated adaptively), and what a ✓ certifies."""
    blocks = []
    rejected = list(dict.fromkeys(f"`{a.source}`: {why}" for a, why in found.rejected))
    if found.used:
        blocks += [Block("p", ADAPTIVE_NOTE), Block("p", ADAPTIVE_SOURCES),
                   Block("table", rows=adaptive_sources_table(found))]
        if rejected:
            blocks.append(Block("p", "Not used, being of another defence or classifier: " + "; ".join(rejected) + "."))
    else:
        text = ("**Adaptive worst case: not evaluated for this defence.** No adaptive attack (one that knows "
                "the denoiser) was run against this run's defence, so the adaptive column reads "
                f"*{NOT_EVALUATED}*, and the *denoised* column (the paper's oblivious protocol: the attack is "
                "computed on the bare classifier) is no robustness number. ")
        if rejected:
            folders = sorted({str(Path(a.source).parent) for a, _ in found.rejected})
            names = sorted({str((a.record.get("defence") or {}).get("name")) for a, _ in found.rejected
                            if (a.record.get("defence") or {}).get("name")})
            whys: dict[str, list[str]] = {}
            for a, why in found.rejected:
                ds = DATASET_NAMES.get(a.record.get("dataset"), a.record.get("dataset"))
                whys.setdefault(ds, [])
                if why not in whys[ds]:
                    whys[ds].append(why)
            text += (f"The adaptive records in {', '.join(f'`{f}`' for f in folders)} are of another defence"
                     + (f" (dictionary {', '.join(repr(n) for n in names)})" if names else "") + ". "
                     + "".join(f"{ds}: {' / '.join(w)}. " for ds, w in whys.items())
                     + "They are not borrowed here; that defence's adaptive numbers are in "
                     + ", ".join(f"`{f}/README.md`" for f in folders) + ".")
        else:
            text += ("This run did not run the adaptive suite and no adaptive records were given "
                     "(`ddl report RUN --robustness DIR`).")
        blocks.append(Block("p", text))
    rules = mark_rules(verdicts)
    if rules:
        certifies = "; ".join(f"*{what}* {rule}" for what, rule in rules.items())
        blocks.append(Block("p", f"What a mark certifies: {certifies}. A ✓ certifies nothing against an "
                                 "attacker who knows the denoiser; that is the adaptive column."))
    return blocks


def _recomputed_times_blocks(records: list[dict]) -> list[Block]:
    """A paragraph per group of cells whose stage times were filled from a recompute
    (``computed_seconds_source``, written by tools/fill_stage_times.py)."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        if r.get("computed_seconds_source"):
            groups.setdefault(r["computed_seconds_source"], []).append(r)
    blocks = []
    for source, cells in sorted(groups.items()):
        names = sorted({DATASET_NAMES.get(r["dataset"], r["dataset"]) for r in cells})
        agree = [r["computed_seconds_agreement"] for r in cells if r.get("computed_seconds_agreement") is not None]
        text = (f"{', '.join(names)}: these {len(cells)} cells were computed by an earlier ddl that did not record "
                f"stage times; the times shown were {source}.")
        if agree:
            least = math.floor(min(agree) * 10_000) / 100  # rounded down: "at least"
            text += (f" The recomputed predictions are identical in {sum(a == 1.0 for a in agree)} of the "
                     f"{len(cells)} cells and agree with the committed ones on at least {least:.2f} % of the "
                     f"images in {'every cell' if len(agree) == len(cells) else f'{len(agree)} cells'}")
            text += (" (the committed numbers are unchanged)." if len(agree) == len(cells) else
                     f"; for {len(cells) - len(agree)} the agreement was not recorded.")
        blocks.append(Block("p", text))
    return blocks


def _robustness_blocks(records: list[dict]) -> list[Block]:
    """The "oblivious vs adaptive" section (ddl.robustness records of results.json)."""
    from ddl.experiments.robustness_report import INTRO, budget_text, flag_lines, robustness_rows

    blocks = [Block("h2", "Oblivious vs adaptive robustness"), Block("p", INTRO)]
    for d in DATASETS:
        if any(r["dataset"] == d for r in records):
            blocks += [Block("h3", DATASET_NAMES.get(d, d)),
                       Block("table", rows=robustness_rows(records, d)),
                       Block("p", budget_text(records, d)),
                       Block("p", "Flags: " + "; ".join(flag_lines(records, d)) + ".")]
    return blocks


def _verdict_blocks(verdicts: dict) -> list[Block]:
    """What ✓ and ✗ mean, and the measured reason of every miss (``reference/verdicts.json``)."""
    rules = load_verdicts()["rules"]
    misses = [c for c in verdicts.values() if c["status"] == "misses"]
    text = (f"✓ / ✗: the cell meets / misses its target (for a JSMA row, the clean mark judges the "
            f"full test set, not the JSMA subset shown). Clean: {rules['clean']}. Denoised: "
            f"{rules['denoised']}. {len(verdicts) - len(misses)} of {len(verdicts)} cells meet it.")
    rows = [["data set", "model", "attack", "quantity", "paper", "target", "ours", "reason"]]
    rows += [[DATASET_NAMES[c["dataset"]], c["model"], c["attack"], c["what"], f"{c['paper']:g}",
              f"{c['target']:g}", f"{c['ours']:.2f}", c["reason"]] for c in misses]
    return [Block("h3", "Cells that meet or miss the paper"), Block("p", text)] + (
        [Block("table", rows=rows)] if misses else [])


# --- rendering -----------------------------------------------------------------------------------
def slug(text: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    import re

    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def _sections(blocks: list[Block]) -> list[str]:
    return [b.text for b in blocks if b.kind == "h2"]


def to_markdown(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if b.kind == "toc":
            out.append("Contents: " + " · ".join(f"[{t}](#{slug(t)})" for t in _sections(blocks)))
        elif b.kind in ("h1", "h2", "h3", "h4"):
            out.append("#" * int(b.kind[1]) + " " + b.text)
        elif b.kind == "p":
            out.append(b.text)
        elif b.kind == "code":
            out.append("```\n" + b.text + "\n```")
        elif b.kind == "table":
            head, *body = b.rows
            lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            lines += ["| " + " | ".join(row) + " |" for row in body]
            out.append("\n".join(lines))
        elif b.kind == "figure":
            out.append(f"![{b.text}]({b.path})\n\n*{b.text}*")
        else:
            raise ValueError(f"to_markdown: unknown block kind {b.kind!r}")
    return "\n\n".join(out) + "\n"


#: A code span, or a character escaped with a backslash (``robustness_report.md_escape``).
_LITERAL = re.compile(r"`([^`]+)`|\\([\\`*_|\[\]])")


def _inline(text: str) -> str:
    """Escape, then the inline marks we use: **bold**, *italic* and `code`.

    Code spans and backslash-escaped characters are set aside first, as Markdown reads them: a
    ``*`` inside them opens no emphasis (`` `apgd-*` `` used to run into the next ``*...*``)."""
    literals: list[str] = []

    def set_aside(m: re.Match) -> str:
        code, char = m.groups()
        literals.append(f"<code>{html.escape(code)}</code>" if code is not None else html.escape(char))
        return f"\x00{len(literals) - 1}\x00"

    t = html.escape(_LITERAL.sub(set_aside, text))
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    t = re.sub(r"\*(.+?)\*", r"<em>\1</em>", t)
    return re.sub("\x00(\\d+)\x00", lambda m: literals[int(m.group(1))], t)


def to_html(blocks: list[Block], run_dir: Path) -> str:
    """Self-contained HTML: figures are read from ``run_dir`` and embedded as base64 PNG."""
    body = []
    for b in blocks:
        if b.kind == "toc":
            items = "".join(f'<li><a href="#{slug(t)}">{_inline(t)}</a></li>' for t in _sections(blocks))
            body.append(f'<nav><strong>Contents</strong><ul>{items}</ul></nav>')
        elif b.kind == "h2":
            body.append(f'<h2 id="{slug(b.text)}">{_inline(b.text)}</h2>')
        elif b.kind in ("h1", "h3", "h4"):
            body.append(f"<{b.kind}>{_inline(b.text)}</{b.kind}>")
        elif b.kind == "p":
            body.append(f"<p>{_inline(b.text)}</p>")
        elif b.kind == "code":
            body.append(f"<pre>{html.escape(b.text)}</pre>")
        elif b.kind == "table":
            head, *rows = b.rows
            t = "<tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>"
            t += "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows)
            body.append(f"<table>{t}</table>")
        elif b.kind == "figure":
            png = (Path(run_dir) / b.path).read_bytes()
            data = base64.b64encode(png).decode()
            body.append(f'<figure><img alt="{html.escape(b.text)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{_inline(b.text)}</figcaption></figure>")
        else:
            raise ValueError(f"to_html: unknown block kind {b.kind!r}")
    style = ("body{font-family:system-ui,sans-serif;max-width:1300px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:0.9em;width:100%}"
             "nav ul{columns:2;margin:0.3em 0 1em}"
             "th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f3f3f3}"
             "img{max-width:100%}figure{margin:1.5em 0}figcaption{font-style:italic;color:#555}")
    title = next((b.text for b in blocks if b.kind == "h1"), "ddl report")
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_report(run_dir: str | Path, *, paper: dict | None = None,
                 robustness: str | Path | None = None, robust_training: list[dict] = ()) -> tuple[Path, Path]:
    """Read ``run_dir/results.json`` (and ``run_dir/figures.json`` if present), write
    ``report.md`` and ``report.html`` atomically; return their paths. ``robustness``: a folder of
    robustness records (``results/robustness``) whose worst case the first table shows where they
    are of the run's defence (:func:`adaptive_cells`); ``robust_training``: summaries
    (:func:`ddl.experiments.robust_training_report.load_summaries`) for their section."""
    run_dir = Path(run_dir)
    results_path = run_dir / "results.json"
    if not results_path.is_file():
        raise FileNotFoundError(f"write_report: no results.json in {run_dir}; run `ddl reproduce` or `ddl demo` first")
    results = json.loads(results_path.read_text())
    figures_path = run_dir / "figures.json"
    figures = [tuple(f) for f in json.loads(figures_path.read_text())] if figures_path.is_file() else []
    adaptive = adaptive_from_folder(robustness) if robustness is not None else []
    blocks = build_report(results, paper, figures=figures, adaptive=adaptive, robust_training=robust_training)
    md = atomic_write_bytes(run_dir / "report.md", to_markdown(blocks).encode())
    page = atomic_write_bytes(run_dir / "report.html", to_html(blocks, run_dir).encode())
    return md, page
