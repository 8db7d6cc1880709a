"""Every user error of the command line is one line ``ddl <command>: error: ...``, exit status 2,
no traceback, nothing half-written; options that would be ignored are refused (issue 10, items 7,
8, 14).

Most cases call ``ddl.cli.main`` in this process (seconds for all of them); a few run the real
``python -m ddl`` in a subprocess, to see exactly what a user sees on stderr.
"""

import os
import subprocess
import sys

import pytest
import torch

from ddl import cli
from ddl.cli import main


def run(capsys, *argv):
    """(exit status, stdout, stderr) of ``ddl ARGV`` in this process."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse errors exit
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line_error(err: str, command: str, message: str):
    assert "Traceback" not in err
    assert err == f"ddl {command}: error: {message}\n", err


def run_subprocess(*argv, env=None):
    return subprocess.run([sys.executable, "-m", "ddl", *map(str, argv)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, timeout=120)


# --- files -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Good and bad files, made once: a text file, random bytes, a truncated and an empty torch
    file, a torch file without the expected keys, checkpoints for the other data set, a dictionary."""
    from ddl.defence import DictionaryDenoiser
    from ddl.models import build_model
    from ddl.models.checkpoint import save_checkpoint

    d = tmp_path_factory.mktemp("files")
    (d / "text.pt").write_text("this is not a torch file\n")
    (d / "random.pt").write_bytes(bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                                      dtype=torch.uint8).tolist()))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(12, 1, 28, 28, generator=g)
    torch.save({"x_adv": x, "y": torch.arange(12) % 10}, d / "adv.pt")
    whole = (d / "adv.pt").read_bytes()
    (d / "truncated.pt").write_bytes(whole[: len(whole) // 2])
    (d / "empty.pt").write_bytes(b"")
    torch.save({"images": x}, d / "nokeys.pt")
    bad = torch.full((2, 1, 28, 28), 0.5)
    bad[0, 0, 0, 0], bad[1, 0, 3, 3] = -0.25, 2.0
    torch.save({"x_adv": bad}, d / "range.pt")
    torch.save({"x_adv": torch.rand(2, 3, 32, 32)}, d / "cifar_adv.pt")
    model = build_model("mlp", (3, 32, 32))
    save_checkpoint(d / "cifar.pt", model, {"architecture": "mlp", "input_shape": [3, 32, 32], "n_classes": 10,
                                            "dataset": "cifar10"})
    save_checkpoint(d / "shape.pt", model, {"architecture": "mlp", "input_shape": [3, 32, 32], "n_classes": 10})
    torch.save({"format": "ddl-checkpoint-v1", "meta": {"architecture": "mlp"}}, d / "damaged.pt")
    DictionaryDenoiser(patch_size=7, n_components=16, n_nonzero_coefs=1, max_patches=2000).fit(x).save(d / "dict.pt")
    return d


CORRUPT = {
    "text.pt": "is not a readable torch file (a text file, 25 bytes; expected a file written by torch.save).",
    "random.pt": "is not a readable torch file (corrupt or truncated, 4096 bytes; expected a file written by torch.save).",
    "empty.pt": "is empty (0 bytes), e.g. a copy or download that was interrupted; write it again.",
}


@pytest.mark.parametrize("name", ["text.pt", "random.pt", "empty.pt", "truncated.pt"])
@pytest.mark.parametrize("flag", ["--input", "--checkpoint", "--dictionary"])
def test_unreadable_files_are_one_line_errors(files, capsys, flag, name):
    path, out = files / name, files / "out.pt"
    argv = {"--input": ["evaluate", "--zoo", "mlp", "--dataset", "mnist", "--input", path],
            "--checkpoint": ["attack", "--checkpoint", path, "--dataset", "mnist", "--out", out],
            "--dictionary": ["denoise", "--input", files / "adv.pt", "--dictionary", path, "--out", out]}[flag]
    code, _, err = run(capsys, *argv)
    assert code == 2
    if name == "truncated.pt":
        size = path.stat().st_size
        message = (f"{flag} {path} is not a readable torch file (corrupt or truncated, {size} bytes; "
                   f"expected a file written by torch.save).")
    else:
        message = f"{flag} {path} {CORRUPT[name]}"
    assert_one_line_error(err, argv[0], message)
    assert "weights_only=False" not in err
    assert not out.exists()  # nothing half-written


def test_a_file_with_python_objects_is_refused_without_unsafe_advice(files, capsys, tmp_path):
    import fractions

    path = tmp_path / "objects.pt"
    torch.save({"x": fractions.Fraction(1, 3)}, path)
    code, _, err = run(capsys, "evaluate", "--zoo", "mlp", "--dataset", "mnist", "--input", path)
    assert code == 2
    assert_one_line_error(err, "evaluate", f"--input {path} holds Python objects other than tensors, numbers, "
                                           f"strings and containers; ddl reads only such plain files and will "
                                           f"not run code from a file.")


@pytest.mark.parametrize("name, command, message", [
    ("nokeys.pt", "evaluate", "--input {p} lacks 'x' or 'x_adv' (it holds 'images')."),
    ("range.pt", "evaluate", "--input {p}: 'x_adv' must hold pixels in [0, 1]; got values in [-0.25, 2]"),
    ("cifar_adv.pt", "evaluate", "--input {p} holds images of shape (3, 32, 32); a mnist model takes (1, 28, 28)"),
])
def test_input_without_the_expected_content(files, capsys, name, command, message):
    path = files / name
    code, _, err = run(capsys, command, "--zoo", "mlp", "--dataset", "mnist", "--input", path)
    assert code == 2
    assert_one_line_error(err, command, message.format(p=path))


def _images_with(tmp_path, key, values):
    """A .pt file of 3 MNIST-shaped images in [0, 1] under ``key``, with ``values`` {(image, row,
    col): value} written in."""
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for (i, r, c), v in values.items():
        x[i, 0, r, c] = v
    path = tmp_path / "bad.pt"
    torch.save({key: x, "y": torch.tensor([7, 2, 1])}, path)
    return path


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("values, what", [
    ({(0, 0, 0): NAN}, "1 NaN value in 1 of 3 images (the first: image 0)"),
    ({(1, 5, 5): NAN, (1, 6, 6): NAN, (2, 0, 0): NAN}, "3 NaN values in 2 of 3 images (the first: image 1)"),
    ({(2, 3, 3): INF}, "1 infinite value in 1 of 3 images (the first: image 2)"),
    ({(1, 3, 3): -INF, (2, 0, 0): NAN}, "1 NaN value and 1 infinite value in 2 of 3 images (the first: image 1)"),
])
@pytest.mark.parametrize("command, key", [("evaluate", "x"), ("evaluate", "x_adv"), ("denoise", "x_adv")])
def test_nan_or_infinite_images_are_one_line_errors(files, capsys, tmp_path, command, key, values, what):
    # before: `ddl evaluate --input` printed "accuracy 100.00 % on 2 images (mean confidence nan)", exit 0
    path, out = _images_with(tmp_path, key, values), tmp_path / "den.pt"
    argv = {"evaluate": ["evaluate", "--zoo", "mlp", "--dataset", "mnist", "--input", path],
            "denoise": ["denoise", "--input", path, "--dictionary", files / "dict.pt", "--out", out]}[command]
    code, stdout, err = run(capsys, *argv)
    assert code == 2 and stdout == ""
    assert_one_line_error(err, command, f"--input {path}: {key!r} must hold pixels in [0, 1]; got {what}")
    assert not out.exists()


def test_nan_images_as_a_user_sees_them(tmp_path):
    path = _images_with(tmp_path, "x", {(0, 0, 0): NAN, (1, 0, 0): NAN})
    p = run_subprocess("evaluate", "--zoo", "mlp", "--dataset", "mnist", "--input", path)
    assert (p.returncode, p.stdout) == (2, "")
    assert p.stderr == (f"ddl evaluate: error: --input {path}: 'x' must hold pixels in [0, 1]; got 2 NaN values "
                        f"in 2 of 3 images (the first: image 0)\n")


@pytest.mark.parametrize("name, message", [
    ("cifar.pt", "--checkpoint {p} was trained on 'cifar10', not on --dataset 'mnist'"),
    ("shape.pt", "--checkpoint {p} takes images of shape (3, 32, 32); --dataset 'mnist' images are (1, 28, 28)"),
    ("nokeys.pt", "--checkpoint {p} is not a ddl checkpoint (expected format 'ddl-checkpoint-v1', as written "
                  "by `ddl train` or ddl.models.checkpoint.save_checkpoint)."),
    ("damaged.pt", "--checkpoint {p} is a damaged ddl checkpoint: it needs 'meta' with architecture, "
                   "input_shape, n_classes and 'state_dict'."),
])
def test_checkpoint_for_another_data_set_or_without_its_keys(files, capsys, tmp_path, name, message):
    path, out = files / name, tmp_path / "adv.pt"
    code, _, err = run(capsys, "attack", "--checkpoint", path, "--dataset", "mnist", "--out", out)
    assert code == 2
    assert_one_line_error(err, "attack", message.format(p=path))
    assert not out.exists()


def test_a_checkpoint_given_as_dictionary_names_the_missing_keys(files, capsys, tmp_path):
    code, _, err = run(capsys, "denoise", "--input", files / "adv.pt", "--dictionary", files / "cifar.pt",
                       "--out", tmp_path / "den.pt")
    assert code == 2
    assert_one_line_error(err, "denoise", f"--dictionary {files / 'cifar.pt'} lacks 'params', 'dictionary', "
                                          f"'n_channels' (it holds 'dtype', 'format', 'meta', 'state_dict').")


# --- names -------------------------------------------------------------------------------------
def test_unknown_model_is_rejected_for_its_name(tmp_path, capsys):
    # the data folder exists and is empty: the error must come from the model name, not the data
    code, _, err = run(capsys, "train", "--dataset", "mnist", "--model", "vgg", "--data-dir", tmp_path)
    assert code == 2
    assert_one_line_error(err, "train", "argument --model: unknown model 'vgg'; choose one of: mlp, convnet, "
                                        "autoencoder, resnet, hrnn (see `ddl train --help`)")


def test_out_with_several_models_is_refused_before_any_work(tmp_path, capsys):
    code, _, err = run(capsys, "train", "--dataset", "mnist", "--model", "mlp", "convnet", "--out", tmp_path / "m.pt",
                       "--data-dir", tmp_path)
    assert code == 2
    assert_one_line_error(err, "train", "--out names one checkpoint; with several --model (mlp convnet) each is "
                                        "written to runs/train/MODEL-mnist.pt")


@pytest.mark.parametrize("value", ["-1", "100.5", "nan"])
def test_tune_max_clean_drop_outside_0_100_points_is_one_line(capsys, value):
    code, _, err = run(capsys, "tune", "--datasets", "mnist", "--max-clean-drop", value, "--dry-run")
    assert code == 2
    got = f"must be a finite number; got {value!r}" if value == "nan" else \
        f"must be a number of percentage points in [0, 100]; got {value}"
    assert_one_line_error(err, "tune", f"argument --max-clean-drop: {got} (see `ddl tune --help`)")


def test_unknown_zoo_name_suggests_the_close_match(capsys):
    code, _, err = run(capsys, "evaluate", "--zoo", "resnett", "--dataset", "mnist")
    assert code == 2
    assert_one_line_error(err, "evaluate", "argument --zoo: unknown zoo model 'resnett' (did you mean 'resnet'?); "
                                           "choose one of: mlp, convnet, autoencoder, resnet, hrnn "
                                           "(see `ddl evaluate --help`)")
    assert "tools/" not in err


def test_zoo_load_suggests_the_close_match_and_no_uninstalled_tool():
    from ddl import zoo

    with pytest.raises(LookupError, match=r"no pretrained 'convnt' for 'mnist'; the zoo holds: .* \(did you mean "
                                          r"'convnet'\?\)\. Train one with `ddl train --model convnt") as info:
        zoo.load("convnt", "mnist")
    assert "tools/" not in str(info.value)


def test_missing_data_folder_is_one_line(tmp_path, capsys):
    code, _, err = run(capsys, "evaluate", "--zoo", "mlp", "--dataset", "mnist", "--data-dir", tmp_path / "nowhere")
    assert code == 2
    assert err.startswith(f"ddl evaluate: error: load_dataset: data set 'mnist' split 'test' is not in "
                          f"{tmp_path / 'nowhere' / 'mnist'} ")
    assert err.count("\n") == 1 and "ddl download mnist" in err and "Traceback" not in err


# --- options that would be ignored (item 8) ----------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["--attack", "jsma", "--eps", "0.1"], "--eps is an option of --attack fgsm / pgd, not of --attack jsma "
                                           "(JSMA's budget is --theta and --gamma)"),
    (["--attack", "fgsm", "--theta", "0.5"], "--theta is an option of --attack jsma, not of --attack fgsm"),
    (["--attack", "fgsm", "--steps", "5"], "--steps is an option of --attack pgd, not of --attack fgsm"),
    (["--attack", "pgd", "--gamma", "0.2"], "--gamma is an option of --attack jsma, not of --attack pgd"),
])
def test_attack_options_the_attack_does_not_read_are_errors(capsys, tmp_path, argv, message):
    out = tmp_path / "adv.pt"
    code, _, err = run(capsys, "attack", "--zoo", "mlp", "--dataset", "mnist", "--out", out, *argv)
    assert code == 2
    assert_one_line_error(err, "attack", message)
    assert not out.exists()


