"""The test plugins as a real installed distribution, for processes the tests do not
control in code (spawned workers, Ray workers, the CLI in a subprocess)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def plugin_site(folder: Path) -> Path:
    """A site folder holding an ``fr-tests`` distribution whose ``facerecon`` entry points
    are the tiny model and the exploding solver; put it (and ROOT) on the worker's path."""
    info = folder / "site" / "fr_tests-0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fr-tests\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[facerecon]\ntiny = tests.tiny_model\nexploding = tests.exploding_solver\n"
    )
    return info.parent
