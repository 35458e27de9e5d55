"""The agent as a service: main loop, sockets, persistence, status report, configuration,
state store, status socket, systemd notify and metrics."""
