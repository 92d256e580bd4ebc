"""grpo_text.py: the transformer's causal mask, the sampler's log-probabilities, the checker's
reward, the equations (group advantage, k3 KL, clipped loss with 1/|o_i| weights, GAE of the
critic variant) one by one, then SFT and short runs end to end.

Each check compares against something written independently here (a formula written out with
Python loops, values worked by hand, a fresh forward pass read position by position), never the
code against itself.
"""

import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import grpo_text
from conftest import advantages_by_loops
from grpo_text import (END, VOCAB, Transformer, answer_gae, grpo_loss, group_advantages,
                       group_batch, kl_k3, probability_ratio, reward, sample_answers,
                       token_weights)

# a run of a second or so: a small transformer, a few SFT steps, a few GRPO iterations
TINY = dict(d_model=16, n_heads=2, n_layers=1, heldout_size=50, sft_examples=100, sft_steps=30,
            num_iterations=4, num_prompts=4, group_size=4, eval_every=2, sft_batch_size=16)
UPDATE_COLUMNS = ["answers", "iteration", "sps", "wall_time", "policy_loss", "value_loss",
                  "entropy", "kl", "kl_ref", "clipfrac", "mean_reward", "zero_signal",
                  "groups_drawn", "answer_length"]


def text(tokens: torch.Tensor) -> str:
    return "".join(VOCAB[t] for t in tokens.tolist())


def small_model(seed: int = 0, num_digits: int = 2) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(2 * num_digits + 2 + num_digits + 2, d_model=32, n_layers=2, n_heads=4)


# --- the policy: a causal transformer ---

def test_changing_a_later_token_leaves_every_earlier_logit_unchanged():
    model = small_model()
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(len(VOCAB), (5, 10), generator=generator)
    with torch.no_grad():
        logits = model(tokens)
        for k in range(1, 10):
            changed = tokens.clone()
            changed[:, k] = (changed[:, k] + 1 + torch.randint(len(VOCAB) - 1, (5,),
                                                               generator=generator)) % len(VOCAB)
            other = model(changed)
            torch.testing.assert_close(other[:, :k], logits[:, :k], rtol=0, atol=1e-6)
            assert (other[:, k:] - logits[:, k:]).abs().max() > 1e-3  # the change does reach on
            # and a prefix alone, with nothing after it, gives the same logits
            torch.testing.assert_close(model(tokens[:, :k]), logits[:, :k], rtol=0, atol=1e-6)


def test_parameter_count_of_the_default_model():
    """The default sizes (d 64, 2 blocks, 4 heads, 2-digit prompts) counted by hand: per block
    qkv 64·192 + 192, projection 64·64 + 64, MLP 64·256 + 256 + 256·64 + 64, two LayerNorms
    2·128; embeddings 13·64 and 10·64; final LayerNorm 128; head 64·13 + 13."""
    block = 64 * 192 + 192 + 64 * 64 + 64 + 64 * 256 + 256 + 256 * 64 + 64 + 2 * 128
    expected = 2 * block + 13 * 64 + 10 * 64 + 128 + 64 * 13 + 13
    args = grpo_text.Args()
    model = Transformer(2 * args.num_digits + 2 + args.num_digits + 2, args.d_model,
                        args.n_layers, args.n_heads)
    assert sum(p.numel() for p in model.parameters()) == expected == 102_413


