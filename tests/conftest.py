"""Shared fixtures for the tests of every algorithm script.

The repository root goes on sys.path, so a test file imports its script directly
(`import ppo_clip`). The helpers below are offered as fixtures, so that the test files for
vpg.py, trpo.py, ppo_clip.py and ppo_kl.py use one copy of each:

    run_script(script, *args)       run `python <script> args...` in a fresh folder;
                                    returns (returncode, stdout, stderr)
    assert_clean_error(result)      exit status 2, exactly one non-empty stderr line, no traceback
    read_csv(path)                  {column: float array}, in the file's column order
    assert_run_folder(run_dir, args, own_columns)
                                    config.json, episodes.csv and updates.csv as DESIGN.md documents
    rows_without_column(path, name) the CSV's lines with one column cut out (byte comparison)
    gae_by_definition(...)          A_t = sum_l (gamma lambda)^l delta_{t+l}, term by term
    monte_carlo_kl(old, new, n)     sample estimate of KL(old || new) and its standard error
"""

import csv
import json
import math
import subprocess
import sys
from dataclasses import asdict, fields
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

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


def _assert_clean_error(result: ScriptResult, status: int = 2) -> str:
    """The DESIGN.md contract for bad input; return the one error line."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == status, result
    assert len(result.stderr_lines) == 1, result.stderr
    return result.stderr_lines[0]


@pytest.fixture
def assert_clean_error():
    return _assert_clean_error


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
    assert set(config) == {f.name for f in fields(args)} | {"versions"}
    assert {k: config[k] for k in asdict(args)} == json.loads(json.dumps(asdict(args)))

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
    assert all(math.isfinite(kl) and kl >= 0 for kl in updates["kl"]), updates["kl"]


@pytest.fixture
def assert_run_folder():
    """Check a run folder against DESIGN.md's table: config.json holds every Args field and the
    versions; the CSVs have exactly the documented columns; one update row per iteration; the
    exact KL is finite and non-negative."""
    return _assert_run_folder


def _rows_without_column(path: Path, name: str) -> list[list[str]]:
    with open(path, newline="") as file:
        header, *rows = list(csv.reader(file))
    drop = header.index(name)
    return [row[:drop] + row[drop + 1:] for row in [header, *rows]]


@pytest.fixture
def rows_without_column():
    """The CSV's rows as strings with one column cut out, for byte-for-byte comparison of runs
    (wall_time and sps differ between two runs of the same seed; nothing else may)."""
    return _rows_without_column


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
    """The GAE sum of DESIGN.md written out as a double loop, the reference for compute_gae."""
    return _gae_by_definition


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
