"""The redrive mover: moves messages from a DLQ to a target queue. The only opsmcp code that
deletes data, kept small enough to read whole.

Contract (at-least-once, copy-confirm-delete):

- Messages are received with a visibility timeout (``hold_seconds``), so no one else takes
  them while they move; everything not moved is released (visible again) at the end.
- Each batch (<= 10 messages, <= :data:`MAX_BATCH_BYTES`) is sent to the target with its
  body and message attributes (a FIFO target also gets the message group id and the
  deduplication id ``redrive-uuid5(DLQ message id)``: stable for this message, never the
  producer's own id, which the target may still remember and silently drop).
- Only entries the target confirmed are deleted from the DLQ. Entries it refused stay in
  the DLQ (``failed``). Sent-but-not-deleted entries are ``duplicates_possible``.
- A send is never retried (the client makes one attempt): a send that raised may still
  have been applied, so its whole batch stays in the DLQ, is reported as
  ``duplicates_possible``, and the move stops. A send the target rejected outright
  (a 4xx such as an invalid parameter) was not applied: those messages are ``failed``.
- At most one batch is between "sent" and "deleted" at any moment, so a crash at any
  point duplicates at most one batch and loses nothing. Receiving the next batch
  overlaps with moving the current one (standard queues), which is where the time goes.
- A move is bounded in time as a whole: it takes no new batch after its deadline
  (``OPSMCP_REDRIVE_MAX_SECONDS``), and when the backend stops answering, the AWS calls
  still to come (the release, the count) get only a short grace
  (:func:`opsmcp.backends.aws.call_budget`), so the answer, with what moved so far
  (``status`` ``stopped``, ``stop_reason``), comes within the backend timeout of the stall.
- A FIFO DLQ is moved strictly in order: a message group's next message can only be
  received after the previous one was deleted, and a group whose first message does not
  match the ``signature`` filter stays blocked (held) for the rest of the call, so a later
  message of a group never overtakes an earlier one.

Why not SQS's own ``StartMessageMoveTask``: it moves a whole DLQ or nothing (no
failure-signature filter, no cap at the number the user approved), reports only an
approximate count moved, gives no per-message failures, works only back to the source
or to an ARN (not FIFO DLQs before 2024), and moto and most emulators do not implement it,
so the sandbox and the tests could not run it.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from pydantic import BaseModel, Field

from opsmcp.backends.sqs import SqsBackend
from opsmcp.errors import InvalidInput, NotFound, OpsError
from opsmcp.results import OutsideText, WriteResult, untrusted

#: Total payload of one SendMessageBatch: SQS allows 1 MiB today, 256 KiB before 2025 (and on
#: older emulators); the smaller bound works everywhere. A bigger single message goes alone.
MAX_BATCH_BYTES = 256 * 1024
#: Empty receives in a row after which the DLQ counts as drained (of messages we may take).
STALE_RECEIVES = 3
#: Messages an unfiltered dry run of a standard DLQ reads (for ``by_signature`` and samples);
#: the rest is counted by ApproximateNumberOfMessages. Reading the whole DLQ cost as much as
#: the move itself (SQS emulators scan the whole queue for every message received).
PREVIEW_SAMPLE = 100
#: Receives of only already-seen messages (their hold ran out) that count as one empty receive
#: while fewer messages than the DLQ reported have been seen.
WRAP_RECEIVES = 20

#: ``async (messages) -> {message id: signature text}``.
Classifier = Callable[[list[dict[str, Any]]], Awaitable[dict[str, str]]]
#: ``async (progress, total, message)``: the server's progress reporter.
Progress = Callable[[float, float | None, str], Awaitable[None]]


class RedriveFailure(BaseModel):
    """A message that did not move, and why."""

    message_id: str = Field(description="SQS message id in the DLQ.")
    error: str = Field(description="Why the target refused it.")


class RedriveResult(OutsideText, WriteResult):
    """Result of redrive_dlq (a dry run or a real move)."""

    untrusted: list[str] = untrusted("by_signature")

    queue: str = Field(description="The DLQ.")
    target: str = Field(description="The queue messages move (or would move) to.")
    dry_run: bool = Field(description="True: nothing was moved.")
    matched: int = Field(description="Dry run: the most a real call with these arguments moves (the bound the "
                         "approval names). Real call: messages that matched and were taken for moving.")
    matched_exact: bool = Field(True, description="False when `matched` is an upper bound rather than a count: a "
                                "FIFO DLQ's messages behind each group's first ones cannot be read without moving "
                                "them, and an unfiltered dry run of a standard DLQ reads only a sample; both count "
                                "the rest by ApproximateNumberOfMessages.")
    moved: int = Field(description="Messages sent to the target and deleted from the DLQ.")
    failed: list[RedriveFailure] = Field(default_factory=list, description="Refused by the target; still in the DLQ.")
    duplicates_possible: list[str] = Field(
        default_factory=list, description="Message ids that may now be in both queues (sent, or possibly sent, but "
        "not deleted); a later redrive sends them again.")
    remaining: int | None = Field(description="ApproximateNumberOfMessages left in the DLQ afterwards (None: unknown).")
    status: str = Field("complete", description="'dry_run', 'complete', 'partial' (some failed or may be "
                        "duplicated), 'stopped' (ended early; the counts say what happened before) or "
                        "'pending_approval' (a real call waiting for a person's approval: nothing moved yet).")
    stop_reason: str | None = Field(None, description="Why it ended early: 'backend' (the backend failed or stopped "
                                    "answering), 'target_refused', or 'timeout' (the time limit of one call, "
                                    "OPSMCP_REDRIVE_MAX_SECONDS); null when it was not cut short.")
    by_signature: dict[str, int] = Field(default_factory=dict, description="Matched messages per failure signature "
                                         "(for a FIFO or sampled dry run: of the messages it read).")
    sample_message_ids: list[str] = Field(default_factory=list, description="Up to 10 matched message ids.")

    def preview_text(self) -> str:
        """What this dry run says would happen, for the user's approval prompt (deterministic)."""
        read = sum(self.by_signature.values())
        if self.matched_exact:
            lines = [f"Move {self.matched} message(s) from DLQ {self.queue} to {self.target}."]
        elif self.queue.endswith(".fifo"):  # SQS requires the suffix of every FIFO queue
            lines = [f"Move up to {self.matched} message(s) from FIFO DLQ {self.queue} to {self.target}, each "
                     f"message group in order (the first {read} read:)"]
        else:
            lines = [f"Move up to {self.matched} message(s) from DLQ {self.queue} to {self.target} (a sample of "
                     f"{read} read:)"]
        ranked = sorted(self.by_signature.items(), key=lambda kv: (-kv[1], kv[0]))
        lines += [f"  {count} x {sig}" for sig, count in ranked]
        return "\n".join(lines)


