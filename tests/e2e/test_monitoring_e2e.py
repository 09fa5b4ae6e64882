"""Prometheus wiring on the real control plane: the scrape job of
examples/monitoring/prometheus-scrape-config.yaml (only its API server address and credentials
swapped in) and a job generated from the operator's PodMonitor the way the Prometheus Operator
generates one, in a real Prometheus discovering pods through the real API server.

The fake kubelet (started by .ci/run, or by hand locally) gives pods loopback IPs; a real modelserve
is started on each pod's IP, so Prometheus finds it through the pod's labels alone. Then the
canary analysis queries (modeldeploy.prometheus) return each track's series, the operator judges a
canary from this Prometheus and promotes it, and the PodMonitor is pruned when monitoring is
switched off.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from modeldeploy import names
from modelserve import examples
from modelserve.launcher import ServingProcess
from tests.e2e.canary_env import Cluster, api_client, running_operator, scratch_namespace, wait_for
from tests.e2e.conftest import kubectl
from tests.integration.monitoring_env import SCRAPE_CONFIG, Prometheus, analysis_queries, running_prometheus
from tests.integration.prometheus_env import PROMETHEUS, simple_load

pytestmark = [
    pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is installed by `make install`"),
    pytest.mark.usefixtures("pods_become_ready"),  # pods on loopback IPs: the fake kubelet of shared/realk8s
]
NAME = "watched"
POD_MONITOR_CRD = "podmonitors.monitoring.coreos.com"
ROLLOUT = {"strategy": "Canary", "steps": [50], "interval": "6s", "minRequestCount": 5, "failureLimit": 2,
           "inconclusiveLimit": 6, "maxErrorRate": 0.05, "maxLatencyP99Ms": 2000}  # fmt: skip
MONITORING = {"podMonitor": True, "interval": "1s"}
V2 = {"name": "simple", "storageUri": "s3://bucket/simple", "version": 2}


@dataclass
class PodServer(ServingProcess):
    """modelserve bound to a pod's loopback IP on the pod's own ports, as in the pod."""

    host: str = "127.0.0.1"

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"


@dataclass
class Pods:
    """One modelserve per Ready pod of the namespace, under load."""

    repo: Path
    servers: dict[str, PodServer] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    loaders: list[threading.Thread] = field(default_factory=list)

    def serve(self, cluster: Cluster) -> None:
        for pod in cluster.pods(f"{names.LABEL_DEPLOYMENT}={NAME}"):
            name, ip = pod["metadata"]["name"], pod.get("status", {}).get("podIP")
            if ip and name not in self.servers and not pod["metadata"].get("deletionTimestamp"):
                server = PodServer(self.repo, args=[f"--http-address={ip}", f"--grpc-address={ip}"], host=ip,
                                   http_port=names.HTTP_PORT, grpc_port=names.GRPC_PORT,
                                   metrics_port=names.METRICS_PORT, log_path=self.repo.parent / f"{name}.log")  # fmt: skip
                self.servers[name] = server.start()
                loader = threading.Thread(target=simple_load, args=(server.http_url, self.stop), daemon=True)
                loader.start()
                self.loaders.append(loader)

    def close(self) -> None:
        self.stop.set()
        for loader in self.loaders:
            loader.join(5)
        for server in self.servers.values():
            server.stop()


def discovery(workdir: Path, ns: str) -> dict[str, Any]:
    """kubernetes_sd_configs for the current kubeconfig's API server and credentials."""
    raw = yaml.safe_load(kubectl("config", "view", "--raw", "--minify", "-o", "yaml").stdout)
    cluster, user = raw["clusters"][0]["cluster"], raw["users"][0]["user"]
    sd: dict[str, Any] = {"role": "pod", "api_server": cluster["server"], "namespaces": {"names": [ns]}}
    tls: dict[str, Any] = {}

    def file(key: str, data_key: str, path_key: str, where: dict[str, Any]) -> None:
        if data_key in where:
            target = workdir / key
            target.write_bytes(base64.b64decode(where[data_key]))
            tls[key] = str(target)
        elif path_key in where:
            tls[key] = where[path_key]

    file("ca_file", "certificate-authority-data", "certificate-authority", cluster)
    file("cert_file", "client-certificate-data", "client-certificate", user)
    file("key_file", "client-key-data", "client-key", user)
    if cluster.get("insecure-skip-tls-verify"):
        tls["insecure_skip_verify"] = True
    if tls:
        sd["tls_config"] = tls
    if user.get("token"):
        (workdir / "token").write_text(user["token"])
        sd["authorization"] = {"credentials_file": str(workdir / "token")}
    return sd


