"""Run the benchmark grid of (script, env, seed), then summarise it into --out-dir.

Every run is the algorithm script's own command line, run as a subprocess from the repository
root, at most --jobs at a time, with OMP_NUM_THREADS=1, into one runs folder (--runs-dir). The
grid, its budgets and the continuous-control flags are GRID and CONTINUOUS_FLAGS below.

Resuming: a run of the grid is finished when a folder in --runs-dir has a config.json that
agrees with its command (every field of the script's Args that the command line gives, the
defaults included; a field the config does not record counts as the default; where the run
folders go, model saving and videos aside) and says "finished": true, or "diverged" (a run
stopped by a non-finite loss is a result, its rows up to the stop; older configs without either:
an updates.csv with one row per iteration); a later call skips it. An unfinished folder
(stopped, failed, or still running elsewhere) is left in place, never deleted, and the run
starts again in a new folder; the summary reads finished folders only.

Summary (at the end, or alone with --summary-only) into --out-dir, <runs-dir>/summary unless
given (--runs-dir: runs/benchmark for this grid). It merges two sources, one run per (script,
env, seed): the copies already in <out-dir>/data (for --out-dir plots, the committed results),
then every finished run in --runs-dir, oldest first, so that the newest finished run replaces
the copy of its (script, env, seed); nothing else in <out-dir> is removed, so a table
regenerated with the same budgets never loses a row. --scripts/--envs/--seeds do not select
here. From either source, a run of a grid (script, env) counts only if its config agrees with
GRID's command as above (with the budget of --total-timesteps, if given), so that runs made
with other flags are left out, with a warning (a copy left out stays in data/):
    <out-dir>/results.csv    script,env,steps,seeds,mean,std,min,max,iqm,iqm_low,iqm_high,
                             steps_to_threshold,sps
        mean, std (n - 1; empty for one seed), min, max: over seeds, of each run's mean return
        over its last 20 episodes (its final return); iqm: the interquartile mean of the final
        returns, iqm_low and iqm_high its 95 % bootstrap interval over seeds (plot.py's iqm);
        steps_to_threshold: median over seeds of the first step where the 20-episode moving
        mean reaches THRESHOLDS[env] (inf: the median seed never did; empty: no threshold);
        sps: median over seeds of the last updates.csv row's sps. The peers' runs committed
        in plots/peers/<env>/ for the envs summarised add rows of their own (steps and sps
        from each CSV's last line, see plot.load_peer_run).
    <out-dir>/data/<env>/<script>__<seed>__{episodes.csv,updates.csv,config.json}
    <out-dir>/<env>.png      learning curves with the peers' (plot.py), and <out-dir>/kl.png

The committed results in plots/ are rewritten only by naming that folder, from the committed
copies alone (with runs/benchmark empty or absent) or with new full-budget runs merged in:
    python plots/benchmark.py --summary-only --out-dir plots
--total-timesteps with an --out-dir in plots/ is refused: the committed results are the grid's
full budgets.

Examples:
    python plots/benchmark.py                            # the whole grid, two runs at a time
    python plots/benchmark.py --envs Hopper-v5 --seeds 1 --jobs 1
    python plots/benchmark.py --dry-run | parallel -j 8  # or: while read -r c; do
                                                         #   sbatch --wrap "$c"; done
    python plots/benchmark.py --summary-only             # into runs/benchmark/summary
    python plots/benchmark.py --grid table1 --jobs 1     # runs in runs/claims
    python plots/benchmark.py --envs CartPole-v1 --scripts ppo_clip --seeds 1 \\
        --total-timesteps 4096                           # a quick check, into summary_4096
"""

import dataclasses
import functools
import importlib
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import tyro

import claims
import plot
import solved
from plot import (PEERS_DIR, PLOTS_DIR, REPO_ROOT, SCRIPTS, THRESHOLDS, WINDOW, fail, iqm,
                  iqm_interval, warn, writable_folder)

sys.path.insert(0, str(REPO_ROOT))  # the algorithm scripts, for their Args

