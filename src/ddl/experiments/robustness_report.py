"""The "oblivious vs adaptive" report: tables, a figure and the flags from ``robustness.json`` records.

Reads only saved records (never re-runs an attack). ``write_robustness_report(folder)`` collects
every ``*.json`` record in ``folder`` (as written by ``ddl robustness``) and writes
``folder/README.md`` and ``folder/robustness.png``; ``robustness_markdown(records)`` is the
section that ``ddl report`` embeds.

Every accuracy is printed with its 95 % Wilson interval over the images, ``50.0 [40.1, 59.9]``:
the record's ``accuracy_ci`` or, for a record written before intervals were recorded, the
Wilson interval of ``k = round(accuracy · N)`` of ``N`` images (exact: every accuracy is such a
count). The paired tests of a record (exact McNemar on the same images) and the machine that
produced it (``machine``, :func:`ddl.provenance.format_machine`) are printed below the table.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

__all__ = ["INTRO", "accuracy_ci", "attack_label", "budget_text", "flag_lines", "load_record_files", "load_records",
           "machine_lines", "md_escape", "paired_test_lines", "pct_ci", "plot_robustness", "robustness_figure",
           "robustness_markdown", "robustness_rows", "write_robustness_report"]

_MODELS = ("mlp", "convnet", "autoencoder", "resnet", "hrnn")
_DATASETS = ("mnist", "cifar10")
_TITLES = {"mnist": "MNIST", "cifar10": "CIFAR-10"}


def load_records(folder: str | Path) -> list[dict[str, Any]]:
    """Every robustness record (``robustness.json`` or ``<dataset>-<model>.json``) in ``folder``."""
    records = []
    for path in sorted(Path(folder).glob("*.json")):
        rec = json.loads(path.read_text())
        if isinstance(rec, dict) and "worst_case" in rec and "attacks" in rec:
            records.append(rec)
    order = {(d, m): i for i, (d, m) in enumerate((d, m) for d in _DATASETS for m in _MODELS)}
    return sorted(records, key=lambda r: order.get((r["dataset"], r["model"]), 99))


def load_record_files(folder: str | Path) -> list[tuple[Path, dict[str, Any]]]:
    """(path, record) of every robustness record in ``folder``, in file-name order: what
    :func:`load_records` reads, with the file each record came from (``ddl report --robustness``
    names it beside each number it borrows)."""
    out = []
    for path in sorted(Path(folder).glob("*.json")):
        rec = json.loads(path.read_text())
        if isinstance(rec, dict) and "worst_case" in rec and "attacks" in rec:
            out.append((path, rec))
    return out


def eps_label(e: float, dataset: str) -> str:
    """ε as the field writes it: k/255 on CIFAR-10 when it is a whole number k > 0 of grey levels,
    else the decimal (4 significant digits). The one formatter of ε in tables and reports."""
    k = e * 255
    if dataset == "cifar10" and abs(k - round(k)) < 1e-6 and round(k) > 0:
        return f"{round(k)}/255"
    return f"{e:.4g}"


def md_escape(name: str) -> str:
    """``name`` with the characters Markdown would read as marks (``\\ ` * _ | [ ]``) escaped by a
    backslash: a model or attack name in a table cell is text, never the start of an emphasis,
    code span, link or a new column. ``ddl.experiments.report`` renders the escapes in HTML."""
    return re.sub(r"([\\`*_|\[\]])", r"\\\1", name)


def attack_label(name: str, cascade: bool) -> str:
    """An attack's row or column label: under cascade its accuracy is that after it *and every
    attack before it*, and the label says so."""
    return f"{name} (cumulative)" if cascade else name


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def accuracy_ci(record: dict[str, Any], group: str, *keys: str) -> list[float] | None:
    """The 95 % interval of the accuracy ``record[group][keys...]`` (``group``: ``clean_accuracy``,
    ``attacks``, ``worst_case``, ``bare_pgd`` or ``unbounded_accuracy``): the recorded one, else
    the Wilson interval of its count over ``n_images`` (None when it is no such count)."""
    from ddl._stats import count_interval

    def walk(node):
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        return node

    recorded = record.get("accuracy_ci")
    if isinstance(recorded, dict) and group in recorded:
        return walk(recorded[group])
    return count_interval(walk(record.get(group)), record.get("n_images"))


def pct_ci(record: dict[str, Any], group: str, *keys: str) -> str:
    """``"50.0 [40.1, 59.9]"``: the accuracy in percent and its interval; ``"—"`` when absent."""
    node = record.get(group)
    for k in keys:
        node = node.get(k) if isinstance(node, dict) else None
    if node is None:
        return "—"
    ci = accuracy_ci(record, group, *keys)
    return _pct(node) if ci is None else f"{_pct(node)} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


_PAIRED = (("defended_vs_bare_clean", "clean, defended vs bare"),
           ("worst_case_vs_bare_pgd", "worst case vs bare model under PGD"),
           ("worst_case_vs_oblivious", "worst case vs oblivious PGD"))