def test_sampled_log_probabilities_match_a_fresh_forward_pass_and_ratios_start_at_one():
    model = small_model(seed=2)
    with torch.no_grad():  # a sharper policy than at initialisation, so that answers end early
        model.head.bias[END] += 2.0
    pairs = np.array([[37, 48], [5, 9], [99, 99], [0, 0]] * 8)
    prompts = grpo_text.prompts_of(pairs, 2)
    torch.manual_seed(3)
    answers, logprobs, lengths = sample_answers(model, prompts, 4)
    assert {1, 4} & set(lengths.tolist()) and len(set(lengths.tolist())) >= 2
    Lp = prompts.shape[1]
    with torch.no_grad():
        logits = model(torch.cat([prompts, answers], 1))  # one pass over prompt and answer
    fresh = torch.zeros_like(logprobs)
    for i in range(len(answers)):
        for t in range(lengths[i]):
            # the token at position Lp + t is predicted at position Lp + t - 1
            row = logits[i, Lp + t - 1]
            fresh[i, t] = row[answers[i, t]] - torch.logsumexp(row, 0)
        # the answer stops at its end token, or has none and fills the L tokens
        answer = text(answers[i, :lengths[i]])
        assert answer.endswith("$") and "$" not in answer[:-1] or (
            lengths[i] == 4 and "$" not in answer)
        assert torch.all(answers[i, lengths[i]:] == END) and torch.all(logprobs[i, lengths[i]:]
                                                                       == 0)
    torch.testing.assert_close(logprobs, fresh, rtol=0, atol=1e-5)
    # at θ = θ' every r_t is 1
    ratio = probability_ratio(fresh, logprobs)
    torch.testing.assert_close(ratio, torch.ones_like(ratio), rtol=0, atol=1e-5)


def test_greedy_answers_are_the_argmax_chain():
    model = small_model(seed=4)
    prompts = grpo_text.prompts_of(np.array([[12, 34], [50, 50]]), 2)
    answers, _, lengths = sample_answers(model, prompts, 4, greedy=True)
    for i in range(2):
        tokens = prompts[i:i + 1]
        for t in range(lengths[i]):
            with torch.no_grad():
                token = model(tokens)[0, -1].argmax()
            assert token == answers[i, t]
            tokens = torch.cat([tokens, token.view(1, 1)], 1)


# --- the task and its checker ---

def test_prompts_and_solved_answers_are_the_text_of_the_sum():
    pairs = np.array([[7, 48], [99, 99], [0, 0]])
    assert [text(p) for p in grpo_text.prompts_of(pairs, 2)] == ["07+48=", "99+99=", "00+00="]
    assert [text(a) for a in grpo_text.answers_of(pairs, 4)] == ["55$$", "198$", "0$$$"]


@pytest.mark.parametrize("answer, total, expected", [
    ("85$$", 85, 1.0),      # right
    ("85$7", 85, 1.0),      # right; what follows the end token is not part of the answer
    ("198$", 198, 1.0),     # right, the longest answer allowed
    ("84$$", 85, 0.0),      # wrong
    ("8$$$", 85, 0.0),      # a digit short
    ("$$$$", 85, 0.0),      # empty
    ("8555", 85, 0.0),      # no end token
    ("1985", 198, 0.0),     # the right digits, no end token
    ("850$", 85, 0.0),      # over-long
    ("085$", 85, 0.0),      # a leading zero is another string
    ("0$$$", 0, 1.0),       # the sum 0
])
def test_reward_is_one_exactly_for_the_sum_then_the_end_token(answer, total, expected):
    tokens = grpo_text.encode([answer])
    assert reward(tokens, torch.tensor([total])).tolist() == [expected]


def test_reward_scores_each_row_on_its_own():
    answers = grpo_text.encode(["85$$", "84$$", "12$$", "1985"])
    sums = torch.tensor([85, 85, 12, 198])
    assert reward(answers, sums).tolist() == [1.0, 0.0, 1.0, 0.0]


def test_the_split_is_fixed_by_the_seed_and_held_out_prompts_are_never_trained_on():
    train, heldout = grpo_text.make_task(2, 500, seed=7)
    again, heldout_again = grpo_text.make_task(2, 500, seed=7)
    assert np.array_equal(train, again) and np.array_equal(heldout, heldout_again)
    assert len(heldout) == 500 and len(train) == 10_000 - 500
    assert not {tuple(p) for p in train} & {tuple(p) for p in heldout}
    assert not np.array_equal(grpo_text.make_task(2, 500, seed=8)[1], heldout)


# --- the group advantage [arXiv:2402.03300 §4.1.2] ---

