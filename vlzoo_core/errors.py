"""User-facing errors. Each carries one readable line; the CLI prints it and exits with code 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class VlzooError(Exception):
    """Base class for every error caused by user input (names, configs, files, plugins)."""


class UnknownNameError(VlzooError, KeyError):
    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        self.kind, self.name = kind, name
        close = difflib.get_close_matches(name, sorted(set(known)), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        super().__init__(f"unknown {kind} {name!r}{hint}")

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.args[0]


class DuplicateNameError(VlzooError):
    pass


class ConfigError(VlzooError):
    pass


class LoraRuleError(VlzooError):
    pass


class CheckpointError(VlzooError):
    pass


class InputError(VlzooError, ValueError):
    """Bad data handed to a processor, such as an unreadable image or an empty query, at a given position."""

    def __init__(self, item: str, index: int, reason: str) -> None:
        self.item, self.index, self.reason = item, index, reason
        super().__init__(f"{item} {index}: {reason}")

    def shifted(self, offset: int) -> InputError:
        """The same error with the position counted from `offset` (for items processed in batches)."""
        return InputError(self.item, self.index + offset, self.reason)


def describe_validation_error(exc: Exception, where: str = "") -> str:
    """Render a pydantic ValidationError as one line that names each failing field path."""
    errors = getattr(exc, "errors", None)
    if errors is None:
        return f"{where}: {exc}" if where else str(exc)
    parts = []
    for err in errors():
        path = ".".join(str(p) for p in (where, *err["loc"]) if p != "")
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        parts.append(f"{path or '<root>'}: {message}")
    return "; ".join(parts)


class SearchIndexError(VlzooError):
    """A problem with an index folder, or with a request made of one (a bad k, an empty query, another model)."""
