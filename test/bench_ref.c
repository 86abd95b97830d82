/*
** bench_ref.c -- the machine's own reference measurements for `make bench`.
**
** test/bench.py runs this program to learn what the hardware can do, and prints every
** imapmem figure beside one of these. Output is machine-readable: one `key value...` line
** per figure; times in seconds, several samples per line where a measurement is repeated.
**
**   bench_ref read FILE REPS          read FILE from the page cache (after one warm-up
**                                     read): read_file_s (a fresh anonymous mapping each
**                                     time, page faults included, as a program that reads
**                                     the file once sees it) and
**                                     read_file_hot_s (one buffer, already faulted in)
**   bench_ref scan FILE NEEDLE REPS   case-insensitive substring scan of FILE's bytes,
**                                     already in memory, counting every occurrence:
**                                     scan_s, scan_matches, scan_bytes
**   bench_ref tcp MB REPS             loopback TCP bandwidth between two processes: a
**                                     forked child writes MB MiB, the parent reads them:
**                                     tcp_s (per run), tcp_bytes
**   bench_ref serve FILE COUNT        listen on 127.0.0.1 (ephemeral port), print `port N`,
**                                     then for each of COUNT connections: read one line (a
**                                     command), write FILE's bytes (held in memory), wait
**                                     for the peer to close. This replays a recorded server
**                                     response so the benchmark's own client can be timed
**                                     against a sender that costs nothing.
**   bench_ref hello                   print `ready` and exit (process start-up floor)
*/
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BENCH_PROG "bench_ref"
#include "bench_util.h"

/* Read the whole file into buf (cap bytes, at least the file's size); returns bytes. */
static size_t read_into(const char *path, char *buf, size_t cap) {
  int fd = open(path, O_RDONLY);
  if (fd < 0) die(path);
  size_t n = 0;
  for (;;) {
    ssize_t r = read(fd, buf + n, cap - n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) die("read");
    if (r == 0) break;
    n += (size_t)r;
    if (n == cap) break;
  }
  close(fd);
  return n;
}

static size_t file_size(const char *path) {
  struct stat st;
  if (stat(path, &st) < 0) die(path);
  return (size_t)st.st_size;
}

static char *load(const char *path, size_t *len) {
  size_t cap = file_size(path);
  char *buf = malloc(cap + 1);
  if (!buf) die("malloc");
  *len = read_into(path, buf, cap);
  buf[*len] = 0;
  return buf;
}

static void print_samples(const char *key, const double *v, int n) {
  printf("%s", key);
  for (int i = 0; i < n; i++) printf(" %.6f", v[i]);
  printf("\n");
}

static int cmd_read(const char *path, int reps) {
  size_t cap = file_size(path);
  double *fresh = calloc((size_t)reps, sizeof *fresh), *hot = calloc((size_t)reps, sizeof *hot);
  char *buf = malloc(cap + 1);
  if (!fresh || !hot || !buf) die("malloc");
  size_t n = read_into(path, buf, cap); /* warm-up: the file is now in the page cache */
  /* A program reading the file once: new memory, its page faults included. mmap() and not
     malloc(): after the first free() of a large block glibc raises its mmap threshold (up
     to 32 MiB) and the next malloc() would reuse heap pages already faulted in. */
  for (int i = 0; i < reps; i++) {
    double t0 = now();
    char *b = mmap(NULL, cap + 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (b == MAP_FAILED) die("mmap");
    if (read_into(path, b, cap) != n) die("file changed");
    fresh[i] = now() - t0;
    munmap(b, cap + 1);
  }
  for (int i = 0; i < reps; i++) {      /* the copy alone: the buffer is already mapped */
    double t0 = now();
    if (read_into(path, buf, cap) != n) die("file changed");
    hot[i] = now() - t0;
  }
  print_samples("read_file_s", fresh, reps);
  print_samples("read_file_hot_s", hot, reps);
  printf("read_file_bytes %zu\n", n);
  free(buf);
  free(fresh);
  free(hot);
  return 0;
}

/* Case-insensitive count of needle in hay: a plain strcasestr-style scan, no libc help. */
static unsigned char lower_tab[256];

static size_t count_casefind(const unsigned char *h, size_t hn, const unsigned char *nd,
                             size_t nn) {
  if (nn == 0 || hn < nn) return 0;
  size_t count = 0;
  unsigned char f = lower_tab[nd[0]];
  size_t last = hn - nn;
  for (size_t i = 0; i <= last; i++) {
    if (lower_tab[h[i]] != f) continue;
    size_t j = 1;
    while (j < nn && lower_tab[h[i + j]] == lower_tab[nd[j]]) j++;
    if (j == nn) count++;
  }
  return count;
}

static int cmd_scan(const char *path, const char *needle, int reps) {
  for (int c = 0; c < 256; c++) lower_tab[c] = (unsigned char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
  size_t len;
  char *buf = load(path, &len);
  double *t = calloc((size_t)reps, sizeof *t);
  if (!t) die("malloc");
  size_t nn = strlen(needle), matches = 0;
  matches = count_casefind((const unsigned char *)buf, len, (const unsigned char *)needle, nn);
  for (int i = 0; i < reps; i++) {
    double t0 = now();
    size_t m = count_casefind((const unsigned char *)buf, len, (const unsigned char *)needle, nn);
    t[i] = now() - t0;
    if (m != matches) die("scan disagrees with itself");
  }
  print_samples("scan_s", t, reps);
  printf("scan_matches %zu\n", matches);
  printf("scan_bytes %zu\n", len);
  free(buf);
  free(t);
  return 0;
}

static int listen_loopback(int *port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) die("socket");
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
  if (listen(fd, 16) < 0) die("listen");
  socklen_t al = sizeof a;
  if (getsockname(fd, (struct sockaddr *)&a, &al) < 0) die("getsockname");
  *port = ntohs(a.sin_port);
  return fd;
}

static int connect_loopback(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) die("socket");
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons((uint16_t)port);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
  return fd;
}

