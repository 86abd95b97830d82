/*
** embed_example.c -- how a C test embeds imapmem: copy this file and imapmem.c/.h.
**   cc -std=c11 -Wall -Wextra -pthread -I. test/embed_example.c imapmem.c
** It starts a server on a free port, delivers a message, lets a (tiny) client flag it
** over a real socket, and asserts on the server's state. Run it from the repo root.
*/
#define _POSIX_C_SOURCE 200809L
#include "imapmem.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int passed, failed;
#define CHECK(cond) \
  do { if (cond) passed++; else { failed++; fprintf(stderr, "FAIL line %d: %s\n", __LINE__, #cond); } } while (0)

/* The client under test would go here. This one sends "TAG COMMAND" and reads lines
   until the tagged reply; it returns 1 if that reply is OK. */
static int command(int fd, const char *tag, const char *cmd) {
  char line[4096];
  size_t n = 0;
  dprintf(fd, "%s %s\r\n", tag, cmd);
  for (;;) {
    char ch;
    if (read(fd, &ch, 1) != 1) return 0;           /* connection closed */
    if (n < sizeof line - 1) line[n++] = ch;
    if (ch != '\n') continue;
    line[n] = 0;
    n = 0;
    if (strncmp(line, tag, strlen(tag)) == 0 && line[strlen(tag)] == ' ')
      return strncmp(line + strlen(tag) + 1, "OK", 2) == 0;
  }
}

int main(void) {
  imapmem *srv;
  /* 1. A server with one user whose INBOX holds a fixture. */
  CHECK(imapmem_new(NULL, &srv) == IMAPMEM_OK);
  CHECK(imapmem_add_user(srv, "alice", "secret") == IMAPMEM_OK);
  if (imapmem_load(srv, "alice", "fixtures/basic.mbox") != IMAPMEM_OK)
    fprintf(stderr, "load: %s\n", imapmem_errmsg(srv));   /* errors come back as text */
  /* 2. Listen on a free port; a client may connect as soon as this returns. */
  CHECK(imapmem_start(srv, "127.0.0.1", 0) == IMAPMEM_OK);
  printf("listening on %s\n", imapmem_address(srv));

  /* 3. Deliver a message, as a mail server would. */
  const char msg[] = "From: bob@example.org\r\nSubject: hello\r\n\r\nHi Alice!\r\n";
  uint32_t uid = 0;
  CHECK(imapmem_append(srv, "alice", "INBOX", msg, strlen(msg), NULL, &uid) == IMAPMEM_OK);

  /* 4. The client: connect to imapmem_port() and flag the new message. */
  struct sockaddr_in sa = {0};
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)imapmem_port(srv));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  CHECK(fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0);
  char greeting[512];
  CHECK(read(fd, greeting, sizeof greeting) > 0);   /* "* OK [CAPABILITY ...] ..." */
  char store[64];
  snprintf(store, sizeof store, "UID STORE %u +FLAGS (\\Flagged)", (unsigned)uid);
  CHECK(command(fd, "a1", "LOGIN alice secret"));
  CHECK(command(fd, "a2", "SELECT INBOX"));
  CHECK(command(fd, "a3", store));
  CHECK(command(fd, "a4", "LOGOUT"));
  close(fd);

  /* 5. Assert on the server's state. imapmem_wait() blocks until the condition holds
        (here it already does), so tests never need to sleep. */
  struct imapmem_until until = {.kind = IMAPMEM_UNTIL_FLAG, .user = "alice",
                                .mailbox = "INBOX", .uid = uid, .flag = "\\Flagged"};
  CHECK(imapmem_wait(srv, &until, 5000) == IMAPMEM_OK);
  char *flags = NULL;
  CHECK(imapmem_flags(srv, "alice", "INBOX", uid, &flags) == IMAPMEM_OK);
  CHECK(flags && strstr(flags, "\\Flagged") != NULL);
  imapmem_release(flags);                          /* returned memory is ours to free */

  /* 6. Stop (open sessions get "* BYE") and free: no thread or descriptor is left. */
  CHECK(imapmem_stop(srv) == IMAPMEM_OK);
  imapmem_free(srv);
  printf("%d passed, %d failed\n", passed, failed);
  return failed != 0;
}
