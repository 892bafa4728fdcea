"""Running facesearch as a service: settings (precedence, validation, secrets), JSON logs and the
access log, /metrics (content and who may read it), /ready (and each reason it says no)."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from facesearch import metrics
from facesearch.api.app import create_app
from facesearch.cli.main import main
from facesearch.logs import JsonFormatter, configure_logging
from facesearch.readiness import ModelCheck
from facesearch.services.engine import Engine
from facesearch.settings import SettingsError, describe, load_settings

from .conftest import LFW

# -- settings -------------------------------------------------------------------------------------------


def test_precedence_flag_env_file_config_default(tmp_path, clean_env):
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.json").write_text(json.dumps({"port": 8100, "workers": 3, "log_level": "debug",
                                                  "host": "0.0.0.0"}))
    secret = tmp_path / "workers"
    secret.write_text("5\n")
    clean_env.setenv("FACESEARCH_HOME", str(home))
    clean_env.setenv("FACESEARCH_WORKERS_FILE", str(secret))  # file beats config.json
    clean_env.setenv("FACESEARCH_LOG_LEVEL", "warning")  # env beats config.json
    clean_env.setenv("FACESEARCH_HOST", "127.0.0.2")
    settings = load_settings(overrides={"host": "127.0.0.3"})  # the flag beats the environment
    assert settings.home == home.resolve()
    assert (settings.port, settings.workers, settings.log_level, settings.host) == (8100, 5, "WARNING", "127.0.0.3")
    assert settings.worker_queue == 8  # default
    origins = {v.name: v.origin for v in describe(settings, overrides={"host": "127.0.0.3"})}
    assert origins["port"] == "config.json"
    assert origins["workers"] == f"file FACESEARCH_WORKERS_FILE={secret}"
    assert origins["log_level"] == "environment FACESEARCH_LOG_LEVEL"
    assert origins["host"] == "command line"
    assert origins["worker_queue"] == "default"
    assert origins["home"] == "environment FACESEARCH_HOME"
    clean_env.setenv("FACESEARCH_WORKERS", "7")  # env beats the file
    assert load_settings().workers == 7


@pytest.mark.parametrize(("variable", "value", "words"), [
    ("FACESEARCH_PORT", "0", "greater than or equal to 1"),
    ("FACESEARCH_PORT", "70000", "less than or equal to 65535"),
    ("FACESEARCH_PORT", "http", "valid integer"),
    ("FACESEARCH_WORKERS", "0", "greater than or equal to 1"),
    ("FACESEARCH_WORKER_QUEUE", "-3", "greater than or equal to 1"),
    ("FACESEARCH_MAX_UPLOAD_BYTES", "0", "greater than or equal to 1"),
    ("FACESEARCH_MAX_REQUEST_BYTES", "-1", "greater than or equal to 1"),
    ("FACESEARCH_RETENTION_HOURS", "0", "greater than 0"),
    ("FACESEARCH_RETENTION_HOURS", "900000", "less than or equal to"),
    ("FACESEARCH_LOG_FORMAT", "xml", "'text' or 'json'"),
    ("FACESEARCH_BACKEND", "annoy", "'faiss' or 'milvus'"),
    ("FACESEARCH_METRICS_ALLOW", "10.0.0.0/8,intranet", "network"),
    ("FACESEARCH_TRUSTED_PROXIES", "proxy.local", "not an IP address"),
    ("FACESEARCH_INGEST_ROOTS", "photos", "not an absolute path"),
])
def test_a_bad_value_is_one_line_naming_the_variable(tmp_path, clean_env, variable, value, words):
    clean_env.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(variable)
    assert words in message


def test_bad_value_in_config_json_names_the_file(tmp_path, clean_env):
    (tmp_path / "config.json").write_text(json.dumps({"port": 123456}))
    with pytest.raises(SettingsError, match=r"^FACESEARCH_PORT \(from config.json\)"):
        load_settings(tmp_path)


def test_config_show_masks_secrets_and_names_origins(tmp_path, clean_env, capsys):
    secret = tmp_path / "db_url"
    secret.write_text("postgresql+psycopg://facesearch:hunter2@db.internal:5432/faces\n")
    clean_env.setenv("FACESEARCH_DATABASE_URL_FILE", str(secret))
    clean_env.setenv("FACESEARCH_MILVUS_TOKEN", "root:Milvus-s3cret")
    clean_env.setenv("FACESEARCH_METRICS_ALLOW", "10.1.0.0/16, 192.168.7.7")
    assert main(["config", "show", "--home", str(tmp_path / "h")]) == 0
    text = capsys.readouterr().out
    assert "hunter2" not in text and "s3cret" not in text
    assert "postgresql+psycopg://facesearch:***@db.internal:5432/faces" in text
    assert f"(file FACESEARCH_DATABASE_URL_FILE={secret})" in text
    assert main(["config", "show", "--json", "--home", str(tmp_path / "h")]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["milvus_token"] == {"variable": "FACESEARCH_MILVUS_TOKEN", "value": "***",
                                     "origin": "environment FACESEARCH_MILVUS_TOKEN"}
    assert shown["metrics_allow"]["value"] == ["10.1.0.0/16", "192.168.7.7/32"]
    assert shown["home"]["origin"] == "command line"
    assert not (tmp_path / "h").exists()  # looking at the settings creates nothing


def test_database_url_from_the_environment_is_used_and_never_written(tmp_path, clean_env):
    other = tmp_path / "elsewhere.db"
    clean_env.setenv("FACESEARCH_DATABASE_URL", f"sqlite:///{other}")
    with Engine.open(tmp_path / "home") as engine:
        assert engine.catalog.engine.url.database == str(other)
    assert other.is_file()
    assert json.loads((tmp_path / "home" / "config.json").read_text())["database_url"] is None
    assert "milvus_token" not in json.loads((tmp_path / "home" / "config.json").read_text())


def test_unreadable_secret_file_is_a_clear_error(tmp_path, clean_env):
    clean_env.setenv("FACESEARCH_MILVUS_TOKEN_FILE", str(tmp_path / "missing"))
    with pytest.raises(SettingsError, match="FACESEARCH_MILVUS_TOKEN_FILE=.*cannot read the file"):
        load_settings(tmp_path)


def test_ingest_roots_refuse_paths_outside_even_through_links(tmp_path, clean_env):
    inside, outside = tmp_path / "photos", tmp_path / "private"
    inside.mkdir()
    outside.mkdir()
    (inside / "escape").symlink_to(outside)
    clean_env.setenv("FACESEARCH_INGEST_ROOTS", str(inside))
    settings = load_settings(tmp_path)
    assert settings.ingest_allowed(inside / "a.jpg")
    assert not settings.ingest_allowed(outside / "a.jpg")
    assert not settings.ingest_allowed(inside / "escape" / "a.jpg")
    assert not settings.ingest_allowed(inside / ".." / "private")
    assert not load_settings(tmp_path, {"ingest_roots": []}).ingest_allowed(inside)  # none: uploads only


# -- logs -----------------------------------------------------------------------------------------------


def test_json_log_lines_carry_the_extra_fields():
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    try:
        logging.getLogger("facesearch.test").info("hello %s", "there", extra={"faces": 3})
        logging.getLogger("facesearch.test").debug("not at info")
    finally:
        configure_logging("WARNING", "text")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["msg"] == "hello there" and entry["faces"] == 3 and entry["level"] == "INFO"
    assert entry["logger"] == "facesearch.test" and entry["ts"].endswith("+00:00")


@pytest.fixture
def access_lines():
    """The access log's lines as parsed JSON, captured for one test."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("facesearch.access")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)
    logger.setLevel(old)


