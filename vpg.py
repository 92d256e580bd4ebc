"""Vanilla policy gradient with a learned critic and GAE, in one file: the baseline that TRPO
and PPO improve on.

Article sections and where they live here:
    Where We Left Off                 mean_kl: the KL the constraint would bound (logged as `kl`:
                                      nothing bounds it here, it shows how far one step went)
    From Baseline to Advantage        Critic; compute_gae; baseline_advantages (the earlier
                                      baselines, --advantage); policy_gradient_loss; steps 2-3
    Putting It Together               the numbered blocks 1-5 of train, with one plain gradient
                                      step in step 3: no ratio, no constraint
Paper: Williams, REINFORCE (1992); Sutton et al., Policy Gradient Methods for RL with Function
Approximation (NeurIPS 1999); the actor-critic form with GAE as in arXiv:1506.02438.
GAE:   Schulman et al., High-Dimensional Continuous Control Using GAE, arXiv:1506.02438.

Notation (article -> code):
    π_θ, π_θ'               actor after and before the update (π_θ' collected the batch)
    V                       critic
    log π_θ(a_t|s_t)        newlogprob
    G_t                     returns_to_go: Σ_l γ^l r_{t+l} to the episode's end (--advantage rtg)
    b = (1/N) Σ_i R(τ^i)    the batch-mean baseline, here the mean of the batch's complete G_t
                            (--advantage rtg-mean)
    Â_t                     advantages, b_advantages
    δ_t                     delta (the TD residual inside compute_gae)
    γ, λ                    gamma, gae_lambda
    D_KL(π_θ' ‖ π_θ)        kl (exact, closed form, batch mean)

Not in the article, each behind a flag: advantage scaling (--norm-adv), value clipping
(--vf-clip), learning-rate annealing (--anneal-lr), observation normalisation and reward
scaling (--normalize). Always on, commented where they are set: orthogonal initialisation
(layer_init) and Adam's eps = 1e-5.

Examples:
    python vpg.py --total-timesteps 200000               # CartPole-v1 with the defaults below
    python vpg.py --total-timesteps 200000 --advantage rtg-mean   # the batch-mean baseline
    python vpg.py --env-id Hopper-v5 --total-timesteps 1000000 --num-envs 1 \\
        --num-steps 2048 --num-minibatches 32 --update-epochs 10 --learning-rate 3e-4 \\
        --gamma 0.99 --gae-lambda 0.95 --normalize
"""

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
from typing import Literal, NoReturn

import numpy as np
import torch
import torch.nn as nn
from torch.distributions import Categorical, Distribution, Independent, Normal, kl_divergence
import gymnasium as gym
import tyro


