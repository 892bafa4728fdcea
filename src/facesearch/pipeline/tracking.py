"""Faces across video frames: link per-frame detections into tracks, keep each track's best faces.

A face joins the track it matches best, where a match needs the embeddings to agree:

* cosine >= ``link_threshold`` (default 0.282, the pack's false-match rate 1e-4 on LFW) *and*
  the boxes overlap (IoU >= ``min_iou``) with the track's last box, or
* cosine >= ``reid_threshold`` (default 0.333, false-match rate 1e-5) anywhere in the frame
  (fast motion between samples, a face found again after missed detections).

The cosine is the larger of the face's similarity to the track's last face and to the track's
mean embedding. Box overlap alone never links: at a hard cut from one person to another in
the same place the boxes overlap but the embeddings do not agree, so the track splits.
Matching is one-to-one and greedy by cosine + IoU. A track survives ``max_missed`` sampled
frames without a detection, then ends (its end time is its last detection).

Of each track at most ``max_faces_per_track`` faces are kept (default 3, never more than 5):
the best by quality score, spread in time — each kept face at least span / (2 k) seconds from
the others, so the kept faces are not three adjacent frames of a long track. While a track
runs, only a bounded pool of candidates (``candidates_per_track``) is held: when it overflows,
the track's time span is cut into that many equal slots and only the best face of each slot
stays, so the pool covers the whole track and the best face always stays.

Each kept face carries its timestamp, a full-resolution crop of the frame around it (for a
thumbnail) and the whole frame, downscaled (for showing "a frame" of the video).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np

from facesearch.models.calibration import threshold_at_fmr
from facesearch.pipeline.analyzer import Face
from facesearch.pipeline.video import (
    DEFAULT_MAX_DURATION_S,
    DEFAULT_MAX_FRAME_PIXELS,
    DEFAULT_SAMPLE_FPS,
    VideoMetadata,
    VideoReader,
)

#: Fallbacks for a pack without calibration: buffalo_s's LFW cosine at false-match rate 1e-4 and
#: 1e-5 (0.2817 and 0.3324 when written). faces_from_video reads the pack's own calibration.
DEFAULT_LINK_THRESHOLD = 0.282
DEFAULT_REID_THRESHOLD = 0.333
#: The hard ceiling on faces kept per track.
MAX_FACES_PER_TRACK = 5


@dataclass(frozen=True)
class TrackerConfig:
    link_threshold: float = DEFAULT_LINK_THRESHOLD  # cosine to link when boxes overlap
    reid_threshold: float = DEFAULT_REID_THRESHOLD  # cosine to link without overlap
    min_iou: float = 0.05  # boxes "overlap" from this IoU with the track's last box
    max_missed: int = 3  # sampled frames a track may go without a detection
    max_faces_per_track: int = 3
    candidates_per_track: int = 24  # faces held per running track to choose from
    crop_margin: float = 0.5  # crop = box grown by this fraction of its longer side, each way
    frame_max_side: int | None = 640  # the kept frame's longer side at most this (None: full size)
    min_detections: int = 1  # tracks with fewer detections are dropped

    def __post_init__(self) -> None:
        if not 1 <= self.max_faces_per_track <= MAX_FACES_PER_TRACK:
            raise ValueError(f"max_faces_per_track must be 1..{MAX_FACES_PER_TRACK}, got {self.max_faces_per_track}")
        if self.candidates_per_track < self.max_faces_per_track:
            raise ValueError("candidates_per_track must be at least max_faces_per_track")
        if self.max_missed < 0 or self.min_detections < 1:
            raise ValueError("max_missed must be >= 0 and min_detections >= 1")

    @classmethod
    def from_calibration(cls, calibration, **overrides) -> TrackerConfig:
        """Thresholds at the pack's false-match rates 1e-4 (link) and 1e-5 (re-identify); the
        buffalo_s defaults where there is no calibration."""
        values = {"link_threshold": threshold_at_fmr(calibration, 1e-4, DEFAULT_LINK_THRESHOLD),
                  "reid_threshold": threshold_at_fmr(calibration, 1e-5, DEFAULT_REID_THRESHOLD)}
        return cls(**(values | overrides))


@dataclass
class TrackedFace:
    """One kept face of a track: when, in which frame, and the pixels to show it."""

    timestamp_s: float
    frame_index: int
    face: Face  # box and landmarks in the full-resolution frame's coordinates
    crop: np.ndarray = field(repr=False)  # full-resolution RGB region of the frame around the face
    crop_origin: tuple[int, int] = (0, 0)  # (x, y) of the crop's top-left corner in the frame
    frame: np.ndarray | None = field(default=None, repr=False)  # the whole frame, RGB, downscaled
    frame_scale: float = 1.0  # ``frame`` pixels per full-resolution pixel

    @property
    def crop_box(self) -> tuple[float, float, float, float]:
        """The face box in ``crop`` coordinates (e.g. for ``ThumbnailStore.write(crop, crop_box, ...)``)."""
        x, y = self.crop_origin
        x1, y1, x2, y2 = self.face.box
        return (x1 - x, y1 - y, x2 - x, y2 - y)

    @property
    def frame_box(self) -> tuple[float, float, float, float]:
        """The face box in ``frame`` coordinates."""
        return tuple(v * self.frame_scale for v in self.face.box)  # type: ignore[return-value]

    @property
    def quality_key(self) -> tuple[float, float]:
        return (self.face.quality.score, self.face.det_score)


@dataclass
class Track:
    """One person's continuous appearance: first and last detection times and the kept faces."""

    track_id: int
    start_s: float
    end_s: float
    faces: list[TrackedFace]  # at most max_faces_per_track, in time order
    detections: int  # sampled frames the face was found in
    embedding: np.ndarray | None = field(default=None, repr=False)  # unit mean of all its embeddings

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def best_face(self) -> TrackedFace:
        return max(self.faces, key=lambda f: f.quality_key)

    def to_dict(self) -> dict:
        return {"track_id": self.track_id, "start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3),
                "detections": self.detections,
                "faces": [{"timestamp_s": round(f.timestamp_s, 3), "frame_index": f.frame_index, **f.face.to_dict()}
                          for f in self.faces]}


