"""Learning curves, the KL figure and the L^CLIP figure, from run folders or from plots/data.

A run is read from a run folder (`config.json`, `episodes.csv`, `updates.csv`, as the
algorithm scripts write them; env and script come from config.json's env_id and exp_name) or
from the small copies that benchmark.py keeps in <out-dir>/data/<env>/<script>__<seed>__*
(env and script come from the folder and file names). Each path given is searched at every
depth for both, so `runs` finds runs/benchmark/<run> and runs/det/<group>/<run> alike; a run
found twice (a run folder and its copy in a summary's data/) is drawn once. A run folder
without a finished episode or update (stopped by Ctrl-C early, say) is skipped with a warning.

One curve per script and per set of flags on each env: the runs of a script are split by the
fields of the scripts' Args whose values differ between them, and the curve is labelled with
those (`ppo_clip (learning_rate=0.001; 3 seeds)`, counting distinct seeds). Fields that do not
change what is learnt (seed, cuda, torch_deterministic, runs_dir, saving, videos, evaluation)
and keys of config.json that are not Args fields (versions, ...) are not compared; a curve whose
runs ran different budgets (total_timesteps) is drawn with a warning, as it stops where the
shortest run does. Each curve is the mean over its runs of the moving mean of the last 20
episodic returns, interpolated onto a common grid of environment steps (or of wall-clock
seconds with --x wall_time), with a band from the lowest to the highest run; one PNG per env.

Figures go to runs/plots/ unless --out-dir says otherwise; the committed figures in plots/ are
rewritten only when asked for by name:
    python plots/plot.py plots/data --kl --out-dir plots    # plots/<env>.png and plots/kl.png
    python plots/plot.py --clip-objective --out-dir plots   # plots/clip_objective.png

Examples:
    python plots/plot.py runs                               # every run under runs/, runs/plots/
    python plots/plot.py plots/data --x wall_time --out-dir /tmp/curves
"""

import ast
import csv
import functools
import json
import os
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
LINESTYLES = ("-", "--", "-.", ":")
"""one per set of flags of the same script, which keeps the script's colour"""
DATA_FILES = ("episodes.csv", "updates.csv", "config.json")
"""what benchmark.py copies per run into <out-dir>/data/<env>/<script>__<seed>__<file>"""
OUTPUT_ONLY = frozenset({"runs_dir", "save_model", "capture_video", "eval_checkpoint",
                         "eval_episodes"})
"""Args fields that say what a run writes or evaluates, not what it learns"""
NOT_A_VARIANT = OUTPUT_ONLY | {"seed", "cuda", "torch_deterministic", "exp_name", "env_id",
                               "total_timesteps"}
"""Args fields that never split a curve: the seeds are what it averages over, the device and
determinism change the digits and not the experiment, script and env are the curve's and the
figure's own, and a budget that differs is warned about instead"""


@dataclass
class Args:
    """Learning curves from run folders or plots/data: one PNG per environment."""

    run_dirs: tyro.conf.Positional[tuple[Path, ...]] = ()
    """run folders, or folders searched at every depth for run folders and plots/data copies"""
    out_dir: Path = Path("runs/plots")
    """folder the PNGs are written to, named <env_id>.png (plots/ only when given by name)"""
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


class Curve(NamedTuple):
    """The runs of one script on one env with the same flags; `flags` names those that set it
    apart from the script's other curves on that env ("" if it has none)."""

    script: str
    flags: str
    runs: list[Run]

    @property
    def name(self) -> str:
        return f"{self.script} ({self.flags})" if self.flags else self.script

    @property
    def label(self) -> str:
        seeds = len({run.seed for run in self.runs})  # three runs of seed 1 are one seed
        count = f"{seeds} seed{'s' if seeds != 1 else ''}"
        return f"{self.script} ({self.flags + '; ' if self.flags else ''}{count})"


class BadRun(Exception):
    """A run that cannot be drawn or summarised; the message says which file and why."""


def fail(message: str, status: int = 2) -> None:
    """End the program with one line on stderr, no traceback."""
    print(f"{Path(sys.argv[0]).name}: error: {message}", file=sys.stderr)
    raise SystemExit(status)


def warn(message: str) -> None:
    """One line on stderr; the program goes on."""
    print(f"{Path(sys.argv[0]).name}: warning: {message}", file=sys.stderr)