@pytest.mark.parametrize("scale_by_std", [True, False])
def test_group_advantages_match_the_formula_written_per_group(scale_by_std):
    generator = torch.Generator().manual_seed(0)
    rewards = (torch.rand(6, 8, generator=generator, dtype=torch.float64) < 0.4).double()
    rewards[0] = 1.0  # a group without signal
    expected = torch.tensor(advantages_by_loops(rewards.tolist(), scale_by_std),
                            dtype=torch.float64)
    torch.testing.assert_close(group_advantages(rewards, scale_by_std), expected, rtol=1e-12,
                               atol=1e-12)
    # a right answer among 1 of 8 right gets (1 - 1/8) / std by hand
    one = torch.zeros(1, 8, dtype=torch.float64)
    one[0, 3] = 1.0
    std = math.sqrt((7 / 8) ** 2 / 7 + 7 * (1 / 8) ** 2 / 7)
    assert group_advantages(one)[0, 3].item() == pytest.approx((7 / 8) / std)


def test_group_batch_drops_groups_without_signal_and_batch_is_one_group():
    rewards = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    used, advantages = group_batch(rewards, "group", std_scale=False, signal_only=True)
    assert used.tolist() == [False] * 3 + [True] * 3 + [False] * 3
    torch.testing.assert_close(advantages[3:6], torch.tensor([-1 / 3, 2 / 3, -1 / 3]))
    # the batch-mean baseline: R_i - mean over all 9 answers (4 of 9 right)
    used, advantages = group_batch(rewards, "batch", std_scale=False, signal_only=True)
    assert used.all()
    torch.testing.assert_close(advantages, rewards.reshape(-1) - 4 / 9)
    # a batch of equal rewards: nothing used, no step
    used, _ = group_batch(torch.ones(2, 4), "batch", std_scale=True, signal_only=True)
    assert not used.any()
    used, _ = group_batch(torch.ones(2, 4), "group", std_scale=True, signal_only=False)
    assert not used.any()


# --- the k3 estimate of KL(π_θ ‖ π_ref) [arXiv:2402.03300 eq. 4] ---

def test_kl_k3_averages_to_the_exact_kl_over_tokens_sampled_from_pi_theta():
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(len(VOCAB), generator=generator, dtype=torch.float64)
    ref_logits = logits + 0.5 * torch.randn(len(VOCAB), generator=generator, dtype=torch.float64)
    p, p_ref = logits.softmax(0), ref_logits.softmax(0)
    exact = sum(p[a] * math.log(p[a] / p_ref[a]) for a in range(len(VOCAB)))
    tokens = torch.multinomial(p, 200_000, replacement=True, generator=generator)
    k3 = kl_k3(p.log()[tokens], p_ref.log()[tokens])
    assert abs(k3.mean().item() - exact) < 4 * (k3.std() / math.sqrt(len(k3))).item()


# --- the loss of eq. 3, with 1/|o_i| [arXiv:2402.03300 eq. 3; arXiv:2503.20783] ---

def objective_by_loops(ratio, advantages, kl_ref, lengths, clip_coef, beta, clip_high=None,
                       length_norm=True, answer_len=4):
    """(1/n) Σ_i (1/|o_i|) Σ_t [min(r_t Â_i, clip(r_t, 1-ε, 1+ε_high) Â_i) - β k_t]; without
    length_norm 1/L for 1/|o_i|. Tokens in answer order, one float at a time."""
    high = clip_coef if clip_high is None else clip_high
    total, t = 0.0, 0
    for i, length in enumerate(lengths):
        terms = 0.0
        for _ in range(length):
            r, a = ratio[t].item(), advantages[i].item()
            clipped = min(max(r, 1 - clip_coef), 1 + high)
            terms += min(r * a, clipped * a) - beta * kl_ref[t].item()
            t += 1
        total += terms / (length if length_norm else answer_len) / len(lengths)
    return total


