"""
Whole tomograms: segment, pick, extract, classify with a distilled student, write a STAR file
===========================================================================================

The loop of a cryo-ET project with skdistill, on a simulated RELION 5 project
(:func:`skdistill.datasets.write_relion_project`, whose ``particles.star`` holds the true
positions and classes):

1. a light U-Net learns "macromolecule or not" from simulated crowded subtomograms in which
   every macromolecule is labelled;
2. :func:`skdistill.segment_tomogram` segments each whole tomogram in blended tiles;
3. :func:`skdistill.picking.pick_particles` turns the label map into particle positions,
   scored against the true ones (:func:`skdistill.picking.score_picks`: precision, recall
   and F1 within ``--tolerance`` voxels), and
   :func:`skdistill.picking.write_particles` writes them as a RELION 5 ``particles.star``;
4. a distilled student, trained on the true particles of the *other* tomograms, classifies
   the picked particles, extracted from their tomogram with
   :meth:`skdistill.io.SubtomogramStack.from_tomograms`, and
   :func:`skdistill.io.write_predictions` writes the classes into the picks' STAR file.

About 2 min on a 2-core CPU at the default size; ``python3 examples/tomogram_picking.py
--help`` lists the knobs, ``--out`` keeps the files.
"""

# %%
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import starfile
from sklearn.frozen import FrozenEstimator

from skdistill import Cnn3DClassifier, Cnn3DSegmenter, DistilledClassifier, segment_tomogram
from skdistill.datasets import make_segmentation_subtomograms, write_relion_project
from skdistill.io import SubtomogramStack, write_predictions
from skdistill.picking import pick_particles, score_picks, write_particles


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--n-tomograms", type=int, default=2, help="tomograms (default 2)")
    parser.add_argument("--n-particles", type=int, default=30, help="per tomogram (default 30)")
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 160, 160),
                        metavar=("Z", "Y", "X"), help="tomogram (default 64 160 160)")  # fmt: skip
    parser.add_argument("--voxel-size", type=float, default=12.0, help="Å (default 12)")
    parser.add_argument("--snr", type=float, default=1.0, help="signal-to-noise (default 1)")
    parser.add_argument("--segmenter-box", type=int, default=24,
                        help="edge of the segmenter's training boxes (default 24)")  # fmt: skip
    parser.add_argument("--segmenter-samples", type=int, default=256,
                        help="segmenter training boxes (default 256)")  # fmt: skip
    parser.add_argument("--box", type=int, default=28, help="classifier box (default 28)")
    parser.add_argument("--teacher-arch", default="s1", help="teacher network (default s1)")
    parser.add_argument("--student-arch", default="s3", help="student network (default s3)")
    parser.add_argument("--epochs", type=int, default=8, help="epochs per fit (default 8)")
    parser.add_argument("--min-size", type=int, default=20,
                        help="smallest particle in voxels (default 20)")  # fmt: skip
    parser.add_argument("--tolerance", type=float, default=6.0,
                        help="largest pick-to-particle distance in voxels (default 6)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--out", type=Path, help="new folder for all files (default: temporary)")
    args = parser.parse_args(argv)
    if args.n_tomograms < 2:
        parser.error("--n-tomograms must be at least 2: one to classify, others to train on.")
    return args


def true_positions(particles, shape, voxel_size: float):
    """A STAR table's centred coordinates (Å) as voxel positions z, y, x of its tomogram."""
    centred = particles[[f"rlnCenteredCoordinate{a}Angst" for a in "ZYX"]].to_numpy(float)
    positions = centred / voxel_size + np.asarray(shape, float) / 2
    table = particles[["rlnClassNumber"]].rename(columns={"rlnClassNumber": "true_class"})
    return table.assign(z=positions[:, 0], y=positions[:, 1], x=positions[:, 2])


