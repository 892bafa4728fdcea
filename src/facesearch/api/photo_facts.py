"""What the photo view says about a face's source besides the pixels: its name and when it was taken.

Uploads are stored under a keyed hash of their content on purpose (no file name is kept), so only
files indexed from a folder have a name to show. The capture time is the photo's own EXIF
record (``DateTimeOriginal``, else ``DateTime``) and is shown only when the file carries one.
"""

from __future__ import annotations

from pathlib import Path

EXIF_IFD = 0x8769
DATETIME_ORIGINAL = 36867
DATETIME = 306


def source_name(source: str, uploads: Path) -> str | None:
    """The file name of an indexed file; None for an upload (its name is deliberately not kept)."""
    path = Path(source)
    try:
        if path.resolve().is_relative_to(uploads.resolve()):
            return None
    except OSError:
        pass
    return path.name or None


def capture_time(path: Path) -> str | None:
    """``YYYY-MM-DD HH:MM:SS`` from the photo's EXIF, or None when it has none (or is unreadable)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            exif = image.getexif()
            value = exif.get_ifd(EXIF_IFD).get(DATETIME_ORIGINAL) or exif.get(DATETIME)
    except (OSError, ValueError, SyntaxError):
        return None
    if not isinstance(value, str) or len(value) < 19:
        return None
    day, _, clock = value.strip().partition(" ")
    parts = day.split(":")
    if len(parts) != 3 or not all(p.isdigit() for p in parts) or set(parts) == {"0000", "00"}:
        return None  # "0000:00:00 00:00:00" is how cameras without a clock say "unknown"
    return f"{'-'.join(parts)} {clock[:8]}"
