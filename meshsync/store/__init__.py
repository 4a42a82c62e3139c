"""The store: the SQLite index of local files, their blocks, pending versions and peer marks."""
