"""The ``ddl`` command: argparse subcommands → config objects → pipeline / library calls. No maths.

    ddl demo                         the whole defence on the bundled MNIST sample, a minute or two
    ddl train    --dataset mnist --model convnet --epochs 1 --data-dir DIR
    ddl attack   --checkpoint M.pt --dataset mnist --attack fgsm --eps 0.1 --out adv.pt
    ddl denoise  --input adv.pt --fit-dataset mnist --out den.pt   (or --dictionary den.pt)
    ddl evaluate --checkpoint M.pt --dataset mnist [--input den.pt]
    ddl reproduce --preset paper --data-dir DIR     the paper's tables and figures → runs/paper
    ddl tune     --datasets mnist --data-dir DIR    choose the defence → runs/tune/tuned_defence.json
    ddl report   RUN_DIR
    ddl zoo list
    ddl download mnist --data-dir DIR

A mistake of the user (a bad option, an unreadable file, a missing data set) is reported as one
line, ``ddl <command>: error: <what, where, how to fix>``, with exit status 2; Ctrl-C prints one
line and exits 130; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from fractions import Fraction
from pathlib import Path

from ddl._parallel import add_engine_arguments
from ddl._validate import BadFileError, check_int_pair, close_match
from ddl.experiments.config import REPRODUCE_PRESET_NAMES, TUNED_FILE
from ddl.constants import (ATTACK_NAMES, DATASET_TITLES, DATASETS, MODEL_NAMES, PAPER_FGSM_EPS, PAPER_JSMA,
                           ZOO_VARIANTS)
from ddl.errors import DDLError

#: What ``main`` reports as one line (exit 2): ddl's user-facing errors, the ValueErrors with
#: which every ddl function rejects a bad value, and the OS's word on files and folders.
USER_ERRORS = (DDLError, ValueError, OSError)
#: Exit status of a user error (argparse's, too) and of an interrupted command.
EXIT_USAGE, EXIT_INTERRUPTED = 2, 130


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print(f"ddl {args.command}: interrupted; re-run the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except USER_ERRORS as e:
        print(f"ddl {args.command}: error: {_one_line(e, args.command)}", file=sys.stderr)
        return EXIT_USAGE


def _one_line(e: BaseException, command: str = "") -> str:
    """The error's message on one line, without a leading ``ddl <command>: `` (the experiments
    layer names the command it serves, for its Python callers; the line already does)."""
    lines = [s.strip() for s in str(e).splitlines() if s.strip()]
    text = " ".join(lines) or type(e).__name__
    prefix = f"ddl {command}: "
    return text[len(prefix):] if command and text.startswith(prefix) else text


class UsageError(DDLError, ValueError):
    """A combination of options that cannot be honoured (never silently ignored)."""


# --- parser ------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``ddl attack: error: argument --eps: ...`` (exit 2)."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


class _Help(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default, unless the help already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (action.option_strings and "default" not in text and action.default is not None
                and action.default is not False and action.default is not argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


def _name(what: str, choices: tuple[str, ...]):
    """argparse type: one of ``choices``; a typo gets the close match suggested."""
    def parse(text: str) -> str:
        if text in choices:
            return text
        raise argparse.ArgumentTypeError(f"unknown {what} {text!r}{close_match(text, choices)}; "
                                         f"choose one of: {', '.join(choices)}")
    return parse


def _attack_name(text: str) -> str:
    """argparse type of ``ddl robustness --attacks``: an ``attack:threat`` name, checked before
    any work; a typo gets the close match (``unknown threat model 'bdpa' (did you mean 'bpda'?)``)."""
    from ddl.robustness import parse_attack

    try:
        parse_attack(text, where="")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).rstrip(".")) from None
    return text


def _int_range(low: int, high: int):
    def parse(text: str) -> int:
        value = _int_from(low)(text)
        if value > high:
            raise argparse.ArgumentTypeError(f"must be an int in [{low}, {high}]; got {value}")
        return value
    return parse


def _int_from(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an int >= {low}; got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an int >= {low}; got {value}")
        return value
    return parse


def _number(text: str) -> float:
    """A float, or a fraction such as ``8/255``."""
    try:
        value = float(Fraction(text)) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"must be a number (e.g. 0.1 or 8/255); got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number; got {text!r}")
    return value


def _in_unit_interval(low_open: bool):
    def parse(text: str) -> float:
        value = _number(text)
        if value > 1 or value < 0 or (low_open and value == 0):
            rule = "(0, 1]" if low_open else "[0, 1]"
            raise argparse.ArgumentTypeError(f"must be in {rule} (images are in [0, 1]; write 8/255 "
                                             f"for 8 grey levels); got {text}")
        return value
    return parse


def _points(text: str) -> float:
    value = _number(text)
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be a number of percentage points in [0, 100]; got {text}")
    return value


def _positive(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0; got {text}")
    return value


_DATASET_HELP = ", ".join(f"{d} ({DATASET_TITLES[d]})" for d in DATASETS)


def build_parser() -> argparse.ArgumentParser:
    from ddl import __version__

    p = _Parser(prog="ddl", formatter_class=_Help,
                description="Denoising dictionary learning against adversarial perturbations "
                            "(Mitro, Bridge, Prestwich 2018): train, attack, denoise, evaluate, reproduce.",
                epilog="Run `ddl COMMAND --help` for a command's options and defaults. A user error is "
                       "one line `ddl COMMAND: error: ...` and exit status 2.")
    p.add_argument("--version", action="version", version=f"ddl {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name, **kw):
        return sub.add_parser(name, formatter_class=_Help, **kw)

    def common(sp, data=True, cpu_only=False):
        sp.add_argument("--device", default="cpu",
                        help="cpu only: the adaptive suite runs on the CPU (more cores: --workers)"
                        if cpu_only else "cpu, cuda or cuda:N")
        sp.add_argument("--seed", type=int, default=0, help="seed of torch's generator and of the attacks")
        sp.add_argument("--threads", type=_int_from(1), default=None,
                        help="torch CPU threads (default: robustness, attack, denoise and evaluate "
                             "take the cores the load average leaves free, at least 1, as torch's "
                             "threads spin against busy neighbours; commands that train: torch's "
                             "choice, so a cached model does not depend on the load)")
        sp.add_argument("--omp-kernel", choices=("auto", "native", "torch"), default=None,
                        help="CPU OMP kernel: the compiled C one, the torch one, or auto (C where it "
                             "builds, else torch, with a notice); default: $DDL_OMP_KERNEL, else auto")
        if data:
            sp.add_argument("--data-dir", default=None,
                            help="folder holding mnist/ and cifar-10-batches-py/ (default: $DDL_DATA, "
                                 "else ~/.cache/ddl/data)")

    def quiet(sp):
        sp.add_argument("--quiet", "-q", action="store_true", help="print only the results, no progress")

    def dataset(sp, flag="--dataset", **kw):
        sp.add_argument(flag, choices=DATASETS, help=f"data set: {_DATASET_HELP}", **kw)

    sp = add("demo", help="train, attack, learn a dictionary, denoise on the bundled MNIST sample")
    sp.add_argument("--run-dir", default="runs/demo", help="results and cache folder")
    sp.add_argument("--preset", default="demo", choices=["demo", "smoke"],
                    help="demo: the MNIST sample, ~1-2 minutes; smoke: tiny synthetic images, seconds")
    common(sp, data=False)
    quiet(sp)
    sp.set_defaults(func=cmd_demo)

    sp = add("train", help="train a classifier and save a checkpoint (resumes if interrupted)")
    dataset(sp, required=True)
    sp.add_argument("--model", required=True, nargs="+", type=_name("model", MODEL_NAMES),
                    metavar="{" + ",".join(MODEL_NAMES) + "}",
                    help="architecture (DESIGN.md §4); several: one training each, the same options and "
                         "seed, so each checkpoint is the one --model alone gives at the same threads "
                         "(with --workers or --ray-address, each a Ray task of one thread)")
    sp.add_argument("--epochs", type=_int_from(1), default=1, help="training epochs")
    sp.add_argument("--batch-size", type=_int_from(1), default=32, help="images per step")
    sp.add_argument("--lr", type=_positive, default=1e-3, help="Adam learning rate")
    sp.add_argument("--out", default=None,
                    help="checkpoint path, one --model only (default: runs/train/MODEL-DATASET[-VARIANT].pt)")
    sp.add_argument("--defence", default="none",
                    help="denoiser-aware training: none, tuned or paper (the zoo's fitted defence for "
                         "--dataset) or a file written by DictionaryDenoiser.save; every augmented "
                         "training batch is reconstructed by it before the model sees it")
    sp.add_argument("--init-zoo", action="store_true",
                    help="fine-tune the standard zoo checkpoint of --model/--dataset instead of "
                         "starting from random weights")
    sp.add_argument("--n-train", type=_int_from(1), default=None,
                    help="train on the first N training images (default: all)")
    sp.add_argument("--n-test", type=_int_from(1), default=None,
                    help="report the accuracy on the first N test images (default: all)")
    adv = sp.add_argument_group("adversarial training (ddl.models.train.AdversarialTraining)")
    adv.add_argument("--adversarial", default=None, type=_name("adversarial training method", ADVERSARIAL_METHODS),
                     metavar="{" + ",".join(ADVERSARIAL_METHODS) + "}",
                     help="train on adversarial examples: pgd (Madry et al.: random start, --steps steps), "
                          "fast (FGSM from a random start, step 1.25 eps, with the catastrophic-overfitting "
                          "guard) or trades (CE + beta KL); with --defence the adversary attacks through it (default: none, "
                          "standard training)")
    adv.add_argument("--eps", type=_in_unit_interval(low_open=False), default=None,
                     help="L-inf budget in [0, 1] of --adversarial, e.g. 0.3 or 8/255 (no default: required with it)")
    adv.add_argument("--steps", type=_int_from(1), default=None,
                     help="inner PGD steps of pgd and trades (default: 10; fast has one)")
    adv.add_argument("--step-size", type=_positive, default=None,
                     help="inner step (default: 2.5 eps/steps for pgd and trades, 1.25 eps for fast)")
    adv.add_argument("--beta", type=_positive, default=None, help="TRADES' weight of the KL term (default: 6)")
    adv.add_argument("--eps-warmup-epochs", type=_int_from(0), default=None,
                     help="ramp eps linearly over the first N epochs (default: 0, the full eps from the start)")
    adv.add_argument("--threat", default=None, type=_name("threat model", TRAINING_THREATS),
                     metavar="{" + ",".join(TRAINING_THREATS) + "}",
                     help="how the adversary differentiates through --defence (ddl.robustness): bpda "
                          "(identity backward, the cheapest) or soft (surrogate of OMP's atom choice) "
                          "or exact (default: bpda)")
    adv.add_argument("--guard-drop", type=_in_unit_interval(low_open=True), default=None,
                     help="fast: roll back and stop when the guard's PGD accuracy falls by more than this "
                          "fraction of its best (default: 0.5)")
    add_engine_arguments(sp)
    common(sp)
    quiet(sp)
    sp.set_defaults(func=cmd_train)

    sp = add("attack", help="attack a model on the test set and save the adversarial images")
    _model_source(sp)
    dataset(sp, required=True)
    sp.add_argument("--attack", default="fgsm", choices=ATTACK_NAMES, help="the attack")
    sp.add_argument("--eps", type=_in_unit_interval(low_open=False), default=None,
                    help="FGSM/PGD L-inf budget in [0, 1], e.g. 0.1 or 8/255 (default: "
                         + ", ".join(f"{DATASET_TITLES[d]} {_eps_text(d)}" for d in DATASETS) + ")")
    sp.add_argument("--steps", type=_int_from(1), default=None, help="PGD steps (default: 10)")
    sp.add_argument("--step-size", type=_positive, default=None, help="PGD step (default: eps/4)")
    sp.add_argument("--theta", type=_in_unit_interval(low_open=True), default=None,
                    help=f"JSMA change per feature (default: {PAPER_JSMA['theta']})")
    sp.add_argument("--gamma", type=_in_unit_interval(low_open=True), default=None,
                    help=f"JSMA largest fraction of features changed (default: {PAPER_JSMA['gamma']})")
    sp.add_argument("--n-images", type=_int_from(1), default=None,
                    help="attack the first N test images (default: all)")
    sp.add_argument("--out", required=True, help="output file (.pt with x_adv, y)")
    common(sp)
    quiet(sp)
    sp.set_defaults(func=cmd_attack)

    sp = add("denoise", help="denoise saved images with a dictionary (learned and saved if needed)")
    sp.add_argument("--input", required=True, help=".pt file from `ddl attack` (key x_adv) or with key x")
    sp.add_argument("--dictionary", default=None,
                    help="saved DictionaryDenoiser: used if it exists, else learned and saved there "
                         "(default: none; the learned dictionary is not kept)")
    sp.add_argument("--fit-dataset", choices=DATASETS, default=None,
                    help="learn the dictionary from this data set's clean training images (default: none; "
                         "needed when --dictionary does not exist; with an existing --dictionary of other "
                         "images, an error unless --refit)")
    sp.add_argument("--refit", action="store_true",
                    help="learn the dictionary again (from --fit-dataset) and overwrite --dictionary")
    tuned = "(default: the tuned defence of --fit-dataset, see reference/tuned_defence.json: {})"
    sp.add_argument("--patch-size", type=_int_from(1), default=None, help="patch side in pixels "
                    + tuned.format(", ".join(f"{DATASET_TITLES[d]} {_tuned(d, 'patch_size')}" for d in DATASETS)))
    sp.add_argument("--n-components", type=_int_from(1), default=None, help="atoms in the dictionary "
                    + tuned.format(", ".join(f"{DATASET_TITLES[d]} {_tuned(d, 'n_components')}" for d in DATASETS)))
    sp.add_argument("--n-nonzero-coefs", "-k", type=_int_from(1), default=None, help="atoms per patch (OMP) "
                    + tuned.format(", ".join(f"{DATASET_TITLES[d]} {_tuned(d, 'n_nonzero_coefs')}" for d in DATASETS)))
    sp.add_argument("--remove-mean", action=argparse.BooleanOptionalAction, default=None,
                    help="code each patch without its mean " + tuned.format(
                        ", ".join(f"{DATASET_TITLES[d]} {_tuned(d, 'remove_mean')}" for d in DATASETS)))
    sp.add_argument("--max-patches", type=_int_from(1), default=None, help="training patches sampled "
                    + tuned.format(", ".join(f"{DATASET_TITLES[d]} {_tuned(d, 'max_patches')}" for d in DATASETS)))
    sp.add_argument("--out", required=True, help="output file (.pt with x)")
    common(sp)
    quiet(sp)
    sp.set_defaults(func=cmd_denoise)

    sp = add("evaluate", help="accuracy of a model on the test set or on saved images")
    _model_source(sp)
    dataset(sp, required=True)
    sp.add_argument("--input", default=None,
                    help=".pt file with x or x_adv (labels from its y, else the test set) (default: the test set)")
    common(sp)
    sp.set_defaults(func=cmd_evaluate)

    sp = add("reproduce", help="the paper's grid, ε sweep, figures and report in one run folder")
    sp.add_argument("--preset", default="quick", choices=REPRODUCE_PRESET_NAMES,
                    help="quick: bundled sample, ~2 minutes; paper, noisy-dictionary, tuned: real data "
                         "(--data-dir), hours on a CPU; denoised-training: tuned on the zoo's denoised "
                         "variants (classifiers fine-tuned behind the tuned defence)")
    sp.add_argument("--run-dir", default=None, help="results and cache folder (default: runs/PRESET)")
    sp.add_argument("--datasets", nargs="+", default=None, choices=DATASETS,
                    help="only these data sets (default: the preset's)")
    sp.add_argument("--models", nargs="+", default=None, type=_name("model", MODEL_NAMES),
                    metavar="MODEL", help=f"only these models, of {', '.join(MODEL_NAMES)} (default: the preset's)")
    sp.add_argument("--tuned-defence", default=None,
                    help=f"with --preset tuned: a {TUNED_FILE} written by `ddl tune` (default: the one "
                         f"shipped with ddl)")
    sp.add_argument("--no-figures", action="store_true", help="skip the figures")
    sp.add_argument("--no-sweep", action="store_true", help="skip the FGSM ε sweep")
    sp.add_argument("--refit-dictionary", action="store_true",
                    help="fit the dictionaries again instead of using the zoo's shipped, SHA-256-"
                         "checked ones (a re-fit on another machine or OMP kernel is another "
                         "dictionary: the committed results/ are reproduced without this)")
    sp.add_argument("--strict", action="store_true",
                    help="stop on a cache entry that fails verification instead of recomputing it")
    sp.add_argument("--dry-run", action="store_true",
                    help="load and check the data, the zoo models and dictionaries and the options, "
                         "print what the run would do, and exit without computing or writing anything")
    add_engine_arguments(sp)
    common(sp)
    quiet(sp)
    sp.set_defaults(func=cmd_reproduce)

    sp = add("tune", help="choose the defence: Optuna study of clean vs worst-case adaptive accuracy "
                          "on a validation split of the training set, its Pareto front and one point")
    sp.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS, help="data sets to tune")
    sp.add_argument("--trials", type=_int_from(1), default=36,
                    help="complete trials per data set (a resumed study counts those it holds)")
    sp.add_argument("--eps", nargs="+", type=_in_unit_interval(low_open=True), default=None,
                    help="ε of the robust objective, one per --datasets entry (default: MNIST 0.2, CIFAR-10 4/255)")
    sp.add_argument("--n-val", type=_int_from(1), default=1000,
                    help="validation images (the last training images): the clean objective")
    sp.add_argument("--n-robust", type=_int_from(1), default=500,
                    help="the first N validation images: the worst-case adaptive objective")
    sp.add_argument("--model", default=None, type=_name("model", MODEL_NAMES),
                    metavar="{" + ",".join(MODEL_NAMES) + "}",
                    help="zoo classifier behind the defence (default: the one the shipped tuned defence "
                         "was chosen with: MNIST mlp, CIFAR-10 resnet)")
    sp.add_argument("--attacks", nargs="+", default=None, type=_attack_name,
                    help="attacks of the robust objective, run as a cascade (default: pgd:oblivious "
                         "pgd:bpda pgd:soft apgd-ce:soft; square is added when the chosen point is checked)")
    sp.add_argument("--pgd-steps", type=_int_from(1), default=20, help="PGD steps")
    sp.add_argument("--apgd-iter", type=_int_from(1), default=20, help="APGD iterations")
    sp.add_argument("--square-queries", type=_int_from(1), default=200,
                    help="Square queries when the chosen point and the shipped defence are checked")
    sp.add_argument("--max-patches", type=_int_from(1), default=100_000,
                    help="patches each dictionary learns from (that of the shipped tuned defence)")
    sp.add_argument("--population", type=_int_from(2), default=12,
                    help="NSGA-II population: trials asked, and run in parallel, per generation")
    sp.add_argument("--no-warm-start", action="store_true",
                    help="do not make the shipped tuned defence the first trial of a new study")
    sp.add_argument("--max-clean-drop", type=_points, default=None, metavar="POINTS",
                    help="choose, among the front's settings whose clean accuracy is at most POINTS below "
                         "the front's best, the most robust (100: the most robust of the front); default: "
                         "clean accuracy within the 95 %% interval of the best. Re-chooses from the stored "
                         "trials; a run checks the new choice with Square, --summarise (which evaluates "
                         "nothing) leaves it unchecked")
    sp.add_argument("--run-dir", default="runs/tune",
                    help=f"writes RUN_DIR/study.db (the resumable Optuna study), tune-DATASET.json, "
                         f"front-DATASET.png and {TUNED_FILE} there")
    sp.add_argument("--dry-run", action="store_true",
                    help="load and check the data, the classifier and the options, print the plan, and "
                         "exit without computing or writing anything")
    sp.add_argument("--summarise", action="store_true",
                    help="write the summary and the figure of the trials the study in --run-dir holds "
                         "(an interrupted or unfinished one too), evaluating nothing")
    add_engine_arguments(sp)
    common(sp, cpu_only=True)
    quiet(sp)
    sp.set_defaults(func=cmd_tune)

    sp = add("robustness", help="adaptive attacks through the defence: worst case per image, flags")
    sp.add_argument("--dataset", required=True, choices=DATASETS, help=f"data set: {_DATASET_HELP}")
    src = sp.add_mutually_exclusive_group(required=True)
    src.add_argument("--zoo", metavar="MODEL", nargs="+", type=_name("zoo model", MODEL_NAMES + ("all",)),
                     help=f"zoo classifiers: {', '.join(MODEL_NAMES)} or all (see `ddl zoo list`); with "
                          "several models or defences each (model, defence) gets its own folder "
                          "OUT/DATASET-MODEL[-DEFENCE]")
    src.add_argument("--checkpoint", help="a checkpoint written by `ddl train`")
    _variant(sp)
    sp.add_argument("--defence", default=["tuned"], nargs="+",
                    help="one or more of: none, paper, tuned (the presets' dictionaries fitted on the clean training "
                         "set, shipped in the zoo), a baseline purifier NAME:VALUE (bits:4, median:3, "
                         "gauss:1.0, jpeg:75, tv:0.1, wavelet:0.05; use --attacks without :soft, and "
                         "without :exact for bits, jpeg, tv, wavelet) or a file written by "
                         "DictionaryDenoiser.save")
    sp.add_argument("--eps", nargs="+", type=_in_unit_interval(low_open=True), required=True,
                    help="L-inf radii in (0, 1], increasing (MNIST: 0.1 0.2 0.3; CIFAR-10: 2/255 4/255 8/255)")
    sp.add_argument("--n-images", type=_int_from(1), default=200, help="the first N test images")
    sp.add_argument("--attacks", nargs="+", default=None, type=_attack_name,
                    help="attack:threat names, e.g. pgd:soft apgd-ce:bpda square (default: "
                         "pgd:oblivious pgd:bpda pgd:exact pgd:soft apgd-ce:soft apgd-t:soft square)")
    sp.add_argument("--pgd-steps", type=_int_from(1), default=50, help="PGD steps per restart")
    sp.add_argument("--pgd-restarts", type=_int_from(1), default=1, help="PGD random restarts")
    sp.add_argument("--apgd-iter", type=_int_from(1), default=100, help="APGD/FAB iterations (AutoAttack: 100)")
    sp.add_argument("--square-queries", type=_int_from(1), default=1000,
                    help="Square attack queries (AutoAttack's standard: 5000)")
    sp.add_argument("--n-target-classes", type=_int_range(1, 9), default=None,
                    help="target classes of APGD-T and FAB-T, the most likely wrong ones first "
                         "(AutoAttack's standard: 9; default: 3)")
    sp.add_argument("--cascade", action="store_true",
                    help="AutoAttack's scheme: each attack runs only on the images the earlier ones "
                         "left standing (same worst case, much cheaper; per-attack columns become "
                         "cumulative)")
    sp.add_argument("--out", required=True, help="folder for robustness.json and its cache")
    add_engine_arguments(sp)
    common(sp, cpu_only=True)
    quiet(sp)
    sp.set_defaults(func=cmd_robustness)

    sp = add("report", help="write report.md and report.html from RUN_DIR/results.json")
    sp.add_argument("run_dir", help="a folder written by `ddl reproduce`")
    sp.add_argument("--figures", action="store_true",
                    help="also redraw the figures from the folder's saved arrays (nothing is recomputed)")
    sp.add_argument("--robustness", metavar="DIR",
                    help="robustness records (e.g. results/robustness): the first table puts their adaptive "
                         "worst case beside the oblivious number where they are of the run's defence "
                         "(default: none, only the run's own robustness records)")
    sp.add_argument("--robust-training", metavar="DIR",
                    help="a folder of tools/robust_training_table.py summaries (e.g. results/robust-training, "
                         "its subfolders included): adds the section 'Adversarial training with and without the "
                         "dictionary' (default: none)")
    sp.set_defaults(func=cmd_report)

    sp = add("zoo", help="the trained checkpoints shipped with ddl")
    sp.add_argument("action", choices=["list"], help="list: every checkpoint with its accuracy")
    sp.set_defaults(func=cmd_zoo)

    sp = add("download", help="download a data set (checksummed) into the data folder")
    sp.add_argument("dataset", choices=DATASETS, help=f"data set: {_DATASET_HELP}")
    sp.add_argument("--data-dir", default=None, help="data folder (default: $DDL_DATA, else ~/.cache/ddl/data)")
    sp.set_defaults(func=cmd_download)
    return p


def _eps_text(dataset: str) -> str:
    eps = PAPER_FGSM_EPS[dataset]
    k = eps * 255
    return f"{round(k)}/255" if dataset == "cifar10" and abs(k - round(k)) < 1e-9 else f"{eps:g}"


def _tuned(dataset: str, key: str):
    """A parameter of the shipped tuned defence, for the help text ("?" if the file is unreadable:
    the help must not fail; `ddl denoise` itself then reports the file)."""
    from ddl.experiments.config import load_tuned

    try:
        return getattr(load_tuned()[dataset], key)
    except (DDLError, KeyError):
        return "?"


def _model_source(sp):
    g = sp.add_mutually_exclusive_group(required=True)
    g.add_argument("--checkpoint", help="a checkpoint written by `ddl train`")
    g.add_argument("--zoo", metavar="MODEL", type=_name("zoo model", MODEL_NAMES),
                   help=f"a model from the zoo for --dataset: {', '.join(MODEL_NAMES)} (see `ddl zoo list`)")
    _variant(sp)


def _variant(sp):
    sp.add_argument("--variant", default=None, choices=ZOO_VARIANTS,
                    help="with --zoo: standard (trained on clean images) or denoised (fine-tuned on the "
                         "reconstructions of the tuned defence; use it behind that defence) "
                         "(default: standard)")


def _zoo_variant(args) -> str:
    """--variant, refused without --zoo (it would be silently ignored for a --checkpoint)."""
    if args.variant is not None and not getattr(args, "zoo", None):
        raise UsageError(f"--variant selects a zoo model; it cannot be used with --checkpoint "
                         f"(got --variant {args.variant})")
    return args.variant or "standard"


# --- helpers -----------------------------------------------------------------------------------
#: commands whose default thread count follows the load average (they train nothing, so the
#: thread count cannot change a model they cache; training commands keep torch's default)
_LOAD_AWARE_COMMANDS = ("robustness", "attack", "denoise", "evaluate")


def _suite_on_cpu(args) -> None:
    """The adaptive suite (``ddl robustness``, the robust objective of ``ddl tune``) runs its
    models, defences, attacks and per-image generators on the CPU: a GPU asked for was ignored
    (robustness: the record said "device cpu") or failed inside the first attack (tune)."""
    if args.device != "cpu":
        raise UsageError(f"--device: the adaptive suite runs on the CPU only (use --workers or "
                         f"--ray-address for more cores); got {args.device!r}")


def _setup(args):
    import torch

    device = getattr(args, "device", "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: torch sees no CUDA device here; use --device cpu")
    if not (device == "cpu" or device.startswith("cuda") or device == "mps"):
        raise UsageError(f"--device must be cpu, cuda or cuda:N; got {device!r}")
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    elif device == "cpu" and getattr(args, "command", None) in _LOAD_AWARE_COMMANDS:
        from ddl.sparse.threads import default_threads

        torch.set_num_threads(default_threads())
    from ddl import provenance

    provenance.pin()      # results record the code this run started with
    from ddl.sparse import _omp_native
    from ddl.sparse.kernel import KernelUnavailableError, get_omp_kernel, set_omp_kernel

    if getattr(args, "omp_kernel", None):
        try:
            set_omp_kernel(args.omp_kernel)
        except KernelUnavailableError as e:
            raise UsageError(f"--omp-kernel native: {str(e).split(': ', 1)[1]}") from None
    elif get_omp_kernel() == "native" and _omp_native.load() is None:   # from DDL_OMP_KERNEL
        raise UsageError(f"DDL_OMP_KERNEL=native: the native OMP kernel cannot be used here: "
                         f"{_omp_native.reason()}")
    torch.manual_seed(getattr(args, "seed", 0))


def _load_model(args):
    """The model of --checkpoint or --zoo, checked against --dataset (data set and input shape)."""
    from ddl.data import DATASETS as FACTS

    variant = _zoo_variant(args)
    if args.checkpoint:
        from ddl.models.checkpoint import load_checkpoint

        model, meta = load_checkpoint(args.checkpoint, device=args.device, where="", what="--checkpoint")
        trained_on = meta.get("dataset")
        if trained_on not in (None, args.dataset):
            raise UsageError(f"--checkpoint {args.checkpoint} was trained on {trained_on!r}, "
                             f"not on --dataset {args.dataset!r}")
        shape, want = tuple(meta["input_shape"]), FACTS[args.dataset]["shape"]
        if shape != tuple(want):
            raise UsageError(f"--checkpoint {args.checkpoint} takes images of shape {shape}; "
                             f"--dataset {args.dataset!r} images are {tuple(want)}")
        return model
    from ddl import zoo

    try:
        return zoo.load(args.zoo, args.dataset, variant=variant, device=args.device)
    except LookupError as e:  # no such (model, data set) in the zoo index
        raise UsageError(str(e)) from None


def _read_images(path: str, flag: str, keys: tuple[str, ...]):
    """(x, y or None) from a .pt file: x under the first of ``keys`` present, float (N, C, H, W) in [0, 1]."""
    import torch

    from ddl._validate import load_torch_file, require_keys

    blob = load_torch_file(path, where="", what=flag)
    require_keys("", flag, path, blob, keys, any_of=True)
    key = next(k for k in keys if k in blob)
    x, y = blob[key], blob.get("y")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim != 4 or len(x) == 0:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        dtype = f" {x.dtype}" if isinstance(x, torch.Tensor) else ""
        raise BadFileError(f"{flag} {path}: {key!r} must be float images of shape (N, C, H, W); got{dtype} {got}")
    _check_finite(flag, path, key, x)
    if float(x.min()) < 0 or float(x.max()) > 1:
        raise BadFileError(f"{flag} {path}: {key!r} must hold pixels in [0, 1]; got values in "
                           f"[{float(x.min()):.3g}, {float(x.max()):.3g}]")
    if y is not None and (not isinstance(y, torch.Tensor) or y.shape != (len(x),) or y.is_floating_point()):
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise BadFileError(f"{flag} {path}: 'y' must be {len(x)} integer labels; got {got}")
    return x, (None if y is None else y.long())


def _check_finite(flag: str, path: str, key: str, x) -> None:
    """NaN or infinite pixels are an error (a NaN passes every comparison with 0 and 1, and a model
    then predicts class 0 for it: "accuracy 100.00 %" on images that are not images)."""
    import torch

    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        n_nan = int(torch.isnan(x).sum())
        what = " and ".join(f"{n} {kind} value{'s' if n > 1 else ''}"
                            for n, kind in ((n_nan, "NaN"), (int(bad.sum()) - n_nan, "infinite")) if n)
        images = bad.flatten(1).any(1).nonzero()[:, 0]
        raise BadFileError(f"{flag} {path}: {key!r} must hold pixels in [0, 1]; got {what} in "
                           f"{len(images)} of {len(x)} images (the first: image {int(images[0])})")


def _check_images_fit(flag: str, path: str, x, shape, what: str) -> None:
    if tuple(x.shape[1:]) != tuple(shape):
        raise UsageError(f"{flag} {path} holds images of shape {tuple(x.shape[1:])}; {what} takes {tuple(shape)}")


def _check_output(flag: str, path: str | Path, *, folder: bool = False) -> None:
    """Refuse, before any work, an output that could not be written (read-only file system, no
    permission, a folder where a file is asked or a file on the way): ``ddl attack`` used to
    attack every image and only then fail to save them.

    The nearest existing folder of ``path`` is probed by creating and deleting a temporary file
    there, as the atomic write will (``os.access`` would be wrong for root and for read-only
    mounts); the missing folders below it are created by the write itself."""
    import os
    import tempfile

    from ddl._io import TEMP_SUFFIX, folder_error
    from ddl.errors import RunFolderError

    path = Path(path)
    if path.is_dir() and not folder:
        raise UsageError(f"{flag} {path} is a folder; give a file name in it")
    if path.exists() and not path.is_dir() and folder:
        raise UsageError(f"{flag} {path} is a file; give a folder")
    probe = path if folder else path.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{flag} {path}: {probe} is a file, not a folder")
    try:  # named like an atomic write's temp file, so a lock holder removes one left by a kill
        fd, tmp = tempfile.mkstemp(prefix=".ddl-write-check.", suffix=TEMP_SUFFIX, dir=probe)
    except OSError as exc:
        raise RunFolderError(f"{flag} {path}: {folder_error(exc, probe)}") from None
    os.close(fd)
    os.unlink(tmp)


def _bars(args) -> bool:
    """Progress bars: on a terminal, unless --quiet."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def _log(line: str) -> None:
    """One line per event (an epoch, a resume), flushed: readable in a log file, unlike a bar."""
    print(line, flush=True)


