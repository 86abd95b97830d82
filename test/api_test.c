/*
** api_test.c -- in-process tests of the embedding API, through imapmem.h only, as a C
** test that embeds imapmem would use it: every function, its errors and ownership rules,
** and what a socket client sees (serve_fd, append while selected/idling, reset, stop,
** trace, capabilities, faults). Built with ASan+UBSan by make test. Run from the repo
** root (fixtures/ is relative). Prints "N passed, N failed" last; exits 1 on failure.
*/
#define _GNU_SOURCE
#include "imapmem.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int passed, failed;
#define CHECK(cond)                                                         \
  do {                                                                      \
    if (cond) passed++;                                                     \
    else {                                                                  \
      failed++;                                                             \
      fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);       \
    }                                                                       \
  } while (0)
/* CHECK with a note printed on failure (the server's errmsg, the response seen). */
#define CHECKM(cond, ...)                                                   \
  do {                                                                      \
    if (cond) passed++;                                                     \
    else {                                                                  \
      failed++;                                                             \
      fprintf(stderr, "FAIL %s:%d: %s\n    ", __FILE__, __LINE__, #cond);   \
      fprintf(stderr, __VA_ARGS__);                                         \
      fputc('\n', stderr);                                                  \
    }                                                                       \
  } while (0)

#define BASIC "fixtures/basic.mbox"
#define TREE "fixtures/tree"
#define BAD "fixtures/bad/not-mbox.mbox"
#define IO_TIMEOUT 5000

/* Message 1 of basic.mbox as clients see it: Status/X-Status removed, CRLF, the blank
   line before the next From line belongs to the mbox format. */
static const char MSG1[] =
  "Return-Path: <alice@example.com>\r\n"
  "From: Alice Example <alice@example.com>\r\n"
  "To: Test User <test@example.com>\r\n"
  "Subject: First message\r\n"
  "Date: Mon, 23 Nov 2026 09:00:00 +0000\r\n"
  "Message-ID: <basic-1@example.com>\r\n"
  "MIME-Version: 1.0\r\n"
  "Content-Type: text/plain; charset=us-ascii\r\n"
  "\r\n"
  "Hello Test,\r\n"
  "\r\n"
  "This is the first message. It has been read and answered.\r\n"
  "-- \r\n"
  "Alice\r\n";

static const char NEWMSG[] =
  "From: Bob <bob@example.org>\r\n"
  "To: alice@example.com\r\n"
  "Subject: delivered\r\n"
  "\r\n"
  "Delivered by imapmem_append, marker ZQXJ-BODY.\r\n";

static long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/*
** ---------------------------------------------------------------------------
** A small IMAP client over a descriptor (TCP socket or socketpair end)
** ---------------------------------------------------------------------------
*/
struct conn {
  int fd;
  int ntag;
  int eof;             /* the server closed the connection */
  char *resp;          /* untagged responses of the last command (NUL-terminated) */
  size_t rlen, rcap;
  char tagged[2048];   /* the last tagged line, without tag and CRLF ("" if none) */
  char greeting[2048];
  char buf[65536];     /* bytes read but not consumed */
  size_t blen;
};

static void resp_add(struct conn *c, const char *p, size_t n) {
  if (c->rlen + n + 1 > c->rcap) {
    size_t cap = c->rcap ? c->rcap : 4096;
    while (cap < c->rlen + n + 1) cap *= 2;
    char *q = realloc(c->resp, cap);
    if (!q) abort();
    c->resp = q;
    c->rcap = cap;
  }
  memcpy(c->resp + c->rlen, p, n);
  c->rlen += n;
  c->resp[c->rlen] = 0;
}

static void resp_clear(struct conn *c) {
  c->rlen = 0;
  if (c->resp) c->resp[0] = 0;
}

/* Read more bytes: 1 on data, 0 on EOF, -1 on timeout or error. */
static int conn_fill(struct conn *c, int timeout_ms) {
  if (c->blen == sizeof c->buf) return -1;
  struct pollfd p = {c->fd, POLLIN, 0};
  int r = poll(&p, 1, timeout_ms);
  if (r <= 0) return -1;
  ssize_t n = read(c->fd, c->buf + c->blen, sizeof c->buf - c->blen);
  if (n < 0 && errno == ECONNRESET) n = 0;
  if (n < 0) return -1;
  if (n == 0) {
    c->eof = 1;
    return 0;
  }
  c->blen += (size_t)n;
  return 1;
}

static void conn_take(struct conn *c, size_t n) {
  resp_add(c, c->buf, n);
  memmove(c->buf, c->buf + n, c->blen - n);
  c->blen -= n;
}

/* Append one response line (following {n} literals) to c->resp; returns its offset in
   c->resp, or -1 on EOF/timeout. */
static long conn_line(struct conn *c, int timeout_ms) {
  long start = (long)c->rlen;
  for (;;) {
    char *nl = memchr(c->buf, '\n', c->blen);
    if (!nl) {
      if (conn_fill(c, timeout_ms) <= 0) return -1;
      continue;
    }
    conn_take(c, (size_t)(nl - c->buf) + 1);
    /* a literal "{n}\r\n" at the end of the line: its bytes, then the rest of the line */
    size_t L = c->rlen;
    if (L >= 4 && c->resp[L - 1] == '\n' && c->resp[L - 2] == '\r' && c->resp[L - 3] == '}') {
      size_t i = L - 4;
      while (i > (size_t)start && c->resp[i] >= '0' && c->resp[i] <= '9') i--;
      if (c->resp[i] == '{' && i < L - 4) {
        size_t n = strtoul(c->resp + i + 1, NULL, 10);
        while (c->blen < n)
          if (conn_fill(c, timeout_ms) <= 0) return -1;
        conn_take(c, n);
        continue;
      }
    }
    return start;
  }
}

static void conn_send(struct conn *c, const char *s, size_t n) {
  while (n > 0) {
    ssize_t w = send(c->fd, s, n, MSG_NOSIGNAL);
    if (w < 0 && errno == ENOTSOCK) w = write(c->fd, s, n);
    if (w <= 0) return;
    s += w;
    n -= (size_t)w;
  }
}

static void conn_sendf(struct conn *c, const char *fmt, ...) {
  char line[8192];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  conn_send(c, line, (size_t)n);
}

/* Read responses until the line tagged tag; untagged ones stay in c->resp. Returns
   c->tagged, "" if the connection ended first. */
static const char *conn_until_tagged(struct conn *c, const char *tag, int timeout_ms) {
  size_t tl = strlen(tag);
  c->tagged[0] = 0;
  for (;;) {
    long off = conn_line(c, timeout_ms);
    if (off < 0) return c->tagged;
    char *line = c->resp + off;
    if (strncmp(line, tag, tl) == 0 && line[tl] == ' ') {
      size_t n = strcspn(line + tl + 1, "\r\n");
      if (n >= sizeof c->tagged) n = sizeof c->tagged - 1;
      memcpy(c->tagged, line + tl + 1, n);
      c->tagged[n] = 0;
      c->rlen = (size_t)off;
      c->resp[off] = 0;
      return c->tagged;
    }
  }
}

/* Send "tN COMMAND" and read to its tagged reply: returns the tagged text ("OK ..."). */
static const char *cmd(struct conn *c, const char *fmt, ...) {
  char tag[16], line[8192];
  snprintf(tag, sizeof tag, "t%d", ++c->ntag);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  resp_clear(c);
  conn_sendf(c, "%s %s\r\n", tag, line);
  return conn_until_tagged(c, tag, IO_TIMEOUT);
}

static int ok(const char *tagged) { return strncmp(tagged, "OK", 2) == 0; }
static int is_bad(const char *tagged) { return strncmp(tagged, "BAD", 3) == 0; }

/* Read until the server closes: 1 if it did within timeout_ms. c->resp gets the rest. */
static int conn_read_eof(struct conn *c, int timeout_ms) {
  long end = now_ms() + timeout_ms;
  resp_clear(c);
  for (;;) {
    if (c->blen) conn_take(c, c->blen);
    long left = end - now_ms();
    if (left <= 0) return 0;
    int r = conn_fill(c, (int)left);
    if (r == 0) {
      if (c->blen) conn_take(c, c->blen);
      return 1;
    }
    if (r < 0) return 0;
  }
}

static struct conn *conn_new(int fd) {
  struct conn *c = calloc(1, sizeof *c);
  if (!c) abort();
  c->fd = fd;
  resp_add(c, "", 0);
  long off = conn_line(c, IO_TIMEOUT);
  if (off >= 0) snprintf(c->greeting, sizeof c->greeting, "%s", c->resp + off);
  resp_clear(c);
  return c;
}

static void conn_free(struct conn *c) {
  if (!c) return;
  if (c->fd >= 0) close(c->fd);
  free(c->resp);
  free(c);
}

static int tcp_socket(int port) {
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static struct conn *tcp_conn(imapmem *srv) {
  int fd = tcp_socket(imapmem_port(srv));
  return fd < 0 ? NULL : conn_new(fd);
}

/* A TCP connection logged in as alice. */
static struct conn *login_conn(imapmem *srv) {
  struct conn *c = tcp_conn(srv);
  if (c && !ok(cmd(c, "LOGIN alice secret"))) {
    conn_free(c);
    return NULL;
  }
  return c;
}

/* A session served on a socketpair by imapmem_serve_fd (preauth as user, or NULL). */
static struct conn *pair_conn(imapmem *srv, const char *user) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return NULL;
  if (imapmem_serve_fd(srv, sv[0], sv[0], user) != IMAPMEM_OK) {
    fprintf(stderr, "serve_fd: %s\n", imapmem_errmsg(srv));
    close(sv[0]);
    close(sv[1]);
    return NULL;
  }
  return conn_new(sv[1]);
}

/* The number in "[NAME n]" or "* n NAME" within text; -1 if absent. */
static long code_num(const char *text, const char *name) {
  char pat[64];
  snprintf(pat, sizeof pat, "[%s ", name);
  const char *p = text ? strstr(text, pat) : NULL;
  return p ? strtol(p + strlen(pat), NULL, 10) : -1;
}

static long exists_num(const char *text) {
  long v = -1;
  for (const char *p = text; p && (p = strstr(p, "* ")) != NULL; p += 2) {
    char *end;
    long n = strtol(p + 2, &end, 10);
    if (end != p + 2 && strncmp(end, " EXISTS", 7) == 0) v = n;
  }
  return v;
}

/* Is word a space-delimited token of the CAPABILITY line in text? */
static int has_cap(const char *text, const char *word) {
  const char *p = strstr(text, "CAPABILITY");
  if (!p) return 0;
  size_t n = strlen(word), line = strcspn(p, "\r\n]");
  for (const char *q = p; (q = strstr(q, word)) != NULL && q < p + line; q++)
    if (q[-1] == ' ' && (q[n] == ' ' || q[n] == '\r' || q[n] == ']' || q[n] == '\n' || !q[n]))
      return 1;
  return 0;
}

/* The bytes of the first literal in text ("{n}\r\n..."), into out; its length or -1. */
static long first_literal(const char *text, const char **out) {
  for (const char *p = text; (p = strchr(p, '{')) != NULL; p++) {
    char *end;
    long n = strtol(p + 1, &end, 10);
    if (end != p + 1 && strncmp(end, "}\r\n", 3) == 0) {
      *out = end + 3;
      return n;
    }
  }
  return -1;
}

/*
** ---------------------------------------------------------------------------
** Flag sets and servers
** ---------------------------------------------------------------------------
*/

/* Do the space-separated flag lists hold the same flags (any order, ignoring case)? */
static int flags_eq(const char *got, const char *want) {
  if (!got || !want) return 0;
  char g[1024], w[1024];
  snprintf(g, sizeof g, "%s", got);
  snprintf(w, sizeof w, "%s", want);
  int ng = 0, nw = 0;
  char *sv, *t;
  for (t = strtok_r(w, " ", &sv); t; t = strtok_r(NULL, " ", &sv)) {
    nw++;
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", got);
    int found = 0;
    char *sv2;
    for (char *u = strtok_r(tmp, " ", &sv2); u; u = strtok_r(NULL, " ", &sv2))
      if (strcasecmp(u, t) == 0) found = 1;
    if (!found) return 0;
  }
  for (t = strtok_r(g, " ", &sv); t; t = strtok_r(NULL, " ", &sv)) ng++;
  return ng == nw;
}

/* System flags come before keywords. */
static int system_flags_first(const char *flags) {
  int seen_keyword = 0;
  char f[1024];
  snprintf(f, sizeof f, "%s", flags);
  char *sv;
  for (char *t = strtok_r(f, " ", &sv); t; t = strtok_r(NULL, " ", &sv)) {
    if (t[0] == '\\' && seen_keyword) return 0;
    if (t[0] != '\\') seen_keyword = 1;
  }
  return 1;
}

/* Is line one of the "\n"-terminated lines of text? */
static int has_line(const char *text, const char *line) {
  size_t n = strlen(line);
  for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
    if (strncmp(p, line, n) == 0 && p[n] == '\n') return 1;
  return 0;
}

static int flags_of_are(imapmem *srv, const char *box, uint32_t uid, const char *want) {
  char *f = NULL;
  int rc = imapmem_flags(srv, "alice", box, uid, &f);
  int r = rc == IMAPMEM_OK && flags_eq(f, want);
  if (!r) fprintf(stderr, "    flags of %s uid %u: rc %d, \"%s\", want \"%s\"\n", box,
                  (unsigned)uid, rc, f ? f : "(null)", want);
  imapmem_release(f);
  return r;
}

static size_t count_of(imapmem *srv, const char *box) {
  size_t n = (size_t)-1;
  if (imapmem_count(srv, "alice", box, &n) != IMAPMEM_OK) return (size_t)-1;
  return n;
}

/* A server with user alice/secret whose INBOX holds basic.mbox, UIDVALIDITY 42. */
static imapmem *basic_server(void) {
  struct imapmem_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.uidvalidity = 42;
  imapmem *srv = NULL;
  if (imapmem_new(&cfg, &srv) != IMAPMEM_OK) return NULL;
  if (imapmem_add_user(srv, "alice", "secret") != IMAPMEM_OK ||
      imapmem_load(srv, "alice", BASIC) != IMAPMEM_OK) {
    fprintf(stderr, "basic_server: %s\n", imapmem_errmsg(srv));
    imapmem_free(srv);
    return NULL;
  }
  return srv;
}

static imapmem *started_server(void) {
  imapmem *srv = basic_server();
  if (srv && imapmem_start(srv, "127.0.0.1", 0) != IMAPMEM_OK) {
    fprintf(stderr, "start: %s\n", imapmem_errmsg(srv));
    imapmem_free(srv);
    return NULL;
  }
  return srv;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st; (void)flag; (void)ftw;
  return remove(path);
}

static void rm_tree(const char *dir) {
  nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int file_exists(const char *dir, const char *name) {
  char p[4096];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  struct stat st;
  return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/*
** ---------------------------------------------------------------------------
** The tests
** ---------------------------------------------------------------------------
*/

/* The user's mailbox names as "INBOX\nSent\n" (free() it): imapmem_mailboxes, joined. */
static int mailbox_lines(imapmem *srv, const char *user, char **out) {
  char **names;
  size_t n;
  *out = NULL;
  int rc = imapmem_mailboxes(srv, user, &names, &n);
  if (rc != IMAPMEM_OK) return rc;
  size_t len = 1;
  for (size_t i = 0; i < n; i++) len += strlen(names[i]) + 1;
  char *s = malloc(len), *p = s;
  for (size_t i = 0; s && i < n; i++) p += sprintf(p, "%s\n", names[i]);
  if (s) *p = 0;
  if (names[n] != NULL) rc = IMAPMEM_ERROR;     /* the array ends in NULL */
  imapmem_release(names);
  *out = s;
  return s ? rc : IMAPMEM_NOMEM;
}

static void test_misuse(void) {
  imapmem *srv = NULL;
  CHECK(imapmem_new(NULL, NULL) == IMAPMEM_MISUSE);
  imapmem_free(NULL);                            /* a harmless no-op */
  imapmem_release(NULL);
  CHECK(imapmem_add_user(NULL, "a", "b") == IMAPMEM_MISUSE);
  CHECK(imapmem_load(NULL, "a", BASIC) == IMAPMEM_MISUSE);
  CHECK(imapmem_load_mbox(NULL, "a", "INBOX", "", 0, NULL) == IMAPMEM_MISUSE);
  CHECK(imapmem_start(NULL, "127.0.0.1", 0) == IMAPMEM_MISUSE);
  CHECK(imapmem_port(NULL) == -1);
  CHECK(imapmem_stop(NULL) == IMAPMEM_MISUSE);
  CHECK(imapmem_serve_fd(NULL, -1, -1, NULL) == IMAPMEM_MISUSE);
  uint32_t uid;
  CHECK(imapmem_append(NULL, "a", "INBOX", "x", 1, NULL, &uid) == IMAPMEM_MISUSE);
  char *s;
  size_t n;
  uint32_t *uids;
  CHECK(mailbox_lines(NULL, "a", &s) == IMAPMEM_MISUSE);
  CHECK(imapmem_count(NULL, "a", "INBOX", &n) == IMAPMEM_MISUSE);
  CHECK(imapmem_uids(NULL, "a", "INBOX", &uids, &n) == IMAPMEM_MISUSE);
  CHECK(imapmem_flags(NULL, "a", "INBOX", 1, &s) == IMAPMEM_MISUSE);
  CHECK(imapmem_message(NULL, "a", "INBOX", 1, &s, &n) == IMAPMEM_MISUSE);
  CHECK(imapmem_reset(NULL) == IMAPMEM_MISUSE);
  CHECK(imapmem_save(NULL, "a", "/tmp") == IMAPMEM_MISUSE);
  struct imapmem_until u;
  memset(&u, 0, sizeof u);
  u.kind = IMAPMEM_UNTIL_NO_SESSIONS;
  CHECK(imapmem_wait(NULL, &u, 10) == IMAPMEM_MISUSE);
  CHECK(imapmem_set_trace(NULL, NULL, NULL) == IMAPMEM_MISUSE);
  CHECK(imapmem_set_capability(NULL, "MOVE", 0) == IMAPMEM_MISUSE);
  CHECK(imapmem_fault(NULL, "NOOP=NO x") == IMAPMEM_MISUSE);
  CHECK(imapmem_clear_faults(NULL) == IMAPMEM_MISUSE);

  /* on a real handle: NULL out arguments and NULL required strings */
  CHECK(imapmem_new(NULL, &srv) == IMAPMEM_OK && srv != NULL);
  if (!srv) return;
  CHECK(strcmp(imapmem_errmsg(srv), "") == 0);    /* "" if no error yet */
  CHECK(imapmem_add_user(srv, "alice", "secret") == IMAPMEM_OK);
  CHECK(imapmem_add_user(srv, NULL, "x") == IMAPMEM_MISUSE);
  CHECK(imapmem_load(srv, "alice", NULL) == IMAPMEM_MISUSE);
  CHECK(imapmem_mailboxes(srv, "alice", NULL, &n) == IMAPMEM_MISUSE);
  char **names_only;
  CHECK(imapmem_mailboxes(srv, "alice", &names_only, NULL) == IMAPMEM_MISUSE);
  CHECK(imapmem_count(srv, "alice", "INBOX", NULL) == IMAPMEM_MISUSE);
  CHECK(imapmem_uids(srv, "alice", "INBOX", NULL, &n) == IMAPMEM_MISUSE);
  CHECK(imapmem_uids(srv, "alice", "INBOX", &uids, NULL) == IMAPMEM_MISUSE);
  CHECK(imapmem_flags(srv, "alice", "INBOX", 1, NULL) == IMAPMEM_MISUSE);
  CHECK(imapmem_message(srv, "alice", "INBOX", 1, NULL, &n) == IMAPMEM_MISUSE);
  CHECK(imapmem_message(srv, "alice", "INBOX", 1, &s, NULL) == IMAPMEM_MISUSE);
  CHECK(imapmem_wait(srv, NULL, 10) == IMAPMEM_MISUSE);
  CHECK(imapmem_fault(srv, NULL) == IMAPMEM_MISUSE);
  CHECK(imapmem_set_capability(srv, NULL, 0) == IMAPMEM_MISUSE);
  /* wrong order: starting twice */
  CHECK(imapmem_port(srv) == -1);                 /* not listening yet */
  CHECK(imapmem_start(srv, "127.0.0.1", 0) == IMAPMEM_OK);
  CHECKM(imapmem_start(srv, "127.0.0.1", 0) == IMAPMEM_MISUSE, "%s", imapmem_errmsg(srv));
  CHECK(strlen(imapmem_errmsg(srv)) > 0);
  imapmem_free(srv);                              /* free while started: stops first */
}

static void test_errors(void) {
  /* imapmem_errstr: a distinct text for every code, and something for unknown codes */
  const char *texts[8];
  for (int code = 0; code < 8; code++) {
    texts[code] = imapmem_errstr(code);
    CHECKM(texts[code] && *texts[code], "code %d", code);
    for (int j = 0; j < code; j++)
      CHECKM(texts[code] && texts[j] && strcmp(texts[code], texts[j]) != 0,
             "codes %d and %d share \"%s\"", j, code, texts[j]);
  }
  CHECK(strstr(imapmem_errstr(IMAPMEM_NOMEM), "memory") != NULL);
  CHECK(imapmem_errstr(12345) != NULL && *imapmem_errstr(12345));
  CHECK(imapmem_errstr(-1) != NULL);
  const char *v = imapmem_version();
  CHECKM(v && strchr(v, '.') && v[0] >= '0' && v[0] <= '9', "version %s", v ? v : "(null)");

  imapmem *srv = NULL;
  CHECK(imapmem_new(NULL, &srv) == IMAPMEM_OK);
  if (!srv) return;
  CHECK(imapmem_add_user(srv, "alice", "secret") == IMAPMEM_OK);
  CHECK(imapmem_add_user(srv, "alice", "other") == IMAPMEM_EXISTS);
  CHECKM(strstr(imapmem_errmsg(srv), "alice") != NULL, "errmsg: %s", imapmem_errmsg(srv));
  CHECK(imapmem_add_user(srv, "Alice", "x") == IMAPMEM_OK);     /* names are case-sensitive */

  int rc = imapmem_load(srv, "alice", BAD);
  CHECKM(rc == IMAPMEM_PARSE, "rc %d", rc);
  CHECKM(strstr(imapmem_errmsg(srv), BAD ":1:") != NULL, "errmsg: %s", imapmem_errmsg(srv));
  CHECK(count_of(srv, "INBOX") == 0);             /* nothing loaded */

  rc = imapmem_load(srv, "alice", "fixtures/no-such-file.mbox");
  CHECKM(rc == IMAPMEM_IO, "rc %d", rc);
  CHECKM(strstr(imapmem_errmsg(srv), "no-such-file.mbox") != NULL, "errmsg: %s",
         imapmem_errmsg(srv));
  rc = imapmem_load(srv, "nobody", BASIC);
  CHECKM(rc == IMAPMEM_NOTFOUND, "rc %d", rc);
  CHECK(strlen(imapmem_errmsg(srv)) > 0);

  /* bytes: the name given stands for the file name in the message */
  const char junk[] = "Subject: no From line\n\nbody\n";
  rc = imapmem_load_mbox(srv, "alice", "INBOX", junk, strlen(junk), "memory.mbox");
  CHECKM(rc == IMAPMEM_PARSE, "rc %d", rc);
  CHECKM(strstr(imapmem_errmsg(srv), "memory.mbox:1:") != NULL, "errmsg: %s",
         imapmem_errmsg(srv));
  CHECK(imapmem_load_mbox(srv, "nobody", "INBOX", "", 0, NULL) == IMAPMEM_NOTFOUND);

  /* a directory with one malformed file: nothing at all is loaded */
  char dir[] = "/tmp/imapmem-api-XXXXXX";
  if (mkdtemp(dir)) {
    char p[4200];
    snprintf(p, sizeof p, "%s/INBOX.mbox", dir);
    FILE *f = fopen(p, "w");
    if (f) { fputs("From a@b Mon Nov 23 09:00:00 2026\nSubject: ok\n\nfine\n", f); fclose(f); }
    snprintf(p, sizeof p, "%s/Sent.mbox", dir);
    f = fopen(p, "w");
    if (f) { fputs("\nnot an mbox\n", f); fclose(f); }
    rc = imapmem_load(srv, "alice", dir);
    CHECKM(rc == IMAPMEM_PARSE, "rc %d %s", rc, imapmem_errmsg(srv));
    CHECKM(strstr(imapmem_errmsg(srv), "Sent.mbox:1:") != NULL, "errmsg: %s",
           imapmem_errmsg(srv));
    CHECK(count_of(srv, "INBOX") == 0);
    char *names = NULL;
    CHECK(mailbox_lines(srv, "alice", &names) == IMAPMEM_OK);
    CHECKM(names && strcmp(names, "INBOX\n") == 0, "mailboxes \"%s\"", names ? names : "");
    imapmem_release(names);
    rm_tree(dir);
  }

  /* state readers on what does not exist */
  char *s = NULL;
  size_t n;
  uint32_t *uids = NULL, uid;
  CHECK(mailbox_lines(srv, "nobody", &s) == IMAPMEM_NOTFOUND);
  CHECK(imapmem_count(srv, "alice", "NoSuchBox", &n) == IMAPMEM_NOTFOUND);
  CHECK(imapmem_count(srv, "nobody", "INBOX", &n) == IMAPMEM_NOTFOUND);
  CHECK(imapmem_uids(srv, "alice", "NoSuchBox", &uids, &n) == IMAPMEM_NOTFOUND);
  CHECK(imapmem_flags(srv, "alice", "INBOX", 99, &s) == IMAPMEM_NOTFOUND);
  CHECK(imapmem_message(srv, "alice", "INBOX", 99, &s, &n) == IMAPMEM_NOTFOUND);
  CHECK(imapmem_append(srv, "alice", "NoSuchBox", "a\r\n", 3, NULL, &uid) == IMAPMEM_NOTFOUND);
  CHECK(imapmem_append(srv, "nobody", "INBOX", "a\r\n", 3, NULL, &uid) == IMAPMEM_NOTFOUND);
  CHECK(imapmem_save(srv, "nobody", "/tmp") == IMAPMEM_NOTFOUND);
  CHECK(imapmem_set_capability(srv, "XYZZY", 0) == IMAPMEM_NOTFOUND);
  CHECK(imapmem_set_capability(srv, "AUTH", 0) == IMAPMEM_NOTFOUND);   /* no partial names */

  /* malformed fault specs */
  const char *badspecs[] = {"NOOP", "NOOP=EXPLODE", "=NO text", "delay=abc", "chunk=",
                            "NOOP=DELAY soon", "#x=DROP", ""};
  for (size_t i = 0; i < sizeof badspecs / sizeof *badspecs; i++) {
    rc = imapmem_fault(srv, badspecs[i]);
    CHECKM(rc == IMAPMEM_PARSE, "fault \"%s\" -> %d", badspecs[i], rc);
  }

  /* a port that is taken */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t sl = sizeof sa;
  if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(fd, 1) == 0 &&
      getsockname(fd, (struct sockaddr *)&sa, &sl) == 0) {
    rc = imapmem_start(srv, "127.0.0.1", ntohs(sa.sin_port));
    CHECKM(rc == IMAPMEM_IO, "rc %d", rc);
    CHECK(strlen(imapmem_errmsg(srv)) > 0);
    CHECK(imapmem_port(srv) == -1);
  }
  if (fd >= 0) close(fd);
  rc = imapmem_start(srv, "not an address", 0);
  CHECK(rc != IMAPMEM_OK && strlen(imapmem_errmsg(srv)) > 0);
  imapmem_free(srv);
}

static void test_strings_are_copied(void) {
  imapmem *srv = NULL;
  CHECK(imapmem_new(NULL, &srv) == IMAPMEM_OK);
  if (!srv) return;
  char *name = strdup("carol"), *pw = strdup("pw"), *path = strdup(BASIC);
  char *box = strdup("Archive");
  CHECK(imapmem_add_user(srv, name, pw) == IMAPMEM_OK);
  CHECK(imapmem_load(srv, name, path) == IMAPMEM_OK);
  const char mb[] = "From x@y Mon Nov 23 09:00:00 2026\nSubject: s\n\nb\n";
  char *bytes = strdup(mb);
  CHECK(imapmem_load_mbox(srv, name, box, bytes, strlen(bytes), path) == IMAPMEM_OK);
  memset(name, 'X', strlen(name));                /* the caller reuses its memory */
  memset(pw, 'X', strlen(pw));
  memset(box, 'X', strlen(box));
  memset(bytes, 'X', strlen(bytes));
  free(name); free(pw); free(path); free(box); free(bytes);
  size_t n = 0;
  CHECK(imapmem_count(srv, "carol", "INBOX", &n) == IMAPMEM_OK && n == 6);
  CHECK(imapmem_count(srv, "carol", "Archive", &n) == IMAPMEM_OK && n == 1);
  char *m = NULL;
  CHECK(imapmem_message(srv, "carol", "Archive", 1, &m, &n) == IMAPMEM_OK && m &&
        n == strlen("Subject: s\r\n\r\nb\r\n") && memcmp(m, "Subject: s\r\n\r\nb\r\n", n) == 0);
  imapmem_release(m);
  /* the password was copied too: alice can log in over a socketpair */
  struct conn *c = pair_conn(srv, NULL);
  CHECK(c != NULL);
  if (c) {
    CHECKM(ok(cmd(c, "LOGIN carol pw")), "%s", c->tagged);
    conn_free(c);
  }
  imapmem_free(srv);
}

static void test_load_and_read_back(void) {
  imapmem *srv = basic_server();
  CHECK(srv != NULL);
  if (!srv) return;
  size_t n = 0;
  CHECK(imapmem_count(srv, "alice", "INBOX", &n) == IMAPMEM_OK && n == 6);
  CHECK(imapmem_count(srv, "alice", "inbox", &n) == IMAPMEM_OK && n == 6);  /* INBOX any case */
  uint32_t *uids = NULL;
  CHECK(imapmem_uids(srv, "alice", "INBOX", &uids, &n) == IMAPMEM_OK && n == 6);
  int ascending = uids != NULL;
  for (size_t i = 0; uids && i < n; i++)
    if (uids[i] != i + 1) ascending = 0;
  CHECK(ascending);
  imapmem_release(uids);

  /* flags and keywords from Status/X-Status/X-Keywords; \Recent is not included */
  CHECK(flags_of_are(srv, "INBOX", 1, "\\Seen \\Answered"));
  CHECK(flags_of_are(srv, "INBOX", 2, "\\Flagged $Label1 work"));
  CHECK(flags_of_are(srv, "INBOX", 3, "\\Seen project"));
  CHECK(flags_of_are(srv, "INBOX", 4, ""));
  CHECK(flags_of_are(srv, "INBOX", 5, "\\Seen \\Deleted todo later"));
  CHECK(flags_of_are(srv, "INBOX", 6, "\\Seen \\Draft"));
  char *f = NULL;
  CHECK(imapmem_flags(srv, "alice", "INBOX", 5, &f) == IMAPMEM_OK);
  CHECKM(f && system_flags_first(f), "\"%s\"", f ? f : "");
  imapmem_release(f);

  /* bytes, exactly as clients see them */
  char *m = NULL;
  CHECK(imapmem_message(srv, "alice", "INBOX", 1, &m, &n) == IMAPMEM_OK);
  CHECKM(m && n == strlen(MSG1) && memcmp(m, MSG1, n) == 0, "got %zu bytes: %.*s", n,
         (int)(m ? n : 0), m ? m : "");
  imapmem_release(m);
  CHECK(imapmem_message(srv, "alice", "INBOX", 2, &m, &n) == IMAPMEM_OK);
  CHECK(m && memmem(m, n, "\r\n\r\nFrom here on the line", 25) != NULL);   /* >From unquoted */
  CHECK(m && memmem(m, n, "X-Keywords", 10) == NULL && memmem(m, n, "Status:", 7) == NULL);
  imapmem_release(m);

  /* a second load appends, with new UIDs */
  CHECK(imapmem_load(srv, "alice", BASIC) == IMAPMEM_OK);
  CHECK(imapmem_uids(srv, "alice", "INBOX", &uids, &n) == IMAPMEM_OK && n == 12);
  CHECK(uids && uids[6] == 7 && uids[11] == 12);
  imapmem_release(uids);

  /* a fixture directory */
  CHECK(imapmem_add_user(srv, "tree", "pw") == IMAPMEM_OK);
  CHECKM(imapmem_load(srv, "tree", TREE) == IMAPMEM_OK, "%s", imapmem_errmsg(srv));
  char *names = NULL;
  CHECK(mailbox_lines(srv, "tree", &names) == IMAPMEM_OK);
  if (names) {
    /* "Work" (a folder without Work.mbox) is \Noselect: it may or may not be listed.
       INBOX may come first (as IMAP servers list it); the others are in order. */
    char want[] = "Drafts\nLists\nLists/ietf\nSent\nWork/Old\nWork/Projects\n";
    char got[1024] = "";
    char copy[1024];
    snprintf(copy, sizeof copy, "%s", names);
    char *sv;
    for (char *t = strtok_r(copy, "\n", &sv); t; t = strtok_r(NULL, "\n", &sv))
      if (strcmp(t, "Work") != 0 && strcmp(t, "INBOX") != 0) {
        strcat(got, t);
        strcat(got, "\n");
      }
    CHECKM(strcmp(got, want) == 0, "mailboxes:\n%s", names);
    CHECKM(has_line(names, "INBOX") && names[strlen(names) - 1] == '\n', "%s", names);
  }
  imapmem_release(names);
  size_t c1 = 0, c2 = 0, c3 = 0, c4 = 0;
  CHECK(imapmem_count(srv, "tree", "Work/Projects", &c1) == IMAPMEM_OK && c1 == 2);
  CHECK(imapmem_count(srv, "tree", "Lists/ietf", &c2) == IMAPMEM_OK && c2 == 3);
  CHECK(imapmem_count(srv, "tree", "Drafts", &c3) == IMAPMEM_OK && c3 == 0);
  CHECK(imapmem_count(srv, "tree", "INBOX", &c4) == IMAPMEM_OK && c4 == 2);

  /* mbox bytes from memory: LF input stored CRLF, parent levels created, mboxrd */
  const char mb[] =
    "From a@example.com Mon Nov 23 09:00:00 2026\n"
    "Subject: one\n"
    "X-Keywords: memkw\n"
    "\n"
    ">From quoted\n"
    "\n"
    "From b@example.com Mon Nov 23 10:00:00 2026\n"
    "Subject: two\n"
    "Status: RO\n"
    "\n"
    "second\n";
  CHECK(imapmem_load_mbox(srv, "tree", "Archive/2026", mb, strlen(mb), NULL) == IMAPMEM_OK);
  CHECK(mailbox_lines(srv, "tree", &names) == IMAPMEM_OK);
  CHECKM(names && has_line(names, "Archive/2026"), "%s", names ? names : "");
  imapmem_release(names);
  CHECK(imapmem_count(srv, "tree", "Archive/2026", &n) == IMAPMEM_OK && n == 2);
  CHECK(imapmem_message(srv, "tree", "Archive/2026", 1, &m, &n) == IMAPMEM_OK);
  const char want1[] = "Subject: one\r\n\r\nFrom quoted\r\n";
  CHECKM(m && n == strlen(want1) && memcmp(m, want1, n) == 0, "%.*s", (int)(m ? n : 0),
         m ? m : "");
  imapmem_release(m);
  char *fl = NULL;
  CHECK(imapmem_flags(srv, "tree", "Archive/2026", 1, &fl) == IMAPMEM_OK && flags_eq(fl, "memkw"));
  imapmem_release(fl);
  CHECK(imapmem_flags(srv, "tree", "Archive/2026", 2, &fl) == IMAPMEM_OK && flags_eq(fl, "\\Seen"));
  imapmem_release(fl);
  /* empty bytes: an empty mailbox */
  CHECK(imapmem_load_mbox(srv, "tree", "Empty", "", 0, "empty") == IMAPMEM_OK);
  CHECK(imapmem_count(srv, "tree", "Empty", &n) == IMAPMEM_OK && n == 0);
  imapmem_free(srv);
}

static void test_config(void) {
  /* uidvalidity, max_literal, max_connections, idle_timeout */
  struct imapmem_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.uidvalidity = 777;
  cfg.max_connections = 1;
  cfg.max_literal = 100;
  cfg.idle_timeout = 1;
  imapmem *srv = NULL;
  CHECK(imapmem_new(&cfg, &srv) == IMAPMEM_OK);
  if (!srv) return;
  CHECK(imapmem_add_user(srv, "alice", "secret") == IMAPMEM_OK);
  CHECK(imapmem_load(srv, "alice", BASIC) == IMAPMEM_OK);
  CHECK(imapmem_start(srv, NULL, 0) == IMAPMEM_OK);            /* NULL: 127.0.0.1 */
  char want[64];
  snprintf(want, sizeof want, "127.0.0.1:%d", imapmem_port(srv));
  CHECKM(strcmp(imapmem_address(srv), want) == 0, "%s", imapmem_address(srv));
  struct conn *c = login_conn(srv);
  CHECK(c != NULL);
  if (c) {
    CHECK(ok(cmd(c, "SELECT INBOX")) && code_num(c->resp, "UIDVALIDITY") == 777);
    /* a literal over max_literal: tagged BAD, and no "+" first */
    conn_sendf(c, "big APPEND INBOX {200}\r\n");
    resp_clear(c);
    long off = conn_line(c, IO_TIMEOUT);
    CHECKM(off >= 0 && strncmp(c->resp + off, "big BAD", 7) == 0, "%s", c->resp);
    /* a second connection is over the limit of 1 */
    struct conn *c2 = tcp_conn(srv);
    CHECKM(c2 && strncmp(c2->greeting, "* BYE", 5) == 0, "%s", c2 ? c2->greeting : "no conn");
    conn_free(c2);
    /* idle_timeout = 1 s: the session is logged out */
    CHECK(conn_read_eof(c, 4000));
    CHECKM(strstr(c->resp, "* BYE") != NULL, "%s", c->resp);
    conn_free(c);
  }
  imapmem_free(srv);
}

static int have_ipv6(void) {
  int fd = socket(AF_INET6, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  struct sockaddr_in6 a;
  memset(&a, 0, sizeof a);
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  int r = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
  close(fd);
  return r;
}

static void test_start_stop(void) {
  imapmem *srv = basic_server();
  CHECK(srv != NULL);
  if (!srv) return;
  CHECK(imapmem_port(srv) == -1);
  CHECK(imapmem_start(srv, "127.0.0.1", 0) == IMAPMEM_OK);
  int port = imapmem_port(srv);
  CHECK(port > 0 && port < 65536);
  char want[64];
  snprintf(want, sizeof want, "127.0.0.1:%d", port);
  CHECKM(strcmp(imapmem_address(srv), want) == 0, "%s", imapmem_address(srv));

  /* sessions of every kind are open when stop is called: each gets "* BYE" */
  struct conn *plain = tcp_conn(srv);               /* not logged in */
  CHECKM(plain && strncmp(plain->greeting, "* OK", 4) == 0, "%s", plain ? plain->greeting : "");
  struct conn *sel = login_conn(srv);
  CHECK(sel && ok(cmd(sel, "SELECT INBOX")));
  struct conn *idle = login_conn(srv);
  CHECK(idle && ok(cmd(idle, "SELECT INBOX")));
  if (idle) {
    conn_sendf(idle, "i1 IDLE\r\n");
    resp_clear(idle);
    long off = conn_line(idle, IO_TIMEOUT);
    CHECK(off >= 0 && idle->resp[off] == '+');
  }
  struct conn *pair = pair_conn(srv, "alice");
  CHECK(pair != NULL);
  long t0 = now_ms();
  CHECK(imapmem_stop(srv) == IMAPMEM_OK);
  CHECKM(now_ms() - t0 < 4000, "stop took %ld ms", now_ms() - t0);
  struct conn *all[] = {plain, sel, idle, pair};
  for (int i = 0; i < 4; i++) {
    if (!all[i]) continue;
    CHECKM(conn_read_eof(all[i], 2000), "session %d not closed", i);
    CHECKM(strstr(all[i]->resp, "* BYE") != NULL, "session %d: \"%s\"", i, all[i]->resp);
    conn_free(all[i]);
  }
  CHECK(imapmem_port(srv) == -1);
  CHECK(imapmem_stop(srv) == IMAPMEM_OK);           /* idempotent */
  CHECK(tcp_socket(port) < 0);                      /* the listener is gone */
  size_t n = 0;
  CHECK(imapmem_count(srv, "alice", "INBOX", &n) == IMAPMEM_OK && n == 6);  /* still readable */
  struct imapmem_until u;
  memset(&u, 0, sizeof u);
  u.kind = IMAPMEM_UNTIL_NO_SESSIONS;
  CHECK(imapmem_wait(srv, &u, 1000) == IMAPMEM_OK);
  imapmem_free(srv);

  if (have_ipv6()) {
    srv = basic_server();
    CHECK(srv && imapmem_start(srv, "::1", 0) == IMAPMEM_OK);
    if (srv) {
      snprintf(want, sizeof want, "[::1]:%d", imapmem_port(srv));
      CHECKM(strcmp(imapmem_address(srv), want) == 0, "%s", imapmem_address(srv));
    }
    imapmem_free(srv);
  }

  /* free with sessions still open (no stop): no leak, no hang */
  srv = started_server();
  CHECK(srv != NULL);
  if (srv) {
    struct conn *c = login_conn(srv);
    CHECK(c && ok(cmd(c, "SELECT INBOX")));
    struct conn *p = pair_conn(srv, "alice");
    imapmem_free(srv);
    CHECK(c && conn_read_eof(c, 2000));
    CHECK(p && conn_read_eof(p, 2000));
    conn_free(c);
    conn_free(p);
  }
}

static void write_all(int fd, const char *s) {
  size_t n = strlen(s);
  while (n > 0) {
    ssize_t w = write(fd, s, n);
    if (w <= 0) return;
    s += w;
    n -= (size_t)w;
  }
}

static void test_serve_fd(void) {
  imapmem *srv = basic_server();          /* never started: no port */
  CHECK(srv != NULL);
  if (!srv) return;
  struct conn *c = pair_conn(srv, NULL);
  CHECK(c != NULL);
  if (c) {
    CHECKM(strncmp(c->greeting, "* OK", 4) == 0, "%s", c->greeting);
    CHECKM(is_bad(cmd(c, "SELECT INBOX")), "%s", c->tagged);  /* not authenticated yet */
    CHECK(ok(cmd(c, "LOGIN alice secret")));
    CHECK(ok(cmd(c, "SELECT INBOX")) && exists_num(c->resp) == 6);
    CHECK(ok(cmd(c, "LOGOUT")) && strstr(c->resp, "* BYE") != NULL);
    CHECK(conn_read_eof(c, 2000));        /* the server closed its end */
    conn_free(c);
  }
  c = pair_conn(srv, "alice");
  CHECK(c != NULL);
  if (c) {
    CHECKM(strncmp(c->greeting, "* PREAUTH", 9) == 0, "%s", c->greeting);
    CHECK(ok(cmd(c, "SELECT INBOX")) && exists_num(c->resp) == 6);
    CHECK(ok(cmd(c, "UID FETCH 1 BODY.PEEK[]")));
    const char *lit = NULL;
    long n = first_literal(c->resp, &lit);
    CHECK(n == (long)strlen(MSG1) && memcmp(lit, MSG1, (size_t)n) == 0);
    conn_free(c);                          /* client goes away without LOGOUT */
  }
  /* separate in and out descriptors (two pipes, as with stdin/stdout) */
  int to_srv[2], from_srv[2];
  if (pipe2(to_srv, O_CLOEXEC) == 0 && pipe2(from_srv, O_CLOEXEC) == 0) {
    int rc = imapmem_serve_fd(srv, to_srv[0], from_srv[1], "alice");
    CHECK(rc == IMAPMEM_OK);
    struct conn *r = calloc(1, sizeof *r);
    if (!r) abort();
    r->fd = from_srv[0];
    resp_add(r, "", 0);
    long off = conn_line(r, IO_TIMEOUT);
    CHECKM(off >= 0 && strncmp(r->resp + off, "* PREAUTH", 9) == 0, "%s", r->resp);
    resp_clear(r);
    write_all(to_srv[1], "p1 NOOP\r\n");
    CHECK(strncmp(conn_until_tagged(r, "p1", IO_TIMEOUT), "OK", 2) == 0);
    write_all(to_srv[1], "p2 LOGOUT\r\n");
    CHECK(strncmp(conn_until_tagged(r, "p2", IO_TIMEOUT), "OK", 2) == 0);
    CHECK(conn_read_eof(r, 2000));        /* out_fd closed by the server */
    close(to_srv[1]);
    conn_free(r);
  }
  struct imapmem_until u;
  memset(&u, 0, sizeof u);
  u.kind = IMAPMEM_UNTIL_NO_SESSIONS;
  CHECK(imapmem_wait(srv, &u, 3000) == IMAPMEM_OK);
  imapmem_free(srv);
}

/* A thread that does something after a delay, so imapmem_wait really has to wait. */
struct later {
  pthread_t th;
  int ms;
  int fd;                  /* write text to fd ... */
  char text[256];
  imapmem *srv;            /* ... or, if srv is set, append NEWMSG to alice's INBOX */
};

static void *later_main(void *p) {
  struct later *l = p;
  sleep_ms(l->ms);
  if (l->srv) {
    imapmem_append(l->srv, "alice", "INBOX", NEWMSG, strlen(NEWMSG), NULL, NULL);
  } else {
    ssize_t w = send(l->fd, l->text, strlen(l->text), MSG_NOSIGNAL);
    (void)w;
  }
  return NULL;
}

static void later_start(struct later *l, int ms, int fd, const char *text, imapmem *srv) {
  memset(l, 0, sizeof *l);
  l->ms = ms;
  l->fd = fd;
  l->srv = srv;
  if (text) snprintf(l->text, sizeof l->text, "%s", text);
  if (pthread_create(&l->th, NULL, later_main, l) != 0) abort();
}

static void test_append_live(void) {
  imapmem *srv = started_server();
  CHECK(srv != NULL);
  if (!srv) return;
  struct conn *sel = login_conn(srv);
  CHECK(sel && ok(cmd(sel, "SELECT INBOX")) && exists_num(sel->resp) == 6);
  struct conn *idle = pair_conn(srv, "alice");
  CHECK(idle && ok(cmd(idle, "SELECT INBOX")));
  if (!sel || !idle) {
    conn_free(sel);
    conn_free(idle);
    imapmem_free(srv);
    return;
  }
  conn_sendf(idle, "i1 IDLE\r\n");
  resp_clear(idle);
  long off = conn_line(idle, IO_TIMEOUT);
  CHECK(off >= 0 && idle->resp[off] == '+');
  struct imapmem_until u;
  memset(&u, 0, sizeof u);
  u.kind = IMAPMEM_UNTIL_IDLE;
  u.user = "alice";
  u.mailbox = "INBOX";
  CHECK(imapmem_wait(srv, &u, IO_TIMEOUT) == IMAPMEM_OK);

  uint32_t uid = 0;
  int rc = imapmem_append(srv, "alice", "INBOX", NEWMSG, strlen(NEWMSG), "\\Seen $Label1", &uid);
  CHECKM(rc == IMAPMEM_OK, "%s", imapmem_errmsg(srv));
  CHECK(uid == 7);
  /* the idling session is told at once, without sending anything */
  resp_clear(idle);
  off = conn_line(idle, IO_TIMEOUT);
  CHECKM(off >= 0 && strncmp(idle->resp + off, "* 7 EXISTS", 10) == 0, "%s", idle->resp);
  conn_sendf(idle, "DONE\r\n");
  CHECK(ok(conn_until_tagged(idle, "i1", IO_TIMEOUT)));
  /* the selected session sees it at its next command */
  CHECK(ok(cmd(sel, "NOOP")));
  CHECKM(exists_num(sel->resp) == 7, "%s", sel->resp);
  CHECK(ok(cmd(sel, "UID FETCH 7 (FLAGS BODY.PEEK[])")));
  CHECK(strstr(sel->resp, "$Label1") && strstr(sel->resp, "\\Seen"));
  const char *lit = NULL;
  long n = first_literal(sel->resp, &lit);
  CHECK(n == (long)strlen(NEWMSG) && memcmp(lit, NEWMSG, (size_t)n) == 0);

  CHECK(flags_of_are(srv, "INBOX", 7, "\\Seen $Label1"));
  char *m = NULL;
  size_t len = 0;
  CHECK(imapmem_message(srv, "alice", "INBOX", 7, &m, &len) == IMAPMEM_OK && m &&
        len == strlen(NEWMSG) && memcmp(m, NEWMSG, len) == 0);
  imapmem_release(m);
  CHECK(count_of(srv, "INBOX") == 7);

  /* flags NULL, uid_out NULL; and a mailbox that a client created */
  CHECK(imapmem_append(srv, "alice", "INBOX", NEWMSG, strlen(NEWMSG), NULL, NULL) == IMAPMEM_OK);
  CHECK(flags_of_are(srv, "INBOX", 8, ""));
  CHECK(ok(cmd(sel, "CREATE Lists/New")));
  uid = 0;
  CHECK(imapmem_append(srv, "alice", "Lists/New", NEWMSG, strlen(NEWMSG), "\\Flagged", &uid) ==
        IMAPMEM_OK && uid >= 1);
  CHECK(count_of(srv, "Lists/New") == 1);
  char *names = NULL;
  CHECK(mailbox_lines(srv, "alice", &names) == IMAPMEM_OK && names &&
        strstr(names, "Lists/New\n") != NULL);
  imapmem_release(names);
  CHECK(ok(cmd(sel, "STATUS Lists/New (MESSAGES)")) && strstr(sel->resp, "MESSAGES 1"));
  /* load may also run while serving */
  const char mb[] = "From x@y Mon Nov 23 09:00:00 2026\nSubject: s\n\nb\n";
  CHECK(imapmem_load_mbox(srv, "alice", "Lists/New", mb, strlen(mb), NULL) == IMAPMEM_OK);
  CHECK(count_of(srv, "Lists/New") == 2);
  conn_free(sel);
  conn_free(idle);
  imapmem_free(srv);
}

static void test_wait(void) {
  imapmem *srv = started_server();
  CHECK(srv != NULL);
  if (!srv) return;
  struct imapmem_until u;
  struct later l;
  long t0;
  int rc;

  /* a timeout is an error with a readable text, in about the time asked for */
  memset(&u, 0, sizeof u);
  u.kind = IMAPMEM_UNTIL_LOGIN;
  t0 = now_ms();
  rc = imapmem_wait(srv, &u, 200);
  long took = now_ms() - t0;
  CHECKM(rc == IMAPMEM_ERROR, "rc %d", rc);
  CHECKM(took >= 150 && took < 2000, "took %ld ms", took);
  CHECKM(strncmp(imapmem_errmsg(srv), "timed out", 9) == 0, "%s", imapmem_errmsg(srv));

  /* LOGIN: any user, then a named one; another name does not count */
  struct conn *c = tcp_conn(srv);
  CHECK(c != NULL);
  if (!c) {
    imapmem_free(srv);
    return;
  }
  later_start(&l, 200, c->fd, "w1 LOGIN alice secret\r\n", NULL);
  t0 = now_ms();
  CHECK(imapmem_wait(srv, &u, IO_TIMEOUT) == IMAPMEM_OK);
  CHECK(now_ms() - t0 >= 150);                   /* it did wait for the client */
  pthread_join(l.th, NULL);
  CHECK(ok(conn_until_tagged(c, "w1", IO_TIMEOUT)));
  u.user = "alice";
  CHECK(imapmem_wait(srv, &u, 1000) == IMAPMEM_OK);
  u.user = "bob";
  CHECK(imapmem_wait(srv, &u, 100) == IMAPMEM_ERROR);

  /* SELECTED */
  memset(&u, 0, sizeof u);
  u.kind = IMAPMEM_UNTIL_SELECTED;
  u.user = "alice";
  u.mailbox = "INBOX";
  CHECK(imapmem_wait(srv, &u, 100) == IMAPMEM_ERROR);
  later_start(&l, 200, c->fd, "w2 SELECT INBOX\r\n", NULL);
  t0 = now_ms();
  CHECK(imapmem_wait(srv, &u, IO_TIMEOUT) == IMAPMEM_OK && now_ms() - t0 >= 150);
  pthread_join(l.th, NULL);
  CHECK(ok(conn_until_tagged(c, "w2", IO_TIMEOUT)));
  u.mailbox = "Sent";
  CHECK(imapmem_wait(srv, &u, 100) == IMAPMEM_ERROR);

  /* FLAG and NO_FLAG, system flags and keywords */
  memset(&u, 0, sizeof u);
  u.kind = IMAPMEM_UNTIL_FLAG;
  u.user = "alice";
  u.mailbox = "INBOX";
  u.uid = 4;
  u.flag = "\\Seen";
  CHECK(imapmem_wait(srv, &u, 100) == IMAPMEM_ERROR);
  later_start(&l, 200, c->fd, "w3 UID STORE 4 +FLAGS (\\Seen)\r\n", NULL);
  t0 = now_ms();
  CHECK(imapmem_wait(srv, &u, IO_TIMEOUT) == IMAPMEM_OK && now_ms() - t0 >= 150);
  pthread_join(l.th, NULL);
  CHECK(ok(conn_until_tagged(c, "w3", IO_TIMEOUT)));
  u.uid = 2;
  u.flag = "$Label1";
  CHECK(imapmem_wait(srv, &u, 1000) == IMAPMEM_OK);   /* holds already */
  u.kind = IMAPMEM_UNTIL_NO_FLAG;
  u.flag = "\\Flagged";
  CHECK(imapmem_wait(srv, &u, 100) == IMAPMEM_ERROR);
  later_start(&l, 200, c->fd, "w4 UID STORE 2 -FLAGS (\\Flagged)\r\n", NULL);
  t0 = now_ms();
  CHECK(imapmem_wait(srv, &u, IO_TIMEOUT) == IMAPMEM_OK && now_ms() - t0 >= 150);
  pthread_join(l.th, NULL);
  CHECK(ok(conn_until_tagged(c, "w4", IO_TIMEOUT)));
  u.uid = 99;                                          /* gone counts as lacking */
  CHECK(imapmem_wait(srv, &u, 1000) == IMAPMEM_OK);

  /* COUNT: a client expunges (uid 5 is \Deleted), then a delivery from another thread */
  memset(&u, 0, sizeof u);
  u.kind = IMAPMEM_UNTIL_COUNT;
  u.user = "alice";
  u.mailbox = "INBOX";
  u.count = 5;
  CHECK(imapmem_wait(srv, &u, 100) == IMAPMEM_ERROR);
  later_start(&l, 200, c->fd, "w5 EXPUNGE\r\n", NULL);
  CHECK(imapmem_wait(srv, &u, IO_TIMEOUT) == IMAPMEM_OK);
  pthread_join(l.th, NULL);
  CHECK(ok(conn_until_tagged(c, "w5", IO_TIMEOUT)));
  u.count = 6;
  later_start(&l, 200, -1, NULL, srv);
  t0 = now_ms();
  CHECK(imapmem_wait(srv, &u, IO_TIMEOUT) == IMAPMEM_OK && now_ms() - t0 >= 150);
  pthread_join(l.th, NULL);

  /* IDLE */
  memset(&u, 0, sizeof u);
  u.kind = IMAPMEM_UNTIL_IDLE;
  u.user = "alice";
  u.mailbox = "INBOX";
  CHECK(imapmem_wait(srv, &u, 100) == IMAPMEM_ERROR);
  later_start(&l, 200, c->fd, "w6 IDLE\r\n", NULL);
  t0 = now_ms();
  CHECK(imapmem_wait(srv, &u, IO_TIMEOUT) == IMAPMEM_OK && now_ms() - t0 >= 150);
  pthread_join(l.th, NULL);
  conn_sendf(c, "DONE\r\n");
  CHECK(ok(conn_until_tagged(c, "w6", IO_TIMEOUT)));
  CHECK(imapmem_wait(srv, &u, 100) == IMAPMEM_ERROR);    /* no longer idling */

  /* NO_SESSIONS: both a TCP and a socketpair session must end */
  struct conn *p = pair_conn(srv, "alice");
  memset(&u, 0, sizeof u);
  u.kind = IMAPMEM_UNTIL_NO_SESSIONS;
  CHECK(imapmem_wait(srv, &u, 100) == IMAPMEM_ERROR);
  t0 = now_ms();    /* before the timer starts, so a slow LOGOUT below cannot shorten it */
  later_start(&l, 200, c->fd, "w7 LOGOUT\r\n", NULL);
  CHECK(p && ok(cmd(p, "LOGOUT")));
  CHECK(imapmem_wait(srv, &u, IO_TIMEOUT) == IMAPMEM_OK && now_ms() - t0 >= 150);
  pthread_join(l.th, NULL);
  conn_free(c);
  conn_free(p);
  imapmem_free(srv);
}

struct trace {
  pthread_mutex_t mu;
  char text[65536];        /* "SESSION DIR LINE\n" per call */
  size_t len;
  int calls, crlf_in_line;
};

static void trace_fn(void *arg, int session, char direction, const char *line, size_t len) {
  struct trace *t = arg;
  pthread_mutex_lock(&t->mu);
  t->calls++;
  if (memchr(line, '\r', len) || memchr(line, '\n', len)) t->crlf_in_line++;
  int n = snprintf(t->text + t->len, sizeof t->text - t->len, "%d %c %.*s\n", session,
                   direction, (int)len, line);
  if (n > 0 && t->len + (size_t)n < sizeof t->text) t->len += (size_t)n;
  pthread_mutex_unlock(&t->mu);
}

static int trace_has(struct trace *t, const char *s) {
  pthread_mutex_lock(&t->mu);
  int r = strstr(t->text, s) != NULL;
  pthread_mutex_unlock(&t->mu);
  return r;
}

/* Is there a traced line that starts with prefix and contains part? */
static int trace_line(struct trace *t, const char *prefix, const char *part) {
  pthread_mutex_lock(&t->mu);
  int r = 0;
  for (const char *p = t->text; *p && !r; p = strchr(p, '\n') + 1) {
    size_t n = strcspn(p, "\n");
    if (strncmp(p, prefix, strlen(prefix)) == 0) {
      char line[4096];
      snprintf(line, sizeof line, "%.*s", (int)n, p);
      r = strstr(line, part) != NULL;
    }
    if (!p[n]) break;
  }
  pthread_mutex_unlock(&t->mu);
  return r;
}

static void test_trace(void) {
  static struct trace t;
  pthread_mutex_init(&t.mu, NULL);
  imapmem *srv = basic_server();
  CHECK(srv != NULL);
  if (!srv) return;
  CHECK(imapmem_add_user(srv, "dave", "Pw-s3cret") == IMAPMEM_OK);
  CHECK(imapmem_set_trace(srv, trace_fn, &t) == IMAPMEM_OK);
  CHECK(imapmem_start(srv, "127.0.0.1", 0) == IMAPMEM_OK);
  struct conn *c = tcp_conn(srv);
  CHECK(c != NULL);
  if (!c) {
    imapmem_free(srv);
    return;
  }
  CHECK(ok(cmd(c, "LOGIN dave Pw-s3cret")));
  CHECK(ok(cmd(c, "SELECT INBOX")));
  /* APPEND with a synchronizing literal */
  conn_sendf(c, "t9 APPEND INBOX {%zu}\r\n", strlen(NEWMSG));
  resp_clear(c);
  long off = conn_line(c, IO_TIMEOUT);
  CHECK(off >= 0 && c->resp[off] == '+');
  conn_send(c, NEWMSG, strlen(NEWMSG));
  conn_send(c, "\r\n", 2);
  CHECK(ok(conn_until_tagged(c, "t9", IO_TIMEOUT)));
  CHECK(ok(cmd(c, "FETCH 1 BODY[]")));
  CHECK(ok(cmd(c, "LOGOUT")));
  conn_read_eof(c, 2000);
  conn_free(c);
  /* a second session: AUTHENTICATE PLAIN with an initial response, and LOGIN literals */
  c = tcp_conn(srv);
  CHECK(c != NULL);
  if (c) {
    /* base64("\0dave\0Pw-s3cret") */
    CHECK(ok(cmd(c, "AUTHENTICATE PLAIN AGRhdmUAUHctczNjcmV0")));
    CHECK(ok(cmd(c, "LOGOUT")));
    conn_free(c);
  }
  c = tcp_conn(srv);
  if (c) {
    conn_sendf(c, "L1 LOGIN dave {9}\r\n");
    resp_clear(c);
    off = conn_line(c, IO_TIMEOUT);
    CHECK(off >= 0 && c->resp[off] == '+');
    conn_sendf(c, "Pw-s3cret\r\n");
    CHECK(ok(conn_until_tagged(c, "L1", IO_TIMEOUT)));
    conn_free(c);
  }
  struct imapmem_until u;
  memset(&u, 0, sizeof u);
  u.kind = IMAPMEM_UNTIL_NO_SESSIONS;
  CHECK(imapmem_wait(srv, &u, IO_TIMEOUT) == IMAPMEM_OK);

  char lit[64];
  snprintf(lit, sizeof lit, "{%zu bytes}", strlen(NEWMSG));
  CHECKM(trace_has(&t, "1 C t1 LOGIN dave ***\n"), "%s", t.text);
  CHECKM(trace_has(&t, "1 S t1 OK"), "%s", t.text);
  CHECKM(trace_has(&t, "1 S * OK") || trace_has(&t, "1 S * PREAUTH"), "greeting traced: %s", t.text);
  char ann[64];                /* a synchronizing literal: the command, "+", the literal */
  snprintf(ann, sizeof ann, "1 C t9 APPEND INBOX {%zu}\n1 S + ", strlen(NEWMSG));
  CHECKM(trace_has(&t, ann), "%s", t.text);
  CHECKM(trace_line(&t, "1 C ", lit), "%s", t.text);
  CHECKM(trace_has(&t, "1 * connected from 127.0.0.1:"), "%s", t.text);
  CHECKM(trace_has(&t, "1 * disconnected: "), "%s", t.text);
  CHECKM(trace_line(&t, "1 S * 1 FETCH ", lit), "%s", t.text);   /* dave's INBOX: NEWMSG */
  CHECK(!trace_has(&t, "ZQXJ-BODY"));               /* literal contents are not shown */
  CHECK(!trace_has(&t, "s3cret"));                  /* passwords masked, every form */
  CHECK(!trace_has(&t, "AGRhdmUAUHctczNjcmV0"));
  CHECKM(trace_has(&t, "2 C t1 AUTHENTICATE PLAIN ***"), "%s", t.text);
  CHECK(trace_has(&t, "3 C L1 LOGIN dave"));
  CHECK(t.crlf_in_line == 0);
  /* clearing the callback: no more calls */
  CHECK(imapmem_set_trace(srv, NULL, NULL) == IMAPMEM_OK);
  pthread_mutex_lock(&t.mu);
  int calls = t.calls;
  pthread_mutex_unlock(&t.mu);
  c = login_conn(srv);
  CHECK(c && ok(cmd(c, "NOOP")));
  conn_free(c);
  imapmem_free(srv);
  CHECK(t.calls == calls);
  pthread_mutex_destroy(&t.mu);
}

/* NOTIFY and OBJECTID (RFC 5465, RFC 8474) in-process: a pair session hears of another's
   APPEND without a command, and both switch off and on through imapmem_set_capability. */
static void test_notify_objectid(void) {
  imapmem *srv = basic_server();
  CHECK(srv != NULL);
  if (!srv) return;
  struct conn *a = pair_conn(srv, "alice"), *b = pair_conn(srv, "alice");
  CHECK(a && b);
  if (a && b) {
    CHECK(ok(cmd(b, "CREATE Watched")));
    CHECKM(ok(cmd(a, "NOTIFY SET (mailboxes Watched (MessageNew MessageExpunge))")), "%s",
           a->tagged);
    conn_sendf(b, "a1 APPEND Watched {%zu}\r\n", strlen(NEWMSG));
    CHECK(conn_line(b, IO_TIMEOUT) >= 0);
    conn_send(b, NEWMSG, strlen(NEWMSG));
    conn_send(b, "\r\n", 2);
    CHECK(ok(conn_until_tagged(b, "a1", IO_TIMEOUT)));
    resp_clear(a);
    long off = conn_line(a, IO_TIMEOUT);
    CHECKM(off >= 0 && strstr(a->resp + off, "* STATUS \"Watched\" (MESSAGES 1 UIDNEXT 2)"),
           "%s", off >= 0 ? a->resp + off : "(nothing)");
    CHECK(ok(cmd(a, "SELECT INBOX")));
    CHECKM(ok(cmd(a, "FETCH 1 (EMAILID)")) && strstr(a->resp, "EMAILID (M"), "%s", a->resp);
  }
  conn_free(a);
  conn_free(b);
  CHECK(imapmem_set_capability(srv, "NOTIFY", 0) == IMAPMEM_OK);
  CHECK(imapmem_set_capability(srv, "OBJECTID", 0) == IMAPMEM_OK);
  a = pair_conn(srv, "alice");
  if (a) {
    CHECK(ok(cmd(a, "CAPABILITY")));
    CHECK(!has_cap(a->resp, "NOTIFY") && !has_cap(a->resp, "OBJECTID"));
    CHECK(is_bad(cmd(a, "NOTIFY NONE")));
    CHECK(ok(cmd(a, "SELECT INBOX")));
    CHECK(is_bad(cmd(a, "FETCH 1 (EMAILID)")));
    conn_free(a);
  }
  CHECK(imapmem_set_capability(srv, "NOTIFY", 1) == IMAPMEM_OK);
  CHECK(imapmem_set_capability(srv, "OBJECTID", 1) == IMAPMEM_OK);
  a = pair_conn(srv, "alice");
  if (a) {
    CHECK(ok(cmd(a, "NOTIFY NONE")));
    CHECKM(ok(cmd(a, "STATUS INBOX (MAILBOXID)")) && strstr(a->resp, "MAILBOXID (F"), "%s",
           a->resp);
    conn_free(a);
  }
  imapmem_free(srv);
}

static void test_capability(void) {
  imapmem *srv = basic_server();
  CHECK(srv != NULL);
  if (!srv) return;
  const char *names[] = {"IDLE", "MOVE", "UIDPLUS", "UNSELECT", "NAMESPACE", "ID",
                         "LITERAL+", "SASL-IR", "CHILDREN"};
  /* every extension can be switched off: then none is advertised */
  for (size_t i = 0; i < sizeof names / sizeof *names; i++)
    CHECKM(imapmem_set_capability(srv, names[i], 0) == IMAPMEM_OK, "%s", names[i]);
  struct conn *c = pair_conn(srv, "alice");
  CHECK(c != NULL);
  if (c) {
    CHECK(ok(cmd(c, "CAPABILITY")));
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
      CHECKM(!has_cap(c->resp, names[i]) && !has_cap(c->greeting, names[i]),
             "%s still advertised: %s / %s", names[i], c->resp, c->greeting);
    CHECK(has_cap(c->resp, "IMAP4rev1"));
    CHECK(ok(cmd(c, "CREATE Target")));
    CHECK(ok(cmd(c, "SELECT INBOX")));
    CHECKM(is_bad(cmd(c, "MOVE 1 Target")), "%s", c->tagged);
    CHECKM(is_bad(cmd(c, "UID MOVE 1 Target")), "%s", c->tagged);
    CHECKM(is_bad(cmd(c, "IDLE")), "%s", c->tagged);
    CHECKM(is_bad(cmd(c, "UNSELECT")), "%s", c->tagged);
    CHECKM(is_bad(cmd(c, "NAMESPACE")), "%s", c->tagged);
    CHECKM(is_bad(cmd(c, "ID NIL")), "%s", c->tagged);
    CHECKM(is_bad(cmd(c, "UID EXPUNGE 1")), "%s", c->tagged);
    conn_free(c);
  }
  /* UIDPLUS off: APPEND and COPY say nothing about UIDs */
  c = pair_conn(srv, "alice");
  if (c) {
    conn_sendf(c, "a1 APPEND INBOX {%zu}\r\n", strlen(NEWMSG));
    resp_clear(c);
    long off = conn_line(c, IO_TIMEOUT);
    CHECK(off >= 0 && c->resp[off] == '+');
    conn_send(c, NEWMSG, strlen(NEWMSG));
    conn_send(c, "\r\n", 2);
    CHECKM(ok(conn_until_tagged(c, "a1", IO_TIMEOUT)) && !strstr(c->tagged, "APPENDUID"),
           "%s", c->tagged);
    CHECK(ok(cmd(c, "SELECT INBOX")));
    CHECKM(ok(cmd(c, "COPY 1 Target")) && !strstr(c->tagged, "COPYUID"), "%s", c->tagged);
    conn_free(c);
  }
  /* and back on */
  CHECK(imapmem_set_capability(srv, "MOVE", 1) == IMAPMEM_OK);
  CHECK(imapmem_set_capability(srv, "UIDPLUS", 1) == IMAPMEM_OK);
  CHECK(imapmem_set_capability(srv, "IDLE", 1) == IMAPMEM_OK);
  c = pair_conn(srv, "alice");
  if (c) {
    CHECK(ok(cmd(c, "CAPABILITY")));
    CHECKM(has_cap(c->resp, "MOVE") && has_cap(c->resp, "UIDPLUS") && has_cap(c->resp, "IDLE"),
           "%s", c->resp);
    CHECK(!has_cap(c->resp, "NAMESPACE"));
    CHECK(ok(cmd(c, "SELECT INBOX")));
    CHECKM(ok(cmd(c, "MOVE 1 Target")), "%s", c->tagged);
    CHECKM(ok(cmd(c, "COPY 1 Target")) && strstr(c->tagged, "[COPYUID "), "%s", c->tagged);
    conn_free(c);
  }
  CHECK(imapmem_set_capability(srv, "NOSUCH", 1) == IMAPMEM_NOTFOUND);
  imapmem_free(srv);
}

/*
** config.imap_version (RFC 9051 Appendix A): both versions by default, a client ENABLEs
** IMAP4rev2; IMAPMEM_REV2_ONLY serves RFC 9051 without ENABLE; IMAPMEM_REV1_ONLY has no
** IMAP4rev2; the two cannot both be switched off.
*/
static void test_imap_version(void) {
  struct imapmem_config cfg;
  memset(&cfg, 0, sizeof cfg);
  imapmem *srv = NULL;
  cfg.imap_version = 3;
  CHECK(imapmem_new(&cfg, &srv) == IMAPMEM_MISUSE && srv == NULL);
  cfg.imap_version = -1;
  CHECK(imapmem_new(&cfg, &srv) == IMAPMEM_MISUSE && srv == NULL);
  static const struct { int version; int rev1, rev2; } cases[] = {
    {IMAPMEM_REV1_AND_REV2, 1, 1}, {IMAPMEM_REV1_ONLY, 1, 0}, {IMAPMEM_REV2_ONLY, 0, 1}};
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    cfg.imap_version = cases[i].version;
    CHECK(imapmem_new(&cfg, &srv) == IMAPMEM_OK);
    if (!srv) continue;
    char *caps = NULL;
    CHECK(imapmem_add_user(srv, "alice", "secret") == IMAPMEM_OK);
    CHECK(imapmem_load(srv, "alice", BASIC) == IMAPMEM_OK);
    CHECK(imapmem_capabilities(srv, &caps) == IMAPMEM_OK);
    char line[1024];
    snprintf(line, sizeof line, "* CAPABILITY %s\r\n", caps ? caps : "");
    CHECKM(has_cap(line, "IMAP4rev1") == cases[i].rev1 &&
           has_cap(line, "IMAP4rev2") == cases[i].rev2, "version %d: %s", cases[i].version, line);
    free(caps);
    struct conn *c = pair_conn(srv, "alice");
    CHECK(c != NULL);
    if (c) {
      int rev2 = cases[i].version == IMAPMEM_REV2_ONLY;   /* RFC 9051: no RECENT, a LIST */
      CHECK(ok(cmd(c, "SELECT INBOX")));
      CHECKM((strstr(c->resp, " RECENT\r\n") == NULL) == rev2, "%d: %s", rev2, c->resp);
      CHECKM((strstr(c->resp, "* LIST (") != NULL) == rev2, "%d: %s", rev2, c->resp);
      conn_free(c);
    }
    if (cases[i].version == IMAPMEM_REV2_ONLY) {   /* the last version cannot go */
      CHECK(imapmem_set_capability(srv, "IMAP4rev2", 0) == IMAPMEM_MISUSE);
      CHECK(imapmem_set_capability(srv, "IMAP4rev1", 1) == IMAPMEM_OK);
      CHECK(imapmem_set_capability(srv, "IMAP4rev2", 0) == IMAPMEM_OK);
      CHECK(imapmem_set_capability(srv, "IMAP4rev1", 0) == IMAPMEM_MISUSE);
    }
    imapmem_free(srv);
    srv = NULL;
  }
}

/* A fresh started server with one fault; NULL on failure. */
static imapmem *fault_server(const char *spec) {
  imapmem *srv = started_server();
  if (!srv) return NULL;
  int rc = imapmem_fault(srv, spec);
  if (rc != IMAPMEM_OK) {
    fprintf(stderr, "    fault \"%s\": %d %s\n", spec, rc, imapmem_errmsg(srv));
    imapmem_free(srv);
    return NULL;
  }
  return srv;
}

static void test_faults(void) {
  imapmem *srv;
  struct conn *c;
  long t0;

  /* NO / BAD with a text; other commands untouched; CMD matched in any case */
  srv = fault_server("noop=NO custom refusal");
  CHECK(srv != NULL);
  if (srv && (c = login_conn(srv)) != NULL) {
    CHECKM(strcmp(cmd(c, "NOOP"), "NO custom refusal") == 0, "%s", c->tagged);
    CHECK(ok(cmd(c, "CAPABILITY")));
    conn_free(c);
  }
  imapmem_free(srv);
  srv = fault_server("NOOP=BAD not today");
  CHECK(srv != NULL);
  if (srv && (c = login_conn(srv)) != NULL) {
    CHECKM(strcmp(cmd(c, "NOOP"), "BAD not today") == 0, "%s", c->tagged);
    conn_free(c);
  }
  imapmem_free(srv);

  /* APPEND as if the mailbox were full */
  srv = fault_server("APPEND=NO [OVERQUOTA] mailbox full");
  CHECK(srv != NULL);
  if (srv && (c = login_conn(srv)) != NULL) {
    CHECKM(strcmp(cmd(c, "APPEND INBOX {%zu+}\r\n%s", strlen(NEWMSG), NEWMSG),
                  "NO [OVERQUOTA] mailbox full") == 0, "%s", c->tagged);
    CHECK(ok(cmd(c, "NOOP")));                    /* the session goes on */
    CHECK(count_of(srv, "INBOX") == 6);
    conn_free(c);
  }
  imapmem_free(srv);

  /* a two-word command */
  srv = fault_server("UID FETCH=NO no uid fetch");
  CHECK(srv != NULL);
  if (srv && (c = pair_conn(srv, "alice")) != NULL) {
    CHECK(ok(cmd(c, "SELECT INBOX")));
    CHECKM(strcmp(cmd(c, "UID FETCH 1 (FLAGS)"), "NO no uid fetch") == 0, "%s", c->tagged);
    CHECK(ok(cmd(c, "FETCH 1 (FLAGS)")));
    conn_free(c);
  }
  imapmem_free(srv);

  /* DROP: closed, no reply at all */
  srv = fault_server("NOOP=DROP");
  CHECK(srv != NULL);
  if (srv && (c = login_conn(srv)) != NULL) {
    CHECK(ok(cmd(c, "CAPABILITY")));
    cmd(c, "NOOP");
    CHECKM(c->eof && c->tagged[0] == 0 && c->rlen == 0, "eof %d, \"%s\" \"%s\"", c->eof,
           c->resp, c->tagged);
    conn_free(c);
  }
  imapmem_free(srv);

  /* BYE text and close */
  srv = fault_server("NOOP=BYE going away");
  CHECK(srv != NULL);
  if (srv && (c = login_conn(srv)) != NULL) {
    cmd(c, "NOOP");
    CHECKM(c->eof && c->tagged[0] == 0 && strstr(c->resp, "* BYE going away\r\n") != NULL,
           "eof %d, \"%s\" \"%s\"", c->eof, c->resp, c->tagged);
    conn_free(c);
  }
  imapmem_free(srv);

  /* ALERT, then the command runs */
  srv = fault_server("SELECT=ALERT hello there");
  CHECK(srv != NULL);
  if (srv && (c = login_conn(srv)) != NULL) {
    CHECK(ok(cmd(c, "SELECT INBOX")));
    CHECKM(strstr(c->resp, "* OK [ALERT] hello there\r\n") != NULL, "%s", c->resp);
    CHECK(exists_num(c->resp) == 6);
    conn_free(c);
  }
  imapmem_free(srv);

  /* DELAY for one command; delay= for every response */
  srv = fault_server("NOOP=DELAY 300");
  CHECK(srv != NULL);
  if (srv && (c = login_conn(srv)) != NULL) {
    t0 = now_ms();
    CHECK(ok(cmd(c, "NOOP")));
    CHECKM(now_ms() - t0 >= 280, "NOOP took %ld ms", now_ms() - t0);
    t0 = now_ms();
    CHECK(ok(cmd(c, "CAPABILITY")));
    CHECKM(now_ms() - t0 < 250, "CAPABILITY took %ld ms", now_ms() - t0);
    conn_free(c);
  }
  imapmem_free(srv);
  srv = fault_server("delay=200");
  CHECK(srv != NULL);
  if (srv && (c = pair_conn(srv, "alice")) != NULL) {
    t0 = now_ms();
    CHECK(ok(cmd(c, "NOOP")));
    CHECKM(now_ms() - t0 >= 180, "NOOP took %ld ms", now_ms() - t0);
    t0 = now_ms();
    CHECK(ok(cmd(c, "CAPABILITY")));
    CHECKM(now_ms() - t0 >= 180, "CAPABILITY took %ld ms", now_ms() - t0);
    conn_free(c);
  }
  imapmem_free(srv);

  /* #N: the Nth command of every session */
  srv = fault_server("#2=DROP");
  CHECK(srv != NULL);
  for (int i = 0; srv && i < 2; i++) {
    c = pair_conn(srv, "alice");
    if (!c) break;
    CHECK(ok(cmd(c, "CAPABILITY")));
    cmd(c, "NOOP");
    CHECKM(c->eof && c->tagged[0] == 0, "session %d: \"%s\"", i, c->tagged);
    conn_free(c);
  }
  imapmem_free(srv);

  /* *: every command */
  srv = fault_server("*=NO not now");
  CHECK(srv != NULL);
  if (srv && (c = pair_conn(srv, "alice")) != NULL) {
    CHECKM(strcmp(cmd(c, "NOOP"), "NO not now") == 0, "%s", c->tagged);
    CHECKM(strcmp(cmd(c, "SELECT INBOX"), "NO not now") == 0, "%s", c->tagged);
    conn_free(c);
  }
  imapmem_free(srv);

  /* chunk=1: responses in one-byte writes are still whole and correct */
  srv = fault_server("chunk=1");
  CHECK(srv != NULL);
  if (srv && (c = pair_conn(srv, "alice")) != NULL) {
    CHECK(strncmp(c->greeting, "* PREAUTH", 9) == 0);
    CHECK(ok(cmd(c, "SELECT INBOX")) && exists_num(c->resp) == 6 &&
          code_num(c->resp, "UIDVALIDITY") == 42);
    CHECK(ok(cmd(c, "UID FETCH 1 BODY.PEEK[]")));
    const char *lit = NULL;
    long n = first_literal(c->resp, &lit);
    CHECK(n == (long)strlen(MSG1) && memcmp(lit, MSG1, (size_t)n) == 0);
    conn_free(c);
  }
  imapmem_free(srv);

  /* UIDVALIDITY: the mailbox gets a new one; sessions that had it selected get BYE */
  srv = fault_server("NOOP=UIDVALIDITY");
  CHECK(srv != NULL);
  if (srv) {
    struct conn *a = login_conn(srv), *b = pair_conn(srv, "alice");
    CHECK(a && ok(cmd(a, "SELECT INBOX")) && code_num(a->resp, "UIDVALIDITY") == 42);
    CHECK(b && ok(cmd(b, "NOOP")));              /* b has nothing selected: INBOX */
    CHECKM(a && conn_read_eof(a, 2000), "session with INBOX selected not closed");
    CHECKM(a && strstr(a->resp, "* BYE") != NULL, "selected session: \"%s\"", a ? a->resp : "");
    CHECK(count_of(srv, "INBOX") == 6);
    CHECK(imapmem_clear_faults(srv) == IMAPMEM_OK);
    struct conn *d = pair_conn(srv, "alice");
    long v = -1;
    CHECK(d && ok(cmd(d, "SELECT INBOX")) && exists_num(d->resp) == 6);
    if (d) v = code_num(d->resp, "UIDVALIDITY");
    CHECKM(v > 0 && v != 42, "UIDVALIDITY %ld", v);
    conn_free(d);
    /* reset brings the fixture's UIDVALIDITY back */
    CHECK(imapmem_reset(srv) == IMAPMEM_OK);
    d = pair_conn(srv, "alice");
    CHECK(d && ok(cmd(d, "SELECT INBOX")) && code_num(d->resp, "UIDVALIDITY") == 42);
    conn_free(d);
    conn_free(a);
    conn_free(b);
  }
  imapmem_free(srv);

  /* clear_faults: new sessions are served normally */
  srv = fault_server("NOOP=NO x");
  CHECK(srv && imapmem_fault(srv, "delay=300") == IMAPMEM_OK);
  CHECK(srv && imapmem_fault(srv, "#1=DROP") == IMAPMEM_OK);
  CHECK(srv && imapmem_clear_faults(srv) == IMAPMEM_OK);
  if (srv && (c = pair_conn(srv, "alice")) != NULL) {
    t0 = now_ms();
    CHECKM(ok(cmd(c, "NOOP")), "%s", c->tagged);
    CHECK(now_ms() - t0 < 250);
    conn_free(c);
  }
  imapmem_free(srv);
}

static void test_reset(void) {
  imapmem *srv = started_server();
  CHECK(srv != NULL);
  if (!srv) return;
  struct conn *a = login_conn(srv);            /* changes things, keeps INBOX selected */
  struct conn *b = login_conn(srv);            /* logged in, nothing selected */
  if (!a || !b) {
    CHECK(0);
    conn_free(a);
    conn_free(b);
    imapmem_free(srv);
    return;
  }
  struct conn *idler = pair_conn(srv, "alice");   /* selected and idling */
  CHECK(idler && ok(cmd(idler, "SELECT INBOX")));
  if (idler) {
    conn_sendf(idler, "i1 IDLE\r\n");
    resp_clear(idler);
    long off = conn_line(idler, IO_TIMEOUT);
    CHECK(off >= 0 && idler->resp[off] == '+');
  }
  CHECK(ok(cmd(b, "LSUB \"\" \"*\"")));
  char *lsub0 = strdup(b->resp);
  char *before[7] = {0};
  size_t blen[7] = {0};
  for (uint32_t u = 1; u <= 6; u++) imapmem_message(srv, "alice", "INBOX", u, &before[u], &blen[u]);
  CHECK(ok(cmd(a, "SELECT INBOX")));
  CHECK(ok(cmd(a, "UID STORE 1 +FLAGS (\\Flagged NewKeyword)")));
  CHECK(ok(cmd(a, "UID STORE 2 -FLAGS (\\Flagged $Label1)")));
  CHECK(ok(cmd(a, "UID STORE 3 +FLAGS (\\Deleted)")));
  CHECK(ok(cmd(a, "EXPUNGE")));                /* uids 3 and 5 go */
  CHECK(ok(cmd(a, "CREATE Made/ByClient")));
  CHECK(ok(cmd(a, "SUBSCRIBE Made/ByClient")));
  CHECK(ok(cmd(a, "COPY 1 Made/ByClient")));
  CHECK(imapmem_append(srv, "alice", "INBOX", NEWMSG, strlen(NEWMSG), NULL, NULL) == IMAPMEM_OK);
  CHECK(count_of(srv, "INBOX") == 5);

  long t0 = now_ms();
  CHECK(imapmem_reset(srv) == IMAPMEM_OK);
  CHECKM(now_ms() - t0 < 2000, "reset took %ld ms", now_ms() - t0);
  /* the session with a mailbox selected is disconnected with BYE; the other stays */
  CHECKM(conn_read_eof(a, 2000), "selected session not closed by reset");
  CHECKM(strstr(a->resp, "* BYE") != NULL, "selected session: \"%s\"", a->resp);
  CHECKM(idler && conn_read_eof(idler, 2000), "idling session not closed by reset");
  CHECKM(idler && strstr(idler->resp, "* BYE") != NULL, "idling session: \"%s\"",
         idler ? idler->resp : "");
  conn_free(idler);
  CHECK(ok(cmd(b, "NOOP")));
  /* everything is as loaded */
  uint32_t *uids = NULL;
  size_t n = 0;
  CHECK(imapmem_uids(srv, "alice", "INBOX", &uids, &n) == IMAPMEM_OK && n == 6);
  for (size_t i = 0; uids && i < n; i++) CHECK(uids[i] == i + 1);
  imapmem_release(uids);
  CHECK(flags_of_are(srv, "INBOX", 1, "\\Seen \\Answered"));
  CHECK(flags_of_are(srv, "INBOX", 2, "\\Flagged $Label1 work"));
  CHECK(flags_of_are(srv, "INBOX", 3, "\\Seen project"));
  CHECK(flags_of_are(srv, "INBOX", 5, "\\Seen \\Deleted todo later"));
  for (uint32_t u = 1; u <= 6; u++) {
    char *m = NULL;
    size_t len = 0;
    CHECK(imapmem_message(srv, "alice", "INBOX", u, &m, &len) == IMAPMEM_OK && before[u] &&
          len == blen[u] && memcmp(m, before[u], len) == 0);
    imapmem_release(m);
    imapmem_release(before[u]);
  }
  char *names = NULL;
  CHECK(mailbox_lines(srv, "alice", &names) == IMAPMEM_OK);
  CHECKM(names && strcmp(names, "INBOX\n") == 0, "%s", names ? names : "");
  imapmem_release(names);
  CHECK(ok(cmd(b, "LSUB \"\" \"*\"")));
  CHECKM(lsub0 && strcmp(b->resp, lsub0) == 0, "before %s after %s", lsub0, b->resp);
  free(lsub0);
  CHECK(ok(cmd(b, "SELECT INBOX")) && exists_num(b->resp) == 6 &&
        code_num(b->resp, "UIDVALIDITY") == 42);
  /* mailboxes loaded with load_mbox are part of the state reset returns to */
  const char mb[] = "From x@y Mon Nov 23 09:00:00 2026\nSubject: s\n\nb\n";
  CHECK(imapmem_load_mbox(srv, "alice", "Loaded", mb, strlen(mb), NULL) == IMAPMEM_OK);
  CHECK(ok(cmd(b, "DELETE Loaded")));
  CHECK(imapmem_reset(srv) == IMAPMEM_OK);
  CHECK(count_of(srv, "Loaded") == 1);
  conn_free(a);
  conn_free(b);
  imapmem_free(srv);
}

/* Compare user alice on two servers: mailboxes, uids, flags, bytes. */
static void same_state(imapmem *x, imapmem *y) {
  char *nx = NULL, *ny = NULL;
  CHECK(mailbox_lines(x, "alice", &nx) == IMAPMEM_OK);
  CHECK(mailbox_lines(y, "alice", &ny) == IMAPMEM_OK);
  CHECKM(nx && ny && strcmp(nx, ny) == 0, "before:\n%safter:\n%s", nx ? nx : "", ny ? ny : "");
  char *sv;
  for (char *box = nx ? strtok_r(nx, "\n", &sv) : NULL; box; box = strtok_r(NULL, "\n", &sv)) {
    uint32_t *ux = NULL, *uy = NULL;
    size_t cx = 0, cy = 0;
    int rx = imapmem_uids(x, "alice", box, &ux, &cx), ry = imapmem_uids(y, "alice", box, &uy, &cy);
    CHECKM(rx == ry && cx == cy, "%s: %d/%d %zu/%zu", box, rx, ry, cx, cy);
    for (size_t i = 0; rx == IMAPMEM_OK && ry == IMAPMEM_OK && i < cx && i < cy; i++) {
      CHECKM(ux[i] == uy[i], "%s: uid %u vs %u", box, (unsigned)ux[i], (unsigned)uy[i]);
      char *fx = NULL, *fy = NULL, *mx = NULL, *my = NULL;
      size_t lx = 0, ly = 0;
      imapmem_flags(x, "alice", box, ux[i], &fx);
      imapmem_flags(y, "alice", box, ux[i], &fy);
      CHECKM(fx && fy && flags_eq(fx, fy), "%s uid %u: \"%s\" vs \"%s\"", box, (unsigned)ux[i],
             fx ? fx : "", fy ? fy : "");
      imapmem_message(x, "alice", box, ux[i], &mx, &lx);
      imapmem_message(y, "alice", box, ux[i], &my, &ly);
      CHECKM(mx && my && lx == ly && memcmp(mx, my, lx) == 0, "%s uid %u bytes differ", box,
             (unsigned)ux[i]);
      imapmem_release(fx);
      imapmem_release(fy);
      imapmem_release(mx);
      imapmem_release(my);
    }
    imapmem_release(ux);
    imapmem_release(uy);
  }
  imapmem_release(nx);
  imapmem_release(ny);
}

static void test_save_load(void) {
  imapmem *srv = basic_server();
  CHECK(srv != NULL);
  if (!srv) return;
  struct conn *c = pair_conn(srv, "alice");
  if (!c) {
    CHECK(0);
    imapmem_free(srv);
    return;
  }
  CHECK(ok(cmd(c, "SELECT INBOX")));
  CHECK(ok(cmd(c, "UID STORE 1 +FLAGS (\\Flagged $Saved)")));
  CHECK(ok(cmd(c, "UID STORE 2 +FLAGS (\\Seen)")));
  CHECK(ok(cmd(c, "UID STORE 3 +FLAGS (\\Deleted)")));
  CHECK(ok(cmd(c, "EXPUNGE")));                      /* uids 3, 5 gone: a gap to keep */
  CHECK(ok(cmd(c, "CREATE Work/Projects")));
  CHECK(ok(cmd(c, "COPY 2 Work/Projects")));
  CHECK(ok(cmd(c, "CREATE Sent")));
  const char tricky[] = "Subject: tricky\r\n\r\nFrom the start of a line\r\n>From quoted once\r\n"
                        "\r\nFrom after a blank line\r\nend\r\n";
  uint32_t uid = 0;
  CHECK(imapmem_append(srv, "alice", "INBOX", tricky, strlen(tricky), "\\Answered kw2", &uid) ==
        IMAPMEM_OK);
  CHECK(ok(cmd(c, "NOOP")));                         /* takes the EXISTS of the delivery */
  CHECK(ok(cmd(c, "UID FETCH 1:* (UID INTERNALDATE)")));
  char *dates0 = strdup(c->resp);
  CHECK(ok(cmd(c, "LOGOUT")));
  conn_free(c);

  char dir[] = "/tmp/imapmem-save-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  int rc = imapmem_save(srv, "alice", dir);
  CHECKM(rc == IMAPMEM_OK, "%s", imapmem_errmsg(srv));
  CHECK(file_exists(dir, "INBOX.mbox"));
  CHECK(file_exists(dir, "Work/Projects.mbox"));
  CHECK(file_exists(dir, "Sent.mbox"));

  imapmem *again = NULL;
  CHECK(imapmem_new(NULL, &again) == IMAPMEM_OK);   /* UIDVALIDITY from X-IMAPbase */
  if (again) {
    CHECK(imapmem_add_user(again, "alice", "secret") == IMAPMEM_OK);
    rc = imapmem_load(again, "alice", dir);
    CHECKM(rc == IMAPMEM_OK, "%s", imapmem_errmsg(again));
    same_state(srv, again);
    CHECK(flags_of_are(again, "INBOX", 1, "\\Seen \\Answered \\Flagged $Saved"));
    CHECK(flags_of_are(again, "INBOX", uid, "\\Answered kw2"));
    char *m = NULL;
    size_t len = 0;
    CHECK(imapmem_message(again, "alice", "INBOX", uid, &m, &len) == IMAPMEM_OK && m &&
          len == strlen(tricky) && memcmp(m, tricky, len) == 0);
    imapmem_release(m);
    c = pair_conn(again, "alice");
    CHECK(c && ok(cmd(c, "SELECT INBOX")) && code_num(c->resp, "UIDVALIDITY") == 42);
    CHECK(c && ok(cmd(c, "UID FETCH 1:* (UID INTERNALDATE)")));
    CHECKM(c && dates0 && strcmp(c->resp, dates0) == 0, "before:\n%safter:\n%s", dates0,
           c ? c->resp : "");
    conn_free(c);
    imapmem_free(again);
  }
  free(dates0);
  rm_tree(dir);
  imapmem_free(srv);
}

/* A client that vanishes while the server writes to it must not kill the process
   (SIGPIPE). Run in a child so that the rest of the tests go on either way. */
static void test_no_sigpipe(void) {
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid == 0) {
    imapmem *srv = started_server();
    if (!srv) _exit(3);
    struct conn *c = login_conn(srv);
    if (!c || !ok(cmd(c, "SELECT INBOX"))) _exit(4);
    for (int i = 0; i < 50; i++) conn_sendf(c, "f%d FETCH 1:* (BODY[])\r\n", i);
    conn_free(c);                       /* gone, with responses still to come */
    struct conn *d = login_conn(srv);
    if (d) {
      conn_sendf(d, "x NOOP\r\n");
      close(d->fd);                     /* and one that is gone at stop */
      d->fd = -1;
    }
    sleep_ms(300);
    imapmem_free(srv);
    conn_free(d);
    exit(0);
  }
  int st = 0;
  CHECK(pid > 0 && waitpid(pid, &st, 0) == pid);
  CHECKM(!WIFSIGNALED(st), "killed by signal %d", WTERMSIG(st));
  CHECKM(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status %d", WEXITSTATUS(st));
}

/*
** ---------------------------------------------------------------------------
** Regression tests for commit 6152f31: configuration ranges, error text on every failure
** and per thread, descriptor ownership at imapmem_stop(), and a failed start that leaks
** nothing.
** ---------------------------------------------------------------------------
*/

/* Settings out of range are refused by imapmem_new, with a text that says which. */
static void test_config_range(void) {
  struct {
    const char *field;
    struct imapmem_config cfg;
  } bad[3];
  memset(bad, 0, sizeof bad);
  bad[0].field = "idle_timeout";
  bad[0].cfg.idle_timeout = 3000000;                 /* its milliseconds overflow an int */
  bad[1].field = "max_connections";
  bad[1].cfg.max_connections = -1;
  bad[2].field = "max_literal";
  int nbad = 2;
  if (sizeof(size_t) > 4) {
    bad[2].cfg.max_literal = (size_t)1 << (sizeof(size_t) > 4 ? 40 : 0);   /* 1 TiB */
    nbad = 3;
  }
  for (int i = 0; i < nbad; i++) {
    imapmem *srv = (imapmem *)&bad[i];               /* anything but NULL */
    int rc = imapmem_new(&bad[i].cfg, &srv);
    const char *msg = imapmem_errmsg(NULL);
    CHECKM(rc == IMAPMEM_MISUSE, "%s: rc %d", bad[i].field, rc);
    CHECKM(srv == NULL, "%s: *out not NULL", bad[i].field);
    CHECKM(strstr(msg, bad[i].field) && strstr(msg, "range"), "%s: errmsg(NULL) \"%s\"",
           bad[i].field, msg);
    if (rc == IMAPMEM_OK) imapmem_free(srv);
  }
  /* the largest idle_timeout is accepted and a session runs normally with it */
  struct imapmem_config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.idle_timeout = 2147483;
  imapmem *srv = NULL;
  int rc = imapmem_new(&cfg, &srv);
  CHECKM(rc == IMAPMEM_OK && srv, "rc %d: %s", rc, imapmem_errmsg(NULL));
  if (!srv) return;
  CHECK(imapmem_add_user(srv, "alice", "secret") == IMAPMEM_OK);
  CHECK(imapmem_load(srv, "alice", BASIC) == IMAPMEM_OK);
  struct conn *c = pair_conn(srv, NULL);
  CHECK(c && strncmp(c->greeting, "* OK", 4) == 0);
  if (c) {
    CHECKM(ok(cmd(c, "LOGIN alice secret")), "%s", c->tagged);
    CHECKM(ok(cmd(c, "NOOP")), "%s", c->tagged);
    CHECKM(ok(cmd(c, "SELECT INBOX")) && exists_num(c->resp) == 6, "%s", c->tagged);
    CHECKM(ok(cmd(c, "LOGOUT")), "%s", c->tagged);
    CHECK(conn_read_eof(c, 2000));
    conn_free(c);
  }
  imapmem_free(srv);
}

/* Does the text m hold name (NULL: any text will do)? */
static int names_or_any(const char *m, const char *name) { return !name || strstr(m, name); }

/* Every non-OK return leaves a text about that failure, never the previous one. */
static void test_errmsg_every_failure(void) {
  imapmem *srv = basic_server();
  CHECK(srv != NULL);
  if (!srv) return;
  size_t n = 0;
  uint32_t *uids = NULL, uid = 0;
  char *s = NULL;
  struct imapmem_until u;
  memset(&u, 0, sizeof u);
  u.kind = IMAPMEM_UNTIL_NO_SESSIONS;
#define STALE_THEN(call, code, fname)                                                   \
  do {                                                                                  \
    int rc0 = imapmem_load(srv, "nobody-xyzzy", BASIC);                                 \
    CHECKM(rc0 == IMAPMEM_NOTFOUND && strstr(imapmem_errmsg(srv), "nobody-xyzzy"),      \
           "load for no such user: rc %d, \"%s\"", rc0, imapmem_errmsg(srv));           \
    int rc1 = (call);                                                                   \
    const char *m = imapmem_errmsg(srv);                                                \
    CHECKM(rc1 == (code), "%s: rc %d", #call, rc1);                                     \
    CHECKM(*m && !strstr(m, "nobody-xyzzy") && names_or_any(m, (fname)),        \
           "%s: errmsg \"%s\"", #call, m);                                              \
  } while (0)
  /* the ones named in the change: the text names the function */
  STALE_THEN(imapmem_count(srv, "alice", "INBOX", NULL), IMAPMEM_MISUSE, "imapmem_count");
  STALE_THEN(imapmem_uids(srv, "alice", "INBOX", NULL, &n), IMAPMEM_MISUSE, "imapmem_uids");
  STALE_THEN(imapmem_uids(srv, "alice", "INBOX", &uids, NULL), IMAPMEM_MISUSE, "imapmem_uids");
  STALE_THEN(imapmem_start(srv, "127.0.0.1", 70000), IMAPMEM_MISUSE, "imapmem_start");
  STALE_THEN(imapmem_start(srv, "127.0.0.1", -1), IMAPMEM_MISUSE, "imapmem_start");
  STALE_THEN(imapmem_append(srv, "alice", "INBOX", "x", 0, NULL, &uid), IMAPMEM_MISUSE,
             "imapmem_append");
  STALE_THEN(imapmem_append(srv, "alice", "INBOX", NULL, 5, NULL, &uid), IMAPMEM_MISUSE,
             "imapmem_append");
  /* every other MISUSE: some text about this call */
  STALE_THEN(imapmem_add_user(srv, NULL, "x"), IMAPMEM_MISUSE, NULL);
  STALE_THEN(imapmem_add_user(srv, "", "x"), IMAPMEM_MISUSE, NULL);
  STALE_THEN(imapmem_load(srv, "alice", NULL), IMAPMEM_MISUSE, NULL);
  STALE_THEN(imapmem_load_mbox(srv, "alice", NULL, "", 0, NULL), IMAPMEM_MISUSE, NULL);
  STALE_THEN(imapmem_mailboxes(srv, "alice", NULL, &n), IMAPMEM_MISUSE, NULL);
  STALE_THEN(imapmem_count(srv, NULL, "INBOX", &n), IMAPMEM_MISUSE, NULL);
  STALE_THEN(imapmem_flags(srv, "alice", "INBOX", 1, NULL), IMAPMEM_MISUSE, NULL);
  STALE_THEN(imapmem_message(srv, "alice", "INBOX", 1, NULL, &n), IMAPMEM_MISUSE, NULL);
  STALE_THEN(imapmem_save(srv, "alice", NULL), IMAPMEM_MISUSE, NULL);
  STALE_THEN(imapmem_wait(srv, NULL, 10), IMAPMEM_MISUSE, NULL);
  STALE_THEN(imapmem_wait(srv, &u, -1), IMAPMEM_MISUSE, NULL);
  STALE_THEN(imapmem_fault(srv, NULL), IMAPMEM_MISUSE, NULL);
  STALE_THEN(imapmem_set_capability(srv, NULL, 0), IMAPMEM_MISUSE, NULL);
  STALE_THEN(imapmem_serve_fd(srv, -1, -1, NULL), IMAPMEM_MISUSE, NULL);
  /* and the other codes */
  STALE_THEN(imapmem_count(srv, "alice", "NoSuchBox", &n), IMAPMEM_NOTFOUND, "NoSuchBox");
  STALE_THEN(imapmem_flags(srv, "alice", "INBOX", 99, &s), IMAPMEM_NOTFOUND, NULL);
  STALE_THEN(imapmem_add_user(srv, "alice", "again"), IMAPMEM_EXISTS, "alice");
  STALE_THEN(imapmem_fault(srv, "NOOP=EXPLODE"), IMAPMEM_PARSE, NULL);
  STALE_THEN(imapmem_set_capability(srv, "XYZZY", 0), IMAPMEM_NOTFOUND, NULL);
  struct imapmem_until never = u;
  never.kind = IMAPMEM_UNTIL_COUNT;
  never.user = "alice";
  never.mailbox = "INBOX";
  never.count = 99;
  STALE_THEN(imapmem_wait(srv, &never, 10), IMAPMEM_ERROR, "timed out");
#undef STALE_THEN
  imapmem_release(s);
  imapmem_free(srv);

  /* a call on no handle at all: the text is there for imapmem_errmsg(NULL) */
  CHECK(imapmem_count(NULL, "alice", "INBOX", &n) == IMAPMEM_MISUSE);
  CHECKM(*imapmem_errmsg(NULL), "errmsg(NULL) is empty");
}

/* Two threads failing on one handle at the same moments each read back their own text. */
#define ERRMSG_ROUNDS 1000
struct errmsg_thread {
  imapmem *srv;
  pthread_barrier_t *barrier;
  int which;                 /* 0: imapmem_load of user ghost-A; 1: imapmem_count of ghost-B */
  int wrong, badcode;
  char example[600];
};

static void *errmsg_thread_main(void *p) {
  struct errmsg_thread *t = p;
  const char *mine = t->which ? "ghost-B-count" : "ghost-A-load";
  const char *theirs = t->which ? "ghost-A-load" : "ghost-B-count";
  for (int i = 0; i < ERRMSG_ROUNDS; i++) {
    size_t n;
    pthread_barrier_wait(t->barrier);          /* both fail at once ... */
    int rc = t->which ? imapmem_count(t->srv, mine, "INBOX", &n)
                      : imapmem_load(t->srv, mine, BASIC);
    if (rc != IMAPMEM_NOTFOUND) t->badcode++;
    pthread_barrier_wait(t->barrier);          /* ... both texts are written, then read */
    char got[600];
    snprintf(got, sizeof got, "%s", imapmem_errmsg(t->srv));
    if (!strstr(got, mine) || strstr(got, theirs)) {
      if (!t->wrong++) snprintf(t->example, sizeof t->example, "%s", got);
    }
    pthread_barrier_wait(t->barrier);          /* reads done before the next failures */
  }
  return NULL;
}

static void test_errmsg_per_thread(void) {
  imapmem *srv = basic_server();
  CHECK(srv != NULL);
  if (!srv) return;
  pthread_barrier_t barrier;
  pthread_barrier_init(&barrier, NULL, 2);
  struct errmsg_thread t[2];
  pthread_t th[2];
  for (int i = 0; i < 2; i++) {
    memset(&t[i], 0, sizeof t[i]);
    t[i].srv = srv;
    t[i].barrier = &barrier;
    t[i].which = i;
    if (pthread_create(&th[i], NULL, errmsg_thread_main, &t[i]) != 0) abort();
  }
  for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
  pthread_barrier_destroy(&barrier);
  for (int i = 0; i < 2; i++) {
    CHECKM(t[i].badcode == 0, "thread %d: %d calls did not fail with NOTFOUND", i, t[i].badcode);
    CHECKM(t[i].wrong == 0, "thread %d read a text not its own %d times of %d, e.g. \"%s\"",
           i, t[i].wrong, ERRMSG_ROUNDS, t[i].example);
  }
  /* the main thread made no call that failed: nothing for it */
  CHECKM(strcmp(imapmem_errmsg(srv), "") == 0 || !strstr(imapmem_errmsg(srv), "ghost-"),
         "main thread sees \"%s\"", imapmem_errmsg(srv));
  imapmem_free(srv);
}

/*
** Descriptor ownership: imapmem_stop() never touches a session's descriptors; a session's
** own thread closes them. The test makes descriptors of its own at the moments their
** numbers are likely to be ones a session has just closed (sessions that ended, and a
** thread that makes descriptors while imapmem_stop() runs), and checks after the stop
** that every one still carries a byte from one end to the other.
*/
#define OWN_MAX 256
struct own_fds {
  int fd[OWN_MAX][2];        /* [0]: write end, [1]: read end (pipe or socketpair) */
  int n;
};

static void own_add(struct own_fds *o, int sock) {
  if (o->n >= OWN_MAX) return;
  int p[2];
  int r = sock ? socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p) : pipe2(p, O_CLOEXEC);
  if (r < 0) return;
  o->fd[o->n][0] = sock ? p[0] : p[1];
  o->fd[o->n][1] = sock ? p[1] : p[0];
  o->n++;
}

/* How many of o's descriptor pairs do not carry a byte; the first failure goes to why. */
static int own_broken(struct own_fds *o, char *why, size_t whycap) {
  int bad = 0;
  for (int i = 0; i < o->n; i++) {
    char b = (char)('a' + i % 26), got = 0;
    ssize_t w = send(o->fd[i][0], &b, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0 && errno == ENOTSOCK) w = write(o->fd[i][0], &b, 1);
    int e = errno;
    struct pollfd pf = {o->fd[i][1], POLLIN, 0};
    ssize_t r = w == 1 && poll(&pf, 1, 1000) == 1 ? read(o->fd[i][1], &got, 1) : -1;
    if (w != 1 || r != 1 || got != b) {
      if (!bad++)
        snprintf(why, whycap, "descriptors %d -> %d: write %zd (%s), read %zd", o->fd[i][0],
                 o->fd[i][1], w, w < 0 ? strerror(e) : "ok", r);
    }
  }
  return bad;
}

static void own_close(struct own_fds *o) {
  for (int i = 0; i < o->n; i++) {
    close(o->fd[i][0]);
    close(o->fd[i][1]);
  }
  o->n = 0;
}

struct churn {
  struct own_fds own;
  atomic_int stop;
};

static void *churn_main(void *p) {
  struct churn *ch = p;
  for (int i = 0; !atomic_load(&ch->stop) && ch->own.n < OWN_MAX; i++) {
    own_add(&ch->own, i % 3 != 2);
    if (i % 8 == 7) sched_yield();
  }
  return NULL;
}

static void test_stop_leaves_descriptors_alone(void) {
  enum { ROUNDS = 200, NS = 8 };
  int broken_rounds = 0, slow_rounds = 0, open_clients = 0, worst_ms = 0;
  char why[512] = "";
  for (int round = 0; round < ROUNDS; round++) {
    imapmem *srv = basic_server();
    if (!srv) {
      CHECK(srv != NULL);
      return;
    }
    /* Sessions: on one socketpair end (some preauthenticated), on two socketpairs (in and
       out apart) and on two pipes, as stdin/stdout would be. client[k] is what the test
       writes to (-1: the same as cread[k]), cread[k] what it reads from. */
    int client[NS], cread[NS];
    for (int k = 0; k < NS; k++) {
      client[k] = cread[k] = -1;
      int a[2], b[2];
      if (k < 4) {
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a) < 0) continue;
        if (imapmem_serve_fd(srv, a[0], a[0], k % 2 ? "alice" : NULL) != IMAPMEM_OK) {
          close(a[1]);
          continue;
        }
        cread[k] = a[1];
      } else {
        int sock = k < 7;
        int r1 = sock ? socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, a) : pipe2(a, O_CLOEXEC);
        int r2 = sock ? socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, b) : pipe2(b, O_CLOEXEC);
        if (r1 < 0 || r2 < 0) continue;
        /* the server reads a[0] and writes b[sock ? 0 : 1]; the test the other ends */
        int out = sock ? b[0] : b[1], back = sock ? b[1] : b[0];
        if (imapmem_serve_fd(srv, a[0], out, "alice") != IMAPMEM_OK) {
          close(a[1]);
          close(back);
          continue;
        }
        client[k] = a[1];
        cread[k] = back;
      }
    }
    /* everyone greeted: the session threads run */
    for (int k = 0; k < NS; k++) {
      if (cread[k] < 0) continue;
      struct pollfd pf = {cread[k], POLLIN, 0};
      char g[512];
      if (poll(&pf, 1, IO_TIMEOUT) == 1) {
        ssize_t r = read(cread[k], g, sizeof g);
        (void)r;
      }
    }
    /* Session 6 (in and out on two socketpairs) is kept busy writing: its client asks for
       much more than the socket holds and never reads it. Every tenth round. */
    if (round % 10 == 0 && client[6] >= 0) {
      static char cmds[16384];
      size_t len = (size_t)snprintf(cmds, sizeof cmds, "s SELECT INBOX\r\n");
      for (int i = 0; len + 64 < sizeof cmds; i++)
        len += (size_t)snprintf(cmds + len, sizeof cmds - len, "f%d FETCH 1:* BODY[]\r\n", i);
      ssize_t w = send(client[6], cmds, len, MSG_DONTWAIT | MSG_NOSIGNAL);   /* never blocks */
      (void)w;
      sleep_ms(20);
    }
    /* Sessions 0, 2, 4 and 7 end: their clients go away ... */
    int ended[] = {0, 2, 4, 7};
    for (size_t i = 0; i < sizeof ended / sizeof *ended; i++) {
      int k = ended[i];
      if (client[k] >= 0) {
        close(client[k]);
        client[k] = -1;
      } else if (cread[k] >= 0) {
        close(cread[k]);
        cread[k] = -1;
      }
    }
    /* ... and the test makes descriptors of its own at once, then while stop runs */
    struct own_fds own;
    own.n = 0;
    for (int i = 0; i < 12; i++) own_add(&own, i % 3 != 2);
    struct churn *ch = calloc(1, sizeof *ch);
    if (!ch) abort();
    atomic_init(&ch->stop, 0);
    pthread_t cth;
    int churning = pthread_create(&cth, NULL, churn_main, ch) == 0;
    long t0 = now_ms();
    int rc = imapmem_stop(srv);
    long took = now_ms() - t0;
    atomic_store(&ch->stop, 1);
    if (churning) pthread_join(cth, NULL);
    CHECKM(rc == IMAPMEM_OK, "round %d: stop rc %d", round, rc);
    if (took > worst_ms) worst_ms = (int)took;
    if (took >= 900) slow_rounds++;
    char w1[128] = "", w2[128] = "";
    int b1 = own_broken(&own, w1, sizeof w1), b2 = own_broken(&ch->own, w2, sizeof w2);
    if (b1 || b2) {
      if (!broken_rounds++)
        snprintf(why, sizeof why, "round %d: %d + %d broken; %s%s", round, b1, b2, w1, w2);
    }
    /* every session closed its end: the clients still open see the end */
    for (int k = 0; k < NS; k++) {
      if (cread[k] < 0) continue;
      long end = now_ms() + 3000;
      int eof = 0;
      char buf[65536];
      while (!eof && now_ms() < end) {
        struct pollfd pf = {cread[k], POLLIN, 0};
        if (poll(&pf, 1, 100) != 1) continue;
        ssize_t r = read(cread[k], buf, sizeof buf);
        if (r <= 0) eof = 1;
      }
      if (!eof) open_clients++;
      close(cread[k]);
      if (client[k] >= 0) close(client[k]);
    }
    own_close(&own);
    own_close(&ch->own);
    free(ch);
    imapmem_free(srv);
  }
  CHECKM(broken_rounds == 0, "a test-owned descriptor stopped working in %d of %d rounds: %s",
         broken_rounds, ROUNDS, why);
  CHECKM(open_clients == 0, "%d sessions' descriptors were still open after stop", open_clients);
  /* a session waiting to write to a client that does not read gives way to stop at once,
     without the stop thread cutting its descriptors off */
  CHECKM(slow_rounds == 0, "imapmem_stop took 900 ms or more in %d rounds (worst %d ms)",
         slow_rounds, worst_ms);
}