@pytest.mark.parametrize("length_norm, clip_high", [(True, None), (False, None), (True, 0.28)])
def test_grpo_loss_with_token_weights_is_eq_3_written_out(length_norm, clip_high):
    generator = torch.Generator().manual_seed(5)
    lengths = torch.tensor([1, 3, 4, 2, 4])
    m = int(lengths.sum())
    ratio = torch.exp(0.3 * torch.randn(m, generator=generator, dtype=torch.float64))
    advantages = torch.randn(5, generator=generator, dtype=torch.float64)
    kl_ref = torch.rand(m, generator=generator, dtype=torch.float64)
    weights = token_weights(lengths, 4, length_norm).double()
    token_advantages = advantages.repeat_interleave(lengths)
    loss = grpo_loss(ratio, token_advantages, weights, kl_ref, 0.2, 0.04, clip_high)
    expected = objective_by_loops(ratio, advantages, kl_ref, lengths.tolist(), 0.2, 0.04,
                                  clip_high, length_norm)
    assert loss.item() == pytest.approx(-expected, rel=1e-6)  # the weights are float32
    # both sides of the clip occur, so the check covers them
    assert (ratio > 1 + (clip_high or 0.2)).any() and (ratio < 0.8).any()


def test_token_weights_follow_the_answer_mask_order():
    lengths = torch.tensor([2, 1])
    # answer 0's two tokens, then answer 1's one: m = 3, n = 2
    assert token_weights(lengths, 3, True).tolist() == pytest.approx([3 / 4, 3 / 4, 3 / 2])
    assert token_weights(lengths, 3, False).tolist() == pytest.approx([1 / 2] * 3)


# --- the critic variant: GAE with γ = 1 on answer tokens [From Baseline to Advantage] ---

def test_critic_targets_are_gae_worked_by_hand_on_a_three_token_answer():
    """Answer 0: three tokens, right (R = 1), V = 0.2, 0.5, 0.7; γ = 1, λ = 0.95:
    δ = (0.5 - 0.2, 0.7 - 0.5, 1 - 0.7) = (0.3, 0.2, 0.3); Â_2 = 0.3, Â_1 = 0.2 + 0.95·0.3 =
    0.485, Â_0 = 0.3 + 0.95·0.485 = 0.76075; targets Â + V = 0.96075, 0.985, 1.0. Answer 1: one
    token, wrong, V = 0.4: Â_0 = -0.4, target 0. The padding after each end gets 0."""
    values = torch.tensor([[0.2, 0.5, 0.7, 0.9], [0.4, 0.6, 0.1, 0.3]], dtype=torch.float64)
    rewards = torch.tensor([1.0, 0.0], dtype=torch.float64)
    lengths = torch.tensor([3, 1])
    advantages = answer_gae(rewards, values, lengths, gamma=1.0, gae_lambda=0.95)
    expected = torch.tensor([[0.76075, 0.485, 0.3, 0.0], [-0.4, 0.0, 0.0, 0.0]],
                            dtype=torch.float64)
    torch.testing.assert_close(advantages, expected, rtol=0, atol=1e-12)
    targets = (advantages + values)[:, :3]
    torch.testing.assert_close(targets[0], torch.tensor([0.96075, 0.985, 1.0],
                                                        dtype=torch.float64))
    assert targets[1, 0].item() == pytest.approx(0.0)
    # λ = 1: every token's target is the answer's reward (Monte Carlo)
    advantages = answer_gae(rewards, values, lengths, gamma=1.0, gae_lambda=1.0)
    torch.testing.assert_close((advantages + values)[0, :3],
                               torch.ones(3, dtype=torch.float64))


# --- SFT, then short runs end to end ---

def held_out_cross_entropy(model, pairs):
    """-mean log π(a_t|s_t) over the solved answers' tokens, the digits and the end token, read
    from one forward pass per prompt."""
    total, count = 0.0, 0
    with torch.no_grad():
        for a, b in pairs:
            sequence = grpo_text.encode([f"{a:02d}+{b:02d}={a + b}$"])
            logp = torch.log_softmax(model(sequence[:, :-1])[0], -1)
            for t in range(6, sequence.shape[1]):  # the answer starts after the 6-token prompt
                total -= logp[t - 1, sequence[0, t]].item()
                count += 1
    return total / count


