"""The house's layers: each package of facerecon imports only from those below it, the host
never imports a plugin, the bottom layer runs without TensorFlow, and the installed package
list is the folders on disk."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: facerecon's packages from the bottom up; a module may import its own package or lower ones
LAYERS = ["core", "tracking", "ops", "graphs", "faces", "judges", "engine", "evaluation", "top"]
#: the modules at the top of facerecon/ (the package's own __init__ is the face of core)
TOP = {"api", "console", "cli"}


def layer(module: str) -> str:
    """The layer of a facerecon module, from its dotted name."""
    parts = module.split(".")
    if parts == ["facerecon"]:
        return "core"
    return "top" if parts[1] in TOP else parts[1]


def imports(path: Path, module: str) -> list[tuple[int, str]]:
    """Every module that ``path`` imports (at any depth: inside functions too), resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                # `from facerecon import faces` names a module; `from facerecon import Params`
                # a name of facerecon/__init__.py, which is core's face
                candidate = f"{base}.{alias.name}"
                found.append((node.lineno, candidate if _is_module(candidate) else base))
    return found


def _is_module(name: str) -> bool:
    if not name.startswith("facerecon."):
        return False
    rel = Path(*name.split(".")[1:])
    host = ROOT / "facerecon" / rel
    return host.with_suffix(".py").exists() or (host / "__init__.py").exists()


def host_modules(root: Path) -> dict[str, Path]:
    """facerecon's modules by dotted name."""
    out = {}
    for path in sorted((root / "facerecon").rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def violations(root: Path) -> list[str]:
    """One line per import that runs up the layers or from the host into a plugin."""
    found = []
    for module, path in host_modules(root).items():
        mine = LAYERS.index(layer(module))
        for line, target in imports(path, module):
            where = f"{path.relative_to(root)}:{line}"
            if target.split(".")[0] == "facerecon_plugins":
                found.append(f"{where}: the host imports the plugin {target}")
            elif target.split(".")[0] == "facerecon" and LAYERS.index(layer(target)) > mine:
                found.append(f"{where}: {layer(module)} imports {target} ({layer(target)})")
    return found


def test_every_import_of_the_host_runs_down_the_layers_and_none_reaches_a_plugin():
    assert violations(ROOT) == []


def test_the_check_catches_an_upward_import_and_a_plugin_import(tmp_path):
    for path in host_modules(ROOT).values():
        target = tmp_path / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    kinds = tmp_path / "facerecon" / "core" / "kinds.py"
    kinds.write_text(kinds.read_text() + "\ndef _f():\n    from facerecon.engine import runner\n")
    photos = tmp_path / "facerecon" / "faces" / "photos.py"
    photos.write_text(photos.read_text() + "\nimport facerecon_plugins.models.facenet\n")
    found = violations(tmp_path)
    assert len(found) == 2
    assert found[0].startswith("facerecon/core/kinds.py:") and "engine" in found[0]
    assert "the host imports the plugin facerecon_plugins.models.facenet" in found[1]


def test_the_top_of_the_package_holds_at_most_a_dozen_modules():
    top = [p.name for p in (ROOT / "facerecon").iterdir() if p.suffix == ".py"]
    assert len(top) <= 12, top
    assert {p.stem for p in (ROOT / "facerecon").glob("*.py")} - {"__init__"} <= TOP


def test_the_bottom_layer_imports_no_tensorflow():
    core = sorted(
        m for m in host_modules(ROOT) if m == "facerecon" or m.startswith("facerecon.core")
    )
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in core)
        + "heavy = sorted(m for m in ('tensorflow', 'keras', 'mlflow') if m in sys.modules)\n"
        + "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize(
    "folder, name", [("facerecon", "facerecon"), ("plugins", "facerecon_plugins")]
)
def test_every_package_folder_is_installed(folder, name):
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    on_disk = {
        ".".join((name, *p.parent.relative_to(ROOT / folder).parts))
        for p in (ROOT / folder).rglob("__init__.py")
    }
    assert on_disk == {p for p in listed if p.split(".")[0] == name}


def test_the_old_import_paths_are_the_moved_modules():
    from facerecon.core.moved import MOVED

    code = (
        "import importlib, sys\n"
        f"moved = {dict(sorted(MOVED.items()))!r}\n"
        "for old, new in moved.items():\n"
        "    assert importlib.import_module(old) is importlib.import_module(new), old\n"
        "from facerecon.tracking import tracking_uri\n"
        "from facerecon.tracking.store import tracking_uri as same\n"
        "assert tracking_uri is same\n"
        "from facerecon.faces import chip\n"
        "from facerecon.faces.photos import chip as same\n"
        "assert chip is same\n"
        "print(len(moved))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[-1]) == len(MOVED) > 30


def test_a_module_runs_from_its_old_path():
    old = [sys.executable, "-m", "facerecon_plugins.feedforward.frames", "--help"]
    out = subprocess.run(old, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Write a pose-sequence stand-in for a clip" in out.stdout
