-- The rare facts of a clue row as functions PostgreSQL calls only when a clue needs them
-- (issue 11). A read of one clue (CLUE_COLS) used to carry ten sub-selects: the joint case's
-- lead and whether the caller's unit takes part, the caller's assignment and recusal, the
-- creator's name, the handlers. A prepared statement runs a cached plan, but the executor
-- still builds a node for every scan of every sub-select on every execution, whether the
-- row needs it or not: for a clue outside any joint case, with no handler and no recusal
-- (almost all), that start-up was half of what PostgreSQL spent on a GetClue. Behind a
-- CASE on the clue's own columns (joint_case_id, has_handlers, has_recusals: 0020) a call
-- of the functions below costs nothing when not made. They are plpgsql, whose statements
-- are planned once per connection; a SQL function that PostgreSQL cannot inline (a FROM, a
-- sub-select) would be parsed and planned again on every call.
--
-- Each answers exactly what the sub-select it replaces answered, NULL arguments included.

-- Replaces joint_case_lead of 0005_cases.sql: the same answer, planned once per connection.
CREATE OR REPLACE FUNCTION joint_case_lead(p_case bigint) RETURNS bigint
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
  RETURN (SELECT lead_unit FROM joint_cases WHERE id = p_case);
END $$;

-- Replaces joint_case_has_unit of 0005_cases.sql: the same answer, planned once per connection.
CREATE OR REPLACE FUNCTION joint_case_has_unit(p_case bigint, p_unit bigint) RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
  RETURN EXISTS (SELECT 1 FROM joint_cases WHERE id = p_case AND lead_unit = p_unit)
      OR EXISTS (SELECT 1 FROM case_participants WHERE case_id = p_case AND unit_id = p_unit);
END $$;

-- Replaces clue_unit_leaders_recused of 0019_handlers_recusal.sql: the same answer, planned
-- once per connection.
CREATE OR REPLACE FUNCTION clue_unit_leaders_recused(p_clue bigint, p_unit bigint) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
  RETURN EXISTS (SELECT 1 FROM users u JOIN recusals r ON r.user_id = u.id AND r.clue_id = p_clue
                 WHERE u.unit_id = p_unit AND u.role = 'LEADER' AND NOT u.disabled)
     AND NOT EXISTS (SELECT 1 FROM users u
                     WHERE u.unit_id = p_unit AND u.role = 'LEADER' AND NOT u.disabled
                       AND NOT EXISTS (SELECT 1 FROM recusals r WHERE r.clue_id = p_clue AND r.user_id = u.id));
END $$;

-- Whether user p_user handles clue p_clue by an assignment of the unit p_owner (its owner):
-- an assignment counts only while the unit that made it owns the clue (0019).
CREATE FUNCTION clue_user_handles(p_clue bigint, p_user bigint, p_owner bigint) RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
  RETURN EXISTS (SELECT 1 FROM clue_handlers
                 WHERE clue_id = p_clue AND user_id = p_user AND owner_unit = p_owner);
END $$;

-- Whether user p_user is recused from clue p_clue.
CREATE FUNCTION clue_user_recused(p_clue bigint, p_user bigint) RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
  RETURN EXISTS (SELECT 1 FROM recusals WHERE clue_id = p_clue AND user_id = p_user);
END $$;

-- The current handlers of clue p_clue owned by p_owner as one text (CLUE_HANDLERS_COL in
-- server/service/clue_row.h): per handler, fields separated by chr(31) (user id, user name,
-- unit id, unit code, assigned by, assigned at in ms), handlers by chr(30), in the order they
-- were assigned; NULL when none.
CREATE FUNCTION clue_handlers_text(p_clue bigint, p_owner bigint) RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
  RETURN (SELECT string_agg(concat_ws(chr(31), h.user_id, hu.name, hu.unit_id, hn.code, h.assigned_by,
                                      (extract(epoch from h.assigned_at) * 1000)::bigint),
                            chr(30) ORDER BY h.assigned_at, h.user_id)
          FROM clue_handlers h JOIN users hu ON hu.id = h.user_id JOIN units hn ON hn.id = hu.unit_id
          WHERE h.clue_id = p_clue AND h.owner_unit = p_owner);
END $$;
