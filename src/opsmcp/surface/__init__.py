"""MCP beyond tools: prompts, resources, completions, subscriptions, which tools an identity
sees, and how argument errors read. Built on the runtime (:mod:`opsmcp.calls.runtime`),
never on a toolset's internals."""
