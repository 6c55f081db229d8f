#!/usr/bin/env python3
"""A ClickHouse HTTP interface in front of chDB (ClickHouse's engine in-process), for tests.

chDB has no server of its own, so this answers enough of ClickHouse's HTTP interface for the `clickhouse`
Rust crate, which lets the analytics tests run their SQL on a current ClickHouse release. The crate, as
core/src/analytics/clickhouse.rs sets it up (validation off, its default LZ4 compression), sends
`SELECT ...` in the body with `default_format=RowBinary`, and `INSERT INTO t(cols) FORMAT RowBinary` in the
URL with `decompress=1` and LZ4-framed rows in the body; every URL carries `database=`.

  GET/POST /?query=...   the query in the URL, in the body, or both (the URL's, a line break, then the body, as
                         ClickHouse joins them). An INSERT's data follows its FORMAT clause, in any format the
                         engine reads (RowBinary, RowBinaryWithNamesAndTypes, CSV, ...).
  database=              applied with USE.     default_format=   the output format when the query names none
                         (TabSeparated otherwise).     param_<name>=   query parameters ({name:Type}).
  decompress=1           the body is in ClickHouse's native compressed framing (LZ4 or none), as the crate
                         sends inserts by default. Checksums are not verified: this is a test tool on loopback.
  other settings         applied with SET before the query.
  GET /ping, GET /       `Ok.`
  errors                 HTTP 500, the body `Code: N. DB::Exception: ...` and the header
                         X-ClickHouse-Exception-Code: N, as ClickHouse answers them.

Responses are never compressed (ClickHouse's own default: enable_http_compression=0), whatever the client's
Accept-Encoding; `compress=1` (ClickHouse's native response framing) is refused.

Every request gets a chDB connection of its own, so a USE or SET never leaks into the next request; one more
connection stays open for the server's lifetime to keep the embedded engine up (a connection is ~2 ms then,
~50 ms without it). Requests run one at a time. Databases and tables live in the data directory.

Usage: chdb-shim.py --data=DIR [--port=18124] [--host=127.0.0.1] [--quiet]
"""

import argparse
import re
import signal
import struct
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import chdb
from chdb import _chdb

# Parameters of the HTTP interface itself, not settings to SET.
HTTP_PARAMS = {
    "query", "database", "default_format", "decompress", "compress", "query_id", "session_id", "session_timeout",
    "session_check", "user", "password", "quota_key", "buffer_size", "wait_end_of_query", "role", "stacktrace",
}
ERROR_CODE = re.compile(r"Code: (\d+)\.")

LOCK = threading.Lock()
QUIET = False


class ClickHouseError(Exception):
    """An error answered in ClickHouse's words: `Code: N. DB::Exception: ...`."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


def clickhouse_error(e):
    """A chDB exception as ClickHouse's HTTP interface reports it (its message from `Code: N.` on)."""
    text = str(e)
    m = ERROR_CODE.search(text)
    if not m:
        return ClickHouseError(1001, f"Code: 1001. DB::Exception: {text}. (STD_EXCEPTION)")
    return ClickHouseError(int(m.group(1)), text[m.start():])


def bad_request(message):
    return ClickHouseError(36, f"Code: 36. DB::Exception: {message}. (BAD_ARGUMENTS)")


def quote_ident(name):
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def quote_value(value):
    if re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def decompress_native(data):
    """ClickHouse's native compressed framing: blocks of checksum (16), method (1), compressed size incl. the
    9-byte header (4, LE), decompressed size (4, LE), payload."""
    out = bytearray()
    pos = 0
    while pos < len(data):
        if len(data) - pos < 25:
            raise bad_request("truncated compressed block")
        method, size, raw_size = struct.unpack_from("<BII", data, pos + 16)
        payload = data[pos + 25 : pos + 16 + size]
        if len(payload) != size - 9:
            raise bad_request("truncated compressed block")
        if method == 0x82:
            import lz4.block  # only inserts with decompress=1 need it

            out += lz4.block.decompress(payload, uncompressed_size=raw_size)
        elif method == 0x02:
            out += payload
        else:
            raise ClickHouseError(
                89, f"Code: 89. DB::Exception: Unknown compression method: {method:#x}. (UNKNOWN_COMPRESSION_METHOD)"
            )
        pos += 16 + size
    return bytes(out)


