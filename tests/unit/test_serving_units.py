"""Pure serving pieces: config parsing and checks, codecs, metrics exposition, faults."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelserve import codecs
from modelserve import config as cfg
from modelserve.bodies import read_body
from modelserve.errors import (
    ECHO_LIMIT,
    InferenceFailed,
    InvalidArgument,
    ModelLoadError,
    PayloadTooLarge,
    RequestTimeout,
    clip,
)
from modelserve.faults import FaultInjector
from modelserve.httplimits import hold_response_head
from modelserve.metrics import ModelStats, exposition

FP32 = codecs.BY_V2["FP32"]
IO = cfg.ModelIO(
    inputs=(cfg.TensorSpec("x", FP32, (-1, 4)),),
    outputs=(cfg.TensorSpec("y", FP32, (-1, 2)),),
)


def complete(text: str, strict: bool = False, overrides: cfg.Overrides | None = None) -> cfg.ModelConfig:
    parsed = cfg.parse_config_text(text, "config.pbtxt")
    return cfg.complete_and_check(
        parsed, IO, name="m", strict=strict, overrides=overrides or cfg.Overrides(), source="config.pbtxt"
    )


def test_autocomplete_from_the_model() -> None:
    config = complete("")
    assert config.max_batch_size == cfg.DEFAULT_MAX_BATCH_SIZE
    assert [(i.name, list(i.dims)) for i in config.input] == [("x", [4])]
    assert config.HasField("dynamic_batching") and config.instance_group[0].count == 1


def test_full_config_parses() -> None:
    config = complete(
        """
        name: "m" platform: "onnxruntime_onnx" max_batch_size: 16
        input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
        output [ { name: "y" data_type: TYPE_FP32 dims: [ 2 ] } ]
        dynamic_batching { preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 100 }
        instance_group [ { count: 2 kind: KIND_CPU } ]
        version_policy: { latest: { num_versions: 2 } }
        optimization { graph { level: 1 } }
        parameters { key: "intra_op_thread_count" value: { string_value: "2" } }
        """
    )
    assert config.max_batch_size == 16 and list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert cfg.instance_count(config) == 2 and cfg.graph_level_name(config) == "extended"
    assert cfg.parameter(config, "intra_op_thread_count") == "2"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'input [ { name: "z" data_type: TYPE_FP32 dims: [ 4 ] } ]\nmax_batch_size: 4',
            "input[0].name: 'z' is not an input",
        ),
        (
            'max_batch_size: 4\ninput [ { name: "x" data_type: TYPE_INT32 dims: [ 4 ] } ]',
            "input[0].data_type: TYPE_INT32",
        ),
        ('max_batch_size: 4\ninput [ { name: "x" data_type: TYPE_FP32 dims: [ 5 ] } ]', "input[0].dims: [5]"),
        ('max_batch_size: 4\noutput [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]', "output[0].dims: [3]"),
        ('name: "other"', "name: 'other' does not match"),
        ('platform: "tensorflow_savedmodel"', "platform: 'tensorflow_savedmodel' is not supported"),
        ("max_batch_size: 4\ndynamic_batching { preferred_batch_size: [ 8 ] }", "preferred_batch_size: 8 exceeds"),
        ("max_batch_size: 4\nbogus_field: 1", 'no field named "bogus_field"'),
        ("max_batch_size: four", "max_batch_size"),
    ],
)
def test_contradictions_name_the_field(text: str, message: str) -> None:
    with pytest.raises(ModelLoadError, match=r"config\.pbtxt") as info:
        complete(text)
    assert message in str(info.value)


def test_strict_config_needs_inputs() -> None:
    with pytest.raises(ModelLoadError, match="strict"):
        complete("max_batch_size: 4", strict=True)


def test_overrides_win_over_config() -> None:
    overrides = cfg.Overrides(
        max_batch_size=32, max_queue_delay_us=700, preferred_batch_sizes=(8, 64), instance_count=3
    )
    config = complete("max_batch_size: 4", overrides=overrides)
    assert config.max_batch_size == 32 and config.dynamic_batching.max_queue_delay_microseconds == 700
    assert list(config.dynamic_batching.preferred_batch_size) == [8]
    assert cfg.instance_count(config) == 3


def test_config_json_uses_numbers_for_int64() -> None:
    as_json = cfg.message_to_json(complete(""))
    assert as_json["input"][0]["dims"] == [4] and as_json["input"][0]["data_type"] == "TYPE_FP32"


def test_bytes_tensor_round_trip_and_errors() -> None:
    array = np.array([b"", b"abc", "\u00e9".encode()], dtype=np.object_)
    raw = codecs.serialize_bytes_tensor(array)
    assert list(codecs.deserialize_bytes_tensor("t", raw, 3)) == list(array)
    with pytest.raises(InvalidArgument, match="overruns"):
        codecs.deserialize_bytes_tensor("t", raw[:-1], 3)
    with pytest.raises(InvalidArgument, match="expected 4 BYTES elements"):
        codecs.deserialize_bytes_tensor("t", raw, 4)


@pytest.mark.parametrize(
    ("dtype", "data", "message"),
    [
        ("INT8", [1, 300], "out of range"),
        ("UINT8", [1, -1], "out of range"),
        ("INT32", [1, 2.5], "must be integers"),
        ("BOOL", [1, 0], "true or false"),
        ("FP32", [1, "x"], "must be numbers"),
        ("FP32", [1], "needs 2 elements"),
    ],
)
def test_json_tensor_errors(dtype: str, data: list[object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        codecs.tensor_from_json("t", codecs.BY_V2[dtype], [2], data)


def test_json_tensor_accepts_nested_lists() -> None:
    out = codecs.tensor_from_json("t", FP32, [2, 2], [[1, 2], [3, 4]])
    np.testing.assert_array_equal(out, np.array([[1, 2], [3, 4]], np.float32))


def test_metrics_exposition_parses_and_keeps_triton_names() -> None:
    stats = ModelStats()
    stats.request_done(ok=True, duration_ns=3_000_000, rows=2)
    stats.request_timing(1000, 2000, 3000, 4000)
    stats.batch_done(2, 2000, 3000, 4000)
    stats.request_done(ok=False, duration_ns=1_000_000)
    text = exposition([(("m", "1"), stats)])
    assert 'nv_inference_request_success{model="m",version="1"} 1\n' in text
    assert 'nv_inference_count{model="m",version="1"} 2\n' in text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    hist = families["modelserve_inference_request_duration_seconds"]
    count = next(s.value for s in hist.samples if s.name.endswith("_count"))
    assert count == 2


def test_fault_injector_fails_the_exact_ratio() -> None:
    faults = FaultInjector(failure_ratio=0.1)
    failures = 0
    for _ in range(100):
        try:
            faults.after_inference()
        except InferenceFailed:
            failures += 1
    assert failures == 10
    with pytest.raises(ValueError, match=r"0\.\.1"):
        FaultInjector(failure_ratio=2)


class _Cycle:
    def __init__(self) -> None:
        self.response_started = False
        self.response_complete = False
        self.transport = _Transport()
        self.done = 0

    def on_response(self) -> None:
        self.done += 1


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def test_a_response_head_waits_for_the_body_and_goes_out_in_one_write() -> None:
    cycle = _Cycle()
    wire = cycle.transport
    hold_response_head(cycle)  # type: ignore[arg-type]
    cycle.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # before the response: at once
    assert wire.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    cycle.response_started = True
    cycle.transport.write(b"head;")
    assert len(wire.writes) == 1
    cycle.transport.write(b"body")
    cycle.transport.write(b"more")
    assert wire.writes[1:] == [b"head;body", b"more"]
    assert not cycle.transport.is_closing()  # everything else is the connection's
    cycle.response_complete = True
    cycle.on_response()
    assert cycle.done == 1 and len(wire.writes) == 3


def test_a_body_less_response_sends_its_head_when_done_or_closed() -> None:
    for finish in ("done", "close"):
        cycle = _Cycle()
        wire = cycle.transport
        hold_response_head(cycle)  # type: ignore[arg-type]
        cycle.response_started = True
        cycle.transport.write(b"head")  # a HEAD answer: no body write follows
        assert wire.writes == []
        if finish == "done":
            cycle.response_complete = True
            cycle.on_response()
            assert cycle.done == 1
        else:
            cycle.transport.close()
            assert wire.closed
        assert wire.writes == [b"head"]


def _receiver(chunks: list[bytes], stall: bool = False) -> Any:
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive() -> dict[str, Any]:
        if stall and len(messages) == 1:
            await asyncio.sleep(3600)  # the client stops sending before its last chunk
        return messages.pop(0)

    return receive


async def test_read_body_hands_on_a_one_piece_body_as_is_and_joins_pieces() -> None:
    body = b"x" * 1000
    assert await read_body({}, _receiver([body]), 1 << 20, timeout=5) is body
    assert await read_body({}, _receiver([b"ab", b"", b"cd"]), 1 << 20, timeout=5) == b"abcd"
    with pytest.raises(PayloadTooLarge):
        await read_body({}, _receiver([b"ab", b"cd"]), 3, timeout=5)


async def test_read_body_times_out_as_408_and_leaves_other_cancellations_alone() -> None:
    with pytest.raises(RequestTimeout, match=r"within 0\.05 s"):
        await read_body({}, _receiver([b"ab", b"cd"], stall=True), 1 << 20, timeout=0.05)
    task = asyncio.ensure_future(read_body({}, _receiver([b"ab", b"cd"], stall=True), 1 << 20, timeout=5))
    await asyncio.sleep(0.01)
    task.cancel()  # a client gone, or shutdown: not a timeout
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await read_body({}, _receiver([b"ab"]), 1 << 20, timeout=0.01) == b"ab"
    await asyncio.sleep(0.05)  # the timer of a body read in time never fires into a later await


class _BufferedCycle:
    """uvicorn's request cycle once the whole body has arrived (`more_body` False)."""

    more_body = False

    async def receive(self) -> dict[str, Any]:
        await asyncio.sleep(0.05)  # slower than the timeout below: only a timer could interrupt it
        return {"type": "http.request", "body": b"all", "more_body": False}


async def test_read_body_sets_no_timer_for_a_body_uvicorn_already_holds() -> None:
    assert await read_body({}, _BufferedCycle().receive, 1 << 20, timeout=0.001) == b"all"


def test_clip_keeps_a_short_printable_name_and_makes_anything_else_one_short_line() -> None:
    assert clip("input__0") == "input__0"
    assert clip("a\nb\tc") == "a b c"
    assert clip("x" * (ECHO_LIMIT + 50)) == "x" * (ECHO_LIMIT - 3) + "..."
    assert len(clip("é" * 500)) == ECHO_LIMIT
    assert clip(b"\xff\x00ok") == "\ufffd ok"
    assert clip(12) == "12"
