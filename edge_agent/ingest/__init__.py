"""Ingest: the wire protocol, the ZeroMQ and serial sources, intake checks and the bounded queue."""
