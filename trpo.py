"""TRPO: the surrogate objective under an exact KL constraint, in one file.

Article sections and where they live here:
    From Baseline to Advantage        Critic; compute_gae; step 2 of train
    The Surrogate Objective           surrogate_and_kl; the gradient g in step 3 of train
    TRPO: Enforce the Constraint
          Exactly                     fisher_vector_product, conjugate_gradient, the full step
                                      and line_search; step 3 of train
    Putting It Together               the numbered blocks 1-5 of train (TRPO takes one
                                      constrained step where PPO takes several epochs)
Paper: Schulman et al., Trust Region Policy Optimization, arXiv:1502.05477.
GAE:   Schulman et al., High-Dimensional Continuous Control Using GAE, arXiv:1506.02438.

Notation (article -> code):
    pi_theta, pi_theta'     actor (being updated), old_actor (collected the batch)
    V                       critic
    r_t(theta)              ratio = exp(newlogprob - b_logprobs)
    A_t (hat)               advantages, b_advantages, mb_advantages
    delta_t                 delta (TD residual inside compute_gae)
    gamma, lambda           gamma, gae_lambda
    delta (trust region)    max_kl (the code's `delta` is only the TD residual)
    g, F                    grad of the surrogate, Fisher matrix = Hessian of the mean KL
    s = F^-1 g              search_dir (conjugate_gradient, never forming F)
    sqrt(2 delta / s^T F s) s   full_step (trust_region_step)
    D_KL(pi_theta' || pi_theta)   kl (exact, closed form, batch mean)

Not in the article, each behind a flag: advantage normalisation (--norm-adv), value clipping
(--vf-clip), damping of the Fisher matrix (--cg-damping), the critic's learning-rate annealing
(--anneal-lr), observation normalisation and reward scaling (--normalize). Always on,
commented where they are set: orthogonal initialisation (layer_init) and Adam's eps = 1e-5.

Examples:
    python trpo.py                                       # CartPole-v1 with the defaults below
    python trpo.py --env-id Hopper-v5 --total-timesteps 1000000 --num-envs 1 \\
        --num-steps 2048 --num-minibatches 32 --update-epochs 10 --learning-rate 1e-3 \\
        --gamma 0.995 --gae-lambda 0.9 --max-kl 0.02 --normalize
"""

import copy
import json
import math
import os
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.distributions import Categorical, Distribution, Independent, Normal, kl_divergence
import gymnasium as gym
import tyro


@dataclass
class Args:
    """Trust region policy optimization (arXiv:1502.05477)."""

    # --- run ---
    exp_name: str = "trpo"
    """name of the experiment, part of the run folder's name"""
    seed: int = 1
    """seed of numpy, torch, python's random and the environments"""
    runs_dir: str = "runs"
    """parent folder of the run folders"""
    torch_deterministic: bool = True
    """use torch's deterministic algorithms (same seed, same run)"""
    cuda: bool = False
    """train on the GPU if there is one; off by default: networks this small run faster on a CPU"""
    save_model: bool = False
    """write model.pt (networks and observation-normalisation statistics) into the run folder"""
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
    """environment steps of the whole run, summed over the parallel environments"""
    num_envs: int = 8
    """parallel environments in the vector env (N)"""
    num_steps: int = 64
    """steps per environment per rollout (T); one batch is N * T steps"""
    normalize: bool = False
    """running observation normalisation and reward scaling, both clipped to [-10, 10]"""

    # --- advantage ---
    gamma: float = 0.99
    """discount gamma in (0, 1]; 0.99 is usual"""
    gae_lambda: float = 0.95
    """lambda in [0, 1] of GAE: 0 is the one-step TD error, 1 the return minus V"""
    norm_adv: bool = True
    """normalise the batch's advantages to mean 0 and std 1"""

    # --- optimisation ---
    learning_rate: float = 1e-3
    """Adam step size of the critic (the actor's step is set by max_kl)"""
    anneal_lr: bool = True
    """decay the critic's learning rate linearly to 0 over the run"""
    num_minibatches: int = 4
    """minibatches per critic epoch; must divide N * T"""
    update_epochs: int = 20
    """passes of the critic's regression over each batch"""
    vf_clip: float | None = None
    """optional: clip the value update to [V_old - c, V_old + c]; the OpenAI baselines use 0.2"""
    hidden_size: int = 64
    """width of the two hidden tanh layers of actor and critic"""
    log_std_init: float = 0.0
    """Box actions: the Gaussian's initial log std, the same for every action dimension"""

    # --- TRPO ---
    max_kl: float = 0.01
    """delta, the trust region's radius: mean KL(pi_theta' || pi_theta) <= delta; paper 0.01"""
    cg_iters: int = 10
    """conjugate-gradient iterations to solve F s = g; 10 is usual"""
    cg_damping: float = 0.1
    """c added to F's diagonal, (F + c I) s = g, keeps CG well posed; 0.001 to 0.1"""
    backtrack_coef: float = 0.8
    """the line search tries coef^k times the full step, k = 0, 1, ..."""
    backtrack_iters: int = 10
    """steps the line search tries before it keeps theta'"""


