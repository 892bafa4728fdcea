"""Suggestions for a person ("these two clusters may be one person", "this face may belong to cluster N"):
the service with its calibrated evidence, governance (roles, grants, audit), the CLI and the API.

Synthetic faces through the catalog (tests/test_clusters.py's helpers: a person is a random
centre plus noise, cosine ~0.6 within a person), with the shipped calibration's thresholds.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from facesearch.governance import Governance, PermissionDenied
from facesearch.governance.clusters import ClusterGovernance
from facesearch.services.cluster_suggestions import ClusterSuggestions
from facesearch.services.clusters import Clusters
from facesearch.services.engine import Engine
from tests.conftest import unit_vectors
from tests.test_clusters import LAYOUT, faces_of, insert, unit


def near_one_member(members: np.ndarray, which: int, cosine: float, rng) -> np.ndarray:
    """A face at ``cosine`` to ``members[which]`` and orthogonal to what the other members do not share with it."""
    basis, _ = np.linalg.qr(members.T.astype(np.float64))  # the span of every member
    r = rng.standard_normal(members.shape[1])
    r -= basis @ (basis.T @ r)
    r /= np.linalg.norm(r)
    return unit(cosine * members[which] + np.sqrt(1 - cosine ** 2) * r)


@pytest.fixture
def scene(tmp_path):
    """Person P split by a person into two clusters, person Q, and a face F near one of P's faces only."""
    engine = Engine.open(tmp_path / "home", backend="faiss")
    gov = Governance(engine)
    users = {name: gov.accounts.add_user(name, f"{name}-password-1", role)
             for name, role in (("ivy", "investigator"), ("aud", "auditor"), ("ola", "investigator"))}
    rng = np.random.default_rng(17)
    p_centre, q_centre = unit_vectors(rng, 2)
    p_faces, q_faces = faces_of(rng, p_centre, 6), faces_of(rng, q_centre, 6)
    p_ids = insert(engine, "cases", p_faces)
    q_ids = insert(engine, "cases", q_faces)
    gov.accounts.grant("ivy", engine.collection("cases").id)
    insert(engine, "elsewhere", faces_of(rng, q_centre, 2))
    cg = ClusterGovernance(gov)
    ivy = users["ivy"]
    cg.run(ivy, "cases")
    p_cluster = cg.clusters.cluster_of(p_ids[0])
    split = cg.split(ivy, p_cluster, p_ids[3:])  # a person's mistake: P is now two clusters
    (f_id,) = insert(engine, "cases", near_one_member(p_faces, 0, 0.36, rng)[None])
    run = cg.run(ivy, "cases")
    assert run.mode == "incremental" and cg.clusters.cluster_of(f_id) is None  # one supporter: not attached
    yield cg, users, {"p": p_cluster, "p2": split.cluster_id, "q": cg.clusters.cluster_of(q_ids[0]), "f": f_id,
                      "p_ids": p_ids}
    engine.close()


def test_suggestions_carry_calibrated_evidence(scene):
    cg, users, ids = scene
    found = cg.suggestions(users["ivy"], "cases")
    pairs = {(m.cluster_a, m.cluster_b): m for m in found.merges}
    merge = pairs[tuple(sorted((ids["p"], ids["p2"])))]
    assert (merge.size_a, merge.size_b) == (3, 3) and merge.average.score > 0.5
    assert merge.average.fmr < 1e-6 and "1 in" in merge.average.words and "look-alike" in merge.average.words
    assert not any(ids["q"] in pair for pair in pairs)  # never P with Q
    (attach,) = [a for a in found.attaches if a.face_id == ids["f"]]
    assert attach.cluster_id == ids["p"] and attach.support == 1
    assert attach.best.score == pytest.approx(0.36, abs=1e-3)
    assert 1e-6 < attach.best.fmr < 1e-5 and found.threshold == pytest.approx(0.280, abs=1e-3)


def test_answers_are_governed_audited_and_remembered(scene):
    cg, users, ids = scene
    ivy, aud, ola = users["ivy"], users["aud"], users["ola"]
    for refused in (lambda: cg.suggestions(aud, "cases"), lambda: cg.suggestions(ola, "cases"),
                    lambda: cg.answer_merge(ola, ids["p"], ids["p2"], True),
                    lambda: cg.answer_attach(aud, ids["f"], ids["p"], False)):
        with pytest.raises(PermissionDenied):
            refused()
    assert cg.answer_attach(ivy, ids["f"], ids["p"], False) is None
    found = cg.suggestions(ivy, "cases")
    assert ids["f"] not in [a.face_id for a in found.attaches]  # rejected: not offered again
    assert cg.clusters.cluster_of(ids["f"]) is None

    merged = cg.answer_merge(ivy, ids["p2"], ids["p"], True)
    assert merged is not None and merged.faces_moved == 3
    assert {cg.clusters.cluster_of(f) for f in ids["p_ids"]} == {merged.cluster_id}
    assert not cg.suggestions(ivy, "cases").merges  # P is whole again, and never with Q

    records = [e for e in cg.audit.entries() if e.action == "cluster_suggestion"]
    rejected, accepted = records[-2].details, records[-1].details
    assert rejected["kind"] == "attach" and rejected["decision"] == "rejected"
    assert rejected["face_id"] == ids["f"] and rejected["cluster_id"] == ids["p"]
    assert rejected["score"] == pytest.approx(0.36, abs=1e-3) and 1e-6 < rejected["fmr"] < 1e-5
    assert accepted["kind"] == "merge" and accepted["decision"] == "accepted"
    assert accepted["clusters"] == sorted([ids["p"], ids["p2"]]) and accepted["score"] > 0.5
    assert all(r.actor == "ivy" for r in records[-2:]) and cg.audit.verify().ok
    # a later automatic run keeps the person's merge (pinned) and leaves the rejected face alone
    cg.run(ivy, "cases", full=True)
    assert {cg.clusters.cluster_of(f) for f in ids["p_ids"]} == {merged.cluster_id}


