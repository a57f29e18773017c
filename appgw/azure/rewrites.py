"""rewriteRuleSets -> [[rewrite_sets]], and backend path overrides as rewrites.

Rules run in `ruleSequence` order. Server variables keep the cloud
gateway's names, which appgw's rewrites use too; one appgw does not know
is a problem, not a rule left out. A backend setting's path override is
the rewrite the cloud gateway does: a path rule's matched prefix is
replaced by the override, elsewhere the override goes before the path;
the set made for it comes after the rules of the target's own set.
"""

from __future__ import annotations

import re
from typing import Optional

from appgw.exchange import rewrite
from appgw.azure.model import Table
from appgw.azure.reader import Skip
from appgw.azure.source import View
from appgw.azure.values import show

_VALUE_VARIABLE_RE = re.compile(r"\{([^{}]*)\}")


class RewriteMapping:
    """Mixed into the Mapper: needs its Reader methods, `settings_path` and `generated_sets`."""

    def rewrite_set(self, item: View, props: View, name: str) -> None:
        child = props.get("rewriteRules")
        rules = child.items() if child is not None and child.raw else []
        ordered = sorted(enumerate(rules), key=lambda r: (
            self.value(r[1], "ruleSequence", ("int",), 100), r[0]))
        table = Table({"name": name})
        for _, rule in ordered:
            table.nested.append(self.rewrite_rule(rule))
        self.out.rewrite_sets.append(table)

    def rewrite_rule(self, rule: View) -> Table:
        values = {"name": self.value(rule, "name", ("string",), "")}
        conditions = []
        child = rule.get("conditions")
        for condition in (child.items() if child is not None and child.raw else []):
            variable = self.value(condition, "variable", ("string",), "").strip("{}")
            self.check_variable(variable, f"{condition.path}.variable")
            entry = {"variable": variable,
                     "pattern": self.value(condition, "pattern", ("string",), "")}
            if self.value(condition, "ignoreCase", ("bool",), False):
                entry["ignore_case"] = True
            if self.value(condition, "negate", ("bool",), False):
                entry["negate"] = True
            conditions.append(entry)
        if conditions:
            values["conditions"] = conditions
        actions = rule.get("actionSet")
        if actions is not None and isinstance(actions.raw, dict):
            for azure_key, key in (("requestHeaderConfigurations", "request_headers"),
                                   ("responseHeaderConfigurations", "response_headers")):
                headers = {}
                configs = actions.get(azure_key)
                for config in (configs.items() if configs is not None and configs.raw else []):
                    header = self.value(config, "headerName", ("string",), "")
                    value = self.value(config, "headerValue", ("string",), "")
                    if config.has("headerValueMatcher"):
                        self.problem(config.get("headerValueMatcher").path,
                                     "rewriting one value of a repeated header (headerValueMatcher) "
                                     "is not supported by appgw's rewrites")
                        raise Skip
                    self.check_values(value, f"{config.path}.headerValue")
                    headers[header] = value
                if headers:
                    values[key] = headers
            url = actions.get("urlConfiguration")
            if url is not None and isinstance(url.raw, dict):
                rewrite = {}
                path = self.value(url, "modifiedPath", ("string",), "")
                query = self.value(url, "modifiedQueryString", ("string",), "")
                if path:
                    self.check_values(path, f"{url.path}.modifiedPath")
                    rewrite["path"] = path
                if query:
                    self.check_values(query, f"{url.path}.modifiedQueryString")
                    rewrite["query"] = query
                if self.value(url, "reroute", ("bool",), False):
                    rewrite["reroute"] = True
                if rewrite:
                    values["url"] = rewrite
        return Table(values)

    def check_variable(self, name: str, where: str) -> None:
        # appgw's own list: a capture `{var_uri_path_1}` names its variable
        if rewrite.variable_phase(name) or rewrite.variable_phase(re.sub(r"_[0-9]+$", "", name)):
            return
        self.problem(where, f"server variable {show(name)} is not supported by appgw's rewrites")
        raise Skip

    def check_values(self, text: str, where: str) -> None:
        for match in _VALUE_VARIABLE_RE.finditer(text):
            self.check_variable(match.group(1), where)

    def no_rewrites(self) -> str:
        """An empty set, for a path entry that must not take its rule's set."""
        key = ("", "", "none")
        if key not in self.generated_sets:
            name = "none"
            while self.set_name_taken(name):
                name += "-"
            self.generated_sets[key] = Table({"name": name}, comment=[
                "no rewrites: for path rules without a set of their own (in the template",
                "the set of their rule applies to unmatched paths only)"])
        return self.generated_sets[key].values["name"]

    def set_name_taken(self, name: str) -> bool:
        return any(t.values["name"] == name
                   for t in [*self.out.rewrite_sets, *self.generated_sets.values()])

    def with_path_override(self, target, paths) -> Optional[str]:
        """The rewrite set of a target, a generated one when its settings override the path."""
        override = self.settings_path.get(target.settings)
        if override is None:
            return target.rewrite_set or None
        path, _ = override
        if paths is None:
            key = (target.rewrite_set, target.settings, ())
            url_path = path.rstrip("/") + "{var_uri_path}"
            conditions = []
        else:
            key = (target.rewrite_set, target.settings, tuple(paths))
            alternatives = "|".join(re.escape(p[:-1]) if p.endswith("/*") else re.escape(p) + "$"
                                    for p in paths)
            conditions = [{"variable": "var_uri_path", "pattern": f"^(?:{alternatives})(.*)"}]
            url_path = path + "{var_uri_path_1}"
        if key not in self.generated_sets:
            base = target.rewrite_set
            name = "-".join(filter(None, [base, target.settings, "path"]))
            while self.set_name_taken(name):
                name += "-" + str(len(self.generated_sets) + 1)
            rule = {"name": "path-override"}
            if conditions:
                rule["conditions"] = conditions
            rule["url"] = {"path": url_path}
            table = Table({"name": name}, comment=[
                f"made from the path override {show(path)} of backend settings "
                f"{show(target.settings)}" + (f" after the rules of {show(base)}" if base else "")])
            base_table = next((t for t in self.out.rewrite_sets if t.values["name"] == base), None)
            if base_table is not None:
                table.nested.extend(Table(dict(t.values)) for t in base_table.nested)
            table.nested.append(Table(rule))
            self.generated_sets[key] = table
        return self.generated_sets[key].values["name"]
