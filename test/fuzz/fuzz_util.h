/*
** fuzz_util.h -- what the libFuzzer targets in test/fuzz/ share. Each target includes
** "../../imapmem.c" (to reach its static functions) and then this file.
**
**   fz_fail         report a broken promise and abort(), so that libFuzzer saves the input
**   fz_fixture      the path of a file under fixtures/, wherever the fuzzer runs from
**   fz_io           a struct session_io that keeps what a session writes in fz_cap
**   fz_session      a session with no descriptors at all, logged in, optionally selected
**   fz_check_stream the server's output is well-formed IMAP: CRLF lines, tags, literals
**                   whose announced size is there, 7-bit outside literals, valid quoting
**   fz_sexp_*       a parser of IMAP parenthesised data, and checks of ENVELOPE, BODY and
**                   BODYSTRUCTURE against the grammar of RFC 3501 section 9
**   fz_naive_find   the obvious case-insensitive substring search, to check needle_find
*/
#ifndef FUZZ_UTIL_H
#define FUZZ_UTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#pragma GCC diagnostic ignored "-Wunused-function"   /* each target uses some of these */

/*
** The harness's own checks are not what is being fuzzed: their branches are left out of
** the coverage libFuzzer steers by (and cost nothing to trace). Sanitizers still apply.
*/
#if defined(__clang__)
#define FZ static __attribute__((no_sanitize("coverage")))
#else
#define FZ static
#endif

/* ------------------------------------------------------------------------- */
/* Reporting: print what is wrong, with the bytes near it, and abort(). */
FZ void fz_dump(const char *label, const char *p, size_t n) {
  size_t show = n < 400 ? n : 400;
  fprintf(stderr, "%s (%zu bytes): \"", label, n);
  for (size_t i = 0; i < show; i++) {
    unsigned char c = (unsigned char)p[i];
    if (c == '\\' || c == '"') fprintf(stderr, "\\%c", c);
    else if (c >= 0x20 && c < 0x7f) fputc(c, stderr);
    else if (c == '\r') fputs("\\r", stderr);
    else if (c == '\n') fputs("\\n", stderr);
    else fprintf(stderr, "\\x%02x", c);
  }
  fprintf(stderr, "\"%s\n", show < n ? "..." : "");
}

FZ void fz_fail(const char *what, const char *p, size_t n) {
  fprintf(stderr, "\n==imapmem-fuzz== BROKEN PROMISE: %s\n", what);
  if (p) fz_dump("near", p, n);
  fflush(stderr);
  abort();
}

/*
** Known findings, not fixed yet, so that a long run can go on past them: the environment
** variable IMAPMEM_FUZZ_KNOWN holds pieces of the messages below, separated by ';'. A
** check whose message contains one of them does not abort; the target drops what depends
** on it and goes on. Unset (the default, and in make test), every finding aborts.
*/
FZ int fz_is_known(const char *why) {
  const char *k = getenv("IMAPMEM_FUZZ_KNOWN");
  while (k && *k) {
    size_t n = strcspn(k, ";");
    for (const char *w = why; n && *w; w++)
      if (strncmp(w, k, n) == 0) return 1;
    k += n + (k[n] == ';');
  }
  return 0;
}

/* A check's verdict: 1 if why is NULL; 0 if it is a known finding; else abort. */
FZ int fz_verdict(const char *why, const char *p, size_t n) {
  if (!why) return 1;
  if (fz_is_known(why)) return 0;
  fz_fail(why, p, n);
  return 0;
}

/* ------------------------------------------------------------------------- */
/*
** fixtures/REL: $IMAPMEM_FIXTURES/REL if set, else relative to this file (run.py compiles
** with absolute paths, so the binary finds them from any directory).
*/
FZ void fz_fixture(const char *rel, char *out, size_t cap) {
  const char *env = getenv("IMAPMEM_FIXTURES");
  if (env && *env) {
    snprintf(out, cap, "%s/%s", env, rel);
    return;
  }
  const char *f = __FILE__, *slash = strrchr(f, '/');
  if (slash) snprintf(out, cap, "%.*s/../../fixtures/%s", (int)(slash - f), f, rel);
  else snprintf(out, cap, "../../fixtures/%s", rel);
}

