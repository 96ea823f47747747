"""edge-bench's outputs: bench.json (the data), bench.csv, bench.md and a self-contained bench.html."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from edgekit import fileio

OUTPUTS = ("bench.json", "bench.csv", "bench.md", "bench.html")
COLUMNS = ["device", "model", "format", "backend", "threads", "size_mb", "load_ms", "first_ms", "p50_ms", "p90_ms",
           "p99_ms", "spread", "outliers", "fps", "e2e_p50_ms", "peak_rss_mb", "accuracy", "drop_points",
           "top1_agreement", "status"]


def _f(v, digits: int = 3):
    return "" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else v)


def table_rows(doc: dict) -> list[list]:
    merged = doc.get("merged", False)
    out = []
    for r in doc["rows"]:
        lat, e2e = r.get("latency_ms") or {}, r.get("end_to_end_ms") or {}
        if r.get("not_measured"):  # edge-bench --host: a host that produced no results, and why
            out.append([r.get("device", ""), r["model"], *[""] * (len(COLUMNS) - 3),
                        f"{r['status']}: {r.get('error')}"])
            continue
        out.append([
            r.get("device", "") if merged else "", r["model"], r.get("format", ""), r.get("backend") or "",
            r.get("threads") or "default", _f(r["size_bytes"] / 1e6, 2), _f(r.get("load_ms"), 1),
            _f(r.get("first_inference_ms"), 2), _f(lat.get("p50")), _f(lat.get("p90")), _f(lat.get("p99")),
            _f(lat.get("spread"), 2), lat.get("outliers", ""), _f(lat.get("fps"), 1), _f(e2e.get("p50")),
            _f(r.get("peak_rss_mb"), 1), _f(r.get("accuracy"), 4), _f(r.get("accuracy_drop_points"), 2),
            _f(r.get("top1_agreement"), 4),
            r["status"] if r["status"] == "ok" else f"{r['status']}: {r.get('error') or ''}"])
    return out


def _columns(doc: dict) -> tuple[list[str], list[list]]:
    rows = table_rows(doc)
    if any(r.get("mean_iou") is not None for r in doc["rows"]):  # localizers on a box dataset: before "status"
        headers = [*COLUMNS[:-1], "mean_iou", "iou50", COLUMNS[-1]]
        rows = [[*row[:-1], _f(r.get("mean_iou"), 4), _f(r.get("iou50"), 4), row[-1]]
                for row, r in zip(rows, doc["rows"], strict=True)]
        return (headers, rows) if doc.get("merged") else (headers[1:], [r[1:] for r in rows])
    if doc.get("merged"):
        return COLUMNS, rows
    return COLUMNS[1:], [r[1:] for r in rows]


def render_csv(doc: dict) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    headers, rows = _columns(doc)
    w.writerow(headers)
    w.writerows(rows)
    return buf.getvalue()


def _environment_lines(doc: dict) -> list[str]:
    envs = doc.get("environments") or [{"device": None, "environment": doc["environment"],
                                        "device_before": doc.get("device_before"),
                                        "device_after": doc.get("device_after")}]
    lines = []
    for e in envs:
        env = e["environment"]
        pk = env.get("packages", {})
        head = f"**{e['device']}**: " if e["device"] else ""
        lines.append(f"- {head}{env.get('device_model') or env.get('cpu')}, {env.get('cpu_count')} cores, "
                     f"ISA {', '.join(env.get('isa') or []) or 'unknown'}; {env.get('os') or env.get('platform')}; "
                     f"Python {env.get('python')}; LiteRT {pk.get('ai-edge-litert')}, onnxruntime "
                     f"{pk.get('onnxruntime')}, TensorFlow {pk.get('tensorflow') or 'not installed'}"
                     + (f"; thread variables {env['thread_variables']}" if env.get("thread_variables") else ""))
        for when in ("device_before", "device_after"):
            state = e.get(when) or {}
            shown = {k: v for k, v in state.items() if v is not None}
            if shown:
                lines.append(f"  - {when.replace('device_', '')} the run: "
                             + ", ".join(f"{k} {v}" for k, v in shown.items()))
    return lines


STATE_COLUMNS = ("governor", "cpu0_mhz", "temperature_c", "throttled")


def device_state_table(doc: dict) -> tuple[list[str], list[list]] | None:
    """A merged report's device state before -> after each device's run (frequency governor, clock, temperature,
    throttling as vcgencmd says on a Pi): the table that shows whether two devices were compared fairly."""
    if not doc.get("merged"):
        return None
    rows = []
    for e in doc.get("environments") or []:
        before, after = e.get("device_before") or {}, e.get("device_after") or {}
        cells = []
        for key in STATE_COLUMNS:
            b, a = before.get(key), after.get(key)
            cells.append("-" if b is None and a is None else f"{_f(b, 1) if b is not None else '-'}"
                         + ("" if a == b else f" -> {_f(a, 1) if a is not None else '-'}"))
        rows.append([e["device"], *cells])
    return ["device", *STATE_COLUMNS], rows


def _spread_sentence(doc: dict) -> str:
    spreads = [r["latency_ms"]["spread"] for r in doc["rows"] if r.get("latency_ms")]
    if not spreads:
        return ""
    return (f"Spread (interquartile range over the median) ranges from {min(spreads):.0%} to {max(spreads):.0%} "
            "across rows; outliers (runs beyond Q3 + 1.5 IQR) are counted and kept in every statistic.")


def render_markdown(doc: dict) -> str:
    from edgekit.report import markdown_table

    headers, rows = _columns(doc)
    opts = doc.get("options") or {}
    lines = ["# edge-bench", "", *_environment_lines(doc), ""]
    if opts:
        at_least = f" (and at least {opts['min_seconds']:g} s)" if opts.get("min_seconds") else ""
        lines.append(f"Model-only latency: the input tensor already set, {opts.get('warmup')} warm-up runs, then "
                     f"{opts.get('runs')} timed runs{at_least}, garbage collection paused. End-to-end (e2e): decode, "
                     f"preprocess, infer and top-5 of {doc.get('end_to_end_images', 'an image file')}. Each model "
                     "ran in its own process (peak RSS is that process's).")
    if doc.get("data"):
        d = doc["data"]
        lines.append(f"Accuracy on {d['images']} images of {d['source']}; drop and agreement against the first "
                     f"model ({next((r.get('reference') for r in doc['rows'] if r.get('reference')), '-')}).")
    lines += [_spread_sentence(doc), "", markdown_table(headers, rows), ""]
    state = device_state_table(doc)
    if state:
        lines += ["Each device's state before -> after its run (- where it cannot be read):", "",
                  markdown_table(*state), ""]
    notes = [f"- {r['model']}: {n}" for r in doc["rows"] for n in r.get("notes") or []]
    if notes:
        lines += ["Notes:", "", *dict.fromkeys(notes), ""]
    lines += recommendation_lines(doc)
    comp = doc.get("comparison")
    if comp:
        bad = [f for f in comp["rows"] if f["problems"]]
        lines += [f"Compared with `{comp['baseline']}` (threshold {comp['threshold']:.0%}): {len(comp['rows'])} "
                  f"matching rows, {len(bad)} regression(s)."]
        lines += [f"- {f['model']} ({f['backend']}, {f['threads'] or 'default'} threads): p50 {f['p50_ms']:.3f} ms "
                  f"against {f['baseline_p50_ms']:.3f} ms: {'; '.join(f['problems']) or 'ok'}" for f in comp["rows"]]
        if comp["unmatched"]:
            lines.append(f"- not in the baseline: {', '.join(comp['unmatched'])}")
        lines.append("")
    return "\n".join(lines)


def recommendation_lines(doc: dict) -> list[str]:
    """The recommended file at each thread count, and why not the others. Recomputed from the rows (which are
    checked when a bench.json is read back), never taken from the document's own field; none for merged runs."""
    from edgekit.bench.suite import recommendations

    lines = []
    for rec in ([] if doc.get("merged") else recommendations(doc["rows"])):
        at = f"at {rec['threads']} thread{'s' if rec['threads'] != 1 else ''}" if rec["threads"] else "here"
        lines += [f"**Recommended {at}: {rec['artifact']}** ({rec['reason']})." if rec["artifact"] else
                  f"No recommendation {at}: {rec['reason']}.", ""]
        lines += [f"- {name}: {why}" for name, why in rec["others"].items()] + [""]
    return lines


