/*
** fuzz_session.c -- libFuzzer target: the whole session input path, bytes in and
** responses out, as a client's connection drives it.
**
** One server for the whole run: user "test" (password "test") with fixtures/basic.mbox
** and the fixtures/tree folder (INBOX, Drafts, Lists, Lists/ietf, Sent, Work/Old,
** Work/Projects), "Mime" (fixtures/mime/corpus.mbox) and "Search" (fixtures/search.mbox);
** user "bob" (password "bob") with an empty INBOX. Each input starts from the loaded
** fixtures again (imapmem_reset), so runs do not depend on each other.
**
** The first byte picks how the session starts (byte % 8), with bit 8 the transcript is on
** (a callback that checks each line), and with bit 16 faults are set on a few commands
** (none that sleeps: NOOP renumbers the mailbox once, CHECK alerts, NAMESPACE answers NO,
** LSUB says BYE, ID drops the connection, the 40th command is BAD); the rest is what the
** client sends:
**   0 not logged in ("* OK" greeting)        1 logged in as test ("* PREAUTH")
**   2-4 logged in, "SELECT INBOX" first      5 logged in, "EXAMINE INBOX" first
**   6 logged in, "SELECT Mime" first         7 logged in, "SELECT Search" first
** The bytes go into a pipe whose write end is then closed; the session reads it through
** section 10's own code (session_new, session_run, then what session_thread does after
** it) in this thread, and writes to a temporary file. Its output must be well-formed IMAP
** (fz_check_stream). Nothing sleeps: no faults are set.
*/
#include "../../imapmem.c"
#include "fuzz_util.h"

static struct imapmem *srv;
static int out_master = -1;   /* the session's output file (unlinked); each run truncates it */
static struct buf output;

FZ void trace_check(void *arg, int session, char dir, const char *line, size_t len) {
  (void)arg;
  (void)session;
  if (dir != 'C' && dir != 'S' && dir != '*') fz_fail("a transcript line of no direction", line, len);
  if (memchr(line, '\n', len)) fz_fail("a transcript line with a line break in it", line, len);
}

FZ void load(const char *user, const char *mailbox, const char *rel) {
  char path[4096];
  int rc;
  fz_fixture(rel, path, sizeof path);
  if (mailbox) {
    size_t n;
    char *bytes = fz_fixture_bytes(rel, &n);
    rc = imapmem_load_mbox(srv, user, mailbox, bytes, n, rel);
    free(bytes);
  } else {
    rc = imapmem_load(srv, user, path);
  }
  if (rc != IMAPMEM_OK) {
    fprintf(stderr, "fuzz_session: %s\n", imapmem_errmsg(srv));
    exit(2);
  }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  struct imapmem_config cfg = {0};
  cfg.uidvalidity = 1;       /* the same UIDVALIDITY in every run */
  if (imapmem_new(&cfg, &srv) || imapmem_add_user(srv, "test", "test") ||
      imapmem_add_user(srv, "bob", "bob")) {
    fprintf(stderr, "fuzz_session: cannot make the server\n");
    exit(2);
  }
  load("test", NULL, "basic.mbox");
  load("test", NULL, "tree");
  load("test", "Mime", "mime/corpus.mbox");
  load("test", "Search", "search.mbox");
  const char *tmp = getenv("TMPDIR");
  struct stat st;
  if (!tmp || !*tmp) tmp = stat("/dev/shm", &st) == 0 ? "/dev/shm" : "/tmp";
  char path[4096];
  snprintf(path, sizeof path, "%s/imapmem-fuzz-session-XXXXXX", tmp);
  out_master = mkstemp(path);
  if (out_master < 0) {
    perror("fuzz_session: mkstemp");
    exit(2);
  }
  unlink(path);
  signal(SIGPIPE, SIG_IGN);  /* as session_thread blocks it; nothing here should raise it */
  return 0;
}

