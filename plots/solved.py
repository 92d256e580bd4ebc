"""Does GRPO keep a solved policy solved? benchmark.py runs this grid (--grid grpo) and calls
summarise() below.

grpo.py on CartPole-v1 for 1,000,000 steps, seeds 1-5, in each variant of VARIANTS, and the
scripts of BESIDE with their defaults for comparison. A run is solved from the first episode
at which the mean of its last 20 returns reaches 475; from there on, the table counts the
lowest such mean, the share of episodes that reach 400, and how many steps after solving the
last mean below 450 ends (last_dip_after: when it settled). Rows of
runs made by an earlier grpo.py (the "before" row, --exp-name before) are summarised beside
them when their folders are in the same runs folder.

Written into <out-dir>/grpo_solved/: runs.csv (one row per run) and summary.csv (one row per
variant); rows already there are kept and replaced by a newer run of the same (variant, seed).
"""

import json
import statistics
from pathlib import Path

import numpy as np

ENV, STEPS, SEEDS = "CartPole-v1", 1_000_000, (1, 2, 3, 4, 5)
SOLVED, KEPT, LOW = 475.0, 450.0, 400.0
"""solved: the 20-episode mean reaches 475; kept: it never falls below 450 afterwards; low: an
episode below 400"""
WINDOW = 20
REUSE = "--update-epochs 20 --num-minibatches 2"  # the defaults before one_step
ONE_STEP = "--update-epochs 1 --num-minibatches 1"  # the defaults since
VARIANTS = {  # row -> grpo.py's flags; each names every flag it was run with, whatever the defaults
    "skip_only": f"--no-signal-only {REUSE}",
    "signal_only": f"--signal-only {REUSE}",
    "clip_higher": f"--signal-only --clip-coef-high 0.28 {REUSE}",
    "dynamic_sampling": f"--signal-only --dynamic-sampling {REUSE}",
    "both": f"--signal-only --dynamic-sampling --clip-coef-high 0.28 {REUSE}",
    # what else moves θ once solved: a group with one worse episode, its Â_i scaled by a small
    # std (Dr. GRPO's point, arXiv:2503.20783 §3.2), and the size of the step it then takes
    "no_std_scale": f"--no-signal-only --no-std-scale {REUSE}",
    "target_kl": f"--no-signal-only --target-kl 0.01 {REUSE}",
    # the dips all end within 80k steps of solving (last_dip_after), while the annealed step
    # size is still near its start: does a smaller step settle it?
    "lr_3e-3": f"--no-signal-only --learning-rate 3e-3 {REUSE}",
    "lr_1e-3": f"--no-signal-only --learning-rate 1e-3 {REUSE}",
    # or does the one outcome shared by every action of an episode need more episodes per batch?
    "groups_8": f"--no-signal-only --num-groups 8 {REUSE}",
    # or the 20 passes (40 Adam steps) over each batch? The GRPO paper makes one (μ = 1, §4.2)
    "one_epoch": "--no-signal-only --update-epochs 1 --num-minibatches 2",
    "one_step": f"--no-signal-only {ONE_STEP}",  # one Adam step a batch, as vpg.py's actor
    "one_step_signal_only": f"--signal-only {ONE_STEP}",
    "one_step_dynamic_sampling": f"--signal-only --dynamic-sampling {ONE_STEP}",
}
BESIDE = ("ppo_clip", "vpg")
"""scripts run beside the variants with their own defaults, rows named after them: is the
target within reach of a per-step advantage over the same steps?"""
RUN_COLUMNS = ["variant", "seed", "episodes", "solved_at", "lowest_after", "share_low_after",
               "last_dip_after", "final", "zero_signal_after", "groups_drawn_after"]
SUMMARY_COLUMNS = ["variant", "seeds", "solved", "kept_above_450", "steps_to_475_median",
                   "lowest_after_each_seed", "share_at_least_400_each_seed",
                   "last_dip_after_each_seed", "final_mean"]


