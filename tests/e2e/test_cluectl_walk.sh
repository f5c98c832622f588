#!/usr/bin/env bash
# One clue walked through its whole life with cluectl alone, against the real clued and a
# throwaway PostgreSQL: bootstrap; units, users and tokens with `cluectl admin`; submit as
# a group member; preliminary check by the group's leader; filing proposed and approved by
# the liaison room's leader; closed with an outcome; the history in order; a batch from a
# JSON file; a stale version refused. Steps for methods the server does not have yet
# (notes, deadline extension, handover, joint cases, audit, statistics) print SKIP while it
# answers UNIMPLEMENTED, and run once it does.
#
# Environment (set by CTest): CLUED_BIN, CLUECTL_BIN, CLUED_SOURCE_DIR. CLUED_TEST_PGHOST
# and CLUED_TEST_PGPORT name a running PostgreSQL to make a database in; without them the
# test starts its own through scripts/pg-test.
set -uo pipefail

: "${CLUED_BIN:?}" "${CLUECTL_BIN:?}" "${CLUED_SOURCE_DIR:?}"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:exitcode=66}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
PY=$(command -v python3)

work=$(mktemp -d /tmp/cluectl-walk.XXXXXX)
pgdir=""
server_pid=""
finished=0

# Only reaching the end passes: an error the script did not foresee (even a syntax error in
# a late step) must not look like success.
cleanup() {
  local status=$?
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid"
    wait "$server_pid" 2>/dev/null
  fi
  [ -n "$pgdir" ] && "$CLUED_SOURCE_DIR/scripts/pg-test" stop "$pgdir"
  rm -rf "$work"
  if [ "$finished" -ne 1 ]; then
    echo "FAIL: test_cluectl_walk stopped before its end" >&2
    [ "$status" -ne 0 ] || status=1
  fi
  exit "$status"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  [ -f "$work/out" ] && { echo "--- stdout"; cat "$work/out"; } >&2
  [ -f "$work/err" ] && { echo "--- stderr"; cat "$work/err"; } >&2
  [ -f "$work/clued.log" ] && { echo "--- clued log (tail)"; tail -n 30 "$work/clued.log"; } >&2
  exit 1
}

sanitizer_clean() {
  ! grep -qE 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$1"
}

# ctl TOKEN ARGS...: run cluectl as the holder of TOKEN; stdout in $work/out (and $out),
# stderr in $work/err, exit status in $rc.
ctl() {
  local token=$1
  shift
  CLUED_TOKEN=$token "$CLUECTL_BIN" --server "$addr" "$@" >"$work/out" 2>"$work/err"
  rc=$?
  out=$(cat "$work/out")
  sanitizer_clean "$work/err" || fail "sanitizer report from cluectl $*"
}

# ok TOKEN ARGS...: like ctl, and the command must succeed.
ok() {
  ctl "$@"
  [ "$rc" -eq 0 ] || fail "cluectl ${*:2} exited $rc"
}

# expect_out TEXT: stdout of the last command is exactly TEXT.
expect_out() {
  [ "$out" = "$1" ] || fail "wanted output '$1', got '$out'"
}

# guarded WHAT TOKEN ARGS...: like ctl; returns 1 after printing SKIP when the server does
# not have the method yet, so that the caller skips the step.
guarded() {
  local what=$1
  shift
  ctl "$@"
  if [ "$rc" -eq 1 ] && grep -q '^UNIMPLEMENTED' "$work/err"; then
    echo "SKIP $what: the server answers UNIMPLEMENTED"
    return 1
  fi
  [ "$rc" -eq 0 ] || fail "cluectl ${*:2} exited $rc"
  return 0
}

# json EXPR: evaluate a Python expression over the last output parsed as JSON (as d).
json() {
  "$PY" -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$work/out" "$1"
}

# field NAME: the value of "NAME: value" in a record printed by cluectl.
field() {
  awk -v k="$1:" '$1 == k { print $2; exit }' "$work/out"
}

