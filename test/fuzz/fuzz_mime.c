/*
** fuzz_mime.c -- libFuzzer target: the input is one message, as APPEND stores it.
**
** It goes through the message model the way FETCH and SEARCH use it: the part table
** (msgdata_meta), ENVELOPE/BODY/BODYSTRUCTURE (msgdata_rendered), every body section of
** every part (BODY[p], [p.MIME], [p.HEADER], [p.TEXT], [p.HEADER.FIELDS (..)] and .NOT,
** partial), parsed by fetch_parse_att and written by fetch_one, and the text SEARCH reads
** (part_decoded_text, search_text, search_header). Beyond the sanitizers it checks:
**   - every offset in the part table lies inside the message;
**   - ENVELOPE, BODY and BODYSTRUCTURE follow the grammar of RFC 3501 section 9, and
**     BODY is BODYSTRUCTURE without its extension data;
**   - the octets BODYSTRUCTURE gives each part are the length of BODY[its section];
**   - the FETCH response is well-formed IMAP (fz_check_stream);
**   - needle_find agrees with the obvious search, and SEARCH BODY finds a piece of a text
**     part's decoded text;
**   - ENVELOPE, BODY and BODYSTRUCTURE made with the part table (one header scan, as a first
**     FETCH makes them) equal those made after it (each rendering scanning again).
**
** Build: clang -g -O1 -fsanitize=fuzzer,address,undefined -std=c11 -pthread -I. \
**          test/fuzz/fuzz_mime.c -o build/fuzz/fuzz_mime        (test/fuzz/run.py does it)
*/
#include "../../imapmem.c"
#include "fuzz_util.h"

#define MAX_PATHS 128

static struct session *S;     /* where fetch_one writes; no descriptors */
static struct arena A;        /* the parsed FETCH items of one input */

struct paths {
  uint32_t v[MAX_PATHS][IMAPMEM_MAX_DEPTH];
  int len[MAX_PATHS];
  int n;
};

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  S = calloc(1, sizeof *S);
  if (!S) abort();
  S->io = &fz_io;
  S->fd = S->fd_out = -1;
  S->wake[0] = S->wake[1] = -1;
  return 0;
}

FZ void check_part_table(const struct msgdata *d, const struct msgmeta *mm) {
  uint64_t size = d->size;
  if (mm->nparts < 1) fz_fail("a part table without parts", NULL, 0);
  for (int i = 0; i < mm->nparts; i++) {
    const struct part *pt = &mm->parts[i];
    if ((uint64_t)pt->hdr_off + pt->hdr_len > size || (uint64_t)pt->body_off + pt->body_len > size ||
        (uint64_t)pt->type_off + pt->type_len > size ||
        (uint64_t)pt->subtype_off + pt->subtype_len > size ||
        (uint64_t)pt->cte_off + pt->cte_len > size)
      fz_fail("a part's offsets run past the end of the message", d->bytes, d->size);
    if (pt->child < -1 || pt->child >= mm->nparts || pt->next < -1 || pt->next >= mm->nparts ||
        (pt->child >= 0 && pt->child <= i) || (pt->next >= 0 && pt->next <= i))
      fz_fail("a part's child or sibling index is out of order", d->bytes, d->size);
    if (pt->kind > PART_MESSAGE || pt->cte > CTE_UNKNOWN)
      fz_fail("a part's kind or encoding is out of range", d->bytes, d->size);
  }
}

/* BODY[path] (no text part) of the message. */
FZ size_t section_length(struct msgdata *d, const uint32_t *path, int npath) {
  struct fetch_item it;
  memset(&it, 0, sizeof it);
  memcpy(it.path, path, sizeof path[0] * (size_t)npath);
  it.npath = npath;
  it.text = SEC_ALL;
  struct buf tmp = {0};
  size_t n = fetch_section_bytes(&it, d, &tmp).len;
  buf_free(&tmp);
  return n;
}

FZ int walk_part(const struct fz_tree *t, int node, uint32_t *path, int depth,
                     struct msgdata *d, struct paths *ps);

