/*
** bench_load.c -- the load generator of `make bench` (issue 15): many IMAP clients driven
** by a few threads, each thread an epoll loop over its share of the connections, so that
** the client is never the bottleneck of the concurrency items (one Python thread per
** client would be). libc and pthreads only. Output is machine-readable like bench_ref's:
** one `key value...` line per figure, times in seconds.
**
**   bench_load run HOST PORT USER PASS MAILBOX CLIENTS SECONDS
**       CLIENTS connections, each LOGIN and SELECT MAILBOX (pipelined), then, all at once,
**       a closed loop for SECONDS of item 6's mix: SELECT MAILBOX, FETCH n BODY.PEEK[],
**       STORE n +FLAGS (\Flagged), NOOP (n a random message of the mailbox). Prints
**       commands (completed before the deadline), seconds, commands_per_s, p50_s, p99_s
**       (per-command latency, from sending the command to reading its tagged reply),
**       lat_KIND p50 p99 count for each kind, errors (tagged NO/BAD, an untagged BYE, a
**       lost connection), unfinished (no reply 15 s after the deadline), client_cpu_s,
**       and error_line TEXT for the first error.
**   bench_load idle HOST PORT USER PASS N MAILBOX PROBES
**       N connections, each LOGIN (pipelined), kept connected and idle; prints `idle_ready
**       N` and waits for a line on stdin (the caller reads the server's RSS meanwhile);
**       then one more client (the N+1st) logs in, SELECTs MAILBOX and times PROBES NOOPs
**       and PROBES FETCH 1 (FLAGS ENVELOPE): noop_p50_s noop_p99_s fetch_p50_s
**       fetch_p99_s; then checks that the N idle ones are still connected (lost N),
**       prints errors, and closes every connection.
**
** Both raise RLIMIT_NOFILE to the hard limit first. BENCH_LOAD_THREADS sets the number of
** threads (default 2, never more than the connections).
*/
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define BUFSZ 16384
#define KEEP 32             /* bytes kept of a line longer than the buffer (a {n} at its end) */
#define HARD_EXTRA 15.0     /* seconds after the deadline for outstanding replies */

#define BENCH_PROG "bench_load"
#include "bench_util.h"

/* ------------------------------------------------------------------------------------- */
/* One connection: a response scanner that finds the tagged reply and skips literals      */

enum { K_SELECT, K_FETCH, K_STORE, K_NOOP, K_LOGIN, NKINDS };
static const char *const kind_name[NKINDS] = {"SELECT", "FETCH", "STORE", "NOOP", "LOGIN"};

enum { R_MORE, R_TAGGED, R_EOF };

struct conn {
  int fd;
  int alive;
  size_t start, len;       /* unread bytes are buf[start..len) */
  size_t skip;             /* literal bytes still to drop */
  int bol;                 /* at the beginning of a response line */
  int bye;                 /* an untagged BYE was seen */
  long exists;             /* the last untagged N EXISTS, -1 before one */
  unsigned seq;            /* tag number of the command in flight */
  int kind;
  int step;
  int waiting;             /* a command is in flight */
  int pending;             /* tagged replies still expected (pipelined set-up) */
  int heard;               /* a byte was received */
  double sent;
  uint64_t rng;
  char tagged[128];        /* the last tagged reply, without the tag */
  char buf[BUFSZ];
};

