/*
** fuzz_mbox.c -- libFuzzer target: the input is an mbox file.
**
** mbox_parse reads it (as imapmem_load does a fixture file), and mbox_parse_file as a file
** arriving in small chunks, which must agree; each message it yields gets its part table
** and ENVELOPE/BODY/BODYSTRUCTURE, which must equal those of a copy of its bytes made
** without the loader's line marks. The batch is committed to a user's INBOX
** (mbox_commit), saved with mbox_save_mailbox (what --save and imapmem_save write), and
** the saved file is parsed and committed again. The server promises that a save and
** a reload give back every message byte for byte, with its UID, flags, keywords and
** INTERNALDATE, and the mailbox's UIDVALIDITY and UIDNEXT: any difference aborts.
*/
#include "../../imapmem.c"
#include "fuzz_util.h"

static char dir[4096];        /* where the saves go: a private folder, removed at exit */

static void remove_dir(void) {
  char path[4200];
  snprintf(path, sizeof path, "%s/INBOX.mbox", dir);
  unlink(path);
  snprintf(path, sizeof path, "%s/arriving.mbox", dir);
  unlink(path);
  rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  const char *tmp = getenv("TMPDIR");
  struct stat st;
  if (!tmp || !*tmp) tmp = stat("/dev/shm", &st) == 0 ? "/dev/shm" : "/tmp";
  snprintf(dir, sizeof dir, "%s/imapmem-fuzz-mbox-XXXXXX", tmp);
  if (!mkdtemp(dir)) {
    perror("fuzz_mbox: mkdtemp");
    exit(2);
  }
  atexit(remove_dir);
  return 0;
}

/* The part table (and for the first messages, the renderings) made with the loader's
   line marks equal those of a copy of the bytes, which has none. */
FZ void same_as_unmarked(struct msgdata *d) {
  struct msgdata *c = msgdata_new(d->bytes, d->size);
  if (!c) return;
  const struct msgmeta *m = atomic_load(&d->meta), *cm = msgdata_meta(c);
  if (m && cm && (m->nparts != cm->nparts ||
                  memcmp(m->parts, cm->parts, sizeof *m->parts * (size_t)m->nparts) != 0))
    fz_fail("the part table made with the loader's line marks differs from without", d->bytes,
            d->size);
  const struct rendered *r = m ? &m->rendered : NULL, *cr = msgdata_rendered(c, RENDER_ALL);
  if (r && cr && atomic_load(&r->bodystructure) &&
      (strcmp(r->body, cr->body) || strcmp(r->bodystructure, cr->bodystructure)))
    fz_fail("BODYSTRUCTURE made with the loader's line marks differs from without", d->bytes,
            d->size);
  msgdata_unref(c);
}

/*
** The same bytes read as a file that arrives in chunks (issue 15's loader: parsed up to the
** last message boundary read so far), by a helper thread or not, chunk sizes from 1 byte
** on: the same outcome and the same messages as parsed whole. want is the whole parse's
** batch (NULL if it failed with code rc).
*/
FZ void same_when_arriving(const char *p, size_t n, const struct mbox_batch *want, int rc) {
  char path[4200];
  snprintf(path, sizeof path, "%s/arriving.mbox", dir);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0 || write(fd, p, n) != (ssize_t)n) abort();
  close(fd);
  mbox_chunk = 1 + n % 61;
  mbox_reader_from = n % 2 ? 0 : SIZE_MAX;
  struct mbox_batch *b = NULL;
  char err[600];
  int got = mbox_parse_file(path, "INBOX", &b, err, sizeof err);
  mbox_chunk = MBOX_CHUNK;
  mbox_reader_from = MBOX_READER_FROM;
  if (got != rc || (!b) != (!want)) fz_fail("a file parsed as it arrives fails otherwise", p, n);
  if (!b) return;
  if (b->n != want->n || b->content_validity != want->content_validity)
    fz_fail("a file parsed as it arrives has other messages or another UIDVALIDITY", p, n);
  for (size_t i = 0; i < b->n; i++) {
    const struct pending *x = &b->m[i], *y = &want->m[i];
    if (x->d->size != y->d->size || memcmp(x->d->bytes, y->d->bytes, x->d->size) != 0 ||
        x->flags != y->flags || x->xuid != y->xuid)
      fz_fail("a message of a file parsed as it arrives differs", p, n);
  }
  mbox_batch_free(b);
}

