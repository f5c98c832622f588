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
-- Tokens users issued to themselves (IssueMyToken) are theirs alone and stay.
--
-- Administration is never locked out by it: under admin_keep_one_working()'s lock (every
-- user that issues to others is an ADMIN, whose disable takes it), a disable that would
-- leave no enabled ADMIN holding a live token is refused, nothing written.
--
-- A disabled user stayed a handler of the clues it was assigned to: GetClue and
-- ListAssignments went on showing a handler the rules forbid (an assignment of a disabled user
-- is refused). Now each assignment ends with the disable, with a clue.unassign event on the
-- clue's chain (details: the user, its unit, the clue's state, the cause). The clues are
-- locked before the user's row, in id order, as an assignment takes the clue and then the
-- user (clue_set_handler() of 0050): one on its way is waited for and ended too.

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
  SELECT * INTO u FROM users WHERE id = p_user FOR UPDATE;
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
