"""Shared boto3 plumbing: one client per service, bounded timeouts, errors mapped to OpsError.

Every AWS adapter (:mod:`.sqs`, :mod:`.dynamodb`, :mod:`.cloudwatch`) gets its client from
:class:`AwsClients`, which creates each client once (botocore clients are thread-safe;
creating one costs ~5 ms, more than a call to moto) with connect/read timeouts and a
small retry budget, so a backend that is down yields a tool error within seconds.
:func:`aws_call` runs one blocking call off the event loop, bounded by
``backend_timeout_seconds`` as a whole (retries included), and maps botocore's failures
to :class:`~opsmcp.errors.OpsError` subclasses that name the endpoint.

Two facts shape the clients:

- botocore retries a call that timed out. For a non-idempotent call (``SendMessageBatch``)
  that turns one stalled request into up to three applied copies, so such calls use
  ``client(service, retries=False)``: one attempt, whose timeout means "outcome unknown".
- Each client's connection pool is sized :data:`WORKER_THREADS`, the same number as the
  limiter :func:`aws_call` runs under, so concurrent calls never overflow the pool
  ("Connection pool is full, discarding connection").

A tool call makes several AWS calls (a redrive: receive, send, delete, release, read the
count). Inside :func:`call_budget` (the server's choke point opens one per tool call) they
share one budget: once one of them got no answer within its bound, the backend has stopped
answering, and the rest (in flight or still to come) get :data:`GRACE_SECONDS` more, so the
whole tool call answers within ``backend_timeout_seconds`` of the stall instead of waiting
that long for every later call.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread

from opsmcp.errors import BackendUnavailable, InvalidInput, NotFound, OpsError
from opsmcp.logsetup import backend_call_line, backends_log

if TYPE_CHECKING:
    from opsmcp.config import Settings

T = TypeVar("T")

#: Worker threads that may run AWS calls at once (anyio's default thread limit) and the size
#: of every boto3 client's connection pool: one number, so a busy server never has more
#: calls in flight than pooled connections.
WORKER_THREADS = 40
#: Attempts of an idempotent call (the first one plus retries on throttling, 5xx and
#: connection errors); all of them together stay within ``backend_timeout_seconds``.
READ_ATTEMPTS = 3

#: Share of ``backend_timeout_seconds`` one :func:`aws_call` waits for the backend; the rest
#: is left for answering, so a stalled backend's tool error arrives within the timeout.
ANSWER_SHARE = 0.9

_limiter: anyio.lowlevel.RunVar[anyio.CapacityLimiter] = anyio.lowlevel.RunVar("opsmcp_aws_limiter")

#: After one call of a tool call got no answer: the time every other AWS call of that tool
#: call still has, in seconds, at most (a healthy backend answers a release in milliseconds).
GRACE_SECONDS = 0.25


class CallBudget:
    """The AWS calls of one tool call: their cancel scopes, and once the backend stopped
    answering one of them, the time (``anyio.current_time()``) by which all must be done."""

    def __init__(self) -> None:
        self.answer_by: float | None = None
        self.scopes: set[anyio.CancelScope] = set()

    def stalled(self) -> None:
        """A call got no answer in time: every call in flight and to come ends by now + grace."""
        if self.answer_by is None:
            self.answer_by = anyio.current_time() + GRACE_SECONDS
            for scope in self.scopes:
                scope.deadline = min(scope.deadline, self.answer_by)


_budget: contextvars.ContextVar[CallBudget | None] = contextvars.ContextVar("opsmcp_aws_budget", default=None)


@contextlib.contextmanager
def call_budget() -> Iterator[CallBudget]:
    """Make the AWS calls made inside this block (and in tasks started from it) share one
    :class:`CallBudget`; inside another one, join it."""
    found = _budget.get()
    if found is not None:
        yield found
        return
    budget = CallBudget()
    token = _budget.set(budget)
    try:
        yield budget
    finally:
        _budget.reset(token)


def aws_limiter() -> anyio.CapacityLimiter:
    """The capacity limiter of AWS calls in the running event loop (:data:`WORKER_THREADS` tokens)."""
    try:
        return _limiter.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(WORKER_THREADS)
        _limiter.set(limiter)
        return limiter


class AwsClients:
    """Lazily created, shared boto3 clients for one endpoint/region/profile.

    Args:
        settings: endpoint (``aws_endpoint_url``), region, profile and
            ``backend_timeout_seconds`` (connect and read timeout, seconds).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._session: Any = None

    @property
    def endpoint(self) -> str:
        """The endpoint calls go to, for error messages (``AWS default`` when unset)."""
        return self.settings.aws_endpoint_url or f"AWS {self.settings.aws_region} (default endpoint)"

    def client(self, service: str, *, retries: bool = True) -> Any:
        """Return the shared boto3 client for ``service`` (``"sqs"``, ``"dynamodb"``, ...).

        Args:
            retries: ``False`` for a client that makes exactly one attempt per call, for
                calls that are not idempotent (a retried ``SendMessageBatch`` whose first
                attempt timed out can be applied twice or three times).
        """
        key = service if retries else f"{service}:once"
        found = self._clients.get(key)
        if found is not None:
            return found
        with self._lock:
            if key not in self._clients:
                from botocore.config import Config  # imported here: keeps `tools/list` cold start free of boto3

                if self._session is None:
                    self._session = _session(self.settings)
                timeout = self.settings.backend_timeout_seconds
                config = Config(
                    connect_timeout=timeout,
                    read_timeout=timeout,
                    retries={"total_max_attempts": READ_ATTEMPTS if retries else 1, "mode": "standard"},
                    max_pool_connections=WORKER_THREADS,
                )
                self._clients[key] = self._session.client(
                    service, endpoint_url=self.settings.aws_endpoint_url, config=config
                )
            return self._clients[key]


    def lazy(self, service: str, *, retries: bool = True) -> LazyClient:
        """The client of ``service`` as a :class:`LazyClient`: ``lazy("sqs").list_queues`` is a
        callable that creates the client (the first time) in the thread that calls it, so
        passing it to :func:`aws_call` never creates a client on the event loop (loading a
        service model takes hundreds of ms, during which every session would wait)."""
        return LazyClient(self, service, retries)


