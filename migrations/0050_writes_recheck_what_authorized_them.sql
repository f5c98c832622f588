-- What authorized a write is looked at again in the write's transaction, under the lock that
-- orders it against the change that would end it (docs/COOPERATION.md, "refused in its own
-- transaction"; 0037 for the clue's lock). A race of two instances on one database found four
-- writes that decided on a fact read before their transaction and did not look at it again:
--
--   - clue_set_handler(): an assignment of a user the ADMIN disabled meanwhile was recorded
--     (a fresh call: INVALID_ARGUMENT "user_id must name an active MEMBER or LEADER ...").
--     The user's row is now read FOR SHARE, which waits for a disable being written (it locks
--     the row FOR UPDATE) and holds off the next; a disabled user is refused with the fresh
--     call's message. The user's role and unit are not compared: AdminService changes neither,
--     and the unit kinds are the domain's rule, not SQL's (test_sql_rules);
--   - clue_recuse(): the same for the user recorded as recused;
--   - rect_create(): an item from a joint case recorded by a unit removed from the case
--     meanwhile. The case's row is now read FOR SHARE (a removal holds it FOR NO KEY UPDATE,
--     case_lock()) and the caller's unit must still lead the case or take part in it, else
--     CLNOF "source_case_id: joint case not found", as a fresh call;
--   - case_add_clue(): a clue added by the owner's leader whose unit was removed from the case
--     while the add waited for the case's lock. Under that lock the caller's unit must still
--     lead or take part in the case, else CLNOF "joint case not found", as a fresh call;
--   - rect_move(): a plan or evidence citing a note of a clue the caller no longer sees (the
--     source clue handed over meanwhile). clued now takes, in the write's transaction, the
--     request key's lock, then the cited notes' clues and the item's source clue FOR SHARE,
--     and then reads, in the move's own statement, the first cited note the caller does not
--     see, by the clue scope's predicate (service/clue_scope.c) as its facts read does; it
--     passes it as p_unseen_note, which refuses the move as a fresh call is refused (CLARG
--     "note_ids: note N is not a note of the item's source clue or case"). The source clue's
--     lock also makes rect_request_begin()'s look for a recusal of the caller see one that was
--     still being written (clue_recuse() holds the clue until it commits), as 0037 did for the
--     clue's own writes: before, the move did not wait for it and was written after it.
--   - proposal_create(): a co-review proposal decided while the reviewing unit had a LEADER
--     without a conflict, and written after that leader recused, was made PENDING before
--     nobody (a fresh call: FAILED_PRECONDITION "every LEADER of the reviewing unit is recused
--     ..."). A recusal holds the clue until it commits, so under the clue's lock the write now
--     looks, for a clue that had a recusal (the locked row's has_recusals), at the reviewing
--     unit's leaders as the facts read does (clue_unit_leaders_recused()).
--
-- A refusal raised here comes before anything is written, or undoes the write with the
-- transaction: nothing is written.

-- Replaces proposal_create of 0047_request_fingerprints.sql: the same, and a reviewing unit
-- whose every leader was recused meanwhile refused under the clue's lock.
CREATE OR REPLACE FUNCTION proposal_create(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid,
                                           p_now_ms bigint, p_clue bigint, p_expected_version bigint,
                                           p_from text, p_to text, p_action text, p_reason text,
                                           p_details jsonb, p_reviewer_unit bigint,
                                           p_request_sha256 bytea DEFAULT NULL)
 RETURNS clue_outcome
 LANGUAGE plpgsql
AS $$
DECLARE
  o clue_outcome;
  c clues;
  p proposals;
BEGIN
  o := clue_request_begin(p_actor_user, p_request_id, 'RequestTransition', p_clue, NULL, p_request_sha256);
  IF (o.clue).id IS NOT NULL THEN
    RETURN o;
  END IF;
  SELECT * INTO c FROM clues WHERE id = p_clue AND version = p_expected_version AND state = p_from
                               AND pending_proposal_id IS NULL
  FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    PERFORM clue_refuse_stale(p_clue, p_expected_version);
  END IF;
  PERFORM clue_refuse_recused(c, p_actor_user, 'clue not found');
  -- A recusal sets has_recusals in its own transaction, under the clue's lock: a clue without
  -- one (almost every clue) costs no look.
  IF c.has_recusals AND clue_unit_leaders_recused(c.id, p_reviewer_unit) THEN
    RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE =
      'every LEADER of the reviewing unit is recused from this clue, so nobody could review the proposal; '
      'an ADMIN must add a LEADER without a conflict to that unit first';
  END IF;
  INSERT INTO proposals (clue_id, owner_unit, from_state, target, reason, details, proposer_user, proposer_unit,
                         reviewer_unit, clue_version, created_at)
  VALUES (c.id, c.owner_unit, p_from, p_to, p_reason, coalesce(p_details, '{}'), p_actor_user, p_actor_unit,
          p_reviewer_unit, c.version, clue_ms_ts(p_now_ms))
  RETURNING * INTO p;
  UPDATE clues SET pending_proposal_id = p.id, pending_reviewer_unit = p.reviewer_unit
  WHERE id = c.id RETURNING * INTO c;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'proposal.create', 'clue', c.id, c.owner_unit, p_from, p_to,
                       p_reason, coalesce(p_details, '{}') || jsonb_build_object(
                         'proposal_id', p.id, 'action', p_action, 'reviewer_unit_id', p.reviewer_unit,
                         'version', c.version, 'request_id', p_request_id));
  PERFORM clue_request_record(p_actor_user, p_request_id, 'RequestTransition', c.id, p.id, c.owner_unit, p_request_sha256);
  o.clue := c;
  o.proposal := p;
  RETURN o;
END $$;

-- Replaces clue_set_handler of 0047_request_fingerprints.sql: the same, and the user named by
-- an assignment looked at under the lock of its row: one disabled meanwhile is refused.
CREATE OR REPLACE FUNCTION clue_set_handler(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid,
                                            p_now_ms bigint, p_clue bigint, p_seen_owner bigint,
                                            p_seen_state text, p_user bigint, p_assign boolean, p_reason text,
                                            p_request_sha256 bytea DEFAULT NULL)
 RETURNS clues
 LANGUAGE plpgsql
AS $$
DECLARE
  method text := CASE WHEN p_assign THEN 'AssignHandler' ELSE 'UnassignHandler' END;
  o clue_outcome := clue_request_begin(p_actor_user, p_request_id, method, p_clue, NULL, p_request_sha256);
  c clues;
  u users;
BEGIN
  IF (o.clue).id IS NOT NULL THEN
    RETURN o.clue;
  END IF;
  c := clue_lock_seen_owner(p_clue, p_seen_owner, p_actor_user);
  PERFORM clue_refuse_left_case(c, p_actor_unit);
  -- The server allowed the assignment in the state it read (a terminal state takes none); a
  -- move since, which this call does not compare by version, asks for a new decision. An
  -- unassignment is allowed in every state.
  IF p_assign AND c.state <> p_seen_state THEN
    RAISE EXCEPTION USING ERRCODE = 'CLVER', MESSAGE = format(
      'clue %s changed meanwhile (now %s); reload it and retry', p_clue, c.state);
  END IF;
  IF p_assign THEN
    -- FOR SHARE: a disable being written (admin_disable_user() locks the row FOR UPDATE) is
    -- waited for and seen; one after waits for this assignment. An unassignment of a user
    -- disabled since stays allowed, as a fresh one is.
    SELECT * INTO u FROM users WHERE id = p_user FOR SHARE;
    IF u.disabled THEN
      RAISE EXCEPTION USING ERRCODE = 'CLARG',
        MESSAGE = 'user_id must name an active MEMBER or LEADER of a GROUP, ROOM or REGION';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('clue_handlers/' || p_clue || '/' || p_user, 0));
    IF EXISTS (SELECT 1 FROM recusals WHERE clue_id = p_clue AND user_id = p_user) THEN
      RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = format(
        'user %s is recused from this clue and cannot be assigned to it', p_user);
    END IF;
    INSERT INTO clue_handlers (clue_id, user_id, owner_unit, assigned_by, assigned_by_unit, assigned_at)
    VALUES (p_clue, p_user, c.owner_unit, p_actor_user, p_actor_unit, clue_ms_ts(p_now_ms))
    ON CONFLICT (clue_id, user_id) DO UPDATE
      SET owner_unit = EXCLUDED.owner_unit, assigned_by = EXCLUDED.assigned_by,
          assigned_by_unit = EXCLUDED.assigned_by_unit, assigned_at = EXCLUDED.assigned_at
      WHERE clue_handlers.owner_unit <> EXCLUDED.owner_unit;
    IF NOT FOUND THEN
      RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = format(
        'user %s is already a handler of this clue', p_user);
    END IF;
  ELSE
    SELECT * INTO u FROM users WHERE id = p_user;
    DELETE FROM clue_handlers WHERE clue_id = p_clue AND user_id = p_user AND owner_unit = c.owner_unit;
    IF NOT FOUND THEN
      RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = format(
        'user %s is not a handler of this clue', p_user);
    END IF;
  END IF;
  PERFORM audit_append(p_actor_user, p_actor_unit, CASE WHEN p_assign THEN 'clue.assign' ELSE 'clue.unassign' END,
                       'clue', c.id, c.owner_unit, NULL, NULL, p_reason,
                       jsonb_build_object('user_id', p_user, 'user_unit_id', u.unit_id, 'state', c.state,
                                          'request_id', p_request_id));
  PERFORM clue_request_record(p_actor_user, p_request_id, method, c.id, NULL, c.owner_unit, p_request_sha256);
  RETURN c;
