"""Search and ``similar`` over an indexed home, through the Engine and the CLI.

Gallery ``people``: Colin_Powell_0001, George_W_Bush_0001, George_W_Bush_0002.
Gallery ``extra``: Hugo_Chavez_0002. Probes: the other photos of these people.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from facesearch.catalog import CatalogError
from facesearch.errors import NoFaceError
from facesearch.services.engine import Engine

from .conftest import INDEX_BACKENDS, LFW, WHY, backend_name
from .milvus_fixtures import empty_server


def _build(home: Path, backend: str, **options) -> Engine:
    engine = Engine.open(home, backend=backend, **options)
    engine.index([LFW / f"{n}.jpg" for n in ("Colin_Powell_0001", "George_W_Bush_0001", "George_W_Bush_0002")],
                 "people", progress=False)
    engine.index([LFW / "Hugo_Chavez_0002.jpg"], "extra", progress=False)
    return engine


@pytest.fixture(scope="module", params=INDEX_BACKENDS)
def gallery(request, tmp_path_factory) -> Engine:
    options = {}
    if request.param == "milvus-server":  # the session's real server, emptied for this module
        server = request.getfixturevalue("milvus_server")
        empty_server(server.uri)
        options = {"milvus_uri": server.uri}
    elif request.param == "faiss-mmap":
        options = {"faiss_storage": "mmap"}
    engine = _build(tmp_path_factory.mktemp(f"gallery_{request.param}") / "home",
                    backend_name(request.param), **options)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def faiss_home(tmp_path_factory) -> Path:
    """A faiss home with the same gallery, for the CLI (closed: each command opens it)."""
    home = tmp_path_factory.mktemp("cli_gallery") / "home"
    _build(home, "faiss").close()
    return home


def _name(candidate) -> str:
    return Path(candidate.image_source).stem


# -- the Engine ---------------------------------------------------------------------------------------


def test_other_photo_of_an_indexed_person_is_rank_one(gallery):
    result = gallery.search(LFW / "Colin_Powell_0002.jpg", collections=["people"])
    assert result.collections == ["people"]
    assert result.faces_searched == 3
    top = result.candidates[0]
    assert (top.rank, _name(top), top.collection) == (1, "Colin_Powell_0001", "people")
    assert top.above_threshold and top.similarity >= result.threshold
    assert result.confident
    assert top.false_match is not None
    assert 0 < top.false_match.rate < 1e-4
    assert top.false_match.words
    assert top.false_match.expected_in_gallery == pytest.approx(top.false_match.rate * 3)
    assert "false-match rate" in result.threshold_rule
    # the others are ranked below, below the threshold, with worse (higher) false-match rates
    assert [c.rank for c in result.candidates] == [1, 2, 3]
    assert [c.similarity for c in result.candidates] == sorted((c.similarity for c in result.candidates),
                                                               reverse=True)
    for c in result.candidates[1:]:
        assert not c.above_threshold
        assert c.false_match.rate > top.false_match.rate
    assert top.thumbnail and Path(top.thumbnail).is_file()
    assert result.probe.faces_in_image == 1 and result.probe.rule == "the only face"


def test_person_not_in_the_collection_gives_no_confident_match(gallery):
    result = gallery.search(LFW / "Hugo_Chavez_0001.jpg", collections=["people"])
    assert result.candidates, "below-threshold candidates are still listed"
    assert not result.confident
    assert all(not c.above_threshold for c in result.candidates)
    assert result.to_dict()["verdict"] == "no confident match"
    assert result.to_dict()["confident_match"] is False


def test_search_without_collections_searches_them_all(gallery):
    result = gallery.search(LFW / "Hugo_Chavez_0001.jpg")
    assert sorted(result.collections) == ["extra", "people"]
    assert result.faces_searched == 4
    top = result.candidates[0]
    assert (_name(top), top.collection, top.above_threshold) == ("Hugo_Chavez_0002", "extra", True)


def test_probe_with_several_faces_uses_the_largest_central_one(gallery, two_people):
    result = gallery.search(two_people, collections=["people"])
    assert result.probe.faces_in_image == 2
    assert "largest and most central" in result.probe.rule
    x1, y1, x2, y2 = result.probe.box
    assert x1 > 100 and y1 > 100  # Powell's face, pasted at (150, 150), not Bush's in the corner
    assert _name(result.candidates[0]) == "Colin_Powell_0001"
    # the other face, asked for by index, finds Bush
    other = 1 - result.probe.chosen
    bush = gallery.search(two_people, collections=["people"], face_index=other)
    assert bush.probe.chosen == other and "as requested" in bush.probe.rule
    assert _name(bush.candidates[0]).startswith("George_W_Bush")


def test_face_index_out_of_range_and_unknown_collection_are_errors(gallery):
    with pytest.raises(NoFaceError, match="face 3 requested"):
        gallery.search(LFW / "Colin_Powell_0002.jpg", face_index=3)
    with pytest.raises(CatalogError, match="nope"):
        gallery.search(LFW / "Colin_Powell_0002.jpg", collections=["nope"])


def test_similar_excludes_the_face_itself_and_ranks_the_same_person_first(gallery):
    info = gallery.collection("people")
    faces = gallery.catalog.faces(gallery.catalog.face_ids(info.id).tolist())
    bush1 = next(f.id for f in faces.values() if Path(f.image_source).stem == "George_W_Bush_0001")
    result = gallery.similar(bush1, top_k=10)
    ids = [c.face_id for c in result.candidates]
    assert bush1 not in ids
    assert len(ids) == 3  # every other face of the home
    assert _name(result.candidates[0]) == "George_W_Bush_0002"
    assert result.candidates[0].above_threshold
    assert not any(c.above_threshold for c in result.candidates[1:])
    with pytest.raises(CatalogError, match="no face with id"):
        gallery.similar(99_999)


# -- the CLI ---------------------------------------------------------------------------------------


def test_cli_search_text_for_a_match_and_for_no_match(cli, faiss_home):
    code, out, err = cli("search", LFW / "Colin_Powell_0002.jpg", *WHY, "--home", faiss_home, "--collection", "people")
    assert code == 0, err
    assert "NO CONFIDENT MATCH" not in out
    first = next(line for line in out.splitlines() if line.strip().startswith("#1 "))
    assert "ABOVE" in first and "Colin_Powell_0001.jpg" in first
    assert "different people score this high" in out

    code, out, err = cli("search", LFW / "Hugo_Chavez_0001.jpg", *WHY, "--home", faiss_home, "--collection", "people")
    assert code == 0, err
    assert "NO CONFIDENT MATCH" in out
    assert "ABOVE" not in out


def test_cli_search_json(cli, faiss_home):
    code, out, err = cli("search", LFW / "Colin_Powell_0002.jpg", *WHY, "--home", faiss_home, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["confident_match"] is True
    assert sorted(data["collections"]) == ["extra", "people"]
    top = data["candidates"][0]
    assert Path(top["image_source"]).name == "Colin_Powell_0001.jpg"
    assert top["above_threshold"] is True
    assert set(top["false_match"]) >= {"rate", "extrapolated", "expected_in_gallery", "fpir", "words"}
    assert data["probe"]["rule"] == "the only face"
    assert 0 < data["threshold"] <= top["similarity"]
    assert data["verdict"].startswith("candidate leads above the threshold")


def test_cli_search_several_faces_says_which_rule_chose(cli, faiss_home, two_people):
    code, out, err = cli("search", two_people, *WHY, "--home", faiss_home, "--collection", "people")
    assert code == 0, err
    assert "largest and most central" in out.splitlines()[0]


def test_cli_search_errors_exit_2(cli, faiss_home):
    probe = LFW / "Colin_Powell_0002.jpg"
    code, out, err = cli("search", probe, *WHY, "--home", faiss_home, "--face", "5")
    assert code == 2
    assert "face 5 requested" in err
    code, out, err = cli("search", probe, *WHY, "--home", faiss_home, "--collection", "no_such_collection")
    assert code == 2
    assert "no_such_collection" in err
    code, out, err = cli("search", LFW.parent / "missing.jpg", *WHY, "--home", faiss_home)
    assert code == 2 and "missing.jpg" in err


def test_cli_searches_need_a_purpose_and_a_case_and_are_audited(cli, faiss_home, capsys):
    probe = LFW / "Colin_Powell_0002.jpg"
    for missing in (("--case", "C-9"), ("--purpose", "find him")):
        code, _, err = cli("search", probe, *missing, "--home", faiss_home)
        assert code == 2 and "required" in err  # one line, no traceback (tests/test_cli_errors.py)
    code, out, err = cli("search", probe, "--purpose", "locate a witness", "--case", "C-9", "--home", faiss_home)
    assert code == 0, err
    with Engine.open(faiss_home) as engine:
        from facesearch.governance import Governance, local_operator

        records = Governance(engine).audit.entries()
    last = records[-1]
    assert last.action == "search" and last.actor == local_operator().username
    assert last.purpose == "locate a witness" and last.case_ref == "C-9"
    assert last.details["results"], last


def test_cli_similar(cli, faiss_home):
    with Engine.open(faiss_home) as engine:
        faces = engine.catalog.faces(engine.catalog.face_ids(engine.collection("people").id).tolist())
    bush2 = next(f.id for f in faces.values() if Path(f.image_source).stem == "George_W_Bush_0002")
    code, out, err = cli("similar", bush2, *WHY, "--home", faiss_home, "--json")
    assert code == 0, err
    data = json.loads(out)
    ids = [c["face_id"] for c in data["candidates"]]
    assert bush2 not in ids
    assert Path(data["candidates"][0]["image_source"]).name == "George_W_Bush_0001.jpg"
    assert data["confident_match"] is True
    code, out, err = cli("similar", 424242, *WHY, "--home", faiss_home)
    assert code == 2 and "424242" in err
