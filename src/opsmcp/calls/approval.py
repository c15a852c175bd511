"""The write-approval flow: a real write does only what the user saw and approved.

Every write tool has a preview flag (``dry_run`` / ``check``, its ``preview_arg``). A call
with the flag false is the real change; the server's choke point hands it to
:meth:`ApprovalFlow.gate`, which lets it act only with the user's approval, and holds it to
the preview the user saw: a write tool that declares ``preview_bound`` (redrive:
``max_messages`` at the previewed ``matched``) never does more than that preview showed.

How the approval reaches the call, and where its bound comes from:

- **Elicitation** (clients that declare the capability, both protocol eras). Two resolvers
  run before the tool body: ``shown`` runs the preview (a :class:`Shown`: the text and the
  bound), ``approval`` asks the user with that text. The tool body receives *the same*
  ``Shown`` object the prompt was rendered from, and takes the bound from it, never from a
  cache. On 2025-11-25 (legacy) the prompt is a request sent mid-call: the resolver runs
  once, so a user who answers after ten minutes is still held to what they saw. On
  2026-07-28 (stateless) the SDK re-runs the resolvers on every round and accepts an
  answer only for a question rendered identically to the one asked (a digest in the
  sealed ``request_state``); the prompt states the bound, so the answered question and the
  injected ``Shown`` carry the same bound. Between rounds the preview is reused from
  :class:`PreviewCache` (so the prompt stays identical and a check-mode run is not
  repeated); if it aged out and the fresh preview differs, the user is asked again with
  the new text.
- **confirm=true** (clients without elicitation; ``OPSMCP_WRITE_APPROVAL`` =
  ``prompt-or-confirm`` only). A dry run, and the error a real call gets before it is
  approved, hand out an *approval token* (:class:`ApprovalTokens`): HMAC-SHA256 under the
  server's secret over the tool, a digest of its canonical arguments, the bound, the
  caller's subject and an expiry. The real call passes ``confirm=true`` and the token; the
  bound comes out of the verified token. A token that is altered, expired, issued to
  another caller or for other arguments, or already used, is refused: nothing acts. Without
  a token, ``confirm=true`` is accepted only when this replica still holds the *same
  caller's* preview of the *same arguments* (the bound comes from that preview); otherwise
  the call refuses and returns a fresh preview with a token. It never proceeds uncapped.

Several replicas: the token is self-contained, so a preview on one replica and the approved
call on another work when the replicas share ``OPSMCP_APPROVAL_SECRET`` (random per process
when unset, which suits one process). The same secret keys the SDK's sealing of
``request_state``, so a stateless elicitation round may also land on another replica. A
token is single-use: each process remembers the tokens it accepted until they expire, and
with a shared DynamoDB audit table (``OPSMCP_AUDIT_TABLE``) a conditional write claims it
once across all replicas.

Every step is audited (``preview``, ``intent``, ``progress``, ``outcome`` records through
the :class:`~opsmcp.calls.audit.AuditTrail` the flow is built with); long writes report
progress through the injected ``progress`` reporter, and the gate records every few reports
(:class:`ProgressTrail`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import inspect
import json
import logging
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from mcp.server.mcpserver import AcceptedElicitation, CancelledElicitation, Context, Elicit, ElicitationResult, Resolve
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from opsmcp.calls.identity import caller, require_scope
from opsmcp.result_size import cut_text
from opsmcp.errors import OpsError
from opsmcp.results import Result
from opsmcp.toolsets.base import INJECTED, ToolMark

if TYPE_CHECKING:
    from opsmcp.calls.audit import AuditTrail
    from opsmcp.config import Settings

log = logging.getLogger("opsmcp")

#: Parameters the approval flow adds to a write tool (the client-facing ``confirm`` and
#: ``approval_token``, and the two resolver-filled ones).
FLOW_PARAMS = ("confirm", "approval_token", "approval", "shown")
NOT_NEEDED = "no approval needed"
NO_ELICITATION = "client cannot elicit"
#: Longest preview text shown in a prompt or an error (characters); longer ones are cut.
MAX_SUMMARY_CHARS = 4_000
MODES = ("prompt-or-confirm", "prompt")


class Approval(BaseModel):
    """The user's answer to a write's approval prompt."""

    approve: bool = Field(description="true to make the change described above; false to cancel it.")


@dataclass(frozen=True)
class Shown:
    """A preview as the user saw it.

    Attributes:
        summary: the preview text of the prompt or error (at most :data:`MAX_SUMMARY_CHARS`).
        bound: the previewed value a real call is capped at (``preview_bound``), or None.
        status: the preview result's status (for the audit record).
    """

    summary: str
    bound: int | None
    status: str = "ok"


def summarize(result: Any) -> str:
    """A short, deterministic text of a preview result (its ``preview_text()`` when it has
    one), cut to :data:`MAX_SUMMARY_CHARS`."""
    if hasattr(result, "preview_text"):
        text = str(result.preview_text())
    elif isinstance(result, BaseModel):
        text = result.model_dump_json(exclude={"notes"})
    else:
        text = json.dumps(result, default=str)
    return cut_text(text, MAX_SUMMARY_CHARS)


def counts_of(result: Any) -> dict[str, Any]:
    """A result's top-level numbers and list lengths (moved, failed, duplicates_possible...),
    for audit records."""
    data = result.model_dump() if isinstance(result, BaseModel) else {}
    counts: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            counts[k] = v
        elif isinstance(v, list) and k != "notes":
            counts[k] = len(v)
    return counts


def status_of(result: Any) -> str:
    """A result's own ``status`` (playbooks, redrive) or ``ok``."""
    return str(getattr(result, "status", None) or "ok")


