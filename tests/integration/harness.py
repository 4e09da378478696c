"""Processes and an HTTP client for edgecache's integration tests.

Every process here is started in its own session (process group) so that
close() can signal the whole group; conftest.py's fixtures call close() in
their finalizers, so nothing outlives a test, whether it passed or failed.
Only the standard library is used.
"""

import base64
import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ORIGIN_PY = os.path.join(HERE, "origin.py")
DEFAULT_BIN = os.path.normpath(os.path.join(HERE, "..", "..", "build", "edgecache"))
DEFAULT_DEVSIM_BIN = os.path.normpath(os.path.join(HERE, "..", "..", "build", "tests",
                                                  "devsim", "devsim"))
NGINX = "/usr/sbin/nginx"

# Environment variables that would change how a child behaves: edgecache's
# own configuration and libcurl's proxy settings.
_SCRUB_PREFIXES = ("EDGECACHE_",)
_SCRUB_NAMES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy",
                "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"}


def edgecache_bin():
    return os.environ.get("EDGECACHE_BIN") or DEFAULT_BIN


def devsim_bin():
    """The device simulator (tests/devsim): $DEVSIM_BIN, else the build tree's."""
    return os.environ.get("DEVSIM_BIN") or DEFAULT_DEVSIM_BIN


def child_env(extra=None):
    env = {k: v for k, v in os.environ.items()
           if k not in _SCRUB_NAMES and not k.startswith(_SCRUB_PREFIXES)}
    env.update(extra or {})
    return env


_ISSUED_PORTS = set()


def free_port():
    """An ephemeral loopback port that was free a moment ago, and never one
    this process handed out before: two calls in a row must not give the
    same port (a "dead" origin port must not become the daemon's own)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _ISSUED_PORTS:
            _ISSUED_PORTS.add(port)
            return port


def port_is_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for(predicate, timeout, interval=0.05, what="condition"):
    """Polls predicate() until it returns a true value (returned) or timeout
    seconds pass (AssertionError naming `what`)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def etag_for(hexdigest):
    return '"%s"' % hexdigest


def repr_digest_for(hexdigest):
    return "sha-256=:%s:" % base64.b64encode(bytes.fromhex(hexdigest)).decode()


def b64_of_hex(hexdigest):
    """The base64 form of a hex digest (as manifests and digest headers
    carry it)."""
    return base64.b64encode(bytes.fromhex(hexdigest)).decode()


def is_prefix(got, whole):
    """True when got is the first len(got) bytes of whole."""
    return len(got) <= len(whole) and whole[:len(got)] == got


def tail(path, lines=200):
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError as e:
        return "(cannot read %s: %s)" % (path, e)
    rows = text.splitlines()
    if len(rows) > lines:
        rows = ["... (%d earlier lines)" % (len(rows) - lines)] + rows[-lines:]
    return "\n".join(rows)


# --------------------------------------------------------------------------
# HTTP client

class Response:
    """One exchange. body is None when streamed (keep_body=False); sha256
    and length are always set. complete is True when the whole announced
    body arrived; error holds the exception that cut the transfer."""

    def __init__(self):
        self.status = None
        self.reason = None
        self.headers = None
        self.body = None
        self.sha256 = None
        self.length = 0
        self.content_length = None
        self.complete = False
        self.error = None
        self.t_start = None
        self.t_headers = None
        self.t_first_byte = None
        self.t_end = None

    def header(self, name, default=None):
        return self.headers.get(name, default) if self.headers is not None else default

    @property
    def cache_status(self):
        return self.header("Cache-Status")

    def __repr__(self):
        return "<Response %s len=%s cache-status=%r error=%r>" % (
            self.status, self.length, self.cache_status, self.error)


