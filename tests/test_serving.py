"""The ranking service: ranking with reasons, feedback, parity with batch scoring, bad input,
A/B arms, hot swaps, and the Ray Serve app over real HTTP.

One Ray instance and two trained runs (registered as versions 1 and 2) are shared by the module.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient

from recsys.pipeline.configure import load_config
from recsys.pipeline.train import train
from serving.http import build_app
from serving.service import RankingService, ServeSettings, arm_of
from tests.shops import colour_shop
from tests.sockets import free_port, listeners
from tests.waiting import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.ray]
ROOT = Path(__file__).resolve().parent.parent
REDS, BLUES = [f"red{n}" for n in range(12)], [f"blue{n}" for n in range(12)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=False, configure_logging=False)
    tmp = tmp_path_factory.mktemp("served")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    shop = colour_shop(tmp, users=30, days=10, hostile=True)
    overrides = ["ranker.task=impressions", "ranker.min_data_in_leaf=5", f"mlflow.tracking_uri='{uri}'"]
    cfg = load_config(ROOT / "experiments" / "behavioural.toml", overrides)
    train(cfg, shop, tmp / "run1", track=True)
    train(load_config(ROOT / "experiments" / "behavioural.toml", [*overrides, "ranker.num_leaves=15"]), shop, tmp / "run2", track=True)
    yield {"run1": tmp / "run1", "run2": tmp / "run2", "uri": uri, "tmp": tmp}
    ray.shutdown()


def client_for(service: RankingService) -> TestClient:
    return TestClient(build_app(lambda: service), raise_server_exceptions=False)


def rank(client: TestClient, user: str, items: list[str], **extra: object) -> dict:
    res = client.post("/v1/rank", json={"user_id": user, "item_ids": items, **extra})
    assert res.status_code == 200, res.text
    return res.json()


def test_rank_puts_the_users_colour_first_with_blurbs_and_reasons(runs: dict, tmp_path: Path) -> None:
    client = client_for(RankingService(ServeSettings(model=str(runs["run1"]), state_dir=str(tmp_path))))
    body = rank(client, "user0", BLUES + REDS + ["never-seen-item"], top_k=8)  # user0 clicks red
    top = [i["item_id"] for i in body["items"]]
    assert len(top) == 8 and sum(i.startswith("red") for i in top) >= 7
    assert body["known_user"] is True and body["unknown_items"] == 1 and body["arm"] == "champion"
    assert [i["rank"] for i in body["items"]] == list(range(1, 9))
    assert all(a["score"] >= b["score"] for a, b in zip(body["items"], body["items"][1:]))
    first = body["items"][0]
    assert first["blurb"] and first["blurb_source"] == "extractive" and first["title"]
    assert first["top_features"] and {"feature", "value", "contribution"} <= set(first["top_features"][0])
    reasons = [i["reason"] for i in body["items"] if i["reason"]]
    assert reasons and any("you often pick reds" in r.lower() for r in reasons), reasons
    # cold start: an unknown user and unknown items are ranked, not refused
    cold = rank(client, "nobody-knows-me", ["no-such-item", "red1", "blue1"])
    assert cold["known_user"] is False and len(cold["items"]) == 3
    assert all(np.isfinite(i["score"]) for i in cold["items"])
    # and reasons say only what is true: nothing personal of a user the log does not know, nothing
    # at all of an item with no category, no events and no text (issue 21: "You often choose this
    # category; often clicked this week" of an unknown id)
    assert all("you" not in (i["reason"] or "").lower() for i in cold["items"]), cold["items"]
    for user, items in (("nobody-knows-me", ["no-such-item", "red1"]), ("user0", ["never-seen-item", "red1", "red2"])):
        unknown = [i for i in rank(client, user, items)["items"] if i["item_id"] in ("no-such-item", "never-seen-item")]
        assert unknown and unknown[0]["reason"] is None, unknown


def test_online_scores_equal_batch_scores(runs: dict, tmp_path: Path) -> None:
    """One scoring path: /v1/rank (a log cut to the user and the candidates, running totals) and
    `recsys score` (Ray Data over the whole log) give identical scores for identical inputs."""
    from serving.batch import score_file

    service = RankingService(ServeSettings(model=str(runs["run1"]), state_dir=str(tmp_path / "state")))
    client = client_for(service)
    items = REDS + BLUES + ["no-such-item"]
    online = {}
    for user in ("user0", "user1", "user7", "stranger"):
        for item in rank(client, user, items, explain=False)["items"]:
            online[(user, item["item_id"])] = item["score"]
    pairs = pl.DataFrame({"user_id": [u for u, _ in online], "item_id": [i for _, i in online]})
    pairs.write_parquet(tmp_path / "cand.parquet")
    batch = pl.read_parquet(score_file(runs["run1"], tmp_path / "cand.parquet", tmp_path / "scores.parquet"))
    assert batch["score"].to_list() == [online[(u, i)] for u, i in zip(batch["user_id"], batch["item_id"])]
    # requests ranked together (what @serve.batch does) score exactly as when ranked alone
    from serving.api_models import RankRequest

    asks = [RankRequest(user_id=u, item_ids=its) for u, its in
            [("user0", REDS), ("user1", items), ("user0", BLUES[:5] + ["no-such-item"]), ("stranger", items)]]
    together = service.rank_many(asks)
    for ask, result in zip(asks, together):
        alone = service.rank(ask)
        assert [(i.item_id, i.score, i.reason) for i in result.items] == [(i.item_id, i.score, i.reason) for i in alone.items]
        assert all(online.get((ask.user_id, i.item_id), i.score) == i.score for i in result.items)


def test_a_request_dated_inside_the_log_is_ranked_point_in_time(runs: dict, tmp_path: Path) -> None:
    """`context.ts` before the newest event: the counters (which hold every event) cannot answer;
    the point-in-time groups over the log do, and score as the Scorer does at that moment."""
    from datetime import timedelta

    from serving.scorer import Scorer

    service = RankingService(ServeSettings(model=str(runs["run1"]), state_dir=str(tmp_path / "state")))
    scorer = Scorer(runs["run1"])
    items = REDS + BLUES + ["no-such-item"]
    for ts in (scorer.as_of - timedelta(days=3), scorer.as_of + timedelta(days=2)):  # inside the log, after it
        body = rank(client_for(service), "user1", items, explain=False, context={"ts": ts.isoformat()})
        got = {i["item_id"]: i["score"] for i in body["items"]}
        expected = scorer.score(pl.DataFrame({"user_id": ["user1"] * len(items), "item_id": items}), ts)
        assert [got[i] for i in items] == expected.tolist()
    early = rank(client_for(service), "user1", items, explain=False, context={"ts": (scorer.as_of - timedelta(days=3)).isoformat()})
    assert [i["score"] for i in early["items"]] != [i["score"] for i in body["items"]]  # the moment matters


def test_a_bounded_live_log_ranks_as_one_that_keeps_every_row(runs: dict, tmp_path: Path) -> None:
    """`live_rows`: the frame lets feedback rows go (issue 20: memory flat over a long stream).
    Ranking now, a restarted service and a model loaded afterwards (its counters read back from
    disk, snapshot and file) score exactly as a service that keeps every row; an earlier moment is
    ranked up to the first row let go and refused after it, naming context.ts."""
    from datetime import timedelta

    from serving.online import SNAPSHOT_FILE, snapshot_meta
    from serving.ranking import RankingModel
    from serving.refs import resolve

    settings = ServeSettings(model=str(runs["run1"]), state_dir=str(tmp_path / "bounded"), live_rows=30, compact_bytes=4000)
    bounded = RankingService(settings)
    whole = RankingService(ServeSettings(model=str(runs["run1"]), state_dir=str(tmp_path / "whole"), live_rows=0))
    start, items = whole.state.now(), REDS + BLUES
    for call in range(9):
        events = [{"user_id": f"user{(call * 7 + k) % 12}", "item_id": items[(call * 5 + k) % len(items)], "clicked": int(k % 3 == 0),
                   "ts": (start + timedelta(minutes=10 * call + k)).isoformat()} for k in range(12)]
        for service in (bounded, whole):
            assert client_for(service).post("/v1/feedback", json={"events": events}).status_code == 200
    snap, full = bounded.state.snapshot(), whole.state.snapshot()
    assert snap.complete_until == start and snap.log.height - snap.base_rows <= 30 < full.log.height - full.base_rows
    assert snap.taken == full.taken == full.log.height and bounded.state.compactions >= 2
    assert 0 < snapshot_meta(tmp_path / "bounded" / SNAPSHOT_FILE)[0] < snap.feedback_rows  # rows on disk in both parts
    assert bounded.arms["champion"]._live.rows == snap.taken  # caught up before the rows went: no reading back

    def scores(service: RankingService, **extra: object) -> list[tuple[str, float]]:
        return [(i["item_id"], i["score"]) for user in ("user0", "user3", "stranger")
                for i in rank(client_for(service), user, items + ["no-such-item"], explain=False, **extra)["items"]]

    expected = scores(whole)
    assert scores(bounded) == expected
    at_start = {"context": {"ts": start.isoformat()}}  # nothing before it was let go
    assert scores(bounded, **at_start) == scores(whole, **at_start) != expected
    later = (start + timedelta(minutes=15)).isoformat()
    res = client_for(bounded).post("/v1/rank", json={"user_id": "user0", "item_ids": REDS, "context": {"ts": later}})
    assert res.status_code == 422 and res.json()["detail"][0]["loc"] == ["body", "context", "ts"], res.text
    assert "leave context.ts out" in res.json()["detail"][0]["msg"]
    assert rank(client_for(whole), "user0", REDS, context={"ts": later})
    assert scores(RankingService(settings)) == expected  # restarted: the frame lets the replayed rows go again
    fresh = RankingModel(resolve(str(runs["run1"])), "champion")
    rebuilt, kept = fresh.catch_up(bounded.state.refresh()), whole.arms["champion"].catch_up(whole.state.refresh())
    assert (rebuilt.rows, rebuilt.size(), rebuilt.last_ts) == (kept.rows, kept.size(), kept.last_ts)  # what a hot swap does
    bounded.arms["champion"] = fresh
    assert scores(bounded) == expected


def test_feedback_is_durable_and_moves_the_next_ranking(runs: dict, tmp_path: Path) -> None:
    settings = ServeSettings(model=str(runs["run1"]), state_dir=str(tmp_path))
    client = client_for(RankingService(settings))
    items = REDS + BLUES
    before = rank(client, "newcomer", items)
    assert before["known_user"] is False
    blue_rank_before = np.mean([i["rank"] for i in before["items"] if i["item_id"].startswith("blue")])
    events = [{"user_id": "newcomer", "item_id": i, "clicked": int(i.startswith("blue")), "request_id": before["request_id"]}
              for i in ["blue1", "blue2", "blue3", "red1", "red2", "red3"] for _ in range(2)]
    res = client.post("/v1/feedback", json={"events": events})
    assert res.status_code == 200 and res.json()["accepted"] == 12
    after = rank(client, "newcomer", items)
    assert after["known_user"] is True
    blue_rank_after = np.mean([i["rank"] for i in after["items"] if i["item_id"].startswith("blue")])
    assert blue_rank_after < blue_rank_before - 3  # blue items moved up after blue clicks
    logged = [json.loads(line) for line in (tmp_path / "feedback.jsonl").read_text().splitlines()]
    assert len(logged) == 12 and {r["arm"] for r in logged} == {"champion"}
    # a restarted service replays the log: same state, same scores
    restarted = rank(client_for(RankingService(settings)), "newcomer", items)
    assert restarted["known_user"] is True
    assert [(i["item_id"], i["score"]) for i in restarted["items"]] == [(i["item_id"], i["score"]) for i in after["items"]]


BAD_REQUESTS = [
    ("/v1/rank", {"item_ids": ["red1"]}, "user_id"),
    ("/v1/rank", {"user_id": "u", "item_ids": []}, "item_ids"),
    ("/v1/rank", {"user_id": "u", "item_ids": [f"x{n}" for n in range(21)]}, "item_ids"),
    ("/v1/rank", {"user_id": "u", "item_ids": ["red1", "red2", "red1"]}, "item_ids.2"),
    ("/v1/rank", {"user_id": "u", "item_ids": ["red1"], "top_k": 0}, "top_k"),
    ("/v1/rank", {"user_id": "u", "item_ids": "red1"}, "item_ids"),
    ("/v1/rank", {"user_id": "u", "item_ids": ["red1"], "itemz": 1}, "itemz"),
    ("/v1/rank", {"user_id": "u" * 300, "item_ids": ["red1"]}, "user_id"),
    ("/v1/rank", {"user_id": "u", "item_ids": ["red1"], "context": {"ts": "yesterday"}}, "context.ts"),
    ("/v1/rank", {"user_id": "u", "item_ids": [""]}, "item_ids.0"),
    ("/v1/feedback", {"events": [{"user_id": "u", "item_id": "red1", "clicked": 2}]}, "events.0.clicked"),
    ("/v1/feedback", {"events": [{"user_id": "u", "clicked": 1}]}, "events.0.item_id"),
    ("/v1/feedback", {"events": []}, "events"),
    ("/v1/feedback", {"events": [{"user_id": "u", "item_id": "r", "clicked": 1, "position": -3}]}, "events.0.position"),
]


@pytest.mark.parametrize(("path", "body", "field"), BAD_REQUESTS, ids=[f"{p}:{f}" for p, _, f in BAD_REQUESTS])
def test_bad_requests_get_a_4xx_naming_the_field(runs: dict, tmp_path: Path, path: str, body: dict, field: str) -> None:
    client = client_for(RankingService(ServeSettings(model=str(runs["run1"]), state_dir=str(tmp_path), max_candidates=20)))
    res = client.post(path, json=body)
    assert 400 <= res.status_code < 500, res.text
    assert field in res.json()["message"], res.json()
    assert not (tmp_path / "feedback.jsonl").read_text()  # nothing half-written


def test_malformed_json_and_wrong_content_are_4xx(runs: dict, tmp_path: Path) -> None:
    client = client_for(RankingService(ServeSettings(model=str(runs["run1"]), state_dir=str(tmp_path))))
    for content in (b"{not json", b"\xff\xfe\x00", b"[]", b"null"):
        res = client.post("/v1/rank", content=content, headers={"Content-Type": "application/json"})
        assert res.status_code in (400, 422) and res.json()["message"].startswith("body"), (content, res.text)
    assert client.get("/v1/nothing-here").status_code == 404
    assert client.get("/v1/rank").status_code == 405


def test_ab_arms_are_sticky_recorded_and_reported(runs: dict, tmp_path: Path) -> None:
    from serving.report import arm_ctr, served_training_rows

    settings = ServeSettings(model=str(runs["run1"]), challenger=str(runs["run2"]), challenger_share=0.3, state_dir=str(tmp_path))
    users = [f"shopper{n}" for n in range(2000)]
    share = np.mean([arm_of(u, settings) == "challenger" for u in users])
    assert 0.27 < share < 0.33
    service = RankingService(settings)
    client = client_for(service)
    clicks = {"champion": 0, "challenger": 0}
    shown = {"champion": 0, "challenger": 0}
    for user in ["user0", "user1", "user2", "user3", "user4", "user5", "user6", "user8"]:
        body = rank(client, user, REDS + BLUES, top_k=4)
        assert body["arm"] == arm_of(user, settings) == rank(client, user, REDS)["arm"]  # sticky
        events = [{"user_id": user, "item_id": i["item_id"], "clicked": int(i["rank"] == 1), "request_id": body["request_id"],
                   "position": i["rank"]} for i in body["items"]]
        assert client.post("/v1/feedback", json={"events": events}).status_code == 200
        clicks[body["arm"]] += 1
        shown[body["arm"]] += 4
    service.served.flush()  # the served-features log is written off the request path
    table, _ = arm_ctr(tmp_path)
    for row in table.iter_rows(named=True):
        assert row["impressions"] == shown[row["arm"]] and row["clicks"] == clicks[row["arm"]]
        assert row["ci_low"] <= row["ctr"] <= row["ci_high"]
    rows = served_training_rows(tmp_path)
    assert rows.height == 8 * 24 + 8 * 12  # every candidate of every call, features as served
    labelled = rows.filter(pl.col("clicked").is_not_null())
    assert labelled.height == 32 and labelled["shown"].all() and labelled["clicked"].sum() == 8
    assert labelled["feature.user_category_clicks"].is_not_null().all()


def test_champion_alias_move_swaps_the_model_without_failing_requests(runs: dict, tmp_path: Path) -> None:
    from recsys.pipeline.tracking import promote

    promote("recsys-ranker", "1", "champion", runs["uri"])
    service = RankingService(ServeSettings(model="models:/recsys-ranker@champion", state_dir=str(tmp_path),
                                           tracking_uri=runs["uri"], reload_seconds=0))
    client = client_for(service)
    versions: list[str] = []
    failures: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            res = client.post("/v1/rank", json={"user_id": "user3", "item_ids": BLUES})
            (versions.append(res.json()["model_version"]) if res.status_code == 200 else failures.append(res.text))

    workers = [threading.Thread(target=traffic) for _ in range(3)]
    for w in workers:
        w.start()
    try:
        promote("recsys-ranker", "2", "champion", runs["uri"])
        assert service.check_aliases() == ["champion"]
        n = len(versions)
        wait_until(lambda: len(versions) >= n + 6 or failures, 60, "6 answers after the promotion", poll=0.01)
    finally:
        stop.set()
        for w in workers:
            w.join()
    assert not failures
    assert versions[0] == "1" and versions[-1] == "2"
    assert client.get("/v1/model").json()[0]["version"] == "2"


@pytest.fixture(scope="module")
def server(runs: dict):
    from serving.deploy import ServerOptions, start, stop

    url = start(ServeSettings(model=str(runs["run1"]), state_dir=str(runs["tmp"] / "serve-state"), reload_seconds=0),
                ServerOptions(port=free_port(), replicas=2, replica_cpus=0, access_log=False, batch=True))
    yield url
    stop()


def test_ray_serve_app_over_http_two_replicas_share_feedback(server: str) -> None:
    from urllib.parse import urlsplit

    import httpx

    # the default ingress: HAProxy itself listens on the service's port (no Python proxy in between)
    port = urlsplit(server).port or 80
    assert set(listeners(port).values()) == {"haproxy"}, listeners(port)
    with httpx.Client(base_url=server, timeout=30) as http:
        assert http.get("/healthz").json()["status"] == "ok"
        schema = http.get("/openapi.json").json()
        assert {"/v1/rank", "/v1/feedback", "/v1/model", "/healthz"} <= set(schema["paths"])
        assert http.get("/v1/model").json()[0]["features"]
        for page in ("/docs", "/redoc"):  # through Serve's proxy too, from the service itself (no CDN)
            html = http.get(page)
            assert html.status_code == 200 and "static-offline-docs/" in html.text and "cdn." not in html.text
        assert http.get("/static-offline-docs/redoc.standalone.js").status_code == 200
        res = http.post("/v1/feedback", json={"events": [{"user_id": "walk-in", "item_id": "blue4", "clicked": 1}]})
        assert res.status_code == 200
        # whichever replica answers, it has seen the feedback written through the other
        seen = [http.post("/v1/rank", json={"user_id": "walk-in", "item_ids": ["red1", "blue4"]}).json()["known_user"]
                for _ in range(12)]
        assert all(seen)
        bad = http.post("/v1/rank", json={"user_id": "walk-in", "item_ids": ["a", "a"]})
        assert bad.status_code == 422 and "item_ids.1" in bad.json()["message"]
        # and HAProxy handed the calls to the replicas themselves, none to its backup (a Python
        # proxy). Its counters start afresh when it reloads (a new process): ask again right before.
        for _ in range(3):
            assert http.get("/healthz").status_code == 200
        sessions = haproxy_sessions(port)
        assert sessions["replicas"] >= 3 and sessions["fallback"] == 0, sessions


def haproxy_sessions(service_port: int) -> dict[str, int]:
    """Sessions HAProxy has sent to the app's replicas and to its fallback proxy so far, from its
    stats page (on another port its process listens on)."""
    import httpx
    import psutil

    ports = set()
    for pid in listeners(service_port):
        try:
            ports |= {c.laddr.port for c in psutil.Process(pid).net_connections("tcp") if c.status == psutil.CONN_LISTEN}
        except psutil.NoSuchProcess:
            continue
    for port in ports - {service_port}:
        try:
            page = httpx.get(f"http://127.0.0.1:{port}/stats;csv", timeout=5).text
        except httpx.HTTPError:
            continue
        if page.startswith("# pxname"):
            rows = [line.split(",") for line in page.splitlines()[1:] if line]
            servers = [(row[1], int(row[7] or 0)) for row in rows if row[0] == "http-recsys"]  # svname, stot
            return {"replicas": sum(n for name, n in servers if name.startswith("SERVE_REPLICA")),
                    "fallback": sum(n for name, n in servers if "fallback" in name)}
    raise AssertionError(f"no HAProxy stats page on {sorted(ports)}")


def test_bench_floor_is_serve_alone_answering_a_fixed_response_beside_the_service(server: str) -> None:
    from urllib.parse import urlsplit

    from serving.bench import http_levels, start_floor, stop_floor
    from serving.deploy import ServerOptions

    body = {"user_id": "walk-in", "item_ids": ["red1", "blue4"]}
    fixed = b'{"items": []}'
    floor = start_floor(fixed, ServerOptions(port=urlsplit(server).port or 80, replicas=1, replica_cpus=0, access_log=False))
    try:
        import httpx

        with httpx.Client(timeout=30) as http:
            answer = http.post(f"{floor}/v1/rank", json=body)
            assert answer.status_code == 200 and answer.content == fixed
            assert http.post(f"{server}/v1/rank", json=body).json()["items"]  # the service still ranks beside it
        [level] = http_levels(floor, [body] * 20, [2])
        assert level.requests == 20 and level.errors == 0 and level.p50_ms > 0
    finally:
        stop_floor()


CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture
def browser():
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium and chromium-driver (.ci/run does)")
        pytest.skip("needs Debian's chromium and chromium-driver: apt-get install chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def test_demo_page_ranks_explains_and_reacts_to_a_click(server: str, browser, runs: dict) -> None:
    """Headless Chromium: pick a shopper, see 12 ranked products with blurbs and reasons, click
    one (sent to /v1/feedback), see the ranking change. A catalog title and text carrying HTML and
    script are shown as text and never run."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    from tests.shops import HOSTILE_TITLE

    wait = WebDriverWait(browser, 60)
    browser.get(server + "/")

    def cards() -> list:
        return browser.find_elements(By.CSS_SELECTOR, "#grid .card")

    def ranking() -> list[tuple[str, str]]:
        return [(c.get_attribute("data-item-id"), c.find_element(By.CSS_SELECTOR, ".score").text) for c in cards()]

    wait.until(lambda d: len(cards()) == 12)
    picker = Select(browser.find_element(By.ID, "user"))
    red_user = next(o.get_attribute("value") for o in picker.options if int(o.get_attribute("value")[4:]) % 2 == 0)
    if picker.first_selected_option.get_attribute("value") != red_user:
        status = browser.find_element(By.ID, "status").text
        picker.select_by_value(red_user)
        wait.until(lambda d: browser.find_element(By.ID, "status").text != status and len(cards()) == 12)
    shown = ranking()
    assert sum(item.startswith("red") for item, _ in shown) >= 10  # a red shopper sees red mugs
    assert all(c.find_element(By.CSS_SELECTOR, ".blurb").text for c in cards())
    assert any(c.find_elements(By.CSS_SELECTOR, ".reason") for c in cards())
    hostile = [c for c in cards() if c.get_attribute("data-item-id") == "red0"]
    assert hostile, "the hostile item should be on a red shopper's page"
    assert hostile[0].find_element(By.CSS_SELECTOR, ".title").text == HOSTILE_TITLE
    assert browser.execute_script("return window.__pwned") is None
    assert not browser.find_elements(By.CSS_SELECTOR, "#grid img, #grid script")
    browser.save_screenshot(str(runs["tmp"] / "demo-page-before.png"))

    status = browser.find_element(By.ID, "status").text
    cards()[-1].click()  # the lowest-ranked item: a click, and 11 impressions, go to /v1/feedback
    wait.until(lambda d: browser.find_element(By.ID, "status").text != status and len(cards()) == 12)
    assert ranking() != shown
    assert not browser.find_element(By.ID, "error").is_displayed()
    browser.save_screenshot(str(runs["tmp"] / "demo-page-after.png"))
    feedback = [json.loads(line) for line in (runs["tmp"] / "serve-state" / "feedback.jsonl").read_text().splitlines()]
    assert sum(e["user_id"] == red_user and e["clicked"] == 1 for e in feedback) == 1


