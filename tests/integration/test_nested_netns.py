"""Nested edge (DESIGN.md §5) across real network boundaries: an origin, an
L4 edgecache, an L3 edgecache and devices, each in a network namespace of
its own, chained by veth pairs and with no forwarding between them.

    ns-origin ──(a)── ns-l4 ──(b)── ns-l3 ──(c)── ns-dev
    nginx             L4 edgecache   L3 edgecache   devsim
    10.203.1.1        10.203.1.2     10.203.2.2     10.203.3.2
                      10.203.2.1     10.203.3.1

The origin is reachable only from L4, L4 only from L3 and L3 only from the
devices, as on a factory's ISA-95 layers. A deployment is rewritten and
prefetched at L3, which forwards it to L4's control plane; then devices
download through L3 while the layers above are cut away one by one.

The scenario needs root (network namespaces); without it, or when the
kernel refuses `ip netns add`, the module is skipped with the reason. The
three tests share one topology and run in file order: each one leaves the
state the next one starts from (the origin cut, then L4 gone), and measures
counters as differences where an earlier test moved them.
"""

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

import conftest
import harness
import test_manifests as manifests

IP = "/usr/sbin/ip"
CURL = "/usr/bin/curl"

ORIGIN_ADDR = "10.203.1.1"
L4_ADDR = "10.203.2.1"          # on link b, towards L3
L3_ADDR = "10.203.3.1"          # on link c, towards the devices
ORIGIN_BASE = "http://%s" % ORIGIN_ADDR
L4_DATA = "http://%s:8080" % L4_ADDR
L4_ADMIN = "http://%s:8082" % L4_ADDR
L3_DATA = "http://%s:8080" % L3_ADDR
L3_ADMIN = "http://127.0.0.1:8081"
TOKEN = "l4-control-" + secrets.token_hex(8)
WORKFLOW = "wf-nest"

# (namespace, interface, address, peer namespace, peer interface, peer address)
LINKS = [("origin", "eth-l4", "10.203.1.1/24", "l4", "eth-origin", "10.203.1.2/24"),
         ("l4", "eth-l3", "10.203.2.1/24", "l3", "eth-l4", "10.203.2.2/24"),
         ("l3", "eth-dev", "10.203.3.1/24", "dev", "eth-l3", "10.203.3.2/24")]

FILES = [("f1", "gateway-fw-4.2.0.swu", manifests.payload("nest-fw", 16 << 20)),
         ("f2", "modem-3.1.bin", manifests.payload("nest-modem", 3 << 20)),
         ("f3", "rootfs-delta.bin", manifests.payload("nest-delta", 1 << 20))]
DEVICES = 50


# --------------------------------------------------------------------------
# Namespaces

def run(argv, timeout=15, check=True):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                       env=harness.child_env())
    if check and p.returncode != 0:
        raise AssertionError("%s exited %d: %s" % (" ".join(argv), p.returncode,
                                                   (p.stderr or p.stdout).strip()))
    return p


