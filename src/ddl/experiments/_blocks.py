"""A report as a list of blocks: what ``ddl.experiments.report`` renders as Markdown and HTML and
what the sections of other modules (``robust_training_report``) return without importing it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Block:
    kind: str  # "h1" | "h2" | "h3" | "h4" | "p" | "table" | "figure" | "code" | "toc" (contents, from the h2s)
    text: str = ""
    rows: list[list[str]] = field(default_factory=list)  # table: first row is the header
    path: str = ""  # figure: path relative to the run folder
