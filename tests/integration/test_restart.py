"""The store across a clean restart and across a SIGKILL in the middle of a
fill."""

import os
import threading

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
