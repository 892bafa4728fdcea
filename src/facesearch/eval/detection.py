"""Detector accuracy on labelled boxes: recall and average precision at IoU 0.5, by face size.

Labels use WIDER FACE's text format (``# event/file.jpg`` lines, each followed by one
``x y w h ...`` line per face). Detections are matched one-to-one to ground truth, greedily by
detector score, against boxes of *any* size; a size bucket (by box height: <16, 16-32, 32-64,
64+ px) then counts its own ground truth as positives, detections matched to them as true
positives, unmatched detections of that height as false positives, and ignores the rest.
AP is the all-point interpolated area under the precision-recall curve (VOC 2010+).
The detector runs at a low score threshold so the curve covers every operating point;
recall is also reported at the pipeline's own threshold.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from facesearch.pipeline import FaceAnalyzer, load_image

BUCKETS: list[tuple[str, float, float]] = [
    ("<16", 0, 16), ("16-32", 16, 32), ("32-64", 32, 64), ("64+", 64, float("inf")),
]
AP_SCORE_THRESHOLD = 0.05


def read_labels(path: Path) -> dict[str, np.ndarray]:
    """A WIDER-format label file -> {relative image path: (N, 4) boxes as x1, y1, x2, y2}."""
    labels: dict[str, list[list[float]]] = {}
    current: str | None = None
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line.startswith("#"):
            rest = line[1:].strip()
            # Image lines are '# event/file.jpg'; other '#' lines are free-text comments.
            current = rest if rest.lower().endswith((".jpg", ".jpeg", ".png")) and " " not in rest else None
            if current is not None:
                labels[current] = []
        elif line and current is not None:
            x, y, w, h = (float(v) for v in line.split()[:4])
            if w > 0 and h > 0:
                labels[current].append([x, y, x + w, y + h])
    return {name: np.array(boxes, np.float64).reshape(-1, 4) for name, boxes in labels.items()}


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def match(dets: np.ndarray, scores: np.ndarray, gt: np.ndarray, iou: float) -> np.ndarray:
    """Greedy one-to-one matching by score: the GT index each detection took, or -1."""
    taken = np.full(len(dets), -1)
    if len(dets) == 0 or len(gt) == 0:
        return taken
    ious = iou_matrix(dets.astype(np.float64), gt)
    used = np.zeros(len(gt), bool)
    for d in np.argsort(-scores, kind="stable"):
        candidates = np.where(used, -1.0, ious[d])
        best = int(np.argmax(candidates))
        if candidates[best] >= iou:
            used[best] = True
            taken[d] = best
    return taken


def average_precision(scores: np.ndarray, true_positive: np.ndarray, positives: int) -> float | None:
    if positives == 0:
        return None
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(true_positive[order])
    fp = np.cumsum(~true_positive[order])
    recall = np.concatenate([[0.0], tp / positives, [tp[-1] / positives if len(tp) else 0.0]])
    precision = np.concatenate([[1.0], tp / np.maximum(tp + fp, 1), [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the interpolated envelope
    return float(np.sum(np.diff(recall) * precision[1:]))


def run_detection(image_dir: Path, labels: dict[str, np.ndarray], analyzer: FaceAnalyzer | None = None,
                  iou: float = 0.5, progress=None) -> dict:
    analyzer = analyzer or FaceAnalyzer()
    operating = analyzer.detector.config.score_threshold
    detector = type(analyzer.detector)(analyzer.detector.session, analyzer.detector.mean, analyzer.detector.std,
                                       replace(analyzer.detector.config, score_threshold=AP_SCORE_THRESHOLD))
    gt_heights, gt_found, det_scores, det_heights, det_gt_height = [], [], [], [], []
    seconds = 0.0
    for n, (name, gt) in enumerate(labels.items()):
        image = load_image(Path(image_dir) / name)
        start = time.perf_counter()
        found = detector.detect_batch([image])[0]
        seconds += time.perf_counter() - start
        taken = match(found.boxes, found.scores, gt, iou)
        heights = gt[:, 3] - gt[:, 1]
        at_operating = np.zeros(len(gt), bool)
        strong = found.scores >= operating
        # Recall at the pipeline's threshold: match again among its detections only.
        taken_operating = match(found.boxes[strong], found.scores[strong], gt, iou)
        at_operating[taken_operating[taken_operating >= 0]] = True
        gt_heights.append(heights)
        gt_found.append(at_operating)
        det_scores.append(found.scores)
        det_heights.append(found.boxes[:, 3] - found.boxes[:, 1])
        det_gt_height.append(np.where(taken >= 0, heights[np.maximum(taken, 0)] if len(gt) else 0, np.nan))
        if progress:
            progress(n + 1, len(labels))
    h, found_mask = np.concatenate(gt_heights), np.concatenate(gt_found)
    s, dh, dgt = np.concatenate(det_scores), np.concatenate(det_heights), np.concatenate(det_gt_height)
    matched = ~np.isnan(dgt)

    def bucket(lo: float, hi: float) -> dict:
        positives = (h >= lo) & (h < hi)
        tp = matched & (dgt >= lo) & (dgt < hi)
        fp = ~matched & (dh >= lo) & (dh < hi)
        keep = tp | fp
        n = int(positives.sum())
        return {"faces": n, "found_at_operating_threshold": int(found_mask[positives].sum()),
                "recall": float(found_mask[positives].mean()) if n else None,
                "average_precision": average_precision(s[keep], tp[keep], n)}

    return {
        "images": len(labels), "iou": iou, "operating_threshold": operating,
        "ap_score_threshold": AP_SCORE_THRESHOLD, "detector": repr(analyzer.detector.config),
        "by_height": {label: bucket(lo, hi) for label, lo, hi in BUCKETS},
        "all": bucket(0, float("inf")),
        "detections_at_operating_threshold": int((s >= operating).sum()),
        "seconds_per_image": round(seconds / max(len(labels), 1), 4),
    }
