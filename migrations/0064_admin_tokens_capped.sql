-- An administrator's IssueToken held to the bound a user's own IssueMyToken is.
--
-- A user holds at most p_max_live (clued's TOKEN_LIVE_MAX, 16) unrevoked tokens, but only
-- token_issue_own() (IssueMyToken) counted them: an administrator's IssueToken had no bound.
-- One gave a member 232 live tokens, which made the member's own IssueMyToken answer "you
-- already have 232 unrevoked tokens, the most allowed"; and one token issued before 200
-- newer ones no longer appeared in the member's ListMyTokens while it still worked as the
-- member. Now IssueToken counts too, one issue for a user at a time, and refuses CLLIM
-- (RESOURCE_EXHAUSTED), nothing written. Callers without the bound (bootstrap,
-- token_issue_own(), which counted already) pass none. The signatures change, so the two functions are dropped and made again.

DROP FUNCTION admin_issue_token(p_actor_user bigint, p_actor_unit bigint, p_user bigint, p_sha256_hex text,
                                p_note text);
DROP FUNCTION admin_issue_token_once(p_actor_user bigint, p_actor_unit bigint, p_user bigint, p_sha256_hex text,
                                     p_note text, p_request_id uuid, p_request_sha256 bytea);

-- Replaces admin_issue_token of 0057_token_issues_per_hour.sql: at most p_max_live unrevoked
-- tokens of the user when it is given.
CREATE FUNCTION admin_issue_token(p_actor_user bigint, p_actor_unit bigint, p_user bigint,
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
  SELECT disabled INTO dis FROM users WHERE id = p_user FOR KEY SHARE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CLNOF', MESSAGE = format('user %s not found', p_user);
  END IF;
  IF dis THEN
    RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = format('user %s is disabled', p_user);
  END IF;
  IF p_max_live IS NOT NULL THEN
    -- Counted one issue at a time. The row's KEY SHARE above waits for a user's own issue
    -- (token_issue_own() holds the row FOR UPDATE) and for a keyed retry (token_once_replace()
    -- likewise) to end, and they for it; two administrators' issues for one user share it, so
    -- they queue on this lock instead, taken only once the row is held: a row lock taken after
    -- it could close a cycle with a retry that holds the row and waits here. A row lock
    -- stronger than KEY SHARE would conflict with the FOR SHARE admin_caller_held() takes on a
    -- caller's own row: two administrators issuing each other tokens deadlocked.
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

-- Replaces admin_issue_token_once of 0055_token_retry_lock_order.sql: the bound passed on.
-- A keyed retry revokes the token its first call issued before the new one is counted.
CREATE FUNCTION admin_issue_token_once(p_actor_user bigint, p_actor_unit bigint, p_user bigint,
                                       p_sha256_hex text, p_note text, p_max_live integer,
                                       p_request_id uuid, p_request_sha256 bytea)
RETURNS TABLE (id bigint, revoked_token bigint) LANGUAGE plpgsql AS $$
DECLARE
  q clue_requests := request_once_begin(p_actor_user, p_request_id, 'IssueToken', p_request_sha256);
  t tokens;
BEGIN
  IF q.user_id IS NOT NULL THEN
    PERFORM token_once_replace(p_actor_user, p_actor_unit, q);
    revoked_token := q.token_id;
  END IF;
  t := admin_issue_token(p_actor_user, p_actor_unit, p_user, p_sha256_hex, p_note, p_max_live);
  PERFORM token_once_issued(p_actor_user, p_request_id, 'IssueToken', p_request_sha256, q, t);
  id := t.id;
  RETURN NEXT;
END $$;
