"""The upload page in headless Chromium: pick a photo, see labels with bars, save a screenshot.

Needs Debian's ``chromium`` (apt) and the ``playwright`` Python package; the Playwright-managed
browsers are never downloaded. The screenshot lands in ``tests/artifacts/upload_page.png``.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from conftest import free_port, image_bytes
from marinelife.infer.predictor import Predictor
from marinelife.infer.server import ServeSettings, create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (Python) not installed")
if not Path(CHROMIUM).exists():
    pytest.skip("Debian chromium not installed (apt-get install chromium)", allow_module_level=True)


@pytest.fixture
def server_url(tiny_bundle):
    import uvicorn

    port = free_port()
    # Small limits, so a few generated photos cross them: 2 per upload, 200 kB per photo.
    settings = ServeSettings(api_key=None, max_files=2, max_file_bytes=200_000)
    app = create_app(Predictor.load(tiny_bundle), settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.mark.slow
def test_upload_page_shows_labels(server_url, tiny_bundle, tmp_path):
    photo = tmp_path / "reef.jpg"
    photo.write_bytes(image_bytes("JPEG", size=(320, 240), seed=3))
    classes = Predictor.load(tiny_bundle).classes
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 700})
            outside = []
            page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(
                (server_url, "blob:", "data:")) else None)  # fmt: skip
            page.goto(server_url)
            sync_api.expect(page.locator("#model")).to_contain_text("4 classes", timeout=20_000)
            page.set_input_files("#file", str(photo))
            card = page.locator(".card").first
            sync_api.expect(card).to_be_visible(timeout=20_000)
            headline = card.locator("h2").inner_text()
            top = card.locator(".toplabel").all_inner_texts()
            assert len(top) == 3 and set(top) <= set(classes)
            assert headline in classes or headline.startswith("Unknown")
            assert card.locator(".bar div").count() == 3
            assert card.locator("img").evaluate("img => img.naturalWidth") == 320
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "upload_page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 5_000
            # A broken upload shows the server's message instead of failing silently.
            bad = tmp_path / "broken.jpg"
            bad.write_bytes(b"\xff\xd8\xff garbage")
            page.set_input_files("#file", str(bad))
            sync_api.expect(page.locator("#error")).to_contain_text("422", timeout=20_000)
            assert outside == []  # nothing fetched from anywhere but this server
        finally:
            browser.close()


@pytest.mark.slow
def test_one_bad_photo_does_not_cost_the_others(server_url, tiny_bundle, tmp_path):
    """Good photos are classified beside a broken one (named with its reason), a photo over the
    per-file limit is named without being sent, and more photos than one upload allows are all
    classified in several uploads with a visible message."""
    classes = Predictor.load(tiny_bundle).classes
    good = []
    for i in range(5):
        path = tmp_path / f"dive {i}.jpg"
        path.write_bytes(image_bytes("JPEG", size=(160, 120), seed=10 + i))
        good.append(str(path))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff garbage")
    huge = tmp_path / "huge.png"
    huge.write_bytes(image_bytes("PNG", size=(320, 320), seed=5))  # ~300 kB > 200 kB
    assert huge.stat().st_size > 200_000
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 700})
            posts = []
            page.on("request", lambda r: posts.append(r) if r.method == "POST" else None)
            page.goto(server_url)
            sync_api.expect(page.locator("#model")).to_contain_text("4 classes", timeout=20_000)
            sync_api.expect(page.locator("#hint")).to_contain_text("0.2 MB per photo")
            page.set_input_files("#file", [good[0], str(broken), good[1]])
            status = page.locator("#status")
            sync_api.expect(status).to_contain_text("2 of 3 photos classified", timeout=20_000)
            failed = page.locator(".card.failed")
            assert failed.count() == 1
            assert "broken.jpg" in failed.locator(".name").inner_text()
            assert failed.locator(".reason").inner_text().startswith("broken.jpg: ")
            labelled = page.locator(".card:not(.failed)")
            assert labelled.count() == 2
            for headline in labelled.locator("h2").all_inner_texts():
                assert headline in classes or headline.startswith("Unknown")
            assert page.locator("#error").inner_text() == ""  # the request itself was fine
            assert len(posts) == 2  # 3 photos at 2 per upload
            # Over the per-file size: named on its card, never sent.
            sent_before = len(posts)
            page.set_input_files("#file", str(huge))
            sync_api.expect(status).to_contain_text("0 of 1 photo classified", timeout=20_000)
            reason = page.locator(".card.failed").first.locator(".reason").inner_text()
            assert reason.startswith("huge.png: 0.3 MB is over the per-file limit of 0.2 MB")
            assert len(posts) == sent_before
            # More photos than one upload takes: a visible message, and every photo classified.
            page.set_input_files("#file", good)
            sync_api.expect(status).to_contain_text("5 of 5 photos classified", timeout=30_000)
            notice = page.locator("#notice")
            sync_api.expect(notice).to_be_visible()
            assert "more than 2 per upload" in notice.inner_text()
            assert "3 uploads" in notice.inner_text()
            assert page.locator(".card:not(.failed)").count() == 2 + 5
        finally:
            browser.close()