# Flags of the continuous-control runs, by script (the README points here). Every flag
# here is a field of that script's Args (tests/test_plots.py checks it). They follow the PPO
# paper's MuJoCo settings (arXiv:1707.06347, Table 3) but for gamma 0.995 (0.99 there), trpo's
# lambda 0.9, --vf-coef 1 and the KL bounds of 0.02; the README's table of Hopper-v5
# variants has the runs behind each departure.
CONTINUOUS_FLAGS = {
    "vpg": "--num-envs 1 --num-steps 2048 --num-minibatches 32 --update-epochs 10 "
           "--learning-rate 3e-4 --gamma 0.99 --gae-lambda 0.95 --normalize",
    "trpo": "--num-envs 1 --num-steps 2048 --num-minibatches 32 --update-epochs 10 "
            "--learning-rate 1e-3 --gamma 0.995 --gae-lambda 0.9 --max-kl 0.02 --normalize",
    "ppo_clip": "--num-envs 1 --num-steps 2048 --num-minibatches 32 --update-epochs 10 "
                "--learning-rate 3e-4 --gamma 0.995 --gae-lambda 0.95 --ent-coef 0 "
                "--vf-coef 1 --normalize",
    "ppo_kl": "--num-envs 1 --num-steps 2048 --num-minibatches 32 --update-epochs 10 "
              "--learning-rate 3e-4 --gamma 0.995 --gae-lambda 0.95 --ent-coef 0 "
              "--kl-target 0.02 --normalize",
}


# One published recipe, a row of its own on the MuJoCo tasks (RESULTS.md, "HalfCheetah-v5: one
# published recipe"; tried on HalfCheetah-v5 first, and ahead there, on the other two):
# Tianshou's MuJoCo PPO (github.com/thu-ml/tianshou, examples/mujoco/mujoco_ppo.py, with 64
# parallel envs as in its v0.4 benchmark): batches of 64 x 32 steps, 10 epochs of minibatches
# of 64, lr 3e-4 annealed, gamma 0.99, vf-coef 0.25, no advantage normalisation, log std from
# -0.5, observations normalised and rewards raw, advantages recomputed before every epoch,
# value targets scaled by the returns' running std.
RECIPES = {"ppo_clip_tianshou": "ppo_clip"}  # the run's name (its --exp-name) -> its script
RECIPE_FLAGS = {
    "ppo_clip_tianshou": "--num-envs 64 --num-steps 32 --num-minibatches 32 --update-epochs 10 "
                         "--learning-rate 3e-4 --gamma 0.99 --gae-lambda 0.95 --vf-coef 0.25 "
                         "--ent-coef 0 --max-grad-norm 0.5 --no-norm-adv --log-std-init -0.5 "
                         "--normalize --recompute-adv --scale-value-targets",
}
NAMES = SCRIPTS + tuple(RECIPES)  # what a grid's row may be


class EnvGrid(NamedTuple):
    """The runs of one env: environment steps by script, seeds, extra flags by script."""

    steps: dict[str, int]
    seeds: tuple[int, ...]
    flags: dict[str, str]


# vpg is left out of the MuJoCo grid: its committed three-seed runs are kept and summarised as
# they are, but it is no contender there (a few hundred on Hopper-v5 where the others pass 3,000)
MUJOCO = dict.fromkeys(("trpo", "ppo_clip", "ppo_kl"), 1_000_000)
MUJOCO_GRID = EnvGrid({**MUJOCO, **dict.fromkeys(RECIPES, 1_000_000)}, (1, 2, 3, 4, 5),
                      {**CONTINUOUS_FLAGS, **RECIPE_FLAGS})
GRID = {  # CartPole runs every script with its defaults (vpg and grpo need twice the steps)
    "CartPole-v1": EnvGrid({**dict.fromkeys(SCRIPTS, 100_000), "vpg": 200_000,
                            "grpo": 200_000},
                           (1, 2, 3, 4, 5), {}),
    "Pendulum-v1": EnvGrid(dict.fromkeys(("vpg", "trpo", "ppo_clip", "ppo_kl"), 200_000),
                           (1, 2, 3), CONTINUOUS_FLAGS),
    "Hopper-v5": MUJOCO_GRID,
    "HalfCheetah-v5": MUJOCO_GRID,
    "Walker2d-v5": MUJOCO_GRID,
}
RESULT_COLUMNS = ["script", "env", "steps", "seeds", "mean", "std", "min", "max", "iqm",
                  "iqm_low", "iqm_high", "steps_to_threshold", "sps"]