def run(path, params, body):
    """Runs one request on a connection of its own; returns (output format, result bytes)."""
    settings = {k: v for k, v in params.items() if k not in HTTP_PARAMS and not k.startswith("param_")}
    query_params = {k[len("param_") :]: v for k, v in params.items() if k.startswith("param_")}
    if params.get("compress") == "1":
        raise bad_request("compress=1 (native response compression) is not supported by this test server")
    if params.get("decompress") == "1":
        body = decompress_native(body)
    url_query = params.get("query", "").encode("utf-8")
    # As ClickHouse: the query is the URL's `query`, a line break, then the body. The engine itself reads an
    # INSERT's data from after its FORMAT clause, in bytes (chDB's streaming insert would lose the errors of
    # rows it refuses, e.g. a value too long for a FixedString).
    sql = url_query + b"\n" + body if url_query and body else url_query or body
    if not sql.strip():
        raise ClickHouseError(62, "Code: 62. DB::Exception: Empty query. (SYNTAX_ERROR)")
    fmt = params.get("default_format") or "TabSeparated"
    with LOCK:
        conn = _chdb.connect(path)
        try:
            conn.query(f"USE {quote_ident(params.get('database') or 'default')}", "TabSeparated")
            for name, value in settings.items():
                if not re.fullmatch(r"[A-Za-z0-9_]+", name):
                    raise bad_request(f"invalid setting name {name!r}")
                conn.query(f"SET {name} = {quote_value(value)}", "TabSeparated")
            result = conn.query(sql, fmt, params=query_params)
            return fmt, bytes(result.bytes())
        finally:
            conn.close()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "chdb-shim"
    path_of_data = ""

    def log_request(self, code="-", size="-"):
        pass  # each request is logged once, with its query, by handle_request

    def log_message(self, fmt, *args):
        sys.stderr.write(f"{self.log_date_time_string()} {fmt % args}\n")

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def reply(self, status, body, headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def handle_request(self):
        started = time.monotonic()
        url = urllib.parse.urlsplit(self.path)
        body = self.read_body()
        params = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        if url.path in ("/ping", "/") and not body and "query" not in params:
            self.reply(200, b"Ok.\n", [("Content-Type", "text/plain; charset=UTF-8")])
            return
        if url.path != "/":
            self.reply(404, f"There is no handle {url.path}\n".encode(), [("Content-Type", "text/plain")])
            return
        try:
            fmt, result = run(self.path_of_data, params, body)
            self.reply(200, result, [("Content-Type", "application/octet-stream"), ("X-ClickHouse-Format", fmt)])
            outcome = "ok"
        except Exception as e:  # every failure is reported to the client, in ClickHouse's words
            err = e if isinstance(e, ClickHouseError) else clickhouse_error(e)
            self.reply(
                500,
                (str(err) + "\n").encode(),
                [("Content-Type", "text/plain; charset=UTF-8"), ("X-ClickHouse-Exception-Code", str(err.code))],
            )
            outcome = str(err).split("\n")[0][:200]
        if not QUIET:
            shown = {k: v for k, v in params.items() if k != "query"}
            query = params.get("query") or body[:300].decode("utf-8", "replace")
            sys.stderr.write(
                f"[{(time.monotonic() - started) * 1000:7.1f} ms] {outcome}: {shown} body={len(body)}B"
                f" {' '.join(query.split())[:300]!r}\n"
            )

    def do_GET(self):
        self.handle_request()

    def do_POST(self):
        self.handle_request()


def main():
    global QUIET
    ap = argparse.ArgumentParser(description="ClickHouse's HTTP interface in front of chDB, for tests.")
    ap.add_argument("--data", required=True, help="directory holding the databases (kept across requests)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=18124)
    ap.add_argument("--quiet", action="store_true", help="do not log each request to stderr")
    args = ap.parse_args()
    QUIET = args.quiet

    # Keeps the embedded engine up between requests.
    anchor = _chdb.connect(args.data)
    version = bytes(anchor.query("SELECT version()", "TabSeparated").bytes()).decode().strip()
    Handler.path_of_data = args.data
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(f"chdb-shim: chDB {chdb.__version__} (ClickHouse {version}) on http://{args.host}:{args.port}, "
          f"data in {args.data}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        with LOCK:
            anchor.close()
        print("chdb-shim: stopped", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
