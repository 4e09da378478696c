"""A miss then a hit, against nginx and against the scripted origin: bodies,
the headers a hit carries, counters, /status and the blob on disk."""

import email.utils
import os
import re
import subprocess

import harness
from harness import do_target, requests_counter, sha256_hex
from origin import object_bytes, object_sha256


def test_miss_then_hit_against_nginx(nginx_origin, edgecache):
    data = os.urandom(1 << 20)
    digest = sha256_hex(data)
    nginx_origin.put("/files/fw.swu", data, mtime=1700000000)
    ec = edgecache(allow=[nginx_origin.base])
    target = do_target("/files/fw.swu", nginx_origin.host)
    last_modified = email.utils.formatdate(1700000000, usegmt=True)

    miss = ec.get(target)
    assert miss.status == 200, miss.body
    assert miss.body == data
    assert miss.cache_status == "edgecache; fwd=miss; stored"
    assert miss.content_length == len(data)
    assert miss.header("Accept-Ranges") == "bytes"
    assert miss.header("Content-Type") == "application/x-firmware"
    assert miss.header("Last-Modified") == last_modified
    assert re.fullmatch(r"\d+", miss.header("Age", "")), miss.headers

    ec.wait_idle()
    hit = ec.get(target)
    assert hit.status == 200
    assert hit.body == data
    assert hit.cache_status == "edgecache; hit"
    assert hit.content_length == len(data)
    assert hit.header("Accept-Ranges") == "bytes"
    assert hit.header("Content-Type") == "application/x-firmware"
    assert hit.header("Last-Modified") == last_modified
    assert hit.header("Repr-Digest") == harness.repr_digest_for(digest)
    assert re.fullmatch(r"\d+", hit.header("Age", "")), hit.headers

    assert nginx_origin.count("/files/fw.swu") == 1
    # the origin's ETag stays the ETag; the SHA-256 is in Repr-Digest
    direct = harness.request(nginx_origin.port, "HEAD", "/files/fw.swu")
    assert hit.header("ETag") == direct.header("ETag") == miss.header("ETag")

    m = ec.metrics()
    assert requests_counter(m, "hit") == 1
    assert requests_counter(m, "miss") == 1
    assert requests_counter(m, "collapsed") == 0
    assert m["edgecache_objects"] == 1
    assert m["edgecache_stored_bytes"] == len(data)
    assert m["edgecache_fills_started_total"] == 1
    assert m["edgecache_fills_completed_total"] == 1
    assert m["edgecache_fills_failed_total"] == 0
    assert m["edgecache_fills_in_flight"] == 0
    assert m["edgecache_upstream_bytes_total"] == len(data)
    assert m['edgecache_bytes_sent_total{source="cache"}'] == len(data)
    assert m['edgecache_bytes_sent_total{source="fill"}'] == len(data)

    with open(ec.blob_path(digest), "rb") as f:
        assert f.read() == data
    assert ec.blobs() == [os.path.relpath(ec.blob_path(digest), ec.cache_dir)]
    assert ec.tmp_files() == []


def test_headers_from_the_scripted_origin(origin, edgecache):
    ec = edgecache(allow=[origin.base])
    typed = "/obj/typed?size=3000&ctype=application/x-test&lm=1600000000"
    plain = "/obj/plain?size=3000"
    for shape in ("miss", "hit"):
        r = ec.get(do_target(typed, origin.host))
        assert r.status == 200 and r.body == object_bytes("typed", "0", 3000), shape
        assert r.header("Content-Type") == "application/x-test", shape
        assert r.header("Last-Modified") == email.utils.formatdate(1600000000, usegmt=True), shape
        r = ec.get(do_target(plain, origin.host))
        assert r.status == 200 and r.body == object_bytes("plain", "0", 3000), shape
        # the origin sent neither: edgecache invents none
        assert r.header("Content-Type") is None, shape
        assert r.header("Last-Modified") is None, shape
        ec.wait_idle()
    assert origin.count(typed) == 1
    assert origin.count(plain) == 1


def test_status_document(origin, edgecache, edgecache_bin):
    ec = edgecache(allow=[origin.base])
    size = 12345
    r = ec.get(do_target("/obj/st?size=%d" % size, origin.host))
    assert r.status == 200 and r.sha256 == object_sha256("st", "0", size)
    ec.wait_idle()

    st = ec.status()
    for key in ("version", "node_id", "uptime_s", "objects", "stored_bytes", "counters", "fills"):
        assert key in st, "status lacks %r: %r" % (key, st)
    assert st["objects"] == 1
    assert st["stored_bytes"] == size
    assert st["fills"] == []
    assert isinstance(st["counters"], dict)
    assert st["uptime_s"] >= 0
    out = subprocess.run([edgecache_bin, "--version"], capture_output=True, text=True,
                         timeout=5, env=harness.child_env())
    assert st["version"] in out.stdout
    assert harness.request(ec.admin_port, "GET", "/healthz").status == 200


def test_start_log_names_the_dashboard(origin, edgecache):
    """The start-up log says where the dashboard is (the control plane's
    address), so an operator who ran docker/start.sh knows what to open."""
    ec = edgecache(allow=[origin.base])
    with open(ec.log_path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    assert "dashboard: http://127.0.0.1:%d/" % ec.admin_port in text, text
