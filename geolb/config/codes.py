"""Country and continent codes a region may name: ISO 3166-1 alpha-2, the seven continents, and what people confuse them with."""

from __future__ import annotations

from functools import cache
from importlib import resources

CONTINENTS = frozenset({"AF", "AN", "AS", "EU", "NA", "OC", "SA"})

# Codes that look right but are not ISO 3166-1 alpha-2 country codes: what to write instead.
CONFUSED_COUNTRIES = {
    "UK": "GB (the United Kingdom is GB in ISO 3166-1)",
    "EL": "GR (EL is the EU's code for Greece; ISO 3166-1 has GR)",
    "EU": "continents: [EU] (EU is a continent code, not a country)",
    "OC": "continents: [OC] (OC is a continent code, not a country)",
    "AN": "CW, SX or BQ (the Netherlands Antilles were dissolved; AN is Antarctica as a continent, AQ as a country)",
    "YU": "RS or ME (Yugoslavia's code is withdrawn)",
    "CS": "RS or ME (Serbia and Montenegro's code is withdrawn)",
    "TP": "TL (East Timor is TL)",
    "ZR": "CD (Zaire is CD)",
    "BU": "MM (Burma is MM)",
    "FX": "FR (Metropolitan France is FR)",
    "SU": "RU or another successor state (the USSR's code is withdrawn)",
}


@cache
def countries() -> frozenset[str]:
    """ISO 3166-1 alpha-2 codes (the 249 officially assigned, and XK for Kosovo as GeoIP databases use it).

    They come from the country table shipped for centroids, so the two always agree.
    """
    text = resources.files("geolb").joinpath("data/country-centroids.csv").read_text(encoding="utf-8")
    codes = set()
    for line in text.splitlines():
        code = line.split(",", 1)[0]
        if len(code) == 2 and code.isupper():
            codes.add(code)
    return frozenset(codes)


def country_problem(code: str) -> str | None:
    """None for a valid country code; otherwise what is wrong, with a suggestion where there is one."""
    if code in countries():
        return None
    if code in CONFUSED_COUNTRIES:
        return f"'{code}' is not an ISO 3166-1 country code: use {CONFUSED_COUNTRIES[code]}"
    return f"'{code}' is not an ISO 3166-1 alpha-2 country code (such as US, GB or NO)"


def continent_problem(code: str) -> str | None:
    """None for a valid continent code; otherwise what is wrong."""
    if code in CONTINENTS:
        return None
    hint = f"; {code} is a country: put it under countries:" if code in countries() else ""
    return f"'{code}' is not a continent code ({', '.join(sorted(CONTINENTS))}){hint}"