class Topology:
    """Four network namespaces, named with a random suffix, and the veth
    pairs between them. close() kills whatever still runs inside them and
    deletes them (the veth pairs go with them)."""

    ROLES = ("origin", "l4", "l3", "dev")

    def __init__(self):
        suffix = secrets.token_hex(3)
        self.ns = {role: "ec-%s-%s" % (role, suffix) for role in self.ROLES}
        self.created = []

    def create(self):
        """Returns None, or why namespaces cannot be made here."""
        if os.geteuid() != 0:
            return "network namespaces need root (euid is %d)" % os.geteuid()
        if not os.access(IP, os.X_OK):
            return "%s is missing" % IP
        for role in self.ROLES:
            p = run([IP, "netns", "add", self.ns[role]], check=False)
            if p.returncode != 0:
                return "`ip netns add` failed: %s" % p.stderr.strip()
            self.created.append(self.ns[role])
        for role in self.ROLES:
            self.ip(role, "link", "set", "lo", "up")
            self.exec(role, ["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"])
        for a, a_if, a_addr, b, b_if, b_addr in LINKS:
            run([IP, "link", "add", a_if, "netns", self.ns[a], "type", "veth",
                 "peer", "name", b_if, "netns", self.ns[b]])
            for role, ifname, addr in ((a, a_if, a_addr), (b, b_if, b_addr)):
                self.ip(role, "addr", "add", addr, "dev", ifname)
                self.ip(role, "link", "set", ifname, "up")
        return None

    def argv(self, role, argv):
        return [IP, "netns", "exec", self.ns[role]] + list(argv)

    def exec(self, role, argv, timeout=15, check=True):
        return run(self.argv(role, argv), timeout=timeout, check=check)

    def ip(self, role, *args):
        return run([IP, "-n", self.ns[role]] + list(args))

    def link_down(self, role, ifname):
        self.ip(role, "link", "set", ifname, "down")

    def close(self):
        for name in self.created:
            p = run([IP, "netns", "pids", name], check=False)
            for pid in p.stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        for name in self.created:
            run([IP, "netns", "del", name], check=False)
        self.created = []


class Reply:
    def __init__(self, status, headers, body, elapsed, error):
        self.status = status          # 0 when no HTTP answer came
        self.headers = headers        # lower-cased names
        self.body = body
        self.elapsed = elapsed
        self.error = error

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<Reply %s in %.2fs %r %r>" % (self.status, self.elapsed, self.error,
                                              self.body[:300])


def ns_http(topo, role, method, url, headers=None, body=None, timeout=10):
    """One HTTP exchange made by curl inside a namespace (body: bytes, or
    an object sent as JSON)."""
    scratch = tempfile.mkdtemp(prefix="edgecache-ns-http-")
    try:
        hdr, out, data = (os.path.join(scratch, n) for n in ("hdr", "body", "data"))
        argv = [CURL, "-sS", "-X", method, "--max-time", str(timeout), "-D", hdr, "-o", out,
                "-w", "%{http_code}"]
        for name, value in (headers or {}).items():
            argv += ["-H", "%s: %s" % (name, value)]
        if body is not None:
            with open(data, "wb") as f:
                f.write(body if isinstance(body, bytes) else json.dumps(body).encode())
            argv += ["-H", "Content-Type: application/json", "--data-binary", "@" + data]
        t0 = time.monotonic()
        p = subprocess.run(topo.argv(role, argv + [url]), capture_output=True,
                           timeout=timeout + 5, env=harness.child_env())
        elapsed = time.monotonic() - t0
        return Reply(int(p.stdout.decode().strip() or 0), read_headers(hdr), read_bytes(out),
                     elapsed, p.stderr.decode().strip() or None)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def read_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


def read_headers(path):
    """curl's -D file -> {lower-cased name: value} of the last response."""
    out = {}
    for line in read_bytes(path).decode("latin-1").splitlines()[1:]:
        name, sep, value = line.partition(":")
        if sep:
            out[name.strip().lower()] = value.strip()
    return out


# --------------------------------------------------------------------------
# Processes in the namespaces

# A TCP peer that accepts connections and never answers (argv: address, port).
SILENT_PEER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
print("listening", flush=True)
held = []
while True:
    held.append(s.accept()[0])
    print("accepted", file=sys.stderr, flush=True)
