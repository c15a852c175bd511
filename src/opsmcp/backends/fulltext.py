"""The log tools' full-text syntax, parsed once for every engine, and matched in Python.

``search_logs(query=...)`` takes words (all must match), "phrases", AND/OR/NOT in
capitals, prefix* and parentheses. :func:`parse` turns a query into a small tree that each
engine's query builder translates (OpenSearch's ``simple_query_string``, a CloudWatch Logs
Insights ``filter``, LogQL line filters); :func:`matches` evaluates a tree on a message in
Python with the embedded store's semantics (FTS5, unicode61 tokenizer: words are runs of
letters and digits, compared case-insensitively), for engines whose own filter is only an
approximation and for the checks of every hit.

Tree nodes: ``("or", [..])``, ``("and", [..])``, ``("not", a, b)`` (a AND NOT b),
``("phrase", text)``, ``("word", text)``, ``("prefix", text)``.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from opsmcp.errors import InvalidInput

FTS_EXAMPLES = (
    'valid examples: timeout (a word) · "connection timeout" (a phrase) · '
    "payment AND declined · gateway OR timeout · timeout NOT retry · time* (a prefix) · "
    "(gateway OR timeout) AND payment; operators in capitals."
)
Tree = tuple[Any, ...]
_TOKEN = re.compile(r'"(?:[^"]|"")*"|[()]|[^\s()"]+')
WORD = re.compile(r"^[\w\u0080-\U0010ffff]+$")
_WORDS = re.compile(r"[^\W_]+|_+", re.UNICODE)  # unicode61: letters and digits; '_' separates


def _parse(tokens: list[str], query: str, engine: str) -> tuple[Tree, int]:
    """Recursive descent over the tools' query grammar; returns (tree, next position)."""

    def fail(why: str) -> InvalidInput:
        return InvalidInput(f"Cannot parse the full-text query {query!r}: {why}.", FTS_EXAMPLES)

    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def unary() -> Tree:
        nonlocal pos
        tok = peek()
        if tok is None:
            raise fail("it ends where a word was expected")
        if tok in ("AND", "OR", "NOT") or tok == ")":
            raise fail(f"{tok!r} where a word was expected")
        if tok == "NEAR" or tok.startswith("NEAR/"):
            raise InvalidInput(f"The {engine} log backend cannot run NEAR queries ({query!r}).",
                               'use a "phrase" or words joined by AND.')
        pos += 1
        if tok == "(":
            tree = or_expr()
            if peek() != ")":
                raise fail("unbalanced parentheses")
            pos += 1
            return tree
        if tok.startswith('"'):
            return ("phrase", tok[1:-1].replace('""', '"'))
        if tok.lower().startswith("message:") and len(tok) > 8:
            tok = tok[8:]
        if tok.endswith("*") and len(tok) > 1:
            core = tok[:-1]
            return ("prefix", core) if WORD.match(core) else ("phrase", core)
        return ("word", tok) if WORD.match(tok) else ("phrase", tok)

    def not_expr() -> Tree:
        nonlocal pos
        tree = unary()
        while peek() == "NOT":
            pos += 1
            tree = ("not", tree, unary())
        return tree

    def and_expr() -> Tree:
        nonlocal pos
        parts = [not_expr()]
        while peek() not in (None, ")", "OR"):
            if peek() == "AND":
                pos += 1
            parts.append(not_expr())
        return parts[0] if len(parts) == 1 else ("and", parts)

    def or_expr() -> Tree:
        nonlocal pos
        parts = [and_expr()]
        while peek() == "OR":
            pos += 1
            parts.append(and_expr())
        return parts[0] if len(parts) == 1 else ("or", parts)

    tree = or_expr()
    if pos != len(tokens):
        raise fail("unbalanced parentheses" if tokens[pos] == ")" else f"unexpected {tokens[pos]!r}")
    return tree, pos


def parse(query: str, *, engine: str = "selected") -> Tree:
    """The tree of a full-text query (NOT binds tightest, then AND — also implicit —, then OR).

    A bare word with punctuation (``orders-db.cluster``) becomes a phrase, as the embedded
    store treats it; ``message:word`` is ``word``.

    Raises:
        InvalidInput: unbalanced quotes or parentheses, a dangling operator, no words, or
            NEAR (which only the embedded store runs; ``engine`` names the backend).
    """
    text = query.strip()
    if text.count('"') % 2:
        raise InvalidInput(f"Cannot parse the full-text query {query!r}: unbalanced quotes.", FTS_EXAMPLES)
    tokens = _TOKEN.findall(text)
    if not tokens:
        raise InvalidInput(f"The full-text query {query!r} has no words.", FTS_EXAMPLES)
    return _parse(tokens, query, engine)[0]


def words(text: str) -> list[str]:
    """``text`` as the embedded store's tokenizer sees it: case-folded runs of letters and
    digits, diacritics removed (unicode61's default)."""
    folded = unicodedata.normalize("NFKD", text.casefold())
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    return [w for w in _WORDS.findall(folded) if not w.startswith("_")]


def raw_words(text: str) -> list[str]:
    """``text``'s words as written (no case or diacritic folding), for engines that match
    them with a case-insensitive regular expression."""
    return [w for w in _WORDS.findall(text) if not w.startswith("_")]


def matches(tree: Tree, message: str) -> bool:
    """Whether ``message`` matches ``tree`` with the embedded store's semantics: a word
    equals one of its words, a prefix starts one, a phrase's words appear in a row."""
    toks = words(message)

    def ev(node: Tree) -> bool:
        kind = node[0]
        if kind == "word":
            wanted = words(node[1])
            return _has_run(toks, wanted) if len(wanted) != 1 else wanted[0] in toks
        if kind == "prefix":
            head = words(node[1])
            if not head:
                return False
            *exact, last = head
            return any(toks[i:i + len(exact)] == exact and toks[i + len(exact)].startswith(last)
                       for i in range(len(toks) - len(exact)))
        if kind == "phrase":
            return _has_run(toks, words(node[1]))
        if kind == "not":
            return ev(node[1]) and not ev(node[2])
        if kind == "and":
            return all(ev(n) for n in node[1])
        return any(ev(n) for n in node[1])

    return ev(tree)


def _has_run(toks: list[str], wanted: list[str]) -> bool:
    if not wanted:
        return False
    n = len(wanted)
    return any(toks[i:i + n] == wanted for i in range(len(toks) - n + 1))


def phrase_words(tree: Tree) -> list[str]:
    """The words of a ``word``/``phrase``/``prefix`` node as the tokenizer splits them."""
    return words(tree[1])