# --- commands ----------------------------------------------------------------------------------
def cmd_demo(args) -> int:
    from ddl.experiments import config, pipeline

    _setup(args)
    cfg = config.PRESETS[args.preset].replace(device=args.device)
    t = time.perf_counter()
    print(f"ddl demo: run folder {args.run_dir} (cached stages are reused)")
    results = pipeline.run_experiment(cfg, args.run_dir, progress=not args.quiet)
    if args.quiet:  # the results, without the stage lines (which print each table as it comes)
        for record in results["records"]:
            print(pipeline.format_record(record))
    print(_demo_adaptive_line(cfg, pipeline, Path(args.run_dir) / "cache"))
    print(f"done in {time.perf_counter() - t:.1f} s; results in {Path(args.run_dir) / 'results.json'}")
    return 0


#: the demo's adaptive check: a few images, a short PGD through the denoiser (seconds)
DEMO_ADAPTIVE = {"n_images": 20, "attacks": ("pgd:oblivious", "pgd:soft"), "budgets": {"pgd_steps": 10}}


def _demo_adaptive_line(cfg, pipeline, cache: Path) -> str:
    """One line that puts the demo's oblivious 'denoised' number in its place: the same defence
    under a short adaptive attack (PGD through the denoiser with OMP's soft surrogate) on the
    first test images."""
    from ddl.robustness._names import eps_key

    e = float(cfg.attacks[0].params["eps"])
    n = DEMO_ADAPTIVE["n_images"]
    rec = pipeline.run_robustness_cell(cfg, cache, n_images=n, eps=(e,),
                                       attacks=DEMO_ADAPTIVE["attacks"],
                                       budgets=DEMO_ADAPTIVE["budgets"], progress=False)
    k = eps_key(e)
    obl, worst = rec["attacks"]["pgd:oblivious"][k], rec["worst_case"][k]
    lo, hi = rec["accuracy_ci"]["worst_case"][k]
    return (f"adaptive check, first {n} test images, eps {e:g}: PGD on the bare model then denoised "
            f"(oblivious) {100 * obl:.0f} %; PGD through the denoiser "
            f"(adaptive, {DEMO_ADAPTIVE['budgets']['pgd_steps']} steps) worst case {100 * worst:.0f} % "
            f"[{100 * lo:.0f}, {100 * hi:.0f}]. Judge a defence by the adaptive number: `ddl robustness`.")


