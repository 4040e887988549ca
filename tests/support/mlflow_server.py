"""A real `mlflow server` (sqlite backend, 127.0.0.1, free port) for the whole test session,
and a switchable TCP proxy in front of it to test what happens when the server goes away.

Fixtures: a conftest that imports `_mlflow_server_process`, `mlflow_server` and `mlflow_proxy`
offers them to its folder (tests/eval, tests/reliability)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.deepspeed_runs import free_port


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=1) as reply:
            return reply.status == 200
    except OSError:
        return False


@pytest.fixture(scope="session", autouse=True)
def _mlflow_server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """Starts the server as soon as the first eval test runs (it takes 10-40 s to come up,
    time the metric and evaluation tests use); stops it by its process id at the end."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    log = open(root / "server.log", "wb")  # noqa: SIM115 - closed after the server stops
    proc = subprocess.Popen(
        [
            str(mlflow_bin),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: uvicorn workers stop with it
    )
    try:
        yield proc, f"http://127.0.0.1:{port}", root / "server.log"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=3)  # its graceful shutdown can take 10+ s
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


@pytest.fixture(scope="session")
def mlflow_server(_mlflow_server_process: tuple) -> str:
    """URL of a real MLflow tracking server (sqlite backend) once it answers."""
    proc, url, log = _mlflow_server_process
    deadline = time.time() + 120
    while not _answers(url):
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError("mlflow server did not start:\n" + log.read_text()[-3000:])
        time.sleep(0.3)
    return url


class SwitchableProxy:
    """Forwards 127.0.0.1:<port> to an upstream port; `down()` closes the port (connections
    are refused, as when a server is stopped) and `up()` opens it again."""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.port = free_port()
        self._listener: socket.socket | None = None
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(16)
        self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def down(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                client, _ = sock.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def mlflow_proxy(mlflow_server: str) -> Iterator[SwitchableProxy]:
    proxy = SwitchableProxy(int(mlflow_server.rsplit(":", 1)[1]))
    yield proxy
    proxy.down()