END $$;

-- Replaces clue_recuse of 0047_request_fingerprints.sql: the same, and the user recorded
-- looked at under the lock of its row: one disabled meanwhile is refused.
CREATE OR REPLACE FUNCTION clue_recuse(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid,
                                       p_now_ms bigint, p_clue bigint, p_seen_owner bigint, p_user bigint,
                                       p_reason text, p_request_sha256 bytea DEFAULT NULL)
 RETURNS recusals
 LANGUAGE plpgsql
AS $$
DECLARE
  o clue_outcome := clue_request_begin(p_actor_user, p_request_id, 'RecordRecusal', p_clue, NULL, p_request_sha256);
  c clues;
  u users;
  r recusals;
  was_handler boolean;
BEGIN
  IF (o.clue).id IS NOT NULL THEN
    SELECT x.* INTO r FROM clue_requests q JOIN recusals x ON x.id = q.recusal_id
    WHERE q.user_id = p_actor_user AND q.request_id = p_request_id;
    RETURN r;
  END IF;
  c := clue_lock_seen_owner(p_clue, p_seen_owner, p_actor_user);
  -- FOR SHARE, as clue_set_handler(): a disable being written is waited for and seen.
  SELECT * INTO u FROM users WHERE id = p_user FOR SHARE;
  -- The user records their own conflict, or a leader of their unit does: neither stands on
  -- the clue's case. Anyone else is a leader of the owner or of the case's lead room, and
  -- records none for the staff of a unit overseeing the clue.
  IF p_user <> p_actor_user AND u.unit_id IS DISTINCT FROM p_actor_unit THEN
    PERFORM clue_refuse_left_case(c, p_actor_unit);
    IF u.unit_id <> c.owner_unit AND
       (u.unit_id = c.pending_reviewer_unit OR
        u.unit_id = (SELECT ou.liaison_room_id FROM units ou WHERE ou.id = c.owner_unit) OR
        (c.joint_case_id IS NOT NULL AND u.unit_id = joint_case_lead(c.joint_case_id))) THEN
      RAISE EXCEPTION USING ERRCODE = 'CLVER', MESSAGE = format(
        'user %s''s unit oversees clue %s since it was read (a proposal or a joint case meanwhile); reload it and retry',
        p_user, p_clue);
    END IF;
  END IF;
  IF u.disabled THEN
    RAISE EXCEPTION USING ERRCODE = 'CLARG',
      MESSAGE = 'user_id must name an active MEMBER or LEADER of a GROUP, ROOM or REGION';
  END IF;
  PERFORM pg_advisory_xact_lock(hashtextextended('clue_handlers/' || p_clue || '/' || p_user, 0));
  INSERT INTO recusals (clue_id, user_id, reason, recorded_by, recorded_by_unit, recorded_at)
  VALUES (p_clue, p_user, p_reason, p_actor_user, p_actor_unit, clue_ms_ts(p_now_ms))
  ON CONFLICT (clue_id, user_id) DO NOTHING
  RETURNING * INTO r;
  IF r.id IS NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'CLDUP', MESSAGE = format('user %s is already recused from this clue', p_user);
  END IF;
  DELETE FROM clue_handlers WHERE clue_id = p_clue AND user_id = p_user;
  was_handler := FOUND;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'clue.recuse', 'clue', c.id, c.owner_unit, NULL, NULL, p_reason,
                       jsonb_build_object('recusal_id', r.id, 'user_id', p_user, 'user_unit_id', u.unit_id,
                                          'self', p_user = p_actor_user, 'unassigned', was_handler,
                                          'request_id', p_request_id));
  INSERT INTO clue_requests (user_id, request_id, method, clue_id, recusal_id, owner_unit, request_sha256)
  VALUES (p_actor_user, p_request_id, 'RecordRecusal', c.id, r.id, c.owner_unit, p_request_sha256);
  RETURN r;
