"""The Milvus backend against a real Milvus standalone server with authorization on
(``common.security.authorizationEnabled: true``): with the right token (``FACESEARCH_MILVUS_TOKEN``)
the CLI indexes, searches, erases and checks; with no token or a wrong one the user gets one typed,
one-line error at once. The token appears in no output, error, log record or file of the home.

One auth-enabled server for the whole module (a start costs ~10 s). The tests use a user of their
own with the built-in ``admin`` role and a distinctive password, so that a leak of the password
is detectable anywhere (root's default ``Milvus`` is a word found in every message).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest

from facesearch.index.milvus_index import MilvusAuthFailed, MilvusIndex
from facesearch.index.milvus_standalone import MilvusServer

from .conftest import LFW, WHY
from .milvus_fixtures import MILVUS_VENV, empty_server, milvus_home

USER = "facesearch"
PASSWORD = "Fs-auth-7Qx9kZ"
TOKEN = f"{USER}:{PASSWORD}"


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory):
    """A Milvus server that asks every call for a token; :data:`TOKEN` is an admin's."""
    from pymilvus import MilvusClient

    server = MilvusServer.start(MILVUS_VENV, tmp_path_factory.mktemp("milvus-auth"), auth=True)
    try:
        client = MilvusClient(uri=server.uri, token="root:Milvus")  # the server's default credentials
        client.create_user(USER, PASSWORD)
        client.grant_role(USER, "admin")
        client.close()
        yield server
    finally:
        server.stop()


@pytest.fixture
def auth_uri(auth_server) -> str:
    empty_server(auth_server.uri, token=TOKEN)
    return auth_server.uri


def _no_secret(*texts: str) -> None:
    for text in texts:
        assert PASSWORD not in text and TOKEN not in text


def test_server_really_refuses_calls_without_the_token(auth_uri):
    """The fixture's server has authorization on (else the tests below prove nothing)."""
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    with pytest.raises(MilvusException):
        MilvusClient(uri=auth_uri, timeout=5)
    with pytest.raises(MilvusException):
        MilvusClient(uri=auth_uri, token=f"{USER}:not-the-password", timeout=5)
    client = MilvusClient(uri=auth_uri, token=TOKEN)
    assert client.list_collections() == []
    client.close()


def test_cli_index_search_erase_doctor_with_the_token(cli, auth_uri, clean_env, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, pymilvus's included
    clean_env.setenv("FACESEARCH_MILVUS_TOKEN", TOKEN)
    home = milvus_home(tmp_path, auth_uri)
    album = tmp_path / "album"
    album.mkdir()
    for name in ("Colin_Powell_0001", "George_W_Bush_0001", "Hugo_Chavez_0001"):
        (album / f"{name}.jpg").write_bytes((LFW / f"{name}.jpg").read_bytes())
    outputs: list[str] = []

    def run(*argv) -> str:
        code, out, err = cli(*argv, "--home", home)
        outputs.extend((out, err))
        assert code == 0, err
        return out

    assert json.loads(run("index", album, "--collection", "album", "--json"))["faces_indexed"] == 3
    probe = LFW / "Colin_Powell_0002.jpg"
    found = json.loads(run("search", probe, *WHY, "--json"))
    assert Path(found["candidates"][0]["image_source"]).name == "Colin_Powell_0001.jpg"
    assert "erased 1 face(s)" in run("erase", "--like", probe, "--min-score", "0.3")
    after = json.loads(run("search", probe, *WHY, "--json"))
    assert "Colin_Powell_0001.jpg" not in [Path(c["image_source"]).name for c in after["candidates"]]
    reports = json.loads(run("doctor", "--check-only", "--json"))
    assert [(r["catalog_faces"], r["index_faces"], r["consistent"]) for r in reports] == [(2, 2, True)]
    run("doctor", "--check-only")
    run("config", "show")

    # the vectors are on the authenticated server
    from pymilvus import MilvusClient

    client = MilvusClient(uri=auth_uri, token=TOKEN)
    assert len(client.list_collections()) == 1
    client.close()
    # the token is in no output, no log record and no file of the home (catalog, audit log, config)
    _no_secret(*outputs, caplog.text, *(r.getMessage() for r in caplog.records))
    for path in home.rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path


@pytest.mark.parametrize("token", [None, f"{USER}:Wrong-pa55word", "nobody:" + PASSWORD])
def test_cli_says_in_one_line_that_the_token_is_missing_or_refused(cli, auth_uri, clean_env, tmp_path, lfw,
                                                                    token, caplog):
    caplog.set_level(logging.DEBUG)
    if token:
        clean_env.setenv("FACESEARCH_MILVUS_TOKEN", token)
    home = milvus_home(tmp_path, auth_uri)
    started = time.monotonic()
    code, out, err = cli("index", lfw("Hugo_Chavez_0001"), "--collection", "c", "--home", home)
    assert time.monotonic() - started < 60  # an answer, not a hang
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "grpc" not in err.lower()
    assert auth_uri in lines[0] and "refused" in lines[0] and "FACESEARCH_MILVUS_TOKEN" in lines[0]
    assert ("none was given" in lines[0]) == (token is None)
    assert "unreachable" not in lines[0]  # the server runs: the problem is the token
    if token:
        assert token not in err + out + caplog.text and token.partition(":")[2] not in err + out + caplog.text


@pytest.mark.parametrize("token", [None, "", f"{USER}:Wrong-pa55word"])
def test_a_missing_or_wrong_token_is_a_typed_error(auth_uri, token):
    started = time.monotonic()
    with pytest.raises(MilvusAuthFailed, match="refused the connection") as raised:
        MilvusIndex(auth_uri, "facesearch_c1", token=token, timeout=5)
    assert time.monotonic() - started < 30
    assert "Wrong-pa55word" not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__  # no gRPC chain to print


def test_the_token_opens_the_index_directly(auth_uri):
    import numpy as np

    index = MilvusIndex(auth_uri, "facesearch_c2", token=TOKEN, index_type="BIN_RERANK")
    vectors = np.eye(512, dtype=np.float32)[:4]
    index.add(np.arange(4), vectors)
    assert len(index) == 4
    assert index.search(vectors, 1).ids[:, 0].tolist() == [0, 1, 2, 3]
    assert index.remove([0]) == 1 and len(index) == 3
    _no_secret(json.dumps(index.describe()))
    index.drop()
    index.close()
