"""Ingest through the Engine: folders in, catalog rows + index vectors + thumbnails out.

Recursion, non-images skipped with a reason, broken images reported, duplicates by
content, images without faces, reruns that index nothing twice, and a 200-face crowd
photo. The core test runs against both index backends.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from facesearch.catalog.schema import ImageRecord

from .conftest import INDEX_BACKENDS, LFW, backend_name

PHOTOS = sorted(p.stem for p in LFW.glob("*.jpg"))


@pytest.fixture
def messy_folder(tmp_path, no_face_path) -> dict[str, Path]:
    """A folder tree with 6 face photos (2 in a nested subfolder), a text file, a text file
    named .jpg, a truncated JPEG, a photo without a face and a byte-identical copy."""
    root = tmp_path / "inbox"
    nested = root / "trip" / "day2"
    nested.mkdir(parents=True)
    files = {}
    for name in PHOTOS:
        target = (nested if name.endswith("0002") and not name.startswith("Hugo") else root) / f"{name}.jpg"
        shutil.copyfile(LFW / f"{name}.jpg", target)
        files[name] = target
    files["notes"] = root / "notes.txt"
    files["notes"].write_text("not a photo\n" * 20)
    files["fake"] = root / "trip" / "holiday.jpg"
    files["fake"].write_text("this is text pretending to be a JPEG\n" * 10)
    data = (LFW / "George_W_Bush_0001.jpg").read_bytes()
    files["broken"] = root / "trip" / "broken.jpg"
    files["broken"].write_bytes(data[: len(data) // 2])
    files["gradient"] = root / "gradient.png"
    shutil.copyfile(no_face_path, files["gradient"])
    files["copy"] = nested / "zz_copy_of_powell.jpg"
    shutil.copyfile(LFW / "Colin_Powell_0001.jpg", files["copy"])
    return files


def _check_consistent(engine, collection: str) -> None:
    reports = {r.collection: r for r in engine.doctor(repair=False)}
    report = reports[collection]
    assert report.consistent, report
    assert report.catalog_faces == report.index_faces
    info = engine.collection(collection)
    index = engine.index_of(info)
    assert sorted(index.ids().tolist()) == sorted(engine.catalog.face_ids(info.id).tolist())


@pytest.mark.parametrize("backend", INDEX_BACKENDS)
def test_ingest_messy_folder(backend, messy_folder, open_engine):
    engine = open_engine(backend)
    root = messy_folder["notes"].parent
    summary = engine.index([root], "inbox", progress=False)

    assert summary.collection == "inbox"
    assert summary.files_seen == 11
    assert summary.images_indexed == 7  # 6 face photos + the gradient (indexed, no face)
    assert summary.faces_indexed == 6
    assert summary.images_without_faces == 1
    assert summary.duplicates_in_run == 1
    assert summary.already_indexed == 0
    skipped = dict(summary.skipped)
    assert set(skipped) == {str(messy_folder["notes"]), str(messy_folder["fake"])}
    assert all(reason for reason in skipped.values())
    assert "image" in skipped[str(messy_folder["fake"])]
    failed = dict(summary.failed)
    assert set(failed) == {str(messy_folder["broken"])}
    assert "truncated" in failed[str(messy_folder["broken"])] or "damaged" in failed[str(messy_folder["broken"])]

    info = engine.collection("inbox")
    assert (info.images, info.faces) == (7, 6)
    # every face has its thumbnail on disk; sources are the real (resolved) paths, nested included
    faces = engine.catalog.faces(engine.catalog.face_ids(info.id).tolist())
    assert len(faces) == 6
    sources = {Path(f.image_source).name for f in faces.values()}
    assert sources == {f"{name}.jpg" for name in PHOTOS}
    for face in faces.values():
        assert face.collection == "inbox"
        assert face.thumbnail and engine.thumbnails.path(face.thumbnail).is_file()
    _check_consistent(engine, "inbox")

    # the same folder again: nothing new, nothing twice
    again = engine.index([root], "inbox", progress=False)
    assert again.images_indexed == 0 and again.faces_indexed == 0
    assert again.already_indexed == summary.images_indexed + summary.duplicates_in_run
    assert again.duplicates_in_run == 0
    assert len(again.skipped) == 2 and len(again.failed) == 1
    info = engine.collection("inbox")
    assert (info.images, info.faces) == (7, 6)
    _check_consistent(engine, "inbox")

    # a search finds the indexed person (index and catalog are wired together)
    result = engine.search(LFW / "Colin_Powell_0002.jpg", collections=["inbox"])
    assert [Path(c.image_source).name for c in result.candidates[:2]] == ["Colin_Powell_0002.jpg",
                                                                        "Colin_Powell_0001.jpg"]
    assert result.candidates[0].similarity == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("backend", INDEX_BACKENDS)
def test_reopened_home_keeps_its_backend_and_contents(backend, tmp_path, lfw, open_engine):
    home = tmp_path / "home"
    engine = open_engine(backend, home=home)
    engine.index([lfw("Hugo_Chavez_0001"), lfw("George_W_Bush_0001")], "c", progress=False)
    engine.close()
    later = open_engine(None, home=home)  # no backend given: the home's config decides
    assert later.config.backend == backend_name(backend)
    info = later.collection("c")
    described = later.index_of(info).describe()
    assert described["backend"] == backend_name(backend)
    if backend == "faiss-mmap":  # the storage chosen at creation is the home's from then on
        assert described["storage"] == "mmap" and later.config.faiss_storage == "mmap"
    summary = later.index([lfw("Hugo_Chavez_0001"), lfw("Hugo_Chavez_0002")], "c", progress=False)
    assert (summary.already_indexed, summary.images_indexed) == (1, 1)
    _check_consistent(later, "c")
    result = later.search(lfw("Hugo_Chavez_0002"), collections=["c"], top_k=3)
    assert [Path(c.image_source).name for c in result.candidates[:2]] == ["Hugo_Chavez_0002.jpg",
                                                                        "Hugo_Chavez_0001.jpg"]


def test_missing_path_is_reported_not_dropped(tmp_path, lfw, open_engine):
    engine = open_engine()
    missing = tmp_path / "nowhere" / "photo.jpg"
    summary = engine.index([lfw("Colin_Powell_0001"), missing], "c", progress=False)
    assert summary.images_indexed == 1
    assert [path for path, _ in summary.failed] == [str(missing)]
    assert "no such file" in summary.failed[0][1]


def test_cli_index_prints_a_summary_and_a_progress_bar(cli, messy_folder, tmp_path):
    root = messy_folder["notes"].parent
    home = tmp_path / "clihome"
    code, out, err = cli("index", root, "--collection", "inbox", "--home", home)
    assert code == 0, err
    assert "collection inbox: 11 files" in out
    assert "indexed   7 images, 6 faces (1 images without a face)" in out
    assert "1 duplicate files" in out
    assert "not images 2, failed 1" in out
    assert str(messy_folder["notes"]) in out and str(messy_folder["broken"]) in out
    assert "indexing into inbox" in err  # the progress bar (tqdm, on stderr)
    code, out, err = cli("index", root, "--collection", "inbox", "--home", home)
    assert code == 0, err
    assert "indexed   0 images, 0 faces" in out
    assert "skipped   8 already indexed" in out


# -- a crowd ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def crowd_photo(tmp_path_factory) -> tuple[Path, list[str]]:
    """A 20 x 10 mosaic of face crops from the fixture photos (cells of 72 px, crops and flips
    varied): one 1440 x 720 image with 200 faces. Returns its path and each cell's source."""
    rng = np.random.default_rng(0)
    cell, cols, rows = 72, 20, 10
    canvas = Image.new("RGB", (cols * cell, rows * cell), (128, 128, 128))
    sources = []
    for i in range(cols * rows):
        name = PHOTOS[i % len(PHOTOS)]
        with Image.open(LFW / f"{name}.jpg") as img:
            side = 110 + int(rng.integers(-8, 9))
            lo = (150 - side) // 2
            tile = img.convert("RGB").crop((lo, lo, lo + side, lo + side))
        tile = tile.resize((cell, cell), Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            tile = ImageOps.mirror(tile)
        canvas.paste(tile, ((i % cols) * cell, (i // cols) * cell))
        sources.append(name)
    path = tmp_path_factory.mktemp("crowd") / "crowd.jpg"
    canvas.save(path, quality=92)
    return path, sources


def test_crowd_photo_of_200_faces(crowd_photo, lfw, open_engine):
    path, sources = crowd_photo
    engine = open_engine()
    summary = engine.index([path], "crowd", progress=False)
    assert summary.images_indexed == 1
    assert summary.faces_indexed >= 180, summary
    info = engine.collection("crowd")
    assert info.faces == summary.faces_indexed
    with engine.catalog.session() as s:
        image = s.query(ImageRecord).one()
        assert image.face_count == summary.faces_indexed
        assert (image.width, image.height) == (1440, 720)
    _check_consistent(engine, "crowd")

    # the Powell_0002 photo finds Powell tiles: most of its top hits are tiles cut from Powell photos
    result = engine.search(lfw("Colin_Powell_0002"), collections=["crowd"], top_k=20)
    assert result.confident
    faces = engine.catalog.faces([c.face_id for c in result.candidates])
    cells = []
    for c in result.candidates:
        x1, y1, x2, y2 = faces[c.face_id].box
        col, row = int((x1 + x2) / 2 // 72), int((y1 + y2) / 2 // 72)
        cells.append(sources[row * 20 + col])
    assert cells[0].startswith("Colin_Powell")
    above = [cell for cell, c in zip(cells, result.candidates) if c.above_threshold]
    assert len(above) >= 10
    assert all(cell.startswith("Colin_Powell") for cell in above), above
