"""Decoding video files into sampled RGB frames with their presentation times.

OpenCV's FFmpeg backend decodes; we sample. Every frame is decoded (inter-frame codecs need
it) but only the frames picked by :class:`FrameSampler` are converted to RGB and yielded:
by default 2 frames per second of video, on a fixed time grid, so a variable-frame-rate
stream is sampled by time, not by frame count. Timestamps come from the container
(``CAP_PROP_POS_MSEC``: the decoded frame's presentation time); where a container gives
none, frame index / frame rate.

Untrusted files are handled defensively: a file must have a video extension *and* start
like an MP4/MOV, Matroska/WebM or AVI container before FFmpeg sees it; FFmpeg is told to
read local files only and to use only those demuxers (no playlists, no network); the
declared duration and frame size are checked against limits before decoding, and again
while decoding. Every failure is a typed :class:`~facesearch.errors.VideoError`.

Measured with ``opencv-python-headless`` 5.0 here: MP4 written by ``cv2.VideoWriter`` with
``mp4v`` (MPEG-4 Part 2), MJPG and XVID in AVI, MJPG in MKV, VP8 in WebM and ``mp4v`` in MOV
all decode. The wheel cannot *encode* H.264 (no ``avc1``/``H264`` writer); it bundles
FFmpeg's H.264/HEVC decoders, but no test file of those codecs was decoded here.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from facesearch.errors import (
    CorruptVideoError,
    NotAVideoError,
    TruncatedVideoError,
    VideoError,
    VideoNotFoundError,
    VideoTooLargeError,
)

#: File extensions we treat as videos (checked together with the container signature).
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"})
#: Frames per second of video looked at by default.
DEFAULT_SAMPLE_FPS = 2.0
#: Longest video accepted by default (declared, and checked again while decoding).
DEFAULT_MAX_DURATION_S = 4 * 3600.0
#: Largest frame accepted by default: 8K UHD (33 MP) fits.
DEFAULT_MAX_FRAME_PIXELS = 40_000_000
#: Decoding that ends before this fraction of the declared frames counts as truncation.
TRUNCATION_TOLERANCE = 0.9

#: The FFmpeg demuxers a video may be read with, and local files only (no http, no playlists).
_FFMPEG_OPTIONS = "protocol_whitelist;file|format_whitelist;mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi"
_FFMPEG_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_open_lock = threading.Lock()


@dataclass(frozen=True)
class VideoMetadata:
    """What the container declares (frame count and duration may be estimates for MKV/WebM)."""

    path: str
    container: str  # "mp4" (ISO BMFF: MP4, MOV, M4V), "matroska" (MKV, WebM) or "avi"
    codec: str  # FourCC as OpenCV reports it, e.g. "mp4v", "MJPG", "h264"
    width: int
    height: int
    fps: float  # declared (average) frame rate; 0.0 if unknown
    frame_count: int  # declared number of frames; 0 if unknown
    duration_s: float  # frame_count / fps; 0.0 if unknown

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class VideoFrame:
    """One sampled frame: its index in the decoded stream, its time and its RGB pixels."""

    index: int
    timestamp_s: float
    pixels: np.ndarray  # (H, W, 3) uint8 RGB


class FrameSampler:
    """Pick frames on a fixed time grid: the first frame at or after each multiple of 1/fps.

    Driven by timestamps, not frame counts, so variable-frame-rate video is sampled evenly
    in time; grid points falling in a gap of the stream are skipped (one frame per gap).
    ``fps=None`` (or 0) keeps every frame.
    """

    def __init__(self, fps: float | None, tolerance_s: float = 1e-3) -> None:
        if fps is not None and not (fps >= 0 and math.isfinite(fps)):
            raise ValueError(f"sampling rate must be a positive number of frames per second, got {fps}")
        self.interval = 1.0 / fps if fps else 0.0
        self.tolerance = tolerance_s
        self.next_s = 0.0

    def take(self, timestamp_s: float) -> bool:
        if self.interval == 0.0:
            return True
        if timestamp_s + self.tolerance < self.next_s:
            return False
        self.next_s = (math.floor((timestamp_s + self.tolerance) / self.interval) + 1) * self.interval
        return True


def container_of(head: bytes) -> str | None:
    """The container family a file's first bytes announce, or None."""
    if len(head) >= 12 and head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot"):
        return "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "matroska"
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    return None


