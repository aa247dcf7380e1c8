"""Health: endpoint state (`state`), single probes (`probe`) and their schedule (`prober`)."""
