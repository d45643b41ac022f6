"""The pipeline's core. Knows nothing of mcp, psycopg, kubernetes or git (a test enforces this)."""
