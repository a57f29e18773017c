"""`appgw import-azure`: an Azure Application Gateway template -> appgw.toml.

values       ARM values: names without regard to case, types, TemplateError
expressions  ARM template expressions: the parser and the evaluator (sans-io)
functions    the template functions it knows
source       finding the gateways in a file; lazy, evaluated views of their JSON
model        the imported config in memory: tables, placeholders, warnings, problems
reader       typed values, collections and references of one gateway, problems collected
mapping      a gateway: listeners, certificates, pools, settings, probes (+ routes, rewrites)
routes       rules, path maps and redirects
rewrites     rewrite sets and backend path overrides
emit         that config as TOML text a person would write
command      the command line: files in, warnings and the check's verdict out
"""
