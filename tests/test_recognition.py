"""Recognition on real LFW photos: identity ranking, thresholds, embedding invariants."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from facesearch import load_image
from facesearch.models.calibration import load_calibration

from .conftest import PEOPLE

PHOTOS = [name for pair in PEOPLE.values() for name in pair]


@pytest.fixture(scope="module")
def embeddings(lfw, embedding_of) -> dict[str, np.ndarray]:
    return {name: embedding_of(lfw(name)) for name in PHOTOS}


def _person(photo: str) -> str:
    return photo.rsplit("_", 1)[0]


def _pairs(embeddings):
    same, different = {}, {}
    for a, b in itertools.combinations(PHOTOS, 2):
        score = float(np.dot(embeddings[a], embeddings[b]))
        (same if _person(a) == _person(b) else different)[(a, b)] = score
    return same, different


def test_pairs_cover_every_combination(embeddings):
    same, different = _pairs(embeddings)
    assert len(same) == len(PEOPLE)
    assert len(different) == len(PHOTOS) * (len(PHOTOS) - 1) // 2 - len(PEOPLE)


def test_same_person_outscores_every_different_person_pair(embeddings):
    same, different = _pairs(embeddings)
    worst_same = min(same, key=same.get)
    best_different = max(different, key=different.get)
    assert same[worst_same] > different[best_different], (worst_same, same[worst_same],
                                                          best_different, different[best_different])


def test_scores_fall_on_the_right_side_of_the_verify_threshold(embeddings):
    same, different = _pairs(embeddings)
    # The calibrated 1:1 threshold once one ships with the pack, else the generic ArcFace 0.4
    # that `verify` falls back to; either way, clean photos must land clearly on their side.
    calibration = load_calibration("buffalo_s")
    threshold = calibration.verify_threshold if calibration is not None else 0.4
    for pair, score in same.items():
        assert score > max(threshold, 0.4), (pair, score)
    for pair, score in different.items():
        assert score < min(threshold, 0.3), (pair, score)


def test_embedding_is_512d_unit_float32(embeddings):
    for name, vector in embeddings.items():
        assert vector.dtype == np.float32, name
        assert vector.shape == (512,), name
        assert np.isfinite(vector).all(), name
        assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5, name


def test_embedding_is_deterministic(lfw, analyzer):
    image = load_image(lfw("George_W_Bush_0001"))
    first = analyzer.analyze(image)
    second = analyzer.analyze(image.copy())
    assert len(first) == len(second) >= 1
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a.embedding, b.embedding)
        assert a.box == b.box


def test_batch_matches_single(lfw, analyzer):
    paths = [lfw(name) for name in PHOTOS]
    batched = analyzer.analyze_batch(paths)
    assert len(batched) == len(paths)
    for path, faces in zip(paths, batched, strict=True):
        single = analyzer.analyze(path)
        assert len(faces) == len(single) >= 1, path.name
        for a, b in zip(faces, single, strict=True):
            np.testing.assert_allclose(a.embedding, b.embedding, atol=1e-5, err_msg=path.name)
            np.testing.assert_allclose(a.box, b.box, atol=1e-3, err_msg=path.name)


def test_embed_crops_batch_matches_single(lfw, analyzer):
    from facesearch.pipeline.align import align_face

    crops = []
    for name in PHOTOS:
        image = load_image(lfw(name))
        dets = analyzer.detector.detect(image)
        assert len(dets) >= 1, name
        crops.append(align_face(image, dets.landmarks[0]))
    crops = np.stack(crops)
    batch = analyzer.embed_crops(crops)
    assert batch.shape == (len(crops), 512)
    for i, crop in enumerate(crops):
        one = analyzer.embed_crops(crop[None])
        np.testing.assert_allclose(batch[i], one[0], atol=1e-5)


def test_face_similarity_matches_dot_product(lfw, primary):
    a = primary(lfw("Colin_Powell_0001"))
    b = primary(lfw("Colin_Powell_0002"))
    assert a.similarity(b) == pytest.approx(float(np.dot(a.embedding, b.embedding)), abs=1e-6)
    assert a.similarity(a) == pytest.approx(1.0, abs=1e-5)


def test_primary_face_is_the_large_central_one(two_people, analyzer, embedding_of, lfw):
    from facesearch.pipeline import choose_face, primary_face

    image = load_image(two_people)
    faces = analyzer.analyze(image)
    assert len(faces) == 2
    main = primary_face(faces, image.shape)
    other = next(f for f in faces if f is not main)
    assert main.width > other.width
    powell, bush = embedding_of(lfw("Colin_Powell_0002")), embedding_of(lfw("George_W_Bush_0002"))
    assert float(np.dot(main.embedding, powell)) > 0.4 > float(np.dot(main.embedding, bush))
    assert float(np.dot(other.embedding, bush)) > 0.4 > float(np.dot(other.embedding, powell))
    chosen, rule = choose_face(faces, image.shape, str(two_people))
    assert chosen is main and "largest and most central" in rule
    chosen, rule = choose_face(faces, image.shape, str(two_people), other.index)
    assert chosen is other
