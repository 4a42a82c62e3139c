-- The index: what is on this node's disk, which blocks it holds, what it still has to fetch,
-- and how far it has read each peer's index. One database for every folder.

-- The last sequence number handed out per folder; kept apart from `files` so a number is never
-- handed out twice, whatever happens to the rows that carried it.
CREATE TABLE folder_seq (
    folder TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
) WITHOUT ROWID;

-- One row per path on disk; a deleted path keeps its row as a tombstone. `id` is stable across
-- updates (the store upserts), so `blocks` can point at it instead of repeating the path.
CREATE TABLE files (
    id INTEGER PRIMARY KEY,
    folder TEXT NOT NULL,
    path TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('file', 'dir', 'symlink')),
    version TEXT NOT NULL,  -- the version vector as a JSON object
    origin TEXT NOT NULL,
    deleted INTEGER NOT NULL CHECK (deleted IN (0, 1)),
    size INTEGER NOT NULL,
    mode INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    blocks BLOB NOT NULL CHECK (length(blocks) % 32 = 0),  -- concatenated SHA-256 digests
    target TEXT NOT NULL,
    signature BLOB NOT NULL,
    inode INTEGER NOT NULL,  -- unsigned 64-bit values are stored wrapped to signed
    dev INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    UNIQUE (folder, path)
);
CREATE UNIQUE INDEX files_by_seq ON files (folder, seq);

-- Which live local file holds which block: for reuse when writing, and for serving peers.
CREATE TABLE blocks (
    file INTEGER NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (file, idx)
) WITHOUT ROWID;
CREATE INDEX blocks_by_hash ON blocks (hash);

-- Remote versions accepted but not yet written to disk.
CREATE TABLE need (
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
    source TEXT NOT NULL,  -- node key of the peer it came from
    PRIMARY KEY (folder, path)
) WITHOUT ROWID;

-- The highest seq of each peer's index (per epoch of that index) already taken in.
CREATE TABLE peer_seq (
    folder TEXT NOT NULL,
    peer TEXT NOT NULL,
    epoch TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (folder, peer, epoch)
) WITHOUT ROWID;

CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
