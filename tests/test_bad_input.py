"""What a user can type by mistake, on every algorithm script: each bad value ends with one
line that names it and exit status 2, before anything is made; Ctrl-C ends with one line and
status 130, keeping the rows and the model; the output says what a run really did."""

import json
import math
import re
import signal
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

from conftest import REPO_ROOT

# check_args on values at the edges of their domains (accepted: None) and past them (rejected:
# the start of the error); "all" rows hold for every script
CHECK_ARGS_TABLE = [
    ("all", dict(gamma=1.0), None),
    ("all", dict(gae_lambda=0.0), None),
    ("all", dict(gae_lambda=1.0), None),
    ("all", dict(seed=0), None),
    ("all", dict(seed=2**32 - 1), None),
    ("all", dict(seed=-1), "--seed -1:"),
    ("all", dict(seed=2**32), "--seed 4294967296:"),
    ("all", dict(learning_rate=math.inf), "--learning-rate inf:"),
    ("all", dict(gamma=math.nan), "--gamma nan:"),
    ("all", dict(log_std_init=-math.inf), "--log-std-init -inf:"),
    ("all", dict(total_timesteps=100), "--total-timesteps 100:"),
    ("ppo_clip", dict(vf_coef=0.0, ent_coef=0.0), None),
    ("ppo_clip", dict(vf_coef=math.inf), "--vf-coef inf:"),
    ("ppo_clip", dict(ent_coef=math.inf), "--ent-coef inf:"),
    ("ppo_clip", dict(ent_coef=math.nan), "--ent-coef nan:"),
    ("ppo_clip", dict(clip_coef=math.inf), "--clip-coef inf:"),
    ("ppo_clip", dict(max_grad_norm=None), None),  # no gradient clipping, as in ppo1
    ("ppo_clip", dict(max_grad_norm=0.0), "--max-grad-norm 0.0:"),
    ("ppo_kl", dict(max_grad_norm=math.nan), "--max-grad-norm nan:"),
    ("ppo_kl", dict(vf_coef=math.inf), "--vf-coef inf:"),
    ("ppo_kl", dict(beta_init=0.0, adaptive=False), None),  # the plain surrogate, an ablation
    ("ppo_kl", dict(beta_init=0.0), "--beta-init 0.0:"),  # adapting 0 would keep it 0
    ("ppo_kl", dict(beta_init=math.inf), "--beta-init inf:"),
    ("ppo_kl", dict(beta_factor=1.0), "--beta-factor 1.0:"),
    ("trpo", dict(cg_damping=0.0), None),  # the undamped Fisher matrix of the paper
    ("trpo", dict(max_kl=math.inf), "--max-kl inf:"),
    ("trpo", dict(cg_damping=math.inf), "--cg-damping inf:"),
    ("vpg", dict(vf_learning_rate=math.inf), "--vf-learning-rate inf:"),
]


@pytest.mark.parametrize("script_name, flags, error", CHECK_ARGS_TABLE)
def test_check_args_accepts_the_edges_and_rejects_past_them(module, script_name, flags, error):
    if script_name not in ("all", module.__name__):
        pytest.skip(f"a row of {script_name}")
    args = module.Args(**flags)
    if error is None:
        module.check_args(args)
    else:
        with pytest.raises(module.BadInput) as raised:
            module.check_args(args)
        assert str(raised.value).startswith(error), raised.value


def test_a_bad_flag_names_only_itself(run_cli, assert_clean_error):
    """One rule per flag: a NaN entropy weight is not blamed on its neighbours."""
    line = assert_clean_error(run_cli("ppo_clip.py", "--ent-coef", "nan"))
    assert "--ent-coef nan" in line
    assert "--vf-coef" not in line and "--max-grad-norm" not in line


def test_train_from_python_raises_value_error_before_making_anything(module, tmp_path):
    runs_dir = tmp_path / "runs"
    with pytest.raises(ValueError, match="--total-timesteps 100"):
        module.train(module.Args(total_timesteps=100, runs_dir=str(runs_dir)))
    assert not runs_dir.exists()


def test_seed_out_of_range_exits_2_in_training_and_evaluation(script, short_run, module,
                                                              assert_bad_flag, run_cli,
                                                              assert_clean_error):
    assert_bad_flag(script, ["--seed", "-1"], "--seed -1")
    checkpoint = short_run(module, "cartpole")[1] / "model.pt"
    line = assert_clean_error(run_cli(script, "--eval-checkpoint", checkpoint, "--seed",
                                      2**32))
    assert "--seed 4294967296" in line


def test_dangling_runs_dir_link_exits_2_instead_of_hanging(script, run_script,
                                                           assert_clean_error, tmp_path):
    """A runs folder that is a link to nowhere (an unmounted disk) used to loop for ever."""
    (tmp_path / "runs").symlink_to(tmp_path / "unmounted")
    line = assert_clean_error(run_script(script, "--runs-dir", "runs", timeout=60))
    assert "--runs-dir 'runs'" in line


