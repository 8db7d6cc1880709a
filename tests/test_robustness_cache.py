"""ddl.robustness._cache: the robustness cache is keyed on everything a result depends on, its
entries are verified before use, and an interrupted evaluation resumes at the next chunk."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import ddl.robustness._cache as rcache
import ddl.robustness.evaluate as ev
from ddl.defence import DictionaryDenoiser
from ddl.robustness import evaluate_robustness


def _model(n_in=16, n_classes=4, seed=21):
    """Linear, zero-sum rows (every class occurs), random weights."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(n_in, n_classes)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(n_classes, n_in, generator=g))
        lin.weight.sub_(lin.weight.mean(1, keepdim=True))
        lin.bias.zero_()
    return nn.Sequential(nn.Flatten(), lin).eval()


def _data(model, n=20, seed=0):
    x = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed))
    return x, model(x).argmax(1)


def _entries(folder):
    return sorted(p for p in folder.glob("*.json") if not p.name.endswith(".entry.json"))


_TINY = dict(pgd_steps=3, apgd_iter=3, square_queries=10, unbounded=False)


def test_cascade_cache_is_keyed_on_the_attack_list(tmp_path):
    # issue 19: 'pgd:bpda square' then 'square' alone under one key reported square's cumulative
    # survival (after PGD) as square's own
    model = _model()
    x, y = _data(model)
    kw = dict(eps=[0.05, 0.1], cascade=True, **_TINY)
    first = evaluate_robustness(model, x, y, attacks=["pgd:bpda", "square"], cache_dir=tmp_path,
                                cache_key="k", **kw)
    again = evaluate_robustness(model, x, y, attacks=["square"], cache_dir=tmp_path, cache_key="k", **kw)
    fresh = evaluate_robustness(model, x, y, attacks=["square"], **kw)
    assert fresh.attacks["square"] != first.attacks["square"]        # the bug would show here
    assert again.attacks == fresh.attacks
    for k in fresh.worst_case:
        assert torch.equal(again.survival["square"][k], fresh.survival["square"][k])


