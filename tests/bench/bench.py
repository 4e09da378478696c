#!/usr/bin/python3
"""edgecache benchmarks: measures on this machine and prints ratios. Not part
of the test suite (shared machines are noisy); run by hand:

    /usr/bin/python3 tests/bench/bench.py [--size-mib 1024] [--wrk-seconds 10]

1. Fill cost: the CPU time edgecache spends filling one SIZE object from a
   local nginx origin, without an expectation (the SHA-256 is computed anyway:
   it names the blob) and with one (the same digest, then compared), next to
   the CPU time of SHA-256 alone over the same bytes. Prints how much of the
   fill path hashing costs.
2. Hits: wrk against a 1 MiB object served by edgecache (a hit, sendfile)
   and by nginx directly from its docroot; prints requests/s and the ratio.
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
import harness  # noqa: E402


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_payload(path, size):
    block = os.urandom(1 << 20)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for i in range(size >> 20):
            chunk = hashlib.sha256(block + i.to_bytes(8, "big")).digest() + block[32:]
            f.write(chunk)
            h.update(chunk)
    return h.hexdigest()


def fill_once(ec, target):
    pid = ec.process.proc.pid
    before, t0 = cpu_seconds(pid), time.monotonic()
    r = ec.get(target, keep_body=False, timeout=600)
    assert r.status == 200, r
    ec.wait_idle(timeout=120)
    return cpu_seconds(pid) - before, time.monotonic() - t0


def sha256_cpu(path):
    t0 = time.process_time()
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            h.update(b)
    return time.process_time() - t0


def register(ec, url, sha, size):
    body = json.dumps([{"url": url, "sha256": sha, "size": size}]).encode()
    r = harness.request(ec.admin_port, "POST", "/api/v1/expectations", body=body)
    assert r.status == 200, r


def wrk(url, seconds):
    out = subprocess.run(["wrk", "-t2", "-c32", "-d%ds" % seconds, url],
                         capture_output=True, text=True, check=True).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--wrk-seconds", type=int, default=10)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="edgecache-bench-")
    nginx = ec = None
    try:
        nginx = harness.Nginx(work)
        size = args.size_mib << 20
        big = os.path.join(nginx.docroot, "big.bin")
        write_payload(big, size)
        # Other bytes for the verified fill (the same bytes would be a hit by hash).
        big3 = os.path.join(nginx.docroot, "big3.bin")
        sha3 = write_payload(big3, size)
        ec = harness.Edgecache(harness.edgecache_bin(), work, "edgecache",
                               os.path.join(work, "cache"), [nginx.base], ["--log-level", "warn"])
        ec.start()
        register(ec, nginx.url("/big3.bin"), sha3, size)
        os.sync()                   # both fills start with no writeback pending
        cpu_plain, wall_plain = fill_once(ec, "/big.bin?cacheHostOrigin=" + nginx.host)
        os.sync()
        cpu_ver, wall_ver = fill_once(ec, "/big3.bin?cacheHostOrigin=" + nginx.host)
        hash_cpu = sha256_cpu(big)
        mib = size / (1 << 20)
        print("fill of %d MiB from a local nginx origin" % mib)
        print("  without expectation: %.2f s CPU, %.2f s wall (%.0f MiB/s)"
              % (cpu_plain, wall_plain, mib / wall_plain))
        print("  with expectation:    %.2f s CPU, %.2f s wall (%.0f MiB/s)"
              % (cpu_ver, wall_ver, mib / wall_ver))
        print("  SHA-256 alone (hashlib, same bytes): %.2f s CPU" % hash_cpu)
        print("  ratio with/without verification (CPU): %.3f" % (cpu_ver / cpu_plain))
        print("  share of the fill's CPU that is hashing: %.0f%%" % (100 * hash_cpu / cpu_plain))

        small = os.path.join(nginx.docroot, "small.bin")
        with open(small, "wb") as f:
            f.write(os.urandom(1 << 20))
        target = "/small.bin?cacheHostOrigin=" + nginx.host
        assert ec.get(target, keep_body=False).status == 200
        ec.wait_idle()
        rps_ec = wrk(ec.url(target), args.wrk_seconds)
        rps_nginx = wrk(nginx.url("/small.bin"), args.wrk_seconds)
        print("hits of a 1 MiB object, wrk -t2 -c32 -d%ds" % args.wrk_seconds)
        print("  edgecache: %.0f req/s   nginx (static): %.0f req/s   ratio: %.2f"
              % (rps_ec, rps_nginx, rps_ec / rps_nginx))
    finally:
        if ec:
            ec.close()
        if nginx:
            nginx.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
