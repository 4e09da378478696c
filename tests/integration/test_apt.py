"""apt through edgecache (DESIGN.md §1, §5): a small unsigned Debian
repository built with dpkg-deb and apt-ftparchive, served by nginx the way a
mirror serves one (indexes under dists/ with `Cache-Control: no-cache`,
packages with `max-age=86400`), and Debian's own apt-get pointed at
edgecache, once as a forward proxy and once through a route prefix.

apt runs with a configuration of its own (APT_CONFIG): its sources list,
state, cache and dpkg status live in the test's directory, and the
machine's apt.conf.d, sources and lists are neither read nor written.

The flow: update and download; update and download again (the packages are
hits, the indexes revalidated); publish a new version of one package; update
(apt sees the new version) and download (the new package is fetched, the
unchanged one still comes from the cache)."""

import base64
import gzip
import os
import re
import shutil
import subprocess

import pytest

import harness
from harness import requests_counter

# Fixed modification times, one per publication of the repository: the
# repository's files keep their validators (Last-Modified, nginx's ETag)
# while unchanged and get new ones when republished, even within a second.
T_FIRST_PUBLISH = 1700000000
PUBLISH_STEP = 3600

SUITE = "stable"
ARCH = "amd64"

# How the repository tells a cache what changes: the indexes must be
# revalidated before every use, a package file never changes under its name.
REPO_NGINX_CONF = """\
        location /repo/dists/ {
            add_header Cache-Control "no-cache";
        }
        location ~ \\.deb$ {
            add_header Cache-Control "max-age=86400";
        }
"""

APT_CONF = """\
Dir::Etc "{d}/etc/";
Dir::Etc::main "apt.conf";
Dir::Etc::parts "apt.conf.d";
Dir::Etc::sourcelist "sources.list";
Dir::Etc::sourceparts "sources.list.d";
Dir::Etc::preferences "preferences";
Dir::Etc::preferencesparts "preferences.d";
Dir::Etc::trusted "trusted.gpg";
Dir::Etc::trustedparts "trusted.gpg.d";
Dir::State "{d}/state/";
Dir::State::status "{d}/status";
Dir::Cache "{d}/cache/";
Dir::Log "{d}/log/";
Debug::NoLocking "true";
APT::Sandbox::User "root";
APT::Architecture "{arch}";
APT::Architectures {{ "{arch}"; }};
APT::Get::List-Cleanup "false";
Acquire::Languages "none";
Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled "false";
Acquire::Retries "0";
Acquire::http::Timeout "10";
Acquire::http::Proxy "{proxy}";
"""


# --------------------------------------------------------------------------
# The repository

class AptRepo:
    """A Debian repository under nginx's docroot at /repo/: pool/main/*.deb
    and dists/stable/{Release, main/binary-amd64/Packages{,.gz}}, unsigned.
    Packages are Architecture: all, each a control file and one small file."""

    def __init__(self, workdir, root):
        self.build_dir = os.path.join(workdir, "debs")
        self.root = root
        self.published = 0
        self.debs = {}          # name -> (version, bytes) as listed now

    def pool_path(self, name, version):
        return "pool/main/%s_%s_all.deb" % (name, version)

    def set_package(self, name, version):
        """Builds name at version and puts it in the pool in place of any
        other version (published by publish())."""
        old = self.debs.get(name)
        if old is not None:
            os.unlink(os.path.join(self.root, self.pool_path(name, old[0])))
        data = build_deb(self.build_dir, name, version)
        path = os.path.join(self.root, self.pool_path(name, version))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        os.utime(path, (T_FIRST_PUBLISH, T_FIRST_PUBLISH))
        self.debs[name] = (version, data)
        return data

    def publish(self):
        """Writes the indexes for what is in the pool, with the modification
        time of this publication."""
        self.published += 1
        mtime = T_FIRST_PUBLISH + self.published * PUBLISH_STEP
        dist = os.path.join(self.root, "dists", SUITE)
        shutil.rmtree(dist, ignore_errors=True)
        binary = os.path.join(dist, "main", "binary-%s" % ARCH)
        os.makedirs(binary)
        packages = ftparchive(self.root, ["packages", "pool"])
        assert packages.count(b"Package: ") == len(self.debs), packages
        with open(os.path.join(binary, "Packages"), "wb") as f:
            f.write(packages)
        with open(os.path.join(binary, "Packages.gz"), "wb") as f:
            f.write(gzip.compress(packages, mtime=mtime))
        release = ftparchive(self.root, [
            "-o", "APT::FTPArchive::Release::Origin=edgecache-test",
            "-o", "APT::FTPArchive::Release::Suite=%s" % SUITE,
            "-o", "APT::FTPArchive::Release::Codename=%s" % SUITE,
            "-o", "APT::FTPArchive::Release::Architectures=%s" % ARCH,
            "-o", "APT::FTPArchive::Release::Components=main",
            "release", os.path.join("dists", SUITE)])
        with open(os.path.join(dist, "Release"), "wb") as f:
            f.write(release)
        for dirpath, _, files in os.walk(dist):
            for name in files:
                os.utime(os.path.join(dirpath, name), (mtime, mtime))


