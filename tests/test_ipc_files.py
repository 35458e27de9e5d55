"""ipc:// endpoints never replace a user's file, and leave no socket file after a clean stop."""

from __future__ import annotations

import pytest
from test_service_support import AgentProcess, cleanup, make_bundle, short_dir, write_config


@pytest.mark.parametrize("name", ["in.sock", "out.sock"])
def test_an_endpoint_naming_a_regular_file_is_refused(name: str) -> None:
    d = short_dir()
    try:
        config = write_config(d, make_bundle(d / "m.eab"))
        precious = d / name
        precious.write_text("user data, not a socket\n")
        a = AgentProcess(config)
        try:
            rc = a.proc.wait(120)
            assert rc != 0
            assert f"{precious} exists and is not a socket" in a.log(), a.log()
        finally:
            a.stop()
        assert precious.read_text() == "user data, not a socket\n"
        assert not precious.is_socket()
    finally:
        cleanup(d)


def test_a_clean_stop_removes_the_socket_files() -> None:
    d = short_dir()
    try:
        config = write_config(d, make_bundle(d / "m.eab"))
        a = AgentProcess(config)
        try:
            a.wait_ready()
            files = [d / "in.sock", d / "out.sock", d / "run" / "status.sock"]
            assert all(f.is_socket() for f in files)
            assert a.terminate()[0] == 0
            assert [f.name for f in files if f.exists()] == []
            # a stale socket file (after kill -9) is replaced at the next start
            b = AgentProcess(config)
            b.wait_ready()
            b.kill()
            assert (d / "in.sock").is_socket()
            c = AgentProcess(config)
            c.wait_ready()
            assert c.terminate()[0] == 0
        finally:
            for p in [x for x in locals().values() if isinstance(x, AgentProcess)]:
                p.stop()
    finally:
        cleanup(d)
