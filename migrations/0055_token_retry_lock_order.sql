-- A retried IssueToken or IssueMyToken (0052_admin_and_case_request_ids.sql), three changes,
-- and IssueToken's look at its user (4.).
--
-- 1. Lock order. The other changes that lock a user's row take it first and its audit chain
--    head second: admin_disable_user() (FOR UPDATE, then user.disable), token_issue_own()
--    (FOR UPDATE, then token.issue) and admin_issue_token() (the INSERT's foreign key share,
--    then token.issue); admin_revoke_token() takes the token's row, then the head.
--    token_once_replace() revoked the key's token and appended its token.revoke, locking the
--    head, before the issue took the user's row: a retry racing one of the first three
--    deadlocked (ABORTED "concurrent change; retry" after deadlock_timeout), a retry at the
--    limit of 16 among them. It now locks the user's row (FOR UPDATE, as token_issue_own()
--    and admin_disable_user() do) before the key's token row and the head, so every path goes
--    user row, then token row, then head (each taking those it needs).
-- 2. A retry signed with the very token its key issued is refused (CLPRE), nothing changed:
--    the caller holds that token, so it received the first reply, and the retry would revoke
--    the token the call is signed with and answer the only copy of a new secret; were that
--    reply lost, the caller (perhaps the last administrator) would hold no working token.
--    Issuing another takes a new request_id.
-- 3. The *_once issues answer whether they revoked a token (revoked_token, the id, or NULL
--    for a first call), so clued drops its cached principals only after a retry, as after a
--    RevokeToken, and not after every keyed issue. Their result type changes, so they are
--    dropped and made again; clued reads id as before.
-- 4. admin_issue_token() reads its user FOR KEY SHARE before it looks at `disabled` (below).

-- Replaces token_once_replace of 0052_admin_and_case_request_ids.sql: the user's row locked
-- first (1. above), and a retry signed with the token it would revoke refused (2.). A token's
-- user never changes, so it is read before the locks.
CREATE OR REPLACE FUNCTION token_once_replace(p_actor_user bigint, p_actor_unit bigint, q clue_requests)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  t tokens;
  acting bigint := nullif(current_setting('clued.token_id', true), '')::bigint;
BEGIN
  PERFORM 1 FROM users WHERE id = (SELECT user_id FROM tokens WHERE id = q.token_id) FOR UPDATE;
  SELECT * INTO t FROM tokens WHERE id = q.token_id FOR UPDATE;
  IF t.revoked_at IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'CLPRE',
      MESSAGE = format('token %s, which request_id %s issued, was revoked since: issue another with a new request_id',
                       t.id, q.request_id);
  END IF;
  IF t.id = acting THEN
    RAISE EXCEPTION USING ERRCODE = 'CLPRE',
      MESSAGE = format('token %s, which request_id %s issued, is the one this call is signed with: its secret '
                       'was answered already; issue another with a new request_id', t.id, q.request_id);
  END IF;
  UPDATE tokens SET revoked_at = clock_timestamp() WHERE id = t.id RETURNING * INTO t;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'token.revoke', 'user', t.user_id, NULL, NULL, NULL, NULL,
                       jsonb_build_object('token_id', t.id, 'request_id', q.request_id));
END $$;

DROP FUNCTION admin_issue_token_once(p_actor_user bigint, p_actor_unit bigint, p_user bigint, p_sha256_hex text,
                                     p_note text, p_request_id uuid, p_request_sha256 bytea);

-- Replaces admin_issue_token_once of 0052_admin_and_case_request_ids.sql: the same, and the
-- token a retry revoked answered beside the new one's id (3. above).
CREATE FUNCTION admin_issue_token_once(p_actor_user bigint, p_actor_unit bigint, p_user bigint,
                                       p_sha256_hex text, p_note text, p_request_id uuid, p_request_sha256 bytea)
RETURNS TABLE (id bigint, revoked_token bigint) LANGUAGE plpgsql AS $$
DECLARE
  q clue_requests := request_once_begin(p_actor_user, p_request_id, 'IssueToken', p_request_sha256);
  t tokens;
BEGIN
  IF q.user_id IS NOT NULL THEN
    PERFORM token_once_replace(p_actor_user, p_actor_unit, q);
    revoked_token := q.token_id;
  END IF;
  t := admin_issue_token(p_actor_user, p_actor_unit, p_user, p_sha256_hex, p_note);
  PERFORM token_once_issued(p_actor_user, p_request_id, 'IssueToken', p_request_sha256, q, t);
  id := t.id;
  RETURN NEXT;
END $$;

DROP FUNCTION token_issue_own_once(p_actor_user bigint, p_actor_unit bigint, p_sha256_hex text, p_note text,
                                   p_max_live integer, p_request_id uuid, p_request_sha256 bytea);

-- Replaces token_issue_own_once of 0052_admin_and_case_request_ids.sql: the same, and the
-- token a retry revoked answered beside the new one's id (3. above). The replaced token is
-- still revoked before token_issue_own() counts the live ones: a retry at the limit gets its
-- token.
CREATE FUNCTION token_issue_own_once(p_actor_user bigint, p_actor_unit bigint, p_sha256_hex text, p_note text,
                                     p_max_live integer, p_request_id uuid, p_request_sha256 bytea)
RETURNS TABLE (id bigint, revoked_token bigint) LANGUAGE plpgsql AS $$
DECLARE
  q clue_requests := request_once_begin(p_actor_user, p_request_id, 'IssueMyToken', p_request_sha256);
  t tokens;
BEGIN
  IF q.user_id IS NOT NULL THEN
    PERFORM token_once_replace(p_actor_user, p_actor_unit, q);
    revoked_token := q.token_id;
  END IF;
  t := token_issue_own(p_actor_user, p_actor_unit, p_sha256_hex, p_note, p_max_live);
  PERFORM token_once_issued(p_actor_user, p_request_id, 'IssueMyToken', p_request_sha256, q, t);
  id := t.id;
  RETURN NEXT;
END $$;

-- Replaces admin_issue_token of 0040_token_hash_in_its_event.sql: the user's row read FOR KEY
-- SHARE, the lock the INSERT's foreign key takes anyway, and now before it reads `disabled`.
-- Read without a lock, an IssueToken racing a DisableUser of its user could pass the check,
-- then wait only for the audit chain head and record its token.issue after the user.disable
-- (the token never authenticated: auth.c requires the user enabled). Now it waits for the
-- DisableUser's row lock and reads the user as that one left it: disabled, refused.
CREATE OR REPLACE FUNCTION admin_issue_token(p_actor_user bigint, p_actor_unit bigint, p_user bigint,
                                             p_sha256_hex text, p_note text)
RETURNS tokens LANGUAGE plpgsql AS $$
DECLARE
  t tokens;
  dis boolean;
BEGIN
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
  RETURN t;
END $$;
