#!/bin/sh
# The entrypoint of db-standby, the standby of compose.yml's profile "replicated", run as
# postgres in the postgres image. On its first start it copies db with pg_basebackup -R,
# which writes standby.signal and a primary_conninfo naming it standby1; then it makes
# standby1 db's synchronous standby and runs PostgreSQL through the image's own entrypoint.
# Environment: PGDATA, CLUED_REPLICATION_PASSWORD (the replicator role of
# docker/initdb/20-replication.sh).
set -eu
export PGPASSWORD="$CLUED_REPLICATION_PASSWORD"
primary="host=db port=5432 user=replicator"

# Set on db only after the copy: the copy would otherwise carry it. Reloaded at once, so
# db's commits wait for standby1 from here on.
sync_on_db() {
  psql -d "$primary dbname=postgres" -v ON_ERROR_STOP=1 -Atq \
    -c "ALTER SYSTEM SET synchronous_standby_names = 'standby1'" -c "SELECT pg_reload_conf()" >/dev/null
}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  # db's healthcheck passes on its local socket while its first initialisation still runs;
  # the network port opens only after it.
  tries=0
  until pg_isready -q -d "$primary dbname=postgres"; do
    tries=$((tries + 1))
    if [ "$tries" -ge 120 ]; then
      echo "db-standby: db does not answer on db:5432" >&2
      exit 1
    fi
    sleep 1
  done
  echo "db-standby: copying db into $PGDATA (pg_basebackup)"
  # Into a folder of its own first, so that a copy cut short is never taken for a standby.
  rm -rf "$PGDATA.tmp"
  pg_basebackup -d "$primary application_name=standby1" -D "$PGDATA.tmp" -R -X stream -c fast
  # A synchronous_standby_names db already had (a standby made before) must not come along:
  # promoted, this standby would wait at every commit for a standby of its own.
  sed -i '/^[[:space:]]*synchronous_standby_names[[:space:]]*=/d' "$PGDATA.tmp/postgresql.auto.conf"
  mv "$PGDATA.tmp" "$PGDATA"
  sync_on_db
elif [ -f "$PGDATA/standby.signal" ]; then
  # Again on every start as a standby, in case db was told to stop waiting meanwhile.
  sync_on_db || echo "db-standby: could not make standby1 db's synchronous standby; db's commits do not wait for it" >&2
fi
exec docker-entrypoint.sh postgres
