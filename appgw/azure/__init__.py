"""`appgw import-azure`: an Azure Application Gateway template -> appgw.toml.

expressions  ARM template expressions (sans-io evaluator)
source       finding the gateways in a file; lazy, evaluated views of their JSON
mapping      a gateway's JSON -> an in-memory appgw config, with warnings
emit         that config as TOML text a person would write
command      the command line: files in, warnings and the check's verdict out
"""
