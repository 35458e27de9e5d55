"""Fleet tools: the ZeroMQ fan-in proxy, collecting field data from agents, rollouts."""
