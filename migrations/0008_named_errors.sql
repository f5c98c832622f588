-- One source for each rule (issue 9, Build 7): the server's domain (server/domain/authz.c)
-- decides who may do what and whether a move or a change fits the clue as the caller saw it;
-- the functions below only apply that decision, and check only what the version compare-and-
-- swap does not already cover: a change committed meanwhile that did not bump the clue's
-- version (a proposal made or decided, a note's owner, a case's participants), and the
-- idempotency records. Everything the decision saw at a version (state, owner, joint case,
-- deadline, the target of a handover, who takes part) is covered by comparing that version.
--
-- Errors raise named SQLSTATEs, which server/service/sql_errors.c maps to gRPC codes in one
-- table (the earlier files raised 'CLnnn', nnn being the gRPC status number):
--   CLNOF  NOT_FOUND             the row is gone (the server already answered for hidden ones)
--   CLARG  INVALID_ARGUMENT      a request_id used for another call
--   CLDUP  ALREADY_EXISTS        a unit already takes part in the case
--   CLPRE  FAILED_PRECONDITION   a change that raced a proposal, a decision or a participant
--   CLVER  ABORTED               the clue changed meanwhile; reload it and retry
--
-- Each CREATE OR REPLACE names the definition it replaces in its first line.

-- ---- 0003_clues.sql ----------------------------------------------------------------------------

-- Replaces clue_request_begin of 0003_clues.sql (CL003 -> CLARG).
CREATE OR REPLACE FUNCTION clue_request_begin(p_user bigint, p_request_id uuid, p_method text, p_clue bigint,
                                              p_proposal bigint)
RETURNS clue_outcome LANGUAGE plpgsql AS $$
DECLARE
  q clue_requests;
  o clue_outcome;
  c clues;
  p proposals;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended('clue_requests/' || p_user || '/' || p_request_id, 0));
  SELECT * INTO q FROM clue_requests WHERE user_id = p_user AND request_id = p_request_id;
  IF NOT FOUND THEN
    RETURN o;
  END IF;
  IF q.method <> p_method OR (p_clue IS NOT NULL AND q.clue_id <> p_clue)
     OR (p_proposal IS NOT NULL AND q.proposal_id IS DISTINCT FROM p_proposal) THEN
    RAISE EXCEPTION USING ERRCODE = 'CLARG',
      MESSAGE = format('request_id %s was already used for another call (%s)', p_request_id, q.method);
  END IF;
  SELECT * INTO c FROM clues WHERE id = q.clue_id;
  o.clue := c;
  IF q.proposal_id IS NOT NULL THEN
    SELECT * INTO p FROM proposals WHERE id = q.proposal_id;
    o.proposal := p;
  END IF;
  RETURN o;
END $$;

