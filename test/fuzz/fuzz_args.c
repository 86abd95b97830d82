/*
** fuzz_args.c -- libFuzzer target: command arguments and the small parsers under them.
**
** The first byte picks what the rest is (byte % 8; bit 8 is the UID form or a variant):
**   0 SEARCH keys, [CHARSET x] first: search_parse_list, then cmd_search on a session
**     that has INBOX (or, with bit 16, the MIME corpus) examined. Checks: the response is
**     well-formed, its numbers ascend and exist, the string keys' needles agree with the
**     obvious search, and SEARCH NOT (keys) answers exactly the other messages.
**   1 FETCH arguments (sequence set, then an attribute, a list of them or a macro):
**     parsed as cmd_fetch does, then cmd_fetch on that read-only session; the response
**     must be well-formed.
**   2 a sequence set: parse_seqset and seqset_resolve.
**   3 a flag list (bare form with bit 8): parse_flags; no duplicates, no \Recent.
**   4 dates: parse_date_time (formatted and parsed again, it must be the same instant and
**     zone), parse_date (likewise), date_parse (RFC 5322: its reading of the usual form
**     must agree with its word by word one) and mbox_from_date.
**   5 a mailbox name and a LIST pattern, separated by NUL: parse_mailbox, parse_list_mailbox,
**     mailbox_name_invalid, and list_match against an obvious backtracking matcher.
**   6 a needle and a text, separated by NUL: needle_find against the obvious search.
**   7 a header field value: base64, quoted-printable and RFC 2047 decoding, Content-Type
**     parameters (RFC 2231), and the BODYSTRUCTURE/ENVELOPE pieces made from it (params,
**     disposition, language, address list), which must follow RFC 3501's grammar.
*/
#include "../../imapmem.c"
#include "fuzz_util.h"

static struct imapmem *srv;
static struct session *inbox, *mime;   /* INBOX and Mime, examined (read-only) */
static struct arena A;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  struct imapmem_config cfg = {0};
  cfg.uidvalidity = 1;
  size_t n1, n2, n3;
  char *basic = fz_fixture_bytes("basic.mbox", &n1);
  char *search = fz_fixture_bytes("search.mbox", &n2);
  char *corpus = fz_fixture_bytes("mime/corpus.mbox", &n3);
  if (imapmem_new(&cfg, &srv) || imapmem_add_user(srv, "test", "test") ||
      imapmem_load_mbox(srv, "test", "INBOX", basic, n1, "basic.mbox") ||
      imapmem_load_mbox(srv, "test", "INBOX", search, n2, "search.mbox") ||
      imapmem_load_mbox(srv, "test", "Mime", corpus, n3, "corpus.mbox")) {
    fprintf(stderr, "fuzz_args: %s\n", imapmem_errmsg(srv));
    exit(2);
  }
  free(basic);
  free(search);
  free(corpus);
  inbox = fz_session(srv, "test", "INBOX", 1);
  mime = fz_session(srv, "test", "Mime", 1);
  if (!inbox || !mime) {
    fprintf(stderr, "fuzz_args: cannot examine the mailboxes\n");
    exit(2);
  }
  return 0;
}

/* ------------------------------------------------------------------------- */
/* Run a handler as session_execute would, with the arguments args; its tagged status. */
FZ const char *run_handler(struct session *s, const char *name, int uid, const char *args,
                           size_t n) {
  struct command c;
  memset(&c, 0, sizeof c);
  buf_reset(&s->cmd);
  buf_addc(&s->cmd, ' ');
  buf_add(&s->cmd, args, n);
  c.tag = "a";
  c.def = command_find(str_make(name, strlen(name)));
  c.uid = uid;
  c.ps.p = s->cmd.p;
  c.ps.end = s->cmd.p + s->cmd.len;
  c.ps.arena = &s->arena;
  fz_capture_reset();
  c.def->handler(s, &c);
  fz_io_flush(s);
  arena_free(&s->arena);
  if (!c.status) fz_fail("a handler gave no tagged reply", args, n);
  if (!fz_cap_over) fz_require_stream(fz_cap.p ? fz_cap.p : "", fz_cap.len, NULL);
  return c.status;
}

