"""CURVE key files for the remote status socket, in the certificate format ``zmq.auth``
writes (``NAME.key``: the public key; ``NAME.key_secret``: both keys, mode 0600).

The agent's server key pair lives in its state directory and is created at first start;
clients create theirs with ``edge-agent keys client``; an agent accepts the public keys of
the certificate files in its ``[status.curve] authorized_keys`` directory. Every problem is
a :class:`KeyFileError` naming the file.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import zmq
import zmq.auth

Z85_KEY_LEN = 40  # a 32-byte CURVE key in Z85
SERVER_DIR = "status_curve"  # under the state directory
SERVER_NAME = "server"
CLIENT_KEY_ENV = "EDGE_AGENT_CLIENT_KEY"


class KeyFileError(ValueError):
    """A key file that cannot be used; the message names it."""


def _valid_z85(key: bytes) -> bool:
    if len(key) != Z85_KEY_LEN:
        return False
    try:
        return len(zmq.utils.z85.decode(key)) == 32
    except (ValueError, KeyError, IndexError):  # z85 raises these for bad characters
        return False


def load_public(path: str | Path) -> bytes:
    """The public key of a certificate file (``.key`` or ``.key_secret``)."""
    try:
        public, _ = zmq.auth.load_certificate(path)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{path}: not a readable CURVE certificate ({exc})") from None
    if not _valid_z85(public):
        raise KeyFileError(f"{path}: the public key is not a 40-character Z85 CURVE key")
    return public


def load_secret(path: str | Path) -> tuple[bytes, bytes]:
    """(public, secret) of a ``.key_secret`` certificate file."""
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"{path}: not a readable CURVE certificate ({exc})") from None
    if secret is None:
        raise KeyFileError(f"{path}: holds no secret key (give the .key_secret file)")
    if not (_valid_z85(public) and _valid_z85(secret)):
        raise KeyFileError(f"{path}: its keys are not 40-character Z85 CURVE keys")
    return public, secret


def parse_public(text: str) -> bytes:
    """A public key given as its 40 Z85 characters or as a certificate file's path."""
    raw = text.strip().encode()
    if _valid_z85(raw) and not Path(text).exists():
        return raw
    return load_public(text)


def create_pair(directory: Path, name: str) -> tuple[Path, Path]:
    """Write ``name.key`` (0644) and ``name.key_secret`` (0600) into ``directory``,
    atomically: never a half-written or world-readable secret. Refuses to replace a pair."""
    directory.mkdir(parents=True, exist_ok=True)
    public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
    if public.exists() or secret.exists():
        raise KeyFileError(f"{secret} or {public} exists already; not replacing a key")
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=directory))  # mode 0700
    try:
        tmp_public, tmp_secret = zmq.auth.create_certificates(tmp, name)
        os.chmod(tmp_secret, 0o600)
        os.chmod(tmp_public, 0o644)
        for f in (tmp_public, tmp_secret):
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp_secret, secret)
        os.replace(tmp_public, public)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return public, secret


def server_pair(state_dir: Path) -> tuple[bytes, bytes, Path]:
    """The agent's (public, secret) key and the public file's path, created at first start
    in ``state_dir/status_curve`` (the directory 0700, the secret file 0600)."""
    directory = state_dir / SERVER_DIR
    secret_file = directory / f"{SERVER_NAME}.key_secret"
    if not secret_file.exists():
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            create_pair(directory, SERVER_NAME)
        except OSError as exc:
            raise KeyFileError(f"{directory}: cannot create the server key: {exc}") from None
    public, secret = load_secret(secret_file)
    if secret_file.stat().st_mode & 0o077:
        raise KeyFileError(f"{secret_file}: readable by others; chmod 600 it")
    return public, secret, directory / f"{SERVER_NAME}.key"


def load_allowed(directory: str | Path) -> tuple[set[bytes], list[str]]:
    """The public keys of the ``*.key`` files in ``directory``, and one message per file
    that could not be used (skipped, never fatal: one bad file must not lock out the rest)."""
    d = Path(directory)
    if not d.is_dir():
        raise KeyFileError(f"{d}: not a directory of client certificates")
    keys: set[bytes] = set()
    errors: list[str] = []
    for f in sorted(d.glob("*.key")):
        try:
            keys.add(load_public(f))
        except KeyFileError as exc:
            errors.append(str(exc))
    return keys, errors


def default_client_key() -> Path:
    """Where ``edge-agent keys client`` writes, and clients look, by default:
    ``$EDGE_AGENT_CLIENT_KEY`` or ``~/.config/edge-agent/client.key_secret``."""
    env = os.environ.get(CLIENT_KEY_ENV)
    if env:
        return Path(env)
    config_home = os.environ.get("XDG_CONFIG_HOME")
    try:  # a service user (systemd's DynamicUser=) may have no home directory
        base = Path(config_home) if config_home else Path.home() / ".config"
    except RuntimeError:
        raise KeyFileError(
            f"no home directory to find the client key in: give --client-key or ${CLIENT_KEY_ENV}"
        ) from None
    return base / "edge-agent" / "client.key_secret"


def load_client_key(path: str | Path | None = None) -> tuple[bytes, bytes]:
    """This client's (public, secret) key pair: ``path``, else :func:`default_client_key`."""
    p = Path(path) if path else default_client_key()
    if not p.exists():
        raise KeyFileError(
            f"no client key at {p}: create one with `edge-agent keys client` (or give "
            f"--client-key / ${CLIENT_KEY_ENV})"
        )
    return load_secret(p)
