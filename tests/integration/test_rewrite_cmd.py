"""`edgecache rewrite`: a deployment document rewritten for children by the
real binary, from a file and from standard input, with the allow-list from
flags and from the environment; refused documents exit 1 with the reason on
stderr, usage errors exit 2."""

import json
import os
import socket
import subprocess

import harness

DATA = os.path.normpath(os.path.join(harness.HERE, "..", "data", "manifests"))
DEPLOYMENT = os.path.join(DATA, "adu", "deployment-with-detached-manifest.json")
TWIN_DELTA = os.path.join(DATA, "written", "twin-deployment-delta.json")
CACHE = "http://gw:8080"
ADU_HOST = "duinstance2.b.nlu.dl.adu.microsoft.com"


def rewrite(*args, stdin=None, env=None):
    """Runs `edgecache rewrite ARGS`; returns the CompletedProcess (bytes)."""
    return subprocess.run([harness.edgecache_bin(), "rewrite", *args],
                          env=harness.child_env(env), input=stdin,
                          stdin=None if stdin is not None else subprocess.DEVNULL,
                          capture_output=True, timeout=60)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def do_shape(url):
    """The DO-shape URL this cache gives children for an origin URL without
    a port or query."""
    host, path = url.split("://", 1)[1].split("/", 1)
    return "%s/%s?cacheHostOrigin=%s" % (CACHE, path, host)


def test_fixture_file_is_rewritten_byte_for_byte():
    original = read(DEPLOYMENT)
    p = rewrite("--cache-url", CACHE + "/", DEPLOYMENT)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stderr == b""

    doc_in, doc_out = json.loads(original), json.loads(p.stdout)
    assert len(doc_in["fileUrls"]) == 4
    expected = original
    for fid, url in doc_in["fileUrls"].items():
        assert doc_out["fileUrls"][fid] == do_shape(url)
        expected = expected.replace(url.encode(), do_shape(url).encode())
    # Only the URLs changed: the signed manifest, its signature, the
    # workflow and the layout are the bytes that came in.
    assert p.stdout == expected
    assert doc_out["updateManifest"] == doc_in["updateManifest"]
    assert doc_out["updateManifestSignature"] == doc_in["updateManifestSignature"]


def test_stdin_with_allow_list_from_flags_keeps_the_byte_order_mark():
    p = rewrite("--cache-url", CACHE, "--allow", "http://*.dl.adu.microsoft.com",
                "--allow", "http://127.0.0.1:9000", "-", stdin=read(TWIN_DELTA))
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout.startswith(b"\xef\xbb\xbf{")
    service = json.loads(p.stdout[3:])["properties"]["desired"]["deviceUpdate"]["service"]
    assert service["fileUrls"]["f9a8b7c6d5e4f3a21"] == (
        CACHE + "/local/install-toaster.sh?arch=arm64&v=1&cacheHostOrigin=127.0.0.1:9000")
    assert service["rootKeyPackageUrl"].startswith(CACHE + "/westus2/contoso/rootkeys/")


def test_file_before_options_and_allow_list_from_the_environment():
    p = rewrite(TWIN_DELTA, "--cache-url", CACHE,
                env={"EDGECACHE_ALLOW": "http://*.dl.adu.microsoft.com http://127.0.0.1:9000"})
    assert p.returncode == 0, p.stderr.decode()
    assert b"cacheHostOrigin=127.0.0.1:9000" in p.stdout


def test_the_answer_rewritten_again_is_unchanged():
    first = rewrite("--cache-url", CACHE, DEPLOYMENT)
    assert first.returncode == 0
    again = rewrite("--cache-url", CACHE, "-", stdin=first.stdout)
    assert again.returncode == 0, again.stderr.decode()
    assert again.stdout == first.stdout


def test_disallowed_host_exits_1_naming_it():
    p = rewrite("--cache-url", CACHE, "--allow", "http://*.example.com", DEPLOYMENT)
    assert p.returncode == 1
    assert p.stdout == b""
    err = p.stderr.decode()
    assert ADU_HOST in err and "allow-list" in err and "fileUrls.f483750ebb885d32c" in err
    assert DEPLOYMENT in err


