"""Shared fixtures for the tests of every algorithm script.

The repository root goes on sys.path, so a test file imports its script directly
(`import ppo_clip`). The helpers below are offered as fixtures, so that the test files for
vpg.py, trpo.py, ppo_clip.py and ppo_kl.py use one copy of each:

    run_script(script, *args)       run `python <script> args...` in a fresh folder;
                                    returns (returncode, stdout, stderr)
    run_cli(script, *args)          the same through the script's own `__main__` block, inside
                                    this process (no 2.5 s interpreter start-up)
    assert_clean_error(result)      exit status 2, exactly one non-empty stderr line, no traceback
    assert_bad_flag(script, argv, mention)
                                    the bad-input contract for one command line, in process
    read_csv(path)                  {column: float array}, in the file's column order
    assert_run_folder(run_dir, args, own_columns)
                                    config.json, episodes.csv and updates.csv as the README
                                    documents
    rows_without_column(path, *names)
                                    the CSV's lines with those columns cut out (byte
                                    comparison)
    trained(module, **flags)        train(module.Args(**flags)) once per session: (args, run_dir)
    short_run(module, name)         the short runs every script gets ("cartpole", "pendulum")
    head, make_actor(module, head)  a small Actor of each kind and a batch of observations
    moved_copy(actor)               the actor with noise added to its parameters
    of_flat_parameters(actor, obs, quantity)
                                    theta -> quantity(pi_theta', pi_theta), for autograd.functional
    random_ratios_and_advantages(seed, n), rollout
                                    random inputs of the equation functions
    gae_by_definition(...)          A_t = sum_l (gamma lambda)^l delta_{t+l}, term by term
    monte_carlo_kl(old, new, n)     sample estimate of KL(old || new) and its standard error
    advantages_by_loops(R, scale)   GRPO's group advantage, group by group (imported directly)
"""

import copy
import csv
import importlib
import json
import math
import runpy
import statistics
import subprocess
import sys
import traceback
import warnings
from dataclasses import asdict, fields
from pathlib import Path
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

# one torch thread, as the scripts themselves choose: on this 2-core machine, shared with other
# work, two threads made a backward pass of a tiny network take 78 ms instead of 0.3 ms
torch.set_num_threads(1)

SCRIPTS = ["ppo_clip", "ppo_kl", "trpo", "vpg"]


@pytest.fixture(params=SCRIPTS)
def module(request):
    """Each algorithm script in turn, imported."""
    return importlib.import_module(request.param)


@pytest.fixture
def script(module) -> str:
    return f"{module.__name__}.py"


EPISODE_COLUMNS = ["global_step", "episodic_return", "episodic_length", "wall_time"]
UPDATE_COLUMNS = ["global_step", "iteration", "sps", "policy_loss", "value_loss", "entropy", "kl",
                  "explained_variance"]


class ScriptResult(NamedTuple):
    returncode: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


@pytest.fixture
def run_script(tmp_path):
    """Run a script of the repository as `python SCRIPT ARGS...`, with tmp_path as the working
    directory (so a default `runs/` lands there); return (returncode, stdout, stderr)."""

    def run(script: str, *args, timeout: float = 120) -> ScriptResult:
        completed = subprocess.run(
            [sys.executable, str(REPO_ROOT / script), *map(str, args)],
            cwd=tmp_path, capture_output=True, text=True, timeout=timeout)
        return ScriptResult(completed.returncode, completed.stdout, completed.stderr)

    return run


@pytest.fixture
def run_cli(tmp_path, monkeypatch, capsys):
    """Run `python SCRIPT ARGS...` inside this process: runpy executes the file as `__main__`,
    so its own entry point parses, checks and trains or evaluates, in tmp_path. What the real
    interpreter would add to stderr is added here: every warning raised on the way (shown
    the way Python shows them by default), and the traceback of an uncaught exception, with
    exit status 1. Only warnings at import time escape it (the modules are already imported):
    a few run_script tests cover those."""

    def run(script: str, *args) -> ScriptResult:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(sys, "argv", [str(REPO_ROOT / script), *map(str, args)])
        capsys.readouterr()
        returncode, extra = 0, ""
        with warnings.catch_warnings(record=True) as caught:
            # Python's default filters (every DeprecationWarning of the script itself shows)
            warnings.simplefilter("always")
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning,
                             ResourceWarning):
                warnings.filterwarnings("ignore", category=category)
            warnings.filterwarnings("always", category=DeprecationWarning, module="__main__")
            try:
                runpy.run_path(str(REPO_ROOT / script), run_name="__main__")
            except SystemExit as stop:
                if stop.code is None or isinstance(stop.code, int):
                    returncode = stop.code or 0
                else:
                    returncode, extra = 1, f"{stop.code}\n"
            except Exception:  # noqa: BLE001 - the interpreter would print it and exit 1
                returncode, extra = 1, traceback.format_exc()
        stdout, stderr = capsys.readouterr()
        stderr += "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno)
                          for w in caught)
        return ScriptResult(returncode, stdout, stderr + extra)

    return run


