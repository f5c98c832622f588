-- Joint cases (室组地联合办案, DESIGN.md §3), notes on clues, and handover (线索移交, §2).
--
-- As in 0003_clues.sql: the server reads the facts and decides (domain/authz.h); each
-- function here applies one decision in one statement and one transaction, re-checks only
-- what a concurrent call may have changed meanwhile, appends its audit events with
-- audit_append() in the same transaction, and raises SQLSTATE 'CLnnn' (nnn = gRPC status)
-- with a message fit for the client.
--
-- Where the events go:
--   case.create, case.add_participant, case.remove_participant   the case's chain ('case', id)
--   case.add_clue, case.remove_clue                              the clue's chain, with the
--                                                                case id in details
--   note.add, clue.handover, proposal.withdraw                   the clue's chain
-- A clue joining or leaving a case is a change of the clue (its reviewer and who sees it
-- follow the case), so that event sits in the clue's own history, where GetHistory shows it;
-- the case's chain holds the changes of the case itself. A case is the sum of both: its
-- chain plus the clue events whose details name it. One change, one event: CreateJointCase
-- writes case.create and one case.add_clue per initial clue (each clue changed); a handover
-- that withdraws a pending proposal writes proposal.withdraw and then clue.handover.
--
-- A clue's version is bumped when it joins or leaves a case, as for a change of state, owner
-- or deadline: the reviewer of its co-review moves depends on the case, so a proposal made
-- against the old version cannot be created under a different reviewer (proposal_create
-- compares the version).

-- ---- joint cases -------------------------------------------------------------------------------

-- The lead unit is the ROOM whose leader opened the case; declarative, like units' liaison.
CREATE TABLE joint_cases (
  id         bigserial PRIMARY KEY,
  title      text NOT NULL CHECK (btrim(title) <> ''),
  basis      text NOT NULL DEFAULT '',
  lead_unit  bigint NOT NULL,
  created_by bigint NOT NULL REFERENCES users (id),
  created_at timestamptz NOT NULL,
  lead_kind  text GENERATED ALWAYS AS ('ROOM') STORED,
  CONSTRAINT joint_cases_lead_is_a_room FOREIGN KEY (lead_unit, lead_kind) REFERENCES units (id, kind)
);

COMMENT ON COLUMN joint_cases.basis IS 'why the case was opened (立案依据 / 协作事由); may be empty';
COMMENT ON COLUMN joint_cases.lead_kind IS 'derived, for the joint_cases_lead_is_a_room key';

CREATE INDEX joint_cases_lead_idx ON joint_cases (lead_unit, id);

