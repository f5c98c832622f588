-- Open WatchEvents streams end when their token is revoked or their user disabled, on every
-- clued instance (server/service/audit_watch.c, "Revocation"). Each instance already LISTENs
-- on "audit_events" for its watchers; these triggers tell it at once, from the revoking
-- transaction itself, whichever function or statement revoked. NOTIFY is transactional: the
-- notification goes out when that transaction commits, never if it rolls back.
--
-- The payload is not a seq, so an instance reads it as "re-check the tokens of the open
-- streams now"; the name in it is for the log. No payload carries a token or its hash.

CREATE FUNCTION auth_revocation_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_TABLE_NAME = 'tokens' THEN
    PERFORM pg_notify('audit_events', 'revoked token ' || OLD.id);
  ELSE
    PERFORM pg_notify('audit_events', 'disabled user ' || OLD.id);
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER tokens_revocation_notify
  AFTER UPDATE OF revoked_at ON tokens
  FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
  EXECUTE FUNCTION auth_revocation_notify();

CREATE TRIGGER tokens_deletion_notify
  AFTER DELETE ON tokens
  FOR EACH ROW WHEN (OLD.revoked_at IS NULL)
  EXECUTE FUNCTION auth_revocation_notify();

CREATE TRIGGER users_revocation_notify
  AFTER UPDATE OF disabled ON users
  FOR EACH ROW WHEN (NEW.disabled AND NOT OLD.disabled)
  EXECUTE FUNCTION auth_revocation_notify();