/* A fixture's bytes (malloc'ed), or exit with a message: the target cannot run without. */
FZ char *fz_fixture_bytes(const char *rel, size_t *len) {
  char path[4096], err[600];
  char *data = NULL;
  fz_fixture(rel, path, sizeof path);
  if (!file_read(path, &data, len, err, sizeof err)) {
    fprintf(stderr, "fuzz: %s (set IMAPMEM_FIXTURES to the fixtures folder)\n", err);
    exit(2);
  }
  return data;
}

/* ------------------------------------------------------------------------- */
/*
** A session's bytes without a network (struct session_io, section 0): what it writes is
** kept in fz_cap (up to fz_cap_limit; beyond that fz_cap_over is set and the rest is
** dropped), and it reads nothing: a read in the middle of a command (AUTHENTICATE, IDLE)
** finds the connection gone.
*/
static struct buf fz_cap;
static size_t fz_cap_limit = 32u << 20;
static int fz_cap_over;

FZ void fz_capture(const char *p, size_t n) {
  if (fz_cap_over || fz_cap.len + n > fz_cap_limit) {
    fz_cap_over = 1;
    return;
  }
  buf_add(&fz_cap, p, n);
}

FZ int fz_io_flush(struct session *s) {
  if (s->out.oom) {          /* as net_flush: a lost reply ends the session */
    buf_reset(&s->out);
    s->out.oom = 0;
    buf_adds(&s->out, "* BYE Out of memory\r\n");
    s->closing = 1;
  }
  fz_capture(s->out.p ? s->out.p : "", s->out.len);
  buf_reset(&s->out);
  return !s->closing;
}

FZ int fz_io_write(struct session *s, const char *p, size_t n) {
  (void)s;
  fz_capture(p, n);
  return 1;
}

FZ int fz_io_read_line(struct session *s, struct buf *line, size_t max, int wake_ok) {
  (void)s;
  (void)max;
  (void)wake_ok;
  buf_reset(line);
  return -1;
}

static const struct session_io fz_io = {fz_io_flush, fz_io_write, fz_io_read_line};

FZ void fz_capture_reset(void) {
  buf_reset(&fz_cap);
  fz_cap.oom = 0;
  fz_cap_over = 0;
}

FZ void fz_nowake(struct watcher *w) {
  (void)w;
}

/*
** A session with no descriptors, logged in as user; with mailbox, it is selected (or
** examined) the way a client does it: through session_execute. NULL if that failed.
*/
FZ struct session *fz_session(struct imapmem *srv, const char *user, const char *mailbox,
                                  int examine) {
  struct session *s = calloc(1, sizeof *s);
  if (!s) return NULL;
  s->srv = srv;
  s->io = &fz_io;
  s->id = 1;
  s->fd = s->fd_out = -1;
  s->wake[0] = s->wake[1] = -1;
  s->watch.wake = fz_nowake;
  atomic_init(&s->finished, 0);
  s->state = ST_AUTH;
  s->user = server_user(srv, str_make(user, strlen(user)));
  if (!s->user) {
    free(s);
    return NULL;
  }
  if (mailbox) {
    buf_printf(&s->cmd, "s %s %s", examine ? "EXAMINE" : "SELECT", mailbox);
    session_execute(s);
    arena_free(&s->arena);
    fz_io_flush(s);
    fz_capture_reset();
    if (s->state != ST_SELECTED) {
      session_free(s);
      return NULL;
    }
  }
  return s;
}

FZ void fz_session_free(struct session *s) {
  if (!s) return;
  session_unselect(s);
  session_free(s);           /* its descriptors are -1: nothing is closed */
}

