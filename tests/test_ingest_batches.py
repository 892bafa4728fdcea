"""An ingest commits a batch of photos at once: images, faces and their journal entries in one
transaction (not two commits per photo), one opt-out check per batch, and a photo the catalog
refuses still leaves the rest of its batch stored, as photo by photo."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from sqlalchemy import event, select

from facesearch.catalog import CatalogError
from facesearch.catalog.schema import FaceRecord, ImageRecord, IngestEvent

from .conftest import LFW


@pytest.fixture
def photos(tmp_path, no_face_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in sorted(LFW.glob("*.jpg")):
        shutil.copy(path, folder / path.name)
    shutil.copy(no_face_path, folder / "zz_no_face.png")
    return folder


def test_a_batch_is_one_transaction_with_its_journal(open_engine, photos):
    engine = open_engine()
    engine.create_collection("c")
    commits = []
    event.listen(engine.catalog.engine, "commit", lambda conn: commits.append(1))
    summary = engine.index([photos], "c", progress=False, batch_images=16)
    n = len(list(photos.iterdir()))
    assert summary.images_indexed == n and summary.images_without_faces == 1 and summary.faces_indexed >= n - 1
    assert len(commits) <= 2  # the batch (and nothing per photo); photo by photo it was 2 per photo
    with engine.catalog.session() as s:
        journal = {e.source: (e.outcome, e.reason, e.faces) for e in s.scalars(select(IngestEvent))}
        faces_per_image = {}
        for image in s.scalars(select(ImageRecord)):
            faces_per_image[image.sha256] = len(list(s.scalars(select(FaceRecord.id)
                                                               .where(FaceRecord.image_id == image.id))))
        events = {e.sha256: e.faces for e in s.scalars(select(IngestEvent))}
    assert len(journal) == n and all(outcome == "indexed" for outcome, _, _ in journal.values())
    [no_face] = [v for k, v in journal.items() if k.endswith("zz_no_face.png")]
    assert no_face == ("indexed", "no face found", 0)
    assert events == faces_per_image  # each journal entry counts the faces committed with it
    assert len(engine.index_of(engine.collection("c"))) == summary.faces_indexed


def test_opt_outs_are_checked_once_per_batch_and_still_apply(open_engine, photos):
    engine = open_engine()
    calls = []

    def suppress(embeddings: np.ndarray) -> np.ndarray:
        calls.append(len(embeddings))
        return np.arange(len(embeddings)) % 2 == 0  # every other face is an opted-out person's

    summary = engine.index([photos], "c", progress=False, batch_images=16, suppress=suppress)
    assert len(calls) == 1
    assert summary.faces_suppressed == (calls[0] + 1) // 2
    assert summary.faces_indexed == calls[0] - summary.faces_suppressed


def test_a_refused_photo_leaves_the_rest_of_its_batch_stored(open_engine, photos, monkeypatch):
    engine = open_engine()
    (photos / "Colin_Powell_0001.jpg").rename(photos / "Gz_the_same_as_a_stored_one.jpg")  # in mid-batch
    first = engine.index([LFW / "Colin_Powell_0001.jpg"], "c", progress=False)
    assert first.images_indexed == 1
    # A fault injected: the run does not know the photo is already there, so the catalog refuses it.
    monkeypatch.setattr(engine.catalog, "known_hashes", lambda collection_id: set())
    with pytest.raises(CatalogError, match="already in this collection"):
        engine.index([photos], "c", progress=False, batch_images=16)
    with engine.catalog.session() as s:
        sources = sorted(s.scalars(select(ImageRecord.source)))
        face_ids = list(s.scalars(select(FaceRecord.id)))
    # photo by photo, in order, until the refused one: the three photos before it are stored
    assert sorted(name.rsplit("/", 1)[-1] for name in sources) == [
        "Colin_Powell_0001.jpg", "Colin_Powell_0002.jpg", "George_W_Bush_0001.jpg", "George_W_Bush_0002.jpg"]
    assert len(engine.index_of(engine.collection("c"))) == len(face_ids)  # with their vectors
