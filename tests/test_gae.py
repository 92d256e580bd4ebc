"""gae.py checked against independent computations: the exact V^pi and Q^pi against
Monte-Carlo averages, the bias and variance of A_hat against the error's moments summed step by
step and against what the article [From Baseline to Advantage, reference 1] says of lambda.
Its compute_gae is checked in test_ppo_clip.py, beside the algorithm scripts' copy."""

import math
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pytest
import torch

import gae

REPO = Path(__file__).resolve().parents[1]
LAMBDAS = (0.0, 0.5, 0.9, 1.0)


def small_mdp(seed: int, num_states: int = 6, num_actions: int = 2, gamma: float = 0.95,
              term_prob: float = 0.1) -> tuple:
    rng = np.random.default_rng(seed)
    transitions, mdp_rewards, policy = gae.random_mdp(num_states, num_actions, 0.5, rng)
    v = gae.state_values(transitions, mdp_rewards, policy, gamma, term_prob)
    q = gae.action_values(transitions, mdp_rewards, v, gamma, term_prob)
    return rng, transitions, mdp_rewards, policy, v, q


def test_lambda_one_is_the_return_to_go_minus_v():
    gamma, term_prob = 0.95, 0.1
    rng, transitions, mdp_rewards, policy, _, _ = small_mdp(2, gamma=gamma, term_prob=term_prob)
    states, actions, next_states, terminations, valid = gae.sample_rollout(
        transitions, policy, term_prob, 8, 30, rng)
    critic = rng.standard_normal(len(mdp_rewards))  # any V: the TD errors telescope
    rewards = mdp_rewards[states, actions] * valid
    ends = torch.from_numpy(terminations.astype(np.float64))
    got = gae.compute_gae(torch.from_numpy(rewards), torch.from_numpy(critic[states]),
                          torch.from_numpy(critic[next_states]), ends, ends, gamma, 1.0).numpy()
    T, N = states.shape
    assert terminations[valid].sum() > 2 * N  # several episodes per column
    for n in range(N):
        for t in np.flatnonzero(valid[:, n]):
            # G_t = sum_k gamma^(k-t) r_k up to the terminal step of this episode
            return_to_go, k = 0.0, t
            while True:
                return_to_go += gamma ** (k - t) * rewards[k, n]
                if terminations[k, n]:
                    break
                k += 1
            assert got[t, n] == pytest.approx(return_to_go - critic[states[t, n]], abs=1e-9)


def test_exact_values_match_monte_carlo_returns():
    gamma, term_prob = 0.9, 0.1
    rng, transitions, mdp_rewards, policy, v, q = small_mdp(3, num_states=5, gamma=gamma,
                                                             term_prob=term_prob)
    # num_steps 1: every column plays exactly one episode, from a uniformly random state
    states, actions, _, _, valid = gae.sample_rollout(transitions, policy, term_prob, 20_000, 1,
                                                      rng)
    discount = gamma ** np.arange(len(states))[:, None]
    returns = (discount * mdp_rewards[states, actions] * valid).sum(axis=0)  # [N]
    for s in range(len(v)):
        sample = returns[states[0] == s]
        standard_error = sample.std(ddof=1) / np.sqrt(len(sample))
        assert abs(sample.mean() - v[s]) < 4 * standard_error, s
        for a in range(mdp_rewards.shape[1]):
            sample = returns[(states[0] == s) & (actions[0] == a)]
            standard_error = sample.std(ddof=1) / np.sqrt(len(sample))
            assert abs(sample.mean() - q[s, a]) < 4 * standard_error, (s, a)
    # A^pi has mean zero under pi in every state: sum_a pi(a|s) (Q(s,a) - V(s)) = 0
    np.testing.assert_allclose((policy * (q - v[:, None])).sum(axis=1), 0.0, atol=1e-12)


@pytest.fixture(scope="module")
def measured() -> dict:
    """Error statistics of A_hat for three (critic, target) pairs, per group of columns."""
    rng, transitions, mdp_rewards, policy, v, q = small_mdp(4)
    eps = 1.0 * v.std() * rng.standard_normal(len(v))  # a fixed critic error, noise level 1
    critics = [v, v + eps, v + eps]
    adv = q - v[:, None]
    targets = [adv, q - (v + eps)[:, None], adv]
    rollout = gae.sample_rollout(transitions, policy, 0.1, 2000, 60, rng)
    # columns are independent, steps within a column are not: 20 groups of columns give
    # Monte-Carlo errors that account for the correlation (batch means)
    groups = np.stack([gae.error_stats(tuple(x[:, k::20] for x in rollout), mdp_rewards, critics,
                                       targets, 0.95, LAMBDAS) for k in range(20)])
    return dict(groups=groups, stats=groups.sum(axis=0), eps=eps,
                num_actions=mdp_rewards.shape[1])


