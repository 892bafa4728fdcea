"""Stage 2 of clustering (attachment to cores), cannot-link by image, and batch/incremental agreement.

Synthetic unit vectors (as in test_cluster.py): a person is a random direction; "core" faces
meet at cosine ~0.6, "far" faces (other years, profile) meet the core faces at ~0.31 -- above
the attach threshold (0.28, FMR 1e-4) but below the average-link threshold (0.336, FMR 1e-5),
so stage 1 alone leaves them out. Different people meet at 0 +- 0.044. Real faces: the fixture
photos of tests/fixtures (Powell, Bush, Chavez) and augmented copies, through the real model.
"""

from __future__ import annotations

import numpy as np
import pytest

from facesearch.cluster import ClusterParams, ClusterState, bcubed_scores, cluster_faces
from facesearch.cluster.attach import attach_faces
from facesearch.cluster.metrics import band_scores
from tests.test_cluster import faces_of, unit

DIM = 512
BASE = ClusterParams(edge_threshold=0.22, link_threshold=0.336, attach_threshold=0.28)
STAGE1 = ClusterParams(edge_threshold=0.22, link_threshold=0.336, attach_threshold=0.28, attach_support=0)


def spread_people(seed: int, n: int = 30, core: int = 6, far: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """``n`` people, each ``core`` alike faces (noise 0.8) and ``far`` unlike ones (noise 2.3)."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((n, DIM)))
    x, truth = [], []
    for person, c in enumerate(centres):
        x += [faces_of(rng, c, core, 0.8), faces_of(rng, c, far, 2.3)]
        truth += [person] * (core + far)
    return np.concatenate(x), np.array(truth)


def partition(labels: np.ndarray) -> set[frozenset[int]]:
    """Clusters as sets of faces (label values differ between runs; the grouping must not)."""
    return {frozenset(np.flatnonzero(labels == lab).tolist()) for lab in np.unique(labels[labels >= 0])}


def test_attachment_finds_far_faces_without_losing_precision():
    x, truth = spread_people(3)
    before = cluster_faces(x, params=STAGE1).labels
    after = cluster_faces(x, params=BASE).labels
    b0, b1 = bcubed_scores(truth, before), bcubed_scores(truth, after)
    assert b0.precision == pytest.approx(1.0) and b1.precision == pytest.approx(1.0)
    assert np.mean(after < 0) < 0.5 * np.mean(before < 0)  # far faces found: unassigned share halved at least
    assert b1.recall > b0.recall + 0.1
    # attachment never moves a core face
    core = before >= 0
    assert partition(np.where(core, after, -1)) == partition(before)


def test_an_ambiguous_face_stays_unassigned():
    # a face supported by two clusters is left to a person
    core = np.full(8, -1)
    core[:4], core[4:7] = 0, 1
    nbr = np.array([[0, 1, 4, 5, -1]])
    sims = np.array([[0.4, 0.35, 0.33, 0.3, -np.inf]], np.float32)
    faces, labels = attach_faces(core, np.array([7]), nbr, sims, threshold=0.28, support=2)
    assert len(faces) == 0
    faces, labels = attach_faces(core, np.array([7]), nbr[:, [0, 1, 2, 4, 4]], sims, threshold=0.28, support=2)
    assert faces.tolist() == [7] and labels.tolist() == [0]


def test_a_poor_face_needs_one_more_supporter():
    core = np.full(6, -1)
    core[:4] = 0
    nbr, sims = np.array([[0, 1, -1]]), np.array([[0.4, 0.35, -np.inf]], np.float32)
    good = np.ones(6, bool)
    assert attach_faces(core, np.array([5]), nbr, sims, threshold=0.28, support=2, good=good)[0].tolist() == [5]
    good[5] = False
    assert len(attach_faces(core, np.array([5]), nbr, sims, threshold=0.28, support=2, good=good)[0]) == 0


def test_faces_of_one_image_never_share_a_cluster():
    rng = np.random.default_rng(5)
    centre = unit(rng.standard_normal((1, DIM)))[0]
    x = faces_of(rng, centre, 6, 0.8)
    x = np.concatenate([x, x[:1] * 0.999 + x[1:2] * 0.001])  # a near-copy of face 0 ...
    x = unit(x)
    images = np.array([0, 1, 2, 3, 4, 5, 0])  # ... found in the same photo as face 0 (a reflection, a poster)
    free = cluster_faces(x, params=BASE).labels
    assert free[6] == free[0] >= 0  # without the image ids they would share a cluster
    labels = cluster_faces(x, params=BASE, image_ids=images).labels
    # one of the two joins the other four faces; the other stays out (stage 2 refuses it too)
    assert len(set(labels[1:6].tolist())) == 1 and labels[1] >= 0
    assert sorted([labels[0] == labels[1], labels[6] == labels[1]]) == [False, True]
    assert min(labels[0], labels[6]) == -1
    # stage 2 too: the near-copy is supported by the whole cluster, but holds face 0's image
    state = ClusterState(BASE)
    state.add(x[:6], image_ids=images[:6])
    state.add(x[6:], image_ids=images[6:])
    assert state.labels()[6] != state.labels()[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_and_incremental_agree_with_attachment(seed):
    x, truth = spread_people(11, n=20)
    batch = cluster_faces(x, params=BASE).labels
    assert (batch >= 0).sum() > (cluster_faces(x, params=STAGE1).labels >= 0).sum()  # stage 2 is at work
    order = np.random.default_rng(seed).permutation(len(x))
    state = ClusterState(BASE)
    for part in np.array_split(order, 9):  # nine ingests, people arriving in random order
        state.add(x[part])
    incremental = np.full(len(x), -1)
    incremental[order] = state.labels()
    assert partition(incremental) == partition(batch)


def test_real_fixture_photos_cluster_alike_in_batch_and_increments(embedding_of, lfw, tmp_path):
    from tests.test_clusters import augmented, photo

    names = ["Colin_Powell_0001", "Colin_Powell_0002", "Colin_Powell_0003", "Colin_Powell_0004",
             "George_W_Bush_0001", "George_W_Bush_0002", "George_W_Bush_0003",
             "Hugo_Chavez_0001", "Hugo_Chavez_0002", "Hugo_Chavez_0003"]
    paths = [photo(n) for n in names] + [augmented(tmp_path, n, how) for n, how in
                                          (("Colin_Powell_0001", "mirror"), ("George_W_Bush_0002", "crop"),
                                           ("Hugo_Chavez_0003", "bright"))]
    truth = np.array([p.name.split("_0")[0] for p in paths])
    x = np.stack([embedding_of(p) for p in paths]).astype(np.float32)
    params = ClusterParams()  # the shipped calibration's thresholds
    batch = cluster_faces(x, params=params).labels
    assert bcubed_scores(truth, batch).precision == pytest.approx(1.0)
    for seed in range(4):
        order = np.random.default_rng(seed).permutation(len(x))
        state = ClusterState(params)
        for i in order:  # one photo at a time
            state.add(x[i:i + 1])
        incremental = np.full(len(x), -1)
        incremental[order] = state.labels()
        assert partition(incremental) == partition(batch), seed


def test_band_scores_split_by_identity_size():
    truth = np.array([0, 0, 0, 0, 1, 1, 2])
    labels = np.array([5, 5, 5, -1, 6, 6, -1])
    bands = {b.name: b for b in band_scores(truth, labels, [(1, 1), (2, 3), (4, None)])}
    assert bands["1"].faces == 1 and bands["1"].bcubed.recall == 1.0 and bands["1"].unassigned == 1.0
    assert bands["2-3"].bcubed.f1 == pytest.approx(1.0) and bands["2-3"].unassigned == 0.0
    big = bands["4+"]
    assert big.bcubed.precision == pytest.approx(1.0)
    assert big.bcubed.recall == pytest.approx((3 * 3 / 4 + 1 / 4) / 4)
    assert big.pairwise.recall == pytest.approx(6 / 12) and big.unassigned == pytest.approx(0.25)


def test_catalog_runs_attach_like_the_batch_algorithm(tmp_path):
    """The catalog service calls the same stage 2: an incremental run attaches a far face, a full run agrees."""
    from facesearch.services.clusters import Clusters
    from facesearch.services.engine import Engine
    from tests.test_clusters import faces_of as catalog_faces
    from tests.test_clusters import insert

    engine = Engine.open(tmp_path / "home", backend="faiss")
    try:
        rng = np.random.default_rng(23)
        centre = unit(rng.standard_normal((1, DIM)))[0]
        members = catalog_faces(rng, centre, 10)
        ids = insert(engine, "cases", members)
        clusters = Clusters(engine)
        clusters.run("cases")
        (cluster,) = {clusters.cluster_of(f) for f in ids}
        # a far photo: cos ~0.40 to two members (above the attach threshold, 0.365), ~0.30 to the rest,
        # so its average over the cluster (~0.32) stays below the link threshold (0.336)
        basis, _ = np.linalg.qr(members.T.astype(np.float64))
        r = rng.standard_normal(DIM)
        r -= basis @ (basis.T @ r)
        pair = members[0] + members[1]
        far = unit(0.447 * pair / np.linalg.norm(pair) + np.sqrt(1 - 0.447 ** 2) * r / np.linalg.norm(r))[0]
        sims = members @ far
        assert (sims >= 0.365).sum() == 2 and sims.mean() < 0.336  # the construction holds
        (far_id,) = insert(engine, "cases", far[None])
        run = clusters.run("cases")
        assert run.mode == "incremental" and run.stats["attached"] == 1 and run.stats["merges"] == 0
        assert clusters.cluster_of(far_id) == cluster
        full = clusters.run("cases", full=True)
        assert full.mode == "full" and clusters.cluster_of(far_id) == cluster
        stage1 = clusters.params(attach_support=0)
        clusters.run("cases", params=stage1)  # without stage 2 the far face stays out
        assert clusters.cluster_of(far_id) is None
    finally:
        engine.close()
