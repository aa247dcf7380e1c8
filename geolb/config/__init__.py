"""Zone files to frozen model objects: the only part of geolb that imports yaml."""

from geolb.config.zoneset import load_zoneset

__all__ = ["load_zoneset"]
