"""GAE on its own: its bias and variance against the exact advantages of a small random MDP.

Article sections and where they live here:
    From Baseline to Advantage    A^pi = Q^pi - V^pi: state_values, action_values, step 2 of run;
                                  A_hat_t = sum_l (gamma lambda)^l delta_{t+l}: compute_gae;
                                  "lambda trades off bias against variance": error_stats,
                                  bias_variance, steps 4-5 of run and the figure
    References [1]                lambda = 0 is the one-step TD error, lambda = 1 the Monte-Carlo
                                  return-to-go minus the baseline (tests/test_gae.py checks both)
GAE: Schulman et al., High-Dimensional Continuous Control Using GAE, arXiv:1506.02438.

Notation (article -> code):
    s_t, a_t, r_t               states, actions, rewards (integers 0..S-1 and 0..A-1; [T, N])
    P(s'|s,a), r(s,a), pi(a|s)  transitions [S, A, S], mdp_rewards [S, A], policy [S, A]
    V^pi, Q^pi, A^pi            v_true [S], q_true [S, A], adv_true [S, A] (exact)
    V (the critic)              critic [S] = V^pi + a fixed error of chosen size
    delta_t                     delta (TD residual inside compute_gae)
    A_hat_t                     advantages [T, N]
    gamma, lambda               gamma, gae_lambda

The experiment. A random finite MDP ends each step with probability --term-prob (a terminal
state: no bootstrap after it); a fixed random stochastic policy acts in it. V^pi and Q^pi are
solved exactly, then whole episodes are sampled, back to back in N columns; a column stops only
at an episode end, so no GAE sum is cut by the end of the rollout and lambda = 1 is the full
Monte-Carlo return minus V. For each critic and each lambda the error
e_t = A_hat_t - target(s_t, a_t) is grouped by the pair (s, a):
    bias(s, a) = mean of e_t at (s, a);  variance(s, a) = mean of (e_t - bias(s, a))^2
    bias_sq, variance = their averages over (s, a) weighted by visits;  mse = bias_sq + variance
(so mse is the mean of e_t^2). The critic V = V^pi + eps is a fixed table: eps = noise *
std(V^pi) * z, one standard-normal z per state drawn once and scaled for every noise level;
noise 1 is about as far from V^pi, in RMS over the states, as the constant critic mean(V^pi).

What the bias is measured against (--bias-against). The lambda = 1 estimate G_t - V(s_t) has
mean Q^pi(s, a) - V(s): a wrong critic shifts it by -eps(s), which depends on the state only, so
it is a baseline and does not bias the policy gradient (arXiv:1506.02438 Prop. 1, "gamma-just").
The default target Q^pi(s, a) - V(s) therefore counts only the bias that bootstrapping adds,
E[A_hat_t | s_t, a_t] - target = gamma (1 - lambda) sum_l (gamma lambda)^l E[eps(s_{t+l+1})]
(eps counted as 0 once the episode has ended), which vanishes at lambda = 1 for any critic.
"advantage" compares with A^pi(s, a) itself; then every lambda also carries the baseline error
-eps(s_t), and with the exact critic the two targets agree.

The table and figure go to runs/gae/ unless --csv-path and --plot-path say otherwise; the
committed ones in plots/ are rewritten only when named:
    python gae.py --csv-path plots/gae_bias_variance.csv --plot-path plots/gae_bias_variance.png

Examples:
    python gae.py                                        # the figure and CSV in runs/gae/
    python gae.py --num-states 30 --gamma 0.95 --critic-noise 0 0.25 0.5 1 2 \\
        --bias-against advantage --csv-path /tmp/gae.csv --plot-path /tmp/gae.png
"""

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NoReturn

import numpy as np
import torch
import matplotlib

matplotlib.use("Agg")  # files only, no window
import matplotlib.pyplot as plt
from matplotlib.backend_bases import FigureCanvasBase
import tyro


