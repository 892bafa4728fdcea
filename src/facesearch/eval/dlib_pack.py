"""An optional second recognition pack: dlib's ResNet (128-d), for side-by-side evaluation.

The pack is dlib's own pipeline: the HOG frontal face detector built into the dlib library
(no model file), the 5-point shape predictor, ``dlib.get_face_chip`` (150x150, padding 0.25)
and ``dlib_face_recognition_resnet_model_v1``. The ``.dat`` files come from the
``face-recognition-models`` package and are pinned by SHA-256 here, as the ONNX packs are
in :mod:`facesearch.models.packs`: a file that does not hash to its pinned value is refused.

dlib is an optional extra (``pip install 'facesearch[dlib]'``, which brings the ``dlib-bin``
wheel, not a source build) and is imported only when a :class:`DlibFaceModel` is made.

Descriptors are returned L2-normalised, so a score is a cosine as with every other pack.
dlib's own rule is "same person when the Euclidean distance of the *raw* descriptors is
below 0.6"; raw descriptors have norms of about 1.3-1.6, not 1. For unit vectors
``|a - b|^2 = 2 - 2 cos``, so a distance of 0.6 between unit vectors is cosine 0.82, and
0.6 between raw vectors of norm ~1.45 is roughly 0.41 between the unit ones, cosine ~0.91.
Neither maps exactly; thresholds for this pack should be chosen on its own scores.

Nothing here touches the network.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facesearch.errors import ChecksumMismatchError, ModelError
from facesearch.models.checksums import sha256_file
from facesearch.pipeline.imageio import load_image

if TYPE_CHECKING:
    from facesearch.eval.lfw import ImageEmbeddings

PACK_NAME = "dlib_resnet"
INSTALL_HINT = "pip install 'facesearch[dlib]'"
EMBEDDING_SIZE = 128
CHIP_SIZE = 150
CHIP_PADDING = 0.25
#: HOG upsampling: 1 doubles the image first, so faces down to ~40 px are found.
HOG_UPSAMPLE = 1
#: dlib's usual same-person rule, on raw (not normalised) descriptors.
DLIB_EUCLIDEAN_THRESHOLD = 0.6
#: Second look at photos without a face: the HOG detector's threshold lowered by this much.
FALLBACK_ADJUST_THRESHOLD = -0.5
#: The fixed box (fractions of width, height: x1, y1, x2, y2) where dlib's HOG detector puts the
#: face of an LFW photo: mean of 198 detections on a 200-photo sample of the 150x150 LFW copy
#: (44.5, 49.4, 106.1, 111.0 px). LFW's faces are centred by construction, so this seeds the
#: shape predictor for the few photos where no detector fires ("centre-prior").
LFW_CENTRE_BOX = (0.297, 0.329, 0.707, 0.740)

LICENCE = (
    "Model files: public domain. Davis King, who trained them, states in the dlib-models README "
    "that 'anyone can do whatever they want with these model files as I've released them into the "
    "public domain'; the face-recognition-models 0.3.0 package that ships them carries a CC0 1.0 "
    "Universal LICENSE file and says 'licensed in the public domain or under CC0 1.0 Universal' "
    "(its PyPI 'License' field says 'MIT license', which contradicts its own LICENSE file). "
    "Training data, which has terms of its own: the ResNet was trained on ~3 million faces of "
    "7,485 identities from FaceScrub, the VGG Face dataset and images scraped from the internet; "
    "the 5-point predictor on dlib's own 7,198-face dataset; the mmod detector on dlib's face "
    "detection dataset. The dlib library is under the Boost Software License 1.0. Not used: "
    "shape_predictor_68_face_landmarks.dat from the same package, trained on iBUG 300-W, whose "
    "licence excludes commercial use."
)

PROVENANCE = (
    "dlib-models by Davis King (github.com/davisking/dlib-models), as packaged in "
    "face-recognition-models 0.3.0 (PyPI sdist, Adam Geitgey); run with the dlib-bin 20.0.1 wheel"
)

#: The manifest of this pack: what ``DlibPack`` is built from, as ``buffalo_s.json`` is for ONNX.
MANIFEST: dict[str, Any] = {
    "name": PACK_NAME,
    "description": "dlib HOG detector + 5-point landmarks + ResNet-29 face descriptor (128-d); "
                   "published LFW accuracy 99.38 % on dlib's own alignment",
    "source": "package:face_recognition_models/models",
    "detector": "dlib.get_frontal_face_detector() (HOG, built into the dlib library: no file)",
    "files": {
        "recognizer": {
            "file": "dlib_face_recognition_resnet_model_v1.dat",
            "sha256": "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
        },
        "landmarks": {
            "file": "shape_predictor_5_face_landmarks.dat",
            "sha256": "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
        },
        "cnn_detector": {
            "file": "mmod_human_face_detector.dat",
            "sha256": "4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6",
        },
    },
    "embedding_size": EMBEDDING_SIZE,
    "chip": {"size": CHIP_SIZE, "padding": CHIP_PADDING},
    "licence": LICENCE,
    "provenance": PROVENANCE,
}

Detection = tuple[float, float, float, float, float]  # x1, y1, x2, y2, score


@dataclass(frozen=True)
class DlibModelFile:
    """One ``.dat`` file of the pack, pinned by SHA-256."""

    role: str  # "recognizer" | "landmarks" | "cnn_detector"
    path: Path
    sha256: str

    def verify(self) -> None:
        """Raise :class:`ChecksumMismatchError` unless the file hashes to the pinned value."""
        if not self.path.is_file():
            raise ModelError(f"{self.path}: model file is missing ({INSTALL_HINT})")
        actual = sha256_file(self.path)
        if actual != self.sha256:
            raise ChecksumMismatchError(self.path, self.sha256, actual)


@dataclass(frozen=True)
class DlibPack:
    """The files of the dlib pack and what a user must know of them."""

    name: str
    recognizer: DlibModelFile
    landmarks: DlibModelFile
    cnn_detector: DlibModelFile
    licence: str
    provenance: str
    description: str = ""
    source: str = ""
    embedding_size: int = EMBEDDING_SIZE

    def files(self, with_cnn: bool = False) -> list[DlibModelFile]:
        return [self.recognizer, self.landmarks] + ([self.cnn_detector] if with_cnn else [])

    def verify(self, with_cnn: bool = False) -> None:
        for model_file in self.files(with_cnn):
            model_file.verify()

    def describe(self) -> dict:
        """A JSON-friendly description (paths as strings)."""
        out = asdict(self)
        for key in ("recognizer", "landmarks", "cnn_detector"):
            out[key]["path"] = str(out[key]["path"])
        return out


def models_dir() -> Path | None:
    """Where ``face-recognition-models`` keeps its ``.dat`` files, found without importing it."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def load_dlib_pack(directory: str | Path | None = None, *, verify: bool = True,
                   with_cnn: bool = False) -> DlibPack:
    """The pack, from ``directory`` (default: the installed face-recognition-models), hashes checked.

    The CNN detector's file is checked only when ``with_cnn`` is set (it is not loaded otherwise).
    """
    if directory is None:
        directory = models_dir()
        if directory is None or not directory.is_dir():
            raise ModelError(f"pack {PACK_NAME!r} needs the face-recognition-models package ({INSTALL_HINT})")
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise ModelError(f"{directory}: no such model directory")
    files = {role: DlibModelFile(role, directory / spec["file"], spec["sha256"])
             for role, spec in MANIFEST["files"].items()}
    pack = DlibPack(
        name=MANIFEST["name"],
        recognizer=files["recognizer"],
        landmarks=files["landmarks"],
        cnn_detector=files["cnn_detector"],
        licence=MANIFEST["licence"],
        provenance=MANIFEST["provenance"],
        description=MANIFEST["description"],
        source=str(directory),
        embedding_size=MANIFEST["embedding_size"],
    )
    if verify:
        pack.verify(with_cnn)
    return pack


