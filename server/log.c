#include "log.h"

#include "log_limit.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "net/utf8.h"

/* The logger is process-wide, as stderr is: its settings are made once before the loop runs,
 * and only the loop's thread logs (the pool's cancel threads do not). */
static log_format_t log_format = LOG_TEXT;
static FILE *log_stream; /* NULL: stderr */
static unsigned log_rate = LOG_RATE_DEFAULT;
static log_limit_t log_budget;
static int log_budget_ready;

/* Output without blocking (log_start()): lines go straight to the descriptor while it takes
 * them; what it does not take waits in buf, written as poll says the descriptor is writable.
 * A line that does not fit is dropped and counted. Info lines stop at three quarters of the
 * buffer, so that warnings and errors still find room behind a flood. */
static struct {
  uv_loop_t *loop; /* NULL: lines are written at once, blocking (before and after the loop) */
  int fd;          /* the descriptor written: log_start's own opening of it, or it */
  int own_fd;      /* fd was opened here (a pipe or terminal, non-blocking); kept after
                      log_stop() for the last lines, closed by a later log_start() */
  int sock;        /* fd is a socket, shared: written with MSG_DONTWAIT */
  int polling;     /* poll is started */
  uv_poll_t poll;
  uv_timer_t timer; /* the report of lost lines, at the end of the window */
  int gave_up;      /* after log_stop(): the reader took nothing for LOG_STOP_WAIT_MS; drop */
  char *buf;
  size_t head, tail; /* queued bytes: buf[head, tail) */
} out = {.fd = STDERR_FILENO};

void log_set_format(log_format_t f) {
  log_format = f;
}

log_format_t log_get_format(void) {
  return log_format;
}

void log_set_stream(FILE *f) {
  log_stream = f;
}

/* A line being built; output past the end is dropped (the buffer is sized for the largest
 * message escaped, so only a pathological field list is cut). */
typedef struct line {
  char buf[2048 * 6 + 1024];
  size_t n;
} line_t;

static void put(line_t *l, const char *s, size_t len) {
  for (size_t i = 0; i < len && l->n < sizeof(l->buf) - 1; i++)
    l->buf[l->n++] = s[i];
}

static void putf(line_t *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(line_t *l, const char *fmt, ...) {
  va_list ap;
  int m;

  va_start(ap, fmt);
  m = vsnprintf(l->buf + l->n, sizeof(l->buf) - l->n, fmt, ap);
  va_end(ap);
  if (m > 0)
    l->n += (size_t)m < sizeof(l->buf) - l->n ? (size_t)m : sizeof(l->buf) - l->n - 1;
}

/* Text from anywhere (clients included), made safe for one line: in text, control
 * characters and bytes that are not UTF-8 become \xNN; in JSON, a string body with the
 * escapes JSON needs, and bytes that are not UTF-8 as \u00NN of their value; in both, what a
 * terminal or a viewer acts on rather than shows (clue__utf8_unsafe_to_show(): C1, the line
 * separators, the bidirectional marks), as \uXXXX. */
/* raw escaped onto l, up to max bytes of what it writes (0: no bound); past them "..." (within
 * max) ends it, never in the middle of an escape or a character. */
static void put_escaped_max(line_t *l, const char *raw, size_t len, int json, size_t max) {
  size_t start = l->n;

  for (size_t i = 0; i < len;) {
    const unsigned char *c = (const unsigned char *)raw + i;
    size_t seq = *c >= 0x80 ? clue__utf8_len(c, len - i) : (*c >= 0x20 && *c != 0x7F);
    if (max && l->n - start + 6 + 3 > max) { /* the longest escape, and room for "..." */
      put(l, "...", 3);
      return;
    }
    if (seq > 1 && clue__utf8_unsafe_to_show(clue__utf8_value(c, seq))) {
      putf(l, "\\u%04X", (unsigned)clue__utf8_value(c, seq)); /* JSON's escape, plain in text */
      i += seq;
    } else if (seq == 0) {
      if (json)
        putf(l, "\\u%04x", *c);
      else
        putf(l, "\\x%02X", *c);
      i++;
    } else if (*c == '\\' || (json && *c == '"')) { /* in text too: "\\x1B" is no ESC */
      put(l, "\\", 1);
      put(l, raw + i++, 1);
    } else {
      put(l, raw + i, seq);
      i += seq;
    }
  }
}

static void put_time(line_t *l) {
  struct timespec ts;
  struct tm tm;

  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  putf(l, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
       tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
}

static uint64_t now_ms(void) {
  return uv_hrtime() / 1000000;
}

static log_limit_t *budget(void) {
  if (!log_budget_ready) {
    log_limit_init(&log_budget, log_rate, now_ms());
    log_budget_ready = 1;
  }
  return &log_budget;
}

void log_set_rate(unsigned per_second) {
  log_rate = per_second;
  log_budget_ready = 0;
}

/* Write all of p, blocking: before log_start(), and to a file (never slow to take a line). */
static void write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return; /* nowhere to log that the log failed */
    p += w;
    n -= (size_t)w;
  }
}

