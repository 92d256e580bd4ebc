"""ppo_kl.py: L^KLPEN and the adaptive beta, each checked against an independent computation.

The runs every script shares (run folder, reproducibility, learning, bad input, evaluation)
are in test_end_to_end.py; here is what only PPO with the KL penalty does.
"""

import numpy as np
import pytest
import torch

import ppo_kl
from ppo_kl import kl_penalty_loss, mean_kl, update_beta

KL_TARGET = 0.01
LOW, HIGH = KL_TARGET / 1.5, KL_TARGET * 1.5  # the band of arXiv:1707.06347 section 4


# --- the beta rule [arXiv:1707.06347 section 4] ---

@pytest.mark.parametrize("kl, factor", [
    pytest.param(0.0, 0.5, id="no-kl"),
    pytest.param(LOW * (1 - 1e-9), 0.5, id="just-below-low"),
    pytest.param(LOW, 1.0, id="at-low"),
    pytest.param(LOW * (1 + 1e-9), 1.0, id="just-above-low"),
    pytest.param(KL_TARGET, 1.0, id="at-target"),
    pytest.param(HIGH * (1 - 1e-9), 1.0, id="just-below-high"),
    pytest.param(HIGH, 1.0, id="at-high"),
    pytest.param(HIGH * (1 + 1e-9), 2.0, id="just-above-high"),
    pytest.param(1.0, 2.0, id="far-above"),
])
@pytest.mark.parametrize("beta", [0.3, 1.0, 8.0])
def test_update_beta_halves_below_the_band_doubles_above_keeps_inside(kl, factor, beta):
    assert update_beta(beta, kl, KL_TARGET) == beta * factor


@pytest.mark.parametrize("kl, power", [(LOW / 2, -1), (KL_TARGET, 0), (HIGH * 2, 1)])
def test_update_beta_with_another_factor_divides_keeps_or_multiplies(kl, power):
    assert update_beta(0.8, kl, KL_TARGET, factor=1.25) == pytest.approx(0.8 * 1.25 ** power)


# --- L^KLPEN = mean(r_t A_t) - beta KL [PPO: Approximate the Constraint with Clipping] ---

@pytest.mark.parametrize("beta", [0.0, 0.5, 3.0])
def test_kl_penalty_loss_is_minus_the_formula(random_ratios_and_advantages, beta):
    ratio, advantages = random_ratios_and_advantages(seed=0, n=200)
    kl = torch.tensor(0.037, dtype=torch.float64)
    surrogate = sum(r * a for r, a in zip(ratio.tolist(), advantages.tolist())) / len(ratio)
    loss = kl_penalty_loss(ratio, advantages, kl, beta)
    assert loss.item() == pytest.approx(-(surrogate - beta * kl.item()), rel=1e-12)


def test_beta_zero_gives_exactly_the_gradient_of_the_plain_surrogate(make_actor, moved_copy,
                                                                     head):
    old_actor, obs = make_actor(ppo_kl, head)
    actor = moved_copy(old_actor)  # theta != theta', so the KL has a gradient
    with torch.no_grad():
        old_dist = old_actor(obs)
        actions = old_dist.sample()
    advantages = torch.randn(len(obs))
    params = list(actor.parameters())

    def gradient(loss_of_ratio_and_dist):
        dist = actor(obs)
        ratio = ppo_kl.probability_ratio(dist.log_prob(actions), old_dist.log_prob(actions))
        return torch.autograd.grad(loss_of_ratio_and_dist(ratio, dist), params)

    plain = gradient(lambda ratio, dist: -(ratio * advantages).mean())
    for beta, same in ((0.0, True), (1.0, False)):
        penalised = gradient(
            lambda ratio, dist: kl_penalty_loss(ratio, advantages, mean_kl(old_dist, dist), beta))
        assert all(torch.equal(p, q) for p, q in zip(penalised, plain)) == same, beta


