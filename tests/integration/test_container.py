"""The container image and its IoT Edge deployments, without a container
engine: docker/Dockerfile, docker/entrypoint.sh and the manifests in
docker/iotedge/ are read and checked against each other and against the
binary's own option table, and the entrypoint is run as the image runs it
(as root, dropping to the edgecache user) with the built binary, a cache
directory of the test's own and loopback ports only.
"""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import urllib.parse

import pytest

import harness

ROOT = os.path.normpath(os.path.join(harness.HERE, "..", ".."))
DOCKER = os.path.join(ROOT, "docker")
DOCKERFILE = os.path.join(DOCKER, "Dockerfile")
ENTRYPOINT = os.path.join(DOCKER, "entrypoint.sh")
SINGLE = os.path.join(DOCKER, "iotedge", "deployment.single.json")
NESTED = os.path.join(DOCKER, "iotedge", "deployment.nested.json")
SETPRIV = shutil.which("setpriv") or "/usr/bin/setpriv"
IMAGE_UID = 10001
OTHER_UID = 4242                        # a --user that owns nothing


# --------------------------------------------------------------------------
# Helpers

def config_keys(edgecache_bin):
    """The option names, from the example file the binary prints."""
    p = subprocess.run([edgecache_bin, "--help-config"], capture_output=True, text=True,
                       env=harness.child_env(), timeout=10)
    assert p.returncode == 0, p.stderr
    keys = re.findall(r"^#([a-z_]+) =", p.stdout, re.M)
    assert "cache_size" in keys and "admin_token" in keys, p.stdout[:500]
    return set(keys)


def key_of(env_name):
    assert env_name.startswith("EDGECACHE_"), env_name
    return env_name[len("EDGECACHE_"):].lower()


def dockerfile_stages():
    """[(from_line, [(INSTRUCTION, arguments)])] with continuation lines
    joined and comments dropped."""
    with open(DOCKERFILE) as f:
        text = f.read()
    lines, cur = [], ""
    for raw in text.splitlines():
        if not cur and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        if raw.rstrip().endswith("\\"):
            cur += raw.rstrip()[:-1] + " "
            continue
        lines.append(cur + raw)
        cur = ""
    stages = []
    for line in lines:
        word, _, rest = line.strip().partition(" ")
        word, rest = word.upper(), " ".join(rest.split())
        if word == "FROM":
            stages.append((rest, []))
        else:
            assert stages, "instruction before FROM: %s" % line
            stages[-1][1].append((word, rest))
    return stages


def image_env(runtime):
    env = {}
    for word, rest in runtime:
        if word == "ENV":
            for item in shlex.split(rest):
                name, eq, value = item.partition("=")
                assert eq, "ENV without '=': %s" % item
                env[name] = value
    return env


def one(runtime, word):
    found = [rest for w, rest in runtime if w == word]
    assert len(found) == 1, "%s: %r" % (word, found)
    return found[0]


def exec_form(rest):
    """The JSON array of CMD/ENTRYPOINT (after any --options)."""
    i = rest.index("[")
    return json.loads(rest[i:])


def load_manifests():
    with open(SINGLE) as f:
        single = json.load(f)
    with open(NESTED) as f:
        nested = json.load(f)
    assert set(nested) == {"top", "lower"}, list(nested)
    return {"single": single, "top": nested["top"], "lower": nested["lower"]}


def agent_of(manifest):
    return manifest["modulesContent"]["$edgeAgent"]["properties.desired"]


def module_env(manifest):
    env = agent_of(manifest)["modules"]["edgecache"]["env"]
    out = {}
    for name, v in env.items():
        assert set(v) == {"value"} and isinstance(v["value"], str), (name, v)
        out[name] = v["value"]
    return out


def create_options(module):
    raw = module["settings"]["createOptions"]
    assert isinstance(raw, str), "createOptions must be a JSON string"
    assert len(raw) <= 512, "createOptions over 512 characters must be split"
    return json.loads(raw)


