"""Read a report page back: its number cells (with their data attributes), tables, images and facts."""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser
from pathlib import Path


class PageParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.cells: list[dict] = []  # attributes + text of every td with data-value
        self.tables: dict[str, list[list[str]]] = {}  # table id -> rows of cell texts (th and td)
        self.images: list[str] = []
        self.facts: dict[str, str] = {}
        self._table: str | None = None
        self._cell: dict | None = None
        self._text: list[str] = []
        self._row: list[str] | None = None
        self._dt: str | None = None
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = attrs.get("id", f"table{len(self.tables)}")
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = []
        elif tag in ("td", "th", "dt", "dd"):
            self._in, self._text = tag, []
            self._cell = attrs if "data-value" in attrs else None
        elif tag == "img":
            self.images.append(attrs["src"])

    def handle_data(self, data):
        if self._in:
            self._text.append(data)

    def handle_endtag(self, tag):
        text = "".join(self._text).strip()
        if tag in ("td", "th") and self._in == tag:
            if self._row is not None:
                self._row.append(text)
            if self._cell is not None:
                self.cells.append({**self._cell, "text": text, "table": self._table})
            self._in, self._cell = None, None
        elif tag == "tr" and self._row is not None and self._table:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None
        elif tag == "dt":
            self._dt, self._in = text, None
        elif tag == "dd" and self._dt is not None:
            self.facts[self._dt], self._dt, self._in = text, None, None


def parse_page(path: Path) -> PageParser:
    parser = PageParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def same_number(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def mismatches(page: PageParser) -> list[str]:
    """Cells whose exact value differs from the run's metrics.json (for runs on disk)."""
    cache: dict[str, dict] = {}
    bad = []
    for cell in page.cells:
        run = Path(cell["data-run"])
        if str(run) not in cache:
            cache[str(run)] = json.loads((run / "metrics.json").read_text())
        metrics = cache[str(run)]
        stored = metrics.get(cell["data-metric"])
        if stored is None and cell["data-metric"] in metrics:  # null: not measurable, shown as NaN
            stored = math.nan
        if stored is None or not same_number(float(cell["data-value"]), float(stored)):
            bad.append(f"{cell['table']}: {run.name} {cell['data-metric']}: page {cell['data-value']}, file {stored}")
    return bad
