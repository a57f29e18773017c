"""The drivers that face clients: HTTP/1 (greenlet and callback paths) and HTTP/2."""