def test_penalty_is_flat_at_theta_old_with_beta_times_the_fisher_matrix_as_hessian(
        make_actor, head, of_flat_parameters, fisher_matrix):
    """KL(pi_theta' || pi_theta) has its minimum at theta = theta': the penalty's gradient
    there is zero, so the first update steps along the plain surrogate, while its Hessian is
    not: it pulls back once theta moves. That Hessian is beta F, F = J^T M J the closed-form
    Fisher matrix, which pins the size of the penalty (at theta = theta' both directions of
    the KL have this Hessian; the Monte-Carlo test of mean_kl in test_ppo_clip.py pins the
    direction) [PPO: Approximate the Constraint with Clipping]."""
    actor, obs = make_actor(ppo_kl, head, hidden=4, dtype=torch.float64)
    with torch.no_grad():
        actions = actor(obs).sample()
    zero_advantages = torch.zeros(len(obs), dtype=torch.float64)
    beta = 2.0

    def penalty(old_dist, new_dist):  # L^KLPEN with A = 0 is the penalty alone
        ratio = (new_dist.log_prob(actions) - old_dist.log_prob(actions)).exp()
        return kl_penalty_loss(ratio, zero_advantages, mean_kl(old_dist, new_dist), beta)

    f, theta_old = of_flat_parameters(actor, obs, penalty)
    gradient = torch.autograd.functional.jacobian(f, theta_old)
    hessian = torch.autograd.functional.hessian(f, theta_old)
    assert gradient.abs().max() < 1e-12
    # the loss is MINUS the objective, so + beta KL: its Hessian is + beta F
    torch.testing.assert_close(hessian, beta * fisher_matrix(actor, obs), rtol=1e-10,
                               atol=1e-12)
    v = torch.randn(len(theta_old), generator=torch.Generator().manual_seed(2),
                    dtype=torch.float64)
    assert torch.linalg.eigvalsh(hessian).min() > -1e-10  # a minimum: no negative curvature
    # positive curvature along a random direction (measured 0.064 and 0.19 times |v|^2)
    assert v @ hessian @ v > 1e-2 * (v @ v)
    # the gradient vanishes only at theta' (it is not zero for want of a graph)
    moved = torch.autograd.functional.jacobian(f, theta_old + 0.1 * v)
    assert moved.abs().max() > 1e-3


# --- flags ---

@pytest.mark.parametrize("argv, mention", [
    pytest.param(["--kl-target", "0"], "--kl-target 0", id="kl-target-0"),
    pytest.param(["--beta-init", "-1"], "--beta-init -1", id="beta-init-negative"),
    # with adaptation on, beta = 0 would stay 0 for ever: halving or doubling 0 gives 0
    pytest.param(["--beta-init", "0"], "--beta-init 0.0", id="beta-init-0-adaptive"),
    # a factor of 1 would never move beta, one below 1 would move it the wrong way
    pytest.param(["--beta-factor", "1"], "--beta-factor 1.0", id="beta-factor-1"),
    pytest.param(["--beta-factor", "inf"], "--beta-factor inf", id="beta-factor-inf"),
    pytest.param(["--beta-init", "inf"], "--beta-init inf", id="beta-init-inf"),
])
def test_bad_flag_exits_2_with_one_line(assert_bad_flag, argv, mention):
    assert_bad_flag("ppo_kl.py", argv, mention)


# --- beta in a run ---

def test_no_adaptive_keeps_beta_at_beta_init(run_cli, tmp_path, read_csv):
    result = run_cli("ppo_kl.py", "--no-adaptive", "--beta-init", "3", "--total-timesteps", 2048)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    updates = read_csv(run_dir / "updates.csv")
    np.testing.assert_array_equal(updates["beta"], 3.0)
    # the KL left the band at least once, so the adaptive rule would have moved beta
    assert np.any((updates["kl"] < LOW) | (updates["kl"] > HIGH)), updates["kl"]


def test_the_penalty_holds_the_update_near_theta_old(trained, read_csv):
    """The first update of two runs that differ only in beta: same seed, same first batch, same
    start. The penalty's gradient must reach the actor (measured KL 0.0015 with beta 0,
    0.00001 with beta 30)."""
    defaults = ppo_kl.Args()
    one_batch = defaults.num_envs * defaults.num_steps
    first_kl = {beta: read_csv(trained(ppo_kl, total_timesteps=one_batch, adaptive=False,
                                       beta_init=beta)[1] / "updates.csv")["kl"][0]
                for beta in (0.0, 30.0)}
    assert first_kl[30.0] < first_kl[0.0] / 10, first_kl


def test_each_update_uses_and_logs_beta_and_sets_the_next_by_the_rule(monkeypatch, tmp_path,
                                                                        read_csv):
    used = []  # the beta of every call of the loss, in order
    loss = ppo_kl.kl_penalty_loss

    def recording_loss(ratio, advantages, kl, beta):
        used.append(beta)
        return loss(ratio, advantages, kl, beta)

    monkeypatch.setattr(ppo_kl, "kl_penalty_loss", recording_loss)
    args = ppo_kl.Args(total_timesteps=5_000, runs_dir=str(tmp_path))  # 19 updates on CartPole
    updates = read_csv(ppo_kl.train(args) / "updates.csv")
    beta, kl = updates["beta"], updates["kl"]
    # the loss of update i used the beta its row shows (.6g in the CSV: 6 digits)
    calls_per_update = args.update_epochs * args.num_minibatches
    np.testing.assert_allclose(np.reshape(used, (len(beta), calls_per_update)),
                               np.repeat(beta[:, None], calls_per_update, axis=1), rtol=1e-5)
    assert beta[0] == args.beta_init
    for i in range(len(beta) - 1):
        assert beta[i + 1] == pytest.approx(update_beta(beta[i], kl[i], args.kl_target),
                                            rel=1e-5), i
    ratio = beta[1:] / beta[:-1]
    # every branch of the rule occurs in this run (measured: 6 halvings, 6 doublings, 6 keeps)
    assert {0.5, 1.0, 2.0} <= set(np.round(ratio, 6)), ratio
