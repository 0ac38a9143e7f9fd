"""`marinelife serve`: a FastAPI app around a :class:`Predictor`, started by uvicorn.

Bad input never reaches a 500, and one bad photo never costs the others their answer: every file
of a request gets a result of its own, a label or an error naming the file and why (over the
per-file size limit, past the file-count limit, format not accepted (415), undecodable or over
the pixel limit (422)); the request is 200 when at least one file was classified, otherwise the
4xx of its files. The whole body is capped while it streams in (413), and every error is JSON
``{"error": code, "detail": message}`` (the models in :mod:`marinelife.infer.api_schema`).
Decoding runs in a small thread pool and inference in one worker thread fed by a micro-batching
queue, so the event loop never blocks and concurrent requests share one forward pass.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, Query, Request, Security, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse
from fastapi.security import APIKeyHeader
from starlette.exceptions import HTTPException as StarletteHTTPException

from marinelife.errors import ImageDecodeError, MarineLifeError
from marinelife.infer.api_schema import Health, PredictResponse, error_responses
from marinelife.infer.batching import MicroBatcher
from marinelife.infer.http_guard import (
    API_KEY_HEADER,
    ApiError,
    GuardMiddleware,
    ServeSettings,
    error_response,
    file_error,
    named,
    nothing_classified,
    over_size,
    sniff_format,
)
from marinelife.infer.predictor import Predictor
from marinelife.logutil import plural

log = logging.getLogger(__name__)

_PAGE_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self' 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'self'"
)


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
        return error_response(exc.status, exc.code, exc.detail, results=exc.results)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException):
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}
        return error_response(exc.status_code, code.get(exc.status_code, "error"), str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        query = [e for e in exc.errors() if tuple(e.get("loc", ()))[:1] == ("query",)]
        if query:  # e.g. ?top_k=abc: name the parameter instead of blaming the files
            name = query[0]["loc"][-1]
            return error_response(
                422, "invalid_request", f"query parameter {name}: {query[0]['msg']}"
            )
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            return error_response(
                415,
                "unsupported_media_type",
                "send multipart/form-data with one or more 'file' fields",
            )
        return error_response(
            422, "invalid_request", "expected one or more files in the 'file' field"
        )

    def decode(data: bytes, name: str) -> np.ndarray:
        if not data:
            raise ApiError(422, "empty_file", f"{name}: empty file (0 bytes)")
        try:
            sniff_format(data, settings.formats)
            return predictor.preprocess(data, max_pixels=settings.max_pixels, name=name)
        except ImageDecodeError as exc:
            raise ApiError(422, "unreadable_image", named(name, str(exc))) from exc
        except ApiError as exc:  # the header sniff does not know the file's name
            raise ApiError(exc.status, exc.code, named(name, exc.detail)) from exc

    def top_k_of(value: int | None) -> int:
        if value is None:
            return settings.top_k
        classes = len(predictor.classes)
        if not 1 <= value <= classes:
            detail = f"top_k={value}: must be 1 to {classes} (the model's classes)"
            raise ApiError(422, "invalid_request", detail)
        return value

    async def read_upload(index: int, upload: UploadFile, name: str) -> bytes | ApiError:
        """The file's bytes, or the reason it is not read (past the count, over the size)."""
        if index >= settings.max_files:
            return ApiError(413, "too_many_files", f"{name}: not classified — at most "
                            f"{plural(settings.max_files, 'file')} per request")  # fmt: skip
        limit = settings.max_file_bytes
        if upload.size is not None and upload.size > limit:
            return ApiError(413, "too_large", over_size(name, upload.size, limit))
        data = await upload.read()
        if len(data) > limit:
            return ApiError(413, "too_large", over_size(name, len(data), limit))
        return data

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(_page(), headers={"Content-Security-Policy": _PAGE_CSP})

    @app.get("/v1/health", summary="Liveness and model identity", response_model=Health)
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model_id": predictor.model_id,
            "backend": predictor.backend.name,
            "auth_required": bool(settings.api_key),
            "uptime_s": round(time.time() - started, 1),
        }

    @app.get(
        "/v1/model",
        summary="Classes, metrics, preprocessing and limits",
        dependencies=auth,
        responses=error_responses(401),
    )
    async def model() -> dict[str, Any]:
        described = predictor.describe()
        described["limits"] = {
            "max_upload_bytes": settings.max_upload_bytes,
            "max_file_bytes": settings.max_file_bytes,
            "max_files": settings.max_files,
            "max_pixels": settings.max_pixels,
            "formats": list(settings.formats),
            "top_k": settings.top_k,
        }
        return described

    @app.post(
        "/v1/predict",
        summary="Classify one or more images",
        description="Every file gets a result in upload order: a label, or an error naming the "
        "file and why. 200 when at least one file was classified; otherwise the 4xx of its "
        "files, with the per-file reasons under `results`.",
        dependencies=auth,
        response_model=PredictResponse,
        responses=error_responses(401, 413, 415, 422),
    )
    async def predict(
        file: Annotated[
            list[UploadFile], File(description="image file; repeat the field for more")
        ],
        top_k: Annotated[
            int | None,
            Query(
                description="labels per file, 1 to the number of classes (default: the "
                "server's --top-k)"
            ),
        ] = None,  # fmt: skip
    ) -> dict[str, Any]:
        start = time.perf_counter()
        k = top_k_of(top_k)
        names = [f.filename or f"file{i}" for i, f in enumerate(file)]
        outcomes: list[Any] = [
            await read_upload(i, f, n) for i, (f, n) in enumerate(zip(file, names))
        ]
        loop = asyncio.get_running_loop()
        pending = {i: loop.run_in_executor(decode_pool, decode, o, names[i])
                   for i, o in enumerate(outcomes) if isinstance(o, bytes)}  # fmt: skip
        decoded = await asyncio.gather(*pending.values(), return_exceptions=True)
        for i, item in zip(pending, decoded):
            if isinstance(item, BaseException) and not isinstance(item, ApiError):
                raise item  # a bug, not a bad upload: keep its traceback
            outcomes[i] = item
        good = [i for i, o in enumerate(outcomes) if isinstance(o, np.ndarray)]
        if not good:
            raise nothing_classified(names, outcomes)
        decoded_at = time.perf_counter()
        logits = await batcher.submit(np.stack([outcomes[i] for i in good]))
        done = time.perf_counter()
        preds = predictor.from_logits(logits, top_k=k, paths=[names[i] for i in good])
        results: list[dict[str, Any]] = [file_error(n, o) for n, o in zip(names, outcomes)]
        for i, pred in zip(good, preds):
            entry = pred.to_dict()
            entry["filename"] = entry.pop("path")
            results[i] = entry
        return {
            "model": {
                "id": predictor.model_id,
                "architecture": predictor.info.architecture,
                "backend": predictor.backend.name,
                "created": predictor.info.created,
            },
            "results": results,
            "classified": len(good),
            "timing_ms": {
                "decode": round(1000 * (decoded_at - start), 2),
                "inference": round(1000 * (done - decoded_at), 2),
                "total": round(1000 * (time.perf_counter() - start), 2),
            },
        }

    app.state.predictor, app.state.settings, app.state.batcher = predictor, settings, batcher
    return app