/*
** The numbers of the "* SEARCH" line in fz_cap, as a bitmap over 1..max: 1; 0 if there is
** none (-1 if there is an ESEARCH response instead: RETURN options, not compared).
*/
FZ int search_result(unsigned char *bits, uint32_t max) {
  memset(bits, 0, max + 1);
  const char *p = fz_cap.p ? fz_cap.p : "", *e = p + fz_cap.len;
  const char *l = p;
  while (l < e && !((size_t)(e - l) >= 8 && memcmp(l, "* SEARCH", 8) == 0)) {
    const char *nl = memchr(l, '\n', (size_t)(e - l));
    l = nl ? nl + 1 : e;
  }
  if (l >= e) return fz_cap.len >= 9 && strstr(fz_cap.p, "* ESEARCH") ? -1 : 0;
  const char *q = l + 8;
  uint64_t last = 0;
  while (q + 1 < e && *q == ' ' && q[1] != '(') {
    uint64_t v = 0;
    const char *s = ++q;
    while (q < e && *q >= '0' && *q <= '9') v = v * 10 + (uint64_t)(*q++ - '0');
    if (q == s || v == 0 || v > max) fz_fail("a SEARCH result that is no message", l, (size_t)(q - l));
    if (v <= last) fz_fail("SEARCH results that do not ascend", l, (size_t)(q - l));
    bits[v] = 1;
    last = v;
  }
  if (q + 9 <= e && memcmp(q, " (MODSEQ ", 9) == 0) {   /* CONDSTORE (RFC 7162 3.1.5) */
    q += 9;
    while (q < e && *q >= '0' && *q <= '9') q++;
    if (q < e && *q == ')') q++;
  }
  if (q + 2 > e || q[0] != '\r' || q[1] != '\n') fz_fail("a malformed SEARCH line", l, (size_t)(q - l));
  return 1;
}

/* Every string key's needle finds what the obvious search finds, in each message. */
FZ void check_needles(const struct skey *k, struct session *s) {
  for (; k; k = k->next) {
    if (k->op == SK_AND || k->op == SK_OR || k->op == SK_NOT) check_needles(k->child, s);
    if (k->op != SK_HEADER && k->op != SK_BODY && k->op != SK_TEXT) continue;
    for (size_t i = 0; i < s->mb->count && i < 4; i++) {
      const struct msgdata *d = s->mb->msgs[i].data;
      const char *x = needle_find(&k->needle, d->bytes, d->size);
      const char *y = fz_naive_find(k->value.p, k->value.len, d->bytes, d->size);
      if (x != y) fz_fail("needle_find and the obvious search disagree", k->value.p, k->value.len);
    }
  }
}

