"""``edge-agent publish``: replay a data set to an agent over ZeroMQ."""

from __future__ import annotations

import argparse
import sys
import time

import zmq

from edge_agent.cli.args import endpoint_arg
from edge_agent.client import DEFAULT_INGEST, ClientError, Publisher, replay, stream
from edge_agent.data.drift import kinds_help


def add_publish_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``edge-agent publish``."""
    parser.add_argument(
        "--data",
        default="basicmotions",
        help="data set to replay (a bundled name or a file; see 'train')",
    )
    parser.add_argument(
        "--split",
        choices=("test", "train"),
        default="test",
        help="which split to replay (default test)",
    )
    parser.add_argument(
        "--endpoint",
        type=endpoint_arg,
        default=DEFAULT_INGEST,
        help=f"agent ingest endpoint (default {DEFAULT_INGEST})",
    )
    parser.add_argument(
        "--socket",
        choices=("pub", "push"),
        default="pub",
        help="pub for an agent with a SUB socket (default), push for PULL",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=200.0,
        help="samples per second, 0 for as fast as possible (default 200)",
    )
    parser.add_argument(
        "--count",
        type=int,
        default=2000,
        help="samples to send, in shuffled passes over the split (default 2000)",
    )
    parser.add_argument(
        "--drift",
        default=None,
        metavar="KIND[:STRENGTH]@N",
        help="inject a drift from sample N on, e.g. rotation@1000 or gain:2@500; " + kinds_help(),
    )
    parser.add_argument(
        "--labels-every",
        type=int,
        default=0,
        metavar="K",
        help="label every K-th sample (default 0: no labels)",
    )
    parser.add_argument(
        "--feedback",
        action="store_true",
        help="send labels as separate label messages instead of inline",
    )
    parser.add_argument("--sensor", default="replay", help="sensor id (default replay)")
    parser.add_argument("--seed", type=int, default=0, help="shuffle seed (default 0)")
    parser.add_argument(
        "--curve-secret-key", default="", help="this publisher's CURVE certificate (secret) file"
    )
    parser.add_argument(
        "--curve-server-key", default="", help="the agent's CURVE public certificate file"
    )


def publish_main(args: argparse.Namespace) -> int:
    """``edge-agent publish``: replay a data set to the agent."""
    from edge_agent.data import load_dataset
    from edge_agent.data.drift import Drift

    if args.count < 1 or args.labels_every < 0 or args.rate < 0:
        print("error: --count must be >= 1, --labels-every and --rate >= 0", file=sys.stderr)
        return 2
    drift = Drift.parse(args.drift) if args.drift else None
    ds = load_dataset(args.data)
    if drift:
        drift.check(ds.input_shape, args.count)
    X, y = (ds.X_test, ds.y_test) if args.split == "test" else (ds.X_train, ds.y_train)
    items = stream(
        X,
        y,
        args.count,
        args.seed,
        drift.transform(args.seed) if drift else None,
        drift.start if drift else 0,
        args.labels_every,
    )
    try:
        pub = Publisher(
            args.endpoint,
            args.socket,
            curve_secret_key=args.curve_secret_key,
            curve_server_key=args.curve_server_key,
        )
    except (ClientError, zmq.ZMQError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    with pub:
        t0 = time.perf_counter()
        sent = replay(
            pub,
            items,
            args.rate,
            args.sensor,
            args.feedback,
            on_progress=lambda n: print(f"sent {n}", file=sys.stderr),
        )
        took = time.perf_counter() - t0
    print(
        f"sent {sent} samples of {ds.name} to {args.endpoint} in {took:.1f} s "
        f"({sent / max(took, 1e-9):.0f}/s)" + (f", drift {args.drift}" if drift else "")
    )
    return 0
