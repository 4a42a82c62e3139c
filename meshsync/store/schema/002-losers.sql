-- Remote versions that lost to a concurrent version this node holds or waits for, and local
-- versions that lost to a concurrent remote one. Each is judged again whenever this node's
-- version of its path changes: a later change here (a deletion, an older mtime) may lose to
-- it, and forgetting it would leave this node apart from the nodes that hold it.
CREATE TABLE losers (
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
