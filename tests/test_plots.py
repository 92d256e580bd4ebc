"""plots/plot.py and plots/benchmark.py on small synthetic run folders with known returns,
the benchmark's grid as --dry-run prints it, and the skip of a finished run on a second call.

The expected numbers of results.csv are computed here from the synthetic returns with numpy and
statistics, independently of the code under test.
"""

import csv
import json
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tyro

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "plots"))
import benchmark  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import plot  # noqa: E402
import ppo_clip  # noqa: E402  (the repository root is on sys.path through benchmark)
import ppo_kl  # noqa: E402
import trpo  # noqa: E402
import vpg  # noqa: E402

BENCHMARK, PLOT = "plots/benchmark.py", "plots/plot.py"
ENV = "CartPole-v1"
SCRIPTS = ("trpo", "ppo_clip")  # results.csv lists them in this order (benchmark.SCRIPTS's)
SEEDS = (1, 2, 3)
NUM_EPISODES, EPISODE_STEPS = 80, 30
TOTAL_TIMESTEPS, NUM_ENVS = 2560, 8
NUM_STEPS = {"trpo": 64, "ppo_clip": 32}  # their CartPole defaults: 5 and 10 iterations


def synthetic_returns(script: str, seed: int) -> np.ndarray:
    """Returns rising linearly to a cap, alternating +-seed around it; trpo seed 3 stops at 400,
    below the threshold 475."""
    slope = 10 + 2 * seed + 4 * SCRIPTS.index(script)
    cap = 400 if (script, seed) == ("trpo", 3) else 480 + 7 * seed + 3 * SCRIPTS.index(script)
    episodes = np.arange(1, NUM_EPISODES + 1)
    return np.minimum(cap, 10.0 + slope * episodes) + seed * (-1.0) ** episodes


def last_sps(script: str, seed: int) -> int:
    """The sps of the last updates.csv row of a synthetic run."""
    return 1000 + 100 * seed + SCRIPTS.index(script)


def write_run(runs_dir, script: str, seed: int, returns: np.ndarray, stamp: int,
              total_timesteps: int = TOTAL_TIMESTEPS, finished: bool = True) -> None:
    """A run folder as the algorithm scripts write it (the script's default flags on CartPole,
    as the grid runs it), with the given returns; unfinished: half of its updates.csv rows."""
    run_dir = runs_dir / f"{ENV}__{script}__{seed}__{stamp}"
    run_dir.mkdir(parents=True)
    config = dict(exp_name=script, seed=seed, env_id=ENV, total_timesteps=total_timesteps,
                  num_envs=NUM_ENVS, num_steps=NUM_STEPS[script], max_kl=0.01)
    batch = NUM_ENVS * NUM_STEPS[script]
    iterations = total_timesteps // batch // (1 if finished else 2)
    (run_dir / "config.json").write_text(json.dumps(config))
    steps = EPISODE_STEPS * np.arange(1, len(returns) + 1)
    (run_dir / "episodes.csv").write_text(
        "global_step,episodic_return,episodic_length,wall_time\n" + "".join(
            f"{s},{r:g},{EPISODE_STEPS},{s / 1000:.3f}\n" for s, r in zip(steps, returns)))
    (run_dir / "updates.csv").write_text(
        "global_step,iteration,sps,policy_loss,value_loss,entropy,kl,explained_variance\n"
        + "".join(f"{i * batch},{i},{last_sps(script, seed) - iterations + i},0.1,1.0,0.6,"
                  f"{0.001 * i},0.5\n" for i in range(1, iterations + 1)))
    os.utime(run_dir / "config.json", (stamp, stamp))  # the run's start, for "newest"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """2 scripts x 3 seeds of finished runs, plus three folders the summary must not use: an
    older finished run, a newer unfinished one, and a newer finished one of another budget."""
    root = tmp_path_factory.mktemp("synthetic")
    runs_dir, out_dir = root / "runs", root / "out"
    for script in SCRIPTS:
        for seed in SEEDS:
            write_run(runs_dir, script, seed, synthetic_returns(script, seed), 2_000_000_000)
    write_run(runs_dir, "trpo", 2, np.full(30, 123.0), 1_000_000_000)
    write_run(runs_dir, "ppo_clip", 1, np.full(30, 7.0), 2_100_000_000, finished=False)
    write_run(runs_dir, "trpo", 1, np.full(30, 9.0), 2_200_000_000,
              total_timesteps=2 * TOTAL_TIMESTEPS)
    return runs_dir, out_dir


@pytest.fixture(scope="module")
def summary_call(synthetic):
    """benchmark.py --summary-only on the synthetic runs, with their budget."""
    runs_dir, out_dir = synthetic
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / BENCHMARK), "--summary-only", "--runs-dir", str(runs_dir),
         "--out-dir", str(out_dir), "--total-timesteps", str(TOTAL_TIMESTEPS)],
        capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    return completed


@pytest.fixture(scope="module")
def summary(synthetic, summary_call):
    """The results.csv rows of the summary, by script."""
    _, out_dir = synthetic
    with open(out_dir / "results.csv", newline="") as file:
        reader = csv.DictReader(file)
        assert reader.fieldnames == ["script", "env", "steps", "seeds", "mean", "std", "min",
                                     "max", "steps_to_threshold", "sps"]
        return list(reader)


def expected_steps_to_threshold(returns: np.ndarray, threshold: float = 475.0) -> float:
    """The step of the episode where the mean of the last 20 returns first reaches it."""
    window = np.convolve(returns, np.ones(20) / 20, mode="valid")  # window i ends at i + 19
    reached = np.flatnonzero(window >= threshold)
    return EPISODE_STEPS * (reached[0] + 19 + 1) if len(reached) else float("inf")


def assert_png(path) -> None:
    """The file exists and starts with the PNG signature."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path


