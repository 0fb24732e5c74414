"""Writes docs/boards-screenshot.png: a shipped board's page (default worst_group_smoke) in headless
chromium, sorted by its ranking column (a click on the header), one row's provenance opened and
the filter box holding a word. Needs chromium, chromium-driver and selenium (`make screenshot`).

    python docs/boards_screenshot.py [BOARD] [OUT.png]
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from harness.leaderboards import board as boards


def main(name: str = "worst_group_smoke", out: str = str(Path(__file__).parent / "boards-screenshot.png")) -> None:
    binary, driver_path = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not binary or not driver_path:
        sys.exit("chromium and chromium-driver are needed: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1900,1000", "--hide-scrollbars"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        board = boards.load_board(name)
        driver.get((boards.BOARD_DIR / f"{name}.html").resolve().as_uri())
        table = driver.find_element(By.ID, f"table-{name}")
        header = next(h for h in table.find_elements(By.CSS_SELECTOR, "thead th")
                      if h.text.startswith(f"{board.datasets[0]}: "))
        header.click()
        header.click()  # best first
        driver.find_element(By.CSS_SELECTOR, f'input.filter[data-board="{name}"]').send_keys("val-wga")
        row = next(r for r in table.find_elements(By.CSS_SELECTOR, "tbody tr") if r.is_displayed())
        row.find_element(By.TAG_NAME, "summary").click()
        driver.execute_script("arguments[0].scrollIntoView({block: 'start'});", driver.find_element(By.ID, name))
        driver.save_screenshot(out)
    finally:
        driver.quit()
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