/*
** The body of a message (the top level, or inside a MESSAGE/RFC822 part at path): each
** part's octets against its section, and its path noted. 0: a known finding.
*/
FZ int walk_entity(const struct fz_tree *t, int node, uint32_t *path, int depth,
                       struct msgdata *d, struct paths *ps) {
  if (depth >= IMAPMEM_MAX_DEPTH) return 1;
  if (fz_is(t, t->v[node].first, FZ_LIST)) {
    uint32_t k = 1;
    for (int c = t->v[node].first; fz_is(t, c, FZ_LIST); c = t->v[c].next, k++) {
      path[depth] = k;
      if (!walk_part(t, c, path, depth + 1, d, ps)) return 0;
    }
    return 1;
  }
  path[depth] = 1;           /* a message's non-multipart body is its part 1 */
  return walk_part(t, node, path, depth + 1, d, ps);
}

FZ int walk_part(const struct fz_tree *t, int node, uint32_t *path, int depth,
                     struct msgdata *d, struct paths *ps) {
  if (ps->n < MAX_PATHS) {
    memcpy(ps->v[ps->n], path, sizeof path[0] * (size_t)depth);
    ps->len[ps->n++] = depth;
  }
  if (fz_is(t, t->v[node].first, FZ_LIST)) {
    uint32_t k = 1;
    for (int c = t->v[node].first; fz_is(t, c, FZ_LIST); c = t->v[c].next, k++) {
      if (depth >= IMAPMEM_MAX_DEPTH) return 1;
      path[depth] = k;
      if (!walk_part(t, c, path, depth + 1, d, ps)) return 0;
    }
    return 1;
  }
  uint64_t octets = t->v[fz_child(t, node, 6)].num;
  size_t got = section_length(d, path, depth);
  if (got != octets) {
    char why[200];
    snprintf(why, sizeof why, "BODYSTRUCTURE gives a part %llu octets, but its section has "
             "%zu bytes (depth %d)", (unsigned long long)octets, got, depth);
    if (!fz_verdict(why, d->bytes, d->size)) return 0;
  }
  if (fz_body_fixed(t, node) == 10) return walk_entity(t, fz_child(t, node, 8), path, depth, d, ps);
  return 1;
}

/* The grammar of ENVELOPE, BODY, BODYSTRUCTURE, and the octets. 0: a known finding. */
FZ int check_rendered(struct msgdata *d, const struct rendered *r, struct paths *ps) {
  struct fz_tree env = {0}, body = {0}, bs = {0};
  const char *e_s = r->envelope, *b_s = r->body, *s_s = r->bodystructure;
  int e = fz_sexp_parse(&env, e_s, strlen(e_s));
  int b = fz_sexp_parse(&body, b_s, strlen(b_s));
  int s = fz_sexp_parse(&bs, s_s, strlen(s_s));
  uint32_t path[IMAPMEM_MAX_DEPTH];
  int ok = fz_verdict(env.err, env.at, env.at ? strlen(env.at) : 0) &&
           fz_verdict(body.err, body.at, body.at ? strlen(body.at) : 0) &&
           fz_verdict(bs.err, bs.at, bs.at ? strlen(bs.at) : 0) &&
           fz_verdict(fz_check_envelope(&env, e), e_s, strlen(e_s)) &&
           fz_verdict(fz_check_body(&body, b, 0, 0), b_s, strlen(b_s)) &&
           fz_verdict(fz_check_body(&bs, s, 1, 0), s_s, strlen(s_s)) &&
           fz_verdict(fz_body_is_stripped(&bs, s, &body, b) ? NULL
                      : "BODY is not BODYSTRUCTURE without extension data", s_s, strlen(s_s)) &&
           walk_entity(&bs, s, path, 0, d, ps);
  fz_sexp_free(&env);
  fz_sexp_free(&body);
  fz_sexp_free(&bs);
  return ok;
}