class RankTwoActions(gym.Env):
    """A Box action space of shape (2, 2), which the flat Gaussian head cannot produce."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (3,))
    action_space = gym.spaces.Box(-1.0, 1.0, (2, 2))

    def reset(self, *, seed=None, options=None):
        return np.zeros(3, dtype=np.float32), {}

    def step(self, action):
        return np.zeros(3, dtype=np.float32), 0.0, True, False, {}


def test_a_box_action_space_of_rank_two_is_refused(script, assert_bad_flag):
    gym.register("RankTwoActions-v0", entry_point=RankTwoActions, max_episode_steps=10)
    try:
        assert_bad_flag(script, ["--env-id", "RankTwoActions-v0"], "action space")
    finally:
        gym.registry.pop("RankTwoActions-v0")


# --- Ctrl-C ---

def test_ctrl_c_ends_with_one_line_status_130_whole_rows_and_the_model(module, script,
                                                                       tmp_path, read_csv):
    defaults = module.Args()
    command = [sys.executable, str(REPO_ROOT / script), "--save-model", "--runs-dir", "runs",
               "--total-timesteps", 100 * defaults.num_envs * defaults.num_steps]
    # a shell's background job inherits SIGINT ignored, and Python then never raises
    # KeyboardInterrupt: the child gets the default disposition back, whoever started pytest
    process = subprocess.Popen(list(map(str, command)), cwd=tmp_path, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        # the first progress line comes after two updates: training is under way
        while not process.stdout.readline().startswith("step "):
            assert process.poll() is None, process.stderr.read()
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    (line,) = [line for line in stderr.splitlines() if line.strip()]
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert line.startswith(f"{script}: stopped by Ctrl-C:") and str(run_dir.name) in line, line
    for name in ("episodes.csv", "updates.csv"):
        assert (run_dir / name).read_text().endswith("\n")  # no row cut in half
        read_csv(run_dir / name)  # every row as long as the header
    updates = read_csv(run_dir / "updates.csv")
    assert 2 <= len(updates["iteration"]) < 100
    config = json.loads((run_dir / "config.json").read_text())
    assert config["steps_run"] >= updates["global_step"][-1]
    checkpoint = torch.load(run_dir / "model.pt", weights_only=True)
    module.Actor(4, gym.spaces.Discrete(2), defaults.hidden_size).load_state_dict(
        checkpoint["actor"])


# --- what the output says ---

def run_output(run_cli, script: str, *flags) -> tuple[list[str], str]:
    result = run_cli(script, *flags)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines(), result.stderr


def test_a_budget_of_no_whole_batch_says_so_and_records_the_steps_run(module, script, run_cli,
                                                                        tmp_path):
    defaults = module.Args()
    batch = defaults.num_envs * defaults.num_steps
    lines, _ = run_output(run_cli, script, "--total-timesteps", 3 * batch + 7)
    assert f"{3 * batch:,} steps" in lines[0], lines[0]
    assert f"--total-timesteps {3 * batch + 7:,} rounded down" in lines[0], lines[0]
    (run_dir,) = (tmp_path / "runs").iterdir()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["total_timesteps"] == 3 * batch + 7  # as given: the benchmark compares it
    assert config["steps_run"] == 3 * batch


def test_progress_before_any_episode_and_the_end_say_so(script, run_cli):
    # one Pendulum episode takes 200 steps: 128 steps finish none
    lines, _ = run_output(run_cli, script, "--env-id", "Pendulum-v1", "--num-envs", 1,
                          "--num-steps", 128, "--total-timesteps", 128)
    assert "nan" not in "\n".join(lines)
    assert "no episode finished yet" in lines[-2], lines
    assert re.match(r"done: no episode finished yet after 128 steps in \d+ s; run folder: ",
                    lines[-1]), lines[-1]


def test_progress_lines_show_the_kl_to_three_significant_digits(script, run_cli, tmp_path,
                                                                read_csv):
    lines, _ = run_output(run_cli, script, "--total-timesteps", 4096, "--num-envs", 4,
                          "--num-steps", 64)
    (run_dir,) = (tmp_path / "runs").iterdir()
    kl = dict(zip(read_csv(run_dir / "updates.csv")["global_step"],
                  read_csv(run_dir / "updates.csv")["kl"]))
    shown = {int(m[1].replace(",", "")): float(m[2]) for line in lines
             if (m := re.match(r"step ([\d,]+)/.* \| kl (\S+) \|", line))}
    assert len(shown) == 16
    for step, value in shown.items():
        assert value == pytest.approx(kl[step], rel=5e-3, abs=1e-12), (step, value, kl[step])
    assert re.match(r"done: return \S+ \(last 20 episodes\) after 4,096 steps in \d+ s",
                    lines[-1]), lines[-1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the claim is about a machine without GPU")
def test_cuda_without_a_gpu_says_so_and_records_the_cpu(script, run_cli, tmp_path):
    lines, _ = run_output(run_cli, script, "--cuda", "--total-timesteps", 512)
    assert "--cuda found no GPU" in lines[0], lines[0]
    (run_dir,) = (tmp_path / "runs").iterdir()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["cuda"] is True and config["device"] == "cpu"


def test_evaluation_says_which_settings_come_from_the_checkpoint(script, module, short_run,
                                                                 run_cli):
    checkpoint = short_run(module, "cartpole")[1] / "model.pt"
    lines, stderr = run_output(run_cli, script, "--eval-checkpoint", checkpoint, "--env-id",
                               "Acrobot-v1", "--hidden-size", 8, "--normalize",
                               "--eval-episodes", 1)
    assert stderr == ""
    assert lines[0].startswith("from the checkpoint: --env-id CartPole-v1 --hidden-size 64 "
                               "--no-normalize"), lines
    assert lines[-1].startswith("CartPole-v1: 1 episodes, return"), lines
