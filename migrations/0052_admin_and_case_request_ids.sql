-- One request_id, one request: for the calls that carried none (docs/WRITES.md, "Retries").
--
-- AdminService's CreateUnit, CreateUser, DisableUser, IssueToken and RevokeToken,
-- TokenService's IssueMyToken and RevokeMyToken, and CaseService's AddParticipant,
-- RemoveParticipant, AddClueToCase and RemoveClueFromCase take an optional request_id. Without
-- one a call runs the same function as before, unchanged. With one, clued calls the function's
-- *_once form below, which does what the clue writes do: the key's advisory lock, its record
-- looked up in clue_requests (one key space per user across every mutating call), a key of
-- another kind of call or of a request with other fields (its fingerprint, request_sha256)
-- refused with CLARG before anything is written, a retry answered with what the first call
-- made or changed as it is now, and a first call's record written in its transaction.
--
-- IssueToken and IssueMyToken: a token's secret is shown once and only its SHA-256 is stored,
-- so a retry cannot answer the first call's secret. It revokes the token the key issued last
-- (a token.revoke event, with the request_id in its details) and issues a fresh one in the
-- same transaction (token.issue, as usual), whose secret it answers; the record then names the
-- new token. One request_id so leaves exactly one live token, whichever answer was lost. If
-- that token was revoked since (by its user or an ADMIN), the retry is refused
-- (FAILED_PRECONDITION) rather than bring a revoked issue back to life.

-- The subject of a record: a clue, a case, and now a unit, a user or a token.
ALTER TABLE clue_requests
  ADD COLUMN unit_id bigint,
  ADD COLUMN subject_user_id bigint,
  ADD COLUMN token_id bigint,
  DROP CONSTRAINT clue_requests_one_subject,
  ADD CONSTRAINT clue_requests_one_subject
    CHECK (num_nonnulls(clue_id, case_id, unit_id, subject_user_id, token_id) = 1);

COMMENT ON COLUMN clue_requests.owner_unit IS
  'the clue''s owner unit, the lead unit of a case, the unit created, or the unit of the user or of the token''s user';

-- The start of a *_once write: the record of (p_user, p_request_id) under the key's lock, or
-- NULL for a first call. A record of another method, or of this method with another
-- fingerprint, raises CLARG; so does a key a ledger call used. A retry's answer waits, as a
-- write's does, for the synchronous standbys (audit_tail_sync, 0027): the first call's commit
-- may have been answered before they had it, or not answered at all.
CREATE FUNCTION request_once_begin(p_user bigint, p_request_id uuid, p_method text, p_request_sha256 bytea)
RETURNS clue_requests LANGUAGE plpgsql AS $$
DECLARE
  q clue_requests;
BEGIN
  IF p_request_id IS NULL OR p_request_sha256 IS NULL THEN
    RAISE EXCEPTION 'request_once_begin: % without a request_id or its fingerprint', p_method;
  END IF;
  PERFORM pg_advisory_xact_lock(hashtextextended('clue_requests/' || p_user || '/' || p_request_id, 0));
  SELECT * INTO q FROM clue_requests WHERE user_id = p_user AND request_id = p_request_id;
  IF NOT FOUND THEN
    PERFORM clue_request_refuse_ledger_key(p_user, p_request_id);
    RETURN NULL;
  END IF;
  IF q.method <> p_method THEN
    RAISE EXCEPTION USING ERRCODE = 'CLARG',
      MESSAGE = format('request_id %s was already used for another call (%s)', p_request_id, q.method);
  END IF;
  IF q.request_sha256 IS DISTINCT FROM p_request_sha256 THEN
    RAISE EXCEPTION USING ERRCODE = 'CLARG',
      MESSAGE = format('request_id %s was already used for a different request (%s)', p_request_id, q.method);
  END IF;
  UPDATE audit_tail_sync SET n = n + 1
  WHERE id = mod(pg_backend_pid(), 64) AND current_setting('synchronous_standby_names') <> '';
  RETURN q;
END $$;

CREATE FUNCTION request_once_record(p_user bigint, p_request_id uuid, p_method text, p_request_sha256 bytea,
                                    p_owner bigint, p_case bigint, p_unit bigint, p_subject_user bigint,
                                    p_token bigint)
RETURNS void LANGUAGE sql AS $$
  INSERT INTO clue_requests (user_id, request_id, method, case_id, unit_id, subject_user_id, token_id,
                             owner_unit, request_sha256)
  VALUES (p_user, p_request_id, p_method, p_case, p_unit, p_subject_user, p_token, p_owner, p_request_sha256);
$$;

-- ---- units and users ---------------------------------------------------------------------------

CREATE FUNCTION admin_create_unit_once(p_actor_user bigint, p_actor_unit bigint, p_kind text, p_code text,
                                       p_name text, p_liaison bigint, p_host_units text[], p_request_id uuid,
                                       p_request_sha256 bytea)
