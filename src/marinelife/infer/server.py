"""`marinelife serve`: a FastAPI app around a :class:`Predictor`, started by uvicorn.

Bad input never reaches a 500: request size is enforced while the body streams in (413), the
number of files is capped (413), formats are sniffed from the header (415), undecodable or
oversized images are 422, and every error is JSON ``{"error": code, "detail": message}``.
Decoding runs in a small thread pool and inference in one worker thread fed by a micro-batching
queue, so the event loop never blocks and concurrent requests share one forward pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import io
import logging
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, Request, Security, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import APIKeyHeader
from PIL import Image, UnidentifiedImageError
from starlette.exceptions import HTTPException as StarletteHTTPException

from marinelife.data.image_io import ALLOWED_FORMATS, DEFAULT_MAX_PIXELS, open_header
from marinelife.errors import ImageDecodeError, MarineLifeError
from marinelife.infer.batching import MicroBatcher
from marinelife.infer.predictor import Predictor

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"
DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
_OPEN_PATHS = ("/", "/v1/health", "/docs", "/openapi.json", "/favicon.ico")
_PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'self'"
)


@dataclass
class ServeSettings:
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES  # whole request body
    max_files: int = 16
    max_pixels: int = DEFAULT_MAX_PIXELS  # the limit (and message) of every other loader
    formats: tuple[str, ...] = ALLOWED_FORMATS
    api_key: str | None = None
    top_k: int = 3
    max_batch: int = 32
    batch_wait_ms: float = 2.0
    decode_threads: int = 4
    inference_workers: int = 1  # forward passes at once


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str):
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def _error(status: int, code: str, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


# ------------------------------------------------------------------------------ body + auth guard
class _BodyTooLarge(Exception):
    pass


class GuardMiddleware:
    """API key (before any body is read), then the body-size limit while it streams in."""

    def __init__(self, app, settings: ServeSettings):
        self.app, self.settings = app, settings

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v for k, v in scope.get("headers", [])}
        key = self.settings.api_key
        path = scope.get("path", "")
        if key and path not in _OPEN_PATHS and not path.startswith("/static-offline-docs"):
            given = headers.get(API_KEY_HEADER.lower(), b"")
            if not hmac.compare_digest(given, key.encode("utf-8")):
                what = "wrong" if given else "missing"
                response = _error(401, "unauthorized", f"{what} API key (header {API_KEY_HEADER})")
                await response(scope, receive, send)
                return
        limit = self.settings.max_upload_bytes
        declared = headers.get("content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await self._too_large(scope, receive, send)
            return
        received, exceeded, started = 0, False, False

        async def limited_receive():
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message):
            nonlocal started
            # Whatever the framework made of the aborted body (FastAPI turns it into a 400),
            # the client gets the 413 that explains it.
            if exceeded:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(_BodyTooLarge):
            await self.app(scope, limited_receive, guarded_send)
        if exceeded and not started:
            await self._too_large(scope, receive, send)

    async def _too_large(self, scope, receive, send) -> None:
        mb = self.settings.max_upload_bytes / 1024 / 1024
        response = _error(
            413, "too_large", f"request body exceeds {mb:g} MB", headers={"Connection": "close"}
        )
        await response(scope, receive, send)


# ------------------------------------------------------------------------------ decoding
def sniff_format(data: bytes, allowed: tuple[str, ...]) -> str:
    """The image format from the file header (no pixels decoded); 415 when not allowed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # open_header: an oversize image passes here, and decode names it and the limit.
            with open_header(io.BytesIO(data), allowed) as img:
                return str(img.format)
        except UnidentifiedImageError:
            pass
        except Exception as exc:  # noqa: BLE001 - any header failure is a bad upload
            raise ApiError(422, "unreadable_image", f"not a readable image ({exc})") from exc
        try:
            with Image.open(io.BytesIO(data)) as img:
                other = img.format
        except Exception:  # noqa: BLE001
            other = None
    if other:
        raise ApiError(
            415, "unsupported_format", f"{other} images are not accepted ({', '.join(allowed)})"
        )
    raise ApiError(422, "unreadable_image", "not an image (unknown format)")


def _page() -> str:
    return (resources.files("marinelife.infer") / "static" / "index.html").read_text("utf-8")


