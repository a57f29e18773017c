"""`appgw import-azure TEMPLATE.json [--parameters P.json] [--set NAME=VALUE ...] [-o FILE]`.

Reads the template (or exported gateway), writes one appgw.toml per
gateway, prints one warning line per item that has no equivalent, then
checks the result as `appgw -c FILE --check` would and prints the verdict.
Exit 0 when everything was mapped (warnings or not) and the result checks;
1 when something could not be mapped or checked, with one line per problem
(`<file>: <JSON path>: <problem>`) and nothing written.

The placeholder files the result names (certificates, error pages) do not
exist yet on a first import: the check then reports everything else and
says which files are still to be made.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

from appgw.azure import jsonc
from appgw.azure.emit import comment as one_line, emit
from appgw.azure.values import TemplateError
from appgw.azure.mapping import map_gateway
from appgw.azure.source import find_gateways


class UsageError(Exception):
    pass


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="appgw import-azure",
        description="Turn an Azure Application Gateway template (or an exported gateway) "
                    "into appgw.toml")
    parser.add_argument("template", metavar="TEMPLATE.json", help="ARM template, exported gateway, or "
                                         "`az network application-gateway show` output (JSON)")
    parser.add_argument("--parameters", metavar="PARAMS.json", help="an ARM parameters file")
    parser.add_argument("--set", metavar="NAME=VALUE", action="append", default=[],
                        help="a parameter value (wins over the parameters file); repeatable")
    parser.add_argument("-o", "--output", metavar="FILE", default="-",
                        help="where to write (default: standard output); with several gateways "
                             "each gets its name added: appgw-NAME.toml")
    parser.add_argument("--bind-host", metavar="HOST", default="0.0.0.0",
                        help="the address listeners bind (default 0.0.0.0)")
    return parser.parse_args(argv)


def read_json(path: str):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise UsageError(f"{path}: cannot read: {err.strerror}") from None
    try:
        return jsonc.loads(data.decode("utf-8-sig"))  # the portal's exports may carry a BOM
    except UnicodeDecodeError as err:
        raise UsageError(f"{path}: not UTF-8 (byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise UsageError(f"{path}: not JSON: line {err.lineno}, column {err.colno}: "
                         f"{err.msg}") from None


def parameter_values(path: str, warnings: list) -> dict:
    """NAME -> value from an ARM parameters file ({"parameters": {NAME: {"value": ...}}})."""
    doc = read_json(path)
    entries = doc.get("parameters", doc) if isinstance(doc, dict) else None
    if not isinstance(entries, dict):
        raise UsageError(f"{path}: expected an object of parameters")
    values = {}
    for name, entry in entries.items():
        where = f"{path}: parameters.{name}"
        if isinstance(entry, dict) and "value" in entry:
            values[name] = entry["value"]
        elif isinstance(entry, dict) and "reference" in entry:
            warnings.append(f"warning: {where}.reference: Key Vault references are not read; "
                            f"give the value with --set {name}=VALUE if the gateway needs it")
        else:
            raise UsageError(f"{where}: expected {{\"value\": ...}}")
    return values


def overrides(pairs: list) -> dict:
    result = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--set {pair}: expected NAME=VALUE")
        result[name] = value
    return result


def output_paths(output: str, names: list) -> list:
    if len(names) == 1:
        return [output]
    if output == "-":
        raise UsageError(f"the file holds {len(names)} gateways ({', '.join(names)}): name an "
                         "output with -o FILE and each is written to FILE with its name added")
    root, ext = os.path.splitext(output)
    return [f"{root}-{name}{ext or '.toml'}" for name in names]


def today() -> str:
    # SOURCE_DATE_EPOCH, where set, makes the output reproducible.
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    moment = (datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc) if epoch.isdigit()
              else datetime.datetime.now(datetime.timezone.utc))
    return moment.strftime("%Y-%m-%d")


def check(text: str, path: str, placeholders: list) -> tuple:
    """(ok, verdict lines) of `appgw --check` on `text` as if saved at `path`.

    Problems that are only a placeholder file still to be made do not fail it.
    """
    from appgw.config import ConfigError, parse_config
    from appgw.config.summary import summarize

    filename = "<stdout>" if path == "-" else path
    base_dir = os.getcwd() if path == "-" else os.path.dirname(os.path.abspath(path))
    try:
        config = parse_config(text, filename, base_dir)
    except ConfigError as err:
        missing = [p for p in placeholders if not os.path.exists(os.path.join(base_dir, p))]
        rest = [line for line in err.problems
                if not any(p in line for p in missing)]
        if rest:
            return False, ["appgw --check of the result: failed"] + rest
        return True, ["appgw --check of the result: ok once the placeholder files exist: "
                      + ", ".join(missing)]
    return True, ["appgw --check of the result:"] + summarize(config).splitlines()


def run(args, out, err) -> int:
    warnings: list = []
    values = parameter_values(args.parameters, warnings) if args.parameters else {}
    doc = read_json(args.template)
    source = os.path.basename(args.template)
    try:
        gateways = find_gateways(doc, values, overrides(args.set))
    except TemplateError as error:
        raise UsageError(f"{args.template}: {error}") from None
    paths = output_paths(args.output, [g.name for g in gateways])
    results = [map_gateway(gateway, args.bind_host) for gateway in gateways]
    for line in warnings:
        print(one_line(line), file=err)
    for result in results:
        for warning in result.warnings:
            print(one_line(f"warning: {args.template}: {warning}"), file=err)
    problems = [f"{args.template}: {p}" for r in results for p in r.problems]
    if problems:
        for line in problems:
            print(one_line(line), file=err)
        return 1  # nothing is written: a config that is missing parts would mislead
    status = 0
    for result, path in zip(results, paths):
        text = emit(result, source, today())
        if path == "-":
            out.write(text)
        else:
            try:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(text)
            except OSError as error:
                raise UsageError(f"{path}: cannot write: {error.strerror}") from None
            print(f"wrote {path} (gateway {json.dumps(result.name)})", file=err)
        ok, verdict = check(text, path, result.placeholder_files())
        for line in verdict:
            print(one_line(line), file=err)
        status = status if ok else 1
    return status


def main(argv=None, out=None, err=None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    args = parse_args(sys.argv[2:] if argv is None else argv)
    try:
        return run(args, out, err)
    except UsageError as error:
        print(one_line(str(error)), file=err)
        return 1
