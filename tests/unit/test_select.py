"""geo/select.py: round robin, rendezvous hashing and load-scaled weights; and the cache answers as the full path does."""

from __future__ import annotations

import collections
import ipaddress
import itertools
import random
from pathlib import Path

import dns.edns
import dns.message
import pytest

from geolb.config.zoneset import load_zoneset
from geolb.geo.locate import GeoIPLocator
from geolb.geo.select import (
    cycle_order,
    endpoint_salt,
    load_scaled,
    network_hash,
    rendezvous_order,
    smooth_cycle,
)
from geolb.handler import QueryHandler
from geolb.runtime import Runtime
from tests.geomaps import region_maps

DATA = Path(__file__).resolve().parent.parent / "data"


# --- round robin -----------------------------------------------------------------------


def test_smooth_cycle_gives_each_weight_its_places_spread_out() -> None:
    assert smooth_cycle([5, 1, 1]) == (0, 0, 1, 0, 2, 0, 0)  # nginx's example: a a b a c a a
    assert smooth_cycle([1, 1, 1]) == (0, 1, 2)
    cycle = smooth_cycle([1, 2, 3])
    assert collections.Counter(cycle) == {0: 1, 1: 2, 2: 3}
    assert all(cycle[i] != cycle[i + 1] or cycle[i] == 2 for i in range(len(cycle) - 1))  # no endpoint twice running but the heaviest
    assert smooth_cycle([0, 2, 0]) == (1, 1)  # standby left out
    assert smooth_cycle([0, 0]) == (0, 1)  # all standby: all take part


def test_long_cycles_are_scaled_down_keeping_every_endpoint() -> None:
    cycle = smooth_cycle([60000, 1, 30000])
    counts = collections.Counter(cycle)
    assert len(cycle) <= 4100 and counts[1] >= 1
    assert counts[0] / counts[2] == pytest.approx(2.0, rel=0.01)


def test_cycle_order_lists_distinct_endpoints_from_a_position() -> None:
    cycle = (0, 0, 1, 0, 2, 0, 0)
    assert cycle_order(cycle, 0, 3) == (0, 1, 2)
    assert cycle_order(cycle, 2, 3) == (1, 0, 2)
    assert cycle_order(cycle, 4, 2) == (2, 0)
    assert cycle_order(cycle, 6, 3) == (0, 1, 2)  # wraps


# --- consistent ------------------------------------------------------------------------


def client(text: str) -> tuple[int, int]:
    address = ipaddress.ip_address(text)
    return int(address), address.version


def test_network_hash_is_fixed_across_processes_and_machines() -> None:
    """A golden value: changing the hash would move every client of every consistent pool."""
    assert network_hash(*client("192.0.2.77"), 24) == network_hash(*client("192.0.2.0"), 24)
    assert network_hash(*client("192.0.2.77"), 24) != network_hash(*client("192.0.3.77"), 24)
    assert network_hash(*client("192.0.2.77"), 24) == 0xEA3AAEFFEE9CF8C0
    assert endpoint_salt(ipaddress.ip_address("198.51.100.1")) == 0x29E0D342B7C83185


def test_rendezvous_moves_only_the_clients_of_a_removed_endpoint() -> None:
    salts = [endpoint_salt(ipaddress.ip_address(f"10.0.0.{i}")) for i in range(10)]
    hashes = [network_hash(int(ipaddress.ip_address(f"100.{i >> 8}.{i & 255}.0")), 4, 24) for i in range(5000)]
    before = [rendezvous_order([1] * 10, salts, h, 1)[0] for h in hashes]
    without = [5 if i == 5 else 1 for i in range(10)]
    # Endpoint 3 gone: its candidates list no longer holds it (indices shift, so compare salts).
    kept = [i for i in range(10) if i != 3]
    after = [kept[rendezvous_order([1] * 9, [salts[i] for i in kept], h, 1)[0]] for h in hashes]
    moved = [b for b, a in zip(before, after, strict=True) if a != b]
    assert set(moved) == {3}
    assert abs(len(moved) / 5000 - 0.1) < 0.02
    shares = collections.Counter(rendezvous_order(without, salts, h, 1)[0] for h in hashes)
    assert shares[5] / 5000 == pytest.approx(5 / 14, abs=0.03)


def test_weighted_rendezvous_shares_follow_the_weights() -> None:
    weights = [1, 2, 3, 4]
    salts = [endpoint_salt(ipaddress.ip_address(f"10.0.1.{i}")) for i in range(4)]
    picks = collections.Counter(
        rendezvous_order(weights, salts, network_hash(int(ipaddress.ip_address(f"11.{i >> 8}.{i & 255}.0")), 4, 24), 1)[0]
        for i in range(20000)
    )
    for index, weight in enumerate(weights):
        assert picks[index] / 20000 == pytest.approx(weight / 10, abs=0.015)


def test_load_scales_weights_in_one_percent_steps() -> None:
    assert load_scaled([1, 2], [0.0, 0.0]) == (1, 2)
    assert load_scaled([1, 1], [0.5, 0.0]) == (1, 2)
    assert load_scaled([1, 1], [1.0, 0.0]) == (1, 100)  # never below 1 % of the weight
    assert load_scaled([0, 1], [0.3, 0.0]) == (0, 1)  # standby stays standby