@dataclass
class Args:
    """Vanilla policy gradient with a learned critic and GAE."""

    # --- run ---
    exp_name: str = "vpg"
    """name of the experiment, part of the run folder's name"""
    seed: int = 1
    """seed of numpy, torch, python's random and the environments, in [0, 2^32)"""
    runs_dir: str = "runs"
    """parent folder of the run folders"""
    torch_deterministic: bool = True
    """on the GPU, use torch's deterministic algorithms (same seed, same run); on the CPU the
    operations used here are deterministic already"""
    cuda: bool = False
    """train on the GPU if there is one; off by default: networks this small run faster on a CPU"""
    save_model: bool = False
    """write model.pt (networks and observation-normalisation statistics) into the run folder,
    also when the run is stopped with Ctrl-C"""
    capture_video: bool = False
    """record videos of the first environment into the run folder (needs the moviepy package)"""
    eval_checkpoint: str | None = None
    """skip training: load this model.pt, play --eval-episodes with the deterministic policy"""
    eval_episodes: int = 10
    """number of episodes played by --eval-checkpoint"""

    # --- environment and rollout ---
    env_id: str = "CartPole-v1"
    """gymnasium environment id (Discrete or Box actions, Box observations)"""
    total_timesteps: int = 100_000
    """environment steps of the whole run, summed over the parallel environments; rounded down
    to whole batches"""
    num_envs: int = 8
    """parallel environments in the vector env (N)"""
    num_steps: int = 32
    """steps per environment per rollout (T); one batch is N * T steps"""
    normalize: bool = False
    """running observation normalisation and reward scaling, both clipped to [-10, 10]"""
    norm_reward: bool = True
    """with --normalize, also scale the rewards; --no-norm-reward normalises the observations
    alone, as OpenAI baselines' ppo1 (the PPO paper's code) does"""

    # --- advantage ---
    gamma: float = 0.98
    """discount γ in (0, 1]; 0.99 is usual, CartPole learns faster with 0.98"""
    gae_lambda: float = 0.8
    """λ in [0, 1] of GAE: 0 is the one-step TD error, 1 the return minus V"""
    norm_adv: bool = True
    """divide the batch's advantages by their std (not centred: centring is itself a baseline)"""
    advantage: Literal["gae", "rtg", "rtg-mean"] = "gae"
    """Â_t: GAE with the critic; the return-to-go G_t (rtg); or G_t minus its batch mean b. The
    rtg choices weight only steps whose episode ends inside the rollout: use long rollouts"""

    # --- optimisation ---
    learning_rate: float = 1e-3
    """Adam step size of the actor's one step per batch"""
    vf_learning_rate: float = 1e-3
    """Adam step size of the critic"""
    anneal_lr: bool = True
    """decay both learning rates linearly toward 0: update i of n takes (n - i + 1)/n of them"""
    num_minibatches: int = 1
    """minibatches per critic epoch; must divide N * T"""
    update_epochs: int = 10
    """passes of the critic's regression over each batch"""
    vf_clip: float | None = None
    """optional: clip the value update to [V_old - c, V_old + c]; the OpenAI baselines use 0.2"""
    hidden_size: int = 64
    """width of the two hidden tanh layers of actor and critic"""
    log_std_init: float = 0.0
    """Box actions: the Gaussian's initial log std, the same for every action dimension"""


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


class Critic(nn.Module):
    """V(s), the second network of the actor-critic [From Baseline to Advantage]."""

    def __init__(self, obs_dim: int, hidden: int):
        super().__init__()
        self.net = mlp(obs_dim, hidden, 1, out_std=1.0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).squeeze(-1)


def mean_kl(old_dist: Distribution, new_dist: Distribution) -> torch.Tensor:
    """E_s[D_KL(π_θ'(·|s) ‖ π_θ(·|s))], the batch mean of the exact KL in closed form.

    The constraint of [Where We Left Off] and [TRPO: Enforce the Constraint Exactly]; the one KL
    of this file."""
    return kl_divergence(old_dist, new_dist).mean()


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor,
                terminations: torch.Tensor, dones: torch.Tensor, gamma: float,
                gae_lambda: float) -> torch.Tensor:
    """Â_t = Σ_l (γλ)^l δ_{t+l}, δ_t = r_t + γ V(s_{t+1}) - V(s_t).

    [From Baseline to Advantage]; arXiv:1506.02438 eq. 16. All inputs are [T, N];
    next_values[t] is V of the true next state of step t (the final observation where the
    episode ended). A termination drops the bootstrap; any episode end (termination or
    time-limit truncation) stops the sum.
    """
    # δ_t = r_t + γ (1 - term_t) V(s_{t+1}) - V(s_t)
    delta = rewards + gamma * (1.0 - terminations) * next_values - values
    advantages = torch.zeros_like(rewards)
    advantage = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        # Â_t = δ_t + γλ (1 - done_t) Â_{t+1}, the sum written backwards
        advantage = delta[t] + gamma * gae_lambda * (1.0 - dones[t]) * advantage
        advantages[t] = advantage
    return advantages


def baseline_advantages(rewards: torch.Tensor, terminations: torch.Tensor,
                        dones: torch.Tensor, gamma: float, centred: bool) -> torch.Tensor:
    """The earlier advantages the article starts from: the return-to-go
    G_t = Σ_l γ^l r_{t+l} to the end of the episode, and with centred=True G_t minus its batch
    mean b, the "crudest possible" baseline [From Baseline to Advantage].

    There is no critic here, so nothing can stand in for rewards the rollout has not seen yet:
    a step whose episode the rollout's end cut off gets Â_t = 0 (no weight), and b is the mean
    over the other steps. That leans toward episodes that end soon (a long one is the likelier
    to be cut), the less so the longer the rollout: use rollouts much longer than an episode."""
    zeros = torch.zeros_like(rewards)
    # G_t = Σ_l γ^l r_{t+l}, GAE's sum at V = 0, λ = 1  [From Baseline to Advantage]
    returns_to_go = compute_gae(rewards, zeros, zeros, terminations, dones, gamma, 1.0)
    # complete[t, n]: env n ends an episode at some step >= t, so G_t is fully known
    complete = dones.flip(0).cumsum(0).flip(0) > 0  # [T, N]
    if centred and complete.any():
        # Â_t = G_t - b, b = (1/N) Σ_i R(τ^i), here over the G_t  [From Baseline to Advantage]
        returns_to_go = returns_to_go - returns_to_go[complete].mean()
    return returns_to_go * complete


