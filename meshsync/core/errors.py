"""The errors the core raises, each carrying a message fit to show a user or log for a peer."""


class MeshsyncError(Exception):
    """Base of meshsync's own errors: the message is the whole story."""


class WireError(MeshsyncError):
    """A peer sent a message that is not what the protocol allows."""


class AuthError(MeshsyncError):
    """A request is unsigned, badly signed, stale or replayed."""


class Refused(MeshsyncError):
    """A well-formed request this node will not serve (a folder it does not share with you)."""