def main(argv: list[str] | None = None) -> None:
    args = parse_arguments(argv)
    out = Path(tempfile.mkdtemp(prefix="skdistill-picking-")) if args.out is None else args.out
    started = time.perf_counter()
    shape = tuple(args.shape)

    # %%
    # The project: tomograms of crowded particles of 3 known classes.
    project = write_relion_project(
        out / "project", n_tomograms=args.n_tomograms, shape=shape,
        n_particles=args.n_particles, n_classes=3, voxel_size=args.voxel_size, snr=args.snr,
        random_state=args.seed,
    )  # fmt: skip
    truth = starfile.read(project.particles_star, always_dict=True)["particles"]
    print(f"project: {project.folder} ({', '.join(project.tomogram_names)})")

    # %%
    # 1. The segmenter learns particle vs background on crowded boxes at the tomograms' voxel
    # size, with every macromolecule labelled (labels="class", merged into one foreground
    # class). The tomograms are on another intensity scale than the boxes: each box and each
    # tile is standardised (standardize=True).
    X, masks = make_segmentation_subtomograms(
        args.segmenter_samples, size=args.segmenter_box, n_classes=3, snr=args.snr,
        crowding=3, labels="class", voxel_size=args.voxel_size, mask_threshold=0.2,
        random_state=args.seed,
    )  # fmt: skip
    start = time.perf_counter()
    segmenter = Cnn3DSegmenter(
        arch="unet", base_filters=8, levels=3, max_epochs=args.epochs, batch_size=8,
        optimizer="adam", lr=1e-3, validation_fraction=None, class_weight="balanced",
        standardize=True, random_state=args.seed,
    ).fit(X, (masks > 0).astype(np.int8))  # fmt: skip
    print(f"segmenter: U-Net fitted in {time.perf_counter() - start:.0f} s")

    # %%
    # 2-3. Segment each tomogram whole, pick, score the picks, write them for RELION.
    picked_stars = {}
    for name, tomogram in zip(project.tomogram_names, project.tomograms, strict=True):
        start = time.perf_counter()
        labels = segment_tomogram(segmenter, tomogram)
        seconds = time.perf_counter() - start
        picks = pick_particles(labels, min_size=args.min_size, voxel_size=args.voxel_size)
        known = true_positions(truth[truth["rlnTomoName"] == name], shape, args.voxel_size)
        scores = score_picks(picks, known.assign(**{"class": 1}), tolerance=args.tolerance)
        row = scores.loc["all"]
        print(f"{name}: segmented in {seconds:.1f} s, {len(picks)} picks for {len(known)} "
              f"particles: precision {row['precision']:.2f}, recall {row['recall']:.2f}, "
              f"F1 {row['f1']:.2f} (within {args.tolerance:g} voxels)")  # fmt: skip
        picked_stars[name] = write_particles(
            picks, out / f"picks_{name}.star", tomo_name=name, voxel_size=args.voxel_size,
            shape=shape,
        )  # fmt: skip

    # %%
    # 4. Classify the picks of the last tomogram with a student distilled on the true
    # particles of the others (no particle of the classified tomogram is seen in training).
    test_name = project.tomogram_names[-1]
    stack = SubtomogramStack.from_tomograms(
        project.particles_star, project.tomograms_star, box_size=args.box
    )
    train = stack.groups != test_name
    y = stack.particles["rlnClassNumber"].to_numpy()
    training = {"max_epochs": args.epochs, "batch_size": 16, "optimizer": "adam",
                "validation_fraction": None, "standardize": True,
                "random_state": args.seed}  # fmt: skip
    start = time.perf_counter()
    teacher = Cnn3DClassifier(arch=args.teacher_arch, lr=3e-4, **training)
    teacher.fit(stack[train], y[train], voxel_size=stack.voxel_size)
    student = DistilledClassifier(
        FrozenEstimator(teacher), student_arch=args.student_arch, temperature=5.0, lr=1e-3,
        **training,
    ).fit(stack[train], y[train], voxel_size=stack.voxel_size)  # fmt: skip
    print(f"classifier: {args.teacher_arch} -> {args.student_arch} distilled in "
          f"{time.perf_counter() - start:.0f} s on {train.sum()} particles")  # fmt: skip
    picked = SubtomogramStack.from_tomograms(
        picked_stars[test_name], project.tomograms_star, box_size=args.box
    )
    if len(picked) == 0:
        print(f"{test_name}: nothing picked, nothing to classify")
        return
    predicted = student.predict(picked)
    classified = write_predictions(
        picked, out / f"classified_{test_name}.star", predicted, student.predict_proba(picked),
        classes=student.classes_,
    )  # fmt: skip
    # The class of each pick's nearest true particle, where one lies within the tolerance.
    known = true_positions(truth[truth["rlnTomoName"] == test_name], shape, args.voxel_size)
    positions = picked.particles[[f"rlnCenteredCoordinate{a}Angst" for a in "ZYX"]].to_numpy()
    positions = positions / args.voxel_size + np.asarray(shape) / 2
    distances = np.linalg.norm(positions[:, None] - known[["z", "y", "x"]].to_numpy()[None], axis=2)
    nearest = distances.argmin(axis=1)
    found = distances[np.arange(len(picked)), nearest] <= args.tolerance
    correct = predicted[found] == known["true_class"].to_numpy()[nearest[found]]
    accuracy = correct.mean() if found.any() else float("nan")
    print(f"{test_name}: {len(picked)} picks classified, written to {classified}; accuracy "
          f"on the {found.sum()} picks near a true particle {accuracy:.2f} "
          f"(chance {1 / len(student.classes_):.2f})")  # fmt: skip
    print(f"done in {time.perf_counter() - started:.0f} s; files in {out}")


if __name__ == "__main__":
    main()
