"""Full-text query building for the embedded store: a user's query as an FTS5 MATCH.

:func:`fts_query` makes a query literal-friendly without changing its meaning;
:func:`tag_query` adds the service/level restriction as FTS5 terms (the ``tags`` column);
:func:`fts_error` turns SQLite's parse error into an :class:`InvalidInput` with examples.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence

from opsmcp.errors import InvalidInput

FTS_EXAMPLES = (
    'valid examples: timeout (a word) · "connection timeout" (a phrase) · '
    "payment AND declined · gateway OR timeout · timeout NOT retry · time* (a prefix) · "
    '"orders-db.cluster" (quote words with punctuation); operators in capitals.'
)

_BAREWORD = re.compile(r"^[\w\u0080-\U0010ffff]+\*?$")
_FTS_TOKEN = re.compile(r'"(?:[^"]|"")*"|[()]|[^\s()"]+')
_OPERATORS = {"AND", "OR", "NOT", "NEAR"}


def fts_query(query: str) -> str:
    """Make a user's FTS5 query literal-friendly without changing its meaning.

    Bare terms with punctuation FTS5 would reject (``orders-db.cluster:5432``,
    ``gw.paynet*``) are quoted (``"orders-db.cluster:5432"``, ``"gw.paynet"*``); words,
    "phrases", AND/OR/NOT, NEAR(), parentheses, prefixes and ``message:`` column filters
    are left alone. Queries with unbalanced quotes are returned unchanged, so FTS5 reports
    the error.

    Raises:
        InvalidInput: unbalanced parentheses (checked here, because the query is wrapped
            in ``message : ( ... )`` and must not close that group itself).
    """
    if query.count('"') % 2:
        return query
    out = []
    depth = 0
    for tok in _FTS_TOKEN.findall(query):
        depth += (tok == "(") - (tok == ")")
        if depth < 0:
            break
    if depth:
        raise InvalidInput(f"Cannot parse the full-text query {query!r}: unbalanced parentheses.", FTS_EXAMPLES)
    for tok in _FTS_TOKEN.findall(query):
        column_word = tok.lower().startswith("message:") and _BAREWORD.match(tok[8:] or "x")
        if (tok.startswith('"') or tok in "()" or tok in _OPERATORS or _BAREWORD.match(tok) or column_word
                or tok in ("*", "+", "^", ":", ",")):
            out.append(tok)
        else:
            star = tok.endswith("*") and len(tok) > 1
            core = tok[:-1] if star else tok
            if core.lower().startswith("message:"):
                core = core[8:]
            out.append('"' + core.replace('"', '""') + '"' + ("*" if star else ""))
    return " ".join(out)


def tag(prefix: str, value: str) -> str:
    return prefix + value.encode("utf-8").hex()


def tag_query(service: str | None, levels: Sequence[str] | None) -> str:
    """The FTS5 terms that restrict a match to a service and to levels ('' for none)."""
    terms = []
    if service is not None:
        terms.append(tag("s", service))
    if levels:
        lv = [tag("l", x) for x in levels]
        terms.append(lv[0] if len(lv) == 1 else "(" + " OR ".join(lv) + ")")
    return " AND tags : (" + " AND ".join(terms) + ")" if terms else ""


def fts_error(query: str, exc: sqlite3.Error) -> InvalidInput:
    problem = str(exc)
    problem = problem.removeprefix("fts5: ")
    if problem.startswith("no such column"):
        problem += " (the only column is `message`)"
    return InvalidInput(f"Cannot parse the full-text query {query!r}: {problem}.", FTS_EXAMPLES)


def is_fts_error(exc: sqlite3.Error) -> bool:
    text = str(exc)
    return (
        text.startswith("fts5:")
        or "syntax error" in text
        or "unterminated string" in text
        or "no such column" in text
        or "unknown special query" in text
        or "malformed MATCH" in text
    )
