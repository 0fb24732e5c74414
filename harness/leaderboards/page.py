"""Self-contained HTML pages of boards (one board: ``harness leaderboard render BOARD --html``; all
of a folder's: ``page``): inline CSS, a few lines of inline JS, no network, so a page opens from
disk. Per board: its text (what each dataset tests), the method of the rank ranges and levels, a
text box that filters the rows (every word must occur in a row), the entries' data as CSV and
JSON to download (embedded in the page, saved through a Blob), and a table sorted by the clicked
column: tie-group ranks, cells as mean ± s.e. with the 95% interval drawn, each row's
verification level and its provenance (config hashes, seeds, hparams, chosen and candidate runs,
code version) folded under the row."""
from __future__ import annotations

import csv
import html
import io
import json
import math
from typing import Any

from harness.leaderboards import board as boards
from harness.leaderboards import levels
from harness.reports.tables import metric_label

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#1d232b;background:#fafbfc}
h1{font-size:22px}h2{font-size:18px;margin-top:36px;border-bottom:1px solid #d0d7de}
p.text{max-width:1100px;color:#3b434c}
table{border-collapse:collapse;background:#fff;font-size:13px}
th,td{border:1px solid #d0d7de;padding:4px 7px;vertical-align:top;text-align:left}
th{background:#eef1f4;cursor:pointer;user-select:none;position:sticky;top:0}
th:hover{background:#dde3ea}th.sorted-asc::after{content:" \\25B2"}th.sorted-desc::after{content:" \\25BC"}
td.num{font-variant-numeric:tabular-nums;white-space:nowrap}
.bar{position:relative;height:6px;background:#eef1f4;margin-top:3px;border-radius:3px}
.bar span{position:absolute;top:0;height:6px;background:#4f81bd;border-radius:3px}
.bar i{position:absolute;top:-2px;width:2px;height:10px;background:#1d232b}
.level{padding:1px 6px;border-radius:9px;font-size:12px;white-space:nowrap}
.re-run{background:#c9f0d2}.recomputed{background:#d6e6fb}.claimed{background:#fbe5c8}
details{font-size:12px;max-width:420px}pre{white-space:pre-wrap;margin:2px 0}
.tools{margin:8px 0}.tools input{padding:3px 6px;width:260px}.tools button{margin-left:8px}
"""
SCRIPT = """
document.querySelectorAll('table.board th').forEach((th, col) => th.addEventListener('click', () => {
  const table = th.closest('table'), body = table.tBodies[0];
  const asc = !th.classList.contains('sorted-asc');
  table.querySelectorAll('th').forEach(h => h.classList.remove('sorted-asc', 'sorted-desc'));
  th.classList.add(asc ? 'sorted-asc' : 'sorted-desc');
  const key = r => { const v = r.cells[col].dataset.sort; const n = parseFloat(v); return isNaN(n) ? v : n; };
  [...body.rows].sort((a, b) => { const x = key(a), y = key(b);
    return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1); }).forEach(r => body.appendChild(r));
}));
document.querySelectorAll('input.filter').forEach(box => box.addEventListener('input', () => {
  const words = box.value.toLowerCase().split(/\\s+/).filter(w => w);
  const rows = [...document.getElementById('table-' + box.dataset.board).tBodies[0].rows];
  rows.forEach(r => { const text = r.textContent.toLowerCase(); r.hidden = !words.every(w => text.includes(w)); });
  box.nextElementSibling.textContent = rows.filter(r => !r.hidden).length + ' of ' + rows.length + ' rows';
}));
function boardData(board, kind) { return JSON.parse(document.getElementById(kind + '-' + board).textContent); }
document.querySelectorAll('button.download').forEach(b => b.addEventListener('click', () => {
  const kind = b.dataset.kind, data = boardData(b.dataset.board, kind);
  const text = kind === 'json' ? JSON.stringify(data, null, 1) : data;
  const link = document.createElement('a');
  link.href = URL.createObjectURL(new Blob([text], {type: kind === 'json' ? 'application/json' : 'text/csv'}));
  link.download = b.dataset.board + '.' + kind;
  document.body.appendChild(link); link.click(); link.remove();
}));
"""


def _cell(text: str, sort: Any, css: str = "") -> str:
    return f'<td data-sort="{html.escape(str(sort))}"{f" class={css!r}" if css else ""}>{text}</td>'


def _stat(board: boards.Board, metric: str, result: dict | None, scale: tuple[float, float]) -> str:
    stat = (result or {}).get("metrics", {}).get(metric) or {}
    mean = stat.get("mean")
    if mean is None:
        return _cell("-", "")
    display = board.scorer.metrics[metric.split(".", 1)[1]]
    text = f"{display.format(mean)} ± {display.format(stat.get('stderr') or 0.0)}"
    low, high = (stat.get("ci95") or [None, None])
    bar = ""
    lo, hi = scale
    if low is not None and high is not None and hi > lo:
        x = lambda v: 100 * (v - lo) / (hi - lo)  # noqa: E731
        bar = (f'<div class="bar" title="95% interval [{display.format(low)}, {display.format(high)}]">'
               f'<span style="left:{x(low):.1f}%;width:{max(x(high) - x(low), 0.5):.1f}%"></span>'
               f'<i style="left:{x(mean):.1f}%"></i></div>')
    return _cell(html.escape(text) + bar, mean, "num")


def _scale(board: boards.Board, entries: list[dict], dataset: str, metric: str) -> tuple[float, float]:
    values = [v for e in entries for s in [e["results"].get(dataset, {}).get("metrics", {}).get(metric, {})]
              for v in [s.get("mean"), *(s.get("ci95") or [])] if v is not None]
    return (min(values), max(values)) if values else (0.0, 1.0)


def board_section(board: boards.Board, entries: list[dict]) -> str:
    """One board's heading, text and sortable table."""
    first = board.metrics[0]
    ordered = sorted(entries, key=lambda e: -(e["results"].get(board.datasets[0], {}).get("metrics", {})
                                                .get(first, {}).get("mean") or -math.inf))
    ranks, method = boards.ranking(board, ordered)
    shown = [k for k in board.entrant if any(e["entrant"].get(k) not in ("", None) for e in entries)]
    heads = ["rank", *shown, "selection"]
    heads += [h for d in board.datasets for h in [*(f"{d}: {metric_label(board.scorer, m)}" for m in board.metrics),
                                                  *(f"{d}: {label}" for label in board.scorer.choices.values())]]
    heads += ["verified", "provenance"]
    scales = {(d, m): _scale(board, entries, d, m) for d in board.datasets for m in board.metrics}
    rows = []
    for position, (rank, entry) in enumerate(zip(ranks, ordered)):
        cells = [_cell(html.escape(rank), position)]
        cells += [_cell(html.escape(str(entry["entrant"].get(k) or "")), entry["entrant"].get(k) or "") for k in shown]
        cells.append(_cell(html.escape(entry["selection"]), entry["selection"]))
        for d in board.datasets:
            cells += [_stat(board, m, entry["results"].get(d), scales[(d, m)]) for m in board.metrics]
            cells += [_cell(html.escape(text), text) for c in board.scorer.choices
                      for text in [boards.chosen_values(entry["results"].get(d), c)]]
        level, date = levels.level_of(entry)
        cells.append(_cell(f'<span class="level {level}">{html.escape(level)}</span> {html.escape(date)}',
                           levels.LEVELS.index(level)))
        prov = {"config_hashes": entry["provenance"]["config_hashes"], "seeds": entry["provenance"]["seeds"],
                "code_version": entry["provenance"]["code_version"],
                "produced_by": entry["provenance"]["produced_by"],
                **{d: {"hparams": r["hparams"], "chosen runs": " ".join(f"{x['hash']}@{x['step']}" for x in r["runs"]),
                       "candidate runs": " ".join(r["candidates"])} for d, r in entry["results"].items()}}
        cells.append(_cell(f"<details><summary>show</summary><pre>{html.escape(json.dumps(prov, indent=0))}</pre>"
                           "</details>", ""))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in heads)
    tools = (f'<div class="tools"><input class="filter" type="search" data-board="{board.name}" '
             f'placeholder="filter rows: words that must all occur" aria-label="filter {board.name}"> '
             f'<span class="count">{len(rows)} of {len(rows)} rows</span>'
             f'<button class="download" data-board="{board.name}" data-kind="csv">entries as CSV</button>'
             f'<button class="download" data-board="{board.name}" data-kind="json">entries as JSON</button></div>'
             f'{_embedded(f"csv-{board.name}", table_csv(board, ordered, ranks))}'
             f'{_embedded(f"json-{board.name}", [_plain_entry(e) for e in ordered])}')
    return (f'<h2 id="{board.name}">{html.escape(board.title)} <small>({board.name}, {len(entries)} entries)</small></h2>'
            f'<p class="text">{html.escape(board.description.strip())}</p>'
            f'<p class="text">Rank: {html.escape(method)} ({html.escape(first)} on {html.escape(board.datasets[0])}). '
            f'Verified: {html.escape(boards.VERIFIED_TEXT)}. Cells: mean ± standard error over seeds, the bar its 95% '
            f'bootstrap interval and the tick its mean (scaled per column). Click a column to sort.</p>'
            f'{tools}<table class="board" id="table-{board.name}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>')


def _plain_entry(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if k != "_path"}


def _embedded(element_id: str, value: Any) -> str:
    """``value`` as JSON in an inert script element (``</`` escaped, so no text ends it early)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":")).replace("</", "<\\/")
    return f'<script type="application/json" id="{element_id}">{text}</script>'


def table_csv(board: boards.Board, ordered: list[dict], ranks: list[str]) -> str:
    """The entries as CSV, one row each in the table's order: rank, entrant, selection, per dataset and
    metric mean, standard error and 95% interval, seeds, verification level and date, code
    version, config hashes."""
    stats = [(d, m) for d in board.datasets for m in board.metrics]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["rank", *board.entrant, "selection",
                     *(f"{d}:{m}:{part}" for d, m in stats for part in ("mean", "stderr", "ci95_low", "ci95_high")),
                     "seeds", "level", "date", "code_version", "config_hashes"])
    for rank, entry in zip(ranks, ordered):
        cells: list[Any] = [rank, *(entry["entrant"].get(k, "") for k in board.entrant), entry["selection"]]
        for d, m in stats:
            stat = entry["results"].get(d, {}).get("metrics", {}).get(m) or {}
            low, high = stat.get("ci95") or [None, None]
            cells += ["" if v is None else repr(float(v)) for v in (stat.get("mean"), stat.get("stderr"), low, high)]
        level, date = levels.level_of(entry)
        cells += [" ".join(map(str, entry["provenance"]["seeds"])), level, date,
                  boards.version_text(entry["provenance"]["code_version"]), " ".join(entry["provenance"]["config_hashes"])]
        writer.writerow(cells)
    return out.getvalue()


def render_page(sections: list[tuple[boards.Board, list[dict]]], title: str = "shift-harness boards") -> str:
    """A page of the boards' sections, linked from a list at the top when there are several."""
    links = " · ".join(f'<a href="#{b.name}">{html.escape(b.title)}</a>' for b, _ in sections)
    body = "".join(board_section(b, e) for b, e in sections)
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            + (f"<p>{links}</p>" if len(sections) > 1 else "") + f"{body}<script>{SCRIPT}</script></body></html>\n")