PLOT_ROWS = 40  # rows drawn in each plot: the table holds them all, a plot of thousands is unreadable (and slow)
PLOT_SAMPLES = 2_000  # samples_ms per row handed to the box plot: quantiles of all of them, min and max kept


def _plot_rows(rows: list[dict]) -> list[dict]:
    """The rows the plots draw: the first PLOT_ROWS measured ones, each with at most PLOT_SAMPLES samples (evenly
    spaced quantiles of all of them, so that the box, whiskers and extremes stay where they were)."""
    import numpy as np

    out = []
    for r in rows:
        if not r.get("latency_ms"):
            continue
        samples = r.get("samples_ms")
        if samples and len(samples) > PLOT_SAMPLES:
            qs = np.quantile(np.asarray(samples, np.float64), np.linspace(0, 1, PLOT_SAMPLES))
            r = {**r, "samples_ms": [float(v) for v in qs]}
        out.append(r)
        if len(out) == PLOT_ROWS:
            break
    return out


def _figures(doc: dict) -> list[tuple[str, object]]:
    """The plots as HTML blocks; a plot that cannot be drawn is a sentence saying so, never a failed report."""
    import warnings

    from edgekit.errors import MissingDependencyError

    ok = _plot_rows(doc["rows"])
    if not ok:
        return []
    try:
        from edgekit.report import plots

        plots._pyplot()
    except MissingDependencyError:
        return [("p", "Plots need matplotlib: pip install 'edgekit[train]' (or matplotlib).")]
    measured = sum(1 for r in doc["rows"] if r.get("latency_ms"))
    blocks: list[tuple[str, object]] = []
    if measured > len(ok):
        blocks.append(("p", f"The plots show the first {len(ok)} of the {measured:,} measured rows; the table "
                            "above holds them all."))
    for title, fn in (("latency against size", plots.plot_latency_size),
                      ("accuracy against latency", plots.plot_accuracy_latency),
                      ("latency distributions", plots.plot_latency_distributions),
                      ("thread sweep", plots.plot_thread_sweep)):
        try:
            with warnings.catch_warnings():  # matplotlib's and numpy's warnings about odd values: not the user's
                warnings.simplefilter("ignore")
                png = fn(ok)
        except MemoryError:
            raise
        except Exception as exc:  # odd but valid values a plot cannot draw: the report is written without it
            from edgekit.errors import first_line

            blocks.append(("p", f"The {title} plot could not be drawn ({exc.__class__.__name__}: "
                                f"{first_line(exc, 120)})."))
            continue
        if png is not None:
            blocks += [("h2", title), ("img", (png, title))]
    return blocks


