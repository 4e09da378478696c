"""edgecache as an HTTP cache (RFC 9110, RFC 9111), against the scripted
origin's /s/ paths, which answer exactly what each test scripts: headers
kept end to end, validators, 304 updates, Age, request headers upstream,
Authorization, Vary, cacheable statuses, stale rules, clock skew, per-URL
failures, redirects, package-mirror defaults, other methods and safe
collapsing.

Most requests use the Delivery Optimization shape; the forward-proxy shape
(an absolute URL on the request line) where a test says so. Every test
starts its own daemon; tests about freshness pass mutable=True so that the
harness does not list the origin as immutable."""

import base64
import email.utils
import gzip
import http.client
import json
import socket
import threading
import time
from urllib.parse import quote

import pytest

import harness
from harness import do_target, requests_counter

NODE_ID = "ec-test"

EDGECACHE_OWN = ("age", "cache-status", "repr-digest", "via", "content-length",
                 "accept-ranges", "content-range")


def http_date(t):
    return email.utils.formatdate(t, usegmt=True)


def values(r, name):
    """Every value of header name in r, in order ([] when absent)."""
    return r.headers.get_all(name) or []


def get(ec, origin, path, **kw):
    """GET path of the origin through ec, Delivery Optimization shape."""
    return ec.get(do_target(path, origin.host), **kw)


def body_of(r):
    return r.body.decode(errors="replace") if r.body is not None else None


def upstream(ec, base):
    """The /status "upstreams" entry for base, or None."""
    for u in ec.status().get("upstreams", []):
        if u.get("target") == base:
            return u
    return None


def miss_then_hit(ec, origin, path, **kw):
    """A request that fills the cache, then one that must be a hit: both
    answers, asserting both are 200."""
    first = get(ec, origin, path, **kw)
    assert first.status == 200, (first, first.body)
    ec.wait_idle()
    second = get(ec, origin, path, **kw)
    assert second.status == 200, (second, second.body)
    assert second.cache_status == "edgecache; hit", (second, second.headers)
    return first, second


