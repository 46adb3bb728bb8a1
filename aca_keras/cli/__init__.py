"""Thin command-line front ends over the library functions.

Each ``aca-*`` command parses its arguments, calls one library function, and turns the
library's typed errors into a one-line message and a non-zero exit status. The library's
messages speak Python (``data_dir=``, ``resume=True``); :func:`cli_message` rewrites them
in terms of the command's own flags (``--data-dir``, ``--resume``), so each command's errors
name its own options, while the Python API keeps its Pythonic messages.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import warnings
from collections.abc import Callable, Sequence

from aca_keras.errors import AcaError


def quiet_startup() -> None:
    """Silence TensorFlow's start-up log lines and absl's Python warnings (for the CLIs).

    Sets ``TF_CPP_MIN_LOG_LEVEL=2`` (unless set), imports TensorFlow with the process's
    standard error redirected to ``/dev/null`` (its C++ start-up lines are written before
    any log level applies) and raises absl's Python log level to ``ERROR`` (TFDS warns about
    missing ``~/tensorflow_datasets/...`` folders through it). ``ACA_DEBUG=1`` keeps
    everything.
    """
    if os.environ.get("ACA_DEBUG"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" not in sys.modules:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no real standard error (embedded interpreters)
            saved = None
        if saved is not None:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 2)
        try:
            import tensorflow  # noqa: F401  (the point: imported here, with stderr redirected)
        except ImportError:
            pass  # the command reports it (aca_keras._backend) with the fix
        finally:
            if saved is not None:
                os.dup2(saved, 2)
                os.close(saved)
                os.close(null)
    logging.getLogger("absl").setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging  # comes with TensorFlow, imported above

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # pragma: no cover - absl comes with TensorFlow
        pass


# "resume=True (CLI: --resume)", "overwrite=True (aca-zoo publish --overwrite)",
# "(resume=True, CLI --resume)": the library already names the flag; keep only the flag
_NAMED_FLAG = re.compile(
    r"\b[\w.]+=[\w'\"]*\s*\((?:CLI:?\s*|aca-\w+(?: \w+)? )(--[^)]*)\)")
_NAMED_FLAG_INSIDE = re.compile(r"\([\w.]+=[\w'\"]*,\s*CLI:?\s*(--[^)]*)\)")
_CLI_HINT = re.compile(r"\(CLI:?\s*(--[^)]*)\)")
# a Python call such as tfds.builder('cifar10', data_dir=...): left as it is
_CALL = re.compile(r"\b[A-Za-z_][\w.]*\((?:[^()]|\([^()]*\))*\)")
_KWARG = re.compile(r"\b([a-z][a-z0-9_]*)=((?:True|False|None)\b|'[^']*'|\"[^\"]*\"|"
                    r"[\w.\-/]+)?")
_FIELD = re.compile(r"\b([a-z][a-z0-9]*(?:_[a-z0-9]+)+)\b")
_LEADING = re.compile(r"^([a-z][a-z0-9_]*) (must|needs|is|was)\b")

# phrases of data-source errors that only make sense in Python
_DATA_PHRASES = (
    ("numpy arrays load((x, y)), ", ""),
    ("or pass numpy arrays (x, y), ", "or pass "),
    ("the bundled offline set load('digits')", "the bundled offline set (--dataset digits)"),
    (", or a tf.data.Dataset of (image, label) pairs", ""),
)


def _flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    out: dict[str, argparse.Action] = {}
    actions = list(parser._actions)
    for action in parser._actions:  # sub-commands' options too
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                actions.extend(sub._actions)
    for action in actions:
        longs = [s for s in action.option_strings if s.startswith("--")]
        if longs and action.dest not in out and action.dest != "help":
            out[action.dest] = action
    return out


def cli_message(message: str, parser: argparse.ArgumentParser | None,
                phrases: Sequence[tuple[str, str]] = ()) -> str:
    """``message`` with the Python keyword arguments it names replaced by ``parser``'s
    flags: ``data_dir=`` -> ``--data-dir``, ``download=False`` -> ``--no-download``,
    ``resume=True`` -> ``--resume``, ``epochs=10`` -> ``--epochs 10``; a leading
    ``cells must ...`` -> ``--cells must ...``. Python calls in the message are kept.
    ``phrases``: extra ``(old, new)`` replacements, applied first."""
    for old, new in (*phrases, *_DATA_PHRASES):
        message = message.replace(old, new)
    message = _NAMED_FLAG.sub(r"\1", message)
    message = _NAMED_FLAG_INSIDE.sub(r"(\1)", message)
    message = _CLI_HINT.sub(r"(\1)", message)
    if parser is None:
        return message
    flags = _flags(parser)

    def flag_for(name: str, value: str | None) -> str | None:
        if value == "False" and f"no_{name}" in flags:
            return flags[f"no_{name}"].option_strings[-1]
        action = flags.get(name)
        if action is None:
            return None
        option = next(s for s in action.option_strings if s.startswith("--"))
        if value in (None, "", "True", "None", "...") or action.nargs == 0:
            if action.nargs != 0 and value == "True" and action.metavar:
                return f"{option} {action.metavar}"
            return option
        return f"{option} {value.strip(chr(39) + chr(34))}"

    def keyword(match: re.Match) -> str:
        replaced = flag_for(match.group(1), match.group(2))
        return match.group(0) if replaced is None else replaced

    def field(match: re.Match) -> str:
        replaced = flag_for(match.group(1), None)
        return match.group(0) if replaced is None else replaced

    # translate outside Python calls only
    pieces, last = [], 0
    for call in _CALL.finditer(message):
        pieces.append((message[last:call.start()], True))
        pieces.append((call.group(0), False))
        last = call.end()
    pieces.append((message[last:], True))
    out = []
    for text, translate in pieces:
        if translate:
            text = _KWARG.sub(keyword, text)
            text = _FIELD.sub(field, text)
        out.append(text)
    message = "".join(out)
    return _LEADING.sub(lambda m: (flag_for(m.group(1), None) or m.group(1)) + " " + m.group(2),
                        message)


def _one_line_warning(prog: str, parser, phrases):
    def show(message, category, filename, lineno, file=None, line=None):
        text = " ".join(str(message).split())
        print(f"{prog}: warning: {cli_message(text, parser, phrases)}",
              file=file or sys.stderr)
    return show


def run_cli(body: Callable[[], int], prog: str | None = None,
            parser: argparse.ArgumentParser | None = None,
            phrases: Sequence[tuple[str, str]] = ()) -> int:
    """Run ``body``; print expected errors as ``prog: error: message`` and return 1 (2 for
    an interrupt) instead of a traceback. Set ``ACA_DEBUG=1`` to see tracebacks.

    With ``parser``, messages (errors and warnings, shown as ``prog: warning: ...``) name
    the command's flags instead of Python keyword arguments (:func:`cli_message`)."""
    prog = prog or os.path.basename(sys.argv[0]) or "aca"
    quiet_startup()
    previous = warnings.showwarning
    warnings.showwarning = _one_line_warning(prog, parser, phrases)
    try:
        return body()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 2
    except (AcaError, ValueError, FileNotFoundError, PermissionError, ImportError) as error:
        if os.environ.get("ACA_DEBUG"):
            raise
        text = " ".join(str(error).split())
        print(f"{prog}: error: {cli_message(text, parser, phrases)}", file=sys.stderr)
        return 1
    finally:
        warnings.showwarning = previous


# aca_keras.distribute.get_strategy's names, spelled here: that module imports TensorFlow,
# which the commands import only after quiet_startup()
STRATEGIES = ("default", "mirrored", "multiworker")


def add_strategy_argument(parser: argparse.ArgumentParser) -> None:
    """``--strategy`` of ``aca-search`` and ``aca-train``."""
    parser.add_argument("--strategy", choices=STRATEGIES, default="default",
                        help="devices: 'mirrored' (all GPUs of this machine), 'multiworker' "
                             "(several machines, set TF_CONFIG on each); --batch-size stays "
                             "the global batch (default: default, one device; see "
                             "docs/scaling.md)")


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Adds ``(default: X)`` to an option's help unless the help already states its default
    or there is none to state (``None``, ``False``)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if ("default" in text or action.default in (None, False, argparse.SUPPRESS)
                or not action.option_strings):
            return text
        return f"{text} (default: %(default)s)"
