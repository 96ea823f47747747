"""edge-predict: classify images or folders with a .tflite or .onnx model (no TensorFlow needed).

Given a folder with one subfolder per class (named like the model's labels), it also reports accuracy,
per-class accuracy and a confusion matrix. A localizer (its contract says localize) prints its class, score and
box (x_min, y_min, x_max, y_max in the image's pixels); --draw DIR writes each image with its box drawn."""

from __future__ import annotations

import contextlib
import os
import sys

from edgekit.cli._common import (
    add_contract_flags,
    contract_overrides,
    make_parser,
    positive_int,
    run_main,
    threads_type,
)


def build_parser():
    from edgekit.runtime.backends import BACKENDS

    p = make_parser("edge-predict", __doc__ + "\n\nexamples:\n  edge-predict model_int8.tflite cat.jpg\n"
                    "  edge-predict model.tflite photos/val --json\n  edge-predict model.onnx photos/ --csv > out.csv")
    p.add_argument("model", help="a .tflite or .onnx model")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument("--top-k", type=positive_int, default=3, help="predictions per image (default: 3)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="JSON lines: one object per image, then a summary")
    fmt.add_argument("--csv", action="store_true", help="CSV: one row per image (the summary goes to stderr)")
    p.add_argument("--threads", type=threads_type,
                   help="inference threads (default: all cores, up to 4; for 50 images or more, 1 or that, "
                        "whichever a short timing at load finds faster)")
    p.add_argument("--backend", choices=BACKENDS,
                   help="force an interpreter (default: from the file type)")
    p.add_argument("--draw", metavar="DIR", help="write each image with its prediction drawn (a localizer's box, "
                                                 "else the top label) into DIR, as PNG")
    p.add_argument("--force", action="store_true", help="overwrite files that exist in --draw DIR")
    p.add_argument("--image-library", choices=("auto", "pillow", "opencv"), default="auto",
                   help="decode and resize with Pillow or OpenCV (default: Pillow's pixels for files, decoded by "
                        "OpenCV for plain JPEGs and PNGs, where they are the same)")
    add_contract_flags(p)
    return p


@contextlib.contextmanager
def _stdout_for_data_only():
    """For --json and --csv: stdout carries the data and nothing else. File descriptor 1 is pointed at stderr
    while the model loads and runs (native libraries such as onnxruntime and LiteRT log there from C++), and
    Python's sys.stdout writes to the original stdout through a descriptor of its own."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # a StringIO or pytest's capture: no native code reaches it
        fd = None
    if fd != 1:
        yield
        return
    original = sys.stdout
    original.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    data = os.fdopen(saved, "w", buffering=1 if original.line_buffering else -1, encoding=original.encoding,
                     errors=original.errors)
    sys.stdout = data
    failure: OSError | None = None
    try:
        yield
    finally:
        try:
            data.flush()
        except BrokenPipeError:  # a closed pipe (| head): nothing more to say
            pass
        except OSError as exc:  # a full disk (> /dev/full, say): the data is lost, and the user must know
            failure = exc
        os.dup2(saved, 1)
        sys.stdout = original
        try:
            data.close()
        except OSError:  # the same failure again (its buffer is still unwritten); reported below
            pass
    if failure is not None:
        raise failure


def _csv_text(text: str) -> str:
    """A file name for the CSV: the csv module quotes newlines and commas; bytes that are not valid text in the
    output's encoding (an undecodable file name) are written in repr form."""
    from edgekit.runtime.evaluate import printable

    try:
        text.encode(sys.stdout.encoding or "utf-8")
        return text
    except UnicodeEncodeError:
        return printable(text)


def run(args) -> int:
    from edgekit.errors import InputFileError
    from edgekit.runtime.evaluate import printable

    try:
        if args.json or args.csv:
            with _stdout_for_data_only():
                return _run(args)
        return _run(args)
    except InputFileError as exc:  # a file name with a newline or an escape sequence must not split the line
        if printable(exc.path) != exc.path:
            raise InputFileError(printable(exc.path), exc.problem) from None
        raise


def _run(args) -> int:
    from pathlib import Path

    from edgekit.errors import InputFileError
    from edgekit.runtime import collect_images
    from edgekit.runtime.evaluate import labelled_truth, printable

    # check the inputs before loading the model; broken entries inside folders are reported one by one below
    images = collect_images(args.inputs, keep_irregular=True)
    drawn = _draw_paths(images, args.draw, args.force) if args.draw else {}
    clf, roots = _open(args, images)
    out = _Output(args, clf, images)
    failed = 0
    for path, preds in clf.classify_stream(images, top_k=args.top_k):  # decodes the next file while this one runs
        if isinstance(preds, InputFileError):  # one bad file does not stop the rest
            print(f"edge-predict: error: {printable(preds.path)}: {preds.problem}", file=sys.stderr)
            failed += 1
            continue
        if isinstance(preds, MemoryError):
            print(f"edge-predict: error: {out.shown[path]}: too large to decode in this machine's memory",
                  file=sys.stderr)
            failed += 1
            continue
        out.image(path, preds, labelled_truth(Path(path), roots))
        if drawn:
            failed += _draw(path, preds, drawn[path], args.force)
    out.summary()
    if failed:
        print(f"edge-predict: {failed} of {len(images)} images could not be read", file=sys.stderr)
        return 2
    return 0


def _draw_paths(images, folder: str, force: bool) -> dict:
    """Each image's annotated copy in ``folder``: its name as a PNG (name_2.png, ... when names repeat); every one
    checked before the model runs (an existing file is refused without --force)."""
    from pathlib import Path

    from edgekit import fileio
    from edgekit.errors import InputFileError

    root = fileio.probe_folder(Path(folder))
    inputs = {Path(p).resolve() for p in images}
    out, used = {}, set()
    for path in images:
        stem, n = Path(path).stem, 1
        name = f"{stem}.png"
        while name in used:
            n += 1
            name = f"{stem}_{n}.png"
        used.add(name)
        if (root / name).resolve() in inputs:  # --force must never draw over an image being read
            raise InputFileError(root / name, "is one of the input images; choose another --draw folder")
        out[path] = fileio.check_writable(root / name, force=force)
    return out


def _draw(path, preds, target, force: bool) -> int:
    """Write ``path`` with its box (a localizer) or its top label drawn; 1 when it could not be, else 0."""
    import io

    import numpy as np
    from PIL import Image

    from edgekit import fileio
    from edgekit.errors import InputFileError
    from edgekit.pixels import load_rgb
    from edgekit.runtime.evaluate import printable
    from edgekit.runtime.localizer import draw_box

    try:
        image = np.array(load_rgb(path), np.uint8, copy=True, order="C")  # writable, for OpenCV to draw on
        top = preds[0]
        text = f"{top.label} {top.score:.2f}"
        box = getattr(top, "box", None)
        draw_box(image, box, text)
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        fileio.write_bytes(target, buf.getvalue(), force=force)
    except (InputFileError, OSError) as exc:
        print(f"edge-predict: error: {printable(str(target))}: could not draw: {exc}", file=sys.stderr)
        return 1
    return 0


#: From this many images on, edge-predict without --threads times the model at 1 thread and at the default first.
PROBE_FROM_IMAGES = 50


def _open(args, images: list):
    """The classifier (its notes said on stderr), and the labelled folders among the inputs. Without --threads, a
    run over many images first times the model at 1 thread and at the default, and keeps the faster."""
    from edgekit.runtime import Classifier
    from edgekit.runtime.evaluate import labelled_roots, printable

    threads, notes = args.threads, []
    if threads is None and len(images) >= PROBE_FROM_IMAGES:
        from edgekit.runtime.threads import choose_threads, decode_time_ms

        # over a folder the decoding counts too: on a core of its own beside fewer threads, or sharing them all
        decode_ms = decode_time_ms(images, args.image_library)
        choice = choose_threads(args.model, backend=args.backend, decode_ms=decode_ms)
        threads = choice.threads
        notes.append(choice.note())
    clf = Classifier.open(args.model, threads=threads, backend=args.backend, image_library=args.image_library,
                          **contract_overrides(args))
    for note in clf.notes + notes:
        print(f"note: {printable(note)}", file=sys.stderr)
    roots, notes = labelled_roots(args.inputs, clf.contract.labels)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return clf, roots


class _Output:
    """One line (text, a JSON object or a CSV row) per image, then the accuracy of the labelled ones."""

    def __init__(self, args, clf, images):
        import csv

        from edgekit.runtime.evaluate import Evaluation, printable

        self.args, self.clf = args, clf
        self.ev = Evaluation(clf.contract.labels)
        self.writer = csv.writer(sys.stdout) if args.csv else None
        if self.writer:
            localizer = clf.contract.is_localizer  # the top class's box after the top k
            self.writer.writerow(["image", "truth", *[f"{k}{i + 1}" for i in range(args.top_k)
                                                      for k in ("label", "score")],
                                  *(("x_min", "y_min", "x_max", "y_max") if localizer else ())])
        self.shown = {p: printable(p) for p in images}
        self.width = max(len(v) for v in self.shown.values())

    def image(self, path, preds, truth: int | None) -> None:
        import json

        from edgekit.runtime.evaluate import printable

        if truth is not None:
            self.ev.add(truth, preds[0].index)
        truth_label = self.clf.contract.label(truth) if truth is not None else ""
        if self.args.json:
            row = {"image": str(path), "predictions": [
                {"label": p.label, "index": p.index, "score": round(p.score, 6),
                 **({"box": [round(v, 2) for v in p.box]} if hasattr(p, "box") else {})} for p in preds]}
            if truth is not None:
                row["truth"] = truth_label
            print(json.dumps(row))
        elif self.writer:
            self.writer.writerow([_csv_text(str(path)), _csv_text(truth_label),
                                  *[v for p in preds for v in (_csv_text(p.label), f"{p.score:.6f}")],
                                  *[f"{v:.2f}" for p in preds[:1] if hasattr(p, "box") for v in p.box]])
        else:
            mark = ("" if truth is None else
                    ("  ok" if truth == preds[0].index else f"  WRONG (is {printable(truth_label)})"))
            print(f"{self.shown[path]:<{self.width}}  "
                  + ", ".join(f"{printable(p.label)} {p.score:.3f}" + _box_text(p) for p in preds) + mark)

    def summary(self) -> None:
        import json

        if self.ev.count:
            if self.args.json:
                print(json.dumps({"summary": self.ev.to_dict()}))
            else:
                print("\n" + self.ev.render(), file=sys.stderr if self.args.csv else sys.stdout)


def _box_text(p) -> str:
    """ "  box [x_min, y_min, x_max, y_max]" in pixels for a localizer's Detection, else ""."""
    box = getattr(p, "box", None)
    return "" if box is None else "  box [" + ", ".join(f"{v:.1f}" for v in box) + "]"


def main(argv=None) -> int:
    return run_main("edge-predict", build_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
