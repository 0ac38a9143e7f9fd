"""The HTTP API in-process: every endpoint, every kind of bad upload (never a 5xx), API keys."""

from __future__ import annotations

import asyncio
import io
import struct
import threading
import zlib

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from conftest import image_bytes
from marinelife.errors import MarineLifeError
from marinelife.infer.batching import MicroBatcher
from marinelife.infer.predictor import Predictor
from marinelife.infer.server import ServeSettings, create_app, run_server

LIMITS = dict(max_upload_bytes=300_000, max_file_bytes=100_000, max_files=3, max_pixels=1_000_000)


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    from conftest import make_bundle

    return Predictor.load(make_bundle(tmp_path_factory.mktemp("srv") / "run"))


@pytest.fixture
def client(predictor):
    app = create_app(predictor, ServeSettings(**LIMITS, formats=("JPEG", "PNG")))
    with TestClient(app) as c:
        yield c


def _post(client, *files, **kwargs):
    parts = [("file", (name, data, "application/octet-stream")) for name, data in files]
    return client.post("/v1/predict", files=parts, **kwargs)


def _png_header(width: int, height: int) -> bytes:
    """A valid PNG signature + IHDR claiming huge dimensions, with a tiny IDAT: a bomb header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_predict_one_and_several(client, predictor):
    r = _post(client, ("a.png", image_bytes()))
    assert r.status_code == 200, r.text
    body = r.json()
    [result] = body["results"]
    assert result["filename"] == "a.png" and result["label"] in predictor.classes
    assert len(result["top_k"]) == 3 and result["top_k"][0]["label"] == result["label"]
    assert body["model"]["id"] == predictor.model_id and body["timing_ms"]["total"] > 0
    jpeg = image_bytes("JPEG", seed=1)
    r = _post(client, ("b.jpg", jpeg), ("c.png", image_bytes(seed=2)))
    assert [x["filename"] for x in r.json()["results"]] == ["b.jpg", "c.png"]


def test_info_endpoints_page_and_docs(client, predictor):
    health = client.get("/v1/health").json()
    assert health["status"] == "ok" and health["auth_required"] is False
    model = client.get("/v1/model").json()
    assert model["classes"] == predictor.classes and model["limits"]["max_files"] == 3
    assert "input_size" in model["preprocess"] and model["metrics"] == {"val_acc": 0.5}
    page = client.get("/")
    assert page.status_code == 200 and "v1/predict" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN: works offline
    assert "default-src 'self'" in page.headers["content-security-policy"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text.lower()
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    "name, data, status",
    [
        ("random.jpg", bytes(range(256)) * 8, 422),
        ("truncated.jpg", image_bytes("JPEG", (200, 150))[:700], 422),
        ("empty.png", b"", 422),
        ("bomb.png", _png_header(100_000, 100_000), 422),
        ("big.png", _png_header(2000, 2000), 422),  # over max_pixels, under Pillow's own limit
        ("anim.gif", image_bytes("GIF"), 415),  # a real image in a format not allowed here
    ],
)
def test_bad_images_are_named_and_the_good_ones_still_classified(client, name, data, status):
    r = _post(client, ("ok.png", image_bytes()), (name, data))
    assert r.status_code == 200, r.text
    ok, bad = r.json()["results"]
    assert ok["filename"] == "ok.png" and ok["label"] and r.json()["classified"] == 1
    assert bad["filename"] == name and bad["status"] == status and bad["error"]
    assert bad["detail"].startswith(f"{name}: ") and "label" not in bad
    alone = _post(client, (name, data))  # nothing classified: the file's own 4xx, still named
    assert alone.status_code == status, alone.text
    body = alone.json()
    assert body["error"] == bad["error"] and body["detail"].startswith(f"{name}: ")
    assert body["results"] == [bad]


def test_bad_requests_are_4xx_json(client):
    cases = {
        "empty body": client.post("/v1/predict"),
        "json body": client.post("/v1/predict", json={"file": "x"}),
        "no boundary": client.post(
            "/v1/predict", content=b"x", headers={"content-type": "multipart/form-data"}
        ),
        "form without file": client.post("/v1/predict", data={"other": "1"}, files={"x": b"1"}),
        "text field": client.post("/v1/predict", data={"file": "abc"}),
        "wrong method": client.get("/v1/predict"),
        "unknown path": client.get("/v2/nothing"),
    }
    for what, r in cases.items():
        assert 400 <= r.status_code < 500, (what, r.status_code, r.text)
        assert "error" in r.json(), what
    assert cases["json body"].status_code == 415


def test_upload_limits(client):
    big = image_bytes(size=(400, 400))
    assert len(big) > LIMITS["max_upload_bytes"]
    r = _post(client, ("big.png", big))
    assert r.status_code == 413 and r.json()["error"] == "too_large"

    def chunked():  # no Content-Length: the limit must hold while the body streams in
        boundary = b"--b\r\nContent-Disposition: form-data; name=file; filename=x.png\r\n\r\n"
        yield boundary
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]
        yield b"\r\n--b--\r\n"

    r = client.post(
        "/v1/predict",
        content=chunked(),
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert r.status_code == 413, r.text
    # Past the file count: named, not classified; the first max_files still are.
    r = _post(client, *[(f"{i}.png", image_bytes(seed=i)) for i in range(5)])
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x.get("label") is not None for x in results] == [True, True, True, False, False]
    assert results[3]["error"] == "too_many_files" and results[3]["filename"] == "3.png"
    assert "at most 3 files per request" in results[3]["detail"]
    # Over the per-file size: that file is named with the limit, the others are classified.
    one = image_bytes(size=(200, 200))
    assert LIMITS["max_file_bytes"] < len(one) < LIMITS["max_upload_bytes"]
    r = _post(client, ("small.png", image_bytes()), ("phone.png", one))
    assert r.status_code == 200, r.text
    small, phone = r.json()["results"]
    assert small["label"] and phone["error"] == "too_large" and phone["status"] == 413
    assert phone["detail"].startswith("phone.png: 0.1 MB is over the per-file limit of")


def test_top_k_query(client, predictor):
    r = _post(client, ("a.png", image_bytes()), params={"top_k": 1})
    assert r.status_code == 200 and len(r.json()["results"][0]["top_k"]) == 1
    r = _post(client, ("a.png", image_bytes()), params={"top_k": len(predictor.classes)})
    assert len(r.json()["results"][0]["top_k"]) == len(predictor.classes)
    for bad in ("0", "99", "abc"):
        r = _post(client, ("a.png", image_bytes()), params={"top_k": bad})
        assert r.status_code == 422 and r.json()["error"] == "invalid_request", (bad, r.text)
        assert "top_k" in r.json()["detail"]


def test_openapi_documents_the_real_responses(client):
    schema = client.get("/openapi.json").json()
    responses = schema["paths"]["/v1/predict"]["post"]["responses"]
    assert {"200", "401", "413", "415", "422"} <= set(responses)
    for status in ("401", "413", "415", "422"):
        ref = responses[status]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/ErrorBody")
    assert set(schema["components"]["schemas"]["ErrorBody"]["properties"]) >= {"error", "detail"}
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    params = schema["paths"]["/v1/predict"]["post"]["parameters"]
    assert [p["name"] for p in params] == ["top_k"]
    assert "401" in schema["paths"]["/v1/model"]["get"]["responses"]


def test_taken_port_is_named_before_the_model_loads(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # tmp_path holds no model: the port is checked first, so the error is about the port.
        with pytest.raises(MarineLifeError, match=f"port {port} on 127.0.0.1 is already in use"
                           ) as info:  # fmt: skip
            run_server(tmp_path, port=port)
    assert "--port" in str(info.value)


def test_startup_line_says_what_the_compute_is():
    from marinelife.infer.server import compute_summary

    assert compute_summary("onnx", 1, 0) == (
        "ONNX Runtime, 1 forward pass at a time, ONNX Runtime's default thread count (one per "
        "physical core); --workers and --threads change this"
    )
    assert "2 forward passes at once, 4 threads each" in compute_summary("torch", 2, 4)


def test_api_key(predictor):
    app = create_app(predictor, ServeSettings(api_key="s3cret"))
    with TestClient(app) as c:
        assert c.get("/v1/health").json()["auth_required"] is True
        assert c.get("/").status_code == 200
        for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}):
            r = _post(c, ("a.png", image_bytes()), headers=headers)
            assert r.status_code == 401 and r.json()["error"] == "unauthorized"
            assert c.get("/v1/model", headers=headers).status_code == 401
        ok = {"X-API-Key": "s3cret"}
        assert _post(c, ("a.png", image_bytes()), headers=ok).status_code == 200
        assert c.get("/v1/model", headers=ok).status_code == 200


def test_concurrent_requests_share_forward_passes(predictor):
    calls = []
    original = predictor.logits

    def counting(batch):
        calls.append(len(batch))
        return original(batch)

    predictor.logits = counting
    app = create_app(predictor, ServeSettings(batch_wait_ms=250))

    async def many():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            files = [{"file": (f"{i}.png", image_bytes(seed=i), "image/png")} for i in range(8)]
            return await asyncio.gather(*(c.post("/v1/predict", files=f) for f in files))

    try:
        responses = asyncio.run(many())
    finally:
        del predictor.logits
    assert all(r.status_code == 200 for r in responses)
    assert sum(calls) == 8 and len(calls) < 8  # batched together
    labels = {r.json()["results"][0]["filename"] for r in responses}
    assert labels == {f"{i}.png" for i in range(8)}


def test_two_inference_workers_run_batches_at_the_same_time():
    # Both passes must be inside logits() at once to cross the barrier; one worker would hang.
    both_running = threading.Barrier(2, timeout=10)

    class Doubler:
        def logits(self, batch: np.ndarray) -> np.ndarray:
            both_running.wait()
            return batch * 2

    async def many():
        batcher = MicroBatcher(Doubler(), max_batch=2, wait_ms=50, workers=2)
        try:
            inputs = [np.full((1, 3), i, dtype=np.float32) for i in range(4)]
            return inputs, await asyncio.gather(*(batcher.submit(x) for x in inputs))
        finally:
            await batcher.close()

    inputs, outputs = asyncio.run(many())
    for x, y in zip(inputs, outputs):
        np.testing.assert_array_equal(y, x * 2)  # every request gets its own rows back


def test_serve_rejects_zero_workers(tmp_path):
    with pytest.raises(MarineLifeError, match="--workers 0"):
        run_server(tmp_path, workers=0)


def test_rgba_and_grey_uploads_work(client):
    for mode in ("RGBA", "L"):
        buffer = io.BytesIO()
        Image.new(mode, (40, 30)).save(buffer, format="PNG")
        assert _post(client, ("x.png", buffer.getvalue())).status_code == 200


@pytest.mark.parametrize("side", [2_000, 20_000])  # over max_pixels; 20000² also over Pillow's
def test_oversize_upload_names_the_file_and_the_limit(client, side):
    from marinelife.data.image_io import DEFAULT_MAX_PIXELS

    r = _post(client, ("ok.png", image_bytes()), ("reef 2024.png", _png_header(side, side)))
    assert r.status_code == 200, r.text
    bad = r.json()["results"][1]
    assert bad["error"] == "unreadable_image" and bad["status"] == 422
    assert bad["detail"].startswith(
        f"reef 2024.png: {side}x{side} pixels ({side * side / 1e6:.1f} MP) exceeds the pixel "
        "limit of 1 MP — downscale the image"
    )
    assert ServeSettings().max_pixels == DEFAULT_MAX_PIXELS  # one limit for serve and the CLI