/* Digits of v, at least width of them, at p; returns the end. */
static char *put_digits(char *p, unsigned long v, int width) {
  char d[24];
  int n = 0;

  do {
    d[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v > 0 && n < (int)sizeof(d));
  while (n < width--)
    *p++ = '0';
  while (n > 0)
    *p++ = d[--n];
  return p;
}

/* The strings of a NUL-terminated list, copied to p (bounded by end); returns the end. */
static char *put_strs(char *p, const char *end, const char *const *s) {
  for (; *s != NULL; s++)
    for (const char *c = *s; *c != '\0' && p < end; c++)
      *p++ = *c;
  return p;
}

void log_signal_line(const char *level, const char *msg) {
  char line[512], *p = line, *const end = line + sizeof(line) - 1;
  struct timespec ts;
  long long days;
  unsigned long doe, yoe, doy, mp, era, sec;
  long long year;
  unsigned long month, day;

  /* gmtime_r may lock: the date from days since 1970-01-01, as in H. Hinnant's
   * civil_from_days (proleptic Gregorian; clocks after 1970 only). */
  clock_gettime(CLOCK_REALTIME, &ts);
  days = ts.tv_sec / 86400 + 719468;
  sec = (unsigned long)(ts.tv_sec % 86400);
  era = (unsigned long)(days / 146097);
  doe = (unsigned long)(days - (long long)era * 146097);
  yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  mp = (5 * doy + 2) / 153;
  day = doy - (153 * mp + 2) / 5 + 1;
  month = mp < 10 ? mp + 3 : mp - 9;
  year = (long long)yoe + (long long)era * 400 + (month <= 2);
  if (log_format == LOG_JSON)
    p = put_strs(p, end, (const char *const[]){"{\"time\":\"", NULL});
  p = put_digits(p, (unsigned long)year, 4);
  *p++ = '-';
  p = put_digits(p, month, 2);
  *p++ = '-';
  p = put_digits(p, day, 2);
  *p++ = 'T';
  p = put_digits(p, sec / 3600, 2);
  *p++ = ':';
  p = put_digits(p, sec / 60 % 60, 2);
  *p++ = ':';
  p = put_digits(p, sec % 60, 2);
  *p++ = '.';
  p = put_digits(p, (unsigned long)ts.tv_nsec / 1000000, 3);
  *p++ = 'Z';
  if (log_format == LOG_JSON)
    p = put_strs(
        p, end, (const char *const[]){"\",\"level\":\"", level, "\",\"msg\":\"", msg, "\"}", NULL});
  else
    p = put_strs(p, end, (const char *const[]){" clued: ", level, ": ", msg, NULL});
  *p++ = '\n';
  write_all(STDERR_FILENO, line, (size_t)(p - line));
}

/* How long log_stop() waits for the reader to take what is queued, and any later line: a
 * reader that stopped reading (a full pipe, a stalled journald) must not keep clued from
 * exiting. */
#define LOG_STOP_WAIT_MS 1000

/* Write p to a non-blocking fd (a socket: with MSG_DONTWAIT) until the loop time until (ms).
 * Returns what it could not write. */
static size_t write_until(int fd, int sock, const char *p, size_t n, uint64_t until) {
  while (n > 0) {
    ssize_t w = sock ? send(fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL) : write(fd, p, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      struct pollfd pf = {.fd = fd, .events = POLLOUT};
      uint64_t now = now_ms();
      if (now >= until || poll(&pf, 1, (int)(until - now)) <= 0)
        return n;
      continue;
    }
    if (w <= 0)
      return n;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static ssize_t out_write(const char *p, size_t n) {
  ssize_t w;

  do
    w = out.sock ? send(out.fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL) : write(out.fd, p, n);
  while (w < 0 && errno == EINTR);
  return w;
}

static void on_writable(uv_poll_t *h, int status, int events);

static void poll_for_room(int on) {
  if (on && !out.polling)
    out.polling = uv_poll_start(&out.poll, UV_WRITABLE, on_writable) == 0;
  else if (!on && out.polling) {
    uv_poll_stop(&out.poll);
    out.polling = 0;
  }
}

/* Write what is queued while the descriptor takes it, at most PIPE_BUF bytes ending at a line's
 * end at a time: a pipe writes those whole, so lines of other writers sharing it never cut
 * into ours. On an error other than "full" the queued lines are lost (a reader gone). */
static void flush_queue(void) {
  while (out.head < out.tail) {
    size_t n = out.tail - out.head;
    ssize_t w;

    if (n > PIPE_BUF) {
      size_t end = PIPE_BUF;
      while (end > 0 && out.buf[out.head + end - 1] != '\n')
        end--;
      n = end > 0 ? end : n; /* a line longer than PIPE_BUF goes as it is */
    }
    w = out_write(out.buf + out.head, n);
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      break;
    if (w <= 0) {
      out.head = out.tail;
      break;
    }
    out.head += (size_t)w;
  }
  if (out.head == out.tail)
    out.head = out.tail = 0;
  poll_for_room(out.head < out.tail);
}

static void on_writable(uv_poll_t *h, int status, int events) {
  (void)h;
  (void)events;
  if (status < 0) { /* the reader is gone: what is queued is lost */
    out.head = out.tail = 0;
    poll_for_room(0);
    return;
  }
  flush_queue();
}

/* One whole line (ending in '\n') to the log's output. Returns 0, or -1 when it was dropped:
 * the buffer had no room for it. */
static int emit(log_level_t lv, const char *line, size_t n) {
  size_t limit;

  if (log_stream) {
    fwrite(line, 1, n, log_stream);
    return 0;
  }
  if (out.loop == NULL && (out.own_fd || out.sock)) {
    /* After log_stop(): its own non-blocking descriptor still, each line bounded in time. */
    if (out.gave_up || write_until(out.fd, out.sock, line, n, now_ms() + LOG_STOP_WAIT_MS) != 0) {
      out.gave_up = 1;
      return -1;
    }
    return 0;
  }
  if (out.loop == NULL) {
    write_all(out.fd, line, n);
    return 0;
  }
  if (out.head == out.tail) {
    ssize_t w = out_write(line, n);
    if (w == (ssize_t)n)
      return 0;
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
      return -1;
    if (w > 0) { /* the rest of a line begun: it must follow, and the buffer is empty */
      line += w;
      n -= (size_t)w;
    }
  }
  limit = lv == LOG_INFO ? LOG_BUFFER_BYTES / 4 * 3 : LOG_BUFFER_BYTES;
  if (out.tail - out.head + n > limit)
    return -1;
  if (out.tail + n > LOG_BUFFER_BYTES) { /* move the queue to the front */
    memmove(out.buf, out.buf + out.head, out.tail - out.head);
    out.tail -= out.head;
    out.head = 0;
  }
  memcpy(out.buf + out.tail, line, n);
  out.tail += n;
  poll_for_room(1);
  return 0;
}

/* A line with fields (log_event(): a call's) is at most this long, newline included, however
 * its text escapes (a byte a client sent can take six): --log-rate then bounds the bytes too. */
#define EVENT_LINE_MAX 1024
/* Of which each field's value written, at most (a request_id is 36 bytes, a method's path
 * some 60; what a client made longer is cut). */
#define EVENT_FIELD_MAX 96

static void format_line(line_t *l, const char *level, const log_field_t *fields, size_t nfields,
                        const char *fmt, va_list ap) {
  static line_t rest; /* a JSON line's fields, written before its message to know their size */
  char raw[2048];
  size_t len, max = 0;
  int m;

  l->n = 0;
  m = vsnprintf(raw, sizeof(raw), fmt, ap);
  len = m < 0 ? 0 : (size_t)m < sizeof(raw) ? (size_t)m : sizeof(raw) - 1;
  if (log_format == LOG_JSON) {
    rest.n = 0;
    put(&rest, "\"", 1);
    for (size_t i = 0; i < nfields; i++) {
      if (fields[i].str == NULL && fields[i].num < 0)
        continue;
      putf(&rest, ",\"%s\":", fields[i].key);
      if (fields[i].str) {
        put(&rest, "\"", 1);
        put_escaped_max(&rest, fields[i].str, strnlen(fields[i].str, 1024), 1, EVENT_FIELD_MAX);
        put(&rest, "\"", 1);
      } else {
        putf(&rest, "%lld", fields[i].num);
      }
    }
    put(&rest, "}", 1);
    put(l, "{\"time\":\"", 9);
    put_time(l);
    putf(l, "\",\"level\":\"%s\",\"msg\":\"", level);
    if (nfields > 0)
      max = l->n + rest.n + 1 < EVENT_LINE_MAX ? EVENT_LINE_MAX - (l->n + rest.n + 1) : 1;
    put_escaped_max(l, raw, len, 1, max);
    put(l, rest.buf, rest.n);
  } else {
    put_time(l);
    putf(l, " clued: %s: ", level);
    if (nfields > 0)
      max = EVENT_LINE_MAX - (l->n + 1);
    put_escaped_max(l, raw, len, 0, max);
  }
  /* put() leaves room for this newline: one write per line keeps lines whole when several
   * processes share a terminal or pipe. */
  l->buf[l->n++] = '\n';
}

static int emit_fmt(log_level_t lv, const char *level, const log_field_t *fields, size_t nfields,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int emit_fmt(log_level_t lv, const char *level, const log_field_t *fields, size_t nfields,
                    const char *fmt, ...) {
  static line_t l;
  va_list ap;

  va_start(ap, fmt);
  format_line(&l, level, fields, nfields, fmt, ap);
  va_end(ap);
  return emit(lv, l.buf, l.n);
}

/* The report of lines lost since the last one: a warning past the budget. When the output
 * cannot take it either, the counts go on and the next report says it all. */
static void report_lost(uint64_t now) {
  log_limit_t *b = budget();
  uint64_t over = 0, full = 0, by[LOG_NLEVELS];
  log_field_t f[5];
  int rc;

  for (int i = 0; i < LOG_NLEVELS; i++) {
    by[i] = b->over[i] + b->full[i];
    over += b->over[i];
    full += b->full[i];
  }
  f[0] = (log_field_t){"dropped", NULL, (long long)(over + full)};
  f[1] = (log_field_t){"dropped_info", NULL, (long long)by[LOG_INFO]};
  f[2] = (log_field_t){"dropped_warn", NULL, (long long)by[LOG_WARN]};
  f[3] = (log_field_t){"dropped_error", NULL, (long long)by[LOG_ERROR]};
  f[4] = (log_field_t){"dropped_full", NULL, (long long)full};
  rc = emit_fmt(LOG_WARN, "warn", f, 5,
                "log: %llu lines not written in the last %.1f s (%llu info, %llu warn, %llu error; "
                "%llu over --log-rate %u a level, %llu for a log output full)",
                (unsigned long long)(over + full), (double)(now - b->since_ms) / 1000.0,
                (unsigned long long)by[LOG_INFO], (unsigned long long)by[LOG_WARN],
                (unsigned long long)by[LOG_ERROR], (unsigned long long)over, b->rate,
                (unsigned long long)full);
  log_limit_reported(b, rc == 0, now);
}

static void on_report_timer(uv_timer_t *t);

/* A report is due when the window in which lines were lost ends, even if no line follows. */
static void report_later(void) {
  log_limit_t *b = budget();
  uint64_t now = now_ms();

  if (out.loop && !uv_is_active((uv_handle_t *)&out.timer))
    uv_timer_start(&out.timer, on_report_timer, b->report_ms > now ? b->report_ms - now : 1, 0);
}

static void on_report_timer(uv_timer_t *t) {
  uint64_t now = now_ms();

  (void)t;
  if (log_limit_tick(budget(), now))
    report_lost(now);
  if (log_limit_dropped(budget()) > 0)
    report_later();
}

static void vlog(const char *level, const log_field_t *fields, size_t nfields, const char *fmt,
                 va_list ap) {
  static line_t l; /* 13 KiB: off the stack of deep callers */
  log_level_t lv = log_level_of(level);
  log_limit_t *b = budget();
  uint64_t now = now_ms();

  if (log_limit_tick(b, now))
    report_lost(now);
  if (!log_limit_take(b, lv, now)) {
    report_later();
    return;
  }
  format_line(&l, level, fields, nfields, fmt, ap);
  if (emit(lv, l.buf, l.n) != 0) {
    log_limit_lost(b, lv, now);
    report_later();
  }
}

void log_msg(const char *level, const char *fmt, ...) {
  va_list ap;

  va_start(ap, fmt);
  vlog(level, NULL, 0, fmt, ap);
  va_end(ap);
}

void log_event(const char *level, const log_field_t *fields, size_t nfields, const char *fmt, ...) {
  va_list ap;

  va_start(ap, fmt);
  vlog(level, fields, nfields, fmt, ap);
  va_end(ap);
}

int log_start(uv_loop_t *loop, int fd) {
  struct stat st;
  int own = -1, flags, rc;

  if (out.loop)
    return UV_EBUSY;
  if (out.own_fd) /* kept by the last log_stop() */
    close(out.fd);
  out.fd = fd;
  out.own_fd = out.sock = out.gave_up = 0;
  if (fstat(fd, &st) != 0)
    return -errno;
  /* A pipe or terminal is opened anew, non-blocking: O_NONBLOCK on the descriptor clued was
   * given would also change it for every process sharing it (the shell's terminal, other
   * writers of the pipe). A socket (journald's stream) cannot be opened anew: it is written
   * with MSG_DONTWAIT. A file is never slow to take a line (nor can it be polled). */
  if (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode)) {
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    own = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (own < 0)
      return -errno;
  } else if (!S_ISSOCK(st.st_mode)) {
    return UV_EINVAL;
  }
  flags = fcntl(fd, F_GETFL);
  rc = uv_poll_init(loop, &out.poll, own >= 0 ? own : fd);
  if (own < 0 && flags >= 0)
    (void)fcntl(fd, F_SETFL, flags); /* uv_poll_init made it non-blocking: as it was */
  if (rc != 0) {
    if (own >= 0)
      close(own);
    return rc;
  }
  out.buf = malloc(LOG_BUFFER_BYTES);
  if (out.buf == NULL) {
    uv_close((uv_handle_t *)&out.poll, NULL);
    if (own >= 0)
      close(own);
    return UV_ENOMEM;
  }
  uv_timer_init(loop, &out.timer);
  uv_unref((uv_handle_t *)&out.poll);
  uv_unref((uv_handle_t *)&out.timer);
  if (own >= 0) {
    out.fd = own;
    out.own_fd = 1;
  } else {
    out.sock = 1;
  }
  out.head = out.tail = 0;
  out.polling = 0;
  out.loop = loop;
  return 0;
}

void log_stop(void) {
  int fd = out.fd;

  if (out.loop == NULL)
    return;
  uv_close((uv_handle_t *)&out.poll, NULL);
  uv_close((uv_handle_t *)&out.timer, NULL);
  out.polling = 0;
  out.loop = NULL;
  /* At exit, what is queued is written while the reader takes it, for LOG_STOP_WAIT_MS at
   * most; so is every later line, through the same descriptor (kept open, non-blocking). A
   * reader that took nothing meanwhile gets nothing more: clued exits regardless. */
  if (write_until(fd, out.sock, out.buf + out.head, out.tail - out.head,
                  now_ms() + LOG_STOP_WAIT_MS) != 0)
    out.gave_up = 1;
  free(out.buf);
  out.buf = NULL;
  out.head = out.tail = 0;
  if (log_limit_dropped(budget()) > 0)
    report_lost(now_ms());
}
