"""One application gateway's JSON -> an appgw config held in memory.

The result, `Imported`, is the TOML to write, table by table (key -> value,
in the order they are written, with a comment line or two), plus the
placeholder files the config names, the warnings (what has no equivalent,
one line each with its JSON path) and the problems (what could not be
mapped: the import fails).

Correspondences that are not one-to-one:
- A listener binds `--bind-host` (0.0.0.0 by default) and its frontend
  port; frontend IP configurations (public, private) are not kept.
- Redirect configurations are written inline where a rule or path rule
  uses them (appgw has no redirect section), named in a comment.
- A backend setting's path override becomes a rewrite of the URL path on
  each rule and path entry that uses those settings, as the cloud gateway
  does it: for a path rule the matched prefix is replaced by the override,
  elsewhere the override is put before the request path.
- A path rule without a rewrite set gets `rewrite_set = ""` when its rule
  has one: in the template the default set applies to unmatched paths only.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Optional

from appgw.azure.expressions import TemplateError, show, type_name
from appgw.azure.source import Gateway, View

REDIRECT_STATUS = {"permanent": 301, "found": 302, "seeother": 303, "temporary": 307}
ERROR_STATUSES = ("400", "403", "404", "405", "408", "500", "502", "503", "504")
DEFAULT_AFFINITY_COOKIE = "ApplicationGatewayAffinity"

# Server variables appgw's rewrites know (the cloud gateway's names).
REWRITE_VARIABLES = {
    "var_client_ip", "var_client_port", "var_host", "var_http_method", "var_request_uri",
    "var_uri_path", "var_query_string", "var_request_scheme", "var_server_port",
    "var_ssl_enabled",
}
_HEADER_VARIABLE_RE = re.compile(r"(http_req|http_resp)_[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_VALUE_VARIABLE_RE = re.compile(r"\{([^{}]*)\}")

# Gateway properties with no equivalent: one warning each when present.
UNMAPPED = {
    "sku": "the cloud gateway's size and tier",
    "autoscaleConfiguration": "autoscaling (appgw scales with `workers`)",
    "webApplicationFirewallConfiguration": "the web application firewall",
    "firewallPolicy": "the web application firewall policy",
    "forceFirewallPolicyAssociation": "the firewall policy association",
    "enableFips": "FIPS mode",
    "enableHttp2": "HTTP/2 to clients",
    "sslPolicy": "the TLS policy (protocols and ciphers)",
    "defaultPredefinedSslPolicy": "the TLS policy",
    "sslProfiles": "TLS profiles",
    "trustedClientCertificates": "trusted client certificates (mutual TLS)",
    "authenticationCertificates": "backend authentication certificates (v1)",
    "privateLinkConfigurations": "private link",
    "privateEndpointConnections": "private endpoint connections",
    "loadDistributionPolicies": "load distribution policies",
    "globalConfiguration": "the global configuration",
    "backendSettingsCollection": "TCP/TLS proxy backend settings",
    "listeners": "TCP/TLS proxy listeners",
    "routingRules": "TCP/TLS proxy routing rules",
}
UNMAPPED_RESOURCE = {
    "zones": "availability zones",
    "identity": "the managed identity (used for Key Vault)",
}


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


class _Skip(Exception):
    """An item that could not be mapped; its problem has been recorded."""


@dataclass
class _Target:
    pool: str = ""
    settings: str = ""
    redirect: Optional[Table] = None
    redirect_name: str = ""
    rewrite_set: str = ""


class Mapper:
    def __init__(self, gateway: Gateway, bind_host: str = "0.0.0.0"):
        self.gw = gateway
        self.props = gateway.view.props()
        self.bind_host = f"[{bind_host}]" if ":" in bind_host else bind_host
        self.out = Imported(gateway.name, gateway.view.path)
        self.names: dict = {}  # collection (lowercase) -> {lowercase name: name}
        self.items: dict = {}  # collection (lowercase) -> {name: View of its properties}
        self.settings_path: dict = {}  # settings name -> (path override, JSON path)
        self.used_redirects: set = set()
        self.used_pools: set = set()
        self.generated_sets: dict = {}
        self.kept: dict = {}  # collection (lowercase) -> [(item, properties, name)], duplicates left out

    # --- reading helpers ------------------------------------------------------

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
            raise _Skip
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
            except _Skip:
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
            raise _Skip
        parts = ident.rstrip("/").split("/")
        accepted = {collection.lower(), *(a.lower() for a in aliases)}
        if len(parts) < 2 or parts[-2].lower() not in accepted:
            self.problem(where, f"{show(ident)} is not a reference to {collection}")
            raise _Skip
        target = self.names.get(collection.lower(), {}).get(parts[-1].lower())
        if target is None:
            self.problem(where, f"dangling reference: no {collection} named {show(parts[-1])} "
                                f"in gateway {show(self.gw.name)}")
            raise _Skip
        return target

    # --- the whole gateway ------------------------------------------------------

    def run(self) -> Imported:
        self.warn_unmapped()
        ports = self.frontend_ports()
        for collection in ("sslCertificates", "trustedRootCertificates", "probes",
                           "backendAddressPools", "backendHttpSettingsCollection",
                           "redirectConfigurations", "rewriteRuleSets", "urlPathMaps"):
            self.index(collection, self.collection(collection))
        # listeners are indexed before they are mapped: redirects name them
        listeners = self.index("httpListeners", self.collection("httpListeners"))
        self.out.gateway = self.gateway_table()
        self.guard(self.certificates)
        for item, props, name in listeners:
            self.guard(self.listener, item, props, name, ports)
        for item, props, name in self.entries("probes"):
            self.guard(self.probe, item, props, name)
        for item, props, name in self.entries("backendHttpSettingsCollection"):
            self.guard(self.settings, item, props, name)
        for item, props, name in self.entries("rewriteRuleSets"):
            self.guard(self.rewrite_set, item, props, name)
        for item, props, name in self.sorted_rules():
            self.guard(self.rule, item, props, name)
        for item, props, name in self.entries("backendAddressPools"):
            self.guard(self.pool, item, props, name)
        for item, props, name in self.entries("redirectConfigurations"):
            if name not in self.used_redirects:
                self.warn(item.path, f"redirect configuration {show(name)} is used by no rule: "
                                     "not imported")
        self.out.rewrite_sets.extend(self.generated_sets.values())
        return self.out

    def guard(self, step, *args):
        """Runs one item's mapping; an item that fails leaves its problem and is skipped."""
        try:
            step(*args)
        except _Skip:
            pass
        except TemplateError as err:
            self.out.problems.append(str(err))

    def entries(self, collection: str) -> list:
        return self.kept.get(collection.lower(), [])

    def warn_unmapped(self) -> None:
        resource = self.gw.view
        for name, what in UNMAPPED_RESOURCE.items():
            if resource.has(name):
                self.warn(resource.get(name).path, f"{what}: no equivalent in appgw, not imported")
        for name, what in UNMAPPED.items():
            if self.props.has(name):
                self.warn(self.props.get(name).path, f"{what}: no equivalent in appgw, not imported")

    def frontend_ports(self) -> dict:
        ports = {}
        for item, props, name in self.index("frontendPorts", self.collection("frontendPorts")):
            try:
                port = self.value(props, "port", ("int",))
            except _Skip:
                continue
            except TemplateError as err:
                self.out.problems.append(str(err))
                continue
            if port is None or not 1 <= port <= 65535:
                self.problem(f"{props.path}.port", f"must be a port 1-65535, got {show(port)}")
                continue
            ports[name] = port
        return ports

    def gateway_table(self) -> Table:
        table = Table({"admin_bind": "127.0.0.1:9901"},
                      notes={"admin_bind": "appgw's own status endpoint (not in the template)"})
        try:
            pages = self.error_pages(self.props, "")
        except (_Skip, TemplateError) as err:
            if isinstance(err, TemplateError):
                self.out.problems.append(str(err))
            pages = {}
        if pages:
            table.values["error_pages"] = pages
        return table

    def error_pages(self, props: View, prefix: str) -> dict:
        """customErrorConfigurations -> {"502": "errors/<prefix>502.html"}, the URLs noted."""
        child = props.get("customErrorConfigurations")
        if child is None or child.raw is None:
            return {}
        pages = {}
        for entry in child.items():
            code = self.value(entry, "statusCode", ("string",), "")
            url = self.value(entry, "customErrorPageUrl", ("string",), "")
            number = code[len("HttpStatus"):] if code.lower().startswith("httpstatus") else code
            if number not in ERROR_STATUSES:
                self.problem(f"{entry.path}.statusCode",
                             f"{show(code)} is not one of HttpStatus{', HttpStatus'.join(ERROR_STATUSES)}")
                continue
            file = f"errors/{prefix}{number}.html"
            pages[number] = file
            self.out.error_pages.append(Placeholder(file, url or "(no URL in the template)"))
        return pages

    # --- certificates and listeners ------------------------------------------------

    def certificates(self) -> None:
        for item, props, name in self.entries("sslCertificates"):
            if props.has("keyVaultSecretId"):
                self.warn(props.get("keyVaultSecretId").path,
                          f"Key Vault secret ids are not read: certs/{name}.pem and "
                          f"certs/{name}.key stand in for certificate {show(name)}")

    def certificate_files(self, name: str) -> tuple:
        certificate, key = f"certs/{name}.pem", f"certs/{name}.key"
        if all(p.file != certificate for p in self.out.certificates):
            self.out.certificates.append(Placeholder(certificate, f"certificate {show(name)}"))
            self.out.certificates.append(Placeholder(key, f"private key of {show(name)}"))
        return certificate, key

    def listener(self, item: View, props: View, name: str, ports: dict) -> None:
        port_name = self.ref(props, "frontendPort", "frontendPorts")
        if not port_name:
            self.problem(props.path, "needs frontendPort")
            raise _Skip
        if port_name not in ports:
            raise _Skip  # its problem is already reported
        protocol = str(self.value(props, "protocol", ("string",), "Http")).lower()
        if protocol not in ("http", "https"):
            self.problem(f"{props.path}.protocol", f"must be Http or Https, got {show(protocol)}")
            raise _Skip
        values = {"name": name, "bind": f"{self.bind_host}:{ports[port_name]}", "protocol": protocol}
        table = Table(values)
        hosts = self.host_names(props)
        if hosts:
            values["host_names"] = hosts
        if protocol == "https":
            cert = self.ref(props, "sslCertificate", "sslCertificates")
            if not cert:
                self.problem(props.path, "an Https listener needs sslCertificate")
                raise _Skip
            values["certificate"], values["private_key"] = self.certificate_files(cert)
            table.notes["certificate"] = f"sslCertificates {show(cert)}"
        if self.value(props, "requireServerNameIndication", ("bool",), False):
            self.warn(f"{props.path}.requireServerNameIndication",
                      "clients without SNI are not refused: they get the certificate of the "
                      "bind's catch-all (or first) listener")
        for key, what in (("firewallPolicy", "the firewall policy"), ("sslProfile", "the TLS profile")):
            if props.has(key):
                self.warn(props.get(key).path, f"{what} of a listener: no equivalent in appgw, not imported")
        pages = self.error_pages(props, f"{name}-")
        if pages:
            values["error_pages"] = pages
        self.out.listeners.append(table)

    def host_names(self, props: View) -> list:
        hosts = []
        for key in ("hostName", "hostNames"):
            child = props.get(key)
            if child is None or child.raw in (None, "", []):
                continue
            value = child.value()
            names = value if isinstance(value, list) else [value]
            for i, host in enumerate(names):
                where = f"{child.path}[{i}]" if isinstance(value, list) else child.path
                if not isinstance(host, str):
                    self.problem(where, f"must be a host name, got {show(host)}")
                    raise _Skip
                rest = host[2:] if host.startswith("*.") else host
                if "*" in rest or "?" in rest:
                    self.problem(where, f"{show(host)}: appgw matches host names exactly or as "
                                        "\"*.suffix\", not with other wildcards")
                    raise _Skip
                if host.lower() not in hosts:
                    hosts.append(host.lower())
        return hosts

    # --- probes, settings, pools ------------------------------------------------------

    def probe(self, item: View, props: View, name: str) -> None:
        values = {"name": name}
        table = Table(values)
        protocol = self.value(props, "protocol", ("string",))
        if protocol:
            values["protocol"] = protocol.lower()
        pick = self.value(props, "pickHostNameFromBackendHttpSettings", ("bool",), False)
        host = self.value(props, "host", ("string",), "")
        if host and not pick:
            values["host"] = host
        elif pick:
            table.comment.append("Host: the backend settings' host name, else the server's address")
        port = self.value(props, "port", ("int",))
        if port:
            values["port"] = port
        values["path"] = self.value(props, "path", ("string",), "/")
        for azure_key, key in (("interval", "interval"), ("timeout", "timeout"),
                               ("unhealthyThreshold", "unhealthy_threshold")):
            number = self.value(props, azure_key, ("int",))
            if number is not None:
                values[key] = number
        match = props.get("match")
        if match is not None and isinstance(match.raw, dict):
            codes = self.value(match, "statusCodes", ("array",))
            if codes:
                values["match_status"] = [str(code) for code in codes]
            body = self.value(match, "body", ("string",), "")
            if body:
                values["match_body"] = body
        min_servers = self.value(props, "minServers", ("int",), 0)
        if min_servers:
            self.warn(f"{props.path}.minServers", f"minServers {min_servers}: no equivalent in appgw, "
                      "a pool whose servers all fail its probe answers 502")
        self.out.probes.append(table)

    def settings(self, item: View, props: View, name: str) -> None:
        values = {"name": name}
        table = Table(values)
        protocol = str(self.value(props, "protocol", ("string",), "Http")).lower()
        if protocol not in ("http", "https"):
            self.problem(f"{props.path}.protocol", f"must be Http or Https, got {show(protocol)}")
            raise _Skip
        values["protocol"] = protocol
        port = self.value(props, "port", ("int",))
        if port is not None:
            values["port"] = port
        timeout = self.value(props, "requestTimeout", ("int",))
        if timeout is not None:
            values["request_timeout"] = timeout
        probe = self.ref(props, "probe", "probes")
        if probe:
            values["probe"] = probe
        host = self.value(props, "hostName", ("string",), "")
        pick = self.value(props, "pickHostNameFromBackendAddress", ("bool",), False)
        if host and pick:
            self.problem(props.path, "hostName and pickHostNameFromBackendAddress exclude each other")
            raise _Skip
        if host:
            values["host_name"] = host
        if pick:
            values["pick_host_name_from_backend"] = True
        affinity = self.value(props, "cookieBasedAffinity", ("string",), "Disabled")
        if affinity.lower() == "enabled":
            values["affinity_cookie"] = self.value(props, "affinityCookieName", ("string",), "") \
                or DEFAULT_AFFINITY_COOKIE
        draining = props.get("connectionDraining")
        if draining is not None and isinstance(draining.raw, dict) and \
                self.value(draining, "enabled", ("bool",), False):
            values["drain_timeout"] = self.value(draining, "drainTimeoutInSec", ("int",), 1)
        roots = props.get("trustedRootCertificates")
        if roots is not None and roots.raw:
            self.trusted_roots(table, roots)
        if props.has("authenticationCertificates"):
            self.warn(props.get("authenticationCertificates").path,
                      "backend authentication certificates (v1): no equivalent in appgw, not imported")
        path = self.value(props, "path", ("string",), "")
        if path:
            if not path.startswith("/"):
                self.problem(f"{props.path}.path", f"must start with \"/\", got {show(path)}")
                raise _Skip
            self.settings_path[name] = (path, f"{props.path}.path")
            table.comment.append(f"path override {show(path)}: a rewrite on the rules that use it")
        self.out.backend_settings.append(table)

    def trusted_roots(self, table: Table, roots: View) -> None:
        names = [self.resolve(root, "trustedRootCertificates") for root in roots.items()]
        settings = table.values["name"]
        file = f"certs/{names[0]}.pem" if len(names) == 1 else f"certs/{settings}-roots.pem"
        table.values["trusted_root"] = file
        if all(p.file != file for p in self.out.certificates):
            what = " and ".join(show(n) for n in names)
            self.out.certificates.append(Placeholder(file, f"trusted root certificate {what}"
                                                     + (" (one PEM bundle)" if len(names) > 1 else "")))

    def pool(self, item: View, props: View, name: str) -> None:
        servers = []
        child = props.get("backendAddresses")
        for address in (child.items() if child is not None and child.raw else []):
            ip = self.value(address, "ipAddress", ("string",), "")
            fqdn = self.value(address, "fqdn", ("string",), "")
            if not ip and not fqdn:
                self.problem(address.path, "needs ipAddress or fqdn")
                raise _Skip
            if ip:
                try:
                    version = ipaddress.ip_address(ip).version
                except ValueError:
                    self.problem(f"{address.path}.ipAddress", f"{show(ip)} is not an IP address")
                    raise _Skip from None
                servers.append(f"[{ip}]" if version == 6 else ip)
            else:
                servers.append(fqdn)
        if not servers:
            if name in self.used_pools:
                self.problem(props.path, f"backend pool {show(name)} has no addresses and a rule "
                                         "uses it: appgw needs at least one server")
            else:
                self.warn(props.path, f"backend pool {show(name)} has no addresses and no rule "
                                      "uses it: not imported")
            raise _Skip
        self.out.backend_pools.append(Table({"name": name, "servers": servers}))

    # --- rewrite sets -------------------------------------------------------------

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
        base = re.sub(r"_[0-9]+$", "", name)
        if name in REWRITE_VARIABLES or base in REWRITE_VARIABLES or \
                _HEADER_VARIABLE_RE.fullmatch(name):
            return
        self.problem(where, f"server variable {show(name)} is not supported by appgw's rewrites")
        raise _Skip

    def check_values(self, text: str, where: str) -> None:
        for match in _VALUE_VARIABLE_RE.finditer(text):
            self.check_variable(match.group(1), where)

    # --- rules --------------------------------------------------------------------

    def sorted_rules(self) -> list:
        """Rules by priority (those without one after, in template order)."""
        entries = self.index("requestRoutingRules", self.collection("requestRoutingRules"))
        keyed = []
        for i, (item, props, name) in enumerate(entries):
            try:
                priority = self.value(props, "priority", ("int",))
            except _Skip:
                priority = None
            keyed.append(((priority is None, priority or 0, i), (item, props, name)))
        return [entry for _, entry in sorted(keyed, key=lambda k: k[0])]

    def rule(self, item: View, props: View, name: str) -> None:
        listener = self.ref(props, "httpListener", "httpListeners")
        if not listener:
            self.problem(props.path, "needs httpListener")
            raise _Skip
        values = {"name": name, "listener": listener}
        table = Table(values)
        priority = self.value(props, "priority", ("int",))
        if priority is not None:
            table.comment.append(f"priority {priority}")
        kind = str(self.value(props, "ruleType", ("string",), "Basic")).lower()
        if kind == "basic":
            target = self.target(props, "backendAddressPool", "backendHttpSettings",
                                 "redirectConfiguration", "rewriteRuleSet")
            self.put_target(values, table, target, None, props.path)
        elif kind == "pathbasedrouting":
            path_map_name = self.ref(props, "urlPathMap", "urlPathMaps")
            if not path_map_name:
                self.problem(props.path, "a PathBasedRouting rule needs urlPathMap")
                raise _Skip
            path_map = self.items["urlpathmaps"][path_map_name]
            table.comment.append(f"urlPathMaps {show(path_map_name)}")
            target = self.target(path_map, "defaultBackendAddressPool", "defaultBackendHttpSettings",
                                 "defaultRedirectConfiguration", "defaultRewriteRuleSet")
            if not target.rewrite_set:
                target.rewrite_set = self.ref(props, "rewriteRuleSet", "rewriteRuleSets")
            self.put_target(values, table, target, None, path_map.path)
            self.path_rules(table, path_map, target.rewrite_set)
        else:
            self.problem(f"{props.path}.ruleType", f"must be Basic or PathBasedRouting, got {show(kind)}")
            raise _Skip
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
            raise _Skip
        return target

    def redirect(self, name: str) -> dict:
        props = self.items["redirectconfigurations"][name]
        self.used_redirects.add(name)
        kind = str(self.value(props, "redirectType", ("string",), "Permanent"))
        if kind.lower() not in REDIRECT_STATUS:
            self.problem(f"{props.path}.redirectType",
                         f"must be Permanent, Found, SeeOther or Temporary, got {show(kind)}")
            raise _Skip
        redirect = {}
        listener = self.ref(props, "targetListener", "httpListeners")
        url = self.value(props, "targetUrl", ("string",), "")
        if listener:
            redirect["listener"] = listener
        elif url:
            redirect["url"] = url
        else:
            self.problem(props.path, "needs targetListener or targetUrl")
            raise _Skip
        redirect["status"] = REDIRECT_STATUS[kind.lower()]
        # Absent means false in the template; appgw's defaults are true.
        redirect["include_path"] = self.value(props, "includePath", ("bool",), False)
        redirect["include_query"] = self.value(props, "includeQueryString", ("bool",), False)
        return redirect

    def put_target(self, values: dict, table: Table, target: _Target, paths, where: str) -> None:
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

    def with_path_override(self, target: _Target, paths) -> Optional[str]:
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
            while any(t.values["name"] == name for t in self.out.rewrite_sets) or \
                    any(t.values["name"] == name for t in self.generated_sets.values()):
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

    def path_rules(self, rule_table: Table, path_map: View, rule_set: str) -> None:
        child = path_map.get("pathRules")
        seen: list = []  # (path, path rule name) in template order
        for entry in (child.items() if child is not None and child.raw else []):
            props = entry.props()
            entry_name = self.value(entry, "name", ("string",), "")
            paths = self.value(props, "paths", ("array",), [])
            for i, path in enumerate(paths):
                if not isinstance(path, str) or not path.startswith("/") or \
                        "*" in path[:-1] or (path.endswith("*") and not path.endswith("/*")):
                    self.problem(f"{props.path}.paths[{i}]",
                                 f"{show(path)}: appgw matches exact paths and prefixes ending in "
                                 "\"/*\" only")
                    raise _Skip
            self.warn_shadowed(paths, seen, entry_name, props.path)
            seen.extend((p, entry_name) for p in paths)
            target = self.target(props, "backendAddressPool", "backendHttpSettings",
                                 "redirectConfiguration", "rewriteRuleSet")
            values = {"paths": paths}
            table = Table(values, comment=[f"pathRules {show(entry_name)}"] if entry_name else [])
            self.put_target(values, table, target, paths, props.path)
            if rule_set and "redirect" not in values and "rewrite_set" not in values:
                values["rewrite_set"] = ""
                table.notes["rewrite_set"] = "none: the rule's set is for unmatched paths"
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


def _is_kind(value, kinds) -> bool:
    return type_name(value) in kinds


def map_gateway(gateway: Gateway, bind_host: str = "0.0.0.0") -> Imported:
    """The appgw config of one gateway, with its warnings and problems."""
    return Mapper(gateway, bind_host).run()