-- Replaces clue_refuse_stale of 0003_clues.sql (named SQLSTATEs). Why a compare-and-swap on
-- clue p_clue matched no row: the version moved (ABORTED), or a proposal is pending, which
-- does not bump the version (FAILED_PRECONDITION).
CREATE OR REPLACE FUNCTION clue_refuse_stale(p_clue bigint, p_expected bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  c clues;
BEGIN
  SELECT * INTO c FROM clues WHERE id = p_clue;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CLNOF', MESSAGE = 'clue not found';
  END IF;
  IF c.version <> p_expected THEN
    RAISE EXCEPTION USING ERRCODE = 'CLVER', MESSAGE = format(
      'clue %s is at version %s, not the expected %s: it changed meanwhile; reload it and retry',
      p_clue, c.version, p_expected);
  END IF;
  IF c.pending_proposal_id IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = 'clue has a pending proposal; it must be reviewed first';
  END IF;
  RAISE EXCEPTION USING ERRCODE = 'CLVER', MESSAGE = format(
    'clue %s changed meanwhile (now %s at version %s); reload it and retry', p_clue, c.state, c.version);
END $$;

-- Replaces clue_submit of 0003_clues.sql (CL005 -> CLNOF).
CREATE OR REPLACE FUNCTION clue_submit(
  p_actor_user bigint, p_actor_unit bigint, p_request_id uuid, p_now_ms bigint, p_deadline_ms bigint,
  p_year int, p_title text, p_summary text, p_source text, p_subject_name text, p_subject_position text,
  p_subject_rank text, p_subject_top boolean, p_host_unit text, p_categories text[],
  p_rep_name text, p_rep_phone text, p_rep_address text, p_rep_email text)
RETURNS clues LANGUAGE plpgsql AS $$
DECLARE
  o clue_outcome;
  c clues;
  code text;
  n int;
  now_ts timestamptz := clue_ms_ts(p_now_ms);
  reporter boolean := coalesce(p_rep_name, '') <> '' OR coalesce(p_rep_phone, '') <> ''
                      OR coalesce(p_rep_address, '') <> '' OR coalesce(p_rep_email, '') <> '';
BEGIN
  o := clue_request_begin(p_actor_user, p_request_id, 'SubmitClue', NULL, NULL);
  IF (o.clue).id IS NOT NULL THEN
    RETURN o.clue;
  END IF;
  SELECT units.code INTO code FROM units WHERE id = p_actor_unit;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CLNOF', MESSAGE = format('unit %s not found', p_actor_unit);
  END IF;
  INSERT INTO clue_counters AS k (unit_id, year, last_seq) VALUES (p_actor_unit, p_year, 1)
  ON CONFLICT (unit_id, year) DO UPDATE SET last_seq = k.last_seq + 1
  RETURNING last_seq INTO n;
  INSERT INTO clues (registration_number, reg_unit, reg_year, reg_seq, title, summary, source,
                     subject_name, subject_position, subject_rank_level, subject_is_top_leader, host_unit,
                     violation_categories, has_reporter, state, owner_unit, created_by, created_at,
                     updated_at, stage_entered_at, stage_deadline)
  VALUES (format('%s-%s-%s', code, p_year, CASE WHEN n < 10000 THEN lpad(n::text, 4, '0') ELSE n::text END),
          p_actor_unit, p_year, n, p_title, p_summary, p_source, p_subject_name,
          coalesce(p_subject_position, ''), coalesce(p_subject_rank, ''), coalesce(p_subject_top, false),
          p_host_unit, coalesce(p_categories, '{}'), reporter, 'ACCEPTED', p_actor_unit, p_actor_user,
          now_ts, now_ts, now_ts, clue_ms_ts(p_deadline_ms))
  RETURNING * INTO c;
  IF reporter THEN
    INSERT INTO clue_reporters (clue_id, owner_unit, name, phone, address, email)
    VALUES (c.id, c.owner_unit, coalesce(p_rep_name, ''), coalesce(p_rep_phone, ''),
            coalesce(p_rep_address, ''), coalesce(p_rep_email, ''));
  END IF;
  -- The reporter is never written to the audit trail; only that there is one.
  PERFORM audit_append(p_actor_user, p_actor_unit, 'clue.submit', 'clue', c.id, c.owner_unit, NULL, 'ACCEPTED',
                       NULL, jsonb_build_object('registration_number', c.registration_number, 'title', c.title,
                                                'source', c.source, 'subject_name', c.subject_name,
                                                'host_unit', c.host_unit, 'has_reporter', reporter,
                                                'version', c.version, 'stage_deadline_ms', p_deadline_ms,
                                                'request_id', p_request_id));
  PERFORM clue_request_record(p_actor_user, p_request_id, 'SubmitClue', c.id, NULL, c.owner_unit);
  RETURN c;
END $$;

-- Replaces proposal_decide of 0003_clues.sql (named SQLSTATEs). A proposal's status and the
-- clue's version are what a concurrent call may have changed since the server's decision.
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
  IF p.status <> 'PENDING' THEN
    RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = 'proposal was already decided';
  END IF;
  IF p_approve THEN
    PERFORM 1 FROM clues WHERE id = p.clue_id AND version = p.clue_version AND state = p.from_state
                           AND pending_proposal_id = p.id
    FOR NO KEY UPDATE;
    IF NOT FOUND THEN
      SELECT * INTO c FROM clues WHERE id = p.clue_id;
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

-- ---- 0005_cases.sql ----------------------------------------------------------------------------

-- Replaces case_lock of 0005_cases.sql (CL005 -> CLNOF).
CREATE OR REPLACE FUNCTION case_lock(p_case bigint) RETURNS joint_cases
LANGUAGE plpgsql AS $$
DECLARE
  jc joint_cases;
BEGIN
  SELECT * INTO jc FROM joint_cases WHERE id = p_case FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CLNOF', MESSAGE = 'joint case not found';
  END IF;
  RETURN jc;
END $$;

-- Which units may take part is the domain's rule (authz_case_participant_ok); units do not
-- change kind, and the foreign key keeps missing ones out. case_check_participant of
-- 0005_cases.sql repeated it and is no longer called.
DROP FUNCTION case_check_participant(joint_cases, bigint, text);

-- Replaces case_join of 0005_cases.sql. Who may bring the clue, and whether its state and
-- case allow it, the server decided at version p_version (authz_can_add_clue_to_case); the
-- version covers every change of those. A proposal made meanwhile does not bump it.
CREATE OR REPLACE FUNCTION case_join(p_actor_user bigint, p_actor_unit bigint, jc joint_cases, p_clue bigint,
                                     p_version bigint, p_now_ms bigint, p_reason text, p_request_id uuid)
RETURNS clues LANGUAGE plpgsql AS $$
DECLARE
  c clues;
BEGIN
  SELECT * INTO c FROM clues WHERE id = p_clue AND version = p_version AND pending_proposal_id IS NULL
  FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    PERFORM clue_refuse_stale(p_clue, p_version);
  END IF;
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

-- Replaces case_create of 0005_cases.sql: CL003 -> CLARG; participants as the server
-- decided them (no case_check_participant).
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
  IF FOUND THEN
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
    PERFORM case_join(p_actor_user, p_actor_unit, jc, m.clue_id, m.version, p_now_ms, NULL, p_request_id);
  END LOOP;
  INSERT INTO clue_requests (user_id, request_id, method, case_id, owner_unit)
  VALUES (p_actor_user, p_request_id, 'CreateJointCase', jc.id, jc.lead_unit);
  RETURN QUERY SELECT * FROM joint_case_rows(jc.id, p_actor_unit);
END $$;

-- Replaces case_add_participant of 0005_cases.sql: CL006 -> CLDUP (a concurrent addition);
-- the unit as the server decided it (no case_check_participant).
CREATE OR REPLACE FUNCTION case_add_participant(p_actor_user bigint, p_actor_unit bigint, p_now_ms bigint,
                                                p_case bigint, p_unit bigint, p_reason text)
RETURNS SETOF joint_case_row LANGUAGE plpgsql AS $$
DECLARE
  jc joint_cases := case_lock(p_case);
BEGIN
  INSERT INTO case_participants (case_id, unit_id, added_by, added_at)
  VALUES (jc.id, p_unit, p_actor_user, clue_ms_ts(p_now_ms))
  ON CONFLICT DO NOTHING;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CLDUP',
      MESSAGE = format('unit %s already takes part in joint case %s', p_unit, jc.id);
  END IF;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'case.add_participant', 'case', jc.id, NULL, NULL, NULL,
                       p_reason, jsonb_build_object('unit_id', p_unit));
  RETURN QUERY SELECT * FROM joint_case_rows(jc.id, p_actor_unit);
