"""MkDocs hooks of the aca_keras documentation (``hooks:`` in ``mkdocs.yml``).

* ``<!-- cli-help: aca-search -->`` (or ``aca-zoo publish``, ...) in a page is replaced by the
  ``--help`` text of that command, generated from its argparse parser at build time, so the
  option lists in the guide cannot drift from the code.
* Docstrings are written with Sphinx-style roles (``:class:`~a.b.C```); in the rendered API
  reference the role prefix is dropped and ``~`` shortens the name to its last part, and a
  reStructuredText ``::`` ending a paragraph before a code block becomes ``:``.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import re

_MARKER = re.compile(r"<!--\s*cli-help:\s*([a-z-]+)((?:\s+[a-z-]+)?)\s*-->")
_COMMANDS = {"aca-search": "aca_keras.cli.search", "aca-train": "aca_keras.cli.train",
             "aca-export": "aca_keras.cli.export", "aca-zoo": "aca_keras.cli.zoo"}
_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|exc|data|obj|const):"
                   r"<code>(~?)([^<]*)</code>")
_WIDTH = "92"


def _parser(command: str):
    module = importlib.import_module(_COMMANDS[command])
    factory = getattr(module, "build_parser", None) or module._parser  # aca-export: _parser
    return factory()


def cli_help(command: str, subcommand: str | None = None) -> str:
    """The ``--help`` text of ``command`` (optionally of one of its sub-commands)."""
    if command not in _COMMANDS:
        raise ValueError(f"unknown command {command!r} in a cli-help marker")
    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = _WIDTH  # argparse wraps to the terminal width
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            _parser(command).parse_args([subcommand, "--help"] if subcommand else ["--help"])
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous
    return out.getvalue().rstrip()


def on_page_markdown(markdown, page, config, files):
    """Expand the ``cli-help`` markers."""

    def expand(match: re.Match) -> str:
        text = cli_help(match.group(1), match.group(2).strip() or None)
        return f"```text\n{text}\n```"

    return _MARKER.sub(expand, markdown)


def on_page_content(html, page, config, files):
    """Tidy reStructuredText leftovers of the docstrings in the rendered HTML."""
    html = _ROLE.sub(lambda m: "<code>" + (m.group(2).rsplit(".", 1)[-1] if m.group(1)
                                           else m.group(2)) + "</code>", html)
    return html.replace("::</p>", ":</p>")
