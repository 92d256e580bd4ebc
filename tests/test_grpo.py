"""grpo.py: the group advantage, the k3 KL estimate and the GRPO loss checked one by one, then
the group rollout and the run end to end.

Each check compares against something written independently here (a formula written out with
Python loops, a Monte-Carlo estimate, ppo_clip's L^CLIP, a sum over episodes), never the code
against itself. The pieces grpo.py shares with ppo_clip.py are the same text (checked in
test_end_to_end.py), so their own tests cover them.
"""

import copy
import dataclasses
import importlib.util
import json
import re

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions import kl_divergence

import grpo
import ppo_clip
from conftest import advantages_by_loops
from grpo import group_advantages, grpo_loss, kl_k3

# a small run with unequal episodes: CartPole's early episodes last 8 to 50 steps, cut at 50
SMALL = dict(num_groups=3, group_size=4, max_episode_steps=50, total_timesteps=1200,
             num_minibatches=2, update_epochs=2, save_model=True)
SMALL_PENDULUM = dict(env_id="Pendulum-v1", num_groups=2, group_size=2, max_episode_steps=40,
                      total_timesteps=480, learning_rate=3e-4, save_model=True)
UPDATE_COLUMNS = ["global_step", "iteration", "sps", "policy_loss", "entropy", "kl", "kl_ref",
                  "zero_signal", "clipfrac", "groups_drawn"]


# --- the group advantage [arXiv:2402.03300 §4.1.2] ---

@pytest.mark.parametrize("scale_by_std", [True, False])
def test_group_advantages_match_the_formula_written_per_group(scale_by_std):
    generator = torch.Generator().manual_seed(0)
    returns = 100 * torch.rand(5, 6, generator=generator, dtype=torch.float64)
    advantages = group_advantages(returns, scale_by_std)
    assert advantages.shape == returns.shape
    expected = torch.tensor(advantages_by_loops(returns.tolist(), scale_by_std),
                            dtype=torch.float64)
    torch.testing.assert_close(advantages, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("scale_by_std", [True, False])
def test_group_advantages_are_centred_per_group_and_keep_the_order(scale_by_std):
    generator = torch.Generator().manual_seed(1)
    returns = torch.randn(4, 8, generator=generator, dtype=torch.float64) * 30 + 200
    advantages = group_advantages(returns, scale_by_std)
    torch.testing.assert_close(advantages.mean(1), torch.zeros(4, dtype=torch.float64))
    # the best episode of a group gets the largest advantage, and so on down
    assert torch.equal(advantages.argsort(1), returns.argsort(1))
    if scale_by_std:  # scaled: a standard deviation of 1 in every group, whatever the spread
        torch.testing.assert_close(advantages.std(1), torch.ones(4, dtype=torch.float64))


def test_a_group_of_equal_returns_carries_no_signal():
    returns = torch.tensor([[500.0] * 8, [21.0, 35.0, 9.0, 50.0, 12.0, 17.0, 30.0, 44.0]])
    for scale_by_std in (True, False):
        advantages = group_advantages(returns, scale_by_std)
        assert torch.all(advantages[0] == 0)
        assert torch.all(advantages[1] != 0)
    # the groups do not mix: the second group's advantages ignore the first group's returns
    alone = group_advantages(returns[1:])
    torch.testing.assert_close(group_advantages(returns)[1:], alone)


# --- the k3 estimate of KL(pi_theta || pi_ref) [arXiv:2402.03300 eq. 4] ---

def test_kl_k3_is_the_formula_non_negative_and_zero_where_the_policies_agree():
    generator = torch.Generator().manual_seed(2)
    logp = torch.log(torch.rand(1000, generator=generator, dtype=torch.float64))
    logp_ref = torch.log(torch.rand(1000, generator=generator, dtype=torch.float64))
    p, p_ref = logp.exp(), logp_ref.exp()
    k3 = kl_k3(logp, logp_ref)
    assert k3.shape == logp.shape
    torch.testing.assert_close(k3, p_ref / p - torch.log(p_ref / p) - 1)
    assert torch.all(k3 >= 0)
    # equal, also for a nearly equal pair in float32, where exp(x) - x - 1 would round below 0
    assert torch.all(kl_k3(logp, logp) == 0)
    close = torch.linspace(-3.0, -2.0, 1001)
    assert torch.all(kl_k3(close, close + 1e-6) >= 0)


def test_kl_k3_averages_to_the_closed_form_kl_over_samples_of_pi_theta(make_actor, moved_copy,
                                                                        head):
    ref_actor, obs = make_actor(grpo, head, batch=16, dtype=torch.float64)
    actor = moved_copy(ref_actor, scale=0.3)
    n = 4000
    torch.manual_seed(3)
    with torch.no_grad():
        dist, ref_dist = actor(obs), ref_actor(obs)
        actions = dist.sample((n,))  # [n, batch, ...], a ~ pi_theta
        k3 = kl_k3(dist.log_prob(actions), ref_dist.log_prob(actions))  # [n, batch]
        kl = kl_divergence(dist, ref_dist).mean().item()  # KL(pi_theta || pi_ref)
    standard_error = (k3.var(dim=0).mean() / k3.numel()).sqrt().item()
    assert kl > 20 * standard_error  # far enough apart for the comparison to mean something
    assert abs(k3.mean().item() - kl) < 4 * standard_error, (k3.mean().item(), kl)


def test_kl_k3_gradient_vanishes_where_pi_theta_is_pi_ref(make_actor, moved_copy, head):
    actor, obs = make_actor(grpo, head, dtype=torch.float64)
    with torch.no_grad():
        dist = actor(obs)
        actions = dist.sample()
        logp_ref = dist.log_prob(actions)  # pi_ref: the same parameters
    params = list(actor.parameters())
    gradient = torch.autograd.grad(kl_k3(actor(obs).log_prob(actions), logp_ref).mean(), params)
    assert all(torch.all(g.abs() < 1e-12) for g in gradient)
    # and away from pi_ref it pulls (a check that the zero above is not trivial)
    ref_actor = moved_copy(actor)
    with torch.no_grad():
        logp_ref = ref_actor(obs).log_prob(actions)
    gradient = torch.autograd.grad(kl_k3(actor(obs).log_prob(actions), logp_ref).mean(), params)
    assert any(g.abs().max() > 1e-3 for g in gradient)


# --- the GRPO loss [arXiv:2402.03300 eq. 3] ---

@pytest.mark.parametrize("clip_coef", [0.1, 0.2, 0.3])
def test_grpo_loss_at_beta_zero_and_equal_lengths_is_ppo_clips_l_clip(
        random_ratios_and_advantages, clip_coef):
    ratio, advantages = random_ratios_and_advantages(seed=4, n=200)
    ratio.requires_grad_(True)
    weights = torch.ones_like(advantages)  # B / (N |o_i|) = 1 when every |o_i| is B / N
    kl_ref = torch.rand(200, dtype=torch.float64)  # present, but weighed by beta = 0
    loss = grpo_loss(ratio, advantages, weights, kl_ref, clip_coef, beta=0.0)
    (gradient,) = torch.autograd.grad(loss, ratio)
    reference = ppo_clip.clipped_surrogate_loss(ratio, advantages, clip_coef)
    (expected,) = torch.autograd.grad(reference, ratio)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-12)
    torch.testing.assert_close(gradient, expected, rtol=1e-12, atol=1e-15)
    assert (gradient != 0).any() and (gradient == 0).any()  # both sides of the clip present


