"""The one error type of the data layer."""

from __future__ import annotations


class DataError(ValueError):
    """Bad or missing input data, described in one line that names the file and the fix.

    A ``ValueError`` so that the command line reports it as a user error (no traceback).
    """


def unwrap_worker_error(err: BaseException) -> BaseException | None:
    """The one-line error a DataLoader worker raised, rebuilt from the copy torch re-raises in the main
    process (which carries "Caught DataError in DataLoader worker process 0" and the worker's traceback).

    Returns None when ``err`` did not come from a worker, so with any number of workers the user sees
    the same line as with ``num_workers=0``.
    """
    text = str(err)
    lines = text.strip().splitlines()
    if len(lines) < 2 or "in DataLoader worker process" not in lines[0]:
        return None
    _, _, original = lines[-1].partition(": ")
    try:
        return type(err)(original)
    except Exception:  # an exception type that cannot be built from one message
        return None
