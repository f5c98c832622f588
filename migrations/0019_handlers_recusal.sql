-- Assigned handlers (承办人, 派员参与) and recusal (回避), docs/COOPERATION.md.
--
-- As elsewhere, the server reads the facts and decides (server/domain/authz.h:
-- authz_can_assign, authz_can_unassign, authz_can_recuse); each function here applies one
-- decision in one transaction, re-checks only what a concurrent call may have changed
-- meanwhile (the clue's owner, a recusal recorded since), appends its event on the clue's
-- chain with audit_append() and raises the named SQLSTATEs of server/service/sql_errors.c.
--
-- Events: clue.assign, clue.unassign, clue.recuse, all on ('clue', id) with the clue's owner.

-- Who handles a clue besides its owner unit. A row counts only while the clue's owner is the
-- one that assigned it (owner_unit): a handover ends every assignment without touching this
-- table, and the new owner's leader assigns afresh (the row is then overwritten).
CREATE TABLE clue_handlers (
  clue_id     bigint NOT NULL REFERENCES clues (id),
  user_id     bigint NOT NULL REFERENCES users (id),
  owner_unit  bigint NOT NULL REFERENCES units (id),
  assigned_by bigint NOT NULL REFERENCES users (id),
  assigned_at timestamptz NOT NULL,
  PRIMARY KEY (clue_id, user_id)
);

COMMENT ON TABLE clue_handlers IS 'handlers (承办人) of clues; history on the clue''s audit chain';
COMMENT ON COLUMN clue_handlers.owner_unit IS 'the owner when assigned; the row counts only while it still owns the clue';

CREATE INDEX clue_handlers_user_idx ON clue_handlers (user_id, clue_id);
GRANT DELETE ON clue_handlers TO clued_runtime;

-- Declared or recorded conflicts of interest. Never deleted: a recusal holds for the clue's
-- whole life (a mistaken one is a matter for the audit trail, not an erasure).
CREATE TABLE recusals (
  id               bigserial PRIMARY KEY,
  clue_id          bigint NOT NULL REFERENCES clues (id),
  user_id          bigint NOT NULL REFERENCES users (id),
  reason           text NOT NULL CHECK (btrim(reason) <> ''),
  recorded_by      bigint NOT NULL REFERENCES users (id),
  recorded_by_unit bigint NOT NULL REFERENCES units (id),
  recorded_at      timestamptz NOT NULL,
  CONSTRAINT recusals_clue_user_key UNIQUE (clue_id, user_id)
);

COMMENT ON TABLE recusals IS 'conflicts of interest (回避): the user neither sees nor acts on the clue';

CREATE INDEX recusals_user_idx ON recusals (user_id, clue_id);

ALTER TABLE clue_requests ADD COLUMN recusal_id bigint REFERENCES recusals (id);

-- Whether every active LEADER of p_unit is recused from p_clue, and there is at least one:
-- nobody in the unit may then act where a leader must.
CREATE FUNCTION clue_unit_leaders_recused(p_clue bigint, p_unit bigint) RETURNS boolean
LANGUAGE sql STABLE AS $$
  SELECT EXISTS (SELECT 1 FROM users u JOIN recusals r ON r.user_id = u.id AND r.clue_id = p_clue
                 WHERE u.unit_id = p_unit AND u.role = 'LEADER' AND NOT u.disabled)
     AND NOT EXISTS (SELECT 1 FROM users u
                     WHERE u.unit_id = p_unit AND u.role = 'LEADER' AND NOT u.disabled
                       AND NOT EXISTS (SELECT 1 FROM recusals r WHERE r.clue_id = p_clue AND r.user_id = u.id))
$$;

-- The clue, locked against a handover, still owned by the unit the server saw (CLVER if not).
CREATE FUNCTION clue_lock_seen_owner(p_clue bigint, p_seen_owner bigint) RETURNS clues
LANGUAGE plpgsql AS $$
DECLARE
  c clues;
BEGIN
  SELECT * INTO c FROM clues WHERE id = p_clue FOR SHARE;
  IF NOT FOUND THEN
    RAISE EXCEPTION USING ERRCODE = 'CLNOF', MESSAGE = 'clue not found';
  END IF;
  IF c.owner_unit <> p_seen_owner THEN
    RAISE EXCEPTION USING ERRCODE = 'CLVER', MESSAGE = format(
      'clue %s was handed over meanwhile; reload it and retry', p_clue);
  END IF;
  RETURN c;
END $$;

-- AssignHandler (p_assign) and UnassignHandler. The server decided that the actor may, that
-- the user is staff of a working unit, not recused, and not yet (or, to unassign, currently)
-- a handler; a recusal or an assignment made meanwhile is refused here (CLPRE). A retry
-- returns the clue and changes nothing.
CREATE FUNCTION clue_set_handler(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid, p_now_ms bigint,
                                 p_clue bigint, p_seen_owner bigint, p_user bigint, p_assign boolean,
                                 p_reason text)
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
  c := clue_lock_seen_owner(p_clue, p_seen_owner);
  SELECT * INTO u FROM users WHERE id = p_user;
  IF p_assign THEN
    PERFORM pg_advisory_xact_lock(hashtextextended('clue_handlers/' || p_clue || '/' || p_user, 0));
    IF EXISTS (SELECT 1 FROM recusals WHERE clue_id = p_clue AND user_id = p_user) THEN
      RAISE EXCEPTION USING ERRCODE = 'CLPRE', MESSAGE = format(
        'user %s is recused from this clue and cannot be assigned to it', p_user);
    END IF;
    INSERT INTO clue_handlers (clue_id, user_id, owner_unit, assigned_by, assigned_at)
    VALUES (p_clue, p_user, c.owner_unit, p_actor_user, clue_ms_ts(p_now_ms))
    ON CONFLICT (clue_id, user_id) DO UPDATE
      SET owner_unit = EXCLUDED.owner_unit, assigned_by = EXCLUDED.assigned_by, assigned_at = EXCLUDED.assigned_at
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

-- RecordRecusal. The server decided that the actor may record it (the user themselves, or a
-- LEADER) and that the user is staff of a working unit not yet recused; a recusal recorded
-- meanwhile is refused (CLDUP). The user's assignment to the clue, if any, ends with it. A
-- retry returns the recusal.
CREATE FUNCTION clue_recuse(p_actor_user bigint, p_actor_unit bigint, p_request_id uuid, p_now_ms bigint,
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
  c := clue_lock_seen_owner(p_clue, p_seen_owner);
  SELECT * INTO u FROM users WHERE id = p_user;
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
