"""The test harness on its own, without edgecache: when these fail, the
other failures say nothing about the daemon."""

import base64
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


# --------------------------------------------------------------------------
# The scripted endpoint (POST /_script)

def _raw_exchange(port, request_bytes, timeout=5):
    """Sends request_bytes on a new connection and returns everything the
    origin sent until it closed the connection (or the exception that cut
    it, with what came before)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(request_bytes)
    got = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return got, None
            got += chunk
    except OSError as e:
        return got, e
    finally:
        s.close()


def test_scripted_responses_in_order_with_exact_headers(origin):
    origin.script("/s/a", [
        {"status": 200, "body": "first",
         "headers": [["X-B", "2"], ["Set-Thing", "one"], ["Set-Thing", "two"],
                     ["Date", "Tue, 14 Nov 2023 22:13:20 GMT"], ["x-lower", "v"]]},
        {"status": 404, "body_b64": base64.b64encode(b"\x00\xffgone").decode()},
    ])
    r = harness.request(origin.port, "GET", "/s/a?q=1")
    assert r.status == 200 and r.body == b"first"
    assert [(k, v) for k, v in r.headers.items()] == [
        ("X-B", "2"), ("Set-Thing", "one"), ("Set-Thing", "two"),
        ("Date", "Tue, 14 Nov 2023 22:13:20 GMT"), ("x-lower", "v"),
        ("Content-Length", "5")]
    for _ in range(2):                                   # the last one repeats
        r = harness.request(origin.port, "GET", "/s/a")
        assert r.status == 404 and r.body == b"\x00\xffgone"
        assert r.header("Date") and r.header("Server") is None
    r = harness.request(origin.port, "HEAD", "/s/a")
    assert r.status == 404 and r.length == 0 and r.content_length == 6
    assert origin.count_path("/s/a") == 4
    recs = origin.requests("/s/a")
    assert [x["status"] for x in recs] == [200, 404, 404, 404]
    assert [x["index"] for x in recs] == [0, 1, 2, 3]
    # replacing a script starts it over; /_reset forgets it
    origin.script("/s/a", [{"body": "again"}])
    assert harness.request(origin.port, "GET", "/s/a").body == b"again"
    origin.reset()
    assert harness.request(origin.port, "GET", "/s/a").status == 404   # no script, no object


def test_scripted_requests_record_their_headers(origin):
    origin.script("/s/h", [{"body": "x"}])
    r = harness.request(origin.port, "GET", "/s/h", headers={
        "X-Device-Id": "abc", "Accept-Language": "fr", "User-Agent": "devsim/1"})
    assert r.status == 200
    h = origin.headers_of("/s/h", 0)
    assert h["x-device-id"] == "abc" and h["accept-language"] == "fr"
    assert h["user-agent"] == "devsim/1"
    names = [n for n, _ in origin.requests("/s/h")[0]["headers"]]
    assert names[:1] == ["Host"] and "X-Device-Id" in names
    # raw: a repeated request header is kept as two pairs, in order
    _raw_exchange(origin.port, b"GET /s/h HTTP/1.1\r\nHost: o\r\nX-Rep: 1\r\nX-Rep: 2\r\n"
                  b"Connection: close\r\n\r\n")
    assert origin.requests("/s/h")[1]["headers"][1:3] == [["X-Rep", "1"], ["X-Rep", "2"]]
    assert origin.headers_of("/s/h", 1)["x-rep"] == "1, 2"


def test_scripted_conditionals_answer_304(origin):
    origin.script("/s/c", [{"body": "v1", "etag": '"v1"', "last_modified": 1700000000,
                            "headers": [["Cache-Control", "max-age=1"]],
                            "headers_304": [["ETag", '"v1"'], ["X-Version", "two"]]}])
    r = harness.request(origin.port, "GET", "/s/c")
    assert r.status == 200 and r.body == b"v1"
    assert r.header("ETag") == '"v1"' and r.header("Cache-Control") == "max-age=1"
    assert r.header("Last-Modified") == email.utils.formatdate(1700000000, usegmt=True)
    for inm in ('"v1"', 'W/"v1"', '"x", "v1"', "*"):
        r = harness.request(origin.port, "GET", "/s/c", headers={"If-None-Match": inm})
        assert r.status == 304 and r.body == b"", inm
        assert r.header("X-Version") == "two" and r.header("Cache-Control") is None
    r = harness.request(origin.port, "GET", "/s/c", headers={"If-None-Match": '"v0"'})
    assert r.status == 200 and r.body == b"v1"
    # If-Modified-Since counts only without If-None-Match
    late = email.utils.formatdate(1700000100, usegmt=True)
    early = email.utils.formatdate(1699999999, usegmt=True)
    assert harness.request(origin.port, "GET", "/s/c",
                           headers={"If-Modified-Since": late}).status == 304
    assert harness.request(origin.port, "GET", "/s/c",
                           headers={"If-Modified-Since": early}).status == 200
    assert harness.request(origin.port, "GET", "/s/c", headers={
        "If-Modified-Since": late, "If-None-Match": '"v0"'}).status == 200
    # default 304 headers: just the ETag (plus the Date)
    origin.script("/s/c2", [{"body": "b", "etag": '"e"', "headers": [["X-A", "1"]]}])
    r = harness.request(origin.port, "GET", "/s/c2", headers={"If-None-Match": '"e"'})
    assert r.status == 304 and r.header("ETag") == '"e"' and r.header("X-A") is None
    assert [x["status"] for x in origin.requests("/s/c2")] == [304]


def test_scripted_select_gzip_delay_and_framing(origin):
    import gzip as gz
    origin.script("/s/v", [{"select": {
        "header": "Accept-Language",
        "cases": {"fr": {"body": "bonjour", "headers": [["Vary", "Accept-Language"]]},
                  "en": {"body": "hello", "headers": [["Vary", "Accept-Language"]]}},
        "default": {"body": "default"}}}])
    assert harness.request(origin.port, "GET", "/s/v",
                           headers={"Accept-Language": " fr "}).body == b"bonjour"
    assert harness.request(origin.port, "GET", "/s/v",
                           headers={"Accept-Language": "en"}).body == b"hello"
    assert harness.request(origin.port, "GET", "/s/v",
                           headers={"Accept-Language": "FR"}).body == b"default"
    assert harness.request(origin.port, "GET", "/s/v").body == b"default"

    origin.script("/s/gz", [{"gzip": "hello gzip", "headers": [["Content-Type", "text/plain"]]}])
    r = harness.request(origin.port, "GET", "/s/gz")
    assert r.body == gz.compress(b"hello gzip", mtime=0)
    assert r.header("Content-Encoding") == "gzip"

    origin.script("/s/d", [{"body": "late", "delay": 0.4}])
    t = time.monotonic()
    r = harness.request(origin.port, "GET", "/s/d")
    assert r.body == b"late" and r.t_headers - t >= 0.4

    origin.script("/s/cd", [{"body": "until close", "content_length": False}])
    got, err = _raw_exchange(origin.port, b"GET /s/cd HTTP/1.1\r\nHost: o\r\n\r\n")
    assert err is None
    head, _, body = got.partition(b"\r\n\r\n")
    assert b"content-length" not in head.lower() and body == b"until close"

    origin.script("/s/ch", [{"body": "chunky", "chunked": True}])
    r = harness.request(origin.port, "GET", "/s/ch")
    assert r.body == b"chunky" and r.header("Transfer-Encoding") == "chunked"

    origin.script("/s/nodate", [{"body": "x", "date": False,
                                 "headers": [["Content-Type", "application/octet-stream"]]}])
    r = harness.request(origin.port, "GET", "/s/nodate")
    assert [k for k, _ in r.headers.items()] == ["Content-Type", "Content-Length"]


def test_scripted_redirect_and_reset(origin):
    origin.script("/s/r", [{"status": 302, "headers": [["Location", "/s/final"]]}])
    r = harness.request(origin.port, "GET", "/s/r")
    assert r.status == 302 and r.header("Location") == "/s/final" and r.body == b""
    origin.script("/s/x", [{"reset": True}, {"body": "ok"}])
    got, err = _raw_exchange(origin.port, b"GET /s/x HTTP/1.1\r\nHost: o\r\n\r\n")
    assert got == b"" and isinstance(err, ConnectionResetError), (got, err)
    assert harness.request(origin.port, "GET", "/s/x").body == b"ok"
    assert [x["fault"] for x in origin.requests("/s/x")] == ["reset", None]


def test_script_typos_are_refused(origin):
    body = b'{"path": "/s/t", "responses": [{"stauts": 200}]}'
    r = harness.request(origin.port, "POST", "/_script", body=body)
    assert r.status == 400 and b"stauts" in r.body


def test_take_body_location_knobs_and_other_methods(origin):
    r = harness.request(origin.port, "PUT", "/upload?location=%2Fobj%2Fy%3Fsize%3D10"
                        "&content_location=/obj/z", body=b"abc")
    assert r.status == 201
    assert r.header("Location") == "/obj/y?size=10" and r.header("Content-Location") == "/obj/z"
    for method in ("PROPFIND", "PURGEX"):
        r = harness.request(origin.port, method, "/obj/w?size=10", body=b"")
        assert r.status == 201, method
    assert [x["method"] for x in origin.requests("/obj/w")] == ["PROPFIND", "PURGEX"]
    # a request of another method counts in a script's sequence
    origin.script("/s/m", [{"body": "zero"}, {"body": "one"}, {"body": "two"}])
    assert harness.request(origin.port, "PUT", "/s/m", body=b"x").status == 201
    assert harness.request(origin.port, "GET", "/s/m").body == b"one"
