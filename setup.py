"""Packaging for appgw. The version lives in appgw/__init__.py only."""
import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version():
    # Parsed, not imported: importing appgw at build time would pull in gevent.
    with open(os.path.join(HERE, "appgw", "__init__.py"), encoding="utf-8") as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


setup(
    name="appgw",
    version=read_version(),
    description="A gevent-based HTTP/WebSocket application gateway",
    packages=find_packages(exclude=["tests", "tests.*"]),
    python_requires=">=3.11",
    install_requires=[
        "gevent>=24",
        "gevent-websocket>=0.10",
        "h2>=4.1",
        "httptools>=0.6",
        "requests>=2.31",
        "prometheus_client>=0.20",
        # Automatic HTTPS (ACME): certbot's client library and its JOSE and X.509 layers.
        "acme>=5",
        "josepy>=2",
        "cryptography>=42",
        "brotli>=1.1",
        'toml; python_version<"3.11"',
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "websocket-client>=1.7",
            "websockets>=15",
            "hypothesis>=6",
            "h11>=0.14",
            "pyyaml>=6",
            "httpx[http2]>=0.27",
            "ruff>=0.6",
        ],
    },
    entry_points={"console_scripts": ["appgw = appgw.cli:main"]},
    # The demo's page is inline HTML in appgw/demo.py: no package data to ship.
)
