-- The batch functions probe by index, whatever the statistics say (issue 11). Their statements
-- take arrays (a batch of at most 64 calls) and keep one generic plan per connection
-- (plan_cache_mode). A plan made while a table was still small (a new database, before
-- autovacuum has analyzed it) joins the batch's rows to clue_requests or audit_heads by hashing
-- a sequential scan of the whole table, and keeps doing so for every batch as the table grows:
-- measured, a SubmitClue batch's cost grew with the number of clues submitted before it. With
-- these settings each joined row is an index probe, which is the right plan for any table size
-- at 64 rows. The settings hold while the function runs, for what it calls too.
ALTER FUNCTION clue_submit_many SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off;
ALTER FUNCTION clue_apply_moves SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off;
ALTER FUNCTION audit_append_many SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off;