def policy_gradient_loss(logprobs: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """Return -mean(log π_θ(a_t|s_t) Â_t): with Â_t held fixed, its gradient is minus the
    policy-gradient estimate mean(∇_θ log π_θ(a_t|s_t) Â_t). [From Baseline to Advantage]"""
    # ∇_θ of this mean is the estimate mean(∇_θ log π_θ(a_t|s_t) Â_t)  [From Baseline to Advantage]
    objective = (logprobs * advantages).mean()
    return -objective


def value_loss(newvalue: torch.Tensor, returns: torch.Tensor, old_values: torch.Tensor,
               vf_clip: float | None = None) -> torch.Tensor:
    """Return ½ Ê_t[(V(s_t) - R_t)²], step 4's regression of V toward the returns
    R_t = Â_t + V_old(s_t). [Putting It Together, step 4]

    vf_clip, if given, is not in the article: value clipping (OpenAI baselines;
    arXiv:2005.12729), the larger of the squared errors of V and of
    V_old + clip(V - V_old, -vf_clip, vf_clip)."""
    v_error = (newvalue - returns) ** 2
    if vf_clip is not None:
        v_clipped = old_values + torch.clamp(newvalue - old_values, -vf_clip, vf_clip)
        v_error = torch.max(v_error, (v_clipped - returns) ** 2)
    return 0.5 * v_error.mean()


def train(args: Args) -> Path:
    """Run one experiment and return its run folder; bad arguments raise BadInput first."""
    check_args(args)
    batch_size = args.num_envs * args.num_steps
    minibatch_size = batch_size // args.num_minibatches
    num_iterations = args.total_timesteps // batch_size

    # seeding, all in one block; one torch thread is faster for networks this small
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    device = choose_device(args)
    log = RunLog(args, device, ["policy_loss", "value_loss", "entropy", "kl",
                                "explained_variance"], num_iterations * batch_size)
    thunks = [make_env(args.env_id, i, args.capture_video, log.run_dir, args.gamma, args.normalize,
                       args.norm_reward) for i in range(args.num_envs)]
    envs = gym.vector.SyncVectorEnv(thunks, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    obs_dim, action_shape = envs.single_observation_space.shape[0], envs.single_action_space.shape
    actor = Actor(obs_dim, envs.single_action_space, args.hidden_size, args.log_std_init).to(device)
    critic = Critic(obs_dim, args.hidden_size).to(device)
    # the critic has its own optimizer: the actor takes one gradient step per batch, the critic
    # update_epochs * num_minibatches of them
    # not in the article: eps 1e-5, not 1e-8 (OpenAI baselines' ppo2); fused: one kernel, faster
    actor_optimizer = torch.optim.Adam(actor.parameters(), lr=args.learning_rate, eps=1e-5,
                                       fused=True)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=args.vf_learning_rate, eps=1e-5,
                                        fused=True)

    # storage, row t = step t of every env: numpy, cheap to write per step, read once per batch
    T, N = args.num_steps, args.num_envs
    obs = np.zeros((T, N, obs_dim), dtype=np.float32)  # [T, N, obs_dim]
    next_obs_true = np.zeros((T, N, obs_dim), dtype=np.float32)  # s_{t+1}, final obs at ends
    actions = np.zeros((T, N, *action_shape), dtype=np.float32)
    rewards = np.zeros((T, N), dtype=np.float32)  # [T, N]
    terminations = np.zeros((T, N), dtype=np.float32)
    dones = np.zeros((T, N), dtype=np.float32)

    def tensor(x: np.ndarray) -> torch.Tensor:  # a view of the numpy storage on the CPU
        return torch.as_tensor(x, device=device)

    global_step = 0
    next_obs, _ = envs.reset(seed=args.seed)
    try:
        for iteration in range(1, num_iterations + 1):
            if args.anneal_lr:
                # not in the article: linear learning-rate decay to 0 (arXiv:1707.06347, Table 5,
                # the Atari settings; its MuJoCo settings, Table 3, keep 3e-4 constant)
                frac = 1.0 - (iteration - 1.0) / num_iterations
                actor_optimizer.param_groups[0]["lr"] = args.learning_rate * frac
                critic_optimizer.param_groups[0]["lr"] = args.vf_learning_rate * frac

            # --- 1. Collect a batch with π_θ' [Putting It Together, step 1] ---
            for step in range(T):
                obs[step] = next_obs
                with torch.no_grad():
                    action = actor.sample(tensor(obs[step])).cpu().numpy()
                actions[step] = action
                next_obs, reward, terminated, truncated, info = envs.step(action)
                global_step += N
                next_obs_true[step] = next_obs
                if "final_obs" in info:
                    # an env that ended was reset within this step: its true s_{t+1} is final_obs
                    ended = info["_final_obs"]
                    next_obs_true[step, ended] = np.stack(info["final_obs"][ended])
                    episode = info["final_info"]["episode"]
                    for i in np.flatnonzero(info["final_info"]["_episode"]):
                        log.episode(global_step, float(episode["r"][i]), int(episode["l"][i]))
                rewards[step], terminations[step] = reward, terminated
                dones[step] = terminated | truncated

            # --- 2. Advantages Â_t by GAE with the critic V, or the earlier G_t and G_t - b
            #     of --advantage [From Baseline to Advantage] ---
            b_obs = tensor(obs).reshape(batch_size, obs_dim)  # [T * N, obs_dim]
            b_actions = tensor(actions).reshape(batch_size, *action_shape)
            with torch.no_grad():  # V once per batch, not once per step
                values = critic(tensor(obs))  # [T, N]
                next_values = critic(tensor(next_obs_true))  # [T, N]
                advantages = compute_gae(tensor(rewards), values, next_values,
                                         tensor(terminations), tensor(dones), args.gamma,
                                         args.gae_lambda)
                returns = advantages + values  # the critic's regression targets
                if args.advantage != "gae":
                    # after `returns`: V is fitted to GAE's returns whichever Â_t the actor uses
                    advantages = baseline_advantages(tensor(rewards), tensor(terminations),
                                                     tensor(dones), args.gamma,
                                                     centred=args.advantage == "rtg-mean")
                old_dist = actor(b_obs)  # π_θ'(·|s_t), once per batch: the actor is still θ'
            b_advantages = advantages.reshape(-1)  # [T * N]
            b_returns = returns.reshape(-1)
            b_values = values.reshape(-1)

            # --- 3. One gradient step along mean(∇_θ log π_θ(a_t|s_t) Â_t) [From Baseline to
            #     Advantage]: no importance ratio, no constraint ---
            if args.norm_adv:
                # not in the article: the step's size does not follow the scale of the returns
                b_advantages = b_advantages / (b_advantages.std() + 1e-8)
            dist = actor(b_obs)
            newlogprob = dist.log_prob(b_actions)  # log π_θ(a_t|s_t), with its graph to θ
            # ∇_θ loss = -mean(∇_θ log π_θ(a_t|s_t) Â_t)  [From Baseline to Advantage]
            pg_loss = policy_gradient_loss(newlogprob, b_advantages)
            actor_optimizer.zero_grad()
            pg_loss.backward()
            actor_optimizer.step()

            # --- 4. Regress V toward the returns, several epochs [Putting It Together, step 4] ---
            v_losses = []
            for epoch in range(args.update_epochs):
                b_inds = torch.randperm(batch_size, device=device)
                for start in range(0, batch_size, minibatch_size):
                    mb_inds = b_inds[start:start + minibatch_size]
                    v_loss = value_loss(critic(b_obs[mb_inds]), b_returns[mb_inds],
                                        b_values[mb_inds], args.vf_clip)
                    critic_optimizer.zero_grad()
                    v_loss.backward()
                    critic_optimizer.step()
                    v_losses.append(v_loss.detach())

            # --- 5. θ' ← θ: the next batch is sampled by the updated actor [step 5] ---
            with torch.no_grad():  # D_KL(π_θ' ‖ π_θ): nothing bounds it, it shows how far it went
                new_dist = actor(b_obs)
                kl = mean_kl(old_dist, new_dist).item()
                entropy = new_dist.entropy().mean().item()
            # the row: policy_loss at θ' (before the step), entropy and kl after it, value_loss
            # the mean over the critic's steps
            log.update(global_step, iteration, policy_loss=pg_loss.item(),
                       value_loss=torch.stack(v_losses).mean().item(), entropy=entropy, kl=kl,
                       explained_variance=explained_variance(b_values, b_returns))
    except KeyboardInterrupt:  # Ctrl-C: stop here, keeping the rows, the model and the folder
        log.interrupted = True
    if args.save_model:
        save_model(log.run_dir / "model.pt", args, envs, actor, critic)
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
    ("total_timesteps num_envs num_steps num_minibatches update_epochs hidden_size "
     "eval_episodes", lambda x: x > 0, "a positive integer"),
    ("seed", lambda x: 0 <= x < 2**32, "an integer in [0, 2^32)"),
    ("gamma", lambda x: 0 < x <= 1, "a number in (0, 1]"),
    ("gae_lambda", lambda x: 0 <= x <= 1, "a number in [0, 1]"),
    ("learning_rate vf_learning_rate", lambda x: 0 < x < math.inf, "a positive finite number"),
    ("vf_clip", lambda x: x is None or 0 < x < math.inf, "a positive finite number"),
    ("log_std_init", math.isfinite, "a finite number"),
]


