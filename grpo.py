"""GRPO: PPO's clipped objective with a group-relative advantage in place of the critic, in one
file.

Article sections and where they live here:
    Where We Left Off                 mean_kl: the KL of the constraint (logged as `kl`)
    The Surrogate Objective           probability_ratio (r_t and the gradient identity)
    PPO: Approximate the Constraint
         with Clipping                clipped_surrogate_loss, called by grpo_loss
    Putting It Together               the numbered blocks of train (no step 4: no critic)
    What's Next                       play_groups and collect_groups (step 1); group_advantages,
                                      group_batch (step 2); kl_k3 and grpo_loss (step 3)
Papers: GRPO, Shao et al., arXiv:2402.03300 §4.1; Dr. GRPO, arXiv:2503.20783; DAPO,
arXiv:2503.14476 (each departure behind a flag).

A group is G episodes from one start state, the analogue of G responses to one prompt: group p's
envs are reset with seed_p, drawn from the run's own generator, and every episode runs to its
end. Its raw undiscounted return R_i is episode i's outcome reward: no critic, no GAE.
No signal, no step: a group whose R_i are all equal has every Â_i = 0 and adds nothing to ∇_θ of
eq. 3 but its KL term's; a batch of such groups alone gives no step (whatever β): θ and Adam stay.
One step per batch, as in the paper: r_t = 1 where the gradient is taken, so the clip acts only
with --update-epochs or --num-minibatches above 1; many steps on one batch fit the noise of one
outcome per episode, and a solved CartPole falls again (RESULTS.md).

Notation (article and paper -> code):
    π_θ, π_θ', π_ref        actor after and before the update; ref_actor (the initial policy,
                            or every K-th with --ref-update-every K)
    P, G                    num_groups, group_size; N = P·G envs, one episode each
    o_i, |o_i|, R_i         episode i (a "response"), its real steps (lengths), its return
    Â_i                     advantages, b_advantages: the same for every step of episode i
    r_t(θ), ε, β            ratio, clip_coef (clip_coef_high: DAPO's ε_high), beta
    D_KL(π_θ ‖ π_ref)       kl_ref: per step its k3 estimate π_ref/π_θ - log(π_ref/π_θ) - 1
    D_KL(π_θ' ‖ π_θ)        kl (exact, closed form, mean over the batch's real steps)

Not in the article, each behind a flag: Dr. GRPO's 1/T for 1/|o_i| (--no-length-norm) and Â_i
without the std (--no-std-scale), DAPO's dynamic sampling (--dynamic-sampling) and clip-higher
(--clip-coef-high), entropy bonus (--ent-coef), gradient-norm clipping (--max-grad-norm),
learning-rate annealing (--anneal-lr), early stop on KL (--target-kl). Always on: orthogonal
initialisation (layer_init), Adam's eps = 1e-5. β is 0, not the paper's 0.04: there π_ref is a
supervised model worth staying near, here the random initial policy (RESULTS.md, "GRPO").
The critic's flags and --normalize are left out: the group normalises the raw returns.

Examples:
    python grpo.py                                       # CartPole-v1 with the defaults below
    python grpo.py --beta 0.04 --ref-update-every 0      # the paper's KL penalty, fixed π_ref
    python grpo.py --env-id Pendulum-v1 --update-epochs 20 --num-minibatches 2  # reuse batches
"""

import copy
import itertools
import json
import math
import os
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch
import torch.nn as nn
from torch.distributions import Categorical, Distribution, Independent, Normal, kl_divergence
import gymnasium as gym
import tyro


