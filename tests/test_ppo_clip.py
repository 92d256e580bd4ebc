"""ppo_clip.py: the article's equations checked one by one.

Each check compares against something written independently here (a formula, a sum written
term by term, a Monte-Carlo estimate), never the code against itself. compute_gae, mean_kl
and value_loss are the same text in every script (test_end_to_end.py checks that), so they are
checked here once; the short runs that every script shares are in test_end_to_end.py.
"""

import importlib.util
import math
from pathlib import Path

import gymnasium as gym
import pytest
import torch

import gae
import ppo_clip
from ppo_clip import clipped_surrogate_loss, mean_kl, value_loss


# --- L^CLIP [PPO: Approximate the Constraint with Clipping] ---

def on_flat_side(ratio: torch.Tensor, advantages: torch.Tensor, clip_coef: float) -> torch.Tensor:
    """Where min(r A, clip(r) A) takes its clipped term and so no longer depends on r: a good
    action already made more likely than 1 + eps allows, or a bad one less likely than 1 - eps."""
    return (((advantages > 0) & (ratio > 1 + clip_coef))
            | ((advantages < 0) & (ratio < 1 - clip_coef)))


@pytest.mark.parametrize("clip_coef", [0.1, 0.2, 0.3])
def test_clipped_surrogate_loss_is_minus_the_formula(random_ratios_and_advantages, clip_coef):
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

    flat = on_flat_side(ratio.detach(), advantages, clip_coef)
    assert flat.sum() == 4  # r = 1.3 and 2.0 with A > 0, r = 0.5 and 0.7 with A < 0
    expected = torch.where(flat, 0.0, -advantages / len(grid))
    torch.testing.assert_close(ratio.grad, expected)


@pytest.mark.parametrize("clip_coef", [0.1, 0.2, 0.3])
def test_clipped_objective_is_a_lower_bound_of_the_unclipped_surrogate(
        random_ratios_and_advantages, clip_coef):
    for seed in range(100):
        ratio, advantages = random_ratios_and_advantages(seed, n=32)
        objective = -clipped_surrogate_loss(ratio, advantages, clip_coef)
        assert objective <= (ratio * advantages).mean() + 1e-12


# --- The Surrogate Objective: grad[r A] = r grad[log pi] A, so at theta = theta' ... ---

def probability(actor, obs, actions) -> torch.Tensor:
    """π(a|s) written out from the network's outputs, not through torch.distributions: the
    softmax of the logits, or the product of the Gaussian densities per action dimension."""
    out = actor.net(obs)
    if actor.continuous:
        std = actor.log_std.exp()
        density = torch.exp(-0.5 * ((actions - out) / std) ** 2) / (std * math.sqrt(2 * math.pi))
        return density.prod(-1)
    return torch.softmax(out, -1).gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)


def test_probability_ratio_is_the_quotient_of_the_two_probabilities(make_actor, moved_copy,
                                                                     head):
    """r_t(θ) = π_θ(a_t|s_t) / π_θ'(a_t|s_t) [The Surrogate Objective], formed in log space."""
    old_actor, obs = make_actor(ppo_clip, head, dtype=torch.float64)
    actor = moved_copy(old_actor)
    with torch.no_grad():
        actions = old_actor(obs).sample()
        ratio = ppo_clip.probability_ratio(actor(obs).log_prob(actions),
                                           old_actor(obs).log_prob(actions))
        expected = probability(actor, obs, actions) / probability(old_actor, obs, actions)
    assert (expected - 1).abs().max() > 0.1  # the two policies differ
    torch.testing.assert_close(ratio, expected)


