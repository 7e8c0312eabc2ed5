"""Issue 18: every knowable problem named before the first job — the parse-time checks (pnp_ovss.checks,
pnp_ovss.backends.checkpoints) on their own, and through the real snakemake (dry runs where the parse decides, a real
run where a machine's problem must stop the run before its first job)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from support import smk as run_snakemake
from PIL import Image

from pnp_ovss.backends.checkpoints import (
    CROSS_ATTENTION_LAYOUT,
    MAX_TEXT_LEN,
    HubProbe,
    cross_attention_layers_heads,
    model_availability,
    offline_variable,
    weight_bytes,
)
from pnp_ovss.checks import EveryClass, caption_problem, caption_token_count, live_api_problem
from pnp_ovss.datasets.folder import demo_root
from pnp_ovss.vocab import caption_for, load_vocabulary, vocabulary_from_spec

HUB_MODEL = "Salesforce/blip-itm-large-flickr"


def smk(cwd, *args, env=None):
    """The exit code and the output of a real snakemake run (:func:`support.smk`)."""
    proc = run_snakemake(cwd, *args, env=env, check=False, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def ade20k_names() -> list[str]:
    """ADE20K's 150 class names, the second 'screen' (ids 59 and 131) made unique: a folder run's classes."""
    names = []
    for name in load_vocabulary("ade20k").names:
        names.append(f"projection {name}" if name in names else name)
    return names


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeHub:
    """``GET /api/models/<id>`` of the Hugging Face Hub on 127.0.0.1: a file list with sizes."""

    def __init__(self, files):
        body = json.dumps({"id": HUB_MODEL, "siblings": [{"rfilename": n, "size": s} for n, s in files]}).encode()
        self.requests = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                hub.requests.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_hub():
    hub = FakeHub([("config.json", 4_000), ("model.safetensors", 1_787_000_000), ("pytorch_model.bin", 1_790_000_000)])
    yield hub
    hub.stop()


# --- 1. layer and head --------------------------------------------------------------------------------


def test_the_config_json_layout_is_what_the_loaded_models_have(tiny_model, tiny_bridgetower):
    from transformers import BlipTextConfig, BridgeTowerConfig, BridgeTowerTextConfig

    from pnp_ovss.backends import get_backend

    for backend, path in (("blip", tiny_model), ("bridgetower", tiny_bridgetower)):
        loaded = get_backend(backend).load(str(path), 336 if backend == "blip" else 288, "cpu")
        config = json.loads((path / "config.json").read_text())
        assert cross_attention_layers_heads(config, backend) == get_backend(backend).layers_heads(loaded.model)
    # keys a checkpoint leaves out take the config classes' defaults
    assert cross_attention_layers_heads({}, "blip") == (BlipTextConfig().num_hidden_layers, BlipTextConfig().num_attention_heads)
    assert cross_attention_layers_heads({}, "bridgetower") == (
        BridgeTowerConfig().num_hidden_layers, BridgeTowerTextConfig().num_attention_heads)
    assert set(CROSS_ATTENTION_LAYOUT) == {"blip", "bridgetower"}


@pytest.mark.workflow
def test_layer_and_head_out_of_range_are_refused_at_parse(repo_copy, tiny_model, tiny_bridgetower):
    rc, out = smk(repo_copy, "-n", "--cores", "1", "--config", f"gradcam={{model: {tiny_model}, layer: [8, 13], head: 12}}")
    assert rc != 0 and "2 problems stop the run before its first job" in out
    assert (f"gradcam.layer (in the sweep [8, 13]) 13 is out of range: {tiny_model} has cross-attention layers "
            f"(1-based) 1..12 (read from {tiny_model}/config.json); choose a value in 1..12") in out
    assert f"gradcam.head 12 is out of range: {tiny_model} has heads (0-based) 0..11 (read from {tiny_model}/config.json)" in out
    assert not (repo_copy / "results" / "demo" / "logs").exists()
    rc, out = smk(repo_copy, "-n", "--cores", "1", "--config",
                  f"gradcam={{backend: bridgetower, model: {tiny_bridgetower}, image_size: 288, layer: 7}}")
    assert rc != 0 and "gradcam.layer 7 is out of range" in out and "cross-attention layers (1-based) 1..6" in out
    rc, out = smk(repo_copy, "-n", "--cores", "1", "--config", f"gradcam={{model: {tiny_model}}}", "search={heads: [3, 12]}")
    assert rc != 0 and "search.heads 12 is out of range" in out
    rc, out = smk(repo_copy, "-n", "--cores", "1", "--config", f"gradcam={{model: {tiny_model}, layer: 12, head: 11}}")
    assert rc == 0, out[-3000:]


# --- 2. model availability -----------------------------------------------------------------------------


def test_availability_offline_unreachable_and_downloadable(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))

    def must_not_probe(model):
        raise AssertionError("no probe offline")

    offline = model_availability(HUB_MODEL, environ={"HF_HUB_OFFLINE": "1"}, probe=must_not_probe)
    assert offline.problem and offline.problem.startswith(
        f"gradcam.model {HUB_MODEL} is not in the Hugging Face cache ({tmp_path / 'hub'}) and HF_HUB_OFFLINE=1 forbids "
        "downloading it")
    assert f"`hf download {HUB_MODEL}`" in offline.problem and "point gradcam.model at a local checkpoint" in offline.problem
    down = model_availability(HUB_MODEL, environ={}, probe=lambda m: HubProbe(False, error="ConnectError: refused"))
    assert "the Hub (https://huggingface.co) cannot be reached (ConnectError: refused)" in down.problem
    up = model_availability(HUB_MODEL, environ={}, probe=lambda m: HubProbe(True, 1_787_000_000))
    assert up.problem is None and up.note.endswith("downloads it from https://huggingface.co (1.79 GB of weights)")
    assert model_availability(str(tmp_path), probe=must_not_probe) == model_availability("./not/a/hub/id/x")
    assert offline_variable({"TRANSFORMERS_OFFLINE": "1"}) == "TRANSFORMERS_OFFLINE=1"
    assert offline_variable({"HF_HUB_OFFLINE": "0"}) is None
    assert weight_bytes([("model.safetensors", 10), ("pytorch_model.bin", 99), ("config.json", 1)]) == 10
    assert weight_bytes([("pytorch_model.bin", 99)]) == 99 and weight_bytes([("config.json", 1)]) is None


def test_the_probe_asks_the_hub_once_for_the_file_sizes(fake_hub, monkeypatch):
    import huggingface_hub.constants as hub

    from pnp_ovss.backends.checkpoints import probe_hub

    monkeypatch.setattr(hub, "ENDPOINT", fake_hub.url)
    answer = probe_hub(HUB_MODEL)
    assert answer == HubProbe(True, 1_787_000_000)
    # one request for the model (huggingface_hub may also fetch its own agent registry, once a day)
    asked = [r for r in fake_hub.requests if r.startswith("/api/models/")]
    assert asked == [f"/api/models/{HUB_MODEL}?blobs=true"]
    monkeypatch.setattr(hub, "ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    assert not probe_hub(HUB_MODEL).reachable


@pytest.mark.workflow
def test_an_offline_missing_model_stops_the_run_before_its_first_job(repo_copy, tmp_path):
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    rc, out = smk(repo_copy, "--cores", "1", "--config", "gradcam={device: cpu}", env=env)
    cache = tmp_path / "hf" / "hub"
    assert rc != 0
    assert (f"gradcam.model {HUB_MODEL} is not in the Hugging Face cache ({cache}) and HF_HUB_OFFLINE=1 forbids "
            f"downloading it: download it once where the Hub can be reached (`hf download {HUB_MODEL}`") in out
    assert not (repo_copy / "results" / "demo" / "logs").exists()  # not even the labels jobs ran
    # a dry run names it and plans; a run that needs no model (--until labels) runs
    rc, out = smk(repo_copy, "-n", "--cores", "1", env=env)
    assert rc == 0 and "HF_HUB_OFFLINE=1 forbids downloading it" in out and "a run stops on this before its first gradcam job" in out
    rc, out = smk(repo_copy, "--cores", "1", "--until", "labels", env=env)
    assert rc == 0, out[-3000:]
    assert len(list((repo_copy / "results" / "demo").glob("labels/*/images/*.json"))) == 6


@pytest.mark.workflow
def test_an_unreachable_hub_stops_the_run_and_a_reachable_one_is_announced(repo_copy, tmp_path, fake_hub):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": None, "TRANSFORMERS_OFFLINE": None}
    rc, out = smk(repo_copy, "--cores", "1", "--config", "gradcam={device: cpu}", env=env)
    assert rc != 0 and f"is not in the Hugging Face cache ({tmp_path / 'hf' / 'hub'}) and the Hub ({endpoint}) cannot be reached (" in out
    assert "or point gradcam.model at a local checkpoint directory" in out
    assert not (repo_copy / "results" / "demo" / "logs").exists()
    rc, out = smk(repo_copy, "-n", "--cores", "1", env={**env, "HF_ENDPOINT": fake_hub.url})
    assert rc == 0 and (f"pnp-ovss: gradcam.model {HUB_MODEL} is not in the Hugging Face cache ({tmp_path / 'hf' / 'hub'}): "
                        f"the first job that needs it downloads it from {fake_hub.url} (1.79 GB of weights)") in out


# --- 3. live GPT-4o without a key ---------------------------------------------------------------------


def test_live_api_without_key_is_refused_only_when_something_must_be_asked(tmp_path, tiny_model):
    from pnp_ovss.identity import sha256_of_file
    from pnp_ovss.labels.openai_live import AnswerCache, LiveSettings, Usage, question_of
    from pnp_ovss.plan import make_plan

    plan = make_plan({"results": str(tmp_path / "results"), "labels": {"source": "gpt4o"}, "gradcam": {"model": str(tiny_model)}})
    answers = tmp_path / "results" / "demo" / "labels" / "gpt4o-answers"
    assert live_api_problem(plan, environ={}) == (
        f"labels.source gpt4o: 6 of the 6 images to label have no answer in {answers} yet, and OPENAI_API_KEY is not "
        "set; set OPENAI_API_KEY (and OPENAI_BASE_URL for another compatible server), or choose another labels.source "
        "(gpt4o_file, list, ground_truth)")
    assert live_api_problem(plan, environ={"OPENAI_API_KEY": "sk-x"}) is None
    params = next(p for p in plan.table.values() if p["stage"] == "labels")
    _, fingerprint = question_of(plan.dataset, LiveSettings.from_options(params, plan.cfg["labels"]))
    cache = AnswerCache(answers)
    for image_id in plan.image_ids[:4]:
        cache.put(image_id, fingerprint, sha256_of_file(plan.dataset.image_path(image_id)), "[1: 'sky'], [90%]", Usage())
    assert "2 of the 6 images to label have no answer" in live_api_problem(plan, environ={})
    for image_id in plan.image_ids[4:]:
        cache.put(image_id, fingerprint, sha256_of_file(plan.dataset.image_path(image_id)), "[1: 'sky'], [90%]", Usage())
    assert live_api_problem(plan, environ={}) is None  # every question answered before: no key needed


@pytest.mark.workflow
def test_live_api_without_key_is_refused_at_parse(repo_copy, tiny_model):
    rc, out = smk(repo_copy, "-n", "--cores", "1", "--config", "labels={source: gpt4o}", f"gradcam={{model: {tiny_model}}}",
                  env={"OPENAI_API_KEY": None})
    assert rc != 0 and "6 of the 6 images to label have no answer" in out and "OPENAI_API_KEY is not set" in out
    secret = "sk-test-never-printed-42"
    rc, out = smk(repo_copy, "-n", "--cores", "1", "--config", "labels={source: gpt4o}", f"gradcam={{model: {tiny_model}}}",
                  env={"OPENAI_API_KEY": secret})
    assert rc == 0 and secret not in out


# --- 4. the caption of every class ---------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["blip", "bridgetower"])
def test_the_caption_limit_is_the_one_the_job_enforces(backend, tiny_model, tiny_bridgetower):
    from transformers import AutoTokenizer

    from pnp_ovss.backends import get_backend

    path = str(tiny_model if backend == "blip" else tiny_bridgetower)
    tokenizer = AutoTokenizer.from_pretrained(path)
    def count(names):
        return caption_token_count(tokenizer, caption_for(names, True))

    limit = MAX_TEXT_LEN if backend == "blip" else 512
    word = next(w for w in ("cat", "a", "dog", "sky") if count([w, w]) - count([w]) == 1)  # one token per name
    fits = [word] * (limit - (count([word]) - 1))
    assert count(fits) == limit
    get_backend(backend).tokenize(tokenizer, [fits], keep_spaces=True)  # the job takes it
    assert caption_problem(path, backend, EveryClass(fits, "classes"), True) is None
    too_long = fits + [word]
    with pytest.raises(ValueError, match="after truncation|gives no tokens"):  # the job truncates, then fails
        get_backend(backend).tokenize(tokenizer, [too_long], keep_spaces=True)
    problem = caption_problem(path, backend, EveryClass(too_long, "config key classes"), True)
    assert problem == (
        f"the caption naming every class gets {limit + 1} tokens with the tokenizer of {path}, but the {backend} "
        f"model reads at most {limit} (every image is given all {len(too_long)} classes); give fewer classes (config key "
        f"classes), or labels per image (labels.source gpt4o, gpt4o_file or ground_truth) so that each caption names "
        f"only the image's own classes")


@pytest.mark.workflow
def test_every_class_of_ade20k_for_every_image_is_refused_at_parse(repo_copy, tiny_model, mini_tree):
    from transformers import AutoTokenizer

    names = ade20k_names()
    tokens = caption_token_count(AutoTokenizer.from_pretrained(str(tiny_model)), caption_for(names, True))
    # the folder workflow with ADE20K's 150 names as one comma list (1100+ bytes): no OSError, the caption check
    rc, out = smk(repo_copy, "-n", "--cores", "1", "--config", "dataset=folder", f"images={demo_root() / 'images'}",
                  "classes=" + ",".join(names), f"gradcam={{model: {tiny_model}}}")
    assert rc != 0 and "File name too long" not in out
    assert (f"the caption naming every class gets {tokens} tokens with the tokenizer of {tiny_model}, but the blip model "
            f"reads at most 500 (every image is given all 150 classes); give fewer classes (config key classes)") in out
    # ADE20K itself with labels.source list (all 150 classes, faithful: names without spaces)
    root, _ = mini_tree
    rc, out = smk(repo_copy, "-n", "--cores", "1", "--config", "dataset=ade20k", f"data_root={root}",
                  "labels={source: list}", f"gradcam={{model: {tiny_model}}}")
    assert rc != 0 and "give fewer classes (config key labels.classes)" in out
    rc, out = smk(repo_copy, "-n", "--cores", "1", "--config", "dataset=ade20k", f"data_root={root}",
                  "labels={source: list, classes: 'wall,sky,person'}", f"gradcam={{model: {tiny_model}}}")
    assert rc == 0, out[-3000:]


# --- 5. a folder's annotations ---------------------------------------------------------------------------


def folder_with_annotations(tmp_path):
    images, annotations = tmp_path / "images", tmp_path / "annotations"
    shutil.copytree(demo_root() / "images", images)
    shutil.copytree(demo_root() / "annotations", annotations)
    (annotations / "forest.png").unlink()
    (annotations / "lake.png").unlink()
    with Image.open(annotations / "beach.png") as im:
        im.resize((160, 120), Image.NEAREST).save(annotations / "beach.png")
    return images, annotations


@pytest.mark.workflow
def test_missing_and_wrongly_sized_annotations_are_named_at_parse(repo_copy, tmp_path, tiny_model):
    images, annotations = folder_with_annotations(tmp_path)
    args = ["-n", "--cores", "1", "--config", "dataset=folder", f"images={images}", f"annotations={annotations}",
            f"classes={demo_root() / 'classes.txt'}", f"gradcam={{model: {tiny_model}}}"]
    rc, out = smk(repo_copy, *args)
    assert rc != 0 and "2 problems stop the run before its first job" in out
    assert f"2 of 6 images have no annotation in {annotations}: forest.png, lake.png; expected a label PNG named like each image" in out
    assert (f"1 annotation(s) differ in size from their image: {annotations / 'beach.png'} is 160x120 (WxH) but its "
            f"image {images / 'beach.png'} is 320x240; expected the same size") in out
    assert "or run with on_error=skip to leave these images out of the evaluation" in out
    rc, out = smk(repo_copy, *args, "on_error=skip")
    assert rc == 0 and "(on_error=skip: the evaluation leaves these images out)" in out and "forest.png, lake.png" in out


# --- 6. the authors' answers file ------------------------------------------------------------------------


@pytest.mark.workflow
def test_the_authors_answers_download_is_announced_and_a_missing_file_refused(repo_copy, tmp_path, mini_tree, tiny_model):
    from pnp_ovss.labels.sources import authors_url

    root, _ = mini_tree
    cache = tmp_path / "pnp-cache"
    base = ["-n", "--cores", "1", "--config", "dataset=voc", f"data_root={root}", f"gradcam={{model: {tiny_model}}}"]
    rc, out = smk(repo_copy, *base, env={"PNP_OVSS_CACHE": str(cache)})
    target = cache / "gpt4o" / "voc_classification_noboundary.json"
    assert rc == 0 and (f"pnp-ovss: the authors' GPT-4o answers for voc are not in the cache yet: the first labels job "
                        f"downloads {authors_url('voc')} into {target} (checksum verified") in out
    rc, out = smk(repo_copy, *base[:-1], f"labels={{file: {tmp_path / 'nope.json'}}}", f"gradcam={{model: {tiny_model}}}")
    assert rc != 0 and f"{tmp_path / 'nope.json'}: labels.file not found (expected a JSON of GPT-4o answers)" in out


# --- B. long class lists -----------------------------------------------------------------------------------


def test_a_class_list_of_any_length_never_reaches_the_file_system(tmp_path):
    from pnp_ovss.labels.sources import class_names_of

    names = ade20k_names()
    text = ",".join(names)
    assert len(text.encode()) > 1000
    assert vocabulary_from_spec(text).names == tuple(names)
    assert class_names_of(text) == names
    assert vocabulary_from_spec("\n".join(names) + "\n").names == tuple(names)  # lines, as in a file
    long_name = "a very long class name " * 20
    assert vocabulary_from_spec(long_name).names == (long_name.strip(),)  # one name, not a file: no OSError
    assert class_names_of(long_name) == [long_name.strip()]
    listed = tmp_path / "classes.txt"
    listed.write_text("\n".join(names) + "\n")
    assert vocabulary_from_spec(str(listed)).names == tuple(names) and class_names_of(str(listed)) == names


@pytest.mark.workflow
def test_a_long_class_list_on_the_command_line_plans(repo_copy):
    # the default checkpoint is not at hand here (no tokenizer to count with): the long value just has to plan
    rc, out = smk(repo_copy, "-n", "--cores", "1", "--config", "dataset=folder", f"images={demo_root() / 'images'}",
                  "classes=" + ",".join(ade20k_names()))
    assert rc == 0 and "File name too long" not in out and "gradcam 0 reused / 6 to compute" in out


def test_segment_takes_a_long_class_list_and_names_the_caption_problem(tmp_path, tiny_model):
    listed = tmp_path / "ade.txt"
    listed.write_text("\n".join(ade20k_names()))
    for classes in (",".join(ade20k_names()), str(listed)):
        proc = subprocess.run(
            [sys.executable, "-m", "pnp_ovss.cli", "segment", str(demo_root() / "images" / "lake.png"), "--classes",
             classes, "--out", str(tmp_path / "out"), "--model", str(tiny_model), "--device", "cpu"],
            capture_output=True, text=True, timeout=300,
        )
        assert proc.returncode == 1 and "Errno 36" not in proc.stderr
        assert "pnp-ovss: error: the caption naming every class gets" in proc.stderr
        assert "give fewer classes (--classes), or labels per image (--gpt4o)" in proc.stderr
        assert not (tmp_path / "out").exists()  # refused before anything was written


# --- C. best.yaml and the OpenAI URL ---------------------------------------------------------------------


def test_best_yaml_carries_the_searched_backend_and_model(tmp_path):
    import pandas as pd
    import yaml

    from pnp_ovss.search.run import write_outputs

    table = pd.DataFrame([{"layer": 3, "head": 5, "threshold": 0.25, "reward": 2.0, "images": 4},
                          {"layer": 4, "head": 0, "threshold": 0.25, "reward": 1.0, "images": 4}])
    write_outputs(table, {"backend": "bridgetower", "model": "/models/tiny-bt"}, tmp_path, None, False, [3, 4], [0, 5])
    best = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert best == {"gradcam": {"backend": "bridgetower", "model": "/models/tiny-bt", "layer": 3, "head": 5},
                    "refine": {"threshold": 0.25}}


def test_an_unreachable_openai_server_is_named_by_its_url(tmp_path, monkeypatch):
    from support.openai_server import FakeDataset, settings

    from pnp_ovss.errors import LabelError
    from pnp_ovss.labels.openai_live import query_answers

    url = f"http://127.0.0.1:{closed_port()}/v1"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-unused")
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    ds = FakeDataset("voc", tmp_path / "img", ["x"])
    with pytest.raises(LabelError) as err:
        query_answers(ds, ["x"], settings(max_retries=0, timeout=2.0), tmp_path / "answers")
    assert f"image x: cannot reach the OpenAI API at {url} (" in str(err.value)
    assert "sk-test-unused" not in str(err.value)