def listen_socket(host: str, port: int) -> socket.socket:
    """The bound listening socket, before the model loads: a taken port is named at once
    (instead of a "serving on ..." line followed by uvicorn's ``[Errno 98]``), and uvicorn
    serves on this very socket, so nothing can take the port in between."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn decides
    sock = socket.socket(family, socket.SOCK_STREAM)
    # As uvicorn does: a server that just stopped (TIME_WAIT) does not block a restart.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise MarineLifeError(
                f"port {port} on {host} is already in use (another server, or a marinelife "
                "serve still running)",
                fix=f"pick another port with --port, e.g. --port {_free_port(host)}, or stop "
                f"the program listening on {port}",
            ) from exc
        if exc.errno == errno.EACCES:
            raise MarineLifeError(
                f"port {port} needs administrator rights on this system",
                fix="use a port above 1023, e.g. --port 8000",
            ) from exc
        raise MarineLifeError(
            f"cannot listen on {host} port {port} ({exc.strerror or exc})",
            fix="--host must be an address of this machine: 127.0.0.1 (only this machine) or "
            "0.0.0.0 (every network interface)",
        ) from exc
    except (socket.gaierror, UnicodeError) as exc:
        sock.close()
        raise MarineLifeError(f"--host {host!r} is not a valid address ({exc})") from exc
    return sock


def _free_port(host: str) -> int:
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.bind((host, 0))
            return int(probe.getsockname()[1])
    except OSError:
        return 8001


def compute_summary(backend: str, workers: int, threads: int) -> str:
    """The start-up line's account of the compute, in words ("1 x default threads" was not)."""
    engine = {"onnx": "ONNX Runtime", "torch": "PyTorch"}.get(backend, backend)
    passes = "1 forward pass at a time" if workers == 1 else f"{workers} forward passes at once"
    each = (
        f"{threads} thread{'s' if threads != 1 else ''} each"
        if threads
        else f"{engine}'s default thread count (one per physical core)"
    )
    return f"{engine}, {passes}, {each}; --workers and --threads change this"


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
        raise MarineLifeError(f"--port {port} is not a valid port", fix="use 1024 to 65535")
    sock = listen_socket(host, port)
    port = int(sock.getsockname()[1])  # --port 0: the one the system picked
    try:
        return _serve(model, sock, host=host, port=port, backend=backend, reject=reject,
                      threads=threads, workers=workers, settings=settings)  # fmt: skip
    finally:
        sock.close()


def _serve(model: str | os.PathLike, sock: socket.socket, *, host: str, port: int, backend: str,
           reject: bool, threads: int, workers: int, settings: ServeSettings) -> int:  # fmt: skip
    import uvicorn

    predictor = Predictor.load(model, backend=backend, reject=reject, threads=threads)
    for note in predictor.notes:
        log.warning("%s", note)
    if host not in ("127.0.0.1", "localhost", "::1") and not settings.api_key:
        log.warning("serving on %s without --api-key: anyone who can reach it can use it", host)
    app = create_app(predictor, settings)
    shown = f"[{host}]" if ":" in host else host
    log.info("marinelife serving %s on http://%s:%d (%s)", model, shown, port,
             compute_summary(predictor.backend.name, workers, threads))  # fmt: skip
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
    return 0
