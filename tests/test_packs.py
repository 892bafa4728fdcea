"""Model packs: SHA-256 pinning, tamper refusal, pinning a local InsightFace-layout dir."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from facesearch import FaceAnalyzer, load_image
from facesearch.errors import ChecksumMismatchError, ModelError
from facesearch.models import available_packs, load_pack, pin_local_pack, sha256_file
from facesearch.models.packs import LOCAL_MANIFEST, inspect_onnx


def _flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    offset = len(data) // 2 if offset is None else offset
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture
def pack_copy(make_local_pack) -> Path:
    """A local pack directory: copies of buffalo_s's two files plus a manifest pinning them."""
    return make_local_pack("copied")


# -- the built-in pack ------------------------------------------------------------------


def test_builtin_pack_verifies(builtin_pack):
    assert builtin_pack.name == "buffalo_s"
    builtin_pack.verify()
    for model_file in builtin_pack.files():
        assert model_file.path.is_file()
        assert len(model_file.sha256) == 64
        assert sha256_file(model_file.path) == model_file.sha256
    assert builtin_pack.embedding_size == 512
    assert "non-commercial" in builtin_pack.licence


def test_default_pack_is_buffalo_s():
    assert load_pack().name == "buffalo_s"


def test_builtin_files_are_classified_by_their_onnx_io(builtin_pack):
    assert inspect_onnx(builtin_pack.detector.path) == "detector"
    assert inspect_onnx(builtin_pack.recognizer.path) == "recognizer"


def test_available_packs_lists_buffalo_s():
    assert "buffalo_s" in [pack.name for pack in available_packs()]


def test_unknown_pack_name():
    with pytest.raises(ModelError) as exc_info:
        load_pack("buffalo_zz")
    assert "buffalo_zz" in str(exc_info.value)
    assert "buffalo_s" in str(exc_info.value)  # says which packs exist


def test_missing_directory_path(tmp_path):
    with pytest.raises(ModelError) as exc_info:
        load_pack(tmp_path / "no_such_pack")
    assert "no_such_pack" in str(exc_info.value)


# -- local copies ------------------------------------------------------------------------


def test_intact_copy_loads_and_verifies(pack_copy, builtin_pack):
    pack = load_pack(pack_copy)
    assert pack.name == "copied"
    assert pack.recognizer.sha256 == builtin_pack.recognizer.sha256
    assert pack.recognizer.path == pack_copy / builtin_pack.recognizer.path.name


@pytest.mark.parametrize("role", ["recognizer", "detector"])
def test_tampered_file_is_refused(pack_copy, builtin_pack, role):
    original = getattr(builtin_pack, role)
    target = pack_copy / original.path.name
    _flip_byte(target)
    tampered_hash = sha256_file(target)
    assert tampered_hash != original.sha256
    with pytest.raises(ChecksumMismatchError) as exc_info:
        load_pack(pack_copy)
    error = exc_info.value
    assert isinstance(error, ModelError)
    assert error.path == str(target)
    assert error.expected == original.sha256
    assert error.actual == tampered_hash
    message = str(error)
    assert original.path.name in message
    assert original.sha256 in message and tampered_hash in message


def test_analyzer_refuses_tampered_pack(pack_copy, builtin_pack):
    """Even without load_pack's check, opening the session re-checks the pinned hash."""
    _flip_byte(pack_copy / builtin_pack.recognizer.path.name, offset=100)
    with pytest.raises(ChecksumMismatchError):
        FaceAnalyzer(str(pack_copy))


def test_missing_model_file(pack_copy, builtin_pack):
    (pack_copy / builtin_pack.detector.path.name).unlink()
    with pytest.raises(ModelError) as exc_info:
        load_pack(pack_copy)
    assert builtin_pack.detector.path.name in str(exc_info.value)


