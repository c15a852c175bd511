"""A stand-in for Loki: a real loopback HTTP server answering Loki's documented API shapes.

No Loki server installs on this machine (Debian's ``loki`` is a genetics program), so the
Loki backend's behavioural tests run against this: ``POST /loki/api/v1/push`` stores
entries (an identical entry — same stream, time and line — is dropped, as Loki does);
``GET /loki/api/v1/query_range`` and ``/query`` evaluate the LogQL subset opsmcp sends
(stream selectors with = != =~ !~; line filters |= != |~ !~; ``| json name="path", ...``;
``| drop``; label filters = != =~ !~; ``sum [by (label)] (count_over_time(<log query> [Nms]))``)
and answer ``streams`` / ``matrix`` / ``vector`` results with ``stats.summary``;
``/labels``, ``/label/<name>/values`` and ``/ready`` answer as Loki does. A metric query
over lines that failed ``| json`` (``__error__`` left in place) is refused with 400, as
Loki refuses it. Anything outside the subset is a 400 ``parse error`` — so a query opsmcp
builds wrongly fails here too (Grafana's grammar checks the same strings in
tests/test_loki_logql.py).

Times: ``start``/``end``/``time`` in nanoseconds; ``end`` is exclusive for log queries.
Every request is recorded in ``requests`` (method, path, params, headers) for pinning.
Optional ``token`` (bearer) and tenants (``X-Scope-OrgID``: each tenant its own store).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

_STR = r'"(?:[^"\\]|\\.)*"'
_MATCHER = re.compile(rf"\s*([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*({_STR})\s*,?")
_METRIC = re.compile(r"^sum(?: by \((\w+)\))? \(count_over_time\((.*) \[(\d+)ms\]\)\)$", re.S)
_HEX = re.compile(r"\\x\{([0-9a-fA-F]+)\}")


class ParseError(ValueError):
    pass


def _unquote(lit: str) -> str:
    return str(json.loads(lit))


def _re(pattern: str) -> re.Pattern[str]:
    """An RE2 pattern (as opsmcp writes them) as a Python one: ``\\x{HEX}`` → the character."""
    return re.compile(_HEX.sub(lambda m: re.escape(chr(int(m.group(1), 16))), pattern))


def _match(op: str, have: str | None, want: str) -> bool:
    v = have or ""
    if op == "=":
        return v == want
    if op == "!=":
        return v != want
    hit = _re(want).fullmatch(v) is not None
    return hit if op == "=~" else not hit


def parse_log_query(text: str) -> tuple[list[tuple[str, str, str]], list[tuple[Any, ...]]]:
    """(stream matchers, stages) of a log query; raises ParseError outside the subset."""
    text = text.strip()
    if not text.startswith("{"):
        raise ParseError("a log query starts with a stream selector")
    i = 0
    in_str = False
    while i < len(text):
        c = text[i]
        if in_str:
            if c == "\\":
                i += 1
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
        elif c == "}":
            break
        i += 1
    body, rest = text[1:i], text[i + 1:]
    matchers = []
    pos = 0
    while pos < len(body.strip()):
        m = _MATCHER.match(body, pos)
        if not m:
            raise ParseError(f"bad selector {body!r}")
        matchers.append((m.group(1), m.group(2), _unquote(m.group(3))))
        pos = m.end()
    if not matchers:
        raise ParseError("empty selector")
    stages: list[tuple[Any, ...]] = []
    rest = rest.strip()
    line_filter = re.compile(rf"^(\|=|!=|\|~|!~)\s*({_STR})\s*")
    while rest:
        m = line_filter.match(rest)
        if m:
            stages.append(("line", m.group(1), _unquote(m.group(2))))
            rest = rest[m.end():]
            continue
        if not rest.startswith("|"):
            raise ParseError(f"unexpected {rest[:30]!r}")
        rest = rest[1:].lstrip()
        m = re.match(rf"^json((?:\s+\w+\s*=\s*{_STR}\s*,?)*)\s*", rest)
        if m and rest.startswith("json"):
            params = [(n, _unquote(v)) for n, v in re.findall(rf"(\w+)\s*=\s*({_STR})", m.group(1))]
            stages.append(("json", params))
            rest = rest[m.end():]
            continue
        m = re.match(r"^drop\s+([\w\s,]+?)\s*(?=\||$)", rest)
        if m:
            stages.append(("drop", [x.strip() for x in m.group(1).split(",")]))
            rest = rest[m.end():].lstrip()
            continue
        m = re.match(rf"^(\w+)\s*(=~|!~|!=|=)\s*({_STR})\s*", rest)
        if m:
            stages.append(("label", m.group(1), m.group(2), _unquote(m.group(3))))
            rest = rest[m.end():]
            continue
        raise ParseError(f"unsupported stage {rest[:40]!r}")
    return matchers, stages


def _dig(doc: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc


def run_pipeline(stages: list[tuple[Any, ...]], labels: dict[str, str], line: str) -> dict[str, str] | None:
    """The entry's labels after the pipeline, or None when a stage drops it."""
    out = dict(labels)
    for st in stages:
        if st[0] == "line":
            op, arg = st[1], st[2]
            ok = (arg in line) if op in ("|=", "!=") else (_re(arg).search(line) is not None)
            if ok != (op in ("|=", "|~")):
                return None
        elif st[0] == "json":
            try:
                doc = json.loads(line)
                if not isinstance(doc, dict):
                    raise ValueError
            except ValueError:
                out["__error__"] = "JSONParserErr"
                continue
            for name, path in st[1]:
                v = _dig(doc, path)
                if v is not None and not isinstance(v, (dict, list)):
                    out[name] = str(v)
        elif st[0] == "drop":
            for name in st[1]:
                out.pop(name, None)
        elif not _match(st[2], out.get(st[1]), st[3]):
            return None
    return out