FZ void do_search(struct session *s, const char *p, size_t n, int uid) {
  struct parser ps = {p, p + n, &A, NULL};
  struct str w, cs;
  size_t keys_at = 0;
  int charset_ok = 1;
  struct skey *keys = NULL;
  if (parse_run(&ps, is_atom_char, &w) && str_ieq(w, "CHARSET")) {
    if (!parse_sp(&ps) || !parse_astring(&ps, &cs) || !parse_sp(&ps)) {
      run_handler(s, "SEARCH", uid, p, n);
      return;
    }
    charset_ok = str_ieq(cs, "US-ASCII") || str_ieq(cs, "UTF-8");
    keys_at = (size_t)(ps.p - p);
  } else {
    ps.p = p;
  }
  if (parse_run(&ps, is_atom_char, &w) && str_ieq(w, "RETURN")) {   /* ESEARCH: the */
    run_handler(s, "SEARCH", uid, p, n);                            /* handler's own */
    return;
  }
  ps.p = p + keys_at;
  keys = search_parse_list(&ps, 0, 0);
  if (keys && !parse_at_end(&ps)) fz_fail("search_parse_list stopped before the end", p, n);
  if (keys) check_needles(keys, s);
  const char *st = run_handler(s, "SEARCH", uid, p, n);
  if (!keys) {
    if (charset_ok && strcmp(st, "BAD") != 0)
      fz_fail("SEARCH keys that do not parse, not answered BAD", p, n);
    return;
  }
  if (strcmp(st, "OK") != 0) return;       /* an unsupported CHARSET: NO */
  uint32_t max = uid ? s->view[s->nview - 1].uid : (uint32_t)s->nview;
  unsigned char *yes = calloc(max + 1, 1), *no = calloc(max + 1, 1);
  if (!yes || !no) abort();
  int got = search_result(yes, max);
  if (got == 0) fz_fail("SEARCH answered OK without * SEARCH", p, n);
  if (got < 0) {
    free(yes);
    free(no);
    return;
  }
  /* SEARCH [CHARSET x] NOT (keys): exactly the others */
  struct buf neg = {0};
  buf_add(&neg, p, keys_at);
  buf_adds(&neg, "NOT (");
  buf_add(&neg, p + keys_at, n - keys_at);
  buf_addc(&neg, ')');
  if (strcmp(run_handler(s, "SEARCH", uid, neg.p, neg.len), "OK") == 0) {
    search_result(no, max);
    for (size_t i = 0; i < s->nview; i++) {
      uint32_t v = uid ? s->view[i].uid : (uint32_t)i + 1;
      if (yes[v] == no[v]) fz_fail(yes[v] ? "a message matches both the keys and NOT the keys"
                                          : "a message matches neither the keys nor NOT the keys",
                                   p, n);
    }
  }
  buf_free(&neg);
  free(yes);
  free(no);
}

/* cmd_fetch's grammar: sequence-set SP (macro / att / "(" att *(SP att) ")"), to the end. */
FZ int fetch_args_parse(const char *p, size_t n) {
  struct parser ps = {p, p + n, &A, NULL};
  struct seqset set;
  struct fetch_item *items = NULL, **tail = &items;
  if (!parse_seqset(&ps, &set) || !parse_sp(&ps)) return 0;
  const char *save = ps.p;
  struct str w;
  if (parse_run(&ps, is_atom_char, &w) && (str_ieq(w, "ALL") || str_ieq(w, "FAST") ||
                                           str_ieq(w, "FULL"))) {
  } else {
    ps.p = save;
    if (parse_char(&ps, '(')) {
      do {
        if (!fetch_parse_att(&ps, &tail)) return 0;
      } while (parse_char(&ps, ' '));
      if (!parse_char(&ps, ')')) return 0;
    } else if (!fetch_parse_att(&ps, &tail)) {
      return 0;
    }
  }
  if (parse_peek(&ps, ' ')) return -1;   /* fetch modifiers (RFC 4466 2.4): cmd_fetch's call */
  if (!parse_end(&ps)) return 0;
  for (struct fetch_item *it = items; it; it = it->next) {
    if (it->kind == FI_SECTION && (!it->echo || it->npath > IMAPMEM_MAX_DEPTH ||
                                   it->nfields > it->capfields))
      fz_fail("a malformed body section item", p, n);
  }
  return 1;
}

FZ void do_fetch(struct session *s, const char *p, size_t n, int uid) {
  int parsed = fetch_args_parse(p, n);
  const char *st = run_handler(s, "FETCH", uid, p, n);
  if (parsed == 0 && strcmp(st, "BAD") != 0) fz_fail("FETCH arguments that do not parse, not BAD", p, n);
}

