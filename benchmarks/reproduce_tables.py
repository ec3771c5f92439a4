"""Tables 1-2 of the distillation paper at any scale, every parameter explicit.

Runs :func:`skdistill.experiments.run_distillation_experiment` (the same code as
``skdistill demo``) and writes ``docs/benchmarks/distillation_<tag>.md`` (table, setting,
machine), ``.json`` (everything measured) and ``.png`` (the figure).

CPU scale (the committed result, about 8 minutes on 2 cores)::

    python3 benchmarks/reproduce_tables.py --tag cpu

The paper's scale, for a GPU::

    python3 benchmarks/reproduce_tables.py --tag gpu --classes 23 --size 40 --snr 0.05 \\
        --n-train 14720 --n-valid 3680 --n-test 4600 --batch-size 64 --epochs 20 \\
        --teacher-epochs 20 --patience 5 --optimizer sgd --lr 0.005 --teacher-lr 0.005 \\
        --precision fp32
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

from _machine import RESULTS_DIR, machine_description, markdown_machine

from skdistill.experiments import CPU_SETTING, DistillationSetting, run_distillation_experiment
from skdistill.experiments.report import format_table, plot_results, result_record


def parse_setting() -> tuple[DistillationSetting, str]:
    defaults = CPU_SETTING
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default="cpu", help="suffix of the result files")
    parser.add_argument("--classes", type=int, default=defaults.n_classes)
    parser.add_argument("--size", type=int, default=defaults.size)
    parser.add_argument("--snr", type=float, default=defaults.snr)
    parser.add_argument("--n-train", type=int, default=defaults.n_train)
    parser.add_argument("--n-valid", type=int, default=defaults.n_valid)
    parser.add_argument("--n-test", type=int, default=defaults.n_test)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--epochs", type=int, default=defaults.max_epochs)
    parser.add_argument("--teacher-epochs", type=int, default=defaults.teacher_max_epochs)
    parser.add_argument("--patience", type=int, default=defaults.early_stopping)
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default=defaults.optimizer)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--teacher-lr", type=float, default=defaults.teacher_lr)
    parser.add_argument("--temperature", type=float, default=defaults.temperature)
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"),
                        default=defaults.precision)  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    setting = DistillationSetting(
        n_classes=args.classes,
        size=args.size,
        snr=args.snr,
        n_train=args.n_train,
        n_valid=args.n_valid,
        n_test=args.n_test,
        batch_size=args.batch_size,
        max_epochs=args.epochs,
        early_stopping=args.patience,
        optimizer=args.optimizer,
        lr=args.lr,
        temperature=args.temperature,
        teacher_lr=args.teacher_lr,
        teacher_max_epochs=args.teacher_epochs,
        precision=args.precision,
        seed=args.seed,
    )
    return setting, args.tag


def main() -> None:
    setting, tag = parse_setting()
    start = time.perf_counter()
    result = run_distillation_experiment(setting, progress=False)
    minutes = (time.perf_counter() - start) / 60
    machine = machine_description()
    record = {**result_record(result), "wall_minutes": minutes, "machine": machine}
    settings = "\n".join(f"- {key}: {value}" for key, value in dataclasses.asdict(setting).items())
    text = "\n".join(
        [
            f"# Distillation Tables 1-2 ({tag})",
            "",
            f"`python3 benchmarks/reproduce_tables.py --tag {tag} ...` (all parameters below); "
            f"wall time {minutes:.1f} min. Accuracies on the {setting.n_test} test volumes; "
            f"chance is {1 / setting.n_classes:.3f}; test time is `predict` over them.",
            "",
            format_table(result),
            "",
            "Epochs run (hard / soft): " + ", ".join(f"{m.name} {m.epochs}" for m in result.models),
            "",
            "Setting:",
            "",
            settings,
            "",
            "Machine:",
            "",
            markdown_machine(machine),
            "",
        ]
    )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stem = RESULTS_DIR / f"distillation_{tag}"
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    with open(stem.with_suffix(".png"), "wb") as file:
        plot_results(result, file)
    print(text)


if __name__ == "__main__":
    main()
