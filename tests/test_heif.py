"""iPhone photos (HEIC/HEIF, through pillow-heif) and AVIF decode like any other photo: upright RGB,
the same face found, the same person recognised. Fixtures: tests/fixtures/heif (generated from
an LFW fixture photo, see fixtures/README.md)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facesearch import load_image
from facesearch.errors import CorruptImageError, NotAnImageError
from facesearch.pipeline.imageio import SUPPORTED_FORMATS

from .conftest import FIXTURES, LFW

HEIF_DIR = FIXTURES / "heif"
SOURCE = LFW / "Colin_Powell_0001.jpg"


@pytest.mark.parametrize("name", ["Colin_Powell_0001.heic", "Colin_Powell_0001.avif"])
def test_decodes_to_the_same_pixels_and_face(name, primary):
    path = HEIF_DIR / name
    with Image.open(path) as img:
        assert img.format in SUPPORTED_FORMATS and img.format in ("HEIF", "AVIF")
    pixels = load_image(path)
    reference = load_image(SOURCE)
    assert pixels.shape == reference.shape and pixels.dtype == np.uint8
    assert float(np.abs(pixels.astype(np.int16) - reference.astype(np.int16)).mean()) < 6.0
    face, ref_face = primary(path), primary(SOURCE)
    assert float(face.embedding @ ref_face.embedding) > 0.9  # the same person, clearly
    assert load_image(path.read_bytes()).shape == reference.shape  # uploads arrive as bytes


def test_heic_orientation_is_applied(tmp_path):
    """A phone stores the sensor's pixels and says "rotate 90" in EXIF: we return it upright."""
    import pillow_heif

    upright = Image.open(SOURCE).convert("RGB").crop((0, 0, 250, 200))  # not square: rotation shows
    sideways = upright.transpose(Image.Transpose.ROTATE_90)  # what the sensor saw
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    path = tmp_path / "phone.heic"
    pillow_heif.from_pillow(sideways).save(path, quality=90, exif=exif.tobytes())
    pixels = load_image(path)
    assert pixels.shape == (200, 250, 3)
    diff = np.abs(pixels.astype(np.int16) - np.asarray(upright).astype(np.int16)).mean()
    assert diff < 8.0


def test_damaged_heic_is_a_typed_error(tmp_path):
    data = (HEIF_DIR / "Colin_Powell_0001.heic").read_bytes()
    broken = tmp_path / "broken.heic"
    broken.write_bytes(data[: len(data) // 3])
    with pytest.raises((CorruptImageError, NotAnImageError)):
        load_image(broken)


def test_a_folder_of_phone_photos_is_indexed_and_searchable(tmp_path, analyzer):
    import shutil

    from facesearch.services.engine import Engine

    folder = tmp_path / "camera-roll"
    shutil.copytree(HEIF_DIR, folder)
    opened = Engine.open(tmp_path / "home")
    engine = Engine(opened.home, opened.config, opened.catalog, analyzer_factory=lambda: analyzer)
    summary = engine.index([folder], "phones", progress=False)
    assert (summary.images_indexed, summary.faces_indexed) == (2, 2), summary
    hit = engine.search(LFW / "Colin_Powell_0002.jpg", top_k=1).candidates[0]
    assert hit.above_threshold and hit.image_source.endswith((".heic", ".avif"))
    engine.close()
