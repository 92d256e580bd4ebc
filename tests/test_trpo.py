"""trpo.py: conjugate gradient, the Fisher-vector product, the step to the trust region's
boundary and the line search, each checked against an independent computation.

The runs every script shares (run folder, reproducibility, learning, bad input, evaluation)
are in test_end_to_end.py; here is what only TRPO does [TRPO: Enforce the Constraint Exactly].
"""

import copy
import dataclasses

import numpy as np
import pytest
import torch

import trpo
from trpo import conjugate_gradient, fisher_vector_product, line_search, mean_kl


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


# --- conjugate gradient: F^-1 g from products F v alone ---

def random_spd(n: int, condition: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A = Q diag(eigenvalues) Q^T with eigenvalues spread over [1, condition], and a b."""
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    eigenvalues = torch.logspace(0, np.log10(condition), n, dtype=torch.float64)
    return q @ torch.diag(eigenvalues) @ q.T, torch.randn(n, generator=generator,
                                                          dtype=torch.float64)


def counted(matrix: torch.Tensor):
    """v -> A v, the only access to A; returns the closure and the list of its calls."""
    calls = []

    def Avp(v: torch.Tensor) -> torch.Tensor:
        calls.append(None)
        return matrix @ v

    return Avp, calls


@pytest.mark.parametrize("n", [5, 10])
@pytest.mark.parametrize("extra_iters", [0, 5])
def test_conjugate_gradient_solves_an_spd_system_in_n_products(n, extra_iters):
    A, b = random_spd(n, condition=100.0, seed=n)
    Avp, calls = counted(A)
    x = conjugate_gradient(Avp, b, iters=n + extra_iters)
    # n distinct eigenvalues: exact in n steps; the early stop then saves the extra ones
    assert len(calls) <= n
    torch.testing.assert_close(x, torch.linalg.solve(A, b), rtol=1e-6, atol=1e-9)


def test_conjugate_gradient_uses_exactly_iters_products_when_stopped_early():
    A, b = random_spd(10, condition=100.0, seed=10)
    Avp, calls = counted(A)
    x = conjugate_gradient(Avp, b, iters=3)
    assert len(calls) == 3
    exact = torch.linalg.solve(A, b)
    assert (x - exact).norm() > 0.01 * exact.norm()  # three steps do not solve it yet
    # yet closer than the start x = 0 in A's norm, which CG minimises over the Krylov space
    assert (x - exact) @ A @ (x - exact) < exact @ A @ exact


# --- L(θ) and the mean KL at a θ ≠ θ' [The Surrogate Objective; TRPO's problem] ---

def test_surrogate_and_kl_are_the_mean_weighted_advantage_and_the_mean_kl(make_actor,
                                                                          moved_copy):
    """Categorical, written out with the probabilities: L(θ) = (1/n) Σ_t π_θ(a_t|s_t) /
    π_θ'(a_t|s_t) A_t and the mean over states of Σ_a π_θ'(a|s) log(π_θ'(a|s) / π_θ(a|s))."""
    old_actor, obs = make_actor(trpo, "categorical", dtype=torch.float64)
    actor = moved_copy(old_actor)
    advantages = torch.randn(len(obs), generator=torch.Generator().manual_seed(5),
                             dtype=torch.float64)
    with torch.no_grad():
        old_dist = old_actor(obs)
        actions = old_dist.sample()
        surrogate, kl = trpo.surrogate_and_kl(actor, old_dist, obs, actions,
                                              old_dist.log_prob(actions), advantages)
        p_new, p_old = (torch.softmax(a.net(obs), -1) for a in (actor, old_actor))
    n = len(obs)
    expected_surrogate = sum(p_new[t, actions[t]] / p_old[t, actions[t]] * advantages[t]
                             for t in range(n)) / n
    expected_kl = sum((p_old[t] * (p_old[t] / p_new[t]).log()).sum() for t in range(n)) / n
    assert expected_kl > 0.01  # θ ≠ θ'
    assert surrogate.item() == pytest.approx(expected_surrogate.item(), rel=1e-10)
    assert kl.item() == pytest.approx(expected_kl.item(), rel=1e-10)


# --- F v: the Hessian of the mean KL at theta = theta', times v, never formed ---

def kl_gradient(actor, old_dist, obs) -> torch.Tensor:
    """grad_theta of the mean KL(pi_theta' || pi_theta), with create_graph, as train builds it."""
    kl = mean_kl(old_dist, actor(obs))
    return flat(torch.autograd.grad(kl, list(actor.parameters()), create_graph=True))


@pytest.fixture
def tiny_actor(make_actor, head, fisher_matrix):
    """(actor, obs, old_dist, F): a float64 actor of each head with 4 hidden units, its frozen
    copy's distribution pi_theta', and its Fisher matrix J^T M J, built from the closed-form
    Fisher of the distribution family rather than from the KL."""
    actor, obs = make_actor(trpo, head, hidden=4, dtype=torch.float64)
    with torch.no_grad():
        old_dist = copy.deepcopy(actor)(obs)
    return actor, obs, old_dist, fisher_matrix(actor, obs)


def damped(F: torch.Tensor, damping: float) -> torch.Tensor:
    return F + damping * torch.eye(len(F), dtype=F.dtype)


@pytest.mark.parametrize("damping", [0.0, 0.1])
def test_fisher_vector_product_is_the_fisher_matrix_times_v_plus_damping(tiny_actor, damping):
    """At theta = theta' the KL's Hessian is the Fisher matrix [TRPO: Enforce the Constraint
    Exactly]: the double backward pass through the KL must give (F + c I) v with F = J^T M J,
    which is the Fisher information of pi_theta itself, not a derivative of the KL."""
    actor, obs, old_dist, F = tiny_actor
    assert F.abs().max() > 0.1  # a curved KL, or the comparison would say little
    kl_grad = kl_gradient(actor, old_dist, obs)
    generator = torch.Generator().manual_seed(3)
    for _ in range(3):
        v = torch.randn(len(kl_grad), generator=generator, dtype=torch.float64)
        torch.testing.assert_close(
            fisher_vector_product(kl_grad, list(actor.parameters()), v, damping),
            damped(F, damping) @ v, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("max_kl", [0.01, 0.05])
def test_full_step_is_the_dense_natural_gradient_step_to_the_trust_region_boundary(tiny_actor,
                                                                                 max_kl):
    """The step train takes, s = CG(F, g) then trust_region_step(s, F s, delta), against
    s* = (F + c I)^-1 g from a dense solve with F = J^T M J, scaled to
    full* = sqrt(2 delta / s*^T (F + c I) s*) s*, the maximiser of g.x subject to
    1/2 x^T (F + c I) x <= delta [TRPO: Enforce the Constraint Exactly]."""
    actor, obs, old_dist, F = tiny_actor
    damping, params = 0.1, list(actor.parameters())
    with torch.no_grad():
        actions = old_dist.sample()
    advantages = torch.randn(len(obs), generator=torch.Generator().manual_seed(4),
                             dtype=torch.float64)
    surrogate, _ = trpo.surrogate_and_kl(actor, old_dist, obs, actions,
                                         old_dist.log_prob(actions), advantages)
    g = flat(torch.autograd.grad(surrogate, params))
    kl_grad = kl_gradient(actor, old_dist, obs)

    def Fvp(v):
        return fisher_vector_product(kl_grad, params, v, damping)

    def train_step(cg_iters):
        search_dir = conjugate_gradient(Fvp, g, cg_iters)
        return trpo.trust_region_step(search_dir, Fvp(search_dir), max_kl)

    A = damped(F, damping)
    s_star = torch.linalg.solve(A, g)  # the natural gradient
    full_star = torch.sqrt(2 * max_kl / (s_star @ A @ s_star)) * s_star
    assert 0.5 * full_star @ A @ full_star == pytest.approx(max_kl, rel=1e-12)
    # with as many CG iterations as parameters, the step is full* to CG's stopping rule, a
    # squared residual under 1e-10 (CG stops after 7 and 8 products; measured relative errors
    # 4e-7 and 7e-7)
    full_step = train_step(len(g))
    assert (full_step - full_star).norm() < 1e-4 * full_star.norm()
    # after 3 iterations s is still far from F^-1 g (measured 1 % and 46 % off), yet F s is
    # computed exactly, so the step still ends on the boundary of the quadratic model of the KL
    full_step = train_step(3)
    assert (full_step - full_star).norm() > 1e-3 * full_star.norm()
    assert 0.5 * full_step @ A @ full_step == pytest.approx(max_kl, rel=1e-6)


# --- the line search ---

COEF, ITERS, MAX_KL = 0.8, 10, 0.01


@pytest.mark.parametrize("surrogate_of, kl_of, expected_k", [
    # KL 0.05 t^2: 0.8^(2k) 0.05 <= 0.01 first at k = 4 (0.0084; k = 3 gives 0.0131)
    pytest.param(lambda t: t, lambda t: 0.05 * t**2, 4, id="backtracks-until-kl-fits"),
    pytest.param(lambda t: t, lambda t: MAX_KL * t**2, 0, id="kl-exactly-delta-is-accepted"),
    # t - 1.5 t^2 improves on 0 only for t < 2/3: 0.8 no, 0.64 yes
    pytest.param(lambda t: t - 1.5 * t**2, lambda t: 0.0, 2, id="backtracks-until-improvement"),
    pytest.param(lambda t: -t, lambda t: 0.0, None, id="surrogate-never-improves"),
    pytest.param(lambda t: t, lambda t: 2 * MAX_KL, None, id="kl-always-above-delta"),
    pytest.param(lambda t: t, lambda t: 1e6 * t**2, None, id="kl-fits-only-after-the-last-try"),
])
def test_line_search_takes_the_first_step_inside_the_region_that_improves(surrogate_of, kl_of,
                                                                         expected_k):
    """evaluate(theta) is a known function of t, the fraction of the full step in theta."""
    theta_old = torch.tensor([0.0, -1.0, 2.0], dtype=torch.float64)
    full_step = torch.tensor([1.0, 0.5, -0.25], dtype=torch.float64)
    tried = []

    def evaluate(theta):
        t = theta[0].item()  # exact: theta_old[0] = 0 and full_step[0] = 1
        tried.append(t)
        return surrogate_of(t), kl_of(t)

    theta, k, accepted, improvement = line_search(evaluate, theta_old, full_step, MAX_KL, COEF,
                                                  ITERS)
    assert tried[0] == 0.0  # theta' itself, the surrogate to improve on
    tries = tried[1:]
    np.testing.assert_allclose(tries, COEF ** np.arange(len(tries)), rtol=1e-12)
    acceptable = [kl_of(t) <= MAX_KL and surrogate_of(t) > surrogate_of(0.0) for t in tries]
    if expected_k is None:  # nothing acceptable in ITERS tries: theta' itself, unchanged
        assert acceptable == [False] * ITERS
        assert (k, accepted, improvement) == (ITERS, False, 0.0)
        assert torch.equal(theta, theta_old)
    else:  # the first acceptable try, and it is never one with a KL above delta
        assert acceptable == [False] * expected_k + [True]
        assert (k, accepted) == (expected_k, True)
        t = COEF ** expected_k
        torch.testing.assert_close(theta, theta_old + t * full_step)
        assert kl_of(theta[0].item()) <= MAX_KL
        assert improvement == pytest.approx(surrogate_of(t) - surrogate_of(0.0)) and improvement > 0


# --- the constraint in a run ---

@pytest.fixture
def run_refusing_every_other_step(monkeypatch, tmp_path):
    """Four updates with the default flags, where every second line search is given a radius
    of 0, which no step that moves the policy fits: train must keep theta' and log it so."""
    search, calls = trpo.line_search, []

    def every_other_refused(evaluate, theta_old, full_step, max_kl, *rest):
        calls.append(None)
        return search(evaluate, theta_old, full_step, 0.0 if len(calls) % 2 == 0 else max_kl,
                      *rest)

    monkeypatch.setattr(trpo, "line_search", every_other_refused)
    args = trpo.Args(runs_dir=str(tmp_path))
    args = dataclasses.replace(args, total_timesteps=4 * args.num_envs * args.num_steps)
    return args, trpo.train(args)


@pytest.mark.parametrize("run", ["defaults", "every-other-refused"])
def test_accepted_steps_stay_inside_the_region_and_refused_ones_do_not_move(request, short_run,
                                                                           read_csv, run):
    if run == "defaults":
        args, run_dir = short_run(trpo, "cartpole")
    else:
        args, run_dir = request.getfixturevalue("run_refusing_every_other_step")
    updates = read_csv(run_dir / "updates.csv")
    accepted = updates["accepted"] == 1
    kl, backtracks = updates["kl"], updates["backtracks"]
    assert np.all(kl[accepted] <= args.max_kl) and np.all(kl[accepted] > 0)
    assert np.all(backtracks[accepted] < args.backtrack_iters)
    assert np.all(updates["surrogate_improvement"][accepted] > 0)
    assert np.all(kl[~accepted] == 0)  # theta' kept: exactly the old policy
    assert np.all(backtracks[~accepted] == args.backtrack_iters)
    assert np.all(updates["surrogate_improvement"][~accepted] == 0)
    assert accepted.any()
    if run == "every-other-refused":
        np.testing.assert_array_equal(accepted, [True, False, True, False])


# --- flags ---

@pytest.mark.parametrize("argv, mention", [
    pytest.param(["--max-kl", "0"], "--max-kl 0", id="max-kl-0"),
    pytest.param(["--cg-iters", "0"], "--cg-iters 0", id="cg-iters-0"),
    # an infinite radius or damping ran to the end with every update refused
    pytest.param(["--max-kl", "inf"], "--max-kl inf", id="max-kl-inf"),
    pytest.param(["--cg-damping", "inf"], "--cg-damping inf", id="cg-damping-inf"),
])
def test_bad_flag_exits_2_with_one_line(assert_bad_flag, argv, mention):
    assert_bad_flag("trpo.py", argv, mention)