static void write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) die("write");
    p += w;
    n -= (size_t)w;
  }
}

#define CHUNK (256 * 1024)

static int cmd_tcp(long mb, int reps) {
  size_t total = (size_t)mb * 1024 * 1024;
  double *t = calloc((size_t)reps, sizeof *t);
  char *buf = malloc(CHUNK);
  if (!t || !buf) die("malloc");
  memset(buf, 'x', CHUNK);
  for (int i = 0; i < reps; i++) {
    int port, lfd = listen_loopback(&port);
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {               /* the writer */
      close(lfd);
      int fd = connect_loopback(port);
      size_t left = total;
      while (left > 0) {
        size_t n = left < CHUNK ? left : CHUNK;
        write_all(fd, buf, n);
        left -= n;
      }
      close(fd);
      _exit(0);
    }
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0) die("accept");
    double t0 = now();            /* from the connection to the last byte read */
    size_t got = 0;
    for (;;) {
      ssize_t r = read(fd, buf, CHUNK);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) die("read");
      if (r == 0) break;
      got += (size_t)r;
    }
    t[i] = now() - t0;
    close(fd);
    close(lfd);
    int st;
    waitpid(pid, &st, 0);
    if (got != total) {
      fprintf(stderr, "bench_ref: tcp: read %zu of %zu bytes\n", got, total);
      return 2;
    }
  }
  print_samples("tcp_s", t, reps);
  printf("tcp_bytes %zu\n", total);
  free(t);
  free(buf);
  return 0;
}

static int cmd_serve(const char *path, int count) {
  size_t len;
  char *data = load(path, &len);
  int port, lfd = listen_loopback(&port);
  printf("port %d\n", port);
  fflush(stdout);
  char line[4096];
  for (int i = 0; i < count; i++) {
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0) die("accept");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    size_t got = 0;              /* one command line, as an IMAP client sends it */
    while (got == 0 || line[got - 1] != '\n') {
      ssize_t r = read(fd, line + got, sizeof line - got);
      if (r <= 0) break;
      got += (size_t)r;
      if (got == sizeof line) got = 0;
    }
    write_all(fd, data, len);
    while (read(fd, line, sizeof line) > 0) {}  /* until the client closes */
    close(fd);
  }
  close(lfd);
  free(data);
  return 0;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc == 4 && strcmp(argv[1], "read") == 0)
    return cmd_read(argv[2], (int)arg_long(argv[3], 1));
  if (argc == 5 && strcmp(argv[1], "scan") == 0)
    return cmd_scan(argv[2], argv[3], (int)arg_long(argv[4], 1));
  if (argc == 4 && strcmp(argv[1], "tcp") == 0)
    return cmd_tcp(arg_long(argv[2], 1), (int)arg_long(argv[3], 1));
  if (argc == 4 && strcmp(argv[1], "serve") == 0)
    return cmd_serve(argv[2], (int)arg_long(argv[3], 1));
  if (argc == 2 && strcmp(argv[1], "hello") == 0) {
    printf("ready\n");
    return 0;
  }
  fprintf(stderr,
          "usage: bench_ref read FILE REPS | scan FILE NEEDLE REPS | tcp MB REPS |\n"
          "       serve FILE COUNT | hello\n");
  return 2;
}
