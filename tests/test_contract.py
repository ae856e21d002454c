"""Every hook is documented in the README and exercised by a test; the front door is true."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import textwrap
from pathlib import Path

import pytest

from facerecon.core import hookspecs

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


def _is_hookimpl(decorator: ast.expr) -> bool:
    return (isinstance(decorator, ast.Name) and decorator.id == "hookimpl") or (
        isinstance(decorator, ast.Attribute) and decorator.attr == "hookimpl"
    )


def _registered_hooks(tree: ast.Module, registered_modules: set[str], stem: str) -> set[str]:
    """Hooks implemented in ``tree`` by a plugin that the tests register: a class whose
    instance goes to ``register(...)``, a module registered or installed as an entry point,
    or plugin source text handed to a call (written out as an installed plugin)."""
    instances: dict[str, str] = {}  # variable -> class it holds an instance of
    registered: set[str] = set()  # names (classes, variables, modules) passed to register
    passed: set[str] = set()  # names passed to any call
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            func = node.value.func
            if isinstance(func, ast.Name):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        instances[target.id] = func.id
        if isinstance(node, ast.Call):
            names = [a.id for a in node.args if isinstance(a, ast.Name)]
            passed.update(names)
            if isinstance(node.func, ast.Attribute) and node.func.attr == "register":
                for arg in node.args[:1]:
                    if isinstance(arg, ast.Name):
                        registered.update({arg.id, instances.get(arg.id, "")})
                    elif isinstance(arg, ast.Call) and isinstance(arg.func, ast.Name):
                        registered.add(arg.func.id)
    hooks: set[str] = set()

    def impls(body: list[ast.stmt]) -> set[str]:
        return {
            f.name
            for f in body
            if isinstance(f, ast.FunctionDef) and any(map(_is_hookimpl, f.decorator_list))
        }

    if stem in registered_modules:
        hooks |= impls(tree.body)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name in registered:
            hooks |= impls(node.body)
        # plugin source text, installed by the test as a third-party distribution
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
            and "@hookimpl" in node.value.value
            and any(isinstance(t, ast.Name) and t.id in passed for t in node.targets)
        ):
            hooks |= impls(ast.parse(textwrap.dedent(node.value.value)).body)
    return hooks


def _exercised_hooks() -> set[str]:
    files = {p.stem: p.read_text() for p in (ROOT / "tests").glob("*.py")}
    trees = {stem: ast.parse(text) for stem, text in files.items()}
    # modules the tests register in code (pm.register(tiny_model)) or as entry points
    modules = {
        arg.id
        for tree in trees.values()
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "register"
        for arg in node.args[:1]
        if isinstance(arg, ast.Name)
    }
    modules |= set(re.findall(r"= tests\.(\w+)", files["entry_points"]))
    return {
        hook
        for stem, tree in trees.items()
        if stem != "test_contract"
        for hook in _registered_hooks(tree, modules, stem)
    }


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_exercised_by_a_test(hook):
    # an implementation only counts when a test registers (or installs) its plugin
    assert hook in _exercised_hooks()


def test_an_unregistered_implementation_does_not_count():
    tree = ast.parse(
        "class Quiet:\n    @hookimpl\n    def after_run(self, context): pass\n"
        "class Loud:\n    @hookimpl\n    def before_run(self, context): pass\n"
        "loud = Loud()\nplugin_manager().register(loud)\n"
    )
    assert _registered_hooks(tree, set(), "test_x") == {"before_run"}


def _ci_command_lines() -> list[str]:
    """The lines .ci/run executes (comments and blank lines dropped)."""
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    command = readme.split("<!-- test-command -->", 1)[1].split("\n")[2]
    assert command == "python -m pip install -e '.[test]' && python -m pytest"
    code = _ci_command_lines()
    # the line that reads the command: run it as CI does and compare with the README's
    (reader,) = [line for line in code if line.startswith("cmd=$(") and line.endswith(")")]
    assert "README.md" in reader
    read = subprocess.run(
        ["bash", "-c", reader[len("cmd=$(") : -1]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert read.stdout.strip() == command
    assert 'bash -c "$cmd"' in code  # and CI runs what it read
