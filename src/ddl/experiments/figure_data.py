"""What the figures need beyond the cells' arrays, computed once and saved in the run folder.

``ddl reproduce`` calls :func:`save_figure_arrays` after the grid; :mod:`ddl.experiments.figures` then draws
every figure from files alone (``<run_dir>/figure_arrays/*.pt`` and the cells' ``arrays/``), so
redrawing a figure never trains a model, fits a dictionary or runs an attack. Models,
dictionaries and attacked sets come from the run's cache (nothing is recomputed that the grid
computed).

Files, one per figure (torch files of tensors and plain values, read weights-only):

- ``tsne-<dataset>.pt``: ``embedding`` (n, 2) float32, ``labels`` (n,) uint8;
- ``atoms-<dataset>.pt``: ``dictionary`` (n_components, C·p·p) float32, ``patch_size``, ``n_channels``;
- ``cam-<dataset>-<model>.pt``: ``images`` (k, C, H, W) float16 (the attacked images), ``heat``
  (k, H, W) float16 (Grad-CAM of the predicted class), ``y`` and ``pred`` (k,) uint8.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ddl._io import atomic_torch_save
from ddl.experiments.config import ReproduceConfig, cell_config

FOLDER = "figure_arrays"
CAM_MODELS = ("convnet", "resnet", "autoencoder")
TSNE_POINTS = 1500
CAM_K = 10


def save_figure_arrays(rc: ReproduceConfig, results: dict, run_dir: str | Path, *, data_dir=None,
                       device: str = "cpu") -> list[Path]:
    """Compute and save the t-SNE embedding, the atoms and the CAM maps of each data set of
    ``results``; return the paths written."""
    run_dir = Path(run_dir)
    out = run_dir / FOLDER
    cache = run_dir / "cache"
    written = []
    for dataset in rc.datasets:
        recs = [r for r in results["records"] if r["dataset"] == dataset]
        if not recs:
            continue
        written.append(_save_tsne(rc, dataset, data_dir, out))
        atoms = _save_atoms(rc, dataset, data_dir, device, cache, out)
        written += [atoms] if atoms else []
        for model in CAM_MODELS:
            if any(r["model"] == model and r["attack"] == "fgsm" for r in recs):
                cam = _save_cam(rc, dataset, model, data_dir, device, cache, out)
                written += [cam] if cam else []
    return written


def _save_tsne(rc, dataset, data_dir, out: Path) -> Path:
    from ddl import plots
    from ddl.experiments import pipeline

    _, _, x_test, y_test = pipeline.load_data(cell_config(rc, dataset, rc.models[0], data_dir=data_dir))
    n = min(TSNE_POINTS, len(x_test))
    emb = plots.tsne(x_test[:n].flatten(1), random_state=0)
    return atomic_torch_save(out / f"tsne-{dataset}.pt", {"embedding": torch.from_numpy(emb).float(),
                                                          "labels": y_test[:n].to(torch.uint8)})


def _save_atoms(rc, dataset, data_dir, device, cache, out: Path) -> Path | None:
    from ddl.experiments import pipeline

    cfg = cell_config(rc, dataset, rc.models[0], data_dir=data_dir, device=device)
    if cfg.defence.dictionary_source != "clean":
        return None  # the perturbed-patch dictionaries differ per attack; the clean one is the figure
    x_train, _, _, _ = pipeline.load_data(cfg)
    den, _ = pipeline.get_denoiser(cfg, x_train, cache, progress=False)
    return atomic_torch_save(out / f"atoms-{dataset}.pt", {"dictionary": den.dictionary_.detach().cpu().float(),
                                                           "patch_size": cfg.defence.patch_size,
                                                           "n_channels": int(x_train.shape[1])})


def _save_cam(rc, dataset, model_name, data_dir, device, cache, out: Path) -> Path | None:
    from ddl import plots
    from ddl.experiments import pipeline
    from ddl.models.train import predict

    cfg = cell_config(rc, dataset, model_name, data_dir=data_dir, device=device)
    x_train, y_train, x_test, y_test = pipeline.load_data(cfg)
    model, info = pipeline.get_model(cfg, x_train, y_train, x_test, y_test, cache, progress=False)
    attack = cfg.attacks[0]
    n = attack.n_images or len(x_test)
    x, y = x_test[:n], y_test[:n]
    x_adv = pipeline.get_adversarial(cfg, attack, model, info["key"], x, y, cache, progress=False)
    logits = predict(model, x_adv, device=device).cpu()
    idx = torch.as_tensor(plots.top_misclassified(logits, y, CAM_K))
    if len(idx) == 0:
        return None
    pred = logits[idx].argmax(1)
    heat = plots.grad_cam(model.cpu(), x_adv[idx], pred, layer=model.cam_layer)
    return atomic_torch_save(out / f"cam-{dataset}-{model_name}.pt",
                             {"images": x_adv[idx].to(torch.float16), "heat": torch.as_tensor(heat).to(torch.float16),
                              "y": y[idx].to(torch.uint8), "pred": pred.to(torch.uint8)})
