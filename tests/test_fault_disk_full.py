"""The SD card fills up under a running agent: its state directory on a small tmpfs is
filled with a file mid-run. The agent must keep predicting, count and log every failed
write (checkpoints, the labelled log), leave no half-written file where a restart would
read it, and write again once space returns."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from support.faults import check_state_files, fill, tmpfs
from test_service_support import AgentProcess, write_config

from edge_agent.client import Publisher
from edge_agent.data import load_dataset
from edge_agent.service.state import StateStore


def send(pub: Publisher, start: int, n: int) -> int:
    """Send ``n`` samples from seq ``start``, every other one labelled; return the end."""
    ds = load_dataset("basicmotions")
    for seq in range(start, start + n):
        i = seq % len(ds.X_test)
        pub.send_sample("s", seq, ds.X_test[i], int(ds.y_test[i]) if seq % 2 else None)
        time.sleep(0.002)
    return start + n


def test_state_dir_fills_up_and_frees_again(agent_bundle: Path, workdir: Path) -> None:
    with tmpfs(workdir / "state", "2m") as state:
        a = AgentProcess(write_config(workdir, agent_bundle, checkpoint_s=0.3))
        try:
            a.wait_ready()
            st = a.status()
            with Publisher(st["endpoints"]["ingest"][0]) as pub:
                seq = send(pub, 0, 60)
                a.wait_for(
                    lambda s: s["samples"]["predicted"] >= 60 and s["storage"]["checkpoints"] >= 2
                )

                filler = fill(state)  # the card is full
                seq = send(pub, seq, 200)
                full = a.wait_for(
                    lambda s: (
                        s["samples"]["predicted"] >= 260 and s["storage"]["checkpoint_errors"] >= 2
                    ),
                    timeout=60,
                )
                sto = full["storage"]
                assert sto["labelled_log_errors"] >= 1 and sto["labelled_unlogged"] >= 1, sto
                assert "checkpoint" in sto["failing"] and "labelled log" in sto["failing"], sto
                # what a restart would read now is whole: newest checkpoint, model, log
                during = check_state_files(state)

                filler.unlink()  # space returns
                ok_before = a.status()["storage"]["checkpoints"]
                seq = send(pub, seq, 100)
                after = a.wait_for(
                    lambda s: (
                        s["samples"]["predicted"] >= 360
                        and s["storage"]["checkpoints"] >= ok_before + 2
                        and not s["storage"]["failing"]
                    ),
                    timeout=60,
                )
            s = after["samples"]
            assert s["predicted"] == s["accepted"] == 360, s
            assert after["threads"] and all(after["threads"].values()), after["threads"]
            rc, _ = a.terminate(30)
            assert rc == 0, a.log()
            log = a.log()
            assert "Traceback" not in log, log
            assert "checkpoint failed: " in log and "checkpoint works again" in log, log
            assert "labelled log failed: " in log and "labelled log works again" in log, log
            # a failing log write is logged when it starts failing (and again only after
            # it worked in between: a nearly full card flaps), the rest only counted
            failed = log.count("labelled log failed")
            assert failed == log.count("labelled log works again"), log
            assert failed < after["storage"]["labelled_log_errors"] or failed == 1, log
            # every labelled sample the agent did not count as unlogged is in the log,
            # whole, and restores
            end = check_state_files(state)
            assert end["generation"] > during["generation"]
            unlogged = after["storage"]["labelled_unlogged"]
            assert end["records"] == s["accepted_labelled"] - unlogged == 180 - unlogged
            payload, samples = StateStore(state).restore()
            assert payload is not None and payload["generation"] == end["generation"]
            assert len(samples) == end["records"]
            assert all(np.isfinite(x.x).all() for x in samples)
        finally:
            a.stop()


def test_first_start_on_a_full_card(agent_bundle: Path, workdir: Path) -> None:
    """A new board whose card is already full: the agent starts (it cannot copy its
    model into the state directory), predicts, and saves the model and its first
    checkpoints once space returns."""
    with tmpfs(workdir / "state", "1m") as state:
        filler = fill(state)
        a = AgentProcess(write_config(workdir, agent_bundle, checkpoint_s=0.3))
        try:
            a.wait_ready()
            st = a.wait_for(
                lambda s: (
                    s["storage"]["model_save_errors"] >= 2
                    and s["storage"]["checkpoint_errors"] >= 2
                )
            )
            assert not (state / "model.eab").exists()
            with Publisher(st["endpoints"]["ingest"][0]) as pub:
                send(pub, 0, 40)
                a.wait_for(lambda s: s["samples"]["predicted"] >= 40)
                filler.unlink()
                send(pub, 40, 20)
                last = a.wait_for(
                    lambda s: (
                        s["samples"]["predicted"] >= 60
                        and s["storage"]["checkpoints"] >= 2
                        and not s["storage"]["failing"]
                    )
                )
            rc, _ = a.terminate(30)
            assert rc == 0 and "Traceback" not in a.log(), a.log()
            assert "saving the model works again" in a.log(), a.log()
            unlogged = last["storage"]["labelled_unlogged"]
            assert last["samples"]["predicted"] == 60
            assert check_state_files(state)["records"] == 30 - unlogged
        finally:
            a.stop()
