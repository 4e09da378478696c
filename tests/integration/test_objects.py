"""The object list and purge on the control plane: what the store holds,
and removing a blob (a recalled image) so that the next request refetches."""

import json
import os

import harness
from harness import do_target
from origin import object_sha256


def test_list_and_purge(origin, edgecache):
    ec = edgecache(allow=[origin.base])
    names = ("one", "two")
    for n in names:
        assert ec.get(do_target("/obj/%s?size=1000" % n, origin.host)).status == 200
    ec.wait_idle()
    shas = sorted(object_sha256(n, 0, 1000) for n in names)

    r = harness.request(ec.admin_port, "GET", "/api/v1/objects?limit=1")
    assert r.status == 200, r
    page = json.loads(r.body)
    assert [o["sha256"] for o in page["objects"]] == shas[:1] and page["next"] == shas[0]
    o = page["objects"][0]
    assert o["size"] == 1000 and o["pinned"] == 0 and o["verified_by"] == "unverified"
    assert len(o["urls"]) == 1 and o["urls"][0].startswith(origin.base + "/obj/")
    r = harness.request(ec.admin_port, "GET", "/api/v1/objects?after=%s" % page["next"])
    assert [o["sha256"] for o in json.loads(r.body)["objects"]] == shas[1:]

    victim = object_sha256("one", 0, 1000)
    r = harness.request(ec.admin_port, "DELETE", "/api/v1/objects/%s" % victim)
    assert r.status == 200 and json.loads(r.body) == {"removed": victim, "size": 1000}, r
    assert not os.path.exists(ec.blob_path(victim))
    m = ec.metrics()
    assert m["edgecache_objects"] == 1 and m["edgecache_stored_bytes"] == 1000
    assert m["edgecache_purged_objects_total"] == 1
    before = origin.count_path("/obj/one")
    r = ec.get(do_target("/obj/one?size=1000", origin.host))
    assert r.headers["Cache-Status"] == "edgecache; fwd=miss; stored"
    assert origin.count_path("/obj/one") == before + 1

    assert harness.request(ec.admin_port, "DELETE", "/api/v1/objects/%s" % ("0" * 64)).status == 404
    assert harness.request(ec.admin_port, "DELETE", "/api/v1/objects/nothex").status == 400
    assert harness.request(ec.admin_port, "GET", "/api/v1/objects?limit=0").status == 400


def test_the_calls_need_the_token_when_one_is_set(origin, edgecache):
    ec = edgecache(allow=[origin.base], args=["--admin-token", "s3cret"])
    assert harness.request(ec.admin_port, "GET", "/api/v1/objects").status == 401
    r = harness.request(ec.admin_port, "GET", "/api/v1/objects",
                        headers={"Authorization": "Bearer s3cret"})
    assert r.status == 200 and json.loads(r.body) == {"objects": [], "next": None}
