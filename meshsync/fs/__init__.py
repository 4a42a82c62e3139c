"""The filesystem adapter: what is on disk, how it changes, and writing remote versions safely."""
