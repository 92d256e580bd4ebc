"""Learning curves, the KL figure and the L^CLIP figure, from run folders or from plots/data.

A run is read from a run folder (`config.json`, `episodes.csv`, `updates.csv`, as the
algorithm scripts write them; env and script come from config.json's env_id and exp_name) or
from the small copies that benchmark.py keeps in plots/data/<env>/<script>__<seed>__*.csv
(env and script come from the folder and file names). A path may be a run folder, a folder
that holds run folders (runs/benchmark), or plots/data.

Each learning curve is the mean over seeds of the moving mean of the last 20 episodic returns,
interpolated onto a common grid of environment steps (or of wall-clock seconds with
--x wall_time), with a band from the lowest to the highest seed; one PNG per env.

Examples:
    python plots/plot.py runs/benchmark                     # one PNG per env into plots/
    python plots/plot.py plots/data --x wall_time --out-dir /tmp/curves
    python plots/plot.py --clip-objective                   # plots/clip_objective.png
"""

import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import tyro  # noqa: E402

PLOTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = PLOTS_DIR.parent
WINDOW = 20
"""episodes in the moving mean of the curves, the final score and the threshold test"""
THRESHOLDS = {"CartPole-v1": 475.0, "Pendulum-v1": -200.0}
"""return that counts as solved: the 20-episode moving mean first reaching it"""
SCRIPTS = ("vpg", "trpo", "ppo_clip", "ppo_kl")
COLORS = dict(zip(SCRIPTS, ("tab:blue", "tab:orange", "tab:green", "tab:red")))
DATA_FILES = ("episodes.csv", "updates.csv", "config.json")
"""what benchmark.py copies per run into plots/data/<env>/<script>__<seed>__<file>"""


@dataclass
class Args:
    """Learning curves from run folders or plots/data: one PNG per environment."""

    run_dirs: tyro.conf.Positional[tuple[Path, ...]] = ()
    """run folders, folders holding run folders, or plots/data (or one of its env folders)"""
    out_dir: Path = PLOTS_DIR
    """folder the PNGs are written to, named <env_id>.png"""
    x: Literal["global_step", "wall_time"] = "global_step"
    """x axis: environment steps, or wall-clock seconds since the run started"""
    kl: bool = False
    """also draw kl.png: the exact KL per update on CartPole-v1 and Hopper-v5"""
    clip_objective: bool = False
    """draw clip_objective.png (L^CLIP against r, from ppo_clip.clipped_surrogate_loss)"""


class Run(NamedTuple):
    """One training run, as read from a run folder or from plots/data."""

    env_id: str
    script: str
    seed: int
    config: dict
    episodes: dict[str, np.ndarray]
    updates: dict[str, np.ndarray]
    path: Path


def fail(message: str, status: int = 2) -> None:
    """End the program with one line on stderr, no traceback."""
    print(f"{Path(sys.argv[0]).name}: error: {message}", file=sys.stderr)
    raise SystemExit(status)


def read_csv(path: Path) -> dict[str, np.ndarray]:
    """Read a CSV with a header row into {column: float array}, in the file's column order."""
    try:
        with open(path, newline="") as file:
            header, *rows = list(csv.reader(file))
        return {name: np.array([float(row[i]) for row in rows]) for i, name in enumerate(header)}
    except (OSError, ValueError, IndexError) as error:
        fail(f"{path}: not a readable CSV with a header row ({type(error).__name__}: {error})")


def load_run(path: Path, env_id: str, script: str, seed: int, config: dict,
             prefix: str = "") -> Run:
    """Read <path>/<prefix>episodes.csv and updates.csv; a run without episodes is bad input."""
    episodes = read_csv(path / f"{prefix}episodes.csv")
    if len(episodes.get("episodic_return", ())) == 0:
        fail(f"{path / (prefix + 'episodes.csv')}: no episodes (the run stopped before its "
             "first episode ended?)")
    return Run(env_id, script, seed, config, episodes, read_csv(path / f"{prefix}updates.csv"),
               path / prefix)


def load_run_dir(run_dir: Path) -> Run:
    """A run folder written by an algorithm script; names come from its config.json."""
    try:
        config = json.loads((run_dir / "config.json").read_text())
        names = config["env_id"], config["exp_name"], int(config["seed"])
    except (OSError, ValueError, KeyError) as error:
        fail(f"{run_dir}: no readable config.json with env_id, exp_name and seed "
             f"({type(error).__name__}: {error})")
    return load_run(run_dir, *names, config)


