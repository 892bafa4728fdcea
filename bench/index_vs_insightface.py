"""Whole-process ingest: `facesearch index` on a fresh home vs InsightFace FaceAnalysis, same files.

What a user feels is the whole command: start-up, model loading, decoding, detection,
embedding, thumbnails, catalog writes and the index. This script copies the same photos
(default: 300 LFW photos, sorted then strided, and 60 WIDER sample photos) into one
folder, then times, as separate processes in one run, alternating:

- ``facesearch index FOLDER --collection bench --home NEW_HOME`` for each runtime asked for
  (``--runtimes onnxruntime,openvino``), a fresh home every time;
- a Python process that imports ``insightface``, prepares ``FaceAnalysis`` (det_size 640)
  on the same two ONNX files and runs ``app.get()`` on every photo (decoded by OpenCV, as
  InsightFace users do). It writes nothing: no thumbnails, catalog or index.

Wall time of each process (best of ``--repeat``), photos/s, faces found, and the ratio to
InsightFace. Needs insightface importable in this interpreter (``.venv-bench``, see
bench/README.md).

    .venv-bench/bin/python bench/index_vs_insightface.py --lfw ../shared/data/lfw \\
        --wider ../shared/data/widerface_sample --runtimes onnxruntime,openvino
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

INSIGHTFACE_SCRIPT = r"""
import sys, warnings, json
from pathlib import Path
import cv2, onnxruntime as ort
warnings.filterwarnings("ignore")
from insightface.app import FaceAnalysis
root, folder, threads = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
options = ort.SessionOptions(); options.intra_op_num_threads = threads; options.inter_op_num_threads = 1
options.log_severity_level = 3
app = FaceAnalysis(name="fs_bench", root=str(root), providers=["CPUExecutionProvider"], sess_options=options)
app.prepare(ctx_id=-1, det_size=(640, 640))
faces = images = 0
for path in sorted(folder.iterdir()):
    image = cv2.imread(str(path))
    if image is None:
        continue
    images += 1
    faces += len(app.get(image))
print(json.dumps({"images": images, "faces": faces}))
"""


def strided(paths: list[Path], limit: int) -> list[Path]:
    paths = sorted(paths)
    return paths if limit >= len(paths) else paths[:: len(paths) // limit][:limit]


def run_timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw", type=Path, required=True)
    parser.add_argument("--wider", type=Path, required=True)
    parser.add_argument("--limit-lfw", type=int, default=300)
    parser.add_argument("--limit-wider", type=int, default=60)
    parser.add_argument("--runtimes", default="onnxruntime,openvino")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    threads = os.cpu_count() or 1
    from facesearch.models import load_pack

    pack = load_pack(verify=False)
    work = Path(tempfile.mkdtemp(prefix="fs-index-vs-if-"))
    try:
        folder = work / "photos"
        folder.mkdir()
        photos = (strided(list(args.lfw.glob("images/*/*.jpg")), args.limit_lfw)
                  + strided(list(args.wider.glob("images/*/*.jpg")), args.limit_wider))
        for i, photo in enumerate(photos):
            shutil.copy(photo, folder / f"{i:04d}_{photo.name}")
        model_dir = work / "models" / "models" / "fs_bench"
        model_dir.mkdir(parents=True)
        for model_file in (pack.detector, pack.recognizer):
            (model_dir / model_file.path.name).symlink_to(model_file.path.resolve())
        cli = str(Path(sys.executable).with_name("facesearch"))
        env = {**os.environ, "FACESEARCH_THREADS": str(threads)}
        runs: dict[str, list[float]] = {}
        found: dict[str, tuple[int, int]] = {}
        for round_ in range(args.repeat):
            for runtime in [r.strip() for r in args.runtimes.split(",") if r.strip()]:
                home = work / f"home-{runtime}-{round_}"
                seconds, out = run_timed([cli, "--runtime", runtime, "index", str(folder), "--collection", "bench",
                                          "--home", str(home), "--json"], env)
                summary = json.loads(out)
                runs.setdefault(f"facesearch index [{runtime}]", []).append(seconds)
                found[f"facesearch index [{runtime}]"] = (summary["images_indexed"], summary["faces_indexed"])
                shutil.rmtree(home, ignore_errors=True)
            seconds, out = run_timed([sys.executable, "-c", INSIGHTFACE_SCRIPT, str(work / "models"), str(folder),
                                      str(threads)], env)
            summary = json.loads(out.strip().splitlines()[-1])
            runs.setdefault("insightface FaceAnalysis", []).append(seconds)
            found["insightface FaceAnalysis"] = (summary["images"], summary["faces"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = min(runs["insightface FaceAnalysis"])
    # Best of N per engine, and (the host's speed drifts between runs) the ratio of each round's
    # pair of runs, taken back to back, with its median and range.
    theirs = runs["insightface FaceAnalysis"]
    rows = [{"engine": name, "photos": found[name][0], "faces": found[name][1], "seconds": round(min(times), 2),
             "photos_per_s": round(len(photos) / min(times), 2), "speedup_vs_insightface": round(base / min(times), 2),
             "all_seconds": [round(t, 2) for t in times],
             "paired_speedups": [round(b / t, 2) for t, b in zip(times, theirs)],
             "median_paired_speedup": round(statistics.median(b / t for t, b in zip(times, theirs)), 2)}
            for name, times in runs.items()]
    result = {"command": " ".join(sys.argv), "threads": threads, "photos": len(photos), "repeat": args.repeat,
              "load_average": os.getloadavg(), "rows": rows}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{len(photos)} photos ({args.limit_lfw} LFW + {args.limit_wider} WIDER), {threads} threads, "
          f"best of {args.repeat}, whole processes")
    for row in rows:
        print(f"  {row['engine']:<34} {row['seconds']:8.2f} s  {row['photos_per_s']:6.2f} photos/s  "
              f"{row['faces']:5d} faces  {row['speedup_vs_insightface']:.2f}x (rounds: "
              f"{', '.join(f'{r:.2f}x' for r in row['paired_speedups'])}; median {row['median_paired_speedup']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
