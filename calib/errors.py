"""Errors a user sees as one plain line (the CLI prints them without a traceback)."""

from __future__ import annotations


class TiebreakError(Exception):
    """An error with a message meant for the user."""


class InputError(TiebreakError):
    """Bad input: names the file, the row and the column."""

    def __init__(self, file: str, row: int | None, column: str | None, message: str):
        self.file, self.row, self.column, self.message = str(file), row, column, message
        where = [self.file]
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {message}")