FZ void do_seqset(const char *p, size_t n, uint32_t max) {
  struct parser ps = {p, p + n, &A, NULL};
  struct seqset set;
  if (!parse_seqset(&ps, &set)) return;
  seqset_resolve(&set, max);
  for (size_t i = 0; i < set.n; i++)
    if (set.r[i].lo > set.r[i].hi || (max && (set.r[i].lo == 0 || set.r[i].hi == 0)))
      fz_fail("a resolved sequence range out of order or with a '*' left", p, n);
  for (uint32_t v = 0; v < 40; v++) {
    int in = 0;
    for (size_t i = 0; i < set.n; i++) in |= v >= set.r[i].lo && v <= set.r[i].hi;
    if (in != seqset_contains(&set, v)) fz_fail("seqset_contains is wrong", p, n);
  }
}

FZ void do_flags(const char *p, size_t n, int bare) {
  struct parser ps = {p, p + n, &A, NULL};
  struct flag_list fl;
  if (!parse_flags(&ps, &fl, bare)) return;
  if (fl.flags & ~(uint32_t)FLAGS_SYSTEM) fz_fail("a flag outside the system flags", p, n);
  if (fl.nkw < 0 || fl.nkw > IMAPMEM_MAX_KEYWORDS) fz_fail("too many keywords", p, n);
  for (int i = 0; i < fl.nkw; i++) {
    struct str k = fl.kw[i];
    if (!k.len || k.p[0] == '\\') fz_fail("an empty keyword or a \\flag as keyword", k.p, k.len);
    for (size_t j = 0; j < k.len; j++)
      if (!is_atom_char((unsigned char)k.p[j])) fz_fail("a keyword that is no atom", k.p, k.len);
    for (int j = 0; j < i; j++)
      if (fl.kw[j].len == k.len && strncasecmp(fl.kw[j].p, k.p, k.len) == 0)
        fz_fail("a keyword given twice", k.p, k.len);
  }
}

FZ void do_dates(const char *p, size_t n) {
  struct parser ps = {p, p + n, &A, NULL};
  int64_t t, t2, days, days2;
  int tz, tz2;
  if (parse_date_time(&ps, &t, &tz)) {
    struct buf b = {0};
    date_time_format(&b, t, tz);
    struct parser again = {b.p, b.p + b.len, &A, NULL};
    char why[200];
    snprintf(why, sizeof why, "a date-time that does not survive formatting: %s", b.p);
    if (!parse_date_time(&again, &t2, &tz2) || !parse_at_end(&again) || t2 != t || tz2 != tz)
      fz_verdict(why, p, n);
    buf_free(&b);
  }
  ps.p = p;
  if (parse_date(&ps, &days)) {
    int y, m, d;
    civil_from_days(days, &y, &m, &d);
    char text[64];
    snprintf(text, sizeof text, "%d-%s-%04d", d, month_names[m - 1], y);
    struct parser again = {text, text + strlen(text), &A, NULL};
    if (!parse_date(&again, &days2) || days2 != days)
      fz_fail("a date that does not survive formatting", text, strlen(text));
  }
  if (date_parse(str_make(p, n), &t, &tz)) {
    if (tz < -99 * 60 - 99 || tz > 99 * 60 + 99) fz_fail("a zone out of range", p, n);
  }
  int64_t tw;
  int tzw;
  if (date_parse_usual(str_make(p, n), &t, &tz) &&
      (!date_parse_words(str_make(p, n), &tw, &tzw) || tw != t || tzw != tz))
    fz_fail("the usual date's reading differs from the word by word one", p, n);
  char from[600];
  int k = snprintf(from, sizeof from, "From x %.*s", (int)(n > 500 ? 500 : n), p);
  mbox_from_date(from, (size_t)k < sizeof from ? (size_t)k : sizeof from - 1, &t, &tz);
}

