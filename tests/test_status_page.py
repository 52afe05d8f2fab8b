"""The status page in a real headless browser (Debian chromium driven by Selenium through
/usr/bin/chromedriver): it loads, refreshes itself, shows a destination going down and coming
back with its backlog, lists refusals by pseudonymous UID and reason, and holds no original
value after a PHI-laden study went through. A screenshot is kept in var/artifacts/."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import html
from pydicom import dcmread
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.corpus import write_corpus
from tests.netpeers import StoreSCP, free_port, storescu
from tests.test_metrics import http_port, metrics_proxy, us_objects

pytestmark = pytest.mark.network

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "var" / "artifacts"
# Attributes of the test corpus that carry identity (names, IDs, dates, UIDs, places, text).
IDENTIFYING = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "AccessionNumber",
    "InstitutionName",
    "InstitutionAddress",
    "ReferringPhysicianName",
    "StationName",
    "StudyID",
    "StudyDescription",
    "StudyDate",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "FrameOfReferenceUID",
)


def _browser() -> WebDriver:
    chromium = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    assert chromium and driver, "install Debian packages chromium and chromium-driver (scripts/test does)"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1100,900",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(driver), options=options)


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    driver = _browser()
    try:
        yield driver
    finally:
        driver.quit()


def _original_values(paths: list[Path]) -> set[str]:
    values: set[str] = set()
    for path in paths:
        ds = dcmread(path)
        for keyword in IDENTIFYING:
            text = str(ds.get(keyword, ""))
            values.add(text)
            values.update(part for part in text.replace("^", " ").split() if len(part) >= 4)
    values.discard("")
    return values


def _page(driver: WebDriver) -> html.HtmlElement:
    """One consistent snapshot of the page: it reloads itself, so live elements go stale."""
    return html.fromstring(driver.page_source)


def _text(driver: WebDriver, element_id: str) -> str:
    found = _page(driver).xpath(f"//*[@id='{element_id}']")
    return " ".join(found[0].text_content().split()) if found else ""


def _state(driver: WebDriver) -> tuple[str, str]:
    row = _page(driver).xpath("//tr[@id='destination-research']")
    if not row:
        return "", ""
    state = row[0].xpath(".//*[contains(@class, 'state')]")[0].text_content()
    return state, row[0].xpath(".//td[contains(@class, 'backlog')]")[0].text_content()


def test_status_page_shows_a_destination_going_down_and_coming_back(tmp_path: Path, browser: WebDriver) -> None:
    corpus = write_corpus(tmp_path / "corpus", patients=2, series_per_study=1, images_per_series=2)
    refused = us_objects(tmp_path / "us", 1)
    archive_port = free_port()
    with StoreSCP(tmp_path / "archive", archive_port) as scp, metrics_proxy(tmp_path, archive_port) as proxy:
        url = f"http://127.0.0.1:{http_port(proxy)}/?refresh=1"
        browser.get(url)
        assert browser.title == "dicom-proxy DEID_PROXY"
        assert _text(browser, "ae-title") == "DEID_PROXY"
        assert _state(browser) == ("unknown", "0")

        sent = storescu(proxy.port, [*corpus, *refused])
        assert sent.statuses == ["Success"] * len(corpus) + ["Error: CannotUnderstand"], sent.output
        scp.complete_files(len(corpus))
        # No reload from the test: the page refreshes itself (refresh=1).
        wait = WebDriverWait(browser, 30, poll_frequency=0.2, ignored_exceptions=(WebDriverException,))
        wait.until(lambda d: _state(d) == ("up", "0"))
        page = _page(browser)
        totals = [td.text_content() for td in page.xpath("//*[@id='totals']//td")]
        assert totals == [str(len(corpus) + 1), str(len(corpus)), "1", str(len(corpus))]
        refusals = page.xpath("//*[@id='refusals']")[0].text_content()
        assert "0xC003" in refusals and "no pixel rule cleans it" in refusals
        assert "2.25." in refusals  # the refused object, by its pseudonymous SOP Instance UID
        assert page.xpath("//*[local-name()='polyline']/@points")

        # The archive goes away: a new object waits, the destination turns red.
        scp.stop()
        late = write_corpus(tmp_path / "late", patients=1, series_per_study=1, images_per_series=1)
        assert storescu(proxy.port, late).statuses == ["Success"]
        wait.until(lambda d: _state(d) == ("down", "1"))
        assert "failed attempts" in _text(browser, "destination-research")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "status-page-down.png"))

        # And comes back: the backlog drains, the destination is up again.
        with StoreSCP(tmp_path / "archive2", archive_port) as again:
            again.complete_files(1)
            wait.until(lambda d: _state(d) == ("up", "0"))
        assert browser.save_screenshot(str(ARTIFACTS / "status-page.png"))

        page = browser.page_source
        leaked = sorted(v for v in _original_values([*corpus, *refused, *late]) if v in page)
        assert leaked == []
        assert proxy.terminate() == 0
