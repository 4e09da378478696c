"""Crash at any instant: rounds of many concurrent fills of distinct
objects (with eviction running, the budget being small) killed with
SIGKILL at a random moment, then a restart. After each, no temp file
survives, the index and the blob directory agree (every row's blob exists
with its SHA-256 and size, every blob has a row), the counters match what
is stored, and every object served is exact."""

import hashlib
import os
import random
import sqlite3
import threading
import time

import harness
from harness import do_target
from origin import object_bytes

ROUNDS = 20


def _check_store(ec):
    db = sqlite3.connect(os.path.join(ec.cache_dir, "index.db"))
    try:
        objects = dict(db.execute("SELECT sha256, size FROM objects"))
        responses = list(db.execute("SELECT key, sha256 FROM responses"))
    finally:
        db.close()
    blobs = {os.path.basename(b): os.path.join(ec.cache_dir, b) for b in ec.blobs()}
    assert set(objects) == set(blobs), (sorted(objects), sorted(blobs))
    for sha, path in blobs.items():
        with open(path, "rb") as f:
            data = f.read()
        assert hashlib.sha256(data).hexdigest() == sha, path
        assert len(data) == objects[sha]
    for key, sha in responses:
        assert sha in blobs, key
    return len(blobs), sum(objects.values())


def test_sigkill_at_any_moment_leaves_a_consistent_store(origin, edgecache):
    rng = random.Random(1234)
    ec = edgecache(allow=[origin.base], args=["--cache-size", "3M"])
    names = []
    for rnd in range(ROUNDS):
        batch = ["k%d-%d" % (rnd, i) for i in range(10)]
        names += batch
        sizes = {n: rng.choice([20_000, 200_000, 700_000]) for n in batch}
        results = {}

        def fetch(n):
            rate = "&rate=%d" % (2 << 20) if rng.random() < 0.5 else ""
            try:
                results[n] = ec.get(do_target("/obj/%s?size=%d%s" % (n, sizes[n], rate),
                                              origin.host), timeout=10)
            except OSError as e:
                results[n] = e
        threads = [threading.Thread(target=fetch, args=(n,)) for n in batch]
        for t in threads:
            t.start()
        time.sleep(rng.uniform(0.02, 0.6))
        ec.kill()
        for t in threads:
            t.join(15)
        for n, r in results.items():      # what a client got before the kill is exact
            if not isinstance(r, Exception) and r.body:
                assert harness.is_prefix(r.body, object_bytes(n, "0", sizes[n])), n
        ec.start()
        assert ec.tmp_files() == [], "round %d: temp files survived the start" % rnd
        count, total = _check_store(ec)
        m = ec.metrics()
        assert m["edgecache_objects"] == count and m["edgecache_stored_bytes"] == total, rnd
        # a few objects of this round, served after the restart, are exact
        for n in batch[:3]:
            r = ec.get(do_target("/obj/%s?size=%d" % (n, sizes[n]), origin.host), timeout=10)
            assert r.status == 200 and r.body == object_bytes(n, "0", sizes[n]), n
        ec.wait_idle()
