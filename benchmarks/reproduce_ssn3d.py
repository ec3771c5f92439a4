"""SSN3D (Liu, Zeng et al., ICIP 2018): its two claims, tested on simulated crowded subtomograms.

The task is the paper's: segment the macromolecule of interest at the centre of a crowded
subtomogram against everything else, neighbours included (binary labels,
``make_segmentation_subtomograms(labels="target")``). Every net is trained the authors' way:
Adam, ``--lr`` (1e-3), voxel cross-entropy (optionally class-balanced), early stopping on a
20 % validation split with ``--patience``, at most ``--max-epochs``; then scored by mean IoU
on a held-out test set, over ``--seeds`` (mean ± std).

1. Claim 1: the encoder-decoder FCN_ed (``"ssn3d"``) segments better than the baseline FCNs
   FCN8 and FCN1 (and FCN_aspp); the light U-Net of the size search is the reference. It
   holds here if FCN_ed's mean exceeds each baseline's by more than one standard deviation
   of both.
2. Claim 2: structures absent from training are segmented. The templates are split in two
   halves: training volumes hold only first-half macromolecules (target and neighbours);
   the "seen" test set has first-half targets, the "unseen" one second-half targets.

Writes ``ssn3d.md``, ``.json`` and ``.png`` to ``docs/benchmarks/`` (or ``--out``); ``--quick``
checks the script in about a minute. The CPU-scale data are smaller than the paper's 40³
boxes (``--size``, a multiple of 8 for the SSN3D nets)::

    python3 benchmarks/reproduce_ssn3d.py --quick
    python3 benchmarks/reproduce_ssn3d.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from _machine import RESULTS_DIR, machine_description, markdown_machine

from skdistill import Cnn3DSegmenter
from skdistill.datasets import make_segmentation_subtomograms

#: Nets compared: the paper's four and the size search's most accurate U-Net.
NETS = {
    "FCN_ed (ssn3d)": {"arch": "ssn3d"},
    "FCN8": {"arch": "ssn3d_fcn8"},
    "FCN1": {"arch": "ssn3d_fcn1"},
    "FCN_aspp": {"arch": "ssn3d_aspp"},
    "U-Net (size search)": {
        "arch": "unet", "base_filters": 8, "filter_multiplier": 1.5, "levels": 3,
        "last_filters": 2,
    },
}  # fmt: skip
BASELINES = ("FCN8", "FCN1")


def simulate(args, n: int, seed: int, targets: str) -> tuple[np.ndarray, np.ndarray]:
    """``n`` volumes whose target lies in the first or second half of the templates.

    ``targets="first"``: target and every neighbour from the first half (training and the
    "seen" test); ``"second"``: targets from the second half (the "unseen" test).
    """
    half = args.n_classes // 2
    kept_X, kept_y, drawn = [], [], 0
    chunk = max(4 * n, 64)
    while sum(len(x) for x in kept_X) < n:
        X, y, info = make_segmentation_subtomograms(
            chunk, size=args.size, n_classes=args.n_classes, snr=args.snr, crowding=args.crowding,
            labels="target", mask_threshold=args.mask_threshold, return_info=True,
            random_state=seed * 1000 + drawn,
        )  # fmt: skip
        drawn += 1
        if targets == "first":
            keep = (info.target_classes < half) & (info.neighbour_classes < half).all(axis=1)
        else:
            keep = info.target_classes >= half
        kept_X.append(X[keep])
        kept_y.append(y[keep])
    return np.concatenate(kept_X)[:n], np.concatenate(kept_y)[:n]


def train_and_score(args, net: dict, data: dict, seed: int) -> dict:
    model = Cnn3DSegmenter(
        **net, max_epochs=args.max_epochs, early_stopping=args.patience, batch_size=16,
        optimizer="adam", lr=args.lr, validation_fraction=0.2,
        class_weight="balanced" if args.balanced else None, random_state=seed,
    )  # fmt: skip
    start = time.perf_counter()
    model.fit(*data["train"])
    seconds = time.perf_counter() - start
    scores = {name: float(model.score(*data[name])) for name in ("seen", "unseen")}
    predicted = model.predict(data["seen"][0])
    return {**scores, "epochs": int(model.n_iter_), "best_epoch": int(model.best_epoch_),
            "fit_seconds": seconds, "n_parameters": int(model.n_parameters_),
            "foreground_fraction_predicted": float((predicted > 0).mean())}  # fmt: skip


def summary(rows: list[dict]) -> dict:
    table = {}
    for name in NETS:
        mine = [row for row in rows if row["net"] == name]
        table[name] = {
            key: (float(np.mean([r[key] for r in mine])), float(np.std([r[key] for r in mine])))
            for key in ("seen", "unseen", "epochs", "fit_seconds")
        }
        table[name]["n_parameters"] = mine[0]["n_parameters"]
    return table


def verdicts(table: dict) -> list[str]:
    (ed_mean, ed_std) = table["FCN_ed (ssn3d)"]["seen"]
    lines = []
    for name in BASELINES:
        mean, std = table[name]["seen"]
        beaten = ed_mean - mean > max(ed_std, std)
        lines.append(
            f"- Claim 1, FCN_ed vs {name}: {ed_mean:.3f} ± {ed_std:.3f} vs {mean:.3f} ± "
            f"{std:.3f}: {'holds' if beaten else 'does NOT hold'} (difference "
            f"{ed_mean - mean:+.3f}, one std {max(ed_std, std):.3f})."
        )
    seen, unseen = table["FCN_ed (ssn3d)"]["seen"], table["FCN_ed (ssn3d)"]["unseen"]
    lines.append(
        f"- Claim 2, FCN_ed on templates absent from training: mean IoU {unseen[0]:.3f} ± "
        f"{unseen[1]:.3f} vs {seen[0]:.3f} ± {seen[1]:.3f} on seen templates."
    )
    return lines


def markdown(record: dict) -> str:
    table = record["summary"]
    lines = [
        "# SSN3D's two claims on simulated crowded subtomograms",
        "",
        f"`python3 benchmarks/reproduce_ssn3d.py {record['argv']}` ({record['minutes']:.0f} min). "
        f"Binary task (centre macromolecule vs everything else), {record['setting']}.",
        "",
        "| net | parameters | mean IoU, seen templates | mean IoU, unseen templates | "
        "epochs run | fit time |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in table.items():
        lines.append(
            f"| {name} | {row['n_parameters']:,} | {row['seen'][0]:.3f} ± {row['seen'][1]:.3f} "
            f"| {row['unseen'][0]:.3f} ± {row['unseen'][1]:.3f} | {row['epochs'][0]:.0f} | "
            f"{row['fit_seconds'][0]:.0f} s |"
        )
    lines += ["", *verdicts(table), "", markdown_machine(record["machine"])]
    return "\n".join(lines) + "\n"


def plot(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = record["summary"]
    names = list(table)
    positions = np.arange(len(names))
    figure, axis = plt.subplots(figsize=(8, 4))
    for offset, key in ((-0.2, "seen"), (0.2, "unseen")):
        axis.bar(positions + offset, [table[n][key][0] for n in names], 0.4,
                 yerr=[table[n][key][1] for n in names], label=f"{key} templates")  # fmt: skip
    axis.set_xticks(positions, names, rotation=15)
    axis.set_ylabel("mean IoU (test)")
    axis.set_ylim(0, 1)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--size", type=int, default=24, help="box edge (multiple of 8)")
    parser.add_argument("--n-classes", type=int, default=10, help="templates, split in halves")
    parser.add_argument("--n-train", type=int, default=384)
    parser.add_argument("--n-test", type=int, default=128, help="per test set")
    parser.add_argument("--snr", type=float, default=1.0)
    parser.add_argument("--crowding", type=int, default=3)
    parser.add_argument("--mask-threshold", type=float, default=0.2)
    parser.add_argument("--max-epochs", type=int, default=40)
    parser.add_argument("--patience", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--balanced", action="store_true", help="class-balanced cross-entropy")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--quick", action="store_true", help="tiny run to check the script")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.n_train, args.n_test, args.max_epochs, args.size = [0], 32, 16, 2, 16
        args.patience = 2
        args.out = args.out if args.out != RESULTS_DIR else Path("/tmp/skdistill-ssn3d-quick")
    start = time.perf_counter()
    data = {
        "train": simulate(args, args.n_train, 1, "first"),
        "seen": simulate(args, args.n_test, 2, "first"),
        "unseen": simulate(args, args.n_test, 3, "second"),
    }
    rows = []
    for seed in args.seeds:
        for name, net in NETS.items():
            row = {"net": name, "seed": seed, **train_and_score(args, net, data, seed)}
            rows.append(row)
            print(f"seed {seed} {name}: seen {row['seen']:.3f}, unseen {row['unseen']:.3f}, "
                  f"{row['epochs']} epochs, {row['fit_seconds']:.0f} s", flush=True)  # fmt: skip
    setting = (f"{args.n_train} training / {args.n_test} + {args.n_test} test volumes of "
               f"{args.size}³, {args.n_classes} templates (halves), SNR {args.snr}, crowding "
               f"{args.crowding}, mask threshold {args.mask_threshold}; Adam lr {args.lr}, "
               f"batch 16, at most {args.max_epochs} epochs, patience {args.patience}, "
               f"{'balanced' if args.balanced else 'unweighted'} cross-entropy; seeds "
               f"{args.seeds}")  # fmt: skip
    record = {"argv": " ".join(sys.argv[1:]), "setting": setting, "rows": rows,
              "summary": summary(rows), "minutes": (time.perf_counter() - start) / 60,
              "machine": machine_description()}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ssn3d.json").write_text(json.dumps(record, indent=2) + "\n")
    text = markdown(record)
    (args.out / "ssn3d.md").write_text(text)
    plot(record, args.out / "ssn3d.png")
    print(text)


if __name__ == "__main__":
    main()
