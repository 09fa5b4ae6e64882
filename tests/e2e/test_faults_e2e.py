"""The operator behind a fault-injecting proxy in front of the real API server.

The proxy (tests/faultproxy.py) holds the kubeconfig's TLS credentials and answers 20 % of the
operator's requests with 500, 409 or 429 (Retry-After: 1); half of the faulted writes are
forwarded first, so the write happens and the operator hears an error. 50 ModelDeployments
must converge (children, status with observedGeneration, Ready once the fake kubelet's pods
are) within 60 s at p90 and 120 s at worst, with no duplicate children, no spec written by the
operator, and the operator still running.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import kubectl, kubectl_json, scratch_namespace, start_operator, stop
from tests.faultproxy import FaultProxy, plain_kubeconfig, tls_from_kubeconfig

COUNT = 50
USER_MANAGER = "e2e-user"
pytestmark = pytest.mark.timeout(240)


def current_kubeconfig() -> Path:
    configured = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    return Path(configured) if configured else Path.home() / ".kube" / "config"


@pytest.fixture
def faulty_namespace(crd_installed: None, pods_become_ready: None) -> Iterator[str]:
    name = scratch_namespace("md-faults")
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def converged(md: dict[str, Any], children: set[tuple[str, str]]) -> bool:
    name, status = md["metadata"]["name"], md.get("status") or {}
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", []))
    return (
        status.get("observedGeneration") == md["metadata"]["generation"]
        and ready
        and ("Deployment", name) in children
        and ("Service", name) in children
    )


def test_fifty_model_deployments_converge_with_a_fifth_of_the_calls_failing(
    faulty_namespace: str, tmp_path: Path
) -> None:
    ns = faulty_namespace
    server, tls = tls_from_kubeconfig(current_kubeconfig())
    with FaultProxy(server, ssl_context=tls, fault_rate=0.2, seed=2024) as proxy:
        kubeconfig = plain_kubeconfig(proxy.url, tmp_path / "kubeconfig")
        log = tmp_path / "operator.log"
        process = start_operator(
            "-n", ns, "--metrics-port=0", "--liveness=", "--resync-seconds=60",
            env={"KUBECONFIG": str(kubeconfig)}, log=log,
        )  # fmt: skip
        try:
            time.sleep(2)  # the operator lists and watches (through the faults) before the burst
            bodies = [
                {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": f"md-{i}"},
                 "spec": {"model": {"name": "m", "storageUri": "s3://bucket/m"}, "replicas": 1}}
                for i in range(COUNT)
            ]  # fmt: skip
            started = time.monotonic()
            kubectl("apply", "--server-side", f"--field-manager={USER_MANAGER}", "-n", ns, "-f", "-",
                    input=yaml.safe_dump_all(bodies))  # fmt: skip
            done: dict[str, float] = {}
            while len(done) < COUNT and time.monotonic() - started < 125:
                items = kubectl_json("get", "md,deployment,service", "-n", ns)["items"]
                children = {(o["kind"], o["metadata"]["name"]) for o in items if o["kind"] != "ModelDeployment"}
                for md in items:
                    name = md["metadata"]["name"]
                    if md["kind"] == "ModelDeployment" and name not in done and converged(md, children):
                        done[name] = time.monotonic() - started
                time.sleep(1)
            assert process.poll() is None, "the operator ended:\n" + log.read_text()[-3000:]
        finally:
            stop(process)
    times = sorted(done.values())
    summary = f"{len(times)}/{COUNT} converged; times {[round(t, 1) for t in times]}; proxy {proxy.stats()}"
    print(summary)
    assert len(times) == COUNT, summary
    assert statistics.quantiles(times, n=10)[-1] <= 60, summary
    assert times[-1] <= 120, summary
    assert proxy.counts["faults"] >= 50 and proxy.counts["500 after write"] + proxy.counts["409 after write"] > 0

    # No duplicates: one stable Deployment, one Service and one ControllerRevision per ModelDeployment.
    for kind in ("deployment", "service", "controllerrevision"):
        names = [o["metadata"]["name"] for o in kubectl_json("get", kind, "-n", ns)["items"]]
        assert len(names) == COUNT, (kind, sorted(names))
    # No spec written by the operator: every manager of spec fields is the user's.
    for md in kubectl_json("get", "md", "-n", ns, "--show-managed-fields")["items"]:
        for entry in md["metadata"]["managedFields"]:
            if entry["manager"] != USER_MANAGER:
                assert "f:spec" not in json.dumps(entry.get("fieldsV1", {})), (md["metadata"]["name"], entry)