"""

ORIGIN_CONF = """\
daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
user root;
error_log {d}/error.log info;
events {{ worker_connections 256; }}
http {{
    default_type application/octet-stream;
    log_format ec '$request_method $request_uri $status "$http_via" $body_bytes_sent';
    access_log {d}/access.log ec;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    sendfile on;
    server {{
        listen {addr}:80;
        root {d}/docroot;
    }}
}}
"""


class Origin:
    """nginx in ns-origin on ORIGIN_ADDR:80; its access log records each
    request's Via."""

    def __init__(self, topo, workdir):
        self.topo = topo
        self.dir = os.path.join(workdir, "origin")
        self.docroot = os.path.join(self.dir, "docroot")
        os.makedirs(self.docroot)
        self.access_log = os.path.join(self.dir, "access.log")
        self.error_log = os.path.join(self.dir, "error.log")
        self.process = None

    def put(self, path, data):
        full = os.path.join(self.docroot, path.lstrip("/"))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)

    def start(self):
        conf = os.path.join(self.dir, "nginx.conf")
        with open(conf, "w") as f:
            f.write(ORIGIN_CONF.format(d=self.dir, addr=ORIGIN_ADDR))
        argv = [harness.NGINX, "-p", self.dir, "-c", conf, "-e", self.error_log]
        self.process = harness.Process(self.topo.argv("origin", argv),
                                       os.path.join(self.dir, "nginx.out"), grace=5.0)

        def listening():
            if not self.process.running():
                raise AssertionError("nginx exited:\n%s" % harness.tail(self.error_log))
            return ns_http(self.topo, "origin", "GET", ORIGIN_BASE + "/", timeout=2).status
        harness.wait_for(listening, 10, interval=0.1, what="nginx in ns-origin to listen")

    def log(self):
        """[(uri, status, via)] in the order nginx logged them."""
        try:
            with open(self.access_log) as f:
                rows = f.read().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for row in rows:
            m = re.match(r'(\S+) (\S+) (\d+) "(.*)" \d+$', row)
            assert m, "unexpected access log line %r" % row
            out.append((m.group(2), int(m.group(3)), m.group(4)))
        return out

    def payloads(self):
        """The log's requests for the update's files (not the probes of /)."""
        return [row for row in self.log() if row[0].startswith(manifests.UPDATE_PATH)]

    def served(self, path):
        """GETs of path answered 200 (nginx logs a request when it ends)."""
        return [(uri, st, via) for uri, st, via in self.log()
                if uri.split("?")[0] == path and st == 200]

    def close(self):
        if self.process:
            self.process.close()
            self.process = None


class Node:
    """An edgecache daemon inside a namespace. Its control plane is reached
    from inside the namespace too (admin_url), with the token when it has one."""

    def __init__(self, topo, role, workdir, data_url, admin_url, args, token=None):
        self.topo = topo
        self.role = role
        self.data_url = data_url
        self.admin_url = admin_url
        self.token = token
        self.cache_dir = os.path.join(workdir, role + "-cache")
        self.log_path = os.path.join(workdir, role + ".log")
        self.listen = data_url.split("//", 1)[1]
        self.admin_listen = admin_url.split("//", 1)[1]
        self.args = list(args)
        self.process = None
        self.starts = 0

    def argv(self):
        argv = [harness.edgecache_bin(), "--listen", self.listen,
                "--admin-listen", self.admin_listen, "--cache-dir", self.cache_dir,
                "--node-id", self.role, "--log-level", "debug"]
        if self.token:
            argv += ["--admin-token", self.token]
        return argv + self.args

    def start(self):
        assert not self.running(), "%s already running" % self.role
        if self.process:
            self.process.close()
        self.starts += 1
        with open(self.log_path, "ab") as f:
            f.write(("==== start %d: %s\n" % (self.starts, " ".join(self.argv()))).encode())
        self.process = harness.Process(self.topo.argv(self.role, self.argv()), self.log_path)

        def ready():
            if not self.process.running():
                raise AssertionError("edgecache %s exited with %s before it was ready:\n%s" % (
                    self.role, self.process.proc.returncode, harness.tail(self.log_path, 40)))
            return self.admin("GET", "/healthz", timeout=2).status == 200
        harness.wait_for(ready, 10, interval=0.1, what="edgecache %s /healthz" % self.role)
        return self

    def running(self):
        return self.process is not None and self.process.running()

    def stop(self, timeout=10):
        """SIGTERM, then wait; returns the exit code."""
        self.process.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("edgecache %s did not exit within %ss of SIGTERM"
                                 % (self.role, timeout))

    def admin(self, method, path, body=None, timeout=10):
        headers = {"Authorization": "Bearer %s" % self.token} if self.token else {}
        return ns_http(self.topo, self.role, method, self.admin_url + path, headers=headers,
                       body=body, timeout=timeout)

    def status(self):
        r = self.admin("GET", "/status")
        assert r.status == 200, "%s /status: %r" % (self.role, r)
        return r.json()

    def metrics(self):
        r = self.admin("GET", "/metrics")
        assert r.status == 200, "%s /metrics: %r" % (self.role, r)
        return harness.parse_metrics(r.body.decode())

    def deployment(self, dep_id):
        for d in self.status()["deployments"]:
            if d["id"] == dep_id:
                return d
        return None

    def wait_deployment(self, dep_id, timeout=30):
        def done():
            d = self.deployment(dep_id)
            if d and d["files_done"] + d["files_failed"] == d["files_total"]:
                return d
            return None
        return harness.wait_for(done, timeout, interval=0.2,
                                what="deployment %s to finish at %s" % (dep_id, self.role))

    def wait_idle(self, timeout=10):
        harness.wait_for(lambda: self.metrics()["edgecache_fills_in_flight"] == 0, timeout,
                         interval=0.1, what="%s to have no fill in flight" % self.role)

    def blobs(self):
        return harness.blob_files(self.cache_dir)

    def close(self):
        try:
            harness.stop_cleanly(self.process, self.stop, self.log_path,
                                 "edgecache " + self.role)
        finally:
            self.process = None