/* The obvious LIST matcher: '*' anything, '%' anything but '/'. memo: -1 unknown. */
FZ int naive_match(const char *pat, const char *name, size_t i, size_t j, size_t nn,
                   signed char *memo) {
  signed char *m = &memo[i * (nn + 1) + j];
  if (*m >= 0) return *m;
  int r;
  if (!pat[i]) r = !name[j];
  else if (pat[i] == '*') r = naive_match(pat, name, i + 1, j, nn, memo) ||
                              (name[j] && naive_match(pat, name, i, j + 1, nn, memo));
  else if (pat[i] == '%') r = naive_match(pat, name, i + 1, j, nn, memo) ||
                              (name[j] && name[j] != '/' && naive_match(pat, name, i, j + 1, nn, memo));
  else r = name[j] == pat[i] && naive_match(pat, name, i + 1, j + 1, nn, memo);
  *m = (signed char)r;
  return r;
}

FZ void do_mailbox(const char *p, size_t n) {
  const char *z = memchr(p, 0, n);
  size_t an = z ? (size_t)(z - p) : n;
  struct parser ps = {p, p + an, &A, NULL};
  const char *name;
  if (parse_mailbox(&ps, &name)) {
    size_t len = strlen(name);
    if (len > MAX_MAILBOX_NAME || strpbrk(name, "\r\n")) fz_fail("a bad mailbox name", name, len);
    if (len > 1 && name[len - 1] == '/') fz_fail("a mailbox name ending in /", name, len);
    if (len >= 5 && strncasecmp(name, "INBOX", 5) == 0 && (len == 5 || name[5] == '/') &&
        strncmp(name, "INBOX", 5) != 0)
      fz_fail("INBOX not made canonical", name, len);
    mailbox_name_invalid(name);
  }
  ps.p = p;
  struct str pat;
  if (!parse_list_mailbox(&ps, &pat)) return;
  char *pc = arena_strndup(&A, pat.p, pat.len);
  const char *nm = z ? z + 1 : "";
  size_t nn = z ? strnlen(nm, n - an - 1) : 0;
  char *nc = arena_strndup(&A, nm, nn);
  size_t pn = strlen(pc);
  nn = strlen(nc);
  if (pn > 300 || nn > 300) return;
  signed char *memo = arena_alloc(&A, (pn + 1) * (nn + 1));
  memset(memo, -1, (pn + 1) * (nn + 1));
  if (list_match(pc, nc) != naive_match(pc, nc, 0, 0, nn, memo))
    fz_fail("list_match disagrees with the obvious matcher", p, n);
  list_match_name(pc, nc);
}

FZ void do_needle(const char *p, size_t n) {
  const char *z = memchr(p, 0, n);
  size_t m = z ? (size_t)(z - p) : n / 3;
  const char *hay = z ? z + 1 : p + m;
  size_t hn = (size_t)(p + n - hay);
  struct needle nd;
  if (!needle_init(&nd, str_make(p, m), &A)) return;
  if (needle_find(&nd, hay, hn) != fz_naive_find(p, m, hay, hn))
    fz_fail("needle_find and the obvious search disagree", p, n);
  if (m <= 64 && hn) {       /* a longer text of the same pattern: the KMP part takes over */
    struct buf big = {0};
    while (big.len < 8192) buf_add(&big, hay, hn);
    if (needle_find(&nd, big.p, big.len) != fz_naive_find(p, m, big.p, big.len))
      fz_fail("needle_find and the obvious search disagree (repeated text)", p, n);
    buf_free(&big);
  }
}

/* A piece of BODYSTRUCTURE or ENVELOPE, rendered into b, follows the grammar. */
FZ void require_piece(struct buf *b, const char *(*check)(const struct fz_tree *, int),
                      const char *in, size_t n) {
  struct fz_tree t = {0};
  int root = fz_sexp_parse(&t, b->p ? b->p : "", b->len);
  const char *why = root < 0 ? t.err : check(&t, root);
  if (why) {
    fz_dump("rendered", b->p ? b->p : "", b->len);
    fz_verdict(why, in, n);
  }
  fz_sexp_free(&t);
  buf_reset(b);
}

FZ const char *check_dsp(const struct fz_tree *t, int i) {
  if (fz_is(t, i, FZ_NIL)) return NULL;
  if (!fz_is(t, i, FZ_LIST) || t->v[i].count != 2 || !fz_is(t, fz_child(t, i, 0), FZ_STR))
    return "a body disposition that is not NIL or (string params)";
  return fz_check_params(t, fz_child(t, i, 1));
}

