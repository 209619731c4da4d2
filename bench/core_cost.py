"""What one request costs in the gateway's own Python, with no network at all.

Two measurements, each over the same realistic chat body (the chat-tools request of the
recorded OpenAI traffic, about 800 bytes) and a canned backend answer with `usage`:

* **core**: the request machine alone, fed RequestReceived -> IdentityResolved ->
  AdaptorReturned, the way the driver feeds it;
* **embedded**: `Gateway.request()` end to end (driver, Direct API adaptor, core) over an
  in-process transport that answers at once, under asyncio.

    python -m bench.core_cost [--requests 20000]

Figures are microseconds per request from one run on one machine; compare them only
with a run of the other version on the same machine, side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bench.canned import CHAT_SSE
from core import (
    AdaptorReturned,
    Catalog,
    Identity,
    IdentityResolved,
    OpenAIRoute,
    RequestMachine,
    RequestReceived,
)
from transports import BackendRequest, BackendResponse

KEY_ENV = "IGW_BENCH_CORE_KEY"
BODY = json.dumps(
    {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant that can call tools."},
            {"role": "user", "content": "What is the weather like in Paris today?"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Get the current weather in a given location",
                    "parameters": {
                        "type": "object",
                        "properties": {
                            "location": {"type": "string", "description": "City and country"},
                            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                        },
                        "required": ["location"],
                    },
                },
            }
        ],
        "tool_choice": "auto",
        "temperature": 0.2,
        "max_tokens": 256,
    }
).encode()
ANSWER = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-test",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "It is sunny in Paris, 21 degrees."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 82, "completion_tokens": 11, "total_tokens": 93},
    }
).encode()
ALICE = Identity(username="alice@example.org")
STREAM_BODY = json.dumps({**json.loads(BODY), "stream": True}).encode()
STREAM = CHAT_SSE.encode()


def _fixtures(folder: Path, *, key_env: str = KEY_ENV, **endpoint_fields: Any) -> Path:
    """One cluster and one Direct API endpoint for `gpt-test`, written to `folder`; extra
    endpoint fields (quota limits, say) go into the endpoint's entry."""
    cluster = {
        "cluster_name": "bench",
        "frameworks": ["api"],
        "openai_endpoints": ["chat/completions"],
        "cluster_adapter": "adaptors.clusters.openai_compatible.OpenAICompatibleCluster",
        "config": {"api_url": "http://backend.invalid/v1"},
    }
    endpoint = {
        "endpoint_slug": "bench-api-gpt-test",
        "cluster": "bench",
        "framework": "api",
        "model": "gpt-test",
        "endpoint_adapter": "adaptors.endpoints.direct_api.DirectAPIEndpoint",
        "config": {"api_url": "http://backend.invalid/v1", "api_key_env_name": key_env},
        **endpoint_fields,
    }
    for name, model, fields in (
        ("clusters.json", "resource_server_async.cluster", cluster),
        ("endpoints.json", "resource_server_async.endpoint", endpoint),
    ):
        rows = [{"model": model, "pk": 1, "fields": fields}]
        (folder / name).write_text(json.dumps(rows))
    return folder


def _per_request_us(run: Any, count: int, rounds: int = 5) -> float:
    """The median over `rounds` of the mean time per request, in microseconds."""
    means = []
    for _ in range(rounds):
        start = time.perf_counter()
        run(count)
        means.append((time.perf_counter() - start) / count * 1e6)
    return statistics.median(means)


def _core(catalog: Catalog, count: int) -> None:
    for i in range(count):
        machine = RequestMachine(catalog)
        machine.receive(
            RequestReceived(
                request_id=str(i),
                route=OpenAIRoute.CHAT_COMPLETIONS,
                body=BODY,
                content_type="application/json",
                authorization="Bearer k",
            )
        )
        machine.receive(IdentityResolved(identity=ALICE))
        machine.receive(AdaptorReturned(result=ANSWER.decode()))


class _CannedStream:
    """The canned stream (`bench.canned`'s: role, five words, stop, usage, `[DONE]`) as
    the bench's nginx sends it: the whole body in one piece."""

    status = 200
    headers = (("content-type", "text/event-stream"),)

    async def chunks(self) -> AsyncIterator[bytes]:
        yield STREAM

    async def aread(self) -> bytes:
        return STREAM

    async def aclose(self) -> None:
        pass


class _Canned:
    """A transport that answers every call at once with the canned answer (or stream)."""

    async def send(self, request: BackendRequest) -> BackendResponse:
        return BackendResponse(
            status=200, headers=(("content-type", "application/json"),), body=ANSWER
        )

    async def open_stream(self, request: BackendRequest) -> _CannedStream:
        return _CannedStream()

    async def aclose(self) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    args = parser.parse_args()
    os.environ[KEY_ENV] = "sk-bench"

    from frontends.embedding import FixedIdentity, open_gateway

    with tempfile.TemporaryDirectory() as tmp:
        folder = _fixtures(Path(tmp))

        async def embedded() -> tuple[float, float]:
            async with open_gateway(
                folder, identity=FixedIdentity(ALICE), transport=_Canned()
            ) as gateway:
                catalog = gateway.catalog
                headers = {"Authorization": "Bearer k", "Content-Type": "application/json"}

                async def run(count: int) -> None:
                    for _ in range(count):
                        reply = await gateway.request("chat/completions", BODY, headers=headers)
                        assert reply.status == 200, reply.body

                await run(200)  # warm up
                embedded_us: list[float] = []
                for _ in range(5):
                    start = time.perf_counter()
                    await run(args.requests // 4)
                    embedded_us.append((time.perf_counter() - start) / (args.requests // 4) * 1e6)
            core_us = _per_request_us(lambda n: _core(catalog, n), args.requests)
            return core_us, statistics.median(embedded_us)

        core_us, embedded_us = asyncio.run(embedded())
    print(f"{'measure':<12}{'us/request':>12}")
    print(f"{'core':<12}{core_us:>12.1f}")
    print(f"{'embedded':<12}{embedded_us:>12.1f}")


if __name__ == "__main__":
    main()
