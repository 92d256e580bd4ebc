"""GRPO against PPO with a value head (and the batch-mean baseline) on text addition: runs
grpo_text.py for each method and seed (or reads the finished runs), then writes the table and
the figure.

For each method of METHODS and each seed, `python grpo_text.py --advantage <method> --seed
<seed> --num-digits <digits>` runs into <runs-dir>/add<digits>/, one run at a time; a finished
run already there is read instead, if its config.json agrees with that command (--flags
included). The control, SFT alone to its plateau (--sft-to-plateau), runs beside them with the
same seeds. Bad flags, a failed run, or no run to read end with one line and status 2 (a failed
run: its own status), before anything is written.

Written: <out>.csv, one row per method (held-out greedy accuracy after SFT and after the run for
each seed, their mean, iterations to 80 % for each seed, seconds per iteration, the share of
zero-signal groups over the last 50 iterations), and <out>.png: held-out accuracy against
sampled answers (mean and min-max band over the seeds) and the zero-signal share.

    python plots/grpo_text.py                      # 2-digit operands, seeds 1-3
    python plots/grpo_text.py --num-digits 3 --methods group critic --no-plateau \
        "--flags=--sft-examples 20000 --sft-steps 1700 --num-iterations 1000" \
        --out runs/grpo_text/grpo_text_3digit
"""

import csv
import dataclasses
import importlib.util
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tyro  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
METHODS = {"group": "GRPO (group advantage)", "critic": "PPO with a value head",
           "batch": "batch-mean baseline"}
PLATEAU = "sft_plateau"  # the control's row and exp_name
TARGET = 0.8  # "iterations to 80 %"
COLUMNS = ["method", "seeds", "accuracy_before_each_seed", "accuracy_after_each_seed",
           "accuracy_after_mean", "iterations_to_80_each_seed", "seconds_per_iteration",
           "zero_signal_last_50"]


@dataclass
class Args:
    """Run (or read) grpo_text.py's comparison over seeds; write the table and the figure."""

    runs_dir: Path = REPO / "runs" / "grpo_text"
    """parent of the run folders; the runs of --num-digits D go to <runs-dir>/addD"""
    seeds: tuple[int, ...] = (1, 2, 3)
    """seeds of every method"""
    methods: tuple[str, ...] = ("group", "critic", "batch")
    """values of grpo_text.py's --advantage to compare"""
    num_digits: int = 2
    """digits of each operand, passed to grpo_text.py"""
    plateau: bool = True
    """also the control: SFT alone to its plateau (--sft-to-plateau), no RL"""
    flags: str = ""
    """more flags for every run of grpo_text.py, written "--flags=--sft-steps 1700"; empty: none"""
    run: bool = True
    """run the runs that are missing; --no-run only reads what is there"""
    out: Path = REPO / "plots" / "grpo_text"
    """the table is <out>.csv, the figure <out>.png"""


def read_csv(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="") as file:
        header, *rows = list(csv.reader(file))
    return {name: np.array([float(row[i]) for row in rows]) for i, name in enumerate(header)}


def fail(message: str) -> NoReturn:
    print(f"plots/grpo_text.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def load_script():
    """grpo_text.py of the repository root (this file has the same name), for its Args."""
    spec = importlib.util.spec_from_file_location("grpo_text_script", REPO / "grpo_text.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SCRIPT = load_script()
NOT_COMPARED = {"runs_dir", "exp_name", "save_model"}  # where a run goes, not what it is


def expected_config(argv: list[str]) -> dict:
    """The config.json fields a run of `grpo_text.py argv` records, its flags checked first."""
    try:
        args = tyro.cli(SCRIPT.Args, args=argv)
        SCRIPT.check_args(args)
    except SystemExit:  # tyro has printed what it refused
        fail(f"grpo_text.py {shlex.join(argv)}: refused (above)")
    except SCRIPT.BadInput as error:
        fail(f"grpo_text.py {shlex.join(argv)}: {error}")
    config = json.loads(json.dumps(dataclasses.asdict(args)))  # tuples as JSON lists
    # the control fine-tunes in chunks to its plateau: --sft-steps plays no part there
    ignored = NOT_COMPARED | ({"sft_steps"} if args.sft_to_plateau else set())
    return {k: v for k, v in config.items() if k not in ignored}


def finished_run(folder: Path, exp_name: str, seed: int, expected: dict) -> Path | None:
    """The newest finished run folder of (exp_name, seed) under folder whose config agrees with
    the expected one, or None."""
    found = []
    for run_dir in folder.glob(f"add*__{exp_name}__{seed}__*"):
        config_path = run_dir / "config.json"
        if not config_path.exists():
            continue
        config = json.loads(config_path.read_text())
        if config.get("finished") and all(config.get(k) == v for k, v in expected.items()):
            found.append(run_dir)
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


def get_run(args: Args, exp_name: str, seed: int, flags: list[str]) -> Path | None:
    """Read the finished run, or with --run make it (one process, one torch thread)."""
    folder = args.runs_dir / f"add{args.num_digits}"
    argv = ["--seed", str(seed), "--num-digits", str(args.num_digits), "--runs-dir",
            str(folder), "--exp-name", exp_name, *flags, *shlex.split(args.flags)]
    expected = expected_config(argv)
    run_dir = finished_run(folder, exp_name, seed, expected)
    if run_dir is None and args.run:
        command = [sys.executable, str(REPO / "grpo_text.py"), *argv]
        print(" ".join(command[1:]), flush=True)
        status = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}).returncode
        if status:
            print(f"plots/grpo_text.py: error: {shlex.join(command[1:])} ended with status "
                  f"{status}; nothing written", file=sys.stderr)
            raise SystemExit(status)
        run_dir = finished_run(folder, exp_name, seed, expected)
    return run_dir


