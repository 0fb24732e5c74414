"""The boards' HTML page: one file that opens from disk, with tie groups, levels and provenance."""
import re
import shutil

from harness.cli import main
from harness.commands.leaderboard import write_page
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
