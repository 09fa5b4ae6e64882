"""`modelserve`: the inference server's command line (tritonserver's flag names where they overlap).

modelserve --model-repository=/models [--http-port=8000 --grpc-port=8001 --metrics-port=8002 ...]
modelserve fetch --uri=https://host/model.onnx --model-dir=/models/m --version=1
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from modelserve import contract

log = logging.getLogger("modelserve")


def _bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="modelserve",
        description="Triton-compatible (KServe V2) inference server on ONNX Runtime.",
        epilog="Subcommand: `modelserve fetch --uri URI --model-dir DIR --version N` downloads a model.",
    )
    p.add_argument("--model-repository", "--model-store", required=True, type=Path, help="model repository path")
    p.add_argument("--http-address", default="0.0.0.0", help="HTTP bind address")
    p.add_argument("--http-port", type=int, default=contract.HTTP_PORT, help="HTTP port (KServe V2 REST)")
    p.add_argument("--grpc-address", default="0.0.0.0", help="gRPC bind address")
    p.add_argument(
        "--grpc-port", type=int, default=contract.GRPC_PORT, help="gRPC port (inference.GRPCInferenceService)"
    )
    p.add_argument(
        "--grpc-frontend",
        choices=["loop", "grpcio"],
        default="loop",
        help="gRPC front end: loop (HTTP/2 and gRPC framed on the event loop, no threads) or grpcio (grpc.aio,"
        " the previous front end); default: loop",
    )
    p.add_argument("--metrics-port", type=int, default=contract.METRICS_PORT, help="Prometheus metrics port (/metrics)")
    p.add_argument(
        "--strict-model-config",
        type=_bool,
        nargs="?",
        const=True,
        default=False,
        help="require config.pbtxt to declare inputs and outputs (no autocomplete)",
    )
    p.add_argument(
        "--model-control-mode",
        choices=["none", "explicit"],
        default="none",
        help="none: load every model at start; explicit: load --load-model ones, allow load/unload API",
    )
    p.add_argument("--load-model", action="append", default=[], help="model to load at start (explicit mode)")
    p.add_argument(
        "--exit-timeout-secs", type=float, default=30.0, help="on shutdown, time given to in-flight requests to finish"
    )
    p.add_argument(
        "--shutdown-delay-secs",
        type=float,
        default=0.0,
        help="after SIGTERM, report not ready but keep serving this long (closing keep-alive connections, gRPC"
        " GOAWAY) while endpoints propagate, then drain; the operator renders 5",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="server processes sharing the ports (SO_REUSEPORT); 0: one per core the CPU limit allows",
    )
    p.add_argument("--log-verbose", type=int, default=0, help="verbose logging when > 0")
    p.add_argument("--log-format", choices=["text", "json"], default="text", help="log line format")
    p.add_argument("--event-loop", choices=["uvloop", "asyncio"], default="uvloop", help="asyncio event loop")
    p.add_argument(
        "--http-max-body-bytes",
        type=int,
        default=contract.DEFAULT_MAX_BODY_BYTES,
        help="largest HTTP body and gRPC message accepted",
    )
    p.add_argument("--http-max-header-bytes", type=int, default=64 * 1024, help="largest HTTP request head (431 above)")
    p.add_argument("--http-max-headers", type=int, default=100, help="most HTTP header fields (431 above)")
    p.add_argument(
        "--http-header-timeout-secs",
        type=float,
        default=10.0,
        help="close a connection whose request head has not arrived within this many seconds (408)",
    )
    p.add_argument(
        "--http-body-timeout-secs",
        type=float,
        default=60.0,
        help="answer 408 and close a connection whose request body has not fully arrived within this many seconds",
    )
    p.add_argument(
        "--http-max-connections",
        type=int,
        default=1000,
        help="open HTTP connections (and, separately, gRPC connections) at most; over it the oldest idle one is"
        " closed, or the new one gets 503 (lowered to fit the descriptor limit)",
    )
    p.add_argument(
        "--http-restricted-api",
        action="append",
        default=[],
        metavar="API[,API...]:KEY=VALUE",
        help="serve these HTTP APIs (health, metadata, inference, model-config, model-repository, statistics)"
        " only to requests with header KEY: VALUE; repeatable, one group per API",
    )
    p.add_argument(
        "--grpc-restricted-protocol",
        action="append",
        default=[],
        metavar="PROTOCOL[,PROTOCOL...]:KEY=VALUE",
        help="the same for gRPC calls, with metadata KEY",
    )
    a = p.add_argument_group("authentication and TLS")
    a.add_argument(
        "--auth-token-file",
        type=Path,
        help="require a token from this file (one per line, reread when it changes) on every HTTP and gRPC API"
        " but health",
    )
    a.add_argument(
        "--auth-header",
        default="authorization",
        help="header carrying the token: 'authorization' expects 'Bearer <token>', any other name the bare token",
    )
    for proto, mutual in (("http", False), ("grpc", True)):
        a.add_argument(f"--{proto}-use-ssl", type=_bool, nargs="?", const=True, default=False, help=f"{proto} TLS")
        a.add_argument(f"--{proto}-server-cert", type=Path, help=f"PEM certificate (chain) for {proto} TLS")
        a.add_argument(f"--{proto}-server-key", type=Path, help=f"PEM private key for {proto} TLS")
        if mutual:
            a.add_argument("--grpc-root-cert", type=Path, help="PEM CA certificate that signs gRPC client certificates")
            a.add_argument(
                "--grpc-use-ssl-mutual",
                type=_bool,
                nargs="?",
                const=True,
                default=False,
                help="gRPC mutual TLS: require a client certificate signed by --grpc-root-cert",
            )
    g = p.add_argument_group("per-model overrides (win over config.pbtxt; set by the operator)")
    g.add_argument("--max-batch-size", type=int, help="dynamic batching limit; 0 disables batching")
    g.add_argument("--max-queue-delay-us", type=int, help="batching window in microseconds")
    g.add_argument("--preferred-batch-size", type=int, action="append", default=[], help="preferred batch size")
    g.add_argument("--max-queue-size", type=int, help="queued requests per model before 503 / UNAVAILABLE")
    g.add_argument("--instance-count", type=int, help="ONNX Runtime sessions per model")
    g.add_argument("--graph-optimization-level", choices=["disabled", "basic", "extended", "all"])
    g.add_argument("--quantization", choices=["none", "dynamic-int8"], help="quantize models at load")
    g.add_argument("--quantization-tolerance", type=float, help="largest accepted output difference from FP32")
    r = p.add_argument_group("ONNX Runtime")
    r.add_argument("--intra-op-threads", type=int, default=0, help="threads per session; 0 lets ORT choose")
    r.add_argument("--inter-op-threads", type=int, default=0, help="inter-op threads; 0 lets ORT choose")
    r.add_argument(
        "--allow-spinning",
        type=_bool,
        nargs="?",
        const=True,
        default=False,
        help="let ORT threads spin-wait (faster under load, burns cores while idle)",
    )
    r.add_argument(
        "--allow-gpu",
        type=_bool,
        nargs="?",
        const=True,
        default=True,
        help="use CUDA/TensorRT providers when available",
    )
    r.add_argument(
        "--require-gpu",
        type=_bool,
        nargs="?",
        const=True,
        default=False,
        help="fail a model's load when onnxruntime has no CUDA provider (set for pods that reserve a GPU)",
    )
    r.add_argument("--cache-dir", type=Path, help="writable directory for optimized models")
    p.add_argument(
        "--cache-config",
        action="append",
        default=[],
        metavar="local,size=BYTES",
        help="Triton's response cache: an LRU of this many bytes shared by the models whose config.pbtxt says"
        " response_cache { enable: true }",
    )
    t = p.add_argument_group("test-only fault injection (never in production)")
    t.add_argument("--fault-failure-ratio", type=float, help="fail this fraction of requests (0..1)")
    t.add_argument("--fault-latency-ms", type=float, help="add this latency to every request")
    return p  # fmt: skip


def _run_fetch(argv: Sequence[str]) -> int:
    from modelserve.fetchcli import main as fetch_main

    return fetch_main(argv)


def _run_server(args: argparse.Namespace, argv: Sequence[str] = ()) -> int:
    from modelserve import config as cfg
    from modelserve import memory, runtime, server, supervisor, workerstate
    from modelserve.errors import ModelLoadError
    from modelserve.faults import FaultInjector
    from modelserve.repository import RepositorySettings

    server.configure_logging(args.log_verbose, args.log_format)
    memory.tune_allocator()
    parameters: dict[str, str] = {}
    if args.quantization is not None:
        parameters["quantization"] = args.quantization
    if args.quantization_tolerance is not None:
        parameters["quantization_tolerance"] = str(args.quantization_tolerance)
    overrides = cfg.Overrides(
        max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us,
        preferred_batch_sizes=tuple(args.preferred_batch_size),
        max_queue_size=args.max_queue_size,
        instance_count=args.instance_count,
        graph_optimization_level=args.graph_optimization_level,
        parameters=parameters,
    )
    settings = RepositorySettings(
        root=args.model_repository,
        strict_config=args.strict_model_config,
        control_mode=args.model_control_mode,
        startup_models=tuple(args.load_model),
        overrides=overrides,
        runtime=runtime.RuntimeSettings(
            intra_op_threads=args.intra_op_threads,
            inter_op_threads=args.inter_op_threads,
            allow_spinning=args.allow_spinning,
            use_gpu=args.allow_gpu,
            require_gpu=args.require_gpu,
        ),
        cache_dir=args.cache_dir,
    )
    from modelserve.auth import TokenAuth
    from modelserve.restrictions import Restrictions
    from modelserve.tls import TlsFiles

    try:
        from modelserve.cache import CacheConfig

        cache_config = CacheConfig.parse(args.cache_config)
        http_restrictions = Restrictions.parse(args.http_restricted_api, "--http-restricted-api")
        grpc_restrictions = Restrictions.parse(args.grpc_restricted_protocol, "--grpc-restricted-protocol")
        auth = TokenAuth(args.auth_token_file, args.auth_header) if args.auth_token_file else None
        http_tls = TlsFiles.from_flags("http", args.http_use_ssl, args.http_server_cert, args.http_server_key)
        grpc_tls = TlsFiles.from_flags(
            "grpc",
            args.grpc_use_ssl,
            args.grpc_server_cert,
            args.grpc_server_key,
            args.grpc_root_cert,
            args.grpc_use_ssl_mutual,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    options = server.ServerOptions(
        http_address=args.http_address,
        http_port=args.http_port,
        grpc_address=args.grpc_address,
        grpc_port=args.grpc_port,
        grpc_frontend=args.grpc_frontend,
        metrics_port=args.metrics_port,
        exit_timeout_secs=args.exit_timeout_secs,
        shutdown_delay_secs=args.shutdown_delay_secs,
        max_body_bytes=args.http_max_body_bytes,
        max_head_bytes=args.http_max_header_bytes,
        max_headers=args.http_max_headers,
        head_timeout_secs=args.http_header_timeout_secs,
        body_timeout_secs=args.http_body_timeout_secs,
        max_connections=args.http_max_connections,
        auth=auth,
        http_tls=http_tls,
        grpc_tls=grpc_tls,
        http_restrictions=http_restrictions,
        grpc_restrictions=grpc_restrictions,
        response_cache_bytes=cache_config.size,
    )
    settings = dataclasses.replace(settings, response_cache=cache_config.size > 0)
    try:
        faults = FaultInjector.from_env()
        if args.fault_failure_ratio is not None or args.fault_latency_ms is not None:
            faults = FaultInjector(args.fault_failure_ratio or 0.0, args.fault_latency_ms or 0.0)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Flags are checked above, once, before any worker starts: a bad one is one line and exit 2.
    workers = args.workers if args.workers > 0 else supervisor.available_cores()
    if workers > 1 and not os.environ.get(workerstate.ENV_DIR):
        return supervisor.run(argv, workers, args.intra_op_threads)
    try:
        if args.event_loop == "uvloop":
            import uvloop

            return uvloop.run(server.serve(options, settings, faults))
        return asyncio.run(server.serve(options, settings, faults))
    except (ModelLoadError, OSError) as exc:
        log.error("%s", exc)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["fetch"]:
        return _run_fetch(argv[1:])
    return _run_server(build_parser().parse_args(argv), argv)


if __name__ == "__main__":
    raise SystemExit(main())
