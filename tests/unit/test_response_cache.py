"""The response cache: --cache-config parsing, the request key, and the byte-bounded LRU (property tests)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelserve import examples
from modelserve.cache import (
    ANSWER_OVERHEAD,
    ENTRY_OVERHEAD,
    MAX_ANSWERS,
    CacheConfig,
    ResponseCache,
    byte_view,
    exact_request_digest,
    request_key,
)
from modelserve.dataplane import DataPlane
from modelserve.faults import FaultInjector
from modelserve.metrics import ModelStats, exposition
from modelserve.repository import Repository, RepositorySettings
from modelserve.rest import RestApp


def test_cache_config_parses_tritons_syntax() -> None:
    assert CacheConfig.parse([]).size == 0
    assert CacheConfig.parse(["local,size=1048576"]).size == 1048576
    assert CacheConfig.parse(["local,size=1", "local,size=2"]).size == 2  # the last one wins
    for bad in ("redis,size=10", "local", "local,bytes=10", "local,size=-1", "local,size=1k"):
        with pytest.raises(ValueError, match="--cache-config"):
            CacheConfig.parse([bad])


def _inputs(data: np.ndarray, name: str = "x", datatype: str = "FP32") -> list[tuple[str, str, list[int], np.ndarray]]:
    return [(name, datatype, list(data.shape), data)]


def test_key_covers_model_version_name_datatype_shape_and_bytes() -> None:
    a = np.arange(6, dtype=np.float32)
    base = request_key("m", "1", _inputs(a.reshape(2, 3)))
    assert base == request_key("m", "1", _inputs(a.reshape(2, 3).copy()))
    variants = [
        request_key("n", "1", _inputs(a.reshape(2, 3))),
        request_key("m", "2", _inputs(a.reshape(2, 3))),
        request_key("m", "1", _inputs(a.reshape(2, 3), name="y")),
        request_key("m", "1", _inputs(a.reshape(2, 3).view(np.int32), datatype="INT32")),
        request_key("m", "1", _inputs(a.reshape(3, 2))),
        request_key("m", "1", _inputs((a + 1).reshape(2, 3))),
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_key_ignores_input_order_and_length_prefixes_bytes() -> None:
    x, y = np.zeros(2, np.float32), np.ones(2, np.float32)
    xy = [("x", "FP32", [2], x), ("y", "FP32", [2], y)]
    assert request_key("m", "1", xy) == request_key("m", "1", list(reversed(xy)))
    one = np.array([b"ab", b"c"], dtype=object)
    two = np.array([b"a", b"bc"], dtype=object)
    assert request_key("m", "1", _inputs(one, datatype="BYTES")) != request_key(
        "m", "1", _inputs(two, datatype="BYTES")
    )


def test_stored_copies_are_read_only_and_independent_of_the_batch() -> None:
    cache = ResponseCache(1 << 20)
    batch = np.arange(8, dtype=np.float32).reshape(4, 2)
    assert cache.put(b"k", {"out": batch[1:2]})
    batch[:] = -1
    stored = cache.get(b"k")
    assert stored is not None
    np.testing.assert_array_equal(stored["out"], [[2, 3]])
    assert stored["out"].base is None or stored["out"].base.size == 2
    with pytest.raises(ValueError):
        stored["out"][0, 0] = 9


def test_an_entry_larger_than_the_cache_is_not_stored() -> None:
    cache = ResponseCache(ENTRY_OVERHEAD + 100)
    assert not cache.put(b"k", {"out": np.zeros(100, np.float32)})
    assert len(cache) == 0 and cache.used == 0


entries = st.lists(
    st.tuples(st.integers(0, 15), st.integers(0, 64), st.booleans()),  # key, float count, read it back first
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(capacity=st.integers(0, 4 * ENTRY_OVERHEAD + 1024), operations=entries)
def test_lru_never_exceeds_its_bound_and_evicts_least_recently_used(
    capacity: int, operations: list[tuple[int, int, bool]]
) -> None:
    cache = ResponseCache(capacity)
    model: OrderedDict[bytes, int] = OrderedDict()  # key -> charged size, least recent first
    for number, floats, read_first in operations:
        key = number.to_bytes(2, "little")
        if read_first:
            found = cache.get(key)
            assert (found is not None) == (key in model)
            if key in model:
                model.move_to_end(key)
                assert found is not None and found["out"].size == floats_of(model, key)
        outputs = {"out": np.full(floats, number, np.float32)}
        size = ENTRY_OVERHEAD + len(key) + 4 * floats + len("out")
        stored = cache.put(key, outputs)
        assert stored == (size <= capacity)
        if stored:
            model.pop(key, None)
            while sum(model.values()) + size > capacity:
                model.popitem(last=False)
            model[key] = size
        assert cache.used <= capacity
        assert cache.used == sum(model.values())
        assert cache.keys() == list(model)


def floats_of(model: OrderedDict[bytes, int], key: bytes) -> int:
    return (model[key] - ENTRY_OVERHEAD - len(key) - len("out")) // 4


def test_cache_series_only_for_versions_that_use_the_cache() -> None:
    plain, cached = ModelStats(), ModelStats(cached=True)
    cached.cache_hit.add(3000)
    cached.cache_miss.add(5000)
    assert "nv_cache_" not in exposition([(("a", "1"), plain)])
    text = exposition([(("a", "1"), plain), (("b", "1"), cached)])
    assert 'nv_cache_num_hits_per_model{model="b",version="1"} 1' in text
    assert 'nv_cache_num_misses_per_model{model="b",version="1"} 1' in text
    assert 'nv_cache_hit_duration_per_model{model="b",version="1"} 3' in text
    assert 'nv_cache_miss_duration_per_model{model="b",version="1"} 5' in text
    assert 'nv_cache_num_hits_per_model{model="a"' not in text


def test_exact_request_digest_covers_kind_model_version_and_every_part_with_its_length() -> None:
    base = exact_request_digest("http", "m", "1", [b"12", b"abc"])
    assert base == exact_request_digest("http", "m", "1", [b"12", memoryview(b"abc")])
    variants = [
        exact_request_digest("grpc", "m", "1", [b"12", b"abc"]),
        exact_request_digest("http", "n", "1", [b"12", b"abc"]),
        exact_request_digest("http", "m", "", [b"12", b"abc"]),
        exact_request_digest("http", "m", "1", [b"1", b"2abc"]),  # the split moved: another request
        exact_request_digest("http", "m", "1", [b"12", b"abd"]),
    ]
    assert len({base, *variants}) == len(variants) + 1


def test_a_key_hashes_the_data_where_it_lies() -> None:
    strided = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]  # not contiguous: hashed as its values
    assert request_key("m", "1", _inputs(strided)) == request_key("m", "1", _inputs(strided.copy()))
    assert byte_view(strided).tobytes() == strided.tobytes()
    frame = np.arange(6, dtype=np.float32)
    assert np.shares_memory(byte_view(frame), frame)


def test_remembered_answers_are_charged_bounded_per_entry_and_go_with_their_entry() -> None:
    cache = ResponseCache(1 << 20)
    assert cache.put(b"k", {"out": np.zeros(4, np.float32)})
    base = cache.used
    assert cache.remember(b"k", b"d0", "answer 0", 100)
    assert cache.answer(b"d0") == "answer 0"
    assert cache.used == base + ANSWER_OVERHEAD + 2 + 100
    for n in range(1, MAX_ANSWERS + 1):
        assert cache.remember(b"k", b"d%d" % n, f"answer {n}", 100)
    assert cache.answer_count() == MAX_ANSWERS
    assert cache.answer(b"d0") is None  # the oldest went
    assert cache.used == base + MAX_ANSWERS * (ANSWER_OVERHEAD + 2 + 100)
    assert not cache.remember(b"missing", b"dx", "x", 1)
    assert cache.put(b"k", {"out": np.ones(4, np.float32)})  # a new result: the answers to the old one go
    assert cache.answer_count() == 0 and cache.answer(b"d1") is None
    assert cache.used == base


def test_an_answer_makes_its_entry_the_most_recently_used() -> None:
    size = ENTRY_OVERHEAD + 1 + 4 * 4 + len("out")
    cache = ResponseCache(2 * size + ANSWER_OVERHEAD + 2 + 10)
    assert cache.put(b"a", {"out": np.zeros(4, np.float32)})
    assert cache.put(b"b", {"out": np.zeros(4, np.float32)})
    assert cache.remember(b"a", b"da", "A", 10)  # fits beside both entries
    assert cache.keys() == [b"b", b"a"]
    assert cache.put(b"c", {"out": np.zeros(4, np.float32)})  # evicts b, the least recently used
    assert cache.keys() == [b"a", b"c"]
    assert cache.answer(b"da") == "A"
    assert cache.keys() == [b"c", b"a"]
    assert not cache.remember(b"c", b"dc", "C", 4 * size)  # could never fit with its entry
    assert cache.keys() == [b"c", b"a"] and cache.answer(b"dc") is None


operations = st.lists(
    st.tuples(st.sampled_from(["put", "get", "remember", "answer"]), st.integers(0, 7), st.integers(0, 64)),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(capacity=st.integers(0, 6 * ENTRY_OVERHEAD + 2048), ops=operations)
def test_answers_and_entries_together_never_exceed_the_bound(capacity: int, ops: list[tuple[str, int, int]]) -> None:
    cache = ResponseCache(capacity)
    for op, number, size in ops:
        key, digest = b"k%d" % number, b"d%d" % (number * 3 + size % 3)
        if op == "put":
            cache.put(key, {"out": np.full(size, number, np.float32)})
        elif op == "get":
            cache.get(key)
        elif op == "remember":
            stored = cache.remember(key, digest, (key, size), size)
            assert not stored or cache.answer(digest) == (key, size)
        else:
            found = cache.answer(digest)
            assert found is None or cache.keys()[-1] == found[0]
        assert cache.used <= capacity
        entries = cache._entries
        assert cache.used == sum(e.size for e in entries.values())
        assert cache.answer_count() == sum(len(e.answers) for e in entries.values())
        assert all(len(e.answers) <= MAX_ANSWERS for e in entries.values())


# --- the data plane and the REST app in this process: remembered answers ---

CACHED_SIMPLE = "response_cache { enable: true }\n"


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[RestApp]:
    root = tmp_path / "repo"
    examples.write_model(root, "simple", examples.simple(), config=CACHED_SIMPLE)
    examples.write_model(root, "plain", examples.simple())
    settings = RepositorySettings(root=root, startup_models=("simple", "plain"), response_cache=True)
    repository = Repository(settings)
    await repository.load_startup_models()
    dp = DataPlane(repository, cache=ResponseCache(1 << 20))
    dp.lifecycle.started = True
    yield RestApp(dp)
    await repository.close()


def simple_body(value: float) -> bytes:
    data = [value] * 16
    tensors = [{"name": n, "shape": [1, 16], "datatype": "FP32", "data": data} for n in ("INPUT0", "INPUT1")]
    return orjson.dumps({"inputs": tensors})


async def infer(app: RestApp, model: str, body: bytes) -> tuple[int, bytes]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
        response = await client.post(f"/v2/models/{model}/infer", content=body)
        return response.status_code, response.content


def counts(app: RestApp, model: str) -> tuple[int, int, int]:
    stats = app.dataplane.statistics(model)[0].stats
    return stats.cache_hit.count, stats.cache_miss.count, stats.success.count


async def test_a_repeated_body_is_answered_from_memory_and_counted_as_a_hit(app: RestApp) -> None:
    first = await infer(app, "simple", simple_body(1.0))
    assert first[0] == 200 and app.dataplane.cache is not None and app.dataplane.cache.answer_count() == 1
    assert [await infer(app, "simple", simple_body(1.0)) for _ in range(3)] == [first] * 3
    assert counts(app, "simple") == (3, 1, 4)
    assert app.dataplane.statistics("simple")[0].stats.execution_count == 1


async def test_no_answer_is_remembered_for_a_model_without_the_cache(app: RestApp) -> None:
    for _ in range(2):
        assert (await infer(app, "plain", simple_body(1.0)))[0] == 200
    assert counts(app, "plain") == (0, 0, 2)
    assert app.dataplane.cache is not None and app.dataplane.cache.answer_count() == 0


async def test_a_reloaded_model_never_gets_an_answer_remembered_for_its_previous_load(app: RestApp) -> None:
    dp = app.dataplane
    assert (await infer(app, "simple", simple_body(2.0)))[0] == 200
    old = dp.repository.get("simple")
    await dp.repository.unload("simple")
    await dp.repository.load("simple")
    assert dp.repository.get("simple") is not old
    exact = dp.exact_answer("http", "simple", "", (b"", simple_body(2.0)))
    assert exact is not None and exact.answer is None  # the tensor-keyed result may hit; the answer bytes do not
    status, raw = await infer(app, "simple", simple_body(2.0))
    assert status == 200 and orjson.loads(raw)["outputs"][0]["data"] == [4.0] * 16


async def test_injected_faults_bypass_remembered_answers(app: RestApp) -> None:
    dp = app.dataplane
    assert (await infer(app, "simple", simple_body(3.0)))[0] == 200
    dp.faults = FaultInjector(failure_ratio=1.0)
    assert dp.exact_answer("http", "simple", "", (b"", simple_body(3.0))) is None
    status, raw = await infer(app, "simple", simple_body(3.0))
    assert status == 500 and b"injected failure" in raw
