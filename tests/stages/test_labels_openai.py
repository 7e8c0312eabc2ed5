"""The live GPT-4o source against a real HTTP server: a small OpenAI-compatible server on 127.0.0.1.

The real ``openai`` client talks to it through ``OPENAI_BASE_URL``. The server answers
/v1/chat/completions according to a script of actions (answer, 429, 500, hang, 401, malformed body)
and logs every request, so the tests can count what was asked.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from pathlib import Path

import pytest

from support.openai_server import SECRET_KEY, FakeDataset, FakeOpenAIServer, image_mime, settings
from pnp_ovss.errors import LabelError
from pnp_ovss.labels import openai_live
from pnp_ovss.labels.openai_live import categories_text, query_answers
from pnp_ovss.stages.job import ShardWork
from pnp_ovss.stages.labels import read_label_entries, run_labels_job
from pnp_ovss.vocab import load_vocabulary  # noqa: F401

# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def server(monkeypatch):
    srv = FakeOpenAIServer().start()
    monkeypatch.setenv("OPENAI_API_KEY", SECRET_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
    # the openai client's backoff between retries: keep the suite fast
    monkeypatch.setattr("openai._base_client.INITIAL_RETRY_DELAY", 0.01, raising=False)
    yield srv
    srv.stop()


def payload_of(dataset, image_id):
    return base64.b64encode(dataset.image_path(image_id).read_bytes()).decode()


def params_for(dataset, mode="faithful", **kw):
    p = {
        "stage": "labels",
        "dataset": dataset.name,
        "mode": mode,
        "source": "gpt4o",
        "min_probability": 70,
        "no_fallback_class": mode == "clean",
        "model": "gpt-4o",
        "temperature": 0.0,
        "prompt": None,
        "json_schema": False,
    }
    p.update(kw)
    return p


OPTIONS = {"timeout": 2.0, "max_retries": 2}


def run_labels(ds, params, stage_dir, answers_dir, log=None, ids=None) -> dict:
    """The labels job of ``ids`` (default: all) into ``stage_dir`` (keys = image ids); its entries by id."""
    keys = {i: i for i in (ds.image_ids() if ids is None else ids)}
    run_labels_job(ds, list(keys), params, ShardWork(keys, stage_dir, stage_dir / "jobs" / "job.json", log=log),
                   options=OPTIONS, answers_dir=answers_dir)
    return read_label_entries(stage_dir, keys, list(keys))


# --- tests ---------------------------------------------------------------------------------------


def test_normal_answers_and_messy_formats_end_to_end(server, tmp_path):
    ds = FakeDataset("coco_stuff", tmp_path / "img", ["a", "b", "c", "d"])
    messy = {
        "a": "[1:'person', 3:'car']\n[90%, 80%]",
        "b": "[119: flower, 86: vase], [95% probability of flower, 90% probability of vase]",
        "c": "[21: cow, 124: grass, 169: tree], [95% 60%, 50%]",
        "d": "[59: pizza], [probability of class1 in percentage: 95]",
    }
    for image_id, text in messy.items():
        server.answers[payload_of(ds, image_id)] = text
    images = run_labels(ds, params_for(ds), tmp_path / "labels", tmp_path / "work", logging.getLogger("t"))
    selected = {k: v["selected"] for k, v in images.items()}
    assert selected == {"a": [1, 3], "b": [119, 86], "c": [21], "d": [59]}
    assert images["a"]["raw"] == messy["a"]
    assert images["c"]["parsed"] == [[21, 95], [124, 50]]
    assert images["a"]["names"] == ["person", "car"]
    assert len(server.requests) == 4
    req = server.requests[0]
    assert req["path"] == "/v1/chat/completions"
    assert req["body"]["model"] == "gpt-4o" and req["body"]["temperature"] == 0.0
    assert "response_format" not in req["body"]


def test_request_content_prompt_categories_and_real_mime_type(server, tmp_path):
    ds = FakeDataset("voc", tmp_path / "img", ["x"], fmt="JPEG")
    query_answers(ds, ["x"], settings(), tmp_path / "cache.json")
    body = server.requests[0]["body"]
    text = body["messages"][0]["content"][0]["text"]
    assert "{1: 'aeroplane', 2: 'bicycle'" in text and "20: 'tvmonitor'}" in text
    assert "[id1: classname1, id2: classname2, ...]" in text
    assert image_mime(body) == "image/jpeg"
    ds_png = FakeDataset("voc", tmp_path / "png", ["y"], fmt="PNG")
    query_answers(ds_png, ["y"], settings(), tmp_path / "cache2.json")
    assert image_mime(server.requests[1]["body"]) == "image/png"


def test_categories_interpolated_as_the_authors_did():
    coco = categories_text("coco_stuff", load_vocabulary("coco_stuff"))
    assert coco.startswith("[[1, 'person'], [2, 'bicycle']") and coco.endswith("[182, 'wood']]")
    assert "183" not in coco and "'traffic light'" in coco and "'building-other'" in coco
    ade = categories_text("ade20k", load_vocabulary("ade20k"))
    assert ade.startswith("{1: 'wall', 2: 'building;edifice'") and "150: 'flag'}" in ade
    assert categories_text("coco_object", load_vocabulary("coco_object")).count("], [") == 79


def test_custom_prompt_template(server, tmp_path):
    ds = FakeDataset("voc", tmp_path / "img", ["x"])
    query_answers(ds, ["x"], settings(prompt="Classes {categories}. Answer as JSON {\"a\": 1}."), tmp_path / "c.json")
    text = server.requests[0]["body"]["messages"][0]["content"][0]["text"]
    assert text.startswith("Classes {1: 'aeroplane'") and text.endswith('{"a": 1}.')
    with pytest.raises(LabelError, match="categories"):
        query_answers(ds, ["x"], settings(prompt="no placeholder"), tmp_path / "d.json")


def test_429_then_success(server, tmp_path):
    ds = FakeDataset("voc", tmp_path / "img", ["x"])
    server.answers[payload_of(ds, "x")] = "[15: person], [90%]"
    server.actions = ["429"]
    assert query_answers(ds, ["x"], settings(), tmp_path / "c.json") == {"x": "[15: person], [90%]"}
    assert [r["action"] for r in server.requests] == ["429", "answer"]


def test_500_then_success(server, tmp_path):
    ds = FakeDataset("voc", tmp_path / "img", ["x"])
    server.actions = ["500", "500"]
    assert query_answers(ds, ["x"], settings(max_retries=2), tmp_path / "c.json")["x"]
    assert [r["action"] for r in server.requests] == ["500", "500", "answer"]


def test_retries_are_bounded(server, tmp_path):
    ds = FakeDataset("voc", tmp_path / "img", ["x"])
    server.actions = ["500"] * 5
    with pytest.raises(LabelError, match="HTTP 500"):
        query_answers(ds, ["x"], settings(max_retries=1), tmp_path / "c.json")
    assert len(server.requests) == 2


def test_hang_past_the_timeout_is_retried(server, tmp_path):
    ds = FakeDataset("voc", tmp_path / "img", ["x"])
    server.actions = ["hang"]
    t0 = time.monotonic()
    assert query_answers(ds, ["x"], settings(timeout=0.3, max_retries=1), tmp_path / "c.json")["x"]
    assert time.monotonic() - t0 < 3
    assert [r["action"] for r in server.requests] == ["hang", "answer"]


def test_hang_without_retries_left_is_a_clear_error(server, tmp_path):
    ds = FakeDataset("voc", tmp_path / "img", ["x"])
    server.actions = ["hang"]
    with pytest.raises(LabelError, match="did not answer within labels.timeout"):
        query_answers(ds, ["x"], settings(timeout=0.3, max_retries=0), tmp_path / "c.json")


@pytest.mark.parametrize("status", ["401", "403"])
def test_auth_failure_stops_at_once_without_leaking_the_key(server, tmp_path, caplog, status):
    caplog.set_level(logging.DEBUG)
    ds = FakeDataset("voc", tmp_path / "img", ["x", "y"])
    server.actions = [status]
    with pytest.raises(LabelError) as err:
        query_answers(ds, ["x", "y"], settings(max_retries=3), tmp_path / "c.json")
    message = str(err.value)
    assert "OPENAI_API_KEY" in message and f"HTTP {status}" in message
    assert SECRET_KEY not in message and "sk-tes" not in message
    assert len(server.requests) == 1  # no retry, and the second image is not asked
    assert SECRET_KEY not in caplog.text


@pytest.mark.parametrize("action", ["malformed", "not_a_completion"])
def test_malformed_body_is_a_clear_error(server, tmp_path, action):
    ds = FakeDataset("voc", tmp_path / "img", ["x"])
    server.actions = [action]
    with pytest.raises(LabelError, match="image x"):
        query_answers(ds, ["x"], settings(max_retries=0), tmp_path / "c.json")
    assert not (tmp_path / "c.json").exists()  # nothing cached for a bad answer


def test_missing_key_asks_nothing(server, tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    ds = FakeDataset("voc", tmp_path / "img", ["x"])
    with pytest.raises(LabelError, match="set the environment variable OPENAI_API_KEY"):
        query_answers(ds, ["x"], settings(), tmp_path / "c.json")
    assert server.requests == []


def test_rerun_makes_zero_requests(server, tmp_path, monkeypatch):
    ds = FakeDataset("voc", tmp_path / "img", ["x", "y", "z"])
    params = params_for(ds)
    first = run_labels(ds, params, tmp_path / "labels", tmp_path / "work")
    assert len(server.requests) == 3
    monkeypatch.delenv("OPENAI_API_KEY")  # a fully cached shard needs no key
    # entries deleted (or another labels folder): the answers cache lives beside it
    assert run_labels(ds, params, tmp_path / "labels-again", tmp_path / "work") == first
    assert len(server.requests) == 3
    for name in ("x", "y", "z"):
        entry = Path("images") / f"{name}.json"
        assert (tmp_path / "labels-again" / entry).read_bytes() == (tmp_path / "labels" / entry).read_bytes()


def test_a_crash_mid_shard_never_asks_twice(server, tmp_path):
    ds = FakeDataset("voc", tmp_path / "img", ["x", "y", "z"])
    out = tmp_path / "labels"
    server.actions = ["answer", "401"]
    with pytest.raises(LabelError):
        run_labels(ds, params_for(ds), out, tmp_path / "work")
    assert not out.exists()
    cached = [json.loads(p.read_text()) for p in (tmp_path / "work").glob("*.json")]
    assert [c["image_id"] for c in cached] == ["x"]  # one file per question, written before the next
    images = run_labels(ds, params_for(ds), out, tmp_path / "work")
    asked = [p for p in server.image_payloads()]
    assert sorted(asked) == sorted(payload_of(ds, i) for i in ["x", "y", "z"])  # each image answered once
    assert set(images) == {"x", "y", "z"}


def test_another_prompt_is_not_served_from_the_cache(server, tmp_path):
    ds = FakeDataset("voc", tmp_path / "img", ["x"])
    query_answers(ds, ["x"], settings(), tmp_path / "c.json")
    query_answers(ds, ["x"], settings(model="gpt-4o-mini"), tmp_path / "c.json")
    assert len(server.requests) == 2


def test_tokens_and_cost_logged_per_shard(server, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    ds = FakeDataset("voc", tmp_path / "img", ["x", "y"])
    query_answers(ds, ["x", "y"], settings(), tmp_path / "c.json", logging.getLogger("shard"))
    line = [r.message for r in caplog.records if r.name == "shard"][-1]
    assert "2 requests, 0 answers from the cache" in line
    assert "200 prompt + 20 completion" in line
    assert "estimated cost $0.0007" in line  # 200 * 2.5e-6 + 20 * 10e-6


def test_json_schema_response_format(server, tmp_path):
    ds = FakeDataset("voc", tmp_path / "img", ["x"])
    answer = json.dumps({"classes": [{"id": 15, "name": "person", "probability": 95}, {"id": 3, "name": "bird", "probability": 40}]})
    server.answers[payload_of(ds, "x")] = answer
    images = run_labels(ds, params_for(ds, json_schema=True), tmp_path / "labels", tmp_path / "work")
    body = server.requests[0]["body"]
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["schema"]["required"] == ["classes"]
    entry = images["x"]
    assert entry["selected"] == [15] and entry["raw"] == answer and entry["parsed"] == [[15, 95], [3, 40]]


def test_the_key_is_in_no_file_log_or_message(server, tmp_path, caplog):
    for name in (None, "openai", "httpx", "httpx2", "httpcore", "pnp_ovss"):
        caplog.set_level(logging.DEBUG, logger=name)
    ds = FakeDataset("voc", tmp_path / "img", ["x", "y"])
    server.actions = ["429", "answer", "500"]
    run_labels(ds, params_for(ds), tmp_path / "o", tmp_path / "w")
    server.actions = ["401"]
    with pytest.raises(LabelError) as err:
        query_answers(FakeDataset("voc", tmp_path / "img2", ["q"]), ["q"], settings(), tmp_path / "w" / "c.json")
    assert server.requests[0]["authorization"] == f"Bearer {SECRET_KEY}"  # it did reach the server
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET_KEY.encode() not in path.read_bytes(), path
    assert "chat/completions" in caplog.text  # the client's debug log was captured
    assert SECRET_KEY not in caplog.text
    assert SECRET_KEY not in str(err.value)


def test_estimated_cost_table():
    usage = openai_live.Usage(1_000_000, 1_000_000)
    assert openai_live.estimated_cost("gpt-4o", usage) == pytest.approx(12.5)
    assert openai_live.estimated_cost("gpt-4o-2024-08-06", usage) == pytest.approx(12.5)
    assert openai_live.estimated_cost("my-local-model", usage) is None
