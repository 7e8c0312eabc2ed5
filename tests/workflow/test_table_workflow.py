"""`snakemake table` for real on the fabricated tree (VOC and Cityscapes, the default two rows): every cell is an
ordinary run in the same results folder, so a single-dataset run's results are reused, a second table computes
nothing, the table's numbers are the cells' own miou.csv, and the user's views are left as their last run made them."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from support import GPT4O_DIR, model_config, output_of, planned, smk

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

VOC_ANSWERS = GPT4O_DIR / "voc_classification_noboundary.json"


@pytest.mark.skipif(not VOC_ANSWERS.is_file(), reason="../shared/data/gpt4o (the authors' answers) not present")
def test_table_reuses_every_result_and_leaves_the_views_alone(repo_copy, mini_tree, tiny_model, tmp_path):
    root, ids = mini_tree
    cache = tmp_path / "cache"
    (cache / "gpt4o").mkdir(parents=True)
    shutil.copy(VOC_ANSWERS, cache / "gpt4o")  # the authors' file, where the labels stage looks for it
    env = {"PNP_OVSS_CACHE": str(cache)}
    model = model_config(tiny_model)

    # a plain single-dataset run first: the paper's protocol on VOC
    smk(repo_copy, "--cores", "2", "--config", "dataset=voc", f"data_root={root}", model, env=env)
    results = repo_copy / "results"
    views = {p: p.read_bytes() for p in [results / "voc" / "miou.csv", results / "last-run.yaml",
                                         *sorted((results / "voc" / "latest").rglob("*.png"))]}
    plain = pd.read_csv(results / "voc" / "miou.csv").iloc[0]

    args = ["--cores", "2", "table", "--config", f"data_root={root}", model, "table={datasets: [voc, cityscapes]}"]
    first = smk(repo_copy, *args, env=env)
    out = output_of(first)
    assert "table: 2 row(s) × 2 benchmark(s) (voc, cityscapes) = 5 cell(s)" in out
    assert "table: [1/5] PnP-OVSS, paper protocol · voc: " in out
    assert "(4 images; every result reused" in out.split("[1/5]")[1].split("\n")[0]  # the plain run's results
    assert "ran 1 evaluate_shard, 1 evaluate" in out.split("[4/5]")[1].split("\n")[0]  # voc20: only the scoring
    assert "pnp-ovss: mode faithful" not in out.split("Building DAG")[0]  # the demo config is not announced

    table = pd.read_csv(results / "table.csv").set_index("row")
    cells = pd.read_csv(results / "table-cells.csv")
    assert len(cells) == 5 and set(cells["n_images"]) == {len(ids["voc"])}
    for _, cell in cells.iterrows():  # each number is its cell's own evaluation table
        own = pd.read_csv(repo_copy / cell["miou_csv"]).iloc[0]
        assert own["mIoU"] == cell["mIoU"] and own["dataset"] == cell["dataset"]
        assert table.loc[cell["row"], cell["column"]] == round(cell["mIoU"], 2)
    paper = table.loc["PnP-OVSS, paper protocol"]
    assert paper["VOC21"] == round(plain["mIoU"], 2) and pd.isna(paper["VOC20"]) and paper["labels"] == "gpt4o_file/list"
    peers = table.loc["PnP-OVSS, peers' protocol"]
    assert peers[["VOC21", "VOC20", "City"]].notna().all() and peers["averaged_over"] == "3 of 3"
    assert peers["protocol"] == "mmseg" and peers["labels"] == "list"
    quoted = table[table["kind"] == "quoted"]
    assert len(quoted) >= 3 and quoted["source"].str.len().min() > 10 and quoted["mBIoU"].isna().all()
    md = (results / "table.md").read_text()
    assert "| *NACLIP (ViT-B/16, with PAMR)* (quoted) | 64.07 |" in md
    assert (results / "table.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the user's own last run still owns the fixed-path views
    assert {p: p.read_bytes() for p in views} == views

    second = smk(repo_copy, *args, env=env)
    lines = [line for line in output_of(second).splitlines() if line.startswith("table: [")]
    assert len(lines) == 5 and all("every result reused" in line for line in lines), lines
    again = pd.read_csv(results / "table.csv").set_index("row")
    assert again[list(table.columns[:10])].equals(table[list(table.columns[:10])])

    # a dry run of the table plans the table job alone and writes nothing of the demo
    dry = smk(repo_copy, "-n", *args, env=env)
    assert planned(dry) == {"table": 1} and not (results / "demo").exists()
