"""One descriptor per dataset (pnp_ovss.descriptors): every consumer knows every descriptor, and reads its
facts from it (not from a list of its own)."""

from __future__ import annotations

import argparse

import pytest
import yaml

from support import ROOT
from pnp_ovss.descriptors import BENCHMARKS, DATASET_NAMES, DESCRIPTORS

ANSWERED = [d.name for d in DESCRIPTORS.values() if d.authors_answers]


def dataset_choices(register) -> list[list[str]]:
    """The choices of every dataset argument of every sub-command a CLI module registers."""
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    found, todo = [], [parser]
    while todo:
        for action in todo.pop()._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo.extend(action.choices.values())
            elif action.dest == "dataset" and action.choices:
                found.append(list(action.choices))
    return found


def test_the_descriptors_are_the_known_datasets():
    assert DATASET_NAMES == ("demo", "folder", "voc", "psc", "ade20k", "coco_object", "coco_stuff", "cityscapes")
    assert BENCHMARKS == ("voc", "psc", "ade20k", "coco_object", "coco_stuff", "cityscapes")


def test_schema_enum_and_config_file_list_every_descriptor():
    schema = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())
    assert schema["properties"]["dataset"]["enum"] == list(DATASET_NAMES)


def test_cli_choices_come_from_the_descriptors():
    from pnp_ovss.datasets.cli import register as datasets_cli
    from pnp_ovss.labels.cli import register as labels_cli

    assert dataset_choices(datasets_cli) == [list(DATASET_NAMES)]
    assert dataset_choices(labels_cli) == [ANSWERED, ANSWERED]  # `labels parse` and `labels fetch`
    assert ANSWERED == [b for b in BENCHMARKS if b != "cityscapes"]  # the authors never ran Cityscapes


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_every_consumer_knows_the_dataset(name):
    from pnp_ovss.config import normalise, resolved_label_source
    from pnp_ovss.datasets.base import Dataset
    from pnp_ovss.labels.openai_live import categories_text
    from pnp_ovss.labels.parser import parse_answer
    from pnp_ovss.labels.sources import AUTHORS_SHA256, authors_file_name
    from pnp_ovss.protocols import get_protocol
    from pnp_ovss.vocab import Vocabulary, load_vocabulary

    d = DESCRIPTORS[name]
    adapter = d.adapter_class()
    assert issubclass(adapter, Dataset) and adapter.name == name
    vocab = load_vocabulary(d.vocabulary) if d.vocabulary else Vocabulary.from_names(["cat", "sofa"])
    # the labels source, the authors' file and its checksum
    extra = {"classes": "cat,sofa", "images": "."} if name == "folder" else {}
    assert resolved_label_source(normalise({"dataset": name, **extra})) == d.default_labels_source
    if d.authors_answers:
        assert authors_file_name(name) == d.authors_answers[0] and AUTHORS_SHA256[name] == d.authors_answers[1]
    # the prompt and the parser
    text = categories_text(name, vocab)
    first = vocab.ids[0]
    assert (f"[{first}, " if d.prompt_categories == "coco_pairs" else f"{{{first}: ") in text
    for excluded in d.prompt_excluded_ids:
        assert f"[{excluded}, " not in text
    answer = parse_answer(f"[{first}: {vocab.names[0]}], [90%]", name, vocab, "clean")
    assert answer.selected == [first]
    # the protocols: pnp, and every mmseg variant
    pnp = get_protocol(name, "pnp", vocab)
    assert pnp.class_names[0] == d.pnp_background_name
    if d.pnp_n_class:
        assert pnp.n_class == d.pnp_n_class
    for variant in d.mmseg_variants:
        assert get_protocol(name, "mmseg", vocab, variant).variant == variant


def test_the_background_rule_reaches_the_adapters(mini_tree):
    from pnp_ovss.datasets import get_dataset

    root, _ = mini_tree
    for name in BENCHMARKS:
        ds = get_dataset({"dataset": name, "data_root": str(root), "protocol": "mmseg", "mmseg_variant": None})
        assert ds.background_rule == DESCRIPTORS[name].background_rule and ds.descriptor is DESCRIPTORS[name]
    assert {DESCRIPTORS[n].background_rule for n in ("psc", "ade20k", "coco_stuff")} == {"fewer_than_3"}


def test_an_unknown_dataset_names_the_known_ones():
    from pnp_ovss.datasets import get_dataset
    from pnp_ovss.errors import ConfigError

    with pytest.raises(ConfigError, match="known: demo, folder, voc"):
        get_dataset({"dataset": "imagenet"})


def test_readme_lists_every_dataset_with_its_layout():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Datasets", 1)[1].split("\n## ", 1)[0]
    for d in DESCRIPTORS.values():
        assert f"| `{d.name}` | {d.title} | `{d.layout}` | {d.split} |" in section, d.name
