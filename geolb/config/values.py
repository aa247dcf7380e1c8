"""Scalar conversions shared by the zone reader: durations, TTLs, addresses, record values."""

from __future__ import annotations

import ipaddress
import re
import shlex

from geolb import model
from geolb.dns.names import absolute, check_name

MAX_TTL = 2**31 - 1
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as "500ms", "10s", "2m", "1h", "7d"."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError(f'expected a duration such as 10, 2.5, "500ms", "10s" or "2m", got {value!r}')
    if seconds <= 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    return seconds


def parse_int(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{what} must be between {low} and {high}, got {value}")
    return value


def parse_fraction(value: object) -> float:
    """A load or threshold: a number from 0 to 1 ("0.42" too), or a percentage such as "73%"."""
    problem = f"expected a number from 0 to 1 or a percentage, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(problem)
    try:
        if isinstance(value, str):
            text = value.strip()
            number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        else:
            number = float(value)
    except ValueError:
        raise ValueError(problem) from None
    if not 0 <= number <= 1:  # also nan
        raise ValueError(problem)
    return number


def parse_ttl(value: object) -> int:
    """A TTL in seconds: a whole number, or a duration string that comes to whole seconds."""
    if isinstance(value, str):
        seconds = parse_duration(value)
        if seconds != int(seconds):
            raise ValueError(f"a TTL must be whole seconds, got {value!r}")
        value = int(seconds)
    return parse_int(value, "TTL", 0, MAX_TTL)


def parse_address(text: str) -> model.IPAddress:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise ValueError(f"'{text}' is not an IPv4 or IPv6 address") from None


def parse_name(text: str, origin: str) -> str:
    name = absolute(text, origin)
    problem = check_name(name)
    if problem:
        raise ValueError(problem)
    return name


def _fields(text: str, count: int, shape: str) -> list[str]:
    parts = text.split()
    if len(parts) != count:
        raise ValueError(f'expected "{shape}", got {text!r}')
    return parts


def _uint(text: str, what: str, high: int) -> int:
    if not text.isdigit():
        raise ValueError(f"{what} must be a whole number, got {text!r}")
    return parse_int(int(text), what, 0, high)


def _txt_strings(value: object) -> tuple[bytes, ...]:
    """TXT data split into character-strings of at most 255 bytes."""
    texts = value if isinstance(value, list) else [value]
    out: list[bytes] = []
    for text in texts:
        if not isinstance(text, (str, int, float)) or isinstance(text, bool):
            raise ValueError(f"TXT values are strings, got {text!r}")
        data = str(text).encode("utf-8")
        out.extend(data[i : i + 255] for i in range(0, len(data), 255) or [0])
    return tuple(out)


def parse_rdata(rtype: str, value: object, origin: str) -> model.Rdata:
    """One static record's data, from the `value` written in the zone file."""
    if rtype == "TXT":
        return model.TXT(_txt_strings(value))
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{rtype} value must be a string, got {value!r}")
    text = str(value)
    if rtype == "A":
        address = parse_address(text)
        if not isinstance(address, ipaddress.IPv4Address):
            raise ValueError(f"A records take IPv4 addresses, got '{text}'")
        return model.A(address)
    if rtype == "AAAA":
        address = parse_address(text)
        if not isinstance(address, ipaddress.IPv6Address):
            raise ValueError(f"AAAA records take IPv6 addresses, got '{text}'")
        return model.AAAA(address)
    if rtype == "CNAME":
        return model.CNAME(parse_name(text, origin))
    if rtype == "NS":
        return model.NS(parse_name(text, origin))
    if rtype == "PTR":
        return model.PTR(parse_name(text, origin))
    if rtype == "MX":
        pref, exchange = _fields(text, 2, "PREFERENCE EXCHANGE")
        return model.MX(_uint(pref, "MX preference", 65535), parse_name(exchange, origin))
    if rtype == "SRV":
        prio, weight, port, target = _fields(text, 4, "PRIORITY WEIGHT PORT TARGET")
        return model.SRV(
            _uint(prio, "SRV priority", 65535),
            _uint(weight, "SRV weight", 65535),
            _uint(port, "SRV port", 65535),
            parse_name(target, origin),
        )
    if rtype == "CAA":
        try:
            parts = shlex.split(text)
        except ValueError as exc:
            raise ValueError(f"CAA value {text!r}: {exc}") from None
        if len(parts) != 3:
            raise ValueError(f"expected 'FLAGS TAG \"VALUE\"', got {text!r}")
        flags, tag, caa_value = parts
        if not re.fullmatch(r"[A-Za-z0-9]{1,15}", tag):
            raise ValueError(f"CAA tag must be 1-15 letters or digits, got {tag!r}")
        return model.CAA(_uint(flags, "CAA flags", 255), tag.lower(), caa_value)
    raise ValueError(f"unsupported record type {rtype}")