def test_api_key_and_body_limit(runs: dict, tmp_path: Path) -> None:
    settings = ServeSettings(model=str(runs["run1"]), state_dir=str(tmp_path), api_key="s3cret-key", max_body_bytes=2000)
    assert "s3cret" not in repr(settings)
    client = client_for(RankingService(settings))
    body = {"user_id": "user0", "item_ids": ["red1", "blue1"]}
    event = {"events": [{"user_id": "user0", "item_id": "red1", "clicked": 1}]}
    for path, payload in (("/v1/rank", body), ("/v1/feedback", event)):
        for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer nope"}):
            res = client.post(path, json=payload, headers=headers)
            assert res.status_code == 401 and "API key" in res.json()["detail"][0]["msg"]
    assert not (tmp_path / "feedback.jsonl").read_text()  # refused feedback is not written
    assert client.post("/v1/rank", json=body, headers={"X-API-Key": "s3cret-key"}).status_code == 200
    assert client.post("/v1/feedback", json=event, headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
    assert client.get("/healthz").status_code == 200 and client.get("/").status_code == 200  # not under /v1
    huge = {"user_id": "user0", "item_ids": [f"item-{n:05d}" for n in range(400)]}
    res = client.post("/v1/rank", json=huge, headers={"X-API-Key": "s3cret-key"})
    assert res.status_code == 413 and res.json()["message"].startswith("body")

    def chunks():  # no Content-Length: the limit still holds while streaming
        data = json.dumps(huge).encode()
        for start in range(0, len(data), 500):
            yield data[start:start + 500]

    res = client.post("/v1/rank", content=chunks(), headers={"X-API-Key": "s3cret-key", "Content-Type": "application/json"})
    assert res.status_code == 413


def test_schemathesis_finds_no_server_error_in_a_thousand_cases(server: str) -> None:
    """Fuzz every operation of the running service's OpenAPI schema, valid and invalid inputs
    (schemathesis' positive and negative modes): every answer is < 500."""
    import requests
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(f"{server}/openapi.json")
    plan = [("/v1/rank", "POST", GenerationMode.POSITIVE, 350), ("/v1/rank", "POST", GenerationMode.NEGATIVE, 350),
            ("/v1/feedback", "POST", GenerationMode.POSITIVE, 200), ("/v1/feedback", "POST", GenerationMode.NEGATIVE, 200),
            ("/v1/model", "GET", GenerationMode.POSITIVE, 20), ("/healthz", "GET", GenerationMode.POSITIVE, 20),
            ("/v1/demo/users", "GET", GenerationMode.NEGATIVE, 40), ("/v1/demo/candidates", "GET", GenerationMode.NEGATIVE, 40)]
    statuses: list[int] = []
    errors: list[str] = []
    session = requests.Session()
    for path, method, mode, examples in plan:
        @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=schema[path][method].as_strategy(generation_mode=mode))
        def call(case) -> None:  # called at once below: the loop variables are this round's
            res = case.call(base_url=server, session=session, timeout=60)
            statuses.append(res.status_code)
            if res.status_code >= 500:
                where = f"{method} {path} {mode.value}"  # noqa: B023
                errors.append(f"{where}: {res.status_code} {res.text[:200]} for {case.body!r:.300}")

        call()
    assert not errors, errors[:5]
    assert len(statuses) >= 1000, len(statuses)  # some operations have fewer distinct cases than asked
    assert any(s == 200 for s in statuses) and any(400 <= s < 500 for s in statuses)


