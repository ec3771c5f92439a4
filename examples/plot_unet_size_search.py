"""
How small can the U-Net be? A size search with GridSearchCV
===========================================================

The light U-Net experiment (Matuszewski & Sintorn 2019) on simulated crowded subtomograms:
a grid search over the U-Net's size knobs (``base_filters``, ``levels``, ``last_filters``)
with :class:`~skdistill.Cnn3DSegmenter`, scored by mean IoU, then mean IoU against the
number of parameters with the Pareto front marked: the smallest nets that no larger net beats.

About a minute on 2 CPU cores at this example's size (16³ volumes, 96 of them, a few
epochs); ``benchmarks/segmentation_size_search.py`` runs a larger version.

Run ``python3 examples/plot_unet_size_search.py --out size_search.png``.
"""

# %%
import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.model_selection import GridSearchCV

from skdistill import Cnn3DSegmenter
from skdistill.architectures import build_segmentation_network, count_parameters
from skdistill.datasets import make_segmentation_subtomograms
from skdistill.metrics import mean_iou_scorer

parser = argparse.ArgumentParser(description="U-Net size search on simulated subtomograms.")
parser.add_argument("--n-samples", type=int, default=96)
parser.add_argument("--size", type=int, default=16, help="box edge (a multiple of 4)")
parser.add_argument("--max-epochs", type=int, default=8)
parser.add_argument("--out", default="size_search.png", help="figure file")
args = parser.parse_args()

# %%
# Crowded subtomograms: a target macromolecule near the centre, neighbours around it; the
# mask marks the target's voxels (density >= 0.2 of a subunit's peak). High SNR keeps the
# example's few epochs meaningful.
X, y = make_segmentation_subtomograms(
    args.n_samples, size=args.size, n_classes=6, snr=2.0, crowding=2, mask_threshold=0.2,
    random_state=0,
)  # fmt: skip

# %%
# The grid: flat estimator parameters, so the U-Net knobs read like any other.
grid = {"base_filters": [2, 4, 8], "levels": [2, 3], "last_filters": [2, 8]}
segmenter = Cnn3DSegmenter(
    "unet", max_epochs=args.max_epochs, batch_size=8, lr=1e-2, class_weight="balanced",
    validation_fraction=None, random_state=0,
)  # fmt: skip
search = GridSearchCV(segmenter, grid, cv=2, scoring=mean_iou_scorer).fit(X, y)

# %%
# Parameter count of every candidate, and the Pareto front (no smaller net scores higher).
shape = (args.size,) * 3
params = np.array([
    count_parameters(build_segmentation_network("unet", 2, shape, **candidate))
    for candidate in search.cv_results_["params"]
])  # fmt: skip
iou = search.cv_results_["mean_test_score"]
order = np.argsort(params)
front = [i for k, i in enumerate(order) if iou[i] > max(iou[order[:k]], default=-np.inf)]
for i in order:
    mark = "*" if i in front else " "
    print(f"{mark} {search.cv_results_['params'][i]}  params {params[i]:>7,}  IoU {iou[i]:.3f}")

fig, ax = plt.subplots(figsize=(6, 4))
ax.scatter(params, iou, color="tab:blue", label="candidates")
ax.plot(params[front], iou[front], "o-", color="tab:red", label="Pareto front")
ax.set_xscale("log")
ax.set_xlabel("parameters")
ax.set_ylabel("mean IoU (2-fold CV)")
ax.set_title("Light U-Net size search")
ax.legend()
fig.tight_layout()
fig.savefig(args.out, dpi=120)
print(f"Best: {search.best_params_} (mean IoU {search.best_score_:.3f}). Figure: {args.out}")
