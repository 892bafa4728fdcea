"""Faces and photos, looked at only under a view grant (the ``view`` query parameter, issued by
the search or view that showed the face); ``POST /api/views`` issues one for faces named by id,
with a purpose and a case reference recorded first."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response
from fastapi.responses import FileResponse

from facesearch.api import schemas
from facesearch.api.deps import Ctx, Searcher
from facesearch.api.photo_facts import capture_time, source_name
from facesearch.api.urls import face_photo_url, face_thumbnail_url, view_urls
from facesearch.catalog.store import FaceInfo
from facesearch.pipeline import load_image

router = APIRouter(tags=["faces"])

ViewToken = Annotated[str | None, Query(alias="view", max_length=100,
                                        description="the view grant of the search or view that showed the face")]
NO_STORE = {"Cache-Control": "private, no-store"}


def frame_box(info: FaceInfo, frame_path: Path) -> tuple[float, float, float, float]:
    """A video face's box in the pixels of its stored (downscaled) frame."""
    from PIL import Image

    try:
        with Image.open(frame_path) as frame:
            scale = frame.width / max(info.image_size[0], 1)
    except OSError:
        scale = 1.0
    return tuple(round(v * scale, 1) for v in info.box)


def _upright_jpeg(path: Path, rotation: int = 0) -> bytes:
    """The photo as the face boxes see it: EXIF applied, and turned as ingest turned a sideways scan."""
    from io import BytesIO

    import numpy as np
    from PIL import Image

    buffer = BytesIO()
    pixels = load_image(path)
    if rotation % 360:
        pixels = np.ascontiguousarray(np.rot90(pixels, -(rotation // 90) % 4))
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@router.post("/api/views", response_model=schemas.ViewGrantOut, status_code=201)
def grant_view(body: schemas.ViewRequest, who: Searcher, ctx: Ctx) -> schemas.ViewGrantOut:
    """Look at faces named by id, without a search: the purpose and case are recorded first."""
    token = ctx.gov.grant_view(who.user, body.face_ids, purpose=body.purpose, case_ref=body.case_ref)
    return schemas.ViewGrantOut(view_token=token, faces={f: view_urls(f, token) for f in body.face_ids})


@router.get("/api/faces/{face_id}", response_model=schemas.FaceOut)
def face(face_id: schemas.RowIdPath, who: Searcher, ctx: Ctx, view: ViewToken = None) -> schemas.FaceOut:
    gov = ctx.gov
    info = gov.face_details(who.user, face_id, view)
    if info.is_video:  # its photo is the stored frame: one face, boxed in the frame's own pixels
        box = frame_box(info, gov.photo_path(info))
        others = [{"face_id": info.id, "box": box, "quality": info.quality}]
    else:
        box = info.box
        others = [{"face_id": f.id, "box": f.box, "quality": f.quality}
                  for f in gov.photo_faces(info)]
    return schemas.FaceOut(face_id=info.id, image_id=info.image_id, collection=info.collection, box=box,
                           quality=info.quality, quality_issues=list(info.quality_issues),
                           thumbnail_url=face_thumbnail_url(face_id, view) if info.thumbnail else None,
                           photo_url=face_photo_url(face_id, view), image_faces=others, media=info.media,
                           timestamp_s=info.timestamp_s, track_id=info.track_id, track_span=info.track_span,
                           source_name=source_name(info.image_source, ctx.engine.uploads),
                           captured_at=None if info.is_video else capture_time(Path(info.image_source)))


@router.get("/api/faces/{face_id}/thumbnail", response_class=FileResponse)
def thumbnail(face_id: schemas.RowIdPath, who: Searcher, ctx: Ctx, view: ViewToken = None) -> FileResponse:
    path = ctx.gov.thumbnail(who.user, face_id, view)
    if not path.is_file():
        raise HTTPException(404, "thumbnail missing (run facesearch doctor)")
    return FileResponse(path, media_type="image/jpeg", headers=NO_STORE)


@router.get("/api/faces/{face_id}/photo")
async def photo(face_id: schemas.RowIdPath, who: Searcher, ctx: Ctx, view: ViewToken = None) -> Response:
    access = await asyncio.to_thread(ctx.gov.photo, who.user, face_id, view)
    if not access.path.is_file():
        raise HTTPException(404, "the source photo is no longer at its recorded path")
    if access.is_video_frame:
        return FileResponse(access.path, media_type="image/jpeg", headers=NO_STORE)
    # Re-encoded upright (browsers differ on EXIF orientation; the boxes are for the upright image).
    jpeg = await ctx.cpu.run(_upright_jpeg, access.path, access.rotation)
    return Response(jpeg, media_type="image/jpeg", headers=NO_STORE)
