"""ddl.experiments.figures draws from the run folder's files alone, and says when a pixel sample is an old strided one."""

import json

import torch

from ddl.experiments import figures


def _run_folder(tmp_path, n, new_style):
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (n,), generator=g)
    x = torch.rand(8, 1, 8, 8, generator=g)
    arrays = {"y": y.to(torch.uint8), **{f"pred_{k}": y.to(torch.uint8) for k in ("clean", "perturbed", "denoised")},
              **{f"examples_{k}": x.half() for k in ("clean", "perturbed", "denoised")},
              **{f"pixels_{k}": torch.rand(20_000, generator=g).half() for k in ("clean", "perturbed", "denoised")},
              **{f"{m}_{k}": torch.rand(n, generator=g) * (30 if m == "psnr" else 1)
                 for m in ("psnr", "ssim") for k in ("perturbed", "denoised")}}
    if new_style:
        arrays["examples_index"] = torch.arange(8)
    (tmp_path / "arrays").mkdir()
    torch.save(arrays, tmp_path / "arrays" / "cell.pt")
    record = {"dataset": "mnist", "model": "convnet", "attack": "fgsm", "attack_params": {"eps": 0.1},
              "accuracy": {"perturbed": 0.5, "denoised": 0.9}, "files": {"arrays": "arrays/cell.pt"}}
    (tmp_path / "results.json").write_text(json.dumps({"records": [record]}))
    return tmp_path


def test_old_strided_samples_are_flagged_in_the_caption(tmp_path):
    # 2,500 images of 64 values: the old rule kept every 8th value, i.e. 8 of the 64 positions of each image
    run = _run_folder(tmp_path, 2500, new_style=False)
    captions = dict((path, caption) for caption, path in figures.draw_figures(run))
    assert captions["figures/qq-mnist-convnet-fgsm.png"].endswith(
        "Caution: sample of an older ddl, every 8-th pixel value, which reads 8 of the 64 pixel positions of each image.")
    assert "Caution" in captions["figures/density-mnist-convnet-fgsm.png"]
    assert {"figures/examples-mnist-convnet-fgsm.png", "figures/quality-mnist-convnet-fgsm.png"} <= set(captions)
    # no t-SNE, atoms or CAM arrays and no earlier PNGs: those figures are left out, nothing is computed
    assert not any("tsne" in p or "atoms" in p or "cam" in p for p in captions)



def test_a_resample_behind_a_refitted_dictionary_states_its_agreement(tmp_path):
    run = _run_folder(tmp_path, 2500, new_style=True)
    arrays = torch.load(run / "arrays" / "cell.pt", weights_only=True)
    arrays.update(pixels_source="recomputed", pixels_agreement={"perturbed": 0.9995, "denoised": 0.93})
    torch.save(arrays, run / "arrays" / "cell.pt")
    captions = dict((path, caption) for caption, path in figures.draw_figures(run))
    for kind in ("qq", "density"):
        assert captions[f"figures/{kind}-mnist-convnet-fgsm.png"].endswith(
            "its denoised predictions agree with this cell's on 93.0 % of the images.")
    arrays["pixels_agreement"] = {"perturbed": 1.0, "denoised": 0.9992}  # as good as identical: no caveat
    torch.save(arrays, run / "arrays" / "cell.pt")
    captions = dict((path, caption) for caption, path in figures.draw_figures(run))
    assert "agree" not in captions["figures/qq-mnist-convnet-fgsm.png"]
    assert "Caution" not in captions["figures/qq-mnist-convnet-fgsm.png"]
