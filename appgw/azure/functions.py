"""The functions of ARM template expressions that can be evaluated without Azure.

Each is written against the ARM template function reference. `FUNCTIONS`
maps a lowercase name to its `Function`; most get their arguments already
evaluated, `if` gets them unevaluated so that the branch not taken may
name what is missing. `UNEVALUABLE` names the functions that need Azure
itself, for a message that says why.

What only Azure knows is a fixed placeholder (SUBSCRIPTION_ID,
RESOURCE_GROUP, LOCATION): ids built from them still end in the names
they reference, which is all the import needs of them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Callable, Optional

from appgw.azure.values import TemplateError, lookup, short as _short, show, to_text, type_name

SUBSCRIPTION_ID = "00000000-0000-0000-0000-000000000000"
TENANT_ID = "00000000-0000-0000-0000-000000000000"
RESOURCE_GROUP = "resource-group"
LOCATION = "location"

@dataclass(frozen=True)
class Function:
    call: Callable
    low: int = 0
    high: int = 0
    lazy: bool = False  # gets the argument trees, evaluates what it needs


FUNCTIONS: dict[str, Function] = {}

UNEVALUABLE = {
    "reference": "reads a deployed resource",
    "newguid": "differs on every run",
    "utcnow": "differs on every run",
    "environment": "describes the Azure cloud",
    "pickzones": "asks Azure which zones exist",
    "providers": "asks Azure's resource providers",
    "managementgroup": "describes a management group",
    "tenant": "describes the Azure tenant",
}


def function(name: str, low: int = 0, high: Optional[int] = None):
    def register(fn):
        FUNCTIONS[name.lower()] = Function(lambda tpl, args, path, env: fn(*args), low,
                                           low if high is None else high)
        return fn
    return register


def context_function(name: str, low: int = 0, high: Optional[int] = None, lazy=False):
    """A function that needs the template (parameters, copy loops): fn(tpl, args, path, env)."""
    def register(fn):
        FUNCTIONS[name.lower()] = Function(fn, low, low if high is None else high, lazy)
        return fn
    return register


def _text(value, what="argument") -> str:
    if not isinstance(value, str):
        raise TypeError(f"the {what} must be a string, got {type_name(value)} {_short(value)}")
    return value


def _int(value) -> int:
    if type_name(value) != "int":
        raise TypeError(f"expects an integer, got {type_name(value)} {_short(value)}")
    return value


MANY = 1000


@context_function("parameters", 1)
def _parameters(tpl, args, path, env):
    return tpl.parameter(_text(args[0], "parameter name"), path)


@context_function("variables", 1)
def _variables(tpl, args, path, env):
    return tpl.variable(_text(args[0], "variable name"), path)


@context_function("copyIndex", 0, 2)
def _copy_index(tpl, args, path, env):
    name, offset = None, 0
    for arg in args:
        if isinstance(arg, str) and name is None:
            name = arg
        else:
            offset = _int(arg)
    if not env:
        raise TemplateError(path, "copyIndex() is used outside a copy loop")
    if name is None:
        # as in ARM: without a name it is the resource's loop; property and
        # variable loops are always named
        for _loop, index, kind in env:
            if kind == "resource":
                return index + offset
        raise TemplateError(path, "copyIndex() without a loop name counts the resource's copy "
                                  f"loop, and there is none here: name the loop, copyIndex({show(env[-1][0])})")
    for loop, index, _kind in reversed(env):
        if loop.lower() == name.lower():
            return index + offset
    raise TemplateError(path, f"copyIndex({show(name)}): no enclosing copy loop named {show(name)}")


@context_function("if", 3, lazy=True)
def _if(tpl, args, path, env):
    if len(args) != 3:
        raise TemplateError(path, f"if() takes 3 arguments, got {len(args)}")
    condition = tpl.evaluate(args[0], path, env)
    if not isinstance(condition, bool):
        raise TemplateError(path, f"if(): the condition must be a bool, got "
                                  f"{type_name(condition)} {_short(condition)}")
    # Only the branch taken is evaluated, so the other may name what is missing.
    return tpl.evaluate(args[1] if condition else args[2], path, env)


@function("concat", 0, MANY)
def _concat(*args):
    if args and all(isinstance(a, list) for a in args):
        return [item for a in args for item in a]
    if any(isinstance(a, (list, dict)) or a is None for a in args):
        raise TypeError("joins strings and numbers, or arrays, not a mix")
    return "".join(to_text(a) for a in args)


_FORMAT_ITEM_RE = re.compile(r"\{\{|\}\}|\{(\d+)(?:,(-?\d+))?(?::([^{}]*))?\}|[{}]")


@function("format", 1, MANY)
def _format(template, *args):
    """.NET composite formatting: {0}, {1,5}, {0:D3}, {0:X}, {{ and }}."""
    _text(template, "format string")

    def item(match):
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        if match.group(1) is None:
            raise ValueError(f"a lone {token!r} in the format string (write {token * 2})")
        number = int(match.group(1))
        if number >= len(args):
            raise ValueError(f"{{{number}}} but only {len(args)} values follow")
        value, spec = args[number], match.group(3)
        if spec:
            kind, digits = spec[0], spec[1:]
            if kind in "Dd" and digits.isdigit() or spec in "Dd":
                text = str(_int(value)).zfill(int(digits or 0))
            elif kind in "Xx" and (digits.isdigit() or not digits):
                text = format(_int(value), kind).zfill(int(digits or 0))
            else:
                raise ValueError(f"format specifier {spec!r} is not supported")
        else:
            text = to_text(value)
        width = int(match.group(2) or 0)
        return text.rjust(width) if width > 0 else text.ljust(-width)

    return _FORMAT_ITEM_RE.sub(item, template)


def _resource_type_segments(args, path_prefix_count):
    """(scope args, resource type, names) of resourceId()'s argument list."""
    texts = [_text(a) for a in args]
    for i, text in enumerate(texts):
        if "/" in text:
            scope, rtype, names = texts[:i], text, texts[i + 1:]
            break
    else:
        raise ValueError("no resource type like 'Microsoft.Network/applicationGateways' among "
                         "the arguments")
    if len(scope) > path_prefix_count:
        raise ValueError(f"too many arguments before the resource type {rtype!r}")
    segments = rtype.split("/")
    if len(names) != len(segments) - 1:
        raise ValueError(f"resource type {rtype!r} needs {len(segments) - 1} name(s), "
                         f"got {len(names)}")
    tail = segments[0] + "".join(f"/{seg}/{name}" for seg, name in zip(segments[1:], names))
    return scope, tail


