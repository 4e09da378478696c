"""Start-up with a large store: edgecache serves from its index at once and
walks the blob directory in the background (store_reconcile on the thread
pool), and a blob deleted behind its back is fetched again, never served
short."""

import hashlib
import os
import sqlite3
import time

from harness import do_target, wait_for
from origin import object_sha256

N = 100_000
SIZE = 64


def write_synthetic(cache_dir, template_key, n):
    """n objects written straight into the store, shaped like the template
    row a real fill left: blobs/ab/cd/<sha256> of SIZE bytes each, and
    their objects and responses rows. Returns {path: bytes} for a few."""
    db = sqlite3.connect(os.path.join(cache_dir, "index.db"))
    db.row_factory = sqlite3.Row
    resp = db.execute("SELECT * FROM responses WHERE key = ?", (template_key,)).fetchone()
    assert resp is not None, "the template fill left no response row"
    obj = db.execute("SELECT * FROM objects WHERE sha256 = ?", (resp["sha256"],)).fetchone()
    rcols, ocols = resp.keys(), obj.keys()
    blobs = os.path.join(cache_dir, "blobs")
    made, orows, rrows, some = set(), [], [], {}
    now = int(time.time())
    for i in range(n):
        data = (b"synthetic object %09d " % i).ljust(SIZE, b".")
        hexd = hashlib.sha256(data).hexdigest()
        d = os.path.join(blobs, hexd[:2], hexd[2:4])
        if d not in made:
            os.makedirs(d, exist_ok=True)
            made.add(d)
        with open(os.path.join(d, hexd), "wb") as f:
            f.write(data)
        o = dict(obj)
        o.update(sha256=hexd, size=SIZE, created=now, last_access=now, hits=0)
        orows.append(tuple(o[c] for c in ocols))
        r = dict(resp)
        name = "/obj/syn%06d?" % i
        r.update(key=resp["key"].replace("/obj/tpl?", name),
                 origin_url=resp["origin_url"].replace("/obj/tpl?", name), sha256=hexd)
        rrows.append(tuple(r[c] for c in rcols))
        if i % 25_000 == 7:
            some["/obj/syn%06d?size=%d" % (i, SIZE)] = data
    with db:
        db.executemany("INSERT INTO objects(%s) VALUES (%s)"
                       % (",".join(ocols), ",".join("?" * len(ocols))), orows)
        db.executemany("INSERT INTO responses(%s) VALUES (%s)"
                       % (",".join(rcols), ",".join("?" * len(rcols))), rrows)
    db.close()
    return some


def blob_path(cache_dir, hexd):
    return os.path.join(cache_dir, "blobs", hexd[:2], hexd[2:4], hexd)


def test_large_store_serves_before_its_walk_ends(origin, edgecache):
    ec = edgecache(allow=[origin.base])
    tpl = "/obj/tpl?size=%d" % SIZE
    r = ec.get(do_target(tpl, origin.host))
    assert r.status == 200
    ec.wait_idle()
    key = "%s%s" % (origin.base, tpl)
    assert ec.stop() == 0

    some = write_synthetic(ec.cache_dir, key, N)
    # one blob without a row (adopted by the walk), one row whose blob is
    # gone (the template's: deleted behind the daemon's back)
    stray = (b"a blob the index does not list").ljust(SIZE, b"!")
    stray_hex = hashlib.sha256(stray).hexdigest()
    os.makedirs(os.path.dirname(blob_path(ec.cache_dir, stray_hex)), exist_ok=True)
    with open(blob_path(ec.cache_dir, stray_hex), "wb") as f:
        f.write(stray)
    tpl_hex = object_sha256("tpl", "0", SIZE)
    os.unlink(blob_path(ec.cache_dir, tpl_hex))
    before = origin.count(tpl)

    ec.start()
    # served from the index while the walk may still run: hits, exact bytes
    for path, data in some.items():
        r = ec.get(do_target(path, origin.host))
        assert r.status == 200 and r.body == data, path
        assert r.cache_status == "edgecache; hit", (path, r.cache_status)
    # the deleted blob: fetched again, whole
    r = ec.get(do_target(tpl, origin.host))
    assert r.status == 200 and r.sha256 == tpl_hex and len(r.body) == SIZE
    assert origin.count(tpl) == before + 1

    wait_for(lambda: ec.status()["store_reconcile"]["state"] == "done", timeout=120,
             what="the store's reconciliation")
    st = ec.status()
    # every synthetic object, the template (stored again) and the adopted blob
    assert st["objects"] == N + 2, st["objects"]
    with open(ec.log_path, encoding="utf-8", errors="replace") as f:
        log = f.read()
    serving = log.rfind("serving on")
    reconciled = log.rfind("reconciled with the index")
    assert serving >= 0 and reconciled > serving, \
        "the walk ended before edgecache listened:\n" + log[-3000:]
    assert "1 blobs without a row adopted" in log[reconciled:reconciled + 300]
    # nothing served short: the template's blob is whole again
    with open(blob_path(ec.cache_dir, tpl_hex), "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == tpl_hex