/* Parse and commit mbox bytes into a new user's INBOX; NULL if either refused them. */
FZ struct user *load(const char *p, size_t n, int *rc_out) {
  struct mbox_batch *b = NULL;
  char err[600];
  int rc = mbox_parse(p, n, "fuzz.mbox", "INBOX", &b, err, sizeof err);
  *rc_out = rc;
  same_when_arriving(p, n, b, rc);
  if (rc != IMAPMEM_OK) {
    if (b) fz_fail("mbox_parse failed and still returned a batch", p, n);
    return NULL;
  }
  for (size_t i = 0; i < b->n; i++) {
    struct msgdata *d = b->m[i].d;
    if (d->bytes[d->size] != 0 || d->hdr_len != header_length(d->bytes, d->size))
      fz_fail("a loaded message's size or header length is wrong", d->bytes, d->size);
    if (i < 16) msgdata_meta(d);   /* the MIME target does the message model in depth */
    if (i < 2) msgdata_rendered(d, RENDER_ALL);
    if (i < 16) same_as_unmarked(d);
  }
  struct user *u = user_new("u", "p");
  if (!u) abort();
  rc = mbox_commit(u, b, 0, NULL, 0, err, sizeof err);
  mbox_batch_free(b);
  *rc_out = rc;
  if (rc != IMAPMEM_OK) {
    user_free(u);
    return NULL;
  }
  /* the keywords go out in FLAGS responses as they are: each must be an IMAP atom */
  struct mailbox *mb = user_mailbox(u, "INBOX");
  for (int i = 0; mb && i < mb->nkeywords; i++) {
    const char *k = mb->keywords[i];
    int atom = k[0] && k[0] != '\\';
    for (const char *c = k; *c && atom; c++) atom = is_atom_char((unsigned char)*c);
    if (!atom && !fz_verdict("a keyword loaded from an mbox is not an IMAP atom", k, strlen(k))) {
      mailbox_unref(mb);
      user_free(u);
      return NULL;
    }
  }
  mailbox_unref(mb);
  return u;
}

/* The names of a message's keywords, in mailbox order, into out. */
FZ void keyword_names(const struct mailbox *mb, const struct message *m, struct buf *out) {
  buf_reset(out);
  for (int i = 0; i < mb->nkeywords; i++)
    if (m->keywords >> i & 1) {
      buf_adds(out, mb->keywords[i]);
      buf_addc(out, '\n');
    }
}

FZ void differ(const char *what, const char *saved, size_t n, const char *input, size_t in) {
  char why[300];
  snprintf(why, sizeof why, "a save and reload changed %s", what);
  if (fz_is_known(why)) return;
  fz_dump("the input", input, in);
  fz_dump("what was saved", saved, n);
  fz_fail(why, NULL, 0);
}

