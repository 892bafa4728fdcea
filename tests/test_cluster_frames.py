"""Cannot-link for photos and video frames: two faces of one photo, or of one video frame, are two
people (siblings, twins, a poster behind someone) and never share a cluster, in a batch run and
in an incremental one; faces of one video at different times (one person's track) still may.

Faces are synthetic embeddings stored through the catalog as ingest stores them (a photo row or a
video row with timed faces); the hard case is one person twice: two nearly identical faces.
"""

from __future__ import annotations

import hashlib
from itertools import count

import numpy as np
import pytest

from facesearch.catalog import CatalogError, NewFace
from facesearch.catalog.clusters import shot_key
from facesearch.services.clusters import Clusters
from facesearch.services.engine import Engine
from tests.conftest import unit_vectors
from tests.test_clusters import placement, unit

NOISE = 0.02  # within-person noise per dimension: cosine about 0.8, far above any clustering threshold
_serial = count()


def _like(rng, centre: np.ndarray, n: int) -> np.ndarray:
    return unit(centre[None, :] + NOISE * rng.standard_normal((n, len(centre))))


def _collection(engine: Engine, name: str) -> int:
    try:
        return engine.collection(name).id
    except CatalogError:
        return engine.create_collection(name, "synthetic test faces").id


def _face(i: int, vector: np.ndarray, timestamp_s: float | None = None, track: int | None = None) -> NewFace:
    return NewFace(i, (10.0 + 100 * i, 10.0, 90.0 + 100 * i, 90.0), [[30, 40], [70, 40], [50, 55], [35, 70],
                                                                     [65, 70]], 0.9, 0.9, (), vector, None,
                   timestamp_s=timestamp_s, track_id=track)


def add_photo(engine: Engine, vectors: np.ndarray) -> list[int]:
    """One photo showing every face of ``vectors``."""
    n = next(_serial)
    return engine.catalog.add_image(_collection(engine, "c"), hashlib.sha256(f"p{n}".encode()).hexdigest(),
                                    f"/synthetic/{n}.jpg", 400, 100, 1,
                                    [_face(i, v) for i, v in enumerate(vectors)], engine.config.pack)


def add_video(engine: Engine, frames: list[np.ndarray]) -> list[list[int]]:
    """One video: frame k (at k seconds) shows the faces ``frames[k]``, face i on track i.
    Returns the face ids per frame."""
    n = next(_serial)
    faces = [_face(i, v, float(k), i) for k, vectors in enumerate(frames) for i, v in enumerate(vectors)]
    ids = engine.catalog.add_image(_collection(engine, "c"), hashlib.sha256(f"v{n}".encode()).hexdigest(),
                                   f"/synthetic/{n}.mp4", 400, 100, 1, faces, engine.config.pack, media="video",
                                   duration_s=float(len(frames)))
    out, it = [], iter(ids)
    for vectors in frames:
        out.append([next(it) for _ in vectors])
    return out


def assert_apart(where: dict[int, int | None], together: list[list[int]]) -> None:
    """No two faces of one photo or frame share a cluster."""
    for faces in together:
        clusters = [where[f] for f in faces if where[f] is not None]
        assert len(clusters) == len(set(clusters)), (faces, [where[f] for f in faces])


def test_shot_keys_separate_photos_frames_and_videos():
    assert shot_key(7, None) == 7
    assert shot_key(7, 1.0) == shot_key(7, 1.0004)  # one frame
    keys = {shot_key(7, None), shot_key(7, 1.0), shot_key(7, 2.0), shot_key(8, 1.0)}
    assert len(keys) == 4 and all(k >= 0 for k in keys)  # >= 0: the clustering treats them as known


@pytest.mark.parametrize("incremental", [False, True], ids=["batch", "incremental"])
def test_one_photo_or_frame_never_in_one_cluster_but_a_track_is(engine, incremental):
    rng = np.random.default_rng(5)
    twin, other = unit_vectors(rng, 2)
    if incremental:  # the person is known from photos first; the hard faces come in a later run
        add_photo(engine, _like(rng, twin, 1))
        add_photo(engine, _like(rng, twin, 1))
        add_photo(engine, _like(rng, other, 1))
        add_photo(engine, _like(rng, other, 1))
        assert Clusters(engine).run("c", by="tester").mode == "full"
    # one photo with the same person twice (a mirror, twins), and a few single photos of them
    pair = add_photo(engine, _like(rng, twin, 2))
    singles = [f for _ in range(3) for f in add_photo(engine, _like(rng, twin, 1))]
    # a video: the same person twice in every frame for 4 s (two tracks), and another person alone
    frames = add_video(engine, [_like(rng, twin, 2) for _ in range(4)])
    alone = add_video(engine, [_like(rng, other, 1) for _ in range(4)])
    run = Clusters(engine).run("c", by="tester")
    assert run.mode == ("incremental" if incremental else "full")
    faces = pair + singles + [f for frame in frames + alone for f in frame]
    where = placement(engine, faces)
    assert_apart(where, [pair, *frames])
    # faces of one video at different times may be one person: they do cluster (keyed by the video's
    # id alone, at most one face of the video could join each cluster)
    twins = [f for frame in frames for f in frame]
    assert all(where[f] is not None for f in twins), [where[f] for f in twins]
    assert len({where[f] for f in twins}) == 2  # the person twice: two clusters, never one
    solo = [frame[0] for frame in alone]
    assert where[solo[0]] is not None and len({where[f] for f in solo}) == 1
