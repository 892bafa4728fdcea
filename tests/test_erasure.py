"""Erasure removes a face for real: its vector, its catalog row, its thumbnail, and an image
left without faces; by probe (``erase_like``), by face, by image and by collection."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from facesearch.catalog.schema import FaceRecord, ImageRecord, IngestEvent
from facesearch.index import open_index

from .conftest import INDEX_BACKENDS, LFW, WHY, backend_name, backend_options


@pytest.fixture
def album(tmp_path, two_people) -> Path:
    """Powell in three images (his 0001 photo, a mirrored and enlarged copy of it, and the
    two-people photo where Bush is also present), plus Bush_0001 and Hugo_Chavez_0001."""
    folder = tmp_path / "album"
    folder.mkdir()
    for name in ("Colin_Powell_0001", "George_W_Bush_0001", "Hugo_Chavez_0001"):
        shutil.copyfile(LFW / f"{name}.jpg", folder / f"{name}.jpg")
    with Image.open(LFW / "Colin_Powell_0001.jpg") as img:
        ImageOps.mirror(img.convert("RGB")).resize((220, 220), Image.Resampling.BICUBIC).save(
            folder / "powell_mirrored.png")
    shutil.copyfile(two_people, folder / "two_people.png")
    return folder


def _faces_by_image(engine, collection="album") -> dict[str, list]:
    info = engine.collection(collection)
    faces = engine.catalog.faces(engine.catalog.face_ids(info.id).tolist())
    out: dict[str, list] = {}
    for face in faces.values():
        out.setdefault(Path(face.image_source).name, []).append(face)
    return out


def _assert_consistent(engine) -> None:
    for report in engine.doctor(repair=False):
        assert report.consistent, report


def _image_row(engine, image_id):
    with engine.catalog.session() as s:
        return s.get(ImageRecord, image_id)


@pytest.mark.parametrize("backend", INDEX_BACKENDS)
def test_erase_like_a_probe_removes_vectors_rows_and_thumbnails(backend, album, open_engine, request):
    engine = open_engine(backend)
    summary = engine.index([album], "album", progress=False)
    assert summary.faces_indexed == 6
    before = _faces_by_image(engine)
    powell_faces = [f for name in ("Colin_Powell_0001.jpg", "powell_mirrored.png") for f in before[name]]
    group = before["two_people.png"]
    assert len(group) == 2
    thumbs = {f.id: engine.thumbnails.path(f.thumbnail) for faces in before.values() for f in faces}
    assert all(p.is_file() for p in thumbs.values())

    report = engine.erase_like(LFW / "Colin_Powell_0002.jpg", min_score=0.3)

    erased = set(report.faces)
    # the three Powell faces (two single-face images, one face of the group photo), nobody else
    assert len(erased) == 3
    assert {f.id for f in powell_faces} < erased
    powell_in_group = (erased - {f.id for f in powell_faces}).pop()
    assert powell_in_group in {f.id for f in group}
    assert report.thumbnails_deleted == 3
    assert sorted(report.images) == sorted(f.image_id for f in powell_faces)

    # gone from the catalog ...
    assert engine.catalog.faces(sorted(erased)) == {}
    assert engine.catalog.embeddings_of(sorted(erased)) == {}
    for image_id in report.images:
        assert _image_row(engine, image_id) is None
    # ... the group photo stays, with its one remaining face
    remaining = _image_row(engine, group[0].image_id)
    assert remaining is not None and remaining.face_count == 1
    # ... from disk
    for face_id in erased:
        assert not thumbs[face_id].exists()
    for face_id in set(thumbs) - erased:
        assert thumbs[face_id].is_file()
    # ... and from the index: another photo of him finds none of them
    result = engine.search(LFW / "Colin_Powell_0001.jpg", top_k=20)
    assert not {c.face_id for c in result.candidates} & erased
    assert not result.confident
    assert len(result.candidates) == 3
    info = engine.collection("album")
    assert not set(engine.index_of(info).ids().tolist()) & erased
    _assert_consistent(engine)

    # the erasure is persistent: the index on disk (read without the catalog) lacks them too
    engine.close()
    name, options = backend_options(request, backend)
    stored = open_index(name, directory=engine.home / "index", collection_id=info.id, **options)
    assert sorted(stored.ids().tolist()) == sorted(set(thumbs) - erased)


def test_erase_like_below_min_score_erases_nothing(album, open_engine):
    engine = open_engine()
    engine.index([album], "album", progress=False)
    report = engine.erase_like(LFW / "Colin_Powell_0002.jpg", min_score=0.95)
    assert report.faces == [] and report.images == []
    assert engine.collection("album").faces == 6


@pytest.mark.parametrize("backend", INDEX_BACKENDS)
def test_erase_collection_drops_its_index(backend, album, lfw, open_engine):
    engine = open_engine(backend)
    engine.index([album], "album", progress=False)
    engine.index([lfw("Hugo_Chavez_0002")], "other", progress=False)
    info = engine.collection("album")
    other = engine.collection("other")
    thumbs_dir = engine.thumbnails.root / f"c{info.id}"
    assert any(thumbs_dir.rglob("*.jpg"))

    report = engine.erase_collection("album")
    assert report.collections == ["album"]
    assert len(report.faces) == 6 and len(report.images) == 5
    assert report.thumbnails_deleted == 6
    assert [c.name for c in engine.collections()] == ["other"]
    assert not any(thumbs_dir.rglob("*.jpg"))
    assert engine.catalog.face_ids(info.id).tolist() == []
    with engine.catalog.session() as s:
        assert s.query(ImageRecord).filter_by(collection_id=info.id).count() == 0
        assert s.query(IngestEvent).filter_by(collection_id=info.id).count() == 0
        assert s.query(FaceRecord).count() == 1
    if backend_name(backend) == "faiss":
        assert not (engine.home / "index" / "faiss" / f"c{info.id}").exists()
    else:
        from pymilvus import MilvusClient

        client = MilvusClient(uri=engine.config.milvus_uri or str(engine.home / "index" / "milvus.db"))
        assert not client.has_collection(f"facesearch_c{info.id}")
        assert client.has_collection(f"facesearch_c{other.id}")
        client.close()
    # the other collection is untouched and still searchable
    result = engine.search(lfw("Hugo_Chavez_0001"))
    assert result.collections == ["other"]
    assert result.candidates[0].above_threshold
    _assert_consistent(engine)


# -- through the CLI ----------------------------------------------------------------------------------


@pytest.fixture
def cli_home(tmp_path, album) -> Path:
    from facesearch.services.engine import Engine

    home = tmp_path / "clihome"
    with Engine.open(home) as engine:
        engine.index([album], "album", progress=False)
    return home


def _doctor_ok(cli, home) -> list[dict]:
    code, out, err = cli("doctor", "--home", home, "--check-only", "--json")
    assert code == 0, (out, err)
    reports = json.loads(out)
    assert all(r["consistent"] for r in reports), reports
    return reports


def _open(home):
    from facesearch.services.engine import Engine

    return Engine.open(home)


def test_cli_erase_image(cli, cli_home):
    with _open(cli_home) as engine:
        faces = _faces_by_image(engine)
    bush = faces["George_W_Bush_0001.jpg"][0]
    code, out, err = cli("erase", "--image", bush.image_id, "--home", cli_home)
    assert code == 0, err
    assert f"erased 1 face(s) [{bush.id}]" in out
    assert f"images removed: 1 [{bush.image_id}]" in out
    assert "thumbnails deleted: 1" in out
    with _open(cli_home) as engine:
        assert engine.catalog.faces([bush.id]) == {}
        assert not engine.thumbnails.path(bush.thumbnail).exists()
        assert _image_row(engine, bush.image_id) is None
        result = engine.search(LFW / "George_W_Bush_0002.jpg", top_k=10)
        assert bush.id not in [c.face_id for c in result.candidates]
    reports = _doctor_ok(cli, cli_home)
    assert reports[0]["catalog_faces"] == reports[0]["index_faces"] == 5


def test_cli_erase_faces_one_by_one(cli, cli_home):
    with _open(cli_home) as engine:
        group = sorted(_faces_by_image(engine)["two_people.png"], key=lambda f: f.id)
    first, second = group
    code, out, err = cli("erase", "--face", first.id, "--home", cli_home)
    assert code == 0, err
    assert f"erased 1 face(s) [{first.id}]" in out and "images removed: 0" in out
    with _open(cli_home) as engine:
        row = _image_row(engine, first.image_id)
        assert row is not None and row.face_count == 1
        assert not engine.thumbnails.path(first.thumbnail).exists()
        assert engine.thumbnails.path(second.thumbnail).is_file()
    _doctor_ok(cli, cli_home)
    code, out, err = cli("erase", "--face", second.id, "--home", cli_home, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["faces"] == [second.id] and data["images"] == [second.image_id]
    assert data["thumbnails_deleted"] == 1
    with _open(cli_home) as engine:
        assert _image_row(engine, second.image_id) is None
        assert engine.collection("album").faces == 4
    _doctor_ok(cli, cli_home)


def test_cli_erase_collection(cli, cli_home):
    with _open(cli_home) as engine:
        info = engine.collection("album")
    code, out, err = cli("erase", "--collection", "album", "--home", cli_home)
    assert code == 0, err
    assert "erased 6 face(s)" in out
    assert "images removed: 5" in out
    assert "thumbnails deleted: 6" in out
    assert "collections removed: album" in out
    assert not (cli_home / "index" / "faiss" / f"c{info.id}").exists()
    assert not [p for p in (cli_home / "thumbs").rglob("*") if p.is_file()]
    code, out, err = cli("collections", "--home", cli_home)
    assert code == 0 and "album" not in out
    code, out, err = cli("search", LFW / "Colin_Powell_0002.jpg", *WHY, "--home", cli_home, "--collection", "album")
    assert code == 2 and "album" in err
    code, out, err = cli("erase", "--collection", "album", "--home", cli_home)
    assert code == 2 and "album" in err


def test_cli_erase_like(cli, cli_home):
    code, out, err = cli("erase", "--like", LFW / "Colin_Powell_0002.jpg", "--home", cli_home)
    assert code == 2 and "--min-score" in err
    code, out, err = cli("erase", "--like", LFW / "Colin_Powell_0002.jpg", "--min-score", "0.3", "--home", cli_home)
    assert code == 0, err
    assert "erased 3 face(s)" in out and "thumbnails deleted: 3" in out
    erased = [int(i) for i in re.search(r"erased 3 face\(s\) \[([\d, ]+)\]", out).group(1).split(",")]
    with _open(cli_home) as engine:
        assert engine.catalog.faces(erased) == {}
        ids = engine.index_of(engine.collection("album")).ids()
        assert not np.isin(erased, ids).any()
    _doctor_ok(cli, cli_home)


# -- an engine that stays open (a server) while another process writes --------------------------------


@pytest.mark.parametrize("backend", INDEX_BACKENDS)
def test_faces_indexed_by_another_process_are_found_by_an_open_engine(backend, lfw, open_engine):
    server = open_engine(backend)
    server.index([lfw("George_W_Bush_0001")], "c", progress=False)
    assert not server.search(lfw("Hugo_Chavez_0002")).confident
    other = open_engine(None, home=server.home)  # e.g. `facesearch index` run from a shell
    other.index([lfw("Hugo_Chavez_0001")], "c", progress=False)
    other.close()
    result = server.search(lfw("Hugo_Chavez_0002"))
    assert result.confident
    assert Path(result.candidates[0].image_source).name == "Hugo_Chavez_0001.jpg"


@pytest.mark.parametrize("backend", INDEX_BACKENDS)
def test_erasure_by_another_process_is_honoured_by_an_open_engine(backend, lfw, open_engine):
    """An engine that stays open must never return an erased person, even after the erasing
    process has gone on to index someone else."""
    server = open_engine(backend)
    server.index([lfw("George_W_Bush_0001"), lfw("Colin_Powell_0001")], "c", progress=False)
    assert server.search(lfw("Colin_Powell_0002")).confident

    other = open_engine(None, home=server.home)  # e.g. `facesearch erase` and `index` from a shell
    report = other.erase_like(lfw("Colin_Powell_0002"), min_score=0.3)
    assert len(report.faces) == 1
    other.index([lfw("Hugo_Chavez_0001")], "c", progress=False)
    other.close()

    result = server.search(lfw("Colin_Powell_0002"))
    shown = [(Path(c.image_source).name, c.similarity) for c in result.candidates]
    assert not result.confident, f"the erased person is still matched: {shown}"
    assert all(c.similarity < 0.3 for c in result.candidates), shown
    # and the newly indexed person is findable by that engine
    chavez = server.search(lfw("Hugo_Chavez_0002"))
    assert chavez.confident, [(Path(c.image_source).name, c.similarity) for c in chavez.candidates]