def kubernetes_sd_supported() -> bool:
    """Debian's prometheus package is built without Kubernetes discovery; upstream builds have it."""
    promtool = shutil.which("promtool")
    if promtool is None:
        return False
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as config:
        config.write(
            yaml.safe_dump({"scrape_configs": [{"job_name": "x", "kubernetes_sd_configs": [{"role": "pod"}]}]})
        )
        config.flush()
        return subprocess.run([promtool, "check", "config", config.name], capture_output=True).returncode == 0


def pod_targets(cluster: Cluster) -> list[dict[str, Any]]:
    """The targets and __meta_kubernetes_pod_* labels Prometheus' Kubernetes discovery (role pod) gives
    for the namespace's pods, one per container port, read from the real API server."""
    groups = []
    for pod in cluster.pods(""):
        meta, status = pod["metadata"], pod.get("status") or {}
        ip = status.get("podIP")
        if not ip:
            continue
        ready = next((c["status"] for c in status.get("conditions") or [] if c["type"] == "Ready"), "unknown")
        labels = {"__meta_kubernetes_namespace": meta["namespace"], "__meta_kubernetes_pod_name": meta["name"],
                  "__meta_kubernetes_pod_ip": ip, "__meta_kubernetes_pod_uid": meta["uid"],
                  "__meta_kubernetes_pod_phase": status.get("phase", ""),
                  "__meta_kubernetes_pod_ready": ready.lower(),
                  "__meta_kubernetes_pod_node_name": pod["spec"].get("nodeName", "")}  # fmt: skip
        for kind, values in (("label", meta.get("labels") or {}), ("annotation", meta.get("annotations") or {})):
            for key, value in values.items():
                labels[f"__meta_kubernetes_pod_{kind}_{_sanitize(key)}"] = value
                labels[f"__meta_kubernetes_pod_{kind}present_{_sanitize(key)}"] = "true"
        for container in pod["spec"]["containers"]:
            for port in container.get("ports") or []:
                groups.append({"targets": [f"{ip}:{port['containerPort']}"], "labels": {
                    **labels, "__meta_kubernetes_pod_container_name": container["name"],
                    "__meta_kubernetes_pod_container_port_name": port.get("name", ""),
                    "__meta_kubernetes_pod_container_port_number": str(port["containerPort"]),
                    "__meta_kubernetes_pod_container_port_protocol": port.get("protocol", "TCP")}})  # fmt: skip
    return groups


