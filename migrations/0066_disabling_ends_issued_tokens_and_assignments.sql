-- Disabling a user ends what it leaves behind: the tokens it issued to other users, and its
-- assignments as a handler.
--
-- An administrator sees the secret of every enrollment token it issues (IssueToken), and
-- whoever holds one acts as its user. DisableUser ended only the tokens of the disabled user:
-- one disabled kept every enrollment token it had issued, and with another ADMIN's went on
-- administering (it disabled the administrator who had disabled it), and with a LEADER's
-- exchanged it for a personal token that reads reporters. Now the disable revokes, in the
-- same transaction, every live token the user issued to another user, each with its
-- token.revoke event on that user's chain (details: the token, the issuer, the cause). The
-- trigger of 0007_stream_revocation.sql tells every instance of each, as of any revocation.
-- Tokens users issued to themselves (IssueMyToken) are theirs and stay, those minted with an
-- enrollment token too: the exchange is how a user enrols, and the server cannot tell it from
-- one the issuing administrator made itself before it was disabled (its token.issue event
-- names the enrollment token that signed it, actor_token_id, for an audit to look at).
--
-- Administration is never locked out by it: under admin_keep_one_working()'s lock (every
-- user that issues to others is an ADMIN, whose disable takes it), a disable that would
-- leave no enabled ADMIN holding a live token is refused, nothing written.
--
-- A disabled user stayed a handler of the clues it was assigned to: GetClue and
-- ListAssignments went on showing a handler the rules forbid (an assignment of a disabled user
-- is refused). Now each assignment ends with the disable, with a clue.unassign event on the
-- clue's chain (details: the user, its unit, the clue's state, the cause). The clues are
-- locked before the user's row, in id order, as an assignment and a recusal take the clue
-- and then the user (clue_set_handler() of 0050, clue_recuse()). The user's row is taken FOR
-- NO KEY UPDATE, not FOR UPDATE (the disable changes no key): a writer that inserts a row
-- naming the user (its foreign key's KEY SHARE) before it locks clues, as case_create() does
-- with the case's creator, goes on beside it instead of closing a cycle. The locks that look
-- at `disabled` (FOR SHARE: an assignment's, a recusal's, an administrator's call's) still wait
-- for it; admin_issue_token() now takes its user FOR SHARE, for the same reason.

-- Replaces admin_disable_user of 0045_administration_never_locked_out.sql: the tokens the
-- user issued to others revoked with it, the look for a working administrator made again
-- after them, and the user's assignments ended.
CREATE OR REPLACE FUNCTION admin_disable_user(p_actor_user bigint, p_actor_unit bigint, p_user bigint, p_reason text)
RETURNS users LANGUAGE plpgsql AS $$
DECLARE
  u users;
  t tokens;
  c clues;
  revoked integer := 0;
BEGIN
  IF p_user = p_actor_user THEN
    RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = 'administrators cannot disable themselves';
  END IF;
  PERFORM admin_keep_one_working(p_actor_user, p_user, NULL);
  PERFORM 1 FROM clues WHERE id IN (SELECT clue_id FROM clue_handlers WHERE user_id = p_user)
    ORDER BY id FOR NO KEY UPDATE;
  SELECT * INTO u FROM users WHERE id = p_user FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CLNOF', MESSAGE = format('user %s not found', p_user);
  END IF;
  IF u.disabled THEN
    RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = format('user %s is already disabled', p_user);
  END IF;
  UPDATE users SET disabled = true WHERE id = p_user RETURNING * INTO u;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'user.disable', 'user', u.id, NULL, NULL, NULL, p_reason,
                       '{}'::jsonb);
  -- In id order, as every revocation locks a token's row and then its user's chain head.
  FOR t IN SELECT * FROM tokens WHERE issued_by = p_user AND user_id <> p_user AND revoked_at IS NULL
           ORDER BY id FOR UPDATE LOOP
    UPDATE tokens SET revoked_at = clock_timestamp() WHERE id = t.id RETURNING * INTO t;
    revoked := revoked + 1;
    PERFORM audit_append(p_actor_user, p_actor_unit, 'token.revoke', 'user', t.user_id, NULL, NULL, NULL, NULL,
                         jsonb_build_object('token_id', t.id, 'issued_by', p_user, 'cause', 'issuer_disabled'));
  END LOOP;
  -- The clues were locked above; one assigned since (its assignment waited for the user's
  -- row) is locked here.
  FOR c IN SELECT * FROM clues WHERE id IN (SELECT clue_id FROM clue_handlers WHERE user_id = p_user)
           ORDER BY id FOR NO KEY UPDATE LOOP
    DELETE FROM clue_handlers WHERE clue_id = c.id AND user_id = p_user;
    PERFORM audit_append(p_actor_user, p_actor_unit, 'clue.unassign', 'clue', c.id, c.owner_unit, NULL, NULL, NULL,
                         jsonb_build_object('user_id', p_user, 'user_unit_id', u.unit_id, 'state', c.state,
                                            'cause', 'user_disabled'));
  END LOOP;
  IF revoked > 0 AND NOT admin_working_exists(p_user, NULL) THEN
    RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = format(
      'disabling user %s would also revoke the tokens it issued, and leave no enabled ADMIN holding a live '
      'token: let another ADMIN take a token of its own (IssueMyToken) first', p_user);
  END IF;
  RETURN u;
END $$;

-- Replaces admin_issue_token of 0064_admin_tokens_capped.sql: the user the token is for is
-- read FOR SHARE, which waits for a disable being written (it holds the row FOR NO KEY
-- UPDATE, above), as FOR KEY SHARE waited for the FOR UPDATE it held before; two issues for one
-- user still share the row, and queue on the advisory lock.
CREATE OR REPLACE FUNCTION admin_issue_token(p_actor_user bigint, p_actor_unit bigint, p_user bigint,
                                             p_sha256_hex text, p_note text, p_max_live integer DEFAULT NULL)
RETURNS tokens LANGUAGE plpgsql AS $$
DECLARE
  acting bigint := nullif(current_setting('clued.token_id', true), '')::bigint;
  t tokens;
  dis boolean;
  live bigint;
BEGIN
  IF acting IS NOT NULL AND p_user <> p_actor_user THEN
    PERFORM admin_caller_held(p_actor_user, acting, true);
  END IF;
  SELECT disabled INTO dis FROM users WHERE id = p_user FOR SHARE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CLNOF', MESSAGE = format('user %s not found', p_user);
  END IF;
  IF dis THEN
    RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = format('user %s is disabled', p_user);
  END IF;
  IF p_max_live IS NOT NULL THEN
    -- Counted one issue at a time, as 0064 made it: the row's lock above waits for a user's own
    -- issue (token_issue_own() holds the row FOR UPDATE) and for a keyed retry
    -- (token_once_replace() likewise), and they for it; two administrators' issues for one user
    -- share it (FOR SHARE, as admin_caller_held() takes a caller's own row: two administrators
    -- issuing each other tokens share both rows), so they queue on this lock instead.
    PERFORM pg_advisory_xact_lock(hashtextextended('clued.token_issue/' || p_user, 0));
    SELECT count(*) INTO live FROM tokens WHERE user_id = p_user AND revoked_at IS NULL;
    IF live >= p_max_live THEN
      RAISE EXCEPTION USING ERRCODE = 'CLLIM', MESSAGE = format(
        'user %s already has %s unrevoked tokens, the most allowed: revoke one first', p_user, live);
    END IF;
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
