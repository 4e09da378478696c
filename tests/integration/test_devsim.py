"""The device simulator (tests/devsim) against real origins: nginx serving
generated payloads, the scripted origin for answers nginx never gives, and
edgecache in front of nginx. Each test writes its own deployment document
in the shape Device Update or a firmware twin uses, runs devsim as an
operator would, and checks its exit status, its JSON lines and what the
origin was asked."""

import hashlib
import json
import os
import subprocess

import pytest

import harness
from harness import b64_of_hex, sha256_hex
from origin import object_bytes, object_sha256


@pytest.fixture
def devsim_bin():
    path = harness.devsim_bin()
    if not os.access(path, os.X_OK):
        pytest.fail("devsim binary %s is missing (set DEVSIM_BIN)" % path)
    return path


class Run:
    """One devsim run: exit code, the JSON lines, stderr."""

    def __init__(self, proc):
        self.rc = proc.returncode
        self.stderr = proc.stderr.decode(errors="replace")
        self.stdout = proc.stdout.decode(errors="replace")
        self.lines = [json.loads(row) for row in self.stdout.splitlines()]

    @property
    def summary(self):
        assert self.lines and self.lines[-1].get("summary") is True, self.stdout
        return self.lines[-1]

    def device_lines(self, device):
        return [ln for ln in self.lines if ln.get("device") == device]

    def states(self, device, key="state"):
        return [ln[key] for ln in self.device_lines(device) if key in ln]

    def __repr__(self):
        return "<devsim rc=%s\nstdout:\n%s\nstderr:\n%s>" % (self.rc, self.stdout, self.stderr)


@pytest.fixture
def devsim(devsim_bin, workdir):
    """devsim(document, *args, stdin=None) -> Run. document (a dict, or a
    str written verbatim) goes to a file in workdir; pass path="-" with
    stdin= to feed it on standard input instead."""
    count = [0]

    def run(document, *args, stdin=None, timeout=120):
        count[0] += 1
        path = "-"
        if document is not None:
            path = os.path.join(workdir, "deployment%d.json" % count[0])
            with open(path, "w") as f:
                f.write(document if isinstance(document, str) else json.dumps(document))
        proc = subprocess.run([devsim_bin] + [str(a) for a in args] + [path],
                              input=stdin, capture_output=True, timeout=timeout,
                              env=harness.child_env())
        return Run(proc)

    return run


# --------------------------------------------------------------------------
# Documents

def adu_file(name, data=None, sha256_b64=None, size=None):
    """An updateManifest files entry; the hash and size are data's unless
    given."""
    return {"fileName": name,
            "sizeInBytes": len(data) if size is None else size,
            "hashes": {"sha256": sha256_b64 or b64_of_hex(sha256_hex(data))}}


def adu_twin(files, urls, workflow="wf-1", extra_manifest=None):
    """The desired twin a device receives: properties.desired.deviceUpdate.service
    with the updateManifest as a JSON string (as the service signs it)."""
    manifest = {
        "manifestVersion": "5",
        "updateId": {"provider": "Contoso", "name": "Press", "version": "2.0"},
        "compatibility": [{"deviceManufacturer": "contoso", "deviceModel": "press"}],
        "instructions": {"steps": [{"handler": "microsoft/swupdate:1",
                                    "files": list(files)}]},
        "files": files,
        "createdDateTime": "2024-01-01T00:00:00Z",
    }
    manifest.update(extra_manifest or {})
    service = {"workflow": {"action": 3, "id": workflow},
               "updateManifest": json.dumps(manifest),
               "updateManifestSignature": "eyJhbGciOiJSUzI1NiJ9.e30.c2ln",
               "fileUrls": urls}
    return {"deviceId": "press-1",
            "properties": {"desired": {"deviceUpdate": {"service": service}}}}


def firmware_twin(url, check_value, version="1.0.1", size=None):
    fw = {"fwVersion": version, "fwPackageURI": url, "fwPackageCheckValue": check_value}
    if size is not None:
        fw["fwSize"] = size
    return {"deviceId": "plc-1",
            "properties": {"desired": {"firmware": fw, "$version": 7},
                           "reported": {"firmware": {"currentFwVersion": "1.0.0",
                                                     "fwUpdateStatus": "current"}}}}


