"""The investigation loop: a LangGraph agent over the MCP tools, with limits and evidence.

:class:`Investigator` wraps ``langchain.agents.create_agent`` with one middleware that
(1) announces every tool call before it runs and its one-line result after, (2) stops
the run when the next model turn would exceed the step limit, (3) asks for tool calls
explicitly (``tool_choice="auto"``: llama.cpp's server otherwise ignores the tools) and
optionally forces one on the first model turn, and (4) caps each tool result handed to
the model.
The run also has a wall-clock limit. When a limit stops the run, the answer is a partial
one that says so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware
from langchain.agents.middleware.types import hook_config
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.tools import BaseTool

from .config import AgentConfig
from .models import explain_model_error
from .prompts import STEP_LIMIT_INSTRUCTIONS, SYSTEM_PROMPT
from .render import (
    cited_steps,
    clean_answer,
    message_text,
    one_line,
    result_text,
    structured_of,
    usable_answer,
)

log = logging.getLogger("opsmcp_agent")


@dataclass
class Step:
    """One tool call the agent made.

    Attributes:
        index: 1-based step number, the number answers cite as ``[n]``.
        tool: tool name.
        args: arguments the model chose.
        ok: ``True`` on success, ``False`` when the tool reported an error, ``None``
            while running.
        text: the result's full text content.
        structured: the result's structured content (dict) when the server sent one.
        summary: one-line summary of the result.
        seconds: wall time of the call.
    """

    index: int
    tool: str
    args: dict[str, Any]
    ok: bool | None = None
    text: str = ""
    structured: Any = None
    summary: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view: step, tool, args, ok, summary, seconds, result."""
        return {
            "step": self.index,
            "tool": self.tool,
            "args": self.args,
            "ok": self.ok,
            "summary": self.summary,
            "seconds": round(self.seconds, 3),
            "result": self.structured if self.structured is not None else self.text,
        }