def host_port(opts, container_port):
    binding = opts["HostConfig"]["PortBindings"]["%s/tcp" % container_port]
    assert len(binding) == 1, binding
    return binding[0]["HostPort"]


def url_parts(url):
    u = urllib.parse.urlsplit(url)
    return u.scheme, u.hostname, u.port


def runs_as(uid, argv):
    return [SETPRIV, "--reuid=%d" % uid, "--regid=%d" % uid, "--clear-groups", "--"] + argv


def proc_ids(pid):
    """(uids, gids, groups) of a running process, from /proc."""
    ids = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("Uid", "Gid", "Groups"):
                ids[name] = value.split()
    return ids["Uid"], ids["Gid"], ids["Groups"]


def need_root():
    if os.geteuid() != 0:
        pytest.skip("running the entrypoint as the image does (as root, dropping to uid "
                    "%d) needs root; euid is %d" % (IMAGE_UID, os.geteuid()))
    if not os.access(SETPRIV, os.X_OK):
        pytest.skip("setpriv (util-linux) is missing: %s" % SETPRIV)


def need_reachable(uid, binary):
    p = subprocess.run(runs_as(uid, ["test", "-x", binary]), timeout=10)
    if p.returncode != 0:
        pytest.skip("the binary %s cannot be run by uid %d (a directory above it is "
                    "closed to other users)" % (binary, uid))


