"""Defects that crashed the daemon, hung it or sent memory it should not
have, each with the scenario that showed it. Every daemon is stopped with
SIGTERM by the fixture, which fails the test on a non-zero exit or on any
sanitizer report in its log (the suite also runs under ASan + UBSan)."""

import http.client
import os
import signal
import socket
import sqlite3
import threading
import time

import pytest

import harness
from harness import do_target
from origin import object_bytes


def test_a_long_url_relayed_to_a_dead_origin_gets_a_short_clean_answer(edgecache):
    """The relay's error answer once used snprintf's return value as the
    length of a 600-byte buffer: a URL of a few KiB sent stack memory."""
    dead = harness.free_port()
    ec = edgecache(allow=["http://127.0.0.1:%d" % dead],
                   args=["--route", "/d/=http://127.0.0.1:%d/" % dead])
    long_path = "/d/" + "a" * 4096
    for method in ("PUT", "POST", "DELETE"):
        r = ec.request(method, long_path, body=b"abc")
        assert r.status == 502, r
        assert r.complete, r
        text = r.body.decode("utf-8")             # valid text, nothing else
        assert text.startswith("upstream for http://127.0.0.1:%d/aaa" % dead), text[:80]
        assert text.endswith("\n") and text.count("\n") == 1, repr(text[-80:])
        assert "\0" not in text
        assert len(r.body) <= 1024, len(r.body)
    assert ec.running()


def _fill_state(ec, key_part):
    """The /status entry of the fill whose key holds key_part, or None."""
    for f in ec.status()["fills"]:
        if key_part in f["key"]:
            return f
    return None


class IndexWriteLock:
    """Another process's write transaction on the daemon's index.db: every
    index write of the daemon (a fill's commit, a purge) waits for it on the
    thread pool, so a commit stays in the "committing" state, or an admin
    job stays suspended, for as long as the test holds it."""

    def __init__(self, cache_dir, hold=True):
        self.path = os.path.join(cache_dir, "index.db")
        self.db = None
        if hold:
            self.lock()

    def lock(self):
        self.db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        self.db.execute("BEGIN IMMEDIATE")

    def release(self):
        if self.db is not None:
            self.db.execute("ROLLBACK")
            self.db.close()
            self.db = None


def _read_all_but_the_last_byte(ec, target, size):
    """Opens a download and reads size - 1 bytes of it. The object sends
    Repr-Digest, so the fill holds its last byte back until the digest
    verifies: the reader then waits, suspended, on the fill."""
    conn = http.client.HTTPConnection("127.0.0.1", ec.port, timeout=60)
    conn.request("GET", target)
    resp = conn.getresponse()
    assert resp.status == 200, resp.status
    got = b""
    while len(got) < size - 1:
        chunk = resp.read1(size - 1 - len(got))
        assert chunk, "the download ended after %d bytes" % len(got)
        got += chunk
    return conn, resp, got


def _stop_while(ec, lock, hold=0.3):
    """SIGTERM; the index stays locked `hold` seconds more, then the work
    waiting on it may finish during the shutdown. Returns the exit status."""
    ec.process.signal(signal.SIGTERM)
    time.sleep(hold)
    lock.release()
    return ec.process.wait(30)


def _assert_clean_exit(ec, code):
    text = ec.log_text()
    assert code == 0, "exit status %s\n%s" % (code, harness.tail(ec.log_path, 20))
    assert "Fatal error in GNU libmicrohttpd" not in text
    for marker in ("ERROR: AddressSanitizer", "runtime error:"):
        assert marker not in text, harness.tail(ec.log_path, 60)


def test_sigterm_while_a_reader_waits_on_a_committing_fill(origin, edgecache):
    """MHD_stop_daemon aborts the process while a connection is suspended,
    and a reader waiting on the held-back last byte of a committing fill
    was never woken at shutdown."""
    ec = edgecache(allow=[origin.base])
    size = 1 << 20
    # chunked, its end 0.3 s after its last byte: the reader has everything
    # but the held-back byte, and waits, when the body ends.
    target = do_target("/obj/held?size=%d&repr=1&chunked=1&endwait=0.3" % size, origin.host)
    lock = IndexWriteLock(ec.cache_dir)
    try:
        conn, resp, got = _read_all_but_the_last_byte(ec, target, size)
        harness.wait_for(lambda: (_fill_state(ec, "/obj/held?") or {}).get("state")
                         == "committing", 5, what="the fill to be committing")
        code = _stop_while(ec, lock)
        rest = resp.read()          # the stop waited for this answer (shutdown_grace)
        conn.close()
    finally:
        lock.release()
    _assert_clean_exit(ec, code)
    assert got + rest == object_bytes("held", "0", size)