/* ------------------------------------------------------------------------- */
/*
** The server's output is a well-formed stream of IMAP responses (RFC 3501 section 7 and
** the grammar of section 9), as far as a client's tokenizer sees it:
**   every line ends in CRLF; no bare CR or LF, no NUL, no 8-bit byte outside literals;
**   a line starts with "* ", "+ ", or a tag followed by " OK ", " NO " or " BAD ";
**   in a data line (not a status response), quoted strings are closed on the line and
**   escape only \ and ", and a line ending in {n} is followed by exactly n more bytes.
** Returns NULL, or what is wrong (and *at: where). If text is not NULL, it is given each
** piece of a data line that has passed (the bytes between literals, without the CRLF; not
** a status line, whose text is free text), so a target can check what the server says
** without reading a message's bytes as its words.
*/
FZ int fz_is_tag_char(int c) {   /* RFC 3501 9: ASTRING-CHAR but '+'; ']' is one */
  return c > 0x20 && c < 0x7f && !strchr("(){%*\"\\+", c);
}

FZ int fz_word_is(const char *p, size_t n, const char *w) {
  size_t k = strlen(w);
  return n >= k + 1 && strncasecmp(p, w, k) == 0 && p[k] == ' ';
}

FZ const char *fz_check_stream(const char *p, size_t n, size_t *at,
                                void (*text)(const char *p, size_t n)) {
  size_t i = 0;
  while (i < n) {
    *at = i;
    const char *lf = memchr(p + i, '\n', n - i);
    if (!lf) return "the output ends inside a line (no CRLF)";
    size_t first_end = (size_t)(lf - p);      /* the first segment of the line */
    int status;
    if (p[i] == '+') {
      if (i + 1 >= n || p[i + 1] != ' ') return "a continuation request without a space";
      status = 1;
    } else if (p[i] == '*') {
      if (i + 1 >= n || p[i + 1] != ' ') return "an untagged response without a space";
      const char *w = p + i + 2;
      size_t wn = first_end - (i + 2);
      status = fz_word_is(w, wn, "OK") || fz_word_is(w, wn, "NO") ||
               fz_word_is(w, wn, "BAD") || fz_word_is(w, wn, "BYE") ||
               fz_word_is(w, wn, "PREAUTH");
    } else {
      size_t t = i;
      while (t < first_end && fz_is_tag_char((unsigned char)p[t])) t++;
      if (t == i || t >= first_end || p[t] != ' ')
        return "a line that starts with neither '*', '+' nor a tag";
      const char *w = p + t + 1;
      size_t wn = first_end - (t + 1);
      if (!fz_word_is(w, wn, "OK") && !fz_word_is(w, wn, "NO") && !fz_word_is(w, wn, "BAD"))
        return "a tagged line that is not OK, NO or BAD followed by text";
      status = 1;
    }
    for (;;) {               /* the line's segments, literals in between */
      lf = memchr(p + i, '\n', n - i);
      if (!lf) return "the output ends inside a line (no CRLF)";
      size_t e = (size_t)(lf - p);
      if (e == i || p[e - 1] != '\r') {
        *at = e;
        return "a bare LF";
      }
      size_t seg_end = e - 1;                  /* the CR */
      int in_quote = 0;
      for (size_t k = i; k < seg_end; k++) {
        unsigned char c = (unsigned char)p[k];
        if (c == '\r' || c == 0 || c >= 0x80) {
          *at = k;
          return c == '\r' ? "a bare CR" : c ? "an 8-bit byte outside a literal"
                                             : "a NUL outside a literal";
        }
        if (status) continue;
        if (c == '"') in_quote = !in_quote;
        else if (c == '\\' && in_quote) {
          if (k + 1 >= seg_end || (p[k + 1] != '"' && p[k + 1] != '\\')) {
            *at = k;
            return "a quoted string with an escape other than \\\\ or \\\"";
          }
          k++;
        }
      }
      if (in_quote) {
        *at = i;
        return "a quoted string not closed on its line";
      }
      if (text && !status) text(p + i, seg_end - i);   /* status text is free text */
      size_t lit = 0;
      int is_lit = 0;
      if (!status && seg_end > i && p[seg_end - 1] == '}') {
        size_t d = seg_end - 1;
        while (d > i && p[d - 1] >= '0' && p[d - 1] <= '9') d--;
        if (d < seg_end - 1 && d > i && p[d - 1] == '{') {
          is_lit = 1;
          if (seg_end - 1 - d > 10) return "a literal size of more than 10 digits";
          for (size_t k = d; k < seg_end - 1; k++) lit = lit * 10 + (size_t)(p[k] - '0');
        }
      }
      i = e + 1;
      if (!is_lit) break;
      if (lit > n - i) {
        *at = i;
        return "a literal announced larger than what follows";
      }
      i += lit;
    }
  }
  return NULL;
}

