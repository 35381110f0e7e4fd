"""The web UI in a real Chromium (Debian's package, driven by Playwright): a user's walk
from the experiments list to a model version, on a populated SQLite backend served by
``prefect-mlops server``. Every page is watched for console errors, page errors and
dialogs (an XSS payload that ran would open one). Screenshots go to ``docs/`` when
``PREFECT_MLOPS_UI_SCREENSHOTS`` is set (that is how the README's pictures are made)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, urlparse

import pytest

CHROMIUM = os.environ.get("PREFECT_MLOPS_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
DOCS = Path(__file__).resolve().parents[3] / "docs"
DENSE_POINTS = 200_000
SHOTS = bool(os.environ.get("PREFECT_MLOPS_UI_SCREENSHOTS"))

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"Chromium not found at {CHROMIUM}: run `make test` (it installs it) or apt-get install chromium"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


class Watch:
    """Console errors, page errors and dialogs of one page, kept for the assertions."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", lambda m: m.type == "error" and self.errors.append(f"{page.url}: {m.text}"))
        page.on("pageerror", lambda e: self.errors.append(f"{page.url}: {e}"))
        page.on("dialog", self._dialog)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()


def shot(page: Any, name: str, selector: str | None = None) -> None:
    if SHOTS:
        DOCS.mkdir(exist_ok=True)
        target = page.locator(selector).first if selector else page
        target.screenshot(path=str(DOCS / name))


