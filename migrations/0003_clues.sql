-- The clue lifecycle (DESIGN.md §2): clues, their reporters, co-review proposals and the
-- idempotency record of mutating calls, with one server-side function per mutation.
--
-- Division of labour: the server decides (domain/clue_fsm.h and domain/authz.h, over facts
-- it reads first); these functions apply a decision in one statement, one transaction and one
-- round trip. They re-check only what a concurrent call may have changed since the facts were
-- read (version, state, pending proposal, an earlier call with the same request_id), and
-- raise SQLSTATE 'CLnnn' (nnn = gRPC status) with a message fit for the client.
--
-- Times and deadlines come from the server as milliseconds since the epoch (p_now_ms,
-- p_deadline_ms): its clock may be offset in test builds, and the deadline rules are the
-- server's settings. Audit rows keep the database's own clock_timestamp().
--
-- Every clue-scoped table carries owner_unit (DESIGN.md §8, distribution by owner unit); a
-- handover must change it on clues, clue_reporters, proposals and clue_requests together.

-- ---- helpers ---------------------------------------------------------------------------------

CREATE FUNCTION clue_ms_ts(p_ms bigint) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN p_ms IS NULL OR p_ms = 0 THEN NULL
              ELSE timestamptz 'epoch' + p_ms * interval '1 millisecond' END
$$;

-- Joint cases arrive with a later migration, which replaces these three with real bodies
-- (CREATE OR REPLACE, same signatures). Until then no clue is in a joint case.

-- The lead unit of joint case p_case, or NULL.
CREATE FUNCTION joint_case_lead(p_case bigint) RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT NULL::bigint $$;

-- Whether unit p_unit participates in joint case p_case (the lead unit counts as well).
CREATE FUNCTION joint_case_has_unit(p_case bigint, p_unit bigint) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT false $$;

-- The joint cases unit p_unit leads or participates in.
CREATE FUNCTION joint_cases_of_unit(p_unit bigint) RETURNS SETOF bigint
LANGUAGE sql STABLE PARALLEL SAFE AS $$ SELECT NULL::bigint WHERE false $$;

-- ---- clues -----------------------------------------------------------------------------------

-- Registration numbers are gapless per registering unit and year: the counter row is
-- incremented in the submitting transaction and stays locked until it ends, so a rolled back
-- submission gives its number back. The price is that submissions of one unit serialise on
-- that row for the rest of their (short) transaction.
CREATE TABLE clue_counters (
  unit_id  bigint NOT NULL REFERENCES units (id),
  year     int NOT NULL,
  last_seq int NOT NULL,
  PRIMARY KEY (unit_id, year)
);

CREATE TABLE clues (
  id                    bigserial PRIMARY KEY,
  registration_number   text NOT NULL UNIQUE,
  reg_unit              bigint NOT NULL REFERENCES units (id),
  reg_year              int NOT NULL,
  reg_seq               int NOT NULL CHECK (reg_seq > 0),
  title                 text NOT NULL,
  summary               text NOT NULL,
  source                text NOT NULL CHECK (source IN ('LETTER_VISIT_REPORT', 'INSPECTION_TOUR', 'AUDIT',
                                                        'SUPERIOR_ASSIGNED', 'SELF_DISCOVERED',
                                                        'OTHER_BODY_TRANSFER')),
  subject_name          text NOT NULL,
  subject_position      text NOT NULL DEFAULT '',
  subject_rank_level    text NOT NULL DEFAULT '',
  subject_is_top_leader boolean NOT NULL DEFAULT false,
  host_unit             text NOT NULL,
  violation_categories  text[] NOT NULL DEFAULT '{}',
  has_reporter          boolean NOT NULL DEFAULT false,
  state                 text NOT NULL CHECK (state IN ('ACCEPTED', 'PRELIMINARY_CHECK', 'FILED', 'CLOSED',
                                                      'TRANSFERRED_TO_JUDICIAL')),
  version               bigint NOT NULL DEFAULT 1,
  owner_unit            bigint NOT NULL REFERENCES units (id),
  created_by            bigint NOT NULL REFERENCES users (id),
  created_at            timestamptz NOT NULL,
  updated_at            timestamptz NOT NULL,
  stage_entered_at      timestamptz NOT NULL,
  stage_deadline        timestamptz,
  deadline_extended     boolean NOT NULL DEFAULT false,
  disposal              text CHECK (disposal IN ('TALK_OR_LETTER_INQUIRY', 'NO_FURTHER_ACTION', 'SHELVED')),
  finding               text,
  sanction_kind         text,
  persons_disciplined   int CHECK (persons_disciplined >= 0),
  receiving_organ       text,
  closed_at             timestamptz,
  joint_case_id         bigint,
  pending_proposal_id   bigint,
  pending_reviewer_unit bigint REFERENCES units (id),
  CONSTRAINT clues_reg_key UNIQUE (reg_unit, reg_year, reg_seq),
  CONSTRAINT clues_pending_pair CHECK ((pending_proposal_id IS NULL) = (pending_reviewer_unit IS NULL)),
  CONSTRAINT clues_terminal_no_deadline
    CHECK (state NOT IN ('CLOSED', 'TRANSFERRED_TO_JUDICIAL') OR stage_deadline IS NULL)
);