def import_dlib():
    """``import dlib``, or a :class:`ModelError` that says how to install it."""
    try:
        import dlib
    except ImportError as exc:
        raise ModelError(f"pack {PACK_NAME!r} needs dlib, an optional extra: {INSTALL_HINT}") from exc
    return dlib


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def primary_detection(detections: list[Detection], image_shape: tuple[int, ...]) -> Detection | None:
    """The face a photo is 'of': largest and most central (as :func:`facesearch.pipeline.primary_face`)."""
    if not detections:
        return None
    height, width = image_shape[:2]
    cx, cy = width / 2, height / 2

    def weight(d: Detection) -> float:
        x1, y1, x2, y2, _ = d
        offset = ((x1 + x2) / 2 - cx) ** 2 + ((y1 + y2) / 2 - cy) ** 2
        return (x2 - x1) * (y2 - y1) - 2.0 * offset

    return max(detections, key=weight)


def centre_box(image_shape: tuple[int, ...], fractions: tuple[float, float, float, float] = LFW_CENTRE_BOX
               ) -> tuple[float, float, float, float]:
    """The fixed central box, scaled to the image (x1, y1, x2, y2 pixels)."""
    height, width = image_shape[:2]
    fx1, fy1, fx2, fy2 = fractions
    return fx1 * width, fy1 * height, fx2 * width, fy2 * height


