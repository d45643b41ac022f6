"""Headless Chromium for end-to-end tests (fixture ``browser``, registered in tests/conftest.py).

Without chromium and chromedriver (Debian packages ``chromium`` and ``chromium-driver``, which
``tools/check`` installs) browser tests are skipped locally and fail when ``CI`` is set.
"""

from __future__ import annotations

import os
import shutil
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

#: Longest wait for anything in the browser.
WAIT_S = 20.0


def _browser_binaries() -> tuple[str, str] | None:
    chromium = shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None
    )
    return (chromium, driver) if chromium and driver else None


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    binaries = _browser_binaries()
    if binaries is None:
        message = (
            "headless browser tests need chromium and chromedriver (apt-get install chromium chromium-driver)"
        )
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run them")
        pytest.skip(message)
    chromium, chromedriver = binaries
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(chromedriver))
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: WebDriver, condition: Any, what: str) -> Any:
    return WebDriverWait(driver, WAIT_S).until(
        condition, message=f"waiting for {what}; at {driver.current_url}"
    )


def path_of(driver: WebDriver) -> str:
    return urllib.parse.urlsplit(driver.current_url).path
