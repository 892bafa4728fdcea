"""facesearch: a self-hosted, accountable face search engine.

Data flows one way: image -> faces -> embeddings -> index/catalog -> results.
Each stage lives in its own package:

- ``facesearch.models``   model packs (manifest, SHA-256 pinning, ONNX Runtime sessions)
- ``facesearch.pipeline`` image decoding, detection, alignment, quality, embedding
- ``facesearch.eval``     accuracy protocols over real datasets (LFW view 2, ...)
- ``facesearch.cli``      the ``facesearch`` command, a thin shell over the packages above
"""

from facesearch.errors import FacesearchError
from facesearch.pipeline import Face, FaceAnalyzer, load_image

__all__ = ["Face", "FaceAnalyzer", "FacesearchError", "load_image"]
__version__ = "0.1.0"
