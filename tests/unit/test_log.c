/* The logger against floods and slow readers: the budget of --log-rate per level and its
 * reports (log_limit.c, pure), and the output through a loop (log.c): a pipe that is not read
 * never blocks a log call; lines wait in the buffer, those past it are lost and reported,
 * warnings find room behind info lines, and what waits is written at log_stop(). */

#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "log_limit.h"

static void test_budget_per_level_and_window(void **state) {
  log_limit_t l;

  (void)state;
  log_limit_init(&l, 3, 10000);
  for (int i = 0; i < 3; i++)
    assert_int_equal(log_limit_take(&l, LOG_INFO, 10000 + (uint64_t)i), 1);
  assert_int_equal(log_limit_take(&l, LOG_INFO, 10500), 0);
  assert_int_equal(log_limit_take(&l, LOG_INFO, 10999), 0);
  /* The other levels have their own budgets: an info flood costs them nothing. */
  assert_int_equal(log_limit_take(&l, LOG_WARN, 10999), 1);
  assert_int_equal(log_limit_take(&l, LOG_ERROR, 10999), 1);
  assert_int_equal(l.over[LOG_INFO], 2);
  assert_int_equal(log_limit_dropped(&l), 2);
  /* No report before the window of the first loss ends. */
  assert_int_equal(log_limit_tick(&l, 10999), 0);
  /* A new window: the budget again, and a report due. */
  assert_int_equal(log_limit_tick(&l, 11000), 1);
  assert_int_equal(log_limit_take(&l, LOG_INFO, 11000), 1);
  assert_int_equal(l.since_ms, 10000);
  log_limit_reported(&l, 1, 11000);
  assert_int_equal(log_limit_dropped(&l), 0);
  assert_int_equal(log_limit_tick(&l, 11001), 0);
}

static void test_unlimited_and_lost_lines(void **state) {
  log_limit_t l;

  (void)state;
  log_limit_init(&l, 0, 0);
  for (int i = 0; i < 100000; i++)
    assert_int_equal(log_limit_take(&l, LOG_INFO, 5), 1);
  assert_int_equal(log_limit_dropped(&l), 0);
  /* Lines the output could not take are counted apart. */
  log_limit_lost(&l, LOG_WARN, 5);
  log_limit_lost(&l, LOG_INFO, 6);
  assert_int_equal(l.full[LOG_WARN], 1);
  assert_int_equal(l.full[LOG_INFO], 1);
  assert_int_equal(log_limit_dropped(&l), 2);
  assert_int_equal(log_limit_tick(&l, 999), 0);
  assert_int_equal(log_limit_tick(&l, 1000), 1);
  /* A report the output could not take either: the counts go on, the next a second later. */
  log_limit_reported(&l, 0, 1000);
  assert_int_equal(log_limit_dropped(&l), 2);
  assert_int_equal(log_limit_tick(&l, 1999), 0);
  assert_int_equal(log_limit_tick(&l, 2000), 1);
  log_limit_reported(&l, 1, 2000);
  assert_int_equal(log_limit_tick(&l, 5000), 0);
}

static void test_levels_by_name(void **state) {
  (void)state;
  assert_int_equal(log_level_of("info"), LOG_INFO);
  assert_int_equal(log_level_of("warn"), LOG_WARN);
  assert_int_equal(log_level_of("error"), LOG_ERROR);
  assert_int_equal(log_level_of("debug"), LOG_INFO);
}

/* All that can be read from fd now. */
static size_t drain(int fd, char **all, size_t *n) {
  char buf[65536];
  ssize_t r;
  size_t got = 0;

  while ((r = read(fd, buf, sizeof(buf))) > 0) {
    *all = realloc(*all, *n + (size_t)r + 1);
    memcpy(*all + *n, buf, (size_t)r);
    *n += (size_t)r;
    (*all)[*n] = '\0';
    got += (size_t)r;
  }
  return got;
}

/* A reader of a pipe (non-blocking) for a while, as a log collector reads while clued stops. */
typedef struct reader {
  int fd;
  char *all;
  size_t n;
} reader_t;

static void *read_for_a_while(void *arg) {
  reader_t *r = arg;

  for (int i = 0; i < 300; i++) { /* 0.3 s */
    drain(r->fd, &r->all, &r->n);
    usleep(1000);
  }
  return NULL;
}

static size_t count(const char *s, const char *what) {
  size_t k = 0;

  for (const char *p = s; (p = strstr(p, what)) != NULL; p += strlen(what))
    k++;
  return k;
}

