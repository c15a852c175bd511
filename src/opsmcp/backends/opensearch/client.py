"""The opensearch-py client from settings, and engine errors as tool errors.

Auth (``OPSMCP_OPENSEARCH_AUTH``): ``none``; ``basic`` (user name + password);
``bearer`` (a token in ``Authorization``); ``sigv4`` (Amazon OpenSearch Service:
``AWSV4SignerAuth`` with boto3's credential chain and ``OPSMCP_AWS_REGION``). TLS
certificates are verified unless ``OPSMCP_OPENSEARCH_VERIFY_TLS=false``; every request is
bounded by ``OPSMCP_BACKEND_TIMEOUT_SECONDS`` and retried at most once (connection errors
only, never on a timeout).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from opsmcp.errors import BackendUnavailable, InvalidInput, NotFound, OpsError

if TYPE_CHECKING:
    from opsmcp.config import Settings

INSTALL_HINT = "install opensearch-py: pip install 'opsmcp[opensearch]' (or pip install opensearch-py)."


def redact(url: str) -> str:
    """The URL without user info (never print a password)."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    return url


def make_client(settings: Settings) -> Any:
    """An ``opensearchpy.OpenSearch`` client for ``settings`` (not yet connected).

    Raises:
        OpsError: no URL configured, opensearch-py missing, or incomplete auth settings.
    """
    url = settings.opensearch_url
    if not url:
        raise OpsError("OPSMCP_LOG_BACKEND=opensearch but OPSMCP_OPENSEARCH_URL is not set.",
                       "set OPSMCP_OPENSEARCH_URL, e.g. https://search.example:9200.")
    try:
        import opensearchpy
    except ImportError:
        raise OpsError("The OpenSearch log backend needs the opensearch-py package.", INSTALL_HINT) from None
    kwargs: dict[str, Any] = {
        "hosts": [url],
        "timeout": settings.backend_timeout_seconds,
        "max_retries": 1,
        "retry_on_timeout": False,
        "verify_certs": settings.opensearch_verify_tls,
        "ssl_show_warn": settings.opensearch_verify_tls,
    }
    if settings.opensearch_ca_certs:
        kwargs["ca_certs"] = str(settings.opensearch_ca_certs)
    auth = settings.opensearch_auth
    if auth == "basic":
        if not settings.opensearch_username or settings.opensearch_password is None:
            raise OpsError("OPSMCP_OPENSEARCH_AUTH=basic needs OPSMCP_OPENSEARCH_USERNAME and "
                           "OPSMCP_OPENSEARCH_PASSWORD.", "set both, or choose another auth.")
        kwargs["http_auth"] = (settings.opensearch_username, settings.opensearch_password.get_secret_value())
    elif auth == "bearer":
        if settings.opensearch_token is None:
            raise OpsError("OPSMCP_OPENSEARCH_AUTH=bearer needs OPSMCP_OPENSEARCH_TOKEN.", "set the token.")
        kwargs["headers"] = {"Authorization": f"Bearer {settings.opensearch_token.get_secret_value()}"}
    elif auth == "sigv4":
        import boto3

        credentials = boto3.Session(profile_name=settings.aws_profile).get_credentials()
        if credentials is None:
            raise OpsError("OPSMCP_OPENSEARCH_AUTH=sigv4 found no AWS credentials.",
                           "configure AWS credentials (AWS_PROFILE, environment, or an instance role).")
        kwargs["http_auth"] = opensearchpy.AWSV4SignerAuth(credentials, settings.aws_region,
                                                           settings.opensearch_aws_service)
        kwargs["connection_class"] = opensearchpy.RequestsHttpConnection
    return opensearchpy.OpenSearch(**kwargs)


def engine_reason(exc: BaseException) -> str:
    """The engine's own reason for a failed request (root cause first), in one line."""
    try:
        info = getattr(exc, "info", None)
    except IndexError:  # opensearch-py exceptions built with fewer arguments
        info = None
    if isinstance(info, dict):
        err = info.get("error")
        if isinstance(err, dict):
            causes = err.get("root_cause") or []
            first = causes[0] if causes and isinstance(causes[0], dict) else err
            reason = first.get("reason") or err.get("reason")
            kind = first.get("type") or err.get("type")
            if reason:
                return f"{kind}: {reason}" if kind else str(reason)
        elif err:
            return str(err)
    try:
        error = getattr(exc, "error", None)
    except IndexError:
        error = None
    if error and not isinstance(error, Exception):
        return str(error)
    return f"{type(exc).__name__}: {exc}"


def map_error(exc: BaseException, *, url: str, index: str, what: str) -> OpsError:
    """An opensearch-py failure as an :mod:`opsmcp.errors` type quoting the engine's reason."""
    try:
        from opensearchpy import exceptions as ex
    except ImportError:  # pragma: no cover - the client exists, so the package does
        return OpsError(f"OpenSearch {what} failed: {exc}")
    where = redact(url)
    if isinstance(exc, (ex.ConnectionTimeout,)):
        return BackendUnavailable(f"OpenSearch at {where} did not answer {what} in time.",
                                  "retry, narrow the window, or raise OPSMCP_BACKEND_TIMEOUT_SECONDS.")
    if isinstance(exc, ex.ConnectionError):
        return BackendUnavailable(f"Cannot reach OpenSearch at {where} ({engine_reason(exc)}).",
                                  "check OPSMCP_OPENSEARCH_URL and that the cluster is up (`opsmcp doctor`).")
    try:
        status = getattr(exc, "status_code", None)
    except IndexError:
        status = None
    reason = engine_reason(exc)
    if status == 429:
        return BackendUnavailable(f"OpenSearch is throttling requests (429) for {what}: {reason}.",
                                  "retry in a few seconds, or narrow the window.")
    if status in (401, 403):
        return OpsError(f"OpenSearch at {where} refused {what} ({status}): {reason}.",
                        "check OPSMCP_OPENSEARCH_AUTH and its credentials, and the index permissions.")
    if status == 404:
        return NotFound(f"OpenSearch found no index for {index!r} during {what}: {reason}.",
                        "check OPSMCP_OPENSEARCH_INDEX (a pattern such as cwl*), or load logs first.")
    if status == 400:
        return InvalidInput(f"OpenSearch rejected {what}: {reason}.",
                            "simplify the query (words, \"phrases\", AND/OR/NOT) or check the filters.")
    if isinstance(exc, ex.TransportError):
        return BackendUnavailable(f"OpenSearch {what} failed ({status}): {reason}.", "retry; see `opsmcp doctor`.")
    return OpsError(f"OpenSearch {what} failed: {reason}.", "see `opsmcp doctor`.")
