"""The workspace's local Prefect server is its own: a server of another workspace that answers on the same port
is never taken for it (two workspaces starting at once raced for the preferred port)."""

from __future__ import annotations

import json
import socket

import pytest

from paperline.ops.services import prefect_server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def servers(tmp_path):
    homes = [tmp_path / "a" / "prefect", tmp_path / "b" / "prefect"]
    yield homes
    for home in homes:
        prefect_server.stop_local_server(home)


def test_a_workspace_never_takes_another_workspaces_server_for_its_own(servers, monkeypatch):
    home_a, home_b = servers
    monkeypatch.setenv("PAPERLINE_PREFECT_PORT", str(_free_port()))
    url_a = prefect_server.ensure_local_server(home_a, announce=lambda line: None)
    assert prefect_server.serves_home(url_a, home_a) and not prefect_server.serves_home(url_a, home_b)

    # b's record pointing at a's server (a port that changed hands): not b's
    home_b.mkdir(parents=True)
    (home_b / "server.json").write_text(json.dumps({"pid": 1, "api_url": url_a}))
    assert prefect_server.running_server(home_b) is None

    # the race: b saw a's port free just before a's server bound it
    port_a = int(url_a.rsplit(":", 1)[1].split("/")[0])
    real_free_port = prefect_server._free_port
    monkeypatch.setattr(prefect_server, "_free_port", lambda preferred: port_a if preferred else real_free_port(0))
    url_b = prefect_server.ensure_local_server(home_b, announce=lambda line: None)
    assert url_b != url_a
    assert prefect_server.serves_home(url_b, home_b)
    assert prefect_server.running_server(home_b)["api_url"] == url_b
    assert prefect_server.running_server(home_a)["api_url"] == url_a
