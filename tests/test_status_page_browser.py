"""The status page in a real headless Chromium (Debian's `chromium`, driven by
Playwright's Python library; Playwright's own browser download is never used).

Against a live `inference-gateway serve` with a request log on SQLite and some traffic:
the models and their states appear, a restricted model never does, the key field is
labelled and reachable by keyboard with a visible focus, a pasted key shows that user's
usage and remaining quota and stays in sessionStorage only, a wrong key and a failing
gateway are shown rather than a blank page, and a screenshot decodes to a real render.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from tests.support.gateway_server import ALICE
from tests.support.served_cli import served_gateway
from tests.support.status_page import (
    ALICE_MODELS,
    PUBLIC_MODELS,
    RESTRICTED,
    make_traffic,
    status_fixtures,
)

pytestmark = pytest.mark.e2e

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
]
WAIT_MS = 20_000  # the page asks at once; this only bounds a broken run


def _chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.fail(
            "the status page's browser test needs Debian's chromium at /usr/bin/chromium: "
            "apt-get install chromium (.ci/run installs it)",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("status-browser")
    with served_gateway(folder, status_fixtures(folder / "fixtures"), loop="asyncio") as gateway:
        make_traffic(gateway.url)
        yield gateway.url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = _chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))

    def console(message: ConsoleMessage) -> None:
        # A refused policy or a failed script shows here; the favicon's 404 is expected.
        if message.type == "error" and "favicon" not in message.location.get("url", ""):
            errors.append(message.text)

    opened.on("console", console)
    yield opened
    context.close()
    assert [e for e in errors if "401" not in e and "500" not in e] == []


def _rows(page: Page) -> dict[str, str]:
    """Model → state, as the tables show them."""
    cells = page.locator("table tbody tr").evaluate_all(
        "rows => rows.map(r => [r.querySelector('th').textContent, "
        "r.querySelector('td').textContent])"
    )
    return dict(cells)


def _cell(page: Page, model: str, column: str) -> str:
    """The text of `column` in `model`'s row, found through the table's own headers."""
    text: str = page.evaluate(
        """([model, column]) => {
            for (const table of document.querySelectorAll('table')) {
                const names = [...table.querySelectorAll('thead th')].map(th => th.textContent);
                for (const row of table.querySelectorAll('tbody tr')) {
                    if (row.querySelector('th').textContent === model) {
                        return row.children[names.indexOf(column)].textContent;
                    }
                }
            }
            return null;
        }""",
        [model, column],
    )
    return text


CONTRAST = """() => {
    const channel = c => {
        c /= 255;
        return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
    };
    const luminance = rgb => {
        const [r, g, b] = rgb.match(/[\\d.]+/g).map(Number);
        return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
    };
    const background = element => {
        for (let e = element; e; e = e.parentElement) {
            const colour = getComputedStyle(e).backgroundColor;
            if (!/rgba\\(.*, 0\\)$/.test(colour) && colour !== 'transparent') { return colour; }
        }
        return 'rgb(255, 255, 255)';
    };
    let lowest = 21;
    for (const element of document.body.querySelectorAll('*')) {
        const text = [...element.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
        if (!text || element.closest('[hidden]') || !element.getClientRects().length) { continue; }
        const [a, b] = [luminance(getComputedStyle(element).color), luminance(background(element))];
        lowest = Math.min(lowest, (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05));
    }
    return lowest;
}"""


def _lowest_contrast(page: Page) -> float:
    """The lowest contrast ratio (WCAG) of any visible text against its background."""
    lowest: float = page.evaluate(CONTRAST)
    return lowest


def test_the_page_shows_models_and_a_keys_usage(served: str, page: Page, tmp_path: Path) -> None:
    page.goto(f"{served}/")
    live = page.locator("#live")
    expect(live).to_contain_text("Updated", timeout=WAIT_MS)
    expect(live).to_have_attribute("aria-live", "polite")
    assert _rows(page) == PUBLIC_MODELS
    content = page.content()
    assert not any(name in content for name in RESTRICTED)
    headers = page.locator("table thead th[scope=col]").all_text_contents()
    assert headers[:6] == [
        "Model",
        "State",
        "Requests",
        "Latency p50",
        "First token p50",
        "Output tokens/s",
    ]
    assert _cell(page, "demo-model", "Requests") == "5"
    assert _cell(page, "demo-model", "Latency p50") != "\u2014"
    assert _cell(page, "idle-model", "Latency p50") == "\u2014"

    # Keyboard only: the skip link, then the key field, labelled, with a visible focus.
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    focused = page.evaluate(
        "() => { const e = document.activeElement; return [e.id, e.type, "
        "e.labels.length ? e.labels[0].textContent : '', getComputedStyle(e).outlineStyle]; }"
    )
    assert focused[:2] == ["key", "password"]
    assert focused[2].startswith("Your API key")
    assert focused[3] == "solid"
    assert page.get_by_label("Your API key").get_attribute("id") == "key"

    page.keyboard.type(ALICE)
    page.keyboard.press("Enter")
    expect(live).to_contain_text("Showing your usage as alice@example.org", timeout=WAIT_MS)
    assert _rows(page) == ALICE_MODELS
    assert _cell(page, "demo-model", "Your requests today") == "4"
    assert _cell(page, "physics-model", "Your requests today") == "1"
    assert _cell(page, "demo-model", "Tokens/min left").endswith(" of 5,000")
    assert _cell(page, "idle-model", "Tokens/min left").endswith(" of 60,000")
    # The key lives in this tab's sessionStorage: not in a cookie, not in the URL.
    stored = page.evaluate("() => Object.values(sessionStorage)")
    assert stored == [ALICE]
    assert page.evaluate("() => document.cookie") == ""
    assert ALICE not in page.url

    assert _lowest_contrast(page) >= 4.5

    shot = tmp_path / "status.png"
    page.screenshot(path=str(shot), full_page=True)
    with Image.open(shot) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert (width, height) >= (1200, 400)
        pixels = image.convert("RGB")
        colours = pixels.getcolors(maxcolors=width * height)
        assert colours is not None
        assert len(colours) >= 32, "the render has too few colours to hold text"
        commonest = max(count for count, _ in colours)
        assert commonest < 0.97 * width * height, "the render is nearly one colour"


def test_a_wrong_key_is_said_and_the_public_status_stays(served: str, page: Page) -> None:
    page.goto(f"{served}/status")
    expect(page.locator("#live")).to_contain_text("Updated", timeout=WAIT_MS)
    page.get_by_label("Your API key").fill("not-a-key")
    page.get_by_role("button", name="Show my usage").click()
    expect(page.get_by_role("alert")).to_contain_text("not accepted", timeout=WAIT_MS)
    expect(page.locator("#live")).not_to_contain_text("Showing your usage", timeout=WAIT_MS)
    assert _rows(page) == PUBLIC_MODELS
    assert page.evaluate("() => sessionStorage.length") == 0


def test_a_failing_gateway_is_shown_not_a_blank_page(served: str, page: Page) -> None:
    page.route(
        "**/status/summary",
        lambda route: route.fulfill(status=500, body="{}", content_type="application/json"),
    )
    page.goto(f"{served}/")
    expect(page.get_by_role("alert")).to_contain_text("Could not load the status", timeout=WAIT_MS)
    expect(page.locator("#live")).to_contain_text("failed")
