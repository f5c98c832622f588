-- Two reads that a row only a superuser can write could turn against the reader
-- (docs/AUDIT.md, "What a superuser can and cannot do undetected").
--
-- An event's time that no bigint holds ('infinity') made audit_canonical() fail, and with it
-- every statement that hashes the chains (audit_verify(), VerifyAuditChain): one event stored
-- so denied the check of the whole log. Its time is now read as none, so that event's hash no
-- longer matches and the chains name it. Every time a clue or a call can write is far inside
-- the bound, so every hash stored before this migration still holds.
--
-- A joint case showed the clues its case_clues rows list. clues.joint_case_id is what the
-- clue's events record (case.add_clue, case.remove_clue) and what the visibility rules read;
-- case_clue_add() and case_remove_clue() write both in one transaction, so they never differ
-- but for a superuser's change. A case_clues row whose clue's row names another case, or
-- none, no longer shows that clue's number, title, state and owner to the case's members.

-- Replaces audit_canonical of 0010_tokens.sql. The same text for every time a bigint of
-- microseconds holds; none for the time of another (the field is then empty). Still one
-- expression, so that audit_hash(e) inlines into the verifier's query (0004).
CREATE OR REPLACE FUNCTION audit_canonical(e audit_events) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT concat(
    octet_length(convert_to(e.seq::text, 'UTF8')), ':', e.seq, E'\n',
    octet_length(convert_to(coalesce((CASE WHEN abs(extract(epoch FROM e.at)) < 9e12
      THEN (extract(epoch FROM e.at) * 1000000)::bigint END)::text, ''), 'UTF8')), ':',
      CASE WHEN abs(extract(epoch FROM e.at)) < 9e12
      THEN (extract(epoch FROM e.at) * 1000000)::bigint END, E'\n',
    octet_length(convert_to(coalesce(e.actor_user_id::text, ''), 'UTF8')), ':', e.actor_user_id, E'\n',
    octet_length(convert_to(coalesce(e.actor_unit_id::text, ''), 'UTF8')), ':', e.actor_unit_id, E'\n',
    octet_length(convert_to(coalesce(e.action, ''), 'UTF8')), ':', e.action, E'\n',
    octet_length(convert_to(coalesce(e.subject_type, ''), 'UTF8')), ':', e.subject_type, E'\n',
    octet_length(convert_to(coalesce(e.subject_id::text, ''), 'UTF8')), ':', e.subject_id, E'\n',
    octet_length(convert_to(coalesce(e.from_state, ''), 'UTF8')), ':', e.from_state, E'\n',
    octet_length(convert_to(coalesce(e.to_state, ''), 'UTF8')), ':', e.to_state, E'\n',
    octet_length(convert_to(coalesce(e.reason, ''), 'UTF8')), ':', e.reason, E'\n',
    octet_length(convert_to(coalesce(e.details, ''), 'UTF8')), ':', e.details, E'\n',
    octet_length(convert_to(coalesce(encode(e.prev_hash, 'hex'), ''), 'UTF8')), ':',
      encode(e.prev_hash, 'hex'), E'\n',
    CASE WHEN e.actor_token_id IS NOT NULL THEN
      octet_length(e.actor_token_id::text) || ':' || e.actor_token_id || E'\n'
    END)
$$;

-- Replaces joint_case_rows of 0005_cases.sql. The same rows, with a clue only where its own
-- row names the case.
CREATE OR REPLACE FUNCTION joint_case_rows(p_case bigint, p_unit bigint) RETURNS SETOF joint_case_row
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
  LEFT JOIN (case_clues cc JOIN clues c ON c.id = cc.clue_id AND c.joint_case_id = cc.case_id)
    ON cc.case_id = jc.id
  WHERE jc.id = p_case
  ORDER BY cc.added_at, cc.clue_id
$$;