/* 1 if the output is well-formed (or its fault a known finding: 0); else abort. text as
   for fz_check_stream. */
FZ int fz_require_stream(const char *p, size_t n, void (*text)(const char *p, size_t n)) {
  size_t at = 0;
  const char *why = fz_check_stream(p, n, &at, text);
  if (why && !fz_is_known(why)) {
    size_t from = at > 200 ? at - 200 : 0;
    fz_dump("output before it", p + from, at - from);
    fz_fail(why, p + at, n - at < 200 ? n - at : 200);
  }
  return why == NULL;
}

/* ------------------------------------------------------------------------- */
/*
** IMAP parenthesised data (the body, envelope and their parts): NIL, numbers, strings
** (quoted or literal) and lists, items separated by one space; a list may also follow a
** list with nothing between (the grammar's 1*body and 1*address: "(...)(...)"), which
** the node records as glued. Nodes in one array; each list knows its first child and each
** node its next sibling.
*/
enum { FZ_NIL, FZ_NUM, FZ_STR, FZ_LIST };
struct fz_node {
  int type;
  const char *p;             /* a string's bytes (quoted: as written, without escapes) */
  size_t len;
  int escaped;               /* a quoted string with \-escapes in it */
  int glued;                 /* a list that follows a list with no space between */
  uint64_t num;
  int first, next, count;    /* a list's first child and its length; the next sibling */
};
struct fz_tree {
  struct fz_node *v;
  int n, cap;
  const char *err;
  const char *at;
};

FZ int fz_sexp_fail(struct fz_tree *t, const char *why, const char *at) {
  if (!t->err) {
    t->err = why;
    t->at = at;
  }
  return -1;
}

FZ int fz_sexp_node(struct fz_tree *t, int type) {
  if (t->n == t->cap) {
    int ncap = t->cap ? t->cap * 2 : 64;
    struct fz_node *nv = realloc(t->v, sizeof *nv * (size_t)ncap);
    if (!nv) abort();
    t->v = nv;
    t->cap = ncap;
  }
  memset(&t->v[t->n], 0, sizeof t->v[0]);
  t->v[t->n].type = type;
  t->v[t->n].first = t->v[t->n].next = -1;
  return t->n++;
}

