"""README.md is a tested artifact (issue 20): every ```sh and ```python block runs as written, and
the figures it quotes (zoo size, times, the FGSM table) are what the code prints or the committed
records hold.

How the blocks run:

- In a temporary folder ``tmp/work`` beside ``tmp/shared``, a link to the ``shared/`` folder
  beside this clone (CI has ``/work/shared/data`` there), so the README's ``--data-dir
  ../shared/data`` and ``data_dir="../shared/data"`` resolve as they do for a user who follows
  "Data"; ``runs/`` is written there, never into the repository. Where the real data sets are
  absent, ``tmp/shared/data`` holds the MNIST sample bundled with ddl and a synthetic CIFAR-10 in
  the standard file formats instead (the numbers then mean nothing; every command still runs).
- ``$DDL_DATA`` is set to an empty folder: a README command that forgets ``--data-dir`` fails
  here as it fails for a new user (whose ``~/.cache/ddl/data`` is empty), instead of being
  rescued by the environment.
- ``ddl ...`` runs in this process through ``ddl.cli.main`` (the console script's entry point;
  its existence is checked), one torch thread, timed in CPU seconds; the Python blocks run in
  one namespace, in order, as a reader pasting them into one interpreter.
- The two set-up lines at the top are the CI itself (``.ci/run``); they are checked to be what
  ``.ci/run`` runs, and the ``ddl demo`` that ends the first one runs here.
- Commands that take minutes to hours run in the short form listed in ``SHORT_FORMS``: the
  README's command as written plus options that shrink it (``--dry-run``, fewer images, steps or
  queries; argparse keeps the last value of a repeated option), so the same parser and code path
  run. ``SHORT_FORMS`` is keyed by the exact command: a key that no longer matches a README
  command fails, and a command run in full that takes more than ``FULL_RUN_LIMIT_S`` fails with
  the advice to add a short form. Nothing is skipped.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import shutil
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: CI has /work/shared beside the clone /work/main.
SHARED = Path(__file__).resolve().parents[2] / "shared"

#: README command (as written, whitespace collapsed) → options appended in CI, and why.
SHORT_FORMS = {
    "ddl train --dataset mnist --model convnet --epochs 1 --data-dir ../shared/data":
        ("--n-train 1000 --n-test 500", "an epoch on 60,000 images: minutes"),
    "ddl attack --checkpoint runs/train/convnet-mnist.pt --dataset mnist --data-dir ../shared/data "
    "--attack fgsm --eps 0.1 --out runs/adv.pt":
        ("--n-images 500", "FGSM on 10,000 images through the ConvNet: half a minute"),
    "ddl robustness --dataset mnist --zoo convnet --defence tuned --eps 0.1 0.2 0.3 --n-images 50 --cascade "
    "--pgd-steps 20 --apgd-iter 20 --square-queries 200 --data-dir ../shared/data --out runs/robustness":
        ("--n-images 2 --pgd-steps 1 --apgd-iter 1 --square-queries 1", "seven attacks on 50 images: minutes"),
    "ddl reproduce --preset paper --data-dir ../shared/data": ("--dry-run", "hours"),
    "ddl reproduce --preset quick --workers 2 --run-dir runs/quick-ray":
        ("--dry-run", "tests/test_reproduce.py runs it in full and compares its files with the serial run's"),
    "ddl robustness --dataset mnist --zoo all --defence tuned --eps 0.1 0.2 0.3 --n-images 1000 --cascade "
    "--pgd-steps 20 --apgd-iter 20 --square-queries 200 --data-dir ../shared/data --out runs/robustness-zoo "
    "--workers 2":
        ("--n-images 2 --pgd-steps 1 --apgd-iter 1 --square-queries 1", "five models on 1,000 images: hours"),
    "ddl tune --datasets mnist cifar10 --data-dir ../shared/data":
        ("--dry-run", "36 trials of a dictionary fit and adaptive attacks per data set: about an hour each"),
    "ddl reproduce --preset tuned --data-dir ../shared/data": ("--dry-run", "hours"),
    "ddl reproduce --preset tuned --tuned-defence runs/tune/tuned_defence.json --data-dir ../shared/data":
        ("--dry-run", "hours; reads the file `ddl tune` writes, which its dry run does not: the test "
                      "puts the tuned defence shipped with ddl there (what `ddl tune` wrote on the "
                      "maintainers' machine)"),
    "ddl train --dataset cifar10 --model resnet --defence tuned --init-zoo --epochs 3 --data-dir ../shared/data":
        ("--epochs 1 --n-train 32 --n-test 32", "three epochs of 50,000 reconstructed images: an hour"),
    "ddl robustness --dataset mnist --zoo convnet --defence median:3 --attacks pgd:oblivious pgd:bpda square "
    "--eps 0.1 --data-dir ../shared/data --out runs/rob-median":
        ("--n-images 2 --pgd-steps 1 --square-queries 1", "200 images: minutes"),
    "ddl robustness --dataset mnist --zoo convnet --defence tuned --eps 0.1 0.2 0.3 --n-images 50 "
    "--pgd-steps 20 --apgd-iter 20 --square-queries 200 --attacks pgd:oblivious pgd:bpda pgd:soft apgd-ce:soft "
    "square --data-dir ../shared/data --out runs/rob":
        ("--n-images 2 --pgd-steps 1 --apgd-iter 1 --square-queries 1", "minutes"),
}
#: A command run in full taking longer than this (CPU seconds, one thread) needs a short form.
FULL_RUN_LIMIT_S = 40
#: A time quoted in README may be this many times off the measured one, either way (machines differ).
TIME_FACTOR = 3


@dataclass
class Step:
    line: int               # README line where the command or block starts
    kind: str               # "sh" or "python"
    text: str               # as written (sh: one command, continuation lines joined, no comment)
    comment: str = ""       # sh: the command's trailing comment
    appended: str = ""      # the short form's options, "" when run in full
    status: int | None = None
    output: str = ""
    cpu_s: float = 0.0

    def where(self) -> str:
        first = self.text.splitlines()[0] + (" ..." if "\n" in self.text.strip() else "")
        return f"README.md:{self.line}: {first}" + (f" [CI adds: {self.appended}]" if self.appended else "")


# --- reading README ----------------------------------------------------------------------------
def fenced_blocks(text: str) -> list[tuple[int, str, str]]:
    """(line of the opening fence, language, body) of every fenced block."""
    blocks = []
    for m in re.finditer(r"^```(\S*)[ \t]*\n(.*?)^```[ \t]*$", text, re.M | re.S):
        blocks.append((text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2)))
    return blocks


def sh_commands(line: int, body: str) -> list[tuple[int, str, str]]:
    """(README line, command, trailing comment) of each command of a sh block; a line ending in
    a backslash continues on the next."""
    out, parts, start = [], [], None
    for i, raw in enumerate(body.splitlines(), start=line + 1):
        if not raw.strip() and not parts:
            continue
        start = start or i
        parts.append(raw.rstrip())
        if raw.rstrip().endswith("\\"):
            continue
        joined = " ".join(p.rstrip("\\").strip() for p in parts)
        lexer = shlex.shlex(joined, posix=True, punctuation_chars=False)
        lexer.whitespace_split, lexer.commenters = True, "#"
        words = list(lexer)
        comment = joined.split(" #", 1)[1].strip() if " #" in joined else ""
        out.append((start, shlex.join(words), comment))
        parts, start = [], None
    return out


def readme_steps(text: str) -> tuple[list[str], list[Step]]:
    """The set-up lines (first sh block) and the steps to run, in README order."""
    blocks = fenced_blocks(text)
    bad = [(n, lang) for n, lang, _ in blocks if lang not in ("sh", "python", "")]
    assert not bad, f"README blocks in a language this test does not run (write ```sh or ```python): {bad}"
    runnable = [b for b in blocks if b[1] in ("sh", "python")]
    setup_line, _, setup_body = runnable[0]
    setup = [ln.strip() for ln in setup_body.splitlines() if ln.strip()]
    steps = [Step(setup_line, "sh", "ddl demo", comment="the end of the first set-up line")]
    for n, lang, body in runnable[1:]:
        if lang == "python":
            steps.append(Step(n, "python", body))
        else:
            steps.extend(Step(i, "sh", cmd, comment) for i, cmd, comment in sh_commands(n, body))
    return setup, steps


# --- running -----------------------------------------------------------------------------------
def _run_step(step: Step, namespace: dict) -> None:
    from ddl.cli import main

    buf = io.StringIO()
    t = time.process_time()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            if step.kind == "python":
                # padded so that a traceback names the README's own line numbers
                exec(compile("\n" * step.line + step.text, str(README), "exec"), namespace)
                step.status = 0
            else:
                words = shlex.split(step.text) + shlex.split(step.appended)
                assert words[0] == "ddl", f"README.md:{step.line}: only `ddl ...` commands run here: {step.text}"
                step.status = main(words[1:])
        except SystemExit as e:  # argparse: --help, or a usage error
            step.status = e.code if isinstance(e.code, int) else 1
        except Exception:  # noqa: BLE001 - a README block that raises is a failure to report, with its traceback
            step.status = 1
            traceback.print_exc(file=buf)
    step.cpu_s = time.process_time() - t
    step.output = buf.getvalue()


def _data_folder(tmp: Path) -> Path:
    """tmp/shared: a link to the real shared/ folder, or the bundled MNIST sample and a synthetic
    CIFAR-10 written in the standard formats where the real data sets are absent."""
    shared = tmp / "shared"
    if (SHARED / "data" / "mnist").is_dir() and (SHARED / "data" / "cifar-10-batches-py").is_dir():
        shared.symlink_to(SHARED, target_is_directory=True)
        return shared
    _write_sample_data(shared / "data")
    return shared


def _write_sample_data(root: Path) -> None:
    import gzip
    import pickle
    import struct

    import numpy as np

    from ddl.data import load_sample
    from ddl.data.synthetic import make_blobs_images

    def idx(path: Path, a) -> None:
        header = struct.pack(">I", 0x0800 | a.ndim) + struct.pack(f">{a.ndim}I", *a.shape)
        path.write_bytes(gzip.compress(header + a.astype(np.uint8).tobytes()))

    (root / "mnist").mkdir(parents=True)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x, y = load_sample(split)
        idx(root / "mnist" / f"{prefix}-images-idx3-ubyte.gz", (x[:, 0] * 255).round().numpy())
        idx(root / "mnist" / f"{prefix}-labels-idx1-ubyte.gz", y.numpy())
    cifar = root / "cifar-10-batches-py"
    cifar.mkdir()
    for name, n, seed in [(f"data_batch_{i}", 240, i) for i in range(1, 6)] + [("test_batch", 200, 0)]:
        x, y = make_blobs_images(n, shape=(3, 32, 32), seed=seed)
        batch = {b"data": (x.reshape(n, -1) * 255).round().numpy().astype(np.uint8), b"labels": y.tolist()}
        (cifar / name).write_bytes(pickle.dumps(batch))
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    (cifar / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}))


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory) -> list[Step]:
    """Every step of README, run once, in order (later steps read what earlier ones wrote)."""
    import torch

    from ddl.experiments.config import TUNED_FILE, packaged_tuned_file

    tmp = tmp_path_factory.mktemp("readme")
    work = tmp / "work"
    work.mkdir()
    _data_folder(tmp)
    (tmp / "no-data").mkdir()
    _, steps = readme_steps(README.read_text())
    for step in steps:
        step.appended = SHORT_FORMS.get(step.text, ("", ""))[0]
    namespace: dict = {"__name__": "__readme__"}
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.setenv("DDL_DATA", str(tmp / "no-data"))
        torch.set_num_threads(1)
        try:
            for step in steps:
                if "--tuned-defence runs/tune/" + TUNED_FILE in step.text:  # see SHORT_FORMS
                    (work / "runs" / "tune").mkdir(parents=True, exist_ok=True)
                    shutil.copy(packaged_tuned_file(), work / "runs" / "tune" / TUNED_FILE)
                _run_step(step, namespace)
        finally:
            torch.set_num_threads(threads)
    return steps


# --- the tests ---------------------------------------------------------------------------------
def test_every_readme_block_runs_as_written(readme_run):
    failed = [f"{s.where()}\n  exit {s.status}; output ends:\n{s.output[-1500:]}" for s in readme_run if s.status != 0]
    assert not failed, "README commands that fail:\n" + "\n".join(failed)


def test_commands_run_in_full_are_fast_and_short_forms_are_current(readme_run):
    commands = {s.text for s in readme_run if s.kind == "sh"}
    stale = [k for k in SHORT_FORMS if k not in commands]
    assert not stale, f"SHORT_FORMS keys that match no README command (update them): {stale}"
    slow = [f"{s.where()} ({s.cpu_s:.0f} s)" for s in readme_run if not s.appended and s.cpu_s > FULL_RUN_LIMIT_S]
    assert not slow, f"README commands too slow for CI to run in full; add a short form to SHORT_FORMS: {slow}"


def test_the_setup_lines_are_what_ci_runs():
    setup, _ = readme_steps(README.read_text())
    ci = [ln.strip().replace(" --quiet", "") for ln in (ROOT / ".ci" / "run").read_text().splitlines()
          if ln.strip() and not ln.lstrip().startswith(("#", "set ", "cd ", "rm "))]
    assert len(setup) == 2, f"README's first block should be the two set-up lines; got {setup}"
    install, test = (line.split(" && ") for line in setup)
    assert test == ci, f"README's test line {test} is not what .ci/run runs: {ci}"
    assert install[:2] == ci[:2] and install[2] == re.sub(r' "\.\[[a-z,]+\]"', " .", ci[2]) \
        and install[3:] == [".venv/bin/ddl demo"], f"README's install line is not .ci/run's install + demo: {install}"
    assert Path(sys.executable).with_name("ddl").exists() or shutil.which("ddl"), "the `ddl` console script is not installed"


def _claimed_seconds(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?) ?(s|min|h)", text)
    assert m, f"cannot read a time from {text!r}"
    return float(m.group(1)) * {"s": 1, "min": 60, "h": 3600}[m.group(2)]


def _check_time(what: str, claimed: float, measured: float) -> str | None:
    if claimed / TIME_FACTOR <= measured <= claimed * TIME_FACTOR:
        return None
    return f"{what}: README says ~{claimed:.0f} s, measured {measured:.1f} s (CPU, one thread)"


def test_times_quoted_in_readme_are_the_measured_ones(readme_run):
    text = " ".join(README.read_text().split())
    by_text = {s.text: s for s in readme_run}
    checks = []
    m = re.search(r"runs the demo \([^)]*?~([\d.]+ ?(?:s|min)) on one CPU thread", text)
    assert m, "README no longer says how long the demo takes as 'runs the demo (... ~N s on one CPU thread'"
    checks.append(("ddl demo", _claimed_seconds(m.group(1)), by_text["ddl demo"].cpu_s))
    python = next(s for s in readme_run if s.kind == "python")
    m = re.search(r"Python \([^)]*?~([\d.]+ ?(?:s|min)) on one CPU thread\):", text)
    assert m, "README no longer says how long the Python example takes as 'Python (... ~N s on one CPU thread):'"
    checks.append((f"the Python block at README.md:{python.line}", _claimed_seconds(m.group(1)), python.cpu_s))
    for s in readme_run:  # a time in a command's comment: '~N s' / '~N min'
        m = re.search(r"~([\d.]+ ?(?:s|min|h))\b", s.comment)
        if m:
            assert not s.appended, f"{s.where()}: a time quoted for a command CI runs in a short form cannot be checked"
            checks.append((s.where(), _claimed_seconds(m.group(1)), s.cpu_s))
    assert len(checks) >= 3
    wrong = [w for w in (_check_time(*c) for c in checks) if w]
    assert not wrong, "times in README that are not what this machine measures:\n" + "\n".join(wrong)


def test_zoo_size_quoted_in_readme_is_what_zoo_list_prints(readme_run):
    listing = next(s for s in readme_run if s.text == "ddl zoo list").output
    printed = re.search(r"^(\d+) checkpoints, ([\d.]+) MB", listing, re.M)
    quoted = re.findall(r"`ddl zoo list`: (\S+) checkpoints, ([\d.]+) MB", README.read_text())
    assert printed and quoted, "README should quote `ddl zoo list`: N checkpoints, X MB"
    assert all(q == printed.groups() for q in quoted), f"README says {quoted}; `ddl zoo list` prints {printed.group(0)}"


def test_fgsm_table_is_the_committed_tuned_run():
    """README's 'FGSM, `tuned` defence' table: perturbed → denoised (clean after denoising), %, one
    decimal, of results/tuned/results.json."""
    text = README.read_text()
    head = re.search(r"^\| FGSM, `tuned` defence \| (.+) \|$", text, re.M)
    assert head, "README's FGSM table (header '| FGSM, `tuned` defence | ...') not found"
    models = [m.strip().lower() for m in head.group(1).split("|")]
    records = json.loads((ROOT / "results" / "tuned" / "results.json").read_text())["records"]
    acc = {(r["dataset"], r["model"]): r["accuracy"] for r in records if r["attack"] == "fgsm"}
    rows = re.findall(r"^\| (MNIST|CIFAR-10) perturbed → denoised \(clean after denoising\) \| (.+) \|$", text, re.M)
    assert len(rows) == 2
    for title, cells in rows:
        dataset = {"MNIST": "mnist", "CIFAR-10": "cifar10"}[title]
        for model, cell in zip(models, cells.split("|")):
            a = acc[dataset, model]
            want = f"{a['perturbed'] * 100:.1f} → {a['denoised'] * 100:.1f} ({a['denoised_clean'] * 100:.1f})"
            assert cell.strip() == want, f"README {title} {model}: {cell.strip()!r}; results/tuned has {want!r}"


def _tables_compute_seconds(preset: str) -> float:
    """Compute seconds of a committed run's tables (grid and sweep), each stage counted once: attack
    and denoising per record, the dictionary and the denoised clean test set once per data set."""
    results = json.loads((ROOT / "results" / preset / "results.json").read_text())
    total, shared = 0.0, {}
    for r in results["records"] + results["sweep"]:
        s = r.get("computed_seconds") or {}
        total += sum(s.get(k) or 0.0 for k in ("attack", "denoise"))
        for k in ("dictionary", "denoise_clean_test_set"):
            shared[r["dataset"], k] = s.get(k) or 0.0
    return total + sum(shared.values())


def test_compute_times_of_the_committed_runs_are_their_records():
    m = re.search(r"tables took ~([\d.]+ ?(?:s|min|h)) of compute for `paper` and ~([\d.]+ ?(?:s|min|h)) for `tuned`",
                  " ".join(README.read_text().split()))
    assert m, "README no longer quotes the committed runs' compute times as 'tables took ~N h of compute for `paper` and ~M min for `tuned`'"
    for preset, quoted in zip(("paper", "tuned"), m.groups()):
        recorded = _tables_compute_seconds(preset)
        assert abs(recorded / _claimed_seconds(quoted) - 1) < 0.25, \
            f"README says ~{quoted} for {preset}; results/{preset}/results.json records {recorded / 60:.0f} min"


def test_what_the_defence_is_worth_is_the_committed_robustness_record():
    """The opening paragraph's adaptive and oblivious numbers are those of
    results/robustness/mnist-convnet.json (issue 20, item 2)."""
    rec = json.loads((ROOT / "results" / "robustness" / "mnist-convnet.json").read_text())
    text = " ".join(README.read_text().split())
    para = text[text.index("**What the defence is worth.**"):text.index("Quote the adaptive worst case.")]
    n = rec["n_images"]
    assert f"{n:,} test images" in para
    for eps, word in (("0.1", "ε = 0.1"), ("0.2", "ε = 0.2"), ("0.3", "ε = 0.3")):
        lo, hi = rec["accuracy_ci"]["worst_case"][eps]
        assert f"{100 * rec['worst_case'][eps]:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}]" in para, eps
        assert word in para
    oblivious = " / ".join(f"{100 * rec['attacks']['pgd:oblivious'][e]:.1f}" for e in ("0.1", "0.2", "0.3"))
    assert oblivious in para, oblivious


def test_adaptive_table_is_the_committed_robustness_records():
    """README's adaptive table is what tools/robustness_readme_table.py makes of
    results/robustness/*.json (each cell: oblivious → worst case [interval] n=images)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("robustness_readme_table",
                                                  ROOT / "tools" / "robustness_readme_table.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    text = README.read_text()
    a, b = "<!-- robustness-table -->", "<!-- /robustness-table -->"
    shown = text[text.index(a) + len(a):text.index(b)].strip()
    assert shown == tool.table(), "README's adaptive table is stale: run tools/robustness_readme_table.py --write"
    rec = json.loads((ROOT / "results" / "robustness" / "mnist-convnet.json").read_text())
    lo, hi = rec["accuracy_ci"]["worst_case"]["0.2"]          # one cell by hand from the record
    assert (f"| MNIST ε = 0.2 | " in shown and f"**{100 * rec['worst_case']['0.2']:.1f}** "
            f"[{100 * lo:.1f}, {100 * hi:.1f}] n={rec['n_images']}" in shown)
