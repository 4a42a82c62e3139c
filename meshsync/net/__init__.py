"""The network adapters: mDNS discovery and signed HTTP between peers."""