def args_digest(tool: str, arguments: dict[str, Any], preview_arg: str | None) -> str:
    """SHA-256 (hex) of ``tool`` and its canonical arguments: sorted keys, compact JSON, with
    the preview flag, the flow's own parameters and injected ones left out (a dry run and the
    real call of the same arguments share one digest)."""
    skip = {preview_arg, *FLOW_PARAMS, *INJECTED}
    canonical = json.dumps({k: v for k, v in arguments.items() if k not in skip},
                           sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{tool}\0{canonical}".encode("utf-8", "surrogatepass")).hexdigest()


class PreviewCache:
    """Recent previews, keyed by caller subject, tool and argument digest.

    Bounded by count (``max_entries``, oldest dropped) and age (``max_age`` seconds); both
    are enforced on every insert, and an aged entry is never returned. An entry holds only
    a :class:`Shown` (its text is capped), never a whole result. The key includes the
    caller, so one client's preview never approves another client's call.
    """

    def __init__(self, max_entries: int = 256, max_age: float = 120.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.max_age = max_age
        self.clock = clock
        self._items: OrderedDict[tuple[str, str, str], tuple[float, Shown]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, subject: str, tool: str, digest: str) -> Shown | None:
        """The fresh preview of (subject, tool, digest), or None."""
        with self._lock:
            found = self._items.get((subject, tool, digest))
        if found is None or self.clock() - found[0] >= self.max_age:
            return None
        return found[1]

    def put(self, subject: str, tool: str, digest: str, shown: Shown) -> None:
        """Remember ``shown``; prunes aged entries and the oldest beyond ``max_entries``."""
        now = self.clock()
        with self._lock:
            self._items.pop((subject, tool, digest), None)
            self._items[(subject, tool, digest)] = (now, shown)
            while self._items:
                key, (at, _) = next(iter(self._items.items()))
                if now - at < self.max_age and len(self._items) <= self.max_entries:
                    break
                del self._items[key]

    def pop(self, subject: str, tool: str, digest: str) -> None:
        """Forget the preview of (subject, tool, digest): the next real call previews afresh."""
        with self._lock:
            self._items.pop((subject, tool, digest), None)

    def __len__(self) -> int:
        return len(self._items)


class ApprovalRefused(OpsError):
    """A real write's approval token cannot be verified or was already used; nothing acted."""


@dataclass(frozen=True)
class Grant:
    """What a verified approval token allows: ``bound`` (or None), its one-time ``nonce``,
    and ``expires_at`` (epoch seconds)."""

    bound: int | None
    nonce: str
    expires_at: float


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ApprovalTokens:
    """Signed, self-contained approvals for the confirm path.

    A token is ``opsa1.<payload>.<mac>``: the payload (base64url JSON: tool ``t``, argument
    digest ``a``, bound ``b``, caller subject ``s``, expiry ``e`` in epoch seconds, nonce
    ``n``) and HMAC-SHA256 of it under a key derived from the server secret. Any replica with
    the same secret verifies it; nothing is stored until it is used (:meth:`use`).

    Args:
        secret: the shared secret (``OPSMCP_APPROVAL_SECRET``); random bytes when None.
        ttl: seconds a token stays valid.
        clock: epoch-seconds clock (tests move it).
    """

    PREFIX = "opsa1"

    def __init__(self, secret: bytes | None, ttl: float, clock: Callable[[], float] = time.time) -> None:
        material = secret if secret is not None else secrets.token_bytes(32)
        self._key = hashlib.sha256(b"opsmcp approval token v1\0" + material).digest()
        self.ttl = ttl
        self.clock = clock
        self._used: dict[str, float] = {}
        self._lock = threading.Lock()

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, f"{self.PREFIX}.{payload}".encode(), hashlib.sha256).digest())

    def mint(self, tool: str, digest: str, bound: int | None, subject: str) -> str:
        """A token approving ``tool`` with the arguments of ``digest`` for ``subject``, capped at ``bound``."""
        body = {"t": tool, "a": digest, "b": bound, "s": subject, "e": int(self.clock() + self.ttl),
                "n": uuid.uuid4().hex}
        payload = _b64(json.dumps(body, separators=(",", ":"), sort_keys=True).encode())
        return f"{self.PREFIX}.{payload}.{self._mac(payload)}"

    def verify(self, token: str, tool: str, digest: str, subject: str) -> Grant:
        """The :class:`Grant` of a valid ``token`` for this call.

        Raises:
            ApprovalRefused: altered or foreign (signature), expired, issued to another caller,
                for another tool or for other arguments.
        """
        again = "run the dry run again, show its preview to the user, and pass the new approval_token."
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != self.PREFIX or not hmac.compare_digest(self._mac(parts[1]), parts[2]):
            raise ApprovalRefused("Not done: the approval_token is not valid (altered, truncated, or issued by a "
                                  "server with another OPSMCP_APPROVAL_SECRET).", again)
        try:
            body = json.loads(_unb64(parts[1]))
            bound, expires, nonce = body["b"], float(body["e"]), str(body["n"])
        except (ValueError, KeyError, TypeError):
            raise ApprovalRefused("Not done: the approval_token cannot be read.", again) from None
        if self.clock() >= expires:
            raise ApprovalRefused(f"Not done: the approval_token expired {int(self.clock() - expires)} s ago "
                                  f"(tokens last {int(self.ttl)} s).", again)
        if body.get("s") != subject:
            raise ApprovalRefused("Not done: the approval_token was issued to another caller.", again)
        if body.get("t") != tool or body.get("a") != digest:
            raise ApprovalRefused("Not done: the approval_token approves other arguments (or another tool) than "
                                  "this call's; call with exactly the arguments of the approved dry run.", again)
        return Grant(bound=bound if isinstance(bound, int) else None, nonce=nonce, expires_at=expires)

    async def use(self, grant: Grant, claim: Callable[[str, float], Awaitable[bool]] | None = None) -> None:
        """Spend ``grant`` once: remembered here until it expires and, when ``claim`` is
        given (a shared audit table's ``claim_once``), claimed across replicas.

        Raises:
            ApprovalRefused: the token was already used. OpsError: the claim could not be stored.
        """
        now = self.clock()
        with self._lock:
            self._used = {n: e for n, e in self._used.items() if e > now}
            if grant.nonce in self._used:
                raise ApprovalRefused("Not done: this approval_token was already used; one approval makes one "
                                      "change.", "run the dry run again and ask the user about the new preview.")
            self._used[grant.nonce] = grant.expires_at
        if claim is not None and not await claim(grant.nonce, grant.expires_at):
            raise ApprovalRefused("Not done: this approval_token was already used (on another replica).",
                                  "run the dry run again and ask the user about the new preview.")