static void on_tick(uv_timer_t *t) {
  (void)t;
}

static void test_unread_pipe_never_blocks(void **state) {
  uv_loop_t loop;
  uv_timer_t alive; /* the logger's handles keep no loop running: the server's do, this here */
  int fds[2];
  char *all = NULL;
  size_t n = 0;
  int flags;

  (void)state;
  alarm(60); /* a log call that blocked would hang here: fail instead */
  assert_int_equal(pipe(fds), 0);
  (void)fcntl(fds[1], F_SETPIPE_SZ, 4096);
  flags = fcntl(fds[1], F_GETFL);
  assert_false(flags & O_NONBLOCK);
  assert_int_equal(uv_loop_init(&loop), 0);
  uv_timer_init(&loop, &alive);
  uv_timer_start(&alive, on_tick, 1, 1);
  log_set_rate(0);
  assert_int_equal(log_start(&loop, fds[1]), 0);
  /* The given descriptor keeps its flags: others may share it. */
  assert_int_equal(fcntl(fds[1], F_GETFL), flags);

  /* 4 MiB of info lines into a pipe of 4 KiB nobody reads: every call returns at once. */
  for (int i = 0; i < 4096; i++)
    log_info("line %d %0*d", i, 1000, 0);
  /* Warnings still find room behind the info lines' share of the buffer. */
  for (int i = 0; i < 10; i++)
    log_warn("warning %d", i);

  /* Read while the loop writes what waits. */
  (void)fcntl(fds[0], F_SETFL, O_NONBLOCK);
  for (int idle = 0; idle < 50;) {
    uv_run(&loop, UV_RUN_NOWAIT);
    idle = drain(fds[0], &all, &n) ? 0 : idle + 1;
    usleep(1000);
  }
  assert_non_null(all);
  assert_int_equal(count(all, "clued: warn: warning "), 10);
  assert_true(count(all, "clued: info: line ") > 500);
  assert_true(count(all, "clued: info: line ") < 1000); /* 3/4 MiB of 1 KiB lines, and a few */
  assert_true(all[n - 1] == '\n');

  /* The report comes at the end of the window, from the loop's timer. */
  log_info("after");
  for (int i = 0; i < 1500 && count(all, "lines not written") == 0; i++) {
    uv_run(&loop, UV_RUN_NOWAIT);
    drain(fds[0], &all, &n);
    usleep(1000);
  }
  assert_int_equal(count(all, "lines not written"), 1);
  assert_non_null(strstr(all, "0 over --log-rate 0 a level"));
  assert_int_equal(count(all, "clued: info: after"), 1);

  /* At stop, what waits is written while the reader takes it, and so are later lines. */
  log_info("queued %0*d", 5000, 0);
  {
    reader_t r = {fds[0], all, n};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, read_for_a_while, &r), 0);
    log_stop();
    log_info("after stop");
    assert_int_equal(pthread_join(t, NULL), 0);
    all = r.all;
    n = r.n;
  }
  drain(fds[0], &all, &n);
  uv_close((uv_handle_t *)&alive, NULL);
  assert_int_equal(count(all, "clued: info: queued"), 1);
  assert_int_equal(count(all, "clued: info: after stop"), 1);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
  close(fds[0]);
  close(fds[1]);
  free(all);
  log_set_rate(LOG_RATE_DEFAULT);
  alarm(0);
}

/* A reader that stopped reading (its pipe full) keeps nothing from ending: log_stop() gives
 * up on what waits after a second, and every line after it returns at once. It used to write
 * what waited blocking, and clued, stopped, never exited. */
static void test_a_reader_that_stopped_holds_no_exit(void **state) {
  uv_loop_t loop;
  uv_timer_t alive;
  int fds[2];

  (void)state;
  alarm(20); /* a log_stop() or a line after it that blocked would hang here: fail instead */
  assert_int_equal(pipe(fds), 0);
  (void)fcntl(fds[1], F_SETPIPE_SZ, 4096);
  assert_int_equal(uv_loop_init(&loop), 0);
  uv_timer_init(&loop, &alive);
  uv_timer_start(&alive, on_tick, 1, 1);
  log_set_rate(0);
  assert_int_equal(log_start(&loop, fds[1]), 0);
  for (int i = 0; i < 64; i++) /* 64 KiB: the pipe full, the rest queued */
    log_warn("line %d %0*d", i, 1000, 0);
  log_stop();
  for (int i = 0; i < 10; i++)
    log_warn("after stop %d", i);
  uv_close((uv_handle_t *)&alive, NULL);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
  close(fds[0]);
  close(fds[1]);
  log_set_rate(LOG_RATE_DEFAULT);
  alarm(0);
}

