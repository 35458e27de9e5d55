"""Client side of the agent: a sample publisher and a status client (library and CLI).

Library use::

    with Publisher("tcp://127.0.0.1:5556") as pub:
        pub.send_sample("watch-1", seq, x, label=None)
    result = StatusClient("ipc:///run/edge-agent/status.sock").request("status")

The CLI entry points (``publish_main``, ``status_main``) and their argument helpers are
wired into ``edge-agent publish`` and ``edge-agent status``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zmq
import zmq.auth

from edge_agent.service.protocol import (
    ProtocolError,
    decode_reply,
    encode_feedback,
    encode_request,
    encode_sample,
)

DEFAULT_INGEST = "tcp://127.0.0.1:5556"
DEFAULT_STATUS = "ipc://" + os.path.join(os.environ.get("RUNTIME_DIRECTORY", "/run/edge-agent"),
                                         "status.sock")


class ClientError(RuntimeError):
    """The agent could not be reached or answered with an error."""


class Publisher:
    """Sends protocol v1 messages to an agent's ingest socket.

    ``socket="pub"`` (matching the agent's default SUB) uses an XPUB socket and waits for
    the agent's subscription before the first send, so nothing is lost to ZeroMQ's slow
    joiner; ``"push"`` matches an agent with a PULL socket. With ``topic`` every message
    goes in the two-frame form (topic, payload), e.g. to agents behind ``edge-agent proxy``
    that subscribe to their board's topic.
    """

    def __init__(self, endpoint: str = DEFAULT_INGEST, socket: str = "pub",
                 bind: bool = False, sndhwm: int = 100_000, curve_secret_key: str = "",
                 curve_server_key: str = "", wait_s: float = 10.0, topic: str = "") -> None:
        self.topic = topic.encode()
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        kind = zmq.XPUB if socket == "pub" else zmq.PUSH
        self.sock = self.ctx.socket(kind)
        self.sock.setsockopt(zmq.SNDHWM, sndhwm)
        self.sock.setsockopt(zmq.LINGER, 5000)
        if curve_secret_key:
            public, secret = zmq.auth.load_certificate(curve_secret_key)
            self.sock.curve_publickey = public
            self.sock.curve_secretkey = secret or b""
            if bind:
                self.sock.curve_server = True
            else:
                self.sock.curve_serverkey = zmq.auth.load_certificate(curve_server_key)[0]
        (self.sock.bind if bind else self.sock.connect)(endpoint)
        self.endpoint = endpoint
        if kind == zmq.XPUB and wait_s > 0:
            self._wait_subscriber(wait_s)

    def _wait_subscriber(self, wait_s: float) -> None:
        """Wait for a subscription that takes our topic (XPUB drops what nobody took yet)."""
        deadline = time.monotonic() + wait_s
        while (left := deadline - time.monotonic()) > 0 and self.sock.poll(int(left * 1000)):
            msg = self.sock.recv()  # 0x01 + prefix: subscribe; 0x00 + prefix: unsubscribe
            if msg[:1] == b"\x01" and self.topic.startswith(msg[1:]):
                return
        self.close()
        what = f" to {self.topic.decode()!r}" if self.topic else ""
        raise ClientError(f"no agent subscribed{what} at {self.endpoint} within {wait_s:.0f} s")

    def send_raw(self, payload: bytes) -> None:
        """Send one already-encoded message (one frame, or topic + payload)."""
        if self.topic:
            self.sock.send_multipart([self.topic, payload])
        else:
            self.sock.send(payload)

    def send_sample(self, sensor: str, seq: int, x: np.ndarray, label: int | None = None,
                    ts: float | None = None) -> None:
        """Send one sample (float32)."""
        self.send_raw(encode_sample(sensor, seq, x, time.time() if ts is None else ts, label))

    def send_label(self, sensor: str, seq: int, label: int) -> None:
        """Send a label for an earlier sample."""
        self.send_raw(encode_feedback(sensor, seq, label))

    def close(self) -> None:
        """Flush (up to the linger time) and close."""
        self.sock.close()
        self.ctx.term()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StatusClient:
    """Sends control requests to the agent's status socket (a DEALER, so a timed-out
    request never wedges the client)."""

    def __init__(self, endpoint: str = DEFAULT_STATUS, timeout_s: float = 5.0) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._ids = itertools.count(1)
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if endpoint.startswith("ipc://") and not Path(endpoint[6:]).exists():
            self.close()
            raise ClientError(f"no status socket at {endpoint[6:]} (is the agent running? "
                              "as another user, run with sudo or use --endpoint tcp://...)")
        self.sock.connect(endpoint)

    def request(self, cmd: str) -> dict[str, Any]:
        """Send ``cmd`` and return the reply's result; raise ClientError on an error reply
        or when no reply comes within the timeout."""
        req_id = next(self._ids)
        self.sock.send_multipart([b"", encode_request(cmd, req_id)])
        deadline = time.monotonic() + self.timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if not self.sock.poll(int(left * 1000) + 1):
                break
            frames = self.sock.recv_multipart()
            try:
                reply = decode_reply(frames[-1])
            except ProtocolError as exc:
                raise ClientError(f"bad reply from {self.endpoint}: {exc}") from None
            if reply.get("id") not in (req_id, None):
                continue  # a late answer to an earlier, timed-out request
            if not reply.get("ok"):
                err = reply.get("error") or {}
                raise ClientError(f"agent refused {cmd!r}: {err.get('code')}: {err.get('message')}")
            result: dict[str, Any] = reply.get("result") or {}
            return result
        raise ClientError(f"no reply from {self.endpoint} within {self.timeout_s:.1f} s")

    def close(self) -> None:
        """Close the socket."""
        self.sock.close(linger=0)
        self.ctx.term()

    def __enter__(self) -> StatusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------- replay


@dataclass(frozen=True)
class StreamItem:
    """One element of a replayed stream."""

    index: int
    x: np.ndarray
    y: int
    labelled: bool


def stream(X: np.ndarray, y: np.ndarray, count: int, seed: int = 0,
           drift: Callable[[np.ndarray], np.ndarray] | None = None, drift_start: int = 0,
           labels_every: int = 0) -> Iterator[StreamItem]:
    """``count`` samples drawn from (X, y) in shuffled passes, drifted from ``drift_start``
    on, every ``labels_every``-th one labelled (0: none)."""
    rng = np.random.default_rng(seed)
    order: np.ndarray = np.empty(0, dtype=np.int64)
    for i in range(count):
        if i % len(X) == 0:
            order = rng.permutation(len(X))
        j = int(order[i % len(X)])
        x = X[j]
        if drift is not None and i >= drift_start:
            x = drift(x)
        yield StreamItem(i, x, int(y[j]), labels_every > 0 and (i + 1) % labels_every == 0)


def replay(pub: Publisher, items: Iterator[StreamItem], rate: float, sensor: str = "replay",
           feedback: bool = False, first_seq: int = 0,
           on_progress: Callable[[int], None] | None = None) -> int:
    """Send a stream at ``rate`` samples/s (0: as fast as possible); labels go inside the
    sample or, with ``feedback``, as a separate label message right after it. Returns
    the number of samples sent."""
    t0 = time.perf_counter()
    sent = 0
    for item in items:
        if rate > 0:
            delay = t0 + item.index / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        seq = first_seq + item.index
        inline = item.y if item.labelled and not feedback else None
        pub.send_sample(sensor, seq, item.x, label=inline)
        if item.labelled and feedback:
            pub.send_label(sensor, seq, item.y)
        sent += 1
        if on_progress is not None and sent % 1000 == 0:
            on_progress(sent)
    return sent


def add_publish_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``edge-agent publish``."""
    parser.add_argument("--data", default="basicmotions",
                        help="data set to replay (a bundled name or a file; see 'train')")
    parser.add_argument("--split", choices=("test", "train"), default="test",
                        help="which split to replay (default test)")
    parser.add_argument("--endpoint", default=DEFAULT_INGEST,
                        help=f"agent ingest endpoint (default {DEFAULT_INGEST})")
    parser.add_argument("--socket", choices=("pub", "push"), default="pub",
                        help="pub for an agent with a SUB socket (default), push for PULL")
    parser.add_argument("--rate", type=float, default=200.0,
                        help="samples per second, 0 for as fast as possible (default 200)")
    parser.add_argument("--count", type=int, default=2000,
                        help="samples to send, in shuffled passes over the split (default 2000)")
    parser.add_argument("--drift", default=None, metavar="KIND[:STRENGTH]@N",
                        help="inject a drift from sample N on, e.g. rotation@1000 or gain:2@500")
    parser.add_argument("--labels-every", type=int, default=0, metavar="K",
                        help="label every K-th sample (default 0: no labels)")
    parser.add_argument("--feedback", action="store_true",
                        help="send labels as separate label messages instead of inline")
    parser.add_argument("--sensor", default="replay", help="sensor id (default replay)")
    parser.add_argument("--seed", type=int, default=0, help="shuffle seed (default 0)")
    parser.add_argument("--curve-secret-key", default="",
                        help="this publisher's CURVE certificate (secret) file")
    parser.add_argument("--curve-server-key", default="",
                        help="the agent's CURVE public certificate file")


