"""The service as an operator runs it: ``facesearch serve`` as a real uvicorn process configured by
FACESEARCH_* variables only, answering /ready and /metrics and logging JSON access lines; then a
backup and a restore through the command line, checked by doctor and audit verify."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .conftest import LFW


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "facesearch.cli.main", *args], env=env, capture_output=True,
                          text=True, timeout=300)
    if check:
        assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def service_env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACESEARCH_") or k == "FACESEARCH_THREADS"}
    env |= {"FACESEARCH_HOME": str(tmp_path / "home"), "FACESEARCH_LOG_FORMAT": "json",
            "FACESEARCH_PASSWORD": "correct horse battery", "FACESEARCH_DISK_FLOOR_MB": "1",
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), env.get("PYTHONPATH", "")])}
    return env


def test_done_when_serve_ready_metrics_json_access_log_backup_restore(service_env, tmp_path):
    env = service_env
    shown = json.loads(_cli(env, "config", "show", "--json").stdout)
    assert shown["home"]["origin"] == "environment FACESEARCH_HOME"
    assert shown["log_format"] == {"variable": "FACESEARCH_LOG_FORMAT", "value": "json",
                                   "origin": "environment FACESEARCH_LOG_FORMAT"}
    _cli(env, "index", str(LFW / "Colin_Powell_0001.jpg"), str(LFW / "Hugo_Chavez_0001.jpg"), "--collection", "alpha")
    _cli(env, "user", "add", "root", "--role", "admin")

    port = _free_port()
    log_path = tmp_path / "serve.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "facesearch.cli.main", "serve"],
                                  env=env | {"FACESEARCH_PORT": str(port)}, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, log_path.read_text()
            try:
                if _get(f"{base}/health")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.3)
        status, body = _get(f"{base}/ready")
        assert status == 200, body
        assert json.loads(body)["status"] == "ready"
        healthcheck = Path(__file__).parents[1] / "deploy" / "healthcheck.py"  # the image's HEALTHCHECK
        assert subprocess.run([sys.executable, str(healthcheck)], env=env | {"FACESEARCH_PORT": str(port)},
                              timeout=30).returncode == 0
        status, text = _get(f"{base}/metrics")
        assert status == 200
        typed = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE facesearch_")}
        assert len(typed) >= 5, typed
        assert 'facesearch_faces{collection="alpha"} 2.0' in text
    finally:
        server.terminate()
        server.wait(timeout=30)
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    access = [line for line in lines if line["logger"] == "facesearch.access" and line["route"] == "/ready"]
    assert access and access[0]["status"] == 200 and access[0]["request_id"] and "duration_ms" in access[0]
    assert all(line.startswith("{") for line in log_path.read_text().splitlines())  # JSON only

    _cli(env, "backup", str(tmp_path / "backup"))
    _cli(env, "restore", str(tmp_path / "backup"), "--home", str(tmp_path / "restored"))
    new = ["--home", str(tmp_path / "restored")]
    assert "consistent" in _cli(env, "doctor", "--check-only", *new).stdout
    assert "audit chain intact" in _cli(env, "audit", "verify", *new).stdout
    faces = {c["name"]: c["faces"] for c in json.loads(_cli(env, "collections", "--json", *new).stdout)}
    live = {c["name"]: c["faces"] for c in json.loads(_cli(env, "collections", "--json").stdout)}
    assert faces == live == {"alpha": 2}
