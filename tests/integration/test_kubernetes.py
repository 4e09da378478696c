"""The Kubernetes base (deploy/kubernetes/), without a cluster: the base is
rendered with `kubectl kustomize` (kubectl's built-in kustomize), the
objects are checked against each other and against the binary's own
option table, and the daemon is started with the environment a pod of the
StatefulSet gets (the token from the Secret, the ConfigMap's settings, the
peers as rendered), on loopback ports and a cache directory of the test's
own.
"""

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile

import pytest

import harness

try:
    import yaml
except ImportError:                     # said by the fixture, not skipped
    yaml = None

ROOT = os.path.normpath(os.path.join(harness.HERE, "..", ".."))
BASE = os.path.join(ROOT, "deploy", "kubernetes")
IMAGE_UID = 10001
INSTALL_HINT = "run ./docker/install-deps.sh test (Debian's kubernetes-client and python3-yaml)"


# --------------------------------------------------------------------------
# Rendering and reading the objects

def kubectl():
    path = shutil.which(os.environ.get("KUBECTL") or "kubectl")
    if not path:
        pytest.fail("kubectl is missing, so the Kubernetes base cannot be rendered: " + INSTALL_HINT)
    return path


@pytest.fixture(scope="module")
def objects():
    if yaml is None:
        pytest.fail("the yaml module (python3-yaml) is missing: " + INSTALL_HINT)
    p = subprocess.run([kubectl(), "kustomize", BASE], capture_output=True, text=True,
                       timeout=120, stdin=subprocess.DEVNULL, env=harness.child_env())
    assert p.returncode == 0, "kubectl kustomize %s failed:\n%s" % (BASE, p.stderr)
    docs = [d for d in yaml.safe_load_all(p.stdout) if d is not None]
    assert docs, "kubectl kustomize rendered nothing"
    for d in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(d), d
    return docs


def of_kind(objs, kind):
    return [o for o in objs if o["kind"] == kind]


