"""Fixtures for edgecache's integration tests: a private work directory, the
scripted origin, nginx, and a factory for the daemon itself. Every process
and directory a fixture creates is removed by its finalizer, whatever the
outcome of the test; when a test fails, the logs of the processes it
started are attached to its report."""

import os
import shutil
import tempfile

import pytest

import harness

_LOGS = pytest.StashKey()


def _attach_log(request, title, path):
    request.node.stash.setdefault(_LOGS, []).append((title, path))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and rep.when in ("setup", "call"):
        for title, path in item.stash.get(_LOGS, []):
            rep.sections.append((title, harness.tail(path)))


@pytest.fixture
def workdir():
    d = tempfile.mkdtemp(prefix="edgecache-it-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def origin(request, workdir):
    o = harness.Origin(workdir)
    request.addfinalizer(o.close)
    _attach_log(request, "scripted origin log", o.log_path)
    return o


@pytest.fixture
def nginx_origin(request, workdir):
    n = harness.Nginx(workdir)
    request.addfinalizer(n.close)
    _attach_log(request, "nginx error log", n.error_log)
    _attach_log(request, "nginx access log", n.access_log)
    return n


@pytest.fixture
def edgecache_bin():
    path = harness.edgecache_bin()
    if not os.access(path, os.X_OK):
        pytest.fail("edgecache binary %s is missing (set EDGECACHE_BIN)" % path)
    return path


@pytest.fixture
def processes(request):
    """Factory: processes(argv, log_path, env) -> harness.Process, stopped
    after the test."""
    def start(argv, log_path, env):
        p = harness.Process(argv, log_path, env=env)
        request.addfinalizer(p.close)
        return p

    return start


@pytest.fixture
def edgecache(request, workdir, edgecache_bin):
    """Factory: edgecache(allow=[base URLs], args=[extra flags],
    cache_dir=None, start=True, mutable=False, env={}) -> harness.Edgecache,
    started and ready. The allowed origins are also immutable unless
    mutable=True; env adds variables to the daemon's environment."""
    started = []

    def make(allow=(), args=(), cache_dir=None, start=True, mutable=False, env=None):
        name = "edgecache%d" % len(started)
        cache_dir = cache_dir or os.path.join(workdir, name + "-cache")
        ec = harness.Edgecache(edgecache_bin, workdir, name, cache_dir, allow, args,
                               mutable=mutable, env=env)
        started.append(ec)
        request.addfinalizer(ec.close)
        _attach_log(request, "%s log" % name, ec.log_path)
        return ec.start() if start else ec

    return make