def in_thread(fn):
    """Runs fn in a thread; returns a function that joins it and returns
    fn's result (or raises its exception)."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:          # noqa: B036 - re-raised in the joiner
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()

    def join(timeout=30):
        t.join(timeout)
        assert not t.is_alive(), "the request did not end within %ss" % timeout
        if "error" in out:
            raise out["error"]
        return out["value"]
    return join


# --------------------------------------------------------------------------
# 1. Headers end to end

def test_origin_headers_are_replayed_on_the_miss_and_on_every_hit(origin, edgecache):
    """What the origin says about its payload (type, encoding, disposition,
    links, its own metadata, freshness, validators, Date) reaches every
    device byte for byte and in order, once each, whether the answer is
    streamed from the fill or served from the store; hop-by-hop fields,
    and fields the origin names in Connection, are not passed on."""
    ec = edgecache(allow=[origin.base], mutable=True)
    now = time.time()
    date = http_date(now)
    replayed = [
        ("Content-Type", "application/x-firmware"),
        ("X-Custom-A", "alpha; beta=1"),
        ("x-ms-meta-foo", "Bar Baz"),
        ("Content-Encoding", "gzip"),
        ("Content-Disposition", 'attachment; filename="fw-1.2.swu"'),
        ("Link", '<https://example.com/fw-1.2.sig>; rel="signature"'),
        ("Cache-Control", "max-age=3600"),
        ("Expires", http_date(now + 3600)),
        ("Last-Modified", http_date(1700000000)),
        ("ETag", '"fw-1.2"'),
    ]
    hop = [("Connection", "X-Hop"), ("X-Hop", "secret"), ("Keep-Alive", "timeout=5"),
           ("Proxy-Authenticate", 'Basic realm="origin"')]
    # the origin's Age and Via are edgecache's to rewrite: never duplicated
    own = [("Age", "0"), ("Via", "1.1 origin-cdn")]
    origin.script("/s/hdrs", [{"headers": [[n, v] for n, v in replayed + hop + own]
                               + [["Date", date]],
                               "gzip": "firmware 1.2 payload " * 20}])
    payload = gzip.compress(("firmware 1.2 payload " * 20).encode(), mtime=0)
    names = {n.lower() for n, _ in replayed}

    miss, hit = miss_then_hit(ec, origin, "/s/hdrs")
    proxied = ec.get(origin.url("/s/hdrs"))                # forward-proxy shape, same key
    assert proxied.cache_status == "edgecache; hit", proxied.headers.items()
    for label, r in (("miss", miss), ("hit", hit), ("forward-proxy hit", proxied)):
        assert r.body == payload, "%s: the gzip body was changed" % label
        for name, value in replayed:
            assert values(r, name) == [value], (label, name, r.headers.items())
        # in the origin's order
        got = [(n.lower(), v) for n, v in r.headers.items() if n.lower() in names]
        assert got == [(n.lower(), v) for n, v in replayed], (label, r.headers.items())
        assert values(r, "X-Hop") == [], (label, r.headers.items())
        assert values(r, "Keep-Alive") == [], (label, r.headers.items())
        assert values(r, "Proxy-Authenticate") == [], (label, r.headers.items())
        for v in values(r, "Connection"):
            assert "x-hop" not in v.lower(), (label, r.headers.items())
        for name in EDGECACHE_OWN:
            assert len(values(r, name)) <= 1, (label, name, r.headers.items())
        assert values(r, "Content-Length") == [str(len(payload))], label
        assert len(values(r, "Cache-Status")) == 1, label
    assert values(hit, "Date") == [date], hit.headers.items()
    assert values(proxied, "Date") == [date], proxied.headers.items()
    assert origin.count_path("/s/hdrs") == 1


# --------------------------------------------------------------------------
# 2. ETag

def test_the_origins_etag_is_kept_and_both_etags_validate(origin, edgecache):
    """A device that already holds the payload (under the origin's ETag or
    under its SHA-256) is told 304, not sent it again; every hit names its
    digest in Repr-Digest."""
    ec = edgecache(allow=[origin.base], mutable=True)
    body = b"payload with an origin etag\n" * 10
    sha = harness.sha256_hex(body)
    origin.script("/s/etag", [{"body_b64": base64.b64encode(body).decode(), "etag": '"o-1"',
                               "headers": [["Cache-Control", "max-age=3600"]]}])
    miss, hit = miss_then_hit(ec, origin, "/s/etag")
    assert values(miss, "ETag") == ['"o-1"']
    assert values(hit, "ETag") == ['"o-1"']
    assert values(hit, "Repr-Digest") == [harness.repr_digest_for(sha)]
    for inm in ('"o-1"', harness.etag_for(sha)):
        r = get(ec, origin, "/s/etag", headers={"If-None-Match": inm})
        assert r.status == 304 and r.body == b"", (inm, r)
        assert values(r, "ETag") == ['"o-1"'], (inm, r.headers.items())
    r = get(ec, origin, "/s/etag", headers={"If-None-Match": '"other"'})
    assert r.status == 200 and r.body == body
    assert values(r, "Repr-Digest") == [harness.repr_digest_for(sha)]
    assert origin.count_path("/s/etag") == 1


def test_without_an_origin_etag_a_hit_carries_the_sha256_etag(origin, edgecache):
    """When the origin gives no ETag, the stored payload's SHA-256 is its
    ETag, so devices can still revalidate cheaply."""
    ec = edgecache(allow=[origin.base], mutable=True)
    body = b"payload without an etag\n" * 10
    sha = harness.sha256_hex(body)
    origin.script("/s/noetag", [{"body_b64": base64.b64encode(body).decode(),
                                 "headers": [["Cache-Control", "max-age=3600"]]}])
    _, hit = miss_then_hit(ec, origin, "/s/noetag")
    assert hit.body == body
    assert values(hit, "ETag") == [harness.etag_for(sha)]
    assert values(hit, "Repr-Digest") == [harness.repr_digest_for(sha)]
    r = get(ec, origin, "/s/noetag", headers={"If-None-Match": harness.etag_for(sha)})
    assert r.status == 304 and r.body == b""


# --------------------------------------------------------------------------
# 3. A 304 updates the stored headers

def test_a_304_from_the_origin_updates_the_stored_headers(origin, edgecache):
    """RFC 9111 §4.3.4: when the origin revalidates with new header values
    (a longer max-age, new metadata), devices see the new values from then
    on, each once, without the body crossing the uplink again."""
    ec = edgecache(allow=[origin.base], mutable=True)
    body = "payload v1\n" * 20
    origin.script("/s/upd", [{"body": body, "etag": '"v1"',
                              "headers": [["Cache-Control", "max-age=1"], ["X-Version", "one"]],
                              "headers_304": [["ETag", '"v1"'], ["Cache-Control", "max-age=60"],
                                              ["X-Version", "two"]]}])
    r = get(ec, origin, "/s/upd")
    assert r.status == 200 and values(r, "X-Version") == ["one"]
    ec.wait_idle()
    time.sleep(1.3)
    r = get(ec, origin, "/s/upd")
    assert r.status == 200 and body_of(r) == body
    assert '"v1"' in origin.headers_of("/s/upd", 1).get("if-none-match", ""), \
        origin.headers_of("/s/upd", 1)
    assert r.cache_status == "edgecache; fwd=stale; fwd-status=304", r.headers.items()
    assert values(r, "X-Version") == ["two"], r.headers.items()
    assert values(r, "Cache-Control") == ["max-age=60"], r.headers.items()
    ec.wait_idle()
    r = get(ec, origin, "/s/upd")
    assert r.status == 200 and body_of(r) == body
    assert r.cache_status == "edgecache; hit", r.headers.items()
    assert values(r, "X-Version") == ["two"], r.headers.items()
    assert values(r, "Cache-Control") == ["max-age=60"], r.headers.items()
    assert values(r, "ETag") == ['"v1"']
    assert origin.count_path("/s/upd") == 2


# --------------------------------------------------------------------------
# 4. Age

def test_age_counts_the_time_spent_in_caches_above(origin, edgecache):
    """An origin (or CDN) answer that is already 100 s old is at least
    100 s old on the miss and on every hit, growing with the time stored."""
    ec = edgecache(allow=[origin.base], mutable=True)
    origin.script("/s/aged", [{"body": "aged",
                               "headers": [["Cache-Control", "max-age=3600"], ["Age", "100"]]}])
    r = get(ec, origin, "/s/aged")
    stored = time.monotonic()
    assert r.status == 200 and len(values(r, "Age")) == 1, r.headers.items()
    assert int(values(r, "Age")[0]) >= 100
    ec.wait_idle()
    time.sleep(1.1)
    r = get(ec, origin, "/s/aged")
    assert r.cache_status == "edgecache; hit"
    assert len(values(r, "Age")) == 1, r.headers.items()
    age = int(values(r, "Age")[0])
    assert 101 <= age <= 100 + (time.monotonic() - stored) + 2, age
    assert origin.count_path("/s/aged") == 1


def test_a_response_stale_on_arrival_is_not_a_hit(origin, edgecache):
    """max-age=50 with Age: 100 is already stale when it arrives: the next
    device's request goes to the origin."""
    ec = edgecache(allow=[origin.base], mutable=True)
    origin.script("/s/old", [{"body": "old",
                              "headers": [["Cache-Control", "max-age=50"], ["Age", "100"]]}])
    assert get(ec, origin, "/s/old").status == 200
    ec.wait_idle()
    r = get(ec, origin, "/s/old")
    assert r.status == 200 and r.cache_status != "edgecache; hit", r.headers.items()
    assert origin.count_path("/s/old") == 2