FZ int fz_sexp_item(struct fz_tree *t, const char **pp, const char *end, int depth) {
  const char *p = *pp;
  if (p >= end) return fz_sexp_fail(t, "data ends where an item should be", p);
  if (depth > 1000) return fz_sexp_fail(t, "lists nested too deeply", p);
  if (*p == '(') {
    int me = fz_sexp_node(t, FZ_LIST), last = -1;
    p++;
    if (p < end && *p == ')') {
      *pp = p + 1;
      return me;
    }
    int glued = 0;
    for (;;) {
      int c = fz_sexp_item(t, &p, end, depth + 1);
      if (c < 0) return -1;
      t->v[c].glued = glued;
      if (last < 0) t->v[me].first = c;
      else t->v[last].next = c;
      last = c;
      t->v[me].count++;
      if (p < end && *p == ')') {
        *pp = p + 1;
        return me;
      }
      glued = p < end && *p == '(' && t->v[c].type == FZ_LIST;
      if (glued) continue;
      if (p >= end || *p != ' ') return fz_sexp_fail(t, "items not separated by one space", p);
      p++;
    }
  }
  if (*p == '"') {
    int me = fz_sexp_node(t, FZ_STR);
    const char *s = ++p;
    while (p < end && *p != '"') {
      unsigned char c = (unsigned char)*p;
      if (c == '\r' || c == '\n' || c == 0 || c >= 0x80)
        return fz_sexp_fail(t, "a quoted string with CR, LF, NUL or an 8-bit byte", p);
      if (c == '\\') {
        if (p + 1 >= end || (p[1] != '"' && p[1] != '\\'))
          return fz_sexp_fail(t, "a quoted string with a bad escape", p);
        t->v[me].escaped = 1;
        p++;
      }
      p++;
    }
    if (p >= end) return fz_sexp_fail(t, "an unterminated quoted string", s - 1);
    t->v[me].p = s;
    t->v[me].len = (size_t)(p - s);
    *pp = p + 1;
    return me;
  }
  if (*p == '{') {
    const char *s = p++;
    uint64_t v = 0;
    int digits = 0;
    while (p < end && *p >= '0' && *p <= '9' && digits < 12) {
      v = v * 10 + (uint64_t)(*p++ - '0');
      digits++;
    }
    if (!digits || end - p < 3 || p[0] != '}' || p[1] != '\r' || p[2] != '\n')
      return fz_sexp_fail(t, "a malformed literal announcement", s);
    p += 3;
    if ((uint64_t)(end - p) < v) return fz_sexp_fail(t, "a literal longer than the data", s);
    if (memchr(p, 0, (size_t)v)) return fz_sexp_fail(t, "a NUL in a literal", s);
    int me = fz_sexp_node(t, FZ_STR);
    t->v[me].p = p;
    t->v[me].len = (size_t)v;
    *pp = p + v;
    return me;
  }
  if (*p >= '0' && *p <= '9') {
    int me = fz_sexp_node(t, FZ_NUM);
    uint64_t v = 0;
    const char *s = p;
    while (p < end && *p >= '0' && *p <= '9') {
      v = v * 10 + (uint64_t)(*p++ - '0');
      if (v > UINT32_MAX) return fz_sexp_fail(t, "a number over 4294967295", s);
    }
    t->v[me].num = v;
    *pp = p;
    return me;
  }
  if (end - p >= 3 && memcmp(p, "NIL", 3) == 0) {
    *pp = p + 3;
    return fz_sexp_node(t, FZ_NIL);
  }
  return fz_sexp_fail(t, "not NIL, a number, a string or a list", p);
}

/* Parse all of [p, p+n) as one item; returns its node or -1 (t->err says why). */
FZ int fz_sexp_parse(struct fz_tree *t, const char *p, size_t n) {
  const char *q = p, *end = p + n;
  int root = fz_sexp_item(t, &q, end, 0);
  if (root >= 0 && q != end) return fz_sexp_fail(t, "more data after the item", q);
  return root;
}

FZ void fz_sexp_free(struct fz_tree *t) {
  free(t->v);
  memset(t, 0, sizeof *t);
}

FZ int fz_child(const struct fz_tree *t, int list, int k) {
  int c = t->v[list].first;
  while (c >= 0 && k-- > 0) c = t->v[c].next;
  return c;
}

FZ int fz_is(const struct fz_tree *t, int i, int type) {
  return i >= 0 && t->v[i].type == type;
}

FZ int fz_nstring(const struct fz_tree *t, int i) {
  return fz_is(t, i, FZ_NIL) || fz_is(t, i, FZ_STR);
}

/* Every item of the list after the first is separated from the one before by a space. */
FZ int fz_spaced(const struct fz_tree *t, int list) {
  for (int c = t->v[list].first; c >= 0; c = t->v[c].next)
    if (t->v[c].glued) return 0;
  return 1;
}

FZ int fz_str_ieq(const struct fz_tree *t, int i, const char *z) {
  return fz_is(t, i, FZ_STR) && !t->v[i].escaped && t->v[i].len == strlen(z) &&
         strncasecmp(t->v[i].p, z, t->v[i].len) == 0;
}

