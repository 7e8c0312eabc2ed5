"""Label sources: the authors' answer files (local copy, verified download), ground truth, fixed lists."""

from __future__ import annotations

import functools
import json
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pnp_ovss.errors import LabelError
from pnp_ovss.labels import sources
from pnp_ovss.labels.sources import (
    AUTHORS_SHA256,
    answer_for,
    authors_answers_path,
    authors_url,
    download,
    labels_from_file,
    labels_from_ground_truth,
    labels_from_list,
    resolve_class_list,
    sha256_of,
    user_cache_dir,
)
from pnp_ovss.vocab import Vocabulary, load_vocabulary

from support import shared_file


class FakeDataset:
    def __init__(self, name, ids=(), gt=None, vocab=None, key=lambda i: i):
        self.name = name
        self.vocabulary = vocab or load_vocabulary(name)
        self._ids = list(ids)
        self._gt = gt or {}
        self._key = key

    def image_ids(self):
        return list(self._ids)

    def gpt4o_key(self, image_id):
        return self._key(image_id)

    def gt_class_ids(self, image_id):
        return self._gt[image_id]


def params(mode="faithful", **kw):
    p = {"mode": mode, "min_probability": 70, "no_fallback_class": mode == "clean"}
    p.update(kw)
    return p


# --- the shipped files ---------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", list(AUTHORS_SHA256))
def test_hard_coded_checksums_match_the_shared_copies(dataset):
    assert sha256_of(shared_file(dataset)) == AUTHORS_SHA256[dataset]


def test_authors_url_is_pinned_to_the_commit():
    assert authors_url("ade20k") == (
        "https://raw.githubusercontent.com/letitiabanana/PnP-OVSS/e43996255fac8526bb43a0375a734dbb638d1a61/"
        "GPT4o_classification/ade20k_classification_noboundary.json"
    )
    with pytest.raises(LabelError, match="labels.file"):
        authors_url("folder")


def test_file_source_selects_per_image():
    path = shared_file("voc")
    ds = FakeDataset("voc", ["2007_000033", "2007_000129", "2007_008256"])
    out = labels_from_file(ds, ds.image_ids(), params(), path)
    assert out["2007_000033"].selected == [1]
    assert out["2007_000129"].selected == [2, 15]
    assert out["2007_008256"].selected == [13, 15]
    assert out["2007_000033"].raw == "[1: 'aeroplane'], [100%]"


def test_file_source_uses_the_dataset_key():
    path = shared_file("ade20k")
    ds = FakeDataset("ade20k", ["186"], key=lambda i: f"ADE_val_{int(i):08d}")
    assert labels_from_file(ds, ["186"], params(), path)["186"].selected == [1, 2]


def test_missing_key_faithful_names_image_and_file(tmp_path):
    path = tmp_path / "answers.json"
    path.write_text(json.dumps({"a": "[15: person], [90%]"}))
    ds = FakeDataset("voc", ["a", "b"])
    with pytest.raises(LabelError) as err:
        labels_from_file(ds, ["a", "b"], params("faithful"), path)
    assert "image b" in str(err.value) and str(path) in str(err.value)


def test_missing_key_clean_uses_the_no_output_branch(tmp_path):
    path = tmp_path / "answers.json"
    path.write_text(json.dumps({"a": "[15: person], [90%]"}))
    ds = FakeDataset("voc", ["a", "b"])
    out = labels_from_file(ds, ["a", "b"], params("clean"), path)
    assert out["a"].selected == [15]
    assert out["b"].raw is None and out["b"].selected == [] and out["b"].no_output
    # clean with the fallback switched back on: the no-output class (id 1)
    out = labels_from_file(ds, ["b"], params("clean", no_fallback_class=False), path)
    assert out["b"].selected == [1]
    assert answer_for({}, "k", "b", path, "clean") is None


def test_malformed_answer_names_the_image(tmp_path):
    path = tmp_path / "answers.json"
    path.write_text(json.dumps({"a": "[15: person], [very likely]"}))
    with pytest.raises(LabelError, match=r"image a in .*answers.json: cannot read a probability"):
        labels_from_file(FakeDataset("voc", ["a"]), ["a"], params(), path)


@pytest.mark.parametrize(
    "content,message",
    [("not json", "not valid JSON"), ("[1, 2]", "expected a JSON object"), ('{"a": 3}', "expected a string")],
)
def test_malformed_answer_file(tmp_path, content, message):
    path = tmp_path / "answers.json"
    path.write_text(content)
    with pytest.raises(LabelError, match=message):
        sources.load_answers(path)