# --------------------------------------------------------------------------
# 5. Request headers upstream

def test_device_request_headers_reach_the_origin(origin, edgecache):
    """The origin sees who is asking (device id, user agent, language) on
    the fill, and the Via chain: the device's proxies, then this node."""
    ec = edgecache(allow=[origin.base], mutable=True, args=["--node-id", NODE_ID])
    origin.script("/s/req", [{"body": "for you", "headers": [["Cache-Control", "max-age=60"]]}])
    r = get(ec, origin, "/s/req", headers={
        "X-Device-Id": "abc", "User-Agent": "devsim/1", "Accept-Language": "fr",
        "Via": "1.1 devproxy"})
    assert r.status == 200 and r.body == b"for you"
    h = origin.headers_of("/s/req", 0)
    assert h.get("x-device-id") == "abc", h
    assert h.get("user-agent") == "devsim/1", h
    assert h.get("accept-language") == "fr", h
    via = [p.strip() for p in h.get("via", "").split(",")]
    assert len(via) == 2 and via[0] == "1.1 devproxy", h
    assert via[1] == "1.1 %s" % NODE_ID or via[1].startswith("1.1 %s " % NODE_ID), h


def test_a_range_on_a_miss_fills_the_whole_object(origin, edgecache):
    """A device asking for the first 10 bytes of a payload nobody has
    fetched yet gets them (206) while the cache fetches the whole object:
    the origin is not asked for a range."""
    ec = edgecache(allow=[origin.base], mutable=True)
    body = bytes(range(256)) * 4
    origin.script("/s/rng", [{"body_b64": base64.b64encode(body).decode(),
                              "headers": [["Cache-Control", "max-age=60"]]}])
    r = get(ec, origin, "/s/rng", headers={"Range": "bytes=0-9"})
    assert r.status == 206 and r.body == body[:10], r
    assert values(r, "Content-Range") == ["bytes 0-9/%d" % len(body)]
    h = origin.headers_of("/s/rng", 0)
    assert "range" not in h and "if-range" not in h, h
    ec.wait_idle()
    r = get(ec, origin, "/s/rng")
    assert r.status == 200 and r.body == body and r.cache_status == "edgecache; hit"
    assert origin.count_path("/s/rng") == 1


def test_the_devices_hop_by_hop_headers_are_not_forwarded(origin, edgecache):
    """Connection, Keep-Alive and TE describe the device's own connection:
    they (and any field Connection names) do not go upstream."""
    ec = edgecache(allow=[origin.base], mutable=True)
    origin.script("/s/hop", [{"body": "x", "headers": [["Cache-Control", "max-age=60"]]}])
    r = get(ec, origin, "/s/hop", headers={
        "Connection": "close, X-Client-Hop", "X-Client-Hop": "1",
        "Keep-Alive": "timeout=5", "TE": "trailers"})
    assert r.status == 200
    h = origin.headers_of("/s/hop", 0)
    assert "keep-alive" not in h and "te" not in h and "x-client-hop" not in h, h
    conn = h.get("connection", "").lower()
    assert "close" not in conn and "x-client-hop" not in conn, h


# --------------------------------------------------------------------------
# 6. Authorization

def test_an_authorized_response_is_not_served_to_others(origin, edgecache):
    """RFC 9111 §3.5: what the origin answered to an authenticated device
    is not handed to a device without credentials, unless the origin says
    it may be (public, s-maxage)."""
    ec = edgecache(allow=[origin.base], mutable=True)
    origin.script("/s/auth", [{"body": "for bearer x", "headers": [["Cache-Control", "max-age=60"]]},
                              {"body": "for anyone", "headers": [["Cache-Control", "max-age=60"]]}])
    r = get(ec, origin, "/s/auth", headers={"Authorization": "Bearer x"})
    assert r.status == 200 and r.body == b"for bearer x"
    assert origin.headers_of("/s/auth", 0).get("authorization") == "Bearer x"
    ec.wait_idle()
    r = get(ec, origin, "/s/auth")
    assert r.body != b"for bearer x", r
    assert origin.count_path("/s/auth") == 2
    assert "authorization" not in origin.headers_of("/s/auth", 1)
    assert r.status == 200 and r.body == b"for anyone"