def cmd_train(args) -> int:
    _setup(args)
    models = list(dict.fromkeys(args.model))
    _adversarial_training(args)                     # option errors before any work
    variant = _training_variant(args)
    suffix = "" if variant == "standard" else f"-{variant}"
    if args.out and len(models) > 1:
        raise UsageError(f"--out names one checkpoint; with several --model ({' '.join(models)}) each is "
                         f"written to runs/train/MODEL-{args.dataset}{suffix}.pt")
    outs = {m: Path(args.out or f"runs/train/{m}-{args.dataset}{suffix}.pt") for m in models}
    for out in outs.values():
        _check_output("--out", out)
    inputs = _training_inputs(args)   # sizes and the defence against the data set: before any work
    if args.init_zoo:
        from ddl import zoo

        for m in models:
            try:
                inputs["zoo"][m] = zoo.load(m, args.dataset, device=args.device)  # SHA-256 checked here too
            except LookupError as e:
                raise UsageError(str(e)) from None
    # paths as the driver sees them: a Ray worker on another node does not run in this folder
    if args.data_dir is not None:
        args = argparse.Namespace(**{**vars(args), "data_dir": str(Path(args.data_dir).resolve())})
    items = [(m, str(outs[m].resolve()), str(outs[m])) for m in models]   # (model, path, as given)
    with _engine(args) as engine:
        # one training per model; with --workers each is a Ray task of one thread, its checkpoint
        # (and, per epoch, its resume file) written where --out says. Serially the inputs the
        # driver checked are the ones trained on; a Ray worker reads its own (cheaper than shipping
        # the data sets, and a worker on another node has its own copy).
        shared = {"args": args, "in_worker": engine.parallel, "label": len(models) > 1,
                  "inputs": None if engine.parallel else inputs}
        for i, line in engine.map(_train_one, items, shared=shared):
            print(line if len(models) == 1 else f"{models[i]}: {line}", flush=True)
    return 0


