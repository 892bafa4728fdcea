"""Unknown-face clustering: grouping, quality rules, incremental updates, metrics and the baseline.

Everything runs on synthetic unit vectors generated here with fixed seeds: an identity is a
random direction in 512-d, its faces that direction plus Gaussian noise, scaled so two faces of
one person meet at cosine ~0.6 and two people at ~0 +- 0.045 -- roughly ArcFace on LFW.
Thresholds are given as cosines, so the tests do not depend on the shipped calibration.
"""

from __future__ import annotations

import numpy as np
import pytest

from facesearch.cluster import (
    ClusterParams,
    ClusterState,
    bcubed_scores,
    build_knn_graph,
    cluster_faces,
    pairwise_scores,
    threshold_for_fmr,
)
from facesearch.cluster.baseline import immich_style_cluster
from facesearch.models.calibration import load_calibration

DIM = 512
PARAMS = ClusterParams(edge_threshold=0.28, link_threshold=0.34)


def unit(v: np.ndarray) -> np.ndarray:
    v = np.atleast_2d(np.asarray(v, np.float64))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def faces_of(rng: np.random.Generator, centre: np.ndarray, count: int, noise: float = 0.8) -> np.ndarray:
    """``count`` faces of one person: genuine cosine ~ 1 / (1 + noise^2) (0.6 at 0.8)."""
    return unit(centre + noise * rng.standard_normal((count, DIM)) / np.sqrt(DIM))


