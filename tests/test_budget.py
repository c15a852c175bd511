"""The size-budget helpers (opsmcp.result_size) that results, prompts and audit records share."""

from __future__ import annotations

from opsmcp.calls.audit import MAX_RECORD_BYTES, bounded
from opsmcp.result_size import cap_values, cut_text, json_size, take_within


def test_cut_text_keeps_head_or_tail_and_says_how_much_was_cut():
    assert cut_text("short", 10) == "short"
    assert cut_text("a" * 100, 10) == "a" * 10 + "…[cut: 90 more characters]"
    assert cut_text("0123456789xyz", 3, keep="tail") == "[cut: 10 earlier characters]…xyz"


def test_take_within_keeps_leading_items_and_never_returns_nothing():
    assert take_within(["aa", "bb", "cc"], 5, len) == (["aa", "bb"], True)
    assert take_within(["a" * 50], 5, len) == (["a" * 50], False)
    assert take_within(["a", "b"], 5, len, used=4) == (["a"], True)


def test_cap_values_and_bounded_audit_records():
    value, cuts = cap_values({"k" * 10: ["x" * 10, {"y": "z" * 10}], "n": 5}, 4)
    assert cuts == 3 and value["kkkk…[cut: 6 more characters]"][1]["y"].startswith("zzzz…")
    many = {"time": "t", "call_id": "c", "phase": "intent", "tool": "t",
            "arguments": {f"a{i}": "v" * 3_000 for i in range(40)}}
    out = bounded(many)
    assert json_size(out) <= MAX_RECORD_BYTES and out["arguments"]["sizes"]["a0"] == 3_002 and out["cut"] >= 1
    assert bounded({"phase": "outcome", "arguments": {"q": "x"}}) == {"phase": "outcome", "arguments": {"q": "x"}}
