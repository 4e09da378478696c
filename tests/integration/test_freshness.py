"""Mutable content follows HTTP caching (RFC 9111): no-store and private
are not stored; max-age, Expires and a bounded heuristic decide freshness;
stale responses are revalidated with the stored validators and a 304
refreshes them; when the upstream fails, stale content is served within
stale_if_error; immutable origins and payloads with a known SHA-256 are
never revalidated."""

import json
import os
import time

import pytest

import harness
from harness import do_target, requests_counter

LOCATIONS = """
        location /nostore/ { add_header Cache-Control "no-store"; }
        location /private/ { add_header Cache-Control "private, max-age=600"; }
        location /short/ { add_header Cache-Control "max-age=2"; }
        location /sie/ { add_header Cache-Control "max-age=1, stale-if-error=600"; }
        location /nocache/ { add_header Cache-Control "no-cache"; }
"""


@pytest.fixture
def origin_rfc(request, workdir):
    n = harness.Nginx(workdir, server_conf=LOCATIONS)
    request.addfinalizer(n.close)
    return n


def statuses(nginx, uri):
    """The statuses nginx logged for uri, in order."""
    nginx.count(uri)
    return [st for _, u, st, _ in nginx.log_lines() if u == uri]


def test_no_store_and_private_are_not_stored(edgecache, origin_rfc):
    ec = edgecache(allow=[origin_rfc.base], mutable=True)
    for path in ("/nostore/a.bin", "/private/b.bin"):
        origin_rfc.put(path.lstrip("/"), b"x" * 1000)
        for _ in range(2):
            r = ec.get(do_target(path, origin_rfc.host))
            assert r.status == 200 and r.body == b"x" * 1000, r
            ec.wait_idle()
        assert origin_rfc.count(path, at_least=2) == 2
    assert ec.metrics()["edgecache_objects"] == 0


def test_max_age_expiry_is_revalidated_with_a_304(edgecache, origin_rfc):
    ec = edgecache(allow=[origin_rfc.base], mutable=True)
    origin_rfc.put("short/c.bin", b"version 1" * 100)
    target = do_target("/short/c.bin", origin_rfc.host)
    assert ec.get(target).status == 200
    ec.wait_idle()
    assert ec.get(target).headers["Cache-Status"] == "edgecache; hit"   # fresh: no request
    assert statuses(origin_rfc, "/short/c.bin") == [200]
    time.sleep(2.3)
    r = ec.get(target)
    assert r.status == 200 and r.body == b"version 1" * 100
    assert r.headers["Cache-Status"] == "edgecache; fwd=stale; fwd-status=304"
    assert statuses(origin_rfc, "/short/c.bin") == [200, 304]        # conditional, no body
    assert ec.get(target).headers["Cache-Status"] == "edgecache; hit"   # fresh again
    m = ec.metrics()
    assert m['edgecache_revalidations_total{result="not-modified"}'] == 1
    # the object changes at the origin: after expiry the new bytes are served and stored
    time.sleep(2.3)
    os.utime(origin_rfc.put("short/c.bin", b"version 2" * 100), (time.time() + 5,) * 2)
    r = ec.get(target)
    assert r.body == b"version 2" * 100, r
    ec.wait_idle()
    assert ec.get(target).body == b"version 2" * 100


def test_stale_if_error_serves_stale_when_the_origin_is_down(edgecache, origin_rfc):
    ec = edgecache(allow=[origin_rfc.base], mutable=True, args=["--connect-timeout", "1s"])
    origin_rfc.put("sie/d.bin", b"keep me" * 50)
    target = do_target("/sie/d.bin", origin_rfc.host)
    assert ec.get(target).status == 200
    ec.wait_idle()
    time.sleep(1.3)
    origin_rfc.close()                                   # the origin goes away
    r = ec.get(target, timeout=10)
    assert r.status == 200 and r.body == b"keep me" * 50, r
    assert r.headers["Cache-Status"] == "edgecache; fwd=stale; detail=stale-if-error"
    assert ec.metrics()["edgecache_stale_served_total"] == 1
    # and again while the upstream is known down (no new attempt needed)
    r = ec.get(target, timeout=10)
    assert r.status == 200 and r.body == b"keep me" * 50


