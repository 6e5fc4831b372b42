"""User-facing errors: one clear line naming the bad value and the fix."""

from __future__ import annotations


class SlimpackError(Exception):
    """An error caused by the user's input; the CLI prints it as one line and exits 2."""
