"""The web UI over HTTP (no browser): pages, escaping, bad input, bounded JSON, and the
server-side downsampling of dense metric histories. A real server subprocess on SQLite,
populated through the store (see conftest.py)."""

from __future__ import annotations

from typing import Any, Iterator
from urllib.parse import quote

import httpx
import pytest

DENSE_POINTS = 100_000
Populated = Any  # conftest.Populated


@pytest.fixture(scope="module")
def ui(ui_site: tuple[str, Any]) -> Iterator[tuple[httpx.Client, Any]]:
    url, data = ui_site
    with httpx.Client(base_url=url, timeout=30) as http:
        yield http, data


def test_experiments_page_lists_run_counts_and_searches(ui: tuple[httpx.Client, Populated]) -> None:
    http, data = ui
    r = http.get("/")
    assert r.status_code == 200, r.text
    assert "churn-training" in r.text
    # 6 trials + sweep parent + 2 children + the XSS run
    assert ">10</td>" in r.text
    assert "churn-training" not in http.get("/", params={"q": "nothing-like-this"}).text


def test_runs_table_filters_sorts_and_pages_on_the_server(ui: tuple[httpx.Client, Populated]) -> None:
    http, data = ui
    url = f"/experiments/{data.experiment_id}"
    r = http.get(url, params={"filter": "(params.model = 'rf' or params.model = 'gb') and metrics.auc > 0.72",
                              "order": "metrics.auc DESC", "cols": "run_name,metrics.auc,params.model"})
    assert r.status_code == 200, r.text
    names = [n for n in ("trial-1", "trial-3", "trial-4", "sweep-child-0", "sweep-child-1") if n in r.text]
    assert names == ["trial-1", "trial-3", "trial-4", "sweep-child-0", "sweep-child-1"]
    # descending auc: trial-4 (0.82) before sweep-child-1 (0.81) before trial-3 (0.79)
    assert r.text.index("trial-4") < r.text.index("sweep-child-1") < r.text.index("trial-3") < r.text.index("trial-1")
    assert "trial-0" not in r.text and "trial-2" not in r.text
    # any column sorts on the server: a param, a tag
    by_param = http.get(url, params={"order": "params.model ASC", "cols": "run_name,params.model",
                                     "filter": "attributes.run_name LIKE 'trial-%'"}).text
    assert by_param.index(">trial-1<") < by_param.index(">trial-2<") < by_param.index(">trial-0<")  # gb < lr < rf
    by_tag = http.get(url, params={"order": "tags.mlflow.source.git.commit DESC", "cols": "run_name",
                                   "filter": "attributes.run_name LIKE 'trial-%'"}).text
    assert by_tag.index(">trial-5<") < by_tag.index(">trial-4<") < by_tag.index(">trial-0<")
    page0 = http.get(url, params={"size": 25, "order": "attributes.run_name ASC", "cols": "run_name"}).text
    assert 'id="next-page"' not in page0
    r = http.get(url, params={"status": "FAILED", "cols": "run_name,status"})
    assert "trial-4" in r.text and "trial-3" not in r.text
    # "started within": trial-0 started an hour before the fixture ran, trial-5 55 minutes
    last_hour = http.get(url, params={"since": "1h", "cols": "run_name"}).text
    assert ">trial-5<" in last_hour and ">trial-0<" not in last_hour
    assert ">trial-0<" in http.get(url, params={"since": "24h", "cols": "run_name"}).text


def test_a_bad_filter_shows_the_parser_message_not_a_stack_trace(ui: tuple[httpx.Client, Populated]) -> None:
    http, data = ui
    r = http.get(f"/experiments/{data.experiment_id}", params={"filter": "metrics.auc >> 0.9 and ("})
    assert r.status_code == 200
    assert 'id="filter-error"' in r.text
    assert "Traceback" not in r.text and "File \"" not in r.text
    assert "&gt;&gt;" in r.text or "'>>'" in r.text or "&#39;&gt;&gt;&#39;" in r.text  # the parser names the bad token