def _training_inputs(args) -> dict:
    """What ``ddl train`` trains on, checked: the defence and its record, the first --n-train
    training and --n-test test images (more than a split holds is an error), and a --defence
    fitted on another data set is an error (one line here, in the driver, not from inside a Ray
    task). ``zoo`` is for the caller's --init-zoo models."""
    from ddl.data import load_dataset

    denoiser, defence = _training_defence(args)
    x, y = _first(args.n_train, "--n-train", "training", *load_dataset(args.dataset, "train", data_dir=args.data_dir))
    x_test, y_test = _first(args.n_test, "--n-test", "test", *load_dataset(args.dataset, "test", data_dir=args.data_dir))
    if denoiser is not None:
        ph, pw = check_int_pair("ddl train", "--defence patch_size", denoiser.patch_size)  # checked on load
        if denoiser.dictionary_.shape[1] != x.shape[1] * ph * pw:
            raise UsageError(f"--defence {args.defence}: its dictionary has atoms of {denoiser.dictionary_.shape[1]} "
                             f"values, not {x.shape[1]} channels x {ph}x{pw} patches; it was fitted on another "
                             f"data set than --dataset {args.dataset}")
    return {"denoiser": denoiser, "defence": defence, "x": x, "y": y, "x_test": x_test, "y_test": y_test, "zoo": {}}


