"""What `tapedeck serve` costs (issue 21): a DAQ recording at real pace, N live pages.

Starts `tapedeck record --source 'sim:daq?channels=8&rate=100000&pace=real' --tape T` and
`tapedeck serve T` in separate processes, measures the server's CPU (utime + stime from
/proc) with no client for a while, then with N clients reading the live stream as the page
does (a 10 s window on a 1000-pixel plot: 10 ms buckets), and reports per phase:

- the server's CPU as a share of one core (idle, and with N clients: the extra is theirs),
- bytes per second each client received,
- how late each new sample reached a client: the wall clock at receipt minus the end of
  the newest bucket received (median, 99th percentile and max).

Usage (standard library only):
    python3 bench/serve_bench.py --tapedeck target/release/tapedeck [--clients 10]
        [--seconds 30] [--flush-interval 1s]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class Client(threading.Thread):
    """Reads /api/live like the page: counts bytes, notes each data event's lateness."""

    def __init__(self, port: int, bucket_us: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.bucket_us, self.stop = port, bucket_us, stop
        self.bytes = 0
        self.lateness: list[float] = []
        self.gaps = 0

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request("GET", f"/api/live?bucket={self.bucket_us}", headers={"Host": f"127.0.0.1:{self.port}"})
        resp = conn.getresponse()
        event = ""
        last_to = None
        while not self.stop.is_set():
            line = resp.readline()
            if not line:
                break
            self.bytes += len(line)
            text = line.decode().rstrip("\n")
            if text.startswith("event: "):
                event = text[7:]
            elif text.startswith("data: ") and event == "data":
                d = json.loads(text[6:])
                if last_to is not None and d["from"] != last_to:
                    self.gaps += 1
                last_to = d["to"]
                newest = max((c["b"][-1] for c in d["columns"] if c["b"]), default=None)
                if newest is not None:
                    end_s = (newest + 1) * d["bucket_us"] / 1e6
                    self.lateness.append(time.time() - end_s)
        conn.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tapedeck", default="target/release/tapedeck")
    p.add_argument("--clients", type=int, default=10)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--flush-interval", default="1s")
    p.add_argument("--source", default="sim:daq?channels=8&rate=100000&pace=real")
    a = p.parse_args()

    work = tempfile.mkdtemp(prefix="serve-bench-")
    tape = os.path.join(work, "tape")
    total = int(a.seconds * 2 + 20)
    rec = subprocess.Popen(
        [a.tapedeck, "record", "--source", a.source, "--tape", tape, "--duration", f"{total}s",
         "--flush-interval", a.flush_interval, "--progress", "never", "--quiet"],
        stdout=subprocess.DEVNULL)
    while not os.path.exists(os.path.join(tape, "ACKED")):
        time.sleep(0.1)
    srv = subprocess.Popen([a.tapedeck, "serve", tape, "--listen", "127.0.0.1:0"],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert srv.stdout is not None
    url = srv.stdout.readline().strip()
    port = int(url.rsplit(":", 1)[1].strip("/"))
    rec_cpu0 = cpu_seconds(rec.pid)
    time.sleep(2)

    c0, t0 = cpu_seconds(srv.pid), time.monotonic()
    time.sleep(a.seconds / 2)
    idle = (cpu_seconds(srv.pid) - c0) / (time.monotonic() - t0)

    stop = threading.Event()
    clients = [Client(port, 10_000, stop) for _ in range(a.clients)]
    for c in clients:
        c.start()
    time.sleep(3)  # let them catch up to the head
    for c in clients:
        c.bytes = 0
        c.lateness.clear()
    c1, t1 = cpu_seconds(srv.pid), time.monotonic()
    time.sleep(a.seconds)
    dt = time.monotonic() - t1
    busy = (cpu_seconds(srv.pid) - c1) / dt
    rates = [c.bytes / dt for c in clients]
    stop.set()
    late = sorted(x for c in clients for x in c.lateness)
    rec_cpu = (cpu_seconds(rec.pid) - rec_cpu0) / (time.monotonic() - t0)
    srv.terminate()
    rec.terminate()
    srv.wait()
    rec.wait()
    print(json.dumps({
        "source": a.source,
        "flush_interval": a.flush_interval,
        "clients": a.clients,
        "seconds": round(dt, 1),
        "server_cpu_idle_share_of_core": round(idle, 4),
        "server_cpu_with_clients_share_of_core": round(busy, 4),
        "extra_cpu_for_clients_share_of_core": round(busy - idle, 4),
        "recorder_cpu_share_of_core": round(rec_cpu, 3),
        "bytes_per_second_per_client_max": round(max(rates)),
        "bytes_per_second_per_client_median": round(statistics.median(rates)),
        "lateness_s_median": round(statistics.median(late), 3) if late else None,
        "lateness_s_p99": round(late[int(len(late) * 0.99) - 1], 3) if late else None,
        "lateness_s_max": round(late[-1], 3) if late else None,
        "gaps": sum(c.gaps for c in clients),
    }, indent=1))


if __name__ == "__main__":
    main()
