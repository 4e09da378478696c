"""What edgecache answers when it will not or cannot fetch, and what an
origin error does to the cache."""

import time

import harness
from harness import do_target, requests_counter


def test_host_not_on_the_allow_list_is_403(origin, edgecache):
    ec = edgecache(allow=[origin.base])
    # Same origin process, but named by a host the allow-list does not hold.
    r = ec.get(do_target("/obj/f?size=10", "localhost:%d" % origin.port))
    assert r.status == 403, r
    assert b"allow" in r.body
    r = ec.get("http://localhost:%d/obj/f?size=10" % origin.port)
    assert r.status == 403, r
    assert b"allow" in r.body
    other_port = harness.free_port()
    r = ec.get(do_target("/obj/f?size=10", "127.0.0.1:%d" % other_port))
    assert r.status == 403, r
    assert origin.stats()["total"] == 0
    m = ec.metrics()
    assert requests_counter(m, "error") == 3
    assert m["edgecache_fills_started_total"] == 0


def test_post_put_delete_are_405(origin, edgecache):
    ec = edgecache(allow=[origin.base])
    target = do_target("/obj/m?size=10", origin.host)
    for method in ("POST", "PUT", "DELETE"):
        r = ec.request(method, target, body=b"x=1")
        assert r.status == 405, (method, r)
    assert origin.stats()["total"] == 0
    assert ec.get(target).status == 200
    assert requests_counter(ec.metrics(), "error") == 3


def test_dead_origin_is_502(edgecache):
    dead = harness.free_port()
    ec = edgecache(allow=["http://127.0.0.1:%d" % dead])
    r = ec.get(do_target("/obj/x?size=10", "127.0.0.1:%d" % dead))
    assert r.status == 502, r
    text = r.body.decode().strip()
    assert text and "\n" not in text, r.body
    m = ec.metrics()
    assert requests_counter(m, "error") == 1
    assert m["edgecache_fills_failed_total"] == 1
    assert m["edgecache_fills_in_flight"] == 0
    assert m["edgecache_objects"] == 0
    assert ec.tmp_files_left() == []


def test_origin_that_stalls_is_504(origin, edgecache):
    ec = edgecache(allow=[origin.base], args=["--stall-timeout", "1s"])
    t = time.monotonic()
    r = ec.get(do_target("/obj/slowhdr?size=10&delay=3", origin.host), timeout=10)
    elapsed = time.monotonic() - t
    assert r.status == 504, r
    assert 0.8 <= elapsed < 2.8, "answered after %.2fs" % elapsed
    m = ec.metrics()
    assert requests_counter(m, "error") == 1
    assert m["edgecache_fills_failed_total"] == 1
    assert m["edgecache_objects"] == 0


def test_origin_404_is_passed_on_and_not_stored(origin, edgecache):
    ec = edgecache(allow=[origin.base])
    target = do_target("/obj/missing?size=10&status=404", origin.host)
    for _ in range(2):
        r = ec.get(target)
        assert r.status == 404, r
        assert r.cache_status != "edgecache; hit"
    assert origin.count("/obj/missing?size=10&status=404") == 2
    m = ec.metrics()
    assert requests_counter(m, "pass") == 2
    assert requests_counter(m, "hit") == 0
    assert m["edgecache_objects"] == 0
    assert ec.blobs() == []


def test_path_without_a_shape_is_404_naming_route(origin, edgecache):
    ec = edgecache(allow=[origin.base], args=["--route", "/o/=%s/" % origin.base])
    for target in ("/obj/a?size=10", "/other/obj/a?size=10", "/"):
        r = ec.get(target)
        assert r.status == 404, (target, r)
        assert b"route" in r.body, (target, r.body)
    assert origin.stats()["total"] == 0
    assert requests_counter(ec.metrics(), "error") == 3
