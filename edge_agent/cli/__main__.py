"""``python -m edge_agent.cli``: the ``edge-agent`` command."""

from edge_agent.cli import main

raise SystemExit(main())
