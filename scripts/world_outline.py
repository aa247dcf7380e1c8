"""Make geolb/http/static/world.svg, the status page's map, from a Natural Earth TopoJSON file.

The outline ships with geolb (the page fetches nothing from elsewhere); this script is
how it was made, so it can be made again:

    npm pack world-atlas@2.0.2 && tar xzf world-atlas-2.0.2.tgz
    python scripts/world_outline.py package/countries-110m.json > geolb/http/static/world.svg

world-atlas (ISC licence) redistributes Natural Earth's 1:110m Admin 0 boundaries
(public domain). The projection is equirectangular in degrees: x = longitude + 180,
y = 90 - latitude, the one the page's script uses to place regions.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Iterator
from typing import Any

Point = tuple[int, int]  # tenths of a degree, projected
TOP, BOTTOM = 6.0, 150.0  # 84 °N to 60 °S: nobody runs a region on Antarctica


def arcs_of(topology: dict[str, Any]) -> list[list[tuple[float, float]]]:
    """The topology's arcs as (longitude, latitude) lists: quantized and delta-encoded in the file."""
    (sx, sy), (tx, ty) = topology["transform"]["scale"], topology["transform"]["translate"]
    decoded = []
    for arc in topology["arcs"]:
        x = y = 0
        points = []
        for dx, dy in arc:
            x, y = x + dx, y + dy
            points.append((x * sx + tx, y * sy + ty))
        decoded.append(points)
    return decoded


def ring_points(ring: list[int], arcs: list[list[tuple[float, float]]]) -> list[tuple[float, float]]:
    """A ring's points: its arcs joined end to start, a negative index (~i) meaning arc i reversed."""
    points: list[tuple[float, float]] = []
    for index in ring:
        arc = arcs[index] if index >= 0 else arcs[~index][::-1]
        points.extend(arc if not points else arc[1:])
    return points


def rings(geometry: dict[str, Any]) -> Iterator[list[int]]:
    if geometry["type"] == "Polygon":
        yield from geometry["arcs"]
    elif geometry["type"] == "MultiPolygon":
        for polygon in geometry["arcs"]:
            yield from polygon


def unwrapped(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Longitudes made continuous (a ring across the antimeridian goes past 180 instead of jumping back)."""
    out = [points[0]]
    shift = 0.0
    for (lon0, _), (lon, lat) in itertools.pairwise(points):
        if lon - lon0 > 180:
            shift -= 360
        elif lon0 - lon > 180:
            shift += 360
        out.append((lon + shift, lat))
    return out


def copies(points: list[tuple[float, float]]) -> list[list[tuple[float, float]]]:
    """The ring, plus a copy 360 degrees over when part of it lies past the antimeridian (the map clips both)."""
    lons = [lon for lon, _ in points]
    if max(lons) > 180:
        return [points, [(lon - 360, lat) for lon, lat in points]]
    if min(lons) < -180:
        return [points, [(lon + 360, lat) for lon, lat in points]]
    return [points]


def project(lon: float, lat: float) -> Point:
    return round((lon + 180) * 10), round((90 - lat) * 10)


def path_of(points: list[tuple[float, float]]) -> str:
    """One closed ring as relative SVG path commands, in tenths of a degree (integers: short text)."""
    projected: list[Point] = []
    for lon, lat in points:
        point = project(lon, lat)
        if not projected or point != projected[-1]:
            projected.append(point)
    if len(projected) < 3:
        return ""
    (x, y), parts = projected[0], [f"M{projected[0][0]} {projected[0][1]}"]
    for px, py in projected[1:]:
        parts.append(f"{px - x} {py - y}")
        x, y = px, py
    return parts[0] + "l" + " ".join(parts[1:]) + "z"


def main(path: str) -> None:
    with open(path, encoding="utf-8") as handle:
        topology = json.load(handle)
    arcs = arcs_of(topology)
    countries = topology["objects"]["countries"]["geometries"]
    shapes = []
    for country in countries:
        d = ""
        for ring in rings(country):
            points = ring_points(ring, arcs)
            if max(lat for _, lat in points) < -58:
                continue  # Antarctica: below the map
            d += "".join(path_of(copy) for copy in copies(unwrapped(points)))
        if d:
            shapes.append(d)
    height = (BOTTOM - TOP) * 10
    print(
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 {TOP * 10:.0f} 3600 {height:.0f}">'
        "<!-- Natural Earth 1:110m Admin 0 countries (public domain), via world-atlas 2.0.2 (ISC); "
        "equirectangular, x = (longitude + 180) * 10, y = (90 - latitude) * 10 -->"
        f'<path class="land" d="{"".join(shapes)}"/></svg>'
    )


if __name__ == "__main__":
    main(sys.argv[1])
