-- A write decided on facts read first is checked again under the clue's lock
-- (docs/COOPERATION.md, "refused in its own transaction").
--
-- clued decides a write on the facts it read, then sends it; what the write's compare-and-swap
-- does not cover must be looked at again in the write's transaction, after the clue's lock:
-- a change that holds that lock until it commits is then either committed and seen, or ordered
-- after the write. 0033 looked for a recusal of the caller in clue_request_begin(), before
-- that lock; a recusal still being written (clue_recuse() holds the clue until it commits)
-- passed that look, and the write, waiting for the clue, went on once it committed. 0034 and
-- 0035 looked after the lock, for the lead room's assignments and for the ledger. Now also:
--
--   - every single write on a clue, after taking the clue's lock: a caller recused from it is
--     refused as the server refuses a recused caller, CLNOF "clue not found" ("proposal not
--     found" for a review). clue_refuse_recused() is that check, for the moves, co-review
--     proposals and reviews, handovers, deadline extensions, notes, assignments and recusals
--     (clue_lock_seen_owner() makes it for the last two), and the case calls below;
--   - case_create(), case_add_clue() (through case_join()) and case_remove_clue(), which did
--     not look at recusals at all: a recused caller is refused as the server refuses one
--     ("clue_ids: clue N: clue not found" for CreateJointCase, "clue not found" otherwise);
--   - clue_apply_moves(), the batched moves: a move of a clue that had a recusal is left out,
--     to run alone. Its look at recusals read the update's snapshot, taken before the update
--     waited for the clue; the flag has_recusals is read from the row the update locked, as
--     the first recusal sets it in the recusal's own transaction. Almost no clue has one, so
--     the common move still probes nothing;
--   - clue_set_handler(): an assignment the server allowed in one state and written after the
--     clue moved (to CLOSED, say: a terminal state takes no new handlers) is refused as a
--     change made meanwhile, CLVER, for a reload and a new decision. The server now sends the
--     state it saw;
--   - clue_recuse(): a recording the server allowed to the lead room of the clue's joint case
--     and written after the clue left the case is refused as the lead room's AssignHandler is
--     (CLVER, 0034); nothing is recorded, and the owner's leader is not locked out by a room
--     that no longer sees the clue.
--
-- A refusal raised after a write's own update undoes it with the transaction: nothing is written.

-- Under the clue's lock (c is the row as locked): a recusal of p_user from it refuses the call
-- as a missing clue, in p_message's words. has_recusals comes from the locked row: the first
-- recusal sets it in its own transaction, under the same lock.
CREATE FUNCTION clue_refuse_recused(c clues, p_user bigint, p_message text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF c.has_recusals AND clue_user_recused(c.id, p_user) THEN
    RAISE EXCEPTION USING ERRCODE = 'CLNOF', MESSAGE = p_message;
  END IF;
END $$;

-- Under the clue's lock: a call the server allowed to a leader of p_unit as the lead room of
-- the clue's joint case (not as the owner) is refused once the clue has left that case, which
-- this call's compare does not cover. The predicate of 0034's clue_set_handler().
CREATE FUNCTION clue_refuse_left_case(c clues, p_unit bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF p_unit <> c.owner_unit AND joint_case_lead(c.joint_case_id) IS DISTINCT FROM p_unit THEN
    RAISE EXCEPTION USING ERRCODE = 'CLVER', MESSAGE = format(
      'clue %s left its joint case meanwhile; reload it and retry', c.id);
  END IF;
END $$;

-- The caller p_user, recused meanwhile, is refused before it learns that the clue changed owner.
DROP FUNCTION clue_lock_seen_owner(bigint, bigint);

-- Replaces clue_lock_seen_owner of 0020_cooperation_flags.sql: the same lock and owner compare,
-- and a caller recused from the clue refused as for a missing clue.
CREATE FUNCTION clue_lock_seen_owner(p_clue bigint, p_seen_owner bigint, p_user bigint) RETURNS clues
LANGUAGE plpgsql AS $$
DECLARE
  c clues;
BEGIN
  SELECT * INTO c FROM clues WHERE id = p_clue FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CLNOF', MESSAGE = 'clue not found';
  END IF;
  PERFORM clue_refuse_recused(c, p_user, 'clue not found');
  IF c.owner_unit <> p_seen_owner THEN
    RAISE EXCEPTION USING ERRCODE = 'CLVER', MESSAGE = format(
      'clue %s was handed over meanwhile; reload it and retry', p_clue);
  END IF;
  RETURN c;
END $$;

-- clued sends the state it decided an assignment in (p_seen_state).
DROP FUNCTION clue_set_handler(bigint, bigint, uuid, bigint, bigint, bigint, bigint, boolean, text);

-- Replaces clue_set_handler of 0034_case_assignments_end_with_the_case.sql: the same, the
-- caller's recusal looked for under the clue's lock, and an assignment refused when the clue
-- moved since the server decided it.
CREATE FUNCTION clue_set_handler(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid,
                                 p_now_ms bigint, p_clue bigint, p_seen_owner bigint, p_seen_state text,
                                 p_user bigint, p_assign boolean, p_reason text)
RETURNS clues LANGUAGE plpgsql AS $$
DECLARE
  method text := CASE WHEN p_assign THEN 'AssignHandler' ELSE 'UnassignHandler' END;
  o clue_outcome := clue_request_begin(p_actor_user, p_request_id, method, p_clue, NULL);
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
  SELECT * INTO u FROM users WHERE id = p_user;
  IF p_assign THEN
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
  PERFORM clue_request_record(p_actor_user, p_request_id, method, c.id, NULL, c.owner_unit);
  RETURN c;
END $$;

-- Replaces clue_recuse of 0019_handlers_recusal.sql: the same, the recorder's recusal looked for
-- under the clue's lock, and the lead room's recording refused once the clue left its case.
CREATE OR REPLACE FUNCTION clue_recuse(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid, p_now_ms bigint,
                                       p_clue bigint, p_seen_owner bigint, p_user bigint, p_reason text)
RETURNS recusals LANGUAGE plpgsql AS $$
DECLARE
  o clue_outcome := clue_request_begin(p_actor_user, p_request_id, 'RecordRecusal', p_clue, NULL);
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
  SELECT * INTO u FROM users WHERE id = p_user;
  -- The user records their own conflict, or a leader of their unit does: neither stands on
  -- the clue's case. Anyone else is a leader of the owner or of the case's lead room.
  IF p_user <> p_actor_user AND u.unit_id IS DISTINCT FROM p_actor_unit THEN
    PERFORM clue_refuse_left_case(c, p_actor_unit);
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
  INSERT INTO clue_requests (user_id, request_id, method, clue_id, recusal_id, owner_unit)
  VALUES (p_actor_user, p_request_id, 'RecordRecusal', c.id, r.id, c.owner_unit);
  RETURN r;
END $$;

-- case_join() learns how its caller words a missing clue (p_hidden_as).
DROP FUNCTION case_join(bigint, bigint, joint_cases, bigint, bigint, bigint, text, uuid);

-- Replaces case_join of 0008_named_errors.sql: the same, and a caller recused from the clue
-- refused under the clue's lock as for a missing clue, in the words p_hidden_as.
CREATE FUNCTION case_join(p_actor_user bigint, p_actor_unit bigint, jc joint_cases, p_clue bigint,
                          p_version bigint, p_now_ms bigint, p_reason text, p_request_id uuid, p_hidden_as text)
RETURNS clues LANGUAGE plpgsql AS $$
DECLARE
  c clues;
BEGIN
  SELECT * INTO c FROM clues WHERE id = p_clue AND version = p_version AND pending_proposal_id IS NULL
  FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    PERFORM clue_refuse_stale(p_clue, p_version);
  END IF;
  PERFORM clue_refuse_recused(c, p_actor_user, p_hidden_as);
  INSERT INTO case_clues (clue_id, case_id, owner_unit, added_by, added_at)
  VALUES (c.id, jc.id, c.owner_unit, p_actor_user, clue_ms_ts(p_now_ms));
  UPDATE clues SET joint_case_id = jc.id, version = version + 1, updated_at = clue_ms_ts(p_now_ms)
  WHERE id = c.id RETURNING * INTO c;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'case.add_clue', 'clue', c.id, c.owner_unit, NULL, NULL,
                       p_reason, jsonb_strip_nulls(jsonb_build_object(
                         'case_id', jc.id, 'lead_unit_id', jc.lead_unit, 'state', c.state,
                         'version', c.version, 'request_id', p_request_id)));
  RETURN c;
END $$;

-- Replaces case_add_clue of 0005_cases.sql: the same, through the case_join() above.
CREATE OR REPLACE FUNCTION case_add_clue(p_actor_user bigint, p_actor_unit bigint, p_now_ms bigint, p_case bigint,
                                         p_clue bigint, p_version bigint, p_reason text)
RETURNS SETOF joint_case_row LANGUAGE plpgsql AS $$
DECLARE
  jc joint_cases := case_lock(p_case);
BEGIN
  PERFORM case_join(p_actor_user, p_actor_unit, jc, p_clue, p_version, p_now_ms, p_reason, NULL, 'clue not found');
  RETURN QUERY SELECT * FROM joint_case_rows(jc.id, p_actor_unit);
END $$;

-- Replaces case_create of 0033_recusals_and_request_keys_checked_in_the_write.sql: the same,
-- through the case_join() above, which names a clue the caller is recused from as the server's
-- refusal of a listed clue does.
CREATE OR REPLACE FUNCTION case_create(
  p_actor_user bigint, p_actor_unit bigint, p_request_id uuid, p_now_ms bigint, p_title text, p_basis text,
  p_participants bigint[], p_clues bigint[], p_clue_versions bigint[])
RETURNS SETOF joint_case_row LANGUAGE plpgsql AS $$
DECLARE
  q clue_requests;
  jc joint_cases;
  m record;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended('clue_requests/' || p_actor_user || '/' || p_request_id, 0));
  SELECT * INTO q FROM clue_requests WHERE user_id = p_actor_user AND request_id = p_request_id;
  IF NOT FOUND THEN
    PERFORM clue_request_refuse_ledger_key(p_actor_user, p_request_id);
  ELSE
    IF q.method <> 'CreateJointCase' THEN
      RAISE EXCEPTION USING ERRCODE = 'CLARG',
        MESSAGE = format('request_id %s was already used for another call (%s)', p_request_id, q.method);
    END IF;
    RETURN QUERY SELECT * FROM joint_case_rows(q.case_id, p_actor_unit);
    RETURN;
  END IF;
  IF coalesce(array_length(p_clues, 1), 0) <> coalesce(array_length(p_clue_versions, 1), 0) THEN
    RAISE EXCEPTION 'case_create: % clues but % versions', array_length(p_clues, 1),
      array_length(p_clue_versions, 1);
  END IF;
  INSERT INTO joint_cases (title, basis, lead_unit, created_by, created_at)
  VALUES (p_title, coalesce(p_basis, ''), p_actor_unit, p_actor_user, clue_ms_ts(p_now_ms))
  RETURNING * INTO jc;
  INSERT INTO case_participants (case_id, unit_id, added_by, added_at)
  SELECT jc.id, u, p_actor_user, clue_ms_ts(p_now_ms) FROM unnest(p_participants) u;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'case.create', 'case', jc.id, NULL, NULL, NULL, NULL,
                       jsonb_build_object('title', jc.title, 'basis', jc.basis, 'lead_unit_id', jc.lead_unit,
                                          'participant_unit_ids', to_jsonb(coalesce(p_participants, '{}')),
                                          'clue_ids', to_jsonb(coalesce(p_clues, '{}')),
                                          'request_id', p_request_id));
  -- In id order, as every creation locks them: two creations naming the same clues wait for
  -- each other instead of deadlocking.
  FOR m IN SELECT * FROM unnest(p_clues, p_clue_versions) AS t(clue_id, version) ORDER BY clue_id LOOP
    PERFORM case_join(p_actor_user, p_actor_unit, jc, m.clue_id, m.version, p_now_ms, NULL, p_request_id,
                      format('clue_ids: clue %s: clue not found', m.clue_id));
  END LOOP;
  INSERT INTO clue_requests (user_id, request_id, method, case_id, owner_unit)
  VALUES (p_actor_user, p_request_id, 'CreateJointCase', jc.id, jc.lead_unit);
  RETURN QUERY SELECT * FROM joint_case_rows(jc.id, p_actor_unit);
