-- A note's time in its event. A note shows when it was written (notes.created_at, clued's
-- clock, the same p_now_ms the write was given); its note.add event now records it as
-- details.created_ms, so `cluectl audit verify --checkpoint` can tell a note whose time was
-- changed afterwards (ExportAuditEvents' current_facts gives the row's). Events of notes
-- added before this migration do not have it and are not judged on it.

-- Replaces note_add of 0037_writes_recheck_under_the_clue_lock.sql: the same, and the note's
-- created_ms in its event.
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
                                          'created_ms', p_now_ms, 'request_id', p_request_id));
  INSERT INTO clue_requests (user_id, request_id, method, clue_id, note_id, owner_unit)
  VALUES (p_actor_user, p_request_id, 'AddNote', c.id, n.id, c.owner_unit);
  RETURN n;
END $$;
