"""Configuration: pydantic-settings over ``OPSMCP_*``, the standard ``AWS_*`` variables and
an optional ``opsmcp.toml``.

Precedence, highest first: explicit arguments (the CLI), environment variables, the TOML
file (``./opsmcp.toml`` or the path in ``OPSMCP_CONFIG``), defaults. AWS credentials are
never read here: boto3 finds them itself (env, profile, SSO, instance role).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ALL_TOOLSETS = ("queues", "orders", "logs", "metrics", "playbooks", "prometheus", "alerts")


class ConsoleChart(BaseModel):
    """One metric chart of the console (``OPSMCP_CONSOLE_METRICS``): a CloudWatch metric over
    the last hour at one-minute periods, one line per value of ``split_by`` (at most 6)."""

    title: str = Field(max_length=80)
    namespace: str = Field(min_length=1, max_length=255)
    metric: str = Field(min_length=1, max_length=255)
    stat: str = Field("Average", max_length=16)
    split_by: str | None = Field(None, max_length=255, description="Dimension: one line per value.")
    dimensions: dict[str, str] = Field(default_factory=dict, description="Fixed dimensions of every line.")


#: The sandbox's order-system signals: per service, errors per minute and p95 latency.
DEFAULT_CONSOLE_METRICS = (
    {"title": "Errors per minute", "namespace": "OpsMCP/Services", "metric": "ErrorCount", "stat": "Sum",
     "split_by": "Service"},
    {"title": "p95 latency, ms", "namespace": "OpsMCP/Services", "metric": "LatencyP95", "stat": "Maximum",
     "split_by": "Service"},
)


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "opsmcp"


def _default_catalog() -> Path:
    """The catalog shipped with opsmcp (``tools/catalog.yml``; in a wheel, ``opsmcp/tools/``)."""
    from opsmcp.catalog import packaged_catalog

    return packaged_catalog()


class Settings(BaseSettings):
    """Every setting opsmcp reads. Field docs give units; env names are ``OPSMCP_<FIELD>``
    unless an alias lists the standard AWS name."""

    model_config = SettingsConfigDict(
        env_prefix="OPSMCP_", extra="ignore", populate_by_name=True, validate_default=True
    )

    # --- server -----------------------------------------------------------------
    allow_writes: bool = Field(False, description="Register write tools (redrive_dlq, run_playbook).")
    toolsets: Annotated[list[str], NoDecode] = Field(
        list(ALL_TOOLSETS), description="Toolsets to register, comma separated."
    )
    sandbox: bool = Field(False, description="Force the embedded moto sandbox.")
    sandbox_port: int | None = Field(
        None, ge=1, le=65535, description="Port of the embedded sandbox's moto server (default: a free one).")
    sandbox_idle_seconds: float = Field(
        600.0, ge=0, le=86_400, description="How long the shared sandbox outlives the last `opsmcp serve` "
        "using it, seconds (clients that start a server per call find the same sandbox again).")
    data_dir: Path = Field(default_factory=_default_data_dir, description="Where the log store and audit log live.")
    max_result_bytes: int = Field(60_000, ge=2_000, description="Size budget of one tool result, in bytes of JSON.")
    http_token: str | None = Field(None, description="Bearer token required on HTTP transports, if set.")
    log_level: str = Field("WARNING", description="stderr log level of every logger (uvicorn's too): DEBUG (adds "
                           "backend calls), INFO (one line per tool call), WARNING, ERROR.")
    log_format: Literal["text", "json"] = Field("text", description="stderr log format: text, or json (one object "
                                                "per line, for log shippers).")
    events_poll_seconds: float = Field(
        5.0, ge=0.2, le=3600, description="How often /events polls queue depths while someone listens, seconds.")
    events_heartbeat_seconds: float = Field(15.0, ge=1, le=300, description="/events heartbeat interval, seconds.")
    events_history: int = Field(1000, ge=1, le=100_000, description="Events kept for Last-Event-ID resumption.")
    events_buffer: int = Field(
        256, ge=1, le=100_000, description="Undelivered events one /events client may hold before it is dropped.")
    events_max_listeners: int = Field(
        256, ge=1, le=100_000, description="Most /events listeners at once (all identities); 503 past it.")
    events_max_listeners_per_identity: int = Field(
        32, ge=1, le=100_000, description="Most /events listeners one identity holds at once; 503 past it.")

    # --- HTTP identities and browser policy (opsmcp.transport.auth, opsmcp.transport.origin) -----------
    http_token_subject: str = Field("token", description="Subject (audit caller) of OPSMCP_HTTP_TOKEN.")
    tokens_file: Path | None = Field(None, description="JSON Lines of {subject, scopes, sha256}; `opsmcp token add`.")
    jwks_url: str | None = Field(None, description="JWKS URL: accept JWT bearer tokens signed by these keys.")
    jwt_issuer: str | None = Field(None, description="Required `iss` of JWTs (the authorization server).")
    jwt_audience: str | None = Field(None, description="Required `aud` of JWTs (default: the resource URL).")
    public_url: str | None = Field(None, description="Public base URL of this server, e.g. https://ops.example.com.")
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Browser Origins allowed besides same-origin, comma separated.")
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Host header values allowed besides loopback names, comma separated.")

    # --- AWS (standard names first) ---------------------------------------------
    aws_endpoint_url: str | None = Field(
        None, validation_alias=AliasChoices("OPSMCP_AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL", "aws_endpoint_url")
    )
    aws_region: str = Field(
        "us-east-1",
        validation_alias=AliasChoices("OPSMCP_AWS_REGION", "AWS_REGION", "AWS_DEFAULT_REGION", "aws_region"),
    )
    aws_profile: str | None = Field(None, validation_alias=AliasChoices("AWS_PROFILE", "aws_profile"))
    backend_timeout_seconds: float = Field(
        5.0, gt=0, le=120, description="Bound of one backend call in seconds, retries included."
    )

    redrive_hold_seconds: int = Field(
        120, ge=5, le=43_200,
        description="Visibility timeout (s) of DLQ messages while analyze_dlq/redrive_dlq hold them; "
        "after a crash mid-redrive they are invisible this long."
    )
    dlq_read_seconds: float = Field(
        4.0, gt=0, le=600,
        description="Time budget of one analyze_dlq read, seconds: it stops receiving in time to answer within about "
        "this long and answers from the sample it read (with exact totals from the queue's attributes)."
    )

    redrive_max_seconds: float = Field(
        900.0, ge=5, le=86_400, description="Time limit of one redrive_dlq call, seconds: it takes no new batch after "
        "it and reports what moved (status stopped, stop_reason timeout).")

    # --- orders -----------------------------------------------------------------
    orders_table: str = Field("orders", description="DynamoDB table of orders (hash key orderId).")
    orders_status_index: str = Field("status-index", description="GSI with hash key status, range key orderDate.")
    orders_customer_index: str = Field(
        "customer-index", description="GSI with hash key customerId, range key orderDate."
    )

    # --- logs / metrics -----------------------------------------------------------
    log_store: Path | None = Field(None, description="SQLite log store file; default <data_dir>/logs.db.")
    log_backend: Literal["embedded", "opensearch", "cloudwatch", "loki"] = Field(
        "embedded", description="Log engine the log tools read.")
    opensearch_url: str | None = Field(None, description="OpenSearch endpoint, e.g. https://search.example:9200.")
    opensearch_index: str = Field("cwl*", description="Index pattern holding the log documents.")
    opensearch_fields: dict[str, str] = Field(default_factory=dict, description=(
        "Field names where they differ from the defaults: JSON object with keys timestamp, level, service, "
        "message, trace_id, event_id (defaults @timestamp, level, service, message, trace_id, event_id)."))
    opensearch_auth: Literal["none", "basic", "bearer", "sigv4"] = Field("none", description="How to authenticate.")
    opensearch_username: str | None = Field(None, description="Basic auth user name.")
    opensearch_password: SecretStr | None = Field(None, description="Basic auth password.")
    opensearch_token: SecretStr | None = Field(None, description="Bearer token.")
    opensearch_aws_service: Literal["es", "aoss"] = Field("es", description="SigV4 service: es (domains), aoss.")
    opensearch_verify_tls: bool = Field(True, description="Verify the server's TLS certificate.")
    opensearch_ca_certs: Path | None = Field(None, description="CA bundle for the server's certificate.")
    cloudwatch_log_groups: Annotated[list[str], NoDecode] = Field(default_factory=list, description=(
        "CloudWatch Logs groups the log tools read, comma separated; a name ending in * is a prefix "
        "(at most 50 groups in all)."))
    cloudwatch_query: Literal["auto", "insights", "filter"] = Field("auto", description=(
        "How CloudWatch Logs is searched: insights (Logs Insights, billed per GB scanned), filter "
        "(FilterLogEvents, read and matched here); auto: insights on AWS, filter on another endpoint "
        "(moto, LocalStack: no Insights filter/stats)."))
    cloudwatch_max_window_hours: float = Field(
        24.0, gt=0, le=24 * 31, description="Longest window one CloudWatch Logs query reads, hours (newest kept).")
    cloudwatch_max_bytes_scanned: int = Field(
        5_000_000_000, ge=1_000_000, description="Logs Insights bytes one call may scan before it is stopped.")
    cloudwatch_query_timeout_seconds: float = Field(
        30.0, gt=0, le=900, description="Longest wait for one Logs Insights query, seconds (then stop_query).")
    cloudwatch_fields: dict[str, str] = Field(default_factory=dict, description=(
        "JSON field names of CloudWatch log lines where they differ from the defaults: keys level, service, "
        "message, trace_id, event_id (defaults level, service, message, trace_id, event_id)."))
    loki_url: str | None = Field(None, description="Loki base URL, e.g. http://loki:3100.")
    loki_selector: str = Field('{service_name=~".+"}', description=(
        "LogQL stream selector every query starts from (Loki 3 sets service_name at ingest)."))
    loki_service_label: str = Field("service_name", description="The stream label naming the service.")
    loki_fields: dict[str, str] = Field(default_factory=dict, description=(
        "JSON field names of Loki log lines where they differ from the defaults: keys level, message, trace_id, "
        "event_id (defaults level, message, trace_id, event_id)."))
    loki_max_window_hours: float = Field(
        168.0, gt=0, le=721, description="Longest window one Loki query reads, hours (newest kept).")
    loki_tenant: str | None = Field(None, description="X-Scope-OrgID of multi-tenant Loki.")
    loki_token: SecretStr | None = Field(None, description="Bearer token sent to Loki, if set.")
    loki_username: str | None = Field(None, description="Basic-auth user for Loki, if set.")
    loki_password: SecretStr | None = Field(None, description="Basic-auth password for Loki.")
    loki_verify_tls: bool = Field(True, description="Verify Loki's TLS certificate.")

    # --- Prometheus / Alertmanager (toolsets registered only when configured) ---------
    prometheus_url: str | None = Field(None, description="Prometheus base URL; registers the prometheus toolset.")
    prometheus_token: SecretStr | None = Field(None, description="Bearer token sent to Prometheus, if set.")
    prometheus_username: str | None = Field(None, description="Basic-auth user for Prometheus, if set.")
    prometheus_password: SecretStr | None = Field(None, description="Basic-auth password for Prometheus.")
    alertmanager_url: str | None = Field(None, description="Alertmanager base URL; registers the alerts toolset.")
    alerts_table: str | None = Field(None, description="DynamoDB table (hash key fingerprint) for alerts.")
    alerts_max_stored: int = Field(2000, ge=10, le=1_000_000, description="Alerts kept; oldest resolved dropped first.")
    alerts_max_bytes: int = Field(8 * 1024 * 1024, ge=65_536, description=(
        "Bytes of alert records the file store keeps (each alert is also bounded); oldest resolved dropped first."))
    alerts_max_payload_bytes: int = Field(
        1_048_576, ge=1024, description="Largest Alertmanager webhook body accepted, in bytes."
    )
    webhook_token: SecretStr | None = Field(
        None, description="Alertmanager's own credential for POST /webhooks/alertmanager (bearer token, or the "
        "password of basic auth); tokens with scope alerts:write work too.")

    # --- playbooks / audit --------------------------------------------------------
    catalog_dir: Path | None = Field(None, description="A team's own catalog directory (catalog.yml, playbooks/, "
                                     "runbooks/), instead of the one shipped with opsmcp (tools/ in the repository).")
    playbook_catalog: Path = Field(default_factory=_default_catalog, description="Catalog YAML of runnable playbooks "
                                   "(default: catalog.yml of OPSMCP_CATALOG_DIR, else the shipped one).")
    playbook_timeout_seconds: float = Field(300.0, gt=0, description="Wall-clock limit of one playbook run, seconds.")
    audit_log: Path | None = Field(None, description="Audit JSON Lines file; default <data_dir>/audit.jsonl.")
    audit_table: str | None = Field(None, description="DynamoDB table for audit records instead of the file.")
    write_approval: Literal["prompt", "prompt-or-confirm", "human"] = Field(
        "prompt", description="How a real write is approved: 'prompt': an approval prompt (elicitation) the user "
        "answers in the client; 'prompt-or-confirm': also confirm=true with the preview's approval token (the model "
        "sets it: trusted single-user clients only); 'human': an approval request a person with ops:approve "
        "approves over HTTP (console, CLI, chat link).")
    approval_secret: SecretStr | None = Field(
        None, description="HMAC key of approval tokens (and of sealed request state); replicas share it. "
        "When unset, one generated into <data_dir>/approval.secret (0600) on first use by a server with writes.")
    approval_ttl_seconds: float = Field(600.0, gt=0, le=86_400, description="How long an approval token is valid, s.")
    approval_request_ttl_seconds: float = Field(
        3600.0, ge=60, le=604_800, description="How long an approval request (mode human) waits for a person, s.")
    approval_wait_seconds: float = Field(
        0.0, ge=0, le=600, description="Mode human: how long a write call whose client sent a progress token waits "
        "for the decision (reporting progress) before it answers pending_approval, s; 0: answer at once.")
    approval_allow_self: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Identities (subjects) that may approve their own requests, comma separated.")
    approval_max_pending: int = Field(100, ge=1, le=10_000, description="Most approval requests pending at once.")
    notify_slack_url: SecretStr | None = Field(None, description="Slack incoming webhook for approvals and alerts.")
    notify_webhook_url: SecretStr | None = Field(None, description="Generic JSON webhook for approvals and alerts.")
    notify_timeout_seconds: float = Field(5.0, gt=0, le=60, description="Bound of one notification attempt, s.")
    chat_callback_secret: SecretStr | None = Field(
        None, description="HMAC key of signed chat-bot approval callbacks (POST /webhooks/approvals); off when unset.")
    chat_approvers: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Chat users who may decide by callback: chatuser=identity, comma separated.")

    # --- the console at / (opsmcp.transport.console_panels) -------------------------
    console_metrics: list[ConsoleChart] = Field(
        default_factory=lambda: [ConsoleChart.model_validate(c) for c in DEFAULT_CONSOLE_METRICS], max_length=4,
        description="The console's metric charts, JSON list of {title, namespace, metric, stat, split_by, dimensions}.")
    console_cache_seconds: float = Field(
        30.0, ge=1, le=3600, description="How long the console reuses the charts it read, seconds.")
    console_dlq_read: int = Field(
        200, ge=1, le=5000, description="Most messages the console's failure groups read per DLQ (the shared read).")

    # --- MCP resources --------------------------------------------------------------
    resource_poll_seconds: float = Field(
        5.0, ge=0.05, le=300, description="How often subscribed opsmcp://queues/{name} resources are re-read, seconds."
    )

    @field_validator("toolsets", mode="before")
    @classmethod
    def _split_toolsets(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            unknown = sorted(set(value) - set(ALL_TOOLSETS))
            if unknown:
                raise ValueError(f"unknown toolsets {unknown}; choose from {', '.join(ALL_TOOLSETS)}")
        return value

    @model_validator(mode="after")
    def _catalog_in_catalog_dir(self) -> Settings:
        """OPSMCP_CATALOG_DIR names the catalog unless OPSMCP_PLAYBOOK_CATALOG is given too."""
        if self.catalog_dir is not None and "playbook_catalog" not in self.model_fields_set:
            self.playbook_catalog = self.catalog_dir / "catalog.yml"
        return self

    @field_validator("allowed_origins", "allowed_hosts", "cloudwatch_log_groups", "approval_allow_self",
                     "chat_approvers", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        return value

    @property
    def log_store_path(self) -> Path:
        """The SQLite log store file."""
        return self.log_store or self.data_dir / "logs.db"

    @property
    def audit_log_path(self) -> Path:
        """The JSON Lines audit file."""
        return self.audit_log or self.data_dir / "audit.jsonl"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get("OPSMCP_CONFIG", "opsmcp.toml"))
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml_path))


def aws_configured(settings: Settings) -> bool:
    """True when an AWS endpoint or credentials are configured, so the sandbox is not needed.

    Checks the places boto3 would look without calling the instance metadata service
    (which would stall start-up for seconds off EC2).
    """
    if settings.aws_endpoint_url or settings.aws_profile:
        return True
    env = os.environ
    if env.get("AWS_ACCESS_KEY_ID") or env.get("AWS_WEB_IDENTITY_TOKEN_FILE"):
        return True
    if env.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") or env.get("AWS_CONTAINER_CREDENTIALS_FULL_URI"):
        return True
    home = Path.home() / ".aws"
    creds = Path(env.get("AWS_SHARED_CREDENTIALS_FILE", home / "credentials"))
    return creds.exists()


#: Shortest shared secret (``OPSMCP_HTTP_TOKEN``, ``OPSMCP_WEBHOOK_TOKEN``) accepted on a
#: non-loopback bind: 32 characters of ``secrets.token_urlsafe`` carry 192 bits.
MIN_PUBLIC_TOKEN_CHARS = 32
#: What every token opsmcp makes starts with: never a ``-`` (which a command line would read as
#: an option: ``secrets.token_urlsafe`` starts one token in 64 with it), and easy to spot for
#: redaction and secret scanners.
TOKEN_PREFIX = "opsmcp_"
#: The command that prints a good token.
TOKEN_COMMAND = "python3 -c 'import secrets; print(\"opsmcp_\" + secrets.token_urlsafe(32))'"


def is_loopback(host: str) -> bool:
    """True for a bind address only this machine reaches: ``localhost`` or a loopback IP
    (127.0.0.0/8, ::1). ``0.0.0.0``, ``::``, ``""`` and any other name or address are not."""
    import ipaddress

    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def weak_token_problem(settings: Settings, host: str) -> str | None:
    """Why serving on ``host`` with these shared tokens is unsafe, or None.

    On a non-loopback bind, ``OPSMCP_HTTP_TOKEN`` and ``OPSMCP_WEBHOOK_TOKEN`` must be at
    least :data:`MIN_PUBLIC_TOKEN_CHARS` characters (a short one can be guessed from the
    network). Tokens of the tokens file are hashes of 256-bit random tokens, and JWTs are
    signed, so neither is checked here.
    """
    if is_loopback(host):
        return None
    named = [("OPSMCP_HTTP_TOKEN", settings.http_token),
             ("OPSMCP_WEBHOOK_TOKEN", settings.webhook_token.get_secret_value() if settings.webhook_token else None)]
    for env, value in named:
        if value is not None and len(value.strip()) < MIN_PUBLIC_TOKEN_CHARS:
            return (f"{env} is {len(value.strip())} characters; serving on {host or 'every address'} (not loopback) "
                    f"needs at least {MIN_PUBLIC_TOKEN_CHARS}. Make one with: {TOKEN_COMMAND} "
                    "(or bind 127.0.0.1).")
    return None