def test_sft_lowers_the_held_out_cross_entropy():
    train, heldout = grpo_text.make_task(2, 50, seed=1)
    model = small_model(seed=1)
    before = held_out_cross_entropy(model, heldout)
    grpo_text.supervised_fine_tune(model, grpo_text.prompts_of(train[:500], 2),
                                   grpo_text.answers_of(train[:500], 4), 150, 32,
                                   torch.optim.Adam(model.parameters(), lr=3e-3),
                                   np.random.default_rng(1))
    after = held_out_cross_entropy(model, heldout)
    assert before > 2.0  # near log 13 = 2.56 at initialisation
    assert after < 0.6 * before, (before, after)


def test_sft_to_plateau_keeps_the_best_chunk_and_stops_after_patience():
    """Scores scripted by hand: the best comes at chunk 2 (a later tie is no gain), so with
    patience 8 the rule trains chunks 1-10 and ends on chunk 2's weights; with no gain at all,
    on the weights it started from."""
    for scores, best, calls in [([0.1, 0.2, 0.5, 0.4, 0.5, 0.3, 0.45, 0.1, 0.2, 0.3, 0.49], 2, 10),
                                ([0.3] + [0.3, 0.1, 0.2] * 3, 0, 8)]:
        model = small_model(seed=2)
        weights = [{k: v.clone() for k, v in model.state_dict().items()}]  # after each chunk
        script = iter(scores)

        def chunk():
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn_like(p))
            weights.append({k: v.clone() for k, v in model.state_dict().items()})

        assert grpo_text.sft_to_plateau(model, chunk, lambda: next(script), patience=8) == best
        assert len(weights) - 1 == calls
        for name, value in model.state_dict().items():
            assert torch.equal(value, weights[best][name]), name


def test_the_plateau_control_chooses_on_prompts_it_neither_trains_on_nor_reports(
        monkeypatch, tmp_path, read_csv):
    scored, trained, optimizers = [], [], []
    real = grpo_text.greedy_accuracy
    monkeypatch.setattr(grpo_text, "greedy_accuracy", lambda actor, prompts, *rest:
                        scored.append(prompts) or real(actor, prompts, *rest))
    # no step taken: no chunk gains, so 8 are run
    monkeypatch.setattr(grpo_text, "supervised_fine_tune", lambda actor, prompts, *rest:
                        trained.append(prompts) or optimizers.append(rest[3]))
    args = grpo_text.Args(**TINY, sft_to_plateau=True, runs_dir=str(tmp_path))
    evaluations = read_csv(grpo_text.train(args) / "evaluations.csv")
    train, heldout = grpo_text.make_task(2, TINY["heldout_size"], args.seed)
    texts = lambda prompts: {text(row) for row in prompts}  # noqa: E731
    heldout_texts, sft_texts = texts(grpo_text.prompts_of(heldout, 2)), texts(trained[0])
    assert len(trained) == 8 and sft_texts == texts(grpo_text.prompts_of(train[:100], 2))
    # a fresh Adam for each chunk (a warm restart; one Adam across them stopped lower)
    assert len({id(optimizer) for optimizer in optimizers}) == 8
    valid = [texts(p) for p in scored if texts(p) != heldout_texts]
    assert len(valid) == 9  # before the first chunk and after each
    assert len(valid[0]) == TINY["heldout_size"]
    assert not valid[0] & heldout_texts and not valid[0] & sft_texts
    # held-out rows: untrained, each chunk, then the weights kept (chunk 0: no SFT steps)
    np.testing.assert_array_equal(evaluations["sft_steps"], [0, *range(250, 2001, 250), 0])


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """Two runs of TINY with the same seed, one with another seed, and one each with the critic
    and the batch mean."""
    runs = {}
    for name, flags in [("a", {}), ("b", {}), ("seed2", dict(seed=2)),
                        ("critic", dict(advantage="critic")),
                        ("batch", dict(advantage="batch", save_model=True))]:
        args = grpo_text.Args(**TINY, **flags, runs_dir=str(tmp_path_factory.mktemp(name)))
        runs[name] = args, grpo_text.train(args)
    return runs


