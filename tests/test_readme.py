"""The README's promises that a test can hold it to.

- Every ```toml block is a config that passes `appgw --check` as a reader
  would use it: a whole file, or (first line `# add to appgw.toml`) an
  addition to the sample appgw.toml. A block whose first line is
  `# fragment` shows keys in place, not a config, and is not checked.
- The TLS section's openssl command makes the certificate its config uses.
- The tables of "Every key and its default" list exactly the fields of the
  config dataclasses, each with the default the dataclass holds.
- The README speaks to users: it names no internal documents.
"""
import dataclasses
import json
import os
import re
import subprocess
import sys

import pytest

from harness import APPGW, REPO

from appgw import config as schema

README = (REPO / "README.md").read_text(encoding="utf-8")
SAMPLE = (REPO / "appgw.toml").read_text(encoding="utf-8")

ADDITION = "# add to appgw.toml"
FRAGMENT = "# fragment"


def fenced_blocks(text, language):
    """[(line number, body)] of every ```language block."""
    pattern = re.compile(r"^```%s\n(.*?)^```$" % re.escape(language), re.M | re.S)
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in pattern.finditer(text)]


def first_line(body):
    return body.lstrip("\n").split("\n", 1)[0].strip()


def section(title):
    """The text of the README's `## title` section."""
    start = README.index("\n## %s\n" % title)
    end = README.find("\n## ", start + 1)
    return README[start:end if end != -1 else len(README)]


TOML_BLOCKS = fenced_blocks(README, "toml")
CONFIG_BLOCKS = [(line, body) for line, body in TOML_BLOCKS if first_line(body) != FRAGMENT]


def test_the_readme_has_config_blocks_and_the_big_one_is_whole():
    whole = [body for _, body in TOML_BLOCKS if first_line(body) not in (ADDITION, FRAGMENT)]
    assert len(whole) >= 3, "expected the remote, in-process and full configs"
    full = section("Configuration")
    assert any(body in full for body in whole), "the Configuration section's block must be a whole config"


@pytest.mark.parametrize("line,body", CONFIG_BLOCKS, ids=[f"line{n}" for n, _ in CONFIG_BLOCKS])
def test_config_block_passes_check(line, body, tmp_path):
    text = SAMPLE.rstrip("\n") + "\n\n" + body if first_line(body) == ADDITION else body
    if 'certificate = "cert.pem"' in text:
        make_readme_certificate(tmp_path)
    if '"myapp:app"' in text:
        write_readme_module(tmp_path, "myapp.py")
    (tmp_path / "appgw.toml").write_text(text, encoding="utf-8")
    # As the README runs it: from the config's directory, with PYTHONPATH=.
    result = subprocess.run([sys.executable, str(APPGW), "-c", "appgw.toml", "--check"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env=dict(os.environ, PYTHONPATH=os.pathsep.join([".", str(REPO)])))
    assert result.returncode == 0, f"README line {line}:\n{result.stderr}"
    assert "Traceback" not in result.stderr


def make_readme_certificate(directory):
    """Runs the TLS section's openssl command, as written, in `directory`."""
    commands = [body for _, body in fenced_blocks(section("TLS"), "sh") if "openssl req" in body]
    assert len(commands) == 1, "the TLS section shows one openssl command"
    subprocess.run(["bash", "-euc", commands[0]], cwd=directory, check=True,
                   capture_output=True, timeout=60)
    assert (directory / "cert.pem").is_file() and (directory / "key.pem").is_file()


def write_readme_module(directory, name):
    """Writes the README's ```python block whose first line is `# name`."""
    bodies = [body for _, body in fenced_blocks(README, "python") if first_line(body) == f"# {name}"]
    assert len(bodies) == 1, f"the README shows {name} once"
    (directory / name).write_text(bodies[0], encoding="utf-8")


def test_generated_certificates_are_git_ignored():
    ignored = (REPO / ".gitignore").read_text(encoding="utf-8").split("\n")
    assert "/cert.pem" in ignored and "/key.pem" in ignored


def test_the_sample_config_keeps_no_commented_https_block():
    assert "openssl" not in SAMPLE and "# [[listeners]]" not in SAMPLE


# --- the key tables -------------------------------------------------------------

# README table heading -> the dataclass it documents.
TABLES = {
    "[gateway]": schema.Gateway,
    "[[listeners]]": schema.Listener,
    "[[backend_pools]]": schema.BackendPool,
    "[[backend_settings]]": schema.BackendSettings,
    "[[probes]]": schema.Probe,
    "[[rules]]": schema.Rule,
    "[[rules.paths]]": schema.PathRule,
    "redirect = { ... }": schema.Redirect,
    "[[rewrite_sets]]": schema.RewriteSet,
    "[[rewrite_sets.rules]]": schema.RewriteRule,
    "conditions = [{ ... }]": schema.RewriteCondition,
    "url = { ... }": schema.UrlRewrite,
}
# Tables whose every key the full config need not set.
NOT_IN_FULL = (schema.Redirect, schema.RewriteCondition, schema.UrlRewrite)


def key_tables():
    """{heading: {key: default cell}} from the section's markdown tables."""
    text = section("Every key and its default")
    tables, current = {}, None
    for line in text.split("\n"):
        heading = re.match(r"^`([^`]+)`", line)
        if heading and heading.group(1) in TABLES:
            current = tables.setdefault(heading.group(1), {})
            continue
        row = re.match(r"^\| `([a-z0-9_]+)` \| ([^|]+) \|", line)
        if row and current is not None:
            assert row.group(1) not in current, f"{row.group(1)} listed twice"
            current[row.group(1)] = row.group(2).strip()
    return tables


def shown_default(field):
    """A dataclass field's default as the README writes it."""
    if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
        return "required"
    value = field.default
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "`%s`" % ("true" if value else "false")
    if isinstance(value, (int, float)):
        return "`%g`" % value
    if isinstance(value, str):
        return "`%s`" % json.dumps(value)
    if value == () and field.name in ("error_pages", "request_headers", "response_headers"):
        return "`{}`"   # TOML tables, kept as tuples of pairs
    if value == ():
        return "`[]`"
    if field.name == "compress_types":
        return "the list above"
    if field.name == "match_status":
        return "`[%s]`" % ", ".join('"%d-%d"' % pair for pair in value)
    raise AssertionError(f"no README form for the default of {field.name}: {value!r}")


def test_every_table_is_there():
    assert sorted(key_tables()) == sorted(TABLES)


@pytest.mark.parametrize("heading", list(TABLES))
def test_key_table_matches_the_schema(heading):
    cls = TABLES[heading]
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    rows = key_tables()[heading]
    assert sorted(rows) == sorted(fields), f"{heading}: README keys differ from {cls.__name__}'s fields"
    for name, field in fields.items():
        if cls is schema.BackendSettings and name == "port":
            # None in the dataclass: the protocol decides.
            assert rows[name] == "`80` (`443` for https)"
            continue
        assert rows[name] == shown_default(field), f"{heading} {name}"


def test_the_full_config_sets_every_key():
    full = section("Configuration")
    for heading, cls in TABLES.items():
        for f in dataclasses.fields(cls):
            if f.init and cls not in NOT_IN_FULL and f.name not in ("paths", "rules"):   # sub-tables
                assert re.search(r"^\s*%s = " % f.name, full, re.M), f"{heading} {f.name} not in the full config"


# --- words -------------------------------------------------------------------

@pytest.mark.parametrize("word", ["SPEC", "specification", "../shared", "issue"])
def test_the_readme_names_no_internal_documents(word):
    assert word.lower() not in README.lower()