-- Removing a participant deletes its row (the removal is audited on the case's chain).
CREATE TABLE case_participants (
  case_id  bigint NOT NULL REFERENCES joint_cases (id),
  unit_id  bigint NOT NULL REFERENCES units (id),
  added_by bigint NOT NULL REFERENCES users (id),
  added_at timestamptz NOT NULL,
  PRIMARY KEY (case_id, unit_id)
);

CREATE INDEX case_participants_unit_idx ON case_participants (unit_id, case_id);

-- A clue is in at most one case (clue_id is the key). clues.joint_case_id repeats case_id so
-- that a clue's facts need no join; the key below keeps the two in step.
CREATE TABLE case_clues (
  clue_id    bigint PRIMARY KEY REFERENCES clues (id),
  case_id    bigint NOT NULL REFERENCES joint_cases (id),
  owner_unit bigint NOT NULL REFERENCES units (id),
  added_by   bigint NOT NULL REFERENCES users (id),
  added_at   timestamptz NOT NULL,
  CONSTRAINT case_clues_clue_case_key UNIQUE (clue_id, case_id)
);

CREATE INDEX case_clues_case_idx ON case_clues (case_id, added_at);

ALTER TABLE clues ADD CONSTRAINT clues_joint_case_fkey
  FOREIGN KEY (id, joint_case_id) REFERENCES case_clues (clue_id, case_id);

COMMENT ON COLUMN clues.joint_case_id IS 'the joint case the clue belongs to (its case_clues row)';
COMMENT ON COLUMN clues.version IS 'bumped by every change of state, owner, deadline or joint case; compared by each mutating call';

-- The three placeholders of 0003_clues.sql, now with real bodies (same signatures): every
-- visibility rule and the reviewer selection that use them follow joint cases from here on.

CREATE OR REPLACE FUNCTION joint_case_lead(p_case bigint) RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT lead_unit FROM joint_cases WHERE id = p_case
$$;

CREATE OR REPLACE FUNCTION joint_case_has_unit(p_case bigint, p_unit bigint) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT EXISTS (SELECT 1 FROM joint_cases WHERE id = p_case AND lead_unit = p_unit)
      OR EXISTS (SELECT 1 FROM case_participants WHERE case_id = p_case AND unit_id = p_unit)
$$;

CREATE OR REPLACE FUNCTION joint_cases_of_unit(p_unit bigint) RETURNS SETOF bigint
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT id FROM joint_cases WHERE lead_unit = p_unit
  UNION ALL
  SELECT case_id FROM case_participants WHERE unit_id = p_unit
$$;

-- ---- notes -------------------------------------------------------------------------------------

-- Append-only. The text is not in the audit trail; its note.add event holds its length and
-- SHA-256, so a note changed behind the trigger's back is detectable against the hash chain.
CREATE TABLE notes (
  id          bigserial PRIMARY KEY,
  clue_id     bigint NOT NULL REFERENCES clues (id),
  owner_unit  bigint NOT NULL REFERENCES units (id),
  kind        text NOT NULL CHECK (kind IN ('EVIDENCE_SUMMARY', 'MEETING_MINUTES', 'INTERVIEW_RECORD', 'OTHER')),
  text        text NOT NULL CHECK (octet_length(text) BETWEEN 1 AND 65536),
  author_user bigint NOT NULL REFERENCES users (id),
  author_unit bigint NOT NULL REFERENCES units (id),
  created_at  timestamptz NOT NULL
);

COMMENT ON COLUMN notes.owner_unit IS 'the clue''s owner unit; the one column that changes, when the clue is handed over';

CREATE INDEX notes_clue_idx ON notes (clue_id, id);

-- The database refuses to change or remove notes, except that owner_unit follows the clue's
-- owner (a handover), and only to the clue's current owner.
CREATE FUNCTION notes_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' THEN
    IF (to_jsonb(NEW) - 'owner_unit') = (to_jsonb(OLD) - 'owner_unit')
       AND NEW.owner_unit = (SELECT owner_unit FROM clues WHERE id = NEW.clue_id) THEN
      RETURN NEW;
    END IF;
  END IF;
  RAISE EXCEPTION 'notes are append-only: % refused', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER notes_append_only
  BEFORE UPDATE OR DELETE ON notes
  FOR EACH ROW EXECUTE FUNCTION notes_refuse_change();

CREATE TRIGGER notes_no_truncate
  BEFORE TRUNCATE ON notes
  FOR EACH STATEMENT EXECUTE FUNCTION notes_refuse_change();

-- ---- idempotency -------------------------------------------------------------------------------

-- clue_requests records cases and notes too: a request_id is then one key space across every
-- mutating call of a user. CreateJointCase rows name a case instead of a clue; AddNote rows
-- name their note; HandOver rows keep the clue version the handover produced, so a retry can
-- return the first result to a caller who no longer sees the clue.
ALTER TABLE clue_requests
  ALTER COLUMN clue_id DROP NOT NULL,
  ADD COLUMN case_id bigint REFERENCES joint_cases (id),
  ADD COLUMN note_id bigint REFERENCES notes (id),
  ADD COLUMN clue_version bigint,
  ADD CONSTRAINT clue_requests_one_subject CHECK (num_nonnulls(clue_id, case_id) = 1);

COMMENT ON COLUMN clue_requests.owner_unit IS 'the clue''s owner unit, or the lead unit of a case';

-- ---- reading a case ----------------------------------------------------------------------------

-- One row per member clue (one row with NULL clue columns when it has none), in the order
-- the clues joined. participants: the participant unit ids (lead excluded), comma-separated
-- in id order. in_case: whether p_unit leads or participates.
CREATE TYPE joint_case_row AS (
  case_id          bigint,
  title            text,
  basis            text,
  lead_unit        bigint,
  created_by       bigint,
  created_ms       bigint,
  in_case          boolean,
  participants     text,
  clue_id          bigint,
  clue_number      text,
  clue_title       text,
  clue_state       text,
  clue_owner       bigint,
  clue_deadline_ms bigint,
  clue_added_ms    bigint
);

CREATE FUNCTION joint_case_rows(p_case bigint, p_unit bigint) RETURNS SETOF joint_case_row
LANGUAGE sql STABLE AS $$
  SELECT jc.id, jc.title, jc.basis, jc.lead_unit, jc.created_by,
         (extract(epoch FROM jc.created_at) * 1000)::bigint,
         joint_case_has_unit(jc.id, p_unit),
         (SELECT string_agg(cp.unit_id::text, ',' ORDER BY cp.unit_id) FROM case_participants cp
          WHERE cp.case_id = jc.id),
         c.id, c.registration_number, c.title, c.state, c.owner_unit,
         (extract(epoch FROM c.stage_deadline) * 1000)::bigint,
         (extract(epoch FROM cc.added_at) * 1000)::bigint
  FROM joint_cases jc
  LEFT JOIN case_clues cc ON cc.case_id = jc.id
  LEFT JOIN clues c ON c.id = cc.clue_id
  WHERE jc.id = p_case
  ORDER BY cc.added_at, cc.clue_id
$$;

-- ---- case mutations ----------------------------------------------------------------------------

-- The case, locked against other changes of it until the transaction ends.
CREATE FUNCTION case_lock(p_case bigint) RETURNS joint_cases
LANGUAGE plpgsql AS $$
DECLARE
  jc joint_cases;
BEGIN
  SELECT * INTO jc FROM joint_cases WHERE id = p_case FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CL005', MESSAGE = 'joint case not found';
  END IF;
  RETURN jc;
END $$;

-- Refuse unit p_unit as a participant of case jc (named field for the message).
CREATE FUNCTION case_check_participant(jc joint_cases, p_unit bigint, p_field text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  IF p_unit = jc.lead_unit THEN
    RAISE EXCEPTION USING ERRCODE = 'CL003',
      MESSAGE = format('%s names the lead room of the joint case', p_field);
  END IF;
  IF NOT EXISTS (SELECT 1 FROM units WHERE id = p_unit AND kind IN ('GROUP', 'ROOM', 'REGION')) THEN
    RAISE EXCEPTION USING ERRCODE = 'CL003', MESSAGE = format('%s must name a GROUP, ROOM or REGION', p_field);
  END IF;
END $$;

-- Clue p_clue joins case jc, provided it is still at version p_version (the one the server's
-- decision saw), in no case, not terminal and without a pending proposal.
CREATE FUNCTION case_join(p_actor_user bigint, p_actor_unit bigint, jc joint_cases, p_clue bigint,
                          p_version bigint, p_now_ms bigint, p_reason text, p_request_id uuid)
RETURNS clues LANGUAGE plpgsql AS $$
DECLARE
  c clues;
BEGIN
  SELECT * INTO c FROM clues WHERE id = p_clue FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CL005', MESSAGE = 'clue not found';
  END IF;
  IF c.version <> p_version THEN
    RAISE EXCEPTION USING ERRCODE = 'CL010', MESSAGE = format(
      'clue %s changed meanwhile (now at version %s); reload it and retry', p_clue, c.version);
  END IF;
  IF c.joint_case_id IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'CL009', MESSAGE = format('clue %s is already in a joint case', p_clue);
  END IF;
  IF c.state IN ('CLOSED', 'TRANSFERRED_TO_JUDICIAL') THEN
    RAISE EXCEPTION USING ERRCODE = 'CL009', MESSAGE = format(
      'clue %s is %s, a terminal state; it cannot join a joint case', p_clue, c.state);
  END IF;
  IF c.pending_proposal_id IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'CL009', MESSAGE = format(
      'clue %s has a pending proposal; it must be reviewed first', p_clue);
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

-- CreateJointCase: a case led by the actor's room (a ROOM leader, decided by the server),
-- with participants and member clues (p_clue_versions: the version of each clue the
-- decision saw). Returns the case's rows, or the first call's case for a repeated request_id.
CREATE FUNCTION case_create(
  p_actor_user bigint, p_actor_unit bigint, p_request_id uuid, p_now_ms bigint, p_title text, p_basis text,
  p_participants bigint[], p_clues bigint[], p_clue_versions bigint[])
RETURNS SETOF joint_case_row LANGUAGE plpgsql AS $$
DECLARE
  q clue_requests;
  jc joint_cases;
  i int;
  m record;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended('clue_requests/' || p_actor_user || '/' || p_request_id, 0));
  SELECT * INTO q FROM clue_requests WHERE user_id = p_actor_user AND request_id = p_request_id;
  IF FOUND THEN
    IF q.method <> 'CreateJointCase' THEN
      RAISE EXCEPTION USING ERRCODE = 'CL003',
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
  FOR i IN 1 .. coalesce(array_length(p_participants, 1), 0) LOOP
    PERFORM case_check_participant(jc, p_participants[i], 'participant_unit_ids');
    INSERT INTO case_participants (case_id, unit_id, added_by, added_at)
    VALUES (jc.id, p_participants[i], p_actor_user, clue_ms_ts(p_now_ms));
  END LOOP;
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

-- AddParticipant. ALREADY_EXISTS when the unit already takes part.
CREATE FUNCTION case_add_participant(p_actor_user bigint, p_actor_unit bigint, p_now_ms bigint, p_case bigint,
                                     p_unit bigint, p_reason text)
RETURNS SETOF joint_case_row LANGUAGE plpgsql AS $$
DECLARE
  jc joint_cases := case_lock(p_case);
BEGIN
  PERFORM case_check_participant(jc, p_unit, 'unit_id');
  INSERT INTO case_participants (case_id, unit_id, added_by, added_at)
  VALUES (jc.id, p_unit, p_actor_user, clue_ms_ts(p_now_ms))
  ON CONFLICT DO NOTHING;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CL006',
      MESSAGE = format('unit %s already takes part in joint case %s', p_unit, jc.id);
  END IF;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'case.add_participant', 'case', jc.id, NULL, NULL, NULL,
                       p_reason, jsonb_build_object('unit_id', p_unit));
  RETURN QUERY SELECT * FROM joint_case_rows(jc.id, p_actor_unit);
