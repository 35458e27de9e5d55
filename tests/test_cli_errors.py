"""The CLI with bad input: one clear line naming what is wrong, a nonzero exit status,
never a traceback, and nothing started before the input is known to be usable."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

from edge_agent.bundle import BundleError
from edge_agent.bundle_io import FORMAT_VERSION, MAGIC, load_bundle
from edge_agent.cli import main
from edge_agent.cli.demo import DEFAULT_BUNDLE, Trace, _plot, default_drift
from edge_agent.container import seal, unseal
from edge_agent.data.drift import Drift
from edge_agent.service.config import load_config, parse_config


@pytest.mark.parametrize(
    "argv, message",
    [
        (["demo", "--count", "0"], "--count must be >= 1"),
        (["demo", "--rate", "-1"], "--rate >= 0"),
        (["demo", "--labels-every", "-1"], "--labels-every"),
        (["demo", "--plot", "/nonexistent-dir/x.png"], "no directory /nonexistent-dir"),
        (["demo", "--drift", "rotation@99999"], "drift starts at sample 99999, but the stream"),
        (["demo", "--drift", "shift@10"], "'shift' is not for sensor series"),
        (["demo", "--drift", "gain:nan@5"], "STRENGTH must be a finite number"),
        (["publish", "--drift", "rotation:1e999@5"], "STRENGTH must be a finite number"),
        (["publish", "--drift", "noise@5", "--count", "3"], "the stream has 3"),
        (["publish", "--data", "digits", "--drift", "rotation@5"], "'rotation' is not for images"),
        (["publish", "--data", "gunpoint", "--drift", "rotation@5"], "have 1 channel(s)"),
    ],
)
def test_bad_arguments_are_refused_before_anything_starts(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # no agent and no subscriber here: a refusal that came late would hang or time out
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_a_short_demo_run_still_plots(tmp_path: Path) -> None:
    # 10 predictions, fewer than the rolling window: numpy's convolve swapped its arguments
    # and the plot failed with "x and y must have same first dimension" after the run
    trace = Trace(pred={s: s % 2 for s in range(10)}, calibrations=[(4, True)])
    drift = Drift("gain", 2.0, 5)
    _plot(trace, np.arange(10) % 2, drift, tmp_path / "short.png")
    assert (tmp_path / "short.png").stat().st_size > 0
    _plot(Trace(), np.zeros(10, int), drift, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()  # nothing predicted: said, not plotted


def test_config_takes_the_endpoints_zeromq_takes() -> None:
    cfg = parse_config(
        "[ingest]\nendpoints = ['tcp://*:5556', 'tcp://127.0.0.1:*', 'tcp://[::1]:5', "
        "'ipc:///run/x.sock', 'inproc://x']\n[energy]\nnormal_bits = 8\npressure_bits = 2\n"
    )
    assert len(cfg.ingest.endpoints) == 5 and cfg.energy.pressure_bits == 2


def test_every_file_path_in_the_config_is_relative_to_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ingest.curve's keys and metrics.textfile were read from the working directory (/
    # under systemd) while the bundle and state paths beside them were the file's
    (tmp_path / "agent.toml").write_text(
        "[model]\nbundle = 'model.eab'\n"
        "[ingest.curve]\nenabled = true\nsecret_key = 'keys/agent.key_secret'\n"
        "authorized_keys = 'keys/publishers'\n"
        "[metrics]\ntextfile = 'prom/agent.prom'\n"
    )
    monkeypatch.chdir("/")
    cfg = load_config(tmp_path / "agent.toml")
    assert cfg.model.bundle == str(tmp_path / "model.eab")
    assert cfg.ingest.curve.secret_key == str(tmp_path / "keys/agent.key_secret")
    assert cfg.ingest.curve.authorized_keys == str(tmp_path / "keys/publishers")
    assert cfg.metrics.textfile == str(tmp_path / "prom/agent.prom")
    assert cfg.ingest.curve.server_public_key == ""  # empty stays empty (off)


def _resealed(tmp_path: Path, name: str, change: Callable[[dict[str, Any]], None]) -> Path:
    """The bundled model with ``change`` applied to its payload and a valid checksum: the
    damage a checksum cannot see (a buggy exporter, a hand-edited file)."""
    raw = DEFAULT_BUNDLE.read_bytes()
    payload = msgpack.unpackb(
        unseal(raw, MAGIC, FORMAT_VERSION, "bundle", "x", BundleError), strict_map_key=False
    )
    change(payload)
    path = tmp_path / f"{name}.eab"
    path.write_bytes(seal(MAGIC, FORMAT_VERSION, msgpack.packb(payload, use_bin_type=True)))
    return path


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    def change(payload: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        obj: Any = payload
        for key in parents:
            obj = obj[key] if isinstance(obj, dict) else obj[int(key)]
        obj[last if isinstance(obj, dict) else int(last)] = value

    return change


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("arch.layers.0", {}, "arch.layers[0] must be a map with 'op'"),
        ("arch.layers.0.op", "conv3d", "arch.layers[0] must be a map with 'op'"),
        ("arch.layers.0", {"op": "conv1d"}, "is missing ['in_ch', 'out_ch', 'kernel']"),
        ("arch.layers.0.padding", 10**12, "arch.layers[0].padding must be a whole number"),
        ("arch.layers.0.in_ch", -1, "arch.layers[0].in_ch must be a whole number in 1.."),
        ("arch.layers.0.kernel", [3, 3], "arch.layers[0].kernel must be a whole number"),
        ("arch.input_shape", [], "arch.input_shape must be (C,), (C, T) or (C, H, W)"),
        ("arch.num_classes", "4", "arch.num_classes must be a whole number"),
        ("arch", 5, "arch must be a map"),
        ("quant.4.input_scale", 0.0, "quant[4]: input_scale must be finite and positive"),
    ],
)
def test_a_damaged_bundle_is_refused_with_what_is_wrong(
    tmp_path: Path, path: str, value: object, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # these reached the engine: KeyError, IndexError, ZeroDivisionError tracebacks from
    # `evaluate` and `run` (and `run --check` passed them), or 87 TiB asked of numpy
    bundle = _resealed(tmp_path, "damaged", _set(path, value))
    with pytest.raises(BundleError) as info:
        load_bundle(bundle)
    assert message in str(info.value) and str(bundle) in str(info.value), info.value
    assert main(["evaluate", str(bundle)]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["publish", "--endpoint", "bogus"],
        ["publish", "--endpoint", "tcp://nohost"],
        ["status", "--endpoint", "tcp://127.0.0.1:0"],
    ],
)
def test_an_endpoint_zeromq_would_refuse_is_an_argument_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    # was: "error: Invalid argument (addr='bogus')", naming no option
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"argument --endpoint: {argv[-1]!r} is not a" in err, err


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["train", "--out", "/nonexistent-dir/x.eab"],
            "--out /nonexistent-dir/x.eab: no directory",
        ),
        (["train", "--out", "/tmp"], "--out /tmp: a directory"),
    ],
)
def test_train_refuses_an_output_it_cannot_write_before_training(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # was found only when the bundle was written, after minutes of training, naming a
    # temporary file (and for a directory, in the directory above it: '/.tmp.*.tmp')
    assert main(argv) == 1
    assert message in capsys.readouterr().err


def test_a_seed_numpy_refuses_is_an_argument_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:  # was numpy's words after loading the data
        main(["train", "--out", "x.eab", "--seed", "-1"])
    assert info.value.code == 2 and "argument --seed" in capsys.readouterr().err


def test_keys_allow_never_copies_a_secret_key_to_the_board(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `keys allow client.key_secret` (the file beside the right one) copied the client's
    # secret key, mode 0644, into the agent's allow-list as client.key
    config = tmp_path / "agent.toml"
    config.write_text(
        "[status.curve]\nendpoint = 'tcp://127.0.0.1:5559'\nauthorized_keys = 'clients'\n"
    )
    assert main(["keys", "client", "--out", str(tmp_path / "me.key_secret")]) == 0
    assert main(["keys", "allow", str(tmp_path / "me.key_secret"), "--config", str(config)]) == 2
    assert "holds the client's secret key: allow the public me.key" in capsys.readouterr().err
    assert not (tmp_path / "clients").exists() or not any((tmp_path / "clients").iterdir())
    assert main(["keys", "allow", str(tmp_path / "me.key"), "--config", str(config)]) == 0
    assert "secret-key" not in (tmp_path / "clients" / "me.key").read_text()


@pytest.mark.parametrize(
    "shape, count, drift",
    [
        ((6, 100), 3000, "rotation@1000"),  # BasicMotions: the README's demo
        ((1, 150), 3000, "gain@1000"),  # GunPoint: a rotation would change nothing
        ((1, 8, 8), 3000, "rotate@1000"),  # digits
        ((6, 100), 600, "rotation@200"),  # a short demo still drifts
    ],
)
def test_the_demo_default_drift_changes_the_samples(
    shape: tuple[int, ...], count: int, drift: str
) -> None:
    assert default_drift(shape, count) == drift
    Drift.parse(drift).check(shape, count)


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            "[ingest.curve]\nenabled = true\nsecret_key = 'nope.key_secret'\n"
            "authorized_keys = 'publishers'\n",
            "ingest.curve.secret_key: ",
        ),
        (
            "[status.curve]\nendpoint = 'tcp://127.0.0.1:5599'\nauthorized_keys = 'clients'\n",
            "status.curve.authorized_keys: ",
        ),
        ("", "conv1d expects 5 channels"),
    ],
)
def test_run_check_refuses_what_start_up_would(
    tmp_path: Path, extra: str, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    # these passed `run --check` and then stopped `run` at start: a CURVE key file that
    # is not there, a layer that does not fit its input (the checksum is fine)
    bundle = DEFAULT_BUNDLE
    if not extra:
        bundle = _resealed(tmp_path, "wrong_in_ch", _set("arch.layers.0.in_ch", 5))
        load_bundle(bundle)  # the bundle itself loads
    (tmp_path / "agent.toml").write_text(f"[model]\nbundle = '{bundle}'\n{extra}")
    assert main(["run", "--config", str(tmp_path / "agent.toml"), "--check"]) == 78
    assert message in caplog.text, caplog.text


def test_run_check_passes_a_good_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "agent.toml").write_text(f"[model]\nbundle = '{DEFAULT_BUNDLE}'\n")
    assert main(["run", "--config", str(tmp_path / "agent.toml"), "--check"]) == 0
    assert "are valid" in capsys.readouterr().out


def test_fleet_commands_name_a_file_that_is_not_what_they_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a garbage --extra printed numpy's advice to load it with pickle; a binary
    # --agents-file printed "'utf-8' codec can't decode byte 0xf4"
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(bytes(range(256)))
    code = main(["train", "--extra", str(garbage), "--out", str(tmp_path / "x.eab")])
    err = capsys.readouterr().err
    assert code != 0 and "not an .npz archive" in err and "pickle" not in err, err
    code = main(["collect", "--agents-file", str(garbage), "--out", str(tmp_path / "f.npz")])
    err = capsys.readouterr().err
    assert code != 0 and "not a text file of lines" in err and "codec" not in err, err


def test_a_state_directory_that_cannot_be_made_is_named(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # was "cannot start: [Errno 2] No such file or directory: '/proc/nope'"
    (tmp_path / "agent.toml").write_text(
        f"[model]\nbundle = '{DEFAULT_BUNDLE}'\n[state]\ndir = '/proc/nope'\n"
        f"runtime_dir = '{tmp_path}/run'\n"
    )
    assert main(["run", "--config", str(tmp_path / "agent.toml")]) == 1
    assert "cannot start: [state] dir /proc/nope: No such file or directory" in caplog.text