def check_args(args: Args) -> None:
    """Every rule on the flags, before anything is made; raise BadInput naming the flag."""
    for names, allowed, meaning in FLAG_RULES:
        for name in names.split():
            if not allowed(getattr(args, name)):
                raise BadInput(f"--{name.replace('_', '-')} {getattr(args, name)}: must be "
                               f"{meaning}")
    batch_size = args.num_envs * args.num_steps
    if args.total_timesteps < batch_size:
        raise BadInput(f"--total-timesteps {args.total_timesteps}: must be at least one batch, "
                       f"num_envs * num_steps = {batch_size}")
    if batch_size % args.num_minibatches or batch_size // args.num_minibatches < 2:
        raise BadInput(f"--num-minibatches {args.num_minibatches}: must divide the batch "
                       f"num_envs * num_steps = {batch_size} into minibatches of at least 2 rows")
    if args.capture_video and find_spec("moviepy") is None:
        raise BadInput("--capture-video needs the moviepy package: pip install moviepy")
    if args.eval_checkpoint is None:
        check_env(args.env_id)


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


def explained_variance(values: torch.Tensor, returns: torch.Tensor) -> float:
    """1 - Var[returns - V] / Var[returns]: 1 for a perfect critic, 0 for a constant one."""
    var_returns = returns.var().item()
    return 1.0 - (returns - values).var().item() / var_returns if var_returns else math.nan


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


