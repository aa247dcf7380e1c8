"""`python -m geolb` is the `geolb` command."""

from geolb.cli import entry

entry()
