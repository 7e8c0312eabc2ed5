"""The four stages, one module each, shaped alike: ``labels``, ``gradcam``, ``refine``, ``evaluate``.

Each has one implementation, ``run_<stage>_job``: one shard job's images, per-image entries under
``results/<dataset>/<stage folder>/<hash>/images/<key>`` (evaluate: the shard's confusion matrix) and the
job's record. The rule scripts (workflow/scripts/, through :class:`pnp_ovss.stages.job.JobContext`),
``pnp-ovss segment`` (into a temporary results folder, with the plan's keys) and the tests all call it. The
labels, gradcam and refine jobs take ``(dataset, image_ids, params, work)`` (:class:`pnp_ovss.stages.job.ShardWork`:
keys, folders, record, shard, logger) then keyword arguments, and publish each entry with one rename.
"""
