"""The one family of errors that reach a client: each carries its status."""


class ClientError(Exception):
    """A request the gateway refuses; `status` is what the client is answered."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


class BackendError(Exception):
    """The backend failed before or while answering; `status` is 502 or 504.
    `replayable`: the connection failed before any byte of an answer, so a
    request that is safe to repeat may go again on a new connection."""

    def __init__(self, status: int, reason: str, replayable: bool = False):
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.replayable = replayable
