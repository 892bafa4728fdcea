"""The vector-index backends behind ``open_index``: the same behaviour from ``faiss``, ``milvus``
(milvus-lite, a local file) and ``milvus-server`` (a real Milvus standalone server; also with its
``BIN_IVF_RERANK`` kind), on random unit vectors; FAISS's binary-code mode and crash-safe saves."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from facesearch.index import FaissIndex, open_index

from .conftest import INDEX_BACKENDS, backend_name, backend_options, unit_vectors
from .milvus_fixtures import BIN_IVF_BACKEND

DIM = 512


@pytest.fixture(params=(*INDEX_BACKENDS, BIN_IVF_BACKEND))
def backend(request) -> str:
    return request.param


@pytest.fixture
def tol(backend) -> float:
    """Score tolerance: the server's sign-code indexes and ``faiss-mmap`` re-rank fp16 copies of the vectors."""
    return 2e-3 if backend in ("milvus-server", BIN_IVF_BACKEND, "faiss-mmap") else 1e-4


@pytest.fixture
def open_(backend, request):
    """``open_(directory, collection_id=1)`` -> the backend's index (milvus-server: on the emptied server)."""
    name, options = backend_options(request, backend)

    def open_at(directory, collection_id: int = 1):
        return open_index(name, directory=directory, collection_id=collection_id, **options)

    return open_at


def _reopen(open_, index, directory):
    if hasattr(index, "close"):
        index.close()
    return open_(directory)


def _noisy(rng, vectors: np.ndarray, cosine: float) -> np.ndarray:
    """Unit queries at about ``cosine`` to each vector: v mixed with independent noise."""
    noise = unit_vectors(rng, len(vectors), vectors.shape[1])
    noise -= np.sum(noise * vectors, axis=1, keepdims=True) * vectors  # orthogonal to v
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    queries = cosine * vectors + np.sqrt(1 - cosine**2) * noise
    return (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)


# -- the common contract ---------------------------------------------------------------------------


def test_add_then_search_returns_the_vector_itself_first(backend, open_, tol, tmp_path):
    rng = np.random.default_rng(1)
    vectors = unit_vectors(rng, 300)
    ids = np.arange(1000, 1300, dtype=np.int64)
    index = open_(tmp_path)
    assert len(index) == 0
    index.add(ids, vectors)
    assert len(index) == 300
    probes = [0, 7, 150, 299]
    hits = index.search(vectors[probes], 5)
    assert hits.ids.shape == (4, 5) and hits.scores.shape == (4, 5)
    for q, p in enumerate(probes):
        row = hits.row(q)
        assert row[0][0] == ids[p]
        assert row[0][1] == pytest.approx(1.0, abs=tol)
        scores = [s for _, s in row]
        assert scores == sorted(scores, reverse=True)
        assert max(scores[1:]) < 0.5  # random 512-d vectors are nearly orthogonal
        # the other scores are the true inner products
        for face_id, score in row[1:]:
            assert score == pytest.approx(float(vectors[face_id - 1000] @ vectors[p]), abs=tol)


def test_search_with_k_larger_than_the_index_pads_with_minus_one(backend, open_, tmp_path):
    rng = np.random.default_rng(2)
    vectors = unit_vectors(rng, 4)
    index = open_(tmp_path)
    empty = index.search(vectors[:1], 3)
    assert empty.row(0) == []
    index.add(np.array([11, 12, 13, 14]), vectors)
    hits = index.search(vectors[2], 10)
    assert [face_id for face_id, _ in hits.row(0)][0] == 13
    assert sorted(face_id for face_id, _ in hits.row(0)) == [11, 12, 13, 14]
    assert (hits.ids[0, 4:] == -1).all()


def test_remove_takes_effect_immediately(backend, open_, tmp_path):
    rng = np.random.default_rng(3)
    vectors = unit_vectors(rng, 200)
    ids = np.arange(1, 201, dtype=np.int64)
    index = open_(tmp_path)
    index.add(ids, vectors)
    gone = np.array([5, 6, 100, 200])
    assert index.remove(gone) == 4
    assert len(index) == 196
    hits = index.search(vectors[gone - 1], 10)
    for q in range(len(gone)):
        returned = {face_id for face_id, _ in hits.row(q)}
        assert len(returned) == 10
        assert not returned & set(gone.tolist())
    # a kept vector is still found first
    assert index.search(vectors[6], 1).row(0)[0][0] == 7
    # removing ids that are absent (or already removed) removes nothing
    assert index.remove([5, 99_999]) == 0
    assert len(index) == 196