def test_bad_files_exit_1_with_the_reason(workdir):
    cases = [
        (b'{\n  "fileUrls": {"a": "http://x.dl.adu.microsoft.com/a"\n', ["line 3", "column"]),
        (b"<html><body>502 Bad Gateway</body></html>", ["not JSON"]),
        (b'{"name": "du-agent-update", "packages": []}', ["no download URL"]),
        (b'{"updateManifest": "{oops", "fileUrls": {"a": "http://x.dl.adu.microsoft.com/a"}}',
         ["updateManifest is not valid JSON"]),
    ]
    for i, (body, words) in enumerate(cases):
        path = os.path.join(workdir, "bad%d.json" % i)
        with open(path, "wb") as f:
            f.write(body)
        p = rewrite("--cache-url", CACHE, path)
        assert p.returncode == 1, (body, p.stderr)
        assert p.stdout == b""
        err = p.stderr.decode()
        assert path in err, err
        for w in words:
            assert w in err, (w, err)

    p = rewrite("--cache-url", CACHE, os.path.join(workdir, "missing.json"))
    assert p.returncode == 1
    assert b"cannot open" in p.stderr and b"missing.json" in p.stderr

    p = rewrite("--cache-url", CACHE, "-", stdin=b"")
    assert p.returncode == 1
    assert b"standard input" in p.stderr and b"empty" in p.stderr


def test_usage_errors_exit_2():
    for args, words in [
        ((DEPLOYMENT, "--cache-url"), ["--cache-url needs a URL"]),
        (("--cache-url", CACHE), ["FILE"]),
        (("--cache-url", "gw:8080", DEPLOYMENT), ["--cache-url", "gw:8080"]),
        (("--cache-url", CACHE + "/edge", DEPLOYMENT), ["--cache-url"]),
        (("--cache-url", CACHE, "--no-such-option", DEPLOYMENT), ["no-such-option"]),
        (("--cache-url", CACHE, "--allow", "gopher://x", DEPLOYMENT), ["allow"]),
        (("--cache-url", CACHE, DEPLOYMENT, TWIN_DELTA), ["more than one FILE"]),
    ]:
        p = rewrite(*args)
        assert p.returncode == 2, (args, p.stderr)
        assert p.stdout == b""
        for w in words:
            assert w in p.stderr.decode(), (w, p.stderr)


def file_urls(doc):
    """Every fileUrls value of a rewritten deployment document."""
    return list(json.loads(doc)["fileUrls"].values())


def test_without_cache_url_the_urls_name_this_machine_and_the_data_port():
    # The newcomer's case: no --cache-url, no advertise_url, the default
    # listen address (a wildcard): this machine's name and port 8080.
    p = rewrite(DEPLOYMENT)
    assert p.returncode == 0, p.stderr
    host = socket.gethostname()
    urls = file_urls(p.stdout)
    assert urls and all(u.startswith("http://%s:8080/" % host) for u in urls), urls
    assert b"warning" not in p.stderr


def test_without_cache_url_a_listen_address_is_used_and_advertise_url_wins():
    p = rewrite("--listen", "127.0.0.1:9090", DEPLOYMENT)
    assert p.returncode == 0, p.stderr
    assert all(u.startswith("http://127.0.0.1:9090/") for u in file_urls(p.stdout))
    assert b"warning" not in p.stderr   # the data plane is on loopback too
    p = rewrite("--listen", "[::1]:9090", DEPLOYMENT)
    assert all(u.startswith("http://[::1]:9090/") for u in file_urls(p.stdout))
    p = rewrite(DEPLOYMENT, env={"EDGECACHE_ADVERTISE_URL": "http://gw.factory:80"})
    assert p.returncode == 0, p.stderr
    assert all(u.startswith("http://gw.factory/") for u in file_urls(p.stdout))


def test_help():
    p = rewrite("--help")
    assert p.returncode == 0
    assert b"Usage: edgecache rewrite" in p.stdout and b"--cache-url" in p.stdout