def bias_errors(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """From [K, 3, S * A] per-group statistics: the visit weights w_sa, bias(s,a) and the
    squared standard error of bias(s,a) by batch means over the K groups."""
    count_k, total_k = groups[:, 0], groups[:, 1]
    count = count_k.sum(axis=0)
    bias = total_k.sum(axis=0) / count
    K = len(groups)
    se2 = K / (K - 1) * ((total_k - count_k * bias) ** 2).sum(axis=0) / count**2
    return count / count.sum(), bias, se2


def noise_floor(groups: np.ndarray) -> float:
    """E[bias_sq] when the true bias is zero: sum_sa w_sa se(s,a)^2."""
    weight, _, se2 = bias_errors(groups)
    return float(weight @ se2)


def test_exact_critic_is_unbiased_for_every_lambda(measured):
    groups = measured["groups"]
    for j, gae_lambda in enumerate(LAMBDAS):
        bias_sq, variance = gae.bias_variance(measured["stats"][0, j])
        assert variance > 0
        # under zero bias, bias_sq / floor is about chi^2 with S * A = 12 dof, over 12
        assert bias_sq < 4 * noise_floor(groups[:, 0, j]), gae_lambda
    # the same check has the power to see the bias of a noisy critic at lambda = 0
    assert gae.bias_variance(measured["stats"][1, 0])[0] > 100 * noise_floor(groups[:, 1, 0])


def test_noisy_critic_bias_falls_and_variance_rises_with_lambda(measured):
    bias_0, variance_0 = gae.bias_variance(measured["stats"][1, 0])
    bias_1, variance_1 = gae.bias_variance(measured["stats"][1, -1])
    assert bias_0 > 3 * bias_1
    assert variance_1 > 2 * variance_0
    # lambda = 1 is G_t - V(s_t), unbiased for Q^pi(s,a) - V(s) whatever V is
    assert bias_1 < 4 * noise_floor(measured["groups"][:, 1, -1])


def test_against_advantage_lambda_one_keeps_the_baseline_error(measured):
    # E[G_t - V(s_t) | s, a] - A^pi(s, a) = -eps(s): the bias is the critic's error at s_t
    groups = measured["groups"][:, 2, -1]
    weight, _, se2 = bias_errors(groups)
    eps_of_pair = np.repeat(measured["eps"], measured["num_actions"])  # pair = s * A + a
    expected = float(weight @ eps_of_pair**2)
    bias_sq, variance = gae.bias_variance(measured["stats"][2, -1])
    # bias_sq = sum w (-eps + noise)^2: the floor, plus a cross term of std
    # 2 sqrt(sum w^2 eps^2 se^2)
    tolerance = weight @ se2 + 4 * 2 * np.sqrt((weight**2 * eps_of_pair**2) @ se2)
    assert abs(bias_sq - expected) < tolerance
    # the variance is the same as against Q^pi - V: the targets differ by a constant per (s, a)
    assert variance == pytest.approx(gae.bias_variance(measured["stats"][1, -1])[1], rel=1e-9)


def test_bias_and_variance_are_the_moments_of_the_error_per_pair_summed_directly():
    """bias_sq = sum_sa w_sa mean(e | s, a)^2 and variance = sum_sa w_sa var(e | s, a), w_sa the
    share of visits, with e = A_hat - target listed step by step here; together they are the
    mean of e^2 over all steps (the law of total variance)."""
    gamma, gae_lambda = 0.95, 0.5
    rng, transitions, mdp_rewards, policy, v, q = small_mdp(5, gamma=gamma)
    critic, target = v + rng.standard_normal(len(v)), q - v[:, None]
    rollout = gae.sample_rollout(transitions, policy, 0.1, 40, 30, rng)
    states, actions, next_states, terminations, valid = rollout
    ends = torch.from_numpy(terminations.astype(np.float64))
    advantages = gae.compute_gae(torch.from_numpy(mdp_rewards[states, actions] * valid),
                                 torch.from_numpy(critic[states]),
                                 torch.from_numpy(critic[next_states]), ends, ends, gamma,
                                 gae_lambda).numpy()
    errors = {}  # (s, a) -> e_t of every valid step at (s, a)
    for t, n in zip(*np.nonzero(valid)):
        pair = (states[t, n], actions[t, n])
        errors.setdefault(pair, []).append(advantages[t, n] - target[pair])
    steps = sum(map(len, errors.values()))
    bias_sq = sum(len(e) / steps * np.mean(e) ** 2 for e in errors.values())
    variance = sum(len(e) / steps * np.var(e) for e in errors.values())
    stats = gae.error_stats(rollout, mdp_rewards, [critic], [target], gamma, (gae_lambda,))
    assert gae.bias_variance(stats[0, 0]) == pytest.approx((bias_sq, variance), rel=1e-9)
    mean_square = np.mean([x**2 for e in errors.values() for x in e])
    assert bias_sq + variance == pytest.approx(mean_square, rel=1e-9)


def test_run_writes_the_table_and_figure_reproducibly(tmp_path, capsys):
    def tiny_run(name: str) -> str:
        args = gae.Args(num_envs=200, num_steps=20, num_batches=2, gae_lambda=(0.0, 0.5, 1.0),
                        critic_noise=(0.0, 1.0), csv_path=str(tmp_path / f"{name}.csv"),
                        plot_path=str(tmp_path / f"{name}.png"))
        gae.check_args(args)
        gae.run(args)
        assert (tmp_path / f"{name}.png").stat().st_size > 0
        return (tmp_path / f"{name}.csv").read_text()

    first = tiny_run("a")
    assert first == tiny_run("b")
    lines = first.splitlines()
    assert lines[0] == "lambda,critic_noise,bias_sq,variance,mse"
    assert len(lines) == 1 + 3 * 2
    for line in lines[1:]:
        _, _, bias_sq, variance, mse = map(float, line.split(","))
        assert mse == pytest.approx(bias_sq + variance, rel=1e-5)
    assert "lowest MSE" in capsys.readouterr().out


def run_gae(cwd: Path, *flags: str) -> subprocess.CompletedProcess:
    """python gae.py flags, run from cwd, where its default paths (runs/gae/...) land."""
    return subprocess.run([sys.executable, str(REPO / "gae.py"), *flags], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("flags, named", [
    (["--gae-lambda", "0.5", "1.5"], "--gae-lambda"),
    (["--gamma", "0"], "--gamma"),
    (["--num-envs", "0"], "--num-envs"),
    (["--csv-path", "/proc/x/a.csv"], "--csv-path /proc/x/a.csv"),
    (["--seed", "-1"], "--seed -1"),
    (["--plot-path", "figure.xyz"], "--plot-path figure.xyz"),
    (["--plot-path", "figure"], "--plot-path figure"),  # savefig would add .png unannounced
])
def test_bad_input_exits_2_with_one_line(tmp_path, flags, named):
    """Bad flags, and an output path that cannot be written, end at once: one line, no
    experiment (nothing on stdout), no traceback."""
    if "/proc/" in named and not Path("/proc").is_dir():
        pytest.skip("no /proc here")
    result = run_gae(tmp_path, *flags)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gae.py: error: " + named), result.stderr


@pytest.mark.parametrize("flag, where", [("--csv-path", "a_file/x/a.csv"),
                                         ("--plot-path", "a_file/a.png"),
                                         ("--plot-path", ".")])
def test_unwritable_output_path_is_refused(tmp_path, capsys, flag, where):
    """Below a regular file, or a folder given for a file: exit 2 with one line naming the
    flag and the path (before the experiment: __main__ checks the paths before run)."""
    (tmp_path / "a_file").write_text("")
    with pytest.raises(SystemExit) as exit_info:
        gae.check_output_path(flag, tmp_path / where)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: {flag} {tmp_path / where}: " in err


def test_default_paths_leave_the_committed_figure_and_table_alone(tmp_path):
    """Run from a folder holding a copy of the committed plots/gae_bias_variance.*, as from the
    repository root, the defaults write to runs/gae/ and leave the copies as they were."""
    (tmp_path / "plots").mkdir()
    names = ("gae_bias_variance.csv", "gae_bias_variance.png")
    for name in names:
        (tmp_path / "plots" / name).write_bytes((REPO / "plots" / name).read_bytes())

    def committed() -> list[bytes]:
        """The copies and the real committed files."""
        return [(folder / name).read_bytes() for folder in (tmp_path / "plots", REPO / "plots")
                for name in names]

    before = committed()
    result = run_gae(tmp_path, "--num-envs", "50", "--num-steps", "5", "--num-batches", "1",
                     "--gae-lambda", "0", "1", "--critic-noise", "0")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert (tmp_path / "runs" / "gae" / names[0]).read_text().startswith("lambda,critic_noise")
    assert (tmp_path / "runs" / "gae" / names[1]).stat().st_size > 0
    assert committed() == before


@pytest.mark.parametrize("change", [dict(term_prob=0.0), dict(gamma=1.5), dict(gae_lambda=()),
                                    dict(critic_noise=(0.0, -1.0)), dict(num_steps=-3),
                                    dict(concentration=0.0), dict(concentration=math.inf),
                                    dict(critic_noise=(1.0, math.inf)), dict(seed=2**32)])
def test_check_args_refuses(change, capsys):
    with pytest.raises(SystemExit) as exit_info:
        gae.check_args(gae.Args(**change))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error: --" in err
