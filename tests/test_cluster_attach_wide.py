"""The wide attachment rule (issue 17): 4 supporters in one core at a per-comparison rate scaled by the core's size.

A far face (another year, a profile) that meets **4** members of one core at cos ~0.325 -- below the
2-supporter rule's cosine (FMR 3e-6, 0.365), above the wide rule's (FMR 3e-5, 0.308, for cores of up
to k = 10 members) -- joins that core; a core of 40 members asks for FMR 3e-5 / 4 per comparison, so
the same four supporters are not enough there (a big core always holds a few members like any face).
Synthetic unit vectors as in test_cluster.py; thresholds from the shipped buffalo_s calibration.
"""

from __future__ import annotations

import numpy as np
import pytest

from facesearch.cluster import ClusterParams, ClusterState, cluster_faces
from facesearch.cluster.attach import attach_faces
from tests.test_cluster import faces_of, unit

DIM = 512
PARAMS = ClusterParams().resolved()
NARROW = ClusterParams(attach_wide_support=0).resolved()  # the 2-supporter rule alone


def test_the_wide_cosine_rises_with_the_core_size():
    table = PARAMS.attach_wide_table
    assert 0.30 < table[0] < 0.315 and PARAMS.attach_wide_support == 4  # FMR 3e-5 of the calibration
    assert all(a < b for a, b in zip(table, table[1:]))  # each halving of the rate: a higher cosine
    sizes = np.array([1, 9, 10, 11, 20, 21, 40, 530])
    steps = [0, 0, 0, 1, 1, 2, 2, 6]  # n / k rounded up to a power of two: 530 / 10 -> 64 = 2^6
    assert PARAMS.wide_thresholds(sizes).tolist() == [table[s] for s in steps]
    # n x FMR never exceeds k x 3e-5: the expected supporters a different person finds stay bounded
    for n, s in zip(sizes.tolist(), steps):
        assert n * PARAMS.attach_wide_fmr / 2 ** s <= PARAMS.k * PARAMS.attach_wide_fmr


def _votes(core_size: int, supporters: int, cosine: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A core of ``core_size`` faces (label 0) and one free face whose k-NN list holds ``supporters`` of them."""
    core = np.full(core_size + 1, -1)
    core[:core_size] = 0
    ids = np.full((1, 10), -1)
    sims = np.full((1, 10), -np.inf, np.float32)
    ids[0, :supporters], sims[0, :supporters] = np.arange(supporters), cosine
    return core, ids, sims


@pytest.mark.parametrize("poor", [False, True])
def test_four_supporters_attach_three_do_not_and_a_poor_face_needs_five(poor):
    good = np.ones(12, bool)
    good[10] = not poor
    for supporters in (3, 4, 5):
        core, ids, sims = _votes(10, supporters, 0.325)
        wide = PARAMS.wide_thresholds(np.array([10]))
        faces, labels = attach_faces(core, np.array([10]), ids, sims, threshold=PARAMS.attach_threshold, support=2,
                                     good=good[:11], wide_support=4, wide_thresholds=wide)
        assert (faces.tolist() == [10]) == (supporters >= 4 + poor)
        # the 2-supporter rule alone (the rule before) never takes the face at this cosine: the test can fail
        assert not len(attach_faces(core, np.array([10]), ids, sims, threshold=PARAMS.attach_threshold, support=2)[0])


def test_a_face_supported_by_two_cores_under_either_rule_stays_out():
    core = np.full(21, -1)
    core[:10], core[10:20] = 0, 1
    ids = np.array([[0, 1, 2, 3, 10, 11, -1, -1, -1, -1]])
    sims = np.array([[0.325, 0.325, 0.325, 0.325, 0.40, 0.38] + [-np.inf] * 4], np.float32)
    wide = PARAMS.wide_thresholds(np.array([10, 10]))
    both = attach_faces(core, np.array([20]), ids, sims, threshold=PARAMS.attach_threshold, support=2,
                        wide_support=4, wide_thresholds=wide)
    assert not len(both[0])  # wide support for core 0, 2-supporter support for core 1: a person decides
    alone = attach_faces(core, np.array([20]), ids[:, [0, 1, 2, 3, 6, 7, 8, 9]], sims[:, [0, 1, 2, 3, 6, 7, 8, 9]],
                         threshold=PARAMS.attach_threshold, support=2, wide_support=4, wide_thresholds=wide)
    assert alone[0].tolist() == [20] and alone[1].tolist() == [0]


def far_face(rng, members: np.ndarray, near: int, cosine: float) -> np.ndarray:
    """A face meeting ``members[:near]`` at >= ``cosine`` (the least of them exactly) and the rest less."""
    basis, _ = np.linalg.qr(members.T.astype(np.float64))
    r = rng.standard_normal(DIM)
    r -= basis @ (basis.T @ r)
    direction = unit(members[:near].sum(0, keepdims=True))[0]
    a = cosine / float((members[:near] @ direction).min())
    return unit((a * direction + np.sqrt(1 - a * a) * r / np.linalg.norm(r))[None])[0]


@pytest.mark.parametrize("size, joins", [(10, True), (40, False)])
def test_batch_and_incremental_attach_by_the_wide_rule_only_to_a_small_core(size, joins):
    rng = np.random.default_rng(31)
    centre = unit(rng.standard_normal((1, DIM)))[0]
    members = faces_of(rng, centre, size, 0.8)
    far = far_face(rng, members, 4, 0.325)
    sims = members @ far
    # the construction: 4 supporters between the wide cosine and the 2-supporter one, the rest below the
    # wide cosine, and an average below the link (stage 1 leaves the face out)
    assert (sims >= 0.3249).sum() == 4 and (sims < 0.365).all() and np.sort(sims)[-5] < PARAMS.attach_wide_table[0]
    assert sims.mean() < PARAMS.link_threshold
    x = np.concatenate([members, far[None]])
    batch = cluster_faces(x, params=PARAMS).labels
    assert len(set(batch[:size].tolist())) == 1 and batch[0] >= 0
    assert (batch[size] == batch[0]) == joins
    assert cluster_faces(x, params=NARROW).labels[size] == -1  # not without the wide rule
    state = ClusterState(PARAMS)
    state.add(members)
    state.add(far[None])
    assert state.labels().tolist() == batch.tolist()  # the far face arriving later: the same answer


def test_the_catalog_service_attaches_by_the_wide_rule_like_the_batch_run(tmp_path):
    from facesearch.services.clusters import Clusters
    from facesearch.services.engine import Engine
    from tests.test_clusters import insert

    engine = Engine.open(tmp_path / "home", backend="faiss")
    try:
        rng = np.random.default_rng(31)
        centre = unit(rng.standard_normal((1, DIM)))[0]
        members = faces_of(rng, centre, 10, 0.8)
        ids = insert(engine, "cases", members)
        clusters = Clusters(engine)
        clusters.run("cases")
        (cluster,) = {clusters.cluster_of(f) for f in ids}
        (far_id,) = insert(engine, "cases", far_face(rng, members, 4, 0.325)[None])
        run = clusters.run("cases")  # incremental: placed through the vector index and the catalog
        assert run.mode == "incremental" and run.stats["attached"] == 1 and run.stats["merges"] == 0
        assert clusters.cluster_of(far_id) == cluster
        clusters.run("cases", full=True)
        assert clusters.cluster_of(far_id) == cluster
        clusters.run("cases", params=clusters.params(attach_wide_support=0))  # without the wide rule: out
        assert clusters.cluster_of(far_id) is None
    finally:
        engine.close()
