"""A real Milvus standalone server for the test session, and the backend names the suites run on.

``INDEX_BACKENDS`` = FAISS, FAISS with fp16 memory-mapped re-rank vectors (``faiss-mmap``, the storage
used from 1M faces), milvus-lite (a file in the home) and ``milvus-server``: the PyPI wheel
``milvus`` 2.3.5 started once per session on a free loopback port from its own virtual environment
(built once under ``build/milvus-venv``; see ``facesearch.index.milvus_standalone``) and stopped at
the end; its binary dies with the test process even if that is killed. Tests share the server, so
each one that asks for it gets it emptied first (every collection dropped).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from facesearch.index.milvus_standalone import MilvusServer

INDEX_BACKENDS = ("faiss", "faiss-mmap", "milvus", "milvus-server")
ROOT = Path(__file__).resolve().parents[1]
MILVUS_VENV = Path(os.environ.get("FACESEARCH_MILVUS_VENV", ROOT / "build" / "milvus-venv"))


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    """The session's Milvus standalone server (no skip: if it cannot start, its tests fail)."""
    server = MilvusServer.start(MILVUS_VENV, tmp_path_factory.mktemp("milvus-server"))
    yield server
    server.stop()


def empty_server(uri: str, token: str = "") -> None:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri, token=token)
    for name in client.list_collections():
        client.drop_collection(name)
    client.close()


@pytest.fixture
def milvus_uri(milvus_server) -> str:
    """The server's URI, with no collections on it."""
    empty_server(milvus_server.uri)
    return milvus_server.uri


#: The server with its other sign-code index (``BIN_IVF_FLAT``; nprobe = nlist: every cluster is
#: scanned, so the exact contract holds), for the index backend suite.
BIN_IVF_BACKEND = "milvus-server-bin-ivf"


def backend_name(backend: str) -> str:
    """The configured backend a suite parameter stands for (``faiss-mmap`` -> ``faiss``)."""
    return {"faiss-mmap": "faiss", "milvus-server": "milvus", BIN_IVF_BACKEND: "milvus"}.get(backend, backend)


def backend_options(request, backend: str | None) -> tuple[str | None, dict]:
    """``(backend, options)`` for ``Engine.open`` / ``open_index``: ``milvus-server`` is the
    ``milvus`` backend with ``milvus_uri`` of the (emptied) session server (:data:`BIN_IVF_BACKEND`:
    with index type ``BIN_IVF_RERANK``); ``faiss-mmap`` is ``faiss`` with ``faiss_storage="mmap"``
    whatever the size."""
    if backend == "faiss-mmap":
        return "faiss", {"faiss_storage": "mmap"}
    if backend == BIN_IVF_BACKEND:
        return "milvus", {"milvus_uri": request.getfixturevalue("milvus_uri"), "index_type": "BIN_IVF_RERANK",
                          "index_params": {"nlist": 8}, "search_params": {"nprobe": 8}}
    if backend != "milvus-server":
        return backend, {}
    return "milvus", {"milvus_uri": request.getfixturevalue("milvus_uri")}


def milvus_home(tmp_path: Path, uri: str) -> Path:
    """A new home whose only setting is the Milvus server (private, as doctor requires)."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "config.json").write_text(json.dumps({"backend": "milvus", "milvus_uri": uri}))
    (home / "config.json").chmod(0o600)
    return home