@pytest.mark.parametrize("cc", ["public, max-age=60", "s-maxage=60"])
def test_an_authorized_response_marked_shareable_is_a_hit(origin, edgecache, cc):
    """public or s-maxage says a shared cache may serve an authenticated
    answer to anyone: the second device's request is a hit."""
    ec = edgecache(allow=[origin.base], mutable=True)
    origin.script("/s/shared", [{"body": "shared", "headers": [["Cache-Control", cc]]}])
    r = get(ec, origin, "/s/shared", headers={"Authorization": "Bearer x"})
    assert r.status == 200 and r.body == b"shared"
    assert origin.headers_of("/s/shared", 0).get("authorization") == "Bearer x"
    ec.wait_idle()
    r = get(ec, origin, "/s/shared")
    assert r.status == 200 and r.body == b"shared"
    assert r.cache_status == "edgecache; hit", r.headers.items()
    assert origin.count_path("/s/shared") == 1


# --------------------------------------------------------------------------
# 7. Vary

def vary_lang_script(default_body="neutral"):
    def variant(text):
        return {"body": text, "headers": [["Vary", "Accept-Language"],
                                          ["Cache-Control", "max-age=60"]]}
    return [{"select": {"header": "Accept-Language",
                        "cases": {"fr": variant("bonjour"), "en": variant("hello")},
                        "default": variant(default_body)}}]


def test_vary_stores_one_variant_per_language(origin, edgecache):
    """RFC 9111 §4.1: a French device gets the French payload and an
    English one the English payload, each fetched once; language tags
    compare without regard to case and surrounding spaces."""
    ec = edgecache(allow=[origin.base], mutable=True)
    origin.script("/s/lang", vary_lang_script())
    a = get(ec, origin, "/s/lang", headers={"Accept-Language": "fr"})
    assert a.status == 200 and a.body == b"bonjour"
    ec.wait_idle()
    b = get(ec, origin, "/s/lang", headers={"Accept-Language": "en"})
    assert b.status == 200 and b.body == b"hello"
    ec.wait_idle()
    assert origin.count_path("/s/lang") == 2
    c = get(ec, origin, "/s/lang", headers={"Accept-Language": "fr"})
    assert c.body == b"bonjour" and c.cache_status == "edgecache; hit", c.headers.items()
    e = get(ec, origin, "/s/lang", headers={"Accept-Language": "en"})
    assert e.body == b"hello" and e.cache_status == "edgecache; hit", e.headers.items()
    d = get(ec, origin, "/s/lang", headers={"Accept-Language": "  FR "})
    assert d.body == b"bonjour" and d.cache_status == "edgecache; hit", d.headers.items()
    assert origin.count_path("/s/lang") == 2


def test_vary_without_the_header_is_not_served_the_stored_variant(origin, edgecache):
    """A device that states no language is not handed the French variant
    stored for another device."""
    ec = edgecache(allow=[origin.base], mutable=True)
    origin.script("/s/lang2", vary_lang_script())
    assert get(ec, origin, "/s/lang2", headers={"Accept-Language": "fr"}).body == b"bonjour"
    ec.wait_idle()
    r = get(ec, origin, "/s/lang2")
    assert r.status == 200 and r.body != b"bonjour", r
    assert r.body == b"neutral"
    assert origin.count_path("/s/lang2") == 2


def test_vary_accept_encoding_compares_as_a_set(origin, edgecache):
    """Accept-Encoding lists in another order name the same variant; a
    different list is a different variant."""
    ec = edgecache(allow=[origin.base], mutable=True)
    origin.script("/s/ae", [{"body": "encoded", "headers": [["Vary", "Accept-Encoding"],
                                                            ["Cache-Control", "max-age=60"]]}])
    assert get(ec, origin, "/s/ae", headers={"Accept-Encoding": "gzip, br"}).status == 200
    ec.wait_idle()
    r = get(ec, origin, "/s/ae", headers={"Accept-Encoding": "br,gzip"})
    assert r.status == 200 and r.body == b"encoded"
    assert r.cache_status == "edgecache; hit", r.headers.items()
    assert origin.count_path("/s/ae") == 1
    assert origin.headers_of("/s/ae", 0).get("accept-encoding") == "gzip, br"
    # another set is another variant
    r = get(ec, origin, "/s/ae", headers={"Accept-Encoding": "gzip"})
    assert r.status == 200 and r.cache_status != "edgecache; hit", r.headers.items()
    assert origin.count_path("/s/ae") == 2


def test_vary_star_is_never_a_hit(origin, edgecache):
    """Vary: * says the answer depends on more than the request shows:
    every request goes to the origin."""
    ec = edgecache(allow=[origin.base], mutable=True)
    origin.script("/s/star", [{"body": "star", "headers": [["Vary", "*"],
                                                           ["Cache-Control", "max-age=60"]]}])
    for _ in range(3):
        r = get(ec, origin, "/s/star")
        assert r.status == 200 and r.body == b"star"
        assert r.cache_status != "edgecache; hit", r.headers.items()
        ec.wait_idle()
    assert origin.count_path("/s/star") == 3


# --------------------------------------------------------------------------
# 8. Statuses

def test_a_404_with_explicit_freshness_is_served_from_the_cache(origin, edgecache):
    """RFC 9110 §15.1: a "not found" the origin says is good for a minute
    spares the uplink the second time."""
    ec = edgecache(allow=[origin.base], mutable=True)
    origin.script("/s/nf", [{"status": 404, "body": "not here\n",
                             "headers": [["Cache-Control", "max-age=60"]]}])
    r = get(ec, origin, "/s/nf")
    assert r.status == 404 and r.body == b"not here\n"
    ec.wait_idle()
    r = get(ec, origin, "/s/nf")
    assert r.status == 404 and r.body == b"not here\n"
    assert (r.cache_status or "").startswith("edgecache; hit"), r.headers.items()
    assert origin.count_path("/s/nf") == 1


