-- What the audit tail hands to WatchEvents and to the Merkle tree must survive a failover
-- (issue 16). PostgreSQL makes a commit visible to other sessions before a synchronous
-- standby has confirmed it: a reader on the primary can see an event that a failover at that
-- moment then loses, and the promoted standby may hand its seq to another event. A watcher
-- would have delivered the lost one and skip the new one; the tree would sign a leaf the log
-- no longer has. So each tail fetch that returns events also updates this row, in the same
-- statement, when the primary has synchronous standbys: the statement's commit waits until
-- the standbys have every WAL record before it, the commits of all the events its snapshot
-- showed included, and only then do the events go out (server/audit/tail.c). A session
-- updates the row of its backend's pid modulo 64, so that the tails of several instances
-- seldom wait for each other's row lock, which each holds through its commit's wait.
CREATE TABLE audit_tail_sync (
  id int PRIMARY KEY CHECK (id BETWEEN 0 AND 63),
  n  bigint NOT NULL
);
INSERT INTO audit_tail_sync SELECT g, 0 FROM generate_series(0, 63) g;
GRANT SELECT, UPDATE ON audit_tail_sync TO clued_runtime;