def test_grpo_loss_counts_every_episode_equally_whatever_its_length():
    """Episodes of 1, 3 and 8 steps; step t of episode i carries the weight B / (N |o_i|) that
    train gives it. The loss must be minus (1/N) sum_i (1/|o_i|) sum_t [term_t - beta k_t],
    the per-episode means averaged, summed here one episode at a time."""
    generator = torch.Generator().manual_seed(5)
    lengths = [1, 3, 8]
    N, B = len(lengths), sum(lengths)
    episode = torch.tensor([i for i, length in enumerate(lengths) for _ in range(length)])
    episode_advantage = torch.tensor([1.5, -0.4, 0.7], dtype=torch.float64)
    ratio = torch.exp(0.3 * torch.randn(B, generator=generator, dtype=torch.float64))
    kl_ref = torch.rand(B, generator=generator, dtype=torch.float64)
    weights = B / (N * torch.tensor(lengths, dtype=torch.float64))[episode]
    clip_coef, beta = 0.2, 0.1
    loss = grpo_loss(ratio, episode_advantage[episode], weights, kl_ref, clip_coef, beta)

    objective, t = 0.0, 0
    for i, length in enumerate(lengths):
        a = episode_advantage[i].item()
        terms = []
        for _ in range(length):
            r = ratio[t].item()
            terms.append(min(r * a, min(max(r, 1 - clip_coef), 1 + clip_coef) * a)
                         - beta * kl_ref[t].item())
            t += 1
        objective += sum(terms) / length / N
    assert loss.item() == pytest.approx(-objective, rel=1e-12)
    # the 8-step episode weighs no more than the 1-step one: at r = 1, without the KL, the
    # objective is the plain mean of the episodes' advantages
    ones = torch.ones(B, dtype=torch.float64)
    loss = grpo_loss(ones, episode_advantage[episode], weights, 0 * ones, clip_coef, beta)
    assert loss.item() == pytest.approx(-episode_advantage.mean().item(), rel=1e-12)