/* FETCH the given attributes of the message through fetch_parse_att and fetch_one. */
FZ void fetch_atts(struct msgdata *d, const char *atts) {
  struct parser ps = {atts, atts + strlen(atts), &A, NULL};
  struct fetch_item *items = NULL, **tail = &items;
  if (!parse_char(&ps, '(')) abort();
  do {
    if (!fetch_parse_att(&ps, &tail)) {
      fprintf(stderr, "fetch_parse_att: %s\n", ps.err ? ps.err : "?");
      fz_fail("a FETCH attribute the harness built did not parse", atts, strlen(atts));
    }
  } while (parse_char(&ps, ' '));
  if (!parse_char(&ps, ')') || !parse_at_end(&ps)) fz_fail("FETCH attributes", atts, strlen(atts));
  struct fetch_snap snap;
  memset(&snap, 0, sizeof snap);
  snap.seq = 1;
  snap.uid = 7;
  snap.flags = FLAG_SEEN;
  snap.recent = 1;
  snap.internaldate = 1700000000;
  snap.tz = 60;
  snap.data = d;
  char *kw[1] = {NULL};
  fz_capture_reset();
  fetch_one(S, items, fetch_renders(items), &snap, kw, 0, 1);
  fz_io_flush(S);
  if (!fz_cap_over) fz_require_stream(fz_cap.p ? fz_cap.p : "", fz_cap.len, NULL);
}

FZ void fetch_sections(struct msgdata *d, const struct paths *ps, size_t seed) {
  static const char *const texts[] = {
    "", "MIME", "HEADER", "TEXT", "HEADER.FIELDS (Subject Content-Type From)",
    "HEADER.FIELDS.NOT (Received \"content-type\" {4}\r\nDate)"};
  fetch_atts(d, "(UID FLAGS INTERNALDATE RFC822.SIZE ENVELOPE BODY BODYSTRUCTURE RFC822 "
                "RFC822.HEADER RFC822.TEXT BODY.PEEK[] BODY[HEADER] BODY.PEEK[TEXT]<2.9> "
                "BODY[HEADER.FIELDS (To Cc)] BODY[HEADER.FIELDS.NOT (To)])");
  struct buf atts = {0};
  for (int i = 0; i < ps->n && i < 8; i++) {   /* the rest were sized by walk_part */
    buf_reset(&atts);
    buf_addc(&atts, '(');
    for (size_t t = 0; t < sizeof texts / sizeof texts[0]; t++) {
      if (t) buf_addc(&atts, ' ');
      buf_adds(&atts, t % 2 ? "BODY.PEEK[" : "BODY[");
      for (int k = 0; k < ps->len[i]; k++) buf_printf(&atts, "%s%u", k ? "." : "", ps->v[i][k]);
      if (*texts[t]) buf_printf(&atts, "%s%s", ps->len[i] ? "." : "", texts[t]);
      buf_addc(&atts, ']');
      if ((seed + t + (size_t)i) % 3 == 0) buf_printf(&atts, "<%zu.%zu>", seed % 17, 1 + seed % 29);
    }
    /* a sibling that does not exist: an empty string */
    buf_adds(&atts, " BODY[");
    for (int k = 0; k < ps->len[i]; k++)
      buf_printf(&atts, "%s%u", k ? "." : "", ps->v[i][k] + (k == ps->len[i] - 1 ? 1000 : 0));
    buf_adds(&atts, "])");
    if (ps->len[i] == 0) continue;           /* the top level is fetched above */
    fetch_atts(d, atts.p);
  }
  buf_free(&atts);
}