def _p(p: float) -> str:
    return "p = 1" if p >= 1 else f"p = {p:.2g}" if p >= 1e-4 else "p < 0.0001"


def _difference(t: dict[str, Any]) -> str:
    lo, hi = t["difference_ci"]
    return f"{100 * t['difference']:+.1f} points [{100 * lo:+.1f}, {100 * hi:+.1f}], {_p(t['p_value'])}"


def paired_test_lines(record: dict[str, Any]) -> list[str]:
    """One line per paired comparison of the record (exact McNemar on the same images; the
    difference of accuracies A − B in points with its 95 % interval); none for an old record."""
    tests = record.get("paired_tests") or {}
    lines = []
    for key, label in _PAIRED:
        t = tests.get(key)
        if not t:
            continue
        if "p_value" in t:
            lines.append(f"{label}: {_difference(t)}")
        else:
            parts = [f"ε {eps_label(float(k), record['dataset'])}: {_difference(v)}" for k, v in t.items()]
            lines.append(f"{label}: " + "; ".join(parts))
    return lines


def machine_lines(record: dict[str, Any]) -> list[str]:
    """What produced the record (``ddl.provenance.format_machine`` of its ``machine``)."""
    from ddl.provenance import format_machine

    return format_machine(record.get("machine"))


INTRO = ("Accuracy (%) of the defended classifier `model(defence(x))` on the first N test images, with "
         "its 95 % Wilson interval over the images in brackets. "
         "**bare PGD**: PGD on the undefended model (no defence). **oblivious**: PGD on the bare "
         "model, then the image is denoised (the paper's protocol). The other columns attack "
         "*through* the defence: `bpda` differentiates the classifier at the denoised point "
         "(identity backward), `exact` holds OMP's support fixed, `soft` differentiates a smooth "
         "surrogate of OMP's atom choice; `apgd-*` are AutoAttack's APGD; `square` is a black-box "
         "attack (no gradient). **worst case**: an image counts as robust only if *every* attack "
         "failed on it; clean images the defended model already gets wrong count as broken. "
         "Judge the defence by the worst case, not by the oblivious column. Under `--cascade` each "
         "attack runs only on the images the attacks before it left, its column is cumulative (and "
         "labelled so), and "
         "**strongest** names the attack that broke the most images first.")


def robustness_rows(records: list[dict[str, Any]], dataset: str) -> list[list[str]]:
    """Header + one row per (model, ε) of ``dataset``: bare PGD, oblivious, each adaptive
    attack, worst case (each with its 95 % interval), strongest attack.

    Under cascade an attack's column is cumulative and its header says so; when only some of the
    records ran with cascade, the header says "(cumulative under cascade)" and their model cells
    "(cascade)"."""
    recs = [r for r in records if r["dataset"] == dataset]
    attacks: list[str] = []
    for r in recs:
        attacks += [a for a in r["attacks"] if a not in attacks]
    adaptive = [a for a in attacks if a != "pgd:oblivious"]
    cascade = [bool(r.get("params", {}).get("cascade")) for r in recs]
    mixed = any(cascade) and not all(cascade)

    def label(a: str, title: str) -> str:
        title = md_escape(title)
        # the first attack of a cascade ran on every image: its column is its own accuracy
        if not any(c and list(r["attacks"])[:1] != [a] for r, c in zip(recs, cascade)):
            return title
        return f"{title} (cumulative under cascade)" if mixed else attack_label(title, True)

    rows = [["model", "ε", "N", "clean (bare)", "clean (defended)", "bare PGD",
             label("pgd:oblivious", "oblivious"), *(label(a, a) for a in adaptive), "**worst case**",
             "strongest"]]
    for r, cascaded in zip(recs, cascade):
        model = md_escape(r["model"]) + (" (cascade)" if mixed and cascaded else "")
        for e in r["eps"]:
            k = repr(float(e))
            rows.append([model, eps_label(e, dataset), str(r["n_images"]),
                         pct_ci(r, "clean_accuracy", "bare"), pct_ci(r, "clean_accuracy", "defended"),
                         pct_ci(r, "bare_pgd", k), pct_ci(r, "attacks", "pgd:oblivious", k),
                         *[pct_ci(r, "attacks", a, k) for a in adaptive],
                         f"**{pct_ci(r, 'worst_case', k)}**", md_escape(r.get("strongest_attack", {}).get(k, ""))])
    return rows


def budget_text(records: list[dict[str, Any]], dataset: str) -> str:
    budget = next((r.get("params", {}) for r in records if r["dataset"] == dataset), {})
    return (f"Budgets: PGD {budget.get('pgd_steps')} steps × {budget.get('pgd_restarts')} "
            f"restart(s), APGD {budget.get('apgd_iter')} iterations, APGD-T "
            f"{budget.get('n_target_classes')} target classes, Square "
            f"{budget.get('square_queries')} queries, soft-surrogate β = {budget.get('beta')}; "
            f"seed {budget.get('seed')}.")


