"""The rule ↔ library contract: every file and folder name that both the Snakemake rules and the package
spell. Rules import these names (rules/common.smk) instead of writing the strings again."""

from __future__ import annotations

#: per stage folder and per run: the images left out with the reason
SKIPPED_CSV = "skipped.csv"
#: per run (evaluate/<eh>/set-<key>/) and per dataset (one row per run)
MIOU_CSV = "miou.csv"
PER_CLASS_CSV = "per_class_iou.csv"
#: the append-only ledger of every run evaluated, beside the dataset's miou.csv
RUNS_CSV = "runs.csv"
#: report outputs per run (report/<eh>/set-<key>/)
PARAMETERS_CSV = "parameters.csv"
CHART_PNG = "per_class_iou.png"
OVERLAYS_DIR = "overlays"
#: results/<dataset>/latest/: the current runs' masks by image name
LATEST_DIR = "latest"
VIEWS_DIR = ".views"  # results/<dataset>/.views/<state>: the stamp of the views rule (rules/views.smk)
#: results/last-run.yaml: the config of the last successful run (for `snakemake --report`)
LAST_RUN_YAML = "last-run.yaml"
#: the folder of each stage under results/<dataset>/
STAGE_FOLDER = {"labels": "labels", "gradcam": "gradcam", "refine": "refine", "evaluate": "evaluate", "search": "search"}
#: the folders of results written before the folders took their stages' names: moved once to the new name by
#: the first run that writes (a dry run reads them where they are)
LEGACY_STAGE_FOLDER = {"refine": "masks", "evaluate": "eval"}
#: the search's outputs (search/<maps hash>/<scoring hash>/)
REWARDS_CSV = "rewards.csv"
BEST_YAML = "best.yaml"
STUDY_DB = "study.journal"  # the Optuna study (journal storage)
HEATMAP_PNG = "reward_heatmap.png"
THRESHOLD_PNG = "reward_vs_threshold.png"
SUMMARY_CSV = "summary.csv"


#: the columns of a run's miou.csv before its parameters (stages/evaluate.write_tables); the dataset-level
#: miou.csv view's key holds them, so a results folder from before a column existed (mBIoU) gets it rebuilt
TABLE_COLUMNS = ("dataset", "protocol", "variant", "mIoU", "mBIoU", "pixel_accuracy", "mean_accuracy",
                 "n_classes_scored", "n_images", "n_skipped")
