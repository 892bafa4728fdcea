"""Clusters of unknown faces: batch then incremental runs, quality, pinned corrections, edits,
erasure, governance (roles, grants, opt-out, audit), the CLI and the API.

Two kinds of faces: synthetic embeddings inserted through the catalog (people = a random
centre plus noise; cosine about 0.6 within a person, about 0 between people: like real
faces) for the run logic, and the real models (buffalo_s) on the fixture photos of
tests/fixtures/lfw and tests/fixtures/subjects (Powell x4, Bush x3, Chavez x3) plus
augmented copies (mirrored, brighter, cropped) for everything a user does.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

import facesearch.services.clusters as clusters_module
from facesearch.catalog import CatalogError, NewFace
from facesearch.catalog.clusters import RunWrite
from facesearch.catalog.schema import Cluster, ClusterFace, ClusterRunState
from facesearch.governance import Governance, PermissionDenied
from facesearch.governance.clusters import ClusterGovernance
from facesearch.services.clusters import ClusterError, Clusters, cluster_collection
from facesearch.services.engine import Engine
from facesearch.services.subjects import Subjects
from tests.conftest import LFW, unit_vectors

MORE = Path(__file__).parent / "fixtures" / "subjects"
NOISE = 0.036  # within-person noise per dimension: cosine about 0.6 between two faces of one person


def photo(name: str) -> Path:
    path = LFW / f"{name}.jpg"
    return path if path.is_file() else MORE / f"{name}.jpg"


def augmented(folder: Path, name: str, how: str) -> Path:
    """A new photo of the same face: mirrored, brighter or cropped (different bytes, same person)."""
    with Image.open(photo(name)) as img:
        img = img.convert("RGB")
        if how == "mirror":
            img = ImageOps.mirror(img)
        elif how == "bright":
            img = ImageEnhance.Brightness(img).enhance(1.35)
        elif how == "crop":
            w, h = img.size
            img = img.crop((20, 20, w - 20, h - 20)).resize((w, h), Image.Resampling.BICUBIC)
        folder.mkdir(parents=True, exist_ok=True)
        out = folder / f"{name}_{how}.jpg"
        img.save(out, quality=92)
    return out


# -- synthetic faces through the catalog ------------------------------------------------------------------


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def faces_of(rng, centre: np.ndarray, n: int) -> np.ndarray:
    return unit(centre[None, :] + NOISE * rng.standard_normal((n, len(centre))))


_serial = iter(range(10**9))


def insert(engine: Engine, collection: str, vectors: np.ndarray, quality: float | list[float] = 0.9) -> list[int]:
    """Store synthetic faces (one per 'photo') in the catalog, as ingest would; returns their face ids."""
    try:
        info = engine.collection(collection)
    except CatalogError:
        info = engine.create_collection(collection, "synthetic test faces")
    qualities = np.broadcast_to(np.asarray(quality, np.float32), (len(vectors),))
    ids = []
    for vector, q in zip(vectors, qualities):
        n = next(_serial)
        digest = hashlib.sha256(f"synthetic {n}".encode()).hexdigest()
        face = NewFace(0, (10.0, 10.0, 90.0, 90.0), [[30, 40], [70, 40], [50, 55], [35, 70], [65, 70]], 0.9,
                       float(q), (), vector, None)
        ids += engine.catalog.add_image(info.id, digest, f"/synthetic/{n}.jpg", 100, 100, 1, [face],
                                        engine.config.pack)
    return ids


def placement(engine: Engine, face_ids: list[int]) -> dict[int, int | None]:
    placed = Clusters(engine).store.placements(face_ids)
    return {f: (placed[f].cluster_id if f in placed else None) for f in face_ids}


def people(rng, n: int, per: int, dim: int = 512) -> tuple[np.ndarray, list[np.ndarray]]:
    centres = unit_vectors(rng, n, dim)
    return centres, [faces_of(rng, c, per) for c in centres]


# -- runs: batch first, then incremental ----------------------------------------------------------------------


def test_first_run_is_batch_later_runs_place_only_new_faces(engine, monkeypatch):
    rng = np.random.default_rng(1)
    centres, groups = people(rng, 12, 5)
    ids = [insert(engine, "syn", g) for g in groups]
    lonely = insert(engine, "syn", unit_vectors(rng, 3))  # three people seen once
    clusters = Clusters(engine)

    first = clusters.run("syn", by="tester")
    assert first.mode == "full" and first.reason == "first run of this collection"
    assert first.faces_processed == first.faces == 63 and first.clusters == 12
    assert (first.in_clusters, first.unassigned) == (60, 3)
    where = placement(engine, [f for person in ids for f in person] + lonely)
    for person in ids:  # one cluster per person, a different one for each
        assert len({where[f] for f in person}) == 1 and where[person[0]] is not None
    assert len({where[person[0]] for person in ids}) == 12
    assert all(where[f] is None for f in lonely)  # singletons are left unassigned, not forced
    before = dict(where)

    # a small ingest: 3 more faces of person 0, 1 of person 1, 2 of a new person, 1 completing a
    # singleton, 1 new singleton. No batch clustering may run for it.
    monkeypatch.setattr(clusters_module, "cluster_faces", lambda *a, **k: pytest.fail("a full re-run"))
    newcomer = unit_vectors(rng, 1)[0]
    more_0 = insert(engine, "syn", faces_of(rng, centres[0], 3))
    more_1 = insert(engine, "syn", faces_of(rng, centres[1], 1))
    pair = insert(engine, "syn", faces_of(rng, newcomer, 2))
    lonely_vector = engine.catalog.embeddings_of([lonely[0]])[lonely[0]]
    completes = insert(engine, "syn", faces_of(rng, lonely_vector, 1))
    alone = insert(engine, "syn", unit_vectors(rng, 1))
    second = clusters.run("syn", by="tester")
    assert second.mode == "incremental" and second.faces_processed == 8
    assert "8 face(s) added since the last run" in second.reason
    assert "vector index" in second.graph and second.timings["knn"] >= 0
    now = placement(engine, list(before) + more_0 + more_1 + pair + completes + alone)
    assert all(now[f] == before[ids[0][0]] for f in more_0) and now[more_1[0]] == before[ids[1][0]]
    assert sorted(second.grown) == sorted({before[ids[0][0]], before[ids[1][0]]})
    assert now[pair[0]] == now[pair[1]] is not None and now[pair[0]] not in before.values()
    assert now[lonely[0]] == now[completes[0]] is not None  # an old singleton completed by a new face
    assert now[alone[0]] is None and all(now[f] is None for f in lonely[1:])
    assert sorted(second.new_clusters) == sorted({now[pair[0]], now[lonely[0]]})
    assert all(now[f] == before[f] for f in before if f != lonely[0])  # nothing old moved
    assert (second.clusters, second.unassigned) == (14, 3)

    third = clusters.run("syn", by="tester")
    assert third.mode == "none" and third.faces_processed == 0
    state = clusters.store.state(engine.collection("syn").id)
    assert state.last_face_id == alone[0] and state.faces_processed == 71 and state.mode == "incremental"


def test_full_run_when_asked_or_when_the_parameters_change(engine, monkeypatch):
    rng = np.random.default_rng(2)
    _, groups = people(rng, 4, 4)
    for g in groups:
        insert(engine, "syn", g)
    clusters = Clusters(engine)
    first = clusters.run("syn")
    ids = sorted(c.id for c in clusters.overview("syn").clusters)
    again = clusters.run("syn", full=True)
    assert again.mode == "full" and again.reason == "a full run was asked for"
    assert sorted(c.id for c in clusters.overview("syn").clusters) == ids  # groups mapped back onto their clusters
    assert again.new_clusters == [] and sorted(again.grown) == ids and first.new_clusters == ids
    changed = clusters.run("syn", params=clusters.params(k=5))
    assert changed.mode == "full" and "parameters changed" in changed.reason
    # many new faces at once: a batch run is cheaper than one query per face
    monkeypatch.setattr(clusters_module, "INCREMENTAL_LIMIT", 10)
    insert(engine, "syn", faces_of(rng, unit_vectors(rng, 1)[0], 17))
    big = clusters.run("syn", params=clusters.params(k=5))
    assert big.mode == "full" and "a batch run is cheaper" in big.reason


def test_poor_faces_never_bridge_two_people(engine):
    rng = np.random.default_rng(3)
    a, b = unit_vectors(rng, 2)
    face_a, face_b = insert(engine, "syn", faces_of(rng, a, 5)), insert(engine, "syn", faces_of(rng, b, 5))
    between = unit((a + b)[None, :])
    # in the batch run: a blurred face that looks like both, and two poor faces of a third person
    bridge = insert(engine, "syn", between, quality=0.1)
    third = unit_vectors(rng, 1)[0]
    poor_pair = insert(engine, "syn", faces_of(rng, third, 2), quality=0.1)
    clusters = Clusters(engine)
    run = clusters.run("syn")
    where = placement(engine, face_a + face_b + bridge + poor_pair)
    assert where[face_a[0]] != where[face_b[0]] and run.clusters == 2
    assert where[bridge[0]] in (where[face_a[0]], where[face_b[0]], None)
    assert where[poor_pair[0]] is None and where[poor_pair[1]] is None  # two poor faces never make a group
    # incrementally: another such face, and a good face that resembles both, arrive later
    late_poor = insert(engine, "syn", unit((a + b + 0.02 * rng.standard_normal(512))[None, :]), quality=0.1)
    late_good = insert(engine, "syn", unit((a + b + 0.02 * rng.standard_normal(512))[None, :]), quality=0.9)
    again = clusters.run("syn")
    assert again.mode == "incremental" and again.merged == []
    now = placement(engine, face_a + face_b + late_poor + late_good)
    assert len({now[f] for f in face_a}) == 1 and len({now[f] for f in face_b}) == 1
    assert now[face_a[0]] != now[face_b[0]]  # the average link of the two people stays near 0
    assert clusters.run("syn", full=True).clusters == 2


def test_pinned_placements_survive_incremental_and_full_runs(engine):
    rng = np.random.default_rng(4)
    centres, groups = people(rng, 3, 6)
    ids = [insert(engine, "syn", g) for g in groups]
    clusters = Clusters(engine)
    clusters.run("syn")
    c0, c1, c2 = (placement(engine, [person[0]])[person[0]] for person in ids)
    # a person moves a face of person 0 into person 1's cluster, and takes one of person 2's out
    moved, out = ids[0][0], ids[2][0]
    assert clusters.move([moved], c1, by="ivy").cluster_id == c1
    assert clusters.unassign([out], by="ivy").cluster_id is None
    clusters.name(c2, "  The Third Person ")
    assert clusters.store.cluster(c2).name == "The Third Person"
    # more faces of persons 0 and 2 arrive: the pinned face stays where it was put, the other stays out
    new0 = insert(engine, "syn", faces_of(rng, centres[0], 2))
    new2 = insert(engine, "syn", unit((engine.catalog.embeddings_of([out])[out] + 0.3 * centres[2])[None, :]))
    inc = clusters.run("syn")
    assert inc.mode == "incremental"
    where = placement(engine, [moved, out] + new0 + new2)
    assert where[moved] == c1 and where[out] is None
    assert where[new0[0]] == where[new0[1]] == c0 and where[new2[0]] == c2
    full = clusters.run("syn", full=True)
    assert full.mode == "full"
    where = placement(engine, [moved, out] + [f for p in ids for f in p[1:]])
    assert where[moved] == c1 and where[out] is None
    assert {where[f] for f in ids[0][1:]} == {c0} and {where[f] for f in ids[2][1:]} == {c2}
    assert clusters.store.cluster(c2).name == "The Third Person"  # the name survives a full re-run
    detail = clusters.cluster(c1)
    assert [m.face_id for m in detail.faces if m.pinned] == [moved] and detail.cluster.pinned == 1
    assert next(m for m in detail.faces if m.pinned).assigned_by == "ivy"
    # a run that computed before a person's edit committed cannot overwrite it
    state = clusters.store.state(engine.collection("syn").id)
    clusters.store.write_run(RunWrite(state.collection_id, "late run", "incremental", state.params,
                                      state.last_face_id, state.faces_processed, groups=[(c0, [moved, out])]))
    assert placement(engine, [moved, out]) == {moved: c1, out: None}


def test_edits_merge_split_move_and_ids_are_never_reused(engine):
    rng = np.random.default_rng(5)
    _, groups = people(rng, 3, 4)
    ids = [insert(engine, "syn", g) for g in groups]
    clusters = Clusters(engine)
    clusters.run("syn")
    c0, c1, c2 = (placement(engine, [p[0]])[p[0]] for p in ids)
    split = clusters.split(c0, ids[0][:3], by="ivy")
    assert split.cluster_id > max(c0, c1, c2) and clusters.cluster(split.cluster_id).cluster.size == 3
    merged = clusters.merge([c0, split.cluster_id], by="ivy")  # the larger (the split-off 3) is kept
    assert merged.cluster_id == split.cluster_id and merged.merged == [c0] and merged.faces_moved == 1
    with pytest.raises(CatalogError):
        clusters.store.cluster(c0)
    with pytest.raises(ClusterError):
        clusters.merge([c1], by="ivy")
    with pytest.raises(ClusterError):
        clusters.split(c1, ids[1], by="ivy")  # the whole cluster
    with pytest.raises(ClusterError):
        clusters.split(c1, ids[2][:1], by="ivy")  # not in it
    other = insert(engine, "elsewhere", faces_of(rng, unit_vectors(rng, 1)[0], 2))
    with pytest.raises(ClusterError):
        clusters.move(other[:1], c1, by="ivy")
    emptied = clusters.move(ids[2], c1, by="ivy")  # every face of c2: c2 goes
    assert emptied.emptied == [c2] and clusters.cluster(c1).cluster.size == 8
    fresh = clusters.new_cluster("syn", ids[2][:2], by="ivy", name="pair")
    assert fresh > max(c0, c1, c2, split.cluster_id)  # ids of removed clusters are never given again
    overview = clusters.overview("syn")
    assert [c.size for c in overview.clusters] == sorted((c.size for c in overview.clusters), reverse=True)
    assert overview.clusters[0].id == c1 and overview.clusters[0].samples[:1] != ()
    with pytest.raises(ClusterError):
        clusters.to_subject(c1, "found", by="ivy")  # neither a name nor a label
    subject, report = clusters.to_subject(c1, "found", label="someone", by="ivy")
    assert subject.faces == 6 and sorted(report.from_faces) == sorted(m.face_id for m in clusters.cluster(c1).faces)
    row = clusters.store.cluster(c1)
    assert (row.subject_id, row.name) == (subject.id, "someone")


def test_erasure_takes_faces_out_of_their_clusters(engine):
    rng = np.random.default_rng(6)
    _, groups = people(rng, 2, 3)
    ids = [insert(engine, "syn", g) for g in groups]
    clusters = Clusters(engine)
    clusters.run("syn")
    c0 = placement(engine, [ids[0][0]])[ids[0][0]]
    engine.erase_faces(ids[0][:1])
    assert clusters.cluster(c0).cluster.size == 2 and clusters.store.placements(ids[0][:1]) == {}
    engine.erase_faces(ids[0][1:])
    assert c0 not in [c.id for c in clusters.overview("syn").clusters]
    assert clusters.run("syn").mode == "none"
    with pytest.raises(CatalogError):
        clusters.store.cluster(c0)  # an emptied cluster is removed by the next run
    engine.erase_collection("syn")
    with engine.catalog.session() as s:
        assert s.query(Cluster).count() == 0 and s.query(ClusterFace).count() == 0
        assert s.query(ClusterRunState).count() == 0


def test_incremental_run_places_only_the_new_faces(engine):
    """A few thousand faces: an incremental run processes only the 20 new ones (times printed; the
    speed itself is measured by bench/cluster_incremental.py, not asserted in a unit test)."""
    rng = np.random.default_rng(7)
    centres = unit_vectors(rng, 300)
    insert(engine, "syn", unit(np.repeat(centres, 8, axis=0) + NOISE * rng.standard_normal((2400, 512))))
    engine.index_of(engine.collection("syn"))  # the index holds every face before timing
    clusters = Clusters(engine)
    full = clusters.run("syn")
    insert(engine, "syn", unit(centres[:20] + NOISE * rng.standard_normal((20, 512))))
    engine.index_of(engine.collection("syn"))
    inc = clusters.run("syn")
    print(f"2,400 faces: full {full.timings['total']:.3f} s; 20 new faces, incremental {inc.timings['total']:.3f} s")
    assert full.mode == "full" and inc.mode == "incremental" and inc.faces_processed == 20
    assert len(inc.grown) == 20 and inc.new_clusters == []


# -- real faces, through the governance layer -------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_template(tmp_path_factory, analyzer):
    """A home indexed once per module: ``cases`` (Powell 1-3 and a mirrored Powell 1, Bush 1-2,
    Chavez 1) and ``other`` (Chavez 3 and a brighter copy); copied for each test."""
    root = tmp_path_factory.mktemp("clusters_real")
    extra = root / "augmented"
    opened = Engine.open(root / "home", backend="faiss")
    engine = Engine(opened.home, opened.config, opened.catalog, analyzer_factory=lambda: analyzer)
    engine.index([photo("Colin_Powell_0001"), photo("Colin_Powell_0002"), photo("Colin_Powell_0003"),
                  augmented(extra, "Colin_Powell_0001", "mirror"), photo("George_W_Bush_0001"),
                  photo("George_W_Bush_0002"), photo("Hugo_Chavez_0001")], "cases", progress=False)
    engine.index([photo("Hugo_Chavez_0003"), augmented(extra, "Hugo_Chavez_0003", "bright")], "other",
                 progress=False)
    engine.close()
    return root / "home", extra


@pytest.fixture
def real(real_template, tmp_path, analyzer):
    home = tmp_path / "home"
    shutil.copytree(real_template[0], home)
    opened = Engine.open(home, backend="faiss")
    engine = Engine(opened.home, opened.config, opened.catalog, analyzer_factory=lambda: analyzer)
    gov = Governance(engine)
    users = {name: gov.accounts.add_user(name, f"{name}-password-1", role)
             for name, role in (("ada", "admin"), ("ivy", "investigator"), ("aud", "auditor"))}
    gov.accounts.grant("ivy", engine.collection("cases").id)
    yield ClusterGovernance(gov), users, real_template[1]
    engine.close()


def people_of(engine: Engine, face_ids: list[int]) -> list[str]:
    infos = engine.catalog.faces(face_ids)
    return sorted({re.sub(r"_\d{4}.*", "", Path(infos[f].image_source).name) for f in face_ids})


def test_real_faces_group_by_person_and_new_photos_join(real, tmp_path):
    cg, users, extra = real
    ivy = users["ivy"]
    engine = cg.gov.engine
    run = cg.run(ivy, "cases")
    assert run.mode == "full" and (run.clusters, run.in_clusters, run.unassigned) == (2, 6, 1)
    overview = cg.overview(ivy, "cases")
    assert [c.size for c in overview.clusters] == [4, 2]  # largest first
    powell, bush = overview.clusters
    assert people_of(engine, list(cg.cluster(ivy, powell.id).cluster.samples)) == ["Colin_Powell"]
    assert people_of(engine, [m.face_id for m in cg.cluster(ivy, bush.id).faces]) == ["George_W_Bush"]
    quality = {m.face_id: m.quality for m in cg.cluster(ivy, powell.id).faces}
    assert list(powell.samples) == sorted(quality, key=lambda f: (-quality[f], f))  # best faces first

    # new photos: Powell 4 and Bush 3 join their people; Chavez 2 completes the lone Chavez 1
    engine.index([photo("Colin_Powell_0004"), photo("George_W_Bush_0003"), photo("Hugo_Chavez_0002"),
                  augmented(tmp_path, "George_W_Bush_0001", "crop")], "cases", progress=False)
    inc = cg.run(ivy, "cases")
    assert inc.mode == "incremental" and inc.faces_processed == 4
    assert sorted(inc.grown) == sorted([powell.id, bush.id]) and len(inc.new_clusters) == 1
    after = {c.id: c for c in cg.overview(ivy, "cases").clusters}
    assert (after[powell.id].size, after[bush.id].size) == (5, 4)
    chavez = after[inc.new_clusters[0]]
    assert chavez.size == 2 and people_of(engine, list(chavez.samples)) == ["Hugo_Chavez"]

    # name -> becomes a subject; the subject then identifies a photo of him
    cg.name(ivy, powell.id, "Colin Powell")
    subject, report = cg.to_subject(ivy, powell.id, "identified")
    assert subject.label == "Colin Powell" and subject.gallery == "identified" and len(report.added) == 5
    assert sorted(report.from_faces) == sorted(m.face_id for m in cg.cluster(ivy, powell.id).faces)
    assert cg.clusters.store.cluster(powell.id).subject_id == subject.id
    found = Subjects(engine).identify(augmented(tmp_path, "Colin_Powell_0002", "crop"), galleries=["identified"])
    assert found.candidates[0].subject_id == subject.id and found.candidates[0].above_threshold
    again, more = cg.to_subject(ivy, powell.id, "identified")  # already a subject: nothing enrolled twice
    assert again.id == subject.id and more.added == [] and again.faces == 5


def test_cluster_work_is_governed_and_audited(real):
    cg, users, _ = real
    ada, ivy, aud = users["ada"], users["ivy"], users["aud"]
    cg.run(ada, "other")
    (theirs,) = cg.overview(ada, "other").clusters  # Chavez 3 and its brighter copy
    cg.run(ivy, "cases")
    powell, bush = cg.overview(ivy, "cases").clusters
    for refused in (lambda: cg.run(aud, "cases"), lambda: cg.overview(aud, "cases"),
                    lambda: cg.cluster(aud, powell.id), lambda: cg.run(ivy, "other"),
                    lambda: cg.overview(ivy, "other"), lambda: cg.name(ivy, theirs.id, "x"),
                    lambda: cg.merge(ivy, [powell.id, theirs.id]),
                    lambda: cg.move(ivy, [theirs.samples[0]], powell.id)):
        with pytest.raises(PermissionDenied):
            refused()
    with pytest.raises(PermissionDenied) as absent:
        cg.cluster(ivy, 987_654)
    with pytest.raises(PermissionDenied) as hidden:
        cg.cluster(ivy, theirs.id)
    assert str(absent.value).replace("987654", "N") == str(hidden.value).replace(str(theirs.id), "N")

    split = cg.split(ivy, powell.id, list(powell.samples[:2]))
    merged = cg.merge(ivy, [powell.id, split.cluster_id])
    moved = cg.move(ivy, [bush.samples[0]], merged.cluster_id)
    out = cg.unassign(ivy, [bush.samples[1]], cluster_id=bush.id)
    assert out.emptied == [bush.id]  # both of Bush's faces are gone from it
    cg.name(ivy, merged.cluster_id, "Colin Powell")
    subject, _ = cg.to_subject(ivy, merged.cluster_id, "identified", attributes={"contact": "+1 555 0199"})
    log = {e.action: e for e in cg.audit.entries()}
    assert log["cluster_run"].details["collection"] == "cases" and log["cluster_run"].actor == "ivy"
    assert log["cluster_split"].details == {"cluster_id": powell.id, "new_cluster_id": split.cluster_id,
                                            "faces": list(powell.samples[:2])}
    assert log["cluster_merge"].details["merged"] == merged.merged
    assert log["cluster_move"].details == {"cluster_id": merged.cluster_id, "faces": [bush.samples[0]],
                                           "from": [bush.id], "emptied": []} and moved.faces == [bush.samples[0]]
    assert log["cluster_unassign"].details["from"] == [bush.id]
    assert log["cluster_name"].details == {"cluster_id": merged.cluster_id, "named": True}
    assert log["cluster_to_subject"].details["subject_id"] == subject.id
    assert log["subject_add"].details["subject_id"] == subject.id  # the subject's own records too
    everything = json.dumps([e.to_dict() for e in cg.audit.entries()])
    assert "Colin Powell" not in everything and "555 0199" not in everything  # names stay in the catalog
    assert cg.audit.verify().ok


def test_opted_out_faces_are_neither_clustered_nor_shown(real):
    cg, users, _ = real
    ada = users["ada"]
    cg.run(ada, "cases")
    powell = cg.overview(ada, "cases").clusters[0]
    assert powell.size == 4
    cg.gov.opt_out(ada, photo("Colin_Powell_0004").read_bytes(), "REQ-31")
    assert [c.size for c in cg.overview(ada, "cases").clusters] == [2]  # only Bush's cluster is shown
    assert cg.cluster(ada, powell.id).faces == []
    with pytest.raises(PermissionDenied):
        cg.move(ada, [powell.samples[0]], powell.id)
    full = cg.run(ada, "cases", full=True)
    assert full.suppressed == 4 and full.faces_processed == 3 and full.clusters == 1
    assert cg.audit.entries(action="cluster_run")[-1].details["suppressed"] == 4


# -- the CLI --------------------------------------------------------------------------------------------------------


def test_cli_cluster_commands(cli, tmp_path):
    home = tmp_path / "cli_home"
    names = ["Colin_Powell_0001", "Colin_Powell_0002", "Colin_Powell_0003", "George_W_Bush_0001",
             "George_W_Bush_0002", "Hugo_Chavez_0001"]
    code, _, err = cli("index", *[photo(n) for n in names], "--collection", "cases", "--home", home)
    assert code == 0, err
    code, _, err = cli("cluster", "--home", home)
    assert code == 2 and "give --collection NAME" in err
    code, _, err = cli("cluster", "--collection", "nope", "--home", home)
    assert code == 2 and "no collection named 'nope'" in err
    code, out, err = cli("cluster", "--collection", "cases", "--home", home)
    assert code == 0, err
    assert "full run (first run of this collection)" in out and "clustered 6 face(s): 2 new cluster(s)" in out
    assert "2 cluster(s); 5 of 6 face(s) in clusters, 1 unassigned" in out and "knn" in out
    code, out, err = cli("index", photo("Colin_Powell_0004"), "--collection", "cases", "--home", home)
    assert code == 0, err
    code, out, _ = cli("cluster", "--collection", "cases", "--json", "--home", home)
    run = json.loads(out)
    assert run["mode"] == "incremental" and run["faces_processed"] == 1 and len(run["grown"]) == 1
    powell = run["grown"][0]

    code, out, _ = cli("cluster", "list", "--collection", "cases", "--home", home)
    assert re.search(rf"cluster {powell}\s+4 face\(s\)", out) and "1 unassigned" in out
    assert out.index(f"cluster {powell} ") < out.index("2 face(s)")  # largest first
    listed = json.loads(cli("cluster", "list", "--collection", "cases", "--json", "--home", home)[1])
    bush = listed["clusters"][1]["id"]
    faces = json.loads(cli("cluster", "show", str(powell), "--json", "--home", home)[1])["faces"]
    assert len(faces) == 4
    code, out, _ = cli("cluster", "split", str(powell), "--face", str(faces[0]["face_id"]), "--home", home)
    assert code == 0 and f"split 1 face(s) of cluster {powell} into new cluster" in out
    new = int(re.search(r"new cluster (\d+)", out).group(1))
    code, out, _ = cli("cluster", "merge", str(powell), str(new), "--home", home)
    assert code == 0 and f"merged cluster(s) {new} into cluster {powell}: 1 face(s) moved" in out
    bush_face = json.loads(cli("cluster", "show", str(bush), "--json", "--home", home)[1])["faces"][0]["face_id"]
    code, out, _ = cli("cluster", "move", str(bush_face), "--to", str(powell), "--home", home)
    assert code == 0 and f"moved 1 face(s) to cluster {powell}" in out
    code, out, _ = cli("cluster", "unassign", str(bush_face), "--home", home)
    assert code == 0 and "took 1 face(s) out of their cluster" in out
    code, out, _ = cli("cluster", "name", str(powell), "Colin Powell", "--home", home)
    assert code == 0 and f"cluster {powell} named 'Colin Powell'" in out
    code, out, err = cli("cluster", "to-subject", str(powell), "--gallery", "identified", "--home", home)
    assert code == 0, err
    assert re.search(rf"cluster {powell} is now subject \d+ 'Colin Powell' in gallery 'identified': 4 face", out)
    code, out, _ = cli("cluster", "show", str(powell), "--home", home)
    assert "'Colin Powell'" in out and "pinned by local:" in out and "subject 1" in out
    code, _, err = cli("cluster", "show", "999", "--home", home)
    assert code == 2 and "cluster 999 is not in a collection you may see" in err
    records = [json.loads(line) for line in cli("audit", "export", "--home", home)[1].splitlines()]
    actions = [r["action"] for r in records]
    for action in ("cluster_run", "cluster_split", "cluster_merge", "cluster_move", "cluster_unassign",
                   "cluster_name", "cluster_to_subject", "subject_enroll"):
        assert action in actions, action
    assert "Colin Powell" not in json.dumps(records)


# -- the API ----------------------------------------------------------------------------------------------------------

LAYOUT = {"alpha": ["Colin_Powell_0001", "Colin_Powell_0002", "George_W_Bush_0001", "George_W_Bush_0002"],
          "beta": ["Hugo_Chavez_0001", "Hugo_Chavez_0002"]}


def test_api_run_list_edit_and_make_subject(api_fresh_env):
    env = api_fresh_env(layout=LAYOUT)
    ivy = env.as_user("api_ivy")
    ran = ivy.post("/api/collections/alpha/clusters/run", json={})
    assert ran.status_code == 200, ran.text
    assert ran.json()["mode"] == "full" and ran.json()["clusters"] == 2
    assert ivy.post("/api/collections/alpha/clusters/run").json()["mode"] == "none"  # no body needed
    with env.engine.writing():  # an ingest holds the home: a run is refused, not queued behind it
        busy = ivy.post("/api/collections/alpha/clusters/run")
    assert busy.status_code == 409 and "try again" in busy.json()["detail"]
    assert ivy.post("/api/collections/beta/clusters/run").status_code == 403  # not granted
    listed = ivy.get("/api/collections/alpha/clusters").json()
    assert (listed["total_clusters"], listed["in_clusters"], listed["unassigned"]) == (2, 4, 0)
    assert listed["last_run"]["ran_by"] == "api_ivy"
    assert [c["size"] for c in listed["clusters"]] == [2, 2]
    powell_faces = set(env.faces["Colin_Powell_0001"] + env.faces["Colin_Powell_0002"])
    first = next(c for c in listed["clusters"] if set(c["samples"]) == powell_faces)
    second = next(c for c in listed["clusters"] if c["id"] != first["id"])
    thumb = ivy.get(first["sample_thumbnails"][0])
    assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"

    admin = env.as_user("api_admin")
    admin.post("/api/collections/beta/clusters/run")
    beta = admin.get("/api/collections/beta/clusters").json()["clusters"][0]
    assert ivy.get(f"/api/clusters/{beta['id']}").status_code == 403
    assert ivy.get("/api/clusters/987654").status_code == 403
    assert ivy.post("/api/clusters/merge", json={"cluster_ids": [first["id"], beta["id"]]}).status_code == 403
    assert ivy.post("/api/clusters/merge", json={"cluster_ids": [first["id"]]}).status_code == 422
    assert ivy.post(f"/api/clusters/{first['id']}/split", json={"face_ids": []}).status_code == 422
    assert ivy.put(f"/api/clusters/{first['id']}/name", json={"name": "x" * 201}).status_code == 422

    bush_face = env.faces["George_W_Bush_0001"][0]
    moved = ivy.post(f"/api/clusters/{first['id']}/faces", json={"face_ids": [bush_face]})
    assert moved.status_code == 200 and moved.json()["cluster_id"] == first["id"]
    shown = ivy.get(f"/api/clusters/{first['id']}").json()
    assert shown["size"] == 3 and [f["face_id"] for f in shown["faces"] if f["pinned"]] == [bush_face]
    back = ivy.post(f"/api/clusters/{first['id']}/unassign", json={"face_ids": [bush_face]})
    assert back.status_code == 200 and back.json()["cluster_id"] is None
    wrong = ivy.post(f"/api/clusters/{second['id']}/unassign", json={"face_ids": [bush_face]})
    assert wrong.status_code == 400  # not in that cluster (any more)

    named = ivy.put(f"/api/clusters/{first['id']}/name", json={"name": "Colin Powell"})
    assert named.status_code == 200 and named.json()["name"] == "Colin Powell"
    made = ivy.post(f"/api/clusters/{first['id']}/subject", json={"gallery": "api-found"})
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["label"] == "Colin Powell" and len(body["enrolled"]) == 2 and body["gallery"] == "api-found"
    subject = ivy.get(f"/api/subjects/{body['subject_id']}").json()
    assert subject["faces"] == 2 and {f["face_id"] for f in subject["enrolled"]} == set(first["samples"])
    assert ivy.get(f"/api/clusters/{first['id']}").json()["subject_id"] == body["subject_id"]
    audit = env.as_user("api_audrey").get("/api/audit", params={"action": "cluster_to_subject"}).json()
    assert audit[0]["details"]["cluster_id"] == first["id"] and audit[0]["actor"] == "api_ivy"


def test_api_cluster_pages(api_env):
    ivy = api_env.login("api_ivy")
    page = ivy.get("/clusters")
    assert page.status_code == 200 and 'id="clusters-page"' in page.text and "/static/clusters.js" in page.text
    assert '<a href="/clusters"' in page.text  # the menu links the page
    assert ivy.get("/clusters/1").status_code == 200 and 'data-cluster-id="1"' in ivy.get("/clusters/1").text
    assert 'data-collection="alpha"' in ivy.get("/clusters?collection=alpha").text
    assert api_env.login("api_audrey").get("/clusters", follow_redirects=False).status_code == 403
    assert api_env.anon.get("/clusters/1", follow_redirects=False).headers["location"].endswith("/login")
    script = api_env.anon.get("/static/clusters.js")
    assert script.status_code == 200 and "initClusterPage" in script.text


def test_cluster_collection_function_and_timings(engine):
    rng = np.random.default_rng(8)
    insert(engine, "syn", faces_of(rng, unit_vectors(rng, 1)[0], 3))
    start = time.perf_counter()
    run = cluster_collection(engine, "syn", by="script")
    assert run.mode == "full" and run.clusters == 1 and run.timings["total"] <= time.perf_counter() - start
    assert set(run.timings) >= {"read", "knn", "cluster", "write", "total"}
    assert "average link" in run.params and run.to_dict()["collection"] == "syn"