def test_minibatch_losses_weighted_by_their_share_add_up_to_the_batch_loss():
    """What the weights B / (N |o_i|) and the minibatch mean promise: over the minibatches of an
    epoch (a random split of the batch), sum of (m / B) loss_minibatch is the full-batch loss."""
    generator = torch.Generator().manual_seed(6)
    lengths = torch.tensor([2, 5, 9, 4])
    episode = torch.repeat_interleave(torch.arange(4), lengths)
    B, N = len(episode), len(lengths)
    ratio = torch.exp(0.3 * torch.randn(B, generator=generator, dtype=torch.float64))
    advantages = torch.randn(N, generator=generator, dtype=torch.float64)[episode]
    kl_ref = torch.rand(B, generator=generator, dtype=torch.float64)
    weights = B / (N * lengths.double())[episode]
    full = grpo_loss(ratio, advantages, weights, kl_ref, 0.2, 0.05)
    total = 0.0
    for mb in torch.randperm(B, generator=generator).tensor_split(3):
        total += len(mb) / B * grpo_loss(ratio[mb], advantages[mb], weights[mb], kl_ref[mb],
                                         0.2, 0.05)
    assert total.item() == pytest.approx(full.item(), rel=1e-12)


# --- the group rollout, end to end ---

def test_the_envs_of_a_group_start_in_one_state_and_the_groups_differ(monkeypatch, tmp_path,
                                                                     read_csv):
    """Every env records the observation of each seeded reset (one per iteration); env p*G + g
    belongs to group p."""
    starts, make_env = [], grpo.make_env

    def recording_make_env(*args, **kwargs):
        def thunk():
            env = make_env(*args, **kwargs)()
            starts.append([])
            mine, reset = starts[-1], env.reset

            def recording_reset(*, seed=None, options=None):
                obs, info = reset(seed=seed, options=options)
                if seed is not None:  # the iteration's reset, not an autoreset
                    mine.append(obs.copy())
                return obs, info
            env.reset = recording_reset
            return env
        return thunk

    monkeypatch.setattr(grpo, "make_env", recording_make_env)
    args = grpo.Args(**SMALL, runs_dir=str(tmp_path))
    iterations = len(read_csv(grpo.train(args) / "updates.csv")["iteration"])
    P, G = args.num_groups, args.group_size
    obs = np.array(starts)  # [N, iterations, obs_dim]
    assert obs.shape[:2] == (P * G, iterations) and iterations >= 2
    for iteration in range(obs.shape[1]):
        groups = obs[:, iteration].reshape(P, G, -1)
        for p in range(P):
            assert np.all(groups[p] == groups[p, 0]), (iteration, p)  # identical start states
        firsts = groups[:, 0]
        assert len({tuple(first) for first in firsts}) == P  # one start state per group
    assert len({tuple(start) for start in obs[0]}) == obs.shape[1]  # new ones every iteration


def test_cartpole_return_improves(trained, read_csv):
    # default flags, seed 1: the mean of the first 10 episodes against the last 10. Measured
    # on the machine that wrote this (the run stops once 24,000 steps are passed, as one more
    # batch of 32 x 500 could pass 40,000): 11.6 -> 136.1; seeds 2-4 gain 146, 169, 122
    returns = read_csv(trained(grpo, total_timesteps=40_000)[1] / "episodes.csv")[
        "episodic_return"]
    first, last = returns[:10].mean(), returns[-10:].mean()
    assert last > first + 100, (first, last)