def named(objs, kind, name):
    found = [o for o in of_kind(objs, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, "%s %s: %d rendered" % (kind, name, len(found))
    return found[0]


def statefulset(objs):
    found = of_kind(objs, "StatefulSet")
    assert len(found) == 1, [o["metadata"]["name"] for o in found]
    return found[0]


def container(sts):
    cs = sts["spec"]["template"]["spec"]["containers"]
    assert len(cs) == 1, [c["name"] for c in cs]
    return cs[0]


def headless(objs):
    return named(objs, "Service", statefulset(objs)["spec"]["serviceName"])


def device_service(objs):
    """The Service that is not the StatefulSet's headless one."""
    peers = statefulset(objs)["spec"]["serviceName"]
    found = [s for s in of_kind(objs, "Service") if s["metadata"]["name"] != peers]
    assert len(found) == 1, [s["metadata"]["name"] for s in found]
    return found[0]


def container_port(c, ref):
    """A Service's targetPort (a name or a number) -> the container port."""
    for p in c.get("ports", []):
        if p.get("name") == ref or p["containerPort"] == ref:
            return p["containerPort"]
    raise AssertionError("targetPort %r is none of the container's ports %r"
                         % (ref, c.get("ports")))


def selects(service, sts):
    sel = service["spec"]["selector"]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    return bool(sel) and all(labels.get(k) == v for k, v in sel.items())


def env_entries(objs, c):
    """name -> (source, value) as the kubelet builds the container's
    environment: envFrom first, env over it. source is "value", "secret"
    (value (name, key)), "field" (value the fieldPath) or "configmap"."""
    out = {}
    for src in c.get("envFrom", []):
        assert set(src) == {"configMapRef"}, src
        cm = named(objs, "ConfigMap", src["configMapRef"]["name"])
        for k, v in (cm.get("data") or {}).items():
            assert isinstance(v, str), (k, v)
            out[k] = ("value", v)
    for e in c.get("env", []):
        if "value" in e:
            out[e["name"]] = ("value", str(e["value"]))
        elif "secretKeyRef" in e.get("valueFrom", {}):
            ref = e["valueFrom"]["secretKeyRef"]
            out[e["name"]] = ("secret", (ref["name"], ref["key"]))
        elif "fieldRef" in e.get("valueFrom", {}):
            out[e["name"]] = ("field", e["valueFrom"]["fieldRef"]["fieldPath"])
        elif "configMapKeyRef" in e.get("valueFrom", {}):
            ref = e["valueFrom"]["configMapKeyRef"]
            cm = named(objs, "ConfigMap", ref["name"])
            out[e["name"]] = ("value", cm["data"][ref["key"]])
        else:
            out[e["name"]] = ("value", "")
    return out


def plain_env(objs, c):
    return {k: v for k, (src, v) in env_entries(objs, c).items() if src == "value"}


def secret_value(objs, name, key):
    s = named(objs, "Secret", name)
    if key in (s.get("stringData") or {}):
        return s["stringData"][key]
    assert key in (s.get("data") or {}), "Secret %s has no key %s" % (name, key)
    return base64.b64decode(s["data"][key]).decode()


def help_config(edgecache_bin):
    """{key: default} from the example file the binary prints."""
    p = subprocess.run([edgecache_bin, "--help-config"], capture_output=True, text=True,
                       env=harness.child_env(), timeout=10)
    assert p.returncode == 0, p.stderr
    keys = dict(re.findall(r"^#([a-z_]+) =[ ]?(.*)$", p.stdout, re.M))
    assert "cache_size" in keys and "admin_token" in keys, p.stdout[:500]
    return keys


def key_of(env_name):
    assert env_name.startswith("EDGECACHE_"), env_name
    return env_name[len("EDGECACHE_"):].lower()


def setting(objs, edgecache_bin, key):
    """What a pod's daemon uses for key: the rendered environment, else
    the binary's default."""
    env = plain_env(objs, container(statefulset(objs)))
    return env.get("EDGECACHE_" + key.upper()) or help_config(edgecache_bin)[key]


def port_of(listen):
    return int(listen.rsplit(":", 1)[1])


def size_bytes(s):
    """An edgecache SIZE (binary suffixes, as cfg_parse_size reads them)."""
    m = re.fullmatch(r"(\d+)([KMGTkmgt]?)(i?[Bb])?", s)
    assert m, "not a size: %r" % s
    return int(m.group(1)) << (10 * " kmgt".index(m.group(2).lower() or " "))


def quantity_bytes(q):
    """A Kubernetes quantity of bytes (Ki/Mi/Gi/Ti binary, k/M/G/T decimal)."""
    m = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?", str(q))
    assert m, "not a byte quantity: %r" % q
    unit = m.group(2) or ""
    if unit.endswith("i"):
        return int(m.group(1)) << (10 * "KMGTP".index(unit[0]) + 10)
    return int(m.group(1)) * 1000 ** ("kMGTP".index(unit) + 1 if unit else 0)


def seconds(duration):
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", duration)
    assert m, "not a duration: %r" % duration
    return int(m.group(1)) * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600,
                              "d": 86400}[m.group(2)]


def list_entries(value):
    """A list value as edgecache splits it: commas or white space."""
    return [e for e in re.split(r"[,\s]+", value) if e]


# --------------------------------------------------------------------------
# The objects and how they fit together

def test_base_renders_a_statefulset_two_services_a_secret(objects):
    kinds = [o["kind"] for o in objects]
    assert kinds.count("StatefulSet") == 1, kinds
    assert kinds.count("Service") >= 2, kinds
    assert kinds.count("Secret") >= 1, kinds
    sts = statefulset(objects)
    spec = sts["spec"]
    assert spec["replicas"] == 3
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec.get("updateStrategy", {}).get("type", "RollingUpdate") == "RollingUpdate"
    assert selects({"spec": {"selector": spec["selector"]["matchLabels"]}}, sts)
    c = container(sts)
    assert c["image"] == "edgecache:0.1.0", c["image"]      # the operator's images: entry
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8080, "admin": 8081}, ports


def test_peers_service_is_headless_and_publishes_every_pod(objects):
    sts = statefulset(objects)
    peers = headless(objects)                # spec.serviceName names it
    assert peers["metadata"]["name"] == "edgecache-peers"
    assert peers["spec"]["clusterIP"] == "None"
    assert peers["spec"]["publishNotReadyAddresses"] is True
    assert selects(peers, sts), (peers["spec"]["selector"], sts["spec"]["template"]["metadata"])
    http = [p for p in peers["spec"]["ports"]
            if container_port(container(sts), p.get("targetPort", p["port"])) == 8080]
    assert [p["port"] for p in http] == [8080], peers["spec"]["ports"]


def test_device_service_maps_port_80_to_the_data_plane(objects, edgecache_bin):
    sts = statefulset(objects)
    c = container(sts)
    svc = device_service(objects)
    assert svc["metadata"]["name"] == "edgecache"
    assert svc["spec"].get("type", "ClusterIP") == "ClusterIP"
    assert svc["spec"].get("clusterIP") != "None"
    assert selects(svc, sts)
    ports = svc["spec"]["ports"]
    assert [p["port"] for p in ports] == [80], ports
    assert ports[0]["targetPort"] == "http"
    # the container's http port is where the daemon listens, admin its control plane
    assert container_port(c, "http") == port_of(setting(objects, edgecache_bin, "listen"))
    assert container_port(c, "admin") == port_of(setting(objects, edgecache_bin, "admin_listen"))
    # devices never reach the control plane through it
    assert all(container_port(c, p["targetPort"]) != container_port(c, "admin") for p in ports)


