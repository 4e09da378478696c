"""The dashboard page (GET /, server/admin/dashboard.html) as a browser
shows it: Debian's headless Chromium loads it from a daemon with a token, a
live fill, a deployment being prefetched and an upstream that is down, and
the DOM after the page's scripts ran is checked section by section against
/status. Without the token the page asks for it.

$EDGECACHE_DASHBOARD_SCREENSHOT: where to copy the screenshot the test
takes (it is otherwise left in the test's temp dir, which goes away)."""

import html.parser
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import http.client

import pytest

import harness
from harness import do_target

TOKEN = "dash-token-7f3a"

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--disable-dev-shm-usage", "--mute-audio"]


# --------------------------------------------------------------------------
# Chromium and a small DOM

def chromium_bin():
    path = shutil.which("chromium")
    if not path:
        pytest.fail("chromium is missing (Debian package chromium, installed by "
                    "docker/install-deps.sh test)")
    return path


def chromium(workdir, url, budget_ms=3000, screenshot=None, timeout=90):
    """Runs headless Chromium on url for budget_ms of virtual time: the DOM
    after the page's scripts ran (--dump-dom), or a screenshot at the given
    path. Each run has its own profile directory, in its own session so
    that a hung browser is killed whole."""
    profile = tempfile.mkdtemp(prefix="chromium-", dir=workdir)
    argv = [chromium_bin()] + CHROMIUM_FLAGS + ["--user-data-dir=" + profile,
                                                "--virtual-time-budget=%d" % budget_ms]
    if screenshot:
        argv += ["--screenshot=" + screenshot, "--window-size=1200,1600", "--hide-scrollbars"]
    else:
        argv += ["--dump-dom"]
    argv.append(url)
    with open(os.path.join(profile, "stderr.log"), "wb") as err:
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                             start_new_session=True, env=harness.child_env())
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.communicate()
            raise AssertionError("chromium did not finish within %ss:\n%s"
                                 % (timeout, harness.tail(err.name, 30)))
    assert p.returncode == 0, "chromium exited %s:\n%s" % (p.returncode, harness.tail(err.name, 30))
    if screenshot:
        assert os.path.getsize(screenshot) > 0
        return None
    return parse_dom(out.decode("utf-8", "replace"))


class Node:
    def __init__(self, tag, attrs, parent):
        self.tag, self.attrs, self.parent = tag, dict(attrs), parent
        self.children = []

    def text(self):
        return re.sub(r"\s+", " ", "".join(c if isinstance(c, str) else c.text()
                                           for c in self.children)).strip()

    def walk(self):
        for c in self.children:
            if isinstance(c, Node):
                yield c
                yield from c.walk()

    def find_all(self, tag=None, **attrs):
        return [n for n in self.walk() if (tag is None or n.tag == tag)
                and all(n.attrs.get(k.rstrip("_")) == v for k, v in attrs.items())]

    def find(self, tag=None, **attrs):
        found = self.find_all(tag, **attrs)
        return found[0] if found else None

    def by_id(self, ident):
        node = self.find(id=ident)
        assert node is not None, "no element #%s in the page" % ident
        return node

    def hidden(self):
        return "hidden" in self.attrs


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


