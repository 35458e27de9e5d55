"""The ``edge-agent`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from edge_agent import __version__
from edge_agent.cli.args import bits_list, check_output_file, positive_int, seed

DATA_HELP = (
    "data set: one of basicmotions, gunpoint, digits (bundled), or a path to your own "
    "NAME_TRAIN.ts (UEA/UCR, aeon/sktime format) or NAME_TRAIN.tsv (UCR archive) with "
    "its NAME_TEST twin beside it (a single .ts/.tsv file: 30%% of it is held out), "
    "a digits-style .csv/.csv.gz (64 pixels + label per row) "
    "or an .npz with X_train, y_train, X_test, y_test"
)


def _blas_threads(n: int) -> None:
    """numpy's BLAS threads as torch's (``--threads``), unless the environment says: set
    before numpy loads, as OpenBLAS reads them once. A second BLAS thread cost the
    flipper episodes' matrix products 3-7x the CPU on a busy 2-core machine
    (``python -m bench.train_time --blas-check``)."""
    if "numpy" in sys.modules:
        return
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(n))


def cmd_train(args: argparse.Namespace) -> int:
    """Train FP + QAT models (with QCore and flipping network) and write a bundle."""
    check_output_file(args.out, "--out")  # not after minutes of training
    _blas_threads(args.threads)
    from edge_agent.bundle import SERIES_NORM
    from edge_agent.bundle_io import save_bundle
    from edge_agent.data import load_dataset
    from edge_agent.data.datasets import data_source, series_normalized
    from edge_agent.training.fit import TrainConfig
    from edge_agent.training.flip_train import FlipTrainConfig
    from edge_agent.training.phases import PhaseTimer
    from edge_agent.training.pipeline import train_bundle
    from edge_agent.training.qcore_build import QCoreConfig

    ds = load_dataset(args.data)
    meta: dict[str, object] = {"data_source": data_source(args.data)}
    if args.extra:
        from edge_agent.fleet.collect import with_field_samples

        ds, field_info = with_field_samples(ds, args.extra, args.extra_weight)
        meta["field_data"] = field_info
        print(
            f"field samples: {field_info['samples']} from {args.extra}, "
            f"weighted x{args.extra_weight}"
        )
    if args.normalize_series:
        ds = series_normalized(ds)
        meta[SERIES_NORM] = True
    cfg = TrainConfig(
        fp_steps=args.fp_steps,
        qat_steps=args.qat_steps,
        act_bits=args.act_bits,
        progress=not args.quiet,
        torch_threads=args.threads,
        early_stop_min_samples=args.early_stop,
    )
    qcore_cfg = QCoreConfig(per_class=args.qcore_per_class) if args.qcore_per_class else None
    flip_cfg = FlipTrainConfig() if args.flipper else None
    timer = PhaseTimer()
    bundle, metrics = train_bundle(
        ds, args.bits, args.seed, cfg, qcore_cfg, flip_cfg, meta, width=args.width, timer=timer
    )
    save_bundle(bundle, args.out)
    print(f"wrote {args.out}: {ds.name}, bits {args.bits}, model version {bundle.model_version}")
    print(f"  FP test accuracy       {metrics['fp_test_accuracy']:.4f}")
    for b in args.bits:
        print(f"  {b}-bit test accuracy    {metrics[f'q{b}_test_accuracy']:.4f} (torch fake-quant)")
    if qcore_cfg:
        print(f"  QCore                  {len(bundle.extras['qcore_y'])} samples")
    if flip_cfg:
        print("  flipping network       trained on simulated drift episodes")
    print("time per phase (process CPU: all threads; wall):")
    print("\n".join(timer.report()))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a bundle with the integer engine on a data set's test split."""
    import numpy as np

    from edge_agent.bundle_io import load_bundle
    from edge_agent.data import load_dataset
    from edge_agent.data.datasets import trained_data_spec
    from edge_agent.engine.engine import Engine

    bundle = load_bundle(args.bundle)
    ds = load_dataset(args.data or trained_data_spec(bundle.meta))
    if ds.input_shape != bundle.input_shape:
        print(
            f"error: data samples have shape {ds.input_shape}, the model expects "
            f"{bundle.input_shape}",
            file=sys.stderr,
        )
        return 2
    bits_list = args.bits or sorted(bundle.quant, reverse=True)
    missing = [b for b in bits_list if b not in bundle.quant]
    if missing:
        print(
            f"error: the bundle has no {missing} bit model (it has {sorted(bundle.quant)})",
            file=sys.stderr,
        )
        return 2
    print(
        f"{args.bundle}: {bundle.arch['name']} on {ds.name} test split ({len(ds.y_test)} samples)"
    )
    engine = Engine(bundle)
    for bits in bits_list:
        engine.set_bits(bits)
        pred, _ = engine.predict(ds.X_test)  # z-normalized per series if trained so
        acc = float(np.mean(pred == ds.y_test))
        print(f"  {bits}-bit integer engine accuracy {acc:.4f}")
    return 0