@function("resourceId", 2, MANY)
def _resource_id(*args):
    scope, tail = _resource_type_segments(args, 2)
    subscription = scope[0] if len(scope) == 2 else SUBSCRIPTION_ID
    group = scope[-1] if scope else RESOURCE_GROUP
    return f"/subscriptions/{subscription}/resourceGroups/{group}/providers/{tail}"


@function("subscriptionResourceId", 2, MANY)
def _subscription_resource_id(*args):
    scope, tail = _resource_type_segments(args, 1)
    return f"/subscriptions/{scope[0] if scope else SUBSCRIPTION_ID}/providers/{tail}"


@function("tenantResourceId", 2, MANY)
def _tenant_resource_id(*args):
    return f"/providers/{_resource_type_segments(args, 0)[1]}"


@function("resourceGroup")
def _resource_group():
    return {"id": f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{RESOURCE_GROUP}",
            "name": RESOURCE_GROUP, "type": "Microsoft.Resources/resourceGroups",
            "location": LOCATION, "tags": {}, "properties": {"provisioningState": "Succeeded"}}


@function("subscription")
def _subscription():
    return {"id": f"/subscriptions/{SUBSCRIPTION_ID}", "subscriptionId": SUBSCRIPTION_ID,
            "tenantId": TENANT_ID, "displayName": "subscription"}


@function("deployment")
def _deployment():
    return {"name": "deployment", "properties": {"templateLink": {"uri": ""}}}


@function("uniqueString", 1, MANY)
def _unique_string(*args):
    """13 characters, the same for the same arguments (not Azure's own hash,
    which is not published: the value is stable here, not equal to Azure's)."""
    digest = hashlib.sha256("-".join(_text(a) for a in args).encode()).digest()
    return base64.b32encode(digest).decode().lower()[:13]


@function("toLower", 1)
def _to_lower(value):
    return _text(value).lower()


@function("toUpper", 1)
def _to_upper(value):
    return _text(value).upper()


@function("equals", 2)
def _equals(a, b):
    return type_name(a) == type_name(b) and a == b


@function("string", 1)
def _string(value):
    return to_text(value)


@function("int", 1)
def _to_int(value):
    if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]+", value.strip()):
        return int(value)
    if type_name(value) == "int":
        return value
    raise ValueError(f"cannot convert {type_name(value)} {_short(value)} to an integer")