def fail(message: str, status: int = 2) -> None:
    """End the program with one line on stderr, no traceback."""
    print(f"{Path(sys.argv[0]).name}: error: {message}", file=sys.stderr)
    raise SystemExit(status)


def check_args(args: Args) -> None:
    """Every rule on the flags, before anything is built."""
    for name in ("total_timesteps", "num_envs", "num_steps", "num_minibatches", "update_epochs",
                 "hidden_size", "eval_episodes", "cg_iters", "backtrack_iters"):
        if getattr(args, name) <= 0:
            fail(f"--{name.replace('_', '-')} {getattr(args, name)}: must be a positive integer")
    if not 0 < args.gamma <= 1:
        fail(f"--gamma {args.gamma}: must lie in (0, 1]")
    if not 0 <= args.gae_lambda <= 1:
        fail(f"--gae-lambda {args.gae_lambda}: must lie in [0, 1]")
    if not math.isfinite(args.log_std_init):
        fail(f"--log-std-init {args.log_std_init}: must be a finite number")
    if not args.learning_rate > 0:
        fail(f"--learning-rate {args.learning_rate}: must be positive")
    if not args.max_kl > 0:
        fail(f"--max-kl {args.max_kl}: must be positive")
    if not args.cg_damping >= 0:
        fail(f"--cg-damping {args.cg_damping}: must be non-negative")
    if not 0 < args.backtrack_coef < 1:
        fail(f"--backtrack-coef {args.backtrack_coef}: must lie in (0, 1)")
    if args.vf_clip is not None and not args.vf_clip > 0:
        fail(f"--vf-clip {args.vf_clip}: must be positive")
    batch_size = args.num_envs * args.num_steps
    if args.total_timesteps < batch_size:
        fail(f"--total-timesteps {args.total_timesteps}: must be at least one batch, "
             f"num_envs * num_steps = {batch_size}")
    if batch_size % args.num_minibatches or batch_size // args.num_minibatches < 2:
        fail(f"--num-minibatches {args.num_minibatches}: must divide the batch "
             f"num_envs * num_steps = {batch_size} into minibatches of at least 2 rows")
    if args.capture_video:
        try:
            import moviepy  # noqa: F401
        except ImportError:
            fail("--capture-video needs the moviepy package: pip install moviepy")
    if args.eval_checkpoint is None:
        check_env(args.env_id)


def check_env(env_id: str) -> None:
    """The env must exist and have a Box observation and a Discrete or Box action space."""
    try:
        env = gym.make(env_id)
    except Exception as error:
        fail(f"--env-id {env_id!r}: cannot be made ({str(error).splitlines()[0]})")
    obs_space, action_space = env.observation_space, env.action_space
    env.close()
    if not (isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1):
        fail(f"--env-id {env_id!r}: observation space {obs_space} is not handled "
             "(a flat Box is)")
    if not isinstance(action_space, (gym.spaces.Discrete, gym.spaces.Box)):
        fail(f"--env-id {env_id!r}: action space {action_space} is not handled "
             "(Discrete or Box are)")


