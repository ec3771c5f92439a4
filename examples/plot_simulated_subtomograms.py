"""
Simulated subtomograms, one per class
=====================================

Central slices of one simulated subtomogram per class, as :func:`make_subtomograms` makes
them for the distillation paper's setting: 23 synthetic macromolecule templates, 40³ voxels
at 9.2 Å, a ±60° tilt series (missing wedge), CTF at -5 µm defocus, and SNR 0.05.

Rows: the template (reference pose, no microscope), the noise-free subtomogram (random pose,
CTF and missing wedge, ``snr=None``) and the noisy one (same particle, ``snr=0.05``). The
slices are x-z planes through the centre: the missing wedge smears densities along z (the
beam), and at SNR 0.05 a single particle is hard to see by eye.

Run ``python3 examples/plot_simulated_subtomograms.py --out figure.png``.
"""

# %%
import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from skdistill.datasets import make_subtomograms

parser = argparse.ArgumentParser(description="Plot one simulated subtomogram per class.")
parser.add_argument("--size", type=int, default=40, help="box edge in voxels")
parser.add_argument("--snr", type=float, default=0.05)
parser.add_argument("--out", default="simulated_subtomograms.png", help="figure file")
args = parser.parse_args()

# %%
# The first 23 samples hold each class once (classes come in shuffled blocks), and the
# noise-free call with the same ``random_state`` returns the same particles in the same poses.
n_classes = 23
noisy, y, info = make_subtomograms(
    n_classes, n_classes=n_classes, size=args.size, snr=args.snr, random_state=0,
    return_info=True,
)  # fmt: skip
clean, _ = make_subtomograms(n_classes, n_classes=n_classes, size=args.size, snr=None,
                             random_state=0)  # fmt: skip

# %%
center = args.size // 2
rows = [
    ("template", info.templates),
    ("noise-free", clean[y.argsort()]),
    (f"SNR {args.snr:g}", noisy[y.argsort()]),
]
fig, axes = plt.subplots(len(rows), n_classes, figsize=(n_classes * 0.9, 3.2))
for row, (label, volumes) in enumerate(rows):
    for k in range(n_classes):
        ax = axes[row, k]
        ax.imshow(volumes[k][:, center, :], cmap="gray", origin="lower")  # x-z plane
        ax.set_xticks([])
        ax.set_yticks([])
        if row == 0:
            ax.set_title(info.class_names[k], fontsize=5, rotation=45, ha="left")
    axes[row, 0].set_ylabel(label, fontsize=7)
fig.suptitle("Simulated subtomograms: central x-z slices, one per class", fontsize=9, y=1.12)
fig.savefig(args.out, dpi=150, bbox_inches="tight")
print(f"Figure written to {args.out}")
