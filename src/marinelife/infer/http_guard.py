"""What `marinelife serve` enforces before a model sees anything, and how it says no.

The settings, the API key and whole-body limit (:class:`GuardMiddleware`, checked while the body
streams in), the header sniff of each upload, and the JSON error bodies: one file that is over a
limit or unreadable becomes an error entry naming it, never the whole request's failure.
"""

from __future__ import annotations

import contextlib
import hmac
import io
import warnings
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse
from PIL import Image, UnidentifiedImageError

from marinelife.data.image_io import ALLOWED_FORMATS, DEFAULT_MAX_PIXELS, open_header

API_KEY_HEADER = "X-API-Key"
MB = 1024 * 1024
# Per file: a phone photo is 3-12 MB (a 48 MP JPEG up to ~20); per request: room for a batch.
DEFAULT_MAX_FILE_BYTES = 25 * MB
DEFAULT_MAX_UPLOAD_BYTES = 100 * MB
OPEN_PATHS = ("/", "/v1/health", "/docs", "/openapi.json", "/favicon.ico")


@dataclass
class ServeSettings:
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES  # whole request body, all files together
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES  # each file; a bigger one is named, not read
    max_files: int = 16  # per request; files past it are named in the results, not classified
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
        self.results: list[dict[str, Any]] | None = None  # per file, when a request failed whole


def error_response(
    status: int,
    code: str,
    detail: str,
    headers: dict | None = None,
    results: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"error": code, "detail": detail}
    if results is not None:
        body["results"] = results
    return JSONResponse(body, status_code=status, headers=headers)


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
        if key and path not in OPEN_PATHS and not path.startswith("/static-offline-docs"):
            given = headers.get(API_KEY_HEADER.lower(), b"")
            if not hmac.compare_digest(given, key.encode("utf-8")):
                what = "wrong" if given else "missing"
                response = error_response(
                    401, "unauthorized", f"{what} API key (header {API_KEY_HEADER})"
                )
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
        total, each = self.settings.max_upload_bytes / MB, self.settings.max_file_bytes / MB
        response = error_response(
            413,
            "too_large",
            f"request body exceeds {total:g} MB (all files together; {each:g} MB per file) — "
            "send fewer photos per request",
            headers={"Connection": "close"},
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


def named(name: str, detail: str) -> str:
    return detail if detail.startswith(f"{name}:") else f"{name}: {detail}"


def over_size(name: str, size: int, limit: int) -> str:
    return (
        f"{name}: {size / MB:.1f} MB is over the per-file limit of {limit / MB:g} MB — "
        "downscale or re-save it smaller"
    )


def file_error(name: str, outcome: Any) -> dict[str, Any]:
    if not isinstance(outcome, ApiError):
        return {}  # replaced by the file's prediction
    return {"filename": name, "error": outcome.code, "detail": outcome.detail,
            "status": outcome.status}  # fmt: skip


def nothing_classified(names: list[str], outcomes: list[Any]) -> ApiError:
    """No file could be classified: the files' own status when they agree (one bad file keeps
    its 415 or 422), else 422, with every file's reason in ``results``."""
    errors = [o for o in outcomes if isinstance(o, ApiError)]
    statuses, codes = {e.status for e in errors}, {e.code for e in errors}
    status = statuses.pop() if len(statuses) == 1 else 422
    code = codes.pop() if len(codes) == 1 else "no_file_classified"
    shown = "; ".join(e.detail for e in errors[:3])
    more = f"; and {len(errors) - 3} more" if len(errors) > 3 else ""
    if len(errors) > 1:
        shown = f"none of the {len(errors)} files could be classified: {shown}"
    error = ApiError(status, code, shown + more)
    error.results = [file_error(n, o) for n, o in zip(names, outcomes)]
    return error
