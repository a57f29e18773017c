"""One application gateway's JSON -> an appgw config held in memory (`Imported`).

This module maps the gateway as a whole, its listeners, certificates,
pools, backend settings and probes; routes.py the rules, path maps and
redirects; rewrites.py the rewrite sets and path overrides. What has no
equivalent is a warning (one line, with its JSON path); what cannot be
mapped is a problem, and the import fails.

Correspondences that are not one-to-one:
- A listener binds `--bind-host` (0.0.0.0 by default) and its frontend
  port; frontend IP configurations (public, private) are not kept.
- Certificates are placeholder files, `certs/NAME.pem` and `.key`; custom
  error pages are `errors/[LISTENER-]CODE.html`, their URLs noted.
- cookieBasedAffinity without affinityCookieName uses the cloud gateway's
  cookie name, ApplicationGatewayAffinity; a settings' requestTimeout left
  out is the cloud gateway's 30 s, not appgw's 20.
"""

from __future__ import annotations

import ipaddress
import re

from appgw.azure.model import Imported, Placeholder, Table
from appgw.azure.reader import Reader, Skip
from appgw.azure.rewrites import RewriteMapping
from appgw.azure.routes import RouteMapping
from appgw.azure.source import Gateway, View
from appgw.azure.values import TemplateError, show

ERROR_STATUSES = ("400", "403", "404", "405", "408", "500", "502", "503", "504")
DEFAULT_AFFINITY_COOKIE = "ApplicationGatewayAffinity"
DEFAULT_REQUEST_TIMEOUT = 30  # what the cloud gateway sets when a template leaves it out

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