/* Two items are the same data. */
FZ int fz_same(const struct fz_tree *a, int i, const struct fz_tree *b, int j) {
  if (i < 0 || j < 0) return i == j;
  const struct fz_node *x = &a->v[i], *y = &b->v[j];
  if (x->type != y->type) return 0;
  if (x->type == FZ_NUM) return x->num == y->num;
  if (x->type == FZ_STR)
    return x->len == y->len && x->escaped == y->escaped && memcmp(x->p, y->p, x->len) == 0;
  if (x->type == FZ_LIST) {
    if (x->count != y->count) return 0;
    for (int c = x->first, d = y->first; c >= 0; c = a->v[c].next, d = b->v[d].next)
      if (!fz_same(a, c, b, d)) return 0;
  }
  return 1;
}

/* ENVELOPE (RFC 3501 9): 10 items; addresses are (name adl mailbox host), groups balanced. */
FZ const char *fz_check_address_list(const struct fz_tree *t, int i) {
  if (fz_is(t, i, FZ_NIL)) return NULL;
  if (!fz_is(t, i, FZ_LIST) || t->v[i].count == 0) return "an address list that is not NIL or (address...)";
  int group = 0;
  for (int a = t->v[i].first; a >= 0; a = t->v[a].next) {
    if (!fz_is(t, a, FZ_LIST) || t->v[a].count != 4) return "an address that is not a list of 4";
    if (a != t->v[i].first && !t->v[a].glued) return "addresses separated by a space (1*address)";
    if (!fz_spaced(t, a)) return "address items not separated by spaces";
    for (int k = 0; k < 4; k++)
      if (!fz_nstring(t, fz_child(t, a, k))) return "an address item that is not an nstring";
    int mbox = fz_child(t, a, 2), host = fz_child(t, a, 3);
    if (fz_is(t, host, FZ_NIL)) {          /* group syntax (RFC 3501 7.4.2) */
      if (fz_is(t, mbox, FZ_NIL)) {
        if (!group) return "the end of a group that never started";
        group = 0;
      } else {
        if (group) return "a group inside a group";
        group = 1;
      }
    }
  }
  if (group) return "a group that never ends";
  return NULL;
}

FZ const char *fz_check_envelope(const struct fz_tree *t, int i) {
  if (!fz_is(t, i, FZ_LIST) || t->v[i].count != 10) return "an ENVELOPE that is not a list of 10";
  if (!fz_spaced(t, i)) return "ENVELOPE items not separated by spaces";
  for (int k = 0; k < 10; k++) {
    int c = fz_child(t, i, k);
    const char *why = k >= 2 && k <= 7 ? fz_check_address_list(t, c)
                      : fz_nstring(t, c) ? NULL : "an ENVELOPE field that is not an nstring";
    if (why) return why;
  }
  return NULL;
}

/* body-fld-param: NIL or (string string *(string string)). */
FZ const char *fz_check_params(const struct fz_tree *t, int i) {
  if (fz_is(t, i, FZ_NIL)) return NULL;
  if (!fz_is(t, i, FZ_LIST) || t->v[i].count == 0 || t->v[i].count % 2)
    return "body parameters that are not NIL or pairs of strings";
  if (!fz_spaced(t, i)) return "body parameters not separated by spaces";
  for (int c = t->v[i].first; c >= 0; c = t->v[c].next)
    if (!fz_is(t, c, FZ_STR)) return "a body parameter that is not a string";
  return NULL;
}

/* body-fld-dsp, body-fld-lang, body-fld-loc, then *(body-extension), from child k on. */
FZ const char *fz_check_ext_tail(const struct fz_tree *t, int list, int k);

