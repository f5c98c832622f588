-- A recusal reaches the rectification ledger (docs/LEDGER.md, docs/COOPERATION.md).
--
-- For a user recused from a clue, an item recorded from that clue is a missing item: the server
-- decides so on the facts it reads first (rect_item_facts_t.principal_recused). A recusal
-- committed between that read and the write did not stop the write: a recusal moves neither
-- the clue's version nor the item's, so the compare-and-swap let it through. As 0033 did for
-- the clue writers, the ledger's writers now look for such a recusal in their own transaction,
-- after the request key's lock, on a first call only (a retry answers as before, and the
-- server then hides the item it answers with):
--
--   - rect_request_begin(), which every move calls first (RecordPlan, Submit, Verify,
--     Reopen): a caller recused from the item's source clue raises CLNOF "rectification item
--     not found", what the server answers for a missing item;
--   - rect_create() from a clue: a caller recused from it raises CLNOF "source_clue_id: clue
--     not found", what the server answers for a missing source clue.
--
-- An item from a joint case or from supervision has no source clue: a case has no recusals.

-- Replaces rect_request_begin of 0014_rectification.sql: the same, and a first move by a caller
-- recused from the item's source clue refused as for a missing item.
CREATE OR REPLACE FUNCTION rect_request_begin(p_user bigint, p_request_id uuid, p_method text, p_item bigint)
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
    -- A first call. The server decided it on facts read before this transaction; a recusal of
    -- the caller from the item's source clue recorded since refuses it now.
    IF p_item IS NOT NULL
       AND EXISTS (SELECT 1 FROM rect_items i JOIN recusals r ON r.clue_id = i.source_clue
                   WHERE i.id = p_item AND r.user_id = p_user) THEN
      RAISE EXCEPTION USING ERRCODE = 'CLNOF', MESSAGE = 'rectification item not found';
    END IF;
    RETURN NULL;
  END IF;
  IF q.method <> p_method OR (p_item IS NOT NULL AND q.item_id <> p_item) THEN
    RAISE EXCEPTION USING ERRCODE = 'CLARG',
      MESSAGE = format('request_id %s was already used for another call (%s)', p_request_id, q.method);
  END IF;
  SELECT * INTO it FROM rect_items WHERE id = q.item_id;
  RETURN it;
END $$;

-- Replaces rect_create of 0014_rectification.sql: the same, and an item from a clue the caller
-- is recused from refused as from a missing clue.
CREATE OR REPLACE FUNCTION rect_create(
  p_actor_user bigint, p_actor_unit bigint, p_request_id uuid, p_now_ms bigint, p_host_unit text,
  p_description text, p_category text, p_source text, p_clue bigint, p_case bigint, p_deadline_ms bigint)
RETURNS rect_items LANGUAGE plpgsql AS $$
DECLARE
  it rect_items := rect_request_begin(p_actor_user, p_request_id, 'CreateItem', NULL);
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
