"""Byte ranges, validators and HEAD, on a miss and on a hit."""

import email.utils
import http.client

import harness
from harness import do_target, requests_counter
from origin import object_bytes, object_sha256

MIB = 1 << 20


def wait_fill_done(ec, n=1):
    harness.wait_for(lambda: ec.metrics()["edgecache_fills_completed_total"] >= n, 20,
                     what="%d completed fill(s)" % n)


def test_range_on_a_miss_is_served_from_the_fill(origin, edgecache):
    ec = edgecache(allow=[origin.base])
    size = 8 * MIB
    path = "/obj/rmiss?size=%d&rate=%d" % (size, 8 * MIB)
    data = object_bytes("rmiss", "0", size)
    first, last = 5000000, 5999999

    r = ec.get(do_target(path, origin.host), headers={"Range": "bytes=%d-%d" % (first, last)})
    assert r.status == 206, r
    assert r.header("Content-Range") == "bytes %d-%d/%d" % (first, last, size)
    assert r.content_length == last - first + 1
    assert r.body == data[first:last + 1]
    assert r.cache_status.startswith("edgecache; fwd=miss"), r.cache_status

    wait_fill_done(ec)
    full = ec.get(do_target(path, origin.host), keep_body=False)
    assert full.status == 200 and full.sha256 == object_sha256("rmiss", "0", size)
    assert full.cache_status == "edgecache; hit"

    upstream = origin.finished_requests("/obj/rmiss")
    assert len(upstream) == 1, upstream
    assert upstream[0]["range"] is None, "the fill asked the origin for a range"
    assert upstream[0]["sent"] == size


def test_sequential_mib_ranges_ride_one_fill(origin, edgecache):
    ec = edgecache(allow=[origin.base])
    size = 8 * MIB
    path = "/obj/seq?size=%d&rate=%d" % (size, 4 * MIB)
    data = object_bytes("seq", "0", size)
    target = do_target(path, origin.host)

    conn = http.client.HTTPConnection("127.0.0.1", ec.port, timeout=30)
    try:
        answers = []
        for off in range(0, size, MIB):
            r = ec.get(target, conn=conn, headers={"Range": "bytes=%d-%d" % (off, off + MIB - 1)})
            answers.append(r)
            assert r.status == 206, (off, r)
            assert r.header("Content-Range") == "bytes %d-%d/%d" % (off, off + MIB - 1, size)
            assert r.body == data[off:off + MIB], "wrong bytes at offset %d" % off
    finally:
        conn.close()

    upstream = origin.finished_requests("/obj/seq")
    assert len(upstream) == 1, upstream
    # The early ranges were answered while the origin was still sending.
    assert answers[0].t_end < upstream[0]["end"]
    assert answers[0].cache_status.startswith("edgecache; fwd=miss")
    m = ec.metrics()
    assert m["edgecache_fills_started_total"] == 1
    assert requests_counter(m, "miss") + requests_counter(m, "collapsed") + \
        requests_counter(m, "hit") == size // MIB


def test_ranges_and_validators_on_a_hit(origin, edgecache):
    ec = edgecache(allow=[origin.base])
    size = 100000
    lm = 1600000000
    path = "/obj/val?size=%d&lm=%d" % (size, lm)
    target = do_target(path, origin.host)
    data = object_bytes("val", "0", size)
    etag = harness.etag_for(object_sha256("val", "0", size))
    lm_text = email.utils.formatdate(lm, usegmt=True)

    assert ec.get(target).body == data
    ec.wait_idle()
    first = ec.get(target)
    assert first.cache_status == "edgecache; hit"
    assert first.header("ETag") == etag

    def get(**headers):
        return ec.get(target, headers={k.replace("_", "-"): v for k, v in headers.items()})

    r = get(Range="bytes=100-199")
    assert r.status == 206 and r.body == data[100:200]
    assert r.header("Content-Range") == "bytes 100-199/%d" % size
    assert r.content_length == 100
    assert r.cache_status == "edgecache; hit"

    r = get(Range="bytes=99000-")
    assert r.status == 206 and r.body == data[99000:]
    assert r.header("Content-Range") == "bytes 99000-%d/%d" % (size - 1, size)

    r = get(Range="bytes=-500")
    assert r.status == 206 and r.body == data[-500:]
    assert r.header("Content-Range") == "bytes %d-%d/%d" % (size - 500, size - 1, size)

    r = get(Range="bytes=99990-200000")
    assert r.status == 206 and r.body == data[99990:]

    r = get(Range="bytes=%d-%d" % (size, size + 10))
    assert r.status == 416
    assert r.header("Content-Range") == "bytes */%d" % size

    r = get(Range="bytes=0-9", If_Range='"0000stale"')
    assert r.status == 200 and r.body == data
    r = get(Range="bytes=0-9", If_Range=etag)
    assert r.status == 206 and r.body == data[:10]

    r = get(If_None_Match=etag)
    assert r.status == 304 and r.body == b""
    assert r.header("ETag") == etag
    r = get(If_None_Match='"0000stale"')
    assert r.status == 200 and r.body == data

    r = get(If_Modified_Since=lm_text)
    assert r.status == 304 and r.body == b""
    r = get(If_Modified_Since=email.utils.formatdate(lm + 86400, usegmt=True))
    assert r.status == 304
    r = get(If_Modified_Since=email.utils.formatdate(lm - 86400, usegmt=True))
    assert r.status == 200 and r.body == data

    assert origin.count_path("/obj/val") == 1


def test_unsatisfiable_range_on_a_miss(origin, edgecache):
    ec = edgecache(allow=[origin.base])
    target = do_target("/obj/r416?size=1000", origin.host)
    r = ec.get(target, headers={"Range": "bytes=5000-6000"})
    assert r.status == 416, r
    assert r.header("Content-Range") == "bytes */1000"
    assert origin.count_path("/obj/r416") <= 1
    r = ec.get(target)
    assert r.status == 200 and r.body == object_bytes("r416", "0", 1000)
    assert origin.count_path("/obj/r416") == 1


def test_head_on_cold_then_get_then_head_on_hit(origin, edgecache):
    ec = edgecache(allow=[origin.base])
    size = 2 * MIB
    path = "/obj/head?size=%d&rate=%d" % (size, 4 * MIB)
    target = do_target(path, origin.host)

    h = ec.head(target)
    assert h.status == 200, h
    assert h.content_length == size
    assert h.length == 0
    assert origin.count_path("/obj/head") <= 1

    g = ec.get(target, keep_body=False)
    assert g.status == 200 and g.sha256 == object_sha256("head", "0", size)
    assert g.cache_status in ("edgecache; fwd=miss; collapsed", "edgecache; hit"), g.cache_status

    ec.wait_idle()
    h2 = ec.head(target)
    assert h2.status == 200 and h2.content_length == size and h2.length == 0
    assert h2.cache_status == "edgecache; hit"
    assert h2.header("ETag") == harness.etag_for(object_sha256("head", "0", size))

    upstream = origin.requests("/obj/head")
    assert [u["method"] for u in upstream] == ["GET"], upstream
    m = ec.metrics()
    assert m["edgecache_fills_started_total"] == 1