@function("bool", 1)
def _to_bool(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if type_name(value) == "int" and value in (0, 1):
        return value == 1
    raise ValueError(f"cannot convert {type_name(value)} {_short(value)} to a bool")


@function("json", 1)
def _json(value):
    try:
        return json.loads(_text(value))
    except json.JSONDecodeError as err:
        raise ValueError(f"not JSON: {err.msg}") from None


@function("not", 1)
def _not(value):
    if not isinstance(value, bool):
        raise TypeError(f"expects a bool, got {type_name(value)}")
    return not value


def _bools(values):
    if not all(isinstance(v, bool) for v in values):
        raise TypeError("expects bools")
    return values


FUNCTIONS["and"] = Function(lambda tpl, args, path, env: all(_bools(args)), 2, MANY)
FUNCTIONS["or"] = Function(lambda tpl, args, path, env: any(_bools(args)), 2, MANY)
FUNCTIONS["true"] = Function(lambda tpl, args, path, env: True)
FUNCTIONS["false"] = Function(lambda tpl, args, path, env: False)
FUNCTIONS["null"] = Function(lambda tpl, args, path, env: None)


def _comparable(a, b):
    if type_name(a) != type_name(b) or type_name(a) not in ("int", "string"):
        raise TypeError("compares two integers or two strings")
    return a, b


for _name, _op in (("greater", lambda a, b: a > b), ("greaterOrEquals", lambda a, b: a >= b),
                   ("less", lambda a, b: a < b), ("lessOrEquals", lambda a, b: a <= b)):
    FUNCTIONS[_name.lower()] = Function(
        lambda tpl, args, path, env, op=_op: op(*_comparable(*args)), 2, 2)

for _name, _op in (("add", lambda a, b: a + b), ("sub", lambda a, b: a - b),
                   ("mul", lambda a, b: a * b), ("div", lambda a, b: int(a / b)),
                   ("mod", lambda a, b: a - b * int(a / b))):
    FUNCTIONS[_name] = Function(
        lambda tpl, args, path, env, op=_op: op(_int(args[0]), _int(args[1])), 2, 2)


@function("length", 1)
def _length(value):
    if not isinstance(value, (str, list, dict)):
        raise TypeError(f"expects a string, array or object, got {type_name(value)}")
    return len(value)


@function("empty", 1)
def _empty(value):
    return value is None or (isinstance(value, (str, list, dict)) and not value)


@function("contains", 2)
def _contains(container, item):
    if isinstance(container, str):
        return to_text(item) in container
    if isinstance(container, dict):
        return lookup(container, _text(item)) is not None
    if isinstance(container, list):
        return item in container
    raise TypeError(f"expects a string, array or object, got {type_name(container)}")


@function("replace", 3)
def _replace(text, old, new):
    return _text(text).replace(_text(old), _text(new))


@function("split", 2)
def _split(text, delimiter):
    delimiters = delimiter if isinstance(delimiter, list) else [delimiter]
    pattern = "|".join(re.escape(_text(d)) for d in delimiters)
    return re.split(pattern, _text(text))


@function("substring", 1, 3)
def _substring(text, start=0, length=None):
    text, start = _text(text), _int(start)
    end = len(text) if length is None else start + _int(length)
    if not 0 <= start <= end <= len(text):
        raise ValueError(f"start {start} and length {length} do not fit {text!r}")
    return text[start:end]


@function("startsWith", 2)
def _starts_with(text, prefix):
    return _text(text).lower().startswith(_text(prefix).lower())


@function("endsWith", 2)
def _ends_with(text, suffix):
    return _text(text).lower().endswith(_text(suffix).lower())


@function("indexOf", 2)
def _index_of(text, part):
    return _text(text).lower().find(_text(part).lower())


@function("trim", 1)
def _trim(text):
    return _text(text).strip()


@function("padLeft", 2, 3)
def _pad_left(value, width, char=" "):
    return to_text(value).rjust(_int(width), _text(char)[:1] or " ")


@function("createArray", 0, MANY)
def _create_array(*items):
    return list(items)


@function("createObject", 0, MANY)
def _create_object(*items):
    if len(items) % 2:
        raise ValueError("takes key, value pairs")
    return {_text(items[i], "key"): items[i + 1] for i in range(0, len(items), 2)}


@function("first", 1)
def _first(value):
    if not isinstance(value, (str, list)) or not value:
        raise ValueError("expects a non-empty string or array")
    return value[0]


@function("last", 1)
def _last(value):
    if not isinstance(value, (str, list)) or not value:
        raise ValueError("expects a non-empty string or array")
    return value[-1]


@function("coalesce", 1, MANY)
def _coalesce(*values):
    return next((v for v in values if v is not None), None)


@function("base64", 1)
def _base64(text):
    return base64.b64encode(_text(text).encode()).decode()


@function("range", 2)
def _range(start, count):
    return list(range(_int(start), _int(start) + _int(count)))


@function("union", 1, MANY)
def _union(*values):
    if all(isinstance(v, dict) for v in values):
        merged = {}
        for v in values:
            merged.update(v)
        return merged
    if all(isinstance(v, list) for v in values):
        seen = {}
        for item in (i for v in values for i in v):
            seen.setdefault(json.dumps(item, sort_keys=True), item)
        return list(seen.values())
    raise TypeError("joins objects with objects or arrays with arrays")


@function("min", 1, MANY)
def _min(*values):
    values = values[0] if len(values) == 1 and isinstance(values[0], list) else values
    return min(_int(v) for v in values)


@function("max", 1, MANY)
def _max(*values):
    values = values[0] if len(values) == 1 and isinstance(values[0], list) else values
    return max(_int(v) for v in values)
