"""The remote status socket with CURVE, against a real agent subprocess and real tcp
sockets: an allowed client works (library, ``edge-agent status`` and ``collect``), an
unknown key and a plaintext client are refused and counted, the server key is created
0600 at first start, a bad allow-list file is skipped and counted, a client allowed
later works after a reload, and bad key configuration fails clearly."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from test_service_support import (
    AgentProcess,
    changed_bundle,
    cleanup,
    make_bundle,
    short_dir,
    write_config,
)

from edge_agent.bundle_io import load_bundle, to_bytes
from edge_agent.client import AgentAddress, ClientError, StatusClient
from edge_agent.curve_keys import (
    KeyFileError,
    create_pair,
    default_client_key,
    load_public,
    load_secret,
)
from edge_agent.fleet.collect import collect
from edge_agent.service.config import ConfigError, parse_config

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Remote:
    """An agent with [status.curve] on a loopback port, and a client allowed there."""

    def __init__(self, d: Path, bundle: Path) -> None:
        self.dir = d
        self.allowed = d / "clients"
        self.allowed.mkdir()
        self.client_public, self.client_secret = create_pair(d / "me", "client")
        (self.allowed / "client.key").write_bytes(self.client_public.read_bytes())
        (self.allowed / "broken.key").write_text("not a certificate\n")
        self.endpoint = f"tcp://127.0.0.1:{_free_port()}"
        curve = (
            f'[status.curve]\nendpoint = "{self.endpoint}"\nauthorized_keys = "{self.allowed}"\n'
        )
        self.bundle = bundle
        self.agent = AgentProcess(write_config(d, bundle, extra=curve))
        self.agent.wait_ready()
        self.server_public_file = d / "state" / "status_curve" / "server.key"
        self.server_key = load_public(self.server_public_file)

    def client(self, secret: Path | None = None, timeout: float = 5.0) -> StatusClient:
        return StatusClient(
            self.endpoint, timeout, self.server_key, load_secret(secret or self.client_secret)
        )

    def refused(self) -> dict[str, int]:
        return dict(self.agent.status()["control"]["refused"])


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Remote]:
    bundle = make_bundle(tmp_path_factory.mktemp("bundle") / "m.eab")
    d = short_dir()
    r = None
    try:
        r = Remote(d, bundle)
        yield r
    finally:
        if r is not None:
            r.agent.stop()
        cleanup(d)


def test_an_allowed_client_works(remote: Remote) -> None:
    with remote.client() as c:
        st = c.request("status")
    assert st["endpoints"]["status_curve"] == [remote.endpoint]
    assert st["threads"]["RemoteStatusServer"] is True
    secret = remote.dir / "state" / "status_curve" / "server.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(secret.parent.stat().st_mode) == 0o700
    # the CLI, with the key as a file and as its Z85 text
    for key in (str(remote.server_public_file), remote.server_key.decode()):
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "edge_agent.cli",
                "status",
                "--endpoint",
                remote.endpoint,
                "--server-key",
                key,
                "--client-key",
                str(remote.client_secret),
                "--command",
                "ping",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0 and '"pong": true' in r.stdout, r.stderr
    got = collect(
        [AgentAddress.parse(f"{remote.endpoint} {remote.server_public_file}")],
        10,
        load_secret(remote.client_secret),
    )
    assert not got.errors and len(got.parts) == 1


def test_collect_command_line_over_curve(remote: Remote, tmp_path: Path) -> None:
    agents = tmp_path / "agents.txt"
    agents.write_text(f"# the fleet\n{remote.endpoint}  {remote.server_public_file}  # b7\n")

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                *(sys.executable, "-m", "edge_agent.cli", "collect"),
                *("--agents-file", str(agents), "--out", str(tmp_path / "f.npz")),
                *("--timeout", "5", *extra),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "EDGE_AGENT_CLIENT_KEY": str(tmp_path / "none.key_secret")},
        )

    r = run("--client-key", str(remote.client_secret))
    assert r.returncode == 0 and "from 1 of 1 agents" in r.stdout, r.stderr
    r = run()  # no client key where the default points
    assert r.returncode == 2 and "edge-agent keys client" in r.stderr, r.stderr
    agents.write_text(f"{remote.endpoint} not-a-key\n")
    r = run("--client-key", str(remote.client_secret))
    assert r.returncode == 2 and "agents.txt:1" in r.stderr and "Traceback" not in r.stderr


def test_a_bundle_is_pushed_and_rolled_back_over_curve(remote: Remote) -> None:
    original = load_bundle(remote.bundle)
    new = changed_bundle(original, "bias")
    with remote.client(timeout=60) as c:
        assert c.request("push", to_bytes(new))["model_version"] == new.model_version
        assert c.request("status")["model"]["version"] == new.model_version
        assert c.request("rollback")["model_version"] == original.model_version


def test_keys_command_line(remote: Remote, tmp_path: Path) -> None:
    def keys(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "edge_agent.cli", "keys", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "EDGE_AGENT_CLIENT_KEY": str(tmp_path / "cli.key_secret")},
        )

    r = keys("client")
    assert r.returncode == 0, r.stderr
    public = tmp_path / "cli.key"
    assert load_public(public).decode() in r.stdout
    assert keys("client").returncode == 2  # never replaces a key
    config = str(remote.dir / "agent.toml")
    r = keys("allow", str(public), "--config", config)
    assert r.returncode == 0 and (remote.allowed / "cli.key").exists(), r.stderr
    (tmp_path / "bad.key").write_text("junk")
    r = keys("allow", str(tmp_path / "bad.key"), "--config", config)
    assert r.returncode == 2 and "not a readable CURVE certificate" in r.stderr
    assert not (remote.allowed / "bad.key").exists()
    r = keys("server", "--config", config)
    assert r.returncode == 0 and remote.server_key.decode() in r.stdout, r.stderr


def test_a_bad_allow_list_file_is_skipped_and_counted(remote: Remote) -> None:
    assert remote.refused()["bad_key_file"] >= 1
    assert "broken.key" in remote.agent.log() and "Traceback" not in remote.agent.log()


def test_an_unknown_key_is_refused_and_counted(remote: Remote) -> None:
    before = remote.refused()["unknown_key"]
    _, stranger = create_pair(remote.dir / "stranger", "stranger")
    with remote.client(stranger, timeout=1.5) as c, pytest.raises(ClientError, match="CURVE"):
        c.request("ping")
    assert remote.agent.wait_for(
        lambda s: s["control"]["refused"]["unknown_key"] > before, timeout=10
    )


def test_a_plaintext_client_is_refused_and_counted(remote: Remote) -> None:
    before = remote.refused()["handshake"]
    with StatusClient(remote.endpoint, 1.5) as c, pytest.raises(ClientError, match="no reply"):
        c.request("ping")
    assert remote.agent.wait_for(lambda s: s["control"]["refused"]["handshake"] > before, 10)


def test_a_client_allowed_later_works_after_a_reload(remote: Remote) -> None:
    _, later = create_pair(remote.dir / "later", "later")
    (remote.allowed / "later.key").write_bytes(later.with_suffix(".key").read_bytes())
    with remote.client(later, timeout=1.5) as c, pytest.raises(ClientError):
        c.request("ping")  # not yet: the allow-list is read at start and on reload
    remote.agent.request("reload", timeout=30)
    with remote.client(later) as c:
        assert c.request("ping")["pong"] is True


def test_agents_file_lines_and_keys() -> None:
    key = zmq.curve_keypair()[0].decode()
    a = AgentAddress.parse(f"tcp://board-7:5559 {key}")
    assert a.endpoint == "tcp://board-7:5559" and a.server_key == key.encode()
    assert AgentAddress.parse("ipc:///run/edge-agent/status.sock").server_key is None
    with pytest.raises(ValueError, match="tcp:// endpoint only"):
        AgentAddress.parse(f"ipc:///x.sock {key}")
    with pytest.raises(ValueError, match="not a readable CURVE certificate"):
        AgentAddress.parse("tcp://b:1 /nonexistent.key")
    with pytest.raises(ClientError, match="needs this client's key pair"):
        StatusClient("tcp://127.0.0.1:1", 1, key.encode(), None)


def test_key_files(tmp_path: Path) -> None:
    public, secret = create_pair(tmp_path, "c")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert load_secret(secret)[0] == load_public(public)
    with pytest.raises(KeyFileError, match="exists already"):
        create_pair(tmp_path, "c")
    with pytest.raises(KeyFileError, match="holds no secret key"):
        load_secret(public)
    (tmp_path / "junk.key").write_text('metadata\ncurve\n    public-key = "short"\n')
    with pytest.raises(KeyFileError, match="not a 40-character Z85"):
        load_public(tmp_path / "junk.key")


def test_curve_config_rules() -> None:
    with pytest.raises(ConfigError, match=r"status\.curve\.authorized_keys: required"):
        parse_config('[status.curve]\nendpoint = "tcp://0.0.0.0:5559"\n')
    with pytest.raises(ConfigError, match="is not a tcp:// endpoint"):
        parse_config('[status.curve]\nendpoint = "ipc:///x"\nauthorized_keys = "k"\n')
    with pytest.raises(ConfigError, match="not loopback"):
        parse_config('[status]\ntcp = "tcp://0.0.0.0:5558"\n')
    cfg = parse_config(
        '[status.curve]\nendpoint = "tcp://0.0.0.0:5559"\nauthorized_keys = "/etc/k"\n'
    )
    assert cfg.status.curve.endpoint == "tcp://0.0.0.0:5559"  # no allow_remote needed
    with pytest.raises(ConfigError, match="max_push_bytes"):
        parse_config("[status]\nmax_push_bytes = 10\n")


def test_a_bad_server_key_fails_start_up_clearly(tmp_path: Path) -> None:
    d = short_dir()
    try:
        bundle = make_bundle(tmp_path / "m.eab")
        (d / "clients").mkdir()
        (d / "server.key_secret").write_text("garbage\n")
        curve = (
            f'[status.curve]\nendpoint = "tcp://127.0.0.1:{_free_port()}"\n'
            f'authorized_keys = "{d}/clients"\nserver_key = "{d}/server.key_secret"\n'
        )
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "edge_agent.service",
                "--config",
                str(write_config(d, bundle, extra=curve)),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ},
        )
        assert r.returncode == 78, r.stderr
        assert "status.curve" in r.stderr and "server.key_secret" in r.stderr
        assert "Traceback" not in r.stderr
    finally:
        cleanup(d)


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv"
)
def test_the_command_line_works_for_a_user_without_a_home() -> None:
    """The unit runs the agent as a DynamicUser= with no passwd entry and no HOME: building
    the command line must not look the home directory up (it raised at every start)."""
    env = {k: v for k, v in os.environ.items() if k not in ("HOME", "XDG_CONFIG_HOME")}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        ["setpriv", "--reuid=61999", "--regid=61999", "--clear-groups",
         sys.executable, "-m", "edge_agent.cli", "keys", "client", "--help"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "client.key_secret" in done.stdout


def test_the_default_client_key_without_a_home_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.delenv("EDGE_AGENT_CLIENT_KEY", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    with pytest.raises(KeyFileError, match="no home directory"):
        default_client_key()
