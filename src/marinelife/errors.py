"""The one exception type users see.

User mistakes (bad paths, bad layouts, bad files, bad config values) raise :class:`MarineLifeError`;
the CLI prints its message as one line and exits with code 2. Bugs keep their traceback.
"""

from __future__ import annotations

from pathlib import Path


class MarineLifeError(Exception):
    """A problem the user can fix; the message names the path (when any) and the fix."""

    def __init__(self, message: str, *, path: str | Path | None = None, fix: str | None = None):
        self.path = Path(path) if path is not None else None
        self.fix = fix
        parts = [f"{path}: {message}" if path is not None else message]
        if fix:
            parts.append(fix)
        super().__init__(" — ".join(parts))


class ImageDecodeError(MarineLifeError):
    """An image file that cannot be decoded into pixels (corrupt, truncated, not an image, bomb)."""
