"""The HTTP API's real response bodies as pydantic models, so ``/docs`` and ``/openapi.json``
show what the server sends (``{error, detail}`` for every 4xx, not FastAPI's generic 422)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TopK(BaseModel):
    label: str
    probability: float


class FileResult(BaseModel):
    """One classified upload. Extra fields a newer predictor adds pass through unchanged."""

    model_config = ConfigDict(extra="allow")
    filename: str
    label: str = Field(description="top-1 class, or 'unknown' when rejected")
    confidence: float
    rejected: bool
    top_k: list[TopK]
    scores: dict[str, float] = Field(description="max_softmax and energy")


class FileError(BaseModel):
    """One upload that could not be classified; the others in the request still are."""

    filename: str
    error: str = Field(
        description="too_large, too_many_files, empty_file, unreadable_image, unsupported_format"
    )
    detail: str
    status: int = Field(description="the HTTP status this file alone would have had")


class ModelRef(BaseModel):
    id: str = Field(description="first 12 hex digits of the weights' SHA-256")
    architecture: str
    backend: str
    created: str


class Timing(BaseModel):
    decode: float
    inference: float
    total: float


class PredictResponse(BaseModel):
    """200: every uploaded file has a result, in upload order: a label or an error naming why."""

    model: ModelRef
    results: list[FileResult | FileError]
    classified: int = Field(description="how many results are labels (the rest are errors)")
    timing_ms: Timing


class ErrorBody(BaseModel):
    """Every 4xx: a machine-readable code and a sentence for people."""

    error: str
    detail: str
    results: list[FileError] | None = Field(
        None, description="on /v1/predict when no file could be classified: why, per file"
    )


class Health(BaseModel):
    status: str
    model_id: str
    backend: str
    auth_required: bool
    uptime_s: float


def error_responses(*statuses: int) -> dict[int | str, dict]:
    """``responses=`` for a route: each status documented with the real error body."""
    about = {
        401: "missing or wrong X-API-Key (when the server has a key)",
        413: "request body over the total limit (--max-upload-mb), checked while it streams in",
        415: "not multipart/form-data; or every file in a format not accepted",
        422: "no 'file' field, a bad query parameter, or no file could be classified",
    }
    return {s: {"model": ErrorBody, "description": about[s]} for s in statuses}
