"""The control socket: how the CLI talks to the running node."""
