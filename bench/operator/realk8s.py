"""Operator benchmark on the real control plane (shared/realk8s): 1000 ModelDeployments.

    python -m bench.operator.realk8s [--count 1000] [--idle-seconds 60] [--kubeconfig PATH]

Without --kubeconfig it starts its own shared/realk8s cluster (APISERVER_PORT 31443, ETCD_PORT
28790) and fake kubelet, and stops both at the end. The operator runs as `modeldeploy run`
with its defaults (resync every 60 s) in its own process. Measured:

- children and status: seconds from the first create until every ModelDeployment has its
  Deployment and Service and a status with observedGeneration and a Ready condition;
- Ready after pods: the latest ModelDeployment Ready transition minus the latest pod Ready
  transition (both lastTransitionTime, whole seconds), and the time between "every Deployment
  reports its pod ready" and "every ModelDeployment Ready" as the benchmark's watches saw them (checked every 0.25 s;
  watches, not polling LISTs, so that observing does not load the API server);
- peak RSS of the operator process (sampled every 200 ms);
- idle API requests per second with nothing changing: the operator's own count of the requests
  it sent (modeldeploy_kube_requests_total, by method) over --idle-seconds; beside it the API
  server's apiserver_request_total over the same window, and over a window after the operator
  stopped (the controller-manager, the fake kubelet, the benchmark's own reads: here the
  controller-manager keeps retrying the EndpointSlices Kubernetes refuses for loopback pod IPs,
  at a rate that decays, so the difference of the two windows is no measure of the operator).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
import yaml
from kubernetes import client, config

from bench.operator.observer import Watched

ROOT = Path(__file__).parents[2]
REALK8S = ROOT.parent / "shared" / "realk8s"
KUBECTL = str(Path(sys.executable).parent / "kubectl")
NAMESPACES = 10
MANAGED = "app.kubernetes.io/managed-by=modeldeploy-operator"
POLL_SECONDS = 0.25  # how often the watched state is checked (in this process: no API request)


class Api:
    def __init__(self, kubeconfig: str) -> None:
        configuration = client.Configuration()
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        self.api = client.ApiClient(configuration)

    def get(self, path: str, query: list[tuple[str, str]] | None = None, timeout: float | None = 60) -> Any:
        """A GET's urllib3 response, its body not read yet (a watch streams it)."""
        request = self.api.param_serialize(method="GET", resource_path=path, query_params=query or [],
                                           header_params={"Accept": "application/json, */*"},
                                           auth_settings=["BearerToken"])  # fmt: skip
        return self.api.call_api(*request, _request_timeout=timeout).response

    def raw(self, path: str, query: list[tuple[str, str]] | None = None) -> bytes:
        return self.get(path, query).data

    def items(self, path: str, selector: str | None = None) -> list[dict[str, Any]]:
        """The objects at `path` in the benchmark's namespaces."""
        query = [("labelSelector", selector)] if selector else []
        found = json.loads(self.raw(path, query)).get("items") or []
        return [o for o in found if o["metadata"].get("namespace", "").startswith("bench-")]

    def requests_total(self) -> float:
        total = 0.0
        for line in self.raw("/metrics").decode().splitlines():
            if line.startswith("apiserver_request_total{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def latencies(self) -> dict[str, list[float]]:
        """apiserver_request_duration_seconds per "VERB resource": [sum, count] (watches left out)."""
        found: dict[str, list[float]] = {}
        for line in self.raw("/metrics").decode().splitlines():
            for suffix, index in (("_sum{", 0), ("_count{", 1)):
                if line.startswith("apiserver_request_duration_seconds" + suffix):
                    labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
                    if labels.get("verb") in ("WATCH", "CONNECT"):
                        continue
                    sub = f"/{labels['subresource']}" if labels.get("subresource") else ""
                    key = f"{labels.get('verb')} {labels.get('resource')}{sub}"
                    found.setdefault(key, [0.0, 0.0])[index] += float(line.rsplit(" ", 1)[1])
        return found


def latency_delta(before: dict[str, list[float]], after: dict[str, list[float]]) -> dict[str, Any]:
    """Requests and mean server-side latency (ms) per "VERB resource" between two scrapes."""
    rows = {}
    for key, (total, count) in after.items():
        sum0, count0 = before.get(key, [0.0, 0.0])
        if count - count0 >= 10:
            rows[key] = {"requests": int(count - count0), "mean_ms": round(1000 * (total - sum0) / (count - count0), 1)}
    return dict(sorted(rows.items(), key=lambda kv: -kv[1]["requests"]))


def cluster_processes(kubeconfig: str) -> dict[str, psutil.Process]:
    """The cluster's own processes (their pid files sit beside the kubeconfig in its state dir)."""
    found = {}
    for pidfile in Path(kubeconfig).parent.glob("*.pid"):
        with contextlib.suppress(ValueError, psutil.Error):
            found[pidfile.stem] = psutil.Process(int(pidfile.read_text().strip()))
    return found


def cpu_seconds(processes: dict[str, psutil.Process]) -> dict[str, float]:
    times = {}
    for name, process in processes.items():
        with contextlib.suppress(psutil.Error):
            times[name] = sum(process.cpu_times()[:2])
    return times


def kubectl(kubeconfig: str, *args: str, input: str | None = None) -> str:
    env = {**os.environ, "KUBECONFIG": kubeconfig}
    result = subprocess.run([KUBECTL, *args], input=input, capture_output=True, text=True, env=env, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr}")
    return result.stdout


def body(name: str) -> dict[str, Any]:
    return {"apiVersion": "modeldeploy.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": name},
            "spec": {"model": {"name": "m", "storageUri": "s3://bucket/m"}, "replicas": 1}}  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def operator_requests(port: int) -> dict[str, float]:
    """The operator's own count of its API requests (modeldeploy_kube_requests_total) by method."""
    counts: dict[str, float] = {}
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith("modeldeploy_kube_requests_total{"):
                method = re.search(r'method="(\w+)"', line)
                key = method.group(1) if method else "?"
                counts[key] = counts.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