class Store:
    """Entries per tenant: ``(labels, ns, line)``, deduplicated."""

    def __init__(self) -> None:
        self.entries: dict[str, list[tuple[dict[str, str], int, str]]] = {}
        self.keys: dict[str, set[tuple[Any, ...]]] = {}
        self.lock = threading.Lock()

    def push(self, tenant: str, body: dict[str, Any]) -> None:
        with self.lock:
            entries = self.entries.setdefault(tenant, [])
            keys = self.keys.setdefault(tenant, set())
            for stream in body.get("streams", []):
                labels = {str(k): str(v) for k, v in stream["stream"].items()}
                for ts, line, *_ in stream["values"]:
                    key = (tuple(sorted(labels.items())), int(ts), line)
                    if key not in keys:
                        keys.add(key)
                        entries.append((labels, int(ts), str(line)))

    def select(self, tenant: str, matchers: list[tuple[str, str, str]], stages: list[tuple[Any, ...]], lo: int,
               hi: int, stats: dict[str, int]) -> Iterator[tuple[dict[str, str], int, str]]:
        """Entries with lo <= ns < hi passing the selector and pipeline (labels after it)."""
        with self.lock:
            entries = list(self.entries.get(tenant, []))
        for labels, ns, line in entries:
            if not (lo <= ns < hi) or not all(_match(op, labels.get(n), v) for n, op, v in matchers):
                continue
            stats["bytes"] += len(line.encode())
            stats["lines"] += 1
            out = run_pipeline(stages, labels, line)
            if out is not None:
                yield out, ns, line