# --------------------------------------------------------------------------
# The scenario

def blob_rel(data):
    h = harness.sha256_hex(data)
    return os.path.join("blobs", h[:2], h[2:4], h)


def do_path(name):
    """The path and query a device asks L3 for (DO shape)."""
    return "%s%s?cacheHostOrigin=%s" % (manifests.UPDATE_PATH, name, ORIGIN_ADDR)


class Nest:
    """The origin, both layers and the deployment devices get, over one
    Topology."""

    def __init__(self, topo, workdir):
        self.topo = topo
        self.workdir = workdir
        self.origin = Origin(topo, workdir)
        # The origin stands for the ADU CDN: payloads never change under
        # their URL, so no layer revalidates them. L3 waits longer for a
        # silent upstream than L4 does, so that L4's verdict on the origin
        # reaches L3.
        allow = ["--allow", "%s:80" % ORIGIN_BASE, "--immutable", "%s:80" % ORIGIN_BASE,
                 "--connect-timeout", "2s"]
        self.l4 = Node(topo, "l4", workdir, L4_DATA, L4_ADMIN,
                       allow + ["--stall-timeout", "3s"], token=TOKEN)
        self.l3 = Node(topo, "l3", workdir, L3_DATA, L3_ADMIN, allow + [
            "--stall-timeout", "10s",
            "--parent", L4_DATA, "--parent-admin-url", L4_ADMIN,
            "--parent-admin-token", TOKEN, "--advertise-url", L3_DATA])
        self.service = manifests.adu_service(ORIGIN_BASE, FILES, WORKFLOW)
        self.silent = None              # hold_l4_admin()'s peer
        self.silent_log = os.path.join(workdir, "silent-peer.log")
        self.rewrite = None             # L3's answer to the prefetching rewrite
        self.doc = None                 # the deployment devices get
        self.runs = 0

    def logs(self):
        return [("l4 log", self.l4.log_path), ("l3 log", self.l3.log_path),
                ("nginx error log", self.origin.error_log),
                ("nginx access log", self.origin.access_log)]

    def failure_text(self):
        return "\n".join("---- %s\n%s" % (t, harness.tail(p, 60)) for t, p in self.logs())

    def start(self):
        for _, name, data in FILES:
            self.origin.put(manifests.UPDATE_PATH + name, data)
        self.origin.start()
        self.l4.start()
        self.l3.start()
        self.check_isolation()
        self.rewrite = self.l3.admin("POST", "/api/v1/rewrite?prefetch=1", self.service)
        if self.rewrite.status == 200:
            self.doc = self.rewrite.json()

    def check_isolation(self):
        """Each layer reaches the one above it and nothing further."""
        reach = [("l4", ORIGIN_BASE + "/", True), ("l3", ORIGIN_BASE + "/", False),
                 ("l3", L4_DATA + "/", True), ("dev", L4_DATA + "/", False),
                 ("dev", ORIGIN_BASE + "/", False), ("dev", L3_DATA + "/", True)]
        for role, url, expected in reach:
            r = ns_http(self.topo, role, "GET", url, timeout=2)
            assert (r.status != 0) == expected, "from ns-%s, %s: %r" % (role, url, r)

    def devsim(self, devices=DEVICES):
        self.runs += 1
        path = os.path.join(self.workdir, "deployment-%d.json" % self.runs)
        with open(path, "w") as f:
            json.dump(self.doc, f)
        argv = [harness.devsim_bin(), "--devices", str(devices), "--quiet", "--timeout", "30",
                path]
        p = subprocess.run(self.topo.argv("dev", argv), capture_output=True, text=True,
                           timeout=90, env=harness.child_env())
        lines = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]
        summary = [x for x in lines if x.get("summary")]
        assert summary, "devsim printed no summary:\n%s\n%s" % (p.stdout[-2000:],
                                                                 p.stderr[-2000:])
        return p.returncode, summary[-1], p

    def hold_l4_admin(self):
        """Something in ns-l4 that accepts on L4's control-plane address and
        never answers (L4 itself must be stopped); it logs each accept."""
        addr, port = L4_ADMIN.split("//", 1)[1].split(":")
        argv = [sys.executable, "-c", SILENT_PEER, addr, port]
        self.silent = harness.Process(self.topo.argv("l4", argv), self.silent_log,
                                      stdout=subprocess.PIPE)
        line = self.silent.proc.stdout.readline()
        assert line == b"listening\n", (line, harness.tail(self.silent_log))

    def silent_accepts(self):
        return harness.tail(self.silent_log).count("accepted")

    def device_get(self, name, timeout=10):
        return ns_http(self.topo, "dev", "GET", L3_DATA + do_path(name), timeout=timeout)

    def close(self):
        errors = []
        for part in (self.l3, self.l4, self.origin, self.silent):
            try:
                if part:
                    part.close()
            except AssertionError as e:
                errors.append(str(e))
        return errors


