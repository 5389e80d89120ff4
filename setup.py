"""The one packaging fact pyproject.toml cannot state: the library lives in src/, the flows in the top-level flows/
folder (the design card's layout), imported as `paperline_flows`. Everything else is in pyproject.toml."""

from setuptools import find_namespace_packages, setup

# namespace packages, as pyproject's `packages.find` finds them: the data folders (project/templates) are included
setup(packages=[*find_namespace_packages("src", include=["paperline*"]), "paperline_flows"],
      package_dir={"": "src", "paperline_flows": "flows"})
