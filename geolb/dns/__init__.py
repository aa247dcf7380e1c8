"""The DNS core, sans I/O and without geo: wire format, messages, zone lookup, names, the packet cache."""