step() {
  echo "--- $*"
}

# ---- a database and the server ---------------------------------------------------------------

if [ -n "${CLUED_TEST_PGHOST:-}" ]; then
  pghost=$CLUED_TEST_PGHOST
  pgport=${CLUED_TEST_PGPORT:-5432}
else
  pgdir=$(mktemp -d /tmp/cluectl-walk-pg.XXXXXX)
  read -r pghost pgport < <("$CLUED_SOURCE_DIR/scripts/pg-test" start "$pgdir") || fail "cannot start PostgreSQL"
fi
dbname="walk_$(date +%s)_$$"
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
# As in production: clued_owner owns the database and migrates; clued (a member of
# clued_runtime, made by scripts/pg-test) serves.
"$pgbin/createdb" -h "$pghost" -p "$pgport" -U postgres -O clued_owner "$dbname" || fail "cannot create database $dbname"
export CLUED_DATABASE_URL="postgresql:///$dbname?host=$pghost&port=$pgport&user=clued_owner"

"$CLUED_BIN" migrate >"$work/migrate.log" 2>&1 || { cat "$work/migrate.log"; fail "clued migrate"; }
"$CLUED_BIN" bootstrap >"$work/bootstrap.log" 2>&1 || { cat "$work/bootstrap.log"; fail "clued bootstrap"; }
admin=$(grep -oE 'ct_[0-9a-f]{64}' "$work/bootstrap.log" | head -n 1)
[ -n "$admin" ] || fail "no admin token in: $(cat "$work/bootstrap.log")"

"$CLUED_BIN" serve --listen 127.0.0.1:0 --database-url "${CLUED_DATABASE_URL/user=clued_owner/user=clued}" \
  >"$work/clued.log" 2>&1 &
server_pid=$!
addr=""
for _ in $(seq 1 300); do
  addr=$(sed -nE 's/.*listening on ([^ ]+).*/\1/p' "$work/clued.log" | head -n 1)
  [ -n "$addr" ] && break
  kill -0 "$server_pid" 2>/dev/null || fail "clued exited"
  sleep 0.1
done
[ -n "$addr" ] || fail "clued did not report its address"
for _ in $(seq 1 100); do
  ctl "" health
  [ "$rc" -eq 0 ] && break
  sleep 0.1
done
expect_out "SERVING"
step "clued serving on $addr"

# ---- units, users and tokens -------------------------------------------------------------------

step "admin: units, users, tokens"
ok "$admin" admin create-unit --kind ROOM --code R1 --name "第一监督检查室"
room=$(field id)
ok "$admin" admin create-unit --kind GROUP --code G1 --name "第一派驻纪检监察组" \
  --liaison-room "$room" --host-unit "市发展改革委"
group=$(field id)
ok "$admin" admin create-unit --kind GROUP --code G2 --name "第二派驻纪检监察组" --liaison-room "$room"
group2=$(field id)
ok "$admin" admin units --kind group
[ "$(grep -c ' GROUP ' "$work/out")" -eq 2 ] || fail "admin units --kind group lists two groups"

# user UNIT NAME ROLE: create a user, issue them an enrollment token, and print the personal
# token they issue themselves with it (an enrollment token cannot read reporter contacts)
user() {
  ok "$admin" admin create-user --unit "$1" --name "$2" --role "$3"
  local id enrollment
  id=$(field id)
  ok "$admin" admin issue-token --user "$id" --note walk
  enrollment=$out
  ok "$enrollment" token issue --note "walk personal"
  echo "$out"
}
member=$(user "$group" "组员甲" member)
leader=$(user "$group" "组长乙" leader)
room_leader=$(user "$room" "室主任丙" leader)
g2_leader=$(user "$group2" "组长丁" leader)
for t in "$member" "$leader" "$room_leader" "$g2_leader"; do
  [[ "$t" =~ ^ct_[0-9a-f]{64}$ ]] || fail "not a token: $t"