def test_feedback_acknowledged_before_a_kill_is_there_after_restart(runs: dict, tmp_path: Path) -> None:
    """kill -9 the service while clients post feedback: every event answered 2xx before the kill
    is in the log a restarted service reads (the log is fsynced before the answer)."""
    import signal
    import subprocess
    import sys

    import httpx

    port = free_port()
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "serve_plain.py"), str(runs["run1"]), str(tmp_path), str(port)])
    url = f"http://127.0.0.1:{port}"
    acked: list[str] = []
    try:
        def healthy() -> bool:
            assert proc.poll() is None, f"the service exited with {proc.returncode}"
            try:
                return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, 60, "the service's /healthz", poll=0.2)

        def post(worker: int) -> None:
            with httpx.Client(base_url=url, timeout=5) as client:
                for n in range(10_000):
                    mark = f"w{worker}-{n}"  # the event's request_id; the item is a catalog one (unknown ones are kept aside)
                    try:
                        res = client.post("/v1/feedback", json={"events": [
                            {"user_id": f"u-crash{worker}", "item_id": "red1", "clicked": 1, "request_id": mark}]})
                    except httpx.HTTPError:
                        return
                    if res.status_code == 200:
                        acked.append(mark)

        threads = [threading.Thread(target=post, args=(w,)) for w in range(3)]
        for t in threads:
            t.start()
        wait_until(lambda: len(acked) >= 40, 60, "40 acknowledged feedback posts", poll=0.01)
        proc.send_signal(signal.SIGKILL)
        for t in threads:
            t.join()
    finally:
        proc.kill()
        proc.wait()
    logged = {
        r["request_id"] for r in (json.loads(line) for line in (tmp_path / "feedback.jsonl").read_text().splitlines() if line.strip())
    }
    assert set(acked) <= logged, sorted(set(acked) - logged)[:5]
    restarted = RankingService(ServeSettings(model=str(runs["run1"]), state_dir=str(tmp_path)))
    seen = set(restarted.state.snapshot().log.filter(pl.col("user_id").str.starts_with("u-crash"))["request_id"].to_list())
    assert set(acked) <= seen and len(acked) >= 40


