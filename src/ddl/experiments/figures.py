"""The reproduction's figures, drawn from files alone: ``results.json``, the cells' ``arrays/`` and
``figure_arrays/`` (written by :func:`ddl.experiments.figure_data.save_figure_arrays`).

Each figure is a PNG under ``<run_dir>/figures/``; ``<run_dir>/figures.json`` lists (caption,
path) pairs in the order the report shows them. Nothing here trains a model, fits a dictionary or
runs an attack, so ``ddl report RUN_DIR --figures`` can redraw any run folder, committed ones
included. A figure whose saved arrays are missing (a run folder written before they were saved)
keeps its existing PNG when there is one, and is otherwise left out.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ddl._io import atomic_write_json
from ddl._validate import load_torch_file
from ddl.constants import DATASET_TITLES, DATASETS

FIGURE_ARRAYS = "figure_arrays"  # ddl.experiments.figure_data.FOLDER
CAM_MODELS = ("convnet", "resnet", "autoencoder")


def draw_figures(run_dir: str | Path, results: dict | None = None) -> list[tuple[str, str]]:
    """Draw every figure of the report from the files of ``run_dir``; return and save the
    (caption, path) list."""
    from ddl import plots

    run_dir = Path(run_dir)
    if results is None:
        results = json.loads((run_dir / "results.json").read_text())
    out, arrays_dir = run_dir / "figures", run_dir / FIGURE_ARRAYS
    figures: list[tuple[str, str]] = []

    def save(fig, name: str, caption: str) -> None:
        plots.save_figure(fig, out / name)
        figures.append((caption, f"figures/{name}"))

    def saved(name: str):
        """The saved arrays of a figure, or None (then an existing PNG is kept)."""
        path = arrays_dir / name
        if path.is_file():
            return load_torch_file(path, where="draw_figures", what="figure arrays")
        return None

    def keep(png: str, caption: str) -> None:
        if (out / png).is_file():
            figures.append((caption, f"figures/{png}"))

    for dataset in DATASETS:
        recs = [r for r in results["records"] if r["dataset"] == dataset]
        if not recs:
            continue
        name = DATASET_TITLES[dataset]
        classes = _classes(dataset)
        caption = f"t-SNE of the {name} test images (pixels; Fig. 3)"
        if (a := saved(f"tsne-{dataset}.pt")) is not None:
            n = len(a["labels"])
            save(plots.plot_tsne(a["embedding"], a["labels"].long(), title=f"t-SNE of {n} {name} test images",
                                 class_names=classes), f"tsne-{dataset}.png", caption)
        else:
            keep(f"tsne-{dataset}.png", caption)
        caption = f"Learned dictionary atoms ({name}; Fig. 4a)"
        if (a := saved(f"atoms-{dataset}.pt")) is not None:
            d, p = a["dictionary"], a["patch_size"]
            save(plots.plot_atoms(d, p, n_channels=a["n_channels"], title=f"{name}: {d.shape[0]} atoms of {p}×{p}"),
                 f"atoms-{dataset}.png", caption)
        else:
            keep(f"atoms-{dataset}.png", caption)
        ref_model = "convnet" if any(r["model"] == "convnet" for r in recs) else recs[0]["model"]
        for r in recs:
            if r["model"] == ref_model:
                _cell_figures(run_dir, r, name, classes, save)
        for model in CAM_MODELS:
            if not any(r["model"] == model and r["attack"] == "fgsm" for r in recs):
                continue
            caption = (f"Top most confident misclassifications under FGSM with Grad-CAM of the predicted class "
                       f"({name}, {model}; Figs. 5–7, 9, 10)")
            if (a := saved(f"cam-{dataset}-{model}.pt")) is not None:
                titles = [f"true {classes[int(t)]} → pred {classes[int(p)]}" for t, p in zip(a["y"], a["pred"])]
                save(plots.plot_cam(a["images"].float(), a["heat"].float(), titles=titles),
                     f"cam-{dataset}-{model}.png", caption.replace("Top most", f"Top {len(titles)} most"))
            else:
                keep(f"cam-{dataset}-{model}.png", caption)
        sweep = [{"model": r["model"], "eps": r["attack_params"]["eps"], "perturbed": r["accuracy"]["perturbed"],
                  "denoised": r["accuracy"]["denoised"]} for r in results.get("sweep", []) if r["dataset"] == dataset]
        if sweep:
            fig = plots.plot_eps_curves(sweep, title=f"{name}: FGSM accuracy vs ε", grey_levels=dataset == "cifar10")
            save(fig, f"eps-{dataset}.png", f"Accuracy against the FGSM budget ε, perturbed and denoised ({name})")
    if results.get("robustness"):
        from ddl.experiments.robustness_report import plot_robustness

        out.mkdir(parents=True, exist_ok=True)
        plot_robustness(results["robustness"], out / "robustness.png")
        figures.append(("Accuracy against ε: bare model under PGD (dotted), oblivious attack (dashed), "
                        "worst case over the adaptive attacks (solid)", "figures/robustness.png"))
    atomic_write_json(run_dir / "figures.json", figures)
    return figures


def _cell_figures(run_dir: Path, r: dict, name: str, classes, save) -> None:
    """QQ-plot, density, examples and PSNR/SSIM histograms of one cell, from its arrays file."""
    from ddl import plots

    arrays = load_torch_file(run_dir / r["files"]["arrays"], where="draw_figures", what="cell arrays")
    tag, label = f"{r['dataset']}-{r['model']}-{r['attack']}", f"{name}, {r['model']}, {r['attack'].upper()}"
    pixels = {k: arrays[f"pixels_{k}"].float() for k in ("clean", "perturbed", "denoised")}
    # arrays written before random sampling (no examples_index) and not resampled since hold a
    # strided sample, which reads only a few pixel positions per image on a large test set
    caveat = ""
    if "examples_index" not in arrays and "pixels_source" not in arrays:
        size = arrays["examples_clean"][0].numel()                 # C·H·W values per image
        stride = max(1, len(arrays["y"]) * size // 20_000)
        seen = size // math.gcd(stride, size)
        if seen < size:
            caveat = (f" Caution: sample of an older ddl, every {stride}-th pixel value, which reads {seen} of "
                      f"the {size} pixel positions of each image.")
    agreement = arrays.get("pixels_agreement") or {}
    if agreement.get("denoised", 1.0) < 0.999:  # resampled behind a re-fitted dictionary
        caveat = (f" Pixels recomputed with a re-fitted dictionary (online dictionary learning amplifies "
                  f"tiny differences of its input or arithmetic): its denoised predictions agree with this cell's "
                  f"on {100 * agreement['denoised']:.1f} % of the images.")
    fig = plots.plot_qq(pixels["clean"], pixels["perturbed"], denoised=pixels["denoised"])
    save(fig, f"qq-{tag}.png", f"QQ-plot of pixel values, clean vs perturbed and denoised ({label}; Fig. 4).{caveat}")
    fig = plots.plot_density(pixels, grey_levels=255, log=True)
    save(fig, f"density-{tag}.png", f"Density of pixel values on the 1/255 grey levels ({label}; Fig. 4).{caveat}")
    n = len(arrays["examples_clean"])
    # which images the examples are (older run folders kept the first ones)
    ex = arrays["examples_index"].long() if "examples_index" in arrays else slice(0, n)
    fig = plots.plot_examples(arrays["examples_clean"].float(), arrays["examples_perturbed"].float(),
                              arrays["examples_denoised"].float(), y=arrays["y"][ex],
                              pred_clean=arrays["pred_clean"][ex], pred_adv=arrays["pred_perturbed"][ex],
                              pred_den=arrays["pred_denoised"][ex], n=min(8, n), class_names=classes)
    save(fig, f"examples-{tag}.png", f"Clean / perturbed / denoised examples with predictions ({label}; Fig. 8)")
    fig = plots.plot_metric_histograms(
        {k: arrays[f"psnr_{k}"] for k in ("perturbed", "denoised")},
        {k: arrays[f"ssim_{k}"] for k in ("perturbed", "denoised")}, title=label)
    save(fig, f"quality-{tag}.png", f"PSNR and SSIM of perturbed and denoised images ({label})")


def _classes(dataset: str) -> tuple[str, ...]:
    """Class names of a data set (digits for MNIST, 'airplane'... for CIFAR-10)."""
    from ddl.data import DATASETS as FACTS

    return FACTS[dataset]["classes"]
