"""Face thumbnails on disk: small JPEG crops under ``HOME/thumbs``, named by image content.

Written (atomically) before the catalog row that points at them is committed, so a crash
can leave an unreferenced file (``doctor`` removes it) but never a row without its file.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

THUMB_SIZE = 112


class ThumbnailStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def relative_path(self, collection_id: int, sha256: str, face_index: int) -> str:
        return f"c{collection_id}/{sha256[:2]}/{sha256}_{face_index}.jpg"

    def path(self, relative: str) -> Path:
        return self.root / relative

    def write(self, image: np.ndarray, box: tuple[float, float, float, float], collection_id: int,
              sha256: str, face_index: int) -> str:
        """Crop the face with a margin, shrink it and store it; returns the relative path."""
        return self.write_crop(image, box, self.relative_path(collection_id, sha256, face_index))

    def write_crop(self, image: np.ndarray, box: tuple[float, float, float, float], relative: str) -> str:
        height, width = image.shape[:2]
        x1, y1, x2, y2 = box
        margin = 0.25 * max(x2 - x1, y2 - y1)
        left, top = max(0, int(x1 - margin)), max(0, int(y1 - margin))
        right, bottom = min(width, int(x2 + margin) + 1), min(height, int(y2 + margin) + 1)
        crop = Image.fromarray(image[top:bottom, left:right])
        crop.thumbnail((THUMB_SIZE, THUMB_SIZE))
        return self._store(crop, relative)

    def write_frame(self, frame: np.ndarray, collection_id: int, sha256: str, face_index: int) -> str:
        """Store a whole video frame (already downscaled) as JPEG; returns the relative path."""
        relative = f"c{collection_id}/{sha256[:2]}/{sha256}_{face_index}_frame.jpg"
        return self._store(Image.fromarray(frame), relative)

    def _store(self, picture: Image.Image, relative: str) -> str:
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=85)
        target = self.path(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(buffer.getvalue())
        os.replace(tmp, target)  # atomic: a crash never leaves half a file under the final name
        return relative

    def remove(self, relatives: list[str]) -> int:
        removed = 0
        for relative in relatives:
            try:
                self.path(relative).unlink()
                removed += 1
            except FileNotFoundError:
                pass
        return removed

    def all_files(self) -> set[str]:
        if not self.root.is_dir():
            return set()
        return {p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file()}