END $$;

-- Replaces case_remove_clue of 0034_case_assignments_end_with_the_case.sql: the same, and a
-- caller recused from the clue refused under the clue's lock as for a missing clue.
CREATE OR REPLACE FUNCTION case_remove_clue(p_actor_user bigint, p_actor_unit bigint, p_now_ms bigint,
                                            p_case bigint, p_clue bigint, p_version bigint, p_reason text)
RETURNS SETOF joint_case_row LANGUAGE plpgsql AS $$
DECLARE
  jc joint_cases := case_lock(p_case);
  c clues;
  ended bigint[];
BEGIN
  SELECT * INTO c FROM clues WHERE id = p_clue AND version = p_version AND pending_proposal_id IS NULL
  FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    PERFORM clue_refuse_stale(p_clue, p_version);
  END IF;
  PERFORM clue_refuse_recused(c, p_actor_user, 'clue not found');
  UPDATE clues SET joint_case_id = NULL, version = version + 1, updated_at = clue_ms_ts(p_now_ms)
  WHERE id = c.id RETURNING * INTO c;
  DELETE FROM case_clues WHERE clue_id = c.id;
  -- The lead room assigned as the case's lead; that ends here. The event names the handlers
  -- whose assignment ended (those that counted: made while the owner owned the clue).
  WITH gone AS (DELETE FROM clue_handlers h
                WHERE h.clue_id = c.id AND h.assigned_by_unit = jc.lead_unit AND jc.lead_unit <> c.owner_unit
                RETURNING h.user_id, h.owner_unit)
  SELECT array_agg(gone.user_id ORDER BY gone.user_id) FILTER (WHERE gone.owner_unit = c.owner_unit)
  INTO ended FROM gone;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'case.remove_clue', 'clue', c.id, c.owner_unit, NULL, NULL,
                       p_reason, jsonb_strip_nulls(jsonb_build_object(
                         'case_id', jc.id, 'lead_unit_id', jc.lead_unit, 'state', c.state,
                         'version', c.version, 'unassigned_user_ids', to_jsonb(ended))));
  RETURN QUERY SELECT * FROM joint_case_rows(jc.id, p_actor_unit);
