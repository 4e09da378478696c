"""The test harness on its own, without edgecache: when these fail, the
other failures say nothing about the daemon."""

import email.utils
import os
import socket
import time

import harness
from origin import object_bytes, object_sha256


def test_origin_objects_are_deterministic_and_counted(origin):
    r = harness.request(origin.port, "GET", "/obj/a?size=100000&seed=3&ctype=text/x-test&lm=1700000000")
    assert r.status == 200
    assert r.body == object_bytes("a", "3", 100000)
    assert r.sha256 == object_sha256("a", "3", 100000)
    assert r.header("Content-Type") == "text/x-test"
    assert r.header("Last-Modified") == email.utils.formatdate(1700000000, usegmt=True)
    assert object_bytes("a", "3", 10) == object_bytes("a", "3", 100000)[:10]
    assert object_bytes("a", "4", 10) != object_bytes("a", "3", 10)

    r = harness.request(origin.port, "HEAD", "/obj/a?size=5&sig=XYZ")
    assert r.status == 200 and r.length == 0 and r.content_length == 5
    assert r.header("Content-Type") is None

    st = origin.stats()
    assert st["total"] == 2
    assert origin.count("/obj/a?size=5&sig=XYZ") == 1
    assert origin.count_path("/obj/a") == 2
    assert st["requests"][1]["method"] == "HEAD"
    origin.reset()
    assert origin.stats()["total"] == 0


def test_origin_knobs(origin):
    r = harness.request(origin.port, "GET", "/obj/s?size=10&status=404")
    assert r.status == 404 and r.body == b"status 404\n"

    r = harness.request(origin.port, "GET", "/obj/r?size=1000&range=1",
                        headers={"Range": "bytes=10-19"})
    assert r.status == 206 and r.body == object_bytes("r", "0", 1000)[10:20]
    assert r.header("Content-Range") == "bytes 10-19/1000"
    r = harness.request(origin.port, "GET", "/obj/r?size=1000", headers={"Range": "bytes=10-19"})
    assert r.status == 200 and r.length == 1000
    assert origin.requests("/obj/r")[0]["range"] == "bytes=10-19"

    t = time.monotonic()
    r = harness.request(origin.port, "GET", "/obj/d?size=10&delay=0.5")
    assert r.status == 200 and r.t_headers - t >= 0.5

    size, rate = 400000, 400000
    r = harness.request(origin.port, "GET", "/obj/slow?size=%d&rate=%d" % (size, rate),
                        keep_body=False)
    assert r.complete and r.sha256 == object_sha256("slow", "0", size)
    assert 0.8 <= r.t_end - r.t_start < 3.0
    rec = origin.finished_requests("/obj/slow")[0]
    assert rec["complete"] and rec["sent"] == size
    # The origin's clock is the tests' clock.
    assert abs(rec["end"] - r.t_end) < 0.5


def test_origin_survives_a_client_that_leaves(origin):
    s = socket.create_connection(("127.0.0.1", origin.port))
    s.sendall(b"GET /obj/gone?size=4000000&rate=1000000 HTTP/1.1\r\nHost: x\r\n\r\n")
    harness.wait_for(lambda: origin.requests("/obj/gone")
                     and origin.requests("/obj/gone")[0]["sent"] > 100000, 5)
    s.close()
    harness.wait_for(lambda: origin.requests("/obj/gone")[0]["end"], 5, what="origin to notice")
    rec = origin.requests("/obj/gone")[0]
    assert not rec["complete"] and rec["sent"] < 4000000
    assert harness.request(origin.port, "GET", "/obj/x?size=1").status == 200


def test_nginx_serves_and_logs(nginx_origin):
    data = os.urandom(50000)
    nginx_origin.put("/files/fw.swu", data, mtime=1700000000)
    r = harness.request(nginx_origin.port, "GET", "/files/fw.swu?x=1")
    assert r.status == 200 and r.body == data
    assert r.header("Content-Type") == "application/x-firmware"
    assert r.header("Last-Modified") == email.utils.formatdate(1700000000, usegmt=True)
    assert r.header("ETag")
    r = harness.request(nginx_origin.port, "GET", "/files/fw.swu", headers={"Range": "bytes=0-9"})
    assert r.status == 206 and r.body == data[:10]
    assert nginx_origin.count("/files/fw.swu", at_least=2) == 2
    assert nginx_origin.count("/files/fw.swu?x=1") == 1
    assert ("GET", "/files/fw.swu", 206, "bytes=0-9") in nginx_origin.log_lines()
    assert nginx_origin.count("/nothing", timeout=0.2) == 0


def test_metrics_parser():
    text = ('# HELP edgecache_objects Objects stored.\n# TYPE edgecache_objects gauge\n'
            'edgecache_objects 3\n'
            'edgecache_requests_total{cache_status="hit"} 7\n'
            'edgecache_bytes_sent_total{source="cache"} 1.5e+06\n')
    m = harness.parse_metrics(text)
    assert m == {"edgecache_objects": 3.0,
                 'edgecache_requests_total{cache_status="hit"}': 7.0,
                 'edgecache_bytes_sent_total{source="cache"}': 1.5e6}
