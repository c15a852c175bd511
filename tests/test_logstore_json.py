"""The parser reads lines with orjson when it is installed and with json otherwise:
both give the same rows and the same bad-line reasons."""

from __future__ import annotations

import pytest

from opsmcp.backends.logstore import parser
from opsmcp.backends.logstore.parser import IngestReport, parse_batch

TS = '"@timestamp":"2026-11-21T15:00:00.123Z"'
LINES = [
    '{' + TS + ',"message":"plain","n":1.1000000000000001,"big":123456789012345678901234567890}',
    '{' + TS + ',"message":"nan","x":NaN,"y":-Infinity}',
    '{' + TS + ',"message":"dup","k":1,"k":2}',
    '{' + TS + ',"message":"lone \\ud800 surrogate"}',
    '{' + TS + ',"message":"pair \\ud83d\\ude00 ok","deep":' + "[" * 600 + "]" * 600 + '}',
    '{' + TS + ',"message":"too deep","deep":' + "[" * 5000 + "]" * 5000 + '}',
    '{' + TS + ',"message":"unicode é ✓"}',
    '{"message": "no timestamp"}',
    "[1, 2]",
    "{not json",
    "   ",
    '{' + TS + ',"message":"trailing"} x',
]


def _parse() -> tuple[list, list[str], int, int]:
    report = IngestReport()
    rows = parse_batch(list(enumerate(LINES, 1)), 0, "t.jsonl", report, {})
    return rows, [str(b) for b in report.bad_lines], report.bad, report.blank


def test_orjson_and_json_agree_on_rows_and_bad_lines(monkeypatch):
    pytest.importorskip("orjson")
    fast = _parse()
    monkeypatch.setattr(parser, "_fast_loads", None)
    plain = _parse()
    assert fast == plain
    rows, bad, n_bad, blank = fast
    assert [r[5] for r in rows] == ["plain", "nan", "dup", "pair \U0001f600 ok", "unicode é ✓"]
    assert '"big":123456789012345678901234567890' in rows[0][6] and '"k":2' in rows[2][6]
    assert n_bad == 6 and blank == 1
    assert any("unpaired UTF-16 surrogate" in b for b in bad) and any("nested too deeply" in b for b in bad)
