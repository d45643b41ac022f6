"""hoop-mcp: an MCP server that guards what AI coding agents do to production systems."""

__version__ = "0.1.0"
