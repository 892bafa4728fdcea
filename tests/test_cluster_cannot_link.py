"""Two rules of the linking, through every path that links: the batch array run, increments of a
:class:`ClusterState`, and the catalog service's full and incremental runs.

- Cannot-link: faces of one image (photo or video frame) never share a cluster.
- One comparison: a cluster founded on a single cosine (two single faces) needs the cosine of
  ``pair_fmr`` (6e-6, 0.348), not only the average-link one (0.336); a face joining a group of two
  is an average over two comparisons and needs the link cosine.
"""

from __future__ import annotations

import hashlib

import numpy as np

from facesearch.catalog import CatalogError, NewFace
from facesearch.cluster import ClusterParams, ClusterState, cluster_faces
from facesearch.services.clusters import Clusters
from facesearch.services.engine import Engine
from tests.test_cluster import faces_of, unit

DIM = 512
PARAMS = ClusterParams(edge_threshold=0.22, link_threshold=0.336, attach_threshold=0.365)


def with_cosines(rng, cosines: list[float]) -> np.ndarray:
    """Face 0 and one face per cosine, each at exactly that cosine to face 0 and ~0 to the others."""
    basis, _ = np.linalg.qr(rng.standard_normal((DIM, len(cosines) + 1)))
    first = basis[:, 0]
    rows = [first] + [c * first + np.sqrt(1 - c * c) * basis[:, i + 1] for i, c in enumerate(cosines)]
    return unit(np.array(rows))


def test_a_pair_founded_on_one_cosine_needs_the_pair_cosine():
    pair = PARAMS.resolved().one_comparison_threshold
    assert 0.345 < pair < 0.352  # FMR 6e-6 of the buffalo_s calibration: between the link and the attachment
    rng = np.random.default_rng(3)
    weak = with_cosines(rng, [0.342])  # above the link (0.336), below the one-comparison cosine (0.348)
    assert (cluster_faces(weak, params=PARAMS).labels == -1).all()
    strong = with_cosines(rng, [0.36])
    labels = cluster_faces(strong, params=PARAMS).labels
    assert labels[0] == labels[1] >= 0
    # with the pair rule at the link's cosine (the rule before issue 17), the weak pair forms: the test can fail
    loose = ClusterParams(edge_threshold=0.22, link_threshold=0.336, attach_threshold=0.365, pair_threshold=0.336)
    labels = cluster_faces(weak, params=loose).labels
    assert labels[0] == labels[1] >= 0
    # no pair rate at all: the stricter of the link and the attachment cosines (0.365)
    strict = ClusterParams(edge_threshold=0.22, link_threshold=0.336, attach_threshold=0.365, pair_fmr=None)
    assert (cluster_faces(with_cosines(rng, [0.36]), params=strict).labels == -1).all()


def test_a_face_joining_a_group_of_two_needs_only_the_link_on_average():
    rng = np.random.default_rng(4)
    basis, _ = np.linalg.qr(rng.standard_normal((DIM, 3)))
    a = basis[:, 0]
    b = 0.6 * a + 0.8 * basis[:, 1]  # a pair well above every threshold
    mid = (a + b) / np.linalg.norm(a + b)
    alpha = 0.35 / float(mid @ a)  # c meets a and b at 0.35 each: between the link and the one-comparison cosine
    c = alpha * mid + np.sqrt(1 - alpha * alpha) * basis[:, 2]
    x = unit(np.array([a, b, c]))
    sims = x @ x.T
    assert 0.336 < sims[2, 0] < 0.365 and 0.336 < sims[2, 1] < 0.365 and sims[0, 1] > 0.365  # construction holds
    labels = cluster_faces(x, params=PARAMS).labels
    assert labels[0] == labels[1] == labels[2] >= 0


def _two_faces_one_photo(rng) -> np.ndarray:
    """Six faces of one person, then a near-copy of the first (the clash)."""
    centre = unit(rng.standard_normal((1, DIM)))[0]
    x = faces_of(rng, centre, 6, 0.8)
    copy = unit(x[:1] * 0.999 + x[1:2] * 0.001)  # a near-copy of face 0: a reflection, a poster
    return np.concatenate([x, copy])


def test_batch_and_increments_keep_one_photo_apart():
    rng = np.random.default_rng(8)
    x = _two_faces_one_photo(rng)
    images = np.array([0, 1, 2, 3, 4, 5, 0])
    free = cluster_faces(x, params=PARAMS).labels
    assert free[6] == free[0] >= 0  # without image ids they would share a cluster
    batch = cluster_faces(x, params=PARAMS, image_ids=images).labels
    assert not (batch[0] == batch[6] >= 0)
    for split in (1, 3, 6):  # the clash arriving early, in the middle, last
        state = ClusterState(PARAMS)
        state.add(x[:split], image_ids=images[:split])
        state.add(x[split:], image_ids=images[split:])
        labels = state.labels()
        assert not (labels[0] == labels[6] >= 0), split
        assert (labels[1:6] >= 0).all() and len(set(labels[1:6].tolist())) == 1


# -- the catalog service ---------------------------------------------------------------------------------


def _photo(engine: Engine, collection: str, vectors: np.ndarray) -> list[int]:
    """Store one photo holding all of ``vectors`` (as ingest stores a group photo); returns its face ids."""
    try:
        info = engine.collection(collection)
    except CatalogError:
        info = engine.create_collection(collection, "cannot-link test")
    faces = [NewFace(0, (10.0 + 100 * i, 10.0, 90.0 + 100 * i, 90.0),
                     [[30, 40], [70, 40], [50, 55], [35, 70], [65, 70]], 0.9, 0.9, (), v, None)
             for i, v in enumerate(vectors)]
    digest = hashlib.sha256(vectors.tobytes()).hexdigest()
    return engine.catalog.add_image(info.id, digest, f"/synthetic/{digest[:12]}.jpg", 100 * len(vectors), 100, 1,
                                    faces, engine.config.pack)


def test_catalog_full_and_incremental_runs_keep_one_photo_apart(engine):
    rng = np.random.default_rng(11)
    x = _two_faces_one_photo(rng)
    clusters = Clusters(engine)
    singles = [f for v in x[1:6] for f in _photo(engine, "cases", v[None])]
    clusters.run("cases")
    (cluster,) = {clusters.cluster_of(f) for f in singles}
    assert cluster is not None
    # a group photo with two faces of that person arrives: the incremental run places at most one
    both = _photo(engine, "cases", np.stack([x[0], x[6]]))
    run = clusters.run("cases")
    assert run.mode == "incremental"
    placed = [clusters.cluster_of(f) for f in both]
    assert placed.count(cluster) == 1 and not (placed[0] == placed[1] is not None)
    full = clusters.run("cases", full=True)
    assert full.mode == "full"
    placed = [clusters.cluster_of(f) for f in both]
    assert not (placed[0] == placed[1] is not None)
    assert {clusters.cluster_of(f) for f in singles} == {cluster}