def test_batch_scoring_killed_halfway_reruns_only_the_missing_shards(runs: dict, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    users = [f"user{u}" for u in range(30)] + [f"cold{u}" for u in range(10)]
    items = REDS + BLUES + [f"new{n}" for n in range(26)]
    pl.DataFrame({"user_id": users}).join(pl.DataFrame({"item_id": items}), how="cross").write_parquet(tmp_path / "cand.parquet")
    command = [sys.executable, "-m", "recsys.cli", "score", "--run", str(runs["run1"]), "--candidates", str(tmp_path / "cand.parquet"),
               "--shard-rows", "50"]  # 40 shards of one user (50 candidates) each, one scoring call each: time to kill
    parts = tmp_path / "killed.parquet.parts"
    proc = subprocess.Popen([*command, "--out", str(tmp_path / "killed.parquet")], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: len(list(parts.glob("part-*.parquet"))) >= 3 or proc.poll() is not None, 240, "3 scored shards")
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray it started
    proc.wait()
    done_before = len(list(parts.glob("part-*.parquet")))
    assert 3 <= done_before < 40 and not (tmp_path / "killed.parquet").exists()
    resumed = subprocess.run([*command, "--out", str(tmp_path / "killed.parquet")], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"40 shard(s); {done_before} already done" in " ".join((resumed.stderr + resumed.stdout).split())
    clean = subprocess.run([*command, "--out", str(tmp_path / "clean.parquet")], capture_output=True, text=True, timeout=300)
    assert clean.returncode == 0, clean.stderr[-2000:]
    assert pl.read_parquet(tmp_path / "killed.parquet").equals(pl.read_parquet(tmp_path / "clean.parquet"))


def test_unknown_items_rate_limits_and_a_full_disk_through_the_real_service(runs: dict, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 20 on a trained model: feedback for a made-up item is kept aside and moves nothing;
    a user over the feedback limit gets 429 + Retry-After; a full disk 503, then recovery."""
    import errno

    from serving import eventlog

    settings = ServeSettings(model=str(runs["run1"]), state_dir=str(tmp_path), feedback_per_user=2.0, burst_seconds=5.0)
    service = RankingService(settings)
    client = client_for(service)
    before = rank(client, "user3", ["ghost-item", "red1"], explain=False)
    ghost = [{"user_id": f"fan{n}", "item_id": "ghost-item", "clicked": 1} for n in range(8)]
    res = client.post("/v1/feedback", json={"events": ghost})
    assert res.status_code == 200 and (res.json()["accepted"], res.json()["unknown_items"]) == (0, 8)
    assert (tmp_path / "feedback-unknown-items.jsonl").read_text().count("\n") == 8
    after = rank(client, "user3", ["ghost-item", "red1"], explain=False)
    assert [i["score"] for i in after["items"]] == [i["score"] for i in before["items"]]  # the counters did not move
    one = {"events": [{"user_id": "user3", "item_id": "red1", "clicked": 1}] * 5}
    assert client.post("/v1/feedback", json=one).status_code == 200  # the user's 10-event burst: 5 used
    assert client.post("/v1/feedback", json=one).status_code == 200
    limited = client.post("/v1/feedback", json=one)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) >= 1

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(eventlog.os, "write", full)
    res = client.post("/v1/feedback", json={"events": [{"user_id": "user4", "item_id": "red1", "clicked": 1}]})
    assert res.status_code == 503 and res.headers["Retry-After"] == str(settings.storage_retry_seconds)
    assert rank(client, "user4", ["red1", "blue1"])["items"]  # ranking goes on; its served log is best effort
    monkeypatch.undo()
    res = client.post("/v1/feedback", json={"events": [{"user_id": "user4", "item_id": "red1", "clicked": 1}]})
    assert res.status_code == 200 and res.json()["accepted"] == 1