END $$;

-- Replaces case_add_clue of 0038_joint_case_clue_limit.sql: the same, and under the case's
-- lock the caller's unit still leading or taking part in the case, as the server saw it.
CREATE OR REPLACE FUNCTION case_add_clue(p_actor_user bigint, p_actor_unit bigint, p_now_ms bigint, p_case bigint,
                                         p_clue bigint, p_version bigint, p_reason text)
RETURNS SETOF joint_case_row LANGUAGE plpgsql AS $$
DECLARE
  jc joint_cases := case_lock(p_case);
  held bigint;
BEGIN
  -- A participant removed meanwhile (case_remove_participant() holds the case's lock until it
  -- commits, so it is seen here) no longer sees the case: NOT_FOUND, as a fresh call.
  IF NOT joint_case_has_unit(jc.id, p_actor_unit) THEN
    RAISE EXCEPTION USING ERRCODE = 'CLNOF', MESSAGE = 'joint case not found';
  END IF;
  SELECT count(*) INTO held FROM case_clues WHERE case_id = jc.id;
  IF held >= 1000 THEN
    RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = format(
      'joint case %s holds %s clues, the most one case may hold; open another case for more', jc.id, held);
  END IF;
  PERFORM case_join(p_actor_user, p_actor_unit, jc, p_clue, p_version, p_now_ms, p_reason, NULL, 'clue not found');
  RETURN QUERY SELECT * FROM joint_case_rows(jc.id, p_actor_unit);
