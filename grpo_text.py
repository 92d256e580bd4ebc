"""GRPO where it is used: a tiny causal transformer, fine-tuned first by supervision, then by
GRPO on a task whose answers a checker can score (integer addition as text), in one file.

Article sections and where they live here:
    Where We Left Off                 mean_kl: the KL of the constraint (logged as `kl`)
    From Baseline to Advantage        compute_gae and answer_gae (--advantage critic);
                                      the batch-mean baseline (--advantage batch)
    The Surrogate Objective           probability_ratio (r_t and the gradient identity)
    PPO: Approximate the Constraint
         with Clipping                clipped_surrogate_loss, called by grpo_loss
    Putting It Together               the numbered blocks of train (step 4 with a critic only);
                                      its step 0, fine_tune, gives π_ref
    What's Next                       sample_answers, reward, collect_groups (step 1);
                                      group_advantages, group_batch (step 2); kl_k3,
                                      token_weights, grpo_loss (step 3)
Papers: GRPO, Shao et al., arXiv:2402.03300 §4.1 (eqs. 3-4); Dr. GRPO, arXiv:2503.20783; DAPO,
arXiv:2503.14476 (each departure behind a flag); the transformer, arXiv:1706.03762.

The task is made here, nothing is downloaded: prompts "07+48=" (operands zero-padded to
--num-digits) answered "55" and an end token "$". Every pair of operands is either held out
(--heldout-size of them, drawn from the run's seed) or a training prompt. The reward R_i is 1
when answer i up to its end token is the sum, else 0: one number at the end of the answer, as a
checker gives it. Stage 1 trains the policy on --sft-examples solved training prompts for
--sft-steps steps (supervised fine-tuning, SFT), stopped early on purpose so that it is right on
a minority of held-out prompts; that policy is π_ref. Stage 2 is GRPO: G answers to each of P
prompts, sampled at temperature 1, every token of answer i with the advantage Â_i of its group.
No signal, no step: a group whose R_i are all equal has every Â_i = 0; a batch of such groups
alone gives no step, which Adam's momentum would still take.

Notation (article and paper -> code):
    π_θ, π_θ', π_ref        actor after and before the update; ref_actor (the SFT policy)
    q, o_i, |o_i|           prompts; answer i (tokens up to and with the end token); lengths
    P, G                    num_prompts, group_size; N = P·G answers per batch
    s_t, a_t                the prompt and o_i's first t tokens; o_i's token t
    R_i, Â_i                rewards (0 or 1); advantages, the same for every token of o_i
    r_t(θ), ε, β            ratio, clip_coef (clip_coef_high: DAPO's ε_high), beta
    D_KL(π_θ ‖ π_ref)       kl_ref: per token its k3 estimate π_ref/π_θ - log(π_ref/π_θ) - 1
    D_KL(π_θ' ‖ π_θ)        kl (exact over the vocabulary, mean over the batch's answer tokens)
    V(s_t), γ, λ            critic (--advantage critic), gamma, gae_lambda

Not in the article, each behind a flag: Dr. GRPO's 1/L for 1/|o_i| (--no-length-norm) and Â_i
without the std (--no-std-scale), DAPO's dynamic sampling (--dynamic-sampling) and clip-higher
(--clip-coef-high), gradient-norm clipping (--max-grad-norm), the critic's advantages
normalised over the batch (--norm-adv). Always on: Adam's eps = 1e-5; the critic starts from
the SFT policy's transformer with a new value head, as RLHF's value models start from a
supervised model. β is the paper's 0.04: here π_ref is a supervised model worth staying near.

Examples:
    python grpo_text.py                          # SFT to ~1/5 held out, then GRPO
    python grpo_text.py --advantage critic       # PPO with a value head, the rest the same
    python grpo_text.py --sft-to-plateau         # the control: SFT alone, as far as it goes
"""
import copy
import itertools
import json
import math
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, Literal, NoReturn

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributions import Categorical, kl_divergence
import tyro

VOCAB = "0123456789+=$"  # token k is the character VOCAB[k]; "$" ends an answer
PLUS, EQUALS, END = VOCAB.index("+"), VOCAB.index("="), VOCAB.index("$")


