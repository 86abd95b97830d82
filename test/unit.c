/*
** unit.c -- C unit tests of imapmem's internals: the command parser, sequence sets, the
** mbox loader, dates, and the message model. It includes imapmem.c to reach its static
** functions. Prints "N passed, N failed" last.
*/
#include "../imapmem.c"

static int passed, failed;
#define CHECK(cond)                                                         \
  do {                                                                      \
    if (cond) passed++;                                                     \
    else {                                                                  \
      failed++;                                                             \
      fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);       \
    }                                                                       \
  } while (0)

static struct arena A;

static struct parser P(const char *s) {
  struct parser ps = {s, s + strlen(s), &A, NULL, 0};
  return ps;
}

static void test_parser(void) {
  struct parser ps = P("\"a\\\"b\\\\c\" atom {3}\r\nxyz rest");
  struct str s;
  CHECK(parse_astring(&ps, &s) && s.len == 5 && memcmp(s.p, "a\"b\\c", 5) == 0);
  CHECK(parse_sp(&ps) && parse_astring(&ps, &s) && str_ieq(s, "atom"));
  CHECK(parse_sp(&ps) && parse_astring(&ps, &s) && s.len == 3 && memcmp(s.p, "xyz", 3) == 0);
  CHECK(parse_sp(&ps) && parse_atom(&ps, &s) && parse_end(&ps));
  ps = P("\"unterminated");
  CHECK(!parse_astring(&ps, &s) && ps.err);
  ps = P("\"bad \\q escape\"");
  CHECK(!parse_astring(&ps, &s));
  ps = P("{5}\r\nab");
  CHECK(!parse_astring(&ps, &s));            /* literal shorter than announced */
  ps = P("{2+}\r\nab");
  CHECK(parse_astring(&ps, &s) && s.len == 2); /* LITERAL+ form */
  ps = P("4294967296");
  uint32_t n;
  CHECK(!parse_number(&ps, &n));
  ps = P("4294967295");
  CHECK(parse_number(&ps, &n) && n == UINT32_MAX);
  const char *name;
  ps = P("inbox");
  CHECK(parse_mailbox(&ps, &name) && strcmp(name, "INBOX") == 0);
  ps = P("Inbox/Sub");
  CHECK(parse_mailbox(&ps, &name) && strcmp(name, "INBOX/Sub") == 0);
  ps = P("Work/");
  CHECK(parse_mailbox(&ps, &name) && strcmp(name, "Work") == 0);
}

static void test_seqset(void) {
  struct seqset set;
  struct parser ps = P("1,3:4,*,9:7");
  CHECK(parse_seqset(&ps, &set) && set.n == 4);
  seqset_resolve(&set, 10);
  CHECK(seqset_contains(&set, 1) && !seqset_contains(&set, 2) && seqset_contains(&set, 4));
  CHECK(seqset_contains(&set, 10) && seqset_contains(&set, 8) && !seqset_contains(&set, 6));
  ps = P("5:*");
  CHECK(parse_seqset(&ps, &set));
  seqset_resolve(&set, 3);                  /* 5:* with 3 messages is 3:5 */
  CHECK(seqset_contains(&set, 3) && !seqset_contains(&set, 2));
  ps = P("0");
  CHECK(!parse_seqset(&ps, &set));
  ps = P("1:");
  CHECK(!parse_seqset(&ps, &set));
  ps = P("1,,2");
  CHECK(!parse_seqset(&ps, &set));
  ps = P("1x");
  CHECK(!parse_seqset(&ps, &set));
}

/* "$" (RFC 5182) and partial ranges (RFC 9394 4), and the results a range picks (3.1). */
static void test_dollar_and_partial(void) {
  struct seqset set;
  struct parser ps = P("$ x");
  CHECK(parse_seqset(&ps, &set) && set.dollar && set.n == 0 && parse_sp(&ps));
  ps = P("$,1");
  CHECK(!parse_seqset(&ps, &set));           /* "$" stands alone */
  struct partial pr;
  size_t from, to;
  ps = P("5:1");
  CHECK(parse_partial(&ps, &pr) && !pr.neg && pr.lo == 1 && pr.hi == 5);
  ps = P("-1:-3)");
  CHECK(parse_partial(&ps, &pr) && pr.neg && pr.lo == 1 && pr.hi == 3);
  const char *bad[] = {"0:5", "1:*", "-1:5", "1:-5", "5", "-0:-3", "1:5:7", "a:b"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    ps = P(bad[i]);
    CHECK(!parse_partial(&ps, &pr));
  }
  pr = (struct partial){2, 4, 0};
  partial_window(&pr, 10, &from, &to);
  CHECK(from == 1 && to == 4);
  partial_window(&pr, 3, &from, &to);        /* across the end: what there is */
  CHECK(from == 1 && to == 3);
  partial_window(&pr, 1, &from, &to);        /* beyond it: nothing */
  CHECK(from == to);
  pr = (struct partial){1, 3, 1};
  partial_window(&pr, 10, &from, &to);       /* the last three */
  CHECK(from == 7 && to == 10);
  pr = (struct partial){14, 20, 1};
  partial_window(&pr, 15, &from, &to);       /* -14:-20 of 15: the first two */
  CHECK(from == 0 && to == 2);
}

static void test_flags(void) {
  struct flag_list fl;
  struct parser ps = P("(\\Seen \\Deleted $Label1 foo $label1)");
  CHECK(parse_flags(&ps, &fl, 0) && fl.flags == (FLAG_SEEN | FLAG_DELETED) && fl.nkw == 2);
  ps = P("(\\Recent)");
  CHECK(!parse_flags(&ps, &fl, 0));         /* clients cannot set \Recent */
  ps = P("(\\Bogus)");
  CHECK(!parse_flags(&ps, &fl, 0));
  ps = P("\\Flagged");
  CHECK(parse_flags(&ps, &fl, 1) && fl.flags == FLAG_FLAGGED);
  ps = P("()");
  CHECK(parse_flags(&ps, &fl, 0) && fl.flags == 0 && fl.nkw == 0);
}

static void test_dates(void) {
  int64_t t;
  int tz;
  struct parser ps = P("\" 5-Nov-2026 10:11:12 -0130\"");
  CHECK(parse_date_time(&ps, &t, &tz) && tz == -90);
  CHECK(t == days_from_civil(2026, 11, 5) * 86400 + 10 * 3600 + 11 * 60 + 12 + 90 * 60);
  struct buf b = {0};
  date_time_format(&b, t, tz);
  CHECK(b.p && strcmp(b.p, "\" 5-Nov-2026 10:11:12 -0130\"") == 0);
  buf_free(&b);
  const char *d = "Tue, 1 Jul 03 10:52:37 +0200 (CEST)";
  CHECK(date_parse(str_make(d, strlen(d)), &t, &tz) && tz == 120);
  CHECK(t == days_from_civil(2003, 7, 1) * 86400 + 8 * 3600 + 52 * 60 + 37);
  d = "1 Jan 2020 00:00 EST";               /* no seconds, named zone */
  CHECK(date_parse(str_make(d, strlen(d)), &t, &tz) && tz == -300);
  d = "not a date";
  CHECK(!date_parse(str_make(d, strlen(d)), &t, &tz));
  /* the usual form's fast reading gives what the word-by-word one gives, byte by byte
     changed: it takes the usual dates, and anything it takes the other reads the same */
  static const char *usual[] = {" Wed, 1 Jan 2020 01:54:19 +0000",
                                "Sun, 31 Dec 2000 16:01:33 -0800", "29 Feb 2024 23:59:60 +1459",
                                " Mon, 09 Mar 1999 00:00:00 -0000"};
  static const char subst[] = "09136 :,+-aJnZ()\"\t\r\n";
  long taken = 0, differ = 0, tried = 0;
  for (size_t i = 0; i < sizeof usual / sizeof *usual; i++) {
    size_t n = strlen(usual[i]);
    CHECK(date_parse_usual(str_make(usual[i], n), &t, &tz));
    for (size_t at = 0; at <= n; at++) {
      for (size_t k = 0; k <= sizeof subst - 1; k++) {
        char m[64];
        memcpy(m, usual[i], n + 1);
        size_t len = n;
        if (k == sizeof subst - 1) len = at;   /* cut short at at */
        else if (at < n) m[at] = subst[k];
        else continue;
        int64_t ta = 1, tb = 2;
        int za = 1, zb = 2;
        tried++;
        if (!date_parse_usual(str_make(m, len), &ta, &za)) continue;
        taken++;
        differ += !date_parse_words(str_make(m, len), &tb, &zb) || ta != tb || za != zb;
      }
    }
  }
  CHECK(differ == 0 && taken > 4 && taken < tried);
  printf("dates: the usual form's reading took %ld of %ld changed dates, as the other\n", taken,
         tried);
  const char *f = "From a@b Thu Feb  1 09:05:06 2024";
  CHECK(mbox_from_date(f, strlen(f), &t, &tz) && tz == 0 &&
        t == days_from_civil(2024, 2, 1) * 86400 + 9 * 3600 + 5 * 60 + 6);
  f = "From a@b Thu Feb  1 09:05:06 2024 +0100";
  CHECK(mbox_from_date(f, strlen(f), &t, &tz) && tz == 60);
  f = "From MAILER-DAEMON";
  CHECK(!mbox_from_date(f, strlen(f), &t, &tz));
  int y, m, dd;
  civil_from_days(days_from_civil(2000, 2, 29), &y, &m, &dd);
  CHECK(y == 2000 && m == 2 && dd == 29);
}

static void test_mbox(void) {
  const char *box =
    "From a@b Mon Jan  1 00:00:00 2024\n"
    "Subject: one\n"
    "Status: RO\n"
    "X-Status: AF\n"
    "X-Keywords: work, $Label2\n"
    "X-UID: 5\n"
    "\n"
    ">From quoted\n"
    ">>From twice\n"
    "\n"
    "From b@c Tue Jan  2 00:00:00 2024\n"
    "Subject: two\n"
    "X-UID: 9\n"
    "\n"
    "body\n"
    "From not a separator (no blank line before)\n"
    "\n";
  struct mbox_batch *b = NULL;
  char err[256];
  CHECK(mbox_parse(box, strlen(box), "t.mbox", "INBOX", &b, err, sizeof err) == IMAPMEM_OK);
  CHECK(b && b->n == 2);
  if (b && b->n == 2) {
    const char *m0 = b->m[0].d->bytes;
    CHECK(strcmp(m0, "Subject: one\r\n\r\nFrom quoted\r\n>From twice\r\n") == 0);
    CHECK(b->m[0].flags == (FLAG_SEEN | FLAG_ANSWERED | FLAG_FLAGGED));
    CHECK(b->m[0].xuid == 5 && b->m[1].xuid == 9);
    CHECK(b->m[0].keywords && strcmp(b->m[0].keywords, "work, $Label2") == 0);
    CHECK(b->m[1].flags == FLAG_RECENT);
    CHECK(strcmp(b->m[1].d->bytes,
                 "Subject: two\r\n\r\nbody\r\nFrom not a separator (no blank line before)\r\n") == 0);
    CHECK(b->m[0].d->hdr_len == strlen("Subject: one\r\n\r\n"));
  }
  mbox_batch_free(b);
  b = NULL;
  CHECK(mbox_parse("Subject: x\n\nhi\n", 15, "bad.mbox", "INBOX", &b, err, sizeof err) ==
        IMAPMEM_PARSE);
  CHECK(strncmp(err, "bad.mbox:1:", 11) == 0);
  CHECK(mbox_parse("", 0, "empty.mbox", "INBOX", &b, err, sizeof err) == IMAPMEM_OK && b->n == 0);
  mbox_batch_free(b);
  const char *crlf = "From x Mon Jan  1 00:00:00 2024\r\nA: b\r\n\r\nc\r\n\r\nFrom y Mon Jan  1 00:00:00 2024\r\n\r\n";
  b = NULL;
  CHECK(mbox_parse(crlf, strlen(crlf), "c.mbox", "INBOX", &b, err, sizeof err) == IMAPMEM_OK);
  CHECK(b && b->n == 2 && strcmp(b->m[0].d->bytes, "A: b\r\n\r\nc\r\n") == 0);
  mbox_batch_free(b);
}