class _Builder(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = self.cur = Node("#document", {}, None)

    def handle_starttag(self, tag, attrs):
        node = Node(tag, attrs, self.cur)
        self.cur.children.append(node)
        if tag not in VOID:
            self.cur = node

    def handle_startendtag(self, tag, attrs):
        self.cur.children.append(Node(tag, attrs, self.cur))

    def handle_endtag(self, tag):
        n = self.cur
        while n is not None and n.tag != tag:
            n = n.parent
        if n is not None and n.parent is not None:
            self.cur = n.parent

    def handle_data(self, data):
        if self.cur.tag not in ("script", "style"):
            self.cur.children.append(data)


def parse_dom(text):
    b = _Builder()
    b.feed(text)
    b.close()
    return b.root


# --------------------------------------------------------------------------
# What the page computes, from /status

def deployment_percent(d):
    """A deployment's progress by bytes, as the page computes it."""
    got = total = 0
    for f in d["files"]:
        if f["total"] is not None:
            total += f["total"]
            got += min(f["bytes"], f["total"])
        elif f["state"] == "done":
            total += f["bytes"]
            got += f["bytes"]
    if total:
        return 100.0 * got / total
    return 100.0 if d["files_total"] and d["files_done"] == d["files_total"] else 0.0


def pct_text(p):
    return ("%.0f" % p if p >= 10 or p == 0 else "%.1f" % p) + "%"


class SlowDownload:
    """A client reading a throttled object in a thread, on a connection the
    test can cut."""

    def __init__(self, ec, target):
        self.conn = http.client.HTTPConnection("127.0.0.1", ec.port, timeout=120)
        self.result = None
        self.thread = threading.Thread(target=self._run, args=(target,), daemon=True)
        self.thread.start()

    def _run(self, target):
        try:
            self.result = harness.request(None, "GET", target, keep_body=False, conn=self.conn)
        except OSError as e:
            self.result = e

    def close(self):
        try:
            if self.conn.sock:
                self.conn.sock.shutdown(2)
        except OSError:
            pass
        self.thread.join(10)
        self.conn.close()


# --------------------------------------------------------------------------

def test_the_dashboard_page_is_served_and_reads_status(edgecache):
    ec = edgecache()
    r = harness.request(ec.admin_port, "GET", "/")
    assert r.status == 200, r
    assert r.headers["Content-Type"].startswith("text/html")
    page = r.body.decode()
    assert "<title>edgecache</title>" in page and 'fetch("/status"' in page
    for section in ("Upstreams", "Fills in flight", "Deployments", "Bandwidth"):
        assert section in page
    # nothing from outside: the gateway may have no internet
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "an external asset"


def test_status_keeps_an_hour_of_byte_counters(origin, edgecache):
    ec = edgecache(allow=[origin.base])
    h = ec.status()["history"]
    assert h["interval_s"] == 10
    assert len(h["samples"]) == 1       # the control plane's start takes the first sample
    first = h["samples"][0]
    assert set(first) == {"t", "cache", "fill", "upstream"}
    assert first["cache"] == first["fill"] == first["upstream"] == 0
    assert ec.get(do_target("/obj/h?size=1000", origin.host)).status == 200
    s = ec.status()
    # totals, sampled every 10 s: the later bytes are not in the first sample yet
    assert s["history"]["samples"] == [first]
    assert s["counters"]["upstream_bytes"] == 1000
    assert abs(s["now"] - first["t"]) <= 2


def test_the_dashboard_shows_fills_deployments_bandwidth_and_a_down_upstream(
        origin, edgecache, workdir):
    dead = harness.free_port()
    dead_base = "http://127.0.0.1:%d" % dead
    ec = edgecache(allow=[origin.base, dead_base], args=["--admin-token", TOKEN])

    # one miss, one hit
    small = do_target("/obj/small?size=200000", origin.host)
    assert ec.get(small).status == 200
    ec.wait_idle()
    assert ec.get(small).cache_status == "edgecache; hit"
    # an upstream that refuses connections
    assert ec.get(do_target("/obj/gone?size=10", "127.0.0.1:%d" % dead), timeout=15).status == 502
    # a deployment: a small file and two slow ones
    dep_urls = [origin.url("/obj/dep-a?size=50000"),
                origin.url("/obj/dep-b?size=3000000&rate=60000"),
                origin.url("/obj/dep-c?size=2000000&rate=40000")]
    r = ec.admin("POST", "/api/v1/prefetch", dep_urls, token=TOKEN)
    assert r.status == 202, r.body
    # a live fill: a device downloading a slow object
    live_path = "/obj/live?size=4000000&rate=80000"
    live = SlowDownload(ec, do_target(live_path, origin.host))
    try:
        def ready():
            s = ec.status()
            fills = [f for f in s["fills"] if "/obj/live" in f["url"]]
            d = s["deployments"][0] if s["deployments"] else None
            return (fills and fills[0]["bytes"] > 0 and d and 0 < deployment_percent(d) < 100
                    and any(f["state"] == "done" for f in d["files"]) and s)
        harness.wait_for(ready, 20, interval=0.2, what="a live fill and a deployment under way")

        base = "http://127.0.0.1:%d/" % ec.admin_port
        before = ec.status()
        dom = chromium(workdir, base + "#token=" + TOKEN)
        after = ec.status()
        shot = os.path.join(workdir, "dashboard.png")
        chromium(workdir, base + "#token=" + TOKEN, screenshot=shot)
        if os.environ.get("EDGECACHE_DASHBOARD_SCREENSHOT"):
            shutil.copyfile(shot, os.environ["EDGECACHE_DASHBOARD_SCREENSHOT"])
    finally:
        live.close()

    assert dom.by_id("auth").hidden(), "the token prompt is shown although the token was given"
    assert not dom.by_id("main").hidden()
    assert "loading" not in dom.by_id("sub").text()

    # hit ratio: one hit of two data requests that were answered (the 502 is an error)
    c = after["counters"]
    served = c["req_hit"] + c["req_miss"] + c["req_collapsed"]
    assert c["req_hit"] == before["counters"]["req_hit"] == 1
    card = dom.by_id("card-hit-ratio")
    assert card.find("dt").text() == "hit ratio"
    assert card.find("dd").text() == pct_text(100.0 * c["req_hit"] / served)

    # human uptime
    sub = dom.by_id("sub").text()
    m = re.search(r"\bup (\d+) s\b", sub)
    assert m, sub
    assert before["uptime_s"] <= int(m.group(1)) <= after["uptime_s"]
    assert after["node_id"] in dom.by_id("node").text()

    # the live fill, with its progress
    rows = [tr for tr in dom.by_id("fills").find_all("tr") if "/obj/live" in tr.text()]
    assert len(rows) == 1, dom.by_id("fills").text()
    bar = rows[0].find("progress")
    assert bar is not None and bar.attrs.get("max") == "100"
    live_pct = float(bar.attrs["value"])
    total = 4000000
    fb = [f for f in before["fills"] if "/obj/live" in f["url"]][0]
    fa = [f for f in after["fills"] if "/obj/live" in f["url"]][0]
    assert fb["total"] == total
    assert 100.0 * fb["bytes"] / total - 0.1 <= live_pct <= 100.0 * fa["bytes"] / total + 0.1
    assert 0 < live_pct < 100
    assert rows[0].find_all("td")[1].text() in (fb["state"], fa["state"])
    assert rows[0].find_all("td")[-1].text() == "1"         # its reader

    # the deployment, by bytes
    deps = dom.find_all("article", **{"class": "panel deployment"})
    assert len(deps) == 1, dom.by_id("deployments").text()
    dep = deps[0]
    dep_id = before["deployments"][0]["id"]
    assert dep.attrs["data-id"] == dep_id and dep_id in dep.find("h3").text()
    shown = float(dep.attrs["data-percent"])
    lo = deployment_percent(before["deployments"][0])
    hi = deployment_percent(after["deployments"][0])
    assert 0 < shown < 100, shown
    assert lo - 0.01 <= shown <= hi + 0.01, (lo, shown, hi)
    dep_bar = dep.find("progress")
    assert abs(float(dep_bar.attrs["value"]) - shown) <= 0.06
    assert "by bytes" in dep_bar.attrs.get("aria-label", "")
    assert re.search(r"\b1 done, 0 failed, of 3 files\b", dep.text()), dep.text()
    # each file with its state
    file_rows = dep.find("tbody").find_all("tr")
    assert len(file_rows) == 3
    states = {tr.find("td").text(): tr.find_all("td")[1].text() for tr in file_rows}
    names = {f["name"]: f["url"] for f in after["deployments"][0]["files"]}
    assert {names[k] for k in states} == set(dep_urls), states
    by_url = {names[k]: v for k, v in states.items()}
    assert by_url[dep_urls[0]] == "done", states
    assert by_url[dep_urls[1]] in ("queued", "fetching") and by_url[dep_urls[2]] in ("queued", "fetching")

    # bandwidth: the figure and the chart
    fig = dom.by_id("bw-figure").text()
    m = re.search(r"(\d+(?:\.\d)?)% of the bytes sent came from the cache", fig)
    assert m, fig
    sent_b = before["counters"]["bytes_sent_cache"] + before["counters"]["bytes_sent_fill"]
    sent_a = c["bytes_sent_cache"] + c["bytes_sent_fill"]
    cache_bytes = c["bytes_sent_cache"]
    assert cache_bytes == 200000
    assert 100.0 * cache_bytes / sent_a - 1 <= float(m.group(1)) <= 100.0 * cache_bytes / sent_b + 1
    assert "saved upstream" in fig
    assert "fetched upstream" in dom.by_id("bw-detail").text()
    svg = dom.by_id("chart")
    assert svg.tag == "svg" and svg.attrs.get("role") == "img"
    assert svg.attrs.get("aria-labelledby") == "chart-title chart-desc"
    assert dom.by_id("chart-title").text()
    assert re.search(r"sent to clients, .* fetched upstream", dom.by_id("chart-desc").text())
    body = dom.by_id("chart-body")
    assert body.find("rect", fill="var(--cache)") is not None, "no bar for the bytes sent from the cache"
    assert body.find("polyline") is not None, "no line for the bytes fetched upstream"

    # the upstream that is down: its reason and since when
    ups = {tr.find("td").text(): tr for tr in dom.by_id("upstreams").find("tbody").find_all("tr")}
    assert dead_base in ups, list(ups)
    status_dead = [u for u in after["upstreams"] if u["target"] == dead_base][0]
    assert status_dead["up"] is False and status_dead["error"]
    cells = [td.text() for td in ups[dead_base].find_all("td")]
    assert cells[1] == "down"
    assert re.search(r"\(\d+ s ago\)", cells[2]), cells
    assert cells[3] == status_dead["error"]
    assert ups[origin.base].find_all("td")[1].text() == "up"

    # the screenshot
    with open(shot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_without_the_token_the_page_asks_for_it(edgecache, workdir):
    ec = edgecache(args=["--admin-token", TOKEN])
    base = "http://127.0.0.1:%d/" % ec.admin_port
    for url, refused in ((base, False), (base + "#token=wrong", True)):
        dom = chromium(workdir, url, budget_ms=1500)
        form = dom.by_id("auth")
        assert form.tag == "form" and not form.hidden(), url
        field = form.find("input", type="password")
        assert field is not None and field.attrs.get("id") == "token"
        label = form.find("label")
        assert label is not None and label.attrs.get("for") == "token"
        assert dom.by_id("main").hidden()
        assert "loading" not in dom.by_id("sub").text()
        msg = dom.by_id("auth-msg").text()
        assert ("refused" in msg) == refused, msg
    # and with the right one, the page shows the daemon, not the prompt
    dom = chromium(workdir, base + "#token=" + TOKEN, budget_ms=1500)
    assert dom.by_id("auth").hidden() and not dom.by_id("main").hidden()


def test_uptime_and_ages_read_as_a_person_says_them(edgecache, workdir):
    """The page's own human() on a few durations (taken from the served page
    and run in Chromium)."""
    ec = edgecache()
    page = harness.request(ec.admin_port, "GET", "/").body.decode()
    m = re.search(r"^function human\(s\) \{.*?^\}$", page, re.S | re.M)
    assert m, "no function human in the page"
    cases = {45: "45 s", 12 * 60 + 5: "12 min", 3 * 3600 + 5 * 60: "3 h 5 min",
             3 * 86400 + 4 * 3600 + 59: "3 d 4 h"}
    probe = os.path.join(workdir, "human.html")
    with open(probe, "w") as f:
        f.write("<!doctype html><body><pre id=out></pre><script>%s\n"
                "document.getElementById('out').textContent = JSON.stringify(%s.map(human));"
                "</script>" % (m.group(0), sorted(cases)))
    dom = chromium(workdir, "file://" + probe, budget_ms=500)
    assert json.loads(dom.by_id("out").text()) == [cases[k] for k in sorted(cases)]