/* The number of open descriptors of this process. */
static int open_fd_count(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

static void *nothing_main(void *p) { return p; }

/* A failed imapmem_start (the accept thread cannot be created) leaks no descriptor. */
static void test_failed_start_leaks_nothing(void) {
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid == 0) {
    /* in the child: threads get a default stack larger than the address space can hold,
       so pthread_create fails */
    imapmem *srv = basic_server();
    if (!srv) _exit(3);
    struct addrinfo *ai = NULL;                 /* whatever the resolver keeps open */
    if (getaddrinfo("127.0.0.1", "0", NULL, &ai) == 0) freeaddrinfo(ai);
    pthread_attr_t normal, huge;
    if (pthread_getattr_default_np(&normal) != 0) _exit(77);
    pthread_attr_init(&huge);
    if (pthread_attr_setstacksize(&huge, (size_t)1 << (sizeof(size_t) > 4 ? 46 : 31)) != 0 ||
        pthread_setattr_default_np(&huge) != 0)
      _exit(77);
    pthread_t probe;
    if (pthread_create(&probe, NULL, nothing_main, NULL) == 0) {
      pthread_join(probe, NULL);
      _exit(77);                                /* cannot make it fail here: skip */
    }
    int before = open_fd_count();
    int rc = imapmem_start(srv, "127.0.0.1", 0);
    int after = open_fd_count();
    int port = imapmem_port(srv);
    char msg[512];
    snprintf(msg, sizeof msg, "%s", imapmem_errmsg(srv));
    pthread_setattr_default_np(&normal);
    int fails = 0;
    if (rc == IMAPMEM_OK) {
      fprintf(stderr, "FAIL: imapmem_start succeeded without an accept thread\n");
      fails++;
    }
    if (after != before) {
      fprintf(stderr, "FAIL: %d descriptors open before the failed start, %d after\n", before,
              after);
      fails++;
    }
    if (port != -1 || !*msg) {
      fprintf(stderr, "FAIL: after the failed start: port %d, errmsg \"%s\"\n", port, msg);
      fails++;
    }
    /* nothing half-started is left: with threads possible again, a start works */
    if (imapmem_start(srv, "127.0.0.1", 0) != IMAPMEM_OK || imapmem_port(srv) <= 0) {
      fprintf(stderr, "FAIL: start after the failed start: %s\n", imapmem_errmsg(srv));
      fails++;
    }
    imapmem_free(srv);
    _exit(fails ? 1 : 0);
  }
  int st = 0;
  CHECK(pid > 0 && waitpid(pid, &st, 0) == pid);
  if (WIFEXITED(st) && WEXITSTATUS(st) == 77) {
    printf("    (skipped: pthread_create could not be made to fail)\n");
    return;
  }
  CHECKM(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child: %s %d",
         WIFEXITED(st) ? "exit status" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
}

/* A name a client could not CREATE is refused by imapmem_load_mbox, and nothing is made. */
static void test_load_mbox_names(void) {
  imapmem *srv;
  CHECK(imapmem_new(NULL, &srv) == IMAPMEM_OK);
  CHECK(imapmem_add_user(srv, "u", "p") == IMAPMEM_OK);
  const char *bad[] = {"../x", "/abs", "a*b", "a%", "a//b", "x/.hidden", ".x", "a/", "tab\there"};
  const char *box = "From a Mon Jan  1 00:00:00 2024\nSubject: x\n\nx\n";
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    CHECKM(imapmem_load_mbox(srv, "u", bad[i], box, strlen(box), NULL) == IMAPMEM_MISUSE, "%s",
           bad[i]);
    CHECKM(strstr(imapmem_errmsg(srv), "could create") != NULL, "%s: %s", bad[i],
           imapmem_errmsg(srv));
  }
  char *names = NULL;
  CHECK(mailbox_lines(srv, "u", &names) == IMAPMEM_OK && names && !strcmp(names, "INBOX\n"));
  imapmem_release(names);
  CHECK(imapmem_load_mbox(srv, "u", "Good/Name", box, strlen(box), NULL) == IMAPMEM_OK);
  imapmem_free(srv);
}