@dataclass
class RunResult:
    """What one question produced.

    Attributes:
        question: the question asked.
        answer: the final (or partial) answer text, think-blocks removed.
        steps: every tool call, in order.
        stopped: ``None`` when the model answered; ``"step_limit"`` or ``"time_limit"``
            when a limit ended the run and ``answer`` is partial.
        elapsed: wall time of the run in seconds.
        messages: the conversation after the run (no system message), to continue a chat.
        answered: the model gave a usable answer (final, or the partial summary of a run a
            limit stopped); False when ``answer`` only says it did not, with the evidence
            gathered (see :func:`opsmcp_agent.render.usable_answer`).
    """

    question: str
    answer: str
    steps: list[Step]
    stopped: str | None
    elapsed: float
    messages: list[BaseMessage] = field(default_factory=list)
    answered: bool = True

    @property
    def cited(self) -> list[int]:
        """Step numbers the answer cites."""
        return cited_steps(self.answer, len(self.steps))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view of the run (question, answer, stopped, cited, steps, elapsed)."""
        return {
            "question": self.question,
            "answer": self.answer,
            "answered": self.answered,
            "stopped": self.stopped,
            "cited_steps": self.cited,
            "steps": [s.as_dict() for s in self.steps],
            "elapsed_seconds": round(self.elapsed, 3),
        }


class Observer(Protocol):
    """Receives live events of a run (the terminal printer implements it)."""

    def step_started(self, step: Step) -> None:
        """A tool call is about to run."""

    def step_finished(self, step: Step) -> None:
        """A tool call finished (``step.ok`` says how)."""

    def model_note(self, text: str) -> None:
        """The model said something alongside its tool calls."""


class _Silent:
    def step_started(self, step: Step) -> None:
        pass

    def step_finished(self, step: Step) -> None:
        pass

    def model_note(self, text: str) -> None:
        pass


class _Run:
    """Mutable state of one run, shared by the middleware hooks."""

    def __init__(self, config: AgentConfig, observer: Observer) -> None:
        self.config = config
        self.observer = observer
        self.steps: list[Step] = []
        self.stopped: str | None = None
        self.messages: list[BaseMessage] = []


class _LoopMiddleware(AgentMiddleware):
    """Step announcements, the step limit, tool choice, result capping."""

    def __init__(self, run: _Run) -> None:
        super().__init__()
        self.run = run

    async def awrap_model_call(self, request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        """Set the tool choice: forced on a question's first turn when configured, else
        an explicit ``"auto"`` for OpenAI-compatible endpoints."""
        config = self.run.config
        if request.tools and request.tool_choice is None:
            if config.first_tool and not _tool_results_since_question(request.messages):
                request = request.override(tool_choice=config.first_tool)
            elif config.provider == "openai":
                request = request.override(tool_choice="auto")
        return await handler(request)

    @hook_config(can_jump_to=["end"])
    async def aafter_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        """Stop the run (jump to end) when the requested calls would pass the step limit."""
        messages = list(state["messages"])
        self.run.messages = messages
        last = messages[-1] if messages else None
        if not isinstance(last, AIMessage) or not last.tool_calls:
            return None
        if len(self.run.steps) + len(last.tool_calls) > self.run.config.max_steps:
            self.run.stopped = "step_limit"
            return {"jump_to": "end"}
        note = message_text(last.content)
        if note:
            self.run.observer.model_note(note)
        return None

    async def awrap_tool_call(self, request: Any, handler: Callable[[Any], Awaitable[Any]]) -> Any:
        """Announce the call, run it, record and announce its result, cap its size."""
        call = request.tool_call
        step = Step(index=len(self.run.steps) + 1, tool=call["name"], args=dict(call.get("args") or {}))
        self.run.steps.append(step)
        self.run.observer.step_started(step)
        started = time.perf_counter()
        try:
            result = await handler(request)
        except asyncio.CancelledError:
            # The time limit cancelled the call while it was in flight; the session closes
            # afterwards, which ends the call on the server side too.
            step.seconds = time.perf_counter() - started
            step.ok = False
            step.text = "no result: the call was still running when the time limit stopped the run"
            step.summary = f"({step.text})"
            raise
        except Exception as exc:
            step.seconds = time.perf_counter() - started
            step.ok = False
            step.text = f"{type(exc).__name__}: {exc}"
            step.summary = one_line(step.text, is_error=True)
            self.run.observer.step_finished(step)
            raise
        step.seconds = time.perf_counter() - started
        if isinstance(result, ToolMessage):
            step.text = result_text(result.content)
            step.ok = result.status != "error"
            step.structured = structured_of(step.text, result.artifact) if step.ok else None
            step.summary = one_line(step.text, step.structured, is_error=not step.ok)
            # Plain string content: some OpenAI-compatible servers (llama.cpp) reject
            # content-block lists in tool messages. Cap what the model gets.
            cap = self.run.config.max_tool_chars
            content = step.text or "(empty result)"
            if len(content) > cap:
                content = (
                    content[:cap] + f"\n[... {len(content) - cap} more characters cut by the agent; narrow the query]"
                )
            result.content = content
        else:
            step.ok = True
            step.summary = f"({type(result).__name__})"
        self.run.observer.step_finished(step)
        return result


def _tool_results_since_question(messages: list[BaseMessage]) -> bool:
    for msg in reversed(messages):
        if isinstance(msg, ToolMessage):
            return True
        if isinstance(msg, HumanMessage):
            return False
    return False


def _drop_unanswered_calls(messages: list[BaseMessage]) -> list[BaseMessage]:
    """Remove a trailing AIMessage whose tool calls were never executed."""
    out = list(messages)
    while out and isinstance(out[-1], AIMessage) and out[-1].tool_calls:
        answered = {m.tool_call_id for m in out if isinstance(m, ToolMessage)}
        if all(c.get("id") in answered for c in out[-1].tool_calls):
            break
        out.pop()
    return out


class Investigator:
    """Answers questions by driving the model over the MCP tools.

    Args:
        model: an unbound chat model (tools are bound here).
        tools: the LangChain tools of one live MCP session.
        config: limits (``max_steps``, ``time_limit``, ``max_tool_chars``), ``provider``
            and ``first_tool``.
        observer: receives live step events (default: silent).
        system_prompt: the triage instructions (default :data:`SYSTEM_PROMPT`).
    """

    def __init__(
        self,
        model: BaseChatModel,
        tools: list[BaseTool],
        config: AgentConfig,
        observer: Observer | None = None,
        system_prompt: str = SYSTEM_PROMPT,
    ) -> None:
        self.model = model
        self.tools = tools
        self.config = config
        self.observer = observer or _Silent()
        self.system_prompt = system_prompt

    async def run(self, question: str, history: list[BaseMessage] | None = None) -> RunResult:
        """Investigate ``question`` and return the answer with its evidence.

        Args:
            question: the operator's question, plain text.
            history: earlier conversation (``RunResult.messages`` of the previous turn)
                for a chat; ``None`` starts fresh.

        Returns:
            A :class:`RunResult`. When the step or time limit stops the run, ``stopped``
            says which and ``answer`` is a partial answer that starts by saying so.

        Raises:
            ModelEndpointError, ToolCallingUnsupported: the model endpoint failed (see
                :func:`opsmcp_agent.models.explain_model_error`).
            Exception: MCP transport failures and anything unrecognised propagate.
        """
        started = time.perf_counter()
        run = _Run(self.config, self.observer)
        graph = create_agent(
            self.model, self.tools, system_prompt=self.system_prompt, middleware=[_LoopMiddleware(run)]
        )
        inputs = list(history or []) + [HumanMessage(question)]
        run.messages = inputs
        limit = {"recursion_limit": 6 * (self.config.max_steps + 2) + 10}
        answer = ""
        try:
            async with asyncio.timeout(self.config.time_limit):
                state = await graph.ainvoke({"messages": inputs}, config=limit)
            run.messages = list(state["messages"])
        except TimeoutError:
            run.stopped = "time_limit"
        except Exception as exc:
            mapped = explain_model_error(_leaf(exc), self.config)
            if mapped is not None:
                raise mapped from exc
            raise
        messages = _drop_unanswered_calls(run.messages)
        answered = True
        if run.stopped == "step_limit":
            remaining = self.config.time_limit - (time.perf_counter() - started)
            partial, answered = await self._partial_answer(messages, run.steps, remaining)
            answer = (
                f"Stopped: the step limit ({self.config.max_steps} tool calls) was reached before a final "
                f"answer. Partial answer:\n{partial}"
            )
        elif run.stopped == "time_limit":
            answered = False
            answer = (
                f"Stopped: the time limit ({self.config.time_limit:g}s) was reached before a final answer. "
                f"Partial answer from the evidence so far:\n{_evidence_digest(run.steps)}"
            )
        else:
            last = messages[-1] if messages else None
            text = message_text(last.content) if isinstance(last, AIMessage) else ""
            answered = usable_answer(text)
            answer = text if answered else _no_answer(text, run.steps)
        if run.stopped:
            messages = messages + [AIMessage(answer)]
        return RunResult(
            question=question,
            answer=answer,
            steps=run.steps,
            stopped=run.stopped,
            elapsed=time.perf_counter() - started,
            messages=messages,
            answered=answered,
        )

    async def follow_up(self, messages: list[BaseMessage], instructions: str, timeout: float) -> str:
        """Ask the model one more thing about a finished run, without tools.

        Args:
            messages: the run's conversation (``RunResult.messages``).
            instructions: what to produce (e.g. the JSON report instructions).
            timeout: seconds to wait for the reply.

        Returns:
            The reply text, think-blocks removed.

        Raises:
            TimeoutError: no reply within ``timeout`` seconds.
            ModelEndpointError, ToolCallingUnsupported: as for :meth:`run`.
        """
        prompt = [SystemMessage(self.system_prompt), *messages, HumanMessage(instructions)]
        try:
            async with asyncio.timeout(timeout):
                reply = await self.model.ainvoke(prompt)
        except TimeoutError:
            raise
        except Exception as exc:
            mapped = explain_model_error(_leaf(exc), self.config)
            if mapped is not None:
                raise mapped from exc
            raise
        return clean_answer(result_text(reply.content))

    async def _partial_answer(
        self, messages: list[BaseMessage], steps: list[Step], remaining: float
    ) -> tuple[str, bool]:
        """The model's summary of a run the step limit stopped, and whether it is usable
        (else the evidence digest, and False)."""
        if remaining > 1:
            try:
                text = await self.follow_up(messages, STEP_LIMIT_INSTRUCTIONS, timeout=remaining)
                if usable_answer(text):
                    return text, True
            except Exception:  # any failure: fall back to the evidence digest
                log.debug("the step-limit follow-up failed; answering with the evidence digest", exc_info=True)
        return "The model gave no usable summary; the evidence gathered so far:\n" + _evidence_digest(steps), False


def _no_answer(text: str, steps: list[Step]) -> str:
    """What a run says when the model's last reply is not a usable answer (see
    :func:`~opsmcp_agent.render.usable_answer`)."""
    said = " ".join(text.split())
    shown = f": {said[:200]!r}{'…' if len(said) > 200 else ''}" if said else ""
    return f"(the model gave no usable answer{shown})\nThe evidence gathered so far:\n{_evidence_digest(steps)}"


def _evidence_digest(steps: list[Step]) -> str:
    if not steps:
        return "No tool results were gathered."
    return "\n".join(f"[{s.index}] {s.tool}: {s.summary}" for s in steps)


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
