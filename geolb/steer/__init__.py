"""Latency steering (SPEC §10): real-user measurements and vantage points in, per-pool evidence out, laid over the region maps."""
