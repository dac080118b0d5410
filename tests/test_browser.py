"""The Gradio app in a real browser (Debian's chromium driven by Playwright): search, see the
gallery, click a result and watch the player start at the segment; upload a clip and see the
chart; bad input shows a message. Screenshots go to tests/artifacts/ (gitignored).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO, make_video
from tests.test_app import INDEX, start_server

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--mute-audio"]
TIMEOUT_MS = 60_000

from playwright import sync_api  # noqa: E402  (drives Debian's chromium, installed by scripts/install.sh)


@pytest.fixture(scope="module")
def server(tmp_path_factory, random_vit):
    from vidsift.pipeline.indexing import index_sequential
    from vidsift.pipeline.store import VideoStore

    base = tmp_path_factory.mktemp("browser")
    archive = base / "archive"
    # Two scenes of 2 s: with 2 s windows the second segment starts at 2.0 s.
    make_video(archive / "two-scenes.mp4", fps=10, durations=(2.0, 2.0), pairs=[("red", "circle"), ("blue", "square")])
    store = VideoStore(str(base / "db.lance"))
    assert index_sequential(store, random_vit, [str(archive / "two-scenes.mp4")], INDEX).indexed == 1
    demo, url, config = start_server(tmp_path_factory, base / "db.lance", random_vit.spec, random_vit,
                                     allow_dirs=(archive,), max_upload_mb=1)
    yield type("Server", (), {"url": url, "archive": archive, "base": base, "config": config})
    demo.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists()
                                             else shutil.which("chromium"), headless=True, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server, request):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server.url)
    page.locator("#search-query textarea, #search-query input").first.wait_for()
    failed_before = request.session.testsfailed
    yield page
    if request.session.testsfailed > failed_before:  # the call phase is reported before teardown
        shot(page, f"failed-{request.node.name}.png")
    context.close()


def upload(page, component: str, path: Path) -> None:
    """Upload through the component's own file chooser, as a user clicking it does."""
    with page.expect_file_chooser() as chooser:
        page.locator(f"#{component}").get_by_text("Click to Upload").click()
    chooser.value.set_files(str(path))
    # Uploaded: the component shows the file with a download link to its server copy.
    page.locator(f'#{component} a[download="{path.name}"]').wait_for()


def shot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def test_search_shows_gallery_and_a_click_plays_from_the_segment_start(page, server):
    page.locator("#search-query textarea, #search-query input").first.fill("a blue square")
    page.locator("#search-button").click()
    page.wait_for_function("() => document.querySelectorAll('#search-results button.thumbnail-item img').length"
                           " === 2")
    items = page.locator("#search-results button.thumbnail-item")
    captions = sorted(text.strip().split(" · ")[:2] for text in items.all_inner_texts())  # name · span · score
    assert captions == [["two-scenes.mp4", "0:00.00–0:02.00"], ["two-scenes.mp4", "0:02.00–0:04.00"]]
    shot(page, "browser-search.png")

    # Click the result that starts at 2.0 s.
    items.filter(has_text="0:02.00–0:04.00").click()
    page.wait_for_function("() => { const v = document.querySelector('#player video');"
                           " return v && v.readyState >= 1; }")
    state = page.evaluate("() => { const v = document.querySelector('#player video');"
                          " const box = v.closest('.vs-player');"
                          " return {t: v.currentTime, start: +box.dataset.start, end: +box.dataset.end,"
                          " src: v.getAttribute('src'), error: v.error && v.error.code}; }")
    assert state["error"] is None, state
    assert state["start"] == pytest.approx(2.0) and state["end"] == pytest.approx(4.0), state
    assert "vidsift/media/" in state["src"] and state["src"].endswith("#t=2.000")
    # The player starts at the segment (it may have played on a little since).
    assert state["start"] - 0.1 <= state["t"] <= state["end"] + 0.1, state
    shot(page, "browser-player.png")


def test_empty_query_shows_a_message(page):
    page.locator("#search-button").click()
    page.get_by_text("The search query is empty").first.wait_for()
    shot(page, "browser-empty-query.png")


def test_upload_a_clip_and_see_the_chart_and_timeline(page, server):
    page.get_by_role("tab", name="Tag a clip").click()
    upload(page, "tag-upload", server.archive / "two-scenes.mp4")
    page.locator("#tag-labels-text textarea").fill("a red circle\na blue square\na green star")
    page.locator("#tag-templates textarea").fill("{}")
    page.locator("#tag-classify").click()
    page.wait_for_function("() => document.querySelectorAll('#tag-timeline .vs-seg').length === 2")
    chart = page.locator("#tag-chart")
    for label in ("a red circle", "a blue square", "a green star"):
        chart.get_by_text(label).first.wait_for()
    shot(page, "browser-tag.png")


