-- How many tokens a user may issue themself (TokenService.IssueMyToken) in any hour.
--
-- Every user may issue and revoke their own tokens, at most 16 unrevoked at once
-- (token_issue_own() of 0010_tokens.sql). Issuing one and revoking it, in a loop, stayed
-- within that, and cost every instance a notification per revocation (0007), the audit log
-- two events, and the tokens table a row each: one user at a few hundred a second took half
-- the calls of everyone else on a small machine. Now the issues of the last hour are counted
-- too, under the same lock on the user's row: at p_max_hour (clued's
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
      RAISE EXCEPTION USING ERRCODE = 'CLLIM', MESSAGE = format(
        'you issued %s tokens in the last hour, the most allowed: the next can be issued at %s',
        p_max_hour, to_char((last + interval '1 hour') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'));
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
