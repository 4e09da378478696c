"""Defects that crashed the daemon, hung it or sent memory it should not
have, each with the scenario that showed it. Every daemon is stopped with
SIGTERM by the fixture, which fails the test on a non-zero exit or on any
sanitizer report in its log (the suite also runs under ASan + UBSan)."""

import harness


def test_a_long_url_relayed_to_a_dead_origin_gets_a_short_clean_answer(edgecache):
    """The relay's error answer once used snprintf's return value as the
    length of a 600-byte buffer: a URL of a few KiB sent stack memory."""
    dead = harness.free_port()
    ec = edgecache(allow=["http://127.0.0.1:%d" % dead],
                   args=["--route", "/d/=http://127.0.0.1:%d/" % dead])
    long_path = "/d/" + "a" * 4096
    for method in ("PUT", "POST", "DELETE"):
        r = ec.request(method, long_path, body=b"abc")
        assert r.status == 502, r
        assert r.complete, r
        text = r.body.decode("utf-8")             # valid text, nothing else
        assert text.startswith("upstream for http://127.0.0.1:%d/aaa" % dead), text[:80]
        assert text.endswith("\n") and text.count("\n") == 1, repr(text[-80:])
        assert "\0" not in text
        assert len(r.body) <= 1024, len(r.body)
    assert ec.running()
