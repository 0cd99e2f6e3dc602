"""Shared argument parsing and error reporting for the stage shims."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from clipbench.boundary import EXIT_STATUS, KNOWN_ERRORS, one_line
from clipbench.config import SuiteConfig, load_suite
from clipbench.data.images import set_max_pixels
from clipbench.errors import ClipbenchWarning
from clipbench.layout import Layout


def parser(doc: str | None, *names: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    for name in names:
        p.add_argument(f"--{name}", required=True)
    return p


def _log_own_warnings() -> None:
    """Show clipbench's warnings as one log line each (Python's display adds the file and a source line)."""
    show = warnings.showwarning

    def log_or_show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, ClipbenchWarning):
            logging.getLogger(category.__module__).warning("%s", message)
        else:
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = log_or_show


def main(body: Callable[[argparse.Namespace, SuiteConfig, Layout], object], p: argparse.ArgumentParser) -> None:
    """Run ``body(args, cfg, layout)``; known errors exit with status 2 and one line (``--debug``: traceback)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for ours in ("clipbench", "stage"):
        logging.getLogger(ours).setLevel(logging.INFO)
    _log_own_warnings()
    args = p.parse_args()
    try:
        cfg = load_suite(args.params)
        cfg.runtime.apply()
        set_max_pixels(cfg.max_image_pixels)
        result = body(args, cfg, Layout())
    except KNOWN_ERRORS as exc:
        if args.debug:
            raise
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(EXIT_STATUS)
    if result is not None:
        logging.getLogger("stage").info("%s", describe(result))


def describe(result: object) -> str:
    """One readable line for what a stage returned: counts as ``key=value``, paths relative and summarised."""
    if isinstance(result, dict):
        return ", ".join(f"{k}={describe(v)}" for k, v in result.items())
    if isinstance(result, (list, tuple)) and result and all(isinstance(p, Path) for p in result):
        parents = sorted({str(p.parent) for p in result})
        return f"wrote {len(result)} files in {', '.join(parents)}"
    if isinstance(result, float):
        return f"{result:.4g}"
    return f"wrote {result}" if isinstance(result, Path) else str(result)