@dataclass
class Args:
    """GRPO: PPO's clipped objective with the group-relative advantage, no critic
    (arXiv:2402.03300, §4.1)."""

    # --- run ---
    exp_name: str = "grpo"
    """name of the experiment, part of the run folder's name"""
    seed: int = 1
    """seed of numpy, torch, python's random and the start states, in [0, 2^32)"""
    runs_dir: str = "runs"
    """parent folder of the run folders"""
    torch_deterministic: bool = True
    """on the GPU, use torch's deterministic algorithms (same seed, same run); on the CPU the
    operations used here are deterministic already"""
    cuda: bool = False
    """train on the GPU if there is one; off by default: networks this small run faster on a CPU"""
    save_model: bool = False
    """write model.pt (the actor) into the run folder, also when the run is stopped with Ctrl-C"""
    capture_video: bool = False
    """record videos of the first environment into the run folder (needs the moviepy package)"""
    eval_checkpoint: str | None = None
    """skip training: load this model.pt, play --eval-episodes with the deterministic policy"""
    eval_episodes: int = 10
    """number of episodes played by --eval-checkpoint"""

    # --- environment and group rollout ---
    env_id: str = "CartPole-v1"
    """gymnasium environment id (Discrete or Box actions, Box observations)"""
    total_timesteps: int = 200_000
    """real environment steps of the whole run (an ended episode's masked steps do not count);
    no iteration starts that could pass it (N·T steps), so a run ends up to N·T short of it"""
    num_groups: int = 4
    """P: start states per batch, one seed each from the run's own generator"""
    group_size: int = 8
    """G: episodes from each start state (the paper's G outputs per question); at least 2"""
    max_episode_steps: int | None = None
    """T: end every episode after this many steps, if the env's own time limit has not ended it
    first; None: T is the env's limit"""
    dynamic_sampling: bool = False
    """DAPO's dynamic sampling (arXiv:2503.14476 §3.2): draw rounds of P groups, keeping those
    with signal, until P are kept; every drawn episode's steps count"""
    max_draws: int = 4
    """most rounds per batch with --dynamic-sampling: P groups of signal while a quarter of
    groups carry any; a solved policy then costs 4 rounds per skipped update"""

    # --- group advantage [arXiv:2402.03300 §4.1.2; arXiv:2503.20783 §3.2] ---
    std_scale: bool = True
    """Â_i = (R_i - mean) / std over the group; --no-std-scale (Dr. GRPO): Â_i = R_i - mean,
    since the std division weights groups whose returns barely differ the most"""
    length_norm: bool = True
    """weight each step of episode i by 1/|o_i|, so each episode counts equally; --no-length-norm
    (Dr. GRPO): a constant 1/T, since 1/|o_i| gives the steps of short episodes a larger share"""
    signal_only: bool = False
    """update on the groups with signal alone (N in eq. 3 counts their episodes); off, a group of
    equal returns stays and dilutes the weights 1/(N |o_i|)"""

    # --- optimisation ---
    learning_rate: float = 1e-2
    """Adam step size of the actor"""
    anneal_lr: bool = True
    """decay the learning rate linearly toward 0 over the run's steps"""
    num_minibatches: int = 1
    """minibatches of steps per epoch, at most N (G with --signal-only or --dynamic-sampling)"""
    update_epochs: int = 1
    """passes over each batch: the paper's μ = 1, a single update per batch (arXiv:2402.03300
    §4.2); more passes or minibatches reuse the batch, which the clip then bounds"""
    max_grad_norm: float = 0.5
    """clip the global gradient norm of the actor to this value"""
    ent_coef: float = 0.0
    """weight of the entropy bonus; 0 to 0.01"""
    hidden_size: int = 64
    """width of the two hidden tanh layers of the actor"""
    log_std_init: float = 0.0
    """Box actions: the Gaussian's initial log std, the same for every action dimension"""

    # --- PPO-clip ---
    clip_coef: float = 0.2
    """ε: r_t is clipped to [1 - ε, 1 + ε] (arXiv:2402.03300 eq. 3, as PPO's)"""
    clip_coef_high: float | None = None
    """ε_high, DAPO's clip-higher (arXiv:2503.14476 §3.1; 0.28): r_t in [1 - ε, 1 + ε_high]"""
    target_kl: float | None = None
    """optional early stop: end an update's epochs once its exact KL, measured after each
    epoch, exceeds this"""

    # --- GRPO's KL penalty [arXiv:2402.03300 eqs. 3-4, §4.1.4] ---
    beta: float = 0.0
    """β, weight of the k3 estimate of KL(π_θ ‖ π_ref); 0.04 in the paper (see the top)"""
    ref_update_every: int = 0
    """K: π_ref ← π_θ every K-th iteration (the paper's iterative RL); 0: the initial policy
    throughout (the paper's fixed reference); 1: π_θ', a penalty on each step as in ppo_kl"""

    @property
    def num_envs(self) -> int:
        """N = P·G: the vector env's environments, one episode each per iteration"""
        return self.num_groups * self.group_size

    @property
    def num_steps(self) -> int | None:
        """T, the longest episode: --max-episode-steps, else the env's limit (None: none)"""
        return self.max_episode_steps or gym.spec(self.env_id).max_episode_steps


def make_env(env_id: str, idx: int, capture_video: bool, run_dir: Path, gamma: float,
             normalize: bool, scale_reward: bool = True):
    """A thunk for gym.vector.SyncVectorEnv. Every wrapper is per env: gymnasium's vector-level
    observation wrappers refuse autoreset_mode=SAME_STEP, and per env the final observation of
    an episode reaches info["final_obs"] already normalised, on the critic's own scale.
    scale_reward=False keeps the rewards raw under normalize (--no-norm-reward, or where the
    critic's targets are scaled instead)."""

    def thunk() -> gym.Env:
        env = gym.make(env_id, render_mode="rgb_array" if capture_video and idx == 0 else None)
        if capture_video and idx == 0:
            env = gym.wrappers.RecordVideo(env, str(run_dir / "videos"))
        # first, so that the recorded episodic returns are the raw ones
        env = gym.wrappers.RecordEpisodeStatistics(env)
        if isinstance(env.action_space, gym.spaces.Box):
            # the Gaussian samples unbounded actions; the env only accepts its box
            env = gym.wrappers.ClipAction(env)
        if normalize:
            # not in the article: running mean/std of observations and of the discounted return,
            # clipped to [-10, 10] (arXiv:2006.05990, "What Matters in On-Policy RL", C3)
            env = gym.wrappers.NormalizeObservation(env)
            env = gym.wrappers.TransformObservation(env, lambda o: np.clip(o, -10, 10),
                                                    env.observation_space)
            if scale_reward:
                env = gym.wrappers.NormalizeReward(env, gamma=gamma)
                env = gym.wrappers.TransformReward(env, lambda r: np.clip(r, -10, 10))
        return env

    return thunk


def layer_init(layer: nn.Linear, std: float = math.sqrt(2), bias: float = 0.0) -> nn.Linear:
    # not in the article: orthogonal initialisation (arXiv:2006.05990, C57; OpenAI baselines)
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


def mlp(in_dim: int, hidden: int, out_dim: int, out_std: float) -> nn.Sequential:
    return nn.Sequential(
        layer_init(nn.Linear(in_dim, hidden)), nn.Tanh(),
        layer_init(nn.Linear(hidden, hidden)), nn.Tanh(),
        layer_init(nn.Linear(hidden, out_dim), std=out_std),
    )


