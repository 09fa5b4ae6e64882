"""The Python load generator: closed-loop aiohttp / grpc.aio workers in the benchmark process (uvloop).

It is what the docs' earlier figures used (`--client python`); on 2 cores it takes about one of them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
import grpc
import psutil

from bench.serving.cells import Measurement, unique_body, url_path


async def _http_worker(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    stop_at: float,
    record: Callable[[float], None],
    unique: bool = False,
) -> int:
    errors = 0
    while time.perf_counter() < stop_at:
        t0 = time.perf_counter()
        async with session.post(url, data=unique_body(body) if unique else body, headers=headers) as response:
            await response.read()
            ok = response.status == 200
        if ok:
            record(time.perf_counter() - t0)
        errors += not ok
    return errors


async def _grpc_worker(
    call: Callable[[bytes], Awaitable[bytes]], body: bytes, stop_at: float, record: Callable[[float], None]
) -> int:
    errors = 0
    while time.perf_counter() < stop_at:
        t0 = time.perf_counter()
        try:
            await call(body)
        except grpc.aio.AioRpcError:
            errors += 1
            continue
        record(time.perf_counter() - t0)
    return errors


async def drive(target: str, address: str, model: str, body: bytes, headers: dict[str, str], concurrency: int,
                seconds: float, warmup: float) -> tuple[list[float], int, float]:  # fmt: skip
    """Closed-loop load: `concurrency` workers, each sending its next request on a response.

    gRPC goes over one channel (one HTTP/2 connection, `concurrency` streams); a `-miss` target sends a
    unique input each time. Returns the measured period's latencies (s), errors, and its length (s).
    """
    latencies: list[float] = []
    recording = False

    def record(seconds_taken: float) -> None:
        if recording:
            latencies.append(seconds_taken)

    start = time.perf_counter()
    stop_at = start + warmup + seconds
    if target.endswith("-grpc"):
        async with grpc.aio.insecure_channel(address) as channel:
            call = channel.unary_unary(url_path(target, model))
            tasks = [asyncio.create_task(_grpc_worker(call, body, stop_at, record)) for _ in range(concurrency)]
            await asyncio.sleep(warmup)
            recording = True
            t_rec = time.perf_counter()
            errors = sum(await asyncio.gather(*tasks))
    else:
        url = f"http://{address}{url_path(target, model)}"
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            tasks = [
                asyncio.create_task(_http_worker(session, url, body, headers, stop_at, record, "-miss" in target))
                for _ in range(concurrency)
            ]
            await asyncio.sleep(warmup)
            recording = True
            t_rec = time.perf_counter()
            errors = sum(await asyncio.gather(*tasks))
    return latencies, errors, time.perf_counter() - t_rec


async def measure_python(target: str, address: str, model: str, body: bytes, headers: dict[str, str],
                         concurrency: int, seconds: float, warmup: float) -> Measurement:  # fmt: skip
    """`drive`, with this process's own CPU over the run as the client's (all its threads: grpc's too)."""
    me = psutil.Process()
    cpu_before, wall_before = sum(me.cpu_times()[:2]), time.perf_counter()
    latencies, errors, elapsed = await drive(target, address, model, body, headers, concurrency, seconds, warmup)
    return Measurement(
        client="python",
        ok=len(latencies),
        errors=errors,
        elapsed_s=elapsed,
        latencies_ms=[x * 1000 for x in latencies],
        client_cpu_s=sum(me.cpu_times()[:2]) - cpu_before,
        client_wall_s=time.perf_counter() - wall_before,
    )
