-- Remote versions held back because their origin is not trusted here: they cannot be
-- verified, so they are not taken; they are kept (one per path and origin, the latest) to be
-- judged again as soon as that origin is trusted, and listed by `meshsync status` meanwhile.
CREATE TABLE held (
    folder TEXT NOT NULL,
    path TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('file', 'dir', 'symlink')),
    version TEXT NOT NULL,
    origin TEXT NOT NULL,
    deleted INTEGER NOT NULL CHECK (deleted IN (0, 1)),
    size INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    blocks BLOB NOT NULL CHECK (length(blocks) % 32 = 0),
    target TEXT NOT NULL,
    signature BLOB NOT NULL,
    source TEXT NOT NULL,
    PRIMARY KEY (folder, path, origin)
) WITHOUT ROWID;