@dataclass
class Args:
    """GAE's bias and variance against exact advantages of a random MDP (arXiv:1506.02438)."""

    # --- run ---
    seed: int = 1
    """seed of the MDP, the policy, the critics' error and the sampled episodes"""
    csv_path: str = "runs/gae/gae_bias_variance.csv"
    """where the table goes: lambda,critic_noise,bias_sq,variance,mse"""
    plot_path: str = "runs/gae/gae_bias_variance.png"
    """where the figure goes: bias^2, variance and MSE against lambda, one line per critic"""

    # --- MDP and policy ---
    num_states: int = 10
    """states S of the random MDP"""
    num_actions: int = 3
    """actions A in every state; the fixed policy pi(.|s) is drawn from Dirichlet(1, ..., 1)"""
    term_prob: float = 0.05
    """probability in (0, 1] that an episode terminates after a step; mean length 1 / term_prob"""
    concentration: float = 0.1
    """Dirichlet concentration of each P(.|s,a): 0.1 leads an action to few states, 10 to all"""

    # --- sampling ---
    num_envs: int = 2000
    """columns N of a rollout, each playing whole episodes back to back from random states"""
    num_steps: int = 200
    """steps per column, after which it stops at its next episode end (T is a little more)"""
    num_batches: int = 5
    """rollouts of N columns: about num_batches * num_envs * (num_steps + 1/term_prob) steps"""

    # --- advantage ---
    gamma: float = 0.99
    """discount gamma in (0, 1]; 1 is allowed since every episode terminates"""
    gae_lambda: tuple[float, ...] = (0.0, 0.5, 0.8, 0.9, 0.95, 0.97, 0.99, 1.0)
    """the lambdas in [0, 1] of GAE to compare: 0 is the one-step TD error, 1 the return minus V"""
    critic_noise: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0)
    """std of each critic's fixed error in units of std(V^pi): 0 exact, 1 ~ the constant critic"""
    bias_against: Literal["q-minus-critic", "advantage"] = "q-minus-critic"
    """bias against Q^pi(s,a) - V(s), V the critic (the mean at lambda 1), or A^pi; see the top"""


def fail(message: str, status: int = 2) -> NoReturn:
    """End the program with one line on stderr, no traceback."""
    print(f"{Path(sys.argv[0]).name}: error: {message}", file=sys.stderr)
    raise SystemExit(status)


def check_args(args: Args) -> None:
    """Every rule on the flags, before anything is built."""
    if not 0 <= args.seed < 2**32:
        fail(f"--seed {args.seed}: must lie in [0, 2^32)")
    for name in ("num_states", "num_actions", "num_envs", "num_steps", "num_batches"):
        if getattr(args, name) <= 0:
            fail(f"--{name.replace('_', '-')} {getattr(args, name)}: must be a positive integer")
    if not 0 < args.gamma <= 1:
        fail(f"--gamma {args.gamma}: must lie in (0, 1]")
    if not 0 < args.term_prob <= 1:
        fail(f"--term-prob {args.term_prob}: must lie in (0, 1] so that every episode ends")
    if not 0 < args.concentration < math.inf:
        fail(f"--concentration {args.concentration}: must be positive and finite")
    if not args.gae_lambda or not all(0 <= lam <= 1 for lam in args.gae_lambda):
        fail(f"--gae-lambda {' '.join(map(str, args.gae_lambda))}: give one or more values, "
             "each in [0, 1]")
    if not args.critic_noise or not all(0 <= noise < math.inf for noise in args.critic_noise):
        fail(f"--critic-noise {' '.join(map(str, args.critic_noise))}: give one or more "
             "values, each non-negative and finite")


