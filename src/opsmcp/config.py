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

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ALL_TOOLSETS = ("queues", "orders", "logs", "metrics", "playbooks", "prometheus", "alerts")


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "opsmcp"


def _default_catalog() -> Path:
    """The catalog shipped inside the package (``opsmcp/catalog/catalog.yml``)."""
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
    data_dir: Path = Field(default_factory=_default_data_dir, description="Where the log store and audit log live.")
    max_result_bytes: int = Field(60_000, ge=2_000, description="Size budget of one tool result, in bytes of JSON.")
    http_token: str | None = Field(None, description="Bearer token required on HTTP transports, if set.")
    log_level: str = Field("WARNING", description="stderr log level: DEBUG, INFO, WARNING, ERROR.")
    events_poll_seconds: float = Field(
        5.0, ge=0.2, le=3600, description="How often /events polls queue depths while someone listens, seconds.")
    events_heartbeat_seconds: float = Field(15.0, ge=1, le=300, description="/events heartbeat interval, seconds.")
    events_history: int = Field(1000, ge=1, le=100_000, description="Events kept for Last-Event-ID resumption.")
    events_buffer: int = Field(
        256, ge=1, le=100_000, description="Undelivered events one /events client may hold before it is dropped.")

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

    # --- orders -----------------------------------------------------------------
    orders_table: str = Field("orders", description="DynamoDB table of orders (hash key orderId).")
    orders_status_index: str = Field("status-index", description="GSI with hash key status, range key orderDate.")
    orders_customer_index: str = Field(
        "customer-index", description="GSI with hash key customerId, range key orderDate."
    )

    # --- logs / metrics -----------------------------------------------------------
    log_store: Path | None = Field(None, description="SQLite log store file; default <data_dir>/logs.db.")
    log_backend: Literal["embedded", "opensearch"] = Field("embedded", description="Log engine the log tools read.")
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

    # --- Prometheus / Alertmanager (toolsets registered only when configured) ---------
    prometheus_url: str | None = Field(None, description="Prometheus base URL; registers the prometheus toolset.")
    prometheus_token: SecretStr | None = Field(None, description="Bearer token sent to Prometheus, if set.")
    prometheus_username: str | None = Field(None, description="Basic-auth user for Prometheus, if set.")
    prometheus_password: SecretStr | None = Field(None, description="Basic-auth password for Prometheus.")
    alertmanager_url: str | None = Field(None, description="Alertmanager base URL; registers the alerts toolset.")
    alerts_table: str | None = Field(None, description="DynamoDB table (hash key fingerprint) for alerts.")
    alerts_max_stored: int = Field(2000, ge=10, le=1_000_000, description="Alerts kept; oldest resolved dropped first.")
    alerts_max_payload_bytes: int = Field(
        1_048_576, ge=1024, description="Largest Alertmanager webhook body accepted, in bytes."
    )

    # --- playbooks / audit --------------------------------------------------------
    playbook_catalog: Path = Field(default_factory=_default_catalog, description="Catalog YAML of runnable playbooks.")
    playbook_timeout_seconds: float = Field(300.0, gt=0, description="Wall-clock limit of one playbook run, seconds.")
    audit_log: Path | None = Field(None, description="Audit JSON Lines file; default <data_dir>/audit.jsonl.")
    audit_table: str | None = Field(None, description="DynamoDB table for audit records instead of the file.")
    write_approval: Literal["prompt-or-confirm", "prompt"] = Field(
        "prompt-or-confirm", description="How a real write is approved: an approval prompt (elicitation) or, for "
        "clients without one, confirm=true with the preview's approval token; 'prompt': only the prompt.")
    approval_secret: SecretStr | None = Field(
        None, description="HMAC key of approval tokens (and of sealed request state); replicas share it. "
        "Random per process when unset.")
    approval_ttl_seconds: float = Field(600.0, gt=0, le=86_400, description="How long an approval token is valid, s.")

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

    @field_validator("allowed_origins", "allowed_hosts", mode="before")
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
