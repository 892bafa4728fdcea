"""The per-image pipeline: decode -> detect -> align -> assess quality -> embed.

Public surface: :class:`FaceAnalyzer`, :class:`Face`, :func:`load_image`,
:func:`primary_face`, :func:`choose_face`, :class:`AnalyzerConfig`, :class:`DetectorConfig`.
"""

from facesearch.pipeline.analyzer import AnalyzerConfig, Face, FaceAnalyzer, choose_face, primary_face
from facesearch.pipeline.detect import Detections, DetectorConfig
from facesearch.pipeline.imageio import SUPPORTED_FORMATS, load_image
from facesearch.pipeline.quality import FaceQuality

__all__ = [
    "SUPPORTED_FORMATS",
    "AnalyzerConfig",
    "DetectorConfig",
    "Detections",
    "Face",
    "FaceAnalyzer",
    "FaceQuality",
    "choose_face",
    "load_image",
    "primary_face",
]
