"""Resource limits that hold: a request too large is refused with the right
status, slow clients cannot hold connections (slowloris), past
max_connections a device is told to come back (503 with Retry-After), a
client that reads nothing is dropped, and running out of file descriptors
is counted and survived."""

import os
import socket
import stat
import time

import harness
from harness import do_target


def raw_exchange(port, data, timeout=5):
    """Sends data on a new connection and returns everything the server
    answers until it closes (or timeout)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    out = b""
    try:
        s.sendall(data)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except OSError:
        pass
    finally:
        s.close()
    return out


def test_a_request_line_or_header_block_too_large_is_refused(origin, edgecache):
    ec = edgecache(allow=[origin.base])
    line = raw_exchange(ec.port, b"GET /" + b"a" * 40000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert line.startswith(b"HTTP/1.1 414 "), line[:80]
    fields = raw_exchange(ec.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 40000
                          + b"\r\n\r\n")
    assert fields.startswith(b"HTTP/1.1 431 "), fields[:80]
    r = ec.get(do_target("/obj/after?size=100", origin.host))
    assert r.status == 200 and r.complete


def _slow_clients(port, n):
    """n connections that send a request line and then one header field
    byte every half second: a slowloris."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /x?cacheHostOrigin=127.0.0.1 HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        s.setblocking(False)
        socks.append(s)
    return socks


def _closed_by_peer(s):
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_a_slowloris_does_not_stop_other_devices(origin, edgecache):
    """1,000 connections trickling their header fields: devices are still
    served at once, and the trickling connections are closed once
    header_timeout passes."""
    ec = edgecache(allow=[origin.base], args=["--header-timeout", "2s"])
    slow = _slow_clients(ec.port, 1000)
    try:
        target = do_target("/obj/device?size=5000", origin.host)
        for _ in range(3):
            t = time.monotonic()
            r = ec.get(target, timeout=10)
            assert r.status == 200 and r.complete, r
            assert time.monotonic() - t < 2, "a device waited %.1fs" % (time.monotonic() - t)
            for s in slow:
                try:
                    s.send(b"x")
                except OSError:
                    pass
            time.sleep(0.5)
        harness.wait_for(lambda: sum(_closed_by_peer(s) for s in slow) == len(slow), 10,
                         what="the server to close every slow connection")
        m = ec.metrics()
        assert m["edgecache_slow_clients_dropped_total"] >= 1000
    finally:
        for s in slow:
            s.close()
    harness.wait_for(lambda: ec.metrics()["edgecache_client_connections"] <= 1, 10,
                     what="the connections to be gone")


def test_past_max_connections_a_device_gets_503_with_retry_after(origin, edgecache):
    ec = edgecache(allow=[origin.base], args=["--max-connections", "5"])
    idle = [socket.create_connection(("127.0.0.1", ec.port), timeout=5) for _ in range(5)]
    try:
        harness.wait_for(lambda: ec.metrics()["edgecache_client_connections"] >= 5, 5,
                         what="five connections")
        answer = raw_exchange(ec.port, b"GET /obj/x?size=10&cacheHostOrigin=127.0.0.1 HTTP/1.1"
                                       b"\r\nHost: a\r\n\r\n")
        head = answer.split(b"\r\n\r\n")[0].decode()
        assert head.startswith("HTTP/1.1 503 "), head
        assert "Retry-After: " in head and "Connection: close" in head, head
        assert b"max_connections" in answer
    finally:
        for s in idle:
            s.close()
    harness.wait_for(lambda: ec.metrics()["edgecache_client_connections"] == 0, 5,
                     what="the idle connections to go")
    r = ec.get(do_target("/obj/x?size=10", origin.host))
    assert r.status == 200
    assert ec.metrics()["edgecache_connections_refused_total"] == 1


def test_a_client_that_reads_nothing_is_dropped(origin, edgecache):
    ec = edgecache(allow=[origin.base], args=["--client-timeout", "2s"])
    target = do_target("/obj/big?size=%d" % (32 << 20), origin.host)
    r = ec.get(target, keep_body=False)
    assert r.status == 200 and r.complete
    ec.wait_idle()
    s = socket.create_connection(("127.0.0.1", ec.port), timeout=5)
    try:
        s.sendall(("GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % target).encode())
        s.recv(1024)                # the answer starts, then nothing is read
        harness.wait_for(lambda: ec.metrics()["edgecache_client_connections"] == 0, 15,
                         what="the connection that reads nothing to be dropped")
    finally:
        s.close()
    assert ec.get(target, keep_body=False).complete


def test_running_out_of_file_descriptors_is_counted_and_survived(origin, edgecache, workdir):
    """With ulimit -n 64, many open connections exhaust the descriptors:
    accepts and requests fail and are counted; once the connections go,
    the daemon serves again, stored and new objects alike."""
    wrapper = os.path.join(workdir, "edgecache-nofile")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\nulimit -n 64\nexec %s \"$@\"\n" % harness.edgecache_bin())
    os.chmod(wrapper, os.stat(wrapper).st_mode | stat.S_IXUSR)
    ec = edgecache(allow=[origin.base], start=False)
    ec.binary = wrapper
    ec.start()
    stored = do_target("/obj/kept?size=2000", origin.host)
    assert ec.get(stored).status == 200
    ec.wait_idle()
    conns = []
    try:
        for _ in range(100):
            try:
                conns.append(socket.create_connection(("127.0.0.1", ec.port), timeout=2))
            except OSError:
                break
        # requests while exhausted: refused or answered, never a crash
        for s in conns[-10:]:
            try:
                s.sendall(("GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % stored).encode())
            except OSError:
                pass
        time.sleep(1)
        assert ec.running()
    finally:
        for s in conns:
            s.close()
    def serves():
        try:
            return ec.get(stored, timeout=2).status == 200
        except OSError:
            return False
    harness.wait_for(serves, 20, what="a hit once descriptors are free")
    r = ec.get(do_target("/obj/new?size=3000", origin.host))
    assert r.status == 200 and r.complete
    assert ec.metrics()["edgecache_resource_errors_total"] >= 1
