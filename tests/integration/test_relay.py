"""A proper reverse proxy (DESIGN.md §5): on routes and as a forward proxy,
methods other than GET and HEAD go to the origin uncached, bodies streamed
both ways; a successful unsafe method forgets what is stored for the URL.
The Delivery Optimization shape stays GET/HEAD only."""

import hashlib
import http.client
import json
import os

import harness
from harness import do_target, requests_counter
from origin import object_sha256


def test_put_and_post_through_a_route_reach_the_origin_intact(origin, edgecache):
    ec = edgecache(allow=[origin.base], args=["--route", "/o/=%s/" % origin.base])
    body = os.urandom(3 << 20)                       # larger than the relay's buffers
    for method in ("PUT", "POST"):
        r = ec.request(method, "/o/upload/fw.bin", body=body,
                       headers={"Content-Type": "application/x-firmware"})
        assert r.status == 201, r
        got = json.loads(r.body)
        assert got == {"received": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        rec = [x for x in origin.requests("/upload/fw.bin") if x["method"] == method][-1]
        assert rec["body_sha256"] == hashlib.sha256(body).hexdigest()
        assert rec["content_type"] == "application/x-firmware"
        assert "edgecache" in rec["via"]
    m = ec.metrics()
    assert m["edgecache_relayed_total"] == 2
    assert m["edgecache_objects"] == 0                # nothing relayed is stored


def test_a_chunked_body_through_the_forward_proxy(origin, edgecache):
    ec = edgecache(allow=[origin.base])
    conn = http.client.HTTPConnection("127.0.0.1", ec.port, timeout=30)
    parts = [os.urandom(70_000) for _ in range(5)]
    conn.request("POST", origin.url("/upload/chunked"), body=iter(parts),
                 encode_chunked=True, headers={"Transfer-Encoding": "chunked"})
    resp = conn.getresponse()
    got = json.loads(resp.read())
    assert resp.status == 201
    whole = b"".join(parts)
    assert got == {"received": len(whole), "sha256": hashlib.sha256(whole).hexdigest()}
    conn.close()


def test_a_successful_unsafe_method_invalidates_the_stored_get(origin, edgecache):
    ec = edgecache(allow=[origin.base], args=["--route", "/o/=%s/" % origin.base])
    target = "/o/obj/doc?size=5000&seed=2"
    assert ec.get(target).status == 200
    ec.wait_idle()
    assert ec.get(target).headers["Cache-Status"] == "edgecache; hit"
    # a failed POST changes nothing ...
    r = ec.request("POST", target + "&status=500", body=b"x")
    assert r.status == 500
    assert ec.get(target).headers["Cache-Status"] == "edgecache; hit"
    # ... a successful one forgets the stored response for that URL
    r = ec.request("DELETE", target, body=b"")
    assert r.status == 201, r
    harness.wait_for(lambda: ec.metrics()["edgecache_invalidations_total"] == 1, 5,
                     what="the invalidation")
    harness.wait_for(lambda: ec.get(target).headers["Cache-Status"] != "edgecache; hit", 5,
                     what="the next GET to go upstream")
    assert origin.count_path("/obj/doc") >= 3       # GET, POST, DELETE, GET again


def test_the_do_shape_stays_get_and_head_only(origin, edgecache):
    ec = edgecache(allow=[origin.base])
    r = ec.request("POST", do_target("/upload/x", origin.host), body=b"abc")
    assert r.status == 405 and b"Delivery Optimization" in r.body
    assert [x for x in origin.requests() if x["method"] == "POST"] == []


def test_relay_to_a_dead_origin_is_502(edgecache):
    dead = harness.free_port()
    ec = edgecache(allow=["http://127.0.0.1:%d" % dead],
                   args=["--route", "/d/=http://127.0.0.1:%d/" % dead])
    r = ec.request("PUT", "/d/x", body=b"abc")
    assert r.status == 502, r
    assert b"unreachable" in r.body