class LokiStandIn:
    """The server: ``url`` once started; ``requests`` recorded; ``store`` shared."""

    def __init__(self, token: str | None = None) -> None:
        self.store = Store()
        self.requests: list[dict[str, Any]] = []
        self.token = token
        self.fail_next: tuple[int, str] | None = None
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: Any, ctype: str = "application/json") -> None:
                data = body if isinstance(body, bytes) else (json.dumps(body) if ctype == "application/json"
                                                             else str(body)).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method: str) -> None:
                parts = urlsplit(self.path)
                params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                standin.requests.append({"method": method, "path": parts.path, "params": params,
                                         "headers": dict(self.headers.items()), "body": raw})
                if standin.fail_next is not None:
                    status, text = standin.fail_next
                    standin.fail_next = None
                    return self._send(status, text, "text/plain")
                if standin.token and self.headers.get("Authorization") != f"Bearer {standin.token}":
                    return self._send(401, "no org id or bad token\n", "text/plain")
                tenant = self.headers.get("X-Scope-OrgID") or "fake"
                try:
                    status, body = standin.route(method, unquote(parts.path), params, raw, tenant)
                except ParseError as exc:
                    status, body = 400, f"parse error : {exc}"
                if isinstance(body, str):
                    return self._send(status, body, "text/plain")
                return self._send(status, body)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="loki-standin")

    def start(self) -> LokiStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ---------------------------------------------------------------- API

    def route(self, method: str, path: str, params: dict[str, str], raw: bytes, tenant: str) -> tuple[int, Any]:
        if path == "/ready":
            return 200, "ready\n"
        if path == "/loki/api/v1/push" and method == "POST":
            self.store.push(tenant, json.loads(raw))
            return 204, b""
        if path == "/loki/api/v1/labels":
            names = sorted({k for labels, _, _ in self.store.entries.get(tenant, []) for k in labels})
            return 200, {"status": "success", "data": names}
        m = re.match(r"^/loki/api/v1/label/([^/]+)/values$", path)
        if m:
            vals = sorted({labels[m.group(1)] for labels, _, _ in self.store.entries.get(tenant, [])
                           if m.group(1) in labels})
            return 200, {"status": "success", "data": vals}
        if path == "/loki/api/v1/query_range":
            return self.query_range(params, tenant)
        if path == "/loki/api/v1/query":
            return self.instant(params, tenant)
        return 404, "404 page not found\n"

    @staticmethod
    def _summary(stats: dict[str, int]) -> dict[str, Any]:
        return {"summary": {"totalBytesProcessed": stats["bytes"], "totalLinesProcessed": stats["lines"],
                            "execTime": 0.001}}

    def _count(self, tenant: str, metric: re.Match[str], t_end: int, stats: dict[str, int]) -> dict[str, int]:
        by, inner, range_ms = metric.group(1), metric.group(2), int(metric.group(3))
        matchers, stages = parse_log_query(inner)
        out: dict[str, int] = {}
        for labels, _, _ in self.store.select(tenant, matchers, stages, t_end - range_ms * 1_000_000 + 1, t_end + 1,
                                              stats):
            if "__error__" in labels:
                raise _PipelineError()
            key = labels.get(by, "") if by else ""
            out[key] = out.get(key, 0) + 1
        return out

    def instant(self, params: dict[str, str], tenant: str) -> tuple[int, Any]:
        metric = _METRIC.match(params["query"])
        if metric is None:
            raise ParseError("instant queries take sum(count_over_time(...)) here")
        t = int(params["time"])
        stats = {"bytes": 0, "lines": 0}
        try:
            counts = self._count(tenant, metric, t, stats)
        except _PipelineError:
            return 400, "pipeline error: 'JSONParserErr' for series"
        by = metric.group(1)
        result = [{"metric": {by: k} if by else {}, "value": [round(t / 1e9, 3), str(n)]} for k, n in counts.items()]
        return 200, {"status": "success", "data": {"resultType": "vector", "result": result,
                                                   "stats": self._summary(stats)}}

    def query_range(self, params: dict[str, str], tenant: str) -> tuple[int, Any]:
        query = params["query"]
        lo, hi = int(params["start"]), int(params["end"])
        stats = {"bytes": 0, "lines": 0}
        metric = _METRIC.match(query)
        if metric is not None:
            step = round(float(params["step"]) * 1e9)
            series: dict[str, list[list[Any]]] = {}
            t = lo
            try:
                while t <= hi:
                    for k, n in self._count(tenant, metric, t, stats).items():
                        series.setdefault(k, []).append([round(t / 1e9, 3), str(n)])
                    t += step
            except _PipelineError:
                return 400, "pipeline error: 'JSONParserErr' for series"
            by = metric.group(1)
            result = [{"metric": {by: k} if by else {}, "values": v} for k, v in series.items()]
            return 200, {"status": "success", "data": {"resultType": "matrix", "result": result,
                                                       "stats": self._summary(stats)}}
        matchers, stages = parse_log_query(query)
        forward = params.get("direction", "backward") == "forward"
        rows = sorted(self.store.select(tenant, matchers, stages, lo, hi, stats), key=lambda r: r[1],
                      reverse=not forward)[: int(params.get("limit", "100"))]
        streams: dict[tuple[tuple[str, str], ...], list[list[str]]] = {}
        for labels, ns, line in rows:
            streams.setdefault(tuple(sorted(labels.items())), []).append([str(ns), line])
        result = [{"stream": dict(k), "values": v} for k, v in streams.items()]
        return 200, {"status": "success", "data": {"resultType": "streams", "result": result,
                                                   "stats": self._summary(stats)}}


class _PipelineError(Exception):
    pass


@contextmanager
def running(token: str | None = None) -> Iterator[LokiStandIn]:
    """A started stand-in, stopped afterwards."""
    server = LokiStandIn(token).start()
    try:
        yield server
    finally:
        server.stop()
