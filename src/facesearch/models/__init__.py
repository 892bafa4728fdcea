"""Model packs and the ONNX Runtime sessions that run them.

Public surface: :func:`load_pack`, :func:`available_packs`, :func:`pin_local_pack`,
:class:`ModelPack`, :class:`ModelFile`, :func:`open_session`.
"""

from facesearch.models.packs import (
    DEFAULT_PACK,
    ModelFile,
    ModelPack,
    available_packs,
    load_pack,
    pin_local_pack,
    sha256_file,
)
from facesearch.models.runtime import default_providers, open_session

__all__ = [
    "DEFAULT_PACK",
    "ModelFile",
    "ModelPack",
    "available_packs",
    "default_providers",
    "load_pack",
    "open_session",
    "pin_local_pack",
    "sha256_file",
]