@pytest.mark.parametrize("status", [404, 503])
def test_an_error_without_freshness_is_fetched_each_time(origin, edgecache, status):
    """A 404 with neither freshness nor Last-Modified, and a 503 (never
    heuristically cacheable), are asked of the origin every time."""
    ec = edgecache(allow=[origin.base], mutable=True)
    origin.script("/s/err", [{"status": status, "body": "error %d\n" % status}])
    for _ in range(2):
        r = get(ec, origin, "/s/err")
        assert r.status == status and r.body == b"error %d\n" % status
        ec.wait_idle()
    assert origin.count_path("/s/err") == 2


def test_a_500_with_explicit_freshness_is_a_hit(origin, edgecache):
    """A 500 is not heuristically cacheable, but explicit freshness allows
    storing it: the second request is answered from the cache."""
    ec = edgecache(allow=[origin.base], mutable=True)
    origin.script("/s/ise", [{"status": 500, "body": "broken\n",
                              "headers": [["Cache-Control", "max-age=60"]]}])
    assert get(ec, origin, "/s/ise").status == 500
    ec.wait_idle()
    r = get(ec, origin, "/s/ise")
    assert r.status == 500 and r.body == b"broken\n"
    assert (r.cache_status or "").startswith("edgecache; hit"), r.headers.items()
    assert origin.count_path("/s/ise") == 1


def test_a_stored_301_is_replayed_with_its_location(origin, edgecache):
    """With --max-redirects 0 a permanent redirect is the device's to
    follow: it is passed on with its Location, and stored."""
    ec = edgecache(allow=[origin.base], mutable=True, args=["--max-redirects", "0"])
    location = origin.url("/s/new")
    origin.script("/s/moved", [{"status": 301, "headers": [["Location", location],
                                                           ["Cache-Control", "max-age=60"]]}])
    origin.script("/s/new", [{"body": "new place"}])
    r = get(ec, origin, "/s/moved")
    assert r.status == 301 and values(r, "Location") == [location], r.headers.items()
    ec.wait_idle()
    r = get(ec, origin, "/s/moved")
    assert r.status == 301 and values(r, "Location") == [location], r.headers.items()
    assert (r.cache_status or "").startswith("edgecache; hit"), r.headers.items()
    assert origin.count_path("/s/moved") == 1
    assert origin.count_path("/s/new") == 0


def test_an_expectation_is_never_satisfied_by_a_stored_404(origin, edgecache):
    """Once a manifest says what a URL's bytes are, a "not found" stored
    earlier for it is not the answer: the device gets the payload."""
    ec = edgecache(allow=[origin.base], mutable=True)
    payload = b"the real firmware\n" * 30
    origin.script("/s/late", [
        {"status": 404, "body": "not yet\n", "headers": [["Cache-Control", "max-age=60"]]},
        {"body_b64": base64.b64encode(payload).decode()}])
    assert get(ec, origin, "/s/late").status == 404
    ec.wait_idle()
    ec.expect([{"url": origin.url("/s/late"), "sha256": harness.sha256_hex(payload)}])
    r = get(ec, origin, "/s/late")
    assert r.status == 200 and r.body == payload, r
    assert origin.count_path("/s/late") == 2


# --------------------------------------------------------------------------
# 9. Stale rules

def stale_setup(origin, edgecache, path, cc):
    """Stores a max-age=1 style response for path whose origin then resets
    every connection; returns the daemon, 1.3 s later, and the body."""
    ec = edgecache(allow=[origin.base], mutable=True, args=["--stale-if-error", "7d"])
    body = "stored %s\n" % cc
    origin.script(path, [{"body": body, "headers": [["Cache-Control", cc]]}, {"reset": True}])
    r = get(ec, origin, path)
    assert r.status == 200 and body_of(r) == body
    ec.wait_idle()
    time.sleep(1.3)
    return ec, body


def test_stale_if_error_serves_the_stored_response_when_the_origin_fails(origin, edgecache):
    """When the origin breaks the connection, a device still gets the
    stored payload (within stale_if_error), marked as served stale."""
    ec, body = stale_setup(origin, edgecache, "/s/sie", "max-age=1")
    r = get(ec, origin, "/s/sie", timeout=10)
    assert r.status == 200 and body_of(r) == body, r
    assert r.cache_status == "edgecache; fwd=stale; detail=stale-if-error", r.headers.items()
    assert origin.count_path("/s/sie") >= 2


@pytest.mark.parametrize("cc", ["max-age=1, must-revalidate", "max-age=1, stale-if-error=0",
                                "max-age=1, proxy-revalidate", "s-maxage=1"],
                         ids=["must-revalidate", "stale-if-error=0", "proxy-revalidate",
                              "s-maxage"])
def test_stale_is_not_served_when_the_origin_forbids_it(origin, edgecache, cc):
    """must-revalidate, proxy-revalidate, s-maxage (which implies
    proxy-revalidate) and stale-if-error=0 forbid a stale answer: the
    device gets an error, never the stale body."""
    ec, body = stale_setup(origin, edgecache, "/s/nostale", cc)
    r = get(ec, origin, "/s/nostale", timeout=10)
    assert r.status in (502, 504), (r, r.body)
    assert body.encode() not in (r.body or b"")
    assert origin.count_path("/s/nostale") >= 2         # it did ask the origin