def test_sigterm_while_an_admin_job_waits_on_the_pool(origin, edgecache):
    """An admin call that runs on the thread pool holds its connection
    suspended: stopping the control plane under it aborted the process."""
    ec = edgecache(allow=[origin.base])
    r = ec.get(do_target("/obj/purge-me?size=1000", origin.host))
    assert r.status == 200
    ec.wait_idle()
    sha = harness.sha256_hex(r.body)
    lock = IndexWriteLock(ec.cache_dir)
    answers = []
    t = threading.Thread(target=lambda: answers.append(
        _try(lambda: ec.admin("DELETE", "/api/v1/objects/" + sha, timeout=30))))
    try:
        t.start()
        time.sleep(0.5)             # the purge now waits on the index in the pool
        code = _stop_while(ec, lock)
    finally:
        lock.release()
        t.join(30)
    _assert_clean_exit(ec, code)
    assert len(answers) == 1 and not isinstance(answers[0], Exception), answers
    assert answers[0].status == 503 and b"shutting down" in answers[0].body, answers[0]


def test_a_commit_that_ends_during_shutdown_does_not_touch_freed_state(origin, edgecache):
    """edge_teardown freed the evictor, then let the last commits finish:
    commit_after called evict_check on freed memory (ASan reports it)."""
    ec = edgecache(allow=[origin.base])
    target = do_target("/obj/late?size=%d" % (256 << 10), origin.host)
    lock = IndexWriteLock(ec.cache_dir)
    try:
        r = ec.get(target)
        assert r.status == 200 and r.complete
        harness.wait_for(lambda: (_fill_state(ec, "/obj/late?") or {}).get("state")
                         == "committing", 5, what="the fill to be committing")
        code = _stop_while(ec, lock)
    finally:
        lock.release()
    _assert_clean_exit(ec, code)
    # the commit finished during the shutdown: the next start serves it
    ec.start()
    r2 = ec.get(target)
    assert r2.status == 200 and r2.body == r.body
    assert r2.cache_status == "edgecache; hit", r2.cache_status


def _try(f):
    try:
        return f()
    except Exception as e:          # the daemon may close the connection at exit
        return e


REVALIDATING = """
        location /nocache/ { add_header Cache-Control "no-cache"; }
"""


@pytest.fixture
def revalidating_origin(request, workdir):
    """nginx whose /nocache/ answers must be revalidated on every use: each
    request for a stored one asks the origin (If-None-Match), which
    answers 304."""
    n = harness.Nginx(workdir, server_conf=REVALIDATING)
    request.addfinalizer(n.close)
    return n


def _revalidated_and_held(ec, origin, path, lock):
    """Stores path, then takes the index's write lock and asks again: the
    origin answers 304. The refreshed response is in the catalog at once;
    the index row's update waits on the lock. (Before the catalog, the fill
    stayed "revalidated" in the table until that write was done, and a
    request that joined it then found no stored copy.)"""
    target = do_target(path, origin.host)
    r = ec.get(target)
    assert r.status == 200
    ec.wait_idle()
    lock.lock()
    r2 = ec.get(target)
    assert r2.status == 200 and r2.body == r.body
    assert r2.cache_status == "edgecache; fwd=stale; fwd-status=304", r2.cache_status
    return target, r.body