@dataclass
class _Running:
    track_id: int
    start_s: float
    last_s: float
    last_box: tuple[float, float, float, float]
    last_embedding: np.ndarray
    embedding_sum: np.ndarray
    detections: int = 1
    missed: int = 0
    candidates: list[TrackedFace] = field(default_factory=list)

    def template(self) -> np.ndarray:
        return _unit(self.embedding_sum)


class FaceTracker:
    """Feed it each sampled frame's faces in time order; it returns tracks as they end."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self._running: list[_Running] = []
        self._next_id = 0

    def update(self, frame_index: int, timestamp_s: float, faces: list[Face], frame: np.ndarray) -> list[Track]:
        """Link this frame's faces (each with an embedding) to the running tracks; returns tracks that ended."""
        cfg = self.config
        for face in faces:
            if face.embedding is None:
                raise ValueError("tracking needs face embeddings (analyze with embed=True)")
        preview, scale = (_downscale(frame, cfg.frame_max_side) if faces else (None, 1.0))

        pairs = []
        for ti, track in enumerate(self._running):
            template = track.template()
            for fi, face in enumerate(faces):
                cosine = max(float(face.embedding @ track.last_embedding), float(face.embedding @ template))
                overlap = iou(track.last_box, face.box)
                if (overlap >= cfg.min_iou and cosine >= cfg.link_threshold) or cosine >= cfg.reid_threshold:
                    pairs.append((cosine + overlap, ti, fi))
        pairs.sort(key=lambda p: -p[0])
        matched_tracks: set[int] = set()
        matched_faces: set[int] = set()
        for _, ti, fi in pairs:
            if ti in matched_tracks or fi in matched_faces:
                continue
            matched_tracks.add(ti)
            matched_faces.add(fi)
            track, face = self._running[ti], faces[fi]
            track.last_s, track.last_box, track.last_embedding = timestamp_s, face.box, face.embedding
            track.embedding_sum = track.embedding_sum + face.embedding
            track.detections += 1
            track.missed = 0
            self._add_candidate(track, self._tracked(frame_index, timestamp_s, face, frame, preview, scale))

        for ti, track in enumerate(self._running):
            if ti not in matched_tracks:
                track.missed += 1
        for fi, face in enumerate(faces):
            if fi not in matched_faces:
                track = _Running(self._next_id, timestamp_s, timestamp_s, face.box, face.embedding,
                                 np.asarray(face.embedding, np.float64).copy())
                self._next_id += 1
                track.candidates.append(self._tracked(frame_index, timestamp_s, face, frame, preview, scale))
                self._running.append(track)

        ended = [t for t in self._running if t.missed > cfg.max_missed]
        self._running = [t for t in self._running if t.missed <= cfg.max_missed]
        return self._close(ended)

    def finish(self) -> list[Track]:
        """End every running track (at the end of the video)."""
        ended, self._running = self._running, []
        return self._close(ended)

    # -- internals ----------------------------------------------------------------------

    def _tracked(self, frame_index: int, timestamp_s: float, face: Face, frame: np.ndarray,
                 preview: np.ndarray | None, scale: float) -> TrackedFace:
        height, width = frame.shape[:2]
        x1, y1, x2, y2 = face.box
        margin = self.config.crop_margin * max(x2 - x1, y2 - y1)
        left, top = max(0, int(x1 - margin)), max(0, int(y1 - margin))
        right, bottom = min(width, int(np.ceil(x2 + margin))), min(height, int(np.ceil(y2 + margin)))
        crop = np.ascontiguousarray(frame[top:bottom, left:right])
        return TrackedFace(timestamp_s, frame_index, face, crop, (left, top), preview, scale)

    def _add_candidate(self, track: _Running, candidate: TrackedFace) -> None:
        track.candidates.append(candidate)
        thin_candidates(track.candidates, self.config.candidates_per_track)

    def _close(self, ended: list[_Running]) -> list[Track]:
        tracks = []
        for run in ended:
            if run.detections < self.config.min_detections:
                continue
            faces = select_faces(run.candidates, self.config.max_faces_per_track)
            tracks.append(Track(run.track_id, run.start_s, run.last_s, faces, run.detections,
                                run.template().astype(np.float32)))
        return sorted(tracks, key=lambda t: (t.start_s, t.track_id))


