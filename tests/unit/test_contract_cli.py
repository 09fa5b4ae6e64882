"""Contract: every command line the operator renders is accepted by modelserve's own parsers.

The operator (render.py) writes modelserve's flags into the pod spec; modelserve (cli.py for the
server, fetchcli.py for the init container) parses them. A flag renamed on one side only would
crash every pod at start, which no rendering test sees: here the real parsers read what the real
renderer writes, for the examples and for generated specs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings

from modeldeploy import api, names, render
from modelserve import cli, fetchcli
from tests.unit.test_render import EXAMPLES, by_kind, load, md_from_spec, spec_strategy


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            return parser.parse_args(argv)
    except SystemExit:
        raise AssertionError(f"modelserve refuses the rendered command {argv}: {stderr.getvalue().strip()}") from None


def commands(md: api.ModelDeployment) -> list[tuple[str, list[str]]]:
    deployment = by_kind(render.render(md))["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    containers = [*pod.get("initContainers", []), *pod["containers"]]
    return [(c["name"], c.get("command", []) + c.get("args", [])) for c in containers]


def check(md: api.ModelDeployment) -> dict[str, argparse.Namespace]:
    parsed: dict[str, argparse.Namespace] = {}
    for name, argv in commands(md):
        assert argv[0] == "modelserve", f"container {name} runs {argv[0]}, not modelserve"
        if argv[1:2] == ["fetch"]:
            parsed[name] = parse(fetchcli.build_parser(), argv[2:])
        else:
            parsed[name] = parse(cli.build_parser(), argv[1:])
    return parsed


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_examples_render_commands_modelserve_accepts(path: Path) -> None:
    md = load(path)
    parsed = check(md)
    server = next(args for name, args in parsed.items() if hasattr(args, "model_repository"))
    assert server.max_batch_size == md.spec.runtime.max_batch_size
    assert server.http_port == names.HTTP_PORT and server.grpc_port == names.GRPC_PORT
    assert server.metrics_port == names.METRICS_PORT


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=spec_strategy)
def test_generated_specs_render_commands_modelserve_accepts(spec: dict[str, Any]) -> None:
    try:
        md = md_from_spec(spec)
    except api.SpecError:
        assume(False)
        return
    check(md)


def test_a_flag_modelserve_does_not_know_is_caught() -> None:
    md = md_from_spec({"model": {"name": "m", "storageUri": "s3://b/m"}, "runtime": {"args": ["--no-such-flag=1"]}})
    with pytest.raises(AssertionError, match="no-such-flag"):
        check(md)
