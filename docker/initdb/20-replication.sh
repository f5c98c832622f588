#!/bin/sh
# Runs once, when the postgres image initialises its data volume: replicator, the role the
# standby of compose.yml's profile "replicated" (db-standby) streams the WAL as, and the
# pg_hba.conf line that lets it in from the compose network with its password. Beyond
# streaming it may only set synchronous_standby_names and reload the configuration, which
# docker/db-standby.sh does after its base backup: the standby needs no superuser's password.
# The password comes from compose.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v repl_pw="$CLUED_REPLICATION_PASSWORD" <<'SQL'
CREATE ROLE replicator LOGIN REPLICATION PASSWORD :'repl_pw';
GRANT ALTER SYSTEM ON PARAMETER synchronous_standby_names TO replicator;
GRANT EXECUTE ON FUNCTION pg_reload_conf() TO replicator;
SQL
# "all" in the database column does not cover replication connections: they need their own.
echo "host replication replicator all scram-sha-256" >>"$PGDATA/pg_hba.conf"