@pytest.mark.parametrize("flags", [SMALL, SMALL_PENDULUM], ids=["cartpole", "pendulum"])
def test_run_folder_has_the_documented_files_and_counts_only_real_steps(trained, read_csv,
                                                                       flags):
    args, run_dir = trained(grpo, **flags)
    config = json.loads((run_dir / "config.json").read_text())
    assert set(config) == {f.name for f in dataclasses.fields(args)} | {
        "versions", "device", "steps_run", "finished"}
    assert config["finished"] is True
    assert {k: config[k] for k in dataclasses.asdict(args)} == json.loads(
        json.dumps(dataclasses.asdict(args)))

    episodes = read_csv(run_dir / "episodes.csv")
    assert list(episodes) == ["global_step", "episodic_return", "episodic_length", "wall_time"]
    updates = read_csv(run_dir / "updates.csv")
    assert list(updates) == UPDATE_COLUMNS
    iterations = len(updates["iteration"])
    np.testing.assert_array_equal(updates["iteration"], np.arange(1, iterations + 1))
    # one episode per env per iteration, each at most T steps
    N, T = args.num_envs, args.max_episode_steps
    assert len(episodes["global_step"]) == iterations * N
    assert np.all((1 <= episodes["episodic_length"]) & (episodes["episodic_length"] <= T))
    # global_step counts the real steps: the sum of the lengths of the episodes so far, not
    # the steps of the envs that waited, masked, for the longest episode of the batch
    steps = np.cumsum(episodes["episodic_length"])[N - 1::N]
    np.testing.assert_array_equal(updates["global_step"], steps)
    assert config["steps_run"] == steps[-1]
    assert steps[-1] + N * T > args.total_timesteps  # no room for one more batch
    assert steps[-1] <= args.total_timesteps

    assert np.all(np.isfinite(updates["kl"]) & (updates["kl"] >= 0))
    assert np.all(np.isfinite(updates["kl_ref"]) & (updates["kl_ref"] >= 0))
    assert np.all((updates["clipfrac"] >= 0) & (updates["clipfrac"] <= 1))
    # a share of the P groups
    np.testing.assert_array_equal(updates["zero_signal"] * args.num_groups,
                                  np.round(updates["zero_signal"] * args.num_groups))
    if args.env_id == "Pendulum-v1":  # raw returns, each episode cut at T = 40 steps
        assert np.all(episodes["episodic_length"] == T)
        assert np.all((episodes["episodic_return"] <= 0)
                      & (episodes["episodic_return"] >= -16.3 * T))
    else:  # CartPole: a reward of 1 a step
        np.testing.assert_array_equal(episodes["episodic_return"], episodes["episodic_length"])
    assert (run_dir / "model.pt").is_file()


def test_train_weights_every_step_by_its_episodes_length(monkeypatch, tmp_path, read_csv):
    """The weights train passes to grpo_loss, read back: one epoch, one minibatch, so the call
    of iteration k sees the whole batch. Episode i's |o_i| steps each carry B / (N |o_i|)."""
    calls, loss = [], grpo.grpo_loss

    def recording_loss(ratio, advantages, weights, *rest):
        calls.append((weights.detach().clone(), advantages.detach().clone()))
        return loss(ratio, advantages, weights, *rest)

    monkeypatch.setattr(grpo, "grpo_loss", recording_loss)
    args = grpo.Args(**{**SMALL, "save_model": False, "num_minibatches": 1, "update_epochs": 1},
                     runs_dir=str(tmp_path))
    run_dir = grpo.train(args)
    episodes = read_csv(run_dir / "episodes.csv")
    N = args.num_envs
    assert len(calls) == len(episodes["global_step"]) // N
    for k, (weights, advantages) in enumerate(calls):
        lengths = episodes["episodic_length"][k * N:(k + 1) * N]  # in the order they ended
        B = int(lengths.sum())
        assert len(weights) == B and len(set(lengths)) > 1  # unequal lengths
        expected = np.concatenate([np.full(int(n), B / (N * n)) for n in lengths])
        np.testing.assert_allclose(np.sort(weights.numpy()), np.sort(expected), rtol=1e-6)
        assert weights.sum().item() == pytest.approx(B, rel=1e-5)  # sum over steps of w_t is 1
        # each group's advantages sum to zero over its episodes, one value per episode
        assert abs(float((weights * advantages).sum())) < 1e-3 * B


def test_no_length_norm_gives_every_step_the_same_weight(monkeypatch, tmp_path):
    calls, loss = [], grpo.grpo_loss

    def recording_loss(ratio, advantages, weights, *rest):
        calls.append(weights.detach().clone())
        return loss(ratio, advantages, weights, *rest)

    monkeypatch.setattr(grpo, "grpo_loss", recording_loss)
    args = grpo.Args(**{**SMALL, "save_model": False, "length_norm": False},
                     runs_dir=str(tmp_path))
    grpo.train(args)
    for weights in calls:  # B / (N T) for every step of a batch of B
        assert torch.all(weights == weights[0])
    assert len({round(w[0].item(), 6) for w in calls}) > 1  # B varies: not a constant 1


def test_groups_of_equal_returns_leave_the_policy_alone(trained, read_csv):
    """One-step episodes all return 1: every group is zero-signal, every advantage 0, and with
    beta = 0 and no entropy bonus the gradient is 0, so the policy never moves."""
    _, run_dir = trained(grpo, max_episode_steps=1, num_groups=2, group_size=4,
                         total_timesteps=24)
    updates = read_csv(run_dir / "updates.csv")
    assert len(updates["iteration"]) == 3
    assert np.all(updates["zero_signal"] == 1)
    assert np.all(updates["kl"] == 0) and np.all(updates["clipfrac"] == 0)