class LazyClient:
    """The operations of one service's shared client, resolved when called (see
    :meth:`AwsClients.lazy`). Each attribute is a callable with the operation's
    ``__name__`` and the ``service`` it belongs to."""

    def __init__(self, clients: AwsClients, service: str, retries: bool) -> None:
        self._clients, self.service, self._retries = clients, service, retries

    def __getattr__(self, operation: str) -> Callable[..., Any]:
        if operation.startswith("_"):
            raise AttributeError(operation)
        clients, service, retries = self._clients, self.service, self._retries

        def call(*args: Any, **kwargs: Any) -> Any:
            return getattr(clients.client(service, retries=retries), operation)(*args, **kwargs)

        call.__name__ = call.__qualname__ = operation
        call.service = service  # type: ignore[attr-defined]
        return call


#: The credentials LocalStack documents for local use; moto accepts any. Used only for an
#: endpoint on this machine when no credentials are configured.
LOCAL_TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}


def _session(settings: Settings) -> Any:
    """A boto3 session for ``settings``' profile and region.

    Raises:
        OpsError: the profile does not exist or the AWS configuration cannot be read (the
            message names the fix: :func:`credentials_problem`).
    """
    import boto3  # imported here: keeps `tools/list` cold start free of boto3
    from botocore.exceptions import BotoCoreError

    try:
        return boto3.session.Session(profile_name=settings.aws_profile, region_name=settings.aws_region)
    except BotoCoreError as exc:
        raise BackendUnavailable(_profile_problem(settings, exc)) from exc


def _profile_problem(settings: Settings, exc: Exception) -> str:
    """One sentence about a session that cannot be made, with the fix."""
    from botocore.exceptions import ProfileNotFound

    if isinstance(exc, ProfileNotFound):
        return (f"AWS_PROFILE={settings.aws_profile} names a profile that is not in ~/.aws/config or "
                f"~/.aws/credentials: create it (`aws configure --profile {settings.aws_profile}`), set AWS_PROFILE "
                "to a profile that exists, or unset AWS_PROFILE (with no AWS configured, opsmcp serves its embedded "
                "sandbox).")
    return (f"the AWS configuration cannot be read ({type(exc).__name__}: {exc}): fix ~/.aws/config or unset "
            "AWS_PROFILE.")


def credentials_problem(settings: Settings) -> str | None:
    """What is wrong with the AWS credentials boto3 would use for ``settings``, as one
    sentence that names the fix; None when it finds credentials.

    Looks where boto3 looks (environment, the profile, SSO and role configuration, the
    container and instance metadata services); makes no AWS call. Short-lived credentials
    (SSO, assumed roles) are only located here, not refreshed: an expired SSO login shows
    up on the first call. Keys in the environment (boto3's first place, used unless a
    profile is named) are found without importing boto3, which keeps it off the start-up path.
    """
    import os

    if settings.aws_profile is None and os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
        return None
    try:
        session = _session(settings)
        found = session.get_credentials()
    except OpsError as exc:
        return exc.message
    except Exception as exc:  # botocore raises many types while reading config and token files
        return _profile_problem(settings, exc)
    if found is None:
        where = f" for {settings.aws_endpoint_url}" if settings.aws_endpoint_url else ""
        return (f"no AWS credentials found{where}: set AWS_PROFILE to a configured profile, or AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY; or unset AWS_ENDPOINT_URL and AWS_PROFILE to serve the embedded sandbox.")
    return None


