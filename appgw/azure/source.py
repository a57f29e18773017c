"""Finding the application gateways in a JSON document, and reading them lazily.

Three shapes are accepted:
- an ARM template: every resource of type Microsoft.Network/applicationGateways
  whose `condition` holds (resource `copy` loops included; `resources` as an
  array or, in languageVersion 2.0 templates, an object of symbolic names);
  `//` and `/* */` comments, which ARM allows, are read as white space;
- an exported gateway object, `{"name", "type", "properties": {...}}`
  (a REST GET, `az resource show`), or an array of them;
- `az network application-gateway show` output, where the CLI has lifted
  each `properties` into its object (or `list` output: an array of those).

A `View` reads the JSON the way ARM does: property names are matched
case-insensitively, `properties` may be lifted into its object, and in a
template each string is evaluated only when the mapping reads it, so an
expression in a part that is not imported (the subnet, a certificate's
password) cannot fail the import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from appgw.azure.expressions import Env, Template, is_expression
from appgw.azure.values import TemplateError, lookup, type_name

GATEWAY_TYPE = "microsoft.network/applicationgateways"
_CLI_MARKERS = ("httplisteners", "backendaddresspools", "requestroutingrules", "frontendports")


class View:
    """A JSON value at `path`, evaluated on access when it comes from a template."""

    def __init__(self, raw, path: str, template: Optional[Template], env: Env = ()):
        self.raw, self.path, self.template, self.env = raw, path, template, env

    def _wrap(self, raw, path, env=None) -> "View":
        env = self.env if env is None else env
        if self.template is not None and isinstance(raw, str) and (
                is_expression(raw) or raw.startswith("[[")):
            # The result is data: strings in it are not expressions again.
            return View(self.template.string(raw, path, env), path, None, env)
        return View(raw, path, self.template, env)

    def get(self, name: str) -> Optional["View"]:
        """The property `name` (any case), or None; `copy` loops make their arrays."""
        if not isinstance(self.raw, dict):
            return None
        found = lookup(self.raw, name)
        if found is not None and found[0].lower() != "copy":
            return self._wrap(found[1], f"{self.path}.{found[0]}" if self.path else found[0])
        if self.template is not None:
            loops = lookup(self.raw, "copy")
            for i, spec in enumerate(loops[1] if loops and isinstance(loops[1], list) else ()):
                if isinstance(spec, dict) and str(spec.get("name", "")).lower() == name.lower():
                    where = f"{self.path}.copy[{i}]" if self.path else f"copy[{i}]"
                    return View(self.template.copy_loop(spec, where, self.env), where, None, self.env)
        return None

    def props(self) -> "View":
        """`properties` of an item, or the item itself when the CLI lifted them."""
        inner = self.get("properties")
        return inner if inner is not None and isinstance(inner.raw, dict) else self

    def items(self) -> list["View"]:
        if not isinstance(self.raw, list):
            raise TemplateError(self.path, f"must be an array, got {type_name(self.raw)}")
        return [self._wrap(item, f"{self.path}[{i}]") for i, item in enumerate(self.raw)]

    def value(self):
        """The plain, fully evaluated value."""
        if self.template is None:
            return self.raw
        return self.template.value(self.raw, self.path, self.env)

    def has(self, name: str) -> bool:
        """Present and not null, empty or false: a feature in use, for a warning about it."""
        if not isinstance(self.raw, dict):
            return False
        found = lookup(self.raw, name)
        return found is not None and found[1] not in (None, [], {}, "", False)


@dataclass
class Gateway:
    name: str
    view: View  # the resource (or exported object); .props() holds the configuration
    template: Optional[Template]


def find_gateways(doc, values=None, overrides=None) -> list[Gateway]:
    """Every gateway in `doc`; TemplateError when there is none or a name cannot be evaluated."""
    if isinstance(doc, dict) and "resources" in doc:
        return _template_gateways(doc, values, overrides)
    if overrides or values:
        raise TemplateError("--parameters/--set", "parameters apply to ARM templates only; "
                                                  "this is an exported gateway")
    items = doc if isinstance(doc, list) else [doc]
    gateways = []
    for i, item in enumerate(items):
        path = f"[{i}]" if isinstance(doc, list) else ""
        if isinstance(item, dict) and _is_gateway_object(item):
            view = View(item, path, None)
            gateways.append(Gateway(str(item.get("name") or f"gateway{i}"), view, None))
    if not gateways:
        raise TemplateError("", "no application gateway found: expected an ARM template with a "
                                "Microsoft.Network/applicationGateways resource, an exported "
                                "gateway, or `az network application-gateway show` output")
    return gateways


def _is_gateway_object(item: dict) -> bool:
    kind = lookup(item, "type")
    if kind is not None and isinstance(kind[1], str) and kind[1].lower() == GATEWAY_TYPE:
        return True
    return any(key.lower() in _CLI_MARKERS for key in item)


def _template_gateways(doc, values, overrides) -> list[Gateway]:
    template = Template(doc, values, overrides)
    resources = doc["resources"]
    if isinstance(resources, dict):  # languageVersion 2.0: symbolic names
        entries = [(f"resources.{key}", value) for key, value in resources.items()]
    elif isinstance(resources, list):
        entries = [(f"resources[{i}]", value) for i, value in enumerate(resources)]
    else:
        raise TemplateError("resources", f"must be an array, got {type_name(resources)}")
    gateways, not_deployed = [], 0
    for path, resource in entries:
        if not isinstance(resource, dict):
            continue
        kind = template.value(resource.get("type", ""), f"{path}.type")
        if not isinstance(kind, str) or kind.lower() != GATEWAY_TYPE:
            continue
        condition = lookup(resource, "condition")
        for env in _resource_copies(template, resource, path):
            if condition is not None:
                deployed = template.value(condition[1], f"{path}.{condition[0]}", env)
                if not isinstance(deployed, bool):
                    raise TemplateError(f"{path}.{condition[0]}", f"must be a bool, got "
                                                                  f"{type_name(deployed)}")
                if not deployed:
                    not_deployed += 1
                    continue
            name = template.value(resource.get("name", ""), f"{path}.name", env)
            gateways.append(Gateway(str(name), View(resource, path, template, env), template))
    if not gateways and not_deployed:
        raise TemplateError("resources", "no Microsoft.Network/applicationGateways resource "
                                         "is deployed with these parameters (its condition is false)")
    if not gateways:
        raise TemplateError("resources", "no Microsoft.Network/applicationGateways resource "
                                         "in the template")
    return gateways


def _resource_copies(template: Template, resource: dict, path: str) -> list[Env]:
    """One copy-loop binding per instance of a resource (one empty binding without `copy`)."""
    loop = lookup(resource, "copy")
    if loop is None:
        return [()]
    spec = loop[1]
    if not isinstance(spec, dict) or lookup(spec, "count") is None:
        raise TemplateError(f"{path}.copy", "a resource copy loop needs name and count")
    count = template.value(lookup(spec, "count")[1], f"{path}.copy.count")
    if type_name(count) != "int" or count < 0:
        raise TemplateError(f"{path}.copy.count", f"must be an integer >= 0, got {count!r}")
    name = str(spec.get("name", ""))
    return [((name, i, "resource"),) for i in range(count)]
