-- `clued bootstrap` runs as the role that owns the schema, as `clued migrate` does (README
-- "Database roles"). The runtime role, which serves, may no longer call admin_bootstrap():
-- run as it, bootstrap is refused (SQLSTATE 42501, which bootstrap explains) and creates
-- nothing, instead of quietly making the first admin with the server's credentials.
REVOKE EXECUTE ON FUNCTION admin_bootstrap(text) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION admin_bootstrap(text) FROM clued_runtime;
