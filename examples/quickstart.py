"""
Quickstart: distil a DSRF3D-v2 teacher into an s1 student
==========================================================

Fits the DSRF3D-v2 teacher on small synthetic volumes, distils it into the s1 student at
temperature 5 through ``FrozenEstimator`` (so the teacher is not refitted), and prints test
accuracy, parameter counts and the size of the pickled, deployable student.

The volumes are toy shapes (:func:`skdistill.datasets.make_toy_volumes`), not simulated
subtomograms, and are sized so the whole script runs in a few minutes on a 2-core CPU.
Run ``python examples/quickstart.py --help`` for the knobs.
"""

# %%
from __future__ import annotations

import argparse
import io
import time

import joblib
from sklearn.frozen import FrozenEstimator
from sklearn.model_selection import train_test_split

from skdistill import Cnn3DClassifier, DistilledClassifier
from skdistill.datasets import make_toy_volumes
from skdistill.preprocessing import VolumeNormalizer


def main(argv: list[str] | None = None) -> None:
    """Run the quickstart and print its report."""
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=480, help="volumes (default 480)")
    parser.add_argument("--size", type=int, default=28, help="edge length, >= 27 (default 28)")
    parser.add_argument("--max-epochs", type=int, default=10, help="epochs per fit (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = parser.parse_args(argv)

    # %%
    # Data: four classes of noisy shapes, normalised per volume, split 75/25.
    X, y = make_toy_volumes(
        args.n_samples, n_classes=4, size=args.size, noise=0.5, random_state=args.seed
    )
    X = VolumeNormalizer().fit_transform(X)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=args.seed
    )
    print(f"data: {len(X_train)} training / {len(X_test)} test volumes of {args.size}^3, 4 classes")

    # %%
    # Teacher: DSRF3D-v2 with the paper's SGD setup, a smaller batch for this small set.
    training = {
        "max_epochs": args.max_epochs,
        "batch_size": 8,
        "lr": 0.01,
        "random_state": args.seed,
    }
    start = time.perf_counter()
    teacher = Cnn3DClassifier(arch="dsrf3d_v2", **training).fit(X_train, y_train)
    print(f"teacher fitted in {time.perf_counter() - start:.0f} s")

    # %%
    # Student: s1 trained on the frozen teacher's soft labels at T = 5.
    start = time.perf_counter()
    student = DistilledClassifier(
        FrozenEstimator(teacher), student_arch="s1", temperature=5.0, **training
    ).fit(X_train, y_train)
    print(f"student fitted in {time.perf_counter() - start:.0f} s")

    # %%
    # Report: accuracy, size, and what a deployed student weighs.
    buffer = io.BytesIO()
    joblib.dump(student, buffer)
    print()
    print(f"{'model':<22}{'parameters':>12}{'test accuracy':>15}")
    print(
        f"{'teacher (dsrf3d_v2)':<22}{teacher.n_parameters_:>12,}"
        f"{teacher.score(X_test, y_test):>15.3f}"
    )
    print(
        f"{'student (s1, T=5)':<22}{student.n_parameters_:>12,}"
        f"{student.score(X_test, y_test):>15.3f}"
    )
    print(f"chance level: {1 / 4:.3f}; compression rate: {student.compression_rate_:.1f}x")
    if teacher.score(X_test, y_test) < 0.4:
        print(
            "note: the DSRF3D-v2 teacher has not left SGD's initial plateau at this size; "
            "use more volumes or epochs (see docs/user_guide.rst, 'Training')."
        )
    print(
        f"pickled student: {buffer.getbuffer().nbytes / 1e6:.2f} MB "
        f"(float32 weights: {4 * student.n_parameters_ / 1e6:.2f} MB; no teacher inside)"
    )


if __name__ == "__main__":
    main()