@pytest.mark.parametrize("eps, rule", [("3", "[0, 1]"), ("-0.1", "[0, 1]"), ("nan", None), ("x", None)])
def test_eps_outside_the_image_range_is_an_error(capsys, tmp_path, eps, rule):
    code, _, err = run(capsys, "attack", "--zoo", "mlp", "--dataset", "mnist", "--eps", eps, "--out", tmp_path / "a.pt")
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("ddl attack: error: argument --eps: must be")
    if rule:
        assert f"must be in {rule} (images are in [0, 1]; write 8/255 for 8 grey levels); got {eps}" in err


def test_eps_accepts_k_over_255():
    args = cli.build_parser().parse_args(["attack", "--zoo", "mlp", "--dataset", "cifar10", "--eps", "8/255",
                                          "--out", "a.pt"])
    assert args.eps == 8 / 255
    assert cli.attack_params(args) == {"eps": 8 / 255}


def test_attack_defaults_are_the_paper_settings():
    parse = cli.build_parser().parse_args
    assert cli.attack_params(parse(["attack", "--zoo", "mlp", "--dataset", "cifar10", "--out", "a"])) == {"eps": 8 / 255}
    jsma = cli.attack_params(parse(["attack", "--zoo", "mlp", "--dataset", "mnist", "--attack", "jsma", "--out", "a"]))
    assert jsma == {"theta": 1.0, "gamma": 0.1, "seed": 0}