@dataclasses.dataclass
class Args:
    """Run the benchmark grid of (script, env, seed) and summarise it into --out-dir."""

    grid: Literal["benchmark", "table1", "reuse", "grpo"] = "benchmark"
    """benchmark: every script against the peers (GRID); table1: the PPO paper's Table 1 and a
    trpo row on seven MuJoCo tasks; reuse: update epochs K with and without the clip (both
    plots/claims.py); grpo: does grpo.py keep a solved CartPole solved (plots/solved.py)"""
    scripts: tuple[str, ...] = NAMES
    """run only these scripts (or recipes, RECIPES) of the grid"""
    envs: tuple[str, ...] | None = None
    """run only these envs of the grid; None: all of them"""
    seeds: tuple[int, ...] | None = None
    """run only these seeds; None: each env's seeds in GRID"""
    total_timesteps: int | None = None
    """override every run's budget of environment steps (for quick checks); the summary then
    reads the runs of this budget"""
    runs_dir: Path | None = None
    """folder of the run folders, shared by every run of the grid; None: the grid's own,
    GRID_RUNS_DIR (table1 and reuse share runs/claims), so that no summary reads another
    grid's runs"""
    out_dir: Path | None = None
    """where results.csv, data/ and the figures go, merged with the copies already in data/;
    None: <runs-dir>/summary (summary_<budget> with --total-timesteps); the committed results
    only with --out-dir plots"""
    jobs: int = 2
    """runs at a time, each one process with one thread"""
    dry_run: bool = False
    """print the commands of the unfinished runs, one shell line each, and run nothing"""
    summary_only: bool = False
    """run nothing: summarise the finished runs of --runs-dir"""


GRID_RUNS_DIR = {"benchmark": Path("runs/benchmark"), "table1": Path("runs/claims"),
                 "reuse": Path("runs/claims"), "grpo": Path("runs/grpo")}


class Cell(NamedTuple):
    """One run of a grid; `name` is its row (a script, a recipe of RECIPES, or a setting of
    claims.SETTINGS), `script` the script it runs, `flags` that script's flags, --runs-dir
    aside."""

    name: str
    script: str
    env_id: str
    seed: int
    flags: list[str]


def make_cell(name: str, script: str, env_id: str, seed: int, steps: int, flags: str) -> Cell:
    return Cell(name, script, env_id, seed,
                ["--env-id", env_id, "--seed", str(seed), "--total-timesteps", str(steps),
                 "--exp-name", name, *shlex.split(flags)])


def grid_cell(name: str, env_id: str, seed: int, total_timesteps: int | None) -> Cell:
    """The run of GRID's command for (name, env_id) with this seed (and budget, if given)."""
    env = GRID[env_id]
    return make_cell(name, RECIPES.get(name, name), env_id, seed,
                     total_timesteps or env.steps[name], env.flags.get(name, ""))


def claims_cell(setting: str, env_id: str, seed: int, total_timesteps: int | None) -> Cell:
    """The run of a setting of the claims grids (claims.SETTINGS, claims.reuse_setting)."""
    script, flags = claims.setting_command(setting)
    return make_cell(setting, script, env_id, seed, total_timesteps or claims.STEPS, flags)


def grid_cells(args: Args) -> list[Cell]:
    """The runs of --grid that --scripts, --envs and --seeds select: the benchmark in GRID's
    order, a claims grid seed-major (claims.grid_runs)."""
    envs = grid_envs(args.grid) if args.envs is None else args.envs
    if args.grid == "grpo":
        runs = [("grpo", variant, flags) for variant, flags in solved.VARIANTS.items()]
        runs += [(script, script, "") for script in solved.BESIDE]
        cells = [make_cell(name, script, solved.ENV, seed, args.total_timesteps or solved.STEPS,
                           flags) for seed in solved.SEEDS for script, name, flags in runs]
    elif args.grid != "benchmark":
        cells = [claims_cell(setting, env_id, seed, args.total_timesteps)
                 for setting, env_id, seed in claims.grid_runs(args.grid)]
    if args.grid != "benchmark":
        return [cell for cell in cells if cell.env_id in envs and cell.script in args.scripts
                and (args.seeds is None or cell.seed in args.seeds)]
    return [grid_cell(name, env_id, seed, args.total_timesteps)
            for env_id, env in GRID.items() if env_id in envs
            for name in NAMES if name in args.scripts and name in env.steps
            for seed in (env.seeds if args.seeds is None else args.seeds)]