# --- the summary: results.csv, the data copies, the figures ---

def test_results_csv_has_one_row_per_script_and_env(summary):
    assert [(row["script"], row["env"]) for row in summary] == [(s, ENV) for s in SCRIPTS]


@pytest.mark.parametrize("script", SCRIPTS)
def test_results_csv_numbers(summary, script):
    row = next(row for row in summary if row["script"] == script)
    finals = [float(np.mean(synthetic_returns(script, seed)[-20:])) for seed in SEEDS]
    assert int(row["steps"]) == TOTAL_TIMESTEPS
    assert int(row["seeds"]) == len(SEEDS)
    assert float(row["mean"]) == pytest.approx(statistics.mean(finals), rel=1e-5)
    assert float(row["std"]) == pytest.approx(statistics.stdev(finals), rel=1e-5)
    assert float(row["min"]) == pytest.approx(min(finals), rel=1e-5)
    assert float(row["max"]) == pytest.approx(max(finals), rel=1e-5)
    threshold_steps = [expected_steps_to_threshold(synthetic_returns(script, seed))
                       for seed in SEEDS]
    assert float(row["steps_to_threshold"]) == statistics.median(threshold_steps)
    assert float(row["sps"]) == statistics.median(last_sps(script, seed) for seed in SEEDS)


def test_a_seed_that_never_reaches_the_threshold_counts_as_the_slowest(summary):
    steps = sorted(expected_steps_to_threshold(synthetic_returns("trpo", s)) for s in SEEDS)
    assert steps[-1] == float("inf")
    assert float(summary[0]["steps_to_threshold"]) == steps[1] < float("inf")


def test_summary_copies_the_runs_and_draws_the_figures(synthetic, summary):
    runs_dir, out_dir = synthetic
    for script in SCRIPTS:
        for seed in SEEDS:
            (run_dir,) = [d for d in runs_dir.glob(f"{ENV}__{script}__{seed}__2000000000")]
            for name in ("episodes.csv", "updates.csv", "config.json"):
                copy = out_dir / "data" / ENV / f"{script}__{seed}__{name}"
                assert copy.read_bytes() == (run_dir / name).read_bytes()
    assert len(list((out_dir / "data" / ENV).iterdir())) == 3 * len(SCRIPTS) * len(SEEDS)
    assert_png(out_dir / f"{ENV}.png")
    assert_png(out_dir / "kl.png")


