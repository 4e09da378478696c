"""A layer of three edgecache peers (config key: peers) acting as one cache:
each key has one owner (rendezvous hashing), which alone fills and stores
it; the others ask it. The peers listen on three loopback addresses
(127.0.0.2, .3, .4) with the same ports, as three hosts of one layer
would; the origin is on 127.0.0.1."""

import json
import os
import random
import threading
import time

import pytest

import harness
from harness import do_target, free_port, wait_for
from origin import object_sha256

HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]


def peer_score(peer_id, key):
    """cache/peers.c's rendezvous score (FNV-1a 64 over id, 0xff, key; then
    a 64-bit finaliser), to know each key's owner from outside."""
    m = (1 << 64) - 1
    h = 1469598103934665603
    for b in peer_id.encode():
        h = ((h ^ b) * 1099511628211) & m
    h = ((h ^ 0xff) * 1099511628211) & m
    for b in key.encode():
        h = ((h ^ b) * 1099511628211) & m
    h ^= h >> 33
    h = (h * 0xff51afd7ed558ccd) & m
    h ^= h >> 33
    h = (h * 0xc4ceb9fe1a85ec53) & m
    h ^= h >> 33
    return h


class Layer:
    def __init__(self, edgecache, origin, args=()):
        self.port, self.admin_port = free_port(), free_port()
        self.peers = ",".join("http://%s:%d" % (h, self.port) for h in HOSTS)
        self.nodes = []
        for h in HOSTS:
            ec = edgecache(allow=[origin.base], start=False,
                           args=("--peers", self.peers, "--node-id", "peer-" + h) + tuple(args))
            ec.host, ec.port, ec.admin_port = h, self.port, self.admin_port
            self.nodes.append(ec)
        for ec in self.nodes:
            ec.start()

    def owner_index(self, key, alive=None):
        ranked = sorted(range(len(HOSTS)), reverse=True,
                        key=lambda i: peer_score("%s:%d" % (HOSTS[i], self.port), key))
        for i in ranked:
            if alive is None or alive[i]:
                return i
        return None


def stored_on(layer, sha):
    return [i for i, ec in enumerate(layer.nodes) if os.path.exists(ec.blob_path(sha))]


@pytest.fixture
def layer(request, edgecache, origin):
    try:
        harness.request(free_port(), "GET", "/", timeout=0.5, host=HOSTS[1])
    except ConnectionRefusedError:
        pass
    except OSError as e:
        pytest.skip("no loopback address %s here (%s)" % (HOSTS[1], e))
    return Layer(edgecache, origin)


def test_each_object_crosses_once_and_is_stored_on_its_owner(layer, origin):
    rnd = random.Random(7)
    objects = []
    for i in range(30):
        path = "/obj/layer%02d?size=%d" % (i, 20000 + 997 * i)
        objects.append((path, object_sha256("layer%02d" % i, "0", 20000 + 997 * i)))
    for rounds in range(3):
        for path, sha in objects:
            ec = rnd.choice(layer.nodes)
            r = ec.get(do_target(path, origin.host))
            assert r.status == 200 and r.sha256 == sha, (path, ec.host, r.status)
    for ec in layer.nodes:
        ec.wait_idle()
    for path, sha in objects:
        assert origin.count(path) == 1, (path, origin.count(path))
        key = origin.url(path)
        where = stored_on(layer, sha)
        assert where == [layer.owner_index(key)], (path, where, layer.owner_index(key))
    st = [ec.status() for ec in layer.nodes]
    assert sum(s["objects"] for s in st) == 30
    peers = st[0]["peers"]
    assert len(peers) == 3 and sum(p["self"] for p in peers) == 1
    assert all(p["state"] in ("up", "self") for p in peers), peers
    assert abs(sum(p["share"] for p in peers) - 1.0) < 1e-6


