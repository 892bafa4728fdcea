"""The ``facesearch`` command, run in-process."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from facesearch.cli.main import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def run_json(capsys, *argv: str):
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


# -- detect ---------------------------------------------------------------------------------


def test_detect_json(capsys, wider_group):
    path, gt = wider_group
    data = run_json(capsys, "detect", path)
    assert data["image"] == str(path)
    assert (data["width"], data["height"]) == (1024, 681)
    faces = data["faces"]
    assert len(faces) >= 0.9 * len(gt)
    for i, face in enumerate(faces):
        assert face["index"] == i
        x1, y1, x2, y2 = face["box"]
        assert x2 > x1 and y2 > y1
        assert len(face["landmarks"]) == 5 and all(len(p) == 2 for p in face["landmarks"])
        assert 0.5 <= face["det_score"] <= 1.0
        assert "embedding" not in face
        assert isinstance(face["quality"]["usable"], bool)


def test_detect_text(capsys, face_path):
    code, out, _ = run(capsys, "detect", face_path)
    assert code == 0
    assert out.splitlines()[0] == f"{face_path}: 150x150, 1 face(s)"
    assert "face 0: box" in out


def test_detect_draw_writes_a_png(capsys, face_path, tmp_path):
    out_path = tmp_path / "drawn" / "faces.png"
    code, out, _ = run(capsys, "detect", face_path, "--draw", out_path)
    assert code == 0
    assert str(out_path) in out
    assert out_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(out_path) as img:
        assert img.format == "PNG"
        assert img.size == (150, 150)
        drawn = np.asarray(img.convert("RGB")).astype(int)
    with Image.open(face_path) as img:
        original = np.asarray(img.convert("RGB")).astype(int)
    changed = np.any(drawn != original, axis=2)
    assert 50 < changed.sum() < 0.5 * changed.size  # a box was drawn, the photo kept


def test_detect_no_face(capsys, no_face_path):
    data = run_json(capsys, "detect", no_face_path)
    assert data["faces"] == []


# -- verify ---------------------------------------------------------------------------------


def test_verify_same_person(capsys, lfw):
    a, b = lfw("Colin_Powell_0001"), lfw("Colin_Powell_0002")
    data = run_json(capsys, "verify", a, b)
    assert data["same_person"] is True
    assert data["similarity"] >= data["threshold"]
    assert data["pack"] == "buffalo_s"
    assert [f["image"] for f in data["faces"]] == [str(a), str(b)]
    assert all(f["chosen"] == "the only face" for f in data["faces"])


def test_verify_different_people(capsys, lfw):
    data = run_json(capsys, "verify", lfw("Colin_Powell_0001"), lfw("George_W_Bush_0001"))
    assert data["same_person"] is False
    assert data["similarity"] < data["threshold"]


def test_verify_similarity_matches_library(capsys, lfw, primary):
    a, b = lfw("George_W_Bush_0001"), lfw("George_W_Bush_0002")
    data = run_json(capsys, "verify", a, b)
    assert data["similarity"] == pytest.approx(primary(a).similarity(primary(b)), abs=1e-4)


def test_verify_threshold_override(capsys, lfw):
    a, b = lfw("Colin_Powell_0001"), lfw("Colin_Powell_0002")
    data = run_json(capsys, "verify", a, b, "--threshold", "0.99")
    assert data["threshold"] == 0.99
    assert data["same_person"] is False
    assert "command line" in data["threshold_rule"]


def test_verify_text(capsys, lfw):
    code, out, _ = run(capsys, "verify", lfw("Hugo_Chavez_0001"), lfw("Hugo_Chavez_0002"))
    assert code == 0
    assert "SAME PERSON" in out
    assert "not an identification" in out


def test_verify_missing_file(capsys, lfw, tmp_path):
    missing = tmp_path / "missing.jpg"
    code, out, err = run(capsys, "verify", lfw("Colin_Powell_0001"), missing)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("facesearch: error:")
    assert str(missing) in lines[0]
    assert "Traceback" not in err


def test_verify_not_an_image(capsys, lfw, tmp_path):
    fake = tmp_path / "fake.jpg"
    fake.write_text("hello")
    code, _, err = run(capsys, "verify", fake, lfw("Colin_Powell_0001"))
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and str(fake) in err


def test_verify_no_face(capsys, lfw, no_face_path):
    code, out, err = run(capsys, "verify", lfw("Colin_Powell_0001"), no_face_path)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert str(no_face_path) in err
    assert "no face" in err


def test_verify_face_index_out_of_range(capsys, lfw):
    a, b = lfw("Colin_Powell_0001"), lfw("Colin_Powell_0002")
    code, _, err = run(capsys, "verify", a, b, "--face", "0", "3")
    assert code == 2
    assert "face 3" in err and "1 face(s)" in err


def test_verify_explicit_face_index(capsys, lfw):
    data = run_json(capsys, "verify", lfw("Colin_Powell_0001"), lfw("Colin_Powell_0002"), "--face", "0", "-1")
    assert data["faces"][0]["chosen"] == "face 0 as requested"
    assert data["faces"][1]["chosen"] == "the only face"


def test_verify_picks_primary_face_in_group(capsys, wider_group, lfw):
    path, _ = wider_group
    data = run_json(capsys, "verify", path, lfw("Colin_Powell_0001"))
    assert data["faces"][0]["faces_in_image"] >= 10
    assert "largest and most central" in data["faces"][0]["chosen"]
    assert data["same_person"] is False



def test_verify_face_choice_in_a_two_person_photo(capsys, two_people, lfw):
    faces = run_json(capsys, "detect", two_people)["faces"]
    assert len(faces) == 2
    small = min(faces, key=lambda f: f["box"][2] - f["box"][0])["index"]
    bush = lfw("George_W_Bush_0002")
    by_default = run_json(capsys, "verify", two_people, bush)
    assert by_default["same_person"] is False
    assert "largest and most central" in by_default["faces"][0]["chosen"]
    picked = run_json(capsys, "verify", two_people, bush, "--face", str(small), "-1")
    assert picked["same_person"] is True
    assert picked["faces"][0]["chosen"] == f"face {small} as requested"
    assert picked["faces"][0]["faces_in_image"] == 2

# -- models ---------------------------------------------------------------------------------


def test_models_json(capsys):
    packs = run_json(capsys, "models")
    by_name = {p["name"]: p for p in packs}
    assert "buffalo_s" in by_name
    pack = by_name["buffalo_s"]
    assert pack["sha256_check"] == {"scrfd_500m_bnkps.onnx": "ok", "w600k_mbf.onnx": "ok"}
    assert "non-commercial" in pack["licence"].lower()
    assert len(pack["recognizer"]["sha256"]) == 64


def test_models_text(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0
    assert out.startswith("buffalo_s:")
    assert "[ok]" in out and "non-commercial" in out


def test_models_pin_and_list(capsys, tmp_path, builtin_pack):
    directory = tmp_path / "local_pack"
    directory.mkdir()
    shutil.copyfile(builtin_pack.detector.path, directory / "det_10g.onnx")
    shutil.copyfile(builtin_pack.recognizer.path, directory / "w600k_r50.onnx")
    code, out, err = run(capsys, "models", "pin", directory, "--licence", "research only")
    assert code == 0, err
    assert "det_10g.onnx" in out and "w600k_r50.onnx" in out and builtin_pack.recognizer.sha256 in out
    packs = run_json(capsys, "models", "--dir", directory)
    local = {p["name"]: p for p in packs}["local_pack"]
    assert local["sha256_check"] == {"det_10g.onnx": "ok", "w600k_r50.onnx": "ok"}
    assert local["licence"] == "research only"


def test_models_reports_tampered_local_pack(capsys, make_local_pack, face_path):
    directory = make_local_pack("local_pack", "det_10g.onnx", "w600k_r50.onnx")
    packs = run_json(capsys, "models", "--dir", directory)
    assert {p["name"]: p for p in packs}["local_pack"]["sha256_check"] == {
        "det_10g.onnx": "ok", "w600k_r50.onnx": "ok"}
    data = bytearray((directory / "w600k_r50.onnx").read_bytes())
    data[-10] ^= 0xFF
    (directory / "w600k_r50.onnx").write_bytes(bytes(data))
    packs = run_json(capsys, "models", "--dir", directory)
    local = {p["name"]: p for p in packs}["local_pack"]
    assert local["sha256_check"]["det_10g.onnx"] == "ok"
    assert "mismatch" in local["sha256_check"]["w600k_r50.onnx"]
    code, out, err = run(capsys, "--pack", directory, "detect", face_path)
    assert code == 2 and out == ""
    assert "w600k_r50.onnx" in err and "SHA-256 mismatch" in err


def test_unknown_pack_exits_2(capsys, face_path):
    code, _, err = run(capsys, "--pack", "nope_pack", "detect", face_path)
    assert code == 2
    assert "nope_pack" in err


def test_no_command_prints_help(capsys):
    code, out, _ = run(capsys)
    assert code == 1
    assert "usage" in out.lower()
