"""The write-approval flow: a real write does only what the user saw and approved.

Every write tool has a preview flag (``dry_run`` / ``check``, its ``preview_arg``). A call
with the flag false is the real change; the server's choke point hands it to
:meth:`ApprovalFlow.gate`, which lets it act only with an approval, and holds it to the
preview that was approved: a write tool that declares ``preview_bound`` (redrive:
``max_messages`` at the previewed ``matched``) never does more than that preview showed,
and a bound of 0 approves nothing.

``OPSMCP_WRITE_APPROVAL`` picks who approves, and how the approval reaches the call:

- ``prompt`` (the default): **elicitation**, the user answers a prompt in the client (clients
  that declare the capability, both protocol eras). Two resolvers run before the tool
  body: ``shown`` runs the preview (a :class:`Shown`: the text and the bound), ``approval``
  asks the user with that text. The tool body receives *the same* ``Shown`` object the
  prompt was rendered from, and takes the bound from it, never from a cache. On
  2025-11-25 (legacy) the prompt is a request sent mid-call: the resolver runs once, so a
  user who answers after ten minutes is still held to what they saw. On 2026-07-28
  (stateless) the SDK re-runs the resolvers on every round and accepts an answer only for
  a question rendered identically to the one asked (a digest in the sealed
  ``request_state``); the prompt states the bound, so the answered question and the
  injected ``Shown`` carry the same bound. Between rounds the preview is reused from
  :class:`PreviewCache` (so the prompt stays identical and a check-mode run is not
  repeated); if it aged out and the fresh preview differs, the user is asked again with
  the new text. A client without elicitation cannot make real writes.
- ``prompt-or-confirm``: elicitation, or for clients without it **confirm=true with an
  approval token**. A dry run (its result's ``approval`` field), and the error a real call
  gets before it is approved, hand out a token (:class:`ApprovalTokens`): HMAC-SHA256 under
  the server's secret over the tool, a digest of its canonical arguments, the bound, the
  caller's subject and an expiry. The real call passes ``confirm=true`` and the token; the
  bound comes out of the verified token. A token that is altered, expired, issued to
  another caller or for other arguments, or already used, is refused; ``confirm=true``
  without a token is refused too (with a fresh preview and token): nothing acts. The model
  itself sends ``confirm=true``, so this suits only a trusted single-user client.
- ``human``: a real write creates an **approval request** (:mod:`opsmcp.calls.approval_desk`)
  and answers ``status: "pending_approval"`` with its ``approval_id`` at once (a client that
  sent a progress token is kept informed for up to ``OPSMCP_APPROVAL_WAIT_SECONDS``). No
  tool call approves it: a person with ``ops:approve`` other than the requester does, over
  HTTP, and the write then runs in that server process through :meth:`ApprovalFlow.run_approved`.

Several replicas: the token is self-contained, so a preview on one replica and the approved
call on another work when the replicas share ``OPSMCP_APPROVAL_SECRET``; when it is unset, a
server with writes uses the data directory's ``approval.secret`` (generated once, 0600:
:mod:`opsmcp.calls.secret_file`), so every process of one installation verifies the tokens
of the others (clients that start a server per call). The same secret keys the SDK's sealing of
``request_state``, so a stateless elicitation round may also land on another replica. A
token is single-use: the audit sink claims it once (a claim file created with ``O_EXCL``
beside the audit file, or a conditional write to the DynamoDB audit table), so it stays
spent after a restart and on every replica.

Every step is audited (``preview``, ``intent``, ``progress``, ``outcome`` records through
the :class:`~opsmcp.calls.audit.AuditTrail` the flow is built with); long writes report
progress through the injected ``progress`` reporter, and the gate records every few reports
(:class:`ProgressTrail`).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import threading
import time
import typing
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from mcp.server.mcpserver import AcceptedElicitation, CancelledElicitation, Context, Elicit, ElicitationResult, Resolve
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from opsmcp.calls.approval_desk import ApprovalDesk, Reporter
from opsmcp.calls.approval_store import FINAL, ApprovalRequest, RequestStore, store_for
from opsmcp.calls.approval_tokens import ApprovalTokens
from opsmcp.calls.identity import caller, require_scope
from opsmcp.result_size import cut_text
from opsmcp.errors import OpsError
from opsmcp.results import ApprovalOffer, Result, WriteResult
from opsmcp.times import iso
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
NOTHING_TO_APPROVE = "the preview shows nothing to change"
#: Longest preview text shown in a prompt or an error (characters); longer ones are cut.
MAX_SUMMARY_CHARS = 4_000
MODES = ("prompt", "prompt-or-confirm", "human")


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
        settings: ``write_approval`` (mode), ``approval_secret``, ``approval_ttl_seconds``,
            and for mode ``human`` the request settings (:class:`ApprovalDesk`).
        trail: where each step is recorded (the audit trail the composition root built).
        ready: awaited before a preview runs (start-up of the backends, e.g. the sandbox);
            raises OpsError when they cannot serve.
        store: where approval requests live (default: the one that goes with the trail's
            sink, :func:`~opsmcp.calls.approval_store.store_for`).
    """

    settings: Settings
    trail: AuditTrail
    ready: Callable[[], Awaitable[None]]
    store: RequestStore | None = None
    previews: PreviewCache = field(init=False)
    tokens: ApprovalTokens = field(init=False)
    desk: ApprovalDesk = field(init=False)
    #: write tool name -> (toolset method, mark, whether it takes ``confirmed``), for run_approved.
    writes: dict[str, tuple[Callable[..., Any], ToolMark, bool]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        secret = self.settings.approval_secret
        self.mode = self.settings.write_approval
        self.previews = PreviewCache()
        material = secret.get_secret_value().encode() if secret else None
        if material is None and self.settings.allow_writes:  # every process of this data dir verifies tokens
            material = _stored_secret(self.settings)
        self.tokens = ApprovalTokens(material, self.settings.approval_ttl_seconds)
        store = self.store or store_for(self.trail.sink, self.settings.data_dir)
        self.desk = ApprovalDesk(self.settings, self.trail, store, execute=self.run_approved)

    def set_clock(self, clock: Callable[[], float]) -> None:
        """Use ``clock`` (seconds) for preview ages, token expiry and request expiry (tests move it)."""
        self.previews.clock = clock
        self.tokens.clock = clock
        self.desk.clock = clock

    # ------------------------------------------------------------------ previews -----
    async def preview(self, name: str, fn: Callable[..., Any], mark: ToolMark,
                      kwargs: dict[str, Any]) -> Shown:
        """The caller's preview of ``kwargs``: reused from the cache when fresh, else ``fn``
        run with ``preview_arg`` true (audited as a ``preview`` record) and cached."""
        subject, digest = caller.get(), args_digest(name, kwargs, mark.preview_arg)
        found = self.previews.get(subject, name, digest)
        if found is not None:
            return found
        return self.remember(name, mark, kwargs, await self._run_preview(name, fn, mark, kwargs))

    async def _run_preview(self, name: str, fn: Callable[..., Any], mark: ToolMark, kwargs: dict[str, Any]) -> Any:
        """``fn`` run with ``preview_arg`` true, audited as a ``preview`` record; its result."""
        args = {k: v for k, v in kwargs.items() if k not in FLOW_PARAMS} | {str(mark.preview_arg): True}
        start = time.perf_counter()
        result = await fn(**args)
        await self.trail.record(name, args, real=False, phase="preview", outcome=status_of(result), start=start,
                          counts=counts_of(result))
        return result

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
        ``approval`` (the user's answer) and ``shown`` (the preview the prompt showed);
        none in mode ``human`` (no tool call can approve). Also remembers the tool for
        :meth:`run_approved`."""
        self.writes[name] = (fn, mark, "confirmed" in inspect.signature(fn).parameters)
        if self.mode == "human":
            return []

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
            if isinstance(shown, Shown) and mark.preview_bound and shown.bound == 0:
                return NOTHING_TO_APPROVE  # never ask about "move 0": a bound of 0 approves nothing
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
                "With confirm=true: the approval token of the preview the user approved (the dry run's "
                "approval.token, or the one in the approval error). The change is held to that preview."))]
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
    async def gate(self, name: str, fn: Callable[..., Any], mark: ToolMark, kwargs: dict[str, Any], start: float,
                   pass_confirmed: bool, waiting: Reporter | None = None) -> Any:
        """Run write tool ``name``: approval, intent record, the call (progress audited),
        outcome record. ``kwargs`` are the tool call's arguments including the flow's;
        ``waiting``: the client's progress reporter when it sent a progress token (mode
        ``human`` waits for the decision with it, up to ``OPSMCP_APPROVAL_WAIT_SECONDS``).

        Raises:
            OpsError: declined, not approved (with the preview and a token in the message),
                a token refused, a preview bound of 0, a human approval denied or expired,
                or the intent record could not be written (nothing acted).
        """
        outcome = kwargs.pop("approval", None)
        shown = kwargs.pop("shown", None)
        confirmed = bool(kwargs.pop("confirm", False))
        token = kwargs.pop("approval_token", None)
        real = kwargs.get(str(mark.preview_arg)) is False
        subject, digest = caller.get(), args_digest(name, kwargs, mark.preview_arg)
        if not real:
            return await self._execute(name, fn, mark, kwargs, start, pass_confirmed, how=None,
                                       after=lambda result: self._hand_out(name, mark, kwargs, result, subject, digest))
        if self.mode == "human":
            return await self._ask_a_person(name, fn, mark, kwargs, start, waiting)
        answer = outcome.data if isinstance(outcome, AcceptedElicitation) else None
        if answer == NO_ELICITATION:
            how, bound = await self._confirmed(name, fn, mark, kwargs, start, confirmed, token)
        elif answer == NOTHING_TO_APPROVE:
            how, bound = "elicitation", 0
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
        try:
            await self._hold(name, mark, kwargs, bound, start)
            return await self._execute(name, fn, mark, kwargs, start, pass_confirmed, how=how)
        finally:
            self.previews.pop(subject, name, digest)  # an approval makes one change

    async def _hold(self, name: str, mark: ToolMark, kwargs: dict[str, Any], bound: int | None,
                    start: float) -> None:
        """Cap the bounded argument of a real call at the approved ``bound``.

        Raises:
            OpsError: the approval carries no bound, or a bound below 1 (a preview that
                showed nothing to change approves nothing).
        """
        if not mark.preview_bound:
            return
        arg, what = mark.preview_bound
        if bound is None or bound < 1:
            await self.trail.record(name, kwargs, real=True, phase="outcome", outcome="refused: nothing approved",
                                    start=start)
            shown = "no bound" if bound is None else f"{what} {bound}"
            raise OpsError(f"Not done: the approved preview of {name} showed nothing to change ({shown}); a "
                           "preview of nothing approves nothing, so nothing was changed.",
                           "run the dry run again once there is something to change, and ask about that preview.")
        kwargs[arg] = min(kwargs[arg], bound)  # never more than was shown

    async def _execute(self, name: str, fn: Callable[..., Any], mark: ToolMark, kwargs: dict[str, Any],
                       start: float, pass_confirmed: bool, how: str | None, call_id: str | None = None,
                       approver: str | None = None, after: Callable[[Any], None] | None = None) -> Any:
        """Intent record, the call (its progress audited), outcome record: the one path every
        write takes once approved (``how``; None for a preview). ``after`` sees the result
        before the outcome is recorded."""
        real = kwargs.get(str(mark.preview_arg)) is False
        call_id = await self.trail.record(name, kwargs, real=real, phase="intent", outcome="started", start=start,
                                    call_id=call_id, approval=how, approver=approver)
        call_args = dict(kwargs)
        if real and call_args.get("progress") is not None:
            async def trail(counts: dict[str, Any], message: str) -> None:
                await self.trail.record(name, kwargs, real=True, phase="progress", outcome="running", start=start,
                                  call_id=call_id, approval=how, counts=counts, note=message or None, strict=False,
                                  approver=approver)

            call_args["progress"] = ProgressTrail(call_args["progress"], trail)
        if pass_confirmed:
            call_args["confirmed"] = how is not None
        try:
            result = await fn(**call_args)
        except BaseException as exc:  # cancellation too: the trail must say how the write ended
            import anyio

            ended = "cancelled" if isinstance(exc, anyio.get_cancelled_exc_class()) else f"error: {exc}"
            await self.trail.record(name, kwargs, real=real, phase="outcome", outcome=ended, start=start,
                              call_id=call_id, approval=how, strict=False, approver=approver)
            raise
        if after is not None:
            after(result)
        recorded = await self.trail.record(name, kwargs, real=real, phase="outcome", outcome=status_of(result),
                                     start=start, call_id=call_id, approval=how, counts=counts_of(result),
                                     strict=False, approver=approver)
        if not recorded and isinstance(result, Result):
            result.notes.append("WARNING: the outcome audit record could not be written (see server log)")
        return result

    def _hand_out(self, name: str, mark: ToolMark, kwargs: dict[str, Any], result: Any, subject: str,
                  digest: str) -> None:
        """After a dry run: remember it as the caller's preview and say how to approve it
        (``approval`` on the result: the token in mode ``prompt-or-confirm``)."""
        shown = self.remember(name, mark, kwargs, result)
        if not isinstance(result, Result):
            return
        if mark.preview_bound and shown.bound == 0:
            result.notes.append("the preview shows nothing to change: there is nothing to approve")
            return
        real = f"call again with the same arguments and {mark.preview_arg}=false"
        if self.mode == "prompt":
            result.notes.append(f"to make this change, {real}: the user is asked to approve this preview")
            return
        if self.mode == "human":
            result.notes.append(f"to make this change, {real}: that creates an approval request which a person "
                                "approves outside this conversation; nothing changes before that")
            return
        token, expires = self.tokens.mint(name, digest, shown.bound, subject)
        if isinstance(result, WriteResult):  # every write tool's result is (toolsets.base.marked_tools)
            result.approval = ApprovalOffer(token=token, expires_at=iso(expires) or "", bound=shown.bound)
            result.notes.append(f"to make this change after the user approved this preview, {real}, confirm=true "
                                "and approval_token=<approval.token>")

    async def _confirmed(self, name: str, fn: Callable[..., Any], mark: ToolMark,
                         kwargs: dict[str, Any], start: float, confirmed: bool, token: str | None
                         ) -> tuple[str, int | None]:
        """The confirm path (a client without elicitation): ``(approval label, bound)``.

        Raises:
            OpsError: mode ``prompt``; not confirmed with a token (the preview and a new token
                in the message; nothing is stored that a second identical call could use);
                ApprovalRefused (:mod:`~opsmcp.calls.approval_tokens`) for a token that fails
                verification or was used.
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
                "supports elicitation (approval prompts), or ask the operator (OPSMCP_WRITE_APPROVAL=human lets a "
                "person approve it outside the client).")
        if confirmed and token:
            try:
                grant = self.tokens.verify(token, name, digest, subject)
                await self.tokens.use(grant, self.trail.claim())
            except OpsError as exc:
                await self.trail.record(name, kwargs, real=True, phase="outcome", outcome="refused: approval token",
                                  start=start, note=exc.message)
                raise
            return "approval_token", grant.bound
        shown = await self.preview(name, fn, mark, kwargs)
        await self.trail.record(name, kwargs, real=True, phase="outcome", outcome="needs_confirmation", start=start)
        if mark.preview_bound and shown.bound == 0:
            raise OpsError(f"Not done: the preview of {name} shows nothing to change:\n{shown.summary}",
                           "there is nothing to approve; run the dry run again later.")
        new_token, _ = self.tokens.mint(name, digest, shown.bound, subject)
        without = "confirm=true needs the approval_token of the preview the user approved. " if confirmed else ""
        raise OpsError(
            f"Not done: {name} with {mark.preview_arg}=false makes a real change and needs the user's approval. "
            f"{without}Preview:\n{shown.summary}",
            f"show this preview to the user; if they agree, call again with the same arguments, confirm=true and "
            f"approval_token=\"{new_token}\" (valid {int(self.tokens.ttl)} s); the change is held to this preview.",
        )

    # ------------------------------------------------------------------ mode human ---
    async def _ask_a_person(self, name: str, fn: Callable[..., Any], mark: ToolMark, kwargs: dict[str, Any],
                            start: float, waiting: Reporter | None) -> Any:
        """Mode ``human``: preview, create an approval request, and answer pending (or, when
        the client waits with a progress token, the outcome once a person decided).

        Raises:
            OpsError: the preview shows nothing to change; too many pending requests; the
                request was denied or expired while the call waited; the approved write failed.
        """
        result = await self._run_preview(name, fn, mark, kwargs)
        shown = self.remember(name, mark, kwargs, result)
        arguments = {k: v for k, v in kwargs.items() if k not in {mark.preview_arg, *FLOW_PARAMS, *INJECTED}}
        bound_arg = mark.preview_bound[0] if mark.preview_bound else None
        if bound_arg is not None:
            if shown.bound is None or shown.bound < 1:
                await self.trail.record(name, kwargs, real=True, phase="outcome", outcome="refused: nothing approved",
                                  start=start)
                raise OpsError(f"Not done: the preview of {name} shows nothing to change:\n{shown.summary}",
                               "there is nothing to approve; run the dry run again later.")
            arguments[bound_arg] = min(arguments.get(bound_arg, shown.bound), shown.bound)
        req = await self.desk.create(name, arguments, shown.summary, bound_arg, shown.bound)
        seconds = self.settings.approval_wait_seconds
        if waiting is not None and seconds > 0:
            decided = await self.desk.wait(req.id, seconds, waiting)
            if decided is not None and decided.status in FINAL:
                return self._decided(name, fn, decided)
        if isinstance(result, WriteResult):
            result.status = "pending_approval"  # type: ignore[attr-defined]
            result.approval_id = req.id
            result.approval = ApprovalOffer(token=None, expires_at=iso(req.expires_at) or "", bound=shown.bound)
        if isinstance(result, Result):
            result.notes.append(
                f"pending approval {req.id}: nothing has changed. A person with ops:approve (not {req.requester}) "
                f"approves or denies it at {self.desk.console_url(req.id)} or with `opsmcp approvals approve "
                f"{req.id}`; poll get_approval(approval_id) for the decision and the write's result. Do not call "
                "the write again meanwhile: every call makes a new request.")
        return result

    def _decided(self, name: str, fn: Callable[..., Any], req: ApprovalRequest) -> Any:
        """The tool result of a request decided while its call waited.

        Raises:
            OpsError: denied, expired, or the approved write failed.
        """
        if req.status == "done" and req.result is not None:
            model = typing.get_type_hints(fn).get("return")
            if isinstance(model, type) and issubclass(model, BaseModel):
                return model.model_validate(req.result)
            return req.result
        if req.status == "denied":
            why = f": {req.reason}" if req.reason else ""
            raise OpsError(f"Not done: {req.approver} denied approval {req.id}{why}. {name} changed nothing.",
                           "tell the user; do not make the same request again unless they ask.")
        if req.status == "expired":
            raise OpsError(f"Not done: approval {req.id} expired before anyone decided; {name} changed nothing.",
                           "ask the user whether to request it again.")
        raise OpsError(f"Approval {req.id} was approved by {req.approver}, but {name} failed: {req.error}",
                       "see get_approval(approval_id) and the audit log for how far it got.")

    async def run_approved(self, req: ApprovalRequest) -> dict[str, Any]:
        """Run the write of approved request ``req`` here: its stored arguments, the preview
        flag false, held to its bound, as its requester (the approver recorded), through the
        same audited path as every write (:meth:`_execute`). Returns the structured result.

        Raises:
            OpsError: the tool is not registered here, the backends are not ready, or the
                write failed.
        """
        if req.tool not in self.writes:
            raise OpsError(f"{req.tool} is not a write tool of this server (writes disabled, or another toolset "
                           "configuration); the request cannot run here.",
                           "approve it on a server with the same configuration as the one that made it.")
        fn, mark, pass_confirmed = self.writes[req.tool]
        kwargs = dict(req.arguments) | {str(mark.preview_arg): False}
        if "progress" in inspect.signature(fn).parameters:
            kwargs["progress"] = _no_progress  # audited by ProgressTrail; no client to tell
        start = time.perf_counter()
        await self.ready()
        reset = caller.set(req.requester)
        try:
            await self._hold(req.tool, mark, kwargs, req.bound, start)
            result = await self._execute(req.tool, fn, mark, kwargs, start, pass_confirmed, how="human",
                                         call_id=req.id, approver=req.approver)
        finally:
            caller.reset(reset)
        if isinstance(result, BaseModel):
            return result.model_dump(mode="json", by_alias=True)
        return result if isinstance(result, dict) else {"result": result}