def test_labels_file_must_exist(tmp_path):
    with pytest.raises(LabelError, match="labels.file not found"):
        sources.answers_file_path("voc", tmp_path / "nope.json")


# --- download into the user cache ----------------------------------------------------------------


class CountingHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def file_server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    hits = []

    class Handler(CountingHandler):
        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}/", hits
    httpd.shutdown()
    httpd.server_close()


def test_download_once_verified_and_never_again(file_server, tmp_path, capsys):
    root, base, hits = file_server
    (root / "voc_classification_noboundary.json").write_bytes(shared_file("voc").read_bytes())
    cache = tmp_path / "cache"
    path = authors_answers_path("voc", cache, base_url=base)
    assert path == cache / "gpt4o" / "voc_classification_noboundary.json"
    assert sha256_of(path) == AUTHORS_SHA256["voc"]
    assert hits == ["/voc_classification_noboundary.json"]
    assert "voc_classification_noboundary.json" in capsys.readouterr().err  # the tqdm progress bar
    assert authors_answers_path("voc", cache, base_url=base) == path
    assert len(hits) == 1
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no partial files left


def test_download_with_a_wrong_checksum_leaves_nothing(file_server, tmp_path):
    root, base, _ = file_server
    (root / "voc_classification_noboundary.json").write_text('{"2007_000033": "[1: x], [100%]"}')
    cache = tmp_path / "cache"
    with pytest.raises(LabelError, match="sha256"):
        authors_answers_path("voc", cache, base_url=base, progress=False)
    assert not any((cache / "gpt4o").iterdir())


def test_download_failure_says_what_to_do(file_server, tmp_path):
    _, base, _ = file_server
    with pytest.raises(LabelError, match="set labels.file"):
        download(base + "missing.json", tmp_path / "x.json", "0" * 64, progress=False)
    assert not (tmp_path / "x.json").exists()


def test_corrupted_cached_file_is_reported(tmp_path):
    cached = tmp_path / "gpt4o" / "psc_classification_noboundary.json"
    cached.parent.mkdir(parents=True)
    cached.write_text("{}")
    with pytest.raises(LabelError, match="delete it"):
        authors_answers_path("psc", tmp_path)


def test_user_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PNP_OVSS_CACHE", str(tmp_path / "c"))
    assert user_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("PNP_OVSS_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert user_cache_dir() == tmp_path / ".cache" / "pnp-ovss"


# --- ground truth and lists ----------------------------------------------------------------------


def test_ground_truth_source():
    ds = FakeDataset("voc", ["a", "b"], gt={"a": [5, 15], "b": []})
    out = labels_from_ground_truth(ds, ["a", "b"], params("faithful"))
    assert out["a"].selected == [5, 15] and out["a"].raw is None and out["a"].parsed == []
    assert out["b"].selected == [1] and out["b"].fallback_used
    assert labels_from_ground_truth(ds, ["b"], params("clean"))["b"].selected == []


def test_ground_truth_with_an_unknown_id_is_an_error():
    ds = FakeDataset("voc", ["a"], gt={"a": [42]})
    with pytest.raises(LabelError, match="image a"):
        labels_from_ground_truth(ds, ["a"], params())


def test_list_source_resolves_names():
    vocab = load_vocabulary("coco_stuff")
    assert resolve_class_list(vocab, ["person", "traffic light", "trafficlight", "wall-brick"]) == [1, 10, 171]
    assert resolve_class_list(vocab, "person, skyother") == [1, 157]
    assert resolve_class_list(vocab, None) == list(vocab.ids)
    ds = FakeDataset("coco_stuff", ["a", "b"])
    out = labels_from_list(ds, ["a", "b"], params(), ["dog", "grass"])
    assert out["a"].selected == out["b"].selected == [18, 124]


def test_list_source_from_a_file(tmp_path):
    f = tmp_path / "classes.txt"
    f.write_text("# mine\nsofa\ncat\n")
    vocab = Vocabulary.from_names(["cat", "sofa", "lamp"])
    assert resolve_class_list(vocab, str(f)) == [2, 1]


def test_list_source_unknown_name_is_named():
    with pytest.raises(LabelError, match="'unicorn'"):
        resolve_class_list(load_vocabulary("voc"), ["person", "unicorn"], "voc")
    with pytest.raises(LabelError, match="no class names"):
        resolve_class_list(load_vocabulary("voc"), " , ")