def test_a_non_video_upload_shows_a_message(page, server, tmp_path):
    notes = tmp_path / "notes.mp4"
    notes.write_text("this is not a video\n")
    page.get_by_role("tab", name="Tag a clip").click()
    upload(page, "tag-upload", notes)
    page.locator("#tag-labels-text textarea").fill("a, b")
    page.locator("#tag-classify").click()
    page.get_by_text("not a readable video").first.wait_for()
    shot(page, "browser-bad-upload.png")


# ---- confidence: the "No match" state and the badges, with the bundled shapes-tiny ---------------
@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory):
    from vidsift.models.encoder import ClipEncoder
    from vidsift.models.spec import resolve_spec
    from vidsift.pipeline.indexing import index_sequential
    from vidsift.pipeline.store import VideoStore

    base = tmp_path_factory.mktemp("browser-tiny")
    archive = base / "archive"
    make_video(archive / "red-blue.mp4", fps=10, durations=(2.0, 2.0), pairs=[("red", "circle"), ("blue", "square")],
               size=(320, 240))
    spec = resolve_spec("shapes-tiny")
    encoder = ClipEncoder.from_spec(spec)
    store = VideoStore(str(base / "db.lance"))
    assert index_sequential(store, encoder, [str(archive / "red-blue.mp4")], INDEX).indexed == 1
    demo, url, config = start_server(tmp_path_factory, base / "db.lance", spec, encoder, allow_dirs=(archive,))
    yield type("Server", (), {"url": url, "archive": archive})
    demo.close()


@pytest.fixture
def tiny_page(browser, tiny_server, request):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(tiny_server.url)
    page.locator("#search-query textarea, #search-query input").first.wait_for()
    failed_before = request.session.testsfailed
    yield page
    if request.session.testsfailed > failed_before:
        shot(page, f"failed-{request.node.name}.png")
    context.close()


def search_for(page, text: str, results: int):
    page.locator("#search-query textarea, #search-query input").first.fill(text)
    page.locator("#search-button").click()
    page.wait_for_function("n => document.querySelectorAll('#search-results button.thumbnail-item img').length"
                           " === n", arg=results)


def item_states(page) -> list[dict]:
    """Each result's caption and how opaque it is drawn."""
    return page.evaluate("() => [...document.querySelectorAll('#search-results button.thumbnail-item')].map("
                         "b => ({caption: b.innerText.trim(), opacity: +getComputedStyle(b).opacity}))")


def test_no_match_state_shows_the_closest_candidates_dimmed(tiny_page):
    search_for(tiny_page, "a green star", 2)
    banner = tiny_page.locator("#search-status .vs-nomatch")
    banner.wait_for()
    assert "No match" in banner.inner_text() and "a green star" in banner.inner_text()
    tiny_page.wait_for_function("() => [...document.querySelectorAll('#search-results button.thumbnail-item')]"
                                ".every(b => +getComputedStyle(b).opacity < 0.5)")
    items = item_states(tiny_page)
    assert all(" · weak " in item["caption"] and item["caption"].endswith("%") for item in items), items
    shot(tiny_page, "browser-no-match.png")


def test_a_match_has_its_badge_and_the_weak_result_is_dimmed(tiny_page):
    search_for(tiny_page, "a red circle", 2)
    tiny_page.locator("#search-status .vs-matches").get_by_text("1 of 2 results match").wait_for()
    tiny_page.wait_for_function("() => [...document.querySelectorAll('#search-results button.thumbnail-item')]"
                                ".some(b => +getComputedStyle(b).opacity < 0.5)")
    items = item_states(tiny_page)
    first, second = items
    assert " · ✓ " in first["caption"] and "0:00.00–0:02.00" in first["caption"] and first["opacity"] == 1, items
    assert " · weak " in second["caption"] and second["opacity"] < 0.5, items
    shot(tiny_page, "browser-match-badges.png")


def test_tagging_with_labels_the_clip_does_not_show_answers_none(tiny_page, tiny_server):
    tiny_page.get_by_role("tab", name="Tag a clip").click()
    upload(tiny_page, "tag-upload", tiny_server.archive / "red-blue.mp4")
    tiny_page.locator("#tag-labels-text textarea").fill("a green star\na white circle")
    tiny_page.locator("#tag-classify").click()
    verdict = tiny_page.locator("#tag-verdict .vs-none")
    verdict.wait_for()
    assert "None of these labels" in verdict.inner_text()
    tiny_page.wait_for_function("() => document.querySelectorAll('#tag-timeline .vs-seg').length === 2")
    assert tiny_page.locator("#tag-timeline").inner_text().count("none of these labels") == 2
    shot(tiny_page, "browser-tag-none.png")
