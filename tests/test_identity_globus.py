"""Globus Auth introspection and Groups, against a local server speaking Globus's format."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from core import Rule
from frontends.identity import (
    AccessRefused,
    CredentialsRejected,
    GlobusAuth,
    ProviderUnavailable,
)
from tests.support.fake_globus import (
    CLIENT_ID,
    CLIENT_SECRET,
    DEPENDENT_GRANT,
    FakeGlobus,
    GlobusUser,
    running_fake_globus,
)
from transports import BackendResponse, FunctionTransport, H11Transport, Transport
from transports.httpx_transport import HttpxTransport
from transports.recording import RecordingTransport, capture
from transports.replay import ReplayTransport

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["httpx", "h11"])
async def transport(request: pytest.FixtureRequest) -> AsyncIterator[Transport]:
    """Globus is called through the gateway's transport, whichever it is."""
    made: Transport = HttpxTransport() if request.param == "httpx" else H11Transport()
    yield made
    await made.aclose()


NOW = 1_900_000_000.0
TOKEN = "globus-access-token-of-ada-0123456789"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def globus() -> Iterator[tuple[FakeGlobus, str]]:
    with running_fake_globus() as served:
        yield served


@pytest.fixture
def fake(globus: tuple[FakeGlobus, str]) -> Iterator[FakeGlobus]:
    fake = globus[0]
    fake.users.clear()
    fake.down = fake.slow = False
    fake.add(GlobusUser(token=TOKEN, username="ada@example.org", groups=["g-uuid-1"]))
    yield fake
    fake.down = fake.slow = False


@pytest.fixture
def clock() -> Clock:
    return Clock()


def provider(base: str, clock: Clock, transport: Transport, **options: Any) -> GlobusAuth:
    return GlobusAuth(
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        transport=transport,
        auth_base_url=base,
        groups_base_url=base,
        clock=clock,
        **options,
    )


@pytest.fixture
def auth(globus: tuple[FakeGlobus, str], clock: Clock, transport: Transport) -> GlobusAuth:
    return provider(globus[1], clock, transport)


async def test_a_valid_token_gives_the_identity_with_its_groups(
    auth: GlobusAuth, fake: FakeGlobus
) -> None:
    before = fake.calls
    identity = await auth.resolve(TOKEN)
    assert identity is not None
    assert identity.username == "ada@example.org"
    assert identity.groups == {"g-uuid-1"}
    assert identity.provider == "globus"
    assert identity.subject == fake.users[TOKEN].sub
    assert identity.expires_at == fake.users[TOKEN].exp
    calls = fake.calls - before
    assert calls == {"introspect": 1, "dependent_token": 1, "my_groups": 1}


async def test_the_documented_request_format_is_used(auth: GlobusAuth, fake: FakeGlobus) -> None:
    await auth.resolve(TOKEN)
    introspect, dependent = fake.forms[-2:]
    assert introspect["include"] == "identity_set_detail"
    assert dependent["grant_type"] == DEPENDENT_GRANT
    assert introspect["token"] == dependent["token"] != TOKEN  # (digested by the fake)


async def test_pending_group_memberships_do_not_count(auth: GlobusAuth, fake: FakeGlobus) -> None:
    fake.add(
        GlobusUser(
            token="t-pending-000000000",
            username="p@example.org",
            groups=["g-a"],
            pending_groups=["g-b"],
        )
    )
    identity = await auth.resolve("t-pending-000000000")
    assert identity is not None and identity.groups == {"g-a"}


async def test_an_unknown_or_inactive_token_is_refused_as_inactive(
    auth: GlobusAuth, fake: FakeGlobus
) -> None:
    fake.add(GlobusUser(token="t-inactive-0000000", username="i@example.org", active=False))
    for token in ["t-inactive-0000000", "t-never-issued-000"]:
        with pytest.raises(CredentialsRejected) as refused:
            await auth.resolve(token)
        assert refused.value.reason == "inactive"


