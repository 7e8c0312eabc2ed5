"""Parser of GPT-4o class answers (ALGORITHM.md §2.2): every messy format, both modes, properties."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pnp_ovss.errors import LabelError
from pnp_ovss.labels.parser import answer_statistics, no_answer, parse_answer
from pnp_ovss.vocab import Vocabulary, load_vocabulary

from support import GPT4O_DIR  # noqa: E402
BENCHMARKS = ("voc", "psc", "ade20k", "coco_object", "coco_stuff")
VOCABS = {name: load_vocabulary(name) for name in BENCHMARKS}


def faithful(raw, dataset="voc", **kw):
    return parse_answer(raw, dataset, VOCABS[dataset], "faithful", **kw)


def clean(raw, dataset="voc", **kw):
    return parse_answer(raw, dataset, VOCABS[dataset], "clean", **kw)


def load_answers(dataset):
    path = GPT4O_DIR / f"{dataset}_classification_noboundary.json"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    return json.loads(path.read_text(encoding="utf-8"))


# --- the table of messy formats in §2.2 --------------------------------------------------------

MESSY_FORMATS = [
    # (dataset, raw, faithful selection)
    ("voc", "[1: 'aeroplane'], [100%]", [1]),
    ("voc", "[19: train], [100%]", [19]),
    ("psc", "[55: 'tvmonitor', 58: 'window'], [90, 70]", [55]),
    ("voc", "[13: 'horse', 15: 'person'], [horse: 95%, person: 95%]", [13, 15]),
    ("psc", "[23: dog, 24: door, 25: fence, 26: floor, 56: wall]\n[100, 100, 70, 80, 100]", [23, 24, 26, 56]),
    (
        "ade20k",
        "[[1: 'wall', 2: 'building;edifice', 43: 'column;pillar', 41: 'base;pedestal;stand'], [90%, 80%, 70%, 60%]]",
        [1, 2],
    ),
    ("ade20k", "[13: 'person;individual;someone;somebody;mortal;soul', 3: 'sky'], [90%, 95%]", [13, 3]),
    ("coco_object", "[87: scissors], [95: 100]", [87]),
    ("coco_stuff", "[59: pizza], [probability of class1 in percentage: 95]", [59]),
    ("coco_stuff", "[119: flower, 86: vase], [95% probability of flower, 90% probability of vase]", [119, 86]),
    ("coco_stuff", "[3: car, 124: grass, 149: road], [95% car, 70% grass, 60% road]", [3]),
    ("coco_stuff", "[21: cow, 124: grass, 169: tree], [95% 60%, 50%]", [21]),
    ("coco_stuff", "[1: person, 88: teddy bear], [100%: 100%]", [1]),
    ("coco_stuff", "[1:'person', 2:'bicycle', 6:'bus'], [100, 100, 90]", [1, 2, 6]),
    ("coco_stuff", "[1:'person', 3:'car']\n[90%, 80%]", [1, 3]),
    ("psc", "[11: building, 20: cow, 25: fence]\n\n[100, 60, 100]", [11, 25]),
    ("ade20k", "[2: 'building;edifice', 3: 'sky'], \n[90%, 60%]", [2]),
    ("voc", "[2: bicycle, 15: person],\n[80, 90]", [2, 15]),
    ("voc", "[2: bicycle, 15: person],\n\n[80, 90]", [2, 15]),
]


@pytest.mark.parametrize("dataset,raw,expected", MESSY_FORMATS)
def test_every_messy_format_parses_faithfully(dataset, raw, expected):
    assert faithful(raw, dataset).selected == expected


@pytest.mark.parametrize("dataset,raw,expected", MESSY_FORMATS)
def test_every_messy_format_parses_in_clean_mode(dataset, raw, expected):
    assert clean(raw, dataset).selected == sorted(set(expected))


def test_misaligned_lists_pair_by_position():
    r = faithful("[21: cow, 124: grass, 169: tree], [95% 60%, 50%]", "coco_stuff")
    assert r.parsed == [(21, 95), (124, 50)]


def test_parsed_records_every_pair_the_loop_looked_at():
    r = faithful("[55: 'tvmonitor', 58: 'window'], [90, 70]", "psc")
    assert r.parsed == [(55, 90), (58, 70)]
    assert r.confident == [55]
    assert r.fallback_used is False


def test_threshold_is_strict_and_configurable():
    assert faithful("[1: a, 2: b], [70%, 71%]").selected == [2]
    assert faithful("[1: a, 2: b], [70%, 71%]", min_probability=69).selected == [1, 2]


def test_gpt_order_and_duplicates_kept_in_faithful_mode():
    raw = "[15: person, 2: bicycle, 15: person], [90, 90, 90]"
    assert faithful(raw).selected == [15, 2, 15]
    assert clean(raw).selected == [2, 15]


def test_fallback_to_first_class_when_nothing_confident():
    for dataset in ("voc", "psc", "ade20k"):
        r = faithful("[5: x, 6: y], [50%, 60%]", dataset)
        assert r.selected == [1] and r.fallback_used and r.kept == []
    r = faithful("[5: bus], [50%]", "coco_object")
    assert r.selected == [1]  # COCO id 1 = person


def test_clean_mode_records_no_confident_class():
    r = clean("[5: x, 6: y], [50%, 60%]")
    assert r.selected == [] and not r.fallback_used
    assert r.to_record(VOCABS["voc"])["selected"] == []


def test_no_fallback_class_switch_overrides_the_mode():
    assert faithful("[5: x], [50%]", no_fallback_class=True).selected == []
    r = clean("[5: x], [50%]", no_fallback_class=False)
    assert r.selected == [1] and r.fallback_used


def test_no_output_branch():
    for dataset in BENCHMARKS:
        for raw in ("", "[]", "[[]]", "]["):
            r = faithful(raw, dataset)
            assert r.no_output and r.parsed == [(1, 100)] and r.selected == [1] and not r.fallback_used
    r = clean("")
    assert r.no_output and r.selected == [] and r.parsed == []
    assert clean("[], []").selected == []


def test_no_answer_uses_the_no_output_branch():
    r = no_answer("voc", VOCABS["voc"], "clean")
    assert r.raw is None and r.selected == [] and r.no_output
    r = no_answer("coco_object", VOCABS["coco_object"], "faithful")
    assert r.raw is None and r.selected == [1]


def test_coco_without_probability_list_keeps_everything():
    assert faithful("[87: scissors, 1: person]", "coco_object").selected == [87, 1]
    assert faithful("[87: scissors, 1: person]", "coco_stuff").selected == [87, 1]


def test_voc_without_probability_list_is_a_clear_error_in_faithful_mode():
    with pytest.raises(LabelError, match="no probability list"):
        faithful("[15: person]", "voc")
    assert clean("[15: person]", "voc").selected == [15]


def test_unknown_coco_ids_are_dropped_silently():
    r = faithful("[0: None], [100]", "coco_object")
    assert r.unknown_ids == [0] and r.selected == [1] and r.fallback_used
    r = faithful("[12: street sign, 3: car], [90, 90]", "coco_object")  # 12 is not a COCO category
    assert r.selected == [3] and r.unknown_ids == [12]


def test_voc_id_outside_the_class_list():
    with pytest.raises(LabelError, match="outside 1..20"):
        faithful("[21: lamp], [90%]", "voc")
    with pytest.raises(LabelError, match="outside"):
        faithful("[0: none], [90%]", "voc")
    r = clean("[21: lamp, 3: bird], [90%, 90%]", "voc")
    assert r.selected == [3] and r.unknown_ids == [21]


def test_coco_stuff_loops_over_the_first_len_classes_probabilities_and_skips_bad_ids():
    r = faithful("[1: person, tree, 3: car], [90, 90, 90, 95]", "coco_stuff")
    assert r.selected == [1, 3]
    assert r.skipped and "tree" in r.skipped[0]
    with pytest.raises(LabelError, match="class id"):
        faithful("[1: person, tree, 3: car], [90, 90, 90]", "coco_object")


def test_more_probabilities_than_classes():
    # coco_object 000000170670: the 18th probability is <= 70, so it is harmless
    assert faithful("[1: person, 3: car], [90, 90, 50]", "coco_object").selected == [1, 3]
    with pytest.raises(LabelError, match="lists only 2 classes"):
        faithful("[1: person, 3: car], [90, 90, 95]", "coco_object")
    assert faithful("[1: person, 3: car], [90, 90, 95]", "coco_stuff").selected == [1, 3]
    assert clean("[1: person, 3: car], [90, 90, 95]", "coco_object").selected == [1, 3]


def test_unreadable_probability():
    with pytest.raises(LabelError, match="cannot read a probability"):
        faithful("[1: person], [high]", "coco_object")
    with pytest.raises(LabelError, match="no 'id: name' entry"):
        clean("[1: person], [high]", "coco_object")
    r = clean("[1: person, 3: car], [high, 90]", "coco_object")
    assert r.selected == [3] and r.skipped


def test_clean_mode_reads_decimals_and_tolerates_surrounding_whitespace():
    r = clean("  [1: person, 3: car], [70.5%, 70%]\n", "coco_object")
    assert r.parsed == [(1, 70.5), (3, 70)] and r.selected == [1]


def test_non_string_and_unknown_mode():
    with pytest.raises(LabelError, match="must be a string"):
        parse_answer(None, "voc", VOCABS["voc"], "faithful")
    with pytest.raises(LabelError, match="mode"):
        parse_answer("[1: a], [90]", "voc", VOCABS["voc"], "strict")


def test_record_has_text_names():
    rec = faithful("[10: traffic light, 1: person], [90, 90]", "coco_object").to_record(VOCABS["coco_object"])
    assert rec == {
        "raw": "[10: traffic light, 1: person], [90, 90]",
        "parsed": [[10, 90], [1, 90]],
        "selected": [10, 1],
        "names": ["trafficlight", "person"],
    }


def test_folder_vocabulary_uses_positions():
    vocab = Vocabulary.from_names(["cat", "sofa", "lamp"])
    assert parse_answer("[3: lamp, 1: cat], [90, 80]", "folder", vocab, "faithful").selected == [3, 1]


# --- the measured statistics of §2.2 -----------------------------------------------------------

EXPECTED_STATS = {
    # dataset: (images, nothing confident (the spec's "fallback"), fallback used, unknown ids dropped,
    #           duplicates, unsorted, mean kept classes)
    "voc": (1449, 8, 8, 0, 0, 114, 1.39),
    "psc": (5104, 2, 2, 0, 0, 1469, 3.29),
    "ade20k": (2000, 0, 0, 0, 0, 456, 6.05),
    "coco_object": (5000, 39, 42, 3, 2, 705, 2.00),
    "coco_stuff": (5000, 16, 16, 0, 3, 1066, 3.40),
}


@pytest.mark.parametrize("dataset", BENCHMARKS)
def test_measured_statistics_of_the_shipped_answers(dataset):
    answers = load_answers(dataset)
    results = [faithful(raw, dataset) for raw in answers.values()]
    stats = answer_statistics(results)
    images, nothing, fallback, unknown, dups, unsorted, mean_kept = EXPECTED_STATS[dataset]
    assert stats["images"] == images
    assert stats["nothing_confident"] == nothing
    assert stats["fallback_used"] == fallback  # coco_object: 39 + the 3 '[0: None]' answers
    assert stats["unknown_ids_dropped"] == unknown
    assert stats["duplicates"] == dups
    assert stats["unsorted"] == unsorted
    assert round(stats["mean_kept"], 2) == mean_kept
    assert stats["no_output"] == 0


@pytest.mark.parametrize("dataset", BENCHMARKS)
def test_clean_mode_parses_every_shipped_answer(dataset):
    answers = load_answers(dataset)
    for key, raw in answers.items():
        r = clean(raw, dataset)
        assert r.selected == sorted(set(r.selected)), key
        assert all(i in VOCABS[dataset] for i in r.selected), key


def _reference_selection(raw, dataset, vocab):
    """An independent, literal re-statement of §2.2 (used to cross-check the parser)."""
    coco = dataset.startswith("coco")
    s = raw
    for old, new in (("]\n\n[", "], ["), ("],\n\n[", "], ["), ("], \n[", "], [ "), ("],\n[", "], [ "), ("]\n[", "], [ ")):
        s = s.replace(old, new)
    parts = s.strip("][").split("], [")
    classes = parts[0].split(",")
    if parts == [""]:
        classes, probs = ["1: x"], [100]
    elif len(parts) == 1:
        probs = [100] * len(classes)
    else:
        probs = [int(p.split(":")[-1].split("%")[0]) for p in parts[1].split(",")]
    ids = []
    for i, p in enumerate(probs[: len(classes)] if dataset == "coco_stuff" else probs):
        if p > 70:
            try:
                ids.append(int(classes[i].split(":")[0]))
            except ValueError:
                if dataset != "coco_stuff":
                    raise
    if coco:
        ids = [i for i in ids if i in vocab]
    return ids or [vocab.ids[0]]


@pytest.mark.parametrize("dataset", BENCHMARKS)
def test_selection_agrees_with_a_literal_restatement_on_every_shipped_answer(dataset):
    answers = load_answers(dataset)
    vocab = VOCABS[dataset]
    for key, raw in answers.items():
        assert faithful(raw, dataset).selected == _reference_selection(raw, dataset, vocab), key


# --- properties: a result or a LabelError, never another exception ------------------------------

entry = st.builds(
    lambda i, name, q: f"{i}: {q}{name}{q}",
    st.integers(min_value=-5, max_value=200),
    st.text(alphabet="abcdefghij ;-", max_size=8),
    st.sampled_from(["", "'", '"']),
)
prob = st.one_of(
    st.integers(min_value=0, max_value=100).map(lambda p: f"{p}%"),
    st.integers(min_value=0, max_value=100).map(str),
    st.integers(min_value=0, max_value=100).map(lambda p: f"name: {p}%"),
    st.integers(min_value=0, max_value=100).map(lambda p: f"{p}% probability of x"),
)
separator = st.sampled_from(["], [", "]\n[", "]\n\n[", "],\n[", "], \n[", "],\n\n[", "]["])


@st.composite
def answers(draw):
    classes = draw(st.lists(entry, max_size=6))
    probs = draw(st.lists(prob, max_size=7))
    sep = draw(separator)
    return "[" + ", ".join(classes) + sep + ", ".join(probs) + "]"


@st.composite
def corrupted(draw):
    text = draw(answers())
    if not text:
        return text
    ops = draw(st.lists(st.tuples(st.integers(0, 3), st.integers(0, len(text)), st.text(max_size=3)), max_size=4))
    for op, pos, ins in ops:
        pos = min(pos, len(text))
        if op == 0:
            text = text[:pos] + ins + text[pos:]
        elif op == 1:
            text = text[:pos] + text[pos + 1 :]
        elif op == 2:
            text = text[:pos]
        else:
            text = text[pos:]
    return text


def _check_outcome(raw, dataset, mode):
    vocab = VOCABS[dataset]
    try:
        r = parse_answer(raw, dataset, vocab, mode)
    except LabelError as exc:
        assert str(exc)
        return
    assert all(isinstance(i, int) for i in r.selected)
    assert all(i in vocab for i in r.selected)
    if mode == "faithful":
        assert r.selected  # the faithful selection is never empty
    else:
        assert r.selected == sorted(set(r.selected))
    json.dumps(r.to_record(vocab))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=answers(), dataset=st.sampled_from(BENCHMARKS), mode=st.sampled_from(["faithful", "clean"]))
def test_generated_answers_give_a_result_or_a_label_error(raw, dataset, mode):
    _check_outcome(raw, dataset, mode)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=corrupted(), dataset=st.sampled_from(BENCHMARKS), mode=st.sampled_from(["faithful", "clean"]))
def test_corrupted_answers_give_a_result_or_a_label_error(raw, dataset, mode):
    _check_outcome(raw, dataset, mode)


@settings(max_examples=150, deadline=None)
@given(raw=st.text(max_size=60), dataset=st.sampled_from(BENCHMARKS), mode=st.sampled_from(["faithful", "clean"]))
def test_arbitrary_text_gives_a_result_or_a_label_error(raw, dataset, mode):
    _check_outcome(raw, dataset, mode)


@settings(max_examples=100, deadline=None)
@given(
    pairs=st.lists(
        st.tuples(st.integers(min_value=1, max_value=20), st.integers(min_value=0, max_value=100)),
        min_size=1,
        max_size=8,
    )
)
def test_well_formed_answers_select_exactly_the_confident_classes(pairs):
    raw = "[" + ", ".join(f"{i}: c{i}" for i, _ in pairs) + "], [" + ", ".join(f"{p}%" for _, p in pairs) + "]"
    expected = [i for i, p in pairs if p > 70]
    r = faithful(raw, "voc")
    assert r.parsed == pairs
    assert r.selected == (expected or [1])
    assert clean(raw, "voc").selected == sorted(set(expected))
