"""Real-world input and load: bounded per-photo memory, failure isolation, a server that sheds load.

Memory of whole runs is asserted from subprocesses' peak RSS in ``test_fuzz_images.py``; this
file checks the mechanisms: working-resolution decoding, what a folder run does with bad
entries, what the server does when its CPU pool is full, and the request limits.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facesearch.api.limits import RequestLimits, ServerLimits
from facesearch.api.workers import CpuPool, ServerBusy
from facesearch.catalog import CatalogError
from facesearch.pipeline.imageio import DEFAULT_WORK_PIXELS, open_photo
from tests.conftest import LFW


@pytest.fixture(scope="module")
def camera_jpeg(tmp_path_factory) -> Path:
    """A 6000x4000 camera-sized JPEG made by upscaling a real LFW photo."""
    path = tmp_path_factory.mktemp("camera") / "IMG_0001.jpg"
    Image.open(LFW / "Colin_Powell_0001.jpg").convert("RGB").resize((6000, 4000), Image.BICUBIC).save(path, quality=90)
    return path


# -- decoding at working resolution ---------------------------------------------------------------


def test_camera_jpeg_is_decoded_at_working_resolution(camera_jpeg):
    photo = open_photo(camera_jpeg)
    height, width = photo.pixels.shape[:2]
    assert photo.full_size == (6000, 4000)
    assert width * height <= DEFAULT_WORK_PIXELS
    assert photo.reduced and photo.scale == pytest.approx((2.0, 2.0), rel=0.01)  # libjpeg's 1/2 draft
    assert photo.full_pixels().shape == (4000, 6000, 3)  # full detail still reachable, decoded again


def test_exif_rotated_camera_photo_reports_upright_size(tmp_path, camera_jpeg):
    rotated = tmp_path / "rotated.jpg"
    image = Image.open(camera_jpeg)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    image.save(rotated, quality=90, exif=exif)
    photo = open_photo(rotated)
    assert photo.full_size == (4000, 6000)
    assert photo.pixels.shape[0] > photo.pixels.shape[1]  # upright: taller than wide
    assert photo.full_pixels().shape == (6000, 4000, 3)


def test_faces_of_a_reduced_photo_are_in_original_coordinates(analyzer, camera_jpeg):
    small = analyzer.analyze(LFW / "Colin_Powell_0001.jpg")
    big = analyzer.analyze(camera_jpeg)
    assert len(small) >= 1 and len(big) >= 1
    width, height = Image.open(LFW / "Colin_Powell_0001.jpg").size
    sx, sy = 6000 / width, 4000 / height
    box_small = np.array(small[0].box) * np.array([sx, sy, sx, sy])
    assert np.allclose(np.array(big[0].box), box_small, rtol=0.1, atol=40)
    similarity = float(np.dot(small[0].embedding, big[0].embedding))
    assert similarity > 0.8  # same face, same identity after the round trip through working resolution


def test_small_arrays_are_not_reduced():
    photo = open_photo(np.zeros((100, 200, 3), np.uint8))
    assert not photo.reduced and photo.full_size == (200, 100)


@pytest.mark.parametrize("size", [(1, 24000), (24000, 1), (3, 65000)])
def test_extreme_aspect_ratio_photo_gives_a_result(analyzer, tmp_path, size):
    path = tmp_path / "strip.png"
    Image.new("RGB", size, (200, 120, 90)).save(path)
    assert analyzer.analyze(path) == []


# -- ingest: one bad file never stops a run --------------------------------------------------------


def _folder_with_bad_entries(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("Colin_Powell_0001.jpg", "George_W_Bush_0001.jpg"):
        shutil.copy(LFW / name, folder / name)
    data = (LFW / "Hugo_Chavez_0001.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.jpg"), "wb") as fh:  # Latin-1 name: not UTF-8
        fh.write((LFW / "Colin_Powell_0002.jpg").read_bytes())
    os.mkfifo(folder / "pipe.jpg")
    outside = tmp_path / "outside.jpg"
    shutil.copy(LFW / "George_W_Bush_0002.jpg", outside)
    (folder / "link.jpg").symlink_to(outside)
    return folder


def test_folder_with_fifo_bad_name_truncated_and_escaping_link_indexes_the_rest(open_engine, tmp_path):
    folder = _folder_with_bad_entries(tmp_path)
    engine = open_engine()
    summary = engine.index([folder], "mixed", progress=False)
    assert summary.images_indexed == 2
    problems = {Path(path).name: reason for path, reason in summary.failed + summary.skipped}
    assert "FIFO" in problems["pipe.jpg"]
    assert "UTF-8" in problems["caf\\xe9.jpg"]
    assert "truncated" in problems["truncated.jpg"] or "damaged" in problems["truncated.jpg"]
    assert "out of the folder" in problems["link.jpg"]
    from sqlalchemy import select

    from facesearch.catalog.schema import IngestEvent

    with engine.catalog.session() as session:
        journal = {row.source: (row.outcome, row.reason) for row in session.scalars(
            select(IngestEvent).where(IngestEvent.run_id == summary.run_id))}
    assert {Path(source).name for source, (outcome, _) in journal.items() if outcome != "indexed"} == {
        "pipe.jpg", "caf\\xe9.jpg", "truncated.jpg", "link.jpg"}


def test_a_photo_that_breaks_the_detector_is_journalled_and_the_batch_goes_on(open_engine, tmp_path):
    """Fault injection: the detector runs out of memory on one photo of a batch."""
    folder = tmp_path / "batch"
    folder.mkdir()
    for name in ("Colin_Powell_0001.jpg", "George_W_Bush_0001.jpg", "Hugo_Chavez_0001.jpg"):
        shutil.copy(LFW / name, folder / name)
    engine = open_engine()
    analyzer = engine.analyzer
    real = analyzer.analyze_photos
    bad = np.asarray(Image.open(LFW / "George_W_Bush_0001.jpg").convert("RGB"))

    def flaky(photos, **kwargs):
        if any(np.array_equal(p.pixels, bad) for p in photos):
            raise MemoryError("injected: out of memory in the detector")
        return real(photos, **kwargs)

    analyzer.analyze_photos = flaky
    try:
        summary = engine.index([folder], "faulty", progress=False)
    finally:
        analyzer.analyze_photos = real
    assert summary.images_indexed == 2
    assert [Path(p).name for p, _ in summary.failed] == ["George_W_Bush_0001.jpg"]
    assert "out of memory" in summary.failed[0][1]


def test_indexing_the_home_itself_is_refused(open_engine):
    engine = open_engine()
    with pytest.raises(CatalogError, match="own home"):
        engine.index([engine.home], "self", progress=False)
    with pytest.raises(CatalogError, match="own home"):
        engine.index([engine.home.parent], "parent", progress=False)


def test_a_failed_run_leaves_an_audit_record(open_engine, tmp_path):
    from facesearch.governance import Governance, local_operator

    engine = open_engine()
    gov = Governance(engine)
    with pytest.raises(CatalogError):
        gov.ingest(local_operator(), [engine.home], "self", progress=False)
    last = gov.audit.entries(newest_first=True, limit=1)[0]
    assert last.action == "ingest_failed" and last.details["collection"] == "self"


# -- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize("days", [0, -1, 36_501, 10**12])
def test_retention_outside_one_day_to_a_century_is_refused(open_engine, days):
    with pytest.raises(CatalogError, match="between 1 and 36,500"):
        open_engine().create_collection(f"r{abs(days)}", "consent", retention_days=days)


def test_a_corrupt_retention_value_does_not_stop_the_sweep_for_others(open_engine, tmp_path):
    from sqlalchemy import update

    from facesearch.catalog.schema import Collection

    engine = open_engine()
    engine.create_collection("broken", "consent", retention_days=30)
    engine.create_collection("fine", "consent", retention_days=1)
    folder = tmp_path / "one"
    folder.mkdir()
    shutil.copy(LFW / "Colin_Powell_0001.jpg", folder / "a.jpg")
    engine.index([folder], "fine", progress=False)
    engine.index([folder], "broken", progress=False)
    with engine.catalog.session() as s:  # an insider writes around the checks
        s.execute(update(Collection).where(Collection.name == "broken").values(retention_days=10**12))
    from datetime import datetime, timedelta

    expired = engine.catalog.expired_images(datetime.now() + timedelta(days=3))
    assert list(expired) == [engine.collection("fine").id]


def test_api_refuses_bad_retention(api_env):
    for days in (0, 36_501, 10**12, -5):
        response = api_env.anon.post("/api/collections", json={"name": f"bad{abs(days)}", "legal_basis": "x",
                                                              "retention_days": days},
                                     headers=api_env.headers("api_admin"))
        assert response.status_code == 422, response.text


@pytest.mark.parametrize("overrides", [{"cpu_workers": 0}, {"cpu_queue": -1}, {"max_body_bytes": 10},
                                       {"body_timeout_s": 0}, {"request_time_limit_s": -1}])
def test_invalid_server_limits_are_refused(overrides):
    with pytest.raises(ValueError, match="invalid server limits"):
        ServerLimits(**overrides)


def test_limits_come_from_the_settings(monkeypatch, tmp_path):
    from facesearch.settings import SettingsError, load_settings

    monkeypatch.setenv("FACESEARCH_WORKERS", "3")
    monkeypatch.setenv("FACESEARCH_INGEST_ROOTS", "/srv/a,/srv/b")
    limits = ServerLimits.from_settings(load_settings(tmp_path / "home"))
    assert limits.cpu_workers == 3 and limits.ingest_roots == (Path("/srv/a"), Path("/srv/b"))
    monkeypatch.setenv("FACESEARCH_WORKER_QUEUE", "many")
    with pytest.raises(SettingsError, match="FACESEARCH_WORKER_QUEUE"):
        load_settings(tmp_path / "home")


def test_serve_refuses_a_bad_port(cli):
    code, _, err = cli("serve", "--port", "70000")
    assert code == 2 and "not a port number" in err


# -- the server's CPU pool -------------------------------------------------------------------------


def test_cpu_pool_answers_busy_when_full_instead_of_queuing():
    pool = CpuPool(workers=1, queue=1, time_limit_s=30)
    release = threading.Event()

    async def scenario():
        first = asyncio.ensure_future(pool.run(release.wait, 10))
        second = asyncio.ensure_future(pool.run(release.wait, 10))
        await asyncio.sleep(0.05)
        with pytest.raises(ServerBusy) as busy:
            await pool.run(time.sleep, 0)
        assert busy.value.retry_after_s > 0
        assert pool.depth == 2
        release.set()
        assert await first and await second
        assert await pool.run(lambda: 42) == 42  # room again

    asyncio.run(scenario())
    pool.shutdown()


def test_cpu_pool_gives_up_on_a_job_past_its_time_limit():
    pool = CpuPool(workers=1, queue=0, time_limit_s=0.2)

    async def scenario():
        with pytest.raises(ServerBusy, match="longer than"):
            await pool.run(time.sleep, 1.0)

    asyncio.run(scenario())
    pool.shutdown()


def test_api_search_answers_503_with_retry_after_when_the_pool_is_full(api_env):
    pool: CpuPool = api_env.app.state.cpu
    release = threading.Event()
    taken = [pool._slots.acquire(blocking=False) for _ in range(pool.workers + pool.queue)]
    try:
        assert all(taken)
        response = api_env.search("api_ivy", LFW / "Colin_Powell_0002.jpg")
        assert response.status_code == 503
        assert int(response.headers["retry-after"]) > 0
        assert api_env.anon.get("/health").status_code == 200  # light requests still answered
    finally:
        for _ in taken:
            pool._slots.release()
        release.set()
    assert api_env.search("api_ivy", LFW / "Colin_Powell_0002.jpg").status_code == 200


# -- request limits -------------------------------------------------------------------------------


async def _call(app, headers, chunks, delay_s=0.0):
    sent: list[dict] = []
    queue = list(chunks)

    async def receive():
        if delay_s:
            await asyncio.sleep(delay_s)
        body = queue.pop(0) if queue else b""
        return {"type": "http.request", "body": body, "more_body": bool(queue)}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/x", "headers": headers, "query_string": b""}
    await app(scope, receive, send)
    return sent


async def _echo_app(scope, receive, send):
    total = 0
    while True:
        message = await receive()
        total += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(total).encode()})


def test_declared_oversized_body_is_refused_before_reading():
    app = RequestLimits(_echo_app, max_body_bytes=100, body_timeout_s=5)
    sent = asyncio.run(_call(app, [(b"content-length", b"1000")], [b"x" * 1000]))
    assert sent[0]["status"] == 413


def test_streamed_body_past_the_limit_is_cut_off():
    app = RequestLimits(_echo_app, max_body_bytes=100, body_timeout_s=5)
    sent = asyncio.run(_call(app, [], [b"x" * 60, b"x" * 60]))
    assert sent[0]["status"] == 413


def test_stalled_body_times_out():
    app = RequestLimits(_echo_app, max_body_bytes=100, body_timeout_s=0.1)
    sent = asyncio.run(_call(app, [], [b"x", b"y"], delay_s=0.5))
    assert sent[0]["status"] == 408


def test_body_within_limits_passes():
    app = RequestLimits(_echo_app, max_body_bytes=100, body_timeout_s=5)
    sent = asyncio.run(_call(app, [(b"content-length", b"20")], [b"x" * 10, b"x" * 10]))
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"20"


def test_api_refuses_a_body_over_the_server_limit(api_env):
    limit = api_env.app.state.limits.max_body_bytes
    response = api_env.anon.post("/api/search", content=b"x" * 16, headers={
        **api_env.headers("api_ivy"), "content-length": str(limit + 1), "content-type": "multipart/form-data"})
    assert response.status_code == 413


# -- folder ingest and uploads ------------------------------------------------------------------------


def test_folder_ingest_only_under_allowed_roots(api_env, tmp_path):
    admin = api_env.headers("api_admin")
    api_env.create_collection("roots")
    outside = Path("/var/tmp") if Path("/var/tmp").is_dir() else Path("/")
    response = api_env.anon.post("/api/collections/roots/ingest-folder", json={"path": str(outside)}, headers=admin)
    assert response.status_code == 403 and "allowed ingest root" in response.json()["detail"]
    response = api_env.anon.post("/api/collections/roots/ingest-folder", json={"path": str(api_env.home)},
                                 headers=admin)
    assert response.status_code == 403 and "own home" in response.json()["detail"]
    response = api_env.anon.post("/api/collections/roots/ingest-folder", json={"path": "relative/dir"}, headers=admin)
    assert response.status_code == 400


def test_folder_ingest_is_off_without_configured_roots():
    from fastapi import HTTPException

    with pytest.raises(HTTPException) as refused:
        ServerLimits().allowed_ingest_folder("/tmp", Path("/nonexistent-home"))
    assert refused.value.status_code == 403 and "FACESEARCH_INGEST_ROOTS" in refused.value.detail


def test_failed_upload_job_leaves_no_orphan_and_is_audited(api_fresh_env):
    env = api_fresh_env(layout={"up": []}, grants={})
    real = env.app.state.governance.engine.index

    def broken(*args, **kwargs):
        raise CatalogError("injected: the catalog went away")

    env.app.state.governance.engine.index = broken
    try:
        files = [("files", ("a.jpg", (LFW / "Colin_Powell_0001.jpg").read_bytes(), "image/jpeg"))]
        response = env.anon.post("/api/collections/up/photos", files=files, headers=env.headers("api_admin"))
        assert response.status_code == 202
        job = env.wait(response.json()["id"])
    finally:
        env.app.state.governance.engine.index = real
    assert job["state"] == "failed"
    uploads = env.engine.uploads
    assert not [p for p in uploads.rglob("*") if p.is_file()]
    actions = [e.action for e in env.gov.audit.entries(newest_first=True, limit=5)]
    assert "ingest_failed" in actions


def test_upload_of_a_broken_file_keeps_no_copy(api_fresh_env):
    env = api_fresh_env(layout={"up": []}, grants={})
    data = (LFW / "Colin_Powell_0001.jpg").read_bytes()
    files = [("files", ("good.jpg", data, "image/jpeg")), ("files", ("bad.jpg", data[:500], "image/jpeg"))]
    response = env.anon.post("/api/collections/up/photos", files=files, headers=env.headers("api_admin"))
    job = env.wait(response.json()["id"])
    assert job["state"] == "done" and job["images_indexed"] == 1 and len(job["failed"]) == 1
    kept = [p for p in env.engine.uploads.rglob("*") if p.is_file()]
    assert len(kept) == 1
    assert env.engine.catalog.face_counts_by_source([str(kept[0].resolve())])[str(kept[0].resolve())][1] >= 1