/* The API's second pass: marks and the next event, dated appends, the mailbox array, and
   a load while serving that leaves what clients did out of the reset baseline. */
static void test_api_second_pass(void) {
  imapmem *srv = started_server();
  CHECK(srv != NULL);
  if (!srv) return;
  /* the next login, even when its session has ended before the waiter looks */
  struct conn *c = login_conn(srv);
  uint64_t mark = imapmem_mark(srv);
  CHECK(mark > 0);
  struct imapmem_until next = {.kind = IMAPMEM_UNTIL_LOGIN, .user = "alice", .since = mark};
  CHECK(imapmem_wait(srv, &next, 200) == IMAPMEM_ERROR);   /* alice is logged in, but the */
  struct conn *d = login_conn(srv);                         /* next login is yet to come */
  conn_free(d);
  CHECK(imapmem_wait(srv, &next, 5000) == IMAPMEM_OK);
  struct imapmem_until state = {.kind = IMAPMEM_UNTIL_LOGIN, .user = "alice"};
  CHECK(imapmem_wait(srv, &state, 100) == IMAPMEM_OK);      /* the state: c is still in */
  mark = imapmem_mark(srv);
  struct imapmem_until sel = {.kind = IMAPMEM_UNTIL_SELECTED, .user = "alice",
                              .mailbox = "INBOX", .since = mark};
  CHECK(imapmem_wait(srv, &sel, 100) == IMAPMEM_ERROR);
  CHECK(c && ok(cmd(c, "SELECT INBOX")) && ok(cmd(c, "UNSELECT")));
  CHECK(imapmem_wait(srv, &sel, 5000) == IMAPMEM_OK);       /* selected, and left again */
  struct imapmem_until flagged = {.kind = IMAPMEM_UNTIL_FLAG, .user = "alice",
                                  .mailbox = "INBOX", .uid = 1, .flag = "\\Seen",
                                  .since = mark};
  CHECK(imapmem_wait(srv, &flagged, 10) == IMAPMEM_MISUSE);  /* flags count no events */
  /* a dated append: INTERNALDATE as given, in its zone */
  const char msg[] = "Subject: dated\r\n\r\nx\r\n";
  uint32_t uid = 0;
  CHECK(imapmem_append_dated(srv, "alice", "INBOX", msg, strlen(msg), NULL, 1769936400, 60,
                             &uid) == IMAPMEM_OK);
  CHECK(c && ok(cmd(c, "SELECT INBOX")));
  char fetch[64];
  snprintf(fetch, sizeof fetch, "UID FETCH %u INTERNALDATE", (unsigned)uid);
  CHECKM(c && ok(cmd(c, "%s", fetch)) && strstr(c->resp, "\" 1-Feb-2026 10:00:00 +0100\""),
         "%s", c ? c->resp : "");
  CHECK(imapmem_append_dated(srv, "alice", "INBOX", msg, strlen(msg), NULL, 0, 1440, NULL) ==
        IMAPMEM_MISUSE);
  /* the mailbox names: an array, INBOX first, NULL after the last, one block */
  char **names = NULL;
  size_t n = 0;
  CHECK(c && ok(cmd(c, "CREATE Zeta")) && ok(cmd(c, "CREATE Alpha/Beta")));
  CHECK(imapmem_mailboxes(srv, "alice", &names, &n) == IMAPMEM_OK && n == 4);
  CHECK(names && !strcmp(names[0], "INBOX") && !strcmp(names[1], "Alpha") &&
        !strcmp(names[2], "Alpha/Beta") && !strcmp(names[3], "Zeta") && names[4] == NULL);
  imapmem_release(names);
  /* a load while serving: reset returns to what was loaded, not to what clients did */
  size_t before = count_of(srv, "INBOX");                   /* fixture + 1 dated append */
  const char box[] = "From a Mon Jan  1 00:00:00 2024\nSubject: late\n\nlate\n";
  CHECK(imapmem_load_mbox(srv, "alice", "INBOX", box, strlen(box), NULL) == IMAPMEM_OK);
  CHECK(count_of(srv, "INBOX") == before + 1);
  CHECK(imapmem_load_mbox(srv, "alice", "Late", box, strlen(box), NULL) == IMAPMEM_OK);
  conn_free(c);
  CHECK(imapmem_reset(srv) == IMAPMEM_OK);
  CHECK(count_of(srv, "INBOX") == before);     /* the fixture (6) + the late load: 7 */
  CHECK(count_of(srv, "Late") == 1);
  char *lines = NULL;                         /* Zeta and Alpha/Beta were the clients' */
  CHECK(mailbox_lines(srv, "alice", &lines) == IMAPMEM_OK);
  CHECKM(lines && !strcmp(lines, "INBOX\nLate\n"), "%s", lines ? lines : "");
  free(lines);
  imapmem_free(srv);
}

