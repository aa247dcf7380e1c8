"""Geo choice: where a client is (`locate`) and which region answers it (`rank`)."""
