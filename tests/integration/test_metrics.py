"""/metrics as a monitor reads it: valid for promtool, fill counts that add
up whatever happened (hits, misses, revalidations, failures, aborts), a
404 not counted as a failure, build_info, the budget, the latency
histograms, and metrics_public for collectors that cannot send a token."""

import shutil
import subprocess
import threading
import time

import pytest

import harness
from harness import do_target

TOKEN = "metrics-test-token"


def fill_counts(m):
    return {k: m["edgecache_fills_%s" % k] for k in
            ("started_total", "completed_total", "failed_total", "abandoned_total",
             "in_flight")}


def assert_fills_add_up(m):
    f = fill_counts(m)
    reval = m['edgecache_revalidations_total{result="not-modified"}']
    assert f["started_total"] == (f["completed_total"] + f["failed_total"]
                                  + f["abandoned_total"] + reval + f["in_flight"]), (f, reval)


def test_promtool_accepts_the_metrics(origin, edgecache):
    promtool = shutil.which("promtool")
    if not promtool:
        pytest.fail("promtool is missing (Debian package prometheus, installed by "
                    "docker/install-deps.sh test)")
    ec = edgecache(allow=[origin.base])
    assert ec.get(do_target("/obj/p?size=100", origin.host)).status == 200
    ec.wait_idle()
    assert ec.get(do_target("/obj/p?size=100", origin.host)).status == 200
    text = ec.admin("GET", "/metrics").body
    p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                       timeout=30)
    assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()
    m = harness.parse_metrics(text.decode())
    assert m['edgecache_build_info{version="0.1.0"}'] == 1
    assert m["edgecache_cache_budget_bytes"] > 0
    assert m['edgecache_time_to_first_byte_seconds_count{cache_status="hit"}'] == 1
    assert m['edgecache_time_to_first_byte_seconds_count{cache_status="miss"}'] == 1
    assert m["edgecache_fill_duration_seconds_count"] == 1
    assert m['edgecache_time_to_first_byte_seconds_bucket{cache_status="hit",le="+Inf"}'] == 1


def test_fill_counts_add_up_after_a_mix(origin, edgecache, nginx_origin):
    nginx_origin.close()
    nginx = harness.Nginx(origin.log_path.rsplit("/", 1)[0] + "/n2",
                          server_conf='location /nc/ { add_header Cache-Control "no-cache"; }')
    try:
        nginx.put("nc/r.bin", b"r" * 1000)
        dead = harness.free_port()
        ec = edgecache(allow=[origin.base, nginx.base, "http://127.0.0.1:%d" % dead],
                       mutable=True, args=["--shutdown-grace", "0s", "--immutable", origin.base])
        # a miss, then hits
        for _ in range(3):
            assert ec.get(do_target("/obj/h?size=5000", origin.host)).status == 200
            ec.wait_idle()
        # a 404 passed on: completed, not failed
        assert ec.get(do_target("/obj/x?size=10&status=404", origin.host)).status == 404
        # revalidations (no-cache: every request asks, nginx answers 304)
        for _ in range(3):
            assert ec.get(do_target("/nc/r.bin", nginx.host)).status == 200
            ec.wait_idle()
        # failures: a dead origin, a reset, a wrong Content-Length
        assert ec.get(do_target("/obj/d?size=10", "127.0.0.1:%d" % dead)).status == 502
        r = ec.get(do_target("/obj/rs?size=100000&reset=10,10,10,10,10,10,10", origin.host))
        assert not r.complete or r.status >= 500
        ec.wait_idle()
        m = ec.metrics()
        assert_fills_add_up(m)
        assert m["edgecache_fills_failed_total"] == 2
        assert m['edgecache_revalidations_total{result="not-modified"}'] == 2
        assert m["edgecache_fills_completed_total"] == 3     # h, the 404, r.bin's first
        # an abort: a slow fill running when edgecache stops
        done = threading.Event()

        def slow():
            try:
                ec.get(do_target("/obj/slow?size=%d&rate=%d" % (8 << 20, 1 << 20),
                                 origin.host), timeout=20)
            except OSError:
                pass
            done.set()
        threading.Thread(target=slow, daemon=True).start()
        harness.wait_for(lambda: ec.metrics()["edgecache_fills_in_flight"] == 1, 5,
                         what="the slow fill")
        assert_fills_add_up(ec.metrics())
        assert ec.stop() == 0
        done.wait(10)
        log = ec.log_text()
        assert "stopping now" in log
    finally:
        nginx.close()


def test_metrics_public_serves_metrics_without_the_token(edgecache):
    closed = edgecache(args=["--admin-token", TOKEN])
    assert closed.admin("GET", "/metrics").status == 401
    assert closed.admin("GET", "/metrics", token=TOKEN).status == 200
    opened = edgecache(args=["--admin-token", TOKEN, "--metrics-public", "true"])
    r = opened.admin("GET", "/metrics")
    assert r.status == 200 and b"edgecache_requests_total" in r.body
    assert opened.admin("GET", "/status").status == 401           # only /metrics
    assert opened.admin("GET", "/api/v1/objects").status == 401
