"""Shared CLI plumbing: one-line errors, exit codes, and common options."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from edgekit.errors import EdgekitError


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def make_parser(prog: str, description: str) -> Parser:
    return Parser(prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_contract_flags(p: argparse.ArgumentParser) -> None:
    """Flags for models that carry no edgekit contract."""
    g = p.add_argument_group("for models without an embedded contract")
    g.add_argument("--labels", metavar="FILE", help="labels file, one per line")
    g.add_argument("--mean", metavar="M", type=_floats, help="normalization mean, e.g. 127.5 or 0.485,0.456,0.406")
    g.add_argument("--std", metavar="S", type=_floats, help="normalization std, e.g. 127.5 or 0.229,0.224,0.225")
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


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


def _int_at_least(minimum: int, what: str):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {v}")
        return v

    return parse


positive_int = _int_at_least(1, "a positive number")
non_negative_int = _int_at_least(0, "zero or more")


def float_in(low: float, high: float, *, low_open: bool = False):
    """An argparse type for a number in [low, high] (or (low, high] with ``low_open``)."""

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if v < low or v > high or (low_open and v == low):
            bound = f"more than {low:g}" if low_open else f"{low:g} or more"
            raise argparse.ArgumentTypeError(f"must be {bound}" + (f" and at most {high:g}" if high != float("inf")
                                                                  else "") + f", got {text}")
        return v

    return parse


def run_main(prog: str, parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int | None],
             argv: Sequence[str] | None = None) -> int:
    """Parse, run, and turn failures into one line on stderr and a non-zero exit code."""
    args = parser.parse_args(argv)
    try:
        return int(run(args) or 0)
    except EdgekitError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        if os.environ.get("EDGEKIT_DEBUG"):
            raise
        msg = str(exc).strip().splitlines()
        print(f"{prog}: internal error: {exc.__class__.__name__}: {msg[0] if msg else ''} "
              "(please report it; EDGEKIT_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1
