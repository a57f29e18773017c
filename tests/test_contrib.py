"""The deployment files in contrib/ (systemd, container, Kubernetes) cannot rot:
each is parsed for real, the paths and commands it names exist in the
repository, the configs it carries pass `appgw --check`, and the timeouts
agree with drain_timeout. No network, no container runtime, no cluster.

PyYAML parses the Kubernetes manifests (it is in the `test` extra).
"""
import ast
import configparser
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath

import pytest
import yaml

from appgw.config import Gateway

REPO = Path(__file__).resolve().parent.parent
CONTRIB = REPO / "contrib"
UNIT = CONTRIB / "systemd" / "appgw.service"
CONTAINERFILE = CONTRIB / "container" / "Containerfile"
CONTAINER_TOML = CONTRIB / "container" / "appgw.toml"
K8S = CONTRIB / "kubernetes" / "appgw.yaml"
DEFAULT_DRAIN = Gateway().drain_timeout


# --- helpers -------------------------------------------------------------------

def entry_point():
    """(name, module, function) of the console script declared in setup.py."""
    text = (REPO / "setup.py").read_text(encoding="utf-8")
    match = re.search(r'"console_scripts"\s*:\s*\[\s*"\s*([\w.-]+)\s*=\s*([\w.]+)\s*:\s*(\w+)\s*"', text)
    assert match, "no console_scripts entry point in setup.py"
    return match.groups()


def check_config(path):
    """Run `bin/appgw -c path --check` with this interpreter; assert it passes."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "bin" / "appgw"), "-c", str(path), "--check"],
        capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.returncode == 0, "appgw --check failed for %s:\n%s%s" % (path, proc.stdout, proc.stderr)
    assert "ok" in proc.stdout.splitlines()[0]


def gateway_section(toml_text):
    """drain_timeout, admin_bind, listener ports and the gateway table of a TOML text."""
    data = tomllib.loads(toml_text)
    gw = data.get("gateway", {})
    return {
        "drain_timeout": gw.get("drain_timeout", DEFAULT_DRAIN),
        "admin_bind": gw.get("admin_bind", Gateway().admin_bind),
        "max_connections": gw.get("max_connections", Gateway().max_connections),
        "listener_ports": sorted({int(item["bind"].rsplit(":", 1)[1]) for item in data.get("listeners", [])}),
    }


def config_arg(args):
    """The value of -c/--config in an argument list."""
    for i, arg in enumerate(args):
        if arg in ("-c", "--config"):
            return args[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    raise AssertionError("no -c FILE in %r" % (args,))


def seconds(value):
    """A systemd time span ("45", "45s", "1min 30s") in seconds."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "ms": 0.001}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value):
        total += float(number) * units[unit]
    return total


# --- the entry point itself ------------------------------------------------------

def test_entry_point_exists():
    name, module, function = entry_point()
    assert name == "appgw"
    source = REPO / (module.replace(".", "/") + ".py")
    tree = ast.parse(source.read_text(encoding="utf-8"))
    assert function in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, \
        "%s:%s named in setup.py does not exist" % (module, function)
    assert (REPO / "bin" / name).is_file()


# --- systemd -------------------------------------------------------------------

@pytest.fixture(scope="module")
def unit():
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text(encoding="utf-8"))
    return parser


def test_unit_start_and_check(unit):
    service = unit["Service"]
    assert service["Type"] == "simple"
    start = shlex.split(service["ExecStart"])
    pre = shlex.split(service["ExecStartPre"])
    name, _, _ = entry_point()
    # systemd wants an absolute path; its last component is the console script.
    assert PurePosixPath(start[0]).is_absolute()
    assert PurePosixPath(start[0]).name == name
    assert pre[0] == start[0], "ExecStartPre must check with the same binary"
    assert "--check" in pre and "--check" not in start
    assert config_arg(pre) == config_arg(start)
    assert PurePosixPath(config_arg(start)).is_absolute()


def test_unit_reload_and_stop(unit):
    service = unit["Service"]
    assert re.fullmatch(r"/bin/kill -(HUP|SIGHUP|s HUP) \$MAINPID", service["ExecReload"])
    assert service["KillSignal"] == "SIGTERM"
    # SIGTERM to the main process only: with workers, a SIGTERM to each worker
    # as well would be taken as the "second SIGTERM" (stop at once).
    assert service["KillMode"] == "mixed"
    assert service["Restart"] == "on-failure"


def test_unit_stop_timeout_exceeds_drain_timeout(unit):
    # The unit points at /etc/appgw/appgw.toml; the install steps in its
    # header copy the repository's sample there. Its drain_timeout (or the
    # default) must fit inside TimeoutStopSec with a margin.
    assert "install -m 0644 appgw.toml /etc/appgw/appgw.toml" in UNIT.read_text()
    assert config_arg(shlex.split(unit["Service"]["ExecStart"])) == "/etc/appgw/appgw.toml"
    drain = gateway_section((REPO / "appgw.toml").read_text())["drain_timeout"]
    assert DEFAULT_DRAIN == 30
    assert seconds(unit["Service"]["TimeoutStopSec"]) >= drain + 5