def test_ids_reflect_adds_and_removes(backend, open_, tmp_path):
    rng = np.random.default_rng(4)
    vectors = unit_vectors(rng, 60)
    index = open_(tmp_path)
    assert index.ids().tolist() == []
    index.add(np.arange(10, 40), vectors[:30])
    index.remove([10, 25])
    index.add(np.arange(40, 70), vectors[30:])
    index.remove(np.array([69, 41]))
    expected = set(range(10, 70)) - {10, 25, 41, 69}
    got = index.ids()
    assert got.dtype == np.int64
    assert sorted(got.tolist()) == sorted(expected)
    assert len(index) == len(expected)


def test_re_adding_an_id_does_not_duplicate_it(backend, open_, tmp_path):
    rng = np.random.default_rng(5)
    vectors = unit_vectors(rng, 20)
    index = open_(tmp_path)
    index.add(np.arange(20), vectors)
    index.add(np.array([3]), vectors[3:4])
    assert len(index) == 20
    row = index.search(vectors[3], 20).row(0)
    assert [face_id for face_id, _ in row].count(3) == 1


def test_a_removed_id_can_be_added_again(backend, open_, tmp_path):
    rng = np.random.default_rng(6)
    vectors = unit_vectors(rng, 10)
    index = open_(tmp_path)
    index.add(np.arange(10), vectors)
    index.remove([4])
    index.add(np.array([4]), vectors[4:5])
    assert sorted(index.ids().tolist()) == list(range(10))
    assert index.search(vectors[4], 1).row(0)[0][0] == 4


def test_save_and_reopen_keeps_the_contents(backend, open_, tol, tmp_path):
    rng = np.random.default_rng(7)
    vectors = unit_vectors(rng, 500)
    ids = np.arange(1, 501, dtype=np.int64)
    index = open_(tmp_path)
    index.add(ids, vectors)
    index.remove(np.arange(1, 501, 7))  # every 7th: tombstones before the save
    index.save()
    alive = sorted(set(ids.tolist()) - set(range(1, 501, 7)))
    reopened = _reopen(open_, index, tmp_path)
    assert sorted(reopened.ids().tolist()) == alive
    assert len(reopened) == len(alive)
    hits = reopened.search(vectors[[1, 7, 250]], 3)  # ids 2, 8 (removed), 251
    assert hits.row(0)[0] == (2, pytest.approx(1.0, abs=tol))
    assert 8 not in [face_id for face_id, _ in hits.row(1)]
    assert hits.row(2)[0][0] == 251
    # and it keeps working after the reopen
    reopened.remove([2])
    reopened.save()
    again = _reopen(open_, reopened, tmp_path)
    assert 2 not in again.ids().tolist()
    assert len(again) == len(alive) - 1


def test_drop_removes_everything(backend, open_, tmp_path):
    rng = np.random.default_rng(8)
    index = open_(tmp_path)
    index.add(np.arange(5), unit_vectors(rng, 5))
    index.save()
    index.drop()
    reopened = _reopen(open_, index, tmp_path)
    assert len(reopened) == 0
    assert reopened.ids().tolist() == []


def test_collections_do_not_share_vectors(backend, open_, tmp_path):
    rng = np.random.default_rng(9)
    vectors = unit_vectors(rng, 6)
    one = open_(tmp_path, 1)
    two = open_(tmp_path, 2)
    one.add(np.arange(3), vectors[:3])
    two.add(np.arange(3, 6), vectors[3:])
    assert sorted(one.ids().tolist()) == [0, 1, 2]
    assert sorted(two.ids().tolist()) == [3, 4, 5]
    assert {face_id for face_id, _ in one.search(vectors[4], 6).row(0)} == {0, 1, 2}


def test_describe_names_the_backend(backend, open_, tmp_path):
    index = open_(tmp_path)
    index.add(np.arange(3), unit_vectors(np.random.default_rng(10), 3))
    info = index.describe()
    assert info["backend"] == backend_name(backend)
    assert info["faces"] == 3


def test_wrong_dimension_is_refused(backend, open_, tmp_path):
    index = open_(tmp_path)
    with pytest.raises(ValueError, match="dimension"):
        index.add(np.arange(2), np.ones((2, 128), np.float32))
    with pytest.raises(ValueError, match="dimension"):
        index.search(np.ones((1, 128), np.float32), 3)


# -- FAISS specifics ----------------------------------------------------------------------------------


