"""Start images from the template's nearest strangers (``init.nearest``), checked against
a brute-force computation in plain numpy and Keras."""

from __future__ import annotations

import numpy as np
import pytest

from facerecon.core.errors import FaceReconError
from facerecon.engine.runner import prepare
from facerecon.engine.validation import validate
from facerecon.faces import photos as faces
from facerecon.faces.neighbours import nearest


def brute_force(template, rows, k, below):
    scored = []
    for i, row in enumerate(rows):
        cosine = sum(a * b for a, b in zip(template, row, strict=True)) / (
            np.sqrt(sum(a * a for a in template)) * np.sqrt(sum(b * b for b in row))
        )
        if cosine < below:
            scored.append((-cosine, i))
    return [i for _, i in sorted(scored)[:k]]


def test_nearest_strangers_match_a_brute_force_search():
    rng = np.random.default_rng(3)
    rows = rng.standard_normal((60, 5))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    templates = 2.5 * rng.standard_normal((4, 5))  # not unit: only directions count
    templates[0] = 1.7 * rows[11]  # the collection's own photo: cosine 1, never a stranger
    picks = nearest(templates, rows.astype(np.float32), 7, 0.6)
    for template, pick in zip(templates, picks, strict=True):
        assert list(pick) == brute_force(template, rows, 7, 0.6)
    assert 11 not in picks[0]


def test_too_few_strangers_is_one_line():
    rows = np.eye(3, dtype=np.float32)
    with pytest.raises(FaceReconError, match=r"^init\.nearest: 3 wanted, but .* only 2 faces"):
        nearest(np.array([[1.0, 0, 0]]), rows, 3, 0.5)


def test_a_run_starts_from_the_mean_of_the_nearest_strangers(tmp_path, monkeypatch, calibrated):
    monkeypatch.setenv("FACERECON_CACHE_DIR", str(tmp_path / "cache"))
    photos = faces.read_images("builtin:lfw")
    chips = np.stack([faces.resize(faces.as_rgb(p), 32) for p in photos])
    network = calibrated().network()
    rows = np.asarray(network(chips))
    target = rows[5]  # lfw/5 is in the collection: it must not start from itself
    cosines = rows @ target / np.linalg.norm(rows, axis=1) / np.linalg.norm(target)
    below = float(np.quantile(cosines, 0.7))  # 30% of the faces count as the person
    monkeypatch.setattr(calibrated, "thresholds", {"1e-2": below, "1e-3": below + 0.01})
    expected = chips[brute_force(target, rows, 9, below)].mean(axis=0)

    spec = validate(
        {
            "name": "t",
            "model": {"name": "tiny-calibrated"},
            "targets": [{"image": "builtin:lfw/5", "align": False}, {"image": "builtin:lfw/7"}],
            "init": {"kind": "mean", "images": "builtin:lfw", "nearest": 9},
            "restarts": 2,
            "tracking": {"enabled": False},
            "judges": {"models": [], "detector": None},
        }
    )
    context, _, _ = prepare(spec)
    init = context.extras["init"]
    np.testing.assert_allclose(init[0], expected, atol=1e-5)
    assert not np.allclose(init[2], expected, atol=1e-3)  # the second target's own mean
    assert np.abs(init[1] - expected).max() > 0  # restart 1: noise around the same start
    # the second call reads the collection from the cache, not the photos
    monkeypatch.setattr(faces, "each_image", lambda *a, **k: iter(photos))
    assert len(list((tmp_path / "cache" / "neighbours").iterdir())) == 1
    np.testing.assert_allclose(prepare(spec)[0].extras["init"][0], expected, atol=1e-5)


def test_a_model_without_thresholds_cannot_pick_strangers(tmp_path, monkeypatch):
    monkeypatch.setenv("FACERECON_CACHE_DIR", str(tmp_path / "cache"))
    spec = validate(
        {
            "name": "t",
            "model": {"name": "tiny"},
            "targets": [{"image": "builtin:lfw/5", "align": False}],
            "init": {"kind": "mean", "images": "builtin:lfw", "nearest": 4},
            "tracking": {"enabled": False},
            "judges": {"models": [], "detector": None},
        }
    )
    with pytest.raises(FaceReconError, match=r"^init\.nearest: model 'tiny' has no calibrated"):
        prepare(spec)


def test_nearest_goes_with_the_mean_face_only():
    with pytest.raises(FaceReconError) as info:
        validate(
            {
                "name": "t",
                "model": {"name": "tiny"},
                "targets": [{"image": "builtin:astronaut"}],
                "init": {"kind": "noise", "nearest": 4},
            }
        )
    (line,) = info.value.lines
    assert line.startswith("init: ") and "`nearest` goes with kind: mean" in line