@pytest.fixture(scope="module")
def nest():
    for path, what in ((harness.edgecache_bin(), "EDGECACHE_BIN"),
                       (harness.devsim_bin(), "DEVSIM_BIN")):
        if not os.access(path, os.X_OK):
            pytest.fail("%s is missing (set %s)" % (path, what))
    topo = Topology()
    workdir = tempfile.mkdtemp(prefix="edgecache-netns-")
    n = Nest(topo, workdir)
    try:
        reason = topo.create()
        if reason:
            pytest.skip(reason)
        try:
            n.start()
        except AssertionError as e:
            raise AssertionError("%s\n%s" % (e, n.failure_text())) from None
        yield n
        errors = n.close()
        assert not errors, "\n".join(errors)
    finally:
        n.close()
        topo.close()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(autouse=True)
def attach_logs(request, nest):
    for title, path in nest.logs():
        conftest._attach_log(request, title, path)


def hits(node):
    return harness.requests_counter(node.metrics(), "hit")


def test_prefetch_at_l3_then_fifty_devices(nest):
    r = nest.rewrite
    assert r.status == 200, r
    assert r.elapsed < 5, "the rewrite at L3 took %.1fs" % r.elapsed
    doc = nest.doc
    assert doc["updateManifest"] == nest.service["updateManifest"]
    for fid, name, _ in FILES:
        assert re.fullmatch(re.escape(L3_DATA + do_path(name)) + "(:80)?",
                            doc["fileUrls"][fid]), doc["fileUrls"][fid]

    d3 = nest.l3.wait_deployment(WORKFLOW)
    everything = (len(FILES), len(FILES), 0)
    assert (d3["files_done"], d3["files_total"], d3["files_failed"]) == everything, d3
    assert d3["pinned"], d3
    d4 = nest.l4.wait_deployment(WORKFLOW)      # forwarded by L3 to L4's control plane
    assert (d4["files_done"], d4["files_total"], d4["files_failed"]) == everything, d4
    assert d4["pinned"], d4

    code, summary, p = nest.devsim()
    assert code == 0, p.stdout[-3000:]
    assert (summary["succeeded"], summary["failed"]) == (DEVICES, 0), summary

    # The origin served each file once, to L4, whichever of L4's prefetch
    # and L3's fill asked first.
    for _, name, _ in FILES:
        served = nest.origin.served(manifests.UPDATE_PATH + name)
        assert len(served) == 1, (name, nest.origin.log())
        assert "1.1 l4" in served[0][2], served
    assert len(nest.origin.payloads()) == len(FILES), nest.origin.log()

    # Each layer holds each file's blob once, and nothing else.
    expected = sorted(blob_rel(data) for _, _, data in FILES)
    assert nest.l4.blobs() == expected
    assert nest.l3.blobs() == expected

    nest.l3.wait_idle()
    nest.l4.wait_idle()
    m3, m4 = nest.l3.metrics(), nest.l4.metrics()
    assert harness.requests_counter(m3, "hit") == DEVICES * len(FILES), m3
    assert harness.requests_counter(m3, "miss") == 0
    assert harness.requests_counter(m3, "collapsed") == 0
    assert m3["edgecache_fills_completed_total"] == len(FILES)
    assert m3["edgecache_objects"] == len(FILES)
    assert m4["edgecache_objects"] == len(FILES)
    assert m4["edgecache_fills_completed_total"] == len(FILES)
    # L3 asked L4 for each file once (its prefetch); L4's own prefetch may
    # have got there first, so that request was a hit, a join or the miss.
    l4_served = sum(harness.requests_counter(m4, s) for s in ("hit", "miss", "collapsed"))
    assert l4_served == len(FILES), m4
    assert m3['edgecache_upstream_up{upstream="%s"}' % L4_DATA] == 1
    assert m3['edgecache_parent_forwards_total{result="ok"}'] == 1
    assert m3['edgecache_parent_forwards_total{result="failed"}'] == 0
    assert m4['edgecache_upstream_up{upstream="%s"}' % (ORIGIN_BASE + ":80")] == 1

    # Cache-Status agrees with the counters: a device's request at L3, and
    # one at L4 in the shape L3 asks in, are hits and count one hit each.
    small = FILES[2]
    r = nest.device_get(small[1])
    assert r.status == 200 and r.body == small[2], r
    assert r.headers.get("cache-status") == "edgecache; hit", r.headers
    r = ns_http(nest.topo, "l3", "GET", L4_DATA + do_path(small[1]),
                headers={"Via": "1.1 l3 (edgecache/test)"})
    assert r.status == 200 and r.body == small[2], r
    assert r.headers.get("cache-status") == "edgecache; hit", r.headers
    assert hits(nest.l3) == DEVICES * len(FILES) + 1
    assert hits(nest.l4) == harness.requests_counter(m4, "hit") + 1

    # A miss crosses both layers once, each adding itself to Via.
    extra = manifests.payload("nest-extra", 200_000)
    nest.origin.put(manifests.UPDATE_PATH + "extra.bin", extra)
    r = nest.device_get("extra.bin")
    assert r.status == 200 and r.body == extra, r
    assert r.headers.get("cache-status", "").startswith("edgecache; fwd=miss"), r.headers
    via = harness.wait_for(lambda: nest.origin.served(manifests.UPDATE_PATH + "extra.bin"),
                           2, what="nginx to log extra.bin")     # logged once sent
    assert len(via) == 1, nest.origin.log()
    chain = r"1\.1 l3 \(edgecache/[^)]+\), 1\.1 l4 \(edgecache/[^)]+\)"
    assert re.fullmatch(chain, via[0][2]), via


