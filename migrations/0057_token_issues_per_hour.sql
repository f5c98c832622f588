-- How many tokens a user may issue themself (TokenService.IssueMyToken) in any hour, and an
-- issue that holds the token it is signed with (admin_issue_token(), at the end).
--
-- Every user may issue and revoke their own tokens, at most 16 unrevoked at once
-- (token_issue_own() of 0010_tokens.sql). Issuing one and revoking it, in a loop, stayed
-- within that, and cost every instance a notification per revocation (0007), the audit log
-- two events, and the tokens table a row each, without bound: one user did a few hundred a
-- second (docs/WRITES.md, "Tokens a user issues in an hour"). Now the issues of the last hour
-- are counted too, under the same lock on the user's row: at p_max_hour (clued's
-- --token-issues-per-hour; 0: no such limit) the issue is refused CLLIM
-- (RESOURCE_EXHAUSTED), nothing written, with the time the next one may be issued. Only the
-- tokens a user issued to themself count: an administrator's IssueToken for them
-- (enrollment) does not, nor is it limited here. A keyed retry that replaces its token is an
-- issue like another, refused with the rest, the token it would replace kept.
--
-- The signatures change (the new parameter), so the two functions are dropped and made again.

CREATE INDEX tokens_user_created_idx ON tokens (user_id, created_at);

DROP FUNCTION token_issue_own_once(p_actor_user bigint, p_actor_unit bigint, p_sha256_hex text, p_note text,
                                   p_max_live integer, p_request_id uuid, p_request_sha256 bytea);
DROP FUNCTION token_issue_own(p_actor_user bigint, p_actor_unit bigint, p_sha256_hex text, p_note text,
                              p_max_live integer);

-- Replaces token_issue_own of 0010_tokens.sql: the issues of the last hour counted too.
CREATE FUNCTION token_issue_own(p_actor_user bigint, p_actor_unit bigint, p_sha256_hex text, p_note text,
                                p_max_live integer, p_max_hour integer)
RETURNS tokens LANGUAGE plpgsql AS $$
DECLARE
  live bigint;
  last timestamptz;
