"""Several instances: health, forced states and load reports shared through etcd (SPEC §8)."""