def test_one_access_line_per_request_with_no_personal_data(api_env, access_lines):
    ivy = api_env.as_user("api_ivy")
    probe = (LFW / "Colin_Powell_0002.jpg").read_bytes()
    response = ivy.post("/api/search", files={"probe": ("Jane_Doe_at_home.jpg", probe, "image/jpeg")},
                        data={"purpose": "find Jane Doe", "case_ref": "CASE-SECRET-77", "collections": "alpha"},
                        headers={"X-Request-ID": "trace-42"})
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "trace-42"
    candidate = response.json()["candidates"][0]
    face_id = candidate["face_id"]
    assert ivy.get(candidate["thumbnail_url"]).status_code == 200  # under the search's view grant
    assert api_env.anon.get("/api/me").status_code == 401
    lines = access_lines()
    assert [line["route"] for line in lines] == ["/api/search", "/api/faces/{face_id}/thumbnail", "/api/me"]
    search, thumb, anonymous = lines
    assert search["request_id"] == "trace-42" and search["user"] == "api_ivy" and search["status"] == 200
    assert search["method"] == "POST" and search["duration_ms"] > 0
    assert thumb["user"] == "api_ivy" and len(thumb["request_id"]) == 32  # generated
    assert anonymous["user"] is None and anonymous["status"] == 401
    text = json.dumps(lines)
    for private in ("Jane", "CASE-SECRET", "Colin", str(face_id) + "/"):
        assert private not in text