static uint64_t xorshift(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

/* Tag of command number seq: "b<seq> ". */
static int tag_of(unsigned seq, char *out, size_t cap) {
  return snprintf(out, cap, "b%u ", seq);
}

/* Scan what is buffered. R_TAGGED when the tagged reply of c->seq is complete (in
   c->tagged), R_MORE when more bytes are needed. */
static int scan(struct conn *c) {
  char tag[24];
  int tl = tag_of(c->seq, tag, sizeof tag);
  for (;;) {
    if (c->skip) {
      size_t avail = c->len - c->start, k = avail < c->skip ? avail : c->skip;
      c->start += k;
      c->skip -= k;
      if (c->skip) {
        c->start = c->len = 0;
        return R_MORE;
      }
    }
    char *s = c->buf + c->start;
    size_t avail = c->len - c->start;
    char *e = avail ? memmem(s, avail, "\r\n", 2) : NULL;
    if (!e) {
      if (c->start > 0) {                   /* compact */
        memmove(c->buf, s, avail);
        c->start = 0;
        c->len = avail;
      }
      if (c->len == BUFSZ) {                /* a line longer than the buffer */
        if (c->bol && !memcmp(c->buf, "* BYE", 5)) c->bye = 1;
        memmove(c->buf, c->buf + BUFSZ - KEEP, KEEP);
        c->len = KEEP;
        c->bol = 0;
      }
      return R_MORE;
    }
    size_t ll = (size_t)(e - s);
    c->start += ll + 2;
    if (c->bol && ll >= (size_t)tl && !memcmp(s, tag, (size_t)tl)) {
      size_t n = ll - (size_t)tl < sizeof c->tagged - 1 ? ll - (size_t)tl : sizeof c->tagged - 1;
      memcpy(c->tagged, s + tl, n);
      c->tagged[n] = 0;
      c->bol = 1;
      return R_TAGGED;
    }
    if (c->bol && ll >= 5 && !memcmp(s, "* BYE", 5)) c->bye = 1;
    if (c->bol && ll > 9 && s[0] == '*' && !memcmp(s + ll - 7, " EXISTS", 7))
      c->exists = strtol(s + 2, NULL, 10);
    if (ll >= 3 && s[ll - 1] == '}') {      /* {n} or {n+}: a literal follows */
      char *p = s + ll - 2;
      if (*p == '+') p--;
      char *d = p;
      while (d > s && *d >= '0' && *d <= '9') d--;
      if (d < p && *d == '{') {
        c->skip = (size_t)strtoull(d + 1, NULL, 10);
        c->bol = 0;
        continue;
      }
    }
    c->bol = 1;
  }
}

/* One recv() into the free end of the buffer (non-blocking): epoll is level-triggered, so
   what is left in the socket is reported again. Returns 0 on EOF or error, 2 when the recv
   filled the buffer (the socket may hold more), 1 otherwise. */
static int fill(struct conn *c) {
  for (;;) {
    if (c->len == BUFSZ) return 2;          /* scan() makes room */
    size_t room = BUFSZ - c->len;
    ssize_t r = recv(c->fd, c->buf + c->len, room, 0);
    if (r > 0) {
      c->len += (size_t)r;
      c->heard = 1;
      return (size_t)r == room ? 2 : 1;
    }
    if (r == 0) return 0;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 1;
    return 0;
  }
}

static int send_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
    if (r > 0) {
      p += r;
      n -= (size_t)r;
    } else if (r < 0 && errno == EINTR) {
      continue;
    } else if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      struct timespec ts = {0, 100000};
      nanosleep(&ts, NULL);
    } else {
      return 0;
    }
  }
  return 1;
}

static int connect_to(const char *host, int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
    fprintf(stderr, "bench_load: not an IPv4 address: %s\n", host);
    exit(2);
  }
  for (;;) {
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0) break;
    if (errno == EINTR) continue;
    die("connect");
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

/* ------------------------------------------------------------------------------------- */
/* Latency samples                                                                        */

struct samples {
  double *v;
  size_t n, cap;
};

