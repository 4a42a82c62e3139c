"""The node's web page in a real browser (headless Chromium): what it shows of a two-node mesh,
a restore from it that syncs, and who may not read or drive it."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from tests.integration.browser import Browser
from tests.integration.lan import Host, holds_for, wait_for
from tests.integration.test_conflicts import BASE, edit
from tests.integration.test_sync import mesh

ARTEFACTS = Path(__file__).resolve().parents[2] / ".artefacts"


def page_url(host: Host) -> str:
    url = str(host.json("open")["url"])
    assert re.fullmatch(r"http://127\.0\.0\.1:22380/#token=[A-Za-z0-9_-]{43}", url), url
    return url


def test_the_page_shows_peers_conflicts_and_versions_and_restores_a_file_that_syncs(
        make_lan, tmp_path):
    lan = mesh(make_lan, 2)
    h1, h2 = lan.hosts
    # A version kept on h1: h2's edit replaces what h1 had.
    edit(h1, "doc.txt", b"first draft\n", BASE)
    wait_for("doc.txt at h2", lambda: (h2.sync / "doc.txt").is_file(), 10)
    edit(h2, "doc.txt", b"second draft\n", BASE + 10)
    wait_for("h2's edit at h1", lambda: (h1.sync / "doc.txt").read_bytes() == b"second draft\n",
             10)
    # A conflict: both edit one file apart; h2's is newer, so h1 keeps its own as a copy.
    lan.cut(h2)
    wait_for("h1 to see h2 down", lambda: h1.peer_states().get("h2") == "down", 10)
    edit(h1, "both.txt", b"h1's\n", BASE)
    edit(h2, "both.txt", b"h2's, later\n", BASE + 20)
    lan.heal(h2)
    wait_for("the conflict copy at h1", lambda: h1.json("conflicts"), 20)

    browser = Browser(h1.ns, tmp_path / "profile", h1.env)
    try:
        browser.go(page_url(h1))
        wait_for("the page to show h2 online", lambda: "h2" in browser.text(
            '#peers tr[data-peer="h2"]') and "online" in browser.text('#peers tr[data-peer="h2"]'),
            15)
        assert browser.js("location.hash") == "", "the token leaves the address bar"
        assert "this node" in browser.text('#peers tr[data-peer="h1"]')
        wait_for("the conflict on the page", lambda: "both.sync-conflict-" in browser.text(
            "#conflicts tbody"), 10)
        assert "h1" in browser.text("#conflicts tbody")
        assert "in sync" in browser.text('.folder[data-folder="Sync"]')
        assert "h2 (" in browser.text('.folder[data-folder="Sync"]'), "each member's completion"
        wait_for("doc.txt's kept version", lambda: browser.js(
            'document.querySelector(\'button.restore[data-path="doc.txt"]\') !== null'), 20)
        wait_for("changes told", lambda: "doc.txt" in browser.text("#changes"), 10)

        browser.js('document.querySelector(\'button.restore[data-path="doc.txt"]\').click()')
        wait_for("the restore on h1", lambda: (h1.sync / "doc.txt").read_bytes()
                 == b"first draft\n", 10)
        wait_for("the restore synced to h2", lambda: (h2.sync / "doc.txt").read_bytes()
                 == b"first draft\n", 10)
        wait_for("the page to say so", lambda: browser.text("#done").startswith(
            "restored doc.txt as kept at "), 10)
        assert browser.text("#problem") == ""

        # The rate plot: a 4 MiB file received lifts h1's line to the top of its scale.
        (h2.sync / "big.bin").write_bytes(os.urandom(4 << 20))
        wait_for("big.bin at h1", lambda: (h1.sync / "big.bin").is_file()
                 and (h1.sync / "big.bin").stat().st_size == 4 << 20, 20)
        wait_for("the plot to show a rate over 1 KiB/s", lambda: "■ Sync" in browser.text(
            "#legend") and "the top is 1.0 KiB/s" not in browser.text("#legend"), 10)
        assert browser.js(DRAWN_ABOVE_HALF) > 0, "the received line is drawn, near the top"
        browser.screenshot(ARTEFACTS / "page.png")

        # A receive-only folder's change made here, reverted from the page.
        h1.cli("set", "Sync", "--receive-only")
        (h1.sync / "mine.txt").write_text("made at h1, not sent")
        wait_for("the revert button", lambda: browser.js(
            'document.querySelector(\'button.revert[data-folder="Sync"]\') !== null'), 15)
        assert "mine.txt: added here, not sent" in browser.text('.folder[data-folder="Sync"]')
        browser.js('document.querySelector(\'button.revert[data-folder="Sync"]\').click()')
        wait_for("mine.txt gone from h1", lambda: not (h1.sync / "mine.txt").exists(), 10)
        # The file goes before the answer reaches the page: the line follows it.
        wait_for("the page to say so", lambda: browser.text("#done") == (
            "folder Sync: the mesh's versions of 1 path are being put back"), 10)
        assert not (h2.sync / "mine.txt").exists()
    finally:
        browser.close()
    assert (ARTEFACTS / "page.png").stat().st_size > 10_000


# How many pixels of the rate plot's upper half are drawn.
DRAWN_ABOVE_HALF = """(() => {
  const c = document.getElementById("rate");
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height / 2).data;
  let n = 0;
  for (let i = 3; i < d.length; i += 4) if (d[i]) n += 1;
  return n;
})()"""


def curl(host: Host, *args: str) -> tuple[int, str]:
    out = host.exec("curl", "-sS", "--max-time", "10", "-w", "\n%{http_code}", *args,
                    check=False).stdout
    body, _, status = out.rpartition("\n")
    return int(status), body


def test_the_page_answers_only_its_own_origin_with_the_token_and_only_on_loopback(make_lan):
    lan = make_lan(1)
    [h1] = lan.hosts
    h1.start()
    url = page_url(h1)
    token = url.rpartition("=")[2]
    base = "http://127.0.0.1:22380"
    status, page = curl(h1, f"{base}/")
    assert status == 200
    assert "<title>meshsync</title>" in page
    assert token not in page, "the page itself holds nothing"
    headers = h1.exec("curl", "-sSI", f"{base}/", check=False).stdout.lower()
    assert "content-security-policy: default-src 'self'; frame-ancestors 'none'" in headers
    assert "x-frame-options: deny" in headers

    def error(status: int, body: str) -> tuple[int, str]:
        return status, json.loads(body)["error"]

    assert error(*curl(h1, f"{base}/v1/status")) == (
        401, "no valid token: open the page with `meshsync open`")
    assert error(*curl(h1, "-H", "X-Meshsync-Token: wrong", f"{base}/v1/status"))[0] == 401
    status, body = curl(h1, "-H", f"X-Meshsync-Token: {token}", f"{base}/v1/status")
    assert status == 200
    assert json.loads(body)["id"] == str(h1.id)
    # Another site's script, even one whose name points at 127.0.0.1 (DNS rebinding).
    assert error(*curl(h1, "-H", "Host: evil.example:22380", "-H", f"X-Meshsync-Token: {token}",
                       f"{base}/v1/status")) == (
        403, "not a host this page answers for: 'evil.example:22380'")
    # A change with the token, but not from the page's own origin: refused, nothing done.
    for origin in ([], ["-H", "Origin: http://evil.example"]):
        assert error(*curl(h1, "-H", f"X-Meshsync-Token: {token}", *origin, "-X", "POST",
                           f"{base}/v1/stop")) == (403, "a change must come from the page itself")
    holds_for("the node to keep running", h1.is_running, 1)
    # The event stream takes the token in its query (an EventSource sends no headers).
    status, _ = curl(h1, "-N", "--max-time", "1", f"{base}/v1/events?token={token}")
    assert status == 200
    assert error(*curl(h1, f"{base}/v1/events?token=wrong"))[0] == 401
    # Not on the LAN's address, only on loopback.
    status, _ = curl(h1, f"http://{h1.ip}:22380/")
    assert status == 0