def make_env(env_id: str, idx: int, capture_video: bool, run_dir: Path, gamma: float,
             normalize: bool):
    """A thunk for gym.vector.SyncVectorEnv; every wrapper is per env (see DESIGN.md)."""

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
    """pi_theta(.|s): Categorical for Discrete actions, diagonal Gaussian with a
    state-independent log std for Box actions."""

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
        # validate_args=False: the argument checks cost as much as the network (DESIGN.md)
        if self.continuous:
            std = self.log_std.exp().expand_as(out)
            return Independent(Normal(out, std, validate_args=False), 1, validate_args=False)
        return Categorical(logits=out, validate_args=False)

    def sample(self, obs: torch.Tensor) -> torch.Tensor:
        """a ~ pi_theta(.|s) without building a Distribution: on the rollout's per-step path
        torch.distributions costs twice the network (DESIGN.md, Speed)."""
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


def mean_kl(old_dist: Distribution, new_dist: Distribution) -> torch.Tensor:
    """Batch mean of the exact KL(pi_theta'(.|s) || pi_theta(.|s)), in closed form.

    The constraint of [TRPO: Enforce the Constraint Exactly]; the one KL of this file."""
    return kl_divergence(old_dist, new_dist).mean()


def surrogate_and_kl(actor: Actor, old_dist: Distribution, obs: torch.Tensor,
                     actions: torch.Tensor, old_logprobs: torch.Tensor,
                     advantages: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """L(theta) = mean(r_t A_t) [The Surrogate Objective] and the mean KL(pi_theta' || pi_theta)
    of the constraint [TRPO: Enforce the Constraint Exactly], at the actor's current theta."""
    dist = actor(obs)
    # r_t(theta) = pi_theta(a_t|s_t) / pi_theta'(a_t|s_t), in log space; grad (r_t A_t) is
    # r_t grad log pi_theta(a_t|s_t) A_t, the off-policy gradient [The Surrogate Objective]
    ratio = (dist.log_prob(actions) - old_logprobs).exp()
    return (ratio * advantages).mean(), mean_kl(old_dist, dist)


def fisher_vector_product(kl_grad: torch.Tensor, params: list[nn.Parameter], v: torch.Tensor,
                          damping: float) -> torch.Tensor:
    """F v + damping v, with F the Hessian of the mean KL at theta = theta'.

    kl_grad is grad_theta KL, flat, built with create_graph=True: a second backward pass of
    (kl_grad . v) gives H v without forming H (arXiv:1502.05477, Appendix C). At theta = theta'
    the KL's Hessian equals the Fisher information matrix of the policy."""
    hvp = torch.autograd.grad(kl_grad @ v, params, retain_graph=True)
    return torch.cat([h.reshape(-1) for h in hvp]) + damping * v


def conjugate_gradient(Avp, b: torch.Tensor, iters: int,
                       residual_tol: float = 1e-10) -> torch.Tensor:
    """Solve A x = b for symmetric positive-definite A, given only v -> A v.

    Conjugate gradients from x = 0 (Nocedal & Wright, Algorithm 5.2); stops early once the
    squared residual |b - A x|^2 falls below residual_tol."""
    x = torch.zeros_like(b)
    r = b.clone()  # residual b - A x
    p = b.clone()  # search direction, A-conjugate to the previous ones
    rr = r @ r
    for _ in range(iters):
        if rr < residual_tol:
            break
        Ap = Avp(p)
        alpha = rr / (p @ Ap)
        x += alpha * p
        r -= alpha * Ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def trust_region_step(search_dir: torch.Tensor, F_search_dir: torch.Tensor,
                      max_kl: float) -> torch.Tensor:
    """The full step sqrt(2 delta / s^T F s) s along s = F^-1 g, given s and F s.

    max g.x subject to 1/2 x^T F x <= delta is reached at x = c s, with c chosen so that
    1/2 c^2 s^T F s = delta (arXiv:1502.05477, Appendix C). [TRPO: Enforce the Constraint
    Exactly] The 1e-12 keeps a zero gradient (s = 0) from dividing 0 by 0."""
    return torch.sqrt(2.0 * max_kl / (search_dir @ F_search_dir + 1e-12)) * search_dir


def line_search(surrogate_and_kl_at, theta_old: torch.Tensor, full_step: torch.Tensor,
                max_kl: float, backtrack_coef: float, backtrack_iters: int):
    """Try theta' + coef^k full_step for k = 0, 1, ...; accept the first whose measured KL is at
    most delta and whose surrogate improves on theta'. [TRPO: Enforce the Constraint Exactly]

    surrogate_and_kl_at(theta) -> (surrogate, kl). Returns (theta, k, accepted, improvement);
    when no step is acceptable, theta' itself with k = backtrack_iters and accepted = False."""
    surrogate_old, _ = surrogate_and_kl_at(theta_old)
    for k in range(backtrack_iters):
        theta = theta_old + backtrack_coef**k * full_step
        surrogate, kl = surrogate_and_kl_at(theta)
        if kl <= max_kl and surrogate > surrogate_old:
            return theta, k, True, float(surrogate - surrogate_old)
    return theta_old, backtrack_iters, False, 0.0


def new_run_dir(args: Args) -> Path:
    name = Path(args.runs_dir) / f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir, copies = name, 1
    while True:  # two runs started in the same second get folders -2, -3, ...
        try:
            run_dir.mkdir(parents=True)
            break
        except FileExistsError:
            copies += 1
            run_dir = name.with_name(f"{name.name}-{copies}")
        except OSError as error:
            fail(f"--runs-dir {args.runs_dir!r}: cannot create a run folder there ({error})")
    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "gymnasium": gym.__version__, "numpy": np.__version__}
    (run_dir / "config.json").write_text(json.dumps({**asdict(args), "versions": versions},
                                                    indent=2))
    return run_dir


