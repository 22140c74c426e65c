"""`lgvit` command line: each subcommand is a small module in lgvit.commands over the library core."""

import argparse
import errno
import importlib
import sys

from . import __version__

# Modules in lgvit.commands; each defines register(subparsers) and sets `func` on its parser.
COMMANDS = ("models", "convert", "bench", "train", "eval", "predict", "export", "explain")

# What a command may raise for bad input or a failed file operation: printed as one line, exit 2.
# OSError covers FileNotFoundError, PermissionError, IsADirectoryError and a full disk.
CLEAR_ERRORS = (KeyError, TypeError, ValueError, RuntimeError, OSError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lgvit", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"lgvit.commands.{name}").register(sub)
    return parser


# The fix for an OS error, by errno; any other: check the path.
_FIXES = {
    errno.EACCES: "make it writable or choose another path",
    errno.EPERM: "make it writable or choose another path",
    errno.EROFS: "the file system is read-only: choose a path on a writable one",
    errno.ENOSPC: "free some disk space or write elsewhere",
    errno.EISDIR: "give a file path, not a folder",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
}


def error_message(e: BaseException) -> str:
    """The one-line text of a command's error; an OS error raised by the system also names its file and the fix."""
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    if "\nOriginal Traceback" in text:  # raised in a DataLoader worker: torch appended the worker's traceback
        return text.rstrip().splitlines()[-1].split(": ", 1)[-1]
    if isinstance(e, OSError) and e.strerror is not None:  # OSError(errno, text[, file]), without "[Errno N]"
        where = f": {e.filename}" if e.filename is not None else ""
        return f"{e.strerror}{where} ({_FIXES.get(e.errno, 'check the path')})"
    return text


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except CLEAR_ERRORS as e:
        if getattr(args, "debug", False):
            raise
        print(f"lgvit {args.command}: error: {error_message(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
