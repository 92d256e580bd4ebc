"""plots/claims.py and the claims grids of plots/benchmark.py: the normalisation and bootstrap of
Table 1 against values worked by hand, the grid's commands as --dry-run prints them, resuming,
the compact per-run data against the raw episodes, and the no-clip row's loss."""

import json
import math
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import tyro

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "plots"))
import benchmark  # noqa: E402
import claims  # noqa: E402
import solved  # noqa: E402
import ppo_clip  # noqa: E402  (the repository root is on sys.path through benchmark)
import ppo_kl  # noqa: E402
import trpo  # noqa: E402

BENCHMARK = "plots/benchmark.py"
MODULES = {"ppo_clip": ppo_clip, "ppo_kl": ppo_kl, "trpo": trpo}


# --- Table 1's normalisation and bootstrap, on a table small enough to work by hand ---

RANDOM = {"e1": 0.0, "e2": 10.0}
SCORES = {("A", "e1"): [10.0, 20.0], ("A", "e2"): [110.0, 110.0],
          ("B", "e1"): [30.0, 30.0], ("B", "e2"): [60.0, 60.0],
          ("T", "e1"): [100.0, 100.0], ("T", "e2"): [10.0, 10.0]}


def test_normalisation_against_hand_values():
    """Best on e1 is B (mean 30), on e2 A (110); T is not a PPO setting and sets nothing, even
    with the highest score: A = mean(1/3, 2/3, 1, 1), B = mean(1, 1, 0.5, 0.5), T = 100/30 on
    e1 and 0 on e2."""
    table = claims.table1_scores(SCORES, RANDOM, settings=("A", "B"))
    assert table["A"][0] == pytest.approx(0.75)
    assert table["B"][0] == pytest.approx(0.75)
    assert table["T"][0] == pytest.approx((100 / 30 * 2 + 0 * 2) / 4)
    assert [table[s][3] for s in "ABT"] == [4, 4, 4]


def test_a_task_whose_best_is_not_above_random_is_left_out(capsys):
    """On e3 the best PPO setting (A, -50) is below the random policy (-40): normalised, B's
    worse runs would score above A's. The task is left out of every figure, with a warning."""
    scores = {**SCORES, ("A", "e3"): [-50.0], ("B", "e3"): [-65.0], ("T", "e3"): [-60.0]}
    table = claims.table1_scores(scores, {**RANDOM, "e3": -40.0}, settings=("A", "B"))
    expected = claims.table1_scores(SCORES, RANDOM, settings=("A", "B"))
    assert table == expected
    assert "e3 left out of Table 1" in capsys.readouterr().err


def test_bootstrap_resamples_seeds_within_each_task():
    """A's e2 runs are equal, so only e1's pair varies: resampled, it averages to 1/3, 1/2 or
    2/3 with chances 1/4, 1/2, 1/4, and A's figure to 2/3, 3/4 or 5/6. Each extreme has chance
    1/4 > 2.5 %, so the interval is exactly [2/3, 5/6]. B's runs are equal per task: no
    spread. Were the seeds pooled across tasks instead, B's interval would not be a point."""
    table = claims.table1_scores(SCORES, RANDOM, settings=("A", "B"))
    assert table["A"][1:3] == pytest.approx((2 / 3, 5 / 6))
    assert table["B"][1:3] == pytest.approx((0.75, 0.75))


def test_normalise_maps_random_to_0_and_best_to_1():
    assert claims.normalise(-43.0, -43.0, 7.0) == 0.0
    assert claims.normalise(7.0, -43.0, 7.0) == 1.0
    assert claims.normalise(-93.0, -43.0, 7.0) == -1.0


# --- the grids' commands, read back from --dry-run ---

def dry_run_args(run_script, tmp_path, *argv):
    result = run_script(BENCHMARK, "--dry-run", "--runs-dir", tmp_path / "runs", *argv)
    assert result.returncode == 0, result.stderr
    parsed = []
    for line in result.stdout.splitlines():
        words = shlex.split(line.split(" && ", 1)[1])
        script = Path(words[2]).stem
        parsed.append((script, tyro.cli(MODULES[script].Args, args=words[3:])))
    return parsed