def cmd_compile_kernels(args: argparse.Namespace) -> int:
    """Compile the integer kernels ahead of time into the kernel cache."""
    import time

    from kernels.build import cachepaths, toolchain
    from kernels.exec import backend

    dest = cachepaths.aot_dir()
    start = time.perf_counter()
    try:
        toolchain.check()  # before numba's import, which alone takes minutes under emulation
        from kernels.build import aot  # imports numba (and may find no numba.pycc in it)

        path = aot.build(dest)
        kernels = backend.load("aot", aot_dir=dest)  # what the engine will load
    except (ImportError, toolchain.BuildError, backend.KernelsUnavailable) as exc:
        print(
            f"compile-kernels: AOT build unavailable ({exc}); the engine will JIT-compile "
            "the kernels instead",
            file=sys.stderr,
        )
        return 1
    print(
        f"compiled the {kernels.isa} kernels ahead of time in "
        f"{time.perf_counter() - start:.1f} s: {path}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="edge-agent",
        description="On-device continual calibration of low-bit quantized classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "train",
        help="train a model and write a model bundle",
        description="Train a full-precision model on a data set, fine-tune "
        "quantized copies with LSQ+ quantization-aware training distilled from "
        "it, and write everything to one bundle file the agent loads.",
    )
    p.add_argument("--data", default="basicmotions", help=DATA_HELP)
    p.add_argument(
        "--bits",
        type=bits_list,
        default=[4],
        help="weight bit-width(s), e.g. 4 or 8,4,2 (the first is the default the "
        "agent runs; the others let it switch at run time). Default: 4",
    )
    p.add_argument(
        "--act-bits",
        type=int,
        default=8,
        choices=range(2, 9),
        metavar="{2..8}",
        help="activation bit-width (default 8)",
    )
    p.add_argument(
        "--width",
        type=int,
        metavar="N",
        help="channels of the first conv layer, doubled in later ones (default: 32 for "
        "series, 16 for images; MACs grow about with its square)",
    )
    p.add_argument("--seed", type=seed, default=0, help="random seed (default 0)")
    p.add_argument("--fp-steps", type=int, default=1200, help="FP training steps (default 1200)")
    p.add_argument(
        "--qat-steps", type=int, default=600, help="QAT steps per bit-width (default 600)"
    )
    p.add_argument("--out", type=Path, required=True, help="bundle file to write (e.g. model.eab)")
    p.add_argument(
        "--qcore-per-class",
        type=int,
        default=4,
        metavar="N",
        help="QCore samples per class kept in the bundle for on-device calibration "
        "(default 4; 0: no QCore)",
    )
    p.add_argument(
        "--no-flipper",
        dest="flipper",
        action="store_false",
        help="do not train the bit-flipping network (the agent then cannot recalibrate by flips)",
    )
    p.add_argument(
        "--normalize-series",
        action="store_true",
        help="z-normalize every sample per channel over its own time axis, in training and "
        "in the agent (for data whose amplitudes differ by orders of magnitude between "
        "samples; train warns when that is so)",
    )
    p.add_argument(
        "--extra",
        type=Path,
        default=None,
        metavar="COLLECTED.npz",
        help="add field samples written by `edge-agent collect` to the training "
        "split (truly labelled ones; the test split is unchanged)",
    )
    p.add_argument(
        "--extra-weight",
        type=int,
        default=2,
        metavar="K",
        help="each field sample counts K times (default 2)",
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        metavar="N",
        help="torch threads (default 1: the models are small, and more threads cost more "
        "CPU than they save, most of all on a busy machine)",
    )
    p.add_argument(
        "--early-stop",
        type=positive_int,
        default=0,
        metavar="N",
        help="stop on a 10%% validation split when the training split has at least N "
        "samples (default off: faster on large sets, but it cost digits about a point "
        "at 3 and 2 bits)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate",
        help="measure a bundle's accuracy with the integer engine",
        description="Run a bundle's quantized model(s) on the integer engine "
        "over a data set's test split and print the accuracy per bit-width.",
    )
    p.add_argument("bundle", type=Path, help="bundle file written by 'edge-agent train'")
    p.add_argument("--data", help=DATA_HELP + " (default: the data set the bundle was trained on)")
    p.add_argument(
        "--bits", type=bits_list, help="bit-width(s) to evaluate (default: all in the bundle)"
    )
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "compile-kernels",
        help="compile the integer kernels ahead of time (smaller, faster-starting agent)",
        description="Compile the integer kernels for this CPU into the kernel cache "
        "($EDGE_AGENT_JIT_CACHE, else $CACHE_DIRECTORY/numba, else "
        "~/.cache/edge-agent/numba; modules in its aot/ directory). The engine then loads "
        "them without importing numba. Needs a C compiler and the Python headers (apt "
        "install gcc python3-dev); without them it exits with status 1 and the engine "
        "JIT-compiles the kernels instead. deploy/install.sh runs it for the service.",
    )
    p.set_defaults(func=cmd_compile_kernels)
    _add_service_commands(sub)
    return parser


