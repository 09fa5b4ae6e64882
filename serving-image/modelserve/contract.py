"""Names and defaults modelserve and the operator share: one home for each.

Constants only, no imports: the operator (`modeldeploy`) reads them from here without
loading modelserve's dependencies (numpy, onnxruntime, grpc). modelserve's defaults and
the operator's rendered flags, ports and image both come from these values, so they
cannot drift apart; tests/unit/test_contract_cli.py checks the flags themselves.
"""

from __future__ import annotations

from typing import Final

# Ports of a serving pod (tritonserver's defaults): KServe V2 REST, gRPC, Prometheus /metrics.
HTTP_PORT: Final = 8000
GRPC_PORT: Final = 8001
METRICS_PORT: Final = 8002

# Largest HTTP body and gRPC message accepted (`--http-max-body-bytes`).
DEFAULT_MAX_BODY_BYTES: Final = 64 * 1024 * 1024
# Requests queued per model before new ones are refused (`--max-queue-size`, spec.runtime.maxQueueSize).
DEFAULT_MAX_QUEUE_SIZE: Final = 1024

# The image the operator runs when spec.runtime.image is unset (charts/modeldeploy/values.yaml: servingImage).
DEFAULT_SERVING_IMAGE: Final = "modeldeploy/modelserve:0.1.0"
