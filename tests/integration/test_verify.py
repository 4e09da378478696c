"""`edgecache verify`: a store filled by the real daemon, damaged on disk
while the daemon is stopped, checked, repaired, and served again."""

import os
import re
import subprocess

import harness
from harness import do_target
from origin import object_bytes, object_sha256

SUMMARY = re.compile(r"^verified (\d+) blobs? \([^)]*\): (\d+) good, (\d+) bad\b.*$", re.M)


def verify(binary, *args, env=None):
    """Runs `edgecache verify ARGS`; returns the CompletedProcess (text)."""
    return subprocess.run([binary, "verify", *args], env=harness.child_env(env),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60)


def summary(p):
    """(blobs, good, bad) from the summary line on stdout."""
    m = SUMMARY.search(p.stdout)
    assert m, "no summary line in stdout:\n%s\nstderr:\n%s" % (p.stdout, p.stderr)
    return tuple(int(g) for g in m.groups())


def flip_byte(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def test_verify_repairs_a_damaged_blob_and_the_daemon_fetches_it_again(origin, edgecache):
    ec = edgecache(allow=[origin.base])
    size_a, size_b = 300000, 1500000            # b spans two 1 MiB reads
    path_a = "/obj/verify-a?size=%d" % size_a
    path_b = "/obj/verify-b?size=%d" % size_b
    target_a, target_b = do_target(path_a, origin.host), do_target(path_b, origin.host)
    digest_a = object_sha256("verify-a", "0", size_a)
    digest_b = object_sha256("verify-b", "0", size_b)

    for target, digest in ((target_a, digest_a), (target_b, digest_b)):
        r = ec.get(target)
        assert r.status == 200 and r.sha256 == digest
    ec.wait_idle()
    assert ec.stop() == 0

    p = verify(ec.binary, "--cache-dir", ec.cache_dir)
    assert p.returncode == 0, p
    assert summary(p) == (2, 2, 0)

    flip_byte(ec.blob_path(digest_a), 1234)

    # Checking: exit 1, the damaged blob named, nothing changed, and no
    # progress output when stderr is not a terminal.
    p = verify(ec.binary, "--cache-dir", ec.cache_dir)
    assert p.returncode == 1, p
    assert summary(p) == (2, 1, 1)
    assert "1 bad (1 digest mismatch)" in p.stdout
    assert re.search(r"^%s: digest mismatch" % digest_a, p.stdout, re.M), p.stdout
    assert digest_b not in p.stdout
    assert p.stderr == ""
    assert os.path.exists(ec.blob_path(digest_a))

    # Repairing: exit 0, the blob file gone, the good one kept.
    p = verify(ec.binary, "--repair", "--cache-dir", ec.cache_dir)
    assert p.returncode == 0, p
    assert "removed 1" in p.stdout
    assert re.search(r"^%s: digest mismatch.*\(removed\)$" % digest_a, p.stdout, re.M), p.stdout
    assert not os.path.exists(ec.blob_path(digest_a))
    assert os.path.exists(ec.blob_path(digest_b))

    # The cache dir from the environment, as the daemon takes it.
    p = verify(ec.binary, env={"EDGECACHE_CACHE_DIR": ec.cache_dir})
    assert p.returncode == 0, p
    assert summary(p) == (1, 1, 0)

    ec.start()
    assert origin.count(path_a) == 1
    r = ec.get(target_a)
    assert r.status == 200 and r.body == object_bytes("verify-a", "0", size_a)
    assert r.cache_status == "edgecache; fwd=miss; stored"
    assert origin.count(path_a) == 2, "the repaired object was not fetched again"
    r = ec.get(target_b, keep_body=False)
    assert r.status == 200 and r.sha256 == digest_b
    assert r.cache_status == "edgecache; hit"
    assert origin.count(path_b) == 1


def test_verify_reports_a_row_without_its_blob_until_repaired(origin, edgecache):
    ec = edgecache(allow=[origin.base])
    path = "/obj/verify-gone?size=4096"
    digest = object_sha256("verify-gone", "0", 4096)
    assert ec.get(do_target(path, origin.host)).sha256 == digest
    ec.wait_idle()
    assert ec.stop() == 0
    os.unlink(ec.blob_path(digest))

    p = verify(ec.binary, "--quiet", "--cache-dir", ec.cache_dir)
    assert p.returncode == 1, p
    assert "1 bad (1 missing blob)" in p.stdout
    p = verify(ec.binary, "--repair", "-q", "--cache-dir", ec.cache_dir)
    assert p.returncode == 0 and "removed 1" in p.stdout, p
    p = verify(ec.binary, "--cache-dir", ec.cache_dir)
    assert p.returncode == 0 and summary(p) == (0, 0, 0), p


def test_verify_exits_2_when_it_cannot_run(workdir, edgecache_bin):
    missing = os.path.join(workdir, "no-such-cache")
    p = verify(edgecache_bin, "--cache-dir", missing)
    assert p.returncode == 2, p
    assert missing in p.stderr and "cache_dir" in p.stderr
    assert not os.path.exists(missing), "verify created the cache dir it was to check"

    empty = os.path.join(workdir, "not-a-cache")
    os.mkdir(empty)
    p = verify(edgecache_bin, "--cache-dir", empty)
    assert p.returncode == 2 and "no edgecache store" in p.stderr, p
    assert os.listdir(empty) == []

    p = verify(edgecache_bin, "--no-such-flag")
    assert p.returncode == 2 and "--no-such-flag" in p.stderr, p
    p = verify(edgecache_bin, "--cache-dir", empty, env={"EDGECACHE_NO_SUCH": "1"})
    assert p.returncode == 2 and "EDGECACHE_NO_SUCH" in p.stderr, p