@pytest.mark.parametrize("options, message", [
    (["-k", "3"], "--dictionary {d} was learned with -k/--n-nonzero-coefs 1, not -k/--n-nonzero-coefs 3; add "
                  "--refit (with --fit-dataset) to learn it again, or drop those options"),
    (["--patch-size", "5", "--n-components", "16"],
     "--dictionary {d} was learned with --patch-size 7, not --patch-size 5; add --refit (with --fit-dataset) "
     "to learn it again, or drop those options"),
    (["--no-remove-mean"], "--dictionary {d} was learned with --remove-mean, not --no-remove-mean; add "
                        "--refit (with --fit-dataset) to learn it again, or drop those options"),
    (["--refit"], "--refit learns the dictionary again: give --fit-dataset (the images to learn from) and "
                  "--dictionary (the file to overwrite)"),
])
def test_denoise_refuses_options_that_differ_from_the_existing_dictionary(files, capsys, tmp_path, options, message):
    out, d = tmp_path / "den.pt", files / "dict.pt"
    code, _, err = run(capsys, "denoise", "--input", files / "adv.pt", "--dictionary", d, "--out", out, *options)
    assert code == 2
    assert_one_line_error(err, "denoise", message.format(d=d))
    assert not out.exists()


def test_denoise_with_the_existing_dictionary_says_so_and_keeps_the_labels(files, capsys, tmp_path):
    out = tmp_path / "den.pt"
    code, stdout, err = run(capsys, "denoise", "--input", files / "adv.pt", "--dictionary", files / "dict.pt",
                            "-k", "1", "--out", out)
    assert code == 0 and err == ""
    assert stdout.startswith(f"using the dictionary in {files / 'dict.pt'} (16 atoms of 7×7, k = 1)")
    blob = torch.load(out, weights_only=True)
    assert blob["x"].shape == (12, 1, 28, 28) and blob["y"].tolist() == [i % 10 for i in range(12)]


