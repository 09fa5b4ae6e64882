"""The shared names have one home (modelserve.contract) and the files that cannot import it agree.

modelserve's own defaults and the operator's rendering both read the contract; the Helm chart's
default image and the serving image's exposed ports are written in YAML and a Dockerfile, so
they are compared here: changing one side alone fails this test.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from modeldeploy import api, names, render
from modelserve import contract
from modelserve.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def test_modelserve_defaults_are_the_contract() -> None:
    args = build_parser().parse_args(["--model-repository", "/models"])
    assert (args.http_port, args.grpc_port, args.metrics_port) == (
        contract.HTTP_PORT, contract.GRPC_PORT, contract.METRICS_PORT,
    )  # fmt: skip
    assert args.http_max_body_bytes == contract.DEFAULT_MAX_BODY_BYTES
    assert api.RuntimeSpec().max_queue_size == contract.DEFAULT_MAX_QUEUE_SIZE


def test_chart_and_image_agree_with_the_contract() -> None:
    values = yaml.safe_load((ROOT / "charts/modeldeploy/values.yaml").read_text())
    assert values["operator"]["servingImage"] == contract.DEFAULT_SERVING_IMAGE == render.RenderSettings().serving_image
    exposed = re.search(r"^EXPOSE (.+)$", (ROOT / "serving-image/Dockerfile").read_text(), re.MULTILINE)
    assert exposed is not None
    assert [int(p) for p in exposed[1].split()] == list(names.PORTS.values())


def test_the_contract_module_stays_dependency_free() -> None:
    source = (ROOT / "serving-image/modelserve/contract.py").read_text()
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert imports == ["from __future__ import annotations", "from typing import Final"]