def flag_lines(records: list[dict[str, Any]], dataset: str) -> list[str]:
    """One line per flag of each model of ``dataset`` ("none" when it has none)."""
    out = []
    for r in (r for r in records if r["dataset"] == dataset):
        model = md_escape(r["model"])
        lines = ([f"{model}: **{f['code']}** — {f['message']}" for f in r["flags"]] or [f"{model}: none"])
        if r.get("unbounded_accuracy") is not None:
            lines[-1] += f" (accuracy at ε = 1: {pct_ci(r, 'unbounded_accuracy')} %)"
        out += lines
    return out


def robustness_markdown(records: list[dict[str, Any]], *, figure: str | None = None) -> str:
    """Markdown: per data set, the table of :func:`robustness_rows`, the budgets, the flags."""
    if not records:
        return ""
    out = ["## Oblivious vs adaptive robustness", "", INTRO, ""]
    if figure:
        out += [f"![accuracy against eps]({figure})", ""]
    for ds in _DATASETS:
        if not any(r["dataset"] == ds for r in records):
            continue
        rows = robustness_rows(records, ds)
        out += [f"### {_TITLES[ds]}", "", "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        out += ["| " + " | ".join(row) + " |" for row in rows[1:]]
        out += ["", budget_text(records, ds), "", "Flags:", ""]
        out += [f"- {line}" for line in flag_lines(records, ds)]
        paired = [(r["model"], paired_test_lines(r)) for r in records if r["dataset"] == ds]
        if any(lines for _, lines in paired):
            out += ["", "Paired tests (exact McNemar on the same images; difference A − B in points, "
                        "95 % interval):", ""]
            out += [f"- {model}, {line}" for model, lines in paired for line in lines]
        out += ["", "Produced by:", ""]
        for r in (r for r in records if r["dataset"] == ds):
            out += [f"- {r['model']}: " + "; ".join(machine_lines(r))]
        out.append("")
    return "\n".join(out)


def robustness_figure(records: list[dict[str, Any]]):
    """The matplotlib Figure of :func:`plot_robustness`: accuracy against ε, one panel per data
    set. CIFAR-10's ε axis is ticked at the record's radii in grey levels (``0``, ``2/255``,
    ``8/255``), as the field writes them, not 0.005-0.030."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [d for d in _DATASETS if any(r["dataset"] == d for r in records)]
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.2), squeeze=False)
    colours = dict(zip(_MODELS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for ax, ds in zip(axes[0], datasets):
        for r in (r for r in records if r["dataset"] == ds):
            eps = [0.0] + [float(e) for e in r["eps"]]
            keys = [repr(float(e)) for e in r["eps"]]
            c = colours.get(r["model"], "k")
            clean_b, clean_d = r["clean_accuracy"]["bare"], r["clean_accuracy"]["defended"]
            ax.plot(eps, [clean_b] + [r["bare_pgd"][k] for k in keys], ":", color=c)
            if "pgd:oblivious" in r["attacks"]:
                ax.plot(eps, [clean_d] + [r["attacks"]["pgd:oblivious"][k] for k in keys], "--", color=c)
            ax.plot(eps, [clean_d] + [r["worst_case"][k] for k in keys], "-o", color=c, ms=3,
                    label=r["model"])
        ax.set_title(f"{_TITLES[ds]}: dotted bare PGD, dashed oblivious, solid worst-case adaptive",
                     fontsize=9)
        if ds == "cifar10":
            ticks = sorted({0.0, *(float(e) for r in records if r["dataset"] == ds for e in r["eps"])})
            ax.set_xticks(ticks, ["0" if e == 0 else eps_label(e, ds) for e in ticks])
            ax.set_xlabel("ε (L∞, grey levels k/255)")
        else:
            ax.set_xlabel("ε (L∞)")
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_robustness(records: list[dict[str, Any]], path: str | Path) -> Path:
    """Accuracy against ε per data set (:func:`robustness_figure`): bare PGD (dotted), oblivious
    (dashed), worst-case adaptive (solid), one colour per model; written to ``path``."""
    fig = robustness_figure(records)  # selects the Agg backend before pyplot is imported here
    import matplotlib.pyplot as plt

    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def write_robustness_report(folder: str | Path) -> Path:
    """``folder/README.md`` and ``folder/robustness.png`` from the records in ``folder``."""
    from ddl._io import atomic_write_bytes

    folder = Path(folder)
    records = load_records(folder)
    if not records:
        raise ValueError(f"write_robustness_report: no robustness records (*.json) in {folder}.")
    plot_robustness(records, folder / "robustness.png")
    text = "# Adaptive robustness of the tuned defence\n\n" + robustness_markdown(
        records, figure="robustness.png") + "\n"
    return atomic_write_bytes(folder / "README.md", text.encode())