def pool_statistics(means: np.ndarray, variances: np.ndarray,
                    counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Mean, variance and count of the union of groups of samples, from each group's mean and
    variance [groups, dim] and count [groups] (the law of total variance)."""
    total = counts.sum()
    mean = counts @ means / total
    # Var = E[Var within a group] + Var[group means], each weighted by the group's count
    variance = counts @ (variances + (means - mean) ** 2) / total
    return mean.astype(means.dtype), variance.astype(means.dtype), float(total)


def save_model(path: Path, args: Args, envs: gym.vector.VectorEnv, actor: Actor,
               critic: Critic) -> None:
    """Networks, sizes and, with --normalize, the observation statistics of all the envs."""
    checkpoint = {"env_id": args.env_id, "hidden_size": args.hidden_size,
                  "normalize": args.normalize, "gamma": args.gamma,
                  "actor": actor.state_dict(), "critic": critic.state_dict()}
    if args.normalize:
        # each env keeps its own running statistics (a wrapper per env): pooled for evaluation
        stats = [env.get_wrapper_attr("obs_rms") for env in envs.envs]
        mean, var, count = pool_statistics(np.stack([s.mean for s in stats]),
                                           np.stack([s.var for s in stats]),
                                           np.array([s.count for s in stats]))
        checkpoint["obs_rms"] = {"mean": torch.as_tensor(mean), "var": torch.as_tensor(var),
                                 "count": count}
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
