"""workers = N: several data-plane event loops on one port (SO_REUSEPORT)
sharing one store, catalog and fill table, so that collapsed forwarding
holds across them; counters are the whole process's."""

import os
import subprocess
import threading

import harness

from harness import do_target, request, requests_counter, wait_for
from origin import object_sha256

SIZE = 8 << 20
SECONDS = 3.0
CLIENTS = 50


def test_fifty_clients_over_two_workers_one_upstream_transfer(origin, edgecache):
    ec = edgecache(allow=[origin.base], args=("--workers", "2"))
    path = "/obj/spread?size=%d&seed=3&rate=%d" % (SIZE, int(SIZE / SECONDS))
    target = do_target(path, origin.host)
    expected = object_sha256("spread", "3", SIZE)

    results = [None] * CLIENTS
    errors = []
    barrier = threading.Barrier(CLIENTS)

    def client(i):
        try:
            barrier.wait(10)
            # a new connection each: the kernel spreads them over the workers
            results[i] = request(ec.port, "GET", target, keep_body=False, timeout=60)
        except Exception as e:  # reported below with the client's number
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not any(t.is_alive() for t in threads), "clients still running after 90 s"
    assert errors == []

    upstream = origin.finished_requests("/obj/spread")
    assert len(upstream) == 1, upstream
    assert upstream[0]["complete"] and upstream[0]["sent"] == SIZE
    for i, r in enumerate(results):
        assert r.status == 200, (i, r)
        assert r.complete and r.length == SIZE, (i, r)
        assert r.sha256 == expected, (i, r)

    ec.wait_idle()
    st = ec.status()
    workers = st["workers"]
    assert len(workers) == 2, workers
    # both loops took requests (50 connections hashed over two sockets)
    assert all(w["requests"] > 0 for w in workers), workers
    assert sum(w["requests"] for w in workers) == CLIENTS, workers
    # one count for the process, whichever worker answered
    c = st["counters"]
    m = ec.metrics()
    answered = requests_counter(m, "miss") + requests_counter(m, "collapsed")
    assert answered == CLIENTS, m
    assert requests_counter(m, "miss") == 1, m
    assert st["objects"] == 1 and st["stored_bytes"] == SIZE
    assert c, st

    # and a hit on either worker afterwards
    for _ in range(10):
        r = request(ec.port, "GET", target, keep_body=False, timeout=30)
        assert r.status == 200 and r.sha256 == expected
        assert r.cache_status == "edgecache; hit"
    assert len(origin.finished_requests("/obj/spread")) == 1


def test_one_worker_has_no_thread_of_its_own(origin, edgecache):
    ec = edgecache(allow=[origin.base], args=("--workers", "1"))
    r = ec.get(do_target("/obj/one?size=1000", origin.host))
    assert r.status == 200
    assert len(ec.status()["workers"]) == 1
    with open("/proc/%d/status" % ec.process.proc.pid) as f:
        threads = int(next(l for l in f if l.startswith("Threads:")).split()[1])
    # the main thread and libuv's thread pool (4 by default), no worker
    assert threads <= 1 + 4, threads


def test_default_is_one_worker_per_cpu(origin, edgecache):
    """Without the key, one event loop per CPU this process may use."""
    ec = edgecache(allow=[origin.base])
    assert len(ec.status()["workers"]) == len(os.sched_getaffinity(0))


def test_sigterm_with_readers_on_every_worker_exits_cleanly(origin, edgecache):
    """A stop while clients on several workers read a slow fill: exit 0."""
    ec = edgecache(allow=[origin.base], args=("--workers", "3", "--shutdown-grace", "1s"))
    path = "/obj/slowstop?size=%d&rate=%d" % (4 << 20, 256 << 10)
    target = do_target(path, origin.host)
    results = []

    def client():
        try:
            results.append(request(ec.port, "GET", target, keep_body=False, timeout=30))
        except Exception as e:  # a cut transfer is expected
            results.append(e)

    threads = [threading.Thread(target=client) for _ in range(12)]
    for t in threads:
        t.start()
    wait_for(lambda: origin.count(path) >= 1, timeout=10, what="the fill to start")
    assert ec.stop() == 0, "edgecache did not exit 0 on SIGTERM with readers on its workers"
    for t in threads:
        t.join(30)
    assert len(results) == 12


def test_a_second_edgecache_on_the_same_port_is_refused(origin, edgecache, edgecache_bin,
                                                         workdir):
    """The workers share the port with SO_REUSEPORT; another process must
    not join them (it would take a share of the devices' connections)."""
    ec = edgecache(allow=[origin.base], args=("--workers", "2"))
    p = subprocess.run([edgecache_bin, "--listen", "127.0.0.1:%d" % ec.port,
                        "--admin-listen", "127.0.0.1:%d" % harness.free_port(),
                        "--cache-dir", os.path.join(workdir, "second")],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
                       env=harness.child_env())
    assert p.returncode != 0, p
    assert "the data plane (config key: listen): cannot listen on 127.0.0.1:%d: the address " \
        "is already in use" % ec.port in p.stderr, p.stderr
    assert ec.get(do_target("/obj/still?size=10", origin.host)).status == 200