@dataclass
class Args:
    """GRPO on integer addition as text: a tiny causal transformer, SFT as π_ref, then the
    group-relative advantage, no critic (arXiv:2402.03300, §4.1); or PPO with a value head."""

    # --- run ---
    exp_name: str = "grpo_text"
    """name of the experiment, part of the run folder's name"""
    seed: int = 1
    """seed of numpy, torch, python's random, the task's split and the prompts, in [0, 2^32)"""
    runs_dir: str = "runs"
    """parent folder of the run folders"""
    save_model: bool = False
    """write model.pt (the actor and π_ref) into the run folder, also after a Ctrl-C"""

    # --- the task ---
    num_digits: int = 2
    """digits of each operand, 1 to 3; the prompt pads them with zeros ("07+48=")"""
    heldout_size: int = 500
    """prompts held out from all training; the accuracy reported is on them"""
    sft_examples: int = 700
    """solved training prompts that SFT learns from; fewer than SFT alone needs to generalise
    (RESULTS.md), so RL adds the checker's reward on the prompts without a solved answer"""

    # --- the policy: a causal transformer [arXiv:1706.03762] ---
    d_model: int = 64
    """width of the token and position embeddings and of every layer"""
    n_layers: int = 2
    """transformer blocks (attention, then MLP)"""
    n_heads: int = 4
    """attention heads per block; must divide d_model"""

    # --- stage 1: supervised fine-tuning, the reference π_ref ---
    sft_steps: int = 2000
    """Adam steps of next-token training on the solved examples, stopped on purpose at about a
    fifth of held-out prompts right, so that RL has something to add"""
    sft_batch_size: int = 64
    """solved examples per SFT step"""
    sft_learning_rate: float = 1e-3
    """Adam step size of SFT"""
    sft_to_plateau: bool = False
    """the control: run SFT in chunks of 250 steps until 8 in a row bring no gain in greedy
    accuracy on --heldout-size training prompts outside the SFT examples (a validation set; the
    held-out prompts stay unseen), keep the best chunk's weights, report them, and skip GRPO"""

    # --- stage 2: the group rollout ---
    num_iterations: int = 2000
    """iterations of GRPO (sample a batch, update); 0: SFT alone"""
    num_prompts: int = 32
    """P: training prompts per batch, drawn uniformly with the run's own generator"""
    group_size: int = 8
    """G: answers sampled at temperature 1 per prompt (the paper's G outputs); at least 2"""
    dynamic_sampling: bool = False
    """DAPO's dynamic sampling (arXiv:2503.14476 §3.2): draw rounds of P groups, keeping those
    with signal, until P are kept; every drawn answer counts"""
    max_draws: int = 4
    """most rounds per batch with --dynamic-sampling"""
    eval_every: int = 25
    """iterations between two greedy evaluations on the held-out prompts"""

    # --- advantage [arXiv:2402.03300 §4.1.2; arXiv:2503.20783 §3.2] ---
    advantage: Literal["group", "critic", "batch"] = "group"
    """Â: group: GRPO's, from the G answers to the same prompt; critic: PPO's GAE with a value
    head V(s_t), the chance that the answer will be right; batch: R_i minus the batch's mean
    (scaled by its std), the crudest baseline"""
    std_scale: bool = True
    """group, batch: Â_i = (R_i - mean) / std; --no-std-scale (Dr. GRPO): Â_i = R_i - mean"""
    length_norm: bool = True
    """weight each token of answer i by 1/|o_i|, so each answer counts equally;
    --no-length-norm (Dr. GRPO): a constant 1/L, L the longest answer allowed"""
    signal_only: bool = True
    """group, batch: update on the groups (the batch) with signal alone; with --no-signal-only
    a group of equal rewards stays and dilutes the weights"""
    gamma: float = 1.0
    """critic: discount γ in (0, 1]; 1, since the one reward is the answer's last"""
    gae_lambda: float = 0.95
    """critic: λ in [0, 1] of GAE: 0 is the one-step TD error, 1 the reward minus V(s_t)"""
    norm_adv: bool = True
    """critic: normalise the batch's advantages to mean 0 and std 1, the group's own scale"""
    vf_coef: float = 0.5
    """critic: weight of the value loss ½(V - R)² in the joint loss; arXiv:1707.06347's c_1
    (eq. 9) weights (V - R)², so c_1 = vf_coef / 2"""

    # --- optimisation ---
    learning_rate: float = 3e-4
    """Adam step size of stage 2 (actor, and critic with --advantage critic)"""
    num_minibatches: int = 1
    """minibatches of answers per epoch, at most N; at most G where one group may be the batch
    (--signal-only with --advantage group, or --dynamic-sampling)"""
    update_epochs: int = 2
    """passes over each batch (the paper's μ, 1 there)"""
    max_grad_norm: float = 1.0
    """clip the global gradient norm to this value"""

    # --- PPO-clip ---
    clip_coef: float = 0.2
    """ε: r_t is clipped to [1 - ε, 1 + ε] (arXiv:2402.03300 eq. 3, as PPO's)"""
    clip_coef_high: float | None = None
    """ε_high, DAPO's clip-higher (arXiv:2503.14476 §3.1; 0.28): r_t in [1 - ε, 1 + ε_high]"""

    # --- GRPO's KL penalty [arXiv:2402.03300 eqs. 3-4] ---
    beta: float = 0.04
    """β, weight of the k3 estimate of KL(π_θ ‖ π_ref); the paper's 0.04"""

    @property
    def num_answers(self) -> int:
        """N = P·G: the answers of one round of sampling"""
        return self.num_prompts * self.group_size


# --- the task: addition as text, and its checker ---