def test_a_request_joining_a_revalidated_fill_whose_blob_is_gone(edgecache,
                                                                 revalidating_origin):
    """A request whose lookup missed (the blob was evicted or purged, the URL
    row dropped, an expectation changed) while a fill that got a 304 was
    still in the table joined it, found no stored copy, looked up again,
    joined again... until the stack overflowed."""
    origin = revalidating_origin
    ec = edgecache(allow=[origin.base], mutable=True)
    body = b"r" * 5000
    origin.put("nocache/r.bin", body)
    lock = IndexWriteLock(ec.cache_dir, hold=False)
    try:
        target, _ = _revalidated_and_held(ec, origin, "/nocache/r.bin", lock)
        os.unlink(ec.blob_path(harness.sha256_hex(body)))     # as eviction would
        for _ in range(3):
            r = ec.get(target, timeout=10)
            assert r.status == 200 and r.body == body, r
        assert ec.running()
    finally:
        lock.release()
    ec.wait_idle()
    r = ec.get(target)
    assert r.status == 200 and r.body == body
    assert os.path.exists(ec.blob_path(harness.sha256_hex(body)))   # stored again


def test_a_prefetch_joining_a_revalidated_fill_ends(edgecache, revalidating_origin):
    """A prefetch that joined a fill already revalidated waited on it
    forever: the fill left the table without waking it, and the file held
    a prefetch_concurrency slot."""
    origin = revalidating_origin
    ec = edgecache(allow=[origin.base], mutable=True, args=["--prefetch-concurrency", "1"])
    body = b"p" * 7000
    origin.put("nocache/p.bin", body)
    other = b"q" * 3000
    origin.put("nocache/q.bin", other)
    lock = IndexWriteLock(ec.cache_dir, hold=False)
    try:
        _revalidated_and_held(ec, origin, "/nocache/p.bin", lock)
        os.unlink(ec.blob_path(harness.sha256_hex(body)))
        r = ec.admin("POST", "/api/v1/prefetch", [origin.url("/nocache/p.bin"),
                                                   origin.url("/nocache/q.bin")])
        assert r.status == 202, r
        time.sleep(0.3)
    finally:
        lock.release()

    def files():
        deps = ec.status()["deployments"]
        return [f for d in deps for f in d["files"]]
    harness.wait_for(lambda: all(f["state"] == "done" for f in files()) and len(files()) == 2,
                     10, what="both prefetched files to be done")
    assert {f["sha256"] for f in files()} == {harness.sha256_hex(body), harness.sha256_hex(other)}


# --------------------------------------------------------------------------
# Graceful shutdown

def _throttled(origin, name, size, rate):
    return do_target("/obj/%s?size=%d&rate=%d" % (name, size, rate), origin.host)


def test_sigterm_lets_a_download_in_progress_finish(origin, edgecache):
    """SIGTERM stops new connections at once, but the answer a device is
    receiving finishes (within shutdown_grace): complete, exact, exit 0."""
    ec = edgecache(allow=[origin.base])
    size = 2 << 20
    target = _throttled(origin, "drain", size, 1 << 20)     # about 2 s
    conn = http.client.HTTPConnection("127.0.0.1", ec.port, timeout=30)
    conn.request("GET", target)
    resp = conn.getresponse()
    first = resp.read1(4096)
    t0 = time.monotonic()
    ec.process.signal(signal.SIGTERM)
    harness.wait_for(lambda: not harness.port_is_open(ec.port), 5,
                     what="the data plane to stop accepting")
    health = harness.request(ec.admin_port, "GET", "/healthz", timeout=5)
    assert health.status == 503 and b"stopping" in health.body, health
    rest = resp.read()
    assert resp.getheader("Connection", "").lower() != "keep-alive"
    conn.close()
    assert first + rest == object_bytes("drain", "0", size)
    code = ec.process.wait(30)
    assert code == 0
    assert time.monotonic() - t0 < 8


def test_sigterm_does_not_wait_past_shutdown_grace(origin, edgecache):
    """A client that stops reading does not hold the stop past
    shutdown_grace: the fill is abandoned, the connection closed, exit 0."""
    ec = edgecache(allow=[origin.base], args=["--shutdown-grace", "1s"])
    target = _throttled(origin, "slowpoke", 64 << 20, 1 << 20)
    conn = http.client.HTTPConnection("127.0.0.1", ec.port, timeout=30)
    conn.request("GET", target)
    resp = conn.getresponse()
    assert resp.status == 200
    resp.read1(1024)                # then reads nothing more
    t0 = time.monotonic()
    ec.process.signal(signal.SIGTERM)
    code = ec.process.wait(30)
    took = time.monotonic() - t0
    conn.close()
    assert code == 0
    assert 0.8 < took < 5, took
    assert ec.tmp_files_left() == []
    _assert_clean_exit(ec, code)


