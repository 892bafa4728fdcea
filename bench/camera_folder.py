"""Issue 10's real-world inputs at full size, measured with ``/usr/bin/time -v``.

1. ``facesearch index`` on a camera folder: ``--photos`` (default 24) JPEGs of 6000x4000 (~3 MB,
   quality 90, a fixture face upscaled, sensor-like noise) plus a truncated JPEG, a file whose name
   is not UTF-8 and a FIFO. Reports exit status, photos indexed, the failures listed, peak RSS and
   photos/s. Target: all photos indexed, 3 failures listed, exit 0, peak RSS <= 2.5 GB.
2. ``facesearch detect`` on the 1x24000 PNG (target <= 1.5 GB) and a 10900x10900 PNG.

Everything is generated in a temporary folder (deleted afterwards unless ``--keep DIR``); no
network, no dataset needed. Runs the CLI of this interpreter's environment.

    .venv/bin/python bench/camera_folder.py                 # the issue's folder: 24 photos
    .venv/bin/python bench/camera_folder.py --photos 200    # issue 10 point 2: <= 2 GB, flat photos/s
    .venv/bin/python bench/camera_folder.py --photos 2 --no-detect   # a quick check
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the shared generators live with the tests

from tests.realworld import big_face_png, camera_folder, facesearch_argv, png_of_size  # noqa: E402


def timed(argv: list[str], timeout_s: float) -> dict:
    """Run under ``/usr/bin/time -v``: exit status, peak RSS (GB), wall seconds, output tails."""
    started = time.monotonic()
    try:
        proc = subprocess.run(["/usr/bin/time", "-v", *argv], capture_output=True, text=True, errors="replace",
                              timeout=timeout_s)
        returncode, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        returncode, out, err = "timeout", str(exc.stdout or ""), str(exc.stderr or "")
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", err)
    return {"exit": returncode, "peak_rss_gb": round(int(peak.group(1)) / 2**20, 3) if peak else None,
            "seconds": round(time.monotonic() - started, 1), "stdout": out, "stderr_tail": err[-2000:]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=24, help="camera photos in the folder (default 24)")
    parser.add_argument("--no-bad-files", action="store_true", help="photos only (for photos/s)")
    parser.add_argument("--no-detect", action="store_true", help="skip the two detect cases")
    parser.add_argument("--keep", type=Path, default=None, help="build in this folder and keep it")
    parser.add_argument("--timeout", type=float, default=3600.0, help="per command, seconds")
    parser.add_argument("--json", action="store_true", help="print only the JSON summary")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="facesearch-camera-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict = {"photos": args.photos}
    try:
        folder, home = work / "DCIM", work / "home"
        started = time.monotonic()
        camera_folder(folder, args.photos, bad_files=not args.no_bad_files)
        results["generate_s"] = round(time.monotonic() - started, 1)
        run = timed(facesearch_argv("index", folder, "--collection", "camera", "--home", home, "--json"),
                    args.timeout)
        index = {k: run[k] for k in ("exit", "peak_rss_gb", "seconds")}
        try:
            summary = json.loads(run["stdout"])
            index |= {"images_indexed": summary["images_indexed"], "faces_indexed": summary["faces_indexed"],
                      "images_per_s": round(summary["images_per_s"], 3),
                      "failures": summary["failed"] + summary["skipped"]}
        except (ValueError, KeyError):
            index["output_tail"] = (run["stdout"][-1000:] + run["stderr_tail"])[-2000:]
        results["index"] = index
        if not args.no_detect:
            for name, make in (("detect_1x24000_png", lambda: png_of_size(1, 24_000)),
                               ("detect_10900x10900_png", big_face_png)):
                image = work / f"{name}.png"
                image.write_bytes(make())
                run = timed(facesearch_argv("detect", image, "--json"), args.timeout)
                results[name] = {k: run[k] for k in ("exit", "peak_rss_gb", "seconds")} | {
                    "bytes": image.stat().st_size,
                    "outcome": "result" if run["exit"] == 0 else run["stderr_tail"].strip().splitlines()[-1:]}
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    print(json.dumps(results, indent=2, default=str))
    if not args.json:
        index = results["index"]
        print(f"\n{'case':<28} {'exit':>5} {'peak RSS GB':>12} {'seconds':>8}  notes")
        notes = (f"{index.get('images_indexed', '?')}/{args.photos} indexed, "
                 f"{len(index.get('failures', []))} failures listed, {index.get('images_per_s', '?')} photos/s")
        print(f"{'index camera folder':<28} {index['exit']!s:>5} {index['peak_rss_gb']!s:>12} "
              f"{index['seconds']:>8}  {notes}")
        for name in ("detect_1x24000_png", "detect_10900x10900_png"):
            if name in results:
                r = results[name]
                print(f"{name:<28} {r['exit']!s:>5} {r['peak_rss_gb']!s:>12} {r['seconds']:>8}  {r['outcome']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