/*
** Changes behind the clients' backs, for testing clients' resync (RFC 7162): a QRESYNC
** client that comes back finds the API's flag change through CHANGEDSINCE and its expunge
** in VANISHED (EARLIER); imapmem_modseq reads the numbers; NOMODSEQ and the capability
** list through the API; the MODSEQ-BACK and FORGET-EXPUNGED faults.
*/
static void test_resync_api(void) {
  imapmem *srv = basic_server();
  CHECK(srv != NULL);
  if (!srv) return;
  uint64_t h0 = 0, h1 = 0, m2 = 0;
  CHECK(imapmem_modseq(srv, "alice", "INBOX", 0, &h0) == IMAPMEM_OK && h0 >= 1);
  struct conn *c = pair_conn(srv, "alice");
  CHECK(c && ok(cmd(c, "ENABLE QRESYNC")) && ok(cmd(c, "SELECT INBOX")));
  char want[64];
  snprintf(want, sizeof want, "[HIGHESTMODSEQ %llu]", (unsigned long long)h0);
  CHECKM(c && strstr(c->resp, want), "%s", c ? c->resp : "");
  conn_free(c);

  CHECKM(imapmem_set_flags(srv, "alice", "INBOX", 2, "\\Seen $Urgent") == IMAPMEM_OK, "%s",
         imapmem_errmsg(srv));
  CHECK(flags_of_are(srv, "INBOX", 2, "\\Seen $Urgent"));
  CHECK(imapmem_expunge(srv, "alice", "INBOX", 3) == IMAPMEM_OK);
  CHECK(count_of(srv, "INBOX") == 5);
  CHECK(imapmem_modseq(srv, "alice", "INBOX", 2, &m2) == IMAPMEM_OK && m2 > h0);
  CHECK(imapmem_modseq(srv, "alice", "INBOX", 0, &h1) == IMAPMEM_OK && h1 > m2);
  CHECK(imapmem_modseq(srv, "alice", "INBOX", 3, &m2) == IMAPMEM_NOTFOUND);
  CHECK(imapmem_expunge(srv, "alice", "INBOX", 3) == IMAPMEM_NOTFOUND);
  CHECK(imapmem_set_flags(srv, "alice", "INBOX", 2, "(\\Seen") == IMAPMEM_MISUSE);
  CHECK(imapmem_set_flags(srv, "alice", "Nope", 2, NULL) == IMAPMEM_NOTFOUND);
  CHECK(imapmem_modseq(srv, "alice", "INBOX", 0, NULL) == IMAPMEM_MISUSE);

  c = pair_conn(srv, "alice");
  CHECK(c && ok(cmd(c, "ENABLE QRESYNC")));
  CHECKM(c && ok(cmd(c, "SELECT INBOX (QRESYNC (42 %llu))", (unsigned long long)h0)), "%s",
         c ? c->tagged : "");
  CHECKM(c && strstr(c->resp, "* VANISHED (EARLIER) 3\r\n"), "%s", c ? c->resp : "");
  CHECKM(c && strstr(c->resp, "FETCH (UID 2 ") && strstr(c->resp, "$Urgent") &&
         !strstr(c->resp, "UID 1 "), "%s", c ? c->resp : "");
  conn_free(c);

  /* NOMODSEQ through the API; a reset keeps it */
  CHECK(imapmem_set_nomodseq(srv, "alice", "INBOX", 1) == IMAPMEM_OK);
  CHECK(imapmem_set_nomodseq(srv, "alice", "Nope", 1) == IMAPMEM_NOTFOUND);
  CHECK(imapmem_reset(srv) == IMAPMEM_OK);
  c = pair_conn(srv, "alice");
  CHECK(c && ok(cmd(c, "SELECT INBOX (CONDSTORE)")) && strstr(c->resp, "[NOMODSEQ]") &&
        !strstr(c->resp, "HIGHESTMODSEQ"));
  CHECK(c && is_bad(cmd(c, "FETCH 1 (MODSEQ)")));
  conn_free(c);
  CHECK(imapmem_set_nomodseq(srv, "alice", "INBOX", 0) == IMAPMEM_OK);

  /* the capability list, and a switch that pulls another */
  char *caps = NULL;
  CHECK(imapmem_capabilities(srv, &caps) == IMAPMEM_OK && caps &&
        strstr(caps, "CONDSTORE") && strstr(caps, "QRESYNC") && !strstr(caps, "LITERAL-"));
  imapmem_release(caps);
  CHECK(imapmem_set_capability(srv, "CONDSTORE", 0) == IMAPMEM_OK);
  CHECK(imapmem_capabilities(srv, &caps) == IMAPMEM_OK && caps && !strstr(caps, "CONDSTORE") &&
        !strstr(caps, "QRESYNC"));
  imapmem_release(caps);
  CHECK(imapmem_set_capability(srv, "QRESYNC", 1) == IMAPMEM_OK);
  CHECK(imapmem_capabilities(srv, &caps) == IMAPMEM_OK && caps && strstr(caps, "CONDSTORE") &&
        strstr(caps, "QRESYNC"));
  imapmem_release(caps);

  /* MODSEQ-BACK: HIGHESTMODSEQ goes down to 1 and the session that had it selected goes */
  CHECK(imapmem_set_flags(srv, "alice", "INBOX", 1, "\\Flagged") == IMAPMEM_OK);
  CHECK(imapmem_fault(srv, "NOOP:1=MODSEQ-BACK") == IMAPMEM_OK);
  c = pair_conn(srv, "alice");
  CHECK(c && ok(cmd(c, "SELECT INBOX (CONDSTORE)")));
  if (c) cmd(c, "NOOP");
  CHECKM(c && strstr(c->resp, "* BYE "), "%s", c ? c->resp : "");
  conn_free(c);
  CHECK(imapmem_modseq(srv, "alice", "INBOX", 0, &h1) == IMAPMEM_OK && h1 == 1);
  CHECK(imapmem_modseq(srv, "alice", "INBOX", 1, &m2) == IMAPMEM_OK && m2 == 1);

  /* FORGET-EXPUNGED: the exact history is gone, so every missing UID in range is named */
  CHECK(imapmem_expunge(srv, "alice", "INBOX", 3) == IMAPMEM_OK);   /* MODSEQ 2 */
  CHECK(imapmem_expunge(srv, "alice", "INBOX", 5) == IMAPMEM_OK);   /* MODSEQ 3 */
  CHECK(imapmem_fault(srv, "NOOP:1=FORGET-EXPUNGED") == IMAPMEM_OK);
  c = pair_conn(srv, "alice");
  CHECK(c && ok(cmd(c, "ENABLE QRESYNC")) && ok(cmd(c, "SELECT INBOX (QRESYNC (42 2))")));
  CHECKM(c && strstr(c->resp, "* VANISHED (EARLIER) 5\r\n"), "%s", c ? c->resp : "");
  CHECK(c && ok(cmd(c, "NOOP")) && ok(cmd(c, "UNSELECT")));
  CHECK(c && ok(cmd(c, "SELECT INBOX (QRESYNC (42 2))")));
  CHECKM(c && strstr(c->resp, "* VANISHED (EARLIER) 3,5\r\n"), "%s", c ? c->resp : "");
  conn_free(c);
  imapmem_free(srv);
}