@dataclass(frozen=True)
class Route:
    """Where a redrive reads and writes: the DLQ and the target, with their URLs and kinds."""

    dlq_url: str
    dlq_name: str
    dlq_fifo: bool
    target_url: str
    target_name: str
    target_fifo: bool

    def check(self) -> list[str]:
        """Refuse a route that cannot work; return notes about one that loses something.

        Raises:
            InvalidInput: the target is the DLQ itself, or a FIFO target for a standard DLQ
                (its messages have no group id to keep).
        """
        if self.target_url == self.dlq_url or self.target_name == self.dlq_name:
            raise InvalidInput("target is the DLQ itself.", "pick the source queue as target (or leave target out).")
        if self.target_fifo and not self.dlq_fifo:
            raise InvalidInput(f"target {self.target_name} is FIFO but the DLQ {self.dlq_name} is not: messages "
                               "have no group id to keep.", "redrive into a standard queue.")
        if self.dlq_fifo and not self.target_fifo:
            return [f"target {self.target_name} is a standard queue: message group ids and FIFO order are not kept"]
        return []


def payload_bytes(message: dict[str, Any]) -> int:
    """Bytes a message counts against SQS's batch payload limit (body + attribute names/values)."""
    size = len(message.get("Body", "").encode())
    for name, attr in (message.get("MessageAttributes") or {}).items():
        size += len(name.encode()) + len(attr.get("DataType", "").encode())
        size += len(attr.get("StringValue", "").encode()) + len(attr.get("BinaryValue", b""))
    return size


