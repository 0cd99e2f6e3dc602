"""Exceptions and warnings raised at clipbench's boundaries; each message names the file, key or value and the fix."""


class ClipbenchError(Exception):
    """Base class for every error clipbench raises on purpose."""


class ConfigError(ClipbenchError, ValueError):
    """A configuration value or key is invalid (names the key, the value and what is accepted)."""


class UnknownNameError(ClipbenchError, KeyError):
    """A method, dataset or backbone name is not registered (lists the valid names)."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class DataError(ClipbenchError):
    """A dataset, split manifest or feature file is missing or malformed (names the file and the stage to run)."""


class NotApplicable(ClipbenchError):
    """A method cannot produce predictions for this evaluation (e.g. class-specific weights on unseen classes)."""


class ClipbenchWarning(UserWarning):
    """Base class for clipbench's own warnings; the stage shims show each as one log line."""
