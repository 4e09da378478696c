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

  Integrity knobs. The digest headers always describe the TRUE bytes of the
  object (what object_bytes() returns), so with corrupt= they disagree with
  the bytes served, and without it they are correct:
    corrupt=<offset> serve the object with the byte at offset flipped
                     (Content-Length unchanged)
    repr=1           Repr-Digest: sha-256=:<base64 sha256>:
    digest=1         Digest: SHA-256=<base64 sha256>
    md5=1            Content-MD5: <base64 md5> (not sent on a 206)
    msmd5=1          x-ms-blob-content-md5: <base64 md5 of the whole object>

  Fault knobs. Each object (path+query as received) has a counter of its
  GET requests, 0-based; HEAD requests are not counted:
    short=<n>        send the full Content-Length but only n body bytes,
                     then close the connection cleanly
    stall=<n>        send the headers and n body bytes, then send nothing,
                     holding the connection open until the client goes
                     away or 60 s pass
    faults=<k>       corrupt=, short= and stall= apply to the first k GET
                     requests only (default: to every request), so one URL
                     can answer badly first and well later
    reset=<p0>,<p1>,...
                     GET number i resets the TCP connection (SO_LINGER 0,
                     close: an RST) once the body has reached pi percent of
                     the whole object (an offset in the object, so on a
                     request for "bytes=N-" the cut is at the same place; at
                     once after the headers when N is past it). The bytes
                     sent before the cut are drained to the peer first, so
                     it holds exactly that prefix. GETs beyond the list are
                     served fully.
    norange=1        ignore Range and If-Range: always 200 with the whole body
    changed=1        (with reset=) once a request has been reset, the object
                     is a new version: object_bytes(name, changed_seed(seed),
                     size) with its own ETag and Last-Modified; If-Range
                     with the old validator then gets 200 and the new body
    noetag=1         send no ETag (Last-Modified remains the only validator)
    etag=1           send validators on an object without fault knobs
    chunked=1        Transfer-Encoding: chunked, no Content-Length
    endwait=<s>      (with chunked=1) wait s seconds between the last body
                     byte and the terminating chunk: the body's end comes
                     well after its last byte
  An object with short=, stall=, reset= or changed= (or etag=1) sends a
  strong ETag (the quoted sha256 hex of its current version) and a
  Last-Modified (lm=, default 1700000000; one day later once changed), and
  honours Range as with range=1, and If-Range: a Range whose If-Range names
  another ETag or date is ignored (200, whole body). norange=1 wins.

Scripts:  GET|HEAD /s/<name> (any path registered with POST /_script)
  POST /_script with a JSON body {"path": "/s/<name>", "responses": [R0, ...]}
  registers (or replaces, with its counter back at 0) the script of that
  path; the query is ignored when matching. Request number i to the path
  since it was registered (any method, 0-based) is answered with R[i], the
  last one repeating. Each R is an object:
    status         int, default 200 (a 3xx is a status with a Location in
                   headers)
    reason         the reason phrase (default: the standard one)
    headers        [[name, value], ...] sent in that order, exactly as given
                   (repeated names allowed)
    body | body_b64 | gzip
                   the body: UTF-8 text, base64 bytes, or text the origin
                   compresses (gzip.compress, mtime=0; adds Content-Encoding:
                   gzip unless headers name one)
    delay          seconds before the status line
    reset          true: reset the connection (SO_LINGER 0, an RST) right
                   after reading the request, before any response byte
    content_length default true: Content-Length of the body unless headers
                   give one; false: no Content-Length, the body ends when
                   the connection closes
    chunked        true: Transfer-Encoding: chunked framing
    date           default true: a Date (now) unless headers give one
    etag           an entity tag ("\"v1\""): adds ETag; a request whose
                   If-None-Match lists it (weak comparison) or * gets 304
                   Not Modified with headers_304 (default: just the ETag,
                   else the Last-Modified) and no body
    last_modified  epoch: adds Last-Modified; If-Modified-Since at or after
                   it gets 304 likewise (only when there is no If-None-Match)
    headers_304    the 304's header list
    select         {"header": H, "cases": {value: R, ...}, "default": R}:
                   the R used is chosen by the exact (stripped) value of
                   request header H, else default (else this R without
                   select): how a Vary origin is scripted
  Unknown keys are refused (400) so that a typo in a test shows. Every
  request to a scripted path is recorded in the ledger like any other, with
  its request headers and the status answered; index is R's number.

