"""The field's table (pnp_ovss.stages.table): which cells a table runs, how the rows are composed beside the quoted
ones, the quoted rows' file, and how a cell's run is started (pnp_ovss.forwarding)."""

from __future__ import annotations

import pytest
import yaml

from pnp_ovss.config import normalise
from pnp_ovss.descriptors import BENCHMARKS, DESCRIPTORS
from pnp_ovss.errors import ConfigError, DatasetError
from pnp_ovss.forwarding import cell_command, forwarded_options, jobs_run
from pnp_ovss.stages.table import (
    COLUMN_NAMES, COLUMNS, PNP_COLUMN, compose_table, found_benchmarks, load_reference_rows, table_cells,
    table_markdown,
)


def config(**table):
    return normalise({"data_root": "data", **({"table": table} if table else {})})


def test_every_benchmark_variant_has_its_column_and_every_pnp_result_a_place():
    assert COLUMN_NAMES == ("VOC21", "PC60", "Object", "VOC20", "PC59", "Stuff", "City", "ADE")
    for name in BENCHMARKS:
        variants = {v for _, n, v in COLUMNS if n == name}
        assert variants == set(DESCRIPTORS[name].mmseg_variants), name
        assert PNP_COLUMN[name] in COLUMN_NAMES


def test_default_rows_are_the_paper_and_the_peers_protocol_on_every_variant():
    cells = table_cells(config(), ["voc", "psc", "cityscapes"])
    by_row = {}
    for c in cells:
        by_row.setdefault(c.row, []).append(c)
    paper, peers = by_row["PnP-OVSS, paper protocol"], by_row["PnP-OVSS, peers' protocol"]
    assert [(c.dataset, c.column, c.variant) for c in paper] == [
        ("voc", "VOC21", None), ("psc", "PC60", None), ("cityscapes", "City", None)]
    assert [(c.dataset, c.column, c.variant) for c in peers] == [
        ("voc", "VOC21", "voc21"), ("voc", "VOC20", "voc20"), ("psc", "PC59", "pc59"), ("psc", "PC60", "pc60"),
        ("cityscapes", "City", "city19")]
    assert all(c.config["protocol"] == "pnp" and c.config["labels"]["source"] == "auto" for c in paper)
    assert all(c.config["protocol"] == "mmseg" and c.config["labels"]["source"] == "list" for c in peers)
    # a dataset's default variant is given as null, as a plain run gives it (so the evaluation is shared too)
    assert [c.config["mmseg_variant"] for c in peers] == [None, "voc20", None, "pc60", None]
    assert "table" not in paper[0].config and paper[0].config["dataset"] == "voc"
    assert len({c.slug for c in cells}) == len(cells)


def test_a_row_is_any_config_overlay_and_a_named_variant_is_the_only_one():
    rows = [{"name": "clean mode, threshold 0.2", "config": {"mode": "clean", "refine": {"threshold": 0.2}}},
            {"name": "VOC20 only", "config": {"protocol": "mmseg", "mmseg_variant": "voc20"}}]
    cells = table_cells(config(rows=rows), ["voc"])
    assert [(c.row, c.column) for c in cells] == [("clean mode, threshold 0.2", "VOC21"), ("VOC20 only", "VOC20")]
    assert cells[0].config["mode"] == "clean" and cells[0].config["refine"]["threshold"] == 0.2
    assert cells[0].config["refine"]["crf_iterations"] == 10  # the rest from the run's config