END $$;

-- Replaces rect_create of 0047_request_fingerprints.sql: the same, and an item from a joint
-- case recorded only while the caller's unit still leads the case or takes part in it.
CREATE OR REPLACE FUNCTION rect_create(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid,
                                       p_now_ms bigint, p_host_unit text, p_description text, p_category text,
                                       p_source text, p_clue bigint, p_case bigint, p_deadline_ms bigint,
                                       p_request_sha256 bytea DEFAULT NULL)
 RETURNS rect_items
 LANGUAGE plpgsql
AS $$
DECLARE
  it rect_items := rect_request_begin(p_actor_user, p_request_id, 'CreateItem', NULL, p_request_sha256);
  now_ts timestamptz := clue_ms_ts(p_now_ms);
  owned boolean;
BEGIN
  IF it.id IS NOT NULL THEN
    RETURN it;
  END IF;
  IF p_source = 'CLUE' THEN
    PERFORM 1 FROM clues WHERE id = p_clue AND owner_unit = p_actor_unit FOR SHARE;
    owned := FOUND;
    -- After the clue's lock, which a recusal's writer holds until it commits (clue_recuse()
    -- locks the clue for no key update), so no recusal of the caller slips past. First: a
    -- recused caller learns nothing of the clue, not even that it changed owner.
    IF EXISTS (SELECT 1 FROM recusals r WHERE r.clue_id = p_clue AND r.user_id = p_actor_user) THEN
      RAISE EXCEPTION USING ERRCODE = 'CLNOF', MESSAGE = 'source_clue_id: clue not found';
    END IF;
    IF NOT owned THEN
      RAISE EXCEPTION USING ERRCODE = 'CLPRE',
        MESSAGE = format('source_clue_id: clue %s changed owner meanwhile', p_clue);
    END IF;
  ELSIF p_source = 'CASE' THEN
    -- FOR SHARE: a removal of the caller's unit being written (case_lock() holds the case FOR
    -- NO KEY UPDATE until it commits) is waited for and seen below; one after waits for this.
    PERFORM 1 FROM joint_cases WHERE id = p_case FOR SHARE;
    IF NOT joint_case_has_unit(p_case, p_actor_unit) THEN
      RAISE EXCEPTION USING ERRCODE = 'CLNOF', MESSAGE = 'source_case_id: joint case not found';
    END IF;
  END IF;
  INSERT INTO rect_items (host_unit, description, category, source, source_clue, source_case, deadline,
                          supervising_unit, created_by, created_at, updated_at)
  VALUES (p_host_unit, p_description, p_category, p_source, p_clue, p_case, clue_ms_ts(p_deadline_ms),
          p_actor_unit, p_actor_user, now_ts, now_ts)
  RETURNING * INTO it;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'rect.create', 'rectification', it.id, it.supervising_unit,
                       NULL, 'OPEN', NULL,
                       jsonb_build_object('host_unit', it.host_unit, 'description', it.description,
                                          'category', it.category, 'source', it.source,
                                          'source_clue_id', it.source_clue, 'source_case_id', it.source_case,
                                          'deadline_ms', p_deadline_ms, 'version', it.version,
                                          'request_id', p_request_id));
  INSERT INTO rect_requests (user_id, request_id, method, item_id, request_sha256)
  VALUES (p_actor_user, p_request_id, 'CreateItem', it.id, p_request_sha256);
  RETURN it;
END $$;

