#!/bin/sh
# Runs once, when the postgres image initialises its data volume: the roles of
# migrations/0009_runtime_role.sql. clued_owner owns the clued database and migrates it;
# clued (a member of clued_runtime, owning nothing) serves. Passwords come from compose.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v owner_pw="$CLUED_OWNER_PASSWORD" -v app_pw="$CLUED_PASSWORD" <<'SQL'
CREATE ROLE clued_owner LOGIN PASSWORD :'owner_pw';
CREATE ROLE clued_runtime NOLOGIN;
CREATE ROLE clued LOGIN PASSWORD :'app_pw' IN ROLE clued_runtime;
CREATE DATABASE clued OWNER clued_owner;
SQL