def test_evaluate_says_when_the_data_folder_is_not_read(files, capsys, tmp_path):
    code, out, err = run(capsys, "evaluate", "--zoo", "mlp", "--dataset", "mnist", "--input", files / "adv.pt",
                         "--data-dir", tmp_path)
    assert code == 0 and err == ""
    assert out.splitlines()[0] == f"labels from {files / 'adv.pt'} (its 'y'); --data-dir is not read"


def test_denoise_refuses_a_dictionary_for_other_images(files, capsys, tmp_path):
    code, _, err = run(capsys, "denoise", "--input", files / "cifar_adv.pt", "--dictionary", files / "dict.pt",
                       "--out", tmp_path / "den.pt")
    assert code == 2
    assert_one_line_error(err, "denoise", f"--dictionary {files / 'dict.pt'} was learned on 1-channel images; "
                                          f"--input {files / 'cifar_adv.pt'} has 3 channels")


def test_reproduce_refuses_options_the_preset_would_ignore(capsys, tmp_path):
    code, _, err = run(capsys, "reproduce", "--preset", "quick", "--data-dir", tmp_path, "--run-dir", tmp_path / "r")
    assert code == 2
    assert_one_line_error(err, "reproduce", "--preset quick uses the sample data bundled with ddl; --data-dir would "
                                            "be ignored (drop it, or use --preset paper/tuned)")
    code, _, err = run(capsys, "reproduce", "--preset", "paper", "--tuned-defence", tmp_path / "t.json")
    assert_one_line_error(err, "reproduce", "--tuned-defence is read by --preset tuned only; got --preset paper")
    assert not (tmp_path / "r").exists()


