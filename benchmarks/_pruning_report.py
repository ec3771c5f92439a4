"""Tables, targets, figure and files of ``reproduce_pruning.py``."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import numpy as np
from _machine import markdown_machine

#: The issue's targets: (task, amount or None for any, least speed-up, largest score loss).
TARGETS = {
    "classification": (0.5, 2.0, 0.01),
    "segmentation": (None, 2.0, 0.01),
    "teacher": (None, 3.0, 0.02),
}
SCORES = ("score_before", "score_pruned", "score_finetuned")


def mean_std(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    return float(np.mean(values)), float(np.std(values))


def summarize(records: list[dict]) -> list[dict]:
    """Mean and std over seeds of every measure, per (amount, criterion), in run order."""
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        groups.setdefault((record["amount"], record["criterion"]), []).append(record)
    rows = []
    for (amount, criterion), runs in groups.items():
        row = {"amount": amount, "criterion": criterion, "n_seeds": len(runs)}
        for key in ("n_parameters", "flops", "speedup", *SCORES):
            row[key] = mean_std([run[key] for run in runs])
        row["loss"] = mean_std([run["score_before"] - run["score_finetuned"] for run in runs])
        # Against the better of the base and the base fine-tuned as long: the stricter loss.
        row["strict_loss"] = mean_std([_reference(run) - run["score_finetuned"] for run in runs])
        rows.append(row)
    return rows


def _reference(run: dict) -> float:
    return max(run["score_before"], run.get("score_unpruned_finetuned", -np.inf))


def base_row(records: list[dict]) -> dict:
    """The unpruned base: size and score over seeds."""
    seeds = {record["seed"]: record for record in records}.values()
    return {
        "n_parameters": records[0]["n_parameters_before"],
        "flops": records[0]["flops_before"],
        "score": mean_std([record["score_before"] for record in seeds]),
        "score_finetuned": mean_std(
            [record.get("score_unpruned_finetuned", np.nan) for record in seeds]
        ),
        "volumes_per_second": mean_std([r["volumes_per_second_base"] for r in records]),
    }


def criterion_order(rows: list[dict]) -> list[dict]:
    """Per amount: whether the fine-tuned scores follow taylor >= l1 >= random."""
    checks = []
    for amount in dict.fromkeys(row["amount"] for row in rows):
        scores = {r["criterion"]: r["score_finetuned"] for r in rows if r["amount"] == amount}
        present = [c for c in ("taylor", "l1", "random") if c in scores]
        if len(present) < 2:
            continue
        holds = all(scores[a][0] >= scores[b][0] for a, b in pairwise(present))
        # Differences smaller than the seeds' spread are not evidence either way.
        clear = all(
            abs(scores[a][0] - scores[b][0]) > max(scores[a][1], scores[b][1])
            for a, b in pairwise(present)
        )
        ranking = sorted(scores, key=lambda c: -scores[c][0])
        checks.append({"amount": amount, "order": " >= ".join(present), "holds": holds,
                       "beyond_seed_spread": clear, "ranking": ranking})  # fmt: skip
    return checks


def target_rows(name: str, rows: list[dict]) -> list[dict]:
    """The issue's target for ``name``, judged per criterion on the means over seeds."""
    amount, speedup, loss = TARGETS[name]
    judged = []
    for criterion in dict.fromkeys(row["criterion"] for row in rows):
        candidates = [r for r in rows if r["criterion"] == criterion
                      and (amount is None or r["amount"] == amount)]  # fmt: skip
        if not candidates:
            continue
        meeting = [r for r in candidates
                   if r["speedup"][0] >= speedup and r["strict_loss"][0] <= loss]  # fmt: skip
        # Any amount may meet an amount-free target: show the fastest that does, else the
        # one with the smallest loss.
        row = max(meeting, key=lambda r: r["speedup"][0]) if meeting else min(
            candidates, key=lambda r: r["strict_loss"][0])  # fmt: skip
        judged.append({"target": name, "criterion": criterion, "amount": row["amount"],
                       "speedup": row["speedup"], "loss": row["strict_loss"],
                       "required": {"speedup": speedup, "loss": loss},
                       "met": bool(meeting)})  # fmt: skip
    return judged