/* APPEND of NEWMSG on c with a synchronizing literal: the tagged text, "+" or not first. */
static const char *append_newmsg(struct conn *c, int *got_plus) {
  conn_sendf(c, "ap APPEND INBOX {%zu}\r\n", strlen(NEWMSG));
  resp_clear(c);
  long off = conn_line(c, IO_TIMEOUT);
  *got_plus = off >= 0 && c->resp[off] == '+';
  if (!*got_plus)
    return off >= 0 && strncmp(c->resp + off, "ap ", 3) == 0 ? c->resp + off + 3 : "";
  conn_send(c, NEWMSG, strlen(NEWMSG));
  conn_send(c, "\r\n", 2);
  return conn_until_tagged(c, "ap", IO_TIMEOUT);
}

static void test_append_limit(void) {
  imapmem *srv = basic_server();
  CHECK(srv != NULL);
  if (!srv) return;
  size_t n = strlen(NEWMSG), count0 = 0, count = 0;
  int plus;
  CHECK(imapmem_count(srv, "alice", "INBOX", &count0) == IMAPMEM_OK);
  /* by default the limit is max_literal, 64 MiB (RFC 7889 2 (a)) */
  struct conn *c = pair_conn(srv, "alice");
  CHECK(c != NULL);
  if (c) {
    CHECK(ok(cmd(c, "CAPABILITY")));
    CHECKM(has_cap(c->resp, "APPENDLIMIT=67108864"), "%s", c->resp);
    conn_free(c);
  }
  CHECK(imapmem_set_append_limit(NULL, 10) == IMAPMEM_MISUSE);
  CHECK(imapmem_set_append_limit(srv, ((size_t)64 << 20) + 1) == IMAPMEM_MISUSE);
  /* one byte less than NEWMSG: advertised, in STATUS, and NO [TOOBIG] before the "+" */
  CHECK(imapmem_set_append_limit(srv, n - 1) == IMAPMEM_OK);
  c = pair_conn(srv, "alice");
  if (c) {
    char want[64];
    snprintf(want, sizeof want, "APPENDLIMIT=%zu", n - 1);
    CHECK(ok(cmd(c, "CAPABILITY")));
    CHECKM(has_cap(c->resp, want), "%s", c->resp);
    CHECK(ok(cmd(c, "STATUS INBOX (APPENDLIMIT)")));
    snprintf(want, sizeof want, "(APPENDLIMIT %zu)", n - 1);
    CHECKM(strstr(c->resp, want) != NULL, "%s", c->resp);
    const char *t = append_newmsg(c, &plus);
    CHECKM(!plus && strncmp(t, "NO [TOOBIG]", 11) == 0, "%s", t);
    CHECK(ok(cmd(c, "NOOP")));
    /* exactly the limit is accepted (RFC 7889 5: the largest size accepted) */
    CHECK(imapmem_set_append_limit(srv, n) == IMAPMEM_OK);
    t = append_newmsg(c, &plus);
    CHECKM(plus && ok(t), "%s", t);
    /* 0: no APPEND at all (RFC 7889 5) */
    CHECK(imapmem_set_append_limit(srv, 0) == IMAPMEM_OK);
    CHECK(ok(cmd(c, "CAPABILITY")));
    CHECKM(has_cap(c->resp, "APPENDLIMIT=0"), "%s", c->resp);
    t = append_newmsg(c, &plus);
    CHECKM(!plus && strncmp(t, "NO [TOOBIG]", 11) == 0, "%s", t);
    conn_free(c);
  }
  CHECK(imapmem_count(srv, "alice", "INBOX", &count) == IMAPMEM_OK && count == count0 + 1);
  imapmem_free(srv);
}

