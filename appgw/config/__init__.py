"""The configuration: one TOML file parsed once into frozen dataclasses.

`appgw.config.model` holds the types, `appgw.config.check` builds them from
TOML with every problem collected, `appgw.config.load` is the entry point,
`appgw.config.summary` the `--check` summary. Importers take what they need
from here.
"""
from appgw.config.model import *  # noqa: F401,F403  (the types and the address grammar)
from appgw.config.model import _derive, _quote  # noqa: F401  (for the checks)
from appgw.config.load import load_config, parse_config  # noqa: F401
