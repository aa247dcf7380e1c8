"""Robustness under hostile input (run by hand, not a test).

1. garble: 10^5 structure-aware garbled packets (valid queries mutated: truncated, bad compression
   pointers, huge section counts, bad OPT and ECS options, random bytes flipped, labels over 63 bytes,
   names over 255, bytes above 0x7f, TSIG with an unknown key) sent over UDP as fast as one client goes;
   then the server must still answer, its resident memory be where it was after warming up (±10 %), its
   log grow by fewer than 100 lines (client errors are logged once a minute per kind) and hold no
   traceback; the malformed packets counted by kind in /metrics are printed.
2. slow: 2,000 TCP clients that send nothing or a byte a second while dnsperf asks over UDP at a
   fixed rate: DNS latency percentiles with and without them.

    .venv/bin/python bench/robustness_bench.py garble [--packets 100000]
    .venv/bin/python bench/robustness_bench.py slow [--clients 2000 --rate 5000]
"""

from __future__ import annotations

import argparse
import contextlib
import random
import re
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import dns.edns
import dns.message

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.serverproc import DATA, RunningServer, api, start_server  # noqa: E402

NAMES = ["www.example.com", "mail.example.com", "x.static.example.com", "nothing.example.com", "example.com", "sub.example.com"]


def seeds() -> list[bytes]:
    out = []
    for name in NAMES:
        for rdtype in ("A", "AAAA", "TXT", "ANY", "NS"):
            out.append(dns.message.make_query(name, rdtype).to_wire())
            ecs = [dns.edns.ECSOption("81.2.69.0", 24), dns.edns.GenericOption(10, bytes(8))]
            out.append(dns.message.make_query(name, rdtype, use_edns=0, want_dnssec=True, options=ecs).to_wire())
    return out


def garble(packet: bytes, rng: random.Random) -> bytes:
    """One mutation that knows the layout of a query."""
    data = bytearray(packet)
    kind = rng.randrange(11)
    if kind == 0:
        return bytes(data[: rng.randrange(len(data))])  # truncated anywhere
    if kind == 1:  # a compression pointer somewhere in the question name: loops, forward, past the end
        at = rng.randrange(12, max(13, len(data) - 2))
        data[at : at + 2] = struct.pack("!H", 0xC000 | rng.choice([12, at, 0x3FFF, rng.randrange(0x4000)]))
    elif kind == 2:  # huge or inconsistent section counts
        data[4:12] = struct.pack("!HHHH", *(rng.choice([0, 1, 2, 0xFFFF, rng.randrange(0x10000)]) for _ in range(4)))
    elif kind == 3:  # an OPT with a lying RDLENGTH or option length
        at = data.rfind(b"\x00\x29")
        if at > 0 and at + 10 < len(data):
            data[at + 8 : at + 10] = struct.pack("!H", rng.choice([0, 1, 0xFFFF, rng.randrange(0x10000)]))
    elif kind == 4:  # ECS with a bad family, prefix or address length
        at = data.find(b"\x00\x08", 12)
        if at > 0 and at + 8 < len(data):
            data[at + 4 : at + 8] = bytes(rng.randrange(256) for _ in range(4))
    elif kind == 5:  # random bytes flipped
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 6:  # garbage appended, or labels longer than they say
        data += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    elif kind == 7:  # flags: QR, opcode, TC, Z bits
        data[2] = rng.randrange(256)
        data[3] = rng.randrange(256)
    elif kind == 8:  # the first label longer than 63 bytes (or of a reserved type), or the name past 255
        size = rng.choice([rng.randrange(64, 192), 63])
        count = 1 if size != 63 else 5
        name = b"".join(bytes([size]) + b"a" * size for _ in range(count)) + b"\x00"
        return bytes(data[:12]) + name + bytes(data[_name_end(data) :])
    elif kind == 9:  # bytes above 0x7f in the name (RFC 2181 §11: answered like any other)
        for at in range(13, _name_end(data) - 1):
            if data[at] > 63 and rng.random() < 0.5:
                data[at] = rng.randrange(128, 256)
    else:  # TSIG with a key nobody knows: NOTAUTH/BADKEY
        tsig = b"\x06nobody\x00\x00\xfa\x00\xff\x00\x00\x00\x00" + struct.pack("!H", 26)
        tsig += b"\x0bhmac-sha256\x00" + bytes(6) + b"\x01\x2c\x00\x00" + data[:2] + b"\x00\x00\x00\x00"
        data[10:12] = struct.pack("!H", struct.unpack("!H", data[10:12])[0] + 1)
        data += tsig
    return bytes(data)


def _name_end(data: bytes | bytearray) -> int:
    at = 12
    while at < len(data) and 0 < data[at] < 64:
        at += data[at] + 1
    return min(at + 1, len(data))


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as status:
            found = re.search(r"VmRSS:\s+(\d+)", status.read())
            total += int(found.group(1)) if found else 0
    return total


