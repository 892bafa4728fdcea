"""Full-pipeline throughput (decode + detect + align + embed): facesearch vs InsightFace.

Measures images/s and faces/s on (a) a fixed LFW subset (``DIR/images/*/*.jpg``, sorted
then evenly strided; 500 images by default) and (b) the WIDER FACE sample images (all of
them by default), for:

- ``facesearch b1``: one image at a time through ``FaceAnalyzer.analyze``;
- ``facesearch batched``: ``FaceAnalyzer.analyze_batch`` on chunks of 16 (LFW) / 4 (WIDER)
  images, embedding batched across all their faces;
- ``facesearch-640 b1`` / ``facesearch-640 batched``: the same with
  ``DetectorConfig(multiscale_above=1e9)``, the single 640 letterbox view, i.e. the same
  detection work as InsightFace (the default also looks at big photos at native
  resolution and finds more small faces on WIDER);
- ``insightface``: the official ``insightface`` package's ``FaceAnalysis`` (det_size 640)
  running the SAME two ONNX files (symlinked into a temporary model root), ``.get()`` per
  image. Optional: skipped with a note when ``insightface`` is not importable.

Every engine decodes inside the timed loop with the same decoder (facesearch's
``load_image``, Pillow; InsightFace gets the result converted to BGR), runs on the CPU
execution provider with ``os.cpu_count()`` intra-op threads, and is warmed up on two images
first. With ``--repeat N`` each timing is the best of N runs.

    python bench/pipeline.py --lfw ../shared/data/lfw --wider ../shared/data/widerface_sample
    python bench/pipeline.py --lfw ../shared/data/lfw --wider ../shared/data/widerface_sample \\
        --limit-lfw 40 --limit-wider 6 --json

InsightFace needs its own venv (see bench/README.md): ``pip install -e '.[bench]'``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import cv2
import onnxruntime as ort

from facesearch.models import load_pack
from facesearch.pipeline import DetectorConfig, FaceAnalyzer, load_image

CPU = ("CPUExecutionProvider",)
SINGLE_640 = DetectorConfig(multiscale_above=1e9)

#: An engine takes a list of image paths and returns how many faces it found in them.
Engine = Callable[[list[Path]], int]


def strided(paths: list[Path], limit: int | None) -> list[Path]:
    """Sorted, then ``limit`` paths spread evenly over the list (deterministic)."""
    paths = sorted(paths)
    if not limit or limit >= len(paths):
        return paths
    return paths[:: len(paths) // limit][:limit]


def facesearch_engine(analyzer: FaceAnalyzer, chunk: int) -> Engine:
    if chunk == 1:
        return lambda paths: sum(len(analyzer.analyze(p)) for p in paths)

    def run(paths: list[Path]) -> int:
        return sum(len(faces) for start in range(0, len(paths), chunk)
                   for faces in analyzer.analyze_batch(paths[start:start + chunk]))

    return run


def insightface_engine(root: Path, threads: int) -> Engine | str:
    """FaceAnalysis on the facesearch pack's own ONNX files, or a note saying why not."""
    try:
        from insightface.app import FaceAnalysis
    except ImportError as exc:
        return f"insightface not importable ({exc}); skipping its rows (see bench/README.md)"
    # insightface 2.1 calls a scikit-image API deprecated in 0.26, warning on every face.
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"insightface\.")
    pack = load_pack(verify=False)
    model_dir = root / "models" / "fs_bench"
    model_dir.mkdir(parents=True)
    for model_file in (pack.detector, pack.recognizer):
        (model_dir / model_file.path.name).symlink_to(model_file.path.resolve())
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    app = FaceAnalysis(name="fs_bench", root=str(root), providers=list(CPU), sess_options=options)
    app.prepare(ctx_id=-1, det_size=(640, 640))

    def run(paths: list[Path]) -> int:
        return sum(len(app.get(cv2.cvtColor(load_image(p), cv2.COLOR_RGB2BGR))) for p in paths)

    return run


def measure(engine: Engine, paths: list[Path], repeat: int) -> tuple[int, float]:
    engine(paths[:2])  # warm-up
    best, faces = float("inf"), 0
    for _ in range(repeat):
        start = time.perf_counter()
        faces = engine(paths)
        best = min(best, time.perf_counter() - start)
    return faces, best