class DlibFaceModel:
    """dlib's detector, landmarks and ResNet descriptor behind one object.

    ``detector="hog"`` (default) or ``"cnn"`` (mmod; about 0.1 s per 150x150 photo without
    upsampling and 0.5 s with it on one CPU core, 15-70x the HOG detector: for comparison only).
    """

    def __init__(self, pack: DlibPack | None = None, *, detector: str = "hog", upsample: int = HOG_UPSAMPLE,
                 verify: bool = True) -> None:
        if detector not in ("hog", "cnn"):
            raise ValueError(f"detector must be 'hog' or 'cnn', not {detector!r}")
        dlib = import_dlib()
        self.pack = pack or load_dlib_pack(verify=False)
        if verify:
            self.pack.verify(with_cnn=detector == "cnn")
        self.name = self.pack.name
        self.dim = self.pack.embedding_size
        self.detector_kind = detector
        self.upsample = int(upsample)
        self._dlib = dlib
        self._hog = dlib.get_frontal_face_detector()
        self._cnn = (dlib.cnn_face_detection_model_v1(str(self.pack.cnn_detector.path))
                     if detector == "cnn" else None)
        self._shape = dlib.shape_predictor(str(self.pack.landmarks.path))
        self._recognizer = dlib.face_recognition_model_v1(str(self.pack.recognizer.path))

    # -- detection ------------------------------------------------------------------------

    def detect(self, image_rgb: np.ndarray, *, adjust_threshold: float = 0.0) -> list[Detection]:
        """Faces as ``(x1, y1, x2, y2, score)`` in pixels, best score first.

        Boxes are dlib's, unclipped (they may reach past the image edge), with x2/y2 exclusive.
        HOG scores are SVM margins (0 is dlib's default threshold; ``adjust_threshold`` moves
        it); CNN scores are mmod confidences, and ``adjust_threshold`` does not apply to them.
        """
        image = load_image(image_rgb)
        if self._cnn is not None:
            found = [(d.rect, float(d.confidence)) for d in self._cnn(image, self.upsample)]
        else:
            rects, scores, _ = self._hog.run(image, self.upsample, float(adjust_threshold))
            found = list(zip(rects, (float(s) for s in scores)))
        out = [(float(r.left()), float(r.top()), float(r.right() + 1), float(r.bottom() + 1), s) for r, s in found]
        return sorted(out, key=lambda d: -d[4])

    def _rect(self, box: tuple[float, ...]):
        x1, y1, x2, y2 = (int(round(v)) for v in box[:4])
        return self._dlib.rectangle(x1, y1, x2 - 1, y2 - 1)

    def landmarks(self, image_rgb: np.ndarray, box: tuple[float, ...]) -> np.ndarray:
        """The 5 points of dlib's shape predictor in ``box``: (5, 2) float32, x then y."""
        shape = self._shape(load_image(image_rgb), self._rect(box))
        return np.array([[p.x, p.y] for p in shape.parts()], np.float32)

    def chip(self, image_rgb: np.ndarray, box: tuple[float, ...]) -> np.ndarray:
        """The aligned 150x150 RGB face chip for the face in ``box`` (dlib's alignment)."""
        image = load_image(image_rgb)
        shape = self._shape(image, self._rect(box))
        return self._dlib.get_face_chip(image, shape, CHIP_SIZE, CHIP_PADDING)

    # -- embedding ------------------------------------------------------------------------

    def raw_descriptors(self, chips: list[np.ndarray]) -> np.ndarray:
        """dlib's raw 128-d descriptors (not unit length) of aligned 150x150 chips: (N, 128) float32."""
        if not chips:
            return np.zeros((0, self.dim), np.float32)
        batch = [np.ascontiguousarray(c, dtype=np.uint8) for c in chips]
        return np.array(self._recognizer.compute_face_descriptor(batch, 0), np.float32)

    def embed_chips(self, chips: list[np.ndarray]) -> np.ndarray:
        """Unit-length descriptors of aligned chips: (N, 128) float32."""
        return _normalise(self.raw_descriptors(chips))

    def embed(self, image_rgb: np.ndarray) -> np.ndarray | None:
        """The unit-length embedding of the photo's primary face, or None when no face is found."""
        image = load_image(image_rgb)
        face = primary_detection(self.detect(image), image.shape)
        if face is None:
            return None
        return self.embed_chips([self.chip(image, face)])[0]

    def embed_primary_faces(self, image_dir: Path, rel_paths: list[str], progress: bool = True,
                            batch_size: int = 32) -> ImageEmbeddings:
        """Embed the primary face of each image, with fallbacks for photos without one.

        Like :func:`facesearch.eval.lfw.embed_lfw_images`: ``how`` is ``detected`` (default
        threshold), ``low-threshold`` (HOG threshold lowered by 0.5) or ``centre-prior`` (the fixed
        LFW box :data:`LFW_CENTRE_BOX` seeds the shape predictor; LFW's faces are centred by
        construction). ``flipped`` is the normalised sum of the chip's and its mirror's descriptors.
        """
        from tqdm import tqdm

        from facesearch.eval.lfw import ImageEmbeddings

        start = time.perf_counter()
        image_dir = Path(image_dir)
        n = len(rel_paths)
        how = ["none"] * n
        plain = np.zeros((n, self.dim), np.float32)
        flipped = np.zeros((n, self.dim), np.float32)
        bar = tqdm(total=n, desc=f"{self.name}", unit="img", disable=not progress)
        for lo in range(0, n, batch_size):
            idx, chips = [], []
            for i in range(lo, min(n, lo + batch_size)):
                image = load_image(image_dir / rel_paths[i])
                box, how[i] = self._primary_box(image)
                idx.append(i)
                chips.append(self.chip(image, box))
            mirrors = [np.ascontiguousarray(c[:, ::-1]) for c in chips]
            raw = self.raw_descriptors(chips + mirrors)
            raw, raw_mirror = raw[: len(chips)], raw[len(chips):]
            plain[idx] = _normalise(raw)
            flipped[idx] = _normalise(raw + raw_mirror)
            bar.update(len(idx))
        bar.close()
        return ImageEmbeddings(list(rel_paths), plain, flipped, how, time.perf_counter() - start)

    def _primary_box(self, image: np.ndarray) -> tuple[tuple[float, float, float, float], str]:
        face = primary_detection(self.detect(image), image.shape)
        if face is not None:
            return face[:4], "detected"
        if self._cnn is None:
            face = primary_detection(self.detect(image, adjust_threshold=FALLBACK_ADJUST_THRESHOLD), image.shape)
            if face is not None:
                return face[:4], "low-threshold"
        return centre_box(image.shape), "centre-prior"
