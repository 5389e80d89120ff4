"""Prefect flows: orchestration above the library (paperline never imports this package); the CLI finds them
through the `paperline.flows` entry points, deployments by module path or file."""