END $$;

-- Replaces clue_apply_move of 0018_one_statement_writes.sql: the same, and a caller recused
-- from the clue refused once the update holds it.
CREATE OR REPLACE FUNCTION clue_apply_move(
  p_actor_user bigint, p_actor_unit bigint, p_request_id uuid, p_now_ms bigint, p_clue bigint,
  p_expected_version bigint, p_from text, p_to text, p_action text, p_reason text, p_details jsonb,
  p_deadline_ms bigint, p_token bigint)
RETURNS clue_outcome LANGUAGE plpgsql AS $$
DECLARE
  o clue_outcome;
  c clues;
  now_ts timestamptz := clue_ms_ts(p_now_ms);
  deadline_ts timestamptz := clue_ms_ts(p_deadline_ms);
BEGIN
  o := clue_request_begin(p_actor_user, p_request_id, 'RequestTransition', p_clue, NULL);
  IF (o.clue).id IS NOT NULL THEN
    RETURN o;
  END IF;
  -- Of two racing moves the second re-reads the row the first changed, re-checks the WHERE
  -- against it and updates nothing.
  UPDATE clues SET
    state = p_to,
    version = version + 1,
    updated_at = now_ts,
    stage_entered_at = now_ts,
    stage_deadline = deadline_ts,
    deadline_extended = false,
    disposal = coalesce(p_details ->> 'disposal', disposal),
    finding = coalesce(p_details ->> 'finding', finding),
    sanction_kind = coalesce(p_details ->> 'sanction_kind', sanction_kind),
    persons_disciplined = coalesce((p_details ->> 'persons_disciplined')::int, persons_disciplined),
    receiving_organ = coalesce(p_details ->> 'receiving_organ', receiving_organ),
    closed_at = CASE WHEN deadline_ts IS NULL THEN now_ts END,
    pending_proposal_id = NULL,
    pending_reviewer_unit = NULL
  WHERE id = p_clue AND version = p_expected_version AND state = p_from AND pending_proposal_id IS NULL
  RETURNING * INTO c;
  IF NOT FOUND THEN
    PERFORM clue_refuse_stale(p_clue, p_expected_version);
  END IF;
  -- The update holds the clue now, so a recusal that held it first has committed; the
  -- refusal undoes the update.
  PERFORM clue_refuse_recused(c, p_actor_user, 'clue not found');
  PERFORM audit_append(p_actor_user, p_actor_unit, 'clue.move', 'clue', c.id, c.owner_unit, p_from, p_to, p_reason,
                       coalesce(p_details, '{}') || jsonb_build_object('action', p_action, 'version', c.version,
                                                                       'stage_deadline_ms', p_deadline_ms,
                                                                       'request_id', p_request_id),
                       p_token);
  INSERT INTO clue_requests (user_id, request_id, method, clue_id, proposal_id, owner_unit)
  VALUES (p_actor_user, p_request_id, 'RequestTransition', c.id, NULL, c.owner_unit);
  o.clue := c;
  RETURN o;
