"""Upstream faults during a fill: a body cut short, connections reset
mid-body, an origin that ignores Range or changes the object under a resume,
an origin that stalls. Each test checks what the client got, what was
stored, what was counted and what the origin was asked."""

import email.utils
import os
import time

import pytest

import harness
from harness import do_target, is_prefix, sha256_hex
from origin import DEFAULT_LM, changed_seed, object_bytes, object_sha256

MIB = 1 << 20


def etag_of(name, seed, size):
    return '"%s"' % object_sha256(name, seed, size)


def stored_only(ec, hexdigest):
    return ec.blobs() == [os.path.relpath(ec.blob_path(hexdigest), ec.cache_dir)]


def assert_nothing_stored(ec):
    m = ec.metrics()
    assert m["edgecache_objects"] == 0, m
    assert ec.blobs() == []
    left = ec.tmp_files_left()
    assert left == [], "temp files left behind: %r" % left


def assert_short(r, whole):
    """A failed fill's client: never a complete body, and only a prefix of
    the object's bytes (or a 502/504 when it had no headers yet)."""
    if r.status in (502, 504):
        return
    assert r.status == 200, r
    assert r.content_length == len(whole), r
    assert not r.complete and r.length < len(whole), "a failed fill gave a whole body: %r" % r
    if r.body is not None:
        assert is_prefix(r.body, whole), "the client got bytes of something else"
    else:
        assert r.sha256 == sha256_hex(whole[:r.length]), "the client got bytes of something else"