def stays_solved(steps: np.ndarray, returns: np.ndarray) -> tuple[float, float, float, float]:
    """(step at which the 20-episode mean first reaches SOLVED, the lowest 20-episode mean
    from then on, the share of the later episodes below LOW, the step of the last episode
    whose 20-episode mean is below KEPT, nan if none); (inf, nan, nan, nan) if never solved."""
    means = np.convolve(returns, np.ones(WINDOW) / WINDOW, mode="valid")  # ends at i + 19
    reached = np.flatnonzero(means >= SOLVED)
    if not len(reached):
        return np.inf, np.nan, np.nan, np.nan
    first = reached[0]
    later = returns[first + WINDOW:]  # the episodes after the one that solved it
    share = float(np.mean(later < LOW)) if len(later) else 0.0
    dips = first + np.flatnonzero(means[first:] < KEPT)
    last_dip = float(steps[dips[-1] + WINDOW - 1]) if len(dips) else np.nan
    return float(steps[first + WINDOW - 1]), float(means[first:].min()), share, last_dip


def run_row(variant: str, run_dir: Path) -> dict[str, str]:
    import plot
    config = json.loads((run_dir / "config.json").read_text())
    episodes = plot.read_csv(run_dir / "episodes.csv")
    updates = plot.read_csv(run_dir / "updates.csv")
    steps, returns = episodes["global_step"], episodes["episodic_return"]
    solved_at, lowest, share, last_dip = stays_solved(steps, returns)
    after = updates["global_step"] > solved_at
    return {"variant": variant, "seed": str(config["seed"]), "episodes": str(len(returns)),
            "solved_at": f"{solved_at:.0f}", "lowest_after": f"{lowest:.1f}",
            "share_low_after": f"{share:.4f}",
            "last_dip_after": "" if np.isnan(last_dip) else f"{last_dip - solved_at:.0f}",
            "final": f"{np.mean(returns[-WINDOW:]):.1f}",
            "zero_signal_after": f"{np.mean(updates['zero_signal'][after]):.3f}"
            if after.any() and "zero_signal" in updates else "",
            "groups_drawn_after": f"{np.mean(updates['groups_drawn'][after]):.2f}"
            if after.any() and "groups_drawn" in updates else ""}


def summarise(found: dict[tuple[str, int], Path], out: Path) -> None:
    """Merge the finished runs {(variant, seed): run folder} into runs.csv, then summary.csv."""
    from claims import read_rows, write_rows
    out.mkdir(parents=True, exist_ok=True)
    rows = {(r["variant"], int(r["seed"])): r for r in read_rows(out / "runs.csv")}
    for (variant, seed), run_dir in found.items():
        rows[variant, seed] = run_row(variant, run_dir)
    order = ["before", *VARIANTS, *BESIDE]
    merged = sorted(rows.values(), key=lambda r: (order.index(r["variant"]) if r["variant"]
                                                  in order else len(order), int(r["seed"])))
    write_rows(out / "runs.csv", RUN_COLUMNS, merged)
    summary = []
    for variant in dict.fromkeys(r["variant"] for r in merged):
        runs = [r for r in merged if r["variant"] == variant]
        solved = [r for r in runs if r["solved_at"] != "inf"]
        summary.append({
            "variant": variant, "seeds": len(runs), "solved": len(solved),
            "kept_above_450": sum(float(r["lowest_after"]) >= KEPT for r in solved),
            "steps_to_475_median": f"{statistics.median(float(r['solved_at']) for r in runs):.0f}",
            "lowest_after_each_seed": " / ".join(r["lowest_after"] for r in runs),
            "share_at_least_400_each_seed": " / ".join(
                f"{1 - float(r['share_low_after']):.3f}" for r in runs),
            "last_dip_after_each_seed": " / ".join(r.get("last_dip_after") or "-" for r in runs),
            "final_mean": f"{statistics.mean(float(r['final']) for r in runs):.1f}"})
    write_rows(out / "summary.csv", SUMMARY_COLUMNS, summary)
    print(f"grpo: {len(found)} finished run(s) merged, {len(merged)} in {out / 'runs.csv'}; "
          f"{out / 'summary.csv'}")
