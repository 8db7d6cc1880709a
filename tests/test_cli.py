import json

import pytest

from ddl.cli import main


def test_demo_smoke_preset_writes_results(tmp_path, capsys):
    assert main(["demo", "--preset", "smoke", "--run-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "perturbed" in out and "denoised" in out
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["config"]["name"] == "smoke"


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


# user errors (one line, exit 2): tests/test_cli_errors.py


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert "ddl 0.1.0" in capsys.readouterr().out


def test_zoo_list_shows_every_checkpoint_with_its_accuracy_target_and_the_total_size(capsys):
    from ddl import zoo

    entries = zoo.entries()
    assert main(["zoo", "list"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(entries) + 2  # header, one line per checkpoint, total
    for e, line in zip(entries, out[1:]):
        fields = line.split()
        assert fields[:3] == [e.model, e.dataset, f"{100 * e.accuracy:.2f}%"]
        assert fields[3] == f"{e.extra['target_percent']:.2f}"
    total = sum(e.path.stat().st_size for e in entries) / 1e6
    assert out[-1] == f"{len(entries)} checkpoints, {total:.1f} MB"