def test_kl_figure_draws_the_mean_kl_and_each_scripts_bound(synthetic, monkeypatch, tmp_path):
    """kl.png: one curve per script, the mean over seeds of the kl column (every synthetic run
    logs kl = 0.001 * iteration), and TRPO's delta as a horizontal line at its config's max_kl
    in TRPO's colour; no d_targ line, as no ppo_kl run is given."""
    runs_dir, _ = synthetic
    runs = [plot.load_run_dir(runs_dir / f"{ENV}__{script}__{seed}__2000000000")
            for script in SCRIPTS for seed in SEEDS]
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to look at it
    plot.plot_kl(runs, tmp_path / "kl.png")
    (ax,) = figures[0].axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    for script in SCRIPTS:
        x, y = lines[script].get_data()
        # interpolation of a straight line is exact: kl = 0.001 * step / batch
        np.testing.assert_allclose(y, 0.001 * x / (NUM_ENVS * NUM_STEPS[script]), rtol=1e-9)
    delta = lines["delta (TRPO max_kl) = 0.01"]
    assert set(delta.get_ydata()) == {0.01}
    assert delta.get_color() == lines["trpo"].get_color()
    assert set(lines) == {*SCRIPTS, "delta (TRPO max_kl) = 0.01"}


def test_summary_leaves_out_a_run_of_other_flags_and_says_so(summary_call):
    """The newest trpo seed-1 folder ran twice the budget: the numbers above come from the
    others, and stderr names the folder left out."""
    (line,) = [x for x in summary_call.stderr.splitlines() if "left out" in x]
    assert "left out 1 finished run(s)" in line and f"{ENV}__trpo__1__2200000000" in line


def test_a_grid_run_agrees_only_with_its_own_config():
    """The config a Hopper run of the grid's ppo_clip command writes, as JSON would give it
    back, agrees; one field changed, on the command line or off it, it does not; a field the
    config does not record counts as the default."""
    cell = benchmark.grid_cell("ppo_clip", "Hopper-v5", 2, None)
    config = json.loads(json.dumps(vars(tyro.cli(ppo_clip.Args, args=cell.flags))))
    assert config["vf_coef"] == 1 and config["clip_coef"] == 0.2  # on the line, and a default
    assert benchmark.agrees(config, cell)
    assert benchmark.agrees({**config, "runs_dir": "elsewhere", "save_model": True}, cell)
    for name, value in [("vf_coef", 0.5), ("normalize", False), ("total_timesteps", 500_000),
                        ("clip_coef", 0.3), ("vf_clip", 0.2), ("log_std_init", -0.5)]:
        assert not benchmark.agrees({**config, name: value}, cell), name
    del config["log_std_init"]  # a run from before the field existed had the default
    assert benchmark.agrees(config, cell)
    assert not benchmark.agrees(config, benchmark.grid_cell("trpo", "Hopper-v5", 2, None))


# --- plot.py ---

@pytest.mark.parametrize("source", ["runs", "data"])
def test_plot_draws_one_png_per_env(run_script, synthetic, summary, tmp_path, source):
    runs_dir, out_dir = synthetic
    path = runs_dir if source == "runs" else out_dir / "data"
    result = run_script(PLOT, path, "--out-dir", tmp_path / "figures", "--x", "wall_time")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == [f"{ENV}.png"]
    assert_png(tmp_path / "figures" / f"{ENV}.png")


def test_plot_run_folder_without_episodes_exits_2(run_script, assert_clean_error, tmp_path):
    write_run(tmp_path, "ppo_clip", 1, np.array([]), 2_000_000_000)
    run_dir = tmp_path / f"{ENV}__ppo_clip__1__2000000000"
    line = assert_clean_error(run_script(PLOT, run_dir, "--out-dir", tmp_path / "figures"))
    assert "no episodes" in line and str(run_dir) in line
    assert not (tmp_path / "figures").exists()


def test_plot_missing_folder_exits_2(run_script, assert_clean_error, tmp_path):
    line = assert_clean_error(run_script(PLOT, tmp_path / "nowhere"))
    assert "nowhere" in line


# --- benchmark.py: the grid ---