def test_table1_grid_carries_table3_flags(run_script, tmp_path):
    """arXiv:1707.06347, Table 3: horizon 2048, Adam 3e-4, 10 epochs, minibatch 64, γ 0.99,
    λ 0.95, 64-64 networks, no entropy bonus; ppo1 where the paper is silent."""
    runs = dry_run_args(run_script, tmp_path, "--grid", "table1")
    assert len(runs) == 7 * 12 * 3
    assert [a.seed for _, a in runs[:84]] == [1] * 84  # seed 1 of every cell first
    for script, a in runs:
        assert (a.num_envs, a.num_steps, a.update_epochs) == (1, 2048, 10)
        assert a.num_envs * a.num_steps // a.num_minibatches == 64
        assert (a.gamma, a.gae_lambda, a.hidden_size, a.total_timesteps) == (
            0.99, 0.95, 64, 1_000_000)
        assert a.normalize and not a.norm_reward and a.anneal_lr
        if script != "trpo":
            assert (a.learning_rate, a.ent_coef, a.max_grad_norm) == (3e-4, 0.0, None)
    settings = {(s, a.exp_name) for s, a in runs}
    assert len(settings) == 12
    by_name = {a.exp_name: (s, a) for s, a in runs}
    assert by_name["no_clip"][0] == "ppo_kl"
    assert (by_name["no_clip"][1].beta_init, by_name["no_clip"][1].adaptive) == (0.0, False)
    assert by_name["clip_0.3"][1].clip_coef == 0.3
    assert (by_name["adaptive_kl_0.003"][1].kl_target, by_name["adaptive_kl_0.003"][1].adaptive,
            by_name["adaptive_kl_0.003"][1].beta_init) == (0.003, True, 1.0)
    assert (by_name["fixed_kl_10"][1].beta_init, by_name["fixed_kl_10"][1].adaptive) == (10.0,
                                                                                          False)
    assert by_name["trpo"][1].max_kl == 0.01


def test_reuse_grid_varies_only_the_epochs(run_script, tmp_path):
    runs = dry_run_args(run_script, tmp_path, "--grid", "reuse", "--seeds", "1")
    assert len(runs) == 2 * 2 * 4
    assert sorted({a.update_epochs for _, a in runs}) == [1, 3, 10, 30]
    for script, a in runs:
        assert a.env_id in ("Hopper-v5", "HalfCheetah-v5")
        if script == "ppo_clip":
            assert a.clip_coef == 0.2
        else:
            assert (script, a.beta_init, a.adaptive) == ("ppo_kl", 0.0, False)


def write_config(runs_dir: Path, cell: benchmark.Cell, name: str, **recorded) -> None:
    """A run folder whose config.json is the cell's command's, with `recorded` added."""
    folder = runs_dir / name
    folder.mkdir(parents=True)
    config = benchmark.command_config(cell.script, tuple(cell.flags))
    (folder / "config.json").write_text(json.dumps({**config, "steps_run": 0, **recorded}))


def test_finished_and_diverged_runs_are_skipped_a_cut_off_one_rerun(run_script, tmp_path):
    """Of Reacher's seed-1 runs, one finished, one diverged (a result), one was cut off, and a
    ppo_clip run recorded under the adaptive-KL setting's name is still ppo_clip's."""
    cells = {c.name: c for c in benchmark.grid_cells(tyro.cli(benchmark.Args, args=[
        "--grid", "table1", "--envs", "Reacher-v5", "--seeds", "1"]))}
    runs_dir = tmp_path / "runs"
    write_config(runs_dir, cells["clip_0.2"], "a", finished=True)
    write_config(runs_dir, cells["no_clip"], "b", finished=False, diverged=12)
    write_config(runs_dir, cells["fixed_kl_1"], "c", finished=False)
    write_config(runs_dir, cells["clip_0.1"], "d", finished=True, exp_name="adaptive_kl_0.01")
    names = {a.exp_name for _, a in dry_run_args(run_script, tmp_path, "--grid", "table1",
                                                 "--envs", "Reacher-v5", "--seeds", "1")}
    assert names == set(claims.SETTINGS) - {"clip_0.2", "no_clip", "clip_0.1"}


