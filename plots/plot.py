"""Learning curves, the KL figure and the L^CLIP figure, from run folders or from plots/data.

A run is read from a run folder (`config.json`, `episodes.csv`, `updates.csv`, as the
algorithm scripts write them; env and script come from config.json's env_id and exp_name) or
from the small copies that benchmark.py keeps in <out-dir>/data/<env>/<script>__<seed>__*
(env and script come from the folder and file names), or from a peer library's run beside them,
plots/peers/<env>/<name>__<seed>.csv with the columns global_step and episodic_return (drawn
dashed, named <name>; its last line "# SPS train_sps=... steps=..." gives its speed and
budget). Each path given is searched at every depth for all three, so `runs` finds
runs/benchmark/<run> and runs/det/<group>/<run> alike; a run found twice (a run folder and
its copy in a summary's data/) is drawn once. A run folder without a finished episode or
update (stopped by Ctrl-C early, say) is skipped with a warning.

One curve per script and per set of flags on each env: the runs of a script are split by the
fields of the scripts' Args whose values differ between them, and the curve is labelled with
those (`ppo_clip (learning_rate=0.001; 3 seeds)`, counting distinct seeds). Fields that do not
change what is learnt (seed, cuda, torch_deterministic, runs_dir, saving, videos, evaluation)
and keys of config.json that are not Args fields (versions, ...) are not compared; a curve whose
runs ran different budgets (total_timesteps) is drawn with a warning, as it stops where the
shortest run does. Each run's moving mean of its last 20 episodic returns is interpolated onto
a common grid of environment steps (or of wall-clock seconds with --x wall_time); the curve is
the interquartile mean (IQM) over the runs at each point, its band the 95 % bootstrap interval
of that IQM (see iqm below); one PNG per env.

Figures go to runs/plots/ unless --out-dir says otherwise; the committed figures in plots/ are
rewritten only when asked for by name:
    python plots/plot.py plots/data --kl --out-dir plots    # plots/<env>.png and plots/kl.png
    python plots/plot.py --clip-objective --out-dir plots   # plots/clip_objective.png
    python plots/plot.py --trust-region --out-dir plots     # plots/trust_region.png

Examples:
    python plots/plot.py runs                               # every run under runs/, runs/plots/
    python plots/plot.py plots/data --x wall_time --out-dir /tmp/curves
"""

