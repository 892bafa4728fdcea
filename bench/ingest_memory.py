"""Memory and speed of `facesearch index` on a folder: peak RSS, RSS over the run, photos/s.

Runs the real CLI in a subprocess on a fresh home and samples its resident memory (VmRSS of
the process and its children) every 0.25 s, so the figure is what the operating system
saw, not an estimate. With ``--camera N`` the folder is N camera-sized JPEGs (6000x4000,
every third one portrait) made by upscaling real photos from ``--source``; ``--bad`` adds
the three files that once ended a run (a truncated JPEG, a file whose name is not UTF-8,
a FIFO).

    python bench/ingest_memory.py --camera 200 --source ../shared/data/lfw/images --bad
    python bench/ingest_memory.py --photos ../shared/data/lfw/images

Prints a JSON summary (peak RSS, RSS at 10/25/50/75/100 % of the run, photos/s, the CLI's
own summary lines) and writes it to ``--out`` when given.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the shared generators live with the tests

from tests.realworld import camera_folder, rss_bytes  # noqa: E402


def rss_kb(pid: int) -> int:
    """Resident memory of ``pid`` and its children, in kB."""
    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        children = []
    return sum(rss_bytes(p) for p in [pid, *children]) // 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, help="a folder to index as it is")
    parser.add_argument("--camera", type=int, default=0, help="make N camera-sized photos instead")
    parser.add_argument("--bad", action="store_true", help="add a truncated JPEG, a non-UTF-8 name and a FIFO")
    parser.add_argument("--workdir", type=Path, help="where the folder and home go (default: a temp dir)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="fs-ingest-mem-"))
    if args.camera:
        folder = work / "camera"
        if not folder.exists():
            folder.mkdir(parents=True)
            camera_folder(folder, args.camera, bad_files=args.bad)
    elif args.photos:
        folder = args.photos
    else:
        parser.error("give --photos DIR or --camera N")
    home = work / "home"
    shutil.rmtree(home, ignore_errors=True)
    cli = Path(sys.executable).with_name("facesearch")
    command = [str(cli), "index", str(folder), "--collection", "bench", "--home", str(home), "--json"]
    start = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    samples: list[tuple[float, int]] = []
    while proc.poll() is None:
        samples.append((time.monotonic() - start, rss_kb(proc.pid)))
        time.sleep(0.25)
    out = proc.stdout.read().decode() if proc.stdout else ""
    seconds = time.monotonic() - start
    summary = json.loads(out) if out.strip().startswith("{") else {"raw": out[-2000:]}
    peak = max((kb for _, kb in samples), default=0)

    def at(fraction: float) -> int:
        t = seconds * fraction
        before = [kb for s, kb in samples if s <= t]
        return before[-1] if before else 0

    result = {
        "command": " ".join(sys.argv),
        "folder": str(folder),
        "exit_code": proc.returncode,
        "seconds": round(seconds, 1),
        "peak_rss_mb": round(peak / 1024),
        "rss_mb_at": {f"{int(f * 100)}%": round(at(f) / 1024) for f in (0.1, 0.25, 0.5, 0.75, 1.0)},
        "images_indexed": summary.get("images_indexed"),
        "faces_indexed": summary.get("faces_indexed"),
        "photos_per_s": round((summary.get("images_indexed") or 0) / seconds, 2),
        "failed": summary.get("failed"),
        "skipped": summary.get("skipped"),
        "load_average": os.getloadavg(),
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
