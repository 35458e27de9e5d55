"""``python -m edge_agent.service --config FILE``: run the agent."""

from edge_agent.service.main import main

raise SystemExit(main())
