"""Nested edge on loopback (DESIGN.md §4, §5): a child edgecache whose
parent is another edgecache, loops, a parent that lies, the parent going
away, and manifests handed up the hierarchy. (The same hierarchy in network
namespaces, where each layer reaches only the next, is test_nested_netns.py.)"""

import json
import os
import time

import harness
from harness import do_target, requests_counter
from origin import object_sha256


def layers(edgecache, origin, child_args=(), parent_args=()):
    """(l4, l3): l3's parent is l4; both may fetch from the origin's host."""
    l4 = edgecache(allow=[origin.base], args=["--node-id", "l4"] + list(parent_args))
    l3 = edgecache(allow=[origin.base],
                   args=["--node-id", "l3", "--parent", "http://127.0.0.1:%d" % l4.port,
                         "--parent-admin-url", "http://127.0.0.1:%d" % l4.admin_port,
                         "--stall-timeout", "3s"] + list(child_args))
    return l4, l3


def test_a_miss_at_the_child_crosses_each_layer_once(origin, edgecache):
    l4, l3 = layers(edgecache, origin)
    size = 3 << 20
    target = do_target("/obj/chain?size=%d&seed=1" % size, origin.host)
    r = l3.get(target)
    assert r.status == 200 and r.sha256 == object_sha256("chain", 1, size), r
    # RFC 9211: each cache on the path adds its entry after the upstream's
    assert r.headers["Cache-Status"] == "edgecache; fwd=miss; stored, edgecache; fwd=miss; stored"
    l3.wait_idle()
    l4.wait_idle()
    r = l3.get(target)
    assert r.headers["Cache-Status"] == "edgecache; hit"
    # the parent saw one miss (in DO shape, with the child's Via), then the
    # device asked the parent directly: a hit there
    assert requests_counter(l4.metrics(), "miss") == 1
    assert l4.get(target).headers["Cache-Status"] == "edgecache; hit"
    assert origin.count_path("/obj/chain") == 1
    sha = object_sha256("chain", 1, size)
    assert os.path.exists(l3.blob_path(sha)) and os.path.exists(l4.blob_path(sha))
    ups = l3.status()["upstreams"]
    assert [u["target"] for u in ups] == ["http://127.0.0.1:%d" % l4.port]
    assert ups[0]["up"] and ups[0]["last_success"]
    assert l3.metrics()['edgecache_upstream_up{upstream="http://127.0.0.1:%d"}' % l4.port] == 1


def test_two_caches_that_are_each_others_parent_answer_508(origin, edgecache):
    a = edgecache(allow=[origin.base], args=["--node-id", "cache-a"], start=False)
    b = edgecache(allow=[origin.base], args=["--node-id", "cache-b"], start=False)
    a.args += ["--parent", "http://127.0.0.1:%d" % b.port]
    b.args += ["--parent", "http://127.0.0.1:%d" % a.port]
    a.start()
    b.start()
    r = a.get(do_target("/obj/loop?size=100", origin.host), timeout=10)
    assert r.status == 508, r
    assert b"loop" in r.body
    time.sleep(0.5)                                  # nothing goes on echoing
    ma, mb = a.metrics(), b.metrics()
    assert ma["edgecache_loops_refused_total"] + mb["edgecache_loops_refused_total"] == 1
    assert ma["edgecache_fills_started_total"] == 1 and mb["edgecache_fills_started_total"] == 1
    assert origin.stats()["total"] == 0
    assert ma["edgecache_objects"] == 0 and mb["edgecache_objects"] == 0


def test_a_parent_whose_bytes_do_not_match_its_repr_digest_is_not_stored(origin, edgecache):
    # The scripted origin plays a lying parent: DO-shape requests reach it,
    # and it sends a flipped byte under the Repr-Digest of the true bytes.
    size = 200_000
    child = edgecache(allow=[origin.base],
                      args=["--node-id", "l3", "--parent", origin.base])
    target = do_target("/obj/liar?size=%d&corrupt=1000&repr=1" % size, origin.host)
    r = child.get(target)
    assert len(r.body) < size                        # never the complete wrong body
    child.wait_idle()
    m = child.metrics()
    assert m['edgecache_verify_failures_total{source="repr-digest"}'] == 1
    assert m["edgecache_objects"] == 0 and child.blobs() == []


def test_the_child_keeps_serving_when_the_parent_is_gone(origin, edgecache):
    l4, l3 = layers(edgecache, origin)
    kept = [do_target("/obj/kept%d?size=50000" % i, origin.host) for i in range(3)]
    for t in kept:
        assert l3.get(t).status == 200
    l3.wait_idle()
    l4.stop()                                         # the uplink dies
    for t in kept:
        assert l3.get(t).headers["Cache-Status"] == "edgecache; hit"
    t0 = time.monotonic()
    r = l3.get(do_target("/obj/notkept?size=10", origin.host), timeout=10)
    assert r.status == 502, r
    assert time.monotonic() - t0 < 3
    up = l3.status()["upstreams"][0]
    assert not up["up"] and up["last_success"] and up["failures"] >= 1
    # while it is down, further misses fail at once without asking it
    t0 = time.monotonic()
    for _ in range(5):
        assert l3.get(do_target("/obj/notkept?size=10", origin.host)).status == 502
    assert time.monotonic() - t0 < 1
    assert l3.metrics()['edgecache_upstream_up{upstream="http://127.0.0.1:%d"}' % l4.port] == 0
    l3.restart()                                      # and after a restart too
    for t in kept:
        assert l3.get(t).headers["Cache-Status"] == "edgecache; hit"


def test_parent_fallback_to_origin(origin, edgecache):
    dead = harness.free_port()
    child = edgecache(allow=[origin.base],
                      args=["--node-id", "l3", "--parent", "http://127.0.0.1:%d" % dead,
                            "--parent-fallback-to-origin", "true"])
    r = child.get(do_target("/obj/fb?size=1000", origin.host))
    assert r.status == 200 and r.sha256 == object_sha256("fb", 0, 1000), r
    child.wait_idle()
    m = child.metrics()
    assert m["edgecache_parent_fallbacks_total"] == 1
    assert m["edgecache_objects"] == 1


def test_a_deployment_prefetched_at_the_child_is_pulled_into_both_layers(origin, edgecache):
    l4, l3 = layers(edgecache, origin)
    urls = [origin.url("/obj/dep%d?size=300000" % i) for i in range(3)]
    r = harness.request(l3.admin_port, "POST", "/api/v1/prefetch", body=json.dumps(urls).encode())
    assert r.status == 202, r

    def both_done():
        for ec in (l3, l4):
            deps = ec.status()["deployments"]
            if not deps or deps[0]["files_done"] != 3:
                return False
        return True
    harness.wait_for(both_done, 20, what="the deployment at both layers")
    for i in range(3):
        assert origin.count_path("/obj/dep%d" % i) == 1
    assert l4.metrics()["edgecache_objects"] == 3 and l3.metrics()["edgecache_objects"] == 3
    assert l3.metrics()['edgecache_parent_forwards_total{result="ok"}'] == 1
