-- The rectification ledger (督促整改台账, docs/LEDGER.md).
--
-- As for clues: the server reads the facts and decides (server/domain/rect.h); each function
-- here applies one decision in one statement and one transaction, re-checks only what a
-- concurrent call may have changed meanwhile (the version compare-and-swap, the source clue's
-- owner), appends its audit event with audit_append() in the same transaction, and raises the
-- named SQLSTATEs of server/service/sql_errors.c (CLNOF, CLARG, CLPRE, CLVER).
--
-- Every change of an item appends one event on the item's own chain ('rectification', id):
-- rect.create, rect.record_plan, rect.submit, rect.verify, rect.reopen. The event's owner_unit
-- is the supervising unit. The plan, evidence, comment and reopen reason are in the events
-- (the row keeps only the latest of each), so the chain is the item's whole history.

CREATE TABLE rect_items (
  id                bigserial PRIMARY KEY,
  host_unit         text NOT NULL CHECK (btrim(host_unit) <> ''),
  description       text NOT NULL CHECK (btrim(description) <> ''),
  category          text NOT NULL CHECK (btrim(category) <> ''),
  source            text NOT NULL CHECK (source IN ('CLUE', 'CASE', 'SUPERVISION')),
  source_clue       bigint REFERENCES clues (id),
  source_case       bigint REFERENCES joint_cases (id),
  deadline          timestamptz NOT NULL,
  supervising_unit  bigint NOT NULL REFERENCES units (id),
  state             text NOT NULL DEFAULT 'OPEN'
                    CHECK (state IN ('OPEN', 'PLAN_RECORDED', 'SUBMITTED', 'VERIFIED', 'REOPENED')),
  version           bigint NOT NULL DEFAULT 1,
  plan              text NOT NULL DEFAULT '',
  plan_note_ids     bigint[] NOT NULL DEFAULT '{}',
  evidence          text NOT NULL DEFAULT '',
  evidence_note_ids bigint[] NOT NULL DEFAULT '{}',
  reopen_reason     text NOT NULL DEFAULT '',
  verify_comment    text NOT NULL DEFAULT '',
  created_by        bigint NOT NULL REFERENCES users (id),
  created_at        timestamptz NOT NULL,
  updated_at        timestamptz NOT NULL,
  verified_at       timestamptz,
  CONSTRAINT rect_items_source_fits CHECK (
    (source = 'CLUE' AND source_clue IS NOT NULL AND source_case IS NULL)
    OR (source = 'CASE' AND source_case IS NOT NULL AND source_clue IS NULL)
    OR (source = 'SUPERVISION' AND source_clue IS NULL AND source_case IS NULL)),
  CONSTRAINT rect_items_verified_at CHECK ((state = 'VERIFIED') = (verified_at IS NOT NULL))
);

COMMENT ON TABLE rect_items IS 'rectification items (督促整改台账); history on the audit chain (''rectification'', id)';
COMMENT ON COLUMN rect_items.supervising_unit IS 'the recording unit, which follows the rectification to VERIFIED';
COMMENT ON COLUMN rect_items.version IS 'bumped by every move; compared by each mutating call';

CREATE INDEX rect_items_unit_idx ON rect_items (supervising_unit, id);
CREATE INDEX rect_items_case_idx ON rect_items (source_case, id) WHERE source_case IS NOT NULL;
CREATE INDEX rect_items_clue_idx ON rect_items (source_clue) WHERE source_clue IS NOT NULL;
CREATE INDEX rect_items_open_deadline_idx ON rect_items (deadline) WHERE state <> 'VERIFIED';

-- What the first call with a (user, request_id) produced; a retry returns the item and
-- changes nothing. Calls with the same key wait for each other on an advisory lock on the
-- key, the same lock clue_requests takes, and a key recorded in clue_requests is refused here,
-- so one request_id names one call of a user across clues, cases and the ledger.
CREATE TABLE rect_requests (
  user_id    bigint NOT NULL REFERENCES users (id),
  request_id uuid NOT NULL,
  method     text NOT NULL,
  item_id    bigint NOT NULL REFERENCES rect_items (id),
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, request_id)
);

-- The item an earlier call with the key produced (NULL if none), after taking the key's lock.
-- A key used for another method or item, or by a clue or case call, is refused (CLARG).
CREATE FUNCTION rect_request_begin(p_user bigint, p_request_id uuid, p_method text, p_item bigint)
RETURNS rect_items LANGUAGE plpgsql AS $$
DECLARE
  q rect_requests;
  other text;
  it rect_items;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended('clue_requests/' || p_user || '/' || p_request_id, 0));
  SELECT method INTO other FROM clue_requests WHERE user_id = p_user AND request_id = p_request_id;
  IF FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CLARG',
      MESSAGE = format('request_id %s was already used for another call (%s)', p_request_id, other);
  END IF;
  SELECT * INTO q FROM rect_requests WHERE user_id = p_user AND request_id = p_request_id;
  IF NOT FOUND THEN
    RETURN NULL;
  END IF;
  IF q.method <> p_method OR (p_item IS NOT NULL AND q.item_id <> p_item) THEN
    RAISE EXCEPTION USING ERRCODE = 'CLARG',
      MESSAGE = format('request_id %s was already used for another call (%s)', p_request_id, q.method);
  END IF;
  SELECT * INTO it FROM rect_items WHERE id = q.item_id;
  RETURN it;
END $$;

-- CreateItem. The server has checked the caller, the source and the fields; what a concurrent
-- call may have changed since is the source clue's owner (a handover).
CREATE FUNCTION rect_create(
  p_actor_user bigint, p_actor_unit bigint, p_request_id uuid, p_now_ms bigint, p_host_unit text,
  p_description text, p_category text, p_source text, p_clue bigint, p_case bigint, p_deadline_ms bigint)
RETURNS rect_items LANGUAGE plpgsql AS $$
DECLARE
  it rect_items := rect_request_begin(p_actor_user, p_request_id, 'CreateItem', NULL);
  now_ts timestamptz := clue_ms_ts(p_now_ms);
BEGIN
  IF it.id IS NOT NULL THEN
    RETURN it;
  END IF;
  IF p_source = 'CLUE' THEN
    PERFORM 1 FROM clues WHERE id = p_clue AND owner_unit = p_actor_unit FOR SHARE;
    IF NOT FOUND THEN
      RAISE EXCEPTION USING ERRCODE = 'CLPRE',
        MESSAGE = format('source_clue_id: clue %s changed owner meanwhile', p_clue);
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
  INSERT INTO rect_requests (user_id, request_id, method, item_id)
  VALUES (p_actor_user, p_request_id, 'CreateItem', it.id);
  RETURN it;
END $$;

-- RecordPlan, Submit, Verify, Reopen: the move p_from -> p_to the server decided, applied if
-- the item is still at p_expected (CLVER otherwise) and in p_from (CLPRE otherwise). p_text is
-- the plan, the evidence, the comment or the reason; p_note_ids must be notes of the item's
-- source clue, or of a clue of its source case (CLARG otherwise).
CREATE FUNCTION rect_move(
  p_actor_user bigint, p_actor_unit bigint, p_request_id uuid, p_method text, p_now_ms bigint, p_item bigint,
  p_expected bigint, p_from text, p_to text, p_text text, p_note_ids bigint[])
RETURNS rect_items LANGUAGE plpgsql AS $$
DECLARE
  it rect_items := rect_request_begin(p_actor_user, p_request_id, p_method, p_item);
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
  INSERT INTO rect_requests (user_id, request_id, method, item_id)
  VALUES (p_actor_user, p_request_id, p_method, it.id);
  RETURN it;
END $$;