def grid_envs(grid: str) -> tuple[str, ...]:
    return {"benchmark": tuple(GRID), "table1": claims.TABLE1_ENVS,
            "reuse": claims.REUSE_ENVS, "grpo": (solved.ENV,)}[grid]


def command(cell: Cell, runs_dir: Path) -> list[str]:
    """The script's command line, run from the repository root."""
    try:
        runs_dir = runs_dir.resolve().relative_to(REPO_ROOT)
    except ValueError:
        runs_dir = runs_dir.resolve()
    return [sys.executable, f"{cell.script}.py", *cell.flags, "--runs-dir", str(runs_dir)]


def shell_line(cell: Cell, runs_dir: Path) -> str:
    """One self-contained shell line: cd to the repository root, one thread, the command."""
    return (f"cd {shlex.quote(str(REPO_ROOT))} && OMP_NUM_THREADS=1 "
            + shlex.join(command(cell, runs_dir)))


NOT_COMPARED = plot.OUTPUT_ONLY  # Args fields that do not change what a run learns


@functools.cache
def command_config(script: str, flags: tuple[str, ...]) -> dict:
    """Every Args field of the script as this command line sets it, defaults included."""
    return dataclasses.asdict(tyro.cli(importlib.import_module(script).Args, args=list(flags)))


def same(recorded, expected) -> bool:
    """Equal as config.json values: numbers as numbers, a JSON list as a tuple."""
    if isinstance(recorded, bool) or isinstance(expected, bool) or None in (recorded, expected):
        return recorded is expected
    if isinstance(recorded, (int, float)) and isinstance(expected, (int, float)):
        return float(recorded) == float(expected)
    if isinstance(recorded, (list, tuple)) and isinstance(expected, (list, tuple)):
        return len(recorded) == len(expected) and all(map(same, recorded, expected))
    return recorded == expected


RECORDED = frozenset({"versions", "device", "steps_run", "finished", "diverged"})
"""keys of config.json that the scripts add to their Args fields"""


def agrees(config: dict, cell: Cell) -> bool:
    """Whether a run's config.json is the config of the cell's command (and of its script: a
    key that is neither a field of the script's Args nor RECORDED is another script's run)."""
    expected = command_config(cell.script, tuple(cell.flags))
    defaults = command_config(cell.script, ())
    if set(config) - set(defaults) - RECORDED:
        return False
    # a flag the command gives must be recorded: a run from before the flag existed is not it
    given = {flag[2:].removeprefix("no-").replace("-", "_") for flag in cell.flags
             if flag.startswith("--")}
    if any(name in defaults and name not in config for name in given):
        return False
    return all(same(config.get(name, defaults[name]), value)
               for name, value in expected.items() if name not in NOT_COMPARED)


def finished_config(run_dir: Path) -> dict | None:
    """The config of a finished run folder, else None: the scripts record "finished" in
    config.json when a run ends (grpo's iterations vary in length); older runs are finished
    with one updates.csv row per iteration."""
    try:
        config = json.loads((run_dir / "config.json").read_text())
        if not (isinstance(config["exp_name"], str) and isinstance(config["env_id"], str)
                and isinstance(config["seed"], int)):
            return None
        if config.get("diverged"):  # stopped on a non-finite loss: a result, not a failure
            return config
        if "finished" in config:
            return config if config["finished"] is True else None
        iterations = config["total_timesteps"] // (config["num_envs"] * config["num_steps"])
        with open(run_dir / "updates.csv") as file:
            rows = sum(1 for line in file if line.strip()) - 1
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return config if rows == iterations else None


def finished_runs(runs_dir: Path) -> dict[Path, dict]:
    """{run folder: config} of the finished runs in runs_dir, oldest first."""
    run_dirs = sorted(runs_dir.glob("*/config.json"), key=lambda p: p.stat().st_mtime)
    found = {path.parent: finished_config(path.parent) for path in run_dirs}
    return {run_dir: config for run_dir, config in found.items() if config is not None}