def load_data_run(episodes_csv: Path) -> Run:
    """A run copied into plots/data/<env>/<script>__<seed>__episodes.csv by benchmark.py."""
    script, seed, _ = episodes_csv.name.split("__")
    prefix = f"{script}__{seed}__"
    config_path = episodes_csv.with_name(prefix + "config.json")
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    return load_run(episodes_csv.parent, episodes_csv.parent.name, script, int(seed), config,
                    prefix)


def find_runs(paths: list[Path]) -> list[Run]:
    """Every run under the given paths: run folders (with config.json) and plots/data copies."""
    runs = []
    for path in paths:
        if not path.is_dir():
            fail(f"{path}: no such folder")
        run_dirs = [path] if (path / "config.json").exists() else sorted(
            p.parent for p in path.glob("*/config.json"))
        found = [load_run_dir(d) for d in run_dirs]
        found += [load_data_run(p) for p in sorted(path.glob("**/*__*__episodes.csv"))]
        if not found:
            fail(f"{path}: neither a run folder nor a folder of run folders or of plots/data")
        runs += found
    return runs


def moving_mean(values: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """Mean of the last `window` values at each index (fewer at the start)."""
    sums = np.cumsum(np.insert(values, 0, 0.0))
    counts = np.minimum(np.arange(1, len(values) + 1), window)
    return (sums[1:] - sums[np.arange(1, len(values) + 1) - counts]) / counts


def mean_curve(curves: list[tuple[np.ndarray, np.ndarray]],
               points: int = 500) -> tuple[np.ndarray, ...]:
    """Interpolate each (x, y) onto a common grid over the x range every curve covers;
    return the grid and the mean, min and max over the curves."""
    low = max(x[0] for x, _ in curves)
    high = max(low, min(x[-1] for x, _ in curves))
    grid = np.linspace(low, high, points)
    ys = np.stack([np.interp(grid, x, y) for x, y in curves])
    return grid, ys.mean(0), ys.min(0), ys.max(0)


def ordered(names) -> list[str]:
    """The scripts of SCRIPTS in their order, then any others alphabetically."""
    names = set(names)
    return [s for s in SCRIPTS if s in names] + sorted(names - set(SCRIPTS))


def by_env_and_script(runs: list[Run]) -> dict[str, dict[str, list[Run]]]:
    """{env_id: {script: [runs, by seed]}}, envs in first-seen order, scripts in SCRIPTS order."""
    groups: dict[str, dict[str, list[Run]]] = {}
    for run in runs:
        groups.setdefault(run.env_id, {}).setdefault(run.script, []).append(run)
    return {env: {s: sorted(scripts[s], key=lambda r: r.seed) for s in ordered(scripts)}
            for env, scripts in groups.items()}


def plot_learning_curves(runs: list[Run], out_dir: Path,
                         x: str = "global_step") -> list[Path]:
    """One PNG per env: per script, the mean over seeds of the smoothed return, band min..max."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for env_id, scripts in by_env_and_script(runs).items():
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for script, group in scripts.items():
            curves = [(r.episodes[x], moving_mean(r.episodes["episodic_return"])) for r in group]
            grid, mean, low, high = mean_curve(curves)
            color = COLORS.get(script)
            ax.plot(grid, mean, color=color, label=f"{script} ({len(group)} seeds)")
            ax.fill_between(grid, low, high, color=ax.lines[-1].get_color(), alpha=0.2,
                            linewidth=0)
        if env_id in THRESHOLDS:
            ax.axhline(THRESHOLDS[env_id], color="grey", linestyle=":", linewidth=1,
                       label=f"threshold {THRESHOLDS[env_id]:g}")
        ax.set(title=env_id, xlabel="environment steps" if x == "global_step" else
               "wall-clock time (s)", ylabel=f"episodic return, mean of last {WINDOW}")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
        fig.tight_layout()
        written.append(out_dir / f"{env_id}.png")
        fig.savefig(written[-1], dpi=120)
        plt.close(fig)
    return written


def plot_kl(runs: list[Run], path: Path,
            env_ids: tuple[str, ...] = ("CartPole-v1", "Hopper-v5")) -> Path:
    """The exact KL(pi_theta' || pi_theta) of each update, mean over seeds, one panel per env,
    with TRPO's delta (max_kl) and PPO-KL's d_targ (kl_target) from the runs' config.json."""
    groups = by_env_and_script(runs)
    env_ids = [env for env in env_ids if env in groups] or list(groups)[:2]
    fig, axes = plt.subplots(1, len(env_ids), figsize=(6 * len(env_ids), 4.8), squeeze=False)
    for ax, env_id in zip(axes[0], env_ids):
        for script, group in groups[env_id].items():
            grid, mean, _, _ = mean_curve([(r.updates["global_step"], r.updates["kl"])
                                           for r in group])
            ax.plot(grid, mean, color=COLORS.get(script), linewidth=1, label=script)
        for script, key, label, style in (("trpo", "max_kl", "delta (TRPO max_kl)", "--"),
                                          ("ppo_kl", "kl_target", "d_targ (PPO-KL kl_target)",
                                           ":")):
            values = {r.config[key] for r in groups[env_id].get(script, []) if key in r.config}
            for value in sorted(values):
                # in the algorithm's colour: delta and d_targ stay apart where they are equal
                ax.axhline(value, color=COLORS.get(script), linestyle=style, linewidth=1.5,
                           label=f"{label} = {value:g}")
        ax.set_yscale("log")
        ax.set(title=env_id, xlabel="environment steps", ylabel="KL(pi_old || pi_new)")
        ax.grid(alpha=0.3, which="both")
    # one legend below the panels, so that no curve hides behind it
    legend = {label: handle for ax in axes[0] for handle, label in
              zip(*ax.get_legend_handles_labels())}
    fig.legend(legend.values(), legend.keys(), loc="lower center", ncol=3, fontsize="small")
    fig.suptitle("Exact KL of each update, mean over seeds")
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_clip_objective(path: Path) -> Path:
    """L^CLIP(r) for one sample with A = +1 and A = -1, computed by
    ppo_clip.clipped_surrogate_loss itself (which returns -L^CLIP), and r A dashed."""
    sys.path.insert(0, str(REPO_ROOT))
    import torch  # here, not at the top: only this figure needs torch and the algorithm
    import ppo_clip

    clip_coef = ppo_clip.Args().clip_coef
    ratios = np.linspace(0.0, 2.0, 401)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, advantage in zip(axes, (1.0, -1.0)):
        objective = [-ppo_clip.clipped_surrogate_loss(torch.tensor([r]), torch.tensor([advantage]),
                                                      clip_coef).item() for r in ratios]
        ax.plot(ratios, ratios * advantage, color="grey", linestyle="--", label="r A (unclipped)")
        ax.plot(ratios, objective, color=COLORS["ppo_clip"], linewidth=2, label="L^CLIP")
        for r, name in ((1 - clip_coef, "1 - eps"), (1 + clip_coef, "1 + eps")):
            ax.axvline(r, color="black", linestyle=":", linewidth=1)
            ax.annotate(name, (r, 0.97), xycoords=("data", "axes fraction"), ha="center",
                        va="top", fontsize="small", backgroundcolor="white")
        ax.axvline(1.0, color="black", linewidth=0.5)
        sign = ">" if advantage > 0 else "<"
        ax.set(title=f"A {sign} 0 (A = {advantage:g}, eps = {clip_coef:g})",
               xlabel="r = pi_theta(a|s) / pi_theta'(a|s)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right" if advantage > 0 else "upper right",
                  fontsize="small")
    axes[0].set_ylabel("objective for one sample")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(args: Args) -> None:
    """Draw what the flags ask for and print the paths written."""
    if not args.run_dirs and not args.clip_objective:
        fail("give at least one run folder (or plots/data), or --clip-objective")
    written = []
    if args.run_dirs:
        runs = find_runs(list(args.run_dirs))
        written += plot_learning_curves(runs, args.out_dir, args.x)
        if args.kl:
            written.append(plot_kl(runs, args.out_dir / "kl.png"))
    if args.clip_objective:
        written.append(plot_clip_objective(args.out_dir / "clip_objective.png"))
    print("\n".join(map(str, written)))


if __name__ == "__main__":
    main(tyro.cli(Args))