static void add_sample(struct samples *s, double x) {
  if (s->n == s->cap) {
    s->cap = s->cap ? 2 * s->cap : 4096;
    s->v = realloc(s->v, s->cap * sizeof *s->v);
    if (!s->v) die("realloc");
  }
  s->v[s->n++] = x;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double pct(struct samples *s, double p) {
  if (!s->n) return 0.0 / 0.0;
  size_t i = (size_t)(p * (double)s->n);
  return s->v[i < s->n ? i : s->n - 1];
}


/* ------------------------------------------------------------------------------------- */
/* The worker threads: each an epoll loop over its connections                           */

static const char *g_host, *g_user, *g_pass, *g_mailbox;
static int g_port;
static double g_deadline;

struct worker {
  pthread_t th;
  struct conn **conns;
  size_t nconns;
  int ep;
  int run;                         /* run mode: SELECT in the set-up, then the mix */
  pthread_barrier_t *ready, *go;
  /* results */
  struct samples lat[NKINDS];
  struct samples all;
  long done, errors, unfinished, lost;
  long exists;
  char error_line[160];
};

static void note_error(struct worker *w, struct conn *c, const char *what) {
  w->errors++;
  if (!w->error_line[0]) {
    snprintf(w->error_line, sizeof w->error_line, "%s: %s", kind_name[c->kind], what);
    for (char *p = w->error_line; *p; p++)
      if (*p == '\r' || *p == '\n') *p = ' ';
  }
}

static void conn_close(struct worker *w, struct conn *c) {
  if (c->fd >= 0) {
    if (w && w->ep >= 0) epoll_ctl(w->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
  }
  c->fd = -1;
  c->alive = 0;
}

static void set_nonblock(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) die("fcntl");
}

/* Send the next command of item 6's mix. */
static void issue(struct conn *c, long nmsgs) {
  char cmd[160];
  int k = c->step++ % 4;
  long n = nmsgs > 0 ? 1 + (long)(xorshift(&c->rng) % (uint64_t)nmsgs) : 1;
  int tl;
  c->seq++;
  tl = tag_of(c->seq, cmd, sizeof cmd);
  switch (k) {
  case 0:
    c->kind = K_SELECT;
    snprintf(cmd + tl, sizeof cmd - (size_t)tl, "SELECT \"%s\"\r\n", g_mailbox);
    break;
  case 1:
    c->kind = K_FETCH;
    snprintf(cmd + tl, sizeof cmd - (size_t)tl, "FETCH %ld BODY.PEEK[]\r\n", n);
    break;
  case 2:
    c->kind = K_STORE;
    snprintf(cmd + tl, sizeof cmd - (size_t)tl, "STORE %ld +FLAGS (\\Flagged)\r\n", n);
    break;
  default:
    c->kind = K_NOOP;
    snprintf(cmd + tl, sizeof cmd - (size_t)tl, "NOOP\r\n");
  }
  c->sent = now();
  c->waiting = 1;
  if (!send_all(c->fd, cmd, strlen(cmd))) c->alive = 0;
}

/* Drain c's socket and scan it. Calls on_tagged for each complete tagged reply; returns 0
   when the connection was lost. */
static int pump(struct worker *w, struct conn *c, void (*on_tagged)(struct worker *, struct conn *)) {
  for (;;) {
    int st = fill(c);
    for (;;) {
      int r = scan(c);
      if (r != R_TAGGED) break;
      on_tagged(w, c);
      if (!c->alive) return 0;
    }
    if (c->bye && c->alive) {
      note_error(w, c, "* BYE from the server");
      return 0;
    }
    if (!st) return 0;
    if (st == 1) return 1;   /* drained: not "len < BUFSZ", which scan() makes true as it
                                consumes, so that a response over 16 KB took an epoll
                                round a buffer, behind every other connection's turn */
  }
}

static void on_setup_reply(struct worker *w, struct conn *c) {
  if (strncmp(c->tagged, "OK", 2)) {
    note_error(w, c, c->tagged);
    c->alive = 0;
    return;
  }
  if (c->kind == K_SELECT && c->exists >= 0) w->exists = c->exists;
  if (--c->pending > 0) {
    c->seq++;
    c->kind = K_SELECT;
  }
}

/* Handle the events of one epoll_wait() of the set-up. *left counts the connections
   whose replies are still expected, *unheard those that have not received a byte yet
   (their greeting: the server has not accepted them, or has not started them). */
static int setup_events(struct worker *w, int timeout_ms, size_t *left, size_t *unheard) {
  struct epoll_event evs[256];
  int k = epoll_wait(w->ep, evs, 256, timeout_ms);
  if (k < 0 && errno == EINTR) return 0;
  if (k < 0) die("epoll_wait");
  for (int j = 0; j < k; j++) {
    struct conn *c = evs[j].data.ptr;
    if (!c->alive || c->pending == 0) continue;
    int heard = c->heard;
    int ok = pump(w, c, on_setup_reply);
    if (!heard && c->heard) --*unheard;
    if (!ok) {
      if (c->alive && !c->bye) note_error(w, c, "connection lost during LOGIN/SELECT");
      if (!c->heard) --*unheard;
      conn_close(w, c);
      --*left;
    } else if (!c->alive) {
      conn_close(w, c);
      --*left;
    } else if (c->pending == 0) {
      --*left;
    }
  }
  return k;
}

/* Connect every connection, send LOGIN (and SELECT) at once, read the replies. At most
   SETUP_WINDOW connections of a thread wait for their greeting at any time: more would
   overflow the server's listen backlog, and a dropped SYN costs a 1 s retransmission. */
#define SETUP_WINDOW 32
#define SETUP_STALL 10.0      /* seconds without a byte from the server: give up */
static void setup(struct worker *w) {
  char cmd[512];
  size_t left = 0, unheard = 0;
  double progress = now();
  int stalled = 0;
  for (size_t i = 0; i < w->nconns && !stalled; i++) {
    while (unheard >= SETUP_WINDOW) {
      if (setup_events(w, 500, &left, &unheard) > 0) progress = now();
      else if (now() - progress > SETUP_STALL) {
        stalled = 1;
        break;
      }
    }
    if (stalled) break;
    struct conn *c = w->conns[i];
    c->fd = connect_to(g_host, g_port);
    set_nonblock(c->fd);
    c->alive = 1;
    c->bol = 1;
    c->exists = -1;
    c->seq = 1;
    c->kind = K_LOGIN;
    c->pending = w->run ? 2 : 1;
    int n = snprintf(cmd, sizeof cmd, "b1 LOGIN \"%s\" \"%s\"\r\n", g_user, g_pass);
    if (w->run)
      n += snprintf(cmd + n, sizeof cmd - (size_t)n, "b2 SELECT \"%s\"\r\n", g_mailbox);
    if (!send_all(c->fd, cmd, (size_t)n)) {
      note_error(w, c, "send failed");
      conn_close(w, c);
      continue;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
    left++;
    unheard++;
  }
  while (left && !stalled) {
    if (setup_events(w, 500, &left, &unheard) > 0) progress = now();
    else if (now() - progress > SETUP_STALL) stalled = 1;
  }
  for (size_t i = 0; i < w->nconns; i++) {
    struct conn *c = w->conns[i];
    if (c->alive && c->pending) {
      note_error(w, c, c->heard ? "no reply to LOGIN/SELECT in 10 s"
                                : "no greeting in 10 s (not accepted)");
      conn_close(w, c);
    } else if (c->fd < 0 && !c->alive && stalled && !c->heard && c->seq == 0) {
      note_error(w, c, "not connected: the set-up stalled");
    }
  }
}

static void on_run_reply(struct worker *w, struct conn *c) {
  double t = now();
  double d = t - c->sent;
  add_sample(&w->lat[c->kind], d);
  add_sample(&w->all, d);
  c->waiting = 0;
  if (t <= g_deadline) w->done++;
  if (strncmp(c->tagged, "OK", 2)) note_error(w, c, c->tagged);
  if (t < g_deadline) issue(c, w->exists);
}

static void *worker_main(void *arg) {
  struct worker *w = arg;
  setup(w);
  pthread_barrier_wait(w->ready);
  if (!w->run) return NULL;
  pthread_barrier_wait(w->go);
  size_t active = 0;
  for (size_t i = 0; i < w->nconns; i++) {
    struct conn *c = w->conns[i];
    if (!c->alive) continue;
    c->rng = 0x9e3779b97f4a7c15ULL ^ ((uint64_t)(uintptr_t)c * 2654435761ULL) ^ (uint64_t)i;
    if (!c->rng) c->rng = 1;
    c->step = (int)(i % 4);
    issue(c, w->exists);
    active++;
  }
  double hard = g_deadline + HARD_EXTRA;
  struct epoll_event evs[256];
  while (active && now() < hard) {
    int k = epoll_wait(w->ep, evs, 256, 100);
    if (k < 0 && errno == EINTR) continue;
    if (k < 0) die("epoll_wait");
    for (int j = 0; j < k; j++) {
      struct conn *c = evs[j].data.ptr;
      if (!c->alive || !c->waiting) continue;
      if (!pump(w, c, on_run_reply) || !c->alive) {
        if (!c->bye) note_error(w, c, "connection lost");
        conn_close(w, c);
        active--;
      } else if (!c->waiting) {   /* past the deadline: nothing more to send */
        epoll_ctl(w->ep, EPOLL_CTL_DEL, c->fd, NULL);
        active--;
      }
    }
  }
  for (size_t i = 0; i < w->nconns; i++)
    if (w->conns[i]->alive && w->conns[i]->waiting) w->unfinished++;
  return NULL;
}

/* ------------------------------------------------------------------------------------- */

static void raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
         (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* Start nthreads workers over nconns connections; returns the array of workers after
   every set-up ended (the threads of run mode wait at the go barrier). */
static struct worker *start_workers(struct conn **conns, size_t nconns, int nthreads, int run,
                                    pthread_barrier_t *ready, pthread_barrier_t *go) {
  struct worker *ws = calloc((size_t)nthreads, sizeof *ws);
  if (!ws) die("calloc");
  pthread_barrier_init(ready, NULL, (unsigned)nthreads + 1);
  pthread_barrier_init(go, NULL, (unsigned)nthreads + 1);
  size_t at = 0;
  for (int t = 0; t < nthreads; t++) {
    struct worker *w = &ws[t];
    size_t share = nconns / (size_t)nthreads + ((size_t)t < nconns % (size_t)nthreads);
    w->conns = conns + at;
    w->nconns = share;
    at += share;
    w->run = run;
    w->ready = ready;
    w->go = go;
    w->exists = 1;
    w->ep = epoll_create1(EPOLL_CLOEXEC);
    if (w->ep < 0) die("epoll_create1");
    if (pthread_create(&w->th, NULL, worker_main, w) != 0) die("pthread_create");
  }
  pthread_barrier_wait(ready);
  return ws;
}

static struct conn **alloc_conns(size_t n) {
  struct conn **cs = calloc(n, sizeof *cs);
  if (!cs) die("calloc");
  for (size_t i = 0; i < n; i++) {
    cs[i] = calloc(1, sizeof **cs);
    if (!cs[i]) die("calloc");
    cs[i]->fd = -1;
  }
  return cs;
}

static int thread_count(size_t nconns) {
  long t = 2;
  const char *e = getenv("BENCH_LOAD_THREADS");
  if (e && *e) t = arg_long(e, 1);
  if ((size_t)t > nconns) t = (long)nconns;
  return t < 1 ? 1 : (int)t;
}

static int cmd_run(long clients, double seconds) {
  struct conn **cs = alloc_conns((size_t)clients);
  int nt = thread_count((size_t)clients);
  pthread_barrier_t ready, go;
  struct worker *ws = start_workers(cs, (size_t)clients, nt, 1, &ready, &go);
  double cpu0 = cpu_seconds();
  double start = now();
  g_deadline = start + seconds;
  pthread_barrier_wait(&go);
  for (int t = 0; t < nt; t++) pthread_join(ws[t].th, NULL);
  double cpu = cpu_seconds() - cpu0;
  struct samples all = {0}, lat[NKINDS];
  memset(lat, 0, sizeof lat);
  long done = 0, errors = 0, unfinished = 0;
  const char *err = NULL;
  for (int t = 0; t < nt; t++) {
    struct worker *w = &ws[t];
    for (size_t i = 0; i < w->all.n; i++) add_sample(&all, w->all.v[i]);
    for (int k = 0; k < NKINDS; k++)
      for (size_t i = 0; i < w->lat[k].n; i++) add_sample(&lat[k], w->lat[k].v[i]);
    done += w->done;
    errors += w->errors;
    unfinished += w->unfinished;
    if (!err && w->error_line[0]) err = w->error_line;
  }
  qsort(all.v, all.n, sizeof *all.v, cmp_double);
  printf("clients %ld\nthreads %d\nseconds %.6f\ncommands %ld\ncommands_per_s %.3f\n", clients,
         nt, seconds, done, (double)done / seconds);
  printf("p50_s %.9f\np99_s %.9f\n", pct(&all, 0.50), pct(&all, 0.99));
  for (int k = 0; k < NKINDS; k++) {
    if (!lat[k].n) continue;
    qsort(lat[k].v, lat[k].n, sizeof *lat[k].v, cmp_double);
    printf("lat_%s %.9f %.9f %zu\n", kind_name[k], pct(&lat[k], 0.50), pct(&lat[k], 0.99),
           lat[k].n);
  }
  printf("errors %ld\nunfinished %ld\nclient_cpu_s %.6f\n", errors, unfinished, cpu);
  if (err) printf("error_line %s\n", err);
  for (long i = 0; i < clients; i++) conn_close(NULL, cs[i]);
  return 0;
}

/* One command on the probe connection, waiting for its tagged reply; returns the seconds
   it took, or a negative number on failure. */
static double probe_cmd(struct conn *c, const char *text) {
  char cmd[256];
  c->seq++;
  int n = tag_of(c->seq, cmd, sizeof cmd);
  n += snprintf(cmd + n, sizeof cmd - (size_t)n, "%s\r\n", text);
  double t0 = now();
  if (!send_all(c->fd, cmd, (size_t)n)) return -1;
  for (;;) {
    int r = scan(c);
    if (r == R_TAGGED) return strncmp(c->tagged, "OK", 2) ? -1 : now() - t0;
    struct pollfd pf = {c->fd, POLLIN, 0};
    if (poll(&pf, 1, 10000) <= 0) return -1;
    if (!fill(c)) return -1;
  }
}

static int cmd_idle(long n, long probes) {
  struct conn **cs = alloc_conns((size_t)n);
  int nt = thread_count((size_t)n);
  pthread_barrier_t ready, go;
  double t0 = now();
  struct worker *ws = start_workers(cs, (size_t)n, nt, 0, &ready, &go);
  long errors = 0, connected = 0;
  const char *err = NULL;
  for (int t = 0; t < nt; t++) {
    pthread_join(ws[t].th, NULL);
    errors += ws[t].errors;
    if (!err && ws[t].error_line[0]) err = ws[t].error_line;
  }
  for (long i = 0; i < n; i++) connected += cs[i]->alive;
  printf("setup_s %.6f\nconnected %ld\n", now() - t0, connected);
  printf("idle_ready %ld\n", connected);
  fflush(stdout);
  char line[64];
  if (!fgets(line, sizeof line, stdin)) { /* the caller went away: close all the same */ }

  struct conn *p = alloc_conns(1)[0];
  struct samples noop = {0}, fetch = {0};
  p->fd = connect_to(g_host, g_port);
  set_nonblock(p->fd);
  p->alive = p->bol = 1;
  p->exists = -1;
  char login[300];
  snprintf(login, sizeof login, "LOGIN \"%s\" \"%s\"", g_user, g_pass);
  int ok = probe_cmd(p, login) >= 0;     /* the greeting is skipped as untagged */
  snprintf(login, sizeof login, "SELECT \"%s\"", g_mailbox);
  ok = ok && probe_cmd(p, login) >= 0;
  for (long i = 0; ok && i < probes; i++) {
    double d = probe_cmd(p, "NOOP");
    if (d < 0) ok = 0;
    else add_sample(&noop, d);
  }
  for (long i = 0; ok && i < probes; i++) {
    double d = probe_cmd(p, "FETCH 1 (FLAGS ENVELOPE)");
    if (d < 0) ok = 0;
    else add_sample(&fetch, d);
  }
  if (!ok) {
    errors++;
    if (!err) err = "the probe client: a command failed or got no reply";
  }
  qsort(noop.v, noop.n, sizeof *noop.v, cmp_double);
  qsort(fetch.v, fetch.n, sizeof *fetch.v, cmp_double);
  printf("noop_p50_s %.9f\nnoop_p99_s %.9f\nfetch_p50_s %.9f\nfetch_p99_s %.9f\n",
         pct(&noop, 0.5), pct(&noop, 0.99), pct(&fetch, 0.5), pct(&fetch, 0.99));
  /* are the idle ones still there? EOF or a BYE means the server dropped one */
  long lost = 0;
  for (long i = 0; i < n; i++) {
    struct conn *c = cs[i];
    if (!c->alive) continue;
    c->seq = 0;
    int st = fill(c);
    scan(c);
    if (!st || c->bye) lost++;
  }
  errors += lost;
  if (lost && !err) err = "idle connections closed by the server";
  printf("lost %ld\nerrors %ld\n", lost, errors);
  if (err) printf("error_line %s\n", err);
  fflush(stdout);
  conn_close(NULL, p);
  for (long i = 0; i < n; i++) conn_close(NULL, cs[i]);
  return 0;
}

int main(int argc, char **argv) {
  raise_nofile();
  if (argc == 9 && !strcmp(argv[1], "run")) {
    g_host = argv[2];
    g_port = (int)arg_long(argv[3], 1);
    g_user = argv[4];
    g_pass = argv[5];
    g_mailbox = argv[6];
    long clients = arg_long(argv[7], 1);
    char *end;
    double secs = strtod(argv[8], &end);
    if (*end || secs <= 0) {
      fprintf(stderr, "bench_load: bad SECONDS: %s\n", argv[8]);
      return 2;
    }
    return cmd_run(clients, secs);
  }
  if (argc == 9 && !strcmp(argv[1], "idle")) {
    g_host = argv[2];
    g_port = (int)arg_long(argv[3], 1);
    g_user = argv[4];
    g_pass = argv[5];
    long n = arg_long(argv[6], 1);
    g_mailbox = argv[7];
    return cmd_idle(n, arg_long(argv[8], 1));
  }
  fprintf(stderr,
          "usage: bench_load run HOST PORT USER PASS MAILBOX CLIENTS SECONDS\n"
          "       bench_load idle HOST PORT USER PASS N MAILBOX PROBES\n");
  return 2;
}