def test_surrogate_gradient_equals_policy_gradient_at_theta_old(make_actor, head):
    actor, obs = make_actor(ppo_clip, head)
    params = list(actor.parameters())
    with torch.no_grad():
        dist = actor(obs)
        actions = dist.sample()
        old_logprob = dist.log_prob(actions)  # pi_theta', the same parameters
    advantages = torch.randn(len(obs))

    def gradient(objective_of_logprob):
        return torch.autograd.grad(objective_of_logprob(actor(obs).log_prob(actions)), params)

    policy_gradient = gradient(lambda logprob: (logprob * advantages).mean())
    surrogate = gradient(
        lambda logprob: (ppo_clip.probability_ratio(logprob, old_logprob) * advantages).mean())
    clipped = gradient(lambda logprob: -clipped_surrogate_loss(
        ppo_clip.probability_ratio(logprob, old_logprob), advantages, 0.2))
    assert any(g.abs().max() > 0 for g in policy_gradient)
    for expected, surrogate_grad, clipped_grad in zip(policy_gradient, surrogate, clipped):
        torch.testing.assert_close(surrogate_grad, expected)
        torch.testing.assert_close(clipped_grad, expected)


def test_surrogate_gradient_is_the_ratio_weighted_policy_gradient_away_from_theta_old(
        make_actor, moved_copy, head, of_flat_parameters):
    """grad mean(r_t A_t) = mean_t(r_t grad log pi_theta(a_t|s_t) A_t) at theta != theta'
    [The Surrogate Objective]: the autograd gradient of the surrogate against the weighted mean
    of per-sample gradients, one row of a Jacobian per t. L^CLIP's gradient is the same mean
    with the terms on the flat side of the clip left out [PPO: Approximate the Constraint with
    Clipping]."""
    old_actor, obs = make_actor(ppo_clip, head, dtype=torch.float64)
    actor = moved_copy(old_actor)
    with torch.no_grad():
        old_dist = old_actor(obs)
        actions = old_dist.sample()
        old_logprob = old_dist.log_prob(actions)  # pi_theta', other parameters than the actor's
    advantages = torch.randn(len(obs), generator=torch.Generator().manual_seed(6),
                             dtype=torch.float64)
    clip_coef = 0.2

    def ratio_of(dist):  # the code's r_t, whose gradient is under test
        return ppo_clip.probability_ratio(dist.log_prob(actions), old_logprob)

    def gradient_of(objective_of_dist):  # d objective / d theta, theta every actor parameter
        f, theta = of_flat_parameters(actor, obs, lambda _, dist: objective_of_dist(dist))
        return torch.autograd.functional.jacobian(f, theta, vectorize=True)

    per_sample = gradient_of(lambda dist: dist.log_prob(actions))  # [t, theta]
    with torch.no_grad():
        ratio = ratio_of(actor(obs))
    # far from theta' (measured median |r_t - 1| 0.52 and 0.76), or r_t = 1 would hide the r_t
    assert (ratio - 1).abs().median() > 0.3
    weights = ratio * advantages / len(obs)
    torch.testing.assert_close(gradient_of(lambda dist: (ratio_of(dist) * advantages).mean()),
                               weights @ per_sample, rtol=1e-10, atol=1e-12)

    flat = on_flat_side(ratio, advantages, clip_coef)
    assert flat.any() and not flat.all()
    torch.testing.assert_close(
        gradient_of(lambda dist: -clipped_surrogate_loss(ratio_of(dist), advantages, clip_coef)),
        torch.where(flat, 0.0, weights) @ per_sample, rtol=1e-10, atol=1e-12)


# --- GAE [From Baseline to Advantage] ---

# gae.py carries its own copy, with comments of its own: both are checked here
GAE_COPIES = [pytest.param(ppo_clip.compute_gae, id="ppo_clip"),
              pytest.param(gae.compute_gae, id="gae")]


@pytest.mark.parametrize("compute_gae", GAE_COPIES)
@pytest.mark.parametrize("gamma, gae_lambda", [(0.99, 0.95), (0.98, 0.8), (0.9, 0.0), (1.0, 1.0),
                                               (0.5, 0.5)])
def test_compute_gae_matches_the_sum_written_term_by_term(rollout, gae_by_definition, gamma,
                                                         gae_lambda, compute_gae):
    torch.testing.assert_close(compute_gae(*rollout, gamma, gae_lambda),
                               gae_by_definition(*rollout, gamma, gae_lambda))


