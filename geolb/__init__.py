"""geolb: an authoritative GeoDNS server for global load balancing."""

__version__ = "0.1.0"
