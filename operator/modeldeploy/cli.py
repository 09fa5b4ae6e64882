"""`modeldeploy` command line: render manifests, print the CRD, run the operator."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from modeldeploy import api, crd, names


def _load_documents(path: str) -> list[Any]:
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def _cmd_render(args: argparse.Namespace) -> int:
    from modeldeploy import render

    settings = render.RenderSettings(serving_image=args.serving_image)
    objects: list[dict[str, Any]] = []
    failed = False
    for path in args.filename:
        try:
            documents = _load_documents(path)
        except (OSError, yaml.YAMLError) as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            failed = True
            continue
        for index, doc in enumerate(documents):
            where = f"{path}" if len(documents) == 1 else f"{path} (document {index + 1})"
            try:
                md = api.parse_model_deployment(doc)
                objects.extend(render.render(md, settings))
            except api.SpecError as exc:
                for problem in exc.problems:
                    print(f"error: {where}: {problem}", file=sys.stderr)
                failed = True
            except ValueError as exc:
                print(f"error: {where}: {exc}", file=sys.stderr)
                failed = True
    if failed:
        return 1
    sys.stdout.write(render.to_yaml(objects))
    return 0


def _cmd_crd(args: argparse.Namespace) -> int:
    sys.stdout.write(yaml.safe_dump(crd.custom_resource_definition(), sort_keys=False))
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from modeldeploy import runner

    return runner.run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modeldeploy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p_render = sub.add_parser("render", help="print the Kubernetes objects for ModelDeployment YAML")
    p_render.add_argument("-f", "--filename", action="append", required=True, help="YAML file, or - for stdin")
    p_render.add_argument(
        "--serving-image",
        default=os.environ.get("MODELDEPLOY_SERVING_IMAGE", names.DEFAULT_SERVING_IMAGE),
        help="image used when spec.runtime.image is unset (env MODELDEPLOY_SERVING_IMAGE)",
    )
    p_render.set_defaults(func=_cmd_render)

    p_crd = sub.add_parser("crd", help="print the ModelDeployment CustomResourceDefinition")
    p_crd.set_defaults(func=_cmd_crd)

    p_run = sub.add_parser("run", help="run the operator against the current cluster")
    from modeldeploy.runner import add_arguments

    add_arguments(p_run)
    p_run.set_defaults(func=_cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