@pytest.mark.parametrize("compute_gae", GAE_COPIES)
def test_compute_gae_with_lambda_zero_is_the_one_step_td_error(rollout, compute_gae):
    """With lambda = 0, A_t is delta_t alone: r_t + gamma V(s_{t+1}) - V(s_t), or r_t - V(s_t)
    after a termination, whose next state has no value; a truncation still bootstraps."""
    rewards, values, next_values, terminations, dones = rollout
    gamma = 0.9
    td_error = torch.where(terminations == 1, rewards - values,
                           rewards + gamma * next_values - values)
    assert torch.any((dones == 1) & (terminations == 0))  # a truncation among the steps
    torch.testing.assert_close(compute_gae(*rollout, gamma, 0.0), td_error)


@pytest.mark.parametrize("compute_gae", GAE_COPIES)
@pytest.mark.parametrize("ending", ["terminated", "truncated"])
def test_compute_gae_with_lambda_one_is_the_discounted_return_minus_v(ending, compute_gae):
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


# --- the critic's loss [Putting It Together, step 4] ---

@pytest.mark.parametrize("vf_clip", [None, 0.2])
def test_value_loss_is_half_the_mean_squared_error(vf_clip):
    """Written per sample with Python floats: (V - R)^2, and with --vf-clip the larger of that and
    the error of V_old + clip(V - V_old, -c, c); the loss is half their mean."""
    generator = torch.Generator().manual_seed(2)
    newvalue, returns, old_values = torch.randn(3, 50, generator=generator, dtype=torch.float64)
    errors = []
    for v, r, v_old in zip(newvalue.tolist(), returns.tolist(), old_values.tolist()):
        error = (v - r) ** 2
        if vf_clip is not None:
            error = max(error, (v_old + min(max(v - v_old, -vf_clip), vf_clip) - r) ** 2)
        errors.append(error)
    assert value_loss(newvalue, returns, old_values, vf_clip).item() == pytest.approx(
        0.5 * sum(errors) / len(errors), rel=1e-12)


def test_value_clipping_stops_the_gradient_of_a_prediction_moved_past_the_clip():
    """d loss / d V_i is (V_i - R_i) / n, except where V_i left [V_old - c, V_old + c] and the
    clipped prediction's error is the larger: there it is 0 (worked out by hand)."""
    generator = torch.Generator().manual_seed(3)
    returns, old_values = torch.randn(2, 200, generator=generator, dtype=torch.float64)
    newvalue = (old_values + 0.5 * torch.randn(200, generator=generator, dtype=torch.float64)
                ).requires_grad_()
    c, n = 0.2, 200
    value_loss(newvalue, returns, old_values, c).backward()
    v, r, v_old = newvalue.detach(), returns, old_values
    outside = (v - v_old).abs() > c
    clipped_error = (v_old + (v - v_old).clamp(-c, c) - r) ** 2
    frozen = outside & (clipped_error > (v - r) ** 2)
    assert frozen.any() and (~frozen).any()
    torch.testing.assert_close(newvalue.grad, torch.where(frozen, 0.0, (v - r) / n))


# --- the loop [Putting It Together, steps 3 and 5] ---

OBJECTIVES = [("ppo_clip", "clipped_surrogate_loss"), ("ppo_kl", "kl_penalty_loss")]


def recorded(monkeypatch, module, loss: str) -> tuple[list, list]:
    """Patch the module's advantages_and_returns and its objective `loss` to record each
    estimate's Â_t [T * N] and each call's (r_t, Â_t) as the objective receives them."""
    estimates, calls = [], []
    original_estimate, original_loss = module.advantages_and_returns, getattr(module, loss)

    def recording_estimate(*arguments):
        result = original_estimate(*arguments)
        estimates.append(result[0].clone())
        return result

    def recording_loss(ratio, advantages, *rest):
        calls.append((ratio.detach().clone(), advantages.detach().clone()))
        return original_loss(ratio, advantages, *rest)

    monkeypatch.setattr(module, "advantages_and_returns", recording_estimate)
    monkeypatch.setattr(module, loss, recording_loss)
    return estimates, calls


