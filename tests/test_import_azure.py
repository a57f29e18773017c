"""`appgw import-azure`: ARM expressions, the mapping, the TOML text and bad input.

All without a socket (marked sansio): the expression evaluator and the
mapping are pure, and the command is called in-process on the templates
in tests/azure/. The written file through `appgw --check` and a live
gateway on an imported config are in test_import_azure_live.py.
"""
import copy
import io
import json
import re
import tomllib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appgw.azure import command
from appgw.azure.expressions import Template
from appgw.azure.functions import SUBSCRIPTION_ID
from appgw.azure.values import TemplateError
from harness import REPO

pytestmark = pytest.mark.sansio

DATA = REPO / "tests" / "azure"
EPOCH = "1764547200"  # 2025-12-01: the date in the expected headers


@pytest.fixture
def importer(monkeypatch):
    """Runs the command in-process from tests/azure/: (exit status, stdout, stderr lines)."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    monkeypatch.chdir(DATA)

    def run(*args):
        out, err = io.StringIO(), io.StringIO()
        status = command.main([str(a) for a in args], out, err)
        return status, out.getvalue(), err.getvalue().splitlines()

    return run


def warnings_of(lines):
    return [line for line in lines if line.startswith("warning: ")]


def verdict_of(lines):
    start = next(i for i, line in enumerate(lines) if line.startswith("appgw --check of the result"))
    return lines[start:]


# --- expressions -------------------------------------------------------------------

TEMPLATE = {
    "parameters": {
        "name": {"type": "string", "defaultValue": "Contoso-GW"},
        "port": {"type": "int", "defaultValue": 8080},
        "flag": {"type": "bool", "defaultValue": False},
        "hosts": {"type": "array", "defaultValue": ["a.example", "b.example"]},
        "tier": {"type": "string", "defaultValue": "gold", "allowedValues": ["gold", "silver"]},
        "derived": {"type": "string", "defaultValue": "[concat(parameters('name'), '-x')]"},
        "required": {"type": "string"},
    },
    "variables": {
        "lower": "[toLower(parameters('name'))]",
        "chain": "[concat(variables('lower'), '/', variables('upper'))]",
        "upper": "[toUpper(variables('lower'))]",
        "loopA": "[variables('loopB')]",
        "loopB": "[variables('loopA')]",
        "object": {"inner": {"port": "[parameters('port')]"}, "list": [1, 2, 3]},
        "copy": [
            {"name": "names", "count": 3, "input": "[format('srv{0:D2}', copyIndex('names', 1))]"},
            {"name": "objects", "count": "[length(parameters('hosts'))]",
             "input": {"host": "[parameters('hosts')[copyIndex('objects')]]", "index": "[copyIndex('objects')]"}},
            {"name": "unnamed", "count": 1, "input": "[copyIndex()]"},
        ],
    },
}


def evaluate(text, values=None, overrides=None):
    return Template(TEMPLATE, values, overrides).string(text, "x")


@pytest.mark.parametrize("text, expected", [
    ("[parameters('name')]", "Contoso-GW"),
    ("[parameters('NAME')]", "Contoso-GW"),  # names are case-insensitive, as in ARM
    ("[parameters('derived')]", "Contoso-GW-x"),  # a default that is an expression
    ("[variables('chain')]", "contoso-gw/CONTOSO-GW"),  # variables referencing variables
    ("[variables('object').inner.port]", 8080),
    ("[variables('object')['list'][2]]", 3),
    ("[concat('a', 'b', string(1))]", "ab1"),
    ("[concat(createArray(1), createArray(2, 3))]", [1, 2, 3]),
    ("[format('{0}-{1}', 'a', 7)]", "a-7"),
    ("[format('{0:D3}|{1:X}|{{x}}|{2,4}', 7, 255, 'ab')]", "007|FF|{x}|  ab"),
    ("[resourceId('Microsoft.Network/applicationGateways/httpListeners', 'gw', 'web')]",
     f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/resource-group/providers/"
     "Microsoft.Network/applicationGateways/gw/httpListeners/web"),
    ("[resourceId('other-rg', 'Microsoft.Network/publicIPAddresses', 'ip')]",
     f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/other-rg/providers/"
     "Microsoft.Network/publicIPAddresses/ip"),
    ("[resourceGroup().id]", f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/resource-group"),
    ("[subscription().subscriptionId]", SUBSCRIPTION_ID),
    ("[toLower('AbC')]", "abc"),
    ("[toUpper('AbC')]", "ABC"),
    ("[if(parameters('flag'), parameters('required'), 'no')]", "no"),  # the other branch is not evaluated
    ("[if(equals(parameters('port'), 8080), 'yes', 'no')]", "yes"),
    ("[equals('8080', parameters('port'))]", False),  # types differ
    ("[string(parameters('flag'))]", "False"),
    ("[string(variables('object').inner)]", '{"port":8080}'),
    ("[int('42')]", 42),
    ("[bool('TRUE')]", True),
    ("[bool(0)]", False),
    ("[variables('names')]", ["srv01", "srv02", "srv03"]),
    ("[variables('objects')[1]]", {"host": "b.example", "index": 1}),
    ("[[literal]", "[literal]"),
    ("not [an] expression", "not [an] expression"),
    ("[length(split('a,b,c', ','))]", 3),
    ("[and(true, not(false))]", True),
    ("[add(mul(2, 3), sub(10, 4))]", 12),
    ("[div(7, 2)]", 3),
    ("[mod(7, 3)]", 1),
    ("[subscriptionResourceId('Microsoft.Network/dnsZones', 'z')]",
     f"/subscriptions/{SUBSCRIPTION_ID}/providers/Microsoft.Network/dnsZones/z"),
    ("[tenantResourceId('Microsoft.Management/managementGroups', 'mg')]",
     "/providers/Microsoft.Management/managementGroups/mg"),
    ("[deployment().name]", "deployment"),
    ("[replace('a-b-c', '-', '.')]", "a.b.c"),
    ("[substring('gateway', 3, 3)]", "ewa"),
    ("[contains(parameters('hosts'), 'b.example')]", True),
    ("[contains(variables('object'), 'INNER')]", True),
    ("[empty('')]", True),
    ("[or(false, equals(1, 1))]", True),
    ("[createObject('a', 1).a]", 1),
    ("[json('{\"k\": [1, 2]}').k[1]]", 2),
    ("[first(parameters('hosts'))]", "a.example"),
    ("[last('abc')]", "c"),
    ("[union(createArray(1, 2), createArray(2, 3))]", [1, 2, 3]),
    ("[union(createObject('a', 1), createObject('b', 2))]", {"a": 1, "b": 2}),
    ("[coalesce(null(), 'x')]", "x"),
    ("[min(3, 1, 2)]", 1),
    ("[max(createArray(3, 9, 2))]", 9),
    ("[range(2, 3)]", [2, 3, 4]),
    ("[padLeft('7', 3, '0')]", "007"),
    ("[trim('  x ')]", "x"),
    ("[startsWith('Gateway', 'gate')]", True),
    ("[endsWith('gateway', 'WAY')]", True),
    ("[indexOf('gateway', 'way')]", 4),
    ("[base64('ab')]", "YWI="),
    ("[greater(2, 1)]", True),
    ("[lessOrEquals('a', 'b')]", True),
])
def test_expression_values(text, expected):
    assert evaluate(text) == expected


def test_unique_string_is_deterministic_and_depends_on_its_arguments():
    first = evaluate("[uniqueString(resourceGroup().id, 'a')]")
    assert re.fullmatch(r"[a-z2-7]{13}", first)
    assert evaluate("[uniqueString(resourceGroup().id, 'a')]") == first
    assert evaluate("[uniqueString(resourceGroup().id, 'b')]") != first


def test_parameter_values_from_a_file_and_from_set():
    assert evaluate("[parameters('port')]", values={"port": 9000}) == 9000
    assert evaluate("[parameters('required')]", values={"required": "given"}) == "given"
    # --set text is converted to the parameter's type and wins over the file
    assert evaluate("[parameters('port')]", {"port": 9000}, {"port": "9100"}) == 9100
    assert evaluate("[parameters('flag')]", overrides={"flag": "true"}) is True
    assert evaluate("[parameters('hosts')[0]]", overrides={"hosts": '["c.example"]'}) == "c.example"


@pytest.mark.parametrize("text, values, overrides, message", [
    ("[parameters('required')]", None, None,
     'x: parameter "required" has no value (no defaultValue): give it in --parameters or with '
     "--set required=VALUE"),
    ("[parameters('nope')]", None, None, 'x: no parameter named "nope" in the template'),
    ("[variables('nope')]", None, None, 'x: no variable named "nope" in the template'),
    ("[variables('loopA')]", None, None,
     "variables.loopA: refers to itself (variables.loopA -> variables.loopB -> variables.loopA)"),
    ("[mystery(1)]", None, None, "x: unknown template function mystery()"),
    ("[ns.helper(1)]", None, None, "x: unknown template function ns.helper()"),
    ("[reference('vnet').subnets]", None, None,
     "x: function reference() cannot be evaluated outside Azure: it reads a deployed resource"),
    ("[listKeys('sa', '2023-01-01')]", None, None,
     "x: function listKeys() cannot be evaluated outside Azure: it needs a deployed resource"),
    ("[concat('a', ]", None, None,
     "x: cannot parse the expression \"[concat('a', ]\": the expression ends too early"),
    ("[concat('a') 'b']", None, None,
     "x: cannot parse the expression \"[concat('a') 'b']\": unexpected 'b' after the expression"),
    ("[copyIndex()]", None, None, "x: copyIndex() is used outside a copy loop"),
    ("[variables('unnamed')]", None, None,
     "variables.copy[2].input: copyIndex() without a loop name counts the resource's copy loop, "
     'and there is none here: name the loop, copyIndex("unnamed")'),
    ("[int('4x')]", None, None, 'x: int(): cannot convert string "4x" to an integer'),
    ("[toLower(1)]", None, None, "x: toLower(): the argument must be a string, got int 1"),
    ("[format('{1}', 'a')]", None, None, "x: format(): {1} but only 1 values follow"),
    ("[variables('object').missing]", None, None,
     'x: object {"inner": {"port": 8080}, "list": [1, 2, 3]} has no property "missing"'),
    ("[parameters('tier')]", {"tier": "bronze"}, None,
     'x: parameter "tier" must be one of ["gold", "silver"], got "bronze"'),
    ("[parameters('port')]", {"port": "80"}, None, 'x: parameter "port" is of type int, got string "80"'),
    ("[parameters('port')]", None, {"port": "eighty"}, '--set: port=eighty: parameter "port" is of type int'),
])
def test_expression_errors_name_the_path_and_the_function(text, values, overrides, message):
    with pytest.raises(TemplateError) as caught:
        evaluate(text, values, overrides)
    assert str(caught.value) == message


# --- the mapping, as text ---------------------------------------------------------------

def test_full_template_text_and_warnings(importer):
    """Every mapping and expression kind at once (tests/azure/full.json)."""
    status, out, err = importer("full.json")
    assert out == (DATA / "full.toml").read_text()
    assert warnings_of(err) == (DATA / "full.warnings").read_text().splitlines()
    # the one thing that reaches the config with no value: the placeholders say so
    assert "[parameters('certData')]" not in out


def test_full_template_passes_check_once_placeholders_exist(importer):
    status, out, err = importer("full.json")
    assert verdict_of(err) == [
        "appgw --check of the result: ok once the placeholder files exist: "
        "certs/contoso-cert.pem, certs/contoso-cert.key, certs/kv-cert.pem, certs/kv-cert.key, "
        "certs/internal-ca.pem, errors/503.html, errors/https-listener-502.html"]
    assert status == 0


def test_rewrites_and_error_pages_are_mapped(importer):
    """rewriteRuleSets -> [[rewrite_sets]] in ruleSequence order, the path override ->
    a generated set, customErrorConfigurations -> error_pages (gateway and listener)."""
    status, out, err = importer("full.json")
    sets = re.findall(r'^\[\[rewrite_sets\]\]\nname = "([^"]+)"', out, re.M)
    assert sets == ["security", "api-headers", "images-settings-path", "none"]
    legacy = out.split('# pathRules "legacy"')[1].split("# pathRules")[0]
    assert 'rewrite_set = "none"' in legacy  # not the rule's "security"
    security = out.split('name = "security"')[1].split("[[rewrite_sets]]")[0]
    assert security.index('"strip-server"') < security.index('"hsts"')  # sequence 100 before 200
    assert '{ variable = "var_uri_path", pattern = "^(?:/img1/|/img2/)(.*)" }' in out
    assert 'url = { path = "/static/{var_uri_path_1}" }' in out
    assert 'error_pages = { "503" = "errors/503.html" }' in out
    assert 'error_pages = { "502" = "errors/https-listener-502.html" }' in out
    assert "#   errors/503.html                 https://contoso.com/errors/maintenance.html" in out


def test_basic_path_override_puts_the_override_before_the_path(tmp_path, importer):
    template = json.loads((DATA / "minimal.json").read_text())
    settings = template["resources"][0]["properties"]["backendHttpSettingsCollection"][0]
    settings["properties"]["path"] = "/base/"
    (tmp_path / "t.json").write_text(json.dumps(template))
    status, out, err = importer(tmp_path / "t.json")
    assert '# path override "/base/": a rewrite on the rules that use it' in out
    assert 'rewrite_set = "settings-path"' in out
    assert 'url = { path = "/base{var_uri_path}" }' in out
    assert status == 0, err


def test_live_template_text_passes_check(importer):
    status, out, err = importer("live.json", "--set", "gatewayPort=18080", "--set", "redirectPort=18081",
                                "--set", "backendPort=18090", "--bind-host", "127.0.0.1")
    assert out == (DATA / "live.toml").read_text()
    assert err == ["appgw --check of the result: ok once the placeholder files exist: errors/502.html"]
    assert status == 0


def test_exported_gateway_and_az_show_output_give_the_template_config(importer):
    results = [importer(name) for name in ("minimal.json", "exported.json", "az-show.json")]
    bodies = [out.split("\n", 1)[1] for _, out, _ in results]
    # the export states requestTimeout 20; the template left it to the cloud gateway's 30
    assert bodies[1] == bodies[0].replace("request_timeout = 30  # the cloud gateway's default\n",
                                          "request_timeout = 20\n")
    assert bodies[2] == bodies[1]
    assert warnings_of(results[1][2]) == [
        "warning: exported.json: properties.sku: the cloud gateway's size and tier: no equivalent "
        "in appgw, not imported"]
    assert warnings_of(results[2][2]) == [
        "warning: az-show.json: sku: the cloud gateway's size and tier: no equivalent in appgw, "
        "not imported"]
    assert [status for status, _, _ in results] == [0, 0, 0]


def test_az_list_output_is_an_array_of_gateways(tmp_path, importer):
    (tmp_path / "list.json").write_text("[" + (DATA / "az-show.json").read_text() + "]")
    status, out, err = importer(tmp_path / "list.json")
    assert out.split("\n", 1)[1] == importer("az-show.json")[1].split("\n", 1)[1]
    assert warnings_of(err)[0].endswith("list.json: [0].sku: the cloud gateway's size and tier: "
                                        "no equivalent in appgw, not imported")


def test_parameters_file_and_set(tmp_path, importer):
    params = {"$schema": "x", "contentVersion": "1.0.0.0",
              "parameters": {"port": {"value": 9090}}}
    (tmp_path / "p.json").write_text(json.dumps(params))
    status, out, err = importer("minimal.json", "--parameters", tmp_path / "p.json")
    assert 'bind = "0.0.0.0:9090"' in out
    status, out, err = importer("minimal.json", "--parameters", tmp_path / "p.json", "--set", "port=9191")
    assert 'bind = "0.0.0.0:9191"' in out


def test_several_gateways_get_a_file_each(tmp_path, importer):
    template = json.loads((DATA / "minimal.json").read_text())
    gateway = template["resources"][0]
    gateway["name"] = "[concat('gw', copyIndex())]"
    gateway["copy"] = {"name": "gateways", "count": 2}
    gateway["properties"]["frontendPorts"][0]["properties"]["port"] = "[add(8000, copyIndex())]"
    for rule in gateway["properties"]["requestRoutingRules"]:
        for ref in rule["properties"].values():
            if isinstance(ref, dict):
                ref["id"] = ref["id"].replace("'mini-gw'", "concat('gw', copyIndex())")
    gateway["properties"]["httpListeners"][0]["properties"]["frontendPort"]["id"] = \
        "[concat('x/frontendPorts/port')]"
    (tmp_path / "t.json").write_text(json.dumps(template))
    status, out, err = importer(tmp_path / "t.json")
    assert status == 1 and err == ["the file holds 2 gateways (gw0, gw1): name an output with -o FILE "
                                   "and each is written to FILE with its name added"]
    status, out, err = importer(tmp_path / "t.json", "-o", tmp_path / "appgw.toml")
    assert status == 0, err
    assert 'bind = "0.0.0.0:8000"' in (tmp_path / "appgw-gw0.toml").read_text()
    assert 'bind = "0.0.0.0:8001"' in (tmp_path / "appgw-gw1.toml").read_text()


# --- bad input ------------------------------------------------------------------------

@pytest.mark.parametrize("name, line", [
    ("bad-not-json.json",
     "bad-not-json.json: not JSON: line 3, column 54: Expecting property name enclosed in double quotes"),
    ("bad-no-gateway.json",
     "bad-no-gateway.json: resources: no Microsoft.Network/applicationGateways resource in the template"),
    ("bad-dangling.json",
     "bad-dangling.json: resources[0].properties.requestRoutingRules[0].properties.httpListener.id: "
     'dangling reference: no httpListeners named "lisener" in gateway "mini-gw"'),
    ("bad-unknown-function.json",
     "bad-unknown-function.json: resources[0].properties.frontendPorts[0].properties.port: "
     "unknown template function mystery()"),
    ("bad-no-value.json",
     "bad-no-value.json: resources[0].properties.frontendPorts[0].properties.port: "
     'parameter "port" has no value (no defaultValue): give it in --parameters or with --set port=VALUE'),
    ("missing.json", "missing.json: cannot read: No such file or directory"),
])
def test_bad_input_is_one_line_and_exit_1(tmp_path, importer, name, line):
    status, out, err = importer(name, "-o", tmp_path / "appgw.toml")
    assert (status, err) == (1, [line])
    assert not (tmp_path / "appgw.toml").exists()


def test_json_without_a_gateway_object(importer, tmp_path):
    (tmp_path / "t.json").write_text('{"name": "x", "type": "Microsoft.Web/sites"}')
    status, out, err = importer(tmp_path / "t.json")
    assert status == 1
    assert err == [f"{tmp_path / 't.json'}: no application gateway found: expected an ARM template "
                   "with a Microsoft.Network/applicationGateways resource, an exported gateway, or "
                   "`az network application-gateway show` output"]


@pytest.mark.parametrize("change, line", [
    (lambda p: p["httpListeners"][0]["properties"].update(hostName="www.*.example.com"),
     'resources[0].properties.httpListeners[0].properties.hostName: "www.*.example.com": appgw '
     'matches host names exactly or as "*.suffix", not with other wildcards'),
    (lambda p: p["requestRoutingRules"][0]["properties"].update(ruleType="Weighted"),
     'resources[0].properties.requestRoutingRules[0].properties.ruleType: must be Basic or '
     'PathBasedRouting, got "weighted"'),
    (lambda p: p["backendAddressPools"][0]["properties"].update(backendAddresses=[]),
     'resources[0].properties.backendAddressPools[0].properties: backend pool "pool" has no '
     "addresses and a rule uses it: appgw needs at least one server"),
    (lambda p: p["backendHttpSettingsCollection"][0]["properties"].update(port="80"),
     'resources[0].properties.backendHttpSettingsCollection[0].properties.port: must be int, '
     'got string "80"'),
])
def test_what_cannot_be_mapped_is_a_problem(tmp_path, importer, change, line):
    template = json.loads((DATA / "minimal.json").read_text())
    change(template["resources"][0]["properties"])
    (tmp_path / "t.json").write_text(json.dumps(template))
    status, out, err = importer(tmp_path / "t.json")
    assert (status, out, err) == (1, "", [f"{tmp_path / 't.json'}: {line}"])


# --- the README's example ----------------------------------------------------------------

def readme_example():
    text = (REPO / "README.md").read_text()
    section = text.split("## Importing an Azure Application Gateway\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(\w*)\n(.*?)```", section, re.S)
    template = next(body for kind, body in blocks if kind == "json")
    printed = next(body for kind, body in blocks if kind == "")
    written = next(body for kind, body in blocks if kind == "toml")
    return template, printed, written


def test_readme_example_is_what_the_command_does(tmp_path, importer):
    """The README's template gives the README's output (its stderr up to "..."),
    and the config it shows is the file written."""
    template, printed, written = readme_example()
    (tmp_path / "gateway.json").write_text(template)
    status, out, err = importer(tmp_path / "gateway.json", "-o", tmp_path / "appgw.toml")
    shown = [line.replace(f"{tmp_path}/", "") for line in err]
    expected = printed.splitlines()
    assert expected[-1] == "..."
    assert (status, shown[:len(expected) - 1]) == (0, expected[:-1])
    assert (tmp_path / "appgw.toml").read_text() == written


# --- whatever the template holds -----------------------------------------------------------

FULL = json.loads((DATA / "full.json").read_text())


def _paths(node, path=()):
    yield path
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        yield from _paths(child, path + (key,))


FULL_PATHS = list(_paths(FULL))[1:]
ODD_VALUES = [None, 0, -1, 70000, True, "", "x", "[", "[mystery()]", "[parameters('nope')]",
              "[copyIndex()]", "[concat(", [], {}, [1], {"id": 3}, {"id": "x/y"}, "/a/*",
              "*.a.b", "fd00::1", 'a"b\nc', "ü\x00", "[[x]"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(FULL_PATHS), st.sampled_from(ODD_VALUES)), min_size=1, max_size=3))
def test_any_change_to_a_template_gives_lines_or_toml_never_a_traceback(tmp_path, importer, changes):
    doc = copy.deepcopy(FULL)
    for path, value in changes:
        node = doc
        try:
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = copy.deepcopy(value)
        except (KeyError, IndexError, TypeError):
            pass  # an earlier change removed the way there
    (tmp_path / "t.json").write_text(json.dumps(doc))
    status, out, err = importer(tmp_path / "t.json")
    assert status in (0, 1)
    if out:
        tomllib.loads(out)
    else:
        assert status == 1 and err
    assert all("\x00" not in line for line in err)


def test_comments_condition_and_symbolic_resources(tmp_path, importer):
    """ARM allows // and /* */ comments, a resource `condition`, and (languageVersion
    2.0) resources as an object of symbolic names."""
    template = json.loads((DATA / "minimal.json").read_text())
    template["parameters"]["deploy"] = {"type": "bool", "defaultValue": True}
    gateway = template["resources"][0]
    gateway["condition"] = "[parameters('deploy')]"
    template["languageVersion"] = "2.0"
    template["resources"] = {"gateway": gateway}
    text = json.dumps(template, indent=2).replace(
        '"contentVersion"', '// the gateway of the tests\n  /* a block\n  comment */ "contentVersion"')
    (tmp_path / "t.json").write_text(text)
    status, out, err = importer(tmp_path / "t.json")
    assert status == 0, err
    assert out.split("\n", 1)[1] == importer("minimal.json")[1].split("\n", 1)[1]
    status, out, err = importer(tmp_path / "t.json", "--set", "deploy=false")
    assert (status, err) == (1, [f"{tmp_path / 't.json'}: resources: no Microsoft.Network/"
                                 "applicationGateways resource is deployed with these parameters "
                                 "(its condition is false)"])


def test_a_listener_no_rule_uses_is_left_out(tmp_path, importer):
    template = json.loads((DATA / "minimal.json").read_text())
    listeners = template["resources"][0]["properties"]["httpListeners"]
    listeners.append(dict(listeners[0], name="spare"))
    (tmp_path / "t.json").write_text(json.dumps(template))
    status, out, err = importer(tmp_path / "t.json")
    assert status == 0
    assert 'name = "spare"' not in out
    assert warnings_of(err) == [f"warning: {tmp_path / 't.json'}: resources[0].properties."
                                'httpListeners[1]: listener "spare" is used by no rule: not imported']


def test_every_part_without_an_equivalent_is_one_warning_line(importer):
    """tests/azure/unmapped.json: a working gateway plus everything appgw has no
    equivalent for; a feature switched off (enableFips false) is no warning."""
    status, out, err = importer("unmapped.json")
    assert warnings_of(err) == (DATA / "unmapped.warnings").read_text().splitlines()
    assert status == 0
    assert verdict_of(err)[:2] == ["appgw --check of the result:", "<stdout>: ok"]


def test_an_output_that_cannot_be_written_is_one_line(tmp_path, importer):
    status, out, err = importer("minimal.json", "-o", tmp_path / "no-such-dir" / "appgw.toml")
    assert (status, err) == (1, [f"{tmp_path / 'no-such-dir' / 'appgw.toml'}: cannot write: "
                                 "No such file or directory"])


def test_parameter_input_problems(tmp_path, importer):
    params = {"parameters": {"port": {"value": 9090},
                             "secret": {"reference": {"keyVault": {"id": "/kv"}, "secretName": "s"}}}}
    (tmp_path / "p.json").write_text(json.dumps(params))
    status, out, err = importer("minimal.json", "--parameters", tmp_path / "p.json")
    assert status == 0 and 'bind = "0.0.0.0:9090"' in out
    assert warnings_of(err) == [
        f"warning: {tmp_path / 'p.json'}: parameters.secret.reference: Key Vault references are "
        "not read; give the value with --set secret=VALUE if the gateway needs it"]
    assert importer("minimal.json", "--set", "prot=80")[::2] == (
        1, ['minimal.json: --set: no parameter named "prot" in the template'])
    assert importer("minimal.json", "--set", "port")[::2] == (1, ["--set port: expected NAME=VALUE"])
    assert importer("exported.json", "--set", "port=80")[::2] == (
        1, ["exported.json: --parameters/--set: parameters apply to ARM templates only; this is "
            "an exported gateway"])


@pytest.mark.parametrize("kind, status", [("Permanent", 301), ("Found", 302), ("SeeOther", 303),
                                          ("Temporary", 307)])
def test_redirect_types(tmp_path, importer, kind, status):
    template = json.loads((DATA / "minimal.json").read_text())
    props = template["resources"][0]["properties"]
    props["redirectConfigurations"] = [{"name": "away", "properties": {
        "redirectType": kind, "targetUrl": "https://example.com/new", "includeQueryString": True}}]
    rule = props["requestRoutingRules"][0]["properties"]
    del rule["backendAddressPool"], rule["backendHttpSettings"]
    rule["redirectConfiguration"] = {"id": "x/redirectConfigurations/away"}
    (tmp_path / "t.json").write_text(json.dumps(template))
    status_code, out, err = importer(tmp_path / "t.json")
    assert status_code == 0, err
    assert (f'redirect = {{ url = "https://example.com/new", status = {status}, include_path = false, '
            'include_query = true }  # redirectConfigurations "away"') in out
