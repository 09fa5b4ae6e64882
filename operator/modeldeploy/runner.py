"""`modeldeploy run`: start the operator (kopf) with settings from flags and environment."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

import kopf

from modeldeploy.settings import OperatorSettings


def settings_from_args(args: argparse.Namespace) -> OperatorSettings:
    overrides: dict[str, Any] = {
        key: value
        for key, value in {
            "serving_image": args.serving_image,
            "prometheus_url": args.prometheus_url,
            "namespaces": args.namespace or None,
            "log_format": args.log_format,
            "peering": args.peering,
            "liveness_endpoint": args.liveness,
            "metrics_port": args.metrics_port,
            "resync_seconds": args.resync_seconds,
            "revision_history_limit": args.revision_history_limit,
        }.items()
        if value is not None
    }
    return OperatorSettings(**overrides)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--namespace", action="append", help="namespace to watch (repeat); default: all")
    parser.add_argument("--serving-image", help="default serving image (MODELDEPLOY_SERVING_IMAGE)")
    parser.add_argument("--prometheus-url", help="Prometheus for canary analysis (MODELDEPLOY_PROMETHEUS_URL)")
    parser.add_argument("--peering", help="kopf peering name for several replicas; default: standalone")
    parser.add_argument("--liveness", help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument("--metrics-port", type=int, help="operator metrics port (0 disables)")
    parser.add_argument("--resync-seconds", type=float, help="drift-repair period")
    parser.add_argument("--revision-history-limit", type=int, help="ControllerRevisions kept per ModelDeployment")
    parser.add_argument("--log-format", choices=["text", "json"], help="log format")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def run(args: argparse.Namespace) -> int:
    import modeldeploy.handlers  # noqa: F401  (registers the handlers)

    settings = settings_from_args(args)
    kopf.configure(
        verbose=args.verbose,
        log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.PLAIN,
    )
    logging.getLogger("modeldeploy").info(
        "watching %s", ", ".join(settings.namespaces) if settings.namespaces else "all namespaces"
    )
    asyncio.run(
        kopf.operator(
            clusterwide=not settings.namespaces,
            namespaces=settings.namespaces,
            standalone=settings.peering is None,
            peering_name=settings.peering,
            liveness_endpoint=settings.liveness_endpoint or None,
            memo=kopf.Memo(settings=settings),
        )
    )
    return 0
