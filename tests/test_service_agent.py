"""The agent as a real subprocess: end to end, malformed input, overload, reload, SIGTERM."""

from __future__ import annotations

import dataclasses
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq
import zmq.auth
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_service_support import (
    AgentProcess,
    cleanup,
    make_bundle,
    short_dir,
    subscribe,
    write_config,
)

from edge_agent.bundle import SERIES_NORM
from edge_agent.bundle_io import load_bundle, save_bundle
from edge_agent.client import Publisher, replay, stream
from edge_agent.data import load_dataset
from edge_agent.data.datasets import normalize_series
from edge_agent.engine.engine import Engine
from edge_agent.ingest.protocol import ProtocolError, decode_ingest, encode_sample
from edge_agent.service.state import StateStore

SHAPE = (6, 100)


@pytest.fixture(scope="module")
def service_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("bundle") / "test.eab")


@pytest.fixture(scope="module")
def agent(service_bundle: Path) -> Iterator[AgentProcess]:
    d = short_dir()
    a = AgentProcess(write_config(d, service_bundle, checkpoint_s=1.0))
    try:
        a.wait_ready()
        yield a
    finally:
        a.stop()
        cleanup(d)


def _recv_all(sock: zmq.Socket[bytes], n: int, timeout: float = 20.0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        if sock.poll(100):
            out.append(msgpack.unpackb(sock.recv_multipart()[1]))
    return out


def test_end_to_end(agent: AgentProcess, service_bundle: Path) -> None:
    before = agent.status()
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sub = subscribe(ctx, before["endpoints"]["output"][0])
    time.sleep(0.3)  # let the subscription reach the agent's PUB
    ds = load_dataset("basicmotions")
    items = list(stream(ds.X_test, ds.y_test, 300, seed=1, labels_every=3))
    with Publisher(before["endpoints"]["ingest"][0]) as pub:
        replay(pub, iter(items), rate=3000, sensor="e2e")
        for it in items[1:100:2]:  # late labels for 50 samples sent unlabelled
            if not it.labelled:
                pub.send_label("e2e", it.index, it.y)
    preds = _recv_all(sub, 300)
    sub.close()
    ctx.term()
    assert sorted(p["seq"] for p in preds) == list(range(300))
    engine = Engine(load_bundle(service_bundle))
    expected, _ = engine.predict(np.stack([it.x for it in items]))
    by_seq = {p["seq"]: p for p in preds}
    got = [by_seq[i] for i in range(300)]
    assert all(0 < p["confidence"] <= 1 for p in got)
    # the labels let the calibration thread keep a flip round mid-stream: from then on the
    # agent answers with the new weights and says so in model_version
    versions = [p["model_version"] for p in got]
    original = [i for i, v in enumerate(versions) if v == engine.model_version]
    assert original == list(range(len(original))) and original, "the bundle's model first"
    assert [got[i]["class"] for i in original] == expected[original].tolist()
    # after a change too: each later version answers as that model's bundle does (the
    # state directory keeps the running model and the ones it replaced)
    kept = {}
    for path in [*(agent.dir / "state").glob("model*.eab")]:
        b = load_bundle(path)
        kept[b.model_version] = b
    X = np.stack([it.x for it in items])
    for v in sorted(set(versions) - {engine.model_version}):
        idx = [i for i, w in enumerate(versions) if w == v]
        if v in kept:
            want, _ = Engine(kept[v]).predict(X[idx])
            assert [got[i]["class"] for i in idx] == want.tolist(), v
    if len(set(versions)) > 1:
        assert versions[-1] in kept, "the latest model is on disk"
    n_feedback = sum(1 for it in items[1:100:2] if not it.labelled)
    st_ = agent.wait_for(
        lambda s: s["samples"]["feedback"] - before["samples"]["feedback"] >= n_feedback
    )
    s0, s1 = before["samples"], st_["samples"]
    assert s1["accepted"] - s0["accepted"] == 300
    assert s1["accepted_labelled"] - s0["accepted_labelled"] == 100
    assert s1["predicted"] - s0["predicted"] == 300
    assert s1["received"] - s0["received"] == 300 + n_feedback
    assert s1["feedback_unmatched"] == s0["feedback_unmatched"]
    assert s1["rejected_total"] == s0["rejected_total"]
    swaps = [v for i, v in enumerate(versions) if i == 0 or v != versions[i - 1]][1:]
    agent.wait_for(
        lambda s: s["calibration"]["accepted"] - before["calibration"]["accepted"] >= len(swaps)
    )  # each new version is a kept round, counted
    labelled = 100 + n_feedback
    assert st_["accuracy"]["labelled_total"] - before["accuracy"]["labelled_total"] == labelled
    assert st_["buffer"]["labelled"] - before["buffer"]["labelled"] == labelled
    assert st_["accuracy"]["rolling"] is not None
    assert st_["latency_ms"]["p99"] is not None
    maps = Path(f"/proc/{agent.proc.pid}/maps").read_text()
    assert "torch" not in maps, "the agent process must not load torch"
    _predictions_follow_a_new_model(agent, service_bundle, ds)


def _predictions_follow_a_new_model(agent: AgentProcess, bundle: Path, ds: Any) -> None:
    """A model change the test makes sure of (kept flip rounds may not happen): the
    configuration names another bundle, SIGHUP; every prediction after is that model's."""
    other = make_bundle(bundle.with_name("other.eab"), seed=1)
    new = Engine(load_bundle(other))
    config = agent.dir / "agent.toml"
    config.write_text(config.read_text().replace(str(bundle), str(other)))
    agent.proc.send_signal(signal.SIGHUP)
    st_ = agent.wait_for(lambda s: s["model"]["version"] == new.model_version)
    # the calibrated models of the old bundle are no fallback for the new one
    assert [p.name for p in (agent.dir / "state").glob("model*.eab")] == ["model.eab"]
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sub = subscribe(ctx, st_["endpoints"]["output"][0])
    time.sleep(0.3)
    items = list(stream(ds.X_test, ds.y_test, 100, seed=2))  # unlabelled: too few for a round
    with Publisher(st_["endpoints"]["ingest"][0]) as pub:
        replay(pub, iter(items), rate=3000, sensor="e2e-new", first_seq=0)
    preds = {p["seq"]: p for p in _recv_all(sub, 100)}
    sub.close()
    ctx.term()
    assert sorted(preds) == list(range(100))
    want, _ = new.predict(np.stack([it.x for it in items]))
    assert [preds[i]["model_version"] for i in range(100)] == [new.model_version] * 100
    assert [preds[i]["class"] for i in range(100)] == want.tolist()
    # a class index names label_names[index] of the bundle, as status reports them
    names = st_["model"]["label_names"]
    assert names == list(load_bundle(other).label_names)
    assert all(preds[i]["class_name"] == names[preds[i]["class"]] for i in range(100))
    assert (
        want.tolist()
        != Engine(load_bundle(bundle)).predict(np.stack([it.x for it in items]))[0].tolist()
    ), "the two models must differ"


def test_a_series_normalized_model_gets_every_sample_normalized(tmp_path: Path) -> None:
    plain = load_bundle(make_bundle(tmp_path / "plain.eab"))
    bundle = dataclasses.replace(plain, meta={**plain.meta, SERIES_NORM: True})
    save_bundle(bundle, tmp_path / "series.eab")
    d = short_dir()
    agent = AgentProcess(write_config(d, tmp_path / "series.eab"))
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    try:
        agent.wait_ready()
        sub = subscribe(ctx, f"ipc://{d}/out.sock")
        time.sleep(0.3)
        X = load_dataset("basicmotions").X_test[:40]
        X = X * np.repeat([1e3, 1e-3], 20)[:, None, None].astype(np.float32)  # wild scales
        with Publisher(f"ipc://{d}/in.sock") as pub:
            for i, x in enumerate(X):
                pub.send_sample("s", i, x, label=i % 4)
        preds = {p["seq"]: p["class"] for p in _recv_all(sub, len(X))}
        sub.close()
        expected, _ = Engine(plain).predict(normalize_series(X))
        assert [preds[i] for i in range(len(X))] == expected.tolist()
        agent.request("checkpoint")  # the labelled log is on disk
        agent.stop()
        logged = StateStore(d / "state").restore()[1]
        np.testing.assert_allclose(
            np.stack([s.x for s in logged]), normalize_series(X), atol=1e-6
        )  # the agent keeps what the model took
    finally:
        ctx.term()
        agent.stop()
        cleanup(d)


def _good(n: int, **over: Any) -> dict[str, Any]:
    msg: dict[str, Any] = {
        "v": 1,
        "type": "sample",
        "sensor": "bad",
        "seq": n,
        "ts": 1.0,
        "dtype": "float32",
        "shape": list(SHAPE),
        "data": np.zeros(SHAPE, "<f4").tobytes(),
    }
    msg.update(over)
    return msg


def _hand_made(rng: np.random.Generator, n: int) -> list[bytes]:
    """``n`` malformed messages of many hand-made kinds (each fails to decode)."""
    pk = msgpack.packb
    good = pk(_good(0))
    nan = np.zeros(SHAPE, "<f4")
    makers = [
        lambda i: good[: rng.integers(0, len(good))],  # truncated
        lambda i: bytes(rng.integers(0, 256, rng.integers(1, 200), dtype=np.uint8)),
        lambda i: b"\xdb\xff\xff\xff\xf0" + b"x" * 10,  # huge str
        lambda i: b"\xc6\x7f\xff\xff\xff" + b"x" * 10,  # huge bin
        lambda i: b"\xdd\xff\xff\xff\xff",  # huge array
        lambda i: b"\xdf\x7f\xff\xff\xff",  # huge map
        lambda i: pk([1, 2, i]),
        lambda i: pk(_good(i, v=int(rng.integers(2, 1000)))),  # unknown version
        lambda i: pk({k: v for k, v in _good(i).items() if k != "v"}),
        lambda i: pk(_good(i, type="nonsense")),
        lambda i: pk(_good(i, seq="seven")),  # wrong types
        lambda i: pk(_good(i, sensor=i)),
        lambda i: pk(_good(i, data=[1.0, 2.0])),
        lambda i: pk(_good(i, shape=[int(rng.integers(1, 50)), 7])),  # wrong shape
        lambda i: pk(_good(i, dtype="float128")),
        lambda i: pk(_good(i, data=b"\x00" * int(rng.integers(0, 2399)))),
        lambda i: pk(_good(i, data=_with_nan(nan, rng))),  # NaN / inf
        lambda i: pk(_good(i, label=int(rng.integers(4, 1 << 30)))),
        lambda i: pk(_good(i, ts=float("inf"))),
        lambda i: pk(msgpack.ExtType(1, b"abc")),
    ]
    return [makers[i % len(makers)](i) for i in range(n)]


def _with_nan(base: np.ndarray, rng: np.random.Generator) -> bytes:
    a = base.copy()
    a.flat[int(rng.integers(0, a.size))] = rng.choice([np.nan, np.inf, -np.inf])
    return a.tobytes()


def _fuzzed(n: int) -> list[bytes]:
    """``n`` hypothesis-generated malformed messages (random bytes and mutated maps)."""
    out: list[bytes] = []
    leaf = (
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.floats()
        | st.text(max_size=40)
        | st.binary(max_size=300)
        | st.lists(st.integers(0, 1000), max_size=5)
    )
    msgs = st.binary(max_size=600) | st.dictionaries(
        st.sampled_from(["v", "type", "sensor", "seq", "ts", "dtype", "shape", "data", "label"]),
        leaf,
        min_size=1,
        max_size=4,
    ).map(lambda over: msgpack.packb({**_good(0), **over}))

    @settings(max_examples=n, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(msgs)
    def collect(raw: bytes) -> None:
        if len(out) < n:
            out.append(raw)

    collect()
    return out


def test_10000_malformed_messages_are_counted(agent: AgentProcess) -> None:
    rng = np.random.default_rng(7)
    msgs = [m for m in _fuzzed(2000) + _hand_made(rng, 9000) if _fails(m)][:9990]
    msgs += [msgpack.packb(_good(0))[:-1]] * (9990 - len(msgs))
    expected = Counter(_reason(m) for m in msgs)
    big = encode_sample("big", 1, np.zeros((6, 100 * 300)), 1.0, dtype="float64")  # 1.4 MB
    before = agent.status()["samples"]
    with Publisher(before and agent.status()["endpoints"]["ingest"][0]) as pub:
        for m in msgs:
            pub.send_raw(m)
        for i in range(5):
            pub.send_raw(big)
            pub.sock.send_multipart([b"a", b"b", msgpack.packb(_good(i))])  # 3 frames
        for _ in range(2):  # the same (sensor, seq) twice: once accepted, once a duplicate
            pub.send_raw(msgpack.packb(_good(1, sensor="dup")))
    expected.update({"oversized": 5, "frames": 5, "duplicate": 1})
    total = sum(expected.values())
    assert total == 10_001
    after = agent.wait_for(
        lambda s: s["samples"]["rejected_total"] - before["rejected_total"] >= total
    )
    s1 = after["samples"]
    got = {k: v - before["rejected"].get(k, 0) for k, v in s1["rejected"].items()}
    assert {k: v for k, v in got.items() if v} == dict(expected)
    assert s1["accepted"] - before["accepted"] == 1
    assert agent.proc.poll() is None
    assert agent.request("ping")["pong"]
    assert "rejected message (" in agent.log()
    assert len(agent.log().splitlines()) < 200, "rejections must be logged rate-limited"


def _fails(raw: bytes) -> bool:
    try:
        decode_ingest(raw, SHAPE, 4)
    except ProtocolError:
        return True
    return False


def _reason(raw: bytes) -> str:
    try:
        decode_ingest(raw, SHAPE, 4)
    except ProtocolError as exc:
        return exc.reason
    raise AssertionError("message unexpectedly valid")


def test_malformed_control_requests_get_error_replies(agent: AgentProcess) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(agent.status_ep)
    cases = [
        b"",
        b"\x81",
        msgpack.packb({"v": 1, "type": "request", "cmd": "rm -rf"}),
        msgpack.packb({"v": 9, "type": "request", "cmd": "status"}),
        b"\x00" * 100_000,
        msgpack.packb([1, 2]),
    ]
    for raw in cases:
        sock.send_multipart([b"", raw])
        assert sock.poll(5000), f"no reply to {raw[:20]!r}"
        reply = msgpack.unpackb(sock.recv_multipart()[-1])
        assert reply["ok"] is False and reply["error"]["code"] and reply["error"]["message"]
    sock.close()
    ctx.term()
    assert agent.request("ping")["pong"]
    ck = agent.request("checkpoint")
    assert ck["generation"] >= 1 and Path(ck["path"]).exists()


def test_overload_is_shed_with_counted_drops_and_bounded_memory(service_bundle: Path) -> None:
    d = short_dir()
    # Shedding is measured on its own: the calibration thread's CPU share is bench/ingest's.
    extra = "[inference]\nbatch_max = 4\n\n[calibration]\nenabled = false\n"
    a = AgentProcess(
        write_config(
            d,
            service_bundle,
            extra=extra,
            ingest=f'endpoints = ["ipc://{d}/in.sock"]\nqueue_capacity = 128\nrcvhwm = 2000',
        )
    )
    try:
        a.wait_ready()
        ds = load_dataset("basicmotions")
        ep = a.status()["endpoints"]["ingest"][0]
        n = 30_000
        msgs = [
            encode_sample(
                "burst",
                i,
                ds.X_test[i % 40],
                1.0,
                label=int(ds.y_test[i % 40]) if i % 50 == 0 else None,
            )
            for i in range(n)
        ]
        rss = [a.status()["rss_bytes"]]
        depths: list[int] = []
        for burst in range(2):
            stop = threading.Event()
            watcher = threading.Thread(
                target=lambda ev=stop: [
                    depths.append(a.status()["queue"]["depth"]) for _ in iter(ev.is_set, True)
                ]
            )
            watcher.start()
            with Publisher(ep, sndhwm=1_000_000) as pub:
                for m in msgs:
                    pub.send_raw(m)
            st_ = a.wait_for(
                lambda s, k=burst + 1: (
                    s["samples"]["received"] == k * n
                    and s["samples"]["predicted"] + sum(s["samples"]["dropped"].values())
                    == s["samples"]["accepted"]
                ),
                timeout=60,
            )
            stop.set()
            watcher.join()
            rss.append(st_["rss_bytes"])
            s = st_["samples"]
            assert s["dropped"].get("unlabelled", 0) > 1000 * (burst + 1)
            assert s["accepted_labelled"] == (burst + 1) * n // 50
            # labelled samples are shed last: only a stall long enough for the whole queue
            # to hold labelled ones drops any (a FIFO would shed them at the plain rate)
            lab_dropped = s["dropped"].get("labelled", 0)
            plain_rate = s["dropped"]["unlabelled"] / (s["accepted"] - s["accepted_labelled"])
            assert lab_dropped / s["accepted_labelled"] < plain_rate / 4, s
            assert st_["accuracy"]["labelled_total"] == s["accepted_labelled"] - lab_dropped
        assert max(depths) <= 128
        assert rss[1] - rss[0] < 64 * 2**20, rss
        assert rss[2] - rss[1] < 16 * 2**20, f"memory grows from burst to burst: {rss}"
    finally:
        a.stop()
        cleanup(d)


def test_sigterm_finishes_work_checkpoints_and_exits_in_time(service_bundle: Path) -> None:
    d = short_dir()
    a = AgentProcess(write_config(d, service_bundle))
    try:
        a.wait_ready()
        ds = load_dataset("basicmotions")
        ep = a.status()["endpoints"]["ingest"][0]
        with Publisher(ep) as pub:
            replay(pub, stream(ds.X_test, ds.y_test, 3000, labels_every=4), rate=0)
            time.sleep(0.05)
            rc, took = a.terminate()
        assert rc == 0 and took < 10.0, a.log()
        assert "stopped cleanly" in a.log()
        payload, samples = StateStore(d / "state").restore()
        assert payload is not None
        c, dropped = payload["counts"]["counters"], payload["counts"]["dropped"]
        assert c["predicted"] + sum(dropped.values()) == c["accepted"] + c["accepted_labelled"], (
            "queued work finished"
        )
        assert len(samples) == c["accepted_labelled"] - dropped.get("labelled", 0)
        assert not (d / "run" / "status.sock").exists()
    finally:
        a.stop()
        cleanup(d)


def test_sighup_reloads_the_configuration(service_bundle: Path) -> None:
    d = short_dir()
    cfg = write_config(d, service_bundle)
    a = AgentProcess(cfg)
    try:
        a.wait_ready()
        cfg.write_text(cfg.read_text().replace("in.sock", "in2.sock") + '\n[log]\nlevel = "x"\n')
        a.proc.send_signal(1)
        time.sleep(1.0)
        assert "log.level" in a.log() and a.proc.poll() is None  # bad config: kept running
        cfg.write_text(cfg.read_text().replace('level = "x"', 'level = "debug"'))
        a.proc.send_signal(1)
        st_ = a.wait_for(lambda s: s["endpoints"]["ingest"] == [f"ipc://{d}/in2.sock"])
        ds = load_dataset("basicmotions")
        with Publisher(f"ipc://{d}/in2.sock") as pub:
            replay(pub, stream(ds.X_test, ds.y_test, 50), rate=0)
        a.wait_for(lambda s: s["samples"]["predicted"] >= st_["samples"]["predicted"] + 50)
        assert "configuration reloaded" in a.log()
    finally:
        a.stop()
        cleanup(d)


def test_reload_of_ingest_keeps_a_tcp_output_bound(service_bundle: Path) -> None:
    """Reloading a changed ingest section must not rebind an unchanged tcp output: libzmq
    frees a closed socket's port asynchronously, so the rebind failed with EADDRINUSE."""
    d = short_dir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = write_config(d, service_bundle)
    cfg.write_text(cfg.read_text().replace(f"ipc://{d}/out.sock", f"tcp://127.0.0.1:{port}"))
    a = AgentProcess(cfg)
    try:
        a.wait_ready()
        for n in (2, 3, 4):
            old = f"in{n - 1}.sock" if n > 2 else "in.sock"
            cfg.write_text(cfg.read_text().replace(old, f"in{n}.sock"))
            a.proc.send_signal(signal.SIGHUP)
            a.wait_for(lambda s, n=n: s["endpoints"]["ingest"] == [f"ipc://{d}/in{n}.sock"])
        assert "reload failed" not in a.log()
        ctx = zmq.Context.instance()
        sub = subscribe(ctx, f"tcp://127.0.0.1:{port}")
        time.sleep(0.3)  # the subscription reaches the PUB socket
        try:
            with Publisher(f"ipc://{d}/in4.sock") as pub:
                ds = load_dataset("basicmotions")
                replay(pub, stream(ds.X_test, ds.y_test, 20), rate=0)
            assert sub.poll(10_000), "no prediction on the tcp output after three reloads"
        finally:
            sub.close(0)
    finally:
        a.stop()
        cleanup(d)


def test_curve_admits_authorized_publishers_only(service_bundle: Path) -> None:
    d = short_dir()
    keys, allowed = d / "keys", d / "allowed"
    keys.mkdir()
    allowed.mkdir()
    zmq.auth.create_certificates(keys, "agent")
    zmq.auth.create_certificates(keys, "good")
    zmq.auth.create_certificates(keys, "evil")
    (allowed / "good.key").write_bytes((keys / "good.key").read_bytes())
    a = AgentProcess(
        write_config(
            d,
            service_bundle,
            ingest=f"""
socket = "pull"
endpoints = ["ipc://{d}/in.sock"]
[ingest.curve]
enabled = true
secret_key = "{keys}/agent.key_secret"
authorized_keys = "{allowed}"
""",
        )
    )
    try:
        a.wait_ready()
        x = load_dataset("basicmotions").X_test[0]
        for name, n in (("evil", 5), ("good", 7)):
            with Publisher(
                f"ipc://{d}/in.sock",
                socket="push",
                curve_secret_key=str(keys / f"{name}.key_secret"),
                curve_server_key=str(keys / "agent.key"),
            ) as pub:
                pub.sock.setsockopt(zmq.LINGER, 500)
                for i in range(n):
                    pub.send_sample(name, i, x)
        st_ = a.wait_for(lambda s: s["samples"]["predicted"] >= 7)
        time.sleep(0.3)
        assert a.status()["samples"]["accepted"] == 7, "only the authorized key gets through"
        assert st_["samples"]["rejected_total"] == 0
    finally:
        a.stop()
        cleanup(d)
