"""``opsmcp-agent``: ask, chat, investigate-alert.

Every command opens ONE MCP session to opsmcp (``opsmcp serve`` over stdio by default,
or ``--server-url`` over streamable HTTP), loads its tools, and drives a LangGraph agent
on a local model (Ollama ``qwen3:8b`` by default, or ``--provider openai --base-url``).
Steps print as they happen; the answer comes with the evidence it used.

Exit codes: 0 answered (also a partial answer the model summarised when a limit stopped
it), 1 other failure, 2 bad input, 3 model endpoint unreachable, 4 model cannot call tools,
5 opsmcp server unreachable, 6 the model gave no usable answer (the evidence gathered is
still printed), 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, TextIO, TypeVar

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import BaseMessage

from . import __version__
from .agent import Investigator, RunResult
from .config import ALL_TOOLSETS, AgentConfig, parse_toolsets
from .errors import AgentError, BadInput, NoAnswer
from .models import build_chat_model, check_model_endpoint
from .output import StepPrinter, format_answer
from .prompts import ALERT_QUESTION, REPORT_INSTRUCTIONS
from .report import (
    Alert,
    describe_alerts,
    parse_alertmanager,
    parse_report,
    post_report,
    render_markdown,
)
from .session import Confirmer, Toolbox, open_toolbox

T = TypeVar("T")


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser (``ask``, ``chat``, ``investigate-alert`` + shared flags)."""
    env = AgentConfig.from_env()
    common = argparse.ArgumentParser(add_help=False)
    m = common.add_argument_group("model")
    m.add_argument(
        "--provider",
        choices=["ollama", "openai"],
        default=env.provider,
        help="ollama (default) or any OpenAI-compatible endpoint (vLLM, llama.cpp server)",
    )
    m.add_argument("--model", default=env.model, help=f"model name (default {env.model})")
    m.add_argument(
        "--base-url",
        default=env.base_url,
        help="model endpoint (default: OLLAMA_HOST or http://127.0.0.1:11434; openai: http://127.0.0.1:8000/v1)",
    )
    m.add_argument("--api-key", default=env.api_key, help="API key for an OpenAI-compatible endpoint")
    m.add_argument("--temperature", type=float, default=0.0)
    m.add_argument("--think", action="store_true", help="let reasoning models think (slower)")
    m.add_argument("--num-ctx", type=int, default=16384, help="Ollama context window, tokens (default 16384)")
    m.add_argument(
        "--first-tool",
        metavar="NAME",
        help="force the first turn of each question to call this tool, or 'any' tool (helps small models)",
    )
    m.add_argument(
        "--max-tokens", type=int, default=None, help="most tokens per model reply (OpenAI-compatible endpoints)"
    )
    s = common.add_argument_group("opsmcp server")
    s.add_argument(
        "--server-command",
        default=env.server_command,
        help="command that starts opsmcp over stdio (default 'opsmcp serve'; env OPSMCP_AGENT_SERVER_COMMAND)",
    )
    s.add_argument(
        "--server-url", default=env.server_url, help="streamable HTTP endpoint instead, e.g. http://127.0.0.1:3001/mcp"
    )
    s.add_argument("--token", default=env.token, help="bearer token for --server-url (env OPSMCP_AGENT_TOKEN)")
    s.add_argument("--toolsets", default=None, help=f"comma-separated subset of {','.join(ALL_TOOLSETS)}")
    s.add_argument("--allow-writes", action="store_true", help="start the stdio server with write tools enabled")
    s.add_argument("--yes", action="store_true", help="approve every write confirmation without asking (careful)")
    r = common.add_argument_group("limits and output")
    r.add_argument("--max-steps", type=int, default=12, help="most tool calls per question (default 12)")
    r.add_argument("--timeout", type=float, default=300.0, help="time limit per question, seconds (default 300)")
    r.add_argument(
        "--max-tool-chars",
        type=int,
        default=12_000,
        help="most characters of one tool result handed to the model (default 12000)",
    )
    r.add_argument("--json", action="store_true", help="machine-readable JSON on stdout (steps go to stderr)")

    parser = argparse.ArgumentParser(
        prog="opsmcp-agent", description="Investigate ops incidents through opsmcp's MCP tools."
    )
    parser.add_argument("--version", action="version", version=f"opsmcp-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    ask = sub.add_parser("ask", parents=[common], help="answer one question and exit")
    ask.add_argument("question", nargs="+", help="the question, e.g. 'why are orders failing?'")
    sub.add_parser("chat", parents=[common], help="interactive conversation (REPL) with history")
    inv = sub.add_parser(
        "investigate-alert", parents=[common], help="root-cause report for an Alertmanager webhook payload"
    )
    inv.add_argument("file", nargs="?", help="payload file, or - for standard input (or use --fingerprint)")
    inv.add_argument(
        "--fingerprint", help="investigate an alert opsmcp received from Alertmanager (read with its get_alert tool)"
    )
    inv.add_argument("--post", metavar="URL", help="POST the report to a Slack-compatible webhook")
    return parser


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    """Turn parsed arguments into an :class:`AgentConfig`.

    Raises:
        BadInput: an unknown toolset, a non-positive step or time limit.
    """
    try:
        toolsets = parse_toolsets(args.toolsets)
    except ValueError as exc:
        raise BadInput(str(exc)) from exc
    if args.max_steps < 1:
        raise BadInput("--max-steps must be at least 1.")
    if args.timeout <= 0:
        raise BadInput("--timeout must be a positive number of seconds.")
    if args.max_tool_chars < 200:
        raise BadInput("--max-tool-chars must be at least 200.")
    return AgentConfig(
        provider=args.provider,
        model=args.model,
        base_url=args.base_url,
        api_key=args.api_key,
        temperature=args.temperature,
        think=args.think,
        num_ctx=args.num_ctx,
        server_command=args.server_command,
        server_url=args.server_url,
        token=args.token,
        toolsets=toolsets,
        allow_writes=args.allow_writes,
        assume_yes=args.yes,
        max_steps=args.max_steps,
        time_limit=args.timeout,
        first_tool=args.first_tool,
        max_tokens=args.max_tokens,
        max_tool_chars=args.max_tool_chars,
    )


def main(
    argv: list[str] | None = None,
    *,
    chat_model: BaseChatModel | None = None,
    stdin: TextIO | None = None,
) -> int:
    """Run the CLI.

    Args:
        argv: arguments without the program name (default ``sys.argv[1:]``).
        chat_model: use this chat model instead of building one from the flags (tests
            inject a scripted model here; the endpoint pre-flight check is skipped).
        stdin: where the chat REPL, ``investigate-alert -`` and confirmations read from
            (default ``sys.stdin``).

    Returns:
        The process exit code (see the module docstring).
    """
    args = build_parser().parse_args(argv)
    stdin = stdin or sys.stdin
    try:
        config = config_from_args(args)
        if args.command == "chat" and args.json:
            raise BadInput("--json is for ask and investigate-alert; chat is interactive.")
        alerts: list | None = None
        if args.command == "investigate-alert":
            if bool(args.file) == bool(args.fingerprint):
                raise BadInput("investigate-alert takes a payload file (or -) or --fingerprint FP: exactly one.")
            if args.file:
                payload = stdin.read() if args.file == "-" else _read_file(args.file)
                alerts = parse_alertmanager(payload)
        if chat_model is None:
            check_model_endpoint(config)
        model = chat_model or build_chat_model(config)
        if args.command == "ask":
            return asyncio.run(_ask(config, model, " ".join(args.question), args.json, stdin))
        if args.command == "chat":
            return asyncio.run(_chat(config, model, stdin))
        return asyncio.run(_investigate(config, model, alerts, args.json, args.post, stdin, args.fingerprint))
    except AgentError as exc:
        _fail(str(exc), type(exc).__name__, args.json)
        return exc.exit_code
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - one line for the operator, traceback on request
        if os.environ.get("OPSMCP_AGENT_DEBUG"):
            traceback.print_exc()
        _fail(
            f"unexpected failure: {type(exc).__name__}: {exc} (set OPSMCP_AGENT_DEBUG=1 for the traceback)",
            type(exc).__name__,
            args.json,
        )
        return 1


def _fail(message: str, kind: str, as_json: bool) -> None:
    print(f"error: {message}", file=sys.stderr)
    if as_json:
        print(json.dumps({"error": message, "kind": kind}))


def _read_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        raise BadInput(f"Cannot read the alert file {path!r}: {exc.strerror or exc}.") from exc


async def _with_agent(
    config: AgentConfig,
    model: BaseChatModel,
    printer: StepPrinter,
    stdin: TextIO,
    body: Callable[[Investigator, Toolbox], Awaitable[T]],
) -> T:
    confirmer = Confirmer(assume_yes=config.assume_yes, stdin=stdin, on_confirmation=printer.confirmation)
    async with open_toolbox(config, confirmer) as box:
        names = [t.name for t in box.tools]
        if config.first_tool and config.first_tool != "any" and config.first_tool not in names:
            raise BadInput(f"--first-tool {config.first_tool!r} is not one of the tools offered: {', '.join(names)}.")
        print(
            f"opsmcp-agent: {type(model).__name__} {config.model!r} at {config.resolved_base_url}; "
            f"{len(box.tools)} tools from {box.server}",
            file=sys.stderr,
        )
        inv = Investigator(model, box.tools, config, observer=_Observer(printer, confirmer))
        return await body(inv, box)


class _Observer:
    """Prints steps and tells the confirmer which tool call is running."""

    def __init__(self, printer: StepPrinter, confirmer: Confirmer) -> None:
        self.printer = printer
        self.confirmer = confirmer

    def step_started(self, step: Any) -> None:
        self.confirmer.current_tool = step.tool
        self.printer.step_started(step)

    def step_finished(self, step: Any) -> None:
        self.confirmer.current_tool = None
        self.printer.step_finished(step)

    def model_note(self, text: str) -> None:
        self.printer.model_note(text)


def _meta(config: AgentConfig, box: Toolbox) -> dict[str, Any]:
    return {
        "model": config.model,
        "provider": config.provider,
        "server": box.server,
        "tools": [t.name for t in box.tools],
        "confirmations": [vars(c) for c in box.confirmer.history],
    }


async def _ask(config: AgentConfig, model: BaseChatModel, question: str, as_json: bool, stdin: TextIO) -> int:
    printer = StepPrinter(out=sys.stderr if as_json else None)

    async def body(inv: Investigator, box: Toolbox) -> RunResult:
        result = await inv.run(question)
        failure = None if result.answered else no_answer_hint(config, result)
        if as_json:
            extra = {"error": failure.message, "kind": "NoAnswer"} if failure else {}
            print(json.dumps({**result.as_dict(), **_meta(config, box), **extra}, ensure_ascii=False, default=str))
        else:
            print(format_answer(result))
        return result

    result = await _with_agent(config, model, printer, stdin, body)
    if not result.answered:
        failure = no_answer_hint(config, result)
        print(f"error: {failure}", file=sys.stderr)
        return failure.exit_code
    return 0


def no_answer_hint(config: AgentConfig, result: RunResult) -> NoAnswer:
    """The failure of a run without a usable answer, with what to try (exit code 6)."""
    room = (
        f" or more room (--max-steps {config.max_steps * 2}, --timeout {config.time_limit * 2:g})"
        if result.stopped
        else ""
    )
    fewer = "fewer tools (--toolsets queues,logs)" if not config.toolsets else "fewer tools (a shorter --toolsets)"
    return NoAnswer(
        f"the model {config.model!r} gave no usable answer"
        + (f" before the {result.stopped.replace('_', ' ')}" if result.stopped else "")
        + f" ({len(result.steps)} tool call(s) made). Try {fewer}, a bigger model (--model qwen3:8b), "
        + "--first-tool any"
        + room
        + "."
    )


async def _chat(config: AgentConfig, model: BaseChatModel, stdin: TextIO) -> int:
    printer = StepPrinter()

    async def body(inv: Investigator, box: Toolbox) -> int:
        history: list[BaseMessage] = []
        interactive = stdin.isatty()
        if interactive:
            try:
                import readline  # noqa: F401 - line editing and history for input()
            except ImportError:
                pass
        print("Ask about queues, orders, logs, metrics. /reset clears the history, /exit quits.")
        while True:
            line = await asyncio.to_thread(_read_line, stdin, interactive)
            if line is None:
                print()
                return 0
            text = line.strip()
            if not text:
                continue
            if text in {"/exit", "/quit"}:
                return 0
            if text == "/reset":
                history = []
                print("(history cleared)")
                continue
            if text == "/help":
                print("Type a question. /reset clears the history, /exit quits.")
                continue
            result = await inv.run(text, history=history)
            history = result.messages
            print(format_answer(result))

    return await _with_agent(config, model, printer, stdin, body)


def _read_line(stdin: TextIO, interactive: bool) -> str | None:
    if interactive and stdin is sys.stdin:
        try:
            return input("you> ")
        except EOFError:
            return None
    sys.stdout.write("you> ")
    sys.stdout.flush()
    line = stdin.readline()
    return line if line else None


async def stored_alert(session: Any, fingerprint: str) -> list[Alert]:
    """The alert opsmcp stored under ``fingerprint``, read with its ``get_alert`` tool.

    Raises:
        BadInput: the server has no such alert, or no alerts toolset (the tool error's
            text says which).
    """
    result = await session.call_tool("get_alert", {"fingerprint": fingerprint})
    text = " ".join(getattr(c, "text", "") for c in result.content)
    if result.isError:
        raise BadInput(
            f"opsmcp could not give alert {fingerprint!r}: {text.strip()} "
            "(the server needs OPSMCP_ALERTMANAGER_URL set to offer get_alert)."
        )
    data = result.structuredContent or json.loads(text)
    a = data["alert"]
    return [
        Alert(status=a["status"], labels=a["labels"], annotations=a["annotations"], starts_at=a.get("starts_at") or "")
    ]


async def _investigate(
    config: AgentConfig,
    model: BaseChatModel,
    alerts: list | None,
    as_json: bool,
    post_url: str | None,
    stdin: TextIO,
    fingerprint: str | None = None,
) -> int:
    printer = StepPrinter(out=sys.stderr if as_json else None)

    async def body(inv: Investigator, box: Toolbox) -> int:
        nonlocal alerts
        if alerts is None:
            alerts = await stored_alert(box.session, str(fingerprint))
        started = time.perf_counter()
        run = await inv.run(ALERT_QUESTION.format(alerts=describe_alerts(alerts)))
        text = ""
        if run.stopped != "time_limit":
            remaining = max(30.0, config.time_limit - (time.perf_counter() - started))
            try:
                text = await inv.follow_up(run.messages, REPORT_INSTRUCTIONS, timeout=remaining)
            except TimeoutError:
                text = ""
        report = parse_report(text or run.answer, alerts, run)
        if as_json:
            print(json.dumps({**report.as_dict(), **_meta(config, box)}, ensure_ascii=False, default=str))
        else:
            print("\n" + render_markdown(report))
        if post_url:
            status = await asyncio.to_thread(post_report, post_url, report)
            print(f"posted the report to {post_url} (HTTP {status})", file=sys.stderr)
        return 0

    return await _with_agent(config, model, printer, stdin, body)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
