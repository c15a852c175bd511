"""The README matches the code: every tool and argument in the tool table, every command and
option in Commands.

Data: README.md at the repository root; the tools come from `build_server` with every
toolset enabled (writes on, Prometheus and Alertmanager URLs set, nothing contacted), the
commands from the CLI's own argparse parser.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from conftest import make_settings

pytestmark = pytest.mark.anyio

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    """The README text under ``## title`` up to the next level-2 heading."""
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end > 0 else None]


def _tool_rows() -> dict[str, str]:
    """Tool name -> its signature cell, from the `## Tools` table rows like ``| `name(a, b?)` | ...``."""
    rows = {}
    for line in _section("Tools").splitlines():
        m = re.match(r"\| `(\w+)\(([^`]*)\)` \|", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


async def test_every_tool_and_argument_is_in_the_readme_table(tmp_path: Path) -> None:
    from mcp import Client

    from opsmcp.server import build_server

    rows = _tool_rows()
    tools: dict = {}
    for mode in ("prompt-or-confirm", "human"):  # confirm/approval_token exist in one, get_approval in the other
        settings = make_settings("http://127.0.0.1:9", tmp_path, allow_writes=True, write_approval=mode,
                                 prometheus_url="http://127.0.0.1:9", alertmanager_url="http://127.0.0.1:9")
        server, _runtime = build_server(settings)
        async with Client(server) as client:
            for t in (await client.list_tools()).tools:
                tools.setdefault(t.name, {"properties": {}})["properties"].update(t.input_schema.get("properties", {}))
    assert len(tools) >= 19, sorted(tools)
    missing_tools = sorted(set(tools) - set(rows))
    assert not missing_tools, f"tools missing from the README's Tools table: {missing_tools}"
    missing_args = {
        name: sorted(arg for arg in schema.get("properties", {})
                     if not re.search(rf"\b{re.escape(arg)}\b", rows[name]))
        for name, schema in tools.items()
    }
    missing_args = {name: args for name, args in missing_args.items() if args}
    assert not missing_args, f"arguments missing from the README's Tools table: {missing_args}"
    stale = sorted(set(rows) - set(tools))
    assert not stale, f"README lists tools the server does not have: {stale}"


def _commands(parser: argparse.ArgumentParser, prefix: str = "opsmcp") -> dict[str, list[str]]:
    """Every leaf command ('opsmcp logs load') -> its option strings (the long form)."""
    found: dict[str, list[str]] = {}
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        found[prefix] = [max(a.option_strings, key=len) for a in parser._actions
                         if a.option_strings and a.dest != "help"]
    for action in subs:
        for name, sub in action.choices.items():
            found.update(_commands(sub, f"{prefix} {name}"))
    return found


def test_every_command_and_option_is_in_the_readme_commands() -> None:
    from opsmcp.cli import build_parser

    block = _section("Commands")
    commands = _commands(build_parser())
    assert "opsmcp doctor" in commands and "opsmcp serve" in commands
    problems = []
    for command, options in commands.items():
        lines = [line for line in block.splitlines() if line.lstrip().startswith(command)]
        if not lines:
            problems.append(f"{command}: not in Commands")
            continue
        # an option may continue on the next (indented) line of the same command
        start = block.index(lines[0])
        text = block[start:block.find("\nopsmcp ", start + 1)]
        problems += [f"{command}: option {opt} not in Commands" for opt in options if opt not in text]
    assert not problems, "\n".join(problems)

