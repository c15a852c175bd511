"""The HTTP surface: the Starlette app that carries MCP (streamable HTTP, legacy SSE), the
``/events`` feed and the console page, the Host/Origin policy, authentication and the
Alertmanager webhook. Nothing below this package imports it."""