END $$;

-- Replaces case_remove_participant of 0005_cases.sql: CL009 -> CLPRE (a concurrent removal).
CREATE OR REPLACE FUNCTION case_remove_participant(p_actor_user bigint, p_actor_unit bigint, p_now_ms bigint,
                                                   p_case bigint, p_unit bigint, p_reason text)
RETURNS SETOF joint_case_row LANGUAGE plpgsql AS $$
DECLARE
  jc joint_cases := case_lock(p_case);
  cp case_participants;
BEGIN
  DELETE FROM case_participants WHERE case_id = jc.id AND unit_id = p_unit RETURNING * INTO cp;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CLPRE',
      MESSAGE = format('unit %s does not take part in joint case %s', p_unit, jc.id);
  END IF;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'case.remove_participant', 'case', jc.id, NULL, NULL, NULL,
                       p_reason, jsonb_build_object('unit_id', p_unit, 'added_by', cp.added_by,
                                                    'added_at_ms', (extract(epoch FROM cp.added_at) * 1000)::bigint,
                                                    'removed_at_ms', p_now_ms));
  RETURN QUERY SELECT * FROM joint_case_rows(jc.id, p_actor_unit);
END $$;

-- Replaces case_remove_clue of 0005_cases.sql. The server decided at version p_version that
-- the clue is in this case, not terminal, and that the caller may take it out (a LEADER of
-- the owner unit or of the lead room: authz_can_remove_clue_from_case); the version covers
-- all of that. A proposal made meanwhile does not bump it. The actor's unit need not take
-- part in the case (the owner's leader takes its clue back); the server decides what the
-- caller sees of the rows returned.
CREATE OR REPLACE FUNCTION case_remove_clue(p_actor_user bigint, p_actor_unit bigint, p_now_ms bigint,
                                            p_case bigint, p_clue bigint, p_version bigint, p_reason text)
RETURNS SETOF joint_case_row LANGUAGE plpgsql AS $$
DECLARE
  jc joint_cases := case_lock(p_case);
  c clues;
BEGIN
  SELECT * INTO c FROM clues WHERE id = p_clue AND version = p_version AND pending_proposal_id IS NULL
  FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    PERFORM clue_refuse_stale(p_clue, p_version);
  END IF;
  UPDATE clues SET joint_case_id = NULL, version = version + 1, updated_at = clue_ms_ts(p_now_ms)
  WHERE id = c.id RETURNING * INTO c;
  DELETE FROM case_clues WHERE clue_id = c.id;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'case.remove_clue', 'clue', c.id, c.owner_unit, NULL, NULL,
                       p_reason, jsonb_build_object('case_id', jc.id, 'lead_unit_id', jc.lead_unit,
                                                    'state', c.state, 'version', c.version));
  RETURN QUERY SELECT * FROM joint_case_rows(jc.id, p_actor_unit);