def put_payloads(nginx, sizes):
    """Random payloads at /updates/<name> on nginx: {name: bytes}."""
    out = {}
    for name, size in sizes.items():
        data = os.urandom(size)
        nginx.put("/updates/" + name, data)
        out[name] = data
    return out


def assert_adu_success(run, devices, workflow):
    for d in range(1, devices + 1):
        states = run.states(d)
        assert states[0] == "DownloadStarted", run
        assert states[-1] == "Idle", run
        assert "Failed" not in states, run
        assert run.device_lines(d)[0]["workflow"] == workflow
        assert run.device_lines(d)[-1]["resultCode"] == 700


# --------------------------------------------------------------------------
# ADU deployments

def test_adu_deployment_every_device_reaches_idle_700(nginx_origin, devsim):
    payloads = put_payloads(nginx_origin, {"fw.swu": (1 << 20) + 17, "script.sh": 3000,
                                           "detached.json": 700, "delta.bin": 500})
    files = {"f1": adu_file("fw.swu", payloads["fw.swu"]),
             "f2": adu_file("script.sh", payloads["script.sh"]),
             # The full manifest of a reference step is just another file.
             "f3": adu_file("detached.json", payloads["detached.json"])}
    # A delta's source file comes from the device: never downloaded.
    files["f1"]["relatedFiles"] = {"f9": adu_file("delta.bin", payloads["delta.bin"])}
    urls = {fid: nginx_origin.url("/updates/" + files[fid]["fileName"]) for fid in files}
    urls["f9"] = nginx_origin.url("/updates/delta.bin")
    doc = adu_twin(files, urls, workflow="e99c69ca-wf",
                   extra_manifest={"instructions": {"steps": [
                       {"handler": "microsoft/swupdate:1", "files": ["f1", "f2"]},
                       {"type": "reference", "detachedManifestFileId": "f3"}]}})

    run = devsim(doc, "--devices", 5)

    assert run.rc == 0, run
    assert_adu_success(run, 5, "e99c69ca-wf")
    assert run.states(1) == ["DownloadStarted", "DownloadSucceeded", "InstallStarted",
                             "InstallSucceeded", "ApplyStarted", "Idle"]
    started = run.device_lines(1)[0]
    assert started["updateId"] == "Contoso/Press/2.0"
    assert started["files"] == 3
    assert started["skippedFileUrls"] == ["f9"]
    s = run.summary
    assert (s["devices"], s["succeeded"], s["failed"]) == (5, 5, 0)
    assert s["bytes"] == 5 * sum(len(payloads[n]) for n in ("fw.swu", "script.sh",
                                                            "detached.json"))
    assert sorted((f["name"], f["ok"], f["failed"]) for f in s["files"]) == [
        ("detached.json", 5, 0), ("fw.swu", 5, 0), ("script.sh", 5, 0)]
    for name in ("fw.swu", "script.sh", "detached.json"):
        assert nginx_origin.count("/updates/" + name, at_least=5) == 5
    assert nginx_origin.count("/updates/delta.bin", at_least=0, settle=0) == 0
    assert all(status == 200 and rng is None for _, _, status, rng in nginx_origin.log_lines())


def test_bare_service_object_with_a_2_0_files_array(nginx_origin, devsim):
    payloads = put_payloads(nginx_origin, {"pkg.json": 154})
    manifest = {"manifestVersion": "2.0",
                "files": [{"filename": "pkg.json", "sizeInBytes": 154,
                           "hashes": {"sha256": b64_of_hex(sha256_hex(payloads["pkg.json"]))}}]}
    doc = {"workflow": {"action": 3, "id": "wf-old"},
           "updateManifest": json.dumps(manifest),
           "fileUrls": {"0a1b": nginx_origin.url("/updates/pkg.json")}}

    run = devsim(doc, "--devices", 2)

    assert run.rc == 0, run
    assert_adu_success(run, 2, "wf-old")
    assert [f["name"] for f in run.summary["files"]] == ["pkg.json"]