def check_output_path(flag: str, path: Path) -> None:
    """Create the file's folder if need be and check that the file can be written there: a bad
    path then costs one line on stderr at the start, not a traceback after the experiment."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        fail(f"{flag} {path}: cannot create the folder {path.parent} "
             f"({error.strerror or error})")
    if path.is_dir():
        fail(f"{flag} {path}: is a folder; give a file name")
    formats = FigureCanvasBase.get_supported_filetypes()  # what savefig can write
    if flag == "--plot-path" and path.suffix[1:].lower() not in formats:
        fail(f"{flag} {path}: give a file name ending in one of "
             f"{', '.join('.' + name for name in sorted(formats))}")
    if not os.access(path if path.exists() else path.parent, os.W_OK):
        fail(f"{flag} {path}: not writable")


def random_mdp(num_states: int, num_actions: int, concentration: float,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return transitions P(s'|s,a) [S, A, S], rewards r(s,a) [S, A] and a policy pi(a|s)
    [S, A]; rewards are standard normal, each row of P and pi a Dirichlet draw."""
    transitions = rng.dirichlet(np.full(num_states, concentration), size=(num_states, num_actions))
    mdp_rewards = rng.standard_normal((num_states, num_actions))
    policy = rng.dirichlet(np.ones(num_actions), size=num_states)
    return transitions, mdp_rewards, policy


def state_values(transitions: np.ndarray, mdp_rewards: np.ndarray, policy: np.ndarray,
                 gamma: float, term_prob: float) -> np.ndarray:
    """V^pi [S], the solution of V = r_pi + gamma (1 - p_term) P_pi V."""
    # P_pi(s'|s) = sum_a pi(a|s) P(s'|s,a), r_pi(s) = sum_a pi(a|s) r(s,a)
    p_pi = np.einsum("sa,sat->st", policy, transitions)
    r_pi = (policy * mdp_rewards).sum(axis=1)
    # (I - gamma (1 - p_term) P_pi) V = r_pi; invertible since gamma (1 - p_term) < 1
    return np.linalg.solve(np.eye(len(r_pi)) - gamma * (1.0 - term_prob) * p_pi, r_pi)


def action_values(transitions: np.ndarray, mdp_rewards: np.ndarray, v: np.ndarray, gamma: float,
                  term_prob: float) -> np.ndarray:
    """Q^pi [S, A] = r(s,a) + gamma (1 - p_term) sum_s' P(s'|s,a) V^pi(s')."""
    return mdp_rewards + gamma * (1.0 - term_prob) * transitions @ v


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor,
                terminations: torch.Tensor, dones: torch.Tensor, gamma: float,
                gae_lambda: float) -> torch.Tensor:
    """A_t = sum_l (gamma lambda)^l delta_{t+l}, delta_t = r_t + gamma V(s_{t+1}) - V(s_t).

    [From Baseline to Advantage]; arXiv:1506.02438 eq. 16. All inputs are [T, N];
    next_values[t] is V of the true next state of step t (the final observation where the
    episode ended). A termination drops the bootstrap; any episode end (termination or
    time-limit truncation) stops the sum.
    """
    # delta_t = r_t + gamma * (1 - term_t) * V(s_{t+1}) - V(s_t)
    delta = rewards + gamma * (1.0 - terminations) * next_values - values
    advantages = torch.zeros_like(rewards)
    advantage = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        # A_t = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}, the sum written backwards
        advantage = delta[t] + gamma * gae_lambda * (1.0 - dones[t]) * advantage
        advantages[t] = advantage
    return advantages


