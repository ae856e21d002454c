"""Every hook is documented in the README and exercised by a test; the front door is true."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from facerecon import hookspecs

ROOT = Path(__file__).resolve().parent.parent
HOOKS = [
    name
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
    if hasattr(fn, "facerecon_spec")
]


def test_the_hooks():
    assert sorted(HOOKS) == sorted(
        [
            "register_models",
            "register_metrics",
            "register_regularizers",
            "register_solvers",
            "register_transforms",
            "register_parameterizations",
            "register_detectors",
            "before_run",
            "after_step",
            "after_run",
            "on_error",
            "before_sweep",
            "after_variant",
            "after_sweep",
        ]
    )


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented_with_its_signature(hook):
    readme = (ROOT / "README.md").read_text()
    params = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
    assert f"#### `{hook}({params})`" in readme


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_exercised_by_a_test(hook):
    sources = [
        p.read_text() for p in (ROOT / "tests").glob("test_*.py") if p.name != "test_contract.py"
    ]
    assert any(re.search(rf"\b(def|hookimpl\s+def)\s+{hook}\b", s) for s in sources)


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    command = readme.split("<!-- test-command -->", 1)[1].split("\n")[2]
    assert command == "python -m pip install -e '.[test]' && python -m pytest"
    assert "<!-- test-command -->" in (ROOT / ".ci" / "run").read_text()
