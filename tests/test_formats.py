"""Every format and pixel mode an operator may hand us decodes to upright (H, W, 3) uint8 RGB."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from facesearch import load_image
from facesearch.pipeline import primary_face

from .conftest import ORL_PGM, YALE_GIF


def _assert_rgb(pixels: np.ndarray, size: tuple[int, int]) -> None:
    width, height = size
    assert isinstance(pixels, np.ndarray)
    assert pixels.dtype == np.uint8
    assert pixels.shape == (height, width, 3)
    assert pixels.flags["C_CONTIGUOUS"]


def _mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _gray3(img: Image.Image) -> np.ndarray:
    return np.repeat(np.asarray(img.convert("L"))[:, :, None], 3, axis=2)


# Each writer saves the face photo in one format / mode and returns (path, the RGB pixels a
# correct decoder must give, tolerance of the mean absolute difference).


def _gray_jpeg(photo, tmp):
    path = tmp / "gray.jpg"
    photo.convert("L").save(path, quality=95)
    return path, _gray3(photo), 3.0


def _cmyk_jpeg(photo, tmp):
    path = tmp / "cmyk.jpg"
    cmyk = photo.convert("CMYK")
    cmyk.save(path, quality=95)
    with Image.open(path) as img:
        assert img.mode == "CMYK"
    return path, np.asarray(photo), 4.0


def _rgba_png(photo, tmp):
    path = tmp / "rgba.png"
    rgba = photo.convert("RGBA")
    alpha = np.full(photo.size[::-1], 255, np.uint8)
    alpha[:, :20] = 0  # a fully transparent strip on the left
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(path)
    expected = np.asarray(photo).copy()
    expected[:, :20] = 128  # documented: transparent pixels become mid-gray
    return path, expected, 0.0


def _gray16_png(photo, tmp):
    path = tmp / "gray16.png"
    # High byte = the 8-bit value; a constant low byte that a decoder must drop, not keep.
    gray = (np.asarray(photo.convert("L")).astype(np.uint16) << 8) | 0x5A
    Image.fromarray(gray).save(path)
    with Image.open(path) as img:
        assert img.mode.startswith("I")
        assert np.asarray(img).max() > 255
    return path, _gray3(photo), 0.0


def _palette_gif(photo, tmp):
    path = tmp / "palette.gif"
    pal = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
    pal.save(path)
    return path, np.asarray(pal.convert("RGB")), 0.0


def _palette_png_transparent(photo, tmp):
    path = tmp / "palette-transparent.png"
    quantised = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=255)
    palette = quantised.getpalette()
    assert len(palette) == 255 * 3
    pixels = np.asarray(quantised).copy()
    pixels[:, :20] = 255  # a 256th entry, magenta, declared transparent
    pal = Image.fromarray(pixels, "P")
    pal.putpalette(palette + [255, 0, 255])
    pal.save(path, transparency=255)
    with Image.open(path) as img:
        assert img.mode == "P" and "transparency" in img.info
        assert tuple(np.asarray(img.convert("RGBA"))[0, 0]) == (255, 0, 255, 0)
    expected = np.asarray(pal.convert("RGB")).copy()
    expected[:, :20] = 128
    return path, expected, 0.0


def _webp(photo, tmp):
    path = tmp / "photo.webp"
    photo.save(path, quality=95)
    return path, np.asarray(photo), 5.0


def _webp_lossless_rgba(photo, tmp):
    path = tmp / "photo-rgba.webp"
    photo.convert("RGBA").save(path, lossless=True)
    return path, np.asarray(photo), 0.0


def _bmp(photo, tmp):
    path = tmp / "photo.bmp"
    photo.save(path)
    return path, np.asarray(photo), 0.0


def _tiff(photo, tmp):
    path = tmp / "photo.tiff"
    photo.save(path, compression="tiff_lzw")
    return path, np.asarray(photo), 0.0


def _png(photo, tmp):
    path = tmp / "photo.png"
    photo.save(path)
    return path, np.asarray(photo), 0.0


def _no_extension(photo, tmp):
    path = tmp / "photo"
    photo.save(path, "JPEG", quality=95)
    return path, np.asarray(photo), 4.0


def _wrong_extension(photo, tmp):
    path = tmp / "actually-a-png.jpg"
    photo.save(path, "PNG")
    return path, np.asarray(photo), 0.0


WRITERS = [
    _gray_jpeg,
    _cmyk_jpeg,
    _rgba_png,
    _gray16_png,
    _palette_gif,
    _palette_png_transparent,
    _webp,
    _webp_lossless_rgba,
    _bmp,
    _tiff,
    _png,
    _no_extension,
    _wrong_extension,
]


@pytest.mark.parametrize("writer", WRITERS, ids=lambda w: w.__name__.strip("_"))
def test_format_decodes_to_rgb_and_keeps_its_face(writer, face_photo, tmp_path, analyzer):
    path, expected, tolerance = writer(face_photo, tmp_path)
    pixels = load_image(path)
    _assert_rgb(pixels, face_photo.size)
    assert _mad(pixels, expected) <= tolerance
    faces = analyzer.analyze(pixels)
    assert len(faces) == 1
    assert faces[0].quality.usable


def test_animated_gif_uses_first_frame(face_photo, tmp_path, analyzer):
    path = tmp_path / "animated.gif"
    first = face_photo.convert("P", palette=Image.Palette.ADAPTIVE)
    others = [Image.new("RGB", face_photo.size, colour).convert("P", palette=Image.Palette.ADAPTIVE)
              for colour in ((20, 200, 40), (200, 30, 30))]
    first.save(path, save_all=True, append_images=others, duration=100, loop=0)
    with Image.open(path) as img:
        assert img.n_frames == 3
        img.seek(2)  # leave the file positioned elsewhere; load_image must not care
    pixels = load_image(path)
    _assert_rgb(pixels, face_photo.size)
    assert _mad(pixels, np.asarray(first.convert("RGB"))) < 1.0
    assert len(analyzer.analyze(pixels)) == 1


def test_animated_gif_as_pil_image(face_photo, tmp_path):
    path = tmp_path / "animated.gif"
    first = face_photo.convert("P", palette=Image.Palette.ADAPTIVE)
    blank = Image.new("RGB", face_photo.size, (20, 200, 40)).convert("P", palette=Image.Palette.ADAPTIVE)
    first.save(path, save_all=True, append_images=[blank], duration=100, loop=0)
    with Image.open(path) as img:
        pixels = load_image(img)
    _assert_rgb(pixels, face_photo.size)
    assert _mad(pixels, np.asarray(first.convert("RGB"))) < 1.0


def test_gif_without_extension_yale(tmp_path, analyzer):
    assert YALE_GIF.suffix == ".normal"  # no image extension at all
    with Image.open(YALE_GIF) as img:
        assert img.format == "GIF"
        size = img.size
        expected = _gray3(img)
    pixels = load_image(YALE_GIF)
    _assert_rgb(pixels, size)
    np.testing.assert_array_equal(pixels, expected)
    faces = analyzer.analyze(pixels)
    assert len(faces) == 1
    # A copy with no suffix whatsoever decodes the same.
    bare = tmp_path / "subject01"
    shutil.copyfile(YALE_GIF, bare)
    np.testing.assert_array_equal(load_image(bare), pixels)


def test_pgm_orl_decodes_gray_to_rgb():
    with Image.open(ORL_PGM) as img:
        assert img.format == "PPM" and img.mode == "L"
        size = img.size
        expected = _gray3(img)
    pixels = load_image(ORL_PGM)
    _assert_rgb(pixels, size)
    np.testing.assert_array_equal(pixels, expected)


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        pytest.param(np.full((4, 5), 200, np.uint8), 200, id="gray-uint8"),
        pytest.param(np.full((4, 5, 1), 200, np.uint8), 200, id="gray-hw1"),
        pytest.param(np.full((4, 5), 200 * 256 + 7, np.uint16), 200, id="gray-uint16"),
        pytest.param(np.full((4, 5, 3), 0.5, np.float32), 128, id="float-0-1"),
        pytest.param(np.dstack([np.full((4, 5, 3), 10, np.uint8), np.zeros((4, 5, 1), np.uint8)]), 128,
                     id="rgba-transparent"),
        pytest.param(np.dstack([np.full((4, 5, 3), 10, np.uint8), np.full((4, 5, 1), 255, np.uint8)]), 10,
                     id="rgba-opaque"),
    ],
)
def test_array_inputs(array, expected):
    pixels = load_image(array)
    assert pixels.shape == (4, 5, 3) and pixels.dtype == np.uint8
    assert np.all(np.abs(pixels.astype(int) - expected) <= 1)


def test_pil_and_bytes_inputs_match_the_path(face_path, face_photo):
    from_path = load_image(face_path)
    np.testing.assert_array_equal(load_image(face_path.read_bytes()), from_path)
    np.testing.assert_array_equal(load_image(str(face_path)), from_path)
    np.testing.assert_array_equal(load_image(face_photo), from_path)


def test_gray_photo_recognises_like_colour(face_photo, tmp_path, embedding_of, analyzer):
    path, _, _ = _gray_jpeg(face_photo, tmp_path)
    image = load_image(path)
    face = primary_face(analyzer.analyze(image), image.shape)
    assert face is not None
    colour = embedding_of(face_photo)
    assert float(np.dot(face.embedding, colour)) > 0.8