def test_a_second_sigterm_stops_at_once(origin, edgecache):
    ec = edgecache(allow=[origin.base], args=["--shutdown-grace", "60s"])
    conn = http.client.HTTPConnection("127.0.0.1", ec.port, timeout=30)
    conn.request("GET", _throttled(origin, "second", 64 << 20, 1 << 20))
    resp = conn.getresponse()
    resp.read1(1024)
    ec.process.signal(signal.SIGTERM)
    time.sleep(0.3)
    assert ec.running()             # draining
    t0 = time.monotonic()
    ec.process.signal(signal.SIGTERM)
    code = ec.process.wait(30)
    conn.close()
    assert code == 0 and time.monotonic() - t0 < 3


def test_sighup_is_ignored(edgecache):
    """SIGHUP does not stop the daemon (logs go to stderr: nothing to reopen)."""
    ec = edgecache()
    ec.process.signal(signal.SIGHUP)
    harness.wait_for(lambda: ec.log_lines_with("SIGHUP"), 5, what="the SIGHUP log line")
    assert ec.running()
    assert harness.request(ec.admin_port, "GET", "/healthz").status == 200


# --------------------------------------------------------------------------
# Defect 6: eviction racing a commit of the same bytes

def _index_rows(cache_dir):
    db = sqlite3.connect(os.path.join(cache_dir, "index.db"))
    try:
        objects = dict(db.execute("SELECT sha256, size FROM objects"))
        responses = [r[0] for r in db.execute("SELECT sha256 FROM responses")]
    finally:
        db.close()
    return objects, responses


def test_eviction_racing_commits_of_the_same_bytes_keeps_index_and_blobs_agreeing(origin,
                                                                                 edgecache):
    """A commit found its blob already there and dropped its temp file while
    eviction unlinked that blob; the commit's row then named a blob that
    was gone, and the counters drifted. Many URLs of three bodies, fetched
    at once through a store that evicts all the time."""
    ec = edgecache(allow=[origin.base], args=["--cache-size", "1M"])
    size = 300_000
    targets = [do_target("/obj/same%d?size=%d&u=%d" % (i % 3, size, i), origin.host)
               for i in range(60)]
    for _ in range(3):
        threads = []
        for chunk in range(6):
            part = targets[chunk::6]
            threads.append(threading.Thread(target=lambda p=part: [ec.get(t, keep_body=False)
                                                                   for t in p]))
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    ec.wait_idle()
    harness.wait_for(lambda: ec.metrics()["edgecache_objects"] == len(ec.blobs()), 10,
                     what="the object count to match the blobs")
    m = ec.metrics()
    on_disk = {os.path.basename(b): os.path.getsize(os.path.join(ec.cache_dir, b))
               for b in ec.blobs()}
    assert m["edgecache_stored_bytes"] == sum(on_disk.values())
    for t in targets[:6]:            # whatever is listed is served whole and exact
        r = ec.get(t)
        assert r.status == 200 and r.complete and len(r.body) == size
    assert ec.stop() == 0
    objects, responses = _index_rows(ec.cache_dir)
    assert set(objects) == set(on_disk), (sorted(objects), sorted(on_disk))
    assert set(responses) <= set(on_disk)


# --------------------------------------------------------------------------
# Defect 7: readers, a busy index, encoded dot segments

def test_status_counts_each_reader_once(origin, edgecache):
    ec = edgecache(allow=[origin.base])
    target = do_target("/obj/counted?size=%d&rate=%d" % (3 << 20, 1 << 20), origin.host)
    conn = http.client.HTTPConnection("127.0.0.1", ec.port, timeout=30)
    conn.request("GET", target)
    resp = conn.getresponse()
    seen = set()
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        f = _fill_state(ec, "/obj/counted?")
        if f:
            seen.add(f["readers"])
        resp.read1(65536)
    resp.read()
    conn.close()
    assert seen == {1}, seen


