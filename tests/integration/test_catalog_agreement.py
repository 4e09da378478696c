"""The in-memory catalog (cache/catalog.c) agrees with its durable copy,
<cache_dir>/index.db, after every kind of change: fills (with Vary
variants), a purge, evictions, invalidations by relayed unsafe methods,
expectations (one that a stored blob satisfies by hash, one that disagrees
with what is stored), a 304 that updates the stored header block, a clean
restart and a SIGKILL.

After each step, once the daemon is idle (no fill in flight, the
write-behind flushed: the index stops changing), agree() compares, naming
the step:

  (1) every tracked request whose (key, variant) has a row in `responses`
      is answered from the store (Cache-Status hit, or hit by hash) with the
      row's sha256 as its bytes' digest, the row's header fields, and no
      origin request; every one whose row is gone goes to the origin again
      (its GET count there increments) and is stored again;
  (2) /status objects and stored_bytes are SELECT count(*), sum(size) FROM
      objects;
  (3) GET /api/v1/objects, paged with `next`, lists exactly the objects
      table's sha256s and sizes (and the URLs its responses name);
  (4) a key with a row in `expectations` is served only the expected
      SHA-256: by hash when the store holds it, else fetched and checked
      (a body that does not match is cut, never stored).

The index is read read-only (file:...?mode=ro) with Python's sqlite3."""

import json
import os
import sqlite3
import time

import harness
from harness import do_target
from origin import object_sha256

SIZE = 150_000                      # the /obj/ payloads
BIG = 500_000                       # the one that pushes the store past its budget
BUDGET = 1 << 20                    # cache_size: 1 MiB
NOWHERE_SHA = "ab" * 32             # a SHA-256 nothing in the store has

# Columns the comparisons rely on (cache/index.c, schema version 3).
SCHEMA = {
    "objects": {"sha256", "size", "created", "last_access", "hits", "pinned", "verified_by"},
    "responses": {"key", "variant", "sha256", "origin_url", "status", "vary", "headers",
                  "stored_at", "initial_age", "fresh_until", "stale_if_error", "flags"},
    "expectations": {"key", "sha256", "size", "source"},
}

# Header fields the daemon writes itself on every answer (README, Headers
# end to end): not compared with the stored block.
OWN_FIELDS = {"age", "cache-status", "repr-digest", "via", "content-length",
              "accept-ranges", "content-range", "date", "etag", "connection",
              "keep-alive", "transfer-encoding", "server"}


# --------------------------------------------------------------------------
# the index, read-only

class Snapshot:
    """What index.db holds: objects {sha: size}, responses {(key, variant):
    row dict}, expectations {key: (sha, size or None)}."""

    def __init__(self, path):
        db = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=5)
        try:
            db.row_factory = sqlite3.Row
            self.objects = {r["sha256"]: r["size"] for r in db.execute(
                "SELECT sha256, size FROM objects")}
            self.count, self.total = db.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM objects").fetchone()
            self.responses = {(r["key"], r["variant"]): dict(r) for r in db.execute(
                "SELECT key, variant, sha256, origin_url, status, vary, headers, stored_at,"
                " fresh_until, flags FROM responses")}
            self.expectations = {r["key"]: (r["sha256"], r["size"]) for r in db.execute(
                "SELECT key, sha256, size FROM expectations")}
        finally:
            db.close()

    def core(self):
        return (self.objects, self.responses, self.expectations)


def index_path(ec):
    return os.path.join(ec.cache_dir, "index.db")


