"""Typed errors shared by every stage.

Every failure a user can cause (a bad file, a tampered model) is a subclass of
:class:`FacesearchError` carrying the offending path and a plain-words reason, so
the CLI and the API can report it without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class FacesearchError(Exception):
    """Base class of every error facesearch raises on purpose."""


class ImageError(FacesearchError):
    """An image could not be turned into pixels."""

    def __init__(self, source: str | Path, reason: str) -> None:
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")


class ImageNotFoundError(ImageError):
    """The path does not exist or is not a regular file."""


class NotAnImageError(ImageError):
    """The file is readable but is not an image format we decode."""


class CorruptImageError(ImageError):
    """The file claims to be an image but its data is truncated or damaged."""


class ImageTooLargeError(ImageError):
    """The image exceeds the pixel limit (decompression-bomb guard)."""


class VideoError(ImageError):
    """A video could not be turned into frames (an :class:`ImageError`: a bad input file)."""


class VideoNotFoundError(VideoError):
    """The path does not exist or is not a regular file."""


class NotAVideoError(VideoError):
    """The file is not a video container we decode (MP4/MOV, Matroska/WebM, AVI)."""


class CorruptVideoError(VideoError):
    """The file claims to be a video but cannot be opened or decoded (empty, damaged)."""


class TruncatedVideoError(CorruptVideoError):
    """Decoding stopped well before the duration the container declares."""


class VideoTooLargeError(VideoError):
    """The video exceeds the duration or frame-size limit."""


class ModelError(FacesearchError):
    """A model pack is missing, incomplete or unusable."""


class ChecksumMismatchError(ModelError):
    """A model file's SHA-256 differs from the one pinned in its manifest."""

    def __init__(self, path: str | Path, expected: str, actual: str) -> None:
        self.path = str(path)
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{self.path}: SHA-256 mismatch, refusing to load "
            f"(manifest pins {expected}, file has {actual})"
        )


class IndexUnavailable(FacesearchError):
    """The vector index's server cannot be used now: unreachable, or refusing this service's
    credentials. Something for the operator to fix; a client may try again later."""

    #: What an API client is told: the full message names the server and the setting to check,
    #: which is for the operator's log, not for every user.
    public_detail = "the vector index server is unavailable right now; the operator is told in the server's log"


class NoFaceError(FacesearchError):
    """An operation needed a face and the image has none (or not the one asked for)."""

    def __init__(self, source: str | Path, reason: str = "no face found") -> None:
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")
