"""Start images from the template's nearest strangers (``init.nearest``), checked against
a brute-force computation in plain numpy and Keras."""

from __future__ import annotations

import math

import numpy as np
import pytest
import skimage.io

from facerecon import FaceChip
from facerecon.core.errors import FaceReconError
from facerecon.engine.runner import prepare
from facerecon.engine.validation import validate
from facerecon.faces import embedding
from facerecon.faces import photos as faces
from facerecon.faces.neighbours import Strangers, collection_index, nearest, nearest_means
from facerecon.faces.photos import resize

from .tiny_model import TinyModel


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
    with pytest.raises(FaceReconError) as info:
        nearest(np.array([[1.0, 0, 0]]), rows, 3, 0.5)
    assert str(info.value) == (
        "init.nearest: 3 wanted, but the collection has only 2 faces the model calls other "
        "people; lower init.nearest or use a larger collection"
    )


def test_exactly_as_many_strangers_as_wanted_is_enough():
    rows = np.eye(3, dtype=np.float32)
    (pick,) = nearest(np.array([[1.0, 0, 0]]), rows, 2, 0.5)
    assert sorted(pick) == [1, 2]


def test_a_face_exactly_at_the_threshold_is_the_person_not_a_stranger():
    # the thresholds accept a pair at cosine >= t, so a cosine of exactly t is no stranger;
    # every cosine here is exact in binary (the template's norm is 2)
    rows = np.array([[0.5, 0.75, 0], [0.25, 0, 0.5], [0, 1, 0], [0.5, 0, 0.75]], np.float32)
    (pick,) = nearest(np.array([[2.0, 0, 0]]), rows, 2, 0.5)
    assert list(pick) == [1, 2]


def test_equally_close_strangers_keep_the_collections_order():
    # forty faces at four distinct cosines (exact in binary): ties are broken by position
    rng = np.random.default_rng(5)
    c = rng.permutation(np.repeat([0.125, 0.25, 0.375, 0.5], 10))
    s = np.sqrt(1 - c**2)
    rows = np.zeros((40, 4))
    rows[:, 0] = c
    rows[np.arange(40), rng.integers(1, 4, 40)] = s * rng.choice([-1, 1], 40)
    (pick,) = nearest(np.array([[3.0, 0, 0, 0]]), rows.astype(np.float32), 25, 0.45)
    assert list(pick) == brute_force([3.0, 0, 0, 0], rows.astype(np.float32), 25, 0.45)
    assert list(pick[:10]) == sorted(np.flatnonzero(c == 0.375))


def closest_first(template, rows, k, below):
    # the collection's rows are unit embeddings: the cosine is the dot with the unit template
    norm = math.sqrt(math.fsum(float(a) * float(a) for a in template))
    scored = []
    for i, row in enumerate(rows):
        cosine = math.fsum(float(a) * float(b) for a, b in zip(template, row, strict=True)) / norm
        if cosine < below:
            scored.append((-cosine, i))
    return [i for _, i in sorted(scored)[:k]]


def test_single_precision_templates_are_ranked_in_double_precision():
    # faces whose cosines to a template are 1e-8 apart: single precision would reorder them
    rng = np.random.default_rng(13)
    templates = (3 * rng.standard_normal((4, 16))).astype(np.float32)
    rows = []
    for template in templates.astype(np.float64):
        direction = template / np.linalg.norm(template)
        across = rng.standard_normal((8, 16))
        across -= (across @ direction)[:, None] * direction
        across /= np.linalg.norm(across, axis=1, keepdims=True)
        c = 0.9 + 1e-8 * np.arange(8)[:, None]
        rows.append(c * direction + np.sqrt(1 - c**2) * across)
    rows = np.concatenate(rows).astype(np.float32)
    picks = nearest(templates, rows, 8, 0.95)
    for template, pick in zip(templates, picks, strict=True):
        assert list(pick) == closest_first(template, rows, 8, 0.95)


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
    init = context.init
    np.testing.assert_allclose(init[0], expected, atol=1e-5)
    assert not np.allclose(init[2], expected, atol=1e-3)  # the second target's own mean
    assert np.abs(init[1] - expected).max() > 0  # restart 1: noise around the same start
    # the second call reads the collection from the cache, not the photos
    monkeypatch.setattr(faces, "each_image", lambda *a, **k: iter(photos))
    (cached,) = (tmp_path / "cache" / "neighbours").iterdir()
    assert cached.name.startswith("tiny-calibrated-")  # a model's files are named after it
    np.testing.assert_allclose(prepare(spec)[0].init[0], expected, atol=1e-5)


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
    with pytest.raises(FaceReconError) as info:
        prepare(spec)
    assert str(info.value) == (
        "init.nearest: model 'tiny' has no calibrated thresholds, so its nearest faces could be "
        "the person themselves; use a calibrated model or drop init.nearest"
    )


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


