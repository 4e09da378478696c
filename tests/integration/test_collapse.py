"""Collapsed forwarding and read-while-writer: fifty devices ask for one cold
64 MiB payload while the origin sends it slowly."""

import threading
import time

from harness import do_target, requests_counter
from origin import object_sha256

SIZE = 64 << 20
SECONDS = 5.0
AT_ONCE = 30          # clients released together on a cold cache
STAGGERED = 20        # clients that arrive while the fill runs
CLIENTS = AT_ONCE + STAGGERED


def test_fifty_clients_one_origin_request(origin, edgecache):
    ec = edgecache(allow=[origin.base])
    path = "/obj/big?size=%d&seed=7&rate=%d" % (SIZE, int(SIZE / SECONDS))
    target = do_target(path, origin.host)
    expected = object_sha256("big", "7", SIZE)

    results = [None] * CLIENTS
    errors = []
    barrier = threading.Barrier(AT_ONCE)

    def client(i, delay):
        try:
            if i < AT_ONCE:
                barrier.wait(10)
            else:
                time.sleep(delay)
            results[i] = ec.get(target, keep_body=False, timeout=60)
        except Exception as e:  # reported below with the client's number
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=client, args=(i, 0.0)) for i in range(AT_ONCE)]
    threads += [threading.Thread(target=client, args=(AT_ONCE + i, 0.5 + 0.1 * i))
                for i in range(STAGGERED)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not any(t.is_alive() for t in threads), "clients still running after 90 s"
    assert errors == []

    upstream = origin.finished_requests("/obj/big")
    assert len(upstream) == 1, upstream
    assert upstream[0]["range"] is None
    assert upstream[0]["complete"] and upstream[0]["sent"] == SIZE
    origin_start, origin_end = upstream[0]["start"], upstream[0]["end"]
    assert origin_end - origin_start >= SECONDS * 0.6, "the origin was not throttled"

    for i, r in enumerate(results):
        assert r.status == 200, (i, r)
        assert r.content_length == SIZE, (i, r)
        assert r.complete and r.length == SIZE, (i, r)
        assert r.sha256 == expected, (i, r)

    statuses = [r.cache_status for r in results]
    assert statuses.count("edgecache; fwd=miss; stored") == 1, statuses
    collapsed = statuses.count("edgecache; fwd=miss; collapsed")
    hits = statuses.count("edgecache; hit")
    assert collapsed >= 1 and 1 + collapsed + hits == CLIENTS, statuses

    # Read-while-writer: a client that asked while the origin was still
    # sending got its first body byte before the origin finished, rather
    # than waiting for the fill to complete.
    early = [r for r in results if r.t_start < origin_end - 1.0]
    assert len(early) >= AT_ONCE + STAGGERED // 2
    late = [(round(r.t_first_byte - origin_end, 2), r.cache_status)
            for r in early if r.t_first_byte >= origin_end]
    assert late == [], "%d clients had their first byte after the origin finished " \
        "(seconds after, status): %r" % (len(late), late[:5])
    first_done = min(r.t_end for r in results)
    staggered = results[AT_ONCE:]
    assert all(r.t_first_byte < first_done for r in staggered if r.t_start < first_done - 1.0)

    ec.wait_idle()
    m = ec.metrics()
    assert m["edgecache_fills_started_total"] == 1
    assert m["edgecache_fills_completed_total"] == 1
    assert m["edgecache_fills_failed_total"] == 0
    assert m["edgecache_fills_in_flight"] == 0
    assert requests_counter(m, "miss") == 1
    assert requests_counter(m, "collapsed") == collapsed
    assert requests_counter(m, "hit") == hits
    assert m["edgecache_upstream_bytes_total"] == SIZE
    sent = m['edgecache_bytes_sent_total{source="cache"}'] + m['edgecache_bytes_sent_total{source="fill"}']
    assert sent == CLIENTS * SIZE
    assert m["edgecache_objects"] == 1
    assert m["edgecache_stored_bytes"] == SIZE


def test_a_client_that_does_not_read_never_holds_the_fill_back(origin, edgecache):
    """The fill writes to disk, not to sockets: a client that stops reading
    after its first bytes neither slows the fill nor the other clients."""
    import socket
    size = 32 << 20
    ec = edgecache(allow=[origin.base])
    target = do_target("/obj/slowreader?size=%d&seed=3" % size, origin.host)
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", ec.port))
    stuck.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % target).encode())
    stuck.recv(1024)                    # headers and a little body, then nothing
    t = time.monotonic()
    r = ec.get(target, keep_body=False, timeout=30)
    assert r.status == 200 and r.sha256 == object_sha256("slowreader", 3, size), r
    ec.wait_idle(timeout=20)
    m = ec.metrics()
    assert m["edgecache_fills_completed_total"] == 1, "the fill waited for the stuck reader"
    assert time.monotonic() - t < 20
    assert origin.stats()["total"] == 1
    stuck.close()