def test_child_runs_sit_under_their_parent(ui: tuple[httpx.Client, Populated]) -> None:
    http, data = ui
    text = http.get(f"/experiments/{data.experiment_id}", params={"cols": "run_name", "order": "attributes.start_time DESC"}).text
    # Unfiltered, the table pages over top-level runs; the parent offers its two children.
    assert f'data-run-id="{data.runs["sweep-child-0"]}"' not in text
    assert f'<button type="button" class="expand" data-run="{data.runs["sweep"]}" aria-expanded="false"' in text
    rows = http.get(f"/ui-api/runs/{data.runs['sweep']}/children",
                    params={"cols": "run_name,metrics.auc", "order": "metrics.auc DESC"}).text
    assert rows.count('class="child"') == 2
    assert rows.index(">sweep-child-1<") < rows.index(">sweep-child-0<")  # the page's order: auc 0.81, 0.80
    assert rows.count(f'data-parent="{data.runs["sweep"]}"') == 2 and "0.81" in rows


def test_children_are_grouped_under_their_parent_across_pages(ui: tuple[httpx.Client, Populated]) -> None:
    http, data = ui
    url = f"/experiments/{data.paging_experiment_id}"
    # Newest first, flat, the three children (started last) would fill the first page while
    # their parent (started first) is on the last one. Nested, the pages hold top-level runs.
    first = http.get(url, params={"size": 25, "cols": "run_name"}).text
    assert "old-sweep" not in first and first.count('data-depth="0"') == 25 and 'id="next-page"' in first
    second = http.get(url, params={"size": 25, "cols": "run_name", "page": 1}).text
    assert second.count('data-depth="0"') == 6 and 'id="next-page"' not in second
    parent = data.runs["old-sweep"]
    assert f'data-run="{parent}" aria-expanded="false" title="show its child runs">▸ 3</button>' in second
    assert "old-sweep-child" not in second
    rows = http.get(f"/ui-api/runs/{parent}/children", params={"cols": "run_name", "order": "attributes.start_time ASC"}).text
    assert [rows.index(f">old-sweep-child-{j}<") for j in range(3)] == sorted(rows.index(f">old-sweep-child-{j}<") for j in range(3))
    assert rows.count('data-depth="1"') == 3
    # With a filter the table is flat: matching children are listed, each naming its parent.
    flat = http.get(url, params={"filter": "metrics.auc > 0.65", "cols": "run_name,metrics.auc"}).text
    assert ">old-sweep-child-1<" in flat and ">old-sweep-child-2<" in flat and ">old-sweep-child-0<" not in flat
    assert flat.count(f'child of <a href="/runs/{parent}">') == 2
    # Bad input to the children endpoint: a clear 4xx, not a stack trace.
    missing = http.get("/ui-api/runs/0123456789abcdef0123456789abcdef/children")
    assert missing.status_code == 404 and "Traceback" not in missing.text
    bad_depth = http.get(f"/ui-api/runs/{parent}/children", params={"depth": 0})
    assert bad_depth.status_code == 400 and "depth" in bad_depth.text


def test_version_page_charts_the_drift_monitors_reports(ui: tuple[httpx.Client, Populated]) -> None:
    import json
    import re

    http, data = ui
    page = http.get(f"/models/{data.model}/versions/3").text
    reports = json.loads(re.search(r'<script type="application/json" id="drift-data">(.*?)</script>', page, re.S).group(1))
    assert [r["run_id"] for r in reports] == data.drift_runs  # oldest first, v3's only
    assert [r["drifted"] for r in reports] == [False, False, False, True, True, True]
    assert reports[4]["scores"] == {"tenure": pytest.approx(0.05), "monthly_charges": pytest.approx(0.5), "plan": 0.02}
    assert reports[4]["drifted_features"] == ["monthly_charges"] and reports[4]["thresholds"] == {"psi": 0.2, "ks": 0.2}
    assert 'id="drift-chart"' in page and page.count("<strong>drifted</strong>") == 3
    assert "3 drifted" in page
    v1 = http.get(f"/models/{data.model}/versions/1").text
    assert len(json.loads(re.search(r'id="drift-data">(.*?)</script>', v1, re.S).group(1))) == 1
    v2 = http.get(f"/models/{data.model}/versions/2").text
    assert 'id="drift-none"' in v2 and 'id="drift-chart"' not in v2


