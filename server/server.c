#include "server.h"

#include <string.h>

void server_config_defaults(server_config_t *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  strcpy(cfg->listen, "127.0.0.1:50051");
  cfg->max_message_bytes = 4u << 20;
  cfg->max_concurrent_streams = 100;
  cfg->grace_ms = 5000;
  cfg->db_pool_size = 8;
  cfg->db_queue_max = 1024;
  cfg->accepted_deadline_days = 30;
  cfg->prelim_deadline_days = 90;
  cfg->filed_deadline_days = 90;
}
