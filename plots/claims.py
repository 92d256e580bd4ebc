"""The article's claims, checked: the PPO paper's Table 1 re-run, batch reuse with and without the
clip, and TRPO's line search at work. benchmark.py runs these grids (--grid table1, --grid reuse)
and calls summarise() below for their tables and figures.

Table 1 (arXiv:1707.06347, section 6.1): seven MuJoCo tasks, 1,000,000 steps, seeds 1-3; each
run scores the mean return of its last 100 episodes; per task a score is shifted and scaled so
that the uniform random policy scores 0 and the best of the 11 PPO settings (its mean over its
seeds) scores 1; a setting's figure is the mean of its normalised runs, with a 95 % bootstrap
interval that resamples the seeds within each task. The trpo row (the paper's Figure 3
comparison) is normalised with the same constants and does not set them.

Batch reuse: on Hopper-v5 and HalfCheetah-v5, update epochs K = 1, 3, 10, 30, each with the clip
(ε = 0.2) and with neither clip nor penalty; K = 10 is Table 1's runs.

Written into <out-dir>/claims/:
    random.csv       env,episodes,mean_return,std: the uniform random policy, 100 episodes
    runs.csv         one row per finished run: its score and its updates' statistics (RUN_COLUMNS)
    curves/<env>/<setting>__<seed>.csv   step,episodes,mean_return: the episodes that end in
                     each 10,000-step bin
    table1.csv, table1.png, per_task.csv, reuse.csv, reuse.png, line_search.csv
    tables.md        the four tables as RESULTS.md shows them (markdown())
Rows of runs.csv and curve files already there are kept and replaced by a newer finished run of
the same (setting, env, seed), so that a summary of a partial runs folder never loses a row.
"""

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np

# --- The grids ---

TABLE1_ENVS = ("HalfCheetah-v5", "Hopper-v5", "InvertedDoublePendulum-v5", "InvertedPendulum-v5",
               "Reacher-v5", "Swimmer-v5", "Walker2d-v5")
TABLE1_SEEDS = (1, 2, 3)
REUSE_ENVS = ("Hopper-v5", "HalfCheetah-v5")
REUSE_EPOCHS = (1, 3, 10, 30)
STEPS = 1_000_000


def table3(script: str, epochs: int = 10) -> str:
    """The paper's MuJoCo settings (arXiv:1707.06347, Table 3) as the script's flags: horizon 2048
    on one env, Adam 3e-4, `epochs` epochs of minibatches of 64, γ 0.99, λ 0.95, 64-64 tanh
    networks, no entropy bonus. Where the paper is silent, its released code (OpenAI baselines'
    ppo1, run_mujoco.py and pposgd_simple.py): observations normalised and rewards raw
    (--no-norm-reward), the step size annealed linearly to 0 (--anneal-lr), the value loss the
    plain squared error (--vf-coef 2 undoes the ½ in v_loss), no gradient clipping. Departures
    from ppo1: advantages standardised per minibatch (ppo1: per batch), the observations clipped
    to ±10 (ppo1: ±5), ε kept fixed (ppo1 anneals it with the step size), Adam's eps 1e-5.
    trpo's critic keeps the benchmark grid's settings (Adam 1e-3, 10 epochs of 64)."""
    common = (f"--num-envs 1 --num-steps 2048 --num-minibatches 32 --update-epochs {epochs} "
              "--gamma 0.99 --gae-lambda 0.95 --hidden-size 64 --log-std-init 0 --anneal-lr "
              "--normalize --no-norm-reward")
    if script == "trpo":
        return common + " --learning-rate 1e-3"
    return common + " --learning-rate 3e-4 --ent-coef 0 --vf-coef 2 --max-grad-norm None"


