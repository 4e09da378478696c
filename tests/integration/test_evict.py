"""The store stays within cache_size: past it, the least recently used
unpinned blobs are deleted down to 90%; pinned ones stay; a client reading a
blob that is evicted under it still gets every byte."""

import json
import os
import re
import time

import harness
from harness import do_target
from origin import object_sha256

SIZE = 600_000                                   # five of them pass a 2M budget


def fetch(ec, origin, name):
    r = ec.get(do_target("/obj/%s?size=%d" % (name, SIZE), origin.host))
    assert r.status == 200 and r.sha256 == object_sha256(name, 0, SIZE), r
    ec.wait_idle()
    return r


def test_least_recently_used_unpinned_blobs_are_evicted(origin, edgecache):
    ec = edgecache(allow=[origin.base], args=["--cache-size", "2M"])
    assert ec.status()["budget_bytes"] == 2 << 20
    # a pinned deployment, the oldest of all
    body = json.dumps([origin.url("/obj/pinned?size=%d" % SIZE)]).encode()
    assert harness.request(ec.admin_port, "POST", "/api/v1/prefetch", body=body).status == 202
    harness.wait_for(lambda: ec.status()["deployments"][0]["files_done"] == 1, 10,
                     what="the prefetch")
    time.sleep(1.1)
    for name in ("a", "b"):                      # last_access has whole seconds
        fetch(ec, origin, name)
        time.sleep(1.1)
    assert ec.get(do_target("/obj/a?size=%d" % SIZE, origin.host)).headers["Cache-Status"] \
        == "edgecache; hit"                      # a is used again: b is now the oldest unpinned
    time.sleep(1.1)
    fetch(ec, origin, "c")                       # 4 x 600 KB > 2 MiB: evict down to 90%
    harness.wait_for(lambda: ec.metrics()["edgecache_evicted_objects_total"] >= 1, 10,
                     what="an eviction")
    m = ec.metrics()
    assert m["edgecache_evicted_objects_total"] == 1
    assert m["edgecache_stored_bytes"] == 3 * SIZE <= 0.9 * (2 << 20)
    assert not os.path.exists(ec.blob_path(object_sha256("b", 0, SIZE)))
    for name in ("pinned", "a", "c"):
        assert os.path.exists(ec.blob_path(object_sha256(name, 0, SIZE))), name
    before = origin.count_path("/obj/b")
    fetch(ec, origin, "b")                       # evicted: fetched again
    assert origin.count_path("/obj/b") == before + 1


def test_a_reader_keeps_its_bytes_when_the_blob_is_evicted(origin, edgecache):
    import socket
    big, other = 8 << 20, 4 << 20                # more than the socket buffers hold
    ec = edgecache(allow=[origin.base], args=["--cache-size", "10M"])
    target = do_target("/obj/big?size=%d" % big, origin.host)
    assert ec.get(target, keep_body=False).status == 200
    ec.wait_idle()
    # a slow reader starts on the stored blob ...
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", ec.port))
    s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % target).encode())
    data = s.recv(2048)
    assert data.startswith(b"HTTP/1.1 200")
    time.sleep(1.1)
    r = ec.get(do_target("/obj/other?size=%d" % other, origin.host), keep_body=False)
    assert r.status == 200                       # 12 MiB > 10 MiB: "big" is evicted
    harness.wait_for(lambda: ec.metrics()["edgecache_evicted_objects_total"] == 1, 10,
                     what="the eviction")
    assert not os.path.exists(ec.blob_path(object_sha256("big", 0, big)))
    head, _, body = data.partition(b"\r\n\r\n")
    body = bytearray(body)
    s.settimeout(20)
    while len(body) < big:                       # ... and still gets every byte
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        body += chunk
    s.close()
    assert harness.sha256_hex(bytes(body)) == object_sha256("big", 0, big)


def test_a_bad_cache_size_names_the_key(edgecache_bin, workdir):
    import subprocess
    p = subprocess.run([edgecache_bin, "--cache-size", "150%", "--cache-dir", workdir],
                       capture_output=True, text=True, timeout=10, env=harness.child_env())
    assert p.returncode != 0 and ("cache_size" in p.stderr or "cache-size" in p.stderr), p.stderr


def test_a_large_eviction_runs_in_slices(origin, edgecache):
    """Evicting ~15k blobs: the loop tells the catalog of them a slice at a
    time (each slice's blobs gone from /status before the next), and serves
    meanwhile; the store ends within its budget, the counts agree."""
    import test_startup
    ec = edgecache(allow=[origin.base])
    tpl = "/obj/tpl?size=%d" % test_startup.SIZE
    assert ec.get(do_target(tpl, origin.host)).status == 200
    ec.wait_idle()
    assert ec.stop() == 0
    n = 30_000
    test_startup.write_synthetic(ec.cache_dir, "%s%s" % (origin.base, tpl), n)
    ec.args += ["--cache-size", "1M"]
    ec.start(ready_timeout=60)
    harness.wait_for(lambda: ec.status()["store_reconcile"]["state"] == "done", 60,
                     what="the store's reconciliation")
    # a new object's commit sets the eviction off
    assert ec.get(do_target("/obj/trigger?size=1000", origin.host)).status == 200
    seen, deadline = [], time.monotonic() + 120
    while time.monotonic() < deadline:
        st = ec.status()                 # answered while the eviction runs
        seen.append(st["counters"]["evicted_objects"])
        if st["stored_bytes"] <= st["budget_bytes"] and seen[-1] > 0:
            break
        time.sleep(0.05)
    pattern = r"evicted (\d+) blobs, \d+ bytes \(wanted \d+\) in (\d+) slices"
    harness.wait_for(lambda: re.search(pattern, ec.log_text()), 120, what="the eviction's end")
    final = ec.status()
    assert final["stored_bytes"] <= final["budget_bytes"], final
    total = ec.metrics()["edgecache_evicted_objects_total"]
    # down to 90% of the budget: about (30k x 64 B - 0.9 MiB) / 64 B, ~15k
    expected = (n * test_startup.SIZE - 0.9 * (1 << 20)) / test_startup.SIZE
    assert total >= expected * 0.95, (total, expected)
    # progress was visible between the first and the last slice
    assert any(0 < s < total for s in seen), (seen[:5], seen[-5:], total)
    m = re.findall(pattern, ec.log_text())
    assert m and int(m[-1][1]) >= 2, m
    assert final["objects"] * test_startup.SIZE <= final["budget_bytes"] + 1000