/*
** Every INTERNALDATE the server writes is an RFC 3501 date-time: "dd-Mon-yyyy hh:mm:ss
** +zzzz". Given each piece of a data line's output outside literals (fz_check_stream's
** text): a literal's bytes are a message's, which may say anything, and so may a quoted
** string (a mailbox name, a subject) that ends in `INTERNALDATE `; the item is looked for
** outside them. fz_check_stream has checked that each piece's quotes close in it.
*/
FZ void check_dates(const char *p, size_t n) {
  static const char key[] = "INTERNALDATE \"";
  static const char shape[] = "dd-MMM-dddd dd:dd:dd +dddd\"";  /* d digit, M letter */
  size_t k = sizeof key - 1, m = sizeof shape - 1;
  int in_quote = 0;
  for (size_t i = 0; i < n; i++) {
    if (in_quote) {
      if (p[i] == '\\') i++;
      else if (p[i] == '"') in_quote = 0;
      continue;
    }
    if (p[i] == '"') in_quote = 1;
    if (p[i] != 'I' || i + k > n || memcmp(p + i, key, k) != 0) continue;
    const char *d = p + i + k;
    int ok = i + k + m <= n;
    for (size_t j = 0; ok && j < m; j++) {
      char c = d[j], want = shape[j];
      ok = want == 'd' ? (c >= '0' && c <= '9') || (j == 0 && c == ' ')
         : want == 'M' ? isalpha((unsigned char)c)
         : want == '+' ? c == '+' || c == '-'
         : c == want;
    }
    if (!ok) fz_verdict("an INTERNALDATE that is not an RFC 3501 date-time", p + i,
                        n - i < 60 ? n - i : 60);
    i += k + m - 1;          /* past the date and its closing quote */
  }
}

/*
** How much of the input to send. Each "COPY 1:* INBOX" doubles INBOX, so forty of them in
** one input ask for 2^40 messages: legitimate, but no fuzzer can wait for it. The input
** ends before its ninth "COPY" or "MOVE" (any letter case, anywhere).
*/
FZ size_t bounded_length(const char *p, size_t n) {
  int seen = 0;
  for (size_t i = 0; i + 4 <= n; i++)
    if ((strncasecmp(p + i, "COPY", 4) == 0 || strncasecmp(p + i, "MOVE", 4) == 0) && ++seen > 8)
      return i;
  return n;
}

/* A descriptor to read bytes from: a pipe if they fit, else a temporary file. */
FZ int input_fd(const char *a, size_t an, const char *b, size_t bn) {
  int fds[2];
  if (an + bn <= 65536 && pipe(fds) == 0) {
    ssize_t w1 = write(fds[1], a, an), w2 = bn ? write(fds[1], b, bn) : 0;
    close(fds[1]);
    if (w1 != (ssize_t)an || w2 != (ssize_t)bn) abort();
    return fds[0];
  }
  FILE *f = tmpfile();
  if (!f || fwrite(a, 1, an, f) != an || (bn && fwrite(b, 1, bn, f) != bn) || fflush(f)) abort();
  int fd = dup(fileno(f));
  fclose(f);
  if (fd < 0 || lseek(fd, 0, SEEK_SET) != 0) abort();
  return fd;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  static const char *const prefix[8] = {"", "", "S SELECT INBOX\r\n", "S SELECT INBOX\r\n",
                                        "S SELECT INBOX\r\n", "S EXAMINE INBOX\r\n",
                                        "S SELECT Mime\r\n", "S SELECT Search\r\n"};
  static const char *const faults[] = {"NOOP:1=UIDVALIDITY", "CHECK=ALERT fuzz",
                                       "NAMESPACE=NO [UNAVAILABLE] fuzz", "LSUB=BYE fuzz",
                                       "ID=DROP", "#40=BAD fuzz"};
  int mode = data[0] % 8, trace = (data[0] & 8) != 0, fault = (data[0] & 16) != 0;
  if (imapmem_reset(srv) != IMAPMEM_OK) abort();
  imapmem_set_trace(srv, trace ? trace_check : NULL, NULL);
  imapmem_clear_faults(srv);
  for (size_t i = 0; fault && i < sizeof faults / sizeof faults[0]; i++)
    if (imapmem_fault(srv, faults[i]) != IMAPMEM_OK) abort();
  size_t n = bounded_length((const char *)data + 1, size - 1);
  int in = input_fd(prefix[mode], strlen(prefix[mode]), (const char *)data + 1, n);
  if (ftruncate(out_master, 0) != 0 || lseek(out_master, 0, SEEK_SET) != 0) abort();
  int out = dup(out_master);
  if (out < 0) abort();

  /* what server_add_session and session_thread do, in this thread */
  struct session *s = session_new(srv, in, out);
  if (!s) abort();
  if (mode != 0 && !(s->preauth = mem_strdup("test"))) abort();
  s->id = 1;
  atomic_fetch_add(&srv->nactive, 1);
  session_run(s);
  session_close(s);
  atomic_fetch_sub(&srv->nactive, 1);
  atomic_store(&s->finished, 1);
  store_changed(srv);
  session_free(s);

  /* what the client received */
  struct stat st;
  if (fstat(out_master, &st) != 0) abort();
  n = (size_t)st.st_size;
  if (n <= (64u << 20)) {
    buf_reset(&output);
    if (!buf_reserve(&output, n)) abort();
    if (n && pread(out_master, output.p, n, 0) != (ssize_t)n) abort();
    output.len = n;
    fz_require_stream(output.p ? output.p : "", n, check_dates);
  }
  return 0;
}