def build_deb(build_dir, name, version):
    """The bytes of a .deb built with dpkg-deb: a control file and
    /usr/share/<name>/VERSION."""
    src = os.path.join(build_dir, "%s-%s" % (name, version))
    os.makedirs(os.path.join(src, "DEBIAN"))
    os.makedirs(os.path.join(src, "usr", "share", name))
    with open(os.path.join(src, "DEBIAN", "control"), "w") as f:
        f.write("Package: %s\nVersion: %s\nArchitecture: all\n"
                "Maintainer: edgecache tests <tests@example.invalid>\n"
                "Description: a package for edgecache's apt test\n" % (name, version))
    with open(os.path.join(src, "usr", "share", name, "VERSION"), "w") as f:
        f.write("%s %s\n" % (name, version))
    out = os.path.join(build_dir, "%s_%s_all.deb" % (name, version))
    run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", src, out])
    with open(out, "rb") as f:
        return f.read()


def ftparchive(cwd, args):
    return run(["apt-ftparchive"] + args, cwd=cwd).stdout


def run(argv, cwd=None, env=None, timeout=30):
    p = subprocess.run(argv, cwd=cwd, env=env or harness.child_env({"LC_ALL": "C"}),
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    assert p.returncode == 0, "%s exited with %s\nstdout:\n%s\nstderr:\n%s" % (
        " ".join(argv), p.returncode, p.stdout.decode(errors="replace"),
        p.stderr.decode(errors="replace"))
    return p


# --------------------------------------------------------------------------
# apt, isolated

class Apt:
    """apt-get and apt-cache with their own configuration, sources list,
    state and cache under dir; proxy is an Acquire::http::Proxy URL or
    "DIRECT". Downloads run with Acquire::http debugging, which prints each
    answer's headers, so that Cache-Status is read from apt's own output."""

    def __init__(self, workdir, source, proxy="DIRECT"):
        self.dir = os.path.join(workdir, "apt")
        for sub in ("etc/apt.conf.d", "etc/sources.list.d", "etc/preferences.d",
                    "etc/trusted.gpg.d", "state/lists/partial",
                    "cache/archives/partial", "log"):
            os.makedirs(os.path.join(self.dir, sub))
        with open(os.path.join(self.dir, "etc", "sources.list"), "w") as f:
            f.write(source + "\n")
        open(os.path.join(self.dir, "status"), "w").close()
        self.conf = os.path.join(self.dir, "apt.conf")
        with open(self.conf, "w") as f:
            f.write(APT_CONF.format(d=self.dir, arch=ARCH, proxy=proxy))
        self.env = harness.child_env({"APT_CONFIG": self.conf, "LC_ALL": "C"})
        self.downloads = 0

    def run(self, argv, cwd=None):
        """Runs argv; asserts it succeeded without warnings or errors.
        Returns (stdout, stderr) as text."""
        p = run(argv, cwd=cwd or self.dir, env=self.env)
        out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
        problems = [line for line in (out + err).splitlines() if re.match(r"^[WE]: ", line)]
        assert problems == [], "%s:\n%s\n%s" % (" ".join(argv), out, err)
        return out, err

    def update(self):
        return self.run(["apt-get", "update"])

    def lists(self):
        """The index files apt keeps under its own state directory."""
        lists = os.path.join(self.dir, "state", "lists")
        return sorted(f for f in os.listdir(lists) if f.endswith(("_Release", "_Packages", ".gz")))

    def download(self, *names):
        """apt-get download names in a fresh directory: ({file name: bytes},
        {URL path: Cache-Status of its answer})."""
        self.downloads += 1
        where = os.path.join(self.dir, "download-%d" % self.downloads)
        os.makedirs(where)
        _, err = self.run(["apt-get", "download", "-o", "Debug::Acquire::http=true"]
                          + list(names), cwd=where)
        files = {}
        for name in os.listdir(where):
            with open(os.path.join(where, name), "rb") as f:
                files[name] = f.read()
        return files, cache_statuses(err)

    def candidate(self, name):
        out, _ = self.run(["apt-cache", "policy", name])
        m = re.search(r"^\s*Candidate:\s*(\S+)", out, re.M)
        assert m, out
        return m.group(1)


def cache_statuses(debug_output):
    """{URL path: Cache-Status} from apt's Debug::Acquire::http output,
    which prints "Answer for: <URL>" and then that answer's headers."""
    statuses = {}
    current = None
    for line in debug_output.splitlines():
        line = line.strip()
        m = re.match(r"^Answer for: https?://[^/]+(/\S*)$", line)
        if m:
            current = m.group(1)
            continue
        m = re.match(r"^Cache-Status:\s*(.*)$", line, re.I)
        if m and current is not None:
            statuses[current] = m.group(1)
            current = None
    return statuses


# --------------------------------------------------------------------------
# The tests

@pytest.fixture
def repo_nginx(request, workdir):
    n = harness.Nginx(workdir, server_conf=REPO_NGINX_CONF)
    request.addfinalizer(n.close)
    return n


@pytest.fixture
def repo(workdir, repo_nginx):
    r = AptRepo(workdir, os.path.join(repo_nginx.docroot, "repo"))
    r.set_package("pkg-a", "1.0")
    r.set_package("pkg-b", "1.0")
    r.set_package("pkg-c", "1.0")
    r.publish()
    return r


def proxy_setup(edgecache, nginx, workdir):
    """edgecache as apt's http proxy; the sources line names nginx, an
    origin that is allowed but not immutable (its indexes change).
    Returns (edgecache, apt, the path apt asks for the repository's root)."""
    ec = edgecache(allow=[nginx.base], mutable=True)
    apt = Apt(workdir, "deb [trusted=yes] %s/repo/ %s main" % (nginx.base, SUITE),
              proxy="http://127.0.0.1:%d" % ec.port)
    return ec, apt, "/repo/"


def route_setup(edgecache, nginx, workdir):
    """The sources line names edgecache's route /debian/ (no allow entry:
    a route names its origin); apt connects directly."""
    ec = edgecache(args=["--route", "/debian/=%s/repo/" % nginx.base], mutable=True)
    apt = Apt(workdir, "deb [trusted=yes] http://127.0.0.1:%d/debian/ %s main" % (ec.port, SUITE))
    return ec, apt, "/debian/"


def test_the_repository_says_what_changes(repo_nginx, repo):
    # What the rest relies on: nginx marks the indexes and the packages.
    release = harness.request(repo_nginx.port, "GET", "/repo/dists/%s/Release" % SUITE)
    assert release.status == 200 and b"Packages.gz" in release.body
    assert release.header("Cache-Control") == "no-cache"
    assert release.header("ETag") and release.header("Last-Modified")
    deb = harness.request(repo_nginx.port, "GET", "/repo/" + repo.pool_path("pkg-a", "1.0"))
    assert deb.status == 200 and deb.body == repo.debs["pkg-a"][1]
    assert deb.header("Cache-Control") == "max-age=86400"


@pytest.mark.parametrize("setup", [proxy_setup, route_setup], ids=["forward-proxy", "route"])
def test_apt_update_and_download_through_edgecache(setup, edgecache, repo_nginx, repo, workdir):
    ec, apt, apt_root = setup(edgecache, repo_nginx, workdir)
    release = "/repo/dists/%s/Release" % SUITE
    packages = "/repo/dists/%s/main/binary-%s/Packages.gz" % (SUITE, ARCH)
    a1, b1 = repo.debs["pkg-a"][1], repo.debs["pkg-b"][1]
    pool_a1, pool_b = repo.pool_path("pkg-a", "1.0"), repo.pool_path("pkg-b", "1.0")

    # First update and download: everything comes from the repository.
    apt.update()
    assert apt.lists(), "apt wrote no index under its own state directory"
    assert apt.candidate("pkg-a") == "1.0"
    files, statuses = apt.download("pkg-a", "pkg-b")
    assert files == {"pkg-a_1.0_all.deb": a1, "pkg-b_1.0_all.deb": b1}
    assert statuses == {apt_root + pool_a1: "edgecache; fwd=miss; stored",
                        apt_root + pool_b: "edgecache; fwd=miss; stored"}
    ec.wait_idle()

    # Second round: the packages are served from the cache.
    hits = requests_counter(ec.metrics(), "hit")
    apt.update()
    assert apt.candidate("pkg-a") == "1.0"
    files, statuses = apt.download("pkg-a", "pkg-b")
    assert files == {"pkg-a_1.0_all.deb": a1, "pkg-b_1.0_all.deb": b1}
    assert statuses == {apt_root + pool_a1: "edgecache; hit",
                        apt_root + pool_b: "edgecache; hit"}
    assert requests_counter(ec.metrics(), "hit") >= hits + 2
    assert repo_nginx.count("/repo/" + pool_a1) == 1, repo_nginx.log_lines()
    assert repo_nginx.count("/repo/" + pool_b) == 1, repo_nginx.log_lines()

    # A new version of pkg-a is published; pkg-b and pkg-c are unchanged.
    # apt must see it at once: the indexes are no-cache.
    a2 = repo.set_package("pkg-a", "2.0")
    repo.publish()
    apt.update()
    assert apt.candidate("pkg-a") == "2.0", (
        "apt still sees the old pkg-a: edgecache answered a stale index "
        "(nginx answered Release with %s)" % statuses_at(repo_nginx, release))
    assert apt.candidate("pkg-b") == "1.0"
    files, statuses = apt.download("pkg-a", "pkg-b")
    pool_a2 = repo.pool_path("pkg-a", "2.0")
    assert files == {"pkg-a_2.0_all.deb": a2, "pkg-b_1.0_all.deb": b1}
    assert statuses == {apt_root + pool_a2: "edgecache; fwd=miss; stored",
                        apt_root + pool_b: "edgecache; hit"}
    assert repo_nginx.count("/repo/" + pool_a2) == 1, repo_nginx.log_lines()
    assert repo_nginx.count("/repo/" + pool_b) == 1, repo_nginx.log_lines()
    assert repo_nginx.count("/repo/" + pool_a1) == 1, repo_nginx.log_lines()

    # Every update revalidated Release at the repository: in full the first
    # time, a 304 while it was unchanged, in full once republished. The
    # Packages index crossed in full once per content.
    assert statuses_at(repo_nginx, release) == [200, 304, 200], repo_nginx.log_lines()
    assert statuses_at(repo_nginx, packages).count(200) == 2, repo_nginx.log_lines()


def statuses_at(nginx, path):
    """The statuses nginx answered for path, in order."""
    nginx.count(path)
    return [status for _, uri, status, _ in nginx.log_lines() if uri == path]


def install_download_only(apt, name):
    """apt-get install --download-only -y name into an archives directory
    of apt's own: ({file name: bytes} of the .debs, {URL path: Cache-Status})."""
    archives = os.path.join(apt.dir, "archives-%s" % name)
    os.makedirs(os.path.join(archives, "partial"))
    _, err = apt.run(["apt-get", "install", "--download-only", "-y",
                      "-o", "Debug::Acquire::http=true",
                      "-o", "Dir::Cache::archives=%s/" % archives, name])
    files = {}
    for f in os.listdir(archives):
        if f.endswith(".deb"):
            with open(os.path.join(archives, f), "rb") as fh:
                files[f] = fh.read()
    return files, cache_statuses(err)


def test_apt_install_download_only_twice_shares_one_cache(edgecache, repo_nginx, repo, workdir):
    """Two devices (two fresh apt state directories) install pkg-a through
    one edgecache as their http proxy: the second device's package comes
    from the cache, and the repository served the .deb once."""
    ec = edgecache(allow=[repo_nginx.base], mutable=True)
    source = "deb [trusted=yes] %s/repo/ %s main" % (repo_nginx.base, SUITE)
    deb = "/repo/" + repo.pool_path("pkg-a", "1.0")
    a1 = repo.debs["pkg-a"][1]
    for device, expected in (("device-1", "edgecache; fwd=miss; stored"),
                             ("device-2", "edgecache; hit")):
        apt = Apt(os.path.join(workdir, device), source, proxy="http://127.0.0.1:%d" % ec.port)
        apt.update()
        files, statuses = install_download_only(apt, "pkg-a")
        assert files == {"pkg-a_1.0_all.deb": a1}, (device, sorted(files))
        assert statuses.get(deb) == expected, (device, statuses)
        ec.wait_idle()
    assert repo_nginx.count(deb) == 1, repo_nginx.log_lines()


def test_apt_through_a_mirror_without_validators_or_freshness(edgecache, origin, workdir):
    """A mirror that sends its files bare (Content-Type and Content-Length,
    no ETag, no Last-Modified, no Cache-Control): the indexes are refetched,
    but a .deb never changes under its name, so the second device's copy
    is a hit and the mirror sent the .deb once."""
    root = os.path.join(workdir, "bare-mirror")
    bare = AptRepo(workdir, root)
    a1 = bare.set_package("pkg-a", "1.0")
    bare.publish()
    for dirpath, _, names in os.walk(root):
        for name in names:
            full = os.path.join(dirpath, name)
            with open(full, "rb") as f:
                data = f.read()
            ctype = ("application/vnd.debian.binary-package" if name.endswith(".deb")
                     else "application/octet-stream")
            origin.script("/s/mirror/" + os.path.relpath(full, root),
                          [{"body_b64": base64.b64encode(data).decode(),
                            "headers": [["Content-Type", ctype]]}])
    ec = edgecache(allow=[origin.base], mutable=True)
    source = "deb [trusted=yes] %s/s/mirror/ %s main" % (origin.base, SUITE)
    deb = "/s/mirror/" + bare.pool_path("pkg-a", "1.0")
    for device, expected in (("device-1", "edgecache; fwd=miss; stored"),
                             ("device-2", "edgecache; hit")):
        apt = Apt(os.path.join(workdir, device), source, proxy="http://127.0.0.1:%d" % ec.port)
        apt.update()
        files, statuses = install_download_only(apt, "pkg-a")
        assert files == {"pkg-a_1.0_all.deb": a1}, (device, sorted(files))
        assert statuses.get(deb) == expected, (device, statuses)
        ec.wait_idle()
    assert origin.count_path(deb) == 1, [r["path"] for r in origin.requests()]
    # and plainly, a GET of the .deb through the proxy shape is a hit too
    r = ec.get(origin.url(deb))
    assert r.status == 200 and r.body == a1 and r.cache_status == "edgecache; hit", r
