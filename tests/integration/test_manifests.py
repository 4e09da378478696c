"""Manifests for children (DESIGN.md §4): a deployment is rewritten through
edgecache, its hashes registered and enforced, its files prefetched and
pinned, and real-shaped devices (devsim) download through it."""

import base64
import hashlib
import json
import os
import subprocess
import time

import pytest

import harness

UPDATE_PATH = "/westus2/contoso/3fe1a2b4c5d6e7f8091a2b3c4d5e6f70/"


def payload(name, size):
    """Deterministic bytes of `size` for `name`."""
    out = bytearray()
    seed = name.encode()
    block = hashlib.sha256(seed).digest()
    while len(out) < size:
        block = hashlib.sha256(block + seed).digest()
        out += block * 32
    return bytes(out[:size])


def b64sha(data):
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def adu_service(origin_base, files, workflow="wf-1", detached=None):
    """An ADU service object: files is [(file_id, name, bytes)]. detached:
    (file_id, name, bytes) of a detached manifest listed as a step."""
    manifest_files = {fid: {"fileName": name, "sizeInBytes": len(data),
                            "hashes": {"sha256": b64sha(data)}} for fid, name, data in files}
    steps = [{"handler": "microsoft/swupdate:2", "files": [f[0] for f in files]}]
    if detached:
        fid, name, data = detached
        manifest_files[fid] = {"fileName": name, "sizeInBytes": len(data),
                               "hashes": {"sha256": b64sha(data)}}
        steps.append({"type": "reference", "detachedManifestFileId": fid})
    manifest = {"manifestVersion": "5",
                "updateId": {"provider": "Contoso", "name": "Gateway", "version": "1.2.3"},
                "compatibility": [{"manufacturer": "contoso", "model": "gw"}],
                "instructions": {"steps": steps},
                "files": manifest_files,
                "createdDateTime": "2026-11-01T10:00:00Z"}
    urls = {fid: origin_base + UPDATE_PATH + name for fid, name, _ in files}
    if detached:
        urls[detached[0]] = origin_base + UPDATE_PATH + detached[1]
    return {"workflow": {"action": 3, "id": workflow},
            "updateManifest": json.dumps(manifest),
            "updateManifestSignature": "eyJhbGciOiJSUzI1NiJ9.c2lnbmVk.c2ln",
            "fileUrls": urls}