Bodies (PUT, POST, PATCH, DELETE, PROPFIND, PURGEX to any path) are taken
  and answered 201 with JSON {"received", "sha256"}; ?status=N answers N,
  ?location=<url> adds Location, ?content_location=<url> Content-Location.

Control (never counted):
  GET  /_stats  JSON: counts (path+query as received -> n), by_path
                (path alone -> n), total, requests (one record per request:
                method, target, path, range, if_range, index (the GET
                number of the object, None for HEAD), version (0, or 1
                once changed), fault (None, "reset", "short" or "stall"),
                start, end, sent, status, complete, headers (the request's
                [name, value] pairs as received); times are
                time.monotonic(), which on Linux is the system-wide
                CLOCK_MONOTONIC, comparable with the tests')
  POST /_reset  forget every count, record, per-object counter and script
  POST /_script register a script (above)
"""

import base64
import email.utils
import fcntl
import functools
import gzip
import hashlib
import http
import json
import select
import socket
import struct
import sys
import termios
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

CHUNK_MAX = 256 * 1024
DEFAULT_LM = 1700000000
CHANGED_LM_SHIFT = 86400
STALL_MAX_S = 60.0
DRAIN_MAX_S = 2.0
VALIDATOR_KNOBS = ("short", "stall", "reset", "changed", "etag")


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


def changed_seed(seed):
    """The seed of an object's second version (changed=1)."""
    return "%s.changed" % seed


def corrupted(body, offset):
    """body with the byte at offset flipped (every bit)."""
    out = bytearray(body)
    out[int(offset)] ^= 0xFF
    return bytes(out)


def b64(raw):
    return base64.b64encode(raw).decode()


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

    def open(self, method, target, range_header, if_range=None, headers=None):
        path = urlsplit(target).path
        rec = {"method": method, "target": target, "path": path,
               "range": range_header, "if_range": if_range, "index": None,
               "version": 0, "fault": None,
               "start": time.monotonic(), "end": None,
               "sent": 0, "status": None, "complete": False,
               "headers": [list(h) for h in (headers or [])]}
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


class ObjectStates:
    """Per object (path+query as received): how many GETs it has had and
    whether it has changed to its second version."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with self.lock:
            self.gets = {}
            self.changed = set()

    def begin_get(self, target):
        """(this GET's 0-based number, version now)."""
        with self.lock:
            index = self.gets.get(target, 0)
            self.gets[target] = index + 1
            return index, int(target in self.changed)

    def version(self, target):
        with self.lock:
            return int(target in self.changed)

    def change(self, target):
        with self.lock:
            self.changed.add(target)


SCRIPT_KEYS = {"status", "reason", "headers", "body", "body_b64", "gzip", "delay", "reset",
               "content_length", "chunked", "date", "etag", "last_modified", "headers_304",
               "select"}


def check_response(r, where="R"):
    """Raises ValueError when a scripted response is malformed."""
    if not isinstance(r, dict):
        raise ValueError("%s is not an object" % where)
    unknown = set(r) - SCRIPT_KEYS
    if unknown:
        raise ValueError("%s has unknown keys %s" % (where, sorted(unknown)))
    if sum(k in r for k in ("body", "body_b64", "gzip")) > 1:
        raise ValueError("%s has more than one of body, body_b64, gzip" % where)
    for key in ("headers", "headers_304"):
        for h in r.get(key, []):
            if not (isinstance(h, list) and len(h) == 2 and all(isinstance(x, str) for x in h)):
                raise ValueError("%s.%s holds %r, not a [name, value] pair" % (where, key, h))
    sel = r.get("select")
    if sel is not None:
        if not isinstance(sel, dict) or "header" not in sel:
            raise ValueError("%s.select needs a header" % where)
        for value, sub in sel.get("cases", {}).items():
            check_response(sub, "%s.select.cases[%r]" % (where, value))
        if sel.get("default") is not None:
            check_response(sel["default"], "%s.select.default" % where)


class Scripts:
    """Scripted paths: path -> their responses and how many requests they
    have had since they were registered."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with self.lock:
            self.scripts = {}

    def register(self, path, responses):
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError("path must start with /: %r" % (path,))
        if not isinstance(responses, list) or not responses:
            raise ValueError("responses must be a non-empty list")
        for i, r in enumerate(responses):
            check_response(r, "R%d" % i)
        with self.lock:
            self.scripts[urlsplit(path).path] = {"responses": responses, "next": 0}

    def take(self, path):
        """(index, response) for the next request to path, counting it; None
        when path has no script."""
        with self.lock:
            script = self.scripts.get(path)
            if script is None:
                return None
            index = script["next"]
            script["next"] = index + 1
            responses = script["responses"]
            return index, responses[min(index, len(responses) - 1)]


def etag_listed(if_none_match, etag):
    """RFC 9110 13.1.2: If-None-Match lists etag (weak comparison) or is *."""
    def opaque(tag):
        tag = tag.strip()
        return tag[2:] if tag.startswith("W/") else tag
    for part in if_none_match.split(","):
        part = part.strip()
        if part == "*" or (part and opaque(part) == opaque(etag)):
            return True
    return False


def has_header(headers, name):
    return any(n.lower() == name.lower() for n, _ in headers)


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


def if_range_matches(value, etag, last_modified):
    """RFC 9110 13.1.5: a strong ETag compares exactly (a weak one never
    matches); a date matches the Last-Modified it names."""
    value = value.strip()
    if value.startswith('"') or value.startswith("W/"):
        return etag is not None and value == etag
    when = email.utils.parsedate_tz(value)
    return (last_modified is not None and when is not None
            and email.utils.mktime_tz(when) == last_modified)


class Plan:
    """How one request for an object is answered: which bytes, which
    headers, and which fault cuts the body."""

    def __init__(self, q, target, index, version):
        self.q = q
        name = urlsplit(target).path[5:]
        seed = q.get("seed", "0")
        if version:
            seed = changed_seed(seed)
        self.true_body = object_bytes(name, seed, int(q["size"]))
        self.version = version
        faulty = index is not None and ("faults" not in q or index < int(q["faults"]))
        self.body = self.true_body
        if faulty and "corrupt" in q:
            self.body = corrupted(self.true_body, q["corrupt"])
        self.short = int(q["short"]) if faulty and "short" in q else None
        self.stall = int(q["stall"]) if faulty and "stall" in q else None
        resets = [float(p) for p in q["reset"].split(",") if p] if "reset" in q else []
        self.reset_pct = resets[index] if index is not None and index < len(resets) else None

    def validators(self):
        """(ETag or None, Last-Modified epoch or None)."""
        q = self.q
        with_validators = any(k in q for k in VALIDATOR_KNOBS)
        lm = int(q["lm"]) if "lm" in q else (DEFAULT_LM if with_validators else None)
        if lm is not None and self.version:
            lm += CHANGED_LM_SHIFT
        etag = None
        if with_validators and q.get("noetag") != "1":
            etag = '"%s"' % hashlib.sha256(self.true_body).hexdigest()
        return etag, lm

    def honours_range(self):
        if self.q.get("norange") == "1":
            return False
        return self.q.get("range") == "1" or any(k in self.q for k in VALIDATOR_KNOBS)

    def span(self, range_header, if_range):
        """(first, last) to answer with 206, or None for 200."""
        if not self.honours_range():
            return None
        if if_range is not None:
            etag, lm = self.validators()
            if not if_range_matches(if_range, etag, lm):
                return None
        return parse_single_range(range_header, len(self.body))

    def digest_headers(self, partial):
        q, true = self.q, self.true_body
        out = []
        if q.get("repr") == "1":
            out.append(("Repr-Digest", "sha-256=:%s:" % b64(hashlib.sha256(true).digest())))
        if q.get("digest") == "1":
            out.append(("Digest", "SHA-256=%s" % b64(hashlib.sha256(true).digest())))
        if q.get("md5") == "1" and not partial:
            out.append(("Content-MD5", b64(hashlib.md5(true).digest())))
        if q.get("msmd5") == "1":
            out.append(("x-ms-blob-content-md5", b64(hashlib.md5(true).digest())))
        return out

    def body_limit(self, first, last):
        """(bytes of [first, last] to send, fault that stops there or None)."""
        n = last - first + 1
        if self.reset_pct is not None:
            cut = int(len(self.body) * self.reset_pct / 100)
            return max(0, min(n, cut - first)), "reset"
        if self.short is not None and self.short < n:
            return self.short, "short"
        if self.stall is not None:
            return min(n, self.stall), "stall"
        return n, None


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
            self.server.objects.reset()
            self.server.scripts.reset()
            self.reply_text(200, "reset\n")
            return
        if urlsplit(self.path).path == "/_script":
            try:
                spec = json.loads(self.read_body())
                self.server.scripts.register(spec.get("path"), spec.get("responses"))
            except (ValueError, AttributeError) as e:
                self.reply_text(400, "bad script: %s\n" % e)
                return
            self.reply_text(200, "scripted\n")
            return
        self.take_body()

    def do_PUT(self):
        self.take_body()

    def do_PROPFIND(self):
        self.take_body()

    def do_PURGEX(self):
        self.take_body()

    def do_MKACTIVITY(self):
        self.take_body()

    def do_PATCH(self):
        self.take_body()

    def do_DELETE(self):
        self.take_body()

    def read_body(self):
        """The request body, by Content-Length or chunked."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def take_body(self):
        """Any method with a body: records its SHA-256 and length (and the
        Via it came with) and answers 201 with them as JSON; ?status=N
        answers N instead."""
        body = self.read_body()
        self.server.scripts.take(urlsplit(self.path).path)     # counts as a request
        rec = self.server.ledger.open(self.command, self.path, None,
                                      headers=self.headers.items())
        digest = hashlib.sha256(body).hexdigest()
        q = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}
        status = int(q.get("status", 201))
        self.server.ledger.update(rec, body_sha256=digest, body_len=len(body),
                                  via=self.headers.get("Via"), status=status,
                                  content_type=self.headers.get("Content-Type"), end=time.monotonic())
        extra = []
        if "location" in q:
            extra.append(("Location", q["location"]))
        if "content_location" in q:
            extra.append(("Content-Location", q["content_location"]))
        self.reply_json({"received": len(body), "sha256": digest}, status, extra)

    def route(self, send_body):
        if self.path.startswith("/_stats"):
            self.reply_json(self.server.ledger.snapshot())
            return
        scripted = self.server.scripts.take(urlsplit(self.path).path)
        rec = self.server.ledger.open(self.command, self.path,
                                      self.headers.get("Range"),
                                      self.headers.get("If-Range"),
                                      headers=self.headers.items())
        try:
            if scripted is not None:
                self.server.ledger.update(rec, index=scripted[0])
                self.serve_script(rec, scripted[1], send_body)
            else:
                self.serve_object(rec, send_body)
        except (BrokenPipeError, ConnectionResetError, TimeoutError) as e:
            self.log_message("client went away: %r", e)
            self.close_connection = True
        finally:
            self.server.ledger.update(rec, end=time.monotonic())

    def choose(self, r):
        """The response a select picks for this request (recursively)."""
        while r.get("select") is not None:
            sel = r["select"]
            value = self.headers.get(sel["header"])
            picked = sel.get("cases", {}).get(value.strip()) if value is not None else None
            if picked is None:
                picked = sel.get("default")
            if picked is None:
                picked = {k: v for k, v in r.items() if k != "select"}
            r = picked
        return r

    def not_modified(self, r):
        """True when the request's validators match R's etag/last_modified."""
        inm = self.headers.get_all("If-None-Match")
        if inm is not None:
            return r.get("etag") is not None and etag_listed(", ".join(inm), r["etag"])
        ims = self.headers.get("If-Modified-Since")
        if r.get("last_modified") is None or ims is None:
            return False
        when = email.utils.parsedate_tz(ims)
        return when is not None and email.utils.mktime_tz(when) >= int(r["last_modified"])

    def serve_script(self, rec, r, send_body):
        """Answers with scripted response r (see the module's docstring)."""
        if int(self.headers.get("Content-Length") or 0) > 0:
            self.rfile.read(int(self.headers["Content-Length"]))
        r = self.choose(r)
        if float(r.get("delay", 0)) > 0:
            time.sleep(float(r["delay"]))
        if r.get("reset"):
            self.server.ledger.update(rec, fault="reset")
            self.close_connection = True
            self.reset_connection()
            return
        if "body_b64" in r:
            body = base64.b64decode(r["body_b64"])
        elif "gzip" in r:
            body = gzip.compress(r["gzip"].encode(), mtime=0)
        else:
            body = r.get("body", "").encode()
        status = int(r.get("status", 200))
        headers = [(n, v) for n, v in r.get("headers", [])]
        if "gzip" in r and not has_header(headers, "Content-Encoding"):
            headers.append(("Content-Encoding", "gzip"))
        lm = r.get("last_modified")
        if r.get("etag") is not None and not has_header(headers, "ETag"):
            headers.append(("ETag", r["etag"]))
        if lm is not None and not has_header(headers, "Last-Modified"):
            headers.append(("Last-Modified", email.utils.formatdate(int(lm), usegmt=True)))
        if self.not_modified(r):
            status, body = 304, b""
            if "headers_304" in r:
                headers = [(n, v) for n, v in r["headers_304"]]
            elif r.get("etag") is not None:
                headers = [("ETag", r["etag"])]
            else:
                headers = [("Last-Modified", email.utils.formatdate(int(lm), usegmt=True))]
        if r.get("date", True) and not has_header(headers, "Date"):
            headers.append(("Date", email.utils.formatdate(time.time(), usegmt=True)))
        bodiless = status in (204, 304) or 100 <= status < 200
        chunked = bool(r.get("chunked")) and not bodiless
        if bodiless:
            body = b""
        elif chunked:
            if not has_header(headers, "Transfer-Encoding"):
                headers.append(("Transfer-Encoding", "chunked"))
        elif r.get("content_length", True):
            if not has_header(headers, "Content-Length"):
                headers.append(("Content-Length", str(len(body))))
        else:
            self.close_connection = True        # the body ends with the connection
        for n, v in headers:
            if n.lower() == "connection" and "close" in v.lower():
                self.close_connection = True
        reason = r.get("reason")
        if reason is None:
            try:
                reason = http.HTTPStatus(status).phrase
            except ValueError:
                reason = "Scripted"
        head = "HTTP/1.1 %d %s\r\n" % (status, reason)
        head += "".join("%s: %s\r\n" % (n, v) for n, v in headers) + "\r\n"
        self.log_request(status)
        self.server.ledger.update(rec, status=status)
        out = head.encode("latin-1")
        if send_body and body:
            out += (b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)) if chunked else body
        elif send_body and chunked:
            out += b"0\r\n\r\n"
        self.wfile.write(out)
        self.server.ledger.update(rec, sent=len(body) if send_body else 0, complete=True)

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
        objects = self.server.objects
        if send_body:
            index, version = objects.begin_get(self.path)
        else:
            index, version = None, objects.version(self.path)
        self.server.ledger.update(rec, index=index, version=version)
        self.send_object(rec, Plan(q, self.path, index, version), send_body)

    def send_object(self, rec, plan, send_body):
        q = plan.q
        total = len(plan.body)
        span = plan.span(self.headers.get("Range"), self.headers.get("If-Range"))
        status = 206 if span else 200
        first, last = span if span else (0, total - 1)
        etag, lm = plan.validators()
        self.send_response(status)
        if "ctype" in q:
            self.send_header("Content-Type", q["ctype"])
        if lm is not None:
            self.send_header("Last-Modified", email.utils.formatdate(lm, usegmt=True))
        if etag is not None:
            self.send_header("ETag", etag)
        if plan.honours_range():
            self.send_header("Accept-Ranges", "bytes")
        if span:
            self.send_header("Content-Range", "bytes %d-%d/%d" % (first, last, total))
        for name, value in plan.digest_headers(partial=bool(span)):
            self.send_header(name, value)
        chunked = q.get("chunked") == "1"
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(last - first + 1 if total else 0))
        self.end_headers()
        self.server.ledger.update(rec, status=status)
        if not send_body:
            self.server.ledger.update(rec, complete=True)
            return
        n, fault = plan.body_limit(first, last) if total else (0, None)
        view = memoryview(plan.body)[first:first + n]
        self.write_paced(rec, view, float(q.get("rate", 0)), chunked)
        if fault is None:
            if chunked:
                time.sleep(float(q.get("endwait", 0)))
                self.wfile.write(b"0\r\n\r\n")
            self.server.ledger.update(rec, complete=True)
            return
        self.server.ledger.update(rec, fault=fault)
        self.close_connection = True
        if fault == "reset":
            if q.get("changed") == "1":
                self.server.objects.change(self.path)
            self.reset_connection()
        elif fault == "stall":
            self.stall_until_gone(STALL_MAX_S)
        # "short": the server closes the connection cleanly (a FIN).

    def write_paced(self, rec, view, rate, chunked=False):
        """Writes view (framed as chunks when chunked); with rate > 0, never
        ahead of rate bytes/s since the first byte."""
        chunk = CHUNK_MAX if rate <= 0 else int(max(4096, min(CHUNK_MAX, rate / 20)))
        t0 = time.monotonic()
        sent = 0
        while sent < len(view):
            if rate > 0:
                ahead = t0 + sent / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            n = min(chunk, len(view) - sent)
            if chunked:
                self.wfile.write(b"%x\r\n" % n + bytes(view[sent:sent + n]) + b"\r\n")
            else:
                self.wfile.write(view[sent:sent + n])
            sent += n
            self.server.ledger.update(rec, sent=sent)

    def wait_drained(self, timeout):
        """Waits until the peer has acknowledged every byte written (the
        send queue is empty), so a reset cuts at a known offset."""
        fd = self.connection.fileno()
        buf = bytearray(4)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            fcntl.ioctl(fd, termios.TIOCOUTQ, buf)
            if struct.unpack("i", buf)[0] == 0:
                return True
            time.sleep(0.005)
        return False

    def reset_connection(self):
        """Closes with SO_LINGER 0: the peer gets an RST, not a FIN."""
        sock = self.connection
        if not self.wait_drained(DRAIN_MAX_S):
            self.log_message("reset with bytes still queued")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # The buffered reader holds a reference to the socket, so close()
        # would not close the descriptor; detach it and close that.
        fd = sock.detach()
        socket.close(fd)

    def stall_until_gone(self, limit):
        """Sends nothing more; returns when the peer closes or resets the
        connection, or after limit seconds."""
        sock = self.connection
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], 0.1)
            if not readable:
                continue
            try:
                if sock.recv(65536) == b"":
                    return
            except OSError:
                return

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

    def reply_json(self, obj, status=200, extra_headers=()):
        data = json.dumps(obj).encode()
        self.send_response(status)
        for name, value in extra_headers:
            self.send_header(name, value)
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
        self.objects = ObjectStates()
        self.scripts = Scripts()


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
