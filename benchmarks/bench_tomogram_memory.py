"""Peak memory of segmenting whole tomograms with :func:`skdistill.segment_tomogram`.

Writes two float32 MRC tomograms (by default 128 x 512 x 512, 128 MiB, and
256 x 1024 x 1024, 1 GiB: z, y, x) of noise with dense blobs, and segments each in a fresh
process, memory-mapped, with the labels written to an MRC file (``out=``), as
``skdistill segment`` does. Each child reports its peak resident memory (``ru_maxrss``),
its resident memory after loading the model (before the tomogram is touched) and the wall
time. The claim checked: the peak does not grow with the tomogram, and a 1 GiB tomogram is
segmented with a peak below 2 GiB.

The segmenter is the size search's most accurate U-Net (``benchmarks/reproduce_pruning.py``
``UNET``) trained for one epoch on 24³ simulated subtomograms: its weights do not change
memory or time, only the tile count and the network's size do. Results to
``docs/benchmarks/tomogram_memory.md`` / ``.json`` (or ``--out``)::

    python3 benchmarks/bench_tomogram_memory.py
    python3 benchmarks/bench_tomogram_memory.py --shapes 64,256,256 128,512,512  # quicker
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _machine import RESULTS_DIR, machine_description, markdown_machine

#: The size search's most accurate U-Net (as in reproduce_pruning.py).
UNET = {"base_filters": 8, "filter_multiplier": 1.5, "levels": 3, "last_filters": 2}
#: Bytes per MiB.
MIB = 2**20

CHILD = """
import json, resource, sys, time, warnings
import torch
from skdistill import load_model, segment_tomogram
torch.set_num_threads(int(sys.argv[4]))
model = load_model(sys.argv[1])
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024
loaded = rss()
start = time.perf_counter()
segment_tomogram(model, sys.argv[2], out=sys.argv[3], overwrite=True)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"peak_rss": peak, "loaded_rss": loaded, "seconds": seconds}))
"""


def write_tomogram(path: Path, shape: tuple[int, int, int], seed: int) -> None:
    """Noise with blobs, written slab by slab (never whole in memory)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from skdistill.tiling._sinks import MrcSink

    rng = np.random.default_rng(seed)
    sink = MrcSink(path, shape, np.float32, voxel_size=10.0, origin=(0.0, 0.0, 0.0))
    depth = 16
    for start in range(0, shape[0], depth):
        slab = rng.normal(size=(min(depth, shape[0] - start), *shape[1:])).astype(np.float32)
        slab[:, ::37, ::41] += 4.0
        sink.write(start, 0, slab)
    sink.result()


def fit_segmenter(path: Path, seed: int) -> None:
    from skdistill import Cnn3DSegmenter, save_model
    from skdistill.datasets import make_segmentation_subtomograms

    X, y = make_segmentation_subtomograms(
        32, size=24, n_classes=8, snr=1.0, crowding=3, mask_threshold=0.2, random_state=seed
    )
    model = Cnn3DSegmenter(arch="unet", **UNET, max_epochs=1, batch_size=8, lr=1e-2,
                           validation_fraction=None, random_state=seed).fit(X, y)  # fmt: skip
    save_model(model, path)


def measure(model: Path, tomogram: Path, out: Path, threads: int) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(model), str(tomogram), str(out), str(threads)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(result.stdout.strip().splitlines()[-1])


def markdown(record: dict) -> str:
    lines = [
        "# Whole-tomogram segmentation: peak memory",
        "",
        f"`python3 benchmarks/bench_tomogram_memory.py {record['argv']}`: "
        "`segment_tomogram(model, path, out=labels.mrc)` in a fresh process per tomogram, "
        "the tomogram memory-mapped, the labels written slab by slab; default tiles "
        f"(U-Net {record['unet']}, trained at 24³), {record['threads']} torch thread(s).",
        "",
        "| tomogram (z, y, x) | size | peak RSS | RSS after loading the model | "
        "peak - loaded | time | voxels/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in record["rows"]:
        lines.append(
            f"| {' x '.join(map(str, row['shape']))} | {row['tomogram_mib']:.0f} MiB | "
            f"{row['peak_rss'] / MIB:.0f} MiB | {row['loaded_rss'] / MIB:.0f} MiB | "
            f"{(row['peak_rss'] - row['loaded_rss']) / MIB:.0f} MiB | {row['seconds']:.0f} s | "
            f"{row['voxels_per_second'] / 1e6:.2f} M |"
        )
    rows = record["rows"]
    last = max(rows, key=lambda row: row["tomogram_mib"])
    extra = [row["peak_rss"] - row["loaded_rss"] for row in rows]
    sizes = [row["tomogram_mib"] for row in rows]
    lines += [
        "",
        f"From the smallest to the largest tomogram the size grows {max(sizes) / min(sizes):.0f}x "
        f"and the memory above the loaded model from {min(extra) / MIB:.0f} to "
        f"{max(extra) / MIB:.0f} MiB. Largest tomogram: peak {last['peak_rss'] / 2**30:.2f} GiB "
        f"for {last['tomogram_mib'] / 1024:.2f} GiB (target < 2 GiB: "
        f"{'met' if last['peak_rss'] < 2 * 2**30 else 'NOT met'}).",
        "",
        markdown_machine(record["machine"]),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["128,512,512", "256,1024,1024"],
                        help="tomogram shapes z,y,x, smallest first")  # fmt: skip
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the child")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--report", type=Path, help="rewrite the markdown of this JSON only")
    args = parser.parse_args()
    if args.report:
        record = json.loads(args.report.read_text())
        (args.report.with_suffix(".md")).write_text(markdown(record))
        return
    shapes = [tuple(int(n) for n in text.split(",")) for text in args.shapes]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        model = folder / "unet.safetensors"
        fit_segmenter(model, args.seed)
        for shape in shapes:
            tomogram = folder / "tomogram.mrc"
            start = time.perf_counter()
            write_tomogram(tomogram, shape, args.seed)
            print(f"{shape}: written in {time.perf_counter() - start:.0f} s", flush=True)
            row = measure(model, tomogram, folder / "labels.mrc", args.threads)
            row.update(shape=list(shape), tomogram_mib=int(np.prod(shape)) * 4 / MIB,
                       voxels_per_second=int(np.prod(shape)) / row["seconds"])  # fmt: skip
            print(row, flush=True)
            rows.append(row)
            tomogram.unlink()
    record = {"argv": " ".join(sys.argv[1:]), "unet": UNET, "threads": args.threads,
              "rows": rows, "machine": machine_description()}  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tomogram_memory.json").write_text(json.dumps(record, indent=2) + "\n")
    text = markdown(record)
    (args.out / "tomogram_memory.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
