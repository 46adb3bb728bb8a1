"""The documentation: every CLI and module is covered, the generated CLI help works, the
README links to the docs and notebooks, and ``mkdocs build --strict`` passes."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _hooks():
    spec = importlib.util.spec_from_file_location("aca_docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _nav_pages() -> set[str]:
    return set(re.findall(r"([\w/.-]+\.md)", (ROOT / "mkdocs.yml").read_text()))


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert pages == _nav_pages()


def test_every_public_module_has_an_api_reference_page():
    """Every public module (and the zoo package, whose API is its __init__) has a page
    ``docs/reference/<dotted name>.md`` rendering it, listed in the navigation."""
    package = ROOT / "aca_keras"
    modules = {".".join(p.relative_to(package).with_suffix("").parts)
               for p in package.rglob("*.py")
               if not p.name.startswith("_") and p.relative_to(package).parts[0] != "cli"}
    modules.add("zoo")
    nav = (ROOT / "mkdocs.yml").read_text()
    for name in sorted(modules):
        page = DOCS / "reference" / f"{name}.md"
        assert page.is_file(), f"aca_keras.{name} has no page docs/reference/{name}.md"
        assert f"::: aca_keras.{name}" in page.read_text()
        assert f"reference/{name}.md" in nav, f"reference/{name}.md is not in mkdocs.yml"


def test_every_command_has_its_generated_help_in_the_cli_guide():
    table = (ROOT / "pyproject.toml").read_text().split("[project.scripts]", 1)[1]
    scripts = re.findall(r"^([a-z][\w-]*)\s*=", table.split("\n[", 1)[0], re.M)
    assert "aca-search" in scripts and "aca-zoo" in scripts
    guide = (DOCS / "guide" / "cli.md").read_text()
    hooks = _hooks()
    for command in scripts:
        assert f"<!-- cli-help: {command} -->" in guide, command
        text = hooks.cli_help(command)
        assert text.startswith(f"usage: {command}") and "--help" in text
    expanded = hooks.on_page_markdown("<!-- cli-help: aca-zoo publish -->", None, None, None)
    assert expanded.startswith("```text\nusage: aca-zoo publish") and "--name NAME" in expanded


def test_the_hook_tidies_sphinx_roles():
    html = "<p>a :class:<code>~aca_keras.derived.DerivedNetwork</code> and " \
           ":func:<code>aca_keras.search</code>::</p>"
    out = _hooks().on_page_content(html, None, None, None)
    assert out == "<p>a <code>DerivedNetwork</code> and <code>aca_keras.search</code>:</p>"


def test_readme_links_to_the_docs_and_the_notebooks():
    readme = (ROOT / "README.md").read_text()
    for target in ("docs/index.md", "docs/guide/cli.md", "docs/guide/tuning.md",
                   "notebooks/01_quickstart.ipynb", "notebooks/02_bring_your_own_data.ipynb",
                   "notebooks/03_zoo.ipynb"):
        assert f"]({target})" in readme, target
        assert (ROOT / target).is_file(), target


def test_concept_pictures_are_committed():
    text = (DOCS / "concepts.md").read_text()
    pictures = re.findall(r"\]\((img/[\w.]+\.png)\)", text)
    assert len(pictures) >= 2
    for picture in pictures:
        assert (DOCS / picture).stat().st_size > 10_000, picture


def test_mkdocs_build_is_strictly_clean(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",  # no --quiet: it
         str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True,  # stops --strict
        timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "reference" / "tuning.tuner" / "index.html").is_file()
