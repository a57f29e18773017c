"""ARM template expressions, evaluated without Azure (sans-io).

A template string in brackets, `"[concat('a-', parameters('name'))]"`, is an
expression; `"[[x]"` is the literal `"[x]"`. This module parses such strings
and evaluates them against the template's parameters and variables, with
the functions of the ARM template function reference that a gateway's
properties use (and the small pure ones around them).

What Azure alone knows is a fixed placeholder: `subscription()`,
`resourceGroup()` and the ids `resourceId()` builds, so that references by
id still resolve to names. Functions that need a deployed resource
(`reference`, `list*`) or that differ on each run (`newGuid`, `utcNow`) are
errors, as is any function not listed here: an expression is evaluated
exactly or not at all, never guessed.

Every error is a `TemplateError` naming the JSON path of the string and
what could not be evaluated.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

SUBSCRIPTION_ID = "00000000-0000-0000-0000-000000000000"
TENANT_ID = "00000000-0000-0000-0000-000000000000"
RESOURCE_GROUP = "resource-group"
LOCATION = "location"
MAX_COPY = 800  # the copy loop limit of ARM itself


class TemplateError(Exception):
    """One problem with a template: `<json path>: <problem>`."""

    def __init__(self, path: str, message: str):
        self.path, self.message = path, message
        super().__init__(f"{path}: {message}" if path else message)


# --- parsing -----------------------------------------------------------------

@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple


@dataclass(frozen=True)
class Member:
    target: Any
    name: str


@dataclass(frozen=True)
class Index:
    target: Any
    index: Any


_TOKEN_RE = re.compile(r"""
    \s*(?:
      (?P<string>'(?:[^']|'')*')
    | (?P<number>-?[0-9]+)
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<punct>[(),.\[\]])
    | (?P<bad>\S)
    )""", re.X)


def _tokens(text: str) -> list:
    tokens, pos = [], 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:  # only trailing white space is left
            break
        pos = match.end()
        kind = match.lastgroup
        value = match.group(kind)
        if kind == "bad":
            raise ValueError(f"unexpected {value!r}")
        if kind == "string":
            value = value[1:-1].replace("''", "'")
        elif kind == "number":
            value = int(value)
        tokens.append((kind, value))
    return tokens


class _Parser:
    """expr := primary ( "." ident | "[" expr "]" )*
    primary := 'string' | integer | ident [ "." ident ] "(" [expr ("," expr)*] ")"
             | true | false | null"""

    def __init__(self, text: str):
        self.tokens = _tokens(text)
        self.pos = 0

    def peek(self):
        return self.tokens[self.pos] if self.pos < len(self.tokens) else (None, None)

    def take(self, punct=None):
        kind, value = self.peek()
        if kind is None:
            raise ValueError("the expression ends too early")
        if punct is not None and (kind != "punct" or value != punct):
            raise ValueError(f"expected {punct!r}, got {value!r}")
        self.pos += 1
        return kind, value

    def parse(self):
        node = self.expression()
        if self.pos != len(self.tokens):
            raise ValueError(f"unexpected {self.peek()[1]!r} after the expression")
        return node

    def expression(self):
        node = self.primary()
        while True:
            kind, value = self.peek()
            if kind == "punct" and value == ".":
                self.take()
                kind, name = self.take()
                if kind != "ident":
                    raise ValueError(f"expected a property name after '.', got {name!r}")
                node = Member(node, name)
            elif kind == "punct" and value == "[":
                self.take()
                node = Index(node, self.expression())
                self.take("]")
            else:
                return node

    def primary(self):
        kind, value = self.take()
        if kind in ("string", "number"):
            return Literal(value)
        if kind != "ident":
            raise ValueError(f"unexpected {value!r}")
        name = value
        if self.peek() == ("punct", "."):  # a user-defined function: namespace.name(
            self.take()
            kind, member = self.take()
            name = f"{name}.{member}"
        if self.peek() != ("punct", "("):
            if name.lower() in ("true", "false", "null"):
                return Literal({"true": True, "false": False, "null": None}[name.lower()])
            raise ValueError(f"expected '(' after {name!r}")
        self.take("(")
        args = []
        if self.peek() != ("punct", ")"):
            args.append(self.expression())
            while self.peek() == ("punct", ","):
                self.take()
                args.append(self.expression())
        self.take(")")
        return Call(name, tuple(args))


def is_expression(text: str) -> bool:
    return text.startswith("[") and text.endswith("]") and not text.startswith("[[")


def parse(text: str):
    """The tree of an expression string, brackets included; ValueError if malformed."""
    return _Parser(text[1:-1]).parse()


# --- values ------------------------------------------------------------------

def lookup(mapping: dict, name: str):
    """Case-insensitive key lookup, as ARM does for property names: (key, value) or None."""
    if name in mapping:
        return name, mapping[name]
    lowered = name.lower()
    for key, value in mapping.items():
        if key.lower() == lowered:
            return key, value
    return None


def type_name(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def show(value) -> str:
    """A value in one line for messages."""
    return json.dumps(value, ensure_ascii=False)


def to_text(value) -> str:
    """string() of ARM: strings as they are, True/False, JSON for the rest."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --- the evaluator -------------------------------------------------------------

