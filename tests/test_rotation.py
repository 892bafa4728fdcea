"""Sideways scans without EXIF: no face upright, so the photo is tried turned 90/180/270 degrees;
the turn that shows a face is kept and stored (images.rotation), the boxes, size and thumbnails
are of the upright picture, and the photo endpoint serves it upright.

A real face photo (tests/fixtures/lfw) turned with PIL and saved without any EXIF.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from facesearch.catalog.schema import ImageRecord
from facesearch.pipeline.imageio import Photo, open_photo
from facesearch.search.verify import pick_face
from facesearch.services.engine import Engine
from tests.conftest import LFW, cosine

PERSON = LFW / "Colin_Powell_0001.jpg"


def sideways(tmp_path, turn: Image.Transpose, name: str, size: tuple[int, int] | None = None):
    """The photo turned (PIL's transpose: counter-clockwise), saved as a JPEG without EXIF."""
    with Image.open(PERSON) as img:
        out = img.convert("RGB")
        if size:
            out = out.resize(size, Image.Resampling.BICUBIC)
        out = out.transpose(turn)
        path = tmp_path / f"{name}.jpg"
        out.save(path, quality=95)  # PIL writes no EXIF unless given one
    with Image.open(path) as check:
        assert not check.getexif()
    return path


@pytest.mark.parametrize(("turn", "back"), [(Image.Transpose.ROTATE_90, 90), (Image.Transpose.ROTATE_180, 180),
                                            (Image.Transpose.ROTATE_270, 270)])
def test_a_sideways_face_is_found_turned_upright(analyzer, embedding_of, tmp_path, turn, back):
    path = sideways(tmp_path, turn, "scan", size=(150, 200))  # not square: width and height swap
    photo = open_photo(path)
    faces = analyzer.analyze_photos([photo])[0]
    assert len(faces) == 1
    assert photo.rotation == back  # clockwise degrees that undo PIL's counter-clockwise turn
    assert photo.full_size == (150, 200) and photo.pixels.shape[:2] == (200, 150)  # upright again
    x1, y1, x2, y2 = faces[0].box
    assert 0 <= x1 < x2 <= 150 and 0 <= y1 < y2 <= 200
    # the same face as the upright photo: the crop was made from the turned pixels
    assert cosine(faces[0].embedding, embedding_of(PERSON)) > 0.8


def test_an_upright_photo_is_not_turned_and_a_faceless_one_stays_faceless(analyzer, no_face_path):
    photo = open_photo(PERSON)
    assert len(analyzer.analyze_photos([photo])[0]) == 1 and photo.rotation == 0
    blank = open_photo(no_face_path)
    assert analyzer.analyze_photos([blank])[0] == [] and blank.rotation == 0


def test_the_retry_can_be_switched_off(analyzer, embedding_of, tmp_path, monkeypatch):
    """The knob that bounds the cost; and without the retry a sideways scan gives no good face (so
    the tests above would fail if turning did nothing)."""
    path = sideways(tmp_path, Image.Transpose.ROTATE_90, "scan")
    monkeypatch.setattr(analyzer, "config", replace(analyzer.config, rotate_retry=False))
    photo = open_photo(path)
    faces = analyzer.analyze_photos([photo])[0]
    assert photo.rotation == 0
    assert not faces or faces[0].det_score < 0.7 or cosine(faces[0].embedding, embedding_of(PERSON)) < 0.5


def test_ingest_stores_the_turn_and_thumbnails_come_out_upright(tmp_path, analyzer):
    upright_dir, scan_dir = tmp_path / "upright", tmp_path / "scans"
    upright_dir.mkdir()
    scan_dir.mkdir()
    (upright_dir / "p.jpg").write_bytes(PERSON.read_bytes())
    sideways(scan_dir, Image.Transpose.ROTATE_90, "p_scan", size=(150, 200))
    opened = Engine.open(tmp_path / "home", backend="faiss")
    engine = Engine(opened.home, opened.config, opened.catalog, analyzer_factory=lambda: analyzer)
    try:
        engine.index([upright_dir], "upright", progress=False)
        summary = engine.index([scan_dir], "scans", progress=False)
        assert summary.faces_indexed == 1
        with engine.catalog.session() as s:
            row = s.query(ImageRecord).filter(ImageRecord.source.like("%p_scan.jpg")).one()
            assert (row.rotation, row.width, row.height) == (90, 150, 200)  # the upright picture's size
        found = engine.search(PERSON, collections=["scans"], top_k=1).candidates
        assert found and found[0].above_threshold
        info = engine.catalog.faces([found[0].face_id])[found[0].face_id]
        assert info.rotation == 90
        x1, y1, x2, y2 = info.box
        assert x2 <= 150 and y2 <= 200
        # the thumbnail is upright: it looks like the upright photo's thumbnail, not like it turned
        theirs = engine.search(PERSON, collections=["upright"], top_k=1).candidates[0]
        a = np.asarray(Image.open(found[0].thumbnail).convert("L").resize((64, 64)), np.float32)
        b = np.asarray(Image.open(theirs.thumbnail).convert("L").resize((64, 64)), np.float32)
        assert np.abs(a - b).mean() < np.abs(np.rot90(a) - b).mean()
        assert np.abs(a - b).mean() < np.abs(np.rot90(a, -1) - b).mean()
    finally:
        engine.close()


@settings(max_examples=60, deadline=None)
@given(width=st.integers(2, 40), height=st.integers(2, 40), degrees=st.sampled_from([0, 90, 180, 270]),
       data=st.data())
def test_a_box_of_a_turned_photo_maps_back_onto_the_picture_as_given(width, height, degrees, data):
    """Checked against numpy's own turn: a marked rectangle, found in the turned pixels and mapped
    back, is where it was drawn."""
    x1 = data.draw(st.integers(0, width - 1))
    x2 = data.draw(st.integers(x1 + 1, width))
    y1 = data.draw(st.integers(0, height - 1))
    y2 = data.draw(st.integers(y1 + 1, height))
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[y1:y2, x1:x2] = 255
    photo = Photo(pixels, (width, height), "marked").turned(degrees)
    rows, cols = np.nonzero(photo.pixels[:, :, 0])
    found = (float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1))
    assert photo.box_as_given(found) == (x1, y1, x2, y2)


def test_a_sideways_probe_reports_its_boxes_on_the_picture_as_sent(tmp_path, analyzer):
    """The web app draws the probe's boxes on the file the user sent: they must fit it unturned."""
    upright = tmp_path / "upright.jpg"
    with Image.open(PERSON) as img:
        img.convert("RGB").resize((150, 200), Image.Resampling.BICUBIC).save(upright, quality=95)
    scan = sideways(tmp_path, Image.Transpose.ROTATE_90, "probe", size=(150, 200))  # sent as 200 wide, 150 high
    _, straight = pick_face(analyzer, upright, None, "upright")
    _, turned = pick_face(analyzer, scan, None, "scan")
    assert (straight.rotation, turned.rotation) == (0, 90)
    ux1, uy1, ux2, uy2 = straight.box
    # PIL's ROTATE_90 (counter-clockwise) sends a point (x, y) of the 150-wide upright photo to (y, 150 - x)
    expected = (uy1, 150 - ux2, uy2, 150 - ux1)
    np.testing.assert_allclose(turned.box, expected, atol=4.0)
    assert turned.face_boxes[turned.chosen] == turned.box
