"""The one packaging fact pyproject.toml cannot state: the library lives in src/, the flows in the top-level flows/
folder (the design card's layout), imported as `paperline_flows`. Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

setup(packages=[*find_packages("src"), "paperline_flows"],
      package_dir={"": "src", "paperline_flows": "flows"})
