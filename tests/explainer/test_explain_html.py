"""The HTML page of ``cloche explain`` opened in a real browser: Debian's chromium, headless,
driven by Selenium through Debian's chromedriver (nothing downloaded), from a file:// URL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.engine.conftest import BASE, Builder
from tests.fixtures.services import require_tool

pytestmark = pytest.mark.root

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def test_the_html_page_shows_the_stage_graph_in_a_browser(builder: Builder,
                                                          tmp_path: Path) -> None:
    require_tool(CHROMIUM, "apt-get install chromium")
    require_tool(CHROMEDRIVER, "apt-get install chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    ctx = builder.context(f"""FROM {BASE} AS deps
RUN dd if=/dev/zero of=/deps.bin bs=1024 count=64
FROM deps AS build
RUN echo '<b>app</b>' > /app.txt
FROM {BASE} AS unused
RUN true
FROM {BASE}
COPY --from=build /app.txt /app.txt
ENTRYPOINT ["/missing"]
""")
    page = tmp_path / "report.html"
    builder.cli("explain", "--format", "html", "-o", str(page), str(ctx))
    html = page.read_text()
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "") and \
        "https://" not in html.replace("https://cloche.dev/schemas/explain/v1", "")

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(page.as_uri())
        assert driver.title.startswith("cloche explain:")
        nodes = driver.find_elements(By.CSS_SELECTOR, "svg#stage-graph g.stage-node")
        assert sorted(n.get_attribute("data-stage") for n in nodes) == ["0", "1", "2", "3"]
        names = {n.get_attribute("data-stage"): n.find_element(By.TAG_NAME, "text").text
                 for n in nodes}
        assert names == {"0": "deps", "1": "build", "2": "unused", "3": "stage 3"}
        classes = {n.get_attribute("data-stage"): n.get_attribute("class") for n in nodes}
        assert classes["3"].split() == ["stage-node", "final"]
        assert "copied" in classes["1"] and "skipped" in classes["2"]
        # drawn: each node has a visible box
        for node in nodes:
            box = node.find_element(By.TAG_NAME, "rect")
            assert box.size["width"] > 100 and box.size["height"] > 50
        edges = {(e.get_attribute("data-from"), e.get_attribute("data-to"))
                 for e in driver.find_elements(By.CSS_SELECTOR, "g.stage-edge")}
        assert edges == {("0", "1"), ("1", "3")}  # FROM deps, COPY --from=build
        layers = driver.find_elements(By.CSS_SELECTOR, "#final-layers tr.layer")
        assert len(layers) == 2
        assert "entrypoint-missing" in driver.find_element(By.TAG_NAME, "body").text
        # nothing was fetched: the page is self-contained
        fetched = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)")
        assert fetched == []
        data = json.loads(driver.execute_script(
            "return document.getElementById('report-data').textContent"))
        assert data["counts"]["runtime"] == 1
    finally:
        driver.quit()