def test_unit_user_capability_and_hardening(unit):
    service = unit["Service"]
    assert service["User"] not in ("", "root", "0")
    assert "CAP_NET_BIND_SERVICE" in service["AmbientCapabilities"].split()
    assert service["CapabilityBoundingSet"].split() == ["CAP_NET_BIND_SERVICE"]
    assert service["NoNewPrivileges"] == "true"
    assert service["ProtectSystem"] == "strict"
    assert service["ProtectHome"] == "true"
    assert service["PrivateTmp"] == "true"
    config_dir = str(PurePosixPath(config_arg(shlex.split(service["ExecStart"]))).parent)
    assert config_dir in service["ReadOnlyPaths"].split()
    # Two descriptors per proxied connection (client + backend) at least.
    assert int(service["LimitNOFILE"]) >= 65536 > 2 * Gateway().max_connections
    assert unit["Install"]["WantedBy"] == "multi-user.target"


# --- container -------------------------------------------------------------------

def containerfile():
    """[(INSTRUCTION, args)], continuation lines joined, comments dropped.
    args is a list: the JSON (exec) form parsed, else shell-split."""
    instructions, current = [], ""
    for raw in CONTAINERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, rest = current.partition(" ")
        rest = rest.strip()
        instructions.append((keyword.upper(), rest))
        current = ""
    assert not current, "dangling line continuation"
    return instructions


def instr(keyword):
    return [rest for kw, rest in containerfile() if kw == keyword]


def exec_form(rest):
    assert rest.startswith("["), "use the JSON (exec) form: %s" % rest
    return json.loads(rest)


def copies():
    """[(sources, dest)] of every COPY, flags dropped."""
    result = []
    for rest in instr("COPY"):
        parts = [p for p in shlex.split(rest) if not p.startswith("--")]
        result.append((parts[:-1], parts[-1]))
    return result


def container_user():
    users = instr("USER")
    assert users, "the image must set a non-root USER"
    return users[-1]


def test_containerfile_base_and_install():
    assert instr("FROM") == ["python:3.11-slim"]
    run = " ".join(instr("RUN"))
    # setup.py and the package are copied next to each other and installed.
    src = {tuple(s): d for s, d in copies()}
    setup_dest = src[("setup.py",)]
    root = str(PurePosixPath(setup_dest).parent)
    assert str(PurePosixPath(src[("appgw",)])) == root + "/appgw"
    assert re.search(r"pip install --no-cache-dir %s(\s|;|$)" % re.escape(root), run)
    assert "libcap2-bin" in run
    assert re.search(r"setcap cap_net_bind_service=\+ep [^;]*/usr/local/bin/python3", run)


def test_containerfile_copy_sources_exist():
    assert copies()
    for sources, _dest in copies():
        for source in sources:
            assert not source.startswith(("/", "..")), source
            assert (REPO / source).exists(), "COPY source %s missing (build context: repo root)" % source
            assert source not in (".", "./"), "copying the whole context would ship .git and .venv"


def test_containerfile_runs_entry_point_as_non_root():
    name, _, _ = entry_point()
    assert exec_form(instr("ENTRYPOINT")[-1]) == [name]
    user = container_user()
    uid = user.split(":")[0]
    assert uid not in ("root", "0")
    assert uid.isdigit(), "a numeric USER lets Kubernetes' runAsNonRoot verify it"
    assert instr("STOPSIGNAL") == ["SIGTERM"]


def test_containerfile_config_path_and_sample():
    cmd = exec_form(instr("CMD")[-1])
    path = config_arg(cmd)
    dests = {d: s for s, d in copies()}
    assert dests.get(path) == ["contrib/container/appgw.toml"], \
        "CMD reads %s but the sample is not copied there" % path
    check_config(CONTAINER_TOML)


def test_containerfile_ports_and_healthcheck():
    conf = gateway_section(CONTAINER_TOML.read_text())
    admin_host, admin_port = conf["admin_bind"].rsplit(":", 1)
    assert admin_host == "0.0.0.0", "health checks come from outside the container's loopback"
    assert conf["listener_ports"] == [80]
    exposed = {int(p.split("/")[0]) for rest in instr("EXPOSE") for p in rest.split()}
    assert exposed >= {80, 443, int(admin_port)} | set(conf["listener_ports"])
    health = instr("HEALTHCHECK")
    assert len(health) == 1
    options, _, command = health[0].partition("CMD ")
    args = exec_form(command.strip())
    assert args[:2] == ["python", "-c"]
    compile(args[2], "<healthcheck>", "exec")
    assert "urllib.request" in args[2]
    assert "http://127.0.0.1:%s/healthz" % admin_port in args[2]


# --- Kubernetes -------------------------------------------------------------------

