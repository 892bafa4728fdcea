"""The optional dlib pack (dlib's ResNet): pinning, tamper refusal, detection, recognition.

dlib and face-recognition-models are an optional extra (``pip install 'facesearch[dlib]'``):
the tests that need them are skipped where they are not installed. The install hint itself
is tested everywhere.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facesearch import load_image
from facesearch.errors import ChecksumMismatchError, ModelError
from facesearch.eval.dlib_pack import (
    EMBEDDING_SIZE,
    INSTALL_HINT,
    MANIFEST,
    DlibFaceModel,
    import_dlib,
    load_dlib_pack,
    models_dir,
)
from facesearch.models import sha256_file
from tests.conftest import LFW, PEOPLE


@pytest.fixture(scope="module")
def dat_dir() -> Path:
    directory = models_dir()
    if directory is None or not directory.is_dir():
        pytest.skip(f"face-recognition-models is not installed ({INSTALL_HINT})")
    return directory


@pytest.fixture(scope="module")
def model(dat_dir) -> DlibFaceModel:
    pytest.importorskip("dlib", reason=f"dlib is an optional extra ({INSTALL_HINT})")
    return DlibFaceModel()


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _copy_pack(src: Path, dst: Path, roles=("recognizer", "landmarks")) -> Path:
    dst.mkdir()
    for role in roles:
        name = MANIFEST["files"][role]["file"]
        shutil.copyfile(src / name, dst / name)
    return dst


# -- without dlib ----------------------------------------------------------------------


def test_missing_dlib_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # makes `import dlib` raise ImportError
    with pytest.raises(ModelError, match=r"pip install 'facesearch\[dlib\]'"):
        import_dlib()


def test_manifest_pins_every_file_and_states_licence():
    assert MANIFEST["name"] == "dlib_resnet"
    assert MANIFEST["embedding_size"] == EMBEDDING_SIZE == 128
    for spec in MANIFEST["files"].values():
        assert spec["file"].endswith(".dat") and len(spec["sha256"]) == 64
    assert "public domain" in MANIFEST["licence"] and "CC0" in MANIFEST["licence"]


# -- the pinned files ------------------------------------------------------------------


def test_installed_pack_verifies(dat_dir):
    pack = load_dlib_pack(with_cnn=True)
    assert pack.name == "dlib_resnet"
    for model_file in pack.files(with_cnn=True):
        assert sha256_file(model_file.path) == model_file.sha256


def test_tampered_recognizer_is_refused(dat_dir, tmp_path):
    copy = _copy_pack(dat_dir, tmp_path / "pack")
    target = copy / MANIFEST["files"]["recognizer"]["file"]
    load_dlib_pack(copy)  # an untouched copy loads
    _flip_byte(target)
    with pytest.raises(ChecksumMismatchError) as info:
        load_dlib_pack(copy)
    message = str(info.value)
    assert str(target) in message and "refusing" in message
    assert MANIFEST["files"]["recognizer"]["sha256"] in message and sha256_file(target) in message
    # the model refuses it too, before dlib reads a byte of it
    unverified = load_dlib_pack(copy, verify=False)
    pytest.importorskip("dlib")
    with pytest.raises(ChecksumMismatchError):
        DlibFaceModel(unverified)


def test_missing_model_file_is_reported(dat_dir, tmp_path):
    copy = _copy_pack(dat_dir, tmp_path / "pack", roles=("recognizer",))
    with pytest.raises(ModelError, match="shape_predictor_5_face_landmarks.dat: model file is missing"):
        load_dlib_pack(copy)


# -- detection and recognition ---------------------------------------------------------


def test_detects_the_face_in_a_fixture_photo(model):
    image = load_image(LFW / "Colin_Powell_0001.jpg")
    faces = model.detect(image)
    assert len(faces) == 1
    x1, y1, x2, y2, score = faces[0]
    assert score > 0
    assert x1 < 75 < x2 and y1 < 75 < y2  # LFW faces are centred in the 150x150 frame
    assert 40 < x2 - x1 < 110 and 40 < y2 - y1 < 110
    landmarks = model.landmarks(image, faces[0])
    assert landmarks.shape == (5, 2)
    assert np.all((landmarks >= [x1, y1]) & (landmarks <= [x2, y2]))


def test_no_face_in_a_flat_gray_image(model):
    gray = np.full((150, 150), 128, np.uint8)
    assert model.detect(gray) == []
    assert model.detect(gray, adjust_threshold=-0.5) == []
    assert model.embed(gray) is None


def test_same_person_scores_higher_than_different_people(model):
    vecs = {name: [model.embed(load_image(LFW / f"{photo}.jpg")) for photo in photos]
            for name, photos in PEOPLE.items()}
    for v in (v for pair in vecs.values() for v in pair):
        assert v.shape == (EMBEDDING_SIZE,) and abs(np.linalg.norm(v) - 1) < 1e-5
    same = {name: float(a @ b) for name, (a, b) in vecs.items()}
    different = [float(a @ b) for n1, v1 in vecs.items() for n2, v2 in vecs.items() if n1 < n2
                 for a in v1 for b in v2]
    assert min(same.values()) > max(different), (same, max(different))


def test_embed_primary_faces_fills_the_lfw_dataclass(model, tmp_path):
    shutil.copyfile(LFW / "Colin_Powell_0001.jpg", tmp_path / "face.jpg")
    Image.fromarray(np.full((150, 150, 3), 128, np.uint8)).save(tmp_path / "gray.jpg")
    emb = model.embed_primary_faces(tmp_path, ["face.jpg", "gray.jpg"], progress=False)
    assert emb.paths == ["face.jpg", "gray.jpg"]
    assert emb.how == ["detected", "centre-prior"]  # the gray photo falls back on the fixed LFW box
    assert emb.plain.shape == emb.flipped.shape == (2, EMBEDDING_SIZE)
    np.testing.assert_allclose(np.linalg.norm(emb.plain, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(emb.flipped, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(emb.plain[0], model.embed(load_image(tmp_path / "face.jpg")), atol=1e-5)
    assert float(emb.plain[0] @ emb.flipped[0]) > 0.97  # a face and its mirror agree
    assert emb.seconds > 0


def test_cnn_detector_finds_the_face(dat_dir):
    pytest.importorskip("dlib")
    cnn = DlibFaceModel(detector="cnn", upsample=1)
    faces = cnn.detect(load_image(LFW / "George_W_Bush_0001.jpg"))
    assert len(faces) >= 1
    x1, y1, x2, y2, _ = faces[0]
    assert x1 < 75 < x2 and y1 < 75 < y2


def test_models_lists_the_dlib_pack_with_its_licence_and_calibration(dat_dir, cli):
    code, out, err = cli("models")
    assert code == 0, err
    section = out[out.index("dlib_resnet:"):]
    assert "dlib_face_recognition_resnet_model_v1.dat sha256 55533b28" in section and "[ok]" in section
    assert "public domain" in section and "false-match rate 0.0001" in section