async def test_an_expired_token_is_refused_as_expired(auth: GlobusAuth, fake: FakeGlobus) -> None:
    fake.add(GlobusUser(token="t-expired-00000000", username="e@example.org", exp=NOW - 1))
    with pytest.raises(CredentialsRejected) as refused:
        await auth.resolve("t-expired-00000000")
    assert refused.value.reason == "expired"


async def test_a_token_for_another_audience_is_refused(auth: GlobusAuth, fake: FakeGlobus) -> None:
    fake.add(
        GlobusUser(token="t-other-aud-000000", username="o@example.org", aud=["some-other-service"])
    )
    with pytest.raises(CredentialsRejected):
        await auth.resolve("t-other-aud-000000")


async def test_an_unacceptable_username_is_refused_at_the_edge(
    auth: GlobusAuth, fake: FakeGlobus
) -> None:
    for index, name in enumerate(["a b@example.org", "<x>@example.org", "a@b@example.org"]):
        token = f"t-bad-username-{index:04d}"
        fake.add(GlobusUser(token=token, username=name))
        with pytest.raises(CredentialsRejected) as refused:
            await auth.resolve(token)
        assert refused.value.reason == "unacceptable username"


async def test_answers_are_cached_under_the_token_digest_for_ten_minutes(
    auth: GlobusAuth, fake: FakeGlobus, clock: Clock
) -> None:
    await auth.resolve(TOKEN)
    before = fake.calls["introspect"]
    clock.now += 599
    assert await auth.resolve(TOKEN) is not None
    assert fake.calls["introspect"] == before
    clock.now += 2
    assert await auth.resolve(TOKEN) is not None
    assert fake.calls["introspect"] == before + 1
    assert TOKEN not in repr(vars(auth._cache))


async def test_the_cache_never_outlives_the_token(
    auth: GlobusAuth, fake: FakeGlobus, clock: Clock
) -> None:
    fake.add(GlobusUser(token="t-short-lived-0000", username="s@example.org", exp=NOW + 30))
    assert await auth.resolve("t-short-lived-0000") is not None
    clock.now += 31
    with pytest.raises(CredentialsRejected) as refused:
        await auth.resolve("t-short-lived-0000")
    assert refused.value.reason == "expired"


async def test_refusals_are_cached_for_sixty_seconds(
    auth: GlobusAuth, fake: FakeGlobus, clock: Clock
) -> None:
    for _ in range(3):
        with pytest.raises(CredentialsRejected):
            await auth.resolve("t-unknown-cached-00")
    assert sum(1 for f in fake.forms if "include" in f) >= 1
    before = fake.calls["introspect"]
    clock.now += 61
    with pytest.raises(CredentialsRejected):
        await auth.resolve("t-unknown-cached-00")
    assert fake.calls["introspect"] == before + 1


async def test_an_outage_is_unavailable_and_keeps_cached_identities(
    auth: GlobusAuth, fake: FakeGlobus, clock: Clock
) -> None:
    assert await auth.resolve(TOKEN) is not None
    fake.down = True
    clock.now += 60
    assert await auth.resolve(TOKEN) is not None  # still cached
    with pytest.raises(ProviderUnavailable):
        await auth.resolve("t-new-during-outage")
    fake.down = False
    # The outage was not cached as a refusal.
    fake.add(GlobusUser(token="t-new-during-outage", username="n@example.org"))
    assert await auth.resolve("t-new-during-outage") is not None


async def test_an_unreachable_globus_is_unavailable(clock: Clock, transport: Transport) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    auth = provider(f"http://127.0.0.1:{port}", clock, transport)
    with pytest.raises(ProviderUnavailable):
        await auth.resolve(TOKEN)


async def test_a_slow_globus_is_unavailable_after_the_timeout(
    globus: tuple[FakeGlobus, str], fake: FakeGlobus, clock: Clock, transport: Transport
) -> None:
    fake.slow = True
    auth = provider(globus[1], clock, transport, timeout=0.2)
    try:
        with pytest.raises(ProviderUnavailable):
            await auth.resolve(TOKEN)
    finally:
        fake.slow = False
        fake.release()


