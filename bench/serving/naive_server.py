"""The naive baseline: FastAPI + onnxruntime as deployment tutorials show it.

One HTTP request = one `session.run`, JSON in and out, no batching. Kept here only as
the benchmark's point of comparison.

    python -m bench.serving.naive_server --model-repository DIR --port 9000
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel


class PredictRequest(BaseModel):
    inputs: list


def build_app(repository: Path) -> FastAPI:
    app = FastAPI()
    sessions = {
        path.parent.parent.name: ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for path in repository.glob("*/1/model.onnx")
    }

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/predict/{model}")
    def predict(model: str, request: PredictRequest) -> dict[str, list]:
        session = sessions.get(model)
        if session is None:
            raise HTTPException(404, f"unknown model {model}")
        data = np.array(request.inputs, dtype=np.float32)
        outputs = session.run(None, {session.get_inputs()[0].name: data})
        return {"outputs": outputs[0].tolist()}

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-repository", type=Path, required=True)
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    uvicorn.run(build_app(args.model_repository), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
