"""One exception type for bad input, so every failure names the file, the field and the row."""
from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad input: says where (file, then line of a text file or row of a table, then column) and what."""

    def __init__(self, path: str | Path, problem: str, *, column: str | None = None,
                 line: int | None = None, row: int | None = None):
        self.path, self.problem, self.column, self.line, self.row = str(path), problem, column, line, row
        where = [self.path]
        if line is not None:
            where.append(f"line {line}")
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column '{column}'")
        super().__init__(f"{', '.join(where)}: {problem}")
