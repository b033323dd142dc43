"""The ``mfdepth`` command.

Each subcommand lives in its own module, which defines ``NAME``, ``HELP``, ``add_arguments(parser)``
and ``run(args) -> int``. Only modules listed in ``SUBCOMMANDS`` are offered, and a module is listed
only once its command works end to end. Modules are imported when the command line is parsed, so
``mfdepth --help`` stays fast enough but torch-heavy imports stay inside ``run``.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import sys

from mfdepth import __version__
from mfdepth.config import ConfigError
from mfdepth.errors import UserError

SUBCOMMANDS: tuple[str, ...] = (
    "mfdepth.demo",
    "mfdepth.synth.command",
    "mfdepth.data.command",
    "mfdepth.training.command",
    "mfdepth.training.masks_command",
    "mfdepth.evaluation.command",
    "mfdepth.inference.predict_command",
    "mfdepth.inference.export_command",
    "mfdepth.bench",
)


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by the user's input or files: shown as one line, never as a traceback."""
    from mfdepth.checkpoint import CheckpointError
    from mfdepth.data.errors import DataError
    from mfdepth.training.loop import DepthCollapseError, NonFiniteLossError

    return (ConfigError, UserError, FileNotFoundError, DataError, CheckpointError, NonFiniteLossError,
            DepthCollapseError)


_OS_ERROR_HINTS = {
    errno.ENOSPC: "free disk space (or write elsewhere) and run again; training resumes from its last checkpoint",
    errno.EDQUOT: "free space within your disk quota (or write elsewhere) and run again",
    errno.EROFS: "the file system is read-only: give a writable --run-dir / run_dir or --out",
    errno.EACCES: "no permission: give a folder you can write (--run-dir / run_dir, --out) or read",
    errno.EPERM: "no permission: give a folder you can write (--run-dir / run_dir, --out) or read",
    errno.ENOTDIR: "a file stands where a folder is needed: give another path",
    errno.EEXIST: "a file of that name exists where a folder is needed: give another path",
    errno.EISDIR: "that is a folder, not a file: give the file's path",
}
"""Operating-system errors caused by the user's paths or disk, shown as one line with the fix."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mfdepth",
        description="Self-supervised multi-frame monocular depth estimation in dynamic scenes.",
    )
    parser.add_argument("--version", action="version", version=f"mfdepth {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMANDS:
        module = importlib.import_module(module_name)
        command = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except _user_errors() as err:
        from mfdepth.data.errors import unwrap_worker_error

        print(f"mfdepth {args.command}: error: {unwrap_worker_error(err) or err}", file=sys.stderr)
        return 2
    except OSError as err:  # FileNotFoundError is handled above
        hint = _OS_ERROR_HINTS.get(err.errno)
        if hint is None:
            raise
        where = f"{err.filename}: " if err.filename else ""
        print(f"mfdepth {args.command}: error: {where}{err.strerror or err}; {hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mfdepth {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
