"""Playwright on Debian's chromium (Playwright cannot download browsers here), with screenshots saved
under test-artifacts/ (not committed) and a layout check run on every page at each width."""

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
SHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
WIDTHS = {"desktop": 1280, "phone": 390}

# Finds what a person would call broken: the page scrolling sideways, text cut off without an
# ellipsis, and visible boxes (links, buttons, images, cells) drawn over each other.
LAYOUT_CHECK = """() => {
  const problems = [];
  const vw = document.documentElement.clientWidth;
  const visible = el => { const r = el.getBoundingClientRect(); const s = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none'; };
  const inScroller = el => { for (let p = el.parentElement; p; p = p.parentElement) {
    const o = getComputedStyle(p).overflowX; if (o === 'auto' || o === 'scroll') return true; } return false; };
  if (document.documentElement.scrollWidth > vw + 1) {
    const wide = [...document.body.querySelectorAll('*')].filter(el => el.getBoundingClientRect().right > vw + 1 && !inScroller(el))
      .map(el => `${el.tagName}.${el.className}`).slice(0, 5);
    problems.push(`page scrolls sideways: ${document.documentElement.scrollWidth} > ${vw}: ${wide.join(', ')}`);
  }
  const boxes = [...document.querySelectorAll('main a, main button, main input, main img, main th, main td, main h1, main dt, main dd, header a, header button')].filter(visible);
  for (const el of boxes) {
    const r = el.getBoundingClientRect();
    if (r.right > vw + 1 && !inScroller(el)) problems.push(`cut off at the right: ${el.tagName} ${el.textContent.trim().slice(0, 40)}`);
    const s = getComputedStyle(el);
    if (el.scrollWidth > el.clientWidth + 1 && s.overflowX === 'hidden' && s.textOverflow !== 'ellipsis') problems.push(`text clipped: ${el.tagName} ${el.textContent.trim().slice(0, 40)}`);
  }
  for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
    const a = boxes[i], b = boxes[j];
    if (a.contains(b) || b.contains(a)) continue;
    const r = a.getBoundingClientRect(), q = b.getBoundingClientRect();
    const ox = Math.min(r.right, q.right) - Math.max(r.left, q.left), oy = Math.min(r.bottom, q.bottom) - Math.max(r.top, q.top);
    if (ox > 2 && oy > 2) problems.push(`overlap: ${a.tagName}(${a.textContent.trim().slice(0, 20)}) / ${b.tagName}(${b.textContent.trim().slice(0, 20)})`);
  }
  return problems;
}"""


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"chromium not found at {CHROMIUM}: `make test` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": WIDTHS["desktop"], "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def login(page, live_server, username: str, password: str) -> None:
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")


def check_layout(page, name: str) -> None:
    """Screenshot the page at each width and fail on layout problems."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for label, width in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(100)
        page.screenshot(path=str(SHOTS / f"{name}-{label}.png"), full_page=True)
        problems = page.evaluate(LAYOUT_CHECK)
        assert not problems, f"{name} at {width}px: {problems[:10]}"
    page.set_viewport_size({"width": WIDTHS["desktop"], "height": 900})
