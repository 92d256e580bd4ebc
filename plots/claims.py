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
Rows of runs.csv and curve files already there are kept and replaced by a newer finished run of
the same (setting, env, seed), so that a summary of a partial runs folder never loses a row.
"""

import csv
import json
import math
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