def run_cells(cells: list[Cell], runs_dir: Path, jobs: int) -> int:
    """Run the cells, `jobs` at a time, each logged to <runs_dir>/logs/; return the failures."""
    log_dir = runs_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run_one(index: int, cell: Cell) -> int:
        """Run one cell with its output in its log file; return its exit status."""
        name = f"{cell.env_id}__{cell.name}__{cell.seed}"
        log = log_dir / f"{name}.log"
        print(f"[{index}/{len(cells)}] start {name}", flush=True)
        start = time.time()
        with open(log, "a") as file:  # appended: a failed attempt's log stays above
            status = subprocess.run(command(cell, runs_dir), cwd=REPO_ROOT, env=env, stdout=file,
                                    stderr=subprocess.STDOUT).returncode
        lines = log.read_text().splitlines()
        print(f"[{index}/{len(cells)}] {'done' if status == 0 else f'FAILED ({status})'} "
              f"{name} in {time.time() - start:.0f} s: {lines[-1] if lines else ''}", flush=True)
        if status != 0:
            print(f"  see {log}", file=sys.stderr, flush=True)
        return status

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        statuses = list(pool.map(run_one, range(1, len(cells) + 1), cells))
    return sum(status != 0 for status in statuses)


def steps_to_threshold(run: plot.Run, threshold: float) -> float:
    """global_step where the mean of the last WINDOW returns first reaches the threshold."""
    returns = run.episodes["episodic_return"]
    reached = np.flatnonzero(plot.moving_mean(returns)[WINDOW - 1:] >= threshold)
    return run.episodes["global_step"][WINDOW - 1 + reached[0]] if len(reached) else np.inf


def number(value: float) -> str:
    """A CSV cell: 6 significant digits; empty where undefined."""
    return "" if value is None or np.isnan(value) else f"{value:.6g}"


def summary_row(script: str, env_id: str, runs: list[plot.Run]) -> list[str]:
    """The results.csv row of one (script, env) from its runs, one per seed."""
    finals = [float(np.mean(r.episodes["episodic_return"][-WINDOW:])) for r in runs]
    steps = {r.config["total_timesteps"] for r in runs}
    if len(steps) > 1:
        warn(f"{script} on {env_id}: seeds ran different budgets {sorted(steps)}; steps shows "
             "the smallest")
    threshold = None
    if env_id in THRESHOLDS:
        # a seed that never reaches it counts as infinitely slow: the median may be inf
        threshold = statistics.median(steps_to_threshold(r, THRESHOLDS[env_id]) for r in runs)
    return [script, env_id, str(min(steps)), str(len(runs)), number(statistics.mean(finals)),
            number(statistics.stdev(finals) if len(finals) > 1 else None), number(min(finals)),
            number(max(finals)), number(float(iqm(np.array(finals)))),
            *map(number, iqm_interval(finals)), number(threshold),
            number(statistics.median(r.updates["sps"][-1] for r in runs))]


def copy_data(runs: list[plot.Run], data_dir: Path) -> None:
    """Copy each run's CSVs and config.json to data_dir/<env>/<script>__<seed>__<file>,
    over the earlier copy of the same (script, env, seed) if any; nothing else is touched."""
    for run in runs:
        (data_dir / run.env_id).mkdir(parents=True, exist_ok=True)
        for name in plot.DATA_FILES:
            shutil.copyfile(run.path / name,
                            data_dir / run.env_id / f"{run.script}__{run.seed}__{name}")


def off_grid(config: dict, script: str, env_id: str, seed: int,
             total_timesteps: int | None) -> bool:
    """A run of a grid (script, env) whose config disagrees with GRID's command for it."""
    return env_id in GRID and script in GRID[env_id].steps and not agrees(
        config, grid_cell(script, env_id, seed, total_timesteps))


