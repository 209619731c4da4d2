"""The seed guide's CustomEndpoint and CustomCluster, written as the guide shows them,
loaded from fixtures by dotted path and answering through the real server."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.support.fake_openai import FakeOpenAI, running_fake_openai
from tests.support.gateway_server import ALICE, running_gateway, write_fixtures, write_tokens

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, FakeOpenAI]]:
    folder = tmp_path_factory.mktemp("guide")
    with running_fake_openai(models=["guide-model", "stopped-model"]) as (fake, backend_url):
        cluster = {
            "cluster_name": "guide-cluster",
            "frameworks": ["api"],
            "openai_endpoints": ["chat/completions", "completions"],
            "cluster_adapter": "tests.guide_adaptors.custom_cluster.CustomCluster",
            "config": {},
        }
        endpoints = [
            {
                "endpoint_slug": f"guide-cluster-api-{model}",
                "cluster": "guide-cluster",
                "framework": "api",
                "model": model,
                "endpoint_adapter": "tests.guide_adaptors.custom_endpoint.CustomEndpoint",
                "config": {
                    "api_url": f"{backend_url}/v1/chat/completions",
                    "api_key_env_name": "IGW_GUIDE_KEY_UNSET",
                },
            }
            for model in ("guide-model", "stopped-model")
        ]
        fixtures = write_fixtures(folder / "fixtures", [cluster], endpoints)
        with running_gateway(fixtures, write_tokens(folder)) as url:
            yield url, fake


def test_guide_endpoint_answers_through_the_server(
    gateway_url: tuple[str, FakeOpenAI],
) -> None:
    url, fake = gateway_url
    with openai.OpenAI(
        base_url=f"{url}/resource_server/guide-cluster/api/v1", api_key=ALICE, max_retries=0
    ) as client:
        completion = client.chat.completions.create(
            model="guide-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert completion.choices[0].message.content
    # The guide's adaptor forces stream off before calling DirectAPIEndpoint.
    assert b'"stream": false' in fake.requests[-1].body.replace(
        b'"stream":false', b'"stream": false'
    )


def test_guide_endpoint_refuses_a_model_its_cluster_does_not_run(
    gateway_url: tuple[str, FakeOpenAI],
) -> None:
    url, fake = gateway_url
    before = len(fake.requests)
    with (
        openai.OpenAI(base_url=f"{url}/v1", api_key=ALICE, max_retries=0) as client,
        pytest.raises(openai.APIStatusError) as raised,
    ):
        client.chat.completions.create(
            model="stopped-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert raised.value.status_code == 503
    assert len(fake.requests) == before, "a stopped model must not be called"


def test_guide_cluster_reports_jobs(gateway_url: tuple[str, FakeOpenAI]) -> None:
    import httpx

    url, _ = gateway_url
    jobs = httpx.get(
        f"{url}/resource_server/guide-cluster/jobs", headers={"Authorization": f"Bearer {ALICE}"}
    ).json()
    # Only what the caller may use there: the cluster also runs models with no endpoint.
    assert [job["Models"] for job in jobs["running"]] == ["guide-model"]