/*
** The loader writes each message in place in its file's arena (LF to CRLF, From lines and
** the mbox's own headers out) and moves a message to a buffer of its own where the room
** before the file runs out. Compare with a plain line-by-line conversion: messages of long
** lines (in place), runs of empty lines (more CRs than the room: moved), CRLF ones, over
** 1 MiB in all (a mapped arena), read from memory and from a file (same UIDVALIDITY).
*/
static void expect_line(struct buf *want, const char *line, size_t n) {
  const char *q = line;
  while (q < line + n && *q == '>') q++;
  if (q > line && line + n - q >= 5 && memcmp(q, "From ", 5) == 0) line++, n--;
  buf_add(want, line, n);
  buf_add(want, "\r\n", 2);
}

static void test_mbox_in_place(void) {
  struct buf box = {0};
  struct buf want[64] = {{0}};
  int nmsg = 0, inplace = 0, moved = 0;
  for (int i = 0; i < 60; i++, nmsg++) {
    const char *eol = i % 5 == 4 ? "\r\n" : "\n";
    buf_printf(&box, "From s%d@x Mon Jan  1 00:00:00 2024%s", i, eol);
    buf_printf(&box, "Subject: message %d%sStatus: RO%s", i, eol, eol);
    char subj[64];
    snprintf(subj, sizeof subj, "Subject: message %d", i);
    expect_line(&want[i], subj, strlen(subj));
    buf_printf(&box, "%s", eol);
    expect_line(&want[i], "", 0);
    int lines = i % 3 == 1 ? 60000 : 300;
    for (int l = 0; l < lines; l++) {
      char text[200];
      if (i % 3 == 1) text[0] = 0;       /* empty lines: a CR added per byte read */
      else if (l % 50 == 7) snprintf(text, sizeof text, ">From line %d of %d", l, i);
      else snprintf(text, sizeof text, "line %d of message %d, long enough to leave room "
                                        "for its CR, like the lines of real mail", l, i);
      buf_printf(&box, "%s%s", text, eol);
      expect_line(&want[i], text, strlen(text));
    }
    buf_printf(&box, "%s", eol);
  }
  CHECK(!box.oom && box.len > ARENA_MAPPED_FROM);
  char path[] = "/tmp/imapmem-unit-XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0 && write(fd, box.p, box.len) == (ssize_t)box.len);
  if (fd >= 0) close(fd);
  /* from memory; from the file as a whole; read by a helper thread (where the machine has
     a core to spare) or by the loader itself, in chunks of odd sizes, so that message
     boundaries fall everywhere relative to them */
  static const struct { int from_file; size_t reader_from, chunk; } how[] = {
    {0, MBOX_READER_FROM, MBOX_CHUNK}, {1, MBOX_READER_FROM, MBOX_CHUNK}, {1, 0, MBOX_CHUNK},
    {1, 0, 65521}, {1, SIZE_MAX, 65521}, {1, 0, 4093}};
  for (size_t h = 0; h < sizeof how / sizeof how[0]; h++) {
    int from_file = how[h].from_file;
    struct mbox_batch *b = NULL;
    char err[256];
    mbox_reader_from = how[h].reader_from;
    mbox_chunk = how[h].chunk;
    int rc = from_file ? mbox_parse_file(path, "INBOX", &b, err, sizeof err)
                       : mbox_parse(box.p, box.len, "mem", "INBOX", &b, err, sizeof err);
    mbox_reader_from = MBOX_READER_FROM;
    mbox_chunk = MBOX_CHUNK;
    CHECK(rc == IMAPMEM_OK && b && (int)b->n == nmsg);
    CHECK(b && b->content_validity == uidvalidity_from(box.p, box.len, "INBOX"));
    for (int i = 0; b && i < nmsg && i < (int)b->n; i++) {
      const struct msgdata *d = b->m[i].d;
      CHECK(d->size == want[i].len && memcmp(d->bytes, want[i].p, d->size) == 0 &&
            d->bytes[d->size] == 0);
      CHECK(b->m[i].flags == FLAG_SEEN);
      if (d->arena) inplace++;
      else moved++;
    }
    mbox_batch_free(b);
  }
  CHECK(inplace >= 6 * 30 && moved >= 6 * 5);     /* both ways were taken */
  unlink(path);
  buf_free(&box);
  for (int i = 0; i < nmsg; i++) buf_free(&want[i]);
}

/*
** A file parsed while it arrives (issue 15) is cut into messages where it is when parsed
** whole: every chunk size from 1 byte, read by a helper and by the loader itself, over the
** cases a boundary search could get wrong (a blank line of CRLF, a From line with no blank
** line before it, an empty message, ">From", no line break at the very end), and a file
** that is not an mbox.
*/
static void test_mbox_arriving(void) {
  const char *box =
    "From a@b Mon Jan  1 00:00:00 2024\nSubject: one\nStatus: RO\n\n>From quoted\n\n"
    "From b@c Tue Jan  2 00:00:00 2024\r\nSubject: two\r\n\r\nbody\r\n"
    "From not a separator\r\n\r\n"
    "From c@d Wed Jan  3 00:00:00 2024\n\n"
    "From d@e Thu Jan  4 00:00:00 2024\nX-UID: 7\n\nFrom\n\n"
    "From e@f Fri Jan  5 00:00:00 2024\nlast, no break";
  size_t len = strlen(box);
  struct mbox_batch *whole = NULL;
  char err[256];
  CHECK(mbox_parse(box, len, "mem", "INBOX", &whole, err, sizeof err) == IMAPMEM_OK);
  CHECK(whole && whole->n == 5);
  char path[] = "/tmp/imapmem-unit-XXXXXX", bad[] = "/tmp/imapmem-unit-XXXXXX";
  int fd = mkstemp(path), fd2 = mkstemp(bad);
  CHECK(fd >= 0 && write(fd, box, len) == (ssize_t)len);
  CHECK(fd2 >= 0 && write(fd2, "Subject: x\n\nFrom a\n", 20) == 20);
  if (fd >= 0) close(fd);
  if (fd2 >= 0) close(fd2);
  for (size_t chunk = 1; chunk <= len + 1 && whole; chunk++)
    for (int threaded = 0; threaded < 2; threaded++) {
      struct mbox_batch *b = NULL;
      mbox_chunk = chunk;
      mbox_reader_from = threaded ? 0 : SIZE_MAX;
      if (chunk <= 21) {     /* the bad file, whole or in pieces */
        CHECK(mbox_parse_file(bad, "INBOX", &b, err, sizeof err) == IMAPMEM_PARSE && !b);
        CHECK(strncmp(err, bad, strlen(bad)) == 0 && strstr(err, ":1: not an mbox file"));
      }
      int rc = mbox_parse_file(path, "INBOX", &b, err, sizeof err);
      CHECK(rc == IMAPMEM_OK && b && b->n == whole->n);
      CHECK(b && b->content_validity == whole->content_validity);
      for (size_t i = 0; b && i < b->n && i < whole->n; i++) {
        const struct msgdata *x = b->m[i].d, *y = whole->m[i].d;
        CHECK(x->size == y->size && memcmp(x->bytes, y->bytes, x->size) == 0);
        CHECK(b->m[i].flags == whole->m[i].flags && b->m[i].xuid == whole->m[i].xuid &&
              b->m[i].internaldate == whole->m[i].internaldate);
      }
      mbox_batch_free(b);
    }
  mbox_chunk = MBOX_CHUNK;
  mbox_reader_from = MBOX_READER_FROM;
  mbox_batch_free(whole);
  unlink(path);
  unlink(bad);
}

/*
** A fixture's metadata goes into the room its arena has left after the messages (issue
** 15: pages the load touched already), as long as that room lasts, and then to the heap;
** either way it is what a copy of the message outside any arena gets, and freeing the
** batch frees each piece once (ASan checks that in unit-asan).
*/
static int in_arena(const struct msgarena *a, const void *p) {
  return a && (const char *)p >= a->base && (const char *)p < a->base + a->size;
}

static void test_metadata_in_arena(void) {
  struct buf box = {0};
  for (int i = 0; i < 3000; i++)     /* ~1.4 MB: a mapped arena */
    buf_printf(&box, "From s@x Mon Jan  1 00:00:00 2024\nFrom: Sender %d <s%d@example.com>\n"
               "To: a@example.com, \"B\" <b@example.com>\nSubject: message %d\n"
               "Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\nContent-Type: text/plain"
               "\n\nline one\nline two\n--b%d\nContent-Type: text/html\n\n<p>x</p>\n--b%d--\n"
               "%0300d\n\n", i, i, i, i, i, i, i, 0);
  CHECK(!box.oom && box.len > ARENA_MAPPED_FROM);
  struct mbox_batch *b = NULL;
  char err[256];
  CHECK(mbox_parse(box.p, box.len, "mem", "INBOX", &b, err, sizeof err) == IMAPMEM_OK);
  int inside = 0, outside = 0, same = 1;   /* same: equal to the copy's, which is outside */
  for (size_t i = 0; b && i < b->n; i++) {
    struct msgdata *d = b->m[i].d;
    const struct rendered *r = msgdata_rendered(d, RENDER_ALL);
    const struct msgmeta *m = atomic_load(&d->meta);
    struct msgdata *copy = msgdata_new(d->bytes, d->size);
    const struct rendered *rc = copy ? msgdata_rendered(copy, RENDER_ALL) : NULL;
    if (!r || !rc) {
      CHECK(0);
      msgdata_unref(copy);
      break;
    }
    same &= strcmp(r->envelope, rc->envelope) == 0 && strcmp(r->body, rc->body) == 0 &&
            strcmp(r->bodystructure, rc->bodystructure) == 0 &&
            m->nparts == copy->meta->nparts &&
            memcmp(m->parts, copy->meta->parts, sizeof *m->parts * (size_t)m->nparts) == 0;
    const struct msgmeta *cm = atomic_load(&copy->meta);
    same &= !in_arena(d->arena, cm) && !in_arena(d->arena, rc->envelope);
    if (in_arena(d->arena, m) && in_arena(d->arena, m->parts) && in_arena(d->arena, r->envelope) &&
        in_arena(d->arena, r->bodystructure))
      inside++;
    else
      outside++;
    msgdata_unref(copy);
  }
  CHECK(same);
  printf("metadata in the arena's room: %d messages of %d\n", inside, inside + outside);
  CHECK(inside > 100);                      /* the room was used */
  CHECK(outside > 0);                       /* and ran out: the heap took the rest */
  mbox_batch_free(b);
  buf_free(&box);
}

