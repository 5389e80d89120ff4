"""`paperline new <name> [--from PROJECT]`: a new project folder that satisfies the contract as generated.

Without `--from`, the folder comes from the templates beside this file: a card to fill in, a default and a smoke
config with their run commands, a `method.py` that fine-tunes the base encoder with CoSENT on STS-B (a
`TrainedMethod` that runs end to end as is), and a README with the sections every project has. With `--from`,
the existing project's method, its sibling files and configs are the starting point (torchtune's `tune cp`):
names that pointed at the old project now point at the new one, and the card keeps its paper but drops the
reference results, which belong to the project that measured them.
"""

from __future__ import annotations

import keyword
import re
import shutil
from pathlib import Path
from string import Template

from paperline.core.config import ConfigError, read_yaml
from paperline.project.discovery import discover, get_project

TEMPLATES = Path(__file__).resolve().parent / "templates"
NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def check_name(projects_dir: Path, name: str) -> None:
    if not NAME.match(name) or keyword.iskeyword(name):
        raise ConfigError(f"project name '{name}' must be snake_case (a-z, 0-9, _; starting with a letter)")
    if (projects_dir / name).exists():
        raise ConfigError(f"projects/{name} exists already; choose another name or remove that folder")


def new_project(projects_dir: Path, name: str, source: str | None = None) -> Path:
    """Write projects/<name>/ and return it; the folder appears whole or not at all."""
    projects_dir = Path(projects_dir)
    check_name(projects_dir, name)
    staging = projects_dir / f".{name}.new"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        if source:
            _copy_project(get_project(projects_dir, source), name, staging)
        else:
            _from_templates(name, staging)
        staging.rename(projects_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    problems = discover(projects_dir)[name].problems
    if problems:  # a scaffold that breaks the contract is not left behind half-usable
        shutil.rmtree(projects_dir / name)
        raise ConfigError(f"the new project would break the method contract, so it was not kept: {'; '.join(problems)}")
    return projects_dir / name


def _from_templates(name: str, folder: Path) -> None:
    title = f"{name}: a new paper method (fill in the card)"
    for template in sorted(TEMPLATES.rglob("*.tmpl")):
        target = folder / template.relative_to(TEMPLATES).with_suffix("")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(Template(template.read_text()).safe_substitute(name=name, title=title))


def _copy_project(source, name: str, folder: Path) -> None:
    """The source project's files with its name replaced where it names the project (configs, run commands)."""
    old = source.name
    shutil.copytree(source.root, folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "README.md"))
    for path in [*folder.glob("configs/*.yaml"), folder / "method.py"]:
        path.write_text(re.sub(rf"\b{re.escape(old)}\b(?!\.py)", name, path.read_text()))  # not sibling files
    card = (folder / "project.yaml").read_text()
    raw = read_yaml(folder / "project.yaml")
    card = re.sub(r"(?m)^name: .*$", f"name: {name}", card, count=1)
    card = re.sub(r"(?m)^title: .*$", f"title: \"{raw['title']} (started from {old})\"", card, count=1)
    # Reference results were measured by the source project; this one earns its own.
    card = re.sub(r"(?m)^reference_results:.*\n(?:[ \t#-].*\n)*", "reference_results: []   # add ours after a run\n",
                  card, count=1)
    (folder / "project.yaml").write_text(card)
    readme = Template((TEMPLATES / "README.md.tmpl").read_text())
    (folder / "README.md").write_text(readme.safe_substitute(name=name, title=f"Started from `{old}`: {raw['title']}"))
