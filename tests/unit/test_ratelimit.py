"""The rate limiter's buckets with an explicit clock, and the truncated answer it slips."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.rrset

from geolb.dns.ratelimit import ANSWER, DROP, ERROR, NXDOMAIN_KIND, OK, SLIP, RateLimiter, RateLimits, kind_of, truncated


def test_a_burst_passes_then_the_rate_holds_with_every_second_limited_slipping() -> None:
    now = [100.0]
    limiter = RateLimiter(RateLimits(answers=10, window=2, slip=2), clock=lambda: now[0])
    verdicts = [limiter.check("192.0.2.1", ANSWER) for _ in range(30)]
    assert verdicts[:20] == [OK] * 20  # two seconds of credit
    assert verdicts[20:] == [DROP, SLIP] * 5
    now[0] += 0.5  # half a second: five more
    assert [limiter.check("192.0.2.200", ANSWER) for _ in range(6)] == [OK] * 5 + [DROP]  # same /24
    assert limiter.check("192.0.3.1", ANSWER) == OK  # another /24
    assert limiter.check("192.0.2.1", NXDOMAIN_KIND) == OK  # not limited: no nxdomain rate
    assert limiter.dropped[ANSWER] == 6 and limiter.slipped[ANSWER] == 5


def test_ipv6_networks_are_56s_and_kinds_have_their_own_rates() -> None:
    limiter = RateLimiter(RateLimits(answers=1, errors=1, window=1, slip=0), clock=lambda: 0.0)
    assert limiter.check("2001:db8:0:ff::1", ANSWER) == OK
    assert limiter.check("2001:db8:0:ee::2", ANSWER) == DROP  # the same /56
    assert limiter.check("2001:db8:0:100::1", ANSWER) == OK  # the next /56
    assert limiter.check("2001:db8:0:ff::1", ERROR) == OK
    assert limiter.check("2001:db8:0:ff::1", ERROR) == DROP  # slip 0: all dropped


def test_kinds_come_from_the_rcode_and_a_slip_is_header_and_question() -> None:
    query = dns.message.make_query("www.example.com", "A", use_edns=0)
    response = dns.message.make_response(query)
    response.answer.append(dns.rrset.from_text("www.example.com.", 30, "IN", "A", "192.0.2.1"))
    wire = response.to_wire()
    assert kind_of(wire) == ANSWER
    response.set_rcode(dns.rcode.NXDOMAIN)
    assert kind_of(response.to_wire()) == NXDOMAIN_KIND
    response.set_rcode(dns.rcode.REFUSED)
    assert kind_of(response.to_wire()) == ERROR
    cut = dns.message.from_wire(truncated(wire))
    assert cut.flags & dns.flags.TC and cut.id == query.id and cut.question == query.question
    assert not cut.answer and not cut.additional
