"""The store across a clean restart and across a SIGKILL in the middle of a
fill."""

import os
import threading

import pytest

import harness
from harness import do_target, requests_counter
from origin import object_sha256


def test_restart_keeps_the_cache(origin, edgecache):
    ec = edgecache(allow=[origin.base])
    size = 300000
    path = "/obj/keep?size=%d" % size
    target = do_target(path, origin.host)
    digest = object_sha256("keep", "0", size)

    r = ec.get(target)
    assert r.status == 200 and r.sha256 == digest
    assert r.cache_status == "edgecache; fwd=miss; stored"
    ec.wait_idle()

    assert ec.stop() == 0, "edgecache did not exit 0 on SIGTERM"
    assert not harness.port_is_open(ec.port)
    ec.start()

    r = ec.get(target)
    assert r.status == 200 and r.sha256 == digest
    assert r.cache_status == "edgecache; hit"
    assert r.header("ETag") == harness.etag_for(digest)
    assert origin.count(path) == 1
    m = ec.metrics()
    assert m["edgecache_objects"] == 1
    assert m["edgecache_stored_bytes"] == size
    assert requests_counter(m, "hit") >= 1


def test_sigkill_during_a_fill_leaves_no_partial_blob(origin, edgecache):
    ec = edgecache(allow=[origin.base])
    size = 4 << 20
    path = "/obj/killed?size=%d&rate=%d" % (size, 2 << 20)
    target = do_target(path, origin.host)
    digest = object_sha256("killed", "0", size)

    reader = {}

    def read():
        try:
            reader["r"] = ec.get(target, keep_body=False, timeout=20)
        except Exception as e:  # reported by the assertion below
            reader["error"] = e

    t = threading.Thread(target=read)
    t.start()

    def half_sent():
        reqs = origin.requests("/obj/killed")
        return reqs and reqs[0]["sent"] >= size // 2
    harness.wait_for(half_sent, 10, what="the origin to send half the object")
    ec.kill()
    t.join(20)
    assert not t.is_alive()

    # The reader was streaming from the fill (read-while-writer) when the
    # daemon died: it has the headers and part of the body, never all of it.
    assert "r" in reader, "the reader got no response: %r" % reader.get("error")
    r = reader["r"]
    assert r.status == 200 and r.content_length == size
    assert not r.complete, "a client got a complete body from a killed daemon"
    assert 0 < r.length < size

    ec.start()
    assert ec.tmp_files() == [], "tmp/ was not emptied at start-up"
    assert not os.path.exists(ec.blob_path(digest))
    assert ec.blobs() == []
    assert ec.metrics()["edgecache_objects"] == 0

    again = ec.get(target, keep_body=False, timeout=20)
    assert again.status == 200 and again.complete
    assert again.sha256 == digest
    assert again.cache_status == "edgecache; fwd=miss; stored"
    assert origin.count(path) == 2
    ec.wait_idle()
    assert os.path.exists(ec.blob_path(digest))


def test_sigterm_right_after_a_miss_keeps_the_object(origin, edgecache):
    # The client has every byte before the fill commits (fsync, rename,
    # index row); a SIGTERM in that window lets the commit finish.
    ec = edgecache(allow=[origin.base])
    size = 4 << 20
    path = "/obj/term?size=%d" % size
    target = do_target(path, origin.host)
    r = ec.get(target, keep_body=False)
    assert r.status == 200 and r.complete
    assert ec.stop() == 0
    ec.start()
    r = ec.get(target, keep_body=False)
    assert r.cache_status == "edgecache; hit"
    assert r.sha256 == object_sha256("term", "0", size)
    assert origin.count(path) == 1


def _damage(path, how):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        if how == "truncated":
            f.truncate(size // 2)
        elif how == "header":
            f.write(b"this is not a database file at all")
        else:                               # pages in the middle
            f.seek(4096)
            f.write(os.urandom(min(size - 4096, 3 * 4096)))
    for ext in ("-wal", "-shm"):
        if os.path.exists(path + ext):
            os.unlink(path + ext)


@pytest.mark.parametrize("how", ["truncated", "header", "pages"])
def test_a_damaged_index_is_set_aside_and_rebuilt_from_the_blobs(origin, edgecache, how):
    """A truncated or corrupted index.db: the daemon says so, moves it
    aside, starts a new index that adopts every blob (named by its
    SHA-256), and serves only exact bytes afterwards."""
    ec = edgecache(allow=[origin.base])
    targets = [do_target("/obj/d%d?size=%d" % (i, 20000 + i), origin.host) for i in range(40)]
    bodies = {}
    for t in targets:
        r = ec.get(t)
        assert r.status == 200
        bodies[t] = r.body
    ec.wait_idle()
    assert ec.stop() == 0
    index = os.path.join(ec.cache_dir, "index.db")
    _damage(index, how)
    ec.start()
    assert ec.log_lines_with("is damaged", "adopting every blob"), harness.tail(ec.log_path, 20)
    aside = [f for f in os.listdir(ec.cache_dir) if f.startswith("index.db.damaged-")]
    assert aside, os.listdir(ec.cache_dir)
    m = ec.metrics()
    assert m["edgecache_objects"] == len(ec.blobs()) == 40
    for t in targets[:10]:
        r = ec.get(t)
        assert r.status == 200 and r.body == bodies[t]
    # an expectation for a stored body is a hit by hash: no upstream request
    before = origin.count_path("/obj/d20")
    url = origin.url("/obj/d20?size=20020&again=1")
    ec.expect([{"url": url, "sha256": harness.sha256_hex(bodies[targets[20]])}])
    r = ec.get(url)
    assert r.status == 200 and r.body == bodies[targets[20]]
    assert r.cache_status == "edgecache; hit; detail=by-hash"
    assert origin.count_path("/obj/d20") == before