def make_task(num_digits: int, heldout_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (a, b) of num_digits-digit operands, split by the seed into training pairs
    and heldout_size held-out pairs: ([n_train, 2], [heldout_size, 2])."""
    base = 10 ** num_digits
    order = np.random.default_rng(seed).permutation(base * base)
    pairs = np.stack([order // base, order % base], axis=1)
    return pairs[heldout_size:], pairs[:heldout_size]


def encode(texts: list[str]) -> torch.Tensor:
    """Strings of equal length -> token ids [n, len]."""
    return torch.tensor([[VOCAB.index(c) for c in text] for text in texts], dtype=torch.long)


def prompts_of(pairs: np.ndarray, num_digits: int) -> torch.Tensor:
    """q = "a+b=", each operand zero-padded to num_digits: [n, 2·num_digits + 2]."""
    return encode([f"{a:0{num_digits}d}+{b:0{num_digits}d}=" for a, b in pairs])


def answers_of(pairs: np.ndarray, answer_len: int) -> torch.Tensor:
    """The solved answer "55$", padded with end tokens to answer_len: [n, answer_len]."""
    return encode([f"{a + b}$".ljust(answer_len, "$") for a, b in pairs])


def reward(answers: torch.Tensor, sums: torch.Tensor) -> torch.Tensor:
    """R_i = 1 when answer i up to its first end token spells sums[i] in decimal, else 0 (also
    when no end token comes within the answer's tokens): [n, L] tokens, [n] -> [n] floats.
    The verifiable reward of arXiv:2402.03300 §4.1 (there, a rule-based checker)."""
    L = answers.shape[1]
    # the right answer "55$", padded with end tokens to one more than L (a sum may not fit)
    target = encode([f"{s}$".ljust(L + 1, "$") for s in sums.tolist()])  # [n, L + 1]
    target_len = (target != END).sum(1) + 1  # digits and the end token
    is_end = answers == END
    first_end = torch.where(is_end.any(1), is_end.int().argmax(1), L)  # L: no end token
    before = torch.arange(L) < target_len[:, None]  # [n, L]: the positions compared
    same = ((answers == target[:, :L]) | ~before).all(1)
    return (same & (first_end == target_len - 1)).float()


# --- the policy π_θ(a_t|s_t): a causal transformer ---

class Block(nn.Module):
    """Pre-norm transformer block: causal self-attention, then an MLP, each added back."""

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(),
                                 nn.Linear(4 * d_model, d_model))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, S, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, S, 3, self.n_heads, -1).permute(2, 0, 3, 1, 4)
        # softmax(q k^T / sqrt(d_head)) v  [arXiv:1706.03762 eq. 1]; position j > i is masked
        # out of position i's weights, so token i is predicted from tokens 0..i alone
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])  # [B, heads, S, S]
        attention = scores.masked_fill(mask[:S, :S], float("-inf")).softmax(-1)
        x = x + self.proj((attention @ v).transpose(1, 2).reshape(B, S, D))
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """Token and learned position embeddings, n_layers causal blocks, a linear head of out_dim
    per position: the logits of the next token for the actor, V(s_t) for the critic."""

    def __init__(self, block_size: int, d_model: int, n_layers: int, n_heads: int,
                 out_dim: int = len(VOCAB)):
        super().__init__()
        self.token_emb = nn.Embedding(len(VOCAB), d_model)
        self.pos_emb = nn.Embedding(block_size, d_model)  # learned positions
        self.blocks = nn.ModuleList(Block(d_model, n_heads) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, out_dim)
        # True above the diagonal: the later positions each position may not look at
        self.register_buffer("mask", torch.ones(block_size, block_size, dtype=torch.bool)
                             .triu(1), persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [B, S] -> [B, S, out_dim]; output s depends on tokens 0..s only."""
        x = self.token_emb(tokens) + self.pos_emb(torch.arange(tokens.shape[1]))
        for block in self.blocks:
            x = block(x, self.mask)
        return self.head(self.norm(x))


def answer_logits(model: Transformer, prompts: torch.Tensor,
                  answers: torch.Tensor) -> torch.Tensor:
    """The model's output for every answer token a_t, read at the position before it, which
    sees s_t = the prompt and a_0..a_{t-1}: [n, L, out_dim], one forward pass."""
    tokens = torch.cat([prompts, answers[:, :-1]], 1)  # the last token is never an input
    return model(tokens)[:, prompts.shape[1] - 1:]


def answer_values(critic: Transformer, prompts: torch.Tensor,
                  answers: torch.Tensor) -> torch.Tensor:
    """V(s_t) in (0, 1), the chance that the answer will be right, before each token: [n, L]."""
    return answer_logits(critic, prompts, answers).squeeze(-1).sigmoid()


def answer_mask(lengths: torch.Tensor, answer_len: int) -> torch.Tensor:
    """[n, L]: token t belongs to answer i (t < |o_i|), not to the end tokens padding it."""
    return torch.arange(answer_len) < lengths[:, None]


@torch.no_grad()
def sample_answers(actor: Transformer, prompts: torch.Tensor, answer_len: int,
                   greedy: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """o_i ~ π_θ(·|q) token by token at temperature 1 (argmax with greedy), stopped by the end
    token or after answer_len tokens: (answers [n, L], padded with end tokens; log π_θ(a_t|s_t)
    of each token [n, L], 0 past the end; lengths |o_i| [n], the end token included)."""
    n = len(prompts)
    tokens, logprobs = prompts, torch.zeros(n, answer_len)
    running = torch.ones(n, dtype=torch.bool)  # the answer has not ended
    lengths = torch.zeros(n, dtype=torch.long)
    for t in range(answer_len):
        # no key/value cache: a prefix of at most 11 tokens costs little to run again
        logp = F.log_softmax(actor(tokens)[:, -1], -1)  # log π_θ(·|s_t) [n, vocab]
        token = logp.argmax(-1) if greedy else torch.multinomial(logp.exp(), 1).squeeze(1)
        token = torch.where(running, token, END)
        logprobs[:, t] = logp.gather(1, token[:, None]).squeeze(1) * running
        lengths += running
        running &= token != END
        tokens = torch.cat([tokens, token[:, None]], 1)
    return tokens[:, prompts.shape[1]:], logprobs, lengths


def supervised_fine_tune(actor: Transformer, prompts: torch.Tensor, answers: torch.Tensor,
                         steps: int, batch_size: int, optimizer: torch.optim.Optimizer,
                         rng: np.random.Generator) -> None:
    """Stage 1: steps of the optimizer (Adam on the actor) on the next-token cross-entropy of
    the solved answers (their digits and end token; not the prompt, which is given),
    minibatches drawn with rng."""
    lengths = (answers != END).sum(1) + 1
    for _ in range(steps):
        mb = torch.as_tensor(rng.integers(len(prompts), size=batch_size))
        loss = cross_entropy(actor, prompts[mb], answers[mb], lengths[mb])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def greedy_accuracy(actor: Transformer, prompts: torch.Tensor, sums: torch.Tensor,
                    answer_len: int) -> float:
    """The share of the prompts whose argmax answer is right."""
    return reward(sample_answers(actor, prompts, answer_len, greedy=True)[0], sums).mean().item()


def sft_to_plateau(actor: Transformer, train_chunk: Callable[[], None],
                   score: Callable[[], float], patience: int = 8) -> int:
    """The control's stopping rule: call train_chunk() until `patience` chunks in a row bring
    no gain in score(), then load the weights of the best-scoring chunk; its number (0: the
    weights before any chunk)."""
    best, best_chunk, chunk = score(), 0, 0
    best_weights = copy.deepcopy(actor.state_dict())
    while chunk - best_chunk < patience:
        train_chunk()
        chunk += 1
        if (accuracy := score()) > best:
            best, best_chunk, best_weights = accuracy, chunk, copy.deepcopy(actor.state_dict())
    actor.load_state_dict(best_weights)
    return best_chunk


def fine_tune(actor: Transformer, train_pairs: np.ndarray, args: Args, log: "RunLog",
              rng: np.random.Generator) -> None:
    """Stage 1 on the first --sft-examples training pairs: --sft-steps steps of one Adam, or
    with --sft-to-plateau the control's chunks of 250, each with a fresh Adam, chosen on a
    validation set of training prompts outside the SFT examples (held-out prompts stay
    unseen)."""
    D, L = args.num_digits, args.num_digits + 2
    sft_pairs = train_pairs[:args.sft_examples]
    sft_data = prompts_of(sft_pairs, D), answers_of(sft_pairs, L)
    if not args.sft_to_plateau:
        supervised_fine_tune(actor, *sft_data, args.sft_steps, args.sft_batch_size,
                             torch.optim.Adam(actor.parameters(), lr=args.sft_learning_rate), rng)
        log.sft_steps = args.sft_steps
        return
    valid_pairs = train_pairs[args.sft_examples:][:args.heldout_size]
    valid = prompts_of(valid_pairs, D), torch.as_tensor(valid_pairs.sum(1))

    def chunk() -> None:  # 250 SFT steps, then a held-out row for the record
        # a fresh Adam each chunk, a warm restart: the stronger control (one Adam across the
        # chunks stopped lower: 0.237 against 0.483 held out from 700 examples, RESULTS.md)
        optimizer = torch.optim.Adam(actor.parameters(), lr=args.sft_learning_rate)
        supervised_fine_tune(actor, *sft_data, 250, args.sft_batch_size, optimizer, rng)
        log.sft_steps += 250
        log.evaluate(actor, 0, 0)

    log.evaluate(actor, 0, 0)  # the untrained model
    log.sft_steps = 250 * sft_to_plateau(actor, chunk, lambda: greedy_accuracy(actor, *valid, L))


def cross_entropy(actor: Transformer, prompts: torch.Tensor, answers: torch.Tensor,
                  lengths: torch.Tensor) -> torch.Tensor:
    """-mean over the answers' tokens of log π_θ(a_t|s_t): the SFT loss."""
    dist = Categorical(logits=answer_logits(actor, prompts, answers), validate_args=False)
    return -dist.log_prob(answers)[answer_mask(lengths, answers.shape[1])].mean()


# --- the equations ---

def mean_kl(old_dist: Categorical, new_dist: Categorical) -> torch.Tensor:
    """E_s[D_KL(π_θ'(·|s) ‖ π_θ(·|s))], the mean of the exact KL over the vocabulary.

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


def answer_gae(rewards: torch.Tensor, values: torch.Tensor, lengths: torch.Tensor,
               gamma: float, gae_lambda: float) -> torch.Tensor:
    """--advantage critic: GAE per token of each answer, from its reward R_i [n], the values
    V(s_t) [n, L] and the lengths [n]: Â_t [n, L] (0 past the end). Token t's reward is R_i at
    the answer's last token and 0 before it; the answer ends there (a termination)."""
    last = (torch.arange(values.shape[1]) == lengths[:, None] - 1).to(values.dtype)  # [n, L]
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], 1)
    advantages = compute_gae((rewards[:, None] * last).T, values.T, next_values.T, last.T, last.T,
                             gamma, gae_lambda).T
    return advantages * answer_mask(lengths, values.shape[1])


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

    The answers of a group answer one prompt, so the group's mean reward estimates V(q): the
    baseline a critic would have given the first token, here given to every token of the
    answer. std is the sample std (G - 1 in its denominator); a group whose rewards are all
    equal gets Â_i = 0, no signal. scale_by_std=False is Dr. GRPO's Â_i = R_i - mean
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
    """Return minus the GRPO objective over the tokens given:
    -mean_t(w_t [min(r_t Â_t, clip(r_t, 1 - ε, 1 + ε) Â_t) - β D_KL,t]), with Â_t the advantage
    of the token's answer and D_KL,t = kl_ref, the k3 estimate. [What's Next]; arXiv:2402.03300
    eq. 3.

    Eq. 3 averages over the tokens of each answer (1/|o_i|), then over the n answers: among m
    tokens, token t of answer i weighs 1/(n |o_i|), and these add up to 1. So the weights passed
    here are w_t = m/(n |o_i|) (token_weights), and the mean (1/m) Σ_t of the weighted terms
    is eq. 3 on those answers. With equal lengths every w_t is 1 and, at β = 0, this is
    ppo_clip's -L^CLIP. clip_coef_high is DAPO's upper ε_high (see clipped_surrogate_loss)."""
    # w_t min(r_t Â_t, clip(r_t) Â_t) = min(r_t w_t Â_t, clip(r_t) w_t Â_t), as w_t > 0
    # [PPO: Approximate the Constraint with Clipping]
    surrogate = -clipped_surrogate_loss(ratio, weights * advantages, clip_coef, clip_coef_high)
    # β mean_t(w_t D_KL,t)  [arXiv:2402.03300 eq. 3]
    penalty = beta * (weights * kl_ref).mean()
    return -(surrogate - penalty)


def token_weights(lengths: torch.Tensor, answer_len: int, length_norm: bool) -> torch.Tensor:
    """w_t = m/(n |o_i|) for every real token of the n answers given (m tokens in all), as
    grpo_loss wants them, in the order of answers[answer_mask]: [m]. Without length_norm
    (Dr. GRPO, arXiv:2503.20783 §3.1) the constant m/(n L), L = answer_len."""
    mask = answer_mask(lengths, answer_len)
    normaliser = lengths.float() if length_norm else torch.full(lengths.shape, float(answer_len))
    per_answer = mask.sum() / (len(lengths) * normaliser)  # [n]
    return per_answer[:, None].expand(mask.shape)[mask]


def carries_signal(returns: torch.Tensor) -> torch.Tensor:
    """Per group of the returns [P, G], whether they differ [P]: else every Â_i of the group is 0
    and so is its gradient."""
    return returns.amax(1) > returns.amin(1)


def group_batch(rewards: torch.Tensor, advantage: str, std_scale: bool, signal_only: bool
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Step 2 on a batch of groups without a critic: from the rewards R_i [P, G] (answer
    i = p·G + g), return which answers the update uses [P·G] and Â_i [P·G]: over each group
    (advantage "group"), or over the whole batch as one group ("batch").

    A group whose rewards are all equal carries no signal: its Â_i are 0, and so is its
    gradient. signal_only leaves such groups out; a batch in which no group carries signal
    (for "batch": whose rewards are all equal) gives no step at all (nothing used)."""
    groups = rewards if advantage == "group" else rewards.reshape(1, -1)
    advantages = group_advantages(groups, std_scale).reshape(-1)  # [P·G]
    signal = carries_signal(groups).repeat_interleave(groups.shape[1])  # [P·G]
    used = signal if signal_only or not signal.any() else torch.ones_like(signal)
    return used, advantages


def collect_groups(actor: Transformer, train_pairs: np.ndarray, args: Args,
                   rng: np.random.Generator) -> tuple[tuple[torch.Tensor, ...], int, dict]:
    """Step 1: G answers to each of P training prompts drawn with rng, sampled by π_θ'. With
    --dynamic-sampling, rounds of P groups, keeping those with signal, until P are kept or
    --max-draws rounds are drawn. Returns the kept (prompts, answers, log-probs, lengths,
    rewards), how many groups were kept, and the log's statistics of every answer drawn."""
    P, G, D = args.num_prompts, args.group_size, args.num_digits
    kept, drawn, with_signal, groups, rewards_drawn, lengths_drawn = [], 0, 0, 0, [], []
    while True:
        pairs = np.repeat(train_pairs[rng.integers(len(train_pairs), size=P)], G, 0)
        prompts = prompts_of(pairs, D)  # [N, 2D + 2], prompt p repeated G times
        answers, logprobs, lengths = sample_answers(actor, prompts, D + 2)  # [N, L]
        rewards = reward(answers, torch.as_tensor(pairs.sum(1)))  # R_i [N]
        rewards_drawn.append(rewards)
        lengths_drawn.append(lengths)
        drawn += P
        signal = carries_signal(rewards.view(P, G))  # [P]
        with_signal += int(signal.sum())
        keep = signal.clone() if args.dynamic_sampling else torch.ones(P, dtype=bool)
        keep &= keep.cumsum(0) <= P - groups  # at most P groups in the batch
        rows = keep.repeat_interleave(G)
        kept.append((prompts[rows], answers[rows], logprobs[rows], lengths[rows], rewards[rows]))
        groups += int(keep.sum())
        if not args.dynamic_sampling or groups == P or drawn == args.max_draws * P:
            break
    stats = dict(mean_reward=torch.cat(rewards_drawn).mean().item(),
                 zero_signal=1.0 - with_signal / drawn,  # of the groups drawn
                 groups_drawn=drawn, answer_length=torch.cat(lengths_drawn).float().mean().item())
    return tuple(torch.cat(x) for x in zip(*kept)), groups, stats


def train(args: Args) -> Path:
    """Run one experiment and return its run folder; bad arguments raise BadInput first."""
    check_args(args)
    P, G, D = args.num_prompts, args.group_size, args.num_digits
    L = D + 2  # the longest answer allowed: D + 1 digits of the sum and the end token

    # seeding, all in one block; one torch thread is faster for a model this small
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)  # the run's own generator of prompts
    train_pairs, heldout_pairs = make_task(D, args.heldout_size, args.seed)
    heldout = prompts_of(heldout_pairs, D), torch.as_tensor(heldout_pairs.sum(1))
    actor = Transformer(2 * D + 2 + L, args.d_model, args.n_layers, args.n_heads)
    log = RunLog(args, actor, heldout)

    # --- 0. Supervised fine-tuning on solved examples gives π_ref [arXiv:2402.03300 §4.1] ---
    fine_tune(actor, train_pairs, args, log, rng)
    log.before = log.evaluate(actor, 0, 0)
    ref_actor = copy.deepcopy(actor).requires_grad_(False)  # π_ref, frozen
    params = list(actor.parameters())
    critic = None
    if args.advantage == "critic":
        # V(s_t): the SFT transformer with a new one-output head
        critic = Transformer(2 * D + 2 + L, args.d_model, args.n_layers, args.n_heads, 1)
        critic.load_state_dict({k: v for k, v in actor.state_dict().items()
                                if not k.startswith("head.")}, strict=False)
        params += list(critic.parameters())
    # not in the article: eps 1e-5, not 1e-8 (OpenAI baselines' ppo2); one Adam for both
    # networks, on the joint loss of arXiv:1707.06347 eq. 9 (steps 3 and 4 together)
    optimizer = torch.optim.Adam(params, lr=args.learning_rate, eps=1e-5)

    answers_sampled, iteration = 0, 0
    num_iterations = 0 if args.sft_to_plateau else args.num_iterations  # the control: no RL
    try:
        for iteration in range(1, num_iterations + 1):
            # --- 1. Collect G answers to each of P prompts with π_θ' [What's Next; Putting It
            #     Together, step 1]; with --dynamic-sampling, rounds until P groups of signal ---
            (b_prompts, b_answers, b_logprobs, b_lengths, b_rewards), groups, stats_row = (
                collect_groups(actor, train_pairs, args, rng))  # b_answers [N', L]
            answers_sampled += stats_row["groups_drawn"] * G

            # --- 2. Advantages: Â_i of answer i for each of its tokens, no critic [What's Next;
            #     arXiv:2402.03300 §4.1.2]; or GAE from V(s_t) [From Baseline to Advantage] ---
            b_returns = torch.zeros(0)
            if not groups:  # --dynamic-sampling kept no group: nothing to learn from
                used = torch.zeros(0, dtype=torch.bool)
            elif critic is None:
                used, advantages = group_batch(b_rewards.view(-1, G), args.advantage,
                                               args.std_scale, args.signal_only)
                b_advantages = advantages[:, None].expand(-1, L)  # [N', L], Â_i per token
            else:
                used = torch.ones(len(b_rewards), dtype=torch.bool)
                with torch.no_grad():
                    b_values = answer_values(critic, b_prompts, b_answers)  # V(s_t) [N', L]
                b_advantages = answer_gae(b_rewards, b_values, b_lengths, args.gamma,
                                          args.gae_lambda)
                b_returns = b_advantages + b_values  # the critic's targets
                if args.norm_adv:
                    # not in the article: mean 0, std 1 over the batch's tokens (OpenAI
                    # baselines), the scale the group's Â_i have
                    real = answer_mask(b_lengths, L)
                    b_advantages = (b_advantages - b_advantages[real].mean()) / (
                        b_advantages[real].std() + 1e-8)
            if not used.any():
                # no group carries signal: every Â_i = 0, so the objective's gradient is the
                # KL term's alone, which pulls toward π_ref without the task's say; θ and
                # Adam stay as they are
                log.update(actor, answers_sampled, iteration, policy_loss=0.0, value_loss=0.0,
                           entropy=math.nan, kl=0.0, kl_ref=math.nan, clipfrac=0.0, **stats_row)
                continue
            b_prompts, b_answers, b_logprobs, b_lengths, b_advantages = (
                x[used] for x in (b_prompts, b_answers, b_logprobs, b_lengths, b_advantages))
            if critic is not None:
                b_returns = b_returns[used]
            with torch.no_grad():
                # π_θ'(·|s_t) of every token, for the exact KL; log π_θ'(a_t|s_t) is the one
                # recorded at sampling (the same numbers: a fresh pass gives them again)
                old_logits = answer_logits(actor, b_prompts, b_answers)  # [N', L, vocab]
                b_ref_logprobs = Categorical(logits=answer_logits(
                    ref_actor, b_prompts, b_answers), validate_args=False).log_prob(b_answers)

            # --- 3. Maximise the GRPO objective on minibatches of answers for several epochs
            #     [Putting It Together, step 3; arXiv:2402.03300 eq. 3]; 4. with --advantage
            #     critic, regress V(s_t) on the returns in the same loss [step 4] ---
            stats = []
            for epoch in range(args.update_epochs):
                for mb_inds in torch.randperm(len(b_answers)).tensor_split(args.num_minibatches):
                    mb_answers, mb_lengths = b_answers[mb_inds], b_lengths[mb_inds]
                    real = answer_mask(mb_lengths, L)  # [m_answers, L]
                    dist = Categorical(logits=answer_logits(actor, b_prompts[mb_inds],
                                                            mb_answers), validate_args=False)
                    newlogprob = dist.log_prob(mb_answers)[real]  # [m]
                    entropy = dist.entropy()[real].mean()
                    # r_t(θ) = π_θ(a_t|s_t) / π_θ'(a_t|s_t); autograd of r_t Â_t gives
                    # r_t ∇_θ log π_θ(a_t|s_t) Â_t  [The Surrogate Objective]
                    ratio = probability_ratio(newlogprob, b_logprobs[mb_inds][real])
                    # D_KL,t = π_ref/π_θ - log(π_ref/π_θ) - 1  [arXiv:2402.03300 eq. 4]
                    kl_ref = kl_k3(newlogprob, b_ref_logprobs[mb_inds][real])
                    # w_t = m/(n |o_i|): each answer's tokens averaged, then the answers
                    mb_weights = token_weights(mb_lengths, L, args.length_norm)
                    # -mean_t(w_t [min(r_t Â_t, clip(r_t, 1 - ε, 1 + ε) Â_t) - β D_KL,t])  [eq. 3]
                    pg_loss = grpo_loss(ratio, b_advantages[mb_inds][real], mb_weights, kl_ref,
                                        args.clip_coef, args.beta, args.clip_coef_high)
                    v_loss = torch.zeros(())
                    if critic is not None:
                        # step 4: V(s_t) toward the returns Â_t + V_old(s_t), γ = 1: the
                        # chance, seen from s_t, that the answer ends right
                        newvalue = answer_values(critic, b_prompts[mb_inds], mb_answers)[real]
                        v_loss = 0.5 * ((newvalue - b_returns[mb_inds][real]) ** 2).mean()
                    # arXiv:1707.06347 eq. 9 without the entropy term, negated for the optimizer
                    loss = pg_loss + args.vf_coef * v_loss
                    optimizer.zero_grad()
                    loss.backward()
                    # not in the article: global gradient-norm clipping (OpenAI baselines)
                    nn.utils.clip_grad_norm_(params, args.max_grad_norm)
                    optimizer.step()
                    high = 1.0 + (args.clip_coef_high or args.clip_coef)
                    clipfrac = ((ratio < 1.0 - args.clip_coef) | (ratio > high)).float().mean()
                    stats.append(torch.stack([pg_loss, v_loss, entropy,
                                              (mb_weights * kl_ref).mean(), clipfrac]).detach())

            # --- 5. θ' ← θ: the next batch is sampled by the updated actor [step 5] ---
            with torch.no_grad():  # D_KL(π_θ' ‖ π_θ) of the whole update, per answer token
                real = answer_mask(b_lengths, L)
                kl = mean_kl(Categorical(logits=old_logits[real], validate_args=False),
                             Categorical(logits=answer_logits(actor, b_prompts, b_answers)[real],
                                         validate_args=False)).item()
            pg_loss, v_loss, entropy, kl_ref, clipfrac = torch.stack(stats).mean(0).tolist()
            log.update(actor, answers_sampled, iteration, policy_loss=pg_loss, value_loss=v_loss,
                       entropy=entropy, kl=kl, kl_ref=kl_ref, clipfrac=clipfrac, **stats_row)
    except KeyboardInterrupt:  # Ctrl-C: stop here, keeping the rows, the model and the folder
        log.interrupted = True
    if args.save_model:
        torch.save({"args": asdict(args), "actor": actor.state_dict(),
                    "ref_actor": ref_actor.state_dict()}, log.run_dir / "model.pt")
    log.close(actor, iteration, answers_sampled)
    return log.run_dir


# --- Plumbing: flag checks, run folder, logs, evaluation (not part of the algorithm) ---

class BadInput(ValueError):
    """A flag outside its domain: the command line prints it as one line and exits with 2."""


def fail(message: str, status: int = 2) -> NoReturn:
    """End the program with one line on stderr, no traceback."""
    print(f"{Path(sys.argv[0]).name}: error: {message}", file=sys.stderr)
    raise SystemExit(status)


FLAG_RULES = [  # (flags, the rule each value meets, the allowed values); NaN fails every rule
    ("heldout_size sft_examples d_model n_layers n_heads sft_batch_size num_prompts max_draws "
     "eval_every num_minibatches update_epochs", lambda x: x > 0, "a positive integer"),
    ("sft_steps num_iterations", lambda x: x >= 0, "a non-negative integer"),
    ("num_digits", lambda x: 1 <= x <= 3, "1, 2 or 3"),
    ("group_size", lambda x: x >= 2, "an integer of at least 2 (one answer has no baseline)"),
    ("seed", lambda x: 0 <= x < 2**32, "an integer in [0, 2^32)"),
    ("sft_learning_rate learning_rate max_grad_norm clip_coef",
     lambda x: 0 < x < math.inf, "a positive finite number"),
    ("clip_coef_high", lambda x: x is None or 0 < x < math.inf, "a positive finite number"),
    ("beta vf_coef", lambda x: 0 <= x < math.inf, "a non-negative finite number"),
    ("gamma", lambda x: 0 < x <= 1, "a number in (0, 1]"),
    ("gae_lambda", lambda x: 0 <= x <= 1, "a number in [0, 1]"),
]


def check_args(args: Args) -> None:
    """Every rule on the flags, before anything is made; raise BadInput naming the flag."""
    for names, allowed, meaning in FLAG_RULES:
        for name in names.split():
            if not allowed(getattr(args, name)):
                raise BadInput(f"--{name.replace('_', '-')} {getattr(args, name)}: must be "
                               f"{meaning}")
    if args.d_model % args.n_heads:
        raise BadInput(f"--n-heads {args.n_heads}: must divide --d-model {args.d_model}")
    pairs = 100 ** args.num_digits
    if args.heldout_size * (1 + args.sft_to_plateau) + args.sft_examples > pairs:
        raise BadInput(f"--heldout-size {args.heldout_size}: with --sft-examples "
                       f"{args.sft_examples}, must leave them inside the {pairs} prompts of "
                       f"--num-digits {args.num_digits} (twice with --sft-to-plateau: "
                       "held-out and validation prompts)")
    # --signal-only with the group advantages, or --dynamic-sampling, may keep one group alone:
    # no minibatch is empty
    one_group = args.dynamic_sampling or (args.signal_only and args.advantage == "group")
    smallest, what = ((args.group_size, "group_size") if one_group
                      else (args.num_answers, "num_prompts * group_size"))
    if args.num_minibatches > smallest:
        raise BadInput(f"--num-minibatches {args.num_minibatches}: must be at most the smallest "
                       f"batch, {what} = {smallest} answers")


class RunLog:
    """A run folder <runs_dir>/add<digits>__<exp_name>__<seed>__<unix time> with config.json,
    evaluations.csv (held-out greedy accuracy, row 0 after SFT) and updates.csv (one row per
    iteration), and the progress lines. Rows are flushed as they are written, so a run that
    stops (Ctrl-C, an error) keeps every one of them."""

    columns = ["policy_loss", "value_loss", "entropy", "kl", "kl_ref", "clipfrac",
               "mean_reward", "zero_signal", "groups_drawn", "answer_length"]

    def __init__(self, args: Args, actor: Transformer, heldout: tuple[torch.Tensor, ...]):
        name = f"add{args.num_digits}__{args.exp_name}__{args.seed}__{int(time.time())}"
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
        self.args, self.heldout, self.answer_len = args, heldout, args.num_digits + 2
        self.start, self.interrupted, self.sft_steps, self.before = time.time(), False, 0, 0.0
        self.print_every = max(1, args.num_iterations // 40)  # ~40 lines
        versions = {package: metadata.version(package) for package in ("torch", "numpy", "tyro")}
        parameters = sum(p.numel() for p in actor.parameters())
        self.config = {**asdict(args), "parameters": parameters, "iterations_run": 0,
                       "finished": False, "device": "cpu",
                       "versions": {"python": platform.python_version(), **versions}}
        (self.run_dir / "config.json").write_text(json.dumps(self.config, indent=2))
        self.evaluations = open(self.run_dir / "evaluations.csv", "w", buffering=1)
        self.updates = open(self.run_dir / "updates.csv", "w", buffering=1)  # line-buffered
        self.write(self.evaluations, "answers", "iteration", "sft_steps", "heldout_accuracy",
                   "wall_time")
        self.write(self.updates, "answers", "iteration", "sps", "wall_time", *self.columns)
        stage_2 = ("SFT to its plateau alone" if args.sft_to_plateau
                   else f"--advantage {args.advantage}")
        print(f"{args.num_digits}-digit addition, seed {args.seed}: a transformer of "
              f"{parameters:,} parameters; {stage_2}; run folder: {self.run_dir}", flush=True)

    @staticmethod
    def write(file, *row) -> None:
        """Append one CSV row (floats to 6 significant digits)."""
        file.write(",".join(f"{x:.6g}" if isinstance(x, float) else str(x) for x in row) + "\n")

    def evaluate(self, actor: Transformer, iteration: int, answers: int) -> float:
        """Held-out greedy accuracy: the share of held-out prompts whose argmax answer is right;
        one row of evaluations.csv."""
        accuracy = greedy_accuracy(actor, *self.heldout, self.answer_len)
        self.write(self.evaluations, answers, iteration, self.sft_steps, accuracy,
                   round(time.time() - self.start, 3))
        self.accuracy, self.evaluated_at = accuracy, iteration
        return accuracy

    def update(self, actor: Transformer, answers: int, iteration: int, **row: float) -> None:
        """One row of updates.csv, every --eval-every iterations and at the last one an
        evaluation, now and then a progress line; stop on a non-finite loss."""
        assert set(row) == set(self.columns), sorted(row)
        if iteration % self.args.eval_every == 0 or iteration == self.args.num_iterations:
            self.evaluate(actor, iteration, answers)
        if not all(math.isfinite(row[name]) for name in ("policy_loss", "value_loss", "kl")):
            self.config.update(iterations_run=iteration, diverged=iteration)
            (self.run_dir / "config.json").write_text(json.dumps(self.config, indent=2))
            fail(f"the loss is not finite at iteration {iteration}; stopping", status=1)
        seconds = time.time() - self.start
        sps = int(answers / seconds)  # sampled answers per second, SFT's time included
        self.write(self.updates, answers, iteration, sps, round(seconds, 3),
                   *(row[c] for c in self.columns))
        if iteration % self.print_every == 0 or iteration == self.args.num_iterations:
            print(f"iteration {iteration}/{self.args.num_iterations} | reward "
                  f"{row['mean_reward']:.3f} | held-out accuracy {self.accuracy:.3f} (last "
                  f"evaluated) | zero-signal {row['zero_signal']:.2f} | kl {row['kl']:.2g} | "
                  f"kl_ref {row['kl_ref']:.2g} | {sps:,} answers/s | {seconds:.0f} s", flush=True)

    def close(self, actor: Transformer, iteration: int, answers: int) -> None:
        """Record how far the run went, close the CSVs and print the held-out accuracy before
        (after SFT) and after; after a Ctrl-C, raise KeyboardInterrupt again."""
        if self.evaluated_at != iteration:  # stopped between two evaluations
            self.evaluate(actor, iteration, answers)
        self.config.update(iterations_run=iteration, finished=not self.interrupted,
                           sft_steps_run=self.sft_steps)
        (self.run_dir / "config.json").write_text(json.dumps(self.config, indent=2))
        self.evaluations.close()
        self.updates.close()
        rl = ("the control, no RL" if self.args.sft_to_plateau else
              f"{self.accuracy:.3f} after {iteration} iterations ({answers:,} answers)")
        ending = (f"held-out accuracy {self.before:.3f} after SFT ({self.sft_steps} steps), "
                  f"{rl} in {time.time() - self.start:.0f} s; run folder: {self.run_dir}")
        if self.interrupted:
            print(f"{Path(sys.argv[0]).name}: stopped by Ctrl-C: {ending}", file=sys.stderr)
            raise KeyboardInterrupt
        print(f"done: {ending}", flush=True)


if __name__ == "__main__":
    cli_args = tyro.cli(Args)
    try:
        train(cli_args)
    except BadInput as error:
        fail(str(error))
    except KeyboardInterrupt:
        raise SystemExit(130)  # the shell's status for Ctrl-C; train has said where it stopped