def test_same_seed_gives_the_same_run(trained, tmp_path, rows_without_column):
    args, run_dir = trained(grpo, **SMALL)
    again = grpo.train(dataclasses.replace(args, runs_dir=str(tmp_path)))
    for name, column in (("episodes.csv", "wall_time"), ("updates.csv", "sps")):
        rows = [rows_without_column(d / name, column) for d in (run_dir, again)]
        assert len(rows[0]) > 2
        assert rows[0] == rows[1]
    other = grpo.train(dataclasses.replace(args, seed=2, runs_dir=str(tmp_path)))
    assert (rows_without_column(other / "episodes.csv", "wall_time")
            != rows_without_column(run_dir / "episodes.csv", "wall_time"))


def test_the_reference_policy_is_the_initial_one_or_the_latest(trained, read_csv):
    """kl_ref measures the distance to pi_ref during the update. Refreshed every iteration
    (K = 1) it starts each update at 0 and stays the size of one update's step; fixed (K = 0,
    the default) it grows with the distance from the initial policy. Measured on seed 1:
    0.0009 against 0.076 at the last of 7 iterations."""
    flags = dict(SMALL, save_model=False, total_timesteps=3000, beta=0.04)
    latest = read_csv(trained(grpo, **flags, ref_update_every=1)[1] / "updates.csv")
    fixed = read_csv(trained(grpo, **flags, ref_update_every=0)[1] / "updates.csv")
    # the first update is the same for both: pi_ref is the initial policy in each
    assert latest["kl_ref"][0] == fixed["kl_ref"][0]
    assert fixed["kl_ref"][-3:].mean() > 5 * latest["kl_ref"][-3:].mean(), (fixed, latest)


# --- flags ---

@pytest.mark.parametrize("argv, mention", [
    pytest.param(["--group-size", "1"], "--group-size 1", id="group-size-1"),
    pytest.param(["--num-groups", "0"], "--num-groups 0", id="num-groups-0"),
    pytest.param(["--beta", "inf"], "--beta inf", id="beta-inf"),
    pytest.param(["--beta", "nan"], "--beta nan", id="beta-nan"),
    pytest.param(["--beta", "-0.1"], "--beta -0.1", id="beta-negative"),
    pytest.param(["--ref-update-every", "-1"], "--ref-update-every -1", id="ref-update-every"),
    pytest.param(["--max-episode-steps", "0"], "--max-episode-steps 0", id="max-episode-steps"),
    pytest.param(["--clip-coef", "0"], "--clip-coef 0", id="clip-coef-0"),
    pytest.param(["--clip-coef", "nan"], "--clip-coef nan", id="clip-coef-nan"),
    pytest.param(["--learning-rate", "inf"], "--learning-rate inf", id="learning-rate-inf"),
    pytest.param(["--max-grad-norm", "nan"], "--max-grad-norm nan", id="max-grad-norm-nan"),
    pytest.param(["--ent-coef", "inf"], "--ent-coef inf", id="ent-coef-inf"),
    pytest.param(["--target-kl", "inf"], "--target-kl inf", id="target-kl-inf"),
    pytest.param(["--log-std-init", "nan"], "--log-std-init nan", id="log-std-init-nan"),
    pytest.param(["--seed", "4294967296"], "--seed 4294967296", id="seed-2-to-the-32"),
    pytest.param(["--total-timesteps", "15999"], "--total-timesteps 15999",
                 id="below-one-batch-of-32-by-500"),
    pytest.param(["--num-groups", "2", "--group-size", "2", "--num-minibatches", "5"],
                 "--num-minibatches 5", id="more-minibatches-than-envs"),
    pytest.param(["--signal-only", "--group-size", "2", "--num-minibatches", "3"],
                 "--num-minibatches 3", id="more-minibatches-than-one-group"),
    pytest.param(["--env-id", "NoSuchEnv-v0"], "NoSuchEnv-v0", id="unknown-env"),
    pytest.param(["--clip-coef-high", "0"], "--clip-coef-high 0", id="clip-coef-high-0"),
    pytest.param(["--clip-coef-high", "nan"], "--clip-coef-high nan", id="clip-coef-high-nan"),
    pytest.param(["--clip-coef-high", "inf"], "--clip-coef-high inf", id="clip-coef-high-inf"),
    pytest.param(["--max-draws", "0"], "--max-draws 0", id="max-draws-0"),
    pytest.param(["--max-draws", "-2"], "--max-draws -2", id="max-draws-negative"),
])
def test_bad_flag_exits_2_with_one_line(assert_bad_flag, argv, mention):
    assert_bad_flag("grpo.py", argv, mention)