def extras_rows(extras: list[dict]) -> list[dict]:
    """Table 2 columns per model, each ratio taken per seed then averaged."""
    teachers = {row["seed"]: row for row in extras if row["model"] == "teacher dsrf3d_v2"}
    rows = []
    for model in dict.fromkeys(row["model"] for row in extras):
        runs = [row for row in extras if row["model"] == model]
        rows.append({
            "model": model,
            "n_parameters": mean_std([r["n_parameters"] for r in runs]),
            "accuracy": mean_std([r["accuracy"] for r in runs]),
            "compression_rate": mean_std(
                [teachers[r["seed"]]["n_parameters"] / r["n_parameters"] for r in runs]),
            "accuracy_ratio": mean_std(
                [r["accuracy"] / teachers[r["seed"]]["accuracy"] for r in runs]),
            "speedup": mean_std(
                [r["volumes_per_second"] / teachers[r["seed"]]["volumes_per_second"]
                 for r in runs]),
            "loss": mean_std([teachers[r["seed"]]["accuracy"] - r["accuracy"] for r in runs]),
        })  # fmt: skip
    return rows


def teacher_target(rows: list[dict]) -> list[dict]:
    _, speedup, loss = TARGETS["teacher"]
    return [
        {"target": "teacher", "criterion": row["model"].split("(")[-1].rstrip(")"),
         "amount": float(row["model"].split("pruned ")[1].split("%")[0]) / 100,
         "speedup": row["speedup"], "loss": row["loss"],
         "required": {"speedup": speedup, "loss": loss},
         "met": row["speedup"][0] >= speedup and row["loss"][0] <= loss}
        for row in rows if row["model"].startswith("teacher pruned")
    ]  # fmt: skip


def soft_hard_lines(extras: list[dict]) -> list[str]:
    """Whether soft-label fine-tuning of the pruned distilled student beats hard labels."""
    soft = {r["seed"]: r["accuracy"] for r in extras if r["model"].endswith("soft labels")}
    hard = {r["seed"]: r["accuracy"] for r in extras if r["model"].endswith("hard labels")
            and "distilled" in r["model"]}  # fmt: skip
    seeds = sorted(set(soft) & set(hard))
    if not seeds:
        return []
    gains = [soft[seed] - hard[seed] for seed in seeds]
    mean, std = mean_std(gains)
    verdict = ("soft labels beat hard labels beyond the seeds' spread" if mean > std
               else "hard labels beat soft labels beyond the seeds' spread" if -mean > std
               else "no difference beyond the seeds' spread")  # fmt: skip
    return [f"Pruned distilled s1, soft - hard fine-tuning: accuracy {mean:+.3f} ± {std:.3f} "
            f"over {len(seeds)} seeds (per seed {', '.join(f'{g:+.3f}' for g in gains)}): "
            f"{verdict}."]  # fmt: skip


def _pm(value: tuple[float, float], digits: int = 3) -> str:
    return f"{value[0]:.{digits}f} ± {value[1]:.{digits}f}"


def task_table(task: dict, rows: list[dict]) -> list[str]:
    base = base_row(task["records"])
    metric = task["metric"]
    lines = [
        f"| amount | criterion | parameters | MFLOPs/volume | speed-up (x) | {metric} before "
        f"| right after pruning | after fine-tuning | loss | strict loss |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| 0 | unpruned | {base['n_parameters']:,} | {base['flops'] / 1e6:,.1f} | 1 "
        f"| {_pm(base['score'])} | - | {_pm(base['score_finetuned'])} | - | - |",
    ]
    lines += [
        f"| {r['amount']:g} | {r['criterion']} | {r['n_parameters'][0]:,.0f} "
        f"| {r['flops'][0] / 1e6:,.1f} | {_pm(r['speedup'], 2)} | {_pm(r['score_before'])} "
        f"| {_pm(r['score_pruned'])} | {_pm(r['score_finetuned'])} | {_pm(r['loss'])} "
        f"| {_pm(r['strict_loss'])} |"
        for r in rows
    ]
    return lines


def order_lines(checks: list[dict]) -> list[str]:
    if not checks:
        return ["(fewer than two criteria run: no ordering to check)"]
    lines = []
    for check in checks:
        verdict = "holds" if check["holds"] else "does NOT hold"
        spread = ("" if check["beyond_seed_spread"] else
                  "; some gaps are within the seeds' std, so not conclusive")  # fmt: skip
        lines.append(f"- amount {check['amount']:g}: {check['order']} {verdict} (measured "
                     f"order {' > '.join(check['ranking'])}){spread}")  # fmt: skip
    return lines