def test_wrong_hash_fails_every_device_naming_the_file(nginx_origin, devsim):
    payloads = put_payloads(nginx_origin, {"good.swu": 200000, "bad.swu": 300000})
    wrong = b64_of_hex(sha256_hex(b"not the payload"))
    files = {"g": adu_file("good.swu", payloads["good.swu"]),
             "b": adu_file("bad.swu", payloads["bad.swu"], sha256_b64=wrong)}
    urls = {"g": nginx_origin.url("/updates/good.swu"), "b": nginx_origin.url("/updates/bad.swu")}

    run = devsim(adu_twin(files, urls), "--devices", 4)

    assert run.rc == 1, run
    actual = b64_of_hex(sha256_hex(payloads["bad.swu"]))
    for d in range(1, 5):
        failed = [ln for ln in run.device_lines(d) if ln.get("state") == "Failed"]
        assert len(failed) == 1, run
        assert failed[0]["file"] == "bad.swu"
        assert failed[0]["resultCode"] == 0
        assert failed[0]["extendedResultCode"] == 1
        assert failed[0]["reason"] == "sha256 mismatch: expected %s, got %s" % (wrong, actual)
        assert "Idle" not in run.states(d) and "DownloadSucceeded" not in run.states(d)
    s = run.summary
    assert (s["succeeded"], s["failed"]) == (0, 4)
    bad = [f for f in s["files"] if f["name"] == "bad.swu"][0]
    assert (bad["ok"], bad["failed"]) == (0, 4)


def test_wrong_size_fails_with_the_sizes(nginx_origin, devsim):
    payloads = put_payloads(nginx_origin, {"a.bin": 4096})
    files = {"a": adu_file("a.bin", payloads["a.bin"], size=4000)}
    run = devsim(adu_twin(files, {"a": nginx_origin.url("/updates/a.bin")}))
    assert run.rc == 1, run
    failed = run.device_lines(1)[-1]
    assert failed["state"] == "Failed" and failed["extendedResultCode"] == 2
    assert failed["reason"] == "size mismatch: expected 4000 bytes, got 4096"


def test_file_without_a_hash_fails(nginx_origin, devsim):
    """An agent has nothing to verify a file without hashes.sha256 against:
    the device fails rather than install unverified bytes."""
    put_payloads(nginx_origin, {"a.bin": 100})
    files = {"a": {"fileName": "a.bin", "sizeInBytes": 100}}
    run = devsim(adu_twin(files, {"a": nginx_origin.url("/updates/a.bin")}))
    assert run.rc == 1, run
    failed = run.device_lines(1)[-1]
    assert failed["state"] == "Failed" and failed["extendedResultCode"] == 7, run
    assert failed["reason"] == "updateManifest gives no hashes.sha256 for a"


def test_missing_file_fails_with_the_http_status(nginx_origin, devsim):
    files = {"a": adu_file("gone.bin", b"x" * 10)}
    run = devsim(adu_twin(files, {"a": nginx_origin.url("/updates/gone.bin")}), "--devices", 2)
    assert run.rc == 1, run
    for d in (1, 2):
        failed = run.device_lines(d)[-1]
        assert failed["state"] == "Failed", run
        assert failed["file"] == "gone.bin"
        assert failed["httpStatus"] == 404
        assert failed["extendedResultCode"] == 3


# --------------------------------------------------------------------------
# Firmware twins

@pytest.mark.parametrize("form", ["hex", "HEX", "base64"])
def test_firmware_twin_with_a_sha256_reaches_current(nginx_origin, devsim, form):
    data = put_payloads(nginx_origin, {"plc-1.0.1.bin": 500000})["plc-1.0.1.bin"]
    hexdigest = sha256_hex(data)
    check = {"hex": hexdigest, "HEX": hexdigest.upper(), "base64": b64_of_hex(hexdigest)}[form]
    doc = firmware_twin(nginx_origin.url("/updates/plc-1.0.1.bin?sv=2021&sig=abc"), check,
                        size=len(data))

    run = devsim(doc, "--devices", 3)

    assert run.rc == 0, run
    for d in (1, 2, 3):
        assert run.states(d, "fwUpdateStatus") == ["downloading", "verifying", "applying",
                                                   "current"], run
        lines = run.device_lines(d)
        assert lines[0]["pendingFwVersion"] == "1.0.1"
        assert lines[-1]["currentFwVersion"] == "1.0.1"
        assert "note" not in lines[1]
    assert run.summary["succeeded"] == 3
    assert nginx_origin.count("/updates/plc-1.0.1.bin?sv=2021&sig=abc", at_least=3) == 3


