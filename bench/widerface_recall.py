"""Detector recall on a WIDER FACE sample: how many labelled faces does facesearch find?

Runs ``FaceAnalyzer().detector.detect_batch`` (detection only, no embedding) on every image
of a WIDER FACE sample folder (``DIR/labels.txt`` + ``DIR/images/<event>/<file>.jpg``),
matches detections to ground-truth boxes one-to-one (greedy by detector score, IoU >= 0.5,
against GT boxes of any size) and reports, per detector mode:

- recall of GT faces at least ``--min-height`` px tall, by height bucket
  (<16, 16-32, 32-64, 64+) and over all faces regardless of size;
- detections matched to no GT box of any size ("unmatched"; JSON ``precision`` is matched /
  all detections, only precision-ish as WIDER labels miss some faces), mean detections and
  GT faces per image;
- seconds per image for detection alone (decoding is not timed).

Modes: ``default`` (DetectorConfig(): 640 letterbox view plus native-resolution view / tiles
for big photos) and ``single640`` (DetectorConfig(multiscale_above=1e9): the 640 letterbox
view only, what InsightFace's FaceAnalysis does); ``both`` (the default) runs each so the
table shows what the multi-scale / tiling strategy buys.

    python bench/widerface_recall.py --data ../shared/data/widerface_sample
    python bench/widerface_recall.py --data ../shared/data/widerface_sample --mode single640 --json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from facesearch.eval.detection import BUCKETS, read_labels
from facesearch.eval.detection import match as match_boxes
from facesearch.pipeline import DetectorConfig, FaceAnalyzer, load_image

MODES: dict[str, DetectorConfig] = {
    "default": DetectorConfig(),
    "single640": DetectorConfig(multiscale_above=1e9),
}


def strided(items: list, limit: int | None) -> list:
    """A deterministic subset of ``limit`` items spread evenly over ``items``."""
    if not limit or limit >= len(items):
        return items
    return items[:: len(items) // limit][:limit]


def match(dets: np.ndarray, scores: np.ndarray, gt: np.ndarray, iou: float) -> tuple[np.ndarray, int]:
    """Greedy one-to-one matching by score. Returns (GT matched mask, unmatched detections)."""
    taken = match_boxes(dets, scores, gt, iou)
    matched = np.zeros(len(gt), bool)
    matched[taken[taken >= 0]] = True
    return matched, int((taken < 0).sum())


def evaluate(data: Path, labels: dict[str, np.ndarray], mode: str, min_height: float, iou: float) -> dict:
    detector = FaceAnalyzer(detector=MODES[mode]).detector
    heights, hits = [], []
    n_dets = n_unmatched = 0
    seconds = 0.0
    for name, gt in labels.items():
        image = load_image(data / "images" / name)
        start = time.perf_counter()
        found = detector.detect_batch([image])[0]
        seconds += time.perf_counter() - start
        matched, unmatched = match(found.boxes, found.scores, gt, iou)
        heights.append(gt[:, 3] - gt[:, 1])
        hits.append(matched)
        n_dets += len(found)
        n_unmatched += unmatched
    h, m = np.concatenate(heights), np.concatenate(hits)

    def recall(mask: np.ndarray) -> dict:
        n = int(mask.sum())
        return {"faces": n, "found": int(m[mask].sum()), "recall": float(m[mask].mean()) if n else None}

    n_images = len(labels)
    return {
        "mode": mode,
        "images": n_images,
        "min_height": min_height,
        "recall_min_height": recall(h >= min_height),
        "recall_by_height": {label: recall((h >= lo) & (h < hi)) for label, lo, hi in BUCKETS},
        "recall_all_sizes": recall(np.ones_like(m)),
        "detections": n_dets,
        "unmatched_detections": n_unmatched,
        "precision": (n_dets - n_unmatched) / n_dets if n_dets else None,
        "detections_per_image": n_dets / n_images,
        "gt_faces_per_image": len(h) / n_images,
        "seconds_per_image": seconds / n_images,
    }


def print_table(results: list[dict], min_height: float) -> None:
    def pct(r: dict) -> str:
        return "-" if r["recall"] is None else f"{100 * r['recall']:.1f}% ({r['found']}/{r['faces']})"

    def unmatched_pct(r: dict) -> str:
        return f"{100 * r['unmatched_detections'] / r['detections']:.1f}%" if r["detections"] else "-"

    rows: list[tuple[str, list[str]]] = [
        ("images", [str(r["images"]) for r in results]),
        (f"recall, height >= {min_height:g}px", [pct(r["recall_min_height"]) for r in results]),
        *[(f"  height {label}px", [pct(r["recall_by_height"][label]) for r in results])
          for label, _, _ in BUCKETS],
        ("recall, all sizes", [pct(r["recall_all_sizes"]) for r in results]),
        ("detections", [str(r["detections"]) for r in results]),
        ("unmatched detections", [f"{r['unmatched_detections']} ({unmatched_pct(r)})" for r in results]),
        ("detections / image", [f"{r['detections_per_image']:.1f}" for r in results]),
        ("GT faces / image", [f"{r['gt_faces_per_image']:.1f}" for r in results]),
        ("seconds / image (detect)", [f"{r['seconds_per_image']:.3f}" for r in results]),
    ]
    width = max(len(name) for name, _ in rows) + 2
    cols = [max(len(r["mode"]), *(len(v[i]) for _, v in rows)) + 2 for i, r in enumerate(results)]
    print("".ljust(width) + "".join(r["mode"].rjust(c) for r, c in zip(results, cols, strict=True)))
    for name, values in rows:
        print(name.ljust(width) + "".join(v.rjust(c) for v, c in zip(values, cols, strict=True)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="WIDER FACE sample folder")
    parser.add_argument("--min-height", type=float, default=16.0,
                        help="headline recall counts GT faces at least this tall (px)")
    parser.add_argument("--iou", type=float, default=0.5, help="IoU needed to match a detection to a GT box")
    parser.add_argument("--limit", type=int, default=None, help="evaluate N images, evenly strided")
    parser.add_argument("--mode", choices=[*MODES, "both"], default="both")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    labels = read_labels(args.data / "labels.txt")
    if not labels:
        parser.error(f"no images listed in {args.data / 'labels.txt'}")
    labels = dict(strided(list(labels.items()), args.limit))
    modes = list(MODES) if args.mode == "both" else [args.mode]
    results = [evaluate(args.data, labels, mode, args.min_height, args.iou) for mode in modes]
    if args.json:
        json.dump({"iou": args.iou, "min_height": args.min_height, "results": results}, sys.stdout, indent=2)
        print()
    else:
        print(f"WIDER FACE sample {args.data}: IoU >= {args.iou:g}, greedy one-to-one by score")
        print_table(results, args.min_height)
    return 0


if __name__ == "__main__":
    sys.exit(main())