def render_html(doc: dict) -> str:
    from edgekit.report import html_page

    headers, rows = _columns(doc)
    blocks: list[tuple[str, object]] = [("p", ln.lstrip("- ")) for ln in _environment_lines(doc)]
    blocks += [("p", _spread_sentence(doc)), ("table", (headers, rows))]
    state = device_state_table(doc)
    if state:
        blocks += [("h2", "device state before -> after each run"), ("table", state)]
    blocks += _figures(doc)
    return html_page("edge-bench", blocks)


def render_json(doc: dict) -> str:
    """bench.json, indented, with each row's samples_ms on one line: Python's JSON encoder is fast only without
    indentation, and a number a line would make a file of many samples ten times the size."""
    import re
    import secrets

    nonce = secrets.token_hex(16)  # a placeholder no text in the document can spell
    lists: list[str] = []

    def slim(r: dict) -> dict:
        r = {k: v for k, v in r.items() if k != "predictions"}
        if isinstance(r.get("samples_ms"), list):
            lists.append(json.dumps(r["samples_ms"]))
            r["samples_ms"] = f"{nonce}:{len(lists) - 1}"
        return r

    text = json.dumps({**doc, "rows": [slim(r) for r in doc["rows"]]}, indent=2, sort_keys=False)
    return re.sub(f'"{nonce}:(\\d+)"', lambda m: lists[int(m.group(1))], text) + "\n"


def render_outputs(doc: dict) -> dict[str, str]:
    """The four files' contents, all rendered before any is written."""
    return {"bench.json": render_json(doc), "bench.csv": render_csv(doc),
            "bench.md": render_markdown(doc), "bench.html": render_html(doc)}


def write_rendered(files: dict[str, str], out: str | Path, *, force: bool = False) -> list[Path]:
    """Each file written atomically (a full disk is a one-line error naming the file)."""
    out = Path(out)
    return [fileio.write_text(out / name, text, force=force) for name, text in files.items()]


def write_outputs(doc: dict, out: str | Path, *, force: bool = False) -> list[Path]:
    return write_rendered(render_outputs(doc), out, force=force)