def test_a_dead_peer_is_routed_around_and_rejoins(layer, origin):
    objects = [("/obj/dead%02d?size=30000" % i, object_sha256("dead%02d" % i, "0", 30000))
               for i in range(24)]
    for path, sha in objects:
        r = layer.nodes[0].get(do_target(path, origin.host))
        assert r.status == 200 and r.sha256 == sha
    for ec in layer.nodes:
        ec.wait_idle()
    victim = 2
    theirs = [(p, s) for p, s in objects if layer.owner_index(origin.url(p)) == victim]
    assert theirs, "no key owned by the victim (rendezvous spread)"
    layer.nodes[victim].kill()
    alive = [True, True, False]
    t0 = time.monotonic()
    for path, sha in theirs:
        for ec in layer.nodes[:2]:
            r = ec.get(do_target(path, origin.host))
            assert r.status == 200 and r.sha256 == sha, (path, ec.host, r.status)
    # nothing waited on the dead peer much longer than connect_timeout
    assert time.monotonic() - t0 < 10 + 5 * len(theirs)
    for path, _ in theirs:
        assert origin.count(path) == 2, (path, origin.count(path))     # one refetch each
    for path, _ in objects:
        if layer.owner_index(origin.url(path)) != victim:
            assert origin.count(path) == 1, path
    st = layer.nodes[0].status()
    down = [p for p in st["peers"] if p["state"] == "down"]
    assert [p["peer"] for p in down] == ["%s:%d" % (HOSTS[victim], layer.port)], st["peers"]
    assert down[0]["share"] == 0

    # back: it serves what it still holds, without the origin. Asked of the
    # node that holds no copy from the outage (the next-ranked one filled
    # and kept one), the key goes to the restarted owner again.
    before = {p: origin.count(p) for p, _ in theirs}
    layer.nodes[victim].start()
    path0, sha0 = theirs[0]
    holder = layer.owner_index(origin.url(path0), alive=alive)
    asker = layer.nodes[1 - holder]

    def served_by_victim():
        n0 = layer.nodes[victim].status()["workers"]
        r = asker.get(do_target(path0, origin.host))
        assert r.status == 200 and r.sha256 == sha0
        n1 = layer.nodes[victim].status()["workers"]
        return sum(w["requests"] for w in n1) > sum(w["requests"] for w in n0)
    wait_for(served_by_victim, timeout=40, interval=0.5, what="the restarted peer to be asked")
    for path, sha in theirs:
        r = layer.nodes[1].get(do_target(path, origin.host))
        assert r.status == 200 and r.sha256 == sha
    assert {p: origin.count(p) for p, _ in theirs} == before
    wait_for(lambda: all(p["state"] != "down" for p in layer.nodes[1].status()["peers"]),
             timeout=40, interval=0.5, what="every peer up again")


def test_hundred_clients_on_three_nodes_one_origin_transfer(layer, origin):
    size = 6 << 20
    path = "/obj/layerbig?size=%d&rate=%d" % (size, 3 << 20)
    sha = object_sha256("layerbig", "0", size)
    results, errors = [None] * 100, []
    barrier = threading.Barrier(100)

    def client(i):
        try:
            barrier.wait(10)
            ec = layer.nodes[i % 3]
            results[i] = ec.get(do_target(path, origin.host), keep_body=False, timeout=60)
        except Exception as e:  # reported below
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert errors == []
    for i, r in enumerate(results):
        assert r.status == 200 and r.complete and r.sha256 == sha, (i, r)
    assert len(origin.finished_requests("/obj/layerbig")) == 1
    for ec in layer.nodes:
        ec.wait_idle()
    assert stored_on(layer, sha) == [layer.owner_index(origin.url(path))]


def test_a_prefetch_on_one_node_pins_the_files_on_their_owners(layer, origin):
    files = [("/obj/pf%02d?size=12000" % i, object_sha256("pf%02d" % i, "0", 12000))
             for i in range(9)]
    urls = [origin.url(p) for p, _ in files]
    r = layer.nodes[0].admin("POST", "/api/v1/prefetch", urls)
    assert r.status == 202, r

    def pinned_everywhere():
        for path, sha in files:
            owner = layer.nodes[layer.owner_index(origin.url(path))]
            listed = json.loads(owner.admin("GET", "/api/v1/objects").body)["objects"]
            objs = {o["sha256"]: o for o in listed}
            if sha not in objs or objs[sha]["pinned"] == 0:
                return False
        return True
    wait_for(pinned_everywhere, timeout=30, interval=0.3, what="the files pinned on their owners")
    for ec in layer.nodes:
        ec.wait_idle()
    for path, sha in files:
        assert origin.count(path) == 1, path
        assert stored_on(layer, sha) == [layer.owner_index(origin.url(path))], path
    # every node lists the deployment (the control plane is the layer's)
    for ec in layer.nodes:
        assert len(ec.status()["deployments"]) == 1, ec.host


def test_a_forwarded_request_is_not_forwarded_again(layer, origin):
    """The loop guard: a request carrying Edgecache-Peer is filled by the
    node that got it, whoever owns the key."""
    path = "/obj/guard?size=5000"
    key = origin.url(path)
    non_owner = layer.nodes[(layer.owner_index(key) + 1) % 3]
    r = non_owner.get(do_target(path, origin.host), headers={"Edgecache-Peer": "1"})
    assert r.status == 200 and r.sha256 == object_sha256("guard", "0", 5000)
    assert origin.count(path) == 1
    non_owner.wait_idle()
    # the origin's request did not carry the layer's field
    for i in range(len(origin.requests(path.split("?")[0]))):
        assert "edgecache-peer" not in origin.headers_of(path.split("?")[0], i)


