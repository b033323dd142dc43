"""The one error type of the data layer."""

from __future__ import annotations


class DataError(ValueError):
    """Bad or missing input data, described in one line that names the file and the fix.

    A ``ValueError`` so that the command line reports it as a user error (no traceback).
    """
