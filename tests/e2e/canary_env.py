"""Fixtures for tests/e2e/test_canary_e2e.py: a scratch namespace with the real operator, real
Prometheus and real modelserve tracks, and fast readers of the real API server.

The operator runs as `modeldeploy run` (its own process, its metrics on a port of its own);
Prometheus scrapes modelserve processes that stand for each ModelDeployment's stable and canary
pods, with the labels the pods' labels would give them. Pods themselves are run by the fake
kubelet (../shared/realk8s), which makes them Ready about a second after they are created.
"""

from __future__ import annotations

import contextlib
import functools
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

from modeldeploy import api
from modelserve import examples
from modelserve.launcher import ServingProcess, free_port
from tests.e2e import conftest as e2e
from tests.e2e.conftest import kubectl
from tests.integration.prometheus_env import running_prometheus, simple_load


def api_client() -> client.ApiClient:
    return config.new_client_from_config()


@dataclass
class Cluster:
    """Direct readers of the real API server (kubectl is too slow to poll at 0.1 s)."""

    api: client.ApiClient
    ns: str

    def md(self, name: str) -> dict[str, Any] | None:
        try:
            return client.CustomObjectsApi(self.api).get_namespaced_custom_object(
                api.GROUP, api.VERSION, self.ns, api.PLURAL, name
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def status(self, name: str) -> dict[str, Any]:
        return (self.md(name) or {}).get("status") or {}

    def deployment(self, name: str) -> dict[str, Any] | None:
        try:
            return self.api.sanitize_for_serialization(
                client.AppsV1Api(self.api).read_namespaced_deployment(name, self.ns)
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def pods(self, selector: str) -> list[dict[str, Any]]:
        found = client.CoreV1Api(self.api).list_namespaced_pod(self.ns, label_selector=selector)
        return [self.api.sanitize_for_serialization(p) for p in found.items]

    def events(self, name: str) -> dict[str, int]:
        """Event counts by reason for one ModelDeployment."""
        found = client.CoreV1Api(self.api).list_namespaced_event(
            self.ns, field_selector=f"involvedObject.name={name},involvedObject.kind={api.KIND}"
        )
        counts: dict[str, int] = {}
        for e in found.items:
            counts[e.reason] = counts.get(e.reason, 0) + (e.count or 1)
        return counts

    def revisions(self, name: str) -> list[dict[str, Any]]:
        found = client.AppsV1Api(self.api).list_namespaced_controller_revision(
            self.ns, label_selector=f"modeldeploy.io/deployment={name}"
        )
        return [self.api.sanitize_for_serialization(r) for r in found.items]

    def apply(self, name: str, **spec: Any) -> None:
        body = {"apiVersion": api.API_VERSION, "kind": api.KIND, "metadata": {"name": name},
                "spec": {"model": {"name": "simple", "storageUri": "s3://bucket/simple"}, **spec}}  # fmt: skip
        kubectl(
            "apply", "--server-side", "--field-manager=e2e-user", "-n", self.ns, "-f", "-", input=yaml.safe_dump(body)
        )


# The API server is polled directly (not through kubectl), so ten times a second is cheap.
wait_for = functools.partial(e2e.wait_for, period=0.1)


def condition(st: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions", []) if c["type"] == type_), {})


@contextlib.contextmanager
def scratch_namespace(prefix: str) -> Iterator[str]:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", check=False)


@dataclass
class Operator:
    process: subprocess.Popen[bytes]
    metrics_port: int

    def metric(self, name: str) -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        for line in text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


@contextlib.contextmanager
def running_operator(
    namespaces: list[str], *, resync: float, prometheus_url: str = "http://127.0.0.1:9"
) -> Iterator[Operator]:
    port = free_port()
    args = [sys.executable, "-m", "modeldeploy.cli", "run", f"--metrics-port={port}", "--liveness=",
            f"--resync-seconds={resync}", f"--prometheus-url={prometheus_url}"]  # fmt: skip
    for ns in namespaces:
        args += ["-n", ns]
    log = open(Path(tempfile.gettempdir()) / f"modeldeploy-e2e-{'-'.join(namespaces)}.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    operator = Operator(process, port)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                operator.metric("modeldeploy_reconcile_total")
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, "the operator did not start"
                time.sleep(0.2)
        yield operator
    finally:
        process.terminate()
        process.wait(30)
        log.close()


@contextlib.contextmanager
def tracks(workdir: Path, ns: str, canaries: dict[str, tuple[dict[str, str], bool]]) -> Iterator[str]:
    """One loaded stable modelserve (scraped as every deployment's stable track) and one canary
    process per deployment: name -> (its environment, whether it gets load). Yields Prometheus' URL."""
    repo = examples.write_repository(workdir / "models", ["simple"])
    stable = ServingProcess(repo).start()
    processes = {name: ServingProcess(repo, env=env).start() for name, (env, _) in canaries.items()}
    stop = threading.Event()
    loaders = [threading.Thread(target=simple_load, args=(stable.http_url, stop), daemon=True)]
    loaders += [
        threading.Thread(target=simple_load, args=(processes[name].http_url, stop), daemon=True)
        for name, (_, loaded) in canaries.items()
        if loaded
    ]
    targets = []
    for name, process in processes.items():
        labels = {"namespace": ns, "modeldeploy_deployment": name}
        targets += [(stable.metrics_port, {**labels, "modeldeploy_track": "stable"}),
                    (process.metrics_port, {**labels, "modeldeploy_track": "canary"})]  # fmt: skip
    try:
        with running_prometheus(workdir, targets) as (url, _):
            for loader in loaders:
                loader.start()
            yield url
    finally:
        stop.set()
        for loader in loaders:
            loader.join(5)
        stable.stop()
        for process in processes.values():
            process.stop()