class Mapper(Reader, RouteMapping, RewriteMapping):
    def __init__(self, gateway: Gateway, bind_host: str = "0.0.0.0"):
        super().__init__(gateway)
        self.bind_host = f"[{bind_host}]" if ":" in bind_host else bind_host
        self.settings_path: dict = {}  # settings name -> (path override, JSON path)
        self.used_redirects: set = set()
        self.used_pools: set = set()
        self.generated_sets: dict = {}

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
        self.drop_listeners_without_rule(listeners)
        for item, _props, name in self.entries("redirectConfigurations"):
            if name not in self.used_redirects:
                self.warn(item.path, f"redirect configuration {show(name)} is used by no rule: "
                                     "not imported")
        self.out.rewrite_sets.extend(self.generated_sets.values())
        return self.out

    def drop_listeners_without_rule(self, listeners) -> None:
        """The template may keep a listener no rule uses; appgw needs a rule for each.

        Judged only when every rule could be mapped (else nothing is written)."""
        if self.out.problems:
            return
        ruled = {t.values["listener"] for t in self.out.rules}
        targets = {entry.values["redirect"].get("listener") for t in self.out.rules
                   for entry in [t, *t.nested] if "redirect" in entry.values}
        unused = {name: item for item, _, name in listeners if name not in ruled | targets}
        for name, item in unused.items():
            self.warn(item.path, f"listener {show(name)} is used by no rule: not imported")
        self.out.listeners = [t for t in self.out.listeners if t.values["name"] not in unused]

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
        for _item, props, name in self.index("frontendPorts", self.collection("frontendPorts")):
            try:
                port = self.value(props, "port", ("int",))
            except Skip:
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
        except (Skip, TemplateError) as err:
            if isinstance(err, TemplateError):
                self.out.problems.append(str(err))
            pages = {}
        if pages:
            table.values["error_pages"] = pages
        return table

    def error_pages(self, props: View, owner: str) -> dict:
        """customErrorConfigurations -> {"502": "errors/[OWNER-]502.html"}, the URLs noted."""
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
            file = f"errors/{file_part(owner) + '-' if owner else ''}{number}.html"
            pages[number] = file
            self.out.error_pages.append(Placeholder(file, url or "(no URL in the template)"))
        return pages

    # --- certificates and listeners ------------------------------------------------

    def certificates(self) -> None:
        for _item, props, name in self.entries("sslCertificates"):
            if props.has("keyVaultSecretId"):
                self.warn(props.get("keyVaultSecretId").path,
                          f"Key Vault secret ids are not read: certs/{file_part(name)}.pem and "
                          f"certs/{file_part(name)}.key stand in for certificate {show(name)}")

    def certificate_files(self, name: str) -> tuple:
        certificate, key = f"certs/{file_part(name)}.pem", f"certs/{file_part(name)}.key"
        if all(p.file != certificate for p in self.out.certificates):
            self.out.certificates.append(Placeholder(certificate, f"certificate {show(name)}"))
            self.out.certificates.append(Placeholder(key, f"private key of {show(name)}"))
        return certificate, key

    def listener(self, item: View, props: View, name: str, ports: dict) -> None:
        port_name = self.ref(props, "frontendPort", "frontendPorts")
        if not port_name:
            self.problem(props.path, "needs frontendPort")
            raise Skip
        if port_name not in ports:
            raise Skip  # its problem is already reported
        protocol = str(self.value(props, "protocol", ("string",), "Http")).lower()
        if protocol not in ("http", "https"):
            self.problem(f"{props.path}.protocol", f"must be Http or Https, got {show(protocol)}")
            raise Skip
        values = {"name": name, "bind": f"{self.bind_host}:{ports[port_name]}", "protocol": protocol}
        table = Table(values)
        hosts = self.host_names(props)
        if hosts:
            values["host_names"] = hosts
        if protocol == "https":
            cert = self.ref(props, "sslCertificate", "sslCertificates")
            if not cert:
                self.problem(props.path, "an Https listener needs sslCertificate")
                raise Skip
            values["certificate"], values["private_key"] = self.certificate_files(cert)
            table.notes["certificate"] = f"sslCertificates {show(cert)}"
        if self.value(props, "requireServerNameIndication", ("bool",), False):
            self.warn(f"{props.path}.requireServerNameIndication",
                      "clients without SNI are not refused: they get the certificate of the "
                      "bind's catch-all (or first) listener")
        for key, what in (("firewallPolicy", "the firewall policy"), ("sslProfile", "the TLS profile")):
            if props.has(key):
                self.warn(props.get(key).path, f"{what} of a listener: no equivalent in appgw, not imported")
        pages = self.error_pages(props, name)
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
                    raise Skip
                rest = host[2:] if host.startswith("*.") else host
                if "*" in rest or "?" in rest:
                    self.problem(where, f"{show(host)}: appgw matches host names exactly or as "
                                        "\"*.suffix\", not with other wildcards")
                    raise Skip
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
            raise Skip
        values["protocol"] = protocol
        port = self.value(props, "port", ("int",))
        if port is not None:
            values["port"] = port
        timeout = self.value(props, "requestTimeout", ("int",))
        values["request_timeout"] = DEFAULT_REQUEST_TIMEOUT if timeout is None else timeout
        if timeout is None:
            table.notes["request_timeout"] = "the cloud gateway's default"
        probe = self.ref(props, "probe", "probes")
        if probe:
            values["probe"] = probe
        host = self.value(props, "hostName", ("string",), "")
        pick = self.value(props, "pickHostNameFromBackendAddress", ("bool",), False)
        if host and pick:
            self.problem(props.path, "hostName and pickHostNameFromBackendAddress exclude each other")
            raise Skip
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
                raise Skip
            self.settings_path[name] = (path, f"{props.path}.path")
            table.comment.append(f"path override {show(path)}: a rewrite on the rules that use it")
        self.out.backend_settings.append(table)

    def trusted_roots(self, table: Table, roots: View) -> None:
        names = [self.resolve(root, "trustedRootCertificates") for root in roots.items()]
        settings = table.values["name"]
        file = f"certs/{file_part(names[0] if len(names) == 1 else settings + '-roots')}.pem"
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
                raise Skip
            if ip:
                try:
                    version = ipaddress.ip_address(ip).version
                except ValueError:
                    self.problem(f"{address.path}.ipAddress", f"{show(ip)} is not an IP address")
                    raise Skip from None
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
            raise Skip
        self.out.backend_pools.append(Table({"name": name, "servers": servers}))

    # --- rewrite sets -------------------------------------------------------------

def file_part(name: str) -> str:
    """A name as part of a file name: the characters Azure allows in names, others as "_"."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "_"


def map_gateway(gateway: Gateway, bind_host: str = "0.0.0.0") -> Imported:
    """The appgw config of one gateway, with its warnings and problems."""
    try:
        mapper = Mapper(gateway, bind_host)
    except TemplateError as err:  # the gateway's properties are an expression that fails
        failed = Imported(gateway.name, gateway.view.path)
        failed.problems.append(str(err))
        return failed
    try:
        return mapper.run()
    except TemplateError as err:  # outside any one item: a collection that is not an array
        mapper.out.problems.append(str(err))
        return mapper.out