class ProgressTrail:
    """Wraps a write's ``progress`` reporter so the audit log follows a long write.

    Forwards every report, and writes an audit ``progress`` record (via ``write``) on the
    first report, then every ``every`` reports or ``seconds`` seconds, whichever comes first.
    """

    def __init__(self, inner: Callable[..., Any], write: Callable[[dict[str, Any], str], Awaitable[None]],
                 every: int = 10, seconds: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.inner, self.write, self.every, self.seconds, self.clock = inner, write, every, seconds, clock
        self.reports = 0
        self.last_written = clock()

    async def __call__(self, progress: float, total: float | None = None, message: str = "") -> None:
        """Report ``progress`` of ``total`` (units of the tool) with ``message``."""
        await self.inner(progress, total, message)
        self.reports += 1
        now = self.clock()
        if self.reports == 1 or self.reports % self.every == 0 or now - self.last_written >= self.seconds:
            self.last_written = now
            await self.write({"progress": progress, "total": total, "reports": self.reports},
                             cut_text(message or "", 200))


@dataclass
class ApprovalFlow:
    """The approval step of every write tool (see the module docstring).

    Args:
        settings: ``write_approval`` (mode), ``approval_secret``, ``approval_ttl_seconds``.
        trail: where each step is recorded (the audit trail the composition root built).
        ready: awaited before a preview runs (start-up of the backends, e.g. the sandbox);
            raises OpsError when they cannot serve.
    """

    settings: Settings
    trail: AuditTrail
    ready: Callable[[], Awaitable[None]]
    previews: PreviewCache = field(init=False)
    tokens: ApprovalTokens = field(init=False)

    def __post_init__(self) -> None:
        secret = self.settings.approval_secret
        self.mode = self.settings.write_approval
        self.previews = PreviewCache()
        self.tokens = ApprovalTokens(secret.get_secret_value().encode() if secret else None,
                                     self.settings.approval_ttl_seconds)

    def set_clock(self, clock: Callable[[], float]) -> None:
        """Use ``clock`` (seconds) for preview ages and token expiry (tests move it)."""
        self.previews.clock = clock
        self.tokens.clock = clock

    # ------------------------------------------------------------------ previews -----
    async def preview(self, name: str, fn: Callable[..., Any], mark: ToolMark,
                      kwargs: dict[str, Any]) -> Shown:
        """The caller's preview of ``kwargs``: reused from the cache when fresh, else ``fn``
        run with ``preview_arg`` true (audited as a ``preview`` record) and cached."""
        subject, digest = caller.get(), args_digest(name, kwargs, mark.preview_arg)
        found = self.previews.get(subject, name, digest)
        if found is not None:
            return found
        args = {k: v for k, v in kwargs.items() if k not in FLOW_PARAMS} | {str(mark.preview_arg): True}
        start = time.perf_counter()
        result = await fn(**args)
        await self.trail.record(name, args, real=False, phase="preview", outcome=status_of(result), start=start,
                             counts=counts_of(result))
        return self.remember(name, mark, kwargs, result)

    def remember(self, name: str, mark: ToolMark, kwargs: dict[str, Any], result: Any) -> Shown:
        """Cache ``result`` (a preview of ``kwargs``) as the caller's :class:`Shown`."""
        bound = getattr(result, mark.preview_bound[1], None) if mark.preview_bound else None
        shown = Shown(summarize(result), bound if isinstance(bound, int) else None, status_of(result))
        self.previews.put(caller.get(), name, args_digest(name, kwargs, mark.preview_arg), shown)
        return shown

    def prompt(self, name: str, mark: ToolMark, shown: Shown) -> str:
        """The approval prompt for ``shown``; it states the bound, so an answer to this exact
        text is an answer about this bound."""
        held = ""
        if mark.preview_bound:
            held = f"\nThe change is held to this preview: at most {shown.bound} ({mark.preview_bound[1]})."
        return (f"opsmcp wants to make a real change with {name}:\n{shown.summary}{held}\n"
                "Approve this change? Nothing happens unless you accept.")

    # ------------------------------------------------------------------ signature ----
    def params(self, name: str, fn: Callable[..., Any], mark: ToolMark,
               tool_params: list[str]) -> list[inspect.Parameter]:
        """The parameters the flow adds to write tool ``name``: ``confirm`` and
        ``approval_token`` (mode ``prompt-or-confirm`` only), and the resolver-filled
        ``approval`` (the user's answer) and ``shown`` (the preview the prompt showed)."""

        async def shown_preview(ctx: Context, **kwargs: Any) -> Any:
            if kwargs.get(str(mark.preview_arg)) is not False:
                return NOT_NEEDED  # a dry run / check run changes nothing: no approval
            caps = ctx.client_capabilities
            if caps is None or caps.elicitation is None:
                return NO_ELICITATION
            # Resolvers run before the tool body (outside the choke point's try), so they wait
            # for start-up and map errors themselves.
            try:
                require_scope(name, write=True)  # before any preview: a read-only identity learns nothing
                await self.ready()
                return await self.preview(name, fn, mark, kwargs)
            except OpsError as exc:
                raise ToolError(str(exc)) from exc
            except Exception as exc:
                log.exception("preview of %s failed unexpectedly", name)
                raise ToolError(f"Internal error while previewing {name}: {type(exc).__name__}: {exc}. This is an "
                                "opsmcp bug; the server log has the details. Nothing was changed.") from exc

        async def approval(shown: Any) -> Any:
            return Elicit(self.prompt(name, mark, shown), Approval) if isinstance(shown, Shown) else shown

        shown_preview.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context)]
            + [inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY) for p in tool_params])
        shown_preview.__annotations__ = {"ctx": Context}
        shown_preview.__name__ = shown_preview.__qualname__ = f"preview_{name}"
        shown_type = Annotated[Any, Resolve(shown_preview)]
        approval.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter("shown", inspect.Parameter.KEYWORD_ONLY, annotation=shown_type)])
        approval.__annotations__ = {"shown": shown_type}
        approval.__name__ = approval.__qualname__ = f"approve_{name}"
        out = []
        if self.mode == "prompt-or-confirm":
            confirm = Annotated[bool, Field(description=(
                "Only for clients without approval prompts: true after the user approved the preview that a dry run "
                f"(or a call with {mark.preview_arg}=false) returned; pass its approval_token too. Ignored for dry "
                "runs."))]
            token = Annotated[str | None, Field(max_length=2_000, description=(
                "With confirm=true: the approval_token of the preview the user approved (from the dry run's notes or "
                "the approval error). The change is held to that preview."))]
            out += [inspect.Parameter("confirm", inspect.Parameter.KEYWORD_ONLY, annotation=confirm, default=False),
                    inspect.Parameter("approval_token", inspect.Parameter.KEYWORD_ONLY, annotation=token,
                                      default=None)]
        return [
            *out,
            inspect.Parameter("approval", inspect.Parameter.KEYWORD_ONLY,
                              annotation=Annotated[ElicitationResult[Approval], Resolve(approval)]),
            inspect.Parameter("shown", inspect.Parameter.KEYWORD_ONLY, annotation=shown_type),
        ]

    # ------------------------------------------------------------------ the gate -----
    async def gate(self, name: str, fn: Callable[..., Any], mark: ToolMark,
                   kwargs: dict[str, Any], start: float, pass_confirmed: bool) -> Any:
        """Run write tool ``name``: approval, intent record, the call (progress audited),
        outcome record. ``kwargs`` are the tool call's arguments including the flow's.

        Raises:
            OpsError: declined, not approved (with the preview and a token in the message),
                a token refused, or the intent record could not be written (nothing acted).
        """
        outcome = kwargs.pop("approval", None)
        shown = kwargs.pop("shown", None)
        confirmed = bool(kwargs.pop("confirm", False))
        token = kwargs.pop("approval_token", None)
        real = kwargs.get(str(mark.preview_arg)) is False
        subject, digest = caller.get(), args_digest(name, kwargs, mark.preview_arg)
        how = None
        if real:
            answer = outcome.data if isinstance(outcome, AcceptedElicitation) else None
            if answer == NO_ELICITATION:
                how, bound = await self._confirmed(name, fn, mark, kwargs, start, confirmed, token)
            elif isinstance(answer, Approval) and answer.approve and isinstance(shown, Shown):
                how, bound = "elicitation", shown.bound
            elif isinstance(answer, Approval) and answer.approve:  # cannot happen: both come from one resolution
                await self.trail.record(name, kwargs, real=True, phase="outcome", outcome="refused: no preview",
                                     start=start)
                raise OpsError(f"Not done: the preview the user approved for {name} cannot be found.",
                               "call again; the user will be asked about a fresh preview.")
            else:  # declined, cancelled, or accepted with approve=false
                action = "cancelled" if isinstance(outcome, CancelledElicitation) else "declined"
                await self.trail.record(name, kwargs, real=True, phase="outcome", outcome=action, start=start)
                self.previews.pop(subject, name, digest)
                raise OpsError(f"The user {action} the change; {name} did nothing.",
                               "ask the user what to do instead, or run a dry run to show the preview again.")
            if mark.preview_bound:
                arg = mark.preview_bound[0]
                if bound is None:
                    raise OpsError(f"Not done: the approved preview of {name} has no bound for {arg}.",
                                   "run the dry run again and ask the user about its preview.")
                kwargs[arg] = min(kwargs[arg], bound)  # never more than was shown
        call_id = await self.trail.record(name, kwargs, real=real, phase="intent", outcome="started", start=start,
                                       approval=how)
        call_args = dict(kwargs)
        if real and call_args.get("progress") is not None:
            async def trail(counts: dict[str, Any], message: str) -> None:
                await self.trail.record(name, kwargs, real=True, phase="progress", outcome="running", start=start,
                                     call_id=call_id, approval=how, counts=counts, note=message or None, strict=False)

            call_args["progress"] = ProgressTrail(call_args["progress"], trail)
        if pass_confirmed:
            call_args["confirmed"] = how is not None
        try:
            result = await fn(**call_args)
        except BaseException as exc:  # cancellation too: the trail must say how the write ended
            import anyio

            ended = "cancelled" if isinstance(exc, anyio.get_cancelled_exc_class()) else f"error: {exc}"
            await self.trail.record(name, kwargs, real=real, phase="outcome", outcome=ended, start=start,
                                 call_id=call_id, approval=how, strict=False)
            raise
        finally:
            if real:
                self.previews.pop(subject, name, digest)  # an approval makes one change
        if not real:
            self._hand_out(name, mark, kwargs, result, subject, digest)
        recorded = await self.trail.record(name, kwargs, real=real, phase="outcome", outcome=status_of(result),
                                        start=start, call_id=call_id, approval=how, counts=counts_of(result),
                                        strict=False)
        if not recorded and isinstance(result, Result):
            result.notes.append("WARNING: the outcome audit record could not be written (see server log)")
        return result

    def _hand_out(self, name: str, mark: ToolMark, kwargs: dict[str, Any], result: Any, subject: str,
                  digest: str) -> None:
        """After a dry run: remember it as the caller's preview and give the caller its token."""
        shown = self.remember(name, mark, kwargs, result)
        if not isinstance(result, Result):
            return
        if self.mode == "prompt":
            result.notes.append(f"to make this change, call again with {mark.preview_arg}=false: the user is asked to "
                                "approve this preview")
            return
        token = self.tokens.mint(name, digest, shown.bound, subject)
        result.notes.append(f"approval_token={token} (valid {int(self.tokens.ttl)} s): to make this change after "
                            "the user approved this preview, call again with the same arguments, "
                            f"{mark.preview_arg}=false, confirm=true and this approval_token")

    async def _confirmed(self, name: str, fn: Callable[..., Any], mark: ToolMark,
                         kwargs: dict[str, Any], start: float, confirmed: bool, token: str | None
                         ) -> tuple[str, int | None]:
        """The confirm path (a client without elicitation): ``(approval label, bound)``.

        Raises:
            OpsError: mode ``prompt``; not confirmed (the preview and a new token in the
                message); ApprovalRefused for a token that fails verification or was used.
        """
        subject, digest = caller.get(), args_digest(name, kwargs, mark.preview_arg)
        if self.mode == "prompt":
            await self.trail.record(name, kwargs, real=True, phase="outcome",
                                    outcome="refused: needs an approval prompt", start=start)
            raise OpsError(
                f"Not done: this server makes real changes only through an approval prompt that the user answers "
                f"(OPSMCP_WRITE_APPROVAL=prompt), and this client cannot show one (it declared no elicitation "
                f"capability), so {name} with {mark.preview_arg}=false is refused.",
                "run the dry run and show its preview to the user; to make the change, use an MCP client that "
                "supports elicitation (approval prompts), or ask the operator.")
        if confirmed and token:
            try:
                grant = self.tokens.verify(token, name, digest, subject)
                await self.tokens.use(grant, self.trail.claim())
            except OpsError as exc:
                await self.trail.record(name, kwargs, real=True, phase="outcome", outcome="refused: approval token",
                                     start=start, note=exc.message)
                raise
            return "approval_token", grant.bound
        if confirmed:
            cached = self.previews.get(subject, name, digest)
            if cached is not None:
                return "confirm_argument", cached.bound
        shown = await self.preview(name, fn, mark, kwargs)
        new_token = self.tokens.mint(name, digest, shown.bound, subject)
        await self.trail.record(name, kwargs, real=True, phase="outcome", outcome="needs_confirmation", start=start)
        raise OpsError(
            f"Not done: {name} with {mark.preview_arg}=false makes a real change and needs the user's approval. "
            f"Preview:\n{shown.summary}",
            f"show this preview to the user; if they agree, call again with the same arguments, confirm=true and "
            f"approval_token=\"{new_token}\" (valid {int(self.tokens.ttl)} s); the change is held to this preview.",
        )
