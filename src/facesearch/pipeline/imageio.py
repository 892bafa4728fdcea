"""Decoding any photo an operator hands us into an upright 8-bit RGB array.

Pillow decodes; we normalise: EXIF orientation applied, first frame of animations,
grayscale / palette / CMYK / alpha / 16-bit / float modes mapped to RGB, and a pixel
limit against decompression bombs. Every failure is a typed :class:`ImageError`.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from pillow_heif import register_heif_opener

from facesearch.errors import (
    CorruptImageError,
    ImageError,
    ImageNotFoundError,
    ImageTooLargeError,
    NotAnImageError,
)

#: Formats we accept, by Pillow's detected format (the extension is never trusted).
#: HEIF (iPhone HEIC) through pillow-heif's opener; AVIF is Pillow's own (built with libavif).
SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "PPM", "MPO", "HEIF", "AVIF"})
register_heif_opener()

#: Default pixel limit: 120 MP covers any camera; bombs declare far more.
DEFAULT_MAX_PIXELS = 120_000_000

ImageSource = str | os.PathLike | bytes | np.ndarray | Image.Image


def load_image(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Return ``source`` as a C-contiguous ``(H, W, 3)`` uint8 RGB array, upright.

    ``source`` may be a path, encoded bytes, a PIL image or an array (gray, RGB or RGBA).
    """
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, "<array>")
    if isinstance(source, Image.Image):
        return _pil_to_rgb(source, "<PIL image>")
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _decode(io.BytesIO(bytes(source)), "<bytes>", max_pixels)
    path = Path(source)
    if not path.exists():
        raise ImageNotFoundError(path, "no such file")
    if not path.is_file():
        raise ImageNotFoundError(path, "not a regular file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageError(path, f"cannot read file: {exc.strerror or exc}") from exc
    return _decode(io.BytesIO(data), str(path), max_pixels)


def _decode(stream: io.BytesIO, name: str, max_pixels: int) -> np.ndarray:
    if stream.getbuffer().nbytes == 0:
        raise NotAnImageError(name, "empty file")
    # Our limit decides, not Pillow's (89 MP would refuse real 100 MP cameras): keep Pillow's
    # hard stop (2x its limit) above ours and silence its warning; we check before decoding.
    if Image.MAX_IMAGE_PIXELS is not None and 2 * Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels // 2 + 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(stream) as img:
                fmt = img.format or "unknown"
                if fmt not in SUPPORTED_FORMATS:
                    raise NotAnImageError(name, f"unsupported image format {fmt}")
                width, height = img.size
                if width * height > max_pixels:
                    raise ImageTooLargeError(
                        name, f"{width}x{height} exceeds the limit of {max_pixels:,} pixels"
                    )
                if getattr(img, "n_frames", 1) > 1:
                    img.seek(0)
                img.load()
                return _pil_to_rgb(img, name)
        except ImageError:
            raise
        except UnidentifiedImageError as exc:
            if _has_image_signature(stream.getvalue()):
                raise CorruptImageError(name, "damaged image data (header unreadable)") from exc
            raise NotAnImageError(name, "not a recognised image format") from exc
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(name, f"decompression bomb guard: {exc}") from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise CorruptImageError(name, f"damaged or truncated image data ({exc})") from exc


_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
               b"P1", b"P2", b"P3", b"P4", b"P5", b"P6")


def _has_image_signature(data: bytes) -> bool:
    """Does the file start like an image we support (so a failure means damage)?"""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return True
    return any(data.startswith(sig) for sig in _SIGNATURES)


def _pil_to_rgb(img: Image.Image, name: str) -> np.ndarray:
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the photo
        pass
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _array_to_rgb(np.asarray(img), name)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        # Transparent pixels become mid-gray rather than black: no fake dark edges.
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (128, 128, 128, 255))
        img = Image.alpha_composite(background, img)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def _array_to_rgb(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.size == 0:
        raise ImageError(name, "empty pixel array")
    if arr.dtype != np.uint8:
        arr = _rescale_to_uint8(arr)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.ndim == 3 and arr.shape[2] == 4:
        alpha = arr[:, :, 3:4].astype(np.float32) / 255.0
        arr = (arr[:, :, :3] * alpha + 128.0 * (1.0 - alpha)).round().astype(np.uint8)
    elif not (arr.ndim == 3 and arr.shape[2] == 3):
        raise ImageError(name, f"unsupported pixel array shape {arr.shape}")
    return np.ascontiguousarray(arr)


def _rescale_to_uint8(arr: np.ndarray) -> np.ndarray:
    if np.issubdtype(arr.dtype, np.integer) and arr.dtype.itemsize == 2:
        return (arr.astype(np.uint32) >> 8).astype(np.uint8)
    arr = arr.astype(np.float64)
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    if hi <= 1.0 and lo >= 0.0:
        return (arr * 255.0).round().astype(np.uint8)
    if hi <= 255.0 and lo >= 0.0:
        return arr.round().astype(np.uint8)
    # 32-bit integer or float data with unknown range: stretch to 0..255.
    span = hi - lo if hi > lo else 1.0
    return ((arr - lo) * (255.0 / span)).round().astype(np.uint8)