async def _no_progress(progress: float, total: float | None = None, message: str = "") -> None:
    """A progress reporter for a write no client waits on (its reports are only audited)."""


def asked_for_progress(ctx: Context) -> bool:
    """True when the client sent a progress token with this call (``_meta.progressToken``;
    for an in-memory client, a progress callback on the SDK's dispatch context)."""
    try:
        meta = ctx.request_context.meta or {}
        if meta.get("progressToken") is not None or meta.get("progress_token") is not None:
            return True
        outbound: Any = ctx.request_context.session._request_outbound
    except (AttributeError, ValueError):
        return False
    for _ in range(5):  # the SDK wraps its dispatch context (e.g. _NoServerRequestsDispatchContext)
        if outbound is None:
            return False
        for name in ("_progress_token", "progress_token", "_on_progress"):
            if getattr(outbound, name, None) is not None:
                return True
        outbound = getattr(outbound, "_inner", None)
    return False


def _stored_secret(settings: Settings) -> bytes | None:
    """The data directory's approval secret (:func:`opsmcp.calls.secret_file.stored_secret`);
    None (a random key for this process) when it cannot be read or written, said in the log."""
    from opsmcp.calls.secret_file import stored_secret

    try:
        return stored_secret(settings.data_dir)
    except (OSError, OpsError) as exc:
        log.warning("approval tokens verify only in this process: %s", exc)
        return None