# --- one run, compact ---

def fake_run(folder: Path, returns: np.ndarray, steps: np.ndarray, updates: dict,
             config: dict) -> Path:
    folder.mkdir(parents=True)
    lines = ["global_step,episodic_return,episodic_length,wall_time"]
    lines += [f"{s},{float(r)!r},10,0.0" for s, r in zip(steps, returns)]
    (folder / "episodes.csv").write_text("\n".join(lines) + "\n")
    columns = ["global_step", *updates]
    rows = zip(range(len(next(iter(updates.values())))), *updates.values())
    (folder / "updates.csv").write_text(
        ",".join(columns) + "\n" + "".join(",".join(map(str, row)) + "\n" for row in rows))
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_compact_run_keeps_the_raw_score_and_bins(tmp_path):
    rng = np.random.default_rng(3)
    returns = rng.normal(1000.0, 300.0, 250)
    steps = np.sort(rng.integers(1, 1_000_001, 250))
    steps[-1] = 1_000_000
    updates = {"kl": [0.01, 0.03, 0.02, 0.5], "max_ratio_dev": [0.2, 0.9, 0.4, 3.0]}
    run = fake_run(tmp_path / "run", returns, steps, updates, {"steps_run": 1_000_000})
    row, curve = claims.compact_run("clip_0.2", "Hopper-v5", 1, run)
    assert float(row["score"]) == pytest.approx(sum(returns[150:]) / 100, rel=1e-5)
    assert (float(row["kl_median"]), float(row["kl_max"])) == (pytest.approx(0.025), 0.5)
    assert float(row["ratio_dev_median"]) == pytest.approx(0.65)
    assert sum(n for _, n, _ in curve) == 250
    for end, n, mean in curve:
        inside = [r for s, r in zip(steps, returns) if end - claims.BIN < s <= end]
        assert n == len(inside) and mean == pytest.approx(sum(inside) / len(inside))
    assert curve[-1][0] == 1_000_000


def test_a_run_stopped_at_its_first_update_is_summarised(tmp_path):
    """A run whose first update had a non-finite loss: updates.csv holds its header alone. Its
    row keeps the score of the episodes that ended, with no KL, and the summary goes on."""
    run = fake_run(tmp_path / "run", np.full(3, 7.0), np.arange(1, 4), {"kl": []},
                   {"steps_run": 2048, "diverged": 1})
    row, _ = claims.compact_run("no_clip", "Hopper-v5", 1, run)
    assert (float(row["score"]), row["kl_median"], row["diverged_at"]) == (7.0, "", "1")
    out = tmp_path / "claims"
    out.mkdir()
    (out / "random.csv").write_text("env,episodes,mean_return,std\n" + "".join(
        f"{env},100,0,1\n" for env in claims.TABLE1_ENVS))
    claims.summarise({("no_clip", "Hopper-v5", 1): run}, out)
    (table,) = claims.read_rows(out / "table1.csv")
    assert (table["setting"], table["runs"], table["diverged"]) == ("no_clip", "1", "1")


def test_compact_run_counts_the_line_search(tmp_path):
    """Six trpo updates: full steps at k = 0, two backtracked (k = 1 and 3), one refused."""
    updates = {"kl": [0.009, 0.004, 0.0, 0.002, 0.01, 0.008],
               "accepted": [1, 1, 0, 1, 1, 1], "backtracks": [0, 1, 10, 3, 0, 0]}
    run = fake_run(tmp_path / "run", np.ones(5), np.arange(1, 6), updates,
                   {"steps_run": 12288, "max_kl": 0.01, "diverged": 6})
    row, _ = claims.compact_run("trpo", "Hopper-v5", 2, run)
    assert (row["updates"], row["full_steps"], row["backtracked"], row["refused"]) == (
        "6", "3", "2", "1")
    assert (float(row["backtracks_mean"]), row["backtracks_max"]) == (2.0, "3")
    assert (float(row["accepted_kl_max"]), row["max_kl"], row["diverged_at"]) == (0.01, "0.01",
                                                                                  "6")