def test_every_option_shows_its_default_or_says_it_has_none():
    parser = cli.build_parser()
    subs = next(a for a in parser._actions if a.dest == "command").choices
    for name, sp in subs.items():
        for action in sp._actions:
            if not action.option_strings or action.nargs == 0 or action.dest in ("checkpoint", "zoo"):
                continue  # flags, and the two members of the required --checkpoint/--zoo choice
            text = sp.formatter_class("ddl")._get_help_string(action) or ""
            assert "default" in text or action.required, (name, action.dest, text)


# --- interruptions and bugs --------------------------------------------------------------------
def test_ctrl_c_is_one_line(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_zoo", interrupted)
    code, _, err = run(capsys, "zoo", "list")
    assert code == 130
    assert err == "ddl zoo: interrupted; re-run the same command to resume\n"


@pytest.mark.parametrize("bug", [TypeError, ZeroDivisionError, KeyError])
def test_bugs_keep_their_traceback(monkeypatch, bug):
    def broken(args):
        raise bug("a bug in ddl")

    monkeypatch.setattr(cli, "cmd_zoo", broken)
    with pytest.raises(bug, match="a bug in ddl"):
        main(["zoo", "list"])


# --- what a user sees: real processes ----------------------------------------------------------
def test_subprocess_corrupt_checkpoint_is_one_line_exit_2(files, tmp_path):
    out = tmp_path / "adv.pt"
    p = run_subprocess("attack", "--checkpoint", files / "text.pt", "--dataset", "mnist", "--out", out)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr == f"ddl attack: error: --checkpoint {files / 'text.pt'} {CORRUPT['text.pt']}\n"
    assert not out.exists()


def test_subprocess_usage_error_is_one_line_exit_2():
    p = run_subprocess("train", "--dataset", "mnist", "--model", "convnt")
    assert p.returncode == 2
    assert p.stderr == ("ddl train: error: argument --model: unknown model 'convnt' (did you mean 'convnet'?); "
                        "choose one of: mlp, convnet, autoencoder, resnet, hrnn (see `ddl train --help`)\n")


def test_subprocess_offline_download_is_one_line_and_leaves_no_file(tmp_path):
    proxy = "http://127.0.0.1:9"  # nothing listens there: every mirror fails at once, as offline
    p = run_subprocess("download", "mnist", "--data-dir", tmp_path,
                       env={"HTTPS_PROXY": proxy, "HTTP_PROXY": proxy, "https_proxy": proxy, "http_proxy": proxy})
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert p.stderr.count("\n") == 1
    assert p.stderr.startswith(f"ddl download: error: download_dataset: could not download "
                               f"train-images-idx3-ubyte.gz into {tmp_path / 'mnist'}; tried: ")
    assert "If this machine is offline, copy the file there by hand" in p.stderr
    assert not [f for f in tmp_path.rglob("*") if f.is_file()]  # no partial download left behind


# --- zoo variants and denoiser-aware training ---------------------------------------------------
def test_variant_with_a_checkpoint_is_refused(capsys, files):
    code, _, err = run(capsys, "evaluate", "--dataset", "cifar10", "--checkpoint", files / "cifar.pt",
                       "--variant", "denoised")
    assert code == 2
    assert_one_line_error(err, "evaluate", "--variant selects a zoo model; it cannot be used with --checkpoint "
                                           "(got --variant denoised)")


def test_train_defence_must_be_a_name_or_a_dictionary_file(capsys, tmp_path, files):
    code, _, err = run(capsys, "train", "--dataset", "mnist", "--model", "mlp", "--defence", "tunde",
                       "--data-dir", tmp_path)
    assert code == 2
    assert_one_line_error(err, "train", "--defence must be none, tuned, paper or a file written by "
                                        "DictionaryDenoiser.save; got 'tunde' (no such file)")
    code, _, err = run(capsys, "train", "--dataset", "mnist", "--model", "mlp", "--defence", files / "text.pt",
                       "--data-dir", tmp_path)
    assert code == 2 and "Traceback" not in err and err.startswith(f"ddl train: error: --defence {files / 'text.pt'}")



def test_robustness_takes_fractions_and_suggests_the_zoo_model(capsys, tmp_path):
    code, _, err = run(capsys, "robustness", "--dataset", "cifar10", "--zoo", "resnt", "--eps", "8/255",
                       "--out", tmp_path / "r")
    assert code == 2
    assert_one_line_error(err, "robustness", "argument --zoo: unknown zoo model 'resnt' (did you mean 'resnet'?); "
                                             "choose one of: mlp, convnet, autoencoder, resnet, hrnn, all "
                                             "(see `ddl robustness --help`)")
    code, _, err = run(capsys, "robustness", "--dataset", "mnist", "--zoo", "mlp", "--eps", "1.5",
                       "--out", tmp_path / "r")
    assert code == 2
    assert_one_line_error(err, "robustness", "argument --eps: must be in (0, 1] (images are in [0, 1]; write "
                                             "8/255 for 8 grey levels); got 1.5 (see `ddl robustness --help`)")
    assert not (tmp_path / "r").exists()


def test_train_behind_a_dictionary_of_the_other_data_set_is_refused(capsys, tmp_path, files, monkeypatch):
    import ddl.data
    from ddl.data.synthetic import make_blobs_images

    monkeypatch.setattr(ddl.data, "load_dataset", lambda name, split, *, data_dir=None: make_blobs_images(
        8, shape=(3, 32, 32), seed=0))
    out = tmp_path / "m.pt"
    code, _, err = run(capsys, "train", "--dataset", "cifar10", "--model", "mlp", "--defence", files / "dict.pt",
                       "--out", out)
    assert code == 2
    assert_one_line_error(err, "train", f"--defence {files / 'dict.pt'}: its dictionary has atoms of 49 values, "
                                        f"not 3 channels x 7x7 patches; it was fitted on another data set than "
                                        f"--dataset cifar10")
    assert not out.exists()


# --- outputs are checked before any work (issue 20) ---------------------------------------------
@pytest.mark.parametrize("command, argv, flag, name", [
    ("attack", ["--zoo", "mlp", "--dataset", "mnist", "--out", "{ro}/adv.pt"], "--out", "adv.pt"),
    ("train", ["--dataset", "mnist", "--model", "mlp", "--out", "{ro}/m.pt"], "--out", "m.pt"),
    ("denoise", ["--input", "{adv}", "--fit-dataset", "mnist", "--out", "{ro}/den.pt"], "--out", "den.pt"),
    ("denoise", ["--input", "{adv}", "--fit-dataset", "mnist", "--dictionary", "{ro}/d.pt", "--out", "{tmp}/den.pt"],
     "--dictionary", "d.pt"),
    ("tune", ["--datasets", "mnist", "--run-dir", "{ro}/tune"], "--run-dir", "tune"),
])
def test_an_output_that_cannot_be_written_is_refused_before_any_work(files, capsys, tmp_path, monkeypatch, read_only,
                                                                     command, argv, flag, name):
    import ddl.data

    ro = tmp_path / "ro"
    ro.mkdir()
    argv = [a.format(ro=ro, adv=files / "adv.pt", tmp=tmp_path) for a in argv]
    monkeypatch.setattr(ddl.data, "load_dataset", lambda *a, **k: pytest.fail("loaded a data set"))
    monkeypatch.setattr(cli, "_load_model", lambda *a, **k: pytest.fail("loaded a model"))
    read_only(ro)
    code, out, err = run(capsys, command, *argv)
    assert code == 2 and out == ""
    assert_one_line_error(err, command, f"{flag} {ro / name}: cannot write {ro}: read-only file system")
    assert list(ro.iterdir()) == []


def test_an_output_that_is_a_folder_is_refused(files, capsys, tmp_path):
    code, _, err = run(capsys, "attack", "--zoo", "mlp", "--dataset", "mnist", "--out", tmp_path)
    assert code == 2
    assert_one_line_error(err, "attack", f"--out {tmp_path} is a folder; give a file name in it")


@pytest.mark.parametrize("attack, message", [
    ("pgd:bdpa", "unknown threat model 'bdpa' (did you mean 'bpda'?) in 'pgd:bdpa'; choose one of: oblivious, "
                 "bpda, exact, soft"),
    ("apgd-c:soft", "unknown attack 'apgd-c' (did you mean 'apgd-ce'?) in 'apgd-c:soft'; choose one of: pgd, "
                    "apgd-ce, apgd-t, fab-t, square"),
    ("pgd", "attack 'pgd' needs a threat model after ':', one of: oblivious, bpda, exact, soft (e.g. 'pgd:soft')"),
])
def test_robustness_attack_typos_are_named_with_the_close_match(capsys, tmp_path, attack, message):
    code, _, err = run(capsys, "robustness", "--dataset", "mnist", "--zoo", "mlp", "--eps", "0.1",
                       "--attacks", "pgd:oblivious", attack, "--out", tmp_path / "r")
    assert code == 2
    assert_one_line_error(err, "robustness", f"argument --attacks: {message} (see `ddl robustness --help`)")
    assert not (tmp_path / "r").exists()


def test_robustness_errors_have_one_prefix(files, capsys, tmp_path, monkeypatch, read_only):
    import ddl.data
    from ddl.data.synthetic import make_blobs_images

    monkeypatch.setattr(ddl.data, "load_dataset", lambda name, split, *, data_dir=None: make_blobs_images(
        8, shape=(3, 32, 32), seed=0))
    argv = ["robustness", "--dataset", "cifar10", "--defence", "none", "--eps", "8/255"]
    missing = tmp_path / "missing.pt"
    code, _, err = run(capsys, *argv, "--checkpoint", missing, "--out", tmp_path / "r")
    assert code == 2
    assert_one_line_error(err, "robustness", f"--checkpoint {missing} does not exist.")
    code, _, err = run(capsys, *argv, "--checkpoint", files / "text.pt", "--out", tmp_path / "r")
    assert_one_line_error(err, "robustness", f"--checkpoint {files / 'text.pt'} {CORRUPT['text.pt']}")
    code, _, err = run(capsys, *argv, "--checkpoint", files / "cifar.pt", "--n-images", "9", "--out", tmp_path / "r")
    assert code == 2
    assert_one_line_error(err, "robustness", "--n-images must be <= the 8 cifar10 test images; got 9.")
    ro = tmp_path / "ro"
    ro.mkdir()
    read_only(ro)
    code, _, err = run(capsys, *argv, "--checkpoint", files / "cifar.pt", "--out", ro)
    assert code == 2
    assert_one_line_error(err, "robustness", f"--out {ro}: cannot write {ro}: read-only file system; nothing can "
                                             f"be computed in a folder that cannot be written")


def test_robustness_names_defence_when_its_dictionary_does_not_fit_the_images(files, capsys, tmp_path,
                                                                               monkeypatch):
    import ddl.data
    from ddl.data.synthetic import make_blobs_images
    from ddl.defence import DictionaryDenoiser
    from ddl.models import build_model
    from ddl.models.checkpoint import save_checkpoint

    monkeypatch.setattr(ddl.data, "load_dataset", lambda name, split, *, data_dir=None: make_blobs_images(
        8, shape=(1, 28, 28), seed=0))
    save_checkpoint(tmp_path / "m.pt", build_model("mlp", (1, 28, 28)),
                    {"architecture": "mlp", "input_shape": [1, 28, 28], "n_classes": 10, "dataset": "mnist"})
    cifar = tmp_path / "dict-cifar10.pt"
    DictionaryDenoiser(patch_size=4, n_components=8, n_nonzero_coefs=1, max_patches=500).fit(
        torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))).save(cifar)
    argv = ["robustness", "--dataset", "mnist", "--checkpoint", tmp_path / "m.pt", "--eps", "0.1", "--n-images", "4",
            "--out", tmp_path / "r"]
    code, _, err = run(capsys, *argv, "--defence", cifar)
    assert code == 2
    assert_one_line_error(err, "robustness", f"--defence {cifar} was fitted on 3-channel images; mnist images have "
                                             f"1 channel (fit one on mnist: `ddl denoise --fit-dataset mnist "
                                             f"--dictionary FILE ...`).")
    big = tmp_path / "dict-big.pt"
    DictionaryDenoiser(patch_size=29, n_components=8, n_nonzero_coefs=1, max_patches=50).fit(
        torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))).save(big)
    code, _, err = run(capsys, *argv, "--defence", big)
    assert_one_line_error(err, "robustness", f"--defence {big} has 29×29 patches, larger than the 28×28 mnist "
                                             f"images (fit one on mnist: `ddl denoise --fit-dataset mnist "
                                             f"--dictionary FILE ...`).")
    code, _, err = run(capsys, *argv, "--defence", files / "cifar.pt")
    assert_one_line_error(err, "robustness", f"--defence {files / 'cifar.pt'} is not a file written by "
                                             f"DictionaryDenoiser.save (or `ddl denoise --dictionary`).")
    code, _, err = run(capsys, *argv, "--defence", files / "text.pt")
    assert_one_line_error(err, "robustness", f"--defence {files / 'text.pt'} {CORRUPT['text.pt']}")


