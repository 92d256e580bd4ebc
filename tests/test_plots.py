"""plots/plot.py and plots/benchmark.py on small synthetic run folders with known returns,
the benchmark's grid as --dry-run prints it, the skip of a finished run on a second call, and
the committed results in plots/ left alone by everything but the command that regenerates them
(checked on a copy of them, so that a regression cannot damage the real ones).

The expected numbers of results.csv are computed here from the synthetic returns with numpy and
statistics, independently of the code under test.
"""

import contextlib
import csv
import dataclasses
import hashlib
import json
import os
import shlex
import shutil
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
import grpo  # noqa: E402  (the repository root is on sys.path through benchmark)
import ppo_clip  # noqa: E402
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


def write_run(parent: Path, script: str, seed: int, returns: np.ndarray, stamp: int,
              total_timesteps: int = TOTAL_TIMESTEPS, finished: bool = True,
              **config_changes) -> Path:
    """A run folder as the algorithm scripts write it (the script's default flags on CartPole,
    as the grid runs it, but for config_changes), with the given returns; unfinished: half of
    its updates.csv rows. Returns the folder."""
    run_dir = parent / f"{ENV}__{script}__{seed}__{stamp}"
    run_dir.mkdir(parents=True)
    config = dict(exp_name=script, seed=seed, env_id=ENV, total_timesteps=total_timesteps,
                  num_envs=NUM_ENVS, num_steps=NUM_STEPS[script],
                  **({"max_kl": 0.01} if script == "trpo" else {}), **config_changes)
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
    return run_dir


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
                                     "max", "iqm", "iqm_low", "iqm_high", "steps_to_threshold",
                                     "sps"]
        return list(reader)


def expected_steps_to_threshold(returns: np.ndarray, threshold: float = 475.0) -> float:
    """The step of the episode where the mean of the last 20 returns first reaches it."""
    window = np.convolve(returns, np.ones(20) / 20, mode="valid")  # window i ends at i + 19
    reached = np.flatnonzero(window >= threshold)
    return EPISODE_STEPS * (reached[0] + 19 + 1) if len(reached) else float("inf")


