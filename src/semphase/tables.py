"""Tables as plain text cells: built by the library, laid out by whoever shows them.

A :class:`Table` is a title, column headers, rows of already formatted strings and optional notes. The
CLI renders them with rich (:func:`semphase.cli.common.print_tables`), the benchmark report as Markdown and
HTML, so every place shows the same numbers and the library never prints.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Table:
    """One table: ``rows`` hold as many formatted cells as ``headers``; ``notes`` are lines shown after."""

    key: str
    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str | None = None
    #: Columns aligned left (text); the others are numbers, aligned right.
    text_columns: tuple[str, ...] = ("variant", "class", "file", "status", "size", "tile", "metric")
    #: Lines shown under the table (a caption, a total).
    notes: list[str] = field(default_factory=list)

    def alignments(self) -> list[str]:
        """``"left"`` or ``"right"`` per column: the first column and text columns left."""
        return ["left" if i == 0 or h in self.text_columns else "right" for i, h in enumerate(self.headers)]
