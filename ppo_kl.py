"""PPO with the adaptive KL penalty L^KLPEN, in one file.

Article sections and where they live here:
    Where We Left Off                 mean_kl: the KL of the constraint (logged as `kl`)
    From Baseline to Advantage        Critic; compute_gae; step 2 of train
    The Surrogate Objective           probability_ratio (r_t and the gradient identity)
    PPO: Approximate the Constraint
         with Clipping (L^KLPEN)      kl_penalty_loss, update_beta; steps 3 and 5 of train
    Putting It Together               the numbered blocks 1-5 of train
Paper: Schulman et al., Proximal Policy Optimization Algorithms, arXiv:1707.06347.
GAE:   Schulman et al., High-Dimensional Continuous Control Using GAE, arXiv:1506.02438.

Notation (article -> code):
    π_θ, π_θ'               actor after and before the update (π_θ' collected the batch)
    V                       critic
    r_t(θ)                  ratio
    Â_t                     advantages, b_advantages, mb_advantages
    δ_t                     delta (the TD residual inside compute_gae)
    γ, λ                    gamma, gae_lambda
    β, d_targ               beta (beta_init at the start), kl_target
    D_KL(π_θ' ‖ π_θ)        kl (exact, closed form, batch mean)

Not in the article, each behind a flag: advantage normalisation (--norm-adv), value clipping
(--vf-clip), entropy bonus (--ent-coef), gradient-norm clipping (--max-grad-norm),
learning-rate annealing (--anneal-lr), observation normalisation and reward scaling
(--normalize), advantages recomputed before every epoch (--recompute-adv) and value targets
scaled by the returns' running std (--scale-value-targets). Always on, commented where they are
set: orthogonal initialisation (layer_init) and Adam's eps = 1e-5.

Examples:
    python ppo_kl.py                                     # CartPole-v1 with the defaults below
    python ppo_kl.py --env-id Hopper-v5 --total-timesteps 1000000 --num-envs 1 \\
        --num-steps 2048 --num-minibatches 32 --update-epochs 10 --learning-rate 3e-4 \\
        --gamma 0.995 --gae-lambda 0.95 --ent-coef 0 --kl-target 0.02 --normalize
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
    """PPO with the adaptive KL penalty (arXiv:1707.06347, section 4)."""

    # --- run ---
    exp_name: str = "ppo_kl"
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
    """normalise the advantages of each minibatch to mean 0 and std 1"""
    recompute_adv: bool = False
    """recompute V, Â_t and the value targets with the current critic before every epoch, not
    once per batch (Tianshou's PPO; arXiv:2006.05990, section 3.5, recommends it)"""
    scale_value_targets: bool = False
    """the critic regresses returns / σ, σ the running std of all returns so far, and V is its
    output times σ (Tianshou's PPO, rew_norm); rewards then stay raw, even with --normalize"""

    # --- optimisation ---
    learning_rate: float = 2e-3
    """Adam step size for actor and critic; 3e-4 for MuJoCo"""
    anneal_lr: bool = True
    """decay the learning rate linearly toward 0: update i of n takes (n - i + 1)/n of it"""
    num_minibatches: int = 2
    """minibatches per epoch; must divide N * T"""
    update_epochs: int = 10
    """passes over each batch (K in the paper); 3 to 30"""
    max_grad_norm: float | None = 0.5
    """clip the global gradient norm of both networks to this value; None: no clipping, as in
    OpenAI baselines' ppo1 (the PPO paper's code)"""
    vf_coef: float = 0.5
    """weight of the value loss ½(V - R)² in the joint loss; the paper's c_1 (eq. 9) weights
    (V - R)², so c_1 = vf_coef / 2"""
    vf_clip: float | None = None
    """optional: clip the value update to [V_old - c, V_old + c]; the OpenAI baselines use 0.2"""
    ent_coef: float = 0.0
    """weight c_2 of the entropy bonus (paper eq. 9); 0 to 0.01"""
    hidden_size: int = 64
    """width of the two hidden tanh layers of actor and critic"""
    log_std_init: float = 0.0
    """Box actions: the Gaussian's initial log std, the same for every action dimension"""

    # --- PPO-KL ---
    kl_target: float = 0.01
    """d_targ: the KL per update that β steers toward (not an early stop); paper 0.003-0.03"""
    beta_init: float = 1.0
    """β of the first update: the weight of the KL penalty in L^KLPEN"""
    adaptive: bool = True
    """adapt β after each update; --no-adaptive keeps beta_init (the paper's fixed-β rows)"""
    beta_factor: float = 2.0
    """the rule divides or multiplies β by this outside the band; the paper's 2 (> 1)"""


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


class ReturnScale:
    """σ, the running std of every return Â_t + V(s_t) seen so far, for --scale-value-targets;
    exactly 1 until the first update. Not in the article: Tianshou's PPO (its rew_norm) divides
    the critic's targets by σ and, like OpenAI baselines, does not subtract the mean."""

    def __init__(self, enabled: bool = True):
        self.mean, self.var, self.count = np.zeros(1), np.ones(1), 0.0
        self.enabled = enabled  # off: update does nothing and σ stays 1

    def update(self, returns: torch.Tensor) -> None:
        if not self.enabled:
            return
        x = returns.double().cpu().numpy()[:, None]  # one group of samples, pooled with the rest
        self.mean, self.var, self.count = pool_statistics(
            np.stack([self.mean, x.mean(0)]), np.stack([self.var, x.var(0)]),
            np.array([self.count, len(x)]))

    @property
    def std(self) -> float:
        return math.sqrt(self.var[0] + 1e-8) if self.count else 1.0


def advantages_and_returns(critic: Critic, batch: tuple[torch.Tensor, ...], gamma: float,
                           gae_lambda: float, scale: float) -> tuple[torch.Tensor, ...]:
    """Step 2 of train: Â_t, the returns Â_t + V(s_t) (the critic's targets) and V(s_t), each
    flattened to [T * N]. batch = (obs, next_obs_true, rewards, terminations, dones), [T, N, ...];
    the critic predicts V / scale (scale = 1 unless --scale-value-targets)."""
    obs, next_obs, rewards, terminations, dones = batch
    with torch.no_grad():  # V once per batch, not once per step
        values = critic(obs) * scale  # [T, N]
        next_values = critic(next_obs) * scale
        advantages = compute_gae(rewards, values, next_values, terminations, dones, gamma,
                                 gae_lambda)
    return advantages.reshape(-1), (advantages + values).reshape(-1), values.reshape(-1)


def probability_ratio(newlogprob: torch.Tensor, logprob: torch.Tensor) -> torch.Tensor:
    """r_t(θ) = π_θ(a_t|s_t) / π_θ'(a_t|s_t), formed in log space. [The Surrogate Objective]

    Since ∇_θ r_t(θ) = r_t(θ) ∇_θ log π_θ(a_t|s_t), autograd of r_t(θ) Â_t gives the off-policy
    gradient r_t(θ) ∇_θ log π_θ(a_t|s_t) Â_t: maximising L(θ) = Ê_t[r_t(θ) Â_t] follows it."""
    return (newlogprob - logprob).exp()


def kl_penalty_loss(ratio: torch.Tensor, advantages: torch.Tensor, kl: torch.Tensor,
                    beta: float) -> torch.Tensor:
    """Return -L^KLPEN = -(Ê_t[r_t Â_t] - β Ê_t[D_KL(π_θ' ‖ π_θ)]).

    [PPO: Approximate the Constraint with Clipping]; arXiv:1707.06347 eq. 8. `kl` is the
    minibatch mean of the exact KL, so its gradient pulls π_θ back toward π_θ'. With β = 0 it is
    the plain surrogate -L(θ) = -Ê_t[r_t Â_t] and nothing else, even where the KL is infinite."""
    objective = (ratio * advantages).mean()
    if beta:
        objective = objective - beta * kl
    return -objective


def update_beta(beta: float, kl: float, kl_target: float, factor: float = 2.0) -> float:
    """β / factor when d < d_targ / 1.5, β * factor when d > 1.5 d_targ, else β: with factor 2,
    halve or double.

    arXiv:1707.06347 section 4: the factors 1.5 and 2 are the paper's, set by hand there;
    `factor` replaces the 2."""
    if kl < kl_target / 1.5:
        return beta / factor
    if kl > kl_target * 1.5:
        return beta * factor
    return beta


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
                                "explained_variance", "beta", "max_ratio_dev"],
                 num_iterations * batch_size)
    thunks = [make_env(args.env_id, i, args.capture_video, log.run_dir, args.gamma, args.normalize,
                       args.norm_reward and not args.scale_value_targets)
              for i in range(args.num_envs)]
    envs = gym.vector.SyncVectorEnv(thunks, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    obs_dim, action_shape = envs.single_observation_space.shape[0], envs.single_action_space.shape
    actor = Actor(obs_dim, envs.single_action_space, args.hidden_size, args.log_std_init).to(device)
    # π_θ', frozen: the penalty needs π_θ'(·|s) on each minibatch's states
    old_actor = copy.deepcopy(actor).requires_grad_(False)
    critic = Critic(obs_dim, args.hidden_size).to(device)
    params = [*actor.parameters(), *critic.parameters()]
    # not in the article: eps 1e-5, not 1e-8 (OpenAI baselines' ppo2); fused: one kernel, faster
    optimizer = torch.optim.Adam(params, lr=args.learning_rate, eps=1e-5, fused=True)

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

    global_step, beta, return_scale = 0, args.beta_init, ReturnScale(args.scale_value_targets)
    next_obs, _ = envs.reset(seed=args.seed)
    try:
        for iteration in range(1, num_iterations + 1):
            if args.anneal_lr:
                # not in the article: linear learning-rate decay to 0 (arXiv:1707.06347, Table 5,
                # the Atari settings; its MuJoCo settings, Table 3, keep 3e-4 constant)
                optimizer.param_groups[0]["lr"] = args.learning_rate * (
                    1.0 - (iteration - 1.0) / num_iterations)

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

            # --- 2. Advantages Â_t by GAE with the critic V [From Baseline to Advantage] ---
            b_obs = tensor(obs).reshape(batch_size, obs_dim)  # [T * N, obs_dim]
            b_actions = tensor(actions).reshape(batch_size, *action_shape)
            batch = tuple(tensor(x) for x in (obs, next_obs_true, rewards, terminations, dones))
            scale = return_scale.std  # σ as this batch is valued: the critic gave b_values / σ
            b_advantages, b_returns, b_values = advantages_and_returns(  # each [T * N]
                critic, batch, args.gamma, args.gae_lambda, scale)
            return_scale.update(b_returns)  # only with --scale-value-targets
            with torch.no_grad():
                old_dist = actor(b_obs)  # π_θ'(·|s_t), once per batch: the actor is still θ'
                b_logprobs = old_dist.log_prob(b_actions)  # log π_θ'(a_t|s_t)

            # --- 3 and 4. Maximise L^KLPEN and regress V on minibatches for several epochs,
            #     one Adam step on the joint loss (paper eq. 9) [Putting It Together, 3-4] ---
            stats = []
            for epoch in range(args.update_epochs):
                if args.recompute_adv and epoch > 0:  # step 2 again, with the critic as it is
                    b_advantages, b_returns, _ = advantages_and_returns(
                        critic, batch, args.gamma, args.gae_lambda, return_scale.std)
                b_inds = torch.randperm(batch_size, device=device)
                for start in range(0, batch_size, minibatch_size):
                    mb_inds = b_inds[start:start + minibatch_size]
                    mb_obs = b_obs[mb_inds]
                    dist = actor(mb_obs)
                    newlogprob = dist.log_prob(b_actions[mb_inds])
                    entropy = dist.entropy().mean()
                    # r_t(θ) = π_θ(a_t|s_t) / π_θ'(a_t|s_t); autograd of r_t Â_t gives
                    # r_t ∇_θ log π_θ(a_t|s_t) Â_t  [The Surrogate Objective]
                    ratio = probability_ratio(newlogprob, b_logprobs[mb_inds])

                    mb_advantages = b_advantages[mb_inds]
                    if args.norm_adv:
                        # not in the article: normalised per minibatch (OpenAI baselines)
                        mb_advantages = (mb_advantages - mb_advantages.mean()) / (
                            mb_advantages.std() + 1e-8)
                    # -L^KLPEN(θ) = -(Ê_t[r_t Â_t] - β KL), the exact KL on the minibatch
                    #   [PPO: Approximate the Constraint with Clipping]
                    kl = mean_kl(old_actor(mb_obs), dist)
                    pg_loss = kl_penalty_loss(ratio, mb_advantages, kl, beta)

                    # step 4: regress V(s_t) on Â_t + V_old(s_t), in the critic's units (÷ σ)
                    v_loss = value_loss(critic(mb_obs), b_returns[mb_inds] / return_scale.std,
                                        b_values[mb_inds] / scale, args.vf_clip)

                    # paper eq. 9 with L^KLPEN: maximise L^KLPEN - c_1 L^VF + c_2 S, negated
                    loss = pg_loss + args.vf_coef * v_loss - args.ent_coef * entropy
                    optimizer.zero_grad()
                    loss.backward()
                    if args.max_grad_norm is not None:
                        # not in the article: global gradient-norm clipping (OpenAI baselines)
                        nn.utils.clip_grad_norm_(params, args.max_grad_norm)
                    optimizer.step()
                    stats.append(torch.stack([pg_loss, v_loss, entropy]).detach())

            # --- 5. θ' ← θ: the next batch is sampled by the updated actor [step 5] ---
            old_actor.load_state_dict(actor.state_dict())
            with torch.no_grad():  # for the log: D_KL(π_θ' ‖ π_θ) of the whole update and
                new_dist = actor(b_obs)  # the largest |r_t - 1| on the batch after its last epoch
                kl = mean_kl(old_dist, new_dist).item()
                max_ratio_dev = (probability_ratio(new_dist.log_prob(b_actions), b_logprobs)
                                 - 1.0).abs().max().item()
            # the row: means over the minibatch steps (policy loss with β KL); the β it used
            pg_loss, v_loss, entropy = torch.stack(stats).mean(0).tolist()
            log.update(global_step, iteration, policy_loss=pg_loss, value_loss=v_loss,
                       entropy=entropy, kl=kl, beta=beta, max_ratio_dev=max_ratio_dev,
                       explained_variance=explained_variance(b_values, b_returns))
            if args.adaptive:  # d, this update's exact KL, sets the next β (paper section 4)
                beta = update_beta(beta, kl, args.kl_target, args.beta_factor)
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
    ("learning_rate", lambda x: 0 < x < math.inf, "a positive finite number"),
    ("max_grad_norm", lambda x: x is None or 0 < x < math.inf, "a positive finite number"),
    ("vf_coef ent_coef", lambda x: 0 <= x < math.inf, "a non-negative finite number"),
    ("vf_clip", lambda x: x is None or 0 < x < math.inf, "a positive finite number"),
    ("log_std_init", math.isfinite, "a finite number"),
    ("kl_target", lambda x: 0 < x < math.inf, "a positive finite number"),
    ("beta_factor", lambda x: 1 < x < math.inf, "a finite number greater than 1"),
    ("beta_init", lambda x: 0 <= x < math.inf, "a non-negative finite number"),
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
    if args.beta_init == 0 and args.adaptive:
        raise BadInput(f"--beta-init {args.beta_init}: must be positive (0, the plain surrogate, "
                       "only with --no-adaptive: halving or doubling 0 stays 0)")
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
