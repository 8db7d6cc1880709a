"""The ``ddl`` command: argparse subcommands → config objects → pipeline / library calls. No maths.

    ddl demo                         the whole defence on the bundled MNIST sample, a few minutes
    ddl train    --dataset mnist --model convnet --epochs 1 --data-dir DIR
    ddl attack   --checkpoint M.pt --dataset mnist --attack fgsm --eps 0.1 --out adv.pt
    ddl denoise  --input adv.pt --fit-dataset mnist --out den.pt   (or --dictionary den.pt)
    ddl evaluate --checkpoint M.pt --dataset mnist [--input den.pt]
    ddl reproduce --preset paper --data-dir DIR     the paper's tables and figures → results/paper
    ddl report   RUN_DIR
    ddl zoo list
    ddl download mnist --data-dir DIR
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError, TypeError) as e:
        # Wrong use gets one clear line, not a traceback; bugs (other exceptions) still trace.
        print(f"ddl {args.command}: error: {e}", file=sys.stderr)
        return 1


def build_parser() -> argparse.ArgumentParser:
    from ddl import __version__

    p = argparse.ArgumentParser(prog="ddl", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"ddl {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def common(sp, data=True):
        sp.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
        if data:
            sp.add_argument("--data-dir", default=None,
                            help="folder holding mnist/ and cifar-10-batches-py/ (else $DDL_DATA, else the cache folder)")

    sp = sub.add_parser("demo", help="train, attack, learn a dictionary, denoise on the bundled MNIST sample")
    sp.add_argument("--run-dir", default="runs/demo", help="results and cache folder (default: runs/demo)")
    sp.add_argument("--preset", default="demo", choices=["demo", "smoke"])
    common(sp, data=False)
    sp.set_defaults(func=cmd_demo)

    sp = sub.add_parser("train", help="train a classifier and save a checkpoint (resumes if interrupted)")
    sp.add_argument("--dataset", required=True, choices=["mnist", "cifar10"])
    sp.add_argument("--model", required=True)
    sp.add_argument("--epochs", type=int, default=1)
    sp.add_argument("--batch-size", type=int, default=32)
    sp.add_argument("--lr", type=float, default=1e-3)
    sp.add_argument("--out", default=None, help="checkpoint path (default: runs/train/MODEL-DATASET.pt)")
    common(sp)
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("attack", help="attack a model on the test set and save the adversarial images")
    _model_source(sp)
    sp.add_argument("--dataset", required=True, choices=["mnist", "cifar10"])
    sp.add_argument("--attack", default="fgsm", choices=["fgsm", "pgd", "jsma"])
    sp.add_argument("--eps", type=float, default=None, help="FGSM/PGD L-inf budget (default: 0.1 MNIST, 8/255 CIFAR-10)")
    sp.add_argument("--steps", type=int, default=10, help="PGD steps")
    sp.add_argument("--step-size", type=float, default=None, help="PGD step (default: eps/4)")
    sp.add_argument("--theta", type=float, default=1.0, help="JSMA change per feature")
    sp.add_argument("--gamma", type=float, default=0.1, help="JSMA max fraction of features changed")
    sp.add_argument("--n-images", type=int, default=None, help="attack the first N test images")
    sp.add_argument("--out", required=True, help="output file (.pt with x_adv, y)")
    common(sp)
    sp.set_defaults(func=cmd_attack)

    sp = sub.add_parser("denoise", help="denoise saved images with a dictionary (learned and saved if needed)")
    sp.add_argument("--input", required=True, help=".pt file from `ddl attack` (key x_adv) or with key x")
    sp.add_argument("--dictionary", default=None, help="saved DictionaryDenoiser; created by fitting if missing")
    sp.add_argument("--fit-dataset", default=None, choices=["mnist", "cifar10"],
                    help="learn the dictionary from this data set's clean training images")
    sp.add_argument("--patch-size", type=int, default=7)
    sp.add_argument("--n-components", type=int, default=256)
    sp.add_argument("--n-nonzero-coefs", "-k", type=int, default=5)
    sp.add_argument("--max-patches", type=int, default=100_000)
    sp.add_argument("--out", required=True, help="output file (.pt with x)")
    common(sp)
    sp.set_defaults(func=cmd_denoise)

    sp = sub.add_parser("evaluate", help="accuracy of a model on the test set or on saved images")
    _model_source(sp)
    sp.add_argument("--dataset", required=True, choices=["mnist", "cifar10"])
    sp.add_argument("--input", default=None, help=".pt file with x or x_adv (labels from its y, else the test set)")
    common(sp)
    sp.set_defaults(func=cmd_evaluate)

    sp = sub.add_parser("reproduce", help="the paper's grid, ε sweep, figures and report in one run folder")
    sp.add_argument("--preset", default="quick", choices=["quick", "paper", "noisy-dictionary", "tuned"])
    sp.add_argument("--run-dir", default=None, help="default: results/PRESET")
    sp.add_argument("--datasets", nargs="+", default=None, choices=["mnist", "cifar10"])
    sp.add_argument("--models", nargs="+", default=None)
    sp.add_argument("--no-figures", action="store_true")
    sp.add_argument("--no-sweep", action="store_true", help="skip the FGSM ε sweep")
    common(sp)
    sp.set_defaults(func=cmd_reproduce)

    sp = sub.add_parser("tune", help="choose the denoiser's patch size and sparsity on a validation split")
    sp.add_argument("--datasets", nargs="+", default=["mnist", "cifar10"], choices=["mnist", "cifar10"])
    sp.add_argument("--n-val", type=int, default=1000)
    sp.add_argument("--model", default="mlp",
                    help="classifier attacked on the validation split (default mlp: FGSM at the paper's "
                         "eps barely moves the zoo ConvNet, so it cannot tell settings apart)")
    common(sp)
    sp.set_defaults(func=cmd_tune)

    sp = sub.add_parser("report", help="write report.md and report.html from RUN_DIR/results.json")
    sp.add_argument("run_dir")
    sp.set_defaults(func=cmd_report)

    sp = sub.add_parser("zoo", help="the trained checkpoints shipped with ddl")
    sp.add_argument("action", choices=["list"])
    sp.set_defaults(func=cmd_zoo)

    sp = sub.add_parser("download", help="download a data set (checksummed) into the data folder")
    sp.add_argument("dataset", choices=["mnist", "cifar10"])
    sp.add_argument("--data-dir", default=None)
    sp.set_defaults(func=cmd_download)
    return p


def _model_source(sp):
    g = sp.add_mutually_exclusive_group(required=True)
    g.add_argument("--checkpoint", help="a checkpoint written by `ddl train`")
    g.add_argument("--zoo", metavar="MODEL", help="a model from the zoo for --dataset (see `ddl zoo list`)")


def _setup(args):
    import torch

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    torch.manual_seed(getattr(args, "seed", 0))


def _load_model(args):
    if args.checkpoint:
        from ddl.models.checkpoint import load_checkpoint

        model, meta = load_checkpoint(args.checkpoint, device=args.device)
        if meta.get("dataset") not in (None, args.dataset):
            raise ValueError(f"checkpoint {args.checkpoint} was trained on {meta['dataset']!r}, "
                             f"not --dataset {args.dataset!r}")
        return model
    from ddl import zoo

    return zoo.load(args.zoo, args.dataset, device=args.device)


# --- commands ----------------------------------------------------------------------------------
def cmd_demo(args) -> int:
    from ddl import config, pipeline

    _setup(args)
    cfg = config.PRESETS[args.preset].replace(device=args.device)
    t = time.perf_counter()
    print(f"ddl demo: run folder {args.run_dir} (cached stages are reused)")
    pipeline.run_experiment(cfg, args.run_dir)
    print(f"done in {time.perf_counter() - t:.1f} s; results in {Path(args.run_dir) / 'results.json'}")
    return 0


def cmd_train(args) -> int:
    from ddl import __version__, metrics
    from ddl.data import load_dataset
    from ddl.models import build_model
    from ddl.models.checkpoint import save_checkpoint
    from ddl.models.train import fit, predict

    _setup(args)
    out = Path(args.out or f"runs/train/{args.model}-{args.dataset}.pt")
    x, y = load_dataset(args.dataset, "train", data_dir=args.data_dir)
    x_test, y_test = load_dataset(args.dataset, "test", data_dir=args.data_dir)
    model = build_model(args.model, tuple(x.shape[1:]), n_classes=10)
    t = time.perf_counter()
    fit(model, x, y, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        device=args.device, x_val=x_test, y_val=y_test, checkpoint_path=out.with_suffix(".resume.pt"))
    seconds = time.perf_counter() - t
    model.eval()
    acc = metrics.accuracy(predict(model, x_test, device=args.device), y_test)
    save_checkpoint(out, model, {"architecture": args.model, "dataset": args.dataset,
                                 "input_shape": list(x.shape[1:]), "n_classes": 10,
                                 "epochs": args.epochs, "seconds": seconds, "test_accuracy": acc,
                                 "ddl_version": __version__})
    out.with_suffix(".resume.pt").unlink(missing_ok=True)
    print(f"test accuracy {acc * 100:.2f} % on {len(x_test)} images; checkpoint {out}")
    return 0


def cmd_attack(args) -> int:
    from ddl import metrics
    from ddl._io import atomic_torch_save
    from ddl.config import AttackConfig
    from ddl.data import load_dataset
    from ddl.models.train import predict
    from ddl.pipeline import run_attack

    _setup(args)
    model = _load_model(args)
    x, y = load_dataset(args.dataset, "test", data_dir=args.data_dir)
    if args.n_images is not None:
        x, y = x[: args.n_images], y[: args.n_images]
    eps = args.eps if args.eps is not None else (0.1 if args.dataset == "mnist" else 8 / 255)
    params = {"fgsm": {"eps": eps},
              "pgd": {"eps": eps, "steps": args.steps, "step_size": args.step_size or eps / 4,
                      "seed": args.seed},
              "jsma": {"theta": args.theta, "gamma": args.gamma, "seed": args.seed}}[args.attack]
    attack = AttackConfig(name=args.attack, params=params)
    t = time.perf_counter()
    x_adv = run_attack(attack, model, x.to(args.device), y.to(args.device)).cpu()
    seconds = time.perf_counter() - t
    atomic_torch_save(args.out, {"x_adv": x_adv, "y": y, "attack": args.attack, "params": params})
    clean = metrics.accuracy(predict(model, x, device=args.device), y)
    adv = metrics.accuracy(predict(model, x_adv, device=args.device), y)
    print(f"{args.attack} {params}: accuracy clean {clean * 100:.2f} % → perturbed {adv * 100:.2f} % "
          f"on {len(x)} images ({seconds:.1f} s); saved {args.out}")
    return 0


def cmd_denoise(args) -> int:
    from ddl._io import atomic_torch_save, safe_torch_load
    from ddl.defence import DictionaryDenoiser

    _setup(args)
    blob = safe_torch_load(args.input)
    x = blob["x_adv"] if "x_adv" in blob else blob["x"]
    if args.dictionary and Path(args.dictionary).exists():
        den = DictionaryDenoiser.load(args.dictionary).to(args.device)
    else:
        if not args.fit_dataset:
            raise ValueError("denoise: give --dictionary FILE (existing) or --fit-dataset to learn one")
        from ddl.data import load_dataset

        x_train, _ = load_dataset(args.fit_dataset, "train", data_dir=args.data_dir)
        den = DictionaryDenoiser(patch_size=args.patch_size, n_components=args.n_components,
                                 n_nonzero_coefs=args.n_nonzero_coefs, max_patches=args.max_patches,
                                 random_state=args.seed, device=args.device).fit(x_train)
        if args.dictionary:
            den.save(args.dictionary)
    t = time.perf_counter()
    import torch

    with torch.no_grad():
        x_den = den.transform(x.to(args.device)).cpu()
    out = {"x": x_den}
    if "y" in blob:
        out["y"] = blob["y"]
    atomic_torch_save(args.out, out)
    print(f"denoised {len(x)} images in {time.perf_counter() - t:.1f} s; saved {args.out}")
    return 0


def cmd_evaluate(args) -> int:
    from ddl import metrics
    from ddl._io import safe_torch_load
    from ddl.data import load_dataset
    from ddl.models.train import predict

    _setup(args)
    model = _load_model(args)
    if args.input:
        blob = safe_torch_load(args.input)
        x = blob["x"] if "x" in blob else blob["x_adv"]
        y = blob.get("y")
        if y is None:
            y = load_dataset(args.dataset, "test", data_dir=args.data_dir)[1][: len(x)]
    else:
        x, y = load_dataset(args.dataset, "test", data_dir=args.data_dir)
    logits = predict(model, x, device=args.device)
    print(f"accuracy {metrics.accuracy(logits, y) * 100:.2f} % on {len(x)} images "
          f"(mean confidence {metrics.mean_confidence(logits):.3f})")
    return 0


def cmd_reproduce(args) -> int:
    import dataclasses

    from ddl import reproduce

    _setup(args)
    rc = reproduce.get_preset(args.preset)
    changes = {k: tuple(v) for k, v in (("datasets", args.datasets), ("models", args.models)) if v}
    rc = dataclasses.replace(rc, **changes)
    run_dir = Path(args.run_dir or f"results/{args.preset}")
    t = time.perf_counter()
    reproduce.reproduce(rc, run_dir, data_dir=args.data_dir, device=args.device,
                        figures=not args.no_figures, sweep=not args.no_sweep)
    print(f"done in {time.perf_counter() - t:.1f} s; report: {run_dir / 'report.html'}")
    return 0


def cmd_tune(args) -> int:
    from ddl import tune

    _setup(args)
    results = {d: tune.tune_defence(d, data_dir=args.data_dir, n_val=args.n_val, model=args.model,
                                    device=args.device)
               for d in args.datasets}
    path = tune.save_tuned(results)
    for d, r in results.items():
        print(f"{d}: best {r['best']}")
    print(f"saved {path}")
    return 0


def cmd_report(args) -> int:
    from ddl.report import write_report

    md, page = write_report(args.run_dir)
    print(f"wrote {md} and {page}")
    return 0


def cmd_zoo(args) -> int:
    from ddl import zoo

    entries = zoo.entries()
    if not entries:
        print("the zoo is empty")
        return 0
    print(f"{'model':<12}{'dataset':<9}{'accuracy':>10}{'paper':>8}{'epochs':>8}{'train s':>9}{'MB':>6}  path")
    for e in entries:
        target = e.extra.get("target_percent")
        paper = "–" if target is None else f"{target:.2f}"
        size = e.path.stat().st_size / 1e6 if e.path.is_file() else float("nan")
        print(f"{e.model:<12}{e.dataset:<9}{e.accuracy * 100:>9.2f}%{paper:>8}{e.epochs:>8}{e.seconds:>9.0f}"
              f"{size:>6.2f}  {e.path}")
    total = sum(e.path.stat().st_size for e in entries if e.path.is_file())
    print(f"{len(entries)} checkpoints, {total / 1e6:.1f} MB")
    return 0


def cmd_download(args) -> int:
    from ddl.data import download_dataset

    path = download_dataset(args.dataset, args.data_dir)
    print(f"{args.dataset} is in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