def test_origin_cut_from_l4_devices_still_succeed(nest):
    nest.l3.wait_deployment(WORKFLOW)
    nest.topo.link_down("l4", "eth-origin")
    r = ns_http(nest.topo, "l4", "GET", ORIGIN_BASE + "/", timeout=2)
    assert r.status == 0, "the origin still answers L4: %r" % r
    before_origin = len(nest.origin.payloads())
    before = hits(nest.l3)
    l4_before = nest.l4.metrics()

    code, summary, p = nest.devsim()
    assert code == 0, p.stdout[-3000:]
    assert (summary["succeeded"], summary["failed"]) == (DEVICES, 0), summary
    assert hits(nest.l3) == before + DEVICES * len(FILES)
    assert len(nest.origin.payloads()) == before_origin
    l4_after = nest.l4.metrics()                # L3 served all of it alone
    for label in ("hit", "miss", "collapsed"):
        assert (harness.requests_counter(l4_after, label)
                == harness.requests_counter(l4_before, label)), label

    # What no layer holds fails in bounded time: L4 gives up on the origin
    # (at once when it must connect, after its stall_timeout on a kept-alive
    # connection the cut left behind) and L3, more patient, passes that on.
    nest.origin.put(manifests.UPDATE_PATH + "new.bin", b"n" * 1000)
    before = nest.l3.metrics()
    r = nest.device_get("new.bin", timeout=20)
    assert r.status in (502, 504) and r.elapsed < 8, r
    assert r.headers.get("cache-status") == "edgecache; fwd=miss; detail=not-stored", r.headers
    after = nest.l3.metrics()
    for label, moved in (("pass", 1), ("error", 0), ("hit", 0)):
        assert (harness.requests_counter(after, label)
                - harness.requests_counter(before, label)) == moved, (label, before, after)