COMMENT ON COLUMN clues.version IS 'bumped by every change of state, owner or deadline; compared by each mutating call';
COMMENT ON COLUMN clues.reg_unit IS 'the unit that registered the clue (its code is in the number); the owner may change';
COMMENT ON COLUMN clues.pending_proposal_id IS 'the PENDING proposal, kept on the row so that a compare-and-swap on the clue sees it';
COMMENT ON COLUMN clues.pending_reviewer_unit IS 'reviewer unit of the pending proposal (it sees the clue meanwhile)';
COMMENT ON COLUMN clues.joint_case_id IS 'the joint case the clue belongs to; its key arrives with the joint-case migration';

-- ListClues walks id descending inside the caller's visibility; these serve its scopes and filters.
CREATE INDEX clues_owner_idx ON clues (owner_unit, id);
CREATE INDEX clues_owner_state_idx ON clues (owner_unit, state, id);
CREATE INDEX clues_state_idx ON clues (state, id);
CREATE INDEX clues_deadline_idx ON clues (stage_deadline) WHERE stage_deadline IS NOT NULL;
CREATE INDEX clues_created_idx ON clues (created_at);
CREATE INDEX clues_updated_idx ON clues (updated_at);
CREATE INDEX clues_case_idx ON clues (joint_case_id) WHERE joint_case_id IS NOT NULL;
CREATE INDEX clues_reviewer_idx ON clues (pending_reviewer_unit) WHERE pending_reviewer_unit IS NOT NULL;

-- 举报人信息 lives apart from the clue so that no list or scan query touches it by accident;
-- clue_read_reporter() is the one reader, and it audits every read.
CREATE TABLE clue_reporters (
  clue_id    bigint PRIMARY KEY REFERENCES clues (id),
  owner_unit bigint NOT NULL REFERENCES units (id),
  name       text NOT NULL DEFAULT '',
  phone      text NOT NULL DEFAULT '',
  address    text NOT NULL DEFAULT '',
  email      text NOT NULL DEFAULT ''
);

-- ---- proposals -------------------------------------------------------------------------------

CREATE TABLE proposals (
  id             bigserial PRIMARY KEY,
  clue_id        bigint NOT NULL REFERENCES clues (id),
  owner_unit     bigint NOT NULL REFERENCES units (id),
  from_state     text NOT NULL,
  target         text NOT NULL,
  reason         text NOT NULL,
  details        jsonb NOT NULL DEFAULT '{}',
  proposer_user  bigint NOT NULL REFERENCES users (id),
  proposer_unit  bigint NOT NULL REFERENCES units (id),
  reviewer_unit  bigint NOT NULL REFERENCES units (id),
  status         text NOT NULL DEFAULT 'PENDING' CHECK (status IN ('PENDING', 'APPROVED', 'REJECTED', 'WITHDRAWN')),
  clue_version   bigint NOT NULL,
  review_comment text,
  reviewed_by    bigint REFERENCES users (id),
  created_at     timestamptz NOT NULL,
  decided_at     timestamptz,
  CONSTRAINT proposals_decided CHECK ((status = 'PENDING') = (decided_at IS NULL))
);

COMMENT ON COLUMN proposals.details IS 'the move''s carried fields (disposal, finding, sanction_kind, persons_disciplined, receiving_organ, reviewer_unit_id)';
COMMENT ON COLUMN proposals.clue_version IS 'the clue version the proposal was made against; approval requires it unchanged';

