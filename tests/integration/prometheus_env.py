"""Run a real Prometheus (Debian's package) on loopback, scraping given targets every second."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import tritonclient.http as httpclient
import yaml

from modeldeploy.prometheus import PrometheusProvider
from modelserve.launcher import free_port

PROMETHEUS = shutil.which("prometheus")


@contextlib.contextmanager
def running_prometheus(
    workdir: Path, targets: list[tuple[int, dict[str, str]]]
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`targets`: (metrics port, labels) pairs. Yields (url, process) once every target was scraped."""
    assert PROMETHEUS is not None, "prometheus is installed by `make install`"
    port = free_port()
    config = workdir / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {"job_name": "modelserve", "static_configs": [
                        {"targets": [f"127.0.0.1:{metrics_port}"], "labels": labels} for metrics_port, labels in targets
                    ]}
                ],
            }
        )
    )  # fmt: skip
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    provider = PrometheusProvider(url, timeout=2)
    try:
        deadline = time.monotonic() + 30
        while not provider.is_online():
            assert time.monotonic() < deadline, "prometheus did not start"
            time.sleep(0.2)
        while provider.run_query('count(up{job="modelserve"} == 1)') != float(len(targets)):
            assert time.monotonic() < deadline, "prometheus did not scrape every target"
            time.sleep(0.2)
        yield url, process
    finally:
        process.terminate()
        process.wait(10)


def simple_load(http_url: str, stop: threading.Event, pause: float = 0.03) -> None:
    """Steady inference on the `simple` example model until `stop`, so Prometheus has rates to see."""
    client = httpclient.InferenceServerClient(http_url)
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        tensor = httpclient.InferInput(name, [1, 16], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 16), np.float32))
        inputs.append(tensor)
    while not stop.is_set():
        with contextlib.suppress(Exception):
            client.infer("simple", inputs)
        time.sleep(pause)