class NoTimeLimit(gym.Env):
    """Episodes that never end of themselves."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (3,))
    action_space = gym.spaces.Discrete(2)

    def __init__(self, render_mode=None):
        self.render_mode = render_mode

    def reset(self, *, seed=None, options=None):
        return np.zeros(3, dtype=np.float32), {}

    def step(self, action):
        return np.zeros(3, dtype=np.float32), 0.0, False, False, {}


def test_an_env_without_a_time_limit_needs_max_episode_steps(assert_bad_flag, tmp_path):
    gym.register("NoTimeLimit-v0", entry_point=NoTimeLimit)
    try:
        assert_bad_flag("grpo.py", ["--env-id", "NoTimeLimit-v0"], "--max-episode-steps")
        grpo.train(grpo.Args(env_id="NoTimeLimit-v0", max_episode_steps=5, num_groups=2,
                             group_size=2, total_timesteps=20, runs_dir=str(tmp_path)))
    finally:
        gym.registry.pop("NoTimeLimit-v0")


def test_the_critics_flags_do_not_exist():
    names = {f.name for f in dataclasses.fields(grpo.Args)}
    assert not names & {"gamma", "gae_lambda", "vf_coef", "vf_clip", "norm_adv", "normalize"}
    assert not hasattr(grpo, "Critic") and not hasattr(grpo, "compute_gae")


def test_the_real_cli_exits_2_without_a_traceback(run_script, assert_clean_error, tmp_path):
    line = assert_clean_error(run_script("grpo.py", "--group-size", "1"))
    assert line.startswith("grpo.py: error: --group-size 1"), line
    assert not (tmp_path / "runs").exists()


# --- evaluating a checkpoint ---

@pytest.mark.parametrize("flags, lowest, highest", [
    pytest.param(SMALL, 1, 500, id="cartpole"),
    pytest.param(SMALL_PENDULUM, -16.3 * 200, 0, id="pendulum"),
])
def test_eval_checkpoint_plays_a_saved_model(trained, run_cli, flags, lowest, highest):
    run_dir = trained(grpo, **flags)[1]
    result = run_cli("grpo.py", "--eval-checkpoint", run_dir / "model.pt", "--eval-episodes", 2)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    match = re.search(r"2 episodes, return (-?\d+\.\d+) \+- (\d+\.\d+)", result.stdout)
    assert match, result.stdout
    assert lowest <= float(match[1]) <= highest


def test_eval_of_a_missing_checkpoint_exits_2(run_cli, assert_clean_error, tmp_path):
    line = assert_clean_error(run_cli("grpo.py", "--eval-checkpoint", tmp_path / "none.pt"))
    assert "--eval-checkpoint" in line and "cannot be read" in line, line


@pytest.mark.skipif(importlib.util.find_spec("moviepy") is not None, reason="moviepy present")
def test_capture_video_without_moviepy_asks_for_it(assert_bad_flag):
    assert_bad_flag("grpo.py", ["--capture-video"], "moviepy")


# --- no step without signal; DAPO's dynamic sampling and clip-higher [arXiv:2503.14476] ---

def test_clip_higher_loss_is_the_formula_written_out():
    """min(r Â, clip(r, 1 - ε_low, 1 + ε_high) Â), term by term, with ε_low ≠ ε_high and ratios
    on both sides of both bounds, for Â of both signs."""
    ratio = torch.tensor([0.5, 0.75, 0.9, 1.0, 1.15, 1.25, 1.35, 2.0], dtype=torch.float64)
    low, high = 0.2, 0.3
    for sign in (1.0, -1.0):
        advantages = sign * torch.linspace(0.5, 2.0, 8, dtype=torch.float64)
        loss = ppo_clip.clipped_surrogate_loss(ratio, advantages, low, high)
        terms = [min(r * a, min(max(r, 1 - low), 1 + high) * a)
                 for r, a in zip(ratio.tolist(), advantages.tolist())]
        assert loss.item() == pytest.approx(-sum(terms) / 8, rel=1e-12)
        weights = torch.ones(8, dtype=torch.float64)
        assert grpo_loss(ratio, advantages, weights, 0 * weights, low, 0.0, high).item() == (
            pytest.approx(loss.item(), rel=1e-12))
    # Â > 0 at r = 1.25: clipped at 1.2 with ε_high = ε, not with ε_high = 0.3
    one = torch.tensor([1.25], dtype=torch.float64)
    assert -ppo_clip.clipped_surrogate_loss(one, one * 0 + 1, low).item() == pytest.approx(1.2)
    assert -ppo_clip.clipped_surrogate_loss(one, one * 0 + 1, low, high).item() == 1.25


def test_the_gradient_comes_from_the_signal_group_alone(make_actor):
    """Two groups of G = 3: returns (1, 3, 2) carry signal, (5, 5, 5) none. At θ = θ' the code's
    gradient (group_batch, then grpo_loss) is that of the written-out eq. 3 over the signal
    group's steps, Σ_i Σ_t Â_i log π(a_t|s_t) / (N' |o_i|) with N' = 3; with --no-signal-only
    the zero group's three episodes stay in N' = 6, which halves it."""
    actor, obs = make_actor(grpo, "categorical", batch=12, dtype=torch.float64)
    lengths = torch.tensor([2, 1, 3, 2, 2, 2])
    episode = torch.repeat_interleave(torch.arange(6), lengths)  # 12 steps
    returns = torch.tensor([[1.0, 3.0, 2.0], [5.0, 5.0, 5.0]], dtype=torch.float64)
    actions = torch.arange(12) % 3
    mean, std = 2.0, 1.0  # of (1, 3, 2), sample std
    advantage = [(r - mean) / (std + 1e-8) for r in (1.0, 3.0, 2.0)]

    def code_gradient(signal_only):
        used, adv, weights = grpo.group_batch(returns, lengths, episode, 3, True, True,
                                              signal_only)
        logp = actor(obs[used]).log_prob(actions[used])
        ratio = (logp - logp.detach()).exp()
        loss = grpo_loss(ratio, adv, weights, torch.zeros_like(ratio), 0.2, 0.0)
        return torch.autograd.grad(loss, list(actor.parameters()))

    objective = 0.0
    for t in range(12):
        i = int(episode[t])
        if i < 3:
            objective += advantage[i] * actor(obs[t:t + 1]).log_prob(actions[t:t + 1])[0] / (
                3 * int(lengths[i]))
    by_hand = torch.autograd.grad(-objective, list(actor.parameters()))
    for code, hand in zip(code_gradient(True), by_hand):
        torch.testing.assert_close(code, hand, rtol=1e-6, atol=1e-9)  # Â_i in float32
    for code, hand in zip(code_gradient(False), by_hand):
        torch.testing.assert_close(code, hand / 2, rtol=1e-6, atol=1e-9)
    assert any(g.abs().max() > 1e-4 for g in by_hand)


class ScriptedReward(gym.Env):
    """One-step episodes. The reward is the action where `signal(seed, episode)` holds (group
    members then differ when their actions do), else 1 whatever the action (no signal)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (3,))
    action_space = gym.spaces.Discrete(2)
    episodes = 0  # made by every instance together
    signal = staticmethod(lambda seed, episode: True)

    def __init__(self, render_mode=None):
        self.render_mode = render_mode

    def reset(self, *, seed=None, options=None):
        self.seeded = seed
        return np.full(3, 0.5, dtype=np.float32), {}

    def step(self, action):
        signal = ScriptedReward.signal(self.seeded, ScriptedReward.episodes)
        ScriptedReward.episodes += 1
        return np.zeros(3, dtype=np.float32), float(action) if signal else 1.0, True, False, {}