# setting -> (script, its own flags); the 11 PPO rows of Table 1, then trpo (δ = 0.01)
SETTINGS = {
    # the article's L(θ) = Ê_t[r_t Â_t], maximised for 10 epochs with nothing to hold it
    "no_clip": ("ppo_kl", "--no-adaptive --beta-init 0"),
    **{f"clip_{eps}": ("ppo_clip", f"--clip-coef {eps}") for eps in ("0.1", "0.2", "0.3")},
    # the paper's β starts at 1 (its section 4: the rule soon moves it)
    **{f"adaptive_kl_{d}": ("ppo_kl", f"--kl-target {d} --beta-init 1")
       for d in ("0.003", "0.01", "0.03")},
    **{f"fixed_kl_{b}": ("ppo_kl", f"--no-adaptive --beta-init {b}")
       for b in ("0.3", "1", "3", "10")},
    "trpo": ("trpo", "--max-kl 0.01"),
}
PAPER = {"no_clip": -0.39, "clip_0.1": 0.76, "clip_0.2": 0.82, "clip_0.3": 0.70,
         "adaptive_kl_0.003": 0.68, "adaptive_kl_0.01": 0.74, "adaptive_kl_0.03": 0.71,
         "fixed_kl_0.3": 0.62, "fixed_kl_1": 0.71, "fixed_kl_3": 0.72, "fixed_kl_10": 0.69}
"""arXiv:1707.06347, Table 1: each setting's normalised score, averaged over 21 runs"""
PPO_SETTINGS = tuple(PAPER)
REUSE_VARIANTS = {"clip_0.2": "clip ε = 0.2", "no_clip": "no clip or penalty"}
"""the two Table 1 settings that the reuse grid runs at every K (K = 10 is Table 1's run)"""


def reuse_setting(variant: str, epochs: int) -> str:
    return variant if epochs == 10 else f"{variant}_K{epochs}"


def setting_command(setting: str) -> tuple[str, str]:
    """(script, flags) of a setting of either grid, the env, seed and budget aside."""
    if setting in SETTINGS:
        script, own = SETTINGS[setting]
        return script, f"{table3(script)} {own}"
    variant, epochs = setting.rsplit("_K", 1)
    script, own = SETTINGS[variant]
    return script, f"{table3(script, int(epochs))} {own}"


def grid_runs(grid: str) -> list[tuple[str, str, int]]:
    """(setting, env, seed) of a claims grid, seed-major: seed 1 of every cell first, so that a
    one-seed table exists early and each later seed tightens it."""
    if grid == "table1":
        cells = [(s, env) for env in TABLE1_ENVS for s in SETTINGS]
    else:
        cells = [(reuse_setting(v, k), env) for env in REUSE_ENVS for v in REUSE_VARIANTS
                 for k in REUSE_EPOCHS]
    return [(setting, env, seed) for seed in TABLE1_SEEDS for setting, env in cells]


# --- Scores, normalisation and the bootstrap ---

LAST_EPISODES = 100
"""a run's score: the mean return of its last 100 episodes (arXiv:1707.06347, section 6.1)"""
BIN = 10_000
"""environment steps per bin of the compact learning curves"""
RESAMPLES = 10_000


def run_score(returns: np.ndarray) -> float:
    """The mean of the last LAST_EPISODES returns (all of them, where fewer ended)."""
    return float(np.mean(returns[-LAST_EPISODES:]))


def normalise(score: float, random: float, best: float) -> float:
    """0 for the random policy, 1 for the best setting's mean score on that task."""
    return (score - random) / (best - random)


def table1_scores(scores: dict[tuple[str, str], list[float]], random: dict[str, float],
                  settings=PPO_SETTINGS, resamples: int = RESAMPLES, rng_seed: int = 0
                  ) -> dict[str, tuple[float, float, float, int]]:
    """{setting: (figure, low, high, runs)} from scores {(setting, env): [the score of each
    seed]} and the random policy's mean {env: score}.

    Per env the best of `settings` (its mean over its seeds) scores 1: a setting outside them
    (trpo) is normalised with the same constants. A setting's figure is the mean of all its
    normalised runs; its 95 % interval the percentile bootstrap that resamples, `resamples`
    times, the seeds within each env, with replacement, the constants held fixed. An env whose
    best is not above the random policy has no scale and is left out, with a warning."""
    envs = sorted({env for _, env in scores})
    best = {env: max(np.mean(scores[s, env]) for s in settings if (s, env) in scores)
            for env in envs if any((s, env) in scores for s in settings)}
    for env in [env for env in best if best[env] <= random[env]]:
        # 0 and 1 would meet or swap places: the task has no scale yet, so it is left out
        print(f"claims: {env} left out of Table 1: its best setting so far, {best[env]:.6g}, "
              f"is not above the random policy's {random[env]:.6g}", file=sys.stderr)
        del best[env]
    rng = np.random.default_rng(rng_seed)
    table = {}
    for setting in dict.fromkeys(s for s, _ in scores):
        groups = [np.array([normalise(x, random[env], best[env]) for x in scores[setting, env]])
                  for env in envs if (setting, env) in scores and env in best]
        if not groups:
            continue
        runs = np.concatenate(groups)
        # each resample: per env, as many seeds as it has, drawn with replacement; then the mean
        draws = np.concatenate([g[rng.integers(len(g), size=(resamples, len(g)))]
                                for g in groups], axis=1)
        low, high = np.percentile(draws.mean(axis=1), [2.5, 97.5])
        table[setting] = (float(runs.mean()), float(low), float(high), len(runs))
    return table