/*
** Quota (RFC 9208) through the API: imapmem_set_quota's limits are what GETQUOTA shows and
** what APPEND is refused by ([OVERQUOTA]); imapmem_append is never refused, so a user can
** be put over quota; imapmem_get_quota reports the same usage; a reset keeps the limits.
*/
static void test_quota(void) {
  imapmem *srv = basic_server();
  CHECK(srv != NULL);
  if (!srv) return;
  int64_t kib = 0, msgs = 0;
  uint64_t kib_used = 0, msgs_used = 0;
  size_t count0 = 0;
  CHECK(imapmem_count(srv, "alice", "INBOX", &count0) == IMAPMEM_OK && count0 > 0);
  CHECK(imapmem_set_quota(NULL, "alice", 1, 1) == IMAPMEM_MISUSE);
  CHECK(imapmem_set_quota(srv, NULL, 1, 1) == IMAPMEM_MISUSE);
  CHECK(imapmem_set_quota(srv, "alice", -2, 1) == IMAPMEM_MISUSE);
  CHECK(imapmem_set_quota(srv, "alice", 1, -5) == IMAPMEM_MISUSE);
  CHECK(imapmem_set_quota(srv, "nobody", 1, 1) == IMAPMEM_NOTFOUND);
  CHECK(imapmem_get_quota(srv, "nobody", NULL, NULL, NULL, NULL) == IMAPMEM_NOTFOUND);
  CHECK(imapmem_get_quota(NULL, "alice", NULL, NULL, NULL, NULL) == IMAPMEM_MISUSE);
  /* no limits at start; the usage is reported anyway */
  CHECK(imapmem_get_quota(srv, "alice", &kib, &msgs, &kib_used, &msgs_used) == IMAPMEM_OK);
  CHECK(kib == IMAPMEM_NO_LIMIT && msgs == IMAPMEM_NO_LIMIT);
  CHECK(msgs_used == count0 && kib_used > 0);
  uint64_t kib0 = kib_used;
  struct conn *c = pair_conn(srv, "alice");
  CHECK(c != NULL);
  if (c) {
    CHECK(ok(cmd(c, "GETQUOTA \"\"")));
    CHECKM(strstr(c->resp, "* QUOTA \"\" ()\r\n") != NULL, "%s", c->resp);
    /* room for one more message */
    CHECK(imapmem_set_quota(srv, "alice", IMAPMEM_NO_LIMIT, (int64_t)count0 + 1) == IMAPMEM_OK);
    char want[128];
    snprintf(want, sizeof want, "* QUOTA \"\" (MESSAGE %zu %zu)\r\n", count0, count0 + 1);
    CHECK(ok(cmd(c, "GETQUOTAROOT INBOX")));
    CHECKM(strstr(c->resp, "* QUOTAROOT \"INBOX\" \"\"\r\n") && strstr(c->resp, want),
           "%s", c->resp);
    int plus;
    const char *t = append_newmsg(c, &plus);
    CHECKM(ok(t), "%s", t);
    t = append_newmsg(c, &plus);
    CHECKM(strncmp(t, "NO [OVERQUOTA]", 14) == 0, "%s", t);
    /* the embedder's delivery is not refused: now over the limit */
    CHECK(imapmem_append(srv, "alice", "INBOX", NEWMSG, strlen(NEWMSG), NULL, NULL) ==
          IMAPMEM_OK);
    CHECK(imapmem_get_quota(srv, "alice", &kib, &msgs, NULL, &msgs_used) == IMAPMEM_OK);
    CHECK(kib == IMAPMEM_NO_LIMIT && msgs == (int64_t)count0 + 1 && msgs_used == count0 + 2);
    snprintf(want, sizeof want, "* QUOTA \"\" (MESSAGE %zu %zu)\r\n", count0 + 2, count0 + 1);
    CHECK(ok(cmd(c, "GETQUOTA \"\"")));
    CHECKM(strstr(c->resp, want) != NULL, "%s", c->resp);
    /* a STORAGE limit at the usage: nothing more fits; SETQUOTA shows in the API */
    CHECK(imapmem_get_quota(srv, "alice", NULL, NULL, &kib_used, NULL) == IMAPMEM_OK);
    snprintf(want, sizeof want, "SETQUOTA \"\" (STORAGE %llu)", (unsigned long long)kib_used);
    CHECK(ok(cmd(c, want)));
    CHECK(imapmem_get_quota(srv, "alice", &kib, &msgs, NULL, NULL) == IMAPMEM_OK);
    CHECK(kib == (int64_t)kib_used && msgs == IMAPMEM_NO_LIMIT);
    CHECK(ok(cmd(c, "SELECT INBOX")));
    t = cmd(c, "COPY 1 INBOX");
    CHECKM(strncmp(t, "NO [OVERQUOTA]", 14) == 0, "%s", t);
    conn_free(c);
  }
  /* limits are configuration: a reset puts the messages back and keeps them */
  CHECK(imapmem_reset(srv) == IMAPMEM_OK);
  CHECK(imapmem_get_quota(srv, "alice", &kib, &msgs, &kib_used, &msgs_used) == IMAPMEM_OK);
  CHECK(kib > 0 && msgs == IMAPMEM_NO_LIMIT && msgs_used == count0 && kib_used == kib0);
  CHECK(imapmem_set_quota(srv, "alice", IMAPMEM_NO_LIMIT, IMAPMEM_NO_LIMIT) == IMAPMEM_OK);
  CHECK(imapmem_get_quota(srv, "alice", &kib, &msgs, NULL, NULL) == IMAPMEM_OK);
  CHECK(kib == IMAPMEM_NO_LIMIT && msgs == IMAPMEM_NO_LIMIT);
  imapmem_free(srv);
}

