"""SCRFD face detection: letterboxing, multi-scale / tiled views, anchor decoding, NMS.

A photo is looked at through one or more *views*: the whole photo letterboxed into the
base input (finds large faces), plus, for big photos, the photo at native resolution
(one padded view up to ``native_max_side``, overlapping tiles beyond it) so that the
small faces of crowd photos survive. Views of the same input shape run batched.

Memory is bounded by design: a view is only a recipe until its batch runs (tiles are cut
and normalised one batch at a time), a batch holds at most ``batch_size`` base-sized
inputs' worth of pixels (so two 1280-px tiles, not eight), and the bordered second look
shrinks the photo before framing it, so a 1x65000 strip costs no more than a portrait.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    import onnxruntime as ort

STRIDES = (8, 16, 32)
#: Frames up to this size are drawn at full size (the exact classic letterbox); larger
#: ones are drawn at view scale so that memory stays bounded (48 MB at most here).
_FRAME_IN_FULL_MAX_PIXELS = 16_000_000
ANCHORS_PER_CELL = 2


@dataclass(frozen=True)
class DetectorConfig:
    """How hard to look for faces. The defaults suit both portraits and crowd photos."""

    score_threshold: float = 0.5
    nms_iou: float = 0.4
    min_face_px: float = 8.0
    base_size: int = 640
    #: Photos whose longer side exceeds ``base_size * multiscale_above`` get a native view.
    multiscale_above: float = 1.25
    native_max_side: int = 1920
    tile_size: int = 1280
    tile_overlap: int = 192
    #: Views per batch at ``base_size``; bigger views run in proportionally smaller batches.
    batch_size: int = 8
    #: Border (fraction of the long side) added for a second look at photos with no face.
    border_retry: float = 0.25


@dataclass
class Detections:
    """Faces found in one image, in that image's pixel coordinates, best first."""

    boxes: np.ndarray  # (N, 4) x1, y1, x2, y2
    scores: np.ndarray  # (N,)
    landmarks: np.ndarray  # (N, 5, 2): left eye, right eye, nose, left mouth, right mouth

    def __len__(self) -> int:
        return len(self.scores)

    def scaled(self, sx: float, sy: float) -> Detections:
        """The same detections in an image ``sx`` x ``sy`` times as large."""
        if sx == 1.0 and sy == 1.0:
            return self
        factor = np.array([sx, sy], np.float32)
        return Detections(self.boxes * np.tile(factor, 2), self.scores, self.landmarks * factor)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))


@dataclass
class _View:
    image_index: int
    shape: tuple[int, int]  # (H, W) of the network input
    canvas: Callable[[], np.ndarray]  # builds the (H, W, 3) uint8 input when its batch runs
    scale: float  # view pixels per image pixel
    offset: tuple[int, int]  # (x, y) of the view's origin in the image
    # Internal tile edges (image coords); detections touching them are cut faces.
    inner_edges: tuple[float | None, float | None, float | None, float | None] = (None,) * 4