/*
** The loader's line marks (issue 15): every line of a loaded message that starts "--" and
** the message's end, with the line breaks before each; the part table and renderings made
** with them equal those of a copy without. A message that is mostly "--" lines has none.
*/
static void test_line_marks(void) {
  struct buf box = {0};
  buf_printf(&box, "From s@x Mon Jan  1 00:00:00 2024\r\nSubject: crlf and padding\r\n"
             "Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\npreamble\r\n--b  \r\n"
             "Content-Type: text/plain\r\n\r\none\r\n-- \r\nsig\r\n--b\r\n"
             "Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\n\r\ninner\r\n"
             "--b--\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n"
             "Content-Type: multipart/mixed; boundary=c\r\n\r\n--c\r\n\r\n>From here\r\n--c--"
             "\r\n--b--\r\nepilogue\r\n\r\n");
  buf_printf(&box, "From s@x Mon Jan  1 00:00:00 2024\nContent-Type: multipart/mixed; "
             "boundary=x\n\n--x\n\nno close, no last line break\n--x\n\nlast");
  buf_printf(&box, "\n\nFrom s@x Mon Jan  1 00:00:00 2024\nContent-Type: multipart/mixed; "
             "boundary=d\n\n");
  for (int i = 0; i < 200; i++) buf_printf(&box, "--d\n\n%d\n", i);   /* mostly marks */
  buf_printf(&box, "--d--\n");
  CHECK(!box.oom);
  struct mbox_batch *b = NULL;
  char err[256];
  CHECK(mbox_parse(box.p, box.len, "mem", "INBOX", &b, err, sizeof err) == IMAPMEM_OK);
  CHECK(b && b->n == 3);
  for (size_t i = 0; b && i < b->n; i++) {
    struct msgdata *d = b->m[i].d;
    uint32_t dashes = 0, k = 0, good = 1;
    for (uint32_t off = 0; off < d->size; off++) {
      if ((off == 0 || d->bytes[off - 1] == '\n') && d->bytes[off] == '-' &&
          d->bytes[off + 1] == '-') {
        dashes++;
        good &= d->marks && k < d->nmarks && d->marks[k].off == off &&
                d->marks[k].lines == count_lines(d->bytes, off);
        k++;
      }
    }
    if (i < 2) {
      CHECK(good && d->marks && d->nmarks == dashes + 1);
      CHECK(d->marks && d->marks[d->nmarks - 1].off == d->size &&
            d->marks[d->nmarks - 1].lines == count_lines(d->bytes, d->size));
    } else {
      CHECK(dashes == 201 && !d->marks);   /* too many to be worth keeping */
    }
    const struct rendered *r = msgdata_rendered(d, RENDER_ALL);
    struct msgdata *copy = msgdata_new(d->bytes, d->size);
    const struct rendered *rc = copy ? msgdata_rendered(copy, RENDER_ALL) : NULL;
    CHECK(r && rc && !copy->marks);
    if (!r || !rc) {
      msgdata_unref(copy);
      break;
    }
    const struct msgmeta *m = atomic_load(&d->meta), *cm = atomic_load(&copy->meta);
    CHECK(strcmp(r->body, rc->body) == 0 && strcmp(r->bodystructure, rc->bodystructure) == 0);
    CHECK(m->nparts == cm->nparts && m->nparts >= 3 &&
          memcmp(m->parts, cm->parts, sizeof *m->parts * (size_t)m->nparts) == 0);
    msgdata_unref(copy);
  }
  mbox_batch_free(b);
  buf_free(&box);
}

/* Load and commit through a user, as imapmem_load does, and check UIDs. */
static void test_commit(void) {
  const char *box =
    "From a Mon Jan  1 00:00:00 2024\nX-IMAPbase: 777 49 kw1\nX-UID: 10\n\na\n\n"
    "From a Mon Jan  1 00:00:00 2024\nX-UID: 20\n\nb\n";
  struct user *u = user_new("u", "p");
  struct mbox_batch *b = NULL;
  char err[256];
  int exists;
  CHECK(u && user_create_locked(u, "INBOX", 1, 1, &exists));
  CHECK(mbox_parse(box, strlen(box), "x", "INBOX", &b, err, sizeof err) == IMAPMEM_OK);
  CHECK(mbox_commit(u, b, 1, NULL, 0, err, sizeof err) == IMAPMEM_OK);
  mbox_batch_free(b);
  struct mailbox *mb = user_mailbox(u, "inbox");
  CHECK(mb && mb->count == 2 && mb->uidvalidity == 777 && mb->uidnext == 50);
  CHECK(mb && mb->msgs[0].uid == 10 && mb->msgs[1].uid == 20 && mb->nkeywords == 1);
  mailbox_unref(mb);
  user_free(u);
}

static void test_model(void) {
  const char *msg =
    "From: \"Doe, John\" <john@example.com>, Group: a@b, \"C\" <c@d>;\r\n"
    "To: undisclosed-recipients:;\r\n"
    "Cc: <@route1,@route2:x@y>, plain@host (comment)\r\n"
    "Subject: =?UTF-8?B?SGVsbG8=?= world\r\n"
    "Content-Type: multipart/mixed; boundary=\"XX\"\r\n"
    "\r\n"
    "preamble\r\n"
    "--XX\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "\r\n"
    "part one\r\n"
    "--XX\r\n"
    "Content-Type: message/rfc822\r\n"
    "\r\n"
    "Subject: inner\r\n"
    "\r\n"
    "inner body\r\n"
    "--XX--\r\n"
    "epilogue\r\n";
  struct msgmeta *m = msgmeta_build(msg, strlen(msg));
  CHECK(m != NULL);
  if (!m) return;
  CHECK(m->nparts == 4);
  struct rendered rd, *r = &rd;
  atomic_init(&rd.envelope, render(msg, m, RENDER_ENVELOPE, NULL, NULL));
  atomic_init(&rd.body, NULL);
  atomic_init(&rd.bodystructure, render(msg, m, RENDER_BODYSTRUCTURE, NULL, NULL));
  CHECK(rd.envelope && rd.bodystructure);
  if (!rd.envelope || !rd.bodystructure) return;
  CHECK(strstr(r->envelope, "((\"Doe, John\" NIL \"john\" \"example.com\")(NIL NIL \"Group\" NIL)"
                            "(NIL NIL \"a\" \"b\")(\"C\" NIL \"c\" \"d\")(NIL NIL NIL NIL))") != NULL);
  CHECK(strstr(r->envelope, "((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL))") != NULL);
  /* a comment after a bare address is its name (issue 16, as c-client and Dovecot) */
  CHECK(strstr(r->envelope, "((NIL \"@route1,@route2\" \"x\" \"y\")(\"comment\" NIL \"plain\" "
                            "\"host\"))") != NULL);
  /* the line break before the boundary is the boundary's: "part one" is 0 lines */
  CHECK(strstr(r->bodystructure, "(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"utf-8\") NIL NIL \"7BIT\" 8 0 "
                                 "NIL NIL NIL NIL)") != NULL);
  CHECK(strstr(r->bodystructure, "\"MIXED\" (\"BOUNDARY\" \"XX\") NIL NIL NIL)") != NULL);
  uint32_t one[] = {1}, two1[] = {2, 1};
  int p1 = fetch_find_part(m, one, 1), p21 = fetch_find_part(m, two1, 2);
  CHECK(p1 > 0 && m->parts[p1].body_len == 8 && memcmp(msg + m->parts[p1].body_off, "part one", 8) == 0);
  CHECK(p21 > 0 && memcmp(msg + m->parts[p21].body_off, "inner body", 10) == 0);
  uint32_t three[] = {3};
  CHECK(fetch_find_part(m, three, 1) < 0);
  struct buf d = {0};
  const char *subj = "=?UTF-8?B?SGVsbG8=?= =?ISO-8859-1?Q?caf=E9?= world";
  rfc2047_decode(str_make(subj, strlen(subj)), &d);
  CHECK(d.p && strcmp(d.p, "Hellocaf\xc3\xa9 world") == 0);
  buf_free(&d);
  rendered_free(r, NULL);
  msgmeta_free(m, NULL);
}

