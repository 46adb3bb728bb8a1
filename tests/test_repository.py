"""The repository stays small to clone: no tracked file over 5 MB outside zoo/ and outside
runs still in progress (a file named IN_PROGRESS in the run folder or a folder above it).

Finished runs keep their records, alphas.jsonl and figures; their weights and checkpoints
are deleted (studies/README.md, "What the repository keeps"). No TensorFlow here.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
LIMIT_BYTES = 5_000_000  # 5 MB
IN_PROGRESS = "IN_PROGRESS"
EXEMPT_TOP = ("zoo",)


def oversized_files(paths: Iterable[str], root: str | Path,
                    limit: int = LIMIT_BYTES) -> list[tuple[str, int]]:
    """``(path, bytes)`` of the files among ``paths`` (relative to ``root``, as ``git ls-files``
    prints them) larger than ``limit`` on disk, except those under a top-level ``zoo/`` and
    those with a file named ``IN_PROGRESS`` in their folder or a folder above it (up to
    ``root``). Paths missing on disk (deleted, not yet committed) are skipped."""
    root = Path(root)
    marked: dict[Path, bool] = {}

    def in_progress(folder: Path) -> bool:
        if folder not in marked:
            here = (root / folder / IN_PROGRESS).is_file()
            marked[folder] = here or (folder != Path(".") and in_progress(folder.parent))
        return marked[folder]

    found = []
    for path in paths:
        relative = Path(path)
        if relative.parts and relative.parts[0] in EXEMPT_TOP:
            continue
        full = root / relative
        if not full.is_file():
            continue
        size = full.stat().st_size
        if size > limit and not in_progress(relative.parent):
            found.append((relative.as_posix(), size))
    return sorted(found)


def _message(found: list[tuple[str, int]]) -> str:
    listing = "\n".join(f"  {path} ({size / 1e6:.1f} MB)" for path, size in found)
    return (f"{len(found)} tracked file(s) over {LIMIT_BYTES / 1e6:.0f} MB outside zoo/ and "
            f"outside runs in progress:\n{listing}\nFix: delete finished runs' weights and "
            "checkpoints (git rm; keep the records, alphas.jsonl and figures), or, while a "
            f"run is still going, put an empty file named {IN_PROGRESS} in its run folder "
            "and delete it with the weights when the run is done.")


def _tracked_files(root: Path) -> list[str]:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    inside = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel"],
                            capture_output=True, text=True)
    if inside.returncode != 0 or Path(inside.stdout.strip()).resolve() != root.resolve():
        pytest.skip("not a git checkout of the repository")
    listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z"], capture_output=True,
                            check=True)
    return [p for p in listed.stdout.decode("utf-8", "surrogateescape").split("\0") if p]


def test_no_tracked_file_over_5_mb_outside_zoo_and_runs_in_progress():
    found = oversized_files(_tracked_files(REPO_ROOT), REPO_ROOT)
    assert not found, _message(found)


def _write(root: Path, path: str, size: int) -> str:
    full = root / path
    full.parent.mkdir(parents=True, exist_ok=True)
    full.write_bytes(b"\0" * size)
    return path


def test_the_rule_on_hand_made_folders(tmp_path):
    big, small = 2_000, 500
    paths = [
        _write(tmp_path, "studies/results/runs/done/trained.keras", big),        # offends
        _write(tmp_path, "studies/results/runs/done/alphas.jsonl", small),       # small
        _write(tmp_path, "studies/results/runs/going/checkpoint.npz", big),      # marked
        _write(tmp_path, "studies/results/runs/going/IN_PROGRESS", 0),
        _write(tmp_path, "studies/results/queue/IN_PROGRESS", 0),                # marks below
        _write(tmp_path, "studies/results/queue/run-a/deep/model.keras", big),
        _write(tmp_path, "zoo/entry/model.keras", big),                          # zoo/ exempt
        _write(tmp_path, "docs/zoo/picture.png", big),                           # not top zoo/
        _write(tmp_path, "benchmarks/exactly.npz", 1_000),                       # = limit
    ]
    paths.append("studies/results/runs/deleted/trained.keras")  # tracked, gone from disk
    found = oversized_files(paths, tmp_path, limit=1_000)
    assert found == [("docs/zoo/picture.png", big),
                     ("studies/results/runs/done/trained.keras", big)]
    message = _message(found)
    assert "studies/results/runs/done/trained.keras (0.0 MB)" in message
    assert "delete finished runs' weights and checkpoints" in message
    assert "keep the records, alphas.jsonl and figures" in message
    # the marker marks its own folder and those below, never a sibling or a folder above
    (tmp_path / "studies/results/runs/going/IN_PROGRESS").unlink()
    _write(tmp_path, "studies/results/runs/going/sub/IN_PROGRESS", 0)
    found = oversized_files(paths, tmp_path, limit=1_000)
    assert ("studies/results/runs/going/checkpoint.npz", big) in found
    # a marker at the root marks everything
    _write(tmp_path, "IN_PROGRESS", 0)
    assert oversized_files(paths, tmp_path, limit=1_000) == []