def test_summary_rebuilds_table1_from_the_runs(tmp_path):
    """Two settings on two tasks through summarise: table1.csv holds the hand values, and a
    second summary with no new run keeps every row."""
    out = tmp_path / "claims"
    out.mkdir()
    (out / "random.csv").write_text("env,episodes,mean_return,std\n" + "".join(
        f"{env},100,{0 if env == 'Hopper-v5' else 10},1\n" for env in claims.TABLE1_ENVS))
    found = {}
    for setting, env, seed, score in [("clip_0.2", "Hopper-v5", 1, 10), ("clip_0.2", "Hopper-v5",
                                      2, 20), ("no_clip", "Hopper-v5", 1, 30),
                                      ("clip_0.2", "Swimmer-v5", 1, 110),
                                      ("no_clip", "Swimmer-v5", 1, 60)]:
        found[setting, env, seed] = fake_run(
            tmp_path / f"{setting}{env}{seed}", np.full(120, float(score)), np.arange(1, 121),
            {"kl": [0.01], "max_ratio_dev": [0.1]}, {"steps_run": 2048})
    claims.summarise(found, out)
    claims.summarise({}, out)
    table = {r["setting"]: r for r in claims.read_rows(out / "table1.csv")}
    # Hopper: best no_clip (30), clip_0.2 is 1/3 and 2/3; Swimmer: best clip_0.2, no_clip 0.5
    assert float(table["clip_0.2"]["score"]) == pytest.approx((1 / 3 + 2 / 3 + 1) / 3, abs=1e-3)
    assert float(table["no_clip"]["score"]) == pytest.approx(0.75, abs=1e-3)
    assert table["clip_0.2"]["paper"] == "0.82" and table["clip_0.2"]["runs"] == "3"
    assert len(claims.read_rows(out / "runs.csv")) == 5
    tables = (out / "tables.md").read_text().split("\n\n")
    # one run per task: the bootstrap has nothing to resample, so no interval is shown
    no_clip = "|no clip or penalty (`ppo_kl.py --no-adaptive --beta-init 0`)|2|0.75|−0.39|"
    assert no_clip in tables[0]
    assert "|clip ε = 0.2||10/20||||110||" in tables[1]  # raw scores, seeds separated by /


def test_results_md_shows_the_committed_claims_tables():
    """RESULTS.md's claims tables are plots/claims/tables.md, which is what markdown() renders
    from the committed CSVs: runs merged into the CSVs cannot leave RESULTS.md behind."""
    committed = REPO_ROOT / "plots" / "claims"
    tables = (committed / "tables.md").read_text()
    assert tables == claims.markdown(committed)
    results = (REPO_ROOT / "RESULTS.md").read_text()
    assert not [table.splitlines()[0] for table in tables.split("\n\n")
                if table.strip() not in results]


# --- the no-clip row: the article's L(θ), nothing else ---

def test_no_clip_loss_is_minus_mean_ratio_times_advantage():
    """β = 0 leaves -Ê_t[r_t Â_t] alone, summed term by term here, even where the KL is not
    finite (0 · ∞ would make it NaN)."""
    g = torch.Generator().manual_seed(0)
    ratio = torch.rand(64, generator=g, dtype=torch.float64) * 3
    advantages = torch.randn(64, generator=g, dtype=torch.float64)
    by_hand = -sum(r * a for r, a in zip(ratio.tolist(), advantages.tolist())) / 64
    for kl in (torch.tensor(0.3), torch.tensor(math.inf), torch.tensor(math.nan)):
        loss = ppo_kl.kl_penalty_loss(ratio, advantages, kl, beta=0.0)
        assert loss.item() == pytest.approx(by_hand, rel=1e-12)


