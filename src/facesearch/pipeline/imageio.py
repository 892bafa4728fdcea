"""Decoding any photo an operator hands us into an upright 8-bit RGB array.

Pillow decodes; we normalise: EXIF orientation applied, first frame of animations,
grayscale / palette / CMYK / alpha / 16-bit / float modes mapped to RGB, and a pixel
limit against decompression bombs. Every failure is a typed :class:`ImageError`.

Memory is bounded by design: :func:`open_photo` gives the pipeline a :class:`Photo` whose
working pixels never exceed ``work_pixels`` (big JPEGs are decoded at 1/2, 1/4 or 1/8
scale by libjpeg itself, other formats are shrunk right after decoding), and keeps the
encoded bytes so that full resolution can be decoded again, one photo at a time, only
for the faces that need it. The decode itself is bounded by ``max_pixels``.
"""

from __future__ import annotations

import io
import math
import os
import stat
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError
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
#: Pixels the detector works on: a 24 MP camera photo is looked at in 6 MP (JPEG draft 1/2),
#: where every face a recognizer can use (>= 16 px in the original) is still >= 8 px.
DEFAULT_WORK_PIXELS = 12_000_000
#: Files larger than this are not read into memory at all (no photo format needs it).
DEFAULT_MAX_FILE_BYTES = 256 * 1024 * 1024

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
    return _decode(io.BytesIO(read_file(path)), display_name(path), max_pixels)


def display_name(path: str | os.PathLike) -> str:
    """A printable, storable name for ``path`` even when its bytes are not UTF-8."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def read_file(path: Path, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file, or a typed error: never blocks on a FIFO or a device.

    Opened with ``O_NONBLOCK`` and checked with ``fstat`` on the open descriptor, so a FIFO,
    socket or device is refused instead of hanging, and a file swapped for one after a
    ``stat`` is caught too. Reads at most ``max_bytes``.
    """
    name = display_name(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as exc:
        raise ImageNotFoundError(name, "no such file") from exc
    except OSError as exc:
        raise ImageError(name, f"cannot open: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ImageNotFoundError(name, "is a folder, not a file")
        if not stat.S_ISREG(info.st_mode):
            kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(info.st_mode) else
                    "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else
                    "a socket" if stat.S_ISSOCK(info.st_mode) else "not a regular file")
            raise NotAnImageError(name, f"not a regular file: {kind}")
        if info.st_size > max_bytes:
            raise ImageTooLargeError(name, f"file of {info.st_size:,} bytes exceeds the limit of {max_bytes:,}")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=True) as fh:
            fd = -1
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise ImageError(name, f"cannot read: {exc.strerror or exc}") from exc
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > max_bytes:
        raise ImageTooLargeError(name, f"file grew past the limit of {max_bytes:,} bytes while read")
    return data