import ast
import contextlib
import csv
import functools
import io
import json
import os
import sys
import tempfile
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
SCRIPTS = ("vpg", "trpo", "ppo_clip", "ppo_kl", "grpo")
COLORS = dict(zip(SCRIPTS, ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")))
LINESTYLES = ("-", "--", "-.", ":")
"""one per set of flags of the same script, which keeps the script's colour"""
PEERS_DIR = PLOTS_DIR / "peers"
"""the committed runs of other libraries, <env>/<name>__<seed>.csv (global_step,episodic_return)"""
PEER_COLORS = ("tab:gray", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
BOOTSTRAP_RESAMPLES = 10_000
"""resamples of the seeds behind each IQM interval"""
DATA_FILES = ("episodes.csv", "updates.csv", "config.json")
"""what benchmark.py copies per run into <out-dir>/data/<env>/<script>__<seed>__<file>"""
OUTPUT_ONLY = frozenset({"runs_dir", "exp_name", "save_model", "capture_video",
                         "eval_checkpoint", "eval_episodes"})
"""Args fields that say what a run writes or evaluates (exp_name only names its folder), not
what it learns"""
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
    trust_region: bool = False
    """draw trust_region.png (two real TRPO updates on CartPole-v1 along their full step: the
    true KL and surrogate beside TRPO's models of them; trains trpo.py for some 15 s)"""


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
    empty file (created, never written) has no columns; lines starting with # are skipped."""
    try:
        with open(path, newline="") as file:
            lines = list(csv.reader(line for line in file if not line.startswith("#")))
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


def load_peer_run(csv_path: Path) -> Run:
    """A peer library's run, <env>/<name>__<seed>.csv: global_step and episodic_return, then a
    last line "# SPS train_sps=<steps/s> ... steps=<steps run> ..." read as its budget and its
    speed (config total_timesteps; one updates row of sps)."""
    try:
        name, seed = csv_path.stem.split("__")
        trailer = [line for line in csv_path.read_text().splitlines() if line.startswith("# SPS")]
        fields = dict(item.split("=", 1) for item in trailer[-1].split()[2:])
        config = {"total_timesteps": int(fields["steps"])}
        updates = {"global_step": np.array([config["total_timesteps"]]),
                   "sps": np.array([float(fields["train_sps"])])}
        seed = int(seed)
    except (OSError, ValueError, IndexError, KeyError) as error:
        raise BadRun(f"{csv_path}: not a peer's run <name>__<seed>.csv ending in a line "
                     f"'# SPS train_sps=... steps=...' ({type(error).__name__}: {error})") from None
    episodes = read_csv(csv_path)
    if len(episodes.get("episodic_return", ())) == 0:
        raise BadRun(f"{csv_path}: no episodes")
    return Run(csv_path.parent.name, name, seed, config, episodes, updates, csv_path)


def is_peer_csv(path: Path) -> bool:
    return path.name.count("__") == 1 and path.stem.split("__")[1].isdigit()


def find_runs(paths: list[Path]) -> list[Run]:
    """Every run at any depth under the given paths: run folders (config.json and episodes.csv),
    plots/data copies and peers' CSVs. A run that cannot be read is skipped with a warning; none
    at all that can be read ends the program with one line."""
    runs, skipped, seen = [], [], set()
    for path in paths:
        if not path.is_dir():
            fail(f"{path}: no such folder")
        run_dirs = sorted(p.parent for p in path.rglob("config.json")
                          if (p.parent / "episodes.csv").exists())
        found = [(load_run_dir, run_dir) for run_dir in run_dirs]
        found += [(load_data_run, p) for p in sorted(path.rglob("*__*__episodes.csv"))]
        found += [(load_peer_run, p) for p in sorted(path.rglob("*__*.csv")) if is_peer_csv(p)]
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


def on_common_grid(curves: list[tuple[np.ndarray, np.ndarray]],
                   points: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Interpolate each (x, y) onto a common grid over the x range every curve covers; return
    the grid [points] and the curves on it [curves, points]."""
    low = max(x[0] for x, _ in curves)
    high = max(low, min(x[-1] for x, _ in curves))
    grid = np.linspace(low, high, points)
    return grid, np.stack([np.interp(grid, x, y) for x, y in curves])


# The interquartile mean and its bootstrap interval are what Agarwal et al., "Deep RL at the
# Edge of the Statistical Precipice" (arXiv:2108.13264), recommend for results over a few seeds:
# the IQM is less swayed by one outlying seed than the mean, and the interval says how little
# three or five seeds pin it down. Their rliable package computes the same, but would bring
# arch, seaborn and pandas for what a dozen lines of numpy do here.

def iqm(values: np.ndarray) -> np.ndarray:
    """Interquartile mean over the last axis: the mean of what is left once floor(n / 4) values
    are cut from each end of the sorted values, exactly scipy.stats.trim_mean(values, 0.25)
    (n = 8: the middle 4; n = 5: the middle 3; n < 4: the plain mean)."""
    values = np.sort(values, axis=-1)
    cut = values.shape[-1] // 4
    return values[..., cut:values.shape[-1] - cut].mean(axis=-1)


def iqm_interval(values, resamples: int = BOOTSTRAP_RESAMPLES) -> tuple[np.ndarray, np.ndarray]:
    """95 % percentile-bootstrap interval of the IQM over the first axis (the seeds) of values
    [seeds] or [seeds, points]: the seeds resampled with replacement `resamples` times, the same
    resamples at every point, and the 2.5 and 97.5 percentiles of the resamples' IQMs. The
    generator's seed is fixed, so that the same runs give the same digits."""
    values = np.asarray(values, dtype=float)
    picks = np.random.default_rng(0).integers(len(values), size=(resamples, len(values)))
    low, high = np.percentile(iqm(np.moveaxis(values[picks], 1, -1)), [2.5, 97.5], axis=0)
    return low, high


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
    """Colour of the curve's script; a line style per set of flags of the same script; a
    recipe's run (<script>_<recipe>) dotted in its script's colour; a peer's run dashed, in a
    colour of its own."""
    def base(name: str) -> str | None:  # the script a name is, or is a recipe of
        return next((s for s in SCRIPTS if name == s or name.startswith(f"{s}_")), None)

    script = curves[index].script
    if script not in SCRIPTS and base(script):
        return dict(color=COLORS[base(script)], linestyle=":")
    if script not in SCRIPTS:
        peers = list(dict.fromkeys(c.script for c in curves if not base(c.script)))
        return dict(color=PEER_COLORS[peers.index(script) % len(PEER_COLORS)], linestyle="--")
    same_script = [c for c in curves[:index] if c.script == script]
    return dict(color=COLORS[script], linestyle=LINESTYLES[len(same_script) % len(LINESTYLES)])


def plot_learning_curves(runs: list[Run], out_dir: Path,
                         x: str = "global_step") -> list[Path]:
    """One PNG per env: per curve, the IQM over its runs of the smoothed return with the IQM's
    95 % bootstrap band (2,000 resamples: a figure needs no more); a warning for a curve of
    mixed budgets or too short to draw as a line."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for env_id, curves in curves_by_env(runs).items():
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for index, curve in enumerate(curves):
            if any(x not in r.episodes for r in curve.runs):  # a peer's CSV has no wall_time
                warn(f"{env_id}: {curve.name}: its runs record no {x}; not drawn")
                continue
            budgets = {r.config["total_timesteps"] for r in curve.runs
                       if "total_timesteps" in r.config}
            if len(budgets) > 1:
                warn(f"{env_id}: {curve.name}: runs of different budgets (total_timesteps "
                     f"{', '.join(map(str, sorted(budgets)))}); the curve stops where the "
                     "shortest run does")
            grid, ys = on_common_grid(
                [(r.episodes[x], moving_mean(r.episodes["episodic_return"])) for r in curve.runs])
            low, high = iqm_interval(ys, resamples=2_000)
            point = grid[0] == grid[-1]
            if point:  # one episode, or runs with no range of x in common: no line to draw
                warn(f"{env_id}: {curve.name}: its runs have no range of {x} in common (or one "
                     "episode); drawn as a single point")
            ax.plot(grid, iqm(ys.T), label=curve.label, marker="o" if point else None,
                    markevery=[0], **style(curves, index))
            ax.fill_between(grid, low, high, color=ax.lines[-1].get_color(), alpha=0.2,
                            linewidth=0)
        if env_id in THRESHOLDS:
            ax.axhline(THRESHOLDS[env_id], color="grey", linestyle=":", linewidth=1,
                       label=f"threshold {THRESHOLDS[env_id]:g}")
        ax.set(title=f"{env_id}: IQM over seeds, 95 % bootstrap band",
               xlabel="environment steps" if x == "global_step" else "wall-clock time (s)",
               ylabel=f"episodic return, mean of last {WINDOW}")
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
    groups = {env: [c for c in curves if c.script in SCRIPTS]  # peers log no KL
              for env, curves in curves_by_env(runs).items()}
    env_ids = [env for env in env_ids if env in groups] or list(groups)[:2]
    fig, axes = plt.subplots(1, len(env_ids), figsize=(6 * len(env_ids), 4.8), squeeze=False)
    for ax, env_id in zip(axes[0], env_ids):
        curves = groups[env_id]
        for index, curve in enumerate(curves):
            grid, ys = on_common_grid([(r.updates["global_step"], r.updates["kl"])
                                       for r in curve.runs])
            ax.plot(grid, ys.mean(0), linewidth=1, label=curve.name, **style(curves, index))
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


TRUST_REGION_STEPS = (512, 38_400)
"""environment steps trpo.py trains (CartPole-v1, default flags, seed 1) before each update of
trust_region.png: iteration 2 (early: the full step is accepted) and 76 (late: the full
step's KL is 1.01 δ, so the line search rejects it and backtracks once; found by trying every
1,024 steps from 16,896 to 39,936, where this was the only update that backtracked)"""


def import_trpo():
    """trpo.py, imported only where a figure needs it: torch and gymnasium take seconds."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    import trpo

    return trpo


@dataclass
class TrustRegionUpdate:
    """One TRPO update as train's step 3 computes it, from trpo.py's own functions, with the
    values at α = 1 (the full step x) of the models TRPO makes of the KL and of L."""

    args: object  # trpo.Args, the defaults
    iteration: int  # the update's number in train's count (updates.csv's iteration)
    global_step: int  # environment steps when train makes it (updates.csv's global_step)
    actor: object  # trpo.Actor, at θ'
    batch: tuple  # (old_dist, obs, actions, old_logprobs, advantages): surrogate_and_kl's inputs
    theta_old: object  # θ', flat
    full_step: object  # x = sqrt(2δ / sᵀ(F + cI)s) s, s = CG((F + cI), g)
    fisher_model: float  # ½ xᵀFx, F undamped: the KL to second order
    damped_model: float  # ½ xᵀ(F + cI)x: the model trust_region_step puts on δ
    linear_model: float  # g · x: L(θ' + x) - L(θ') to first order
    tried: list[tuple[float, float, float]]  # the line search's (α^k, L - L(θ'), mean KL)
    accepted: bool


def trained_trpo(total_timesteps: int, runs_dir: Path):
    """trpo.train on CartPole-v1 with the default flags and seed, then (args, actor, critic,
    environment steps run) reloaded from its model.pt and config.json."""
    trpo = import_trpo()
    import torch

    args = trpo.Args(total_timesteps=total_timesteps, save_model=True, runs_dir=str(runs_dir))
    with contextlib.redirect_stdout(io.StringIO()):  # its progress lines are not the figure's
        run_dir = trpo.train(args)
    checkpoint = torch.load(run_dir / "model.pt", weights_only=True)
    env = trpo.make_env(args.env_id, 0, False, run_dir, args.gamma, args.normalize)()
    actor = trpo.Actor(env.observation_space.shape[0], env.action_space, args.hidden_size)
    critic = trpo.Critic(env.observation_space.shape[0], args.hidden_size)
    env.close()
    actor.load_state_dict(checkpoint["actor"])
    critic.load_state_dict(checkpoint["critic"])
    steps = json.loads((run_dir / "config.json").read_text())["steps_run"]
    return args, actor, critic, steps


def collect_batch(args, actor, critic) -> tuple:
    """One batch of π_θ' as train's steps 1-2 collect it (N envs with SAME_STEP autoreset,
    actor.sample, GAE with the critic, the same advantage normalisation), seeded by args.seed:
    surrogate_and_kl's inputs (old_dist, obs, actions, old_logprobs, advantages)."""
    trpo = import_trpo()
    import gymnasium as gym
    import torch

    torch.manual_seed(args.seed)  # actor.sample's draws
    envs = gym.vector.SyncVectorEnv(
        [trpo.make_env(args.env_id, i, False, REPO_ROOT, args.gamma, args.normalize)
         for i in range(args.num_envs)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    columns = {name: [] for name in ("obs", "next_obs", "actions", "rewards", "terms", "dones")}
    next_obs, _ = envs.reset(seed=args.seed)
    for _ in range(args.num_steps):
        obs = next_obs
        with torch.no_grad():
            action = actor.sample(torch.as_tensor(obs)).numpy()
        next_obs, reward, terminated, truncated, info = envs.step(action)
        true_next = next_obs.copy()
        if "final_obs" in info:  # an env that ended was reset: its true s_{t+1} is final_obs
            true_next[info["_final_obs"]] = np.stack(info["final_obs"][info["_final_obs"]])
        for name, value in zip(columns, (obs, true_next, action, reward, terminated,
                                         terminated | truncated)):
            columns[name].append(np.asarray(value, dtype=np.float32))  # train's float32 rows
    envs.close()
    obs, next_obs, actions, rewards, terms, dones = (torch.as_tensor(np.stack(v))
                                                     for v in columns.values())  # [T, N, ...]
    with torch.no_grad():
        values = critic(obs)
        advantages = trpo.compute_gae(rewards, values, critic(next_obs), terms, dones,
                                      args.gamma, args.gae_lambda).reshape(-1)
        b_obs = obs.reshape(-1, obs.shape[-1])
        b_actions = actions.reshape(-1, *actions.shape[2:])
        old_dist = actor(b_obs)
        if args.norm_adv:  # as train does before its step
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        return old_dist, b_obs, b_actions, old_dist.log_prob(b_actions), advantages


def trust_region_update(total_timesteps: int, runs_dir: Path) -> TrustRegionUpdate:
    """The update train makes after total_timesteps of training, on a fresh batch: g, the KL's
    gradient, CG, trust_region_step and line_search, as in train's step 3 with the default Args.
    The line search's evaluations are recorded by the function it is given, not by a hook."""
    trpo = import_trpo()
    import torch
    from torch import nn
    from torch.autograd import grad

    args, actor, critic, steps = trained_trpo(total_timesteps, runs_dir)
    batch = collect_batch(args, actor, critic)
    params = list(actor.parameters())
    surrogate, kl = trpo.surrogate_and_kl(actor, *batch)
    g = nn.utils.parameters_to_vector(grad(surrogate, params, retain_graph=True))
    kl_grad = nn.utils.parameters_to_vector(grad(kl, params, create_graph=True))

    def Fvp(v, damping=args.cg_damping):  # v -> (F + cI) v
        return trpo.fisher_vector_product(kl_grad, params, v, damping)

    search_dir = trpo.conjugate_gradient(Fvp, g, args.cg_iters)
    full_step = trpo.trust_region_step(search_dir, Fvp(search_dir), args.max_kl).detach()
    # the models at α = 1, before the line search moves the parameters that F v's graph reads
    models = [0.5 * (Fvp(full_step, 0.0) @ full_step).item(),
              0.5 * (Fvp(full_step) @ full_step).item(), (g @ full_step).item()]
    theta_old = nn.utils.parameters_to_vector(params).detach().clone()
    evaluations = []

    def surrogate_and_kl_at(theta):  # train's, and it keeps what the line search evaluates
        nn.utils.vector_to_parameters(theta, params)
        evaluations.append(tuple(x.item() for x in trpo.surrogate_and_kl(actor, *batch)))
        return evaluations[-1]

    with torch.no_grad():
        _, _, accepted, _ = trpo.line_search(surrogate_and_kl_at, theta_old, full_step,
                                             args.max_kl, args.backtrack_coef,
                                             args.backtrack_iters)
        nn.utils.vector_to_parameters(theta_old, params)  # back to θ' for the curves
    (surrogate_old, _), *tried = evaluations  # its first evaluation is at θ'
    tried = [(args.backtrack_coef**k, surrogate - surrogate_old, kl)
             for k, (surrogate, kl) in enumerate(tried)]
    batch_size = args.num_envs * args.num_steps
    return TrustRegionUpdate(args, steps // batch_size + 1, steps + batch_size, actor, batch,
                             theta_old, full_step, *models, tried, accepted)


def trust_region_updates(steps: tuple[int, ...] = TRUST_REGION_STEPS) -> list[TrustRegionUpdate]:
    """One update after each number of training steps; the training runs go to a temporary
    folder, deleted after."""
    with tempfile.TemporaryDirectory() as runs_dir:
        return [trust_region_update(total, Path(runs_dir)) for total in steps]


@dataclass
class TrustRegionCurves:
    """Along x(α) = α x (x the full step) of one update, each array over alphas: the measured
    mean KL and surrogate improvement, and the models TRPO takes for them."""

    alphas: np.ndarray
    true_kl: np.ndarray  # mean_kl(π_θ', π_θ'+x(α)), nats
    fisher_kl: np.ndarray  # ½ x(α)ᵀF x(α), F undamped: the KL to second order
    damped_kl: np.ndarray  # ½ x(α)ᵀ(F + cI) x(α): δ at α = 1
    true_gain: np.ndarray  # L(θ' + x(α)) - L(θ')
    linear_gain: np.ndarray  # g · x(α): L to first order


def surrogate_and_kl_along(update: TrustRegionUpdate, alphas) -> np.ndarray:
    """[(L(θ' + α x), mean KL)] for each α, from trpo.surrogate_and_kl; the actor ends at θ'."""
    import torch
    from torch import nn

    trpo, params = import_trpo(), list(update.actor.parameters())
    values = []
    with torch.no_grad():
        for alpha in alphas:
            nn.utils.vector_to_parameters(update.theta_old + alpha * update.full_step, params)
            values.append([x.item() for x in trpo.surrogate_and_kl(update.actor, *update.batch)])
        nn.utils.vector_to_parameters(update.theta_old, params)
    return np.array(values).reshape(-1, 2)


def trust_region_curves(update: TrustRegionUpdate, alphas) -> TrustRegionCurves:
    """The curves of one update at the given α; the models are α² (α for g · x) times their
    value at the full step."""
    alphas = np.asarray(alphas, dtype=float)
    surrogate, kl = surrogate_and_kl_along(update, np.concatenate([[0.0], alphas])).T
    return TrustRegionCurves(alphas, kl[1:], update.fisher_model * alphas**2,
                             update.damped_model * alphas**2, surrogate[1:] - surrogate[0],
                             update.linear_model * alphas)


def draw_trust_region_update(axes, update: TrustRegionUpdate, curves: TrustRegionCurves) -> None:
    """Left: the KL and its models with δ; right: the surrogate and its linear model; on both
    the points the line search tried, the rejected ones crossed and the accepted one starred.
    Titles give the numbers; labels are matplotlib mathtext."""
    delta, tried = update.args.max_kl, np.array(update.tried)
    where = f"iteration {update.iteration}, global step {update.global_step:,}"
    if update.accepted and len(tried) == 1:
        outcome = r"line search: the full step ($\alpha = 1$) accepted, 0 backtracks"
    elif update.accepted:
        outcome = (rf"line search: $\alpha = {tried[-1, 0]:.3g}$ accepted after "
                   f"{len(tried) - 1} backtrack{'' if len(tried) == 2 else 's'}")
    else:
        outcome = rf"line search: NO STEP ACCEPTED in {len(tried)} tries, $\theta'$ kept"
    kl_numbers = (rf"full step: KL $= {tried[0, 2] / delta:.2f}\,\delta$, "
                  rf"$\frac{{1}}{{2}}x^\top F x = {update.fisher_model / delta:.2f}\,\delta$")
    gain_numbers = (rf"at $\alpha = {tried[-1, 0]:.3g}$: true {tried[-1, 1]:.4f}, linear "
                    f"{update.linear_model * tried[-1, 0]:.4f}")
    rejected = slice(0, len(tried) - 1) if update.accepted else slice(0, len(tried))
    panels = ((axes[0], f"{where}: KL constraint\n{kl_numbers}\n{outcome}", tried[:, 2],
               r"mean $D_{KL}(\pi_{\theta'} \,\|\, \pi_{\theta' + \alpha x})$ (nats)",
               [(curves.true_kl, "true mean KL (mean_kl)", COLORS["trpo"], "-"),
                (curves.fisher_kl, r"$\frac{1}{2}x^\top F x$ (second order, undamped $F$)",
                 "black", "--"),
                (curves.damped_kl, rf"$\frac{{1}}{{2}}x^\top (F + cI)\,x$, "
                 rf"$c = {update.args.cg_damping:g}$ (sets the full step)", "grey", ":")]),
              (axes[1], f"{where}: surrogate\n{gain_numbers}\n{outcome}", tried[:, 1],
               r"$L(\theta' + \alpha x) - L(\theta')$ (normalised advantage)",
               [(curves.true_gain, "true surrogate improvement", COLORS["trpo"], "-"),
                (curves.linear_gain, r"$g \cdot x$ (first order)", "black", "--")]))
    for ax, title, tried_y, ylabel, lines in panels:
        for y, label, color, linestyle in lines:
            ax.plot(curves.alphas, y, color=color, linestyle=linestyle, label=label)
        if ax is axes[0]:
            ax.axhline(delta, color="tab:red", linewidth=1,
                       label=rf"$\delta$ = max_kl = {delta:g}")
        if len(tried[rejected]):
            ax.plot(tried[rejected, 0], tried_y[rejected], "x", color="tab:red", markersize=10,
                    mew=2, label=rf"tried and rejected: $\alpha = {update.args.backtrack_coef:g}"
                                 r"^k$, $k = 0, 1, \ldots$")
        if update.accepted:
            ax.plot(tried[-1, 0], tried_y[-1], "*", color="tab:green", markersize=14,
                    label=rf"accepted: $\alpha = {tried[-1, 0]:.3g}$")
        ax.axvline(1.0, color="black", linewidth=0.5)
        ax.set(title=title, xlabel=r"$\alpha$ (the step is $\alpha x$, $x$ the full step)",
               ylabel=ylabel)
        ax.title.set_fontsize("medium")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize="small")


def plot_trust_region(path: Path, updates: list[TrustRegionUpdate] | None = None) -> Path:
    """trust_region.png: one row per update (trust_region_updates() unless given)."""
    updates = trust_region_updates() if updates is None else updates
    fig, axes = plt.subplots(len(updates), 2, figsize=(12, 5 * len(updates)), squeeze=False)
    for row, update in zip(axes, updates):
        draw_trust_region_update(row, update, trust_region_curves(update,
                                                                  np.linspace(0.0, 1.5, 61)))
    args = updates[0].args
    fig.suptitle(f"TRPO on {args.env_id} (trpo.py defaults, seed {args.seed}): one update along "
                 r"its full step $x$, true KL and surrogate against TRPO's models of them")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(args: Args) -> None:
    """Draw what the flags ask for and print the paths written."""
    if not args.run_dirs and not args.clip_objective and not args.trust_region:
        fail("give at least one run folder (or plots/data), --clip-objective or "
             "--trust-region")
    written = []
    runs = find_runs(list(args.run_dirs)) if args.run_dirs else []
    writable_folder("--out-dir", args.out_dir)  # after reading, before drawing
    if runs:
        written += plot_learning_curves(runs, args.out_dir, args.x)
        if args.kl:
            written.append(plot_kl(runs, args.out_dir / "kl.png"))
    if args.clip_objective:
        written.append(plot_clip_objective(args.out_dir / "clip_objective.png"))
    if args.trust_region:
        written.append(plot_trust_region(args.out_dir / "trust_region.png"))
    print("\n".join(map(str, written)))


if __name__ == "__main__":
    main(tyro.cli(Args))