def _assert_clean_error(result: ScriptResult, status: int = 2) -> str:
    """The contract for bad input (one line that names the flag, exit 2, no traceback); return
    the one error line."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == status, result
    assert len(result.stderr_lines) == 1, result.stderr
    return result.stderr_lines[0]


@pytest.fixture
def assert_clean_error():
    return _assert_clean_error


@pytest.fixture
def assert_bad_flag(run_cli, tmp_path):
    """Run SCRIPT with a flag outside its domain (in process): exit status 2, one stderr line
    that names `mention`, no traceback, and no run folder, since it ended before training."""

    def check(script: str, argv: list[str], mention: str) -> None:
        line = _assert_clean_error(run_cli(script, *argv))
        assert mention in line, line
        assert not (tmp_path / "runs").exists()

    return check


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="") as file:
        header, *rows = list(csv.reader(file))
    assert all(len(row) == len(header) for row in rows), f"ragged rows in {path}"
    return {name: np.array([float(row[i]) for row in rows]) for i, name in enumerate(header)}


@pytest.fixture
def read_csv():
    """Read a CSV with a header row into {column: float array}, keeping the column order."""
    return _read_csv


def _assert_run_folder(run_dir: Path, args, own_columns: list[str]) -> None:
    config = json.loads((run_dir / "config.json").read_text())
    assert set(config) == ({f.name for f in fields(args)}
                           | {"versions", "device", "steps_run", "finished"})
    assert config["finished"] is True
    assert {k: config[k] for k in asdict(args)} == json.loads(json.dumps(asdict(args)))
    assert config["device"] == "cpu"
    assert {"python", "torch", "gymnasium", "numpy", "mujoco"} <= set(config["versions"])

    episodes = _read_csv(run_dir / "episodes.csv")
    assert list(episodes) == EPISODE_COLUMNS
    assert len(episodes["global_step"]) > 0
    assert np.all(np.diff(episodes["global_step"]) >= 0)
    assert np.all(episodes["episodic_length"] >= 1)

    updates = _read_csv(run_dir / "updates.csv")
    assert list(updates) == UPDATE_COLUMNS + own_columns
    batch_size = args.num_envs * args.num_steps
    num_iterations = args.total_timesteps // batch_size
    np.testing.assert_array_equal(updates["iteration"], np.arange(1, num_iterations + 1))
    np.testing.assert_array_equal(updates["global_step"], updates["iteration"] * batch_size)
    assert config["steps_run"] == num_iterations * batch_size  # whole batches, not the budget
    assert all(math.isfinite(kl) and kl >= 0 for kl in updates["kl"]), updates["kl"]


@pytest.fixture
def assert_run_folder():
    """Check a run folder as the README documents it: config.json holds every Args field, the
    device, the steps run and the versions; the CSVs have exactly the documented columns; one
    update row per iteration; the exact KL is finite and non-negative."""
    return _assert_run_folder


def _rows_without_column(path: Path, *names: str) -> list[list[str]]:
    with open(path, newline="") as file:
        header, *rows = list(csv.reader(file))
    keep = [i for i, column in enumerate(header) if column not in names]
    assert len(keep) == len(header) - len(names), (names, header)  # each name is a column
    return [[row[i] for i in keep] for row in [header, *rows]]


@pytest.fixture
def rows_without_column():
    """The CSV's rows as strings with the named columns cut out, for byte-for-byte comparison
    of runs (wall_time and sps differ between two runs of the same seed; nothing else may)."""
    return _rows_without_column


# --- training runs, shared by every test file of the session ---

SHORT_RUNS = {
    # the default flags on CartPole, a few iterations; model saved
    "cartpole": dict(total_timesteps=2048, save_model=True),
    # continuous control with observation and reward normalisation; model saved
    "pendulum": dict(env_id="Pendulum-v1", normalize=True, total_timesteps=2048, num_envs=2,
                     num_steps=64, save_model=True),
}


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """trained(module, **flags) -> (args, run_dir): module.train(module.Args(**flags)) in this
    process, each (script, flags) once per session, so that tests in different files that need
    the same run share it."""
    runs = {}

    def get(module, **flags):
        key = (module.__name__, tuple(sorted(flags.items())))
        if key not in runs:
            args = module.Args(runs_dir=str(tmp_path_factory.mktemp(module.__name__)), **flags)
            runs[key] = args, module.train(args)
        return runs[key]

    return get


@pytest.fixture(scope="session")
def short_run(trained):
    """short_run(module, "cartpole" | "pendulum") -> (args, run_dir), see SHORT_RUNS."""
    return lambda module, name: trained(module, **SHORT_RUNS[name])


# --- small networks and random inputs for the equation tests ---

SMALL_ACTORS = {  # obs_dim and action space of a small Actor of each kind
    "categorical": (4, gym.spaces.Discrete(3)),
    "gaussian": (3, gym.spaces.Box(-1.0, 1.0, (2,))),
}


@pytest.fixture(params=list(SMALL_ACTORS))
def head(request) -> str:
    """Each kind of policy head in turn: a test that takes `head` runs once per kind."""
    return request.param


@pytest.fixture
def make_actor():
    """make_actor(module, head, batch=64, hidden=16, dtype=float32) -> (module.Actor with that
    head, a batch of random observations), the same for a given seed every time."""

    def make(module, head: str, batch: int = 64, hidden: int = 16, dtype=torch.float32):
        obs_dim, action_space = SMALL_ACTORS[head]
        torch.manual_seed(0)
        actor = module.Actor(obs_dim, action_space, hidden=hidden).to(dtype)
        return actor, torch.randn(batch, obs_dim, dtype=dtype)

    return make


def _moved_copy(actor: torch.nn.Module, scale: float = 0.3, seed: int = 1) -> torch.nn.Module:
    moved = copy.deepcopy(actor)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in moved.parameters():
            param.add_(scale * torch.randn(param.shape, generator=generator, dtype=param.dtype))
    return moved


@pytest.fixture
def moved_copy():
    """moved_copy(actor, scale=0.3, seed=1): a copy of the actor with N(0, scale^2) noise added to
    every parameter, a pi_theta away from pi_theta'."""
    return _moved_copy