static void test_file_is_written_at_once(void **state) {
  uv_loop_t loop;
  char path[] = "/tmp/clued-test-log-XXXXXX";
  int fd = mkstemp(path);
  char buf[256] = "";

  (void)state;
  assert_true(fd >= 0);
  unlink(path);
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(log_start(&loop, fd), UV_EINVAL);
  log_info("to a file");
  assert_true(pread(fd, buf, sizeof(buf) - 1, 0) > 0);
  assert_non_null(strstr(buf, "clued: info: to a file\n"));
  log_stop(); /* not started: nothing */
  assert_int_equal(uv_loop_close(&loop), 0);
  close(fd);
}

/* One log_event() line written to a stream, in buf; returns its length. */
static size_t event_line(log_format_t format, const log_field_t *f, size_t nf, const char *msg,
                         char *buf, size_t cap) {
  FILE *mem = tmpfile();
  size_t n;

  assert_non_null(mem);
  log_set_format(format);
  log_set_stream(mem);
  log_event("info", f, nf, "call 7 %s: INVALID_ARGUMENT: %s", "/x", msg);
  log_set_stream(NULL);
  log_set_format(LOG_TEXT);
  rewind(mem);
  n = fread(buf, 1, cap - 1, mem);
  buf[n] = '\0';
  fclose(mem);
  return n;
}

static void test_a_call_line_stays_under_a_kib_however_it_escapes(void **state) {
  static char rid[1025], path[5001], msg[601], buf[16384];
  log_field_t f[] = {
      {"call", "c7", 0},        {"method", path, 0},     {"code", "INVALID_ARGUMENT", 0},
      {"duration_ms", NULL, 3}, {"request_id", rid, -1},
  };
  log_field_t plain[] = {{"call", "c8", 0},
                         {"request_id", "3f1c2a9e-0000-4000-8000-000000000001", -1}};
  size_t n;

  (void)state;
  log_set_rate(0);
  memset(rid, 0x01, sizeof(rid) - 1);
  memset(path, 0xFF, sizeof(path) - 1);
  memset(msg, 0x02, sizeof(msg) - 1);
  /* Each byte escapes to six (JSON's \u0001) or four (text's \xFF): 6 KiB before. */
  n = event_line(LOG_JSON, f, sizeof(f) / sizeof(f[0]), msg, buf, sizeof(buf));
  assert_true(n <= 1024);
  assert_int_equal(buf[n - 1], '\n');
  assert_int_equal(buf[n - 2], '}');
  assert_non_null(strstr(buf, "\"request_id\":\"\\u0001"));
  assert_non_null(strstr(buf, "...\",\"code\":")); /* the method's path, cut */
  assert_non_null(strstr(buf, "...\"}\n"));        /* the request_id, cut */
  assert_non_null(strstr(buf, "\"duration_ms\":3,"));
  n = event_line(LOG_TEXT, f, sizeof(f) / sizeof(f[0]), path, buf, sizeof(buf));
  assert_true(n <= 1024);
  assert_non_null(strstr(buf, "\\xFF...\n"));
  /* A backslash the client sent is told from an escape clued wrote, in text too. */
  n = event_line(LOG_TEXT, plain, 2, "\\x1B\x1b", buf, sizeof(buf));
  assert_non_null(strstr(buf, "INVALID_ARGUMENT: \\\\x1B\\x1B\n"));
  /* What is short is whole. */
  n = event_line(LOG_JSON, plain, 2, "clue not found", buf, sizeof(buf));
  assert_non_null(strstr(buf,
                         "\"msg\":\"call 7 /x: INVALID_ARGUMENT: clue not found\",\"call\":\"c8\","
                         "\"request_id\":\"3f1c2a9e-0000-4000-8000-000000000001\"}\n"));
  log_set_rate(1000);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_budget_per_level_and_window),
      cmocka_unit_test(test_unlimited_and_lost_lines),
      cmocka_unit_test(test_levels_by_name),
      cmocka_unit_test(test_unread_pipe_never_blocks),
      cmocka_unit_test(test_a_reader_that_stopped_holds_no_exit),
      cmocka_unit_test(test_file_is_written_at_once),
      cmocka_unit_test(test_a_call_line_stays_under_a_kib_however_it_escapes),
  };

  signal(SIGPIPE, SIG_IGN);
  return cmocka_run_group_tests(tests, NULL, NULL);
}