def request(port, method, target, headers=None, body=None, keep_body=True,
            timeout=30, conn=None, host="127.0.0.1"):
    """Sends one request. target is sent verbatim on the request line: a
    path ("/x?y") or an absolute URL ("http://h:p/x", forward-proxy form).
    Pass conn (an http.client.HTTPConnection) to reuse a keep-alive
    connection; otherwise a new one is opened and closed."""
    own = conn is None
    if own:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    r = Response()
    r.t_start = time.monotonic()
    try:
        conn.request(method, target, body=body, headers=headers or {})
        resp = conn.getresponse()
        r.t_headers = time.monotonic()
        r.status, r.reason, r.headers = resp.status, resp.reason, resp.headers
        cl = resp.getheader("Content-Length")
        r.content_length = int(cl) if cl is not None else None
        _read_body(resp, r, keep_body, method)
    finally:
        if own:
            conn.close()
    return r


def _read_body(resp, r, keep_body, method):
    h = hashlib.sha256()
    parts = [] if keep_body else None
    try:
        while True:
            chunk = resp.read1(1 << 20)
            if not chunk:
                break
            if r.t_first_byte is None:
                r.t_first_byte = time.monotonic()
            h.update(chunk)
            r.length += len(chunk)
            if parts is not None:
                parts.append(chunk)
        # Reading the (empty) rest lets http.client reuse the connection.
        rest = resp.read()
        if rest:
            h.update(rest)
            r.length += len(rest)
            if parts is not None:
                parts.append(rest)
    except (OSError, http.client.HTTPException) as e:
        r.error = e
    r.t_end = time.monotonic()
    r.sha256 = h.hexdigest()
    if parts is not None:
        r.body = b"".join(parts)
    if method == "HEAD":
        r.complete = r.error is None and r.length == 0
    elif r.content_length is not None:
        r.complete = r.error is None and r.length == r.content_length
    else:
        r.complete = r.error is None and resp.isclosed()


def http_get_json(port, path, timeout=5):
    r = request(port, "GET", path, timeout=timeout)
    assert r.status == 200, "GET %s on port %d answered %s: %r" % (path, port, r.status, r.body)
    return json.loads(r.body)