/*
** TLS through the API: in a build without TLS every setter is IMAPMEM_MISUSE and says how
** to build with it; in a TLS build (make TLS=openssl) the certificate comes back as PEM,
** the imaps port is bound, and every misuse has its code.
*/
static void test_tls_api(void) {
  imapmem *srv = NULL;
  CHECK(imapmem_new(NULL, &srv) == IMAPMEM_OK);
  if (!srv) return;
  char *pem = NULL;
  if (!imapmem_tls_library()) {
    CHECK(imapmem_set_tls(srv, NULL, NULL) == IMAPMEM_MISUSE);
    CHECKM(strstr(imapmem_errmsg(srv), "make TLS=openssl") != NULL, "%s", imapmem_errmsg(srv));
    CHECK(imapmem_set_imaps_port(srv, 0) == IMAPMEM_MISUSE);
    CHECK(strstr(imapmem_errmsg(srv), "make TLS=openssl") != NULL);
    CHECK(imapmem_set_require_tls(srv, 1) == IMAPMEM_MISUSE);
    CHECK(imapmem_set_tls_fault(srv, "expired") == IMAPMEM_MISUSE);
    CHECK(imapmem_tls_cert(srv, &pem) == IMAPMEM_MISUSE && pem == NULL);
    CHECK(imapmem_start(srv, "127.0.0.1", 0) == IMAPMEM_OK);
    CHECK(imapmem_imaps_port(srv) == -1 && strcmp(imapmem_imaps_address(srv), "") == 0);
    imapmem_free(srv);
    return;
  }
  CHECK(imapmem_set_require_tls(srv, 1) == IMAPMEM_MISUSE);   /* no TLS set yet */
  CHECK(imapmem_tls_cert(srv, &pem) == IMAPMEM_MISUSE);
  CHECK(imapmem_set_tls(srv, "x", NULL) == IMAPMEM_MISUSE);
  CHECK(imapmem_set_tls(srv, "not pem", "not pem") == IMAPMEM_PARSE);
  CHECKM(imapmem_set_tls(srv, NULL, NULL) == IMAPMEM_OK, "%s", imapmem_errmsg(srv));
  CHECK(imapmem_set_tls_fault(srv, "stale") == IMAPMEM_NOTFOUND);
  CHECK(imapmem_set_tls_fault(srv, "expired") == IMAPMEM_OK);
  CHECK(imapmem_set_tls_fault(srv, NULL) == IMAPMEM_OK);
  CHECK(imapmem_tls_cert(srv, &pem) == IMAPMEM_OK && pem &&
        strncmp(pem, "-----BEGIN CERTIFICATE-----", 27) == 0 && !strstr(pem, "PRIVATE"));
  imapmem_release(pem);
  CHECK(imapmem_set_imaps_port(srv, 70000) == IMAPMEM_MISUSE);
  CHECK(imapmem_set_imaps_port(srv, 0) == IMAPMEM_OK);
  CHECK(imapmem_set_require_tls(srv, 1) == IMAPMEM_OK);
  CHECK(imapmem_start(srv, "127.0.0.1", 0) == IMAPMEM_OK);
  CHECK(imapmem_imaps_port(srv) > 0 && imapmem_imaps_port(srv) != imapmem_port(srv));
  CHECK(strncmp(imapmem_imaps_address(srv), "127.0.0.1:", 10) == 0);
  CHECK(imapmem_set_tls(srv, NULL, NULL) == IMAPMEM_MISUSE);    /* serving */
  CHECK(imapmem_set_require_tls(srv, 0) == IMAPMEM_MISUSE);
  CHECK(imapmem_add_user(srv, "alice", "secret") == IMAPMEM_OK);
  struct conn *c = tcp_conn(srv);            /* the plain port: STARTTLS, no LOGIN */
  CHECKM(c && strstr(c->greeting, " STARTTLS") && strstr(c->greeting, " LOGINDISABLED") &&
         !strstr(c->greeting, "AUTH="), "%s", c ? c->greeting : "");
  CHECK(c && strncmp(cmd(c, "LOGIN alice secret"), "NO [PRIVACYREQUIRED]", 20) == 0);
  conn_free(c);
  c = pair_conn(srv, NULL);                  /* serve_fd: no TLS, and none required */
  CHECKM(c && !strstr(c->greeting, "STARTTLS") && !strstr(c->greeting, "LOGINDISABLED"),
         "%s", c ? c->greeting : "");
  CHECK(c && is_bad(cmd(c, "STARTTLS")));
  CHECK(c && ok(cmd(c, "LOGIN alice secret")));
  conn_free(c);
  imapmem_free(srv);
}

/*
** Namespaces and ACLs through the API: imapmem_load_shared, imapmem_set_acl (with its
** "+"/"-" forms, kept by imapmem_reset), imapmem_set_namespace, imapmem_save_shared, and
** what a session of another user then sees.
*/
static void test_acl_api(void) {
  imapmem *srv = basic_server();
  CHECK(srv != NULL);
  if (!srv) return;
  CHECK(imapmem_add_user(srv, "bob", "pw") == IMAPMEM_OK);
  CHECK(imapmem_load_shared(srv, "fixtures/acl/shared") == IMAPMEM_OK);
  CHECK(imapmem_load_shared(NULL, "x") == IMAPMEM_MISUSE);
  CHECK(imapmem_load_shared(srv, "/nonexistent") == IMAPMEM_IO);
  /* misuse: NULLs, unknown rights, the owner, an empty identifier */
  CHECK(imapmem_set_acl(NULL, "alice", "INBOX", "bob", "lr") == IMAPMEM_MISUSE);
  CHECK(imapmem_set_acl(srv, "alice", "INBOX", "bob", "lrQ") == IMAPMEM_MISUSE);
  CHECKM(strstr(imapmem_errmsg(srv), "'Q'") != NULL, "%s", imapmem_errmsg(srv));
  CHECK(imapmem_set_acl(srv, "alice", "INBOX", "alice", "lr") == IMAPMEM_MISUSE);
  CHECK(imapmem_set_acl(srv, "alice", "INBOX", "", "lr") == IMAPMEM_MISUSE);
  CHECK(imapmem_set_acl(srv, "nobody", "INBOX", "bob", "lr") == IMAPMEM_NOTFOUND);
  CHECK(imapmem_set_acl(srv, "alice", "Nowhere", "bob", "lr") == IMAPMEM_NOTFOUND);
  /* a prefix must be one level and '/'; not after start */
  CHECK(imapmem_set_namespace(srv, "~", "Shared/") == IMAPMEM_MISUSE);
  CHECK(imapmem_set_namespace(srv, "x/", "x/") == IMAPMEM_MISUSE);
  CHECK(imapmem_set_namespace(srv, "Users/", NULL) == IMAPMEM_MISUSE);
  CHECK(imapmem_set_namespace(srv, "Users/", "Public/") == IMAPMEM_OK);
  /* bob may read alice's INBOX; "+s" adds, "-r" takes away, "" removes */
  CHECK(imapmem_set_acl(srv, "alice", "inbox", "bob", "l") == IMAPMEM_OK);
  CHECK(imapmem_set_acl(srv, "alice", "INBOX", "bob", "+rs") == IMAPMEM_OK);
  CHECK(imapmem_set_acl(srv, NULL, "Hidden", "bob", "lr") == IMAPMEM_OK);
  struct conn *c = pair_conn(srv, "bob");
  CHECK(c != NULL);
  if (c) {
    CHECK(ok(cmd(c, "NAMESPACE")));
    CHECKM(strstr(c->resp, "((\"Users/\" \"/\")) ((\"Public/\" \"/\"))") != NULL, "%s",
           c->resp);
    const char *t = cmd(c, "EXAMINE \"Users/alice/INBOX\"");
    CHECKM(strncmp(t, "OK [READ-ONLY]", 14) == 0, "%s", t);
    CHECK(ok(cmd(c, "MYRIGHTS \"Users/alice/INBOX\"")));
    CHECKM(strstr(c->resp, "\"Users/alice/INBOX\" lrs\r\n") != NULL, "%s", c->resp);
    CHECK(ok(cmd(c, "EXAMINE \"Public/Hidden\"")));
    CHECK(imapmem_set_acl(srv, "alice", "INBOX", "bob", "-r") == IMAPMEM_OK);
    t = cmd(c, "EXAMINE \"Users/alice/INBOX\"");
    CHECKM(strncmp(t, "NO [NOPERM]", 11) == 0, "%s", t);
    CHECK(imapmem_set_acl(srv, "alice", "INBOX", "bob", "") == IMAPMEM_OK);
    t = cmd(c, "EXAMINE \"Users/alice/INBOX\"");
    CHECKM(strncmp(t, "NO [NONEXISTENT]", 16) == 0, "%s", t);
    conn_free(c);
  }
  /* reset keeps what the API set (both entries), as it keeps the fixtures' ACLs */
  CHECK(imapmem_set_acl(srv, "alice", "INBOX", "bob", "lr") == IMAPMEM_OK);
  CHECK(imapmem_reset(srv) == IMAPMEM_OK);
  c = pair_conn(srv, "bob");
  if (c) {
    CHECK(ok(cmd(c, "EXAMINE \"Users/alice/INBOX\"")));
    CHECK(ok(cmd(c, "EXAMINE \"Public/Hidden\"")));
    conn_free(c);
  }
  /* the shared tree saves with its .acl */
  char dir[] = "/tmp/imapmem-acl-XXXXXX", path[256];
  CHECK(mkdtemp(dir) != NULL);
  CHECK(imapmem_save_shared(srv, dir) == IMAPMEM_OK);
  snprintf(path, sizeof path, "%s/.acl", dir);
  FILE *f = fopen(path, "r");
  char text[1024] = "";
  CHECK(f != NULL);
  if (f) {
    text[fread(text, 1, sizeof text - 1, f)] = 0;
    fclose(f);
  }
  CHECKM(strstr(text, "Hidden\tbob\tlr\n") && strstr(text, "News\tanyone\tlr\n"), "%s", text);
  const char *files[] = {"News.mbox", "Board.mbox", "Hidden.mbox", ".acl"};
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, files[i]);
    CHECKM(unlink(path) == 0, "%s", path);
  }
  rmdir(dir);
  imapmem_free(srv);
}

