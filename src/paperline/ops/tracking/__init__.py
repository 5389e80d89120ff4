"""MLflow tracking: the client and its errors, what a run logs, how it shows in the UI, every tag name."""