@pytest.fixture
def scripted(monkeypatch):
    """The ScriptedReward env registered, its count at 0; yields a setter of its rule."""
    gym.register("ScriptedReward-v0", entry_point=ScriptedReward, max_episode_steps=1)
    ScriptedReward.episodes = 0
    yield lambda rule: monkeypatch.setattr(ScriptedReward, "signal", staticmethod(rule))
    gym.registry.pop("ScriptedReward-v0")


@pytest.fixture
def adam_states(monkeypatch):
    """Adam's state_dict after each of its steps, recorded by every Adam created in the test."""
    states = []

    class RecordingAdam(torch.optim.Adam):
        def step(self, *args, **kwargs):
            result = super().step(*args, **kwargs)
            states.append(copy.deepcopy(self.state_dict()))
            return result

    monkeypatch.setattr(torch.optim, "Adam", RecordingAdam)
    return states


def test_the_default_update_is_one_step_where_the_clip_does_nothing(adam_states, tmp_path,
                                                                     read_csv):
    """The defaults make the paper's single update per batch: one Adam step, taken at θ = θ',
    where every r_t is 1, so no ratio is clipped."""
    updates = read_csv(grpo.train(grpo.Args(total_timesteps=20_000, runs_dir=str(tmp_path)))
                       / "updates.csv")
    assert len(updates["kl"]) > 1 and np.all(updates["zero_signal"] < 1)
    assert len(adam_states) == len(updates["kl"])
    assert np.all(updates["clipfrac"] == 0) and np.all(updates["kl"] > 0)


