"""Bad input: every failure is the specific typed error, naming the offending path."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facesearch import FacesearchError, load_image
from facesearch.errors import (
    CorruptImageError,
    ImageError,
    ImageNotFoundError,
    ImageTooLargeError,
    NoFaceError,
    NotAnImageError,
)
from facesearch.pipeline import choose_face
from facesearch.pipeline.imageio import DEFAULT_MAX_PIXELS


def _assert_names(exc_info, path: Path) -> None:
    assert isinstance(exc_info.value, ImageError)
    assert isinstance(exc_info.value, FacesearchError)
    assert exc_info.value.source == str(path)
    assert str(path) in str(exc_info.value)


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny real PNG whose IHDR is patched to declare ``width`` x ``height`` (CRC fixed)."""
    buffer = io.BytesIO()
    Image.new("L", (16, 16), 90).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


@pytest.fixture(scope="module")
def jpeg_bytes(face_path) -> bytes:
    return face_path.read_bytes()


# -- not found / not a file ---------------------------------------------------------------


def test_missing_path(tmp_path):
    path = tmp_path / "nowhere" / "photo.jpg"
    with pytest.raises(ImageNotFoundError) as exc_info:
        load_image(path)
    _assert_names(exc_info, path)


def test_missing_path_as_str(tmp_path):
    path = str(tmp_path / "photo.jpg")
    with pytest.raises(ImageNotFoundError) as exc_info:
        load_image(path)
    assert path in str(exc_info.value)


def test_directory(tmp_path):
    with pytest.raises(ImageNotFoundError) as exc_info:
        load_image(tmp_path)
    _assert_names(exc_info, tmp_path)


# -- not an image -----------------------------------------------------------------------


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(NotAnImageError) as exc_info:
        load_image(path)
    _assert_names(exc_info, path)


def test_empty_bytes():
    with pytest.raises(NotAnImageError):
        load_image(b"")


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("these are not pixels\n" * 20)
    with pytest.raises(NotAnImageError) as exc_info:
        load_image(path)
    _assert_names(exc_info, path)


def test_pdf(tmp_path):
    path = tmp_path / "scan.pdf"
    path.write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")
    with pytest.raises(NotAnImageError) as exc_info:
        load_image(path)
    _assert_names(exc_info, path)


def test_image_format_outside_the_supported_list(tmp_path, face_photo):
    path = tmp_path / "photo.pcx"
    face_photo.save(path, "PCX")
    with Image.open(path) as img:
        assert img.format == "PCX"  # Pillow could decode it; facesearch does not accept it
    with pytest.raises(NotAnImageError) as exc_info:
        load_image(path)
    _assert_names(exc_info, path)
    assert "PCX" in str(exc_info.value)


# -- damaged ----------------------------------------------------------------------------


def test_truncated_jpeg(tmp_path, jpeg_bytes):
    path = tmp_path / "half.jpg"
    path.write_bytes(jpeg_bytes[: len(jpeg_bytes) // 2])
    with pytest.raises(CorruptImageError) as exc_info:
        load_image(path)
    _assert_names(exc_info, path)


def test_truncated_png(tmp_path, face_photo):
    buffer = io.BytesIO()
    face_photo.save(buffer, "PNG")
    path = tmp_path / "half.png"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(CorruptImageError) as exc_info:
        load_image(path)
    _assert_names(exc_info, path)


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(lambda jpeg: b"\xff\xd8\xff\xe0", id="jpeg-signature"),
        # A real JPEG's SOI, APP0, quantisation and frame headers, cut inside its first Huffman table.
        pytest.param(lambda jpeg: jpeg[:200], id="real-jpeg-headers"),
    ],
)
def test_random_bytes_behind_a_jpeg_header_are_corrupt(tmp_path, jpeg_bytes, head):
    """The file claims to be a JPEG (FF D8 FF...), so it is a damaged image, not a non-image."""
    path = tmp_path / "garbage.jpg"
    path.write_bytes(head(jpeg_bytes) + np.random.default_rng(0).bytes(3000))
    with pytest.raises(CorruptImageError) as exc_info:
        load_image(path)
    _assert_names(exc_info, path)


# -- too large --------------------------------------------------------------------------


def test_decompression_bomb(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_declaring(40_000, 40_000))
    assert path.stat().st_size < 200
    with pytest.raises(ImageTooLargeError) as exc_info:
        load_image(path)
    _assert_names(exc_info, path)


def test_decompression_bomb_in_bytes():
    with pytest.raises(ImageTooLargeError):
        load_image(_png_declaring(40_000, 40_000))


def test_max_pixels_limit_is_applied(face_path):
    assert load_image(face_path, max_pixels=150 * 150).shape == (150, 150, 3)
    with pytest.raises(ImageTooLargeError) as exc_info:
        load_image(face_path, max_pixels=150 * 150 - 1)
    _assert_names(exc_info, face_path)
    assert "150x150" in str(exc_info.value)


def test_photo_under_the_default_limit_is_not_refused_as_too_large(tmp_path):
    """A 102 MP photo (11648x8736, a medium-format camera) is under the documented 120 MP limit.

    Its header is real but its data is only 16x16 pixels' worth, so the right outcome is a
    CorruptImageError from decoding, not an ImageTooLargeError before it.
    """
    width, height = 11_648, 8_736
    assert width * height < DEFAULT_MAX_PIXELS
    path = tmp_path / "gfx100.png"
    path.write_bytes(_png_declaring(width, height))
    with pytest.raises(CorruptImageError) as exc_info:
        load_image(path)
    _assert_names(exc_info, path)


# -- pipeline entry points -------------------------------------------------------------


def test_analyze_reports_typed_errors(analyzer, tmp_path):
    path = tmp_path / "missing.jpg"
    with pytest.raises(ImageNotFoundError) as exc_info:
        analyzer.analyze(path)
    _assert_names(exc_info, path)


# -- no face -----------------------------------------------------------------------------


def test_image_without_a_face(analyzer, no_face_path):
    image = load_image(no_face_path)
    faces = analyzer.analyze(image)
    assert faces == []
    with pytest.raises(NoFaceError) as exc_info:
        choose_face(faces, image.shape, str(no_face_path))
    assert str(no_face_path) in str(exc_info.value)
    assert exc_info.value.source == str(no_face_path)


def test_black_image_has_no_face(analyzer):
    assert analyzer.analyze(np.zeros((120, 160, 3), np.uint8)) == []


@pytest.mark.parametrize("index", [1, 7, -1])
def test_face_index_out_of_range(analyzer, face_path, index):
    image = load_image(face_path)
    faces = analyzer.analyze(image)
    assert len(faces) == 1
    with pytest.raises(NoFaceError) as exc_info:
        choose_face(faces, image.shape, str(face_path), index)
    message = str(exc_info.value)
    assert str(face_path) in message
    assert f"face {index}" in message
    assert "1 face(s)" in message


def test_face_index_in_range_and_default(analyzer, face_path):
    image = load_image(face_path)
    faces = analyzer.analyze(image)
    face, rule = choose_face(faces, image.shape, str(face_path), 0)
    assert face is faces[0] and "requested" in rule
    face, rule = choose_face(faces, image.shape, str(face_path))
    assert face is faces[0] and rule == "the only face"