def test_html_in_names_params_tags_and_markdown_is_escaped(ui: tuple[httpx.Client, Populated]) -> None:
    http, data = ui
    run_id = data.runs["xss"]
    for page in (http.get(f"/experiments/{data.experiment_id}").text, http.get(f"/runs/{run_id}").text):
        assert data.xss_name not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    run_page = http.get(f"/runs/{run_id}").text
    assert "<img src=x onerror" not in run_page and "<b onmouseover" not in run_page
    md = http.get(f"/ui-api/runs/{run_id}/preview", params={"path": "notes.md"}).text
    assert "<script>" not in md and "<img src=\"x\" onerror" not in md and "<img src=x onerror" not in md
    assert "&lt;script&gt;" in md and 'href="javascript:' not in md
    # An HTML artifact is never served inline from our origin.
    raw = http.get(f"/ui-api/runs/{run_id}/artifact", params={"path": "page.html"})
    assert raw.headers["content-disposition"].startswith("attachment")
    assert "sandbox" in raw.headers["content-security-policy"]


def test_missing_things_get_404_pages(ui: tuple[httpx.Client, Populated]) -> None:
    http, data = ui
    for url in ("/runs/0123456789abcdef0123456789abcdef", "/experiments/999999", "/models/no-such-model",
                f"/models/{data.model}/versions/99", f"/models/{data.model}/versions/abc"):
        r = http.get(url)
        assert r.status_code == 404, url
        assert r.headers["content-type"].startswith("text/html")
        assert 'id="not-found"' in r.text


def test_artifact_previews(ui: tuple[httpx.Client, Populated]) -> None:
    http, data = ui
    run_id = data.runs["trial-5"]
    preview = lambda path: http.get(f"/ui-api/runs/{run_id}/preview", params={"path": path})  # noqa: E731
    csv = preview("data/predictions.csv").text
    assert "<th>customer_id</th>" in csv and "<td>0.93</td>" in csv
    mlmodel = preview("model/MLmodel").text
    assert "<td>tenure</td>" in mlmodel and f"runs:/{run_id}/model" in mlmodel and "prefect-mlops serve" in mlmodel
    assert "<img" in preview("plots/roc.png").text
    png = http.get(f"/ui-api/runs/{run_id}/artifact", params={"path": "plots/roc.png"})
    assert png.headers["content-type"] == "image/png" and png.content[:4] == b"\x89PNG"
    assert "&#34;threshold&#34;" in preview("config.json").text or "&quot;threshold&quot;" in preview("config.json").text
    parquet = preview("data/features.parquet").text
    assert "<th>plan</th>" in parquet and "200 rows" in parquet and parquet.count("<tr>") == 51  # header + 50 rows
    big = preview("logs/big.log").text
    assert "too large to preview" in big and "xxxx" not in big and "download" in big
    assert preview("nope.txt").status_code == 404
    assert preview("../../etc/passwd").status_code == 400


