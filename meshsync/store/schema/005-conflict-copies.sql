-- Live conflict copies, for `status`: without it, counting them read every row of the folder
-- under the index's lock (a 100k-file folder: tens of milliseconds per status, scans waiting).
CREATE INDEX files_conflict_copies ON files (folder, path)
    WHERE NOT deleted AND path LIKE '%.sync-conflict-%';