def test_no_cache_is_revalidated_on_every_request(origin, edgecache):
    """no-cache: every request asks the origin, conditionally; a 304 serves
    the stored body without it crossing the uplink again."""
    ec = edgecache(allow=[origin.base], mutable=True)
    body = "no-cache body\n" * 10
    origin.script("/s/nc", [{"body": body, "etag": '"n1"',
                             "headers": [["Cache-Control", "no-cache"]]}])
    for i in range(3):
        r = get(ec, origin, "/s/nc")
        assert r.status == 200 and body_of(r) == body, (i, r)
        ec.wait_idle()
    assert origin.count_path("/s/nc") == 3
    for i in (1, 2):
        assert '"n1"' in origin.headers_of("/s/nc", i).get("if-none-match", ""), i
    assert [x["status"] for x in origin.requests("/s/nc")] == [200, 304, 304]


# --------------------------------------------------------------------------
# 10. A Date in the future

def test_a_future_date_does_not_extend_freshness(origin, edgecache):
    """An origin whose clock is an hour ahead: freshness is Expires minus
    the origin's Date (2 s here), not Expires minus edgecache's clock."""
    ec = edgecache(allow=[origin.base], mutable=True)
    ahead = time.time() + 3600
    origin.script("/s/skew", [{"body": "skewed", "headers": [
        ["Date", http_date(ahead)], ["Expires", http_date(ahead + 2)]]}])
    r = get(ec, origin, "/s/skew")
    t_first = time.monotonic()
    assert r.status == 200
    ec.wait_idle()
    r = get(ec, origin, "/s/skew")
    assert r.cache_status == "edgecache; hit", r.headers.items()
    assert origin.count_path("/s/skew") == 1
    time.sleep(max(0.0, t_first + 2.5 - time.monotonic()))
    r = get(ec, origin, "/s/skew")
    assert r.status == 200 and r.body == b"skewed"
    assert origin.count_path("/s/skew") == 2


# --------------------------------------------------------------------------
# 11. Per-URL failures

def test_one_urls_failure_does_not_mark_the_origin_down(origin, edgecache):
    """An origin that resets the connection for one URL still serves the
    others at once: the failure is the URL's, not the upstream's."""
    ec = edgecache(allow=[origin.base], mutable=True)
    origin.script("/s/bad", [{"reset": True}])
    origin.script("/s/good", [{"body": "fine", "headers": [["Cache-Control", "max-age=60"]]}])
    r = get(ec, origin, "/s/bad", timeout=10)
    assert r.status == 502, r
    t = time.monotonic()
    r = get(ec, origin, "/s/good", timeout=10)
    assert r.status == 200 and r.body == b"fine", r
    assert time.monotonic() - t < 2
    up = upstream(ec, origin.base)
    assert up is not None, ec.status().get("upstreams")
    assert up["up"] is True, up


def test_a_refused_connection_marks_the_upstream_down(edgecache):
    """An origin that refuses connections is reported down in /status and
    /metrics."""
    dead = harness.free_port()
    base = "http://127.0.0.1:%d" % dead
    ec = edgecache(allow=[base], mutable=True)
    r = ec.get(do_target("/s/x", "127.0.0.1:%d" % dead), timeout=10)
    assert r.status == 502, r
    up = upstream(ec, base)
    assert up is not None and up["up"] is False, ec.status().get("upstreams")
    assert ec.metrics()['edgecache_upstream_up{upstream="%s"}' % base] == 0


# --------------------------------------------------------------------------
# 12. Redirects

def test_a_redirect_is_followed_and_the_final_body_stored_under_the_asked_url(origin, edgecache):
    """The device asks one URL and gets the payload, not a redirect; the
    next device's request for that URL is a hit, with no upstream request."""
    ec = edgecache(allow=[origin.base], mutable=True)
    origin.script("/s/r1", [{"status": 302, "headers": [["Location", origin.url("/s/final")]]}])
    origin.script("/s/final", [{"body": "X final", "headers": [["Cache-Control", "max-age=60"]]}])
    r = get(ec, origin, "/s/r1")
    assert r.status == 200 and r.body == b"X final", r
    assert values(r, "Location") == []
    ec.wait_idle()
    r = get(ec, origin, "/s/r1")
    assert r.status == 200 and r.body == b"X final"
    assert r.cache_status == "edgecache; hit", r.headers.items()
    assert origin.count_path("/s/r1") == 1 and origin.count_path("/s/final") == 1


def test_a_relative_redirect_is_followed(origin, edgecache):
    """A Location that is a path is resolved against the URL that
    answered it."""
    ec = edgecache(allow=[origin.base], mutable=True)
    origin.script("/s/r2", [{"status": 302, "headers": [["Location", "/s/final2"]]}])
    origin.script("/s/final2", [{"body": "X2", "headers": [["Cache-Control", "max-age=60"]]}])
    r = get(ec, origin, "/s/r2")
    assert r.status == 200 and r.body == b"X2", r
    assert origin.count_path("/s/final2") == 1


def test_a_redirect_off_the_allow_list_is_refused(origin, edgecache):
    """A redirect may not take edgecache to a host the operator did not
    allow: 502 naming the host and the allow key, nothing fetched there."""
    ec = edgecache(allow=[origin.base], mutable=True)
    elsewhere = "http://localhost:%d/s/x" % origin.port
    origin.script("/s/out", [{"status": 302, "headers": [["Location", elsewhere]]}])
    origin.script("/s/x", [{"body": "should not be fetched"}])
    r = get(ec, origin, "/s/out")
    assert r.status == 502, r
    assert b"localhost" in r.body and b"allow" in r.body, r.body
    assert origin.count_path("/s/x") == 0