@contextlib.contextmanager
def pod_discovery(cluster: Cluster, workdir: Path, sd: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Prometheus' kubernetes_sd_configs entry when this Prometheus has Kubernetes discovery; else a
    file_sd_configs entry kept current from the real API server with the same __meta labels."""
    if kubernetes_sd_supported():
        yield {"kubernetes_sd_configs": [sd]}
        return
    path = workdir / "pods.json"
    path.write_text("[]")
    stop = threading.Event()

    def refresh() -> None:
        while not stop.wait(0.5):
            with contextlib.suppress(Exception):
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(pod_targets(cluster)))
                tmp.replace(path)

    thread = threading.Thread(target=refresh, daemon=True)
    thread.start()
    try:
        yield {"file_sd_configs": [{"files": [str(path)], "refresh_interval": "1s"}]}
    finally:
        stop.set()
        thread.join(5)


def scrape_job_from_file(discovered: dict[str, Any]) -> dict[str, Any]:
    """The shipped job, its discovery swapped for this API server: relabel rules untouched."""
    (job,) = yaml.safe_load(SCRAPE_CONFIG.read_text())["scrape_configs"]
    job = {k: v for k, v in job.items() if k != "kubernetes_sd_configs"}
    return {**job, "scrape_interval": "1s", **discovered}


def _sanitize(label: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in label)


def pod_monitor_job(pod_monitor: dict[str, Any], discovered: dict[str, Any]) -> dict[str, Any]:
    """The scrape job the Prometheus Operator generates for a PodMonitor's first endpoint
    (selector and port filtering, its namespace/container/pod/job labels, then the relabelings)."""
    spec, meta = pod_monitor["spec"], pod_monitor["metadata"]
    (endpoint,) = spec["podMetricsEndpoints"]
    rules: list[dict[str, Any]] = [
        {"source_labels": [f"__meta_kubernetes_pod_label_{_sanitize(k)}",
                           f"__meta_kubernetes_pod_labelpresent_{_sanitize(k)}"],
         "regex": f"({v});true", "action": "keep"}
        for k, v in spec["selector"]["matchLabels"].items()
    ]  # fmt: skip
    rules += [
        {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": endpoint["port"], "action": "keep"},
        {"source_labels": ["__meta_kubernetes_pod_phase"], "regex": "(Failed|Succeeded)", "action": "drop"},
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        {"target_label": "job", "replacement": f"{meta['namespace']}/{meta['name']}"},
        {"target_label": "endpoint", "replacement": endpoint["port"]},
    ]
    snake = {"sourceLabels": "source_labels", "targetLabel": "target_label"}
    rules += [{snake.get(k, k): v for k, v in r.items()} for r in endpoint["relabelings"]]
    if "kubernetes_sd_configs" in discovered:
        (sd,) = discovered["kubernetes_sd_configs"]
        discovered = {
            "kubernetes_sd_configs": [{**sd, "namespaces": {"names": spec["namespaceSelector"]["matchNames"]}}]
        }
    return {"job_name": f"podMonitor/{meta['namespace']}/{meta['name']}/0", "honor_labels": False,
            "scrape_interval": endpoint["interval"], "metrics_path": endpoint["path"],
            **discovered, "relabel_configs": rules}  # fmt: skip


@contextlib.contextmanager
def pod_monitor_crd() -> Iterator[None]:
    """The PodMonitor CRD, when the cluster has none (never replacing a real Prometheus Operator's)."""
    if kubectl("get", "crd", POD_MONITOR_CRD, check=False).returncode == 0:
        yield
        return
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": POD_MONITOR_CRD, "labels": {"e2e.modeldeploy.io/stand-in": "true"}},
           "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
                    "names": {"kind": "PodMonitor", "listKind": "PodMonitorList", "plural": "podmonitors",
                              "singular": "podmonitor"},
                    "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                        "type": "object", "properties": {"spec": {"type": "object",
                                                                  "x-kubernetes-preserve-unknown-fields": True}}}}}]}}  # fmt: skip
    kubectl("apply", "-f", "-", input=yaml.safe_dump(crd))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{POD_MONITOR_CRD}")
    try:
        yield
    finally:
        kubectl("delete", "crd", POD_MONITOR_CRD, "--wait=false", check=False)


def pod_monitor(cluster: Cluster) -> dict[str, Any] | None:
    found = kubectl("get", "podmonitor", NAME, "-n", cluster.ns, "-o", "yaml", check=False)
    return yaml.safe_load(found.stdout) if found.returncode == 0 else None


