"""``pgqueue mcp``: the HTTP API as Model Context Protocol tools (SPEC §16); see ``server``."""