FZ const char *fz_check_extension(const struct fz_tree *t, int i, int depth) {
  if (depth > 100) return "body extensions nested too deeply";
  if (fz_nstring(t, i) || fz_is(t, i, FZ_NUM)) return NULL;
  if (!fz_is(t, i, FZ_LIST) || t->v[i].count == 0 || !fz_spaced(t, i)) return "a bad body extension";
  for (int c = t->v[i].first; c >= 0; c = t->v[c].next) {
    const char *why = fz_check_extension(t, c, depth + 1);
    if (why) return why;
  }
  return NULL;
}

FZ const char *fz_check_ext_tail(const struct fz_tree *t, int list, int k) {
  int dsp = fz_child(t, list, k);
  if (dsp < 0) return NULL;
  if (!fz_is(t, dsp, FZ_NIL)) {
    if (!fz_is(t, dsp, FZ_LIST) || t->v[dsp].count != 2 || !fz_spaced(t, dsp) ||
        !fz_is(t, fz_child(t, dsp, 0), FZ_STR))
      return "a body disposition that is not NIL or (string params)";
    const char *why = fz_check_params(t, fz_child(t, dsp, 1));
    if (why) return why;
  }
  int lang = fz_child(t, list, k + 1);
  if (lang < 0) return NULL;
  if (fz_is(t, lang, FZ_LIST)) {
    if (t->v[lang].count == 0 || !fz_spaced(t, lang)) return "an empty or glued body language list";
    for (int c = t->v[lang].first; c >= 0; c = t->v[c].next)
      if (!fz_is(t, c, FZ_STR)) return "a body language that is not a string";
  } else if (!fz_nstring(t, lang)) {
    return "a body language that is not an nstring or a list";
  }
  int loc = fz_child(t, list, k + 2);
  if (loc < 0) return NULL;
  if (!fz_nstring(t, loc)) return "a body location that is not an nstring";
  for (int c = t->v[loc].next; c >= 0; c = t->v[c].next) {
    const char *why = fz_check_extension(t, c, 0);
    if (why) return why;
  }
  return NULL;
}

/* How many items of a one-part body come before its extension data; 0 if it is no body. */
FZ int fz_body_fixed(const struct fz_tree *t, int i) {
  if (fz_str_ieq(t, fz_child(t, i, 0), "MESSAGE") && fz_str_ieq(t, fz_child(t, i, 1), "RFC822"))
    return 10;
  if (fz_str_ieq(t, fz_child(t, i, 0), "TEXT")) return 8;
  return 7;
}

/* body (RFC 3501 9); ext: BODYSTRUCTURE (extension data allowed), else BODY (none). */
FZ const char *fz_check_body(const struct fz_tree *t, int i, int ext, int depth) {
  if (depth > 200) return "bodies nested too deeply";
  if (!fz_is(t, i, FZ_LIST) || t->v[i].count == 0) return "a body that is not a non-empty list";
  int c0 = t->v[i].first;
  if (fz_is(t, c0, FZ_LIST)) {                 /* body-type-mpart */
    int c = c0, k = 0;
    for (; fz_is(t, c, FZ_LIST); c = t->v[c].next, k++) {
      if (c != c0 && !t->v[c].glued) return "the parts of a multipart separated by a space";
      const char *why = fz_check_body(t, c, ext, depth + 1);
      if (why) return why;
    }
    if (!fz_is(t, c, FZ_STR)) return "a multipart body without a subtype string";
    for (int r = c; r >= 0; r = t->v[r].next)
      if (t->v[r].glued) return "multipart items after the parts not separated by spaces";
    int rest = t->v[c].next;
    if (rest < 0) return NULL;
    if (!ext) return "extension data in BODY (multipart)";
    const char *why = fz_check_params(t, rest);
    if (why) return why;
    return fz_check_ext_tail(t, i, k + 2);
  }
  /* body-type-1part: type subtype params id desc enc octets [...] */
  if (t->v[i].count < 7) return "a one-part body with fewer than 7 items";
  if (!fz_spaced(t, i)) return "one-part body items not separated by spaces";
  if (!fz_is(t, c0, FZ_STR) || !fz_is(t, fz_child(t, i, 1), FZ_STR))
    return "a body type or subtype that is not a string";
  const char *why = fz_check_params(t, fz_child(t, i, 2));
  if (why) return why;
  if (!fz_nstring(t, fz_child(t, i, 3)) || !fz_nstring(t, fz_child(t, i, 4)))
    return "a body id or description that is not an nstring";
  if (!fz_is(t, fz_child(t, i, 5), FZ_STR)) return "a body encoding that is not a string";
  if (!fz_is(t, fz_child(t, i, 6), FZ_NUM)) return "body octets that are not a number";
  int fixed = fz_body_fixed(t, i);
  if (t->v[i].count < fixed) return "a MESSAGE/RFC822 or TEXT body missing its own items";
  if (fixed == 10) {
    if ((why = fz_check_envelope(t, fz_child(t, i, 7)))) return why;
    if ((why = fz_check_body(t, fz_child(t, i, 8), ext, depth + 1))) return why;
    if (!fz_is(t, fz_child(t, i, 9), FZ_NUM)) return "MESSAGE/RFC822 lines that are not a number";
  } else if (fixed == 8 && !fz_is(t, fz_child(t, i, 7), FZ_NUM)) {
    return "TEXT lines that are not a number";
  }
  int md5 = fz_child(t, i, fixed);
  if (md5 < 0) return NULL;
  if (!ext) return "extension data in BODY";
  if (!fz_nstring(t, md5)) return "a body MD5 that is not an nstring";
  return fz_check_ext_tail(t, i, fixed + 1);
}

