"""The golden report's record, computed by ``ddl.experiments.pipeline.evaluate`` on tensors made by
hand, so that every number in ``tests/golden/report_small.md`` can be checked with pencil and paper.

Images: 8 constant grey images of shape (1, 11, 11) (11x11: the smallest size ddl's default 11x11
SSIM window allows), image ``i`` all ``i/8`` and labelled ``i``. Each other kind adds a constant:

=================  ==========  ===========================================================
kind               + constant  PSNR against the clean image, 20·log10(1/δ) dB
=================  ==========  ===========================================================
perturbed          δ = 0.1     20·log10(10) = 20.00 (the FGSM step eps = 0.1 on every pixel)
denoised           δ = 0.05    20·log10(20) = 26.02
denoised clean     δ = 0.025   20·log10(40) = 32.04
=================  ==========  ===========================================================

except image 0 (black), which is left unchanged in every kind (e.g. a zero input gradient, whose
sign is 0): PSNR +inf, which ``evaluate`` leaves out of the mean and counts in ``n_identical``.

Classifier: ``LookupModel`` reads only an image's mean pixel value and returns the logits listed
for that value in ``DESIGN`` (10 classes): ``log 441`` for the predicted class and 0 for the nine
others ("sure": softmax 441 / (441 + 9) = 0.98), or ``log 9`` and 0 ("unsure": 9 / (9 + 9) = 0.5).
So every prediction and confidence is known by construction; the tallies are in
``tests/test_report.py``.

Regenerate the golden file (once, after a deliberate change of the report's layout; the tests
never write it)::

    .venv/bin/python tests/_golden_record.py
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

N_CLASSES = 10
SIDE = 11
SURE, UNSURE = math.log(441.0), math.log(9.0)  # softmax max 0.98 and 0.5 against nine zeros
SHIFT = {"perturbed": 0.1, "denoised": 0.05, "denoised_clean": 0.025}
KINDS = ("clean", "perturbed", "denoised", "denoised_clean")
S, U = "sure", "unsure"

# Image i: label i, clean value i/8. Per kind: (predicted class, sure or unsure).
#          clean     perturbed  denoised   denoised clean
DESIGN = [((0, S),   (0, S),    (0, S),    (0, S)),   # 0: black, identical in every kind
          ((1, S),   (1, U),    (1, S),    (1, S)),   # 1
          ((2, S),   (2, U),    (2, S),    (2, S)),   # 2
          ((3, S),   (9, S),    (3, S),    (3, U)),   # 3: fooled with high confidence, recovered
          ((4, S),   (9, S),    (4, S),    (4, U)),   # 4: fooled with high confidence, recovered
          ((5, S),   (8, S),    (8, U),    (5, U)),   # 5: fooled with high confidence, not recovered
          ((6, U),   (9, S),    (9, S),    (9, U)),   # 6: fooled with high confidence, not recovered
          ((8, U),   (8, U),    (8, S),    (8, S))]   # 7: wrong already when clean
LABELS = list(range(len(DESIGN)))


def clean_value(i: int) -> float:
    return i / 8


def value(i: int, kind: str) -> float:
    """The constant pixel value of image ``i`` of ``kind`` (image 0 is never changed)."""
    return clean_value(i) + (0.0 if kind == "clean" or i == 0 else SHIFT[kind])


def images(kind: str) -> torch.Tensor:
    """(8, 1, 11, 11) float32: image i filled with ``value(i, kind)``."""
    return torch.stack([torch.full((1, SIDE, SIDE), value(i, kind)) for i in range(len(DESIGN))])


class LookupModel(nn.Module):
    """Logits as a lookup of the image's mean pixel value in a table (raises for a value not in it)."""

    def __init__(self, table: dict[float, tuple[int, str]]):
        super().__init__()
        levels = sorted(table)
        logits = torch.zeros(len(levels), N_CLASSES)
        for row, level in enumerate(levels):
            cls, how = table[level]
            logits[row, cls] = SURE if how == S else UNSURE
        self.register_buffer("levels", torch.tensor(levels, dtype=torch.float64))
        self.register_buffer("logits", logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dist = (x.double().flatten(1).mean(1)[:, None] - self.levels[None]).abs()
        nearest, row = dist.min(1)
        if float(nearest.max()) > 1e-3:  # the levels are >= 0.025 apart
            raise ValueError("LookupModel: an image whose mean value is not in the table")
        return self.logits[row]


def lookup_model() -> LookupModel:
    table: dict[float, tuple[int, str]] = {}
    for i, preds in enumerate(DESIGN):
        for kind, pred in zip(KINDS, preds):
            v = value(i, kind)
            if table.setdefault(v, pred) != pred:
                raise ValueError(f"DESIGN gives value {v} two predictions")
    return LookupModel(table).eval()


def evaluated_record() -> tuple[dict, dict]:
    """``pipeline.evaluate`` on the hand-made tensors: (record, per-image arrays)."""
    from ddl.experiments.config import AttackConfig, DataConfig, DefenceConfig, ExperimentConfig, ModelConfig
    from ddl.experiments.pipeline import evaluate

    attack = AttackConfig(name="fgsm", params={"eps": 0.1})
    cfg = ExperimentConfig(name="golden", data=DataConfig(dataset="mnist"), model=ModelConfig(name="convnet"),
                           attacks=(attack,),
                           defence=DefenceConfig(patch_size=7, n_components=256, n_nonzero_coefs=38))
    y = torch.tensor(LABELS, dtype=torch.int64)
    return evaluate(cfg, attack, lookup_model(), images("clean"), y, images("perturbed"), images("denoised"),
                    images("denoised_clean"))


def golden_results() -> dict:
    """The results the golden report renders: the evaluated record plus ``model_info`` (which
    ``run_experiment`` adds after ``evaluate``; the report's Classifiers table reads it)."""
    record, _ = evaluated_record()
    record["model_info"] = {"source": "zoo", "epochs": 5}
    return {"ddl_version": "0.1.0", "config": {"name": "golden"}, "records": [record]}


if __name__ == "__main__":
    from ddl.experiments import report

    out = Path(__file__).parent / "golden" / "report_small.md"
    out.write_text(report.to_markdown(report.build_report(golden_results())))
    print(f"wrote {out}")
