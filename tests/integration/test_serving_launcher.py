"""The launcher that tests, the demo and the benchmarks start modelserve with: a picked port that
another process binds first is picked again, never a failed start (CI runs other servers too)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from modelserve import examples
from modelserve.launcher import ServingProcess


def test_a_picked_port_taken_before_the_server_binds_it_is_picked_again(tmp_path: Path) -> None:
    repo = examples.write_repository(tmp_path / "models", ["simple"])
    server = ServingProcess(repo)
    taken = server.http_port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        server.start()
        try:
            assert server.http_port != taken
            assert server.http_get("/v2/health/ready") == 200
        finally:
            server.stop()


def test_explicit_ports_are_never_changed(tmp_path: Path) -> None:
    repo = examples.write_repository(tmp_path / "models", ["simple"])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        server = ServingProcess(repo, http_port=taken)
        assert server.grpc_port and server.metrics_port, "the ports not given are still picked"
        with pytest.raises(RuntimeError, match="address already in use"):
            server.start()
        assert server.http_port == taken