class Actor(nn.Module):
    """π_θ(·|s): Categorical for Discrete actions, diagonal Gaussian with a state-independent
    log std for Box actions."""

    def __init__(self, obs_dim: int, action_space: gym.Space, hidden: int,
                 log_std_init: float = 0.0):
        super().__init__()
        self.continuous = isinstance(action_space, gym.spaces.Box)
        out_dim = int(np.prod(action_space.shape)) if self.continuous else int(action_space.n)
        # a near-zero last layer starts near the uniform / zero-mean policy
        self.net = mlp(obs_dim, hidden, out_dim, out_std=0.01)
        if self.continuous:
            # learned, from log_std_init; arXiv:2006.05990 ("What Matters in On-Policy RL")
            # recommends starting the action std below 1
            self.log_std = nn.Parameter(torch.full((out_dim,), log_std_init))

    def forward(self, obs: torch.Tensor) -> Distribution:
        out = self.net(obs)
        # validate_args=False: the argument checks cost as much as the network itself
        if self.continuous:
            std = self.log_std.exp().expand_as(out)
            return Independent(Normal(out, std, validate_args=False), 1, validate_args=False)
        return Categorical(logits=out, validate_args=False)

    def sample(self, obs: torch.Tensor) -> torch.Tensor:
        """a ~ π_θ(·|s) without building a Distribution: on the rollout's per-step path that
        costs more than the network (measured on 4 CartPole envs: 13.4k steps/s through
        torch.distributions, 17.2k sampling here)."""
        out = self.net(obs)
        if self.continuous:
            return out + self.log_std.exp() * torch.randn_like(out)
        # Gumbel-max: argmax_a (logit_a - log E_a), E_a ~ Exp(1), is a draw from softmax(logits)
        return (out - torch.empty_like(out).exponential_().log()).argmax(-1)


def mean_kl(old_dist: Distribution, new_dist: Distribution) -> torch.Tensor:
    """E_s[D_KL(π_θ'(·|s) ‖ π_θ(·|s))], the batch mean of the exact KL in closed form.

    The constraint of [Where We Left Off] and [TRPO: Enforce the Constraint Exactly]; the one KL
    of this file."""
    return kl_divergence(old_dist, new_dist).mean()


def probability_ratio(newlogprob: torch.Tensor, logprob: torch.Tensor) -> torch.Tensor:
    """r_t(θ) = π_θ(a_t|s_t) / π_θ'(a_t|s_t), formed in log space. [The Surrogate Objective]

    Since ∇_θ r_t(θ) = r_t(θ) ∇_θ log π_θ(a_t|s_t), autograd of r_t(θ) Â_t gives the off-policy
    gradient r_t(θ) ∇_θ log π_θ(a_t|s_t) Â_t: maximising L(θ) = Ê_t[r_t(θ) Â_t] follows it."""
    return (newlogprob - logprob).exp()


def clipped_surrogate_loss(ratio: torch.Tensor, advantages: torch.Tensor, clip_coef: float,
                           clip_coef_high: float | None = None) -> torch.Tensor:
    """Return -L^CLIP = -Ê_t[min(r_t Â_t, clip(r_t, 1 - ε, 1 + ε) Â_t)].

    [PPO: Approximate the Constraint with Clipping]; arXiv:1707.06347 eq. 7. Past 1 + ε (Â_t > 0)
    or below 1 - ε (Â_t < 0) the clipped term is the smaller one and flat, so its gradient is
    zero; the min makes L^CLIP a lower bound of the surrogate L(θ) = Ê_t[r_t Â_t].
    clip_coef_high, if given, is a separate upper ε_high: clip(r_t, 1 - ε, 1 + ε_high)."""
    unclipped = ratio * advantages
    # DAPO's clip-higher (arXiv:2503.14476 §3.1): ε_high > ε lets an unlikely action that did
    # well gain more probability in one update, which keeps the entropy from collapsing
    high = clip_coef if clip_coef_high is None else clip_coef_high
    clipped = torch.clamp(ratio, 1.0 - clip_coef, 1.0 + high) * advantages
    objective = torch.min(unclipped, clipped).mean()
    return -objective


def group_advantages(returns: torch.Tensor, scale_by_std: bool = True,
                     eps: float = 1e-8) -> torch.Tensor:
    """Â_i = (R_i - mean(R_1..R_G)) / (std(R_1..R_G) + ε) within each group, from the returns
    [num_groups, group_size]; the same shape back. [What's Next]; arXiv:2402.03300 §4.1.2.

    The episodes of a group start in one state s_0, so the group's mean return estimates
    V(s_0): the baseline a critic would have given the first step, here given to every step of
    the episode. std is the sample std (G - 1 in its denominator); a group whose returns are
    all equal gets Â_i = 0, no signal. scale_by_std=False is Dr. GRPO's Â_i = R_i - mean
    (arXiv:2503.20783 §3.2)."""
    # R_i - mean(R_group)
    centred = returns - returns.mean(dim=1, keepdim=True)
    if not scale_by_std:
        return centred
    # Â_i = (R_i - mean(R_group)) / (std(R_group) + ε)  [arXiv:2402.03300 §4.1.2]
    return centred / (returns.std(dim=1, keepdim=True) + eps)


