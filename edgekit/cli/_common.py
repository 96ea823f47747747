"""Shared CLI plumbing: one-line errors, exit codes, and common options."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from edgekit.errors import EdgekitError, first_line


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors."""

    def error(self, message: str):
        self.exit(2, printable(f"{self.prog}: error: {message} (see {self.prog} --help)") + "\n")


def make_parser(prog: str, description: str) -> Parser:
    return Parser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_contract_flags(p: argparse.ArgumentParser) -> None:
    """Flags for models that carry no edgekit contract."""
    g = p.add_argument_group("for models without an embedded contract")
    g.add_argument("--labels", metavar="FILE", help="labels file, one per line")
    g.add_argument("--mean", metavar="M", type=_floats, help="normalization mean, e.g. 127.5 or 0.485,0.456,0.406")
    g.add_argument("--std", metavar="S", type=_positive_floats,
                   help="normalization std, e.g. 127.5 or 0.229,0.224,0.225")
    g.add_argument("--color-order", choices=("RGB", "BGR", "GRAY"), type=str.upper, help="input colour order")
    g.add_argument("--logits", action="store_true", default=None,
                   help="the model outputs logits (softmax, or sigmoid for one unit, is applied)")


def contract_overrides(args) -> dict:
    from edgekit.contract import read_labels

    return {
        "labels": read_labels(args.labels) if args.labels else None,
        "mean": args.mean,
        "std": args.std,
        "color_order": args.color_order,
        "logits": args.logits,
    }


def _floats(text: str, *, positive: bool = False) -> tuple[float, ...]:
    from edgekit.limits import OptionError, check_number

    try:
        values = tuple(check_number(v, "value", low=0 if positive else None, low_open=True) for v in text.split(","))
    except OptionError:
        what = "positive" if positive else "finite"
        raise argparse.ArgumentTypeError(f"expected {what} numbers separated by commas, got {text!r}") from None
    if len(values) not in (1, 3):
        raise argparse.ArgumentTypeError(f"expected one number or three (one per channel), got {text!r}")
    return values


def _positive_floats(text: str) -> tuple[float, ...]:
    return _floats(text, positive=True)


def _argparse_type(check: Callable[[str], object]):
    """Wrap one of edgekit.limits' checks as an argparse type (its message, without the option name)."""

    def parse(text: str):
        from edgekit.limits import OptionError

        try:
            return check(text)
        except OptionError as exc:
            raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[-1]) from None

    return parse


def _int_at_least(minimum: int, what: str = ""):
    from edgekit.limits import check_int

    return _argparse_type(lambda text: check_int(text, "value", low=minimum))


positive_int = _int_at_least(1)
non_negative_int = _int_at_least(0)


def int_in(low: int, high: int):
    """An argparse type for a whole number in [low, high]."""
    from edgekit.limits import check_int

    return _argparse_type(lambda text: check_int(text, "value", low=low, high=high))


def float_in(low: float | None, high: float | None, *, low_open: bool = False, high_open: bool = False):
    """An argparse type for a finite number in [low, high] (open ends with ``low_open``/``high_open``;
    None for no bound). NaN and infinity are always refused."""
    from edgekit.limits import check_number

    if high == float("inf"):
        high = None
    return _argparse_type(lambda text: check_number(text, "value", low=low, high=high, low_open=low_open,
                                                    high_open=high_open))


def threads_type(text: str) -> int:
    """--threads: 1 to edgekit.limits.max_threads()."""
    from edgekit.limits import check_threads

    return _argparse_type(check_threads)(text)


def printable(text: str) -> str:
    """``text`` on one line: newlines and other control characters in file names are escaped, as repr does."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _say(line: str) -> None:
    print(printable(line), file=sys.stderr)


def _empty_value(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str | None:
    """The first option (or positional argument) given an empty string, named as the user wrote it."""
    for action in parser._actions:
        value = getattr(args, action.dest, None)
        if value == action.default:
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, str) and not v.strip() for v in values):
            return action.option_strings[-1] if action.option_strings else (action.metavar or action.dest)
    return None


def run_main(prog: str, parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int | None],
             argv: Sequence[str] | None = None, *, memory_cap: bool = False) -> int:
    """Parse, run, and turn failures into one line on stderr and a non-zero exit code."""
    args = parser.parse_args(argv)
    empty = _empty_value(parser, args)
    if empty:  # "" is never a path, a name or a token: Path("") is the current folder, and --token "" no token
        parser.error(f"{empty}: an empty value (give one, or leave the option out)")
    from edgekit.limits import MEMORY_SHARE, cap_memory

    # TensorFlow commands: a model that allocates more than the machine has gets an error, not the OOM killer.
    # Only from the command line (not a test calling main([...])), and not for the light runtime commands,
    # which run on small boards where shared libraries alone map a large share of the address space.
    cap = cap_memory() if memory_cap and argv is None else None
    try:
        return int(run(args) or 0)
    except EdgekitError as exc:
        _say(f"{prog}: error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        _say(f"{prog}: interrupted")
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:  # disk full, permissions, a file vanishing mid-run: name the file, say the problem
        if os.environ.get("EDGEKIT_DEBUG"):
            raise
        where = exc.filename if exc.filename is not None else "output"
        _say(f"{prog}: error: {where}: {exc.strerror or first_line(exc)}")
        return 2
    except MemoryError:
        _say(f"{prog}: error: out of memory (the input is too large for this machine)")
        return 2
    except Exception as exc:
        if os.environ.get("EDGEKIT_DEBUG"):
            raise
        if exc.__class__.__name__ == "ResourceExhaustedError":  # TensorFlow's allocation failure
            limit = f" (edgekit caps a command at {cap / 2**30:.1f} GB, {MEMORY_SHARE:.0%} of this machine)" if cap \
                else ""
            _say(f"{prog}: error: the model asked for more memory than this machine allows{limit}; a model file "
                 "that allocates huge tensors at run time is broken or hostile")
            return 2
        msg = str(exc).strip().splitlines()
        _say(f"{prog}: internal error: {exc.__class__.__name__}: {msg[0] if msg else ''} "
             "(please report it; EDGEKIT_DEBUG=1 shows the traceback)")
        return 1