/* BODY is BODYSTRUCTURE without the extension data (item i of a, item j of b). */
FZ int fz_body_is_stripped(const struct fz_tree *a, int i, const struct fz_tree *b, int j) {
  int x = a->v[i].first, y = b->v[j].first;
  if (fz_is(a, x, FZ_LIST)) {                  /* multipart: the parts, then the subtype */
    for (; fz_is(a, x, FZ_LIST); x = a->v[x].next, y = b->v[y].next)
      if (!fz_is(b, y, FZ_LIST) || !fz_body_is_stripped(a, x, b, y)) return 0;
    return fz_same(a, x, b, y) && b->v[y].next < 0;
  }
  int fixed = fz_body_fixed(a, i);
  if (b->v[j].count != fixed) return 0;
  for (int k = 0; k < fixed; k++, x = a->v[x].next, y = b->v[y].next) {
    if (fixed == 10 && k == 8) {
      if (!fz_is(a, x, FZ_LIST) || !fz_is(b, y, FZ_LIST) || !fz_body_is_stripped(a, x, b, y))
        return 0;
    } else if (!fz_same(a, x, b, y)) {
      return 0;
    }
  }
  return 1;
}

/* ------------------------------------------------------------------------- */
/*
** The obvious case-insensitive substring search, to check needle_find against: ASCII
** letters, and for a needle with non-ASCII bytes the letters utf8_fold folds.
*/
FZ int fz_naive_at(const unsigned char *needle, size_t m, const unsigned char *text) {
  size_t k = 0;
  while (k < m && tolower(text[k]) == tolower(needle[k])) k++;
  return k == m;
}

FZ const char *fz_naive_find(const char *needle, size_t m, const char *text, size_t n) {
  if (m == 0) return text;
  int fold = 0;
  for (size_t i = 0; i < m; i++) fold |= (unsigned char)needle[i] >= 0x80;
  unsigned char *fn = fold ? malloc(m) : NULL, *ft = fold ? malloc(n + 1) : NULL;
  if (fn && ft) {
    memcpy(fn, needle, m);
    memcpy(ft, text, n);
    utf8_fold(fn, m);
    utf8_fold(ft, n);
  }
  const unsigned char *nb = fn && ft ? fn : (const unsigned char *)needle;
  const unsigned char *tb = fn && ft ? ft : (const unsigned char *)text;
  const char *found = NULL;
  for (size_t i = 0; !found && i + m <= n; i++)
    if (fz_naive_at(nb, m, tb + i)) found = text + i;
  free(fn);
  free(ft);
  return found;
}

#endif