def test_no_clip_row_adds_nothing_to_the_actors_loss():
    """The row's flags: β 0 and held, no entropy bonus, no gradient clipping; the actor and the
    critic are separate networks, so the actor's gradient is that of -L(θ) alone."""
    script, flags = claims.setting_command("no_clip")
    args = tyro.cli(ppo_kl.Args, args=shlex.split(flags))
    assert script == "ppo_kl"
    assert (args.beta_init, args.adaptive, args.ent_coef, args.max_grad_norm) == (0.0, False,
                                                                                  0.0, None)


# --- plots/solved.py: does a solved policy stay solved ---

def test_stays_solved_against_a_hand_worked_run():
    """20 episodes of 470, then 500s: the 20-episode mean is 470, 471.5, 473, 474.5, then 476
    at the window ending with episode 24 (16 x 470 + 4 x 500), the first at 475 or more; it
    ends at step 24,000. Later, three episodes of 300 among the 38 after it: the lowest mean
    is (17 x 500 + 3 x 300) / 20 = 470, and 3 of 38 later episodes are below 400."""
    returns = np.array([470.0] * 20 + [500.0] * 30 + [300.0] * 3 + [500.0] * 9)
    steps = 1000.0 * np.arange(1, len(returns) + 1)
    means = [np.mean(returns[i - 19:i + 1]) for i in range(19, len(returns))]
    first = next(i for i, m in enumerate(means) if m >= 475)  # the window ending at 19 + first
    solved_at, lowest, share, last_dip = solved.stays_solved(steps, returns)
    assert solved_at == steps[19 + first]
    assert np.isnan(last_dip)  # 470 is the lowest mean: none below 450
    assert lowest == pytest.approx(min(means[first:]))
    assert lowest == pytest.approx(470.0) and solved_at == 24_000
    assert share == pytest.approx(3 / 38)
    later = returns[19 + first + 1:]
    assert share == pytest.approx(sum(r < 400 for r in later) / len(later))
    assert solved.stays_solved(steps, np.full(40, 470.0))[0] == np.inf


def test_stays_solved_finds_the_last_dip_below_450():
    """The same start, then three 0s at episodes 51-53 among 500s: a window holds all three
    (mean 425, below 450) when it ends at episode 53 through 70 (the first 0 is its 1st
    episode); two 0s give exactly 450, not below. So the last dip ends at step 70,000."""
    returns = np.array([470.0] * 20 + [500.0] * 30 + [0.0] * 3 + [500.0] * 30)
    steps = 1000.0 * np.arange(1, len(returns) + 1)
    solved_at, lowest, _, last_dip = solved.stays_solved(steps, returns)
    assert (solved_at, last_dip) == (24_000, 70_000)
    assert lowest == pytest.approx(17 * 500 / 20)


def test_summary_puts_a_script_without_groups_beside_the_variants(tmp_path):
    """ppo_clip's updates.csv has no zero_signal column: its row leaves that column empty,
    comes after the variants, and carries the figures worked by hand above."""
    returns = [470.0] * 20 + [500.0] * 30 + [0.0] * 3 + [500.0] * 30  # the run above
    found = {}
    for name, columns in [("ppo_clip", "global_step"), ("skip_only", "global_step,zero_signal")]:
        run = tmp_path / name
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"seed": 1}))
        (run / "episodes.csv").write_text("global_step,episodic_return\n" + "".join(
            f"{1000 * (i + 1)},{r}\n" for i, r in enumerate(returns)))
        (run / "updates.csv").write_text(f"{columns}\n" + "".join(
            f"{step}{',0.5' * (',' in columns)}\n" for step in (20_000, 60_000)))
        found[name, 1] = run
    solved.summarise(found, tmp_path / "out")
    rows = claims.read_rows(tmp_path / "out" / "runs.csv")
    assert [(r["variant"], r["solved_at"], r["last_dip_after"], r["zero_signal_after"])
            for r in rows] == [("skip_only", "24000", "46000", "0.500"),
                               ("ppo_clip", "24000", "46000", "")]
    summary = claims.read_rows(tmp_path / "out" / "summary.csv")
    assert [(r["variant"], r["kept_above_450"]) for r in summary] == [("skip_only", "0"),
                                                                       ("ppo_clip", "0")]