def parse_metrics(text):
    """Prometheus text -> {'name{labels}': float}, keys exactly as written."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "{" in line:
            close = line.index("}")
            key, rest = line[:close + 1], line[close + 1:]
        else:
            key, _, rest = line.partition(" ")
        out[key.strip()] = float(rest.split()[0])
    return out


# --------------------------------------------------------------------------
# Processes

class Process:
    """A child in its own process group, output to a log file."""

    def __init__(self, argv, log_path, env=None, stdout=None, cwd=None, grace=0.0):
        self.argv = argv
        self.grace = grace
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL,
            stdout=stdout if stdout is not None else self._log,
            stderr=self._log, env=env or child_env(), cwd=cwd,
            start_new_session=True)

    @property
    def pid(self):
        return self.proc.pid

    def running(self):
        return self.proc.poll() is None

    def signal(self, sig):
        if self.running():
            os.kill(self.proc.pid, sig)

    def wait(self, timeout):
        return self.proc.wait(timeout=timeout)

    def close(self):
        """Stops the whole group (idempotent): SIGTERM to the leader and
        `grace` seconds for it to reap its own children, then SIGKILL."""
        if self.grace > 0 and self.running():
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=self.grace)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.proc.stdout, self._log):
            if f is not None and not f.closed:
                f.close()


class Origin:
    """The scripted origin (origin.py) in its own process."""

    def __init__(self, workdir):
        self.log_path = os.path.join(workdir, "origin.log")
        self.process = Process([sys.executable, ORIGIN_PY], self.log_path,
                               stdout=subprocess.PIPE)
        line = self.process.proc.stdout.readline().decode()
        if not line.startswith("PORT "):
            self.close()
            raise RuntimeError("origin.py did not start: %r\n%s" % (line, tail(self.log_path)))
        self.port = int(line.split()[1])
        self.base = "http://127.0.0.1:%d" % self.port
        self.host = "127.0.0.1:%d" % self.port

    def url(self, target):
        return self.base + target

    def stats(self):
        return http_get_json(self.port, "/_stats")

    def reset(self):
        assert request(self.port, "POST", "/_reset").status == 200

    def count(self, target):
        """Requests received for this exact path+query."""
        return self.stats()["counts"].get(target, 0)

    def count_path(self, path):
        """Requests received for this path, whatever their query."""
        return self.stats()["by_path"].get(path, 0)

    def requests(self, path=None):
        reqs = self.stats()["requests"]
        return [r for r in reqs if path is None or r["path"] == path]

    def script(self, path, responses):
        """Scripts the answers for path (origin.py's POST /_script): request
        i to it gets responses[i], the last one repeating."""
        body = json.dumps({"path": path, "responses": responses}).encode()
        r = request(self.port, "POST", "/_script", body=body,
                    headers={"Content-Type": "application/json"})
        assert r.status == 200, "POST /_script answered %s: %r" % (r.status, r.body)

    def headers_of(self, path, i):
        """The headers of the i-th request for path, as a dict with
        lower-cased names (a repeated field's values joined with ", ")."""
        out = {}
        for name, value in self.requests(path)[i]["headers"]:
            name = name.lower()
            out[name] = out[name] + ", " + value if name in out else value
        return out

    def gets(self, path):
        """The GET records for path, in arrival order."""
        return [r for r in self.requests(path) if r["method"] == "GET"]

    def finished_requests(self, path, timeout=5):
        """requests(path) once every one of them has ended: the origin
        records the end just after its last write, so a client can hold the
        last byte a moment before the record says so."""
        return wait_for(lambda: [r for r in self.requests(path) if r["end"] is None] == []
                        and self.requests(path), timeout,
                        what="the origin to finish %s" % path)

    def close(self):
        self.process.close()


NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
{user}
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    types {{ application/x-firmware swu; text/plain txt; }}
    default_type application/octet-stream;
    log_format ec '$request_method $request_uri $status "$http_range" $body_bytes_sent';
    access_log {d}/access.log ec;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    sendfile on;
    keepalive_timeout 30s;
    server {{
        listen 127.0.0.1:{port};
        root {d}/docroot;
{server_conf}
    }}
}}
"""


class Nginx:
    """Debian's nginx serving a docroot under its own directory.
    server_conf: extra directives for the server block (say locations that
    add Cache-Control headers), written as nginx reads them."""

    def __init__(self, workdir, server_conf=""):
        self.dir = os.path.join(workdir, "nginx")
        self.docroot = os.path.join(self.dir, "docroot")
        os.makedirs(self.docroot)
        self.port = free_port()
        self.base = "http://127.0.0.1:%d" % self.port
        self.host = "127.0.0.1:%d" % self.port
        self.access_log = os.path.join(self.dir, "access.log")
        self.error_log = os.path.join(self.dir, "error.log")
        conf = os.path.join(self.dir, "nginx.conf")
        # Running as root, workers would switch to "nobody", which cannot
        # read a private temp dir.
        user = "user root;" if os.geteuid() == 0 else ""
        with open(conf, "w") as f:
            f.write(NGINX_CONF.format(d=self.dir, port=self.port, user=user,
                                      server_conf=server_conf))
        self.process = Process([NGINX, "-p", self.dir, "-c", conf, "-e", self.error_log],
                               os.path.join(self.dir, "nginx.out"), grace=5.0)
        try:
            wait_for(lambda: port_is_open(self.port) or not self.process.running(),
                     10, what="nginx to listen")
            if not self.process.running():
                raise RuntimeError("nginx exited:\n%s" % tail(self.error_log))
        except Exception:
            self.close()
            raise

    def url(self, target):
        return self.base + target

    def put(self, path, data, mtime=None):
        """Writes data at docroot/path; mtime sets its Last-Modified."""
        full = os.path.join(self.docroot, path.lstrip("/"))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)
        if mtime is not None:
            os.utime(full, (mtime, mtime))
        return full

    def log_lines(self):
        """[(method, uri, status, range or None)] from the access log."""
        try:
            with open(self.access_log) as f:
                rows = f.read().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for row in rows:
            head, _, rng = row.partition(' "')
            method, uri, status = head.split()[:3]
            rng = rng.rsplit('"', 1)[0]
            out.append((method, uri, int(status), None if rng in ("", "-") else rng))
        return out

    def count(self, target, at_least=1, timeout=2.0, settle=0.2):
        """Requests logged for target (a path+query, or a path: then any
        query matches). nginx logs when a response ends, so this polls up to
        timeout for at_least lines, then waits `settle` for stragglers."""
        def n():
            return sum(1 for _, uri, _, _ in self.log_lines()
                       if uri == target or ("?" not in target and uri.split("?")[0] == target))
        try:
            wait_for(lambda: n() >= at_least, timeout, what="nginx log lines")
        except AssertionError:
            return n()
        time.sleep(settle)
        return n()

    def close(self):
        self.process.close()


class Edgecache:
    """The daemon under test. Ports are chosen once and kept across
    restart(), like the cache dir."""

    def __init__(self, binary, workdir, name, cache_dir, allow, args, mutable=False,
                 env=None):
        self.binary = binary
        self.env = dict(env or {})
        self.cache_dir = cache_dir
        self.allow = list(allow)
        self.args = list(args)
        # The test origins stand in for update CDNs, whose content never
        # changes under a URL: they are listed as immutable too, unless the
        # test is about HTTP freshness (mutable=True) or lists its own.
        self.mutable = mutable
        self.host = "127.0.0.1"     # another loopback address for a layer of peers
        self.port = free_port()
        self.admin_port = free_port()
        self.log_path = os.path.join(workdir, "%s.log" % name)
        self.process = None
        self.starts = 0
        # The control plane's bearer token, when the test gave one: metrics()
        # and status() send it.
        self.admin_token = None
        if "--admin-token" in self.args:
            self.admin_token = self.args[self.args.index("--admin-token") + 1]

    def argv(self):
        argv = [self.binary,
                "--listen", "%s:%d" % (self.host, self.port),
                "--admin-listen", "%s:%d" % (self.host, self.admin_port),
                "--cache-dir", self.cache_dir,
                "--log-level", "debug"]
        if self.allow:
            argv += ["--allow", ",".join(self.allow)]
            if not self.mutable and "--immutable" not in self.args:
                argv += ["--immutable", ",".join(self.allow)]
        return argv + self.args

    def start(self, ready_timeout=10):
        assert self.process is None or not self.process.running(), "already running"
        if self.process is not None:
            self.process.close()
        self.starts += 1
        with open(self.log_path, "ab") as f:
            f.write(("==== start %d: %s\n" % (self.starts, " ".join(self.argv()))).encode())
        self.process = Process(self.argv(), self.log_path, env=child_env(self.env))
        self.wait_ready(ready_timeout)
        return self

    def wait_ready(self, timeout):
        def ready():
            if not self.process.running():
                raise AssertionError("edgecache exited with %s before it was ready:\n%s"
                                     % (self.process.proc.returncode, tail(self.log_path, 40)))
            try:
                return request(self.admin_port, "GET", "/healthz", timeout=1, host=self.host).status == 200
            except OSError:
                return False
        wait_for(ready, timeout, interval=0.05, what="edgecache /healthz")

    def stop(self, timeout=30):
        """SIGTERM, then wait. Returns the exit code."""
        self.process.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("edgecache did not exit within %ss of SIGTERM" % timeout)

    def kill(self):
        self.process.signal(signal.SIGKILL)
        return self.process.wait(10)

    def restart(self, ready_timeout=10):
        if self.process.running():
            self.stop()
        return self.start(ready_timeout)

    def running(self):
        return self.process is not None and self.process.running()

    def url(self, target):
        return "http://%s:%d%s" % (self.host, self.port, target)

    def get(self, target, **kw):
        return request(self.port, "GET", target, host=self.host, **kw)

    def head(self, target, **kw):
        return request(self.port, "HEAD", target, host=self.host, **kw)

    def request(self, method, target, **kw):
        return request(self.port, method, target, host=self.host, **kw)

    def wait_idle(self, timeout=10):
        """Waits until no fill is in flight. A fill's last byte reaches its
        readers before the fill commits (fsync, rename, index row); a request
        that arrives in between joins the fill instead of hitting."""
        wait_for(lambda: self.metrics()["edgecache_fills_in_flight"] == 0, timeout,
                 what="edgecache_fills_in_flight == 0")

    def metrics(self):
        r = self.admin("GET", "/metrics", token=self.admin_token, timeout=5)
        assert r.status == 200, "GET /metrics answered %s" % r.status
        return parse_metrics(r.body.decode())

    def status(self):
        r = self.admin("GET", "/status", token=self.admin_token, timeout=5)
        assert r.status == 200, "GET /status answered %s: %r" % (r.status, r.body)
        return json.loads(r.body)

    def admin(self, method, path, body=None, token=None, headers=None, timeout=10):
        """One request to the control plane; body may be bytes, str or a
        JSON-able object; token adds "Authorization: Bearer <token>"."""
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = "Bearer %s" % token
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        if isinstance(body, str):
            body = body.encode()
        return request(self.admin_port, method, path, headers=h, body=body, timeout=timeout,
                       host=self.host)

    def expect(self, entries, token=None):
        """Registers expectations ([{"url", "sha256", "size"?}]); asserts
        the daemon took all of them."""
        r = self.admin("POST", "/api/v1/expectations", entries, token=token)
        assert r.status == 200, "POST /api/v1/expectations answered %s: %r" % (r.status, r.body)
        assert json.loads(r.body) == {"registered": len(entries)}, r.body
        return r

    def log_text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def log_lines_with(self, *needles):
        """Lines of the daemon's log that hold every needle; a needle may
        be a tuple of alternatives (say the hex and the base64 form of one
        digest)."""
        def has(line, needle):
            alternatives = needle if isinstance(needle, tuple) else (needle,)
            return any(a in line for a in alternatives)
        return [line for line in self.log_text().splitlines()
                if all(has(line, n) for n in needles)]

    def blobs(self):
        return blob_files(self.cache_dir)

    def blob_path(self, hexdigest):
        return os.path.join(self.cache_dir, "blobs", hexdigest[:2], hexdigest[2:4], hexdigest)

    def tmp_files(self):
        tmp = os.path.join(self.cache_dir, "tmp")
        return sorted(os.listdir(tmp)) if os.path.isdir(tmp) else []

    def tmp_files_left(self, timeout=3):
        """tmp_files() once it is empty, or what is still there after
        timeout seconds. A failed fill's temp file is unlinked on the thread
        pool after the fill has left edgecache_fills_in_flight, so it may
        outlive wait_idle() by a moment without having been left behind."""
        try:
            wait_for(lambda: self.tmp_files() == [], timeout, what="an empty tmp/")
        except AssertionError:
            pass
        return self.tmp_files()

    def close(self):
        stop_cleanly(self.process, self.stop, self.log_path, "edgecache")


def blob_files(cache_dir):
    """Paths of every file under blobs/, relative to the cache dir."""
    out = []
    for dirpath, _, files in os.walk(os.path.join(cache_dir, "blobs")):
        out += [os.path.relpath(os.path.join(dirpath, f), cache_dir) for f in files]
    return sorted(out)


def stop_cleanly(process, stop, log_path, name):
    """Stops a daemon as an operator would (stop(): SIGTERM and wait) and
    fails the test if it did not exit 0, or if a sanitizer reported anything
    in its log (the suite also runs under ASan + UBSan)."""
    if process is None:
        return
    problems = []
    try:
        if process.running():
            code = stop()
            if code != 0:
                problems.append("exit code %s after SIGTERM" % code)
    finally:
        process.close()
    with open(log_path, errors="replace") as f:
        text = f.read()
    for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        if marker in text:
            problems.append("the log holds %r" % marker)
    if problems:
        raise AssertionError("%s did not stop cleanly: %s\n%s"
                             % (name, "; ".join(problems), tail(log_path, 60)))


def requests_counter(metrics, cache_status):
    return metrics.get('edgecache_requests_total{cache_status="%s"}' % cache_status, 0)


def do_target(path_query, origin_host):
    """The Delivery Optimization shape of a request for origin_host."""
    sep = "&" if "?" in path_query else "?"
    return "%s%scacheHostOrigin=%s" % (path_query, sep, origin_host)