/* Send a command on fd and read until its tagged reply; returns the reply line. */
static const char *exchange(int fd, const char *cmd, const char *tag, struct buf *in) {
  static char line[512];
  if (write(fd, cmd, strlen(cmd)) != (ssize_t)strlen(cmd)) return "write failed";
  size_t tl = strlen(tag);
  buf_reset(in);
  for (;;) {
    char tmp[65536];
    ssize_t r = read(fd, tmp, sizeof tmp);
    if (r <= 0) return "connection closed";
    size_t old = in->len;
    buf_add(in, tmp, (size_t)r);
    /* look for "\r\nTAG " (or TAG at the very start) in what arrived */
    for (size_t i = old > tl + 2 ? old - tl - 2 : 0; i + tl < in->len; i++) {
      if ((i == 0 || (i >= 2 && in->p[i - 1] == '\n')) && memcmp(in->p + i, tag, tl) == 0 &&
          in->p[i + tl] == ' ') {
        const char *e = memchr(in->p + i, '\n', in->len - i);
        if (!e) break;
        snprintf(line, sizeof line, "%.*s", (int)(e - in->p - i), in->p + i);
        return line;
      }
    }
  }
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* A server whose user "u" has box as INBOX, serving one session on a socketpair (sv[0]). */
static imapmem *serve_generated(const struct buf *box, int sv[2]) {
  imapmem *srv = NULL;
  CHECK(imapmem_new(NULL, &srv) == IMAPMEM_OK && imapmem_add_user(srv, "u", "p") == IMAPMEM_OK);
  CHECK(imapmem_load_mbox(srv, "u", "INBOX", box->p, box->len, "gen") == IMAPMEM_OK);
  CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
  CHECK(imapmem_serve_fd(srv, sv[1], sv[1], "u") == IMAPMEM_OK);
  return srv;
}

/* Subjects "message N": SORT (SUBJECT) puts them in the order of N's decimal text. */
static int by_subject_number(const void *a, const void *b) {
  char x[16], y[16];
  snprintf(x, sizeof x, "%d", *(const int *)a);
  snprintf(y, sizeof y, "%d", *(const int *)b);
  return strcmp(x, y);
}

/*
** Issue 3's promise: FETCH 1:* (ENVELOPE BODYSTRUCTURE) over 10,000 messages computes each
** message's structure exactly once, however often it is fetched, and SORT its sort keys
** (issue 15: also with the helper thread sharing the build). Through a real
** session.
*/
static void test_metadata_once(void) {
  enum { N = 10000 };
  struct buf box = {0};
  for (int i = 0; i < N; i++) {
    buf_printf(&box, "From a@b Mon Jan  1 00:00:00 2024\nFrom: A <a@b>\nTo: c@d\n"
                     "Subject: message %d\nContent-Type: multipart/alternative; boundary=b%d\n\n"
                     "--b%d\nContent-Type: text/plain\n\nplain %d\n--b%d\n"
                     "Content-Type: text/html\n\n<p>%d</p>\n--b%d--\n\n", i, i, i, i, i, i, i);
  }
  int sv[2];
  imapmem *srv = serve_generated(&box, sv);
  struct buf in = {0};
  long before = atomic_load(&msgmeta_builds), rbefore = atomic_load(&rendered_builds);
  CHECK(strncmp(exchange(sv[0], "a SELECT INBOX\r\n", "a", &in), "a OK", 4) == 0);
  double t0 = now_s();
  CHECK(strncmp(exchange(sv[0], "b FETCH 1:* (ENVELOPE BODYSTRUCTURE)\r\n", "b", &in), "b OK", 4) == 0);
  double t1 = now_s();
  CHECK(strstr(in.p, "* 10000 FETCH (ENVELOPE (NIL \"message 9999\"") != NULL);
  CHECK(strncmp(exchange(sv[0], "c FETCH 1:* (ENVELOPE BODYSTRUCTURE)\r\n", "c", &in), "c OK", 4) == 0);
  double t2 = now_s();
  long rendered = atomic_load(&rendered_builds) - rbefore;
  CHECK(rendered == 2 * N);                 /* ENVELOPE and BODYSTRUCTURE, not BODY */
  CHECK(strncmp(exchange(sv[0], "d UID FETCH 1:* (BODY BODY[1.MIME])\r\n", "d", &in), "d OK", 4) == 0);
  long built = atomic_load(&msgmeta_builds) - before;
  CHECK(built == N && atomic_load(&rendered_builds) - rbefore == 3 * N);   /* BODY once */
  /* SEARCH TEXT needs the part table, never the rendered text */
  CHECK(strncmp(exchange(sv[0], "e SEARCH TEXT \"plain 77\"\r\n", "e", &in), "e OK", 4) == 0);
  CHECK(strstr(in.p, "* SEARCH 78 ") != NULL);
  CHECK(atomic_load(&msgmeta_builds) - before == N &&
        atomic_load(&rendered_builds) - rbefore == 3 * N);
  /* the first SORT builds each message's sort keys once (with its helper), in order */
  long sbefore = atomic_load(&sortkeys_builds);
  CHECK(strncmp(exchange(sv[0], "f SORT (SUBJECT) UTF-8 ALL\r\n", "f", &in), "f OK", 4) == 0);
  static int order[N];
  for (int i = 0; i < N; i++) order[i] = i;
  qsort(order, N, sizeof order[0], by_subject_number);
  struct buf want = {0};
  buf_adds(&want, "* SORT");
  for (int i = 0; i < N; i++) buf_printf(&want, " %d", order[i] + 1);
  buf_adds(&want, "\r\n");
  CHECK(in.len > want.len && memcmp(in.p, want.p, want.len) == 0);
  CHECK(strncmp(exchange(sv[0], "g SORT (SUBJECT) UTF-8 ALL\r\n", "g", &in), "g OK", 4) == 0);
  CHECK(in.len > want.len && memcmp(in.p, want.p, want.len) == 0);
  CHECK(atomic_load(&sortkeys_builds) - sbefore == N);
  buf_free(&want);
  printf("metadata: %ld part tables and %ld renderings for %d messages; FETCH 1:* (ENVELOPE "
         "BODYSTRUCTURE) first %.1f ms, repeated %.1f ms\n", built, rendered, N,
         (t1 - t0) * 1e3, (t2 - t1) * 1e3);
  close(sv[0]);
  imapmem_free(srv);
  buf_free(&in);
  buf_free(&box);
}

/*
** The first-pass helper (struct build_ahead) driven as FETCH drives it, with the helper
** forced on (even on one CPU): every message's ENVELOPE and BODYSTRUCTURE equal those built
** by one thread, each part table and rendering built exactly once; then with the Nth
** allocation failing, at many N, so that the helper or the command gives up part way:
** nothing crashes or leaks (ASan), and the messages left unbuilt are built right after.
*/
static void test_build_ahead(void) {
  enum { N = 1200 };
  struct buf box = {0};
  for (int i = 0; i < N; i++) {   /* plain ones, and some that need scratch buffers */
    buf_printf(&box, "From a@b Mon Jan  1 00:00:00 2024\nFrom: A%d <a%d@b>\nTo: c@d%s\n"
                     "Subject: s%d%s\n", i, i, i % 5 ? "" : ", (x) \"e\\\" f\" <e@f>, g: h@i;",
               i, i % 3 ? "" : " =?utf-8?q?caf=C3=A9?=\n\tfolded  twice");
    if (i % 7 == 0) {              /* more parts than MIME_ROOM, RFC 2231 parameters */
      buf_adds(&box, "Content-Type: multipart/mixed; boundary=\"q\\\"b\"\n\n");
      for (int k = 0; k < 11; k++)
        buf_printf(&box, "--q\"b\nContent-Type: text/plain; name*0=\"a\"; name*1=\"%d\"\n\n%d\n",
                   k, k);
      buf_adds(&box, "--q\"b--\n\n");
    } else {
      buf_printf(&box, "Content-Type: multipart/mixed; boundary=b\n\n--b\n"
                       "Content-Type: text/plain; charset=utf-8\n\n%d\n--b--\n\n", i);
    }
  }
  struct mbox_batch *ref = NULL;
  char err[256];
  CHECK(mbox_parse(box.p, box.len, "mem", "INBOX", &ref, err, sizeof err) == IMAPMEM_OK);
  static struct msgdata *items[N];
  for (int i = 0; ref && i < N; i++) CHECK(msgdata_rendered(ref->m[i].d, RENDER_ALL) != NULL);
  atomic_fetch_sub(&spare_cores_taken, 1);   /* a core to spare, whatever the machine */
  int same = 1, once = 1;
  for (long fail = -1; fail < 1500; fail += fail < 30 ? 1 : 61) {
    struct mbox_batch *b = NULL;
    if (mbox_parse(box.p, box.len, "mem", "INBOX", &b, err, sizeof err) != IMAPMEM_OK || !b) {
      CHECK(0);
      break;
    }
    for (int i = 0; i < N; i++) items[i] = b->m[i].d;
    long m0 = atomic_load(&msgmeta_builds), r0 = atomic_load(&rendered_builds);
    struct build_ahead ba;
    atomic_store(&mem_fail_countdown, fail < 0 ? 0 : fail + 1);
    build_ahead_start(&ba, items, sizeof items[0], N, RENDER_ENVELOPE | RENDER_BODYSTRUCTURE);
    CHECK(ba.running);
    for (int i = 0; i < N; i++) {
      build_ahead_at(&ba, (size_t)i);
      msgdata_rendered(items[i], RENDER_ENVELOPE | RENDER_BODYSTRUCTURE);
    }
    build_ahead_stop(&ba);
    atomic_store(&mem_fail_countdown, 0);
    if (fail < 0)
      once &= atomic_load(&msgmeta_builds) - m0 == N && atomic_load(&rendered_builds) - r0 == 2 * N;
    for (int i = 0; i < N; i++) {
      const struct rendered *r = msgdata_rendered(items[i], RENDER_ENVELOPE | RENDER_BODYSTRUCTURE);
      const struct rendered *w = msgdata_rendered(ref->m[i].d, RENDER_ALL);
      same &= r && w && strcmp(r->envelope, w->envelope) == 0 &&
              strcmp(r->bodystructure, w->bodystructure) == 0;
    }
    mbox_batch_free(b);
  }
  atomic_fetch_add(&spare_cores_taken, 1);
  CHECK(same);
  CHECK(once);
  mbox_batch_free(ref);
  buf_free(&box);
}

/*
** Allocation failures: make the Nth allocation fail, for every N, while loading an mbox,
** appending and computing metadata. Each attempt must fail cleanly (a code, no crash; the
** ASan build catches leaks) or succeed, and the server must be freed without trouble.
*/
static void test_allocation_failures(void) {
  const char *box =
    "From a Mon Jan  1 00:00:00 2024\nX-Keywords: k1 k2\nStatus: RO\nSubject: a\n\nbody\n\n"
    "From b Mon Jan  1 00:00:00 2024\nContent-Type: multipart/mixed; boundary=x\n\n--x\n"
    "Content-Type: text/plain\n\none\n--x\nContent-Type: message/rfc822\n\nSubject: in\n\n"
    "two\n--x--\n";
  int clean = 0, ok_at = 0;
  for (long n = 1; n < 400 && !ok_at; n++) {
    imapmem *srv = NULL;
    atomic_store(&mem_fail_countdown, n);
    int rc = imapmem_new(NULL, &srv);
    if (rc == IMAPMEM_OK) rc = imapmem_add_user(srv, "u", "p");
    if (rc == IMAPMEM_OK) rc = imapmem_load_mbox(srv, "u", "Work/Box", box, strlen(box), "x");
    uint32_t uid = 0;
    if (rc == IMAPMEM_OK) rc = imapmem_append(srv, "u", "INBOX", "A: b\r\n\r\nc\r\n", 12, "\\Seen k3", &uid);
    if (rc == IMAPMEM_OK) {
      struct mailbox *mb = user_mailbox(srv->users[0], "Work/Box");
      const struct rendered *m = mb ? msgdata_rendered(mb->msgs[1].data, RENDER_ALL) : NULL;
      if (!m) rc = IMAPMEM_NOMEM;
      mailbox_unref(mb);
    }
    atomic_store(&mem_fail_countdown, 0);
    if (rc == IMAPMEM_OK) ok_at = (int)n;
    else if (rc == IMAPMEM_NOMEM) clean++;
    else fprintf(stderr, "allocation %ld: unexpected code %d\n", n, rc);
    imapmem_free(srv);
  }
  CHECK(ok_at > 10 && clean == ok_at - 1);   /* every failure before success was clean */
}

/*
** The tagged reply to "a ...", or the untagged "* BAD" of a command the server had no
** memory to read, or "* BYE" or the end of the connection; from fd into in.
*/
static const char *append_reply(int fd, struct buf *in) {
  buf_reset(in);
  buf_add(in, "\n", 1);              /* so that a reply at the start is found too */
  for (;;) {
    const char *ends[] = {"\na ", "\n* BAD ", "\n* BYE "};
    for (int k = 0; k < 3; k++) {
      const char *at = in->len ? strstr(in->p, ends[k]) : NULL;
      if (at && strchr(at + 1, '\n')) return at + 1;
    }
    char tmp[4096];
    ssize_t r = read(fd, tmp, sizeof tmp);
    if (r <= 0) return "connection closed";
    buf_add(in, tmp, (size_t)r);
  }
}

/*
** An APPEND of three messages (a literal, a literal8 with a binary part, a CATENATE with a
** URL), with the Nth allocation failing from the moment it is sent: each try stores all
** three or none (RFC 3502), and the server lives on.
*/
static void test_append_allocation_failures(void) {
  static const char cmd[] =
    "a APPEND Sent {20+}\r\nSubject: 1\r\n\r\nbody\r\n"
    " ~{56+}\r\nSubject: 2\r\nContent-Transfer-Encoding: binary\r\n\r\nb\0i\0n\r\n"
    " CATENATE (TEXT {14+}\r\nSubject: 3\r\n\r\n URL \"/INBOX/;UID=1/;SECTION=TEXT\")\r\n";
  int all_or_none = 1, ok_at = 0;
  for (long n = 1; n < 600 && !ok_at; n++) {
    imapmem *srv = NULL;
    int sv[2] = {-1, -1};
    struct buf in = {0};
    const char *box = "From a Mon Jan  1 00:00:00 2024\nSubject: a\n\nbody\n";
    if (imapmem_new(NULL, &srv) != IMAPMEM_OK || imapmem_add_user(srv, "u", "p") != IMAPMEM_OK ||
        imapmem_load_mbox(srv, "u", "INBOX", box, strlen(box), "x") != IMAPMEM_OK ||
        imapmem_load_mbox(srv, "u", "Sent", "", 0, "y") != IMAPMEM_OK ||
        socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0 ||
        imapmem_serve_fd(srv, sv[1], sv[1], "u") != IMAPMEM_OK) {
      CHECK(0);
      break;
    }
    CHECK(strncmp(exchange(sv[0], "n NOOP\r\n", "n", &in), "n OK", 4) == 0);
    buf_reserve(&in, 1 << 16);         /* so that the test's own reads never allocate */
    atomic_store(&mem_fail_countdown, n);
    if (write(sv[0], cmd, sizeof cmd - 1) == (ssize_t)(sizeof cmd - 1)) {
      const char *t = append_reply(sv[0], &in);
      atomic_store(&mem_fail_countdown, 0);
      size_t count = 99;
      CHECK(imapmem_count(srv, "u", "Sent", &count) == IMAPMEM_OK);
      if (strncmp(t, "a OK", 4) == 0) ok_at = (int)n;
      all_or_none &= ok_at ? count == 3 : count == 0;
    }
    atomic_store(&mem_fail_countdown, 0);
    close(sv[0]);
    imapmem_stop(srv);
    imapmem_free(srv);
    buf_free(&in);
  }
  CHECK(ok_at > 10 && all_or_none);
}

static int open_fds(void) {
  int n = 0;
  for (int fd = 0; fd < 4096; fd++) n += fcntl(fd, F_GETFD) != -1;
  return n;
}

static int threads_now(void) {   /* Linux: one entry per thread; -1 elsewhere */
  DIR *d = opendir("/proc/self/task");
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

/* Start, serve clients (one idling, one on a socketpair), stop, free: nothing left open. */
static void test_nothing_left_behind(void) {
  int fds = open_fds(), threads = threads_now();
  imapmem *srv;
  CHECK(imapmem_new(NULL, &srv) == IMAPMEM_OK && imapmem_add_user(srv, "u", "p") == IMAPMEM_OK);
  CHECK(imapmem_start(srv, "127.0.0.1", 0) == IMAPMEM_OK);
  int c[3], sv[2];
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)imapmem_port(srv));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  struct buf in = {0};
  for (int i = 0; i < 3; i++) {
    c[i] = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(connect(c[i], (struct sockaddr *)&a, sizeof a) == 0);
    CHECK(strncmp(exchange(c[i], "a LOGIN u p\r\n", "a", &in), "a OK", 4) == 0);
  }
  CHECK(strncmp(exchange(c[0], "b SELECT INBOX\r\n", "b", &in), "b OK", 4) == 0);
  CHECK(write(c[0], "c IDLE\r\n", 8) == 8);
  CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
  CHECK(imapmem_serve_fd(srv, sv[1], sv[1], "u") == IMAPMEM_OK);
  struct imapmem_until idle = {.kind = IMAPMEM_UNTIL_IDLE, .user = "u", .mailbox = "INBOX"};
  CHECK(imapmem_wait(srv, &idle, 5000) == IMAPMEM_OK);
  CHECK(imapmem_stop(srv) == IMAPMEM_OK);
  imapmem_free(srv);
  for (int i = 0; i < 3; i++) close(c[i]);
  close(sv[0]);
  buf_free(&in);
  CHECK(open_fds() == fds);
  CHECK(threads < 0 || threads_now() == threads);
}

