"""What replay runs: one `Case` per recorded client request, and the catalog for cassettes
that carry no fixtures (go-vcr's), built in memory from the recorded backend calls."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from urllib.parse import urlsplit

import attrs

from core import Catalog, ClusterRecord, EndpointRecord
from transports.cassette import (
    REDACTED,
    Caller,
    Cassette,
    ClientRequest,
    Exchange,
    RecordedResponse,
)
from transports.replay import BodyMatch

__all__ = [
    "REPLAY_AUTHORIZATION",
    "THROWAWAY_KEY",
    "THROWAWAY_KEY_ENV",
    "Case",
    "cases",
    "header",
    "model_of",
    "synthetic_catalog",
]

# The synthetic endpoints' key: named in their config, handed in by the runner, never a
# real key (the recorded backend requests had theirs redacted anyway).
THROWAWAY_KEY_ENV = "INFERENCE_GATEWAY_REPLAY_THROWAWAY_KEY"
THROWAWAY_KEY = "sk-replay-throwaway-0000000000000000"
REPLAY_AUTHORIZATION = f"Bearer {REDACTED}"
ALL_ROUTES = ("chat/completions", "completions", "embeddings")


@attrs.frozen(kw_only=True)
class Case:
    label: str
    request: ClientRequest
    exchanges: tuple[Exchange, ...]
    expected: RecordedResponse
    strict_headers: bool  # our own conversations: every header; go-vcr: content type
    # Our own conversations are matched byte for byte (the gateway sends the client's
    # bytes); bodies recorded elsewhere (go-vcr) are matched as JSON.
    bodies: BodyMatch


def header(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name), None)


def model_of(body: bytes) -> str | None:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return None
    model = payload.get("model") if isinstance(payload, dict) else None
    return model if isinstance(model, str) and model else None


def _route_of(url: str) -> str:
    path = urlsplit(url).path.strip("/")
    return path[3:] if path.startswith("v1/") else path


def synthetic_catalog(exchanges: Sequence[Exchange]) -> Catalog:
    """One OpenAI-compatible cluster; one Direct API endpoint per (model, URL) recorded."""
    endpoints: dict[str, EndpointRecord] = {}
    for exchange in exchanges:
        model = model_of(exchange.request.body)
        if model is None or model in endpoints:
            continue
        slug = "replay-" + re.sub(r"[^a-z0-9-]+", "-", model.lower()).strip("-")
        endpoints[model] = EndpointRecord(
            id=str(len(endpoints) + 1),
            endpoint_slug=f"{slug}-{len(endpoints)}",
            cluster="replay",
            framework="api",
            model=model,
            endpoint_adapter="adaptors.endpoints.direct_api.DirectAPIEndpoint",
            config={"api_url": exchange.request.url, "api_key_env_name": THROWAWAY_KEY_ENV},
        )
    first = next(iter(endpoints.values()), None)
    cluster = ClusterRecord(
        id="1",
        cluster_name="replay",
        cluster_adapter="adaptors.clusters.openai_compatible.OpenAICompatibleCluster",
        frameworks=["api"],
        openai_endpoints=ALL_ROUTES,
        config={"api_url": first.config["api_url"] if first else "http://replay.invalid/v1"},
    )
    return Catalog.build([cluster], endpoints.values())


def cases(cassette: Cassette) -> Iterator[Case]:
    for conversation in cassette.conversations:
        request = conversation.request
        yield Case(
            label=f"{request.route} ({model_of(request.body) or '?'})",
            request=request,
            exchanges=conversation.exchanges,
            expected=conversation.response,
            strict_headers=True,
            bodies="bytes",
        )
    for exchange in cassette.exchanges:
        recorded = exchange.request
        yield Case(
            label=f"{recorded.method} {urlsplit(recorded.url).path}",
            request=ClientRequest(
                route=_route_of(recorded.url),
                body=recorded.body,
                content_type=header(recorded.headers, "content-type") or "application/json",
                authorization=REPLAY_AUTHORIZATION,
                caller=Caller(username="replay@localhost"),
            ),
            exchanges=(exchange,),
            expected=exchange.response,
            strict_headers=False,
            bodies="json",
        )