FZ void compare(struct mailbox *a, struct mailbox *b, const char *saved, size_t sn,
                const char *in, size_t inn) {
  char what[200];
  if (a->count != b->count) {
    snprintf(what, sizeof what, "the message count (%zu, then %zu)", a->count, b->count);
    differ(what, saved, sn, in, inn);
    return;
  }
  if (a->uidvalidity != b->uidvalidity || a->uidnext != b->uidnext) {
    snprintf(what, sizeof what, "UIDVALIDITY/UIDNEXT (%u %u, then %u %u)", a->uidvalidity,
             a->uidnext, b->uidvalidity, b->uidnext);
    differ(what, saved, sn, in, inn);
    return;
  }
  struct buf ka = {0}, kb = {0};
  for (size_t i = 0; i < a->count; i++) {
    const struct message *x = &a->msgs[i], *y = &b->msgs[i];
    const char *field = NULL;
    if (x->data->size != y->data->size || memcmp(x->data->bytes, y->data->bytes, x->data->size))
      field = x->data->size && x->data->bytes[x->data->size - 1] == '\r'
                  ? "a message's bytes (one ending in a bare CR)" : "a message's bytes";
    else if (x->uid != y->uid) field = "a message's UID";
    else if (x->flags != y->flags) field = "a message's flags";
    else if (x->internaldate != y->internaldate || x->tz != y->tz) field = "a message's INTERNALDATE";
    else {
      keyword_names(a, x, &ka);
      keyword_names(b, y, &kb);
      if (ka.len != kb.len || (ka.len && memcmp(ka.p, kb.p, ka.len))) field = "a message's keywords";
    }
    if (field) {
      snprintf(what, sizeof what, "%s (message %zu: %zu then %zu bytes, UID %u/%u, flags %u/%u, "
               "date %lld%+d/%lld%+d)", field, i + 1, (size_t)x->data->size,
               (size_t)y->data->size, x->uid, y->uid, x->flags, y->flags,
               (long long)x->internaldate, x->tz, (long long)y->internaldate, y->tz);
      differ(what, saved, sn, in, inn);
      break;
    }
  }
  buf_free(&ka);
  buf_free(&kb);
}

/*
** A known finding (see fz_is_known) that is a hang, not a failed check, so it cannot be
** let through when found: with "X-Imapmem-Eol list" in IMAPMEM_FUZZ_KNOWN, skip inputs
** with an X-Imapmem-Eol line on which mbox_apply_eol's walk of an "lf=" list would stop
** making progress ("lf=1x", "lf=2,- 5x": strtoul parses nothing and the loop spins).
** This runs the same walk, on the rest of the line after each "lf=".
*/
FZ int eol_list_hangs(const char *p, size_t n) {
  if (!fz_is_known("X-Imapmem-Eol list")) return 0;
  static const char name[] = "x-imapmem-eol";
  char list[4096];
  for (size_t i = 0; i + sizeof name - 1 <= n; i++) {
    if (strncasecmp(p + i, name, sizeof name - 1) != 0) continue;
    for (size_t j = i; j + 3 <= n && p[j] != '\n'; j++) {
      if (strncmp(p + j, "lf=", 3) != 0) continue;
      size_t k = 0;
      for (size_t q = j + 3; q < n && p[q] && p[q] != '\n' && k + 1 < sizeof list; q++)
        list[k++] = p[q];
      list[k] = 0;
      for (const char *l = list; *l && *l != ' ';) {
        char *e;
        strtoul(l, &e, 10);
        if (*e == '-') strtoul(e + 1, &e, 10);
        const char *next = *e == ',' ? e + 1 : e;
        if (next == l) return 1;
        l = next;
      }
    }
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *in = (const char *)data;
  int rc;
  if (eol_list_hangs(in, size)) return 0;
  struct user *u = load(in, size, &rc);
  if (!u) return 0;
  struct mailbox *mb = user_mailbox(u, "INBOX");
  if (!mb) fz_fail("a load made no INBOX", in, size);
  char err[600], path[4200];
  if (mbox_save_mailbox(mb, "INBOX", dir, err, sizeof err) != IMAPMEM_OK) {
    fprintf(stderr, "fuzz_mbox: %s\n", err);
    fz_fail("mbox_save_mailbox failed", in, size);
  }
  snprintf(path, sizeof path, "%s/INBOX.mbox", dir);
  char *saved = NULL;
  size_t sn = 0;
  if (!file_read(path, &saved, &sn, err, sizeof err)) {
    fprintf(stderr, "fuzz_mbox: %s\n", err);
    abort();
  }
  struct user *u2 = load(saved, sn, &rc);
  if (!u2) {
    char why[100];
    snprintf(why, sizeof why, "a saved mailbox does not load again (code %d)", rc);
    fz_dump("the input", in, size);
    fz_fail(why, saved, sn);
  }
  struct mailbox *mb2 = user_mailbox(u2, "INBOX");
  compare(mb, mb2, saved, sn, in, size);
  mailbox_unref(mb);
  mailbox_unref(mb2);
  user_free(u);
  user_free(u2);
  free(saved);
  return 0;
}
