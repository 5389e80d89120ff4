"""Registering a version and moving an alias: the policy, the decisions, the audit-logged registry, upstream
models, the champions' leaderboard, the ONNX export."""
