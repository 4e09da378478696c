"""The three request shapes and the authorising query parameters all name
one cache key, hence one origin request and one blob."""

import os

from harness import do_target, requests_counter
from origin import object_sha256


def test_three_shapes_share_one_key(origin, edgecache):
    ec = edgecache(allow=[origin.base], args=["--route", "/o/=%s/" % origin.base])
    size = 200000
    path = "/obj/shape?size=%d&seed=4" % size
    digest = object_sha256("shape", "4", size)

    targets = [
        ("DO", do_target(path, origin.host)),
        ("proxy", origin.url(path)),
        ("route", "/o" + path),
        ("DO, cacheHostOrigin first",
         "/obj/shape?cacheHostOrigin=%s&size=%d&seed=4" % (origin.host, size)),
    ]
    answers = []
    for name, target in targets:
        r = ec.get(target)
        answers.append(r.cache_status)
        assert r.status == 200, (name, r, r.body[:200])
        assert r.sha256 == digest, name
        ec.wait_idle()
    assert answers == ["edgecache; fwd=miss; stored"] + ["edgecache; hit"] * 3, answers

    assert origin.stats()["total"] == 1
    assert origin.count(path) == 1, origin.stats()["counts"]
    blob = os.path.join("blobs", digest[:2], digest[2:4], digest)
    assert ec.blobs() == [blob]
    m = ec.metrics()
    assert requests_counter(m, "miss") == 1 and requests_counter(m, "hit") == 3


def test_route_shape_alone_reaches_the_origin(origin, edgecache):
    # A route names its origin without the allow-list.
    ec = edgecache(allow=[], args=["--route", "/o/=%s/" % origin.base])
    r = ec.get("/o/obj/routed?size=1000")
    assert r.status == 200 and r.sha256 == object_sha256("routed", "0", 1000)
    assert origin.count("/obj/routed?size=1000") == 1


def test_sas_tokens_are_not_part_of_the_key(origin, edgecache):
    ec = edgecache(allow=[origin.base])
    base = "/obj/sas?size=5000"
    sas_a = "&sv=2021-08-06&st=2024-01-01T00%3A00%3A00Z&se=2030-01-01T00%3A00%3A00Z" \
            "&sr=b&sp=r&spr=https&sig=AAA"
    sas_b = "&sv=2021-08-06&se=2031-01-01T00%3A00%3A00Z&sr=b&sp=r&sig=BBB"
    digest = object_sha256("sas", "0", 5000)

    a = ec.get(do_target(base + sas_a, origin.host))
    ec.wait_idle()
    b = ec.get(do_target(base + sas_b, origin.host))
    assert a.status == 200 and a.sha256 == digest
    assert b.status == 200 and b.sha256 == digest
    assert a.cache_status == "edgecache; fwd=miss; stored"
    assert b.cache_status == "edgecache; hit"

    upstream = origin.requests("/obj/sas")
    assert len(upstream) == 1, upstream
    received = upstream[0]["target"]
    assert "sig=AAA" in received and "sv=2021-08-06" in received, received
    assert "cacheHostOrigin" not in received, received


def test_s3_presign_parameters_are_not_part_of_the_key(origin, edgecache):
    ec = edgecache(allow=[origin.base])
    base = "/obj/s3?size=5000"
    amz = "&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=3600&X-Amz-Signature=%s"
    a = ec.get(origin.url(base + amz % "1111"))
    ec.wait_idle()
    b = ec.get(origin.url(base + amz % "2222"))
    assert a.status == b.status == 200
    assert a.sha256 == b.sha256 == object_sha256("s3", "0", 5000)
    upstream = origin.requests("/obj/s3")
    assert len(upstream) == 1, upstream
    assert "X-Amz-Signature=1111" in upstream[0]["target"]


def test_other_query_parameters_are_part_of_the_key(origin, edgecache):
    ec = edgecache(allow=[origin.base])
    for q in ("/obj/k?size=100", "/obj/k?size=100&v=2", "/obj/k?size=100&sig=X&v=3"):
        assert ec.get(do_target(q, origin.host)).status == 200
    assert origin.count_path("/obj/k") == 3
