"""Packaging: optional parts are extras imported only where used (a clear error names the extra),
and the deployment files keep the promises docs/operations.md makes (non-root, volume,
healthcheck on /ready, secrets by file, the same install steps as scripts/check-install.sh)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[1]
DEPLOY = ROOT / "deploy"

#: Run in a fresh interpreter in which pymilvus and matplotlib cannot be imported.
_BLOCKED = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pymilvus", "milvus_lite", "matplotlib"):
            raise ImportError(f"No module named {name!r} (blocked by the test)")
sys.meta_path.insert(0, Block())
"""


def _run_without_extras(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _BLOCKED + code], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin",
                                             "HOME": str(tmp_path), "OPENBLAS_NUM_THREADS": "1"})


def test_extras_are_declared_and_out_of_the_core():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    extras = project["optional-dependencies"]
    for name in ("pymilvus", "milvus-lite", "matplotlib", "onnxruntime-gpu", "psycopg", "ray"):
        assert name not in core
    assert any(d.startswith("ray") for d in extras["ray"])
    assert any(d.startswith("pymilvus") for d in extras["milvus"])
    assert any(d.startswith("milvus-lite") for d in extras["milvus"])
    assert any(d.startswith("matplotlib") for d in extras["eval"])
    assert any(d.startswith("onnxruntime-gpu") for d in extras["gpu"])
    for name in ("pydantic-settings", "prometheus-client", "pillow-heif"):
        assert name in core
    # make test installs what the tests use
    assert ".[dev,dlib,milvus,eval,openvino,ray]" in (ROOT / "Makefile").read_text()


def test_everything_but_the_extras_works_without_them(tmp_path):
    done = _run_without_extras("""
import facesearch.cli.main, facesearch.api.app, facesearch.backup, facesearch.cli.eval_commands
from facesearch.services.engine import Engine
from facesearch.extras import MissingExtraError
with Engine.open("home") as engine:
    engine.create_collection("c")
    assert len(engine.index_of(engine.collection("c"))) == 0     # FAISS: no pymilvus needed
milvus = Engine.open("milvus-home", backend="milvus")
try:
    milvus.index_of(milvus.create_collection("m"))
except MissingExtraError as exc:
    print("MILVUS:", exc)
try:
    import facesearch.eval.plots
except MissingExtraError as exc:
    print("EVAL:", exc)
""", tmp_path)
    assert done.returncode == 0, done.stderr
    assert "MILVUS: the Milvus index backend needs the optional package 'pymilvus': " \
           "pip install 'facesearch[milvus]'" in done.stdout
    assert "EVAL: evaluation plots needs the optional package 'matplotlib': pip install 'facesearch[eval]'" \
        in done.stdout


def test_dockerfile_runs_the_checked_install_steps_as_a_non_root_user():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "sh /opt/facesearch-setup/install.sh /opt/facesearch /src" in dockerfile
    assert "COPY pyproject.toml README.md /src/" in dockerfile and "COPY src /src/src" in dockerfile
    check = (ROOT / "scripts" / "check-install.sh").read_text()
    assert 'sh "$root/deploy/install.sh"' in check  # the very same steps, run here
    user = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER ")]
    assert user == ["facesearch"]
    assert 'VOLUME ["/data"]' in dockerfile and "FACESEARCH_HOME=/data" in dockerfile
    assert "HEALTHCHECK" in dockerfile and "healthcheck.py" in dockerfile
    assert "/ready" in (DEPLOY / "healthcheck.py").read_text()


def test_compose_keeps_the_database_password_in_secret_files():
    compose = (DEPLOY / "compose.yaml").read_text()
    for service in ("facesearch:", "postgres:", "milvus:", "etcd:", "minio:", "proxy:"):
        assert f"\n  {service}" in compose
    assert "FACESEARCH_DATABASE_URL_FILE: /run/secrets/database_url" in compose
    assert "POSTGRES_PASSWORD_FILE: /run/secrets/db_password" in compose
    assert "POSTGRES_PASSWORD:" not in compose and "FACESEARCH_DATABASE_URL:" not in compose
    assert "milvus run standalone" in compose.replace('"', "").replace(",", "").replace("[", "").replace("]", "")


def test_systemd_unit_and_proxies():
    unit = (DEPLOY / "facesearch.service").read_text()
    assert "User=facesearch" in unit and "ExecStart=/opt/facesearch/bin/facesearch serve" in unit
    assert "ProtectSystem=strict" in unit and "ReadWritePaths=/var/lib/facesearch" in unit
    assert "FACESEARCH_DATABASE_URL_FILE=%d/database_url" in unit
    for proxy in ("Caddyfile", "nginx.conf"):
        text = (DEPLOY / proxy).read_text()
        assert "/metrics" in text  # refused at the proxy
    assert "ssl_certificate" in (DEPLOY / "nginx.conf").read_text()
