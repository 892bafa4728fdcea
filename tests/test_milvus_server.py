"""The Milvus backend against a real Milvus standalone server (the ``milvus`` 2.3.5 wheel):
the CLI end to end on a home configured by ``milvus_uri``, the sign-code index kind, the clear
error when the server is down, and that the server's binary never outlives the test process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from facesearch.index import milvus_index, open_index
from facesearch.index.milvus_index import MilvusIndex, MilvusUnavailable
from facesearch.index.milvus_standalone import free_port

from .conftest import LFW, WHY, unit_vectors
from .milvus_fixtures import MILVUS_VENV, milvus_home


def _noisy(rng, vectors: np.ndarray, cosine: float) -> np.ndarray:
    noise = unit_vectors(rng, len(vectors), vectors.shape[1])
    noise -= np.sum(noise * vectors, axis=1, keepdims=True) * vectors
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    return (cosine * vectors + np.sqrt(1 - cosine**2) * noise).astype(np.float32)


# -- the done-when check: the CLI on a home whose config.json names the server --------------------------


@pytest.fixture
def album(tmp_path) -> Path:
    folder = tmp_path / "album"
    folder.mkdir()
    for name in ("Colin_Powell_0001", "George_W_Bush_0001", "Hugo_Chavez_0001"):
        (folder / f"{name}.jpg").write_bytes((LFW / f"{name}.jpg").read_bytes())
    return folder


def test_cli_index_search_erase_search_doctor_on_a_milvus_server_home(cli, milvus_uri, album, tmp_path):
    home = milvus_home(tmp_path, milvus_uri)

    code, out, err = cli("index", album, "--collection", "album", "--home", home, "--json")
    assert code == 0, err
    assert json.loads(out)["faces_indexed"] == 3

    probe = LFW / "Colin_Powell_0002.jpg"
    code, out, err = cli("search", probe, *WHY, "--home", home, "--json")
    assert code == 0, err
    found = json.loads(out)
    assert found["confident_match"] is True
    assert Path(found["candidates"][0]["image_source"]).name == "Colin_Powell_0001.jpg"

    code, out, err = cli("erase", "--like", probe, "--min-score", "0.3", "--home", home)
    assert code == 0, err
    assert "erased 1 face(s)" in out

    code, out, err = cli("search", probe, *WHY, "--home", home, "--json")
    assert code == 0, err
    after = json.loads(out)
    assert after["confident_match"] is False
    assert "Colin_Powell_0001.jpg" not in [Path(c["image_source"]).name for c in after["candidates"]]

    code, out, err = cli("doctor", "--home", home, "--check-only", "--json")
    assert code == 0, (out, err)
    reports = json.loads(out)
    assert [(r["catalog_faces"], r["index_faces"], r["consistent"]) for r in reports] == [(2, 2, True)]

    # the vectors really live on the server, not in a milvus-lite file in the home
    from pymilvus import MilvusClient

    client = MilvusClient(uri=milvus_uri)
    assert len(client.list_collections()) == 1
    assert not (home / "index" / "milvus.db").exists()
    client.close()


def test_cli_says_in_one_line_when_the_server_is_unreachable(cli, tmp_path, lfw):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    home = milvus_home(tmp_path, uri)
    code, out, err = cli("index", lfw("Hugo_Chavez_0001"), "--collection", "c", "--home", home)
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert uri in lines[0] and "unreachable" in lines[0] and "milvus_uri" in lines[0]
    assert "Traceback" not in err


def test_unreachable_server_raises_a_typed_error_quickly():
    started = time.monotonic()
    with pytest.raises(MilvusUnavailable, match="unreachable"):
        MilvusIndex(f"http://127.0.0.1:{free_port()}", "facesearch_c1", timeout=3)
    assert time.monotonic() - started < 30


# -- the sign-code index kind ---------------------------------------------------------------------------------


def test_bin_rerank_keeps_the_exact_nearest_neighbour_and_true_scores(milvus_uri, tmp_path, monkeypatch):
    rng = np.random.default_rng(21)
    vectors = unit_vectors(rng, 3000)
    ids = np.arange(50_000, 53_000, dtype=np.int64)
    index = open_index("milvus", directory=tmp_path, collection_id=7, milvus_uri=milvus_uri,
                       index_type="BIN_RERANK", shortlist=64)
    index.add(ids[:1000], vectors[:1000])
    index.add(ids[1000:], vectors[1000:])
    assert len(index) == 3000
    assert index.describe()["index_type"] == "BIN_RERANK"

    targets = rng.choice(3000, size=100, replace=False)
    queries = _noisy(rng, vectors[targets], 0.6)
    exact = queries @ vectors.T
    best = ids[np.argmax(exact, axis=1)]
    hits = index.search(queries, 5)
    assert float(np.mean(hits.ids[:, 0] == best)) >= 0.98
    for q in range(len(queries)):  # re-ranked scores are the true cosines (fp16 storage)
        face_id, score = hits.row(q)[0]
        assert score == pytest.approx(float(exact[q, face_id - 50_000]), abs=2e-3)
        scores = [s for _, s in hits.row(q)]
        assert scores == sorted(scores, reverse=True)

    assert index.remove(best[:10]) == 10
    after = index.search(queries[:10], 5)
    assert not set(after.ids.ravel().tolist()) & set(best[:10].tolist())
    index.add(ids[:5], vectors[:5])  # already there: nothing doubles
    assert len(index) == 2990

    index.save()
    index.close()
    reopened = open_index("milvus", directory=tmp_path, collection_id=7, milvus_uri=milvus_uri)
    assert reopened.index_type == "BIN_RERANK"  # the collection keeps its kind
    assert float(np.mean(reopened.search(queries[10:], 1).ids[:, 0] == best[10:])) >= 0.98

    # a batch whose replies (shortlist x ~1.4 KB each) would pass gRPC's 64 MB limit is split
    whole = reopened.search(queries, 5)
    monkeypatch.setattr(milvus_index, "_REPLY_BYTES", 7 * 64 * 1500)  # 7 queries per call
    split = reopened.search(queries, 5)
    assert np.array_equal(split.ids, whole.ids) and np.allclose(split.scores, whole.scores)

    # "everything" (erase --like asks for more than the server's 16,384 per query) is every face
    everything = reopened.search(queries[:1], 40_000)
    assert everything.ids.shape == (1, 40_000) and int((everything.ids[0] >= 0).sum()) == 2990


def test_ivf_sq8_search_params_reach_the_server(milvus_uri, tmp_path):
    rng = np.random.default_rng(22)
    vectors = unit_vectors(rng, 2000)
    index = open_index("milvus", directory=tmp_path, collection_id=8, milvus_uri=milvus_uri,
                       index_type="IVF_SQ8", index_params={"nlist": 16}, search_params={"nprobe": 16})
    index.add(np.arange(2000), vectors)
    index.save()
    assert index.index_type == "IVF_SQ8"
    hits = index.search(vectors[:50], 1)  # nprobe = nlist: every list is scanned
    assert hits.ids[:, 0].tolist() == list(range(50))
    assert np.allclose(hits.scores[:, 0], 1.0, atol=0.02)  # SQ8 scores are approximate


# -- the server never outlives its starter ------------------------------------------------------------------


_STARTER = """
import sys
from pathlib import Path
from facesearch.index.milvus_standalone import MilvusServer
server = MilvusServer.start(Path(sys.argv[1]), Path(sys.argv[2]))
print(server.binary_pid, server.uri, flush=True)
sys.stdin.read()
"""


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    return stat.is_file() and ") Z" not in stat.read_text()


def test_server_binary_dies_when_the_starting_process_is_killed(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    starter = subprocess.Popen([sys.executable, "-c", _STARTER, str(MILVUS_VENV), str(tmp_path / "srv")],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    try:
        line = starter.stdout.readline().decode().split()
        assert line, "the server did not start"
        binary = int(line[0])
        assert _alive(binary)
        from pymilvus import MilvusClient

        MilvusClient(uri=line[1]).list_collections()  # it really serves
        starter.send_signal(signal.SIGKILL)  # no cleanup code runs in the starter
        starter.wait(10)
        deadline = time.monotonic() + 30
        while _alive(binary) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _alive(binary), "the milvus binary outlived the process that started it"
    finally:
        if starter.poll() is None:
            starter.kill()


def test_bin_ivf_rerank_scans_only_nprobe_clusters_and_keeps_its_kind(milvus_uri, tmp_path):
    rng = np.random.default_rng(23)
    vectors = unit_vectors(rng, 4000)
    ids = np.arange(4000, dtype=np.int64)
    index = open_index("milvus", directory=tmp_path, collection_id=9, milvus_uri=milvus_uri,
                       index_type="BIN_IVF_RERANK", index_params={"nlist": 32}, shortlist=64)
    index.add(ids, vectors)
    index.save()  # a sealed segment of >= 1024 rows: the server builds the BIN_IVF_FLAT index
    assert index.index_type == "BIN_IVF_RERANK" and index.search_params == {"nprobe": 4}  # 1/8 of the lists
    (described,) = [index.client.describe_index(index.name, n) for n in index.client.list_indexes(index.name)]
    assert described["index_type"] == "BIN_IVF_FLAT"
    index.client.release_collection(index.name)
    index.client.load_collection(index.name)

    targets = rng.choice(4000, size=60, replace=False)
    queries = _noisy(rng, vectors[targets], 0.6)
    exact_best = np.argmax(queries @ vectors.T, axis=1)
    index.search_params = {"nprobe": 32}  # every cluster: the sign-code shortlist of BIN_RERANK
    full = index.search(queries, 1)
    assert float(np.mean(full.ids[:, 0] == exact_best)) >= 0.98
    index.search_params = {"nprobe": 1}  # one cluster of 32: some true neighbours are not scanned
    narrow = index.search(queries, 1)
    assert float(np.mean(narrow.ids[:, 0] == exact_best)) < 0.9
    assert np.all(narrow.ids[:, 0] >= 0)  # still a full, re-ranked answer from what was scanned

    index.close()
    reopened = open_index("milvus", directory=tmp_path, collection_id=9, milvus_uri=milvus_uri)
    assert reopened.index_type == "BIN_IVF_RERANK" and reopened.search_params == {"nprobe": 4}
    assert reopened.describe()["search_params"] == {"nprobe": 4}
    reopened.close()
