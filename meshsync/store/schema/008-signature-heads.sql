-- A vouched signature (crypto/runkey.py) is a head, the same for everything a node signs in
-- one run (the vouch by its SSH key and the run's key: about 900 bytes for an RSA-3072 key),
-- and a 68-byte tail. Each head is kept once, under its SHA-256; a row keeps the tail and
-- that digest in `sig_head` (NULL: `signature` is the whole signature). A first index of
-- 10k files by a node whose key is RSA in ssh-agent left 21.3 MB of state, then 8.4 MB.
CREATE TABLE sig_heads (
    id BLOB PRIMARY KEY,
    head BLOB NOT NULL
) WITHOUT ROWID;
ALTER TABLE files ADD COLUMN sig_head BLOB;
ALTER TABLE need ADD COLUMN sig_head BLOB;
ALTER TABLE losers ADD COLUMN sig_head BLOB;
ALTER TABLE held ADD COLUMN sig_head BLOB;