def test_malformed_manifest(pack_copy):
    (pack_copy / LOCAL_MANIFEST).write_text('{"name": "x", "detector": {}}')
    with pytest.raises(ModelError):
        load_pack(pack_copy)
    (pack_copy / LOCAL_MANIFEST).write_text("{not json")
    with pytest.raises(ModelError) as exc_info:
        load_pack(pack_copy)
    assert LOCAL_MANIFEST in str(exc_info.value)


def test_directory_without_manifest_says_to_pin_it(tmp_path):
    with pytest.raises(ModelError) as exc_info:
        load_pack(tmp_path)
    message = str(exc_info.value)
    assert str(tmp_path) in message
    assert "facesearch models pin" in message


# -- pinning an InsightFace-layout directory ------------------------------------------------


@pytest.fixture
def insightface_dir(tmp_path, builtin_pack) -> Path:
    """Copies renamed the way InsightFace's packs name their files, and no manifest.

    Like InsightFace's buffalo packs it also holds a 106-landmark model (sorted first), which
    is neither a detector nor a recognizer and must be passed over.
    """
    directory = tmp_path / "my_pack"
    directory.mkdir()
    shutil.copyfile(builtin_pack.detector.path.parent / "2d106det.onnx", directory / "2d106det.onnx")
    shutil.copyfile(builtin_pack.detector.path, directory / "det_10g.onnx")
    shutil.copyfile(builtin_pack.recognizer.path, directory / "w600k_r50.onnx")
    (directory / "README.txt").write_text("not a model\n")
    return directory


def test_pin_local_pack_recognises_files_and_writes_a_loadable_manifest(insightface_dir, builtin_pack):
    with pytest.raises(ModelError):
        load_pack(insightface_dir)  # unpinned
    manifest = pin_local_pack(insightface_dir, licence="test licence")
    assert manifest["detector"]["file"] == "det_10g.onnx"
    assert manifest["recognizer"]["file"] == "w600k_r50.onnx"
    assert manifest["detector"]["sha256"] == builtin_pack.detector.sha256
    assert manifest["recognizer"]["sha256"] == builtin_pack.recognizer.sha256
    assert manifest["recognizer"]["embedding_size"] == 512
    assert manifest["name"] == "my_pack"
    assert manifest["licence"] == "test licence"
    on_disk = json.loads((insightface_dir / LOCAL_MANIFEST).read_text())
    assert on_disk == manifest
    pack = load_pack(insightface_dir)
    assert pack.detector.path.name == "det_10g.onnx"
    assert pack.recognizer.path.name == "w600k_r50.onnx"
    assert pack.embedding_size == 512


def test_pinned_pack_recognises_like_the_builtin(insightface_dir, face_path, analyzer):
    pin_local_pack(insightface_dir)
    local = FaceAnalyzer(str(insightface_dir))
    image = load_image(face_path)
    ours, theirs = local.analyze(image), analyzer.analyze(image)
    assert len(ours) == len(theirs) == 1
    np.testing.assert_allclose(ours[0].embedding, theirs[0].embedding, atol=1e-5)


def test_pinned_pack_is_then_protected(insightface_dir):
    pin_local_pack(insightface_dir)
    _flip_byte(insightface_dir / "w600k_r50.onnx")
    with pytest.raises(ChecksumMismatchError) as exc_info:
        load_pack(insightface_dir)
    assert "w600k_r50.onnx" in str(exc_info.value)


def test_pin_without_licence_records_operator_responsibility(insightface_dir):
    manifest = pin_local_pack(insightface_dir)
    assert "unknown" in manifest["licence"]
    assert "unknown" in load_pack(insightface_dir).licence


def test_pin_refuses_directory_without_a_recognizer(insightface_dir):
    (insightface_dir / "w600k_r50.onnx").unlink()
    with pytest.raises(ModelError) as exc_info:
        pin_local_pack(insightface_dir)
    assert "recognizer" in str(exc_info.value)
    assert not (insightface_dir / LOCAL_MANIFEST).exists()


def test_pin_refuses_a_missing_directory(tmp_path):
    with pytest.raises(ModelError):
        pin_local_pack(tmp_path / "nope")