def kl_k3(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """Per sample, π_ref/π_θ - log(π_ref/π_θ) - 1, from log π_θ(a|s) and log π_ref(a|s) (any
    shape, the same back). [What's Next]; arXiv:2402.03300 eq. 4 (Schulman's k3 estimator).

    x - log x - 1 >= 0 for every x > 0, with equality at x = 1; over a ~ π_θ its mean is
    KL(π_θ ‖ π_ref), since E[π_ref/π_θ] = 1. Its gradient vanishes where π_θ = π_ref. Here the
    actions come from π_θ', so after the first minibatch step of an update it is an estimate
    of the KL only approximately, as in the paper."""
    # log(π_ref/π_θ)
    log_ratio = logp_ref - logp
    # π_ref/π_θ - log(π_ref/π_θ) - 1  [arXiv:2402.03300 eq. 4], as (π_ref/π_θ - 1) - log(...):
    # expm1 keeps the small differences near π_θ = π_ref from rounding below 0
    return torch.expm1(log_ratio) - log_ratio


def grpo_loss(ratio: torch.Tensor, advantages: torch.Tensor, weights: torch.Tensor,
              kl_ref: torch.Tensor, clip_coef: float, beta: float,
              clip_coef_high: float | None = None) -> torch.Tensor:
    """Return minus the GRPO objective over the steps given:
    -mean_t(w_t [min(r_t Â_t, clip(r_t, 1 - ε, 1 + ε) Â_t) - β D_KL,t]), with Â_t the advantage
    of the step's episode and D_KL,t = kl_ref, the k3 estimate. [What's Next]; arXiv:2402.03300
    eq. 3.

    Eq. 3 averages over the steps of each episode (1/|o_i|), then over the N episodes (1/G per
    group): in a batch of B steps, step t of episode i weighs 1/(N |o_i|), and these add up to 1.
    A minibatch of m of the B steps, drawn without replacement, holds m/B of that sum in
    expectation; so the weights passed here are w_t = B/(N |o_i|), and the minibatch's mean
    (1/m) Σ_t of the weighted terms is an unbiased estimate of the full-batch loss. The
    minibatches of an epoch split the batch, so their losses weighted by m/B add up to it
    exactly. With equal lengths every w_t is 1 and, at β = 0, this is ppo_clip's -L^CLIP.
    clip_coef_high is DAPO's upper ε_high (see clipped_surrogate_loss)."""
    # w_t min(r_t Â_t, clip(r_t) Â_t) = min(r_t w_t Â_t, clip(r_t) w_t Â_t), as w_t > 0
    # [PPO: Approximate the Constraint with Clipping]
    surrogate = -clipped_surrogate_loss(ratio, weights * advantages, clip_coef, clip_coef_high)
    # β mean_t(w_t D_KL,t)  [arXiv:2402.03300 eq. 3]
    penalty = beta * (weights * kl_ref).mean()
    return -(surrogate - penalty)


def carries_signal(returns: torch.Tensor) -> torch.Tensor:
    """Per group of the returns [P, G], whether they differ [P]: else every Â_i of the group is 0
    and so is its gradient."""
    return returns.amax(1) > returns.amin(1)


def group_batch(returns: torch.Tensor, lengths: torch.Tensor, episode: torch.Tensor, T: int,
                std_scale: bool, length_norm: bool, signal_only: bool
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step 2 on a batch of groups: from the returns R_i [P, G] (episode i = p·G + g), the
    lengths |o_i| [P·G] and the episode of each of the batch's B steps [B], return which steps
    the update uses [B] and, for each used step, Â_i and the weight w_t = B'/(N' |o_i|) of
    grpo_loss (B'/(N' T) without length_norm), B' and N' the steps and episodes used.

    A group whose returns are all equal carries no signal: its Â_i are 0, and so is its
    gradient. signal_only leaves such groups out, so N' counts the episodes that carry signal;
    a batch in which no group carries signal gives no step at all (nothing used)."""
    G = returns.shape[1]
    advantages = group_advantages(returns, std_scale).float().reshape(-1)  # [P·G]
    signal = carries_signal(returns).repeat_interleave(G)  # [P·G]
    used = signal if signal_only or not signal.any() else torch.ones_like(signal)
    steps = used[episode]  # [B]
    normaliser = lengths.float() if length_norm else torch.full(lengths.shape, float(T))
    # w_t = B'/(N' |o_i|): eq. 3's 1/(N' |o_i|) times B', so that a minibatch's mean estimates
    # the batch's sum (see grpo_loss)
    weights = steps.sum() / (used.sum() * normaliser)
    return steps, advantages[episode[steps]], weights[episode[steps]]


def play_groups(envs: gym.vector.SyncVectorEnv, actor: Actor, seeds: np.ndarray, G: int,
                storage: tuple[np.ndarray, ...], log: "RunLog", global_step: int,
                device: torch.device) -> tuple[np.ndarray, np.ndarray, int, int]:
    """One round of step 1: the G envs of group p reset with seed_p, every episode played with
    π_θ' to its end (termination, the env's time limit or step T), an ended episode's env
    waiting, masked, for the round's last. Writes storage = (obs, actions, real), [T, N, ...];
    returns R_i [N], |o_i| [N], the rows used and the environment steps so far."""
    obs, actions, real = storage
    next_obs, _ = envs.reset(seed=np.repeat(seeds, G).tolist())  # env p·G + g: seed_p
    running = np.ones(real.shape[1], dtype=bool)  # the env's episode has not ended
    returns = np.zeros(real.shape[1])  # R_i, the raw undiscounted return
    lengths = np.zeros(real.shape[1], dtype=np.int64)  # |o_i|
    T = real.shape[0]
    for step in range(T):
        obs[step] = next_obs
        with torch.no_grad():
            action = actor.sample(torch.as_tensor(obs[step], device=device)).cpu().numpy()
        actions[step] = action
        next_obs, reward, terminated, truncated, _ = envs.step(action)
        real[step] = running
        global_step += int(running.sum())  # real steps only
        returns += reward * running
        lengths += running
        # the end of an episode: termination, the env's time limit, or step T
        ended = running & (terminated | truncated | (step == T - 1))
        for i in np.flatnonzero(ended):
            log.episode(global_step, float(returns[i]), int(lengths[i]))
        running &= ~ended
        if not running.any():
            break
    return returns, lengths, step + 1, global_step


def collect_groups(envs: gym.vector.SyncVectorEnv, actor: Actor, start_seeds: np.random.Generator,
                   storage: tuple[np.ndarray, ...], log: "RunLog", global_step: int,
                   device: torch.device, args: Args) -> tuple[list, int, int, int, int]:
    """Step 1: a round of P groups (play_groups), or with --dynamic-sampling rounds until P
    groups of signal are kept, --max-draws rounds are drawn or the budget would be passed.
    Returns per round its kept steps (obs, actions, episode in the batch, R_i, |o_i|), the
    groups drawn, those with signal, the last round's rows and the environment steps so far."""
    P, G, N, T = args.num_groups, args.group_size, args.num_envs, args.num_steps
    obs, actions, real = storage
    kept, drawn, with_signal, groups = [], 0, 0, 0
    while True:
        returns, lengths, rows, global_step = play_groups(
            envs, actor, start_seeds.integers(2**32, size=P), G, storage, log, global_step,
            device)
        drawn += P
        signal = carries_signal(torch.as_tensor(returns).view(P, G)).numpy()  # [P]
        with_signal += int(signal.sum())
        keep = signal.copy() if args.dynamic_sampling else np.ones(P, dtype=bool)
        keep &= np.cumsum(keep) <= P - groups  # at most P groups in the batch
        envs_kept = np.repeat(keep, G)  # [N]
        mask = real[:rows] & envs_kept  # [rows, N]: the kept episodes' real steps
        episode = np.cumsum(envs_kept) - 1 + G * groups  # env n's episode in the batch
        kept.append((obs[:rows][mask], actions[:rows][mask], episode[np.nonzero(mask)[1]],
                     returns.reshape(P, G)[keep], lengths[envs_kept]))
        groups += int(keep.sum())
        if (not args.dynamic_sampling or groups == P or drawn == args.max_draws * P
                or global_step + N * T > args.total_timesteps):
            return kept, drawn, with_signal, rows, global_step