BEGIN
  PERFORM 1 FROM users WHERE id = p_actor_user FOR UPDATE;
  SELECT count(*) INTO live FROM tokens WHERE user_id = p_actor_user AND revoked_at IS NULL;
  IF live >= p_max_live THEN
    RAISE EXCEPTION USING ERRCODE = 'CLLIM', MESSAGE = format(
      'you already have %s unrevoked tokens, the most allowed: revoke one first', live);
  END IF;
  IF p_max_hour > 0 THEN
    -- The p_max_hour-th newest of the hour's own issues, if there are that many: the next
    -- issue may come once it is an hour old.
    SELECT t.created_at INTO last FROM tokens t
     WHERE t.user_id = p_actor_user AND t.created_at > now() - interval '1 hour'
       AND t.issued_by = p_actor_user
     ORDER BY t.created_at DESC OFFSET p_max_hour - 1 LIMIT 1;
    IF FOUND THEN
      -- The moment it is an hour old, rounded up to the second named: not one that is early.
      last := last + interval '1 hour';
      IF last > date_trunc('second', last) THEN
        last := date_trunc('second', last) + interval '1 second';
      END IF;
      RAISE EXCEPTION USING ERRCODE = 'CLLIM', MESSAGE = format(
        'you issued %s tokens in the last hour, the most allowed: the next can be issued at %s',
        p_max_hour, to_char(last AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'));
    END IF;
  END IF;
  RETURN admin_issue_token(p_actor_user, p_actor_unit, p_actor_user, p_sha256_hex, p_note);
END $$;

-- Replaces token_issue_own_once of 0055_token_retry_lock_order.sql: the same, with the
-- issues of the last hour counted (token_issue_own() above). The replaced token is revoked
-- first, as before; a refused issue leaves it, since the whole transaction goes.
CREATE FUNCTION token_issue_own_once(p_actor_user bigint, p_actor_unit bigint, p_sha256_hex text, p_note text,
                                     p_max_live integer, p_max_hour integer, p_request_id uuid,
                                     p_request_sha256 bytea)
RETURNS TABLE (id bigint, revoked_token bigint) LANGUAGE plpgsql AS $$
DECLARE
  q clue_requests := request_once_begin(p_actor_user, p_request_id, 'IssueMyToken', p_request_sha256);
  t tokens;
BEGIN
  IF q.user_id IS NOT NULL THEN
    PERFORM token_once_replace(p_actor_user, p_actor_unit, q);
    revoked_token := q.token_id;
  END IF;
  t := token_issue_own(p_actor_user, p_actor_unit, p_sha256_hex, p_note, p_max_live, p_max_hour);
  PERFORM token_once_issued(p_actor_user, p_request_id, 'IssueMyToken', p_request_sha256, q, t);
  id := t.id;
  RETURN NEXT;
END $$;

-- Refuses (CLPRE) a change by p_actor_user signed with the token p_token once the user was
-- disabled or the token revoked (a NULL one is not looked at); with p_lock, holds both rows
-- FOR SHARE until the end of the transaction (so that neither changes before it commits).
-- For admin_issue_token() below, and for admin_keep_one_working(), whose own look at the
-- caller (0045) it takes over.
CREATE FUNCTION admin_caller_held(p_actor_user bigint, p_token bigint, p_lock boolean)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF p_actor_user IS NOT NULL THEN
    IF p_lock THEN
      PERFORM 1 FROM users WHERE id = p_actor_user AND NOT disabled FOR SHARE;
    ELSE
      PERFORM 1 FROM users WHERE id = p_actor_user AND NOT disabled;
    END IF;
    IF NOT FOUND THEN
      RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = format('user %s, the caller, was disabled meanwhile',
                                                                p_actor_user);
    END IF;
  END IF;
  IF p_token IS NOT NULL THEN
    IF p_lock THEN
      PERFORM 1 FROM tokens WHERE id = p_token AND revoked_at IS NULL FOR SHARE;
    ELSE
      PERFORM 1 FROM tokens WHERE id = p_token AND revoked_at IS NULL;
    END IF;
    IF NOT FOUND THEN
      RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = format('token %s, the caller''s, was revoked meanwhile',
                                                                p_token);
    END IF;
  END IF;
END $$;

-- Replaces admin_keep_one_working of 0045_administration_never_locked_out.sql: the same, its
-- look at the caller under the lock now admin_caller_held()'s (the same checks and messages).
CREATE OR REPLACE FUNCTION admin_keep_one_working(p_actor_user bigint, p_user bigint, p_token bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  acting bigint := nullif(current_setting('clued.token_id', true), '')::bigint;
BEGIN
  IF p_token IS NOT NULL THEN
    SELECT user_id INTO p_user FROM tokens WHERE id = p_token;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM users WHERE id = p_user AND role = 'ADMIN') THEN
    RETURN;
  END IF;
  PERFORM pg_advisory_xact_lock(hashtext('clued.admins'));
  -- Each statement below takes a new snapshot (READ COMMITTED): it sees every change
  -- committed before the lock was granted.
  IF p_token IS NULL THEN
    IF EXISTS (SELECT 1 FROM users WHERE id = p_user AND NOT disabled)
       AND NOT admin_working_exists(p_user, NULL) THEN
      RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = format(
        'user %s is the last enabled ADMIN holding a live token: disabling it would lock administration out; '
        'issue another ADMIN a token first', p_user);
    END IF;
  ELSIF EXISTS (SELECT 1 FROM tokens t JOIN users u ON u.id = t.user_id
                WHERE t.id = p_token AND t.revoked_at IS NULL AND NOT u.disabled)
        AND NOT admin_working_exists(NULL, p_token) THEN
    RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = format(
      'token %s is the last live token of the last enabled ADMIN holding one: revoking it would lock '
      'administration out; issue a new one first', p_token);
  END IF;
  PERFORM admin_caller_held(p_actor_user, acting, false);
END $$;

-- Replaces admin_issue_token of 0055_token_retry_lock_order.sql: an issue signed with a token
-- (clued.token_id, set for every call) is refused, nothing written, if that token was revoked
-- or the caller disabled before it commits (CLPRE, the messages admin_keep_one_working() of
-- 0045 gives an administrator's change). An IssueMyToken signed with a token T and a
-- RevokeToken of T, sent at once to two instances, both succeeded: the issue had decided
-- before the revocation committed, and a token minted by T was logged after T's revocation
-- and outlived it. Now they are in one order or the other:
-- - A token issued to the caller itself (IssueMyToken; an administrator's IssueToken for
--   itself) appends to the caller's chain, as T's revocation and the caller's disabling do:
--   the append waits for the head until the other commits, and the look that follows, a
--   statement of its own, sees it. No lock is added, so none can deadlock with the
--   revocation's (T's row, then the head).
-- - A token for another user appends to that user's chain: the caller's user row and T's row
--   are held FOR SHARE from the start, before the user the token is for and its head, so a
--   revocation or a disable waits for the issue, or the issue for them and then refuses.
-- Without a token (clued bootstrap) there is nothing to hold.
CREATE OR REPLACE FUNCTION admin_issue_token(p_actor_user bigint, p_actor_unit bigint, p_user bigint,
                                             p_sha256_hex text, p_note text)
RETURNS tokens LANGUAGE plpgsql AS $$
DECLARE
  acting bigint := nullif(current_setting('clued.token_id', true), '')::bigint;
  t tokens;
  dis boolean;
BEGIN
  IF acting IS NOT NULL AND p_user <> p_actor_user THEN
    PERFORM admin_caller_held(p_actor_user, acting, true);
  END IF;
  SELECT disabled INTO dis FROM users WHERE id = p_user FOR KEY SHARE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CLNOF', MESSAGE = format('user %s not found', p_user);
  END IF;
  IF dis THEN
    RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = format('user %s is disabled', p_user);
  END IF;
  INSERT INTO tokens (user_id, token_sha256, note, issued_by)
  VALUES (p_user, decode(p_sha256_hex, 'hex'), p_note, p_actor_user)
  RETURNING * INTO t;
  -- The token itself is never recorded; its id is, and the hash of its stored hash.
  PERFORM audit_append(p_actor_user, p_actor_unit, 'token.issue', 'user', p_user, NULL, NULL, NULL, NULL,
                       jsonb_build_object('token_id', t.id, 'note', p_note,
                                          'enrollment', t.issued_by <> t.user_id,
                                          'hash_sha256', encode(sha256(t.token_sha256), 'hex')));
  IF acting IS NOT NULL AND p_user = p_actor_user THEN
    PERFORM admin_caller_held(p_actor_user, acting, false);
  END IF;
  RETURN t;
END $$;