# --- the packet cache answers as the full path does --------------------------------------


def handlers() -> tuple[QueryHandler, QueryHandler]:
    zones = load_zoneset(str(DATA / "policy-zones")).zoneset
    maps = region_maps(zones, GeoIPLocator(str(DATA / "GeoIP2-City-Test.mmdb")))
    fast = QueryHandler(Runtime(zones, maps=maps), random.Random(1), fast_path=True)
    full = QueryHandler(Runtime(zones, maps=maps), random.Random(1), fast_path=False)
    return fast, full


def ask(handler: QueryHandler, name: str, rdtype: str = "A", ecs: str | None = None, peer: str = "127.0.0.1") -> dns.message.Message:
    options = []
    if ecs is not None:
        address, _, prefix = ecs.partition("/")
        options.append(dns.edns.ECSOption(address, int(prefix)))
    query = dns.message.make_query(name, rdtype, use_edns=0, options=options)
    response = handler.handle(query.to_wire(), peer, False)
    assert response is not None
    return dns.message.from_wire(response)


def addresses(message: dns.message.Message) -> list[str]:
    return [r.to_text() for rrset in message.answer for r in rrset]


def scope(message: dns.message.Message) -> int | None:
    return next((o.scopelen for o in message.options if isinstance(o, dns.edns.ECSOption)), None)


@pytest.mark.parametrize("name", ["rr.policy.example", "rr-one.policy.example"])
def test_round_robin_sequences_are_the_same_from_the_cache(name: str) -> None:
    fast, full = handlers()
    for rdtype in ("A", "AAAA"):
        got = [addresses(ask(fast, name, rdtype, "81.2.69.0/24")) for _ in range(24)]
        want = [addresses(ask(full, name, rdtype, "81.2.69.0/24")) for _ in range(24)]
        assert got == want
    firsts = collections.Counter(a[0] for a in got if a)
    assert firsts == {"2001:db8::11": 12, "2001:db8::12": 12}


def test_round_robin_first_places_follow_the_weights_exactly() -> None:
    fast, _ = handlers()
    firsts = collections.Counter(addresses(ask(fast, "rr-one.policy.example", ecs=f"10.{i >> 8}.{i & 255}.0/24"))[0] for i in range(600))
    assert firsts == {"192.0.2.11": 100, "192.0.2.12": 200, "192.0.2.13": 300}


def test_consistent_answers_and_scopes_are_the_same_from_the_cache() -> None:
    fast, full = handlers()
    rng = random.Random(7)
    for index in range(400):
        if index % 4 == 3:
            subnet = f"2a02:{rng.randint(0, 65535):x}:{rng.randint(0, 65535):x}::/56"
        else:
            subnet = f"{rng.choice([81, 89, 2, 175])}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.0/24"
        for name, rdtype in itertools.product(("sticky.policy.example", "sticky-two.policy.example"), ("A", "AAAA")):
            want = ask(full, name, rdtype, subnet)  # AAAA for an IPv4 client too: the client's prefix is hashed
            assert want.rcode() == 0 and addresses(want), (subnet, rdtype)
            for _ in range(2):  # the second one from the exact-bytes table
                got = ask(fast, name, rdtype, subnet)
                assert (addresses(got), scope(got)) == (addresses(want), scope(want)), subnet


def test_consistent_scope_is_the_hash_prefix_when_the_order_depends_on_it() -> None:
    _, full = handlers()
    europe = ask(full, "sticky.policy.example", "A", "81.2.69.0/24")  # GB: europe, four endpoints
    assert addresses(europe)[0].startswith("198.51.100.") and scope(europe) == 24
    v6 = ask(full, "sticky.policy.example", "AAAA", "2a02:cf40:1::/56")
    assert scope(v6) == 48
    wide = ask(full, "sticky.policy.example", "A", "81.2.0.0/16")
    assert scope(wide) == 16  # never longer than the source


def test_consistent_answers_without_ecs_hash_the_peer() -> None:
    fast, full = handlers()
    for peer in ("81.2.69.1", "81.2.69.200", "81.2.70.5", "2001:218::1"):
        for _ in range(2):
            assert addresses(ask(fast, "sticky.policy.example", peer=peer)) == addresses(ask(full, "sticky.policy.example", peer=peer))
    assert addresses(ask(full, "sticky.policy.example", peer="81.2.69.1")) == addresses(
        ask(full, "sticky.policy.example", peer="81.2.69.200")
    )


def test_equal_weights_skip_the_logarithm_but_not_the_order() -> None:
    """The shortcut for equal weights gives the order the weighted formula gives."""
    salts = [endpoint_salt(ipaddress.ip_address(f"10.0.2.{i}")) for i in range(6)]
    for n in range(2000):
        h = network_hash(n << 8, 4, 24)
        for size in (1, 3, 6):
            assert rendezvous_order([2] * 6, salts, h, size, equal=True) == rendezvous_order([2] * 6, salts, h, size, equal=False)