def train(args: Args) -> Path:
    """Run one experiment and return its run folder; bad arguments raise BadInput first."""
    check_args(args)
    P, G, N, T = args.num_groups, args.group_size, args.num_envs, args.num_steps

    # seeding, all in one block; one torch thread is faster for networks this small
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    start_seeds = np.random.default_rng(args.seed)  # the run's own generator of start states
    device = choose_device(args)
    log = RunLog(args, device, ["policy_loss", "entropy", "kl", "kl_ref", "zero_signal",
                                "clipfrac", "groups_drawn"], args.total_timesteps)
    # normalize=False: the group normalises the raw returns (gamma would only scale rewards)
    thunks = [make_env(args.env_id, i, args.capture_video, log.run_dir, gamma=1.0, normalize=False)
              for i in range(N)]
    envs = gym.vector.SyncVectorEnv(thunks, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    obs_dim, action_shape = envs.single_observation_space.shape[0], envs.single_action_space.shape
    actor = Actor(obs_dim, envs.single_action_space, args.hidden_size, args.log_std_init).to(device)
    # π_ref: a frozen copy, the initial policy until --ref-update-every replaces it
    ref_actor = copy.deepcopy(actor).requires_grad_(False)
    params = list(actor.parameters())
    # not in the article: eps 1e-5, not 1e-8 (OpenAI baselines' ppo2); fused: one kernel, faster
    optimizer = torch.optim.Adam(params, lr=args.learning_rate, eps=1e-5, fused=True)

    # storage, row t = step t of every env's episode: numpy, cheap to write per step, read once
    # per batch; real[t, n]: step t of env n belongs to its episode (not a masked wait)
    obs = np.zeros((T, N, obs_dim), dtype=np.float32)  # [T, N, obs_dim]
    actions = np.zeros((T, N, *action_shape), dtype=np.float32)
    real = np.zeros((T, N), dtype=bool)  # [T, N]

    def tensor(x: np.ndarray) -> torch.Tensor:  # a view of the numpy storage on the CPU
        return torch.as_tensor(x, device=device)

    global_step, iteration = 0, 0
    try:
        while global_step + N * T <= args.total_timesteps:  # N·T: the largest batch
            iteration += 1
            if args.anneal_lr:
                # not in the article: linear learning-rate decay to 0 over the run's steps
                optimizer.param_groups[0]["lr"] = args.learning_rate * (
                    1.0 - global_step / args.total_timesteps)
            if args.ref_update_every and (iteration - 1) % args.ref_update_every == 0:
                # π_ref ← π_θ  [arXiv:2402.03300 §4.1.4, iterative RL]
                ref_actor.load_state_dict(actor.state_dict())

            # --- 1. Collect P groups of G episodes with π_θ', the G of a group from one start
            #     state [What's Next; Putting It Together, step 1]; with --dynamic-sampling,
            #     rounds of P groups until P groups of signal are kept ---
            kept, drawn, with_signal, rows, global_step = collect_groups(
                envs, actor, start_seeds, (obs, actions, real), log, global_step, device, args)

            # --- 2. The group advantage Â_i of every step of episode i, no critic [What's
            #     Next; arXiv:2402.03300 §4.1.2] ---
            zero_signal = 1.0 - with_signal / drawn  # of the groups drawn
            if not with_signal:
                # no group carries signal: every Â_i = 0, so the objective's gradient is the KL
                # and entropy terms' alone (0 at β = 0 and --ent-coef 0), which move θ without
                # the task's say, and a step would replay Adam's momentum; θ and Adam stay
                with torch.no_grad():  # the log's entropy and KL to π_ref, on the last round
                    last_obs = tensor(obs[:rows][real[:rows]])
                    last_actions = tensor(actions[:rows][real[:rows]])
                    dist = actor(last_obs)
                    kl_ref = kl_k3(dist.log_prob(last_actions),
                                   ref_actor(last_obs).log_prob(last_actions))
                log.update(global_step, iteration, policy_loss=0.0, kl=0.0, clipfrac=0.0,
                           entropy=dist.entropy().mean().item(), kl_ref=kl_ref.mean().item(),
                           zero_signal=zero_signal, groups_drawn=drawn)
                continue
            b_obs, b_actions, b_episode, group_returns, b_lengths = (
                tensor(np.concatenate(x)) for x in zip(*kept))  # b_obs [B, obs_dim]
            # which steps the update uses, Â_i = (R_i - mean(R_group)) / (std(R_group) + ε)
            # (R_i - mean with --no-std-scale) and w_t = B'/(N' |o_i|) for each (group_batch)
            used, b_advantages, b_weights = group_batch(
                group_returns, b_lengths, b_episode, T, args.std_scale, args.length_norm,
                args.signal_only)
            b_obs, b_actions = b_obs[used], b_actions[used]  # [B', ...]: the steps used
            batch_size = len(b_obs)
            with torch.no_grad():
                old_dist = actor(b_obs)  # π_θ'(·|s_t), once per batch: the actor is still θ'
                b_logprobs = old_dist.log_prob(b_actions)  # log π_θ'(a_t|s_t)
                b_ref_logprobs = ref_actor(b_obs).log_prob(b_actions)  # log π_ref(a_t|s_t)

            # --- 3. Maximise the GRPO objective on minibatches of steps for several epochs
            #     [Putting It Together, step 3; arXiv:2402.03300 eq. 3]; no step 4: no critic ---
            stats = []
            for epoch in range(args.update_epochs):
                b_inds = torch.randperm(batch_size, device=device)
                for mb_inds in b_inds.tensor_split(args.num_minibatches):
                    mb_obs = b_obs[mb_inds]
                    dist = actor(mb_obs)
                    newlogprob = dist.log_prob(b_actions[mb_inds])
                    entropy = dist.entropy().mean()
                    # r_t(θ) = π_θ(a_t|s_t) / π_θ'(a_t|s_t); autograd of r_t Â_t gives
                    # r_t ∇_θ log π_θ(a_t|s_t) Â_t  [The Surrogate Objective]
                    ratio = probability_ratio(newlogprob, b_logprobs[mb_inds])
                    # D_KL,t = π_ref/π_θ - log(π_ref/π_θ) - 1  [arXiv:2402.03300 eq. 4]
                    kl_ref = kl_k3(newlogprob, b_ref_logprobs[mb_inds])
                    # -mean_t(w_t [min(r_t Â_i, clip(r_t, 1 - ε, 1 + ε) Â_i) - β D_KL,t])  [eq. 3]
                    mb_weights = b_weights[mb_inds]
                    pg_loss = grpo_loss(ratio, b_advantages[mb_inds], mb_weights, kl_ref,
                                        args.clip_coef, args.beta, args.clip_coef_high)

                    # not in the article: an entropy bonus, as ppo_clip's (arXiv:1707.06347 eq. 9)
                    loss = pg_loss - args.ent_coef * entropy
                    optimizer.zero_grad()
                    loss.backward()
                    # not in the article: global gradient-norm clipping (OpenAI baselines)
                    nn.utils.clip_grad_norm_(params, args.max_grad_norm)
                    optimizer.step()
                    high = 1.0 + (args.clip_coef_high or args.clip_coef)
                    clipfrac = ((ratio < 1.0 - args.clip_coef) | (ratio > high)).float().mean()
                    stats.append(torch.stack([pg_loss, entropy, (mb_weights * kl_ref).mean(),
                                              clipfrac]).detach())

                if args.target_kl is not None:
                    with torch.no_grad():
                        kl = mean_kl(old_dist, actor(b_obs)).item()
                    if kl > args.target_kl:
                        break

            # --- 5. θ' ← θ: the next batch is sampled by the updated actor [step 5] ---
            with torch.no_grad():  # D_KL(π_θ' ‖ π_θ) of the whole update, for the log
                kl = mean_kl(old_dist, actor(b_obs)).item()
            pg_loss, entropy, kl_ref, clipfrac = torch.stack(stats).mean(0).tolist()
            log.update(global_step, iteration, policy_loss=pg_loss, entropy=entropy, kl=kl,
                       kl_ref=kl_ref, zero_signal=zero_signal, clipfrac=clipfrac,
                       groups_drawn=drawn)
    except KeyboardInterrupt:  # Ctrl-C: stop here, keeping the rows, the model and the folder
        log.interrupted = True
    if args.save_model:
        save_model(log.run_dir / "model.pt", args, actor)
    envs.close()
    log.close(global_step)  # says how the run ended; after a Ctrl-C, raises it again
    return log.run_dir


# --- Plumbing: flag checks, run folder, logs, checkpoints, evaluation (not the algorithm) ---

class BadInput(ValueError):
    """A flag outside its domain: the command line prints it as one line and exits with 2."""


def fail(message: str, status: int = 2) -> NoReturn:
    """End the program with one line on stderr, no traceback."""
    print(f"{Path(sys.argv[0]).name}: error: {message}", file=sys.stderr)
    raise SystemExit(status)


FLAG_RULES = [  # (flags, the rule each value meets, the allowed values); NaN fails every rule
    ("total_timesteps num_groups num_minibatches update_epochs hidden_size eval_episodes "
     "max_draws", lambda x: x > 0, "a positive integer"),
    ("group_size", lambda x: x >= 2, "an integer of at least 2 (one episode has no baseline)"),
    ("max_episode_steps", lambda x: x is None or x > 0, "a positive integer"),
    ("seed", lambda x: 0 <= x < 2**32, "an integer in [0, 2^32)"),
    ("learning_rate max_grad_norm", lambda x: 0 < x < math.inf, "a positive finite number"),
    ("ent_coef beta", lambda x: 0 <= x < math.inf, "a non-negative finite number"),
    ("ref_update_every", lambda x: x >= 0, "a non-negative integer"),
    ("log_std_init", math.isfinite, "a finite number"),
    ("clip_coef", lambda x: 0 < x < math.inf, "a positive finite number"),
    ("clip_coef_high", lambda x: x is None or 0 < x < math.inf, "a positive finite number"),
    ("target_kl", lambda x: x is None or 0 < x < math.inf, "a positive finite number"),
]


def check_args(args: Args) -> None:
    """Every rule on the flags, before anything is made; raise BadInput naming the flag."""
    for names, allowed, meaning in FLAG_RULES:
        for name in names.split():
            if not allowed(getattr(args, name)):
                raise BadInput(f"--{name.replace('_', '-')} {getattr(args, name)}: must be "
                               f"{meaning}")
    # a batch has a step per episode at least, and --signal-only or --dynamic-sampling may keep
    # one group alone: no minibatch is empty
    smallest, what = ((args.group_size, "group_size") if args.signal_only or args.dynamic_sampling
                      else (args.num_envs, "num_groups * group_size"))
    if args.num_minibatches > smallest:
        raise BadInput(f"--num-minibatches {args.num_minibatches}: must be at most the smallest "
                       f"batch, {what} = {smallest} steps")
    if args.capture_video and find_spec("moviepy") is None:
        raise BadInput("--capture-video needs the moviepy package: pip install moviepy")
    if args.eval_checkpoint is None:
        check_env(args.env_id)
        if args.num_steps is None:
            raise BadInput(f"--env-id {args.env_id!r}: has no time limit; give "
                           "--max-episode-steps")
        if args.total_timesteps < args.num_envs * args.num_steps:
            raise BadInput(f"--total-timesteps {args.total_timesteps}: must be at least one batch "
                           f"of the longest episodes, num_groups * group_size * T = "
                           f"{args.num_envs * args.num_steps} (T: --max-episode-steps)")


def check_env(env_id: str) -> None:
    """The env must exist and have a flat Box observation and a Discrete or flat Box action."""
    try:
        env = gym.make(env_id)
    except Exception as error:
        raise BadInput(f"--env-id {env_id!r}: cannot be made ({str(error).splitlines()[0]})")
    obs_space, action_space = env.observation_space, env.action_space
    env.close()
    if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
        raise BadInput(f"--env-id {env_id!r}: observation space {obs_space} is not handled "
                       "(a flat Box is)")
    # a Box of rank 2 or more would need the Gaussian's samples reshaped: refused
    if not (isinstance(action_space, gym.spaces.Discrete)
            or isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1):
        raise BadInput(f"--env-id {env_id!r}: action space {action_space} is not handled "
                       "(Discrete or a flat Box are)")


def choose_device(args: Args) -> torch.device:
    """The GPU with --cuda where there is one, else the CPU."""
    if not (args.cuda and torch.cuda.is_available()):
        return torch.device("cpu")
    if args.torch_deterministic:
        # cuBLAS is deterministic only with a fixed workspace (torch docs, "Reproducibility");
        # not on the CPU, whose operations here are deterministic already: the switch would
        # cost 2.6 s of start-up for nothing
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    return torch.device("cuda")


class RunLog:
    """A run folder <runs_dir>/<env>__<exp_name>__<seed>__<unix time> with config.json,
    episodes.csv and updates.csv, and the progress lines. Rows are flushed as they are written,
    so a run that stops (Ctrl-C, an error) keeps every one of them."""

    def __init__(self, args: Args, device: torch.device, columns: list[str], steps: int):
        name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
        try:
            Path(args.runs_dir).mkdir(parents=True, exist_ok=True)  # a dangling link fails
            for copies in itertools.count(1):  # -2, -3, ... for runs started in one second
                self.run_dir = Path(args.runs_dir) / (f"{name}-{copies}" if copies > 1 else name)
                if not self.run_dir.exists():
                    self.run_dir.mkdir()
                    break
        except OSError as error:
            raise BadInput(f"--runs-dir {args.runs_dir!r}: cannot create a run folder there "
                           f"({error.strerror or error})")
        self.steps, self.start, self.returns, self.interrupted = steps, time.time(), [], False
        self.print_every = max(1, steps // (args.num_envs * args.num_steps) // 50)  # ~50 lines
        versions = {package: metadata.version(package) for package in
                    ("torch", "gymnasium", "numpy", "mujoco") if find_spec(package)}
        self.config = {**asdict(args), "steps_run": 0, "finished": False, "device": str(device),
                       "versions": {"python": platform.python_version(), **versions}}
        (self.run_dir / "config.json").write_text(json.dumps(self.config, indent=2))
        self.episodes = open(self.run_dir / "episodes.csv", "w", buffering=1)  # line-buffered
        self.updates = open(self.run_dir / "updates.csv", "w", buffering=1)
        self.write(self.episodes, "global_step", "episodic_return", "episodic_length", "wall_time")
        self.columns = columns  # of updates.csv, after global_step, iteration and sps
        self.write(self.updates, "global_step", "iteration", "sps", *self.columns)
        print(f"{args.env_id}, seed {args.seed}: {steps:,} steps"
              + (f" (--total-timesteps {args.total_timesteps:,} rounded down to whole batches)"
                 if steps != args.total_timesteps else "")
              + (" on the CPU: --cuda found no GPU" if args.cuda and device.type != "cuda" else "")
              + f"; run folder: {self.run_dir}", flush=True)

    @staticmethod
    def write(file, *row) -> None:
        """Append one CSV row (floats to 6 significant digits)."""
        file.write(",".join(f"{x:.6g}" if isinstance(x, float) else str(x) for x in row) + "\n")

    def mean_return(self) -> str:
        # the return of a run is the mean of its last 20 episodes, here and in the benchmark
        return f"return {np.mean(self.returns[-20:]):.1f}" if self.returns else (
            "no episode finished yet")

    def episode(self, global_step: int, episodic_return: float, length: int) -> None:
        self.returns.append(episodic_return)
        self.write(self.episodes, global_step, episodic_return, length,
                   round(time.time() - self.start, 3))

    def update(self, global_step: int, iteration: int, **row: float) -> None:
        """One row of updates.csv, now and then a progress line; stop on a non-finite loss."""
        assert set(row) == set(self.columns), sorted(row)
        if not all(math.isfinite(x) for name, x in row.items() if name != "explained_variance"):
            # a run that diverged has ended, and its rows are a result: config.json says so
            self.config.update(steps_run=global_step, diverged=iteration)
            (self.run_dir / "config.json").write_text(json.dumps(self.config, indent=2))
            fail(f"the loss is not finite at iteration {iteration}; stopping", status=1)
        sps = int(global_step / (time.time() - self.start))
        self.write(self.updates, global_step, iteration, sps, *(row[c] for c in self.columns))
        if iteration % self.print_every == 0 or global_step == self.steps:
            shown = "".join(f" | {name} {row[name]:.3g}" for name in self.columns if name
                            not in ("policy_loss", "value_loss", "entropy", "explained_variance"))
            print(f"step {global_step:,}/{self.steps:,} ({100 * global_step / self.steps:.0f}%) | "
                  f"{self.mean_return()} | {sps:,} steps/s{shown} | "
                  f"ETA {(self.steps - global_step) / max(sps, 1):.0f}s", flush=True)

    def close(self, global_step: int) -> None:
        """Record the steps run, close the CSVs and say how the run ended; after a Ctrl-C,
        raise KeyboardInterrupt again (the command line then exits with status 130)."""
        self.config.update(steps_run=global_step, finished=not self.interrupted)
        (self.run_dir / "config.json").write_text(json.dumps(self.config, indent=2))
        self.episodes.close()
        self.updates.close()
        ending = (f"{self.mean_return()}{' (last 20 episodes)' if self.returns else ''} after "
                  f"{global_step:,} steps in {time.time() - self.start:.0f} s; run folder: "
                  f"{self.run_dir}")
        if self.interrupted:
            print(f"{Path(sys.argv[0]).name}: stopped by Ctrl-C: {ending}", file=sys.stderr)
            raise KeyboardInterrupt
        print(f"done: {ending}", flush=True)


def save_model(path: Path, args: Args, actor: Actor) -> None:
    """The actor and its sizes, in ppo_clip's format (no critic, no observation statistics)."""
    checkpoint = {"env_id": args.env_id, "hidden_size": args.hidden_size,
                  "normalize": False, "gamma": 1.0, "actor": actor.state_dict()}
    torch.save(checkpoint, path)


def evaluate(args: Args) -> tuple[float, float]:
    """Play the deterministic policy of a checkpoint; return the mean and std of the return.
    The env, the network sizes and the normalisation come from the checkpoint."""
    check_args(args)
    path = Path(args.eval_checkpoint)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        env_id, hidden, normalize, gamma = (checkpoint["env_id"], checkpoint["hidden_size"],
                                            checkpoint["normalize"], checkpoint["gamma"])
    except OSError as error:
        raise BadInput(f"--eval-checkpoint {str(path)!r}: cannot be read ({error.strerror})")
    except Exception:
        raise BadInput(f"--eval-checkpoint {str(path)!r}: not a model file written by "
                       f"{Path(__file__).name}") from None
    print(f"from the checkpoint: --env-id {env_id} --hidden-size {hidden} "
          f"{'--normalize' if normalize else '--no-normalize'} (those given here are not used)")
    check_env(env_id)
    torch.set_num_threads(1)
    # videos of the evaluation go to <run folder>/eval/videos, apart from the training's
    env = make_env(env_id, 0, args.capture_video, path.parent / "eval", gamma, normalize)()
    try:
        actor = Actor(env.observation_space.shape[0], env.action_space, hidden)
        actor.load_state_dict(checkpoint["actor"])
        if normalize:
            # NormalizeReward has an update_running_mean too: find the observations' wrapper
            obs_norm = env
            while not isinstance(obs_norm, gym.wrappers.NormalizeObservation):
                obs_norm = obs_norm.env
            obs_norm.update_running_mean = False  # frozen for evaluation
            if checkpoint["obs_rms"]["mean"].shape != obs_norm.obs_rms.mean.shape:
                raise ValueError("observation statistics of another shape")
            obs_norm.obs_rms.mean = checkpoint["obs_rms"]["mean"].numpy()
            obs_norm.obs_rms.var = checkpoint["obs_rms"]["var"].numpy()
            obs_norm.obs_rms.count = checkpoint["obs_rms"]["count"]
    except (RuntimeError, KeyError, AttributeError, TypeError, ValueError) as error:
        raise BadInput(f"--eval-checkpoint {str(path)!r}: does not match {env_id}: "
                       + " ".join(str(error).split()))
    returns = []
    for episode in range(args.eval_episodes):
        # seeded once: the env's own generator then gives each episode a new start
        obs, _ = env.reset(seed=args.seed if episode == 0 else None)
        done = False
        while not done:
            with torch.no_grad():
                # the deterministic policy: argmax for Discrete, the Gaussian mean for Box
                action = actor(torch.as_tensor(obs, dtype=torch.float32)).mode
            obs, _, terminated, truncated, info = env.step(action.numpy())
            done = terminated or truncated
        returns.append(float(info["episode"]["r"]))
    env.close()
    print(f"{env_id}: {len(returns)} episodes, return {np.mean(returns):.1f} "
          f"+- {np.std(returns):.1f}")
    return float(np.mean(returns)), float(np.std(returns))


if __name__ == "__main__":
    cli_args = tyro.cli(Args)
    try:
        if cli_args.eval_checkpoint is not None:
            evaluate(cli_args)
        else:
            train(cli_args)
    except BadInput as error:
        fail(str(error))
    except KeyboardInterrupt:
        raise SystemExit(130)  # the shell's status for Ctrl-C; train has said where it stopped
