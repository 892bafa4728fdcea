"""Videos through ingest, catalog, search, API and erasure: a few timed faces per track, never every frame.

The 60-second video (tests/video_fixtures.py) shows Colin Powell (0-20 s), George W. Bush
(20-40 s), nobody (40-42 s) and Hugo Chavez (42-60 s); probes are other photos of them.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from facesearch.services.engine import Engine
from tests.conftest import LFW, WHY
from tests.video_fixtures import three_people_video

SPANS = {"Colin_Powell": (0.0, 20.0), "George_W_Bush": (20.0, 40.0), "Hugo_Chavez": (42.0, 60.0)}


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return three_people_video(tmp_path_factory.mktemp("video"))


@pytest.fixture(scope="module")
def footage(tmp_path_factory, video, analyzer):
    """A home with the video and one photo indexed into collection 'footage'."""
    engine = Engine.open(tmp_path_factory.mktemp("video_home") / "home", backend="faiss",
                         analyzer_factory=lambda: analyzer)
    summary = engine.index([video, LFW / "Hugo_Chavez_0001.jpg"], "footage", progress=False)
    yield engine, summary
    engine.close()


def video_faces(engine: Engine, collection: str = "footage"):
    info = engine.collection(collection)
    return [f for f in engine.catalog.faces(engine.catalog.face_ids(info.id).tolist()).values() if f.is_video]


def test_a_video_indexes_into_a_few_timed_faces_per_track(footage):
    engine, summary = footage
    assert summary.videos_indexed == 1 and summary.images_indexed == 1
    assert summary.video_tracks == 3
    faces = video_faces(engine)
    by_track: dict[int, list] = {}
    for face in faces:
        by_track.setdefault(face.track_id, []).append(face)
    assert len(by_track) == 3
    for track in by_track.values():
        assert 1 <= len(track) <= 5
        assert all(f.timestamp_s is not None and 0 <= f.timestamp_s <= 60 for f in track)
        assert all(f.frame and engine.thumbnails.path(f.frame).is_file() for f in track)
        assert all(f.thumbnail and engine.thumbnails.path(f.thumbnail).is_file() for f in track)
    assert summary.faces_indexed == len(faces) + 1  # + the photo's face, not hundreds of frames


@pytest.mark.parametrize("person", sorted(SPANS))
def test_a_probe_returns_its_persons_track_and_times(footage, person):
    engine, _ = footage
    result = engine.search(LFW / f"{person}_0002.jpg", collections=["footage"], top_k=10)
    leads = [c for c in result.candidates if c.above_threshold and c.media == "video"]
    assert leads, result.candidates
    start, end = SPANS[person]
    assert {c.track_id for c in leads} == {leads[0].track_id}  # one track: this person's
    assert all(start - 0.5 <= c.timestamp_s <= end + 0.5 for c in leads), [c.timestamp_s for c in leads]
    # the track's own times: when this person is on screen, to the sampling step (0.5 s)
    first, last = leads[0].track_span
    assert abs(first - start) <= 1.0 and abs(last - end) <= 1.0, leads[0].track_span
    others = [c for c in result.candidates if c.media == "video" and c.track_id != leads[0].track_id]
    assert all(not c.above_threshold for c in others)


def test_a_track_is_one_candidate_so_top_k_counts_people_in_clips(footage):
    """A track's frames fold into its best face: top_k candidates are top_k different tracks or photos."""
    engine, _ = footage
    result = engine.search(LFW / "Colin_Powell_0002.jpg", collections=["footage"], top_k=3)
    keys = [(c.image_id, c.track_id) if c.track_id is not None else c.face_id for c in result.candidates]
    assert len(result.candidates) == 3 and len(set(keys)) == 3, keys  # not three frames of one track
    best = result.candidates[0]
    assert best.above_threshold and best.media == "video"
    track = [f for f in video_faces(engine) if f.track_id == best.track_id]
    assert len(track) >= 2  # else there would be nothing to fold
    assert best.face_id in best.track_faces and set(best.track_faces) == {f.id for f in track}
    times = [f.timestamp_s for f in sorted(track, key=lambda f: best.track_faces.index(f.id))]
    assert times == sorted(times)  # the other faces, in time order
    assert 2 <= best.track_hits <= len(track)
    # the best-scoring face of the track is the one shown
    scores = engine.search(LFW / "Colin_Powell_0002.jpg", collections=["footage"], top_k=50)
    assert best.similarity == max(c.similarity for c in scores.candidates if c.track_id == best.track_id)
    photo = [c for c in result.candidates if c.media == "image"]
    assert all(not c.track_faces and c.track_hits == 0 for c in photo)


def test_cli_indexes_a_video_and_prints_the_time(footage, video, cli, tmp_path):
    code, out, _ = cli("index", str(video), "--collection", "clips", "--home", str(tmp_path / "home"))
    assert code == 0 and "1 videos (3 face tracks)" in out
    engine, _ = footage
    code, out, _ = cli("search", str(LFW / "Colin_Powell_0002.jpg"), *WHY, "--home", str(engine.home), "--top-k", "3")
    assert code == 0
    assert " at 0:" in out and "(track " in out and "on screen 0:00.0-0:19.5" in out


def test_api_shows_the_time_and_a_frame(api_fresh_env, video):
    env = api_fresh_env(layout={"alpha": []})
    job = env.upload("alpha", [video])
    assert job["state"] == "done", job
    body = env.search("api_ivy", LFW / "George_W_Bush_0002.jpg").json()
    top = body["candidates"][0]
    assert top["above_threshold"] and top["media"] == "video"
    assert 20.0 - 0.5 <= top["timestamp_s"] <= 40.5
    assert top["track_span"][0] == pytest.approx(20.0, abs=1.0) and top["track_span"][1] == pytest.approx(40.0, abs=1.0)
    assert top["face_id"] in top["track_faces"] and top["track_hits"] >= 1
    tracks = [(c["image_id"], c["track_id"]) for c in body["candidates"] if c["media"] == "video"]
    assert len(tracks) == len(set(tracks))  # one candidate per track
    with env.as_user("api_ivy") as client:
        face = client.get(f"/api/faces/{top['face_id']}", params={"view": body["view_token"]}).json()
        assert face["media"] == "video" and face["timestamp_s"] == top["timestamp_s"]
        assert len(face["image_faces"]) == 1  # only this face: other faces of the video are at other times
        photo = client.get(face["photo_url"])  # under the search's view grant, which the URL carries
        assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
        frame = Image.open(io.BytesIO(photo.content))
        x1, y1, x2, y2 = face["box"]
        assert 0 <= x1 < x2 <= frame.width and 0 <= y1 < y2 <= frame.height


def test_erasing_a_video_removes_its_frames_and_thumbnails(open_engine, video, analyzer):
    engine = open_engine(analyzer_factory=lambda: analyzer)
    engine.index([video], "clips", progress=False)
    faces = video_faces(engine, "clips")
    files = [engine.thumbnails.path(p) for f in faces for p in (f.thumbnail, f.frame)]
    assert files and all(p.is_file() for p in files)
    report = engine.erase_images([faces[0].image_id])
    assert sorted(report.faces) == sorted(f.id for f in faces)
    assert report.thumbnails_deleted == len(files)
    assert not any(p.exists() for p in files)
    assert all(r.consistent for r in engine.doctor(repair=False))