RETURNS units LANGUAGE plpgsql AS $$
DECLARE
  q clue_requests := request_once_begin(p_actor_user, p_request_id, 'CreateUnit', p_request_sha256);
  u units;
BEGIN
  IF q.user_id IS NOT NULL THEN
    SELECT * INTO u FROM units WHERE id = q.unit_id;
    RETURN u;
  END IF;
  u := admin_create_unit(p_actor_user, p_actor_unit, p_kind, p_code, p_name, p_liaison, p_host_units);
  PERFORM request_once_record(p_actor_user, p_request_id, 'CreateUnit', p_request_sha256, u.id, NULL, u.id,
                              NULL, NULL);
  RETURN u;
END $$;

CREATE FUNCTION admin_create_user_once(p_actor_user bigint, p_actor_unit bigint, p_unit bigint, p_name text,
                                       p_role text, p_request_id uuid, p_request_sha256 bytea)
RETURNS users LANGUAGE plpgsql AS $$
DECLARE
  q clue_requests := request_once_begin(p_actor_user, p_request_id, 'CreateUser', p_request_sha256);
  u users;
BEGIN
  IF q.user_id IS NOT NULL THEN
    SELECT * INTO u FROM users WHERE id = q.subject_user_id;
    RETURN u;
  END IF;
  u := admin_create_user(p_actor_user, p_actor_unit, p_unit, p_name, p_role);
  PERFORM request_once_record(p_actor_user, p_request_id, 'CreateUser', p_request_sha256, u.unit_id, NULL,
                              NULL, u.id, NULL);
  RETURN u;
END $$;

CREATE FUNCTION admin_disable_user_once(p_actor_user bigint, p_actor_unit bigint, p_user bigint, p_reason text,
                                        p_request_id uuid, p_request_sha256 bytea)
RETURNS users LANGUAGE plpgsql AS $$
DECLARE
  q clue_requests := request_once_begin(p_actor_user, p_request_id, 'DisableUser', p_request_sha256);
  u users;
BEGIN
  IF q.user_id IS NOT NULL THEN
    SELECT * INTO u FROM users WHERE id = q.subject_user_id;
    RETURN u;
  END IF;
  u := admin_disable_user(p_actor_user, p_actor_unit, p_user, p_reason);
  PERFORM request_once_record(p_actor_user, p_request_id, 'DisableUser', p_request_sha256, u.unit_id, NULL,
                              NULL, u.id, NULL);
  RETURN u;
END $$;

-- ---- tokens ------------------------------------------------------------------------------------

-- A retry of an issue: the token record q names, revoked (audited as every revocation) so
-- that the fresh one the retry issues is the key's only live token. Refused if it was revoked
-- since: its user or an ADMIN meant it gone.
CREATE FUNCTION token_once_replace(p_actor_user bigint, p_actor_unit bigint, q clue_requests)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  t tokens;
BEGIN
  SELECT * INTO t FROM tokens WHERE id = q.token_id FOR UPDATE;
  IF t.revoked_at IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'CLPRE',
      MESSAGE = format('token %s, which request_id %s issued, was revoked since: issue another with a new request_id',
                       t.id, q.request_id);
  END IF;
  UPDATE tokens SET revoked_at = clock_timestamp() WHERE id = t.id RETURNING * INTO t;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'token.revoke', 'user', t.user_id, NULL, NULL, NULL, NULL,
                       jsonb_build_object('token_id', t.id, 'request_id', q.request_id));
END $$;

CREATE FUNCTION token_once_issued(p_actor_user bigint, p_request_id uuid, p_method text, p_request_sha256 bytea,
                                  q clue_requests, t tokens)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF q.user_id IS NULL THEN
    PERFORM request_once_record(p_actor_user, p_request_id, p_method, p_request_sha256,
                                (SELECT unit_id FROM users WHERE id = t.user_id), NULL, NULL, NULL, t.id);
  ELSE
    UPDATE clue_requests SET token_id = t.id WHERE user_id = p_actor_user AND request_id = p_request_id;
  END IF;
END $$;

CREATE FUNCTION admin_issue_token_once(p_actor_user bigint, p_actor_unit bigint, p_user bigint,
                                       p_sha256_hex text, p_note text, p_request_id uuid, p_request_sha256 bytea)
RETURNS tokens LANGUAGE plpgsql AS $$
DECLARE
  q clue_requests := request_once_begin(p_actor_user, p_request_id, 'IssueToken', p_request_sha256);
  t tokens;
BEGIN
  IF q.user_id IS NOT NULL THEN
    PERFORM token_once_replace(p_actor_user, p_actor_unit, q);
  END IF;
  t := admin_issue_token(p_actor_user, p_actor_unit, p_user, p_sha256_hex, p_note);
  PERFORM token_once_issued(p_actor_user, p_request_id, 'IssueToken', p_request_sha256, q, t);
  RETURN t;
