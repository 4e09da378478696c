"""The command line: --help, --version, and configuration errors that stop
edgecache before it listens."""

import os
import re
import subprocess

import pytest

import harness


def run(binary, workdir, args, timeout=5):
    """Runs edgecache with private ports and cache dir plus args. Returns
    (exit code, stdout, stderr, ports); fails if it is still running after
    timeout seconds (it started instead of refusing)."""
    ports = (harness.free_port(), harness.free_port())
    argv = [binary, "--listen", "127.0.0.1:%d" % ports[0],
            "--admin-listen", "127.0.0.1:%d" % ports[1],
            "--cache-dir", os.path.join(workdir, "cache")] + args
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=harness.child_env(), start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, 9)
        out, err = p.communicate()
        pytest.fail("edgecache %s still running after %ss; stderr:\n%s" % (args, timeout, err))
    return p.returncode, out, err, ports


def assert_refused(result, *patterns):
    code, out, err, ports = result
    assert code != 0, "exit code 0; stderr: %r" % err
    for pattern in patterns:
        assert re.search(pattern, err), "stderr %r does not match %r" % (err, pattern)
    for port in ports:
        assert not harness.port_is_open(port), "something listens on %d" % port


def test_unknown_flag(edgecache_bin, workdir):
    assert_refused(run(edgecache_bin, workdir, ["--no-such-flag", "1"]), r"no-such-flag")


@pytest.mark.parametrize("flag,value,key", [
    ("--stall-timeout", "0", r"stall[-_]timeout"),
    ("--connect-timeout", "soon", r"connect[-_]timeout"),
    ("--log-level", "loud", r"log[-_]level"),
    ("--allow", "ftp://127.0.0.1:21", r"allow"),
])
def test_bad_value(edgecache_bin, workdir, flag, value, key):
    assert_refused(run(edgecache_bin, workdir, [flag, value]), key)


def test_bad_listen_address(edgecache_bin, workdir):
    code, out, err, _ = run(edgecache_bin, workdir, ["--listen", "127.0.0.1:70000"])
    assert code != 0 and re.search(r"listen", err), err


def test_config_file_with_an_unknown_key(edgecache_bin, workdir):
    conf = os.path.join(workdir, "edgecache.conf")
    with open(conf, "w") as f:
        f.write("# edgecache test configuration\nlog_level = debug\nno_such_key = 1\n")
    result = run(edgecache_bin, workdir, ["-c", conf])
    assert_refused(result, r"no_such_key", r"(:3\b|line 3\b)")


def test_help_lists_the_options(edgecache_bin):
    p = subprocess.run([edgecache_bin, "--help"], capture_output=True, text=True, timeout=5,
                       env=harness.child_env())
    assert p.returncode == 0, p.stderr
    for flag in ("--cache-dir", "--listen", "--allow", "--route", "--stall-timeout"):
        assert flag in p.stdout, "--help does not list %s" % flag


def test_version(edgecache_bin):
    p = subprocess.run([edgecache_bin, "--version"], capture_output=True, text=True, timeout=5,
                       env=harness.child_env())
    assert p.returncode == 0, p.stderr
    assert re.search(r"\b\d+\.\d+\.\d+\b", p.stdout), p.stdout


def test_config_file_sets_allow_and_route(origin, edgecache, workdir):
    conf = os.path.join(workdir, "edgecache.conf")
    with open(conf, "w") as f:
        f.write("# origins for this test\nallow = %s\nimmutable = %s\nroute = /o/=%s/\n"
                "stall_timeout = 3s\n" % (origin.base, origin.base, origin.base))
    ec = edgecache(allow=[], args=["-c", conf])
    assert ec.get("/o/obj/c?size=100").status == 200
    assert ec.get(origin.url("/obj/c?size=100")).status == 200
    assert ec.get("http://localhost:%d/obj/c?size=100" % origin.port).status == 403
    assert origin.count("/obj/c?size=100") == 1


def test_readme_reference_matches_the_option_table(edgecache_bin):
    """README.md's configuration reference is what the option table prints."""
    readme = os.path.join(os.path.dirname(__file__), "..", "..", "README.md")
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    m = re.search(r"<!-- config-reference:begin[^>]*-->\n(.*?)<!-- config-reference:end -->",
                  text, re.S)
    assert m, "README.md has no config-reference block"
    out = subprocess.run([edgecache_bin, "--help-markdown"], capture_output=True, text=True,
                         timeout=5, env=harness.child_env())
    assert out.returncode == 0
    assert m.group(1) == out.stdout, "README.md's reference is stale: regenerate it with " \
                                     "edgecache --help-markdown"
