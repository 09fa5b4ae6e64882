"""modelserve: a Triton-compatible inference server on ONNX Runtime."""