END $$;

-- Replaces proposal_create of 0003_clues.sql: the same, and a caller recused from the clue
-- refused under the clue's lock.
CREATE OR REPLACE FUNCTION proposal_create(
  p_actor_user bigint, p_actor_unit bigint, p_request_id uuid, p_now_ms bigint, p_clue bigint,
  p_expected_version bigint, p_from text, p_to text, p_action text, p_reason text, p_details jsonb,
  p_reviewer_unit bigint)
RETURNS clue_outcome LANGUAGE plpgsql AS $$
DECLARE
  o clue_outcome;
  c clues;
  p proposals;
BEGIN
  o := clue_request_begin(p_actor_user, p_request_id, 'RequestTransition', p_clue, NULL);
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
  PERFORM clue_request_record(p_actor_user, p_request_id, 'RequestTransition', c.id, p.id, c.owner_unit);
  o.clue := c;
  o.proposal := p;
  RETURN o;
END $$;

-- Replaces proposal_decide of 0008_named_errors.sql: the same, with the clue locked in both
-- decisions (an approval locked it, a rejection's update did) before anything is said of the
-- proposal, and a reviewer recused from the clue refused as for a missing proposal.
CREATE OR REPLACE FUNCTION proposal_decide(
  p_actor_user bigint, p_actor_unit bigint, p_request_id uuid, p_now_ms bigint, p_proposal bigint,
  p_approve boolean, p_comment text, p_action text, p_deadline_ms bigint)
RETURNS clue_outcome LANGUAGE plpgsql AS $$
DECLARE
  o clue_outcome;
  c clues;
  p proposals;
BEGIN
  o := clue_request_begin(p_actor_user, p_request_id, 'ReviewProposal', NULL, p_proposal);
  IF (o.clue).id IS NOT NULL THEN
    RETURN o;
  END IF;
  SELECT * INTO p FROM proposals WHERE id = p_proposal FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CLNOF', MESSAGE = 'proposal not found';
  END IF;
  SELECT * INTO c FROM clues WHERE id = p.clue_id FOR NO KEY UPDATE;
  PERFORM clue_refuse_recused(c, p_actor_user, 'proposal not found');
  IF p.status <> 'PENDING' THEN
    RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = 'proposal was already decided';
  END IF;
  IF p_approve THEN
    IF c.version <> p.clue_version OR c.state <> p.from_state OR c.pending_proposal_id IS DISTINCT FROM p.id THEN
      RAISE EXCEPTION USING ERRCODE = 'CLVER', MESSAGE = format(
        'clue %s changed since the proposal was made (now version %s, proposal made at version %s); '
        'reject the proposal and propose again', p.clue_id, c.version, p.clue_version);
    END IF;
    c := clue_enter_state(p.clue_id, p.target, p.details, p_now_ms, p_deadline_ms);
  ELSE
    UPDATE clues SET pending_proposal_id = NULL, pending_reviewer_unit = NULL
    WHERE id = p.clue_id AND pending_proposal_id = p.id
    RETURNING * INTO c;
    IF NOT FOUND THEN
      SELECT * INTO c FROM clues WHERE id = p.clue_id;
    END IF;
  END IF;
  UPDATE proposals
  SET status = CASE WHEN p_approve THEN 'APPROVED' ELSE 'REJECTED' END,
      review_comment = p_comment, reviewed_by = p_actor_user, decided_at = clue_ms_ts(p_now_ms)
  WHERE id = p.id
  RETURNING * INTO p;
  PERFORM audit_append(p_actor_user, p_actor_unit,
                       CASE WHEN p_approve THEN 'proposal.approve' ELSE 'proposal.reject' END,
                       'clue', c.id, c.owner_unit, p.from_state, p.target, p_comment,
                       p.details || jsonb_build_object(
                         'proposal_id', p.id, 'action', p_action, 'proposer_user_id', p.proposer_user,
                         'version', c.version,
                         'stage_deadline_ms', CASE WHEN p_approve THEN p_deadline_ms END,
                         'request_id', p_request_id));
  PERFORM clue_request_record(p_actor_user, p_request_id, 'ReviewProposal', c.id, p.id, c.owner_unit);
  o.clue := c;
  o.proposal := p;
  RETURN o;
END $$;

-- Replaces clue_handover of 0032_handover_ends_assignments.sql: the same, and a caller recused
-- from the clue refused under the clue's lock, before the compare.
CREATE OR REPLACE FUNCTION clue_handover(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid,
                                         p_now_ms bigint, p_clue bigint, p_expected_version bigint,
                                         p_to_unit bigint, p_reason text)
RETURNS clue_outcome LANGUAGE plpgsql AS $$
DECLARE
  o clue_outcome;
  c clues;
  p proposals;
  pid bigint;
  from_unit bigint;
  ended bigint[];
  now_ts timestamptz := clue_ms_ts(p_now_ms);
BEGIN
  o := clue_request_begin(p_actor_user, p_request_id, 'HandOver', p_clue, NULL);
  IF (o.clue).id IS NOT NULL THEN
    RETURN o;
  END IF;
  SELECT pending_proposal_id INTO pid FROM clues WHERE id = p_clue;
  IF pid IS NOT NULL THEN
    PERFORM 1 FROM proposals WHERE id = pid FOR NO KEY UPDATE;
  END IF;
  SELECT * INTO c FROM clues WHERE id = p_clue FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CLNOF', MESSAGE = 'clue not found';
  END IF;
  PERFORM clue_refuse_recused(c, p_actor_user, 'clue not found');
  IF c.version <> p_expected_version THEN
    RAISE EXCEPTION USING ERRCODE = 'CLVER', MESSAGE = format(
      'clue %s is at version %s, not the expected %s: it changed meanwhile; reload it and retry',
      p_clue, c.version, p_expected_version);
  END IF;
  IF c.pending_proposal_id IS DISTINCT FROM pid THEN
    RAISE EXCEPTION USING ERRCODE = 'CLVER', MESSAGE = format(
      'clue %s changed meanwhile; reload it and retry', p_clue);
  END IF;
  from_unit := c.owner_unit;

  IF pid IS NOT NULL THEN
    UPDATE proposals SET status = 'WITHDRAWN', decided_at = now_ts
    WHERE id = pid RETURNING * INTO p;
    PERFORM audit_append(p_actor_user, p_actor_unit, 'proposal.withdraw', 'clue', c.id, from_unit,
                         p.from_state, p.target, p_reason,
                         jsonb_build_object('proposal_id', p.id, 'reviewer_unit_id', p.reviewer_unit,
                                            'cause', 'handover', 'to_unit_id', p_to_unit,
                                            'request_id', p_request_id));
  END IF;

  UPDATE clues SET owner_unit = p_to_unit, version = version + 1, updated_at = now_ts,
                   pending_proposal_id = NULL, pending_reviewer_unit = NULL
  WHERE id = c.id RETURNING * INTO c;
  UPDATE clue_reporters SET owner_unit = p_to_unit WHERE clue_id = c.id;
  UPDATE proposals SET owner_unit = p_to_unit WHERE clue_id = c.id;
  UPDATE clue_requests SET owner_unit = p_to_unit WHERE clue_id = c.id;
  UPDATE notes SET owner_unit = p_to_unit WHERE clue_id = c.id;
  UPDATE case_clues SET owner_unit = p_to_unit WHERE clue_id = c.id;
  -- Every assignment ends here, for good: the rows go, so that no later handover back to the
  -- unit that made them can bring them back. The event names the handlers it ended.
  WITH gone AS (DELETE FROM clue_handlers h WHERE h.clue_id = c.id RETURNING h.user_id, h.owner_unit)
  SELECT array_agg(gone.user_id ORDER BY gone.user_id) FILTER (WHERE gone.owner_unit = from_unit)
  INTO ended FROM gone;

  PERFORM audit_append(p_actor_user, p_actor_unit, 'clue.handover', 'clue', c.id, c.owner_unit, NULL, NULL,
                       p_reason, jsonb_strip_nulls(jsonb_build_object(
                         'from_unit_id', from_unit, 'to_unit_id', p_to_unit, 'state', c.state,
                         'registration_number', c.registration_number, 'version', c.version,
                         'withdrawn_proposal_id', pid, 'case_id', c.joint_case_id,
                         'unassigned_user_ids', to_jsonb(ended), 'request_id', p_request_id)));
  INSERT INTO clue_requests (user_id, request_id, method, clue_id, owner_unit, clue_version)
  VALUES (p_actor_user, p_request_id, 'HandOver', c.id, c.owner_unit, c.version);
  o.clue := c;
  IF pid IS NOT NULL THEN
    o.proposal := p;
  END IF;
  RETURN o;
END $$;

-- Replaces clue_extend_deadline of 0008_named_errors.sql: the same, and a caller recused from
-- the clue refused under the clue's lock.
CREATE OR REPLACE FUNCTION clue_extend_deadline(
  p_actor_user bigint, p_actor_unit bigint, p_request_id uuid, p_now_ms bigint, p_clue bigint,
  p_expected_version bigint, p_days int, p_reason text)
RETURNS clues LANGUAGE plpgsql AS $$
DECLARE
  o clue_outcome;
  c clues;
  old_ms bigint;
BEGIN
  o := clue_request_begin(p_actor_user, p_request_id, 'ExtendDeadline', p_clue, NULL);
  IF (o.clue).id IS NOT NULL THEN
    RETURN o.clue;
  END IF;
  SELECT * INTO c FROM clues WHERE id = p_clue AND version = p_expected_version AND pending_proposal_id IS NULL
  FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    PERFORM clue_refuse_stale(p_clue, p_expected_version);
  END IF;
  PERFORM clue_refuse_recused(c, p_actor_user, 'clue not found');
  old_ms := (extract(epoch FROM c.stage_deadline) * 1000)::bigint;
  UPDATE clues SET
    stage_deadline = stage_deadline + (p_days::bigint * 86400000) * interval '1 millisecond',
    deadline_extended = true,
    version = version + 1,
    updated_at = clue_ms_ts(p_now_ms)
  WHERE id = p_clue
  RETURNING * INTO c;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'clue.deadline_extend', 'clue', c.id, c.owner_unit, NULL, NULL,
                       p_reason, jsonb_build_object('state', c.state, 'days', p_days, 'old_deadline_ms', old_ms,
                                                    'new_deadline_ms', old_ms + p_days::bigint * 86400000,
                                                    'version', c.version, 'request_id', p_request_id));
  PERFORM clue_request_record(p_actor_user, p_request_id, 'ExtendDeadline', c.id, NULL, c.owner_unit);
  RETURN c;
