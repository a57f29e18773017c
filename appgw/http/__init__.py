"""The protocol, sans-io: grammar, HTTP/1 heads and bodies, the request policy, the HTTP/2 layer."""