async def test_wrong_client_credentials_are_an_outage_not_the_callers_fault(
    globus: tuple[FakeGlobus, str], fake: FakeGlobus, clock: Clock, transport: Transport
) -> None:
    auth = GlobusAuth(
        client_id=CLIENT_ID,
        client_secret="wrong",
        transport=transport,
        auth_base_url=globus[1],
        groups_base_url=globus[1],
        clock=clock,
    )
    with pytest.raises(ProviderUnavailable):
        await auth.resolve(TOKEN)


async def test_allowed_idp_domains_pick_a_linked_identity_or_refuse(
    globus: tuple[FakeGlobus, str], fake: FakeGlobus, clock: Clock, transport: Transport
) -> None:
    fake.add(
        GlobusUser(token="t-linked-000000000", username="ada@gmail.com", linked=["ada@anl.gov"])
    )
    fake.add(GlobusUser(token="t-outsider-0000000", username="eve@gmail.com"))
    fake.add(GlobusUser(token="t-service-0000000", username="svc@clients.auth.globus.org"))
    auth = provider(
        globus[1],
        clock,
        transport,
        allowed_domains=["anl.gov", "*.anl.gov"],
        allowed_service_accounts=["svc@clients.auth.globus.org"],
    )
    identity = await auth.resolve("t-linked-000000000")
    assert identity is not None and identity.username == "ada@anl.gov"
    with pytest.raises(AccessRefused) as refused:
        await auth.resolve("t-outsider-0000000")
    assert refused.value.rule is Rule.DOMAIN
    service = await auth.resolve("t-service-0000000")
    assert service is not None and service.username == "svc@clients.auth.globus.org"


async def test_a_required_group_refuses_non_members(
    globus: tuple[FakeGlobus, str], fake: FakeGlobus, clock: Clock, transport: Transport
) -> None:
    fake.add(
        GlobusUser(token="t-member-000000000", username="m@example.org", groups=["g-required"])
    )
    auth = provider(globus[1], clock, transport, required_group="g-required")
    assert await auth.resolve("t-member-000000000") is not None
    with pytest.raises(AccessRefused) as refused:
        await auth.resolve(TOKEN)
    assert refused.value.rule is Rule.GROUP


async def test_no_token_or_secret_reaches_the_logs(
    auth: GlobusAuth, fake: FakeGlobus, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await auth.resolve(TOKEN)
    fake.down = True
    with pytest.raises(ProviderUnavailable) as raised:
        await auth.resolve("t-secret-during-outage")
    text = caplog.text + str(raised.value)
    for secret in [TOKEN, "t-secret-during-outage", CLIENT_SECRET]:
        assert secret not in text


async def test_globus_calls_go_through_the_transport_so_they_record_and_replay(
    globus: tuple[FakeGlobus, str], fake: FakeGlobus, clock: Clock, transport: Transport
) -> None:
    live = provider(globus[1], clock, RecordingTransport(transport))
    with capture() as exchanges:
        identity = await live.resolve(TOKEN)
    paths = [urlsplit(e.request.url).path for e in exchanges]
    assert paths == ["/v2/oauth2/token/introspect", "/v2/oauth2/token", "/v2/groups/my_groups"]
    before = dict(fake.calls)
    offline = provider("http://globus.invalid", clock, ReplayTransport(exchanges))
    assert await offline.resolve(TOKEN) == identity
    assert fake.calls == before


@pytest.mark.parametrize(
    "answer",
    [
        BackendResponse(status=200, body=b"<html>not json</html>"),
        BackendResponse(status=500, body=b'{"error": "boom"}'),
    ],
)
async def test_a_globus_answering_nonsense_is_unavailable(
    clock: Clock, answer: BackendResponse
) -> None:
    auth = provider("http://globus.invalid", clock, FunctionTransport(lambda r: answer))
    with pytest.raises(ProviderUnavailable):
        await auth.resolve(TOKEN)