def target_table(targets: list[dict]) -> list[str]:
    lines = ["| target | criterion | amount | speed-up (x) | loss | required | met |",
             "|---|---|---:|---:|---:|---|---|"]  # fmt: skip
    for t in targets:
        required = f">= {t['required']['speedup']:g}x, loss <= {t['required']['loss']:g}"
        lines.append(f"| {t['target']} | {t['criterion']} | {t['amount']:g} "
                     f"| {_pm(t['speedup'], 2)} | {_pm(t['loss'])} | {required} "
                     f"| {'met' if t['met'] else 'not met'} |")  # fmt: skip
    return lines


def extras_table(rows: list[dict]) -> list[str]:
    lines = ["| model | parameters | accuracy | compression rate | accuracy ratio | speed-up (x) |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    lines += [
        f"| {r['model']} | {r['n_parameters'][0]:,.0f} | {_pm(r['accuracy'])} "
        f"| {r['compression_rate'][0]:.1f} | {_pm(r['accuracy_ratio'])} "
        f"| {_pm(r['speedup'], 2)} |"
        for r in rows
    ]
    return lines


def analyse(record: dict) -> dict:
    """Summaries, criterion orderings and targets of a run record."""
    analysis = {"tasks": {}, "targets": [], "extras": None}
    for name, task in record["tasks"].items():
        rows = summarize(task["records"])
        analysis["tasks"][name] = {"rows": rows, "order": criterion_order(rows)}
        analysis["targets"] += target_rows(name, rows)
    if record["extras"]:
        analysis["extras"] = extras_rows(record["extras"])
        analysis["targets"] += teacher_target(analysis["extras"])
    return analysis


def markdown(record: dict, analysis: dict) -> str:
    run = record["run"]
    lines = [
        "# Pruning with retraining (Roels et al. 2017)",
        "",
        f"`{' '.join(['python3 benchmarks/reproduce_pruning.py', run['argv']]).strip()}`: "
        f"{record['wall_minutes']:.1f} min, seeds {run['seeds']}, amounts {run['amounts']}, "
        f"criteria {run['criteria']}, {run['steps']} pruning rounds, {run['finetune_epochs']} "
        f"fine-tuning epoch(s) per round, calibration {run['calibration_size']} volumes"
        + (" (**--quick: a check of the script, not a result**)." if run["quick"] else "."),
        "",
        "The base is fitted once per seed and frozen; every amount and criterion prunes it. "
        "Speed-up is volumes/s of `predict_proba` pruned / unpruned, both timed in turn in the "
        f"same run on {run['timing_volumes']} test volumes (best of {run['repeats']}), same "
        f"batch, inference precision {run['precision']} (here "
        f"{run['inference_precision_resolved']}), {record['torch_threads']} torch threads. "
        "Read the ratios, not the absolute times. Scores are on the held-out test set; "
        "'right after pruning' is the same pruning with `finetune_epochs=0`; loss is before - "
        "after fine-tuning; the unpruned row's 'after fine-tuning' is the base fine-tuned for "
        "as many epochs as the pruned nets (`amount=0`), and 'strict loss' is measured against "
        "the better of the two unpruned scores (the targets are judged on it). Mean ± std "
        "over seeds.",
        "",
    ]
    for name, task in record["tasks"].items():
        result = analysis["tasks"][name]
        lines += [f"## {name.capitalize()}: {task['model']}", "",
                  "Setting: " + ", ".join(f"{k} {v}" for k, v in task["setting"].items()),
                  "", *task_table(task, result["rows"]), "",
                  "Taylor >= L1 >= random after fine-tuning, at equal amount:", "",
                  *order_lines(result["order"]), ""]  # fmt: skip
    if analysis["extras"]:
        lines += ["## Teacher and distilled student pruned (Table 2 of Guo et al. extended)", "",
                  "Ratios against the teacher dsrf3d_v2 of the same seed: compression rate = "
                  "teacher parameters / parameters, accuracy ratio = accuracy / teacher "
                  "accuracy, speed-up = volumes/s / teacher volumes/s. The distilled s1 is "
                  "pruned twice from the same student: fine-tuned on the teacher's soft labels "
                  "(`finetune_labels='soft'`) and on the hard labels (`'hard'`).", "",
                  *extras_table(analysis["extras"]), "", *soft_hard_lines(record["extras"]),
                  ""]  # fmt: skip
    lines += ["## Targets", "", *target_table(analysis["targets"]), "",
              "Loss is in accuracy (1 point = 0.01) or mean IoU; judged on the means.", "",
              "## Machine", "", markdown_machine(record["machine"]), ""]  # fmt: skip
    return "\n".join(lines)