def summarise(runs_dir: Path, out_dir: Path, total_timesteps: int | None) -> None:
    """results.csv, the data copies and the figures from the copies in <out_dir>/data merged
    with the finished runs of runs_dir (see the top of the file).

    A run of a grid (script, env) whose config disagrees with GRID's command for it (see
    agrees; the budget is total_timesteps when given, else GRID's) is left out, with a
    warning: the table never mixes runs of other flags with the grid's. Runs of other scripts
    or envs are read as they are."""
    data_dir = out_dir / "data"
    runs: dict[tuple, plot.Run] = {}  # (script, env, seed) -> the run it summarises
    left_out: dict[str, list[Path]] = {f"copies in {data_dir}": [], "finished run(s)": []}
    for episodes_csv in sorted(data_dir.glob("*/*__*__episodes.csv")):
        try:
            run = plot.load_data_run(episodes_csv)
        except plot.BadRun as error:
            warn(f"skipped {error}")
            continue
        key = run.script, run.env_id, run.seed
        if off_grid(run.config, *key, total_timesteps):
            left_out[f"copies in {data_dir}"].append(episodes_csv)
        else:
            runs[key] = run
    newest = {}
    for run_dir, config in finished_runs(runs_dir).items():  # oldest first: the newest wins
        key = config["exp_name"], config["env_id"], config["seed"]
        if off_grid(config, *key, total_timesteps):
            left_out["finished run(s)"].append(run_dir)
        else:
            newest[key] = run_dir
    fresh = []
    for key, run_dir in newest.items():
        try:
            runs[key] = plot.load_run_dir(run_dir)
            fresh.append(runs[key])
        except plot.BadRun as error:
            warn(f"skipped {error}")
    budget = f" (--total-timesteps {total_timesteps})" if total_timesteps else ""
    for what, paths in left_out.items():
        if paths:
            warn(f"left out {len(paths)} {what} whose config differs from the grid's "
                 f"command{budget}, the last {paths[-1]}")
    if not runs:
        fail(f"--runs-dir {str(runs_dir)!r}: no finished runs of the grid's commands to "
             f"summarise, nor copies in {data_dir}")
    runs = list(runs.values())
    envs = {run.env_id for run in runs}  # beside them, the committed peers' runs of those envs
    peers = [plot.load_peer_run(path) for path in sorted(PEERS_DIR.glob("*/*__*.csv"))
             if path.parent.name in envs and plot.is_peer_csv(path)]
    runs += peers
    rows = [summary_row(script, env_id, group)
            for env_id, scripts in sorted(plot.by_env_and_script(runs).items(),
                                          key=lambda item: env_order(item[0]))
            for script, group in scripts.items()]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.csv").write_text(
        "\n".join(",".join(row) for row in [RESULT_COLUMNS, *rows]) + "\n")
    copy_data(fresh, data_dir)
    figures = plot.plot_learning_curves(runs, out_dir)
    figures.append(plot.plot_kl(runs, out_dir / "kl.png"))
    size = sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file())
    print(f"summary of {len(runs) - len(peers)} runs ({len(fresh)} from {runs_dir}, the others "
          f"copies kept in {data_dir}) and {len(peers)} of peers in {PEERS_DIR}: "
          f"{out_dir / 'results.csv'}; {data_dir} ({size / 1e6:.1f} MB); "
          + ", ".join(p.name for p in figures))


def summarise_grid(args: Args) -> None:
    """The benchmark's summary, or the claims' (both claims grids at once: the reuse grid's
    K = 10 runs are Table 1's). A claims run is the newest finished run folder whose config
    agrees with the setting's command (exp_name aside: one run serves both grids)."""
    if args.grid == "benchmark":
        summarise(args.runs_dir, args.out_dir, args.total_timesteps)
        return
    if args.grid == "grpo":  # the variants by name, and the runs of an earlier grpo.py
        cells = grid_cells(dataclasses.replace(args, envs=None, seeds=None, scripts=NAMES))
        found = {}
        for run_dir, config in finished_runs(args.runs_dir).items():
            if config["exp_name"] == "before" and config["env_id"] == solved.ENV and config[
                    "total_timesteps"] == (args.total_timesteps or solved.STEPS):
                found["before", config["seed"]] = run_dir
            for cell in cells:
                if config["exp_name"] == cell.name and config["seed"] == cell.seed and agrees(
                        config, cell):
                    found[cell.name, cell.seed] = run_dir
        solved.summarise(found, args.out_dir / "grpo_solved")
        return
    every = [claims_cell(setting, env_id, seed, args.total_timesteps)
             for grid in ("table1", "reuse") for setting, env_id, seed in claims.grid_runs(grid)]
    found = {}
    for run_dir, config in finished_runs(args.runs_dir).items():  # oldest first: newest wins
        for cell in every:
            if (config["env_id"], config["seed"]) == (cell.env_id, cell.seed) and agrees(
                    config, cell):
                found[cell.name, cell.env_id, cell.seed] = run_dir
    claims.summarise(found, args.out_dir / "claims")