def server_pids(server: RunningServer) -> list[int]:
    children = subprocess.run(["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True).stdout.split()
    return [server.proc.pid, *map(int, children)]


def handled(server: RunningServer) -> int:
    """Packets the server has taken in: answered (any rcode) or dropped as unparseable."""
    _, text = api(server, "GET", "/metrics")
    return int(sum(float(v) for v in re.findall(r"^geolb_dns_(?:queries|dropped)_total(?:\{[^}]*\})? (\S+)$", text, re.M)))


def healthy(server: RunningServer) -> bool:
    response = server.query("www.example.com", "A")
    return bool(response.answer)


def garble_run(packets: int) -> None:
    rng = random.Random(1)
    base = seeds()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(DATA / "zones", "--workers", "1", tmp=Path(tmp))
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)
                warm = [garble(rng.choice(base), rng) for _ in range(20_000)]
                for packet in warm:
                    with contextlib.suppress(BlockingIOError):
                        sock.sendto(packet, (server.host, server.port))
                time.sleep(2)  # the warm-up's backlog taken in
                log_before = len(server.stderr().splitlines())
                before = rss_kib(server_pids(server))
                taken = handled(server)
                started = time.monotonic()
                sent = 0
                for number in range(packets):
                    packet = garble(rng.choice(base), rng)
                    with contextlib.suppress(BlockingIOError):
                        sock.sendto(packet, (server.host, server.port))
                        sent += 1
                    if number % 64 == 63:
                        time.sleep(0.003)  # about the pace one worker takes garbage in: nearly every packet is read
                    with contextlib.suppress(BlockingIOError):
                        while sock.recv(65535):
                            pass
                took = time.monotonic() - started
            time.sleep(1)
            after = rss_kib(server_pids(server))
            taken = handled(server) - taken
            ok = healthy(server)
            _, text = api(server, "GET", "/metrics")
            kinds = dict(re.findall(r'^geolb_dns_client_errors_total\{kind="([^"]+)"\} (\S+)$', text, re.M))
        finally:
            server.stop()
        log = server.stderr()
        traceback = log.count("Traceback")
        log_lines = len(log.splitlines()) - log_before
    print(
        f"{sent} garbled packets sent in {took:.1f} s, {taken} taken in by the server (the rest lost in socket buffers); "
        f"still answering: {ok}; "
        f"RSS {before} KiB after warm-up -> {after} KiB ({(after - before) / before:+.1%}); "
        f"log lines added: {log_lines} (must be < 100; {len(log.splitlines())} in all, warm-up and start included); "
        f"tracebacks: {traceback}"
    )
    print("malformed packets counted by kind (warm-up included): " + ", ".join(f"{k} {float(v):.0f}" for k, v in sorted(kinds.items())))


def latency(server: RunningServer, rate: int, seconds: int) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as queries:
        queries.write("www.example.com A\nmail.example.com A\nnothing.example.com A\n")
        queries.flush()
        out = subprocess.run(
            ["dnsperf", "-s", server.host, "-p", str(server.port), "-d", queries.name, "-l", str(seconds), "-Q", str(rate), "-v"],
            capture_output=True,
            text=True,
        ).stdout
    times = sorted(float(m.group(1)) for m in re.finditer(r"^> \S+ \S+ \S+ ([\d.]+)$", out, re.M))
    if not times:
        lost = re.search(r"Queries lost:\s+(.*)", out)
        return f"no latencies parsed ({lost.group(1) if lost else out[-300:]})"
    pick = lambda q: times[min(len(times) - 1, int(q * len(times)))] * 1000  # noqa: E731
    lost = re.search(r"Queries lost:\s+(\d+)", out)
    return f"p50 {pick(0.5):.2f} ms, p99 {pick(0.99):.2f} ms, p99.9 {pick(0.999):.2f} ms, lost {lost.group(1) if lost else '?'}"


def slow_run(clients: int, rate: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, clients + 1000)), hard))
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(DATA / "zones", "--workers", "1", tmp=Path(tmp))
        try:
            print(f"without slow clients: {latency(server, rate, 10)}")
            held: list[socket.socket] = []
            stop = threading.Event()

            def siege() -> None:
                while not stop.is_set():  # keep `clients` connections open: reconnect what the server closes
                    for index in range(clients):
                        if stop.is_set():
                            return
                        if index >= len(held) or held[index].fileno() < 0:
                            with contextlib.suppress(OSError):
                                sock = socket.create_connection((server.host, server.port), timeout=2)
                                sock.setblocking(False)
                                if index < len(held):
                                    held[index] = sock
                                else:
                                    held.append(sock)
                        elif index % 2:
                            try:
                                held[index].send(b"\x00")
                            except OSError:
                                held[index].close()
                    stop.wait(1.0)

            thread = threading.Thread(target=siege)
            thread.start()
            time.sleep(3)
            print(f"with {clients} slow TCP clients: {latency(server, rate, 10)}")
            stop.set()
            thread.join()
            for sock in held:
                sock.close()
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    garbled = commands.add_parser("garble")
    garbled.add_argument("--packets", type=int, default=100_000)
    slow = commands.add_parser("slow")
    slow.add_argument("--clients", type=int, default=2000)
    slow.add_argument("--rate", type=int, default=5000)
    args = parser.parse_args()
    if args.command == "garble":
        garble_run(args.packets)
    else:
        slow_run(args.clients, args.rate)


if __name__ == "__main__":
    main()
