"""A publisher process of the fleet benchmark (``bench/fleet.py`` starts several).

``replay``: for each of its boards, a data set split with that board's drift, sent in the
two-frame form (topic ``board-XX/pub``) through the proxy at a fixed rate per board,
every K-th sample labelled, until ``--count`` per board or SIGTERM; prints
``{"sent": {board: n}}``. ``blast``: one real sample message as fast as possible to
``--topic`` for ``--seconds``; prints ``{"sent": n}``. ``sink``: counts what arrives on
``--topic`` at the proxy's backend for ``--seconds``; prints ``{"received": n}``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

import numpy as np
import zmq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_agent.data import load_dataset  # noqa: E402
from edge_agent.data.drift import Drift  # noqa: E402
from edge_agent.ingest.protocol import encode_sample  # noqa: E402

STOP = False


def _stop(*_: object) -> None:
    global STOP
    STOP = True


def _xpub(
    ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, topics: list[bytes], wait_s: float = 120.0
) -> zmq.Socket[bytes]:
    """An XPUB connected to the proxy, once every topic has a subscriber (slow joiner)."""
    sock = ctx.socket(zmq.XPUB)
    sock.setsockopt(zmq.SNDHWM, 1_000_000)
    sock.setsockopt(zmq.LINGER, 30_000)
    sock.connect(endpoint)
    missing = set(topics)
    deadline = time.monotonic() + wait_s
    while missing and time.monotonic() < deadline:
        if sock.poll(200):
            msg = sock.recv()
            if msg[:1] == b"\x01":
                missing = {t for t in missing if not t.startswith(msg[1:])}
    if missing:
        raise SystemExit(f"no subscriber for {sorted(missing)[:3]} within {wait_s} s")
    return sock


def replay(args: argparse.Namespace) -> dict[str, object]:
    ds = load_dataset(args.data)
    X, y = (ds.X_test, ds.y_test) if args.split == "test" else (ds.X_train, ds.y_train)
    boards = args.boards.split(",")
    drifts = args.drifts.split(",")
    streams = {}
    for i, (b, spec) in enumerate(zip(boards, drifts, strict=True)):
        Xb = Drift.parse(spec).apply_stream(X, seed=i) if spec != "none" else X
        rng = np.random.default_rng(args.seed + i)
        streams[b] = (Xb.astype(np.float32), y, rng.permutation(len(X)))
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    topics = {b: f"{b}/pub".encode() for b in boards}
    sock = _xpub(ctx, args.endpoint, list(topics.values()))
    sent = dict.fromkeys(boards, 0)
    t0 = time.perf_counter()
    i = 0
    while i < args.count and not STOP:
        delay = t0 + i / args.rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        for b in boards:
            Xb, yb, order = streams[b]
            j = int(order[i % len(order)])
            label = int(yb[j]) if args.labels_every and (i + 1) % args.labels_every == 0 else None
            sock.send_multipart(
                [topics[b], encode_sample(b, args.first_seq + i, Xb[j], time.time(), label)]
            )
            sent[b] += 1
        i += 1
    sock.close()  # lingers until ZeroMQ has handed everything to the proxy
    ctx.term()
    return {"sent": sent, "seconds": time.perf_counter() - t0}


def blast(args: argparse.Namespace) -> dict[str, object]:
    x = load_dataset(args.data).X_test[0].astype(np.float32)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    topic = args.topic.encode()
    sock = _xpub(ctx, args.endpoint, [topic])
    payloads = [encode_sample("blast", i, x, time.time()) for i in range(256)]
    n = 0
    start = time.time()
    end = time.perf_counter() + args.seconds
    while time.perf_counter() < end:
        for p in payloads:
            sock.send_multipart([topic, p], copy=False)
        n += len(payloads)
    sock.close()
    ctx.term()  # returns once ZeroMQ has handed everything over
    return {"sent": n, "start": start, "end": time.time()}


def sink(args: argparse.Namespace) -> dict[str, object]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = ctx.socket(zmq.SUB)
    sock.setsockopt(zmq.RCVHWM, 1_000_000)
    sock.setsockopt(zmq.SUBSCRIBE, args.topic.encode())
    sock.connect(args.endpoint)
    print("ready", flush=True)
    n = 0
    end = time.monotonic() + args.seconds
    while time.monotonic() < end and not STOP:
        if sock.poll(100):
            while True:
                try:
                    sock.recv_multipart(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    break
                n += 1
    sock.close(linger=0)
    ctx.term()
    return {"received": n}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("mode", choices=("replay", "blast", "sink"))
    p.add_argument("--endpoint", required=True)
    p.add_argument("--data", default="basicmotions")
    p.add_argument("--split", choices=("train", "test"), default="test")
    p.add_argument("--boards", default="")
    p.add_argument("--drifts", default="")
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--rate", type=float, default=20.0, help="samples/s per board")
    p.add_argument("--labels-every", type=int, default=1)
    p.add_argument("--first-seq", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--topic", default="bench/")
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args()
    signal.signal(signal.SIGTERM, _stop)
    out = {"replay": replay, "blast": blast, "sink": sink}[args.mode](args)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
