"""A rewrite without advertise_url (the newcomer's case): the children's URLs
name the host the rewrite request came to with the *data plane's* port, so a
device that follows them reaches the cache, never the control plane. When
that host is a loopback one while the data plane listens beyond loopback,
the answer carries a Warning header and the log says to set advertise_url.
"""

import json
import os
import re
import secrets
import subprocess

import pytest

import harness
import test_manifests as manifests
from test_nested_netns import CURL, IP, read_bytes, read_headers, run


def test_default_urls_carry_the_data_port_and_devices_download(edgecache, nginx_origin,
                                                                workdir):
    files = [("f1", "app-2.0.swu", manifests.payload("dflt-app", 3 << 20)),
             ("f2", "boot.bin", manifests.payload("dflt-boot", 300 * 1024))]
    manifests.put_files(nginx_origin, files)
    ec = edgecache(allow=[nginx_origin.base])        # no --advertise-url
    service = manifests.adu_service(nginx_origin.base, files, workflow="wf-dflt")
    r = manifests.post(ec, "/api/v1/rewrite", service)
    assert r.status == 200, r
    assert r.header("Warning") is None               # the data plane is on loopback too
    out = json.loads(r.body)
    for fid, name, _ in files:
        url = out["fileUrls"][fid]
        assert url == "http://127.0.0.1:%d%s%s?cacheHostOrigin=%s" % (
            ec.port, manifests.UPDATE_PATH, name, nginx_origin.host), url
        assert ":%d/" % ec.admin_port not in url
    code, summary, p = manifests.devsim(workdir, out, 5)
    assert code == 0, p.stdout[-3000:]
    assert summary["succeeded"] == 5 and summary["failed"] == 0
    for _, name, _ in files:
        assert nginx_origin.count(manifests.UPDATE_PATH + name) == 1, name


def test_host_name_of_the_request_is_kept(edgecache, nginx_origin):
    files = [("f1", "a.bin", b"a" * 1000)]
    ec = edgecache(allow=[nginx_origin.base])
    service = manifests.adu_service(nginx_origin.base, files)
    r = manifests.post(ec, "/api/v1/rewrite", service,
                       headers={"Host": "gw-7.factory.example:%d" % ec.admin_port})
    assert r.status == 200, r
    url = json.loads(r.body)["fileUrls"]["f1"]
    assert url.startswith("http://gw-7.factory.example:%d/" % ec.port), url
    # a Host that is no host name is refused with the key to set
    r = manifests.post(ec, "/api/v1/rewrite", service, headers={"Host": "a/b"})
    assert r.status == 400 and b"advertise_url" in r.body, r


def test_advertise_url_wins(edgecache, nginx_origin):
    files = [("f1", "a.bin", b"a" * 1000)]
    ec = edgecache(allow=[nginx_origin.base], args=["--advertise-url", "http://gw:80"])
    r = manifests.post(ec, "/api/v1/rewrite", manifests.adu_service(nginx_origin.base, files))
    assert r.status == 200, r
    assert json.loads(r.body)["fileUrls"]["f1"].startswith("http://gw/")
    assert r.header("Warning") is None


# --------------------------------------------------------------------------
# The data plane on every address (the image's default): a namespace of the
# test's own, so that listening on 0.0.0.0 reaches no real network.

@pytest.fixture
def netns():
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (euid is %d)" % os.geteuid())
    name = "ec-adv-" + secrets.token_hex(3)
    p = run([IP, "netns", "add", name], check=False)
    if p.returncode != 0:
        pytest.skip("`ip netns add` failed: %s" % p.stderr.strip())
    try:
        run([IP, "-n", name, "link", "set", "lo", "up"])
        yield name
    finally:
        p = run([IP, "netns", "pids", name], check=False)
        for pid in p.stdout.split():
            run(["kill", "-9", pid], check=False)
        run([IP, "netns", "del", name], check=False)


def ns_rewrite(ns, workdir, body, host=None):
    hdr, out, data = (os.path.join(workdir, n) for n in ("hdr", "out", "data"))
    with open(data, "w") as f:
        json.dump(body, f)
    argv = [IP, "netns", "exec", ns, CURL, "-sS", "--max-time", "10", "-D", hdr, "-o", out,
            "-w", "%{http_code}", "-H", "Content-Type: application/json",
            "--data-binary", "@" + data]
    if host:
        argv += ["-H", "Host: " + host]
    p = subprocess.run(argv + ["http://127.0.0.1:8081/api/v1/rewrite"], capture_output=True,
                       timeout=20, env=harness.child_env())
    return int(p.stdout.decode() or 0), read_headers(hdr), read_bytes(out)


def test_loopback_host_while_listening_beyond_it_warns(netns, workdir):
    cache = os.path.join(workdir, "cache")
    log = os.path.join(workdir, "edgecache.log")
    argv = [IP, "netns", "exec", netns, harness.edgecache_bin(), "--listen", "0.0.0.0:8080",
            "--admin-listen", "127.0.0.1:8081", "--cache-dir", cache,
            "--allow", "http://origin.example"]
    proc = harness.Process(argv, log)
    try:
        def ready():
            p = subprocess.run([IP, "netns", "exec", netns, CURL, "-s", "-o", "/dev/null",
                                "-w", "%{http_code}", "http://127.0.0.1:8081/healthz"],
                               capture_output=True, timeout=10)
            return p.stdout == b"200"
        harness.wait_for(ready, 10, what="edgecache in the namespace")
        files = [("f1", "a.bin", b"a" * 1000)]
        service = manifests.adu_service("http://origin.example", files)

        status, headers, body = ns_rewrite(netns, workdir, service)
        assert status == 200, body
        assert json.loads(body)["fileUrls"]["f1"].startswith("http://127.0.0.1:8080/")
        assert "advertise_url" in headers.get("warning", ""), headers
        assert re.match(r'299 \S+ "', headers["warning"]), headers["warning"]
        with open(log) as f:
            logged = [l for l in f if "advertise_url" in l and "loopback" in l]
        assert logged, harness.tail(log)

        status, headers, body = ns_rewrite(netns, workdir, service, host="gw.factory:8081")
        assert status == 200, body
        assert json.loads(body)["fileUrls"]["f1"].startswith("http://gw.factory:8080/")
        assert "warning" not in headers
    finally:
        proc.close()
