"""Real-world bad input, generated at test time: camera-sized photos, the files that once broke a
run (truncated JPEG, non-UTF-8 name, FIFO), seeds in every decoded format, and a subprocess
runner that measures a child's peak RSS (``wait4``'s ``ru_maxrss``: that child alone, not timings).

Shared by ``tests/test_fuzz_images.py``, ``tests/test_memory_regressions.py``,
``fuzz/fuzz_decode.py`` and ``bench/load_test.py`` (one generator, no copies).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

FIXTURES = Path(__file__).parent / "fixtures"
LFW = FIXTURES / "lfw"
YALE_GIF = FIXTURES / "yale" / "subject01.normal"
ORL_PGM = FIXTURES / "orl" / "s1_1.pgm"
WIDER_GROUP = FIXTURES / "wider" / "12_Group_Group_12_Group_Group_12_10.jpg"

#: A modern phone / DSLR frame (24 MP).
CAMERA_SIZE = (6000, 4000)

GB = 1024**3
#: Sensor-like noise: brings a 6000x4000 JPEG at quality 90 to about 3 MB.
NOISE_SIGMA = 3.5


def fuzz_examples(default: int) -> int:
    """``default`` examples, times ``FACESEARCH_FUZZ_SCALE`` (e.g. 20 for a long run on demand)."""
    return max(1, round(default * float(os.environ.get("FACESEARCH_FUZZ_SCALE", "1"))))


# -- generated files --------------------------------------------------------------------------------


def camera_photo(face: Path, size: tuple[int, int] = CAMERA_SIZE, *, seed: int = 0, quality: int = 90) -> bytes:
    """A camera-sized JPEG (``size``, quality ``quality``) holding the fixture ``face`` upscaled
    to about half the frame's height on a textured background. Sensor-like noise (seeded, so
    every seed gives different bytes) brings it to about 3 MB at 6000x4000, like a real photo."""
    width, height = size
    rng = np.random.default_rng(seed)
    # Background: a smooth two-colour gradient (cheap to build at 24 MP).
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    base = rng.uniform(60, 190, size=3).astype(np.float32)
    canvas = base + 40.0 * xs - 30.0 * ys
    side = max(height // 2, 8)
    with Image.open(face) as src:
        portrait = np.asarray(src.convert("RGB").resize((side, side), Image.Resampling.BICUBIC), dtype=np.float32)
    x0 = int(rng.integers(0, max(width - side, 1)))
    y0 = (height - side) // 2
    canvas = np.broadcast_to(canvas, (height, width, 3)).copy()
    canvas[y0:y0 + side, x0:x0 + side] = portrait[: height - y0, : width - x0]
    # Noise row block by row block: a 24 MP float noise field at once would cost ~300 MB.
    for start in range(0, height, 500):
        block = canvas[start:start + 500]
        block += rng.normal(0.0, NOISE_SIGMA, size=block.shape).astype(np.float32)
    pixels = np.clip(canvas, 0, 255).astype(np.uint8)
    del canvas
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def camera_folder(folder: Path, photos: int, *, size: tuple[int, int] = CAMERA_SIZE,
                  bad_files: bool = True) -> dict[str, Path | bytes]:
    """Fill ``folder`` with ``photos`` camera-sized JPEGs (the six LFW faces in turn, each with
    its own noise) and, with ``bad_files``, the three files that once stopped a whole run:
    a truncated JPEG, a file whose name is not UTF-8 (a photo, named by raw bytes) and a FIFO.
    Returns the bad entries by kind (``"truncated"``, ``"non_utf8"``: the raw ``bytes`` path,
    ``"fifo"``)."""
    folder.mkdir(parents=True, exist_ok=True)
    faces = sorted(LFW.glob("*.jpg"))
    for i in range(photos):
        (folder / f"IMG_{i:04d}.jpg").write_bytes(camera_photo(faces[i % len(faces)], size, seed=i))
    if not bad_files:
        return {}
    truncated = folder / "IMG_9001_truncated.jpg"
    whole = camera_photo(faces[0], size, seed=9001)
    truncated.write_bytes(whole[: len(whole) // 3])
    # A Latin-1 name from an old camera card: b"\xe9" alone is not valid UTF-8.
    non_utf8 = os.fsencode(folder) + b"/IMG_9002_caf\xe9.jpg"
    with open(non_utf8, "wb") as out:
        out.write(camera_photo(faces[1], size, seed=9002))
    fifo = folder / "IMG_9003_fifo.jpg"
    os.mkfifo(fifo)
    return {"truncated": truncated, "non_utf8": non_utf8, "fifo": fifo}


def png_of_size(width: int, height: int, mode: str = "RGB", colour=(90, 140, 200)) -> bytes:
    """A small PNG of ``width`` x ``height`` (one flat colour: a 1x24000 one is 176 bytes)."""
    buffer = io.BytesIO()
    Image.new(mode, (width, height), colour if mode == "RGB" else 128).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def big_face_png(side: int = 10_900) -> bytes:
    """A ``side`` x ``side`` PNG (10900x10900 = 118.8 MP, just under the 120 MP pixel limit) with
    a fixture face in the middle; flat elsewhere so it encodes fast and small."""
    canvas = Image.new("RGB", (side, side), (120, 125, 130))
    with Image.open(LFW / "Colin_Powell_0001.jpg") as src:
        face = src.convert("RGB").resize((side // 4, side // 4), Image.Resampling.BILINEAR)
    canvas.paste(face, ((side - face.width) // 2, (side - face.height) // 2))
    buffer = io.BytesIO()
    canvas.save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def format_seeds() -> dict[str, bytes]:
    """Encoded seeds in every format the loader decodes: the fixture files as they are (JPEG,
    GIF, PGM) and a fixture photo re-encoded as PNG (plain, palette, 16-bit gray, RGBA),
    BMP, TIFF (raw, LZW, deflate, CMYK), WebP (lossy, lossless), progressive JPEG, JPEG with an
    EXIF orientation, animated GIF and PPM. Fuzzers mutate these."""
    seeds = {
        "fixture.jpg": (LFW / "Colin_Powell_0001.jpg").read_bytes(),
        "fixture_yale.gif": YALE_GIF.read_bytes(),
        "fixture_orl.pgm": ORL_PGM.read_bytes(),
    }
    with Image.open(LFW / "George_W_Bush_0001.jpg") as src:
        photo = src.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR)

    def encode(img: Image.Image, fmt: str, **options) -> bytes:
        buffer = io.BytesIO()
        img.save(buffer, fmt, **options)
        return buffer.getvalue()

    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW on display
    seeds |= {
        "photo.png": encode(photo, "PNG"),
        "palette.png": encode(photo.convert("P"), "PNG"),
        # Full 16-bit range (x257), as a scanner or a medical camera writes it.
        "gray16.png": encode(Image.fromarray(np.asarray(photo.convert("L"), dtype=np.uint16) * 257), "PNG"),
        "rgba.png": encode(photo.convert("RGBA"), "PNG"),
        "photo.bmp": encode(photo, "BMP"),
        "raw.tiff": encode(photo, "TIFF"),
        "lzw.tiff": encode(photo, "TIFF", compression="tiff_lzw"),
        "deflate.tiff": encode(photo, "TIFF", compression="tiff_adobe_deflate"),
        "cmyk.tiff": encode(photo.convert("CMYK"), "TIFF"),
        "lossy.webp": encode(photo, "WEBP", quality=60),
        "lossless.webp": encode(photo, "WEBP", lossless=True),
        "progressive.jpg": encode(photo, "JPEG", progressive=True, quality=80),
        "exif_rotated.jpg": encode(photo, "JPEG", exif=exif, quality=80),
        "animated.gif": encode(photo.convert("P"), "GIF", save_all=True,
                               append_images=[photo.rotate(90).convert("P")], duration=100, loop=0),
        "photo.ppm": encode(photo, "PPM"),
    }
    return seeds


# -- a child process and its peak memory ------------------------------------------------------------


@dataclass
class Measured:
    """What a measured child did: exit status, output and its own peak RSS."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    peak_rss_bytes: int
    seconds: float
    killed_for: str | None = None  # "memory" or "time" when the watchdog stopped it

    @property
    def peak_rss_gb(self) -> float:
        return self.peak_rss_bytes / GB

    def describe(self) -> str:
        why = f", killed for {self.killed_for}" if self.killed_for else ""
        return (f"{' '.join(self.argv[-6:])}: exit {self.returncode}{why}, peak RSS {self.peak_rss_gb:.2f} GB, "
                f"{self.seconds:.1f} s\n--- stdout ---\n{self.stdout[-3000:]}\n--- stderr ---\n{self.stderr[-3000:]}")