END $$;

-- The replaced token is revoked before token_issue_own() counts the live ones: a retry at the
-- limit still gets its token.
CREATE FUNCTION token_issue_own_once(p_actor_user bigint, p_actor_unit bigint, p_sha256_hex text, p_note text,
                                     p_max_live integer, p_request_id uuid, p_request_sha256 bytea)
RETURNS tokens LANGUAGE plpgsql AS $$
DECLARE
  q clue_requests := request_once_begin(p_actor_user, p_request_id, 'IssueMyToken', p_request_sha256);
  t tokens;
BEGIN
  IF q.user_id IS NOT NULL THEN
    PERFORM token_once_replace(p_actor_user, p_actor_unit, q);
  END IF;
  t := token_issue_own(p_actor_user, p_actor_unit, p_sha256_hex, p_note, p_max_live);
  PERFORM token_once_issued(p_actor_user, p_request_id, 'IssueMyToken', p_request_sha256, q, t);
  RETURN t;
END $$;

CREATE FUNCTION admin_revoke_token_once(p_actor_user bigint, p_actor_unit bigint, p_token bigint,
                                        p_request_id uuid, p_request_sha256 bytea)
RETURNS tokens LANGUAGE plpgsql AS $$
DECLARE
  q clue_requests := request_once_begin(p_actor_user, p_request_id, 'RevokeToken', p_request_sha256);
  t tokens;
BEGIN
  IF q.user_id IS NOT NULL THEN
    SELECT * INTO t FROM tokens WHERE id = q.token_id;
    RETURN t;
  END IF;
  t := admin_revoke_token(p_actor_user, p_actor_unit, p_token);
  PERFORM request_once_record(p_actor_user, p_request_id, 'RevokeToken', p_request_sha256,
                              (SELECT unit_id FROM users WHERE id = t.user_id), NULL, NULL, NULL, t.id);
  RETURN t;
END $$;

CREATE FUNCTION token_revoke_own_once(p_actor_user bigint, p_actor_unit bigint, p_token bigint,
                                      p_request_id uuid, p_request_sha256 bytea)
RETURNS tokens LANGUAGE plpgsql AS $$
DECLARE
  q clue_requests := request_once_begin(p_actor_user, p_request_id, 'RevokeMyToken', p_request_sha256);
  t tokens;
BEGIN
  IF q.user_id IS NOT NULL THEN
    SELECT * INTO t FROM tokens WHERE id = q.token_id;
    RETURN t;
  END IF;
  t := token_revoke_own(p_actor_user, p_actor_unit, p_token);
  PERFORM request_once_record(p_actor_user, p_request_id, 'RevokeMyToken', p_request_sha256, p_actor_unit,
                              NULL, NULL, NULL, t.id);
  RETURN t;
END $$;

-- ---- a case's participants and clues -----------------------------------------------------------

-- p_method is the call (AddParticipant, RemoveParticipant, AddClueToCase, RemoveClueFromCase);
-- p_member the unit or the clue; p_version the clue's version as the decision saw it (clues
-- only). A retry answers the case as it is now, as seen by the caller's unit.
CREATE FUNCTION case_change_once(p_method text, p_actor_user bigint, p_actor_unit bigint, p_now_ms bigint,
                                 p_case bigint, p_member bigint, p_version bigint, p_reason text,
                                 p_request_id uuid, p_request_sha256 bytea)
RETURNS SETOF joint_case_row LANGUAGE plpgsql AS $$
DECLARE
  q clue_requests := request_once_begin(p_actor_user, p_request_id, p_method, p_request_sha256);
BEGIN
  IF q.user_id IS NOT NULL THEN
    RETURN QUERY SELECT * FROM joint_case_rows(q.case_id, p_actor_unit);
    RETURN;
  END IF;
  CASE p_method
  WHEN 'AddParticipant' THEN
    RETURN QUERY SELECT * FROM case_add_participant(p_actor_user, p_actor_unit, p_now_ms, p_case, p_member,
                                                    p_reason);
  WHEN 'RemoveParticipant' THEN
    RETURN QUERY SELECT * FROM case_remove_participant(p_actor_user, p_actor_unit, p_now_ms, p_case, p_member,
                                                       p_reason);
  WHEN 'AddClueToCase' THEN
    RETURN QUERY SELECT * FROM case_add_clue(p_actor_user, p_actor_unit, p_now_ms, p_case, p_member, p_version,
                                             p_reason);
  WHEN 'RemoveClueFromCase' THEN
    RETURN QUERY SELECT * FROM case_remove_clue(p_actor_user, p_actor_unit, p_now_ms, p_case, p_member,
                                                p_version, p_reason);
  END CASE;
  PERFORM request_once_record(p_actor_user, p_request_id, p_method, p_request_sha256,
                              (SELECT lead_unit FROM joint_cases WHERE id = p_case), p_case, NULL, NULL, NULL);
END $$;