def assert_png(path) -> None:
    """The file exists and starts with the PNG signature."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path


def first_axes(monkeypatch, draw):
    """Call draw() with plt.close kept from closing the figure; return its first axes."""
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    draw()
    return figures[0].axes[0]


def legend_of(ax) -> tuple[list, list[str]]:
    """The lines of an axes and the labels of its legend."""
    return ax.get_lines(), [text.get_text() for text in ax.get_legend().get_texts()]


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
    # three seeds: floor(3 / 4) = 0 cut from each end, the IQM is the mean; a resample repeats
    # the lowest (highest) seed three times with probability 1/27 = 3.7 % > 2.5 %, so the 95 %
    # interval runs from the lowest seed to the highest
    assert float(row["iqm"]) == pytest.approx(statistics.mean(finals), rel=1e-5)
    assert float(row["iqm_low"]) == pytest.approx(min(finals), rel=1e-5)
    assert float(row["iqm_high"]) == pytest.approx(max(finals), rel=1e-5)
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
    ax = first_axes(monkeypatch, lambda: plot.plot_kl(runs, tmp_path / "kl.png"))
    assert len(ax.figure.axes) == 1
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


def stop_early(run_dir: Path, what: str) -> Path:
    """A run folder as an early Ctrl-C leaves it: episodes.csv with its header only, or
    updates.csv created but never written."""
    if what == "episodes":
        (run_dir / "episodes.csv").write_text(
            "global_step,episodic_return,episodic_length,wall_time\n")
    else:
        (run_dir / "updates.csv").write_text("")
    return run_dir


@pytest.mark.parametrize("what", ["episodes", "updates"])
def test_plot_skips_a_run_folder_stopped_early_and_draws_the_rest(run_script, tmp_path, what):
    write_run(tmp_path / "runs", "ppo_clip", 1, synthetic_returns("ppo_clip", 1), 2_000_000_000)
    stopped = stop_early(write_run(tmp_path / "runs", "ppo_clip", 2, np.full(30, 5.0),
                                   2_000_000_000), what)
    result = run_script(PLOT, tmp_path / "runs", "--out-dir", tmp_path / "figures")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    (line,) = result.stderr_lines
    assert line.startswith("plot.py: warning: skipped ") and f"no {what}" in line
    assert str(stopped) in line
    assert_png(tmp_path / "figures" / f"{ENV}.png")


def test_plot_exits_2_when_no_run_folder_has_episodes(run_script, assert_clean_error, tmp_path):
    run_dir = stop_early(write_run(tmp_path, "ppo_clip", 1, np.full(30, 5.0), 2_000_000_000),
                         "episodes")
    line = assert_clean_error(run_script(PLOT, run_dir, "--out-dir", tmp_path / "figures"))
    assert line.startswith("plot.py: error: ")
    assert "no episodes" in line and str(run_dir) in line
    assert not (tmp_path / "figures").exists()


def test_plot_splits_curves_by_flags_and_counts_distinct_seeds(monkeypatch, capsys, tmp_path):
    """Three runs of seed 1 with the default learning rate, in folders at several depths, are
    one curve of one seed; seeds 1 and 2 with --learning-rate 0.001 another, whose budgets
    differ: one warning. Keys of config.json that are no Args field, and fields that do not
    change learning, split nothing."""
    runs = tmp_path / "runs"
    for depth, folder in enumerate([runs / "det" / "a", runs / "det" / "b", runs]):
        write_run(folder, "ppo_clip", 1, synthetic_returns("ppo_clip", 1) + depth,
                  2_000_000_000, versions={"torch": f"2.{depth}"}, steps_run=1000 + depth,
                  device=f"cpu{depth}", cuda=depth == 1, runs_dir=str(folder))
    for seed, budget in ((1, TOTAL_TIMESTEPS), (2, 2 * TOTAL_TIMESTEPS)):
        write_run(runs / "lr", "ppo_clip", seed, synthetic_returns("ppo_clip", seed) + 10,
                  1_000_000_000, total_timesteps=budget, learning_rate=0.001)
    found = plot.find_runs([runs])
    assert len(found) == 5
    lines, labels = legend_of(first_axes(
        monkeypatch, lambda: plot.plot_learning_curves(found, tmp_path / "out")))
    assert labels == ["ppo_clip (learning_rate=0.001; 2 seeds)",
                      "ppo_clip (learning_rate=0.002; 1 seed)", "threshold 475"]
    assert all(len(line.get_xdata()) > 1 for line in lines)  # no curve vanished
    (warning,) = capsys.readouterr().err.splitlines()
    assert "ppo_clip (learning_rate=0.001)" in warning
    assert f"total_timesteps {TOTAL_TIMESTEPS}, {2 * TOTAL_TIMESTEPS}" in warning


def test_plot_warns_of_a_curve_too_short_to_draw(monkeypatch, capsys, tmp_path):
    runs = [plot.load_run_dir(write_run(tmp_path, "trpo", 1, np.array([42.0]), 2_000_000_000))]
    lines, labels = legend_of(first_axes(
        monkeypatch, lambda: plot.plot_learning_curves(runs, tmp_path / "out")))
    assert labels[0] == "trpo (1 seed)" and lines[0].get_marker() == "o"
    (warning,) = capsys.readouterr().err.splitlines()
    assert "trpo" in warning and "single point" in warning


def test_plot_draws_a_run_and_its_summary_copy_once(synthetic, summary):
    """runs/ holding both the run folders and a summary's data/ copies of them: each run once."""
    runs_dir, out_dir = synthetic
    runs = plot.find_runs([runs_dir, out_dir / "data"])
    assert len(runs) == len(plot.find_runs([runs_dir]))