END $$;

-- RemoveParticipant: the row goes, and with it the unit's sight of the case and of member
-- clues it does not see otherwise. FAILED_PRECONDITION when the unit does not take part.
CREATE FUNCTION case_remove_participant(p_actor_user bigint, p_actor_unit bigint, p_now_ms bigint,
                                        p_case bigint, p_unit bigint, p_reason text)
RETURNS SETOF joint_case_row LANGUAGE plpgsql AS $$
DECLARE
  jc joint_cases := case_lock(p_case);
  cp case_participants;
BEGIN
  DELETE FROM case_participants WHERE case_id = jc.id AND unit_id = p_unit RETURNING * INTO cp;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CL009',
      MESSAGE = format('unit %s does not take part in joint case %s', p_unit, jc.id);
  END IF;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'case.remove_participant', 'case', jc.id, NULL, NULL, NULL,
                       p_reason, jsonb_build_object('unit_id', p_unit, 'added_by', cp.added_by,
                                                    'added_at_ms', (extract(epoch FROM cp.added_at) * 1000)::bigint,
                                                    'removed_at_ms', p_now_ms));
  RETURN QUERY SELECT * FROM joint_case_rows(jc.id, p_actor_unit);
END $$;

-- AddClueToCase (p_version: the clue version the server's decision saw).
CREATE FUNCTION case_add_clue(p_actor_user bigint, p_actor_unit bigint, p_now_ms bigint, p_case bigint,
                              p_clue bigint, p_version bigint, p_reason text)
RETURNS SETOF joint_case_row LANGUAGE plpgsql AS $$
DECLARE
  jc joint_cases := case_lock(p_case);
BEGIN
  PERFORM case_join(p_actor_user, p_actor_unit, jc, p_clue, p_version, p_now_ms, p_reason, NULL);
  RETURN QUERY SELECT * FROM joint_case_rows(jc.id, p_actor_unit);
END $$;

-- RemoveClueFromCase: the clue leaves, provided it is still at version p_version, in this
-- case, not terminal and without a pending proposal (its reviewer would change under it).
CREATE FUNCTION case_remove_clue(p_actor_user bigint, p_actor_unit bigint, p_now_ms bigint, p_case bigint,
                                 p_clue bigint, p_version bigint, p_reason text)
RETURNS SETOF joint_case_row LANGUAGE plpgsql AS $$
DECLARE
  jc joint_cases := case_lock(p_case);
  c clues;
BEGIN
  SELECT * INTO c FROM clues WHERE id = p_clue FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CL005', MESSAGE = 'clue not found';
  END IF;
  IF c.version <> p_version THEN
    RAISE EXCEPTION USING ERRCODE = 'CL010', MESSAGE = format(
      'clue %s changed meanwhile (now at version %s); reload it and retry', p_clue, c.version);
  END IF;
  IF c.joint_case_id IS DISTINCT FROM jc.id THEN
    RAISE EXCEPTION USING ERRCODE = 'CL009', MESSAGE = format('clue %s is not in joint case %s', p_clue, jc.id);
  END IF;
  IF c.state IN ('CLOSED', 'TRANSFERRED_TO_JUDICIAL') THEN
    RAISE EXCEPTION USING ERRCODE = 'CL009', MESSAGE = format(
      'clue %s is %s, a terminal state; it stays in its joint case', p_clue, c.state);
  END IF;
  IF c.pending_proposal_id IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'CL009', MESSAGE = format(
      'clue %s has a pending proposal; it must be reviewed first', p_clue);
  END IF;
  UPDATE clues SET joint_case_id = NULL, version = version + 1, updated_at = clue_ms_ts(p_now_ms)
  WHERE id = c.id RETURNING * INTO c;
  DELETE FROM case_clues WHERE clue_id = c.id;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'case.remove_clue', 'clue', c.id, c.owner_unit, NULL, NULL,
                       p_reason, jsonb_build_object('case_id', jc.id, 'lead_unit_id', jc.lead_unit,
                                                    'state', c.state, 'version', c.version));
  RETURN QUERY SELECT * FROM joint_case_rows(jc.id, p_actor_unit);
