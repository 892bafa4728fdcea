"""Distributed ingest on Ray (``facesearch index --ray``) on a real two-node Ray cluster on loopback
(``ray.cluster_utils.Cluster``): the same counts, journal, resumability, deduplication, opt-out and
audit record as a local run of the same photos."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facesearch.governance import AuditLog, Governance
from facesearch.services.engine import Engine

from .conftest import LFW, jpeg_with_comment

ROOT = Path(__file__).resolve().parents[1]
COUNTS = ("files_seen", "images_indexed", "faces_indexed", "images_without_faces", "faces_too_small",
          "faces_suppressed", "already_indexed", "duplicates_in_run", "erased_earlier")


@pytest.fixture(scope="module")
def ray_cluster_address():
    """A head and a second node, one CPU each, every address on 127.0.0.1; shut down at the end."""
    from facesearch.ingest.distributed import import_ray

    import_ray(loopback=True)  # before Ray is first imported: node addresses on loopback
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster.address
    finally:
        cluster.shutdown()


@pytest.fixture
def sample_folder(tmp_path, two_people, no_face_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in sorted(LFW.glob("*.jpg")):
        shutil.copyfile(photo, folder / photo.name)
    shutil.copyfile(two_people, folder / "two_people.png")
    shutil.copyfile(no_face_path, folder / "gradient.png")
    shutil.copyfile(LFW / "Hugo_Chavez_0001.jpg", folder / "zz_duplicate.jpg")
    (folder / "copy.jpg").write_bytes(jpeg_with_comment((LFW / "Colin_Powell_0002.jpg").read_bytes(), "another"))
    (folder / "notes.txt").write_text("not a photo")
    with Image.open(LFW / "George_W_Bush_0001.jpg") as img:  # a sideways scan without EXIF: turned upright
        img.convert("RGB").resize((150, 200)).transpose(Image.Transpose.ROTATE_90).save(folder / "scan.jpg")
    return folder


def _index(home: Path, folder: Path, *extra: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "facesearch.cli.main", "index", str(folder), "--collection", "r",
                           "--home", str(home), "--json", *extra], capture_output=True, text=True, timeout=600,
                          env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _opt_out_powell(home: Path, embedding_of) -> None:
    with Engine.open(home) as engine:
        gov = Governance(engine)
        gov.optouts.add(embedding_of(LFW / "Colin_Powell_0001.jpg"), "request R-1", "local:test")


def _journal(home: Path) -> list[tuple[str, str, int]]:
    from sqlalchemy import select

    from facesearch.catalog.schema import IngestEvent

    with Engine.open(home) as engine, engine.catalog.session() as s:
        return sorted((Path(e.source).name, e.outcome, e.faces) for e in s.scalars(select(IngestEvent)))


def _ingest_record(home: Path) -> dict:
    with Engine.open(home) as engine:
        [record] = [e for e in AuditLog(engine.catalog).entries() if e.action == "ingest"][-1:]
        return {k: v for k, v in record.details.items() if k != "run_id"}


def test_ray_ingest_on_two_nodes_matches_a_local_run(ray_cluster_address, sample_folder, tmp_path, embedding_of):
    local_home, ray_home = tmp_path / "local", tmp_path / "ray"
    for home in (local_home, ray_home):
        Engine.open(home).close()
        _opt_out_powell(home, embedding_of)
    local = _index(local_home, sample_folder)
    distributed = _index(ray_home, sample_folder, "--ray", ray_cluster_address)

    assert distributed["ray"]["nodes"] == 2 and distributed["ray"]["actors"] == 2  # one actor per node's CPU
    assert {k: distributed[k] for k in COUNTS} == {k: local[k] for k in COUNTS}
    assert distributed["faces_indexed"] >= 4 and distributed["faces_suppressed"] >= 2  # Powell opted out
    assert distributed["duplicates_in_run"] == 1 and distributed["images_without_faces"] >= 1
    assert sorted(map(tuple, distributed["skipped"])) == sorted(map(tuple, local["skipped"]))
    assert _journal(ray_home) == _journal(local_home)
    assert _ingest_record(ray_home) == _ingest_record(local_home)

    # the same faces, found at the same places with the same embeddings (up to float noise)
    with Engine.open(local_home) as a, Engine.open(ray_home) as b:
        def placed(engine: Engine) -> dict[tuple, np.ndarray]:
            ids = [int(i) for i in engine.catalog.face_ids(engine.collection("r").id)]
            vectors = engine.catalog.embeddings_of(ids)
            return {(f.image_sha256, tuple(round(v) for v in f.box)): vectors[f.id]
                    for f in engine.catalog.faces(ids).values()}

        def shapes(engine: Engine) -> dict[str, tuple[int, int, int]]:
            from sqlalchemy import select

            from facesearch.catalog.schema import ImageRecord

            with engine.catalog.session() as s:
                return {r.sha256: (r.rotation, r.width, r.height) for r in s.scalars(select(ImageRecord))}

        # a photo an actor turned upright is stored turned on the driver too (size, thumbnails)
        assert shapes(b) == shapes(a) and (90, 150, 200) in shapes(a).values()
        here, there = placed(a), placed(b)
        assert sorted(here) == sorted(there)
        assert min(float(np.dot(here[k], there[k])) for k in here) > 0.999
        for check in (Governance(a).audit.verify(), Governance(b).audit.verify()):
            assert check.ok, check.problems

    # resumable: a second run finds everything already indexed, through Ray too
    again = _index(ray_home, sample_folder, "--ray", ray_cluster_address)
    assert again["images_indexed"] == 0
    assert again["already_indexed"] == local["images_indexed"] + local["duplicates_in_run"]


def test_an_unreachable_ray_cluster_is_a_clear_error(tmp_path, cli):
    code, out, err = cli("index", str(LFW / "Colin_Powell_0001.jpg"), "--collection", "r", "--home",
                         tmp_path / "home", "--ray", "127.0.0.1:9")
    assert code != 0 and "cannot reach the Ray cluster" in err
