"""vpg.py: the policy-gradient loss and the earlier baselines, each checked against an
independent computation.

The runs every script shares (run folder, reproducibility, learning, bad input, evaluation)
are in test_end_to_end.py; here is what only the vanilla policy gradient does
[From Baseline to Advantage].
"""

import dataclasses
import math

import pytest
import torch

import vpg
from vpg import baseline_advantages, policy_gradient_loss


def test_loss_gradient_is_minus_the_reinforce_estimator(make_actor, head):
    """grad of the loss = -(1/n) sum_t grad log pi(a_t|s_t) A_t, the sum formed sample by sample
    from each log-probability's own gradient."""
    actor, obs = make_actor(vpg, head, batch=16)
    params = list(actor.parameters())
    with torch.no_grad():
        actions = actor(obs).sample()
    advantages = torch.randn(len(obs), generator=torch.Generator().manual_seed(1))

    loss = policy_gradient_loss(actor(obs).log_prob(actions), advantages)
    gradient = torch.autograd.grad(loss, params)

    estimate = [torch.zeros_like(p) for p in params]
    for t in range(len(obs)):
        grad_log_pi = torch.autograd.grad(actor(obs[t]).log_prob(actions[t]), params)
        for total, g in zip(estimate, grad_log_pi):
            total += g * advantages[t]
    assert any(g.abs().max() > 0 for g in gradient)
    for g, total in zip(gradient, estimate):
        torch.testing.assert_close(g, -total / len(obs))


def returns_to_go_by_definition(rewards, dones, gamma, centred=False) -> torch.Tensor:
    """G_t = sum_{k=t}^{end} gamma^(k-t) r_k for every [t, n], end = the first step from t on
    that ends the episode; 0 where the episode does not end inside the rollout. centred:
    minus the mean of G over the steps whose episode ends inside the rollout."""
    T, N = rewards.shape
    returns, known = torch.zeros(T, N, dtype=torch.float64), torch.zeros(T, N, dtype=torch.bool)
    for t in range(T):
        for n in range(N):
            end = next((k for k in range(t, T) if dones[k, n]), None)
            if end is not None:
                known[t, n] = True
                returns[t, n] = sum(gamma ** (k - t) * rewards[k, n].item()
                                    for k in range(t, end + 1))
    if centred:
        returns[known] -= returns[known].mean()
    return returns


@pytest.mark.parametrize("gamma", [0.99, 0.9, 1.0])
def test_baseline_advantages_are_returns_to_go_and_their_centred_version(rollout, gamma):
    """The rollout has terminations, truncations (no critic: no bootstrap either way) and
    episodes cut by the rollout's end, whose steps must get no weight."""
    rewards, _, _, terminations, dones = rollout
    expected = returns_to_go_by_definition(rewards, dones, gamma)
    assert (expected[-1] == 0).any()  # the rollout does cut an episode
    torch.testing.assert_close(
        baseline_advantages(rewards, terminations, dones, gamma, centred=False), expected)
    torch.testing.assert_close(
        baseline_advantages(rewards, terminations, dones, gamma, centred=True),
        returns_to_go_by_definition(rewards, dones, gamma, centred=True))


@pytest.mark.parametrize("advantage", ["gae", "rtg", "rtg-mean"])
def test_the_advantage_flag_chooses_what_multiplies_log_pi(monkeypatch, tmp_path,
                                                           gae_by_definition, advantage):
    """One iteration; the rollout is read where it enters compute_gae, and the A_t that reach
    policy_gradient_loss must be that rollout's GAE, return-to-go or centred return-to-go,
    divided by their std (--norm-adv scales without centring)."""
    gae_inputs, used = [], []
    compute_gae, loss = vpg.compute_gae, vpg.policy_gradient_loss

    def recording_compute_gae(*args):
        gae_inputs.append(args)
        return compute_gae(*args)

    def recording_loss(logprobs, advantages):
        used.append(advantages)
        return loss(logprobs, advantages)

    monkeypatch.setattr(vpg, "compute_gae", recording_compute_gae)
    monkeypatch.setattr(vpg, "policy_gradient_loss", recording_loss)
    args = vpg.Args(advantage=advantage, runs_dir=str(tmp_path))
    vpg.train(dataclasses.replace(args, total_timesteps=args.num_envs * args.num_steps))  # one
    rewards, values, next_values, terminations, dones, gamma, gae_lambda = gae_inputs[0]
    assert (gamma, gae_lambda) == (args.gamma, args.gae_lambda) and dones.sum() > 0
    if advantage == "gae":
        expected = gae_by_definition(*gae_inputs[0])
    else:
        expected = returns_to_go_by_definition(rewards, dones, gamma,
                                               centred=advantage == "rtg-mean")
    expected = expected.reshape(-1)  # [T * N], row t of the storage first
    (advantages,) = used
    torch.testing.assert_close(advantages.double(), expected / expected.std(), rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize("advantage", ["rtg", "rtg-mean"])
def test_advantage_flag_runs(run_cli, tmp_path, assert_run_folder, advantage):
    result = run_cli("vpg.py", "--advantage", advantage, "--total-timesteps", 2048)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert_run_folder(run_dir, vpg.Args(advantage=advantage, total_timesteps=2048), [])


# --- flags ---

@pytest.mark.parametrize("argv, mention", [
    pytest.param(["--vf-learning-rate", "0"], "--vf-learning-rate 0", id="vf-learning-rate-0"),
    pytest.param(["--vf-learning-rate", "-1e-3"], "--vf-learning-rate -0.001",
                 id="vf-learning-rate-negative"),
    # inf is no step size (the first Adam step leaves the critic non-finite); nan fails every rule
    pytest.param(["--vf-learning-rate", "inf"], "--vf-learning-rate inf",
                 id="vf-learning-rate-inf"),
    pytest.param(["--vf-learning-rate", "nan"], "--vf-learning-rate nan",
                 id="vf-learning-rate-nan"),
])
def test_bad_vf_learning_rate_exits_2_with_one_line(assert_bad_flag, argv, mention):
    assert_bad_flag("vpg.py", argv, mention)


@pytest.mark.parametrize("value", [0.0, math.inf, math.nan])
def test_check_args_raises_bad_input_naming_the_flag(tmp_path, value):
    """From a notebook, check_args raises (BadInput is a ValueError) instead of exiting; only
    the command line turns it into one stderr line and exit status 2."""
    with pytest.raises(ValueError, match="^--vf-learning-rate ") as raised:
        vpg.check_args(vpg.Args(vf_learning_rate=value, runs_dir=str(tmp_path / "runs")))
    assert isinstance(raised.value, vpg.BadInput)
    assert not (tmp_path / "runs").exists()