def test_a_redirect_loop_stops_at_max_redirects(origin, edgecache):
    """A loop of redirects ends with a 502 that names max_redirects."""
    ec = edgecache(allow=[origin.base], mutable=True)
    origin.script("/s/l1", [{"status": 302, "headers": [["Location", "/s/l2"]]}])
    origin.script("/s/l2", [{"status": 302, "headers": [["Location", "/s/l1"]]}])
    r = get(ec, origin, "/s/l1", timeout=10)
    assert r.status == 502, r
    assert b"max_redirects" in r.body, r.body
    hops = origin.count_path("/s/l1") + origin.count_path("/s/l2")
    assert 2 <= hops <= 6, hops                         # 5 redirects followed at most


def test_an_expectation_applies_to_the_redirected_body(origin, edgecache):
    """A manifest's digest for the asked URL is checked against the body
    at the end of the redirects: matching, it is served and stored."""
    ec = edgecache(allow=[origin.base], mutable=True)
    payload = b"redirected payload\n" * 20
    origin.script("/s/r3", [{"status": 302, "headers": [["Location", "/s/final3"]]}])
    origin.script("/s/final3", [{"body_b64": base64.b64encode(payload).decode()}])
    ec.expect([{"url": origin.url("/s/r3"), "sha256": harness.sha256_hex(payload)}])
    r = get(ec, origin, "/s/r3")
    assert r.status == 200 and r.body == payload and r.complete, r
    ec.wait_idle()
    assert ec.metrics()["edgecache_objects"] == 1
    r = get(ec, origin, "/s/r3")
    assert r.body == payload and r.cache_status == "edgecache; hit", r.headers.items()


def test_a_redirected_body_that_fails_its_expectation_is_not_stored(origin, edgecache):
    """A wrong body behind a redirect is caught like any other: no device
    gets it complete, and nothing is stored."""
    ec = edgecache(allow=[origin.base], mutable=True)
    payload = b"not what the manifest says\n" * 20
    origin.script("/s/r4", [{"status": 302, "headers": [["Location", "/s/final4"]]}])
    origin.script("/s/final4", [{"body_b64": base64.b64encode(payload).decode()}])
    ec.expect([{"url": origin.url("/s/r4"), "sha256": harness.sha256_hex(b"something else")}])
    r = get(ec, origin, "/s/r4")
    assert r.status == 502 or not r.complete, r
    assert r.body != payload
    ec.wait_idle()
    assert ec.metrics()["edgecache_objects"] == 0


def test_status_lists_the_redirects_of_a_fill_in_flight(origin, edgecache):
    """While a redirected fill runs, /status shows where it was sent."""
    ec = edgecache(allow=[origin.base], mutable=True)
    final = origin.url("/s/final5")
    origin.script("/s/r5", [{"status": 302, "headers": [["Location", final]]}])
    origin.script("/s/final5", [{"body": "slow final", "delay": 1}])
    join = in_thread(lambda: get(ec, origin, "/s/r5", timeout=10))

    def redirected_fill():
        for f in ec.status().get("fills", []):
            if "redirects" in f and final in json.dumps(f["redirects"]):
                return f
        return None
    fill = harness.wait_for(redirected_fill, 3, what="a fill in /status with its redirects")
    assert isinstance(fill["redirects"], list) and fill["redirects"], fill
    r = join()
    assert r.status == 200 and r.body == b"slow final"


# --------------------------------------------------------------------------
# 13. Package mirror defaults

IMMUTABLE_BY_NAME = ["/s/pool/main/h/hello/hello_1.0_all.deb", "/s/pool/d-i/hello_1.0_all.udeb",
                     "/s/rpms/hello-1.0.x86_64.rpm", "/s/feeds/hello_1.0_arm.ipk",
                     "/s/alpine/hello-1.0-r0.apk", "/s/fw/update-1.0.swu",
                     "/s/fw/update-1.0.raucb", "/s/fw/update-1.0.mender",
                     "/s/dists/stable/main/binary-amd64/by-hash/SHA256/0123abcd"]
REVALIDATED_BY_NAME = ["/s/dists/stable/InRelease", "/s/dists/stable/Release",
                       "/s/dists/stable/main/binary-amd64/Packages",
                       "/s/dists/stable/main/binary-amd64/Packages.xz",
                       "/s/dists/stable/main/source/Sources.gz",
                       "/s/centos/repodata/repomd.xml"]


def test_package_files_without_validators_or_freshness_are_immutable(origin, edgecache):
    """A mirror that sends a .deb (or .rpm, .swu, a by-hash index...) with
    no validators and no freshness at all: the second device's request is
    a hit, since package files never change under their name."""
    ec = edgecache(allow=[origin.base], mutable=True)
    for path in IMMUTABLE_BY_NAME:
        origin.script(path, [{"body": "package %s" % path, "date": False,
                              "headers": [["Content-Type", "application/octet-stream"]]}])
        r = get(ec, origin, path)
        assert r.status == 200, (path, r)
        ec.wait_idle()
        r = get(ec, origin, path)
        assert r.status == 200 and body_of(r) == "package %s" % path
        assert r.cache_status == "edgecache; hit", (path, r.headers.items())
        assert origin.count_path(path) == 1, path