def test_run_folder_has_the_documented_files(tiny_runs, read_csv):
    for name in ("a", "critic", "batch"):
        args, run_dir = tiny_runs[name]
        config = json.loads((run_dir / "config.json").read_text())
        assert config["finished"] is True and config["iterations_run"] == args.num_iterations
        assert config["advantage"] == args.advantage and config["parameters"] > 0
        updates = read_csv(run_dir / "updates.csv")
        assert list(updates) == UPDATE_COLUMNS
        np.testing.assert_array_equal(updates["iteration"], np.arange(1, 5))
        np.testing.assert_array_equal(updates["answers"], 16 * np.arange(1, 5))  # P·G each
        evaluations = read_csv(run_dir / "evaluations.csv")
        np.testing.assert_array_equal(evaluations["iteration"], [0, 2, 4])
        assert np.all((0 <= evaluations["heldout_accuracy"])
                      & (evaluations["heldout_accuracy"] <= 1))
        stepped = updates["policy_loss"] != 0
        assert np.all(updates["kl"][stepped] >= 0)
        assert np.all((updates["answer_length"] >= 1) & (updates["answer_length"] <= 4))
        if name == "critic":
            assert np.all(updates["value_loss"] > 0)
        else:
            assert np.all(updates["value_loss"] == 0)


def test_same_seed_gives_the_same_run_and_another_seed_another(tiny_runs, rows_without_column):
    runs = [tiny_runs[name][1] for name in ("a", "b", "seed2")]
    for name, clocks in (("updates.csv", ("wall_time", "sps")),
                         ("evaluations.csv", ("wall_time",))):
        first, second, other = (rows_without_column(run / name, *clocks) for run in runs)
        assert len(first) > 2 and first == second
        if name == "updates.csv":  # (the tiny model's held-out accuracy may be 0 for both)
            assert other[1:] != first[1:]


def test_a_run_without_any_right_answer_never_steps(monkeypatch, tmp_path):
    """Every reward 0: no group carries signal, so θ must stay π_ref's exactly (Adam's momentum
    would otherwise move it), and every row says so."""
    monkeypatch.setattr(grpo_text, "reward", lambda answers, sums: torch.zeros(len(answers)))
    args = grpo_text.Args(**TINY, save_model=True, runs_dir=str(tmp_path))
    checkpoint = torch.load(grpo_text.train(args) / "model.pt", weights_only=True)
    for name, value in checkpoint["actor"].items():
        assert torch.equal(value, checkpoint["ref_actor"][name]), name


def test_dynamic_sampling_draws_rounds_up_to_the_cap(tmp_path, read_csv):
    args = grpo_text.Args(**TINY, dynamic_sampling=True, max_draws=3, runs_dir=str(tmp_path))
    updates = read_csv(grpo_text.train(args) / "updates.csv")
    drawn = updates["groups_drawn"]
    assert np.all((drawn >= 4) & (drawn <= 12) & (drawn % 4 == 0))
    # every drawn answer counts
    np.testing.assert_array_equal(updates["answers"], np.cumsum(drawn * 4))


def test_default_run_ends_by_printing_accuracy_before_and_after(run_cli, read_csv):
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    result = run_cli("grpo_text.py", *flags)
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"done: held-out accuracy (\d\.\d{3}) after SFT \(30 steps\), "
                         r"(\d\.\d{3}) after 4 iterations \(64 answers\) in \d+ s; "
                         r"run folder: (.+)", last)
    assert match, last
    accuracy = read_csv(Path(match[3]) / "evaluations.csv")["heldout_accuracy"]
    assert (float(match[1]), float(match[2])) == (round(accuracy[0], 3), round(accuracy[-1], 3))
    assert "parameters" in result.stdout.splitlines()[0]


