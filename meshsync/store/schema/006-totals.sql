-- Running totals for `status` and hellos: the paths present and their bytes, the versions
-- queued and theirs. Counting them read every row of the folder each time (100k files: some
-- 40 MB per status or hello while a sync moves the counts); triggers keep them as rows change.
CREATE TABLE totals (
    folder TEXT NOT NULL,
    of TEXT NOT NULL CHECK (of IN ('files', 'need')),
    paths INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (folder, of)
) WITHOUT ROWID;
INSERT INTO totals
    SELECT folder, 'files', count(*), coalesce(sum(size), 0) FROM files WHERE NOT deleted
    GROUP BY folder;
INSERT INTO totals
    SELECT folder, 'need', count(*), coalesce(sum(size), 0) FROM need GROUP BY folder;

-- Present: a path whose row is not a tombstone.
CREATE TRIGGER files_added AFTER INSERT ON files WHEN NOT new.deleted BEGIN
    INSERT INTO totals VALUES (new.folder, 'files', 1, new.size)
        ON CONFLICT DO UPDATE SET paths = paths + 1, bytes = bytes + excluded.bytes;
END;
CREATE TRIGGER files_removed AFTER DELETE ON files WHEN NOT old.deleted BEGIN
    UPDATE totals SET paths = paths - 1, bytes = bytes - old.size
        WHERE folder = old.folder AND of = 'files';
END;
CREATE TRIGGER files_changed AFTER UPDATE OF folder, deleted, size ON files BEGIN
    UPDATE totals SET paths = paths - 1, bytes = bytes - old.size
        WHERE NOT old.deleted AND folder = old.folder AND of = 'files';
    INSERT INTO totals SELECT new.folder, 'files', 1, new.size WHERE NOT new.deleted
        ON CONFLICT DO UPDATE SET paths = paths + 1, bytes = bytes + excluded.bytes;
END;

-- Queued: every version, deletions included.
CREATE TRIGGER need_added AFTER INSERT ON need BEGIN
    INSERT INTO totals VALUES (new.folder, 'need', 1, new.size)
        ON CONFLICT DO UPDATE SET paths = paths + 1, bytes = bytes + excluded.bytes;
END;
CREATE TRIGGER need_removed AFTER DELETE ON need BEGIN
    UPDATE totals SET paths = paths - 1, bytes = bytes - old.size
        WHERE folder = old.folder AND of = 'need';
END;
CREATE TRIGGER need_changed AFTER UPDATE OF folder, size ON need BEGIN
    UPDATE totals SET paths = paths - 1, bytes = bytes - old.size
        WHERE folder = old.folder AND of = 'need';
    INSERT INTO totals VALUES (new.folder, 'need', 1, new.size)
        ON CONFLICT DO UPDATE SET paths = paths + 1, bytes = bytes + excluded.bytes;
END;