def test_stale_beyond_the_configured_bound_is_not_served(edgecache, origin_rfc):
    ec = edgecache(allow=[origin_rfc.base], mutable=True, args=["--stale-if-error", "0s"])
    origin_rfc.put("sie/e.bin", b"e" * 10)
    target = do_target("/sie/e.bin", origin_rfc.host)
    assert ec.get(target).status == 200
    ec.wait_idle()
    time.sleep(1.3)
    origin_rfc.close()
    assert ec.get(target, timeout=10).status == 502


def test_heuristic_freshness_is_bounded(edgecache, origin_rfc):
    ec = edgecache(allow=[origin_rfc.base], mutable=True, args=["--heuristic-max-age", "2s"])
    path = origin_rfc.put("plain/f.bin", b"f" * 100)
    old = time.time() - 10 * 86400                       # 10% of 10 days is far above 2 s
    os.utime(path, (old, old))
    target = do_target("/plain/f.bin", origin_rfc.host)
    assert ec.get(target).status == 200
    ec.wait_idle()
    assert ec.get(target).headers["Cache-Status"] == "edgecache; hit"
    assert statuses(origin_rfc, "/plain/f.bin") == [200]
    time.sleep(2.3)
    assert ec.get(target).headers["Cache-Status"] == "edgecache; fwd=stale; fwd-status=304"
    assert statuses(origin_rfc, "/plain/f.bin") == [200, 304]


def test_immutable_origins_and_known_digests_are_never_revalidated(edgecache, origin_rfc):
    # no-cache would revalidate every request, but the origin is listed as immutable
    ec = edgecache(allow=[origin_rfc.base], mutable=True, args=["--immutable", origin_rfc.base])
    origin_rfc.put("nocache/g.bin", b"g" * 100)
    target = do_target("/nocache/g.bin", origin_rfc.host)
    for _ in range(3):
        assert ec.get(target).status == 200
        ec.wait_idle()
    assert statuses(origin_rfc, "/nocache/g.bin") == [200]
    # an origin not listed: no-cache revalidates each time ...
    other = edgecache(allow=[origin_rfc.base], mutable=True)
    for _ in range(3):
        assert other.get(target).status == 200
        other.wait_idle()
    assert statuses(origin_rfc, "/nocache/g.bin") == [200, 200, 304, 304]
    # ... unless the payload's SHA-256 is known: then it is immutable
    origin_rfc.put("nocache/h.bin", b"h" * 100)
    body = json.dumps([{"url": origin_rfc.url("/nocache/h.bin"),
                        "sha256": harness.sha256_hex(b"h" * 100)}]).encode()
    assert harness.request(other.admin_port, "POST", "/api/v1/expectations", body=body).status == 200
    target = do_target("/nocache/h.bin", origin_rfc.host)
    for _ in range(3):
        assert other.get(target).status == 200
        other.wait_idle()
    assert statuses(origin_rfc, "/nocache/h.bin") == [200]


def test_the_origins_cache_control_reaches_clients_and_child_caches(edgecache, origin_rfc):
    """A child cache (or apt) below edgecache must see what the origin says
    of freshness: Cache-Control is passed on, on the miss and on hits."""
    ec = edgecache(allow=[origin_rfc.base], mutable=True)
    origin_rfc.put("nocache/i.bin", b"i" * 100)
    target = do_target("/nocache/i.bin", origin_rfc.host)
    r = ec.get(target)
    assert r.headers["Cache-Control"] == "no-cache", r.headers
    ec.wait_idle()
    r = ec.get(target)
    assert r.headers["Cache-Status"] == "edgecache; fwd=stale; fwd-status=304"
    assert r.headers["Cache-Control"] == "no-cache"
    # a child whose parent is ec revalidates through it on every request too
    child = edgecache(allow=[origin_rfc.base], mutable=True,
                      args=["--node-id", "child", "--parent", "http://127.0.0.1:%d" % ec.port])
    for _ in range(2):
        assert child.get(target).status == 200
        child.wait_idle()
    r = child.get(target)
    assert r.headers["Cache-Status"] == "edgecache; fwd=stale; fwd-status=304", r.headers
