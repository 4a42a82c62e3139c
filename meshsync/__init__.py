"""meshsync: keep folders identical across the machines of a LAN."""

__version__ = "0.1.0"
PROTOCOL_VERSION = 2