def test_each_pod_has_a_volume_at_the_cache_dir_larger_than_the_budget(objects):
    sts = statefulset(objects)
    c = container(sts)
    env = plain_env(objects, c)
    cache_dir = env["EDGECACHE_CACHE_DIR"]
    assert cache_dir == "/var/lib/edgecache"
    claims = {t["metadata"]["name"]: t for t in sts["spec"]["volumeClaimTemplates"]}
    mounts = [m for m in c["volumeMounts"] if m["mountPath"] == cache_dir]
    assert len(mounts) == 1, c["volumeMounts"]
    assert mounts[0]["name"] in claims, (mounts, list(claims))
    assert not mounts[0].get("readOnly") and not mounts[0].get("subPath")
    pod_volumes = [v["name"] for v in sts["spec"]["template"]["spec"].get("volumes", [])]
    assert mounts[0]["name"] not in pod_volumes, "the cache must be the claim, not a pod volume"
    claim = claims[mounts[0]["name"]]["spec"]
    assert "ReadWriteOnce" in claim["accessModes"]
    request = quantity_bytes(claim["resources"]["requests"]["storage"])
    size = env["EDGECACHE_CACHE_SIZE"]
    if size.endswith("%"):
        assert 0 < float(size[:-1]) < 100, size
    else:
        assert 0 < size_bytes(size) < request, (size, claim["resources"]["requests"])


def test_probes_user_resources_and_grace(objects, edgecache_bin):
    sts = statefulset(objects)
    pod = sts["spec"]["template"]["spec"]
    c = container(sts)
    admin = container_port(c, "admin")
    for probe in ("livenessProbe", "readinessProbe"):
        assert probe in c, probe
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if probe not in c:
            continue
        get = c[probe]["httpGet"]
        assert get["path"] == "/healthz", (probe, get)
        assert container_port(c, get["port"]) == admin, (probe, get)
        assert get.get("scheme", "HTTP") == "HTTP", (probe, get)
    sc = pod["securityContext"]
    assert (sc["runAsUser"], sc["runAsGroup"], sc["fsGroup"]) == (IMAGE_UID,) * 3, sc
    assert c.get("securityContext", {}).get("runAsUser", IMAGE_UID) == IMAGE_UID
    for which in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][which]), c["resources"]
    grace = seconds(setting(objects, edgecache_bin, "shutdown_grace"))
    assert pod["terminationGracePeriodSeconds"] > grace, (pod["terminationGracePeriodSeconds"],
                                                          grace)


def test_env_names_are_config_keys(objects, edgecache_bin):
    keys = help_config(edgecache_bin)
    names = []
    for sts in of_kind(objects, "StatefulSet"):
        for c in sts["spec"]["template"]["spec"]["containers"]:
            names += [n for n in env_entries(objects, c) if n.startswith("EDGECACHE_")]
    for cm in of_kind(objects, "ConfigMap"):
        names += [n for n in (cm.get("data") or {}) if n.startswith("EDGECACHE_")]
    assert "EDGECACHE_PEERS" in names
    unknown = sorted({n for n in names if key_of(n) not in keys})
    assert not unknown, ("not config keys of %s (--help-config): %r; the daemon refuses an "
                         "unknown EDGECACHE_* variable" % (edgecache_bin, unknown))


def test_token_node_id_and_settings_come_from_where_they_should(objects):
    sts = statefulset(objects)
    c = container(sts)
    env = env_entries(objects, c)
    src, ref = env["EDGECACHE_ADMIN_TOKEN"]
    assert src == "secret", env["EDGECACHE_ADMIN_TOKEN"]
    assert ref[0] == "edgecache-admin" or ref[0].startswith("edgecache-admin-"), ref
    assert ref[1] == "token"
    assert secret_value(objects, *ref), "the Secret's token is empty"
    assert "EDGECACHE_ADMIN_TOKEN_FILE" not in env
    assert env["EDGECACHE_NODE_ID"] == ("field", "metadata.name")
    plain = plain_env(objects, c)
    assert plain["EDGECACHE_ADMIN_LISTEN"] == "0.0.0.0:8081"   # reachable by probes: token
    assert "EDGECACHE_PARENT" in plain                        # the operator's to set
    allow = list_entries(plain["EDGECACHE_ALLOW"])
    routes = list_entries(plain["EDGECACHE_ROUTE"])
    assert "/debian/=http://deb.debian.org/debian/" in routes, routes
    assert "http://deb.debian.org" in allow, allow