def writable_folder(flag: str, folder: Path) -> Path:
    """Create the folder if need be and check that files can be written in it, before any work,
    so that a bad --out-dir costs one line on stderr instead of a traceback at the end."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        fail(f"{flag} {folder}: cannot create the folder ({error.strerror or error})")
    if not os.access(folder, os.W_OK | os.X_OK):
        fail(f"{flag} {folder}: the folder is not writable")
    return folder


def read_csv(path: Path) -> dict[str, np.ndarray]:
    """Read a CSV with a header row into {column: float array}, in the file's column order; an
    empty file (created, never written) has no columns."""
    try:
        with open(path, newline="") as file:
            lines = list(csv.reader(file))
        header, *rows = lines or [[]]
        return {name: np.array([float(row[i]) for row in rows]) for i, name in enumerate(header)}
    except (OSError, ValueError, IndexError) as error:
        raise BadRun(f"{path}: not a readable CSV with a header row "
                     f"({type(error).__name__}: {error})") from None


def load_run(path: Path, env_id: str, script: str, seed: int, config: dict,
             prefix: str = "") -> Run:
    """Read <path>/<prefix>episodes.csv and updates.csv; BadRun if either has no rows."""
    episodes = read_csv(path / f"{prefix}episodes.csv")
    if len(episodes.get("episodic_return", ())) == 0:
        raise BadRun(f"{path / (prefix + 'episodes.csv')}: no episodes (the run stopped before "
                     "its first episode ended?)")
    updates = read_csv(path / f"{prefix}updates.csv")
    if len(updates.get("global_step", ())) == 0:
        raise BadRun(f"{path / (prefix + 'updates.csv')}: no updates (the run stopped before "
                     "its first update?)")
    return Run(env_id, script, seed, config, episodes, updates, path / prefix)


def load_run_dir(run_dir: Path) -> Run:
    """A run folder written by an algorithm script; names come from its config.json."""
    try:
        config = json.loads((run_dir / "config.json").read_text())
        names = config["env_id"], config["exp_name"], int(config["seed"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise BadRun(f"{run_dir}: no readable config.json with env_id, exp_name and seed "
                     f"({type(error).__name__}: {error})") from None
    return load_run(run_dir, *names, config)


def load_data_run(episodes_csv: Path) -> Run:
    """A run copied into <out-dir>/data/<env>/<script>__<seed>__episodes.csv by benchmark.py."""
    try:
        script, seed, _ = episodes_csv.name.split("__")
        prefix = f"{script}__{seed}__"
        config_path = episodes_csv.with_name(prefix + "config.json")
        config = json.loads(config_path.read_text()) if config_path.exists() else {}
        seed = int(seed)
    except (OSError, ValueError) as error:
        raise BadRun(f"{episodes_csv}: not a copy named <script>__<seed>__episodes.csv with a "
                     f"readable config.json ({type(error).__name__}: {error})") from None
    return load_run(episodes_csv.parent, episodes_csv.parent.name, script, seed, config, prefix)


def find_runs(paths: list[Path]) -> list[Run]:
    """Every run at any depth under the given paths: run folders (config.json and episodes.csv)
    and plots/data copies. A run that cannot be read is skipped with a warning; none at all
    that can be read ends the program with one line."""
    runs, skipped, seen = [], [], set()
    for path in paths:
        if not path.is_dir():
            fail(f"{path}: no such folder")
        run_dirs = sorted(p.parent for p in path.rglob("config.json")
                          if (p.parent / "episodes.csv").exists())
        found = [(load_run_dir, run_dir) for run_dir in run_dirs]
        found += [(load_data_run, p) for p in sorted(path.rglob("*__*__episodes.csv"))]
        if not found:
            fail(f"{path}: neither a run folder nor a folder of run folders or of plots/data")
        for load, where in found:
            try:
                run = load(where)
            except BadRun as error:
                skipped.append(str(error))
                continue
            # a summary's copy of a run has the same config and episodes, to the wall-clock
            # digit, as the run folder it came from: the same run, drawn once
            key = (run.env_id, run.script, run.seed, json.dumps(run.config, sort_keys=True),
                   *(values.tobytes() for values in run.episodes.values()))
            if key not in seen:
                seen.add(key)
                runs.append(run)
    if not runs:
        more = f" (and {len(skipped) - 1} more like it)" if len(skipped) > 1 else ""
        fail(f"no run to draw in {' '.join(map(str, paths))}: {skipped[0]}{more}")
    for reason in skipped:
        warn(f"skipped {reason}")
    return runs


@functools.cache
def script_args(script: str) -> dict:
    """{field: default} of an algorithm script's Args, in their order, read from its source:
    importing the script would import torch and gymnasium, seconds for a figure. A default
    that is not a literal reads as None."""
    tree = ast.parse((REPO_ROOT / f"{script}.py").read_text())
    (args,) = [node for node in tree.body if isinstance(node, ast.ClassDef)
               and node.name == "Args"]
    fields = {}
    for item in args.body:
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            try:
                fields[item.target.id] = ast.literal_eval(item.value) if item.value else None
            except ValueError:
                fields[item.target.id] = None
    return fields


@functools.cache
def args_fields() -> tuple[str, ...]:
    """The fields of every algorithm script's Args, in order: what a config.json may hold that
    changes a run (versions and other keys are not fields)."""
    return tuple(dict.fromkeys(name for script in SCRIPTS for name in script_args(script)))


def variant(run: Run) -> dict:
    """The Args fields of a run that may split curves, a field its config.json does not
    record read as its script's default (None, unknown, for a script not in SCRIPTS)."""
    defaults = script_args(run.script) if run.script in SCRIPTS else {}
    return {name: run.config.get(name, defaults.get(name)) for name in args_fields()
            if name not in NOT_A_VARIANT}


