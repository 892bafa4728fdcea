"""The per-image pipeline: decode -> detect -> align -> assess quality -> embed.

Public surface: :class:`FaceAnalyzer`, :class:`Face`, :func:`load_image`, :func:`open_photo`
(a :class:`Photo` at working resolution, memory bounded),
:func:`primary_face`, :func:`choose_face`, :class:`AnalyzerConfig`, :class:`DetectorConfig`.
"""

from facesearch.pipeline.analyzer import AnalyzerConfig, Face, FaceAnalyzer, choose_face, primary_face
from facesearch.pipeline.detect import Detections, DetectorConfig
from facesearch.pipeline.imageio import SUPPORTED_FORMATS, Photo, load_image, open_photo
from facesearch.pipeline.quality import FaceQuality

__all__ = [
    "SUPPORTED_FORMATS",
    "AnalyzerConfig",
    "DetectorConfig",
    "Detections",
    "Face",
    "FaceAnalyzer",
    "FaceQuality",
    "Photo",
    "choose_face",
    "load_image",
    "open_photo",
    "primary_face",
]
