"""opsmcp: an MCP server that lets agents operate production systems safely."""

__version__ = "0.1.0"