# --- The random policy ---

def random_policy(env_id: str, episodes: int = LAST_EPISODES, seed: int = 0) -> tuple[float,
                                                                                        float]:
    """Mean and std of the return of uniform random actions over `episodes` episodes."""
    import gymnasium as gym
    env = gym.make(env_id)
    env.action_space.seed(seed)
    returns = []
    for episode in range(episodes):
        env.reset(seed=seed + episode)
        total, ended = 0.0, False
        while not ended:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total += float(reward)
            ended = terminated or truncated
        returns.append(total)
    env.close()
    return float(np.mean(returns)), float(np.std(returns))


# --- One finished run, compact ---

RUN_COLUMNS = ["setting", "env", "seed", "script", "steps", "diverged_at", "episodes", "score",
               "kl_median", "kl_max", "ratio_dev_median", "ratio_dev_max", "updates",
               "full_steps", "backtracked", "refused", "backtracks_mean", "backtracks_max",
               "accepted_kl_max", "max_kl"]
"""runs.csv: ratio_dev is each update's largest |r_t - 1| (ppo scripts); the line search's
columns (trpo): updates whose full step was accepted, that backtracked, that were refused;
the mean and largest backtracking exponent k (the step α^k x) among those that backtracked;
the largest KL of an accepted step, and δ"""


def compact_run(setting: str, env_id: str, seed: int, run_dir: Path
                ) -> tuple[dict[str, str], list[tuple[int, int, float]]]:
    """The runs.csv row and the binned curve [(bin end, episodes, mean return)] of a run."""
    import plot
    config = json.loads((run_dir / "config.json").read_text())
    episodes = plot.read_csv(run_dir / "episodes.csv")
    updates = plot.read_csv(run_dir / "updates.csv")
    steps, returns = episodes["global_step"], episodes["episodic_return"]
    ends = np.ceil(steps / BIN).astype(int) * BIN
    curve = [(int(end), int((ends == end).sum()), float(returns[ends == end].mean()))
             for end in np.unique(ends)]
    kl = updates["kl"]
    row = {"setting": setting, "env": env_id, "seed": str(seed),
           "script": setting_command(setting)[0], "steps": str(config.get("steps_run", "")),
           "diverged_at": str(config.get("diverged") or ""),
           "episodes": str(len(returns)),
           "score": f"{run_score(returns):.6g}" if len(returns) else ""}
    if len(kl):  # none where the run stopped on a non-finite loss at its first update
        row.update(kl_median=f"{np.median(kl):.6g}", kl_max=f"{kl.max():.6g}")
    if "max_ratio_dev" in updates and len(kl):
        dev = updates["max_ratio_dev"]
        row.update(ratio_dev_median=f"{np.median(dev):.6g}", ratio_dev_max=f"{dev.max():.6g}")
    if "accepted" in updates and len(kl):
        accepted, k = updates["accepted"] == 1, updates["backtracks"]
        back = accepted & (k > 0)
        row.update(updates=str(len(k)), full_steps=str(int((accepted & (k == 0)).sum())),
                   backtracked=str(int(back.sum())), refused=str(int((~accepted).sum())),
                   backtracks_mean=f"{k[back].mean():.3g}" if back.any() else "",
                   backtracks_max=str(int(k[back].max())) if back.any() else "",
                   accepted_kl_max=f"{kl[accepted].max():.6g}" if accepted.any() else "",
                   max_kl=str(config["max_kl"]))
    return {c: row.get(c, "") for c in RUN_COLUMNS}, curve


