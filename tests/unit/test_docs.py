"""The documentation: the site (mkdocs.yml, docs/) builds with --strict, so a broken link or anchor, a page left
out of the nav or a nav entry without a page fails the suite; and every dotted `paperline.*` / `paperline_flows.*`
name the READMEs, the pages and the code's docstrings and comments mention is a module or an attribute that exists.
"""

from __future__ import annotations

import ast
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MKDOCS = Path(sys.executable).with_name("mkdocs")


def build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    if not MKDOCS.exists():
        pytest.fail(f"{MKDOCS} is missing: install the docs extra (pip install -c constraints.txt -e '.[docs]')")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([str(MKDOCS), "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
                          cwd=config.parent, env=env, capture_output=True, text=True, timeout=300)


def nav_pages(config: Path) -> list[str]:
    """Every page file the nav names (mkdocs.yml read as text: its `!!python/name` tags, if any, need no loader)."""
    return re.findall(r"^\s*-\s*(?:[^:\n]+:\s*)?([\w./-]+\.md)\s*$", config.read_text(), flags=re.M)


def test_the_site_builds_strict(tmp_path):
    site = tmp_path / "site"
    result = build(ROOT / "mkdocs.yml", site)
    assert result.returncode == 0, result.stdout + result.stderr
    pages = nav_pages(ROOT / "mkdocs.yml")
    on_disk = sorted(str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md"))
    assert sorted(pages) == on_disk  # the strict build checks this too; this says it in one line
    for page in pages:
        html = site / ("index.html" if page == "index.md" else page.removesuffix(".md") + "/index.html")
        assert html.is_file(), f"{page} was not rendered"
    assert "material" in (site / "index.html").read_text()


@pytest.mark.parametrize(("change", "message"), [
    ("link", "nope.md"),                 # a link to a page that does not exist
    ("anchor", "#no-such-heading"),      # a link to a heading that does not exist
    ("omitted", "not included in the \"nav\""),  # a page that is not in the nav
    ("outside", "README.md"),            # a relative link out of docs/, which MkDocs does not serve
])
def test_the_strict_build_fails_on_a_broken_site(tmp_path, change, message):
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    page = tmp_path / "docs" / "testing.md"
    if change == "link":
        page.write_text(page.read_text() + "\nSee [the missing page](nope.md).\n")
    elif change == "anchor":
        page.write_text(page.read_text() + "\nSee [a heading](pipeline.md#no-such-heading).\n")
    elif change == "omitted":
        (tmp_path / "docs" / "orphan.md").write_text("# A page nobody can reach\n")
    else:
        page.write_text(page.read_text() + "\nSee [the project](../projects/sbert_sts/README.md).\n")
    result = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0
    assert message in result.stdout + result.stderr


# -- dotted names --------------------------------------------------------------------------------------------------

# A dotted name: not inside a path, a URL or another identifier (nothing of [\w./-] right before it).
NAME = re.compile(r"(?<![\w./-])(paperline(?:_flows)?\.[A-Za-z_][\w.]*)")
# A name that ends in a file extension is a file (paperline.db), not a module.
FILE_EXTENSIONS = {"py", "md", "yaml", "yml", "json", "toml", "txt", "db", "sqlite", "cfg", "ini", "html", "csv",
                   "tsv", "log", "lock", "tmpl", "whl", "gz", "zip"}


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted(ROOT.glob("projects/*/README.md")),
            ROOT / "registry" / "README.md"]


def python_files() -> list[Path]:
    folders = [ROOT / "src", ROOT / "flows", ROOT / "projects"]
    return sorted(p for folder in folders if folder.is_dir() for p in folder.rglob("*.py")
                  if "__pycache__" not in p.parts)


def prose_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of what a .py file says in words: its docstrings and its comments."""
    source = path.read_text()
    lines = source.splitlines()
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                found += [(n, lines[n - 1]) for n in range(first.lineno, first.end_lineno + 1)]
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            found.append((token.start[0], token.string))
    return found


def code_names() -> tuple[set[str], set[str]]:
    """The `paperline.*` names the code writes as strings (MLflow tags such as `paperline.status`, entry-point groups
    such as `paperline.flows`), exact and as prefixes (`f"paperline.metric.{name}"`): names, not module paths. A
    string whose first part is one of paperline's own modules is left out, so that it cannot excuse a module path."""
    own = {p.stem if p.suffix == ".py" else p.name for p in (ROOT / "src" / "paperline").iterdir()}
    exact: set[str] = set()
    prefixes: set[str] = set()
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.JoinedStr):  # an f-string: its leading literal part is a prefix
                head = node.values[0] if node.values else None
                if isinstance(head, ast.Constant) and isinstance(head.value, str) and len(node.values) > 1:
                    if re.fullmatch(r"paperline\.[\w.]+", head.value) and head.value.split(".")[1] not in own:
                        prefixes.add(head.value if head.value.endswith(".") else head.value + ".")
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                if re.fullmatch(r"paperline\.[\w.]+", node.value) and node.value.split(".")[1] not in own:
                    (prefixes if node.value.endswith(".") else exact).add(node.value)
    return exact, prefixes


