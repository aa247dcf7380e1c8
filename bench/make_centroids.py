"""Derive geolb/data/country-centroids.csv from a GeoLite2/GeoIP2 City database.

MaxMind gives networks it can place only at country level the country's own
coordinates; those are the centroids a Country database lacks. For a country with
no such network, the median of its located networks stands in.

    .venv/bin/python bench/make_centroids.py GeoLite2-City.mmdb > geolb/data/country-centroids.csv
"""

from __future__ import annotations

import collections
import datetime
import statistics
import sys

import maxminddb


def main(path: str) -> None:
    reader = maxminddb.open_database(path)
    country_level: dict[str, collections.Counter[tuple[float, float]]] = collections.defaultdict(collections.Counter)
    located: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    names: dict[str, str] = {}
    for _network, record in reader:
        if not isinstance(record, dict):
            continue
        country = (record.get("country") or {}).get("iso_code")
        where = record.get("location") or {}
        lat, lon = where.get("latitude"), where.get("longitude")
        if not country or lat is None or lon is None:
            continue
        names.setdefault(country, (record.get("country") or {}).get("names", {}).get("en", ""))
        if "city" not in record and "subdivisions" not in record:
            country_level[country][(lat, lon)] += 1
        elif len(located[country]) < 5000:
            located[country].append((lat, lon))
    meta = reader.metadata()
    built = datetime.datetime.fromtimestamp(meta.build_epoch, datetime.UTC).date().isoformat()
    print(f"# Country centroids: coordinates MaxMind gives country-level networks in {meta.database_type} built {built}")
    print("# (CC BY-SA 4.0, https://www.maxmind.com); median of located networks where there are none. bench/make_centroids.py")
    print("country,latitude,longitude,name")
    for country in sorted(set(country_level) | set(located)):
        if country_level[country]:
            (lat, lon), _ = country_level[country].most_common(1)[0]
        else:
            lat = statistics.median(p[0] for p in located[country])
            lon = statistics.median(p[1] for p in located[country])
        name = names.get(country, "").replace(",", "")
        print(f"{country},{lat:.4f},{lon:.4f},{name}")


if __name__ == "__main__":
    main(sys.argv[1])