@pytest.mark.parametrize("name, loss", OBJECTIVES)
def test_each_update_is_epochs_of_minibatches_that_partition_the_batch_from_theta_old(
        monkeypatch, tmp_path, name, loss):
    """Step 3: per update, update_epochs passes, each of num_minibatches minibatches that
    together hold every sample of the batch once; step 5: each update starts from θ' = the
    actor the last one left, so its first minibatch has every r_t = 1."""
    module = importlib.import_module(name)
    estimates, calls = recorded(monkeypatch, module, loss)
    epochs, minibatches = 3, 4
    module.train(module.Args(total_timesteps=3 * 256, num_envs=2, num_steps=128,
                             update_epochs=epochs, num_minibatches=minibatches, norm_adv=False,
                             runs_dir=str(tmp_path)))
    assert len(estimates) == 3 and len(calls) == 3 * epochs * minibatches
    for update, batch in enumerate(estimates):
        mine = calls[update * epochs * minibatches:(update + 1) * epochs * minibatches]
        torch.testing.assert_close(mine[0][0], torch.ones_like(mine[0][0]))  # r_t at θ = θ'
        for epoch in range(epochs):
            parts = [a for _, a in mine[epoch * minibatches:(epoch + 1) * minibatches]]
            assert all(len(part) == 64 for part in parts)
            torch.testing.assert_close(torch.cat(parts).sort().values, batch.sort().values)
        assert any((ratio - 1).abs().max() > 1e-4 for ratio, _ in mine[1:])  # θ moved


# --- the rollout's fast sampler draws from the same pi_theta(.|s) as the Distribution ---

def test_actor_sample_draws_from_the_actors_distribution(make_actor, moved_copy, head):
    actor, obs = make_actor(ppo_clip, head, batch=3)
    actor = moved_copy(actor, scale=1.0)  # away from the near-uniform start, so errors show
    n = 40_000
    torch.manual_seed(5)
    with torch.no_grad():
        dist = actor(obs)
        draws = actor.sample(obs.repeat(n, 1)).reshape(n, len(obs), *dist.event_shape)
    if head == "categorical":
        for action in range(dist.probs.shape[-1]):
            p = dist.probs[:, action]
            frequency = (draws == action).double().mean(0)
            assert torch.all((frequency - p).abs() < 4 * torch.sqrt(p * (1 - p) / n))
    else:
        mean, std = dist.mean, dist.stddev  # loc and exp(log_std) of the Gaussian
        assert torch.all((draws.mean(0) - mean).abs() < 4 * std / n ** 0.5)
        assert torch.all((draws.std(0) / std - 1).abs() < 4 / (2 * n) ** 0.5)


# --- KL(pi_theta' || pi_theta), closed form [the constraint of Where We Left Off] ---

def test_mean_kl_matches_a_monte_carlo_estimate(make_actor, moved_copy, head, monte_carlo_kl):
    old_actor, obs = make_actor(ppo_clip, head)
    actor = moved_copy(old_actor)
    with torch.no_grad():
        old_dist, new_dist = old_actor(obs), actor(obs)
        kl = mean_kl(old_dist, new_dist).item()
    estimate, standard_error = monte_carlo_kl(old_dist, new_dist, num_samples=4000)
    # the perturbation must move the policy well beyond the noise, or the test would say nothing
    # (measured: the reverse KL(new || old) lies 19 and 100 standard errors away)
    assert kl > 20 * standard_error
    assert abs(kl - estimate) < 4 * standard_error


# --- flags: the algorithm's own (the shared ones are checked in test_end_to_end.py) ---

@pytest.mark.parametrize("argv, mention", [
    pytest.param(["--clip-coef", "0"], "--clip-coef 0", id="clip-coef-0"),
    # infinite weights used to pass, then stop at iteration 1 without naming the flag
    pytest.param(["--vf-coef", "inf"], "--vf-coef inf", id="vf-coef-inf"),
    pytest.param(["--ent-coef", "inf"], "--ent-coef inf", id="ent-coef-inf"),
])
def test_bad_flag_exits_2_with_one_line(assert_bad_flag, argv, mention):
    assert_bad_flag("ppo_clip.py", argv, mention)


