"""Sideloading into a running daemon: POST /api/v1/import (multipart: the
import manifest and its files, streamed into the store) and
`edgecache import --admin-url`; the files count and serve by hash at once,
without a restart and without going upstream. Also the command's own
messages and exit statuses, `edgecache verify` naming a bad blob's URLs,
and a listener whose port is taken."""

import json
import os
import re
import socket
import subprocess
import time
import uuid

import harness
from harness import do_target
from origin import object_sha256
from test_import import import_manifest

TOKEN = "import-secret"


def multipart(fields):
    """A multipart/form-data body of (name, filename or None, bytes) parts:
    (content type, body)."""
    boundary = "edgecache-" + uuid.uuid4().hex
    out = []
    for name, filename, data in fields:
        disp = b'form-data; name="%s"' % name.encode()
        if filename is not None:
            disp += b'; filename="%s"' % (filename if isinstance(filename, bytes)
                                          else filename.encode())
        out.append(b"--%s\r\nContent-Disposition: %s\r\n"
                   b"Content-Type: application/octet-stream\r\n\r\n" % (boundary.encode(), disp))
        out.append(data)
        out.append(b"\r\n")
    out.append(("--%s--\r\n" % boundary).encode())
    return "multipart/form-data; boundary=%s" % boundary, b"".join(out)


def post_import(ec, fields, token=TOKEN):
    ctype, body = multipart(fields)
    return ec.admin("POST", "/api/v1/import", body=body, token=token,
                    headers={"Content-Type": ctype}, timeout=30)


def curl_import(ec, fields, *curl_args):
    """POSTs with curl, which reads an answer that comes before the whole
    body was sent: (status, body)."""
    ctype, body = multipart(fields)
    p = subprocess.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "-H", "Content-Type: " + ctype,
                        "-H", "Authorization: Bearer " + TOKEN, *curl_args, "--data-binary", "@-",
                        "http://127.0.0.1:%d/api/v1/import" % ec.admin_port],
                       input=body, capture_output=True, timeout=30)
    text, status = p.stdout.rsplit(b"\n", 1)
    return int(status), text


def counts(ec):
    s = ec.status()
    return s["objects"], s["stored_bytes"]


def write_files(workdir, files):
    paths = []
    for name, data in files:
        path = os.path.join(workdir, name)
        with open(path, "wb") as f:
            f.write(data)
        paths.append(path)
    return paths


