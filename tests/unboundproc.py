"""Debian's unbound as a real recursive resolver on loopback, for the delegation and DNSSEC tests."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dns.exception
import dns.message
import dns.query

from tests.backends import free_port

UNBOUND = shutil.which("unbound") or ("/usr/sbin/unbound" if Path("/usr/sbin/unbound").exists() else None)


PORT = "@PORT@"  # where running_unbound puts the port it found free


def base_config(directory: Path, modules: str) -> str:
    """The server: section everything here shares: loopback only, root hints that name 127.0.0.1, no daemon."""
    (directory / "root.hints").write_text(".  3600000 NS fake-root.\nfake-root. 3600000 A 127.0.0.1\n")
    return f"""
server:
  interface: 127.0.0.1@{PORT}
  port: {PORT}
  do-daemonize: no
  username: ""
  chroot: ""
  directory: "{directory}"
  pidfile: ""
  use-syslog: no
  logfile: ""
  verbosity: 1
  do-ip6: no
  access-control: 127.0.0.0/8 allow
  do-not-query-localhost: no
  root-hints: "{directory / "root.hints"}"
  module-config: "{modules}"
  qname-minimisation: no
"""


@contextmanager
def running_unbound(directory: Path, config: str, probe: str) -> Iterator[int]:
    """unbound with `config` (its port filled in), answering once `probe` resolves; yields its port."""
    assert UNBOUND is not None
    port = free_port(["127.0.0.1"])
    path = directory / "unbound.conf"
    path.write_text(config.replace(PORT, str(port)))
    with open(directory / "unbound.log", "w") as log:
        proc = subprocess.Popen([UNBOUND, "-d", "-c", str(path)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                dns.query.udp(dns.message.make_query(probe, "A"), "127.0.0.1", port=port, timeout=0.5)
                break
            except (dns.exception.Timeout, ConnectionRefusedError):
                assert proc.poll() is None, (directory / "unbound.log").read_text()
                assert time.monotonic() < deadline, "unbound did not answer"
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)
