"""FaceAnalyzer: image in, faces out (box, landmarks, quality, embedding).

Models are opened once per process and reused; ``analyze_batch`` detects across images
in batches and embeds all their faces in batches, which is where a CPU gains most on
photos with many faces.

Photos are looked at in working resolution (:func:`open_photo`); faces are reported in the
original's coordinates, and a face too small in working resolution to fill the 112-px
crop is aligned from the full-resolution pixels, decoded again for that photo alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from facesearch.errors import NoFaceError
from facesearch.models import ModelPack, load_pack, open_session
from facesearch.pipeline.align import align_face
from facesearch.pipeline.detect import Detections, DetectorConfig, ScrfdDetector
from facesearch.pipeline.embed import ArcFaceEmbedder
from facesearch.pipeline.imageio import ImageSource, Photo, open_photo
from facesearch.pipeline.quality import FaceQuality, assess_quality

#: A photo whose best face scores below this is also tried turned (sideways faces score low).
TURN_BELOW_SCORE = 0.7
#: A turned photo is kept only if its best face scores this much above the upright one's.
TURN_MARGIN = 0.1

#: A face narrower than this in working resolution is aligned from full resolution.
ALIGN_MIN_PX = 112.0


@dataclass
class Face:
    """One face found in an image, in that image's (upright) pixel coordinates."""

    index: int  # rank in the image, by detector score
    box: tuple[float, float, float, float]  # x1, y1, x2, y2
    landmarks: np.ndarray  # (5, 2)
    det_score: float
    quality: FaceQuality
    embedding: np.ndarray | None = field(default=None, repr=False)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    def similarity(self, other: Face) -> float:
        if self.embedding is None or other.embedding is None:
            raise ValueError("both faces need embeddings")
        return float(np.dot(self.embedding, other.embedding))

    def to_dict(self, with_embedding: bool = False) -> dict:
        out = {
            "index": self.index,
            "box": [round(float(v), 1) for v in self.box],
            "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in self.landmarks],
            "det_score": round(self.det_score, 4),
            "quality": self.quality.to_dict(),
        }
        if with_embedding and self.embedding is not None:
            out["embedding"] = [float(v) for v in self.embedding]
        return out


@dataclass(frozen=True)
class AnalyzerConfig:
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    flip_augment: bool = False
    embed_batch_size: int = 32
    threads: int | None = None
    providers: tuple[str, ...] | None = None
    runtime: str | None = None  # "onnxruntime" | "openvino" | "auto" (default: FACESEARCH_RUNTIME)
    precision: str | None = None  # OpenVINO: "auto" | "bf16" | "fp32" (default: FACESEARCH_PRECISION)
    # A photo with no face is looked at again turned 90, 180 and 270 degrees (scans and phone
    # pictures saved sideways without EXIF): three quick base-view passes, and one full pass of the
    # best turn, only for photos with no face, a weak best face or faces lying on their side.
    rotate_retry: bool = True


