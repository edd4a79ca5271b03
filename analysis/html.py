"""Render the report as one self-contained HTML page: inline CSS, no script, no network.

The page needs nothing but the PNG files written beside it (relative `src`), so the folder can be
zipped, checked in or opened from disk. No JavaScript: there is nothing to fail in a browser console,
and the tables are plain `<table>`s that read the same in any browser or text dump.

Every number cell carries `data-run` (the run's key), `data-metric` (its key in metrics.json) and
`data-value` (Python's `repr` of the float, which round-trips exactly), so what the page shows can be
checked against the files it came from (see `tests/analysis`). A value the run could not measure keeps
`data-value="nan"` and reads "not measurable (<reason>)", with the reason also in `data-note`; a number with a
caveat carries a dagger (`<sup class="caveat">`) and `data-caveat`, and its table lists the caveats under
it. Text is escaped everywhere: labels come from configs and folder names, which may hold `<` or `&`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from analysis.plots import Plot
from analysis.tables import CAVEAT_MARK, Cell, Table, cell_text

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
.subtitle { color: #666; margin-top: 0; }
dl.provenance { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; }
dl.provenance dt { font-weight: 600; } dl.provenance dd { margin: 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .9rem; }
th, td { padding: .3rem .6rem; border-bottom: 1px solid #e4e4e4; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f4f4f4; border-bottom: 2px solid #ccc; }
tr.human td, tr.human th { background: #fff6e5; font-weight: 600; }
td.na { color: #999; } td.not-measurable { color: #777; font-style: italic; }
sup.caveat { color: #b35c00; font-weight: 700; } ul.caveats { color: #6b4a00; font-size: .85rem; max-width: 70rem; }
caption { caption-side: bottom; text-align: left; color: #555; font-size: .85rem; padding-top: .4rem;
          white-space: normal; max-width: 70rem; }
figure { margin: 1.2rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: .85rem; max-width: 70rem; }
.note { color: #555; font-size: .9rem; } details summary { cursor: pointer; font-weight: 600; }
"""


@dataclass
class Section:
    id: str
    title: str
    intro: str = ""
    tables: list[Table] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)
    collapsed: bool = False


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, so the page reserves the image's space before it loads."""
    with open(path, "rb") as handle:
        head = handle.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path} is not a PNG file")
    return struct.unpack(">II", head[16:24])


def render_cell(cell: Cell) -> str:
    text = escape(cell_text(cell))
    if cell.value is None:
        return f'<td class="na" title="{escape(cell.note)}">{text}</td>'
    if cell.metric is None:  # a setting, not a measurement
        return f'<td class="setting">{text}</td>'
    value = float(cell.value)
    kind, extra = "num", ""
    if value != value:  # NaN: not measurable
        kind, extra = "num not-measurable", f' data-note="{escape(cell.note)}"'
    elif cell.caveat:
        extra = f' data-caveat="{escape(cell.caveat)}"'
        text += f'<sup class="caveat" title="{escape(cell.caveat)}">{CAVEAT_MARK}</sup>'
    return (f'<td class="{kind}" data-run="{escape(cell.run or "")}" data-metric="{escape(cell.metric)}" '
            f'data-value="{escape(repr(value))}"{extra} title="{escape(cell.metric)}">{text}</td>')


def render_table(table: Table) -> str:
    head = "".join(f'<th scope="col">{escape(c)}</th>' for c in table.columns)
    body = []
    for row in table.rows:
        cells = "".join(render_cell(c) for c in row.cells)
        body.append(f'<tr class="{escape(row.kind)}"><th scope="row">{escape(row.label)}</th>{cells}</tr>')
    notes = "".join(f"<li>{escape(note)}</li>" for note in table.notes)
    return (f'<div class="scroll"><table id="{escape(table.id)}"><caption>{escape(table.caption)}</caption>'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
            + (f'<ul class="caveats" id="{escape(table.id)}-caveats">{notes}</ul>' if notes else ""))


def render_plot(plot: Plot, out_dir: Path) -> str:
    width, height = png_size(out_dir / plot.file)
    return (f'<figure><img src="{escape(plot.file)}" alt="{escape(plot.title)}" width="{width}" '
            f'height="{height}"><figcaption>{escape(plot.caption)}</figcaption></figure>')


def render_section(section: Section, out_dir: Path) -> str:
    parts = [f'<section id="{escape(section.id)}">', f"<h2>{escape(section.title)}</h2>"]
    if section.intro:
        parts.append(f'<p class="note">{escape(section.intro)}</p>')
    inner = [f"<h3>{escape(t.title)}</h3>{render_table(t)}" for t in section.tables]
    inner += [render_plot(p, out_dir) for p in section.plots]
    if section.collapsed:
        inner = [f"<details><summary>Show</summary>{''.join(inner)}</details>"]
    parts += inner
    parts.append("</section>")
    return "\n".join(parts)


def render_page(title: str, subtitle: str, facts: list[tuple[str, str]], sections: list[Section],
                out_dir: Path) -> str:
    facts_html = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in facts)
    body = "\n".join(render_section(s, out_dir) for s in sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<link rel="icon" href="data:,">
<style>{CSS}</style>
</head>
<body>
<h1>{escape(title)}</h1>
<p class="subtitle">{escape(subtitle)}</p>
<section id="provenance"><h2>What these runs are</h2><dl class="provenance">{facts_html}</dl></section>
{body}
</body>
</html>
"""
