"""Packaging: import behaviour, the TensorFlow check, console scripts, README and CI."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from aca_keras import _backend

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def test_import_is_cheap_and_lazy():
    code = ("import sys, aca_keras; "
            "assert 'tensorflow' not in sys.modules, 'TensorFlow imported at import time'; "
            "assert 'keras' not in sys.modules; "
            "print(aca_keras.__version__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    assert out.stdout.strip() == tomllib.loads((ROOT / "pyproject.toml").read_text())[
        "project"]["version"]


def test_missing_tensorflow_gives_a_clear_import_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "tensorflow" else real(name, *a))
    with pytest.raises(ImportError, match=r"aca-keras\[cpu\].*aca-keras\[gpu\]"):
        _backend.require_tensorflow()


def test_another_keras_backend_is_refused(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    with pytest.raises(ImportError, match="KERAS_BACKEND"):
        _backend.require_tensorflow()


def test_tensorflow_comes_only_through_extras():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any(d.lower().startswith("tensorflow") and "datasets" not in d.lower()
                   for d in project["dependencies"])
    assert project["optional-dependencies"]["cpu"] == ["tensorflow-cpu>=2.16"]
    assert project["optional-dependencies"]["gpu"] == ["tensorflow[and-cuda]>=2.16"]
    assert any(d.startswith("tf2onnx>=1.17") for d in project["dependencies"])


@pytest.mark.parametrize("script", ["aca-search", "aca-train", "aca-export", "aca-zoo"])
def test_console_scripts_answer_help(script, capsys):
    target = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"][script]
    module, function = target.split(":")
    main = getattr(importlib.import_module(module), function)
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def _quickstart_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", section, re.S)]


def test_readme_quickstart_has_two_commands_and_ci_runs_the_test_one():
    commands = _quickstart_commands()
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    main_job, tests = commands
    assert "aca-search --dataset digits" in main_job and "aca-train" in main_job
    test_command = tests.split("&&")[-1].strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "set -euo pipefail" in ci
    assert test_command in ci, f"CI does not run the README's test command {test_command!r}"
    readme_extras = set(re.search(r"\.\[([a-z,]+)\]", tests).group(1).split(","))
    ci_extras = set(re.search(r"pip install[^\n]*\.\[([a-z,]+)\]", ci).group(1).split(","))
    assert readme_extras <= ci_extras  # CI installs at least what the README installs
