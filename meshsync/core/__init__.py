"""The pure core: the rules of the mesh as functions on values, with no I/O."""
