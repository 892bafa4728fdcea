"""What the issue-16 web pages need from the API, checked without a browser: the audit log's
purpose and date filters, and the photo view's source name and capture time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from PIL import Image

from facesearch.api.photo_facts import capture_time, source_name
from tests.conftest import LFW


def exif_photo(path: Path, *, original: str | None = None, plain: str | None = None) -> Path:
    """Powell's LFW photo with the EXIF capture times given (DateTimeOriginal and/or DateTime)."""
    with Image.open(LFW / "Colin_Powell_0001.jpg") as img:
        exif = Image.Exif()
        if plain:
            exif[306] = plain
        if original:
            exif.get_ifd(0x8769)[36867] = original
        img.save(path, exif=exif, quality=95)
    return path


def test_capture_time_comes_from_the_photo_when_it_has_one(tmp_path):
    assert capture_time(exif_photo(tmp_path / "a.jpg", original="2025:06:14 09:30:00",
                                   plain="2026:01:01 00:00:00")) == "2025-06-14 09:30:00"
    assert capture_time(exif_photo(tmp_path / "b.jpg", plain="2024:02:29 23:59:58")) == "2024-02-29 23:59:58"
    assert capture_time(exif_photo(tmp_path / "c.jpg", original="0000:00:00 00:00:00")) is None  # no clock
    assert capture_time(LFW / "Colin_Powell_0002.jpg") is None  # no EXIF at all
    (tmp_path / "d.jpg").write_bytes(b"not an image")
    assert capture_time(tmp_path / "d.jpg") is None
    assert capture_time(tmp_path / "missing.jpg") is None


def test_source_name_is_kept_for_indexed_files_not_for_uploads(tmp_path):
    uploads = tmp_path / "home" / "uploads"
    (uploads / "c1").mkdir(parents=True)
    assert source_name(str(uploads / "c1" / "k3yed.jpg"), uploads) is None
    assert source_name(str(tmp_path / "inbox" / "harbour.jpg"), uploads) == "harbour.jpg"


def test_face_details_say_the_capture_time_of_an_uploaded_photo(api_fresh_env, tmp_path):
    env = api_fresh_env(layout={"alpha": []})
    env.upload("alpha", [exif_photo(tmp_path / "powell.jpg", original="2025:06:14 09:30:00")])
    body = env.search("api_ivy", LFW / "Colin_Powell_0002.jpg").json()
    top = body["candidates"][0]
    assert top["above_threshold"], body
    face = env.as_user("api_ivy").get(f"/api/faces/{top['face_id']}", params={"view": body["view_token"]})
    assert face.status_code == 200, face.text
    assert face.json()["captured_at"] == "2025-06-14 09:30:00"
    assert face.json()["source_name"] is None  # an upload: its file name is deliberately not kept


def test_audit_filters_by_purpose_and_by_whole_days(api_fresh_env):
    env = api_fresh_env()
    for purpose in ("Trace a MISSING child", "identify a suspect", "trace a missing child again"):
        assert env.search("api_ivy", LFW / "Colin_Powell_0002.jpg", purpose=purpose).status_code == 200
    auditor = env.as_user("api_audrey")

    def records(**params) -> list[dict]:
        response = auditor.get("/api/audit", params=params)
        assert response.status_code == 200, response.text
        return [r for r in response.json() if r["action"] == "search"]

    found = records(purpose="missing child")  # contained, whatever the case
    assert sorted(r["purpose"] for r in found) == ["Trace a MISSING child", "trace a missing child again"]
    assert records(purpose="100%") == []  # a wildcard character is matched as itself
    today = datetime.now(UTC).date()
    assert len(records(since=str(today), until=str(today))) == 3  # a date "until" takes in that whole day
    assert records(until=str(today - timedelta(days=1))) == []
    assert records(since=str(today + timedelta(days=1))) == []
    assert len(records(until=datetime.now(UTC).isoformat())) == 3  # a time is compared as given
    export = auditor.get("/api/audit/export", params={"purpose": "SUSPECT", "action": "search"})
    lines = [json.loads(line) for line in export.text.splitlines()]
    assert [r["purpose"] for r in lines] == ["identify a suspect"]