def people(seed: int, sizes: list[int], noise: float = 0.8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = unit(rng.standard_normal((len(sizes), DIM)))
    x = np.concatenate([faces_of(rng, c, s, noise) for c, s in zip(centres, sizes)])
    truth = np.repeat(np.arange(len(sizes)), sizes)
    return x, truth


def same(labels: np.ndarray, i: int, j: int) -> bool:
    return labels[i] >= 0 and labels[i] == labels[j]


# -- grouping -------------------------------------------------------------------------------------


def test_separates_well_separated_identities():
    x, truth = people(1, [6] * 25)
    labels = cluster_faces(x, params=PARAMS).labels
    assert (labels >= 0).all()
    assert bcubed_scores(truth, labels).f1 == pytest.approx(1.0)
    assert len(np.unique(labels)) == 25


def test_isolated_faces_stay_unassigned():
    x, truth = people(2, [4, 4, 4] + [1] * 30)
    result = cluster_faces(x, params=PARAMS)
    assert (result.labels[12:] == -1).all()
    assert result.n_clusters == 3
    assert sorted(result.sizes.values()) == [4, 4, 4]
    assert result.unassigned_fraction == pytest.approx(30 / 42)


def test_min_size_leaves_small_groups_unassigned():
    x, _ = people(3, [2, 2, 5])
    assert (cluster_faces(x, params=PARAMS).labels >= 0).all()
    labels = cluster_faces(x, params=ClusterParams(edge_threshold=0.28, link_threshold=0.34, min_size=3)).labels
    assert (labels[:4] == -1).all() and (labels[4:] >= 0).all()


def test_one_look_alike_edge_does_not_chain_two_groups():
    """Two people of 8 faces; one face of B happens to look like A (an edge above threshold): the
    average-linkage test keeps the groups apart, where single linkage would have joined them."""
    rng = np.random.default_rng(4)
    ca, cb = unit(rng.standard_normal((2, DIM)))
    a, b = faces_of(rng, ca, 8), faces_of(rng, cb, 8)
    b[0] = unit(0.55 * ca + cb + 0.3 * rng.standard_normal(DIM) / np.sqrt(DIM))[0]
    x = np.concatenate([a, b])
    assert (x[:8] @ x[8]).max() >= 0.34  # the look-alike edge exists
    labels = cluster_faces(x, params=PARAMS).labels
    assert len(set(labels[:8].tolist())) == 1 and labels[0] >= 0
    assert labels[0] not in set(labels[9:].tolist())


# -- quality --------------------------------------------------------------------------------------


def bridge_case() -> np.ndarray:
    """a (one face of A), b (one face of B), x: a poor face halfway between the two people."""
    rng = np.random.default_rng(5)
    ca, cb = unit(rng.standard_normal((2, DIM)))
    a, b = faces_of(rng, ca, 1, 0.3), faces_of(rng, cb, 1, 0.3)
    x = unit(ca + cb + 0.3 * rng.standard_normal(DIM) / np.sqrt(DIM))
    return np.concatenate([a, b, x])


def test_low_quality_face_similar_to_two_people_does_not_merge_them():
    x = bridge_case()
    assert x[2] @ x[0] > 0.6 and x[2] @ x[1] > 0.6 and abs(x[0] @ x[1]) < 0.2
    params = ClusterParams(edge_threshold=0.25, link_threshold=0.3)
    blind = cluster_faces(x, None, params=params).labels
    assert same(blind, 0, 1)  # without the quality rule the poor face chains the two people
    labels = cluster_faces(x, np.array([0.9, 0.9, 0.1]), params=params).labels
    assert not same(labels, 0, 1)
    assert same(labels, 2, 0) or same(labels, 2, 1)  # it may still join one of them


def test_poor_faces_do_not_form_a_cluster_of_their_own():
    """Poor faces of different people resemble each other (a shared 'generic face' component)."""
    rng = np.random.default_rng(6)
    x, truth = people(7, [5, 5])
    generic = unit(rng.standard_normal(DIM))[0]
    poor = unit(generic + 0.9 * rng.standard_normal((6, DIM)) / np.sqrt(DIM))
    x = np.concatenate([x, poor])
    truth = np.concatenate([truth, 100 + np.arange(6)])
    quality = np.concatenate([np.full(10, 0.8), np.full(6, 0.1)])
    blind = cluster_faces(x, None, params=PARAMS).labels
    assert len(set(blind[10:].tolist())) == 1 and blind[10] >= 0  # quality ignored: a false cluster
    labels = cluster_faces(x, quality, params=PARAMS).labels
    assert (labels[10:] == -1).all()
    assert bcubed_scores(truth, labels).precision == pytest.approx(1.0)


# -- incremental ----------------------------------------------------------------------------------


def test_incremental_adds_match_batch():
    x, truth = people(8, [5] * 30 + [2] * 10 + [1] * 30)
    order = np.random.default_rng(9).permutation(len(x))
    batch = cluster_faces(x[order], params=PARAMS).labels
    state = ClusterState(PARAMS)
    state.add(x[order[:150]])
    for chunk in np.array_split(order[150:], 3):
        state.add(x[chunk])
    incremental = state.labels()
    assert bcubed_scores(truth[order], incremental).f1 == pytest.approx(bcubed_scores(truth[order], batch).f1,
                                                                        abs=0.01)
    agreement = pairwise_scores(np.where(batch < 0, -1 - np.arange(len(x)), batch), incremental)
    assert agreement.precision >= 0.99 and agreement.recall >= 0.99
    assert bcubed_scores(truth[order], incremental).f1 >= 0.99


def test_incremental_add_touches_only_its_neighbourhood():
    x, truth = people(10, [4] * 12 + [3])
    old = np.arange(len(x) - 3)
    state = ClusterState(PARAMS)
    state.add(x[old][:-1])  # everything but the new people's faces and the last face of person 11
    before = state.labels()
    grown_label = before[len(old) - 2]
    newcomers = np.concatenate([x[old][-1:], x[len(old):]])  # one more face of person 11, a new person of 3
    update = state.add(newcomers)
    after = state.labels()
    assert update.grown == [int(grown_label)]
    assert update.merges == []
    assert len(update.new_clusters) == 1
    assert update.relabelled_old == 0
    assert np.array_equal(after[:len(before)], before)  # old faces keep their labels
    assert after[len(before)] == grown_label
    assert len(set(after[len(before) + 1:].tolist())) == 1 and after[-1] not in set(before.tolist())


def test_incremental_forms_clusters_with_unassigned_faces():
    x, _ = people(11, [1, 1, 1, 2])
    state = ClusterState(PARAMS)
    state.add(x[:4])  # one face each of four people, and nothing to pair
    assert (state.labels() == -1).all()
    rng = np.random.default_rng(12)
    centre_of_first = x[0]
    update = state.add(faces_of(rng, centre_of_first * 1.0, 1, 0.5))  # a close face of the first person
    assert update.relabelled_old == 1
    labels = state.labels()
    assert labels[0] >= 0 and labels[0] == labels[-1]
    assert update.new_clusters == [int(labels[0])]


def merge_case(poor_bridge: bool):
    """Two groups of one person, just below the linkage threshold, then a face that belongs to both."""
    rng = np.random.default_rng(13)
    base = unit(rng.standard_normal(DIM))[0]
    drift = unit(rng.standard_normal(DIM))[0]
    c1, c2 = unit(base + 0.7 * drift)[0], unit(base - 0.7 * drift)[0]  # cosine 0.34 apart
    group1, group2 = faces_of(rng, c1, 2, 0.3), faces_of(rng, c2, 2, 0.3)
    state = ClusterState(PARAMS)
    state.add(np.concatenate([group1, group2]))
    before = state.labels()
    bridge = unit(c1 + c2 + 0.2 * rng.standard_normal(DIM) / np.sqrt(DIM))
    update = state.add(bridge, np.array([0.1 if poor_bridge else 0.9]))
    return before, update, state.labels()


def test_merge_through_a_good_face_is_reported():
    before, update, after = merge_case(poor_bridge=False)
    assert before[0] == before[1] and before[2] == before[3] and before[0] != before[2]  # two groups
    assert len(update.merges) == 1
    kept, gone = update.merges[0]
    assert {kept, gone} == {int(before[0]), int(before[2])}
    assert (after == kept).all()
    assert update.relabelled_old == 2


def test_a_poor_face_cannot_merge_two_groups():
    before, update, after = merge_case(poor_bridge=True)
    assert update.merges == []
    assert np.array_equal(after[:4], before)


# -- thresholds and graphs -------------------------------------------------------------------------


def test_default_thresholds_come_from_the_calibration():
    calibration = load_calibration("buffalo_s")
    strict, loose = threshold_for_fmr(1e-5, calibration), threshold_for_fmr(1e-4, calibration)
    assert 0.2 < loose < strict < 0.5
    params = ClusterParams().resolved()
    assert params.edge_threshold == pytest.approx(threshold_for_fmr(params.edge_fmr, calibration))
    assert params.link_threshold == pytest.approx(threshold_for_fmr(params.link_fmr, calibration))
    assert ClusterParams(edge_threshold=0.3, link_threshold=0.4).resolved().link_threshold == 0.4


def test_exact_graph_is_the_brute_force_graph():
    x, _ = people(14, [3] * 40)
    graph = build_knn_graph(x, 5)
    gram = x @ x.T
    np.fill_diagonal(gram, -np.inf)
    expected = np.argsort(-gram, axis=1)[:, :5]
    assert graph.mode.startswith("exact")
    assert np.array_equal(np.sort(graph.ids, axis=1), np.sort(expected, axis=1))
    assert np.allclose(graph.sims, np.take_along_axis(gram, expected, 1), atol=1e-5)


def test_bucket_graph_keeps_nearly_all_strong_edges_and_clusters_alike():
    x, truth = people(15, [4] * 150 + [1] * 200)
    exact = build_knn_graph(x, 10, min_sim=0.28)
    bucket = build_knn_graph(x, 10, min_sim=0.28, exact_limit=100)
    assert bucket.mode.startswith("buckets")
    strong = [(i, j) for i in range(len(x)) for j in exact.ids[i] if j >= 0]
    kept = sum(j in set(bucket.ids[i].tolist()) for i, j in strong)
    assert kept / len(strong) >= 0.9
    labels = cluster_faces(x, params=ClusterParams(edge_threshold=0.28, link_threshold=0.34, exact_limit=100)).labels
    assert bcubed_scores(truth, labels).f1 >= 0.97
    state = ClusterState(ClusterParams(edge_threshold=0.28, link_threshold=0.34, exact_limit=100))
    state.add(x[:-4])
    state.add(x[-4:])  # incremental search through the cells
    assert bcubed_scores(truth, state.labels()).f1 >= 0.97


# -- metrics --------------------------------------------------------------------------------------


def test_pairwise_and_bcubed_on_a_hand_computed_example():
    truth = np.array(["ann", "ann", "ann", "bob", "bob", "cy"])
    labels = np.array([7, 7, 3, 3, -1, -1])
    # predicted pairs: (0,1) right, (2,3) wrong -> P 1/2; true pairs: 3 (ann) + 1 (bob) -> R 1/4
    pw = pairwise_scores(truth, labels)
    assert (pw.precision, pw.recall) == (pytest.approx(0.5), pytest.approx(0.25))
    assert pw.f1 == pytest.approx(2 * 0.5 * 0.25 / 0.75)
    # per face precision 1, 1, 1/2, 1/2, 1, 1; recall 2/3, 2/3, 1/3, 1/2, 1/2, 1
    b3 = bcubed_scores(truth, labels)
    assert b3.precision == pytest.approx(5 / 6)
    assert b3.recall == pytest.approx((2 / 3 + 2 / 3 + 1 / 3 + 1 / 2 + 1 / 2 + 1) / 6)


def test_metrics_treat_unassigned_faces_as_singletons():
    truth = np.array([0, 0, 1, 2])
    nothing = np.full(4, -1)
    assert pairwise_scores(truth, nothing).precision == 1.0
    assert pairwise_scores(truth, nothing).recall == 0.0
    b3 = bcubed_scores(truth, nothing)
    assert b3.precision == 1.0 and b3.recall == pytest.approx((0.5 + 0.5 + 1 + 1) / 4)
    perfect = np.array([5, 5, -1, -1])  # the two singletons are right to stay unassigned
    assert bcubed_scores(truth, perfect).f1 == pytest.approx(1.0)
    assert pairwise_scores(truth, perfect).f1 == pytest.approx(1.0)
    with pytest.raises(ValueError):
        bcubed_scores(truth, perfect[:3])


# -- the Immich-style baseline ---------------------------------------------------------------------


def test_immich_style_needs_three_faces_to_found_a_person():
    x, truth = people(16, [5, 3, 2, 1], noise=0.5)
    labels = immich_style_cluster(x).labels
    assert len(set(labels[:5].tolist())) == 1 and labels[0] >= 0
    assert len(set(labels[5:8].tolist())) == 1 and labels[5] >= 0 and labels[5] != labels[0]
    assert (labels[8:] == -1).all()  # a pair never reaches min faces 3; a single face matches only itself
    assert (immich_style_cluster(x, min_faces=2).labels[8:10] >= 0).all()


def test_immich_style_deferred_face_joins_the_nearest_person():
    """A face with only one other face within distance 0.5 is not core: deferred to the end of the
    queue, it then joins the person of that face (Immich's ``deferred`` job)."""
    rng = np.random.default_rng(17)
    centre = unit(rng.standard_normal(DIM))[0]
    core = faces_of(rng, centre, 4, 0.5)
    other = rng.standard_normal(DIM)
    other -= (other @ core[0]) * core[0]
    edge = unit(0.56 * core[0] + np.sqrt(1 - 0.56 ** 2) * other / np.linalg.norm(other))
    x = np.concatenate([edge, core])  # the edge face is first in the queue
    assert (x @ x[0] >= 0.5).sum() == 2  # itself and core[0] only
    labels = immich_style_cluster(x).labels
    assert labels[1] >= 0 and len(set(labels[1:].tolist())) == 1
    assert labels[0] == labels[1]
    alone = immich_style_cluster(x[:2]).labels  # without the others there is no person to join
    assert (alone == -1).all()


@pytest.mark.parametrize("exact_limit", [100_000, 50])
def test_saved_state_continues_like_the_live_one(tmp_path, exact_limit):
    x, _ = people(18, [4] * 20 + [1] * 10)
    params = ClusterParams(edge_threshold=0.28, link_threshold=0.34, exact_limit=exact_limit)
    live = ClusterState(params)
    live.add(x[:80])
    live.save(tmp_path / "state.npz")
    loaded = ClusterState.load(tmp_path / "state.npz", x[:80])
    assert np.array_equal(loaded.labels(), live.labels())
    first, second = live.add(x[80:]), loaded.add(x[80:])
    assert np.array_equal(live.labels(), loaded.labels())
    assert (first.merges, first.new_clusters, first.grown) == (second.merges, second.new_clusters, second.grown)
    with pytest.raises(ValueError):
        ClusterState.load(tmp_path / "state.npz", x[:79])