def test_peers_name_the_headless_service_and_the_data_plane_port(objects):
    sts = statefulset(objects)
    c = container(sts)
    peers_svc = headless(objects)
    entries = list_entries(plain_env(objects, c)["EDGECACHE_PEERS"])
    assert len(entries) == 1, entries
    m = re.fullmatch(r"dns://([a-z0-9.-]+):(\d+)", entries[0])
    assert m, entries[0]
    host, port = m.group(1), int(m.group(2))
    labels = host.split(".")
    assert labels[0] == peers_svc["metadata"]["name"], host
    # the short name (resolved in the pod's namespace), or the full one
    if len(labels) > 1:
        ns = peers_svc["metadata"].get("namespace")
        assert len(labels) >= 3 and labels[2] == "svc", host
        assert ns is None or labels[1] == ns, (host, ns)
    assert port == container_port(c, "http")
    assert port in [p["port"] for p in peers_svc["spec"]["ports"]
                    if container_port(c, p.get("targetPort", p["port"])) == port]


# --------------------------------------------------------------------------
# The rendered environment, loaded and run by the binary

@pytest.fixture
def sandbox():
    d = tempfile.mkdtemp(prefix="edgecache-k8s-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def pod_env(objects, pod_name, cache_dir, port, admin_port):
    """The environment the kubelet gives pod_name's container, with the
    listeners on loopback ports and the cache in cache_dir."""
    sts = statefulset(objects)
    env = {}
    for name, (src, value) in env_entries(objects, container(sts)).items():
        if src == "value":
            env[name] = value
        elif src == "secret":
            env[name] = secret_value(objects, *value)
        elif src == "field":
            assert value == "metadata.name", (name, value)
            env[name] = pod_name
    env.update({"EDGECACHE_CACHE_DIR": cache_dir,
                "EDGECACHE_LISTEN": "127.0.0.1:%d" % port,
                "EDGECACHE_ADMIN_LISTEN": "127.0.0.1:%d" % admin_port})
    return env


def test_rendered_env_is_a_configuration_edgecache_accepts(objects, edgecache_bin, sandbox):
    """`edgecache health` loads the configuration as the daemon would and
    refuses one the daemon would refuse; otherwise it only fails to reach
    a control plane (a free loopback port)."""
    admin_port = harness.free_port()
    env = pod_env(objects, "edgecache-0", os.path.join(sandbox, "cache"),
                  harness.free_port(), admin_port)
    p = subprocess.run([edgecache_bin, "health"], capture_output=True, text=True,
                       env=harness.child_env(env), timeout=30, stdin=subprocess.DEVNULL)
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert "configuration" not in out, out
    assert "http://127.0.0.1:%d/healthz" % admin_port in out, out


def test_rendered_env_starts_a_peer_that_answers_healthz(objects, edgecache_bin, sandbox,
                                                          processes):
    """A pod's daemon, peers as rendered (in this sandbox the headless
    Service's name does not resolve, as in a pod whose Service records are
    not published yet): it must start, answer /healthz, take the Secret's
    token and the pod's name, and stop within the grace period."""
    cache = os.path.join(sandbox, "cache")
    os.mkdir(cache, 0o750)
    port, admin_port = harness.free_port(), harness.free_port()
    env = pod_env(objects, "edgecache-1", cache, port, admin_port)
    token = env["EDGECACHE_ADMIN_TOKEN"]
    log = os.path.join(sandbox, "edgecache.log")
    daemon = processes([edgecache_bin], log, harness.child_env(env))

    def ready():
        if not daemon.running():
            raise AssertionError("edgecache exited with %s before /healthz answered:\n%s"
                                 % (daemon.proc.returncode, harness.tail(log, 40)))
        try:
            return harness.request(admin_port, "GET", "/healthz", timeout=1).status == 200
        except OSError:
            return False
    harness.wait_for(ready, 30, what="/healthz on port %d" % admin_port)

    assert harness.request(admin_port, "GET", "/status").status == 401
    r = harness.request(admin_port, "GET", "/status",
                        headers={"Authorization": "Bearer " + token})
    assert r.status == 200, r
    assert json.loads(r.body)["node_id"] == "edgecache-1"
    # the data plane is up on the listener that stands for the http port
    assert harness.request(port, "GET", "/healthz-is-not-here").status in (400, 403, 404)

    grace = seconds(setting(objects, edgecache_bin, "shutdown_grace"))
    term = statefulset(objects)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(min(term, grace + 10)) == 0, harness.tail(log, 40)
