"""Artifact previews: what a file looks like on the run page, rendered safely.

:func:`preview` turns a file's bytes into a :class:`Preview` (a kind and the data the
template needs). Nothing from the file is ever marked safe HTML except Markdown rendered
by markdown-it with raw HTML disabled (``<script>`` and ``<img onerror=...>`` come out as
text) and unsafe link schemes refused; everything else is escaped by the templates.
Files above :data:`MAX_PREVIEW_BYTES` are offered for download only.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

import yaml
from markdown_it import MarkdownIt

__all__ = ["IMAGE_TYPES", "MAX_PREVIEW_BYTES", "MAX_TABLE_ROWS", "Preview", "kind_of", "preview"]

MAX_PREVIEW_BYTES = 2_000_000
MAX_TABLE_ROWS = 50
MAX_TEXT_CHARS = 100_000
# Raster images only: an SVG can carry script, so it is offered for download instead.
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp"}
_TEXT = {".txt", ".log", ".py", ".ini", ".cfg", ".toml", ".sh", ".sql", ".html", ".htm", ".xml", ".svg", ".requirements"}
_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


@dataclass
class Preview:
    kind: str  # image | markdown | text | json | table | mlmodel | download | binary
    text: str = ""
    html: str = ""  # only for markdown: markdown-it output with raw HTML escaped
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    more_rows: bool = False
    mlmodel: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def _suffix(path: str) -> str:
    name = path.rsplit("/", 1)[-1].lower()
    if name == "mlmodel":
        return "mlmodel"
    if name in ("requirements.txt", "conda.yaml", "python_env.yaml"):
        return "." + name.rsplit(".", 1)[-1]
    return "." + name.rsplit(".", 1)[-1] if "." in name else ""


def kind_of(path: str) -> str:
    s = _suffix(path)
    if s == "mlmodel":
        return "mlmodel"
    if s in IMAGE_TYPES:
        return "image"
    if s in (".md", ".markdown"):
        return "markdown"
    if s in (".json", ".yaml", ".yml"):
        return "json"
    if s in (".csv", ".tsv", ".parquet"):
        return "table"
    if s in _TEXT or s == "":
        return "text"
    return "binary"


def _decode(data: bytes) -> str:
    text = data.decode("utf-8", errors="replace")
    return text[:MAX_TEXT_CHARS] + ("\n... (truncated)" if len(text) > MAX_TEXT_CHARS else "")


def _table(path: str, data: bytes) -> Preview:
    if path.lower().endswith(".parquet"):
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(io.BytesIO(data))
        batch = next(pf.iter_batches(batch_size=MAX_TABLE_ROWS), None)
        columns = [str(c) for c in pf.schema_arrow.names]
        rows = [] if batch is None else [[_cell(v) for v in row.values()] for row in batch.to_pylist()]
        return Preview("table", columns=columns, rows=rows, more_rows=pf.metadata.num_rows > len(rows),
                       note=f"{pf.metadata.num_rows} rows")
    reader = csv.reader(io.StringIO(data.decode("utf-8", errors="replace")),
                        delimiter="\t" if path.lower().endswith(".tsv") else ",")
    columns = next(reader, [])
    rows = []
    for row in reader:
        if len(rows) == MAX_TABLE_ROWS:
            return Preview("table", columns=columns, rows=rows, more_rows=True)
        rows.append(row)
    return Preview("table", columns=columns, rows=rows)


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def _mlmodel(data: bytes, model_uri: str) -> Preview:
    text = _decode(data)
    doc = yaml.safe_load(text) or {}
    signature = doc.get("signature") or {}

    def columns(spec: Any) -> list[dict[str, str]]:
        try:
            parsed = json.loads(spec) if isinstance(spec, str) else (spec or [])
        except json.JSONDecodeError:
            return []
        return [{"name": str(c.get("name", "")), "type": str(c.get("type", c.get("tensor-spec", "")))} for c in parsed if isinstance(c, dict)]

    info = {
        "flavors": sorted((doc.get("flavors") or {}).keys()),
        "inputs": columns(signature.get("inputs")),
        "outputs": columns(signature.get("outputs")),
        "model_uri": model_uri,
        "load": f'import tracking_plugin as tp\nmodel = tp.pyfunc.load_model("{model_uri}")\nmodel.predict(frame)',
        "serve": f"prefect-mlops serve -m {model_uri} -p 5001",
    }
    return Preview("mlmodel", text=text, mlmodel=info)


def preview(path: str, data: bytes, *, model_uri: str = "") -> Preview:
    """The preview of the file ``path`` holding ``data`` (already size-checked)."""
    kind = kind_of(path)
    try:
        if kind == "image":
            return Preview("image")
        if kind == "markdown":
            return Preview("markdown", html=_MARKDOWN.render(_decode(data)))
        if kind == "json":
            text = _decode(data)
            if path.lower().endswith(".json"):
                try:
                    text = json.dumps(json.loads(data), indent=2, ensure_ascii=False)[:MAX_TEXT_CHARS]
                except ValueError:
                    pass
            return Preview("json", text=text)
        if kind == "table":
            return _table(path, data)
        if kind == "mlmodel":
            return _mlmodel(data, model_uri)
        if kind == "text" or b"\0" not in data[:4096]:
            return Preview("text", text=_decode(data))
    except Exception as exc:  # a malformed file is shown as such, never a server error
        return Preview("text", text=_decode(data), note=f"Could not parse this file ({type(exc).__name__}: {exc}); shown as text.")
    return Preview("binary")