def test_a_users_walk_through_the_ui(ui_site: tuple[str, Any], browser: Any) -> None:
    url, data = ui_site
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    watch = Watch(page)
    page.set_default_timeout(15_000)

    # Experiments -> runs
    page.goto(url + "/")
    page.fill("#experiment-search", "churn")
    page.press("#experiment-search", "Enter")
    page.click("text=churn-training")
    page.wait_for_selector("#runs")
    # Top-level runs only (6 trials, the sweep, the XSS run); the sweep's two children open under it.
    assert page.locator("#runs tbody tr").count() == 8
    sweep = page.locator(f"#runs tr[data-run-id='{data.runs['sweep']}']")
    sweep.locator("button.expand").click()
    page.wait_for_selector("#runs tr.child")
    assert page.locator("#runs tbody tr").count() == 10
    following = page.locator(f"#runs tr[data-run-id='{data.runs['sweep']}'] ~ tr").all()
    assert {r.get_attribute("data-run-id") for r in following[:2]} == {data.runs["sweep-child-0"], data.runs["sweep-child-1"]}
    sweep.locator("button.expand").click()
    assert page.locator("#runs tbody tr").count() == 8

    # A valid filter with OR and parentheses
    page.fill("#filter", "(params.model = 'rf' or params.model = 'lr') and metrics.auc >= 0.7")
    page.click("#apply")
    page.wait_for_selector("#runs")
    names = page.locator("#runs tbody td > a").all_inner_texts()
    assert set(names) == {"trial-0", "trial-2", "trial-3", "trial-5", "sweep-child-0", "sweep-child-1"}
    # filtered, the table is flat: the children are listed with a link to their parent
    assert page.locator(f"#runs .parent-link a[href='/runs/{data.runs['sweep']}']").count() == 2
    # An invalid one: the parser's message inline, no stack trace
    page.fill("#filter", "metrics.auc >> 0.9")
    page.click("#apply")
    error = page.locator("#filter-error")
    error.wait_for()  # is_visible() does not wait for the submitted page
    assert error.is_visible() and ">>" in error.inner_text() and "Traceback" not in page.content()

    # Sort by a metric (server side), choose columns, reload keeps the view
    page.fill("#filter", "")
    page.click("#apply")
    page.click("#column-chooser summary")
    for col in ("metrics.rmse", "params.seed", "user_id"):
        page.locator(f"#column-chooser input[value='{col}']").check()
    page.locator("#column-chooser input[value='status']").uncheck()
    page.click("#column-chooser button")
    page.wait_for_selector("#runs")
    page.click("#runs th[data-column='metrics.auc'] a")  # first click: descending
    page.wait_for_selector("#runs th[data-column='metrics.auc'] >> text=▼")
    first_names = page.locator("#runs tbody tr:not(.child) td:nth-child(2) a").all_inner_texts()
    assert first_names[:2] == ["trial-5", "trial-4"], first_names
    view = parse_qs(urlparse(page.url).query)
    assert view["order"] == ["metrics.auc DESC"] and "metrics.rmse" in view["cols"][0] and "status" not in view["cols"][0]
    page.reload()
    headers = page.locator("#runs thead th").all_inner_texts()
    assert "metrics.rmse" in headers and "params.seed" in headers and "status" not in headers
    assert any("▼" in h for h in headers)
    # Remembered: opening the experiment without a view restores the last one.
    page.goto(f"{url}/experiments/{data.experiment_id}")
    page.wait_for_url("**order=metrics.auc*")
    page.click("#reset-view")
    assert page.locator("#runs th[data-column='status']").count() == 1 and "▼" not in page.locator("#runs thead").inner_text()
    page.go_back()
    page.wait_for_selector("#runs")
    if SHOTS:  # the picture shows a sweep opened under its parent
        page.locator(f"#runs tr[data-run-id='{data.runs['sweep']}'] button.expand").click()
        page.wait_for_selector("#runs tr.child")
    shot(page, "ui-runs.png")

    # XSS run: escaped text, no dialog
    page.goto(f"{url}/runs/{data.runs['xss']}")
    assert page.locator("#run-name").inner_text() == data.xss_name
    page.click("#artifact-tree >> text=notes.md")
    page.wait_for_selector("#artifact-preview .markdown")
    assert "<script>alert('md')</script>" in page.locator("#artifact-preview .markdown").inner_text()

    # The run page: lineage, previews, chart
    page.goto(f"{url}/runs/{data.runs['trial-5']}")
    assert page.locator("#flow-run-link").get_attribute("href").startswith("http://127.0.0.1:4200/runs/flow-run/")
    assert "0000005abcdef" in page.locator("#lineage").inner_text()
    assert page.locator("#metrics svg.spark").count() == 2  # loss and train_loss; auc, rmse have one point
    page.click("#artifact-tree >> text=plots/")
    page.click("#artifact-tree >> text=roc.png")
    page.wait_for_selector("#artifact-preview img.artifact-image")
    page.wait_for_function("() => document.querySelector('#artifact-preview img').naturalWidth > 0")
    page.click("#artifact-tree >> text=data/")
    page.click("#artifact-tree >> text=predictions.csv")
    page.wait_for_selector("#artifact-preview table.artifact-table")
    assert page.locator("#artifact-preview table.artifact-table tbody tr").count() == 3
    page.click("#artifact-tree >> text=model/")
    page.click("#artifact-tree >> text=MLmodel")
    page.wait_for_selector("#artifact-preview .mlmodel")
    assert "tenure" in page.locator("#artifact-preview table.signature").first.inner_text()
    assert "load_model" in page.locator("#artifact-preview .mlmodel").inner_text()

    chart = page.locator(".chart-box").first
    assert chart.locator(".chart-metric").input_value() == "train_loss"  # the longest history first
    page.wait_for_function("() => /of 200,000 points/.test(document.querySelector('.chart-info').textContent)")
    assert page.locator(".chart-box canvas").count() >= 1
    shot(page, "ui-chart.png", ".chart-box")
    plotted = "(i) => { const d = document.querySelector('.chart-box').uplot.data; return [d[0][0], d[0][d[0].length - 1], Math.max(...d[i].filter((v) => v != null))]; }"
    first_x, last_x, peak = page.evaluate(plotted, 1)
    assert (first_x, last_x, peak) == (0, 199_999, 1000.0)  # steps; the one-point spike is drawn
    chart.locator(".chart-axis").select_option("time")
    page.wait_for_function("() => document.querySelector('.chart-box').uplot.scales.x.time === true")
    first_x, last_x, _ = page.evaluate(plotted, 1)
    assert first_x > 1.5e9 and last_x - first_x == pytest.approx(1999.99, abs=0.01)  # epoch seconds, 10 ms apart
    chart.locator(".chart-axis").select_option("relative")
    page.wait_for_function("() => document.querySelector('.chart-box').uplot.scales.x.time === false")
    first_x, last_x, _ = page.evaluate(plotted, 1)
    assert first_x == 0 and last_x == pytest.approx(1999.99, abs=0.01)  # seconds since the run started
    chart.locator(".chart-smoothing").fill("0.9")
    _, _, smoothed_peak = page.evaluate(plotted, 1)
    assert 0.5 < smoothed_peak < 1000.0  # the moving average flattens the spike
    chart.locator(".chart-log").check()
    page.wait_for_function("() => document.querySelector('.chart-box').uplot.scales.y.distr === 3")
    # Drag to zoom: the server is asked for the zoomed range.
    box = page.locator(".chart-box .u-over").bounding_box()
    page.mouse.move(box["x"] + 20, box["y"] + 50)
    page.mouse.down()
    page.mouse.move(box["x"] + 40, box["y"] + 50)
    page.mouse.up()
    page.wait_for_function("() => document.querySelector('.chart-box').dataset.ready === 'zoomed'")

    # Compare three runs, only differences
    page.goto(f"{url}/experiments/{data.experiment_id}?cols=run_name,params.model&order=attributes.run_name+ASC")
    for name in ("trial-0", "trial-1", "trial-2"):
        page.locator(f"#runs tr:has(a:text-is('{name}')) input[type=checkbox]").check()
    assert page.locator("#selected-count").inner_text() == "3 selected"
    page.click("#compare-button")
    page.wait_for_selector("#compare-table")
    assert page.locator("#compare-table tr.cmp:has-text('seed')").is_visible()
    page.check("#only-diff")
    assert not page.locator("#compare-table tr.cmp:has-text('seed')").is_visible()
    assert page.locator("#compare-table tr.cmp:has-text('max_depth')").is_visible()
    assert page.locator("#scatter circle.dot").count() == 3
    assert page.locator("#parallel polyline").count() == 3
    page.wait_for_selector(".chart-box canvas")
    shot(page, "ui-compare.png")

    # The XSS run beside another one: its name in the table, the chart legend and the SVG titles stays text
    page.goto(f"{url}/compare?runs={data.runs['xss']}&runs={data.runs['trial-0']}")
    page.wait_for_selector(".chart-box canvas")
    assert data.xss_name in page.locator("#compare-table thead").inner_text()
    assert data.xss_name in page.locator(".u-legend").inner_text()

    # Registry -> version page with gate table and audit timeline
    page.click("header >> text=Models")
    page.click(f"text={data.model}")
    page.click("#versions >> text=v3")
    assert "PASSED" in page.locator("#gate-verdict").inner_text()
    assert page.locator("#gate-rules tbody tr").count() >= 2
    audit = page.locator("#audit").inner_text()
    assert "alias @champion: v2 → v3" in audit and "alice" in audit and "f1a2b3c4-flow" in audit
    page.click("#training-run")
    assert page.locator("#run-name").inner_text() == "trial-5"
    page.go_back()
    shot(page, "ui-version.png")

    # The drift monitor's reports about v3 as charts: a line per feature, the threshold, the verdicts.
    page.wait_for_selector("#drift-chart canvas")
    page.wait_for_function("() => document.querySelector('#drift-chart').dataset.ready === 'full'")
    labels = page.evaluate("() => document.querySelector('#drift-chart').uplot.series.slice(1).map((s) => s.label)")
    assert labels == ["monthly_charges", "plan", "tenure", "PSI threshold"]
    peak = page.evaluate("() => Math.max(...document.querySelector('#drift-chart').uplot.data[1])")
    assert peak == pytest.approx(0.6)  # monthly_charges on day 6
    assert page.locator("#drift-share rect.bar").count() == 6 and page.locator("#drift-share rect.bar.drifted").count() == 3
    assert page.locator("#drift-table tbody tr.fail").count() == 3
    shot(page, "ui-drift.png", "section:has(#drift-chart)")

    assert watch.dialogs == [], watch.dialogs
    assert watch.errors == [], watch.errors

    # A missing run is a 404 page (Chromium logs the 404 itself, so it is checked apart).
    missing = page.goto(f"{url}/runs/0123456789abcdef0123456789abcdef")
    assert missing is not None and missing.status == 404 and page.locator("#not-found").is_visible()
    context.close()
