"""A scripted chat model drives the REAL opsmcp (sandbox) over stdio through the CLI.

The model is deterministic (a script of tool calls); everything else is real: the CLI,
langchain-mcp-adapters, the LangGraph agent, the MCP session and the opsmcp server.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import ScriptedChatModel, call, last_tool_message, tool_payload, trace_ids
from langchain_core.messages import AIMessage, ToolMessage

from opsmcp_agent.cli import main


def _triage_script(dlq: str) -> list[Any]:
    """analyze_dlq → get_trace (with a trace id read from the analysis) → answer."""
    seen: dict[str, str] = {}

    def second(messages: list) -> AIMessage:
        found = trace_ids(tool_payload(last_tool_message(messages)))
        assert found, "analyze_dlq returned no trace id"
        seen["trace"] = found[0]
        return call("get_trace", {"trace_id": found[0]})

    def answer(messages: list) -> AIMessage:
        assert isinstance(messages[-1], ToolMessage)
        return AIMessage(
            f"Orders are failing: {dlq} holds failed order messages [1]; trace {seen['trace']} "
            f"shows where the processing failed [2]."
        )

    return [call("analyze_dlq", {"queue": dlq}), second, answer]


def _run(
    capfd: pytest.CaptureFixture[str], argv: list[str], model: ScriptedChatModel, stdin: str = ""
) -> tuple[int, str, str]:
    rc = main(argv, chat_model=model, stdin=io.StringIO(stdin))
    out, err = capfd.readouterr()
    return rc, out, err


def test_ask_prints_steps_then_answer_with_evidence(
    server_cmd: str, sandbox: dict, capfd: pytest.CaptureFixture[str]
) -> None:
    model = ScriptedChatModel(script=_triage_script(sandbox["dlq"]))
    rc, out, err = _run(capfd, ["ask", "why are orders failing?", "--server-command", server_cmd], model)
    assert rc == 0, err
    trace = sandbox["trace_id"]
    lines = out.splitlines()
    # steps, in order, each with its arguments and a one-line result
    i1 = next(i for i, ln in enumerate(lines) if ln.startswith("→ [1] analyze_dlq("))
    assert f'queue="{sandbox["dlq"]}"' in lines[i1]
    assert lines[i1 + 1].startswith("  ← ")
    i2 = next(i for i, ln in enumerate(lines) if ln.startswith("→ [2] get_trace("))
    assert i2 > i1 and f'trace_id="{trace}"' in lines[i2]
    assert lines[i2 + 1].startswith("  ← ")
    # the answer, then the evidence it cites
    ia = lines.index("=== Answer ===")
    ie = lines.index("=== Evidence ===")
    assert i2 < ia < ie
    assert trace in "\n".join(lines[ia:ie])
    evidence = lines[ie + 1 :]
    assert any(ln.startswith("*[1] analyze_dlq(") for ln in evidence)
    assert any(ln.startswith("*[2] get_trace(") and trace in ln for ln in evidence)
    # three model turns; the tools came from the real server, writes are off by default
    assert len(model.calls) == 3
    assert {"analyze_dlq", "get_trace", "list_queues"} <= set(model.bound_tools)
    assert "redrive_dlq" not in model.bound_tools
    assert "triage path" in model.calls[0][0].content.lower()  # the system prompt


def test_ask_json_has_steps_results_and_citations(
    server_cmd: str, sandbox: dict, capfd: pytest.CaptureFixture[str]
) -> None:
    model = ScriptedChatModel(script=_triage_script(sandbox["dlq"]))
    rc, out, err = _run(
        capfd,
        ["ask", "why are orders failing?", "--json", "--toolsets", "queues,logs", "--server-command", server_cmd],
        model,
    )
    assert rc == 0, err
    doc = json.loads(out)
    assert [s["tool"] for s in doc["steps"]] == ["analyze_dlq", "get_trace"]
    assert all(s["ok"] for s in doc["steps"])
    assert doc["steps"][0]["args"] == {"queue": sandbox["dlq"]}
    assert sandbox["trace_id"] in json.dumps(doc["steps"][0]["result"])
    assert sandbox["trace_id"] in json.dumps(doc["steps"][1]["result"])
    assert doc["cited_steps"] == [1, 2]
    assert doc["stopped"] is None
    # --toolsets narrowed what the model sees
    assert set(doc["tools"]) <= {"list_queues", "peek_messages", "analyze_dlq", "search_logs", "get_trace", "log_stats"}
    assert "get_order" not in model.bound_tools and "query_metrics" not in model.bound_tools
    # steps went to stderr, so stdout is one JSON document
    assert "→ [1] analyze_dlq(" in err


def test_one_server_process_for_the_whole_run(
    server_cmd: str, sandbox: dict, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    spawns = tmp_path / "spawns.txt"
    wrapped = f"sh -c {shlex.quote(f'echo spawn >> {shlex.quote(str(spawns))}; exec {server_cmd}')}"
    model = ScriptedChatModel(script=_triage_script(sandbox["dlq"]))
    rc, _, err = _run(capfd, ["ask", "why are orders failing?", "--server-command", wrapped], model)
    assert rc == 0, err
    assert spawns.read_text().splitlines() == ["spawn"]


def test_tool_error_is_shown_and_handed_back(server_cmd: str, sandbox: dict, capfd: pytest.CaptureFixture[str]) -> None:
    def answer(messages: list) -> AIMessage:
        err = last_tool_message(messages)
        assert err.status == "error"
        return AIMessage("That order does not exist [1].")

    model = ScriptedChatModel(script=[call("get_order", {"order_id": "ORD-DOES-NOT-EXIST-42"}), answer])
    rc, out, err = _run(
        capfd, ["ask", "what happened to order ORD-DOES-NOT-EXIST-42?", "--server-command", server_cmd], model
    )
    assert rc == 0, err
    assert re.search(r"^  ✗ ERROR: .*ORD-DOES-NOT-EXIST-42", out, re.MULTILINE), out
    handed_back = last_tool_message(model.calls[1])
    assert "ORD-DOES-NOT-EXIST-42" in str(handed_back.content)
    assert "[error]" in out.split("=== Evidence ===")[1]


def test_step_limit_gives_a_partial_answer_that_says_it_stopped(
    server_cmd: str, sandbox: dict, capfd: pytest.CaptureFixture[str]
) -> None:
    def summary(messages: list) -> AIMessage:
        assert "step limit" in str(messages[-1].content)
        return AIMessage(f"{sandbox['dlq']} has failed orders [1]; I could not follow a trace.")

    script = [
        call("analyze_dlq", {"queue": sandbox["dlq"]}),
        call("get_trace", {"trace_id": sandbox["trace_id"]}),
        summary,
    ]
    model = ScriptedChatModel(script=script)
    rc, out, err = _run(
        capfd, ["ask", "why are orders failing?", "--max-steps", "1", "--json", "--server-command", server_cmd], model
    )
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["stopped"] == "step_limit"
    assert [s["tool"] for s in doc["steps"]] == ["analyze_dlq"]  # the second call never ran
    assert doc["answer"].startswith("Stopped: the step limit (1 tool calls)")
    assert "could not follow a trace" in doc["answer"]
    assert "get_trace" not in err


def test_time_limit_stops_a_hung_model(server_cmd: str, sandbox: dict, capfd: pytest.CaptureFixture[str]) -> None:
    async def hang(messages: list) -> AIMessage:
        await asyncio.Event().wait()  # never set: the model never answers
        raise AssertionError("unreachable")

    model = ScriptedChatModel(script=[call("analyze_dlq", {"queue": sandbox["dlq"]}), hang])
    rc, out, err = _run(capfd, ["ask", "why?", "--timeout", "5", "--server-command", server_cmd], model)
    assert rc == 6, err  # the model never answered: a failure, with what to try
    assert "gave no usable answer before the time limit" in err and "--timeout 10" in err
    assert "Answer (partial — stopped by the time limit)" in out
    assert "Stopped: the time limit (5s)" in out
    assert "[1] analyze_dlq:" in out  # the evidence gathered before the stop (or the call in flight)


def test_time_limit_cancels_a_tool_call_in_flight(capfd: pytest.CaptureFixture[str]) -> None:
    """Regression: when the deadline hit while a tool call was still running (on a loaded
    machine, the first call waiting for the sandbox), the server's late answer reached an
    already closed session and the run ended with BrokenResourceError and exit 1."""
    late = f"{sys.executable} {Path(__file__).with_name('late_answer_server.py')}"
    model = ScriptedChatModel(script=[call("analyze_dlq", {"queue": "order-queue-dlq"})])
    rc, out, err = _run(capfd, ["ask", "why?", "--timeout", "1", "--server-command", late], model)
    assert rc == 6, err  # no answer (the time limit), not a crash
    assert "BrokenResourceError" not in err
    assert "Stopped: the time limit (1s)" in out
    assert "[1] analyze_dlq: (no result: the call was still running when the time limit stopped the run)" in out


@pytest.mark.parametrize(
    ("typed", "flags", "approved", "how"),
    [("n\n", [], False, "terminal"), ("y\n", [], True, "terminal"), ("", ["--yes"], True, "--yes")],
)
def test_write_confirmation_is_asked_in_the_terminal(
    server_cmd: str, sandbox: dict, capfd: pytest.CaptureFixture[str], typed: str, flags: list, approved: bool, how: str
) -> None:
    def after(messages: list) -> AIMessage:
        return AIMessage(f"Result: {str(last_tool_message(messages).content)[:200]}")

    # preview first (dry run, no confirmation), then the real move, which the server confirms
    script = [
        call("redrive_dlq", {"queue": sandbox["dlq"], "dry_run": True}, "c1"),
        call("redrive_dlq", {"queue": sandbox["dlq"], "dry_run": False}, "c2"),
        after,
    ]
    model = ScriptedChatModel(script=script)
    rc, out, err = _run(
        capfd,
        ["ask", "redrive the order DLQ", "--allow-writes", "--json", "--server-command", server_cmd, *flags],
        model,
        stdin=typed,
    )
    assert rc == 0, err
    assert "redrive_dlq" in model.bound_tools
    if how == "terminal":
        # the server's preview was shown and a y/N answer read from the terminal
        assert "redrive_dlq asks for confirmation" in err and "Proceed? [y/N]" in err
        assert sandbox["dlq"] in err.split("asks for confirmation", 1)[1]
    else:
        assert "Proceed?" not in err
    doc = json.loads(out)
    assert [(c["tool"], c["approved"], c["how"]) for c in doc["confirmations"]] == [("redrive_dlq", approved, how)]
    assert doc["steps"][0]["ok"] is True and doc["steps"][0]["result"]["dry_run"] is True
    step = doc["steps"][1]
    if approved:
        assert step["ok"] is True and step["result"]["moved"] > 0
    else:
        assert step["ok"] is False and "declined" in step["result"]


def test_write_without_a_terminal_answer_is_declined(
    server_cmd: str, sandbox: dict, capfd: pytest.CaptureFixture[str]
) -> None:
    script = [
        call("redrive_dlq", {"queue": sandbox["dlq"], "dry_run": True}, "c1"),
        call("redrive_dlq", {"queue": sandbox["dlq"], "dry_run": False}, "c2"),
        AIMessage("ok"),
    ]
    model = ScriptedChatModel(script=script)
    rc, out, err = _run(
        capfd, ["ask", "redrive", "--allow-writes", "--json", "--server-command", server_cmd], model, stdin=""
    )
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["confirmations"][0]["approved"] is False and doc["confirmations"][0]["how"] == "no input"
    assert doc["steps"][1]["ok"] is False


def test_chat_keeps_history_across_turns(server_cmd: str, sandbox: dict, capfd: pytest.CaptureFixture[str]) -> None:
    def second_turn(messages: list) -> AIMessage:
        # the first question, its tool result and answer are all still in the conversation
        texts = [str(m.content) for m in messages]
        assert any("which DLQ" in t for t in texts) and any(isinstance(m, ToolMessage) for m in messages)
        return AIMessage(f"As found before, it is {sandbox['dlq']} [none needed].")

    script = [call("analyze_dlq", {"queue": sandbox["dlq"]}), AIMessage(f"{sandbox['dlq']} [1]"), second_turn]
    model = ScriptedChatModel(script=script)
    rc, out, err = _run(
        capfd, ["chat", "--server-command", server_cmd], model, stdin="which DLQ is failing?\nand again?\n/exit\n"
    )
    assert rc == 0, err
    assert out.count("=== Answer ===") == 2
    assert "As found before" in out
    assert len(model.calls) == 3


def test_unknown_server_command_is_a_clear_error(capfd: pytest.CaptureFixture[str]) -> None:
    model = ScriptedChatModel(script=[])
    rc, _out, err = _run(capfd, ["ask", "x", "--server-command", "/nonexistent/opsmcp serve"], model)
    assert rc == 5
    assert "/nonexistent/opsmcp" in err and "--server-command" in err
    assert model.calls == []


def test_unknown_toolset_is_bad_input(capfd: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run(capfd, ["ask", "x", "--toolsets", "queues,bogus"], ScriptedChatModel(script=[]))
    assert rc == 2 and "bogus" in err


@pytest.mark.parametrize(
    "reply",
    [
        "",  # nothing at all
        '{"name": "analyze_dlq", "arguments": {"queue": "order-queue-dlq"}}',  # a tool call written as text
        "<tool_call>\n</tool_call>",  # chat-template markup
    ],
)
def test_no_usable_answer_is_a_failure_with_a_hint(
    server_cmd: str, sandbox: dict, capfd: pytest.CaptureFixture[str], reply: str
) -> None:
    """Before: exit 0 with '(the model returned no answer)' (or the garbage as the answer)."""
    model = ScriptedChatModel(script=[call("list_queues", {}), AIMessage(reply)])
    rc, out, err = _run(capfd, ["ask", "which DLQs have messages?", "--server-command", server_cmd], model)
    assert rc == 6, err
    assert "gave no usable answer" in err and "--toolsets queues,logs" in err and "--model" in err
    assert "[1] list_queues" in out  # the evidence is still shown
    rc, out, err = _run(
        capfd,
        ["ask", "which DLQs?", "--json", "--server-command", server_cmd],
        ScriptedChatModel(script=[call("list_queues", {}), AIMessage(reply)]),
    )
    assert rc == 6, err
    doc = json.loads(out)  # still one JSON document on stdout
    assert doc["answered"] is False and doc["kind"] == "NoAnswer" and "no usable answer" in doc["error"]
