"""appgw: a gevent-based HTTP/WebSocket application gateway."""

__version__ = "0.1.0"
