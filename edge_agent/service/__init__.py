"""The agent as a service: wire protocol, ingest, status socket, state store, main loop."""