def publish_main(args: argparse.Namespace) -> int:
    """``edge-agent publish``: replay a data set to the agent."""
    from edge_agent.data import load_dataset
    from edge_agent.data.drift import Drift

    if args.count < 1 or args.labels_every < 0 or args.rate < 0:
        print("error: --count must be >= 1, --labels-every and --rate >= 0", file=sys.stderr)
        return 2
    drift = Drift.parse(args.drift) if args.drift else None
    ds = load_dataset(args.data)
    X, y = (ds.X_test, ds.y_test) if args.split == "test" else (ds.X_train, ds.y_train)
    items = stream(X, y, args.count, args.seed,
                   drift.transform(args.seed) if drift else None,
                   drift.start if drift else 0, args.labels_every)
    try:
        pub = Publisher(args.endpoint, args.socket, curve_secret_key=args.curve_secret_key,
                        curve_server_key=args.curve_server_key)
    except (ClientError, zmq.ZMQError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    with pub:
        t0 = time.perf_counter()
        sent = replay(pub, items, args.rate, args.sensor, args.feedback,
                      on_progress=lambda n: print(f"sent {n}", file=sys.stderr))
        took = time.perf_counter() - t0
    print(f"sent {sent} samples of {ds.name} to {args.endpoint} in {took:.1f} s "
          f"({sent / max(took, 1e-9):.0f}/s)" + (f", drift {args.drift}" if drift else ""))
    return 0


# ---------------------------------------------------------------- status


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``edge-agent status``."""
    parser.add_argument("--endpoint", default=DEFAULT_STATUS,
                        help=f"status socket (default {DEFAULT_STATUS})")
    parser.add_argument("--json", action="store_true", help="print the raw reply as JSON")
    parser.add_argument("--command", default="status",
                        choices=("status", "metrics", "config", "checkpoint", "ping", "reload"),
                        help="request to send (default status)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")


def status_main(args: argparse.Namespace) -> int:
    """``edge-agent status``: query a running agent."""
    try:
        with StatusClient(args.endpoint, args.timeout) as client:
            result = client.request(args.command)
    except (ClientError, zmq.ZMQError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json or args.command != "status":
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(format_status(result))
    return 0


def _dur(s: float) -> str:
    s = int(s)
    return f"{s // 86400}d {s % 86400 // 3600:02d}h {s % 3600 // 60:02d}m {s % 60:02d}s" \
        if s >= 86400 else f"{s // 3600}h {s % 3600 // 60:02d}m {s % 60:02d}s"


def _ms(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f} ms"


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"


def _qcore(cal: dict[str, Any]) -> str:
    b = cal.get("buffer")
    if not b:
        return "n/a (calibration disabled)"
    return (f"{b['size']} / {b['capacity']} samples, {b['labelled']} labelled, "
            f"{100 * b['stream_fraction']:.0f}% from the stream, {cal.get('pending', 0)} pending")


def _energy(e: dict[str, Any]) -> str:
    if not e:
        return "n/a (not read yet)"
    why = "; ".join(e["reasons"]) or "no limit reached"
    return (f"bursts {'allowed' if e['burst_allowed'] else 'refused'}, run at {e['bits']} bits"
            f"{' (pressure)' if e['pressure'] else ''}: {why}")


def _bursts(b: dict[str, Any]) -> str:
    if not b or b.get("enabled") is False:
        return "disabled"
    return (f"{b['state']}; {b['started']} started, {b['accepted']} accepted, "
            f"{b['rolled_back']} rolled back, {b['preempted']} pre-empted, {b['failed']} failed")


def format_status(r: dict[str, Any]) -> str:
    """A human summary of a ``status`` reply."""
    a, m, s, acc = r["agent"], r["model"], r["samples"], r["accuracy"]
    cal, lat, buf, q = r["calibration"], r["latency_ms"], r["buffer"], r["queue"]
    ck = r.get("checkpoint") or {}
    shape = "x".join(str(v) for v in m["input_shape"])
    rolling = "n/a" if acc["rolling"] is None else f"{acc['rolling']:.3f}"
    energy = r.get("energy") or {}
    lines = [
        f"edge-agent {a['version']}, pid {a['pid']}, up {_dur(a['uptime_s'])}",
        f"model        {m['version']} ({m['path']}; {shape} input, {m['num_classes']} classes)",
        f"samples      received {s['received']}, accepted {s['accepted']} "
        f"(labelled {s['accepted_labelled']}), labels {s['feedback']} "
        f"(unmatched {s['feedback_unmatched']})",
        f"rejected     {s['rejected_total']}: {_counts(s['rejected'])}",
        f"dropped      {sum(s['dropped'].values())}: {_counts(s['dropped'])}",
        f"sequence     {s['seq_gaps']} gaps, {s['seq_missing']} samples missing",
        f"predictions  {s['predicted']} at {r['prediction_rate_per_s']:.1f}/s, latency "
        f"p50 {_ms(lat['p50'])}, p99 {_ms(lat['p99'])}",
        f"accuracy     {rolling} rolling over {acc['n']} labelled ({acc['labelled_total']} total)",
        f"labelled     {buf['labelled']} / {buf['capacity']} samples kept on disk",
        f"QCore        {_qcore(cal)}",
        f"calibration  {cal['done']} done, {cal['accepted']} accepted, "
        f"{cal['rolled_back']} rolled back ({cal.get('method', 'disabled')})",
        f"energy       {_energy(energy)}",
        f"QAT bursts   {_bursts(r.get('bursts') or {})}",
        f"queue        {q['depth']} / {q['capacity']}",
        "checkpoint   " + (f"generation {ck['generation']}, {time.time() - ck['time']:.0f} s ago"
                            if ck else "none yet"),
        f"memory       RSS {r['rss_bytes'] / 2**20:.1f} MiB",
    ]
    return "\n".join(lines)