@dataclass
class Photo:
    """A decoded photo at working resolution, able to give full resolution on demand."""

    pixels: np.ndarray  # (h, w, 3) uint8 RGB, upright, at most ``work_pixels``
    full_size: tuple[int, int]  # (width, height) of the upright original
    name: str
    _full: Callable[[], np.ndarray] | None = None  # None: ``pixels`` are full resolution
    rotation: int = 0  # degrees clockwise the decoded picture was turned to be upright (a scan without EXIF)

    @property
    def reduced(self) -> bool:
        return self._full is not None

    @property
    def scale(self) -> tuple[float, float]:
        """Original pixels per working pixel, (x, y)."""
        height, width = self.pixels.shape[:2]
        return self.full_size[0] / width, self.full_size[1] / height

    @property
    def shape(self) -> tuple[int, int, int]:
        """The original's array shape (height, width, 3), as if it had been decoded in full."""
        return self.full_size[1], self.full_size[0], 3

    def working_box(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """A box in the original's pixels, in ``pixels``' coordinates."""
        sx, sy = self.scale
        return box[0] / sx, box[1] / sy, box[2] / sx, box[3] / sy

    def full_pixels(self) -> np.ndarray:
        """Full-resolution pixels: decoded again (bounded by ``max_pixels``), never cached."""
        return self.pixels if self._full is None else self._full()

    def turn(self, degrees: int) -> None:
        """Turn this photo ``degrees`` clockwise in place (what the analyzer found upright)."""
        turned = self.turned(degrees)
        self.pixels, self.full_size, self._full, self.rotation = (turned.pixels, turned.full_size, turned._full,
                                                                  turned.rotation)

    def box_as_given(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """A box of this (possibly turned) photo, in the picture as it was given (before the turn).

        Boxes of a probe must fit the file its sender sees; a stored photo instead keeps its turn
        (images.rotation) and is served upright."""
        return unturn_box(box, self.full_size, self.rotation)

    def turned(self, degrees: int) -> Photo:
        """This photo turned ``degrees`` (90, 180, 270) clockwise more; full resolution turns with it."""
        k = -(degrees // 90) % 4  # np.rot90 turns counter-clockwise
        if k == 0:
            return self
        size = self.full_size if k == 2 else (self.full_size[1], self.full_size[0])
        full = self._full
        return Photo(rot90(self.pixels, k), size, self.name,
                     None if full is None else (lambda: rot90(full(), k)),
                     (self.rotation + degrees) % 360)


_CV2_TURNS = {1: cv2.ROTATE_90_COUNTERCLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_CLOCKWISE}


def rot90(image: np.ndarray, k: int) -> np.ndarray:
    """``np.rot90(image, k)`` (k quarter turns counter-clockwise) as a new contiguous array; OpenCV
    moves the bytes several times faster than NumPy's copy of the turned view."""
    k %= 4
    if k == 0:
        return image.copy()
    if image.dtype == np.uint8 and (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))):
        return cv2.rotate(np.ascontiguousarray(image), _CV2_TURNS[k]).reshape(
            (image.shape[1], image.shape[0], *image.shape[2:]) if k % 2 else image.shape)
    return np.ascontiguousarray(np.rot90(image, k))


def unturn_box(box: tuple[float, float, float, float], turned_size: tuple[int, int],
               degrees: int) -> tuple[float, float, float, float]:
    """``box`` of a picture turned ``degrees`` clockwise (size ``turned_size``, width and height),
    in the coordinates of the picture before that turn."""
    x1, y1, x2, y2 = box
    width, height = turned_size
    turn = degrees % 360
    if turn == 90:  # a point (x, y) of the turned picture was (y, width - x)
        return y1, width - x2, y2, width - x1
    if turn == 180:
        return width - x2, height - y2, width - x1, height - y1
    if turn == 270:  # a point (x, y) of the turned picture was (height - y, x)
        return height - y2, x1, height - y1, x2
    return box


def open_photo(source: ImageSource, *, max_pixels: int = DEFAULT_MAX_PIXELS,
               work_pixels: int = DEFAULT_WORK_PIXELS) -> Photo:
    """Decode ``source`` for the face pipeline with memory bounded by ``work_pixels``."""
    if isinstance(source, (np.ndarray, Image.Image)):
        name = "<array>" if isinstance(source, np.ndarray) else "<PIL image>"
        full = load_image(source)
        height, width = full.shape[:2]
        factor = _reduction(width, height, work_pixels)
        if factor == 1:
            return Photo(full, (width, height), name)
        return Photo(_shrink(full, factor), (width, height), name, lambda: full)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name = bytes(source), "<bytes>"
    else:
        data, name = read_file(Path(source)), display_name(source)
    pixels, full_size = _decode(io.BytesIO(data), name, max_pixels, work_pixels=work_pixels)
    if (pixels.shape[1], pixels.shape[0]) == full_size:
        return Photo(pixels, full_size, name)
    return Photo(pixels, full_size, name, lambda: _decode(io.BytesIO(data), name, max_pixels))


def _reduction(width: int, height: int, work_pixels: int) -> int:
    """Smallest integer factor that brings ``width x height`` within ``work_pixels``."""
    if width * height <= work_pixels:
        return 1
    return math.ceil(math.sqrt(width * height / work_pixels))


def _shrink(pixels: np.ndarray, factor: float) -> np.ndarray:
    height, width = pixels.shape[:2]
    size = (max(1, int(width / factor)), max(1, int(height / factor)))
    return cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)


def _decode(stream: io.BytesIO, name: str, max_pixels: int, *, work_pixels: int | None = None):
    """Decode to full-resolution RGB; with ``work_pixels``, to at most that many pixels.

    With ``work_pixels`` the result is ``(pixels, (full_width, full_height))``.
    """
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
                if work_pixels is None:
                    img.load()
                    return _pil_to_rgb(img, name)
                factor = _reduction(width, height, work_pixels)
                orientation = _orientation(img)
                if factor > 1 and fmt in ("JPEG", "MPO"):
                    # libjpeg decodes at 1/2, 1/4 or 1/8 directly: a fraction of the memory and time.
                    img.draft("RGB", (max(1, width // factor), max(1, height // factor)))
                img.load()
                if factor > 1 and fmt not in ("JPEG", "MPO"):
                    # Box-reduce inside Pillow: no full-size array (or transposed copy) is ever made.
                    try:
                        img = img.reduce(factor)
                    except (ValueError, NotImplementedError):
                        pass  # a mode reduce() does not take (palette, ...): shrunk after conversion
                pixels = _pil_to_rgb(img, name, orientation)
                full_size = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
                rest = _reduction(pixels.shape[1], pixels.shape[0], work_pixels)
                if rest > 1:
                    pixels = _shrink(pixels, rest)
                return pixels, full_size
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
        except MemoryError as exc:
            raise ImageTooLargeError(name, "not enough memory to decode this image") from exc
        except Exception as exc:  # noqa: BLE001 - Pillow's plugins raise IndexError, TypeError, struct.error
            # on damaged files (found by fuzzing): a damaged file, never a crash of the caller.
            raise CorruptImageError(name, f"damaged image data ({type(exc).__name__}: {exc})") from exc


#: EXIF orientation -> the transpose that makes the picture upright (as ImageOps.exif_transpose).
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation (1: upright); a broken EXIF block counts as upright, never as a lost photo."""
    try:
        value = img.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - Pillow raises many kinds on damaged EXIF
        return 1
    return value if value in _UPRIGHT else 1


_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
               b"P1", b"P2", b"P3", b"P4", b"P5", b"P6")


def _has_image_signature(data: bytes) -> bool:
    """Does the file start like an image we support (so a failure means damage)?"""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return True
    return any(data.startswith(sig) for sig in _SIGNATURES)


def _pil_to_rgb(img: Image.Image, name: str, orientation: int | None = None) -> np.ndarray:
    orientation = _orientation(img) if orientation is None else orientation
    if orientation in _UPRIGHT:  # transposed only when needed: an upright photo is never copied
        img = img.transpose(_UPRIGHT[orientation])
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