/*
** imapmem_set_special_use (RFC 6154 2): roles given, taken away and given back to the
** name; a reset keeps them, a save writes them, LIST shows them only when asked.
*/
static void test_special_use(void) {
  imapmem *srv = started_server();
  CHECK(srv != NULL);
  if (!srv) return;
  const char box[] = "From a Mon Jan  1 00:00:00 2024\nSubject: x\n\nx\n";
  CHECK(imapmem_load_mbox(srv, "alice", "Outgoing", box, strlen(box), NULL) == IMAPMEM_OK);
  CHECK(imapmem_load_mbox(srv, "alice", "Trash", box, strlen(box), NULL) == IMAPMEM_OK);
  CHECK(imapmem_set_special_use(NULL, "alice", "Outgoing", "\\Sent") == IMAPMEM_MISUSE);
  CHECK(imapmem_set_special_use(srv, NULL, "Outgoing", "\\Sent") == IMAPMEM_MISUSE);
  CHECK(imapmem_set_special_use(srv, "alice", NULL, "\\Sent") == IMAPMEM_MISUSE);
  CHECK(imapmem_set_special_use(srv, "alice", "Outgoing", "\\Sent \\Nope") == IMAPMEM_MISUSE);
  CHECK(strstr(imapmem_errmsg(srv), "\\Nope") != NULL);
  CHECK(imapmem_set_special_use(srv, "bob", "Outgoing", "\\Sent") == IMAPMEM_NOTFOUND);
  CHECK(imapmem_set_special_use(srv, "alice", "Nope", "\\Sent") == IMAPMEM_NOTFOUND);
  char roles[] = "\\sent  \\ARCHIVE";
  CHECK(imapmem_set_special_use(srv, "alice", "Outgoing", roles) == IMAPMEM_OK);
  memset(roles, 'x', sizeof roles - 1);                  /* read during the call only */
  CHECK(imapmem_set_special_use(srv, "alice", "Trash", "") == IMAPMEM_OK);
  CHECK(imapmem_reset(srv) == IMAPMEM_OK);               /* a reset keeps them */
  struct conn *c = pair_conn(srv, "alice");
  CHECK(c && ok(cmd(c, "LIST \"\" * RETURN (SPECIAL-USE)")));
  CHECKM(c && strstr(c->resp, "* LIST (\\HasNoChildren \\Archive \\Sent) \"/\" \"Outgoing\"\r\n") &&
         strstr(c->resp, "* LIST (\\HasNoChildren) \"/\" \"Trash\"\r\n"), "%s", c ? c->resp : "");
  CHECK(c && ok(cmd(c, "LIST \"\" *")) && !strstr(c->resp, "\\Sent"));   /* not asked */
  CHECK(imapmem_set_special_use(srv, "alice", "Trash", NULL) == IMAPMEM_OK);   /* by name */
  CHECK(c && ok(cmd(c, "LIST (SPECIAL-USE) \"\" *")));
  CHECKM(c && strstr(c->resp, "* LIST (\\HasNoChildren \\Trash) \"/\" \"Trash\"\r\n") &&
         strstr(c->resp, "Outgoing") && !strstr(c->resp, "INBOX"), "%s", c ? c->resp : "");
  char dir[] = "/tmp/imapmem-api-su-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  CHECK(imapmem_save(srv, "alice", dir) == IMAPMEM_OK);
  char path[128], text[256] = "";
  snprintf(path, sizeof path, "%s/.special-use", dir);
  FILE *f = fopen(path, "r");
  size_t got = f ? fread(text, 1, sizeof text - 1, f) : 0;
  if (f) fclose(f);
  text[got] = 0;
  CHECKM(strstr(text, "\nOutgoing:\\Archive \\Sent\n") && !strstr(text, "Trash"), "%s", text);
  rm_tree(dir);
  /* switched off: the options are BAD, and SPECIAL-USE needs LIST-EXTENDED */
  CHECK(imapmem_set_capability(srv, "LIST-EXTENDED", 0) == IMAPMEM_OK);
  char *caps = NULL;
  CHECK(imapmem_capabilities(srv, &caps) == IMAPMEM_OK && caps &&
        !strstr(caps, " SPECIAL-USE") && strstr(caps, "CREATE-SPECIAL-USE"));
  imapmem_release(caps);
  CHECK(c && is_bad(cmd(c, "LIST \"\" * RETURN (SPECIAL-USE)")));
  CHECK(imapmem_set_capability(srv, "SPECIAL-USE", 1) == IMAPMEM_OK);   /* brings it back */
  CHECK(c && ok(cmd(c, "LIST \"\" * RETURN (SPECIAL-USE)")));
  conn_free(c);
  imapmem_free(srv);
}

#ifdef IMAPMEM_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/time.h>

/*
** A TLS client on fd (blocking) that trusts only ca_pem and checks the name "localhost";
** NULL if the handshake fails.
*/
static SSL *tls_client(int fd, const char *ca_pem) {
  struct timeval limit = {IO_TIMEOUT / 1000, 0};   /* a wrong server fails, never hangs */
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  BIO *b = BIO_new_mem_buf(ca_pem, -1);
  X509 *ca = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
  SSL *ssl = NULL;
  if (ctx && ca && X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), ca)) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    ssl = SSL_new(ctx);
  }
  if (ssl && (!SSL_set1_host(ssl, "localhost") || !SSL_set_fd(ssl, fd) ||
              SSL_connect(ssl) != 1)) {
    SSL_free(ssl);
    ssl = NULL;
  }
  X509_free(ca);
  BIO_free(b);
  SSL_CTX_free(ctx);         /* ssl keeps its own reference */
  ERR_clear_error();
  return ssl;
}

/* Whether text holds a whole line that starts with tag. */
static int tls_has_line(const char *text, const char *tag) {
  for (const char *p = text; p; p = strstr(p, "\r\n") ? strstr(p, "\r\n") + 2 : NULL)
    if (strncmp(p, tag, strlen(tag)) == 0) return strstr(p, "\r\n") != NULL;
  return 0;
}

/* Send line (if not NULL) over ssl, then read until a line starts with tag, into out. */
static int tls_exchange(SSL *ssl, const char *line, const char *tag, char *out, size_t cap) {
  size_t len = 0;
  out[0] = 0;
  if (line && SSL_write(ssl, line, (int)strlen(line)) <= 0) return 0;
  while (!tls_has_line(out, tag)) {
    int n = len + 1 < cap ? SSL_read(ssl, out + len, (int)(cap - 1 - len)) : 0;
    if (n <= 0) return 0;
    len += (size_t)n;
    out[len] = 0;
  }
  return 1;
}
#endif

/*
** imapmem_serve_fd_tls: every misuse leaves the descriptors alone; in a TLS build a
** socketpair session does its handshake first (IMAPMEM_FD_IMAPS, then PREAUTH) or greets
** in plain text and offers STARTTLS (IMAPMEM_FD_STARTTLS), verified against
** imapmem_tls_cert().
*/
static void test_serve_fd_tls(void) {
  imapmem *srv = NULL;
  CHECK(imapmem_new(NULL, &srv) == IMAPMEM_OK);
  if (!srv) return;
  CHECK(imapmem_add_user(srv, "alice", "secret") == IMAPMEM_OK);
  int sv[2];
  CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  CHECK(imapmem_serve_fd_tls(NULL, sv[0], sv[0], NULL, IMAPMEM_FD_IMAPS) == IMAPMEM_MISUSE);
  CHECK(imapmem_serve_fd_tls(srv, -1, sv[0], NULL, IMAPMEM_FD_IMAPS) == IMAPMEM_MISUSE);
  if (!imapmem_tls_library()) {
    CHECK(imapmem_serve_fd_tls(srv, sv[0], sv[0], NULL, IMAPMEM_FD_IMAPS) == IMAPMEM_MISUSE);
    CHECKM(strstr(imapmem_errmsg(srv), "make TLS=openssl") != NULL, "%s", imapmem_errmsg(srv));
    CHECK(fcntl(sv[0], F_GETFD) != -1);     /* left alone */
    close(sv[0]);
    close(sv[1]);
    imapmem_free(srv);
    return;
  }
  CHECK(imapmem_serve_fd_tls(srv, sv[0], sv[0], NULL, IMAPMEM_FD_IMAPS) == IMAPMEM_MISUSE);
  CHECKM(strstr(imapmem_errmsg(srv), "imapmem_set_tls") != NULL, "%s", imapmem_errmsg(srv));
  CHECK(imapmem_set_tls(srv, NULL, NULL) == IMAPMEM_OK);
  CHECK(imapmem_serve_fd_tls(srv, sv[0], sv[0], NULL, (enum imapmem_fd_tls)3) == IMAPMEM_MISUSE);
  CHECK(imapmem_serve_fd_tls(srv, sv[0], sv[0], "alice", IMAPMEM_FD_STARTTLS) ==
        IMAPMEM_MISUSE);
  CHECK(fcntl(sv[0], F_GETFD) != -1);       /* still left alone */
  CHECK(imapmem_serve_fd_tls(srv, sv[0], sv[0], "nobody", IMAPMEM_FD_IMAPS) == IMAPMEM_NOTFOUND);
  close(sv[1]);
#ifdef IMAPMEM_TLS
  char *ca = NULL, got[8192];
  CHECK(imapmem_tls_cert(srv, &ca) == IMAPMEM_OK);
  /* implicit TLS, then PREAUTH */
  CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  CHECK(imapmem_serve_fd_tls(srv, sv[0], sv[0], "alice", IMAPMEM_FD_IMAPS) == IMAPMEM_OK);
  SSL *ssl = ca ? tls_client(sv[1], ca) : NULL;
  CHECK(ssl != NULL);
  CHECKM(ssl && tls_exchange(ssl, NULL, "* PREAUTH", got, sizeof got) &&
         !strstr(got, "STARTTLS"), "%s", got);
  CHECKM(ssl && tls_exchange(ssl, "a SELECT INBOX\r\n", "a OK", got, sizeof got), "%s", got);
  SSL_free(ssl);
  close(sv[1]);
  /* a plain greeting that offers STARTTLS, then TLS and LOGIN */
  CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  CHECK(imapmem_serve_fd_tls(srv, sv[0], sv[0], NULL, IMAPMEM_FD_STARTTLS) == IMAPMEM_OK);
  struct conn *c = conn_new(sv[1]);
  CHECKM(c && strstr(c->greeting, " STARTTLS"), "%s", c ? c->greeting : "");
  CHECK(c && ok(cmd(c, "STARTTLS")));
  ssl = c && ca ? tls_client(c->fd, ca) : NULL;
  CHECK(ssl != NULL);
  CHECKM(ssl && tls_exchange(ssl, "b LOGIN alice secret\r\n", "b OK", got, sizeof got),
         "%s", got);
  SSL_free(ssl);
  conn_free(c);
  imapmem_release(ca);
#endif
  imapmem_free(srv);
}

/* base64 of n bytes (RFC 4648), NUL-terminated, into out (4 * ceil(n / 3) + 1 bytes). */
static const char *b64(const char *p, size_t n, char *out) {
  static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  char *o = out;
  for (size_t i = 0; i < n; i += 3) {
    unsigned v = (unsigned)(unsigned char)p[i] << 16;
    if (i + 1 < n) v |= (unsigned)(unsigned char)p[i + 1] << 8;
    if (i + 2 < n) v |= (unsigned char)p[i + 2];
    *o++ = a[v >> 18];
    *o++ = a[(v >> 12) & 63];
    *o++ = i + 1 < n ? a[(v >> 6) & 63] : '=';
    *o++ = i + 2 < n ? a[v & 63] : '=';
  }
  *o = 0;
  return out;
}

/*
** AUTHENTICATE OAUTHBEARER with token on a fresh unauthenticated session, answering a
** failure's JSON challenge with the dummy "AQ==" (RFC 7628 3.2.3). The tagged text goes
** into tagged; returns whether it was OK, with the CAPABILITY-less SELECT count in *count.
*/
static int oauth_login(imapmem *srv, const char *token, char *tagged, size_t cap,
                       size_t *count) {
  char msg[256], enc[400];
  int n = snprintf(msg, sizeof msg, "n,,\001auth=Bearer %s\001\001", token);
  struct conn *c = pair_conn(srv, NULL);
  if (!c) return 0;
  conn_sendf(c, "t1 AUTHENTICATE OAUTHBEARER %s\r\nAQ==\r\n", b64(msg, (size_t)n, enc));
  resp_clear(c);
  snprintf(tagged, cap, "%s", conn_until_tagged(c, "t1", IO_TIMEOUT));
  int good = ok(tagged);
  *count = 0;
  if (good && ok(cmd(c, "SELECT INBOX"))) *count = (size_t)exists_num(c->resp);
  conn_free(c);
  return good;
}

/* AUTHENTICATE PLAIN authzid NUL authcid NUL password: the tagged text. */
static const char *plain_login(imapmem *srv, const char *authz, const char *authc,
                               const char *pw, char *tagged, size_t cap) {
  char msg[256], enc[400];
  int n = snprintf(msg, sizeof msg, "%s%c%s%c%s", authz, 0, authc, 0, pw);
  struct conn *c = pair_conn(srv, NULL);
  if (!c) return "";
  snprintf(tagged, cap, "%s", cmd(c, "AUTHENTICATE PLAIN %s", b64(msg, (size_t)n, enc)));
  conn_free(c);
  return tagged;
}

/* imapmem_set_oauth_token, imapmem_set_admin, the AUTH= capabilities and the AUTH- faults. */
static void test_auth_api(void) {
  imapmem *srv = basic_server();
  CHECK(srv != NULL);
  if (!srv) return;
  char t[2048];
  size_t count;
  CHECK(imapmem_add_user(srv, "bob", "bobpw") == IMAPMEM_OK);
  CHECK(imapmem_set_oauth_token(NULL, "alice", "x") == IMAPMEM_MISUSE);
  CHECK(imapmem_set_oauth_token(srv, NULL, "x") == IMAPMEM_MISUSE);
  CHECK(imapmem_set_oauth_token(srv, "alice", "") == IMAPMEM_MISUSE);
  CHECK(imapmem_set_oauth_token(srv, "alice", "a\r\nb") == IMAPMEM_MISUSE);
  CHECK(imapmem_set_oauth_token(srv, "nobody", "x") == IMAPMEM_NOTFOUND);
  CHECK(strstr(imapmem_errmsg(srv), "nobody") != NULL);
  CHECK(imapmem_set_admin(NULL, "alice", 1) == IMAPMEM_MISUSE);
  CHECK(imapmem_set_admin(srv, NULL, 1) == IMAPMEM_MISUSE);
  CHECK(imapmem_set_admin(srv, "nobody", 1) == IMAPMEM_NOTFOUND);
  /* no token: refused with the JSON exchange */
  CHECKM(!oauth_login(srv, "tok-1", t, sizeof t, &count) && strstr(t, "[AUTHENTICATIONFAILED]"),
         "%s", t);
  char token[16] = "tok-1";                  /* copied: changing ours changes nothing */
  CHECK(imapmem_set_oauth_token(srv, "alice", token) == IMAPMEM_OK);
  strcpy(token, "tok-X");
  CHECKM(oauth_login(srv, "tok-1", t, sizeof t, &count) && count == 6, "%s", t);
  CHECK(imapmem_set_oauth_token(srv, "alice", "tok-2") == IMAPMEM_OK);   /* replaces */
  CHECKM(!oauth_login(srv, "tok-1", t, sizeof t, &count), "%s", t);
  CHECKM(oauth_login(srv, "tok-2", t, sizeof t, &count), "%s", t);
  CHECK(imapmem_set_oauth_token(srv, "alice", NULL) == IMAPMEM_OK);      /* taken away */
  CHECKM(!oauth_login(srv, "tok-2", t, sizeof t, &count), "%s", t);
  CHECK(imapmem_set_oauth_token(srv, "bob", "tok-bob") == IMAPMEM_OK);
  CHECKM(oauth_login(srv, "tok-bob", t, sizeof t, &count) && count == 0, "%s", t);
  /* an administrator may act as another user; nobody else may */
  CHECKM(strstr(plain_login(srv, "alice", "bob", "bobpw", t, sizeof t),
                "NO [AUTHORIZATIONFAILED]"), "%s", t);
  CHECK(imapmem_set_admin(srv, "bob", 1) == IMAPMEM_OK);
  CHECKM(ok(plain_login(srv, "alice", "bob", "bobpw", t, sizeof t)), "%s", t);
  CHECKM(strstr(plain_login(srv, "bob", "alice", "secret", t, sizeof t),
                "NO [AUTHORIZATIONFAILED]"), "%s", t);
  CHECK(imapmem_set_admin(srv, "bob", 0) == IMAPMEM_OK);
  CHECKM(strstr(plain_login(srv, "alice", "bob", "bobpw", t, sizeof t),
                "NO [AUTHORIZATIONFAILED]"), "%s", t);
  /* the mechanisms are capabilities; LOGINDISABLED hides and refuses the plain-text ones */
  char *caps = NULL;
  CHECK(imapmem_capabilities(srv, &caps) == IMAPMEM_OK && caps);
  CHECKM(caps && strstr(caps, "AUTH=SCRAM-SHA-256") && strstr(caps, "AUTH=OAUTHBEARER") &&
         !strstr(caps, "LOGINDISABLED"), "%s", caps);
  imapmem_release(caps);
  CHECK(imapmem_set_capability(srv, "AUTH=OAUTHBEARER", 0) == IMAPMEM_OK);
  CHECK(imapmem_set_capability(srv, "LOGINDISABLED", 1) == IMAPMEM_OK);
  CHECK(imapmem_capabilities(srv, &caps) == IMAPMEM_OK && caps);
  CHECKM(caps && !strstr(caps, "AUTH=OAUTHBEARER") && strstr(caps, "LOGINDISABLED") &&
         !strstr(caps, "AUTH=PLAIN") && !strstr(caps, "AUTH=LOGIN") &&
         strstr(caps, "AUTH=CRAM-MD5"), "%s", caps);
  imapmem_release(caps);
  CHECKM(strstr(plain_login(srv, "", "alice", "secret", t, sizeof t), "NO [PRIVACYREQUIRED]"),
         "%s", t);
  CHECKM(!oauth_login(srv, "tok-bob", t, sizeof t, &count) && strstr(t, "NO [CANNOT]"), "%s", t);
  struct conn *c = pair_conn(srv, NULL);
  if (c) {
    CHECKM(strstr(cmd(c, "LOGIN alice secret"), "NO [PRIVACYREQUIRED]"), "%s", c->tagged);
    conn_free(c);
  }
  CHECK(imapmem_set_capability(srv, "LOGINDISABLED", 0) == IMAPMEM_OK);
  CHECK(imapmem_set_capability(srv, "AUTH=OAUTHBEARER", 1) == IMAPMEM_OK);
  /* an AUTH- fault fails one login whose credentials are right */
  CHECK(imapmem_fault(srv, "AUTHENTICATE:1=AUTH-UNAVAILABLE") == IMAPMEM_OK);
  CHECKM(strstr(plain_login(srv, "", "alice", "secret", t, sizeof t), "NO [UNAVAILABLE]"), "%s", t);
  CHECKM(ok(plain_login(srv, "", "alice", "secret", t, sizeof t)), "%s", t);
  CHECK(imapmem_fault(srv, "AUTHENTICATE:1=AUTH-EXPIRED") == IMAPMEM_OK);
  CHECKM(!oauth_login(srv, "tok-bob", t, sizeof t, &count) && strstr(t, "NO [EXPIRED]"), "%s", t);
  CHECKM(oauth_login(srv, "tok-bob", t, sizeof t, &count), "%s", t);
  CHECK(imapmem_fault(srv, "AUTHENTICATE=AUTH-NONSENSE") == IMAPMEM_PARSE);
  imapmem_free(srv);
}

int main(void) {
  struct {
    const char *name;
    void (*fn)(void);
  } tests[] = {
    {"no_sigpipe", test_no_sigpipe},
    {"misuse", test_misuse},
    {"errors", test_errors},
    {"strings_are_copied", test_strings_are_copied},
    {"load_and_read_back", test_load_and_read_back},
    {"config", test_config},
    {"start_stop", test_start_stop},
    {"serve_fd", test_serve_fd},
    {"append_live", test_append_live},
    {"wait", test_wait},
    {"trace", test_trace},
    {"capability", test_capability},
    {"notify and objectid", test_notify_objectid},
    {"imap_version", test_imap_version},
    {"faults", test_faults},
    {"reset", test_reset},
    {"save_load", test_save_load},
    {"config_range", test_config_range},
    {"errmsg_every_failure", test_errmsg_every_failure},
    {"errmsg_per_thread", test_errmsg_per_thread},
    {"stop_leaves_fds", test_stop_leaves_descriptors_alone},
    {"failed_start_leaks", test_failed_start_leaks_nothing},
    {"load_mbox_names", test_load_mbox_names},
    {"api_second_pass", test_api_second_pass},
    {"resync_api", test_resync_api},
    {"append_limit", test_append_limit},
    {"special_use", test_special_use},
    {"quota", test_quota},
    {"tls_api", test_tls_api},
    {"auth_api", test_auth_api},
    {"acl_api", test_acl_api},
    {"serve_fd_tls", test_serve_fd_tls},
  };
  /* From here on a vanished peer must not end the test run; test_no_sigpipe checked
     that the library does not rely on this. */
  int n = (int)(sizeof tests / sizeof *tests);
  for (int i = 0; i < n; i++) {
    int f0 = failed;
    long t0 = now_ms();
    tests[i].fn();
    printf("%-20s %s (%ld ms)\n", tests[i].name, failed == f0 ? "ok" : "FAILED", now_ms() - t0);
    fflush(stdout);
    if (i == 0) signal(SIGPIPE, SIG_IGN);
  }
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
