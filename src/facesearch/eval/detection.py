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
from collections.abc import Callable
from dataclasses import dataclass, replace
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


@dataclass(frozen=True)
class DetectorUnderTest:
    """What the protocol needs of a detector: boxes + scores at a permissive threshold, and the
    score above which the pipeline keeps a face."""

    name: str
    detect: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # image -> (N, 4) boxes, (N,) scores
    operating_threshold: float
    ap_threshold: float
    description: str


def scrfd_under_test(analyzer: FaceAnalyzer | None = None) -> DetectorUnderTest:
    analyzer = analyzer or FaceAnalyzer()
    config = analyzer.detector.config
    permissive = type(analyzer.detector)(analyzer.detector.session, analyzer.detector.mean, analyzer.detector.std,
                                         replace(config, score_threshold=AP_SCORE_THRESHOLD))

    def detect(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        found = permissive.detect_batch([image])[0]
        return found.boxes, found.scores

    return DetectorUnderTest(analyzer.pack.name, detect, config.score_threshold, AP_SCORE_THRESHOLD, repr(config))


def dlib_under_test() -> DetectorUnderTest:
    """dlib's HOG detector (the ``dlib_resnet`` pack's): SVM margins, 0 = its default threshold."""
    from facesearch.eval.dlib_pack import PACK_NAME, DlibFaceModel

    model = DlibFaceModel()
    low = -0.5

    def detect(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        found = model.detect(image, adjust_threshold=low)
        boxes = np.array([d[:4] for d in found], np.float64).reshape(-1, 4)
        return boxes, np.array([d[4] for d in found], np.float64)

    return DetectorUnderTest(PACK_NAME, detect, 0.0, low, f"dlib HOG frontal detector, upsample {model.upsample}")


def run_detection(image_dir: Path, labels: dict[str, np.ndarray], detector: DetectorUnderTest | None = None,
                  iou: float = 0.5, progress=None) -> dict:
    detector = detector or scrfd_under_test()
    operating = detector.operating_threshold
    gt_heights, gt_found, det_scores, det_heights, det_gt_height = [], [], [], [], []
    seconds = 0.0
    for n, (name, gt) in enumerate(labels.items()):
        image = load_image(Path(image_dir) / name)
        start = time.perf_counter()
        boxes, scores = detector.detect(image)
        seconds += time.perf_counter() - start
        taken = match(boxes, scores, gt, iou)
        heights = gt[:, 3] - gt[:, 1]
        at_operating = np.zeros(len(gt), bool)
        strong = scores >= operating
        # Recall at the pipeline's threshold: match again among its detections only.
        taken_operating = match(boxes[strong], scores[strong], gt, iou)
        at_operating[taken_operating[taken_operating >= 0]] = True
        gt_heights.append(heights)
        gt_found.append(at_operating)
        det_scores.append(scores)
        det_heights.append(boxes[:, 3] - boxes[:, 1])
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
        "ap_score_threshold": detector.ap_threshold, "detector": detector.description,
        "by_height": {label: bucket(lo, hi) for label, lo, hi in BUCKETS},
        "all": bucket(0, float("inf")),
        "detections_at_operating_threshold": int((s >= operating).sum()),
        "seconds_per_image": round(seconds / max(len(labels), 1), 4),
    }
