"""One error base for everything dpo_hub refuses: catch ``DpoHubError`` to catch them all.

Each subclass also derives from the built-in exception a caller would expect (``ValueError`` for bad
values, ``OSError`` for files and sources, ``RuntimeError`` for the Hub), so existing ``except`` clauses
keep working. Messages name the key, file, row or repo at fault and what to do; the CLI prints them as
one ``error: ...`` line.
"""

from __future__ import annotations


class DpoHubError(Exception):
    """Base of every error dpo_hub raises on purpose."""


class RecipeError(DpoHubError, ValueError):
    """A recipe key or value that cannot be used; the message names it and what to do."""


class DataError(DpoHubError, ValueError):
    """A preference source that cannot be used as asked; the message says what to change."""


class SourceUnavailableError(DpoHubError, OSError):
    """An explicitly named model, tokenizer or dataset that cannot be fetched (never silently replaced)."""


class OutputError(DpoHubError, OSError):
    """An output folder that cannot be written as asked."""


class OutputExistsError(OutputError, FileExistsError):
    """The output folder already holds a finished run."""


class CompareError(DpoHubError, ValueError):
    """A comparison that cannot be made as asked (no adapter, nothing to compare, a judge that is no reward
    model)."""


class RunInterrupted(DpoHubError):
    """Training stopped on request (Ctrl-C) after writing a checkpoint; the message says how to resume."""


class HubError(DpoHubError, RuntimeError):
    """A push or pull that cannot proceed; the message says why and what to do."""


class MergeError(DpoHubError, ValueError):
    """A merge that cannot be made as asked (a dtype dpo_hub does not write, a folder that is no merged
    model)."""


class ExportError(DpoHubError, RuntimeError):
    """A GGUF export that cannot be made or fails its own check (architecture, type, converter, disk,
    verification); nothing half-written is left."""