def is_loopback(url: str | None) -> bool:
    """True when ``url``'s host is this machine: ``localhost`` (and LocalStack's
    ``localhost.localstack.cloud`` names), 127.0.0.0/8 or ::1."""
    import ipaddress
    from urllib.parse import urlsplit

    if not url:
        return False
    host = (urlsplit(url if "//" in url else f"//{url}").hostname or "").lower()
    if host == "localhost" or host.endswith((".localhost", "localhost.localstack.cloud")):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def use_local_test_credentials(settings: Settings) -> str | None:
    """For an endpoint on this machine (LocalStack, a moto server) with no credentials
    configured (no AWS_ACCESS_KEY_ID, no profile, no ~/.aws files), put LocalStack's test
    credentials (:data:`LOCAL_TEST_CREDENTIALS`) into this process's environment and return
    a line saying so; otherwise change nothing and return None."""
    import os
    from pathlib import Path

    if not is_loopback(settings.aws_endpoint_url) or settings.aws_profile or os.environ.get("AWS_ACCESS_KEY_ID"):
        return None
    home = Path.home() / ".aws"
    for path in (os.environ.get("AWS_SHARED_CREDENTIALS_FILE", home / "credentials"),
                 os.environ.get("AWS_CONFIG_FILE", home / "config")):
        if Path(path).exists():
            return None
    os.environ.update(LOCAL_TEST_CREDENTIALS)
    return (f"AWS_ENDPOINT_URL={settings.aws_endpoint_url} is on this machine and no AWS credentials are set: "
            "using LocalStack's test credentials (AWS_ACCESS_KEY_ID=test); set your own to override.")


NOT_FOUND_CODES = {
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "ResourceNotFoundException",
}
INPUT_CODES = {
    "InvalidParameterValue",
    "InvalidParameterCombination",
    "ValidationException",
    "InvalidAttributeValue",
    "InvalidMessageContents",
    "InvalidBatchEntryId",
    "BatchEntryIdsNotDistinct",
    "MissingParameter",
    "InvalidParameterValueException",
    "InvalidToken",
    "InvalidNextToken",
    "MalformedQueryException",  # CloudWatch Logs Insights
    "InvalidParameterException",  # CloudWatch Logs
}


def map_aws_error(exc: Exception, endpoint: str, what: str) -> OpsError:
    """Translate a botocore/boto3 exception into an :class:`OpsError` that says what failed.

    Args:
        exc: the exception boto3 raised.
        endpoint: the endpoint URL, named in connection errors.
        what: the operation in words ("list queues", "read order 42").
    """
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        NoRegionError,
        ReadTimeoutError,
    )

    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError, ConnectionClosedError)):
        return BackendUnavailable(
            f"Could not reach {endpoint} to {what}: {exc}.",
            "check that the endpoint is up (AWS_ENDPOINT_URL) or run `opsmcp serve --sandbox`.",
        )
    if isinstance(exc, ReadTimeoutError):
        return BackendUnavailable(f"{endpoint} did not answer in time to {what}.",
                                  "retry later, or narrow the request.")
    if isinstance(exc, NoCredentialsError):
        return BackendUnavailable(f"No AWS credentials to {what} at {endpoint}.",
                                  "set AWS_PROFILE to a configured profile, or AWS_ACCESS_KEY_ID and "
                                  "AWS_SECRET_ACCESS_KEY (LocalStack: test / test); then restart opsmcp.")
    if isinstance(exc, NoRegionError):
        return BackendUnavailable(f"AWS is not configured to {what}: {exc}.", "set AWS_REGION.")
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", "Unknown"))
        message = str(err.get("Message", "")) or code
        short = code.removeprefix("AWS.SimpleQueueService.")  # SQS's JSON protocol prefixes some codes
        if code in NOT_FOUND_CODES or short in NOT_FOUND_CODES:
            return NotFound(f"Failed to {what}: {message} ({code}).")
        if short in INPUT_CODES:
            return InvalidInput(f"Failed to {what}: {message} ({code}).")
        return OpsError(f"{endpoint} refused to {what}: {message} ({code}).")
    return OpsError(f"Failed to {what}: {type(exc).__name__}: {exc}.")


