#include "service/services.h"
#include "rpc/auth.h"

#include <errno.h>

#include <string.h>
#include <sys/stat.h>

#include "audit/tail.h"
#include "audit/tree.h"
#include "db/db.h"
#include "log.h"
#include "metrics/http.h"
#include "rpc/table.h"
#include "service/admin.h"
#include "service/audit.h"
#include "service/audit_proof.h"
#include "service/audit_watch.h"
#include "service/batch.h"
#include "service/bulletin.h"
#include "service/case.h"
#include "service/clue.h"
#include "service/debug.h"
#include "service/health.h"
#include "service/rect.h"
#include "service/reflection.h"
#include "service/replica.h"
#include "service/schema_watch.h"
#include "service/stats.h"
#include "service/token.h"

/* A signing key others may read is warned about, not refused (as ssh refuses one): secrets
 * are often mounted readable by the group or everyone (a Kubernetes secret volume's default
 * is 0644) on hosts where nobody else runs, and a refusal would stop the server over it. */
static void signing_key_mode_check(const char *path) {
  struct stat st;

  if (stat(path, &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
    log_warn("--audit-signing-key: %s has mode %04o: whoever else can read it can sign "
             "checkpoints in this log's name; make it readable by clued alone (chmod 600)",
             path, (unsigned)(st.st_mode & 07777));
}

/* The key --audit-previous-key names: the verifier key of the signing key just replaced. */
static int previous_key_read(server_t *srv, const note_key_t *key, note_key_t *prev) {
  const char *path = srv->cfg.audit_previous_key;
  char err[512];

  if (note_key_read_file(path, prev, err, sizeof(err)) != 0) {
    log_error("--audit-previous-key: %s", err);
    return -EINVAL;
  }
  if (prev->has_private) {
    log_warn("--audit-previous-key: %s holds a signing key; only its verifier key is used: give "
             "the .pub file, and keep the replaced key's secret away from clued",
             path);
    prev->has_private = 0;
    memset(prev->seed, 0, sizeof(prev->seed));
  }
  if (prev->id == key->id && memcmp(prev->pub, key->pub, sizeof(prev->pub)) == 0) {
    log_error("--audit-previous-key: %s is the verifier key of --audit-signing-key itself", path);
    return -EINVAL;
  }
  return 0;
}

/* The audit tree, with the signing key of --audit-signing-key if given (and the key it
 * replaced, --audit-previous-key). */
static int tree_start(server_t *srv) {
  audit_tree_config_t tc = {0};
  note_key_t key, prev;
  char err[512];
  int rc;

  if (srv->cfg.audit_previous_key && srv->cfg.audit_signing_key == NULL) {
    log_error("--audit-previous-key goes with --audit-signing-key: it names the key that one "
              "replaced");
    return -EINVAL;
  }

  if (srv->cfg.audit_signing_key) {
    if (note_key_read_file(srv->cfg.audit_signing_key, &key, err, sizeof(err)) != 0) {
      log_error("--audit-signing-key: %s", err);
      return -EINVAL;
    }
    if (!key.has_private) {
      log_error("--audit-signing-key: %s holds a verifier key, not a signing key",
                srv->cfg.audit_signing_key);
      return -EINVAL;
    }
    signing_key_mode_check(srv->cfg.audit_signing_key);
    tc.key = &key;
    if (srv->cfg.audit_previous_key) {
      if (previous_key_read(srv, &key, &prev) != 0) {
        memset(&key, 0, sizeof(key));
        return -EINVAL;
      }
      tc.previous_key = &prev;
    }
  }
  tc.checkpoint_every = srv->cfg.checkpoint_every;
  tc.checkpoint_ms = srv->cfg.checkpoint_ms;
  rc = audit_tree_init(srv, &tc);
  if (rc == 0 && tc.key) {
    char own[NOTE_NAME_MAX + 16], old[NOTE_NAME_MAX + 16];
    note_key_label(&key, own, sizeof(own));
    if (tc.previous_key) {
      note_key_label(&prev, old, sizeof(old));
      log_info("audit tree: signing checkpoints as %s, which replaced %s", own, old);
    } else {
      log_info("audit tree: signing checkpoints as %s", own);
    }
  }
  memset(&key, 0, sizeof(key));
  return rc;
}

/* ---- the modules, in the order they start ------------------------------------------ */

static int methods_start(server_t *srv) {
  int rc = rpc_table_new(&srv->methods);

  if (rc == 0)
    rc = rpc_table_add(srv->methods, health_methods, health_nmethods);
  if (rc == 0)
    rc = rpc_table_add(srv->methods, admin_methods, admin_nmethods);
  if (rc == 0)
    rc = rpc_table_add(srv->methods, audit_methods, audit_nmethods);
  if (rc == 0)
    rc = rpc_table_add(srv->methods, audit_proof_methods, audit_proof_nmethods);
  if (rc == 0)
    rc = rpc_table_add(srv->methods, clue_methods, clue_nmethods);
  if (rc == 0)
    rc = rpc_table_add(srv->methods, case_methods, case_nmethods);
  if (rc == 0)
    rc = rpc_table_add(srv->methods, stats_methods, stats_nmethods);
  if (rc == 0)
    rc = rpc_table_add(srv->methods, bulletin_methods, bulletin_nmethods);
  if (rc == 0)
    rc = rpc_table_add(srv->methods, rect_methods, rect_nmethods);
  if (rc == 0)
    rc = rpc_table_add(srv->methods, reflection_methods, reflection_nmethods);
  if (rc == 0)
    rc = rpc_table_add(srv->methods, token_methods, token_nmethods);
#ifdef CLUED_TEST_HOOKS
  if (rc == 0)
    rc = rpc_table_add(srv->methods, debug_methods, debug_nmethods);
#endif
  if (rc != 0)
    log_error("cannot build the method table: %d", rc);
  return rc;
}

static void methods_free(server_t *srv) {
  rpc_table_free(srv->methods);
  srv->methods = NULL;
}

/* A connection whose peer does not read its replies pulls no more rows meanwhile, from the
 * primary or the replica (its stale-tolerant reads go there). */
static void pool_conn_congested(server_t *srv, uint64_t conn_id, int congested) {
  db_owner_pause(srv->db, conn_id, congested);
  db_owner_pause(replica_pool(srv), conn_id, congested);
}

/* A user whose replies wait unread (--max-user-outbound) pulls no more rows meanwhile. */
static void pool_user_congested(server_t *srv, uint64_t user, int congested) {
  db_user_pause(srv->db, user, congested);
  db_user_pause(replica_pool(srv), user, congested);
}

void services_db_config(const server_t *srv, const char *conninfo, db_config_t *dc) {
  memset(dc, 0, sizeof(*dc));
  dc->conninfo = conninfo;
  dc->size = srv->cfg.db_pool_size;
  dc->queue_max = srv->cfg.db_queue_max;
  dc->statement_timeout_ms = srv->cfg.db_statement_timeout_ms;
  dc->lock_timeout_ms = srv->cfg.db_lock_timeout_ms;
  dc->per_owner_max = srv->cfg.db_queue_per_conn;
  dc->per_user_max = server_db_queue_per_user(&srv->cfg);
  dc->conns_per_user = srv->cfg.db_conns_per_user;
  dc->heavy_conns = srv->cfg.db_heavy_conns;
}

/* The database pool: created here and closed here, nowhere else. */
static int pool_start(server_t *srv) {
  db_config_t dc;

  if (srv->cfg.database_url == NULL)
    return 0;
  services_db_config(srv, srv->cfg.database_url, &dc);
  dc.tune_sql = svc_batch_tune_sql;
  dc.untune_sql = svc_batch_untune_sql;
  /* Every write appends an audit event; with this, the statement that appends it refuses
   * unless its commit will wait for a synchronous standby (migration 0046). */
  if (srv->cfg.require_sync_replica)
    dc.options = "-c clued.require_sync_replica=on";
  if (db_pool_new(srv->loop, &dc, &srv->db) != 0) {
    log_error("cannot create the database pool");
    return -ENOMEM;
  }
  srv->conn_congested = pool_conn_congested;
  srv->user_congested = pool_user_congested;
  return 0;
}

static void pool_closed(void *arg) {
  (void)arg;
}

static void pool_close(server_t *srv) {
  srv->conn_congested = NULL;
  srv->user_congested = NULL;
  if (srv->db) {
    db_pool_close(srv->db, pool_closed, NULL);
    srv->db = NULL;
  }
}

static void auth_free(server_t *srv) {
  auth_cache_free(&srv->auth_cache);
}

/* The committed tail of audit_events, which the watch and the tree builder follow: it
 * starts before them and closes after them. */
static int tail_start_if_db(server_t *srv) {
  return srv->db ? audit_tail_init(srv) : 0;
}

static int tree_start_if_db(server_t *srv) {
  return srv->db ? tree_start(srv) : 0;
}

static const server_module_t methods_module = {"the method table", methods_start, NULL, NULL,
                                               methods_free};
static const server_module_t reflection_module = {"reflection", reflection_init,
                                                  reflection_shutdown, NULL, reflection_close};
static const server_module_t pool_module = {"the database pool", pool_start, NULL, pool_close,
                                            NULL};
static const server_module_t replica_module = {"the replica", replica_start, NULL, replica_close,
                                              replica_free};
static const server_module_t batch_module = {"batching", svc_batch_start, NULL, svc_batch_close,
                                             svc_batch_free};
static const server_module_t auth_module = {"authentication", rpc_auth_init, NULL, rpc_auth_close,
                                            auth_free};
static const server_module_t health_module = {"health", health_init, health_shutdown,
                                              health_close, health_free};
static const server_module_t tail_module = {"the audit tail", tail_start_if_db, NULL,
                                            audit_tail_close, NULL};
static const server_module_t audit_module = {"audit watch", audit_init, audit_shutdown,
                                             audit_close, NULL};
static const server_module_t schema_module = {"the schema check", schema_watch_start, NULL,
                                              schema_watch_close, schema_watch_free};
static const server_module_t tree_module = {"the audit tree", tree_start_if_db, NULL,
                                            audit_tree_close, NULL};

int services_start(server_t *srv) {
  static const server_module_t *const modules[] = {
      &methods_module, &reflection_module, &pool_module,   &replica_module,
      &batch_module,   &auth_module,       &health_module, &schema_module,
      &tail_module,    &audit_module,      &tree_module,   &metrics_module,
  };
  return server_start_modules(srv, modules, sizeof(modules) / sizeof(modules[0]));
}