END $$;

-- Replaces note_add of 0008_named_errors.sql: the same, and an author recused from the clue
-- refused under the clue's lock, before the owner compare.
CREATE OR REPLACE FUNCTION note_add(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid, p_now_ms bigint,
                                    p_clue bigint, p_seen_owner bigint, p_kind text, p_text text)
RETURNS notes LANGUAGE plpgsql AS $$
DECLARE
  o clue_outcome;
  c clues;
  n notes;
BEGIN
  o := clue_request_begin(p_actor_user, p_request_id, 'AddNote', p_clue, NULL);
  IF (o.clue).id IS NOT NULL THEN
    SELECT x.* INTO n FROM clue_requests q JOIN notes x ON x.id = q.note_id
    WHERE q.user_id = p_actor_user AND q.request_id = p_request_id;
    RETURN n;
  END IF;
  SELECT * INTO c FROM clues WHERE id = p_clue FOR SHARE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CLNOF', MESSAGE = 'clue not found';
  END IF;
  PERFORM clue_refuse_recused(c, p_actor_user, 'clue not found');
  IF c.owner_unit <> p_seen_owner THEN
    RAISE EXCEPTION USING ERRCODE = 'CLVER', MESSAGE = format(
      'clue %s was handed over meanwhile; reload it and retry', p_clue);
  END IF;
  INSERT INTO notes (clue_id, owner_unit, kind, text, author_user, author_unit, created_at)
  VALUES (c.id, c.owner_unit, p_kind, p_text, p_actor_user, p_actor_unit, clue_ms_ts(p_now_ms))
  RETURNING * INTO n;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'note.add', 'clue', c.id, c.owner_unit, NULL, NULL, NULL,
                       jsonb_build_object('note_id', n.id, 'kind', n.kind, 'text_bytes', octet_length(n.text),
                                          'text_sha256', encode(sha256(convert_to(n.text, 'UTF8')), 'hex'),
                                          'request_id', p_request_id));
  INSERT INTO clue_requests (user_id, request_id, method, clue_id, note_id, owner_unit)
  VALUES (p_actor_user, p_request_id, 'AddNote', c.id, n.id, c.owner_unit);
  RETURN n;