def test_request_id_that_is_not_a_plain_token_is_replaced(api_env, access_lines):
    response = api_env.anon.get("/health", headers={"X-Request-ID": "x\ninjected: yes"})
    assert response.headers["x-request-id"] != "x\ninjected: yes"
    assert access_lines()[0]["request_id"] == response.headers["x-request-id"]


# -- metrics --------------------------------------------------------------------------------------------


def _scrape(app, client=("127.0.0.1", 40000), headers=None):
    return TestClient(app, client=client).get("/metrics", headers=headers or {})


def _samples(text: str) -> dict[str, float]:
    """``name{labels}`` -> value of every sample line."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def test_metrics_in_prometheus_text_format(api_env):
    api_env.as_user("api_admin").get("/api/collections")
    metrics.set_queue_depth_source(lambda: 3)
    try:
        response = _scrape(api_env.app)
    finally:
        metrics.set_queue_depth_source(None)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    types = {line.split()[2] for line in response.text.splitlines() if line.startswith("# TYPE facesearch_")}
    assert {"facesearch_http_request_duration_seconds", "facesearch_search_duration_seconds",
            "facesearch_faces", "facesearch_ingest_files_total", "facesearch_audit_records",
            "facesearch_worker_queue_depth"} <= types
    samples = _samples(response.text)
    assert samples['facesearch_faces{collection="alpha"}'] == len(api_env.faces["Colin_Powell_0001"]) + len(
        api_env.faces["George_W_Bush_0001"])
    assert samples['facesearch_faces{collection="beta"}'] == 1
    assert samples["facesearch_worker_queue_depth"] == 3
    assert samples['facesearch_ingest_files_total{outcome="indexed"}'] >= 3
    assert samples["facesearch_audit_records"] == len(api_env.gov.audit.entries())
    assert samples['facesearch_http_request_duration_seconds_count{method="GET",route="/api/collections",'
                   'status="200"}'] >= 1
    assert not any("/api/faces/1" in key for key in samples)  # templates, never concrete paths


def test_a_failing_queue_callback_does_not_break_the_scrape(api_env):
    metrics.set_queue_depth_source(lambda: 1 / 0)
    try:
        response = _scrape(api_env.app)
    finally:
        metrics.set_queue_depth_source(None)
    assert response.status_code == 200
    assert "facesearch_worker_queue_depth" not in response.text


def test_metrics_are_refused_to_other_addresses(api_env):
    assert _scrape(api_env.app, ("203.0.113.9", 5000)).status_code == 403
    assert _scrape(api_env.app, ("::1", 5000)).status_code == 200
    assert _scrape(api_env.app, ("testclient", 5000)).status_code == 403  # not an address: no


def test_red_team_metrics_through_a_loopback_proxy_or_a_forged_header(api_env):
    """A reverse proxy on loopback relays the world: the forwarded-for hops count too; a forged
    X-Forwarded-For: 127.0.0.1 from outside gains nothing."""
    relayed = {"X-Forwarded-For": "203.0.113.9"}
    assert _scrape(api_env.app, ("127.0.0.1", 5000), relayed).status_code == 403
    assert _scrape(api_env.app, ("127.0.0.1", 5000), {"Forwarded": 'for="[2001:db8::1]:4711"'}).status_code == 403
    assert _scrape(api_env.app, ("203.0.113.9", 5000), {"X-Forwarded-For": "127.0.0.1"}).status_code == 403


def test_metrics_allow_list_opens_a_network(tmp_path, analyzer, clean_env):
    engine = _engine(tmp_path / "home", analyzer)
    settings = load_settings(engine.home, {"metrics_allow": "10.20.0.0/16", "disk_floor_mb": 0})
    app = create_app(engine, settings=settings)
    assert _scrape(app, ("10.20.3.4", 5000)).status_code == 200
    assert _scrape(app, ("10.21.3.4", 5000)).status_code == 403
    assert _scrape(app, ("127.0.0.1", 5000), {"X-Forwarded-For": "10.20.3.4"}).status_code == 200
    engine.close()


# -- readiness ------------------------------------------------------------------------------------------


def _engine(home: Path, analyzer, photos=("Colin_Powell_0001", "Hugo_Chavez_0001")) -> Engine:
    opened = Engine.open(home)
    engine = Engine(opened.home, opened.config, opened.catalog, analyzer_factory=lambda: analyzer)
    if photos:
        engine.index([LFW / f"{name}.jpg" for name in photos], "alpha", progress=False)
    return engine


def test_ready_and_health(api_env):
    assert api_env.anon.get("/health").json() == {"status": "ok"}
    response = api_env.anon.get("/ready")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready", "checks": {"catalog": "ok", "index": "ok", "models": "ok",
                                                             "disk": "ok"}}


def test_not_ready_when_index_and_catalog_disagree(tmp_path, analyzer, clean_env):
    engine = _engine(tmp_path / "home", analyzer)
    client = TestClient(create_app(engine, settings=load_settings(engine.home, {"disk_floor_mb": 0})))
    assert client.get("/ready").status_code == 200
    info = engine.collection("alpha")
    engine._raw_index(info).remove(engine.catalog.face_ids(info.id)[:1])  # fault: a vector lost in memory
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.json()["reason"] == "index: 1 collection(s) whose index and catalog disagree"
    assert "alpha" not in response.text  # the public endpoint names no collection
    engine.close()


def test_not_ready_below_the_disk_floor(tmp_path, analyzer, clean_env):
    engine = _engine(tmp_path / "home", analyzer, photos=())
    huge = 1 << 40  # MiB: a petabyte floor
    response = TestClient(create_app(engine, settings=load_settings(engine.home, {"disk_floor_mb": huge}))).get(
        "/ready")
    assert response.status_code == 503
    assert response.json()["reason"].startswith("disk: ") and "below the floor" in response.json()["reason"]
    engine.close()


def test_not_ready_when_the_catalog_is_gone(tmp_path, analyzer, clean_env):
    engine = _engine(tmp_path / "home", analyzer, photos=())
    client = TestClient(create_app(engine, settings=load_settings(engine.home, {"disk_floor_mb": 0})))
    engine.catalog.engine.dispose()
    for suffix in ("", "-wal", "-shm"):
        (engine.home / f"catalog.db{suffix}").unlink(missing_ok=True)  # fault: the database vanished
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["catalog"].startswith("unreachable")
    engine.close()


def test_model_check_notices_a_tampered_file(make_local_pack):
    pack = make_local_pack("tamper")
    check = ModelCheck()
    assert check(str(pack)) == "ok"
    victim = next(p for p in pack.iterdir() if p.suffix == ".onnx")
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert check(str(pack)).startswith("model files do not verify")
