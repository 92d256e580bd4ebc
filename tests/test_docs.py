"""The README's table of equations points at tests and code that exist.

A renamed test or function would otherwise leave the table naming something that is gone.
"""

import ast
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ["vpg", "trpo", "ppo_clip", "ppo_kl", "grpo", "grpo_text", "gae"]
README = (REPO_ROOT / "README.md").read_text()
TABLE = README.split("## The article, the code and the test of each equation")[1].split("\n## ")[0]
ROWS = [line for line in TABLE.splitlines() if line.startswith("| ") and "`" in line]


def named_tests(row: str) -> list[tuple[str, str]]:
    """(test file, test name) for each `file.py::name` of a row; `::name` means the file before."""
    tests, file = [], None
    for path, name in re.findall(r"`(test_\w+\.py)?::(\w+)`", row):
        file = path or file
        tests.append((file, name))
    return tests


def test_the_table_names_a_test_in_every_row():
    assert len(ROWS) > 20
    assert all(named_tests(row) for row in ROWS)


def test_every_test_the_readme_names_exists():
    missing = [f"{file}::{name}" for row in ROWS for file, name in named_tests(row)
               if not re.search(rf"^def {name}\(", (REPO_ROOT / "tests" / file).read_text(),
                                re.MULTILINE)]
    assert not missing


def top_level_names(script: str) -> set[str]:
    """The functions and classes a script defines, read from its source (no import, so that
    plots/grpo_text.py, on sys.path in other test files, cannot stand in for grpo_text.py)."""
    tree = ast.parse((REPO_ROOT / f"{script}.py").read_text())
    return {node.name for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.ClassDef))}


def test_every_function_the_readme_names_is_in_its_script():
    """A code cell `script.py`: `name` names that script's function; a bare `name`, a function of
    some script (the table's "same" rows carry the script over); the `x` column is a CSV's."""
    names = {script: top_level_names(script) for script in SCRIPTS}
    missing = []
    for row in ROWS:
        code = re.sub(r"the `\w+` column", "", row.split(" | ")[2])
        script = re.match(r"`(\w+)\.py`", code)
        known = names[script[1]] if script else set().union(*names.values())
        missing += [name for name in re.findall(r"`([a-z_]+)`", code) if name not in known]
    assert not missing