def test_l3_restarted_while_l4_is_down_serves_what_it_stored(nest):
    nest.l3.wait_deployment(WORKFLOW)
    stored = nest.l3.blobs()
    assert nest.l4.stop() == 0
    assert nest.l3.stop() == 0
    nest.l3.start()
    assert nest.l3.blobs() == stored
    d3 = nest.l3.deployment(WORKFLOW)
    assert d3 and d3["files_done"] == len(FILES) and d3["pinned"], d3

    code, summary, p = nest.devsim()
    assert code == 0, p.stdout[-3000:]
    assert (summary["succeeded"], summary["failed"]) == (DEVICES, 0), summary
    m = nest.l3.metrics()
    assert harness.requests_counter(m, "hit") == DEVICES * len(FILES), m
    assert m["edgecache_objects"] == len(stored)
    assert m["edgecache_upstream_bytes_total"] == 0

    # A file L3 does not hold: L4 refuses the connection, the device gets
    # 502 at once, and L3 reports its upstream down.
    for _ in range(2):
        r = nest.device_get("missing.bin", timeout=10)
        assert r.status == 502 and r.elapsed < 5, r
    up = {u["target"]: u for u in nest.l3.status()["upstreams"]}
    assert L4_DATA in up, up
    assert up[L4_DATA]["up"] is False and up[L4_DATA]["failures"] >= 1, up
    assert up[L4_DATA]["last_success"] is None, up
    assert nest.l3.metrics()['edgecache_upstream_up{upstream="%s"}' % L4_DATA] == 0

    # A new deployment is still accepted at once, even with L4's control
    # plane address held by a peer that accepts and never answers: handing
    # it to L4 happens later, whatever becomes of it.
    nest.hold_l4_admin()
    other = manifests.adu_service(ORIGIN_BASE, [("g1", "later.bin", b"x" * 4096)], "wf-later")
    r = nest.l3.admin("POST", "/api/v1/rewrite?prefetch=1", other)
    assert r.status == 200 and r.elapsed < 2, r
    harness.wait_for(nest.silent_accepts, 5, interval=0.1,
                     what="L3 to try handing wf-later to L4's control plane")