-- rect_move() learns the first cited note the caller does not see (p_unseen_note).
DROP FUNCTION rect_move(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid, p_method text,
                        p_now_ms bigint, p_item bigint, p_expected bigint, p_from text, p_to text,
                        p_text text, p_note_ids bigint[], p_request_sha256 bytea);

-- Replaces rect_move of 0047_request_fingerprints.sql: the same, and a cited note of a clue the
-- caller no longer sees (p_unseen_note, which clued reads once the notes' clues are locked)
-- refused first, as a fresh call refuses it.
CREATE FUNCTION rect_move(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid,
                          p_method text, p_now_ms bigint, p_item bigint, p_expected bigint,
                          p_from text, p_to text, p_text text, p_note_ids bigint[],
                          p_request_sha256 bytea DEFAULT NULL, p_unseen_note bigint DEFAULT NULL)
 RETURNS rect_items
 LANGUAGE plpgsql
AS $$
DECLARE
  it rect_items := rect_request_begin(p_actor_user, p_request_id, p_method, p_item, p_request_sha256);
  cur rect_items;
  bad bigint;
  now_ts timestamptz := clue_ms_ts(p_now_ms);
  notes bigint[] := coalesce(p_note_ids, '{}');
BEGIN
  IF it.id IS NOT NULL THEN
    RETURN it;
  END IF;
  SELECT * INTO cur FROM rect_items WHERE id = p_item FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CLNOF', MESSAGE = 'rectification item not found';
  END IF;
  IF cur.version <> p_expected THEN
    RAISE EXCEPTION USING ERRCODE = 'CLVER',
      MESSAGE = format('rectification item %s is at version %s, not %s; read it again', p_item, cur.version,
                       p_expected);
  END IF;
  IF cur.state <> p_from THEN
    RAISE EXCEPTION USING ERRCODE = 'CLPRE',
      MESSAGE = format('rectification item %s is %s, no longer %s', p_item, cur.state, p_from);
  END IF;
  -- A note the caller does not see is refused as one that does not exist, before the look at
  -- which clue it belongs to (service/rect.c's facts read does the same).
  IF p_unseen_note IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'CLARG',
      MESSAGE = format('note_ids: note %s is not a note of the item''s source clue or case', p_unseen_note);
  END IF;
  SELECT x.id INTO bad FROM unnest(notes) AS x(id)
  WHERE NOT EXISTS (SELECT 1 FROM notes n WHERE n.id = x.id
                      AND (n.clue_id = cur.source_clue
                           OR n.clue_id IN (SELECT cc.clue_id FROM case_clues cc WHERE cc.case_id = cur.source_case)))
  LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CLARG',
      MESSAGE = format('note_ids: note %s is not a note of the item''s source clue or case', bad);
  END IF;
  UPDATE rect_items SET
    state = p_to,
    version = version + 1,
    updated_at = now_ts,
    plan = CASE WHEN p_method = 'RecordPlan' THEN p_text ELSE plan END,
    plan_note_ids = CASE WHEN p_method = 'RecordPlan' THEN notes ELSE plan_note_ids END,
    evidence = CASE WHEN p_method = 'Submit' THEN p_text ELSE evidence END,
    evidence_note_ids = CASE WHEN p_method = 'Submit' THEN notes ELSE evidence_note_ids END,
    verify_comment = CASE WHEN p_method = 'Verify' THEN coalesce(p_text, '') ELSE verify_comment END,
    reopen_reason = CASE WHEN p_method = 'Reopen' THEN p_text ELSE reopen_reason END,
    verified_at = CASE WHEN p_to = 'VERIFIED' THEN now_ts END
  WHERE id = p_item
  RETURNING * INTO it;
  PERFORM audit_append(p_actor_user, p_actor_unit,
                       'rect.' || CASE p_method WHEN 'RecordPlan' THEN 'record_plan' ELSE lower(p_method) END,
                       'rectification', it.id, it.supervising_unit, p_from, p_to,
                       CASE WHEN p_method IN ('Verify', 'Reopen') THEN p_text END,
                       jsonb_build_object('version', it.version, 'request_id', p_request_id)
                       || CASE WHEN p_method IN ('RecordPlan', 'Submit')
                               THEN jsonb_build_object(CASE p_method WHEN 'Submit' THEN 'evidence' ELSE 'plan' END,
                                                       p_text, 'note_ids', to_jsonb(notes))
                               ELSE '{}'::jsonb END);
  INSERT INTO rect_requests (user_id, request_id, method, item_id, request_sha256)
  VALUES (p_actor_user, p_request_id, p_method, it.id, p_request_sha256);
  RETURN it;
END $$;