def select_faces(candidates: list[TrackedFace], k: int) -> list[TrackedFace]:
    """The ``k`` best faces by quality, spread in time (at least span / (2k) apart when the
    track allows it); returned in time order."""
    if len(candidates) <= k:
        return sorted(candidates, key=lambda c: c.timestamp_s)
    times = [c.timestamp_s for c in candidates]
    min_gap = (max(times) - min(times)) / (2 * k)
    ranked = sorted(candidates, key=lambda c: c.quality_key, reverse=True)
    chosen: list[TrackedFace] = []
    for candidate in ranked:
        if all(abs(candidate.timestamp_s - c.timestamp_s) >= min_gap for c in chosen):
            chosen.append(candidate)
            if len(chosen) == k:
                break
    for candidate in ranked:  # a short track: fill up with the best of the rest
        if len(chosen) == k:
            break
        if not any(candidate is c for c in chosen):
            chosen.append(candidate)
    return sorted(chosen, key=lambda c: c.timestamp_s)


def thin_candidates(candidates: list[TrackedFace], cap: int) -> None:
    """Shrink ``candidates`` (in place) to at most ``cap``: cut their time span into ``cap``
    equal slots and keep the best face of each. The pool stays spread over the whole span and
    the best face always stays."""
    if len(candidates) <= cap:
        return
    candidates.sort(key=lambda c: c.timestamp_s)
    first, span = candidates[0].timestamp_s, candidates[-1].timestamp_s - candidates[0].timestamp_s
    if span <= 0 or cap < 2:
        kept = sorted(candidates, key=lambda c: c.quality_key, reverse=True)[:cap]
    else:
        width = span / (cap - 1)
        while True:
            slots: dict[int, TrackedFace] = {}
            for c in candidates:
                slot = int((c.timestamp_s - first) // width)
                if slot not in slots or c.quality_key > slots[slot].quality_key:
                    slots[slot] = c
            if len(slots) <= cap:
                break
            width *= 1.01  # rounding put the last face in one slot too many
        kept = list(slots.values())
    candidates[:] = sorted(kept, key=lambda c: c.timestamp_s)


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def _downscale(frame: np.ndarray, max_side: int | None) -> tuple[np.ndarray, float]:
    height, width = frame.shape[:2]
    if max_side is None or max(height, width) <= max_side:
        return frame, 1.0
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA), scale


# -- the whole thing: a video file in, tracks out ----------------------------------------------