struct race {
  imapmem *srv;
  atomic_int ok;
};

static void *add_same_user(void *arg) {
  struct race *r = arg;
  if (imapmem_add_user(r->srv, "same", "pw") == IMAPMEM_OK) atomic_fetch_add(&r->ok, 1);
  return NULL;
}

/* imapmem_add_user from several threads at once: the name is taken exactly once. */
static void test_add_user_race(void) {
  int once = 1;
  for (int trial = 0; trial < 200 && once; trial++) {
    struct race r;
    pthread_t t[6];
    atomic_init(&r.ok, 0);
    if (imapmem_new(NULL, &r.srv) != IMAPMEM_OK) break;
    for (int i = 0; i < 6; i++) pthread_create(&t[i], NULL, add_same_user, &r);
    for (int i = 0; i < 6; i++) pthread_join(t[i], NULL);
    once = atomic_load(&r.ok) == 1 && r.srv->nusers == 1;
    imapmem_free(r.srv);
  }
  CHECK(once);
}

/* A client that goes away from a pipe must not kill the embedding process with SIGPIPE. */
static void test_no_sigpipe(void) {
  imapmem *srv;
  int in[2], out[2];
  CHECK(imapmem_new(NULL, &srv) == IMAPMEM_OK && imapmem_add_user(srv, "u", "p") == IMAPMEM_OK);
  CHECK(pipe(in) == 0 && pipe(out) == 0);
  CHECK(imapmem_serve_fd(srv, in[0], out[1], "u") == IMAPMEM_OK);
  char greeting[256];
  CHECK(read(out[0], greeting, sizeof greeting) > 0);
  close(out[0]);             /* the client stops reading... */
  CHECK(write(in[1], "a NOOP\r\n", 8) == 8);   /* ...and the server's answer has nowhere to go */
  struct imapmem_until none = {.kind = IMAPMEM_UNTIL_NO_SESSIONS};
  CHECK(imapmem_wait(srv, &none, 5000) == IMAPMEM_OK);   /* still alive to see it end */
  close(in[1]);
  imapmem_free(srv);
}

/* imapmem_stop() ends a session stuck writing to a full pipe that nobody reads. */
static void test_stop_with_a_full_pipe(void) {
  imapmem *srv;
  int in[2], out[2];
  struct buf big = {0};
  buf_adds(&big, "Subject: big\r\n\r\n");
  for (int i = 0; i < 20000; i++) buf_adds(&big, "0123456789012345678901234567890123456789\r\n");
  CHECK(imapmem_new(NULL, &srv) == IMAPMEM_OK && imapmem_add_user(srv, "u", "p") == IMAPMEM_OK);
  CHECK(imapmem_append(srv, "u", "INBOX", big.p, big.len, NULL, NULL) == IMAPMEM_OK);
  CHECK(pipe(in) == 0 && pipe(out) == 0);
  CHECK(imapmem_serve_fd(srv, in[0], out[1], "u") == IMAPMEM_OK);
  const char *cmds = "a SELECT INBOX\r\nb FETCH 1 BODY[]\r\n";
  CHECK(write(in[1], cmds, strlen(cmds)) == (ssize_t)strlen(cmds));
  struct imapmem_until sel = {.kind = IMAPMEM_UNTIL_SELECTED, .user = "u", .mailbox = "INBOX"};
  CHECK(imapmem_wait(srv, &sel, 5000) == IMAPMEM_OK);
  alarm(20);                 /* a hang here kills the test, which then fails */
  double t0 = now_s();
  CHECK(imapmem_stop(srv) == IMAPMEM_OK);
  CHECK(now_s() - t0 < 5);
  alarm(0);
  imapmem_free(srv);
  close(in[1]);
  close(out[0]);
  buf_free(&big);
}

/* A load that cannot complete (no UIDs left) adds nothing. */
static void test_failed_load_adds_nothing(void) {
  imapmem *srv;
  const char *one = "From a Mon Jan  1 00:00:00 2024\nX-UID: 4294967293\n\nx\n";
  const char *three = "From a Mon Jan  1 00:00:00 2024\n\n1\n\nFrom a Mon Jan  1 00:00:00 2024\n\n2\n"
                      "\nFrom a Mon Jan  1 00:00:00 2024\n\n3\n";
  size_t n = 0;
  CHECK(imapmem_new(NULL, &srv) == IMAPMEM_OK && imapmem_add_user(srv, "u", "p") == IMAPMEM_OK);
  CHECK(imapmem_load_mbox(srv, "u", "INBOX", one, strlen(one), "one") == IMAPMEM_OK);
  CHECK(imapmem_load_mbox(srv, "u", "INBOX", three, strlen(three), "three") == IMAPMEM_ERROR);
  CHECK(strstr(imapmem_errmsg(srv), "three: mailbox INBOX has no UIDs left") != NULL);
  CHECK(imapmem_count(srv, "u", "INBOX", &n) == IMAPMEM_OK && n == 1);
  imapmem_free(srv);
}

/* Case-insensitive substring search: the right answer, in work linear in the text. */
static const char *naive_casefind(const char *h, size_t hn, const char *n, size_t nn) {
  for (size_t i = 0; i + nn <= hn; i++) {
    size_t j = 0;
    while (j < nn && lower_case[(unsigned char)h[i + j]] == lower_case[(unsigned char)n[j]]) j++;
    if (j == nn) return h + i;
  }
  return NULL;
}

static long find_work(const char *needle, const char *text, size_t n, const char **at) {
  struct needle nd;
  struct arena a = {0};
  long before = atomic_load(&needle_work);
  *at = needle_init(&nd, str_make(needle, strlen(needle)), &a) ? needle_find(&nd, text, n) : NULL;
  arena_free(&a);
  return atomic_load(&needle_work) - before;
}

static void test_substring(void) {
  unsigned seed = 12345;
  int agree = 1;
  for (int round = 0; round < 20000 && agree; round++) {
    char h[48], nd[8];
    size_t hn = (seed = seed * 1103515245 + 12345) >> 16 & 31;
    size_t nn = (seed = seed * 1103515245 + 12345) >> 16 & 7;
    for (size_t i = 0; i < hn; i++) h[i] = "aAbBc"[((seed = seed * 1103515245 + 12345) >> 16) % 5];
    for (size_t i = 0; i < nn; i++) nd[i] = "aAbBc"[((seed = seed * 1103515245 + 12345) >> 16) % 5];
    nd[nn] = 0;
    const char *at;
    find_work(nd, h, hn, &at);
    agree = at == naive_casefind(h, hn, nd, nn);
    if (!agree) fprintf(stderr, "substring: %.*s in %.*s\n", (int)nn, nd, (int)hn, h);
  }
  CHECK(agree);
  /* Texts that made the old search quadratic: a first letter present in one case only,
     and repeated prefixes. The work is bounded by a small multiple of the text. */
  size_t n = 1 << 20;
  char *t = malloc(n + 1);
  const char *at;
  for (size_t i = 0; i < n; i++) t[i] = "the rerun was terse and never severe "[i % 37];
  t[n] = 0;
  CHECK(find_work("Error", t, n, &at) <= 4 * (long)n && at == NULL);
  CHECK(find_work("seVERe", t, n, &at) <= 4 * (long)n && at == t + 30);
  memset(t, 'a', n);
  CHECK(find_work("aab", t, n, &at) <= 4 * (long)n && at == NULL);
  char *longn = malloc(1002);
  memset(longn, 'A', 1000);
  memcpy(longn + 1000, "B", 2);
  CHECK(find_work(longn, t, n, &at) <= 4 * (long)n && at == NULL);
  t[n - 1] = 'b';
  CHECK(find_work(longn, t, n, &at) <= 4 * (long)n && at == t + n - 1001);
  CHECK(find_work("", t, n, &at) == 0 && at == t);
  free(longn);
  free(t);
}