def env_order(env_id: str) -> tuple[int, str]:
    """GRID's order first, then other envs alphabetically."""
    return (list(GRID).index(env_id) if env_id in GRID else len(GRID), env_id)


def in_plots(folder: Path) -> bool:
    """Whether the folder is the committed plots/ folder or one inside it."""
    folder = folder.resolve()
    return folder == PLOTS_DIR or PLOTS_DIR in folder.parents


def main(args: Args) -> None:
    """Check the flags, then dry-run, run and summarise, or only summarise."""
    runs_dir, out_given = args.runs_dir or GRID_RUNS_DIR[args.grid], args.out_dir is not None
    # a quick check's summary apart from the full budgets' (the claims and grpo summaries merge
    # rows by run, whatever their budget)
    summary = "summary" if args.total_timesteps is None else f"summary_{args.total_timesteps}"
    args = dataclasses.replace(args, runs_dir=runs_dir, out_dir=args.out_dir or runs_dir / summary)
    for name, chosen, allowed in (("scripts", args.scripts, NAMES),
                                  ("envs", args.envs or (), grid_envs(args.grid)),
                                  ("seeds", args.seeds or (), None)):
        unknown = [x for x in chosen if allowed is not None and x not in allowed]
        if unknown:
            fail(f"--{name} {' '.join(unknown)}: not in the grid ({', '.join(allowed)})")
        if len(set(chosen)) < len(chosen):
            fail(f"--{name} {' '.join(map(str, chosen))}: each at most once")
    if not all(0 <= seed < 2**32 for seed in args.seeds or ()):
        fail(f"--seeds {' '.join(map(str, args.seeds))}: each must lie in [0, 2^32)")
    if args.dry_run and args.summary_only:
        fail("--dry-run with --summary-only: the one prints the runs' commands and writes "
             "nothing, the other writes the summary; give one of them")
    if args.jobs < 1:
        fail(f"--jobs {args.jobs}: must be a positive integer")
    if args.total_timesteps is not None and args.total_timesteps < 1:
        fail(f"--total-timesteps {args.total_timesteps}: must be a positive integer")
    if args.total_timesteps is not None and in_plots(args.out_dir):
        fail(f"--total-timesteps {args.total_timesteps} with --out-dir {args.out_dir}: the "
             "committed results there are the grid's full budgets; give a quick check "
             "another --out-dir (<runs-dir>/summary_<budget> if none is given)")
    if not args.dry_run:  # the folders first: a bad one costs one line, not the runs
        folders = [("--out-dir", args.out_dir)]
        if not args.summary_only:  # --runs-dir first where the --out-dir is its summary/
            folders.insert(len(folders) if out_given else 0, ("--runs-dir", args.runs_dir))
        for flag, folder in folders:
            writable_folder(flag, folder)
    if args.summary_only:
        summarise_grid(args)
        return

    cells = grid_cells(args)
    configs = finished_runs(args.runs_dir).values()
    todo = [cell for cell in cells if not any(agrees(c, cell) for c in configs)]
    print(f"{len(cells)} runs selected, {len(cells) - len(todo)} finished, {len(todo)} to run",
          file=sys.stderr, flush=True)
    if args.dry_run:
        for cell in todo:
            print(shell_line(cell, args.runs_dir))
        return
    failures = run_cells(todo, args.runs_dir, args.jobs) if todo else 0
    if failures:
        print(f"{failures} of {len(todo)} runs failed; their logs are in "
              f"{args.runs_dir / 'logs'}", file=sys.stderr)
    summarise_grid(args)
    if failures:
        raise SystemExit(1)


if __name__ == "__main__":
    main(tyro.cli(Args))