def write_rows(path: Path, columns: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


# --- The summary: runs.csv, the tables and the figures ---

def summarise(found: dict[tuple[str, str, int], Path], out: Path) -> None:
    """Merge the finished runs {(setting, env, seed): run folder} into <out>/runs.csv and
    <out>/curves/, then write the tables and figures of both grids from runs.csv."""
    out.mkdir(parents=True, exist_ok=True)
    random_csv = out / "random.csv"
    if not random_csv.exists():
        write_rows(random_csv, ["env", "episodes", "mean_return", "std"],
                   [{"env": env, "episodes": LAST_EPISODES,
                     **dict(zip(("mean_return", "std"), map("{:.6g}".format,
                                                            random_policy(env))))}
                    for env in TABLE1_ENVS])
    random = {r["env"]: float(r["mean_return"]) for r in read_rows(random_csv)}
    rows = {(r["setting"], r["env"], int(r["seed"])): r for r in read_rows(out / "runs.csv")}
    for (setting, env_id, seed), run_dir in found.items():
        rows[setting, env_id, seed], curve = compact_run(setting, env_id, seed, run_dir)
        (out / "curves" / env_id).mkdir(parents=True, exist_ok=True)
        write_rows(out / "curves" / env_id / f"{setting}__{seed}.csv",
                   ["step", "episodes", "mean_return"],
                   [dict(zip(("step", "episodes", "mean_return"), (s, n, f"{m:.6g}")))
                    for s, n, m in curve])
    order = {}  # Table 1's order, then the reuse grid's own runs; by task, seed, setting
    for grid in ("table1", "reuse"):
        for run in sorted(grid_runs(grid), key=lambda run: (TABLE1_ENVS.index(run[1]), run[2])):
            order.setdefault(run, len(order))
    merged = sorted(rows.values(), key=lambda r: order.get(
        (r["setting"], r["env"], int(r["seed"])), len(order)))
    write_rows(out / "runs.csv", RUN_COLUMNS, merged)
    written = [out / "runs.csv", *write_tables(merged, random, out)]
    print(f"claims: {len(found)} finished run(s) merged, {len(merged)} in {out / 'runs.csv'}; "
          + ", ".join(p.name for p in written[1:]))


def write_tables(rows: list[dict[str, str]], random: dict[str, float], out: Path) -> list[Path]:
    """table1.csv, per_task.csv, reuse.csv, line_search.csv, their markdown (tables.md) and the
    two figures."""
    scores: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        if r["setting"] in SETTINGS and r["score"]:  # no score: no episode ended
            scores.setdefault((r["setting"], r["env"]), []).append(float(r["score"]))
    table = table1_scores(scores, random)
    diverged = {s: sum(1 for r in rows if r["setting"] == s and r["diverged_at"])
                for s in SETTINGS}
    table1 = [{"setting": s, "script": SETTINGS[s][0], "runs": table[s][3],
               "diverged": diverged[s], "score": f"{table[s][0]:.3f}",
               "low": f"{table[s][1]:.3f}", "high": f"{table[s][2]:.3f}",
               "paper": PAPER.get(s, "")} for s in SETTINGS if s in table]
    write_rows(out / "table1.csv", ["setting", "script", "runs", "diverged", "score", "low",
                                    "high", "paper"], table1)
    per_task = [{"setting": s, **{env: "/".join(f"{x:.0f}" for x in scores[s, env])
                                  if (s, env) in scores else "" for env in TABLE1_ENVS}}
                for s in SETTINGS]
    per_task.append({"setting": "random", **{env: f"{random[env]:.0f}" for env in TABLE1_ENVS}})
    write_rows(out / "per_task.csv", ["setting", *TABLE1_ENVS], per_task)

    reuse = []
    for env in REUSE_ENVS:
        for variant in REUSE_VARIANTS:
            for k in REUSE_EPOCHS:
                runs = [r for r in rows if r["env"] == env
                        and r["setting"] == reuse_setting(variant, k)
                        and all(r[c] for c in ("score", "kl_median", "ratio_dev_median"))]
                if runs:
                    column = {c: np.array([float(r[c]) for r in runs])
                              for c in ("score", "kl_median", "ratio_dev_median")}
                    reuse.append({"env": env, "variant": variant, "epochs": k, "runs": len(runs),
                                  "diverged": sum(1 for r in runs if r["diverged_at"]),
                                  "score_mean": f"{column['score'].mean():.0f}",
                                  "score_std": f"{column['score'].std(ddof=1):.0f}"
                                  if len(runs) > 1 else "",
                                  **{c: f"{column[c].mean():.3g}"
                                     for c in ("kl_median", "ratio_dev_median")}})
    write_rows(out / "reuse.csv", ["env", "variant", "epochs", "runs", "diverged", "score_mean",
                                   "score_std", "kl_median", "ratio_dev_median"], reuse)

    search = []
    for env in TABLE1_ENVS:
        runs = [r for r in rows if r["env"] == env and r["setting"] == "trpo"]
        if runs:
            total = sum(int(r["updates"]) for r in runs)
            count = {c: sum(int(r[c]) for r in runs)
                     for c in ("full_steps", "backtracked", "refused")}
            k_sum = sum(float(r["backtracks_mean"]) * int(r["backtracked"]) for r in runs
                        if r["backtracks_mean"])
            search.append({"env": env, "runs": len(runs), "updates": total,
                           **{c: f"{count[c] / total:.3f}" for c in count},
                           "backtracks_mean": f"{k_sum / count['backtracked']:.2f}"
                           if count["backtracked"] else "",
                           "backtracks_max": max((int(r["backtracks_max"]) for r in runs
                                                  if r["backtracks_max"]), default=""),
                           "accepted_kl_max": max((float(r["accepted_kl_max"]) for r in runs
                                                   if r["accepted_kl_max"]), default=""),
                           "max_kl": runs[0]["max_kl"]})
    write_rows(out / "line_search.csv", ["env", "runs", "updates", "full_steps", "backtracked",
                                         "refused", "backtracks_mean", "backtracks_max",
                                         "accepted_kl_max", "max_kl"], search)
    (out / "tables.md").write_text(markdown(out))
    return [out / name for name in ("table1.csv", "per_task.csv", "reuse.csv",
                                    "line_search.csv", "tables.md")] + draw(table1, reuse, out)


def markdown(out: Path) -> str:
    """RESULTS.md's tables of the claims, rendered from the CSVs in out: Table 1, the raw scores
    per task, batch reuse and TRPO's line search, separated by blank lines (tables.md)."""
    def number(x: str) -> str:  # 1,234 and a true minus sign
        return f"{float(x):,.0f}".replace("-", "−")

    def figure(x: str, digits: str) -> str:
        return format(float(x), digits).replace("-", "−")

    note = {"no_clip": " (`ppo_kl.py --no-adaptive --beta-init 0`)",
            "trpo": " (normalised with the PPO rows' constants)"}
    tables = [["|setting|runs|score [95 %]|paper|", "|-|-|-|-|"]]
    for r in read_rows(out / "table1.csv"):
        interval = ("" if r["low"] == r["high"]
                    else f" [{figure(r['low'], '.2f')}, {figure(r['high'], '.2f')}]")
        diverged = f" ({r['diverged']} diverged)" if r["diverged"] not in ("", "0") else ""
        paper = figure(r["paper"], ".2f") if r["paper"] else "—"
        tables[-1].append(f"|{row_name(r['setting'])}{note.get(r['setting'], '')}|{r['runs']}"
                          f"{diverged}|{figure(r['score'], '.2f')}{interval}|{paper}|")

    per_task = read_rows(out / "per_task.csv")
    tables.append(["|setting|" + "|".join(TABLE1_ENVS) + "|", "|-" * (len(TABLE1_ENVS) + 1) + "|"])
    for r in per_task:
        name = "random policy" if r["setting"] == "random" else row_name(r["setting"])
        tables[-1].append(f"|{name}|" + "|".join("/".join(map(number, r[env].split("/")))
                                                   if r[env] else "" for env in TABLE1_ENVS) + "|")

    reuse = {(r["env"], r["variant"], r["epochs"]): r for r in read_rows(out / "reuse.csv")}
    tables.append(["|task|K|score: clip ε = 0.2 / none|median exact KL: clip / none|"
                   "median largest \\|r_t − 1\\|: clip / none|", "|-|-|-|-|-|"])
    for env in (env for env in TABLE1_ENVS if env in REUSE_ENVS):
        for k in REUSE_EPOCHS:
            pair = [reuse.get((env, variant, str(k))) for variant in REUSE_VARIANTS]
            cells = [" / ".join(render(r[column]) if r else "…" for r in pair)
                     for column, render in (("score_mean", number),
                                            ("kl_median", lambda x: figure(x, ".2g")),
                                            ("ratio_dev_median", lambda x: figure(x, ".3g")))]
            tables[-1].append(f"|{env}|{k}|" + "|".join(cells) + "|")

    tables.append(["|task|runs|updates|full step accepted|backtracked (mean, max backtracks)|"
                   "refused|largest accepted KL|δ|", "|-|-|-|-|-|-|-|-|"])
    for r in read_rows(out / "line_search.csv"):
        backtracked = f"{float(r['backtracked']):.1%}"
        if r["backtracks_mean"]:
            backtracked += f" ({float(r['backtracks_mean']):.1f}, {r['backtracks_max']})"
        tables[-1].append(f"|{r['env']}|{r['runs']}|{r['updates']}|{float(r['full_steps']):.1%}|"
                          f"{backtracked}|{float(r['refused']):.1%}|{r['accepted_kl_max']}|"
                          f"{r['max_kl']}|")
    return "\n\n".join("\n".join(table) for table in tables) + "\n"


def row_name(setting: str) -> str:
    """A setting's row name in the figures: clip_0.2 -> clip ε = 0.2, and so on."""
    for prefix, name in (("clip_", "clip ε = "), ("adaptive_kl_", "adaptive KL, d_targ = "),
                         ("fixed_kl_", "fixed KL, β = ")):
        if setting.startswith(prefix):
            return name + setting[len(prefix):]
    return {"no_clip": "no clip or penalty", "trpo": "TRPO, δ = 0.01"}.get(setting, setting)


def draw(table1: list[dict], reuse: list[dict], out: Path) -> list[Path]:
    """table1.png: each setting's figure with its interval, the paper's beside it; reuse.png:
    score, KL and largest |r_t - 1| against K, one line per variant, one row per env."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figures = []
    if table1:
        fig, ax = plt.subplots(figsize=(7, 5))
        y = np.arange(len(table1))[::-1]
        score = np.array([float(r["score"]) for r in table1])
        err = [score - [float(r["low"]) for r in table1], [float(r["high"]) for r in table1]
               - score]
        ax.barh(y + 0.2, score, height=0.4, xerr=err, color="tab:green", capsize=3,
                label="here ({} runs each)".format("-".join(sorted(
                    {str(r["runs"]) for r in table1}, key=int))))
        paper = [r["paper"] if r["paper"] != "" else np.nan for r in table1]
        ax.barh(y - 0.2, np.array(paper, dtype=float), height=0.4, color="tab:gray",
                label="arXiv:1707.06347, Table 1")
        ax.set_yticks(y, [row_name(r["setting"]) for r in table1])
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_xlabel("normalised score (random policy 0, best PPO setting 1), 95 % interval")
        ax.set_title("The PPO paper's Table 1, re-run")
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "table1.png", dpi=110)
        plt.close(fig)
        figures.append(out / "table1.png")
    if reuse:
        envs = [env for env in REUSE_ENVS if any(r["env"] == env for r in reuse)]
        fig, axes = plt.subplots(len(envs), 3, figsize=(12, 3.4 * len(envs)), squeeze=False)
        for row, env in zip(axes, envs):
            for variant, label in REUSE_VARIANTS.items():
                points = [r for r in reuse if r["env"] == env and r["variant"] == variant]
                k = [r["epochs"] for r in points]
                for ax, column in zip(row, ("score_mean", "kl_median", "ratio_dev_median")):
                    ax.plot(k, [float(r[column]) for r in points], "o-", label=label)
            titles = ("score (last 100 episodes)", "median exact KL of an update",
                      r"median of the update's largest $|r_t - 1|$")
            for ax, title in zip(row, titles):
                ax.set_xscale("log")
                ax.set_xticks(REUSE_EPOCHS, [str(k) for k in REUSE_EPOCHS])
                ax.set_xlabel("update epochs K")
                ax.set_title(f"{env}: {title}", fontsize=9)
            row[1].set_yscale("log")
            row[2].set_yscale("log")
            row[0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "reuse.png", dpi=110)
        plt.close(fig)
        figures.append(out / "reuse.png")
    return figures