# --------------------------------------------------------------------------
# Discovery by SRV records: a small DNS server on a loopback address answers
# for the layer's name, and each peer runs in a mount namespace of its own
# whose /etc/resolv.conf names that server (root only).

SRV_NAME = "_edgecache._tcp.layer.test"
DNS_ADDR = "127.0.0.77"


def dns_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


class TinyDNS(threading.Thread):
    """Answers SRV for SRV_NAME (one record per peer) and A for each
    target; anything else: no records."""

    def __init__(self, port):
        super().__init__(daemon=True)
        import socket
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((DNS_ADDR, 53))
        self.sock.settimeout(0.2)
        self.port = port
        self.stopping = False
        self.queries = 0

    def answer(self, q):
        import struct
        qid, _, qd = struct.unpack(">HHH", q[:6])
        pos, labels = 12, []
        while q[pos]:
            labels.append(q[pos + 1:pos + 1 + q[pos]].decode().lower())
            pos += 1 + q[pos]
        qtype = struct.unpack(">H", q[pos + 1:pos + 3])[0]
        question = q[12:pos + 5]
        name = ".".join(labels)
        records = []
        if qtype == 33 and name == SRV_NAME:
            for i, h in enumerate(HOSTS):
                rdata = struct.pack(">HHH", 0, 10, self.port) + dns_name("peer%d.layer.test" % i)
                records.append((33, rdata))
        elif qtype == 1 and name.startswith("peer") and name.endswith(".layer.test"):
            i = int(name[4:name.index(".")])
            records.append((1, bytes(int(x) for x in HOSTS[i].split("."))))
        head = struct.pack(">HHHHHH", qid, 0x8180, 1, len(records), 0, 0)
        body = b"".join(struct.pack(">HHHIH", 0xc00c, t, 1, 5, len(r)) + r for t, r in records)
        return head + question + body

    def run(self):
        while not self.stopping:
            try:
                q, addr = self.sock.recvfrom(2048)
            except OSError:
                continue
            self.queries += 1
            try:
                self.sock.sendto(self.answer(q), addr)
            except Exception:  # a query it cannot read: no answer
                pass

    def close(self):
        self.stopping = True
        self.join(2)
        self.sock.close()


def test_peers_found_by_srv_records(request, edgecache, origin, workdir):
    if os.geteuid() != 0:
        pytest.skip("needs root: a mount namespace with its own /etc/resolv.conf")
    port, admin_port = free_port(), free_port()
    try:
        dns = TinyDNS(port)
    except OSError as e:
        pytest.skip("cannot serve DNS on %s:53 here (%s)" % (DNS_ADDR, e))
    dns.start()
    request.addfinalizer(dns.close)
    resolv = os.path.join(workdir, "resolv.conf")
    with open(resolv, "w") as f:
        f.write("nameserver %s\noptions timeout:1 attempts:1\n" % DNS_ADDR)
    real = os.environ.get("EDGECACHE_BIN", "build/edgecache")
    wrapper = os.path.join(workdir, "edgecache-ns")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\n# edgecache in a mount namespace whose resolv.conf is the test's\n"
                "exec unshare -m --propagation private sh -c "
                "'mount --bind \"$0\" /etc/resolv.conf && exec \"$@\"' %s %s \"$@\"\n"
                % (resolv, os.path.abspath(real)))
    os.chmod(wrapper, 0o755)
    nodes = []
    for h in HOSTS:
        ec = edgecache(allow=[origin.base], start=False,
                       args=("--peers", "dns+srv://" + SRV_NAME, "--node-id", "srv-" + h))
        ec.binary = wrapper
        ec.host, ec.port, ec.admin_port = h, port, admin_port
        nodes.append(ec)
    for ec in nodes:
        ec.start()

    def everyone_sees_three():
        return all(len(ec.status()["peers"]) == 3 and
                   sum(p["self"] for p in ec.status()["peers"]) == 1 for ec in nodes)
    wait_for(everyone_sees_three, timeout=20, interval=0.2, what="the SRV records resolved")
    assert dns.queries > 0
    layer = Layer.__new__(Layer)
    layer.port, layer.nodes = port, nodes
    for i in range(9):
        path = "/obj/srv%d?size=7000" % i
        sha = object_sha256("srv%d" % i, "0", 7000)
        for ec in nodes:
            r = ec.get(do_target(path, origin.host))
            assert r.status == 200 and r.sha256 == sha
        for ec in nodes:
            ec.wait_idle()
        assert origin.count(path) == 1, path
        assert stored_on(layer, sha) == [layer.owner_index(origin.url(path))], path
