"""Integrity: a fill whose bytes disagree with what is expected of them (a
registered expectation, the origin's digest headers) is never stored and
never reaches a client whole; a registered SHA-256 that the store already
holds is served without the origin; require_verified refuses what nothing
vouches for; and the expectations call checks its input and its token."""

import hashlib
import json
import os
import threading

import pytest

from harness import (b64_of_hex, do_target, is_prefix, repr_digest_for,
                     requests_counter, sha256_hex)
import harness
from origin import corrupted, object_bytes

MIB = 1 << 20
SIZE = 2 * MIB
RATE = 4 * MIB      # half a second per body: clients have their headers long before the end

SOURCES = ("expectation", "repr-digest", "content-md5", "content-length")


def verify_failures(m, source):
    return m.get('edgecache_verify_failures_total{source="%s"}' % source, 0)


def forms(hexdigest):
    """A digest as the log may write it: hex or base64."""
    return (hexdigest, b64_of_hex(hexdigest))


class Case:
    """One way of telling edgecache what the bytes must be."""

    def __init__(self, ident, knobs, register, source, corrupt_at, algo):
        self.ident, self.knobs, self.register = ident, knobs, register
        self.source, self.corrupt_at, self.algo = source, corrupt_at, algo

    def __repr__(self):
        return self.ident