class _Analyzer(Protocol):
    def analyze_batch(self, images: list, *, embed: bool = True) -> list[list[Face]]: ...


@dataclass
class VideoFaces:
    """The faces of one video: its metadata, its tracks (by start time) and how it was read."""

    metadata: VideoMetadata
    tracks: list[Track]
    sample_fps: float | None
    frames_decoded: int
    frames_sampled: int
    faces_detected: int
    truncated: bool  # decoding ended early (only with allow_truncated)
    elapsed_s: float

    @property
    def faces(self) -> list[TrackedFace]:
        """Every kept face of every track, in time order."""
        return sorted((f for t in self.tracks for f in t.faces), key=lambda f: f.timestamp_s)

    def track_of(self, face: TrackedFace) -> Track:
        return next(t for t in self.tracks if any(f is face for f in t.faces))

    def to_dict(self) -> dict:
        return {"metadata": self.metadata.to_dict(), "sample_fps": self.sample_fps,
                "frames_decoded": self.frames_decoded, "frames_sampled": self.frames_sampled,
                "faces_detected": self.faces_detected, "truncated": self.truncated,
                "elapsed_s": round(self.elapsed_s, 3), "tracks": [t.to_dict() for t in self.tracks]}


def faces_from_video(analyzer: _Analyzer, path: str | os.PathLike, fps: float | None = DEFAULT_SAMPLE_FPS,
                     batch: int = 16, *, config: TrackerConfig | None = None,
                     max_duration_s: float | None = DEFAULT_MAX_DURATION_S,
                     max_frame_pixels: int = DEFAULT_MAX_FRAME_PIXELS, allow_truncated: bool = False,
                     progress: Callable[[float, float], None] | None = None) -> VideoFaces:
    """Sample ``fps`` frames per second of the video, detect and embed their faces ``batch``
    frames at a time, track them and keep each track's best faces.

    ``config`` defaults to the thresholds of the analyzer's pack calibration (see
    :meth:`TrackerConfig.from_calibration`). ``progress(seconds_done, declared_duration)`` is
    called after each batch. Raises the :class:`~facesearch.errors.VideoError` s of
    :class:`~facesearch.pipeline.video.VideoReader`.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    started = time.perf_counter()
    if config is None:
        config = _default_config(analyzer)
    tracker = FaceTracker(config)
    tracks: list[Track] = []
    faces_detected = 0
    reader = VideoReader(path, fps=fps, max_duration_s=max_duration_s, max_frame_pixels=max_frame_pixels,
                         allow_truncated=allow_truncated)
    with reader:
        pending = []

        def flush() -> None:
            nonlocal faces_detected
            if not pending:
                return
            per_frame = analyzer.analyze_batch([f.pixels for f in pending])
            for frame, faces in zip(pending, per_frame):
                faces_detected += len(faces)
                tracks.extend(tracker.update(frame.index, frame.timestamp_s, faces, frame.pixels))
            if progress is not None:
                progress(pending[-1].timestamp_s, reader.metadata.duration_s)
            pending.clear()

        for frame in reader:
            pending.append(frame)
            if len(pending) >= batch:
                flush()
        flush()
    tracks.extend(tracker.finish())
    tracks.sort(key=lambda t: (t.start_s, t.track_id))
    for number, track in enumerate(tracks):
        track.track_id = number
    return VideoFaces(reader.metadata, tracks, fps, reader.frames_decoded, reader.frames_sampled, faces_detected,
                      reader.truncated, time.perf_counter() - started)


def _default_config(analyzer: object) -> TrackerConfig:
    pack = getattr(analyzer, "pack", None)
    name = getattr(pack, "name", None)
    if not name:
        return TrackerConfig()
    from facesearch.models.calibration import load_calibration

    try:
        calibration = load_calibration(name)
    except (OSError, ValueError, KeyError, TypeError):
        calibration = None
    return TrackerConfig.from_calibration(calibration) if calibration is not None else TrackerConfig()


__all__ = [
    "DEFAULT_LINK_THRESHOLD",
    "DEFAULT_REID_THRESHOLD",
    "MAX_FACES_PER_TRACK",
    "FaceTracker",
    "Track",
    "TrackedFace",
    "TrackerConfig",
    "VideoFaces",
    "faces_from_video",
    "iou",
    "select_faces",
    "thin_candidates",
]
