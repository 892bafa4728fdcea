"""LFW verification, view 2: 10 folds of ``pairs.txt``, threshold chosen on 9, tested on 1.

Runs the full pipeline on LFW's original-framing photos (no pre-aligned crops), so what
it measures is what a user gets: detection, the choice of face, alignment and embedding.
Each improvement is reported separately (flip augmentation, the no-face fallbacks) and
the worst errors are listed, since LFW carries label errors of its own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facesearch.errors import ImageError
from facesearch.pipeline import FaceAnalyzer, load_image, primary_face
from facesearch.pipeline.align import align_face
from facesearch.pipeline.detect import ScrfdDetector

#: Detector threshold for the second look at photos where no face passed the default.
FALLBACK_SCORE_THRESHOLD = 0.1


@dataclass(frozen=True)
class Pair:
    a: str  # relative image path, e.g. "Abel_Pacheco/Abel_Pacheco_0001.jpg"
    b: str
    same: bool
    fold: int


@dataclass
class ImageEmbeddings:
    """Per-image embeddings of one LFW run, with how each face was obtained."""

    paths: list[str]
    plain: np.ndarray  # (N, d) no flip
    flipped: np.ndarray  # (N, d) original + mirror, summed and normalised
    how: list[str]  # "detected" | "low-threshold" | "centre-prior" | "none" | "unreadable"
    seconds: float = 0.0

    def lookup(self) -> dict[str, int]:
        return {p: i for i, p in enumerate(self.paths)}


@dataclass
class VerificationResult:
    name: str
    accuracy_mean: float
    accuracy_std: float
    fold_accuracies: list[float]
    tar_at_far: dict[str, float]
    thresholds: list[float]
    hardest_impostors: list[tuple[str, str, float]] = field(default_factory=list)
    hardest_genuines: list[tuple[str, str, float]] = field(default_factory=list)


def read_pairs(pairs_file: Path) -> list[Pair]:
    lines = Path(pairs_file).read_text().split("\n")
    header = [int(v) for v in lines[0].split()]
    # View 2 (pairs.txt): "folds pairs-per-fold"; view 1 (pairsDevTest.txt): "pairs", one fold.
    n_folds, per_fold = header if len(header) == 2 else (1, header[0])
    pairs = []
    for i, line in enumerate(filter(None, (ln.strip() for ln in lines[1:]))):
        fields = line.split()
        fold = i // (2 * per_fold)
        if len(fields) == 3:
            name, n1, n2 = fields
            pairs.append(Pair(_rel(name, n1), _rel(name, n2), True, fold))
        elif len(fields) == 4:
            name1, n1, name2, n2 = fields
            pairs.append(Pair(_rel(name1, n1), _rel(name2, n2), False, fold))
        else:
            raise ValueError(f"{pairs_file}: line {i + 2} is not a pair: {line!r}")
    if len(pairs) != n_folds * per_fold * 2:
        raise ValueError(f"{pairs_file}: expected {n_folds * per_fold * 2} pairs, read {len(pairs)}")
    return pairs


def _rel(name: str, number: str) -> str:
    return f"{name}/{name}_{int(number):04d}.jpg"


def embed_lfw_images(analyzer: FaceAnalyzer, image_dir: Path, rel_paths: list[str],
                     batch_size: int = 32, progress: bool = True) -> ImageEmbeddings:
    """Embed the primary face of each image, with the fallbacks for photos without one."""
    start = time.perf_counter()
    n = len(rel_paths)
    crops: list[np.ndarray | None] = [None] * n
    how = ["none"] * n
    landmarks_seen: list[np.ndarray] = []
    sizes: dict[int, tuple[int, int]] = {}
    missing: list[int] = []
    bar = tqdm(total=n, desc="detect", unit="img", disable=not progress)
    for lo in range(0, n, batch_size):
        idx, images = [], []
        for i in range(lo, min(n, lo + batch_size)):
            try:
                images.append(load_image(image_dir / rel_paths[i]))
                idx.append(i)
            except ImageError:  # a broken file in a dataset is counted, not fatal
                how[i] = "unreadable"
        for i, image, dets in zip(idx, images, analyzer.detector.detect_batch(images) if images else []):
            sizes[i] = image.shape[:2]
            faces = analyzer.faces_from_detections([image], [dets], embed=False)[0]
            face = primary_face(faces, image.shape)
            if face is None:
                missing.append(i)
                continue
            crops[i] = align_face(image, face.landmarks)
            how[i] = "detected"
            h, w = image.shape[:2]
            landmarks_seen.append(face.landmarks / np.array([w, h]))
        bar.update(min(n, lo + batch_size) - lo)
    bar.close()

    # Fallback 1: a second look with a permissive detector threshold.
    low = ScrfdDetector(analyzer.detector.session, analyzer.detector.mean, analyzer.detector.std,
                        replace(analyzer.detector.config, score_threshold=FALLBACK_SCORE_THRESHOLD))
    # Fallback 2: the dataset's mean landmark layout (its faces are centred by construction).
    mean_layout = np.mean(landmarks_seen, axis=0) if landmarks_seen else None
    for i in missing:
        image = load_image(image_dir / rel_paths[i])
        faces = analyzer.faces_from_detections([image], [low.detect(image)], embed=False)[0]
        face = primary_face(faces, image.shape)
        if face is not None:
            crops[i], how[i] = align_face(image, face.landmarks), "low-threshold"
        elif mean_layout is not None:
            h, w = image.shape[:2]
            crops[i], how[i] = align_face(image, mean_layout * np.array([w, h])), "centre-prior"

    dim = analyzer.embedder.dim
    plain = np.zeros((n, dim), np.float32)
    flipped = np.zeros((n, dim), np.float32)
    have = [i for i in range(n) if crops[i] is not None]
    if have:
        stack = np.stack([crops[i] for i in have])
        raw = analyzer.embedder.raw_features(stack)
        raw_mirror = analyzer.embedder.raw_features(stack[:, :, ::-1])
        plain[have] = _normalise(raw)
        flipped[have] = _normalise(raw + raw_mirror)
    return ImageEmbeddings(list(rel_paths), plain, flipped, how, time.perf_counter() - start)


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def pair_scores(pairs: list[Pair], embeddings: np.ndarray, index: dict[str, int],
                usable: np.ndarray) -> np.ndarray:
    """Cosine per pair; a pair with an image lacking a face scores -1 (a certain error)."""
    a = np.array([index[p.a] for p in pairs])
    b = np.array([index[p.b] for p in pairs])
    scores = np.einsum("ij,ij->i", embeddings[a], embeddings[b])
    return np.where(usable[a] & usable[b], scores, -1.0)


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    order = np.sort(np.unique(scores))
    candidates = np.concatenate([[order[0] - 1e-6], (order[:-1] + order[1:]) / 2, [order[-1] + 1e-6]])
    # accuracy(t) = (#same > t) + (#diff <= t), vectorised over candidates.
    same_scores = np.sort(scores[same])
    diff_scores = np.sort(scores[~same])
    tp = len(same_scores) - np.searchsorted(same_scores, candidates, side="right")
    tn = np.searchsorted(diff_scores, candidates, side="right")
    return float(candidates[np.argmax(tp + tn)])


def tar_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float) -> tuple[float, float]:
    """TAR at the lowest threshold whose false-accept rate does not exceed ``far``."""
    ranked = np.sort(impostor)[::-1]
    allowed = int(np.floor(far * len(ranked)))
    threshold = ranked[allowed] if allowed < len(ranked) else -1.0
    return float(np.mean(genuine > threshold)), float(threshold)


def evaluate(name: str, pairs: list[Pair], scores: np.ndarray, top: int = 5) -> VerificationResult:
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    accuracies, thresholds = [], []
    for k in range(folds.max() + 1):
        train, test = folds != k, folds == k
        t = best_threshold(scores[train], same[train])
        thresholds.append(t)
        accuracies.append(float(np.mean((scores[test] > t) == same[test])))
    genuine, impostor = scores[same], scores[~same]
    tars = {f"{far:g}": tar_at_far(genuine, impostor, far)[0] for far in (1e-2, 1e-3)}
    imp_idx = np.where(~same)[0][np.argsort(scores[~same])[::-1][:top]]
    gen_idx = np.where(same)[0][np.argsort(scores[same])[:top]]
    return VerificationResult(
        name, float(np.mean(accuracies)), float(np.std(accuracies)), accuracies, tars, thresholds,
        [(pairs[i].a, pairs[i].b, float(scores[i])) for i in imp_idx],
        [(pairs[i].a, pairs[i].b, float(scores[i])) for i in gen_idx],
    )


def run_lfw(analyzer: FaceAnalyzer, data_dir: Path, progress: bool = True):
    """Embed every image of ``pairs.txt`` once and evaluate each pipeline variant."""
    data_dir = Path(data_dir)
    pairs_file = data_dir / "pairs.txt"
    image_dir = data_dir / "images"
    if not pairs_file.is_file() or not image_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: expected pairs.txt and images/ (LFW layout)")
    pairs = read_pairs(pairs_file)
    rel_paths = sorted({p.a for p in pairs} | {p.b for p in pairs})
    emb = embed_lfw_images(analyzer, image_dir, rel_paths, progress=progress)
    index = emb.lookup()
    how = np.array(emb.how)
    detected = how == "detected"
    any_face = np.isin(how, ("detected", "low-threshold", "centre-prior"))
    variants = [
        ("detector only, no flip (no-face pairs count as errors)", emb.plain, detected),
        ("+ fallbacks for no-face photos", emb.plain, any_face),
        ("+ flip test-time augmentation", emb.flipped, any_face),
    ]
    results = [evaluate(name, pairs, pair_scores(pairs, vecs, index, ok), top=5)
               for name, vecs, ok in variants]
    counts = {k: int(np.sum(how == k)) for k in ("detected", "low-threshold", "centre-prior", "none", "unreadable")}
    return results, counts, emb