def facesearch_argv(*args: str | Path) -> list[str]:
    """The CLI as a user runs it (``python -m facesearch.cli.main ...``) in this interpreter."""
    return [sys.executable, "-m", "facesearch.cli.main", *(os.fspath(a) for a in args)]


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


#: Runs argv[2:] as its child, then writes that child's peak RSS (kB) to the file argv[1]. The
#: measured command must not be forked from the test process itself: until exec, a forked (or
#: vforked) child shares its parent's pages and its peak RSS counts them, so a child of a test
#: process holding 1.5 GB of models "peaks" at 1.5 GB whatever it does. This small launcher is
#: the measured command's parent instead.
_LAUNCHER = (
    "import os, resource, subprocess, sys\n"
    "code = subprocess.call(sys.argv[2:])\n"
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.exit(code)\n"
)


def run_measured(argv: list[str], *, timeout_s: float, kill_above_bytes: int | None = None,
                 cwd: Path | None = None, env: dict[str, str] | None = None, stdin: bytes | None = None) -> Measured:
    """Run ``argv`` to completion and return its exit status, output and peak RSS (the kernel's
    high-water mark of that process, ``ru_maxrss``, reported by a small launcher: see ``_LAUNCHER``).

    A watchdog kills it if it runs past ``timeout_s`` or its RSS passes ``kill_above_bytes``
    (it has already failed its budget then, and on a shared machine it must not take the rest)."""
    import signal
    import tempfile

    started = time.monotonic()
    with tempfile.TemporaryDirectory() as scratch:
        out_path, err_path, peak_path = (Path(scratch) / n for n in ("out", "err", "peak"))
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(peak_path), *argv], stdout=out,
                                    stderr=err, cwd=cwd, env=env, start_new_session=True,
                                    stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL)
            if stdin is not None:
                proc.stdin.write(stdin)
                proc.stdin.close()
            killed: list[str] = []
            sampled = [0]  # the watchdog's highest sample: the figure when the launcher is killed
            done = threading.Event()

            def watchdog() -> None:
                while not done.wait(0.05):
                    sampled[0] = max(sampled[0], _group_rss_bytes(proc.pid))
                    if time.monotonic() - started > timeout_s:
                        killed.append("time")
                    elif kill_above_bytes is not None and sampled[0] > kill_above_bytes:
                        killed.append("memory")
                    if killed:
                        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and the measured command
                        return

            guard = threading.Thread(target=watchdog, daemon=True)
            guard.start()
            proc.wait()
            done.set()
            guard.join()
        peak_kb = int(peak_path.read_text()) if peak_path.is_file() else 0
        return Measured(argv=[str(a) for a in argv], returncode=proc.returncode,
                        stdout=out_path.read_text(errors="replace"), stderr=err_path.read_text(errors="replace"),
                        peak_rss_bytes=max(peak_kb * 1024, sampled[0] if killed else 0),
                        seconds=time.monotonic() - started,
                        killed_for=killed[0] if killed else None)


def _group_rss_bytes(pid: int) -> int:
    """RSS of ``pid`` and its children (the launcher and the command it runs)."""
    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        children = []
    return sum(rss_bytes(p) for p in [pid, *children])
