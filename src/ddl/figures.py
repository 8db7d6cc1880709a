"""The reproduction's figures, drawn from what the grid left on disk (arrays and caches).

Each figure is a PNG under ``<run_dir>/figures/``; ``<run_dir>/figures.json`` lists
(caption, path) pairs in the order the report shows them. Models, dictionaries and attacked sets
come from the run's cache (nothing is retrained or re-attacked here).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ddl._io import atomic_write_json, safe_torch_load

CAM_MODELS = ("convnet", "resnet", "autoencoder")
TSNE_POINTS = 1500


def draw_figures(rc, results: dict, run_dir: Path, *, data_dir=None, device="cpu") -> list[tuple[str, str]]:
    """Draw every figure of the report; return and save the (caption, path) list."""
    from ddl import plots

    run_dir = Path(run_dir)
    out, cache = run_dir / "figures", run_dir / "cache"
    figures: list[tuple[str, str]] = []

    def save(fig, name: str, caption: str) -> None:
        plots.save_figure(fig, out / name)
        figures.append((caption, f"figures/{name}"))

    for dataset in rc.datasets:
        recs = [r for r in results["records"] if r["dataset"] == dataset]
        if not recs:
            continue
        name = {"mnist": "MNIST", "cifar10": "CIFAR-10"}[dataset]
        _tsne(rc, dataset, data_dir, save, name)
        _atoms(rc, dataset, data_dir, device, cache, save, name)
        ref_model = "convnet" if any(r["model"] == "convnet" for r in recs) else recs[0]["model"]
        for r in recs:
            if r["model"] != ref_model:
                continue
            arrays = safe_torch_load(run_dir / r["files"]["arrays"])
            tag, label = f"{dataset}-{r['model']}-{r['attack']}", f"{name}, {r['model']}, {r['attack'].upper()}"
            fig = plots.plot_qq(arrays["pixels_clean"].float(), arrays["pixels_perturbed"].float(),
                                denoised=arrays["pixels_denoised"].float())
            save(fig, f"qq-{tag}.png", f"QQ-plot of pixel values, clean vs perturbed and denoised ({label}; Fig. 4)")
            fig = plots.plot_density({k: arrays[f"pixels_{k}"].float() for k in ("clean", "perturbed", "denoised")},
                                     grey_levels=255, log=True)
            save(fig, f"density-{tag}.png", f"Density of pixel values ({label}; Fig. 4)")
            n = len(arrays["examples_clean"])
            fig = plots.plot_examples(arrays["examples_clean"].float(), arrays["examples_perturbed"].float(),
                                      arrays["examples_denoised"].float(), y=arrays["y"][:n],
                                      pred_clean=arrays["pred_clean"][:n], pred_adv=arrays["pred_perturbed"][:n],
                                      pred_den=arrays["pred_denoised"][:n], n=min(8, n),
                                      class_names=_classes(dataset))
            save(fig, f"examples-{tag}.png", f"Clean / perturbed / denoised examples with predictions ({label}; Fig. 8)")
            fig = plots.plot_metric_histograms(
                {k: arrays[f"psnr_{k}"] for k in ("perturbed", "denoised")},
                {k: arrays[f"ssim_{k}"] for k in ("perturbed", "denoised")}, title=label)
            save(fig, f"quality-{tag}.png", f"PSNR and SSIM of perturbed and denoised images ({label})")
        for model in CAM_MODELS:
            if any(r["model"] == model and r["attack"] == "fgsm" for r in recs):
                _cam(rc, dataset, model, data_dir, device, cache, save, name)
        sweep = [{"model": r["model"], "eps": r["attack_params"]["eps"], "perturbed": r["accuracy"]["perturbed"],
                  "denoised": r["accuracy"]["denoised"]} for r in results.get("sweep", []) if r["dataset"] == dataset]
        if sweep:
            fig = plots.plot_eps_curves(sweep, title=f"{name}: FGSM accuracy vs ε")
            save(fig, f"eps-{dataset}.png", f"Accuracy against the FGSM budget ε, perturbed and denoised ({name})")
    atomic_write_json(run_dir / "figures.json", figures)
    return figures


def _classes(dataset: str) -> tuple[str, ...]:
    """Class names of a data set (digits for MNIST, 'airplane'... for CIFAR-10)."""
    from ddl.data import DATASETS

    return DATASETS[dataset]["classes"]


def _cell(rc, dataset, model, data_dir, device="cpu"):
    from ddl.config import cell_config

    return cell_config(rc, dataset, model, data_dir=data_dir, device=device)


def _tsne(rc, dataset, data_dir, save, name):
    from ddl import pipeline, plots

    _, _, x_test, y_test = pipeline.load_data(_cell(rc, dataset, rc.models[0], data_dir))
    n = min(TSNE_POINTS, len(x_test))
    emb = plots.tsne(x_test[:n].flatten(1), random_state=0)
    save(plots.plot_tsne(emb, y_test[:n], title=f"t-SNE of {n} {name} test images",
                         class_names=_classes(dataset)),
         f"tsne-{dataset}.png", f"t-SNE of the {name} test images (pixels; Fig. 3)")


def _atoms(rc, dataset, data_dir, device, cache, save, name):
    from ddl import pipeline, plots

    cfg = _cell(rc, dataset, rc.models[0], data_dir, device)
    if cfg.defence.dictionary_source != "clean":
        return  # the perturbed-patch dictionaries differ per attack; the clean one is the figure
    x_train, _, _, _ = pipeline.load_data(cfg)
    den, _ = pipeline.get_denoiser(cfg, x_train, cache, progress=False)
    p = cfg.defence.patch_size
    fig = plots.plot_atoms(den.dictionary_.cpu(), p, n_channels=x_train.shape[1],
                           title=f"{name}: {den.dictionary_.shape[0]} atoms of {p}×{p}")
    save(fig, f"atoms-{dataset}.png", f"Learned dictionary atoms ({name}; Fig. 4a)")


def _cam(rc, dataset, model_name, data_dir, device, cache, save, name, k: int = 10):
    from ddl import pipeline, plots

    cfg = _cell(rc, dataset, model_name, data_dir, device)
    x_train, y_train, x_test, y_test = pipeline.load_data(cfg)
    model, info = pipeline.get_model(cfg, x_train, y_train, x_test, y_test, cache, progress=False)
    attack = cfg.attacks[0]
    n = attack.n_images or len(x_test)
    x, y = x_test[:n], y_test[:n]
    x_adv = pipeline.get_adversarial(cfg, attack, model, info["key"], x, y, cache)
    from ddl.models.train import predict

    logits = predict(model, x_adv, device=device).cpu()
    idx = torch.as_tensor(plots.top_misclassified(logits, y, k))
    if len(idx) == 0:
        return
    pred = logits[idx].argmax(1)
    heat = plots.grad_cam(model.cpu(), x_adv[idx], pred, layer=model.cam_layer)
    names = _classes(dataset)
    titles = [f"true {names[int(t)]} → pred {names[int(p)]}" for t, p in zip(y[idx], pred)]
    fig = plots.plot_cam(x_adv[idx], heat, titles=titles)
    save(fig, f"cam-{dataset}-{model_name}.png",
         f"Top {len(idx)} most confident misclassifications under FGSM with Grad-CAM of the predicted class "
         f"({name}, {model_name}; Figs. 5–7, 9, 10)")
