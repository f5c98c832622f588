#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clue/client.h"
#include "mem.h"

int64_t clue__net_now_ms(void) {
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int valid_port(const char *p, size_t len) {
  unsigned long v = 0;

  if (len == 0 || len > 5)
    return 0;
  for (size_t i = 0; i < len; i++) {
    if (p[i] < '0' || p[i] > '9')
      return 0;
    v = v * 10 + (unsigned long)(p[i] - '0');
  }
  return v >= 1 && v <= 65535;
}

static int valid_host(const char *h, size_t len) {
  if (len == 0)
    return 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)h[i];
    if (ch <= 0x20 || ch == 0x7f || ch == '/' || ch == '[' || ch == ']' || ch == '@')
      return 0;
  }
  return 1;
}

int clue__net_parse_target(const char *target, const char *default_port, char **host, char **port) {
  const char *h, *p = NULL;
  size_t hlen, plen = 0;
  char *hs, *ps;

  if (target == NULL)
    return CLUE_EINVAL;
  if (target[0] == '[') {
    const char *close = strchr(target, ']');
    if (close == NULL)
      return CLUE_EINVAL;
    h = target + 1;
    hlen = (size_t)(close - h);
    if (close[1] == ':') {
      p = close + 2;
      plen = strlen(p);
    } else if (close[1] != '\0') {
      return CLUE_EINVAL;
    }
    if (memchr(h, ':', hlen) == NULL) /* brackets are for IPv6 addresses only */
      return CLUE_EINVAL;
  } else {
    const char *colon = strchr(target, ':');
    h = target;
    if (colon != NULL && strchr(colon + 1, ':') == NULL) {
      hlen = (size_t)(colon - target);
      p = colon + 1;
      plen = strlen(p);
    } else {
      hlen = strlen(target); /* no colon, or a bare IPv6 address */
    }
  }
  if (hlen > 0 && h[0] != '[' && memchr(h, ':', hlen) != NULL) {
    /* an IPv6 address: only hex digits, colons, dots and a %zone are allowed */
    for (size_t i = 0; i < hlen; i++)
      if (strchr("0123456789abcdefABCDEF:.%", h[i]) == NULL && memchr(h, '%', i) == NULL)
        return CLUE_EINVAL;
  } else if (!valid_host(h, hlen)) {
    return CLUE_EINVAL;
  }
  if (p != NULL && !valid_port(p, plen))
    return CLUE_EINVAL;
  if (p == NULL) {
    p = default_port;
    plen = strlen(default_port);
  }
  hs = clue__strndup(h, hlen);
  ps = clue__strndup(p, plen);
  if (hs == NULL || ps == NULL) {
    free(hs);
    free(ps);
    return CLUE_ENOMEM;
  }
  *host = hs;
  *port = ps;
  return 0;
}

int clue__net_cancelled(const volatile sig_atomic_t *cancel) {
  return cancel != NULL && __atomic_load_n(cancel, __ATOMIC_RELAXED) != 0;
}

int clue__net_poll_timeout(int64_t deadline, const volatile sig_atomic_t *cancel) {
  int64_t limit = cancel != NULL ? CLUE_CANCEL_CHECK_MS : deadline != 0 ? 60000 : -1;

  if (deadline != 0) {
    int64_t left = deadline - clue__net_now_ms();
    if (left < 1)
      left = 1;
    if (left < limit)
      limit = left;
  }
  return (int)limit;
}

/* One address: returns 0 and the socket, or an errno value (ETIMEDOUT, ECANCELED, ...). */
static int connect_one(const struct addrinfo *ai, int64_t deadline,
                       const volatile sig_atomic_t *cancel, int *out) {
  int fd, err = 0, one = 1;
  socklen_t errlen = sizeof(err);

  fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
  if (fd < 0)
    return errno;
  if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
    if (errno != EINPROGRESS) {
      err = errno;
      close(fd);
      return err;
    }
    for (;;) {
      struct pollfd pfd = {.fd = fd, .events = POLLOUT};
      int64_t left = deadline - clue__net_now_ms();
      int n;
      if (clue__net_cancelled(cancel)) {
        close(fd);
        return ECANCELED;
      }
      if (left <= 0) {
        close(fd);
        return ETIMEDOUT;
      }
      n = poll(&pfd, 1, clue__net_poll_timeout(deadline, cancel));
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0) {
        err = errno;
        close(fd);
        return err;
      }
      if (n > 0)
        break;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &errlen) != 0)
      err = errno;
    if (err != 0) {
      close(fd);
      return err;
    }
  }
  /* Small request and reply frames must not wait for Nagle. */
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  *out = fd;
  return 0;
}

int clue__net_connect(const char *host, const char *port, int64_t deadline,
                      const volatile sig_atomic_t *cancel, int *fd, net_fail_t *why,
                      const char **detail) {
  struct addrinfo hints, *res = NULL;
  int rv, last = 0, refused = 0;

  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  rv = getaddrinfo(host, port, &hints, &res);
  if (rv != 0) {
    if (rv == EAI_MEMORY) {
      *why = NET_FAIL_NOMEM;
      *detail = "";
    } else {
      *why = NET_FAIL_RESOLVE;
      *detail = rv == EAI_SYSTEM ? strerror(errno) : gai_strerror(rv);
    }
    return -1;
  }
  for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
    last = connect_one(ai, deadline, cancel, fd);
    if (last == 0) {
      freeaddrinfo(res);
      return 0;
    }
    if (last == ECONNREFUSED)
      refused = 1;
    if (last == ETIMEDOUT || last == ECANCELED || last == ENOMEM || last == ENOBUFS)
      break;
  }
  freeaddrinfo(res);
  *detail = "";
  if (last == ECANCELED) {
    *why = NET_FAIL_CANCELLED;
  } else if (last == ETIMEDOUT) {
    *why = NET_FAIL_TIMEOUT;
  } else if (last == ENOMEM || last == ENOBUFS) {
    *why = NET_FAIL_NOMEM;
  } else if (refused || last == ECONNREFUSED) {
    *why = NET_FAIL_REFUSED;
  } else {
    *why = NET_FAIL_OTHER;
    *detail = strerror(last);
  }
  return -1;
}