def aws_error_code(exc: BaseException) -> str | None:
    """The AWS error code (``ConditionalCheckFailedException``...) behind ``exc``: a botocore
    ``ClientError``, or an :class:`~opsmcp.errors.OpsError` that :func:`aws_call` mapped from
    one (directly, or through the causes of errors that wrap it); None for anything else."""
    seen: BaseException | None = exc
    while seen is not None:
        response = getattr(seen, "response", None)
        if isinstance(response, dict) and response.get("Error", {}).get("Code"):
            return str(response["Error"]["Code"])
        seen = seen.__cause__
    return None


def aws_call_sync(clients: AwsClients, what: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run the blocking boto3 call ``fn(*args, **kwargs)`` here, for code that already runs in
    a worker thread (the log backends: the toolset calls them off the event loop). Bounded
    by the client's own connect/read timeouts (``backend_timeout_seconds``) and its
    :data:`READ_ATTEMPTS`; errors mapped as in :func:`aws_call`.

    Raises:
        OpsError: any botocore failure, mapped by :func:`map_aws_error`.
    """
    try:
        return fn(*args, **kwargs)
    except OpsError:
        raise
    except Exception as exc:  # botocore raises many unrelated types; map them all
        raise map_aws_error(exc, clients.endpoint, what) from exc


def _service_of(fn: Any) -> str:
    """The AWS service of a :class:`LazyClient` operation or a bound boto3 client method
    (``sqs``, ``dynamodb``...)."""
    if isinstance(getattr(fn, "service", None), str):
        return str(fn.service)
    meta = getattr(getattr(fn, "__self__", None), "meta", None)
    return str(getattr(getattr(meta, "service_model", None), "service_name", "aws"))


async def aws_call(clients: AwsClients, what: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run the blocking boto3 call ``fn(*args, **kwargs)`` in a worker thread, at most
    :data:`WORKER_THREADS` at once, and give up after :data:`ANSWER_SHARE` of ``backend_timeout_seconds`` in total
    (all of botocore's attempts together; the abandoned thread ends by its own socket
    timeout). A call that timed out may still have been applied by the backend: callers of
    non-idempotent calls treat the error as "outcome unknown".

    Raises:
        BackendUnavailable: no answer within ``backend_timeout_seconds``.
        OpsError: any botocore failure, mapped by :func:`map_aws_error` (``what`` names the
            operation in the message).
    """

    def run() -> T:
        start = time.perf_counter()
        outcome = "ok"
        try:
            return fn(*args, **kwargs)
        except OpsError as exc:
            outcome = type(exc).__name__
            raise
        except Exception as exc:  # botocore raises many unrelated types; map them all
            outcome = type(exc).__name__
            raise map_aws_error(exc, clients.endpoint, what) from exc
        finally:
            if backends_log.isEnabledFor(logging.DEBUG):
                # the API operation only: ``what`` names queues and keys a caller chose
                backend_call_line(_service_of(fn), getattr(fn, "__name__", "call"), time.perf_counter() - start,
                                  outcome)

    timeout = clients.settings.backend_timeout_seconds
    # The call gets ANSWER_SHARE of the bound, the rest is for mapping the error and answering,
    # so the tool error reaches the client within backend_timeout_seconds.
    wait = timeout * ANSWER_SHARE
    budget = _budget.get()
    if budget is not None and budget.answer_by is not None:  # the backend stopped answering this tool call
        wait = min(wait, budget.answer_by - anyio.current_time())
        if wait <= 0:
            raise BackendUnavailable(f"{clients.endpoint} stopped answering during this call, so opsmcp did not "
                                     f"try to {what}.", "retry later; if it persists, check the endpoint "
                                     "(AWS_ENDPOINT_URL) and OPSMCP_BACKEND_TIMEOUT_SECONDS.")
    with anyio.move_on_after(wait) as scope:
        if budget is not None:
            budget.scopes.add(scope)
        try:
            return await anyio.to_thread.run_sync(run, abandon_on_cancel=True, limiter=aws_limiter())
        finally:
            if budget is not None:
                budget.scopes.discard(scope)
    # Only our own deadline gets here (an outer cancellation propagates out of the block).
    if budget is not None:
        budget.stalled()
    raise BackendUnavailable(f"{clients.endpoint} did not answer within {timeout:g} s to {what}.",
                             "retry later; if it persists, check the endpoint (AWS_ENDPOINT_URL) and "
                             "OPSMCP_BACKEND_TIMEOUT_SECONDS.")