def _train_one(item: tuple[str, str, str], *, args, in_worker: bool = False, label: bool = False,
               inputs: dict | None = None) -> str:
    """Train ``item = (model name, absolute checkpoint path, the path as printed)`` as ``ddl train`` says and save the
    checkpoint; returns the line to print. A unit of :class:`ddl._parallel.Engine` (module level,
    so Ray pickles it by name); ``inputs`` are :func:`_training_inputs`' as the driver checked them
    (read again here when None: a Ray worker)."""
    from ddl import __version__, metrics
    from ddl.models import build_model
    from ddl.models.checkpoint import save_checkpoint
    from ddl.models.train import fit, predict

    import torch

    if in_worker:   # a fresh Ray worker: kernel choice as the driver; threads as the Engine set them
        _setup(argparse.Namespace(**{**vars(args), "threads": None}))
    torch.manual_seed(args.seed)    # the initial weights: the same whatever ran before in this process
    model_name, out = item[0], Path(item[1])
    adversarial = _adversarial_training(args)
    variant = _training_variant(args)
    if inputs is None:
        inputs = _training_inputs(args)
    denoiser, defence = inputs["denoiser"], inputs["defence"]
    x, y, x_test, y_test = inputs["x"], inputs["y"], inputs["x_test"], inputs["y_test"]
    log = None if args.quiet else (lambda line: _log(f"{model_name}: {line}")) if label else _log
    if args.init_zoo:
        from ddl import zoo

        model = inputs["zoo"].get(model_name)
        if model is None:
            try:
                model = zoo.load(model_name, args.dataset, device=args.device)
            except LookupError as e:
                raise UsageError(str(e)) from None
    else:
        model = build_model(model_name, tuple(x.shape[1:]), n_classes=10)
    t = time.perf_counter()
    history = fit(model, x, y, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        device=args.device, x_val=x_test, y_val=y_test, val_name="test",  # monitored only: nothing is chosen on it
        checkpoint_path=out.with_suffix(".resume.pt"),
        transform=denoiser, adversarial=adversarial, progress=not args.quiet and sys.stderr.isatty() and not in_worker,
        log=log)
    seconds = time.perf_counter() - t
    model.eval()
    acc = metrics.accuracy(predict(model, x_test, device=args.device), y_test)
    meta = {"architecture": model_name, "dataset": args.dataset, "input_shape": list(x.shape[1:]),
            "n_classes": 10, "epochs": args.epochs, "seconds": seconds, "test_accuracy": acc,
            "ddl_version": __version__, "variant": variant}
    if adversarial is not None:  # how it was trained: method, eps, steps, step size, threat, defence
        meta["adversarial"] = adversarial.record(denoiser)
        meta["adversarial"]["defence_sha256"] = None if defence is None else defence["sha256"]
        meta["training_history"] = {k: v for k, v in history.to_dict().items() if k != "lr"}
    line = f"test accuracy {acc * 100:.2f} % on {len(x_test)} images"
    if denoiser is not None:
        with torch.no_grad():
            xd = torch.cat([denoiser(x_test[i:i + 1000].to(args.device)).cpu() for i in range(0, len(x_test), 1000)])
        meta["denoised_clean_accuracy"] = metrics.accuracy(predict(model, xd, device=args.device), y_test)
        meta["defence"] = defence
        line += f", {meta['denoised_clean_accuracy'] * 100:.2f} % behind the defence"
    if args.init_zoo:
        meta["init"] = "zoo"
    meta.update({k: n for k, n in (("n_train", args.n_train), ("n_test", args.n_test)) if n is not None})
    save_checkpoint(out, model, meta)
    out.with_suffix(".resume.pt").unlink(missing_ok=True)
    return f"{line}; checkpoint {item[2]}"


