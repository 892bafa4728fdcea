"""A throwaway Milvus standalone server from the PyPI wheel ``milvus`` 2.3.5, for tests and benchmarks.

The wheel ships the ``milvus`` binary with embedded etcd and local storage. It needs its own
virtual environment (``pymilvus<2.4``, ``setuptools<81``, ``marshmallow<4``: it clashes with the
project's pymilvus 3 client), so :func:`ensure_venv` builds one once and :class:`MilvusServer` runs
the wheel's ``default_server`` in a small supervisor process inside it.

Why a supervisor: killing the Python process that started ``default_server`` leaves the
``milvus`` binary running. The supervisor stops the server when its stdin closes (its parent
exited, even by SIGKILL) or on SIGTERM, and the binary gets ``PR_SET_PDEATHSIG`` so that it dies
with the supervisor even if the supervisor itself is killed outright. Only loopback ports are used.

    server = MilvusServer.start(Path("build/milvus-venv"), Path("/tmp/m"))
    ... MilvusClient(uri=server.uri) ...
    server.stop()

``MilvusServer.start(..., auth=True)`` turns on ``common.security.authorizationEnabled`` in the
``milvus.yaml`` it writes: every call then needs a token (the default is ``root:Milvus``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from facesearch.processes import pid_alive

#: What the server's own environment needs (the newest standalone wheel on PyPI is 2.3.5).
REQUIREMENTS = ("milvus==2.3.5", "pymilvus<2.4", "setuptools<81", "marshmallow<4")
DEFAULT_VENV = Path("build/milvus-venv")
_READY = ".facesearch-ready"

_SUPERVISOR = r"""
import ctypes, os, signal, subprocess, sys

def _die_with_parent():  # the binary dies with this supervisor, even on SIGKILL
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

_popen = subprocess.Popen
def _popen_with_pdeathsig(*args, **kwargs):
    kwargs.setdefault("preexec_fn", _die_with_parent)
    return _popen(*args, **kwargs)
subprocess.Popen = _popen_with_pdeathsig

import socket
from milvus import default_server

base, port, auth = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
default_server.set_base_dir(base)
default_server.listen_port = port

# Every port from the OS's free ephemeral range: the wheel probes upwards from fixed defaults
# (2379, 53100, ...), so two servers starting at once can pick the same one. The embedded etcd's
# peer port is fixed (2380) unless etcd gets a config file: it gets one below.
def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

config = default_server.config
for key in [k for k in config.configurable_items if k.endswith("_port") and k != "proxy_port"]:
    config.configs[key] = _free_port()
_write_config = config.write_config
def write_config_with_etcd_ports():
    _write_config()
    peer = _free_port()
    client = config.configurable_items["etcd_port"][1]
    configs = os.path.join(config.base_data_dir, "configs")
    etcd_yaml = os.path.join(configs, "etcd.yaml")
    with open(etcd_yaml, "w") as fh:
        fh.write(f"name: default\n"
                 f"listen-client-urls: http://127.0.0.1:{client}\n"
                 f"advertise-client-urls: http://127.0.0.1:{client}\n"
                 f"listen-peer-urls: http://127.0.0.1:{peer}\n"
                 f"initial-advertise-peer-urls: http://127.0.0.1:{peer}\n"
                 f"initial-cluster: default=http://127.0.0.1:{peer}\n")
    milvus_yaml = os.path.join(configs, "milvus.yaml")
    text = open(milvus_yaml).read()
    marker = "  use:\n    embed: true"
    assert marker in text, "unexpected milvus.yaml template"
    text = text.replace(marker, marker + f"\n  config:\n    path: {etcd_yaml}", 1)
    if auth:  # common.security: the server then asks every call for user:password (root:Milvus)
        switch = "authorizationEnabled: false"
        assert switch in text, "unexpected milvus.yaml template (security section)"
        text = text.replace(switch, "authorizationEnabled: true", 1)
    open(milvus_yaml, "w").write(text)
config.write_config = write_config_with_etcd_ports

def stop(*_):
    try:
        default_server.stop()
    finally:
        os._exit(0)

signal.signal(signal.SIGTERM, stop)
default_server.wait_for_started = False  # its own wait gives up after 180 s; a loaded machine needs more
default_server.start()
default_server.wait_started(timeout=int(sys.argv[4]) * 1000)
print(f"ready {default_server.server_proc.pid}", flush=True)
sys.stdin.read()  # returns when the parent closes the pipe or dies
stop()
"""


def ensure_venv(venv: Path = DEFAULT_VENV, python: str | None = None) -> Path:
    """The server's virtual environment (built once; later calls return at once). -> its python."""
    venv = Path(venv).resolve()
    exe = venv / "bin" / "python"
    if (venv / _READY).is_file() and exe.is_file():
        return exe
    subprocess.run([python or sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(exe), "-m", "pip", "install", "--quiet", *REQUIREMENTS], check=True)
    (venv / _READY).write_text(" ".join(REQUIREMENTS) + "\n")
    return exe


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class MilvusServer:
    """A running standalone server: ``uri`` for clients, :meth:`stop` to end it."""

    uri: str
    port: int
    base_dir: Path
    binary_pid: int
    _supervisor: subprocess.Popen

    @classmethod
    def start(cls, venv: Path, base_dir: Path, port: int | None = None, auth: bool = False,
              timeout: float = 600.0) -> MilvusServer:
        python = ensure_venv(venv)
        port = port or free_port()
        base_dir = Path(base_dir).resolve()
        base_dir.mkdir(parents=True, exist_ok=True)
        log = open(base_dir / "supervisor.log", "ab")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen([str(python), "-c", _SUPERVISOR, str(base_dir), str(port), "1" if auth else "0",
                                 str(int(timeout))],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        log.close()
        deadline = time.monotonic() + timeout
        line = b""
        while time.monotonic() < deadline:  # the supervisor prints "ready PID" once healthy
            line = proc.stdout.readline()
            if line.startswith(b"ready") or proc.poll() is not None:
                break
        if not line.startswith(b"ready"):
            proc.kill()
            raise RuntimeError(f"Milvus standalone did not start on port {port}; see {base_dir}/supervisor.log "
                               f"and {base_dir}/logs")
        server = cls(f"http://127.0.0.1:{port}", port, base_dir, int(line.split()[1]), proc)
        server._wait_serving(deadline)
        return server

    def _wait_serving(self, deadline: float) -> None:
        # healthz answers a little before the proxy accepts gRPC calls
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"Milvus standalone on port {self.port} never accepted connections")
            time.sleep(0.2)

    @property
    def running(self) -> bool:
        return self._supervisor.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server (the supervisor calls ``default_server.stop()``) and wait for the binary."""
        if self._supervisor.poll() is None:
            with contextlib.suppress(OSError):
                self._supervisor.stdin.close()
            try:
                self._supervisor.wait(timeout)
            except subprocess.TimeoutExpired:
                self._supervisor.kill()
                self._supervisor.wait()
        if pid_alive(self.binary_pid):  # belt and braces: never leave the binary behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.binary_pid, signal.SIGKILL)