# ------------------------------------------------------------------------------ the app
def create_app(predictor: Predictor, settings: ServeSettings | None = None) -> FastAPI:
    settings = settings or ServeSettings()
    batcher = MicroBatcher(
        predictor, settings.max_batch, settings.batch_wait_ms, settings.inference_workers
    )
    decode_pool = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="marinelife-io")
    started = time.time()
    api_key_doc = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)
    auth = [Security(api_key_doc)] if settings.api_key else []

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        await batcher.close()
        decode_pool.shutdown(wait=False, cancel_futures=True)

    kwargs: dict[str, Any] = {
        "title": "marinelife",
        "version": predictor.info.marinelife_version or "unknown",
        "description": f"Marine-life image classifier ({predictor.info.architecture}).",
        "lifespan": lifespan,
    }
    try:  # Swagger UI assets shipped in a package: /docs works offline.
        from fastapi_offline import FastAPIOffline

        app = FastAPIOffline(redoc_url=None, **kwargs)
    except ImportError:  # pragma: no cover
        app = FastAPI(redoc_url=None, **kwargs)
    app.add_middleware(GuardMiddleware, settings=settings)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError):
        return _error(exc.status, exc.code, exc.detail)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException):
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}
        return _error(exc.status_code, code.get(exc.status_code, "error"), str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            return _error(
                415,
                "unsupported_media_type",
                "send multipart/form-data with one or more 'file' fields",
            )
        return _error(422, "invalid_request", "expected one or more files in the 'file' field")

    def decode(data: bytes, name: str) -> np.ndarray:
        if not data:
            raise ApiError(422, "empty_file", f"{name}: empty file (0 bytes)")
        sniff_format(data, settings.formats)
        try:
            return predictor.preprocess(data, max_pixels=settings.max_pixels, name=name)
        except ImageDecodeError as exc:
            raise ApiError(422, "unreadable_image", str(exc)) from exc

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(_page(), headers={"Content-Security-Policy": _PAGE_CSP})

    @app.get("/v1/health", summary="Liveness and model identity")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model_id": predictor.model_id,
            "backend": predictor.backend.name,
            "auth_required": bool(settings.api_key),
            "uptime_s": round(time.time() - started, 1),
        }

    @app.get("/v1/model", summary="Classes, metrics, preprocessing and limits", dependencies=auth)
    async def model() -> dict[str, Any]:
        described = predictor.describe()
        described["limits"] = {
            "max_upload_bytes": settings.max_upload_bytes,
            "max_files": settings.max_files,
            "max_pixels": settings.max_pixels,
            "formats": list(settings.formats),
            "top_k": settings.top_k,
        }
        return described

    @app.post("/v1/predict", summary="Classify one or more images", dependencies=auth)
    async def predict(
        file: Annotated[
            list[UploadFile], File(description="image file; repeat the field for more")
        ],
    ) -> dict[str, Any]:
        start = time.perf_counter()
        if len(file) > settings.max_files:
            raise ApiError(
                413,
                "too_many_files",
                f"{len(file)} files; at most {settings.max_files} per request",
            )
        names = [f.filename or f"file{i}" for i, f in enumerate(file)]
        blobs = [await f.read() for f in file]
        loop = asyncio.get_running_loop()
        jobs = [loop.run_in_executor(decode_pool, decode, b, n) for b, n in zip(blobs, names)]
        decoded = await asyncio.gather(*jobs, return_exceptions=True)
        for item in decoded:
            if isinstance(item, ApiError):
                raise item
            if isinstance(item, BaseException):
                raise item
        decoded_at = time.perf_counter()
        logits = await batcher.submit(np.stack(decoded))
        done = time.perf_counter()
        preds = predictor.from_logits(logits, top_k=settings.top_k, paths=names)
        results = []
        for pred in preds:
            entry = pred.to_dict()
            entry["filename"] = entry.pop("path")
            results.append(entry)
        return {
            "model": {
                "id": predictor.model_id,
                "architecture": predictor.info.architecture,
                "backend": predictor.backend.name,
                "created": predictor.info.created,
            },
            "results": results,
            "timing_ms": {
                "decode": round(1000 * (decoded_at - start), 2),
                "inference": round(1000 * (done - decoded_at), 2),
                "total": round(1000 * (time.perf_counter() - start), 2),
            },
        }

    app.state.predictor, app.state.settings, app.state.batcher = predictor, settings, batcher
    return app


def run_server(
    model: str | os.PathLike,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    backend: str = "onnx",
    api_key: str | None = None,
    reject: bool = True,
    threads: int = 0,
    workers: int = 1,
    settings: ServeSettings | None = None,
) -> int:
    """Load the model, build the app and run uvicorn until interrupted.

    ``workers`` forward passes run at once, each with ``threads`` threads (0: the backend's
    default for one worker, the cores shared out between several).
    """
    import uvicorn

    settings = settings or ServeSettings()
    cores = os.cpu_count() or 1
    if workers < 1 or threads < 0:
        raise MarineLifeError(
            f"--workers {workers} --threads {threads}: workers must be 1 or more, threads 0 "
            "(automatic) or more"
        )
    settings.inference_workers = workers
    if workers > 1 and not threads:  # one worker keeps the backend's own default (physical cores)
        threads = max(1, cores // workers)
    settings.api_key = api_key or os.environ.get("MARINELIFE_API_KEY") or None
    if not 0 <= port <= 65535:
        raise MarineLifeError(f"--port {port} is not a valid port")
    predictor = Predictor.load(model, backend=backend, reject=reject, threads=threads)
    for note in predictor.notes:
        log.warning("%s", note)
    if host not in ("127.0.0.1", "localhost", "::1") and not settings.api_key:
        log.warning("serving on %s without --api-key: anyone who can reach it can use it", host)
    app = create_app(predictor, settings)
    shown = f"[{host}]" if ":" in host else host
    log.info(
        "marinelife serving %s (%s, %d x %s threads) on http://%s:%d",
        model, predictor.backend.name, workers, threads or "default", shown, port,
    )  # fmt: skip
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    return 0
