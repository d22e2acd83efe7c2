"""Numbers for the reports: percentiles (linear interpolation between the closest ranks, as numpy's default),
markdown tables and CSV files."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) of ``values``, interpolated linearly between the closest ranks; None when
    there are no values. For 1, 2, 3, 4: p50 = 2.5, p90 = 3.7."""
    if not 0 <= q <= 100:
        raise ValueError(f"a percentile is between 0 and 100, not {q}")
    return float(np.percentile(values, q)) if len(values) else None


def percentiles(values: Sequence[float], qs: Iterable[float] = (50, 90, 95, 99)) -> dict[str, float | None]:
    """{"p50": ..., "p90": ...} of ``values`` (None each when there are none)."""
    return {f"p{q:g}": percentile(values, q) for q in qs}


def fmt(value: float | None, digits: int = 1) -> str:
    """A number for a table: fixed ``digits`` decimals, or "-" for None or NaN."""
    if value is None or value != value:
        return "-"
    return f"{value:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str = "") -> str:
    """A markdown table. ``align`` has one letter a column, "l" or "r" (default: the first column left, the
    others right); cells are written with str()."""
    align = align or "l" + "r" * (len(header) - 1)
    if len(align) != len(header):
        raise ValueError(f"align {align!r} has {len(align)} letters for {len(header)} columns")
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = [markdown_row(header), markdown_row(rule)]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"a row of {len(row)} cells in a table of {len(header)} columns: {row}")
        lines.append(markdown_row(row))
    return "\n".join(lines)


def markdown_row(cells: Sequence[Any]) -> str:
    """One row of a markdown table (for tables printed a row at a time, after ``markdown_table(header, [])``)."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Rows of dicts as CSV, the first row's keys as the header; an empty file for no rows."""
    path = Path(path)
    if not rows:
        path.write_text("")
        return
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file with a header, as dicts of strings."""
    with Path(path).open(newline="") as f:
        return list(csv.DictReader(f))