@pytest.fixture(scope="module")
def tiny_denoiser():
    x = torch.rand(20, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    return DictionaryDenoiser(patch_size=2, n_components=6, n_nonzero_coefs=1, remove_mean=False,
                              max_patches=500).fit(x)


def _changed_denoiser(den):
    d = den.dictionary_.clone()
    d[0] = -d[0]                        # same parameters, another dictionary (atom 0's sign)
    return DictionaryDenoiser.from_dictionary(d, patch_size=2, n_nonzero_coefs=1, remove_mean=False)


_BASE = dict(eps=[0.05], attacks=["pgd:bpda", "apgd-ce:bpda", "square"], **_TINY)


@pytest.mark.parametrize("change", [
    {"attacks": ["apgd-ce:bpda", "pgd:bpda", "square"]}, {"attacks": ["pgd:bpda", "square"]},
    {"pgd_steps": 4}, {"pgd_restarts": 2}, {"apgd_iter": 4}, {"square_queries": 11},
    {"n_target_classes": 2}, {"beta": 5.0}, {"eot_samples": 2}, {"cascade": True}, {"seed": 1},
    "defence", "kernel", "images", "labels", "model",
], ids=str)
def test_every_input_of_a_result_is_in_its_cache_key(tmp_path, tiny_denoiser, monkeypatch, change):
    model = _model()
    x, y = _data(model, n=6)
    base = dict(_BASE, defence=tiny_denoiser)
    evaluate_robustness(model, x, y, cache_dir=tmp_path, cache_key="k", **base)
    written = []
    real_save = rcache.save_entry
    monkeypatch.setattr(rcache, "save_entry", lambda path, **kw: (written.append(kw["name"]), real_save(path, **kw)))
    evaluate_robustness(model, x, y, cache_dir=tmp_path, cache_key="k", **base)
    assert written == []                                    # the same inputs: all read back
    kw = dict(base)
    if change == "defence":
        kw["defence"] = _changed_denoiser(tiny_denoiser)
    elif change == "kernel":
        other = {"native": "torch", "torch": "native"}[rcache.omp_kernel_name("cpu")]
        monkeypatch.setattr(rcache, "omp_kernel_name", lambda device: other)
    elif change == "images":
        x = x.clone()
        x[0, 0, 0, 0] = 0.5 if x[0, 0, 0, 0] != 0.5 else 0.25
    elif change == "labels":
        y = (y + 1) % 4
    elif change == "model":
        model = _model(seed=22)
    else:
        kw.update(change)
    evaluate_robustness(model, x, y, cache_dir=tmp_path, cache_key="k", **kw)
    assert "bare-pgd" in written and any(n != "bare-pgd" for n in written)


def test_a_tampered_or_unrecorded_entry_is_recomputed(tmp_path, capsys):
    model = _model()
    x, y = _data(model, n=8)
    kw = dict(eps=[0.1], attacks=["pgd:bpda"], cache_dir=tmp_path, cache_key="k", **_TINY)
    first = evaluate_robustness(model, x, y, **kw)
    (entry,) = [p for p in _entries(tmp_path) if "pgd_bpda" in p.name]
    blob = json.loads(entry.read_text())
    assert blob["survival"] == [int(v) for v in first.survival["pgd:bpda"]["0.1"]]
    blob["survival"] = [1 - v for v in blob["survival"]]    # same size, other bits
    entry.write_text(json.dumps(blob, indent=2) + "\n")
    second = evaluate_robustness(model, x, y, **kw)
    err = capsys.readouterr().err
    assert (f"ddl: warning: cache entry {entry} failed verification: SHA-256 differs from its record "
            f"(the file was edited or swapped); recomputing it") in err
    assert torch.equal(second.survival["pgd:bpda"]["0.1"], first.survival["pgd:bpda"]["0.1"])
    assert json.loads(entry.read_text())["survival"] == [int(v) for v in first.survival["pgd:bpda"]["0.1"]]
    # a file whose record is missing (killed between the two writes) is recomputed too
    entry.with_name(entry.name + ".entry.json").unlink()
    blob["survival"] = [1 - v for v in json.loads(entry.read_text())["survival"]]
    entry.write_text(json.dumps(blob))
    third = evaluate_robustness(model, x, y, **kw)
    assert torch.equal(third.survival["pgd:bpda"]["0.1"], first.survival["pgd:bpda"]["0.1"])


def test_an_interrupted_evaluation_resumes_at_the_next_chunk(tmp_path, monkeypatch):
    model = _model()
    x, y = _data(model, n=10)                              # all clean-correct: every image attacked
    kw = dict(eps=[0.1], attacks=["pgd:bpda"], chunk_size=4, cache_dir=tmp_path, cache_key="k", **_TINY)
    real_pgd = ev.pgd_linf
    calls = []

    def interrupted(model, x, y, *, image_ids, **k):
        calls.append(image_ids.tolist())
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_pgd(model, x, y, image_ids=image_ids, **k)

    monkeypatch.setattr(ev, "pgd_linf", interrupted)
    with pytest.raises(KeyboardInterrupt):
        evaluate_robustness(model, x, y, **kw)
    assert len(_entries(tmp_path)) == 1                    # chunk [0, 4) of pgd:bpda
    calls.clear()
    monkeypatch.setattr(ev, "pgd_linf", lambda *a, image_ids, **k: (calls.append(image_ids.tolist()),
                                                                    real_pgd(*a, image_ids=image_ids, **k))[1])
    resumed = evaluate_robustness(model, x, y, **kw)
    # chunk by chunk, the attacks in order: [0, 4) has pgd:bpda cached and needs bare PGD (the
    # interrupted call); then pgd:bpda and bare PGD on [4, 8) and on [8, 10)
    assert calls == [[0, 1, 2, 3], [4, 5, 6, 7], [4, 5, 6, 7], [8, 9], [8, 9]]
    fresh = evaluate_robustness(model, x, y, **{k: v for k, v in kw.items() if k not in ("cache_dir", "cache_key")})
    assert resumed.to_dict()["survival"] == fresh.to_dict()["survival"]
    assert resumed.bare_pgd == fresh.bare_pgd and resumed.worst_case == fresh.worst_case


def test_a_unit_keeps_its_cpu_time_apart_from_its_wall_time(tmp_path, monkeypatch, one_thread):
    # a unit timed across a pause (SIGSTOP) or on a starved machine records that wall time; its
    # CPU time does not count the wait: 0.4 s asleep and >= 0.3 s of CPU spent inside the attack
    from _timing import asleep_then_busy

    model = _model()
    x, y = _data(model, n=8)
    kw = dict(eps=[0.1], attacks=["pgd:bpda"], cache_dir=tmp_path, cache_key="k", **_TINY)
    real_pgd = ev.pgd_linf
    monkeypatch.setattr(ev, "pgd_linf", asleep_then_busy(real_pgd, 0.4, 0.3))
    res = evaluate_robustness(model, x, y, **kw)
    wall, cpu = res.seconds["pgd:bpda"], res.cpu_seconds["pgd:bpda"]
    assert wall >= 0.7 and 0.3 <= cpu <= wall - 0.4 + 0.05
    (record,) = [p for p in tmp_path.glob("*pgd_bpda*.entry.json")]
    assert json.loads(record.read_text())["cpu_seconds"] == cpu
    monkeypatch.setattr(ev, "pgd_linf", real_pgd)
    again = evaluate_robustness(model, x, y, **kw)                 # read back from the cache
    assert again.seconds == res.seconds and again.cpu_seconds == res.cpu_seconds
    # an entry written before ddl kept CPU time: the attack's CPU time is unknown, not 0
    blob = json.loads(record.read_text())
    del blob["cpu_seconds"]
    record.write_text(json.dumps(blob))
    old = evaluate_robustness(model, x, y, **kw)
    assert old.cpu_seconds == {"pgd:bpda": None} and old.seconds == res.seconds
    assert old.to_dict()["survival"] == res.to_dict()["survival"]


def test_module_hash_is_of_the_state_not_of_the_object(tiny_denoiser, tmp_path):
    path = tmp_path / "den.pt"
    tiny_denoiser.save(path)
    loaded = DictionaryDenoiser.load(path)
    assert rcache.module_sha256(loaded) == rcache.module_sha256(tiny_denoiser)
    loaded.transform(torch.rand(2, 1, 4, 4))               # using it changes nothing
    assert rcache.module_sha256(loaded) == rcache.module_sha256(tiny_denoiser)
    assert rcache.module_sha256(_changed_denoiser(tiny_denoiser)) != rcache.module_sha256(tiny_denoiser)
    assert rcache.module_sha256(None) == "none"
