"""EXIF orientation: a photo stored sideways with an Orientation tag loads upright."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from facesearch import load_image

from .conftest import cosine

ORIENTATION = 0x0112

# (how the camera stored the pixels, relative to upright) -> the EXIF Orientation value
# that tells a viewer how to show them upright (EXIF 2.3 / TIFF 6.0 table).
STORED = [
    pytest.param(Image.Transpose.ROTATE_90, 6, id="rot90ccw-tag6"),  # viewer rotates 90 CW
    pytest.param(Image.Transpose.ROTATE_270, 8, id="rot90cw-tag8"),  # viewer rotates 90 CCW
    pytest.param(Image.Transpose.ROTATE_180, 3, id="rot180-tag3"),
    pytest.param(Image.Transpose.FLIP_LEFT_RIGHT, 2, id="mirrored-tag2"),
    pytest.param(Image.Transpose.TRANSPOSE, 5, id="transposed-tag5"),
]


@pytest.fixture
def upright(face_photo) -> Image.Image:
    """A portrait (taller than wide) crop, so a 90-degree error changes the shape."""
    width, height = face_photo.size
    return face_photo.crop((15, 0, width - 15, height))


def _write_sideways(upright: Image.Image, stored, tag: int, path) -> None:
    exif = Image.Exif()
    exif[ORIENTATION] = tag
    upright.transpose(stored).save(path, "JPEG", quality=95, exif=exif)


def _mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.mark.parametrize(("stored", "tag"), STORED)
def test_fixture_tag_really_undoes_the_rotation(upright, tmp_path, stored, tag):
    """Guard on the test data itself: Pillow's own exif_transpose restores the upright photo."""
    path = tmp_path / "sideways.jpg"
    _write_sideways(upright, stored, tag, path)
    with Image.open(path) as img:
        assert img.getexif()[ORIENTATION] == tag
        shown = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    assert shown.shape == np.asarray(upright).shape
    assert _mean_abs_diff(shown, np.asarray(upright)) < 4.0


@pytest.mark.parametrize(("stored", "tag"), STORED)
def test_load_image_applies_exif_orientation(upright, tmp_path, stored, tag):
    path = tmp_path / "sideways.jpg"
    _write_sideways(upright, stored, tag, path)
    reference = np.asarray(upright)
    loaded = load_image(path)
    assert loaded.dtype == np.uint8
    assert loaded.shape == reference.shape
    assert _mean_abs_diff(loaded, reference) < 4.0
    # Same for encoded bytes (uploads arrive that way).
    from_bytes = load_image(path.read_bytes())
    np.testing.assert_array_equal(from_bytes, loaded)


@pytest.mark.parametrize(("stored", "tag"), STORED[:3])
def test_sideways_photo_embeds_like_the_upright_one(upright, tmp_path, embedding_of, stored, tag):
    path = tmp_path / "sideways.jpg"
    _write_sideways(upright, stored, tag, path)
    assert cosine(embedding_of(path), embedding_of(upright)) > 0.95


def test_orientation_tag_on_pil_input_is_applied(upright, tmp_path):
    path = tmp_path / "sideways.jpg"
    _write_sideways(upright, Image.Transpose.ROTATE_90, 6, path)
    with Image.open(path) as img:
        loaded = load_image(img)
    assert loaded.shape == np.asarray(upright).shape


def test_broken_exif_does_not_lose_the_photo(upright, tmp_path):
    """An out-of-range Orientation value is ignored, not fatal."""
    path = tmp_path / "odd-tag.jpg"
    exif = Image.Exif()
    exif[ORIENTATION] = 42
    upright.save(path, "JPEG", quality=95, exif=exif)
    loaded = load_image(path)
    assert loaded.shape == np.asarray(upright).shape
    assert _mean_abs_diff(loaded, np.asarray(upright)) < 4.0