@pytest.mark.parametrize("argv, mention", [
    pytest.param(["--group-size", "1"], "--group-size 1", id="group-size-1"),
    pytest.param(["--num-digits", "4"], "--num-digits 4", id="num-digits-4"),
    pytest.param(["--num-digits", "0"], "--num-digits 0", id="num-digits-0"),
    pytest.param(["--n-heads", "3"], "--n-heads 3", id="heads-not-dividing"),
    pytest.param(["--heldout-size", "9500"], "--heldout-size 9500", id="split-too-large"),
    pytest.param(["--learning-rate", "nan"], "--learning-rate nan", id="lr-nan"),
    pytest.param(["--beta", "-0.1"], "--beta -0.1", id="beta-negative"),
    pytest.param(["--gae-lambda", "1.5"], "--gae-lambda 1.5", id="lambda-above-1"),
    pytest.param(["--gamma", "0"], "--gamma 0", id="gamma-0"),
    pytest.param(["--sft-steps", "-1"], "--sft-steps -1", id="sft-steps-negative"),
    pytest.param(["--num-prompts", "1", "--group-size", "2", "--num-minibatches", "3"],
                 "--num-minibatches 3", id="more-minibatches-than-answers"),
    pytest.param(["--num-minibatches", "9"], "--num-minibatches 9",
                 id="more-minibatches-than-one-group"),  # --signal-only keeps 1 group of 8
    pytest.param(["--advantage", "critic", "--dynamic-sampling", "--num-minibatches", "9"],
                 "--num-minibatches 9", id="more-minibatches-than-one-sampled-group"),
    pytest.param(["--clip-coef-high", "0"], "--clip-coef-high 0", id="clip-coef-high-0"),
])
def test_bad_flag_exits_2_with_one_line(assert_bad_flag, argv, mention):
    assert_bad_flag("grpo_text.py", argv, mention)


@pytest.mark.parametrize("flags", [dict(advantage="critic"), dict(advantage="batch"),
                                   dict(signal_only=False)])
def test_minibatches_up_to_the_whole_batch_where_every_answer_is_kept(flags):
    """Without --dynamic-sampling, a critic, the batch-mean baseline (one group: the batch) and
    --no-signal-only keep all N = 256 answers or none, so 9 to 256 minibatches are allowed."""
    grpo_text.check_args(grpo_text.Args(num_minibatches=256, **flags))


# --- plots/grpo_text.py: reads only runs of the flags it is given, writes nothing on bad input ---

def fake_text_run(folder, **flags):
    """A finished run folder of grpo_text.py as plots/grpo_text.py reads it: config.json from
    Args(**flags), two held-out evaluations and two updates."""
    args = grpo_text.Args(**flags)
    run_dir = folder / f"add{args.num_digits}__{args.exp_name}__{args.seed}__1"
    run_dir.mkdir(parents=True)
    config = {**json.loads(json.dumps(dataclasses.asdict(args))), "finished": True}
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "evaluations.csv").write_text(
        "answers,iteration,heldout_accuracy,wall_time\n0,0,0.25,1.0\n512,2,0.75,3.0\n")
    (run_dir / "updates.csv").write_text(
        "answers,iteration,zero_signal,wall_time\n256,1,0.5,2.0\n512,2,0.25,3.0\n")


@pytest.mark.parametrize("flags, read", [([], False), (["--flags=--sft-examples 1000"], True)])
def test_the_comparison_reads_only_a_run_of_the_flags_given(run_script, tmp_path, flags, read):
    """One finished GRPO run, made with --sft-examples 1000: it serves the comparison of those
    flags, and not the defaults' (which then has no run and writes nothing)."""
    fake_text_run(tmp_path / "runs" / "add2", seed=1, exp_name="group", sft_examples=1000)
    out = tmp_path / "out" / "table"
    result = run_script("plots/grpo_text.py", "--no-run", "--seeds", "1", "--methods", "group",
                        "--no-plateau", "--runs-dir", tmp_path / "runs", "--out", out, *flags)
    if read:
        assert result.returncode == 0, result.stderr
        assert "accuracy_after_each_seed 0.750" in result.stdout
    else:
        assert result.returncode == 2 and "no finished run" in result.stderr
        assert len(result.stderr.splitlines()) == 1 and not out.parent.exists()


@pytest.mark.parametrize("argv, mention", [
    (["--methods", "foo"], "--methods foo"),
    (["--seeds", "1", "1"], "--seeds 1 1"),
    (["--flags=--num-digits 9"], "--num-digits 9"),
])
def test_the_comparison_refuses_bad_flags_in_one_line(run_script, assert_clean_error, argv,
                                                       mention):
    assert mention in assert_clean_error(run_script("plots/grpo_text.py", "--no-run", *argv))