def test_plot_reads_the_args_fields_of_every_script():
    """script_args reads Args from the source; it must agree with the dataclass itself."""
    for module in (vpg, trpo, ppo_clip, ppo_kl):
        assert plot.script_args(module.__name__) == {
            field.name: field.default for field in dataclasses.fields(module.Args)}


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
    # every script on CartPole (5 seeds), all but grpo on Pendulum (3); the MuJoCo tasks
    # without vpg and grpo, with the one recipe (5 seeds each)
    assert len(lines) == 5 * 5 + 4 * 3 + 3 * (4 * 5)
    for env, count in (("CartPole-v1", 25), ("Pendulum-v1", 12), ("Hopper-v5", 20),
                       ("HalfCheetah-v5", 20), ("Walker2d-v5", 20)):
        assert sum(f"--env-id {env} " in line for line in lines) == count
    assert not any("vpg.py --env-id Walker2d-v5" in line for line in lines)
    words = shlex.split(lines[0])
    assert words[:6] == ["cd", str(REPO_ROOT), "&&", "OMP_NUM_THREADS=1", sys.executable,
                         "vpg.py"]
    assert "vpg.py --env-id CartPole-v1 --seed 1 --total-timesteps 200000 " in lines[0]
    hopper = [line for line in lines if "ppo_clip.py --env-id Hopper-v5 --seed 2 " in line
              and "--exp-name ppo_clip " in line]
    assert len(hopper) == 1
    assert "--total-timesteps 1000000 " in hopper[0] and "--vf-coef 1 " in hopper[0]
    assert hopper[0].endswith(f"--runs-dir {tmp_path / 'runs'}")
    recipe = [line for line in lines if "--exp-name ppo_clip_tianshou " in line]
    assert len(recipe) == 15 and all(" ppo_clip.py --env-id " in line and
                                     "--recompute-adv --scale-value-targets" in line
                                     for line in recipe)


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


@pytest.mark.parametrize("argv, mention", [
    (["--seeds", "1", "1"], "--seeds 1 1: each at most once"),
    (["--seeds", "-1"], "--seeds -1: each must lie in [0, 2^32)"),
    (["--summary-only"], "--dry-run with --summary-only"),  # it would write a summary
])
def test_bad_grid_flags_exit_2_before_anything(run_script, assert_clean_error, tmp_path, argv,
                                               mention):
    line = assert_clean_error(run_script(BENCHMARK, "--dry-run", *argv))
    assert mention in line and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("grid, folder", [("benchmark", "benchmark"), ("table1", "claims"),
                                          ("reuse", "claims"), ("grpo", "grpo")])
def test_each_grid_keeps_its_runs_in_a_folder_of_its_own(run_script, tmp_path, grid, folder):
    """table1 and reuse share runs (K = 10 is Table 1's); no other two grids do, so that one
    grid's summary never reads another's runs as rows of its own."""
    lines = dry_run(run_script, "--grid", grid, "--seeds", 1)
    assert lines and all(shlex.split(line)[-2:] == ["--runs-dir", str(tmp_path / "runs" / folder)]
                         for line in lines)


def test_every_command_of_the_grid_parses_and_passes_check_args(monkeypatch, tmp_path):
    """Each distinct (script, env) command line is valid for its script's Args and check_args."""
    monkeypatch.chdir(tmp_path)  # MuJoCo writes its warnings to MUJOCO_LOG.TXT in the cwd
    modules = {"vpg": vpg, "trpo": trpo, "ppo_clip": ppo_clip, "ppo_kl": ppo_kl, "grpo": grpo}
    cells = benchmark.grid_cells(tyro.cli(benchmark.Args, args=["--seeds", "1"]))
    # grpo runs on CartPole only, vpg on Pendulum too; the recipe on the MuJoCo tasks
    assert len(cells) == 5 + 4 + 3 * 4
    for cell in cells:
        module = modules[cell.script]
        args = tyro.cli(module.Args, args=cell.flags)
        module.check_args(args)
        assert (args.env_id, args.seed, args.exp_name) == (cell.env_id, 1, cell.name)


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


# --- plot.py: the interquartile mean and its bootstrap interval (benchmark.py's too) ---

@pytest.mark.parametrize("values, expected", [
    ([1, 2, 3, 4, 5, 6, 7, 8], (3 + 4 + 5 + 6) / 4),  # n = 8: 2 cut from each end
    ([3, 1, 10, 2, 7], (2 + 3 + 7) / 3),  # n = 5: floor(1.25) = 1 cut: 1 and 10
    ([1, 2, 4, 8, 16, 100], (2 + 4 + 8 + 16) / 4),  # n = 6: floor(1.5) = 1 cut: 1 and 100
    ([1, 2, 3, 4, 5, 6, 7, 8, 90], (3 + 4 + 5 + 6 + 7) / 5),  # n = 9: floor(2.25) = 2 cut
    ([5, -1, 2], (5 - 1 + 2) / 3),  # n = 3: floor(0.75) = 0 cut, the plain mean
])
def test_iqm_is_the_mean_of_the_middle_half(values, expected):
    assert plot.iqm(np.array(values, dtype=float)) == pytest.approx(expected, rel=1e-12)