FZ const char *check_lang(const struct fz_tree *t, int i) {
  if (fz_nstring(t, i)) return NULL;
  if (!fz_is(t, i, FZ_LIST) || t->v[i].count == 0) return "a body language that is not valid";
  for (int c = t->v[i].first; c >= 0; c = t->v[c].next)
    if (!fz_is(t, c, FZ_STR)) return "a body language that is not a string";
  return NULL;
}

FZ const char *check_nstring(const struct fz_tree *t, int i) {
  return fz_nstring(t, i) ? NULL : "a field that is not an nstring";
}

FZ void do_decode(const char *p, size_t n, int variant) {
  struct buf out = {0};
  base64_decode(p, n, &out, variant);
  if (out.len > n * 3 / 4 + 3) fz_fail("base64 decoded to more than it can", p, n);
  buf_reset(&out);
  qp_decode(p, n, &out, variant);
  if (out.len > n) fz_fail("quoted-printable decoded to more than it can", p, n);
  buf_reset(&out);
  rfc2047_decode(str_make(p, n), &out);
  buf_reset(&out);
  latin1_to_utf8(p, n, &out);
  if (out.len > 2 * n) fz_fail("latin1_to_utf8 grew more than twice", p, n);
  buf_reset(&out);
  /* Content-Type and its parameters, as BODYSTRUCTURE writes them */
  struct ctype ct;
  ctype_parse(str_make(p, n), !variant, &ct);
  struct buf v = {0};
  ctype_param(&ct, "charset", &v);
  ctype_param(&ct, "boundary", &v);
  ctype_param(&ct, "name", &v);
  buf_free(&v);
  out_params(&out, &ct, n & 1);
  require_piece(&out, fz_check_params, p, n);
  ctype_free(&ct);
  /* the other pieces read from the header fields */
  struct headers hs;
  memset(&hs, 0, sizeof hs);
  for (int i = 0; i < H_COUNT; i++) {
    hs.v[i] = str_make(p, n);
    hs.have[i] = 1;
  }
  out_disposition(&out, &hs);
  require_piece(&out, check_dsp, p, n);
  out_language(&out, &hs);
  require_piece(&out, check_lang, p, n);
  out_field(&out, &hs, H_SUBJECT);
  require_piece(&out, check_nstring, p, n);
  struct addrs as = {0};
  addrs_parse(str_make(p, n), &as, H_TO);
  out_addrs(&out, &as, H_TO);
  addrs_free(&as);
  require_piece(&out, fz_check_address_list, p, n);
  struct buf text = {0};
  address_search_text(str_make(p, n), &text);
  buf_free(&text);
  /* a header in which every ENVELOPE field has the input as its value */
  struct buf h = {0};
  for (int i = 0; i < H_COUNT; i++) {
    buf_adds(&h, header_names[i].name);
    buf_adds(&h, ": ");
    buf_add(&h, p, n);
    buf_adds(&h, "\r\n");
  }
  out_envelope(&out, h.p, h.p + h.len);
  buf_free(&h);
  require_piece(&out, fz_check_envelope, p, n);
  buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  int mode = data[0] % 8, flag = (data[0] & 8) != 0;
  struct session *s = data[0] & 16 ? mime : inbox;
  const char *p = (const char *)data + 1;
  size_t n = size - 1;
  switch (mode) {
  case 0: do_search(s, p, n, flag); break;
  case 1: do_fetch(s, p, n, flag); break;
  case 2: do_seqset(p, n, data[0] >> 4); break;
  case 3: do_flags(p, n, flag); break;
  case 4: do_dates(p, n); break;
  case 5: do_mailbox(p, n); break;
  case 6: do_needle(p, n); break;
  case 7: do_decode(p, n, flag); break;
  }
  arena_free(&A);
  return 0;
}