done

# ---- one clue, from submission to closing ------------------------------------------------------

step "submit as a group member"
ok "$member" clue submit --title "某局长违规收受礼金" --summary "反映其多次收受购物卡" \
  --source LETTER_VISIT_REPORT --subject-name "张三" --subject-position "局长" \
  --host-unit "市发展改革委" --category "违反廉洁纪律" --reporter-name "李四" --reporter-phone 13800000000
[[ "$out" =~ ^clue\ ([0-9]+)\ (G1-[0-9]{4}-0001)\ submitted\ \(request\ id\ ([0-9a-f-]{36})\)$ ]] ||
  fail "submit output: $out"
clue=${BASH_REMATCH[1]}
number=${BASH_REMATCH[2]}

step "the leader starts the preliminary check"
ok "$leader" clue move "$clue" --to PRELIMINARY_CHECK --version 1 --reason "需要初步核实"
expect_out "moved to PRELIMINARY_CHECK (version 2)"

step "a stale version is refused"
ctl "$leader" clue move "$clue" --to CLOSED --version 1 --reason "重复" --finding "f"
[ "$rc" -eq 1 ] || fail "stale version: exit $rc, wanted 1"
grep -q '^ABORTED: ' "$work/err" || fail "stale version: wanted ABORTED"
[ -z "$out" ] || fail "stale version printed: $out"