def test_origin_fault_knobs(origin):
    """The origin on its own: without these, the tests below say nothing."""
    size = MIB
    data = object_bytes("f", "0", size)
    etag = etag_of("f", "0", size)

    path = "/obj/f?size=%d&short=1000&faults=1" % size
    r = harness.request(origin.port, "GET", path)
    assert r.status == 200 and r.content_length == size
    assert r.length == 1000 and not r.complete and r.body == data[:1000]
    assert r.header("ETag") == etag
    assert r.header("Last-Modified") == email.utils.formatdate(DEFAULT_LM, usegmt=True)
    r = harness.request(origin.port, "GET", path, headers={"Range": "bytes=1000-", "If-Range": etag})
    assert r.status == 206 and r.complete and r.body == data[1000:]
    r = harness.request(origin.port, "GET", path, headers={"Range": "bytes=1000-", "If-Range": '"other"'})
    assert r.status == 200 and r.body == data

    path = "/obj/f?size=%d&reset=30,60" % size
    cut = size * 30 // 100
    r = harness.request(origin.port, "GET", path)
    assert r.status == 200 and r.body == data[:cut] and isinstance(r.error, ConnectionResetError)
    r = harness.request(origin.port, "GET", path, headers={"Range": "bytes=%d-" % cut})
    assert r.status == 206 and r.body == data[cut:size * 60 // 100] and not r.complete
    r = harness.request(origin.port, "GET", path)
    assert r.status == 200 and r.complete and r.body == data
    recs = origin.gets("/obj/f")[3:]
    assert [(x["index"], x["fault"], x["range"]) for x in recs] == \
        [(0, "reset", None), (1, "reset", "bytes=%d-" % cut), (2, None, None)]

    path = "/obj/c?size=%d&reset=50&changed=1" % size
    r = harness.request(origin.port, "GET", path)
    assert r.body == object_bytes("c", "0", size)[:size // 2]
    r = harness.request(origin.port, "GET", path,
                        headers={"Range": "bytes=%d-" % (size // 2), "If-Range": etag_of("c", "0", size)})
    new = object_bytes("c", changed_seed("0"), size)
    assert r.status == 200 and r.body == new and r.header("ETag") == etag_of("c", changed_seed("0"), size)

    path = "/obj/n?size=%d&norange=1" % size
    r = harness.request(origin.port, "GET", path, headers={"Range": "bytes=10-"})
    assert r.status == 200 and r.length == size

    t = time.monotonic()
    r = harness.request(origin.port, "GET", "/obj/s?size=%d&stall=1000" % size, timeout=0.5)
    assert r.status == 200 and r.length == 1000 and not r.complete
    assert 0.4 < time.monotonic() - t < 2
    rec = origin.finished_requests("/obj/s")[0]
    assert rec["fault"] == "stall" and rec["sent"] == 1000


@pytest.mark.parametrize("validator", ["etag", "last-modified"])
def test_short_body_is_resumed_with_a_range(origin, edgecache, validator):
    ec = edgecache(allow=[origin.base])
    size, cut = 4 * MIB, MIB + 123
    name = "short-" + validator
    path = "/obj/%s?size=%d&short=%d&faults=1" % (name, size, cut)
    if validator == "last-modified":
        path += "&noetag=1&lm=1600000000"
        if_range = email.utils.formatdate(1600000000, usegmt=True)
    else:
        if_range = etag_of(name, "0", size)
    digest = object_sha256(name, "0", size)
    target = do_target(path, origin.host)

    r = ec.get(target, keep_body=False)
    assert r.status == 200 and r.content_length == size, r
    assert r.complete and r.sha256 == digest, r
    assert r.cache_status == "edgecache; fwd=miss; stored"

    gets = origin.finished_requests("/obj/" + name)
    assert len(gets) == 2, gets
    assert gets[0]["range"] is None and gets[0]["fault"] == "short" and gets[0]["sent"] == cut
    assert gets[1]["range"] == "bytes=%d-" % cut, gets[1]
    assert gets[1]["if_range"] == if_range, gets[1]
    assert gets[1]["status"] == 206 and gets[1]["complete"]

    ec.wait_idle()
    m = ec.metrics()
    assert m["edgecache_fill_resumes_total"] == 1
    assert m.get("edgecache_fill_restarts_total", 0) == 0
    assert m["edgecache_fills_completed_total"] == 1
    assert m["edgecache_fills_failed_total"] == 0
    assert m["edgecache_upstream_bytes_total"] == size, "bytes were fetched twice"
    assert stored_only(ec, digest) and ec.tmp_files_left() == []
    hit = ec.get(target, keep_body=False)
    assert hit.cache_status == "edgecache; hit" and hit.sha256 == digest
    assert len(origin.gets("/obj/" + name)) == 2


def test_three_resets_are_three_resumes(origin, edgecache):
    ec = edgecache(allow=[origin.base])
    size = 32 * MIB
    path = "/obj/resets?size=%d&reset=30,60,90" % size
    digest = object_sha256("resets", "0", size)

    r = ec.get(do_target(path, origin.host), keep_body=False, timeout=60)
    assert r.status == 200 and r.content_length == size, r
    assert r.complete and r.sha256 == digest, r

    gets = origin.finished_requests("/obj/resets")
    assert [g["fault"] for g in gets] == ["reset", "reset", "reset", None], gets
    assert [g["range"] for g in gets] == \
        [None] + ["bytes=%d-" % (size * p // 100) for p in (30, 60, 90)]
    assert [g["if_range"] for g in gets[1:]] == [etag_of("resets", "0", size)] * 3
    assert [g["status"] for g in gets] == [200, 206, 206, 206]

    ec.wait_idle()
    m = ec.metrics()
    assert m["edgecache_fill_resumes_total"] == 3
    assert m["edgecache_fills_completed_total"] == 1
    assert m["edgecache_fills_failed_total"] == 0
    assert m["edgecache_upstream_bytes_total"] == size
    assert stored_only(ec, digest) and ec.tmp_files_left() == []
    with open(ec.blob_path(digest), "rb") as f:
        assert sha256_hex(f.read()) == digest


def test_more_breaks_than_resume_attempts_fail_cleanly(origin, edgecache):
    ec = edgecache(allow=[origin.base], args=["--resume-attempts", "2"])
    size = 32 * MIB
    path = "/obj/broken?size=%d&reset=30,60,90" % size
    data = object_bytes("broken", "0", size)
    target = do_target(path, origin.host)

    r = ec.get(target, keep_body=False, timeout=60)
    assert_short(r, data)

    gets = origin.finished_requests("/obj/broken")
    assert [g["range"] for g in gets] == [None, "bytes=%d-" % (size * 30 // 100),
                                          "bytes=%d-" % (size * 60 // 100)], gets
    ec.wait_idle()
    m = ec.metrics()
    assert m["edgecache_fill_resumes_total"] == 2
    assert m["edgecache_fills_failed_total"] == 1
    assert m["edgecache_fills_completed_total"] == 0
    assert_nothing_stored(ec)
    # The origin's resets are spent: the next request is a new fill, whole.
    again = ec.get(target, keep_body=False, timeout=60)
    assert again.status == 200 and again.complete and again.sha256 == sha256_hex(data), again
    ec.wait_idle()
    gets = origin.finished_requests("/obj/broken")
    assert len(gets) == 4 and gets[3]["range"] is None and gets[3]["complete"], gets
    assert stored_only(ec, sha256_hex(data))


def test_origin_that_ignores_range_makes_the_fill_restart(origin, edgecache):
    ec = edgecache(allow=[origin.base])
    size = 8 * MIB
    path = "/obj/norange?size=%d&rate=%d&reset=50&norange=1" % (size, 16 * MIB)
    digest = object_sha256("norange", "0", size)

    r = ec.get(do_target(path, origin.host), keep_body=False, timeout=30)
    assert r.status == 200 and r.content_length == size, r
    assert r.complete and r.sha256 == digest, "the client's bytes are not the object: %r" % r

    gets = origin.finished_requests("/obj/norange")
    assert len(gets) == 2, gets
    assert gets[1]["range"] == "bytes=%d-" % (size // 2)
    assert gets[1]["status"] == 200 and gets[1]["complete"]
    ec.wait_idle()
    m = ec.metrics()
    assert m["edgecache_fill_restarts_total"] == 1
    assert m["edgecache_fills_completed_total"] == 1
    assert m["edgecache_fills_failed_total"] == 0
    assert stored_only(ec, digest) and ec.tmp_files_left() == []
    with open(ec.blob_path(digest), "rb") as f:
        assert sha256_hex(f.read()) == digest


def test_object_changed_under_a_resume_is_never_mixed(origin, edgecache):
    ec = edgecache(allow=[origin.base])
    size = 8 * MIB
    path = "/obj/moved?size=%d&rate=%d&reset=50&changed=1" % (size, 16 * MIB)
    old = object_bytes("moved", "0", size)
    new = object_bytes("moved", changed_seed("0"), size)
    target = do_target(path, origin.host)

    first = ec.get(target, timeout=30)
    assert first.status == 200, first
    assert not first.complete and first.length < size, first
    assert is_prefix(first.body, old), "the client got a mixture of the old and new object"

    gets = origin.finished_requests("/obj/moved")
    assert len(gets) == 2, gets
    assert gets[1]["range"] == "bytes=%d-" % (size // 2)
    assert gets[1]["if_range"] == etag_of("moved", "0", size)
    assert gets[1]["status"] == 200 and gets[1]["version"] == 1
    ec.wait_idle()
    m = ec.metrics()
    assert m["edgecache_fills_failed_total"] == 1
    assert m["edgecache_fills_completed_total"] == 0
    assert_nothing_stored(ec)

    second = ec.get(target, timeout=30)
    assert second.status == 200 and second.complete, second
    assert second.body == new
    assert second.cache_status == "edgecache; fwd=miss; stored"
    ec.wait_idle()
    assert stored_only(ec, sha256_hex(new)) and ec.tmp_files_left() == []


def test_stalled_origin_is_resumed_once_then_the_fill_fails(origin, edgecache):
    ec = edgecache(allow=[origin.base],
                   args=["--stall-timeout", "1s", "--resume-attempts", "1"])
    size = MIB
    path = "/obj/stuck?size=%d&stall=1000" % size
    data = object_bytes("stuck", "0", size)

    t = time.monotonic()
    r = ec.get(do_target(path, origin.host), timeout=20)
    elapsed = time.monotonic() - t
    assert_short(r, data)
    assert 1.5 <= elapsed < 10, "the fill ended after %.2fs" % elapsed

    # Both upstream connections were closed by edgecache, not left hanging.
    gets = origin.finished_requests("/obj/stuck", timeout=5)
    assert [(g["range"], g["fault"]) for g in gets] == [(None, "stall"), ("bytes=1000-", "stall")], gets
    ec.wait_idle()
    m = ec.metrics()
    assert m["edgecache_fill_resumes_total"] == 1
    assert m["edgecache_fills_failed_total"] == 1
    assert m["edgecache_fills_completed_total"] == 0
    assert_nothing_stored(ec)


def test_short_body_without_resumes_fails_the_length_check(origin, edgecache):
    ec = edgecache(allow=[origin.base], args=["--resume-attempts", "0"])
    size = 4 * MIB
    path = "/obj/cut?size=%d&rate=%d&short=%d&faults=1" % (size, 8 * MIB, MIB)
    data = object_bytes("cut", "0", size)
    target = do_target(path, origin.host)

    r = ec.get(target)
    assert_short(r, data)
    ec.wait_idle()
    m = ec.metrics()
    assert m.get('edgecache_verify_failures_total{source="content-length"}', 0) == 1, m
    assert m["edgecache_fills_failed_total"] == 1
    assert m.get("edgecache_fill_resumes_total", 0) == 0
    assert_nothing_stored(ec)
    assert len(origin.gets("/obj/cut")) == 1

    r = ec.get(target, keep_body=False)
    assert r.status == 200 and r.complete and r.sha256 == sha256_hex(data)
    ec.wait_idle()
    assert stored_only(ec, sha256_hex(data))
