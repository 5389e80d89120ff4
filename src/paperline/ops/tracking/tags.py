"""Every `paperline.*` tag name, on MLflow runs, experiments and model versions: one home for each.

A tag is how the MLflow UI, the leaderboard, the audit and a later run find what a run did, so its name is a
contract: readers and writers import it from here instead of spelling it again.
"""

PREFIX = "paperline."

# who a run is (paperline.ops.registry.decisions.Lineage writes them on the run and on its model version)
PROJECT = "paperline.project"
CONFIG = "paperline.config"
GIT_COMMIT = "paperline.git_commit"
DATASET_MD5 = "paperline.dataset_md5"
FLOW_RUN_ID = "paperline.flow_run_id"
FLOW_RUN_URL = "paperline.flow_run_url"

# how a run went
STATUS = "paperline.status"  # running statuses of the lineage store: registered | cached | gate-failed | failed | ...
ERROR = "paperline.error"  # the first 4,000 characters of what ended a failed run
CACHE_KEY = "paperline.cache_key"  # also on a model version: one registration per cache key
CACHE_HIT = "paperline.cache_hit"
GATE_PASSED = "paperline.gate_passed"  # the data gate's verdict (`gate_passed` below names the one over generated data)
MODEL_VERSION = "paperline.model_version"
CHAMPION_MOVED = "paperline.champion_moved"
TRAIN_NOTE_PREFIX = "train."  # + a training note (device, precision, a chosen setting)

# a model version's numbers (paperline.ops.registry.decisions.version_tags)
PRIMARY_METRIC = "paperline.primary_metric"
LOWER_IS_BETTER = "paperline.lower_is_better"  # set only on versions whose primary metric is a loss
METRIC_PREFIX = "paperline.metric."  # + the metric's name: its value at registration
# the comparison with the champion on the same rows (paperline.ops.compare), on the run and on the version
COMPARED_WITH = "paperline.compare.champion_version"  # the champion version scored in this run ("none": no champion)
COMPARE_INTERVAL = "paperline.compare.interval"  # "low..high" of candidate - champion, with confidence and resamples
TRAINED_ON = "paperline.trained_on"  # dataset:split pairs whose rows trained the model (contamination check)
# approval of a promotion by a person (policy key require_approval; paperline_flows.approval)
APPROVAL = "paperline.approval"  # pending | approved | rejected | expired
APPROVAL_FLOW_RUN = "paperline.approval.flow_run_id"  # the paused flow run that waits for the answer
APPROVAL_BY = "paperline.approval.by"
APPROVAL_REASON = "paperline.approval.reason"

# sweeps: the parent run and its trials (flows/sweep.py)
SWEEP = "paperline.sweep"  # parent | trial
SWEEP_RUNNER = "paperline.sweep.runner"
SWEEP_TRIAL = "paperline.sweep.trial"
SWEEP_PARAM_PREFIX = "paperline.sweep.param."
SWEEP_BEST = "paperline.sweep.best"
SWEEP_BEST_TRIAL = "paperline.sweep.best_trial"
SWEEP_BEST_RUN_ID = "paperline.sweep.best_run_id"
SWEEP_REASON = "paperline.sweep.reason"
SWEEP_FAILED_TRIALS = "paperline.sweep.failed_trials"

# other runs
LEADERBOARD_TASK = "paperline.leaderboard.task"
ONNX_SOURCE = "paperline.onnx.source"
ONNX_VARIANT = "paperline.onnx.variant"
ONNX_MIN_COSINE = "paperline.onnx.min_cosine"


def gate_passed(gate_name: str) -> str:
    """The verdict tag of a gate whose report folder is `gate_name` (`data_gate`, `generated_data_gate`)."""
    return f"{PREFIX}{gate_name.removesuffix('data_gate')}gate_passed"

# A search index version (paperline.ops.production.index): whose vectors it holds, over what, and its recall check.
INDEX_MODEL = "paperline.index.model"  # the registered model whose version encoded the corpus
INDEX_MODEL_VERSION = "paperline.index.model_version"
INDEX_CORPUS = "paperline.index.corpus"  # dataset[:split]
INDEX_VECTORS = "paperline.index.vectors"  # a digest of the embedding store's identity: one version per vectors
INDEX_RECALL = "paperline.index.recall_at_10"
INDEX_CHECK = "paperline.index.recall_check"  # passed | failed

# Drift monitoring (paperline.ops.production.monitor)
MONITOR_MODEL = "paperline.monitor.model"
MONITOR_MODEL_VERSION = "paperline.monitor.model_version"
MONITOR_KEY = "paperline.monitor.key"  # model, reference and current: the runs of one metric history
MONITOR_DRIFTED = "paperline.monitor.drifted"
