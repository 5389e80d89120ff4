"""Pinned requirements of a logged model, read from this environment (MLflow's own inference is slow and guesses)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def pinned_requirements(packages: list[str]) -> list[str]:
    """`package==version` for each installed package; a local build tag is dropped (torch 2.13.0+cpu ->
    torch==2.13.0) so a serving environment can install it. Packages that are not installed are left out."""
    pins = []
    for package in packages:
        try:
            pins.append(f"{package}=={version(package).split('+')[0]}")
        except PackageNotFoundError:
            continue
    return pins
