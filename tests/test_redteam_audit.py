"""Red team: the audit log against an insider who can write the database (issue 11).

Each test repeats one attack and asserts it no longer gets through: a full-chain rewrite with the
project's own ``record_hash`` (head row recomputed too), delete-newest-then-append, a checkpoint
forged with another key, deleted checkpoints, an export overwritten, a loose key file, a 40 MB
username and oversized record contents. The database is tampered with directly (sqlite3), as
someone with file access would; verification runs through ``facesearch audit verify``.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from facesearch.governance import Governance
from facesearch.governance.audit import MAX_DETAILS_BYTES, record_hash
from facesearch.governance.checkpoints import KEY_ENV, KEY_FILE_ENV, PUBLIC_KEY_ENV, STORE, AuditAnchor
from facesearch.services.engine import Engine

RECORDS = 8


@pytest.fixture(autouse=True)
def _no_audit_env(monkeypatch):
    """The key, export and pinned public key come from the test, never the environment."""
    for name in (KEY_ENV, KEY_FILE_ENV, PUBLIC_KEY_ENV, "FACESEARCH_AUDIT_EXPORT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def home(tmp_path) -> Path:
    """A home whose audit log holds ``RECORDS`` ordinary records."""
    home = tmp_path / "home"
    with Engine.open(home) as engine:
        log = Governance(engine).audit
        for i in range(1, RECORDS + 1):
            log.append(f"user{i % 3}", "search", {"probe_sha256": f"{i:064x}", "results": [[i, 0.5]]},
                       purpose=f"purpose {i}", case_ref=f"CASE-{i}")
    return home


def db(home: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(home / "catalog.db")
    conn.row_factory = sqlite3.Row
    return conn


def rewrite_from(home: Path, record_id: int, purpose: str) -> None:
    """The insider's full-chain rewrite: change one record, recompute its hash and every later one
    with ``record_hash``, and the head row, so the chain on its own is consistent again."""
    conn = db(home)
    with conn:
        rows = [dict(r) for r in conn.execute("SELECT * FROM audit_log ORDER BY id")]
        prev = None
        for row in rows:
            if row["id"] == record_id:
                row["purpose"] = purpose
            if row["id"] >= record_id:
                row["prev_hash"] = prev if prev is not None else row["prev_hash"]
                row["hash"] = record_hash(row["prev_hash"], row["at"], row["actor"], row["action"], row["purpose"],
                                          row["case_ref"], row["details"])
            prev = row["hash"]
        conn.execute("DELETE FROM audit_log WHERE id >= ?", (record_id,))  # prev_hash is unique: re-insert
        for row in rows:
            if row["id"] >= record_id:
                conn.execute("INSERT INTO audit_log (id, at, actor, action, purpose, case_ref, details, prev_hash, "
                             "hash) VALUES (:id, :at, :actor, :action, :purpose, :case_ref, :details, :prev_hash, "
                             ":hash)", row)
        conn.execute("UPDATE audit_head SET last_id = ?, last_hash = ?", (rows[-1]["id"], rows[-1]["hash"]))
    conn.close()


def verify(cli, home: Path, *extra) -> tuple[int, str, dict]:
    code, out, err = cli("audit", "verify", "--home", home, *extra)
    json_code, json_out, _ = cli("audit", "verify", "--home", home, "--json", *extra)
    assert json_code == code
    return code, out + err, json.loads(json_out)


def checkpoint(cli, home: Path, *extra) -> str:
    code, out, err = cli("audit", "checkpoint", "--home", home, *extra)
    assert code == 0, err
    return out


def append(home: Path, actor: str = "api_ivy", action: str = "login") -> int:
    """Any ordinary action that writes an audit record."""
    with Engine.open(home) as engine:
        return Governance(engine).audit.append(actor, action, {"ok": True}).id


# -- full-chain rewrite ---------------------------------------------------------------------------------


def test_full_chain_rewrite_is_invisible_without_a_checkpoint(cli, home):
    """The attack as reported: the chain alone cannot tell (this is why checkpoints exist)."""
    rewrite_from(home, 3, "routine check")
    code, out, _ = verify(cli, home)
    assert code == 0 and "no signed checkpoint yet" in out


def test_full_chain_rewrite_after_a_checkpoint_fails_verify_naming_the_record(cli, home):
    out = checkpoint(cli, home)
    assert f"records 1..{RECORDS} signed" in out
    key = home / "audit-signing.key"
    assert key.is_file() and (key.stat().st_mode & 0o777) == 0o600
    assert verify(cli, home)[0] == 0  # the control: untouched, it verifies

    rewrite_from(home, 3, "routine check")
    code, out, report = verify(cli, home)
    assert code != 0
    assert report["problems"][0][0] == 3, report  # the first record that differs, by id
    assert "record 3:" in out and "rewritten after it was signed" in out


def test_rewrite_of_a_record_covered_by_an_older_checkpoint_is_named(cli, home):
    checkpoint(cli, home)
    for _ in range(4):
        append(home)
    checkpoint(cli, home)  # a second checkpoint covers RECORDS+1..RECORDS+4 only
    rewrite_from(home, 2, "nothing to see")
    code, _, report = verify(cli, home)
    assert code != 0 and report["problems"][0][0] == 2 and report["checkpoints"] == 2


def test_deleting_the_home_checkpoints_does_not_hide_a_rewrite_from_the_export(cli, home, tmp_path):
    export = tmp_path / "worm"
    checkpoint(cli, home, "--export", export)
    exported = sorted(export.glob("*.json"))
    assert len(exported) == 1 and (export / "public-key.pem").is_file()
    rewrite_from(home, 5, "rewritten")
    for path in (home / STORE).glob("*.json"):
        path.unlink()  # the insider also removes the home's checkpoints
    code, out, report = verify(cli, home, "--export", export)
    assert code != 0
    assert report["problems"][0][0] == 5, report
    assert "missing from the home" in out


def test_a_checkpoint_forged_with_another_key_is_caught(cli, home, tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    checkpoint(cli, home)
    pinned = tmp_path / "pinned.pem"
    pinned.write_bytes((home / STORE / "public-key.pem").read_bytes())  # kept off the machine
    rewrite_from(home, 4, "rewritten")
    # the insider signs the rewritten chain with a key of their own, replacing the home's copies
    (home / "audit-signing.key").unlink()
    for path in (home / STORE).iterdir():
        path.unlink()
    with Engine.open(home) as engine:
        forged = AuditAnchor(Governance(engine).audit, home).checkpoint("mallory", key=Ed25519PrivateKey.generate())
    assert forged.checkpoint is not None
    assert verify(cli, home)[0] == 0  # unpinned, the home's own (replaced) public key is all there is
    code, out, report = verify(cli, home, "--public-key", pinned)
    assert code != 0 and "signature does not verify" in out


# -- delete the newest record, then append ------------------------------------------------------------


def test_delete_newest_then_append_does_not_reuse_the_id_and_fails_verify(cli, home):
    with db(home) as conn:
        conn.execute("DELETE FROM audit_log WHERE id = ?", (RECORDS,))
    conn.close()
    new_id = append(home)  # any ordinary action
    assert new_id == RECORDS + 1, "the deleted record's id was reused"
    code, out, report = verify(cli, home)
    assert code != 0
    assert f"{RECORDS}..{RECORDS} are missing" in out
    assert report["problems"][0][0] == RECORDS + 1


def test_delete_newest_and_fix_the_head_then_append_is_caught_by_the_checkpoint(cli, home):
    checkpoint(cli, home)
    conn = db(home)
    with conn:  # the insider also rewinds the head row, so the chain alone looks whole
        previous = conn.execute("SELECT hash FROM audit_log WHERE id = ?", (RECORDS - 1,)).fetchone()["hash"]
        conn.execute("DELETE FROM audit_log WHERE id = ?", (RECORDS,))
        conn.execute("UPDATE audit_head SET last_id = ?, last_hash = ?", (RECORDS - 1, previous))
    conn.close()
    assert append(home) == RECORDS  # with the head rewound, the id comes back...
    code, out, report = verify(cli, home)
    assert code != 0  # ...but the signed checkpoint names it
    assert report["problems"][0][0] == RECORDS and f"record {RECORDS}:" in out


def test_checkpoint_refuses_to_sign_a_broken_chain(cli, home):
    with db(home) as conn:
        conn.execute("UPDATE audit_log SET purpose = 'x' WHERE id = 2")
    conn.close()
    code, _, err = cli("audit", "checkpoint", "--home", home)
    assert code == 2 and "not signing" in err
    assert not list((home / STORE).glob("*.json"))


# -- the key and the write-once store -------------------------------------------------------------------


def test_a_key_file_readable_by_others_is_refused(cli, home):
    checkpoint(cli, home)
    os.chmod(home / "audit-signing.key", 0o644)
    append(home)
    code, _, err = cli("audit", "checkpoint", "--home", home)
    assert code == 2 and "chmod 600" in err


def test_the_key_can_live_outside_the_home_or_in_the_environment(cli, home, tmp_path, monkeypatch):
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    monkeypatch.setenv(KEY_FILE_ENV, str(tmp_path / "secrets" / "audit.key"))
    checkpoint(cli, home)
    assert (tmp_path / "secrets" / "audit.key").is_file() and not (home / "audit-signing.key").exists()
    monkeypatch.delenv(KEY_FILE_ENV)
    seed = Ed25519PrivateKey.generate()
    raw = seed.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())
    monkeypatch.setenv(KEY_ENV, base64.b64encode(raw).decode())
    # a different key than the one that signed the stored checkpoint: verify says so
    code, out, _ = verify(cli, home)
    assert code != 0 and "signature does not verify" in out
    assert not (home / "audit-signing.key").exists()


def test_exports_are_write_once(cli, home, tmp_path):
    export = tmp_path / "worm"
    checkpoint(cli, home, "--export", export)
    (first,) = export.glob("*.json")
    before = first.read_bytes()
    append(home)
    checkpoint(cli, home, "--export", export)
    assert first.read_bytes() == before and len(list(export.glob("*.json"))) == 2
    assert "no new checkpoint" in checkpoint(cli, home, "--export", export)  # nothing new: nothing signed
    other = tmp_path / "other"
    other.mkdir()
    (other / "public-key.pem").write_text("not this installation's key")
    code, _, err = cli("audit", "checkpoint", "--home", home, "--export", other)
    assert code == 2 and "public-key.pem is not the audit public key" in err  # refused, nothing written
    assert not list(other.glob("*.json"))


def test_the_server_writes_checkpoints_on_a_schedule(open_engine, tmp_path):
    import time

    from fastapi.testclient import TestClient

    from facesearch.api.app import create_app

    engine = open_engine()
    Governance(engine).audit.append("someone", "login", {"ok": True})
    export = tmp_path / "worm"
    with TestClient(create_app(engine, checkpoint_every_s=3600, checkpoint_export=[str(export)])):
        deadline = time.monotonic() + 30
        while not list(export.glob("*.json")) and time.monotonic() < deadline:
            time.sleep(0.05)
    (stored,) = (engine.home / STORE).glob("*.json")
    assert json.loads(stored.read_text())["by"] == "system:checkpoint"
    assert [p.name for p in export.glob("*.json")] == [stored.name]


# -- bounded records --------------------------------------------------------------------------------------


def test_a_40_mb_username_is_rejected_and_leaves_no_record(api_fresh_env):
    env = api_fresh_env({"alpha": []})
    before = env.gov.audit.entries(newest_first=True, limit=1)[0].id
    response = env.anon.post("/api/login", json={"username": "x" * (40 * 2**20), "password": "guess"})
    assert response.status_code == 422
    assert env.gov.audit.entries(newest_first=True, limit=1)[0].id == before


def test_failed_login_records_carry_a_bounded_normalised_username(api_fresh_env):
    env = api_fresh_env({"alpha": []})
    name = "ad\nmin\x00" + "y" * 92  # 100 characters: accepted by the API, with control characters
    assert env.anon.post("/api/login", json={"username": name, "password": "guess"}).status_code == 401
    (record,) = [e for e in env.gov.audit.entries(action="login", newest_first=True, limit=1)]
    assert len(record.actor) <= 100 and "\n" not in record.actor and "\x00" not in record.actor
    assert record.actor.startswith("ad?min?") and "…#" in record.actor
    assert env.gov.audit.verify().ok


def test_audit_records_are_bounded_in_size(tmp_path):
    with Engine.open(tmp_path / "home") as engine:
        log = Governance(engine).audit
        entry = log.append("a" * 10_000, "search", {"note": "z" * (40 * 2**20), "ids": list(range(200_000)),
                                                    "nested": {"k" * 5000: ["w" * 50_000] * 50}},
                           purpose="p" * 100_000, case_ref="c" * 10_000)
        stored = log.entries()[-1]
        assert log.verify().ok
    size = len(json.dumps(stored.to_dict()))
    assert size <= MAX_DETAILS_BYTES + 10_000, size
    assert "40" in stored.details["note"] or "chars" in json.dumps(stored.details)
    assert len(stored.actor) <= 100 and len(stored.purpose) <= 2100 and len(stored.case_ref) <= 200
    assert entry.id == stored.id


def test_the_api_verify_checks_the_signed_checkpoints_too(api_fresh_env):
    env = api_fresh_env({"alpha": []})
    auditor = env.as_user("api_audrey")
    AuditAnchor(env.gov.audit, env.home).checkpoint("test")
    assert auditor.get("/api/audit/verify").json()["checkpoints"] == 1
    rewrite_from(env.home, 2, "rewritten")
    report = auditor.get("/api/audit/verify").json()
    assert report["ok"] is False and report["problems"][0][0] == 2, report


def test_bounded_records_and_checkpoints_on_postgresql(postgres_url, tmp_path):
    """The same bounds hold where the columns are strict (VARCHAR(100) actor): a long username is
    folded, not an error; a checkpoint then catches a rewrite there too."""
    from sqlalchemy import text

    home = tmp_path / "pg_home"
    with Engine.open(home, database_url=postgres_url) as engine:
        log = Governance(engine).audit
        for i in range(3):
            log.append("u" * 10_000, "login", {"ok": False, "i": i})
        anchor = AuditAnchor(log, home)
        assert anchor.checkpoint("test").checkpoint is not None
        with engine.catalog.session() as s:
            s.execute(text("UPDATE audit_log SET details = '{}' WHERE id = 2"))
            s.commit()
        check = anchor.verify()
    assert not check.ok and check.problems[0][0] == 2
