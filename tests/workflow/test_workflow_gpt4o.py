"""The labels stage with the live API inside a real snakemake run, against a local OpenAI-compatible
server: a run interrupted mid-shard (the server starts refusing the key) and rerun asks no image twice."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from support import SNAKEMAKE

from support.openai_server import SECRET_KEY, FakeOpenAIServer

pytestmark = [pytest.mark.workflow]


def test_interrupted_gpt4o_labels_rerun_never_asks_twice(repo_copy):
    server = FakeOpenAIServer().start()
    try:
        env = {**os.environ, "OPENAI_API_KEY": SECRET_KEY, "OPENAI_BASE_URL": server.base_url}
        env.pop("PNP_OVSS_FAULT", None)
        cmd = SNAKEMAKE + ["--cores", "1", "--until", "labels", "--config",
               "labels={source: gpt4o, timeout: 5, max_retries: 0}"]
        server.actions = ["answer", "answer", "answer", "401"]
        first = subprocess.run(cmd, cwd=repo_copy, env=env, capture_output=True, text=True, timeout=300)
        assert first.returncode != 0
        log_text = "".join(p.read_text() for p in (repo_copy / "results").rglob("logs/labels/*/*.log"))
        assert "OPENAI_API_KEY" in log_text and SECRET_KEY not in log_text + first.stdout + first.stderr
        answered_first = server.image_payloads()
        assert len(answered_first) == 3

        second = subprocess.run(cmd, cwd=repo_copy, env=env, capture_output=True, text=True, timeout=300)
        assert second.returncode == 0, second.stderr[-3000:]
        answered = server.image_payloads()
        assert len(answered) == 6 and len(set(answered)) == 6  # six demo images, each asked exactly once

        entries = [json.loads(p.read_text()) for p in (repo_copy / "results" / "demo" / "labels").glob("*/images/*.json")]
        images = {e["image_id"]: e for e in entries}
        assert len(images) == 6 and all(v["raw"] == "[1: 'aeroplane'], [100%]" for v in images.values())
        assert all(v["selected"] == [1] for v in images.values())  # demo class 1 = sky

        third = subprocess.run(cmd, cwd=repo_copy, env=env, capture_output=True, text=True, timeout=300)
        assert third.returncode == 0 and len(server.image_payloads()) == 6  # nothing asked again
        for path in (repo_copy / "results").rglob("*"):
            if path.is_file():
                assert SECRET_KEY.encode() not in path.read_bytes(), path
    finally:
        server.stop()
