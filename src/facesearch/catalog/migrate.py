"""Bringing a catalog database to the newest schema: Alembic's migrations, or one step when it is new.

An existing database goes through the Alembic migration chain (``migrations/``) unless it is
stamped with the head revision already (then there is nothing to run). A database with no
table at all, handed the complete metadata of the models, is created from
that metadata in one step and stamped with the head revision in ``alembic_version``, as
Alembic would leave it: importing Alembic and running ten migrations (batch table copies on
SQLite) is about 0.3 s of every new home's first command, ``facesearch index`` included.
``tests/test_fresh_catalog.py`` checks that both ways give the same schema (tables, columns,
types, keys, indexes, constraints) and that a later migration still applies on top.
"""

from __future__ import annotations

import ast
from functools import cache
from importlib.resources import files

from sqlalchemy import Column, MetaData, PrimaryKeyConstraint, String, Table, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from facesearch.errors import FacesearchError

MIGRATIONS = files("facesearch.catalog") / "migrations"


def migrate(engine: Engine, schema: MetaData | None = None) -> None:
    """Bring the database to the newest revision. ``schema``: the metadata of *every* model of the
    catalog database (:func:`facesearch.governance.schema.catalog_schema`); given it, a database
    without any table is created from it directly."""
    if at_head(engine) or (schema is not None and create_fresh(engine, schema)):
        return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def at_head(engine: Engine) -> bool:
    """Is the database stamped with the head revision already? (Then there is nothing to run, and
    Alembic need not even be imported: most commands open an existing catalog.)"""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return False
        versions = list(connection.execute(_version_table().select()).scalars())
    return versions == [head_revision()]


def create_fresh(engine: Engine, schema: MetaData) -> bool:
    """Create ``schema`` and stamp the head revision if the database has no table; False if it has
    (or another process created it meanwhile: then the migrations find it at head)."""
    try:
        with engine.begin() as connection:
            if inspect(connection).get_table_names():
                return False
            schema.create_all(connection, checkfirst=False)
            version = _version_table()
            version.create(connection)
            connection.execute(version.insert().values(version_num=head_revision()))
    except SQLAlchemyError:  # a concurrent creator won (PostgreSQL rolled this attempt back)
        return False
    return True


@cache
def head_revision() -> str:
    """The newest revision of the migration chain, read from the migration files (without Alembic)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS / "versions").iterdir():
        if not path.name.endswith(".py"):
            continue
        values = {}
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                if node.targets[0].id in ("revision", "down_revision"):
                    values[node.targets[0].id] = ast.literal_eval(node.value)
        revisions.add(values["revision"])
        down = values.get("down_revision")
        parents.update(down if isinstance(down, (tuple, list)) else [down] if down else [])
    heads = revisions - parents
    if len(heads) != 1:
        raise FacesearchError(f"the catalog migrations have {len(heads)} heads ({sorted(heads)}); expected one")
    return heads.pop()


def _version_table() -> Table:
    """Alembic's own version table, as its migration context creates it."""
    return Table("alembic_version", MetaData(), Column("version_num", String(32), nullable=False),
                 PrimaryKeyConstraint("version_num", name="alembic_version_pkc"))
