"""`make demo`, serving part: build a model in code, serve it, query it with tritonclient, stop.

No downloads: the MLP is built with onnx.helper from numpy weights.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from modelserve import examples
from modelserve.launcher import ServingProcess

SHOWN_METRICS = (
    "nv_inference_request_success",
    "nv_inference_count",
    "nv_inference_exec_count",
    "nv_inference_queue_duration_us",
)


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        repo = examples.write_repository(Path(tmp) / "models", ["mlp", "simple"])
        print(f"built models in {repo}: {sorted(p.name for p in repo.iterdir())}")
        server = ServingProcess(repo, args=["--max-batch-size=16", "--max-queue-delay-us=500"]).start()
        print(f"modelserve is ready: HTTP {server.http_url}, gRPC {server.grpc_url}, metrics :{server.metrics_port}")
        try:
            http = httpclient.InferenceServerClient(server.http_url)
            meta = http.get_model_metadata("mlp")
            print(f"model metadata: inputs {meta['inputs']}, outputs {meta['outputs']}")

            batch = np.random.default_rng(0).standard_normal((4, 256), dtype=np.float32)
            item = httpclient.InferInput("input", list(batch.shape), "FP32")
            item.set_data_from_numpy(batch, binary_data=True)
            logits = http.infer("mlp", [item]).as_numpy("output")
            print(f"HTTP  mlp   batch of 4 -> classes {logits.argmax(axis=1).tolist()}")

            grpc = grpcclient.InferenceServerClient(server.grpc_url)
            inputs = []
            for name, value in (("INPUT0", 3.0), ("INPUT1", 1.0)):
                tensor = grpcclient.InferInput(name, [1, 16], "FP32")
                tensor.set_data_from_numpy(np.full((1, 16), value, np.float32))
                inputs.append(tensor)
            result = grpc.infer("simple", inputs)
            print(f"gRPC  simple 3+1={result.as_numpy('OUTPUT0')[0, 0]:g}, 3-1={result.as_numpy('OUTPUT1')[0, 0]:g}")

            print("metrics:")
            for line in server.metrics_text().splitlines():
                if line.startswith(SHOWN_METRICS):
                    print(f"  {line}")
        finally:
            code = server.stop()
            print(f"modelserve stopped (exit code {code})")
        return code


if __name__ == "__main__":
    raise SystemExit(main())
