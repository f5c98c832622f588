-- `clued serve --require-sync-replica` insists that every acknowledged write is on a
-- synchronous standby (README, "Replicated set-up"). Until now it only refused to start and
-- reported Health NOT_SERVING while the primary had no synchronous standby, and went on
-- acknowledging writes: on a promoted standby that has none of its own, or after an operator
-- cleared synchronous_standby_names, those writes were committed on the primary alone, and a
-- failover then lost them (and handed their registration numbers out again).
--
-- Every write appends an audit event, so the statement that appends one checks, when the
-- session asks for it, that its commit will wait for a synchronous standby, and otherwise
-- refuses (CLSYN, UNAVAILABLE: nothing was changed, retry later): synchronous_standby_names
-- must be set, and synchronous_commit `on` or `remote_apply` (what `serve` checks at start).
-- A commit waits only when both hold; with a standby named but away it waits until one is
-- back, so the write is not acknowledged before a standby has it.
--
-- Only clued's writing pool asks (the startup option clued.require_sync_replica=on, set under
-- --require-sync-replica): the trigger's WHEN is false for every other session, which then
-- pays for a current_setting() per statement that appends events, nothing else. A trigger
-- per statement, not per row: a batch appends up to 64 events in one statement.
--
-- The check runs when the appending statement ends, not at commit: a deferred (constraint)
-- trigger would fire at the commit of a lone statement's implicit transaction, where the
-- error comes after the statement's result. The window that remains (docs/SCALEOUT.md) is
-- the rest of that transaction, and the moment a configuration reload takes to reach the
-- backend: the commit's wait follows the server's shared flag, which the checkpointer sets on
-- reload, while current_setting() is the backend's value, which it takes between commands.

CREATE FUNCTION audit_events_require_sync() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('synchronous_standby_names') = '' THEN
    RAISE EXCEPTION USING ERRCODE = 'CLSYN', MESSAGE =
      '--require-sync-replica: the primary has no synchronous standby '
      '(synchronous_standby_names is empty), so the write would not be on a standby when '
      'acknowledged; nothing was changed, retry later';
  END IF;
  IF current_setting('synchronous_commit') NOT IN ('on', 'remote_apply') THEN
    RAISE EXCEPTION USING ERRCODE = 'CLSYN', MESSAGE = format(
      '--require-sync-replica: synchronous_commit is %s, so the commit would not wait for the '
      'synchronous standby; nothing was changed, retry later',
      current_setting('synchronous_commit'));
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER audit_events_require_sync AFTER INSERT ON audit_events
  FOR EACH STATEMENT
  WHEN (current_setting('clued.require_sync_replica', true) = 'on')
  EXECUTE FUNCTION audit_events_require_sync();
