"""opsmcp-agent: a terminal agent that investigates ops incidents through opsmcp's MCP tools.

It is one MCP client among many: it never imports ``opsmcp``, it spawns ``opsmcp serve``
over stdio (or connects to its streamable HTTP endpoint) and drives a LangGraph agent on
a local model (Ollama by default, any OpenAI-compatible endpoint by flag).
"""

__version__ = "0.1.0"
