/* The server in-process on its own loop: a client speaks to it over TCP, the test counts
 * callbacks, shuts the server down, and checks the loop closes with no handle left. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <nghttp2/nghttp2.h>
#include <uv.h>

#include "rpc/table.h"
#include "server.h"
#include "service/services.h"

typedef struct client {
  uv_tcp_t tcp;
  uv_connect_t conn;
  uv_write_t wr;
  server_t *srv;
  uint8_t out[512];
  size_t out_len;
  uint8_t in[65536];
  size_t in_len;
  int connected, eof, closed;
  nghttp2_session *h2; /* NULL for the raw-bytes client */
  int grpc_status;     /* from the trailers, -1 until seen */
  int stream_closed;
} client_t;

static void on_close(uv_handle_t *h) {
  client_t *c = h->data;
  c->closed++;
  /* Once the client is gone, stop the server: shutdown must leave no handle behind. */
  server_shutdown(c->srv);
}

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b) {
  client_t *c = h->data;
  (void)sz;
  *b = uv_buf_init((char *)c->in + c->in_len, (unsigned)(sizeof(c->in) - c->in_len));
}

static void flush_h2(client_t *c);

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  client_t *c = s->data;
  (void)b;
  if (n < 0) {
    c->eof++;
    uv_close((uv_handle_t *)&c->tcp, on_close);
    return;
  }
  if (c->h2) {
    assert_true(nghttp2_session_mem_recv(c->h2, c->in + c->in_len, (size_t)n) == n);
    flush_h2(c);
    if (c->stream_closed && !uv_is_closing((uv_handle_t *)&c->tcp))
      uv_close((uv_handle_t *)&c->tcp, on_close);
    return;
  }
  c->in_len += (size_t)n;
}

static void on_write(uv_write_t *w, int status) {
  (void)w;
  assert_int_equal(status, 0);
}

typedef struct wreq {
  uv_write_t w;
  char data[];
} wreq_t;

static void on_h2_write(uv_write_t *w, int status) {
  assert_int_equal(status, 0);
  free(w); /* w is the first member of its wreq_t */
}

static void flush_h2(client_t *c) {
  const uint8_t *data;
  ssize_t n;
  while ((n = nghttp2_session_mem_send(c->h2, &data)) > 0) {
    /* libuv keeps a pointer to the bytes until the write completes: give them a home. */
    wreq_t *r = malloc(sizeof(*r) + (size_t)n);
    uv_buf_t b;
    memcpy(r->data, data, (size_t)n);
    b = uv_buf_init(r->data, (unsigned)n);
    assert_int_equal(uv_write(&r->w, (uv_stream_t *)&c->tcp, &b, 1, on_h2_write), 0);
  }
}

static void on_connect(uv_connect_t *req, int status) {
  client_t *c = req->data;
  uv_buf_t b = uv_buf_init((char *)c->out, (unsigned)c->out_len);
  assert_int_equal(status, 0);
  c->connected++;
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  if (c->h2)
    flush_h2(c);
  else
    assert_int_equal(uv_write(&c->wr, (uv_stream_t *)&c->tcp, &b, 1, on_write), 0);
}

static void start_server(uv_loop_t *loop, server_t *srv) {
  server_config_t cfg;
  server_config_defaults(&cfg);
  strcpy(cfg.listen, "127.0.0.1:0");
  cfg.grace_ms = 200;
  assert_int_equal(server_init(srv, loop, &cfg), 0);
  assert_int_equal(services_start(srv), 0);
}

static void connect_client(uv_loop_t *loop, server_t *srv, client_t *c) {
  struct sockaddr_in addr;
  const char *colon = strrchr(srv->bound, ':');
  c->srv = srv;
  c->grpc_status = -1;
  assert_int_equal(uv_ip4_addr("127.0.0.1", atoi(colon + 1), &addr), 0);
  uv_tcp_init(loop, &c->tcp);
  c->tcp.data = c;
  c->conn.data = c;
  assert_int_equal(uv_tcp_connect(&c->conn, &c->tcp, (struct sockaddr *)&addr, on_connect), 0);
}

static void finish(uv_loop_t *loop, server_t *srv) {
  assert_int_equal(uv_run(loop, UV_RUN_DEFAULT), 0);
  server_free(srv);
  assert_int_equal(uv_loop_close(loop), 0);
}

static void test_garbage_is_dropped(void **state) {
  uv_loop_t loop;
  server_t srv;
  client_t c = {0};
  (void)state;

  uv_loop_init(&loop);
  start_server(&loop, &srv);
  /* Neither the HTTP/2 preface nor an HTTP/1.1 request line: a 400, then the close. */
  memcpy(c.out, "\x01\x02garbage\r\n\r\n", 13);
  c.out_len = 13;
  connect_client(&loop, &srv, &c);
  finish(&loop, &srv);
  assert_int_equal(c.connected, 1);
  assert_int_equal(c.eof, 1);
  assert_int_equal(c.closed, 1);
  assert_int_equal(srv.nconns, 0);
  assert_int_equal(srv.state, SERVER_STOPPED);
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                     const uint8_t *value, size_t vl, uint8_t flags, void *ud) {
  client_t *c = ud;
  (void)s, (void)f, (void)flags, (void)vl;
  if (nl == 11 && memcmp(name, "grpc-status", 11) == 0)
    c->grpc_status = atoi((const char *)value);
  return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t sid, uint32_t err, void *ud) {
  client_t *c = ud;
  (void)s, (void)sid, (void)err;
  c->stream_closed++;
  return 0;
}

static ssize_t body_read(nghttp2_session *s, int32_t sid, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *ud) {
  (void)s, (void)sid, (void)src, (void)ud;
  assert_true(len >= 5);
  memset(buf, 0, 5); /* an empty HealthCheckRequest */
  *flags |= NGHTTP2_DATA_FLAG_EOF;
  return 5;
}

#define NV(n, v) {(uint8_t *)n, (uint8_t *)v, sizeof(n) - 1, sizeof(v) - 1, NGHTTP2_NV_FLAG_NONE}

static void test_health_check_then_shutdown(void **state) {
  uv_loop_t loop;
  server_t srv;
  client_t c = {0};
  nghttp2_session_callbacks *cbs;
  nghttp2_nv hdrs[] = {NV(":method", "POST"), NV(":scheme", "http"),
                       NV(":path", "/grpc.health.v1.Health/Check"), NV(":authority", "t"),
                       NV("content-type", "application/grpc"), NV("te", "trailers")};
  nghttp2_data_provider dp = {.read_callback = body_read};
  (void)state;

  uv_loop_init(&loop);
  start_server(&loop, &srv);
  assert_int_equal(nghttp2_session_callbacks_new(&cbs), 0);
  nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
  assert_int_equal(nghttp2_session_client_new(&c.h2, cbs, &c), 0);
  nghttp2_session_callbacks_del(cbs);
  assert_int_equal(nghttp2_submit_settings(c.h2, NGHTTP2_FLAG_NONE, NULL, 0), 0);
  assert_true(nghttp2_submit_request(c.h2, NULL, hdrs, 6, &dp, NULL) > 0);
  connect_client(&loop, &srv, &c);
  finish(&loop, &srv);
  nghttp2_session_del(c.h2);
  assert_int_equal(c.grpc_status, 0);
  assert_int_equal(c.stream_closed, 1);
  assert_int_equal(c.closed, 1);
  assert_int_equal(srv.state, SERVER_STOPPED);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_garbage_is_dropped),
      cmocka_unit_test(test_health_check_then_shutdown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