#: ``ddl.models.train.ADVERSARIAL_METHODS`` and ``TRAINING_THREATS``, spelled here so that building
#: the parser does not import torch (tests/test_adversarial_training.py checks they agree).
ADVERSARIAL_METHODS = ("pgd", "fast", "trades")
TRAINING_THREATS = ("bpda", "exact", "soft")
#: Options of ``ddl train`` that only --adversarial reads, and the methods that read them.
_ADVERSARIAL_OPTIONS = {"eps": ADVERSARIAL_METHODS, "steps": ("pgd", "trades"),
                        "step_size": ADVERSARIAL_METHODS, "beta": ("trades",),
                        "eps_warmup_epochs": ADVERSARIAL_METHODS, "threat": ADVERSARIAL_METHODS,
                        "guard_drop": ("fast",)}


def _adversarial_training(args):
    """The :class:`AdversarialTraining` of ``ddl train --adversarial`` (None without it); an
    option that would be ignored is an error."""
    for opt, methods in _ADVERSARIAL_OPTIONS.items():
        if getattr(args, opt) is not None and args.adversarial not in methods:
            flag = "--" + opt.replace("_", "-")
            if args.adversarial is None:
                raise UsageError(f"{flag} is an option of adversarial training; give --adversarial "
                                 f"{'|'.join(ADVERSARIAL_METHODS)} too")
            raise UsageError(f"{flag} is an option of --adversarial {' / '.join(methods)}, not of --adversarial "
                             f"{args.adversarial}" + (" (fast takes one FGSM step)" if opt == "steps" else ""))
    if args.adversarial is None:
        return None
    if args.eps is None:
        raise UsageError(f"--adversarial {args.adversarial} needs --eps, the L-inf budget (e.g. 0.3 for MNIST, "
                         f"8/255 for CIFAR-10)")
    if args.threat is not None and args.defence == "none":
        raise UsageError(f"--threat {args.threat} says how the adversary attacks through --defence; give "
                         f"--defence too, or leave --threat out")
    if args.eps_warmup_epochs is not None and args.eps_warmup_epochs > args.epochs:
        raise UsageError(f"--eps-warmup-epochs must be <= --epochs ({args.epochs}), or eps never reaches "
                         f"--eps; got {args.eps_warmup_epochs}")
    from ddl.models.train import AdversarialTraining

    kwargs = {k: getattr(args, k) for k in ("steps", "step_size", "beta", "eps_warmup_epochs", "threat",
                                            "guard_drop") if getattr(args, k) is not None}
    return AdversarialTraining(args.adversarial, args.eps, **kwargs)


def _training_variant(args) -> str:
    """The zoo variant name of what ``ddl train`` trains (DESIGN.md §5)."""
    if args.adversarial is not None:
        return "adversarial" if args.defence == "none" else "adversarial-ddl"
    return "standard" if args.defence == "none" else "denoised"


def _first(n: int | None, flag: str, split: str, x, y):
    """The first ``n`` images of a split (all for None); more than it holds is an error."""
    if n is not None and n > len(x):
        raise UsageError(f"{flag} {n}: the {split} split has {len(x)} images")
    return x[:n], y[:n]


def _training_defence(args):
    """(denoiser or None, its record) for ``ddl train --defence``."""
    if args.defence == "none":
        return None, None
    from ddl import zoo

    if args.defence in zoo.DEFENCE_NAMES:
        try:
            den = zoo.load_defence(args.dataset, args.defence, device=args.device)
        except LookupError as e:
            raise UsageError(str(e)) from None
        record = zoo.find_defence(args.dataset, args.defence)
        return den, {"name": args.defence, "sha256": record["sha256"], "params": record["params"]}
    path = Path(args.defence)
    if not path.is_file():
        raise UsageError(f"--defence must be none, {', '.join(zoo.DEFENCE_NAMES)} or a file written by "
                         f"DictionaryDenoiser.save; got {args.defence!r} (no such file)")
    from ddl.models.checkpoint import sha256_file

    den = _read_dictionary(str(path), args.device, flag="--defence")
    return den, {"name": str(path), "sha256": sha256_file(path), "params": den.get_params()}


#: Options of ``ddl attack`` and the attacks that read them.
_ATTACK_OPTIONS = {"eps": ("fgsm", "pgd"), "steps": ("pgd",), "step_size": ("pgd",),
                   "theta": ("jsma",), "gamma": ("jsma",)}


def attack_params(args) -> dict:
    """The attack's keyword parameters from the options; an option the attack does not read is
    an error (it would be silently ignored)."""
    for opt, attacks in _ATTACK_OPTIONS.items():
        if getattr(args, opt) is not None and args.attack not in attacks:
            flag = "--" + opt.replace("_", "-")
            raise UsageError(f"{flag} is an option of --attack {' / '.join(attacks)}, not of --attack "
                             f"{args.attack}" + (" (JSMA's budget is --theta and --gamma)" if opt == "eps" else ""))
    eps = args.eps if args.eps is not None else PAPER_FGSM_EPS[args.dataset]
    if args.attack == "fgsm":
        return {"eps": eps}
    if args.attack == "pgd":
        return {"eps": eps, "steps": args.steps or 10, "step_size": args.step_size or eps / 4, "seed": args.seed}
    return {"theta": args.theta if args.theta is not None else PAPER_JSMA["theta"],
            "gamma": args.gamma if args.gamma is not None else PAPER_JSMA["gamma"], "seed": args.seed}


def cmd_attack(args) -> int:
    from ddl import metrics
    from ddl._io import atomic_torch_save
    from ddl.experiments.config import AttackConfig
    from ddl.data import load_dataset
    from ddl.models.train import predict
    from ddl.experiments.pipeline import run_attack

    params = attack_params(args)
    _check_output("--out", args.out)
    _setup(args)
    model = _load_model(args)
    x, y = load_dataset(args.dataset, "test", data_dir=args.data_dir)
    if args.n_images is not None:
        if args.n_images > len(x):
            raise UsageError(f"--n-images {args.n_images}: the {args.dataset} test set has {len(x)} images")
        x, y = x[: args.n_images], y[: args.n_images]
    attack = AttackConfig(name=args.attack, params=params)
    t = time.perf_counter()
    x_adv = run_attack(attack, model, x.to(args.device), y.to(args.device), progress=_bars(args)).cpu()
    seconds = time.perf_counter() - t
    atomic_torch_save(args.out, {"x_adv": x_adv, "y": y, "attack": args.attack, "params": params})
    clean = metrics.accuracy(predict(model, x, device=args.device), y)
    adv = metrics.accuracy(predict(model, x_adv, device=args.device), y)
    print(f"{args.attack} {params}: accuracy clean {clean * 100:.2f} % → perturbed {adv * 100:.2f} % "
          f"on {len(x)} images ({seconds:.1f} s); saved {args.out}")
    return 0


#: ``ddl denoise`` options that set a parameter of the dictionary.
_DEFENCE_OPTIONS = ("patch_size", "n_components", "n_nonzero_coefs", "remove_mean", "max_patches")


def _flag(name: str, value) -> str:
    """The option that sets ``name`` to ``value``: ``-k/--n-nonzero-coefs 3``, ``--no-remove-mean``."""
    if isinstance(value, bool):
        return ("--" if value else "--no-") + name.replace("_", "-")
    return {"n_nonzero_coefs": "-k/--n-nonzero-coefs"}.get(name, "--" + name.replace("_", "-")) + f" {value}"