def dry_run(run_script, *argv) -> list[str]:
    """The lines benchmark.py --dry-run prints for these flags."""
    result = run_script(BENCHMARK, "--dry-run", *argv)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_dry_run_lists_the_whole_grid(run_script, tmp_path):
    lines = dry_run(run_script, "--runs-dir", tmp_path / "runs")
    assert len(lines) == 4 * 5 + 4 * 3 + 4 * 3 + 4 * 3
    for env, count in (("CartPole-v1", 20), ("Pendulum-v1", 12), ("Hopper-v5", 12),
                       ("HalfCheetah-v5", 12)):
        assert sum(f"--env-id {env} " in line for line in lines) == count
    words = shlex.split(lines[0])
    assert words[:6] == ["cd", str(REPO_ROOT), "&&", "OMP_NUM_THREADS=1", sys.executable,
                         "vpg.py"]
    assert "vpg.py --env-id CartPole-v1 --seed 1 --total-timesteps 200000 " in lines[0]
    hopper = [line for line in lines if "ppo_clip.py --env-id Hopper-v5 --seed 2 " in line]
    assert len(hopper) == 1
    assert "--total-timesteps 1000000 " in hopper[0] and "--vf-coef 1 " in hopper[0]
    assert hopper[0].endswith(f"--runs-dir {tmp_path / 'runs'}")


def test_dry_run_filters(run_script, tmp_path):
    lines = dry_run(run_script, "--scripts", "ppo_kl", "--envs", "Pendulum-v1", "--seeds", 1, 2,
                    "--runs-dir", tmp_path)
    assert [line.split(" ppo_kl.py ")[1].split(" --total")[0] for line in lines] == [
        "--env-id Pendulum-v1 --seed 1", "--env-id Pendulum-v1 --seed 2"]


def test_dry_run_leaves_out_finished_runs(run_script, synthetic):
    """The synthetic runs are finished runs of the grid with --total-timesteps 2560; seed 4 is
    not there, and with another budget no folder agrees with the command."""
    runs_dir, _ = synthetic
    select = ["--scripts", *SCRIPTS, "--envs", ENV, "--runs-dir", runs_dir]
    assert dry_run(run_script, *select, "--seeds", 1, 2, 3, "--total-timesteps",
                   TOTAL_TIMESTEPS) == []
    lines = dry_run(run_script, *select, "--seeds", 1, 2, 3, 4, "--total-timesteps",
                    TOTAL_TIMESTEPS)
    assert len(lines) == 2 and all("--seed 4 " in line for line in lines)
    assert len(dry_run(run_script, *select, "--seeds", 1, 2, 3)) == 6


def test_unknown_script_exits_2(run_script, assert_clean_error):
    line = assert_clean_error(run_script(BENCHMARK, "--dry-run", "--scripts", "a2c"))
    assert "--scripts a2c" in line


def test_every_command_of_the_grid_parses_and_passes_check_args(monkeypatch, tmp_path):
    """Each distinct (script, env) command line is valid for its script's Args and check_args."""
    monkeypatch.chdir(tmp_path)  # MuJoCo writes its warnings to MUJOCO_LOG.TXT in the cwd
    modules = {"vpg": vpg, "trpo": trpo, "ppo_clip": ppo_clip, "ppo_kl": ppo_kl}
    cells = benchmark.grid_cells(tyro.cli(benchmark.Args, args=["--seeds", "1"]))
    assert len(cells) == 16
    for cell in cells:
        module = modules[cell.script]
        args = tyro.cli(module.Args, args=cell.flags)
        module.check_args(args)
        assert (args.env_id, args.seed, args.exp_name) == (cell.env_id, 1, cell.script)


# --- benchmark.py: a real (tiny) run, then the same call again ---

def test_finished_run_is_skipped_on_a_second_call(run_script, read_csv, tmp_path):
    argv = ["--scripts", "ppo_clip", "--envs", ENV, "--seeds", 1, "--total-timesteps", 2048,
            "--runs-dir", tmp_path / "runs", "--out-dir", tmp_path / "out"]
    first = run_script(BENCHMARK, *argv)
    assert first.returncode == 0, first.stderr
    (run_dir,) = [d for d in (tmp_path / "runs").iterdir() if d.name != "logs"]
    assert len(read_csv(run_dir / "updates.csv")["iteration"]) == 2048 // (8 * 32)
    with open(tmp_path / "out" / "results.csv") as file:
        assert [row["script"] for row in csv.DictReader(file)] == ["ppo_clip"]
    before = sorted((tmp_path / "runs").rglob("*"))

    second = run_script(BENCHMARK, *argv)
    assert second.returncode == 0, second.stderr
    assert "1 finished, 0 to run" in second.stderr
    assert "start" not in second.stdout
    assert sorted((tmp_path / "runs").rglob("*")) == before
