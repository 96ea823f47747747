"""Throughput over a folder (benchmarks/runtime.py): edge-predict and ``Classifier.classify_stream`` against a plain
loop (``cv2.imread``, resize, BGR->RGB, ``set_tensor``, ``invoke``, argmax) on the same model and threads.

Both are timed in this process (the loop alone) and as commands (a fresh process each: start-up, imports and model
load included, as a user would run them). The runs take turns, so that a busy machine slows each alike, and the
medians are reported."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

_PLAIN_MAIN = "import sys; from edgekit.bench.throughput import _plain_main; _plain_main(sys.argv[1:])"


def plain_loop(model: Path, files: list[Path], threads: int) -> tuple[float, list[int]]:
    """(seconds, top-1 per file) of the plainest loop over ``files`` with a uint8-input TFLite model (the pixels are
    its input: Coral's and Google's quantized models)."""
    import cv2

    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - the older runtime
        from tflite_runtime.interpreter import Interpreter

    it = Interpreter(model_path=str(model), num_threads=threads)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    h, w = (int(v) for v in inp["shape"][1:3])
    top: list[int] = []
    t0 = time.perf_counter()
    for f in files:
        img = cv2.resize(cv2.imread(str(f), cv2.IMREAD_COLOR), (w, h), interpolation=cv2.INTER_LINEAR)
        it.set_tensor(inp["index"], cv2.cvtColor(img, cv2.COLOR_BGR2RGB)[None])
        it.invoke()
        top.append(int(np.argmax(it.get_tensor(out["index"]))))
    return time.perf_counter() - t0, top


def _plain_main(argv: list[str]) -> None:
    """The plain loop as a command: MODEL THREADS FOLDER."""
    model, threads, folder = Path(argv[0]), int(argv[1]), Path(argv[2])
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    seconds, top = plain_loop(model, files, threads)
    print(json.dumps({"seconds": seconds, "images": len(top)}))


def stream_loop(model: Path, files: list[Path], threads: int | None) -> tuple[float, list[int], int]:
    """(seconds, top-1 per file, threads) of ``Classifier.classify_stream`` (decoding ahead on a worker thread)."""
    from edgekit.runtime import Classifier

    clf = Classifier.open(model, threads=threads)
    t0 = time.perf_counter()
    top = [preds[0].index for _, preds in clf.classify_stream(files, top_k=1)]
    return time.perf_counter() - t0, top, clf.backend.threads


def _command(args: list[str]) -> tuple[float, str, str]:
    t0 = time.perf_counter()
    r = subprocess.run(args, capture_output=True, text=True, timeout=900)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{Path(args[0]).name} failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    return seconds, r.stdout, r.stderr


def _edge_predict(model: Path, folder: Path, threads: int | None) -> tuple[float, int, str]:
    exe = Path(sys.executable).parent / "edge-predict"
    extra = ["--threads", str(threads)] if threads else []
    seconds, out, err = _command([str(exe), str(model), str(folder), "--json", "--top-k", "1", *extra])
    chosen = next((ln.split("note: ", 1)[1] for ln in err.splitlines() if "inference thread" in ln), "")
    return seconds, sum(1 for ln in out.splitlines() if ln.startswith('{"image"')), chosen


def byte_compile_edgekit() -> None:
    """Write edgekit's .pyc files, as pip does when it installs a package. An editable install run with
    PYTHONDONTWRITEBYTECODE=1 (as on this project's machines) compiles every edgekit module at each start
    instead: 0.1-0.2 s per command here, a cost no installed edgekit has, that the command timings would
    otherwise charge to edgekit."""
    import compileall

    import edgekit

    compileall.compile_dir(str(Path(edgekit.__file__).parent), quiet=1)


def folder_throughput(model: Path, folder: Path, *, threads=(1, 2), repeats: int = 3, log=print) -> dict:
    """Plain loop against ``classify_stream`` in this process, and the plain loop's command against edge-predict,
    at each thread count, in turns; then edge-predict without --threads (the count its timing probe chooses).
    edgekit is byte-compiled first (``byte_compile_edgekit``)."""
    byte_compile_edgekit()
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    out: dict = {"model": model.name, "folder": str(folder), "images": len(files), "rows": []}
    for t in threads:
        plain, stream, plain_cmd, predict_cmd = [], [], [], []
        agree = None
        for _ in range(repeats):
            s, top_plain = plain_loop(model, files, t)
            plain.append(s)
            s, top_stream, _ = stream_loop(model, files, t)
            stream.append(s)
            agree = float(np.mean(np.array(top_plain) == np.array(top_stream)))
            plain_cmd.append(_command([sys.executable, "-c", _PLAIN_MAIN, str(model), str(t), str(folder)])[0])
            seconds, n, _ = _edge_predict(model, folder, t)
            if n != len(files):
                raise RuntimeError(f"edge-predict printed {n} results for {len(files)} images")
            predict_cmd.append(seconds)
        row = {"threads": t, "plain_loop_s": _median(plain), "classify_stream_s": _median(stream),
               "plain_command_s": _median(plain_cmd), "edge_predict_s": _median(predict_cmd),
               "top1_agreement": agree, "all_s": {"plain_loop": plain, "classify_stream": stream,
                                                   "plain_command": plain_cmd, "edge_predict": predict_cmd}}
        row["stream_vs_plain"] = round(row["classify_stream_s"] / row["plain_loop_s"], 3)
        row["edge_predict_vs_plain_command"] = round(row["edge_predict_s"] / row["plain_command_s"], 3)
        log(json.dumps({k: v for k, v in row.items() if k != "all_s"}))
        out["rows"].append(row)
    auto = [_edge_predict(model, folder, None) for _ in range(repeats)]
    out["edge_predict_default"] = {"seconds": _median([a[0] for a in auto]), "choice": auto[-1][2],
                                   "all_s": [round(a[0], 3) for a in auto]}
    best_plain = min(r["plain_command_s"] for r in out["rows"])
    out["edge_predict_default"]["vs_best_plain_command"] = round(out["edge_predict_default"]["seconds"] / best_plain, 3)
    log(json.dumps({k: v for k, v in out["edge_predict_default"].items() if k != "all_s"}))
    return out


def _median(values: list[float]) -> float:
    return round(float(np.median(values)), 3)


def render_throughput_markdown(results: list[dict]) -> list[str]:
    from edgekit.report import markdown_table

    lines = []
    for r in results:
        lines += [f"### `{r['model']}` over {r['images']} JPEGs (`{Path(r['folder']).name}`)", ""]
        rows = [[x["threads"], f"{x['plain_loop_s']:.2f}", f"{x['classify_stream_s']:.2f}",
                 f"{x['stream_vs_plain']:.2f}", f"{x['plain_command_s']:.2f}", f"{x['edge_predict_s']:.2f}",
                 f"{x['edge_predict_vs_plain_command']:.2f}"] for x in r["rows"]]
        lines += [markdown_table(["threads", "plain loop s", "classify_stream s", "ratio", "plain loop command s",
                                  "edge-predict s", "ratio"], rows), ""]
        d = r["edge_predict_default"]
        lines += [f"edge-predict without --threads: {d['seconds']:.2f} s ({d['choice']}), "
                  f"{d['vs_best_plain_command']:.2f}x the faster plain loop command.", ""]
    return lines