/* SEARCH's view of the text: decoded bodies and headers, and needle_find on them. */
FZ void search_texts(struct msgdata *d, const struct msgmeta *mm, const uint8_t *data,
                         size_t size) {
  struct arena a = {0};
  struct needle fixed[4], own;
  static const char *const words[] = {"=?", "e", "\xc3\xa9t\xc3\xa9", "zebrafish"};
  for (int i = 0; i < 4; i++) needle_init(&fixed[i], str_make(words[i], strlen(words[i])), &a);
  size_t nl = size < 7 ? size : 1 + size % 7;     /* a needle from the input's first bytes */
  needle_init(&own, str_make((const char *)data, nl), &a);
  struct buf dec = {0};
  for (int i = 0; i < mm->nparts; i++) {
    const struct part *pt = &mm->parts[i];
    buf_reset(&dec);
    part_decoded_text(d->bytes, pt, &dec);
    const char *text = dec.p ? dec.p : "";
    int compare = i < 16 && dec.len <= 16384;   /* the obvious search is slow */
    const char *x = needle_find(&own, text, dec.len);
    const char *y = compare ? fz_naive_find((const char *)data, nl, text, dec.len) : x;
    if (x != y) fz_fail("needle_find and the obvious search disagree", text, dec.len);
    if (pt->kind == PART_TEXT && pt->cte != CTE_UNKNOWN && dec.len) {   /* SEARCH BODY finds it */
      size_t off = (size * 31) % dec.len, len = 1 + size % 23;
      if (len > dec.len - off) len = dec.len - off;
      /* whole UTF-8 characters, as a client searches for: folding changes the second byte
         of a two-byte letter, so a piece starting or ending inside one need not match */
      while (len > 1 && ((unsigned char)text[off] & 0xc0) == 0x80) off++, len--;
      while (len > 1 && off + len < dec.len && ((unsigned char)text[off + len] & 0xc0) == 0x80)
        len--;
      while (len > 1 && (unsigned char)text[off + len - 1] >= 0xc0) len--;
      int whole = ((unsigned char)text[off] & 0xc0) != 0x80 &&
                  (unsigned char)text[off + len - 1] < 0xc0 &&
                  (off + len == dec.len || ((unsigned char)text[off + len] & 0xc0) != 0x80);
      struct needle piece;
      if (whole && needle_init(&piece, str_make(text + off, len), &a) &&
          !search_text(d->bytes, mm, &piece, 0))
        fz_fail("SEARCH BODY does not find a piece of a text part's decoded text", text + off, len);
    }
    for (int k = 0; k < 4; k++) {
      const char *p = needle_find(&fixed[k], text, dec.len);
      const char *q = compare ? fz_naive_find(words[k], strlen(words[k]), text, dec.len) : p;
      if (p != q) fz_fail("needle_find and the obvious search disagree", text, dec.len);
    }
    const char *h = d->bytes + pt->hdr_off;
    search_header(h, h + pt->hdr_len, str_make(NULL, 0), &own);
    search_header(h, h + pt->hdr_len, str_make("Subject", 7), &fixed[0]);
  }
  for (int k = 0; k < 4; k++) search_text(d->bytes, mm, &fixed[k], 1);
  search_text(d->bytes, mm, &own, 1);
  buf_free(&dec);
  arena_free(&a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  struct msgdata *d = msgdata_new((const char *)data, size);
  if (!d) return 0;
  if (d->hdr_len > d->size) fz_fail("a header longer than the message", d->bytes, d->size);
  struct msgmeta *mm = msgdata_meta(d);
  const struct rendered *r = msgdata_rendered(d, RENDER_ALL);
  struct msgdata *d2 = msgdata_new((const char *)data, size);   /* rendered as a first FETCH */
  const struct rendered *r2 = d2 ? msgdata_rendered(d2, RENDER_ALL) : NULL;  /* does: from */
  if (r && r2 && (strcmp(r->envelope, r2->envelope) || strcmp(r->body, r2->body) ||  /* the */
                  strcmp(r->bodystructure, r2->bodystructure)))   /* part table's own scan */
    fz_fail("rendering with the part table's header fields differs from without", d->bytes,
            d->size);
  msgdata_unref(d2);
  if (mm && r) {
    static struct paths ps;   /* 32 KB: not allocated for every input */
    ps.n = 0;
    check_part_table(d, mm);
    if (check_rendered(d, r, &ps)) fetch_sections(d, &ps, size);
    search_texts(d, mm, data, size);
    arena_free(&A);
  }
  msgdata_unref(d);
  return 0;
}