def test_accepting_an_attach_moves_the_face_in_pinned(scene):
    cg, users, ids = scene
    result = cg.answer_attach(users["ivy"], ids["f"], ids["p"], True)
    assert result.cluster_id == ids["p"] and cg.clusters.cluster_of(ids["f"]) == ids["p"]
    assert cg.clusters.store.placements([ids["f"]])[ids["f"]].pinned
    assert ids["f"] not in [a.face_id for a in cg.suggestions(users["ivy"], "cases").attaches]


def test_a_face_is_never_suggested_into_a_cluster_holding_its_image(tmp_path):
    engine = Engine.open(tmp_path / "home", backend="faiss")
    try:
        rng = np.random.default_rng(3)
        members = faces_of(rng, unit_vectors(rng, 1)[0], 4)
        ids = []
        info = engine.create_collection("cases", "test")
        from facesearch.catalog import NewFace

        def face(vector):
            return NewFace(0, (10.0, 10.0, 90.0, 90.0), [[30, 40], [70, 40], [50, 55], [35, 70], [65, 70]], 0.9,
                           0.9, (), vector, None)

        # one photo holds member 0 and a face close to it only (a poster of the same person behind him)
        ids += engine.catalog.add_image(info.id, "a" * 64, "/x/group.jpg", 100, 100, 1,
                                        [face(members[0]), face(near_one_member(members, 0, 0.36, rng))],
                                        engine.config.pack)
        for n, vector in enumerate(members[1:]):
            ids += engine.catalog.add_image(info.id, f"{n:064d}", f"/x/{n}.jpg", 100, 100, 1, [face(vector)],
                                            engine.config.pack)
        clusters = Clusters(engine)
        clusters.run("cases")
        poster = ids[1]
        assert clusters.cluster_of(poster) is None and clusters.cluster_of(ids[0]) is not None
        assert poster not in [a.face_id for a in ClusterSuggestions(clusters).suggest("cases").attaches]
    finally:
        engine.close()


def test_cli_suggestions_accept_and_reject(scene, cli):
    cg, _, ids = scene
    home = cg.gov.engine.home
    cg.gov.engine.close()
    code, out, err = cli("cluster", "suggestions", "--collection", "cases", "--home", home)
    assert code == 0, err
    assert f"face {ids['f']} -> cluster {ids['p']} (3 faces), 1 neighbour(s)" in out
    assert "two different people score this high in about 1 in" in out
    listed = json.loads(cli("cluster", "suggestions", "--collection", "cases", "--json", "--home", home)[1])
    assert {(m["cluster_a"], m["cluster_b"]) for m in listed["merges"]} == {tuple(sorted((ids["p"], ids["p2"])))}
    code, out, _ = cli("cluster", "reject", "merge", ids["p"], ids["p2"], "--home", home)
    assert code == 0 and "will not be suggested again (audited)" in out
    code, out, _ = cli("cluster", "accept", "attach", ids["f"], ids["p"], "--home", home)
    assert code == 0 and f"face {ids['f']} moved into cluster {ids['p']}, pinned (audited)" in out
    listed = json.loads(cli("cluster", "suggestions", "--collection", "cases", "--json", "--home", home)[1])
    assert listed["merges"] == [] and ids["f"] not in [a["face_id"] for a in listed["attaches"]]
    code, _, err = cli("cluster", "accept", "merge", ids["p"], ids["p"], "--home", home)
    assert code == 2 and "two different clusters" in err
    records = [json.loads(line) for line in cli("audit", "export", "--home", home)[1].splitlines()]
    answers = [r["details"] for r in records if r["action"] == "cluster_suggestion"]
    assert [(a["kind"], a["decision"]) for a in answers] == [("merge", "rejected"), ("attach", "accepted")]


def test_api_suggestions_and_answers(api_fresh_env):
    env = api_fresh_env(layout=LAYOUT)
    ivy = env.as_user("api_ivy")
    assert ivy.post("/api/collections/alpha/clusters/run", json={}).status_code == 200
    powell = env.faces["Colin_Powell_0001"][0]
    cluster = Clusters(env.engine).cluster_of(powell)
    split = ivy.post(f"/api/clusters/{cluster}/split", json={"face_ids": [powell]}).json()["cluster_id"]
    got = ivy.get("/api/collections/alpha/clusters/suggestions")
    assert got.status_code == 200, got.text
    body = got.json()
    (merge,) = [m for m in body["merges"] if {m["cluster_a"], m["cluster_b"]} == {cluster, split}]
    assert merge["average"]["fmr"] < 1e-4 and "1 in" in merge["average"]["words"]
    assert merge["sample_thumbnails_a"] and merge["sample_thumbnails_b"]
    assert ivy.get("/api/collections/beta/clusters/suggestions").status_code == 403  # not granted
    assert env.as_user("api_audrey").get("/api/collections/alpha/clusters/suggestions").status_code == 403
    answer = ivy.post("/api/clusters/suggestions/merge", json={"cluster_a": cluster, "cluster_b": split,
                                                               "accept": True})
    assert answer.status_code == 200 and answer.json()["accepted"] and answer.json()["faces_moved"] == 1
    assert Clusters(env.engine).cluster_of(powell) == answer.json()["cluster_id"]
    audit = env.as_user("api_audrey").get("/api/audit", params={"action": "cluster_suggestion"}).json()
    assert audit[0]["details"]["decision"] == "accepted" and audit[0]["actor"] == "api_ivy"