@pytest.fixture(scope="module")
def k8s():
    docs = [d for d in yaml.safe_load_all(K8S.read_text(encoding="utf-8")) if d]
    kinds = [d["kind"] for d in docs]
    assert sorted(kinds) == ["ConfigMap", "Deployment", "Service"]
    return {d["kind"]: d for d in docs}


@pytest.fixture(scope="module")
def pod(k8s):
    spec = k8s["Deployment"]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    return spec, container


def embedded_toml(k8s):
    data = k8s["ConfigMap"]["data"]
    (key,) = [k for k in data if k.endswith(".toml")]
    return key, data[key]


def test_k8s_configmap_passes_check(k8s, tmp_path):
    key, text = embedded_toml(k8s)
    conf = gateway_section(text)
    assert conf["admin_bind"] == "0.0.0.0:9901"
    path = tmp_path / key
    path.write_text(text)
    check_config(path)


def test_k8s_config_mount_matches_args(k8s, pod):
    spec, container = pod
    name, _, _ = entry_point()
    assert container["image"] == "appgw:latest"
    # No command: the image's ENTRYPOINT (the console script) runs the args.
    assert container.get("command", [name]) == [name]
    path = PurePosixPath(config_arg(container["args"]))
    key, _ = embedded_toml(k8s)
    volumes = {v["name"]: v for v in spec["volumes"]}
    cm_name = k8s["ConfigMap"]["metadata"]["name"]
    mounted = []
    for mount in container["volumeMounts"]:
        source = volumes[mount["name"]].get("configMap")
        if source and source["name"] == cm_name:
            items = {i["key"]: i["path"] for i in source.get("items", [])} or {key: key}
            assert "subPath" not in mount, "a subPath mount never sees ConfigMap updates"
            mounted.append(PurePosixPath(mount["mountPath"]) / items[key])
    assert mounted == [path]
    # The same path the image's CMD uses, so the ConfigMap replaces the sample.
    assert str(path) == config_arg(exec_form(instr("CMD")[-1]))


def test_k8s_probes_on_admin(k8s, pod):
    _, container = pod
    _, text = embedded_toml(k8s)
    admin_port = int(gateway_section(text)["admin_bind"].rsplit(":", 1)[1])
    named = {p.get("name"): p["containerPort"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/healthz"
        port = named.get(get["port"], get["port"])
        assert port == admin_port == 9901
    ports = {p["containerPort"] for p in container["ports"]}
    assert ports >= {80, admin_port} | set(gateway_section(text)["listener_ports"])


def test_k8s_termination_grace_covers_prestop_and_drain(k8s, pod):
    spec, container = pod
    _, text = embedded_toml(k8s)
    drain = gateway_section(text)["drain_timeout"]
    pre_stop = container["lifecycle"]["preStop"]
    if "exec" in pre_stop:
        command = pre_stop["exec"]["command"]
        assert command[0] == "sleep"
        sleep = float(command[1])
    else:
        sleep = float(pre_stop["sleep"]["seconds"])
    assert 1 <= sleep <= 15
    assert spec["terminationGracePeriodSeconds"] >= sleep + drain + 5
    strategy = k8s["Deployment"]["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


def test_k8s_security_context(pod):
    spec, container = pod
    assert spec["securityContext"]["runAsNonRoot"] is True
    uid = container_user().split(":")[0]
    assert str(spec["securityContext"]["runAsUser"]) == uid, "runAsUser must match the image's USER"
    caps = container["securityContext"]["capabilities"]
    assert caps["drop"] == ["ALL"]
    assert caps["add"] == ["NET_BIND_SERVICE"]
    # The file capability on python needs privilege escalation (no_new_privs
    # makes the kernel ignore it) unless unprivileged ports start low enough.
    sysctls = {s["name"]: s["value"] for s in spec["securityContext"].get("sysctls", [])}
    if int(sysctls.get("net.ipv4.ip_unprivileged_port_start", 1024)) > 80:
        assert container["securityContext"].get("allowPrivilegeEscalation", True) is True
    assert "requests" in container["resources"]


def test_k8s_service_selects_deployment(k8s, pod):
    _, container = pod
    deployment, service = k8s["Deployment"], k8s["Service"]
    assert deployment["spec"]["replicas"] == 3
    template_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= template_labels.items()
    assert service["spec"]["selector"].items() <= template_labels.items()
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"].get("sessionAffinity", "None") == "None"
    named = {p.get("name"): p["containerPort"] for p in container["ports"]}
    (port,) = service["spec"]["ports"]
    assert port["port"] == 80
    assert named.get(port["targetPort"], port["targetPort"]) == 80
    assert 80 in named.values()


# --- the README -------------------------------------------------------------------

def test_readme_covers_every_file():
    readme = (CONTRIB / "README.md").read_text(encoding="utf-8")
    for path in (UNIT, CONTAINERFILE, CONTAINER_TOML, K8S):
        assert str(path.relative_to(REPO)) in readme, path
