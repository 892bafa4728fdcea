"""1:1 verification: are the chosen faces of two photos the same person?"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from facesearch.models.calibration import Calibration
from facesearch.pipeline import Face, FaceAnalyzer, choose_face, open_photo
from facesearch.pipeline.imageio import ImageSource
from facesearch.search.results import ProbeFace
from facesearch.search.scoring import rate_words

#: Used only for a pack without calibration; said so wherever it is used.
UNCALIBRATED_VERIFY_THRESHOLD = 0.4


@dataclass(frozen=True)
class VerifyResult:
    similarity: float
    same_person: bool
    threshold: float
    threshold_rule: str
    false_match_rate: float | None
    false_match_extrapolated: bool
    false_match_words: str
    faces: tuple[ProbeFace, ProbeFace]
    pack: str

    def to_dict(self) -> dict:
        return asdict(self)


def pick_face(analyzer: FaceAnalyzer, image: ImageSource, face_index: int | None,
              label: str) -> tuple[Face, ProbeFace]:
    """Detect and embed every face of ``image``, then take the one asked for (or the primary one)."""
    photo = open_photo(image)
    faces = analyzer.analyze_photos([photo])[0]
    face, rule = choose_face(faces, photo.shape, label, face_index)
    # Boxes fit the picture as sent, also when a sideways probe was turned to find its face.
    return face, ProbeFace(label, len(faces), face.index, rule, photo.box_as_given(face.box), face.quality.score,
                           face.quality.issues, face.quality.usable, tuple(photo.box_as_given(f.box) for f in faces),
                           photo.rotation)


def verify_threshold(calibration: Calibration | None, override: float | None = None) -> tuple[float, str]:
    if override is not None:
        return override, f"threshold {override:.3f} given by the caller (command line or API)"
    if calibration is None:
        return UNCALIBRATED_VERIFY_THRESHOLD, (
            f"threshold {UNCALIBRATED_VERIFY_THRESHOLD:.3f}: this pack is uncalibrated, a generic ArcFace value; "
            "run `facesearch eval lfw --calibration-out` to measure one")
    return calibration.verify_threshold, calibration.describe_threshold()


def verify_faces(analyzer: FaceAnalyzer, calibration: Calibration | None, image_a: ImageSource,
                 image_b: ImageSource, *, face_a: int | None = None, face_b: int | None = None,
                 threshold: float | None = None, names: tuple[str, str] | None = None) -> VerifyResult:
    chosen, embeddings = [], []
    for k, (image, pick) in enumerate(((image_a, face_a), (image_b, face_b))):
        face, info = pick_face(analyzer, image, pick, names[k] if names else str(image))
        chosen.append(info)
        embeddings.append(face.embedding)
    similarity = float(embeddings[0] @ embeddings[1])
    limit, rule = verify_threshold(calibration, threshold)
    rate, extrapolated = calibration.false_match_rate(similarity) if calibration else (None, False)
    words = rate_words(rate, extrapolated) if rate is not None else "false-match rate unknown (uncalibrated pack)"
    return VerifyResult(round(similarity, 5), similarity >= limit, limit, rule, rate, extrapolated, words,
                        (chosen[0], chosen[1]), analyzer.pack.name)
