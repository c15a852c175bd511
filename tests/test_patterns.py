"""Log template mining (drain3): templates, new / grew / steady against a baseline, bounds."""

from __future__ import annotations

from opsmcp.patterns import count_rows, mask, mine


def _rows(messages: list[tuple[str, int]], service: str = "svc", minute: int = 0) -> list[dict[str, str | None]]:
    rows = []
    for text, n in messages:
        for i in range(n):
            rows.append({"message": text.format(i=i, j=i * 7 + 3), "service": service, "level": "ERROR",
                         "timestamp": f"2026-01-01T00:{minute + i % 10:02d}:00.000Z", "trace_id": f"t-{i}"})
    return rows


def test_mask_collapses_ids_and_numbers() -> None:
    assert mask("order 3f2a9c1e-8b7d-4e6f-9a0b-1c2d3e4f5a6b failed after 5000ms (attempt 3)") == (
        "order <*> failed after <*>ms (attempt <*>)")
    assert mask("pointer 0xdeadBEEF, ratio 0.25") == "pointer <*>, ratio <*>"


def test_templates_counts_and_samples() -> None:
    window = count_rows(_rows([("Database connection timeout after {j}ms (attempt {i})", 30),
                               ("Payment gateway unavailable for order {j}", 12)]))
    patterns = mine(window)
    by_template = {p.template: p for p in patterns}
    db = by_template["Database connection timeout after <*>ms (attempt <*>)"]
    assert db.count == 30 and db.services == ["svc"] and db.levels == ["ERROR"]
    assert db.first_seen == "2026-01-01T00:00:00.000Z" and db.last_seen == "2026-01-01T00:09:00.000Z"
    assert db.sample.startswith("Database connection timeout after") and db.sample_trace_id
    assert by_template["Payment gateway unavailable for order <*>"].count == 12
    assert [p.count for p in patterns] == [30, 12] and all(p.change is None for p in patterns)


def test_new_grew_steady_against_a_baseline() -> None:
    steady = ("Processed order {j} in {i}ms", 40)
    baseline = count_rows(_rows([steady, ("Cache miss for key {j}", 5)]))
    window = count_rows(_rows([steady, ("Cache miss for key {j}", 25), ("Order {j} already shipped", 9)]))
    patterns = mine(window, baseline)
    changes = [(p.template, p.change, p.growth) for p in patterns]
    assert changes[0] == ("Order <*> already shipped", "new", None)
    assert changes[1] == ("Cache miss for key <*>", "grew", 5.0)
    assert changes[2] == ("Processed order <*> in <*>ms", "steady", 1.0)
    # Rates, not raw counts: the same counts over a window twice as long are a halving.
    halved = mine(window, baseline, window_seconds=7200, baseline_seconds=3600)
    assert {p.template: p.change for p in halved}["Processed order <*> in <*>ms"] == "shrank"


def test_memory_is_bounded_by_distinct_cap() -> None:
    rows = ({"message": f"unique word{chr(65 + i % 26)}{chr(65 + i // 26 % 26)}{chr(65 + i // 676 % 26)}"}
            for i in range(26**3))  # 17,576 distinct messages
    counts = count_rows(rows, max_distinct=500)
    assert len(counts.distinct) == 500 and counts.lines == 26**3 and counts.overflow == 26**3 - 500