# ---------------------------------------------------------------- service commands
# (run / status / publish / demo: the modules beside this one)


def _add_service_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from edge_agent.cli.demo import add_demo_arguments, demo_main
    from edge_agent.cli.publish import add_publish_arguments, publish_main
    from edge_agent.cli.run import add_run_arguments, cmd_run
    from edge_agent.cli.status import add_status_arguments, status_main

    p = sub.add_parser(
        "run",
        help="run the agent: ingest, inference, status socket (the systemd service)",
        description="Run the agent until SIGTERM: ZeroMQ/serial ingest, integer inference, "
        "predictions on a PUB socket, a status socket, crash-safe state. SIGHUP reloads "
        "the configuration. Exit status 78 means a bad configuration or model bundle.",
    )
    add_run_arguments(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "status",
        help="show a running agent's status",
        description="Ask a running agent for its status (or metrics, config, a checkpoint).",
    )
    add_status_arguments(p)
    p.set_defaults(func=status_main)

    p = sub.add_parser(
        "publish",
        help="replay a data set to an agent over ZeroMQ, optionally with drift and labels",
        description="Replay a data set's samples to an agent at a fixed rate, inject a drift "
        "from sample N on and label every K-th sample (docs/protocol.md).",
    )
    add_publish_arguments(p)
    p.set_defaults(func=publish_main)

    p = sub.add_parser(
        "demo",
        help="start an agent, stream data with a drift into it, show live status and a summary",
        description="Start the agent as a subprocess, replay the bundled data with an "
        "injected drift and periodic labels, print a live status line, then a table of "
        "accuracy before/after the drift (and after recalibration) and a PNG plot.",
    )
    add_demo_arguments(p)
    p.set_defaults(func=demo_main)

    from edge_agent.cli.keys import add_keys_arguments, keys_main
    from edge_agent.fleet.commands import add_fleet_commands

    add_fleet_commands(sub)
    p = sub.add_parser(
        "keys",
        help="CURVE keys for the remote status socket (client pairs, allow-list, server key)",
        description="Create a client key pair, allow a client on an agent, or print an "
        "agent's public key. See docs/fleet.md.",
    )
    add_keys_arguments(p)
    p.set_defaults(func=keys_main)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``edge-agent`` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: the command cleaned up on its way out
        print("interrupted", file=sys.stderr)
        return 130
