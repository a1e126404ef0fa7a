"""The errors raised for malformed input files and wrong configuration values."""

from __future__ import annotations

import os


class DataFormatError(ValueError):
    """A line of an input file does not have the expected format.

    The message names the file, the 1-based line number (when the problem belongs to one line) and what
    was expected, e.g. ``run.trec, line 7: expected 6 whitespace-separated columns
    'qid Q0 pid rank score tag', got 5``.

    Args:
        path (`str` or `os.PathLike`):
            The file being read.
        line_number (`int`, *optional*):
            1-based number of the offending line; `None` for problems of the whole file.
        reason (`str`):
            What was expected and what was found.
        unit (`str`, *optional*, defaults to `"line"`):
            What `line_number` counts: `"line"` for text files, `"row"` for Parquet files.
    """

    def __init__(self, path: str | os.PathLike, line_number: int | None, reason: str, unit: str = "line"):
        self.path = str(path)
        self.line_number = line_number
        self.reason = reason
        self.unit = unit
        location = self.path if line_number is None else f"{self.path}, {unit} {line_number}"
        super().__init__(f"{location}: {reason}")

    def __reduce__(self):
        return (type(self), (self.path, self.line_number, self.reason, self.unit))


class ConfigError(ValueError):
    """A configuration value (a training option, or the training data it names) is wrong; raised before any
    training starts."""