def test_dense_history_is_downsampled_on_the_server_keeping_spikes(ui: tuple[httpx.Client, Populated]) -> None:
    http, data = ui
    run_id = data.runs["trial-5"]
    r = http.get("/ui-api/metric-history", params={"run": run_id, "key": "train_loss", "buckets": 500})
    assert r.status_code == 200, r.text
    series = r.json()["series"][0]
    assert series["total"] == DENSE_POINTS and series["sampled"]
    assert len(series["x"]) <= 1000
    assert max(series["y"]) == data.spike[1] and min(series["y"]) == data.dip[1]  # one-point spike and dip survive
    spike_step = data.spike[0]
    # Zoomed around the spike, the range comes back point for point.
    zoom = http.get("/ui-api/metric-history", params={"run": run_id, "key": "train_loss", "lo": spike_step - 100,
                                                      "hi": spike_step + 100}).json()["series"][0]
    assert not zoom["sampled"] and zoom["x"] == [float(s) for s in range(spike_step - 100, spike_step + 101)]
    # A zoomed range still too dense: sampled within the range, every point of it counted.
    wide = http.get("/ui-api/metric-history", params={"run": run_id, "key": "train_loss", "lo": 1000, "hi": 51000,
                                                      "buckets": 500}).json()["series"][0]
    assert wide["sampled"] and wide["total"] == 50_001 and len(wide["x"]) <= 1000
    assert wide["x"][0] == 1000 and wide["x"][-1] == 51000 and max(wide["y"]) == data.spike[1]
    rel = http.get("/ui-api/metric-history", params={"run": run_id, "key": "train_loss", "axis": "relative",
                                                     "lo": 0, "hi": 1000}).json()["series"][0]
    assert rel["x"][0] == 0 and rel["x"][-1] == 1000  # points every 10 ms from the run's start


def test_every_ui_endpoint_is_bounded(ui: tuple[httpx.Client, Populated]) -> None:
    http, data = ui
    run_id = data.runs["trial-5"]
    too_many = http.get("/ui-api/metric-history", params={"run": run_id, "key": "train_loss", "buckets": 100_000})
    assert too_many.status_code == 400
    runs = [("run", run_id)] * 51 + [("key", "auc")]
    assert http.get("/ui-api/metric-history", params=runs).status_code == 400
    assert http.get("/ui-api/metric-history", params={"run": run_id, "key": "auc", "axis": "sideways"}).status_code == 400
    many = "&".join(f"runs={i:032x}" for i in range(51))
    r = http.get(f"/compare?{many}")
    assert r.status_code == 400 and "Pick 2 to 50 runs" in r.text


def test_compare_and_registry_pages(ui: tuple[httpx.Client, Populated]) -> None:
    http, data = ui
    ids = [data.runs[f"trial-{i}"] for i in (0, 1, 2)]
    r = http.get("/compare", params=[("runs", i) for i in ids])
    assert r.status_code == 200, r.text
    assert 'class="cmp same"><th>seed' in r.text and 'class="cmp diff"><th>model' in r.text
    models = http.get("/models").text
    assert data.model in models and "@champion" in models
    assert data.model in http.get("/models", params={"q": "CHURN"}).text
    assert data.model not in http.get("/models", params={"q": "it's-not-there"}).text
    version = http.get(f"/models/{quote(data.model)}/versions/3").text
    assert "PASSED" in version and "<td>auc</td>" in version
    assert "alias @champion: v2 → v3" in version and "trial-5 passed the gate" in version
    assert f'href="/runs/{data.runs["trial-5"]}"' in version
    failed = http.get(f"/models/{quote(data.model)}/versions/1").text
    assert "FAILED" in failed and "No stage or alias changes yet" in failed


def test_run_page_shows_lineage(ui: tuple[httpx.Client, Populated]) -> None:
    http, data = ui
    page = http.get(f"/runs/{data.runs['trial-5']}").text
    lineage = page[page.index('id="lineage"'):page.index("<h2>Tags</h2>")]
    assert 'href="http://127.0.0.1:4200/runs/flow-run/00000005-' in lineage
    for shown in ("0000005abcdef", "sha256:0005feed", "success=true", "scikit-learn 1.7.2"):
        assert shown in lineage, shown
