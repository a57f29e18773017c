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

import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

from appgw.azure.functions import FUNCTIONS, UNEVALUABLE
from appgw.azure.values import TemplateError, lookup, short as _short, show, type_name


MAX_COPY = 800  # the copy loop limit of ARM itself


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


# --- the evaluator -------------------------------------------------------------

Env = tuple  # ((loop name, index, "resource" | "loop"), ...) of the enclosing copy loops, innermost last


class Template:
    """A template's parameters and variables, with the values given for them.

    `values`: parameter values (from a parameters file), used as they are;
    `overrides`: NAME -> text (from --set), converted to the parameter's type.
    """

    def __init__(self, doc: dict, values: Optional[dict] = None, overrides: Optional[dict] = None):
        self.parameters = doc.get("parameters") or {}
        self.variables = doc.get("variables") or {}
        for section in ("parameters", "variables"):
            if not isinstance(getattr(self, section), dict):
                raise TemplateError(section, f"must be an object, got "
                                             f"{type_name(getattr(self, section))}")
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
        return [self.value(body[1], f"{path}.input", env + ((str(name), i, "loop"),)) for i in range(count)]

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