def comparable(value):
    """A config.json value as a dict key: JSON lists as tuples, 1 and 1.0 alike."""
    if isinstance(value, list):
        return tuple(map(comparable, value))
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


def shown(value) -> str:
    """A flag's value in a legend: floats short (0.0003, not 0.00030000000000000003)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def curves_by_env(runs: list[Run]) -> dict[str, list[Curve]]:
    """{env_id: [Curve]}: per env, the runs of each script split by the Args fields whose
    values differ between them (NOT_A_VARIANT aside); scripts in SCRIPTS order, then the
    curves of a script by their flags."""
    curves = {}
    for env_id, scripts in by_env_and_script(runs).items():
        curves[env_id] = []
        for script, group in scripts.items():
            variants = [variant(run) for run in group]
            keys = [{name: comparable(value) for name, value in v.items()} for v in variants]
            differ = [name for name in keys[0] if len({key[name] for key in keys}) > 1]
            split: dict[tuple, tuple[str, list[Run]]] = {}
            for run, v, key in zip(group, variants, keys):
                flags = ", ".join(f"{name}={shown(v[name])}" for name in differ)
                split.setdefault(tuple(key[name] for name in differ), (flags, []))[1].append(run)
            curves[env_id] += sorted((Curve(script, flags, members)
                                      for flags, members in split.values()),
                                     key=lambda curve: curve.flags)
    return curves


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


def style(curves: list[Curve], index: int) -> dict:
    """Colour of the curve's script; a line style per set of flags of the same script."""
    same_script = [c for c in curves[:index] if c.script == curves[index].script]
    return dict(color=COLORS.get(curves[index].script),
                linestyle=LINESTYLES[len(same_script) % len(LINESTYLES)])


def plot_learning_curves(runs: list[Run], out_dir: Path,
                         x: str = "global_step") -> list[Path]:
    """One PNG per env: per curve, the mean over its runs of the smoothed return, band min..max;
    a warning for a curve of mixed budgets or too short to draw as a line."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for env_id, curves in curves_by_env(runs).items():
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for index, curve in enumerate(curves):
            budgets = {r.config["total_timesteps"] for r in curve.runs
                       if "total_timesteps" in r.config}
            if len(budgets) > 1:
                warn(f"{env_id}: {curve.name}: runs of different budgets (total_timesteps "
                     f"{', '.join(map(str, sorted(budgets)))}); the curve stops where the "
                     "shortest run does")
            grid, mean, low, high = mean_curve(
                [(r.episodes[x], moving_mean(r.episodes["episodic_return"])) for r in curve.runs])
            point = grid[0] == grid[-1]
            if point:  # one episode, or runs with no range of x in common: no line to draw
                warn(f"{env_id}: {curve.name}: its runs have no range of {x} in common (or one "
                     "episode); drawn as a single point")
            ax.plot(grid, mean, label=curve.label, marker="o" if point else None, markevery=[0],
                    **style(curves, index))
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
    groups = curves_by_env(runs)
    env_ids = [env for env in env_ids if env in groups] or list(groups)[:2]
    fig, axes = plt.subplots(1, len(env_ids), figsize=(6 * len(env_ids), 4.8), squeeze=False)
    for ax, env_id in zip(axes[0], env_ids):
        curves = groups[env_id]
        for index, curve in enumerate(curves):
            grid, mean, _, _ = mean_curve([(r.updates["global_step"], r.updates["kl"])
                                           for r in curve.runs])
            ax.plot(grid, mean, linewidth=1, label=curve.name, **style(curves, index))
        for script, key, label, linestyle in (("trpo", "max_kl", "delta (TRPO max_kl)", "--"),
                                              ("ppo_kl", "kl_target",
                                               "d_targ (PPO-KL kl_target)", ":")):
            values = {r.config[key] for c in curves if c.script == script for r in c.runs
                      if key in r.config}
            for value in sorted(values):
                # in the algorithm's colour: delta and d_targ stay apart where they are equal
                ax.axhline(value, color=COLORS.get(script), linestyle=linestyle, linewidth=1.5,
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
    runs = find_runs(list(args.run_dirs)) if args.run_dirs else []
    writable_folder("--out-dir", args.out_dir)  # after reading, before drawing
    if runs:
        written += plot_learning_curves(runs, args.out_dir, args.x)
        if args.kl:
            written.append(plot_kl(runs, args.out_dir / "kl.png"))
    if args.clip_objective:
        written.append(plot_clip_objective(args.out_dir / "clip_objective.png"))
    print("\n".join(map(str, written)))


if __name__ == "__main__":
    main(tyro.cli(Args))
