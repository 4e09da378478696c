"""A scripted HTTP/1.1 origin for edgecache's integration tests.

Run as a program, it serves on an ephemeral loopback port and prints
"PORT <n>" on its first stdout line. It runs in its own process so that its
pacing is not disturbed by the test's client threads.

Objects:  GET|HEAD /obj/<name>?size=N[&seed=S][&knob=...]
  The body is object_bytes(name, seed, N): deterministic bytes that the
  tests compute themselves (import this module) to know the expected
  SHA-256 without downloading from the origin.
  Knobs (all in the query, so all part of edgecache's cache key):
    rate=<bytes/s>   throttle the body (chunks paced against a clock)
    delay=<seconds>  sleep before the status line
    status=<code>    answer that status with a short text body
    ctype=<type>     Content-Type (none is sent without it)
    lm=<epoch>       Last-Modified
    range=1          honour a single "bytes=" Range header (ignored otherwise)
  Unknown query parameters (SAS tokens, X-Amz-*) are ignored.

Control (never counted):
  GET  /_stats  JSON: counts (path+query as received -> n), by_path
                (path alone -> n), total, requests (one record per request:
                method, target, path, range, start, end, sent, status,
                complete; times are time.monotonic(), which on Linux is the
                system-wide CLOCK_MONOTONIC, comparable with the tests')
  POST /_reset  forget every count and record
"""

import email.utils
import functools
import hashlib
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

CHUNK_MAX = 256 * 1024


@functools.lru_cache(maxsize=4)
def object_bytes(name, seed, size):
    """The body of /obj/<name>?size=<size>&seed=<seed>: SHAKE-256 output of
    the name and seed, so every offset holds distinct bytes (a range served
    from the wrong offset cannot match by accident)."""
    xof = hashlib.shake_256(("%s\0%s" % (name, seed)).encode())
    return xof.digest(int(size)) if int(size) > 0 else b""


@functools.lru_cache(maxsize=16)
def object_sha256(name, seed, size):
    """Hex SHA-256 of object_bytes(name, seed, size)."""
    return hashlib.sha256(object_bytes(name, seed, size)).hexdigest()


class Ledger:
    """What the origin was asked: counts and per-request records."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with self.lock:
            self.counts = {}
            self.by_path = {}
            self.records = []

    def open(self, method, target, range_header):
        path = urlsplit(target).path
        rec = {"method": method, "target": target, "path": path,
               "range": range_header, "start": time.monotonic(), "end": None,
               "sent": 0, "status": None, "complete": False}
        with self.lock:
            self.counts[target] = self.counts.get(target, 0) + 1
            self.by_path[path] = self.by_path.get(path, 0) + 1
            self.records.append(rec)
        return rec

    def update(self, rec, **fields):
        with self.lock:
            rec.update(fields)

    def snapshot(self):
        with self.lock:
            return {"counts": dict(self.counts), "by_path": dict(self.by_path),
                    "total": len(self.records),
                    "requests": [dict(r) for r in self.records]}


def parse_single_range(header, total):
    """(first, last) for a single satisfiable "bytes=" range, else None."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first_s, _, last_s = header[6:].strip().partition("-")
    try:
        if first_s == "":
            n = int(last_s)
            if n <= 0:
                return None
            return max(0, total - n), total - 1
        first = int(first_s)
        last = int(last_s) if last_s else total - 1
    except ValueError:
        return None
    if first >= total or last < first:
        return None
    return first, min(last, total - 1)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "scripted-origin/1"

    def log_message(self, fmt, *args):
        sys.stderr.write("origin: %s\n" % (fmt % args))

    def do_GET(self):
        self.route(send_body=True)

    def do_HEAD(self):
        self.route(send_body=False)

    def do_POST(self):
        if self.path.startswith("/_reset"):
            self.server.ledger.reset()
            self.reply_text(200, "reset\n")
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.server.ledger.open("POST", self.path, None)
        self.reply_text(200, "posted\n")

    def route(self, send_body):
        if self.path.startswith("/_stats"):
            self.reply_json(self.server.ledger.snapshot())
            return
        rec = self.server.ledger.open(self.command, self.path,
                                      self.headers.get("Range"))
        try:
            self.serve_object(rec, send_body)
        except (BrokenPipeError, ConnectionResetError, TimeoutError) as e:
            self.log_message("client went away: %r", e)
            self.close_connection = True
        finally:
            self.server.ledger.update(rec, end=time.monotonic())

    def serve_object(self, rec, send_body):
        url = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        if float(q.get("delay", 0)) > 0:
            time.sleep(float(q["delay"]))
        if not url.path.startswith("/obj/") or "size" not in q:
            self.finish_text(rec, 404, "no such object\n", send_body)
            return
        if "status" in q:
            self.finish_text(rec, int(q["status"]), "status %s\n" % q["status"], send_body)
            return
        body = object_bytes(url.path[5:], q.get("seed", "0"), int(q["size"]))
        self.send_object(rec, q, body, send_body)

    def send_object(self, rec, q, body, send_body):
        total = len(body)
        span = None
        if q.get("range") == "1":
            span = parse_single_range(self.headers.get("Range"), total)
        status = 206 if span else 200
        first, last = span if span else (0, total - 1)
        self.send_response(status)
        if "ctype" in q:
            self.send_header("Content-Type", q["ctype"])
        if "lm" in q:
            self.send_header("Last-Modified",
                             email.utils.formatdate(int(q["lm"]), usegmt=True))
        if q.get("range") == "1":
            self.send_header("Accept-Ranges", "bytes")
        if span:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (first, last, total))
        self.send_header("Content-Length", str(last - first + 1 if total else 0))
        self.end_headers()
        self.server.ledger.update(rec, status=status)
        view = memoryview(body)[first:last + 1] if send_body else memoryview(b"")
        self.write_paced(rec, view, float(q.get("rate", 0)))
        self.server.ledger.update(rec, complete=True)

    def write_paced(self, rec, view, rate):
        """Writes view; with rate > 0, never ahead of rate bytes/s since the
        first byte."""
        chunk = CHUNK_MAX if rate <= 0 else int(max(4096, min(CHUNK_MAX, rate / 20)))
        t0 = time.monotonic()
        sent = 0
        while sent < len(view):
            if rate > 0:
                ahead = t0 + sent / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            n = min(chunk, len(view) - sent)
            self.wfile.write(view[sent:sent + n])
            sent += n
            self.server.ledger.update(rec, sent=sent)

    def finish_text(self, rec, status, text, send_body):
        self.server.ledger.update(rec, status=status)
        self.reply_text(status, text, send_body)
        self.server.ledger.update(rec, sent=len(text) if send_body else 0,
                                  complete=True)

    def reply_text(self, status, text, send_body=True):
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if send_body:
            self.wfile.write(data)

    def reply_json(self, obj):
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class OriginServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, addr):
        super().__init__(addr, Handler)
        self.ledger = Ledger()


def main():
    server = OriginServer(("127.0.0.1", 0))
    sys.stdout.write("PORT %d\n" % server.server_address[1])
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