def summarise(method: str, run_dirs: list[Path]) -> dict[str, str]:
    before, after, to_target, seconds, zero = [], [], [], [], []
    for run_dir in run_dirs:
        evaluations = read_csv(run_dir / "evaluations.csv")
        accuracy, iteration = evaluations["heldout_accuracy"], evaluations["iteration"]
        # a run with RL: after SFT, its first row, and after RL, its last; the control
        # (rows at iteration 0 alone): untrained, then the weights its validation set chose
        before.append(accuracy[0])
        after.append(accuracy[-1])
        reached = np.flatnonzero(accuracy >= TARGET)
        to_target.append(int(iteration[reached[0]]) if len(reached) else None)
        if method != PLATEAU:
            updates = read_csv(run_dir / "updates.csv")
            # the RL's own time: from the last SFT evaluation to the end, per iteration
            start = evaluations["wall_time"][iteration == 0][-1]
            seconds.append((updates["wall_time"][-1] - start) / len(updates["iteration"]))
            zero.append(updates["zero_signal"][-50:].mean())
    return {"method": method, "seeds": len(run_dirs),
            "accuracy_before_each_seed": " / ".join(f"{x:.3f}" for x in before),
            "accuracy_after_each_seed": " / ".join(f"{x:.3f}" for x in after),
            "accuracy_after_mean": f"{np.mean(after):.3f}",
            "iterations_to_80_each_seed": " / ".join(
                "never" if x is None else str(x) for x in to_target) if method != PLATEAU
            else "",
            "seconds_per_iteration": f"{np.mean(seconds):.3f}" if seconds else "",
            "zero_signal_last_50": f"{np.mean(zero):.2f}" if zero else ""}


def draw(args: Args, runs: dict[str, list[Path]], plateau_mean: float | None) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2))
    for method, run_dirs in runs.items():
        if method == PLATEAU or not run_dirs:
            continue
        curves = [read_csv(run_dir / "evaluations.csv") for run_dir in run_dirs]
        n = min(len(c["answers"]) for c in curves)
        answers = curves[0]["answers"][:n]
        accuracy = np.stack([c["heldout_accuracy"][:n] for c in curves])
        (line,) = left.plot(answers, accuracy.mean(0), label=METHODS.get(method, method))
        left.fill_between(answers, accuracy.min(0), accuracy.max(0), alpha=0.2,
                          color=line.get_color())
        updates = [read_csv(run_dir / "updates.csv") for run_dir in run_dirs]
        m = min(len(u["answers"]) for u in updates)
        zero = np.stack([u["zero_signal"][:m] for u in updates]).mean(0)
        window = min(25, m)  # iterations in the running mean: one group's share is noisy
        smooth = np.convolve(zero, np.ones(window) / window, mode="valid")
        right.plot(updates[0]["answers"][window - 1:m], smooth, color=line.get_color(),
                   label=METHODS.get(method, method))
    if plateau_mean is not None:
        left.axhline(plateau_mean, color="gray", linestyle="--",
                     label=f"SFT alone to its plateau ({plateau_mean:.2f})")
    left.set(xlabel="sampled answers", ylabel="held-out greedy accuracy", ylim=(0, 1),
             title=f"{args.num_digits}-digit addition, seeds "
                   f"{', '.join(map(str, args.seeds))} (mean, min-max band)")
    right.set(xlabel="sampled answers", ylabel="share of zero-signal groups", ylim=(0, 1),
              title="zero-signal groups: all G right or all wrong (mean of seeds)")
    left.legend(loc="lower right", fontsize=8)
    right.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=120)


def main(args: Args) -> None:
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown or len(set(args.methods)) < len(args.methods):
        fail(f"--methods {' '.join(args.methods)}: each at most once, of {', '.join(METHODS)}")
    if not args.seeds or len(set(args.seeds)) < len(args.seeds):
        fail(f"--seeds {' '.join(map(str, args.seeds))}: one or more, each at most once")
    if not args.methods and not args.plateau:
        fail("--methods (none) with --no-plateau: nothing to compare")
    runs = {method: [] for method in args.methods}
    if args.plateau:
        runs[PLATEAU] = []
    for seed in args.seeds:
        for method in runs:
            flags = ["--sft-to-plateau"] if method == PLATEAU else ["--advantage", method]
            run_dir = get_run(args, method, seed, flags)
            if run_dir is not None:
                runs[method].append(run_dir)
    rows = [summarise(method, run_dirs) for method, run_dirs in runs.items() if run_dirs]
    if not rows:
        fail(f"no finished run of these flags in {args.runs_dir / f'add{args.num_digits}'}; "
             "nothing written" + (" (--no-run reads, never runs)" if not args.run else ""))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out.with_suffix(".csv"), "w", newline="") as file:
        writer = csv.DictWriter(file, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    for row in rows:
        print(", ".join(f"{k} {v}" for k, v in row.items()))
    plateau = [float(r["accuracy_after_mean"]) for r in rows if r["method"] == PLATEAU]
    draw(args, runs, plateau[0] if plateau else None)
    print(f"wrote {args.out.with_suffix('.csv')} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main(tyro.cli(Args))