def by_size(messages: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Split up to 10 messages, in order, into batches whose payloads fit :data:`MAX_BATCH_BYTES`."""
    batches: list[list[dict[str, Any]]] = [[]]
    total = 0
    for m in messages:
        size = payload_bytes(m)
        if batches[-1] and total + size > MAX_BATCH_BYTES:
            batches.append([])
            total = 0
        batches[-1].append(m)
        total += size
    return [b for b in batches if b]


def send_entry(index: int, message: dict[str, Any], fifo: bool) -> dict[str, Any]:
    """The SendMessageBatch entry that copies received ``message`` (reserved attribute fields dropped)."""
    entry: dict[str, Any] = {"Id": str(index), "MessageBody": message["Body"]}
    attrs = {name: {k: v for k, v in attr.items() if k in ("DataType", "StringValue", "BinaryValue")}
             for name, attr in (message.get("MessageAttributes") or {}).items()}
    if attrs:
        entry["MessageAttributes"] = attrs
    if fifo:
        entry["MessageGroupId"] = message.get("Attributes", {}).get("MessageGroupId") or "redrive"
        entry["MessageDeduplicationId"] = "redrive-" + str(uuid.uuid5(uuid.NAMESPACE_URL, message["MessageId"]))
    return entry


class Mover:
    """One redrive along a :class:`Route`.

    Args:
        sqs: the SQS adapter (its sends make one attempt: see the module docstring).
        route: DLQ and target, already checked (:meth:`Route.check`).
        classify: gives each received message its failure signature (for the filter and
            ``by_signature``).
        hold_seconds: visibility timeout of received messages while they move.
        progress: optional reporter, called after every batch.
        max_seconds: the time limit of the whole move (no new batch after it), or None.
    """

    def __init__(self, sqs: SqsBackend, route: Route, classify: Classifier, hold_seconds: int,
                 progress: Progress | None = None, max_seconds: float | None = None) -> None:
        self.sqs = sqs
        self.route = route
        self.classify = classify
        self.hold = hold_seconds
        self.progress = progress
        self.held: list[str] = []  # receipt handles to release at the end
        self.stopped = False
        self.stop_reason: str | None = None
        self.bound = 0
        self.max_seconds = max_seconds
        self.deadline = anyio.current_time() + max_seconds if max_seconds is not None else None

    async def run(self, max_messages: int, signature: str | None, dry_run: bool, visible: int) -> RedriveResult:
        """Move (or, with ``dry_run``, count) up to ``max_messages`` messages matching ``signature``.

        Args:
            max_messages: the cap; a real call's cap is the approved preview's ``matched``.
            signature: only messages of this failure signature (None: all).
            dry_run: receive and count, move nothing (an unfiltered standard DLQ: read a
                sample of :data:`PREVIEW_SAMPLE`, count the rest by ``visible``).
            visible: the DLQ's ApproximateNumberOfMessages before the call (the FIFO bound).

        Backend errors end the move early (status ``stopped``); they are never raised.
        """
        r = self.route
        self.bound = max_messages
        result = RedriveResult(queue=r.dlq_name, target=r.target_name, dry_run=dry_run, matched=0, moved=0,
                               remaining=None, notes=r.check())
        seen: set[str] = set()
        blocked: set[str] = set()  # FIFO message groups with a held message: the rest of the group waits
        nonmatching_heads = 0
        # An unfiltered dry run of a standard DLQ matches every message: a sample gives the
        # signatures, ApproximateNumberOfMessages the count (the move is capped at it anyway).
        sample = PREVIEW_SAMPLE if dry_run and signature is None and not r.dlq_fifo else None
        try:
            async with anyio.create_task_group() as tg:
                pending: anyio.Event | None = None  # the one move in flight
                stale = 0.0
                while result.matched < max_messages and not self.stopped:
                    if sample is not None and len(seen) >= sample:
                        break
                    if self.deadline is not None and anyio.current_time() >= self.deadline:
                        # no new batch; the one in flight still finishes (copy, confirm, delete)
                        self._stop(result, f"stopped at the time limit of one call ({self.max_seconds:g} s, "
                                           "OPSMCP_REDRIVE_MAX_SECONDS): the counts say what was done; the rest "
                                           "stays in the DLQ. A new dry run (and its approval) moves more.",
                                   "timeout", halt=False)
                        break
                    try:
                        batch = await self.sqs.receive(r.dlq_url, 10, visibility_timeout=self.hold)
                    except OpsError as exc:
                        self._stop(result, f"stopped early: {exc} The counts say what happened before that; the "
                                           "rest stays in the DLQ.", "backend")
                        break
                    fresh = [m for m in batch if m["MessageId"] not in seen]
                    self.held += [m["ReceiptHandle"] for m in batch if m["MessageId"] in seen]
                    if not fresh:
                        if pending is not None:  # messages may come back when the move in flight ends
                            await pending.wait()
                        # Only seen messages (their hold ran out) while more should exist: keep
                        # reading, within a bound; an empty receive is the usual end.
                        stale += 1 if not batch or len(seen) >= visible else 1 / WRAP_RECEIVES
                        if stale >= STALE_RECEIVES:
                            break
                        continue
                    stale = 0
                    seen.update(m["MessageId"] for m in fresh)
                    sigs = await self.classify(fresh)
                    chosen: list[dict[str, Any]] = []
                    for m in fresh:
                        sig = sigs[m["MessageId"]]
                        group = m.get("Attributes", {}).get("MessageGroupId", "")
                        if r.dlq_fifo and group in blocked:  # never overtake a held message of its group
                            self.held.append(m["ReceiptHandle"])
                        elif (signature is None or sig == signature) and result.matched + len(chosen) < max_messages:
                            chosen.append(m)
                            result.by_signature[sig] = result.by_signature.get(sig, 0) + 1
                            if len(result.sample_message_ids) < 10:
                                result.sample_message_ids.append(m["MessageId"])
                        else:
                            nonmatching_heads += signature is not None and sig != signature
                            self.held.append(m["ReceiptHandle"])
                            blocked.add(group)
                    result.matched += len(chosen)
                    if dry_run:
                        self.held += [m["ReceiptHandle"] for m in chosen]
                        continue
                    if not chosen:
                        continue
                    if pending is not None:
                        await pending.wait()  # at most one batch between "sent" and "deleted"
                    if self.stopped:
                        self.held += [m["ReceiptHandle"] for m in chosen]
                        result.matched -= len(chosen)
                        break
                    pending = anyio.Event()
                    if r.dlq_fifo:  # strictly in order: the group's next message needs this delete
                        await self._move_all(chosen, result, pending)
                    else:  # receive the next batch while this one moves
                        tg.start_soon(self._move_all, chosen, result, pending)
        finally:
            with anyio.CancelScope(shield=True):
                await self._release(result)
        try:
            result.remaining = int((await self.sqs.attributes(r.dlq_url)).get("ApproximateNumberOfMessages", 0))
        except OpsError:
            result.remaining = None
        if dry_run:
            self._finish_dry_run(result, max_messages, signature, visible, nonmatching_heads,
                                 sampled=sample is not None and len(seen) >= sample)
        elif self.stop_reason is not None:
            result.status = "stopped"
        elif result.failed or result.duplicates_possible:
            result.status = "partial"
        result.stop_reason = self.stop_reason
        if result.failed:
            result.notes.append(f"{len(result.failed)} message(s) were refused by the target and stay in the DLQ")
        return result

    def _finish_dry_run(self, result: RedriveResult, max_messages: int, signature: str | None, visible: int,
                        nonmatching_heads: int, sampled: bool = False) -> None:
        result.status = "dry_run"
        read = result.matched
        if sampled and read < max_messages and read < visible:
            # Unfiltered: every message matches, so the DLQ's count (capped) is the bound.
            result.matched, result.matched_exact = min(max_messages, visible), False
            result.notes.append(f"read a sample of {read} message(s) for the signatures; the DLQ holds ~{visible}. "
                                f"A real call moves up to {result.matched}.")
        if self.route.dlq_fifo and read < max_messages and read < visible:
            # Behind each group's first messages: unreadable without moving. The bound is what
            # the DLQ holds, less the groups a filter already excludes (their heads do not match).
            bound = min(max_messages, max(read, visible - nonmatching_heads)) if read else 0
            if bound > read:
                result.matched, result.matched_exact = bound, False
                result.notes.append(
                    f"FIFO: {read} message(s) could be read (the first of each message group); the DLQ holds "
                    f"~{visible}. "
                    f"A real call moves up to {bound}, group by group in order"
                    + (", each group until its first message of another signature" if signature else "") + ".")
        result.notes.append(f"dry run: nothing moved; up to {result.matched} message(s) would move to {result.target}. "
                            "Call again with dry_run=false to move them.")

    async def _move_all(self, messages: list[dict[str, Any]], result: RedriveResult, done: anyio.Event) -> None:
        """Move ``messages`` (one received batch) in payload-sized chunks; set ``done`` at the end."""
        try:
            chunks = by_size(messages)
            for i, chunk in enumerate(chunks):
                if self.stopped:  # stopped before this chunk was sent: it stays in the DLQ, released
                    rest = [m for c in chunks[i:] for m in c]
                elif not await self._move(chunk, result):  # _move accounted for this chunk
                    rest = [m for c in chunks[i + 1:] for m in c]
                else:
                    continue
                self.held += [m["ReceiptHandle"] for m in rest]
                result.matched -= len(rest)
                break
            if self.progress is not None:
                await self.progress(result.moved, self.bound, f"moved {result.moved} of up to {self.bound} message(s)")
        finally:
            done.set()

    async def _move(self, messages: list[dict[str, Any]], result: RedriveResult) -> bool:
        """Send one chunk to the target, then delete exactly the confirmed entries from the DLQ.

        Returns False when the redrive must stop (the send's outcome is unknown, or the DLQ
        refused the delete)."""
        r = self.route
        by_id = {str(i): m for i, m in enumerate(messages)}
        entries = [send_entry(i, m, r.target_fifo) for i, m in enumerate(messages)]
        try:
            ok, refused = await self.sqs.send_batch(r.target_url, entries)
        except (InvalidInput, NotFound) as exc:  # the target rejected the whole batch: nothing was applied
            result.failed += [RedriveFailure(message_id=m["MessageId"], error=exc.message) for m in messages]
            self.held += [m["ReceiptHandle"] for m in messages]
            self._stop(result, f"stopped: {r.target_name} refused a batch ({exc.message}); those {len(messages)} "
                               "message(s) stay in the DLQ", "target_refused")
            return False
        except OpsError as exc:  # outcome unknown: a timeout may come after SQS accepted the batch
            result.duplicates_possible += [m["MessageId"] for m in messages]
            self.held += [m["ReceiptHandle"] for m in messages]
            self._stop(result, f"stopped: sending a batch to {r.target_name} failed ({exc}); those {len(messages)} "
                               "message(s) stay in the DLQ and may also have reached the target", "backend")
            return False
        for i, error in refused.items():
            result.failed.append(RedriveFailure(message_id=by_id[i]["MessageId"], error=error))
            self.held.append(by_id[i]["ReceiptHandle"])
        sent = {i: by_id[i]["ReceiptHandle"] for i in ok}
        try:
            not_deleted = await self.sqs.delete_batch(r.dlq_url, sent)
        except OpsError as exc:  # sent but not deleted: in both queues now; stop before piling up more
            result.duplicates_possible += [by_id[i]["MessageId"] for i in ok]
            self.held += list(sent.values())
            self._stop(result, f"stopped: deleting sent messages from the DLQ failed ({exc}); they are in both "
                               "queues now and a retry sends them again", "backend")
            return False
        for i in ok:
            if i in not_deleted:
                result.duplicates_possible.append(by_id[i]["MessageId"])
                self.held.append(by_id[i]["ReceiptHandle"])  # visible again for the next redrive
            else:
                result.moved += 1
        return True

    def _stop(self, result: RedriveResult, note: str, reason: str, halt: bool = True) -> None:
        """Record why the move ends early (the first reason wins); with ``halt``, the batch in
        flight stops too (nothing more is sent)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self.stopped = self.stopped or halt
        result.notes.append(note)

    async def _release(self, result: RedriveResult) -> None:
        """Make every held message visible again (expired handles are harmless)."""
        try:
            await self.sqs.release(self.route.dlq_url, self.held)
        except OpsError as exc:
            result.notes.append(f"could not release {len(self.held)} held message(s) ({exc}); they become visible "
                                f"again by themselves within {self.hold} s")
