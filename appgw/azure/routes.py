"""requestRoutingRules, urlPathMaps and redirectConfigurations -> [[rules]].

Rules are written in `priority` order (those without one after, in
template order). A redirect configuration is written inline where a rule
or path rule uses it (appgw has no redirect section); absent `includePath`
and `includeQueryString` are false, as in the template. A path rule
without a rewrite set gets an empty one when its rule has one: in the
template the path map's default set applies to unmatched paths only, in
appgw a path entry without a set takes its rule's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from appgw.azure.model import Table
from appgw.azure.reader import Skip
from appgw.azure.source import View
from appgw.azure.values import show

REDIRECT_STATUS = {"permanent": 301, "found": 302, "seeother": 303, "temporary": 307}


@dataclass
class _Target:
    pool: str = ""
    settings: str = ""
    redirect: Optional[dict] = None  # the inline redirect table
    redirect_name: str = ""
    rewrite_set: str = ""


class RouteMapping:
    """Mixed into the Mapper: needs its Reader methods, `used_pools` and `used_redirects`."""

    def sorted_rules(self) -> list:
        """Rules by priority (those without one after, in template order)."""
        entries = self.index("requestRoutingRules", self.collection("requestRoutingRules"))
        keyed = []
        for i, (item, props, name) in enumerate(entries):
            try:
                priority = self.value(props, "priority", ("int",))
            except Skip:
                priority = None
            keyed.append(((priority is None, priority or 0, i), (item, props, name)))
        return [entry for _, entry in sorted(keyed, key=lambda k: k[0])]

    def rule(self, item: View, props: View, name: str) -> None:
        listener = self.ref(props, "httpListener", "httpListeners")
        if not listener:
            self.problem(props.path, "needs httpListener")
            raise Skip
        values = {"name": name, "listener": listener}
        table = Table(values)
        priority = self.value(props, "priority", ("int",))
        if priority is not None:
            table.comment.append(f"priority {priority}")
        kind = str(self.value(props, "ruleType", ("string",), "Basic")).lower()
        if kind == "basic":
            target = self.target(props, "backendAddressPool", "backendHttpSettings",
                                 "redirectConfiguration", "rewriteRuleSet")
            self.put_target(values, table, target, None)
        elif kind == "pathbasedrouting":
            path_map_name = self.ref(props, "urlPathMap", "urlPathMaps")
            if not path_map_name:
                self.problem(props.path, "a PathBasedRouting rule needs urlPathMap")
                raise Skip
            path_map = self.items["urlpathmaps"][path_map_name]
            table.comment.append(f"urlPathMaps {show(path_map_name)}")
            target = self.target(path_map, "defaultBackendAddressPool", "defaultBackendHttpSettings",
                                 "defaultRedirectConfiguration", "defaultRewriteRuleSet")
            if not target.rewrite_set:
                target.rewrite_set = self.ref(props, "rewriteRuleSet", "rewriteRuleSets")
            self.put_target(values, table, target, None)
            self.path_rules(table, path_map, target.rewrite_set)
        else:
            self.problem(f"{props.path}.ruleType", f"must be Basic or PathBasedRouting, got {show(kind)}")
            raise Skip
        self.out.rules.append(table)

    def target(self, props: View, pool_key, settings_key, redirect_key, rewrite_key) -> _Target:
        target = _Target()
        target.redirect_name = self.ref(props, redirect_key, "redirectConfigurations")
        target.pool = self.ref(props, pool_key, "backendAddressPools")
        target.settings = self.ref(props, settings_key, "backendHttpSettingsCollection",
                                   aliases=("backendHttpSettingsList",))
        target.rewrite_set = self.ref(props, rewrite_key, "rewriteRuleSets")
        if target.redirect_name:
            target.redirect = self.redirect(target.redirect_name)
        elif not target.pool:
            self.problem(props.path, f"needs {pool_key} or {redirect_key}")
            raise Skip
        return target

    def redirect(self, name: str) -> dict:
        props = self.items["redirectconfigurations"][name]
        self.used_redirects.add(name)
        kind = str(self.value(props, "redirectType", ("string",), "Permanent"))
        if kind.lower() not in REDIRECT_STATUS:
            self.problem(f"{props.path}.redirectType",
                         f"must be Permanent, Found, SeeOther or Temporary, got {show(kind)}")
            raise Skip
        redirect = {}
        listener = self.ref(props, "targetListener", "httpListeners")
        url = self.value(props, "targetUrl", ("string",), "")
        if listener:
            redirect["listener"] = listener
        elif url:
            redirect["url"] = url
        else:
            self.problem(props.path, "needs targetListener or targetUrl")
            raise Skip
        redirect["status"] = REDIRECT_STATUS[kind.lower()]
        # Absent means false in the template; appgw's defaults are true.
        redirect["include_path"] = self.value(props, "includePath", ("bool",), False)
        redirect["include_query"] = self.value(props, "includeQueryString", ("bool",), False)
        return redirect

    def put_target(self, values: dict, table: Table, target: _Target, paths) -> None:
        """The target's keys into `values`; `paths` are a path entry's (None for a rule's own)."""
        if target.redirect is not None:
            values["redirect"] = target.redirect
            table.notes["redirect"] = f"redirectConfigurations {show(target.redirect_name)}"
            return
        self.used_pools.add(target.pool)
        values["backend_pool"] = target.pool
        if target.settings:
            values["backend_settings"] = target.settings
        rewrite_set = self.with_path_override(target, paths)
        if rewrite_set is not None:
            values["rewrite_set"] = rewrite_set

    def path_rules(self, rule_table: Table, path_map: View, rule_set: str) -> None:
        child = path_map.get("pathRules")
        seen: list = []  # (path, path rule name) in template order
        for entry in (child.items() if child is not None and child.raw else []):
            self.guard(self.path_rule, rule_table, entry, rule_set, seen)

    def path_rule(self, rule_table: Table, entry: View, rule_set: str, seen: list) -> None:
        props = entry.props()
        entry_name = self.value(entry, "name", ("string",), "")
        paths = self.value(props, "paths", ("array",), [])
        for i, path in enumerate(paths):
            if not isinstance(path, str) or not path.startswith("/") or \
                    "*" in path[:-1] or (path.endswith("*") and not path.endswith("/*")):
                self.problem(f"{props.path}.paths[{i}]",
                             f"{show(path)}: appgw matches exact paths and prefixes ending in "
                             "\"/*\" only")
                raise Skip
        self.warn_shadowed(paths, seen, entry_name, props.path)
        seen.extend((p, entry_name) for p in paths)
        target = self.target(props, "backendAddressPool", "backendHttpSettings",
                             "redirectConfiguration", "rewriteRuleSet")
        values = {"paths": paths}
        table = Table(values, comment=[f"pathRules {show(entry_name)}"] if entry_name else [])
        self.put_target(values, table, target, paths)
        if rule_set and "redirect" not in values and "rewrite_set" not in values:
            values["rewrite_set"] = self.no_rewrites()
        if props.has("firewallPolicy"):
            self.warn(props.get("firewallPolicy").path,
                      "the firewall policy of a path rule: no equivalent in appgw, not imported")
        rule_table.nested.append(table)

    def warn_shadowed(self, paths, seen, entry_name, where) -> None:
        """The template takes the first matching path, appgw the longest: say where they differ."""
        for path in paths:
            for earlier, earlier_name in seen:
                if earlier.endswith("/*") and path != earlier and path.startswith(earlier[:-1]):
                    self.warn(where, f"{show(path)} of path rule {show(entry_name)} is shadowed "
                                     f"by the earlier {show(earlier)} of {show(earlier_name)} in "
                                     "the template; appgw takes the longest match, so it routes "
                                     f"{show(path)} to {show(entry_name)}")