END $$;

-- ---- notes -------------------------------------------------------------------------------------

-- AddNote (decided by the server: the actor sees the clue and is not an AUDITOR). p_seen_owner
-- is the owner the decision saw: a handover committed meanwhile answers ABORTED. The clue row
-- is share-locked so that a handover in progress finishes first and the note takes the owner
-- the clue then has.
CREATE FUNCTION note_add(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid, p_now_ms bigint,
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
    RAISE EXCEPTION USING ERRCODE = 'CL005', MESSAGE = 'clue not found';
  END IF;
  IF c.owner_unit <> p_seen_owner THEN
    RAISE EXCEPTION USING ERRCODE = 'CL010', MESSAGE = format(
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

-- ---- handover ----------------------------------------------------------------------------------

-- HandOver (decided by the server: a LEADER of the owner unit, an ACCEPTED or
-- PRELIMINARY_CHECK clue, a GROUP, ROOM or REGION target other than the owner). Compare-and-
-- swap on the version; the new owner takes the clue and every clue-scoped row (reporter,
-- proposals, idempotency records, notes, case membership); the registration number stays.
-- A pending proposal is withdrawn first (its reviewer was chosen for the old owner), with its
-- own event. The clue stays in its joint case, if any.
--
-- Locks are taken in proposal_decide's order (the proposal, then the clue) so that a
-- handover and a review of the same clue wait for each other instead of deadlocking; if the
-- pending proposal changed between the two, the clue changed meanwhile (ABORTED).
CREATE FUNCTION clue_handover(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid, p_now_ms bigint,
                              p_clue bigint, p_expected_version bigint, p_to_unit bigint, p_reason text)
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
    RAISE EXCEPTION USING ERRCODE = 'CL005', MESSAGE = 'clue not found';
  END IF;
  IF c.version <> p_expected_version THEN
    RAISE EXCEPTION USING ERRCODE = 'CL010', MESSAGE = format(
      'clue %s is at version %s, not the expected %s: it changed meanwhile; reload it and retry',
      p_clue, c.version, p_expected_version);
  END IF;
  IF c.pending_proposal_id IS DISTINCT FROM pid OR c.owner_unit <> p_actor_unit
     OR c.state NOT IN ('ACCEPTED', 'PRELIMINARY_CHECK') THEN
    RAISE EXCEPTION USING ERRCODE = 'CL010', MESSAGE = format(
      'clue %s changed meanwhile; reload it and retry', p_clue);
  END IF;
  IF p_to_unit = c.owner_unit
     OR NOT EXISTS (SELECT 1 FROM units WHERE id = p_to_unit AND kind IN ('GROUP', 'ROOM', 'REGION')) THEN
    RAISE EXCEPTION USING ERRCODE = 'CL003',
      MESSAGE = 'to_unit_id must name a GROUP, ROOM or REGION other than the owner';
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
