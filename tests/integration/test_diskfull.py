"""A cache directory on a small file system (a tmpfs the test mounts and
unmounts itself): a fill that cannot be written fails cleanly (its reader
gets a cut transfer, never a complete wrong body), eviction makes room,
stored objects keep being served, the next fill succeeds, nothing is left
in tmp/ and the index agrees with the blobs."""

import os
import sqlite3
import subprocess

import pytest

import harness
from harness import do_target
from origin import object_bytes

MIB = 1 << 20


@pytest.fixture
def small_fs(request, workdir):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = os.path.join(workdir, "small")
    os.makedirs(mnt)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=14m", "tmpfs", mnt],
                       capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: %s" % p.stderr.strip())
    request.addfinalizer(lambda: subprocess.run(["umount", "-l", mnt], check=False))
    return mnt


def test_a_full_disk_fails_the_fill_cleanly_and_eviction_makes_room(small_fs, origin, edgecache):
    cache = os.path.join(small_fs, "cache")
    ec = edgecache(allow=[origin.base], cache_dir=cache, args=["--cache-size", "100%"])
    size = 5 * MIB
    a = do_target("/obj/a?size=%d" % size, origin.host)
    b = do_target("/obj/b?size=%d" % size, origin.host)
    c = do_target("/obj/c?size=%d" % size, origin.host)
    for t in (a, b):
        r = ec.get(t)
        assert r.status == 200 and r.complete
        ec.wait_idle()
    assert ec.get(b).cache_status == "edgecache; hit"     # b is the recently used one
    # c does not fit: its client sees a cut transfer, never a complete one
    r = ec.get(c)
    assert not r.complete or r.status >= 500, r
    if r.status == 200:
        assert harness.is_prefix(r.body, object_bytes("c", "0", size))
    else:
        assert r.status == 502 and b"disk is full" in r.body, r
    ec.wait_idle()
    harness.wait_for(lambda: ec.metrics()["edgecache_evicted_objects_total"] >= 1, 10,
                     what="eviction to make room")
    assert ec.tmp_files_left() == []
    # the stored object is still served, and c now fits
    hit = ec.get(b)
    assert hit.status == 200 and hit.body == object_bytes("b", "0", size)
    r = ec.get(c)
    assert r.status == 200 and r.complete and r.body == object_bytes("c", "0", size)
    ec.wait_idle()
    assert ec.get(c).cache_status == "edgecache; hit"
    m = ec.metrics()
    assert m["edgecache_objects"] == len(ec.blobs())
    assert ec.stop() == 0
    db = sqlite3.connect(os.path.join(cache, "index.db"))
    try:
        rows = {r[0] for r in db.execute("SELECT sha256 FROM objects")}
    finally:
        db.close()
    assert rows == {os.path.basename(p) for p in ec.blobs()}
    assert ec.tmp_files() == []
