"""modelserve: a Triton-compatible inference server on ONNX Runtime."""

__version__ = "0.1.0"