def cmd_denoise(args) -> int:
    import torch

    from ddl._io import atomic_torch_save
    from ddl.defence import DictionaryDenoiser

    given = {k: getattr(args, k) for k in _DEFENCE_OPTIONS if getattr(args, k) is not None}
    reuse = bool(args.dictionary) and Path(args.dictionary).exists() and not args.refit
    if args.refit and not (args.dictionary and args.fit_dataset):
        raise UsageError("--refit learns the dictionary again: give --fit-dataset (the images to learn "
                         "from) and --dictionary (the file to overwrite)")
    if not reuse and not args.fit_dataset:
        missing = f"--dictionary {args.dictionary} does not exist" if args.dictionary else "no --dictionary given"
        raise UsageError(f"{missing}; give --fit-dataset to learn one from a data set's clean training images")
    _check_output("--out", args.out)
    if args.dictionary and not reuse:
        _check_output("--dictionary", args.dictionary)
    _setup(args)
    x, y = _read_images(args.input, "--input", ("x_adv", "x"))
    if reuse:
        den = _read_dictionary(args.dictionary, args.device)
        if args.fit_dataset:
            _check_fit_dataset(args, den)
        have = den.get_params()
        differ = {k: v for k, v in given.items() if have[k] != v}
        if differ:
            asked = ", ".join(_flag(k, v) for k, v in differ.items())
            fitted = ", ".join(_flag(k, have[k]) for k in differ)
            raise UsageError(f"--dictionary {args.dictionary} was learned with {fitted}, not {asked}; "
                             f"add --refit (with --fit-dataset) to learn it again, or drop those options")
        print(f"using the dictionary in {args.dictionary} ({den.dictionary_.shape[0]} atoms of "
              f"{have['patch_size']}×{have['patch_size']}, k = {have['n_nonzero_coefs']})")
    else:
        from ddl.experiments.config import load_tuned
        from ddl.data import DATASETS as FACTS
        from ddl.data import load_dataset

        _check_images_fit("--input", args.input, x, FACTS[args.fit_dataset]["shape"],
                          f"a dictionary of --fit-dataset {args.fit_dataset}")
        tuned = load_tuned()[args.fit_dataset]
        params = {**{k: getattr(tuned, k) for k in _DEFENCE_OPTIONS}, **given}
        x_train, _ = load_dataset(args.fit_dataset, "train", data_dir=args.data_dir)
        t = time.perf_counter()
        den = DictionaryDenoiser(**params, random_state=args.seed, device=args.device).fit(x_train, progress=_bars(args))
        seconds = time.perf_counter() - t
        if args.dictionary:
            den.save(args.dictionary)
        kept = f"saved it to {args.dictionary}" if args.dictionary else "not kept (give --dictionary FILE to keep it)"
        print(f"learned a dictionary on the {args.fit_dataset} training set ({len(x_train)} images): "
              f"{den.dictionary_.shape[0]} atoms of {params['patch_size']}×{params['patch_size']}, "
              f"k = {params['n_nonzero_coefs']}, in {seconds:.1f} s; {kept}", flush=True)
    if den.n_channels_ != x.shape[1]:
        raise UsageError(f"--dictionary {args.dictionary} was learned on {den.n_channels_}-channel images; "
                         f"--input {args.input} has {x.shape[1]} channels")
    t = time.perf_counter()
    with torch.no_grad():
        x_den = den.transform(x.to(args.device), progress=_bars(args)).cpu()
    out = {"x": x_den} if y is None else {"x": x_den, "y": y}
    atomic_torch_save(args.out, out)
    print(f"denoised {len(x)} images in {time.perf_counter() - t:.1f} s; saved {args.out}")
    return 0


def _check_fit_dataset(args, den) -> None:
    """``--fit-dataset`` with an existing ``--dictionary`` (no ``--refit``): the dictionary is used,
    so it must have been learned on images like the data set's (same channels); else it would be
    used silently in place of the one asked for. (The file does not record its data set; the two
    data sets differ in channels.)"""
    from ddl.data import DATASETS as FACTS

    channels = FACTS[args.fit_dataset]["shape"][0]
    if den.n_channels_ != channels:
        raise UsageError(f"--dictionary {args.dictionary} exists and was learned on {den.n_channels_}-channel "
                         f"images, not on --fit-dataset {args.fit_dataset} ({channels}-channel images); add "
                         f"--refit to learn it again from {args.fit_dataset} and overwrite it, or give another "
                         f"--dictionary")


def _read_dictionary(path: str, device: str, flag: str = "--dictionary"):
    """A saved DictionaryDenoiser; every way the file can be wrong is one BadFileError."""
    from ddl._validate import load_torch_file, require_keys
    from ddl.defence import DictionaryDenoiser

    blob = load_torch_file(path, where="", what=flag)
    require_keys("", flag, path, blob, ("format", "params", "dictionary", "n_channels"))
    if blob["format"] != "ddl.DictionaryDenoiser":
        raise BadFileError(f"{flag} {path} is not a file written by `ddl denoise` or "
                           f"DictionaryDenoiser.save (format {blob['format']!r})")
    try:
        return DictionaryDenoiser.load(path, device=device)
    except (KeyError, TypeError, ValueError) as e:
        raise BadFileError(f"{flag} {path} is damaged: {type(e).__name__}: {e}") from None


def cmd_evaluate(args) -> int:
    from ddl import metrics
    from ddl.data import DATASETS as FACTS
    from ddl.data import load_dataset
    from ddl.models.train import predict

    _setup(args)
    model = _load_model(args)
    if args.input:
        x, y = _read_images(args.input, "--input", ("x", "x_adv"))
        _check_images_fit("--input", args.input, x, FACTS[args.dataset]["shape"], f"a {args.dataset} model")
        if y is not None and args.data_dir:
            print(f"labels from {args.input} (its 'y'); --data-dir is not read")
        if y is None:
            y_test = load_dataset(args.dataset, "test", data_dir=args.data_dir)[1]
            if len(x) > len(y_test):
                raise UsageError(f"--input {args.input} holds {len(x)} images and no labels; the "
                                 f"{args.dataset} test set has only {len(y_test)} labels")
            y = y_test[: len(x)]
    else:
        x, y = load_dataset(args.dataset, "test", data_dir=args.data_dir)
    logits = predict(model, x, device=args.device)
    print(f"accuracy {metrics.accuracy(logits, y) * 100:.2f} % on {len(x)} images "
          f"(mean confidence {metrics.mean_confidence(logits):.3f})")
    return 0


def cmd_reproduce(args) -> int:
    import dataclasses
    import inspect

    from ddl.experiments import reproduce
    from ddl.experiments.config import get_preset

    rc = get_preset(args.preset, tuned_file=args.tuned_defence) if args.preset == "tuned" else None
    if args.tuned_defence and args.preset != "tuned":
        raise UsageError(f"--tuned-defence is read by --preset tuned only; got --preset {args.preset}")
    rc = rc or get_preset(args.preset)
    if rc.source != "full" and args.data_dir:
        raise UsageError(f"--preset {args.preset} uses the {rc.source} data bundled with ddl; "
                         f"--data-dir would be ignored (drop it, or use --preset paper/tuned)")
    changes = {k: tuple(v) for k, v in (("datasets", args.datasets), ("models", args.models)) if v}
    if args.refit_dictionary:
        if rc.source != "full":
            raise UsageError(f"--refit-dictionary: --preset {args.preset} always fits its "
                             "dictionaries (no shipped ones for the bundled data)")
        changes["refit_dictionary"] = True
    rc = dataclasses.replace(rc, **changes)
    kwargs = {}
    if args.strict:
        if "strict" not in inspect.signature(reproduce.reproduce).parameters:
            raise UsageError("--strict is not supported by this version of ddl.experiments.reproduce")
        kwargs["strict"] = True
    _setup(args)
    run_dir = Path(args.run_dir or f"runs/{args.preset}")
    if args.dry_run:
        print("\n".join(reproduce.plan(rc, run_dir, data_dir=args.data_dir, device=args.device,
                                        figures=not args.no_figures, sweep=not args.no_sweep)))
        return 0
    t = time.perf_counter()
    with _engine(args) as engine:
        reproduce.reproduce(rc, run_dir, data_dir=args.data_dir, device=args.device,
                            figures=not args.no_figures, sweep=not args.no_sweep, progress=not args.quiet,
                            engine=engine if engine.parallel else None, **kwargs)
    print(f"done in {time.perf_counter() - t:.1f} s; report: {run_dir / 'report.html'}")
    return 0