step "the leader proposes filing; the liaison room's leader approves"
ok "$leader" clue move "$clue" --to FILED --version 2 --reason "发现违纪事实，拟立案"
[[ "$out" =~ ^proposal\ \#([0-9]+)\ pending\ review\ by\ unit\ R1$ ]] || fail "proposal output: $out"
proposal=${BASH_REMATCH[1]}
ok "$room_leader" clue proposals --to-review
grep -qE "^#$proposal +$clue +PRELIMINARY_CHECK +FILED +PENDING " "$work/out" || fail "proposal not listed for review"
ctl "$leader" clue review "$proposal" --approve
[ "$rc" -eq 1 ] && grep -q '^PERMISSION_DENIED' "$work/err" || fail "the proposer reviewed their own proposal"
ok "$room_leader" clue review "$proposal" --approve --comment "同意立案"
expect_out "proposal #$proposal approved; clue $clue moved to FILED (version 3)"

step "the leader closes the case with its outcome"
ok "$leader" clue move "$clue" --to CLOSED --version 3 --reason "审查终结" \
  --sanction-kind "党内严重警告" --persons-disciplined 1
expect_out "moved to CLOSED (version 4)"

step "history lists the events in order"
ok "$member" clue history "$clue"
actions=$(awk 'NR > 1 { print $4 }' "$work/out" | paste -sd ' ')
[ "$actions" = "clue.submit clue.move proposal.create proposal.approve clue.move" ] ||
  fail "history actions: $actions"
seqs=$(awk 'NR > 1 { print $1 }' "$work/out")
[ "$seqs" = "$(sort -n <<<"$seqs")" ] || fail "history not in sequence order"
moves=$(awk 'NR > 1 { print $5 "->" $6 }' "$work/out" | paste -sd ' ')
[ "$moves" = "-->ACCEPTED ACCEPTED->PRELIMINARY_CHECK PRELIMINARY_CHECK->FILED PRELIMINARY_CHECK->FILED FILED->CLOSED" ] ||
  fail "history states: $moves"

step "clue get --json shows it CLOSED"
ok "$member" --json clue get "$clue"
[ "$(json 'd["state"]')" = "CLUE_STATE_CLOSED" ] || fail "state: $(json 'd["state"]')"
[ "$(json 'd["version"]')" = "4" ] || fail "version"
[ "$(json 'd["registration_number"]')" = "$number" ] || fail "registration number"
[ "$(json 'd["reporter"]')" = "None" ] || fail "a member saw the reporter"
ok "$leader" --json clue get "$clue"
[ "$(json 'd["reporter"]["phone"]')" = "13800000000" ] || fail "the leader did not see the reporter"
ok "$member" clue get "$clue"
grep -qE '^State: +CLOSED \(version 4\)$' "$work/out" || fail "clue get: $out"

# ---- a batch from a file -----------------------------------------------------------------------

step "clue submit --file with a 3-element JSON array"
cat >"$work/batch.json" <<'EOF'
[
  {"title": "批量一", "summary": "审计发现违规发放津贴", "source": "AUDIT",
   "subject": {"name": "王五", "position": "处长"}, "host_unit": "市发展改革委"},
  {"title": "批量二", "summary": "巡察移交问题线索", "source": "INSPECTION_TOUR",
   "subject": {"name": "赵六", "is_top_leader": true}, "host_unit": "市发展改革委",
   "violation_categories": ["违反组织纪律", "违反工作纪律"]},
  {"title": "批量三", "summary": "上级交办", "source": "superior_assigned",
   "subject": {"name": "钱七"}, "host_unit": "市发展改革委", "request_id": "0b9a43a5-49b2-4a3c-9d1e-5b1f1c0c7e01"}
]
EOF
ok "$member" clue submit --file "$work/batch.json"
[ "$(wc -l <"$work/out")" -eq 3 ] || fail "wanted one line per clue"
grep -qE '^clue [0-9]+ G1-[0-9]{4}-0004 submitted \(request id 0b9a43a5-49b2-4a3c-9d1e-5b1f1c0c7e01\)$' "$work/out" ||
  fail "third line"
ok "$member" --json clue list --all
[ "$(json '[c["title"] for c in d["clues"]][:3]')" = "['批量三', '批量二', '批量一']" ] || fail "batch not listed newest first"
ok "$member" --json clue submit --file "$work/batch.json"
[ "$(wc -l <"$work/out")" -eq 3 ] || fail "--json: wanted three JSON lines"
tail -n 1 "$work/out" >"$work/last.json"
"$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["registration_number"].endswith("-0004"), d' \
  "$work/last.json" || fail "the fixed request id did not return the same clue"
printf '[{"title": "x"},\n {"title": "y", "subject": {"nmae": "z"}}]' >"$work/bad.json"
ctl "$member" clue submit --file "$work/bad.json"
[ "$rc" -eq 2 ] || fail "bad file: exit $rc, wanted 2"
grep -q "bad.json:2:29: element 2: unknown field 'nmae' in SubjectPerson" "$work/err" || fail "bad file: $(cat "$work/err")"

# ---- methods other branches are adding ---------------------------------------------------------

step "notes"
if guarded "clue note" "$member" clue note "$clue" --kind EVIDENCE_SUMMARY --text "银行流水显示多笔转账"; then
  [[ "$out" =~ ^note\ [0-9]+\ added\ to\ clue\ $clue$ ]] || fail "note output: $out"
  printf '会商记录\n同意结案' | CLUED_TOKEN=$leader "$CLUECTL_BIN" --server "$addr" \
    clue note "$clue" --kind MEETING_MINUTES --text-file - >"$work/out" 2>"$work/err" || fail "note from stdin"
  if guarded "clue notes" "$member" clue notes "$clue"; then
    grep -q '^    银行流水显示多笔转账$' "$work/out" && grep -q '^    同意结案$' "$work/out" || fail "notes: $out"
  fi
fi

step "deadline extension and handover"
ok "$member" --json clue submit --title "延期与移交" --summary "s" --source SELF_DISCOVERED \
  --subject-name "孙八" --host-unit "市发展改革委"
other=$(json 'd["id"]')
if guarded "clue extend" "$leader" clue extend "$other" --days 30 --version 1 --reason "涉及面广"; then
  [[ "$out" =~ ^deadline\ of\ clue\ $other\ extended\ to\ [0-9-]{10}\ \(version\ ([0-9]+)\)$ ]] || fail "extend: $out"
  version=${BASH_REMATCH[1]}
  ctl "$leader" clue extend "$other" --days 30 --version "$version" --reason "再次延期"
  [ "$rc" -eq 1 ] && grep -q '^FAILED_PRECONDITION' "$work/err" || fail "a second extension was not refused"
else
  version=1
fi
if guarded "clue handover" "$leader" clue handover "$other" --to-unit "$group2" --version "$version" \
  --reason "属第二组管辖"; then
  [[ "$out" =~ ^clue\ $other\ handed\ over\ to\ G2\ 第二派驻纪检监察组\ \(version ]] || fail "handover: $out"
  ok "$g2_leader" --json clue get "$other"
  [ "$(json 'd["owner_unit_id"]')" = "$group2" ] || fail "new owner"
fi

step "joint case"
# A closed clue cannot join a case: the case gathers an open one.
ok "$member" --json clue submit --title "关联线索" --summary "s" --source SELF_DISCOVERED \
  --subject-name "周九" --host-unit "市发展改革委"
open_clue=$(json 'd["id"]')
if guarded "case create" "$room_leader" case create --title "联合审查" --basis "线索关联" \
  --participant "$group" --clue "$open_clue"; then
  [[ "$out" =~ ^joint\ case\ \#([0-9]+)\ created ]] || fail "case create: $out"
  case_id=${BASH_REMATCH[1]}
  ok "$room_leader" case show "$case_id"
  grep -q "^Joint case #$case_id: 联合审查$" "$work/out" || fail "case show: $out"
  ok "$room_leader" case list
  grep -qE "^$case_id +联合审查 " "$work/out" || fail "case list: $out"
fi

step "audit"
ok "$admin" admin users
grep -qE '^ *[0-9]+ +ADM +[^ ]' "$work/out" || fail "admin users names the admin's unit by code: $out"
ok "$admin" admin units --kind admin
admin_unit=$(awk 'NR > 1 { print $1; exit }' "$work/out")
ok "$admin" admin create-user --unit "$admin_unit" --name "审计员" --role auditor
auditor_id=$(field id)
ok "$admin" admin issue-token --user "$auditor_id"
auditor=$out
if guarded "audit verify" "$auditor" audit verify; then
  [[ "$out" =~ ^OK:\ [0-9]+\ events?\ in\ [0-9]+\ chains?\ verified$ ]] || fail "audit verify: $out"
fi
if guarded "audit list" "$auditor" audit list --subject-type clue --subject-id "$clue" --all; then
  [ "$(awk 'NR > 1 { print $4 }' "$work/out" | head -n 1)" = "clue.submit" ] || fail "audit list: $out"
fi
if guarded "audit watch" "$auditor" --timeout 2 audit watch --subject-type clue --subject-id "$clue"; then
  grep -q "clue.submit" "$work/out" || fail "audit watch replay: $out"
  grep -qE "^last seq [0-9]+; resume with: cluectl audit watch --after-seq [0-9]+ --subject-type clue --subject-id $clue\$" "$work/err" ||
    fail "audit watch: no resume line"
fi

step "statistics"
today=$(date +%F)
if guarded "stats" "$auditor" stats --from "$today" --to "$today" --csv; then
  head -n 1 "$work/out" | grep -q '^unit_id,unit_code,unit_name,received,' || fail "stats csv header: $out"
  grep -q "^$group,G1," "$work/out" || fail "stats csv: no row for G1"
fi

# ---- the server stops cleanly ------------------------------------------------------------------

kill -TERM "$server_pid"
wait "$server_pid"
status=$?
server_pid=""
[ "$status" -eq 0 ] || fail "clued exited $status"
sanitizer_clean "$work/clued.log" || fail "sanitizer report from clued"
finished=1
echo "PASS test_cluectl_walk"