def write_row(file, *row) -> None:
    """Append one CSV row (floats to 6 significant digits)."""
    file.write(",".join(f"{x:.6g}" if isinstance(x, float) else str(x) for x in row) + "\n")


def train(args: Args) -> Path:
    """Run one experiment and return its run folder."""
    batch_size = args.num_envs * args.num_steps
    minibatch_size = batch_size // args.num_minibatches
    num_iterations = args.total_timesteps // batch_size
    run_dir = new_run_dir(args)
    # line-buffered: each row is flushed as it is written, so a stopped run keeps all of them
    episodes_file = open(run_dir / "episodes.csv", "w", buffering=1)
    updates_file = open(run_dir / "updates.csv", "w", buffering=1)
    write_row(episodes_file, "global_step", "episodic_return", "episodic_length", "wall_time")
    write_row(updates_file, "global_step", "iteration", "sps", "policy_loss", "value_loss",
              "entropy", "kl", "explained_variance", "backtracks", "accepted",
              "surrogate_improvement")

    # seeding, all in one block; one torch thread is faster for networks this small
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    if args.cuda and args.torch_deterministic:
        # cuBLAS is deterministic only with a fixed workspace (torch docs, "Reproducibility")
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(args.torch_deterministic)
    torch.set_num_threads(1)
    device = torch.device("cuda" if args.cuda and torch.cuda.is_available() else "cpu")

    envs = gym.vector.SyncVectorEnv(
        [make_env(args.env_id, i, args.capture_video, run_dir, args.gamma, args.normalize)
         for i in range(args.num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    obs_dim = envs.single_observation_space.shape[0]
    actor = Actor(obs_dim, envs.single_action_space, args.hidden_size,
                  args.log_std_init).to(device)
    old_actor = copy.deepcopy(actor).requires_grad_(False)  # pi_theta', frozen for the KL
    critic = Critic(obs_dim, args.hidden_size).to(device)
    actor_params = list(actor.parameters())
    # the critic has its own optimizer: the actor takes one natural-gradient step per batch
    # not in the article: Adam eps 1e-5 instead of 1e-8 (OpenAI baselines; arXiv:2005.12729)
    critic_optimizer = torch.optim.Adam(critic.parameters(), lr=args.learning_rate, eps=1e-5,
                                        fused=True)

    # storage: row t holds step t of every env; numpy arrays, cheaper to write per step than
    # torch indexing, read as tensors once per batch
    T, N = args.num_steps, args.num_envs
    obs = np.zeros((T, N, obs_dim), dtype=np.float32)  # [T, N, obs_dim]
    next_obs_true = np.zeros((T, N, obs_dim), dtype=np.float32)  # s_{t+1}, final obs at ends
    actions = np.zeros((T, N, *envs.single_action_space.shape), dtype=np.float32)
    rewards = np.zeros((T, N), dtype=np.float32)  # [T, N]
    terminations = np.zeros((T, N), dtype=np.float32)
    dones = np.zeros((T, N), dtype=np.float32)

    def tensor(x: np.ndarray) -> torch.Tensor:  # a view of the numpy storage on the CPU
        return torch.as_tensor(x, device=device)

    global_step = 0
    recent_returns: list[float] = []
    start_time = time.time()
    next_obs, _ = envs.reset(seed=args.seed)
    print_every = max(1, num_iterations // 50)  # about 50 progress lines a run
    for iteration in range(1, num_iterations + 1):
        if args.anneal_lr:
            # not in the article: linear learning-rate decay to 0 (arXiv:1707.06347, Table 3)
            critic_optimizer.param_groups[0]["lr"] = args.learning_rate * (
                1.0 - (iteration - 1.0) / num_iterations)

        # --- 1. Collect a batch with pi_theta' [Putting It Together, step 1] ---
        for step in range(T):
            obs[step] = next_obs
            with torch.no_grad():
                action = actor.sample(torch.as_tensor(obs[step], device=device)).cpu().numpy()
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
                    recent_returns.append(float(episode["r"][i]))
                    write_row(episodes_file, global_step, float(episode["r"][i]),
                              int(episode["l"][i]), round(time.time() - start_time, 3))
            rewards[step], terminations[step] = reward, terminated
            dones[step] = terminated | truncated

        # --- 2. Advantages A_t by GAE with the critic V [From Baseline to Advantage] ---
        with torch.no_grad():
            # V is evaluated once per batch, not once per step
            values = critic(tensor(obs))  # [T, N]
            next_values = critic(tensor(next_obs_true))  # [T, N]
            advantages = compute_gae(tensor(rewards), values, next_values, tensor(terminations),
                                     tensor(dones), args.gamma, args.gae_lambda)
            returns = advantages + values  # the critic's regression targets

        b_obs = tensor(obs).reshape(batch_size, obs_dim)  # [T * N, obs_dim]
        b_actions = tensor(actions).reshape(batch_size, *envs.single_action_space.shape)
        b_advantages = advantages.reshape(-1)  # [T * N]
        b_returns = returns.reshape(-1)
        b_values = values.reshape(-1)
        old_actor.load_state_dict(actor.state_dict())  # pi_theta' = the actor of step 1
        with torch.no_grad():
            old_dist = old_actor(b_obs)
            # log pi_theta'(a_t|s_t), once per batch: the actor has not moved since step 1
            b_logprobs = old_dist.log_prob(b_actions)

        # --- 3. One step on L(theta) inside the KL ball [TRPO: Enforce the Constraint Exactly] ---
        if args.norm_adv:
            # not in the article: advantage normalisation over the batch (OpenAI baselines)
            b_advantages = (b_advantages - b_advantages.mean()) / (b_advantages.std() + 1e-8)
        surrogate, kl = surrogate_and_kl(actor, old_dist, b_obs, b_actions, b_logprobs,
                                         b_advantages)
        # g = grad L(theta) at theta = theta': the surrogate to first order
        g = torch.cat([x.reshape(-1) for x in torch.autograd.grad(surrogate, actor_params,
                                                                  retain_graph=True)])
        # the KL to second order: its gradient is zero at theta', its Hessian is F
        kl_grad = torch.cat([x.reshape(-1) for x in torch.autograd.grad(kl, actor_params,
                                                                        create_graph=True)])

        def Fvp(v: torch.Tensor) -> torch.Tensor:
            return fisher_vector_product(kl_grad, actor_params, v, args.cg_damping)

        search_dir = conjugate_gradient(Fvp, g, args.cg_iters)  # s = F^-1 g
        full_step = trust_region_step(search_dir, Fvp(search_dir), args.max_kl)

        def surrogate_and_kl_at(theta: torch.Tensor) -> tuple[float, float]:
            nn.utils.vector_to_parameters(theta, actor_params)
            with torch.no_grad():
                surrogate, kl = surrogate_and_kl(actor, old_dist, b_obs, b_actions, b_logprobs,
                                                 b_advantages)
            return surrogate.item(), kl.item()

        theta_old = nn.utils.parameters_to_vector(actor_params).detach()
        theta, backtracks, accepted, improvement = line_search(
            surrogate_and_kl_at, theta_old, full_step, args.max_kl, args.backtrack_coef,
            args.backtrack_iters)
        nn.utils.vector_to_parameters(theta, actor_params)
        with torch.no_grad():
            new_dist = actor(b_obs)
            kl = mean_kl(old_dist, new_dist).item()  # 0 when theta' was kept
            entropy = new_dist.entropy().mean().item()
        pg_loss = -(surrogate.item() + improvement)  # -L(theta) after the step

        # --- 4. Regress V toward the returns, several epochs [Putting It Together, step 4] ---
        v_losses = []
        for epoch in range(args.update_epochs):
            b_inds = torch.randperm(batch_size, device=device)
            for start in range(0, batch_size, minibatch_size):
                mb_inds = b_inds[start:start + minibatch_size]
                newvalue = critic(b_obs[mb_inds])
                v_error = (newvalue - b_returns[mb_inds]) ** 2
                if args.vf_clip is not None:
                    # not in the article: value clipping (OpenAI baselines; arXiv:2005.12729)
                    v_clipped = b_values[mb_inds] + torch.clamp(
                        newvalue - b_values[mb_inds], -args.vf_clip, args.vf_clip)
                    v_error = torch.max(v_error, (v_clipped - b_returns[mb_inds]) ** 2)
                v_loss = 0.5 * v_error.mean()
                critic_optimizer.zero_grad()
                v_loss.backward()
                critic_optimizer.step()
                v_losses.append(v_loss.detach())
        # --- 5. theta' <- theta: the next collection samples from the updated actor
        #     [Putting It Together, step 5] ---

        v_loss = torch.stack(v_losses).mean().item()
        if not all(map(math.isfinite, (pg_loss, v_loss, entropy, kl))):
            fail(f"the loss is not finite at iteration {iteration}; stopping", status=1)
        var_returns = b_returns.var().item()
        explained_variance = (float("nan") if var_returns == 0
                              else 1.0 - (b_returns - b_values).var().item() / var_returns)
        sps = int(global_step / (time.time() - start_time))
        write_row(updates_file, global_step, iteration, sps, pg_loss, v_loss, entropy, kl,
                  explained_variance, backtracks, int(accepted), improvement)
        if iteration % print_every == 0 or iteration == num_iterations:  # always the last
            # the return of a run is the mean of its last 20 episodes, here and in the README
            mean_return = np.mean(recent_returns[-20:]) if recent_returns else float("nan")
            eta = (args.total_timesteps - global_step) / max(sps, 1)
            print(f"step {global_step:,}/{num_iterations * batch_size:,} "
                  f"({100 * iteration / num_iterations:.0f}%) | return {mean_return:.1f} | "
                  f"{sps:,} steps/s | kl {kl:.4f} | backtracks {backtracks} | "
                  f"ETA {eta:.0f}s", flush=True)

    if args.save_model:
        save_model(run_dir / "model.pt", args, envs, actor, critic)
    envs.close()
    episodes_file.close()
    updates_file.close()
    print(f"run folder: {run_dir}\nfinal mean return (last 20 episodes): {mean_return:.1f}")
    return run_dir


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
    """Play the deterministic policy of a checkpoint; return the mean and std of the return."""
    path = Path(args.eval_checkpoint)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        env_id, hidden, normalize, gamma = (checkpoint["env_id"], checkpoint["hidden_size"],
                                            checkpoint["normalize"], checkpoint["gamma"])
    except Exception as error:
        fail(f"--eval-checkpoint {str(path)!r}: not a readable model file "
             f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})")
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
        fail(f"--eval-checkpoint {str(path)!r}: does not match {env_id} "
             f"({str(error).splitlines()[0]})")
    returns = []
    for episode in range(args.eval_episodes):
        obs, _ = env.reset(seed=args.seed + episode)
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
    check_args(cli_args)
    if cli_args.eval_checkpoint is not None:
        evaluate(cli_args)
    else:
        train(cli_args)
