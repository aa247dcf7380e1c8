"""The HTTP API (aiohttp): health, status, explain, reload, forced states, metrics."""
