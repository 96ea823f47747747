"""Reports: data first (JSON), then Markdown and self-contained HTML with plots."""

from edgekit.report.render import html_page, markdown_table

__all__ = ["html_page", "markdown_table"]
