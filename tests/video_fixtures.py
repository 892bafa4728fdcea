"""Test videos generated from the fixture photos with ``cv2.VideoWriter`` (into a tmp folder).

A *script* says who is on screen when: each :class:`Appearance` pastes one LFW photo onto a
textured background canvas, moving and scaling linearly between its start and end, with
optional occlusions (a grey block over the face, so the detector misses it for a while).
Cuts are hard: one appearance ends on the frame where the next starts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

LFW = Path(__file__).parent / "fixtures" / "lfw"
#: Small and slow enough for fast tests: 320x240 at 10 frames per second.
SIZE = (320, 240)
SOURCE_FPS = 10


@dataclass(frozen=True)
class Appearance:
    person: str  # LFW photo stem, e.g. "Colin_Powell_0001"
    start_s: float
    end_s: float
    start_xy: tuple[int, int]  # top-left corner of the (square) photo at start_s
    end_xy: tuple[int, int]  # ... and at end_s
    start_size: int  # side of the photo in pixels at start_s (the LFW originals are 150)
    end_size: int
    occlusions: tuple[tuple[float, float], ...] = ()  # (from_s, to_s): the face hidden

    def on_screen(self, t: float) -> bool:
        return self.start_s <= t < self.end_s

    def at(self, t: float) -> tuple[int, int, int]:
        """(x, y, side) of the photo at time ``t``."""
        u = (t - self.start_s) / max(self.end_s - self.start_s, 1e-9)
        x = self.start_xy[0] + u * (self.end_xy[0] - self.start_xy[0])
        y = self.start_xy[1] + u * (self.end_xy[1] - self.start_xy[1])
        side = self.start_size + u * (self.end_size - self.start_size)
        return round(x), round(y), max(8, round(side))

    def occluded(self, t: float) -> bool:
        return any(a <= t < b for a, b in self.occlusions)


#: A hard cut between two people in the same place: Powell 0-5 s, Bush 5-10 s.
CUT_SCRIPT = (
    Appearance("Colin_Powell_0001", 0.0, 5.0, (60, 40), (110, 50), 150, 170),
    Appearance("George_W_Bush_0001", 5.0, 10.0, (105, 45), (60, 35), 170, 150),
)
CUT_DURATION_S = 10.0

#: 60 s, three people: Powell 0-20 s (hidden 8-9 s), a cut to Bush 20-40 s where Powell was,
#: an empty shot 40-42 s, then Chavez 42-60 s moving up and zooming in.
THREE_PEOPLE_SCRIPT = (
    Appearance("Colin_Powell_0001", 0.0, 20.0, (10, 60), (150, 40), 120, 180, occlusions=((8.0, 9.0),)),
    Appearance("George_W_Bush_0001", 20.0, 40.0, (140, 40), (20, 70), 180, 130),
    Appearance("Hugo_Chavez_0001", 42.0, 60.0, (90, 100), (110, 20), 110, 200),
)
THREE_PEOPLE_DURATION_S = 60.0


def _photo(person: str) -> np.ndarray:
    with Image.open(LFW / f"{person}.jpg") as img:
        return np.asarray(img.convert("RGB"))


def background(size: tuple[int, int] = SIZE, seed: int = 7) -> np.ndarray:
    """A fixed, faceless, textured RGB canvas: a colour gradient and a few random blocks."""
    width, height = size
    rng = np.random.default_rng(seed)
    xs = np.linspace(40, 200, width)[None, :]
    ys = np.linspace(30, 160, height)[:, None]
    canvas = np.stack(np.broadcast_arrays(xs + 0 * ys, 0 * xs + ys, (xs + ys) / 2), axis=-1).astype(np.uint8)
    canvas = np.ascontiguousarray(canvas)
    for _ in range(12):
        x, y = int(rng.integers(0, width - 20)), int(rng.integers(0, height - 20))
        w, h = int(rng.integers(10, 60)), int(rng.integers(10, 60))
        canvas[y:y + h, x:x + w] = rng.integers(0, 256, 3, dtype=np.uint8)
    return canvas


def render_frame(script: Iterable[Appearance], t: float, canvas: np.ndarray,
                 photos: dict[str, np.ndarray]) -> np.ndarray:
    frame = canvas.copy()
    height, width = frame.shape[:2]
    for item in script:
        if not item.on_screen(t):
            continue
        x, y, side = item.at(t)
        photo = cv2.resize(photos[item.person], (side, side), interpolation=cv2.INTER_AREA)
        if item.occluded(t):  # cover the face (the middle of an LFW photo)
            a, b = side // 5, side - side // 5
            photo = photo.copy()
            photo[a:b, a:b] = 128
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + side, width), min(y + side, height)
        if x1 > x0 and y1 > y0:
            frame[y0:y1, x0:x1] = photo[y0 - y:y1 - y, x0 - x:x1 - x]
    return frame


def write_video(path: Path, frames: Iterable[np.ndarray], fps: float = SOURCE_FPS, fourcc: str = "mp4v") -> Path:
    """Write RGB frames (all of one size) to ``path``; the extension picks the container."""
    writer = None
    try:
        for frame in frames:
            if writer is None:
                height, width = frame.shape[:2]
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
                assert writer.isOpened(), f"cv2.VideoWriter cannot write {fourcc} to {path.suffix}"
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        if writer is not None:
            writer.release()
    assert path.is_file() and path.stat().st_size > 0, f"no video written to {path}"
    return path


def render_video(path: Path, script: tuple[Appearance, ...], duration_s: float, fps: float = SOURCE_FPS,
                 size: tuple[int, int] = SIZE, fourcc: str = "mp4v") -> Path:
    """Render ``script`` for ``duration_s`` seconds at ``fps`` into ``path``."""
    canvas = background(size)
    photos = {item.person: _photo(item.person) for item in script}
    count = round(duration_s * fps)
    return write_video(path, (render_frame(script, k / fps, canvas, photos) for k in range(count)), fps, fourcc)


COUNTER_BITS = 8


def counter_frame(k: int, size: tuple[int, int] = (160, 120)) -> np.ndarray:
    """A frame showing ``k`` in binary: 8 vertical stripes, white for a 1 bit (most significant left)."""
    width, height = size
    frame = np.full((height, width, 3), 20, np.uint8)
    stripe = width // COUNTER_BITS
    for bit in range(COUNTER_BITS):
        if k >> (COUNTER_BITS - 1 - bit) & 1:
            frame[:, bit * stripe:(bit + 1) * stripe] = 235
    return frame


def counter_value(pixels: np.ndarray) -> int:
    """Read back the number :func:`counter_frame` drew (robust to lossy codecs)."""
    stripe = pixels.shape[1] // COUNTER_BITS
    value = 0
    for bit in range(COUNTER_BITS):
        centre = pixels[:, bit * stripe + stripe // 4:(bit + 1) * stripe - stripe // 4]
        value = value << 1 | int(float(centre.mean()) > 128)
    return value


def counter_video(path: Path, frames: int = 50, fps: float = SOURCE_FPS, fourcc: str = "mp4v",
                  size: tuple[int, int] = (160, 120)) -> Path:
    """Frame ``k`` shows the number ``k`` (see :func:`counter_value`)."""
    assert frames < 2**COUNTER_BITS
    return write_video(path, (counter_frame(k, size) for k in range(frames)), fps, fourcc)


def cut_video(folder: Path) -> Path:
    return render_video(folder / "cut.mp4", CUT_SCRIPT, CUT_DURATION_S)


def three_people_video(folder: Path) -> Path:
    return render_video(folder / "three_people.mp4", THREE_PEOPLE_SCRIPT, THREE_PEOPLE_DURATION_S)