/* RFC 3516: the decoders FETCH BINARY uses, and the base64 a literal8 APPEND is kept in. */
static void test_binary(void) {
  const char bin[] = {'a', 0, '\r', 'b', '\n', (char)0xff, 'z'};
  struct buf e = {0}, d = {0};
  base64_encode(bin, sizeof bin, &e);
  CHECK(e.p && strcmp(e.p, "YQANYgr/eg==\r\n") == 0);
  CHECK(base64_decode(e.p, e.len, &d, 0) && d.len == sizeof bin && !memcmp(d.p, bin, d.len));
  buf_reset(&e);
  char many[100];
  memset(many, 'x', sizeof many);
  base64_encode(many, 57, &e);     /* 57 octets: exactly one 76-character line */
  CHECK(e.len == 78 && e.p[76] == '\r');
  buf_reset(&e);
  base64_encode(many, 58, &e);
  CHECK(e.len == 78 + 6);
  buf_reset(&d);                   /* RFC 2045 6.7 rule 3: trailing white space goes */
  const char *qp = "a  \r\nb=\r\nc \t=\r\nd=20\r\n\te =3D";
  qp_decode(qp, strlen(qp), &d, 0);
  CHECK(d.p && strcmp(d.p, "a\r\nbc \td \r\n\te =") == 0);
  static const char msg[] =
    "Subject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
    "--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
    "--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: Binary\r\n"
    "\r\nab\0c\r\n"
    "--b\r\nContent-Type: application/octet-stream\r\n\r\nnul\0\r\n--b--\r\n";
  size_t n = sizeof msg - 1;       /* NULs included */
  buf_reset(&e);
  CHECK(msg_binary_to_base64(msg, n, &e) == 1);
  CHECK(e.p && memchr(e.p, 0, e.len) == NULL);
  CHECK(e.p && strstr(e.p, "Content-Transfer-Encoding: base64\r\n\r\nYWIAYw==\r\n--b\r\n"));
  CHECK(e.p && strstr(e.p, "stream\r\nContent-Transfer-Encoding: base64\r\n\r\nbnVsAA==\r\n--b--"));
  CHECK(e.p && strstr(e.p, "\r\n\r\nhello\r\n--b\r\n"));
  struct msgmeta *m = e.p ? msgmeta_build(e.p, e.len) : NULL;
  uint32_t two[] = {2};
  int p2 = m ? fetch_find_part(m, two, 1) : -1;
  struct str v;
  buf_reset(&d);
  CHECK(p2 > 0 && part_binary(e.p, &m->parts[p2], &d, &v) && v.len == 4 &&
        memcmp(v.p, "ab\0c", 4) == 0);
  msgmeta_free(m, NULL);
  buf_reset(&e);
  CHECK(msg_binary_to_base64("Subject: y\r\n\r\nplain\r\n", 21, &e) == 0 && e.len == 0);
  buf_free(&e);
  buf_free(&d);
}

/*
** Sort keys (RFC 5256, 5957): what sortkeys_build and sortaddrs_build read from a header,
** that a mailbox's keys are built once however many SORT and THREAD commands use them, the
** address keys only by a SORT that names an address, and that a failed allocation at any
** point gives NULL or keys, never a crash or a leak (ASan).
*/
static void test_sort_keys(void) {
  const char *h = "Subject: =?utf-8?q?Re=3A_=5Bl=5D?= Fwd: [x] Caf\xc3\xa9 (fwd)\r\n"
                  "From: \"Ann Example\" <ann@x.org>, bob@x.org\r\n"
                  "To: group: c@x.org;\r\nCc: (no name) dee@x.org\r\n"
                  "Date: Sun, 31 Dec 2000 16:01:33 -0800\r\n"
                  "Message-ID: <\"q\\\"1\"@x.org>\r\n"
                  "In-Reply-To: <irt@x.org>\r\nReferences: <r1@x> (c) <r2@x>\r\n\r\n";
  struct sortkeys *k = sortkeys_build(h, h + strlen(h), NULL);
  struct sortaddrs *ad = sortaddrs_build(h, h + strlen(h), NULL);
  CHECK(k != NULL && ad != NULL);
  if (ad) {
    CHECK(strcmp(ad->text + ad->from, "ANN") == 0);
    CHECK(strcmp(ad->text + ad->display_from, "ANN EXAMPLE") == 0);
    CHECK(strcmp(ad->text + ad->to, "GROUP") == 0 &&
          strcmp(ad->text + ad->display_to, "GROUP") == 0);
    CHECK(strcmp(ad->text + ad->cc, "DEE") == 0);
  }
  free(ad);
  if (k) {
    CHECK(strcmp(k->text + k->subject, "CAF\xc3\xa9") == 0 && k->reply);
    CHECK(k->sent == 978307293);               /* 2001-01-01 00:01:33 UTC */
    CHECK(k->msgid != SORTKEY_NONE && strcmp(k->text + k->msgid, "q\"1@x.org") == 0);
    CHECK(k->nrefs == 2 && strcmp(k->text + k->refs, "r1@x") == 0 &&
          strcmp(k->text + k->refs + 5, "r2@x") == 0);   /* References wins over In-Reply-To */
    free(k);
  }
  const char *bare = "Subject: [blob]\r\nIn-Reply-To: junk <a@b> <c@d>\r\n\r\n";
  k = sortkeys_build(bare, bare + strlen(bare), NULL);
  CHECK(k && strcmp(k->text + k->subject, "[BLOB]") == 0 && !k->reply && k->sent == INT64_MIN &&
        k->msgid == SORTKEY_NONE && k->nrefs == 1 && strcmp(k->text + k->refs, "a@b") == 0);
  free(k);
  ad = sortaddrs_build(bare, bare + strlen(bare), NULL);
  CHECK(ad && ad->text[ad->from] == 0 && ad->text[ad->display_to] == 0);
  free(ad);
  long n, nulls = 0;          /* the Nth allocation fails, for each N until none is left */
  for (n = 1; n < 400; n++) {
    atomic_store(&mem_fail_countdown, n);
    k = sortkeys_build(h, h + strlen(h), NULL);
    ad = sortaddrs_build(h, h + strlen(h), NULL);
    long left = atomic_load(&mem_fail_countdown);
    atomic_store(&mem_fail_countdown, 0);
    nulls += (k == NULL) + (ad == NULL);
    free(k);
    free(ad);
    if (left > 0) break;     /* none failed: every allocation has had its turn */
  }
  CHECK(n > 3 && n < 400 && nulls > 0);

  enum { N = 2000 };
  struct buf box = {0};
  for (int i = 0; i < N; i++)
    buf_printf(&box, "From a@b Mon Jan  1 00:00:00 2024\nFrom: A <a%d@b>\nSubject: Re: s%d\n"
                     "Message-ID: <m%d@b>\nReferences: <m%d@b>\n\nbody\n\n", i, i % 7, i, i / 2);
  int sv[2];
  imapmem *srv = serve_generated(&box, sv);
  struct buf in = {0};
  long before = atomic_load(&sortkeys_builds), mbefore = atomic_load(&msgmeta_builds);
  long abefore = atomic_load(&sortaddrs_builds);
  CHECK(strncmp(exchange(sv[0], "a SELECT INBOX\r\n", "a", &in), "a OK", 4) == 0);
  CHECK(strncmp(exchange(sv[0], "b SORT (SUBJECT) UTF-8 ALL\r\n", "b", &in), "b OK", 4) == 0);
  CHECK(strstr(in.p, "* SORT 1 8 15 ") != NULL);
  CHECK(atomic_load(&sortaddrs_builds) == abefore);   /* no address was asked for */
  CHECK(strncmp(exchange(sv[0], "c SORT (REVERSE FROM) UTF-8 ALL\r\n", "c", &in), "c OK", 4) == 0);
  CHECK(strncmp(in.p, "* SORT 1000 999 998 ", 20) == 0);   /* "A999" is the greatest */
  CHECK(strncmp(exchange(sv[0], "c2 SORT (DISPLAYFROM SUBJECT) UTF-8 ALL\r\n", "c2", &in),
                "c2 OK", 5) == 0);
  CHECK(strstr(in.p, "* SORT 1 8 15 ") != NULL);   /* all "A": by subject, then number */
  CHECK(atomic_load(&sortaddrs_builds) - abefore == N);   /* once each, for both */
  CHECK(strncmp(exchange(sv[0], "d THREAD REFERENCES UTF-8 ALL\r\n", "d", &in), "d OK", 4) == 0);
  CHECK(strncmp(in.p, "* THREAD (1 2 (3 (5 (9 ", 23) == 0);   /* k under (k-1)/2+1 */
  CHECK(strncmp(exchange(sv[0], "e THREAD ORDEREDSUBJECT UTF-8 ALL\r\n", "e", &in), "e OK", 4) == 0);
  CHECK(atomic_load(&sortkeys_builds) - before == N);
  CHECK(atomic_load(&msgmeta_builds) - mbefore == 0);   /* the MIME tree was not needed */
  close(sv[0]);
  imapmem_free(srv);
  buf_free(&in);
  buf_free(&box);
}

/* A digest as lower-case hex, into a static buffer. */
static const char *hex_of(const unsigned char *d, size_t n) {
  static char out[2 * 64 + 1];
  hex_encode(d, n, out);
  return out;
}

static int digest_is(const struct hash_alg *alg, const char *msg, size_t n, const char *hex) {
  unsigned char d[HASH_MAX];
  hash_once(alg, msg, n, d);
  return strcmp(hex_of(d, alg->len), hex) == 0;
}

static int hmac_is(const struct hash_alg *alg, const void *key, size_t klen, const char *msg,
                   const char *hex) {
  unsigned char d[HASH_MAX];
  hmac(alg, key, klen, msg, strlen(msg), d);
  return strcmp(hex_of(d, alg->len), hex) == 0;
}