def key_of(obj: dict[str, Any]) -> tuple[str, str]:
    return (obj["metadata"]["namespace"], obj["metadata"]["name"])


def has_status(md: dict[str, Any]) -> bool:
    status = md.get("status") or {}
    types = {c["type"] for c in status.get("conditions", [])}
    return status.get("observedGeneration") == md["metadata"].get("generation") and "Ready" in types


def is_ready(md: dict[str, Any]) -> bool:
    conditions = (md.get("status") or {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def ready_since(obj: dict[str, Any]) -> str:
    conditions = (obj.get("status") or {}).get("conditions", [])
    return next((c.get("lastTransitionTime") or "" for c in conditions if c["type"] == "Ready"), "")


def available_since(deployment: dict[str, Any]) -> str:
    conditions = (deployment.get("status") or {}).get("conditions", [])
    return next((c.get("lastTransitionTime") or "" for c in conditions
                 if c["type"] == "Available" and c["status"] == "True"), "")  # fmt: skip


def seconds(rfc3339: str) -> float:
    return datetime.datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()


def run(
    kubeconfig: str,
    count: int,
    idle_seconds: float,
    timeout: float,
    profile: Path | None = None,
    others: dict[str, psutil.Process] | None = None,
) -> dict[str, Any]:
    api = Api(kubeconfig)
    kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    kubectl(kubeconfig, "wait", "--for=condition=Established", "--timeout=60s",
            "crd/modeldeployments.modeldeploy.io")  # fmt: skip
    namespaces = [f"bench-{i}" for i in range(NAMESPACES)]
    kubectl(kubeconfig, "apply", "-f", "-", input=yaml.safe_dump_all(
        [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in namespaces]))  # fmt: skip
    metrics_port = free_port()
    command = [sys.executable, "-m", "modeldeploy.cli", "run", f"--metrics-port={metrics_port}", "--liveness="]
    if profile is not None:  # py-spy samples every thread, waiting ones too (--idle): where the time goes
        pyspy = str(Path(sys.executable).parent / "py-spy")
        command = [pyspy, "record", "--idle", "--threads", "--rate", "20", "--format", "raw", "-o", str(profile),
                   "--", *command]  # fmt: skip
    operator = subprocess.Popen(
        command, env={**os.environ, "KUBECONFIG": kubeconfig}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1)
    process = psutil.Process(operator.pid)
    if profile is not None:
        process = process.children()[0]
    others = {**cluster_processes(kubeconfig), **(others or {})}
    peak = [0]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            try:
                peak[0] = max(peak[0], process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result: dict[str, Any] = {"count": count}
    try:
        time.sleep(3)
        result["idle_rss_mib"] = round(process.memory_info().rss / 2**20, 1)
        per_ns = {ns: [body(f"md-{i}") for i in range(count) if i % NAMESPACES == n] for n, ns in enumerate(namespaces)}
        # The benchmark watches (one LIST each, then events): polling LISTs would load the API server.
        watched_mds = Watched(api, "/apis/modeldeploy.io/v1alpha1/modeldeployments").start()
        watched_deployments = Watched(api, "/apis/apps/v1/deployments", MANAGED).start()
        watched_services = Watched(api, "/api/v1/services", MANAGED).start()
        latencies_before, cpu_before = api.latencies(), cpu_seconds(others)
        started, started_wall = time.monotonic(), time.time()
        creators = [
            subprocess.Popen([KUBECTL, "apply", "--server-side", "-n", ns, "-f", "-"], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, env={**os.environ, "KUBECONFIG": kubeconfig}, text=True)
            for ns in per_ns
        ]  # fmt: skip
        for creator, ns in zip(creators, per_ns, strict=True):
            assert creator.stdin is not None
            creator.stdin.write(yaml.safe_dump_all(per_ns[ns]))
            creator.stdin.close()
        for creator in creators:
            creator.wait()
        result["created_s"] = round(time.monotonic() - started, 1)
        children_at = deployments_at = ready_at = None
        while time.monotonic() - started < timeout and ready_at is None:
            now = time.monotonic() - started
            mds = watched_mds.snapshot()
            if children_at is None:
                deployments = {key_of(d) for d in watched_deployments.snapshot()}
                services = {key_of(s) for s in watched_services.snapshot()}
                keys = {key_of(m) for m in mds if has_status(m)}
                if len(mds) == count and len(keys & deployments & services) == count:
                    children_at = now
                    result["apiserver_until_children"] = latency_delta(latencies_before, api.latencies())
            if deployments_at is None:
                ready_deployments = [d for d in watched_deployments.snapshot()
                                     if (d.get("status") or {}).get("readyReplicas") == 1]  # fmt: skip
                if len(ready_deployments) == count:
                    deployments_at = now
            if len(mds) == count and all(is_ready(m) for m in mds):
                ready_at = now
            time.sleep(POLL_SECONDS)
        for watched in (watched_mds, watched_deployments, watched_services):
            watched.stop()
        result["children_and_status_s"] = round(children_at, 1) if children_at is not None else None
        # Every Deployment reporting its pod ready (the controller-manager's view; None when every
        # ModelDeployment was Ready first: the loop ends there).
        result["all_deployments_ready_s"] = round(deployments_at, 1) if deployments_at is not None else None
        result["all_ready_s"] = round(ready_at, 1) if ready_at is not None else None
        if deployments_at is not None and ready_at is not None:
            result["ready_after_deployments_watched_s"] = round(max(0.0, ready_at - deployments_at), 1)
        pods = api.items("/api/v1/pods")
        mds = api.items("/apis/modeldeploy.io/v1alpha1/modeldeployments")
        last_pod = max((seconds(ready_since(p)) for p in pods if ready_since(p)), default=0.0)
        last_md = max((seconds(ready_since(m)) for m in mds if ready_since(m) and is_ready(m)), default=0.0)
        result["ready_after_last_pod_s"] = round(last_md - last_pod, 1)
        result["all_pods_ready_s"] = round(last_pod - started_wall, 1)  # the pods' own Ready (whole seconds)
        # Per ModelDeployment: its Ready after its own pod's Ready (the controller-manager's and the
        # operator's share; the fake kubelet's pace left out).
        pod_ready: dict[tuple[str, str], float] = {}
        for pod in pods:
            owner = (pod["metadata"].get("labels") or {}).get("modeldeploy.io/deployment")
            if owner and ready_since(pod):
                key = (pod["metadata"]["namespace"], owner)
                pod_ready[key] = max(pod_ready.get(key, 0.0), seconds(ready_since(pod)))
        lags = sorted(
            seconds(ready_since(m)) - pod_ready[key]
            for m in mds
            if is_ready(m) and (key := (m["metadata"]["namespace"], m["metadata"]["name"])) in pod_ready
        )
        if lags:
            result["ready_after_own_pod_s"] = {"median": lags[len(lags) // 2], "max": lags[-1], "n": len(lags)}
        # The operator's own share: its Ready after its Deployment became Available (the controllers saw the pod).
        available = {(d["metadata"]["namespace"], d["metadata"]["name"]): available_since(d)
                     for d in api.items("/apis/apps/v1/deployments", MANAGED)}  # fmt: skip
        lags = sorted(
            seconds(ready_since(m)) - seconds(available[key])
            for m in mds
            if is_ready(m) and available.get(key := (m["metadata"]["namespace"], m["metadata"]["name"]))
        )
        if lags:
            result["ready_after_own_deployment_available_s"] = {
                "median": lags[len(lags) // 2],
                "max": lags[-1],
                "n": len(lags),
            }
        result["peak_rss_busy_mib"] = round(peak[0] / 2**20, 1)
        result["operator_cpu_busy_s"] = round(sum(process.cpu_times()[:2]), 1)
        cpu_after = cpu_seconds(others)
        result["others_cpu_busy_s"] = {k: round(v - cpu_before.get(k, 0.0), 1) for k, v in cpu_after.items()}
        result["busy_wall_s"] = round(time.monotonic() - started, 1)
        latencies_before = api.latencies()
        # Idle: nothing changes; the operator's resync re-applies every ModelDeployment each 60 s.
        time.sleep(10)
        before, own_before = api.requests_total(), operator_requests(metrics_port)
        time.sleep(idle_seconds)
        with_operator = (api.requests_total() - before) / idle_seconds
        own = {k: v - own_before.get(k, 0.0) for k, v in operator_requests(metrics_port).items()}
        result["idle_operator_requests_per_s"] = round(sum(own.values()) / idle_seconds, 2)
        result["idle_operator_requests"] = {k: int(v) for k, v in sorted(own.items()) if v}
        result["apiserver_idle"] = latency_delta(latencies_before, api.latencies())
        result["peak_rss_mib"] = round(peak[0] / 2**20, 1)
        result["operator_cpu_s"] = round(sum(process.cpu_times()[:2]), 1)
    finally:
        sampling.set()
        process.terminate()
        operator.wait(30)
    time.sleep(5)
    before = api.requests_total()
    time.sleep(idle_seconds / 2)
    without = (api.requests_total() - before) / (idle_seconds / 2)
    result["idle_requests_per_s_total"] = round(with_operator, 1)
    result["idle_requests_per_s_without_operator"] = round(without, 1)
    result["idle_requests_per_s_difference"] = round(with_operator - without, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=400.0)
    parser.add_argument("--kubeconfig", help="an existing realk8s cluster with its fake kubelet")
    parser.add_argument("--out", type=Path, default=Path("bench/results/operator-realk8s.json"))
    parser.add_argument("--kcm-args", default="", help="extra kube-controller-manager flags, e.g. --kube-api-qps=200")
    parser.add_argument("--profile", type=Path, help="record the operator with py-spy (raw stacks) into this file")
    args = parser.parse_args()
    if args.kubeconfig:
        result = run(args.kubeconfig, args.count, args.idle_seconds, args.timeout, args.profile)
    else:
        env = {**os.environ, "APISERVER_PORT": "31443", "ETCD_PORT": "28790", "KCM_EXTRA_ARGS": args.kcm_args}
        state = subprocess.run([str(REALK8S / "start-cluster.sh")], env=env, capture_output=True, text=True,
                               check=True).stdout.strip()  # fmt: skip
        kubeconfig = str(Path(state) / "kubeconfig")
        with tempfile.TemporaryFile() as log:
            kubelet_env = {**os.environ, "KUBECONFIG": kubeconfig}
            kubelet = subprocess.Popen([sys.executable, str(REALK8S / "fake-kubelet.py")], env=kubelet_env,
                                       stdout=log, stderr=log)  # fmt: skip
            try:
                result = run(kubeconfig, args.count, args.idle_seconds, args.timeout, args.profile,
                             {"fake-kubelet": psutil.Process(kubelet.pid)})  # fmt: skip
            finally:
                kubelet.terminate()
                kubelet.wait(30)
                subprocess.run([str(REALK8S / "stop-cluster.sh"), state], env={**os.environ, "REMOVE_STATE": "1"},
                               capture_output=True)  # fmt: skip
    result["kcm_args"] = args.kcm_args
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