def test_firmware_twin_with_a_wrong_sha256_reports_error(nginx_origin, devsim):
    data = put_payloads(nginx_origin, {"plc.bin": 10000})["plc.bin"]
    wrong = sha256_hex(data[:-1])
    run = devsim(firmware_twin(nginx_origin.url("/updates/plc.bin"), wrong))
    assert run.rc == 1, run
    assert run.states(1, "fwUpdateStatus") == ["downloading", "verifying", "error"]
    last = run.device_lines(1)[-1]
    assert last["fwUpdateSubstatus"] == "sha256 mismatch: expected %s, got %s" % (
        wrong, sha256_hex(data))


def test_firmware_twin_with_a_crc16_is_not_checked(nginx_origin, devsim):
    put_payloads(nginx_origin, {"plc.bin": 10000})
    run = devsim(firmware_twin(nginx_origin.url("/updates/plc.bin"), "0xA5C3"), "--devices", 2)
    assert run.rc == 0, run
    for d in (1, 2):
        assert run.states(d, "fwUpdateStatus") == ["downloading", "verifying", "applying",
                                                   "current"]
        verifying = run.device_lines(d)[1]
        assert "0xA5C3" in verifying["note"] and "not checked" in verifying["note"], verifying


def test_firmware_object_found_outside_desired_properties(nginx_origin, devsim):
    """A module twin or a test harness may nest the firmware object
    elsewhere; the first one with a fwPackageURI is taken."""
    data = put_payloads(nginx_origin, {"plc.bin": 1000})["plc.bin"]
    fw = firmware_twin(nginx_origin.url("/updates/plc.bin"), sha256_hex(data),
                       version="7.1")["properties"]["desired"]["firmware"]
    doc = {"modules": [{"name": "plc", "twin": {"firmware": fw}}]}
    run = devsim(doc)
    assert run.rc == 0, run
    assert run.device_lines(1)[-1] == dict(run.device_lines(1)[-1], fwUpdateStatus="current",
                                           currentFwVersion="7.1")


# --------------------------------------------------------------------------
# Interrupted downloads