class FaceAnalyzer:
    """Detect, align, assess and embed every face of an image."""

    def __init__(self, pack: ModelPack | str | None = None, config: AnalyzerConfig | None = None,
                 **overrides) -> None:
        self.config = replace(config or AnalyzerConfig(), **overrides)
        self.pack = pack if isinstance(pack, ModelPack) else load_pack(pack, verify=False)
        providers = list(self.config.providers) if self.config.providers else None

        def session(model_file, byte_input: tuple[float, float] | None = None):
            return open_session(model_file.path, verify_sha256=model_file.sha256, providers=providers,
                                threads=self.config.threads, runtime=self.config.runtime,
                                precision=self.config.precision, byte_input=byte_input)

        det, rec = self.pack.detector, self.pack.recognizer
        # The detector's views are handed over as bytes where the runtime normalises them itself.
        self.detector = ScrfdDetector(session(det, (det.mean, det.std)), det.mean, det.std, self.config.detector)
        self.embedder = ArcFaceEmbedder(session(rec), rec.mean, rec.std,
                                        self.config.embed_batch_size, self.config.flip_augment)

    # -- whole pipeline -----------------------------------------------------------------

    def analyze(self, image: ImageSource, *, embed: bool = True) -> list[Face]:
        return self.analyze_batch([image], embed=embed)[0]

    def analyze_batch(self, images: list[ImageSource], *, embed: bool = True) -> list[list[Face]]:
        return self.analyze_photos([open_photo(img) for img in images], embed=embed)

    def analyze_photos(self, photos: list[Photo], *, embed: bool = True) -> list[list[Face]]:
        """Faces of each photo, in its original's pixel coordinates.

        A photo where no face is found upright is tried turned 90, 180 and 270 degrees; if a turn
        shows a face, the photo is turned upright *in place* (``photo.rotation`` says by how much)
        and its faces are in the turned photo's coordinates, so crops made from it are upright."""
        detections = self.detector.detect_batch([photo.pixels for photo in photos])
        if self.config.rotate_retry:
            for i, dets in enumerate(detections):
                detections[i] = self._turn_upright(photos[i], dets)
        results: list[list[Face]] = []
        crops: list[np.ndarray] = []
        for photo, dets in zip(photos, detections):
            sx, sy = photo.scale
            full = dets.scaled(sx, sy)
            if photo.reduced and len(dets) and float(np.min(dets.boxes[:, 2:] - dets.boxes[:, :2])) < ALIGN_MIN_PX:
                source, landmarks = photo.full_pixels(), full.landmarks  # small faces: full detail
            else:
                source, landmarks = photo.pixels, dets.landmarks
            results.append(self._assess(source, full, landmarks, crops))
            del source
        if embed and crops:
            self._embed_into(results, crops)
        return results

    def _turn_upright(self, photo: Photo, dets: Detections) -> Detections:
        """Detections of the photo upright, turning it in place when it is sideways or upside down.

        Looked at again only when no face was found, the best face is weak (a sideways face is often
        found weakly, with made-up landmarks) or the faces' eye lines say they lie on their side:
        then the three turns are tried (three more detector passes) and the orientation whose best
        face is the most confident wins, by a margin over the upright one."""
        best_upright = float(dets.scores.max()) if len(dets) else 0.0
        if len(dets) and best_upright >= TURN_BELOW_SCORE and upright_turn(dets) == 0:
            return dets
        # A quick look at each turn (the base view only: three small passes, not three full
        # ones with native views of big photos), then a full look at the most promising turn.
        turns = [photo.turned(degrees) for degrees in (90, 180, 270)]
        glance = self.detector.detect_batch([turn.pixels for turn in turns], base_view_only=True)
        best = max(range(3), key=lambda i: float(glance[i].scores.max()) if len(glance[i]) else -1.0)
        if not len(glance[best]) or float(glance[best].scores.max()) < best_upright + TURN_MARGIN:
            return dets  # no turn shows a clearly better face: the photo stays as it was
        found = self.detector.detect_batch([turns[best].pixels])[0]
        if not len(found) or float(found.scores.max()) < best_upright + TURN_MARGIN:
            return dets
        photo.turn((best + 1) * 90)
        return found

    def faces_from_detections(self, pixels: list[np.ndarray], detections: list[Detections],
                              *, embed: bool = True) -> list[list[Face]]:
        """Align, assess and (batched across all images) embed detected faces."""
        crops: list[np.ndarray] = []
        results = [self._assess(image, dets, dets.landmarks, crops) for image, dets in zip(pixels, detections)]
        if embed and crops:
            self._embed_into(results, crops)
        return results

    @staticmethod
    def _assess(source: np.ndarray, dets: Detections, landmarks: np.ndarray, crops: list[np.ndarray]) -> list[Face]:
        """Faces of one image; aligned crops from ``source`` (where ``landmarks`` lie) appended to ``crops``."""
        faces = []
        for i in range(len(dets)):
            crop = align_face(source, landmarks[i])
            quality = assess_quality(float(dets.scores[i]), dets.boxes[i], dets.landmarks[i], crop)
            faces.append(Face(i, tuple(float(v) for v in dets.boxes[i]), dets.landmarks[i].copy(),
                              float(dets.scores[i]), quality))
            crops.append(crop)
        return faces

    def _embed_into(self, results: list[list[Face]], crops: list[np.ndarray]) -> None:
        embeddings = self.embedder.embed(np.stack(crops))
        flat = (face for faces in results for face in faces)
        for face, vector in zip(flat, embeddings):
            face.embedding = vector

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        return self.embedder.embed(crops)


def upright_turn(dets: Detections) -> int:
    """Degrees clockwise (0, 90, 180, 270) that would make most of these faces upright.

    Each face votes, weighted by its detector score, with the angle of its eye line (left eye to
    right eye points right in an upright face); a face tilted less than 45 degrees votes 0."""
    eyes = dets.landmarks[:, 1] - dets.landmarks[:, 0]
    angles = np.degrees(np.arctan2(eyes[:, 1], eyes[:, 0]))  # image y points down
    votes = np.zeros(4)
    for angle, score in zip(angles, dets.scores):
        votes[int(np.round(-angle / 90.0)) % 4] += float(score)
    return int(np.argmax(votes)) * 90 if votes.max() > votes[0] else 0


def primary_face(faces: list[Face], image_shape: tuple[int, ...]) -> Face | None:
    """The face a photo is 'of': largest and most central (InsightFace's rule)."""
    if not faces:
        return None
    height, width = image_shape[:2]
    centre = np.array([width / 2, height / 2])

    def weight(face: Face) -> float:
        box = np.asarray(face.box)
        offset = (box[:2] + box[2:]) / 2 - centre
        return face.width * face.height - 2.0 * float(np.sum(offset**2))

    return max(faces, key=weight)


def choose_face(faces: list[Face], image_shape: tuple[int, ...], source: str,
                face_index: int | None = None) -> tuple[Face, str]:
    """Pick the face asked for (``--face N``) or the primary one; say which rule chose it."""
    if not faces:
        raise NoFaceError(source)
    if face_index is not None:
        if not 0 <= face_index < len(faces):
            raise NoFaceError(source, f"face {face_index} requested but the image has "
                                      f"{len(faces)} face(s) (0..{len(faces) - 1})")
        return faces[face_index], f"face {face_index} as requested"
    face = primary_face(faces, image_shape)
    assert face is not None
    if len(faces) == 1:
        return face, "the only face"
    return face, (f"face {face.index} of {len(faces)}: largest and most central "
                  "(use --face N for another)")
