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
    app = create_app(Predictor.load(tiny_bundle), ServeSettings(api_key=None))
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