def plot(record: dict, analysis: dict, path: Path) -> None:
    """Score after fine-tuning (filled) and right after pruning (hollow) against speed-up."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(record["tasks"])
    panels = len(names) + bool(analysis["extras"])
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2), squeeze=False)
    colors = {"taylor": "tab:red", "taylor_weight": "tab:orange", "l1": "tab:blue",
              "random": "tab:gray"}  # fmt: skip
    markers = dict(zip((0.25, 0.5, 0.75), "os^", strict=False))
    for ax, name in zip(axes[0], names, strict=False):
        task, rows = record["tasks"][name], analysis["tasks"][name]["rows"]
        base = base_row(task["records"])
        ax.errorbar([1], [base["score"][0]], yerr=[base["score"][1]], fmt="*k", ms=12,
                    label="unpruned")  # fmt: skip
        for r in rows:
            color, marker = colors.get(r["criterion"], "tab:green"), markers.get(r["amount"], "D")
            ax.errorbar([r["speedup"][0]], [r["score_finetuned"][0]], xerr=[r["speedup"][1]],
                        yerr=[r["score_finetuned"][1]], fmt=marker, color=color,
                        label=f"{r['criterion']} {r['amount']:g}")  # fmt: skip
            ax.plot([r["speedup"][0]], [r["score_pruned"][0]], marker, mfc="none", color=color)
        _, speedup, loss = TARGETS[name]
        _target_lines(ax, speedup, base["score"][0] - loss)
        ax.set_xlabel("speed-up of predict_proba (pruned / unpruned, CPU)")
        ax.set_ylabel(f"test {task['metric']}")
        ax.set_title(f"{task['model']}\nfilled: fine-tuned, hollow: right after pruning",
                     fontsize=8)  # fmt: skip
        ax.legend(fontsize=6, ncol=2)
    if analysis["extras"]:
        ax = axes[0][-1]
        for row in analysis["extras"]:
            ax.errorbar([row["speedup"][0]], [row["accuracy"][0]], xerr=[row["speedup"][1]],
                        yerr=[row["accuracy"][1]], fmt="o", label=row["model"])  # fmt: skip
        teacher = analysis["extras"][0]["accuracy"][0]
        _target_lines(ax, TARGETS["teacher"][1], teacher - TARGETS["teacher"][2])
        ax.set_xlabel("speed-up of predict_proba against the teacher (CPU)")
        ax.set_ylabel("test accuracy")
        ax.set_title("teacher, students, pruned (Table 2 extended)", fontsize=8)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _target_lines(ax, speedup: float, score: float) -> None:
    """Dotted lines at a target's speed-up and least score; log speed-up axis, plain ticks."""
    from matplotlib.ticker import ScalarFormatter

    ax.axvline(speedup, ls=":", color="k", lw=0.8)
    ax.axhline(score, ls=":", color="k", lw=0.8)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(ScalarFormatter())


def merge_records(records: list[dict]) -> dict:
    """One record of several partial runs (e.g. one task or seed per process)."""
    merged = {**records[0], "tasks": {}, "extras": None}
    merged["wall_minutes"] = sum(record["wall_minutes"] for record in records)
    merged["run"] = {**records[0]["run"],
                     "argv": " ; ".join(record["run"]["argv"] for record in records)}  # fmt: skip
    for key in ("seeds", "amounts", "criteria"):
        merged["run"][key] = sorted({v for record in records for v in record["run"][key]},
                                    key=str)  # fmt: skip
    for record in records:
        for name, task in record["tasks"].items():
            if name in merged["tasks"]:
                merged["tasks"][name]["records"] += task["records"]
            else:
                merged["tasks"][name] = {**task, "records": list(task["records"])}
        if record["extras"]:
            merged["extras"] = (merged["extras"] or []) + record["extras"]
    return merged


def write_outputs(record: dict, out: Path) -> str:
    """Write pruning.md, .json and .png to ``out``; return the markdown."""
    analysis = analyse(record)
    text = markdown(record, analysis)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pruning.md").write_text(text)
    (out / "pruning.json").write_text(
        json.dumps({**record, "analysis": analysis}, indent=2, default=str) + "\n"
    )
    if record["tasks"]:
        plot(record, analysis, out / "pruning.png")
    return text