def test_interrupt_at_50_resumes_with_range(nginx_origin, devsim):
    payloads = put_payloads(nginx_origin, {"big.swu": 2_000_001, "small.swu": 10_000})
    files = {"b": adu_file("big.swu", payloads["big.swu"]),
             "s": adu_file("small.swu", payloads["small.swu"])}
    urls = {k: nginx_origin.url("/updates/" + v["fileName"]) for k, v in files.items()}

    run = devsim(adu_twin(files, urls), "--devices", 3, "--interrupt-at", 50)

    assert run.rc == 0, run
    assert_adu_success(run, 3, "wf-1")
    assert run.summary["resumes"] == 6
    assert run.summary["bytes"] == 3 * (2_000_001 + 10_000)
    for name, size in (("big.swu", 2_000_001), ("small.swu", 10_000)):
        path = "/updates/" + name
        nginx_origin.count(path, at_least=6)
        rows = [(status, rng) for _, uri, status, rng in nginx_origin.log_lines() if uri == path]
        assert sorted(rows, key=str) == sorted([(200, None)] * 3
                                               + [(206, "bytes=%d-" % (size // 2))] * 3,
                                               key=str), rows


def test_resume_answered_200_fails_the_device(origin, devsim):
    """The scripted origin ignores Range here: a device that asked to resume
    must not accept a whole body in place of the rest."""
    target = "/obj/noresume?size=100000"
    files = {"x": adu_file("noresume.bin", sha256_b64=b64_of_hex(
        object_sha256("noresume", "0", 100000)), size=100000)}
    run = devsim(adu_twin(files, {"x": origin.url(target)}), "--interrupt-at", 30)
    assert run.rc == 1, run
    failed = run.device_lines(1)[-1]
    assert failed["state"] == "Failed", run
    assert failed["extendedResultCode"] == 5
    assert failed["reason"] == "Range: bytes=30000- answered HTTP 200, not 206"
    assert [r["range"] for r in origin.gets("/obj/noresume")] == [None, "bytes=30000-"]


def test_a_stalled_transfer_times_out(origin, devsim):
    target = "/obj/stall?size=100000&stall=1000"
    files = {"x": adu_file("stall.bin", sha256_b64=b64_of_hex(
        object_sha256("stall", "0", 100000)), size=100000)}
    run = devsim(adu_twin(files, {"x": origin.url(target)}), "--timeout", 1)
    assert run.rc == 1, run
    failed = run.device_lines(1)[-1]
    assert failed["extendedResultCode"] == 4 and failed["curlCode"] == 28, run
    assert failed["reason"].startswith("GET timed out"), failed


# --------------------------------------------------------------------------
# Options, input errors

def test_out_keeps_verified_files_and_quiet_prints_the_summary(nginx_origin, devsim, workdir):
    payloads = put_payloads(nginx_origin, {"fw.swu": 50000})
    files = {"f": adu_file("fw.swu", payloads["fw.swu"])}
    out = os.path.join(workdir, "kept")
    doc = json.dumps(adu_twin(files, {"f": nginx_origin.url("/updates/fw.swu")}))

    run = devsim(None, "--devices", 2, "--quiet", "--out", out, stdin=doc.encode())

    assert run.rc == 0, run
    assert len(run.lines) == 1 and run.summary["succeeded"] == 2
    for d in (1, 2):
        with open(os.path.join(out, "device-%d" % d, "fw.swu"), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == sha256_hex(payloads["fw.swu"])


def test_concurrency_one_downloads_one_file_at_a_time(nginx_origin, devsim):
    payloads = put_payloads(nginx_origin, {"a": 1000, "b": 2000})
    files = {k: adu_file(k, v) for k, v in payloads.items()}
    urls = {k: nginx_origin.url("/updates/" + k) for k in payloads}
    run = devsim(adu_twin(files, urls), "--devices", 3, "--concurrency", 1)
    assert run.rc == 0, run
    # Devices start in order, each once the previous one has finished.
    order = [(ln["device"], ln["state"]) for ln in run.lines
             if ln.get("state") in ("DownloadStarted", "Idle")]
    assert order == [(1, "DownloadStarted"), (1, "Idle"), (2, "DownloadStarted"),
                     (2, "Idle"), (3, "DownloadStarted"), (3, "Idle")]


@pytest.mark.parametrize("document, message", [
    ({"deviceId": "x", "properties": {"desired": {"$version": 1}}}, "no recognisable deployment"),
    ('{"updateManifest": ', "line 1"),
    ({"updateManifest": "{not json", "fileUrls": {}}, "updateManifest is not valid JSON"),
    ({"updateManifest": json.dumps({"files": {"a": adu_file("a", b"a")}}),
      "fileUrls": {"b": "http://127.0.0.1:9/b"}}, "no file of updateManifest.files"),
])
def test_unusable_documents_exit_2(devsim, document, message):
    run = devsim(document)
    assert run.rc == 2, run
    assert message in run.stderr, run.stderr
    assert run.lines == []


@pytest.mark.parametrize("args", [[], ["--devices", "0"], ["--interrupt-at", "100"],
                                  ["--devices", "x"], ["a.json", "b.json"]])
def test_usage_errors_exit_2(devsim_bin, args):
    proc = subprocess.run([devsim_bin] + args, capture_output=True, timeout=30)
    assert proc.returncode == 2, proc
    assert proc.stderr.startswith(b"devsim: "), proc.stderr
    assert proc.stdout == b""


# --------------------------------------------------------------------------
# Through edgecache

def test_twenty_devices_through_edgecache_fetch_each_file_once(nginx_origin, edgecache, devsim):
    payloads = put_payloads(nginx_origin, {"fw.swu": 3 << 20, "app.tar": 700_000,
                                           "cfg.json": 900})
    ec = edgecache(allow=[nginx_origin.base])
    files = {"id%d" % i: adu_file(name, data) for i, (name, data) in enumerate(payloads.items())}
    urls = {fid: ec.url(harness.do_target("/updates/" + f["fileName"], nginx_origin.host))
            for fid, f in files.items()}

    run = devsim(adu_twin(files, urls, workflow="wf-gw"), "--devices", 20)

    assert run.rc == 0, run
    assert_adu_success(run, 20, "wf-gw")
    assert run.summary["succeeded"] == 20
    assert run.summary["bytes"] == 20 * sum(len(d) for d in payloads.values())
    for name in payloads:
        assert nginx_origin.count("/updates/" + name) == 1, nginx_origin.log_lines()