def test_iqm_is_scipys_trim_mean():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    for n in range(1, 14):
        values = rng.standard_normal(n)
        assert plot.iqm(values) == pytest.approx(stats.trim_mean(values, 0.25), rel=1e-12)


def test_iqm_interval_covers_the_iqm_and_is_reproducible():
    values = [2457.0, 2981.0, 3637.0, 3676.0, 3551.0, 2943.0, 2991.0, 2646.0, 1095.0, 3059.0]
    low, high = plot.iqm_interval(values)
    assert min(values) <= low < plot.iqm(np.array(values)) < high <= max(values)
    assert plot.iqm_interval(values) == (low, high)  # a fixed generator, same digits
    assert plot.iqm_interval([500.0] * 5) == (500.0, 500.0)  # nothing to resample


def test_the_band_of_a_curve_is_the_interval_of_each_point():
    # the figures' band resamples whole curves (one seed = one curve); at each point it must be
    # the interval of that point's values alone, as results.csv computes it
    rng = np.random.default_rng(2)
    curves = rng.normal(1000.0, 300.0, size=(5, 7))  # 5 seeds, 7 points
    low, high = plot.iqm_interval(curves, resamples=500)
    for point in range(7):
        assert (low[point], high[point]) == plot.iqm_interval(curves[:, point], resamples=500)
        assert low[point] <= plot.iqm(curves[:, point]) <= high[point]


# --- plots/peers: a peer library's run beside ours ---

def test_a_peers_run_gives_its_budget_speed_and_final_return(tmp_path):
    path = tmp_path / "Hopper-v5" / "sb3_ppo_cleanrl__3.csv"
    path.parent.mkdir()
    returns = [10.0 * i for i in range(1, 31)]
    path.write_text("global_step,episodic_return\n"
                    + "".join(f"{100 * i},{r}\n" for i, r in enumerate(returns, 1))
                    + "# SPS train_sps=1161.4 process_sps=1157.3 steps=4096 threads=1\n")
    (run,) = plot.find_runs([tmp_path])
    assert (run.env_id, run.script, run.seed) == ("Hopper-v5", "sb3_ppo_cleanrl", 3)
    row = dict(zip(benchmark.RESULT_COLUMNS, benchmark.summary_row(run.script, run.env_id,
                                                                   [run])))
    assert row["steps"] == "4096" and float(row["sps"]) == 1161.4
    assert float(row["mean"]) == pytest.approx(statistics.mean(returns[-20:]))


def test_a_peers_csv_without_its_last_line_is_skipped_with_a_warning(tmp_path, capsys):
    good = tmp_path / "Hopper-v5" / "sb3_trpo_default__1.csv"
    good.parent.mkdir()
    good.write_text("global_step,episodic_return\n100,5.0\n# SPS train_sps=9.5 steps=100\n")
    good.with_name("sb3_trpo_default__2.csv").write_text("global_step,episodic_return\n100,5\n")
    assert [run.seed for run in plot.find_runs([tmp_path])] == [1]
    assert "sb3_trpo_default__2.csv" in capsys.readouterr().err


# --- unwritable output folders: one line naming the flag, before any work ---

@pytest.fixture(params=["under a file", "/proc/x"])
def unwritable(request, tmp_path) -> Path:
    """A folder no one can create: below a regular file, or in /proc (Linux)."""
    if request.param == "/proc/x":
        if not Path("/proc").is_dir():
            pytest.skip("no /proc here")
        return Path("/proc/x")
    (tmp_path / "a_file").write_text("")
    return tmp_path / "a_file" / "x"


@pytest.mark.parametrize("script, argv, flag", [
    (PLOT, ["{runs}", "--out-dir", "{bad}"], "--out-dir"),
    (BENCHMARK, ["--summary-only", "--runs-dir", "{runs}", "--out-dir", "{bad}"], "--out-dir"),
    (BENCHMARK, ["--envs", ENV, "--scripts", "ppo_clip", "--seeds", "1", "--total-timesteps",
                 "256", "--runs-dir", "{new}", "--out-dir", "{bad}"], "--out-dir"),
    (BENCHMARK, ["--envs", ENV, "--scripts", "ppo_clip", "--seeds", "1", "--total-timesteps",
                 "256", "--runs-dir", "{bad}"], "--runs-dir"),
])
def test_unwritable_folder_exits_2_before_any_work(run_script, assert_clean_error, synthetic,
                                                   unwritable, tmp_path, script, argv, flag):
    runs_dir, _ = synthetic
    paths = dict(runs=runs_dir, bad=unwritable, new=tmp_path / "new_runs")
    line = assert_clean_error(run_script(script, *(arg.format(**paths) for arg in argv)))
    assert line.startswith(f"{Path(script).name}: error: {flag} {unwritable}: "), line
    assert not (tmp_path / "new_runs").exists()  # no run started