CREATE UNIQUE INDEX proposals_one_pending ON proposals (clue_id) WHERE status = 'PENDING';
CREATE INDEX proposals_clue_idx ON proposals (clue_id, id);
CREATE INDEX proposals_reviewer_idx ON proposals (reviewer_unit, status, id);
CREATE INDEX proposals_proposer_idx ON proposals (proposer_unit, status, id);

ALTER TABLE clues ADD CONSTRAINT clues_pending_proposal_fkey
  FOREIGN KEY (pending_proposal_id) REFERENCES proposals (id);

-- ---- idempotency -----------------------------------------------------------------------------

-- What the first call with a (user, request_id) produced. A retry returns that result and
-- creates nothing; calls with the same key are serialised by an advisory lock on the key.
CREATE TABLE clue_requests (
  user_id     bigint NOT NULL REFERENCES users (id),
  request_id  uuid NOT NULL,
  method      text NOT NULL,
  clue_id     bigint NOT NULL REFERENCES clues (id),
  proposal_id bigint REFERENCES proposals (id),
  owner_unit  bigint NOT NULL REFERENCES units (id),
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, request_id)
);

CREATE INDEX clue_requests_clue_idx ON clue_requests (clue_id);

-- The result of a mutating call: the clue after it, and the proposal it made or decided.
CREATE TYPE clue_outcome AS (clue clues, proposal proposals);

