"""The imported config held in memory: the TOML to write, table by table,
and what the import has to say about it (placeholders, warnings, problems)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Table:
    """One TOML table: values in writing order, comment lines above it, nested array tables."""

    values: dict
    comment: list = field(default_factory=list)
    nested: list = field(default_factory=list)  # [[rules.paths]] / [[rewrite_sets.rules]]
    notes: dict = field(default_factory=dict)  # key -> trailing comment


@dataclass
class Placeholder:
    file: str
    note: str


@dataclass
class Imported:
    name: str
    source_path: str
    gateway: Table = field(default_factory=lambda: Table({}))
    listeners: list = field(default_factory=list)
    backend_pools: list = field(default_factory=list)
    backend_settings: list = field(default_factory=list)
    probes: list = field(default_factory=list)
    rewrite_sets: list = field(default_factory=list)
    rules: list = field(default_factory=list)
    certificates: list = field(default_factory=list)
    error_pages: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    problems: list = field(default_factory=list)

    def placeholder_files(self) -> list:
        return [p.file for p in self.certificates + self.error_pages]