def test_hits_do_not_wait_on_a_locked_index(origin, edgecache):
    """The loop thread once read SQLite for every request and waited up to
    5 s on a busy database. Hits come from memory now: an index another
    process holds locked does not slow them."""
    ec = edgecache(allow=[origin.base])
    target = do_target("/obj/fast?size=1000", origin.host)
    assert ec.get(target).status == 200
    ec.wait_idle()
    lock = IndexWriteLock(ec.cache_dir)
    try:
        t = time.monotonic()
        for _ in range(20):
            r = ec.get(target, timeout=5)
            assert r.status == 200 and r.cache_status == "edgecache; hit"
        assert time.monotonic() - t < 2
        # and a new object streams to its client while its commit waits
        r = ec.get(do_target("/obj/new-while-locked?size=2000", origin.host), timeout=5)
        assert r.status == 200 and r.complete
    finally:
        lock.release()


def test_an_encoded_dot_segment_does_not_leave_a_route(origin, edgecache):
    """%2e%2e is ".." (RFC 3986): a route's request cannot climb out of the
    route's base at the origin by spelling it encoded."""
    ec = edgecache(allow=[origin.base], args=["--route", "/o/=%s/obj/" % origin.base])
    for target in ("/o/%2e%2e/_stats", "/o/%2E%2E/_stats", "/o/.%2e/_stats",
                   "/o/x/%2e%2e/%2e%2e/_stats"):
        r = ec.get(target)
        assert r.status == 404, (target, r)
        assert b"route" in r.body
    assert [x for x in origin.requests() if "_stats" in x["target"]] == []
    r = ec.get("/o/%2e/a?size=10")
    assert r.status == 200 and origin.count("/obj/a?size=10") == 1


# --------------------------------------------------------------------------
# Defect 8: credentials in logs and /status

def test_sas_signatures_and_presign_credentials_are_redacted(origin, edgecache):
    ec = edgecache(allow=[origin.base])
    secrets = ["SASSIGNATURE0xdeadbeef", "AMZSIG0123456789abcdef", "AKIAEXAMPLECREDENTIAL",
               "SECURITYTOKEN42"]
    target = do_target("/obj/signed?size=%d&rate=%d&sv=2021&sig=%s&X-Amz-Signature=%s"
                       "&X-Amz-Credential=%s&X-Amz-Security-Token=%s"
                       % ((2 << 20), 1 << 20, secrets[0], secrets[1], secrets[2], secrets[3]),
                       origin.host)
    conn = http.client.HTTPConnection("127.0.0.1", ec.port, timeout=30)
    conn.request("GET", target)
    resp = conn.getresponse()
    resp.read1(1000)
    status = ec.admin("GET", "/status").body.decode()
    resp.read()
    conn.close()
    assert "/obj/signed?" in status and "REDACTED" in status
    ec.wait_idle()
    objects = ec.admin("GET", "/api/v1/objects").body.decode()
    assert "/obj/signed?" in objects
    log = ec.log_text()
    assert "/obj/signed?" in log
    for s in secrets:
        assert s not in status and s not in objects and s not in log, s
    # the upstream still got them: only what edgecache writes out is redacted
    rec = origin.requests("/obj/signed")[0]
    assert secrets[0] in rec["target"]


# --------------------------------------------------------------------------
# The control plane

def test_a_body_announced_too_large_is_refused_before_it_is_read(edgecache):
    ec = edgecache(args=["--manifest-max-bytes", "64K"])
    s = socket.create_connection(("127.0.0.1", ec.admin_port), timeout=5)
    try:
        s.sendall(b"POST /api/v1/rewrite HTTP/1.1\r\nHost: a\r\nContent-Type: application/json"
                  b"\r\nContent-Length: 104857600\r\n\r\n{")
        head = s.recv(4096).decode(errors="replace")
    finally:
        s.close()
    assert head.startswith("HTTP/1.1 413 "), head
    assert "manifest_max_bytes" in head
    assert ec.running()


def test_the_token_can_come_from_a_file_and_is_required(edgecache, workdir):
    path = os.path.join(workdir, "token")
    with open(path, "w") as f:
        f.write("from-a-secret\n")
    ec = edgecache(args=["--admin-token-file", path])
    ec.admin_token = "from-a-secret"
    assert ec.admin("GET", "/status").status == 401
    r = ec.admin("GET", "/status", token="from-a-secre")
    assert r.status == 401 and b"Authorization: Bearer" in r.body
    assert ec.admin("GET", "/status", token="from-a-secret").status == 200
    assert ec.admin("GET", "/healthz").status == 200
