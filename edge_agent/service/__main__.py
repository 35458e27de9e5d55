"""``python -m edge_agent.service --config FILE``: run the agent."""

from edge_agent.service.agent import main

raise SystemExit(main())