-- Serialise calls with the same key, and return what an earlier one produced (both fields
-- NULL if none). A key used for another method, or another clue or proposal, is refused.
CREATE FUNCTION clue_request_begin(p_user bigint, p_request_id uuid, p_method text, p_clue bigint,
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
    RAISE EXCEPTION USING ERRCODE = 'CL003',
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

CREATE FUNCTION clue_request_record(p_user bigint, p_request_id uuid, p_method text, p_clue bigint,
                                    p_proposal bigint, p_owner bigint)
RETURNS void LANGUAGE sql AS $$
  INSERT INTO clue_requests (user_id, request_id, method, clue_id, proposal_id, owner_unit)
  VALUES (p_user, p_request_id, p_method, p_clue, p_proposal, p_owner)
$$;

-- Raise the error explaining why a compare-and-swap on clue p_clue matched no row.
CREATE FUNCTION clue_refuse_stale(p_clue bigint, p_expected bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
  c clues;
BEGIN
  SELECT * INTO c FROM clues WHERE id = p_clue;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CL005', MESSAGE = 'clue not found';
  END IF;
  IF c.version <> p_expected THEN
    RAISE EXCEPTION USING ERRCODE = 'CL010', MESSAGE = format(
      'clue %s is at version %s, not the expected %s: it changed meanwhile; reload it and retry',
      p_clue, c.version, p_expected);
  END IF;
  IF c.pending_proposal_id IS NOT NULL THEN
    RAISE EXCEPTION USING ERRCODE = 'CL009', MESSAGE = 'clue has a pending proposal; it must be reviewed first';
  END IF;
  RAISE EXCEPTION USING ERRCODE = 'CL010', MESSAGE = format(
    'clue %s changed meanwhile (now %s at version %s); reload it and retry', p_clue, c.state, c.version);
END $$;

-- ---- mutations -------------------------------------------------------------------------------

-- SubmitClue: a new clue in ACCEPTED owned by the actor's unit, numbered
-- <unit code>-<year>-<seq, at least 4 digits>. Returns the new clue, or the first call's.
CREATE FUNCTION clue_submit(
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
    RAISE EXCEPTION USING ERRCODE = 'CL005', MESSAGE = format('unit %s not found', p_actor_unit);
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

-- Set the fields a move carries (p_details: disposal, finding, sanction_kind,
-- persons_disciplined, receiving_organ) and enter state p_to. The caller holds the row.
CREATE FUNCTION clue_enter_state(p_clue bigint, p_to text, p_details jsonb, p_now_ms bigint, p_deadline_ms bigint)
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
    closed_at = CASE WHEN p_to IN ('CLOSED', 'TRANSFERRED_TO_JUDICIAL') THEN clue_ms_ts(p_now_ms) END,
    pending_proposal_id = NULL,
    pending_reviewer_unit = NULL
  WHERE id = p_clue
  RETURNING *
$$;

-- RequestTransition for a move without co-review: compare-and-swap on (version, state, no
-- pending proposal), then enter the new state. p_action is the state-machine row's name.
CREATE FUNCTION clue_apply_move(
  p_actor_user bigint, p_actor_unit bigint, p_request_id uuid, p_now_ms bigint, p_clue bigint,
  p_expected_version bigint, p_from text, p_to text, p_action text, p_reason text, p_details jsonb,
  p_deadline_ms bigint)
RETURNS clue_outcome LANGUAGE plpgsql AS $$
DECLARE
  o clue_outcome;
  c clues;
BEGIN
  o := clue_request_begin(p_actor_user, p_request_id, 'RequestTransition', p_clue, NULL);
  IF (o.clue).id IS NOT NULL THEN
    RETURN o;
  END IF;
  -- The row lock re-reads a row changed by a concurrent transaction and re-checks the WHERE
  -- against it, so of two racing moves the second finds no row. NO KEY UPDATE, as the UPDATE
  -- itself would take: it leaves rows elsewhere free to reference the clue meanwhile.
  PERFORM 1 FROM clues WHERE id = p_clue AND version = p_expected_version AND state = p_from
                         AND pending_proposal_id IS NULL
  FOR NO KEY UPDATE;
  IF NOT FOUND THEN
    PERFORM clue_refuse_stale(p_clue, p_expected_version);
  END IF;
  c := clue_enter_state(p_clue, p_to, p_details, p_now_ms, p_deadline_ms);
  PERFORM audit_append(p_actor_user, p_actor_unit, 'clue.move', 'clue', c.id, c.owner_unit, p_from, p_to, p_reason,
                       coalesce(p_details, '{}') || jsonb_build_object('action', p_action, 'version', c.version,
                                                                       'stage_deadline_ms', p_deadline_ms,
                                                                       'request_id', p_request_id));
  PERFORM clue_request_record(p_actor_user, p_request_id, 'RequestTransition', c.id, NULL, c.owner_unit);
  o.clue := c;
  RETURN o;
END $$;

-- RequestTransition for a move with co-review: a PENDING proposal addressed to p_reviewer_unit
-- (decided by the server). The clue keeps its state and version.
CREATE FUNCTION proposal_create(
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

-- ReviewProposal. Approval applies the proposed move in this transaction, provided the clue
-- is still at the version the proposal was made against (else ABORTED: reject it and propose
-- again); p_deadline_ms is the new stage's deadline, p_action the state-machine row's name.
-- Rejection only closes the proposal. Audit actions: proposal.approve (from/to: the move
-- applied) and proposal.reject (from/to: the move refused).
CREATE FUNCTION proposal_decide(
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
    RAISE EXCEPTION USING ERRCODE = 'CL005', MESSAGE = 'proposal not found';
  END IF;
  IF p.status <> 'PENDING' THEN
    RAISE EXCEPTION USING ERRCODE = 'CL009', MESSAGE = 'proposal was already decided';
  END IF;
  IF p_approve THEN
    PERFORM 1 FROM clues WHERE id = p.clue_id AND version = p.clue_version AND state = p.from_state
                           AND pending_proposal_id = p.id
    FOR NO KEY UPDATE;
    IF NOT FOUND THEN
      SELECT * INTO c FROM clues WHERE id = p.clue_id;
      RAISE EXCEPTION USING ERRCODE = 'CL010', MESSAGE = format(
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

-- GetClue's read of the reporter by a leader of the owner unit (decided by the server): the
-- read and its audit event are one statement. No row when the caller's unit no longer owns
-- the clue or it has no reporter.
CREATE FUNCTION clue_read_reporter(p_actor_user bigint, p_actor_unit bigint, p_clue bigint)
RETURNS SETOF clue_reporters LANGUAGE plpgsql AS $$
DECLARE
  r clue_reporters;
BEGIN
  SELECT rp.* INTO r FROM clue_reporters rp JOIN clues c ON c.id = rp.clue_id
  WHERE rp.clue_id = p_clue AND c.owner_unit = p_actor_unit;
  IF NOT FOUND THEN
    RETURN;
  END IF;
  PERFORM audit_append(p_actor_user, p_actor_unit, 'clue.reporter_read', 'clue', p_clue, r.owner_unit, NULL, NULL,
                       NULL, '{}'::jsonb);
  RETURN NEXT r;
END $$;