Env = tuple  # ((loop name or "", index), ...) of the enclosing copy loops, innermost last


class Template:
    """A template's parameters and variables, with the values given for them.

    `values`: parameter values (from a parameters file), used as they are;
    `overrides`: NAME -> text (from --set), converted to the parameter's type.
    """

    def __init__(self, doc: dict, values: Optional[dict] = None, overrides: Optional[dict] = None):
        self.parameters = doc.get("parameters") or {}
        self.variables = doc.get("variables") or {}
        self.values = dict(values or {})
        for name, text in (overrides or {}).items():
            self.values[name] = self.convert_override(name, text)
        self._variable_cache: dict = {}
        self._parameter_cache: dict = {}
        self._evaluating: list = []

    # parameters and variables

    def definition(self, name: str, path: str):
        found = lookup(self.parameters, name)
        if found is None:
            raise TemplateError(path, f"no parameter named {show(name)} in the template")
        return found

    def convert_override(self, name: str, text: str):
        key, definition = self.definition(name, "--set")
        kind = str((definition or {}).get("type", "string")).lower()
        try:
            if kind == "int":
                return int(text)
            if kind == "bool":
                if text.lower() not in ("true", "false"):
                    raise ValueError
                return text.lower() == "true"
            if kind in ("array", "object", "secureobject"):
                return json.loads(text)
        except ValueError:
            raise TemplateError("--set", f"{key}={text}: parameter {show(key)} is of type "
                                         f"{kind}") from None
        return text

    def parameter(self, name: str, path: str):
        key, definition = self.definition(name, path)
        if key in self._parameter_cache:
            return self._parameter_cache[key]
        given = lookup(self.values, key)
        where = f"parameters.{key}"
        if given is not None:
            value = given[1]
        elif isinstance(definition, dict) and lookup(definition, "defaultValue") is not None:
            value = self.guarded(where, lambda: self.value(
                lookup(definition, "defaultValue")[1], f"{where}.defaultValue"))
        else:
            raise TemplateError(path, f"parameter {show(key)} has no value (no defaultValue): "
                                      f"give it in --parameters or with --set {key}=VALUE")
        self.check_parameter(key, definition, value, path)
        self._parameter_cache[key] = value
        return value

    def check_parameter(self, key, definition, value, path):
        if not isinstance(definition, dict):
            return
        kind = str(definition.get("type", "")).lower().replace("secure", "")
        kind = {"securestring": "string"}.get(kind, kind)
        if kind and kind != type_name(value) and not (kind == "object" and value is None):
            raise TemplateError(path, f"parameter {show(key)} is of type {kind}, "
                                      f"got {type_name(value)} {show(value)}")
        allowed = lookup(definition, "allowedValues")
        if allowed is not None and isinstance(allowed[1], list) and value not in allowed[1]:
            raise TemplateError(path, f"parameter {show(key)} must be one of "
                                      f"{show(allowed[1])}, got {show(value)}")

    def variable(self, name: str, path: str):
        found = lookup(self.variables, name)
        loop = None
        if found is None or found[0].lower() == "copy":
            loop = self.variable_loop(name)
            if loop is None:
                raise TemplateError(path, f"no variable named {show(name)} in the template")
            key = loop[1]
        else:
            key = found[0]
        if key in self._variable_cache:
            return self._variable_cache[key]
        where = f"variables.{key}"
        if loop is not None:
            value = self.guarded(where, lambda: self.copy_loop(loop[0], f"variables.copy[{loop[2]}]", ()))
        else:
            value = self.guarded(where, lambda: self.value(found[1], where, ()))
        self._variable_cache[key] = value
        return value

    def variable_loop(self, name: str):
        loops = lookup(self.variables, "copy")
        for i, spec in enumerate(loops[1] if loops and isinstance(loops[1], list) else ()):
            if isinstance(spec, dict) and str(spec.get("name", "")).lower() == name.lower():
                return spec, spec["name"], i
        return None

    def guarded(self, where: str, compute: Callable):
        """compute(), refusing a variable or parameter that needs itself."""
        if where in self._evaluating:
            chain = " -> ".join(self._evaluating[self._evaluating.index(where):] + [where])
            raise TemplateError(where, f"refers to itself ({chain})")
        self._evaluating.append(where)
        try:
            return compute()
        finally:
            self._evaluating.pop()

    # deep evaluation

    def value(self, raw, path: str, env: Env = ()):
        """`raw` with every expression string in it evaluated and copy loops expanded."""
        if isinstance(raw, str):
            return self.string(raw, path, env)
        if isinstance(raw, list):
            return [self.value(item, f"{path}[{i}]", env) for i, item in enumerate(raw)]
        if isinstance(raw, dict):
            result = {}
            for key, item in raw.items():
                if key.lower() == "copy" and isinstance(item, list):
                    for i, spec in enumerate(item):
                        result[str(spec.get("name"))] = self.copy_loop(spec, f"{path}.copy[{i}]", env)
                else:
                    result[key] = self.value(item, f"{path}.{key}", env)
            return result
        return raw

    def copy_loop(self, spec, path: str, env: Env) -> list:
        """The array a property or variable `copy` entry makes: `input` once per index."""
        if not isinstance(spec, dict) or lookup(spec, "name") is None or lookup(spec, "count") is None:
            raise TemplateError(path, "a copy loop needs name, count and input")
        name = lookup(spec, "name")[1]
        count = self.value(lookup(spec, "count")[1], f"{path}.count", env)
        if type_name(count) != "int" or not 0 <= count <= MAX_COPY:
            raise TemplateError(f"{path}.count", f"must be an integer 0-{MAX_COPY}, got {show(count)}")
        body = lookup(spec, "input")
        if body is None:
            raise TemplateError(path, "a copy loop needs name, count and input")
        return [self.value(body[1], f"{path}.input", env + ((str(name), i),)) for i in range(count)]

    def string(self, text: str, path: str, env: Env = ()):
        if text.startswith("[["):
            return text[1:]
        if not is_expression(text):
            return text
        try:
            tree = parse(text)
        except ValueError as err:
            raise TemplateError(path, f"cannot parse the expression {show(text)}: {err}") from None
        return self.evaluate(tree, path, env)

    def evaluate(self, node, path: str, env: Env = ()):
        if isinstance(node, Literal):
            return node.value
        if isinstance(node, Member):
            target = self.evaluate(node.target, path, env)
            found = lookup(target, node.name) if isinstance(target, dict) else None
            if found is None:
                raise TemplateError(path, f"{type_name(target)} {_short(target)} has no property "
                                          f"{show(node.name)}")
            return found[1]
        if isinstance(node, Index):
            return self.index(self.evaluate(node.target, path, env),
                              self.evaluate(node.index, path, env), path)
        function = FUNCTIONS.get(node.name.lower())
        if function is None:
            if node.name.lower() in UNEVALUABLE or node.name.lower().startswith("list"):
                reason = UNEVALUABLE.get(node.name.lower(), "needs a deployed resource")
                raise TemplateError(path, f"function {node.name}() cannot be evaluated outside "
                                          f"Azure: it {reason}")
            raise TemplateError(path, f"unknown template function {node.name}()")
        if function.lazy:
            return function.call(self, node.args, path, env)
        args = [self.evaluate(arg, path, env) for arg in node.args]
        if not function.low <= len(args) <= function.high:
            expected = (str(function.low) if function.low == function.high
                        else f"{function.low} or more" if function.high > 99
                        else f"{function.low}-{function.high}")
            raise TemplateError(path, f"{node.name}() takes {expected} arguments, got {len(args)}")
        try:
            return function.call(self, args, path, env)
        except (TypeError, ValueError, KeyError, ZeroDivisionError) as err:
            message = err.args[0] if err.args and isinstance(err.args[0], str) else str(err)
            raise TemplateError(path, f"{node.name}(): {message}") from None

    @staticmethod
    def index(target, key, path):
        if isinstance(target, list) and type_name(key) == "int":
            if not -len(target) <= key < len(target):
                raise TemplateError(path, f"index {key} is outside the array of {len(target)}")
            return target[key]
        if isinstance(target, dict) and isinstance(key, str):
            found = lookup(target, key)
            if found is None:
                raise TemplateError(path, f"object {_short(target)} has no property {show(key)}")
            return found[1]
        raise TemplateError(path, f"cannot index {type_name(target)} with {type_name(key)} {show(key)}")


def _short(value) -> str:
    text = show(value)
    return text if len(text) <= 60 else text[:57] + "..."


# --- the functions -------------------------------------------------------------

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
        return env[-1][1] + offset
    for loop, index in reversed(env):
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