def test_repository_indexes_are_revalidated_whatever_their_freshness(origin, edgecache):
    """InRelease, Release, Packages*, Sources*, repomd.xml change under
    their name: even with max-age=3600 each use is revalidated."""
    ec = edgecache(allow=[origin.base], mutable=True)
    for path in REVALIDATED_BY_NAME:
        origin.script(path, [{"body": "index %s" % path, "etag": '"r1"',
                              "headers": [["Cache-Control", "max-age=3600"]]}])
        assert get(ec, origin, path).status == 200, path
        ec.wait_idle()
        r = get(ec, origin, path)
        assert r.status == 200 and body_of(r) == "index %s" % path
        assert origin.count_path(path) == 2, path
        assert '"r1"' in origin.headers_of(path, 1).get("if-none-match", ""), \
            (path, origin.headers_of(path, 1))


# --------------------------------------------------------------------------
# 14. Other methods

@pytest.mark.parametrize("knob", ["location", "content_location"])
def test_a_put_invalidates_the_url_its_answer_names(origin, edgecache, knob):
    """RFC 9111 §4.4: a successful PUT whose answer names another URL of the
    same origin (Location, Content-Location) makes the cache forget that
    URL too."""
    ec = edgecache(allow=[origin.base], args=["--route", "/o/=%s/" % origin.base])
    target = "/o/obj/y?size=100"
    assert ec.get(target).status == 200
    ec.wait_idle()
    assert ec.get(target).cache_status == "edgecache; hit"
    r = ec.request("PUT", "/o/upload?%s=%s" % (knob, quote("/obj/y?size=100", safe="")),
                   body=b"new y")
    assert r.status == 201, r
    harness.wait_for(lambda: ec.get(target).cache_status != "edgecache; hit", 5,
                     what="the GET of the named URL to go upstream")
    assert origin.count("/obj/y?size=100") == 2


# PROPFIND is safe (RFC 4918 §9.1; the IANA method registry): it must not
# invalidate. Methods edgecache does not know are unsafe.
@pytest.mark.parametrize("method", ["PURGEX", "MKACTIVITY"])
def test_an_unknown_method_that_succeeds_invalidates(origin, edgecache, method):
    """A method edgecache does not know is relayed, and when it succeeds
    the stored response for its URL is forgotten."""
    ec = edgecache(allow=[origin.base], args=["--route", "/o/=%s/" % origin.base])
    target = "/o/obj/w?size=100"
    assert ec.get(target).status == 200
    ec.wait_idle()
    assert ec.get(target).cache_status == "edgecache; hit"
    r = ec.request(method, target, body=b"")
    assert r.status == 201, r
    assert [x["method"] for x in origin.requests("/obj/w")] == ["GET", method]
    harness.wait_for(lambda: ec.get(target).cache_status != "edgecache; hit", 5,
                     what="the GET to go upstream")
    assert origin.gets("/obj/w")[1:], origin.requests("/obj/w")


def test_a_safe_method_does_not_invalidate(origin, edgecache):
    """PROPFIND is safe: relayed, and what is stored for its URL stays."""
    ec = edgecache(allow=[origin.base], args=["--route", "/o/=%s/" % origin.base])
    target = "/o/obj/v?size=100"
    assert ec.get(target).status == 200
    ec.wait_idle()
    r = ec.request("PROPFIND", target, body=b"")
    assert r.status == 201, r
    assert ec.get(target).cache_status == "edgecache; hit"
    assert len(origin.gets("/obj/v")) == 1
    assert ec.metrics()["edgecache_invalidations_total"] == 0


def test_connect_is_answered_405_not_a_tunnel(origin, edgecache):
    """CONNECT gets an answer (405) saying edgecache is not a tunnel,
    rather than a closed connection."""
    ec = edgecache(allow=[origin.base])
    s = socket.create_connection(("127.0.0.1", ec.port), timeout=10)
    try:
        s.sendall(b"CONNECT 127.0.0.1:443 HTTP/1.1\r\nHost: 127.0.0.1:443\r\n\r\n")
        resp = http.client.HTTPResponse(s, method="GET")
        resp.begin()
        body = resp.read()
    finally:
        s.close()
    assert resp.status == 405, (resp.status, body)
    assert b"tunnel" in body.lower(), body
    assert origin.stats()["total"] == 0


# --------------------------------------------------------------------------
# 15. Collapsing stays safe

@pytest.mark.parametrize("cc", ["private", "no-store"])
def test_a_private_answer_is_not_shared_with_a_waiting_request(origin, edgecache, cc):
    """Two devices ask for the same URL at once; the answer to the first
    turns out to be private (or no-store): the second, which waited for
    it, gets its own answer from the origin, not the first device's."""
    ec = edgecache(allow=[origin.base], mutable=True)
    origin.script("/s/mine", [{"body": "one", "delay": 0.5, "headers": [["Cache-Control", cc]]},
                              {"body": "two", "headers": [["Cache-Control", cc]]}])
    first = in_thread(lambda: get(ec, origin, "/s/mine", timeout=10))
    harness.wait_for(lambda: origin.count_path("/s/mine") >= 1, 5,
                     what="the first request to reach the origin")
    second = in_thread(lambda: get(ec, origin, "/s/mine", timeout=10))
    r1, r2 = first(), second()
    assert r1.status == 200 and r1.body == b"one", r1
    assert r2.status == 200 and r2.body == b"two", r2
    assert origin.count_path("/s/mine") == 2
    assert requests_counter(ec.metrics(), "hit") == 0