END $$;

-- Replaces clue_apply_moves of 0033_recusals_and_request_keys_checked_in_the_write.sql: the
-- same, and every move of a clue that had a recusal left out, to run alone.
CREATE OR REPLACE FUNCTION clue_apply_moves(
  p_actor_user bigint[], p_actor_unit bigint[], p_request_id uuid[], p_now_ms bigint[], p_clue bigint[],
  p_expected_version bigint[], p_from text[], p_to text[], p_action text[], p_reason text[], p_details jsonb[],
  p_deadline_ms bigint[], p_token bigint[], p_direct boolean)
RETURNS TABLE (ord int, clue clues, proposal proposals) LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_hashjoin = off
SET enable_mergejoin = off AS $$
DECLARE
  m record;
BEGIN
  -- The request ids' locks first, as clue_request_begin() takes each: in key order, so that two
  -- batches cannot deadlock on them. Held, they also keep the guard's "no record" true until
  -- this transaction ends: every writer of a record takes its key's lock first.
  PERFORM pg_advisory_xact_lock(l.key)
  FROM (SELECT DISTINCT hashtextextended('clue_requests/' || x.u || '/' || x.r, 0) AS key
        FROM unnest(p_actor_user, p_request_id) AS x(u, r) ORDER BY 1) l;
  -- Two moves of one clue: the update takes the clue once, for one of them; the other is left
  -- out (and refused alone by its compare-and-swap). So is every move of a clue that had a
  -- recusal: a look at recusals here would read the snapshot taken before the update waited
  -- for the clue, which a recusal's writer holds until it commits, while has_recusals is
  -- read again from the row the update locks (the first recusal sets it in its own
  -- transaction). Alone, clue_apply_move() looks under the lock and refuses a recused caller
  -- as a missing clue; a clue without recusals, almost every one, costs no probe. And one
  -- whose key a ledger call used is left out (refused alone, as reused). Each move done
  -- records its request.
  WITH i AS MATERIALIZED (
    SELECT s.*, clue_ms_ts(s.now_ms) AS now_ts, clue_ms_ts(s.dl) AS deadline_ts
    FROM unnest(p_actor_user, p_actor_unit, p_request_id, p_now_ms, p_clue, p_expected_version, p_from, p_to,
                p_action, p_reason, p_details, p_deadline_ms, p_token) WITH ORDINALITY
           AS s(au, aun, rid, now_ms, cid, ver, f, t, act, reason, details, dl, tok, k)
    ORDER BY s.cid
  ), u AS (
    UPDATE clues c SET
      state = i.t,
      version = c.version + 1,
      updated_at = i.now_ts,
      stage_entered_at = i.now_ts,
      stage_deadline = i.deadline_ts,
      deadline_extended = false,
      disposal = coalesce(i.details ->> 'disposal', c.disposal),
      finding = coalesce(i.details ->> 'finding', c.finding),
      sanction_kind = coalesce(i.details ->> 'sanction_kind', c.sanction_kind),
      persons_disciplined = coalesce((i.details ->> 'persons_disciplined')::int, c.persons_disciplined),
      receiving_organ = coalesce(i.details ->> 'receiving_organ', c.receiving_organ),
      closed_at = CASE WHEN i.deadline_ts IS NULL THEN i.now_ts END,
      pending_proposal_id = NULL,
      pending_reviewer_unit = NULL
    FROM i
    WHERE c.id = i.cid AND c.version = i.ver AND c.state = i.f AND c.pending_proposal_id IS NULL
      AND NOT c.has_recusals
      AND NOT EXISTS (SELECT 1 FROM rect_requests x WHERE x.user_id = i.au AND x.request_id = i.rid)
      AND (NOT p_direct
           OR (c.owner_unit = i.aun
               AND NOT EXISTS (SELECT 1 FROM clue_requests r WHERE r.user_id = i.au AND r.request_id = i.rid)))
    RETURNING c AS row, i.*
  ), q AS (
    INSERT INTO clue_requests (user_id, request_id, method, clue_id, proposal_id, owner_unit)
    SELECT u.au, u.rid, 'RequestTransition', (u.row).id, NULL, (u.row).owner_unit FROM u
  )
  SELECT array_agg(u.row ORDER BY u.k) AS rows, array_agg(u.k::int ORDER BY u.k) AS ks,
         array_agg((u.row).id ORDER BY u.k) AS ids, array_agg((u.row).owner_unit ORDER BY u.k) AS owners,
         array_agg(u.au ORDER BY u.k) AS au, array_agg(u.aun ORDER BY u.k) AS aun,
         array_agg(u.f ORDER BY u.k) AS f, array_agg(u.t ORDER BY u.k) AS t,
         array_agg(u.reason ORDER BY u.k) AS reason,
         array_agg(coalesce(u.details, '{}') || jsonb_build_object('action', u.act, 'version', (u.row).version,
                                                                   'stage_deadline_ms', u.dl,
                                                                   'request_id', u.rid) ORDER BY u.k) AS details,
         array_agg(u.tok ORDER BY u.k) AS tok
  INTO m FROM u;
  IF m.ks IS NULL THEN
    RETURN;
  END IF;

  PERFORM audit_append_many(m.au, m.aun, array_fill('clue.move'::text, ARRAY[cardinality(m.ks)]),
                            array_fill('clue'::text, ARRAY[cardinality(m.ks)]),
                            m.ids, m.owners,
                            m.f, m.t, m.reason, m.details, m.tok);

  -- (A composite array unnested beside others would be expanded into its columns.)
  RETURN QUERY SELECT m.ks[s.j], m.rows[s.j], NULL::proposals FROM generate_subscripts(m.ks, 1) AS s(j);
END $$;
