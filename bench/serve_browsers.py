"""`tapedeck serve` with real pages: N headless Chromium browsers on the live page (issue 21).

Like serve_bench.py, but the clients are the page itself in Debian's Chromium, driven over
WebDriver (chromedriver): N browsers (one session each; tabs of one browser would share its six
connections per server), each on the page's default view. Reports the server's CPU as a share of
one core without pages and with them, and per page how far `window.tapedeck.lastSeq` got, its
live messages and its gap count.

Usage (standard library only; needs /usr/bin/chromium and /usr/bin/chromedriver):
    python3 bench/serve_browsers.py --tapedeck target/release/tapedeck [--browsers 10] [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.request

from serve_bench import cpu_seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wd(base: str, method: str, path: str, body: object | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        result: dict = json.loads(r.read())
        return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tapedeck", default="target/release/tapedeck")
    p.add_argument("--browsers", type=int, default=10)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--source", default="sim:daq?channels=8&rate=100000&pace=real")
    a = p.parse_args()

    work = tempfile.mkdtemp(prefix="serve-browsers-")
    tape = os.path.join(work, "tape")
    rec = subprocess.Popen(
        [a.tapedeck, "record", "--source", a.source, "--tape", tape, "--duration",
         f"{int(a.seconds * 2 + 90)}s", "--progress", "never", "--quiet"], stdout=subprocess.DEVNULL)
    while not os.path.exists(os.path.join(tape, "ACKED")):
        time.sleep(0.1)
    srv = subprocess.Popen([a.tapedeck, "serve", tape, "--listen", "127.0.0.1:0"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert srv.stdout is not None
    url = srv.stdout.readline().strip()
    dport = free_port()
    driver = subprocess.Popen(["/usr/bin/chromedriver", f"--port={dport}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root = f"http://127.0.0.1:{dport}"
    for _ in range(100):
        try:
            wd(root, "GET", "/status")
            break
        except OSError:
            time.sleep(0.1)
    caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
        "binary": "/usr/bin/chromium",
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,1000"]}}}}
    bases = []
    try:
        c0, t0 = cpu_seconds(srv.pid), time.monotonic()
        time.sleep(a.seconds / 2)
        idle = (cpu_seconds(srv.pid) - c0) / (time.monotonic() - t0)
        for _ in range(a.browsers):
            sid = wd(root, "POST", "/session", caps)["value"]["sessionId"]
            bases.append(f"{root}/session/{sid}")
            wd(bases[-1], "POST", "/url", {"url": url})
        time.sleep(5)
        c1, t1 = cpu_seconds(srv.pid), time.monotonic()
        time.sleep(a.seconds)
        dt = time.monotonic() - t1
        busy = (cpu_seconds(srv.pid) - c1) / dt
        tabs = []
        for base in bases:
            v = wd(base, "POST", "/execute/sync", {
                "script": "return [window.tapedeck.lastSeq, window.tapedeck.gaps, window.tapedeck.messages]",
                "args": []})["value"]
            tabs.append(v)
        acked = json.loads(urllib.request.urlopen(url.rstrip("/") + "/api/status", timeout=30).read())["acknowledged"]
    finally:
        for base in bases:
            try:
                wd(base, "DELETE", "")
            except OSError:
                pass
        for proc in (driver, srv, rec):
            proc.terminate()
            proc.wait()
    print(json.dumps({
        "source": a.source,
        "browsers": a.browsers,
        "seconds": round(dt, 1),
        "server_cpu_idle_share_of_core": round(idle, 4),
        "server_cpu_with_browsers_share_of_core": round(busy, 4),
        "extra_cpu_for_browsers_share_of_core": round(busy - idle, 4),
        "acknowledged_at_end": acked,
        "pages_last_seq_min": min((t[0] or 0) for t in tabs),
        "pages_gaps": sum(t[1] for t in tabs),
        "pages_messages_min": min(t[2] for t in tabs),
    }, indent=1))


if __name__ == "__main__":
    main()
