"""Index a photo folder end to end, kill -9 it part-way, resume, and check consistency.

    python bench/ingest_kill_resume.py --photos ../shared/data/lfw/images --home /tmp/fs-lfw --kill-after 120

Steps: (1) ``facesearch index`` in a subprocess, SIGKILL after ``--kill-after`` seconds;
(2) ``facesearch doctor --check-only`` (what the crash left: vectors not yet saved show as
"missing from index", never as orphans); (3) ``facesearch index`` again on the same
folder: it must resume (already-indexed files skipped by content hash) and finish;
(4) ``doctor --check-only`` again: 0 missing, 0 orphans. Prints the resumed run's
images/s and faces/s and the totals over both runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

CLI = [sys.executable, "-c", "import sys; from facesearch.cli.main import main; sys.exit(main())"]


def doctor(home: Path) -> list[dict]:
    out = subprocess.run([*CLI, "doctor", "--check-only", "--json", "--home", str(home)],
                         capture_output=True, text=True, check=False)
    return json.loads(out.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--home", type=Path, required=True, help="a scratch home (deleted first)")
    parser.add_argument("--collection", default="bench")
    parser.add_argument("--kill-after", type=float, default=60.0, help="seconds before SIGKILL (0: no kill)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    shutil.rmtree(args.home, ignore_errors=True)
    index_cmd = [*CLI, "index", str(args.photos), "--collection", args.collection, "--home", str(args.home),
                 "--workers", str(args.workers), "--json"]
    if args.kill_after > 0:
        start = time.monotonic()
        proc = subprocess.Popen(index_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(args.kill_after)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        print(f"killed `facesearch index` with SIGKILL after {time.monotonic() - start:.0f} s")
        for report in doctor(args.home):
            print(f"  after the kill: catalog {report['catalog_faces']} faces, index {report['index_faces']}, "
                  f"missing from index {report['missing_from_index']}, orphans in index "
                  f"{report['orphans_in_index']}, orphan thumbnails {report['orphan_thumbnails']}, "
                  f"missing thumbnails {report['missing_thumbnails']}")
    done = subprocess.run(index_cmd, capture_output=True, text=True, check=True)
    summary = json.loads(done.stdout)
    print(f"resumed run: {summary['files_seen']} files, {summary['already_indexed']} already indexed (skipped), "
          f"{summary['images_indexed']} newly indexed with {summary['faces_indexed']} faces in "
          f"{summary['seconds']:.0f} s = {summary['images_per_s']:.1f} images/s, {summary['faces_per_s']:.1f} faces/s; "
          f"{len(summary['failed'])} failed, {len(summary['skipped'])} not images, "
          f"{summary['images_without_faces']} without a face")
    for report in doctor(args.home):
        print(f"  after resuming: {report['collection']}: catalog {report['catalog_faces']} faces, index "
              f"{report['index_faces']}, missing from index {report['missing_from_index']}, orphans in index "
              f"{report['orphans_in_index']}, orphan thumbnails {report['orphan_thumbnails']}, "
              f"missing thumbnails {report['missing_thumbnails']}, consistent {report['consistent']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
