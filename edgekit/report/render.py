"""Markdown tables and self-contained HTML pages (images inlined as base64)."""

from __future__ import annotations

import base64
import html


def markdown_table(headers: list[str], rows: list[list]) -> str:
    def cell(v) -> str:
        return str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _inline_markdown(text: str) -> str:
    out = html.escape(text)
    parts = out.split("**")
    out = "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))
    parts = out.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


# Counts the images that decoded, so a headless browser test can tell that the plots show.
_COUNT_IMAGES = ("window.addEventListener('load',()=>{document.body.dataset.images="
                 "[...document.images].filter(i=>i.complete&&i.naturalWidth>0).length;});")


def html_page(title: str, blocks: list[tuple[str, object]]) -> str:
    """Render blocks: ("h2", text), ("p", text), ("table", (headers, rows)), ("img", (png_bytes, alt))."""
    body = []
    for kind, content in blocks:
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{html.escape(str(content))}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{_inline_markdown(str(content))}</p>")
        elif kind == "table":
            headers, rows = content
            head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
            trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
        elif kind == "img":
            png, alt = content
            b64 = base64.b64encode(png).decode("ascii")
            body.append(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">')
        else:
            raise ValueError(f"unknown block kind {kind!r}")
    style = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
             "table{border-collapse:collapse;margin:1rem 0;display:block;overflow-x:auto}"
             "th,td{border:1px solid #ccc;padding:.3rem .6rem;"
             "text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
             "img{max-width:100%;display:block;margin:1rem 0}code{background:#f3f3f3;padding:0 .2rem}")
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>\n" + "\n".join(body)
            + f"\n<script>{_COUNT_IMAGES}</script>\n</body></html>\n")
