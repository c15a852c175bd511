"""opsmcp: an MCP server that lets agents operate production systems safely.

The package by layer, top to bottom; a module imports only from its own layer or below
(``tests/test_structure.py`` checks it, and that no modules import each other in a loop):

- ``cli`` — the ``opsmcp`` command (serve, sandbox seed, logs load, audit, doctor, token,
  approvals).
- ``server`` — the composition root: builds backends, toolsets, the audit trail and the
  runtime, and registers every tool through the one choke point.
- ``transport/`` — the HTTP surface: the Starlette app (``app``), Host/Origin policy
  (``origin``), authentication (``auth``), the console page and ``/events`` feed
  (``console``), what the console reads at load (``console_api``, ``console_panels``), the
  Alertmanager webhook (``webhooks``), the approvals API (``approvals_api``) and signed
  chat-bot callbacks (``chat_callback``).
- ``surface/`` — MCP beyond tools: ``prompts``, ``resources``, ``completions``,
  ``subscriptions``, which tools an identity sees (``tool_visibility``), how argument
  errors read (``arg_errors``), the SDK internals opsmcp uses (``sdk_seams``).
- ``calls/`` — what every tool call crosses: the choke point (``choke``), the caller
  (``identity``), approval of writes (``approval``; its tokens ``approval_tokens``; mode
  human's requests ``approval_desk`` and their store ``approval_store``), the audit trail
  (``audit``); and what the server built (``runtime``: what the upper layers may read of the
  backends; ``events`` with its ``depth_history``; ``heap``: giving freed memory back).
- ``toolsets/`` — one module per domain: queues, orders, logs, metrics, prometheus,
  alerts, playbooks, approvals (``base``: the ``@tool`` mark).
- ``analysis/`` — domain logic that is not a toolset: the redrive mover, DLQ failure
  signatures, queue state (for list_queues, ``/events`` and the queue resources), metric
  series summaries, log message patterns.
- ``backends/`` — one adapter per external system (SQS, DynamoDB, CloudWatch, the log
  engines, Prometheus, the alert store, Ansible, chat webhooks); ``sandbox/`` — the
  embedded moto sandbox.
- the ground: ``config`` (settings), ``errors``, ``times``, ``private`` (data files only their
  owner reads), ``results`` (the base of every tool result) and ``result_size`` (how results
  are cut to the size budget), ``telemetry`` (``/metrics``), ``logsetup`` (log handler, the
  per-call line), ``tracing`` (OpenTelemetry),
  ``catalog`` (finds the playbook catalog: ``tools/`` at the top of the repository, shipped
  in the wheel as ``opsmcp/tools/``).

The path of one call and a picture of the layers: ``docs/architecture.md``.
"""

__version__ = "0.1.0"
