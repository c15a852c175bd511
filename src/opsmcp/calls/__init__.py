"""The call pipeline: what every tool call crosses — the choke point, the caller's
identity and scopes, approval of writes, the audit trail, the result-size budget — and the
runtime and event hub it shares with the surfaces above."""