CASES = [
    # The corrupt byte is the last one: the byte a fill holds back.
    Case("expectation", "", True, "expectation", SIZE - 1, "sha256"),
    Case("repr-digest", "&repr=1", False, "repr-digest", SIZE // 2, "sha256"),
    Case("digest", "&digest=1", False, "repr-digest", 0, "sha256"),
    Case("content-md5", "&md5=1", False, "content-md5", SIZE // 2, "md5"),
    Case("x-ms-blob-content-md5", "&msmd5=1", False, "content-md5", SIZE - 1, "md5"),
]


def test_origin_digest_knobs(origin):
    """The origin on its own: corrupt= flips one byte; the digest headers
    describe the true bytes; faults=1 makes only the first GET bad."""
    good = object_bytes("k", "0", 5000)
    path = "/obj/k?size=5000&corrupt=7&faults=1&repr=1&digest=1&md5=1&msmd5=1"
    first = harness.request(origin.port, "GET", path)
    assert first.status == 200 and first.complete and first.content_length == 5000
    assert first.body != good and first.body == corrupted(good, 7)
    assert [i for i in range(5000) if first.body[i] != good[i]] == [7]
    sha_b64 = b64_of_hex(sha256_hex(good))
    md5_b64 = b64_of_hex(hashlib.md5(good).hexdigest())
    assert first.header("Repr-Digest") == "sha-256=:%s:" % sha_b64
    assert first.header("Digest") == "SHA-256=%s" % sha_b64
    assert first.header("Content-MD5") == md5_b64
    assert first.header("x-ms-blob-content-md5") == md5_b64
    second = harness.request(origin.port, "GET", path)
    assert second.body == good
    assert [r["index"] for r in origin.gets("/obj/k")] == [0, 1]


@pytest.mark.parametrize("case", CASES, ids=repr)
def test_wrong_bytes_are_never_stored_nor_served_whole(origin, edgecache, case):
    ec = edgecache(allow=[origin.base])
    name = "bad-" + case.ident
    # faults=1: the same URL serves corrupt bytes once, then the true ones.
    path = "/obj/%s?size=%d&rate=%d&corrupt=%d&faults=1%s" % (
        name, SIZE, RATE, case.corrupt_at, case.knobs)
    good = object_bytes(name, "0", SIZE)
    bad = corrupted(good, case.corrupt_at)
    if case.register:
        ec.expect([{"url": origin.url(path), "sha256": sha256_hex(good), "size": SIZE}])
    target = do_target(path, origin.host)

    first = ec.get(target)
    assert first.status == 200, first
    assert first.content_length == SIZE
    assert not first.complete and first.length < SIZE, \
        "a client received the whole corrupt body: %r" % first
    assert is_prefix(first.body, bad), "the client got bytes the origin never sent"

    ec.wait_idle()
    m = ec.metrics()
    for source in SOURCES:
        want = 1 if source == case.source else 0
        assert verify_failures(m, source) == want, (source, m)
    assert m["edgecache_fills_failed_total"] == 1
    assert m["edgecache_fills_completed_total"] == 0
    assert m["edgecache_objects"] == 0
    assert ec.blobs() == []
    assert not os.path.exists(ec.blob_path(sha256_hex(bad)))
    assert ec.tmp_files_left() == []
    digest = getattr(hashlib, case.algo)
    lines = ec.log_lines_with("/obj/" + name, forms(digest(good).hexdigest()),
                              forms(digest(bad).hexdigest()))
    assert lines, "no log line names the URL, the expected and the actual %s" % case.algo

    second = ec.get(target)
    assert second.status == 200 and second.complete, second
    assert second.body == good
    assert second.cache_status == "edgecache; fwd=miss; stored"
    ec.wait_idle()
    third = ec.get(target)
    assert third.status == 200 and third.body == good
    assert third.cache_status == "edgecache; hit"

    gets = origin.finished_requests("/obj/" + name)
    assert [(r["index"], r["range"]) for r in gets] == [(0, None), (1, None)], gets
    m = ec.metrics()
    assert verify_failures(m, case.source) == 1
    assert m["edgecache_fills_completed_total"] == 1
    assert ec.blobs() == [os.path.relpath(ec.blob_path(sha256_hex(good)), ec.cache_dir)]
    with open(ec.blob_path(sha256_hex(good)), "rb") as f:
        assert f.read() == good


def test_twenty_clients_on_a_wrong_fill_none_gets_a_whole_body(origin, edgecache):
    ec = edgecache(allow=[origin.base])
    size, clients = 4 * MIB, 20
    path = "/obj/crowd?size=%d&rate=%d&corrupt=%d" % (size, 4 * MIB, size - 1000)
    good = object_bytes("crowd", "0", size)
    bad = corrupted(good, size - 1000)
    ec.expect([{"url": origin.url(path), "sha256": sha256_hex(good), "size": size}])
    target = do_target(path, origin.host)

    results = [None] * clients
    errors = []
    barrier = threading.Barrier(clients)

    def client(i):
        try:
            barrier.wait(10)
            results[i] = ec.get(target, keep_body=False, timeout=30)
        except Exception as e:  # reported below with the client's number
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "clients still running after 60 s"
    assert errors == []

    for i, r in enumerate(results):
        assert r.status == 200, (i, r)
        assert not r.complete and r.length < size, "client %d got a whole body: %r" % (i, r)
        assert r.sha256 == sha256_hex(bad[:r.length]), \
            "client %d got bytes the origin never sent" % i
    assert len(origin.gets("/obj/crowd")) == 1, "the clients did not share one fill"

    ec.wait_idle()
    m = ec.metrics()
    assert verify_failures(m, "expectation") == 1
    assert m["edgecache_fills_failed_total"] == 1
    assert m["edgecache_objects"] == 0
    assert ec.blobs() == [] and ec.tmp_files_left() == []


def test_hit_by_hash_needs_no_origin_request(origin, edgecache):
    ec = edgecache(allow=[origin.base])
    size = MIB
    data = object_bytes("shared", "0", size)
    digest = sha256_hex(data)
    first = "/obj/shared?size=%d" % size
    mirror = "/obj/shared?size=%d&mirror=2" % size     # same bytes, another key
    # One in hex, one in base64: both forms are accepted.
    ec.expect([{"url": origin.url(first), "sha256": digest, "size": size},
               {"url": origin.url(mirror), "sha256": b64_of_hex(digest)}])

    r = ec.get(do_target(first, origin.host))
    assert r.status == 200 and r.body == data
    assert r.cache_status == "edgecache; fwd=miss; stored"
    ec.wait_idle()

    r = ec.get(do_target(mirror, origin.host))
    assert r.status == 200, r
    assert r.body == data
    assert r.cache_status == "edgecache; hit; detail=by-hash"
    assert r.header("Repr-Digest") == repr_digest_for(digest)
    again = ec.get(do_target(mirror, origin.host))
    assert again.status == 200 and again.body == data
    assert again.cache_status.startswith("edgecache; hit"), again.cache_status

    assert origin.count(first) == 1
    assert origin.count(mirror) == 0
    assert origin.stats()["total"] == 1
    m = ec.metrics()
    assert requests_counter(m, "hit") == 2
    assert requests_counter(m, "miss") == 1
    assert m["edgecache_fills_started_total"] == 1
    assert m["edgecache_objects"] == 1
    assert ec.blobs() == [os.path.relpath(ec.blob_path(digest), ec.cache_dir)]


def test_require_verified_refuses_what_nothing_vouches_for(origin, edgecache):
    ec = edgecache(allow=[origin.base], args=["--require-verified", "true"])
    size = 100000

    plain = "/obj/unvouched?size=%d" % size
    for _ in range(2):
        r = ec.get(do_target(plain, origin.host))
        assert r.status == 502, r
        assert b"require_verified" in r.body, r.body
    ec.wait_idle()
    assert ec.metrics()["edgecache_objects"] == 0
    assert ec.blobs() == [] and ec.tmp_files_left() == []

    expected = "/obj/vouched?size=%d" % size
    ec.expect([{"url": origin.url(expected), "sha256": sha256_hex(object_bytes("vouched", "0", size)),
                "size": size}])
    headed = "/obj/headed?size=%d&repr=1" % size
    for name, path in (("vouched", expected), ("headed", headed)):
        data = object_bytes(name, "0", size)
        r = ec.get(do_target(path, origin.host))
        assert r.status == 200 and r.complete and r.body == data, (name, r)
        assert r.cache_status == "edgecache; fwd=miss; stored", name
        ec.wait_idle()
        r = ec.get(do_target(path, origin.host))
        assert r.status == 200 and r.body == data and r.cache_status == "edgecache; hit", (name, r)
        assert origin.count(path) == 1, name
        assert os.path.exists(ec.blob_path(sha256_hex(data))), name
    assert ec.metrics()["edgecache_objects"] == 2
    assert len(ec.blobs()) == 2


def test_expectations_call_rejects_bad_input(origin, edgecache):
    ec = edgecache(allow=[origin.base])
    url = origin.url("/obj/e?size=10")
    sha = sha256_hex(object_bytes("e", "0", 10))
    bad = [
        ("malformed JSON", '[{"url": "%s", "sha256": ' % url),
        ("sha256 not hex nor base64", [{"url": url, "sha256": "xyz"}]),
        ("63 hex digits", [{"url": url, "sha256": sha[:63]}]),
        ("65 hex digits", [{"url": url, "sha256": sha + "0"}]),
    ]
    for what, body in bad:
        r = ec.admin("POST", "/api/v1/expectations", body)
        assert r.status == 400, (what, r)
        assert r.body.strip(), "400 without a message for %s" % what
    r = ec.admin("POST", "/api/v1/expectations", [{"url": url, "sha256": sha, "size": 10}])
    assert r.status == 200, r
    assert json.loads(r.body) == {"registered": 1}
    r = ec.get(do_target("/obj/e?size=10", origin.host))
    assert r.status == 200 and r.body == object_bytes("e", "0", 10)


def test_expectations_call_needs_the_admin_token(origin, edgecache):
    token = "factory-floor-7"
    ec = edgecache(allow=[origin.base], args=["--admin-token", token])
    size = 100000
    honest = "/obj/honest?size=%d" % size
    lied = "/obj/lied?size=%d&rate=%d" % (size, size * 4)
    wrong = sha256_hex(b"not the object")

    # Refused registrations must not take effect: had they, the honest
    # object would fail verification below.
    entries = [{"url": origin.url(honest), "sha256": wrong}]
    for auth in (None, "not-" + token):
        r = ec.admin("POST", "/api/v1/expectations", entries, token=auth)
        assert r.status == 401, (auth, r)
    ec.expect([{"url": origin.url(lied), "sha256": wrong, "size": size},
               {"url": origin.url("/obj/other?size=1"), "sha256": wrong}], token=token)

    r = ec.get(do_target(honest, origin.host))
    assert r.status == 200 and r.complete and r.body == object_bytes("honest", "0", size), r
    r = ec.get(do_target(lied, origin.host))
    assert r.status in (200, 502), r
    assert not (r.status == 200 and r.complete), \
        "the registered expectation was not applied: %r" % r
    ec.wait_idle()
    m = ec.metrics()
    assert verify_failures(m, "expectation") == 1
    assert m["edgecache_objects"] == 1


@pytest.mark.parametrize("vouch", ["expectation", "repr-digest"])
def test_last_byte_waits_for_the_verdict(origin, edgecache, vouch):
    """A chunked body that ends a second after its last byte: every byte
    is there to be sent long before the digest can be checked, yet no
    client of a wrong fill ever holds the whole body."""
    ec = edgecache(allow=[origin.base])
    size = MIB
    name = "late-" + vouch
    path = "/obj/%s?size=%d&chunked=1&endwait=1&corrupt=%d&faults=1" % (name, size, size - 1)
    good = object_bytes(name, "0", size)
    bad = corrupted(good, size - 1)
    if vouch == "expectation":
        ec.expect([{"url": origin.url(path), "sha256": sha256_hex(good)}])
    else:
        path += "&repr=1"
    target = do_target(path, origin.host)

    first = ec.get(target, timeout=20)
    assert first.status == 200, first
    assert not first.complete, first
    assert first.length < size, "the client received every byte of a wrong body"
    assert is_prefix(first.body, bad)
    ec.wait_idle()
    m = ec.metrics()
    assert verify_failures(m, vouch) == 1
    assert m["edgecache_objects"] == 0 and ec.blobs() == []

    second = ec.get(target, timeout=20)
    assert second.status == 200 and second.complete and second.body == good, second
    ec.wait_idle()
    assert ec.blobs() == [os.path.relpath(ec.blob_path(sha256_hex(good)), ec.cache_dir)]
