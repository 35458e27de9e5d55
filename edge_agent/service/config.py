"""Agent configuration: a TOML file validated into typed sections.

Every problem is reported as :class:`ConfigError` naming the offending key
(``ingest.endpoints[1]: ...``), including unknown keys, so a typo never passes silently.
Ranges and choices are declared on the sections' fields (``metadata``: ``range`` (lo, hi),
``choices``, ``length`` (lo, hi) of a string; ``flatten``: a nested section whose keys sit
in its parent's table) and checked by one walk over the configuration.
Paths left empty fall back to the directories systemd provides (``STATE_DIRECTORY``,
``RUNTIME_DIRECTORY``) and then to the usual ``/var/lib`` and ``/run`` locations.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent.calibrate.burst_scheduler import SchedulerConfig
from edge_agent.calibrate.controller import CalibrationConfig
from edge_agent.endpoints import SCHEMES, endpoint_problem
from edge_agent.energy import EnergyConfig
from edge_agent.ingest.config import IngestConfig, SerialConfig
from edge_agent.service.metrics_config import MetricsConfig
from kernels.plan.bitwidths import SUPPORTED_BITS

LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(ValueError):
    """An invalid configuration; the message names the key."""


@dataclass(frozen=True)
class ModelConfig:
    """The model bundle the agent runs."""

    bundle: str = "/etc/edge-agent/model.eab"


@dataclass(frozen=True)
class OutputConfig:
    """Where predictions are published."""

    endpoints: list[str] = field(default_factory=lambda: ["tcp://127.0.0.1:5557"])
    sndhwm: int = field(default=10000, metadata={"range": (1, 10_000_000)})


@dataclass(frozen=True)
class StatusCurveConfig:
    """The remote status socket: tcp, CURVE-encrypted, clients authenticated by key."""

    endpoint: str = ""  # e.g. "tcp://0.0.0.0:5559"; empty disables
    # a directory of allowed clients' public certificates (*.key, as zmq.auth writes them)
    authorized_keys: str = ""
    # the server's certificate; empty: <state dir>/status_curve/server.key_secret, created
    # at first start
    server_key: str = ""


@dataclass(frozen=True)
class StatusConfig:
    """The status socket: ipc under the runtime directory, optional tcp, optional CURVE."""

    ipc: bool = True
    tcp: str = ""  # e.g. "tcp://127.0.0.1:5558"; empty disables
    allow_remote: bool = False  # permit a plain tcp address other than loopback
    # the largest bundle the push command takes (edge-agent rollout)
    max_push_bytes: int = field(default=16 << 20, metadata={"range": (1 << 16, 256 << 20)})
    curve: StatusCurveConfig = field(default_factory=StatusCurveConfig)


@dataclass(frozen=True)
class InferenceConfig:
    """The inference loop."""

    batch_max: int = field(default=64, metadata={"range": (1, 4096)})
    # after the first queued sample, wait this long for more to predict and publish them
    # as one batch (a few per wake-up cost far less CPU each than one; docs/protocol.md)
    batch_wait_ms: float = field(default=1.0, metadata={"range": (0.0, 100.0)})
    # recent samples kept to match late labels
    feedback_window: int = field(default=4096, metadata={"range": (0, 1_000_000)})
    # labelled predictions in the rolling accuracy
    accuracy_window: int = field(default=200, metadata={"range": (1, 1_000_000)})
    # SCHED_RR priority of the threads a sample waits for; 0: the fair scheduler
    # (edge_agent.service.scheduling)
    realtime_priority: int = field(default=0, metadata={"range": (0, 99)})


@dataclass(frozen=True)
class StateConfig:
    """The crash-safe state store."""

    dir: str = ""  # empty: $STATE_DIRECTORY or /var/lib/edge-agent
    runtime_dir: str = ""  # empty: $RUNTIME_DIRECTORY or /run/edge-agent
    checkpoint_interval_s: float = field(default=30.0, metadata={"range": (0.01, 86400)})
    keep: int = field(default=3, metadata={"range": (1, 100)})
    # labelled samples kept (the QCore buffer's source)
    labelled_capacity: int = field(default=4096, metadata={"range": (0, 10_000_000)})


@dataclass(frozen=True)
class BurstsConfig:
    """QAT bursts in a child process, when the energy policy allows them."""

    enabled: bool = False
    # how often the energy sources are read and the policy applied
    energy_poll_s: float = field(default=5.0, metadata={"range": (0.1, 3600)})
    switch_bits: bool = True  # run at the policy's bit-width (lower under energy pressure)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)


@dataclass(frozen=True)
class LogConfig:
    """Logging."""

    level: str = field(default="info", metadata={"choices": LOG_LEVELS})


@dataclass(frozen=True)
class AgentConfig:
    """The whole configuration."""

    model: ModelConfig = field(default_factory=ModelConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    serial: SerialConfig = field(default_factory=SerialConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    status: StatusConfig = field(default_factory=StatusConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    state: StateConfig = field(default_factory=StateConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    bursts: BurstsConfig = field(default_factory=BurstsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    log: LogConfig = field(default_factory=LogConfig)

    @property
    def state_dir(self) -> Path:
        """The resolved state directory."""
        return _resolve_dir(self.state.dir, "STATE_DIRECTORY", "/var/lib/edge-agent")

    @property
    def runtime_dir(self) -> Path:
        """The resolved runtime directory (status socket lives here)."""
        return _resolve_dir(self.state.runtime_dir, "RUNTIME_DIRECTORY", "/run/edge-agent")

    @property
    def status_ipc(self) -> str:
        """The ipc endpoint of the status socket."""
        return f"ipc://{self.runtime_dir / 'status.sock'}"

    def to_dict(self) -> dict[str, Any]:
        """A plain-data view (for the ``config`` status command), keyed as in the file."""
        return _plain(self)


def _plain(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.metadata.get("flatten"):
            out.update(_plain(value))
        elif dataclasses.is_dataclass(value):
            out[f.name] = _plain(value)
        else:
            out[f.name] = copy.deepcopy(value)
    return out


def _resolve_dir(value: str, env: str, default: str) -> Path:
    if value:
        return Path(value)
    from_env = os.environ.get(env, "").split(":")[0]
    return Path(from_env or default)


def _build(cls: type[Any], table: Any, where: str) -> Any:
    """Build dataclass ``cls`` from a TOML table, checking keys and types."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where or 'config'}: expected a table")
    hints = typing.get_type_hints(cls)
    flat = {  # nested sections whose keys sit in this table
        f.name: {g.name for g in dataclasses.fields(hints[f.name])}
        for f in dataclasses.fields(cls)
        if f.metadata.get("flatten")
    }
    names = {f.name for f in dataclasses.fields(cls) if f.name not in flat}
    names = names.union(*flat.values())
    for key in table:
        if key not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"{_join(where, key)}: unknown key (known: {known})")
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in flat:
            inner = {k: v for k, v in table.items() if k in flat[f.name]}
            values[f.name] = _build(hints[f.name], inner, where)
        elif f.name in table:
            values[f.name] = _convert(hints[f.name], table[f.name], _join(where, f.name))
    try:  # some sections validate their own values
        return cls(**values)
    except ValueError as exc:
        raise ConfigError(f"{where or 'config'}: {exc}") from None


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _convert(hint: Any, value: Any, where: str) -> Any:
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        # ``T | None``: TOML has no null, so ``false`` (or leaving the key out) means None
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is False and len(args) < len(typing.get_args(hint)) and bool not in args:
            return None
        return _convert(args[0], value, where)
    if dataclasses.is_dataclass(hint):
        return _build(typing.cast(type, hint), value, where)
    if typing.get_origin(hint) is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        (item,) = typing.get_args(hint)
        return [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(hint, type) and not isinstance(hint, types.GenericAlias):
        if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
            return value
        raise ConfigError(
            f"{where}: expected {hint.__name__}, got {type(value).__name__} {value!r}"
        )
    raise ConfigError(f"{where}: unsupported type {hint}")  # pragma: no cover - schema bug


def _need(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {msg}")


def _one_of(value: str, key: str, options: tuple[str, ...]) -> None:
    _need(value in options, key, f"must be one of {', '.join(options)}, not {value!r}")


def _in_range(value: float, key: str, lo: float, hi: float) -> None:
    _need(lo <= value <= hi, key, f"must be in {lo:g}..{hi:g}, not {value!r}")


def check_endpoint(ep: str, key: str, schemes: tuple[str, ...] = SCHEMES) -> None:
    """ZeroMQ's syntax, checked here so that ``run --check`` finds what start-up would."""
    problem = endpoint_problem(ep, schemes)
    _need(problem is None, key, problem or "")


def _endpoints(eps: list[str], key: str) -> None:
    for i, ep in enumerate(eps):
        check_endpoint(ep, f"{key}[{i}]")


def _check_fields(obj: Any, where: str) -> None:
    """The ranges, choices and lengths declared in the fields' metadata, section by section."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = where if f.metadata.get("flatten") else _join(where, f.name)
        if dataclasses.is_dataclass(value):
            _check_fields(value, key)
        elif value is not None:
            if "choices" in f.metadata:
                _one_of(value, key, tuple(f.metadata["choices"]))
            if "range" in f.metadata:
                _in_range(value, key, *f.metadata["range"])
            if "length" in f.metadata:
                _in_range(len(value), f"{key} (length)", *f.metadata["length"])


def _check(cfg: AgentConfig) -> None:
    """Range and consistency checks beyond types."""
    _check_fields(cfg, "")
    ing, ser, st = cfg.ingest, cfg.serial, cfg.status
    _need(
        bool(ing.endpoints) or ser.enabled,
        "ingest.endpoints",
        "needs at least one endpoint (or enable [serial])",
    )
    _endpoints(ing.endpoints, "ingest.endpoints")
    _need(bool(ing.topics), "ingest.topics", 'needs at least one topic ("" takes all)')
    for i, t in enumerate(ing.topics):
        _in_range(len(t.encode()), f"ingest.topics[{i}] (bytes)", 0, 255)
    if ing.curve.enabled:
        _need(bool(ing.curve.secret_key), "ingest.curve.secret_key", "required with CURVE")
        keys = "authorized_keys" if ing.mode == "bind" else "server_public_key"
        need = f"required with CURVE in {ing.mode} mode"
        _need(bool(getattr(ing.curve, keys)), f"ingest.curve.{keys}", need)
    _endpoints(cfg.output.endpoints, "output.endpoints")
    if st.tcp:
        check_endpoint(st.tcp, "status.tcp", ("tcp",))
        host = st.tcp[len("tcp://") :].rsplit(":", 1)[0]
        _need(
            st.allow_remote or host in ("127.0.0.1", "localhost", "[::1]"),
            "status.tcp",
            f"host {host!r} is not loopback; set status.allow_remote = true to expose it",
        )
    if st.curve.endpoint:
        check_endpoint(st.curve.endpoint, "status.curve.endpoint", ("tcp",))
        _need(
            bool(st.curve.authorized_keys),
            "status.curve.authorized_keys",
            "required with status.curve.endpoint (a directory of client .key files)",
        )
        _need(
            st.curve.endpoint != st.tcp,
            "status.curve.endpoint",
            "must differ from status.tcp (that one is plaintext)",
        )
    _need(
        st.ipc or bool(st.tcp) or bool(st.curve.endpoint),
        "status",
        "enable ipc or give a tcp or curve endpoint",
    )
    for key in ("normal_bits", "pressure_bits"):  # the energy policy would ignore others
        bits = getattr(cfg.energy, key)
        _need(bits in (None, *SUPPORTED_BITS), f"energy.{key}", f"not one of {SUPPORTED_BITS}")
    cal = cfg.calibration
    _need(
        cal.stats_min_samples <= cal.stats_window,
        "calibration.stats_min_samples",
        "must not exceed calibration.stats_window",
    )


def parse_config(text: str, source: str = "<config>") -> AgentConfig:
    """Parse and validate TOML text."""
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    try:
        cfg = typing.cast(AgentConfig, _build(AgentConfig, table, ""))
        _check(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return cfg


def load_config(path: str | os.PathLike[str]) -> AgentConfig:
    """Read and validate a TOML configuration file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    cfg = parse_config(text, str(path))
    base = Path(path).resolve().parent
    # relative paths are relative to the file, not the working directory (systemd's is /)
    for section, keys in FILE_PATHS.items():
        for names in ([*section.split("."), key] for key in keys):
            value: str = functools.reduce(getattr, names, typing.cast(Any, cfg))
            if value and not Path(value).is_absolute():
                cfg = _replaced(cfg, names, str(base / value))
    return cfg


FILE_PATHS = {  # the keys that name files, by section
    "model": ("bundle",),
    "state": ("dir", "runtime_dir"),
    "status.curve": ("authorized_keys", "server_key"),
    "ingest.curve": ("secret_key", "authorized_keys", "server_public_key"),
    "metrics": ("textfile",),
}


def _replaced(obj: Any, names: list[str], value: str) -> Any:
    """``obj`` with the field at path ``names`` set to ``value`` (frozen dataclasses)."""
    inner = value if len(names) == 1 else _replaced(getattr(obj, names[0]), names[1:], value)
    return dataclasses.replace(obj, **{names[0]: inner})


def local_config_text(run_dir: Path, bundle: Path, extra: str = "") -> str:
    """An agent.toml for a private agent: ipc sockets and state under ``run_dir`` (the demo
    and the benchmarks), with ``extra`` TOML tables appended."""
    return f"""
[model]
bundle = "{bundle}"
[ingest]
endpoints = ["ipc://{run_dir}/in.sock"]
[output]
endpoints = ["ipc://{run_dir}/out.sock"]
[state]
dir = "{run_dir}/state"
runtime_dir = "{run_dir}/run"
{extra}"""
