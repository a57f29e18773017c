"""The command line: `appgw -c FILE [--check] [--log-level LEVEL]`, `appgw --version`,
`appgw import-azure TEMPLATE.json ...` (appgw/azure/command.py).

gevent's monkey patching runs before anything else is imported, so that
`requests` (used by the probers), `ssl` and `socket` all cooperate with the
hub; patching after `ssl` is imported leaves half-patched objects behind.
"""
import argparse
import sys


def parse_args(argv):
    from appgw import __version__

    parser = argparse.ArgumentParser(prog="appgw", description="HTTP and WebSocket application gateway",
                                     epilog="appgw import-azure TEMPLATE.json [-o FILE] turns an Azure "
                                            "Application Gateway template into appgw.toml "
                                            "(appgw import-azure --help)")
    parser.add_argument("-c", "--config", default="appgw.toml", help="the TOML file (default: appgw.toml)")
    parser.add_argument("--check", action="store_true", help="validate the file, print a summary and exit")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--version", action="version", version="appgw " + __version__)
    return parser.parse_args(argv)


def load(path):
    """The checked config (in-process apps imported), or None after printing
    every problem."""
    from appgw.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return None


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["import-azure"]:  # a converter: no gateway, no monkey patching
        from .azure.command import main as import_azure

        return import_azure(argv[1:])

    from gevent import monkey

    monkey.patch_all()
    args = parse_args(argv)

    import logging

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load(args.config)
    if config is None:
        return 1
    if args.check:
        from appgw.config.summary import summarize

        print(summarize(config))
        return 0

    from appgw.control.accesslog import AccessLogError
    from appgw.control.listener import BindError

    def reload_config(path):
        return load(path)

    try:
        if config.gateway.workers > 1:
            from appgw.control.workers import Master

            return Master(config, reload_config).run()
        from appgw.control.runtime import Runtime

        return Runtime(config, reload_config).run()
    except (BindError, AccessLogError) as exc:
        print(exc, file=sys.stderr)
        return 1
