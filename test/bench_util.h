/*
** bench_util.h -- what the benchmark's C helpers (bench_ref.c, bench_load.c) share: a
** monotonic clock, and the way they give up on a failed call or a bad argument (exit 2,
** the message named by BENCH_PROG). Define BENCH_PROG before including it.
*/
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what) {
  fprintf(stderr, BENCH_PROG ": %s: %s\n", what, strerror(errno));
  exit(2);
}

static long arg_long(const char *s, long min) {
  char *end;
  long v = strtol(s, &end, 10);
  if (*s == 0 || *end != 0 || v < min) {
    fprintf(stderr, BENCH_PROG ": bad number: %s\n", s);
    exit(2);
  }
  return v;
}