# --- --capture-video: a recording of the evaluation, or a one-line request for moviepy ---

def test_capture_video_records_the_evaluation_or_asks_for_moviepy(short_run, run_cli,
                                                                  assert_clean_error):
    run_dir = short_run(ppo_clip, "cartpole")[1]
    result = run_cli("ppo_clip.py", "--eval-checkpoint", run_dir / "model.pt",
                     "--eval-episodes", 1, "--capture-video")
    if importlib.util.find_spec("moviepy") is None:  # an optional package: not in requirements
        assert "moviepy" in assert_clean_error(result)
    else:
        assert result.returncode == 0, result.stderr
        assert list((run_dir / "eval" / "videos").glob("*.mp4"))  # apart from training's


# --- --target-kl: the epochs of an update end once its exact KL exceeds the cap ---

def test_target_kl_below_any_kl_leaves_one_epoch_per_update(trained, rows_without_column):
    # every update moves the actor, so a cap of 1e-12 is passed after the first epoch: the run
    # must then be the run with one epoch, row for row (the check draws no random numbers)
    flags = dict(total_timesteps=1024, update_epochs=4)
    capped = trained(ppo_clip, **flags, target_kl=1e-12)[1]
    one_epoch = trained(ppo_clip, **{**flags, "update_epochs": 1})[1]
    four_epochs = trained(ppo_clip, **flags)[1]
    for name in ("updates.csv", "episodes.csv"):
        column = "sps" if name == "updates.csv" else "wall_time"
        assert (rows_without_column(capped / name, column)
                == rows_without_column(one_epoch / name, column))
    assert (rows_without_column(capped / "updates.csv", "sps")
            != rows_without_column(four_epochs / "updates.csv", "sps"))


# --- --recompute-adv and --scale-value-targets (Tianshou's PPO); ppo_kl has the same pieces ---

def test_return_scale_is_the_std_of_every_return_so_far():
    scale, seen = ppo_clip.ReturnScale(), []
    assert scale.std == 1.0  # exactly: no scaling before the first batch
    generator = torch.Generator().manual_seed(0)
    for size, spread, shift in [(7, 1.0, 0.0), (300, 50.0, -200.0), (64, 5.0, 30.0), (1, 1.0, 9.0)]:
        batch = shift + spread * torch.randn(size, generator=generator, dtype=torch.float64)
        scale.update(batch.float())
        seen.extend(batch.float().tolist())
        # the population std of all samples at once, not the pooled update
        mean = sum(seen) / len(seen)
        direct = math.sqrt(sum((x - mean) ** 2 for x in seen) / len(seen))
        assert scale.std == pytest.approx(direct, rel=1e-7)  # σ² + 1e-8 inside the root
    off = ppo_clip.ReturnScale(enabled=False)  # without --scale-value-targets
    off.update(torch.tensor([100.0, -300.0, 7.0]))
    assert off.std == 1.0 and off.count == 0


def test_scale_reward_false_keeps_the_raw_rewards_under_normalize():
    space = gym.spaces.Box(-2.0, 2.0, (1,), seed=0)
    actions = [space.sample() for _ in range(50)]
    raw_env = gym.make("Pendulum-v1")
    raw_env.reset(seed=3)
    raw = [raw_env.step(a)[1] for a in actions]
    rewards = {}
    for scale_reward in (True, False):
        env = ppo_clip.make_env("Pendulum-v1", 0, False, Path("unused"), 0.99, True,
                                scale_reward=scale_reward)()
        env.reset(seed=3)
        rewards[scale_reward] = [env.step(a)[1] for a in actions]
    assert rewards[False] == pytest.approx(raw, rel=1e-6)
    assert rewards[True] != pytest.approx(raw, rel=1e-2)  # NormalizeReward's scaling


