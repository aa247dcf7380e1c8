"""geolb as users meet it: delegated from a parent and reached through a real recursive resolver (unbound).

Everything stays on loopback: unbound's root hints name 127.0.0.1, the zone's
nameserver address is 127.0.0.1, and the stub zone points at geolb's port.
"""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.serverproc import DATA, RunningServer, start_server
from tests.unboundproc import PORT, UNBOUND, base_config, running_unbound

pytestmark = pytest.mark.skipif(UNBOUND is None, reason="Debian's unbound is not installed (.ci/run installs it)")

ZONE = """
nameservers:
  ns1.example.com.: [127.0.0.1]
health: {type: none}
pools:
  web:
    regions:
      us-east: {location: [39.04, -77.49], endpoints: [192.0.2.10]}
      eu-west: {location: [53.35, -6.26], endpoints: [198.51.100.10]}
      ap-northeast: {location: [35.68, 139.69], endpoints: [203.0.113.30]}
records:
  www: [{type: GEO, pool: web, ttl: 30}]
  static: [{type: A, value: 192.0.2.99, ttl: 300}]
"""


def unbound_config(directory: Path, upstream: int) -> str:
    return (
        base_config(directory, "subnetcache iterator")
        + f"""  send-client-subnet: 127.0.0.1
  max-client-subnet-ipv4: 24
stub-zone:
  name: "example.com"
  stub-addr: 127.0.0.1@{upstream}
"""
    )


@pytest.fixture(scope="module")
def resolver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, RunningServer]]:
    directory = tmp_path_factory.mktemp("unbound")
    zones = directory / "zones"
    zones.mkdir()
    (zones / "example.com.yaml").write_text(ZONE)
    geolb = start_server(zones, geoip=DATA / "GeoIP2-City-Test.mmdb", tmp=directory)
    try:
        with running_unbound(directory, unbound_config(directory, geolb.port), "static.example.com") as port:
            yield port, geolb
    finally:
        geolb.stop()


def ask(port: int, name: str, ecs: str | None = None) -> dns.message.Message:
    options = []
    if ecs is not None:
        address, _, prefix = ecs.partition("/")
        options.append(dns.edns.ECSOption(address, int(prefix)))
    query = dns.message.make_query(name, "A", use_edns=0, options=options)  # RD set: a recursive query
    return dns.query.udp(query, "127.0.0.1", port=port, timeout=3)


def addresses(response: dns.message.Message) -> set[str]:
    return {r.to_text() for rrset in response.answer for r in rrset}


def test_resolver_gets_the_geo_answer_through_delegation(resolver: tuple[int, RunningServer]) -> None:
    port, _ = resolver
    response = ask(port, "www.example.com")
    assert response.rcode() == dns.rcode.NOERROR
    assert addresses(response) == {"192.0.2.10"}  # unbound asks from 127.0.0.1 without ECS: file order
    assert addresses(ask(port, "static.example.com")) == {"192.0.2.99"}
    assert ask(port, "nothing.example.com").rcode() == dns.rcode.NXDOMAIN


def test_two_client_subnets_get_different_regions_through_one_resolver(resolver: tuple[int, RunningServer]) -> None:
    port, _ = resolver
    london = ask(port, "www.example.com", ecs="2.2.3.0/24")  # GB in the test database
    san_diego = ask(port, "www.example.com", ecs="214.78.120.0/24")  # US
    again = ask(port, "www.example.com", ecs="2.2.3.0/24")  # from unbound's subnet cache now
    assert addresses(london) == {"198.51.100.10"}
    assert addresses(san_diego) == {"192.0.2.10"}
    assert addresses(again) == {"198.51.100.10"}
    # The resolver passes our scope on to its client: true for the answer, no longer than /24.
    scopes = [o.scopelen for o in london.options if isinstance(o, dns.edns.ECSOption)]
    assert scopes and 0 < scopes[0] <= 24


def test_chinese_subnet_gets_tokyo_through_the_resolver(resolver: tuple[int, RunningServer]) -> None:
    port, _ = resolver
    # 175.16.199.0/24 is Changchun, China, in the test database: nearest Tokyo.
    assert addresses(ask(port, "www.example.com", ecs="175.16.199.0/24")) == {"203.0.113.30"}


README = (Path(__file__).resolve().parent.parent.parent / "README.md").read_text()
RECIPE = README.split("### The resolver side", 1)[1]


def test_the_readmes_unbound_recipe_steers_two_client_subnets(tmp_path: Path) -> None:
    """README's resolver-side recipe, run as written (ports moved to free ones): its dig lines get two regions."""
    config = re.search(r"```conf\n(.*?)```", RECIPE, re.S).group(1)  # type: ignore[union-attr]
    digs = re.findall(r"^(dig @127\.0\.0\.1 -p 5300 .*?)\s+#", RECIPE, re.M)
    assert len(digs) == 2
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "gslb.example.com.yaml").write_text(ZONE.replace("ns1.example.com.", "ns1.gslb.example.com."))
    geolb = start_server(zones, geoip=DATA / "GeoIP2-City-Test.mmdb", tmp=tmp_path)
    try:
        # Only what keeps the test on loopback is added: root hints naming 127.0.0.1, no IPv6.
        hints = tmp_path / "root.hints"
        hints.write_text(".  3600000 NS fake-root.\nfake-root. 3600000 A 127.0.0.1\n")
        ours = config.replace("127.0.0.1@5353", f"127.0.0.1@{geolb.port}").replace("5300", PORT)
        ours = ours.replace("server:\n", f'server:\n  root-hints: "{hints}"\n  do-ip6: no\n  directory: "{tmp_path}"\n', 1)
        with running_unbound(tmp_path, ours, "www.gslb.example.com") as port:
            answers = []
            for line in digs:
                command = [*shlex.split(line.replace("5300", str(port))), "+short", "+tries=1", "+time=3"]
                answers.append(subprocess.run(command, capture_output=True, text=True, check=True, timeout=10).stdout.split())
    finally:
        geolb.stop()
    assert answers == [["198.51.100.10"], ["192.0.2.10"]]  # London: eu-west; San Diego: us-east