def is_video(path: str | os.PathLike) -> bool:
    """True if ``path`` has a video extension, starts like a video container and opens."""
    path = Path(path)
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        return False
    try:
        with VideoReader(path, fps=None):
            return True
    except (VideoError, OSError):
        return False


def probe_video(path: str | os.PathLike, **limits) -> VideoMetadata:
    """Open a video, check it against the limits and return what its container declares."""
    with VideoReader(path, **limits) as reader:
        return reader.metadata


def read_frames(path: str | os.PathLike, fps: float | None = DEFAULT_SAMPLE_FPS, **options) -> Iterator[VideoFrame]:
    """Yield the sampled frames of a video (see :class:`VideoReader` for the options)."""
    with VideoReader(path, fps=fps, **options) as reader:
        yield from reader


class VideoReader:
    """An open video: ``metadata`` at once, sampled :class:`VideoFrame` s by iterating (once).

    Raises :class:`VideoNotFoundError`, :class:`NotAVideoError`, :class:`CorruptVideoError`
    or :class:`VideoTooLargeError` on opening; while iterating, :class:`VideoTooLargeError`
    when the stream runs past ``max_duration_s`` and, after the last frame, a
    :class:`TruncatedVideoError` when decoding stopped before ``TRUNCATION_TOLERANCE`` of the
    declared frames (unless ``allow_truncated``; ``truncated`` tells either way).
    """

    def __init__(self, path: str | os.PathLike, fps: float | None = DEFAULT_SAMPLE_FPS, *,
                 max_duration_s: float | None = DEFAULT_MAX_DURATION_S,
                 max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS, allow_truncated: bool = False) -> None:
        self.path = Path(path)
        self.sampler = FrameSampler(fps)
        self.max_duration_s = max_duration_s
        self.allow_truncated = allow_truncated
        self.frames_decoded = 0
        self.frames_sampled = 0
        self.last_timestamp_s = 0.0
        self.truncated = False
        self._iterated = False
        name = str(self.path)
        if not self.path.exists():
            raise VideoNotFoundError(name, "no such file")
        if not self.path.is_file():
            raise VideoNotFoundError(name, "not a regular file")
        if self.path.suffix.lower() not in VIDEO_EXTENSIONS:
            raise NotAVideoError(name, f"extension {self.path.suffix or '(none)'!r} is not a video extension "
                                       f"({', '.join(sorted(VIDEO_EXTENSIONS))})")
        try:
            with self.path.open("rb") as handle:
                head = handle.read(16)
            size = self.path.stat().st_size
        except OSError as exc:
            raise VideoError(name, f"cannot read file: {exc.strerror or exc}") from exc
        if size == 0:
            raise CorruptVideoError(name, "empty file (0 bytes)")
        container = container_of(head)
        if container is None:
            raise NotAVideoError(name, "not a video container (expected MP4/MOV, Matroska/WebM or AVI data)")
        self._cap = _open_capture(self.path)
        if not self._cap.isOpened():
            self._cap.release()
            raise CorruptVideoError(name, f"cannot open the {container} container: damaged, truncated "
                                          "or without a video stream")
        try:
            self.metadata = self._read_metadata(container)
            self._check_limits(max_frame_pixels)
        except BaseException:
            self._cap.release()
            raise

    # -- opening ----------------------------------------------------------------------

    def _read_metadata(self, container: str) -> VideoMetadata:
        cap = self._cap
        width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = _finite(cap.get(cv2.CAP_PROP_FPS))
        if not 0.0 < fps <= 1000.0:
            fps = 0.0
        frame_count = _finite(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        frame_count = int(frame_count) if 0 < frame_count < 1e12 else 0
        duration = frame_count / fps if fps and frame_count else 0.0
        fourcc = int(_finite(cap.get(cv2.CAP_PROP_FOURCC)))
        codec = "".join(chr((fourcc >> (8 * i)) & 0xFF) for i in range(4)).strip("\x00 ") if fourcc > 0 else ""
        if not codec.isprintable():
            codec = f"0x{fourcc:08x}"
        if width <= 0 or height <= 0:
            raise CorruptVideoError(str(self.path), f"the {container} container holds no decodable video stream")
        return VideoMetadata(str(self.path), container, codec, width, height, round(fps, 4), frame_count,
                             round(duration, 3))

    def _check_limits(self, max_frame_pixels: int) -> None:
        meta = self.metadata
        if meta.width * meta.height > max_frame_pixels:
            raise VideoTooLargeError(meta.path, f"frames of {meta.width}x{meta.height} exceed the limit of "
                                                f"{max_frame_pixels:,} pixels")
        if self.max_duration_s is not None and meta.duration_s > self.max_duration_s:
            raise VideoTooLargeError(meta.path, f"declared duration {meta.duration_s:.1f} s exceeds the limit of "
                                                f"{self.max_duration_s:.0f} s")

    # -- reading ----------------------------------------------------------------------

    def __iter__(self) -> Iterator[VideoFrame]:
        if self._iterated:
            raise RuntimeError("a VideoReader can be iterated only once")
        self._iterated = True
        cap, meta, name = self._cap, self.metadata, str(self.path)
        # Decoded-frame ceiling: even with useless timestamps, a stream cannot run forever.
        max_frames = None if self.max_duration_s is None else int(self.max_duration_s * 1000) + 1000
        previous = -math.inf
        try:
            while cap.grab():
                index = self.frames_decoded
                self.frames_decoded += 1
                timestamp = self._timestamp(index, previous)
                previous = timestamp
                self.last_timestamp_s = timestamp
                if self.max_duration_s is not None and timestamp > self.max_duration_s:
                    raise VideoTooLargeError(name, f"the stream runs past the limit of {self.max_duration_s:.0f} s "
                                                   f"(declared {meta.duration_s:.1f} s)")
                if max_frames is not None and self.frames_decoded > max_frames:
                    raise VideoTooLargeError(name, f"more than {max_frames:,} frames decoded")
                if not self.sampler.take(timestamp):
                    continue
                ok, bgr = cap.retrieve()
                if not ok or bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3:
                    continue  # a frame the decoder concealed away; the next sample will do
                self.frames_sampled += 1
                yield VideoFrame(index, round(timestamp, 6), cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        finally:
            self.close()
        if self.frames_decoded == 0:
            raise CorruptVideoError(name, f"no frame could be decoded (codec {meta.codec or 'unknown'}: damaged "
                                          "data, or a codec this OpenCV build cannot decode)")
        declared = meta.frame_count
        if declared and self.frames_decoded < TRUNCATION_TOLERANCE * declared and declared - self.frames_decoded >= 3:
            self.truncated = True
            if not self.allow_truncated:
                raise TruncatedVideoError(name, f"truncated or damaged: decoding stopped at "
                                                f"{self.last_timestamp_s:.1f} s of a declared {meta.duration_s:.1f} s "
                                                f"({self.frames_decoded} of {declared} frames)")

    def _timestamp(self, index: int, previous: float) -> float:
        """The grabbed frame's presentation time in seconds, kept non-decreasing."""
        fps = self.metadata.fps
        ms = _finite(self._cap.get(cv2.CAP_PROP_POS_MSEC), -1.0)
        if ms < 0 or (ms == 0 and index > 0):
            seconds = index / fps if fps else max(previous, 0.0)  # no timestamps: fall back to the index
        else:
            seconds = ms / 1000.0
        return max(seconds, previous if previous > -math.inf else 0.0)

    def close(self) -> None:
        self._cap.release()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _open_capture(path: Path) -> cv2.VideoCapture:
    """Open with FFmpeg only (never OpenCV's image-sequence reader, which treats '%' as a
    pattern), restricted to local files and video demuxers. OpenCV reads those FFmpeg options
    from ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` at every open: we set it once for the process (not
    per open: setenv racing other threads' getenv is unsafe), unless the operator set it."""
    with _open_lock:
        os.environ.setdefault(_FFMPEG_ENV, _FFMPEG_OPTIONS)
    try:
        return cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    except cv2.error as exc:
        raise CorruptVideoError(str(path), f"OpenCV cannot open it: {exc}") from exc


def _finite(value: float, default: float = 0.0) -> float:
    value = float(value)
    return value if math.isfinite(value) else default