@pytest.mark.parametrize("name", ["ppo_clip", "ppo_kl"])
def test_scaled_value_targets_are_near_unit_scale_and_raw_ones_are_not(trained, read_csv, name):
    # Pendulum's raw returns (γ = 0.98) lie tens below 0: regressing them gave value losses of
    # 320-520 on this machine; divided by their running std, 0.5-2.5
    module = importlib.import_module(name)
    flags = dict(env_id="Pendulum-v1", total_timesteps=2048, num_envs=2, num_steps=128,
                 num_minibatches=4, learning_rate=3e-4)
    raw = read_csv(trained(module, **flags)[1] / "updates.csv")["value_loss"]
    scaled = read_csv(trained(module, **flags, scale_value_targets=True)[1] / "updates.csv")
    assert raw.min() > 100
    assert scaled["value_loss"].max() < 10


@pytest.mark.parametrize("name", ["ppo_clip", "ppo_kl"])
def test_recompute_adv_reestimates_before_every_epoch_with_the_critic_as_it_is(monkeypatch,
                                                                                tmp_path, name):
    module = importlib.import_module(name)
    calls = []
    original = module.advantages_and_returns

    def recording(critic, *rest):
        calls.append([p.detach().clone() for p in critic.parameters()])
        return original(critic, *rest)

    monkeypatch.setattr(module, "advantages_and_returns", recording)
    for recompute in (False, True):
        calls.clear()
        module.train(module.Args(total_timesteps=512, num_envs=2, num_steps=128,
                                 update_epochs=3, recompute_adv=recompute,
                                 runs_dir=str(tmp_path)))
        assert len(calls) == 2 * (3 if recompute else 1)  # 2 iterations
    # within an iteration each estimate uses the critic after the previous epoch's steps
    for before, after in zip(calls[:2], calls[1:3]):
        assert any(not torch.equal(b, a) for b, a in zip(before, after))



@pytest.mark.parametrize("name, loss", OBJECTIVES)
def test_recompute_adv_feeds_each_epochs_loss_its_own_estimate(monkeypatch, tmp_path, name,
                                                                loss):
    """One minibatch a epoch, no normalisation: epoch k's objective sees exactly the Â_t of the
    k-th estimate (in the minibatch's order), and the estimates move as the critic learns."""
    module = importlib.import_module(name)
    estimates, calls = recorded(monkeypatch, module, loss)
    module.train(module.Args(total_timesteps=256, num_envs=2, num_steps=128, update_epochs=3,
                             num_minibatches=1, recompute_adv=True, norm_adv=False,
                             runs_dir=str(tmp_path)))
    assert len(estimates) == len(calls) == 3
    for estimate, (_, used) in zip(estimates, calls):
        torch.testing.assert_close(used.sort().values, estimate.sort().values)
    assert not torch.allclose(estimates[0], estimates[2])


@pytest.mark.parametrize("name", ["ppo_clip", "ppo_kl"])
def test_value_clip_is_centred_on_the_critics_own_output_under_scaled_targets(monkeypatch,
                                                                              tmp_path, name):
    """--vf-clip with --scale-value-targets: V_old is what the critic gave before the update,
    b_values divided by the σ they were valued with, not by σ updated with the batch's returns.
    At each update's first minibatch the critic has not moved yet, so V_old equals V there."""
    module = importlib.import_module(name)
    calls = []
    original = module.value_loss

    def recording(newvalue, returns, old_values, vf_clip=None):
        calls.append((newvalue.detach().clone(), old_values.clone()))
        return original(newvalue, returns, old_values, vf_clip)

    monkeypatch.setattr(module, "value_loss", recording)
    module.train(module.Args(env_id="Pendulum-v1", total_timesteps=768, num_envs=1,
                             num_steps=256, num_minibatches=2, update_epochs=2,
                             scale_value_targets=True, vf_clip=0.2, runs_dir=str(tmp_path)))
    firsts = calls[::4]  # 2 epochs of 2 minibatches an update, 3 updates
    assert len(calls) == 12
    for newvalue, old_values in firsts:
        torch.testing.assert_close(old_values, newvalue, rtol=1e-5, atol=1e-5)
