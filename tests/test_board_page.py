"""The boards' HTML pages (all boards, and one per board): files that open from disk, with tie
groups, levels, provenance, a filter box and the entries' data to download."""
import csv
import io
import json
import re
import shutil

import pytest

from harness.cli import main
from harness.commands.leaderboard import board_page, write_page
from harness.leaderboards import board as boards


def test_the_page_is_self_contained_and_shows_what_the_board_knows(tmp_path, capsys):
    folder = tmp_path / "board"
    shutil.copytree(boards.BOARD_DIR / "entries" / "worst_group_smoke", folder / "entries" / "worst_group_smoke")
    assert main(["leaderboard", "page", "--board-dir", str(folder)]) == 0
    page = (folder / "boards.html").read_text()
    assert not re.search(r"(src|href)=\"(https?:)?//", page) and "<link" not in page and "<script src" not in page
    assert page.count("<tr>") == 1 + 4 and "colored_digits: test worst-group acc" in page
    assert "paired bootstrap" in page  # its entries ship per-example predictions
    assert boards.load_board("worst_group_smoke").description.split()[0] in page  # the board's own text
    assert 'class="level recomputed"' in page and "<details>" in page and 'class="bar"' in page
    ranks = re.findall(r'<tr><td data-sort="\d+">([^<]+)</td>', page)
    assert len(ranks) == 4 and all(re.fullmatch(r"\d+(–\d+)?", r) for r in ranks)
    assert "addEventListener('click'" in page


def test_the_shipped_page_is_what_the_shipped_entries_render(tmp_path):
    """CI's check for the page, as for the markdown tables (rebuild: harness leaderboard page --board-dir
    harness/leaderboards)."""
    shipped = (boards.BOARD_DIR / "boards.html").read_text()
    copy = tmp_path / "b"
    shutil.copytree(boards.BOARD_DIR / "entries", copy / "entries")
    assert write_page([], copy).read_text() == shipped


SHIPPED = sorted(p.stem for p in boards.BOARD_DIR.glob("*.yaml") if (boards.BOARD_DIR / "entries" / p.stem).is_dir())


@pytest.mark.parametrize("name", SHIPPED)
def test_each_shipped_boards_page_is_what_its_entries_render(name):
    """CI's check, as for the tables (rebuild: harness leaderboard render NAME --html --board-dir harness/leaderboards)."""
    board = boards.load_board(name)
    assert (boards.BOARD_DIR / f"{name}.html").read_text() == board_page(board)


def test_render_html_writes_one_boards_page_with_its_data_filter_and_sorting(tmp_path, capsys):
    folder = tmp_path / "board"
    shutil.copytree(boards.BOARD_DIR / "entries" / "worst_group_smoke", folder / "entries" / "worst_group_smoke")
    assert main(["leaderboard", "render", "worst_group_smoke", "--html", "--board-dir", str(folder)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {folder / 'worst_group_smoke.html'}"
    assert sorted(p.name for p in folder.iterdir()) == ["entries", "worst_group_smoke.html"]
    page = (folder / "worst_group_smoke.html").read_text()
    assert not re.search(r"(src|href)=\"(https?:)?//", page) and "<link" not in page and "<script src" not in page
    assert page.count("<tr>") == 1 + 4 and 'class="filter"' in page and page.count('class="download"') == 2
    assert "addEventListener('click'" in page and "new Blob(" in page
    board = boards.load_board("worst_group_smoke", folder)
    entries = boards.load_entries(board)
    data = json.loads(re.search(r'<script type="application/json" id="json-worst_group_smoke">(.*?)</script>',
                                page).group(1))
    key = lambda e: json.dumps(e["entrant"], sort_keys=True)  # noqa: E731
    assert {key(e): e for e in data} == {key(e): {k: v for k, v in e.items() if k != "_path"} for e in entries}
    text = json.loads(re.search(r'<script type="application/json" id="csv-worst_group_smoke">(.*?)</script>',
                                page).group(1))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 4 and rows[0]["rank"] == "1–2"
    by_algorithm = {(r["algorithm"], r["groups"]): r for r in rows}
    erm = next(e for e in entries if e["entrant"]["algorithm"] == "erm")
    stat = erm["results"]["colored_digits"]["metrics"]["test.worst_group_acc"]
    row = by_algorithm[("erm", "annotated")]
    assert float(row["colored_digits:test.worst_group_acc:mean"]) == stat["mean"]
    assert float(row["colored_digits:test.worst_group_acc:ci95_high"]) == stat["ci95"][1]
    assert row["config_hashes"].split() == erm["provenance"]["config_hashes"] and row["level"] == "recomputed"
    # printed without --board-dir: the same page, nothing written
    assert main(["leaderboard", "render", "worst_group_smoke", "--html"]) == 0
    assert capsys.readouterr().out == (boards.BOARD_DIR / "worst_group_smoke.html").read_text()


def test_embedded_data_cannot_end_its_script_element():
    from harness.leaderboards.page import _embedded

    text = _embedded("x", {"method": "</script><script>alert(1)</script>"})
    assert text.count("</script>") == 1 and json.loads(text[text.index(">") + 1:-len("</script>")])["method"].startswith(
        "</script>")
