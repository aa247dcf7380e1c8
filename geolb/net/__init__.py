"""Sockets: UDP and TCP listeners that move bytes between clients and the QueryHandler."""