def by_track(prom: Prometheus, expr: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for sample in prom.query(expr):
        out.setdefault(sample["metric"].get("modeldeploy_track", ""), set()).add(sample["metric"].get("pod", ""))
    return out


def test_scrape_job_and_pod_monitor_feed_the_canary_analysis(
    crd_installed: None, pods_become_ready: None, tmp_path: Path
) -> None:
    repo = examples.write_repository(tmp_path / "models", ["simple"])
    pods = Pods(repo)
    with pod_monitor_crd(), scratch_namespace("md-monitoring-e2e") as ns:
        cluster = Cluster(api_client(), ns)
        try:
            with (
                pod_discovery(cluster, tmp_path, discovery(tmp_path, ns)) as discovered,
                running_prometheus(tmp_path / "prometheus", [scrape_job_from_file(discovered)]) as prom,
                running_operator([ns], resync=3, prometheus_url=prom.url) as operator,
            ):
                cluster.apply(NAME, replicas=2, rollout=ROLLOUT, monitoring=MONITORING)
                wait_for(lambda: cluster.status(NAME).get("readyReplicas") == 2, what="v1 ready", timeout=60)
                pm = wait_for(lambda: pod_monitor(cluster), what="the PodMonitor", timeout=30)
                assert pm["spec"]["selector"] == {"matchLabels": {names.LABEL_DEPLOYMENT: NAME}}
                pods.serve(cluster)
                stable_pods = set(pods.servers)

                file_job = f'up{{job="modeldeploy-pods",namespace="{ns}",modeldeploy_deployment="{NAME}"}} == 1'
                wait_for(lambda: by_track(prom, file_job) == {"stable": stable_pods}, what="stable pods scraped",
                         timeout=30)  # fmt: skip

                cluster.apply(NAME, replicas=2, rollout=ROLLOUT, monitoring=MONITORING, model=V2)
                wait_for(lambda: cluster.pods(f"{names.LABEL_TRACK}=canary") and all(
                    p["status"].get("podIP") for p in cluster.pods(f"{names.LABEL_TRACK}=canary")),
                    what="a canary pod with an IP", timeout=60)  # fmt: skip
                pods.serve(cluster)
                canary_pods = {p["metadata"]["name"] for p in cluster.pods(f"{names.LABEL_TRACK}=canary")}
                wait_for(lambda: by_track(prom, file_job).get("canary") == canary_pods,
                         what="the canary pod scraped through its labels", timeout=30)  # fmt: skip

                # The canary analysis' own queries see each track, from the pods' labels alone.
                for track in ("stable", "canary"):
                    for check, query in analysis_queries(ns, NAME, track).items():
                        (sample,) = wait_for(lambda q=query: prom.query(q), what=f"{track} {check}", timeout=20)
                        assert math.isfinite(float(sample["value"][1])), f"{track} {check}: {sample}"
                revision = cluster.status(NAME)["revision"]
                canary_series = prom.query(f'nv_inference_count{{namespace="{ns}",modeldeploy_track="canary"}}')
                assert {s["metric"]["modeldeploy_revision"] for s in canary_series} == {revision}

                # The operator judges the canary from this Prometheus and promotes it.
                wait_for(lambda: cluster.status(NAME).get("phase") == "Succeeded", what="promotion", timeout=90)
                assert operator.metric('modeldeploy_canary_analyses_total{outcome="Pass"}') >= 1

                # The PodMonitor as the Prometheus Operator would turn it into a scrape job.
                pm_prom_dir = tmp_path / "prometheus-podmonitor"
                selector = f"{names.LABEL_DEPLOYMENT}={NAME}"

                def promoted_pods() -> set[str] | None:
                    found = [p for p in cluster.pods(selector) if not p["metadata"].get("deletionTimestamp")]
                    if len(found) != 2 or not all(p["status"].get("podIP") for p in found):
                        return None
                    return {p["metadata"]["name"] for p in found}

                live = wait_for(promoted_pods, what="the promoted stable pods", timeout=30)
                pods.serve(cluster)
                with running_prometheus(pm_prom_dir, [pod_monitor_job(pm, discovered)]) as pm_prom:
                    pm_job = f'up{{job="{ns}/{NAME}",namespace="{ns}",modeldeploy_deployment="{NAME}"}} == 1'
                    wait_for(lambda: by_track(pm_prom, pm_job) == {"stable": live}, what="the PodMonitor's targets",
                             timeout=30)  # fmt: skip
                    for query in analysis_queries(ns, NAME, "stable").values():
                        wait_for(lambda q=query: pm_prom.query(q), what=f"PodMonitor series: {query}", timeout=20)

                cluster.apply(NAME, replicas=2, rollout=ROLLOUT, model=V2)
                wait_for(lambda: pod_monitor(cluster) is None, what="the PodMonitor pruned", timeout=30)
        finally:
            pods.close()
