"""The zoo registry: where entries are found, scanned lazily and cached.

Search path, first match wins (so a private zoo can override a bundled entry of the same
name): the ``zoo_dir=`` argument, then the directories of ``ACA_ZOO_PATH``
(``os.pathsep``-separated), then directories added with :func:`register_zoo_dir`, then the
zoo bundled with aca_keras. Nothing is read at import time; each directory is scanned when
first needed, and an entry is re-read when its ``entry.json`` changes.
"""

from __future__ import annotations

import difflib
import os
import threading
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aca_keras.errors import ZooError
from aca_keras.zoo._entry import (
    ENTRY_FILE,
    EntryInfo,
    UnknownEntryError,
    bundled_zoo_dir,
    read_entry,
)

ENV_VAR = "ACA_ZOO_PATH"

_lock = threading.Lock()
_registered: list[Path] = []
# entry.json path -> ((mtime_ns, size), EntryInfo or ZooError)
_cache: dict[Path, tuple[tuple[int, int], EntryInfo | ZooError]] = {}


@dataclass(frozen=True)
class ZooLocation:
    """A directory on the zoo search path and where it came from."""

    path: Path
    origin: str  # "argument", "ACA_ZOO_PATH", "registered" or "bundled"

    @property
    def bundled(self) -> bool:
        return self.origin == "bundled"


def register_zoo_dir(path: str | os.PathLike) -> Path:
    """Add a zoo directory to the search path of this process (after ``ACA_ZOO_PATH``).

    Raises:
        ZooError: ``path`` is not a directory.
    """
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ZooError(f"The zoo directory {p} does not exist.")
    with _lock:
        if p.resolve() not in [r.resolve() for r in _registered]:
            _registered.append(p)
    return p


def search_path(zoo_dir: str | os.PathLike | Sequence[str | os.PathLike] | None = None
                ) -> list[ZooLocation]:
    """The zoo directories searched, in priority order (duplicates removed).

    Raises:
        ZooError: a ``zoo_dir`` argument that is not a directory (directories named in
            ``ACA_ZOO_PATH`` that do not exist are skipped with a warning).
    """
    locations: list[ZooLocation] = []
    if zoo_dir is not None:
        given = [zoo_dir] if isinstance(zoo_dir, (str, os.PathLike)) else list(zoo_dir)
        for d in given:
            p = Path(d).expanduser()
            if not p.is_dir():
                raise ZooError(f"The zoo directory {p} does not exist; pass an existing "
                               "directory as zoo_dir.")
            locations.append(ZooLocation(p, "argument"))
    for part in os.environ.get(ENV_VAR, "").split(os.pathsep):
        if not part.strip():
            continue
        p = Path(part.strip()).expanduser()
        if p.is_dir():
            locations.append(ZooLocation(p, ENV_VAR))
        else:
            warnings.warn(f"{ENV_VAR} names {p}, which is not a directory; it is skipped.",
                          stacklevel=3)
    with _lock:
        locations.extend(ZooLocation(p, "registered") for p in _registered)
    bundled = bundled_zoo_dir()
    if bundled is not None:
        locations.append(ZooLocation(bundled, "bundled"))
    bundled_key = bundled.resolve() if bundled is not None else None
    seen: set[Path] = set()
    unique = []
    for loc in locations:
        key = loc.path.resolve()
        if key not in seen:
            seen.add(key)
            # the bundled zoo named again (zoo_dir=, ACA_ZOO_PATH) is still the bundled zoo
            unique.append(ZooLocation(loc.path, "bundled") if key == bundled_key else loc)
    return unique


def entry_dirs(location: ZooLocation) -> list[Path]:
    """Entry folders of one zoo directory (sub-folders holding an ``entry.json``), sorted."""
    try:
        children = sorted(location.path.iterdir())
    except OSError as exc:
        raise ZooError(f"Cannot read the zoo directory {location.path}: {exc}") from None
    return [c for c in children if not c.name.startswith((".", "_"))
            and (c / ENTRY_FILE).is_file()]


def read_cached(entry_dir: Path, location: ZooLocation) -> EntryInfo:
    """The entry in ``entry_dir``, re-read only when its ``entry.json`` changed.

    Raises:
        ZooError: the entry is malformed (the error is cached as well).
    """
    path = entry_dir / ENTRY_FILE
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ZooError(f"The zoo entry {entry_dir} has no {ENTRY_FILE}.") from None
    stamp = (stat.st_mtime_ns, stat.st_size)
    key = path.resolve()
    with _lock:
        cached = _cache.get(key)
    if cached is None or cached[0] != stamp:
        try:
            result: EntryInfo | ZooError = read_entry(entry_dir, location.path,
                                                      location.bundled)
        except ZooError as exc:
            result = exc
        with _lock:
            _cache[key] = (stamp, result)
    else:
        result = cached[1]
    if isinstance(result, ZooError):
        raise ZooError(str(result))
    return result


def clear_cache() -> None:
    """Forget every cached entry (they are re-read on next use)."""
    with _lock:
        _cache.clear()


def iter_entries(zoo_dir=None, *, on_error: str = "warn") -> Iterable[EntryInfo]:
    """Every valid entry on the search path, shadowed names removed (first wins).

    Args:
        zoo_dir: extra zoo directories searched first.
        on_error: ``"warn"`` skips a malformed entry with a warning, ``"raise"`` raises its
            :class:`ZooError`.
    """
    seen: set[str] = set()
    for location in search_path(zoo_dir):
        for entry_dir in entry_dirs(location):
            if entry_dir.name in seen:
                continue
            seen.add(entry_dir.name)  # a malformed entry still shadows later ones, as in find
            try:
                entry = read_cached(entry_dir, location)
            except ZooError as exc:
                if on_error == "raise":
                    raise
                warnings.warn(f"Skipping a malformed zoo entry: {exc}", stacklevel=3)
                continue
            yield entry


def find(name: str, zoo_dir=None) -> EntryInfo:
    """The entry called ``name`` (first on the search path).

    Raises:
        UnknownEntryError: no entry has this name (the message lists the known ones).
        ZooError: the entry exists but is malformed.
    """
    if not isinstance(name, str) or not name:
        raise UnknownEntryError(f"A zoo entry name must be a non-empty string, got {name!r}.")
    locations = search_path(zoo_dir)
    for location in locations:
        entry_dir = location.path / name
        if (entry_dir / ENTRY_FILE).is_file():
            return read_cached(entry_dir, location)
    known = sorted({d.name for loc in locations for d in entry_dirs(loc)})
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    where = ", ".join(str(loc.path) for loc in locations) or "(no zoo directory)"
    raise UnknownEntryError(
        f"No zoo entry named {name!r}.{hint} Known entries: {', '.join(known) or 'none'} "
        f"(searched {where}; add private zoos with zoo_dir= or {ENV_VAR}).")


def shadowed(name: str, zoo_dir=None) -> list[ZooLocation]:
    """The zoo directories whose entry ``name`` is hidden by an earlier one on the search
    path (empty when the name is not shadowed)."""
    holders = [loc for loc in search_path(zoo_dir) if (loc.path / name / ENTRY_FILE).is_file()]
    return holders[1:]


def describe_location(entry: EntryInfo) -> str:
    """``"bundled"`` or the entry's zoo directory, as shown by ``aca-zoo list``/``info``."""
    return "bundled" if entry.bundled else str(entry.zoo_dir)
