"""Shared fixtures: the fixture photos, one real FaceAnalyzer per session, small helpers.

Everything runs the real ONNX models of the built-in ``buffalo_s`` pack: no mocks.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facesearch import Face, FaceAnalyzer, load_image
from facesearch.models import ModelPack, load_pack
from facesearch.models.packs import LOCAL_MANIFEST
from facesearch.pipeline import primary_face

FIXTURES = Path(__file__).parent / "fixtures"
LFW = FIXTURES / "lfw"
WIDER_GROUP = FIXTURES / "wider" / "12_Group_Group_12_Group_Group_12_10.jpg"
WIDER_GROUP_BOXES = FIXTURES / "wider" / "12_Group_Group_12_Group_Group_12_10.json"
YALE_GIF = FIXTURES / "yale" / "subject01.normal"
ORL_PGM = FIXTURES / "orl" / "s1_1.pgm"

#: Two photos each of three people (see fixtures/README.md).
PEOPLE = {
    "Colin_Powell": ("Colin_Powell_0001", "Colin_Powell_0002"),
    "George_W_Bush": ("George_W_Bush_0001", "George_W_Bush_0002"),
    "Hugo_Chavez": ("Hugo_Chavez_0001", "Hugo_Chavez_0002"),
}


@pytest.fixture(scope="session")
def lfw() -> Callable[[str], Path]:
    """``lfw("Colin_Powell_0001")`` -> path of that fixture photo (checked to exist)."""

    def path(name: str) -> Path:
        p = LFW / f"{name}.jpg"
        assert p.is_file(), f"missing fixture {p}"
        return p

    return path


@pytest.fixture(scope="session")
def face_path(lfw) -> Path:
    """A clean, frontal, single-face photo."""
    return lfw("Colin_Powell_0001")


@pytest.fixture
def face_photo(face_path) -> Image.Image:
    """The same photo as a fresh RGB PIL image (tests may modify it)."""
    with Image.open(face_path) as img:
        return img.convert("RGB")


@pytest.fixture(scope="session")
def wider_group() -> tuple[Path, np.ndarray]:
    """The WIDER group photo and its ground-truth boxes as (N, 4) x1, y1, x2, y2."""
    data = json.loads(WIDER_GROUP_BOXES.read_text())
    xywh = np.asarray(data["boxes"], dtype=np.float64)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    return WIDER_GROUP, boxes


@pytest.fixture(scope="session")
def builtin_pack() -> ModelPack:
    return load_pack("buffalo_s")


@pytest.fixture
def make_local_pack(tmp_path, builtin_pack) -> Callable[..., Path]:
    """``make_local_pack(name, detector_file, recognizer_file)`` -> a directory holding copies of
    buffalo_s's two files under those names and a ``facesearch-pack.json`` pinning their
    SHA-256 (written directly: no ONNX session is opened on the copies)."""

    def make(name: str = "copied", detector_file: str | None = None,
             recognizer_file: str | None = None) -> Path:
        directory = tmp_path / name
        directory.mkdir()
        manifest = {"name": name, "licence": builtin_pack.licence, "provenance": "copied for a test"}
        for role, file_name in (("detector", detector_file), ("recognizer", recognizer_file)):
            model_file = getattr(builtin_pack, role)
            file_name = file_name or model_file.path.name
            shutil.copyfile(model_file.path, directory / file_name)
            manifest[role] = {"file": file_name, "sha256": model_file.sha256,
                              "input_size": list(model_file.input_size),
                              "mean": model_file.mean, "std": model_file.std}
            if model_file.embedding_size:
                manifest[role]["embedding_size"] = model_file.embedding_size
        (directory / LOCAL_MANIFEST).write_text(json.dumps(manifest, indent=2))
        return directory

    return make


@pytest.fixture(scope="session")
def analyzer() -> FaceAnalyzer:
    """One real analyzer (buffalo_s, ONNX Runtime) for the whole session: models load once."""
    return FaceAnalyzer()


@pytest.fixture(scope="session")
def primary(analyzer) -> Callable[..., Face]:
    """``primary(source)`` -> the image's primary face (embedded); fails if there is none."""

    def find(source) -> Face:
        image = load_image(source)
        faces = analyzer.analyze(image)
        face = primary_face(faces, image.shape)
        assert face is not None, f"no face found in {source if isinstance(source, (str, Path)) else 'image'}"
        return face

    return find


@pytest.fixture(scope="session")
def embedding_of(primary) -> Callable[..., np.ndarray]:
    """``embedding_of(source)`` -> the primary face's embedding."""

    def embed(source) -> np.ndarray:
        face = primary(source)
        assert face.embedding is not None
        return face.embedding

    return embed


@pytest.fixture
def two_people(tmp_path, lfw):
    """A 600x600 photo: Powell large in the centre, Bush small in the top-left corner."""
    canvas = Image.new("RGB", (600, 600), (110, 110, 110))
    with Image.open(lfw("Colin_Powell_0001")) as big, Image.open(lfw("George_W_Bush_0001")) as small:
        canvas.paste(big.convert("RGB").resize((300, 300), Image.Resampling.BICUBIC), (150, 150))
        canvas.paste(small.convert("RGB"), (0, 0))
    path = tmp_path / "two_people.png"
    canvas.save(path)
    return path


@pytest.fixture
def no_face_path(tmp_path) -> Path:
    """A plain colour gradient: a valid photo with no face in it."""
    ramp = np.linspace(0, 255, 200, dtype=np.float64)
    pixels = np.stack(np.broadcast_arrays(ramp[None, :], ramp[:, None], 128.0), axis=-1)
    path = tmp_path / "gradient.png"
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