/* The test vectors of RFC 1321 A.5, FIPS 180-2 / RFC 6234, RFC 2202, RFC 4231, RFC 6070. */
static void test_hashes(void) {
  static const struct { const char *msg, *md5; } md5_suite[] = {   /* RFC 1321 A.5 */
    {"", "d41d8cd98f00b204e9800998ecf8427e"},
    {"a", "0cc175b9c0f1b6a831c399e269772661"},
    {"abc", "900150983cd24fb0d6963f7d28e17f72"},
    {"message digest", "f96b697d7cb7938d525a2f31aaf161d0"},
    {"abcdefghijklmnopqrstuvwxyz", "c3fcd3d76192e4007dfb496cca67e13b"},
    {"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
     "d174ab98d277d9f5a5611c2c9f419d9f"},
    {"1234567890123456789012345678901234567890"
     "1234567890123456789012345678901234567890", "57edf4a22be3c955ac49da2e2107b67a"}};
  for (size_t i = 0; i < sizeof md5_suite / sizeof md5_suite[0]; i++)
    CHECK(digest_is(&hash_md5, md5_suite[i].msg, strlen(md5_suite[i].msg), md5_suite[i].md5));
  const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  CHECK(digest_is(&hash_sha1, "abc", 3, "a9993e364706816aba3e25717850c26c9cd0d89d"));
  CHECK(digest_is(&hash_sha1, two, strlen(two), "84983e441c3bd26ebaae4aa1f95129e5e54670f1"));
  CHECK(digest_is(&hash_sha1, "", 0, "da39a3ee5e6b4b0d3255bfef95601890afd80709"));
  CHECK(digest_is(&hash_sha256, "abc", 3,
                  "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
  CHECK(digest_is(&hash_sha256, two, strlen(two),
                  "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"));
  CHECK(digest_is(&hash_sha256, "", 0,
                  "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
  char *million = malloc(1000000);           /* one million 'a', fed in uneven pieces */
  if (million) {
    memset(million, 'a', 1000000);
    struct hash_ctx ctx;
    unsigned char d[HASH_MAX];
    const struct hash_alg *algs[2] = {&hash_sha1, &hash_sha256};
    const char *want[2] = {"34aa973cd4c4daa4f61eeb2bdbad27316534016f",
                           "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"};
    for (int k = 0; k < 2; k++) {
      hash_init(&ctx, algs[k]);
      for (size_t off = 0, step = 1; off < 1000000; off += step, step = step * 3 % 997 + 1)
        hash_update(&ctx, million + off, off + step > 1000000 ? 1000000 - off : step);
      hash_final(&ctx, d);
      CHECK(strcmp(hex_of(d, algs[k]->len), want[k]) == 0);
    }
    free(million);
  }
  unsigned char k0b[20], kaa[131];
  memset(k0b, 0x0b, sizeof k0b);
  memset(kaa, 0xaa, sizeof kaa);
  const char *big = "Test Using Larger Than Block-Size Key - Hash Key First";
  /* RFC 2202 2 (HMAC-MD5) and 3 (HMAC-SHA-1): test cases 1, 2 and 6 */
  CHECK(hmac_is(&hash_md5, k0b, 16, "Hi There", "9294727a3638bb1c13f48ef8158bfc9d"));
  CHECK(hmac_is(&hash_md5, "Jefe", 4, "what do ya want for nothing?",
                "750c783e6ab0b503eaa86e310a5db738"));
  CHECK(hmac_is(&hash_md5, kaa, 80, big, "6b1ab7fe4bd7bf8f0b62e6ce61b9d0cd"));
  CHECK(hmac_is(&hash_sha1, k0b, 20, "Hi There", "b617318655057264e28bc0b6fb378c8ef146be00"));
  CHECK(hmac_is(&hash_sha1, "Jefe", 4, "what do ya want for nothing?",
                "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"));
  CHECK(hmac_is(&hash_sha1, kaa, 80, big, "aa4ae5e15272d00e95705637ce8a3b55ed402112"));
  /* RFC 4231 4.2, 4.3 and 4.7: HMAC-SHA-256 */
  CHECK(hmac_is(&hash_sha256, k0b, 20, "Hi There",
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"));
  CHECK(hmac_is(&hash_sha256, "Jefe", 4, "what do ya want for nothing?",
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"));
  CHECK(hmac_is(&hash_sha256, kaa, 131, big,
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"));
  /* RFC 6070 2: PBKDF2-HMAC-SHA1 */
  static const struct { const char *p, *s; unsigned c; size_t len; const char *dk; } v[] = {
    {"password", "salt", 1, 20, "0c60c80f961f0e71f3a9b524af6012062fe037a6"},
    {"password", "salt", 2, 20, "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957"},
    {"password", "salt", 4096, 20, "4b007901b765489abead49d926f721d065a429c1"},
    {"passwordPASSWORDpassword", "saltSALTsaltSALTsaltSALTsaltSALTsalt", 4096, 25,
     "3d2eec4fe41c849b80c8d83662c0e44a8b291a964cf2f07038"}};
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
    unsigned char dk[32];
    pbkdf2_hmac(&hash_sha1, v[i].p, strlen(v[i].p), v[i].s, strlen(v[i].s), v[i].c, dk, v[i].len);
    CHECK(strcmp(hex_of(dk, v[i].len), v[i].dk) == 0);
  }
  unsigned char dk[25];    /* RFC 6070: "pass\0word", "sa\0lt", 4096, 16 */
  pbkdf2_hmac(&hash_sha1, "pass\0word", 9, "sa\0lt", 5, 4096, dk, 16);
  CHECK(strcmp(hex_of(dk, 16), "56fa6aa75548099dcc37d7f03425e0c3") == 0);
}

/* A base64 text decoded into out (of at least its size); the length. */
static size_t unbase64(const char *b64, unsigned char *out) {
  struct buf b = {0};
  CHECK(base64_decode(b64, strlen(b64), &b, 1));
  memcpy(out, b.p, b.len);
  size_t n = b.len;
  buf_free(&b);
  return n;
}

/* RFC 5802 5 and RFC 7677 3: the SCRAM examples, checked as the server checks them. */
static void test_scram_examples(void) {
  static const struct {
    const struct hash_alg *alg;
    const char *first_bare, *server_first, *final_bare, *salt, *proof, *verifier;
  } ex[] = {
    {&hash_sha1, "n=user,r=fyko+d2lbbFgONRv9qkxdawL",
     "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
     "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j", "QSXCR+Q6sek8bf92",
     "v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=", "rmF9pqV8S7suAoZWja4dJRkFsKQ="},
    {&hash_sha256, "n=user,r=rOprNGfwEbeRWgbNEkqO",
     "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
     "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0", "W22ZaJ0SNY7soEsUEjb6gQ==",
     "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
     "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="}};
  for (size_t i = 0; i < 2; i++) {
    char am[512];
    snprintf(am, sizeof am, "%s,%s,%s", ex[i].first_bare, ex[i].server_first, ex[i].final_bare);
    unsigned char salt[64], proof[64], want[64], sig[HASH_MAX];
    size_t saltlen = unbase64(ex[i].salt, salt);
    unbase64(ex[i].proof, proof);
    unbase64(ex[i].verifier, want);
    CHECK(scram_check(ex[i].alg, "pencil", 6, salt, saltlen, 4096, am, strlen(am), proof, sig));
    CHECK(memcmp(sig, want, ex[i].alg->len) == 0);
    CHECK(!scram_check(ex[i].alg, "pencil!", 7, salt, saltlen, 4096, am, strlen(am), proof, sig));
    proof[0] ^= 1;
    CHECK(!scram_check(ex[i].alg, "pencil", 6, salt, saltlen, 4096, am, strlen(am), proof, sig));
  }
  struct buf name = {0};      /* RFC 5802 5.1: saslname escapes */
  CHECK(sasl_saslname(str_make("a=2Cb=3Dc", 9), &name) && name.len == 5 &&
        memcmp(name.p, "a,b=c", 5) == 0);
  buf_reset(&name);
  CHECK(!sasl_saslname(str_make("a=2Xb", 5), &name));
  buf_free(&name);
  struct buf cb = {0}, proof = {0};
  struct str nonce;
  size_t bare;
  const char *fin = "c=biws,r=abc,x=ext,p=dGVzdA==";
  CHECK(scram_client_final(str_make(fin, strlen(fin)), &cb, &nonce, &proof, &bare) &&
        cb.len == 3 && !memcmp(cb.p, "n,,", 3) && nonce.len == 3 && bare == strlen(fin) - 11 &&
        proof.len == 4);
  buf_free(&cb);
  buf_free(&proof);
}

/* RFC 2195 2: the CRAM-MD5 example, tim / tanstaaftanstaaf. */
static void test_cram_md5_example(void) {
  const char *challenge = "<1896.697170952@postoffice.reston.mci.net>";
  unsigned char raw[64], mac[16];
  size_t n = unbase64("PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+", raw);
  CHECK(n == strlen(challenge) && memcmp(raw, challenge, n) == 0);
  hmac(&hash_md5, "tanstaaftanstaaf", 16, challenge, strlen(challenge), mac);
  CHECK(strcmp(hex_of(mac, 16), "b913a602c7eda7a495b4e6e7334d3890") == 0);
  struct buf b = {0};
  base64_encode_flat("tim b913a602c7eda7a495b4e6e7334d3890", 36, &b);
  CHECK(b.p && strcmp(b.p, "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw") == 0);
  buf_free(&b);
}

/* parse_uint up to its limit, also where ten times the number would overflow (fuzz_mbox). */
static void test_parse_uint(void) {
  long long v = -1;
  CHECK(parse_uint(str_make("9223372036854775807", 19), INT64_MAX, &v) && v == INT64_MAX);
  CHECK(!parse_uint(str_make("9223372036854775808", 19), INT64_MAX, &v));
  CHECK(!parse_uint(str_make("77777777777777777777", 20), INT64_MAX, &v));
  CHECK(!parse_uint(str_make("99999999999999999999999", 23), INT64_MAX, &v));
  CHECK(parse_uint(str_make("4294967295", 10), UINT32_MAX, &v) && v == 4294967295LL);
  CHECK(!parse_uint(str_make("4294967296", 10), UINT32_MAX, &v));
  CHECK(parse_uint(str_make("59", 2), 59, &v) && v == 59 && !parse_uint(str_make("60", 2), 59, &v));
  CHECK(!parse_uint(str_make("", 0), 9, &v) && !parse_uint(str_make("1a", 2), 99, &v));
}

/*
** Addresses keep their strings as spans of one buffer (issue 15): a string appended to
** after another one was is moved to the end first, so each stays contiguous; and one
** struct addrs holds the lists of every field of an ENVELOPE, each address tagged.
*/
/* header_id finds every field by its name in any case, by way of its table of lengths. */
static void test_header_id(void) {
  int all = 1;
  for (int i = 0; i < H_COUNT; i++) {
    char up[32], low[32];
    size_t n = header_names[i].len;
    for (size_t k = 0; k <= n; k++) {
      up[k] = (char)toupper((unsigned char)header_names[i].name[k]);
      low[k] = (char)tolower((unsigned char)header_names[i].name[k]);
    }
    all &= header_id(str_make(header_names[i].name, n)) == i &&
           header_id(str_make(up, n)) == i && header_id(str_make(low, n)) == i;
    low[n - 1] ^= 1;         /* one byte off: not it */
    all &= header_id(str_make(low, n)) == -1;
  }
  CHECK(all);
  CHECK(header_id(str_make("Received", 8)) == -1 && header_id(str_make("Content_Type", 12)) == -1);
  CHECK(header_id(str_make("Content-Transfer-Encoding-", 26)) == -1 && header_id(str_make("", 0)) == -1);
}

/* out_string's word-at-a-time test: every byte value at every place of a word, against the
   byte-by-byte rule (RFC 3501 9: QUOTED-CHAR but quoted-specials). */
static void test_quoted_word(void) {
  int all = 1;
  for (int pos = 0; pos < 8; pos++)
    for (int c = 0; c < 256; c++)
      for (int fill = 0x20; fill < 0x7f; fill += 0x5e) {   /* the neighbours: ' ' and '~' */
        unsigned char w[8];
        memset(w, fill, sizeof w);
        w[pos] = (unsigned char)c;
        uint64_t x;
        memcpy(&x, w, 8);
        int bad = c < 0x20 || c > 0x7e || c == '"' || c == '\\';
        all &= quoted_word_bad(x) == bad;
      }
  CHECK(all);
  uint64_t seed = 88172645463325252u;   /* words of random bytes, bad ones anywhere */
  for (int k = 0; k < 200000; k++) {
    seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
    unsigned char w[8];
    memcpy(w, &seed, 8);
    int bad = 0;
    for (int i = 0; i < 8; i++) {
      if (k & 1) w[i] = (unsigned char)(0x20 + w[i] % 0x60);   /* mostly printable */
      bad |= w[i] < 0x20 || w[i] > 0x7e || w[i] == '"' || w[i] == '\\';
    }
    uint64_t x;
    memcpy(&x, w, 8);
    all &= quoted_word_bad(x) == bad;
  }
  CHECK(all);
  for (size_t n = 0; n <= 40; n++)   /* quoted_fits: one bad byte at each place of each length */
    for (size_t at = 0; at <= n; at++) {
      char t[41];
      memset(t, 'a', sizeof t);
      if (at < n) t[at] = '"';
      all &= quoted_fits(t, n) == (at == n);
    }
  CHECK(all);
  struct buf b = {0};
  out_string(&b, "Grüße, \"x\" and a tab\t", 23);
  CHECK(b.p && strncmp(b.p, "{23}\r\n", 6) == 0);
  buf_reset(&b);
  out_string(&b, "twelve bytes and then some more", 31);
  CHECK(b.p && strcmp(b.p, "\"twelve bytes and then some more\"") == 0);
  buf_free(&b);
}

static int same_str(struct str a, struct str b) {
  return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

/*
** The lexer-free readers of the usual forms (issue 15) against the general path: each value
** is read as it is (the plain reader takes it) and after a leading comment "(c) ", which the
** plain readers leave to the lexer and which changes nothing; both must agree.
*/
static void test_plain_readers(void) {
  static const char *ctypes[] = {
    "text/plain", "text/plain; charset=us-ascii; format=flowed", " TEXT/Plain ;charset = \"utf-8\" ",
    "multipart/mixed; boundary=\"----=_Part_1_2.3\"", "multipart/mixed; boundary=----=_Part_x",
    "application/pdf; name=\"a b.pdf\"", "text/plain; a=; b=\"\"", "image/png;name=x.png"};
  static const char *dispositions[] = {"attachment", "inline; filename=\"r.pdf\"; size=12"};
  int all = 1, plain = 1;
  for (int c = 0; c < 256; c++)    /* the atom bytes' bit map, byte by byte */
    CHECK(addr_atom_byte((unsigned char)c) ==
          (c >= 0x80 || (c > 0x20 && c != 0x7f && !strchr("()<>[]:;@\\,.\"", c))));
  for (size_t i = 0; i < sizeof ctypes / sizeof *ctypes + 2; i++) {
    int sub = i < sizeof ctypes / sizeof *ctypes;
    const char *v = sub ? ctypes[i] : dispositions[i - sizeof ctypes / sizeof *ctypes];
    char c[200];
    snprintf(c, sizeof c, "(c) %s", v);
    struct ctype a, b, t;
    ctype_clear(&t);
    plain &= ctype_parse_plain(str_make(v, strlen(v)), sub, &t);
    ctype_parse(str_make(v, strlen(v)), sub, &a);
    ctype_parse(str_make(c, strlen(c)), sub, &b);
    all &= same_str(a.type, b.type) && same_str(a.subtype, b.subtype) && a.nparams == b.nparams &&
           a.type.len > 0;
    for (int k = 0; k < a.nparams && k < b.nparams; k++)
      all &= same_str(a.params[k].name, b.params[k].name) &&
             same_str(a.params[k].value, b.params[k].value) &&
             a.params[k].section == b.params[k].section && a.params[k].extended == b.params[k].extended;
    ctype_free(&a);
    ctype_free(&b);
    ctype_free(&t);
  }
  CHECK(all && plain);
  static const char *lists[] = {
    "a@example.com", "Lee Turner <lee.turner12@example.org>", "\"Doe, John\" <j.doe@x.y>",
    "<bare@x>", "A <a@x>,\r\n\tb@y, \"\" <c@z>", "J\xc3\xbcrgen M\xc3\xbcller <jm@example.de>",
    "=?utf-8?q?Z=C3=B6e?= <z@x>", "John\"Q\" <q@x>"};
  all = plain = 1;
  for (size_t i = 0; i < sizeof lists / sizeof *lists; i++) {
    char c[200];
    snprintf(c, sizeof c, "(c) %s", lists[i]);
    struct addrs t = {0};
    plain &= addrs_parse_plain(str_make(lists[i], strlen(lists[i])), &t, H_TO, 0);
    addrs_free(&t);
    struct buf x = {0}, y = {0};
    struct addrs a = {0}, b = {0};
    addrs_parse(str_make(lists[i], strlen(lists[i])), &a, H_TO);
    addrs_parse(str_make(c, strlen(c)), &b, H_TO);
    out_addrs(&x, &a, H_TO);
    out_addrs(&y, &b, H_TO);
    all &= x.p && y.p && strcmp(x.p, y.p) == 0 && a.n > 0;
    addrs_free(&a);
    addrs_free(&b);
    buf_free(&x);
    buf_free(&y);
  }
  CHECK(all && plain);
  static const char *dates[] = {"Fri, 3 Jan 2020 04:59:56 +0000", "3 Jan 20 04:59 EST",
                                "Fri,3 Jan 2020 4:5:6 -0500", "Mon, 29 Feb 2021 00:00:00 +0000"};
  all = 1;
  for (size_t i = 0; i < sizeof dates / sizeof *dates; i++) {
    char c[200];
    snprintf(c, sizeof c, "(c) %s", dates[i]);
    int64_t ta = 1, tb = 2;
    int za = 1, zb = 2;
    struct str w[12];
    int ra = date_parse(str_make(dates[i], strlen(dates[i])), &ta, &za),
        rb = date_parse(str_make(c, strlen(c)), &tb, &zb);
    all &= date_words(str_make(dates[i], strlen(dates[i])), w, 12) > 0 && ra == rb &&
           (!ra || (ta == tb && za == zb));
  }
  CHECK(all);
}

static void test_address_spans(void) {
  struct addrs as = {0};
  struct span a = {0, 0}, b = {0, 0};
  addr_add(&as, &a, "mail", 4);
  addr_add(&as, &b, "example", 7);
  addr_add(&as, &a, "box", 3);              /* a is not last: moved, then appended */
  addr_add(&as, &b, ".org", 4);             /* and now b is not last either */
  struct str sa = addr_str(&as, a), sb = addr_str(&as, b);
  CHECK(sa.len == 7 && memcmp(sa.p, "mailbox", 7) == 0);
  CHECK(sb.len == 11 && memcmp(sb.p, "example.org", 11) == 0);
  addrs_free(&as);
  const char *to = "\"A B\" <a@x.org>, c@y.org (C)", *cc = "g: d@z.org;";
  addrs_parse(str_make(to, strlen(to)), &as, H_TO);
  addrs_parse(str_make(cc, strlen(cc)), &as, H_CC);
  CHECK(as.n == 5 && as.a[0].list == H_TO && as.a[1].list == H_TO && as.a[2].list == H_CC);
  struct str n0 = addr_str(&as, as.a[0].name), n1 = addr_str(&as, as.a[1].name),
             h1 = addr_str(&as, as.a[1].host), g = addr_str(&as, as.a[2].name);
  CHECK(n0.len == 3 && memcmp(n0.p, "A B", 3) == 0);
  CHECK(n1.len == 1 && n1.p[0] == 'C' && h1.len == 5 && memcmp(h1.p, "y.org", 5) == 0);
  CHECK(as.a[2].kind == ADDR_GROUP && g.len == 1 && g.p[0] == 'g');
  CHECK(as.a[4].kind == ADDR_GROUP_END);
  struct buf out = {0};
  out_addrs(&out, &as, H_CC);
  CHECK(out.p && strcmp(out.p, "((NIL NIL \"g\" NIL)(NIL NIL \"d\" \"z.org\")(NIL NIL NIL NIL))") == 0);
  buf_reset(&out);
  out_addrs(&out, &as, H_BCC);
  CHECK(out.p && strcmp(out.p, "NIL") == 0);
  buf_free(&out);
  addrs_free(&as);
}

/*
** What a re-SELECT trusts to keep a session's view (cmd_select): the expunge log says
** whether a message may have gone after a change number, also once the log is trimmed or
** forgotten; and recent_from never claims a \Recent message's index after an expunge.
*/
static void test_expunge_log(void) {
  struct mailbox *mb = mailbox_new(NULL, "T", 1, 1);
  CHECK(mb != NULL);
  if (!mb) return;
  for (int i = 0; i < 6; i++) {
    struct msgdata *d = msgdata_new("Subject: x\r\n\r\nbody\r\n", 20);
    CHECK(d && mailbox_append(mb, d, 0, 0, 0, 0) == (uint32_t)i + 1);
  }
  uint64_t before = mb->modseq;
  CHECK(!mailbox_expunged_since(mb, 1) && !mailbox_expunged_since(mb, before));
  mb->recent_from = mb->count;     /* as a SELECT that claimed them all leaves it */
  unsigned char remove[6] = {0, 1, 0, 0, 1, 0};
  CHECK(mailbox_expunge(mb, remove) == 2);
  CHECK(mailbox_expunged_since(mb, before) && mailbox_expunged_since(mb, 1));
  CHECK(!mailbox_expunged_since(mb, mb->modseq));
  CHECK(mb->recent_from == 0);     /* the indices moved under it */
  struct msgdata *d = msgdata_new("Subject: y\r\n\r\nbody\r\n", 20);
  CHECK(d && mailbox_append(mb, d, FLAG_RECENT, 0, 0, 0) == 7);   /* at index 4 */
  CHECK(mb->count == 5 && mb->recent_from <= 4);
  uint64_t after = mb->modseq;     /* an append: no expunge since the last one */
  CHECK(!mailbox_expunged_since(mb, after) && !mailbox_expunged_since(mb, after - 1));
  for (int round = 0; round < IMAPMEM_EXPUNGE_LOG + 8; round++) {   /* until it trims */
    struct msgdata *e = msgdata_new("Subject: z\r\n\r\nbody\r\n", 20);
    unsigned char last[8] = {0};
    if (!e || !mailbox_append(mb, e, 0, 0, 0, 0)) break;
    last[mb->count - 1] = 1;
    mailbox_expunge(mb, last);
  }
  CHECK(mb->expunge_log_from > after + 1);   /* the oldest went (no watcher keeps them) */
  CHECK(mb->nexpunged <= IMAPMEM_EXPUNGE_LOG + mb->count);
  CHECK(mailbox_expunged_since(mb, after) && !mailbox_expunged_since(mb, mb->modseq));
  mailbox_forget_expunged(mb);
  CHECK(mailbox_expunged_since(mb, mb->modseq - 1) && !mailbox_expunged_since(mb, mb->modseq));
  mailbox_unref(mb);
}

int main(void) {
  test_parse_uint();
  test_address_spans();
  test_parser();
  test_seqset();
  test_dollar_and_partial();
  test_flags();
  test_dates();
  test_mbox();
  test_mbox_in_place();
  test_mbox_arriving();
  test_metadata_in_arena();
  test_line_marks();
  test_header_id();
  test_quoted_word();
  test_plain_readers();
  test_commit();
  test_model();
  test_metadata_once();
  test_build_ahead();
  test_expunge_log();
  test_allocation_failures();
  test_append_allocation_failures();
  test_nothing_left_behind();
  test_add_user_race();
  test_no_sigpipe();
  test_stop_with_a_full_pipe();
  test_failed_load_adds_nothing();
  test_substring();
  test_binary();
  test_sort_keys();
  test_hashes();
  test_scram_examples();
  test_cram_md5_example();
  arena_free(&A);
  printf("%d passed, %d failed\n", passed, failed);
  return failed != 0;
}
