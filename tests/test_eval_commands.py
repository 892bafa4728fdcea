"""``facesearch eval verify|identify|detect`` and ``facesearch calibrate``: reports, plots and errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from facesearch.cli.main import main
from facesearch.eval.datasets import cache_key, open_dataset
from facesearch.services.engine import Engine
from tests.conftest import FIXTURES


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    """A folder-per-person dataset from the fixture photos: 3 people x 2 photos + 3 people x 1."""
    root = tmp_path_factory.mktemp("people")
    for photo in sorted([*(FIXTURES / "lfw").glob("*.jpg"), *(FIXTURES / "calibration_check").glob("*.jpg")]):
        person = photo.stem.rsplit("_", 1)[0]
        (root / person).mkdir(exist_ok=True)
        shutil.copy(photo, root / person / photo.name)
    return root


def run_json(capsys, *argv) -> dict:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_eval_verify_writes_json_markdown_and_plots(people, tmp_path, capsys):
    out = tmp_path / "report"
    report = run_json(capsys, "eval", "verify", "--data", str(people), "--out", str(out),
                      "--cache", str(tmp_path / "cache.npz"))
    result = report["results"]["buffalo_s"]["all_pairs"]
    assert report["results"]["buffalo_s"]["per_person"]["weighting"] == "each pair of people weighted equally"
    assert result["genuine_pairs"] == 3 and result["impostor_pairs"] == 33
    assert report["dataset"]["images"] == 9 and len(report["dataset"]["sha256"]) == 64
    assert report["command"].startswith("facesearch eval verify --data")
    assert "onnxruntime" in report["versions"] and report["packs"]["buffalo_s"]
    far = {p["far"]: p for p in result["tar_at_far"]}
    assert set(far) == {1e-2, 1e-3, 1e-4, 1e-5, 1e-6}
    assert not far[1e-2]["resolved"] and "not resolvable" in far[1e-2]["note"]  # 33 pairs resolve ~0.3 only
    assert result["eer"] == 0.0  # three people, trivially separated
    for name in ("verify.json", "verify.md", "det.png", "scores.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "det.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "verify.md").read_text()
    assert "not resolvable" in md and "![det](det.png)" in md
    # the second run reads the embedding cache: no model run
    again = run_json(capsys, "eval", "verify", "--data", str(people), "--out", str(out),
                     "--cache", str(tmp_path / "cache.npz"))
    assert again["dataset"]["embedding_seconds"] == 0.0
    assert again["results"]["buffalo_s"]["all_pairs"]["tar_at_far"] == result["tar_at_far"]


def test_eval_identify_reports_cmc_fnir_and_labels_synthetic_rows(people, tmp_path, capsys):
    out = tmp_path / "ident"
    report = run_json(capsys, "eval", "identify", "--data", str(people), "--out", str(out), "--sizes", "2,500",
                      "--cache", str(tmp_path / "cache.npz"), "--holdout", "0.34")
    result = report["results"]["buffalo_s"]
    # 1 of the 3 two-photo people held out (2 probes) + 1 of the 3 single-photo people (half of them)
    assert result["split"]["nonmated_probes"] == 3 and result["split"]["mated_probes"] == 2
    sizes = {g["gallery_size"]: g for g in result["galleries"]}
    assert set(sizes) == {2, 4, 500}  # 4 = the real gallery: 2 enrolled + 2 single-photo people
    assert sizes[500]["synthetic_faces"] == 496 and sizes[2]["synthetic_faces"] == 0
    assert sizes[500]["cmc"]["rank1"] == 1.0  # the real mates still win among 496 synthetic faces
    assert {p["fpir_target"] for p in sizes[500]["fnir_at_fpir"]} == {0.1, 0.01, 0.003}
    assert sizes[500]["calibrated_threshold"]["target_fpir"] == 0.01
    assert any("synthetic" in note for note in result["notes"])
    md = (out / "identify.md").read_text()
    assert "500 (496 synthetic)" in md
    assert len(sizes[4]["top_nonmated"]) == 3 and "Highest-scoring non-mated probes" in md
    assert (out / "cmc.png").is_file() and (out / "fnir_fpir.png").is_file()


@pytest.fixture
def wider_one(tmp_path):
    """One WIDER photo with its labels, laid out as the eval expects: (data dir, labels file, boxes)."""
    photo = FIXTURES / "wider" / "12_Group_Group_12_Group_Group_12_10.jpg"
    boxes = json.loads(photo.with_suffix(".json").read_text())["boxes"]
    (tmp_path / "images").mkdir()
    shutil.copy(photo, tmp_path / "images" / photo.name)
    labels = tmp_path / "labels.txt"
    labels.write_text(f"# {photo.name}\n" + "".join(f"{x} {y} {w} {h}\n" for x, y, w, h in boxes))
    return tmp_path, labels, boxes


def test_eval_detect_by_face_size(wider_one, tmp_path, capsys):
    data, labels, boxes = wider_one
    report = run_json(capsys, "eval", "detect", "--data", str(data), "--labels", str(labels),
                      "--out", str(tmp_path / "out"))
    result = report["results"]
    assert result["all"]["faces"] == len(boxes)
    assert result["all"]["recall"] > 0.8 and result["all"]["average_precision"] > 0.7
    assert set(result["by_height"]) == {"<16", "16-32", "32-64", "64+"}
    assert sum(b["faces"] for b in result["by_height"].values()) == len(boxes)


def test_calibrate_refuses_too_few_pairs(people, tmp_path, capsys):
    assert main(["calibrate", "--data", str(people), "--cache", str(tmp_path / "c.npz"),
                 "--calibration-out", str(tmp_path / "cal.json")]) == 2
    assert "cannot measure the verify operating point" in capsys.readouterr().err
    assert not (tmp_path / "cal.json").exists()


def test_calibrate_attaches_to_a_home_and_checks_on_held_out_people(tmp_path, capsys):
    """The CLI flow end to end on real (cached) embeddings: 1,200 LFW view-1 photos of 782 people."""
    with np.load(FIXTURES / "calibration_check" / "lfw_view1_holdout.npz") as data:
        paths, vectors = list(data["paths"]), data["embeddings"].astype(np.float32)
    root = tmp_path / "data"
    for i, rel in enumerate(paths):  # stand-in files: the cache below carries their embeddings
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(i.to_bytes(4, "big"))
    dataset = open_dataset(root)
    assert dataset.rel_paths == sorted(paths)
    order = [paths.index(p) for p in dataset.rel_paths]
    cache = tmp_path / "cache.npz"
    key = cache_key("buffalo_s")  # the cache of the runtime this run uses
    np.savez(cache, **{f"{key}paths": np.array(dataset.rel_paths), f"{key}plain": vectors[order],
                       f"{key}how": np.array(["detected"] * len(paths)),
                       f"{key}hash": np.array(dataset.content_hash())})
    names = sorted({p.split("/")[0] for p in paths})
    held = tmp_path / "held.txt"
    held.write_text("\n".join(names[: len(names) // 3]) + "\n")
    home = tmp_path / "home"
    summary = run_json(capsys, "calibrate", "--data", str(root), "--cache", str(cache), "--home", str(home),
                       "--exclude-people", str(held))
    target = home / "calibrations" / "buffalo_s.json"
    assert summary["calibration"] == str(target) and target.is_file()
    assert summary["check"]["people"] == len(names) // 3
    rows = {r["target_fmr"]: r for r in summary["check"]["rows"]}
    assert rows[1e-3]["resolvable"] and rows[1e-3]["within_factor_2"], rows[1e-3]
    with Engine.open(home) as engine:
        assert engine.calibration.source.startswith("data: all different-person pairs")
        assert engine.calibration.excluded_people.startswith(f"{len(names) // 3:,} people")


def test_eval_detect_runs_the_dlib_pack_through_the_same_protocol(wider_one, tmp_path, capsys):
    data, labels, boxes = wider_one
    report = run_json(capsys, "--pack", "dlib_resnet", "eval", "detect", "--data", str(data), "--labels",
                      str(labels), "--out", str(tmp_path / "dlib"))
    assert list(report["packs"]) == ["dlib_resnet"] and "HOG" in report["results"]["detector"]
    scrfd = run_json(capsys, "eval", "detect", "--data", str(data), "--labels", str(labels),
                     "--out", str(tmp_path / "scrfd"))
    dlib_all, scrfd_all = report["results"]["all"], scrfd["results"]["all"]
    assert dlib_all["faces"] == scrfd_all["faces"] == len(boxes)
    assert 0 < dlib_all["recall"] < scrfd_all["recall"]  # HOG finds frontal faces only


def test_eval_bad_input(people, tmp_path, capsys):
    # wrong paths: a clear one-line error, exit 2
    assert main(["eval", "verify", "--data", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such dataset folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["eval", "identify", "--data", str(tmp_path / "empty")]) == 2
    assert "expected one folder per person" in capsys.readouterr().err
    assert main(["eval", "detect", "--data", str(tmp_path), "--labels", str(tmp_path / "labels.txt")]) == 2
    assert "labels.txt" in capsys.readouterr().err
    # a corrupt and a truncated photo in a dataset are counted as unreadable, not fatal
    data = tmp_path / "data"
    shutil.copytree(people, data)
    (data / "Colin_Powell" / "broken.jpg").write_bytes(b"not a jpeg at all")
    good = (data / "Hugo_Chavez" / "Hugo_Chavez_0001.jpg").read_bytes()
    (data / "Hugo_Chavez" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    report = run_json(capsys, "eval", "verify", "--data", str(data), "--out", str(tmp_path / "out"),
                      "--cache", str(tmp_path / "c.npz"))
    faces = report["results"]["buffalo_s"]["faces"]
    assert faces.get("unreadable", 0) >= 1 and report["dataset"]["images"] == 11
    assert report["results"]["buffalo_s"]["all_pairs"]["images_with_face"] <= 10

