"""The rendered board pages in a real browser (Debian's chromium and chromium-driver, installed by
.ci/run; selenium from the test extra): each shipped page loaded from disk, a column sorted by
clicking its header, the rows read back in order, the filter box tried, a row's provenance
opened and a config hash read from it, the embedded downloads parsed, and a screenshot saved.

Without chromium this module skips only outside CI; under CI=true it fails instead.
"""
import json
import os
import re
import shutil

import pytest

from harness.leaderboards import board as boards

PAGES = sorted(p.stem for p in boards.BOARD_DIR.glob("*.html") if p.stem != "boards")


def _driver_or_reason():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as e:
        return None, f"selenium is not installed ({e})"
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not binary or not driver:
        return None, "chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1600,1000"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(driver), options=options), None


@pytest.fixture(scope="module")
def browser():
    driver, reason = _driver_or_reason()
    if driver is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true but no browser: {reason}")
        pytest.skip(reason)
    yield driver
    driver.quit()


def _sort_keys(driver, table, column):
    return driver.execute_script(
        "return [...arguments[0].tBodies[0].rows].map(r => r.cells[arguments[1]].dataset.sort);", table, column)


def test_every_shipped_board_has_a_page():
    assert {"worst_group", "worst_group_smoke", "transfer", "transfer_best", "disentanglement"} <= set(PAGES)


@pytest.mark.parametrize("name", PAGES)
def test_a_page_sorts_filters_opens_provenance_and_offers_its_data(browser, name, tmp_path):
    from selenium.webdriver.common.by import By

    board = boards.load_board(name)
    entries = boards.load_entries(board)
    browser.get((boards.BOARD_DIR / f"{name}.html").resolve().as_uri())
    table = browser.find_element(By.ID, f"table-{name}")
    rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(rows) == len(entries)
    headers = table.find_elements(By.CSS_SELECTOR, "thead th")
    column = next(i for i, h in enumerate(headers) if h.text.startswith(f"{board.datasets[0]}: "))
    headers[column].click()  # ascending
    values = [float(v) for v in _sort_keys(browser, table, column) if v != ""]
    assert values == sorted(values) and len(values) >= 1
    headers[column].click()  # descending
    values = [float(v) for v in _sort_keys(browser, table, column) if v != ""]
    assert values == sorted(values, reverse=True)
    assert "sorted-desc" in headers[column].get_attribute("class")
    # the filter box: the first row's entrant value keeps that row and hides those without it
    first = table.find_elements(By.CSS_SELECTOR, "tbody tr")[0]
    word = first.find_elements(By.TAG_NAME, "td")[1].text.split()[0]
    box = browser.find_element(By.CSS_SELECTOR, f'input.filter[data-board="{name}"]')
    box.send_keys(word)
    shown = [r for r in table.find_elements(By.CSS_SELECTOR, "tbody tr") if r.is_displayed()]
    assert first in shown and all(word.lower() in r.text.lower() for r in shown)
    assert re.fullmatch(rf"{len(shown)} of {len(entries)} rows",
                        box.find_element(By.XPATH, "following-sibling::span").text)
    box.clear()
    box.send_keys(" ")  # an empty filter shows every row again
    assert all(r.is_displayed() for r in table.find_elements(By.CSS_SELECTOR, "tbody tr"))
    # a row's provenance, one click away: its config hashes are the entry's
    first.find_element(By.TAG_NAME, "summary").click()
    text = first.find_element(By.TAG_NAME, "pre").text
    hashes = re.findall(r'"([0-9a-f]{12})"', text)
    assert hashes and first.find_element(By.TAG_NAME, "pre").is_displayed()
    owner = [e for e in entries if hashes[0] in e["provenance"]["config_hashes"]]
    assert owner and set(hashes) <= {h for e in owner for h in e["provenance"]["config_hashes"]}
    # the downloads: the page's own data, as the buttons save it
    data = browser.execute_script(f"return boardData('{name}', 'json');")
    key = lambda e: json.dumps(e["entrant"], sort_keys=True)  # noqa: E731
    # compared as values (a float such as 1.0 comes back from the browser as the integer 1)
    assert {key(e): e for e in data} == {key(e): {k: v for k, v in e.items() if k != "_path"} for e in entries}
    csv_text = browser.execute_script(f"return boardData('{name}', 'csv');")
    assert len(csv_text.strip().splitlines()) == 1 + len(entries)
    assert browser.execute_script("return document.querySelectorAll('link, script[src], img[src^=http]').length") == 0
    shot = tmp_path / f"{name}.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
