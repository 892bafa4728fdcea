"""The URLs of faces, written once, and the one mapping of a search candidate to its answer.
A face is looked at only under a view grant, so each URL carries the grant's token
(``?view=...``) when there is one."""

from __future__ import annotations

from typing import Any

from facesearch.search.results import Candidate


def _query(token: str | None) -> str:
    return f"?view={token}" if token else ""


def face_url(face_id: int, token: str | None = None) -> str:
    return f"/api/faces/{face_id}{_query(token)}"


def face_thumbnail_url(face_id: int, token: str | None = None) -> str:
    return f"/api/faces/{face_id}/thumbnail{_query(token)}"


def face_photo_url(face_id: int, token: str | None = None) -> str:
    return f"/api/faces/{face_id}/photo{_query(token)}"


def subject_face_thumbnail_url(subject_face_id: int, token: str | None = None) -> str:
    return f"/api/subject-faces/{subject_face_id}/thumbnail{_query(token)}"


def view_urls(face_id: int, token: str | None, thumbnail: bool = True) -> dict[str, str | None]:
    """The URLs of a face under a view grant: its details, its crop (if kept) and its photo."""
    return {"details_url": face_url(face_id, token),
            "thumbnail_url": face_thumbnail_url(face_id, token) if thumbnail else None,
            "photo_url": face_photo_url(face_id, token)}


def candidate_fields(c: Candidate, token: str | None) -> dict[str, Any]:
    """A face search candidate as the API shows it, its URLs under the search's view grant: the
    one mapping of :class:`~facesearch.search.results.Candidate` (a response model picks its fields)."""
    fm = c.false_match
    return {"rank": c.rank, "face_id": c.face_id, "similarity": c.similarity, "above_threshold": c.above_threshold,
            "false_match_rate": fm.rate if fm else None, "false_match_extrapolated": fm.extrapolated if fm else False,
            "false_match_fpir": fm.fpir if fm else None, "false_match_words": fm.words if fm else None,
            "collection": c.collection, "image_id": c.image_id, "box": c.box, "quality": c.quality,
            "thumbnail_url": face_thumbnail_url(c.face_id, token) if c.thumbnail else None,
            "photo_url": face_photo_url(c.face_id, token), "media": c.media, "timestamp_s": c.timestamp_s,
            "track_id": c.track_id, "track_span": c.track_span, "track_faces": list(c.track_faces),
            "track_hits": c.track_hits}
