"""One-line errors at the command-line boundary (the ``clipbench`` CLI and every DVC stage shim).

Any :class:`~clipbench.errors.ClipbenchError`, and the known operating-system, image, YAML and encoding errors
that escape the library, become one ``error: ...`` line naming the file or key and the fix, and exit status 2.
``--debug`` re-raises instead, for the full traceback.
"""

from __future__ import annotations

import json

import yaml
from PIL import Image, UnidentifiedImageError

from clipbench.errors import ClipbenchError

EXIT_STATUS = 2
KNOWN_ERRORS: tuple[type[BaseException], ...] = (
    ClipbenchError,
    OSError,
    UnicodeError,
    json.JSONDecodeError,
    yaml.YAMLError,
    UnidentifiedImageError,
    Image.DecompressionBombError,
)
_FIX = {
    OSError: "check that the path exists, is the right kind (file or folder) and is readable",
    UnicodeError: "save the file as UTF-8",
    json.JSONDecodeError: "the JSON file is damaged: re-run the stage that writes it (`dvc repro`)",
    yaml.YAMLError: "fix the YAML syntax",
    UnidentifiedImageError: "replace the image file",
    Image.DecompressionBombError: "replace the image or raise `max_image_pixels` in params.yaml",
}


def one_line(exc: BaseException) -> str:
    """``exc`` as one line: its message (whitespace collapsed) and, for a non-clipbench error, its kind and fix."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, ClipbenchError):
        return message
    fix = next((text for kind, text in _FIX.items() if isinstance(exc, kind)), "")
    return f"{message} ({type(exc).__name__}); {fix}" if fix else f"{message} ({type(exc).__name__})"
