"""The state directory turns read-only under a running agent.

Two ways a board meets it: ``mount -o remount,ro`` (the kernel refuses it while a file is
open for writing, so that test sends no labels: the labelled log stays closed), and
ext4's ``errors=remount-ro`` after an I/O error, which the kernel applies at once, open
files or not (triggered through ext4's ``trigger_fs_error``, labels on). The agent must
keep predicting, count the failed writes, leave whole files, let go of the file system
(so it can be checked and mounted again) and write again once it is writable."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from support.faults import check_state_files, need_root, remount, tmpfs
from test_service_support import AgentProcess, write_config

from edge_agent.client import Publisher
from edge_agent.data import load_dataset
from edge_agent.service.state import LabelledSample, StateStore


def send(pub: Publisher, start: int, n: int, labels: bool) -> int:
    """Send ``n`` samples from seq ``start`` (every other one labelled with ``labels``)."""
    ds = load_dataset("basicmotions")
    for seq in range(start, start + n):
        i = seq % len(ds.X_test)
        label = int(ds.y_test[i]) if labels and seq % 2 else None
        pub.send_sample("s", seq, ds.X_test[i], label)
        time.sleep(0.002)
    return start + n


def _until(what: str, ok: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not ok() if callable(ok) else not ok:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def test_remount_read_only_and_back(agent_bundle: Path, workdir: Path) -> None:
    """Read-only mid-run, then a restart on the read-only card (a board that rebooted),
    then writable again."""
    with tmpfs(workdir / "state", "8m") as state:
        config = write_config(workdir, agent_bundle, checkpoint_s=0.3)
        a = AgentProcess(config)
        try:
            a.wait_ready()
            with Publisher(a.status()["endpoints"]["ingest"][0]) as pub:
                seq = send(pub, 0, 50, labels=False)
                a.wait_for(
                    lambda s: s["samples"]["predicted"] >= 50 and s["storage"]["checkpoints"] >= 2
                )
                # busy only while a checkpoint is being written: try again
                _until("remount,ro", lambda: remount(state, "ro"))
                seq = send(pub, seq, 100, labels=False)
                ro = a.wait_for(
                    lambda s: (
                        s["samples"]["predicted"] >= 150 and s["storage"]["checkpoint_errors"] >= 2
                    )
                )
                assert "Read-only file system" in ro["storage"]["failing"]["checkpoint"]
                during = check_state_files(state)
            a.kill()  # the board reboots; the card is still read-only
            a = AgentProcess(config)
            a.wait_ready()
            restarted = a.status()
            # counters continue from the last checkpoint written before it went read-only
            base = restarted["samples"]["predicted"]
            assert 50 <= base < 150, restarted["samples"]
            errors = restarted["storage"]["checkpoint_errors"]
            with Publisher(restarted["endpoints"]["ingest"][0]) as pub:
                seq = send(pub, seq, 30, labels=False)
                a.wait_for(
                    lambda s: (
                        s["samples"]["predicted"] >= base + 30
                        and s["storage"]["checkpoint_errors"] > errors
                    )
                )
                assert remount(state, "rw")
                ok = a.status()["storage"]["checkpoints"]
                seq = send(pub, seq, 50, labels=False)
                after = a.wait_for(
                    lambda s: (
                        s["samples"]["predicted"] >= base + 80
                        and s["storage"]["checkpoints"] >= ok + 2
                        and not s["storage"]["failing"]
                    )
                )
            assert after["samples"]["accepted"] == after["samples"]["predicted"] == base + 80
            rc, _ = a.terminate(30)
            assert rc == 0, a.log()
            assert "Traceback" not in a.log(), a.log()
            assert check_state_files(state)["generation"] > during["generation"]
        finally:
            a.stop()


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


@pytest.fixture
def ext4(workdir: Path) -> Iterator[tuple[Path, Path]]:
    """A 16 MiB ext4 file system (errors=remount-ro) on a loop device at workdir/state."""
    need_root()
    if not shutil.which("mkfs.ext4"):
        pytest.skip("mkfs.ext4 is not installed (e2fsprogs)")
    image, mnt = workdir / "card.img", workdir / "state"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(16 << 20)
    assert _run("mkfs.ext4", "-q", "-F", str(image)).returncode == 0
    done = _run("mount", "-o", "loop,errors=remount-ro", str(image), str(mnt))
    if done.returncode:
        pytest.skip(f"cannot loop-mount an ext4 image here: {done.stderr.strip()}")
    try:
        yield image, mnt
    finally:
        _run("umount", "-l", str(mnt))


def test_ext4_error_remounts_read_only_under_an_open_log(
    agent_bundle: Path, workdir: Path, ext4: tuple[Path, Path]
) -> None:
    image, state = ext4
    dev = Path(_run("findmnt", "-n", "-o", "SOURCE", str(state)).stdout.strip()).name
    trigger = Path(f"/sys/fs/ext4/{dev}/trigger_fs_error")
    if not trigger.exists():
        pytest.skip(f"{trigger} is missing: cannot make ext4 fail on purpose here")
    a = AgentProcess(write_config(workdir, agent_bundle, checkpoint_s=0.3))
    try:
        a.wait_ready()
        with Publisher(a.status()["endpoints"]["ingest"][0]) as pub:
            seq = send(pub, 0, 60, labels=True)
            a.wait_for(
                lambda s: s["samples"]["predicted"] >= 60 and s["storage"]["checkpoints"] >= 2
            )
            try:
                trigger.write_text("edge-agent fault test\n")  # ext4 goes read-only now
            except OSError as exc:
                pytest.skip(f"cannot trigger an ext4 error here: {exc}")
            seq = send(pub, seq, 100, labels=True)
            ro = a.wait_for(
                lambda s: (
                    s["samples"]["predicted"] >= 160
                    and s["storage"]["checkpoint_errors"] >= 2
                    and s["storage"]["labelled_log_errors"] >= 1
                )
            )
            assert ro["threads"] and all(ro["threads"].values())
            # the agent let go of the file system: it can be unmounted, checked, mounted
            _until("umount", lambda: _run("umount", str(state)).returncode == 0)
            fsck = _run("e2fsck", "-f", "-y", str(image))
            assert fsck.returncode in (0, 1), fsck.stdout + fsck.stderr
            assert _run("mount", "-o", "loop", str(image), str(state)).returncode == 0
            during = check_state_files(state)
            ok = a.status()["storage"]["checkpoints"]
            seq = send(pub, seq, 60, labels=True)
            after = a.wait_for(
                lambda s: (
                    s["samples"]["predicted"] >= 220
                    and s["storage"]["checkpoints"] >= ok + 2
                    and not s["storage"]["failing"]
                )
            )
        rc, _ = a.terminate(30)
        assert rc == 0, a.log()
        assert "Traceback" not in a.log(), a.log()
        end = check_state_files(state)
        assert end["generation"] > during["generation"]
        unlogged = after["storage"]["labelled_unlogged"]
        assert end["records"] == after["samples"]["accepted_labelled"] - unlogged == 110 - unlogged
        payload, samples = StateStore(state).restore()
        assert payload is not None and len(samples) == end["records"]
    finally:
        a.stop()


def test_start_on_a_read_only_card_with_a_torn_log(agent_bundle: Path, workdir: Path) -> None:
    """A power cut left a torn log record, an unfinished checkpoint and a damaged newest
    checkpoint; the card then came back read-only. The agent must start (nothing can be
    repaired), restore what is whole, predict, and once the card is writable never
    append after the torn record."""
    with tmpfs(workdir / "state", "4m") as state:
        store = StateStore(state, capacity=100)
        store.restore()
        store.append_labelled([_labelled(i) for i in range(5)])
        store.checkpoint({"counts": {}})
        store.close()
        seg = next(state.glob("labelled-*.log"))
        with open(seg, "ab") as f:
            f.write(_labelled(5).to_record()[:100])  # torn by the power cut
        (state / ".checkpoint-000000000002.eas.x1.tmp").write_bytes(b"unfinished")
        (state / "checkpoint-000000000002.eas").write_bytes(b"damaged")
        _until("remount,ro", lambda: remount(state, "ro"))

        a = AgentProcess(write_config(workdir, agent_bundle, checkpoint_s=0.3))
        try:
            a.wait_ready()
            st = a.status()
            assert st["buffer"]["labelled"] == 5, st["buffer"]
            with Publisher(st["endpoints"]["ingest"][0]) as pub:
                send(pub, 0, 20, labels=True)
                a.wait_for(
                    lambda s: (
                        s["samples"]["predicted"] >= 20 and s["storage"]["labelled_log_errors"] >= 1
                    )
                )
            a.kill()
        finally:
            a.stop()
        log = a.log()
        assert "cannot cut the torn tail" in log and "cannot move it aside" in log, log
        assert "Traceback" not in log, log

        store = StateStore(state, capacity=100)
        _, samples = store.restore()  # still read-only: the tail stays
        assert [s.seq for s in samples] == list(range(5))
        assert remount(state, "rw")  # writable again while that store runs
        store.append_labelled([_labelled(i) for i in range(6, 9)])
        store.close()
        _, samples = StateStore(state, capacity=100).restore()
        assert [s.seq for s in samples] == [0, 1, 2, 3, 4, 6, 7, 8]


def _labelled(i: int) -> LabelledSample:
    return LabelledSample("s", i, float(i), i % 4, -1, np.full((6, 100), i, np.float32))
