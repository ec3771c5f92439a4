"""Particle picking from whole-tomogram segmentations: precision, recall and F1 per class.

Segmenters learn every macromolecule's class voxel by voxel on simulated crowded
subtomograms (``make_segmentation_subtomograms(labels="class")``), then segment whole
simulated tomograms of the same templates and voxel size (:func:`skdistill.datasets.
make_tomogram`, known particle positions and classes) with
:func:`skdistill.segment_tomogram`; :func:`skdistill.picking.pick_particles` picks each class
and :func:`skdistill.picking.score_picks` scores the picks within half a particle's diameter
(the largest template's extent, as DeepFinder and SHREC do). Nets: the light U-Net of the
size search and SSN3D's FCN_ed, trained with Adam and early stopping. Times: segmentation
and picking per tomogram. Results to ``docs/benchmarks/picking.md`` / ``.json``::

    python3 benchmarks/bench_picking.py --quick     # checks the script in about a minute
    python3 benchmarks/bench_picking.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _machine import RESULTS_DIR, machine_description, markdown_machine

from skdistill import Cnn3DSegmenter, segment_tomogram
from skdistill.datasets import make_segmentation_subtomograms
from skdistill.datasets.tomogram import make_tomogram
from skdistill.picking import pick_particles, score_picks

NETS = {
    "U-Net (size search)": {"arch": "unet", "base_filters": 8, "filter_multiplier": 1.5,
                            "levels": 3, "last_filters": 2},
    "FCN_ed (ssn3d)": {"arch": "ssn3d"},
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-classes", type=int, default=3)
    parser.add_argument("--voxel-size", type=float, default=12.0)
    parser.add_argument("--snr", type=float, default=1.0)
    parser.add_argument("--size", type=int, default=24, help="training box (multiple of 8)")
    parser.add_argument("--n-train", type=int, default=512)
    parser.add_argument("--max-epochs", type=int, default=30)
    parser.add_argument("--patience", type=int, default=6)
    parser.add_argument("--tomograms", type=int, default=2)
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 192, 192))
    parser.add_argument("--n-particles", type=int, default=40)
    parser.add_argument("--min-size", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.n_train, args.max_epochs, args.size, args.tomograms = 32, 1, 16, 1
        args.shape, args.n_particles, args.min_size = (32, 96, 96), 4, 4
        args.out = args.out if args.out != RESULTS_DIR else Path("/tmp/skdistill-picking-quick")
    started = time.perf_counter()
    X, y = make_segmentation_subtomograms(
        args.n_train, size=args.size, n_classes=args.n_classes, snr=args.snr, crowding=3,
        labels="class", voxel_size=args.voxel_size, mask_threshold=0.2, random_state=args.seed,
    )  # fmt: skip
    tomograms = [
        make_tomogram(tuple(args.shape), args.n_particles, n_classes=args.n_classes,
                      voxel_size=args.voxel_size, snr=args.snr, random_state=args.seed + 1 + k)
        for k in range(args.tomograms)
    ]  # fmt: skip
    radius = max(_extent(t) for t in tomograms) / 2
    tolerance = radius  # half a diameter
    rows, scores = [], []
    for name, net in NETS.items():
        model = Cnn3DSegmenter(
            **net, max_epochs=args.max_epochs, early_stopping=args.patience, batch_size=16,
            optimizer="adam", lr=1e-3, validation_fraction=0.2, class_weight="balanced",
            standardize=True, random_state=args.seed,
        )  # fmt: skip
        start = time.perf_counter()
        model.fit(X, y)
        fit_seconds = time.perf_counter() - start
        picked, truth = [], []
        for k, tomogram in enumerate(tomograms):
            start = time.perf_counter()
            labels = segment_tomogram(model, tomogram.volume)
            segment_seconds = time.perf_counter() - start
            start = time.perf_counter()
            picks = pick_particles(labels, min_size=args.min_size)
            pick_seconds = time.perf_counter() - start
            known = tomogram.particles[["z", "y", "x"]].assign(
                **{"class": tomogram.particles["class"].to_numpy() + 1}
            )
            picked.append(picks.assign(tomogram=k))
            truth.append(known.assign(tomogram=k))
            rows.append({"net": name, "tomogram": k, "segment_seconds": segment_seconds,
                         "pick_seconds": pick_seconds, "n_picks": len(picks),
                         "fit_seconds": fit_seconds, "epochs": int(model.n_iter_)})  # fmt: skip
            print(rows[-1], flush=True)
        # Picks are matched within their own tomogram: offset the tomograms far apart.
        far = 10 * max(args.shape)
        table = score_picks(_offset(picked, far), _offset(truth, far), tolerance=tolerance)
        scores.append(table.reset_index().assign(net=name))
    record = {
        "argv": " ".join(sys.argv[1:]), "tolerance_voxels": tolerance,
        "setting": vars(args) | {"out": str(args.out)}, "rows": rows,
        "scores": pd.concat(scores).astype({"class": str}).to_dict("records"),
        "minutes": (time.perf_counter() - started) / 60, "machine": machine_description(),
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "picking.json").write_text(json.dumps(record, indent=2, default=float) + "\n")
    text = markdown(record)
    (args.out / "picking.md").write_text(text)
    print(text)


def _extent(tomogram) -> float:
    """Largest template extent in voxels (where its density exceeds 1 % of the peak)."""
    extents = []
    for template in tomogram.templates:
        inside = np.argwhere(template > 0.01 * template.max())
        extents.append(float((inside.max(axis=0) - inside.min(axis=0) + 1).max()))
    return max(extents)


def _offset(tables: list[pd.DataFrame], far: int) -> pd.DataFrame:
    return pd.concat([t.assign(z=t["z"] + far * t["tomogram"]) for t in tables])


def markdown(record: dict) -> str:
    s = record["setting"]
    lines = [
        "# Picking from whole-tomogram segmentations",
        "",
        f"`python3 benchmarks/bench_picking.py {record['argv']}` ({record['minutes']:.0f} min): "
        f"{s['tomograms']} simulated tomograms of {tuple(s['shape'])} voxels at "
        f"{s['voxel_size']} Å, {s['n_particles']} particles each, {s['n_classes']} classes, "
        f"SNR {s['snr']}; segmenters trained on {s['n_train']} boxes of {s['size']}³ "
        f"(Adam 1e-3, at most {s['max_epochs']} epochs, patience {s['patience']}); picks "
        f"within {record['tolerance_voxels']:.1f} voxels (half the largest particle) count.",
        "",
        "| net | class | particles | picks | precision | recall | F1 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in record["scores"]:
        lines.append(
            f"| {row['net']} | {row['class']} | {row['n_true']} | {row['n_picked']} | "
            f"{row['precision']:.2f} | {row['recall']:.2f} | {row['f1']:.2f} |"
        )
    lines += ["", "| net | tomogram | segmentation | picking | epochs | fit |",
              "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for row in record["rows"]:
        lines.append(
            f"| {row['net']} | {row['tomogram']} | {row['segment_seconds']:.1f} s | "
            f"{row['pick_seconds']:.2f} s | {row['epochs']} | {row['fit_seconds']:.0f} s |"
        )
    lines += ["", markdown_machine(record["machine"])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