END $$;

-- Replaces note_add of 0005_cases.sql (named SQLSTATEs). Notes carry no version: a handover
-- committed since the decision is what the owner comparison catches.
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

-- Replaces clue_handover of 0005_cases.sql. The server decided at version p_expected_version
-- that the actor leads the owner unit, that the state allows a handover and that the target
-- is a working unit other than the owner (authz_can_handover); the version covers the owner
-- and the state, units do not change kind. What remains is the pending proposal, which does
-- not bump the version: it is locked first, in proposal_decide's order, and must still be the
-- one read before the clue's lock.
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

  PERFORM audit_append(p_actor_user, p_actor_unit, 'clue.handover', 'clue', c.id, c.owner_unit, NULL, NULL,
                       p_reason, jsonb_strip_nulls(jsonb_build_object(
                         'from_unit_id', from_unit, 'to_unit_id', p_to_unit, 'state', c.state,
                         'registration_number', c.registration_number, 'version', c.version,
                         'withdrawn_proposal_id', pid, 'case_id', c.joint_case_id,
                         'request_id', p_request_id)));
  INSERT INTO clue_requests (user_id, request_id, method, clue_id, owner_unit, clue_version)
  VALUES (p_actor_user, p_request_id, 'HandOver', c.id, c.owner_unit, c.version);
  o.clue := c;
  IF pid IS NOT NULL THEN
    o.proposal := p;
  END IF;
  RETURN o;
END $$;

-- ---- 0006_stats.sql ----------------------------------------------------------------------------

-- Replaces clue_extend_deadline of 0006_stats.sql. The server decided at p_expected_version
-- that the caller leads the owner unit, that the stage has a deadline and that it was not
-- extended yet (authz_can_extend_deadline); the version covers the state, the deadline and
-- deadline_extended. A proposal made meanwhile does not bump it (it was made against this
-- version; review it first).
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

-- ---- terminal states ---------------------------------------------------------------------------

-- Replaces clue_enter_state of 0003_clues.sql: which states are terminal is the domain's
-- table (clue_fsm.c), not a list of names here. The server gives a terminal state no stage
-- deadline (clue_stage_deadline_ms; every other state has at least one day), so a move
-- without a deadline is the one that closes the clue.
CREATE OR REPLACE FUNCTION clue_enter_state(p_clue bigint, p_to text, p_details jsonb, p_now_ms bigint,
                                            p_deadline_ms bigint)
RETURNS clues LANGUAGE sql AS $$
  UPDATE clues SET
    state = p_to,
    version = version + 1,
    updated_at = clue_ms_ts(p_now_ms),
    stage_entered_at = clue_ms_ts(p_now_ms),
    stage_deadline = clue_ms_ts(p_deadline_ms),
    deadline_extended = false,
    disposal = coalesce(p_details ->> 'disposal', disposal),
    finding = coalesce(p_details ->> 'finding', finding),
    sanction_kind = coalesce(p_details ->> 'sanction_kind', sanction_kind),
    persons_disciplined = coalesce((p_details ->> 'persons_disciplined')::int, persons_disciplined),
    receiving_organ = coalesce(p_details ->> 'receiving_organ', receiving_organ),
    closed_at = CASE WHEN clue_ms_ts(p_deadline_ms) IS NULL THEN clue_ms_ts(p_now_ms) END,
    pending_proposal_id = NULL,
    pending_reviewer_unit = NULL
  WHERE id = p_clue
  RETURNING *
$$;
