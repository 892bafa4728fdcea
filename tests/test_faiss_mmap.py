"""FAISS with fp16 re-rank vectors memory-mapped from disk (``storage="mmap"``), beyond the shared
backend suites (which run it as ``faiss-mmap``): fp16 keeps fp32's order on real LFW embeddings,
both on-disk formats stay readable and migrate on save, ``auto`` switches at its threshold, removed
rows are zeroed on disk, writes that die midway leave the committed state intact, and two
processes' writers do not corrupt each other."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from facesearch.index import FaissIndex, faiss_storage
from facesearch.index.faiss_storage import mapped_paths

from .conftest import FIXTURES, PEOPLE, WIDER_GROUP, unit_vectors

DIM = 512


def _current(directory) -> dict:
    return json.loads((directory / "CURRENT").read_text())


def _disk_rows(directory) -> np.ndarray:
    info = _current(directory)
    path = mapped_paths(directory, info["generation"])["rows"]
    return np.fromfile(path, np.float16, count=info["count"] * DIM).reshape(-1, DIM)


@pytest.fixture(scope="module")
def lfw_embeddings(analyzer) -> np.ndarray:
    """Real embeddings: every face of the WIDER group photo, and the 10 LFW fixture photos each as
    they are, mirrored, cropped and darkened (near-duplicates: the close calls re-ranking decides)."""
    faces = [face.embedding for face in analyzer.analyze(Image.open(WIDER_GROUP).convert("RGB"))]
    for path in sorted((FIXTURES / "lfw").glob("*.jpg")) + sorted((FIXTURES / "subjects").glob("*.jpg")):
        photo = Image.open(path).convert("RGB")
        w, h = photo.size
        for variant in (photo, photo.transpose(Image.FLIP_LEFT_RIGHT), photo.crop((6, 6, w - 6, h - 6)),
                        ImageEnhance.Brightness(photo).enhance(0.6)):
            found = analyzer.analyze(variant)
            faces += [max(found, key=lambda f: f.width).embedding] if found else []
    vectors = np.stack([f for f in faces if f is not None]).astype(np.float32)
    assert len(vectors) >= 40
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.parametrize("exact_limit", [1, 100_000], ids=["binary-rerank", "exact"])
def test_fp16_rerank_keeps_the_fp32_order_on_lfw_embeddings(lfw_embeddings, exact_limit, tmp_path):
    ids = np.arange(len(lfw_embeddings), dtype=np.int64) + 100
    k = 10
    ram = FaissIndex(tmp_path / "ram", exact_limit=exact_limit, storage="ram")
    mapped = FaissIndex(tmp_path / "mmap", exact_limit=exact_limit, storage="mmap")
    for index in (ram, mapped):
        index.add(ids, lfw_embeddings)
    mapped.save()  # re-rank from the file, not from rows still pending in RAM
    mapped = FaissIndex(tmp_path / "mmap", exact_limit=exact_limit, storage="mmap")
    assert mapped.storage_mode == "mmap" and ram.storage_mode == "ram"
    assert mapped.mode == ram.mode == ("binary-rerank" if exact_limit == 1 else "exact")
    fp32, fp16 = ram.search(lfw_embeddings, k), mapped.search(lfw_embeddings, k)
    # fp16 keeps 11 bits: a unit vector's inner products move by well under 2e-3
    bound = 2e-3
    assert np.abs(fp16.scores - fp32.scores).max() < bound
    exact = lfw_embeddings @ lfw_embeddings.T
    swapped = 0
    for q in range(len(lfw_embeddings)):
        for r in range(k):
            if fp16.ids[q, r] != fp32.ids[q, r]:
                # only a near tie may swap: both candidates' true scores within fp16 rounding
                a, b = exact[q, fp16.ids[q, r] - 100], exact[q, fp32.ids[q, r] - 100]
                assert abs(a - b) < bound, (q, r, a, b)
                swapped += 1
    assert swapped <= len(lfw_embeddings) * k // 50
    assert (fp16.ids[:, 0] == ids).all()  # each face finds itself first


def test_old_ram_home_is_read_in_mmap_mode_and_migrated_on_save(tmp_path):
    rng = np.random.default_rng(1)
    vectors = unit_vectors(rng, 300)
    old = FaissIndex(tmp_path / "idx", storage="ram")
    old.add(np.arange(300), vectors)
    old.remove([5])
    old.save()
    assert _current(tmp_path / "idx")["storage"] == "ram"

    index = FaissIndex(tmp_path / "idx", storage="mmap")  # read through a map of the float32 .npy
    assert index.storage_mode == "mmap" and len(index) == 299
    assert index.search(vectors[7], 1).row(0)[0] == (7, pytest.approx(1.0, abs=1e-4))
    index.add(np.array([1000]), unit_vectors(rng, 1))
    index.save()
    info = _current(tmp_path / "idx")
    assert info["storage"] == "mmap" and info["count"] == 300
    assert not list((tmp_path / "idx").glob("*.npy"))  # the float32 files are gone
    assert np.allclose(_disk_rows(tmp_path / "idx")[:299], vectors[np.arange(300) != 5], atol=1e-3)
    again = FaissIndex(tmp_path / "idx")  # auto: the home is in the mmap format now
    assert again.storage_mode == "mmap"
    assert sorted(again.ids().tolist()) == sorted(set(range(300)) - {5} | {1000})
    assert again.search(vectors[42], 1).row(0)[0][0] == 42


def test_mmap_home_is_read_in_ram_mode_and_migrated_on_save(tmp_path):
    rng = np.random.default_rng(2)
    vectors = unit_vectors(rng, 200)
    index = FaissIndex(tmp_path / "idx", storage="mmap")
    index.add(np.arange(200), vectors)
    index.save()
    index.remove([3, 4])
    index.save()  # tombstones kept in a dead list: the format's own state, read back below

    ram = FaissIndex(tmp_path / "idx", storage="ram")
    assert ram.storage_mode == "ram" and len(ram) == 198
    assert 3 not in ram.ids().tolist()
    assert ram.search(vectors[9], 1).row(0)[0] == (9, pytest.approx(1.0, abs=2e-3))
    ram.save()
    assert _current(tmp_path / "idx")["storage"] == "ram"
    assert not list((tmp_path / "idx").glob("*.f16"))
    assert len(FaissIndex(tmp_path / "idx", storage="ram")) == 198


def test_auto_switches_to_mmap_at_the_threshold(tmp_path):
    rng = np.random.default_rng(3)
    vectors = unit_vectors(rng, 80)
    index = FaissIndex(tmp_path / "idx", mmap_threshold=50)
    index.add(np.arange(40), vectors[:40])
    assert index.storage_mode == "ram"
    index.add(np.arange(40, 80), vectors[40:])
    assert index.storage_mode == "mmap"  # written out at once: the float32 rows left RAM
    assert index._vectors.size == 0
    assert _current(tmp_path / "idx")["storage"] == "mmap"
    assert FaissIndex(tmp_path / "idx", mmap_threshold=50).search(vectors[60], 1).row(0)[0][0] == 60
    assert FaissIndex(tmp_path / "small", mmap_threshold=50).storage_mode == "ram"


def test_pending_rows_are_written_out_past_the_limit(tmp_path):
    rng = np.random.default_rng(4)
    vectors = unit_vectors(rng, 25)
    index = FaissIndex(tmp_path / "idx", storage="mmap", pending_limit=10)
    index.add(np.arange(5), vectors[:5])
    assert not (tmp_path / "idx" / "CURRENT").exists()
    index.add(np.arange(100, 120), vectors[5:])
    assert _current(tmp_path / "idx")["count"] == 25
    assert index._rows.n_pending == 0


def test_removed_rows_are_zeroed_on_disk(tmp_path):
    rng = np.random.default_rng(5)
    vectors = unit_vectors(rng, 100)
    directory = tmp_path / "idx"
    index = FaissIndex(directory, storage="mmap")
    index.add(np.arange(100), vectors)
    index.save()
    generation = _current(directory)["generation"]
    index.remove([10, 11])
    index.add(np.array([500, 501]), unit_vectors(rng, 2))
    index.remove([501])  # added and removed before any save: appended as zeros
    index.save()
    info = _current(directory)
    assert info["generation"] == generation and info["count"] == 102  # appended, not rewritten
    rows = _disk_rows(directory)
    codes = np.fromfile(mapped_paths(directory, generation)["codes"], np.uint8).reshape(-1, DIM // 8)
    for pos in (10, 11, 101):
        assert not rows[pos].any() and not codes[pos].any()
    assert np.allclose(rows[12], vectors[12], atol=1e-3)
    reopened = FaissIndex(directory)
    assert sorted(reopened.ids().tolist()) == sorted(set(range(100)) - {10, 11} | {500})


def test_many_removals_compact_into_a_new_generation(tmp_path):
    rng = np.random.default_rng(6)
    vectors = unit_vectors(rng, 100)
    directory = tmp_path / "idx"
    index = FaissIndex(directory, storage="mmap")
    index.add(np.arange(100), vectors)
    index.save()
    index.remove(np.arange(0, 100, 3))  # 34 % tombstones > COMPACT_FRACTION
    index.save()
    info = _current(directory)
    assert info["generation"] == 2 and info["count"] == 66 and info["dead"] is None
    assert index.describe()["tombstones"] == 0
    names = {p.name for p in directory.iterdir()}
    assert names == {"CURRENT", "LOCK"} | {p.name for p in mapped_paths(directory, 2).values()}
    assert np.allclose(_disk_rows(directory), vectors[np.arange(100) % 3 != 0], atol=1e-3)
    assert index.search(vectors[4], 1).row(0)[0][0] == 4


class _Fault(Exception):
    pass


def test_a_save_that_dies_midway_leaves_the_committed_state(tmp_path, monkeypatch):
    rng = np.random.default_rng(7)
    vectors = unit_vectors(rng, 60)
    directory = tmp_path / "idx"
    index = FaissIndex(directory, storage="mmap")
    index.add(np.arange(40), vectors[:40])
    index.save()
    committed = _current(directory)

    # 1. The append dies after half of the rows' bytes reached the file (a short pwrite, then death).
    real_pwrite = os.pwrite
    calls = []

    def dying_pwrite(fd, data, offset):
        calls.append(offset)
        if len(data) > 4096:
            real_pwrite(fd, bytes(data)[:len(data) // 2], offset)
            raise _Fault("killed mid-append")
        return real_pwrite(fd, data, offset)

    index.add(np.arange(40, 60), vectors[40:])
    index.remove([0])
    monkeypatch.setattr(faiss_storage.os, "pwrite", dying_pwrite)
    with pytest.raises(_Fault):
        index.save()
    monkeypatch.setattr(faiss_storage.os, "pwrite", real_pwrite)
    assert calls
    assert _current(directory) == committed  # the count never covered the torn rows
    reopened = FaissIndex(directory)
    assert sorted(reopened.ids().tolist()) == list(range(40))
    # the removed row was zeroed before the removal was to be committed: its vector is gone even so
    assert not _disk_rows(directory)[0].any()
    assert reopened.search(vectors[7], 1).row(0)[0] == (7, pytest.approx(1.0, abs=2e-3))

    # 2. The reopened index appends over the torn tail and everything reads back.
    reopened.add(np.arange(40, 60), vectors[40:])
    reopened.save()
    final = FaissIndex(directory)
    assert sorted(final.ids().tolist()) == list(range(60))
    assert final.search(vectors[55], 1).row(0)[0] == (55, pytest.approx(1.0, abs=2e-3))

    # 3. A compaction that dies before CURRENT is replaced leaves the previous generation.
    before = _current(directory)
    final.remove(np.arange(0, 60, 2))

    def dying_commit(*args, **kwargs):
        raise _Fault("killed before the pointer")

    monkeypatch.setattr("facesearch.index.faiss_index.write_current", dying_commit)
    with pytest.raises(_Fault):
        final.save()
    monkeypatch.undo()
    assert _current(directory) == before
    survivor = FaissIndex(directory)
    assert sorted(survivor.ids().tolist()) == list(range(60))
    survivor.remove(np.arange(0, 60, 2))
    survivor.save()
    assert sorted(FaissIndex(directory).ids().tolist()) == list(range(1, 60, 2))
    assert not list(directory.glob("*.tmp")) and _current(directory)["generation"] == before["generation"] + 1


def test_two_writers_on_one_directory_keep_both_their_changes(tmp_path):
    """Two processes (a server and a CLI) each hold the index and write in turn, as the home lock
    orders them. A writer that finds rows appended since it loaded takes them in before its own:
    no row is overwritten, both writers' additions and removals survive, a face both added is
    kept once, and the first writer still searches its own (older) map correctly."""
    rng = np.random.default_rng(8)
    vectors = unit_vectors(rng, 40)
    directory = tmp_path / "idx"
    first = FaissIndex(directory, storage="mmap")
    first.add(np.arange(10), vectors[:10])
    first.save()
    second = FaissIndex(directory, storage="mmap")
    first.add(np.arange(10, 20), vectors[10:20])
    first.remove([2])
    first.save()  # appended to the shared files, and a tombstone
    second.add(np.arange(20, 30), vectors[20:30])  # second's pending rows would land where first's are
    second.add(np.array([15]), vectors[15:16])  # also added by the first
    second.remove([7])
    second.save()
    on_disk = FaissIndex(directory)
    assert sorted(on_disk.ids().tolist()) == sorted(set(range(30)) - {2, 7})
    assert len(on_disk) == 28
    for face_id in (3, 15, 19, 25):
        assert on_disk.search(vectors[face_id], 1).row(0)[0] == (face_id, pytest.approx(1.0, abs=2e-3))
    assert _current(directory)["generation"] == 1  # appended: no rewrite of the whole file
    assert first.search(vectors[15], 1).row(0)[0] == (15, pytest.approx(1.0, abs=2e-3))

    # A removal alone (same row count) by one writer is not undone by the other's next save.
    first.remove([19])
    first.save()
    second.add(np.array([30]), vectors[30:31])
    second.save()
    assert sorted(FaissIndex(directory).ids().tolist()) == sorted(set(range(31)) - {2, 7, 19})

    # When the other writer compacted into a new generation, this writer's view is written afresh.
    first.remove(np.arange(0, 30, 2))
    first.save()
    assert _current(directory)["generation"] == 2
    second.add(np.array([31]), vectors[31:32])
    second.save()
    assert _current(directory)["generation"] == 3
    assert sorted(FaissIndex(directory).ids().tolist()) == sorted(second.ids().tolist())


def test_unknown_storage_is_refused(tmp_path):
    with pytest.raises(ValueError, match="storage"):
        FaissIndex(tmp_path / "idx", storage="disk")


def test_backup_copies_the_committed_mmap_files_and_restore_searches_them(open_engine, lfw, tmp_path):
    from facesearch.backup import backup, restore

    engine = open_engine("faiss-mmap")
    engine.index([lfw("Colin_Powell_0001"), lfw("Hugo_Chavez_0001")], "c", progress=False)
    info = engine.collection("c")
    folder = engine.home / "index" / "faiss" / f"c{info.id}"
    pointer = _current(folder)
    assert pointer["storage"] == "mmap" and pointer["count"] == 2
    rows = mapped_paths(folder, pointer["generation"])["rows"]
    with open(rows, "ab") as fh:  # bytes past the count (an append that died) are not part of the index
        fh.write(b"\xff" * 1000)
    backup(engine, tmp_path / "b")
    copied = tmp_path / "b" / "index" / "faiss" / folder.name
    assert (copied / rows.name).read_bytes() == rows.read_bytes()[:2 * DIM * 2]
    assert restore(tmp_path / "b", tmp_path / "r").ok
    restored = open_engine(None, home=tmp_path / "r")
    assert restored.config.faiss_storage == "mmap"
    assert all(r.consistent for r in restored.doctor(repair=False))
    hit = restored.search(lfw("Colin_Powell_0002"), top_k=1).candidates[0]
    before = engine.search(lfw("Colin_Powell_0002"), top_k=1).candidates[0]
    assert (hit.face_id, hit.similarity) == (before.face_id, before.similarity)


@pytest.mark.parametrize("min_score", [0.95, 0.3], ids=["zeroed-in-place", "compacted"])
def test_red_team_an_erased_face_is_not_left_in_the_index_files(open_engine, lfw, min_score):
    """An insider who reads the index files after an erasure finds neither the erased face's fp16
    vector nor its sign code: a removal below the compaction share is zeroed in place, a larger one
    rewrites the files without it."""
    from facesearch.index.faiss_index import _random_rotation

    engine = open_engine("faiss-mmap")
    engine.index([lfw(name) for names in PEOPLE.values() for name in names], "c", progress=False)
    info = engine.collection("c")
    folder = engine.home / "index" / "faiss" / f"c{info.id}"
    stored = {int(i): v for ids, vectors in engine.catalog.iter_embeddings(info.id) for i, v in zip(ids, vectors)}
    assert len(stored) == 6

    def on_disk(vector: np.ndarray) -> tuple[bool, bool]:
        blob = b"".join(p.read_bytes() for p in folder.iterdir() if p.is_file())
        code = np.packbits(vector[None, :] @ _random_rotation(DIM) > 0, axis=1).tobytes()
        return vector.astype(np.float16).tobytes() in blob, code in blob

    assert all(on_disk(v) == (True, True) for v in stored.values())  # so the check below can fail
    generation = _current(folder)["generation"]
    report = engine.erase_like(lfw("Colin_Powell_0001"), min_score=min_score)
    assert len(report.faces) == (1 if min_score > 0.9 else 2)
    for face_id in report.faces:
        assert on_disk(stored[face_id]) == (False, False)
    for face_id in set(stored) - set(report.faces):
        assert on_disk(stored[face_id]) == (True, True)
    assert _current(folder)["generation"] == generation + (0 if min_score > 0.9 else 1)


@pytest.mark.parametrize("storage", ["ram", "mmap"])
def test_random_adds_removes_saves_and_reopens_match_a_plain_model(storage, tmp_path, monkeypatch):
    """A seeded random sequence of operations against a dict as the model, with the id map's
    rebuilds, the pending-row flushes and the compactions all made to happen often."""
    monkeypatch.setattr(faiss_storage.IdMap, "REBUILD_AFTER", 7)
    rng = np.random.default_rng(9)
    vectors = unit_vectors(rng, 400)
    directory = tmp_path / "idx"

    def opened() -> FaissIndex:
        return FaissIndex(directory, storage=storage, pending_limit=13, exact_limit=50)

    index, model = opened(), {}
    for step in range(120):
        op = rng.choice(["add", "remove", "save", "reopen"], p=[0.45, 0.35, 0.12, 0.08])
        if op == "add":
            ids = rng.choice(400, size=rng.integers(1, 12), replace=False)
            index.add(ids, vectors[ids])
            model.update({int(i): True for i in ids})
        elif op == "remove" and model:
            gone = rng.choice(sorted(model), size=min(len(model), int(rng.integers(1, 8))), replace=False)
            assert index.remove(np.append(gone, 999)) == len(gone)
            for i in gone.tolist():
                del model[i]
        elif op == "save":
            index.save()
        elif op == "reopen":
            index.save()
            index = opened()
        assert sorted(index.ids().tolist()) == sorted(model), step
    assert sorted(index.ids().tolist()) == sorted(model)
    assert index.mode == "binary-rerank" and index.storage_mode == storage
    alive = np.array(sorted(model))
    hits = index.search(vectors[alive], 1)
    assert (hits.ids[:, 0] == alive).all()