def print_table(rows: list[dict]) -> None:
    header = ("engine", "dataset", "images", "faces", "seconds", "images/s", "faces/s", "vs insightface")
    lines = [header] + [
        (r["engine"], r["dataset"], str(r["images"]), str(r["faces"]), f"{r['seconds']:.2f}",
         f"{r['images_per_s']:.2f}", f"{r['faces_per_s']:.2f}",
         "-" if r["vs_insightface"] is None else f"{r['vs_insightface']:.2f}x")
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w)
                        for i, (cell, w) in enumerate(zip(line, widths, strict=True))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", type=Path, required=True, help="LFW folder (holding images/NAME/*.jpg)")
    parser.add_argument("--wider", type=Path, required=True, help="WIDER FACE sample folder (images/*/*.jpg)")
    parser.add_argument("--limit-lfw", type=int, default=500, help="LFW images, sorted then strided")
    parser.add_argument("--limit-wider", type=int, default=None, help="WIDER images (default: all)")
    parser.add_argument("--repeat", type=int, default=1, help="time each run N times, keep the best")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--no-insightface", action="store_true", help="skip the InsightFace rows")
    parser.add_argument("--runtimes", default="onnxruntime",
                        help="comma-separated: onnxruntime, openvino (precision auto), openvino-bf16, openvino-fp32; "
                             "the first is the default-named rows, the others add batched rows of their own")
    args = parser.parse_args(argv)
    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]

    threads = os.cpu_count() or 1
    datasets = {
        "LFW": (strided(list(args.lfw.glob("images/*/*.jpg")), args.limit_lfw), 16),
        "WIDER": (strided(list(args.wider.glob("images/*/*.jpg")), args.limit_wider), 4),
    }
    for name, (paths, _) in datasets.items():
        if len(paths) < 2:
            parser.error(f"{name}: found {len(paths)} images; need at least 2")

    def analyzer(runtime: str, **config) -> FaceAnalyzer:
        name, _, precision = runtime.partition("-")
        return FaceAnalyzer(threads=threads, providers=CPU, runtime=name, precision=precision or None, **config)

    default = analyzer(runtimes[0])
    single = analyzer(runtimes[0], detector=SINGLE_640)
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="fs_bench_") as tmp:
        reference = None if args.no_insightface else insightface_engine(Path(tmp), threads)
        if isinstance(reference, str):
            notes.append(reference)
            reference = None
        rows: list[dict] = []
        for dataset, (paths, chunk) in datasets.items():
            engines: dict[str, Engine] = {
                "facesearch b1": facesearch_engine(default, 1),
                "facesearch batched": facesearch_engine(default, chunk),
                "facesearch-640 b1": facesearch_engine(single, 1),
                "facesearch-640 batched": facesearch_engine(single, chunk),
            }
            for other in runtimes[1:]:
                engines[f"facesearch batched [{other}]"] = facesearch_engine(analyzer(other), chunk)
                engines[f"facesearch-640 batched [{other}]"] = facesearch_engine(
                    analyzer(other, detector=SINGLE_640), chunk)
            if reference is not None:
                engines["insightface"] = reference
            for engine_name, engine in engines.items():
                faces, seconds = measure(engine, paths, args.repeat)
                rows.append({"engine": engine_name, "dataset": dataset, "images": len(paths), "faces": faces,
                             "seconds": seconds, "images_per_s": len(paths) / seconds,
                             "faces_per_s": faces / seconds, "vs_insightface": None})
            base = next((r for r in rows if r["dataset"] == dataset and r["engine"] == "insightface"), None)
            for r in rows:
                if base is not None and r["dataset"] == dataset:
                    r["vs_insightface"] = r["images_per_s"] / base["images_per_s"]

    meta = {"threads": threads, "providers": list(CPU), "onnxruntime": ort.__version__, "runtimes": runtimes,
            "lfw_chunk": datasets["LFW"][1], "wider_chunk": datasets["WIDER"][1], "repeat": args.repeat}
    if args.json:
        json.dump({"meta": meta, "notes": notes, "rows": rows}, sys.stdout, indent=2)
        print()
        return 0
    for note in notes:
        print(f"note: {note}")
    print(f"threads={threads} (CPU provider), onnxruntime {ort.__version__}, best of {args.repeat}; "
          "'vs insightface' = images/s ratio on the same dataset")
    print_table(rows)
    for dataset in datasets:
        ratios = {r["engine"]: r["vs_insightface"] for r in rows if r["dataset"] == dataset}
        if ratios.get("insightface"):
            print(f"{dataset}: facesearch batched / insightface = {ratios['facesearch batched']:.2f}x, "
                  f"facesearch-640 batched / insightface = {ratios['facesearch-640 batched']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