def _of_flat_parameters(actor: torch.nn.Module, obs: torch.Tensor, quantity):
    parameters = dict(actor.named_parameters())
    theta_old = torch.nn.utils.parameters_to_vector(parameters.values()).detach()
    with torch.no_grad():
        old_dist = actor(obs)

    def function(theta: torch.Tensor) -> torch.Tensor:
        chunks = torch.split(theta, [p.numel() for p in parameters.values()])
        new_parameters = {name: chunk.view_as(p)
                          for (name, p), chunk in zip(parameters.items(), chunks)}
        return quantity(old_dist, torch.func.functional_call(actor, new_parameters, (obs,)))

    return function, theta_old


@pytest.fixture
def of_flat_parameters():
    """of_flat_parameters(actor, obs, quantity) -> (f, theta'): f(theta) is
    quantity(pi_theta'(.|obs), pi_theta(.|obs)) where theta is every actor parameter in one flat
    vector and theta' their current value, for torch.autograd.functional.jacobian and hessian."""
    return _of_flat_parameters


def _random_ratios_and_advantages(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ratio = torch.exp(0.5 * torch.randn(n, generator=generator, dtype=torch.float64))
    return ratio, torch.randn(n, generator=generator, dtype=torch.float64)


@pytest.fixture
def random_ratios_and_advantages():
    """(ratio, advantages), n of each in float64: ratios log-normal around 1, advantages N(0, 1)."""
    return _random_ratios_and_advantages


@pytest.fixture
def rollout():
    """[T, N] = [10, 4] random rewards and values; terminations and truncations mixed:
    (rewards, values, next_values, terminations, dones)."""
    T, N = 10, 4
    generator = torch.Generator().manual_seed(0)
    rewards, values, next_values = torch.randn(3, T, N, generator=generator, dtype=torch.float64)
    terminations = torch.zeros(T, N, dtype=torch.float64)
    truncations = torch.zeros(T, N, dtype=torch.float64)
    terminations[3, 0] = truncations[7, 0] = 1  # env 0: a termination, later a truncation
    truncations[2, 1] = terminations[6, 1] = terminations[9, 1] = 1  # env 1: ends on the last step
    # env 2 never ends: its sum runs to the end of the rollout and bootstraps from V(s_T)
    terminations[4, 3] = terminations[5, 3] = truncations[0, 3] = 1  # env 3: a one-step episode
    dones = torch.maximum(terminations, truncations)
    return rewards, values, next_values, terminations, dones


# --- independent references ---

def _gae_by_definition(rewards, values, next_values, terminations, dones, gamma, gae_lambda):
    """A_t = sum_l (gamma lambda)^l delta_{t+l}, summed term by term and stopped after the step
    that ends the episode; delta_t = r_t + gamma (1 - term_t) V(s_{t+1}) - V(s_t). Inputs [T, N]."""
    T, N = rewards.shape
    advantages = torch.zeros(T, N, dtype=torch.float64)
    for n in range(N):
        for t in range(T):
            total = 0.0
            for k in range(t, T):
                delta = (rewards[k, n].item()
                         + gamma * (1 - terminations[k, n].item()) * next_values[k, n].item()
                         - values[k, n].item())
                total += (gamma * gae_lambda) ** (k - t) * delta
                if dones[k, n]:
                    break
            advantages[t, n] = total
    return advantages


@pytest.fixture
def gae_by_definition():
    """The GAE sum written out as a double loop, the reference for compute_gae."""
    return _gae_by_definition


def advantages_by_loops(returns: list[list[float]], scale_by_std: bool) -> list[list[float]]:
    """(R_i - mean) / (std + eps) group by group, the sample std (G - 1) of the statistics
    module, or R_i - mean alone."""
    result = []
    for group in returns:
        mean = sum(group) / len(group)
        std = statistics.stdev(group)
        result.append([(r - mean) / (std + 1e-8) if scale_by_std else r - mean for r in group])
    return result


def _monte_carlo_kl(old_dist, new_dist, num_samples: int) -> tuple[float, float]:
    with torch.no_grad():
        x = old_dist.sample((num_samples,))  # [num_samples, batch, ...]
        log_ratio = old_dist.log_prob(x) - new_dist.log_prob(x)  # [num_samples, batch]
    # the samples of one state are i.i.d.; the states differ, so pool the per-state variances
    standard_error = (log_ratio.var(dim=0).mean() / log_ratio.numel()).sqrt()
    return log_ratio.mean().item(), standard_error.item()


@pytest.fixture
def monte_carlo_kl():
    """Estimate the batch mean of KL(old || new) as mean(log p_old(x) - log p_new(x)), x ~ old;
    return (estimate, standard error)."""
    return _monte_carlo_kl


# --- the Fisher matrix of a policy, from the closed-form Fisher of its distribution family ---

def _distribution_parameters(old_dist, dist) -> torch.Tensor:
    """[batch, k]: the parameters each state's distribution is written in: the logits of a
    Categorical; the mean and the log std of a diagonal Gaussian, side by side. (old_dist is
    unused: this is a `quantity` for of_flat_parameters.)"""
    if isinstance(dist, torch.distributions.Categorical):
        return dist.logits
    return torch.cat([dist.mean, dist.stddev.log()], dim=-1)


def _fisher_in_distribution_parameters(dist) -> torch.Tensor:
    """[batch, k, k]: E[grad log p(x) grad log p(x)^T], x ~ p, in the parameters above, in
    closed form. Categorical in logits z: grad_z log p_a = e_a - p, whose second moment is
    diag(p) - p p^T. Diagonal Gaussian in (mu, log sigma): with u = (x - mu) / sigma the scores
    are u / sigma and u^2 - 1, so E = 1 / sigma^2, E[(u^2 - 1)^2] = 2 and E[u (u^2 - 1)] / sigma
    = 0: diag(1 / sigma^2) for the mean, 2 I for the log std, nothing between them."""
    if isinstance(dist, torch.distributions.Categorical):
        p = dist.probs
        return torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    variance = dist.variance
    return torch.diag_embed(torch.cat([1 / variance, torch.full_like(variance, 2.0)], dim=-1))


def _fisher_matrix(actor: torch.nn.Module, obs: torch.Tensor) -> torch.Tensor:
    # Categorical normalises its logits (z - logsumexp z), which changes J by (I - 1 p^T); since
    # (diag(p) - p p^T) 1 = 0, J^T M J is the same for the raw and the normalised logits
    f, theta = _of_flat_parameters(actor, obs, _distribution_parameters)
    jacobian = torch.autograd.functional.jacobian(f, theta, vectorize=True)  # [batch, k, P]
    with torch.no_grad():
        M = _fisher_in_distribution_parameters(actor(obs))
    return torch.einsum("bkp,bkl,blq->pq", jacobian, M, jacobian) / len(obs)


@pytest.fixture
def fisher_matrix():
    """fisher_matrix(actor, obs) -> F [P, P], P the actor's parameters flattened in
    actor.parameters() order: F = (1/B) sum_b J_b^T M_b J_b, the Fisher information of pi_theta
    averaged over the batch of states. J_b is the Jacobian of state b's distribution parameters
    (logits; or mean and log std) with respect to theta; M_b the Fisher information of the
    distribution family in those parameters, written in closed form. No KL is differentiated on
    the way, so F is an independent reference for what the scripts obtain as the Hessian of
    their mean KL at theta = theta' [TRPO: Enforce the Constraint Exactly]."""
    return _fisher_matrix
