"""ppo_clip.py: the article's equations checked one by one, then short runs of the script.

Each check compares against something written independently here (a formula, a sum written
term by term, a Monte-Carlo estimate, the documented file layout), never the code against itself.
"""

import copy
import re

import gymnasium as gym
import numpy as np
import pytest
import torch

import ppo_clip
from ppo_clip import Actor, Args, check_args, clipped_surrogate_loss, compute_gae, mean_kl, train

SCRIPT = "ppo_clip.py"
OWN_COLUMNS = ["clipfrac"]
HEADS = {  # obs_dim and action space of a small Actor of each kind
    "categorical": (4, gym.spaces.Discrete(3)),
    "gaussian": (3, gym.spaces.Box(-1.0, 1.0, (2,))),
}


def make_actor(head: str, batch: int = 64) -> tuple[Actor, torch.Tensor]:
    """A small Actor with the given head and a batch of random observations."""
    obs_dim, action_space = HEADS[head]
    torch.manual_seed(0)
    return Actor(obs_dim, action_space, hidden=16), torch.randn(batch, obs_dim)


def random_ratios_and_advantages(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ratio = torch.exp(0.5 * torch.randn(n, generator=generator, dtype=torch.float64))
    return ratio, torch.randn(n, generator=generator, dtype=torch.float64)


# --- runs shared by several tests (trained once per module, in-process) ---

@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    """The default flags on CartPole with a small budget; model saved."""
    args = Args(total_timesteps=25_000, save_model=True,
                runs_dir=str(tmp_path_factory.mktemp("cartpole")))
    return args, train(args)


@pytest.fixture(scope="module")
def pendulum_run(tmp_path_factory):
    """A short continuous-control run with observation and reward normalisation; model saved."""
    args = Args(env_id="Pendulum-v1", normalize=True, total_timesteps=2048, num_envs=2,
                num_steps=64, save_model=True,
                runs_dir=str(tmp_path_factory.mktemp("pendulum")))
    return args, train(args)


# --- L^CLIP [PPO: Approximate the Constraint with Clipping] ---

@pytest.mark.parametrize("clip_coef", [0.1, 0.2, 0.3])
def test_clipped_surrogate_loss_is_minus_the_formula(clip_coef):
    ratio, advantages = random_ratios_and_advantages(seed=0, n=200)
    terms = [min(r * a, min(max(r, 1 - clip_coef), 1 + clip_coef) * a)
             for r, a in zip(ratio.tolist(), advantages.tolist())]
    loss = clipped_surrogate_loss(ratio, advantages, clip_coef)
    assert loss.item() == pytest.approx(-sum(terms) / len(terms), rel=1e-12)


def test_clipped_surrogate_gradient_vanishes_exactly_where_the_objective_flattens():
    clip_coef = 0.2
    grid = [(r, a) for r in (0.5, 0.7, 0.85, 1.0, 1.15, 1.3, 2.0) for a in (1.5, -0.7)]
    ratio = torch.tensor([r for r, _ in grid], dtype=torch.float64, requires_grad=True)
    advantages = torch.tensor([a for _, a in grid], dtype=torch.float64)
    clipped_surrogate_loss(ratio, advantages, clip_coef).backward()

    flat = [(a > 0 and r > 1 + clip_coef) or (a < 0 and r < 1 - clip_coef) for r, a in grid]
    expected = [0.0 if f else -a / len(grid) for f, (_, a) in zip(flat, grid)]
    torch.testing.assert_close(ratio.grad, torch.tensor(expected, dtype=torch.float64))


@pytest.mark.parametrize("clip_coef", [0.1, 0.2, 0.3])
def test_clipped_objective_is_a_lower_bound_of_the_unclipped_surrogate(clip_coef):
    for seed in range(100):
        ratio, advantages = random_ratios_and_advantages(seed, n=32)
        objective = -clipped_surrogate_loss(ratio, advantages, clip_coef)
        assert objective <= (ratio * advantages).mean() + 1e-12


# --- The Surrogate Objective: grad[r A] = r grad[log pi] A, so at theta = theta' ... ---

@pytest.mark.parametrize("head", HEADS)
def test_surrogate_gradient_equals_policy_gradient_at_theta_old(head):
    actor, obs = make_actor(head)
    params = list(actor.parameters())
    with torch.no_grad():
        dist = actor(obs)
        actions = dist.sample()
        old_logprob = dist.log_prob(actions)  # pi_theta', the same parameters
    advantages = torch.randn(len(obs))

    def gradient(objective_of_logprob):
        return torch.autograd.grad(objective_of_logprob(actor(obs).log_prob(actions)), params)

    policy_gradient = gradient(lambda logprob: (logprob * advantages).mean())
    surrogate = gradient(lambda logprob: ((logprob - old_logprob).exp() * advantages).mean())
    clipped = gradient(
        lambda logprob: -clipped_surrogate_loss((logprob - old_logprob).exp(), advantages, 0.2))
    assert any(g.abs().max() > 0 for g in policy_gradient)
    for expected, surrogate_grad, clipped_grad in zip(policy_gradient, surrogate, clipped):
        torch.testing.assert_close(surrogate_grad, expected)
        torch.testing.assert_close(clipped_grad, expected)


# --- GAE [From Baseline to Advantage] ---

@pytest.fixture
def rollout():
    """[T, N] = [10, 4] random rewards and values; terminations and truncations mixed."""
    T, N = 10, 4
    generator = torch.Generator().manual_seed(0)
    rewards, values, next_values = torch.randn(3, T, N, generator=generator, dtype=torch.float64)
    terminations = torch.zeros(T, N, dtype=torch.float64)
    truncations = torch.zeros(T, N, dtype=torch.float64)
    terminations[3, 0] = truncations[7, 0] = 1  # env 0: a termination, later a truncation
    truncations[2, 1] = terminations[6, 1] = terminations[9, 1] = 1  # env 1: ends on the last step
    # env 2 never ends: its sum runs to the end of the rollout and bootstraps from V(s_T)
    terminations[4, 3] = terminations[5, 3] = truncations[0, 3] = 1  # env 3: a one-step episode
    dones = torch.maximum(terminations, truncations)
    return rewards, values, next_values, terminations, dones


@pytest.mark.parametrize("gamma, gae_lambda", [(0.99, 0.95), (0.98, 0.8), (0.9, 0.0), (1.0, 1.0),
                                               (0.5, 0.5)])
def test_compute_gae_matches_the_sum_written_term_by_term(rollout, gae_by_definition, gamma,
                                                         gae_lambda):
    torch.testing.assert_close(compute_gae(*rollout, gamma, gae_lambda),
                               gae_by_definition(*rollout, gamma, gae_lambda))


def test_compute_gae_with_lambda_zero_is_the_one_step_td_error(rollout):
    rewards, values, next_values, terminations, dones = rollout
    gamma = 0.9
    td_error = rewards + gamma * (1 - terminations) * next_values - values
    torch.testing.assert_close(compute_gae(*rollout, gamma, 0.0), td_error)


@pytest.mark.parametrize("ending", ["terminated", "truncated"])
def test_compute_gae_with_lambda_one_is_the_discounted_return_minus_v(ending):
    """One env; the episode ends at step `end`; V of consecutive states is consistent
    (next_values[t] = values[t + 1]), so the TD errors telescope."""
    T, end, gamma = 8, 5, 0.9
    generator = torch.Generator().manual_seed(1)
    rewards = torch.randn(T, 1, generator=generator, dtype=torch.float64)
    values = torch.randn(T + 1, 1, generator=generator, dtype=torch.float64)  # V(s_0..s_T)
    next_values = values[1:].clone()
    final_value = 3.0  # V(final observation) of the episode that ends at `end`
    next_values[end] = final_value
    dones = torch.zeros(T, 1, dtype=torch.float64)
    dones[end] = 1
    terminations = dones.clone() if ending == "terminated" else torch.zeros_like(dones)

    advantages = compute_gae(rewards, values[:T], next_values, terminations, dones, gamma, 1.0)
    for t in range(end + 1):
        discounted_return = sum(gamma ** (k - t) * rewards[k, 0].item() for k in range(t, end + 1))
        if ending == "truncated":  # a time limit is not death: bootstrap from V(final obs)
            discounted_return += gamma ** (end + 1 - t) * final_value
        assert advantages[t, 0].item() == pytest.approx(discounted_return - values[t, 0].item())


# --- KL(pi_theta' || pi_theta), closed form [the constraint of Where We Left Off] ---

@pytest.mark.parametrize("head", HEADS)
def test_mean_kl_matches_a_monte_carlo_estimate(head, monte_carlo_kl):
    old_actor, obs = make_actor(head)
    actor = copy.deepcopy(old_actor)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in actor.parameters():
            param.add_(0.3 * torch.randn(param.shape, generator=generator))
        old_dist, new_dist = old_actor(obs), actor(obs)
        kl = mean_kl(old_dist, new_dist).item()
    estimate, standard_error = monte_carlo_kl(old_dist, new_dist, num_samples=4000)
    # the perturbation must move the policy well beyond the noise, or the test would say nothing
    # (measured: the reverse KL(new || old) lies 19 and 100 standard errors away)
    assert kl > 20 * standard_error
    assert abs(kl - estimate) < 4 * standard_error


# --- flags ---

@pytest.mark.parametrize("argv, mention", [
    pytest.param(["--total-timesteps", "0"], "--total-timesteps 0", id="total-timesteps-0"),
    pytest.param(["--num-envs", "-1"], "--num-envs -1", id="num-envs-negative"),
    pytest.param(["--gamma", "0"], "--gamma 0", id="gamma-0"),
    pytest.param(["--gamma", "1.5"], "--gamma 1.5", id="gamma-1.5"),
    pytest.param(["--gae-lambda", "1.1"], "--gae-lambda 1.1", id="gae-lambda-1.1"),
    pytest.param(["--clip-coef", "0"], "--clip-coef 0", id="clip-coef-0"),
    pytest.param(["--num-envs", "3", "--num-steps", "5", "--num-minibatches", "4"],
                 "--num-minibatches 4", id="minibatches-do-not-divide-batch"),
    pytest.param(["--env-id", "NoSuchEnv-v0"], "NoSuchEnv-v0", id="unknown-env"),
    pytest.param(["--env-id", "Blackjack-v1"], "Blackjack-v1", id="tuple-observation-space"),
])
def test_bad_flag_exits_2_with_one_line(run_script, assert_clean_error, tmp_path, argv, mention):
    line = assert_clean_error(run_script(SCRIPT, *argv))
    assert mention in line
    assert not (tmp_path / "runs").exists()  # ended before training


@pytest.mark.parametrize("field, value", [("gamma", 1.0), ("gae_lambda", 0.0), ("gae_lambda", 1.0)])
def test_edges_of_the_allowed_domains_are_accepted(field, value):
    check_args(Args(**{field: value}))


# --- short runs ---

@pytest.mark.parametrize("run", ["cartpole_run", "pendulum_run"])
def test_run_folder_has_the_documented_files(request, assert_run_folder, read_csv, run):
    args, run_dir = request.getfixturevalue(run)
    assert_run_folder(run_dir, args, OWN_COLUMNS)
    clipfrac = read_csv(run_dir / "updates.csv")["clipfrac"]
    assert np.all((clipfrac >= 0) & (clipfrac <= 1))


def test_pendulum_episodic_returns_are_raw_despite_reward_scaling(pendulum_run, read_csv):
    episodes = read_csv(pendulum_run[1] / "episodes.csv")
    assert np.all(episodes["episodic_length"] == 200)  # Pendulum's time limit
    # raw rewards lie in [-16.3, 0] per step, about -1200 an episode for a near-random policy;
    # scaled rewards would sum to a few tens
    assert np.all(episodes["episodic_return"] >= -16.3 * 200)
    assert episodes["episodic_return"].mean() < -400


def test_cartpole_return_improves(cartpole_run, read_csv):
    returns = read_csv(cartpole_run[1] / "episodes.csv")["episodic_return"]
    first, last = returns[:10].mean(), returns[-10:].mean()
    # measured with seed 1: 19.9 -> 500.0 (the budgets 20k and 30k give 264 and 316)
    assert last > first + 150, (first, last)


def test_same_seed_gives_the_same_episodes(tmp_path, rows_without_column):
    episodes = [
        rows_without_column(
            train(Args(total_timesteps=2048, seed=7, runs_dir=str(tmp_path / name)))
            / "episodes.csv", "wall_time")
        for name in ("first", "second")]
    assert len(episodes[0]) > 1
    assert episodes[0] == episodes[1]


# --- evaluating a checkpoint ---

@pytest.mark.parametrize("run, lowest, highest", [
    pytest.param("cartpole_run", 1, 500, id="cartpole"),
    pytest.param("pendulum_run", -16.3 * 200, 0, id="pendulum-normalized"),
])
def test_eval_checkpoint_plays_and_prints_mean_and_std(request, run_script, run, lowest, highest):
    _, run_dir = request.getfixturevalue(run)
    result = run_script(SCRIPT, "--eval-checkpoint", run_dir / "model.pt", "--eval-episodes", 2)
    assert result.returncode == 0, result.stderr
    match = re.search(r"2 episodes, return (-?\d+\.\d+) \+- (\d+\.\d+)", result.stdout)
    assert match, result.stdout
    assert lowest <= float(match[1]) <= highest


def write_bad_checkpoint(kind: str, path, good_checkpoint) -> None:
    if kind == "corrupt":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "mismatched":
        checkpoint = torch.load(good_checkpoint, weights_only=True)
        checkpoint["env_id"] = "Acrobot-v1"  # 6 observations and 3 actions, not 4 and 2
        torch.save(checkpoint, path)


@pytest.mark.parametrize("kind", ["corrupt", "missing", "mismatched"])
def test_eval_bad_checkpoint_exits_2_with_one_line(run_script, assert_clean_error, tmp_path,
                                                  cartpole_run, kind):
    path = tmp_path / "model.pt"
    write_bad_checkpoint(kind, path, cartpole_run[1] / "model.pt")
    line = assert_clean_error(run_script(SCRIPT, "--eval-checkpoint", path))
    assert "--eval-checkpoint" in line


def test_eval_keeps_the_saved_observation_statistics_frozen(pendulum_run, monkeypatch):
    made, make_env = [], ppo_clip.make_env

    def recording_make_env(*args, **kwargs):
        def thunk():
            made.append(make_env(*args, **kwargs)())
            return made[-1]
        return thunk

    monkeypatch.setattr(ppo_clip, "make_env", recording_make_env)
    checkpoint_path = pendulum_run[1] / "model.pt"
    ppo_clip.evaluate(Args(eval_checkpoint=str(checkpoint_path), eval_episodes=1))

    env = made[0]
    while not isinstance(env, gym.wrappers.NormalizeObservation):
        env = env.env
    saved = torch.load(checkpoint_path, weights_only=True)["obs_rms"]
    assert env.obs_rms.count == saved["count"]
    np.testing.assert_array_equal(env.obs_rms.mean, saved["mean"].numpy())


# --- a loss that turns non-finite ---

def test_huge_learning_rate_stops_at_the_first_iteration(run_script, assert_clean_error, tmp_path,
                                                         read_csv):
    result = run_script(SCRIPT, "--learning-rate", "1e30", "--total-timesteps", 2048)
    line = assert_clean_error(result, status=1)
    assert re.search(r"\biteration 1\b", line), line
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert len(read_csv(run_dir / "updates.csv")["iteration"]) == 0
    assert len(read_csv(run_dir / "episodes.csv")["global_step"]) > 0


def test_nan_loss_stops_training_and_keeps_the_rows_written(tmp_path, monkeypatch, capsys,
                                                            read_csv):
    args = Args(total_timesteps=2048, runs_dir=str(tmp_path))  # 8 iterations of 20 steps each
    calls_per_iteration = args.update_epochs * args.num_minibatches
    calls = []

    def nan_from_iteration_3(ratio, advantages, clip_coef):
        calls.append(None)
        loss = clipped_surrogate_loss(ratio, advantages, clip_coef)
        return loss * float("nan") if len(calls) > 2 * calls_per_iteration else loss

    monkeypatch.setattr(ppo_clip, "clipped_surrogate_loss", nan_from_iteration_3)
    with pytest.raises(SystemExit) as stop:
        train(args)
    assert stop.value.code != 0
    assert re.search(r"\biteration 3\b", capsys.readouterr().err)
    (run_dir,) = tmp_path.iterdir()
    np.testing.assert_array_equal(read_csv(run_dir / "updates.csv")["iteration"], [1, 2])
    assert len(read_csv(run_dir / "episodes.csv")["global_step"]) > 0
