"""The four stages, one module each, shaped alike: ``labels``, ``gradcam``, ``refine``, ``evaluate``.

Each has ``run_<stage>_job`` (a workflow shard job: per-image entries under ``results/<dataset>/<stage
folder>/<hash>/images/`` and the job's record) and ``run_<stage>_shard`` (one folder for a shard, used by
``pnp-ovss segment`` and tests; to be folded into the jobs, issue #19). Both take ``(dataset, image_ids, params, ...)`` then keyword
arguments, log through the logger they are given (:class:`pnp_ovss.stages.job.JobContext` in the rule scripts), and
publish finished outputs with one rename (:func:`pnp_ovss.io.publish`).
"""
