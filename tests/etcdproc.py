"""A real etcd (Debian's etcd-server) on free loopback ports, for the cluster tests."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.backends import free_port


class Etcd:
    """One etcd member; `kill()` and `start()` again keep its data (the cluster's forced states)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.client_port = free_port(["127.0.0.1"])
        self.peer_port = free_port(["127.0.0.1"])
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / "etcd.log"

    @property
    def url(self) -> str:
        return f"etcd://127.0.0.1:{self.client_port}"

    def start(self) -> None:
        binary = shutil.which("etcd")
        assert binary is not None, "etcd is not installed (apt-get install etcd-server)"
        client, peer = f"http://127.0.0.1:{self.client_port}", f"http://127.0.0.1:{self.peer_port}"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    binary, "--name", "test", "--data-dir", str(self.data_dir),
                    "--listen-client-urls", client, "--advertise-client-urls", client,
                    "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                    "--initial-cluster", f"test={peer}",
                ],
                stdout=log,
                stderr=log,
            )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{client}/health", timeout=1) as reply:
                    if b"true" in reply.read():
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"etcd did not start:\n{self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None