def test_a_batch_without_signal_leaves_actor_and_adam_untouched(scripted, adam_states,
                                                                 tmp_path, read_csv):
    """Signal in the first batch only (8 episodes): Adam steps there, then never again, and
    the actor after three iterations is bit for bit the actor after one; the rows of the
    skipped updates say zero_signal 1 and kl 0."""
    scripted(lambda seed, episode: episode < 8)
    flags = dict(env_id="ScriptedReward-v0", num_groups=2, group_size=4, update_epochs=2,
                 num_minibatches=2, save_model=True)
    actors = []
    for total in (8, 24):
        ScriptedReward.episodes = 0
        run_dir = grpo.train(grpo.Args(total_timesteps=total, runs_dir=str(tmp_path), **flags))
        actors.append(torch.load(run_dir / "model.pt", weights_only=True)["actor"])
    assert len(adam_states) == 2 * 2 * 2  # two runs, each 2 epochs x 2 minibatches in iteration 1
    for name, value in actors[0].items():
        assert torch.equal(value, actors[1][name]), name
    for a, b in zip(adam_states[3]["state"].values(), adam_states[7]["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)  # Adam's moments: the same too
    updates = read_csv(run_dir / "updates.csv")
    assert updates["zero_signal"].tolist() == [0.0, 1.0, 1.0]
    assert updates["kl"][0] > 0 and updates["kl"][1:].tolist() == [0.0, 0.0]


@pytest.fixture
def batches(monkeypatch):
    """The advantages Â_t of every call of grpo.grpo_loss in the test, one tensor a call."""
    seen, loss = [], grpo.grpo_loss

    def recording_loss(ratio, advantages, *rest):
        seen.append(advantages.detach().clone())
        return loss(ratio, advantages, *rest)

    monkeypatch.setattr(grpo, "grpo_loss", recording_loss)
    return seen


def test_dynamic_sampling_keeps_signal_groups_up_to_the_cap(scripted, batches, tmp_path,
                                                            read_csv):
    """Groups whose start seed is divisible by 3 carry signal (when their actions differ).
    With --no-signal-only, so that nothing but dynamic sampling drops a group: every batch
    holds P = 2 groups of signal when it drew fewer than the cap (3 rounds, 6 groups), at most
    2 at the cap; and every drawn episode's step counts."""
    scripted(lambda seed, episode: seed % 3 == 0)
    args = grpo.Args(env_id="ScriptedReward-v0", num_groups=2, group_size=4, update_epochs=1,
                     num_minibatches=1, total_timesteps=400, dynamic_sampling=True, max_draws=3,
                     signal_only=False, runs_dir=str(tmp_path))
    updates = read_csv(grpo.train(args) / "updates.csv")
    drawn = updates["groups_drawn"]
    assert set(drawn) <= {2, 4, 6} and {6} < set(drawn) and min(drawn) < 6
    steps = np.diff(np.concatenate([[0], updates["global_step"]]))
    np.testing.assert_array_equal(steps, 4 * drawn)  # G one-step episodes per drawn group
    taken = iter(batches)
    for groups_drawn, kl in zip(drawn, updates["kl"]):
        if kl == 0 and groups_drawn == 6:
            continue  # no group of signal within the cap: no step
        advantages = next(taken)
        assert torch.all(advantages != 0)  # no zero-signal group was kept
        assert len(advantages) == 8 or groups_drawn == 6


def test_dynamic_sampling_stops_at_p_groups_when_a_round_brings_more(scripted, batches,
                                                                     tmp_path, read_csv):
    """P = 2. Round 1: only its first group carries signal (kept); round 2: both do, but one
    place is left, so its first group is kept and its second dropped: 2 groups drawn twice and
    a batch of exactly P·G = 8 episodes, all with signal."""
    scripted(lambda seed, episode: episode < 4 or 8 <= episode < 16)
    args = grpo.Args(env_id="ScriptedReward-v0", num_groups=2, group_size=4, update_epochs=1,
                     num_minibatches=1, total_timesteps=16, dynamic_sampling=True, max_draws=3,
                     runs_dir=str(tmp_path))
    updates = read_csv(grpo.train(args) / "updates.csv")
    assert updates["groups_drawn"].tolist() == [4]
    (advantages,) = batches
    assert len(advantages) == 8 and torch.all(advantages != 0)