# --- the committed results: only the command that regenerates them rewrites them ---

def snapshot(folder: Path, figures: bool = True) -> dict[str, str]:
    """{path inside the folder: sha256} of every file under it (but the PNGs if not figures)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and (figures or p.suffix != ".png")}


@pytest.fixture(scope="module")
def committed_copy(tmp_path_factory) -> Path:
    """A copy of what the summary reads and writes: the scripts (benchmark.py reads their
    Args), plots/*.py, and the committed results.csv, figures, data/ and peers/."""
    root = tmp_path_factory.mktemp("repository")
    (root / "plots").mkdir()
    for pattern in ("*.py", "plots/*.py", "plots/*.png", "plots/results.csv"):
        for path in REPO_ROOT.glob(pattern):
            shutil.copyfile(path, root / path.relative_to(REPO_ROOT))
    for folder in ("data", "peers"):
        shutil.copytree(REPO_ROOT / "plots" / folder, root / "plots" / folder)
    return root


@contextlib.contextmanager
def committed_unchanged(copy: Path, figures: bool = True):
    """Assert that the copy's plots/ (its figures too, unless not figures) and the real plots/
    are, after the block, as they were before it."""
    def state():
        return snapshot(copy / "plots", figures), snapshot(REPO_ROOT / "plots")

    before = state()
    yield
    assert state() == before


def run_in(root: Path, script: str, *argv) -> subprocess.CompletedProcess:
    """python <root>/<script> argv, run from root, as a user runs it from the repository."""
    return subprocess.run([sys.executable, str(root / script), *map(str, argv)], cwd=root,
                          capture_output=True, text=True, timeout=120)


def test_a_quick_check_writes_to_the_users_folder(committed_copy):
    """The quick check of the issue, as typed, from the repository root: it used to cut
    plots/results.csv to one row and delete the CSVs of plots/data/CartPole-v1."""
    write_run(committed_copy / "runs" / "benchmark", "ppo_clip", 1,
              synthetic_returns("ppo_clip", 1), 2_000_000_000, total_timesteps=4096)
    with committed_unchanged(committed_copy):
        result = run_in(committed_copy, BENCHMARK, "--summary-only", "--envs", ENV, "--scripts",
                        "ppo_clip", "--seeds", 1, "--total-timesteps", 4096)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    with open(committed_copy / "runs" / "benchmark" / "summary_4096" / "results.csv") as file:
        assert [row["script"] for row in csv.DictReader(file)] == ["ppo_clip"]


@pytest.mark.parametrize("mode", [["--summary-only"], []])
def test_a_budget_into_plots_is_refused(committed_copy, mode):
    with committed_unchanged(committed_copy):
        result = run_in(committed_copy, BENCHMARK, *mode, "--envs", ENV, "--scripts",
                        "ppo_clip", "--seeds", 1, "--total-timesteps", 4096, "--out-dir",
                        "plots", "--runs-dir", "new_runs")
    assert "Traceback" not in result.stderr and result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("benchmark.py: error: --total-timesteps 4096 with --out-dir plots")
    assert result.stdout == "" and not (committed_copy / "new_runs").exists()  # nothing ran


def test_the_committed_results_regenerate_from_the_committed_data(committed_copy, tmp_path):
    """--summary-only --out-dir plots with no run of the grid's flags in --runs-dir (one of
    another budget, left out): results.csv comes back byte for byte and data/ is untouched.
    The figures are redrawn; they are not compared, as their bytes may follow matplotlib's
    version."""
    write_run(tmp_path / "runs", "ppo_clip", 1, synthetic_returns("ppo_clip", 1), 2_000_000_000)
    with committed_unchanged(committed_copy, figures=False):
        result = run_in(committed_copy, BENCHMARK, "--summary-only", "--out-dir", "plots",
                        "--runs-dir", tmp_path / "runs")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    (line,) = result.stderr.splitlines()
    assert "left out 1 finished run(s)" in line


def test_the_summary_merges_a_new_run_into_the_copies(run_script, read_csv, tmp_path):
    """An --out-dir holding the committed CartPole copies and their rows of results.csv; one new
    full-budget run of ppo_clip seed 1 replaces its copy, and nothing else changes but that
    row, whose numbers come from the new run and the four other committed seeds."""
    out_dir, committed = tmp_path / "out", REPO_ROOT / "plots" / "data" / ENV
    shutil.copytree(committed, out_dir / "data" / ENV)
    header, *lines = (REPO_ROOT / "plots" / "results.csv").read_text().splitlines()
    (out_dir / "results.csv").write_text(
        "\n".join([header, *(line for line in lines if line.split(",")[1] == ENV)]) + "\n")
    with open(out_dir / "results.csv", newline="") as file:
        rows = {(r["script"], r["env"]): r for r in csv.DictReader(file)}
    assert len(rows) == 5  # the four scripts of the article and grpo
    before = snapshot(out_dir / "data")
    returns = synthetic_returns("ppo_clip", 1)
    run_dir = write_run(tmp_path / "runs", "ppo_clip", 1, returns, 2_000_000_000,
                        total_timesteps=100_000)
    result = run_script(BENCHMARK, "--summary-only", "--runs-dir", tmp_path / "runs",
                        "--out-dir", out_dir)
    assert result.returncode == 0 and result.stderr == "", result.stderr

    after = snapshot(out_dir / "data")
    assert set(after) == set(before)  # nothing removed, nothing else added
    assert {name for name in before if after[name] != before[name]} == {
        f"{ENV}/ppo_clip__1__{name}" for name in plot.DATA_FILES}
    for name in plot.DATA_FILES:
        assert (out_dir / "data" / ENV / f"ppo_clip__1__{name}").read_bytes() == (
            run_dir / name).read_bytes()
    with open(out_dir / "results.csv", newline="") as file:
        merged = {(r["script"], r["env"]): r for r in csv.DictReader(file)}
    assert list(merged) == list(rows)  # no row lost
    for key in rows:
        if key != ("ppo_clip", ENV):
            assert merged[key] == rows[key]
    finals = [float(np.mean(returns[-20:]))] + [
        float(np.mean(read_csv(committed / f"ppo_clip__{seed}__episodes.csv")
                      ["episodic_return"][-20:])) for seed in (2, 3, 4, 5)]
    assert merged[("ppo_clip", ENV)]["seeds"] == "5"
    assert float(merged[("ppo_clip", ENV)]["mean"]) == pytest.approx(statistics.mean(finals),
                                                                      rel=1e-5)


# --- trust_region.png: two real TRPO updates along their full step ---

@pytest.fixture(scope="module")
def trust_region_pair(tmp_path_factory) -> list:
    """The early and the late update of trust_region.png, trained once for all the tests below
    (about 10 s of training)."""
    runs_dir = tmp_path_factory.mktemp("trust_region_runs")
    return [plot.trust_region_update(steps, runs_dir) for steps in plot.TRUST_REGION_STEPS]


@pytest.fixture(params=[0, 1], ids=["early", "late"])
def trust_region_one(request, trust_region_pair):
    return trust_region_pair[request.param]


def test_trust_region_curves_come_from_trpos_functions(trust_region_one):
    """The figure's curves, models and line-search points, recomputed here with trpo.py's
    functions at θ' + α x on a copy of the actor."""
    import copy

    import torch
    from torch import nn
    from torch.autograd import grad

    update, alpha = trust_region_one, 0.7
    old_dist, obs = update.batch[:2]
    curves = plot.trust_region_curves(update, [alpha])
    moved = copy.deepcopy(update.actor)
    with torch.no_grad():
        nn.utils.vector_to_parameters(update.theta_old + alpha * update.full_step,
                                      moved.parameters())
        assert curves.true_kl[0] == pytest.approx(trpo.mean_kl(old_dist, moved(obs)).item(),
                                                  rel=1e-6)
        gain = (trpo.surrogate_and_kl(moved, *update.batch)[0]
                - trpo.surrogate_and_kl(update.actor, *update.batch)[0]).item()
    assert curves.true_gain[0] == pytest.approx(gain, rel=1e-5)
    # the models: g and F from the actor at θ', F x by fisher_vector_product, undamped and damped
    params = list(update.actor.parameters())
    surrogate, kl = trpo.surrogate_and_kl(update.actor, *update.batch)
    g = nn.utils.parameters_to_vector(grad(surrogate, params, retain_graph=True))
    kl_grad = nn.utils.parameters_to_vector(grad(kl, params, create_graph=True))
    x = update.full_step
    for damping, model in ((0.0, curves.fisher_kl), (update.args.cg_damping, curves.damped_kl)):
        quadratic = 0.5 * (trpo.fisher_vector_product(kl_grad, params, x, damping) @ x).item()
        assert model[0] == pytest.approx(quadratic * alpha**2, rel=1e-5)
    assert curves.linear_gain[0] == pytest.approx((g @ x).item() * alpha, rel=1e-5)
    # the line search's points lie on the true curves, at α = backtrack_coef^k
    tried = np.array(update.tried)
    assert np.allclose(tried[:, 0], update.args.backtrack_coef ** np.arange(len(tried)))
    on_curves = plot.trust_region_curves(update, tried[:, 0])
    assert np.allclose(on_curves.true_gain, tried[:, 1], rtol=1e-6, atol=0)
    assert np.allclose(on_curves.true_kl, tried[:, 2], rtol=1e-6, atol=0)


def test_trust_region_true_kl_is_the_fisher_model_near_zero(trust_region_one):
    """KL(π_θ' ‖ π_θ'+x) = ½ xᵀFx + O(|x|³): the ratio tends to 1 as α → 0. The KL is computed
    in float32, ~1e-6 nats at α = 0.01, which bounds how close it can come there (~0.2 %)."""
    curves = plot.trust_region_curves(trust_region_one, [0.05, 0.01])
    ratio = curves.true_kl / curves.fisher_kl
    assert abs(ratio[0] - 1) < 0.05
    assert abs(ratio[1] - 1) < 0.01


def test_trust_region_damped_model_is_delta_at_the_full_step(trust_region_one):
    """trust_region_step puts ½ xᵀ(F + cI)x on δ; the undamped model stays below it (c > 0)."""
    curves = plot.trust_region_curves(trust_region_one, [1.0])
    max_kl = trust_region_one.args.max_kl
    assert curves.damped_kl[0] == pytest.approx(max_kl, rel=1e-5)
    assert 0 < curves.fisher_kl[0] < max_kl


def test_trust_region_accepted_point_is_inside_and_improves(trust_region_one):
    """The accepted point satisfies KL ≤ δ and improves L; every point tried before it failed
    one of the two (the line search takes the first that passes)."""
    update = trust_region_one
    max_kl, tried = update.args.max_kl, update.tried
    assert update.accepted
    _, gain, kl = tried[-1]
    assert kl <= max_kl and gain > 0
    assert all(kl > max_kl or gain <= 0 for _, gain, kl in tried[:-1])


def test_trust_region_figure_is_written(trust_region_pair, monkeypatch, capsys, tmp_path):
    """--trust-region writes <out-dir>/trust_region.png (from the two updates above: no second
    training) and prints its path."""
    monkeypatch.setattr(plot, "trust_region_updates", lambda: trust_region_pair)
    plot.main(tyro.cli(plot.Args, args=["--trust-region", "--out-dir", str(tmp_path)]))
    path = tmp_path / "trust_region.png"
    assert capsys.readouterr().out.split() == [str(path)]
    assert plt.imread(path).shape[:2] == (1200, 1440)  # 2 rows x 2 panels, 12 x 10 in at 120 dpi


def test_a_recipe_keeps_its_scripts_colour_and_peers_take_their_own():
    curves = [plot.Curve(name, "", []) for name in
              ("ppo_clip", "ppo_clip_tianshou", "sb3_ppo_cleanrl", "sb3_trpo_default")]
    styles = [plot.style(curves, i) for i in range(len(curves))]
    assert styles[1] == dict(color=plot.COLORS["ppo_clip"], linestyle=":")
    assert [s["color"] for s in styles[2:]] == list(plot.PEER_COLORS[:2])
    assert all(s["linestyle"] == "--" for s in styles[2:])
