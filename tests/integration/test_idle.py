"""Waiting costs no CPU: idle keep-alive connections, and clients suspended
on a fill whose origin has not answered yet, leave the daemon asleep."""

import os
import socket
import time

from harness import do_target


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])     # utime + stime


def test_idle_daemon_with_open_connections_uses_no_cpu(origin, edgecache):
    ec = edgecache(allow=[origin.base], args=["--stall-timeout", "30s"])
    pid = ec.process.proc.pid
    idle = []
    for _ in range(20):                          # open, say nothing
        idle.append(socket.create_connection(("127.0.0.1", ec.port)))
    # Five clients wait on one fill whose origin answers only after 6 s.
    target = do_target("/obj/slow?size=1000&delay=6", origin.host)
    waiting = []
    for _ in range(5):
        s = socket.create_connection(("127.0.0.1", ec.port))
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % target).encode())
        waiting.append(s)
    time.sleep(1.0)                              # let everything settle
    before = cpu_ticks(pid)
    time.sleep(3.0)
    used = cpu_ticks(pid) - before
    hz = os.sysconf("SC_CLK_TCK")
    # A loop that polled or spun would burn close to 3 s of CPU here.
    assert used <= 0.05 * hz, "daemon used %d ticks (%d/s) while idle" % (used, hz)
    for s in waiting:                            # and the waiters are answered
        s.settimeout(15)
        head = s.recv(4096)
        assert head.startswith(b"HTTP/1.1 200"), head[:100]
    for s in idle + waiting:
        s.close()
    assert origin.stats()["total"] == 1