def sample_rollout(transitions: np.ndarray, policy: np.ndarray, term_prob: float,
                   num_envs: int, num_steps: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, ...]:
    """Play N columns of whole episodes back to back, each from a uniformly random start state;
    return states, actions, next_states, terminations and valid, each [T, N].

    A column stops at its first episode end at or after step num_steps, so no episode is cut
    and no GAE sum is truncated; T is the longest column. After a column stops, valid is False
    and terminations is 1 (the padding never enters a sum, which stops at the terminal step)."""
    num_states = transitions.shape[0]
    # inverse-CDF sampling; the last entry set to 1 so round-off never gives index A or S
    policy_cdf = np.cumsum(policy, axis=-1)
    policy_cdf[..., -1] = 1.0
    transition_cdf = np.cumsum(transitions, axis=-1)
    transition_cdf[..., -1] = 1.0
    state = rng.integers(num_states, size=num_envs)
    running = np.ones(num_envs, dtype=bool)
    steps = []
    while running.any():
        action = (rng.random((num_envs, 1)) > policy_cdf[state]).sum(axis=1)
        next_state = (rng.random((num_envs, 1)) > transition_cdf[state, action]).sum(axis=1)
        terminated = rng.random(num_envs) < term_prob
        steps.append((state, action, next_state, terminated | ~running, running))
        running = running & ~(terminated & (len(steps) >= num_steps))
        # a finished episode restarts from a random state, as a vector env resets
        state = np.where(terminated, rng.integers(num_states, size=num_envs), next_state)
    return tuple(np.stack(column) for column in zip(*steps))


def error_stats(rollout: tuple[np.ndarray, ...], mdp_rewards: np.ndarray,
                critics: list[np.ndarray], targets: list[np.ndarray], gamma: float,
                gae_lambdas: tuple[float, ...]) -> np.ndarray:
    """A_hat_t by GAE for each critic table and lambda; per pair (s, a) the visit count, the
    sum and the sum of squares of e_t = A_hat_t - target(s_t, a_t). Returns [C, L, 3, S * A]."""
    states, actions, next_states, terminations, valid = rollout
    rewards = torch.from_numpy(mdp_rewards[states, actions] * valid)  # [T, N]
    # no time limit in this MDP: every episode end is a termination, so dones = terminations
    ends = torch.from_numpy(terminations.astype(np.float64))
    pair = states[valid] * mdp_rewards.shape[1] + actions[valid]  # [number of valid steps]
    size = mdp_rewards.size
    count = np.bincount(pair, minlength=size).astype(np.float64)
    stats = np.zeros((len(critics), len(gae_lambdas), 3, size))
    for i, (critic, target) in enumerate(zip(critics, targets)):
        values = torch.from_numpy(critic[states])
        next_values = torch.from_numpy(critic[next_states])
        for j, gae_lambda in enumerate(gae_lambdas):
            advantages = compute_gae(rewards, values, next_values, ends, ends, gamma,
                                     gae_lambda).numpy()
            error = advantages[valid] - target.ravel()[pair]
            stats[i, j] = (count, np.bincount(pair, error, minlength=size),
                           np.bincount(pair, error**2, minlength=size))
    return stats


def bias_variance(stats: np.ndarray) -> tuple[float, float]:
    """From [3, S * A] counts, sums and sums of squares of the error: bias_sq = sum_sa w_sa
    bias(s,a)^2 and variance = sum_sa w_sa var(s,a), w_sa the share of visits."""
    count, total, total_sq = stats[:, stats[0] > 0]
    bias = total / count
    variance = total_sq / count - bias**2
    weight = count / count.sum()
    return float(weight @ bias**2), float(weight @ variance)