class Cropping(TinyModel):
    """The tiny network behind a 'detector' that crops the middle of a photo, and finds no
    face in a black one: aligned and whole chips differ, and some photos have no face."""

    name = "tiny-cropping"
    thresholds = {"1e-2": 0.95, "1e-3": 0.97}

    def align(self, photo: np.ndarray) -> list[FaceChip]:
        if photo.max() < 0.05:
            return []
        h, w = photo.shape[:2]
        box = (w // 4, h // 4, w - w // 4, h - h // 4)
        return [FaceChip(resize(photo[box[1] : box[3], box[0] : box[2]], 32), box)]


def blocks(seed):
    # coarse colour blocks: photos that even a tiny network tells apart
    rng = np.random.default_rng(seed)
    return (np.kron(rng.random((4, 4, 3)), np.ones((10, 10, 1))) * 255).astype(np.uint8)


def crowd(folder, count, black=()):
    """A folder of photos (p00.png, ...), black where asked; the photos as floats."""
    folder.mkdir()
    photos = []
    for i in range(count):
        image = np.zeros((40, 40, 3), np.uint8) if i in black else blocks(100 + i)
        skimage.io.imsave(folder / f"p{i:02d}.png", image, check_contrast=False)
        photos.append(image.astype(np.float32) / 255)
    return photos


def embedded(chips):
    rows = np.asarray(Cropping().network()(np.stack(chips)), np.float64)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def middle(photo):
    return resize(photo[10:30, 10:30], 32)


def test_a_folder_is_indexed_face_by_face_32_at_a_time(tmp_path, monkeypatch):
    photos = crowd(tmp_path / "crowd", 41, black={3, 40})
    model = Cropping()
    batches = []
    forward = embedding.forward_for(model)

    class Counting:
        def numpy(self, chips):
            batches.append(len(chips))
            return forward.numpy(chips)

    monkeypatch.setattr(embedding, "forward_for", lambda m: Counting())
    # relative to base_dir, not to the working directory
    index = collection_index(model, "crowd", True, tmp_path)
    faces_at = [i for i in range(41) if i not in {3, 40}]
    assert batches == [32, 7]
    assert index["images"].tolist() == faces_at
    assert index["embeddings"].dtype == np.float32
    expected = embedded([middle(photos[i]) for i in faces_at])
    np.testing.assert_allclose(index["embeddings"], expected, atol=1e-5)

    # unaligned, every photo is used whole, black ones included
    index = collection_index(model, "crowd", False, tmp_path)
    assert index["images"].tolist() == list(range(41))
    expected = embedded([resize(p, 32) for p in photos])
    np.testing.assert_allclose(index["embeddings"], expected, atol=1e-5)


def test_a_collection_without_a_face_is_one_line(tmp_path):
    crowd(tmp_path / "crowd", 2, black={0, 1})
    with pytest.raises(FaceReconError) as info:
        collection_index(Cropping(), "crowd", True, tmp_path)
    assert str(info.value) == "crowd: no face found by tiny-cropping in any of its images"


def test_strangers_of_a_folder_give_the_mean_of_their_aligned_chips(tmp_path):
    photos = crowd(tmp_path / "crowd", 12, black={4})
    model = Cropping()
    templates = np.asarray(model.network()(np.stack([middle(blocks(s) / 255) for s in (7, 8)])))
    faces_at = [i for i in range(12) if i != 4]
    aligned = embedded([middle(photos[i]) for i in faces_at])
    whole = embedded([resize(photos[i], 32) for i in faces_at])
    expected = []
    for template in templates:
        chosen = [faces_at[i] for i in brute_force(template, aligned, 3, 0.95)]
        expected.append(np.mean([middle(photos[i]) for i in chosen], axis=0))
        # the fixture tells aligned from whole chips apart: they pick other strangers
        assert sorted(chosen) != sorted(faces_at[i] for i in brute_force(template, whole, 3, 0.95))
    strangers = Strangers(model, "crowd", True, 3, tmp_path)
    means = strangers.means(templates)
    assert means.dtype == np.float32
    np.testing.assert_allclose(means, np.stack(expected), atol=1e-5)
    again = nearest_means(model, "crowd", True, templates, 3, tmp_path)
    assert again.dtype == np.float32
    np.testing.assert_allclose(again, np.stack(expected), atol=1e-5)

    # a photo that lost its face after indexing is named by its source when read
    stale = Strangers(model, "crowd", True, 3, tmp_path)
    skimage.io.imsave(
        tmp_path / "crowd" / "p05.png", np.zeros((40, 40, 3), np.uint8), check_contrast=False
    )
    with pytest.raises(FaceReconError, match=r"^crowd: no face found by tiny-cropping's"):
        stale.preload()
