"""Batch and incremental clustering agree on real LFW faces.

The data: the 1,200 LFW view-1 hold-out embeddings of ``tests/fixtures/calibration_check`` (782
people, buffalo_s, the calibration check's own faces; nothing is read from outside the tests).
Three ways to cluster them must agree:

- :func:`facesearch.cluster.cluster_faces`, the batch algorithm, over every face at once;
- :class:`facesearch.cluster.ClusterState`, the same faces added in five chunks;
- the service production runs (:class:`facesearch.services.clusters.Clusters`): a home whose
  collection's catalog rows and FAISS vectors hold these faces, clustered once in full and, in a
  second home, first over half of them and then incrementally as the rest arrive in chunks.

The service's incremental mode places new faces through the collection's vector index and the
catalog, not arrays, so this is the test that the linking rules are one (``cluster.core.Linker``)
whichever path runs them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facesearch.catalog import NewFace
from facesearch.cluster import ClusterParams, ClusterState, bcubed_scores, cluster_faces, pairwise_scores
from facesearch.services.clusters import Clusters
from facesearch.services.engine import Engine

HOLDOUT = Path(__file__).parent / "fixtures" / "calibration_check" / "lfw_view1_holdout.npz"


@pytest.fixture(scope="module")
def lfw() -> tuple[np.ndarray, np.ndarray]:
    """(unit embeddings, identity labels) in a fixed shuffled order."""
    data = np.load(HOLDOUT)
    x = data["embeddings"].astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    _, truth = np.unique([p.split("/")[0] for p in data["paths"]], return_inverse=True)
    order = np.random.default_rng(3).permutation(len(x))
    return x[order], truth[order]


def singletons_apart(labels: np.ndarray) -> np.ndarray:
    """Unassigned faces (-1) as clusters of one, so that pairwise scores do not pair them."""
    return np.where(labels < 0, -1 - np.arange(len(labels)), labels)


def test_state_added_in_chunks_matches_the_batch_run(lfw):
    x, truth = lfw
    params = ClusterParams().resolved()
    batch = cluster_faces(x, params=params).labels
    state = ClusterState(params)
    for chunk in np.array_split(np.arange(len(x)), 5):
        state.add(x[chunk])
    incremental = state.labels()
    agreement = pairwise_scores(singletons_apart(batch), incremental)
    assert agreement.precision >= 0.99 and agreement.recall >= 0.99
    assert bcubed_scores(truth, incremental).f1 == pytest.approx(bcubed_scores(truth, batch).f1, abs=0.005)
    assert bcubed_scores(truth, batch).f1 > 0.95  # and the grouping is a good one, not a trivial agreement


def _home_with(path: Path) -> Engine:
    """A home with an empty collection ``lfw`` (:func:`_add_faces` fills it)."""
    engine = Engine.open(path, backend="faiss")
    engine.create_collection("lfw", "test fixture")
    return engine


def _add_faces(engine: Engine, x: np.ndarray, start: int, stop: int) -> list[int]:
    """Faces ``start..stop`` of ``x`` as catalog rows (one photo each) and FAISS vectors; their ids."""
    info = engine.collection("lfw")
    index = engine.index_of(info)
    ids = []
    for i in range(start, stop):
        face = NewFace(0, (10.0, 10.0, 110.0, 130.0), [[0.0, 0.0]] * 5, 0.9, 0.9, (), x[i], None)
        new = engine.catalog.add_image(info.id, f"{i:064x}", f"face_{i}.jpg", 250, 250, 1, [face],
                                       engine.config.pack)
        index.add(np.array(new, np.int64), x[i][None, :])
        ids.extend(new)
    index.save()
    return ids


def _labels(clusters: Clusters, ids: list[int]) -> np.ndarray:
    placed = clusters.store.placements(ids)
    return np.array([placed[f].cluster_id if f in placed else -1 for f in ids])


def test_the_service_incremental_runs_match_its_full_run(lfw, tmp_path):
    x, truth = lfw
    with _home_with(tmp_path / "full") as engine:
        ids = _add_faces(engine, x, 0, len(x))
        clusters = Clusters(engine)
        assert clusters.run("lfw").mode == "full"
        full = _labels(clusters, ids)
    with _home_with(tmp_path / "incremental") as engine:
        ids = _add_faces(engine, x, 0, 600)
        clusters = Clusters(engine)
        assert clusters.run("lfw").mode == "full"
        for start in range(600, len(x), 200):
            ids += _add_faces(engine, x, start, start + 200)
            assert clusters.run("lfw").mode == "incremental"
        incremental = _labels(clusters, ids)
    batch = cluster_faces(x, params=clusters.params()).labels
    agreement = pairwise_scores(singletons_apart(full), singletons_apart(incremental))
    assert agreement.precision >= 0.98 and agreement.recall >= 0.98, agreement
    same = pairwise_scores(singletons_apart(batch), singletons_apart(full))
    assert same.precision >= 0.99 and same.recall >= 0.99, same  # the service's full run is the batch algorithm
    assert bcubed_scores(truth, incremental).f1 == pytest.approx(bcubed_scores(truth, full).f1, abs=0.01)
