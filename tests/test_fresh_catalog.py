"""A new catalog created in one step from the models (``facesearch.catalog.migrate``) is the catalog
the Alembic migrations build: same tables, columns, types, keys, indexes and constraints, the same
head revision stamped, and later migrations apply on top of it as on a migrated one.

The one-step catalog is made the way users get it, by a ``facesearch`` command in a fresh
interpreter (so only the schema modules that command imports are known), which must not import
Alembic at all; the reference is made by the migrations.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

from sqlalchemy import create_engine, inspect, text

from facesearch.catalog import Catalog, sqlite_url
from facesearch.catalog.migrate import head_revision

SRC = Path(__file__).resolve().parent.parent / "src"

#: Opens a home with a `facesearch` command in a fresh interpreter; says whether Alembic was imported.
OPEN_HOME = """
import json, sys
from facesearch.cli.main import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "alembic": "alembic" in sys.modules}))
"""

#: A later migration, as a developer would add it: a column and an index on an existing table,
#: and a new table.
LATER_MIGRATION = '''
import sqlalchemy as sa
from alembic import op

revision = "9999_later"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("faces") as batch:
        batch.add_column(sa.Column("later_note", sa.String(50), nullable=True))
        batch.create_index("ix_faces_later_note", ["later_note"])
    op.create_table("later_things", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("face_id", sa.Integer, sa.ForeignKey("faces.id", ondelete="CASCADE"), nullable=False))
'''


def _open_with_cli(home: Path, *extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", OPEN_HOME, "collections", "--home", str(home), "--json", *extra],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _migrated(url: str) -> None:
    """The reference: the database built by the migration chain (no metadata handed over)."""
    Catalog.open(url).close()


def schema_of(url: str) -> dict:
    """Everything the database says about its schema, in a form two databases can be compared by."""
    engine = create_engine(url)
    try:
        inspector = inspect(engine)
        out: dict = {}
        for table in sorted(inspector.get_table_names()):
            pk = inspector.get_pk_constraint(table)
            out[table] = {
                "columns": {c["name"]: (str(c["type"]), c["nullable"], _default(c.get("default")),
                                        c.get("autoincrement") if engine.dialect.name == "postgresql" else None)
                            for c in inspector.get_columns(table)},
                "primary_key": (pk.get("name"), sorted(pk["constrained_columns"])),
                "foreign_keys": sorted((tuple(fk["constrained_columns"]), fk["referred_table"],
                                        tuple(fk["referred_columns"]), json.dumps(fk.get("options") or {},
                                                                                  sort_keys=True))
                                       for fk in inspector.get_foreign_keys(table)),
                "indexes": sorted((ix["name"], tuple(ix["column_names"]), bool(ix["unique"]))
                                  for ix in inspector.get_indexes(table)),
                "unique": sorted((uc["name"], tuple(uc["column_names"]))
                                 for uc in inspector.get_unique_constraints(table)),
                "checks": sorted(" ".join(ck["sqltext"].split()) for ck in inspector.get_check_constraints(table)),
            }
        with engine.connect() as conn:
            out["alembic_version rows"] = [r[0] for r in conn.execute(text("SELECT version_num FROM alembic_version"))]
        return out
    finally:
        engine.dispose()


def _default(value: str | None) -> str | None:
    return None if value is None else value.strip("'\"()")


def _differences(a: dict, b: dict) -> list[str]:
    found = []
    for table in sorted(a.keys() | b.keys()):
        if table not in a or table not in b:
            found.append(f"{table}: only in {'the migrated' if table in b else 'the one-step'} catalog")
            continue
        for part in a[table] if isinstance(a[table], dict) else ["rows"]:
            left = a[table][part] if isinstance(a[table], dict) else a[table]
            right = b[table][part] if isinstance(b[table], dict) else b[table]
            if left != right:
                found.append(f"{table} {part}: one-step {left} != migrated {right}")
    return found


def _apply_later_migration(url: str, tmp_path: Path) -> None:
    """Upgrade the database with a copy of the migrations plus one more (as a later release would)."""
    from alembic import command
    from alembic.config import Config

    scripts = tmp_path / "migrations"
    if not scripts.exists():
        shutil.copytree(str(files("facesearch.catalog") / "migrations"), scripts,
                        ignore=shutil.ignore_patterns("__pycache__"))
        (scripts / "versions" / "9999_later.py").write_text(LATER_MIGRATION.format(head=head_revision()))
    config = Config()
    config.set_main_option("script_location", str(scripts))
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    finally:
        engine.dispose()


def test_head_revision_is_alembics():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(files("facesearch.catalog") / "migrations"))
    assert head_revision() == ScriptDirectory.from_config(config).get_current_head()


def test_a_new_home_gets_the_migrated_schema_without_alembic(tmp_path):
    opened = _open_with_cli(tmp_path / "home")
    assert opened == {"code": 0, "alembic": False}  # the one-step path ran: Alembic never imported
    fresh = sqlite_url(tmp_path / "home" / "catalog.db")
    migrated = sqlite_url(tmp_path / "migrated.db")
    _migrated(migrated)
    fresh_schema, migrated_schema = schema_of(fresh), schema_of(migrated)
    assert len(migrated_schema) > 20
    assert migrated_schema["alembic_version rows"] == [head_revision()]
    assert _differences(fresh_schema, migrated_schema) == []
    # a later migration applies on top of both, and they still agree
    _apply_later_migration(fresh, tmp_path)
    _apply_later_migration(migrated, tmp_path)
    after = schema_of(fresh)
    assert after["alembic_version rows"] == ["9999_later"]
    assert "later_note" in after["faces"]["columns"] and "later_things" in after
    assert _differences(after, schema_of(migrated)) == []


def test_a_catalog_at_head_is_opened_without_alembic(tmp_path):
    assert _open_with_cli(tmp_path / "home") == {"code": 0, "alembic": False}  # created in one step
    assert _open_with_cli(tmp_path / "home") == {"code": 0, "alembic": False}  # at head: nothing to run
    migrated = sqlite_url(tmp_path / "migrated.db")
    _migrated(migrated)  # a catalog the migrations made, at head too
    assert _open_with_cli(tmp_path / "home2", "--db", migrated) == {"code": 0, "alembic": False}


def test_an_existing_catalog_still_migrates_through_alembic(tmp_path):
    """A database at an older revision is upgraded by the migrations, not recreated (its rows stay)."""
    from alembic import command
    from alembic.config import Config

    url = sqlite_url(tmp_path / "old.db")
    engine = create_engine(url)
    config = Config()
    config.set_main_option("script_location", str(files("facesearch.catalog") / "migrations"))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0009_shared_server_state")  # before photo rotation
        connection.execute(text("INSERT INTO collections (name, pack, legal_basis, keep_thumbnails, created_at) "
                                "VALUES ('old', 'buffalo_s', 'consent', 1, '2026-01-01')"))
    engine.dispose()
    opened = _open_with_cli(tmp_path / "home", "--db", url)
    assert opened == {"code": 0, "alembic": True}
    upgraded = schema_of(url)
    assert upgraded["alembic_version rows"] == [head_revision()] and "rotation" in upgraded["images"]["columns"]
    catalog = Catalog.open(url)
    try:
        assert [c.name for c in catalog.collections()] == ["old"]
    finally:
        catalog.close()


def test_a_new_catalog_on_postgresql_is_the_migrated_one(postgres_url, postgres_server_url, tmp_path):
    from sqlalchemy.engine import make_url

    opened = _open_with_cli(tmp_path / "home", "--db", postgres_url)
    assert opened == {"code": 0, "alembic": False}
    name = make_url(postgres_url).database + "_migrated"
    admin = create_engine(postgres_server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        migrated = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
        _migrated(migrated)
        assert _differences(schema_of(postgres_url), schema_of(migrated)) == []
        _apply_later_migration(postgres_url, tmp_path)
        _apply_later_migration(migrated, tmp_path)
        assert _differences(schema_of(postgres_url), schema_of(migrated)) == []
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_a_database_with_any_table_is_not_recreated(tmp_path):
    """Only an empty database is created in one step: a partial one goes to the migrations."""
    from facesearch.catalog.migrate import create_fresh
    from facesearch.governance.schema import catalog_schema

    url = sqlite_url(tmp_path / "partial.db")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE unrelated (id INTEGER PRIMARY KEY)"))
        assert create_fresh(engine, catalog_schema()) is False
        assert inspect(engine).get_table_names() == ["unrelated"]
    finally:
        engine.dispose()
