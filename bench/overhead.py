"""What the gateway costs: the same requests to a local OpenAI-compatible backend, sent
directly and through the gateway, interleaved one by one so that whatever else the
machine is doing hits both sides alike.  Reports medians and the ratio between them.

    python -m bench.overhead [--requests 300]

Numbers are ratios from one run on one machine; compare runs only side by side.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from tests.support.fake_openai import running_fake_openai
from tests.support.gateway_server import ALICE, running_gateway, write_fixtures, write_tokens

CHAT = {"model": "gpt-test", "messages": [{"role": "user", "content": "How fast is this?"}]}
KEY_ENV = "IGW_BENCH_KEY"


def _fixtures(folder: Path, backend_url: str) -> Path:
    cluster = {
        "cluster_name": "bench",
        "frameworks": ["api"],
        "openai_endpoints": ["chat/completions"],
        "cluster_adapter": "adaptors.clusters.openai_compatible.OpenAICompatibleCluster",
        "config": {"api_url": f"{backend_url}/v1"},
    }
    endpoint = {
        "endpoint_slug": "bench-api-gpt-test",
        "cluster": "bench",
        "framework": "api",
        "model": "gpt-test",
        "endpoint_adapter": "adaptors.endpoints.direct_api.DirectAPIEndpoint",
        "config": {"api_url": f"{backend_url}/v1", "api_key_env_name": KEY_ENV},
    }
    return write_fixtures(folder / "fixtures", [cluster], [endpoint])


def _timed(
    client: httpx.Client, url: str, body: dict[str, object], stream: bool
) -> tuple[float, float]:
    """Seconds to the first byte of the body, and to the last."""
    start = time.perf_counter()
    with client.stream("POST", url, json={**body, "stream": stream}) as response:
        response.raise_for_status()
        first = None
        for _ in response.iter_raw():
            first = first or time.perf_counter()
    end = time.perf_counter()
    return (first or end) - start, end - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    os.environ[KEY_ENV] = "sk-bench"
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_fake_openai(models=["gpt-test"], api_key="sk-bench") as (_, backend_url),
        running_gateway(_fixtures(Path(tmp), backend_url), write_tokens(Path(tmp))) as gateway_url,
        httpx.Client(headers={"Authorization": "Bearer sk-bench"}) as direct,
        httpx.Client(headers={"Authorization": f"Bearer {ALICE}"}) as via,
    ):
        sides = {
            "direct": (direct, f"{backend_url}/v1/chat/completions"),
            "gateway": (via, f"{gateway_url}/v1/chat/completions"),
        }
        print(f"{args.requests} requests per side and kind, interleaved\n")
        print(f"{'kind':<22}{'direct ms':>12}{'gateway ms':>12}{'ratio':>8}")
        for stream, label in ((False, "whole answer"), (True, "stream")):
            for client, url in sides.values():  # warm both connection pools
                _timed(client, url, CHAT, stream)
            samples: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
            for _ in range(args.requests):
                for name, (client, url) in sides.items():
                    samples[name].append(_timed(client, url, CHAT, stream))
            metrics = [("total", 1)] if not stream else [("first chunk", 0), ("total", 1)]
            for metric, index in metrics:
                direct_ms = statistics.median(s[index] for s in samples["direct"]) * 1000
                gateway_ms = statistics.median(s[index] for s in samples["gateway"]) * 1000
                name = f"{label} ({metric})"
                print(
                    f"{name:<22}{direct_ms:>12.2f}{gateway_ms:>12.2f}{gateway_ms / direct_ms:>8.2f}"
                )


if __name__ == "__main__":
    main()
