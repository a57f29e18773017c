"""Reading one gateway's JSON for the mapping: typed values, collections, references.

A value of the wrong type, a repeated name or a reference that does not
resolve is recorded as a problem with its JSON path and raises `Skip`,
which leaves that one item out; `guard` runs one item's mapping so that
every problem of the file is reported together.
"""

from __future__ import annotations

from appgw.azure.model import Imported
from appgw.azure.source import Gateway, View
from appgw.azure.values import TemplateError, show, type_name


class Skip(Exception):
    """An item that could not be mapped; its problem has been recorded."""


class Reader:
    def __init__(self, gateway: Gateway):
        self.gw = gateway
        self.props = gateway.view.props()
        self.out = Imported(gateway.name, gateway.view.path)
        self.names: dict = {}  # collection (lowercase) -> {lowercase name: name}
        self.items: dict = {}  # collection (lowercase) -> {name: View of its properties}
        self.kept: dict = {}  # collection (lowercase) -> [(item, properties, name)], duplicates left out

    def warn(self, path: str, message: str) -> None:
        self.out.warnings.append(f"{path}: {message}")

    def problem(self, path: str, message: str) -> None:
        self.out.problems.append(f"{path}: {message}")

    def value(self, view: View, name: str, kinds=None, default=None):
        """The evaluated property `name` of `view`, type-checked; `default` when absent or null."""
        child = view.get(name)
        if child is None:
            return default
        value = child.value()
        if value is None:
            return default
        if kinds and not _is_kind(value, kinds):
            self.problem(child.path, f"must be {' or '.join(kinds)}, got {type_name(value)} {show(value)}")
            raise Skip
        return value

    def collection(self, name: str) -> list:
        """(item View, properties View, item name) of a gateway collection; [] when absent."""
        child = self.props.get(name)
        if child is None or child.raw is None:
            return []
        result = []
        for item in child.items():
            if not isinstance(item.raw, dict):
                self.problem(item.path, f"must be an object, got {type_name(item.raw)}")
                continue
            try:
                item_name = self.value(item, "name", ("string",))
            except Skip:
                continue
            except TemplateError as err:
                self.out.problems.append(str(err))
                continue
            if not item_name:
                self.problem(item.path, "has no name")
                continue
            result.append((item, item.props(), item_name))
        return result

    def index(self, collection: str, entries: list) -> list:
        """Records names for reference resolution; reports repeated names."""
        names = self.names.setdefault(collection.lower(), {})
        items = self.items.setdefault(collection.lower(), {})
        kept = []
        for item, props, name in entries:
            if name.lower() in names:
                self.problem(f"{item.path}.name", f"duplicate name {show(name)} in {collection}")
                continue
            names[name.lower()] = name
            items[name] = props
            kept.append((item, props, name))
        self.kept[collection.lower()] = kept
        return kept

    def ref(self, view: View, name: str, collection: str, aliases=()) -> str:
        """The name a sub-resource reference {"id": ".../COLLECTION/NAME"} points to, or ""."""
        child = view.get(name)
        if child is None or child.raw is None:
            return ""
        return self.resolve(child, collection, aliases)

    def resolve(self, child: View, collection: str, aliases=()) -> str:
        id_view = child.get("id") if isinstance(child.raw, dict) else None
        ident = id_view.value() if id_view is not None else None
        where = id_view.path if id_view is not None else child.path
        if not isinstance(ident, str) or not ident:
            self.problem(where, f"must be a reference {{\"id\": \".../{collection}/NAME\"}}, "
                                f"got {show(child.value())}")
            raise Skip
        parts = ident.rstrip("/").split("/")
        accepted = {collection.lower(), *(a.lower() for a in aliases)}
        if len(parts) < 2 or parts[-2].lower() not in accepted:
            self.problem(where, f"{show(ident)} is not a reference to {collection}")
            raise Skip
        target = self.names.get(collection.lower(), {}).get(parts[-1].lower())
        if target is None:
            self.problem(where, f"dangling reference: no {collection} named {show(parts[-1])} "
                                f"in gateway {show(self.gw.name)}")
            raise Skip
        return target

    def guard(self, step, *args):
        """Runs one item's mapping; an item that fails leaves its problem and is skipped."""
        try:
            step(*args)
        except Skip:
            pass
        except TemplateError as err:
            self.out.problems.append(str(err))

    def entries(self, collection: str) -> list:
        return self.kept.get(collection.lower(), [])


def _is_kind(value, kinds) -> bool:
    return type_name(value) in kinds
