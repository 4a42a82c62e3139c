-- The node that made a version's content when another node published it (a resolution of
-- a conflict carries its winner's content, under a vector that descends from both sides);
-- '' when the origin made it.
ALTER TABLE files ADD COLUMN author TEXT NOT NULL DEFAULT '';
ALTER TABLE need ADD COLUMN author TEXT NOT NULL DEFAULT '';
ALTER TABLE losers ADD COLUMN author TEXT NOT NULL DEFAULT '';
ALTER TABLE held ADD COLUMN author TEXT NOT NULL DEFAULT '';
