"""tapedeck.Journal: kanta's job on tapedeck's journal -- audited, crash-safe JSON state."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import tapedeck
from tapedeck import errors


def test_set_get_remove_and_the_history_of_who_did_what(tmp_path: Path) -> None:
    path = tmp_path / "run.journal"
    with tapedeck.Journal(path, author="ana", fsync="always") as j:
        j.set("/setpoints", {})
        j.set("/setpoints/flow", 10.5, action="setpoint")
        j.set("/operator", "ana")
        j.remove("/operator")
        assert j.state == {"setpoints": {"flow": 10.5}}
        assert j.get("/setpoints/flow") == 10.5
        assert j.get("/nope", "default") == "default"
        assert j.next_seq == 5
    records = tapedeck.Journal(path, read_only=True).history()
    assert [r["action"] for r in records] == ["open", "set", "setpoint", "set", "remove"]
    assert all(r["author"] == "ana" for r in records[1:])
    assert records[2]["patch"] == [{"op": "add", "path": "/setpoints/flow", "value": 10.5}]


def test_a_transaction_commits_the_difference_or_nothing(tmp_path: Path) -> None:
    with tapedeck.Journal(tmp_path / "j") as j:
        j.set("/gains", {"ai0": 1.0, "ai1": 1.0})
        with j.transaction("calibrate") as s:
            s["gains"]["ai0"] = 1.02
        with pytest.raises(ZeroDivisionError), j.transaction("broken") as s:
            s["gains"]["ai1"] = 5.0
            _ = 1 / 0
        assert j.state == {"gains": {"ai0": 1.02, "ai1": 1.0}}
        last = j.history()[-1]
        assert last["action"] == "calibrate"
        assert last["patch"] == [{"op": "replace", "path": "/gains/ai0", "value": 1.02}]


def test_time_travel_by_record_and_by_time(tmp_path: Path) -> None:
    with tapedeck.Journal(tmp_path / "j", snapshot_every=3) as j:
        for k in range(10):
            j.set("/k", k)
            if k == 4:
                time.sleep(0.01)
                middle = dt.datetime.now(dt.UTC)
                time.sleep(0.01)
        # Snapshots are records too (each file opens with one), so find k=4's own record.
        seq = next(r["seq"] for r in j.history(all=True) if r.get("patch") == [{"op": "add", "path": "/k", "value": 4}])
        assert j.value_at(seq) == {"k": 4}
        assert j.value_at(seq - 1) == {"k": 3}
        assert j.value_as_of(middle) == {"k": 4}
        assert j.value_as_of(dt.datetime(2000, 1, 1)) is None
        assert len(j.history(all=True)) > len(j.history())  # older files kept as history


def test_errors_are_typed(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with tapedeck.Journal(path) as j:
        with pytest.raises(errors.LockedError, match=r"process \d+"):
            tapedeck.Journal(path)
        with pytest.raises(errors.TapedeckError, match="JSON pointer"):
            j.set("no-slash", 1)
        with pytest.raises(errors.TapedeckError):
            j.set("/missing/parent", 1)
        with pytest.raises(errors.OptionError, match="fsync"):
            tapedeck.Journal(tmp_path / "k", fsync="sometimes")
    j.close()
    with pytest.raises(errors.OptionError, match="closed"):
        j.set("/a", 1)


def test_what_was_synced_survives_a_kill(tmp_path: Path) -> None:
    path = tmp_path / "j"
    script = textwrap.dedent(
        f"""
        import os, signal, tapedeck
        j = tapedeck.Journal({str(path)!r}, fsync="always")
        for k in range(200):
            j.set("/k", k)
            print(k, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True)
    assert out.returncode == -signal.SIGKILL, out.stderr
    last = int(out.stdout.split()[-1])
    with tapedeck.Journal(path) as j:
        assert j.get("/k") == last
    assert os.path.exists(path)


def test_a_msgpack_journal_reads_back_and_a_follower_in_another_process_sees_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j"
    with tapedeck.Journal(path, format="msgpack", snapshot_bytes=512) as j:
        for k in range(50):
            j.set(f"/k{k % 7}", k)
    assert path.read_bytes()[:8] == b"TDJ\x00MP1\n"
    follower = tapedeck.JournalFollower(path)
    seen = follower.poll()
    assert [r["seq"] for r in seen] == list(range(len(seen)))
    # Snapshots by size started new files; the history reads across them.
    assert sum(r["action"] == "snapshot" for r in seen) >= 2
    script = textwrap.dedent(
        f"""
        import tapedeck
        with tapedeck.Journal({str(path)!r}, fsync="always") as j:
            for k in range(20):
                j.set("/later", k)
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    later = follower.poll()
    assert [r["seq"] for r in later] == list(range(len(seen), follower.next_seq))
    assert later[-1]["patch"] == [{"op": "add", "path": "/later", "value": 19}]
    with tapedeck.Journal(path, read_only=True) as j:
        assert j.get("/later") == 19 and j.get("/k0") == 49
    with pytest.raises(errors.OptionError, match="msgpack"):
        tapedeck.Journal(tmp_path / "x", format="yaml")
