"""DNSSEC: zone keys on disk (keys.py) and online signing with compact denial of existence (sign.py)."""