def test_denoise_refuses_fit_dataset_of_other_images_than_the_existing_dictionary(files, capsys, tmp_path):
    d, out = files / "dict.pt", tmp_path / "den.pt"
    code, _, err = run(capsys, "denoise", "--input", files / "adv.pt", "--fit-dataset", "cifar10", "--dictionary", d,
                       "--out", out)
    assert code == 2
    assert_one_line_error(err, "denoise", f"--dictionary {d} exists and was learned on 1-channel images, not on "
                                          f"--fit-dataset cifar10 (3-channel images); add --refit to learn it again "
                                          f"from cifar10 and overwrite it, or give another --dictionary")
    assert not out.exists()
    # the data set it was learned on: the existing dictionary is used (README's command, run twice)
    code, stdout, err = run(capsys, "denoise", "--input", files / "adv.pt", "--fit-dataset", "mnist",
                            "--dictionary", d, "--out", out)
    assert code == 0 and err == ""
    assert stdout.startswith(f"using the dictionary in {d} (16 atoms of 7×7, k = 1)\n")


def test_denoise_says_it_learned_and_saved_the_dictionary(files, capsys, tmp_path, monkeypatch):
    import re

    import ddl.data
    from ddl.data.synthetic import make_blobs_images

    monkeypatch.setattr(ddl.data, "load_dataset", lambda name, split, *, data_dir=None: make_blobs_images(
        20, shape=(1, 28, 28), seed=0))
    d, out = tmp_path / "dict-mnist.pt", tmp_path / "den.pt"
    small = ["--patch-size", "4", "--n-components", "8", "-k", "1", "--max-patches", "200"]
    code, stdout, err = run(capsys, "denoise", "--input", files / "adv.pt", "--fit-dataset", "mnist",
                            "--dictionary", d, "--out", out, *small)
    assert code == 0 and err == ""
    first, second = stdout.splitlines()
    assert re.fullmatch(rf"learned a dictionary on the mnist training set \(20 images\): 8 atoms of 4×4, k = 1, "
                        rf"in \d+\.\d s; saved it to {re.escape(str(d))}", first), first
    assert second.startswith("denoised 12 images in ") and d.is_file()
    code, stdout, _ = run(capsys, "denoise", "--input", files / "adv.pt", "--fit-dataset", "mnist", "--out", out,
                          *small)
    assert code == 0 and stdout.splitlines()[0].endswith(
        " s; not kept (give --dictionary FILE to keep it)")