@pytest.fixture
def sandbox():
    """A directory every uid may enter (tempfile's are 0700), removed after."""
    d = tempfile.mkdtemp(prefix="edgecache-ct-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def entrypoint_env(edgecache_bin, extra):
    """The image's ENV with the test's binary, uid and overrides."""
    env = image_env(dockerfile_stages()[-1][1])
    env.update({"EDGECACHE_EXE": edgecache_bin, "EDGECACHE_UID": str(IMAGE_UID)})
    env.update(extra)
    return harness.child_env(env)


def run_entrypoint(env, args=(), uid=None, timeout=20):
    argv = ["/bin/sh", ENTRYPOINT] + list(args)
    if uid is not None:
        argv = runs_as(uid, argv)
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def wait_healthz(port, process, log_path):
    def ready():
        if not process.running():
            raise AssertionError("exited with %s before /healthz answered:\n%s"
                                 % (process.proc.returncode, harness.tail(log_path, 40)))
        try:
            return harness.request(port, "GET", "/healthz", timeout=1).status == 200
        except OSError:
            return False
    harness.wait_for(ready, 15, what="/healthz on port %d" % port)


def health(edgecache_bin, env):
    """`edgecache health` as the image's HEALTHCHECK runs it: the binary
    itself, with the container's environment."""
    env = {k: v for k, v in env.items() if k not in ("EDGECACHE_EXE", "EDGECACHE_UID")}
    return subprocess.run([edgecache_bin, "health"], capture_output=True, text=True,
                          env=env, timeout=20, stdin=subprocess.DEVNULL)


# --------------------------------------------------------------------------
# (a) The deployment manifests

@pytest.mark.parametrize("name", ["single", "top", "lower"])
def test_manifest_has_the_iot_edge_shape(name):
    m = load_manifests()[name]
    assert set(m) == {"modulesContent"}
    content = m["modulesContent"]
    agent = agent_of(m)
    assert agent["schemaVersion"] in ("1.0", "1.1")
    assert agent["runtime"]["type"] == "docker"
    assert isinstance(agent["runtime"]["settings"], dict)
    for sysmod in ("edgeAgent", "edgeHub"):
        mod = agent["systemModules"][sysmod]
        assert mod["type"] == "docker" and mod["settings"]["image"], sysmod
        json.loads(mod["settings"]["createOptions"])
    assert agent["systemModules"]["edgeHub"]["status"] == "running"
    for mname, mod in agent["modules"].items():
        assert mod["type"] == "docker" and mod["status"] == "running", mname
        assert mod["restartPolicy"] == "always" and mod["version"], mname
        assert mod["settings"]["image"], mname
        create_options(mod)
    ec = agent["modules"]["edgecache"]
    opts = create_options(ec)
    assert host_port(opts, 8080) == "80"             # Delivery Optimization asks port 80
    assert host_port(opts, 8081) == "8081"
    assert set(opts["ExposedPorts"]) == {"8080/tcp", "8081/tcp"}
    binds = [b.split(":") for b in opts["HostConfig"]["Binds"]]
    assert [b[1] for b in binds] == ["/var/lib/edgecache"], binds
    assert binds[0][0].startswith("/"), "the cache must be a host directory: %r" % binds
    hub = content["$edgeHub"]["properties.desired"]
    assert hub["schemaVersion"] in ("1.0", "1.1")
    assert isinstance(hub["routes"], dict)
    assert hub["storeAndForwardConfiguration"]["timeToLiveSecs"] > 0


@pytest.mark.parametrize("name", ["single", "top", "lower"])
def test_manifest_env_names_real_keys_and_the_device_port(name, edgecache_bin):
    m = load_manifests()[name]
    env = module_env(m)
    keys = config_keys(edgecache_bin)
    unknown = [n for n in env if not n.startswith("EDGECACHE_") or key_of(n) not in keys]
    assert not unknown, "not edgecache config keys: %r" % unknown
    for required in ("EDGECACHE_CACHE_SIZE", "EDGECACHE_ADMIN_TOKEN", "EDGECACHE_ALLOW",
                     "EDGECACHE_ADVERTISE_URL"):
        assert env.get(required), required
    assert re.fullmatch(r"\d+[KMGT]", env["EDGECACHE_CACHE_SIZE"]), env["EDGECACHE_CACHE_SIZE"]
    # rewritten manifests name the port devices reach: the host side of 8080
    scheme, host, port = url_parts(env["EDGECACHE_ADVERTISE_URL"])
    ec = agent_of(m)["modules"]["edgecache"]
    assert scheme == "http" and host
    assert port == int(host_port(create_options(ec), 8080)), env["EDGECACHE_ADVERTISE_URL"]


@pytest.mark.parametrize("name", ["single", "top", "lower"])
def test_manifest_env_is_a_configuration_edgecache_accepts(name, edgecache_bin):
    """The image's ENV plus the module's env, loaded by the binary itself:
    `edgecache health` refuses a configuration the daemon would refuse, and
    otherwise only fails to reach a control plane (a free loopback port)."""
    env = image_env(dockerfile_stages()[-1][1])
    env.update(module_env(load_manifests()[name]))
    port = harness.free_port()
    p = subprocess.run([edgecache_bin, "health", "--admin-listen", "127.0.0.1:%d" % port],
                       capture_output=True, text=True, env=harness.child_env(env), timeout=20)
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert "configuration" not in out, out
    assert "http://127.0.0.1:%d/healthz" % port in out, out


def test_nested_lower_layer_is_wired_to_the_top_layer():
    ms = load_manifests()
    top, lower = module_env(ms["top"]), module_env(ms["lower"])
    top_opts = create_options(agent_of(ms["top"])["modules"]["edgecache"])
    _, top_host, _ = url_parts(top["EDGECACHE_ADVERTISE_URL"])
    # the parent is the top layer's data plane, as its devices reach it
    scheme, host, port = url_parts(lower["EDGECACHE_PARENT"])
    assert (scheme, host) == ("http", top_host), lower["EDGECACHE_PARENT"]
    assert port == int(host_port(top_opts, 8080))
    # manifests go up to the top layer's control plane, with its token
    scheme, host, port = url_parts(lower["EDGECACHE_PARENT_ADMIN_URL"])
    assert (scheme, host) == ("http", top_host), lower["EDGECACHE_PARENT_ADMIN_URL"]
    assert port == int(host_port(top_opts, 8081))
    assert lower["EDGECACHE_PARENT_ADMIN_TOKEN"] == top["EDGECACHE_ADMIN_TOKEN"]
    assert lower["EDGECACHE_ADMIN_TOKEN"] != top["EDGECACHE_ADMIN_TOKEN"]
    assert "EDGECACHE_PARENT" not in top
    # each layer its own advertised host; the same origins allowed
    assert url_parts(lower["EDGECACHE_ADVERTISE_URL"])[1] != top_host
    assert lower["EDGECACHE_ALLOW"] == top["EDGECACHE_ALLOW"]
    # a child waits longer than its parent, so the parent's verdict comes first
    assert int(lower["EDGECACHE_STALL_TIMEOUT"].rstrip("s")) > int(
        top.get("EDGECACHE_STALL_TIMEOUT", "30s").rstrip("s"))
    # the lower layer has no internet: its images come through the parent
    agent = agent_of(ms["lower"])
    images = [agent["systemModules"][m]["settings"]["image"] for m in ("edgeAgent", "edgeHub")]
    images += [mod["settings"]["image"] for mod in agent["modules"].values()]
    assert all(i.startswith("$upstream:443/") for i in images), images
    top_modules = agent_of(ms["top"])["modules"]
    assert "IoTEdgeAPIProxy" in top_modules
    proxy = create_options(top_modules["IoTEdgeAPIProxy"])
    assert host_port(proxy, 443) == "443"


# --------------------------------------------------------------------------
# (b) The Dockerfile against the entrypoint and the manifests

def test_dockerfile_build_stage_caches_the_packages():
    stages = dockerfile_stages()
    assert len(stages) == 2, [s[0] for s in stages]
    build = stages[0][1]
    assert stages[0][0].startswith("debian:12-slim")
    steps = [(w, r) for w, r in build if w in ("COPY", "RUN")]
    copy_deps = next(i for i, (w, r) in enumerate(steps)
                     if w == "COPY" and r.startswith("docker/install-deps.sh "))
    run_deps = next(i for i, (w, r) in enumerate(steps)
                    if w == "RUN" and re.search(r"install-deps\.sh build\b", r))
    copy_src = next(i for i, (w, r) in enumerate(steps) if w == "COPY" and r.startswith(". "))
    assert copy_deps < run_deps < copy_src, steps
    compile_step = " ".join(r for w, r in steps[copy_src:] if w == "RUN")
    assert "-DCMAKE_BUILD_TYPE=Release" in compile_step
    assert "--strip" in compile_step or re.search(r"\bstrip\b", compile_step)


def test_dockerfile_runtime_stage_agrees_with_entrypoint_and_manifests(edgecache_bin):
    stages = dockerfile_stages()
    assert stages[1][0] == "debian:12-slim"
    runtime = stages[1][1]
    with open(ENTRYPOINT) as f:
        entry = f.read()
    env = image_env(runtime)
    keys = config_keys(edgecache_bin)
    assert all(key_of(n) in keys for n in env if n.startswith("EDGECACHE_")), env
    assert env["EDGECACHE_CACHE_DIR"] == "/var/lib/edgecache"
    assert env["EDGECACHE_ADMIN_LISTEN"] == "0.0.0.0:8081"
    assert re.fullmatch(r"\d+[KMGT]", env["EDGECACHE_CACHE_SIZE"]), env
    # the user: uid and gid 10001, as the entrypoint drops to
    run = " ".join(r for w, r in runtime if w == "RUN")
    assert re.search(r"groupadd (.* )?--gid %d edgecache" % IMAGE_UID, run), run
    assert re.search(r"useradd (.* )?--uid %d (.* )?--gid %d" % (IMAGE_UID, IMAGE_UID), run)
    assert "chown %d:%d /var/lib/edgecache" % (IMAGE_UID, IMAGE_UID) in run
    assert "${EDGECACHE_UID:-%d}" % IMAGE_UID in entry
    # the binary and the entrypoint where each expects the other
    copies = [r.split() for w, r in runtime if w == "COPY"]
    assert any(c[-1] == "/usr/local/bin/edgecache" for c in copies), copies
    assert "${EDGECACHE_EXE:-/usr/local/bin/edgecache}" in entry
    entrypoint = exec_form(one(runtime, "ENTRYPOINT"))
    assert entrypoint == ["/usr/local/bin/entrypoint.sh"]
    assert ["docker/entrypoint.sh", entrypoint[0]] in [c[-2:] for c in copies]
    assert os.access(ENTRYPOINT, os.X_OK), "docker/entrypoint.sh must be executable"
    assert exec_form(one(runtime, "HEALTHCHECK").split("CMD", 1)[1]) == ["edgecache", "health"]
    assert "setpriv --reuid=" in entry and "--clear-groups" in entry
    # the ports: the daemon's listeners, the image's EXPOSE, the manifests
    exposed = set(one(runtime, "EXPOSE").split())
    assert exposed == {"8080", "8081"}, exposed
    p = subprocess.run([edgecache_bin, "--help-config"], capture_output=True, text=True,
                       env=harness.child_env(), timeout=10)
    listen = re.search(r"^#listen = (\S+)", p.stdout, re.M).group(1)
    assert {listen.rsplit(":", 1)[1], env["EDGECACHE_ADMIN_LISTEN"].rsplit(":", 1)[1]} == exposed
    assert one(runtime, "VOLUME") == env["EDGECACHE_CACHE_DIR"]
    for name, m in load_manifests().items():
        opts = create_options(agent_of(m)["modules"]["edgecache"])
        assert {p.split("/")[0] for p in opts["ExposedPorts"]} == exposed, name
        assert opts["HostConfig"]["Binds"][0].split(":")[1] == env["EDGECACHE_CACHE_DIR"]
        assert "EDGECACHE_CACHE_DIR" not in module_env(m), name


def test_entrypoint_is_posix_sh():
    p = subprocess.run(["/bin/sh", "-n", ENTRYPOINT], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    shellcheck = shutil.which("shellcheck")
    if shellcheck:
        p = subprocess.run([shellcheck, "-s", "sh", ENTRYPOINT], capture_output=True,
                           text=True, timeout=60)
        assert p.returncode == 0, p.stdout


# --------------------------------------------------------------------------
# (c) The entrypoint as the image runs it: root, then uid 10001

def test_entrypoint_drops_to_the_edgecache_user_and_health_follows_the_daemon(
        edgecache_bin, sandbox, processes):
    need_root()
    need_reachable(IMAGE_UID, edgecache_bin)
    cache = os.path.join(sandbox, "cache")
    os.mkdir(cache, 0o755)                           # a root-owned bind mount
    os.mkdir(os.path.join(cache, "tmp"), 0o755)      # left by a root-run tool
    assert os.stat(cache).st_uid == 0
    port, admin_port = harness.free_port(), harness.free_port()
    token = "ct-" + os.urandom(12).hex()
    env = entrypoint_env(edgecache_bin, {
        "EDGECACHE_CACHE_DIR": cache,
        "EDGECACHE_LISTEN": "127.0.0.1:%d" % port,
        "EDGECACHE_ADMIN_LISTEN": "127.0.0.1:%d" % admin_port,
        "EDGECACHE_ADMIN_TOKEN": token,
        "IOTEDGE_DEVICEID": "gw-7",
        "IOTEDGE_MODULEID": "edgecache",
    })
    log = os.path.join(sandbox, "entrypoint.log")
    daemon = processes(["/bin/sh", ENTRYPOINT], log, env)
    wait_healthz(admin_port, daemon, log)

    # the entrypoint exec'd edgecache in its own process, as 10001 with no groups
    assert os.path.realpath("/proc/%d/exe" % daemon.pid) == os.path.realpath(edgecache_bin)
    uids, gids, groups = proc_ids(daemon.pid)
    assert uids == [str(IMAGE_UID)] * 4, uids
    assert gids == [str(IMAGE_UID)] * 4, gids
    assert groups == [], groups
    for path in (cache, os.path.join(cache, "tmp"), os.path.join(cache, "index.db")):
        st = os.stat(path)
        assert (st.st_uid, st.st_gid) == (IMAGE_UID, IMAGE_UID), path
    r = harness.request(admin_port, "GET", "/status",
                        headers={"Authorization": "Bearer " + token})
    assert r.status == 200, r
    assert json.loads(r.body)["node_id"] == "gw-7.edgecache"
    assert harness.request(admin_port, "GET", "/status").status == 401

    url = "http://127.0.0.1:%d/healthz" % admin_port
    p = health(edgecache_bin, env)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.startswith("healthy: ") and url in p.stdout, p.stdout
    p = run_entrypoint(env, ["health"])              # `docker run IMAGE health`
    assert p.returncode == 0, p.stdout + p.stderr

    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
    p = health(edgecache_bin, env)
    assert p.returncode == 1, p.stdout + p.stderr
    assert p.stderr.startswith("unhealthy: ") and url in p.stderr, p.stderr


def test_entrypoint_creates_a_missing_cache_dir_for_the_user(edgecache_bin, sandbox, processes):
    need_root()
    need_reachable(IMAGE_UID, edgecache_bin)
    cache = os.path.join(sandbox, "var", "lib", "edgecache")
    admin_port = harness.free_port()
    env = entrypoint_env(edgecache_bin, {
        "EDGECACHE_CACHE_DIR": cache,
        "EDGECACHE_ADMIN_LISTEN": "127.0.0.1:%d" % admin_port,
        "EDGECACHE_ADMIN_TOKEN": "ct-token",
    })
    log = os.path.join(sandbox, "entrypoint.log")
    daemon = processes(["/bin/sh", ENTRYPOINT, "--listen",
                        "127.0.0.1:%d" % harness.free_port()], log, env)
    wait_healthz(admin_port, daemon, log)
    assert os.stat(cache).st_uid == IMAGE_UID
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0


def test_entrypoint_refuses_a_token_file_the_user_cannot_read(edgecache_bin, sandbox):
    need_root()
    secret = os.path.join(sandbox, "token")
    with open(secret, "w") as f:
        f.write("ct-secret\n")
    os.chmod(secret, 0o600)
    env = entrypoint_env(edgecache_bin, {
        "EDGECACHE_CACHE_DIR": os.path.join(sandbox, "cache"),
        "EDGECACHE_LISTEN": "127.0.0.1:%d" % harness.free_port(),
        "EDGECACHE_ADMIN_LISTEN": "127.0.0.1:%d" % harness.free_port(),
        "EDGECACHE_ADMIN_TOKEN_FILE": secret,
    })
    p = run_entrypoint(env)
    assert p.returncode == 1, p.stdout + p.stderr
    assert secret in p.stderr and "uid %d" % IMAGE_UID in p.stderr, p.stderr


# --------------------------------------------------------------------------
# (d) A control plane beyond loopback without a token

@pytest.mark.parametrize("listen", ["0.0.0.0:%d", "[::]:%d", ":%d"])
def test_entrypoint_refuses_a_public_control_plane_without_token(edgecache_bin, sandbox,
                                                                 listen):
    admin = listen % harness.free_port()
    env = entrypoint_env(edgecache_bin, {
        "EDGECACHE_CACHE_DIR": os.path.join(sandbox, "cache"),
        "EDGECACHE_LISTEN": "127.0.0.1:%d" % harness.free_port(),
        "EDGECACHE_ADMIN_LISTEN": admin,
    })
    p = run_entrypoint(env)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "entrypoint" in p.stderr and admin in p.stderr, p.stderr
    assert "EDGECACHE_ADMIN_TOKEN " in p.stderr and "EDGECACHE_ADMIN_TOKEN_FILE" in p.stderr
    assert "IoT Edge" in p.stderr, p.stderr
    assert not os.path.exists(os.path.join(sandbox, "cache")), "the entrypoint went on"


def test_health_asks_a_wildcard_listener_on_loopback(edgecache_bin):
    for listen, url in (("0.0.0.0:%d", "http://127.0.0.1:%d/healthz"),
                        ("[::]:%d", "http://[::1]:%d/healthz")):
        port = harness.free_port()                   # nothing listens there
        env = harness.child_env({"EDGECACHE_ADMIN_LISTEN": listen % port,
                                 "EDGECACHE_ADMIN_TOKEN": "ct-token"})
        p = subprocess.run([edgecache_bin, "health"], capture_output=True, text=True,
                           env=env, timeout=20)
        assert p.returncode == 1, p.stdout + p.stderr
        assert p.stderr.startswith("unhealthy: " + url % port), p.stderr
    # a configuration the daemon refuses is unhealthy too, never exit 2
    env = harness.child_env({"EDGECACHE_ADMIN_LISTEN": "0.0.0.0:%d" % harness.free_port()})
    p = subprocess.run([edgecache_bin, "health"], capture_output=True, text=True, env=env,
                       timeout=20)
    assert p.returncode == 1 and "admin_token" in p.stderr, p.stderr
    p = subprocess.run([edgecache_bin, "health", "--help"], capture_output=True, text=True,
                       env=harness.child_env(), timeout=20)
    assert p.returncode == 0 and "/healthz" in p.stdout, p.stderr


# --------------------------------------------------------------------------
# (e) docker run --user: nothing to fix from inside, only to say

def test_entrypoint_as_another_user_names_the_uid_and_the_fix(edgecache_bin, sandbox):
    cache = os.path.join(sandbox, "cache")
    os.mkdir(cache, 0o755)
    if os.geteuid() == 0:
        uid, wrap = OTHER_UID, OTHER_UID             # root's directory, another user
    else:
        uid, wrap = os.geteuid(), None
        os.chmod(cache, 0o555)                       # our own, but closed
    env = entrypoint_env(edgecache_bin, {
        "EDGECACHE_CACHE_DIR": cache,
        "EDGECACHE_LISTEN": "127.0.0.1:%d" % harness.free_port(),
        "EDGECACHE_ADMIN_LISTEN": "127.0.0.1:%d" % harness.free_port(),
        "EDGECACHE_ADMIN_TOKEN": "ct-token",
    })
    p = run_entrypoint(env, uid=wrap)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "uid %d" % uid in p.stderr and cache in p.stderr, p.stderr
    assert "chown" in p.stderr and "--user" in p.stderr, p.stderr
    assert os.listdir(cache) == [], "edgecache started anyway"


def test_entrypoint_as_another_user_runs_edgecache_as_that_user(edgecache_bin, sandbox,
                                                              processes):
    need_root()
    need_reachable(OTHER_UID, edgecache_bin)
    cache = os.path.join(sandbox, "cache")
    os.mkdir(cache, 0o755)
    os.chown(cache, OTHER_UID, OTHER_UID)            # the operator's chown
    admin_port = harness.free_port()
    env = entrypoint_env(edgecache_bin, {
        "EDGECACHE_CACHE_DIR": cache,
        "EDGECACHE_LISTEN": "127.0.0.1:%d" % harness.free_port(),
        "EDGECACHE_ADMIN_LISTEN": "127.0.0.1:%d" % admin_port,
        "EDGECACHE_ADMIN_TOKEN": "ct-token",
    })
    log = os.path.join(sandbox, "entrypoint.log")
    daemon = processes(runs_as(OTHER_UID, ["/bin/sh", ENTRYPOINT]), log, env)
    wait_healthz(admin_port, daemon, log)
    uids, _, _ = proc_ids(daemon.pid)
    assert uids == [str(OTHER_UID)] * 4, uids
    assert os.stat(cache).st_uid == OTHER_UID        # left as it was
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
