"""Sideloading (edgecache import): files an import manifest lists are
checked and stored; a later expectation for any URL with the same SHA-256 is
served from them without going upstream."""

import base64
import hashlib
import json
import os
import subprocess

import harness


def import_manifest(files):
    return {"updateId": {"provider": "Contoso", "name": "Gateway", "version": "1.0.0"},
            "compatibility": [{"manufacturer": "contoso", "model": "gw"}],
            "instructions": {"steps": [{"handler": "microsoft/swupdate:2",
                                        "files": [n for n, _ in files]}]},
            "files": [{"filename": n, "sizeInBytes": len(d),
                       "hashes": {"sha256": base64.b64encode(hashlib.sha256(d).digest()).decode()}}
                      for n, d in files],
            "manifestVersion": "5", "createdDateTime": "2026-11-01T10:00:00Z"}


def run_import(edgecache_bin, cache_dir, *operands):
    return subprocess.run([edgecache_bin, "import", "--cache-dir", cache_dir] + list(operands),
                          capture_output=True, text=True, timeout=60, env=harness.child_env())


def test_import_then_serve_by_hash_offline(edgecache_bin, edgecache, workdir):
    stick = os.path.join(workdir, "usb")
    os.makedirs(stick)
    files = [("fw-2.0.swu", os.urandom(3 << 20)), ("boot.bin", os.urandom(70_000))]
    for n, d in files:
        with open(os.path.join(stick, n), "wb") as f:
            f.write(d)
    manifest = os.path.join(stick, "update.importmanifest.json")
    with open(manifest, "wb") as f:
        f.write(b"\xef\xbb\xbf" + json.dumps(import_manifest(files)).encode())   # with a BOM
    cache_dir = os.path.join(workdir, "cache")
    p = run_import(edgecache_bin, cache_dir, manifest, *[os.path.join(stick, n) for n, _ in files])
    assert p.returncode == 0, p.stdout + p.stderr
    assert "imported 2 of 2 files: 2 new" in p.stdout
    # again: nothing new, nothing refused
    p = run_import(edgecache_bin, cache_dir, manifest, os.path.join(stick, "boot.bin"))
    assert p.returncode == 0 and "1 already stored" in p.stdout, p.stdout
    # the uplink is dead: the origin port has nothing behind it
    dead = "http://127.0.0.1:%d" % harness.free_port()
    ec = edgecache(allow=[dead], cache_dir=cache_dir)
    data = files[0][1]
    url = dead + "/westus2/contoso/0123/fw-2.0.swu"
    body = json.dumps([{"url": url, "sha256": hashlib.sha256(data).hexdigest(),
                        "size": len(data)}]).encode()
    assert harness.request(ec.admin_port, "POST", "/api/v1/expectations", body=body).status == 200
    r = ec.get(url)
    assert r.status == 200 and r.body == data, r
    assert r.headers["Cache-Status"] == "edgecache; hit; detail=by-hash"
    objs = json.loads(harness.request(ec.admin_port, "GET", "/api/v1/objects").body)["objects"]
    assert sorted(o["verified_by"] for o in objs) == ["import", "import"]


def test_a_file_that_does_not_match_is_refused(edgecache_bin, workdir):
    good = os.urandom(10_000)
    path = os.path.join(workdir, "app.swu")
    with open(path, "wb") as f:
        f.write(good[:-1] + bytes([good[-1] ^ 1]))      # one bit flipped
    manifest = os.path.join(workdir, "m.json")
    with open(manifest, "w") as f:
        json.dump(import_manifest([("app.swu", good)]), f)
    other = os.path.join(workdir, "stray.bin")
    with open(other, "wb") as f:
        f.write(b"x")
    cache_dir = os.path.join(workdir, "cache")
    p = run_import(edgecache_bin, cache_dir, manifest, path, other)
    assert p.returncode == 1
    assert "app.swu: refused: sha256" in p.stdout and "stray.bin: refused: not listed" in p.stdout
    assert not os.path.exists(os.path.join(cache_dir, "blobs")) or \
        [f for _, _, fs in os.walk(os.path.join(cache_dir, "blobs")) for f in fs] == []
    assert os.listdir(os.path.join(cache_dir, "tmp")) == []
    p = run_import(edgecache_bin, cache_dir, manifest)          # no FILE: usage
    assert p.returncode == 2 and "usage" in p.stderr
