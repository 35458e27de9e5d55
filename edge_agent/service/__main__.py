"""``python -m edge_agent.service --config FILE``: run the agent (an entry point, like
``edge-agent run``)."""

from edge_agent.cli.run import service_main

raise SystemExit(service_main())