def check_schema(ec):
    db = sqlite3.connect("file:%s?mode=ro" % index_path(ec), uri=True, timeout=5)
    try:
        sql = {name: text for name, text in db.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table'")}
        for table, cols in SCHEMA.items():
            assert table in sql, "index.db has no table %s: %s" % (table, sorted(sql))
            have = {r[1] for r in db.execute("PRAGMA table_info(%s)" % table)}
            assert cols <= have, "table %s lacks %s: %s" % (table, cols - have, sql[table])
    finally:
        db.close()


def settle(ec, step, timeout=8):
    """Waits until no fill is in flight, the start-up walk is done and the
    index stops changing (two reads 0.2 s apart equal, and /status counting
    what the objects table holds); returns the last snapshot (assertions
    after it say what still differs)."""
    ec.wait_idle()
    harness.wait_for(lambda: ec.status()["store_reconcile"]["state"] == "done", 10,
                     what="[%s] store_reconcile done" % step)
    deadline = time.monotonic() + timeout
    prev = None
    while True:
        snap = Snapshot(index_path(ec))
        st = ec.status()
        if (prev is not None and snap.core() == prev.core()
                and (st["objects"], st["stored_bytes"]) == (snap.count, snap.total)
                and not st.get("fills")):
            return snap
        if time.monotonic() > deadline:
            return snap
        prev = snap
        time.sleep(0.2)


# --------------------------------------------------------------------------
# what is tracked

class Probe:
    """One request the test keeps asking: its target on the data plane,
    request headers, cache key and variant, the origin path whose GETs it
    causes, and the bytes the origin answers it with."""

    def __init__(self, name, target, key, origin_path, origin_sha, size, headers=None,
                 variant=""):
        self.name, self.target, self.key = name, target, key
        self.origin_path, self.origin_sha, self.size = origin_path, origin_sha, size
        self.headers = dict(headers or {})
        self.variant = variant

    def __repr__(self):
        return "<probe %s %s>" % (self.name, self.key)


def header_fields(block):
    """The stored header block ("Name: value\\r\\n"...) as [(lower name, value)]."""
    out = []
    for line in block.split("\r\n"):
        if ":" in line:
            name, _, value = line.partition(":")
            out.append((name.strip().lower(), value.strip()))
    return out


def served_fields(r):
    return [(n.lower(), v.strip()) for n, v in r.headers.items()
            if n.lower() not in OWN_FIELDS]


def origin_gets(origin, path):
    return len(origin.gets(path))


def expected(p, snap):
    """('hit', sha, row) | ('by-hash', sha, None) | ('miss', expected sha or
    None, None) for probe p in snapshot snap."""
    row = snap.responses.get((p.key, p.variant))
    exp = snap.expectations.get(p.key)
    if row is not None and (exp is None or (exp[0] == row["sha256"] and row["status"] == 200)):
        return "hit", row["sha256"], row
    if exp is not None and exp[0] in snap.objects and (exp[1] is None
                                                       or exp[1] == snap.objects[exp[0]]):
        return "by-hash", exp[0], None
    return "miss", exp[0] if exp is not None else None, None


def compare_counts(ec, snap, step):
    """(2) /status against the objects table; (3) the object list, paged."""
    st = ec.status()
    assert (st["objects"], st["stored_bytes"]) == (snap.count, snap.total), \
        "[%s] /status says %d objects, %d bytes; index.db objects holds %d rows, %d bytes" % (
            step, st["objects"], st["stored_bytes"], snap.count, snap.total)
    m = ec.metrics()
    assert (m["edgecache_objects"], m["edgecache_stored_bytes"]) == (snap.count, snap.total), \
        "[%s] /metrics disagrees with index.db" % step
    listed, after, pages = [], None, 0
    while True:
        path = "/api/v1/objects?limit=3" + ("&after=%s" % after if after else "")
        page = harness.http_get_json(ec.admin_port, path)
        listed += page["objects"]
        pages += 1
        assert pages < 100, "[%s] the object list does not end" % step
        if not page["next"]:
            break
        after = page["next"]
    got = [(o["sha256"], o["size"]) for o in listed]
    assert got == sorted(snap.objects.items()), \
        "[%s] GET /api/v1/objects lists %s; index.db objects holds %s" % (
            step, got, sorted(snap.objects.items()))
    for o in listed:
        urls = sorted({r["origin_url"] for r in snap.responses.values()
                       if r["sha256"] == o["sha256"]})
        assert sorted(set(o["urls"])) == urls, \
            "[%s] object %s lists urls %s; its responses name %s" % (
                step, o["sha256"][:12], o["urls"], urls)


def agree(ec, origin, probes, step):
    """The comparisons (1)-(4) after a step; returns the index as it is
    after the requests they made."""
    snap = settle(ec, step)
    compare_counts(ec, snap, step)
    now = time.time()
    total = snap.total
    refetched = []
    for p in probes:
        kind, sha, row = expected(p, snap)
        before = origin_gets(origin, p.origin_path)
        what = "[%s] %s (%s, variant %r)" % (step, p.name, p.key, p.variant)
        if kind in ("hit", "by-hash"):
            if row is not None:
                assert row["fresh_until"] > now + 5, \
                    "%s: the test expects its row fresh: %r" % (what, row)
            r = ec.get(p.target, headers=p.headers)
            assert r.status == 200 and r.complete, "%s: %r" % (what, r)
            cs = r.cache_status
            assert cs in ("edgecache; hit", "edgecache; hit; detail=by-hash"), \
                "%s: index.db has %s, but the answer says %r" % (
                    what, "a row for sha256 %s" % sha[:12] if row else
                    "an expectation for stored blob %s" % sha[:12], cs)
            assert r.sha256 == sha, "%s: served sha256 %s, index.db says %s" % (
                what, r.sha256[:12], sha[:12])
            assert origin_gets(origin, p.origin_path) == before, \
                "%s: answered from the store, yet the origin was asked" % what
            if row is not None:
                stored = [f for f in header_fields(row["headers"]) if f[0] not in OWN_FIELDS]
                assert served_fields(r) == stored, \
                    "%s: served fields %s, the row holds %s" % (what, served_fields(r), stored)
            continue
        # no usable row: the origin is asked again (unless that would push
        # the store past its budget and evict something else: then the
        # answer must say it is not stored, without asking the origin)
        adds = 0 if (sha or p.origin_sha) in snap.objects else p.size
        if total + adds > 0.95 * BUDGET:
            r = ec.get(p.target, headers=dict(p.headers, **{"Cache-Control": "only-if-cached"}))
            assert r.status == 504, \
                "%s: index.db has no row, yet only-if-cached answered %r" % (what, r)
            assert origin_gets(origin, p.origin_path) == before, what
            continue
        r = ec.get(p.target, headers=p.headers, timeout=15)
        assert origin_gets(origin, p.origin_path) == before + 1, \
            "%s: index.db has no row: expected one origin GET, got %d (answer %r)" % (
                what, origin_gets(origin, p.origin_path) - before, r)
        assert r.cache_status != "edgecache; hit", what
        if sha is not None and sha != p.origin_sha:
            # (4) the expectation disagrees with the origin's bytes: never
            # a complete body, never stored
            assert not (r.status == 200 and r.complete), \
                "%s: expected %s, the origin sent %s, yet a complete answer: %r" % (
                    what, sha[:12], p.origin_sha[:12], r)
        else:
            assert r.status == 200 and r.complete and r.sha256 == p.origin_sha, \
                "%s: %r" % (what, r)
            refetched.append(p)
            total += adds
    # what the answers changed (fetched again, mapped by hash) is in the
    # index too, and counted
    after = settle(ec, step + ", after the requests")
    compare_counts(ec, after, step + ", after the requests")
    for p in refetched:
        row = after.responses.get((p.key, p.variant))
        assert row is not None and row["sha256"] == p.origin_sha, \
            "[%s] %s was fetched again but index.db has %r" % (step, p.name, row)
    return after


# --------------------------------------------------------------------------
# the scenario

def vary_script(texts, default):
    def variant(text):
        return {"body": text, "headers": [["Vary", "Accept-Language"],
                                          ["Cache-Control", "max-age=3600"],
                                          ["X-Lang", text]]}
    return [{"select": {"header": "Accept-Language",
                        "cases": {k: variant(v) for k, v in texts.items()},
                        "default": variant(default)}}]


def test_the_catalog_agrees_with_the_index_after_every_change(origin, edgecache):
    ec = edgecache(allow=[origin.base], mutable=True,
                   args=["--cache-size", str(BUDGET), "--route", "/o/=%s/" % origin.base,
                         "--workers", "2"])
    probes = []

    def obj(name, size=SIZE):
        path = "/obj/%s.swu?size=%d" % (name, size)   # *.swu: immutable by the path rules
        p = Probe(name, do_target(path, origin.host), origin.url(path),
                  "/obj/%s.swu" % name, object_sha256(name + ".swu", 0, size), size)
        probes.append(p)
        return p

    def lang(code, text):
        headers = {"Accept-Language": code} if code else {}
        variant = "accept-language=%s\n" % code if code else "accept-language!\n"
        p = Probe("lang-%s" % (code or "none"), do_target("/s/lang", origin.host),
                  origin.url("/s/lang"), "/s/lang", harness.sha256_hex(text.encode()),
                  len(text), headers=headers, variant=variant)
        probes.append(p)
        return p

    def fill(p):
        r = ec.get(p.target, headers=p.headers)
        assert r.status == 200 and r.sha256 == p.origin_sha, (p, r)
        return r

    # -- 1. fills: several objects, three variants of one URL ---------------
    origin.script("/s/lang", vary_script({"fr": "bonjour", "de": "hallo"}, "hello"))
    for name in ("a", "b", "c", "d"):
        fill(obj(name))
    for code, text in (("fr", "bonjour"), ("de", "hallo"), (None, "hello")):
        fill(lang(code, text))
    ec.wait_idle()
    check_schema(ec)
    snap = agree(ec, origin, probes, "fills")
    assert len([k for k in snap.responses if k[0] == origin.url("/s/lang")]) == 3, \
        sorted(snap.responses)
    assert snap.count == 7

    # -- 2. a purge ---------------------------------------------------------
    victim = probes[1]                                      # b
    r = ec.admin("DELETE", "/api/v1/objects/%s" % victim.origin_sha)
    assert r.status == 200 and json.loads(r.body) == {"removed": victim.origin_sha,
                                                      "size": SIZE}, r
    snap = Snapshot(index_path(ec))
    assert victim.origin_sha not in snap.objects
    assert (victim.key, "") not in snap.responses
    # the purged variant blob of a Vary URL
    fr = [p for p in probes if p.name == "lang-fr"][0]
    assert ec.admin("DELETE", "/api/v1/objects/%s" % fr.origin_sha).status == 200
    agree(ec, origin, probes, "purge")          # b and lang-fr are fetched again

    # -- 3. evictions: a large object pushes the store past cache_size ------
    big = obj("big", BIG)
    fill(big)
    harness.wait_for(lambda: ec.metrics()["edgecache_evicted_objects_total"] >= 1, 10,
                     what="an eviction")
    snap = agree(ec, origin, probes, "eviction")
    assert snap.total <= BUDGET
    assert [p for p in probes if (p.key, p.variant) not in snap.responses], \
        "the eviction left every row in place"

    # -- 4. invalidations: unsafe methods on a route and as a forward proxy -
    a, c = probes[0], probes[2]
    assert ec.request("DELETE", "/o/obj/a.swu?size=%d" % SIZE, body=b"").status == 201
    r = ec.request("POST", origin.url("/obj/c.swu?size=%d" % SIZE), body=b"new c")
    assert r.status == 201, r
    # a PUT on the Vary URL forgets all of its variants
    assert ec.request("PUT", "/o/s/lang", body=b"new lang").status == 201
    harness.wait_for(lambda: ec.metrics()["edgecache_invalidations_total"] >= 3, 5,
                     what="three invalidations")
    snap = settle(ec, "invalidation")
    for p in (a, c):
        assert (p.key, "") not in snap.responses, "[invalidation] %s keeps its row" % p.name
    assert not [k for k in snap.responses if k[0] == origin.url("/s/lang")], \
        "[invalidation] /s/lang keeps rows: %s" % sorted(snap.responses)
    agree(ec, origin, probes, "invalidation")

    # -- 5. purge the big object: room again; evicted rows come back --------
    assert ec.admin("DELETE", "/api/v1/objects/%s" % big.origin_sha).status == 200
    probes.remove(big)
    snap = agree(ec, origin, probes, "purge of the big object")
    missing = [p.name for p in probes if (p.key, p.variant) not in snap.responses]
    assert not missing, "[purge of the big object] still without a row: %s" % missing

    # -- 6. expectations ------------------------------------------------------
    d = probes[3]
    # a new URL whose expected SHA-256 is a stored blob: a hit by hash
    alias_path = "/obj/alias.swu?size=%d" % SIZE
    alias = Probe("alias", do_target(alias_path, origin.host), origin.url(alias_path),
                  "/obj/alias.swu", object_sha256("alias.swu", 0, SIZE), SIZE)
    # a stored URL whose expectation names another stored blob (c's bytes for a)
    # and one whose expectation names bytes nothing has (refused each time)
    e = obj("e", 1000)
    fill(e)
    ec.wait_idle()
    ec.expect([{"url": alias.key, "sha256": d.origin_sha, "size": SIZE},
               {"url": a.key, "sha256": harness.b64_of_hex(c.origin_sha)},
               {"url": d.key, "sha256": d.origin_sha, "size": SIZE},
               {"url": e.key, "sha256": NOWHERE_SHA, "size": 1000}])
    probes.append(alias)
    snap = settle(ec, "expectations")
    assert snap.expectations.get(alias.key) == (d.origin_sha, SIZE), snap.expectations
    assert snap.expectations.get(e.key) == (NOWHERE_SHA, 1000), snap.expectations
    assert expected(alias, snap)[0] == "by-hash"
    assert expected(a, snap)[:2] == ("by-hash", c.origin_sha)
    assert expected(e, snap)[0] == "miss"
    failures = ec.metrics().get('edgecache_verify_failures_total{source="expectation"}', 0)
    snap = agree(ec, origin, probes, "expectations")
    assert ec.metrics().get('edgecache_verify_failures_total{source="expectation"}', 0) \
        == failures + 1, "[expectations] e's fill was not refused by its expectation"
    # the hits by hash are rows now: a -> c's bytes, alias -> d's bytes
    assert snap.responses[(a.key, "")]["sha256"] == c.origin_sha
    assert snap.responses[(alias.key, "")]["sha256"] == d.origin_sha
    assert snap.responses[(e.key, "")]["sha256"] == e.origin_sha    # the old row stays
    agree(ec, origin, probes, "expectations, again")

    # -- 7. a 304 that updates the stored header block -----------------------
    origin.script("/s/upd", [{"body": "payload v1\n" * 10, "etag": '"v1"',
                              "headers": [["Cache-Control", "max-age=1"], ["X-Version", "one"]],
                              "headers_304": [["ETag", '"v1"'],
                                              ["Cache-Control", "max-age=3600"],
                                              ["X-Version", "two"]]}])
    upd = Probe("upd", do_target("/s/upd", origin.host), origin.url("/s/upd"), "/s/upd",
                harness.sha256_hex(("payload v1\n" * 10).encode()), 110)
    r = fill(upd)
    assert r.headers.get_all("X-Version") == ["one"]
    ec.wait_idle()
    time.sleep(1.3)                                          # stale now
    r = ec.get(upd.target)
    assert r.cache_status == "edgecache; fwd=stale; fwd-status=304", r.headers.items()
    assert r.headers.get_all("X-Version") == ["two"]
    probes.append(upd)
    snap = settle(ec, "304")
    fields = header_fields(snap.responses[(upd.key, "")]["headers"])
    assert ("x-version", "two") in fields and ("cache-control", "max-age=3600") in fields, \
        "[304] index.db keeps %s" % fields
    agree(ec, origin, probes, "304")

    # -- 8. a clean restart ----------------------------------------------------
    before = settle(ec, "before SIGTERM")
    assert ec.stop() == 0
    ec.start()
    snap = settle(ec, "after SIGTERM")
    assert snap.core() == before.core(), "[after SIGTERM] the index changed across the stop"
    agree(ec, origin, probes, "restart after SIGTERM")

    # -- 9. changes, then SIGKILL ---------------------------------------------
    f = obj("f")
    fill(f)                                                  # a new fill
    assert ec.request("DELETE", "/o/obj/d.swu?size=%d" % SIZE, body=b"").status == 201
    origin.script("/s/lang", vary_script({"fr": "salut"}, "hi"))
    for p in probes:
        if p.name == "lang-fr":
            p.origin_sha = harness.sha256_hex(b"salut")
        if p.name in ("lang-none", "lang-de"):
            p.origin_sha = harness.sha256_hex(b"hi")
    assert ec.request("PATCH", "/o/s/lang", body=b"x").status == 201
    fill([p for p in probes if p.name == "lang-fr"][0])      # a new variant body
    ec.wait_idle()
    before = settle(ec, "before SIGKILL")
    ec.kill()
    ec.start()
    snap = settle(ec, "after SIGKILL")
    assert snap.core() == before.core(), "[after SIGKILL] the index changed across the kill"
    agree(ec, origin, probes, "restart after SIGKILL")

    # -- 10. SIGKILL at once after changes (whatever the index had is what
    # is served afterwards)
    g = obj("g", 2000)
    fill(g)
    assert ec.request("DELETE", "/o/obj/f.swu?size=%d" % SIZE, body=b"").status == 201
    ec.kill()
    ec.start()
    agree(ec, origin, probes, "restart after an immediate SIGKILL")


# --------------------------------------------------------------------------
# The order of a key's variants survives a restart. In memory the newest
# response of a key comes first and catalog_select() takes the first whose
# Vary matches (RFC 9111 §4.1: of several matching stored responses, the
# most recent, as its Date says, is used); catalog_load() reads the rows
# oldest first (ORDER BY stored_at), so the same holds after a restart. Date
# and stored_at have a resolution of one second: the two answers here are a
# second apart.

def test_the_newest_matching_variant_wins_before_and_after_a_restart(origin, edgecache):
    ec = edgecache(allow=[origin.base], mutable=True)
    origin.script("/s/vv", [
        {"body": "old", "headers": [["Vary", "Accept-Language"],
                                    ["Cache-Control", "max-age=3600"]]},
        {"body": "new", "headers": [["Vary", "Accept-Encoding"],
                                    ["Cache-Control", "max-age=3600"]]}])
    target = do_target("/s/vv", origin.host)
    # the older response varies on the language (stored as accept-language=fr)
    r = ec.get(target, headers={"Accept-Language": "fr"})
    assert r.status == 200 and r.body == b"old", r
    ec.wait_idle()
    time.sleep(1.1)                 # a later second: "most recent" is by the second
    # another language: a vary-miss; the origin now varies on the encoding
    # (stored as accept-encoding=gzip)
    r = ec.get(target, headers={"Accept-Language": "de", "Accept-Encoding": "gzip"})
    assert r.status == 200 and r.body == b"new", r
    ec.wait_idle()
    snap = settle(ec, "two variants")
    assert sorted(v for k, v in snap.responses if k == origin.url("/s/vv")) == \
        ["accept-encoding=gzip\n", "accept-language=fr\n"], sorted(snap.responses)
    # a request both match: the most recent response, from the store
    both = {"Accept-Language": "fr", "Accept-Encoding": "gzip"}
    r = ec.get(target, headers=both)
    assert (r.body, r.cache_status) == (b"new", "edgecache; hit"), (r, r.body)
    assert len(origin.gets("/s/vv")) == 2
    before = settle(ec, "before SIGTERM")
    assert ec.stop() == 0
    ec.start()
    assert settle(ec, "after SIGTERM").core() == before.core()
    r = ec.get(target, headers=both)
    assert (r.body, r.cache_status) == (b"new", "edgecache; hit"), \
        "after a clean restart the same request is served %r (%s), before it %r" % (
            r.body, r.cache_status, b"new")
    assert len(origin.gets("/s/vv")) == 2