def post(ec, path, body, headers=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return harness.request(ec.admin_port, "POST", path, body=data, headers=headers or {})


def start(edgecache, nginx, *extra):
    ec = edgecache(allow=[nginx.base], start=False,
                   args=["--stall-timeout", "5s"] + list(extra))
    ec.args += ["--advertise-url", "http://127.0.0.1:%d" % ec.port]
    return ec.start()


def devsim(workdir, doc, devices, *extra, timeout=300):
    path = os.path.join(workdir, "deployment-%d.json" % time.monotonic_ns())
    with open(path, "w") as f:
        json.dump(doc, f)
    p = subprocess.run([harness.devsim_bin(), "--devices", str(devices), "--quiet"]
                       + list(extra) + [path], capture_output=True, text=True,
                       timeout=timeout, env=harness.child_env())
    lines = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    summary = [l for l in lines if l.get("summary")]
    assert summary, "devsim printed no summary:\n%s\n%s" % (p.stdout[-2000:], p.stderr[-2000:])
    return p.returncode, summary[-1], p


def put_files(nginx, files):
    for _, name, data in files:
        nginx.put(UPDATE_PATH.lstrip("/") + name, data)


def wait_deployment(ec, dep_id, timeout=60):
    def done():
        for d in ec.status()["deployments"]:
            if d["id"] == dep_id and d["files_done"] + d["files_failed"] == d["files_total"]:
                return d
        return None
    harness.wait_for(done, timeout, what="deployment %s to finish" % dep_id)
    return done()


def test_rewrite_then_fifty_devices(edgecache, nginx_origin, workdir):
    files = [("f1", "fw-1.2.3.swu", payload("fw", 48 << 20)),
             ("f2", "bootloader.bin", payload("bl", 1 << 20)),
             ("f3", "config.tar", payload("cfg", 200 * 1024))]
    put_files(nginx_origin, files)
    ec = start(edgecache, nginx_origin)
    service = adu_service(nginx_origin.base, files)
    r = post(ec, "/api/v1/rewrite", service)
    assert r.status == 200, r
    out = json.loads(r.body)
    assert out["updateManifest"] == service["updateManifest"]          # signed: untouched
    assert out["updateManifestSignature"] == service["updateManifestSignature"]
    for fid, name, _ in files:
        assert out["fileUrls"][fid] == "http://127.0.0.1:%d%s%s?cacheHostOrigin=%s" % (
            ec.port, UPDATE_PATH, name, nginx_origin.host)
    code, summary, p = devsim(workdir, out, 50)
    assert code == 0, p.stdout[-3000:]
    assert summary["succeeded"] == 50 and summary["failed"] == 0
    for _, name, _ in files:
        assert nginx_origin.count(UPDATE_PATH + name) == 1, name
    ec.wait_idle()
    m = ec.metrics()
    assert m["edgecache_fills_completed_total"] == 3
    assert m["edgecache_fills_started_total"] == 3
    assert m["edgecache_expectations_registered_total"] == 3
    assert m['edgecache_verify_failures_total{source="expectation"}'] == 0
    served = sum(harness.requests_counter(m, s) for s in ("hit", "miss", "collapsed"))
    assert served == 150
    assert m["edgecache_objects"] == 3


def test_corrupt_payload_fails_on_every_device_then_recovers(edgecache, nginx_origin, workdir):
    good = payload("app", 3 << 20)
    files = [("a", "app.swu", good), ("b", "data.bin", payload("data", 100_000))]
    put_files(nginx_origin, files)
    bad = bytearray(good)
    bad[12345] ^= 0xFF
    nginx_origin.put(UPDATE_PATH.lstrip("/") + "app.swu", bytes(bad))
    ec = start(edgecache, nginx_origin)
    r = post(ec, "/api/v1/rewrite", adu_service(nginx_origin.base, files))
    assert r.status == 200, r
    doc = json.loads(r.body)
    code, summary, p = devsim(workdir, doc, 10)
    assert code != 0
    assert summary["failed"] == 10
    per_file = {f["name"]: f for f in summary["files"]}
    assert per_file["app.swu"]["failed"] == 10, summary
    bad_sha = hashlib.sha256(bytes(bad)).hexdigest()
    assert not os.path.exists(ec.blob_path(bad_sha))        # nothing corrupt stored
    ec.wait_idle()
    m = ec.metrics()
    assert m['edgecache_verify_failures_total{source="expectation"}'] >= 1
    assert m["edgecache_objects"] == 1                      # data.bin only
    nginx_origin.put(UPDATE_PATH.lstrip("/") + "app.swu", good)   # the origin is fixed
    code, summary, p = devsim(workdir, doc, 10)
    assert code == 0, p.stdout[-3000:]
    assert os.path.exists(ec.blob_path(hashlib.sha256(good).hexdigest()))


def test_prefetch_then_origin_gone(edgecache, nginx_origin, workdir):
    files = [("p1", "image.swu", payload("img", 5 << 20)), ("p2", "delta.bin", payload("d", 70_000))]
    put_files(nginx_origin, files)
    ec = start(edgecache, nginx_origin)
    r = post(ec, "/api/v1/rewrite?prefetch=1", adu_service(nginx_origin.base, files, "wf-pre"))
    assert r.status == 200, r
    doc = json.loads(r.body)
    d = wait_deployment(ec, "wf-pre")
    assert d["files_done"] == 2 and d["pinned"], d
    assert all(f["state"] == "done" for f in d["files"])
    nginx_origin.close()                                     # the uplink is gone
    code, summary, p = devsim(workdir, doc, 20)
    assert code == 0, p.stdout[-3000:]
    assert harness.requests_counter(ec.metrics(), "hit") == 40
    r = harness.request(ec.admin_port, "DELETE", "/api/v1/deployments/wf-pre")
    assert r.status == 200, r
    assert all(d["id"] != "wf-pre" for d in ec.status()["deployments"])
    r = harness.request(ec.admin_port, "DELETE", "/api/v1/deployments/wf-pre")
    assert r.status == 404


def test_detached_manifest_files_are_verified(edgecache, nginx_origin, workdir):
    main = ("m1", "main.swu", payload("main", 300_000))
    extra = payload("extra", 500_000)
    detached_manifest = {"manifestVersion": "5",
                         "updateId": {"provider": "Contoso", "name": "Gateway", "version": "1.2.3"},
                         "instructions": {"steps": [{"handler": "microsoft/script:1",
                                                     "files": ["x1"]}]},
                         "files": {"x1": {"fileName": "extra.bin", "sizeInBytes": len(extra),
                                          "hashes": {"sha256": b64sha(extra)}}}}
    dm_bytes = json.dumps(detached_manifest).encode()
    put_files(nginx_origin, [main, ("dm", "detached.json", dm_bytes)])
    bad_extra = bytearray(extra)
    bad_extra[-1] ^= 1
    nginx_origin.put(UPDATE_PATH.lstrip("/") + "extra.bin", bytes(bad_extra))
    ec = start(edgecache, nginx_origin)
    service = adu_service(nginx_origin.base, [main], "wf-dm", detached=("dm", "detached.json", dm_bytes))
    service["fileUrls"]["x1"] = nginx_origin.base + UPDATE_PATH + "extra.bin"
    r = post(ec, "/api/v1/rewrite", service)
    assert r.status == 200, r
    wait_deployment(ec, "wf-dm/manifest")                   # fetched, verified, parsed
    harness.wait_for(lambda: ec.metrics()["edgecache_expectations_registered_total"] >= 3, 10,
                     what="the detached manifest's files to be registered")
    url = json.loads(r.body)["fileUrls"]["x1"].split(str(ec.port), 1)[1]
    got = ec.get(url)
    assert len(got.body) < len(extra)                       # never the complete wrong body
    ec.wait_idle()
    assert ec.metrics()['edgecache_verify_failures_total{source="expectation"}'] == 1
    nginx_origin.put(UPDATE_PATH.lstrip("/") + "extra.bin", extra)
    got = ec.get(url)
    assert got.status == 200 and got.body == extra


def firmware_twin(origin_base, data, check_value):
    return {"properties": {"desired": {"firmware": {
        "fwVersion": "2.0.1", "fwPackageURI": origin_base + "/fw/firmware-2.0.1.bin",
        "fwPackageCheckValue": check_value, "fwSize": len(data)}}}}


def test_firmware_twin_sha256_enforced_and_crc_ignored(edgecache, nginx_origin, workdir):
    data = payload("firmware", 400_000)
    bad = bytearray(data)
    bad[100] ^= 0x55
    nginx_origin.put("fw/firmware-2.0.1.bin", bytes(bad))
    ec = start(edgecache, nginx_origin)
    twin = firmware_twin(nginx_origin.base, data, hashlib.sha256(data).hexdigest())
    r = post(ec, "/api/v1/rewrite", twin)
    assert r.status == 200, r
    out = json.loads(r.body)
    uri = out["properties"]["desired"]["firmware"]["fwPackageURI"]
    assert uri == "http://127.0.0.1:%d/fw/firmware-2.0.1.bin?cacheHostOrigin=%s" % (
        ec.port, nginx_origin.host)
    code, summary, p = devsim(workdir, out, 3)
    assert code != 0 and summary["failed"] == 3             # the corrupt image never passes
    ec.wait_idle()
    assert ec.metrics()['edgecache_verify_failures_total{source="expectation"}'] >= 1
    nginx_origin.put("fw/firmware-2.0.1.bin", data)
    code, summary, p = devsim(workdir, out, 3)
    assert code == 0, p.stdout[-3000:]
    # A CRC16 check value is no SHA-256: accepted, not registered.
    crc = firmware_twin(nginx_origin.base, data, "0x5A3C")
    before = ec.metrics()["edgecache_expectations_registered_total"]
    r = post(ec, "/api/v1/rewrite", crc)
    assert r.status == 200, r
    assert ec.metrics()["edgecache_expectations_registered_total"] == before


@pytest.mark.parametrize("body, status, words", [
    (b'{"workflow": {"id": "x"}, "fileUrls": {"a": "http://h/x"', 400, ["line", "column"]),
    (b"<html>not json</html>", 415, []),
    (b'{"hello": "world"}', 422, ["URL"]),
    (b'{"workflow": {"id": "w"}, "updateManifest": "{not json", "fileUrls": {"a": "%s/x"}}', 400,
     ["updateManifest"]),
    (b'{"fileUrls": {"a": "http://not-allowed.example/x.bin"}}', 422, ["not-allowed.example"]),
])
def test_bad_input(edgecache, nginx_origin, body, status, words):
    ec = start(edgecache, nginx_origin)
    if b"%s" in body:
        body = body.replace(b"%s", nginx_origin.base.encode())
    r = post(ec, "/api/v1/rewrite", body)
    assert r.status == status, r
    for w in words:
        assert w.lower() in r.body.decode().lower(), r.body
    assert ec.metrics()["edgecache_expectations_registered_total"] == 0


def test_body_over_the_limit_is_413(edgecache, nginx_origin):
    ec = start(edgecache, nginx_origin, "--manifest-max-bytes", "4K")
    doc = adu_service(nginx_origin.base, [("a", "a.bin", b"x")])
    doc["padding"] = "y" * 8000
    r = post(ec, "/api/v1/rewrite", doc)
    assert r.status == 413, r
    assert b"manifest_max_bytes" in r.body
