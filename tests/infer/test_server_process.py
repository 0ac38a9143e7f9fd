"""A real `marinelife serve` process on a free loopback port, queried over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from conftest import free_port, image_bytes


@pytest.mark.slow
def test_serve_process_answers_over_http(tiny_bundle, tmp_path):
    port = free_port()
    log = (tmp_path / "serve.log").open("w")
    env = {**os.environ, "MARINELIFE_API_KEY": "k3y"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "marinelife", "serve", str(tiny_bundle), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                health = httpx.get(f"{base}/v1/health", timeout=2).json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.3)
        assert health["backend"] == "onnx" and health["auth_required"] is True
        key = {"X-API-Key": "k3y"}
        files = [("file", ("a.png", image_bytes(), "image/png")),
                 ("file", ("b.jpg", image_bytes("JPEG"), "image/jpeg"))]  # fmt: skip
        r = httpx.post(f"{base}/v1/predict", files=files, headers=key, timeout=30)
        assert r.status_code == 200, r.text
        assert [x["filename"] for x in r.json()["results"]] == ["a.png", "b.jpg"]
        bad = httpx.post(f"{base}/v1/predict", files={"file": ("x.jpg", b"junk")}, headers=key)
        assert bad.status_code == 422
        assert httpx.post(f"{base}/v1/predict", files=files).status_code == 401
        assert httpx.get(f"{base}/").status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    text = (tmp_path / "serve.log").read_text()
    assert "exported" in text and "127.0.0.1" in text and "Traceback" not in text
