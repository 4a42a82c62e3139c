"""The command line: a client of the running node."""