def run(args: Args) -> list[tuple[float, float, float, float, float]]:
    """The experiment; prints the table, writes the CSV and the figure, returns the rows
    (lambda, critic_noise, bias_sq, variance, mse)."""
    # separate streams, so the episodes do not depend on how many critics are drawn
    mdp_rng, noise_rng, episode_rng = map(np.random.default_rng,
                                          np.random.SeedSequence(args.seed).spawn(3))
    torch.set_num_threads(1)  # compute_gae's tensors are small: one thread is fastest

    # --- 1. A random MDP and a fixed stochastic policy ---
    transitions, mdp_rewards, policy = random_mdp(args.num_states, args.num_actions,
                                                  args.concentration, mdp_rng)

    # --- 2. Exact V^pi, Q^pi and A^pi = Q^pi - V^pi [From Baseline to Advantage] ---
    v_true = state_values(transitions, mdp_rewards, policy, args.gamma, args.term_prob)
    q_true = action_values(transitions, mdp_rewards, v_true, args.gamma, args.term_prob)
    adv_true = q_true - v_true[:, None]

    # --- 3. Critics of controlled error: V = V^pi + noise * std(V^pi) * z, z fixed ---
    z = noise_rng.standard_normal(args.num_states)
    critics = [v_true + noise * v_true.std() * z for noise in args.critic_noise]
    targets = [adv_true if args.bias_against == "advantage" else q_true - critic[:, None]
               for critic in critics]

    # --- 4. A_hat_t for each (critic, lambda), same episodes [From Baseline to Advantage] ---
    stats = np.zeros((len(critics), len(args.gae_lambda), 3, args.num_states * args.num_actions))
    num_episodes = 0
    for _ in range(args.num_batches):
        rollout = sample_rollout(transitions, policy, args.term_prob, args.num_envs,
                                 args.num_steps, episode_rng)
        _, _, _, terminations, valid = rollout
        num_episodes += int((terminations & valid).sum())
        stats += error_stats(rollout, mdp_rewards, critics, targets, args.gamma, args.gae_lambda)

    # --- 5. "lambda trades off bias against variance": MSE = bias^2 + variance [Reference 1] ---
    rows = []
    for j, gae_lambda in enumerate(args.gae_lambda):
        for i, noise in enumerate(args.critic_noise):
            bias_sq, variance = bias_variance(stats[i, j])
            rows.append((gae_lambda, noise, bias_sq, variance, bias_sq + variance))

    title = (f"GAE on a random MDP: {args.num_states} states, {args.num_actions} actions, "
             f"gamma {args.gamma:g}, term_prob {args.term_prob:g}; {num_episodes:,} episodes, "
             f"{int(stats[0, 0, 0].sum()):,} steps; bias against {args.bias_against}")
    print(f"{title}\nstd(V^pi) {v_true.std():.3f}, std(A^pi) {adv_true.std():.3f}\n")
    print(f"{'lambda':>7} {'critic_noise':>12} {'bias_sq':>10} {'variance':>10} {'mse':>10}")
    for row in rows:
        print(f"{row[0]:>7g} {row[1]:>12g} {row[2]:>10.5f} {row[3]:>10.5f} {row[4]:>10.5f}")
    print()
    for noise in args.critic_noise:
        best = min((row for row in rows if row[1] == noise), key=lambda row: row[4])
        print(f"critic_noise {noise:g}: lowest MSE {best[4]:.5f} at lambda {best[0]:g}")

    csv_path = Path(args.csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["lambda,critic_noise,bias_sq,variance,mse"]
    lines += [",".join(f"{x:.6g}" for x in row) for row in rows]
    csv_path.write_text("\n".join(lines) + "\n")
    plot(rows, title.replace("; ", "\n", 1), Path(args.plot_path))
    print(f"wrote {csv_path} and {args.plot_path}")
    return rows


def plot(rows: list[tuple[float, float, float, float, float]], title: str, path: Path) -> None:
    """Three panels, bias^2, variance and MSE against lambda; one line per critic error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), sharex=True)
    for noise in dict.fromkeys(row[1] for row in rows):
        mine = [row for row in rows if row[1] == noise]
        label = "exact V" if noise == 0 else f"V + {noise:g} std(V) noise"
        for ax, column in zip(axes, (2, 3, 4)):
            lines = ax.plot([row[0] for row in mine], [row[column] for row in mine], "o-",
                            markersize=3, label=label)
        best = min(mine, key=lambda row: row[4])
        axes[2].plot(best[0], best[4], "*", markersize=12, color=lines[0].get_color())
    titles = ("bias$^2$", "variance", "MSE = bias$^2$ + variance (star: minimum)")
    for ax, panel_title in zip(axes, titles):
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel(r"GAE $\lambda$")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    cli_args = tyro.cli(Args)
    check_args(cli_args)
    check_output_path("--csv-path", Path(cli_args.csv_path))
    check_output_path("--plot-path", Path(cli_args.plot_path))
    run(cli_args)