def cmd_tune(args) -> int:
    from ddl.experiments import tune

    run_dir = Path(args.run_dir)
    if args.eps is not None and len(args.eps) != len(args.datasets):
        raise UsageError(f"--eps gives {len(args.eps)} value(s) for {len(args.datasets)} data set(s) "
                         f"({' '.join(args.datasets)}); give one per --datasets entry, in order, or leave "
                         f"it out (MNIST 0.2, CIFAR-10 4/255)")
    _check_output("--run-dir", run_dir, folder=True)
    _suite_on_cpu(args)          # every trial's robust objective runs the adaptive suite
    _setup(args)
    path = run_dir / TUNED_FILE
    eps = dict(zip(args.datasets, args.eps or [None] * len(args.datasets)))
    kw = {"run_dir": run_dir, "data_dir": args.data_dir, "model": args.model, "n_trials": args.trials,
          "n_val": args.n_val, "n_robust": args.n_robust, "attacks": tuple(args.attacks or tune.TUNE_ATTACKS),
          "budgets": {"pgd_steps": args.pgd_steps, "apgd_iter": args.apgd_iter,
                      "square_queries": args.square_queries},
          "population_size": args.population, "max_patches": args.max_patches, "device": args.device}
    run_kw = {"seed": args.seed, "warm_start": not args.no_warm_start, "progress": not args.quiet,
              "max_clean_drop": args.max_clean_drop}
    if args.dry_run:
        for d in args.datasets:
            print("\n".join(tune.plan_tuning(d, eps=eps[d], **kw)))
        print(f"dry run: nothing computed or written; the run would write {path}")
        return 0
    import shlex

    from ddl._parallel import Engine

    command = shlex.join(["ddl", *sys.argv[1:]] if Path(sys.argv[0]).name in ("ddl", "__main__.py") else sys.argv)
    if args.summarise:
        for d in args.datasets:
            s = tune.summarise_study(d, run_dir=run_dir, device=args.device, command=command,
                                     max_clean_drop=args.max_clean_drop)
            print(f"{d}: {s['n_trials']} complete trials, {s['partial']['unfinished_trials']} unfinished; chosen "
                  f"{s['best']}; wrote {run_dir / f'tune-{d}.json'}")
        return 0
    with Engine(workers=args.workers, address=args.ray_address) as engine:
        for d in args.datasets:
            result = tune.tune_defence(d, eps=eps[d], engine=engine, command=command, **run_kw, **kw)
            tune.save_tuned({d: result}, path)  # after each data set: an interruption keeps the finished ones
            print(f"{d}: chosen {result['best']}; {result.get('verdict', 'no shipped defence to compare')}")
    print(f"saved {path}; use it with `ddl reproduce --preset tuned --tuned-defence {path}`")
    return 0


def cmd_report(args) -> int:
    from ddl.experiments.report import write_report

    if not (Path(args.run_dir) / "results.json").is_file():
        raise UsageError(f"{args.run_dir} has no results.json (a folder written by `ddl reproduce`)")
    if args.robustness is not None:
        from ddl.experiments.robustness_report import load_record_files

        if not Path(args.robustness).is_dir():
            raise UsageError(f"--robustness: {args.robustness} is not a folder (give one of robustness records, "
                             f"e.g. results/robustness)")
        if not load_record_files(args.robustness):
            raise UsageError(f"--robustness: no robustness records (*.json written by `ddl robustness`) in "
                             f"{args.robustness}")
    summaries = []
    if args.robust_training is not None:
        from ddl.experiments.robust_training_report import load_summaries

        if not Path(args.robust_training).is_dir():
            raise UsageError(f"--robust-training: {args.robust_training} is not a folder (give one of "
                             f"tools/robust_training_table.py summaries, e.g. results/robust-training)")
        try:
            summaries = load_summaries(args.robust_training)
        except (FileNotFoundError, ValueError) as exc:
            raise UsageError(f"--robust-training: {exc}") from None
    if args.figures:
        from ddl.experiments.figures import draw_figures

        figures = draw_figures(args.run_dir)
        print(f"drew {len(figures)} figures in {Path(args.run_dir) / 'figures'}")
    md, page = write_report(args.run_dir, robustness=args.robustness, robust_training=summaries)
    print(f"wrote {md} and {page}")
    return 0


def cmd_zoo(args) -> int:
    from ddl import zoo

    entries = zoo.entries()
    if not entries:
        print("the zoo is empty")
        return 0
    print("classifiers (accuracy: clean test set; behind defence: its reconstructions of the clean test set)")
    print(f"{'model':<12}{'dataset':<9}{'variant':<16}{'accuracy':>9}{'behind defence':>16}{'paper':>7}"
          f"{'epochs':>7}{'train s':>8}{'MB':>6}  path")
    for e in entries:
        target = e.extra.get("target_percent")
        paper = "–" if target is None else f"{target:.2f}"
        size = e.path.stat().st_size / 1e6 if e.path.is_file() else float("nan")
        behind = e.extra.get("denoised_clean_accuracy")
        behind = "–" if behind is None else f"{behind * 100:.2f}% ({e.defence['name']})"
        print(f"{e.model:<12}{e.dataset:<9}{e.variant:<16}{e.accuracy * 100:>8.2f}%{behind:>16}{paper:>7}"
              f"{e.epochs:>7}{e.seconds:>8.0f}{size:>6.2f}  {e.path.name}")
    total = sum(e.path.stat().st_size for e in entries if e.path.is_file())
    print(f"{len(entries)} checkpoints, {total / 1e6:.1f} MB, in {zoo.ZOO_DIR}")
    defences = zoo.defence_records()
    if defences:
        print()
        print("fitted defences (ddl.zoo.load_defence(dataset, name); dictionaries fitted on the clean training set)")
        print(f"{'name':<8}{'dataset':<9}{'patch':>6}{'atoms':>6}{'k':>4}{'mean':>6}{'MB':>6}  path")
        for r in defences:
            q = r["params"]
            size = r.get("size_bytes", 0) / 1e6
            print(f"{r['name']:<8}{r['dataset']:<9}{q['patch_size']:>6}{q['n_components']:>6}"
                  f"{q['n_nonzero_coefs']:>4}{'yes' if q['remove_mean'] else 'no':>6}{size:>6.2f}  {r['path']}")
    return 0


def cmd_download(args) -> int:
    from ddl.data import download_dataset

    path = download_dataset(args.dataset, args.data_dir)
    print(f"{args.dataset} is in {path}")
    return 0



def cmd_robustness(args) -> int:
    from ddl.experiments.robustness_run import format_table, run_robustness

    _suite_on_cpu(args)
    _setup(args)
    if sorted(args.eps) != args.eps or len(set(args.eps)) != len(args.eps):
        raise UsageError(f"--eps must be strictly increasing; got {' '.join(map(str, args.eps))}")
    budgets = {"pgd_steps": args.pgd_steps, "pgd_restarts": args.pgd_restarts,
               "apgd_iter": args.apgd_iter, "square_queries": args.square_queries,
               "cascade": args.cascade}
    if args.n_target_classes is not None:   # only when given: the cache keys of earlier runs stay valid
        budgets["n_target_classes"] = args.n_target_classes
    variant = _zoo_variant(args)
    models = [None] if args.zoo is None else _zoo_models(args.zoo, args.dataset, variant)
    defences = list(dict.fromkeys(args.defence))
    runs = [(m, d) for m in models for d in defences]
    with _engine(args) as engine:
        for model, defence in runs:
            out = Path(args.out)
            if len(runs) > 1:
                name = model or Path(args.checkpoint).stem
                out = out / "-".join([args.dataset, name] + ([defence.replace(":", "-").replace("/", "_")]
                                                           if len(defences) > 1 else []))
            record = run_robustness(dataset=args.dataset, model_name=model, checkpoint=args.checkpoint,
                                    variant=variant, defence=defence, eps=args.eps, n_images=args.n_images,
                                    attacks=args.attacks, seed=args.seed, out=out,
                                    data_dir=args.data_dir, budgets=budgets,
                                    progress=False if args.quiet else None,  # None: bars on a terminal only
                                    engine=engine if engine.parallel else None)
            if len(runs) > 1:
                print(f"== {args.dataset} {model or args.checkpoint}, defence {defence}")
            print(format_table(record))
            print(f"wrote {out / 'robustness.json'}")
    return 0


def _zoo_models(names: list[str], dataset: str, variant: str) -> list[str]:
    """``--zoo`` names in order, ``all`` expanded to the zoo's models of ``dataset``/``variant``."""
    from ddl import zoo

    if "all" in names:
        if len(names) > 1:
            raise UsageError(f"--zoo all cannot be combined with model names; got --zoo {' '.join(names)}")
        have = {e.model for e in zoo.entries() if e.dataset == dataset and e.variant == variant}
        return [m for m in MODEL_NAMES if m in have]
    return list(dict.fromkeys(names))


def _engine(args):
    """The ``ddl._parallel.Engine`` of ``--workers``/``--ray-address`` (serial without them)."""
    from ddl._parallel import Engine, EngineError

    engine = Engine(workers=getattr(args, "workers", None), address=getattr(args, "ray_address", None))
    try:
        engine.__enter__()
    except EngineError as exc:
        raise UsageError(str(exc)) from None
    return engine


if __name__ == "__main__":
    raise SystemExit(main())