class ScrfdDetector:
    """Run an SCRFD-with-keypoints ONNX model on RGB uint8 images."""

    def __init__(self, session: ort.InferenceSession, mean: float = 127.5, std: float = 128.0,
                 config: DetectorConfig | None = None) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name
        self.mean = mean
        self.std = std
        self.config = config or DetectorConfig()
        self._anchor_cache: dict[tuple[int, int, int], np.ndarray] = {}
        self._pad_multiple = 128 if getattr(session, "specialises_shapes", False) else 32
        # A session that normalises uint8 images itself (OpenVINO) gets the views as bytes.
        self._bytes = getattr(session, "byte_input", None) == (mean, std)
        # (v - mean) / std of each of the 256 byte values, by the very operations applied to a whole
        # view before: looking values up gives bitwise the same blob in a third of the time.
        self._lut = np.empty(256, np.float32)
        self._normalise(np.arange(256, dtype=np.uint8), self._lut)

    # -- public -----------------------------------------------------------------------

    def detect(self, image: np.ndarray) -> Detections:
        return self.detect_batch([image])[0]

    def detect_batch(self, images: list[np.ndarray], *, base_view_only: bool = False) -> list[Detections]:
        """Faces of each image. ``base_view_only``: only the letterboxed base view (a quick look,
        e.g. to judge which way up a photo is), not the native-resolution views of big photos."""
        views = [view for i, img in enumerate(images)
                 for view in (self._views(i, img)[:1] if base_view_only else self._views(i, img))]
        results = self._run(views, len(images))
        # A face that fills the whole frame (passport photos, tight crops) is missed by a
        # detector trained on faces with context: look again with a border around it.
        retry = [i for i, dets in enumerate(results) if len(dets) == 0]
        if retry and self.config.border_retry > 0:
            again = self._run([self._bordered_view(i, images[i]) for i in retry], len(images))
            for i in retry:
                results[i] = again[i]
        return results

    def _run(self, views: list[_View], n_images: int) -> list[Detections]:
        raw: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in range(n_images)]
        for batch in self._batches(views):
            height, width = batch[0].shape
            if self._bytes:
                blobs = np.empty((len(batch), height, width, 3), np.uint8)
                for j, view in enumerate(batch):
                    blobs[j] = _as_bytes(view.canvas())
            else:
                blobs = np.empty((len(batch), 3, height, width), np.float32)
                for j, view in enumerate(batch):
                    self._normalise_into(blobs[j], view.canvas())
            outputs = self.session.run(None, {self.input_name: blobs})
            for j, view in enumerate(batch):
                raw[view.image_index].append(self._decode(outputs, j, view))
        return [self._merge(parts) for parts in raw]

    # -- views --------------------------------------------------------------------------

    def _views(self, index: int, image: np.ndarray) -> list[_View]:
        cfg = self.config
        height, width = image.shape[:2]
        views = [self._letterbox_view(index, image, cfg.base_size)]
        longest = max(height, width)
        if longest <= cfg.base_size * cfg.multiscale_above:
            return views
        if longest <= cfg.native_max_side:
            views.append(self._padded_view(index, image, (0, 0)))
            return views
        step = cfg.tile_size - cfg.tile_overlap
        xs = _tile_starts(width, cfg.tile_size, step)
        ys = _tile_starts(height, cfg.tile_size, step)
        for y in ys:
            for x in xs:
                tw, th = min(cfg.tile_size, width - x), min(cfg.tile_size, height - y)
                edges = (
                    float(x) if x > 0 else None,
                    float(y) if y > 0 else None,
                    float(x + tw) if x + tw < width else None,
                    float(y + th) if y + th < height else None,
                )
                view = self._padded_view(index, image, (x, y), (tw, th))
                view.inner_edges = edges
                views.append(view)
        return views

    def _letterbox_view(self, index: int, image: np.ndarray, size: int) -> _View:
        return self._framed_view(index, image, size, 0)

    def _bordered_view(self, index: int, image: np.ndarray) -> _View:
        border = int(round(max(image.shape[:2]) * self.config.border_retry))
        return self._framed_view(index, image, self.config.base_size, border)

    def _framed_view(self, index: int, image: np.ndarray, size: int, border: int) -> _View:
        """The image inside a black frame of ``border`` px, letterboxed into ``size``².

        The photo is shrunk first and the frame drawn at view scale, so memory never
        depends on the photo's size (framing a 1x65000 strip at full size took 9.5 GB).
        """
        height, width = image.shape[:2]
        framed_h, framed_w = height + 2 * border, width + 2 * border
        # Floor, as InsightFace does: rounding shifts landmarks and small-face embeddings.
        ratio = framed_h / framed_w
        if ratio > 1.0:
            new_h, new_w = size, int(size / ratio)
        else:
            new_w, new_h = size, int(size * ratio)
        new_w, new_h = max(new_w, 1), max(new_h, 1)
        scale = new_h / framed_h

        def canvas() -> np.ndarray:
            out = np.zeros((size, size, 3), np.uint8)
            if framed_h * framed_w <= _FRAME_IN_FULL_MAX_PIXELS:
                # Small enough to frame at full size: exactly the classic letterbox.
                framed = image if border == 0 else cv2.copyMakeBorder(
                    image, border, border, border, border, cv2.BORDER_CONSTANT, value=0)
                out[:new_h, :new_w] = cv2.resize(framed, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
                return out
            inner_w, inner_h = max(1, int(width * scale)), max(1, int(height * scale))
            pad_x, pad_y = min(int(border * scale), size - inner_w), min(int(border * scale), size - inner_h)
            out[pad_y:pad_y + inner_h, pad_x:pad_x + inner_w] = cv2.resize(
                image, (inner_w, inner_h), interpolation=cv2.INTER_LINEAR)
            return out

        return _View(index, (size, size), canvas, scale, (-border, -border))

    def _padded_view(self, index: int, image: np.ndarray, offset: tuple[int, int],
                     size: tuple[int, int] | None = None) -> _View:
        """The ``size`` (w, h) region of ``image`` at ``offset``, at native scale, padded to 32
        (to 128 on a runtime that prepares kernels per input shape: fewer distinct shapes)."""
        x, y = offset
        width, height = size or (image.shape[1], image.shape[0])
        pad_h, pad_w = _ceil_to(height, self._pad_multiple), _ceil_to(width, self._pad_multiple)

        def canvas() -> np.ndarray:
            out = np.zeros((pad_h, pad_w, 3), np.uint8)
            out[:height, :width] = image[y:y + height, x:x + width]
            return out

        return _View(index, (pad_h, pad_w), canvas, 1.0, offset)

    def _normalise(self, values: np.ndarray, out: np.ndarray) -> None:
        np.subtract(values, self.mean, out=out, casting="unsafe")
        np.divide(out, self.std, out=out)

    def _normalise_into(self, out: np.ndarray, canvas: np.ndarray) -> None:
        """``(canvas - mean) / std`` as (3, H, W) float32, written straight into the batch: no
        float copy, transposed copy or stacking of each view (they cost 15 % of an ingest), and
        each channel plane looked up in the byte table (contiguous reads and writes)."""
        if canvas.dtype != np.uint8 or canvas.ndim != 3 or canvas.shape[2] != 3:
            self._normalise(canvas.transpose(2, 0, 1), out)
            return
        for channel, plane in enumerate(cv2.split(canvas)):
            cv2.LUT(plane, self._lut, dst=out[channel])

    def _batches(self, views: list[_View]) -> Iterator[list[_View]]:
        by_shape: dict[tuple[int, int], list[_View]] = {}
        for view in views:
            by_shape.setdefault(view.shape, []).append(view)
        budget = self.config.batch_size * self.config.base_size ** 2
        for (height, width), group in by_shape.items():
            per_batch = max(1, budget // (height * width))
            for start in range(0, len(group), per_batch):
                yield group[start:start + per_batch]

    # -- decoding -------------------------------------------------------------------------

    def _anchors(self, height: int, width: int, stride: int) -> np.ndarray:
        key = (height, width, stride)
        if key not in self._anchor_cache:
            centres = np.stack(np.mgrid[:height, :width][::-1], axis=-1).astype(np.float32)
            centres = (centres * stride).reshape(-1, 2)
            centres = np.repeat(centres, ANCHORS_PER_CELL, axis=0)
            self._anchor_cache[key] = centres
        return self._anchor_cache[key]

    def _decode(self, outputs: list[np.ndarray], j: int, view: _View):
        in_h, in_w = view.shape
        n_strides = len(STRIDES)
        boxes, scores, kpss = [], [], []
        for k, stride in enumerate(STRIDES):
            score = outputs[k][j].reshape(-1)
            keep = np.where(score >= self.config.score_threshold)[0]
            if keep.size == 0:
                continue
            anchors = self._anchors(in_h // stride, in_w // stride, stride)[keep]
            dist = outputs[k + n_strides][j][keep] * stride
            kps = outputs[k + 2 * n_strides][j][keep] * stride
            box = np.concatenate([anchors - dist[:, :2], anchors + dist[:, 2:]], axis=1)
            kp = kps.reshape(-1, 5, 2) + anchors[:, None, :]
            boxes.append(box)
            scores.append(score[keep])
            kpss.append(kp)
        if not boxes:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
        box = np.concatenate(boxes) / view.scale
        kp = np.concatenate(kpss) / view.scale
        ox, oy = view.offset
        box += np.array([ox, oy, ox, oy], np.float32)
        kp += np.array([ox, oy], np.float32)
        score = np.concatenate(scores)
        keep = _away_from_cuts(box, view.inner_edges)
        return box[keep], score[keep], kp[keep]

    def _merge(self, parts) -> Detections:
        if not parts:
            return Detections.empty()
        boxes = np.concatenate([p[0] for p in parts]).astype(np.float32)
        scores = np.concatenate([p[1] for p in parts]).astype(np.float32)
        kps = np.concatenate([p[2] for p in parts]).astype(np.float32)
        if len(scores) == 0:
            return Detections.empty()
        sizes = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        keep = sizes >= self.config.min_face_px
        boxes, scores, kps = boxes[keep], scores[keep], kps[keep]
        order = nms(boxes, scores, self.config.nms_iou)
        return Detections(boxes[order], scores[order], kps[order])


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best score first."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1 + 1) * np.maximum(0.0, yy2 - yy1 + 1)
        iou = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[1:][iou <= iou_threshold]
    return np.array(keep, dtype=np.int64)


def _as_bytes(canvas: np.ndarray) -> np.ndarray:
    if canvas.dtype != np.uint8 or canvas.ndim != 3 or canvas.shape[2] != 3:
        raise ValueError(f"the detector takes RGB uint8 images, not {canvas.dtype} of shape {canvas.shape}")
    return canvas


def _ceil_to(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def _tile_starts(length: int, tile: int, step: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def _away_from_cuts(boxes: np.ndarray, edges, margin: float = 2.0) -> np.ndarray:
    """Mask of boxes that do not touch an internal tile edge (those faces are cut)."""
    keep = np.ones(len(boxes), dtype=bool)
    left, top, right, bottom = edges
    if left is not None:
        keep &= boxes[:, 0] > left + margin
    if top is not None:
        keep &= boxes[:, 1] > top + margin
    if right is not None:
        keep &= boxes[:, 2] < right - margin
    if bottom is not None:
        keep &= boxes[:, 3] < bottom - margin
    return keep
