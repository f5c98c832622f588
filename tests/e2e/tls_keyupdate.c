/* A TLS 1.3 client that never reads and asks for key updates: after one HTTP/1.1 request
 * (so the connection is past its handshake timeout) it sends KeyUpdate(update_requested)
 * messages, each answered by a KeyUpdate of the server's own, and every 16 of them an
 * application record holding "\r\n" (an empty line the HTTP/1.1 parser skips; it also
 * resets OpenSSL's limit on consecutive KeyUpdates). test_tls.py runs it.
 * usage: tls-keyupdate HOST PORT SECONDS; prints how many it sent. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
  static const unsigned char alpn[] = "\x08http/1.1";
  static const char req[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  struct sockaddr_in a;
  int fd, rcvbuf = 4096;
  SSL_CTX *ctx;
  SSL *ssl;
  time_t end;
  long n = 0;

  if (argc < 4)
    return 2;
  fd = socket(AF_INET, SOCK_STREAM, 0);
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)atoi(argv[2]));
  inet_pton(AF_INET, argv[1], &a.sin_addr);
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
    perror("connect");
    return 1;
  }
  ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1);
  ssl = SSL_new(ctx);
  SSL_set_fd(ssl, fd);
  if (SSL_connect(ssl) != 1) {
    ERR_print_errors_fp(stderr);
    return 1;
  }
  SSL_write(ssl, req, (int)strlen(req));
  end = time(NULL) + atoi(argv[3]);
  while (time(NULL) < end) {
    for (int i = 0; i < 16; i++) {
      if (SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED) != 1 || SSL_do_handshake(ssl) != 1)
        goto out;
      n++;
    }
    if (SSL_write(ssl, "\r\n", 2) != 2)
      goto out;
  }
out:
  printf("%ld\n", n);
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  close(fd);
  return 0;
}