def names_in(text: str, exact: set[str], prefixes: set[str]) -> list[str]:
    """The dotted names in one line that should be modules or attributes: trailing punctuation stripped; file names
    (`paperline.egg-info`, `paperline.db`) and the names the code writes as strings (`exact`, `prefixes`) left out."""
    names = []
    for match in NAME.finditer(text):
        raw, after = match.group(1), text[match.end():match.end() + 1]
        if after in ("-", "/"):  # part of a file or folder name (paperline.egg-info)
            continue
        template = raw.endswith(".") and after in ("<", "{", "*")  # `paperline.metric.<name>`
        name = raw.rstrip(".")
        if name.rsplit(".", 1)[-1] in FILE_EXTENSIONS:
            continue
        if name in exact or any(name.startswith(p) for p in prefixes) or (template and name + "." in prefixes):
            continue  # a tag or another name the code writes as a string
        names.append(name)
    return names


def mentions() -> dict[str, list[str]]:
    """Every dotted name to resolve -> where it is mentioned (file:line)."""
    exact, prefixes = code_names()
    sources = [(path, list(enumerate(path.read_text().splitlines(), 1))) for path in markdown_files()]
    sources += [(path, prose_lines(path)) for path in python_files()]
    found: dict[str, list[str]] = {}
    for path, lines in sources:
        for number, text in lines:
            for name in names_in(text, exact, prefixes):
                found.setdefault(name, []).append(f"{path.relative_to(ROOT)}:{number}")
    return found


RESOLVE = r"""
import importlib, json, sys

def resolve(name):
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        module_name = ".".join(parts[:i])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name and (module_name == error.name or module_name.startswith(error.name + ".")):
                continue  # not a module: the rest is an attribute path
            return f"importing {module_name} failed: {error}"
        except Exception as error:
            return f"importing {module_name} failed: {type(error).__name__}: {error}"
        for j in range(i, len(parts)):
            if not hasattr(obj, parts[j]):
                return f"{'.'.join(parts[:j])} has no attribute {parts[j]!r}"
            obj = getattr(obj, parts[j])
        return None
    return "no such module"

print(json.dumps({name: resolve(name) for name in json.load(sys.stdin)}))
"""


def resolve(names: list[str]) -> dict[str, str | None]:
    """name -> why it does not resolve (None: it does), in a fresh interpreter, so that importing every module
    (torch, MLflow, Prefect) leaves this test process as it was."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", RESOLVE], input=json.dumps(sorted(names)), cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_name_check_finds_stale_names_and_skips_files_and_tags():
    exact, prefixes = code_names()
    line = ("See `paperline.models`, paperline.upstream, `paperline.ops.plots`"
            " and paperline.ml.models.resolve_model_path."
            " Not: .paperline/paperline.db, src/paperline.egg-info, `paperline.status`, `paperline.metric.<name>`, "
            "https://paperline.example.org; paperline_flows.results.")
    names = names_in(line, exact, prefixes)
    assert names == ["paperline.models", "paperline.upstream", "paperline.ops.plots",
                     "paperline.ml.models.resolve_model_path", "paperline_flows.results"]
    errors = resolve(names)
    assert errors["paperline.models"] and errors["paperline.upstream"] and errors["paperline.ops.plots"]
    assert errors["paperline_flows.results"] is None and errors["paperline.ml.models.resolve_model_path"] is None


def test_dotted_names_in_docs_and_docstrings_resolve():
    found = mentions()
    assert "paperline.ops.registry.policy" in found or "paperline.ops.registry.policy.decide" in found  # it scans
    errors = resolve(list(found))
    failing = [f"{where} {name}: {errors[name]}" for name in sorted(errors) if errors[name]
               for where in found[name]]
    assert not failing, "dotted names that do not resolve:\n" + "\n".join(failing)