def run(binary, *args, env=None, timeout=60):
    return subprocess.run([binary, *args], env=harness.child_env(env), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def assert_served_by_hash(ec, origin, name, data):
    """The DO-shape URL of an origin file whose expectation names data's
    SHA-256 is a hit by hash: the origin is never asked."""
    path = "/westus2/contoso/0123/%s" % name
    ec.expect([{"url": origin.url(path), "sha256": harness.sha256_hex(data), "size": len(data)}],
              token=TOKEN)
    r = ec.get(do_target(path, origin.host))
    assert r.status == 200 and r.body == data, r
    assert r.headers["Cache-Status"] == "edgecache; hit; detail=by-hash"
    assert origin.count_path(path) == 0


def test_upload_stores_the_good_files_at_once_and_refuses_the_bad(origin, edgecache):
    ec = edgecache(allow=[origin.base], args=["--admin-token", TOKEN])
    good = [("fw-2.0.swu", os.urandom(2 << 20)), ("boot.bin", os.urandom(70_000))]
    bad_listed = os.urandom(40_000)
    bad_sent = bad_listed[:-1] + bytes([bad_listed[-1] ^ 1])      # one bit flipped
    manifest = import_manifest(good + [("app.swu", bad_listed)])
    assert counts(ec) == (0, 0)

    r = post_import(ec, [("manifest", "update.importmanifest.json",
                          b"\xef\xbb\xbf" + json.dumps(manifest).encode())]       # a BOM
                    + [("file", n, d) for n, d in good] + [("file", "app.swu", bad_sent)])
    assert r.status == 422, r
    answer = json.loads(r.body)
    assert sorted(i["file"] for i in answer["imported"]) == ["boot.bin", "fw-2.0.swu"]
    assert all(i["new"] for i in answer["imported"])
    assert {i["file"]: i["sha256"] for i in answer["imported"]} == \
        {n: harness.sha256_hex(d) for n, d in good}
    assert answer["refused"] == [{
        "file": "app.swu",
        "reason": "sha256 %s, the manifest says %s" % (harness.sha256_hex(bad_sent),
                                                       harness.sha256_hex(bad_listed))}]
    total = sum(len(d) for _, d in good)
    assert (answer["objects"], answer["bytes"]) == (2, total)
    # /status counts them now, without a restart
    assert counts(ec) == (2, total)
    assert sorted(ec.blobs()) == sorted(os.path.relpath(ec.blob_path(harness.sha256_hex(d)),
                                                        ec.cache_dir) for _, d in good)
    assert ec.tmp_files() == []

    for name, data in good:
        assert_served_by_hash(ec, origin, name, data)
    # the refused one was not stored: its URL goes upstream
    path = "/westus2/contoso/0123/app.swu"
    ec.expect([{"url": origin.url(path), "sha256": harness.sha256_hex(bad_sent),
                "size": len(bad_sent)}], token=TOKEN)
    r = ec.get(do_target(path, origin.host))
    assert r.headers.get("Cache-Status") != "edgecache; hit; detail=by-hash"
    assert origin.count_path(path) == 1

    objs = json.loads(ec.admin("GET", "/api/v1/objects", token=TOKEN).body)["objects"]
    assert sorted(o["verified_by"] for o in objs) == ["import", "import"]

    # the same again: already stored, all good (200); the counts stay
    r = post_import(ec, [("manifest", None, json.dumps(import_manifest(good)).encode())]
                    + [("file", n, d) for n, d in good])
    assert r.status == 200, r
    answer = json.loads(r.body)
    assert [i["new"] for i in answer["imported"]] == [False, False]
    assert answer["refused"] == []
    assert counts(ec) == (2, total)


def test_missing_unlisted_and_wrong_size_files_are_refused_by_name(edgecache):
    ec = edgecache(args=["--admin-token", TOKEN])
    listed = [("a.bin", os.urandom(1000)), ("b.bin", os.urandom(2000)), ("c.bin", b"12345")]
    r = post_import(ec, [("file", "C:\\stick\\a.bin", listed[0][1]),   # a browser's path
                         ("file", "c.bin", b"1234"),
                         ("file", "stray.bin", b"x"),
                         ("file", b"caf\xe9.bin", b"x"),                # not UTF-8
                         ("file", "a.bin", listed[0][1]),
                         ("note", None, b"ignored"),
                         ("manifest", None, json.dumps(import_manifest(listed)).encode())])
    assert r.status == 422, r
    answer = json.loads(r.body)
    assert [i["file"] for i in answer["imported"]] == ["a.bin"]
    assert sorted(answer["refused"], key=lambda x: x["file"]) == [
        {"file": "a.bin", "reason": "uploaded more than once"},
        {"file": "b.bin", "reason": "not in the upload"},
        {"file": "c.bin", "reason": "4 bytes, the manifest says 5"},
        {"file": "caf?.bin", "reason": "not listed in the manifest"},
        {"file": "stray.bin", "reason": "not listed in the manifest"}]
    assert counts(ec) == (1, 1000)
    assert len(ec.blobs()) == 1 and ec.tmp_files() == []


def test_token_multipart_and_manifest_are_required(edgecache):
    ec = edgecache(args=["--admin-token", TOKEN])
    data = [("a.bin", os.urandom(1000))]
    fields = [("manifest", None, json.dumps(import_manifest(data)).encode()),
              ("file", "a.bin", data[0][1])]
    for token in (None, "wrong"):
        r = post_import(ec, fields, token=token)
        assert r.status == 401, r
    r = ec.admin("POST", "/api/v1/import", body=json.dumps(import_manifest(data)), token=TOKEN,
                 headers={"Content-Type": "application/json"})
    assert r.status == 400 and b"multipart/form-data" in r.body, r
    r = post_import(ec, [("file", "a.bin", data[0][1])])
    assert r.status == 400 and b"no manifest" in r.body, r
    r = post_import(ec, fields[:1] + [("file", None, data[0][1])])
    assert r.status == 400 and b"needs a file name" in r.body, r
    r = post_import(ec, fields + fields[:1])
    assert r.status == 400 and b"more than one manifest" in r.body, r
    r = post_import(ec, fields[:1] + [("file", "f%d" % i, b"") for i in range(4100)])
    assert r.status == 400 and b"more than 4096 files" in r.body, r
    r = post_import(ec, [("manifest", None, b"{not json"), ("file", "a.bin", data[0][1])])
    assert r.status == 400 and b"malformed JSON at line 1" in r.body, r
    r = post_import(ec, [("manifest", None, b'{"files": []}'), ("file", "a.bin", data[0][1])])
    assert r.status == 400 and b"no files[]" in r.body, r
    assert counts(ec) == (0, 0)
    assert ec.blobs() == [] and ec.tmp_files() == []


def test_bounds_answer_413(edgecache):
    ec = edgecache(args=["--admin-token", TOKEN, "--cache-size", "1M",
                         "--manifest-max-bytes", "4096"])
    big = [("big.bin", os.urandom(1_100_000))]
    fields = [("manifest", None, json.dumps(import_manifest(big)).encode()),
              ("file", "big.bin", big[0][1])]
    # refused by its Content-Length, before it is read
    status, text = curl_import(ec, fields)
    assert status == 413 and b"cache_size" in text, text
    # past the budget while streaming (no Content-Length to refuse it by)
    status, text = curl_import(ec, fields, "-H", "Transfer-Encoding: chunked")
    assert status == 413 and b"cache_size" in text, text
    padded = {"files": import_manifest(big)["files"], "pad": "x" * 5000}
    r = post_import(ec, [("manifest", None, json.dumps(padded).encode()), ("file", "big.bin", b"x")])
    assert r.status == 413 and b"manifest_max_bytes" in r.body, r
    assert counts(ec) == (0, 0)
    assert ec.blobs() == [] and ec.tmp_files_left() == []


def test_a_client_that_aborts_midway_leaves_no_temp_files(edgecache):
    ec = edgecache(args=["--admin-token", TOKEN])
    data = os.urandom(4 << 20)
    ctype, body = multipart([("manifest", None,
                              json.dumps(import_manifest([("fw.swu", data)])).encode()),
                             ("file", "fw.swu", data)])
    s = socket.create_connection(("127.0.0.1", ec.admin_port), timeout=10)
    s.sendall(("POST /api/v1/import HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
               "Content-Type: %s\r\nContent-Length: %d\r\n\r\n"
               % (TOKEN, ctype, len(body))).encode())
    s.sendall(body[:len(body) // 2])
    # the half that arrived is in a temp file of the store ...
    harness.wait_for(lambda: ec.tmp_files() != [], 5, what="a temp file for the upload")
    s.close()
    # ... and goes with the connection
    assert ec.tmp_files_left() == []
    assert counts(ec) == (0, 0) and ec.blobs() == []
    assert ec.admin("GET", "/healthz").status == 200


def test_cli_admin_url_imports_into_the_running_daemon(origin, edgecache, edgecache_bin, workdir):
    ec = edgecache(allow=[origin.base], args=["--admin-token", TOKEN])
    files = [("fw-3.0.swu", os.urandom(1 << 20)), ("boot.bin", os.urandom(5000))]
    paths = write_files(workdir, files + [("stray.bin", b"x")])
    manifest = os.path.join(workdir, "update.importmanifest.json")
    with open(manifest, "w") as f:
        json.dump(import_manifest(files), f)
    url = "http://127.0.0.1:%d" % ec.admin_port

    # no token: the daemon's 401, exit 2, nothing stored
    p = run(edgecache_bin, "import", "--admin-url", url, manifest, *paths[:2])
    assert p.returncode == 2, p
    assert "answered 401" in p.stderr
    # the token from the environment; a file the manifest does not list
    p = run(edgecache_bin, "import", "--admin-url", url, manifest, *paths,
            env={"EDGECACHE_ADMIN_TOKEN": TOKEN})
    assert p.returncode == 1, p
    assert "fw-3.0.swu: imported as %s (%d bytes)" % (harness.sha256_hex(files[0][1]),
                                                      len(files[0][1])) in p.stdout
    assert "stray.bin: refused: not listed in the manifest" in p.stdout
    assert "imported 2 of 3 files: 2 new, 0 already stored, 1 refused" in p.stdout
    total = sum(len(d) for _, d in files)
    assert "the daemon now holds 2 objects (%d bytes)" % total in p.stdout
    assert counts(ec) == (2, total)
    for name, data in files:
        assert_served_by_hash(ec, origin, name, data)
    # the token from --admin-token (given as for the daemon), all good: exit 0
    p = run(edgecache_bin, "import", "--admin-token", TOKEN, "--admin-url=" + url + "/",
            manifest, *paths[:2])
    assert p.returncode == 0, p
    assert "2 already stored, 0 refused" in p.stdout
    # nothing was written to a store of the command's own
    assert not os.path.exists(os.path.join(workdir, "edgecache-data"))
    # a daemon that is not there: exit 2
    p = run(edgecache_bin, "import", "--admin-url", "http://127.0.0.1:%d" % harness.free_port(),
            manifest, *paths[:2])
    assert p.returncode == 2 and "edgecache import: http://127.0.0.1:" in p.stderr, p


def test_cli_help_missing_file_and_no_cache_dir(edgecache_bin, workdir):
    p = run(edgecache_bin, "import", "--help")
    assert p.returncode == 0, p
    assert p.stdout.startswith("usage: edgecache import") and "--admin-url" in p.stdout

    files = [("a.bin", os.urandom(3000)), ("b.bin", os.urandom(3000))]
    (a_path,) = write_files(workdir, files[:1])             # b.bin is not on the stick
    manifest = os.path.join(workdir, "m.json")
    with open(manifest, "w") as f:
        json.dump(import_manifest(files), f)
    b_path = os.path.join(workdir, "b.bin")

    cache_dir = os.path.join(workdir, "cache")
    p = run(edgecache_bin, "import", "--cache-dir", cache_dir, manifest, a_path, b_path)
    assert p.returncode == 1, p
    assert "cannot read %s: No such file or directory" % b_path in p.stdout
    assert "not listed" not in p.stdout
    assert "imported 1 of 2 files: 1 new, 0 already stored, 1 refused" in p.stdout
    assert "counts and serves the new files only after a restart" in p.stdout
    assert "--admin-url" in p.stdout

    # no cache dir from flag, environment or config: refused, nothing created
    edgecache_bin = os.path.abspath(edgecache_bin)
    p = subprocess.run([edgecache_bin, "import", manifest, a_path], cwd=workdir,
                       env=harness.child_env(), capture_output=True, text=True, timeout=30)
    assert p.returncode == 2, p
    assert "no cache directory" in p.stderr and "--cache-dir" in p.stderr \
        and "--admin-url" in p.stderr
    assert not os.path.exists(os.path.join(workdir, "edgecache-data"))
    # the environment is enough
    p = subprocess.run([edgecache_bin, "import", manifest, a_path], cwd=workdir,
                       env=harness.child_env({"EDGECACHE_CACHE_DIR": cache_dir}),
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "1 already stored" in p.stdout, p


def test_verify_names_the_urls_of_a_bad_blob(origin, edgecache):
    ec = edgecache(allow=[origin.base])
    path = "/obj/named?size=200000"
    digest = object_sha256("named", "0", 200000)
    r = ec.get(do_target(path, origin.host))
    assert r.status == 200 and r.sha256 == digest
    ec.wait_idle()
    assert ec.stop() == 0
    with open(ec.blob_path(digest), "r+b") as f:
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 0xFF]))
    for extra in ([], ["--repair"]):
        p = run(ec.binary, "verify", *extra, "--cache-dir", ec.cache_dir)
        assert p.returncode == (0 if extra else 1), p
        m = re.search(r"^%s: digest mismatch.*\n    url: (.*)$" % digest, p.stdout, re.M)
        assert m, p.stdout
        assert m.group(1) == origin.url(path)


def test_a_port_in_use_names_the_listener(edgecache_bin, workdir):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        free = harness.free_port()
        for key, plane, args in (
                ("listen", "the data plane", ["--listen", "127.0.0.1:%d" % port,
                                              "--admin-listen", "127.0.0.1:%d" % free]),
                ("admin_listen", "the control plane", ["--listen", "127.0.0.1:%d" % free,
                                                       "--admin-listen", "127.0.0.1:%d" % port])):
            p = run(edgecache_bin, *args, "--cache-dir", os.path.join(workdir, "c"), timeout=30)
            assert p.returncode != 0, p
            assert "%s (config key: %s): cannot listen on 127.0.0.1:%d: the address is already in use" \
                % (plane, key, port) in p.stderr, p.stderr
    finally:
        taken.close()