@pytest.mark.parametrize("rows,message", [
    ([{"name": "sweep", "config": {"refine": {"threshold": [0.1, 0.2]}}}], "table row 'sweep': its config sweeps"),
    ([{"name": "bad", "config": {"gradcam": {"image_size": "big"}}}], "table row 'bad' on voc: config key gradcam.image_size"),
    ([{"name": "other data", "config": {"dataset": "psc"}}], "an overlay cannot set dataset"),
    ([{"name": "a"}, {"name": "a"}], "row names must differ"),
])
def test_a_bad_row_is_refused_naming_it(rows, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        table_cells(config(rows=rows), ["voc"])


def test_the_benchmarks_found_under_data_root(mini_tree, tmp_path):
    root, _ = mini_tree
    found, notes = found_benchmarks(normalise({"data_root": str(root)}))
    assert found == list(BENCHMARKS) and notes == []
    (tmp_path / "VOCdevkit" / "VOC2012").mkdir(parents=True)  # a broken layout among nothing else
    with pytest.raises(DatasetError, match=r"no benchmark found under data_root .*pnp-ovss prepare"):
        found_benchmarks(normalise({"data_root": str(tmp_path)}))
    with pytest.raises(DatasetError, match=r"table.datasets names benchmarks that cannot be opened .*ade20k: "):
        found_benchmarks(normalise({"data_root": str(tmp_path), "table": {"datasets": ["ade20k"]}}))


def result(row, column, miou, mbiou=10.0, protocol="mmseg", labels="list", n=4):
    return {"row": row, "column": column, "mIoU": miou, "mBIoU": mbiou, "protocol": protocol, "labels": labels,
            "n_images": n}


def test_measured_rows_average_over_what_they_have_and_quoted_rows_stay_apart():
    results = [result("ours", "VOC21", 50.0, 20.0), result("ours", "VOC20", 70.0, 30.0), result("ours", "City", 30.0, 10.0),
               result("paper", "VOC21", 40.0, protocol="pnp", labels="gpt4o_file")]
    quoted = [{"name": "peer", "source": "somewhere", "setting": "mmseg",
               "values": {"VOC21": 60.0, "VOC20": 80.0, "ADE": 20.0}, "published_average": 44.0}]
    table = compose_table(results, quoted, ["ours", "paper"]).set_index("row")
    assert table.loc["ours", "average"] == 50.0 and table.loc["ours", "averaged_over"] == "3 of 3"
    assert table.loc["ours", "mBIoU"] == 20.0 and table.loc["ours", "kind"] == "measured"
    assert table.loc["paper", "average"] == 40.0 and table.loc["paper", "averaged_over"] == "1 of 3"
    # the quoted row: over the columns this table measured (VOC21, VOC20, City) that it has, ADE left out
    assert table.loc["peer", "kind"] == "quoted" and table.loc["peer", "average"] == 70.0
    assert table.loc["peer", "averaged_over"] == "2 of 3" and table.loc["peer", "ADE"] == 20.0
    assert table.loc["peer", "published_average"] == 44.0 and table.loc["peer", "source"] == "somewhere"
    assert list(table.index) == ["ours", "paper", "peer"]  # measured rows first, in the rows' order
    md = table_markdown(table.reset_index(), ["psc not in the table: not found"], "2026-12-01")
    lines = md.splitlines()
    assert "| **ours** | 50.00 | — | — | 70.00 | — | — | 30.00 | — | 50.00 (3 of 3) | 20.00 |" in lines
    assert "| *peer* (quoted) | 60.00 | — | — | 80.00 | — | — | — | 20.00 | 70.00 (2 of 3) | — |" in lines
    assert "- *peer* — quoted (mmseg). Source: somewhere. Published average over their eight: 44.0." in lines
    assert "- psc not in the table: not found" in lines


def test_the_shipped_quoted_rows_name_their_source_and_hold_mious():
    rows = load_reference_rows()
    assert {r["name"].split(" ")[0] for r in rows} >= {"NACLIP", "CorrCLIP", "ClearCLIP", "ProxyCLIP"}
    for r in rows:
        assert r["source"] and set(r["values"]) <= set(COLUMN_NAMES)
        if len(r["values"]) == 8 and r["published_average"] is not None:  # the source's own average agrees
            assert abs(sum(r["values"].values()) / 8 - r["published_average"]) < 0.06, r["name"]


@pytest.mark.parametrize("entry,message", [
    ({"name": "x", "values": {"VOC21": 1}}, "needs a name and a source"),
    ({"name": "x", "source": "s", "values": {"VOC": 50}}, "unknown columns ['VOC']"),
    ({"name": "x", "source": "s", "values": {"ADE": 0.42}}, None),
    ({"name": "x", "source": "s", "values": {"ADE": 142}}, "ADE = 142 is not an mIoU in 0..100"),
])
def test_a_bad_quoted_row_is_refused(tmp_path, entry, message):
    path = tmp_path / "rows.yaml"
    path.write_text(yaml.safe_dump([entry]))
    if message is None:
        assert load_reference_rows(path)[0]["values"] == {"ADE": 0.42}
        return
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_reference_rows(path)


@pytest.mark.parametrize("argv,forwarded", [
    (["--cores", "all", "table", "--config", "data_root=/d"], []),
    (["--cores", "8", "table", "--workflow-profile", "profiles/slurm", "-k"], ["--workflow-profile", "profiles/slurm", "-k"]),
    (["table", "--resources", "gpu=1", "mem_mb=9000", "--jobs", "4"], ["--resources", "gpu=1", "mem_mb=9000", "--jobs", "4"]),
    (["--resources", "gpu=1", "table"], ["--resources", "gpu=1"]),  # the target is no resource
    (["--rerun-triggers", "mtime", "code", "table", "--profile=p"], ["--rerun-triggers", "mtime", "code", "--profile=p"]),
    (["--executor", "slurm", "table", "--printshellcmds"], ["--executor", "slurm", "--printshellcmds"]),
])
def test_a_cell_runs_where_and_how_the_table_was_asked_to(argv, forwarded):
    assert forwarded_options(argv) == forwarded
    command = cell_command("py", "wf/Snakefile", "/work", 4, "cell.yaml", forwarded)
    assert command[:4] == ["py", "-m", "snakemake", "table_cell"] and command[-2:] == ["--configfile", "cell.yaml"]
    assert command[command.index("--cores") + 1] == "4"


def test_the_jobs_a_cell_ran_are_read_from_its_log():
    log = ("Building DAG of jobs...\nJob stats:\njob              count\n-------------  -------\nevaluate             1\n"
           "refine               2\ntable_cell           1\ntotal                4\n\nSelect jobs to execute...\n")
    assert jobs_run(log) == {"evaluate": 1, "refine": 2, "table_cell": 1}
    assert jobs_run("Nothing to be done (all requested files are present and up to date).") == {}