def test_faiss_save_compacts_tombstones(tmp_path):
    rng = np.random.default_rng(11)
    vectors = unit_vectors(rng, 100)
    index = FaissIndex(tmp_path / "idx")
    index.add(np.arange(100), vectors)
    index.remove(np.arange(0, 100, 2))
    assert index.describe()["tombstones"] == 50
    index.save()
    assert index.describe()["tombstones"] == 0
    current = json.loads((tmp_path / "idx" / "CURRENT").read_text())
    assert current["count"] == 50
    stem = tmp_path / "idx" / f"gen-{current['generation']:06d}"
    stored_ids = np.load(f"{stem}.ids.npy")
    assert sorted(stored_ids.tolist()) == list(range(1, 100, 2))
    assert np.load(f"{stem}.vectors.npy").shape == (50, DIM)
    # only one generation is kept on disk
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == sorted(
        ["CURRENT", "LOCK", f"{stem.name}.ids.npy", f"{stem.name}.vectors.npy"])
    reopened = FaissIndex(tmp_path / "idx")
    assert sorted(reopened.ids().tolist()) == list(range(1, 100, 2))
    assert reopened.search(vectors[51], 1).row(0)[0] == (51, pytest.approx(1.0, abs=1e-4))
    assert 50 not in [i for i, _ in reopened.search(vectors[50], 10).row(0)]


def test_faiss_binary_rerank_finds_the_true_nearest_neighbour(tmp_path):
    rng = np.random.default_rng(12)
    vectors = unit_vectors(rng, 2000)
    ids = np.arange(10_000, 12_000, dtype=np.int64)
    small = FaissIndex(tmp_path / "small", exact_limit=100)
    small.add(ids[:50], vectors[:50])
    assert small.mode == "exact"
    index = FaissIndex(tmp_path / "big", exact_limit=100)
    index.add(ids[:1000], vectors[:1000])
    index.add(ids[1000:], vectors[1000:])
    assert index.mode == "binary-rerank"
    assert index.describe()["mode"] == "binary-rerank"

    targets = rng.choice(2000, size=200, replace=False)
    queries = _noisy(rng, vectors[targets], 0.6)
    cosines = np.sum(queries * vectors[targets], axis=1)
    assert np.allclose(cosines, 0.6, atol=1e-3)
    exact_scores = queries @ vectors.T
    exact_best = ids[np.argmax(exact_scores, axis=1)]
    hits = index.search(queries, 5)
    agree = float(np.mean(hits.ids[:, 0] == exact_best))
    assert agree >= 0.98, agree
    # re-ranked with the exact vectors: the reported scores are the true cosines
    for q in range(len(queries)):
        face_id, score = hits.row(q)[0]
        assert score == pytest.approx(float(exact_scores[q, face_id - 10_000]), abs=1e-4)

    # tombstones are honoured in binary mode too, and the mode survives save + reopen
    index.remove(exact_best[:20])
    after = index.search(queries[:20], 5)
    assert not set(after.ids.ravel().tolist()) & set(exact_best[:20].tolist())
    index.save()
    reopened = FaissIndex(tmp_path / "big", exact_limit=100)
    assert reopened.mode == "binary-rerank"
    again = reopened.search(queries[20:], 1)
    assert float(np.mean(again.ids[:, 0] == exact_best[20:])) >= 0.98


def test_faiss_crash_during_save_leaves_the_previous_generation(tmp_path):
    rng = np.random.default_rng(13)
    vectors = unit_vectors(rng, 30)
    directory = tmp_path / "idx"
    index = FaissIndex(directory)
    index.add(np.arange(20), vectors[:20])
    index.save()
    generation = json.loads((directory / "CURRENT").read_text())["generation"]
    nxt = f"gen-{generation + 1:06d}"

    # Crash 1: killed while writing the next generation's arrays (partial temp files).
    (directory / f"{nxt}.ids.npy.tmp").write_bytes(b"\x93NUMPY garbage")
    (directory / f"{nxt}.vectors.npy.tmp").write_bytes(np.zeros(7, np.uint8).tobytes())
    (directory / "CURRENT.tmp").write_text('{"generation": 9')  # partial pointer
    reopened = FaissIndex(directory)
    assert sorted(reopened.ids().tolist()) == list(range(20))
    assert reopened.search(vectors[3], 1).row(0)[0][0] == 3

    # Crash 2: the next generation's arrays are complete, the pointer was never replaced.
    other = FaissIndex(tmp_path / "elsewhere")
    other.add(np.arange(100, 110), vectors[20:30])
    other.save()
    other_gen = json.loads((tmp_path / "elsewhere" / "CURRENT").read_text())["generation"]
    for suffix in ("ids", "vectors"):
        shutil.copyfile(tmp_path / "elsewhere" / f"gen-{other_gen:06d}.{suffix}.npy",
                        directory / f"{nxt}.{suffix}.npy")
    (directory / "CURRENT.tmp").unlink()
    reopened = FaissIndex(directory)
    assert sorted(reopened.ids().tolist()) == list(range(20))

    # After such crashes the index still saves and reloads normally.
    reopened.add(np.arange(20, 25), vectors[20:25])
    reopened.remove([0])
    reopened.save()
    final = FaissIndex(directory)
    assert sorted(final.ids().tolist()) == list(range(1, 25))
    assert final.search(vectors[22], 1).row(0)[0][0] == 22
    assert not list(directory.glob("*.tmp"))
