/*
** imapmem.c -- an in-memory IMAP4rev1 server for unit tests, test harnesses and teaching.
**
** One file holds the library and the program. It loads mailboxes from mbox fixtures,
** keeps mailboxes, messages, UIDs and flags in memory, and serves many clients at once,
** one thread per connection. It speaks RFC 3501 and the extensions real clients expect.
** Dependencies: libc and POSIX threads; OpenSSL too only in the opt-in TLS build
** (-DIMAPMEM_TLS, make TLS=openssl). The public API is imapmem.h; everything else is
** static. main() is compiled only with -DIMAPMEM_MAIN.
**
** The file reads bottom-up: each section calls only the sections before it (its banner
** says which), and a function is defined before it is used, so no prototypes are needed
** but for two functions that call each other. test/check_layering.py keeps it so.
**    0  types and limits
**    1  buffers and strings
**    2  the message model: RFC 5322 headers, MIME tree, ENVELOPE and BODYSTRUCTURE
**    3  the store: users, mailboxes, messages, UIDs, flags, change log
**    4  mbox load and save
**    5  the command parser
**    6  responses and the session's view
**    7  SEARCH
**    8  FETCH
**    9  command handlers and the command table
**   10  sessions and network
**   11  the public API
**   12  main (under IMAPMEM_MAIN)
*/
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE

#include "imapmem.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <iconv.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#ifdef IMAPMEM_TLS           /* the opt-in TLS build: make TLS=openssl (section 10) */
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#endif

/*
** ===========================================================================
** 0  Types and limits
** ===========================================================================
** Every struct, so that any section can name any type; the comment on each says which
** section owns it. Limits can be overridden at build time (-DIMAPMEM_MAX_LINE=...).
*/
#define IMAPMEM_VERSION "0.2.0"

#ifndef IMAPMEM_MAX_LINE
#define IMAPMEM_MAX_LINE 65536          /* a command line, literals excluded (RFC 2683 3.2.1.5) */
#endif
#ifndef IMAPMEM_MAX_LITERAL
#define IMAPMEM_MAX_LITERAL (64u << 20) /* default for config.max_literal */
#endif
#define IMAPMEM_MAX_LITERAL_LIMIT (1u << 30)  /* the largest config.max_literal */
#define LITERAL_MINUS_MAX 4096  /* the largest {n+} literal of a LITERAL- server (RFC 7888 5) */
#define IMAPMEM_MAX_IDLE (INT_MAX / 1000)     /* config.idle_timeout, so ms fit an int */
#ifndef IMAPMEM_MAX_DEPTH
#define IMAPMEM_MAX_DEPTH 64            /* nesting of lists, SEARCH groups and MIME parts */
#endif
#ifndef IMAPMEM_MAX_KEYWORDS
#define IMAPMEM_MAX_KEYWORDS 64         /* keywords per mailbox: one bit each per message */
#endif
#ifndef IMAPMEM_EXPUNGE_LOG
#define IMAPMEM_EXPUNGE_LOG 1024        /* expunge log entries kept beyond one per message */
#endif
#ifndef IMAPMEM_MAX_CONTEXTS
#define IMAPMEM_MAX_CONTEXTS 32         /* UPDATE search contexts a session may hold */
#endif
#define MAX_MAILBOX_NAME 1024
#define MAX_NS_PREFIX 64      /* a namespace prefix (--namespace), '/' included */
#ifndef IMAPMEM_MAX_PATTERNS
#define IMAPMEM_MAX_PATTERNS 64         /* mailbox patterns in one LIST (RFC 5258 3) */
#endif
#ifndef IMAPMEM_NOTIFY_MAX
#define IMAPMEM_NOTIFY_MAX 1000         /* mailboxes one NOTIFY may watch (RFC 5465 5.8) */
#endif
#ifndef IMAPMEM_TLS_HANDSHAKE_TIMEOUT
#define IMAPMEM_TLS_HANDSHAKE_TIMEOUT 10  /* seconds for a TLS handshake, at most idle_timeout */
#endif

#ifndef MSG_NOSIGNAL         /* POSIX.1-2008; where it is missing, SIGPIPE is blocked anyway */
#define MSG_NOSIGNAL 0
#endif

#if defined(__GNUC__)
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#else
#define PRINTF_LIKE(f, a)
#endif

/* ---- section 1: buffers and strings ---- */
struct buf {                 /* growable byte buffer; oom set once an allocation failed */
  char *p;
  size_t len, cap;
  int oom;
  int in_room;                /* p is the caller's room (buf_in_room) until it grows */
};
struct str {                 /* borrowed view: never owns memory */
  const char *p;
  size_t len;
};
struct arena_block;
struct arena {               /* per-command allocations, freed together */
  struct arena_block *head;
};
struct set_writer {          /* writes ascending numbers as a sequence-set: "1:3,7" */
  struct buf *b;
  uint32_t lo, hi;            /* the range not yet written */
  size_t n;                   /* numbers added */
};
struct needle {              /* a string to look for without regard to case */
  const unsigned char *lower; /* its bytes in lower case (utf8_fold'ed) */
  uint32_t *fail;             /* KMP: the longest proper border of lower[0..i] */
  size_t len;
  int fold;                   /* it has non-ASCII bytes: fold the text too */
};

struct hash_alg {            /* MD5, SHA-1 or SHA-256: what struct hash_ctx runs */
  size_t len;                 /* digest bytes */
  int little_endian;          /* MD5's words and length; the SHAs' are big-endian */
  void (*compress)(uint32_t *h, const unsigned char *block);
  uint32_t init[8];
};
struct hash_ctx {            /* a hash in progress over 64-byte blocks */
  const struct hash_alg *alg;
  uint32_t h[8];
  uint64_t bytes;             /* hashed so far */
  unsigned char block[64];
  size_t fill;
};
#define HASH_MAX 32           /* the longest digest: SHA-256's */

/* ---- section 2: message model ---- */
enum part_kind { PART_LEAF, PART_TEXT, PART_MULTIPART, PART_MESSAGE };
enum part_cte { CTE_IDENTITY, CTE_BASE64, CTE_QP, CTE_UNKNOWN };  /* how to decode the body */
enum part_charset { CS_UTF8, CS_LATIN1, CS_ICONV };  /* as it is, by table, through iconv */
/*
** One MIME entity: offsets into the message's bytes, and the facts of its header that
** SEARCH, FETCH and BODYSTRUCTURE read, found once when the part table is built.
*/
struct part {
  uint32_t hdr_off, hdr_len;  /* its header, blank line included */
  uint32_t body_off, body_len;
  uint32_t lines;             /* line count of the body; text and message parts only */
  int32_t child;              /* first child (multipart parts, or a message's entity) */
  int32_t next;               /* next sibling in a multipart */
  uint32_t type_off, subtype_off, cte_off;   /* Content-Type's type and subtype, and the */
  uint16_t type_len, subtype_len, cte_len;   /* encoding's name: 0 long if absent/invalid */
  uint8_t kind;
  uint8_t digest;             /* a multipart/digest: children default to message/rfc822 */
  uint8_t cte;                /* enum part_cte */
  uint8_t charset;            /* enum part_charset: how SEARCH turns the text into UTF-8 */
};
/*
** Header fields that ENVELOPE and BODYSTRUCTURE read; struct headers holds the first of
** each, found in one pass. H_FROM to H_BCC are in ENVELOPE's order.
*/
enum {
  H_DATE, H_SUBJECT, H_FROM, H_SENDER, H_REPLY_TO, H_TO, H_CC, H_BCC, H_IN_REPLY_TO,
  H_MESSAGE_ID, H_CONTENT_TYPE, H_CONTENT_ID, H_CONTENT_DESCRIPTION, H_CONTENT_ENCODING,
  H_CONTENT_MD5, H_CONTENT_DISPOSITION, H_CONTENT_LANGUAGE, H_CONTENT_LOCATION, H_COUNT
};
#define HEADER_NAME(s) {s, sizeof s - 1}
static const struct { const char *name; size_t len; } header_names[H_COUNT] = {  /* ORDER H_* */
  HEADER_NAME("Date"), HEADER_NAME("Subject"), HEADER_NAME("From"), HEADER_NAME("Sender"),
  HEADER_NAME("Reply-To"), HEADER_NAME("To"), HEADER_NAME("Cc"), HEADER_NAME("Bcc"),
  HEADER_NAME("In-Reply-To"), HEADER_NAME("Message-ID"), HEADER_NAME("Content-Type"),
  HEADER_NAME("Content-ID"), HEADER_NAME("Content-Description"),
  HEADER_NAME("Content-Transfer-Encoding"), HEADER_NAME("Content-MD5"),
  HEADER_NAME("Content-Disposition"), HEADER_NAME("Content-Language"),
  HEADER_NAME("Content-Location")};
enum { KEPT_PARAMS = 4 };
struct headers {
  struct str v[H_COUNT];
  unsigned char have[H_COUNT];
  unsigned char count[H_COUNT];   /* how often the field is there: 0, 1, or 2 for more */
  /* Content-Type's parameters as the part table's build read them, if all are views of the
     header and there are at most KEPT_PARAMS, so that BODYSTRUCTURE need not parse the
     field again (struct param, by member) */
  unsigned char params_kept, nkept;
  signed char kept_section[KEPT_PARAMS];
  unsigned char kept_extended[KEPT_PARAMS];
  struct str kept_name[KEPT_PARAMS], kept_value[KEPT_PARAMS];
};
/*
** ENVELOPE, BODY and BODYSTRUCTURE as FETCH writes them, each made on the first FETCH
** that asks for it (a client that only lists envelopes never pays for the others).
*/
enum { RENDER_ENVELOPE = 1, RENDER_BODY = 2, RENDER_BODYSTRUCTURE = 4, RENDER_ALL = 7 };
struct rendered {
  _Atomic(char *) envelope;
  _Atomic(char *) body;
  _Atomic(char *) bodystructure;
};
/*
** What SORT and THREAD compare (RFC 5256, RFC 5957), made once per message on the first
** SORT or THREAD that needs it. Strings are offsets into text, each NUL-ended. The address
** keys are made apart, on the first SORT by an address: they cost as much as all the others
** together, and THREAD and the usual SORT (by date, by subject) never read them.
*/
#define SORTKEY_NONE UINT32_MAX       /* no such string (no Message-ID) */
struct sortaddrs {
  uint32_t from, to, cc;      /* addr-mailbox of the first address, case-folded */
  uint32_t display_from, display_to;   /* RFC 5957 3: the display value, case-folded */
  char text[];
};
struct sortkeys {
  int64_t sent;               /* RFC 5256 2.2: Date in UTC seconds, or INT64_MIN */
  uint32_t subject;           /* base subject (RFC 5256 2.1), case-folded */
  uint32_t msgid;             /* Message-ID, normalized, or SORTKEY_NONE */
  uint32_t refs, nrefs;       /* the references (RFC 5256 3): nrefs strings from refs */
  int reply;                  /* the subject says reply or forward (RFC 5256 3) */
  _Atomic(struct sortaddrs *) addrs;   /* made on the first SORT that needs them */
  char text[];
};
#define SENT_UNKNOWN INT64_MAX
struct msgmeta {             /* computed once per message, then shared and immutable */
  struct part *parts;         /* parts[0] is the top-level entity */
  int nparts;
  _Atomic int64_t sent;       /* Date header as a UTC day number, INT64_MIN if none: made by
                                 the first SEARCH that asks (msgmeta_sent), like rendered */
  struct rendered rendered;   /* with sent, the only parts written after it is built */
};
/*
** A line of a message that starts with "--", as the loader found it: where it starts and
** how many line breaks come before it. The MIME parse looks for delimiters only at these
** and counts a part's lines from the nearest (issue 15: the load reads every line anyway;
** the first FETCH then need not).
*/
struct line_mark {
  uint32_t off, lines;
};
struct msgdata {             /* a message's bytes, stored once, shared by its copies */
  atomic_int refs;
  uint32_t size;              /* RFC822.SIZE: the CRLF bytes */
  uint32_t hdr_len;           /* header including the blank line */
  uint32_t nmarks;            /* marks: every "--" line, then {size, all its line breaks}; */
  const struct line_mark *marks;   /* NULL if not known (in the arena's marks) */
  _Atomic(struct msgmeta *) meta;
  _Atomic(struct sortkeys *) sortkeys;   /* made on the first SORT or THREAD: the header
                                            alone, so no MIME parse */
  _Atomic uint64_t emailid;   /* hash of the bytes for EMAILID (RFC 8474 5.1); 0: not yet */
  struct msgarena *arena;     /* the fixture's arena that holds bytes, or NULL: bytes follow
                                 this struct in its own allocation */
  char *bytes;                /* size bytes and a NUL */
};
/*
** A fixture file's messages, stored together as the loader wrote them (section 4): one
** allocation instead of one a message, so loading costs little more than reading the file.
** Each message in it holds a reference; the arena goes when its last message does (so an
** expunged message's bytes stay until the rest of its file is gone too). The room left
** after the messages holds their metadata as far as it goes (meta_alloc, section 2).
*/
struct msgarena {
  atomic_int refs;
  int mapped;                 /* 1: base came from mmap (size bytes), 0: from malloc */
  char *base;
  size_t size;
  atomic_size_t meta_next;    /* the room after the messages that metadata may take */
  size_t meta_end;            /* (offsets from base; set once the load is done) */
  struct line_mark *marks;    /* its messages' line marks (heap), or NULL */
};

/* ---- section 3: the store ---- */
enum {
  FLAG_SEEN = 1, FLAG_ANSWERED = 2, FLAG_FLAGGED = 4, FLAG_DELETED = 8, FLAG_DRAFT = 16,
  FLAG_RECENT = 32           /* \Recent not yet claimed by a session */
};
#define FLAGS_SYSTEM 31
#define NO_MSG UINT32_MAX     /* the end of the change list */
struct message {
  uint32_t uid;
  uint32_t flags;
  uint64_t keywords;          /* bit i: mailbox->keywords[i] */
  uint64_t modseq;            /* change number of its last change (RFC 7162 MODSEQ) */
  int64_t internaldate;       /* seconds since the epoch, UTC */
  struct msgdata *data;
  int tz;                     /* minutes east of UTC, for display */
  uint32_t older, newer;      /* neighbours in the change list (indices), or NO_MSG */
};
struct expunged {            /* expunge log entry: the UIDs lo..hi went at change modseq */
  uint32_t lo, hi;            /* (UIDs between that were gone already may be included) */
  uint64_t modseq;
};
struct session;
struct user;
/*
** One who has a mailbox selected (a session, in section 10). The store wakes watchers
** through this, without knowing what they are.
*/
struct watcher {
  void (*wake)(struct watcher *w);  /* come and look: there is news, or the mailbox went */
  uint64_t told;              /* expunges reported up to this change number */
  int idling;                 /* wants to hear of every change at once (IDLE) */
};
struct mailbox {
  char *name;                 /* full name, '/'-delimited; guarded by the user's lock */
  char id[24];                /* MAILBOXID (RFC 8474 4): "F" and hex; kept across RENAME */
  struct user *user;
  atomic_int refs;
  atomic_int selectable;      /* 0: a \Noselect level of the hierarchy */
  pthread_mutex_t lock;       /* guards everything below; epoch, modseq and nkeywords are
                                 written under it and atomic so that a session can see,
                                 without it, that nothing changed (session_sync) */
  int deleted;                /* gone from its user; sessions holding it let go */
  _Atomic unsigned epoch;     /* bumped by DELETE, RENAME, reset, a new UIDVALIDITY */
  const char *gone_why;       /* what sessions holding an old epoch are told */
  uint32_t uidvalidity, uidnext;
  _Atomic uint64_t modseq;    /* last change number given out: HIGHESTMODSEQ */
  int nomodseq;               /* answers [NOMODSEQ] (RFC 7162 3.1.2.2) */
  struct message *msgs;       /* ascending UIDs */
  size_t count, cap;
  size_t recent_from;         /* no message below this index is \Recent and unclaimed: set
                                 by a SELECT that read them all, 0 when an expunge moves them */
  uint32_t oldest, newest;    /* the change list: every message, by ascending modseq */
  struct expunged *expunged;  /* expunges, ascending modseq, the oldest dropped when long */
  size_t nexpunged, capexpunged;
  uint64_t expunge_log_from;  /* every expunge from this change number on is logged */
  struct message *ghosts;     /* expunged, kept for sessions not yet told (RFC 2180 4.1.1): */
  size_t nghosts, capghosts;  /* ascending UIDs; modseq is that of the expunge */
  char *keywords[IMAPMEM_MAX_KEYWORDS];
  atomic_int nkeywords;
  struct watcher **watchers;  /* those that have it selected */
  size_t nwatchers, capwatchers;
  uint64_t bytes;             /* the RFC822.SIZEs of its messages, summed (RFC 9208 5.1) */
  uint64_t last_select, last_idle;  /* event numbers for imapmem_wait; guarded by srv->lock */
  unsigned use;               /* special-use roles (USE_*) set explicitly; and */
  int use_set;                /* 1: they replace those of the name; both: the user's lock */
  struct acl_entry *acl;      /* RFC 4314: who else may do what; guarded by the user's lock */
  size_t nacl;
};
/*
** One entry of a mailbox's access control list (RFC 4314 2): an identifier (a user name,
** "anyone", or either with a leading "-" for negative rights) and its RIGHT_* bits.
*/
struct acl_entry {
  char *id;
  unsigned rights;
};
/* Special-use roles (RFC 6154 2), one bit each; ORDER special_use_names */
enum { USE_ALL = 1, USE_ARCHIVE = 2, USE_DRAFTS = 4, USE_FLAGGED = 8, USE_JUNK = 16,
       USE_SENT = 32, USE_TRASH = 64, USE_ROLES = 7 };
struct mailbox_set {          /* a user's mailboxes and subscribed names */
  struct mailbox **list;
  size_t n, cap;
  char **subs;
  size_t nsubs, capsubs;
};
enum { QUOTA_STORAGE, QUOTA_MESSAGE, QUOTA_NRES };   /* RFC 9208 5.1, 5.2 */
#define QUOTA_NO_LIMIT (-1)
struct user {
  struct imapmem *srv;
  char *name, *password;
  pthread_mutex_t lock;       /* guards both sets, mailbox names, subscriptions */
  struct mailbox_set live;    /* what clients see */
  struct mailbox_set base;    /* what was loaded: imapmem_reset() puts it back */
  uint64_t last_login;        /* event number of the latest login; guarded by srv->lock */
  /* quota (RFC 9208): taken before lock, by what checks a limit and then charges it */
  pthread_mutex_t quota_lock;
  int64_t quota_limit[QUOTA_NRES];  /* STORAGE in KiB, MESSAGE; or QUOTA_NO_LIMIT */
  char *oauth_token;          /* its OAuth bearer token, or NULL; guarded by srv->lock */
  atomic_int admin;           /* may log in as any other user (SASL authorization id) */
};

/* ---- section 5: the command parser ---- */
struct range {
  uint32_t lo, hi;            /* 0 stands for '*' (numbers themselves are never 0) */
};
struct seqset {
  struct range *r;
  size_t n;
  int dollar;                 /* "$", the saved search result (RFC 5182): r filled on use */
};
struct partial {             /* partial-range (RFC 9394 4): lo..hi, from the end if neg */
  uint32_t lo, hi;            /* 1 <= lo <= hi */
  int neg;
};
struct parser {              /* a cursor over one whole command (literals inline) */
  const char *p, *end;
  struct arena *arena;
  const char *err;            /* why the last getter failed */
  int utf8;                   /* the session reads UTF-8: mailbox names in it, and checked
                                 quoted strings (RFC 9051 5.1, RFC 6855 3) */
};

/* ---- section 6: commands ---- */
enum state { ST_NOTAUTH = 1, ST_AUTH = 2, ST_SELECTED = 4, ST_LOGOUT = 8 };
struct command {
  const char *tag;
  const struct cmd_def *def;
  int uid;                    /* the command came as UID <name> */
  struct parser ps;           /* at the command's arguments */
  const char *status;         /* the tagged reply: "OK", "NO", "BAD" */
  char *text;                 /* its text: in small, or in the arena when longer */
  char small[512];
};
/*
** A handler sets the tagged reply (cmd_ok/cmd_no/cmd_bad, which return 0) and returns,
** so that "return cmd_no(c, ...)" is one statement. The value carries nothing.
*/
typedef uint64_t capset;      /* a set of CAP_* extensions (below) */
typedef int cmd_handler(struct session *, struct command *);
/* A SASL mechanism's exchange (section 9): the user to log in as, or NULL, reply set. */
typedef struct user *sasl_mech_fn(struct session *, struct command *, struct buf *resp,
                                  int have_initial_response);
enum {
  CMD_UID = 1,                /* may follow "UID" */
  CMD_KEEP_SEQ = 2,           /* RFC 3501 7.4.1: no EXPUNGE while answering it */
  CMD_SEQNUMS = 4,            /* its plain form takes message numbers (RFC 9586 3.2) */
  CMD_NOT_REV2 = 8            /* not in IMAP4rev2 (RFC 9051 Appendix E 17, 19): BAD there */
};
struct cmd_def {
  const char *name;
  unsigned states;
  unsigned flags;
  capset cap;                 /* the CAP_* extension it belongs to, or 0 */
  capset uid_cap;             /* ... that its UID form belongs to, or 0 */
  cmd_handler *handler;
};

/* ---- section 6: the session's view ---- */
enum {
  ENABLED_CONDSTORE = 1,      /* a CONDSTORE enabling command was seen (RFC 7162 3.1) */
  ENABLED_QRESYNC = 2,        /* ENABLE QRESYNC (RFC 7162 3.2.3) */
  ENABLED_UIDONLY = 4,        /* ENABLE UIDONLY (RFC 9586 3.1) */
  ENABLED_IMAP4REV2 = 8,      /* ENABLE IMAP4rev2 (RFC 9051 Appendix A) */
  ENABLED_UTF8_ACCEPT = 16    /* ENABLE UTF8=ACCEPT (RFC 6855 3) */
};
struct skey;
/*
** A SEARCH RETURN (UPDATE) context (RFC 5267 4.3): made and evaluated by section 7;
** section 6 takes expunged messages out of it before it reports the expunges.
*/
struct search_ctx {
  char *tag;                  /* the searching command's tag: the correlator */
  int uid;                    /* updates name UIDs (UID SEARCH), else sequence numbers */
  struct arena arena;         /* keys live here */
  struct skey *keys;          /* the search program, message numbers made UIDs */
  uint32_t *uids;             /* the result now, ascending UIDs */
  size_t n, cap;
  uint64_t checked;           /* changes up to this change number are evaluated */
  struct search_ctx *next;
};
/*
** NOTIFY (RFC 5465), kept by section 9 for one session: the event groups asked for and
** what the client has been told of every mailbox of its user (to compare with later).
*/
enum { NOTIFY_NEW = 1, NOTIFY_EXPUNGE = 2, NOTIFY_FLAGS = 4, NOTIFY_NAME = 8, NOTIFY_SUBS = 16 };
#define NOTIFY_MESSAGE_EVENTS (NOTIFY_NEW | NOTIFY_EXPUNGE | NOTIFY_FLAGS)
enum { NF_SELECTED, NF_SELECTED_DELAYED, NF_INBOXES, NF_PERSONAL, NF_SUBSCRIBED, NF_SUBTREE,
       NF_MAILBOXES };   /* ORDER notify_filter_names */
struct notify_group {         /* one event-group: a filter and its events */
  int filter;                 /* NF_* */
  unsigned events;            /* NOTIFY_* */
  char **names;               /* SUBTREE and MAILBOXES: canonical names */
  size_t nnames;
};
struct notify_box {           /* a mailbox as the client last heard of it */
  struct mailbox *mb;         /* a reference: the same mailbox under a new name is a rename */
  char *name;
  unsigned events;            /* what the groups ask for it (by name, not as selected) */
  int selectable;
  uint32_t messages, uidnext, uidvalidity, unseen;
  uint64_t modseq;
};
struct notify {
  struct notify_group *groups;
  size_t ngroups;
  int selected;               /* NF_SELECTED, NF_SELECTED_DELAYED, or -1: none */
  unsigned selected_events;
  char *fetch_atts;           /* MessageNew's "(fetch-att ...)" for the selected mailbox */
  struct notify_box *boxes;
  size_t nboxes;
  char **subs;                /* the subscriptions the client last heard of */
  size_t nsubs;
};
struct seqent {               /* a session's view: sequence number i+1 is entry i */
  uint32_t uid;
  uint8_t recent;             /* \Recent in this session */
  uint8_t gone;               /* expunged: set and cleared within session_sync */
};
/*
** How a session's bytes move: section 10 provides these for a socket, pipe or pair of
** descriptors; a test or fuzz target can provide its own, with no network at all.
*/
struct session_io {
  int (*flush)(struct session *s);        /* write out s->out; 0: the connection is gone */
  int (*write)(struct session *s, const char *p, size_t n);   /* p now, uncopied */
  int (*read_line)(struct session *s, struct buf *line, size_t max, int wake_ok);
};
/*
** Under net_io (section 10), the bytes themselves: plain descriptors, or TLS over the
** socket (an SSL*, in a build with IMAPMEM_TLS). Like read(2) and write(2): -1 with errno
** EAGAIN when the socket must be waited for.
*/
struct transport {
  ssize_t (*recv)(struct session *s, char *p, size_t n);
  ssize_t (*send)(struct session *s, const char *p, size_t n);
  int (*pending)(struct session *s);      /* bytes already read and decrypted, not taken */
  void (*close)(struct session *s);       /* before the descriptors close */
};
struct ssl_st;                /* OpenSSL's SSL, SSL_CTX, X509 and EVP_PKEY: only pointers, */
struct ssl_ctx_st;            /* so that this file builds without OpenSSL's headers */
struct x509_st;
struct evp_pkey_st;
struct session {
  struct imapmem *srv;
  const struct session_io *io;
  const struct transport *tp; /* how net_io moves bytes: plain, or TLS once it started */
  struct ssl_st *ssl;         /* the TLS connection, or NULL */
  int implicit_tls;           /* accepted on the imaps port: TLS from the first byte */
  int starttls_ok;            /* accepted on the plain port (or serve_fd_tls STARTTLS):
                                 STARTTLS may start TLS */
  int starttls;               /* STARTTLS was answered OK: the handshake comes next */
  int tls_failed;             /* a fatal TLS error: no close_notify may follow */
  int id;
  int fd;                     /* read from here */
  int fd_out;                 /* write here (the same socket, or stdout) */
  int out_socket;             /* fd_out is a socket (send), not a pipe or file (write) */
  const char *preauth;        /* start authenticated as this user (serve_fd) */
  unsigned ncommands;         /* commands read so far, for "#N=" faults */
  int wake[2];                /* a pipe: a byte wakes the session from poll(); made on
                                 its first SELECT or NOTIFY (session_wake_open), else -1 */
  int woken;                  /* a wake-up was taken from the pipe while writing */
  pthread_t thread;
  atomic_int finished;
  enum state state;
  struct user *user;
  unsigned enabled;           /* ENABLED_*: what the client enabled (RFC 5161), for good */
  struct mailbox *mb;         /* selected mailbox (a reference), or NULL */
  int readonly;
  unsigned rights;            /* RIGHT_* on mb, taken at SELECT (RFC 4314 5.1.1 allows it) */
  int nomodseq;               /* mb was selected answering [NOMODSEQ] */
  uint64_t modseq_sent;       /* the highest MODSEQ sent during this command */
  unsigned epoch;
  struct seqent *view;
  size_t nview, capview;
  uint64_t seen_modseq;       /* appends and flag changes reported up to here */
  int view_recent;            /* some entry of the view may be \Recent */
  struct watcher watch;       /* of mb: woken by changes; told = expunges reported */
  struct notify *notify;      /* NOTIFY SET (RFC 5465), or NULL: none or NOTIFY NONE */
  struct watcher notify_watch;  /* while notify is set: woken by every change (section 3) */
  int nkw_known;              /* keywords of mb announced in FLAGS so far */
  uint32_t *saved;            /* "$" (RFC 5182): the saved search result, ascending UIDs */
  size_t nsaved;
  struct search_ctx *contexts;  /* SEARCH RETURN (UPDATE) contexts (RFC 5267 4.3) */
  int ncontexts;
  int in_idle;                /* in the IDLE command */
  int closing;                /* send what is buffered, then close */
  const char *end_why;        /* why the session ended, for the transcript */
  struct buf out;
  char *in;                   /* SESSION_IN bytes read ahead; not zeroed, so an idle
                                 session's RSS holds only the pages a read touched */
  size_t inpos, inlen;
  struct buf cmd;             /* the command being read, literals inline */
  struct arena arena;
  struct buf trace_line;      /* the transcript: the server line being written */
  size_t trace_skip;          /* literal bytes still to leave out of it */
  size_t trace_words;         /* the transcript of the command being read: its words */
  int trace_secret;           /* ... and whether the rest is a password (1) or soon (-1) */
  /* what imapmem_wait() may see of this session; guarded by srv->lock */
  struct user *pub_user;
  struct mailbox *pub_mb;
  int pub_idle;
  int auth_fault;             /* FA_AUTH_*: fail this command's login (a fault), or 0 */
};

/* ---- section 10: faults ---- */
enum {                        /* ORDER tls_fault_names: --tls-fault KIND */
  TLS_FAULT_NONE, TLS_FAULT_EXPIRED, TLS_FAULT_NOT_YET_VALID, TLS_FAULT_WRONG_HOST,
  TLS_FAULT_SELF_SIGNED, TLS_FAULT_HANDSHAKE
};
enum fault_action {
  FA_NO, FA_BAD, FA_DROP, FA_BYE, FA_ALERT, FA_DELAY, FA_UIDVALIDITY, FA_MODSEQ_BACK,
  FA_FORGET_EXPUNGED, FA_AUTH_UNAVAILABLE, FA_AUTH_EXPIRED
};
struct fault {
  char cmd[32];               /* command name, "*" for every command, "" for #N */
  int uid_only;               /* "UID FETCH": only the UID form (a plain name matches both) */
  unsigned nth;               /* #N: the Nth command of a session */
  long left;                  /* times it may still fire; -1: no limit */
  int action;
  int ms;
  char text[256];
};

struct imapmem {
  struct imapmem_config cfg;
  pthread_mutex_t lock;       /* guards users, sessions, faults, the trace callback */
  uint64_t events;            /* logins, SELECTs and IDLEs so far (imapmem_mark); lock */
  uint64_t last_login;        /* the event number of the latest login of any user; lock */
  struct user **users;
  size_t nusers, capusers;
  int listen_fd;
  int port;
  char address[80];
  /* TLS (section 10); set before imapmem_start, read-only while serving */
  struct ssl_ctx_st *tls_ctx; /* NULL: no TLS (STARTTLS is neither offered nor done) */
  char *tls_trust_pem;        /* the certificate a client should trust */
  struct x509_st *tls_ca;     /* the generated CA (NULL with a given certificate) and */
  struct evp_pkey_st *tls_ca_key;   /* its key, only in memory: it signs fault leaves */
  int require_tls;            /* no LOGIN or AUTHENTICATE before TLS (RFC 3501 6.2.3) */
  int imaps_want;             /* the imaps port to listen on (0: any), -1: none */
  int imaps_fd, imaps_port;
  char imaps_address[80];
  int wake[2];                /* wakes the accept thread */
  int stop_pipe[2];           /* readable from imapmem_stop() until its sessions have
                                 ended: every session polls it, so one byte wakes them all */
  pthread_t accept_thread;
  int started, stopping;
  struct session **sessions;
  size_t nsessions, capsessions;
  int next_session_id;
  atomic_int nactive;
  atomic_uint last_uidvalidity; /* UIDVALIDITY given to the last new mailbox */
  /* imapmem_wait(): anything a waiter may be waiting for bumps the generation */
  pthread_mutex_t wait_lock;
  pthread_cond_t wait_cond;
  unsigned long generation;
  /* the transcript, capabilities and faults; guarded by lock, flags read lock-free */
  atomic_int tracing;
  imapmem_trace_fn *trace_fn;
  void *trace_arg;
  _Atomic capset caps_off;    /* CAP_* bits switched off */
  struct watcher **notifiers; /* NOTIFY sessions, woken by every change; under wait_lock */
  size_t nnotifiers, capnotifiers;
  struct fault *faults;
  size_t nfaults;
  atomic_int nfaults_set;     /* nfaults, readable without the lock */
  atomic_int delay_ms;        /* "delay=" fault */
  atomic_int chunk;           /* "chunk=" fault */
  atomic_size_t append_limit; /* APPENDLIMIT (RFC 7889): at most cfg.max_literal */
  unsigned char scram_secret[32];   /* keys SCRAM salts (section 9); guarded by lock */
  int scram_secret_set;
  /* namespaces (RFC 2342) and the shared tree; set before imapmem_start, then read-only */
  struct user *shared;        /* owns the mailboxes under ns_shared; nobody logs in as it */
  char ns_other[MAX_NS_PREFIX + 1];   /* other users' prefix, ending in '/' */
  char ns_shared[MAX_NS_PREFIX + 1];  /* the shared mailboxes' prefix, ending in '/' */
};

/* Extensions that can be switched off (imapmem_set_capability): one capset bit each. */
#define CAP_IDLE             ((capset)1 << 0)
#define CAP_MOVE             ((capset)1 << 1)
#define CAP_UIDPLUS          ((capset)1 << 2)
#define CAP_UNSELECT         ((capset)1 << 3)
#define CAP_NAMESPACE        ((capset)1 << 4)
#define CAP_ID               ((capset)1 << 5)
#define CAP_LITERALPLUS      ((capset)1 << 6)
#define CAP_SASLIR           ((capset)1 << 7)
#define CAP_CHILDREN         ((capset)1 << 8)
#define CAP_ENABLE           ((capset)1 << 9)
#define CAP_CONDSTORE        ((capset)1 << 10)
#define CAP_QRESYNC          ((capset)1 << 11)
#define CAP_LITERALMINUS     ((capset)1 << 12)
#define CAP_ESEARCH          ((capset)1 << 13)
#define CAP_SEARCHRES        ((capset)1 << 14)
#define CAP_CONTEXT_SEARCH   ((capset)1 << 15)
#define CAP_PARTIAL          ((capset)1 << 16)
#define CAP_BINARY           ((capset)1 << 17)
#define CAP_MULTIAPPEND      ((capset)1 << 18)
#define CAP_CATENATE         ((capset)1 << 19)
#define CAP_APPENDLIMIT      ((capset)1 << 20)
#define CAP_UIDONLY          ((capset)1 << 21)
#define CAP_ACL              ((capset)1 << 42)   /* ACL and RIGHTS=texk (RFC 4314) */
#define CAP_LIST_EXTENDED    ((capset)1 << 28)
#define CAP_LIST_STATUS      ((capset)1 << 29)
#define CAP_SPECIAL_USE      ((capset)1 << 30)
#define CAP_CREATE_SPECIAL_USE ((capset)1 << 31)
#define CAP_STATUS_SIZE      ((capset)1 << 32)
#define CAP_QUOTA            ((capset)1 << 46)
#define CAP_QUOTASET         ((capset)1 << 47)
#define CAP_QUOTA_RES_STORAGE ((capset)1 << 48)
#define CAP_QUOTA_RES_MESSAGE ((capset)1 << 49)
#define CAP_SORT             ((capset)1 << 22)   /* RFC 5256 */
#define CAP_SORT_DISPLAY     ((capset)1 << 23)   /* RFC 5957 */
#define CAP_THREAD_ORDEREDSUBJECT ((capset)1 << 24)   /* RFC 5256 */
#define CAP_THREAD_REFERENCES ((capset)1 << 25)  /* RFC 5256 */
#define CAP_ESORT            ((capset)1 << 26)   /* RFC 5267 3 */
#define CAP_CONTEXT_SORT     ((capset)1 << 27)   /* RFC 5267 4 */
#define CAP_NOTIFY           ((capset)1 << 38)
#define CAP_OBJECTID         ((capset)1 << 39)
#define CAP_AUTH_PLAIN       ((capset)1 << 52)
#define CAP_AUTH_LOGIN       ((capset)1 << 53)
#define CAP_AUTH_CRAM_MD5    ((capset)1 << 54)
#define CAP_AUTH_SCRAM_SHA_1 ((capset)1 << 55)
#define CAP_AUTH_SCRAM_SHA_256 ((capset)1 << 56)
#define CAP_AUTH_OAUTHBEARER ((capset)1 << 57)
#define CAP_AUTH_XOAUTH2     ((capset)1 << 58)
#define CAP_LOGINDISABLED    ((capset)1 << 59)   /* on: LOGIN, AUTH=PLAIN, AUTH=LOGIN refused */
#ifndef SCRAM_ITERATIONS
#define SCRAM_ITERATIONS 4096 /* RFC 5802 5.1, RFC 7677 4: at least 4096 */
#endif
#define SCRAM_SALT_LEN 16
/* Off at start: LITERAL- (LITERAL+ is on instead, RFC 7888 4) and LOGINDISABLED. */
#define CAPS_OFF_AT_START (CAP_LITERALMINUS | CAP_LOGINDISABLED)
#define CAPS_MAX 1024         /* room for the capability list as text */
#define CAP_IMAP4REV2        ((capset)1 << 34)   /* RFC 9051, beside IMAP4rev1 */
#define CAP_UTF8_ACCEPT      ((capset)1 << 35)   /* RFC 6855 */
#define CAP_IMAP4REV1        ((capset)1 << 36)   /* off: a rev2-only server */

/*
** ===========================================================================
** 1  Buffers and strings
** ===========================================================================
** Owns: the allocation wrapper, growable buffers (struct buf), borrowed views (struct
** str), per-command arenas, and small text helpers: numbers, dates, base64, literal
** announcements, case-insensitive search (struct needle), the one binary search, UTF-8
** checks and mailbox names between modified UTF-7 and UTF-8; and the hashes SASL needs
** (MD5, SHA-1, SHA-256, HMAC, PBKDF2) with random bytes; and the count of spare cores
** that helper threads take.
** Calls: libc only.
** Locking: none; every object here belongs to one thread (the count of spare cores taken
** is atomic).
**
** Every allocation goes through mem_alloc/mem_realloc, so a test build can make the Nth
** one fail (mem_fail_countdown). A buffer that could not grow sets its oom flag and ignores
** further writes: the caller checks once, at the end, instead of after every append. What
** is computed once and kept (a message's part table, renderings, sort keys) is made
** through many scratch buffers; its maker compares mem_failed, this thread's count of
** failed allocations, before and after, and keeps nothing if any failed.
*/
static atomic_long mem_fail_countdown;  /* 0: never fail; n: the nth call from now fails */
static _Thread_local unsigned long mem_failed;

static int mem_should_fail(void) {
  long n = atomic_load(&mem_fail_countdown);
  while (n > 0) {
    if (atomic_compare_exchange_weak(&mem_fail_countdown, &n, n - 1)) return n == 1;
  }
  return 0;
}

static void *mem_alloc(size_t n) {
  void *p = mem_should_fail() ? NULL : malloc(n ? n : 1);
  mem_failed += !p;
  return p;
}

static void *mem_realloc(void *p, size_t n) {
  void *q = mem_should_fail() ? NULL : realloc(p, n ? n : 1);
  mem_failed += !q;
  return q;
}

static void *mem_calloc(size_t n, size_t size) {
  void *p = mem_should_fail() ? NULL : calloc(n ? n : 1, size ? size : 1);
  mem_failed += !p;
  return p;
}

static char *mem_strndup(const char *s, size_t n) {
  char *p = mem_alloc(n + 1);
  if (p) {
    if (n) memcpy(p, s, n);
    p[n] = 0;
  }
  return p;
}

static char *mem_strdup(const char *s) {
  return mem_strndup(s, strlen(s));
}

/* Grow an array of elements of size `size` so that it holds at least `need`. */
static int mem_grow(void *arrayp, size_t *cap, size_t need, size_t size) {
  void **ap = arrayp;
  if (need <= *cap) return 1;
  size_t ncap = *cap ? *cap : 8;
  while (ncap < need) ncap *= 2;
  void *n = mem_realloc(*ap, ncap * size);
  if (!n) return 0;
  *ap = n;
  *cap = ncap;
  return 1;
}

/* An array of n elements that is in room (not to be freed) or allocated, grown to ncap. */
static void *room_grow(void *p, const void *room, size_t n, size_t ncap, size_t size) {
  if (!p || p != room) return mem_realloc(p, ncap * size);
  void *q = mem_alloc(ncap * size);
  if (q) memcpy(q, p, n * size);
  return q;
}

/* ------------------------------------------------------------------------- */
/* Room for more bytes and the NUL after them; 0 (and b->oom set) if memory ran out. */
static int buf_grow(struct buf *b, size_t more) {
  if (b->oom) return 0;
  if (b->len + more + 1 <= b->cap) return 1;
  size_t ncap = b->cap ? b->cap * 2 : 256;
  while (ncap < b->len + more + 1) ncap *= 2;
  char *n = room_grow(b->p, b->in_room ? b->p : NULL, b->len + 1, ncap, 1);
  if (!n) {
    b->oom = 1;
    return 0;
  }
  b->in_room = 0;
  b->p = n;
  b->cap = ncap;
  return 1;
}

/* The renderers append many short pieces: the test for room is inline, the growing not. */
static inline int buf_reserve(struct buf *b, size_t more) {
  return (!b->oom && b->len + more + 1 <= b->cap) || buf_grow(b, more);
}

static inline void buf_add(struct buf *b, const void *p, size_t n) {
  if (!buf_reserve(b, n)) return;
  char *o = b->p + b->len;   /* locals: a store through a char pointer may alias *b */
  if (n) memcpy(o, p, n);
  o[n] = 0;
  b->len += n;
}

static inline void buf_adds(struct buf *b, const char *s) {
  buf_add(b, s, strlen(s));
}

static inline void buf_addc(struct buf *b, char c) {
  size_t len = b->len;
  if (len + 2 > b->cap && !buf_grow(b, 1)) return;   /* the call only when full */
  char *o = b->p + len;
  o[0] = c;
  o[1] = 0;
  b->len = len + 1;
}

/* A number in decimal: what buf_printf("%llu") writes, without the format machinery. */
static void buf_addu(struct buf *b, unsigned long long v) {
  char tmp[24], *e = tmp + sizeof tmp, *q = e;
  do *--q = (char)('0' + v % 10);
  while (v /= 10);
  buf_add(b, q, (size_t)(e - q));
}

/* Formatted straight into the buffer's room: a second time, after growing, only if the
   text did not fit (a longer text in a small scratch array first would be formatted twice
   always, the first time through libc's slow path for a string that overflows). */
static void buf_vprintf(struct buf *b, const char *fmt, va_list ap) {
  if (!buf_reserve(b, 128)) return;
  va_list ap2;
  va_copy(ap2, ap);
  size_t room = b->cap - b->len;
  int n = vsnprintf(b->p + b->len, room, fmt, ap2);
  va_end(ap2);
  if (n >= 0 && (size_t)n < room) {
    b->len += (size_t)n;
    return;
  }
  b->p[b->len] = 0;          /* what did not fit is not the buffer's */
  if (n < 0 || !buf_reserve(b, (size_t)n)) return;
  vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
  b->len += (size_t)n;
}

static void PRINTF_LIKE(2, 3) buf_printf(struct buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  buf_vprintf(b, fmt, ap);
  va_end(ap);
}

static void buf_reset(struct buf *b) {
  b->len = 0;
  if (b->p) b->p[0] = 0;
}

static void buf_free(struct buf *b) {
  if (!b->in_room) free(b->p);
  memset(b, 0, sizeof *b);
}

/* An empty buffer whose first cap bytes are room, the caller's (a frame's array, say), so
   that a short text costs no allocation; buf_free and buf_take know. */
static void buf_in_room(struct buf *b, char *room, size_t cap) {
  *b = (struct buf){room, 0, cap, 0, 1};
  room[0] = 0;
}

/* Free n strings and the array that holds them (NULL entries and a NULL array are fine). */
static void strings_free(char **v, size_t n) {
  for (size_t i = 0; v && i < n; i++) free(v[i]);
  free(v);
}

/* The buffer's bytes as a NUL-terminated string the caller frees; the buffer is emptied. */
static char *buf_take(struct buf *b) {
  if (b->oom || !buf_reserve(b, 0)) {
    buf_free(b);
    return NULL;
  }
  char *p = b->p;
  if (b->in_room && (p = mem_alloc(b->len + 1)) != NULL) memcpy(p, b->p, b->len + 1);
  memset(b, 0, sizeof *b);
  return p;
}

/* ------------------------------------------------------------------------- */
struct arena_block {
  struct arena_block *next;
  size_t used, cap;
  char data[];
};

static void *arena_alloc(struct arena *a, size_t n) {
  n = (n + 15) & ~(size_t)15;
  struct arena_block *b = a->head;
  if (!b || b->cap - b->used < n) {
    size_t cap = n > 8192 ? n : 8192;
    b = mem_alloc(sizeof *b + cap);
    if (!b) return NULL;
    b->next = a->head;
    b->used = 0;
    b->cap = cap;
    a->head = b;
  }
  void *p = b->data + b->used;
  b->used += n;
  return p;
}

static char *arena_strndup(struct arena *a, const char *s, size_t n) {
  char *p = arena_alloc(a, n + 1);
  if (p) {
    memcpy(p, s, n);
    p[n] = 0;
  }
  return p;
}

static void arena_free(struct arena *a) {
  while (a->head) {
    struct arena_block *n = a->head->next;
    free(a->head);
    a->head = n;
  }
}

/* ------------------------------------------------------------------------- */
static struct str str_make(const char *p, size_t n) {
  struct str s = {p, n};
  return s;
}

static int is_atom_char(int c) {
  /* RFC 3501 9, ATOM-CHAR: any CHAR except atom-specials: ( ) { SP CTL % * " \ ] */
  return c > 0x20 && c < 0x7f && !strchr("(){%*\"\\]", c);
}

/* Is it a keyword a client could name: an atom, not a \system flag (RFC 3501 2.3.2)? */
static int is_keyword(const char *k, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!is_atom_char((unsigned char)k[i])) return 0;
  return n > 0;
}

/* Are the n bytes at a and b equal but for the case of ASCII letters (as IMAP's atoms and
   RFC 5322's field names compare)? Inline: strncasecmp is a call into the locale. */
static int mem_ieq(const char *a, const char *b, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
    if (x != y && ((x ^ y) != 0x20 || (x | 0x20) < 'a' || (x | 0x20) > 'z')) return 0;
  }
  return 1;
}

static int str_ieq(struct str s, const char *z) {
  size_t n = strlen(z);
  return s.len == n && mem_ieq(s.p, z, n);
}

static struct str str_trim(struct str s) {
  while (s.len && (s.p[0] == ' ' || s.p[0] == '\t' || s.p[0] == '\r' || s.p[0] == '\n')) {
    s.p++;
    s.len--;
  }
  while (s.len && (s.p[s.len - 1] == ' ' || s.p[s.len - 1] == '\t' ||
                   s.p[s.len - 1] == '\r' || s.p[s.len - 1] == '\n'))
    s.len--;
  return s;
}

#define L4(c) (c), (c) + 1, (c) + 2, (c) + 3
#define L16(c) L4(c), L4((c) + 4), L4((c) + 8), L4((c) + 12)
static const unsigned char lower_case[256] = {  /* ASCII letters in lower case */
  L16(0), L16(16), L16(32), L16(48),
  64, L16(97), L4(113), L4(117), 121, 122, 91, 92, 93, 94, 95,   /* 'A'-'Z' -> 'a'-'z' */
  L16(96), L16(112), L16(128), L16(144), L16(160), L16(176), L16(192), L16(208), L16(224),
  L16(240)};
#undef L16
#undef L4

/*
** Sets of numbers as IMAP writes them (RFC 3501 9 sequence-set): add the numbers, or
** ranges, in ascending order; runs become "lo:hi". set_end() writes the last range.
*/
static void set_flush(struct set_writer *w) {
  if (!w->n) return;
  if (w->lo == w->hi) buf_printf(w->b, "%u", w->lo);
  else buf_printf(w->b, "%u:%u", w->lo, w->hi);
}

static void set_add_range(struct set_writer *w, uint32_t lo, uint32_t hi) {
  if (w->n && w->hi != UINT32_MAX && lo <= w->hi + 1) {
    if (hi > w->hi) w->hi = hi;
  } else {
    set_flush(w);
    if (w->n) buf_addc(w->b, ',');
    w->lo = lo;
    w->hi = hi;
  }
  w->n++;
}

static void set_add(struct set_writer *w, uint32_t v) {
  set_add_range(w, v, v);
}

static void set_end(struct set_writer *w) {
  set_flush(w);
}

/*
** The one binary search: the index of the first of n records, sorted by an unsigned key
** of keysize bytes (4 or 8) at offset off in each record of size bytes, whose key is at
** least key; n if none is. Messages and views by UID, change logs by change number.
*/
static size_t lower_bound(const void *base, size_t n, size_t size, size_t off, size_t keysize,
                          uint64_t key) {
  const char *b = base;
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    uint64_t k;
    if (keysize == 4) {
      uint32_t k32;
      memcpy(&k32, b + mid * size + off, 4);
      k = k32;
    } else {
      memcpy(&k, b + mid * size + off, 8);
    }
    if (k < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/*
** Literals (RFC 3501 4.3, RFC 7888): "{size}" or "{size+}" ends a line, and size bytes
** follow the CRLF. literal_announced: does the line [p, p+n) end in an announcement?
** Returns where it starts, or n if it does not; more than 20 digits read as UINT64_MAX,
** for the caller to refuse. literal_opening: does [p, p+n) start with an announcement and
** its CRLF (a command as section 10 stores it)? Returns the length of both, or 0.
*/
static size_t literal_opening(const char *p, size_t n, uint64_t *size) {
  size_t i = 1, digits = 0;
  uint64_t v = 0;
  if (n < 5 || p[0] != '{') return 0;
  while (i < n && p[i] >= '0' && p[i] <= '9') {
    v = ++digits > 19 ? UINT64_MAX : v * 10 + (uint64_t)(p[i] - '0');
    i++;
  }
  if (i < n && p[i] == '+') i++;
  if (!digits || i + 3 > n || p[i] != '}' || p[i + 1] != '\r' || p[i + 2] != '\n') return 0;
  *size = v;
  return i + 3;
}

static size_t literal_announced(const char *p, size_t n, uint64_t *size, int *plus) {
  if (n < 3 || p[n - 1] != '}') return n;
  size_t i = n - 1;
  *plus = p[i - 1] == '+';
  if (*plus) i--;
  size_t end = i;
  while (i > 0 && p[i - 1] >= '0' && p[i - 1] <= '9') i--;
  if (i == end || i == 0 || p[i - 1] != '{') return n;
  uint64_t v = 0;
  for (size_t k = i; k < end; k++) v = end - i > 20 ? UINT64_MAX : v * 10 + (uint64_t)(p[k] - '0');
  *size = v;
  return i - 1;
}

/*
** Case-insensitive (ASCII) substring search, in time linear in the text for every needle
** (SEARCH keys come from clients). A needle is prepared once: its lower-case bytes and its
** KMP failure table. Bytes that cannot start a match are skipped with memchr, and the next
** place of each case of the first byte is remembered, so a case that never occurs is
** looked for once, not at every step. A candidate is first checked byte by byte, which is
** fastest on real text; once those checks have cost more than three times the text passed,
** the KMP automaton takes over, which looks at each byte once and never steps back.
*/
/*
** Fold the letters of UTF-8 text to small letters, in place, for the alphabets whose
** capital and small letters are both two bytes long (Latin-1, Latin Extended-A, Greek,
** Cyrillic), so that no offset moves: "J\xc3\x98RN" finds "j\xc3\xb8rn". RFC 3501 6.4.4
** leaves folding beyond ASCII to the server; Dovecot folds by Unicode's tables, which this
** follows for these alphabets (letters whose other case has another length stay).
*/
static void utf8_fold(unsigned char *p, size_t n) {
  for (size_t i = 0; i + 1 < n; i++) {
    if (p[i] < 0xc3 || p[i] > 0xd0 || (p[i + 1] & 0xc0) != 0x80) continue;
    unsigned cp = (unsigned)(p[i] & 0x1f) << 6 | (p[i + 1] & 0x3f), lo = cp;
    if ((cp >= 0xc0 && cp <= 0xde && cp != 0xd7) || (cp >= 0x391 && cp <= 0x3ab && cp != 0x3a2) ||
        (cp >= 0x410 && cp <= 0x42f))
      lo = cp + 0x20;
    else if (cp >= 0x400 && cp <= 0x40f)
      lo = cp + 0x50;
    else if (cp == 0x178)
      lo = 0xff;
    else if (cp >= 0x100 && cp <= 0x17e && cp != 0x130 && cp != 0x131 && cp != 0x138 &&
             cp != 0x149)   /* pairs: capital even, but odd from U+0139 to U+0148 and U+0179 */
      lo = ((cp >= 0x139 && cp <= 0x148) || cp >= 0x179) == (cp % 2 == 1) ? cp + 1 : cp;
    p[i] = (unsigned char)(0xc0 | lo >> 6);
    p[i + 1] = (unsigned char)(0x80 | (lo & 0x3f));
    i++;
  }
}

static int needle_init(struct needle *nd, struct str s, struct arena *a) {
  nd->len = s.len;
  nd->lower = NULL;
  nd->fail = NULL;
  nd->fold = 0;
  if (s.len == 0) return 1;
  if (s.len > UINT32_MAX) return 0;
  unsigned char *lo = arena_alloc(a, s.len);
  uint32_t *fail = arena_alloc(a, s.len * sizeof *fail);
  if (!lo || !fail) return 0;
  for (size_t i = 0; i < s.len; i++) {
    lo[i] = lower_case[(unsigned char)s.p[i]];
    nd->fold |= lo[i] >= 0x80;
  }
  utf8_fold(lo, s.len);
  fail[0] = 0;
  for (size_t i = 1, k = 0; i < s.len; i++) {
    while (k > 0 && lo[i] != lo[k]) k = fail[k - 1];
    if (lo[i] == lo[k]) k++;
    fail[i] = (uint32_t)k;
  }
  nd->lower = lo;
  nd->fail = fail;
  return 1;
}

/* The next place at or after `from` where byte c occurs in [h, h+n), or n. */
static size_t next_byte(const unsigned char *h, size_t n, size_t from, int c) {
  const unsigned char *q = from < n ? memchr(h + from, c, n - from) : NULL;
  return q ? (size_t)(q - h) : n;
}

static atomic_long needle_work;  /* bytes looked at by needle_find, so a test can bound it */

static const char *needle_find_bytes(const struct needle *nd, const char *text, size_t n) {
  size_t m = nd->len;
  if (m == 0) return text;
  if (n < m) return NULL;
  const unsigned char *h = (const unsigned char *)text, *lo = nd->lower;
  int c0 = lo[0], c1 = c0 >= 'a' && c0 <= 'z' ? c0 - 32 : c0;
  size_t next0 = 0, next1 = c1 != c0 ? 0 : n;  /* where each case of lo[0] is next seen */
  size_t i = 0, work = 0, checked = 0;
  const char *found = NULL;
  while (!found && n - i >= m) {
    if (lower_case[h[i]] != c0) {    /* skip to a byte that can start a match */
      if (next0 <= i) {
        next0 = next_byte(h, n, i, c0);
        work += next0 - i;
      }
      if (next1 <= i) {
        next1 = next_byte(h, n, i, c1);
        work += next1 - i;
      }
      i = next0 < next1 ? next0 : next1;
      if (n - i < m) break;          /* also when neither case occurs again: i == n */
    }
    if (checked <= 3 * i + 256) {    /* check candidates byte by byte while they come */
      size_t before = checked;
      do {
        size_t k = 1;
        while (k < m && lower_case[h[i + k]] == lo[k]) k++;
        checked += k;
        if (k == m) found = text + i;
        i++;
      } while (!found && n - i >= m && lower_case[h[i]] == c0 && checked <= 3 * i + 256);
      work += checked - before;
      continue;
    }
    size_t from = i++, j = 1;        /* KMP from here: each byte once, never back */
    while (j < m && i < n) {
      int c = lower_case[h[i++]];
      while (j > 0 && c != lo[j]) j = nd->fail[j - 1];
      if (c != lo[j]) break;         /* j == 0: back to skipping */
      j++;
    }
    work += i - from;
    if (j == m) found = text + i - m;
  }
  atomic_fetch_add_explicit(&needle_work, (long)work, memory_order_relaxed);
  return found;
}

/*
** Where the needle first is in text, without regard to case, or NULL. For a needle with
** non-ASCII bytes the text is folded (utf8_fold) into a copy first; without memory for
** the copy, its bytes are compared as they are.
*/
static const char *needle_find(const struct needle *nd, const char *text, size_t n) {
  int fold = 0;
  for (size_t i = 0; nd->fold && i < n && !fold; i++) fold = (unsigned char)text[i] >= 0xc3;
  unsigned char *copy = fold && n >= nd->len ? mem_alloc(n) : NULL;
  if (!copy) return needle_find_bytes(nd, text, n);
  memcpy(copy, text, n);
  utf8_fold(copy, n);
  const char *found = needle_find_bytes(nd, (const char *)copy, n);
  size_t at = found ? (size_t)(found - (const char *)copy) : 0;
  free(copy);
  return found ? text + at : NULL;
}

/* ------------------------------------------------------------------------- */
/* Base64 (RFC 4648), used by AUTHENTICATE and by SEARCH of encoded bodies. */
static int base64_value(int c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

/*
** Decode base64 into out. strict: only the alphabet and final padding are allowed (the
** SASL case); otherwise other bytes such as line breaks are skipped (the MIME case).
** Returns 0 on a strict-mode error.
*/
static int base64_decode(const char *p, size_t n, struct buf *out, int strict) {
  unsigned acc = 0;
  int bits = 0, pad = 0;
  for (size_t i = 0; i < n; i++) {
    int c = (unsigned char)p[i];
    if (c == '=') {
      pad++;
      continue;
    }
    int v = base64_value(c);
    if (v < 0 || pad) {
      if (strict) return 0;
      continue;
    }
    acc = (acc << 6) | (unsigned)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      buf_addc(out, (char)((acc >> bits) & 0xff));
    }
  }
  if (strict && ((n % 4) != 0 || pad > 2)) return 0;
  return 1;
}

/* Encode base64 on one line, as SASL sends it (RFC 4648 4, RFC 3501 7.5). */
static void base64_encode_flat(const void *data, size_t n, struct buf *out) {
  static const char alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  const unsigned char *p = data;
  for (size_t i = 0; i < n; i += 3) {
    unsigned v = (unsigned)p[i] << 16;
    if (i + 1 < n) v |= (unsigned)p[i + 1] << 8;
    if (i + 2 < n) v |= p[i + 2];
    char q[4] = {alphabet[v >> 18], alphabet[(v >> 12) & 63],
                 i + 1 < n ? alphabet[(v >> 6) & 63] : '=', i + 2 < n ? alphabet[v & 63] : '='};
    buf_add(out, q, 4);
  }
}

/*
** Encode base64 as a MIME body (RFC 2045 6.8): lines of 76 characters ending in CRLF,
** the last one too.
*/
static void base64_encode(const char *p, size_t n, struct buf *out) {
  for (size_t i = 0; i < n; i += 57) {    /* 57 bytes make 76 characters */
    base64_encode_flat(p + i, n - i < 57 ? n - i : 57, out);
    buf_add(out, "\r\n", 2);
  }
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
}

/* ------------------------------------------------------------------------- */
/* A decimal number of at most max, all of s; 0 if s is anything else. */
static int parse_uint(struct str s, long long max, long long *out) {
  long long v = 0;
  if (s.len == 0) return 0;
  for (size_t i = 0; i < s.len; i++) {
    if (s.p[i] < '0' || s.p[i] > '9') return 0;
    if (v > (max - (s.p[i] - '0')) / 10) return 0;   /* v * 10 + digit would pass max */
    v = v * 10 + (s.p[i] - '0');
  }
  *out = v;
  return 1;
}

/*
** Dates. Days since 1970-01-01 from a civil date (proleptic Gregorian), so no code
** depends on the machine's time zone (timegm is not in C11 or POSIX).
*/
static int64_t days_from_civil(int64_t y, int m, int d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  int64_t yoe = y - era * 400;
  int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

static int days_in_month(int64_t y, int m) {
  static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0) ? 29 : days[m - 1];
}

static void civil_from_days(int64_t z, int *y, int *m, int *d) {
  z += 719468;
  int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  int64_t doe = z - era * 146097;
  int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  int64_t mp = (5 * doy + 2) / 153;
  *d = (int)(doy - (153 * mp + 2) / 5 + 1);
  *m = (int)(mp < 10 ? mp + 3 : mp - 9);
  *y = (int)(yoe + era * 400 + (*m <= 2));
}

static const char *const month_names[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                             "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

static int month_from_name(const char *p, size_t n) {
  if (n < 3) return 0;
  for (int i = 0; i < 12; i++) {   /* x | 0x20 is a lowercase letter only for that letter */
    const char *m = month_names[i];
    if ((p[0] | 0x20) == (m[0] | 0x20) && (p[1] | 0x20) == m[1] && (p[2] | 0x20) == m[2])
      return i + 1;
  }
  return 0;
}

/*
** The seconds since the epoch (UTC) of a local date and time in zone tz (minutes east of
** UTC), and back: the local day number of time t in zone tz, with the seconds since that
** day began. Every date in the file goes through these two.
*/
static int64_t time_from_civil(int64_t y, int m, int d, int64_t hh, int64_t mm, int64_t ss,
                               int tz) {
  return days_from_civil(y, m, d) * 86400 + hh * 3600 + mm * 60 + ss - (int64_t)tz * 60;
}

static int64_t day_of(int64_t t, int tz, int64_t *secs_out) {
  int64_t local = t + (int64_t)tz * 60;
  int64_t day = local / 86400 - (local % 86400 < 0);   /* floor, also before 1970 */
  if (secs_out) *secs_out = local - day * 86400;
  return day;
}

/* A numeric zone, "+hhmm" or "-hhmm", as minutes east of UTC; 0 if z is not one. */
static int zone_numeric(struct str z, int *minutes) {
  long long hhmm;
  if (z.len != 5 || (z.p[0] != '+' && z.p[0] != '-') ||
      !parse_uint(str_make(z.p + 1, 4), 9999, &hhmm) || hhmm % 100 >= 60)
    return 0;                /* "+0960" is not a zone: it could not be written back */
  *minutes = (int)((hhmm / 100) * 60 + hhmm % 100) * (z.p[0] == '-' ? -1 : 1);
  return 1;
}

/* RFC 3501 date-time: "dd-Mon-yyyy hh:mm:ss +zzzz", day padded with a space. */
static void date_time_format(struct buf *b, int64_t t, int tz) {
  int64_t secs, days = day_of(t, tz, &secs);
  int y, m, d;
  civil_from_days(days, &y, &m, &d);
  int atz = tz < 0 ? -tz : tz;
  buf_printf(b, "\"%2d-%s-%04d %02d:%02d:%02d %c%02d%02d\"", d, month_names[m - 1], y,
             (int)(secs / 3600), (int)(secs / 60 % 60), (int)(secs % 60), tz < 0 ? '-' : '+',
             atz / 60, atz % 60);
}

/* ------------------------------------------------------------------------- */
/*
** Hashes, for the SASL mechanisms of section 9: MD5 (RFC 1321), SHA-1 and SHA-256
** (FIPS 180-4, RFC 6234), HMAC (RFC 2104) and PBKDF2 (RFC 8018 5.2), which is SCRAM's
** Hi() (RFC 5802 2.2). The three hashes pad 64-byte blocks alike and end with the bit
** length, so one context (struct hash_ctx) runs them all; they differ in the compression
** function, the start values and MD5's little-endian words. Speed is not the point: a
** SCRAM login runs 2 x 4096 HMACs, a few milliseconds.
*/
static uint32_t rotl32(uint32_t x, int n) {
  return (x << n) | (x >> (32 - n));
}

static uint32_t load_be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint32_t load_le32(const unsigned char *p) {
  return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

/* RFC 1321 3.4: four rounds of 16 steps; T[i] is floor(2^32 * |sin(i + 1)|). */
static void md5_compress(uint32_t *h, const unsigned char *block) {
  static const uint32_t t[64] = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613,
    0xfd469501, 0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193,
    0xa679438e, 0x49b40821, 0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d,
    0x02441453, 0xd8a1e681, 0xe7d3fbc8, 0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed,
    0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a, 0xfffa3942, 0x8771f681, 0x6d9d6122,
    0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70, 0x289b7ec6, 0xeaa127fa,
    0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665, 0xf4292244,
    0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb,
    0xeb86d391};
  static const int shift[4][4] = {{7, 12, 17, 22}, {5, 9, 14, 20}, {4, 11, 16, 23},
                                  {6, 10, 15, 21}};
  uint32_t x[16], a = h[0], b = h[1], c = h[2], d = h[3];
  for (int i = 0; i < 16; i++) x[i] = load_le32(block + 4 * i);
  for (int i = 0; i < 64; i++) {
    int round = i / 16, k;
    uint32_t f;
    if (round == 0) f = (b & c) | (~b & d), k = i;
    else if (round == 1) f = (b & d) | (c & ~d), k = (5 * i + 1) % 16;
    else if (round == 2) f = b ^ c ^ d, k = (3 * i + 5) % 16;
    else f = c ^ (b | ~d), k = (7 * i) % 16;
    uint32_t next = b + rotl32(a + f + x[k] + t[i], shift[round][i % 4]);
    a = d;
    d = c;
    c = b;
    b = next;
  }
  h[0] += a;
  h[1] += b;
  h[2] += c;
  h[3] += d;
}

/* FIPS 180-4 6.1.2: 80 steps over a message schedule of 80 words. */
static void sha1_compress(uint32_t *h, const unsigned char *block) {
  uint32_t w[80], a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
  for (int i = 0; i < 16; i++) w[i] = load_be32(block + 4 * i);
  for (int i = 16; i < 80; i++) w[i] = rotl32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
  for (int i = 0; i < 80; i++) {
    uint32_t f, k;
    if (i < 20) f = (b & c) | (~b & d), k = 0x5a827999;
    else if (i < 40) f = b ^ c ^ d, k = 0x6ed9eba1;
    else if (i < 60) f = (b & c) | (b & d) | (c & d), k = 0x8f1bbcdc;
    else f = b ^ c ^ d, k = 0xca62c1d6;
    uint32_t tmp = rotl32(a, 5) + f + e + k + w[i];
    e = d;
    d = c;
    c = rotl32(b, 30);
    b = a;
    a = tmp;
  }
  h[0] += a;
  h[1] += b;
  h[2] += c;
  h[3] += d;
  h[4] += e;
}

/* FIPS 180-4 6.2.2: 64 steps; K are the first 32 bits of the cube roots of 64 primes. */
static void sha256_compress(uint32_t *h, const unsigned char *block) {
  static const uint32_t k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};
  uint32_t w[64], v[8];
  for (int i = 0; i < 16; i++) w[i] = load_be32(block + 4 * i);
  for (int i = 16; i < 64; i++) {
    uint32_t s0 = rotl32(w[i - 15], 25) ^ rotl32(w[i - 15], 14) ^ (w[i - 15] >> 3);
    uint32_t s1 = rotl32(w[i - 2], 15) ^ rotl32(w[i - 2], 13) ^ (w[i - 2] >> 10);
    w[i] = w[i - 16] + s0 + w[i - 7] + s1;
  }
  memcpy(v, h, sizeof v);
  for (int i = 0; i < 64; i++) {
    uint32_t s1 = rotl32(v[4], 26) ^ rotl32(v[4], 21) ^ rotl32(v[4], 7);
    uint32_t ch = (v[4] & v[5]) ^ (~v[4] & v[6]);
    uint32_t t1 = v[7] + s1 + ch + k[i] + w[i];
    uint32_t s0 = rotl32(v[0], 30) ^ rotl32(v[0], 19) ^ rotl32(v[0], 10);
    uint32_t maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
    memmove(v + 1, v, 7 * sizeof v[0]);
    v[4] += t1;
    v[0] = t1 + s0 + maj;
  }
  for (int i = 0; i < 8; i++) h[i] += v[i];
}

static const struct hash_alg hash_md5 = {
  16, 1, md5_compress, {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476}};
static const struct hash_alg hash_sha1 = {
  20, 0, sha1_compress, {0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0}};
static const struct hash_alg hash_sha256 = {
  32, 0, sha256_compress,
  {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
   0x5be0cd19}};

static void hash_init(struct hash_ctx *ctx, const struct hash_alg *alg) {
  memset(ctx, 0, sizeof *ctx);
  ctx->alg = alg;
  memcpy(ctx->h, alg->init, sizeof ctx->h);
}

static void hash_update(struct hash_ctx *ctx, const void *data, size_t n) {
  const unsigned char *p = data;
  ctx->bytes += n;
  while (n) {
    size_t take = 64 - ctx->fill < n ? 64 - ctx->fill : n;
    memcpy(ctx->block + ctx->fill, p, take);
    ctx->fill += take;
    p += take;
    n -= take;
    if (ctx->fill == 64) {
      ctx->alg->compress(ctx->h, ctx->block);
      ctx->fill = 0;
    }
  }
}

/* Pad with 0x80, zeros and the length in bits (RFC 1321 3.1-3.2, FIPS 180-4 5.1.1). */
static void hash_final(struct hash_ctx *ctx, unsigned char *out) {
  uint64_t bits = ctx->bytes * 8;
  unsigned char len[8];
  for (int i = 0; i < 8; i++)
    len[i] = (unsigned char)(bits >> (ctx->alg->little_endian ? 8 * i : 56 - 8 * i));
  static const unsigned char pad[64] = {0x80};
  hash_update(ctx, pad, ctx->fill < 56 ? 56 - ctx->fill : 120 - ctx->fill);
  hash_update(ctx, len, 8);
  for (size_t i = 0; i < ctx->alg->len; i++) {
    uint32_t w = ctx->h[i / 4];
    out[i] = (unsigned char)(w >> (ctx->alg->little_endian ? 8 * (i % 4) : 24 - 8 * (i % 4)));
  }
}

static void hash_once(const struct hash_alg *alg, const void *p, size_t n, unsigned char *out) {
  struct hash_ctx ctx;
  hash_init(&ctx, alg);
  hash_update(&ctx, p, n);
  hash_final(&ctx, out);
}

/* RFC 2104 2: H(K ^ opad, H(K ^ ipad, text)), a key longer than a block hashed first. */
static void hmac(const struct hash_alg *alg, const void *key, size_t keylen, const void *msg,
                 size_t n, unsigned char *out) {
  unsigned char k[64] = {0}, pad[64], inner[HASH_MAX];
  if (keylen > 64) hash_once(alg, key, keylen, k);
  else if (keylen) memcpy(k, key, keylen);
  struct hash_ctx ctx;
  for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x36;
  hash_init(&ctx, alg);
  hash_update(&ctx, pad, 64);
  hash_update(&ctx, msg, n);
  hash_final(&ctx, inner);
  for (int i = 0; i < 64; i++) pad[i] = k[i] ^ 0x5c;
  hash_init(&ctx, alg);
  hash_update(&ctx, pad, 64);
  hash_update(&ctx, inner, alg->len);
  hash_final(&ctx, out);
}

/*
** RFC 8018 5.2 PBKDF2 with HMAC: outlen bytes of T_1 || T_2 || ..., each T_i the XOR of
** U_1..U_c, U_1 = PRF(P, S || INT(i)). SCRAM's Hi(P, S, c) is T_1 (RFC 5802 2.2).
*/
static void pbkdf2_hmac(const struct hash_alg *alg, const void *pw, size_t pwlen,
                        const void *salt, size_t saltlen, unsigned iterations,
                        unsigned char *out, size_t outlen) {
  unsigned char u[HASH_MAX], t[HASH_MAX], first[256 + 4];
  size_t s = saltlen < 256 ? saltlen : 256;   /* salts are 16 bytes; a longer one is cut */
  memcpy(first, salt, s);
  for (uint32_t block = 1; outlen; block++) {
    for (int i = 0; i < 4; i++) first[s + (size_t)i] = (unsigned char)(block >> (24 - 8 * i));
    hmac(alg, pw, pwlen, first, s + 4, u);
    memcpy(t, u, alg->len);
    for (unsigned c = 1; c < iterations; c++) {
      hmac(alg, pw, pwlen, u, alg->len, u);
      for (size_t i = 0; i < alg->len; i++) t[i] ^= u[i];
    }
    size_t take = outlen < alg->len ? outlen : alg->len;
    memcpy(out, t, take);
    out += take;
    outlen -= take;
  }
}

/* Equal digests, in a time that does not depend on where they differ. */
static int hash_equal(const unsigned char *a, const unsigned char *b, size_t n) {
  unsigned diff = 0;
  for (size_t i = 0; i < n; i++) diff |= (unsigned)(a[i] ^ b[i]);
  return diff == 0;
}

/* n bytes as 2n lower-case hex digits and a NUL, into out. */
static void hex_encode(const unsigned char *p, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[p[i] >> 4];
    out[2 * i + 1] = digits[p[i] & 15];
  }
  out[2 * n] = 0;
}

/*
** n unpredictable bytes for nonces and salts, from /dev/urandom. Without it (a chroot),
** a hash of the clock, the process and a counter: unique, though guessable, which is as
** much as a test server's nonce needs.
*/
static void random_bytes(unsigned char *out, size_t n) {
  static atomic_uint counter;
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  size_t got = 0;
  while (fd >= 0 && got < n) {
    ssize_t r = read(fd, out + got, n - got);
    if (r <= 0 && !(r < 0 && errno == EINTR)) break;
    if (r > 0) got += (size_t)r;
  }
  if (fd >= 0) close(fd);
  while (got < n) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned seed[4] = {(unsigned)ts.tv_sec, (unsigned)ts.tv_nsec, (unsigned)getpid(),
                        atomic_fetch_add(&counter, 1)};
    unsigned char d[32];
    hash_once(&hash_sha256, seed, sizeof seed, d);
    size_t take = n - got < sizeof d ? n - got : sizeof d;
    memcpy(out + got, d, take);
    got += take;
  }
}

/*
** Mailbox names: imapmem keeps them in modified UTF-7 (RFC 3501 5.1.3), the form an
** IMAP4rev1 client names them in. A session that enabled IMAP4rev2 or UTF8=ACCEPT names
** them in UTF-8 (RFC 9051 5.1, RFC 6855 3), converted here both ways, so every session
** sees the same mailbox whatever form it uses.
*/

/*
** A UTF-8 name in modified UTF-7: "&" is "&-", and characters outside printable ASCII go
** as UTF-16 in base64 with "," for "/", between "&" and "-". In the arena; NULL for bytes
** that are not UTF-8 or characters RFC 6855 3 keeps out of names (controls, U+2028,
** U+2029), with *why_out (may be NULL) saying which.
*/
static const char *mutf7_from_utf8(struct arena *a, const char *in, const char **why_out) {
  static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";
  struct buf out = {0};
  const unsigned char *p = (const unsigned char *)in;
  unsigned bits = 0;
  int nbits = 0, shifted = 0, bad = 0, refused = 0;
  while (*p && !bad) {
    uint32_t c = *p;
    int len = c < 0x80 ? 1 : c >= 0xc2 && c < 0xe0 ? 2 : c >= 0xe0 && c < 0xf0 ? 3
            : c >= 0xf0 && c < 0xf5 ? 4 : 0;
    if (len > 1) c &= 0x3fu >> (len - 1);
    for (int k = 1; k < len && !bad; k++) {
      bad = (p[k] & 0xc0) != 0x80;
      c = c << 6 | (p[k] & 0x3fu);
    }
    bad |= !len || (len == 3 && (c < 0x800 || (c >= 0xd800 && c < 0xe000))) ||
           (len == 4 && (c < 0x10000 || c > 0x10ffff));
    if (bad) break;
    if (c < 0x20 || (c >= 0x7f && c < 0xa0) || c == 0x2028 || c == 0x2029) {  /* RFC 6855 3 */
      if (why_out) *why_out = "no control characters, U+2028 or U+2029";
      refused = 1;
      break;
    }
    p += len;
    if (c >= 0x20 && c <= 0x7e) {
      if (shifted && nbits) buf_addc(&out, b64[(bits << (6 - nbits)) & 63]);
      if (shifted) buf_addc(&out, '-');
      shifted = nbits = 0;
      if (c == '&') buf_adds(&out, "&-");
      else buf_addc(&out, (char)c);
      continue;
    }
    if (!shifted) buf_addc(&out, '&');
    shifted = 1;
    uint32_t units[2] = {c, 0};
    int nu = 1;
    if (c >= 0x10000) {      /* a surrogate pair */
      units[0] = 0xd800 | ((c - 0x10000) >> 10);
      units[1] = 0xdc00 | ((c - 0x10000) & 0x3ff);
      nu = 2;
    }
    for (int u = 0; u < nu; u++) {
      bits = (bits << 16) | units[u];
      for (nbits += 16; nbits >= 6; nbits -= 6) buf_addc(&out, b64[(bits >> (nbits - 6)) & 63]);
      bits &= (1u << nbits) - 1;
    }
  }
  if (shifted && nbits) buf_addc(&out, b64[(bits << (6 - nbits)) & 63]);
  if (shifted) buf_addc(&out, '-');
  if (bad && why_out) *why_out = "not UTF-8";
  const char *r = bad || refused || out.oom ? NULL : arena_strndup(a, out.p ? out.p : "", out.len);
  buf_free(&out);
  return r;
}


/* The value of a modified-base64 digit (RFC 3501 5.1.3: RFC 2152's with ',' for '/'). */
static int mutf7_digit(int c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  return c == '+' ? 62 : c == ',' ? 63 : -1;
}

/* Code point c as UTF-8 onto out. */
static void utf8_put(struct buf *out, uint32_t c) {
  if (c < 0x80) {
    buf_addc(out, (char)c);
  } else if (c < 0x800) {
    buf_addc(out, (char)(0xc0 | c >> 6));
    buf_addc(out, (char)(0x80 | (c & 0x3f)));
  } else if (c < 0x10000) {
    buf_addc(out, (char)(0xe0 | c >> 12));
    buf_addc(out, (char)(0x80 | ((c >> 6) & 0x3f)));
    buf_addc(out, (char)(0x80 | (c & 0x3f)));
  } else {
    buf_addc(out, (char)(0xf0 | c >> 18));
    buf_addc(out, (char)(0x80 | ((c >> 12) & 0x3f)));
    buf_addc(out, (char)(0x80 | ((c >> 6) & 0x3f)));
    buf_addc(out, (char)(0x80 | (c & 0x3f)));
  }
}

/* Are the n bytes at p UTF-8 (RFC 3629 4: shortest forms, no surrogates)? */
static int utf8_valid(const char *p, size_t n) {
  const unsigned char *u = (const unsigned char *)p;
  for (size_t i = 0; i < n;) {
    uint32_t c = u[i];
    int len = c < 0x80 ? 1 : c >= 0xc2 && c < 0xe0 ? 2 : c >= 0xe0 && c < 0xf0 ? 3
            : c >= 0xf0 && c < 0xf5 ? 4 : 0;
    if (!len || i + (size_t)len > n) return 0;
    if (len > 1) c &= 0x3fu >> (len - 1);
    for (int k = 1; k < len; k++) {
      if ((u[i + (size_t)k] & 0xc0) != 0x80) return 0;
      c = c << 6 | (u[i + (size_t)k] & 0x3fu);
    }
    if ((len == 3 && (c < 0x800 || (c >= 0xd800 && c < 0xe000))) ||
        (len == 4 && (c < 0x10000 || c > 0x10ffff)))
      return 0;
    i += (size_t)len;
  }
  return 1;
}

/*
** A stored (modified UTF-7) name in UTF-8, onto out. A name that is not valid modified
** UTF-7 (a fixture's file name, say) goes out byte for byte: it names the mailbox the
** same way when it comes back, since only "&" starts a shift.
*/
static void mutf7_to_utf8(struct buf *out, const char *in) {
  struct buf u = {0};
  const char *p = in;
  int bad = 0;
  while (*p && !bad) {
    if (*p != '&') {
      buf_addc(&u, *p++);
      continue;
    }
    if (p[1] == '-') {       /* "&-" is "&" */
      buf_addc(&u, '&');
      p += 2;
      continue;
    }
    uint32_t bits = 0, high = 0;
    int nbits = 0, units = 0;
    for (p++; *p && *p != '-' && !bad; p++) {
      int d = mutf7_digit((unsigned char)*p);
      if (d < 0) bad = 1;
      bits = (bits << 6 | (uint32_t)d) & 0x3fffff;
      if (bad || (nbits += 6) < 16) continue;
      uint32_t unit = (bits >> (nbits - 16)) & 0xffff;
      nbits -= 16;
      units++;
      if (unit >= 0xd800 && unit < 0xdc00 && !high) {
        high = unit;
      } else if (unit >= 0xdc00 && unit < 0xe000 && high) {
        utf8_put(&u, 0x10000 + ((high - 0xd800) << 10) + (unit - 0xdc00));
        high = 0;
      } else if (high || (unit >= 0xd800 && unit < 0xe000) || (unit >= 0x20 && unit < 0x7f)) {
        bad = 1;             /* a lone surrogate, or ASCII that should not be shifted */
      } else {
        utf8_put(&u, unit);
      }
    }
    /* RFC 3501 5.1.3 (RFC 2152): at most 5 zero bits pad the last unit; "-" ends it */
    if (*p != '-' || !units || high || nbits >= 6 || (bits & ((1u << nbits) - 1))) bad = 1;
    else p++;
  }
  if (bad || u.oom) buf_adds(out, in);
  else buf_add(out, u.p ? u.p : "", u.len);
  buf_free(&u);
}

/*
** Helper threads (issue 15: the loader's reader, the builder of a first FETCH's renderings
** or a first SORT's keys) run only on a core the process has to spare: at most one a CPU
** beyond the first, counted here.
** spare_core_take() returns 1 if the caller may start one, which spare_core_give() ends.
*/
static atomic_int spare_cores_taken;

static int spare_core_take(void) {
  long spare = sysconf(_SC_NPROCESSORS_ONLN) - 1;
  if (atomic_fetch_add(&spare_cores_taken, 1) < spare) return 1;
  atomic_fetch_sub(&spare_cores_taken, 1);
  return 0;
}

static void spare_core_give(void) { atomic_fetch_sub(&spare_cores_taken, 1); }

/*
** ===========================================================================
** 2  The message model: RFC 5322 headers, MIME tree, ENVELOPE and BODYSTRUCTURE
** ===========================================================================
** Owns: struct msgmeta (a message's table of MIME parts, as byte offsets, with the facts
** of each part's header) and struct rendered (its ENVELOPE, BODY and BODYSTRUCTURE text),
** and the decoding SEARCH and FETCH BINARY use (and the base64 a literal8 APPEND's binary
** parts are stored in); where that metadata and the sort keys are kept (meta_alloc: the
** room a fixture's arena has after its messages, else the heap); and the build-ahead
** helper thread, which shares a large first pass's building with its command.
** Calls: section 1.
** Locking: none. A message's bytes never change, so each is computed once, by whichever
** thread first needs it, and published with an atomic compare-and-swap; a thread that
** loses the race frees its own copy (meta_free: unless it came from an arena's room). The
** build-ahead helper and its command take runs of messages from one atomic counter
** (struct build_ahead).
** Limits: MIME nesting deeper than IMAPMEM_MAX_DEPTH is treated as a leaf.
**
** Parsing accepts bare LF as well as CRLF, since APPEND stores a client's bytes as sent.
*/
struct field {               /* one header field; value is raw (folding kept, no CRLF) */
  struct str name, value;
  const char *start;         /* the whole field, CRLF included */
  size_t len;
};

/* The next field of the header block at *pos; 0 at the blank line or the end. */
static int header_next(const char **pos, const char *end, struct field *f) {
  const char *p = *pos;
  while (p < end) {
    if (*p == '\n' || (*p == '\r' && p + 1 < end && p[1] == '\n')) {
      *pos = p;              /* at the blank line that ends the header */
      return 0;
    }
    const char *q = p;
    for (;;) {               /* a field runs until a line break not followed by WSP */
      const char *nl = memchr(q, '\n', (size_t)(end - q));
      if (!nl) {
        q = end;
        break;
      }
      q = nl + 1;
      if (q >= end || (*q != ' ' && *q != '\t')) break;
    }
    const char *colon = memchr(p, ':', (size_t)(q - p));
    const char *line = p;
    p = q;
    if (!colon || colon == line || *line == ' ' || *line == '\t') continue;  /* not a field */
    const char *ne = colon;
    while (ne > line && (ne[-1] == ' ' || ne[-1] == '\t')) ne--;
    const char *ve = q;
    if (ve > colon + 1 && ve[-1] == '\n') ve--;
    if (ve > colon + 1 && ve[-1] == '\r') ve--;
    f->name = str_make(line, (size_t)(ne - line));
    f->value = str_make(colon + 1, (size_t)(ve - colon - 1));
    f->start = line;
    f->len = (size_t)(q - line);
    *pos = p;
    return 1;
  }
  *pos = p;
  return 0;
}

/* The value of the first field called name in the header [p, end), if any. */
static int header_get(const char *p, const char *end, const char *name, struct str *out) {
  struct field f;
  while (header_next(&p, end, &f))
    if (str_ieq(f.name, name)) {
      *out = f.value;
      return 1;
    }
  return 0;
}

/* Length of the header block at p, blank line included (all of it if there is none). */
static size_t header_length(const char *p, size_t n) {
  size_t i = 0;
  while (i < n) {
    const char *nl = memchr(p + i, '\n', n - i);
    size_t linelen = nl ? (size_t)(nl - (p + i)) : n - i;
    if (linelen == 0 || (linelen == 1 && p[i] == '\r')) return nl ? i + linelen + 1 : n;
    if (!nl) return n;
    i += linelen + 1;
  }
  return n;
}

/* Unfold a field value (RFC 5322 2.2.3: remove CRLF before WSP) and trim it. */
static void header_unfold(struct str v, struct buf *out) {
  v = str_trim(v);
  for (size_t i = 0; i < v.len; i++) {
    if (v.p[i] == '\r' || v.p[i] == '\n') continue;
    buf_addc(out, v.p[i]);
  }
}

/*
** Which of the H_* fields a field name is, or -1. This runs for every field of every header
** read, most of which are none of them: the length picks at most two candidates (ORDER
** H_*: ids plus one, by header_names' lengths), compared with ASCII case folding inline.
*/
static int header_id(struct str name) {
  static const unsigned char by_len[26][2] = {
    [2] = {H_TO + 1, H_CC + 1}, [3] = {H_BCC + 1, 0}, [4] = {H_DATE + 1, H_FROM + 1},
    [6] = {H_SENDER + 1, 0}, [7] = {H_SUBJECT + 1, 0}, [8] = {H_REPLY_TO + 1, 0},
    [10] = {H_MESSAGE_ID + 1, H_CONTENT_ID + 1}, [11] = {H_IN_REPLY_TO + 1, H_CONTENT_MD5 + 1},
    [12] = {H_CONTENT_TYPE + 1, 0}, [16] = {H_CONTENT_LANGUAGE + 1, H_CONTENT_LOCATION + 1},
    [19] = {H_CONTENT_DESCRIPTION + 1, H_CONTENT_DISPOSITION + 1},
    [25] = {H_CONTENT_ENCODING + 1, 0}};
  if (name.len >= sizeof by_len / sizeof by_len[0]) return -1;
  for (int c = 0; c < 2 && by_len[name.len][c]; c++) {
    int i = by_len[name.len][c] - 1;
    if (memcmp(name.p, header_names[i].name, name.len) == 0) return i;  /* as usually spelt */
    size_t k = 0;
    for (; k < name.len; k++) {
      char a = name.p[k], b = header_names[i].name[k];
      if (a != b && ((a | 0x20) != (b | 0x20) || (b | 0x20) < 'a' || (b | 0x20) > 'z')) break;
    }
    if (k == name.len) return i;
  }
  return -1;
}

/*
** The fields BODYSTRUCTURE uses, found in one pass over a header instead of one pass per
** field. Of a field given twice the first counts, but the last Content-Disposition: what
** Dovecot does, so that both show a client the same type and the same attachments.
*/
static const char *headers_scan(const char *h, const char *hend, struct headers *out) {
  memset(out, 0, sizeof *out);
  struct field f;
  while (header_next(&h, hend, &f)) {
    int i = header_id(f.name);
    if (i < 0) continue;
    if (!out->have[i] || i == H_CONTENT_DISPOSITION) {
      out->v[i] = f.value;
      out->have[i] = 1;
    }
    out->count[i] += out->count[i] < 2;
  }
  return h;                  /* where the scan stopped: the blank line, or hend */
}

/*
** A body's size in text lines (RFC 3501 7.4.2): its line breaks. A last line with none is
** not counted; before a boundary that is every part's last line, since the CRLF belongs
** to the boundary (RFC 2046 5.1.1). Dovecot counts the same way.
*/
static size_t count_lines(const char *p, size_t n) {
  size_t lines = 0;
  const char *q = p, *end = p + n;
  while ((q = memchr(q, '\n', (size_t)(end - q))) != NULL) {
    lines++;
    q++;
  }
  return lines;
}

/* ------------------------------------------------------------------------- */
/*
** Structured fields (RFC 5322 3.2, RFC 2045 5.1): a small lexer shared by Content-Type,
** Content-Disposition, address lists and dates. It skips comments and folding white
** space, and yields atoms/tokens, quoted strings (unescaped) and single specials.
*/
enum { TOK_END, TOK_ATOM, TOK_QUOTED, TOK_SPECIAL, TOK_DOMLIT, TOK_COMMENT };
struct lexer {
  const char *p, *end;
  const char *specials;       /* which bytes stand alone */
  int comments;               /* yield comments as TOK_COMMENT instead of skipping them */
};
struct token {
  int type;
  struct str text;            /* atom / special / domain literal: a view */
  struct buf q;               /* quoted string or comment, unescaped (owned by the caller) */
};

/*
** Is c one of the lexer's specials? A letter, digit or '-' never is (no set has one), which
** spares most bytes of an atom the strchr; NUL always is (strchr finds the terminator).
*/
static int lex_special(const struct lexer *lx, char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-')
    return 0;
  return strchr(lx->specials, c) != NULL;
}

/* Past white space and line breaks (what the lexer skips but comments), for the readers
   of the usual forms that do without it. */
static const char *skip_wsp(const char *p, const char *e) {
  while (p < e && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')) p++;
  return p;
}

static void lex_skip_cfws(struct lexer *lx) {
  int depth = 0;
  while (lx->p < lx->end) {
    char c = *lx->p;
    if (depth) {
      if (c == '\\' && lx->p + 1 < lx->end) lx->p++;
      else if (c == '(') depth++;
      else if (c == ')') depth--;
      lx->p++;
    } else if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      lx->p++;
    } else if (c == '(' && !lx->comments) {
      depth = 1;
      lx->p++;
    } else {
      break;
    }
  }
}

/* A comment's text at lx->p ('('): quoted pairs undone, nested parentheses kept, line
   breaks of folding removed (RFC 5322 3.2.2). */
static void lex_comment(struct lexer *lx, struct token *t) {
  int depth = 0;
  do {
    char c = *lx->p++;
    if (c == '\\' && lx->p < lx->end) c = *lx->p++;
    else if (c == '(' && depth++ == 0) continue;
    else if (c == ')' && --depth == 0) break;
    if (c != '\r' && c != '\n') buf_addc(&t->q, c);
  } while (lx->p < lx->end);
  if (!t->q.p) buf_add(&t->q, "", 0);
  t->text = str_make(t->q.p, t->q.len);
}

static int lex_next(struct lexer *lx, struct token *t) {
  lex_skip_cfws(lx);
  buf_reset(&t->q);
  if (lx->p >= lx->end) return t->type = TOK_END;
  const char *s = lx->p;
  if (*s == '(' && lx->comments) {
    lex_comment(lx, t);
    return t->type = TOK_COMMENT;
  }
  if (*s == '"') {
    lx->p++;
    while (lx->p < lx->end && *lx->p != '"') {
      if (*lx->p == '\\' && lx->p + 1 < lx->end) lx->p++;
      if (*lx->p != '\r' && *lx->p != '\n') buf_addc(&t->q, *lx->p);
      lx->p++;
    }
    if (lx->p < lx->end) lx->p++;
    if (!t->q.p) buf_add(&t->q, "", 0);
    t->text = str_make(t->q.p, t->q.len);
    return t->type = TOK_QUOTED;
  }
  if (*s == '[' && strchr(lx->specials, '[')) {
    const char *e = memchr(s, ']', (size_t)(lx->end - s));
    lx->p = e ? e + 1 : lx->end;
    t->text = str_make(s, (size_t)(lx->p - s));
    return t->type = TOK_DOMLIT;
  }
  if (lex_special(lx, *s) || *s == '(' || *s == ')') {
    lx->p++;
    t->text = str_make(s, 1);
    return t->type = TOK_SPECIAL;
  }
  while (lx->p < lx->end) {
    char c = *lx->p;
    int plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (!plain && (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '"' || c == '(' ||
                   c == ')' || lex_special(lx, c)))
      break;
    lx->p++;
  }
  t->text = str_make(s, (size_t)(lx->p - s));
  return t->type = TOK_ATOM;
}

/* ------------------------------------------------------------------------- */
/* Dates (RFC 5322 3.3 with the obsolete forms of 4.3). */
static int zone_from_name(struct str z) {
  static const struct { const char *name; int minutes; } zones[] = {
    {"UT", 0}, {"UTC", 0}, {"GMT", 0}, {"Z", 0}, {"EST", -300}, {"EDT", -240}, {"CST", -360},
    {"CDT", -300}, {"MST", -420}, {"MDT", -360}, {"PST", -480}, {"PDT", -420}};
  for (size_t i = 0; i < sizeof zones / sizeof zones[0]; i++)
    if (str_ieq(z, zones[i].name)) return zones[i].minutes;
  return 0;                  /* military and unknown zones: RFC 5322 4.3 says treat as +0000 */
}

/*
** The words of a date for date_parse (atoms, and ':' on its own; ',' dropped) as the lexer
** with specials ",:" yields them, for the usual dates without its costs: -1 if the value has
** a comment, a quoted string or a NUL, which the lexer reads.
*/
static int date_words(struct str v, struct str *w, int max) {
  const char *p = v.p, *e = v.p + v.len;
  int n = 0;
  while (n < max && p < e) {
    char c = *p;
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == ',') {
      p++;
    } else if (c == '(' || c == ')' || c == '"' || c == 0) {
      return -1;
    } else if (c == ':') {
      w[n++] = str_make(p++, 1);
    } else {
      const char *s = p;
      while (p < e && (c = *p) != ' ' && c != '\t' && c != '\r' && c != '\n' && c != ',' &&
             c != ':' && c != '(' && c != ')' && c != '"' && c != 0)
        p++;
      w[n++] = str_make(s, (size_t)(p - s));
    }
  }
  return n;
}

/*
** date_parse's usual case, the date as nearly every mailer writes it (RFC 5322 3.3):
** "Www, d Mmm yyyy hh:mm:ss +zzzz", the day of the week optional, the day one or two
** digits, nothing after the zone; 0 for anything else (out of range too), which date_parse
** reads word by word. It gives what that reading would, at a tenth of the cost: a first
** SORT reads every message's date.
*/
static int date_parse_usual(struct str v, int64_t *t_out, int *tz_out) {
  const char *p = v.p, *e = v.p + v.len;
  while (p < e && *p == ' ') p++;
  if (e - p >= 5 && isalpha((unsigned char)p[0]) && isalpha((unsigned char)p[1]) &&
      isalpha((unsigned char)p[2]) && p[3] == ',' && p[4] == ' ') {
    if (month_from_name(p, 3)) return 0;   /* a month there: not a day of the week */
    p += 5;
  }
  size_t dlen = e - p >= 2 && p[1] == ' ' ? 1 : 2;
  if ((size_t)(e - p) != dlen + 24) return 0;   /* " Mmm yyyy hh:mm:ss +zzzz" */
  long long day, year, hour, min, sec;
  int mon = month_from_name(p + dlen + 1, 3), tz;
  if (!parse_uint(str_make(p, dlen), 31, &day) || day < 1 || !mon) return 0;
  p += dlen;
  if (p[0] != ' ' || p[4] != ' ' || p[9] != ' ' || p[12] != ':' || p[15] != ':' ||
      p[18] != ' ' || !parse_uint(str_make(p + 5, 4), 9999, &year) ||
      !parse_uint(str_make(p + 10, 2), 23, &hour) || !parse_uint(str_make(p + 13, 2), 59, &min) ||
      !parse_uint(str_make(p + 16, 2), 60, &sec) || !zone_numeric(str_make(p + 19, 5), &tz))
    return 0;
  *t_out = time_from_civil(year, mon, (int)day, hour, min, sec, tz);
  *tz_out = tz;
  return 1;
}

/* date_parse word by word: any date, at the lexer's cost if it has comments. */
static int date_parse_words(struct str v, int64_t *t_out, int *tz_out) {
  struct str w[12];
  int nw = date_words(v, w, 12);
  if (nw < 0) {
    struct lexer lx = {v.p, v.p + v.len, ",:", 0};
    struct token tk = {0};
    nw = 0;
    while (nw < 12 && lex_next(&lx, &tk) != TOK_END) {
      if (tk.type == TOK_SPECIAL && tk.text.p[0] == ',') continue;
      if (tk.type == TOK_QUOTED) continue;
      w[nw++] = tk.text;
    }
    buf_free(&tk.q);
  }
  int i = 0;
  if (i < nw && w[i].len >= 3 && isalpha((unsigned char)w[i].p[0]) &&
      !month_from_name(w[i].p, w[i].len))
    i++;                     /* day of week */
  long long day, year, hour, min, sec = 0;
  int mon;
  if (i + 2 >= nw) return 0;
  if (!parse_uint(w[i], 31, &day)) return 0;
  if (!(mon = month_from_name(w[i + 1].p, w[i + 1].len)) || w[i + 1].len != 3) return 0;
  if (!parse_uint(w[i + 2], 9999, &year)) return 0;
  if (w[i + 2].len == 2) year += year < 50 ? 2000 : 1900;      /* RFC 5322 4.3 */
  else if (w[i + 2].len == 3) year += 1900;
  i += 3;
  if (i + 2 >= nw || !parse_uint(w[i], 23, &hour) || w[i + 1].p[0] != ':' ||
      !parse_uint(w[i + 2], 59, &min))
    return 0;
  i += 3;
  if (i + 1 < nw && w[i].p[0] == ':') {
    if (!parse_uint(w[i + 1], 60, &sec)) return 0;
    i += 2;
  }
  int tz = 0;
  if (i < nw && !zone_numeric(w[i], &tz)) tz = zone_from_name(w[i]);
  if (day < 1) return 0;
  *t_out = time_from_civil(year, mon, (int)day, hour, min, sec, tz);
  *tz_out = tz;
  return 1;
}

/* Parse "[Day,] dd Mon yyyy hh:mm[:ss] zone" into UTC seconds and zone minutes. */
static int date_parse(struct str v, int64_t *t_out, int *tz_out) {
  return date_parse_usual(v, t_out, tz_out) || date_parse_words(v, t_out, tz_out);
}

/* ------------------------------------------------------------------------- */
/*
** Content-Type and Content-Disposition parameters, with RFC 2231 continuations joined:
** name*0="a" name*1="b" becomes NAME "ab"; if any piece is extended (name*0*=...), the
** attribute is NAME* and its value stays percent-encoded, as the RFC writes it.
*/
struct param {
  struct str name;            /* base name, without the '*...' suffix */
  int section;                /* -1: no section number */
  int extended;
  struct str value;           /* into the owning mime_scratch's buffers */
};
struct ctype {
  struct str type, subtype;   /* empty if absent or invalid */
  struct param params[32];
  int nparams;
  struct buf store;           /* unescaped quoted values live here */
};

static void ctype_free(struct ctype *ct) {
  buf_free(&ct->store);
}

/* No type and no parameters (params[] is read only up to nparams: not cleared). */
static void ctype_clear(struct ctype *ct) {
  ct->type = ct->subtype = str_make(NULL, 0);
  ct->nparams = 0;
  memset(&ct->store, 0, sizeof ct->store);
}

/* Parse "type/subtype *(; attr=value)" (with_subtype) or "type *(; attr=value)". */
/* RFC 2045 5.1 token: printable US-ASCII (the lexer has already split at tspecials). */
static int is_mime_token(struct str t) {
  for (size_t i = 0; i < t.len; i++)
    if ((unsigned char)t.p[i] <= 0x20 || (unsigned char)t.p[i] >= 0x7f) return 0;
  return t.len > 0;
}

/*
** A parameter's value after its '=' (RFC 2045 5.1), as senders write it: a quoted string
** (unescaped into store; one never closed makes the parameter invalid: 0), or else every
** byte up to ';', white space or a comment, so that an unquoted value with tspecials in
** it (boundary=----=_Part_1, name==?utf-8?q?...?=, as common mailers write them) is read
** whole. An empty value is "".
*/
static int param_value(struct lexer *lx, struct str *value, struct buf *store) {
  while (lx->p < lx->end && (*lx->p == ' ' || *lx->p == '\t' || *lx->p == '\r' || *lx->p == '\n'))
    lx->p++;
  if (lx->p < lx->end && *lx->p == '"') {
    /* room for every quoted value that may follow, so that views into store stay put */
    if (!store->p && !buf_reserve(store, (size_t)(lx->end - lx->p) + 1)) return 0;
    if (store->cap - store->len < (size_t)(lx->end - lx->p))
      return 0;              /* cannot happen (reserved) but for a failed allocation */
    size_t at = store->len;
    for (const char *q = lx->p + 1; q < lx->end; q++) {
      if (*q == '\\' && q + 1 < lx->end) q++;
      else if (*q == '"') {
        lx->p = q + 1;
        *value = str_make(store->p + at, store->len - at);
        return 1;
      }
      if (*q != '\r' && *q != '\n') buf_addc(store, *q);
    }
    store->len = at;
    return 0;
  }
  const char *s = lx->p;
  while (lx->p < lx->end && *lx->p != ';' && *lx->p != ' ' && *lx->p != '\t' && *lx->p != '\r' &&
         *lx->p != '\n' && *lx->p != '(')
    lx->p++;
  *value = str_make(s, (size_t)(lx->p - s));
  return 1;
}

/* Is c a byte of a MIME token as ctype_parse's lexer reads one (RFC 2045 5.1)? */
static int ctype_token_byte(unsigned char c) {
  if (c <= 0x20 || c >= 0x7f) return 0;
  switch (c) {
  case '(': case ')': case '<': case '>': case '@': case ',': case ';': case ':': case '\\':
  case '"': case '/': case '[': case ']': case '?': case '=':
    return 0;
  }
  return 1;
}

static const char *ctype_token(const char *p, const char *e) {
  while (p < e && ctype_token_byte((unsigned char)*p)) p++;
  return p;
}

/*
** The usual Content-Type and Content-Disposition, read without the lexer (issue 15):
** "type/subtype" (or "type") then "; name=value" or "; name=\"value\"" pieces, white space
** between them, no comments, escapes, folded quoted strings or RFC 2231 names. Values are
** views of v. The result is what ctype_parse's general path makes of them; 0 for anything
** else.
*/
static int ctype_parse_plain(struct str v, int with_subtype, struct ctype *ct) {
  const char *p = skip_wsp(v.p, v.p + v.len), *e = v.p + v.len, *t = ctype_token(p, e);
  if (t == p) return 0;
  ct->type = str_make(p, (size_t)(t - p));
  p = skip_wsp(t, e);
  if (with_subtype) {
    if (p == e || *p != '/') return 0;
    p = skip_wsp(p + 1, e);
    if ((t = ctype_token(p, e)) == p) return 0;
    ct->subtype = str_make(p, (size_t)(t - p));
    p = skip_wsp(t, e);
  }
  while (p < e) {
    if (*p != ';' || ct->nparams == (int)(sizeof ct->params / sizeof ct->params[0])) return 0;
    const char *name = skip_wsp(p + 1, e);
    if ((t = ctype_token(name, e)) == name || memchr(name, '*', (size_t)(t - name))) return 0;
    p = skip_wsp(t, e);
    if (p == e || *p != '=') return 0;
    const char *val = skip_wsp(p + 1, e), *vend;
    if (val < e && *val == '"') {
      for (vend = ++val; vend < e && *vend != '"' && *vend != '\\' && *vend != '\r' &&
                         *vend != '\n'; vend++)
        ;
      if (vend == e || *vend != '"') return 0;
      p = vend + 1;
    } else {
      for (vend = val; vend < e && *vend != ';' && *vend != ' ' && *vend != '\t' &&
                       *vend != '\r' && *vend != '\n' && *vend != '('; vend++)
        ;
      p = vend;
    }
    struct param *pm = &ct->params[ct->nparams++];
    pm->name = str_make(name, (size_t)(t - name));
    pm->section = -1;
    pm->extended = 0;
    pm->value = str_make(val, (size_t)(vend - val));
    p = skip_wsp(p, e);
  }
  return 1;
}

static void ctype_parse(struct str v, int with_subtype, struct ctype *ct) {
  ctype_clear(ct);
  if (ctype_parse_plain(v, with_subtype, ct)) return;
  struct lexer lx = {v.p, v.p + v.len, "()<>@,;:\\/[]?=", 0};
  struct token tk = {0};
  ctype_clear(ct);            /* param_value reserves ct->store at the first quote */
  /* a type with a control or 8-bit byte is invalid: the default (RFC 2045 5.2) */
  if (lex_next(&lx, &tk) != TOK_ATOM || !is_mime_token(tk.text)) goto done;
  ct->type = tk.text;
  if (with_subtype) {
    if (lex_next(&lx, &tk) != TOK_SPECIAL || tk.text.p[0] != '/' ||
        lex_next(&lx, &tk) != TOK_ATOM || !is_mime_token(tk.text)) {
      ct->type = str_make("", 0);
      goto done;
    }
    ct->subtype = tk.text;
  }
  int ty = lex_next(&lx, &tk);
  while (ty != TOK_END) {
    if (ty != TOK_SPECIAL || tk.text.p[0] != ';') {   /* junk: on to the next ';' */
      ty = lex_next(&lx, &tk);
      continue;
    }
    /* empty parameters (";;") and names with no value are skipped, not the end */
    struct str name = str_make("", 0);
    if ((ty = lex_next(&lx, &tk)) == TOK_ATOM) {
      name = tk.text;
      ty = lex_next(&lx, &tk);
    }
    if (ty != TOK_SPECIAL || tk.text.p[0] != '=') continue;
    struct str value;
    if (!param_value(&lx, &value, &ct->store)) {
      ty = lex_next(&lx, &tk);
      continue;
    }
    ty = lex_next(&lx, &tk);
    if (ct->nparams == (int)(sizeof ct->params / sizeof ct->params[0])) break;
    struct param *pm = &ct->params[ct->nparams++];
    const char *star = memchr(name.p, '*', name.len);
    pm->section = -1;
    pm->extended = 0;
    pm->name = name;
    if (star) {
      pm->name = str_make(name.p, (size_t)(star - name.p));
      struct str rest = str_make(star + 1, (size_t)(name.p + name.len - star - 1));
      if (rest.len && rest.p[rest.len - 1] == '*') {
        pm->extended = 1;
        rest.len--;
      } else if (rest.len == 0) {
        pm->extended = 1;
      }
      long long sec;
      if (rest.len && parse_uint(rest, 999, &sec)) pm->section = (int)sec;
    }
    pm->value = value;
  }
done:
  buf_free(&tk.q);
}

/* The (joined) value of parameter name, into out; 0 if absent. */
static int ctype_param(const struct ctype *ct, const char *name, struct buf *out) {
  int found = 0;
  for (int sec = -1; sec < 1000; sec++) {
    int got = 0;
    for (int i = 0; i < ct->nparams; i++) {
      if (ct->params[i].section == sec && str_ieq(ct->params[i].name, name)) {
        buf_add(out, ct->params[i].value.p, ct->params[i].value.len);
        got = found = 1;
        break;
      }
    }
    if (!got && sec >= 0) break;
    if (sec == -1 && got) break;
  }
  return found;
}

/* ------------------------------------------------------------------------- */
/* IMAP strings (RFC 3501 4.3): quoted when safe, else a literal; NIL when absent. */
/* Has any of the 8 bytes in x no place in a quoted string: a control or 8-bit byte, DEL,
   '"' or '\\'? (Word-at-a-time tests: a byte below 0x20, above 0x7e, or equal.) */
static int quoted_word_bad(uint64_t x) {
  const uint64_t ones = 0x0101010101010101u, high = 0x8080808080808080u;
  uint64_t t = x & ~high;    /* each byte's low 7 bits: no sum below carries out of a byte */
  uint64_t good = (t + ones * 0x60)                 /* at least 0x20 */
                & ~(t + ones)                       /* not 0x7f */
                & ((t ^ ones * '"') + ones * 0x7f)  /* not '"' */
                & ((t ^ ones * '\\') + ones * 0x7f) /* not '\\' */
                & ~x;                               /* not 8-bit */
  return (good & high) != high;
}

/* Can the n bytes at p go out as a quoted string? Those over 1024 go as a literal. */
static int quoted_fits(const char *p, size_t n) {
  uint64_t x = 0x2020202020202020u;   /* spaces: a short string padded with them */
  if (n < 8) {
    for (size_t i = 0; i < n; i++) x = x << 8 | (unsigned char)p[i];
    return !quoted_word_bad(x);
  }
  if (n > 1024) return 0;
  for (size_t i = 0; i + 8 < n; i += 8) {
    memcpy(&x, p + i, 8);
    if (quoted_word_bad(x)) return 0;
  }
  memcpy(&x, p + n - 8, 8);  /* the last 8, over bytes already tested */
  return !quoted_word_bad(x);
}

static void out_string(struct buf *b, const char *p, size_t n) {
  if (quoted_fits(p, n)) {   /* QUOTED-CHAR but for quoted-specials (RFC 3501 9) */
    if (!buf_reserve(b, n + 2)) return;
    char *o = b->p + b->len;
    o[0] = '"';
    memcpy(o + 1, p, n);
    o[n + 1] = '"';
    o[n + 2] = 0;
    b->len += n + 2;
    return;
  }
  buf_printf(b, "{%zu}\r\n", n);
  for (size_t i = 0; i < n;) {     /* a literal may not hold NUL (CHAR8): a space instead */
    const char *z = memchr(p + i, 0, n - i);
    size_t k = z ? (size_t)(z - p) - i : n - i;
    buf_add(b, p + i, k);
    i += k;
    if (z) {
      buf_addc(b, ' ');
      i++;
    }
  }
}

static void out_nstring(struct buf *b, const char *p, size_t n, int present) {
  if (present) out_string(b, p, n);
  else buf_adds(b, "NIL");
}

static void out_upper(struct buf *b, struct str s) {
  if (s.len > SIZE_MAX - 3 || !buf_reserve(b, s.len + 2)) return;
  char *o = b->p + b->len;
  *o++ = '"';
  for (size_t i = 0; i < s.len; i++) {   /* without a branch a byte: most are letters */
    unsigned char c = (unsigned char)s.p[i];
    *o = (char)(c - (((unsigned)c - 'a' < 26u) << 5));
    o += (unsigned)c - 0x20u < 0x5fu && c != '"' && c != '\\';   /* else dropped */
  }
  *o++ = '"';
  *o = 0;
  b->len = (size_t)(o - b->p);
}

/* A header field value, unfolded and trimmed, as an nstring. */
static void out_field(struct buf *b, const struct headers *hs, int id) {
  if (!hs->have[id]) {
    buf_adds(b, "NIL");
    return;
  }
  struct str t = str_trim(hs->v[id]);
  if (!memchr(t.p, '\n', t.len) && !memchr(t.p, '\r', t.len)) {
    out_string(b, t.p, t.len);               /* one line: nothing to unfold */
    return;
  }
  struct buf u = {0};
  header_unfold(hs->v[id], &u);
  out_string(b, u.p ? u.p : "", u.len);
  buf_free(&u);
}

static int param_same(const struct param *a, const struct param *b) {
  return a->name.len == b->name.len && strncasecmp(a->name.p, b->name.p, a->name.len) == 0;
}

static int param_2231(const struct param *pm) {
  return pm->section >= 0 || pm->extended;
}

/* Write parameter i, its RFC 2231 sections joined (a later section writes nothing). */
static void out_param(struct buf *b, const struct ctype *ct, int i, int *first) {
  const struct param *pm = &ct->params[i];
  if (!param_2231(pm)) {     /* most are: name and value as they are */
    if (!*first) buf_addc(b, ' ');
    *first = 0;
    out_upper(b, pm->name);
    buf_addc(b, ' ');
    out_string(b, pm->value.p ? pm->value.p : "", pm->value.len);
    return;
  }
  int extended = pm->extended;
  for (int j = 0; j < i && pm->section >= 0; j++)
    if (ct->params[j].section >= 0 && param_same(&ct->params[j], pm)) return;
  for (int j = i; j < ct->nparams && pm->section >= 0; j++)
    if (ct->params[j].section >= 0 && param_same(&ct->params[j], pm))
      extended |= ct->params[j].extended;
  struct buf v = {0}, n = {0};
  if (pm->section < 0) {
    buf_add(&v, pm->value.p, pm->value.len);
  } else {
    char name[256];
    snprintf(name, sizeof name, "%.*s", (int)pm->name.len, pm->name.p);
    ctype_param(ct, name, &v);
  }
  if (!*first) buf_addc(b, ' ');
  *first = 0;
  buf_add(&n, pm->name.p, pm->name.len);
  if (extended) buf_addc(&n, '*');
  out_upper(b, str_make(n.p, n.len));
  buf_addc(b, ' ');
  out_string(b, v.p ? v.p : "", v.len);
  buf_free(&v);
  buf_free(&n);
}

/* Does RFC 2231 parameter a come before b (by name, then as sent)? */
static int param_before(const struct ctype *ct, int a, int b) {
  const struct param *x = &ct->params[a], *y = &ct->params[b];
  size_t n = x->name.len < y->name.len ? x->name.len : y->name.len;
  int c = strncasecmp(x->name.p, y->name.p, n);
  if (c == 0) c = x->name.len < y->name.len ? -1 : x->name.len > y->name.len;
  return c < 0 || (c == 0 && a < b);
}

/*
** body-fld-param: ("NAME" "value" ...), or NIL: the plain parameters in the order sent,
** then the RFC 2231 ones by name, their sections joined (the order Dovecot lists them in;
** neither RFC gives one). With text_charset (a part of type text), a CHARSET parameter is
** added at the end when the part has none: it is us-ascii (RFC 2045 5.2), and clients of
** servers such as Dovecot find it there.
*/
static void out_params(struct buf *b, const struct ctype *ct, int text_charset) {
  for (int i = 0; i < ct->nparams && text_charset; i++)   /* charset*0="us-";... counts */
    if (!ct->params[i].extended && str_ieq(ct->params[i].name, "charset")) text_charset = 0;
  if (ct->nparams == 0 && !text_charset) {
    buf_adds(b, "NIL");
    return;
  }
  buf_addc(b, '(');
  int first = 1;
  for (int i = 0; i < ct->nparams; i++)
    if (!param_2231(&ct->params[i])) out_param(b, ct, i, &first);
  for (int prev = -1;;) {      /* selection by name: at most 32 parameters */
    int next = -1;
    for (int j = 0; j < ct->nparams; j++)
      if (param_2231(&ct->params[j]) && (prev < 0 || param_before(ct, prev, j)) &&
          (next < 0 || param_before(ct, j, next)))
        next = j;
    if (next < 0) break;
    out_param(b, ct, next, &first);
    prev = next;
  }
  if (text_charset) buf_adds(b, first ? "\"CHARSET\" \"us-ascii\"" : " \"CHARSET\" \"us-ascii\"");
  buf_addc(b, ')');
}

/* ------------------------------------------------------------------------- */
/*
** Addresses (RFC 5322 3.4, RFC 3501 7.4.2), read as c-client and Dovecot read them, since
** clients show what those servers answer (each rule was checked against Dovecot 2.3):
**  - name-addr: the name is the phrase, quotes removed, words joined by one space,
**    comments dropped; comments inside <...> and after it are never the name.
**  - a bare addr-spec: the last non-empty comment after its first word is the name
**    (jdoe@example.com (John Doe)); comments and spaces inside it are removed.
**  - a route <@a,@b:u@d> is the adl "@a,@b".
**  - a group is (NIL NIL "name" NIL), its members, then (NIL NIL NIL NIL), also when its
**    ';' is missing.
**  - what is missing gets a placeholder, as a NIL host would mean group syntax:
**    MISSING_MAILBOX, MISSING_DOMAIN, and SYNTAX_ERROR as the host of a '<' never closed.
**  - words with no '@' ("Name Only", "quoted") are a name with no address; one dot-atom
**    ("postmaster") is a mailbox with no domain.
**  - the list ends at the first element that is not followed by ',' (';' in a group):
**    what comes after it is dropped.
** Several From/Sender/Reply-To/To/Cc/Bcc fields are one list, in order.
*/
enum { ADDR_MAILBOX, ADDR_GROUP, ADDR_GROUP_END };
struct span {                 /* a piece of struct addrs' text */
  size_t off, len;
};
struct addr {
  int kind;
  int has_name;
  int list;                   /* which field list it came from (addrs_parse's caller says) */
  struct span name, adl, mailbox, host;  /* a group's name is in name */
};
/*
** Parsed addresses. Their strings are spans of one buffer, and the tokens are kept for
** the next field, so that a header's addresses cost a few allocations, not four each.
*/
struct addrs {
  struct addr *a;
  int n, cap;
  struct buf text;
  struct token *tok;
  int tok_cap;
  struct addr *a_room;        /* a until there are more (addrs_in_room), or NULL */
};
/* Room in a caller's frame for the addresses of a usual header: no allocation for them. */
struct addrs_room {
  struct addr a[8];
  char text[512];
};
struct addr_parser {
  struct token *t;
  int n, i;
  struct addrs *out;
  int list;
};

static void addrs_free(struct addrs *as) {
  if (as->a != as->a_room) free(as->a);
  buf_free(&as->text);
  for (int k = 0; k < as->tok_cap; k++) buf_free(&as->tok[k].q);
  free(as->tok);
  memset(as, 0, sizeof *as);
}

/* Empty, keeping the memory for the next list. */
static void addrs_reset(struct addrs *as) {
  as->n = 0;
  buf_reset(&as->text);
}

static struct str addr_str(const struct addrs *as, struct span s) {
  return str_make(as->text.p ? as->text.p + s.off : "", s.len);
}

/* Append n bytes to the string f: at the end of the text, where f is moved first if
   another string was appended after it. */
static void addr_add(struct addrs *as, struct span *f, const char *p, size_t n) {
  struct buf *t = &as->text;
  if (f->len && f->off + f->len != t->len) {
    if (!buf_reserve(t, f->len + n)) return;
    memcpy(t->p + t->len, t->p + f->off, f->len);
    f->off = t->len;
    t->len += f->len;
  }
  if (!f->len) f->off = t->len;
  buf_add(t, p, n);
  if (!t->oom) f->len += n;
}

static void addr_adds(struct addrs *as, struct span *f, const char *z) {
  addr_add(as, f, z, strlen(z));
}

/* Empty addresses that start in room. */
static void addrs_in_room(struct addrs *as, struct addrs_room *room) {
  *as = (struct addrs){.a = room->a, .cap = (int)(sizeof room->a / sizeof room->a[0]),
                       .a_room = room->a};
  buf_in_room(&as->text, room->text, sizeof room->text);
}

static struct addr *addrs_new(struct addrs *as, int kind, int list) {
  if (as->n == as->cap) {
    int ncap = as->cap ? as->cap * 2 : 4;
    struct addr *na = room_grow(as->a, as->a_room, (size_t)as->n, (size_t)ncap, sizeof *na);
    if (!na) return NULL;
    as->a = na;
    as->cap = ncap;
  }
  struct addr *a = &as->a[as->n++];
  memset(a, 0, sizeof *a);
  a->kind = kind;
  a->list = list;
  return a;
}

static int ap_special(const struct addr_parser *ap, char c) {
  return ap->i < ap->n && ap->t[ap->i].type == TOK_SPECIAL && ap->t[ap->i].text.p[0] == c;
}

static int ap_word(const struct addr_parser *ap) {
  return ap->i < ap->n && (ap->t[ap->i].type == TOK_ATOM || ap->t[ap->i].type == TOK_QUOTED);
}

/* Skip comments; the text of the last non-empty one goes to *last unless last is NULL. */
static int ap_comments(struct addr_parser *ap, struct str *last) {
  int from = ap->i;
  for (; ap->i < ap->n && ap->t[ap->i].type == TOK_COMMENT; ap->i++)
    if (last && ap->t[ap->i].text.len) *last = ap->t[ap->i].text;
  return ap->i > from;
}

/* A phrase (RFC 5322 3.2.5, with obs-phrase's '.'): words joined by one space. */
static void ap_phrase(struct addr_parser *ap, struct span *out) {
  for (int words = 0;; ap->i++) {
    ap_comments(ap, NULL);
    if (ap_word(ap)) {
      if (words++) addr_add(ap->out, out, " ", 1);
      addr_add(ap->out, out, ap->t[ap->i].text.p, ap->t[ap->i].text.len);
    } else if (ap_special(ap, '.')) {
      addr_add(ap->out, out, ".", 1);
    } else {
      return;
    }
  }
}

/*
** local-part ["@" domain] at ap->i into a->mailbox and a->host, comments and white space
** dropped; the last non-empty comment after its first word goes to *comment. 0 if the
** local part is words with no dot between them (then it is a phrase); *bare is set when
** it has no '@' and ends in a quoted string with nothing after it, which is a phrase too.
*/
static int ap_addr_spec(struct addr_parser *ap, struct addr *a, struct str *comment,
                        int *bare) {
  int prev_word = 0, started = 0, quoted_last = 0;
  for (;; ap->i++) {
    if (ap_comments(ap, started ? comment : NULL)) quoted_last = 0;
    if (ap_word(ap)) {
      if (prev_word) return 0;
      quoted_last = ap->t[ap->i].type == TOK_QUOTED;
      prev_word = 1;
    } else if (ap_special(ap, '.')) {
      quoted_last = prev_word = 0;
    } else {
      break;
    }
    addr_add(ap->out, &a->mailbox, ap->t[ap->i].text.p, ap->t[ap->i].text.len);
    started = 1;
  }
  *bare = quoted_last;
  if (ap_special(ap, '@')) {
    *bare = 0;
    prev_word = 0;
    for (ap->i++;; ap->i++) {
      ap_comments(ap, comment);
      if (ap->i >= ap->n) break;
      const struct token *t = &ap->t[ap->i];
      int dot = ap_special(ap, '.');
      if ((t->type != TOK_ATOM && t->type != TOK_DOMLIT && !dot) || (prev_word && !dot)) break;
      prev_word = !dot;
      addr_add(ap->out, &a->host, t->text.p, t->text.len);
    }
  }
  ap_comments(ap, comment);
  return 1;
}

/* "<" [obs-route ":"] addr-spec ">" at ap->i (past the '<'). */
static void ap_angle_addr(struct addr_parser *ap, struct addr *a) {
  ap_comments(ap, NULL);
  if (ap_special(ap, '@')) {           /* obs-route: "@a,@b:" (RFC 5322 4.4) */
    int at = ap->i;
    for (; ap->i < ap->n && !ap_special(ap, ':') && !ap_special(ap, '>'); ap->i++)
      if (ap->t[ap->i].type != TOK_COMMENT)
        addr_add(ap->out, &a->adl, ap->t[ap->i].text.p, ap->t[ap->i].text.len);
    if (ap_special(ap, ':')) {
      ap->i++;
    } else {                           /* "<@host>": no route after all */
      ap->i = at;
      a->adl.len = 0;
    }
  }
  int bare;
  if (!ap_addr_spec(ap, a, NULL, &bare)) {
    while (ap->i < ap->n && !ap_special(ap, '>')) ap->i++;
  }
  if (ap_special(ap, '>')) {
    ap->i++;
  } else {
    a->host.len = 0;
    addr_adds(ap->out, &a->host, "SYNTAX_ERROR");
  }
  ap_comments(ap, NULL);
}

/* One mailbox (name-addr or addr-spec) at ap->i; 0 if memory ran out. */
static int ap_mailbox(struct addr_parser *ap) {
  struct addr *a = addrs_new(ap->out, ADDR_MAILBOX, ap->list);
  if (!a) return 0;
  int start = ap->i;
  ap_phrase(ap, &a->name);
  if (ap_special(ap, '<')) {
    ap->i++;
    a->has_name = a->name.len > 0;
    ap_angle_addr(ap, a);
  } else {
    a->name.len = 0;
    ap->i = start;
    struct str comment = str_make(NULL, 0);
    int bare = 0;
    if (ap_addr_spec(ap, a, &comment, &bare) && !bare) {
      if (comment.len) addr_add(ap->out, &a->name, comment.p, comment.len);
      a->has_name = comment.len > 0;
    } else {
      a->mailbox.len = a->host.len = 0;
      ap->i = start;
      ap_phrase(ap, &a->name);
      a->has_name = 1;
    }
  }
  if (!a->mailbox.len) addr_adds(ap->out, &a->mailbox, "MISSING_MAILBOX");
  if (!a->host.len) addr_adds(ap->out, &a->host, "MISSING_DOMAIN");
  return !ap->out->text.oom;
}

/* Can an address start at ap->i (so that parsing it makes progress)? */
static int ap_can_start(const struct addr_parser *ap) {
  return ap_word(ap) || ap_special(ap, '.') || ap_special(ap, '<') || ap_special(ap, '@');
}

/* Group members after "name:", to the ';'; 0 if the list must end here. */
static int ap_group(struct addr_parser *ap) {
  for (;;) {
    while (ap_comments(ap, NULL) || ap_special(ap, ','))
      if (ap_special(ap, ',')) ap->i++;
    if (ap_special(ap, ';')) {
      ap->i++;
      return addrs_new(ap->out, ADDR_GROUP_END, ap->list) != NULL;
    }
    if (ap->i >= ap->n) break;
    if (!ap_can_start(ap) || !ap_mailbox(ap)) break;
    if (!ap_special(ap, ',') && !ap_special(ap, ';')) break;
  }
  addrs_new(ap->out, ADDR_GROUP_END, ap->list);
  return 0;
}

/*
** Does the lexer read c as part of an atom: not a special, white space or control, and any
** byte from 0x80 (RFC 6532)? A bit map, for the plain readers' inner loops (the unit tests
** check it against that definition).
*/
static const uint64_t addr_atom_map[4] = {   /* bit c: byte c is an atom byte */
  0xa3ffacfa00000000u, 0x7fffffffc7fffffeu, 0xffffffffffffffffu, 0xffffffffffffffffu};

static int addr_atom_byte(unsigned char c) {
  return (int)(addr_atom_map[c >> 6] >> (c & 63)) & 1;
}

/* The end of a dot-atom (atoms joined by single dots) at p, or NULL if there is none. */
static const char *addr_dot_atom(const char *p, const char *e) {
  for (;;) {
    const char *s = p;
    while (p < e && addr_atom_byte((unsigned char)*p)) p++;
    if (p == s) return NULL;
    if (p == e || *p != '.') return p;
    p++;
  }
}

/*
** The common forms of an address list, read without the lexer (issue 15: this is most of
** what ENVELOPE costs): "a@b.c", "Name Words <a@b.c>" and "\"Quoted\" <a@b.c>", separated
** by commas, with white space between the pieces. The result is what addrs_parse makes of
** them. 0, and out as it was, for anything else: addrs_parse reads it then. With
** first_only, the list may go on after the first address and its comma in any form: only
** the first is read (the lexer, too, reads an address up to its comma the same whatever
** follows).
*/
static int addrs_parse_plain(struct str v, struct addrs *out, int list, int first_only) {
  const char *p = v.p, *e = v.p + v.len;
  int n0 = out->n;
  size_t t0 = out->text.len;
  for (;;) {
    p = skip_wsp(p, e);
    struct addr *a = addrs_new(out, ADDR_MAILBOX, list);
    if (!a) break;
    const char *local = p, *at = addr_dot_atom(p, e), *host = NULL, *hend = NULL;
    if (at && at < e && *at == '@' && (hend = addr_dot_atom(host = at + 1, e)) != NULL &&
        (hend == e || *hend == ',' || skip_wsp(hend, e) > hend)) {
      p = hend;                        /* a bare addr-spec */
    } else {
      int words = 0;                   /* a phrase, then <addr-spec> */
      for (;; words++) {
        const char *w = p, *we;
        if (p < e && *p == '"') {
          for (we = ++w; we < e && *we != '"' && *we != '\\' && *we != '\r' && *we != '\n'; we++)
            ;
          if (we == e || *we != '"') goto other;
          p = we + 1;
        } else {
          while (p < e && addr_atom_byte((unsigned char)*p)) p++;
          if (p == w) break;
          we = p;
        }
        if (words) addr_add(out, &a->name, " ", 1);
        addr_add(out, &a->name, w, (size_t)(we - w));
        p = skip_wsp(p, e);
      }
      if (p == e || *p != '<') goto other;
      local = p + 1;
      at = addr_dot_atom(local, e);
      if (!at || at == e || *at != '@') goto other;
      hend = addr_dot_atom(host = at + 1, e);
      if (!hend || hend == e || *hend != '>') goto other;
      p = hend + 1;
      a->has_name = a->name.len > 0;
    }
    addr_add(out, &a->mailbox, local, (size_t)(at - local));
    addr_add(out, &a->host, host, (size_t)(hend - host));
    if (out->text.oom) break;
    p = skip_wsp(p, e);
    if (p == e) return 1;
    if (*p != ',') break;
    if (first_only) return 1;
    p++;
  }
other:
  out->n = n0;
  out->text.len = t0;
  return 0;
}

/* Append the addresses of an address-list field value to out. */
static void addrs_parse(struct str v, struct addrs *out, int list) {
  if (addrs_parse_plain(v, out, list, 0)) return;
  struct lexer lx = {v.p, v.p + v.len, "()<>[]:;@\\,.\"", 1};
  int n = 0;
  for (;;) {
    if (n == out->tok_cap) {
      int ncap = out->tok_cap ? out->tok_cap * 2 : 32;
      struct token *nt = mem_realloc(out->tok, sizeof *nt * (size_t)ncap);
      if (!nt) break;
      memset(nt + out->tok_cap, 0, sizeof *nt * (size_t)(ncap - out->tok_cap));
      out->tok = nt;
      out->tok_cap = ncap;
    }
    if (lex_next(&lx, &out->tok[n]) == TOK_END) break;   /* each token owns its q */
    n++;
  }
  struct addr_parser ap = {out->tok, n, 0, out, list};
  for (;;) {
    ap_comments(&ap, NULL);
    if (ap_special(&ap, ',')) {        /* an empty element between commas: all missing */
      if (!ap_mailbox(&ap)) break;
      ap.i++;
      continue;
    }
    if (!ap_can_start(&ap) && !ap_special(&ap, ':')) break;
    int save = ap.i;
    struct addr *g = addrs_new(out, ADDR_GROUP, list);
    if (!g) break;
    ap_phrase(&ap, &g->name);
    if (ap_special(&ap, ':')) {
      ap.i++;
      if (!ap_group(&ap)) break;
    } else {
      out->n--;
      ap.i = save;
      if (!ap_mailbox(&ap)) break;
    }
    ap_comments(&ap, NULL);
    if (!ap_special(&ap, ',')) break;
    ap.i++;
  }
}

/* The addresses of one list of ENVELOPE (RFC 3501 7.4.2), or NIL if it has none. */
static void out_addrs(struct buf *b, const struct addrs *as, int list) {
  int any = 0;
  for (int i = 0; i < as->n; i++) {
    const struct addr *a = &as->a[i];
    if (a->list != list) continue;
    if (!any++) buf_addc(b, '(');
    if (a->kind == ADDR_GROUP_END) {
      buf_adds(b, "(NIL NIL NIL NIL)");
    } else if (a->kind == ADDR_GROUP) {
      struct str name = addr_str(as, a->name);
      buf_adds(b, "(NIL NIL ");
      out_string(b, name.p, name.len);
      buf_adds(b, " NIL)");
    } else {
      struct str name = addr_str(as, a->name), adl = addr_str(as, a->adl),
                 mailbox = addr_str(as, a->mailbox), host = addr_str(as, a->host);
      buf_addc(b, '(');
      out_nstring(b, name.p, name.len, a->has_name);
      buf_addc(b, ' ');
      out_nstring(b, adl.p, adl.len, adl.len > 0);
      buf_addc(b, ' ');
      out_string(b, mailbox.p, mailbox.len);
      buf_addc(b, ' ');
      out_string(b, host.p, host.len);
      buf_addc(b, ')');
    }
  }
  buf_adds(b, any ? ")" : "NIL");
}

/* Date, Message-ID and In-Reply-To as the header has them: the white space after the
   colon skipped, line breaks removed, nothing else changed (Dovecot sends them so). */
static void out_raw_field(struct buf *b, struct str v) {
  size_t i = 0;
  while (i < v.len && (v.p[i] == ' ' || v.p[i] == '\t')) i++;
  if (!memchr(v.p + i, '\n', v.len - i) && !memchr(v.p + i, '\r', v.len - i)) {
    out_string(b, v.p + i, v.len - i);   /* one line: nothing to remove */
    return;
  }
  struct buf u = {0};
  for (; i < v.len; i++)
    if (v.p[i] != '\r' && v.p[i] != '\n') buf_addc(&u, v.p[i]);
  out_string(b, u.p ? u.p : "", u.len);
  buf_free(&u);
}

/* Subject unfolded with each run of white space (tabs too) one space, trimmed, as
   Dovecot sends it; encoded words stay as they are (RFC 3501 7.4.2). */
static void out_subject(struct buf *b, struct str v) {
  struct str t = str_trim(v);
  size_t i = 0;              /* as it is, unless it has a tab, a line break or two spaces */
  while (i < t.len && t.p[i] != '\t' && t.p[i] != '\r' && t.p[i] != '\n' &&
         !(t.p[i] == ' ' && i + 1 < t.len && t.p[i + 1] == ' '))
    i++;
  if (i == t.len) {
    out_string(b, t.p, t.len);
    return;
  }
  struct buf u = {0};
  int space = 0;
  for (size_t i = 0; i < v.len; i++) {
    char c = v.p[i];
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      space = u.len > 0;
      continue;
    }
    if (space) buf_addc(&u, ' ');
    space = 0;
    buf_addc(&u, c);
  }
  out_string(b, u.p ? u.p : "", u.len);
  buf_free(&u);
}

static const int envelope_single[] = {H_DATE, H_SUBJECT, H_IN_REPLY_TO, H_MESSAGE_ID};

/* ENVELOPE from its fields: the last Date, Subject, In-Reply-To and Message-ID (v, have),
   and the addresses of each list (as, count of them by list); frees as. */
static void out_envelope_of(struct buf *b, const struct str *v, const int *have,
                            struct addrs *as, const int *count) {
  buf_addc(b, '(');
  if (have[0]) out_raw_field(b, v[0]);
  else buf_adds(b, "NIL");
  buf_addc(b, ' ');
  if (have[1]) out_subject(b, v[1]);
  else buf_adds(b, "NIL");
  for (int id = H_FROM; id <= H_BCC; id++) {
    buf_addc(b, ' ');
    out_addrs(b, as, (id == H_SENDER || id == H_REPLY_TO) && !count[id] ? H_FROM : id);
  }
  for (int i = 2; i < 4; i++) {
    buf_addc(b, ' ');
    if (have[i]) out_raw_field(b, v[i]);
    else buf_adds(b, "NIL");
  }
  buf_addc(b, ')');
  addrs_free(as);
}

/*
** RFC 3501 7.4.2 ENVELOPE of the message whose header is [h, hend). A field given twice
** is read as Dovecot reads it: the last Date, Subject, In-Reply-To and Message-ID; the
** addresses of every From, Sender, Reply-To, To, Cc and Bcc, in order. Sender and
** Reply-To with no address are From's.
*/
static void out_envelope(struct buf *b, const char *h, const char *hend) {
  struct str v[4];
  int have[4] = {0};
  struct addrs_room room;
  struct addrs as;           /* of every list; a->list is its H_FROM to H_BCC */
  addrs_in_room(&as, &room);
  int count[H_BCC + 1] = {0};
  struct field f;
  while (header_next(&h, hend, &f)) {
    int id = header_id(f.name);
    for (int i = 0; i < 4; i++)
      if (id == envelope_single[i]) {
        v[i] = f.value;
        have[i] = 1;
      }
    if (id >= H_FROM && id <= H_BCC) {
      int before = as.n;
      addrs_parse(f.value, &as, id);
      count[id] += as.n - before;
    }
  }
  out_envelope_of(b, v, have, &as, count);
}

/*
** The same from a header's scan (struct headers), when none of ENVELOPE's fields is there
** twice (then the first is the last, and each list is its one field); 0 if one is, and
** nothing is written.
*/
static int out_envelope_scanned(struct buf *b, const struct headers *hs) {
  for (int id = H_DATE; id <= H_MESSAGE_ID; id++)
    if (hs->count[id] > 1) return 0;
  struct str v[4];
  int have[4];
  for (int i = 0; i < 4; i++) {
    v[i] = hs->v[envelope_single[i]];
    have[i] = hs->have[envelope_single[i]];
  }
  struct addrs_room room;
  struct addrs as;
  addrs_in_room(&as, &room);
  int count[H_BCC + 1] = {0};
  for (int id = H_FROM; id <= H_BCC; id++)
    if (hs->have[id]) {
      int before = as.n;
      addrs_parse(hs->v[id], &as, id);
      count[id] = as.n - before;
    }
  out_envelope_of(b, v, have, &as, count);
  return 1;
}

/* ------------------------------------------------------------------------- */
/* The MIME tree (RFC 2045, 2046). */
enum { MIME_ROOM = 8 };      /* parts a builder holds in its caller's frame: most have fewer */
struct mime_builder {
  const char *msg;
  const struct line_mark *marks;   /* the loader's, or NULL (struct msgdata) */
  size_t nmarks;
  struct part *parts;        /* parts_room until there are more */
  struct headers *hs;        /* each part's header fields, if kept (keep_headers): hs_room */
  int keep_headers;
  int n, cap;
  int failed;
  struct part *parts_room;
  struct headers *hs_room;
};
/*
** Each part's header fields as the builder read them, kept for the renderers of the same
** first pass (msgmeta_build_keeping): in room unless the message has more parts.
*/
struct kept_headers {
  struct headers *hs;
  struct headers room[MIME_ROOM];
};

static void kept_headers_free(struct kept_headers *k) {
  if (k->hs != k->room) free(k->hs);
  k->hs = NULL;
}

static int mime_new_part(struct mime_builder *mb) {
  if (mb->n == mb->cap) {
    int ncap = mb->cap * 2;
    struct part *np = room_grow(mb->parts, mb->parts_room, (size_t)mb->n, (size_t)ncap,
                                sizeof *np);
    if (np) mb->parts = np;
    struct headers *nh = mb->keep_headers ? room_grow(mb->hs, mb->hs_room, (size_t)mb->n,
                                                      (size_t)ncap, sizeof *nh) : NULL;
    if (nh) mb->hs = nh;
    if (!np || (mb->keep_headers && !nh)) {
      mb->failed = 1;
      return -1;
    }
    mb->cap = ncap;
  }
  memset(&mb->parts[mb->n], 0, sizeof mb->parts[0]);
  if (mb->keep_headers) memset(&mb->hs[mb->n], 0, sizeof mb->hs[0]);   /* a part with none */
  mb->parts[mb->n].child = mb->parts[mb->n].next = -1;
  return mb->n++;
}

/*
** Whether a delimiter line "--boundary" (RFC 2046 5.1.1) starts at p, a line start before
** end: then *line_start, *after (the next line) and *closing ("--boundary--") are set.
*/
static int mime_delim_at(const char *msg, size_t p, size_t end, struct str boundary,
                         size_t *line_start, size_t *after, int *closing) {
  if (end - p < boundary.len + 2 || msg[p] != '-' || msg[p + 1] != '-' ||
      memcmp(msg + p + 2, boundary.p, boundary.len) != 0)
    return 0;
  size_t q = p + 2 + boundary.len;
  int close = end - q >= 2 && msg[q] == '-' && msg[q + 1] == '-';
  if (close) q += 2;
  while (q < end && (msg[q] == ' ' || msg[q] == '\t')) q++;   /* transport padding */
  if (q < end && msg[q] != '\n' && !(msg[q] == '\r' && q + 1 < end && msg[q + 1] == '\n'))
    return 0;
  *line_start = p;
  if (q < end) q += msg[q] == '\r' ? 2 : 1;
  *after = q;
  *closing = close;
  return 1;
}

/* The first of the message's marks at or after offset x (nmarks if none). */
static size_t mark_at_or_after(const struct mime_builder *mb, size_t x) {
  return lower_bound(mb->marks, mb->nmarks, sizeof mb->marks[0], offsetof(struct line_mark, off),
                     4, x);
}

/*
** Find the next delimiter line at or after body offset *pos (start is the body's; it counts
** as a line start); 1 found, and *pos moves past it. With the loader's marks only lines
** starting "--" are looked at, else every line.
*/
static int mime_find_delim(const struct mime_builder *mb, size_t start, size_t *pos, size_t end,
                           struct str boundary, size_t *line_start, size_t *after,
                           int *closing) {
  const char *msg = mb->msg;
  size_t p = *pos;
  if (mb->marks) {
    if (p == start && p < end && p > 0 && msg[p - 1] != '\n' &&
        mime_delim_at(msg, p, end, boundary, line_start, after, closing))
      return *pos = *after, 1;
    for (size_t i = mark_at_or_after(mb, p); i < mb->nmarks && mb->marks[i].off < end; i++)
      if (mime_delim_at(msg, mb->marks[i].off, end, boundary, line_start, after, closing))
        return *pos = *after, 1;
    return 0;
  }
  while (p < end) {
    if ((p == start || msg[p - 1] == '\n') &&
        mime_delim_at(msg, p, end, boundary, line_start, after, closing))
      return *pos = *after, 1;
    const char *nl = memchr(msg + p, '\n', end - p);
    if (!nl) return 0;
    p = (size_t)(nl - msg) + 1;
  }
  return 0;
}

/* Line breaks before offset x, counted from the nearest mark (or from the start). */
static size_t lines_before(const struct mime_builder *mb, size_t x) {
  size_t i = mark_at_or_after(mb, x);   /* the last mark is at the end: i < nmarks */
  const struct line_mark *hi = &mb->marks[i < mb->nmarks ? i : mb->nmarks - 1];
  size_t lo_off = i ? mb->marks[i - 1].off : 0, lo_lines = i ? mb->marks[i - 1].lines : 0;
  if (hi->off >= x && hi->off - x < x - lo_off)
    return hi->lines - count_lines(mb->msg + x, hi->off - x);
  return lo_lines + count_lines(mb->msg + lo_off, x - lo_off);
}

/* A text or message body's lines (RFC 3501 7.4.2): its line breaks from off to end. */
static size_t mime_lines(const struct mime_builder *mb, size_t off, size_t end) {
  if (!mb->marks) return count_lines(mb->msg + off, end - off);
  return lines_before(mb, end) - lines_before(mb, off);
}

/* A view the part table holds (offset and length into the message). */
static struct str part_view(const char *msg, uint32_t off, uint16_t len) {
  return str_make(msg + off, len);
}

static int charset_is_utf8(struct str cs) {   /* or a subset of it */
  return cs.len == 0 || str_ieq(cs, "utf-8") || str_ieq(cs, "us-ascii") || str_ieq(cs, "utf8") ||
         str_ieq(cs, "ascii");
}

static int charset_is_latin1(struct str cs) {
  return str_ieq(cs, "iso-8859-1") || str_ieq(cs, "latin1") || str_ieq(cs, "iso-8859-15") ||
         str_ieq(cs, "windows-1252");
}

/*
** Record the facts of a part's header: Content-Type's type and subtype (ct, or NULL if
** there is none), the charset SEARCH needs to know of, and the Content-Transfer-Encoding:
** one token, else it is invalid and 7BIT (RFC 2045 6.1: "quoted printable", a quoted
** string), as Dovecot reads it; a token it does not know ("7-bit") is sent as written,
** and SEARCH does not read such a body (RFC 2045 6.4: it is application/octet-stream).
*/
static void part_facts(struct part *pt, const char *msg, const struct ctype *ct,
                       const struct headers *hs) {
  if (ct && ct->type.len && ct->type.len <= UINT16_MAX && ct->subtype.len <= UINT16_MAX) {
    pt->type_off = (uint32_t)(ct->type.p - msg);
    pt->type_len = (uint16_t)ct->type.len;
    pt->subtype_off = (uint32_t)(ct->subtype.p ? ct->subtype.p - msg : 0);
    pt->subtype_len = (uint16_t)ct->subtype.len;
  }
  struct buf cs = {0};
  if (ct && ctype_param(ct, "charset", &cs))
    pt->charset = charset_is_latin1(str_make(cs.p, cs.len)) ? CS_LATIN1
                : charset_is_utf8(str_make(cs.p, cs.len)) ? CS_UTF8 : CS_ICONV;
  buf_free(&cs);
  if (hs->have[H_CONTENT_ENCODING]) {
    struct str v = hs->v[H_CONTENT_ENCODING];
    struct lexer lx = {v.p, v.p + v.len, "", 0};
    struct token tk = {0};
    if (lex_next(&lx, &tk) == TOK_ATOM && tk.text.len <= UINT16_MAX) {
      struct str cte = tk.text;
      if (lex_next(&lx, &tk) == TOK_END) {
        pt->cte_off = (uint32_t)(cte.p - msg);
        pt->cte_len = (uint16_t)cte.len;
        pt->cte = str_ieq(cte, "base64") ? CTE_BASE64
                : str_ieq(cte, "quoted-printable") ? CTE_QP
                : str_ieq(cte, "7bit") || str_ieq(cte, "8bit") || str_ieq(cte, "binary")
                ? CTE_IDENTITY : CTE_UNKNOWN;
      }
    }
    buf_free(&tk.q);
  }
}

/*
** Where the delimiter search of a multipart with boundary bnd goes on after the body part
** at start: past that part's own close delimiter if the part is a multipart with the same
** boundary (RFC 2046 5.1.2 forbids it, but mailers do it: the inner multipart owns the
** delimiters up to its "--bnd--", as Dovecot reads it), else at start.
*/
static size_t mime_same_boundary_end(const struct mime_builder *mb, size_t start, size_t end,
                                     struct str bnd, int depth) {
  const char *msg = mb->msg;
  struct str v;              /* (the header's fields: the scan stops at its blank line) */
  if (depth >= IMAPMEM_MAX_DEPTH || !header_get(msg + start, msg + end, "Content-Type", &v))
    return start;
  struct lexer lx = {v.p, v.p + v.len, "()<>@,;:\\/[]?=", 0};
  struct token tk = {0};     /* most parts are no multipart: ctype_parse only for those */
  int multipart = lex_next(&lx, &tk) == TOK_ATOM && str_ieq(tk.text, "multipart");
  buf_free(&tk.q);
  if (!multipart) return start;
  struct ctype ct;
  struct buf inner = {0};
  ctype_parse(v, 1, &ct);
  int same = str_ieq(ct.type, "multipart") && ctype_param(&ct, "boundary", &inner) &&
             inner.len == bnd.len && memcmp(inner.p, bnd.p, bnd.len) == 0;
  ctype_free(&ct);
  buf_free(&inner);
  if (!same) return start;
  size_t body = start + header_length(msg + start, end - start), pos = body, ls, after;
  int closing;
  while (mime_find_delim(mb, body, &pos, end, bnd, &ls, &after, &closing)) {
    if (closing) return after;
    pos = mime_same_boundary_end(mb, after, end, bnd, depth + 1);
  }
  return end;
}

/* Keep ct's parameters in h for out_body, if they are views of the field (no quoted value
   was unescaped into ct->store) and few; else out_body parses the field again. */
static void headers_keep_params(struct headers *h, const struct ctype *ct) {
  if (ct->store.p || ct->nparams > KEPT_PARAMS) return;
  for (int i = 0; i < ct->nparams; i++) {
    if (ct->params[i].section > SCHAR_MAX) return;
    h->kept_section[i] = (signed char)ct->params[i].section;
    h->kept_extended[i] = (unsigned char)ct->params[i].extended;
    h->kept_name[i] = ct->params[i].name;
    h->kept_value[i] = ct->params[i].value;
  }
  h->nkept = (unsigned char)ct->nparams;
  h->params_kept = 1;
}

/* The Content-Type parameters of a part's header fields, as ctype_parse reads them. */
static void headers_params(const struct headers *h, struct ctype *ct) {
  if (!h->have[H_CONTENT_TYPE]) {
    ctype_clear(ct);
  } else if (!h->params_kept) {
    ctype_parse(h->v[H_CONTENT_TYPE], 1, ct);
  } else {
    ctype_clear(ct);         /* out_params reads only the parameters */
    ct->nparams = h->nkept;
    for (int i = 0; i < h->nkept; i++)
      ct->params[i] = (struct param){h->kept_name[i], h->kept_section[i],
                                     h->kept_extended[i], h->kept_value[i]};
  }
}

static int mime_parse(struct mime_builder *mb, size_t off, size_t end, int default_rfc822,
                      int depth) {
  int idx = mime_new_part(mb);
  if (idx < 0) return -1;
  const char *msg = mb->msg;
  struct headers hs;          /* one pass for the fields of this part's header, and its end */
  const char *stop = headers_scan(msg + off, msg + end, &hs);
  size_t hl = (size_t)(stop - (msg + off)) + (stop == msg + end ? 0 : *stop == '\n' ? 1 : 2);
  struct part *pt = &mb->parts[idx];
  if (mb->keep_headers) mb->hs[idx] = hs;
  pt->hdr_off = (uint32_t)off;
  pt->hdr_len = (uint32_t)hl;
  pt->body_off = (uint32_t)(off + hl);
  pt->body_len = (uint32_t)(end - off - hl);
  pt->digest = (uint8_t)default_rfc822;
  struct ctype ct;
  int have = hs.have[H_CONTENT_TYPE];
  if (have) ctype_parse(hs.v[H_CONTENT_TYPE], 1, &ct);
  else ctype_clear(&ct);
  if (mb->keep_headers && have) headers_keep_params(&mb->hs[idx], &ct);
  int kind = default_rfc822 && (!have || !ct.type.len) ? PART_MESSAGE : PART_TEXT;
  struct buf boundary = {0};
  if (have && ct.type.len) {
    /* a multipart with no (or an empty) boundary stays a multipart, and then has one
       empty part, as when its boundary never appears (Dovecot answers the same) */
    if (str_ieq(ct.type, "multipart")) {
      kind = PART_MULTIPART;
      ctype_param(&ct, "boundary", &boundary);
    } else if (str_ieq(ct.type, "message") && str_ieq(ct.subtype, "rfc822")) {
      kind = PART_MESSAGE;
    } else if (str_ieq(ct.type, "text")) {
      kind = PART_TEXT;
    } else {
      kind = PART_LEAF;
    }
  }
  int digest = kind == PART_MULTIPART && str_ieq(ct.subtype, "digest");
  /* Nested deeper than the limit: one text/plain part, what RFC 2045 5.2 makes of a
     Content-Type it cannot use (BODYSTRUCTURE cannot show a message/rfc822 or multipart
     without its insides). */
  int too_deep = depth >= IMAPMEM_MAX_DEPTH && (kind == PART_MULTIPART || kind == PART_MESSAGE);
  if (too_deep) kind = PART_TEXT;
  if (too_deep) mb->parts[idx].digest = 0;
  mb->parts[idx].kind = (uint8_t)kind;
  if (kind == PART_TEXT || kind == PART_MESSAGE)   /* the only parts whose lines are sent */
    mb->parts[idx].lines = (uint32_t)mime_lines(mb, off + hl, end);
  part_facts(&mb->parts[idx], msg, have && !too_deep ? &ct : NULL, &hs);
  ctype_free(&ct);
  if (kind == PART_MESSAGE) {
    size_t bo = mb->parts[idx].body_off;
    int c = mime_parse(mb, bo, end, 0, depth + 1);
    if (c >= 0) mb->parts[idx].child = c;
  } else if (kind == PART_MULTIPART) {
    size_t body = mb->parts[idx].body_off, pos = body, ls, after, part_start = 0;
    int closing = 0, have_start = 0, last = -1;
    struct str bnd = str_make(boundary.p, boundary.len);
    while (bnd.len && mime_find_delim(mb, body, &pos, end, bnd, &ls, &after, &closing)) {
      if (have_start) {
        size_t pe = ls;      /* the line break before the delimiter belongs to it */
        if (pe > part_start && msg[pe - 1] == '\n') pe--;
        if (pe > part_start && msg[pe - 1] == '\r') pe--;
        int c = mime_parse(mb, part_start, pe, digest, depth + 1);
        if (c < 0) break;
        if (last < 0) mb->parts[idx].child = c;
        else mb->parts[last].next = c;
        last = c;
      }
      if (closing) {
        have_start = 0;
        break;
      }
      part_start = after;
      have_start = 1;
      pos = mime_same_boundary_end(mb, part_start, end, bnd, depth);
    }
    if (have_start) {        /* no closing delimiter: the last part runs to the end */
      int c = mime_parse(mb, part_start, end, digest, depth + 1);
      if (c >= 0) {
        if (last < 0) mb->parts[idx].child = c;
        else mb->parts[last].next = c;
        last = c;
      }
    }
    if (last < 0) {          /* no part at all: one empty text/plain part */
      int c = mime_new_part(mb);
      if (c >= 0) {
        mb->parts[c].hdr_off = mb->parts[c].body_off = (uint32_t)end;
        mb->parts[c].kind = PART_TEXT;
        mb->parts[idx].child = c;
      }
    }
  }
  buf_free(&boundary);
  return idx;
}

/* ------------------------------------------------------------------------- */
/* BODY and BODYSTRUCTURE (RFC 3501 7.4.2 and the body grammar of section 9). */
static void out_language(struct buf *b, const struct headers *hs) {
  struct str v = hs->v[H_CONTENT_LANGUAGE];
  if (!hs->have[H_CONTENT_LANGUAGE]) {
    buf_adds(b, "NIL");
    return;
  }
  struct lexer lx = {v.p, v.p + v.len, ",", 0};
  struct token tk = {0};
  struct str tags[32];
  int n = 0;
  while (lex_next(&lx, &tk) != TOK_END)
    if (tk.type == TOK_ATOM && n < 32) tags[n++] = tk.text;
  buf_free(&tk.q);
  if (n == 0) buf_adds(b, "NIL");
  else {                     /* a list even of one tag, as Dovecot sends it (RFC 3501 9) */
    buf_addc(b, '(');
    for (int i = 0; i < n; i++) {
      if (i) buf_addc(b, ' ');
      out_string(b, tags[i].p, tags[i].len);
    }
    buf_addc(b, ')');
  }
}

static void out_disposition(struct buf *b, const struct headers *hs) {
  struct ctype ct;
  if (!hs->have[H_CONTENT_DISPOSITION]) {
    buf_adds(b, "NIL");
    return;
  }
  ctype_parse(hs->v[H_CONTENT_DISPOSITION], 0, &ct);
  if (!ct.type.len) buf_adds(b, "NIL");
  else {
    buf_addc(b, '(');
    out_upper(b, ct.type);
    buf_addc(b, ' ');
    out_params(b, &ct, 0);
    buf_addc(b, ')');
  }
  ctype_free(&ct);
}

/* The end of every part's extension data: disposition, language, location (RFC 3501 9). */
static void out_body_ext_tail(struct buf *b, const struct headers *hs) {
  buf_addc(b, ' ');
  out_disposition(b, hs);
  buf_addc(b, ' ');
  out_language(b, hs);
  buf_addc(b, ' ');
  out_field(b, hs, H_CONTENT_LOCATION);
}

static void out_body(struct buf *b, const char *msg, const struct part *parts, int idx,
                     int extended, const struct headers *all) {
  const struct part *pt = &parts[idx];
  struct headers hs;         /* from the part table's build if it kept them (all), else read */
  if (all) hs = all[idx];
  else headers_scan(msg + pt->hdr_off, msg + pt->hdr_off + pt->hdr_len, &hs);
  struct ctype ct;           /* for its parameters; the rest is in the part table */
  headers_params(&hs, &ct);
  buf_addc(b, '(');
  if (pt->kind == PART_MULTIPART) {
    for (int c = pt->child; c >= 0; c = parts[c].next) out_body(b, msg, parts, c, extended, all);
    buf_addc(b, ' ');
    out_upper(b, part_view(msg, pt->subtype_off, pt->subtype_len));
    if (extended) {
      buf_addc(b, ' ');
      out_params(b, &ct, 0);
      out_body_ext_tail(b, &hs);
    }
    buf_addc(b, ')');
    ctype_free(&ct);
    return;
  }
  if (pt->type_len) {         /* else invalid or absent: the defaults (RFC 2045 5.2) */
    out_upper(b, part_view(msg, pt->type_off, pt->type_len));
    buf_addc(b, ' ');
    out_upper(b, part_view(msg, pt->subtype_off, pt->subtype_len));
    buf_addc(b, ' ');
    out_params(b, &ct, pt->kind == PART_TEXT);
  } else if (pt->digest) {
    buf_adds(b, "\"MESSAGE\" \"RFC822\" NIL");
  } else {
    buf_adds(b, "\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\")");
  }
  buf_addc(b, ' ');
  out_field(b, &hs, H_CONTENT_ID);
  buf_addc(b, ' ');
  out_field(b, &hs, H_CONTENT_DESCRIPTION);
  buf_addc(b, ' ');
  if (pt->cte_len) out_upper(b, part_view(msg, pt->cte_off, pt->cte_len));
  else buf_adds(b, "\"7BIT\"");
  buf_addc(b, ' ');
  buf_addu(b, pt->body_len);
  if (pt->kind == PART_MESSAGE && pt->child >= 0) {
    const struct part *in = &parts[pt->child];
    buf_addc(b, ' ');
    if (!all || !out_envelope_scanned(b, &all[pt->child]))
      out_envelope(b, msg + in->hdr_off, msg + in->hdr_off + in->hdr_len);
    buf_addc(b, ' ');
    out_body(b, msg, parts, pt->child, extended, all);
    buf_addc(b, ' ');
    buf_addu(b, pt->lines);
  } else if (pt->kind == PART_TEXT) {
    buf_addc(b, ' ');
    buf_addu(b, pt->lines);
  }
  if (extended) {
    buf_addc(b, ' ');
    out_field(b, &hs, H_CONTENT_MD5);
    out_body_ext_tail(b, &hs);
  }
  buf_addc(b, ')');
  ctype_free(&ct);
}

/* ------------------------------------------------------------------------- */
/*
** A message's metadata comes in two stages, each computed once, on first use, by
** whichever thread gets there first and published with a compare-and-swap (the loser
** frees its copy): the part table and Date (for SEARCH and body sections), then each of
** ENVELOPE, BODY and BODYSTRUCTURE as text (for a FETCH of that one). SEARCH never pays
** for text it does not send.
*/
static atomic_long msgmeta_builds, rendered_builds;  /* so a test can see each is built once */

/*
** Where metadata lives (the part table, ENVELOPE, BODY, BODYSTRUCTURE, the sort keys). A
** fixture's messages keep theirs in the room their file's arena has left after them
** (section 4 keeps about a kilobyte a message of it): the load's read has touched those
** pages already, and on a VM the first touch of fresh memory is about a third of what the
** first metadata pass costs (issue 15). Past that room, and for a message in no arena
** (arena NULL), it is malloc'd; meta_free frees only what was.
*/
static void *meta_room(struct msgarena *a, size_t n) {
  if (a && n < SIZE_MAX - 16) {
    size_t want = (n + 15) & ~(size_t)15;
    size_t at = atomic_fetch_add_explicit(&a->meta_next, want, memory_order_relaxed);
    if (at <= a->meta_end && a->meta_end - at >= want) return a->base + at;
  }
  return NULL;
}

static void *meta_alloc(struct msgarena *a, size_t n) {
  void *p = meta_room(a, n);
  return p ? p : mem_alloc(n);
}

static void meta_free(struct msgarena *a, void *p) {
  uintptr_t q = (uintptr_t)p;
  if (!a || q < (uintptr_t)a->base || q >= (uintptr_t)a->base + a->size) free(p);
}

static void rendered_free(struct rendered *r, struct msgarena *a) {
  meta_free(a, atomic_load(&r->envelope));
  meta_free(a, atomic_load(&r->body));
  meta_free(a, atomic_load(&r->bodystructure));
}

static void msgmeta_free(struct msgmeta *m, struct msgarena *a) {
  if (!m) return;
  rendered_free(&m->rendered, a);
  meta_free(a, m->parts);
  meta_free(a, m);
}

/*
** Parse the MIME tree once, into a's room if it has some, with the loader's marks if there
** are (NULL: none). If kept is not NULL, kept->hs gets each part's header fields as the
** parse read them (kept_headers_free frees them), so that rendering need not read the
** headers again. NULL if memory ran out. The builder's arrays start in this frame and
** kept->room, so that a message of few parts costs no allocation but its table's room.
*/
static struct msgmeta *msgmeta_build_keeping(const char *msg, size_t size,
                                             const struct line_mark *marks, uint32_t nmarks,
                                             struct msgarena *a, struct kept_headers *kept) {
  atomic_fetch_add(&msgmeta_builds, 1);
  if (kept) kept->hs = NULL;
  struct msgmeta *m = meta_alloc(a, sizeof *m);
  if (!m) return NULL;
  memset(m, 0, sizeof *m);
  atomic_init(&m->rendered.envelope, NULL);
  atomic_init(&m->rendered.body, NULL);
  atomic_init(&m->rendered.bodystructure, NULL);
  struct part room[MIME_ROOM];
  unsigned long failed = mem_failed;  /* a scratch buffer that could not grow: none kept */
  struct mime_builder mb = {.msg = msg, .marks = marks, .nmarks = nmarks, .parts = room,
                            .hs = kept ? kept->room : NULL, .keep_headers = kept != NULL,
                            .cap = MIME_ROOM, .parts_room = room,
                            .hs_room = kept ? kept->room : NULL};
  mime_parse(&mb, 0, size, 0, 0);
  if (mem_failed != failed) mb.failed = 1;
  if (!mb.failed && mb.n > 0) {  /* kept for every message: no spare room (issue 15) */
    struct part *fit = meta_room(a, sizeof *fit * (size_t)mb.n);
    if (!fit && mb.parts == room) fit = mem_alloc(sizeof *fit * (size_t)mb.n);
    if (fit) {
      memcpy(fit, mb.parts, sizeof *fit * (size_t)mb.n);
      if (mb.parts != room) free(mb.parts);
      mb.parts = fit;
    } else if (mb.parts == room) {
      mb.failed = 1;
    } else if (mb.n < mb.cap && (fit = realloc(mb.parts, sizeof *fit * (size_t)mb.n))) {
      mb.parts = fit;
    }
  }
  m->parts = mb.parts == room ? NULL : mb.parts;
  m->nparts = mb.n;
  atomic_init(&m->sent, SENT_UNKNOWN);
  if (mb.failed || mb.n == 0) {
    if (mb.hs != mb.hs_room) free(mb.hs);
    msgmeta_free(m, a);
    return NULL;
  }
  if (kept) kept->hs = mb.hs;
  return m;
}

/* The part table of a message in no arena and without the loader's marks. */
static struct msgmeta *msgmeta_build(const char *msg, size_t size) {
  return msgmeta_build_keeping(msg, size, NULL, 0, NULL, NULL);
}

/*
** The day the message says it was sent (its first Date field), or INT64_MIN, made on first
** use: only SEARCH's SENT* keys read it, so a FETCH's first pass need not parse the date.
** Two threads that both make it store the same value.
*/
static int64_t msgmeta_sent(struct msgmeta *m, const char *msg) {
  int64_t sent = atomic_load_explicit(&m->sent, memory_order_relaxed), t;
  if (sent != SENT_UNKNOWN) return sent;
  struct str v;
  int tz;
  unsigned long failed = mem_failed;   /* a date with a comment is read with a scratch buffer */
  sent = header_get(msg, msg + m->parts[0].hdr_len, "Date", &v) && date_parse(v, &t, &tz)
       ? day_of(t, tz, NULL) : INT64_MIN;
  if (mem_failed == failed) atomic_store_explicit(&m->sent, sent, memory_order_relaxed);
  return sent;
}

/* Render one of ENVELOPE, BODY, BODYSTRUCTURE (a RENDER_ bit), its size to the byte, into
   a's room if it has some, from the parts' header fields hs if the caller has them (from
   msgmeta_build_keeping). NULL if memory ran out. */
static char *render(const char *msg, const struct msgmeta *m, unsigned which,
                    struct msgarena *a, const struct headers *hs) {
  atomic_fetch_add(&rendered_builds, 1);
  unsigned long failed = mem_failed;   /* a scratch buffer that could not grow: none kept */
  char room[1024];           /* most are shorter: no allocation but the arena's */
  struct buf b;
  buf_in_room(&b, room, sizeof room);
  if (which == RENDER_ENVELOPE) {
    if (!hs || !out_envelope_scanned(&b, &hs[0]))
      out_envelope(&b, msg, msg + m->parts[0].hdr_len);
  } else {
    out_body(&b, msg, m->parts, 0, which == RENDER_BODYSTRUCTURE, hs);
  }
  if (mem_failed != failed) b.oom = 1;
  char *text = b.oom || !b.p ? NULL : meta_room(a, b.len + 1);
  if (text) {
    memcpy(text, b.p, b.len + 1);
    buf_free(&b);
    return text;
  }
  size_t len = b.len;         /* no room: its own allocation, shrunk to fit */
  text = buf_take(&b);
  char *fit = text ? realloc(text, len + 1) : NULL;
  return fit ? fit : text;
}

/* The message's part table, computed on first use; if this call made it and kept is not
   NULL, kept->hs gets the parts' header fields (msgmeta_build_keeping). NULL if memory ran
   out. */
static struct msgmeta *msgdata_meta_keeping(struct msgdata *d, struct kept_headers *kept) {
  if (kept) kept->hs = NULL;
  struct msgmeta *m = atomic_load_explicit(&d->meta, memory_order_acquire);
  if (m) return m;
  struct msgmeta *n = msgmeta_build_keeping(d->bytes, d->size, d->marks, d->nmarks, d->arena,
                                            kept);
  if (!n) return NULL;
  struct msgmeta *expected = NULL;
  if (atomic_compare_exchange_strong(&d->meta, &expected, n)) return n;
  msgmeta_free(n, d->arena); /* another thread won the race; use its copy */
  if (kept) kept_headers_free(kept);
  return expected;
}

static struct msgmeta *msgdata_meta(struct msgdata *d) {
  return msgdata_meta_keeping(d, NULL);
}

/*
** The message's rendered text, with at least the pieces in want (RENDER_ bits) made, each
** on first use. NULL if memory ran out.
*/
static _Atomic(char *) *rendered_slot(struct rendered *r, unsigned bit) {
  return bit == RENDER_ENVELOPE ? &r->envelope : bit == RENDER_BODY ? &r->body
                                                                    : &r->bodystructure;
}

/* Are the pieces in want (RENDER_ bits) made already? */
static int rendered_made(struct msgmeta *m, unsigned want) {
  for (unsigned bit = RENDER_ENVELOPE; bit <= RENDER_BODYSTRUCTURE; bit <<= 1)
    if ((want & bit) && !atomic_load(rendered_slot(&m->rendered, bit))) return 0;
  return 1;
}

static const struct rendered *msgdata_rendered(struct msgdata *d, unsigned want) {
  struct kept_headers kept;  /* a first pass reads each header once, for all of it */
  kept.hs = NULL;
  struct msgmeta *m = msgdata_meta_keeping(d, want ? &kept : NULL);
  if (!m) return NULL;       /* of it, only m->rendered (and sent) is ever written */
  struct rendered *r = &m->rendered;
  for (unsigned bit = RENDER_ENVELOPE; bit <= RENDER_BODYSTRUCTURE; bit <<= 1) {
    _Atomic(char *) *slot = rendered_slot(r, bit);
    if (!(want & bit) || atomic_load_explicit(slot, memory_order_acquire)) continue;
    char *text = render(d->bytes, m, bit, d->arena, kept.hs);
    if (!text) {
      r = NULL;
      break;
    }
    char *expected = NULL;
    if (!atomic_compare_exchange_strong(slot, &expected, text))
      meta_free(d->arena, text);   /* another thread won the race; use its copy */
  }
  kept_headers_free(&kept);
  return r;
}

/* ------------------------------------------------------------------------- */
/*
** Text as a person reads it, for SEARCH: RFC 2047 encoded words decoded in headers,
** base64 and quoted-printable undone in bodies, and every charset converted to UTF-8
** (charset_to_utf8), so that a UTF-8 search string finds it.
*/
static void latin1_to_utf8(const char *p, size_t n, struct buf *out) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)p[i];
    if (c < 0x80) buf_addc(out, (char)c);
    else {
      buf_addc(out, (char)(0xc0 | (c >> 6)));
      buf_addc(out, (char)(0x80 | (c & 0x3f)));
    }
  }
}

/*
** Text in charset cs as UTF-8, into out: UTF-8 and US-ASCII as they are, ISO-8859-1 by
** table, every other charset through libc's iconv (the legacy CJK ones real mail uses
** too: ISO-2022-JP, Shift_JIS, EUC-KR, GB2312/GBK, Big5); a byte iconv cannot convert
** becomes U+FFFD, and text in a charset iconv does not know is left as it is.
*/
static void charset_to_utf8(struct str cs, const char *p, size_t n, struct buf *out) {
  char name[64];
  iconv_t cd = (iconv_t)-1;
  if (!charset_is_utf8(cs) && !charset_is_latin1(cs) && cs.len < sizeof name) {
    snprintf(name, sizeof name, "%.*s", (int)cs.len, cs.p);
    cd = iconv_open("UTF-8", name);
  }
  if (cd == (iconv_t)-1) {
    if (charset_is_latin1(cs)) latin1_to_utf8(p, n, out);
    else buf_add(out, p, n);
    return;
  }
  char *in = (char *)p;      /* iconv's prototype; it does not write there */
  size_t left = n;
  while (left && buf_reserve(out, left * 4 + 16)) {
    char *o = out->p + out->len;
    size_t room = out->cap - out->len - 1;
    size_t r = iconv(cd, &in, &left, &o, &room);
    out->len = (size_t)(o - out->p);
    if (r == (size_t)-1 && errno != E2BIG) {   /* EILSEQ, or EINVAL at the end */
      buf_adds(out, "\xef\xbf\xbd");
      in++;
      left--;
      iconv(cd, NULL, NULL, NULL, NULL);
    }
  }
  iconv_close(cd);
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/*
** Quoted-printable (RFC 2045 6.7), or the Q encoding of a header word (RFC 2047 4.2).
** In a body, white space at the end of a line was added in transport and is deleted
** (6.7 rule 3); "=20" keeps a space that belongs there.
*/
static void qp_decode(const char *p, size_t n, struct buf *out, int header) {
  for (size_t i = 0; i < n; i++) {
    char c = p[i];
    if ((c == ' ' || c == '\t') && !header) {
      size_t j = i;
      while (j < n && (p[j] == ' ' || p[j] == '\t')) j++;
      if (j == n || p[j] == '\r' || p[j] == '\n') {
        i = j - 1;
        continue;
      }
    }
    if (c == '_' && header) buf_addc(out, ' ');
    else if (c == '=' && i + 2 < n && hexval((unsigned char)p[i + 1]) >= 0 &&
             hexval((unsigned char)p[i + 2]) >= 0) {
      buf_addc(out, (char)(hexval((unsigned char)p[i + 1]) * 16 +
                           hexval((unsigned char)p[i + 2])));
      i += 2;
    } else if (c == '=' && !header) {  /* soft line break: "=" then optional WSP, CRLF */
      size_t j = i + 1;
      while (j < n && (p[j] == ' ' || p[j] == '\t')) j++;
      if (j < n && p[j] == '\r') j++;
      if (j < n && p[j] == '\n') i = j;
      else buf_addc(out, c);
    } else {
      buf_addc(out, c);
    }
  }
}

/* Decode RFC 2047 encoded words in an unstructured header value (unfolded into out). */
static void rfc2047_decode(struct str v, struct buf *out) {
  size_t i = 0;
  while (i < v.len && v.p[i] != '=' && v.p[i] != '\r' && v.p[i] != '\n') i++;
  if (i == v.len) {          /* no encoded word, no line break (most values): as it is */
    buf_add(out, v.p, v.len);
    return;
  }
  i = 0;
  int last_was_word = 0;
  size_t pending_ws_at = 0, pending_ws_len = 0;
  while (i < v.len) {
    if (v.p[i] == '\r' || v.p[i] == '\n') {
      i++;
      continue;
    }
    if (v.p[i] == '=' && i + 1 < v.len && v.p[i + 1] == '?') {
      /* =?charset?enc?text?= */
      const char *s = v.p + i + 2, *e = v.p + v.len;
      const char *q1 = memchr(s, '?', (size_t)(e - s));
      const char *q2 = q1 && q1 + 2 < e && q1[2] == '?' ? q1 + 2 : NULL;
      const char *q3 = NULL;
      if (q2) {
        for (const char *x = q2 + 1; x + 1 < e; x++)
          if (x[0] == '?' && x[1] == '=') {
            q3 = x;
            break;
          }
      }
      if (q3) {
        struct str cs = str_make(s, (size_t)(q1 - s));
        const char *star = memchr(cs.p, '*', cs.len);   /* RFC 2231 language suffix */
        if (star) cs.len = (size_t)(star - cs.p);
        char enc = (char)toupper((unsigned char)q1[1]);
        struct buf raw = {0};
        if (enc == 'B') base64_decode(q2 + 1, (size_t)(q3 - q2 - 1), &raw, 0);
        else if (enc == 'Q') qp_decode(q2 + 1, (size_t)(q3 - q2 - 1), &raw, 1);
        if (enc == 'B' || enc == 'Q') {
          /* white space between two encoded words is dropped (RFC 2047 6.2) */
          if (!last_was_word && pending_ws_len) buf_add(out, v.p + pending_ws_at, pending_ws_len);
          pending_ws_len = 0;
          charset_to_utf8(cs, raw.p ? raw.p : "", raw.len, out);
          buf_free(&raw);
          last_was_word = 1;
          i = (size_t)(q3 + 2 - v.p);
          continue;
        }
        buf_free(&raw);
      }
    }
    if (v.p[i] == ' ' || v.p[i] == '\t') {
      size_t j = i;
      while (j < v.len && (v.p[j] == ' ' || v.p[j] == '\t' || v.p[j] == '\r' || v.p[j] == '\n'))
        j++;
      if (pending_ws_len) buf_add(out, v.p + pending_ws_at, pending_ws_len);
      pending_ws_at = i;
      pending_ws_len = 0;
      for (size_t k = i; k < j; k++)
        if (v.p[k] == ' ' || v.p[k] == '\t') pending_ws_len = k - i + 1;
      i = j;
      continue;
    }
    if (pending_ws_len) buf_add(out, v.p + pending_ws_at, pending_ws_len);
    pending_ws_len = 0;
    last_was_word = 0;
    size_t j = i + 1;        /* the rest of this run of plain text, at once */
    while (j < v.len && v.p[j] != '\r' && v.p[j] != '\n' && v.p[j] != ' ' && v.p[j] != '\t' &&
           v.p[j] != '=')
      j++;
    buf_add(out, v.p + i, j - i);
    i = j;
  }
  if (pending_ws_len && !last_was_word) buf_add(out, v.p + pending_ws_at, pending_ws_len);
}

/*
** An address-list field as SEARCH FROM/TO/CC/BCC matches it: the parsed addresses
** written back as `name <adl:mailbox@host>`, groups as `name: ...;`, encoded words
** decoded, so a search finds what ENVELOPE shows (a comment-only name too) and never
** what parsing dropped (Dovecot matches the same way).
*/
static void address_search_text(struct str v, struct buf *out) {
  struct addrs_room room;
  struct addrs as;
  addrs_in_room(&as, &room);
  struct buf text = {0};
  addrs_parse(v, &as, 0);
  for (int i = 0; i < as.n; i++) {
    const struct addr *a = &as.a[i];
    if (i && a->kind != ADDR_GROUP_END && as.a[i - 1].kind != ADDR_GROUP)
      buf_adds(&text, ", ");
    if (a->kind == ADDR_GROUP_END) {
      buf_addc(&text, ';');
      continue;
    }
    struct str name = addr_str(&as, a->name), adl = addr_str(&as, a->adl),
               mailbox = addr_str(&as, a->mailbox), host = addr_str(&as, a->host);
    buf_add(&text, name.p, name.len);
    if (a->kind == ADDR_GROUP) {
      buf_adds(&text, ": ");
      continue;
    }
    if (a->has_name) buf_adds(&text, " <");
    if (adl.len) {
      buf_add(&text, adl.p, adl.len);
      buf_addc(&text, ':');
    }
    buf_add(&text, mailbox.p, mailbox.len);
    buf_addc(&text, '@');
    buf_add(&text, host.p, host.len);
    if (a->has_name) buf_addc(&text, '>');
  }
  rfc2047_decode(str_make(text.p ? text.p : "", text.len), out);
  buf_free(&text);
  addrs_free(&as);
}

/* The decoded text of one leaf part's body, for SEARCH BODY/TEXT. */
static void part_decoded_text(const char *msg, const struct part *pt, struct buf *out) {
  const char *p = msg + pt->body_off;
  size_t n = pt->body_len;
  struct buf raw = {0};
  if (pt->cte != CTE_IDENTITY) {
    if (pt->cte == CTE_BASE64) base64_decode(p, n, &raw, 0);
    else qp_decode(p, n, &raw, 0);
    p = raw.p ? raw.p : "";
    n = raw.len;
  }
  if (pt->charset == CS_LATIN1) {
    latin1_to_utf8(p, n, out);
  } else if (pt->charset == CS_ICONV) {   /* the charset's name, read again */
    struct str v;
    struct ctype ct;
    struct buf cs = {0};
    if (header_get(msg + pt->hdr_off, msg + pt->hdr_off + pt->hdr_len, "Content-Type", &v)) {
      ctype_parse(v, 1, &ct);
      ctype_param(&ct, "charset", &cs);
      ctype_free(&ct);
    }
    charset_to_utf8(str_make(cs.p ? cs.p : "", cs.len), p, n, out);
    buf_free(&cs);
  } else {
    buf_add(out, p, n);
  }
  buf_free(&raw);
}

/*
** A leaf part's body with its Content-Transfer-Encoding undone, for FETCH BINARY (RFC
** 3516 4.2): a view into msg for 7bit, 8bit and binary, else decoded into tmp. 0 for an
** encoding it does not know (UNKNOWN-CTE).
*/
static int part_binary(const char *msg, const struct part *pt, struct buf *tmp,
                       struct str *out) {
  if (pt->cte == CTE_UNKNOWN) return 0;
  if (pt->cte == CTE_BASE64) base64_decode(msg + pt->body_off, pt->body_len, tmp, 0);
  else if (pt->cte == CTE_QP) qp_decode(msg + pt->body_off, pt->body_len, tmp, 0);
  *out = pt->cte == CTE_IDENTITY ? str_make(msg + pt->body_off, pt->body_len)
                                 : str_make(tmp->p ? tmp->p : "", tmp->len);
  return 1;
}

/*
** A message APPENDed as a literal8 (RFC 3516 4.4) may hold binary parts, which neither a
** {n} literal nor BODY[] can carry (RFC 3501 9: CHAR8 has no NUL). RFC 3516 6 lets the
** server store them in another encoding as long as nothing is lost and BODYSTRUCTURE and
** BODY describe what is stored: each leaf part declared "binary", or holding a NUL, is
** rewritten as base64, its Content-Transfer-Encoding changed or added. Everything else is
** kept byte for byte (6: no gratuitous changes, which would break signatures). Returns 1
** with the new message in out, 0 if nothing needed a change, -1 if memory ran out.
*/
static int msg_binary_to_base64(const char *msg, size_t n, struct buf *out) {
  struct msgmeta *mm = msgmeta_build(msg, n);
  if (!mm) return -1;
  size_t done = 0;           /* msg[0, done) is in out (or unchanged, while none is) */
  int changed = 0;
  for (int i = 0; i < mm->nparts; i++) {
    const struct part *pt = &mm->parts[i];
    if (pt->kind != PART_LEAF && pt->kind != PART_TEXT) continue;
    int identity = pt->cte == CTE_IDENTITY;   /* 7bit, 8bit, binary */
    if (!(pt->cte_len && str_ieq(part_view(msg, pt->cte_off, pt->cte_len), "binary")) &&
        !(identity && memchr(msg + pt->body_off, 0, pt->body_len)))
      continue;
    changed = 1;
    if (pt->cte_len) {       /* the encoding's name, replaced */
      buf_add(out, msg + done, pt->cte_off - done);
      buf_adds(out, "base64");
      done = pt->cte_off + pt->cte_len;
    } else {                 /* a field added before the header's blank line */
      size_t at = pt->hdr_off + pt->hdr_len, eol = 0;
      if (at - pt->hdr_off >= 2 && msg[at - 2] == '\r' && msg[at - 1] == '\n') eol = 2;
      else if (at > pt->hdr_off && msg[at - 1] == '\n') eol = 1;
      at -= eol;
      buf_add(out, msg + done, at - done);
      buf_adds(out, eol == 1 ? "Content-Transfer-Encoding: base64\n"
                             : "Content-Transfer-Encoding: base64\r\n");
      done = at;
    }
    buf_add(out, msg + done, pt->body_off - done);
    base64_encode(msg + pt->body_off, pt->body_len, out);
    if (out->len >= 2 && pt->body_len) out->len -= 2;  /* the part's last line break is */
    done = pt->body_off + pt->body_len;                /* the delimiter's (RFC 2046 5.1.1) */
  }
  if (changed) buf_add(out, msg + done, n - done);
  msgmeta_free(mm, NULL);
  if (out->oom) return -1;
  return changed;
}

/* ------------------------------------------------------------------------- */
/*
** SORT and THREAD keys (RFC 5256, RFC 5957): read from the header once per message and
** kept with its bytes like the part table, read by ENVELOPE's rules (the last Date, Subject,
** Message-ID, In-Reply-To and References; the first From, To and Cc address), so a
** SORT of a mailbox parses no header twice. Strings are case-folded for the comparator:
** ASCII letters to capitals, as Dovecot's i;unicode-casemap titlecases them (so '_' sorts
** after 'Z' and before 'a' alike), other letters by utf8_fold; a SORT then compares bytes.
*/
static void sortkeys_fold(char *p, size_t n) {
  unsigned char high = 0;    /* any byte from 0x80: then other letters too */
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)p[i];
    high |= c;
    if (c >= 'a' && c <= 'z') p[i] = (char)(c - 'a' + 'A');
  }
  if (high & 0x80) utf8_fold((unsigned char *)p, n);
}

/* subj-blob at s (RFC 5256 5): "[" *BLOBCHAR "]" *WSP; its length, or 0. */
static size_t subj_blob(const char *s, size_t n) {
  if (n == 0 || s[0] != '[') return 0;
  size_t i = 1;
  while (i < n && s[i] != '[' && s[i] != ']' && s[i] != 0) i++;
  if (i >= n || s[i] != ']') return 0;
  for (i++; i < n && s[i] == ' '; i++) continue;
  return i;
}

/* subj-refwd at s (RFC 5256 5): ("re" / ("fw" ["d"])) *WSP [subj-blob] ":"; or 0. */
static size_t subj_refwd(const char *s, size_t n) {
  size_t i;
  if (n >= 2 && mem_ieq(s, "re", 2)) i = 2;
  else if (n >= 2 && mem_ieq(s, "fw", 2))
    i = n > 2 && (s[2] == 'd' || s[2] == 'D') ? 3 : 2;
  else return 0;
  while (i < n && s[i] == ' ') i++;
  i += subj_blob(s + i, n - i);
  return i < n && s[i] == ':' ? i + 1 : 0;
}

/*
** The base subject of a Subject value (RFC 5256 2.1), appended to out; *reply is set
** when a step removed a subj-refwd, a "(fwd)" trailer or a "[fwd: ...]" wrapper (the
** "reply or forward" of RFC 5256 3, REFERENCES step 5).
*/
static void base_subject(struct str v, struct buf *out, int *reply) {
  char room[256];            /* most subjects: no allocation */
  struct buf dec;
  buf_in_room(&dec, room, sizeof room);
  rfc2047_decode(v, &dec);   /* (1): encoded words to UTF-8, continuations unfolded */
  size_t n = 0;
  for (size_t i = 0; i < dec.len; i++) {   /* (1): tabs to spaces, runs to one */
    char c = dec.p[i] == '\t' || dec.p[i] == '\r' || dec.p[i] == '\n' ? ' ' : dec.p[i];
    if (c == ' ' && n && dec.p[n - 1] == ' ') continue;
    dec.p[n++] = c;
  }
  const char *t = dec.p ? dec.p : "";
  size_t b = 0, e = n;
  for (;;) {
    for (;;) {               /* (2) subj-trailer: "(fwd)" / WSP, until none is left */
      if (e > b && t[e - 1] == ' ') {
        e--;
      } else if (e - b >= 5 && mem_ieq(t + e - 5, "(fwd)", 5)) {
        e -= 5;
        *reply = 1;
      } else {
        break;
      }
    }
    for (int changed = 1; changed;) {   /* (5): (3) and (4) until neither matches */
      changed = 0;
      for (;;) {             /* (3) subj-leader: (*subj-blob subj-refwd) / WSP */
        if (b < e && t[b] == ' ') {
          b++;
          changed = 1;
          continue;
        }
        size_t q = b, k;
        while ((k = subj_blob(t + q, e - q))) q += k;
        if (!(k = subj_refwd(t + q, e - q))) break;
        b = q + k;
        *reply = changed = 1;
      }
      size_t k = subj_blob(t + b, e - b);   /* (4): a blob, unless it is all there is */
      if (k && b + k < e) {
        b += k;
        changed = 1;
      }
    }
    /* (6): "[fwd:" subject "]" is unwrapped, and it all starts again */
    if (e - b >= 6 && mem_ieq(t + b, "[fwd:", 5) && t[e - 1] == ']') {
      b += 5;
      e--;
      *reply = 1;
      continue;
    }
    break;
  }
  buf_add(out, t + b, e - b);
  buf_free(&dec);
}

/* A byte of a msg-id that msgid_next keeps as it is: not a delimiter, quote or space. */
static int msgid_plain(char c) {
  switch (c) {
  case '<': case '>': case '(': case ')': case '\\': case '"': case ' ': case '\t': case '\r':
  case '\n':
    return 0;
  default:
    return 1;
  }
}

/*
** The next msg-id at *pos in [*pos, end), normalized into out (RFC 5256 3: quoting,
** white space and comments inside "<...>" do not make two ids differ): 1 if one was found.
*/
static int msgid_next(const char **pos, const char *end, struct buf *out) {
  const char *p = *pos;
  while ((p = memchr(p, '<', (size_t)(end - p)))) {
    const char *q = ++p;
    size_t at = out->len;
    int depth = 0;
    for (; q < end && *q != '>' && *q != '<'; q++) {
      const char *run = q;   /* most of an id: bytes kept as they are, moved at once */
      while (!depth && run < end && msgid_plain(*run)) run++;
      if (run > q) {
        buf_add(out, q, (size_t)(run - q));
        q = run - 1;
        continue;
      }
      if (*q == '(' && !depth) depth = 1;
      else if (*q == ')' && depth) depth = 0;
      else if (*q == '\\' && q + 1 < end) buf_addc(out, *++q);
      else if (!depth && *q != '"' && *q != ' ' && *q != '\t' && *q != '\r' && *q != '\n')
        buf_addc(out, *q);
    }
    if (q < end && *q == '>' && out->len > at) {
      *pos = q + 1;
      return 1;
    }
    out->len = at;           /* "<>" or no '>': not a msg-id; look further */
  }
  *pos = end;
  return 0;
}

/*
** The first address of an address-list field: its addr-mailbox at *mailbox, and the
** RFC 5957 3 display value at *display (the decoded addr-name, else addr-mailbox@addr-host,
** else addr-mailbox), both folded. A group's name stands for both, as Dovecot takes it.
*/
static void sortkeys_address(struct str v, int have, struct buf *text, uint32_t *mailbox,
                             uint32_t *display, struct addrs *scratch) {
  struct addrs *as = scratch;   /* the caller's, emptied here and freed by it */
  addrs_reset(as);
  if (have && !addrs_parse_plain(v, as, 0, 1)) addrs_parse(v, as, 0);   /* the first counts */
  const struct addr *a = as->n ? &as->a[0] : NULL;
  struct span none = {0, 0};
  struct str name = addr_str(as, a ? a->name : none), mbox = addr_str(as, a ? a->mailbox : none),
             host = addr_str(as, a ? a->host : none);
  size_t at = text->len;
  *mailbox = (uint32_t)at;
  if (a && a->kind == ADDR_GROUP && name.len) buf_add(text, name.p, name.len);
  else if (a && a->kind == ADDR_MAILBOX) buf_add(text, mbox.p, mbox.len);
  if (!text->oom) sortkeys_fold(text->p + at, text->len - at);
  buf_addc(text, 0);
  at = text->len;
  *display = (uint32_t)at;
  if (name.len) rfc2047_decode(name, text);
  if (a && a->kind == ADDR_MAILBOX) {
    if (text->len == at) {
      buf_add(text, mbox.p, mbox.len);
      if (host.len) buf_addc(text, '@');
      buf_add(text, host.p, host.len);
    }
  }
  if (!text->oom) sortkeys_fold(text->p + at, text->len - at);
  buf_addc(text, 0);
}

/*
** Which of the fields the keys read name is: an H_* (Date, Subject, Message-ID,
** In-Reply-To, From, To, Cc), SORTKEY_REFERENCES, or -1. Most fields of a header are none
** of them, and their length says so without a comparison.
*/
enum { SORTKEY_REFERENCES = H_COUNT, SORTKEY_FIELDS };
static int sortkeys_field(struct str name) {
  const char *z;
  int id, c = name.len ? name.p[0] | 0x20 : 0;
  switch (name.len) {
  case 2: z = c == 't' ? "To" : "Cc", id = c == 't' ? H_TO : H_CC; break;
  case 4: z = c == 'd' ? "Date" : "From", id = c == 'd' ? H_DATE : H_FROM; break;
  case 7: z = "Subject", id = H_SUBJECT; break;
  case 10: z = c == 'm' ? "Message-ID" : "References";
           id = c == 'm' ? H_MESSAGE_ID : SORTKEY_REFERENCES; break;
  case 11: z = "In-Reply-To", id = H_IN_REPLY_TO; break;
  default: return -1;
  }
  return mem_ieq(name.p, z, name.len) ? id : -1;
}

static atomic_long sortkeys_builds;   /* so a test can see each message's are made once */
static atomic_long sortaddrs_builds;  /* and that only a SORT by an address makes these */

/* A struct of size bytes whose flexible array at offset at holds text, in a's room if it
   has some (meta_alloc); NULL if memory ran out, now or in a scratch buffer since failed
   was read. */
static void *sortkeys_keep(struct msgarena *a, size_t size, size_t at, const struct buf *text,
                           unsigned long failed) {
  char *out = !text->oom && mem_failed == failed ? meta_alloc(a, size + text->len) : NULL;
  if (out) memcpy(out + at, text->p, text->len);
  return out;
}

/* Read the keys but the addresses from the header [h, hend), into a's room if it has some
   (meta_alloc). NULL if memory ran out. */
static struct sortkeys *sortkeys_build(const char *h, const char *hend, struct msgarena *a) {
  atomic_fetch_add(&sortkeys_builds, 1);
  unsigned long failed = mem_failed;   /* a scratch buffer that could not grow: none kept */
  struct str v[SORTKEY_FIELDS];
  int have[SORTKEY_FIELDS] = {0};
  struct field f;
  while (header_next(&h, hend, &f)) {
    int i = sortkeys_field(f.name);
    if (i >= 0 && i != H_FROM && i != H_TO && i != H_CC) {   /* the last of each */
      v[i] = f.value;
      have[i] = 1;
    }
  }
  struct sortkeys k = {0};
  char room[512];            /* the keys of most messages fit: no allocation but the kept */
  struct buf text;
  buf_in_room(&text, room, sizeof room);
  int64_t t;
  int tz;
  k.sent = have[H_DATE] && date_parse(v[H_DATE], &t, &tz) ? t : INT64_MIN;
  k.subject = 0;
  if (have[H_SUBJECT]) base_subject(v[H_SUBJECT], &text, &k.reply);
  if (!text.oom) sortkeys_fold(text.p, text.len);
  buf_addc(&text, 0);
  k.msgid = SORTKEY_NONE;
  const char *p = have[H_MESSAGE_ID] ? v[H_MESSAGE_ID].p : NULL;
  size_t at = text.len;
  if (p && msgid_next(&p, v[H_MESSAGE_ID].p + v[H_MESSAGE_ID].len, &text)) {
    k.msgid = (uint32_t)at;
    buf_addc(&text, 0);
  }
  k.refs = (uint32_t)text.len;
  static const int refs_from[] = {SORTKEY_REFERENCES, H_IN_REPLY_TO};   /* else In-Reply-To */
  for (int r = 0; r < 2 && !k.nrefs; r++) {
    int i = refs_from[r];
    if (!have[i]) continue;
    for (p = v[i].p; msgid_next(&p, v[i].p + v[i].len, &text);) {
      buf_addc(&text, 0);
      k.nrefs++;
      if (i == H_IN_REPLY_TO) break;   /* only its first (RFC 5256 3) */
    }
  }
  struct sortkeys *out = sortkeys_keep(a, sizeof *out, offsetof(struct sortkeys, text), &text,
                                       failed);
  if (out) {
    memcpy(out, &k, offsetof(struct sortkeys, addrs));
    atomic_init(&out->addrs, NULL);
  }
  buf_free(&text);
  return out;
}

/* Read the address keys from the header [h, hend): the first From, To and Cc field. */
static struct sortaddrs *sortaddrs_build(const char *h, const char *hend, struct msgarena *a) {
  atomic_fetch_add(&sortaddrs_builds, 1);
  unsigned long failed = mem_failed;
  struct str v[H_COUNT];
  int have[H_COUNT] = {0};
  struct field f;
  while (header_next(&h, hend, &f)) {
    int i = sortkeys_field(f.name);
    if ((i == H_FROM || i == H_TO || i == H_CC) && !have[i]) {   /* the first of each */
      v[i] = f.value;
      have[i] = 1;
    }
  }
  struct sortaddrs k;
  char room[512];
  struct buf text;
  buf_in_room(&text, room, sizeof room);
  uint32_t unused;
  struct addrs_room aroom;
  struct addrs as;
  addrs_in_room(&as, &aroom);
  sortkeys_address(v[H_FROM], have[H_FROM], &text, &k.from, &k.display_from, &as);
  sortkeys_address(v[H_TO], have[H_TO], &text, &k.to, &k.display_to, &as);
  sortkeys_address(v[H_CC], have[H_CC], &text, &k.cc, &unused, &as);
  addrs_free(&as);
  struct sortaddrs *out = sortkeys_keep(a, sizeof *out, offsetof(struct sortaddrs, text),
                                        &text, failed);
  if (out) *out = k;
  buf_free(&text);
  return out;
}

/*
** The message's SORT and THREAD keys, made on first use from the header alone (the MIME
** tree is not needed, and costs most of msgdata_meta). NULL if memory ran out.
*/
static struct sortkeys *msgdata_sortkeys(struct msgdata *d) {
  struct sortkeys *k = atomic_load_explicit(&d->sortkeys, memory_order_acquire);
  if (k) return k;
  struct sortkeys *n = sortkeys_build(d->bytes, d->bytes + d->hdr_len, d->arena);
  if (!n) return NULL;
  struct sortkeys *expected = NULL;
  if (atomic_compare_exchange_strong(&d->sortkeys, &expected, n)) return n;
  meta_free(d->arena, n);
  return expected;
}

/* The message's address keys (a SORT by FROM, TO, CC or a display value), made on first
   use as the other keys are. NULL if memory ran out. */
static const struct sortaddrs *msgdata_sortaddrs(struct msgdata *d) {
  struct sortkeys *k = msgdata_sortkeys(d);
  if (!k) return NULL;
  struct sortaddrs *ad = atomic_load_explicit(&k->addrs, memory_order_acquire);
  if (ad) return ad;
  struct sortaddrs *n = sortaddrs_build(d->bytes, d->bytes + d->hdr_len, d->arena);
  if (!n) return NULL;
  if (atomic_compare_exchange_strong(&k->addrs, &ad, n)) return n;
  meta_free(d->arena, n);
  return ad;
}

static void sortkeys_free(struct sortkeys *k, struct msgarena *a) {
  if (!k) return;
  meta_free(a, atomic_load(&k->addrs));
  meta_free(a, k);
}

/*
** A first pass over many messages (issue 15): a command that builds what it needs of each
** message in order (FETCH its renderings, SORT and THREAD their sort keys) shares the work
** with a helper thread on a spare core. Both take runs of BUILD_AHEAD_RUN messages from the
** front, from one counter: the helper builds each run it takes; the command, at a message
** the helper has taken and not made yet, takes the next run and builds that instead of
** waiting, and waits only when none is left. So the command's output follows its build
** closely and its client reads all along, not half of the answer at the end.
** Only when the last message's are not made yet. No message is built twice (a test counts
** builds): a message is built by the one that took its run, or, in the run the command
** holds (ba->mine), by the command itself, after build_ahead_at. The command holds a
** reference to every message of the array, and leaves the array alone, until it joins the
** helper (build_ahead_stop).
*/
#define BUILD_AHEAD_FROM 256       /* messages: for fewer a thread is not worth starting */
#define BUILD_AHEAD_RUN 32         /* messages taken at a time: neighbours share cache lines */
enum { BUILD_SORTKEYS = 8, BUILD_SORTADDRS = 16 };   /* what to build: RENDER_ bits, or one
                                                       of these (ADDRS: the keys too) */
struct build_ahead {
  pthread_t thread;
  const char *items;         /* item i's struct msgdata * is at items + i * stride */
  size_t stride, n;
  unsigned want;
  atomic_size_t next;        /* the first message no one has taken */
  atomic_int helper_done;    /* the helper has ended (all taken, or memory ran out) */
  size_t mine, mine_end;     /* the run the command took and builds as it goes */
  int running;
};

static struct msgdata *build_ahead_item(const struct build_ahead *ba, size_t i) {
  struct msgdata *d;
  memcpy(&d, ba->items + i * ba->stride, sizeof d);
  return d;
}

static int msgdata_built(struct msgdata *d, unsigned want) {
  if (want & (BUILD_SORTKEYS | BUILD_SORTADDRS)) {
    struct sortkeys *k = atomic_load(&d->sortkeys);
    return k && (!(want & BUILD_SORTADDRS) || atomic_load(&k->addrs));
  }
  struct msgmeta *m = atomic_load(&d->meta);
  return m && rendered_made(m, want);
}

/* Ask for the cache line at p before it is read: a hint (GCC's and Clang's builtin), or
   nothing with other compilers. */
static void prefetch(const void *p) {
#if defined(__GNUC__) || defined(__clang__)
  __builtin_prefetch(p);
#else
  (void)p;
#endif
}

/*
** Ask for d's header before it is read: a first pass reads each message's header once, far
** from the one before (the bodies lie between), so without this every message begins with
** a wait for memory, and so does each of its cache lines that the hardware did not guess.
** All of it (the keys of a SORT read to its end), up to 4 KB, beyond which a header is rare.
*/
static void msgdata_prefetch(const struct msgdata *d) {
  size_t n = d->hdr_len < 4096 ? d->hdr_len : 4096;
  for (size_t at = 0; at < n; at += 64) prefetch(d->bytes + at);
}

/* Ask for what a SORT or THREAD will read of d: its keys (their first two cache lines) if
   they are made, and the address keys too if it needs them, else its header to make them
   from. A repeated SORT asked for 4 KB of each header it did not read. */
static void msgdata_prefetch_sortkeys(struct msgdata *d, int addresses) {
  if (!msgdata_built(d, addresses ? BUILD_SORTADDRS : BUILD_SORTKEYS)) {
    msgdata_prefetch(d);
    return;
  }
  struct sortkeys *k = atomic_load(&d->sortkeys);   /* ordered as in msgdata_built */
  prefetch(k);
  prefetch((const char *)k + 64);
  if (addresses) prefetch(atomic_load(&k->addrs));
}

/* 0 if memory ran out */
static int msgdata_build(struct msgdata *d, unsigned want) {
  if (want & BUILD_SORTADDRS) return msgdata_sortaddrs(d) != NULL;
  if (want & BUILD_SORTKEYS) return msgdata_sortkeys(d) != NULL;
  return msgdata_rendered(d, want) != NULL;
}

/* Build the run from j, the caller's; 0 if memory ran out. */
static int build_ahead_run(struct build_ahead *ba, size_t j) {
  size_t end = j + BUILD_AHEAD_RUN < ba->n ? j + BUILD_AHEAD_RUN : ba->n;
  for (; j < end; j++) {
    if (j + 2 < ba->n) msgdata_prefetch(build_ahead_item(ba, j + 2));
    if (j + 4 < ba->n) prefetch(build_ahead_item(ba, j + 4));   /* its record */
    if (!msgdata_build(build_ahead_item(ba, j), ba->want)) return 0;
  }
  return 1;
}

static void *build_ahead_thread(void *arg) {
  struct build_ahead *ba = arg;
  for (;;) {
    size_t j = atomic_fetch_add(&ba->next, BUILD_AHEAD_RUN);
    if (j >= ba->n || !build_ahead_run(ba, j)) break;
  }
  atomic_store(&ba->helper_done, 1);
  return NULL;
}

/* Start a helper for n items, if it is worth one: items points at item 0's struct msgdata
   pointer, and each item's is stride bytes after the one before. */
static void build_ahead_start(struct build_ahead *ba, const void *items, size_t stride, size_t n,
                              unsigned want) {
  ba->running = 0;
  ba->items = items;
  ba->stride = stride;
  ba->n = n;
  ba->want = want;
  ba->mine = ba->mine_end = 0;
  if (!want || n < BUILD_AHEAD_FROM || msgdata_built(build_ahead_item(ba, n - 1), want) ||
      !spare_core_take())
    return;                  /* the last is made: this is not a first pass */
  atomic_init(&ba->next, 0);
  atomic_init(&ba->helper_done, 0);
  if (pthread_create(&ba->thread, NULL, build_ahead_thread, ba) != 0) {
    spare_core_give();
    return;
  }
  ba->running = 1;
}

static void build_ahead_stop(struct build_ahead *ba) {
  if (!ba->running) return;
  atomic_store(&ba->next, SIZE_MAX / 2);   /* nothing more to take */
  pthread_join(ba->thread, NULL);
  spare_core_give();
  ba->running = 0;
}

/*
** The command is at item i: on return, i is made, or the command is to make it (in its own
** run, or with the helper joined). While the helper makes i, the command builds the next
** run no one has taken; with none left it yields the core until i is made.
*/
static void build_ahead_at(struct build_ahead *ba, size_t i) {
  if (!ba->running || (i >= ba->mine && i < ba->mine_end)) return;
  while (!msgdata_built(build_ahead_item(ba, i), ba->want)) {
    if (atomic_load(&ba->helper_done)) {
      build_ahead_stop(ba);  /* it made all it took, or gave up: the rest is the command's */
      return;
    }
    size_t j = atomic_load(&ba->next);
    if (j >= ba->n) {
      sched_yield();
      continue;
    }
    if (!atomic_compare_exchange_weak(&ba->next, &j, j + BUILD_AHEAD_RUN)) continue;
    if (j <= i) {            /* untaken up to i: this run is the command's (j == i) */
      ba->mine = j;
      ba->mine_end = j + BUILD_AHEAD_RUN;
      return;
    }
    if (!build_ahead_run(ba, j)) {   /* memory ran out: the command finds out at i */
      build_ahead_stop(ba);
      return;
    }
  }
}

/*
** ===========================================================================
** 3  The store: users, mailboxes, messages, UIDs, flags, change log
** ===========================================================================
** Owns: struct user, struct mailbox, struct message, struct msgdata, the server's user
** list and its change counter (for imapmem_wait), mailboxes' access control lists (RFC
** 4314) and the namespaces (RFC 2342: whose mailbox a client's name is, the shared tree
** included). Knows its watchers only as struct watcher: a wake function and how far each
** has been told.
** Calls: sections 1-2.
** Locking: server->lock guards the user list; user->lock guards a user's mailbox list,
** mailbox names, subscriptions and ACLs; mailbox->lock guards one mailbox's messages, flags,
** UIDs, change log and watchers (its epoch, modseq and keyword count are written under it
** and atomic, so that a session can see without it that nothing changed). Order: server,
** then user, then one mailbox; never two mailboxes at once (COPY takes a snapshot from
** one, unlocks, then adds to the other). A user's quota_lock (RFC 9208, below) comes
** before its user->lock. wait_lock is a leaf. No lock is held across network I/O: sessions
** copy what they need and write after unlocking.
**
** Change numbers: every append, flag change and expunge takes the next change number
** (mailbox->modseq, RFC 7162's HIGHESTMODSEQ). A message remembers the number of its last
** change (its MODSEQ), and the messages form a list by that number, the change list, so
** "what changed since n" is a walk back from its newest end, in time proportional to the
** changes: the base for untagged updates, IDLE and CHANGEDSINCE, at 16 bytes a message.
** Expunges are logged as UID ranges with their change number; the log keeps at most
** IMAPMEM_EXPUNGE_LOG entries beyond one per message, dropping the oldest (never one a
** watcher has not been told), and expunge_log_from says from where it is complete
** (QRESYNC answers for older numbers as RFC 7162 3.2.6 says for forgotten expunges).
**
** Message bytes are reference counted (struct msgdata): COPY shares them, and a FETCH
** holds a reference while it writes, so an expunge never frees bytes being sent.
*/
/*
** A new message record with room for n bytes after it (arena NULL), or for bytes that
** live in arena (n 0; the caller sets bytes, and the reference it passes is the
** message's). Its size is still 0.
*/
static struct msgdata *msgdata_alloc(size_t n, struct msgarena *arena) {
  struct msgdata *d = mem_alloc(sizeof *d + (arena ? 0 : n + 1));
  if (!d) return NULL;
  atomic_init(&d->refs, 1);
  atomic_init(&d->meta, NULL);
  atomic_init(&d->sortkeys, NULL);
  atomic_init(&d->emailid, 0);
  d->size = d->hdr_len = d->nmarks = 0;
  d->marks = NULL;
  d->arena = arena;
  d->bytes = arena ? NULL : (char *)(d + 1);
  return d;
}

static void msgarena_unref(struct msgarena *a) {
  if (a && atomic_fetch_sub(&a->refs, 1) == 1) {
    if (a->mapped) munmap(a->base, a->size);
    else free(a->base);
    free(a->marks);
    free(a);
  }
}

static struct msgdata *msgdata_new(const char *bytes, size_t n) {
  if (n > UINT32_MAX - 1) return NULL;
  struct msgdata *d = msgdata_alloc(n, NULL);
  if (!d) return NULL;
  memcpy(d->bytes, bytes, n);
  d->bytes[n] = 0;
  d->size = (uint32_t)n;
  d->hdr_len = (uint32_t)header_length(d->bytes, n);
  return d;
}

static struct msgdata *msgdata_ref(struct msgdata *d) {
  atomic_fetch_add(&d->refs, 1);
  return d;
}

static void msgdata_unref(struct msgdata *d) {
  if (d && atomic_fetch_sub(&d->refs, 1) == 1) {
    msgmeta_free(atomic_load(&d->meta), d->arena);   /* before the arena that may hold it */
    sortkeys_free(atomic_load(&d->sortkeys), d->arena);
    msgarena_unref(d->arena);
    free(d);
  }
}

/* ------------------------------------------------------------------------- */
/*
** The change counter: anything imapmem_wait() may be waiting for bumps it and wakes the
** waiters. wait_lock is a leaf lock, so this may be called with any other lock held.
*/
static void store_changed(struct imapmem *srv) {
  if (!srv) return;
  pthread_mutex_lock(&srv->wait_lock);
  srv->generation++;
  pthread_cond_broadcast(&srv->wait_cond);
  for (size_t i = 0; i < srv->nnotifiers; i++) srv->notifiers[i]->wake(srv->notifiers[i]);
  pthread_mutex_unlock(&srv->wait_lock);
}

/*
** Add w to (on) or take it from the watchers of every change on the server: a NOTIFY
** session (RFC 5465) looks at all its user's mailboxes when woken. 0 if memory ran out.
*/
static int store_watch_all(struct imapmem *srv, struct watcher *w, int on) {
  int ok = 1;
  pthread_mutex_lock(&srv->wait_lock);
  size_t i;
  for (i = 0; i < srv->nnotifiers && srv->notifiers[i] != w; i++) {}
  if (!on && i < srv->nnotifiers) srv->notifiers[i] = srv->notifiers[--srv->nnotifiers];
  if (on && i == srv->nnotifiers) {
    ok = mem_grow(&srv->notifiers, &srv->capnotifiers, srv->nnotifiers + 1,
                  sizeof srv->notifiers[0]);
    if (ok) srv->notifiers[srv->nnotifiers++] = w;
  }
  pthread_mutex_unlock(&srv->wait_lock);
  return ok;
}

/* Wake the watchers idling on mb, and imapmem_wait(). Caller holds mb->lock. */
static void mailbox_wake_idlers(struct mailbox *mb) {
  for (size_t i = 0; i < mb->nwatchers; i++)
    if (mb->watchers[i]->idling) mb->watchers[i]->wake(mb->watchers[i]);
  if (mb->user) store_changed(mb->user->srv);
}

/*
** Object identifiers (RFC 8474). A 64-bit hash (FNV-1a, then mixed) names what does not
** change: an EMAILID is the hash of the message's bytes, so the same bytes keep the same
** id through COPY, MOVE and --save/reload, as RFC 8474 5.1 allows for identical content;
** a MAILBOXID is made from the name and UIDVALIDITY it was created with, then kept with
** the mailbox through RENAME and saved with it (X-Imapmem-Mailboxid).
*/
static uint64_t objectid_hash(const char *p, size_t n, uint64_t h) {
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 0x100000001b3u;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdu;
  h ^= h >> 33;
  return h ? h : 1;
}

/* The EMAILID of d as "M" and 16 hex digits (RFC 8474 8.1: a letter first), into out[18]. */
static void msgdata_emailid(const struct msgdata *d, char *out) {
  uint64_t h = atomic_load(&d->emailid);
  if (!h) {                  /* a race computes the same value twice: harmless */
    h = objectid_hash(d->bytes, d->size, 0xcbf29ce484222325u);
    atomic_store(&((struct msgdata *)d)->emailid, h);
  }
  snprintf(out, 18, "M%016llx", (unsigned long long)h);
}

/* Give mb its MAILBOXID: the saved one if valid, else one from its name and UIDVALIDITY. */
static void mailbox_make_id(struct mailbox *mb, const char *saved) {
  size_t n = saved ? strlen(saved) : 0;
  int ok = n > 1 && n < sizeof mb->id && isalpha((unsigned char)saved[0]);
  for (size_t i = 0; ok && i < n; i++)
    ok = isalnum((unsigned char)saved[i]) || saved[i] == '_' || saved[i] == '-';
  if (ok) {
    memcpy(mb->id, saved, n + 1);
    return;
  }
  char v[16];
  snprintf(v, sizeof v, "%u", mb->uidvalidity);
  uint64_t h = objectid_hash(mb->name, strlen(mb->name), 0x84222325cbf29ce4u);
  snprintf(mb->id, sizeof mb->id, "F%016llx", (unsigned long long)objectid_hash(v, strlen(v), h));
}

static struct mailbox *mailbox_new(struct user *u, const char *name, int selectable,
                                   uint32_t uidvalidity) {
  struct mailbox *mb = mem_calloc(1, sizeof *mb);
  if (!mb) return NULL;
  mb->name = mem_strdup(name);
  if (!mb->name) {
    free(mb);
    return NULL;
  }
  mb->user = u;
  atomic_init(&mb->refs, 1);
  mb->selectable = selectable;
  pthread_mutex_init(&mb->lock, NULL);
  mb->uidvalidity = uidvalidity;
  mb->uidnext = 1;
  mb->modseq = 1;            /* RFC 7162 7: a mod-sequence-value is at least 1 */
  mb->expunge_log_from = 2;
  mb->oldest = mb->newest = NO_MSG;
  mailbox_make_id(mb, NULL);
  return mb;
}

static struct mailbox *mailbox_ref(struct mailbox *mb) {
  atomic_fetch_add(&mb->refs, 1);
  return mb;
}

/* Drop the ghosts of expunges up to change number upto: every session has been told. */
static void mailbox_forget_ghosts(struct mailbox *mb, uint64_t upto) {
  size_t w = 0;
  for (size_t i = 0; i < mb->nghosts; i++) {
    if (mb->ghosts[i].modseq <= upto) msgdata_unref(mb->ghosts[i].data);
    else mb->ghosts[w++] = mb->ghosts[i];
  }
  mb->nghosts = w;
}

static void mailbox_unref(struct mailbox *mb) {
  if (!mb || atomic_fetch_sub(&mb->refs, 1) != 1) return;
  for (size_t i = 0; i < mb->count; i++) msgdata_unref(mb->msgs[i].data);
  for (int i = 0; i < mb->nkeywords; i++) free(mb->keywords[i]);
  free(mb->msgs);
  mailbox_forget_ghosts(mb, UINT64_MAX);
  free(mb->ghosts);
  free(mb->expunged);
  free(mb->watchers);
  for (size_t i = 0; i < mb->nacl; i++) free(mb->acl[i].id);
  free(mb->acl);
  free(mb->name);
  pthread_mutex_destroy(&mb->lock);
  free(mb);
}

/* Let go of n mailboxes and free the array (NULL entries and a NULL array are fine). */
static void mailboxes_free(struct mailbox **v, size_t n) {
  for (size_t i = 0; v && i < n; i++) mailbox_unref(v[i]);
  free(v);
}

/* Index of the first message with a UID >= uid. Caller holds mb->lock. */
static size_t mailbox_lower_bound(const struct mailbox *mb, uint32_t uid) {
  return lower_bound(mb->msgs, mb->count, sizeof mb->msgs[0], offsetof(struct message, uid),
                     4, uid);
}

/* Index of the message with this UID, or -1. Caller holds mb->lock. */
static long mailbox_find_uid(const struct mailbox *mb, uint32_t uid) {
  size_t i = mailbox_lower_bound(mb, uid);
  return i < mb->count && mb->msgs[i].uid == uid ? (long)i : -1;
}

/* mailbox_find_uid for UIDs taken in ascending order: the message after the last one found
   (at prev, or -1) is tried first, which is where it is unless some were expunged between */
static long mailbox_find_uid_next(const struct mailbox *mb, uint32_t uid, long prev) {
  size_t i = (size_t)(prev + 1);
  if (i < mb->count && mb->msgs[i].uid == uid) return (long)i;
  return mailbox_find_uid(mb, uid);
}

/* The keyword's bit index, adding it if create is set; -1 if unknown or the table is full. */
static int mailbox_keyword(struct mailbox *mb, const char *name, size_t n, int create) {
  for (int i = 0; i < mb->nkeywords; i++)
    if (strlen(mb->keywords[i]) == n && strncasecmp(mb->keywords[i], name, n) == 0) return i;
  if (!create || mb->nkeywords == IMAPMEM_MAX_KEYWORDS) return -1;
  char *k = mem_strndup(name, n);
  if (!k) return -1;
  mb->keywords[mb->nkeywords] = k;
  return mb->nkeywords++;
}

/*
** Has the mailbox given out every UID? UIDs are 32-bit and never reused under one
** UIDVALIDITY (RFC 3501 2.3.1.1), so then nothing more can be added to it.
*/
static int mailbox_uids_exhausted(const struct mailbox *mb) {
  return mb->uidnext == 0 || mb->uidnext == UINT32_MAX;
}

/* Put message i at the newest end of the change list. Caller holds mb->lock. */
static void mailbox_link_newest(struct mailbox *mb, size_t i) {
  struct message *m = &mb->msgs[i];
  m->older = mb->newest;
  m->newer = NO_MSG;
  if (mb->newest != NO_MSG) mb->msgs[mb->newest].newer = (uint32_t)i;
  else mb->oldest = (uint32_t)i;
  mb->newest = (uint32_t)i;
}

static void mailbox_unlink(struct mailbox *mb, size_t i) {
  struct message *m = &mb->msgs[i];
  if (m->older != NO_MSG) mb->msgs[m->older].newer = m->newer;
  else mb->oldest = m->newer;
  if (m->newer != NO_MSG) mb->msgs[m->newer].older = m->older;
  else mb->newest = m->older;
}

/*
** Rebuild the change list from the messages' MODSEQs, after they were set wholesale (a
** load with saved MODSEQs). Equal numbers keep UID order. 0 if memory ran out (the list
** is then in UID order, which only costs later walks their bound).
*/
static int cmp_modseq_index(const void *a, const void *b) {
  const uint64_t *x = a, *y = b;   /* pairs: modseq, index */
  return x[0] != y[0] ? (x[0] < y[0] ? -1 : 1) : (x[1] < y[1] ? -1 : x[1] > y[1]);
}

static int mailbox_relink(struct mailbox *mb) {
  uint64_t *order = mem_alloc((mb->count ? mb->count : 1) * 2 * sizeof *order);
  mb->oldest = mb->newest = NO_MSG;
  for (size_t i = 0; i < mb->count && order; i++) {
    order[2 * i] = mb->msgs[i].modseq;
    order[2 * i + 1] = i;
  }
  if (order) qsort(order, mb->count, 2 * sizeof *order, cmp_modseq_index);
  for (size_t i = 0; i < mb->count; i++) mailbox_link_newest(mb, order ? (size_t)order[2 * i + 1] : i);
  free(order);
  return order != NULL;
}

/*
** Make room for n more messages, so that the next n mailbox_append calls cannot fail:
** RFC 3502's all-or-nothing APPEND checks first. 0 if the UIDs or the memory would run
** out. Caller holds mb->lock.
*/
static int mailbox_reserve(struct mailbox *mb, size_t n) {
  return !mailbox_uids_exhausted(mb) && n <= (size_t)(UINT32_MAX - mb->uidnext) &&
         mem_grow(&mb->msgs, &mb->cap, mb->count + n, sizeof mb->msgs[0]);
}

/*
** Append a message; takes over the caller's reference to d. Returns the new UID, or 0
** if memory ran out (then d is still the caller's). Caller holds mb->lock.
*/
static uint32_t mailbox_append(struct mailbox *mb, struct msgdata *d, uint32_t flags,
                               uint64_t keywords, int64_t internaldate, int tz) {
  if (mailbox_uids_exhausted(mb) ||
      !mem_grow(&mb->msgs, &mb->cap, mb->count + 1, sizeof mb->msgs[0]))
    return 0;
  struct message *m = &mb->msgs[mb->count++];
  m->uid = mb->uidnext++;
  m->flags = flags;
  m->keywords = keywords;
  m->modseq = ++mb->modseq;  /* RFC 7162 3.1: higher than any message's */
  m->internaldate = internaldate;
  m->tz = tz;
  m->data = d;
  mb->bytes += d->size;
  mailbox_link_newest(mb, mb->count - 1);
  mailbox_wake_idlers(mb);
  return m->uid;
}

/*
** Change a message's flags. Only a real change takes a change number (RFC 7162 3.1.11:
** setting a flag that is set changes nothing). Caller holds mb->lock.
*/
static void mailbox_set_flags(struct mailbox *mb, size_t i, uint32_t flags, uint64_t keywords) {
  struct message *m = &mb->msgs[i];
  flags = (flags & FLAGS_SYSTEM) | (m->flags & FLAG_RECENT);
  if (m->flags == flags && m->keywords == keywords) return;
  m->flags = flags;
  m->keywords = keywords;
  m->modseq = ++mb->modseq;
  mailbox_unlink(mb, i);
  mailbox_link_newest(mb, i);
  mailbox_wake_idlers(mb);
}

static int cmp_message_uid(const void *a, const void *b) {
  uint32_t x = ((const struct message *)a)->uid, y = ((const struct message *)b)->uid;
  return x < y ? -1 : x > y;
}

/* The lowest change number any watcher of mb has not been told of, less one. */
static uint64_t mailbox_told(const struct mailbox *mb) {
  uint64_t told = UINT64_MAX;
  for (size_t i = 0; i < mb->nwatchers; i++)
    if (mb->watchers[i]->told < told) told = mb->watchers[i]->told;
  return told;
}

/*
** Keep the expunge log bounded: beyond IMAPMEM_EXPUNGE_LOG entries more than there are
** messages, the older half goes (whole change numbers at a time, and never one that a
** watcher has still to be told of), and expunge_log_from moves past it.
*/
static void mailbox_trim_expunged(struct mailbox *mb) {
  size_t limit = IMAPMEM_EXPUNGE_LOG + mb->count;
  if (mb->nexpunged <= limit) return;
  uint64_t told = mailbox_told(mb);   /* UINT64_MAX with no watcher: none to keep */
  size_t keep_from = told == UINT64_MAX
                         ? mb->nexpunged
                         : lower_bound(mb->expunged, mb->nexpunged, sizeof mb->expunged[0],
                                       offsetof(struct expunged, modseq), 8, told + 1);
  size_t drop = mb->nexpunged - limit / 2;
  while (drop < mb->nexpunged && mb->expunged[drop].modseq == mb->expunged[drop - 1].modseq)
    drop++;
  if (drop > keep_from) drop = keep_from;
  while (drop > 0 && drop < mb->nexpunged &&
         mb->expunged[drop].modseq == mb->expunged[drop - 1].modseq)
    drop--;
  if (drop == 0) return;
  mb->expunge_log_from = mb->expunged[drop - 1].modseq + 1;
  memmove(mb->expunged, mb->expunged + drop, (mb->nexpunged - drop) * sizeof mb->expunged[0]);
  mb->nexpunged -= drop;
}

/* May a message have been expunged after change number modseq? 1 unless the log, whole
   from there, says none was. Caller holds mb->lock. */
static int mailbox_expunged_since(const struct mailbox *mb, uint64_t modseq) {
  return mb->expunge_log_from > modseq + 1 ||
         (mb->nexpunged && mb->expunged[mb->nexpunged - 1].modseq > modseq);
}

/* Forget every expunge so far (a new UIDVALIDITY, a fault): the log starts again. */
static void mailbox_forget_expunged(struct mailbox *mb) {
  mb->nexpunged = 0;
  mb->expunge_log_from = mb->modseq + 1;
}

/*
** Remove the messages for which remove[i] is set, all at one new change number, and log
** them as UID ranges (RFC 7162 3.2: the UIDs are associated with that number). Returns
** how many were removed, or -1 if memory ran out (nothing removed). Caller holds mb->lock.
*/
static long mailbox_expunge(struct mailbox *mb, const unsigned char *remove) {
  size_t n = 0, runs = 0;
  for (size_t i = 0; i < mb->count; i++) {
    n += remove[i] != 0;
    runs += remove[i] && (i == 0 || !remove[i - 1]);
  }
  if (n == 0) return 0;
  uint32_t *moved = mem_alloc(mb->count * sizeof *moved);   /* old index -> new index */
  if (!moved || !mem_grow(&mb->expunged, &mb->capexpunged, mb->nexpunged + runs,
                          sizeof mb->expunged[0])) {
    free(moved);
    return -1;
  }
  /* Sessions that have the mailbox selected may still name these messages until they are
     told; keep them as ghosts, unless memory is short (then such a FETCH answers NO). */
  int keep = mb->nwatchers > 0 &&
             mem_grow(&mb->ghosts, &mb->capghosts, mb->nghosts + n, sizeof mb->ghosts[0]);
  uint64_t modseq = ++mb->modseq;
  size_t w = 0, g = mb->nghosts;
  for (size_t i = 0; i < mb->count; i++)   /* before any message moves */
    if (remove[i]) mailbox_unlink(mb, i);
  for (size_t i = 0; i < mb->count; i++) {
    if (remove[i]) {
      if (i == 0 || !remove[i - 1]) {
        struct expunged *e = &mb->expunged[mb->nexpunged++];
        e->lo = mb->msgs[i].uid;
        e->modseq = modseq;
      }
      mb->expunged[mb->nexpunged - 1].hi = mb->msgs[i].uid;
      mb->msgs[i].modseq = modseq;
      mb->bytes -= mb->msgs[i].data->size;
      if (keep) mb->ghosts[g++] = mb->msgs[i];
      else msgdata_unref(mb->msgs[i].data);
      moved[i] = NO_MSG;
    } else {
      moved[i] = (uint32_t)w;
      mb->msgs[w++] = mb->msgs[i];
    }
  }
  mb->count = w;
  mb->recent_from = 0;       /* indices moved: SELECT reads them all again */
  for (size_t i = 0; i < w; i++) {   /* the change list follows the messages */
    struct message *m = &mb->msgs[i];
    if (m->older != NO_MSG) m->older = moved[m->older];
    if (m->newer != NO_MSG) m->newer = moved[m->newer];
  }
  if (mb->oldest != NO_MSG) mb->oldest = moved[mb->oldest];
  if (mb->newest != NO_MSG) mb->newest = moved[mb->newest];
  free(moved);
  if (keep) {                /* the new ghosts ascend; merge them with the older ones */
    size_t old = mb->nghosts;
    mb->nghosts = g;
    if (old && mb->ghosts[old - 1].uid > mb->ghosts[old].uid)
      qsort(mb->ghosts, mb->nghosts, sizeof mb->ghosts[0], cmp_message_uid);
  }
  mailbox_trim_expunged(mb);
  mailbox_wake_idlers(mb);
  return (long)n;
}

/* The expunged message uid as it was, if a session may still ask for it; else NULL. */
static const struct message *mailbox_ghost(const struct mailbox *mb, uint32_t uid) {
  size_t i = lower_bound(mb->ghosts, mb->nghosts, sizeof mb->ghosts[0],
                         offsetof(struct message, uid), 4, uid);
  return i < mb->nghosts && mb->ghosts[i].uid == uid ? &mb->ghosts[i] : NULL;
}

/* Ghosts that every watcher of mb has been told of go. Holds mb->lock. */
static void mailbox_release_ghosts(struct mailbox *mb) {
  if (mb->nghosts) mailbox_forget_ghosts(mb, mailbox_told(mb));
}

/* Remove every message marked \Deleted (CLOSE, EXPUNGE). Caller holds mb->lock. */
static long mailbox_expunge_deleted(struct mailbox *mb, const struct seqset *uids) {
  unsigned char *rm = mem_calloc(mb->count ? mb->count : 1, 1);
  if (!rm) return -1;
  for (size_t i = 0; i < mb->count; i++) {
    if (!(mb->msgs[i].flags & FLAG_DELETED)) continue;
    int in = !uids;
    for (size_t r = 0; uids && r < uids->n && !in; r++) {
      uint32_t lo = uids->r[r].lo, hi = uids->r[r].hi;
      in = mb->msgs[i].uid >= lo && mb->msgs[i].uid <= hi;
    }
    rm[i] = (unsigned char)in;
  }
  long n = mailbox_expunge(mb, rm);
  free(rm);
  return n;
}

/* ------------------------------------------------------------------------- */
/*
** Access control lists (RFC 4314). A right is a bit, in the order of RIGHTS_LETTERS; the
** obsolete "c" and "d" (2.1.1) are no bits of their own: "c" stands for "kx" and "d" for
** "et", as in the RFC's examples, and each is shown wherever one of its members is.
** A mailbox's owner always has every right; anyone else has the union of the entries
** naming them or "anyone", less the union of the negative entries ("-name", "-anyone").
** The ACL is guarded by the owning user's lock, as the mailbox's name is.
*/
#define RIGHTS_LETTERS "lrswipkxtea"
enum {
  RIGHT_L = 1, RIGHT_R = 2, RIGHT_S = 4, RIGHT_W = 8, RIGHT_I = 16, RIGHT_P = 32,
  RIGHT_K = 64, RIGHT_X = 128, RIGHT_T = 256, RIGHT_E = 512, RIGHT_A = 1024,
  RIGHTS_ALL = 2047
};

/*
** Parse a rights string (no "+"/"-" modifier) into bits. 0 and *bad set to the first
** letter that is no right (RFC 4314 3.1: an unknown right is BAD, never ignored).
*/
static int rights_parse(const char *p, size_t n, unsigned *out, char *bad) {
  unsigned r = 0;
  for (size_t i = 0; i < n; i++) {
    const char *at = p[i] ? strchr(RIGHTS_LETTERS, p[i]) : NULL;
    if (at) r |= 1u << (at - RIGHTS_LETTERS);
    else if (p[i] == 'c') r |= RIGHT_K | RIGHT_X;
    else if (p[i] == 'd') r |= RIGHT_E | RIGHT_T;
    else {
      *bad = p[i];
      return 0;
    }
  }
  *out = r;
  return 1;
}

/* Rights as letters, with "c" and "d" added as RFC 4314 2.1.1 wants. out holds 14 bytes. */
static void rights_format(unsigned r, char *out) {
  size_t n = 0;
  for (int i = 0; RIGHTS_LETTERS[i]; i++)
    if (r >> i & 1) out[n++] = RIGHTS_LETTERS[i];
  if (r & (RIGHT_K | RIGHT_X)) out[n++] = 'c';
  if (r & (RIGHT_E | RIGHT_T)) out[n++] = 'd';
  out[n] = 0;
}

/* The entry for id in mb's ACL, or -1. Caller holds the owner's lock. */
static long acl_find(const struct mailbox *mb, const char *id) {
  for (size_t i = 0; i < mb->nacl; i++)
    if (strcmp(mb->acl[i].id, id) == 0) return (long)i;
  return -1;
}

/* Remove id's entry; 0 if there was none. Caller holds the owner's lock. */
static int acl_delete(struct mailbox *mb, const char *id) {
  long i = acl_find(mb, id);
  if (i < 0) return 0;
  free(mb->acl[i].id);
  mb->acl[i] = mb->acl[--mb->nacl];
  return 1;
}

/*
** Give id exactly these rights (an entry with none is removed, which means the same).
** 0 if memory ran out. Caller holds the owner's lock.
*/
static int acl_set(struct mailbox *mb, const char *id, unsigned rights) {
  long i = acl_find(mb, id);
  if (!rights) {
    acl_delete(mb, id);
    return 1;
  }
  if (i >= 0) {
    mb->acl[i].rights = rights;
    return 1;
  }
  size_t cap = mb->nacl;     /* the array is exactly as long as the list: a few entries */
  char *copy = mem_strdup(id);
  if (!copy || !mem_grow(&mb->acl, &cap, mb->nacl + 1, sizeof mb->acl[0])) {
    free(copy);
    return 0;
  }
  mb->acl[mb->nacl].id = copy;
  mb->acl[mb->nacl++].rights = rights;
  return 1;
}

/* Make to's ACL a copy of from's (CREATE inherits its parent's; the reset baseline). */
static int acl_copy(struct mailbox *to, const struct mailbox *from) {
  int ok = 1;
  for (size_t i = 0; ok && i < from->nacl; i++)
    ok = acl_set(to, from->acl[i].id, from->acl[i].rights);
  return ok;
}

/* What the user called who may do with mb. Caller holds the owner's lock. */
static unsigned acl_rights(const struct mailbox *mb, const char *who) {
  if (mb->user && mb->user->name && strcmp(mb->user->name, who) == 0) return RIGHTS_ALL;
  unsigned plus = 0, minus = 0;
  for (size_t i = 0; i < mb->nacl; i++) {
    const char *id = mb->acl[i].id;
    int negative = id[0] == '-';
    if (negative) id++;
    if (strcmp(id, who) != 0 && strcmp(id, "anyone") != 0) continue;
    if (negative) minus |= mb->acl[i].rights;
    else plus |= mb->acl[i].rights;
  }
  return plus & ~minus;
}

/* ------------------------------------------------------------------------- */
/* Users and their mailbox lists. */
static int name_is_inbox(const char *name, size_t n) {
  return n == 5 && strncasecmp(name, "INBOX", 5) == 0;
}

/*
** The canonical form of a mailbox name: INBOX (and an INBOX/ prefix) in upper case,
** since RFC 3501 5.1 makes INBOX case-insensitive. Written into out (size cap).
*/
static void mailbox_canonical(const char *name, char *out, size_t cap) {
  if (out != name) snprintf(out, cap, "%s", name);
  size_t n = strlen(out);
  if (n >= 5 && strncasecmp(out, "INBOX", 5) == 0 && (n == 5 || out[5] == '/'))
    memcpy(out, "INBOX", 5);
}

/*
** Why a client could not CREATE this (canonical) name, or NULL if it could. The same rules
** hold for CREATE, RENAME and fixtures loaded from files or memory, and they keep --save
** inside its folder: no wildcards, no control characters, no empty level, and no level
** starting with '.' (a hidden file, or "..", when saved).
*/
static const char *mailbox_name_invalid(const char *name) {
  if (!*name) return "the name is empty";
  if (strlen(name) > MAX_MAILBOX_NAME) return "the name is longer than 1024 bytes";
  for (const char *p = name; *p; p++) {
    unsigned char c = (unsigned char)*p;
    if (c == '%' || c == '*') return "no wildcards ('%' or '*')";
    if (c < 0x20 || c == 0x7f) return "no control characters";
    if ((p == name || p[-1] == '/') && c == '/') return "no empty level";
    if ((p == name || p[-1] == '/') && c == '.') return "no level starting with '.'";
  }
  if (name[strlen(name) - 1] == '/') return "no empty level";
  return NULL;
}

/* ------------------------------------------------------------------------- */
/*
** Special-use roles (RFC 6154 2). A mailbox has the roles set for it explicitly (a
** fixture's .special-use file, --special-use, imapmem_set_special_use, CREATE ... USE),
** else those its name has in common mail programs. Names give roles at the top level
** only, in any letter case: Gmail's "[Gmail]/Sent Mail" is not guessed at. \All and
** \Flagged are never guessed, since they promise virtual mailboxes this server lacks.
*/
static const char *const special_use_names[USE_ROLES] = {   /* ORDER USE_* bits */
  "\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash"};

static const struct {
  const char *name;
  unsigned use;
} special_use_by_name[] = {
  {"Sent", USE_SENT}, {"Sent Messages", USE_SENT}, {"Sent Items", USE_SENT},
  {"Sent Mail", USE_SENT}, {"Drafts", USE_DRAFTS}, {"Draft", USE_DRAFTS},
  {"Trash", USE_TRASH}, {"Deleted Messages", USE_TRASH}, {"Deleted Items", USE_TRASH},
  {"Bin", USE_TRASH}, {"Junk", USE_JUNK}, {"Spam", USE_JUNK}, {"Junk Email", USE_JUNK},
  {"Junk E-mail", USE_JUNK}, {"Bulk Mail", USE_JUNK}, {"Archive", USE_ARCHIVE},
  {"Archives", USE_ARCHIVE}};

/* The role bit of one attribute name (any letter case, RFC 3501 flags), 0 if none. */
static unsigned special_use_bit(const char *p, size_t n) {
  for (int i = 0; i < USE_ROLES; i++)
    if (strlen(special_use_names[i]) == n && strncasecmp(special_use_names[i], p, n) == 0)
      return 1u << i;
  return 0;
}

/*
** The roles in text: attributes separated by spaces ("\Sent \Archive"; "" is none).
** Returns 0 and *bad (the first word that is no role, with its length) if one is not.
*/
static int special_use_parse(const char *text, unsigned *use, const char **bad, size_t *badlen) {
  *use = 0;
  for (const char *p = text; *p;) {
    while (*p == ' ' || *p == '\t') p++;
    size_t n = strcspn(p, " \t");
    if (!n) break;
    unsigned bit = special_use_bit(p, n);
    if (!bit) {
      *bad = p;
      *badlen = n;
      return 0;
    }
    *use |= bit;
    p += n;
  }
  return 1;
}

/*
** The roles of mb as LIST shows them; none for a \Noselect level, which holds no messages
** (one that DELETE left behind keeps its old roles for a CREATE to replace). Caller holds
** the user's lock (names, roles).
*/
static unsigned mailbox_special_use_locked(const struct mailbox *mb) {
  if (!mb->selectable) return 0;
  if (mb->use_set) return mb->use;
  if (strchr(mb->name, '/')) return 0;
  for (size_t i = 0; i < sizeof special_use_by_name / sizeof special_use_by_name[0]; i++)
    if (strcasecmp(mb->name, special_use_by_name[i].name) == 0) return special_use_by_name[i].use;
  return 0;
}

/*
** The UIDVALIDITY of a mailbox made while serving (CREATE, RENAME). Each is greater than
** the last, so a mailbox deleted and made again never reuses UIDs under the same
** UIDVALIDITY (RFC 3501 2.3.1.1), even when --uidvalidity fixes the loaded ones.
*/
static uint32_t server_new_uidvalidity(struct imapmem *srv) {
  return atomic_fetch_add(&srv->last_uidvalidity, 1) + 1;
}

/* The user called name, or NULL. Users are never removed while the server lives. */
static struct user *server_user(struct imapmem *srv, struct str name) {
  struct user *found = NULL;
  pthread_mutex_lock(&srv->lock);
  for (size_t i = 0; i < srv->nusers && !found; i++)
    if (strlen(srv->users[i]->name) == name.len &&
        memcmp(srv->users[i]->name, name.p, name.len) == 0)
      found = srv->users[i];
  pthread_mutex_unlock(&srv->lock);
  return found;
}

/* Let go of a set's mailboxes and free its names (an emptied set is fine too). */
static void mailbox_set_free(struct mailbox_set *set) {
  mailboxes_free(set->list, set->n);
  strings_free(set->subs, set->nsubs);
  memset(set, 0, sizeof *set);
}

static void user_free(struct user *u) {
  if (!u) return;
  for (size_t i = 0; i < u->live.n; i++) {
    u->live.list[i]->deleted = 1;
    mailbox_unref(u->live.list[i]);
  }
  free(u->live.list);
  strings_free(u->live.subs, u->live.nsubs);
  mailbox_set_free(&u->base);
  free(u->name);
  free(u->password);
  free(u->oauth_token);
  pthread_mutex_destroy(&u->lock);
  pthread_mutex_destroy(&u->quota_lock);
  free(u);
}

static struct user *user_new(const char *name, const char *password) {
  struct user *u = mem_calloc(1, sizeof *u);
  if (!u) return NULL;
  pthread_mutex_init(&u->lock, NULL);
  pthread_mutex_init(&u->quota_lock, NULL);
  for (int i = 0; i < QUOTA_NRES; i++) u->quota_limit[i] = QUOTA_NO_LIMIT;
  if (!(u->name = mem_strdup(name)) || !(u->password = mem_strdup(password))) {
    user_free(u);
    u = NULL;
  }
  return u;
}

/* The mailbox with this (canonical) name, or NULL. Caller holds u->lock. */
static struct mailbox *user_mailbox_locked(struct user *u, const char *name) {
  for (size_t i = 0; i < u->live.n; i++)
    if (strcmp(u->live.list[i]->name, name) == 0) return u->live.list[i];
  return NULL;
}

/* The mailbox called name, with a reference the caller drops, or NULL. */
static struct mailbox *user_mailbox(struct user *u, const char *name) {
  char canon[MAX_MAILBOX_NAME + 1];
  mailbox_canonical(name, canon, sizeof canon);
  pthread_mutex_lock(&u->lock);
  struct mailbox *mb = user_mailbox_locked(u, canon);
  if (mb) mailbox_ref(mb);
  pthread_mutex_unlock(&u->lock);
  return mb;
}

/*
** Make the mailbox called name answer [NOMODSEQ] (on) or not, and its copy in the reset
** baseline with it, so a reset keeps the setting. 0 if there is no such mailbox.
*/
static int user_set_nomodseq(struct user *u, const char *name, int on) {
  char canon[MAX_MAILBOX_NAME + 1];
  mailbox_canonical(name, canon, sizeof canon);
  pthread_mutex_lock(&u->lock);
  struct mailbox *mb = user_mailbox_locked(u, canon);
  for (size_t i = 0; mb && i <= u->base.n; i++) {
    struct mailbox *x = i < u->base.n ? u->base.list[i] : mb;
    if (x != mb && strcmp(x->name, canon) != 0) continue;
    pthread_mutex_lock(&x->lock);
    x->nomodseq = on != 0;
    pthread_mutex_unlock(&x->lock);
  }
  pthread_mutex_unlock(&u->lock);
  return mb != NULL;
}

/*
** Give the mailbox called name these roles (set 1) or those of its name again (set 0),
** and its copy in the reset baseline with it, so a reset keeps them. 0 if there is no
** such mailbox.
*/
static int user_set_special_use(struct user *u, const char *name, unsigned use, int set) {
  char canon[MAX_MAILBOX_NAME + 1];
  mailbox_canonical(name, canon, sizeof canon);
  pthread_mutex_lock(&u->lock);
  struct mailbox *mb = user_mailbox_locked(u, canon);
  for (size_t i = 0; mb && i <= u->base.n; i++) {
    struct mailbox *x = i < u->base.n ? u->base.list[i] : mb;
    if (x != mb && strcmp(x->name, canon) != 0) continue;
    x->use = set ? use : 0;
    x->use_set = set;
  }
  pthread_mutex_unlock(&u->lock);
  return mb != NULL;
}

/* Does any mailbox live below name? Caller holds u->lock. */
static int user_has_children_locked(struct user *u, const char *name) {
  size_t n = strlen(name);
  for (size_t i = 0; i < u->live.n; i++) {
    const char *m = u->live.list[i]->name;
    if (strncmp(m, name, n) == 0 && m[n] == '/') return 1;
  }
  return 0;
}

/* Subscribe to name unless it is already (RFC 3501 6.3.6). 0 if memory ran out. */
static int user_subscribe_locked(struct user *u, const char *name) {
  for (size_t i = 0; i < u->live.nsubs; i++)
    if (strcmp(u->live.subs[i], name) == 0) return 1;
  char *copy = mem_strdup(name);
  if (!copy ||
      !mem_grow(&u->live.subs, &u->live.capsubs, u->live.nsubs + 1, sizeof u->live.subs[0])) {
    free(copy);
    return 0;
  }
  u->live.subs[u->live.nsubs++] = copy;
  store_changed(u->srv);     /* NOTIFY SubscriptionChange (RFC 5465 5.5) */
  return 1;
}

/*
** Create name (canonical) and any missing parent levels, which become \Noselect. An
** existing \Noselect level becomes selectable. Returns the mailbox (no extra reference;
** valid while u->lock is held), or NULL with *exists set if it was already selectable.
** Caller holds u->lock.
*/
static struct mailbox *user_create_locked(struct user *u, const char *name, int selectable,
                                          uint32_t uidvalidity, int *exists) {
  *exists = 0;
  struct mailbox *mb = user_mailbox_locked(u, name);
  if (mb) {
    if (mb->selectable || !selectable) {
      *exists = 1;
      return NULL;
    }
    mb->selectable = 1;
    return mb;
  }
  char level[MAX_MAILBOX_NAME + 1];
  for (const char *s = strchr(name, '/'); s; s = strchr(s + 1, '/')) {
    size_t n = (size_t)(s - name);
    if (n == 0 || n > MAX_MAILBOX_NAME) continue;
    memcpy(level, name, n);
    level[n] = 0;
    if (user_mailbox_locked(u, level)) continue;
    struct mailbox *p = mailbox_new(u, level, 0, uidvalidity);
    if (!p || !mem_grow(&u->live.list, &u->live.cap, u->live.n + 1,
                        sizeof u->live.list[0])) {
      mailbox_unref(p);
      return NULL;
    }
    u->live.list[u->live.n++] = p;
  }
  mb = mailbox_new(u, name, selectable, uidvalidity);
  if (!mb || !mem_grow(&u->live.list, &u->live.cap, u->live.n + 1,
                       sizeof u->live.list[0])) {
    mailbox_unref(mb);
    return NULL;
  }
  u->live.list[u->live.n++] = mb;
  store_changed(u->srv);     /* NOTIFY MailboxName (RFC 5465 5.4) */
  return mb;
}

/*
** End every session's hold on mb: sessions that have it selected are told why (in
** "* BYE Selected mailbox was ...") at their next chance. Caller holds mb->lock.
*/
static void mailbox_retire(struct mailbox *mb, const char *why) {
  mb->epoch++;
  mb->gone_why = why;
  for (size_t i = 0; i < mb->nwatchers; i++) mb->watchers[i]->wake(mb->watchers[i]);
  if (mb->user) store_changed(mb->user->srv);
}

/* Remove mailbox i from the user's list: sessions holding it see it gone. */
static void user_remove_locked(struct user *u, size_t i, const char *why) {
  struct mailbox *mb = u->live.list[i];
  pthread_mutex_lock(&mb->lock);
  mb->deleted = 1;
  mailbox_retire(mb, why);
  pthread_mutex_unlock(&mb->lock);
  u->live.list[i] = u->live.list[--u->live.n];
  mailbox_unref(mb);
}

/* A copy of src sharing its message bytes (for the fixture baseline). Holds src->lock. */
static struct mailbox *mailbox_clone(struct mailbox *src, struct user *u) {
  struct mailbox *mb = mailbox_new(u, src->name, src->selectable, src->uidvalidity);
  if (!mb) return NULL;
  if (!mem_grow(&mb->msgs, &mb->cap, src->count, sizeof mb->msgs[0])) {
    mailbox_unref(mb);
    return NULL;
  }
  for (int i = 0; i < src->nkeywords; i++) {
    if (!(mb->keywords[i] = mem_strdup(src->keywords[i]))) {
      mailbox_unref(mb);
      return NULL;
    }
    mb->nkeywords = i + 1;
  }
  for (size_t i = 0; i < src->count; i++) {
    mb->msgs[i] = src->msgs[i];
    msgdata_ref(mb->msgs[i].data);
  }
  mb->count = src->count;
  mb->bytes = src->bytes;
  mb->uidnext = src->uidnext;
  mb->modseq = src->modseq;
  mb->nomodseq = src->nomodseq;
  mb->use = src->use;          /* the caller holds the user's lock too */
  mb->use_set = src->use_set;
  memcpy(mb->id, src->id, sizeof mb->id);
  mb->oldest = src->oldest;  /* the messages keep their indices, so the list holds */
  mb->newest = src->newest;
  mailbox_forget_expunged(mb);
  if (!acl_copy(mb, src)) {  /* the ACL is guarded by the user's lock, which is held */
    mailbox_unref(mb);
    return NULL;
  }
  return mb;
}

/*
** A copy of a set of mailboxes (sharing their message bytes; each copied under its own
** lock) and of its subscribed names, all or nothing: 0 if memory ran out. Holds u->lock.
*/
static int user_copy_locked(struct user *u, const struct mailbox_set *from,
                            struct mailbox_set *to) {
  memset(to, 0, sizeof *to);
  to->list = mem_calloc(from->n ? from->n : 1, sizeof *to->list);
  to->subs = mem_calloc(from->nsubs ? from->nsubs : 1, sizeof *to->subs);
  int ok = to->list && to->subs;
  for (size_t i = 0; ok && i < from->n; i++) {
    pthread_mutex_lock(&from->list[i]->lock);
    ok = (to->list[i] = mailbox_clone(from->list[i], u)) != NULL;
    pthread_mutex_unlock(&from->list[i]->lock);
  }
  for (size_t i = 0; ok && i < from->nsubs; i++)
    ok = (to->subs[i] = mem_strdup(from->subs[i])) != NULL;
  to->n = to->cap = from->n;
  to->nsubs = to->capsubs = from->nsubs;
  if (!ok) mailbox_set_free(to);
  return ok;
}

/*
** The one snapshot/reset path. restore 0: copy the user's mailboxes and subscriptions as
** the baseline imapmem_reset() returns to. restore 1: put the baseline back; sessions with
** a mailbox selected are told, then let go. 0 if memory ran out; then nothing changed.
*/
static int user_baseline(struct user *u, int restore) {
  struct mailbox_set copy;
  pthread_mutex_lock(&u->lock);
  int ok = user_copy_locked(u, restore ? &u->base : &u->live, &copy);
  if (ok && restore) {
    while (u->live.n) user_remove_locked(u, u->live.n - 1, "reset to the loaded fixtures");
    mailbox_set_free(&u->live);
    u->live = copy;
  } else if (ok) {
    mailbox_set_free(&u->base);
    u->base = copy;
  }
  pthread_mutex_unlock(&u->lock);
  return ok;
}

/* ------------------------------------------------------------------------- */
/*
** Namespaces (RFC 2342 5): a name under srv->ns_other ("Other Users/") names the user
** after it and then one of that user's mailboxes ("Other Users/bob/Team" is bob's
** "Team"); a name under srv->ns_shared ("Shared/") names a mailbox of the shared tree;
** any other name is the user's own. The prefixes themselves, and "Other Users/bob", are
** levels of the hierarchy that hold no mailbox.
*/
struct ns_name {
  struct user *owner;         /* whose list would hold it; NULL: nobody's */
  char local[MAX_MAILBOX_NAME + 1];   /* its canonical name in the owner's list */
  int level;                  /* a namespace prefix or a user's root: never a mailbox */
};

/* Does name start with prefix (ending in '/'), or is it the prefix without its '/'? */
static int ns_prefix_match(const char *prefix, const char *name, const char **rest) {
  size_t n = strlen(prefix);
  if (!n) return 0;
  if (strncmp(name, prefix, n) == 0) {
    *rest = name + n;
    return 1;
  }
  *rest = NULL;
  return strlen(name) == n - 1 && strncmp(name, prefix, n - 1) == 0;
}

static void ns_resolve(struct imapmem *srv, struct user *self, const char *name,
                       struct ns_name *ref) {
  const char *rest;
  memset(ref, 0, sizeof *ref);
  if (ns_prefix_match(srv->ns_other, name, &rest)) {
    const char *slash = rest ? strchr(rest, '/') : NULL;
    if (!slash) {
      ref->level = 1;
      return;
    }
    struct user *u = server_user(srv, str_make(rest, (size_t)(slash - rest)));
    ref->owner = u == self ? NULL : u;   /* one's own mailboxes have their own names */
    mailbox_canonical(slash + 1, ref->local, sizeof ref->local);
  } else if (ns_prefix_match(srv->ns_shared, name, &rest)) {
    ref->level = !rest || !*rest;
    ref->owner = srv->shared;
    if (rest) mailbox_canonical(rest, ref->local, sizeof ref->local);
  } else {
    ref->owner = self;
    mailbox_canonical(name, ref->local, sizeof ref->local);
  }
}

/*
** The mailbox a client's name stands for, with a reference the caller drops, and the
** user's rights on it in *rights; NULL (and no rights) if there is none.
*/
static struct mailbox *ns_mailbox(struct imapmem *srv, struct user *self, const char *name,
                                  unsigned *rights) {
  struct ns_name ref;
  ns_resolve(srv, self, name, &ref);
  *rights = 0;
  if (!ref.owner || ref.level) return NULL;
  pthread_mutex_lock(&ref.owner->lock);
  struct mailbox *mb = user_mailbox_locked(ref.owner, ref.local);
  if (mb) {
    mailbox_ref(mb);
    *rights = acl_rights(mb, self->name);
  }
  pthread_mutex_unlock(&ref.owner->lock);
  return mb;
}

/*
** The nearest existing mailbox above local in owner's list, or NULL: the one CREATE and
** RENAME ask for "k" (RFC 4314 4), whose ACL a new mailbox inherits. Caller holds
** owner->lock.
*/
static struct mailbox *ns_parent_locked(struct user *owner, const char *local) {
  char level[MAX_MAILBOX_NAME + 1];
  snprintf(level, sizeof level, "%s", local);
  for (char *slash = strrchr(level, '/'); slash; slash = strrchr(level, '/')) {
    *slash = 0;
    struct mailbox *mb = user_mailbox_locked(owner, level);
    if (mb) return mb;
  }
  return NULL;
}

/* The rights of who to create below local (RFC 4314 4). Caller holds owner->lock. */
static unsigned ns_create_rights_locked(struct user *owner, const char *local, const char *who) {
  if (owner->name && strcmp(owner->name, who) == 0) return RIGHTS_ALL;
  struct mailbox *parent = ns_parent_locked(owner, local);
  return parent ? acl_rights(parent, who) : 0;
}

/*
** Set id's rights on the mailbox called name (canonical) in u's list, and on its copy in
** the reset baseline, so that a reset keeps it (fixtures and the API). -1 if there is no
** such mailbox, 0 if memory ran out. Caller holds u->lock.
*/
static int user_set_acl_locked(struct user *u, const char *name, const char *id,
                               unsigned rights) {
  struct mailbox *mb = user_mailbox_locked(u, name);
  if (!mb) return -1;
  int ok = acl_set(mb, id, rights);
  for (size_t i = 0; ok && i < u->base.n; i++)
    if (strcmp(u->base.list[i]->name, name) == 0) ok = acl_set(u->base.list[i], id, rights);
  return ok;
}

/*
** Give mb a new UIDVALIDITY and new UIDs, as a server that lost its UID state would (a
** fault for testing clients' resync). Each message takes the UID its successor had, and
** the last one the old UIDNEXT: every old UID now names another message or none, so a
** client that ignores UIDVALIDITY shows wrong mail instead of getting away with it.
** Sessions with it selected are let go.
*/
static void mailbox_new_uidvalidity(struct imapmem *srv, struct mailbox *mb) {
  pthread_mutex_lock(&mb->lock);
  mb->uidvalidity = server_new_uidvalidity(srv);
  mailbox_make_id(mb, NULL);   /* RFC 8474 4: a new UIDVALIDITY is a new mailbox */
  if (mb->count && mb->uidnext < UINT32_MAX - 1) {
    for (size_t i = 0; i + 1 < mb->count; i++) mb->msgs[i].uid = mb->msgs[i + 1].uid;
    mb->msgs[mb->count - 1].uid = mb->uidnext++;
  }
  mailbox_forget_ghosts(mb, UINT64_MAX);
  mb->modseq++;
  mailbox_forget_expunged(mb);   /* RFC 7162 5.3: the old expunges mean nothing now */
  mailbox_retire(mb, "given a new UIDVALIDITY: resynchronize");
  pthread_mutex_unlock(&mb->lock);
}

/*
** Put mb's mod-sequences back to those of a fresh fixture (every message 1, HIGHESTMODSEQ
** 1) and forget its expunges, as a server restored from a backup would (a fault for
** testing clients' resync: RFC 7162 6 has a client that sees HIGHESTMODSEQ go below its
** cached value resynchronize fully). Sessions with it selected are let go.
*/
static void mailbox_modseq_back(struct mailbox *mb) {
  pthread_mutex_lock(&mb->lock);
  for (size_t i = 0; i < mb->count; i++) mb->msgs[i].modseq = 1;
  mailbox_relink(mb);
  mailbox_forget_ghosts(mb, UINT64_MAX);
  mb->modseq = 1;
  mailbox_forget_expunged(mb);
  mailbox_retire(mb, "mod-sequences went back: resynchronize");
  pthread_mutex_unlock(&mb->lock);
}

/* ------------------------------------------------------------------------- */
/*
** Quota (RFC 9208). Each user has one quota root, named "" (as in RFC 9208 4.2.2's
** example), that covers all of that user's mailboxes. Its limits are configuration
** (imapmem_set_quota, --quota, SETQUOTA): imapmem_reset keeps them and --save does not
** write them. Usage is not stored but counted: the sum of mb->bytes and mb->count over the
** user's mailboxes, so O(mailboxes) per count, and nothing can drift out of step.
**
** Exact under concurrency: what adds messages where a limit applies takes the owner's
** quota_lock, counts, checks, adds, and only then lets go, so two sessions appending at
** once cannot both pass a check that only one of them fits under. Lock order: quota_lock,
** then user->lock, then one mailbox; quota_lock is never taken with another lock held.
*/
static const char *const quota_resource_names[QUOTA_NRES] = {"STORAGE", "MESSAGE"};

struct quota_usage {
  uint64_t bytes, messages;
};

/* What the user's mailboxes hold now. Takes u->lock and each mailbox's lock in turn. */
static struct quota_usage user_quota_usage(struct user *u) {
  struct quota_usage q = {0, 0};
  pthread_mutex_lock(&u->lock);
  for (size_t i = 0; i < u->live.n; i++) {
    struct mailbox *mb = u->live.list[i];
    pthread_mutex_lock(&mb->lock);
    q.bytes += mb->bytes;
    q.messages += mb->count;
    pthread_mutex_unlock(&mb->lock);
  }
  pthread_mutex_unlock(&u->lock);
  return q;
}

/*
** A resource's usage as reported. RFC 9208 5.1: STORAGE is in units of 1024 octets; a
** unit begun counts whole (as Dovecot reports it), so usage <= limit exactly when the
** octets fit under limit * 1024.
*/
static uint64_t quota_usage_of(const struct quota_usage *q, int resource) {
  if (resource == QUOTA_MESSAGE) return q->messages;
  return q->bytes / 1024 + (q->bytes % 1024 != 0);
}

/*
** The first resource among those in mask (bits 1 << QUOTA_*) that adding messages of
** bytes in all would take past its limit, or -1 (RFC 9208 4.3.1: then the command
** answers [OVERQUOTA] and changes nothing). Counts usage only where a limit applies.
** Caller holds u->quota_lock, and keeps it until what it checked has been added.
*/
static int user_quota_exceeded(struct user *u, unsigned mask, uint64_t bytes,
                               uint64_t messages) {
  int limited = 0;
  for (int r = 0; r < QUOTA_NRES; r++)
    limited |= (mask >> r & 1) && u->quota_limit[r] != QUOTA_NO_LIMIT;
  if (!limited || messages == 0) return -1;
  struct quota_usage q = user_quota_usage(u);
  q.bytes += bytes;
  q.messages += messages;
  for (int r = 0; r < QUOTA_NRES; r++)
    if ((mask >> r & 1) && u->quota_limit[r] != QUOTA_NO_LIMIT &&
        quota_usage_of(&q, r) > (uint64_t)u->quota_limit[r])
      return r;
  return -1;
}

/* Set all of the user's limits at once (QUOTA_NO_LIMIT: none). Takes u->quota_lock. */
static void user_set_quota(struct user *u, const int64_t limit[QUOTA_NRES]) {
  pthread_mutex_lock(&u->quota_lock);
  memcpy(u->quota_limit, limit, sizeof u->quota_limit);
  pthread_mutex_unlock(&u->quota_lock);
}

/* The user's limits and usage, as one consistent picture. Takes u->quota_lock. */
static struct quota_usage user_get_quota(struct user *u, int64_t limit[QUOTA_NRES]) {
  pthread_mutex_lock(&u->quota_lock);
  memcpy(limit, u->quota_limit, sizeof u->quota_limit);
  struct quota_usage q = user_quota_usage(u);
  pthread_mutex_unlock(&u->quota_lock);
  return q;
}

/*
** ===========================================================================
** 4  mbox load and save
** ===========================================================================
** Owns: reading RFC 4155 mbox files (and fixture directories, with their .subscriptions
** and .acl files) into batches, committing them to a user's mailboxes, and writing
** mailboxes back as files.
** Calls: sections 1-3.
** Locking: parsing takes no store lock (only its own reader's, struct mbox_source);
** committing takes the user's lock and then each mailbox's lock in turn; saving copies the
** names under the user's lock and each mailbox's messages under its own.
**
** A load is all or nothing: every file is parsed before anything is added, so a bad file
** leaves the store as it was. One pass over the file as it is read into its arena, a
** helper thread reading ahead where there is a core to spare: each line is moved once, in
** place, turned into CRLF, unquoted (mboxrd ">From " rules) and stripped of the flag
** headers mutt and Dovecot write, and the separator to the next message is found on the
** way. Saving writes the same layout back, with those headers, and removes stale files.
*/
struct pending {             /* a parsed message, not yet in a mailbox */
  struct msgdata *d;
  uint32_t flags;
  uint32_t xuid;              /* X-UID, or 0 */
  int64_t internaldate;
  int tz;
  char *keywords;             /* X-Keywords value, or NULL */
  char *eol;                  /* X-Imapmem-Eol value, or NULL */
  uint64_t modseq;            /* X-Imapmem-Modseq, or 0 */
  size_t mark_first;          /* its line marks: the batch's marks[mark_first...] */
  uint32_t nmarks;            /* (0: none kept) */
};
struct acl_line {             /* an entry of a fixture folder's .acl file */
  char *mailbox, *id;
  unsigned rights;
};
struct mbox_batch {
  char *mailbox;              /* canonical mailbox name */
  char *file;                 /* where it came from, for error messages */
  uint32_t content_validity;  /* UIDVALIDITY from the bytes and the name (no X-IMAPbase) */
  int selectable;
  struct pending *m;
  size_t n, cap;
  int has_base;               /* X-IMAPbase / X-IMAP seen */
  uint32_t base_validity, base_next;
  char *base_keywords;
  uint64_t base_modseq;       /* X-Imapmem-Highestmodseq, or 0 */
  char *base_mailboxid;       /* X-Imapmem-Mailboxid (RFC 8474 MAILBOXID), or NULL */
  struct line_mark *marks;    /* the messages' line marks, until the arena takes them */
  size_t nmarks, capmarks;
  struct mbox_batch *next;
};

/*
** A mailbox loaded without X-IMAPbase gets its UIDVALIDITY from its fixture's bytes and its
** name: the same across restarts while the file is unchanged, so a client's cache stays
** valid, and different once the file changes (RFC 3501 2.3.1.1). A quick 64-bit hash, four
** lanes of eight bytes, as fast as the file can be read. The lanes start from the file's
** size as fstat gives it when the load begins: a file that shrinks while it is read (the
** loader takes what there is) gets a number that the same bytes loaded later do not, which
** only makes a client resynchronize (its bytes are overwritten by then: no second pass).
*/
struct content_hash {          /* the lanes, over the 32-byte blocks of p[0..done) */
  uint64_t h[4];
  size_t done;
};
#define CONTENT_HASH_K 0x9e3779b97f4a7c15u

static void content_hash_start(struct content_hash *c, size_t n) {
  c->h[0] = n;
  c->h[1] = CONTENT_HASH_K;
  c->h[2] = ~(uint64_t)n;
  c->h[3] = 0x2545f4914f6cdd1du;
  c->done = 0;
}

/* Take in the whole blocks of p[0..avail) not taken yet (the file as read so far). */
static void content_hash_add(struct content_hash *c, const char *p, size_t avail) {
  uint64_t h[4] = {c->h[0], c->h[1], c->h[2], c->h[3]};   /* in registers: a quarter faster */
  size_t done = c->done;
  for (; done + 32 <= avail; done += 32)
    for (int l = 0; l < 4; l++) {
      uint64_t w;
      memcpy(&w, p + done + 8 * l, 8);
      h[l] = (h[l] ^ w) * CONTENT_HASH_K;
      h[l] ^= h[l] >> 29;
    }
  memcpy(c->h, h, sizeof h);
  c->done = done;
}

/* The UIDVALIDITY of the n bytes at p (all but the last partial block already added). */
static uint32_t content_hash_end(struct content_hash *c, const char *p, size_t n,
                                 const char *name) {
  const uint64_t k = CONTENT_HASH_K;
  const uint64_t *h = c->h;
  size_t i = c->done;
  uint64_t x = h[0] ^ (h[1] << 1) ^ (h[2] << 2) ^ (h[3] << 3);
  for (; i < n; i++) x = (x ^ (unsigned char)p[i]) * 0x100000001b3u;
  for (const char *c = name; *c; c++) x = (x ^ (unsigned char)*c) * 0x100000001b3u;
  x ^= x >> 33;
  x *= k;
  x ^= x >> 31;
  uint32_t v = (uint32_t)(x ^ (x >> 32));
  return v ? v : 1;
}

static uint32_t uidvalidity_from(const char *p, size_t n, const char *name) {
  struct content_hash c;
  content_hash_start(&c, n);
  content_hash_add(&c, p, n);
  return content_hash_end(&c, p, n, name);
}

static void mbox_batch_free(struct mbox_batch *b) {
  while (b) {
    struct mbox_batch *n = b->next;
    for (size_t i = 0; i < b->n; i++) {
      msgdata_unref(b->m[i].d);
      free(b->m[i].keywords);
      free(b->m[i].eol);
    }
    free(b->m);
    free(b->marks);
    free(b->mailbox);
    free(b->file);
    free(b->base_keywords);
    free(b->base_mailboxid);
    free(b);
    b = n;
  }
}

static struct mbox_batch *mbox_batch_new(const char *mailbox, const char *file, int selectable) {
  struct mbox_batch *b = mem_calloc(1, sizeof *b);
  if (!b) return NULL;
  b->selectable = selectable;
  b->content_validity = uidvalidity_from("", 0, mailbox);
  if (!(b->mailbox = mem_strdup(mailbox)) || !(b->file = mem_strdup(file))) {
    mbox_batch_free(b);
    b = NULL;
  }
  return b;
}

/* The date of a From line: "From sender Www Mmm dd hh:mm:ss yyyy [+zzzz]" (asctime). */
static int mbox_from_date(const char *p, size_t n, int64_t *t_out, int *tz_out) {
  struct str w[16];
  int nw = 0;
  size_t i = 5;              /* after "From " */
  while (i < n && nw < 16) {
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r')) i++;
    size_t s = i;
    while (i < n && p[i] != ' ' && p[i] != '\t' && p[i] != '\r') i++;
    if (i > s) w[nw++] = str_make(p + s, i - s);
  }
  for (int k = 0; k + 4 < nw + 1 && k + 3 < nw; k++) {
    int mon = month_from_name(w[k + 1].p, w[k + 1].len);
    if (w[k].len != 3 || !isalpha((unsigned char)w[k].p[0]) || !mon || w[k + 1].len != 3)
      continue;
    long long day, hh, mm, ss = 0, year = -1;
    if (!parse_uint(w[k + 2], 31, &day)) continue;
    struct str t = w[k + 3];           /* hh:mm[:ss] */
    if (t.len < 5 || t.p[2] != ':' || !parse_uint(str_make(t.p, 2), 23, &hh) ||
        !parse_uint(str_make(t.p + 3, 2), 59, &mm))
      continue;
    if (t.len == 8 && (t.p[5] != ':' || !parse_uint(str_make(t.p + 6, 2), 60, &ss))) continue;
    int tz = 0;
    for (int j = k + 4; j < nw; j++) {  /* year, and a numeric zone before or after it */
      if (!zone_numeric(w[j], &tz) && year < 0) parse_uint(w[j], 9999, &year);
    }
    if (year < 0 || day < 1) return 0;
    *t_out = time_from_civil(year, mon, (int)day, hh, mm, ss, tz);
    *tz_out = tz;
    return 1;
  }
  return 0;
}

static uint32_t mbox_status_flags(struct str v, int x_status) {
  uint32_t f = x_status ? 0 : FLAG_RECENT;
  for (size_t i = 0; i < v.len; i++) {
    switch (v.p[i]) {
    case 'R': if (!x_status) f |= FLAG_SEEN; break;
    case 'O': if (!x_status) f &= ~(uint32_t)FLAG_RECENT; break;
    case 'A': if (x_status) f |= FLAG_ANSWERED; break;
    case 'F': if (x_status) f |= FLAG_FLAGGED; break;
    case 'T': if (x_status) f |= FLAG_DRAFT; break;
    case 'D': if (x_status) f |= FLAG_DELETED; break;
    }
  }
  return f;
}

/*
** Append a line's n bytes, and CRLF if crlf, to the message being built (not yet shared).
** In the arena (see mbox_parse_arena) the bytes move toward the arena's start, and must end
** at or before unread, the first source byte not consumed yet; where they would not, the
** message moves to a buffer of its own, which grows by doubling.
*/
static int mbox_put(struct msgdata **dp, size_t *cap, const char *p, size_t n, int crlf,
                    const char *unread) {
  struct msgdata *d = *dp;
  size_t need = (size_t)d->size + n + (crlf ? 2 : 0);
  if (need > UINT32_MAX - 1) return 0;
  if (d->arena ? d->bytes + need > unread : need > *cap) {
    size_t ncap = d->arena ? need * 2 + 4096 : *cap * 2 + n + 2;
    if (ncap > UINT32_MAX) ncap = UINT32_MAX;
    struct msgdata *nd;
    if (d->arena) {
      if (!(nd = msgdata_alloc(ncap, NULL))) return 0;
      memcpy(nd->bytes, d->bytes, d->size);
      nd->size = d->size;
      msgdata_unref(d);
    } else {
      if (!(nd = mem_realloc(d, sizeof *d + ncap + 1))) return 0;
      nd->bytes = (char *)(nd + 1);
    }
    *dp = d = nd;
    *cap = ncap;
  }
  memmove(d->bytes + d->size, p, n);
  if (crlf) memcpy(d->bytes + d->size + n, "\r\n", 2);
  d->size = (uint32_t)need;
  return 1;
}

enum {
  HDR_KEEP, HDR_STATUS, HDR_XSTATUS, HDR_KEYWORDS, HDR_UID, HDR_IMAPBASE, HDR_IMAP, HDR_EOL,
  HDR_MODSEQ, HDR_HIGHESTMODSEQ, HDR_MAILBOXID
};

/*
** A message may itself carry one of those fields (a client can APPEND anything). Saving
** renames such a field with this prefix, so that it is not taken for the mbox's own on
** reload, and loading takes the prefix off again: the bytes come back as they were.
*/
#define SAVED_PREFIX "X-Imapmem-Original-"
#define SAVED_PREFIX_LEN 19

static int mbox_header_kind(const char *p, size_t n) {
#define MBOX_FIELD(s, kind) {s, sizeof s - 1, kind}
  static const struct { const char *name; size_t len; int kind; } h[] = {
    MBOX_FIELD("Status", HDR_STATUS), MBOX_FIELD("X-Status", HDR_XSTATUS),
    MBOX_FIELD("X-Keywords", HDR_KEYWORDS), MBOX_FIELD("X-UID", HDR_UID),
    MBOX_FIELD("X-IMAPbase", HDR_IMAPBASE), MBOX_FIELD("X-IMAP", HDR_IMAP),
    MBOX_FIELD("X-Imapmem-Eol", HDR_EOL), MBOX_FIELD("X-Imapmem-Modseq", HDR_MODSEQ),
    MBOX_FIELD("X-Imapmem-Highestmodseq", HDR_HIGHESTMODSEQ),
    MBOX_FIELD("X-Imapmem-Mailboxid", HDR_MAILBOXID)};
#undef MBOX_FIELD
  if (!n || ((*p | 0x20) != 's' && (*p | 0x20) != 'x')) return HDR_KEEP;   /* most lines */
  const char *colon = memchr(p, ':', n);
  if (!colon) return HDR_KEEP;
  size_t len = (size_t)(colon - p);
  while (len && (p[len - 1] == ' ' || p[len - 1] == '\t')) len--;
  for (size_t i = 0; i < sizeof h / sizeof h[0]; i++)
    if (h[i].len == len && strncasecmp(p, h[i].name, len) == 0) return h[i].kind;
  return HDR_KEEP;
}

/* Record what a stripped header says. value is everything after the colon. */
static int mbox_header_apply(struct mbox_batch *b, struct pending *pm, int kind, struct str v,
                             int *pseudo) {
  v = str_trim(v);
  long long x;
  switch (kind) {
  case HDR_STATUS: pm->flags = (pm->flags & ~(uint32_t)(FLAG_SEEN | FLAG_RECENT)) |
                               mbox_status_flags(v, 0); break;
  case HDR_XSTATUS: pm->flags |= mbox_status_flags(v, 1); break;
  case HDR_KEYWORDS:
    free(pm->keywords);
    pm->keywords = mem_strndup(v.p, v.len);
    if (!pm->keywords) return 0;
    break;
  case HDR_EOL:
    free(pm->eol);
    pm->eol = mem_strndup(v.p, v.len);
    if (!pm->eol) return 0;
    break;
  case HDR_UID:
    if (parse_uint(v, UINT32_MAX - 1, &x)) pm->xuid = (uint32_t)x;   /* leaves a UIDNEXT */
    break;
  case HDR_MODSEQ:
    if (parse_uint(v, INT64_MAX, &x) && x > 0) pm->modseq = (uint64_t)x;
    break;
  case HDR_HIGHESTMODSEQ:
    if (parse_uint(v, INT64_MAX, &x) && x > 0) b->base_modseq = (uint64_t)x;
    break;
  case HDR_MAILBOXID:
    free(b->base_mailboxid);
    b->base_mailboxid = mem_strndup(v.p, v.len);
    if (!b->base_mailboxid) return 0;
    break;
  case HDR_IMAP:
    *pseudo = 1;             /* UW imapd's "FOLDER INTERNAL DATA" message */
    /* fall through */
  case HDR_IMAPBASE: {
    long long val = 0, next = 0;
    size_t i = 0;
    while (i < v.len && v.p[i] != ' ') i++;
    if (!parse_uint(str_make(v.p, i), UINT32_MAX, &val)) break;
    while (i < v.len && v.p[i] == ' ') i++;
    size_t s = i;
    while (i < v.len && v.p[i] != ' ') i++;
    if (!parse_uint(str_make(v.p + s, i - s), UINT32_MAX, &next)) break;
    b->has_base = 1;
    b->base_validity = (uint32_t)val;
    b->base_next = next < UINT32_MAX ? (uint32_t)next + 1 : UINT32_MAX;  /* it is the last UID */
    free(b->base_keywords);
    b->base_keywords = mem_strndup(v.p + i, v.len - i);
    if (!b->base_keywords) return 0;
    break;
  }
  }
  return 1;
}

/*
** Undo what mbox_eol_spec described: drop the CR before each listed LF, and the last break
** (which the loader wrote as CRLF, whatever the message's last byte was: a CR before it
** is the message's own). A list that is not numbers, '-' and ',' ends where it goes wrong.
*/
static void mbox_apply_eol(struct msgdata *d, const char *spec) {
  int all = 0, noeol = 0;
  const char *list = NULL;
  for (const char *t = spec; *t;) {
    while (*t == ' ') t++;
    size_t k = strcspn(t, " ");
    if (k == 2 && strncmp(t, "lf", 2) == 0) all = 1;
    else if (k > 3 && strncmp(t, "lf=", 3) == 0) list = t + 3;
    else if (k == 5 && strncmp(t, "noeol", 5) == 0) noeol = 1;
    t += k;
  }
  size_t line = 0, lo = 0, hi = 0, w = 0;
  char *b = d->bytes;
  for (size_t r = 0; r < d->size; r++) {
    if (b[r] == '\n') {
      line++;
      while (list && line > hi && *list && *list != ' ') {   /* the next range of the list */
        char *e;
        if (*list < '0' || *list > '9') {
          list = NULL;       /* not imapmem's: the lines it would name stay CRLF */
          break;
        }
        lo = hi = strtoul(list, &e, 10);
        if (*e == '-' && e[1] >= '0' && e[1] <= '9') hi = strtoul(e + 1, &e, 10);
        list = *e == ',' ? e + 1 : e;
        if (hi < lo) hi = lo;
      }
      int last = noeol && r + 1 == d->size;
      if (!last && (all || (line >= lo && line <= hi)) && w > 0 && b[w - 1] == '\r') w--;
    }
    b[w++] = b[r];
  }
  if (noeol && w > 1 && b[w - 1] == '\n' && b[w - 2] == '\r') w -= 2;
  d->size = (uint32_t)w;
  b[w] = 0;
}

/*
** Note that a line starting "--" begins at offset off of the message being loaded, after
** lines line breaks (struct line_mark). 0, and no marks for this message, when they would
** take more than a quarter of its bytes (a fixture of "--" lines) or memory runs out.
*/
static int mbox_mark(struct mbox_batch *b, size_t first, uint32_t off, uint32_t lines) {
  size_t n = b->nmarks - first;
  if ((n >= 64 && n * sizeof *b->marks * 4 > off) ||
      !mem_grow(&b->marks, &b->capmarks, b->nmarks + 1, sizeof *b->marks))
    return 0;
  b->marks[b->nmarks++] = (struct line_mark){off, lines};
  return 1;
}

/*
** Parse one message, from just after its From line to the next separator, into pm, and
** point *next_out at the next From line (or end). RFC 4155: a message ends at a blank
** line followed by a "From " line, and that blank line belongs to the mbox, as does one
** at the very end of the file. Finding the separator in the same pass that writes the
** lines reads each byte once. The bytes go to *at in arena a (moved there in place, see
** mbox_parse_arena), and *at moves past them and their NUL. *lines counts the line breaks
** read. Returns 0 if memory ran out (or a message passes 4 GB). *pseudo is set for UW's
** internal-data message.
*/
static int mbox_message(struct mbox_batch *b, const char *p, const char *end,
                        struct msgarena *a, char **at, struct pending *pm, int *pseudo,
                        const char **next_out, int *lines) {
  size_t cap = 0;
  struct msgdata *d = msgdata_alloc(0, a);
  if (!d) return 0;
  atomic_fetch_add(&a->refs, 1);
  d->bytes = *at;
  int in_header = 1, skip = HDR_KEEP;
  struct buf fieldval = {0};
  int ok = 1, marking = 1;
  size_t first_mark = b->nmarks;
  uint32_t breaks = 0;       /* line breaks written so far */
  while (p < end && ok) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *le = nl ? nl : end, *next = nl ? nl + 1 : end;
    const char *ce = le > p && le[-1] == '\r' ? le - 1 : le;
    *lines += nl != NULL;
    if (ce == p && nl && (next == end || (end - next >= 5 && memcmp(next, "From ", 5) == 0))) {
      p = next;              /* the separator: the message ends before it */
      break;
    }
    if (in_header) {
      int cont = ce > p && (*p == ' ' || *p == '\t');
      if (!cont && skip != HDR_KEEP) {  /* the stripped field is complete: apply it */
        ok = !fieldval.oom &&
             mbox_header_apply(b, pm, skip, str_make(fieldval.p, fieldval.len), pseudo);
        skip = HDR_KEEP;
        buf_reset(&fieldval);
      }
      if (ce == p) {
        in_header = 0;
      } else if (cont && skip != HDR_KEEP) {
        buf_add(&fieldval, p, (size_t)(ce - p));
        p = next;
        continue;
      } else if (!cont && ce - p > SAVED_PREFIX_LEN && (*p | 0x20) == 'x' &&
                 strncasecmp(p, SAVED_PREFIX, SAVED_PREFIX_LEN) == 0 &&
                 mbox_header_kind(p + SAVED_PREFIX_LEN, (size_t)(ce - p) - SAVED_PREFIX_LEN)) {
        p += SAVED_PREFIX_LEN;  /* the message's own field, renamed by a save: restore it */
      } else if (!cont && (skip = mbox_header_kind(p, (size_t)(ce - p))) != HDR_KEEP) {
        const char *colon = memchr(p, ':', (size_t)(ce - p));
        buf_add(&fieldval, colon + 1, (size_t)(ce - colon - 1));
        p = next;
        continue;
      }
    }
    const char *q = p;       /* mboxrd: ">From " -> "From ", ">>From " -> ">From " */
    while (q < ce && *q == '>') q++;
    if (q > p && ce - q >= 5 && memcmp(q, "From ", 5) == 0) p++;
    if (marking && ce - p >= 2 && p[0] == '-' && p[1] == '-')
      marking = mbox_mark(b, first_mark, d->size, breaks);
    ok = mbox_put(&d, &cap, p, (size_t)(ce - p), nl != NULL, next);
    breaks += nl != NULL;
    p = next;
  }
  /* the marks end with the message's end; they hold for the bytes as written, so not if
     line breaks are put back below, nor if the message left the arena (its owner) */
  if (!(marking && ok && !pm->eol && d->arena && mbox_mark(b, first_mark, d->size, breaks)))
    b->nmarks = first_mark;
  pm->mark_first = first_mark;
  pm->nmarks = (uint32_t)(b->nmarks - first_mark);
  if (ok && skip != HDR_KEEP)
    ok = !fieldval.oom &&
         mbox_header_apply(b, pm, skip, str_make(fieldval.p, fieldval.len), pseudo);
  buf_free(&fieldval);
  *next_out = p;
  /* room for the NUL: with unread one before p, mbox_put moves the message out if not */
  if (ok && d->arena) ok = mbox_put(&d, &cap, "", 0, 0, p - 1);
  if (!ok) {
    msgdata_unref(d);
    return 0;
  }
  if (pm->eol) {             /* line breaks that were not CRLF (saved by imapmem) */
    mbox_apply_eol(d, pm->eol);
    free(pm->eol);
    pm->eol = NULL;
  }
  if (!d->arena && cap - d->size > 4096) {  /* give back what doubling overshot */
    struct msgdata *nd = realloc(d, sizeof *d + d->size + 1);   /* on failure d stays */
    if (nd) {
      d = nd;
      d->bytes = (char *)(d + 1);
    }
  }
  d->bytes[d->size] = 0;
  if (d->arena) *at = d->bytes + d->size + 1;
  d->hdr_len = (uint32_t)header_length(d->bytes, d->size);
  pm->d = d;
  return 1;
}

/*
** A new arena for a file of len bytes, and in *src where to put them: at its end, with room
** before them for the CRs the loader adds (a sixteenth: lines of 16 bytes and more on
** average). Large ones are mapped, with huge pages where the system offers them: page
** faults are most of what loading costs.
*/
#define ARENA_MAPPED_FROM (1u << 20)
static struct msgarena *msgarena_new(size_t len, char **src) {
  size_t room = len / 16 + 4096;
  struct msgarena *a = mem_alloc(sizeof *a);
  if (!a || len > SIZE_MAX / 2) {
    free(a);
    return NULL;
  }
  atomic_init(&a->refs, 1);
  atomic_init(&a->meta_next, 0);
  a->meta_end = 0;           /* no room for metadata until the load is done */
  a->marks = NULL;
  a->size = room + len + 1;
  a->mapped = a->size >= ARENA_MAPPED_FROM;
  if (a->mapped) {
    void *m = mmap(NULL, a->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    a->base = m == MAP_FAILED ? NULL : m;
#ifdef MADV_HUGEPAGE
    if (a->base) madvise(a->base, a->size, MADV_HUGEPAGE);
#endif
  } else {
    a->base = mem_alloc(a->size);
  }
  if (!a->base) {
    free(a);
    return NULL;
  }
  *src = a->base + room;
  (*src)[len] = 0;
  return a;
}

/*
** Once the load is done: the room left after the messages (used bytes) becomes room for
** their metadata (meta_alloc, section 2), up to about what each message's takes, and a
** mapped arena gives back its pages past that. The read wrote the file there: keeping
** some costs no memory the load did not take, and spares the first FETCH fresh pages.
*/
#define META_ROOM_A_MESSAGE 1024   /* ENVELOPE, BODYSTRUCTURE, part table, sort keys */
static void msgarena_trim(struct msgarena *a, size_t used, size_t nmsgs) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  size_t from = (used + 15) & ~(size_t)15, room = nmsgs * META_ROOM_A_MESSAGE;
  size_t end = from < a->size && a->size - from > room ? from + room : a->size;
  size_t keep = (end + page - 1) / page * page;
  if (a->mapped && keep < a->size && munmap(a->base + keep, a->size - keep) == 0)
    a->size = keep;
  atomic_store(&a->meta_next, from < a->size ? from : a->size);
  a->meta_end = a->size;
}

/*
** The bytes of the file being loaded, arriving in its arena a chunk at a time (issue 15):
** read by a helper thread on a spare core, which pays the page faults and the copy while
** the loader hashes and parses behind it, or else by the loader itself whenever it needs
** more. The loader asks how far it may parse (mbox_source_limit): up to the last message
** boundary in the bytes read and hashed, so that its writing, which moves lines toward the
** start over bytes already parsed, never reaches bytes the hash has not taken; and to the
** end once the file is read. Bytes held in memory are a source that has arrived whole.
*/
#define MBOX_CHUNK (1u << 20)
#define MBOX_READER_FROM (8u << 20)   /* bytes: a smaller file is read without a thread */
static size_t mbox_chunk = MBOX_CHUNK;           /* the unit tests make these small */
static size_t mbox_reader_from = MBOX_READER_FROM;
enum { SOURCE_READING = -1, SOURCE_DONE = 0 };   /* else the errno of a failed read */

struct mbox_source {
  int fd;                    /* -1: the bytes were all there from the start */
  char *data;                /* where they go, in the arena */
  size_t len;                /* the size fstat gave, and what was read once done */
  size_t seen;               /* the bytes the loader has hashed */
  size_t searched;           /* where the last boundary search ended, and from where */
  size_t searched_from;
  const char *name;          /* the mailbox's, which the UIDVALIDITY hash takes in */
  struct content_hash hash;
  uint32_t validity;         /* once done */
  int state;                 /* the loader's copy of done: SOURCE_ or an errno */
  int threaded;
  pthread_t thread;          /* the helper, if threaded */
  pthread_mutex_t lock;      /* guards got, done and stop for the helper and the loader */
  pthread_cond_t arrived;
  size_t got;
  int done;                  /* SOURCE_READING, SOURCE_DONE, or the errno of a failed read */
  int stop;                  /* the loader gave up: stop reading */
};

/* Read the next chunk at *n. Returns SOURCE_READING if there may be more. */
static int mbox_source_read(struct mbox_source *s, size_t *n) {
  for (;;) {
    if (*n == s->len) return SOURCE_DONE;
    size_t want = s->len - *n < mbox_chunk ? s->len - *n : mbox_chunk;
    ssize_t r = read(s->fd, s->data + *n, want);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return errno ? errno : EIO;
    if (r == 0) return SOURCE_DONE;   /* the file shrank while being read: take what there is */
    *n += (size_t)r;
    return SOURCE_READING;
  }
}

static void *mbox_source_thread(void *arg) {
  struct mbox_source *s = arg;
  size_t n = 0;
  int state = SOURCE_READING;
  while (state == SOURCE_READING) {
    state = mbox_source_read(s, &n);
    pthread_mutex_lock(&s->lock);
    s->got = n;
    if (s->stop && state == SOURCE_READING) state = SOURCE_DONE;
    s->done = state;
    pthread_cond_signal(&s->arrived);
    pthread_mutex_unlock(&s->lock);
  }
  return NULL;
}

/* A source for the file open at fd, len bytes, read into data: by a helper if worth one. */
static void mbox_source_open(struct mbox_source *s, int fd, char *data, size_t len,
                             const char *name) {
  memset(s, 0, sizeof *s);
  s->fd = fd;
  s->name = name;
  s->data = data;
  s->len = len;
  s->state = s->done = SOURCE_READING;
  content_hash_start(&s->hash, len);
  if (len < mbox_reader_from || !spare_core_take()) return;
  pthread_mutex_init(&s->lock, NULL);
  pthread_cond_init(&s->arrived, NULL);
  s->threaded = pthread_create(&s->thread, NULL, mbox_source_thread, s) == 0;
  if (!s->threaded) {
    pthread_cond_destroy(&s->arrived);
    pthread_mutex_destroy(&s->lock);
    spare_core_give();
  }
}

/* A source for len bytes already at data, whose UIDVALIDITY is validity. */
static void mbox_source_whole(struct mbox_source *s, char *data, size_t len, uint32_t validity) {
  memset(s, 0, sizeof *s);
  s->fd = -1;
  s->data = data;
  s->len = s->seen = len;
  s->validity = validity;
  s->state = SOURCE_DONE;
}

/* Stop and join the helper, if any: before the arena it writes into can go. */
static void mbox_source_close(struct mbox_source *s) {
  if (!s->threaded) return;
  pthread_mutex_lock(&s->lock);
  s->stop = 1;
  pthread_mutex_unlock(&s->lock);
  pthread_join(s->thread, NULL);
  pthread_cond_destroy(&s->arrived);
  pthread_mutex_destroy(&s->lock);
  spare_core_give();
  s->threaded = 0;
}

/*
** The start of the last "From " line after a blank line (RFC 4155: a message boundary)
** that lies after pos and at or before hi, with its five bytes below got; 0 if none. Only
** bytes not searched before for this pos are searched again.
*/
static size_t mbox_boundary(struct mbox_source *s, size_t pos, size_t hi, size_t got) {
  const char *d = s->data;
  size_t low = pos;
  if (s->searched_from == pos && s->searched > pos + 3) low = s->searched - 3;
  if (hi + 5 > got) hi = got >= 5 ? got - 5 : 0;
  for (size_t f = hi; f > low + 1 && f >= pos + 2; f--) {
    if (d[f - 1] != '\n' || memcmp(d + f, "From ", 5) != 0) continue;
    if (d[f - 2] == '\n' || (d[f - 2] == '\r' && f >= pos + 3 && d[f - 3] == '\n')) return f;
  }
  s->searched_from = pos;
  s->searched = hi > pos ? hi : pos;
  return 0;
}

/*
** How far the loader, at pos, may parse: to a message boundary in the bytes read and
** hashed, or to the end once all are read (s->len, and s->validity are then final); reads
** or waits until there is one. Returns 0 if reading failed (s->state has the errno).
*/
static size_t mbox_source_limit(struct mbox_source *s, size_t pos) {
  while (s->state == SOURCE_READING) {
    size_t got = s->seen;
    if (s->threaded) {
      pthread_mutex_lock(&s->lock);
      while (s->got == s->seen && s->done == SOURCE_READING)
        pthread_cond_wait(&s->arrived, &s->lock);
      got = s->got;
      s->state = s->done;      /* set with got: final once it is not SOURCE_READING */
      pthread_mutex_unlock(&s->lock);
    } else {
      s->state = mbox_source_read(s, &got);
    }
    content_hash_add(&s->hash, s->data, got);
    s->seen = got;
    if (s->state > 0) return 0;
    if (s->state == SOURCE_DONE) {
      s->len = got;
      s->data[got] = 0;
      s->validity = content_hash_end(&s->hash, s->data, got, s->name);
      break;
    }
    size_t b = mbox_boundary(s, pos, s->hash.done, got);
    if (b) return b;
  }
  return s->state == SOURCE_DONE ? s->len : 0;
}

/*
** Parse the mbox bytes of source src (arriving at the end of arena a, as msgarena_new placed
** them) into a new batch for mailbox `name`. The messages are written in place, from the
** arena's start on: a line moves toward the start by at most the CRs added before it, which
** the room before the file covers, so the writing never overtakes the reading and the file
** is never copied. Consumes the caller's reference to a. On error returns an IMAPMEM_ code
** and writes "file:line: what" into err.
*/
static int mbox_parse_arena(struct msgarena *a, struct mbox_source *src, const char *file,
                            const char *name, struct mbox_batch **out, char *err,
                            size_t errcap) {
  struct mbox_batch *b = mbox_batch_new(name, file, 1);
  *out = b;
  if (!b) {
    msgarena_unref(a);
    snprintf(err, errcap, "%s: out of memory", file);
    return IMAPMEM_NOMEM;
  }
  const char *data = src->data;
  size_t limit = mbox_source_limit(src, 0);   /* parse messages up to here, then ask again */
  if (src->state == SOURCE_DONE || limit) {
    size_t have = src->seen;
    if (have > 0 && (have < 5 || memcmp(data, "From ", 5) != 0)) {
      msgarena_unref(a);
      snprintf(err, errcap, "%s:1: not an mbox file: the first line must start with \"From \"",
               file);
      mbox_batch_free(b);
      *out = NULL;
      return IMAPMEM_PARSE;
    }
  }
  int64_t now = (int64_t)time(NULL);
  char *at = a->base;
  int line = 1;
  size_t pos = 0;
  for (;;) {
    if (pos >= limit) {
      if (src->state == SOURCE_READING) limit = mbox_source_limit(src, pos);
      if (src->state > 0) {
        snprintf(err, errcap, "%.400s: cannot read: %s", file, strerror(src->state));
        msgarena_unref(a);
        mbox_batch_free(b);
        *out = NULL;
        return IMAPMEM_IO;
      }
      if (pos >= limit) break;
    }
    const char *from = data + pos;
    const char *fe = memchr(from, '\n', limit - pos);
    size_t from_len = fe ? (size_t)(fe - from) : limit - pos;
    size_t body = fe ? (size_t)(fe - data) + 1 : limit;
    struct pending pm = {0};
    pm.flags = FLAG_RECENT;  /* until a Status header says the message is old */
    /* read now: writing the message may overwrite its From line */
    int dated = mbox_from_date(from, from_len, &pm.internaldate, &pm.tz);
    int pseudo = 0, at_line = line;
    line += fe != NULL;
    const char *next = data + limit;
    if (!mem_grow(&b->m, &b->cap, b->n + 1, sizeof b->m[0]) ||
        !mbox_message(b, data + body, data + limit, a, &at, &pm, &pseudo, &next, &line)) {
      snprintf(err, errcap, "%s:%d: out of memory, or a message over 4 GB", file, at_line);
      free(pm.keywords);
      msgarena_unref(a);
      mbox_batch_free(b);
      *out = NULL;
      return IMAPMEM_NOMEM;
    }
    if (pseudo && b->n == 0) {
      msgdata_unref(pm.d);
      free(pm.keywords);
    } else {
      if (!dated) {
        struct str v;      /* no usable From-line date: the Date header, else now */
        if (!(header_get(pm.d->bytes, pm.d->bytes + pm.d->hdr_len, "Date", &v) &&
              date_parse(v, &pm.internaldate, &pm.tz))) {
          pm.internaldate = now;
          pm.tz = 0;
        }
      }
      b->m[b->n++] = pm;
    }
    pos = (size_t)(next - data);
  }
  b->content_validity = src->validity;
  if (b->nmarks) {           /* the arena keeps the marks, for as long as its messages */
    struct line_mark *fit = realloc(b->marks, sizeof *fit * b->nmarks);
    a->marks = fit ? fit : b->marks;
    b->marks = NULL;
    for (size_t i = 0; i < b->n; i++) {
      struct msgdata *d = b->m[i].d;
      if (b->m[i].nmarks && d->arena == a) {
        d->marks = a->marks + b->m[i].mark_first;
        d->nmarks = b->m[i].nmarks;
      }
    }
  }
  msgarena_trim(a, (size_t)(at - a->base), b->n);
  msgarena_unref(a);
  return IMAPMEM_OK;
}

/* Parse mbox bytes held by the caller: copied into an arena first. */
static int mbox_parse(const char *data, size_t len, const char *file, const char *name,
                      struct mbox_batch **out, char *err, size_t errcap) {
  char *src;
  struct msgarena *a = msgarena_new(len, &src);
  if (!a) {
    *out = NULL;
    snprintf(err, errcap, "%s: out of memory", file);
    return IMAPMEM_NOMEM;
  }
  memcpy(src, data, len);
  struct mbox_source whole;
  mbox_source_whole(&whole, src, len, uidvalidity_from(data, len, name));
  return mbox_parse_arena(a, &whole, file, name, out, err, errcap);
}

/* Read a whole file. Returns 0 and sets err on failure. */
static int file_read(const char *path, char **data, size_t *len, char *err, size_t errcap) {
  int fd = open(path, O_RDONLY);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) < 0) {
    snprintf(err, errcap, "%.400s: cannot read: %s", path, strerror(errno));
    if (fd >= 0) close(fd);
    return 0;
  }
  size_t cap = st.st_size > 0 ? (size_t)st.st_size : 0, n = 0;
  char *p = mem_alloc(cap + 1);
  if (!p) {
    snprintf(err, errcap, "%s: out of memory", path);
    close(fd);
    return 0;
  }
  for (;;) {
    if (n == cap) {          /* the file grew, or is not a regular file */
      size_t ncap = cap ? cap * 2 : 65536;
      char *np = mem_realloc(p, ncap + 1);
      if (!np) {
        free(p);
        close(fd);
        snprintf(err, errcap, "%s: out of memory", path);
        return 0;
      }
      p = np;
      cap = ncap;
    }
    ssize_t r = read(fd, p + n, cap - n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      snprintf(err, errcap, "%.400s: cannot read: %s", path, strerror(errno));
      free(p);
      close(fd);
      return 0;
    }
    if (r == 0) break;
    n += (size_t)r;
  }
  close(fd);
  p[n] = 0;
  *data = p;
  *len = n;
  return 1;
}

/*
** Parse an mbox file. A regular file is read straight into the arena its messages will
** live in, and parsed while it arrives (struct mbox_source): the file's bytes are read once
** and never copied.
*/
static int mbox_parse_file(const char *path, const char *mailbox, struct mbox_batch **out,
                           char *err, size_t errcap) {
  struct stat st;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0) {
    size_t len = (size_t)st.st_size;
    char *data;
    struct msgarena *a = msgarena_new(len, &data);
    if (!a) {
      close(fd);
      *out = NULL;
      snprintf(err, errcap, "%s: out of memory", path);
      return IMAPMEM_NOMEM;
    }
    struct mbox_source src;
    mbox_source_open(&src, fd, data, len, mailbox);
    atomic_fetch_add(&a->refs, 1);   /* the source's: its helper may still be writing */
    int rc = mbox_parse_arena(a, &src, path, mailbox, out, err, errcap);
    mbox_source_close(&src);
    msgarena_unref(a);
    close(fd);
    return rc;
  }
  if (fd >= 0) close(fd);
  char *data;                /* empty files, pipes and the like: read() */
  size_t len;
  if (!file_read(path, &data, &len, err, errcap)) return IMAPMEM_IO;
  int rc = mbox_parse(data, len, path, mailbox, out, err, errcap);
  free(data);
  return rc;
}

static int has_suffix(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n > m && strcmp(s + n - m, suffix) == 0;
}

/*
** Parse a fixture directory: every *.mbox file below dir, and every folder as a level.
** Each name must be one a client could CREATE; other files, hidden ones included, are not
** mailboxes and are left alone.
*/
static int mbox_parse_dir(const char *dir, const char *prefix, struct mbox_batch **list,
                          int depth, char *err, size_t errcap) {
  if (depth > 32) {
    snprintf(err, errcap, "%s: directories nested too deeply", dir);
    return IMAPMEM_PARSE;
  }
  DIR *d = opendir(dir);
  if (!d) {
    snprintf(err, errcap, "%s: cannot read: %s", dir, strerror(errno));
    return IMAPMEM_IO;
  }
  int rc = IMAPMEM_OK;
  struct dirent *e;
  while (rc == IMAPMEM_OK && (e = readdir(d)) != NULL) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    char path[4096], name[MAX_MAILBOX_NAME + 2];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    struct stat st;
    if (stat(path, &st) < 0) {
      snprintf(err, errcap, "%.400s: cannot read: %s", path, strerror(errno));
      rc = IMAPMEM_IO;
      break;
    }
    int is_dir = S_ISDIR(st.st_mode);
    if (!is_dir && !has_suffix(e->d_name, ".mbox")) continue;   /* not a mailbox */
    size_t n = strlen(e->d_name) - (is_dir ? 0 : 5);
    if (strlen(prefix) + n > MAX_MAILBOX_NAME) {
      snprintf(err, errcap, "%.400s: the mailbox name would be longer than %d bytes", path,
               MAX_MAILBOX_NAME);
      rc = IMAPMEM_PARSE;
      break;
    }
    snprintf(name, sizeof name, "%s%.*s", prefix, (int)n, e->d_name);
    mailbox_canonical(name, name, sizeof name);
    if (!*prefix && name_is_inbox(name, strlen(name))) strcpy(name, "INBOX");
    const char *why = mailbox_name_invalid(name);
    if (why) {
      snprintf(err, errcap, "%.250s: \"%.200s\" is not a mailbox name a client could create "
               "(%s)", path, name, why);
      rc = IMAPMEM_PARSE;
      break;
    }
    if (is_dir) {              /* a \Noselect level; a sibling NAME.mbox makes it selectable */
      struct mbox_batch *lvl = mbox_batch_new(name, path, 0);
      if (!lvl) {
        snprintf(err, errcap, "%.400s: out of memory", path);
        rc = IMAPMEM_NOMEM;
        break;
      }
      lvl->next = *list;
      *list = lvl;
      char sub[sizeof name + 1];
      snprintf(sub, sizeof sub, "%s/", name);
      rc = mbox_parse_dir(path, sub, list, depth + 1, err, errcap);
    } else {
      struct mbox_batch *b = NULL;
      rc = mbox_parse_file(path, name, &b, err, errcap);
      if (b) {
        b->next = *list;
        *list = b;
      }
    }
  }
  closedir(d);
  return rc;
}

/*
** A fixture folder's subscriptions: Dovecot's mbox subscription file ".subscriptions" in
** the folder itself. Dovecot writes "V<TAB>2", a blank line, then one name a line with TAB
** as the hierarchy separator; a plain file of one name a line with '/' is read too.
** *names gets the names (NULL and 0 if there is no file). Returns an IMAPMEM_ code.
*/
/*
** A small text file beside the mailboxes (.subscriptions, .acl, .special-use): read whole
** and handed out a line at a time without its line end, lines counted for error messages.
*/
struct side_file {
  char path[4096 + 32];
  char *data;
  const char *p, *end;
  int line;                   /* the number of the line last handed out, from 1 */
};

/* Read dir/name: 1 if read, 0 if there is no such file (nothing to read), -1 (err set). */
static int side_file_open(struct side_file *f, const char *dir, const char *name, char *err,
                          size_t errcap) {
  struct stat st;
  size_t len;
  snprintf(f->path, sizeof f->path, "%.4096s/%.16s", dir, name);
  f->data = NULL;
  f->p = f->end = NULL;
  f->line = 0;
  if (stat(f->path, &st) < 0) return 0;
  if (!file_read(f->path, &f->data, &len, err, errcap)) return -1;
  f->p = f->data;
  f->end = f->data + len;
  return 1;
}

/* The next line as *line and *k bytes, without its CR LF; 0 after the last. */
static int side_file_line(struct side_file *f, const char **line, size_t *k) {
  if (f->p >= f->end) return 0;
  const char *nl = memchr(f->p, '\n', (size_t)(f->end - f->p));
  *line = f->p;
  *k = (size_t)((nl ? nl : f->end) - f->p);
  if (*k && f->p[*k - 1] == '\r') (*k)--;
  f->p = nl ? nl + 1 : f->end;
  f->line++;
  return 1;
}

static int mbox_read_subscriptions(const char *dir, char ***names, size_t *n, char *err,
                                   size_t errcap) {
  struct side_file f;
  const char *p;
  size_t k, cap = 0;
  *names = NULL;
  *n = 0;
  int got = side_file_open(&f, dir, ".subscriptions", err, errcap);
  if (got <= 0) return got < 0 ? IMAPMEM_IO : IMAPMEM_OK;
  int v2 = f.end - f.data >= 2 && f.data[0] == 'V' && f.data[1] == '\t';
  int in_header = v2, rc = IMAPMEM_OK;
  while (rc == IMAPMEM_OK && side_file_line(&f, &p, &k)) {
    char name[MAX_MAILBOX_NAME + 1];
    if (in_header || k == 0) {           /* the version line, up to the blank line */
      if (k == 0) in_header = 0;
      continue;
    }
    if (k > MAX_MAILBOX_NAME) {
      snprintf(err, errcap, "%.300s:%d: a name longer than %d bytes", f.path, f.line,
               MAX_MAILBOX_NAME);
      rc = IMAPMEM_PARSE;
      break;
    }
    for (size_t i = 0; i < k; i++) name[i] = v2 && p[i] == '\t' ? '/' : p[i];
    name[k] = 0;
    mailbox_canonical(name, name, sizeof name);
    char *copy = mem_strdup(name);
    if (!copy || !mem_grow(names, &cap, *n + 1, sizeof **names)) {
      free(copy);
      snprintf(err, errcap, "%.300s: out of memory", f.path);
      rc = IMAPMEM_NOMEM;
      break;
    }
    (*names)[(*n)++] = copy;
  }
  free(f.data);
  return rc;
}

static int cmp_batch_names(const void *a, const void *b) {
  return strcmp((*(struct mbox_batch *const *)a)->mailbox,
                (*(struct mbox_batch *const *)b)->mailbox);
}

/*
** Two files that would be one mailbox (INBOX.mbox and inbox.mbox, say) are an error:
** merging them without a word would hide a mistake in the fixture.
*/
static int mbox_check_unique(struct mbox_batch *list, char *err, size_t errcap) {
  size_t n = 0;
  for (struct mbox_batch *b = list; b; b = b->next) n += b->selectable;
  struct mbox_batch **v = mem_calloc(n ? n : 1, sizeof *v);
  if (!v) {
    snprintf(err, errcap, "out of memory");
    return IMAPMEM_NOMEM;
  }
  n = 0;
  for (struct mbox_batch *b = list; b; b = b->next)
    if (b->selectable) v[n++] = b;
  qsort(v, n, sizeof *v, cmp_batch_names);
  int rc = IMAPMEM_OK;
  for (size_t i = 1; i < n && rc == IMAPMEM_OK; i++)
    if (strcmp(v[i - 1]->mailbox, v[i]->mailbox) == 0) {
      snprintf(err, errcap, "%.200s and %.200s are both mailbox %.100s", v[i - 1]->file,
               v[i]->file, v[i]->mailbox);
      rc = IMAPMEM_PARSE;
    }
  free(v);
  return rc;
}

/*
** A fixture folder's access control lists (RFC 4314): ".acl" in the folder itself, one
** entry a line, "MAILBOX<TAB>IDENTIFIER<TAB>RIGHTS" (RIGHTS in RFC 4314 letters, "c" and
** "d" included; an identifier is a user name, "anyone", or either after a "-" for negative
** rights); blank lines and lines starting with '#' are comments. *v gets the entries (NULL
** and 0 if there is no file). Returns an IMAPMEM_ code.
*/
static void acl_lines_free(struct acl_line *v, size_t n) {
  for (size_t i = 0; v && i < n; i++) {
    free(v[i].mailbox);
    free(v[i].id);
  }
  free(v);
}

static int mbox_read_acl(const char *dir, struct acl_line **v, size_t *n, char *err,
                         size_t errcap) {
  struct side_file f;
  const char *p;
  size_t k, cap = 0;
  *v = NULL;
  *n = 0;
  int got = side_file_open(&f, dir, ".acl", err, errcap);
  if (got <= 0) return got < 0 ? IMAPMEM_IO : IMAPMEM_OK;
  int rc = IMAPMEM_OK;
  while (rc == IMAPMEM_OK && side_file_line(&f, &p, &k)) {
    const char *t1 = memchr(p, '\t', k);
    const char *t2 = t1 ? memchr(t1 + 1, '\t', k - (size_t)(t1 + 1 - p)) : NULL;
    unsigned rights = 0;
    char bad = 0, name[MAX_MAILBOX_NAME + 1];
    if (k == 0 || p[0] == '#') continue;
    if (!t1 || !t2 || t1 == p || t2 == t1 + 1 || (size_t)(t1 - p) > MAX_MAILBOX_NAME) {
      snprintf(err, errcap, "%.300s:%d: expected MAILBOX<TAB>IDENTIFIER<TAB>RIGHTS", f.path, f.line);
      rc = IMAPMEM_PARSE;
      break;
    }
    if (!rights_parse(t2 + 1, k - (size_t)(t2 + 1 - p), &rights, &bad)) {
      snprintf(err, errcap, "%.300s:%d: '%c' is no RFC 4314 right", f.path, f.line, bad);
      rc = IMAPMEM_PARSE;
      break;
    }
    snprintf(name, sizeof name, "%.*s", (int)(t1 - p), p);
    mailbox_canonical(name, name, sizeof name);
    char *mb = mem_strdup(name), *id = mem_strndup(t1 + 1, (size_t)(t2 - t1 - 1));
    if (!mb || !id || !mem_grow(v, &cap, *n + 1, sizeof **v)) {
      free(mb);
      free(id);
      snprintf(err, errcap, "%.300s: out of memory", f.path);
      rc = IMAPMEM_NOMEM;
      break;
    }
    (*v)[*n].mailbox = mb;
    (*v)[*n].id = id;
    (*v)[(*n)++].rights = rights;
  }
  free(f.data);
  if (rc != IMAPMEM_OK) {
    acl_lines_free(*v, *n);
    *v = NULL;
    *n = 0;
  }
  return rc;
}

/*
** Does every entry name a mailbox that the load will give u (one of list's, or a level
** above one) or that u has already? Checked before anything is added. IMAPMEM_PARSE if not.
*/
static int mbox_check_acl(struct user *u, const struct mbox_batch *list,
                          const struct acl_line *v, size_t n, const char *dir, char *err,
                          size_t errcap) {
  for (size_t i = 0; i < n; i++) {
    size_t len = strlen(v[i].mailbox);
    int found = 0;
    for (const struct mbox_batch *b = list; b && !found; b = b->next)
      found = strncmp(b->mailbox, v[i].mailbox, len) == 0 &&
              (b->mailbox[len] == 0 || b->mailbox[len] == '/');
    if (!found) {
      pthread_mutex_lock(&u->lock);
      found = user_mailbox_locked(u, v[i].mailbox) != NULL;
      pthread_mutex_unlock(&u->lock);
    }
    if (!found) {
      snprintf(err, errcap, "%.300s/.acl: no mailbox %.200s", dir, v[i].mailbox);
      return IMAPMEM_PARSE;
    }
  }
  return IMAPMEM_OK;
}

/* Give u's mailboxes the entries (after mbox_commit). An IMAPMEM_ code. */
static int mbox_commit_acl(struct user *u, const struct acl_line *v, size_t n) {
  int ok = 1;
  pthread_mutex_lock(&u->lock);
  for (size_t i = 0; i < n && ok; i++)
    ok = user_set_acl_locked(u, v[i].mailbox, v[i].id, v[i].rights) != 0;
  pthread_mutex_unlock(&u->lock);
  return ok ? IMAPMEM_OK : IMAPMEM_NOMEM;
}

/*
** Add every batch to the user's mailboxes, creating them as needed. A mailbox without
** enough UIDs left (IMAPMEM_ERROR, the reason in err) is found before anything is added;
** only memory running out while creating a mailbox can leave part of a load behind.
** A mailbox that gets its first messages here takes its UIDVALIDITY from X-IMAPbase, else
** from `uidvalidity` if not 0 (--uidvalidity), else from its fixture's bytes. The names in
** subs are subscribed to.
*/
static int mbox_commit_locked(struct user *u, struct mbox_batch *list, uint32_t uidvalidity,
                              char **subs, size_t nsubs, char *err, size_t errcap) {
  int rc = IMAPMEM_OK;
  for (size_t i = 0; i < nsubs && rc == IMAPMEM_OK; i++)
    if (!user_subscribe_locked(u, subs[i])) {
      snprintf(err, errcap, "out of memory");
      rc = IMAPMEM_NOMEM;
    }
  /* First make sure every batch fits (UIDs left, room in the array), so that a load that
     cannot complete adds nothing at all. */
  for (struct mbox_batch *b = list; b && rc == IMAPMEM_OK; b = b->next) {
    struct mailbox *mb = user_mailbox_locked(u, b->mailbox);
    if (!mb || !b->n) continue;
    pthread_mutex_lock(&mb->lock);
    int fresh = mb->count == 0 && mb->uidnext == 1;
    if (!fresh && (uint64_t)mb->uidnext + b->n >= UINT32_MAX) {
      snprintf(err, errcap, "mailbox %.200s has no UIDs left for %zu more messages",
               b->mailbox, b->n);
      rc = IMAPMEM_ERROR;
    } else if (!mem_grow(&mb->msgs, &mb->cap, mb->count + b->n, sizeof mb->msgs[0])) {
      snprintf(err, errcap, "out of memory");
      rc = IMAPMEM_NOMEM;
    }
    pthread_mutex_unlock(&mb->lock);
  }
  for (struct mbox_batch *b = list; b && rc == IMAPMEM_OK; b = b->next) {
    int exists;
    struct mailbox *mb = user_mailbox_locked(u, b->mailbox);
    if (!mb || (!mb->selectable && b->selectable))
      mb = user_create_locked(u, b->mailbox, b->selectable,
                              uidvalidity ? uidvalidity : b->content_validity, &exists);
    if (!mb) {
      snprintf(err, errcap, "out of memory");
      rc = IMAPMEM_NOMEM;
      break;
    }
    pthread_mutex_lock(&mb->lock);
    int fresh = mb->count == 0 && mb->uidnext == 1;
    /* X-UID values are honoured when every message has one and they ascend */
    int use_xuid = fresh && b->n > 0;
    for (size_t i = 0; i < b->n && use_xuid; i++)
      use_xuid = b->m[i].xuid > 0 && (i == 0 || b->m[i].xuid > b->m[i - 1].xuid);
    if (fresh && b->has_base) mb->uidvalidity = b->base_validity ? b->base_validity : 1;
    else if (fresh && b->n) mb->uidvalidity = uidvalidity ? uidvalidity : b->content_validity;
    if (fresh) mailbox_make_id(mb, b->base_mailboxid);   /* its UIDVALIDITY is final now */
    if (b->base_keywords) {
      const char *k = b->base_keywords;
      while (*k) {
        while (*k == ' ' || *k == ',') k++;
        size_t n = strcspn(k, " ,");
        if (is_keyword(k, n)) mailbox_keyword(mb, k, n, 1);
        k += n;
      }
    }
    for (size_t i = 0; i < b->n; i++) {
      struct pending *pm = &b->m[i];
      uint64_t kw = 0;
      for (const char *k = pm->keywords; k && *k;) {
        while (*k == ' ' || *k == ',' || *k == '\t') k++;
        size_t n = strcspn(k, " ,\t");   /* one IMAP could not show is dropped */
        int bit = is_keyword(k, n) ? mailbox_keyword(mb, k, n, 1) : -1;
        if (bit >= 0) kw |= (uint64_t)1 << bit;
        k += n;
      }
      if (use_xuid) mb->uidnext = pm->xuid;
      if (!mailbox_append(mb, msgdata_ref(pm->d), pm->flags, kw, pm->internaldate, pm->tz)) {
        msgdata_unref(pm->d);
        rc = mailbox_uids_exhausted(mb) ? IMAPMEM_ERROR : IMAPMEM_NOMEM;
        snprintf(err, errcap, "%s", rc == IMAPMEM_ERROR ? "a mailbox used its last UID"
                                                        : "out of memory");
        break;
      }
    }
    if (fresh && b->has_base && b->base_next > mb->uidnext) mb->uidnext = b->base_next;
    if (fresh) {             /* MODSEQs as saved; a fixture without them starts at 1 */
      uint64_t highest = b->base_modseq > 1 ? b->base_modseq : 1;
      for (size_t i = 0; i < mb->count; i++) {
        uint64_t v = i < b->n && b->m[i].modseq ? b->m[i].modseq : 1;
        mb->msgs[i].modseq = v;
        if (v > highest) highest = v;
      }
      mb->modseq = highest;
      mailbox_forget_expunged(mb);
      mailbox_relink(mb);
    }
    pthread_mutex_unlock(&mb->lock);
  }
  return rc;
}

/*
** Commit a load to the live mailboxes, and the same to the baseline, so that
** imapmem_reset() returns to what was loaded and never to what clients changed before a
** later load. The baseline's set stands in for the live one while u->lock is held, so
** that one commit serves both; message bytes are shared, not copied.
*/
static int mbox_commit(struct user *u, struct mbox_batch *list, uint32_t uidvalidity,
                       char **subs, size_t nsubs, char *err, size_t errcap) {
  pthread_mutex_lock(&u->lock);
  int rc = mbox_commit_locked(u, list, uidvalidity, subs, nsubs, err, errcap);
  if (rc == IMAPMEM_OK) {
    struct mailbox_set live = u->live;
    u->live = u->base;
    u->base = live;
    rc = mbox_commit_locked(u, list, uidvalidity, subs, nsubs, err, errcap);
    u->base = u->live;
    u->live = live;
  }
  pthread_mutex_unlock(&u->lock);
  return rc;
}

/* ------------------------------------------------------------------------- */
/*
** Saving: each mailbox becomes an mbox file in the fixture layout, with the flag and UID
** headers the loader reads back (X-IMAPbase on the first message, then Status,
** X-Status, X-Keywords and X-UID on each), LF line ends and mboxrd ">From " quoting.
*/
static int mkdir_p(const char *path) {
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s", path);
  for (char *p = tmp + 1; *p; p++) {
    if (*p != '/') continue;
    *p = 0;
    if (mkdir(tmp, 0777) < 0 && errno != EEXIST) return 0;
    *p = '/';
  }
  return mkdir(tmp, 0777) == 0 || errno == EEXIST;
}

/*
** Write bytes as mbox lines: each line ends in LF, and one ending in ^>*From is quoted
** once more (mboxrd). The loader turns every line X back into X plus CRLF after taking
** off one CR before the LF; so a line written is its content X, plus a CR if X itself
** ends in CR (a CR that belongs to the text). A last piece without a line break is
** written as a line too; X-Imapmem-Eol tells the loader to take its break off again.
*/
static void mbox_put_lines(struct buf *out, const char *p, size_t n) {
  const char *end = p + n;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *le = nl ? nl : end;
    const char *ce = nl && le > p && le[-1] == '\r' ? le - 1 : le;   /* X ends at ce */
    const char *q = p;
    while (q < ce && *q == '>') q++;
    if (ce - q >= 5 && memcmp(q, "From ", 5) == 0) buf_addc(out, '>');
    buf_add(out, p, (size_t)(ce - p));
    if (ce > p && ce[-1] == '\r') buf_addc(out, '\r');
    buf_addc(out, '\n');
    p = nl ? nl + 1 : end;
  }
}

/*
** The X-Imapmem-Eol value for a message whose line breaks are not all CRLF (a client may
** APPEND anything), so that it reloads byte for byte: "lf" (every break is a bare LF) or
** "lf=" and the numbers of the lines that end in a bare LF ("lf=2,5-7"), and "noeol" if
** the message does not end in a line break. Empty for the usual CRLF message.
*/
static void mbox_eol_spec(struct buf *out, const char *p, size_t n) {
  size_t line = 0, bare = 0, run_from = 0;
  size_t at = out->len;
  for (const char *q = p, *e = p + n; (q = memchr(q, '\n', (size_t)(e - q))); q++) {
    line++;
    int is_bare = q == p || q[-1] != '\r';
    if (is_bare && !run_from) run_from = line;
    if (!is_bare && run_from) {              /* a run of bare lines ends before this one */
      buf_printf(out, "%s%zu", bare++ ? "," : "lf=", run_from);
      if (line - 1 > run_from) buf_printf(out, "-%zu", line - 1);
      run_from = 0;
    }
  }
  if (run_from) {
    buf_printf(out, "%s%zu", bare++ ? "," : "lf=", run_from);
    if (line > run_from) buf_printf(out, "-%zu", line);
  }
  if (bare == 1 && run_from == 1) {          /* every break is bare: say so briefly */
    out->len = at;
    buf_adds(out, "lf");
  }
  if (n == 0 || p[n - 1] != '\n') buf_adds(out, out->len > at ? " noeol" : "noeol");
  if (out->p) out->p[out->len] = 0;
}

static void mbox_put_message(struct buf *out, const struct mailbox *mb, const struct message *m,
                             int first) {
  static const char *const wday[7] = {"Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"};
  int64_t secs, days = day_of(m->internaldate, m->tz, &secs);
  int y, mo, d, atz = m->tz < 0 ? -m->tz : m->tz;
  civil_from_days(days, &y, &mo, &d);
  buf_printf(out, "From imapmem %s %s %2d %02d:%02d:%02d %04d %c%02d%02d\n",
             wday[((days % 7) + 7) % 7], month_names[mo - 1], d, (int)(secs / 3600),
             (int)(secs / 60 % 60), (int)(secs % 60), y, m->tz < 0 ? '-' : '+', atz / 60, atz % 60);
  const struct msgdata *md = m->data;
  size_t hl = md->hdr_len, cut = hl;   /* the flag headers go just before the blank line */
  if (hl >= 1 && md->bytes[hl - 1] == '\n') {
    cut = hl - 1;
    if (cut && md->bytes[cut - 1] == '\r') cut--;
    if (cut != 0 && md->bytes[cut - 1] != '\n') cut = hl;   /* no blank line after all */
  }
  for (const char *p = md->bytes, *e = md->bytes + cut; p < e;) {   /* the header, by line */
    const char *nl = memchr(p, '\n', (size_t)(e - p));
    size_t len = nl ? (size_t)(nl - p) + 1 : (size_t)(e - p);
    if (*p != ' ' && *p != '\t' && mbox_header_kind(p, len) != HDR_KEEP)
      buf_adds(out, SAVED_PREFIX);
    mbox_put_lines(out, p, len);
    p += len;
  }
  if (first) {
    buf_printf(out, "X-IMAPbase: %u %u", mb->uidvalidity, mb->uidnext - 1);   /* last UID */
    for (int i = 0; i < mb->nkeywords; i++) buf_printf(out, " %s", mb->keywords[i]);
    buf_printf(out, "\nX-Imapmem-Highestmodseq: %llu\n", (unsigned long long)mb->modseq);
    buf_printf(out, "X-Imapmem-Mailboxid: %s\n", mb->id);
  }
  uint32_t f = m->flags;
  if ((f & FLAG_SEEN) || !(f & FLAG_RECENT))   /* no Status at all: new and \Recent */
    buf_printf(out, "Status: %s%s\n", f & FLAG_SEEN ? "R" : "", f & FLAG_RECENT ? "" : "O");
  if (f & (FLAG_ANSWERED | FLAG_FLAGGED | FLAG_DRAFT | FLAG_DELETED))
    buf_printf(out, "X-Status: %s%s%s%s\n", f & FLAG_ANSWERED ? "A" : "",
               f & FLAG_FLAGGED ? "F" : "", f & FLAG_DRAFT ? "T" : "", f & FLAG_DELETED ? "D" : "");
  if (m->keywords) {
    buf_adds(out, "X-Keywords:");
    for (int i = 0; i < mb->nkeywords; i++)
      if (m->keywords >> i & 1) buf_printf(out, " %s", mb->keywords[i]);
    buf_addc(out, '\n');
  }
  buf_printf(out, "X-UID: %u\n", m->uid);
  buf_printf(out, "X-Imapmem-Modseq: %llu\n", (unsigned long long)m->modseq);
  size_t at = out->len;
  buf_adds(out, "X-Imapmem-Eol: ");
  size_t spec = out->len;
  mbox_eol_spec(out, md->bytes, md->size);
  if (out->len == spec) out->len = at;       /* CRLF throughout: no header */
  else buf_addc(out, '\n');
  mbox_put_lines(out, md->bytes + cut, md->size - cut);
  buf_addc(out, '\n');       /* the blank line before the next From line */
}

/* Write one mailbox to path (a \Noselect level becomes a directory). err on failure. */
static int mbox_save_mailbox(struct mailbox *mb, const char *name, const char *dir, char *err,
                             size_t errcap) {
  char path[4096];
  int n = snprintf(path, sizeof path, "%s/%s", dir, name);
  if (n < 0 || (size_t)n + 6 > sizeof path) {
    snprintf(err, errcap, "%.200s: path too long", dir);
    return IMAPMEM_IO;
  }
  for (const char *c = name; *c; c++)       /* never write outside dir */
    if ((c == name || c[-1] == '/') && c[0] == '.' && (c[1] == '/' || !c[1] ||
                                                    (c[1] == '.' && (c[2] == '/' || !c[2])))) {
      snprintf(err, errcap, "mailbox %.200s: a name with . or .. levels cannot be saved", name);
      return IMAPMEM_IO;
    }
  char *slash = strrchr(path, '/');
  *slash = 0;
  int ok = mkdir_p(path);
  *slash = '/';
  if (ok && !mb->selectable) ok = mkdir_p(path);
  if (!ok) {
    snprintf(err, errcap, "%.300s: cannot create directory: %s", path, strerror(errno));
    return IMAPMEM_IO;
  }
  if (!mb->selectable) return IMAPMEM_OK;
  strcat(path, ".mbox");
  struct buf out = {0};
  pthread_mutex_lock(&mb->lock);
  for (size_t i = 0; i < mb->count; i++) mbox_put_message(&out, mb, &mb->msgs[i], i == 0);
  if (mb->count == 0) {      /* no message to carry X-IMAPbase: UW imapd's pseudo-message */
    buf_printf(&out, "From MAILER-DAEMON Thu Jan  1 00:00:00 1970\n"
                     "From: Mail System Internal Data <MAILER-DAEMON@imapmem>\n"
                     "Subject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\n"
                     "X-IMAP: %u %u", mb->uidvalidity, mb->uidnext - 1);
    for (int i = 0; i < mb->nkeywords; i++) buf_printf(&out, " %s", mb->keywords[i]);
    buf_printf(&out, "\nX-Imapmem-Highestmodseq: %llu", (unsigned long long)mb->modseq);
    buf_printf(&out, "\nX-Imapmem-Mailboxid: %s", mb->id);
    buf_adds(&out, "\nStatus: RO\n\nThis text is part of the internal format of your mail "
                   "folder, and is not\na real message.\n\n");
  }
  pthread_mutex_unlock(&mb->lock);
  if (out.oom) {
    buf_free(&out);
    snprintf(err, errcap, "%.300s: out of memory", path);
    return IMAPMEM_NOMEM;
  }
  FILE *f = fopen(path, "wb");
  int rc = IMAPMEM_OK;
  if (!f || (out.len && fwrite(out.p, 1, out.len, f) != out.len) || fclose(f) != 0) {
    snprintf(err, errcap, "%.300s: cannot write: %s", path, strerror(errno));
    rc = IMAPMEM_IO;
  }
  buf_free(&out);
  return rc;
}

/*
** Remove what an earlier save left in dir that is no mailbox now (a deleted or renamed
** one): *.mbox files and emptied folders of the fixture layout. Other files are left.
*/
static void mbox_prune(const char *dir, const char *prefix, struct mailbox **list, char **names,
                       size_t n, int depth) {
  DIR *d = depth < 32 ? opendir(dir) : NULL;
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    char path[4096], name[MAX_MAILBOX_NAME + 8];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    if (stat(path, &st) < 0) continue;
    int is_mbox = !S_ISDIR(st.st_mode) && has_suffix(e->d_name, ".mbox");
    snprintf(name, sizeof name, "%s%.*s", prefix,
             (int)(strlen(e->d_name) - (is_mbox ? 5 : 0)), e->d_name);
    if (!*prefix && is_mbox && name_is_inbox(name, strlen(name))) strcpy(name, "INBOX");
    long k = -1;
    for (size_t i = 0; i < n && k < 0; i++)
      if (strcmp(names[i], name) == 0) k = (long)i;
    if (S_ISDIR(st.st_mode)) {
      char sub[MAX_MAILBOX_NAME + 10];
      snprintf(sub, sizeof sub, "%s/", name);
      mbox_prune(path, sub, list, names, n, depth + 1);
      if (k < 0) rmdir(path);        /* only succeeds if nothing else is in it */
    } else if (is_mbox && (k < 0 || !list[k]->selectable)) {
      unlink(path);
    }
  }
  closedir(d);
}

/*
** A fixture folder's special-use roles: ".special-use" in the folder itself, one mailbox a
** line, "NAME:ROLES" as --special-use takes it: the name as LIST shows it, split at the
** last ':', and the roles separated by spaces ("Sent Items:\Sent"; "Sent:" for none).
** Blank lines and lines starting with '#' are skipped. A name must be a mailbox of the
** folder (list) or INBOX. *names and *uses get them (NULL and 0 if there is no file).
** Returns an IMAPMEM_ code.
*/
static int mbox_read_special_use(const char *dir, const struct mbox_batch *list, char ***names,
                                 unsigned **uses, size_t *n, char *err, size_t errcap) {
  struct side_file f;
  const char *p;
  size_t k, cap = 0, ucap = 0;
  *names = NULL;
  *uses = NULL;
  *n = 0;
  int got = side_file_open(&f, dir, ".special-use", err, errcap);
  if (got <= 0) return got < 0 ? IMAPMEM_IO : IMAPMEM_OK;
  int rc = IMAPMEM_OK;
  while (rc == IMAPMEM_OK && side_file_line(&f, &p, &k)) {
    char text[MAX_MAILBOX_NAME + 256], name[MAX_MAILBOX_NAME + 1];
    const char *bad;
    size_t badlen;
    unsigned use;
    const struct mbox_batch *b = list;
    if (k == 0 || p[0] == '#') continue;
    snprintf(text, sizeof text, "%.*s", (int)(k < sizeof text ? k : sizeof text - 1), p);
    char *colon = strrchr(text, ':');
    if (k >= sizeof text || !colon || colon == text || colon - text > MAX_MAILBOX_NAME) {
      snprintf(err, errcap, "%.300s:%d: expected MAILBOX:ROLES (Sent:\\Sent)", f.path, f.line);
      rc = IMAPMEM_PARSE;
      break;
    }
    *colon = 0;
    mailbox_canonical(text, name, sizeof name);
    while (b && strcmp(b->mailbox, name) != 0) b = b->next;
    if (!b && strcmp(name, "INBOX") != 0) {
      snprintf(err, errcap, "%.300s:%d: no mailbox %.200s in this folder", f.path, f.line, name);
      rc = IMAPMEM_PARSE;
      break;
    }
    if (!special_use_parse(colon + 1, &use, &bad, &badlen)) {
      snprintf(err, errcap, "%.300s:%d: not a special-use attribute: %.*s", f.path, f.line,
               (int)(badlen < 100 ? badlen : 100), bad);
      rc = IMAPMEM_PARSE;
      break;
    }
    char *copy = mem_strdup(name);
    if (!copy || !mem_grow(names, &cap, *n + 1, sizeof **names) ||
        !mem_grow(uses, &ucap, *n + 1, sizeof **uses)) {
      free(copy);
      snprintf(err, errcap, "%.300s: out of memory", f.path);
      rc = IMAPMEM_NOMEM;
      break;
    }
    (*names)[*n] = copy;
    (*uses)[(*n)++] = use;
  }
  free(f.data);
  return rc;
}

/*
** Write dir/name, a file that goes beside the mailboxes (.special-use, .acl): header, then
** what lines() writes for each mailbox of u (under u's lock; it returns how many lines),
** or remove the file when there are no lines, so that a stale one brings nothing back.
*/
static int mbox_save_side_file(struct user *u, const char *dir, const char *name,
                               const char *header,
                               size_t (*lines)(const struct mailbox *, struct buf *),
                               char *err, size_t errcap) {
  struct buf out = {0};
  size_t n = 0;
  buf_adds(&out, header);
  pthread_mutex_lock(&u->lock);
  for (size_t i = 0; i < u->live.n; i++) n += lines(u->live.list[i], &out);
  pthread_mutex_unlock(&u->lock);
  char path[4096 + 32];
  snprintf(path, sizeof path, "%.4096s/%.16s", dir, name);
  int rc = IMAPMEM_OK;
  if (out.oom) {
    snprintf(err, errcap, "out of memory");
    rc = IMAPMEM_NOMEM;
  } else if (!n) {
    unlink(path);
  } else {
    FILE *f = fopen(path, "wb");
    int wrote = f && fwrite(out.p, 1, out.len, f) == out.len;
    if (f && fclose(f) != 0) wrote = 0;
    if (!wrote) {
      snprintf(err, errcap, "%.300s: cannot write: %s", path, strerror(errno));
      rc = IMAPMEM_IO;
    }
  }
  buf_free(&out);
  return rc;
}

/*
** Write the roles set explicitly (use_set) of u's mailboxes to dir/.special-use, in the
** form mbox_read_special_use reads, or remove the file when there are none, so that a
** stale one brings no old roles back.
*/
static size_t special_use_lines(const struct mailbox *mb, struct buf *out) {
  if (!mb->use_set) return 0;
  buf_printf(out, "%s:", mb->name);
  for (int k = 0, first = 1; k < USE_ROLES; k++)
    if (mb->use >> k & 1) {
      buf_printf(out, "%s%s", first ? "" : " ", special_use_names[k]);
      first = 0;
    }
  buf_adds(out, "\n");
  return 1;
}

static int mbox_save_special_use(struct user *u, const char *dir, char *err, size_t errcap) {
  return mbox_save_side_file(u, dir, ".special-use",
                             "# imapmem special-use roles: MAILBOX:ROLES (README, Fixtures)\n",
                             special_use_lines, err, errcap);
}

/* Write every mailbox of u into dir. */
static int mbox_save_user(struct user *u, const char *dir, char *err, size_t errcap) {
  if (!mkdir_p(dir)) {
    snprintf(err, errcap, "%.300s: cannot create directory: %s", dir, strerror(errno));
    return IMAPMEM_IO;
  }
  pthread_mutex_lock(&u->lock);   /* names change under this lock (RENAME): copy them */
  size_t n = u->live.n;
  struct mailbox **list = mem_calloc(n ? n : 1, sizeof *list);
  char **names = mem_calloc(n ? n : 1, sizeof *names);
  struct buf subs = {0};     /* .subscriptions as Dovecot writes it: TAB for the separator */
  buf_adds(&subs, "V\t2\n\n");
  for (size_t i = 0; i < u->live.nsubs; i++) {
    size_t at = subs.len;
    buf_printf(&subs, "%s\n", u->live.subs[i]);
    for (size_t k = at; k + 1 < subs.len; k++)
      if (subs.p[k] == '/') subs.p[k] = '\t';
  }
  size_t nsubs = u->live.nsubs;
  int oom = !list || !names || subs.oom;
  for (size_t i = 0; !oom && i < n; i++) {
    list[i] = mailbox_ref(u->live.list[i]);
    oom = !(names[i] = mem_strdup(u->live.list[i]->name));
  }
  pthread_mutex_unlock(&u->lock);
  int rc = oom ? IMAPMEM_NOMEM : IMAPMEM_OK;
  if (oom) snprintf(err, errcap, "out of memory");
  for (size_t i = 0; !oom && i < n; i++) {   /* one mailbox failing does not stop the rest */
    char why[600];
    int r = mbox_save_mailbox(list[i], names[i], dir, why, sizeof why);
    if (r != IMAPMEM_OK && rc == IMAPMEM_OK) {
      rc = r;
      snprintf(err, errcap, "%s", why);
    }
  }
  if (!oom) mbox_prune(dir, "", list, names, n, 0);
  char path[4096 + 16];
  snprintf(path, sizeof path, "%.4096s/.subscriptions", dir);
  if (!oom && nsubs == 0) unlink(path);   /* none: a stale file would bring old ones back */
  FILE *f = !oom && nsubs ? fopen(path, "wb") : NULL;
  if (!oom && nsubs && (!f || fwrite(subs.p, 1, subs.len, f) != subs.len || fclose(f) != 0) &&
      rc == IMAPMEM_OK) {
    snprintf(err, errcap, "%.300s: cannot write: %s", path, strerror(errno));
    rc = IMAPMEM_IO;
  }
  mailboxes_free(list, n);
  strings_free(names, n);
  buf_free(&subs);
  char why[600];
  int r = oom ? IMAPMEM_OK : mbox_save_special_use(u, dir, why, sizeof why);
  if (r != IMAPMEM_OK && rc == IMAPMEM_OK) {
    rc = r;
    snprintf(err, errcap, "%s", why);
  }
  return rc;
}

/*
** Write u's access control lists to dir/.acl in the format mbox_read_acl reads (and
** remove a stale one when there are none), so that a saved folder reloads with them.
*/
static size_t acl_lines(const struct mailbox *mb, struct buf *out) {
  size_t n = 0;
  for (size_t k = 0; k < mb->nacl; k++) {
    char letters[16];
    if (strpbrk(mb->acl[k].id, "\t\r\n")) continue;   /* the format cannot hold it */
    rights_format(mb->acl[k].rights, letters);
    buf_printf(out, "%s\t%s\t%s\n", mb->name, mb->acl[k].id, letters);
    n++;
  }
  return n;
}

static int mbox_save_acl(struct user *u, const char *dir, char *err, size_t errcap) {
  return mbox_save_side_file(u, dir, ".acl", "# MAILBOX<TAB>IDENTIFIER<TAB>RIGHTS (RFC 4314)\n",
                             acl_lines, err, errcap);
}

/*
** ===========================================================================
** 5  The command parser
** ===========================================================================
** Owns: struct parser, a cursor over one complete command that section 10 has read
** (literals inline, each as "{n}\r\n" or "{n+}\r\n" followed by its n bytes, already
** checked against the limits).
** Calls: sections 1 and 3 (INBOX's canonical name).
** Locking: none.
**
** Each getter follows RFC 3501 section 9 for one production. It returns 1 and advances,
** or returns 0 with ps->err saying what was expected (the text of the BAD reply).
** Views (struct str) point into the command buffer; unescaped quoted strings are copied
** into the command's arena. Both live until the tagged reply is sent.
*/
static int parse_fail(struct parser *ps, const char *what) {
  ps->err = what;
  return 0;
}

static int parse_at_end(struct parser *ps) {
  return ps->p >= ps->end;
}

static int parse_peek(struct parser *ps, char c) {
  return ps->p < ps->end && *ps->p == c;
}

static int parse_char(struct parser *ps, char c) {
  if (!parse_peek(ps, c)) return 0;
  ps->p++;
  return 1;
}

static int parse_sp(struct parser *ps) {
  return parse_char(ps, ' ') || parse_fail(ps, "Missing argument (expected a space)");
}

static int parse_end(struct parser *ps) {
  return parse_at_end(ps) || parse_fail(ps, "Unexpected extra arguments");
}

/* A run of chars accepted by ok(); at least one. */
static int parse_run(struct parser *ps, int (*ok)(int), struct str *out) {
  const char *s = ps->p;
  while (ps->p < ps->end && ok((unsigned char)*ps->p)) ps->p++;
  if (ps->p == s) return 0;
  *out = str_make(s, (size_t)(ps->p - s));
  return 1;
}

static int parse_atom(struct parser *ps, struct str *out) {
  return parse_run(ps, is_atom_char, out) || parse_fail(ps, "Expected an atom");
}

static int is_astring_char(int c) {
  return is_atom_char(c) || c == ']';
}

static int is_tag_char(int c) {
  return is_astring_char(c) && c != '+';
}

static int parse_tag(struct parser *ps, struct str *out) {
  return parse_run(ps, is_tag_char, out);
}

static int parse_literal(struct parser *ps, struct str *out) {
  uint64_t n;
  size_t open = literal_opening(ps->p, (size_t)(ps->end - ps->p), &n);
  if (!open || n > (uint64_t)(ps->end - ps->p) - open) return parse_fail(ps, "Malformed literal");
  *out = str_make(ps->p + open, (size_t)n);
  ps->p += open + n;
  return 1;
}

static int parse_quoted(struct parser *ps, struct str *out) {
  if (!parse_char(ps, '"')) return 0;
  const char *s = ps->p;
  int escaped = 0;
  while (ps->p < ps->end && *ps->p != '"') {
    if (*ps->p == '\r' || *ps->p == '\n') return parse_fail(ps, "Line break in a quoted string");
    if (*ps->p == '\\') {
      ps->p++;
      if (ps->p >= ps->end || (*ps->p != '"' && *ps->p != '\\'))
        return parse_fail(ps, "Only \\\" and \\\\ may be escaped in a quoted string");
      escaped = 1;
    }
    ps->p++;
  }
  if (ps->p >= ps->end) return parse_fail(ps, "Unterminated quoted string");
  if (ps->utf8 && !utf8_valid(s, (size_t)(ps->p - s)))   /* RFC 6855 3: BAD */
    return parse_fail(ps, "8-bit bytes in a quoted string that are not UTF-8");
  const char *e = ps->p++;
  if (!escaped) {
    *out = str_make(s, (size_t)(e - s));
    return 1;
  }
  char *d = arena_alloc(ps->arena, (size_t)(e - s) + 1);
  if (!d) return parse_fail(ps, "Out of memory");
  size_t n = 0;
  for (const char *q = s; q < e; q++) {
    if (*q == '\\') q++;
    d[n++] = *q;
  }
  d[n] = 0;
  *out = str_make(d, n);
  return 1;
}

static int parse_string(struct parser *ps, struct str *out) {
  if (parse_peek(ps, '"')) return parse_quoted(ps, out);
  if (parse_peek(ps, '{')) return parse_literal(ps, out);
  return parse_fail(ps, "Expected a string");
}

static int parse_astring(struct parser *ps, struct str *out) {
  if (parse_peek(ps, '"') || parse_peek(ps, '{')) return parse_string(ps, out);
  return parse_run(ps, is_astring_char, out) || parse_fail(ps, "Expected a string or atom");
}

static int is_list_char(int c) {
  return is_astring_char(c) || c == '%' || c == '*';
}

/*
** A UTF-8 mailbox name (RFC 6855 3, RFC 9051 5.1), replaced by its modified UTF-7 form
** in the arena. 8-bit bytes that are not UTF-8 are BAD (RFC 6855 3).
*/
static int parse_mailbox_utf8(struct parser *ps, struct str *s) {
  const char *why = NULL;
  char *z = arena_strndup(ps->arena, s->p, s->len);
  if (!z) return parse_fail(ps, "Out of memory");
  const char *m = mutf7_from_utf8(ps->arena, z, &why);
  if (!m) return parse_fail(ps, why ? (strcmp(why, "not UTF-8") == 0 ?
                                       "Mailbox name is not UTF-8" :
                                       "Mailbox name may hold no control characters, U+2028 "
                                       "or U+2029 (RFC 6855 3)") : "Out of memory");
  *s = str_make(m, strlen(m));
  return 1;
}

/* list-mailbox: a pattern that may hold % and * (RFC 3501 6.3.8). */
static int parse_list_mailbox(struct parser *ps, struct str *out) {
  if (parse_peek(ps, '"') || parse_peek(ps, '{')) return parse_string(ps, out);
  return parse_run(ps, is_list_char, out) || parse_fail(ps, "Expected a mailbox pattern");
}

/* Zeroed memory in the command's arena for what the parser builds; NULL fails the parse. */
static void *parse_new(struct parser *ps, size_t n) {
  void *p = arena_alloc(ps->arena, n);
  if (p) memset(p, 0, n);
  else parse_fail(ps, "Out of memory");
  return p;
}

/* A NUL-terminated copy of a view, in the arena. */
static const char *parse_cstr(struct parser *ps, struct str s) {
  const char *p = arena_strndup(ps->arena, s.p, s.len);
  if (!p) parse_fail(ps, "Out of memory");
  return p;
}

/*
** A mailbox name: an astring, INBOX made canonical, a trailing '/' dropped. Names with
** NUL or line breaks, or longer than MAX_MAILBOX_NAME, are refused. In a UTF-8 session
** (ps->utf8) the name is UTF-8 and is stored in modified UTF-7.
*/
static int parse_mailbox(struct parser *ps, const char **out) {
  struct str s;
  if (!parse_astring(ps, &s)) return parse_fail(ps, "Expected a mailbox name");
  if (s.len > MAX_MAILBOX_NAME) return parse_fail(ps, "Mailbox name too long");
  for (size_t i = 0; i < s.len; i++)
    if (s.p[i] == 0 || s.p[i] == '\r' || s.p[i] == '\n')
      return parse_fail(ps, "Mailbox name contains a control character");
  if (ps->utf8 && !parse_mailbox_utf8(ps, &s)) return 0;
  if (s.len > MAX_MAILBOX_NAME) return parse_fail(ps, "Mailbox name too long");
  char canon[MAX_MAILBOX_NAME + 1];
  memcpy(canon, s.p, s.len);
  canon[s.len] = 0;
  while (s.len > 1 && canon[s.len - 1] == '/') canon[--s.len] = 0;
  mailbox_canonical(canon, canon, sizeof canon);
  *out = parse_cstr(ps, str_make(canon, strlen(canon)));
  return *out != NULL;
}

static int parse_number(struct parser *ps, uint32_t *out) {
  uint64_t v = 0;
  const char *s = ps->p;
  while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
    v = v * 10 + (uint64_t)(*ps->p++ - '0');
    if (v > UINT32_MAX) return parse_fail(ps, "Number too large");
  }
  if (ps->p == s) return parse_fail(ps, "Expected a number");
  *out = (uint32_t)v;
  return 1;
}

/* mod-sequence-valzer (RFC 7162 7): 0 to 2^63-1. */
static int parse_modseq(struct parser *ps, uint64_t *out) {
  uint64_t v = 0;
  const char *s = ps->p;
  while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
    uint64_t d = (uint64_t)(*ps->p++ - '0');
    if (v > (INT64_MAX - d) / 10) return parse_fail(ps, "Mod-sequence too large");
    v = v * 10 + d;
  }
  if (ps->p == s) return parse_fail(ps, "Expected a mod-sequence");
  *out = v;
  return 1;
}

static int parse_nz_number(struct parser *ps, uint32_t *out) {
  if (!parse_number(ps, out)) return 0;
  return *out > 0 || parse_fail(ps, "Expected a number greater than zero");
}

static int parse_seq_number(struct parser *ps, uint32_t *out) {
  if (parse_char(ps, '*')) {
    *out = 0;
    return 1;
  }
  return parse_nz_number(ps, out) || parse_fail(ps, "Invalid sequence set");
}

/*
** sequence-set (RFC 3501 9): ranges in any order; a:b with a > b means b:a. Or "$" alone
** (RFC 5182 3: seq-set =/ "$"), which section 6 fills with the saved search result.
*/
static int parse_seqset(struct parser *ps, struct seqset *out) {
  size_t cap = 0;
  out->r = NULL;
  out->n = 0;
  out->dollar = 0;
  if (parse_char(ps, '$')) {
    out->dollar = 1;
    if (ps->p < ps->end && *ps->p != ' ' && *ps->p != ')')
      return parse_fail(ps, "Invalid sequence set: \"$\" stands alone");
    return 1;
  }
  do {
    struct range r;
    if (!parse_seq_number(ps, &r.lo)) return 0;
    r.hi = r.lo;
    if (parse_char(ps, ':') && !parse_seq_number(ps, &r.hi)) return 0;
    if (r.lo && r.hi && r.lo > r.hi) {    /* with '*', seqset_resolve() orders them */
      uint32_t t = r.lo;
      r.lo = r.hi;
      r.hi = t;
    }
    if (out->n == cap) {
      size_t ncap = cap ? cap * 2 : 8;
      struct range *nr = arena_alloc(ps->arena, ncap * sizeof *nr);
      if (!nr) return parse_fail(ps, "Out of memory");
      if (out->n) memcpy(nr, out->r, out->n * sizeof *nr);
      out->r = nr;
      cap = ncap;
    }
    out->r[out->n++] = r;
  } while (parse_char(ps, ','));
  if (ps->p < ps->end && *ps->p != ' ' && *ps->p != ')')
    return parse_fail(ps, "Invalid sequence set");
  return 1;
}

static int cmp_range(const void *a, const void *b) {
  uint32_t x = ((const struct range *)a)->lo, y = ((const struct range *)b)->lo;
  return x < y ? -1 : x > y;
}

/*
** Replace '*' by max in every range (max 0: an empty mailbox has no '*'), then sort and
** merge the ranges, so that seqset_contains() is a binary search whatever the client sent.
*/
static void seqset_resolve(struct seqset *s, uint32_t max) {
  for (size_t i = 0; i < s->n; i++) {
    if (s->r[i].lo == 0) s->r[i].lo = max;
    if (s->r[i].hi == 0) s->r[i].hi = max;
    if (s->r[i].lo > s->r[i].hi) {
      uint32_t t = s->r[i].lo;
      s->r[i].lo = s->r[i].hi;
      s->r[i].hi = t;
    }
  }
  if (s->n < 2) return;
  qsort(s->r, s->n, sizeof s->r[0], cmp_range);
  size_t w = 0;
  for (size_t i = 1; i < s->n; i++) {
    if (s->r[w].hi != UINT32_MAX && s->r[i].lo > s->r[w].hi + 1) s->r[++w] = s->r[i];
    else if (s->r[i].hi > s->r[w].hi) s->r[w].hi = s->r[i].hi;
  }
  s->n = w + 1;
}

/*
** partial-range (RFC 9394 4): "lo:hi" or "-lo:-hi", nz-numbers, no '*'; 5:1 is 1:5 and
** -5:-1 is -1:-5.
*/
static int parse_partial(struct parser *ps, struct partial *out) {
  out->neg = parse_char(ps, '-');
  if (!parse_nz_number(ps, &out->lo) || !parse_char(ps, ':') ||
      parse_char(ps, '-') != out->neg || !parse_nz_number(ps, &out->hi))
    return parse_fail(ps, "Expected a partial range like 1:100 or -1:-100");
  if (ps->p < ps->end && *ps->p != ' ' && *ps->p != ')')
    return parse_fail(ps, "Expected a partial range like 1:100 or -1:-100");
  if (out->lo > out->hi) {
    uint32_t t = out->lo;
    out->lo = out->hi;
    out->hi = t;
  }
  return 1;
}

/*
** The results [*from, *to) of n (in mailbox order) that a partial range names (RFC 9394
** 3.1): the first result is 1, the last -1; what lies beyond the results is left out.
*/
static void partial_window(const struct partial *p, size_t n, size_t *from, size_t *to) {
  *from = *to = 0;
  if (p->lo > n) return;
  if (p->neg) {
    *from = p->hi >= n ? 0 : n - p->hi;
    *to = n - p->lo + 1;
  } else {
    *from = p->lo - 1;
    *to = p->hi < n ? p->hi : n;
  }
}

/* Is v in the set? The set has been through seqset_resolve(). */
static int seqset_contains(const struct seqset *s, uint32_t v) {
  size_t lo = 0, hi = s->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (s->r[mid].hi < v) lo = mid + 1;
    else hi = mid;
  }
  return lo < s->n && v >= s->r[lo].lo;
}

/* Flags: a system flag's bit, or 0 for a keyword (kw set) / an unknown \flag (-1). */
static int parse_flag_bit(struct str f) {
  static const struct { const char *name; int bit; } sys[] = {
    {"\\Seen", FLAG_SEEN}, {"\\Answered", FLAG_ANSWERED}, {"\\Flagged", FLAG_FLAGGED},
    {"\\Deleted", FLAG_DELETED}, {"\\Draft", FLAG_DRAFT}};
  for (size_t i = 0; i < sizeof sys / sizeof sys[0]; i++)
    if (str_ieq(f, sys[i].name)) return sys[i].bit;
  if (str_ieq(f, "\\Recent")) return -2;   /* may not be set by a client */
  return f.len && f.p[0] == '\\' ? -1 : 0;
}

struct flag_list {
  uint32_t flags;
  struct str kw[IMAPMEM_MAX_KEYWORDS];
  int nkw;
};

/*
** flag-list: "(" [flag *(SP flag)] ")". With bare, STORE's other form is accepted too:
** flag *(SP flag) without parentheses, running to the end of the command.
*/
static int parse_flags(struct parser *ps, struct flag_list *fl, int bare) {
  memset(fl, 0, sizeof *fl);
  int paren = parse_char(ps, '(');
  if (!paren && !bare) return parse_fail(ps, "Expected a flag list");
  if (paren && parse_char(ps, ')')) return 1;
  for (;;) {
    struct str f;
    const char *s = ps->p;
    if (parse_char(ps, '\\')) {
      struct str a;
      if (!parse_run(ps, is_atom_char, &a) && !parse_char(ps, '*'))
        return parse_fail(ps, "Invalid flag");
    }
    else if (!parse_run(ps, is_atom_char, &f)) return parse_fail(ps, "Invalid flag");
    f = str_make(s, (size_t)(ps->p - s));
    int bit = parse_flag_bit(f);
    if (bit == -1 || bit == -2) return parse_fail(ps, "Invalid flag: only \\Seen \\Answered "
                                                      "\\Flagged \\Deleted \\Draft and keywords");
    if (bit > 0) fl->flags |= (uint32_t)bit;
    else {
      int dup = 0;
      for (int i = 0; i < fl->nkw; i++) dup |= f.len == fl->kw[i].len &&
                                            strncasecmp(f.p, fl->kw[i].p, f.len) == 0;
      if (!dup) {
        if (fl->nkw == IMAPMEM_MAX_KEYWORDS) return parse_fail(ps, "Too many keywords");
        fl->kw[fl->nkw++] = f;
      }
    }
    if (!paren && parse_at_end(ps)) return 1;
    if (paren && parse_char(ps, ')')) return 1;
    if (!parse_sp(ps)) return 0;
  }
}

/* date-time (RFC 3501 9): "dd-Mon-yyyy hh:mm:ss +zzzz", day may be " d". */
static int parse_date_time(struct parser *ps, int64_t *t, int *tz) {
  struct str s;
  if (!parse_quoted(ps, &s) || s.len != 26)
    return parse_fail(ps, "Expected a date-time like \"25-Nov-2026 10:00:00 +0000\"");
  const char *p = s.p;
  long long day, year, hh, mm, ss;
  struct str d = str_make(p[0] == ' ' ? p + 1 : p, p[0] == ' ' ? 1 : 2);
  int mon = month_from_name(p + 3, 3);
  if (!parse_uint(d, 31, &day) || p[2] != '-' || !mon || p[6] != '-' ||
      !parse_uint(str_make(p + 7, 4), 9999, &year) || p[11] != ' ' ||
      !parse_uint(str_make(p + 12, 2), 23, &hh) || p[14] != ':' ||
      !parse_uint(str_make(p + 15, 2), 59, &mm) || p[17] != ':' ||
      !parse_uint(str_make(p + 18, 2), 60, &ss) || p[20] != ' ' ||
      !zone_numeric(str_make(p + 21, 5), tz) || day < 1 || day > days_in_month(year, mon))
    return parse_fail(ps, "Invalid date-time");
  *t = time_from_civil(year, mon, (int)day, hh, mm, ss, *tz);
  return 1;
}

/* date (RFC 3501 9): d-Mon-yyyy, quoted or not; returns days since the epoch. */
static int parse_date(struct parser *ps, int64_t *days) {
  struct str s;
  if (parse_peek(ps, '"')) {
    if (!parse_quoted(ps, &s)) return 0;
  } else if (!parse_run(ps, is_atom_char, &s)) {
    return parse_fail(ps, "Expected a date like 1-Feb-2026");
  }
  const char *d1 = memchr(s.p, '-', s.len);
  const char *d2 = d1 ? memchr(d1 + 1, '-', (size_t)(s.p + s.len - d1 - 1)) : NULL;
  long long day, year;
  int mon;
  if (!d1 || !d2 || d2 - d1 != 4 || !parse_uint(str_make(s.p, (size_t)(d1 - s.p)), 31, &day) ||
      !(mon = month_from_name(d1 + 1, 3)) ||
      !parse_uint(str_make(d2 + 1, (size_t)(s.p + s.len - d2 - 1)), 9999, &year) || day < 1 ||
      s.p + s.len - d2 - 1 != 4 || day > days_in_month(year, mon))
    return parse_fail(ps, "Invalid date: expected d-Mon-yyyy");
  *days = days_from_civil(year, mon, (int)day);
  return 1;
}

/*
** ===========================================================================
** 6  Responses and the session's view
** ===========================================================================
** Owns: what a session says (its output buffer, the tagged reply, the transcript) and its
** view of the selected mailbox (sequence numbers, and the untagged updates that keep them
** right: RFC 3501 5.2, 7.4.1), with what follows the view: "$", the saved search result
** (RFC 5182), resolved and cleared here, and the UPDATE contexts' results, which lose
** expunged messages here (RFC 5267 4.3.4). Bytes move through the session's struct
** session_io, which section 10 provides: nothing here touches a socket.
** Calls: sections 1, 2, 3 and 5 (of section 2, out_string for mailbox names).
** Locking: a session's view and output belong to its thread; the view is brought up to
** date under the selected mailbox's lock, taken only when the mailbox's change counters
** moved since the session last looked; publishing for imapmem_wait() takes the
** server's lock, never inside a mailbox's; the transcript takes the server's lock to
** read the callback.
*/
static void session_sendn(struct session *s, const void *p, size_t n) {
  buf_add(&s->out, p, n);
}

static void session_send(struct session *s, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  buf_vprintf(&s->out, fmt, ap);
  va_end(ap);
}

/* An item's name and its text as they are: a FETCH of every message's ENVELOPE and
   BODYSTRUCTURE sends megabytes of them, which printf would copy a byte at a time. */
static void session_send_item(struct session *s, const char *name, const char *text) {
  buf_adds(&s->out, name);
  buf_adds(&s->out, text);
}

/* sep (a byte, or 0 for none) and a number: SEARCH and SORT send thousands, and printf's
   machinery is most of what each costs */
static void session_send_number(struct session *s, char sep, unsigned long long v) {
  if (sep) buf_addc(&s->out, sep);
  buf_addu(&s->out, v);
}

/* Write what is buffered, through the session's connection. 0 if it is gone. */
static int session_flush(struct session *s) {
  return s->io->flush(s);
}

/* Large FETCH data goes straight from the message to the connection, uncopied. */
static void session_send_bulk(struct session *s, const char *p, size_t n) {
  if (n < 65536) session_sendn(s, p, n);
  else if (session_flush(s)) s->io->write(s, p, n);
}

/* Read a line from the client in the middle of a command (AUTHENTICATE, IDLE). */
static int session_read_line(struct session *s, struct buf *line, size_t max, int wake_ok) {
  return s->io->read_line(s, line, max, wake_ok);
}

/* ------------------------------------------------------------------------- */
/*
** The transcript (imapmem_set_trace, --trace): one callback per protocol line, literals
** shown by their size and passwords masked, so a reader sees IMAP happen.
*/
static void session_trace(struct session *s, char dir, const char *line, size_t n) {
  struct imapmem *srv = s->srv;
  pthread_mutex_lock(&srv->lock);
  imapmem_trace_fn *fn = srv->trace_fn;
  void *arg = srv->trace_arg;
  pthread_mutex_unlock(&srv->lock);
  if (fn) fn(arg, s->id, dir, line, n);
}

/*
** A continuation request or a status response (tagged or untagged OK, NO, BAD, BYE,
** PREAUTH)? Their text is plain TEXT-CHARs (RFC 3501 9), never a literal, even if it ends
** in something like "{12}" echoed from a client.
*/
static int line_is_status(const char *p, size_t n) {
  if (n >= 1 && p[0] == '+') return 1;
  const char *sp = memchr(p, ' ', n);
  if (!sp) return 0;
  struct str w = str_make(sp + 1, n - (size_t)(sp + 1 - p));
  const char *e = memchr(w.p, ' ', w.len);
  if (e) w.len = (size_t)(e - w.p);
  return str_ieq(w, "OK") || str_ieq(w, "NO") || str_ieq(w, "BAD") || str_ieq(w, "BYE") ||
         str_ieq(w, "PREAUTH");
}

/* Feed bytes the server writes; whole lines go to the transcript. */
static void session_trace_out(struct session *s, const char *p, size_t n) {
  struct buf *l = &s->trace_line;
  while (n) {
    if (s->trace_skip) {     /* inside a literal: count it, do not show it */
      size_t k = n < s->trace_skip ? n : s->trace_skip;
      s->trace_skip -= k;
      p += k;
      n -= k;
      continue;
    }
    const char *nl = memchr(p, '\n', n);
    size_t k = nl ? (size_t)(nl - p) + 1 : n;
    buf_add(l, p, k);
    p += k;
    n -= k;
    if (!nl) break;
    l->len -= l->len >= 2 && l->p[l->len - 2] == '\r' ? 2 : 1;
    uint64_t v;              /* a line ending "{n}" announces a literal */
    int plus;
    size_t at = line_is_status(l->p, l->len) ? l->len : literal_announced(l->p, l->len, &v, &plus);
    if (at < l->len) {
      l->len = at;
      buf_printf(l, "{%llu bytes}", (unsigned long long)v);
      s->trace_skip = (size_t)v;
      if (v) continue;       /* the line goes on after the literal */
    }
    session_trace(s, 'S', l->p ? l->p : "", l->len);
    buf_reset(l);
  }
}

/*
** The transcript of a command, one piece at a time as it is read: a piece ends where a
** synchronizing literal is announced, so the server's "+" comes in between, as on the
** wire. Literals appear as "{N bytes}" and everything after LOGIN's user name or
** AUTHENTICATE's mechanism as "***". s->trace_words counts the words of the command so
** far (0 at its start), and s->trace_secret says the rest is masked.
*/
static void session_trace_command(struct session *s, const char *p, size_t n) {
  struct buf t = {0};
  size_t i = 0;
  if (s->trace_secret) i = n;
  while (i < n) {
    uint64_t v;              /* {n}CRLF or {n+}CRLF, then n bytes */
    size_t open = p[i] == '{' ? literal_opening(p + i, n - i, &v) : 0;
    if (open) {
      buf_printf(&t, "{%llu bytes}", (unsigned long long)v);
      i = v <= n - i - open ? i + open + (size_t)v : n;
      continue;
    }
    if (p[i] == ' ' && ++s->trace_words == 2) {   /* after "tag NAME" */
      s->trace_secret = (t.len >= 5 && strncasecmp(t.p + t.len - 5, "LOGIN", 5) == 0) ||
                        (t.len >= 12 && strncasecmp(t.p + t.len - 12, "AUTHENTICATE", 12) == 0);
      s->trace_secret = s->trace_secret ? -1 : 0;  /* -1: masked from the next word on */
    } else if (p[i] == ' ' && s->trace_secret < 0) {
      buf_adds(&t, " ***");
      s->trace_secret = 1;
      break;
    }
    buf_addc(&t, p[i++]);
  }
  if (s->trace_secret > 0 && !t.len) buf_adds(&t, "***");
  session_trace(s, 'C', t.p ? t.p : "", t.len);
  buf_free(&t);
}

/* An event of the session itself (connect, disconnect, a fault), as a transcript line. */
static void PRINTF_LIKE(2, 3) session_trace_event(struct session *s, const char *fmt, ...) {
  if (!atomic_load(&s->srv->tracing)) return;
  char line[300];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  session_trace(s, '*', line, strlen(line));
}

/* Make the session's user, mailbox and IDLE state visible to imapmem_wait(). */
static void session_publish(struct session *s) {
  struct imapmem *srv = s->srv;
  pthread_mutex_lock(&srv->lock);
  if (s->user && s->pub_user != s->user)   /* the events imapmem_wait() can wait for */
    s->user->last_login = srv->last_login = ++srv->events;
  if (s->mb && s->pub_mb != s->mb) s->mb->last_select = ++srv->events;
  if (s->mb && s->in_idle && !s->pub_idle) s->mb->last_idle = ++srv->events;
  s->pub_user = s->user;
  s->pub_mb = s->mb;
  s->pub_idle = s->in_idle;
  pthread_mutex_unlock(&s->srv->lock);
  store_changed(s->srv);
}

static int PRINTF_LIKE(3, 4) cmd_reply(struct command *c, const char *status,
                                       const char *fmt, ...) {
  va_list ap, ap2;
  va_start(ap, fmt);
  va_copy(ap2, ap);
  int len = vsnprintf(c->small, sizeof c->small, fmt, ap);
  va_end(ap);
  c->text = c->small;        /* a long text ([MODIFIED set], say) goes in the arena */
  if (len > 0 && (size_t)len + 2 > sizeof c->small) {
    char *big = arena_alloc(c->ps.arena, (size_t)len + 2);
    if (big) {
      vsnprintf(big, (size_t)len + 1, fmt, ap2);
      c->text = big;
    }
  }
  va_end(ap2);
  for (char *p = c->text; *p; p++) {   /* RFC 3501 9: TEXT-CHAR is 7-bit, not CR or LF */
    if (*p == '\r' || *p == '\n') *p = ' ';
    if ((unsigned char)*p >= 0x80) *p = '?';
  }
  size_t n = strlen(c->text);          /* a text ending "{12}" (say, an echoed name) would */
  if (n && c->text[n - 1] == '}' && (c->text != c->small || n + 1 < sizeof c->small)) {
    c->text[n] = '.';                  /* look like a literal */
    c->text[n + 1] = 0;
  }
  c->status = status;
  return 0;
}
#define cmd_ok(c, ...) cmd_reply(c, "OK", __VA_ARGS__)
#define cmd_no(c, ...) cmd_reply(c, "NO", __VA_ARGS__)
#define cmd_bad(c, ...) cmd_reply(c, "BAD", __VA_ARGS__)

/* BAD with the parser's reason, for a command whose arguments did not parse. */
static int cmd_bad_args(struct command *c) {
  return cmd_bad(c, "%s %s", c->def->name, c->ps.err ? c->ps.err : "Invalid arguments");
}

/* ------------------------------------------------------------------------- */
/* The session's view of its selected mailbox. */

/* A flag-list: system flags, keywords (names[i] for bit i), and \Recent. */
static void flags_out(struct buf *b, uint32_t flags, uint64_t kw, char *const *names_kw,
                      int nkw, int recent) {
  static const char *const names[] = {"\\Seen", "\\Answered", "\\Flagged", "\\Deleted",
                                      "\\Draft"};
  int n = 0;
  buf_addc(b, '(');
  for (int i = 0; i < 5; i++)
    if (flags & (1u << i)) buf_printf(b, "%s%s", n++ ? " " : "", names[i]);
  for (int i = 0; i < nkw; i++)
    if (kw & ((uint64_t)1 << i)) buf_printf(b, "%s%s", n++ ? " " : "", names_kw[i]);
  if (recent) buf_printf(b, "%s\\Recent", n ? " " : "");
  buf_addc(b, ')');
}

/* The first index in the view whose UID is uid or more (s->nview if none). */
static size_t view_lower_bound(const struct session *s, uint64_t uid) {
  return lower_bound(s->view, s->nview, sizeof s->view[0], offsetof(struct seqent, uid), 4,
                     uid);
}

/* Index in the view of uid, or -1. */
static long view_find(const struct session *s, uint32_t uid) {
  size_t i = view_lower_bound(s, uid);
  return i < s->nview && s->view[i].uid == uid ? (long)i : -1;
}

/*
** The FLAGS and PERMANENTFLAGS responses (RFC 3501 7.2.6, 7.1): at SELECT, and again
** whenever a keyword is new to the mailbox, before any FETCH shows it. Holds mb->lock.
*/
static void session_send_flags(struct session *s, struct mailbox *mb) {
  struct buf fl = {0};
  buf_adds(&fl, "\\Answered \\Flagged \\Deleted \\Seen \\Draft");
  for (int i = 0; i < mb->nkeywords; i++) buf_printf(&fl, " %s", mb->keywords[i]);
  session_send(s, "* FLAGS (%s)\r\n", fl.p ? fl.p : "");
  if (s->readonly) {
    session_send(s, "* OK [PERMANENTFLAGS ()] Read-only mailbox\r\n");
  } else if ((s->rights & (RIGHT_S | RIGHT_W | RIGHT_T)) != (RIGHT_S | RIGHT_W | RIGHT_T)) {
    /* RFC 4314 5.1.1: only the flags this user's rights let it change */
    struct buf may = {0};
    if (s->rights & RIGHT_W) buf_adds(&may, " \\Answered \\Flagged");
    if (s->rights & RIGHT_T) buf_adds(&may, " \\Deleted");
    if (s->rights & RIGHT_S) buf_adds(&may, " \\Seen");
    if (s->rights & RIGHT_W) buf_adds(&may, " \\Draft");
    for (int i = 0; (s->rights & RIGHT_W) && i < mb->nkeywords; i++)
      buf_printf(&may, " %s", mb->keywords[i]);
    if (s->rights & RIGHT_W) buf_adds(&may, " \\*");
    session_send(s, "* OK [PERMANENTFLAGS (%s)] Flags permitted\r\n", may.p ? may.p + 1 : "");
    buf_free(&may);
  } else {
    session_send(s, "* OK [PERMANENTFLAGS (%s \\*)] Flags permitted\r\n", fl.p ? fl.p : "");
  }
  buf_free(&fl);
  s->nkw_known = mb->nkeywords;
}

/* Free a search context (NULL is fine). */
static void session_context_free(struct search_ctx *x) {
  if (!x) return;
  free(x->tag);
  arena_free(&x->arena);
  free(x->uids);
  free(x);
}

/* Drop every UPDATE context: updates cease with the selection (RFC 5267 4.3). */
static void session_contexts_free(struct session *s) {
  while (s->contexts) {
    struct search_ctx *x = s->contexts;
    s->contexts = x->next;
    session_context_free(x);
  }
  s->ncontexts = 0;
}

/*
** A session is woken from poll() (section 10) through a pipe of its own when something it
** watches changes. The pipe is made when it first selects a mailbox or sets NOTIFY, so a
** session that only logs in holds one descriptor, its socket: 10,000 of them fit in the
** usual limit of descriptors. 0 if no descriptor is left.
*/
static int session_wake_open(struct session *s) {
  if (s->wake[0] >= 0) return 1;
  int p[2];
  if (pipe(p) < 0) return 0;
  for (int i = 0; i < 2; i++) {
    fcntl(p[i], F_SETFL, O_NONBLOCK);
    fcntl(p[i], F_SETFD, FD_CLOEXEC);
  }
  s->wake[0] = p[0];
  s->wake[1] = p[1];
  return 1;
}

/* Forget "$": a new selection starts with the empty result (RFC 5182 2.1). */
static void session_saved_clear(struct session *s) {
  free(s->saved);
  s->saved = NULL;
  s->nsaved = 0;
}

static void session_unselect(struct session *s) {
  struct mailbox *mb = s->mb;
  session_contexts_free(s);
  session_saved_clear(s);
  if (!mb) return;
  pthread_mutex_lock(&mb->lock);
  for (size_t i = 0; i < mb->nwatchers; i++)
    if (mb->watchers[i] == &s->watch) {
      mb->watchers[i] = mb->watchers[--mb->nwatchers];
      break;
    }
  mailbox_release_ghosts(mb);
  s->watch.idling = 0;
  pthread_mutex_unlock(&mb->lock);
  mailbox_unref(mb);
  s->mb = NULL;
  s->nview = 0;
  if (s->state == ST_SELECTED) s->state = ST_AUTH;
  session_publish(s);
}

/* Is an extension on (not switched off with imapmem_set_capability)? */
static int cap_on(struct imapmem *srv, capset bit) {
  return !(atomic_load(&srv->caps_off) & bit);
}

/* Does the session report MODSEQ in every untagged FETCH (RFC 7162 3.1)? */
static int session_condstore(const struct session *s) {
  return (s->enabled & ENABLED_CONDSTORE) && s->mb && !s->nomodseq;
}

/* ... and VANISHED instead of EXPUNGE (RFC 7162 3.2.10.2)? */
static int session_qresync(const struct session *s) {
  return (s->enabled & ENABLED_QRESYNC) && s->mb && !s->nomodseq;
}

/* Has the session given up message numbers (RFC 9586)? */
static int session_uidonly(const struct session *s) {
  return (s->enabled & ENABLED_UIDONLY) != 0;
}

/* ------------------------------------------------------------------------- */
/* IMAP4rev2 (RFC 9051) and UTF8=ACCEPT (RFC 6855): what a session sees differently. */

/*
** Does the session follow RFC 9051? It enabled IMAP4rev2, or the server offers IMAP4rev2
** and not IMAP4rev1 (--imap-version rev2), which needs no ENABLE (RFC 9051 Appendix A).
*/
static int session_rev2(const struct session *s) {
  return (s->enabled & ENABLED_IMAP4REV2) ||
         (!cap_on(s->srv, CAP_IMAP4REV1) && cap_on(s->srv, CAP_IMAP4REV2));
}

/* Does it name mailboxes in UTF-8 and read UTF-8 in quoted strings (RFC 6855 3)? */
static int session_utf8(const struct session *s) {
  return session_rev2(s) || (s->enabled & ENABLED_UTF8_ACCEPT);
}

/* A stored mailbox name as the session names it (UTF-8, or as stored), in the arena. */
static const char *session_mailbox_name(struct session *s, const char *stored) {
  if (!session_utf8(s)) return stored;
  struct buf b = {0};
  mutf7_to_utf8(&b, stored);
  const char *r = b.oom ? NULL : arena_strndup(&s->arena, b.p ? b.p : "", b.len);
  buf_free(&b);
  return r ? r : stored;
}

/*
** A mailbox name, as the session names it, as an IMAP string: quoted with UTF-8 in it
** only in a UTF-8 session (RFC 6855 3, RFC 9051 Appendix A: never before ENABLE), else
** as out_string writes any string.
*/
static void session_send_mailbox(struct session *s, const char *name) {
  size_t n = strlen(name);
  int quoted = session_utf8(s) && n <= 1024 && utf8_valid(name, n);
  for (size_t i = 0; quoted && i < n; i++) {
    unsigned char c = (unsigned char)name[i];
    quoted = c >= 0x20 && c != 0x7f && c != '"' && c != '\\';
  }
  if (quoted) session_send(s, "\"%s\"", name);
  else out_string(&s->out, name, n);
}

/* "* n EXISTS", and "* n RECENT" but in IMAP4rev2 (RFC 9051 Appendix E 12). */
static void session_send_exists(struct session *s, size_t recent) {
  session_send(s, "* %zu EXISTS\r\n", s->nview);
  if (!session_rev2(s)) session_send(s, "* %zu RECENT\r\n", recent);
}

/*
** The start of a FETCH response: "* seq FETCH (", or once UIDONLY is enabled
** "* uid UIDFETCH (" (RFC 9586 3.3, 3.6: no message number in any response).
*/
static void session_send_fetch_start(struct session *s, size_t seq, uint32_t uid) {
  int uidonly = session_uidonly(s);
  session_sendn(s, "*", 1);
  session_send_number(s, ' ', uidonly ? uid : seq);
  buf_adds(&s->out, uidonly ? " UIDFETCH (" : " FETCH (");
}

/* "MODSEQ (n)" in a FETCH response; the command remembers the highest it sent. */
static void session_send_modseq(struct session *s, uint64_t modseq) {
  session_send(s, "MODSEQ (%llu)", (unsigned long long)modseq);
  if (modseq > s->modseq_sent) s->modseq_sent = modseq;
}

/*
** The HIGHESTMODSEQ the client may take as its own: every change up to it has been
** reported. An expunge not yet reported (withheld while answering FETCH, STORE or
** SEARCH) holds it below that expunge's number (RFC 7162 3.2 and 6). Holds mb->lock.
*/
static uint64_t session_highestmodseq(const struct session *s) {
  const struct mailbox *mb = s->mb;
  uint64_t h = s->seen_modseq;
  if (s->watch.told < mb->modseq) {
    size_t i = lower_bound(mb->expunged, mb->nexpunged, sizeof mb->expunged[0],
                           offsetof(struct expunged, modseq), 8, s->watch.told + 1);
    if (i < mb->nexpunged && mb->expunged[i].modseq - 1 < h) h = mb->expunged[i].modseq - 1;
  }
  return h;
}

/*
** A CONDSTORE enabling command (RFC 7162 3.1): from now on every untagged FETCH carries
** MODSEQ, and the first such command with a mailbox selected reports its HIGHESTMODSEQ.
*/
static void session_enable_condstore(struct session *s) {
  if (s->enabled & ENABLED_CONDSTORE) return;
  s->enabled |= ENABLED_CONDSTORE;
  if (!s->mb || s->nomodseq) return;
  pthread_mutex_lock(&s->mb->lock);
  uint64_t h = session_highestmodseq(s);
  pthread_mutex_unlock(&s->mb->lock);
  session_send(s, "* OK [HIGHESTMODSEQ %llu] Highest\r\n", (unsigned long long)h);
}

/*
** An untagged FETCH with a message's flags, for a change the client did not make or
** asked to hear of: with its UID, and with its MODSEQ once CONDSTORE is on (RFC 7162
** 3.2.4). Holds mb->lock.
*/
static void session_send_flags_fetch(struct session *s, size_t k, const struct message *m) {
  struct mailbox *mb = s->mb;
  session_send_fetch_start(s, k + 1, m->uid);
  session_send(s, "UID %u FLAGS ", m->uid);
  flags_out(&s->out, m->flags, m->keywords, mb->keywords, mb->nkeywords, s->view[k].recent);
  if (session_condstore(s)) {
    session_send(s, " ");
    session_send_modseq(s, m->modseq);
  }
  session_send(s, ")\r\n");
}

static int cmp_size(const void *a, const void *b) {
  size_t x = *(const size_t *)a, y = *(const size_t *)b;
  return x < y ? -1 : x > y;
}

/*
** Take the messages marked gone in the view out of every UPDATE context, each with a
** REMOVEFROM sent before the EXPUNGE responses, while their numbers are still valid (RFC
** 5267 4.3.4). Position 0: the client removes them wherever they are. Holds mb->lock.
*/
static void session_contexts_expunged(struct session *s) {
  for (struct search_ctx *x = s->contexts; x; x = x->next) {
    struct buf b = {0};
    struct set_writer w = {&b, 0, 0, 0};
    size_t keep = 0, i = 0;
    for (size_t k = 0; k < s->nview; k++) {   /* both ascending by UID: one merge */
      uint32_t uid = s->view[k].uid;
      while (i < x->n && x->uids[i] < uid) x->uids[keep++] = x->uids[i++];
      if (i < x->n && x->uids[i] == uid) {
        if (s->view[k].gone) set_add(&w, x->uid ? uid : (uint32_t)k + 1);
        else x->uids[keep++] = uid;
        i++;
      }
    }
    while (i < x->n) x->uids[keep++] = x->uids[i++];
    x->n = keep;
    set_end(&w);
    if (w.n)
      session_send(s, "* ESEARCH (TAG \"%s\")%s REMOVEFROM (0 %s)\r\n", x->tag,
                   x->uid ? " UID" : "", b.p);
    buf_free(&b);
  }
}

/*
** Report expunges the client has not heard of: mark them in the view, say so, and close
** the gaps. EXPUNGE goes from the highest number down (as RFC 3501 7.4.1's example does:
** a higher number going never renumbers a lower one, so each is the number the client
** knows); a QRESYNC client gets one VANISHED with their UIDs (RFC 7162 3.2.10.2).
** Holds mb->lock.
*/
static void session_report_expunges(struct session *s) {
  struct mailbox *mb = s->mb;
  size_t lo = lower_bound(mb->expunged, mb->nexpunged, sizeof mb->expunged[0],
                          offsetof(struct expunged, modseq), 8, s->watch.told + 1);
  size_t gone = 0;
  for (size_t i = lo; i < mb->nexpunged; i++) {
    size_t k = view_lower_bound(s, mb->expunged[i].lo);
    for (; k < s->nview && s->view[k].uid <= mb->expunged[i].hi; k++)
      if (!s->view[k].gone) {
        s->view[k].gone = 1;
        gone++;
      }
  }
  if (gone && s->contexts) session_contexts_expunged(s);
  if (gone && (session_qresync(s) || session_uidonly(s))) {   /* RFC 9586 3.4, 3.6 */
    struct set_writer w = {&s->out, 0, 0, 0};
    session_send(s, "* VANISHED ");
    for (size_t k = 0; k < s->nview; k++)
      if (s->view[k].gone) set_add(&w, s->view[k].uid);
    set_end(&w);
    session_send(s, "\r\n");
  } else {
    for (size_t k = s->nview; gone && k-- > 0;)
      if (s->view[k].gone) session_send(s, "* %zu EXPUNGE\r\n", k + 1);
  }
  size_t w = 0;
  for (size_t k = 0; gone && k < s->nview; k++)
    if (!s->view[k].gone) s->view[w++] = s->view[k];
  if (gone) s->nview = w;
  s->watch.told = mb->modseq;
  mailbox_release_ghosts(mb);
}

/*
** Report flag changes since the session last looked, of messages it knows: a walk back
** along the change list, in sequence order. Holds mb->lock.
*/
static void session_report_flag_changes(struct session *s, uint32_t known) {
  struct mailbox *mb = s->mb;
  size_t *ks = NULL, n = 0, cap = 0;
  for (uint32_t i = mb->newest; i != NO_MSG && mb->msgs[i].modseq > s->seen_modseq;
       i = mb->msgs[i].older) {
    const struct message *m = &mb->msgs[i];
    long k = m->uid > known ? -1 : view_find(s, m->uid);
    if (k < 0) continue;
    if (mem_grow(&ks, &cap, n + 1, sizeof *ks)) ks[n++] = (size_t)k;
    else session_send_flags_fetch(s, (size_t)k, m);   /* out of order, but not lost */
  }
  if (n > 1) qsort(ks, n, sizeof *ks, cmp_size);
  for (size_t j = 0; j < n; j++) {
    long i = mailbox_find_uid(mb, s->view[ks[j]].uid);
    if (i >= 0) session_send_flags_fetch(s, ks[j], &mb->msgs[i]);
  }
  free(ks);
}

/*
** The view indices, ascending, of the messages in set (UIDs, or sequence numbers if uid
** is 0) changed after change number since (RFC 7162 CHANGEDSINCE): a walk back along the
** change list, in time proportional to the changes. *out is the caller's to free (NULL
** when none). Holds mb->lock.
*/
static void view_changed_since(struct session *s, const struct seqset *set, int uid,
                               uint64_t since, size_t **out, size_t *nout) {
  struct mailbox *mb = s->mb;
  size_t *ks = NULL, n = 0, cap = 0;
  for (uint32_t i = mb->newest; i != NO_MSG && mb->msgs[i].modseq > since;
       i = mb->msgs[i].older) {
    const struct message *m = &mb->msgs[i];
    if (uid && !seqset_contains(set, m->uid)) continue;
    long k = view_find(s, m->uid);
    if (k < 0 || (!uid && !seqset_contains(set, (uint32_t)k + 1))) continue;
    if (!mem_grow(&ks, &cap, n + 1, sizeof *ks)) break;   /* out of memory: fewer */
    ks[n++] = (size_t)k;
  }
  if (n > 1) qsort(ks, n, sizeof *ks, cmp_size);
  *out = ks;
  *nout = n;
}

/*
** "* VANISHED (EARLIER) uids" (RFC 7162 3.2.10.1): the UIDs of known (resolved) expunged
** after change number since. If the log no longer reaches back that far, every UID of
** known above floor that no message has (3.2.6's note; floor from the client's sequence
** match data, 3.2.5.2). UIDs still in the session's view are left for a VANISHED of their
** own. Holds mb->lock.
*/
static void session_send_vanished(struct session *s, const struct seqset *known,
                                  uint64_t since, uint32_t floor) {
  struct mailbox *mb = s->mb;
  struct seqset cand = {NULL, 0, 0};
  struct range whole;
  if (since + 1 >= mb->expunge_log_from) {   /* the log has them all: its ranges */
    size_t lo = lower_bound(mb->expunged, mb->nexpunged, sizeof mb->expunged[0],
                            offsetof(struct expunged, modseq), 8, since + 1);
    if (lo == mb->nexpunged) return;
    cand.r = mem_alloc((mb->nexpunged - lo) * sizeof *cand.r);
    if (!cand.r) return;
    for (size_t i = lo; i < mb->nexpunged; i++) {
      cand.r[cand.n].lo = mb->expunged[i].lo;
      cand.r[cand.n++].hi = mb->expunged[i].hi;
    }
    seqset_resolve(&cand, 0);
  } else {
    if (floor >= mb->uidnext - 1 || mb->uidnext <= 1) return;
    whole.lo = floor + 1;
    whole.hi = mb->uidnext - 1;
    cand.r = &whole;
    cand.n = 1;
  }
  struct buf b = {0};
  struct set_writer w = {&b, 0, 0, 0};
  size_t a = 0, k = 0;       /* the intersection of cand and known, ranges in step */
  while (a < cand.n && k < known->n) {
    uint32_t lo = cand.r[a].lo > known->r[k].lo ? cand.r[a].lo : known->r[k].lo;
    uint32_t hi = cand.r[a].hi < known->r[k].hi ? cand.r[a].hi : known->r[k].hi;
    if (lo <= hi) {          /* the UIDs of lo..hi that neither mailbox nor view holds */
      size_t i = mailbox_lower_bound(mb, lo);
      size_t j = view_lower_bound(s, lo);
      uint64_t cur = lo;
      while (cur <= hi) {
        uint64_t next = UINT64_MAX;
        if (i < mb->count) next = mb->msgs[i].uid;
        if (j < s->nview && s->view[j].uid < next) next = s->view[j].uid;
        if (next > hi) {
          set_add_range(&w, (uint32_t)cur, hi);
          break;
        }
        if (next > cur) set_add_range(&w, (uint32_t)cur, (uint32_t)next - 1);
        cur = next + 1;
        if (i < mb->count && mb->msgs[i].uid == next) i++;
        if (j < s->nview && s->view[j].uid == next) j++;
      }
    }
    if (cand.r[a].hi < known->r[k].hi) a++;
    else k++;
  }
  set_end(&w);
  if (w.n) session_send(s, "* VANISHED (EARLIER) %s\r\n", b.p);
  buf_free(&b);
  if (cand.r != &whole) free(cand.r);
}

/*
** Tell the client what other sessions changed since it last heard (RFC 3501 5.2):
** EXPUNGE or VANISHED (only when allowed, 7.4.1), then EXISTS and RECENT for new
** messages, then FETCH FLAGS for flag changes. Returns 0 if the mailbox was deleted or
** renamed under the session, which is then told so and closed.
*/
static int session_sync(struct session *s, int allow_expunge) {
  struct mailbox *mb = s->mb;
  if (!mb) return 1;
  /* Nothing new (most commands, under many clients): no lock. A change another session
     is making now shows in the next command; one it has answered was counted before its
     unlock, which came before its answer. */
  if (mb->epoch == s->epoch && mb->nkeywords <= s->nkw_known &&
      s->seen_modseq == s->watch.told && mb->modseq == s->seen_modseq)
    return 1;
  pthread_mutex_lock(&mb->lock);
  if (mb->epoch != s->epoch) {
    const char *why = mb->gone_why ? mb->gone_why : "changed by another session";
    pthread_mutex_unlock(&mb->lock);
    session_send(s, "* BYE Selected mailbox was %s\r\n", why);
    s->closing = 1;
    session_unselect(s);
    return 0;
  }
  if (mb->nkeywords > s->nkw_known) session_send_flags(s, mb);
  if (mb->modseq == s->seen_modseq && mb->modseq == s->watch.told) {
    pthread_mutex_unlock(&mb->lock);
    return 1;
  }
  if (allow_expunge && s->watch.told < mb->modseq) session_report_expunges(s);
  if (s->seen_modseq < mb->modseq) {
    uint32_t known = s->nview ? s->view[s->nview - 1].uid : 0;
    session_report_flag_changes(s, known);
    size_t first = mailbox_lower_bound(mb, known + 1), added = 0;   /* new messages */
    if (first < mb->count &&
        mem_grow(&s->view, &s->capview, s->nview + mb->count - first, sizeof s->view[0])) {
      for (size_t i = first; i < mb->count; i++) {
        struct seqent *e = &s->view[s->nview++];
        e->uid = mb->msgs[i].uid;
        /* RFC 3501 2.3.2: the first session told of a message sees it \Recent; a
           read-only one does not take it from the sessions after it */
        e->recent = (mb->msgs[i].flags & FLAG_RECENT) != 0;
        e->gone = 0;
        if (session_rev2(s)) e->recent = 0;   /* RFC 9051 Appendix E 12: no \Recent */
        s->view_recent |= e->recent;
        if (e->recent && !s->readonly) mb->msgs[i].flags &= ~(uint32_t)FLAG_RECENT;
        added++;
      }
    }
    if (added) {
      size_t recent = 0;
      for (size_t i = 0; i < s->nview; i++) recent += s->view[i].recent;
      session_send_exists(s, recent);
    }
    s->seen_modseq = mb->modseq;
  }
  pthread_mutex_unlock(&mb->lock);
  return 1;
}

/*
** Fill a "$" set (RFC 5182 2.1) with the saved result: its UIDs, or the sequence numbers
** they have in the view. It is kept as UIDs, so an expunged message leaves it as the
** EXPUNGE is reported and the others' numbers follow; before that it is still in the
** view, and in "$", like any number the client knows. 0 if out of memory.
*/
static int view_dollar(struct session *s, struct seqset *set, int uid) {
  set->dollar = 0;
  set->n = 0;
  set->r = arena_alloc(&s->arena, (s->nsaved ? s->nsaved : 1) * sizeof *set->r);
  if (!set->r) return 0;
  for (size_t i = 0; i < s->nsaved; i++) {
    long k = view_find(s, s->saved[i]);
    if (k < 0) continue;
    uint32_t v = uid ? s->saved[i] : (uint32_t)k + 1;
    if (set->n && set->r[set->n - 1].hi + 1 == v) {
      set->r[set->n - 1].hi = v;
    } else {
      set->r[set->n].lo = set->r[set->n].hi = v;
      set->n++;
    }
  }
  return 1;
}

/*
** Resolve '*' in a sequence set (or UID set) against the view, and "$" where SEARCHRES
** is on. Returns 0 and sets a BAD reply for a sequence number beyond the view (RFC 3501
** 9: seq-number must be a valid message number).
*/
static int view_check_set(struct session *s, struct command *c, struct seqset *set, int uid) {
  if (set->dollar) {
    if (!cap_on(s->srv, CAP_SEARCHRES)) {
      cmd_bad(c, "%s Invalid sequence set: $", c->def->name);
      return 0;
    }
    if (!view_dollar(s, set, uid)) {
      cmd_no(c, "[SERVERBUG] Out of memory");
      return 0;
    }
    return 1;                /* valid even when empty (RFC 5182 2.1) */
  }
  if (s->nview == 0) {
    seqset_resolve(set, 0);
    if (uid) return 1;
    cmd_bad(c, "%s Invalid message sequence number: the mailbox is empty", c->def->name);
    return 0;
  }
  seqset_resolve(set, uid ? s->view[s->nview - 1].uid : (uint32_t)s->nview);
  if (!uid) {
    for (size_t i = 0; i < set->n; i++)
      if (set->r[i].hi > s->nview) {
        cmd_bad(c, "%s Invalid message sequence number: %u (there are %zu messages)",
                c->def->name, set->r[i].hi, s->nview);
        return 0;
      }
  }
  return 1;
}

/* The view indices [*a, *b) that range r of a resolved set names. */
static void view_range(const struct session *s, const struct range *r, int uid, size_t *a,
                       size_t *b) {
  if (uid) {
    *a = view_lower_bound(s, r->lo);
    *b = view_lower_bound(s, (uint64_t)r->hi + 1);   /* UINT32_MAX: all after lo */
    if (*b < *a) *b = *a;
  } else {
    *a = r->lo - 1;
    *b = r->hi;
  }
}

/*
** ... and then into ascending view indices (in the arena). The ranges of a resolved set
** ascend and do not touch (seqset_resolve sorts and merges them; "$" is kept as ascending
** UIDs, which the view numbers in the same order), so their indices are written as they
** come: a FETCH or STORE of one message costs two binary searches, not a pass over the
** view.
*/
static int view_resolve(struct session *s, struct command *c, struct seqset *set, int uid,
                        size_t **out, size_t *nout) {
  *nout = 0;
  *out = NULL;
  if (!view_check_set(s, c, set, uid)) return 0;
  if (s->nview == 0) return 1;
  size_t n = 0, a, b;
  for (size_t r = 0; r < set->n; r++) {
    view_range(s, &set->r[r], uid, &a, &b);
    n += b - a;
  }
  size_t *idx = arena_alloc(&s->arena, (n ? n : 1) * sizeof *idx);
  if (!idx) {
    cmd_no(c, "Out of memory");
    return 0;
  }
  size_t k = 0;
  for (size_t r = 0; r < set->n; r++) {
    view_range(s, &set->r[r], uid, &a, &b);
    for (size_t i = a; i < b; i++) idx[k++] = i;
  }
  *out = idx;
  *nout = n;
  return 1;
}

/*
** ===========================================================================
** 7  SEARCH
** ===========================================================================
** Owns: the search-key tree (RFC 3501 6.4.4), its evaluation, the SEARCH command with
** its RETURN options (ESEARCH, SAVE, PARTIAL: RFC 4731, 5182, 9394), the UPDATE contexts
** (RFC 5267 4.3: made, evaluated, cancelled) and the updates they send; SORT and THREAD
** (RFC 5256, 5957, 5267 3 and 4.4), which search the same way.
** Calls: sections 1-3, 5 and 6.
** Locking: the selected mailbox is locked once to take a snapshot of the view's
** messages (UID, flags, dates, a reference to the bytes); keys are then evaluated with
** no lock held. Contexts are the session's own, touched by its thread only.
** Limits: groups, NOT and OR nest at most IMAPMEM_MAX_DEPTH deep; IMAPMEM_MAX_CONTEXTS
** UPDATE contexts a session.
**
** String keys match case-insensitively as substrings of what a person reads: header
** values after RFC 2047 decoding, bodies after base64/quoted-printable decoding, found
** through the part table.
*/
enum skey_op {
  SK_AND, SK_OR, SK_NOT, SK_SEQ, SK_UID, SK_FLAG, SK_UNFLAG, SK_KEYWORD, SK_UNKEYWORD,
  SK_NEW, SK_OLD, SK_RECENT, SK_HEADER, SK_BODY, SK_TEXT, SK_BEFORE, SK_ON, SK_SINCE,
  SK_SENTBEFORE, SK_SENTON, SK_SENTSINCE, SK_LARGER, SK_SMALLER, SK_ALL, SK_MODSEQ, SK_ADDRESS,
  SK_EMAILID, SK_THREADID
};
struct skey {
  int op;
  uint32_t flag;
  int kwbit;                  /* keyword bit in the mailbox, -1 if the mailbox lacks it */
  struct str name, value;     /* HEADER name and the string of string keys */
  struct needle needle;       /* value, prepared for needle_find */
  int64_t num;                /* a day number or a size */
  uint64_t modseq;            /* MODSEQ */
  struct seqset set;
  struct skey *child, *next;  /* AND: children; OR: two children; NOT: one */
};
struct snap {                 /* one message as SEARCH sees it */
  uint32_t seq, uid, flags, size;
  uint64_t keywords, modseq;
  int recent;
  int64_t day;                /* INTERNALDATE's date in its own zone, as a day number */
  struct msgdata *data;
};

static struct skey *search_new(struct parser *ps, int op) {
  struct skey *k = parse_new(ps, sizeof *k);
  if (k) {
    k->op = op;
    k->kwbit = -1;
  }
  return k;
}

/* The string of a string key, prepared for matching. */
static int search_parse_string(struct parser *ps, struct skey *k) {
  if (!parse_astring(ps, &k->value)) return 0;
  return needle_init(&k->needle, k->value, ps->arena) || parse_fail(ps, "Out of memory");
}

static struct skey *search_parse_key(struct parser *ps, int depth);  /* they recurse */

/* Keys until ')' (a group) or the end, joined by AND. */
static struct skey *search_parse_list(struct parser *ps, int depth, int group) {
  struct skey *and = search_new(ps, SK_AND), *last = NULL;
  if (!and) return NULL;
  for (;;) {
    struct skey *k = search_parse_key(ps, depth);
    if (!k) return NULL;
    if (last) last->next = k;
    else and->child = k;
    last = k;
    if (group && parse_char(ps, ')')) return and;
    if (parse_at_end(ps)) {
      if (group) {
        parse_fail(ps, "Missing ')' in search keys");
        return NULL;
      }
      return and;
    }
    if (!parse_sp(ps)) return NULL;
  }
}

static struct skey *search_parse_key(struct parser *ps, int depth) {
  static const struct { const char *name; int op; uint32_t flag; } simple[] = {
    {"ALL", SK_ALL, 0}, {"ANSWERED", SK_FLAG, FLAG_ANSWERED}, {"DELETED", SK_FLAG, FLAG_DELETED},
    {"DRAFT", SK_FLAG, FLAG_DRAFT}, {"FLAGGED", SK_FLAG, FLAG_FLAGGED},
    {"SEEN", SK_FLAG, FLAG_SEEN}, {"UNANSWERED", SK_UNFLAG, FLAG_ANSWERED},
    {"UNDELETED", SK_UNFLAG, FLAG_DELETED}, {"UNDRAFT", SK_UNFLAG, FLAG_DRAFT},
    {"UNFLAGGED", SK_UNFLAG, FLAG_FLAGGED}, {"UNSEEN", SK_UNFLAG, FLAG_SEEN},
    {"NEW", SK_NEW, 0}, {"OLD", SK_OLD, 0}, {"RECENT", SK_RECENT, 0}};
  static const struct { const char *name; const char *header; int op; } strings[] = {
    {"BCC", "Bcc", SK_ADDRESS}, {"CC", "Cc", SK_ADDRESS}, {"FROM", "From", SK_ADDRESS},
    {"SUBJECT", "Subject", SK_HEADER}, {"TO", "To", SK_ADDRESS}, {"BODY", NULL, SK_BODY},
    {"TEXT", NULL, SK_TEXT}};
  static const struct { const char *name; int op; } dates[] = {
    {"BEFORE", SK_BEFORE}, {"ON", SK_ON}, {"SINCE", SK_SINCE}, {"SENTBEFORE", SK_SENTBEFORE},
    {"SENTON", SK_SENTON}, {"SENTSINCE", SK_SENTSINCE}};
  if (depth > IMAPMEM_MAX_DEPTH) {
    parse_fail(ps, "Search keys nested too deeply");
    return NULL;
  }
  if (parse_char(ps, '(')) return search_parse_list(ps, depth + 1, 1);
  struct skey *k;
  if (parse_peek(ps, '*') || parse_peek(ps, '$') ||
      (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')) {
    if (!(k = search_new(ps, SK_SEQ)) || !parse_seqset(ps, &k->set)) return NULL;
    return k;
  }
  struct str w;
  if (!parse_run(ps, is_atom_char, &w)) {
    parse_fail(ps, "Expected a search key");
    return NULL;
  }
  for (size_t i = 0; i < sizeof simple / sizeof simple[0]; i++)
    if (str_ieq(w, simple[i].name)) {
      if ((k = search_new(ps, simple[i].op))) k->flag = simple[i].flag;
      return k;
    }
  for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++)
    if (str_ieq(w, strings[i].name)) {
      if (!(k = search_new(ps, strings[i].op)) || !parse_sp(ps) || !search_parse_string(ps, k))
        return NULL;
      if (strings[i].header) k->name = str_make(strings[i].header, strlen(strings[i].header));
      return k;
    }
  for (size_t i = 0; i < sizeof dates / sizeof dates[0]; i++)
    if (str_ieq(w, dates[i].name)) {
      if (!(k = search_new(ps, dates[i].op)) || !parse_sp(ps) || !parse_date(ps, &k->num))
        return NULL;
      return k;
    }
  if (str_ieq(w, "HEADER")) {
    if (!(k = search_new(ps, SK_HEADER)) || !parse_sp(ps) || !parse_astring(ps, &k->name) ||
        !parse_sp(ps) || !search_parse_string(ps, k))
      return NULL;
    return k;
  }
  if (str_ieq(w, "KEYWORD") || str_ieq(w, "UNKEYWORD")) {
    if (!(k = search_new(ps, w.p[0] == 'U' || w.p[0] == 'u' ? SK_UNKEYWORD : SK_KEYWORD)) ||
        !parse_sp(ps) || !parse_atom(ps, &k->name))
      return NULL;
    return k;
  }
  if (str_ieq(w, "LARGER") || str_ieq(w, "SMALLER")) {
    uint32_t n;
    if (!(k = search_new(ps, w.p[0] == 'L' || w.p[0] == 'l' ? SK_LARGER : SK_SMALLER)) ||
        !parse_sp(ps) || !parse_number(ps, &n))
      return NULL;
    k->num = n;
    return k;
  }
  if (str_ieq(w, "UID")) {
    if (!(k = search_new(ps, SK_UID)) || !parse_sp(ps) || !parse_seqset(ps, &k->set))
      return NULL;
    return k;
  }
  if (str_ieq(w, "MODSEQ")) {   /* RFC 7162 3.1.5; one MODSEQ per message: the entry is moot */
    if (!(k = search_new(ps, SK_MODSEQ)) || !parse_sp(ps)) return NULL;
    if (parse_peek(ps, '"')) {
      struct str entry, type;
      if (!parse_astring(ps, &entry) || !parse_sp(ps) || !parse_atom(ps, &type) ||
          !parse_sp(ps))
        return NULL;
      if (entry.len < 8 || strncasecmp(entry.p, "/flags/", 7) != 0 ||
          !(str_ieq(type, "priv") || str_ieq(type, "shared") || str_ieq(type, "all"))) {
        parse_fail(ps, "MODSEQ wants \"/flags/FLAG\" priv, shared or all");
        return NULL;
      }
    }
    if (!parse_modseq(ps, &k->modseq)) return NULL;
    return k;
  }
  if (str_ieq(w, "EMAILID") || str_ieq(w, "THREADID")) {   /* RFC 8474 6 */
    if (!(k = search_new(ps, w.p[0] == 'E' || w.p[0] == 'e' ? SK_EMAILID : SK_THREADID)) ||
        !parse_sp(ps) || !parse_atom(ps, &k->value))
      return NULL;
    return k;
  }
  if (str_ieq(w, "NOT")) {
    if (!(k = search_new(ps, SK_NOT)) || !parse_sp(ps) ||
        !(k->child = search_parse_key(ps, depth + 1)))
      return NULL;
    return k;
  }
  if (str_ieq(w, "OR")) {
    if (!(k = search_new(ps, SK_OR)) || !parse_sp(ps) ||
        !(k->child = search_parse_key(ps, depth + 1)) || !parse_sp(ps) ||
        !(k->child->next = search_parse_key(ps, depth + 1)))
      return NULL;
    return k;
  }
  parse_fail(ps, "Unknown search key");
  return NULL;
}

/* Does the search name message numbers (RFC 9586 3.5; "$" names messages, not numbers)? */
static int search_uses_seqnums(const struct skey *k) {
  for (; k; k = k->next)
    if ((k->op == SK_SEQ && !k->set.dollar) || search_uses_seqnums(k->child)) return 1;
  return 0;
}

/* Does the search use MODSEQ (a CONDSTORE enabling command, RFC 7162 3.1)? */
static int search_uses_modseq(const struct skey *k) {
  for (; k; k = k->next)
    if (k->op == SK_MODSEQ || search_uses_modseq(k->child)) return 1;
  return 0;
}

/* Does the search use EMAILID or THREADID (RFC 8474 6)? */
static int search_uses_objectid(const struct skey *k) {
  for (; k; k = k->next)
    if (k->op == SK_EMAILID || k->op == SK_THREADID || search_uses_objectid(k->child)) return 1;
  return 0;
}

/* ... or NEW, OLD or RECENT, which IMAP4rev2 has not (RFC 9051 Appendix E 12)? */
static int search_uses_recent(const struct skey *k) {
  for (; k; k = k->next)
    if (k->op == SK_NEW || k->op == SK_OLD || k->op == SK_RECENT ||
        search_uses_recent(k->child))
      return 1;
  return 0;
}

/* ... or "$", the saved result (RFC 5182 2.1)? */
static int search_uses_dollar(const struct skey *k) {
  for (; k; k = k->next)
    if (k->set.dollar || search_uses_dollar(k->child)) return 1;
  return 0;
}

/*
** Resolve keyword names, "$" and '*' in sets once, against the view and the mailbox. A
** "$" that finds no memory matches nothing.
*/
static void search_prepare(struct skey *k, struct session *s) {
  for (; k; k = k->next) {
    if (k->op == SK_KEYWORD || k->op == SK_UNKEYWORD)
      k->kwbit = mailbox_keyword(s->mb, k->name.p, k->name.len, 0);
    if (k->set.dollar) view_dollar(s, &k->set, k->op == SK_UID);
    if (k->op == SK_SEQ) seqset_resolve(&k->set, (uint32_t)s->nview);
    if (k->op == SK_UID) seqset_resolve(&k->set, s->nview ? s->view[s->nview - 1].uid : 0);
    if (k->op == SK_AND || k->op == SK_OR || k->op == SK_NOT) search_prepare(k->child, s);
  }
}

/* Might the field value hold an RFC 2047 encoded word ("=?")? */
static int has_encoded_word(struct str v) {
  for (const char *p = v.p, *e = v.p + v.len; (p = memchr(p, '=', (size_t)(e - p))); p++)
    if (p + 1 < e && p[1] == '?') return 1;
  return 0;
}

/*
** Does header field `name` contain the string, decoded? With name empty (TEXT), any field,
** its name included: RFC 3501 6.4.4 says TEXT matches "the header or body", and a client
** searching TEXT for "Content-Type" finds it on Dovecot too.
*/
static int search_header(const char *h, const char *hend, struct str name,
                         const struct needle *nd) {
  const char *p = h;
  struct field f;
  struct buf dec = {0};
  int found = 0;
  while (!found && header_next(&p, hend, &f)) {
    if (name.len && !(f.name.len == name.len && strncasecmp(f.name.p, name.p, name.len) == 0))
      continue;
    if (nd->len == 0) {
      found = 1;
      break;
    }
    /* most fields have neither encoded words nor folding: search them where they lie */
    if (!memchr(f.value.p, '\n', f.value.len) && !has_encoded_word(f.value)) {
      const char *from = name.len ? f.value.p : f.start;   /* TEXT: "Name:value" too */
      found = needle_find(nd, from, (size_t)(f.value.p + f.value.len - from)) != NULL;
      continue;
    }
    buf_reset(&dec);
    if (!name.len) buf_add(&dec, f.start, (size_t)(f.value.p - f.start));
    rfc2047_decode(f.value, &dec);
    found = dec.len && needle_find(nd, dec.p, dec.len) != NULL;
  }
  buf_free(&dec);
  return found;
}

/* Does an address field `name` hold the string, matched as address_search_text says? */
static int search_address(const char *h, const char *hend, struct str name,
                          const struct needle *nd) {
  struct field f;
  struct buf text = {0};
  int found = 0;
  while (!found && header_next(&h, hend, &f)) {
    if (!(f.name.len == name.len && strncasecmp(f.name.p, name.p, name.len) == 0)) continue;
    buf_reset(&text);
    address_search_text(f.value, &text);
    found = nd->len == 0 || (text.len && needle_find(nd, text.p, text.len) != NULL);
  }
  buf_free(&text);
  return found;
}

/* Search the decoded text of every text part (and, for TEXT, every header). */
static int search_text(const char *msg, const struct msgmeta *mm, const struct needle *nd,
                       int with_headers) {
  struct buf dec = {0};
  int found = 0;
  for (int i = 0; i < mm->nparts && !found; i++) {
    const struct part *pt = &mm->parts[i];
    if (with_headers && pt->hdr_len)
      found = search_header(msg + pt->hdr_off, msg + pt->hdr_off + pt->hdr_len,
                            str_make(NULL, 0), nd);
    if (found || pt->kind != PART_TEXT || pt->cte == CTE_UNKNOWN) continue;
    if (pt->cte == CTE_IDENTITY && pt->charset == CS_UTF8) {   /* searched where it lies */
      found = needle_find(nd, msg + pt->body_off, pt->body_len) != NULL;
    } else {
      buf_reset(&dec);
      part_decoded_text(msg, pt, &dec);
      found = dec.len && needle_find(nd, dec.p, dec.len) != NULL;
    }
  }
  buf_free(&dec);
  return found;
}

static int search_match(const struct skey *k, const struct snap *m) {
  const char *msg = m->data->bytes;
  switch (k->op) {
  case SK_ALL: return 1;
  case SK_AND:
    for (const struct skey *c = k->child; c; c = c->next)
      if (!search_match(c, m)) return 0;
    return 1;
  case SK_OR: return search_match(k->child, m) || search_match(k->child->next, m);
  case SK_NOT: return !search_match(k->child, m);
  case SK_SEQ: return seqset_contains(&k->set, m->seq);
  case SK_UID: return seqset_contains(&k->set, m->uid);
  case SK_FLAG: return (m->flags & k->flag) != 0;
  case SK_UNFLAG: return (m->flags & k->flag) == 0;
  case SK_KEYWORD: return k->kwbit >= 0 && (m->keywords >> k->kwbit & 1);
  case SK_UNKEYWORD: return k->kwbit < 0 || !(m->keywords >> k->kwbit & 1);
  case SK_NEW: return m->recent && !(m->flags & FLAG_SEEN);
  case SK_OLD: return !m->recent;
  case SK_RECENT: return m->recent;
  case SK_MODSEQ: return m->modseq >= k->modseq;
  case SK_LARGER: return m->size > k->num;
  case SK_SMALLER: return m->size < k->num;
  case SK_BEFORE: return m->day < k->num;
  case SK_ON: return m->day == k->num;
  case SK_SINCE: return m->day >= k->num;
  case SK_HEADER: return search_header(msg, msg + m->data->hdr_len, k->name, &k->needle);
  case SK_ADDRESS: return search_address(msg, msg + m->data->hdr_len, k->name, &k->needle);
  case SK_EMAILID: {         /* object ids are case-sensitive (RFC 8474 7) */
    char id[18];
    msgdata_emailid(m->data, id);
    return k->value.len == strlen(id) && memcmp(k->value.p, id, k->value.len) == 0;
  }
  case SK_THREADID: return 0;   /* RFC 8474 5.2: THREADID is NIL, so nothing matches */
  default: break;
  }
  struct msgmeta *mm = msgdata_meta(m->data);
  if (!mm) return 0;
  switch (k->op) {
  case SK_SENTBEFORE: case SK_SENTON: case SK_SENTSINCE: {
    int64_t sent = msgmeta_sent(mm, msg);
    if (sent == INT64_MIN) sent = m->day;                         /* no Date: INTERNALDATE */
    return k->op == SK_SENTBEFORE ? sent < k->num : k->op == SK_SENTON ? sent == k->num
                                                                       : sent >= k->num;
  }
  case SK_BODY: return search_text(msg, mm, &k->needle, 0);
  case SK_TEXT: return search_text(msg, mm, &k->needle, 1);
  }
  return 0;
}

/* One message of the view as SEARCH sees it; mb is locked, m the message of view entry i. */
static void search_snap(struct session *s, size_t i, const struct message *m, struct snap *x) {
  x->seq = (uint32_t)i + 1;
  x->uid = m->uid;
  x->flags = m->flags;
  x->keywords = m->keywords;
  x->modseq = m->modseq;
  x->recent = s->view[i].recent;
  x->size = m->data->size;
  x->day = day_of(m->internaldate, m->tz, NULL);
  x->data = msgdata_ref(m->data);
}

static int cmp_snap_seq(const void *a, const void *b) {
  uint32_t x = ((const struct snap *)a)->seq, y = ((const struct snap *)b)->seq;
  return x < y ? -1 : x > y;
}

/* ------------------------------------------------------------------------- */
/* Extended SEARCH: RETURN options (RFC 4466 2.6), ESEARCH responses, "$" and contexts. */

enum {
  RET_MIN = 1, RET_MAX = 2, RET_COUNT = 4, RET_ALL = 8,   /* RFC 4731 3.1 */
  RET_SAVE = 16,              /* RFC 5182 2.1 */
  RET_CONTEXT = 32, RET_UPDATE = 64,   /* RFC 5267 4.2, 4.3 */
  RET_PARTIAL = 128           /* RFC 9394 3.1 (and RFC 5267 4.4) */
};
struct search_return {
  int extended;               /* RETURN was given: the answer is ESEARCH, not SEARCH */
  unsigned opts;              /* RET_* */
  struct partial partial;
};

/* A return option of SEARCH or SORT, and the extension that offers it. */
struct return_option {
  const char *name;
  unsigned bit;               /* RET_* */
  capset cap;
};

/*
** "(opts)" after RETURN, the space before it read (RFC 4466 2.6.1 search-return-opts, RFC
** 5267 3.1 for SORT), into r->opts: each option from opts (n of them) whose extension is
** on; PARTIAL also when partial_also is on (RFC 5267 4.4 and RFC 9394 both define it).
*/
static int return_parse_options(struct session *s, struct parser *ps, struct search_return *r,
                                const struct return_option *opts, size_t n,
                                capset partial_also) {
  r->extended = 1;
  if (!parse_sp(ps) || !parse_char(ps, '('))
    return parse_fail(ps, "Expected '(' and return options after RETURN");
  while (!parse_char(ps, ')')) {
    struct str w;
    if (r->opts && !parse_sp(ps)) return parse_fail(ps, "Expected ')' after return options");
    if (!parse_atom(ps, &w)) return parse_fail(ps, "Expected a return option");
    size_t i = 0;
    while (i < n && !str_ieq(w, opts[i].name)) i++;
    int on = i < n && (cap_on(s->srv, opts[i].cap) ||
                       (opts[i].bit == RET_PARTIAL && cap_on(s->srv, partial_also)));
    if (!on) return parse_fail(ps, "Unknown return option");   /* RFC 4466 2.6.1: BAD */
    if (opts[i].bit == RET_PARTIAL) {   /* RFC 9394 3.1, RFC 5267 4.4: one PARTIAL at most */
      if (r->opts & RET_PARTIAL) return parse_fail(ps, "PARTIAL given twice");
      if (!parse_sp(ps) || !parse_partial(ps, &r->partial)) return 0;
    }
    r->opts |= opts[i].bit;
  }
  return 1;
}

/* "RETURN (opts)" after SEARCH: search-return-opts (RFC 4466 2.6.1), and the space after. */
static int search_parse_return(struct session *s, struct parser *ps, struct search_return *r) {
  static const struct return_option opts[] = {
    {"MIN", RET_MIN, CAP_ESEARCH}, {"MAX", RET_MAX, CAP_ESEARCH},
    {"COUNT", RET_COUNT, CAP_ESEARCH}, {"ALL", RET_ALL, CAP_ESEARCH},
    {"SAVE", RET_SAVE, CAP_SEARCHRES}, {"CONTEXT", RET_CONTEXT, CAP_CONTEXT_SEARCH},
    {"UPDATE", RET_UPDATE, CAP_CONTEXT_SEARCH}, {"PARTIAL", RET_PARTIAL, CAP_PARTIAL}};
  if (!return_parse_options(s, ps, r, opts, sizeof opts / sizeof opts[0], CAP_CONTEXT_SEARCH))
    return 0;
  if (!r->opts) r->opts = RET_ALL;   /* RFC 4731 3.1: RETURN () is RETURN (ALL) */
  if ((r->opts & RET_ALL) && (r->opts & RET_PARTIAL))
    return parse_fail(ps, "ALL and PARTIAL may not be used together");   /* RFC 9394 3.1 */
  return parse_sp(ps);
}

/*
** Is result i of n "returned" by the options (RFC 4731 3.2 for MODSEQ; RFC 5182 2.4 and
** RFC 9394 3.2 for what SAVE keeps)? With ALL or COUNT every result is; else MIN, MAX
** and the PARTIAL window [from, to) name theirs, and with none of them (SAVE alone)
** every result is again.
*/
static int search_returned(unsigned opts, size_t i, size_t n, size_t from, size_t to) {
  if ((opts & (RET_ALL | RET_COUNT)) || !(opts & (RET_MIN | RET_MAX | RET_PARTIAL))) return 1;
  return ((opts & RET_MIN) && i == 0) || ((opts & RET_MAX) && i + 1 == n) ||
         ((opts & RET_PARTIAL) && i >= from && i < to);
}

/*
** "* ESEARCH (TAG "t") [UID] ..." (RFC 4466 2.6.2, RFC 4731 3.1) for the n results hit[]
** in mailbox order: MIN, MAX and ALL only when something matched, COUNT always, PARTIAL
** with NIL for an empty window (RFC 9394 3.1), and MODSEQ when the program used MODSEQ:
** the highest of the messages returned (RFC 4731 3.2, RFC 7162 3.1.10). SAVE alone
** suppresses the response (RFC 5182 1).
*/
static void search_send_esearch(struct session *s, struct command *c,
                                const struct search_return *r, const struct snap *hit,
                                size_t n, int modseq) {
  unsigned o = r->opts;
  if (!(o & ~(unsigned)(RET_SAVE | RET_CONTEXT)) && (o & RET_SAVE)) return;
  size_t from = 0, to = 0;
  if (o & RET_PARTIAL) partial_window(&r->partial, n, &from, &to);
#define RESULT(i) (c->uid ? hit[i].uid : hit[i].seq)
  session_send(s, "* ESEARCH (TAG \"%s\")%s", c->tag, c->uid ? " UID" : "");
  if (n && (o & RET_MIN)) session_send(s, " MIN %u", RESULT(0));
  if (n && (o & RET_MAX)) session_send(s, " MAX %u", RESULT(n - 1));
  if (o & RET_COUNT) session_send(s, " COUNT %zu", n);
  if (n && (o & RET_ALL)) {
    struct set_writer w = {&s->out, 0, 0, 0};
    session_send(s, " ALL ");
    for (size_t i = 0; i < n; i++) set_add(&w, RESULT(i));
    set_end(&w);
  }
  if (o & RET_PARTIAL) {
    const struct partial *p = &r->partial;
    session_send(s, p->neg ? " PARTIAL (-%u:-%u " : " PARTIAL (%u:%u ", p->lo, p->hi);
    struct set_writer w = {&s->out, 0, 0, 0};
    for (size_t i = from; i < to; i++) set_add(&w, RESULT(i));
    set_end(&w);
    session_send(s, "%s)", from < to ? "" : "NIL");
  }
#undef RESULT
  uint64_t top = 0;
  for (size_t i = 0; modseq && (o & ~(unsigned)(RET_SAVE | RET_CONTEXT | RET_UPDATE)) && i < n;
       i++)
    if (search_returned(o, i, n, from, to) && hit[i].modseq > top) top = hit[i].modseq;
  if (top) session_send(s, " MODSEQ %llu", (unsigned long long)top);
  session_send(s, "\r\n");
}

/* SAVE (RFC 5182 2.1, 2.4; RFC 9394 3.2): "$" becomes what the options returned. */
static int search_save(struct session *s, const struct search_return *r,
                       const struct snap *hit, size_t n) {
  size_t from = 0, to = 0, k = 0;
  if (r->opts & RET_PARTIAL) partial_window(&r->partial, n, &from, &to);
  uint32_t *uids = mem_alloc((n ? n : 1) * sizeof *uids);
  if (!uids) return 0;
  for (size_t i = 0; i < n; i++)
    if (search_returned(r->opts, i, n, from, to)) uids[k++] = hit[i].uid;
  session_saved_clear(s);
  s->saved = uids;
  s->nsaved = k;
  return 1;
}

/*
** A copy of the program for a context, in its own arena, where it outlives the command.
** Message numbers become the UIDs they name now: they are evaluated when the command is
** received (RFC 5267 4.3, citing RFC 3501's errata), and so are '*' and "$", which
** search_prepare() has resolved already. NULL if out of memory.
*/
static struct skey *search_copy(struct session *s, const struct skey *k, struct arena *a) {
  struct skey *first = NULL, **tail = &first;
  for (; k; k = k->next) {
    struct skey *d = arena_alloc(a, sizeof *d);
    if (!d) return NULL;
    *d = *k;
    d->next = d->child = NULL;
    if (k->name.len && !(d->name.p = arena_strndup(a, k->name.p, k->name.len))) return NULL;
    if (k->value.len && !(d->value.p = arena_strndup(a, k->value.p, k->value.len))) return NULL;
    if (!needle_init(&d->needle, d->value, a)) return NULL;
    if (k->op == SK_SEQ) {   /* one range a message: few programs name many */
      d->op = SK_UID;
      d->set.n = 0;
      if (!(d->set.r = arena_alloc(a, (s->nview ? s->nview : 1) * sizeof *d->set.r)))
        return NULL;
      for (size_t i = 0; i < s->nview; i++)
        if (seqset_contains(&k->set, (uint32_t)i + 1)) {
          d->set.r[d->set.n].lo = d->set.r[d->set.n].hi = s->view[i].uid;
          d->set.n++;
        }
    } else if (k->set.n) {
      if (!(d->set.r = arena_alloc(a, k->set.n * sizeof *d->set.r))) return NULL;
      memcpy(d->set.r, k->set.r, k->set.n * sizeof *d->set.r);
    }
    if (k->child && !(d->child = search_copy(s, k->child, a))) return NULL;
    *tail = d;
    tail = &d->next;
  }
  return first;
}

/*
** RETURN (UPDATE) (RFC 5267 4.3): keep the program and the result, to tell the client
** of changes. Past IMAPMEM_MAX_CONTEXTS the server refuses with NOUPDATE (4.3.1).
*/
static void search_add_context(struct session *s, struct command *c, const struct skey *keys,
                               const struct snap *hit, size_t n, uint64_t checked) {
  if (s->ncontexts >= IMAPMEM_MAX_CONTEXTS) {
    session_send(s, "* NO [NOUPDATE \"%s\"] Too many search contexts (at most %d)\r\n",
                 c->tag, IMAPMEM_MAX_CONTEXTS);
    return;
  }
  struct search_ctx *x = mem_calloc(1, sizeof *x);
  if (x) {
    x->tag = mem_strdup(c->tag);
    x->uid = c->uid;
    x->keys = search_copy(s, keys, &x->arena);
    x->uids = mem_alloc((n ? n : 1) * sizeof *x->uids);
    x->cap = n ? n : 1;
    x->checked = checked;
  }
  if (!x || !x->tag || !x->keys || !x->uids) {
    session_context_free(x);
    session_send(s, "* NO [NOUPDATE \"%s\"] Out of memory\r\n", c->tag);
    return;
  }
  for (size_t i = 0; i < n; i++) x->uids[x->n++] = hit[i].uid;
  x->next = s->contexts;
  s->contexts = x;
  s->ncontexts++;
}

/* The link that points at the context with this tag, or NULL. */
static struct search_ctx **search_find_context(struct session *s, const char *tag, size_t len) {
  for (struct search_ctx **p = &s->contexts; *p; p = &(*p)->next)
    if (strlen((*p)->tag) == len && memcmp((*p)->tag, tag, len) == 0) return p;
  return NULL;
}

/*
** 6.4.4 SEARCH [RETURN (opts)] [CHARSET name] keys, and UID SEARCH. With RETURN the
** answer is one ESEARCH response (RFC 4731), "$" may be saved (RFC 5182) and a context
** kept for updates (RFC 5267 4.3).
*/
static int cmd_search(struct session *s, struct command *c) {
  struct parser *ps = &c->ps;
  struct search_return ret = {0};
  if (!parse_sp(ps)) return cmd_bad_args(c);
  const char *save = ps->p;
  struct str w;
  if (cap_on(s->srv, CAP_ESEARCH) && parse_run(ps, is_atom_char, &w) && str_ieq(w, "RETURN")) {
    if (!search_parse_return(s, ps, &ret)) return cmd_bad_args(c);
    save = ps->p;
  }
  ps->p = save;
  if (parse_run(ps, is_atom_char, &w) && str_ieq(w, "CHARSET")) {
    struct str cs;
    if (s->enabled & ENABLED_UTF8_ACCEPT)   /* RFC 6855 3: conflicting charset labels */
      return cmd_bad(c, "SEARCH CHARSET is not allowed after ENABLE UTF8=ACCEPT");
    if (!parse_sp(ps) || !parse_astring(ps, &cs) || !parse_sp(ps)) return cmd_bad_args(c);
    if (!str_ieq(cs, "US-ASCII") && !str_ieq(cs, "UTF-8")) {
      if (ret.opts & RET_SAVE) session_saved_clear(s);   /* RFC 5182 2.1 */
      return cmd_no(c, "[BADCHARSET (US-ASCII UTF-8)] Unsupported charset");
    }
  } else {
    ps->p = save;
  }
  struct skey *keys = search_parse_list(ps, 0, 0);
  if (!keys) return cmd_bad_args(c);
  if (session_rev2(s) && search_uses_recent(keys))
    return cmd_bad(c, "SEARCH NEW, OLD and RECENT are not in IMAP4rev2 (RFC 9051 Appendix E "
                      "12)");
  if (session_rev2(s) && !ret.extended) {   /* RFC 9051 6.4.4: as RETURN (ALL) */
    ret.extended = 1;
    ret.opts = RET_ALL;
  }
  if (session_uidonly(s) && search_uses_seqnums(keys))   /* RFC 9586 3.5 */
    return cmd_bad(c, "[UIDREQUIRED] Message numbers are not allowed once UIDONLY is enabled: "
                      "use UID set or ALL");
  int modseq = search_uses_modseq(keys);
  if (modseq && !cap_on(s->srv, CAP_CONDSTORE)) return cmd_bad(c, "Unknown search key MODSEQ");
  if (search_uses_objectid(keys) && !cap_on(s->srv, CAP_OBJECTID))
    return cmd_bad(c, "Unknown search key: EMAILID and THREADID need OBJECTID");
  if (modseq && s->nomodseq)   /* RFC 7162 3.1.2.2 */
    return cmd_bad(c, "SEARCH MODSEQ: this mailbox has no mod-sequences (NOMODSEQ)");
  if (search_uses_dollar(keys) && !cap_on(s->srv, CAP_SEARCHRES))
    return cmd_bad(c, "SEARCH Invalid sequence set: $");
  if ((ret.opts & RET_UPDATE) && search_find_context(s, c->tag, strlen(c->tag)))
    return cmd_bad(c, "SEARCH UPDATE: tag %s is in use by a search context", c->tag);
  if (modseq) session_enable_condstore(s);
  struct mailbox *mb = s->mb;
  struct snap *snap = mem_alloc((s->nview ? s->nview : 1) * sizeof *snap);
  if (!snap) {
    if (ret.opts & RET_SAVE) session_saved_clear(s);
    return cmd_no(c, "[SERVERBUG] Out of memory");
  }
  size_t n = 0;
  pthread_mutex_lock(&mb->lock);
  search_prepare(keys, s);
  uint64_t checked = s->seen_modseq;   /* what a context has seen of the mailbox */
  long last = -1;
  for (size_t i = 0; i < s->nview; i++) {
    long k = mailbox_find_uid_next(mb, s->view[i].uid, last);
    if (k < 0) continue;     /* expunged by another session: matches nothing */
    search_snap(s, i, &mb->msgs[k], &snap[n++]);
    last = k;
  }
  pthread_mutex_unlock(&mb->lock);
  size_t hits = 0;           /* the matches move to the front, in mailbox order */
  for (size_t i = 0; i < n; i++) {
    if (search_match(keys, &snap[i])) snap[hits++] = snap[i];
    msgdata_unref(snap[i].data);
  }
  if (ret.extended) {
    search_send_esearch(s, c, &ret, snap, hits, modseq);
  } else {
    uint64_t top = 0;
    session_send(s, "* SEARCH");
    for (size_t i = 0; i < hits; i++) {
      session_send_number(s, ' ', c->uid ? snap[i].uid : snap[i].seq);
      if (snap[i].modseq > top) top = snap[i].modseq;
    }
    if (modseq && top)   /* RFC 7162 3.1.6 */
      session_send(s, " (MODSEQ %llu)", (unsigned long long)top);
    session_send(s, "\r\n");
  }
  int saved = !(ret.opts & RET_SAVE) || search_save(s, &ret, snap, hits);
  if (ret.opts & RET_UPDATE) search_add_context(s, c, keys, snap, hits, checked);
  free(snap);
  if (!saved) {
    session_saved_clear(s);
    return cmd_no(c, "[SERVERBUG] Out of memory");
  }
  return cmd_ok(c, "%sSEARCH completed", c->uid ? "UID " : "");
}

/*
** Bring the contexts up to date with the changes the session has reported (RFC 5267
** 4.3.2-4.3.4): the messages changed since a context last looked are evaluated again and
** REMOVEFROM and ADDTO name those whose membership changed, after the EXISTS and FETCH
** responses that reported them. Expunged messages left already (session_report_expunges).
** Cost: a walk back along the change list, and the keys evaluated once per changed
** message and context, as a new SEARCH would.
*/
static void search_update_contexts(struct session *s) {
  struct mailbox *mb = s->mb;
  uint64_t from = UINT64_MAX;
  for (struct search_ctx *x = s->contexts; x; x = x->next)
    if (x->checked < from) from = x->checked;
  struct snap *snap = NULL;
  size_t n = 0, cap = 0;
  int whole = 1;             /* every change is in snap: the contexts may move on */
  pthread_mutex_lock(&mb->lock);
  uint64_t upto = s->seen_modseq;   /* later changes are not reported yet: later */
  for (uint32_t i = mb->newest; i != NO_MSG && mb->msgs[i].modseq > from;
       i = mb->msgs[i].older) {
    long k = mb->msgs[i].modseq > upto ? -1 : view_find(s, mb->msgs[i].uid);
    if (k < 0) continue;
    if (!mem_grow(&snap, &cap, n + 1, sizeof *snap)) {
      whole = 0;             /* out of memory: these now, the rest next time */
      break;
    }
    search_snap(s, (size_t)k, &mb->msgs[i], &snap[n++]);
  }
  for (struct search_ctx *x = s->contexts; x; x = x->next) search_prepare(x->keys, s);
  pthread_mutex_unlock(&mb->lock);
  if (n > 1) qsort(snap, n, sizeof *snap, cmp_snap_seq);
  unsigned char *in = mem_alloc(n ? n : 1);
  for (struct search_ctx *x = s->contexts; x && in; x = x->next) {
    size_t nadd = 0;
    struct buf add = {0}, rem = {0};
    struct set_writer wa = {&add, 0, 0, 0}, wr = {&rem, 0, 0, 0};
    for (size_t j = 0; j < n; j++) {
      size_t at = lower_bound(x->uids, x->n, sizeof x->uids[0], 0, 4, snap[j].uid);
      int was = at < x->n && x->uids[at] == snap[j].uid;
      in[j] = snap[j].modseq > x->checked ? search_match(x->keys, &snap[j]) : was;
      if (in[j] != was) set_add(in[j] ? &wa : &wr, x->uid ? snap[j].uid : snap[j].seq);
      nadd += in[j] && !was;
    }
    set_end(&wa);
    set_end(&wr);
    if (add.oom || rem.oom || !mem_grow(&x->uids, &x->cap, x->n + nadd, sizeof x->uids[0])) {
      buf_free(&add);        /* out of memory: these changes are looked at next time */
      buf_free(&rem);
      continue;
    }
    if (wa.n || wr.n) {
      size_t keep = 0;       /* the result without the removed, then the added merged in */
      for (size_t i = 0, j = 0; i < x->n; i++) {
        while (j < n && snap[j].uid < x->uids[i]) j++;
        if (j == n || snap[j].uid != x->uids[i] || in[j]) x->uids[keep++] = x->uids[i];
      }
      x->n = keep;
      for (size_t j = 0; j < n; j++) {
        if (!in[j]) continue;
        size_t at = lower_bound(x->uids, x->n, sizeof x->uids[0], 0, 4, snap[j].uid);
        if (at < x->n && x->uids[at] == snap[j].uid) continue;
        memmove(x->uids + at + 1, x->uids + at, (x->n - at) * sizeof x->uids[0]);
        x->uids[at] = snap[j].uid;
        x->n++;
      }
      session_send(s, "* ESEARCH (TAG \"%s\")%s", x->tag, x->uid ? " UID" : "");
      if (wr.n) session_send(s, " REMOVEFROM (0 %s)", rem.p);
      if (wa.n) session_send(s, " ADDTO (0 %s)", add.p);
      session_send(s, "\r\n");
    }
    if (whole) x->checked = upto;
    buf_free(&add);
    buf_free(&rem);
  }
  free(in);
  for (size_t j = 0; j < n; j++) msgdata_unref(snap[j].data);
  free(snap);
}

/*
** The untagged updates of session_sync(), and then those of the UPDATE contexts: what
** the dispatcher and IDLE send.
*/
static int search_sync(struct session *s, int allow_expunge) {
  if (!session_sync(s, allow_expunge)) return 0;
  if (s->contexts && s->mb) search_update_contexts(s);
  return 1;
}

/* RFC 5267 4.3.5 CANCELUPDATE "tag" ...: those contexts send no more updates. */
static int cmd_cancelupdate(struct session *s, struct command *c) {
  struct parser *ps = &c->ps;
  const char *args = ps->p;
  struct str tag;
  do {                       /* every tag must name a context before any is cancelled */
    if (!parse_sp(ps) || !parse_quoted(ps, &tag))
      return cmd_bad(c, "CANCELUPDATE Expected one or more quoted tags");
    if (!search_find_context(s, tag.p, tag.len))
      return cmd_bad(c, "CANCELUPDATE No search context has the tag %.*s", (int)tag.len, tag.p);
  } while (!parse_at_end(ps));
  ps->p = args;
  while (parse_sp(ps) && parse_quoted(ps, &tag)) {
    struct search_ctx **p = search_find_context(s, tag.p, tag.len), *x;
    if (!p) continue;        /* named twice */
    x = *p;
    *p = x->next;
    session_context_free(x);
    s->ncontexts--;
  }
  return cmd_ok(c, "CANCELUPDATE completed");
}

/* ------------------------------------------------------------------------- */
/*
** SORT and THREAD (RFC 5256), SORT=DISPLAY (RFC 5957), the RETURN options of ESORT and
** CONTEXT=SORT (RFC 5267 3, 4.4). Both commands search as SEARCH does (the same keys,
** parser and evaluation), then order the matches by the message model's sort keys
** (msgdata_sortkeys: read once per message, so a SORT parses no header it has seen).
** Cost: the search, then O(n log n) comparisons of stored keys; THREAD REFERENCES adds
** hash tables over the Message-IDs and base subjects, O(n + references).
*/
enum sort_key {
  SORT_ARRIVAL, SORT_CC, SORT_DATE, SORT_FROM, SORT_SIZE, SORT_SUBJECT, SORT_TO,
  SORT_DISPLAYFROM, SORT_DISPLAYTO
};
#define SORT_MAX_CRITERIA 32  /* more could only repeat a key: each adds nothing */
struct sort_order {
  struct { int key, reverse; } c[SORT_MAX_CRITERIA];
  int n;
};
struct sort_item {            /* a matching message, as SORT and THREAD compare it */
  struct snap snap;           /* holds a reference to the message's bytes */
  int64_t arrival;            /* INTERNALDATE, seconds (RFC 5256 3 ARRIVAL) */
  int64_t date;               /* the sent date (RFC 5256 2.2), INTERNALDATE if none */
  const struct sortkeys *keys;
  const struct sortaddrs *addrs;   /* NULL unless a criterion is an address */
};

/* "(criteria) ": sort-criteria (RFC 5256 5, RFC 5957 5) and the space after. */
static int sort_parse_criteria(struct session *s, struct parser *ps, struct sort_order *o) {
  static const struct { const char *name; int key; capset cap; } keys[] = {
    {"ARRIVAL", SORT_ARRIVAL, 0}, {"CC", SORT_CC, 0}, {"DATE", SORT_DATE, 0},
    {"FROM", SORT_FROM, 0}, {"SIZE", SORT_SIZE, 0}, {"SUBJECT", SORT_SUBJECT, 0},
    {"TO", SORT_TO, 0}, {"DISPLAYFROM", SORT_DISPLAYFROM, CAP_SORT_DISPLAY},
    {"DISPLAYTO", SORT_DISPLAYTO, CAP_SORT_DISPLAY}};
  if (!parse_char(ps, '(')) return parse_fail(ps, "Expected '(' and sort criteria");
  o->n = 0;
  do {
    struct str w;
    int reverse = 0;
    if (!parse_run(ps, is_atom_char, &w)) return parse_fail(ps, "Expected a sort criterion");
    if (str_ieq(w, "REVERSE")) {
      reverse = 1;
      if (!parse_char(ps, ' ') || !parse_run(ps, is_atom_char, &w))
        return parse_fail(ps, "Expected a sort criterion after REVERSE");
    }
    size_t i = 0;
    while (i < sizeof keys / sizeof keys[0] &&
           !(str_ieq(w, keys[i].name) && (!keys[i].cap || cap_on(s->srv, keys[i].cap))))
      i++;
    if (i == sizeof keys / sizeof keys[0]) return parse_fail(ps, "Unknown sort criterion");
    if (o->n == SORT_MAX_CRITERIA) return parse_fail(ps, "Too many sort criteria");
    o->c[o->n].key = keys[i].key;
    o->c[o->n++].reverse = reverse;
  } while (parse_char(ps, ' '));
  if (!parse_char(ps, ')')) return parse_fail(ps, "Expected ')' after the sort criteria");
  return parse_sp(ps);
}

/*
** "RETURN (opts) " after SORT (RFC 5267 3.1, 4.4): MIN, MAX, COUNT and ALL with ESORT;
** PARTIAL, CONTEXT and UPDATE with CONTEXT=SORT (PARTIAL also with ESORT and PARTIAL,
** RFC 9394); SAVE with SEARCHRES (RFC 5182 1: "any command based on SEARCH").
*/
static int sort_parse_return(struct session *s, struct parser *ps, struct search_return *r) {
  static const struct return_option opts[] = {
    {"MIN", RET_MIN, CAP_ESORT}, {"MAX", RET_MAX, CAP_ESORT}, {"COUNT", RET_COUNT, CAP_ESORT},
    {"ALL", RET_ALL, CAP_ESORT}, {"CONTEXT", RET_CONTEXT, CAP_CONTEXT_SORT},
    {"UPDATE", RET_UPDATE, CAP_CONTEXT_SORT}, {"PARTIAL", RET_PARTIAL, CAP_CONTEXT_SORT},
    {"SAVE", RET_SAVE, CAP_SEARCHRES}};
  if (!return_parse_options(s, ps, r, opts, sizeof opts / sizeof opts[0], CAP_PARTIAL))
    return 0;
  if (!(r->opts & ~(unsigned)(RET_CONTEXT | RET_UPDATE))) r->opts |= RET_ALL;   /* 3.3 */
  if ((r->opts & RET_ALL) && (r->opts & RET_PARTIAL))
    return parse_fail(ps, "ALL and PARTIAL may not be used together");   /* RFC 5267 4.4 */
  return parse_sp(ps);
}

static void sort_release(struct sort_item *v, size_t n) {
  for (size_t i = 0; i < n; i++) msgdata_unref(v[i].snap.data);
  free(v);
}

/*
** "charset keys" (RFC 5256 5 search-criteria: the charset is not optional), searched as
** SEARCH searches; the matches, in mailbox order with their sort keys (and the address
** keys if addresses), go to *out (free with sort_release). 0 when the tagged reply is set
** already.
*/
static int sort_search(struct session *s, struct command *c, int addresses,
                       struct sort_item **out, size_t *n_out, int *modseq_out) {
  struct parser *ps = &c->ps;
  const char *name = c->def->name;
  struct str cs;
  if (!parse_astring(ps, &cs) || !parse_sp(ps)) return cmd_bad_args(c);
  if (!str_ieq(cs, "US-ASCII") && !str_ieq(cs, "UTF-8"))
    return cmd_no(c, "[BADCHARSET (US-ASCII UTF-8)] Unsupported charset");
  struct skey *keys = search_parse_list(ps, 0, 0);
  if (!keys) return cmd_bad_args(c);
  if (session_uidonly(s) && search_uses_seqnums(keys))   /* RFC 9586 3.5 */
    return cmd_bad(c, "[UIDREQUIRED] Message numbers are not allowed once UIDONLY is enabled: "
                      "use UID set or ALL");
  int modseq = search_uses_modseq(keys);
  if (modseq && !cap_on(s->srv, CAP_CONDSTORE)) return cmd_bad(c, "Unknown search key MODSEQ");
  if (modseq && s->nomodseq)   /* RFC 7162 3.1.2.2 */
    return cmd_bad(c, "%s MODSEQ: this mailbox has no mod-sequences (NOMODSEQ)", name);
  if (search_uses_dollar(keys) && !cap_on(s->srv, CAP_SEARCHRES))
    return cmd_bad(c, "%s Invalid sequence set: $", name);
  if (modseq) session_enable_condstore(s);
  struct mailbox *mb = s->mb;
  struct sort_item *v = mem_alloc((s->nview ? s->nview : 1) * sizeof *v);
  if (!v) return cmd_no(c, "[SERVERBUG] Out of memory");
  size_t n = 0, hits = 0;
  pthread_mutex_lock(&mb->lock);
  search_prepare(keys, s);
  long last = -1;
  for (size_t i = 0; i < s->nview; i++) {
    long k = mailbox_find_uid_next(mb, s->view[i].uid, last);
    if (k < 0) continue;     /* expunged by another session: matches nothing */
    search_snap(s, i, &mb->msgs[k], &v[n].snap);
    v[n++].arrival = mb->msgs[k].internaldate;
    last = k;
  }
  pthread_mutex_unlock(&mb->lock);
  for (size_t i = 0; i < n; i++) {   /* the matches move to the front, in mailbox order */
    if (search_match(keys, &v[i].snap)) v[hits++] = v[i];
    else msgdata_unref(v[i].snap.data);
  }
  int oom = 0;
  struct build_ahead ba;     /* a large first SORT or THREAD */
  build_ahead_start(&ba, &v[0].snap.data, sizeof v[0], hits,
                    addresses ? BUILD_SORTADDRS : BUILD_SORTKEYS);
  for (size_t i = 0; i < hits && !oom; i++) {
    build_ahead_at(&ba, i);
    if (i + 4 < hits) prefetch(v[i + 4].snap.data);   /* its record, read next */
    if (i + 1 < hits) msgdata_prefetch_sortkeys(v[i + 1].snap.data, addresses);
    v[i].addrs = addresses ? msgdata_sortaddrs(v[i].snap.data) : NULL;
    if ((v[i].keys = msgdata_sortkeys(v[i].snap.data)) && (v[i].addrs || !addresses))
      v[i].date = v[i].keys->sent != INT64_MIN ? v[i].keys->sent : v[i].arrival;
    else
      oom = 1;
  }
  build_ahead_stop(&ba);
  if (oom) {
    sort_release(v, hits);
    return cmd_no(c, "[SERVERBUG] Out of memory");
  }
  *out = v;
  *n_out = hits;
  *modseq_out = modseq;
  return 1;
}

#define SORT_CMP(x, y) ((x) < (y) ? -1 : (x) > (y))

static const char *sort_text(const struct sort_item *it, int key) {
  const struct sortaddrs *a = it->addrs;
  switch (key) {
  case SORT_SUBJECT: return it->keys->text + it->keys->subject;
  case SORT_CC: return a->text + a->cc;
  case SORT_FROM: return a->text + a->from;
  case SORT_TO: return a->text + a->to;
  case SORT_DISPLAYFROM: return a->text + a->display_from;
  default: return a->text + a->display_to;
  }
}

/* Does a criterion of o read the address keys (struct sortaddrs)? */
static int sort_order_addresses(const struct sort_order *o) {
  for (int i = 0; i < o->n; i++)
    if (o->c[i].key != SORT_ARRIVAL && o->c[i].key != SORT_DATE && o->c[i].key != SORT_SIZE &&
        o->c[i].key != SORT_SUBJECT)
      return 1;
  return 0;
}

/* RFC 5256 3: criterion by criterion, then the implicit sequence number, never reversed. */
static int sort_compare(const struct sort_item *a, const struct sort_item *b,
                        const struct sort_order *o) {
  for (int i = 0; i < o->n; i++) {
    int r;
    switch (o->c[i].key) {
    case SORT_ARRIVAL: r = SORT_CMP(a->arrival, b->arrival); break;
    case SORT_DATE: r = SORT_CMP(a->date, b->date); break;
    case SORT_SIZE: r = SORT_CMP(a->snap.size, b->snap.size); break;
    default: r = strcmp(sort_text(a, o->c[i].key), sort_text(b, o->c[i].key));
    }
    if (r) return o->c[i].reverse ? -r : r;
  }
  return SORT_CMP(a->snap.seq, b->snap.seq);
}

/*
** An item as sort_items moves it: the first criterion as numbers, ordered as it sorts,
** and if that is a text, the text, so that equal subjects (a thread's) compare without
** the switch of sort_compare; the item's sequence number decides last (RFC 5256 3).
*/
struct sort_ref {
  uint64_t key, key2;         /* key2: a text's second 8 bytes (sorted neighbours often
                                 share the first 8, "MEETING:"), else 0 */
  const char *text;
  struct sort_item *it;
};

/* Does x sort before y? */
static int sort_ref_before(const struct sort_ref *x, const struct sort_ref *y,
                           const struct sort_order *o) {
  if (x->key != y->key) return x->key < y->key;
  if (x->key2 != y->key2) return x->key2 < y->key2;
  if (x->text && o->n == 1) {   /* the one criterion a text, its first 16 bytes equal */
    int r = strcmp(x->text, y->text);
    if (r) return o->c[0].reverse ? r > 0 : r < 0;
    return x->it->snap.seq < y->it->snap.seq;
  }
  return sort_compare(x->it, y->it, o) < 0;
}

/*
** Merge sort of v[0..n) by o (qsort takes no context); 0 if memory ran out. The sort moves
** refs (struct sort_ref), each with its first criterion as numbers: a text's first 16 bytes
** as two big-endian halves (as strcmp orders them: unsigned, an end before any byte), a
** date or size with its sign bit flipped, reversed by complement; only equal keys compare
** the items.
*/
static int sort_items(struct sort_item **v, size_t n, const struct sort_order *o) {
  struct sort_ref *src = mem_alloc((n ? n : 1) * 2 * sizeof *src);
  if (!src) return 0;
  struct sort_ref *dst = src + n;
  int key = o->n ? o->c[0].key : SORT_ARRIVAL, reverse = o->n && o->c[0].reverse;
  for (size_t i = 0; i < n; i++) {
    struct sort_item *it = v[i];
    uint64_t p = 0, p2 = 0;
    const char *text = NULL;
    if (key == SORT_ARRIVAL || key == SORT_DATE) {
      p = (uint64_t)(key == SORT_DATE ? it->date : it->arrival) ^ (UINT64_C(1) << 63);
    } else if (key == SORT_SIZE) {
      p = it->snap.size;
    } else {
      const char *t = text = sort_text(it, key);
      for (int b = 0; b < 16; b++) {
        uint64_t *half = b < 8 ? &p : &p2;
        *half = *half << 8 | (unsigned char)*t;
        t += *t != 0;
      }
    }
    src[i] = (struct sort_ref){reverse ? ~p : p, reverse ? ~p2 : p2, text, it};
  }
  for (size_t w = 1; w < n; w *= 2) {
    for (size_t lo = 0; lo < n; lo += 2 * w) {
      size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
      size_t i = lo, j = mid, k = lo;
      while (i < mid && j < hi)
        dst[k++] = sort_ref_before(&src[j], &src[i], o) ? src[j++] : src[i++];
      while (i < mid) dst[k++] = src[i++];
      while (j < hi) dst[k++] = src[j++];
    }
    struct sort_ref *t = src;
    src = dst;
    dst = t;
  }
  for (size_t i = 0; i < n; i++) v[i] = src[i].it;
  free(src < dst ? src : dst);
  return 1;
}

/*
** results [from, to) of v as a sequence-set in sort order (RFC 5267 3.2): a range only
** where the numbers ascend one by one, so "5,3:4,2" and never "4:3".
*/
static void sort_send_set(struct session *s, struct sort_item **v, size_t from, size_t to,
                          int uid) {
#define RESULT(x) (uid ? (x)->snap.uid : (x)->snap.seq)
  for (size_t i = from, j; i < to; i = j) {
    for (j = i + 1; j < to && RESULT(v[j]) == RESULT(v[j - 1]) + 1; j++) continue;
    session_send_number(s, i > from ? ',' : 0, RESULT(v[i]));
    if (j - i > 1) session_send_number(s, ':', RESULT(v[j - 1]));
  }
#undef RESULT
}

/*
** The answer to SORT RETURN (...) (RFC 5267 3.1): "* ESEARCH (TAG "t") [UID] ..." like
** SEARCH's, but MIN and MAX are the first and last in sort order, ALL and PARTIAL follow
** the sort order; MODSEQ as for SEARCH (RFC 7162 3.1.10).
*/
static void sort_send_esearch(struct session *s, struct command *c,
                              const struct search_return *r, struct sort_item **v, size_t n,
                              int modseq) {
  unsigned o = r->opts;
  if (!(o & ~(unsigned)(RET_SAVE | RET_CONTEXT)) && (o & RET_SAVE)) return;   /* RFC 5182 1 */
  size_t from = 0, to = 0;
  if (o & RET_PARTIAL) partial_window(&r->partial, n, &from, &to);
  session_send(s, "* ESEARCH (TAG \"%s\")%s", c->tag, c->uid ? " UID" : "");
  if (n && (o & RET_MIN)) session_send(s, " MIN %u", c->uid ? v[0]->snap.uid : v[0]->snap.seq);
  if (n && (o & RET_MAX))
    session_send(s, " MAX %u", c->uid ? v[n - 1]->snap.uid : v[n - 1]->snap.seq);
  if (o & RET_COUNT) session_send(s, " COUNT %zu", n);
  if (n && (o & RET_ALL)) {
    session_send(s, " ALL ");
    sort_send_set(s, v, 0, n, c->uid);
  }
  if (o & RET_PARTIAL) {
    const struct partial *p = &r->partial;
    session_send(s, p->neg ? " PARTIAL (-%u:-%u " : " PARTIAL (%u:%u ", p->lo, p->hi);
    sort_send_set(s, v, from, to, c->uid);
    session_send(s, "%s)", from < to ? "" : "NIL");
  }
  uint64_t top = 0;
  for (size_t i = 0; modseq && (o & ~(unsigned)(RET_SAVE | RET_CONTEXT | RET_UPDATE)) && i < n;
       i++)
    if (search_returned(o, i, n, from, to) && v[i]->snap.modseq > top) top = v[i]->snap.modseq;
  if (top) session_send(s, " MODSEQ %llu", (unsigned long long)top);
  session_send(s, "\r\n");
}

static int cmp_uint32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return SORT_CMP(x, y);
}

/*
** SAVE (RFC 5182 2.1, 2.4): "$" becomes the messages the options returned, MIN and MAX
** the first and last in sort order; kept as search_save keeps it, ascending UIDs.
*/
static int sort_save(struct session *s, const struct search_return *r, struct sort_item **v,
                     size_t n) {
  size_t from = 0, to = 0, k = 0;
  if (r->opts & RET_PARTIAL) partial_window(&r->partial, n, &from, &to);
  uint32_t *uids = mem_alloc((n ? n : 1) * sizeof *uids);
  if (!uids) return 0;
  for (size_t i = 0; i < n; i++)
    if (search_returned(r->opts, i, n, from, to)) uids[k++] = v[i]->snap.uid;
  qsort(uids, k, sizeof *uids, cmp_uint32);
  session_saved_clear(s);
  s->saved = uids;
  s->nsaved = k;
  return 1;
}

/*
** RFC 5256 3 SORT (criteria) charset keys, and UID SORT; with RETURN (RFC 5267 3) the
** answer is one ESEARCH response. UPDATE (RFC 5267 4.3) is refused with NOUPDATE: this
** server keeps contexts for SEARCH only.
*/
static int cmd_sort(struct session *s, struct command *c) {
  struct parser *ps = &c->ps;
  struct search_return ret = {0};
  struct sort_order order;
  if (!parse_sp(ps)) return cmd_bad_args(c);
  const char *at = ps->p;
  struct str w;
  if (cap_on(s->srv, CAP_ESORT) && parse_run(ps, is_atom_char, &w) && str_ieq(w, "RETURN")) {
    if (!sort_parse_return(s, ps, &ret)) return cmd_bad_args(c);
  } else {
    ps->p = at;
  }
  if (!sort_parse_criteria(s, ps, &order)) {
    if (ret.opts & RET_SAVE) session_saved_clear(s);   /* RFC 5182 2.1 */
    return cmd_bad_args(c);
  }
  struct sort_item *items;
  size_t n;
  int modseq;
  if (!sort_search(s, c, sort_order_addresses(&order), &items, &n, &modseq)) {
    if (ret.opts & RET_SAVE) session_saved_clear(s);   /* RFC 5182 2.1 */
    return 0;
  }
  struct sort_item **v = mem_alloc((n ? n : 1) * sizeof *v);
  int sorted = 0;
  if (v) {
    for (size_t i = 0; i < n; i++) v[i] = &items[i];
    sorted = sort_items(v, n, &order);
  }
  if (!sorted || ((ret.opts & RET_SAVE) && !sort_save(s, &ret, v, n))) {
    free(v);
    sort_release(items, n);
    if (ret.opts & RET_SAVE) session_saved_clear(s);
    return cmd_no(c, "[SERVERBUG] Out of memory");
  }
  if (ret.extended) {
    sort_send_esearch(s, c, &ret, v, n, modseq);
    if (ret.opts & RET_UPDATE)   /* RFC 5267 4.3.1 */
      session_send(s, "* NO [NOUPDATE \"%s\"] SORT results are not kept up to date\r\n",
                   c->tag);
  } else {
    uint64_t top = 0;
    session_send(s, "* SORT");
    for (size_t i = 0; i < n; i++) {
      session_send_number(s, ' ', c->uid ? v[i]->snap.uid : v[i]->snap.seq);
      if (v[i]->snap.modseq > top) top = v[i]->snap.modseq;
    }
    if (modseq && top)   /* RFC 7162 3.1.6 */
      session_send(s, " (MODSEQ %llu)", (unsigned long long)top);
    session_send(s, "\r\n");
  }
  free(v);
  sort_release(items, n);
  return cmd_ok(c, "%sSORT completed", c->uid ? "UID " : "");
}

/*
** THREAD (RFC 5256 3). A thread tree is nodes linked by index: node 0 is the root of
** step 2, a node with item -1 a dummy. Every walk is iterative (an explicit stack), so a
** reply chain thousands deep costs no C stack.
*/
struct thread_node {
  int item;                   /* index in the matches, or -1: a dummy message */
  int parent, child, next;    /* -1: none; a node's children are a list through next */
};
struct thread {
  struct sort_item *items;
  struct thread_node *nodes;
  int n;
};
struct thread_key {           /* what siblings are ordered by (RFC 5256 2.2) */
  int64_t date;
  uint32_t seq;
  int node;
};
struct thread_map {           /* Message-ID or base subject -> node, open addressing */
  const char **keys;
  int *vals;
  size_t cap;                 /* a power of two, at least twice the keys */
};

static int thread_map_init(struct thread_map *m, size_t n) {
  for (m->cap = 16; m->cap < 2 * n; m->cap *= 2) continue;
  m->keys = mem_calloc(m->cap, sizeof *m->keys);
  m->vals = mem_alloc(m->cap * sizeof *m->vals);
  return m->keys && m->vals;
}

static void thread_map_free(struct thread_map *m) {
  free(m->keys);
  free(m->vals);
}

/* The slot of key: where it is, or the empty slot where it would go (FNV-1a hash). */
static size_t thread_map_slot(const struct thread_map *m, const char *key) {
  uint64_t h = 14695981039346656037u;
  for (const unsigned char *p = (const unsigned char *)key; *p; p++) h = (h ^ *p) * 1099511628211u;
  size_t i = (size_t)h & (m->cap - 1);
  while (m->keys[i] && strcmp(m->keys[i], key) != 0) i = (i + 1) & (m->cap - 1);
  return i;
}

static int thread_new(struct thread *t, int item) {
  t->nodes[t->n] = (struct thread_node){item, -1, -1, -1};
  return t->n++;
}

/* The node of a Message-ID: made a dummy the first time it is named (RFC 5256 3 1A). */
static int thread_id_node(struct thread *t, struct thread_map *ids, const char *id) {
  size_t i = thread_map_slot(ids, id);
  if (!ids->keys[i]) {
    ids->keys[i] = id;
    ids->vals[i] = thread_new(t, -1);
  }
  return ids->vals[i];
}

/* Would making p the parent of c make a loop: is c p itself or above it? */
static int thread_loops(const struct thread *t, int p, int c) {
  for (int x = p; x >= 0; x = t->nodes[x].parent)
    if (x == c) return 1;
  return 0;
}

static void thread_link(struct thread *t, int parent, int child) {
  t->nodes[child].parent = parent;
  t->nodes[child].next = t->nodes[parent].child;
  t->nodes[parent].child = child;
}

static void thread_unlink(struct thread *t, int child) {
  int *link = &t->nodes[t->nodes[child].parent].child;
  while (*link != child) link = &t->nodes[*link].next;
  *link = t->nodes[child].next;
  t->nodes[child].parent = t->nodes[child].next = -1;
}

/* The message a node is sorted and named by: itself, or a dummy's first child. */
static const struct sort_item *thread_item(const struct thread *t, int x) {
  while (t->nodes[x].item < 0 && t->nodes[x].child >= 0) x = t->nodes[x].child;
  return t->nodes[x].item >= 0 ? &t->items[t->nodes[x].item] : NULL;
}

static int cmp_thread_key(const void *a, const void *b) {
  const struct thread_key *x = a, *y = b;
  int r = SORT_CMP(x->date, y->date);
  return r ? r : SORT_CMP(x->seq, y->seq);
}

/* Order p's children by sent date, a dummy by its first child's (RFC 5256 3 steps 4, 6). */
static void thread_sort_children(struct thread *t, int p, struct thread_key *tmp) {
  size_t k = 0;
  for (int c = t->nodes[p].child; c >= 0; c = t->nodes[c].next) {
    const struct sort_item *m = thread_item(t, c);
    tmp[k++] = (struct thread_key){m ? m->date : 0, m ? m->snap.seq : 0, c};
  }
  if (k < 2) return;
  qsort(tmp, k, sizeof *tmp, cmp_thread_key);
  t->nodes[p].child = tmp[0].node;
  for (size_t i = 0; i + 1 < k; i++) t->nodes[tmp[i].node].next = tmp[i + 1].node;
  t->nodes[tmp[k - 1].node].next = -1;
}

/* The nodes under the root, parents before children, into order; its length. */
static size_t thread_preorder(const struct thread *t, int *order, int *stack) {
  size_t k = 0, top = 0;
  stack[top++] = 0;
  while (top) {
    int x = stack[--top];
    order[k++] = x;
    for (int c = t->nodes[x].child; c >= 0; c = t->nodes[c].next) stack[top++] = c;
  }
  return k;
}

/*
** RFC 5256 3 step 3, for the children of p (whose own children are pruned already): a
** dummy with no children goes; one with children gives way to them, except that under
** the root a dummy with more than one child stays.
*/
static void thread_prune(struct thread *t, int p) {
  int *link = &t->nodes[p].child;
  while (*link >= 0) {
    struct thread_node *x = &t->nodes[*link];
    if (x->item >= 0 || (p == 0 && x->child >= 0 && t->nodes[x->child].next >= 0)) {
      link = &x->next;
    } else if (x->child < 0) {
      *link = x->next;
    } else {
      int last = x->child;
      for (int c = x->child; c >= 0; c = t->nodes[c].next) {
        t->nodes[c].parent = p;
        last = c;
      }
      t->nodes[last].next = x->next;
      *link = x->child;
      link = &t->nodes[last].next;
    }
  }
}

/* The thread subject of a child of the root (RFC 5256 3 step 5.B.i). */
static const char *thread_subject(const struct thread *t, int x) {
  const struct sort_item *m = thread_item(t, x);
  return m ? m->keys->text + m->keys->subject : "";
}

static int thread_is_reply(const struct thread *t, int x) {
  return t->nodes[x].item >= 0 && t->items[t->nodes[x].item].keys->reply;
}

/*
** RFC 5256 3 step 5: threads under the root with the same base subject come together.
** The root's list is taken apart first and made again at the end (unlinking from a list
** of thousands, once per merge, would cost O(n^2)); roots[i] becomes -1 once merged.
*/
static int thread_by_subject(struct thread *t, int *roots) {
  struct thread_map subj;
  size_t n = 0;
  for (int c = t->nodes[0].child; c >= 0; c = t->nodes[c].next) roots[n++] = c;
  if (!thread_map_init(&subj, n)) {
    thread_map_free(&subj);
    return 0;
  }
  for (size_t i = 0; i < n; i++) {   /* (B) one message a subject, a dummy or not a reply */
    const char *key = thread_subject(t, roots[i]);
    if (!*key) continue;
    size_t k = thread_map_slot(&subj, key);
    int r = roots[i], cur = subj.vals[k];
    if (!subj.keys[k]) {
      subj.keys[k] = key;
      subj.vals[k] = r;
    } else if (t->nodes[cur].item >= 0 &&
               (t->nodes[r].item < 0 || (thread_is_reply(t, cur) && !thread_is_reply(t, r)))) {
      subj.vals[k] = r;
    }
  }
  int first_new = t->n;
  t->nodes[0].child = -1;
  for (size_t i = 0; i < n; i++) t->nodes[roots[i]].parent = t->nodes[roots[i]].next = -1;
  for (size_t i = 0; i < n; i++) {   /* (C) merge */
    const char *key = thread_subject(t, roots[i]);
    if (!*key) continue;
    size_t k = thread_map_slot(&subj, key);
    int r = roots[i], to = subj.vals[k];
    if (to == r) continue;
    roots[i] = -1;
    if (t->nodes[to].item < 0 && t->nodes[r].item < 0) {   /* their children are siblings */
      for (int c = t->nodes[r].child, next; c >= 0; c = next) {
        next = t->nodes[c].next;
        thread_link(t, to, c);
      }
      t->nodes[r].child = -1;
    } else if (t->nodes[to].item < 0 || (thread_is_reply(t, r) && !thread_is_reply(t, to))) {
      thread_link(t, to, r);
    } else {                 /* a new dummy holds both */
      int d = thread_new(t, -1);
      thread_link(t, d, to);
      thread_link(t, d, r);
      subj.vals[k] = d;
    }
  }
  for (size_t i = 0; i < n; i++)   /* the root's list again: what is left on top */
    if (roots[i] >= 0 && t->nodes[roots[i]].parent < 0) thread_link(t, 0, roots[i]);
  for (int d = first_new; d < t->n; d++)
    if (t->nodes[d].parent < 0) thread_link(t, 0, d);
  thread_map_free(&subj);
  return 1;
}

/* Link the messages by their references (RFC 5256 3 steps 1 and 2). */
static int thread_link_references(struct thread *t, size_t n, size_t nrefs) {
  struct thread_map ids;
  if (!thread_map_init(&ids, n + nrefs)) {
    thread_map_free(&ids);
    return 0;
  }
  thread_new(t, -1);         /* node 0: the root */
  for (size_t i = 0; i < n; i++) {
    const struct sortkeys *k = t->items[i].keys;
    int me = k->msgid != SORTKEY_NONE ? thread_id_node(t, &ids, k->text + k->msgid) : -1;
    if (me < 0 || t->nodes[me].item >= 0) me = thread_new(t, -1);   /* none, or a duplicate */
    t->nodes[me].item = (int)i;
    int prev = -1;
    const char *ref = k->text + k->refs;
    for (uint32_t j = 0; j < k->nrefs; j++, ref += strlen(ref) + 1) {   /* (1A) */
      int cur = thread_id_node(t, &ids, ref);
      if (prev >= 0 && t->nodes[cur].parent < 0 && !thread_loops(t, prev, cur))
        thread_link(t, prev, cur);
      prev = cur;
    }
    if (t->nodes[me].parent >= 0) thread_unlink(t, me);   /* (1B) the last reference wins */
    if (prev >= 0 && !thread_loops(t, prev, me)) thread_link(t, prev, me);
  }
  thread_map_free(&ids);
  for (int x = 1, end = t->n; x < end; x++)   /* (2) */
    if (t->nodes[x].parent < 0) thread_link(t, 0, x);
  return 1;
}

/* "(3 6 (4 23)(44 7 96))" for each thread under the root (RFC 5256 4), into s->out. */
static void thread_send(struct session *s, const struct thread *t, int *stack, int uid) {
  size_t top = 0;
#define PUSH_CHILDREN(p)                                                       \
  do {                                                                         \
    size_t from_ = top;                                                        \
    for (int c_ = t->nodes[p].child; c_ >= 0; c_ = t->nodes[c_].next) stack[top++] = c_; \
    for (size_t i_ = from_, j_ = top; i_ + 1 < j_; i_++, j_--) {               \
      int x_ = stack[i_];                                                      \
      stack[i_] = stack[j_ - 1];                                               \
      stack[j_ - 1] = x_;                                                      \
    }                                                                          \
  } while (0)
  session_sendn(s, "* THREAD", 8);   /* no printf: 10,000 numbers and parentheses */
  PUSH_CHILDREN(0);
  if (top) session_sendn(s, " ", 1);
  while (top) {
    int x = stack[--top];
    if (x < 0) {
      session_sendn(s, ")", 1);
      continue;
    }
    session_sendn(s, "(", 1);
    for (int any = 0;;) {    /* down the chain while a node has one child */
      const struct thread_node *nd = &t->nodes[x];
      if (nd->item >= 0) {
        const struct snap *m = &t->items[nd->item].snap;
        session_send_number(s, any++ ? ' ' : 0, uid ? m->uid : m->seq);
      }
      if (nd->child < 0) {
        session_sendn(s, ")", 1);
        break;
      }
      if (t->nodes[nd->child].next < 0) {
        x = nd->child;
        continue;
      }
      if (any) session_sendn(s, " ", 1);
      stack[top++] = -1;     /* ")" once the subthreads are out */
      PUSH_CHILDREN(x);
      break;
    }
  }
#undef PUSH_CHILDREN
  session_sendn(s, "\r\n", 2);
}

/* THREAD REFERENCES (RFC 5256 3): steps 1-6, then the THREAD response. 0: no memory. */
static int thread_references(struct session *s, struct command *c, struct sort_item *items,
                             size_t n) {
  size_t nrefs = 0;
  for (size_t i = 0; i < n; i++) nrefs += items[i].keys->nrefs;
  size_t cap = 2 + 2 * n + nrefs;   /* root, messages, dummies of ids and of step 5 */
  struct thread t = {items, mem_alloc(cap * sizeof *t.nodes), 0};
  int *order = mem_alloc(cap * 2 * sizeof *order);
  struct thread_key *keys = mem_alloc(cap * sizeof *keys);
  int ok = t.nodes && order && keys && thread_link_references(&t, n, nrefs);
  if (ok) {
    int *stack = order + cap;
    size_t k = thread_preorder(&t, order, stack);
    for (size_t i = k; i-- > 0;) thread_prune(&t, order[i]);   /* (3) children first */
    for (int x = t.nodes[0].child; x >= 0; x = t.nodes[x].next)   /* (4) */
      if (t.nodes[x].item < 0) thread_sort_children(&t, x, keys);
    thread_sort_children(&t, 0, keys);
    ok = thread_by_subject(&t, stack);   /* (5) */
  }
  if (ok) {
    size_t k = thread_preorder(&t, order, order + cap);
    for (size_t i = k; i-- > 0;) thread_sort_children(&t, order[i], keys);   /* (6) */
    thread_send(s, &t, order, c->uid);
  }
  free(t.nodes);
  free(order);
  free(keys);
  return ok;
}

/*
** THREAD ORDEREDSUBJECT (RFC 5256 3): by base subject then sent date; a thread per
** subject, the threads in the order of their first messages' sent dates, the second
** and later messages children of the first.
*/
static int thread_orderedsubject(struct session *s, struct command *c, struct sort_item *items,
                                 size_t n) {
  struct sort_order by = {{{SORT_SUBJECT, 0}, {SORT_DATE, 0}}, 2};
  struct sort_item **v = mem_alloc((n ? n : 1) * sizeof *v);
  struct thread_key *threads = mem_alloc((n ? n : 1) * sizeof *threads);
  if (v)
    for (size_t i = 0; i < n; i++) v[i] = &items[i];
  if (!v || !threads || !sort_items(v, n, &by)) {
    free(v);
    free(threads);
    return 0;
  }
  size_t nt = 0;
  for (size_t i = 0; i < n; i++)
    if (i == 0 || strcmp(sort_text(v[i], SORT_SUBJECT), sort_text(v[i - 1], SORT_SUBJECT)) != 0)
      threads[nt++] = (struct thread_key){v[i]->date, v[i]->snap.seq, (int)i};
  qsort(threads, nt, sizeof *threads, cmp_thread_key);
  session_send(s, "* THREAD%s", nt ? " " : "");
#define RESULT(x) (c->uid ? (x)->snap.uid : (x)->snap.seq)
  for (size_t i = 0; i < nt; i++) {
    size_t from = (size_t)threads[i].node, to = from + 1;
    while (to < n && strcmp(sort_text(v[to], SORT_SUBJECT), sort_text(v[from], SORT_SUBJECT)) == 0)
      to++;
    session_send(s, "(%u", RESULT(v[from]));
    if (to - from == 2) session_send(s, " %u", RESULT(v[from + 1]));
    else if (to - from > 2) {
      session_send(s, " ");
      for (size_t j = from + 1; j < to; j++) session_send(s, "(%u)", RESULT(v[j]));
    }
    session_send(s, ")");
  }
#undef RESULT
  session_send(s, "\r\n");
  free(v);
  free(threads);
  return 1;
}

/* RFC 5256 3 THREAD algorithm charset keys, and UID THREAD. */
static int cmd_thread(struct session *s, struct command *c) {
  struct parser *ps = &c->ps;
  struct str alg;
  if (!parse_sp(ps) || !parse_atom(ps, &alg) || !parse_sp(ps)) return cmd_bad_args(c);
  int refs = str_ieq(alg, "REFERENCES");
  if (!(refs ? cap_on(s->srv, CAP_THREAD_REFERENCES)
             : str_ieq(alg, "ORDEREDSUBJECT") && cap_on(s->srv, CAP_THREAD_ORDEREDSUBJECT)))
    return cmd_bad(c, "THREAD Unknown threading algorithm %.*s", (int)alg.len, alg.p);
  struct sort_item *items;
  size_t n;
  int modseq;
  if (!sort_search(s, c, 0, &items, &n, &modseq)) return 0;
  int ok = refs ? thread_references(s, c, items, n) : thread_orderedsubject(s, c, items, n);
  sort_release(items, n);
  if (!ok) return cmd_no(c, "[SERVERBUG] Out of memory");
  return cmd_ok(c, "%sTHREAD completed", c->uid ? "UID " : "");
}

/*
** ===========================================================================
** 8  FETCH
** ===========================================================================
** Owns: fetch items and body sections (RFC 3501 6.4.5, 7.4.2; BINARY, RFC 3516 4.2), and
** the FETCH command.
** Calls: sections 1-3, 5 and 6.
** Locking: the mailbox is locked once, to set \Seen where a fetch implies it and to take
** a snapshot (UID, flags, date, a reference to the bytes) of each message; the responses
** are then written with no lock held, so a slow client holds up nobody.
**
** ENVELOPE, BODY and BODYSTRUCTURE come from the message's cached metadata.
*/
enum fetch_kind {
  FI_UID, FI_FLAGS, FI_INTERNALDATE, FI_SIZE, FI_ENVELOPE, FI_BODY, FI_BODYSTRUCTURE,
  FI_RFC822, FI_RFC822_HEADER, FI_RFC822_TEXT, FI_SECTION, FI_MODSEQ, FI_BINARY,
  FI_BINARY_SIZE, FI_EMAILID, FI_THREADID
};
enum section_text { SEC_ALL, SEC_HEADER, SEC_FIELDS, SEC_FIELDS_NOT, SEC_TEXT, SEC_MIME };
struct fetch_item {
  int kind;
  int peek;
  uint32_t path[IMAPMEM_MAX_DEPTH];   /* part numbers */
  int npath;
  int text;                   /* enum section_text */
  struct str *fields;         /* HEADER.FIELDS names, in the arena */
  int nfields, capfields;
  int partial;
  uint32_t origin, count;
  const char *echo;           /* "BODY[1.HEADER]<0>" as the response names it */
  struct fetch_item *next;
};
struct fetch_snap {
  uint32_t seq, uid, flags;
  uint64_t keywords;
  uint64_t modseq;
  int recent;
  int64_t internaldate;
  int tz;
  struct msgdata *data;
};

static int fetch_parse_section(struct parser *ps, struct fetch_item *it) {
  struct buf echo = {0};
  buf_adds(&echo, "BODY[");
  it->text = SEC_ALL;
  while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
    uint32_t n;
    if (!parse_nz_number(ps, &n)) goto fail;
    if (it->npath == IMAPMEM_MAX_DEPTH) {
      parse_fail(ps, "Section part number too deep");
      goto fail;
    }
    it->path[it->npath++] = n;
    buf_printf(&echo, "%s%u", it->npath > 1 ? "." : "", n);
    if (!parse_char(ps, '.')) break;
    if (!(ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')) {
      buf_addc(&echo, '.');
      break;
    }
  }
  if (!parse_peek(ps, ']')) {
    struct str w;
    if (!parse_run(ps, is_atom_char, &w)) {
      parse_fail(ps, "Invalid section");
      goto fail;
    }
    if (str_ieq(w, "HEADER")) it->text = SEC_HEADER;
    else if (str_ieq(w, "TEXT")) it->text = SEC_TEXT;
    else if (str_ieq(w, "MIME") && it->npath) it->text = SEC_MIME;
    else if (str_ieq(w, "HEADER.FIELDS")) it->text = SEC_FIELDS;
    else if (str_ieq(w, "HEADER.FIELDS.NOT")) it->text = SEC_FIELDS_NOT;
    else {
      parse_fail(ps, "Invalid section: expected HEADER, HEADER.FIELDS[.NOT], TEXT or MIME");
      goto fail;
    }
    for (size_t i = 0; i < w.len; i++) buf_addc(&echo, (char)toupper((unsigned char)w.p[i]));
    if (it->text == SEC_FIELDS || it->text == SEC_FIELDS_NOT) {
      if (!parse_sp(ps) || !parse_char(ps, '(')) {
        parse_fail(ps, "Expected a list of header field names");
        goto fail;
      }
      buf_adds(&echo, " (");
      do {
        struct str f;
        if (!parse_astring(ps, &f)) goto fail;
        if (it->nfields == it->capfields) {
          int ncap = it->capfields ? it->capfields * 2 : 8;
          struct str *nf = arena_alloc(ps->arena, (size_t)ncap * sizeof *nf);
          if (!nf) {
            parse_fail(ps, "Out of memory");
            goto fail;
          }
          if (it->nfields) memcpy(nf, it->fields, (size_t)it->nfields * sizeof *nf);
          it->fields = nf;
          it->capfields = ncap;
        }
        it->fields[it->nfields++] = f;
        if (it->nfields > 1) buf_addc(&echo, ' ');
        int atom = f.len > 0;
        for (size_t i = 0; i < f.len; i++) atom &= is_atom_char((unsigned char)f.p[i]);
        if (atom) buf_add(&echo, f.p, f.len);
        else out_string(&echo, f.p, f.len);
      } while (parse_char(ps, ' '));
      if (!parse_char(ps, ')')) {
        parse_fail(ps, "Expected ')' after header field names");
        goto fail;
      }
      buf_addc(&echo, ')');
    }
  } else if (echo.len && echo.p[echo.len - 1] == '.') {
    parse_fail(ps, "Invalid section");
    goto fail;
  }
  if (!parse_char(ps, ']')) {
    parse_fail(ps, "Expected ']' to end the section");
    goto fail;
  }
  buf_addc(&echo, ']');
  if (parse_char(ps, '<')) {
    if (!parse_number(ps, &it->origin) || !parse_char(ps, '.') ||
        !parse_nz_number(ps, &it->count) || !parse_char(ps, '>')) {
      parse_fail(ps, "Invalid partial: expected <origin.count>");
      goto fail;
    }
    it->partial = 1;
    buf_printf(&echo, "<%u>", it->origin);
  }
  if (echo.oom || !(it->echo = arena_strndup(ps->arena, echo.p, echo.len))) {
    parse_fail(ps, "Out of memory");
    goto fail;
  }
  buf_free(&echo);
  return 1;
fail:
  buf_free(&echo);
  return 0;
}

/*
** RFC 3516 7: section-binary = "[" [section-part] "]", then for BINARY[.PEEK] an optional
** partial "<" number "." nz-number ">". Part numbers only: no HEADER, TEXT or MIME.
*/
static int fetch_parse_binary(struct parser *ps, struct fetch_item *it) {
  struct buf echo = {0};
  buf_adds(&echo, it->kind == FI_BINARY ? "BINARY[" : "BINARY.SIZE[");
  int ok = parse_char(ps, '[') || parse_fail(ps, "BINARY needs a section: BINARY[1.2]");
  while (ok && !parse_peek(ps, ']')) {
    uint32_t n;
    if (it->npath && !parse_char(ps, '.')) ok = parse_fail(ps, "Expected '.' or ']'");
    else if (!parse_nz_number(ps, &n)) ok = parse_fail(ps, "BINARY sections are part numbers");
    else if (it->npath == IMAPMEM_MAX_DEPTH) ok = parse_fail(ps, "Section part number too deep");
    else {
      it->path[it->npath++] = n;
      buf_printf(&echo, "%s%u", it->npath > 1 ? "." : "", n);
    }
  }
  ok = ok && parse_char(ps, ']');
  buf_addc(&echo, ']');
  if (ok && it->kind == FI_BINARY && parse_char(ps, '<')) {
    if (!parse_number(ps, &it->origin) || !parse_char(ps, '.') ||
        !parse_nz_number(ps, &it->count) || !parse_char(ps, '>'))
      ok = parse_fail(ps, "Invalid partial: expected <origin.count>");
    it->partial = 1;
    buf_printf(&echo, "<%u>", it->origin);
  }
  if (ok && (echo.oom || !(it->echo = arena_strndup(ps->arena, echo.p, echo.len))))
    ok = parse_fail(ps, "Out of memory");
  buf_free(&echo);
  return ok;
}

static struct fetch_item *fetch_add(struct parser *ps, struct fetch_item ***tail, int kind) {
  struct fetch_item *it = parse_new(ps, sizeof *it);
  if (it) {
    it->kind = kind;
    **tail = it;
    *tail = &it->next;
  }
  return it;
}

static int fetch_parse_att(struct parser *ps, struct fetch_item ***tail) {
  static const struct { const char *name; int kind; } atts[] = {
    {"UID", FI_UID}, {"FLAGS", FI_FLAGS}, {"INTERNALDATE", FI_INTERNALDATE},
    {"RFC822.SIZE", FI_SIZE}, {"ENVELOPE", FI_ENVELOPE}, {"BODYSTRUCTURE", FI_BODYSTRUCTURE},
    {"RFC822", FI_RFC822}, {"RFC822.HEADER", FI_RFC822_HEADER},
    {"RFC822.TEXT", FI_RFC822_TEXT}, {"MODSEQ", FI_MODSEQ}, {"EMAILID", FI_EMAILID},
    {"THREADID", FI_THREADID}};
  struct str w;
  const char *s = ps->p;
  while (ps->p < ps->end && is_atom_char((unsigned char)*ps->p) && *ps->p != '[') ps->p++;
  w = str_make(s, (size_t)(ps->p - s));
  if (!w.len) return parse_fail(ps, "Expected a fetch attribute");
  for (size_t i = 0; i < sizeof atts / sizeof atts[0]; i++)
    if (str_ieq(w, atts[i].name)) return fetch_add(ps, tail, atts[i].kind) != NULL;
  if (str_ieq(w, "BODY") || str_ieq(w, "BODY.PEEK")) {
    int peek = w.len == 9;
    if (!parse_char(ps, '[')) {
      if (peek) return parse_fail(ps, "BODY.PEEK needs a section");
      return fetch_add(ps, tail, FI_BODY) != NULL;
    }
    struct fetch_item *it = fetch_add(ps, tail, FI_SECTION);
    if (!it) return 0;
    it->peek = peek;
    return fetch_parse_section(ps, it);
  }
  int size = str_ieq(w, "BINARY.SIZE");
  if (size || str_ieq(w, "BINARY") || str_ieq(w, "BINARY.PEEK")) {   /* RFC 3516 4.2 */
    struct fetch_item *it = fetch_add(ps, tail, size ? FI_BINARY_SIZE : FI_BINARY);
    if (!it) return 0;
    it->peek = w.len == 11 && !size;
    return fetch_parse_binary(ps, it);
  }
  return parse_fail(ps, "Unknown fetch attribute");
}

/* Find the part a section path names (RFC 3501 6.4.5); -1 if there is none. */
static int fetch_find_part(const struct msgmeta *mm, const uint32_t *path, int npath) {
  int node = 0, top = 1;     /* top: node is the entity a message holds */
  for (int i = 0; i < npath; i++) {
    if (i > 0 && mm->parts[node].kind == PART_MESSAGE) {
      node = mm->parts[node].child;      /* into the encapsulated message */
      if (node < 0) return -1;
      top = 1;
    }
    if (mm->parts[node].kind == PART_MULTIPART) {
      int c = mm->parts[node].child;
      for (uint32_t k = 1; c >= 0 && k < path[i]; k++) c = mm->parts[c].next;
      if (c < 0) return -1;
      node = c;
      top = 0;
    } else if (!top || path[i] != 1) {
      return -1;             /* only a message's non-multipart body is its part 1 */
    } else {
      top = 0;
    }
  }
  return node;
}

static int field_listed(const struct fetch_item *it, struct str name) {
  for (int i = 0; i < it->nfields; i++)
    if (it->fields[i].len == name.len && strncasecmp(it->fields[i].p, name.p, name.len) == 0)
      return 1;
  return 0;
}

/*
** Write n bytes as a literal, or the part <origin.count> of them. BINARY data with a NUL
** goes as a literal8 (RFC 3516 4.3: a literal cannot hold NUL); without, as a literal.
*/
static void fetch_literal(struct session *s, const struct fetch_item *it, const char *p,
                          size_t n) {
  if (it && it->partial) {
    if (it->origin >= n) n = 0;
    else {
      p += it->origin;
      n -= it->origin;
      if (n > it->count) n = it->count;
    }
  }
  int eight = it && it->kind == FI_BINARY && n && memchr(p, 0, n);
  session_send(s, "%s{%zu}\r\n", eight ? "~" : "", n);
  session_send_bulk(s, p, n);
}

/*
** The bytes a body section names (RFC 3501 6.4.5), as a view into the message or, for
** HEADER.FIELDS[.NOT], built into *tmp. A part that does not exist is an empty string.
*/
static struct str fetch_section_bytes(const struct fetch_item *it, struct msgdata *d,
                                      struct buf *tmp) {
  const char *msg = d->bytes;
  if (it->npath == 0 && it->text == SEC_ALL) return str_make(msg, d->size);
  if (it->npath == 0 && it->text == SEC_HEADER) return str_make(msg, d->hdr_len);
  if (it->npath == 0 && it->text == SEC_TEXT)
    return str_make(msg + d->hdr_len, d->size - d->hdr_len);
  const struct msgmeta *mm = msgdata_meta(d);
  int node = mm ? fetch_find_part(mm, it->path, it->npath) : -1;
  if (node < 0) return str_make("", 0);
  const struct part *pt = &mm->parts[node];
  if (it->text == SEC_ALL) return str_make(msg + pt->body_off, pt->body_len);
  if (it->text == SEC_MIME) return str_make(msg + pt->hdr_off, pt->hdr_len);
  if (it->npath > 0) {       /* HEADER/TEXT of a part apply to message/rfc822 parts only */
    if (pt->kind != PART_MESSAGE || pt->child < 0) return str_make("", 0);
    pt = &mm->parts[pt->child];
  }
  if (it->text == SEC_HEADER) return str_make(msg + pt->hdr_off, pt->hdr_len);
  if (it->text == SEC_TEXT) return str_make(msg + pt->body_off, pt->body_len);
  const char *p = msg + pt->hdr_off, *end = p + pt->hdr_len;   /* HEADER.FIELDS[.NOT]: */
  struct field f;            /* the chosen fields, then the blank line if there is one */
  while (header_next(&p, end, &f))
    if (field_listed(it, f.name) == (it->text == SEC_FIELDS)) buf_add(tmp, f.start, f.len);
  if (p < end) buf_add(tmp, "\r\n", 2);
  return str_make(tmp->p ? tmp->p : "", tmp->len);
}

static void fetch_section(struct session *s, const struct fetch_item *it, struct msgdata *d) {
  struct buf tmp = {0};
  struct str v = fetch_section_bytes(it, d, &tmp);
  session_send(s, "%s ", it->echo);
  fetch_literal(s, it, v.p, v.len);
  buf_free(&tmp);
}

/*
** The data a BINARY item names (RFC 3516 4.2): the section's body with its encoding
** undone, a view into the message or decoded into *tmp. BINARY[] is the message as it
** is; a part that does not exist is empty, as for BODY. Returns 0, or why it cannot be
** had: FETCH_UNKNOWN_CTE, or FETCH_MULTIPART (RFC 9051 6.4.5: only leaf parts, and
** message/rfc822 ones, whose encoded words stay as they are, RFC 3516 5).
*/
enum { FETCH_UNKNOWN_CTE = 1, FETCH_MULTIPART = 2 };

static int fetch_binary_bytes(const struct fetch_item *it, struct msgdata *d, struct buf *tmp,
                              struct str *out) {
  *out = str_make(d->bytes, d->size);
  if (it->npath == 0) return 0;
  const struct msgmeta *mm = msgdata_meta(d);
  int node = mm ? fetch_find_part(mm, it->path, it->npath) : -1;
  *out = str_make("", 0);
  if (node < 0) return 0;
  if (mm->parts[node].kind == PART_MULTIPART) return FETCH_MULTIPART;
  return part_binary(d->bytes, &mm->parts[node], tmp, out) ? 0 : FETCH_UNKNOWN_CTE;
}

/* Can every BINARY item of the request be answered for this message? 0, or why not. */
static int fetch_binary_check(const struct fetch_item *items, struct msgdata *d) {
  for (const struct fetch_item *it = items; it; it = it->next) {
    if (it->kind != FI_BINARY && it->kind != FI_BINARY_SIZE) continue;
    const struct msgmeta *mm = it->npath ? msgdata_meta(d) : NULL;
    int node = mm ? fetch_find_part(mm, it->path, it->npath) : -1;
    if (node < 0) continue;
    if (mm->parts[node].kind == PART_MULTIPART) return FETCH_MULTIPART;
    if (mm->parts[node].cte == CTE_UNKNOWN) return FETCH_UNKNOWN_CTE;
  }
  return 0;
}

static void fetch_binary(struct session *s, const struct fetch_item *it, struct msgdata *d) {
  struct buf tmp = {0};
  struct str v;
  fetch_binary_bytes(it, d, &tmp, &v);    /* fetch_binary_check said it can be had */
  if (it->kind == FI_BINARY_SIZE) session_send(s, "%s %zu", it->echo, v.len);
  else {
    session_send(s, "%s ", it->echo);
    fetch_literal(s, it, v.p, v.len);
  }
  if (tmp.oom) s->out.oom = 1;
  buf_free(&tmp);
}

/* Which of ENVELOPE, BODY and BODYSTRUCTURE (RENDER_ bits) the items ask for. */
static unsigned fetch_renders(const struct fetch_item *items) {
  unsigned want = 0;
  for (const struct fetch_item *it = items; it; it = it->next)
    want |= it->kind == FI_ENVELOPE ? RENDER_ENVELOPE : it->kind == FI_BODY ? RENDER_BODY
          : it->kind == FI_BODYSTRUCTURE ? RENDER_BODYSTRUCTURE : 0;
  return want;
}

/* What a FETCH response carries beyond what was asked for. */
enum { FETCH_ADD_FLAGS = 1, FETCH_ADD_UID = 2, FETCH_ADD_MODSEQ = 4 };

/* One message's FETCH response; want: fetch_renders(items), made together so that each
   header is read once. */
static void fetch_one(struct session *s, const struct fetch_item *items, unsigned want,
                      const struct fetch_snap *m, char *const *kwnames, int nkw, unsigned add) {
  session_send_fetch_start(s, m->seq, m->uid);
  const struct rendered *mm = want ? msgdata_rendered(m->data, want) : NULL;
  if (want && !mm) {
    s->out.oom = 1;
    return;
  }
  int first = 1;
  for (const struct fetch_item *it = items; it; it = it->next) {
    if (!first) session_sendn(s, " ", 1);
    first = 0;
    switch (it->kind) {
    case FI_UID:
      session_sendn(s, "UID", 3);
      session_send_number(s, ' ', m->uid);
      break;
    case FI_FLAGS: {
      session_sendn(s, "FLAGS ", 6);
      flags_out(&s->out, m->flags, m->keywords, kwnames, nkw, m->recent);
      break;
    }
    case FI_INTERNALDATE:
      session_sendn(s, "INTERNALDATE ", 13);
      date_time_format(&s->out, m->internaldate, m->tz);
      break;
    case FI_SIZE:
      session_sendn(s, "RFC822.SIZE", 11);
      session_send_number(s, ' ', m->data->size);
      break;
    case FI_ENVELOPE: session_send_item(s, "ENVELOPE ", mm->envelope); break;
    case FI_BODY: session_send_item(s, "BODY ", mm->body); break;
    case FI_BODYSTRUCTURE: session_send_item(s, "BODYSTRUCTURE ", mm->bodystructure); break;
    case FI_RFC822:
      session_send(s, "RFC822 ");
      fetch_literal(s, NULL, m->data->bytes, m->data->size);
      break;
    case FI_RFC822_HEADER:
      session_send(s, "RFC822.HEADER ");
      fetch_literal(s, NULL, m->data->bytes, m->data->hdr_len);
      break;
    case FI_RFC822_TEXT:
      session_send(s, "RFC822.TEXT ");
      fetch_literal(s, NULL, m->data->bytes + m->data->hdr_len, m->data->size - m->data->hdr_len);
      break;
    case FI_SECTION: fetch_section(s, it, m->data); break;
    case FI_MODSEQ: session_send_modseq(s, m->modseq); break;
    case FI_EMAILID: {        /* RFC 8474 5.3 */
      char id[18];
      msgdata_emailid(m->data, id);
      session_send(s, "EMAILID (%s)", id);
      break;
    }
    case FI_THREADID: session_send(s, "THREADID NIL"); break;   /* RFC 8474 5.2: not computed */
    case FI_BINARY:
    case FI_BINARY_SIZE: fetch_binary(s, it, m->data); break;
    }
  }
  /* 6.4.5: \Seen was set, so the new flags come along; RFC 7162 3.2.4: with the UID and
     MODSEQ once CONDSTORE is on */
  if (add & FETCH_ADD_UID) {
    session_send(s, "%sUID %u", first ? "" : " ", m->uid);
    first = 0;
  }
  if (add & FETCH_ADD_FLAGS) {
    session_send(s, "%sFLAGS ", first ? "" : " ");
    flags_out(&s->out, m->flags, m->keywords, kwnames, nkw, m->recent);
    first = 0;
  }
  if (add & FETCH_ADD_MODSEQ) {
    session_send(s, "%s", first ? "" : " ");
    session_send_modseq(s, m->modseq);
  }
  session_sendn(s, ")\r\n", 3);
}

/*
** UID FETCH ... (PARTIAL range) (RFC 9394 3.3): narrow the UID set to the messages of the
** view it names that the range picks, before CHANGEDSINCE looks at them (3.4).
*/
static int fetch_partial_set(struct session *s, struct command *c, struct seqset *set,
                             const struct partial *p) {
  size_t *idx, n, from, to;
  if (!view_resolve(s, c, set, 1, &idx, &n)) return 0;
  partial_window(p, n, &from, &to);
  set->r = arena_alloc(&s->arena, (to > from ? to - from : 1) * sizeof *set->r);
  if (!set->r) return cmd_no(c, "[SERVERBUG] Out of memory");
  set->n = 0;
  for (size_t i = from; i < to; i++) {
    set->r[set->n].lo = set->r[set->n].hi = s->view[idx[i]].uid;
    set->n++;
  }
  return 1;
}

/* 6.4.5 FETCH set items, and UID FETCH (which always includes UID, 6.4.8). */
static int cmd_fetch(struct session *s, struct command *c) {
  struct parser *ps = &c->ps;
  struct seqset set;
  struct fetch_item *items = NULL, **tail = &items;
  if (!parse_sp(ps) || !parse_seqset(ps, &set) || !parse_sp(ps)) return cmd_bad_args(c);
  struct str w;
  const char *save = ps->p;
  if (parse_run(ps, is_atom_char, &w) && (str_ieq(w, "ALL") || str_ieq(w, "FAST") ||
                                          str_ieq(w, "FULL"))) {
    fetch_add(ps, &tail, FI_FLAGS);     /* the macros of 6.4.5 */
    fetch_add(ps, &tail, FI_INTERNALDATE);
    fetch_add(ps, &tail, FI_SIZE);
    if (!str_ieq(w, "FAST")) fetch_add(ps, &tail, FI_ENVELOPE);
    if (str_ieq(w, "FULL")) fetch_add(ps, &tail, FI_BODY);
  } else {
    ps->p = save;
    if (parse_char(ps, '(')) {
      do {
        if (!fetch_parse_att(ps, &tail)) return cmd_bad_args(c);
      } while (parse_char(ps, ' '));
      if (!parse_char(ps, ')')) return cmd_bad(c, "FETCH Expected ')' after the attributes");
    } else if (!fetch_parse_att(ps, &tail)) {
      return cmd_bad_args(c);
    }
  }
  uint64_t changedsince = 0;
  int changed_mod = 0, vanished = 0, partial_mod = 0;
  struct partial partial;
  if (parse_char(ps, ' ')) {   /* fetch modifiers (RFC 4466 2.4) */
    if (!parse_char(ps, '(')) return cmd_bad(c, "FETCH Expected '(' and fetch modifiers");
    do {
      struct str m;
      if (!parse_atom(ps, &m)) return cmd_bad_args(c);
      if (str_ieq(m, "CHANGEDSINCE") && cap_on(s->srv, CAP_CONDSTORE) && !changed_mod) {
        if (!parse_sp(ps) || !parse_modseq(ps, &changedsince)) return cmd_bad_args(c);
        if (changedsince == 0) return cmd_bad(c, "FETCH CHANGEDSINCE must be at least 1");
        changed_mod = 1;
      } else if (str_ieq(m, "VANISHED") && cap_on(s->srv, CAP_QRESYNC) && !vanished) {
        vanished = 1;
      } else if (str_ieq(m, "PARTIAL") && cap_on(s->srv, CAP_PARTIAL) && !partial_mod) {
        if (!parse_sp(ps) || !parse_partial(ps, &partial)) return cmd_bad_args(c);
        partial_mod = 1;
      } else {
        return cmd_bad(c, "FETCH Unknown or repeated modifier: %.*s", (int)m.len, m.p);
      }
    } while (parse_char(ps, ' '));
    if (!parse_char(ps, ')')) return cmd_bad(c, "FETCH Expected ')' after the modifiers");
  }
  if (!parse_end(ps)) return cmd_bad_args(c);
  if (vanished && !c->uid)     /* RFC 7162 3.2.6 */
    return cmd_bad(c, "FETCH VANISHED is only allowed with UID FETCH");
  if (vanished && !(s->enabled & ENABLED_QRESYNC))
    return cmd_bad(c, "UID FETCH VANISHED needs ENABLE QRESYNC first");
  if (vanished && !changed_mod) return cmd_bad(c, "UID FETCH VANISHED needs CHANGEDSINCE");
  if (partial_mod && !c->uid)  /* RFC 9394 3.3 */
    return cmd_bad(c, "FETCH PARTIAL is only allowed with UID FETCH");
  int has_uid = 0, has_flags = 0, has_modseq = 0, sets_seen = 0, has_binary = 0, has_oid = 0;
  int has_rfc822 = 0;
  for (struct fetch_item *it = items; it; it = it->next) {
    has_oid |= it->kind == FI_EMAILID || it->kind == FI_THREADID;
    has_rfc822 |= it->kind == FI_RFC822 || it->kind == FI_RFC822_HEADER ||
                  it->kind == FI_RFC822_TEXT;
    has_uid |= it->kind == FI_UID;
    has_flags |= it->kind == FI_FLAGS;
    has_modseq |= it->kind == FI_MODSEQ;
    has_binary |= it->kind == FI_BINARY || it->kind == FI_BINARY_SIZE;
    sets_seen |= it->kind == FI_RFC822 || it->kind == FI_RFC822_TEXT ||
                 ((it->kind == FI_SECTION || it->kind == FI_BINARY) && !it->peek);
  }
  if (has_rfc822 && session_rev2(s))   /* RFC 9051 Appendix E 18 */
    return cmd_bad(c, "FETCH RFC822, RFC822.HEADER and RFC822.TEXT are not in IMAP4rev2: use "
                      "BODY[], BODY.PEEK[HEADER] and BODY[TEXT]");
  if (has_modseq && !cap_on(s->srv, CAP_CONDSTORE))
    return cmd_bad(c, "FETCH Unknown fetch attribute: MODSEQ");
  if (has_binary && !cap_on(s->srv, CAP_BINARY))
    return cmd_bad(c, "FETCH Unknown fetch attribute: BINARY");
  if (has_oid && !cap_on(s->srv, CAP_OBJECTID))
    return cmd_bad(c, "FETCH Unknown fetch attribute: EMAILID/THREADID need OBJECTID");
  if ((has_modseq || changed_mod) && s->nomodseq)   /* RFC 7162 3.1.2.2 */
    return cmd_bad(c, "FETCH MODSEQ: this mailbox has no mod-sequences (NOMODSEQ)");
  if (c->uid && !has_uid) {
    struct fetch_item *u = parse_new(ps, sizeof *u);
    if (!u) return cmd_no(c, "[SERVERBUG] Out of memory");
    u->kind = FI_UID;
    u->next = items;
    items = u;
  }
  if (changed_mod && !has_modseq) {   /* RFC 7162 3.1.4.1: CHANGEDSINCE implies MODSEQ */
    if (!fetch_add(ps, &tail, FI_MODSEQ)) return cmd_no(c, "[SERVERBUG] Out of memory");
    has_modseq = 1;
  }
  size_t *idx = NULL, n = 0;
  if (partial_mod && !fetch_partial_set(s, c, &set, &partial)) return 0;
  if (changed_mod ? !view_check_set(s, c, &set, c->uid)
                  : !view_resolve(s, c, &set, c->uid, &idx, &n))
    return 0;
  if (has_modseq) session_enable_condstore(s);
  struct mailbox *mb = s->mb;
  char *kwnames[IMAPMEM_MAX_KEYWORDS];
  size_t got = 0;
  int gone = 0;
  struct fetch_snap *snap = NULL;
  unsigned char *changed = NULL;
  pthread_mutex_lock(&mb->lock);
  if (changed_mod) {           /* only what changed: a walk along the change list */
    if (vanished) session_send_vanished(s, &set, changedsince, 0);
    view_changed_since(s, &set, c->uid, changedsince, &idx, &n);
  }
  snap = mem_alloc((n ? n : 1) * sizeof *snap);
  changed = mem_calloc(n ? n : 1, 1);
  if (!snap || !changed) {
    pthread_mutex_unlock(&mb->lock);
    if (changed_mod) free(idx);
    free(snap);
    free(changed);
    return cmd_no(c, "[SERVERBUG] Out of memory");
  }
  /* RFC 3516 4.3: a BINARY item that cannot be had fails the request, found before any
     \Seen is set or anything sent. It costs building the part tables under the lock
     (once per message: they are kept). */
  int why = 0;
  for (size_t i = 0; i < n && has_binary && !why; i++) {
    long k = mailbox_find_uid(mb, s->view[idx[i]].uid);
    const struct message *m = k >= 0 ? &mb->msgs[k] : mailbox_ghost(mb, s->view[idx[i]].uid);
    if (m) why = fetch_binary_check(items, m->data);
  }
  if (why) {
    pthread_mutex_unlock(&mb->lock);
    if (changed_mod) free(idx);
    free(snap);
    free(changed);
    if (why == FETCH_MULTIPART)
      return cmd_no(c, "FETCH BINARY is only for single parts, not for a multipart");
    return cmd_no(c, "[UNKNOWN-CTE] FETCH BINARY of a Content-Transfer-Encoding it cannot "
                  "decode");
  }
  if (mb->nkeywords > s->nkw_known) session_send_flags(s, mb);  /* made since the sync */
  int in_step = s->seen_modseq == mb->modseq;
  unsigned seen_adds = FETCH_ADD_FLAGS * !has_flags;
  if (session_condstore(s))
    seen_adds |= FETCH_ADD_UID * !has_uid | FETCH_ADD_MODSEQ * !has_modseq;
  long last = -1;
  for (size_t i = 0; i < n; i++) {
    long k = mailbox_find_uid_next(mb, s->view[idx[i]].uid, last);
    if (k >= 0) last = k;
    const struct message *m = k >= 0 ? &mb->msgs[k] : NULL;
    if (!m && !s->srv->cfg.strict_expunge) m = mailbox_ghost(mb, s->view[idx[i]].uid);
    if (!m) {                /* RFC 2180 4.1.2: data for the rest, then NO */
      gone = 1;
      continue;
    }                        /* else 4.1.1: an expunged message answers as it was */
    if (k >= 0 && sets_seen && !s->readonly && (s->rights & RIGHT_S) &&  /* RFC 4314 4 */
        !(m->flags & FLAG_SEEN)) {
      mailbox_set_flags(mb, (size_t)k, m->flags | FLAG_SEEN, m->keywords);
      changed[got] = (unsigned char)seen_adds;
    }
    struct fetch_snap *x = &snap[got++];
    x->seq = (uint32_t)idx[i] + 1;
    x->uid = m->uid;
    x->flags = m->flags & FLAGS_SYSTEM;
    x->keywords = m->keywords;
    x->modseq = m->modseq;
    x->recent = s->view[idx[i]].recent;
    x->internaldate = m->internaldate;
    x->tz = m->tz;
    x->data = msgdata_ref(m->data);
  }
  if (changed_mod) free(idx);
  int nkw = mb->nkeywords;   /* names are never changed or freed while mb lives */
  memcpy(kwnames, mb->keywords, (size_t)nkw * sizeof kwnames[0]);
  if (in_step) s->seen_modseq = mb->modseq;
  pthread_mutex_unlock(&mb->lock);
  unsigned want = fetch_renders(items);
  struct build_ahead ba;     /* a large first FETCH of ENVELOPE, BODY or BODYSTRUCTURE */
  build_ahead_start(&ba, &snap[0].data, sizeof snap[0], got, want);
  for (size_t i = 0; i < got; i++) {
    build_ahead_at(&ba, i);
    if (want && i + 1 < got) msgdata_prefetch(snap[i + 1].data);
    fetch_one(s, items, want, &snap[i], kwnames, nkw, changed[i]);
    if (s->out.len > (256u << 10) && !session_flush(s)) break;
  }
  build_ahead_stop(&ba);
  for (size_t i = 0; i < got; i++) msgdata_unref(snap[i].data);
  free(snap);
  free(changed);
  if (s->out.oom) return cmd_no(c, "[SERVERBUG] Out of memory");
  if (gone) return cmd_no(c, "[EXPUNGEISSUED] Some of the requested messages no longer exist");
  return cmd_ok(c, "%sFETCH completed", c->uid ? "UID " : "");
}

/*
** ===========================================================================
** 9  Command handlers and the command table
** ===========================================================================
** Owns: what each command does (RFC 3501 section 6 and the extensions), the command table
** and the dispatcher, capabilities and faults; AUTHENTICATE's SASL mechanisms, each of
** which reads the client's responses itself, in the middle of the command.
** Calls: sections 1-3 and 5-8 (the table names SEARCH's and FETCH's handlers; CATENATE
** reads a URL's section as FETCH reads BODY[section]).
** Locking: a handler locks a mailbox only around its own store calls and writes after
** unlocking (the session's output is memory until flushed). Logins read OAuth tokens and
** the SCRAM secret under the server's lock, briefly.
**
** Handler shape: read the arguments with the typed getters (BAD with the getter's text),
** check, do the work through the store, send untagged data, then set the tagged reply
** with cmd_ok/cmd_no/cmd_bad. The dispatcher sends pending untagged updates and then the
** tagged line, exactly once.
*/
/*
** The capabilities, in the order advertised. An extension that needs others (RFC 7162
** 3.2.3: QRESYNC needs CONDSTORE and ENABLE) is switched off with any of them and
** switching it on switches them on; one that excludes another (RFC 7888 4: never LITERAL+
** and LITERAL- together) switches it off.
*/
static const struct {
  const char *name;
  capset bit;                 /* 0: always on */
  capset needs;               /* on only while these are on */
  capset excludes;            /* never on with these */
} capability_list[] = {
  {"IMAP4rev1", CAP_IMAP4REV1, 0, 0}, {"LITERAL+", CAP_LITERALPLUS, 0, CAP_LITERALMINUS},
  {"LITERAL-", CAP_LITERALMINUS, 0, CAP_LITERALPLUS}, {"SASL-IR", CAP_SASLIR, 0, 0},
  {"AUTH=PLAIN", CAP_AUTH_PLAIN, 0, 0}, {"IDLE", CAP_IDLE, 0, 0}, {"UIDPLUS", CAP_UIDPLUS, 0, 0},
  {"MOVE", CAP_MOVE, 0, 0}, {"UNSELECT", CAP_UNSELECT, 0, 0},
  {"NAMESPACE", CAP_NAMESPACE, 0, 0}, {"ID", CAP_ID, 0, 0}, {"CHILDREN", CAP_CHILDREN, 0, 0},
  {"ENABLE", CAP_ENABLE, 0, 0}, {"CONDSTORE", CAP_CONDSTORE, 0, 0},
  {"QRESYNC", CAP_QRESYNC, CAP_CONDSTORE | CAP_ENABLE, 0},
  {"ESEARCH", CAP_ESEARCH, 0, 0},
  {"SEARCHRES", CAP_SEARCHRES, CAP_ESEARCH, 0},                /* RFC 5182 2.1 */
  {"CONTEXT=SEARCH", CAP_CONTEXT_SEARCH, CAP_ESEARCH, 0},      /* RFC 5267 4.1 */
  {"PARTIAL", CAP_PARTIAL, CAP_ESEARCH, 0},                    /* an ESEARCH option */
  {"BINARY", CAP_BINARY, 0, 0}, {"MULTIAPPEND", CAP_MULTIAPPEND, 0, 0},
  {"CATENATE", CAP_CATENATE, 0, 0},   /* RFC 4469 needs no other (UIDPLUS, MULTIAPPEND: "if") */
  {"APPENDLIMIT", CAP_APPENDLIMIT, 0, 0},   /* advertised as APPENDLIMIT=n (RFC 7889 2) */
  {"UIDONLY", CAP_UIDONLY, CAP_ENABLE, 0},
  {"LIST-EXTENDED", CAP_LIST_EXTENDED, 0, 0},
  {"LIST-STATUS", CAP_LIST_STATUS, CAP_LIST_EXTENDED, 0},     /* a LIST return option */
  {"SPECIAL-USE", CAP_SPECIAL_USE, CAP_LIST_EXTENDED, 0},     /* LIST options (RFC 6154 2) */
  {"CREATE-SPECIAL-USE", CAP_CREATE_SPECIAL_USE, 0, 0},
  {"STATUS=SIZE", CAP_STATUS_SIZE, 0, 0},
  {"QUOTA", CAP_QUOTA, 0, 0}, {"QUOTASET", CAP_QUOTASET, CAP_QUOTA, 0},   /* RFC 9208 */
  {"QUOTA=RES-STORAGE", CAP_QUOTA_RES_STORAGE, CAP_QUOTA, 0},
  {"QUOTA=RES-MESSAGE", CAP_QUOTA_RES_MESSAGE, CAP_QUOTA, 0},
  {"SORT", CAP_SORT, 0, 0}, {"SORT=DISPLAY", CAP_SORT_DISPLAY, CAP_SORT, 0},   /* RFC 5957 */
  {"THREAD=ORDEREDSUBJECT", CAP_THREAD_ORDEREDSUBJECT, 0, 0},
  {"THREAD=REFERENCES", CAP_THREAD_REFERENCES, 0, 0},
  {"ESORT", CAP_ESORT, CAP_SORT, 0},                            /* RFC 5267 3.1 */
  {"CONTEXT=SORT", CAP_CONTEXT_SORT, CAP_ESORT, 0},            /* RFC 5267 4.1 */
  {"NOTIFY", CAP_NOTIFY, 0, 0}, {"OBJECTID", CAP_OBJECTID, 0, 0},
  {"AUTH=LOGIN", CAP_AUTH_LOGIN, 0, 0}, {"AUTH=CRAM-MD5", CAP_AUTH_CRAM_MD5, 0, 0},
  {"AUTH=SCRAM-SHA-1", CAP_AUTH_SCRAM_SHA_1, 0, 0},
  {"AUTH=SCRAM-SHA-256", CAP_AUTH_SCRAM_SHA_256, 0, 0},
  {"AUTH=OAUTHBEARER", CAP_AUTH_OAUTHBEARER, 0, 0}, {"AUTH=XOAUTH2", CAP_AUTH_XOAUTH2, 0, 0},
  {"LOGINDISABLED", CAP_LOGINDISABLED, 0, 0},   /* RFC 3501 7.2.1: hides PLAIN and LOGIN */
  {"IMAP4rev2", CAP_IMAP4REV2, 0, 0},   /* beside IMAP4rev1 it is ENABLEd: RFC 9051 App. A */
  {"UTF8=ACCEPT", CAP_UTF8_ACCEPT, CAP_ENABLE, 0},   /* RFC 6855 3: "MUST use ENABLE" */
  {"ACL", CAP_ACL, 0, 0}};   /* advertised with RIGHTS=texk (RFC 4314 5.1.1): one switch */
#define NCAPS (sizeof capability_list / sizeof capability_list[0])

/*
** The switched-off set after switching capability i on or off, with what depends on it
** following: off takes everything that needs it; on brings what it needs and puts out
** what it excludes.
*/
static capset capability_switch(capset off, size_t i, int on) {
  capset bit = capability_list[i].bit;
  if (on) {
    off &= ~(bit | capability_list[i].needs);
    off |= capability_list[i].excludes;
  } else {
    off |= bit;
  }
  for (int changed = 1; changed;) {   /* until every dependency holds */
    changed = 0;
    for (size_t k = 0; k < NCAPS; k++) {
      capset b = capability_list[k].bit;
      if (b && !(off & b) && (off & capability_list[k].needs)) {
        off |= b;
        changed = 1;
      }
    }
  }
  return off;
}

/*
** The capability list as advertised now (RFC 3501 7.2.1), into a fixed buffer; with a
** session, as that session may see it: STARTTLS while it is plain and not logged in
** (RFC 3501 6.2.1; never on the imaps port or after STARTTLS), and, with require-TLS
** before TLS, LOGINDISABLED and no AUTH= (RFC 3501 6.2.3, 7.2.1: nothing that would send
** a password in the clear).
*/
static const char *capabilities(struct imapmem *srv, struct session *s, char *out,
                                size_t cap) {
  size_t n = 0;
  int plain = s && !s->ssl && s->starttls_ok;
  int locked = plain && srv->require_tls;
  out[0] = 0;
  for (size_t i = 0; i < NCAPS; i++) {
    if (capability_list[i].bit && !cap_on(srv, capability_list[i].bit)) continue;
    if (locked && !strncmp(capability_list[i].name, "AUTH=", 5)) continue;
    if ((capability_list[i].bit == CAP_AUTH_PLAIN || capability_list[i].bit == CAP_AUTH_LOGIN) &&
        cap_on(srv, CAP_LOGINDISABLED))
      continue;
    n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, "%s%s", n ? " " : "",
                          capability_list[i].name);
    if (capability_list[i].bit == CAP_ACL)   /* the rights beyond RFC 2086's */
      n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, " RIGHTS=texk");
    if (capability_list[i].bit == CAP_APPENDLIMIT)   /* one limit for every mailbox */
      n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, "=%zu",
                            atomic_load(&srv->append_limit));
  }
  if (plain && srv->tls_ctx && s->state == ST_NOTAUTH)
    n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, " STARTTLS");
  if (locked && !cap_on(srv, CAP_LOGINDISABLED))
    snprintf(out + n, n < cap ? cap - n : 0, " LOGINDISABLED");
  return out;
}

/* The common argument list " mailbox" and nothing after it. */
static int cmd_mailbox_arg(struct command *c, const char **name) {
  return parse_sp(&c->ps) && parse_mailbox(&c->ps, name) && parse_end(&c->ps);
}

/*
** The selectable mailbox name, with a reference the caller drops and the user's rights on
** it in *rights; NULL with the NO reply set if it is missing (answered with `missing`, a
** response code) or \Noselect, or the user lacks a right of need (RFC 4314 4). A mailbox
** the user may not look up (no "l") and lacks a right for answers exactly as a missing
** one (RFC 4314 6); one the user may look up answers [NOPERM] (RFC 5530 3).
*/
static struct mailbox *cmd_selectable(struct session *s, struct command *c, const char *name,
                                      const char *missing, unsigned need, unsigned *rights) {
  struct mailbox *mb = ns_mailbox(s->srv, s->user, name, rights);
  int allowed = (*rights & need) == need;
  if (!mb || (!allowed && !(*rights & RIGHT_L))) {
    mailbox_unref(mb);
    cmd_no(c, "[%s] Mailbox does not exist: %s", missing, name);
    return NULL;
  }
  if (!mb->selectable) {
    mailbox_unref(mb);
    cmd_no(c, "[CANNOT] Mailbox is \\Noselect: %s", name);
    return NULL;
  }
  if (!allowed) {
    mailbox_unref(mb);
    cmd_no(c, "[NOPERM] Permission denied: %s", name);
    return NULL;
  }
  return mb;
}

/*
** The flags this user may set or clear with rights (RFC 4314 4): \Seen with "s",
** \Deleted with "t", the others and keywords with "w" (*keywords then 1).
*/
static uint32_t rights_flags(unsigned rights, int *keywords) {
  *keywords = (rights & RIGHT_W) != 0;
  return (rights & RIGHT_S ? FLAG_SEEN : 0) | (rights & RIGHT_T ? FLAG_DELETED : 0) |
         (rights & RIGHT_W ? FLAG_ANSWERED | FLAG_FLAGGED | FLAG_DRAFT : 0);
}

static const char *state_name(enum state st) {
  switch (st) {
  case ST_NOTAUTH: return "not authenticated";
  case ST_AUTH: return "authenticated";
  case ST_SELECTED: return "selected";
  default: return "logout";
  }
}

/* ------------------------------------------------------------------------- */
/* Any state (RFC 3501 6.1). */

static int cmd_capability(struct session *s, struct command *c) {
  if (!parse_end(&c->ps)) return cmd_bad_args(c);
  char caps[CAPS_MAX];
  session_send(s, "* CAPABILITY %s\r\n", capabilities(s->srv, s, caps, sizeof caps));
  return cmd_ok(c, "CAPABILITY completed");
}

static int cmd_noop(struct session *s, struct command *c) {
  (void)s;
  if (!parse_end(&c->ps)) return cmd_bad_args(c);
  return cmd_ok(c, "%s completed", c->def->name);
}

static int cmd_logout(struct session *s, struct command *c) {
  if (!parse_end(&c->ps)) return cmd_bad_args(c);
  session_send(s, "* BYE imapmem logging out\r\n");
  s->state = ST_LOGOUT;
  return cmd_ok(c, "LOGOUT completed");
}

/* RFC 2971: ID ( "name" "value" ... ) or NIL; we answer with our own. */
static int cmd_id(struct session *s, struct command *c) {
  struct parser *ps = &c->ps;
  struct str k, v;
  if (!parse_sp(ps)) return cmd_bad_args(c);
  if (parse_char(ps, '(')) {
    while (!parse_char(ps, ')')) {
      if (!parse_string(ps, &k) || !parse_sp(ps)) return cmd_bad_args(c);
      if (!parse_string(ps, &v) && !(parse_atom(ps, &v) && str_ieq(v, "NIL")))
        return cmd_bad_args(c);
      if (!parse_peek(ps, ')') && !parse_sp(ps)) return cmd_bad_args(c);
    }
  } else if (!parse_atom(ps, &v) || !str_ieq(v, "NIL")) {
    return cmd_bad(c, "ID Expected a parenthesised list or NIL");
  }
  if (!parse_end(ps)) return cmd_bad_args(c);
  session_send(s, "* ID (\"name\" \"imapmem\" \"version\" \"%s\")\r\n", IMAPMEM_VERSION);
  return cmd_ok(c, "ID completed");
}

/* ------------------------------------------------------------------------- */
/* Not authenticated state (RFC 3501 6.2): LOGIN and AUTHENTICATE with its SASL mechanisms. */

/*
** Require-TLS and a session on the plain port is still plain: no password may cross
** (RFC 3501 6.2.3).
*/
static int session_privacy_required(struct session *s, struct command *c) {
  if (!s->srv->require_tls || s->ssl || !s->starttls_ok) return 0;
  cmd_no(c, "[PRIVACYREQUIRED] %s is disabled until STARTTLS: this server requires TLS",
         c->def->name);
  return 1;
}

/* The session is logged in as u (RFC 3501 3.2). */
static void session_enter(struct session *s, struct user *u) {
  s->user = u;
  s->state = ST_AUTH;
  session_publish(s);
}

/* The user of that name whose password is pw, or NULL. */
static struct user *sasl_password_user(struct imapmem *srv, struct str name, struct str pw) {
  struct user *u = server_user(srv, name);
  if (!u || strlen(u->password) != pw.len || memcmp(u->password, pw.p, pw.len) != 0) return NULL;
  return u;
}

/*
** The last step of every login, once the credentials of u proved right: a pending
** authentication fault (AUTH-UNAVAILABLE, AUTH-EXPIRED) fails it now; an authorization
** identity other than u's own needs u to be an administrator (RFC 4616 2: the server
** decides who may act as whom; RFC 5530 3: AUTHORIZATIONFAILED). Returns the user to log
** in as, or NULL with the tagged reply set.
*/
static struct user *sasl_authorize(struct session *s, struct command *c, struct user *u,
                                   struct str authz) {
  int fault = s->auth_fault;
  s->auth_fault = 0;
  if (fault == FA_AUTH_UNAVAILABLE) {
    cmd_no(c, "[UNAVAILABLE] Authentication is temporarily unavailable: try again");
    return NULL;
  }
  if (fault == FA_AUTH_EXPIRED) {
    cmd_no(c, "[EXPIRED] These credentials have expired: get new ones");
    return NULL;
  }
  if (!authz.len || (strlen(u->name) == authz.len && !memcmp(u->name, authz.p, authz.len)))
    return u;                /* names are case-sensitive (imapmem_add_user) */
  if (!atomic_load(&u->admin)) {
    cmd_no(c, "[AUTHORIZATIONFAILED] Only an administrator may act as another user");
    return NULL;
  }
  struct user *as = server_user(s->srv, authz);
  if (!as) cmd_no(c, "[AUTHORIZATIONFAILED] No such user to act as");
  return as;
}

/*
** Send a challenge ("+ " and base64, RFC 3501 7.5) and read the client's response into
** resp, decoded. Returns 0 with the tagged reply set if the client cancelled ("*", RFC
** 3501 6.2.2), sent what is not base64, or went away.
*/
static int sasl_challenge(struct session *s, struct command *c, const void *data, size_t n,
                          struct buf *resp) {
  struct buf line = {0};
  session_sendn(s, "+ ", 2);
  base64_encode_flat(data, n, &s->out);
  session_sendn(s, "\r\n", 2);
  buf_reset(resp);
  if (!session_flush(s) || session_read_line(s, &line, IMAPMEM_MAX_LINE, -1) < 0) {
    buf_free(&line);
    s->closing = 1;
    return cmd_bad(c, "AUTHENTICATE Connection lost"), 0;
  }
  if (atomic_load(&s->srv->tracing)) session_trace(s, 'C', "***", 3);
  int cancelled = line.len == 1 && line.p[0] == '*';
  int ok = !cancelled && base64_decode(line.p ? line.p : "", line.len, resp, 1) && !resp->oom;
  buf_free(&line);
  if (cancelled) return cmd_bad(c, "AUTHENTICATE cancelled"), 0;
  if (!ok) return cmd_bad(c, "AUTHENTICATE Invalid base64 data"), 0;
  return 1;
}

/* RFC 4616 2 PLAIN: [authzid] NUL authcid NUL passwd. */
static struct user *sasl_plain(struct session *s, struct command *c, struct buf *resp,
                               int have_first) {
  (void)have_first;
  const char *p = resp->p ? resp->p : "", *e = p + resp->len;
  const char *z1 = memchr(p, 0, resp->len);
  const char *z2 = z1 ? memchr(z1 + 1, 0, (size_t)(e - z1 - 1)) : NULL;
  struct user *u = NULL;
  if (z2)
    u = sasl_password_user(s->srv, str_make(z1 + 1, (size_t)(z2 - z1 - 1)),
                           str_make(z2 + 1, (size_t)(e - z2 - 1)));
  if (!u) return cmd_no(c, "[AUTHENTICATIONFAILED] Authentication failed"), NULL;
  return sasl_authorize(s, c, u, str_make(p, (size_t)(z1 - p)));
}

/*
** LOGIN (draft-murchison-sasl-login): the server asks "Username:", then "Password:"; with
** SASL-IR the user name may come as the initial response, as Dovecot allows.
*/
static struct user *sasl_login(struct session *s, struct command *c, struct buf *resp,
                               int have_first) {
  static const char ask_user[] = "Username:", ask_pass[] = "Password:";
  if (!have_first && !sasl_challenge(s, c, ask_user, sizeof ask_user - 1, resp)) return NULL;
  char *name = arena_strndup(&s->arena, resp->p ? resp->p : "", resp->len);
  if (!name) return cmd_no(c, "[SERVERBUG] Out of memory"), NULL;
  size_t name_len = resp->len;
  if (!sasl_challenge(s, c, ask_pass, sizeof ask_pass - 1, resp)) return NULL;
  struct user *u = sasl_password_user(s->srv, str_make(name, name_len),
                                      str_make(resp->p ? resp->p : "", resp->len));
  if (!u) return cmd_no(c, "[AUTHENTICATIONFAILED] Authentication failed"), NULL;
  return sasl_authorize(s, c, u, str_make("", 0));
}

/*
** RFC 2195 CRAM-MD5: the server's challenge is a unique message-id-like string; the
** client answers "user SP hex(HMAC-MD5(password, challenge))".
*/
static struct user *sasl_cram_md5(struct session *s, struct command *c, struct buf *resp,
                                  int have_first) {
  (void)have_first;
  unsigned char r[4];
  random_bytes(r, sizeof r);
  char challenge[96];
  int n = snprintf(challenge, sizeof challenge, "<%lu.%lld@imapmem>",
                   (unsigned long)((uint32_t)r[0] << 24 | (uint32_t)r[1] << 16 |
                                   (uint32_t)r[2] << 8 | r[3]),
                   (long long)time(NULL));
  if (!sasl_challenge(s, c, challenge, (size_t)n, resp)) return NULL;
  const char *p = resp->p ? resp->p : "";
  const char *sp = resp->len > 32 ? p + resp->len - 33 : NULL;
  struct user *u = NULL;
  if (sp && *sp == ' ') u = server_user(s->srv, str_make(p, (size_t)(sp - p)));
  if (u) {
    unsigned char mac[16];
    char hex[33];
    hmac(&hash_md5, u->password, strlen(u->password), challenge, (size_t)n, mac);
    hex_encode(mac, sizeof mac, hex);
    if (strncasecmp(hex, sp + 1, 32) != 0) u = NULL;
  }
  if (!u) return cmd_no(c, "[AUTHENTICATIONFAILED] Authentication failed"), NULL;
  return sasl_authorize(s, c, u, str_make("", 0));
}

/*
** A SCRAM or GS2 saslname (RFC 5802 5.1): "=2C" stands for ',' and "=3D" for '='; any
** other '=' makes it invalid (0). The name ends at a ',' or at the end.
*/
static int sasl_saslname(struct str in, struct buf *out) {
  for (size_t i = 0; i < in.len; i++) {
    if (in.p[i] == ',' || in.p[i] == 0) return 0;
    if (in.p[i] != '=') {
      buf_addc(out, in.p[i]);
      continue;
    }
    int comma = i + 2 < in.len && in.p[i + 1] == '2' && in.p[i + 2] == 'C';
    if (!comma && !(i + 2 < in.len && in.p[i + 1] == '3' && in.p[i + 2] == 'D')) return 0;
    buf_addc(out, comma ? ',' : '=');
    i += 2;
  }
  return !out->oom;
}

/*
** A GS2 header (RFC 5801 4, used by SCRAM and OAUTHBEARER): "n," or "y," (no channel
** binding: there is none to offer without TLS), an optional "a=" authorization identity,
** and ",". Returns its length, the authzid decoded into authz; 0 if it is not one, -1 for
** "p=" (channel binding asked for).
*/
static int sasl_gs2_header(struct str msg, struct buf *authz) {
  if (msg.len >= 2 && msg.p[0] == 'p' && msg.p[1] == '=') return -1;
  if (msg.len < 3 || (msg.p[0] != 'n' && msg.p[0] != 'y') || msg.p[1] != ',') return 0;
  const char *end = memchr(msg.p + 2, ',', msg.len - 2);
  if (!end) return 0;
  struct str a = str_make(msg.p + 2, (size_t)(end - msg.p - 2));
  if (a.len && (a.len < 2 || a.p[0] != 'a' || a.p[1] != '=' ||
                !sasl_saslname(str_make(a.p + 2, a.len - 2), authz)))
    return 0;
  return (int)(end - msg.p) + 1;
}

/*
** client-first-message-bare (RFC 5802 7): "n=" saslname ",r=" nonce ["," extensions].
** The user name is decoded into name and nonce points at the client's nonce. 0 if it is
** not one, which includes a mandatory extension "m=" first (RFC 5802 5.1: none is known).
*/
static int scram_client_first(struct str bare, struct buf *name, struct str *nonce) {
  const char *comma = bare.len > 2 && !memcmp(bare.p, "n=", 2) ? memchr(bare.p, ',', bare.len)
                                                              : NULL;
  if (!comma || !sasl_saslname(str_make(bare.p + 2, (size_t)(comma - bare.p - 2)), name))
    return 0;
  size_t rest = (size_t)(bare.p + bare.len - comma);
  if (rest < 4 || memcmp(comma, ",r=", 3) != 0) return 0;
  const char *end = memchr(comma + 3, ',', rest - 3);
  *nonce = str_make(comma + 3, end ? (size_t)(end - comma - 3) : rest - 3);
  for (size_t i = 0; i < nonce->len; i++)   /* printable, no ',' (RFC 5802 7) */
    if (nonce->p[i] < 0x21 || nonce->p[i] > 0x7e) return 0;
  return nonce->len > 0;
}

/*
** client-final-message (RFC 5802 7): "c=" base64 channel binding ",r=" nonce, extensions,
** ",p=" proof. The binding and proof are decoded into cb and proof; *bare_len is the
** length of client-final-message-without-proof. 0 if it is not one.
*/
static int scram_client_final(struct str msg, struct buf *cb, struct str *nonce,
                              struct buf *proof, size_t *bare_len) {
  if (msg.len < 2 || memcmp(msg.p, "c=", 2) != 0 || memchr(msg.p, 0, msg.len)) return 0;
  const char *end = msg.p + msg.len, *c_end = memchr(msg.p, ',', msg.len);
  if (!c_end || !base64_decode(msg.p + 2, (size_t)(c_end - msg.p - 2), cb, 1)) return 0;
  if (end - c_end < 4 || memcmp(c_end, ",r=", 3) != 0) return 0;
  const char *r_end = memchr(c_end + 3, ',', (size_t)(end - c_end - 3)), *p_at = NULL;
  if (!r_end) return 0;
  *nonce = str_make(c_end + 3, (size_t)(r_end - c_end - 3));
  for (const char *q = r_end; q + 3 <= end; q++)    /* the proof comes last */
    if (!memcmp(q, ",p=", 3)) p_at = q;
  if (!p_at || !base64_decode(p_at + 3, (size_t)(end - p_at - 3), proof, 1)) return 0;
  *bare_len = (size_t)(p_at - msg.p);
  return 1;
}

/*
** RFC 5802 3: the client's proof checked against the password. SaltedPassword =
** Hi(password, salt, i); ClientKey = HMAC(SaltedPassword, "Client Key"); StoredKey =
** H(ClientKey); ClientProof = ClientKey XOR HMAC(StoredKey, AuthMessage). If it holds,
** ServerSignature = HMAC(HMAC(SaltedPassword, "Server Key"), AuthMessage) goes into
** server_sig_out and the result is 1.
*/
static int scram_check(const struct hash_alg *alg, const char *pw, size_t pwlen,
                       const unsigned char *salt, size_t saltlen, unsigned iterations,
                       const char *auth_message, size_t amlen, const unsigned char *proof,
                       unsigned char *server_sig_out) {
  unsigned char salted[HASH_MAX], client_key[HASH_MAX], stored[HASH_MAX], sig[HASH_MAX];
  unsigned char key[HASH_MAX], got_stored[HASH_MAX], server_key[HASH_MAX];
  pbkdf2_hmac(alg, pw, pwlen, salt, saltlen, iterations, salted, alg->len);
  hmac(alg, salted, alg->len, "Client Key", 10, client_key);
  hash_once(alg, client_key, alg->len, stored);
  hmac(alg, stored, alg->len, auth_message, amlen, sig);
  for (size_t i = 0; i < alg->len; i++) key[i] = proof[i] ^ sig[i];
  hash_once(alg, key, alg->len, got_stored);
  if (!hash_equal(got_stored, stored, alg->len)) return 0;
  hmac(alg, salted, alg->len, "Server Key", 10, server_key);
  hmac(alg, server_key, alg->len, auth_message, amlen, server_sig_out);
  return 1;
}

/*
** The salt of a user's SCRAM keys: HMAC-SHA-256 of the name under a secret of the
** server's, so the same at every login while the server runs; a name without a user gets
** one too, so that the exchange does not tell whether the user exists (RFC 5802 9).
*/
static void scram_salt(struct imapmem *srv, struct str name, unsigned char *salt) {
  unsigned char mac[32];
  pthread_mutex_lock(&srv->lock);
  if (!srv->scram_secret_set) {
    random_bytes(srv->scram_secret, sizeof srv->scram_secret);
    srv->scram_secret_set = 1;
  }
  hmac(&hash_sha256, srv->scram_secret, sizeof srv->scram_secret, name.p, name.len, mac);
  pthread_mutex_unlock(&srv->lock);
  memcpy(salt, mac, SCRAM_SALT_LEN);
}

/*
** SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802 5, RFC 7677) without channel binding: the
** client-first message; the server's nonce, salt and iteration count; the client's
** proof; the server's signature "v=", which the client checks and answers with an empty
** response. Passwords are used as they are: no SASLprep (RFC 5802 2.2), so non-ASCII
** passwords work only where the client leaves them alone too.
*/
static struct user *sasl_scram(struct session *s, struct command *c, struct buf *resp,
                               const struct hash_alg *alg) {
  struct buf authz = {0}, name = {0}, header = {0}, am = {0}, cb = {0}, proof = {0};
  struct user *u = NULL, *result = NULL;
  struct str msg = str_make(resp->p ? resp->p : "", resp->len), nonce, final_nonce;
  unsigned char salt[SCRAM_SALT_LEN], rnd[18], sig[HASH_MAX];
  size_t server_first, combined, bare_len;
  int gs2 = memchr(msg.p, 0, msg.len) ? 0 : sasl_gs2_header(msg, &authz);
  if (gs2 < 0) {
    cmd_no(c, "[AUTHENTICATIONFAILED] Channel binding (p=) is not offered without TLS: "
           "begin with n,,");
    goto done;
  }
  if (!gs2 || !scram_client_first(str_make(msg.p + gs2, msg.len - (size_t)gs2), &name, &nonce)) {
    cmd_no(c, "[AUTHENTICATIONFAILED] Invalid SCRAM client-first message (RFC 5802 7)");
    goto done;
  }
  buf_add(&header, msg.p, (size_t)gs2);
  u = server_user(s->srv, str_make(name.p ? name.p : "", name.len));
  scram_salt(s->srv, str_make(name.p ? name.p : "", name.len), salt);
  random_bytes(rnd, sizeof rnd);
  buf_add(&am, msg.p + gs2, msg.len - (size_t)gs2);   /* AuthMessage: client-first-bare */
  buf_addc(&am, ',');
  server_first = am.len;                              /* ... server-first-message */
  buf_adds(&am, "r=");
  buf_add(&am, nonce.p, nonce.len);
  base64_encode_flat(rnd, sizeof rnd, &am);           /* base64 has no ',' */
  combined = am.len - server_first - 2;
  buf_adds(&am, ",s=");
  base64_encode_flat(salt, sizeof salt, &am);
  buf_printf(&am, ",i=%d", SCRAM_ITERATIONS);
  if (am.oom || header.oom) {
    cmd_no(c, "[SERVERBUG] Out of memory");
    goto done;
  }
  if (!sasl_challenge(s, c, am.p + server_first, am.len - server_first, resp)) goto done;
  msg = str_make(resp->p ? resp->p : "", resp->len);
  if (!scram_client_final(msg, &cb, &final_nonce, &proof, &bare_len) ||
      proof.len != alg->len || cb.len != header.len || memcmp(cb.p, header.p, cb.len) != 0 ||
      final_nonce.len != combined || memcmp(final_nonce.p, am.p + server_first + 2, combined)) {
    cmd_no(c, "[AUTHENTICATIONFAILED] Invalid SCRAM client-final message (RFC 5802 7)");
    goto done;
  }
  buf_addc(&am, ',');                                 /* ... client-final-without-proof */
  buf_add(&am, msg.p, bare_len);
  if (am.oom) {
    cmd_no(c, "[SERVERBUG] Out of memory");
    goto done;
  }
  if (!u || !scram_check(alg, u->password, strlen(u->password), salt, sizeof salt,
                         SCRAM_ITERATIONS, am.p, am.len, (const unsigned char *)proof.p, sig)) {
    cmd_no(c, "[AUTHENTICATIONFAILED] Authentication failed");
    goto done;
  }
  result = sasl_authorize(s, c, u, str_make(authz.p ? authz.p : "", authz.len));
  buf_reset(&cb);
  buf_adds(&cb, "v=");
  base64_encode_flat(sig, alg->len, &cb);
  if (result && !sasl_challenge(s, c, cb.p, cb.len, resp)) result = NULL;
done:
  buf_free(&authz);
  buf_free(&name);
  buf_free(&header);
  buf_free(&am);
  buf_free(&cb);
  buf_free(&proof);
  return result;
}

static struct user *sasl_scram_sha1(struct session *s, struct command *c, struct buf *resp,
                                    int have_first) {
  (void)have_first;
  return sasl_scram(s, c, resp, &hash_sha1);
}

static struct user *sasl_scram_sha256(struct session *s, struct command *c, struct buf *resp,
                                      int have_first) {
  (void)have_first;
  return sasl_scram(s, c, resp, &hash_sha256);
}

/* The value of key in kv, "key=value" pairs each ended by 0x01 (RFC 7628 3.1); 0 if absent. */
static int sasl_kv(struct str kv, const char *key, struct str *value) {
  size_t klen = strlen(key);
  for (const char *p = kv.p, *end = kv.p + kv.len; p < end;) {
    const char *e = memchr(p, 0x01, (size_t)(end - p));
    if (!e) e = end;
    if ((size_t)(e - p) > klen && !memcmp(p, key, klen) && p[klen] == '=') {
      *value = str_make(p + klen + 1, (size_t)(e - p) - klen - 1);
      return 1;
    }
    p = e + 1;
  }
  return 0;
}

/* The token of an "auth" value "Bearer TOKEN" (RFC 6750 2.1, RFC 7628 3.1); 0 if none. */
static int sasl_bearer(struct str auth, struct str *token) {
  if (auth.len < 8 || strncasecmp(auth.p, "Bearer ", 7) != 0) return 0;
  *token = str_trim(str_make(auth.p + 7, auth.len - 7));
  return token->len > 0;
}

/*
** The user whose OAuth token this is (--oauth-token, imapmem_set_oauth_token), the one
** named prefer first where two hold it; NULL if nobody does.
*/
static struct user *sasl_token_user(struct imapmem *srv, struct str token, struct str prefer) {
  struct user *found = NULL;
  pthread_mutex_lock(&srv->lock);
  for (size_t i = 0; i < srv->nusers; i++) {
    struct user *u = srv->users[i];
    if (!u->oauth_token || strlen(u->oauth_token) != token.len ||
        memcmp(u->oauth_token, token.p, token.len) != 0)
      continue;
    if (!found || (strlen(u->name) == prefer.len && !memcmp(u->name, prefer.p, prefer.len)))
      found = u;
  }
  pthread_mutex_unlock(&srv->lock);
  return found;
}

/*
** RFC 7628 3.2.2: a failed OAuth login sends its error as JSON, "status" first, in a
** challenge; the client answers with a dummy response (0x01 for OAUTHBEARER, RFC 7628
** 3.2.3; empty for XOAUTH2), and only then does the command fail. An AUTH-EXPIRED fault
** answers so for a valid token, with [EXPIRED] (RFC 5530 3).
*/
static struct user *sasl_oauth_refuse(struct session *s, struct command *c, const char *json,
                                      int expired, struct buf *resp) {
  if (sasl_challenge(s, c, json, strlen(json), resp)) {
    if (expired) cmd_no(c, "[EXPIRED] The OAuth token has expired: get a new one");
    else cmd_no(c, "[AUTHENTICATIONFAILED] OAuth token rejected");
  }
  return NULL;
}

/*
** RFC 7628 OAUTHBEARER: a GS2 header, then 0x01 and key=value pairs with
** "auth=Bearer TOKEN"; the token says who logs in, the header's "a=" whom as.
*/
static struct user *sasl_oauthbearer(struct session *s, struct command *c, struct buf *resp,
                                     int have_first) {
  (void)have_first;
  struct buf authz = {0};
  struct str msg = str_make(resp->p ? resp->p : "", resp->len), auth, token;
  struct str as = str_make("", 0);
  struct user *u = NULL, *result = NULL;
  int gs2 = sasl_gs2_header(msg, &authz);
  if (gs2 <= 0 || (size_t)gs2 >= msg.len || msg.p[gs2] != 0x01) {
    cmd_no(c, "[AUTHENTICATIONFAILED] Invalid OAUTHBEARER message (RFC 7628 3.1)%s",
           gs2 < 0 ? ": channel binding is not offered without TLS" : "");
  } else {
    as = str_make(authz.p ? authz.p : "", authz.len);
    if (sasl_kv(str_make(msg.p + gs2 + 1, msg.len - (size_t)gs2 - 1), "auth", &auth) &&
        sasl_bearer(auth, &token))
      u = sasl_token_user(s->srv, token, as);
    int expired = u && s->auth_fault == FA_AUTH_EXPIRED;
    if (!u || expired) {
      s->auth_fault = 0;
      sasl_oauth_refuse(s, c, "{\"status\":\"invalid_token\",\"scope\":\"mail\"}", expired,
                        resp);
    } else {
      result = sasl_authorize(s, c, u, as);
    }
  }
  buf_free(&authz);
  return result;
}

/*
** XOAUTH2 (Google's): "user=" NAME 0x01 "auth=Bearer " TOKEN 0x01 0x01, NAME's token. A
** failure's JSON is the one Dovecot 2.3 sends, byte for byte.
*/
static struct user *sasl_xoauth2(struct session *s, struct command *c, struct buf *resp,
                                 int have_first) {
  (void)have_first;
  struct str msg = str_make(resp->p ? resp->p : "", resp->len), name, auth, token;
  struct user *u = NULL;
  if (sasl_kv(msg, "user", &name) && sasl_kv(msg, "auth", &auth) && sasl_bearer(auth, &token)) {
    u = sasl_token_user(s->srv, token, name);
    if (u && !(strlen(u->name) == name.len && !memcmp(u->name, name.p, name.len))) u = NULL;
  }
  int expired = u && s->auth_fault == FA_AUTH_EXPIRED;
  if (!u || expired) {
    s->auth_fault = 0;
    return sasl_oauth_refuse(s, c, "{\"status\":\"401\",\"schemes\":\"bearer\",\"scope\":\"mail\"}",
                             expired, resp);
  }
  return sasl_authorize(s, c, u, str_make("", 0));
}

/*
** The mechanisms, in the order advertised; each is an AUTH= capability that can be
** switched off. Plain-text ones are refused under LOGINDISABLED (RFC 3501 6.2.3).
*/
enum { SASL_CLIENT_FIRST, SASL_EITHER_FIRST, SASL_SERVER_FIRST };
static const struct {
  const char *name;
  capset cap;
  int plaintext;              /* sends the password itself */
  int first;                  /* who speaks first: an initial response is allowed unless
                                 SASL_SERVER_FIRST; without one, CLIENT_FIRST gets "+ " */
  sasl_mech_fn *run;
} sasl_mechs[] = {
  {"PLAIN", CAP_AUTH_PLAIN, 1, SASL_CLIENT_FIRST, sasl_plain},
  {"LOGIN", CAP_AUTH_LOGIN, 1, SASL_EITHER_FIRST, sasl_login},
  {"CRAM-MD5", CAP_AUTH_CRAM_MD5, 0, SASL_SERVER_FIRST, sasl_cram_md5},
  {"SCRAM-SHA-1", CAP_AUTH_SCRAM_SHA_1, 0, SASL_CLIENT_FIRST, sasl_scram_sha1},
  {"SCRAM-SHA-256", CAP_AUTH_SCRAM_SHA_256, 0, SASL_CLIENT_FIRST, sasl_scram_sha256},
  {"OAUTHBEARER", CAP_AUTH_OAUTHBEARER, 0, SASL_CLIENT_FIRST, sasl_oauthbearer},
  {"XOAUTH2", CAP_AUTH_XOAUTH2, 0, SASL_CLIENT_FIRST, sasl_xoauth2}};
#define NMECHS (sizeof sasl_mechs / sizeof sasl_mechs[0])

static int cmd_login(struct session *s, struct command *c) {
  struct str user, pass;
  if (!parse_sp(&c->ps) || !parse_astring(&c->ps, &user) || !parse_sp(&c->ps) ||
      !parse_astring(&c->ps, &pass) || !parse_end(&c->ps))
    return cmd_bad_args(c);
  if (session_privacy_required(s, c)) return 0;
  if (cap_on(s->srv, CAP_LOGINDISABLED))     /* RFC 3501 6.2.3, 7.2.1 */
    return cmd_no(c, "[PRIVACYREQUIRED] LOGIN is disabled (LOGINDISABLED): use AUTHENTICATE "
                  "with a challenge-response mechanism such as SCRAM-SHA-256");
  struct user *u = sasl_password_user(s->srv, user, pass);
  if (!u) return cmd_no(c, "[AUTHENTICATIONFAILED] Invalid user name or password");
  if (!(u = sasl_authorize(s, c, u, str_make("", 0)))) return 0;
  session_enter(s, u);
  char caps[CAPS_MAX];
  return cmd_ok(c, "[CAPABILITY %s] LOGIN completed", capabilities(s->srv, s, caps, sizeof caps));
}

/*
** RFC 3501 6.2.2 AUTHENTICATE mechanism [initial-response] (RFC 4959 SASL-IR): the
** mechanism runs its exchange, then the OK carries the capabilities, as LOGIN's does.
*/
static int cmd_authenticate(struct session *s, struct command *c) {
  struct str mech, ir = {NULL, 0};
  struct parser *ps = &c->ps;
  if (!parse_sp(ps) || !parse_atom(ps, &mech)) return cmd_bad_args(c);
  int have_ir = 0;
  if (parse_char(ps, ' ')) {
    if (!cap_on(s->srv, CAP_SASLIR))
      return cmd_bad(c, "AUTHENTICATE An initial response needs SASL-IR, which is off");
    if (!parse_run(ps, is_astring_char, &ir) && !parse_char(ps, '='))
      return cmd_bad(c, "AUTHENTICATE Invalid initial response");
    have_ir = 1;
  }
  if (!parse_end(ps)) return cmd_bad_args(c);
  if (session_privacy_required(s, c)) return 0;   /* before "+": RFC 3501 11.2 */
  size_t m = 0;
  while (m < NMECHS && !str_ieq(mech, sasl_mechs[m].name)) m++;
  if (m == NMECHS || !cap_on(s->srv, sasl_mechs[m].cap))
    return cmd_no(c, "[CANNOT] Unsupported authentication mechanism: %.*s",
                  (int)(mech.len > 40 ? 40 : mech.len), mech.p);
  if (sasl_mechs[m].plaintext && cap_on(s->srv, CAP_LOGINDISABLED))
    return cmd_no(c, "[PRIVACYREQUIRED] %s is disabled (LOGINDISABLED): use a "
                  "challenge-response mechanism such as SCRAM-SHA-256", sasl_mechs[m].name);
  if (have_ir && sasl_mechs[m].first == SASL_SERVER_FIRST)
    return cmd_bad(c, "AUTHENTICATE %s begins with the server's challenge: no initial "
                   "response (RFC 4959 3)", sasl_mechs[m].name);
  if (have_ir && ir.len == 1 && ir.p[0] == '*') return cmd_bad(c, "AUTHENTICATE cancelled");
  struct buf resp = {0};
  int ok = 1;
  if (have_ir) {
    if (ir.len == 1 && ir.p[0] == '=') ir.len = 0;   /* RFC 4959: empty initial response */
    if (!base64_decode(ir.p, ir.len, &resp, 1)) {
      buf_free(&resp);
      return cmd_bad(c, "AUTHENTICATE Invalid base64 data");
    }
  } else if (sasl_mechs[m].first == SASL_CLIENT_FIRST) {
    ok = sasl_challenge(s, c, "", 0, &resp);
  }
  struct user *u = ok ? sasl_mechs[m].run(s, c, &resp, have_ir) : NULL;
  buf_free(&resp);
  if (!u) return 0;          /* the mechanism set the reply */
  session_enter(s, u);
  char caps[CAPS_MAX];
  return cmd_ok(c, "[CAPABILITY %s] Authenticated", capabilities(s->srv, s, caps, sizeof caps));
}

/*
** RFC 3501 6.2.1, RFC 9051 6.2.1: the OK goes out in plain text, then section 10 runs the
** handshake, first discarding whatever the client sent after this command, so that no
** plaintext injected before TLS is ever taken as a command after it.
*/
static int cmd_starttls(struct session *s, struct command *c) {
  if (s->ssl) return cmd_bad(c, "STARTTLS TLS is already active on this connection");
  if (!s->srv->tls_ctx || !s->starttls_ok)
    return cmd_bad(c, "STARTTLS is not supported: this imapmem serves no TLS here");
  if (!parse_end(&c->ps)) return cmd_bad_args(c);
  s->starttls = 1;
  return cmd_ok(c, "Begin TLS negotiation now");
}

/* ------------------------------------------------------------------------- */
/* Authenticated state (RFC 3501 6.3). */

/*
** RFC 5161 ENABLE: each named extension that can be enabled is, for the rest of the
** connection; other names are ignored. ENABLED lists what this command enabled.
*/
static int cmd_enable(struct session *s, struct command *c) {
  static const struct { const char *name; capset cap; unsigned bits; } can[] = {
    {"CONDSTORE", CAP_CONDSTORE, ENABLED_CONDSTORE},
    {"QRESYNC", CAP_QRESYNC, ENABLED_QRESYNC | ENABLED_CONDSTORE},   /* RFC 7162 3.2.3 */
    {"UIDONLY", CAP_UIDONLY, ENABLED_UIDONLY},
    {"IMAP4rev2", CAP_IMAP4REV2, ENABLED_IMAP4REV2},     /* RFC 9051 Appendix A */
    {"UTF8=ACCEPT", CAP_UTF8_ACCEPT, ENABLED_UTF8_ACCEPT}};   /* RFC 6855 3 */
  struct parser *ps = &c->ps;
  struct buf names = {0};
  unsigned bits = 0;
  if (!parse_sp(ps)) return cmd_bad(c, "ENABLE Expected capability names");
  do {
    struct str w;
    if (!parse_atom(ps, &w)) {
      buf_free(&names);
      return cmd_bad_args(c);
    }
    for (size_t i = 0; i < sizeof can / sizeof can[0]; i++)
      if (str_ieq(w, can[i].name) && cap_on(s->srv, can[i].cap) &&
          ((s->enabled | bits) & can[i].bits) != can[i].bits) {
        bits |= can[i].bits;
        buf_printf(&names, " %s", can[i].name);
      }
  } while (parse_char(ps, ' '));
  if (!parse_end(ps)) {
    buf_free(&names);
    return cmd_bad_args(c);
  }
  if (bits & ENABLED_CONDSTORE) session_enable_condstore(s);
  if (bits & ENABLED_IMAP4REV2)   /* RFC 9051 Appendix E 12: \Recent is gone from here on */
    for (size_t i = 0; i < s->nview; i++) s->view[i].recent = 0;
  s->enabled |= bits;
  session_send(s, "* ENABLED%s\r\n", names.p ? names.p : "");
  buf_free(&names);
  return cmd_ok(c, "ENABLE completed");
}

/* The parameters of SELECT and EXAMINE (RFC 4466 2.1), as far as imapmem knows them. */
struct select_params {
  int condstore;              /* (CONDSTORE), RFC 7162 3.1.8 */
  int qresync;                /* (QRESYNC (...)), RFC 7162 3.2.5 */
  uint32_t uidvalidity;
  uint64_t modseq;
  struct seqset known;        /* known-uids; n 0 if not given */
  struct seqset seqs, uids;   /* seq-match-data; n 0 if not given */
};

/* A sequence set without '*' (RFC 7162 7: known-uids and seq-match-data). */
static int parse_seqset_no_star(struct parser *ps, struct seqset *set) {
  if (!parse_seqset(ps, set)) return 0;
  if (set->dollar) return parse_fail(ps, "'$' is not allowed here");
  for (size_t i = 0; i < set->n; i++)
    if (!set->r[i].lo || !set->r[i].hi) return parse_fail(ps, "'*' is not allowed here");
  return 1;
}

static int select_parse_params(struct session *s, struct parser *ps, struct select_params *sp) {
  if (!parse_char(ps, '(')) return parse_fail(ps, "Expected '(' and select parameters");
  do {
    struct str w;
    if (!parse_atom(ps, &w)) return 0;
    if (str_ieq(w, "CONDSTORE") && cap_on(s->srv, CAP_CONDSTORE)) {
      sp->condstore = 1;
    } else if (str_ieq(w, "QRESYNC") && cap_on(s->srv, CAP_QRESYNC)) {
      if (!(s->enabled & ENABLED_QRESYNC))   /* RFC 7162 3.2.5 */
        return parse_fail(ps, "QRESYNC needs ENABLE QRESYNC first");
      sp->qresync = 1;
      if (!parse_sp(ps) || !parse_char(ps, '(') || !parse_nz_number(ps, &sp->uidvalidity) ||
          !parse_sp(ps) || !parse_modseq(ps, &sp->modseq))
        return parse_fail(ps, "Expected QRESYNC (uidvalidity modseq [known-uids] [(seqs uids)])");
      if (sp->modseq == 0) return parse_fail(ps, "QRESYNC mod-sequence must be at least 1");
      if (parse_char(ps, ' ') && !parse_peek(ps, '(') && !parse_seqset_no_star(ps, &sp->known))
        return 0;
      if (sp->known.n && !parse_peek(ps, ')') && !parse_sp(ps)) return 0;
      if (parse_char(ps, '(')) {
        if (!parse_seqset_no_star(ps, &sp->seqs) || !parse_sp(ps) ||
            !parse_seqset_no_star(ps, &sp->uids) || !parse_char(ps, ')'))
          return parse_fail(ps, "Expected (known-sequence-set known-uid-set)");
      }
      if (!parse_char(ps, ')')) return parse_fail(ps, "Expected ')' to end QRESYNC");
    } else {
      return parse_fail(ps, "Unknown select parameter");
    }
  } while (parse_char(ps, ' '));
  return parse_char(ps, ')') || parse_fail(ps, "Expected ')' after the select parameters");
}

/*
** RFC 7162 3.2.5.2: the highest UID below which the client, by its sequence match data,
** knows every expunge. Pairs are walked in order while they match the mailbox now.
** Holds mb->lock.
*/
static uint32_t select_match_floor(const struct mailbox *mb, const struct select_params *sp) {
  uint32_t floor = 0;
  size_t a = 0, b = 0;
  uint32_t seq = sp->seqs.n ? sp->seqs.r[0].lo : 0, uid = sp->uids.n ? sp->uids.r[0].lo : 0;
  while (a < sp->seqs.n && b < sp->uids.n) {
    if (seq == 0 || seq > mb->count || mb->msgs[seq - 1].uid != uid) break;
    floor = uid;
    if (seq++ == sp->seqs.r[a].hi && ++a < sp->seqs.n) seq = sp->seqs.r[a].lo;
    if (uid++ == sp->uids.r[b].hi && ++b < sp->uids.n) uid = sp->uids.r[b].lo;
  }
  return floor;
}

/*
** RFC 7162 3.2.5.1: what changed since the client's mod-sequence, among its known UIDs:
** VANISHED (EARLIER) for the expunged, FETCH (UID FLAGS MODSEQ) for the changed, as
** "UID FETCH known-uids (FLAGS) (CHANGEDSINCE modseq VANISHED)" would. Holds mb->lock.
*/
static void select_qresync(struct session *s, struct select_params *sp) {
  struct mailbox *mb = s->mb;
  if (!sp->known.n) {        /* 1:<maxuid>; nothing if the mailbox never had a message */
    if (mb->uidnext <= 1 || !(sp->known.r = arena_alloc(&s->arena, sizeof *sp->known.r)))
      return;
    sp->known.r[0].lo = 1;
    sp->known.r[0].hi = mb->uidnext - 1;
    sp->known.n = 1;
  }
  seqset_resolve(&sp->known, mb->uidnext - 1);
  session_send_vanished(s, &sp->known, sp->modseq, select_match_floor(mb, sp));
  size_t *ks, n;
  view_changed_since(s, &sp->known, 1, sp->modseq, &ks, &n);
  for (size_t j = 0; j < n; j++) {
    long i = mailbox_find_uid(mb, s->view[ks[j]].uid);
    if (i >= 0) session_send_flags_fetch(s, ks[j], &mb->msgs[i]);
  }
  free(ks);
}

/*
** RFC 9051 6.3.2: an IMAP4rev2 SELECT or EXAMINE answers with the mailbox's LIST
** response, its attributes as LIST gives them (\HasChildren or \HasNoChildren, which
** IMAP4rev2's LIST always sends). Takes the user's lock.
*/
static void select_send_list(struct session *s, const char *name) {
  pthread_mutex_lock(&s->user->lock);
  int children = user_has_children_locked(s->user, name);
  pthread_mutex_unlock(&s->user->lock);
  session_send(s, "* LIST (%s) \"/\" ", children ? "\\HasChildren" : "\\HasNoChildren");
  session_send_mailbox(s, session_mailbox_name(s, name));
  session_send(s, "\r\n");
}

/*
** The view a SELECT or EXAMINE starts with (RFC 3501 6.3.1): every message's UID, \Recent
** for those no session has claimed (claimed here unless read-only, 2.3.2; never under
** IMAP4rev2, RFC 9051 Appendix E 12), and in *unseen the number of the first message
** without \Seen, 0 if none. Returns how many are \Recent. kept: the session's view is that
** of mb as the session last heard of it, and no message has come or gone since (a
** re-SELECT; flags may have changed): its UIDs are the mailbox's, so when no message can
** be \Recent only the first unseen is looked for. At 256 clients, rewriting 10,000
** entries at every SELECT under the mailbox's lock made each command dearer than at 8
** (issue 15). Caller holds mb->lock.
*/
static size_t select_view(struct session *s, struct mailbox *mb, int examine, int kept,
                          size_t *unseen) {
  *unseen = 0;
  for (size_t i = 0; i < mb->count && !*unseen; i++)
    if (!(mb->msgs[i].flags & FLAG_SEEN)) *unseen = i + 1;
  if (kept && mb->recent_from >= mb->count) {
    if (s->view_recent)
      for (size_t i = 0; i < mb->count; i++) s->view[i].recent = 0;
    s->view_recent = 0;
    return 0;
  }
  int rev2 = session_rev2(s);
  size_t recent = 0, unclaimed = mb->count;   /* the first message left \Recent */
  for (size_t i = 0; i < mb->count; i++) {
    struct message *m = &mb->msgs[i];
    s->view[i].uid = m->uid;
    s->view[i].recent = 0;
    s->view[i].gone = 0;
    if ((m->flags & FLAG_RECENT) && !examine && !rev2) {
      m->flags &= ~(uint32_t)FLAG_RECENT;  /* \Recent goes to exactly one session */
      s->view[i].recent = 1;
    }
    if ((m->flags & FLAG_RECENT) && examine && !rev2) s->view[i].recent = 1;
    if ((m->flags & FLAG_RECENT) && unclaimed == mb->count) unclaimed = i;
    recent += s->view[i].recent;
  }
  mb->recent_from = unclaimed;
  s->view_recent = recent > 0;
  return recent;
}

static int cmd_select(struct session *s, struct command *c) {
  struct parser *ps = &c->ps;
  const char *name;
  int examine = c->def->name[0] == 'E';
  struct select_params sp;
  memset(&sp, 0, sizeof sp);
  if (!parse_sp(ps) || !parse_mailbox(ps, &name) ||
      (parse_char(ps, ' ') && !select_parse_params(s, ps, &sp)) || !parse_end(ps))
    return cmd_bad_args(c);
  if (sp.seqs.n && session_uidonly(s))   /* RFC 9586 3.7 */
    return cmd_bad(c, "[UIDREQUIRED] No sequence match data once UIDONLY is enabled");
  int had = s->mb != NULL;
  /* what the session had, to keep its view if SELECT finds the same mailbox unchanged
     (the reference: so that an equal pointer is the same mailbox, not a new one) */
  struct mailbox *prev = had ? mailbox_ref(s->mb) : NULL;
  uint64_t prev_told = s->watch.told;
  unsigned prev_epoch = s->epoch;
  size_t prev_nview = s->nview;
  session_unselect(s);       /* 6.3.1: deselect first, even if the SELECT fails */
  if (had && (cap_on(s->srv, CAP_CONDSTORE) || cap_on(s->srv, CAP_QRESYNC) ||
              session_rev2(s)))  /* RFC 9051 Appendix E 9 */
    session_send(s, "* OK [CLOSED] Previous mailbox closed\r\n");   /* RFC 7162 3.2.11 */
  if (sp.condstore || sp.qresync) s->enabled |= ENABLED_CONDSTORE;
  unsigned rights;
  struct mailbox *mb = cmd_selectable(s, c, name, "NONEXISTENT", RIGHT_R, &rights);
  int same = mb && mb == prev;
  if (prev) mailbox_unref(prev);
  if (!mb) return 0;
  /* RFC 4314 5.2: read-only without "i", "e" or a right to change a flag */
  if (!(rights & (RIGHT_I | RIGHT_E | RIGHT_S | RIGHT_W | RIGHT_T))) examine = 2;
  if (!session_wake_open(s)) {
    mailbox_unref(mb);
    return cmd_no(c, "[UNAVAILABLE] Out of file descriptors");
  }
  pthread_mutex_lock(&mb->lock);
  if (!mem_grow(&s->view, &s->capview, mb->count, sizeof s->view[0]) ||
      !mem_grow(&mb->watchers, &mb->capwatchers, mb->nwatchers + 1, sizeof mb->watchers[0])) {
    pthread_mutex_unlock(&mb->lock);
    mailbox_unref(mb);
    return cmd_no(c, "Out of memory");
  }
  size_t unseen;
  /* the view lacks no expunge (none since those it was told of), and then the same count
     means it lacks no append either; flags may have changed */
  int kept = same && prev_epoch == mb->epoch && prev_nview == mb->count &&
             !mailbox_expunged_since(mb, prev_told);
  size_t recent = select_view(s, mb, examine, kept, &unseen);
  int rev2 = session_rev2(s);
  s->nview = mb->count;
  s->mb = mb;
  mb->watchers[mb->nwatchers++] = &s->watch;
  s->readonly = examine != 0;
  s->rights = rights;
  s->epoch = mb->epoch;
  s->nomodseq = mb->nomodseq;
  s->seen_modseq = s->watch.told = mb->modseq;
  s->state = ST_SELECTED;
  session_send_flags(s, mb);
  session_send_exists(s, recent);
  if (unseen && !session_uidonly(s) && !rev2)   /* RFC 9586 3; RFC 9051 Appendix E 11 */
    session_send(s, "* OK [UNSEEN %zu] First unseen message\r\n", unseen);
  session_send(s, "* OK [UIDVALIDITY %u] UIDs valid\r\n", mb->uidvalidity);
  session_send(s, "* OK [UIDNEXT %u] Predicted next UID\r\n", mb->uidnext);
  if ((s->enabled & ENABLED_CONDSTORE) && mb->nomodseq)   /* RFC 7162 3.1.2 */
    session_send(s, "* OK [NOMODSEQ] No permanent modsequences\r\n");
  else if (s->enabled & ENABLED_CONDSTORE)
    session_send(s, "* OK [HIGHESTMODSEQ %llu] Highest\r\n", (unsigned long long)mb->modseq);
  if (cap_on(s->srv, CAP_OBJECTID))   /* RFC 8474 4.2 */
    session_send(s, "* OK [MAILBOXID (%s)] Ok\r\n", mb->id);
  if (sp.qresync && !mb->nomodseq && sp.uidvalidity == mb->uidvalidity) select_qresync(s, &sp);
  pthread_mutex_unlock(&mb->lock);
  if (rev2) select_send_list(s, name);   /* RFC 9051 6.3.2, Appendix E 10 */
  session_publish(s);        /* takes the server's lock: never inside a mailbox's */
  return cmd_ok(c, "[%s] %s completed", examine ? "READ-ONLY" : "READ-WRITE", c->def->name);
}

/*
** CREATE's arguments: mailbox [SP "(" create-param *(SP create-param) ")"] (RFC 4466 2.2),
** the one parameter being RFC 6154 3's USE (use-attr ...), which sets *use and *use_set.
** \All and \Flagged are refused with [USEATTR] (RFC 6154 5.3's example): they promise a
** virtual mailbox, which this server cannot make. 0 with the reply set.
*/
static int create_arguments(struct session *s, struct command *c, const char **name,
                            unsigned *use, int *use_set) {
  struct parser *ps = &c->ps;
  *use = 0;
  *use_set = 0;
  if (!parse_sp(ps) || !parse_mailbox(ps, name)) return cmd_bad_args(c);
  if (parse_at_end(ps)) return 1;
  struct str kw;
  if (!cap_on(s->srv, CAP_CREATE_SPECIAL_USE) || !parse_sp(ps) || !parse_char(ps, '(') ||
      !parse_atom(ps, &kw) || !str_ieq(kw, "USE") || !parse_sp(ps) || !parse_char(ps, '('))
    return cmd_bad(c, "CREATE Expected: CREATE mailbox [(USE (attributes))]");
  *use_set = 1;
  while (!parse_char(ps, ')')) {
    struct str a;
    if (ps->p[-1] != '(' && !parse_sp(ps)) return cmd_bad_args(c);
    if (!parse_char(ps, '\\') || !parse_atom(ps, &a))
      return cmd_bad(c, "CREATE Expected a special-use attribute (\\Sent, ...)");
    unsigned bit = special_use_bit(a.p - 1, a.len + 1);
    if (!bit || bit == USE_ALL || bit == USE_FLAGGED)
      return cmd_no(c, "[USEATTR] \\%.*s not supported", (int)a.len, a.p);
    *use |= bit;
  }
  if (!parse_char(ps, ')') || !parse_end(ps)) return cmd_bad_args(c);
  return 1;
}

/* 6.3.3: CREATE makes the mailbox and any missing superior levels. */
static int cmd_create(struct session *s, struct command *c) {
  const char *name;
  unsigned use;
  int use_set;
  if (!create_arguments(s, c, &name, &use, &use_set)) return 0;
  if (strcmp(name, "INBOX") == 0) return cmd_no(c, "[ALREADYEXISTS] INBOX always exists");
  const char *why = mailbox_name_invalid(name);
  if (why) return cmd_no(c, "[CANNOT] Invalid mailbox name (%s): %s", why, name);
  struct ns_name ref;
  ns_resolve(s->srv, s->user, name, &ref);
  struct user *u = ref.owner;
  if (!u || ref.level) return cmd_no(c, "[NOPERM] Permission denied: %s", name);
  int exists = 0;
  struct mailbox *mb = NULL;
  pthread_mutex_lock(&u->lock);
  int allowed = (ns_create_rights_locked(u, ref.local, s->user->name) & RIGHT_K) != 0;
  if (allowed) {
    struct mailbox *parent = ns_parent_locked(u, ref.local);
    mb = user_create_locked(u, ref.local, 1, server_new_uidvalidity(s->srv), &exists);
    if (mb) {                /* an old \Noselect level made selectable keeps no old role */
      mb->use = use;
      mb->use_set = use_set;
    }
    if (mb && parent && !mb->nacl && !acl_copy(mb, parent))   /* RFC 4314 4: inherit */
      mb = NULL;
  }
  char id[sizeof mb->id + 16] = "";
  if (mb && cap_on(s->srv, CAP_OBJECTID)) {   /* RFC 8474 4.1 */
    pthread_mutex_lock(&mb->lock);
    snprintf(id, sizeof id, "[MAILBOXID (%s)] ", mb->id);
    pthread_mutex_unlock(&mb->lock);
  }
  pthread_mutex_unlock(&u->lock);
  if (!allowed) return cmd_no(c, "[NOPERM] Permission denied: %s", name);
  if (exists) return cmd_no(c, "[ALREADYEXISTS] Mailbox already exists: %s", name);
  if (!mb) return cmd_no(c, "[SERVERBUG] Out of memory");
  return cmd_ok(c, "%sCREATE completed", id);
}

/*
** 6.3.4: DELETE. A mailbox with inferiors keeps its name as a \Noselect level and loses
** its messages; a \Noselect mailbox with inferiors cannot be deleted.
*/
static int cmd_delete(struct session *s, struct command *c) {
  const char *name;
  if (!cmd_mailbox_arg(c, &name)) return cmd_bad_args(c);
  if (strcmp(name, "INBOX") == 0) return cmd_no(c, "[CANNOT] INBOX cannot be deleted");
  struct ns_name ref;
  ns_resolve(s->srv, s->user, name, &ref);
  struct user *u = ref.owner;
  if (!u || ref.level) return cmd_no(c, "[NONEXISTENT] Mailbox does not exist: %s", name);
  const char *shown = name;
  name = ref.local;
  pthread_mutex_lock(&u->lock);
  size_t i;
  for (i = 0; i < u->live.n && strcmp(u->live.list[i]->name, name) != 0; i++) {}
  unsigned rights = i < u->live.n ? acl_rights(u->live.list[i], s->user->name) : 0;
  if (i == u->live.n || !(rights & (RIGHT_L | RIGHT_X))) {   /* RFC 4314 6 */
    pthread_mutex_unlock(&u->lock);
    return cmd_no(c, "[NONEXISTENT] Mailbox does not exist: %s", shown);
  }
  if (!(rights & RIGHT_X) || strcmp(name, "INBOX") == 0) {
    pthread_mutex_unlock(&u->lock);
    if (rights & RIGHT_X) return cmd_no(c, "[CANNOT] INBOX cannot be deleted");
    return cmd_no(c, "[NOPERM] Permission denied: %s", shown);
  }
  struct mailbox *mb = u->live.list[i];
  int own = s->mb == mb;     /* this session's own selected mailbox: it leaves quietly */
  if (user_has_children_locked(u, name)) {
    if (!mb->selectable) {
      pthread_mutex_unlock(&u->lock);
      return cmd_no(c, "[CANNOT] Mailbox has inferior mailboxes and is \\Noselect: %s", shown);
    }
    pthread_mutex_lock(&mb->lock);
    unsigned char *all = mem_calloc(mb->count ? mb->count : 1, 1);
    if (all) {
      memset(all, 1, mb->count);
      mailbox_expunge(mb, all);
      free(all);
    }
    mb->selectable = 0;
    mailbox_retire(mb, "deleted by another session");
    pthread_mutex_unlock(&mb->lock);
    while (mb->nacl) acl_delete(mb, mb->acl[0].id);   /* RFC 4314 4: its ACL goes too */
  } else {
    user_remove_locked(u, i, "deleted by another session");
  }
  pthread_mutex_unlock(&u->lock);
  if (own) session_unselect(s);   /* back to the authenticated state, then the tagged OK */
  return cmd_ok(c, "DELETE completed");
}

/*
** RENAME's rights (RFC 4314 4): "x" on the mailbox and "k" where the new name goes, both
** names in one user's mailboxes (or the shared tree). A source the user may not look up
** answers as a missing one. 0 with the NO reply set; else rf and rt name the two.
*/
static int cmd_rename_check(struct session *s, struct command *c, const char *from,
                            const char *to, struct ns_name *rf, struct ns_name *rt) {
  ns_resolve(s->srv, s->user, from, rf);
  ns_resolve(s->srv, s->user, to, rt);
  struct user *u = rf->owner;
  if (!u || rf->level) return cmd_no(c, "[NONEXISTENT] Mailbox does not exist: %s", from);
  pthread_mutex_lock(&u->lock);
  struct mailbox *src = user_mailbox_locked(u, rf->local);
  unsigned rights = src ? acl_rights(src, s->user->name) : 0;
  unsigned create = rt->owner == u ? ns_create_rights_locked(u, rt->local, s->user->name) : 0;
  pthread_mutex_unlock(&u->lock);
  if (!src || !(rights & (RIGHT_L | RIGHT_X)))   /* RFC 4314 6 */
    return cmd_no(c, "[NONEXISTENT] Mailbox does not exist: %s", from);
  if (rt->owner != u || rt->level)
    return cmd_no(c, "[CANNOT] A mailbox cannot move to another user's mailboxes: %s", to);
  if (!(rights & RIGHT_X) || !(create & RIGHT_K))
    return cmd_no(c, "[NOPERM] Permission denied: %s", !(rights & RIGHT_X) ? from : to);
  return 1;
}

/*
** 6.3.5: RENAME. Inferior mailboxes follow their parent. Renaming INBOX moves its
** messages to a new mailbox and leaves INBOX empty; INBOX's inferiors stay.
*/
static int cmd_rename(struct session *s, struct command *c) {
  const char *from, *to;
  if (!parse_sp(&c->ps) || !parse_mailbox(&c->ps, &from) || !parse_sp(&c->ps) ||
      !parse_mailbox(&c->ps, &to) || !parse_end(&c->ps))
    return cmd_bad_args(c);
  const char *why = mailbox_name_invalid(to);
  if (why) return cmd_no(c, "[CANNOT] Invalid mailbox name (%s): %s", why, to);
  if (strcmp(to, "INBOX") == 0) return cmd_no(c, "[ALREADYEXISTS] INBOX always exists");
  struct ns_name *rf = arena_alloc(&s->arena, 2 * sizeof *rf), *rt = rf + 1;
  if (!rf) return cmd_no(c, "[SERVERBUG] Out of memory");
  if (!cmd_rename_check(s, c, from, to, rf, rt)) return 0;
  struct user *u = rf->owner;
  from = rf->local;
  to = rt->local;
  size_t fl = strlen(from);
  if (strcmp(from, "INBOX") != 0 && strncmp(to, from, fl) == 0 && to[fl] == '/')
    return cmd_no(c, "[CANNOT] Cannot move a mailbox into itself");
  uint32_t uv = server_new_uidvalidity(s->srv);
  pthread_mutex_lock(&u->lock);
  struct mailbox *src = user_mailbox_locked(u, from);
  if (!src) {
    pthread_mutex_unlock(&u->lock);
    return cmd_no(c, "[NONEXISTENT] Mailbox does not exist: %s", from);
  }
  if (user_mailbox_locked(u, to)) {
    pthread_mutex_unlock(&u->lock);
    return cmd_no(c, "[ALREADYEXISTS] Mailbox already exists: %s", to);
  }
  if (strcmp(from, "INBOX") == 0) {
    int exists;
    struct mailbox *dst = user_create_locked(u, to, 1, uv, &exists);
    if (!dst) {
      pthread_mutex_unlock(&u->lock);
      return cmd_no(c, "[SERVERBUG] Out of memory");
    }
    pthread_mutex_lock(&src->lock);
    pthread_mutex_lock(&dst->lock);  /* dst is new and unknown to any session */
    unsigned char *all = mem_calloc(src->count ? src->count : 1, 1);
    if (all && mem_grow(&dst->msgs, &dst->cap, src->count, sizeof dst->msgs[0])) {
      for (size_t i = 0; i < src->count; i++) {
        struct message *m = &src->msgs[i];
        int bits[IMAPMEM_MAX_KEYWORDS];
        uint64_t kw = 0;
        for (int k = 0; k < src->nkeywords; k++) {
          bits[k] = mailbox_keyword(dst, src->keywords[k], strlen(src->keywords[k]), 1);
          if ((m->keywords >> k & 1) && bits[k] >= 0) kw |= (uint64_t)1 << bits[k];
        }
        struct msgdata *d = msgdata_ref(m->data);
        if (mailbox_append(dst, d, m->flags, kw, m->internaldate, m->tz)) all[i] = 1;
        else msgdata_unref(d);   /* not moved: it stays in INBOX */
      }
      mailbox_expunge(src, all);
    }
    free(all);
    pthread_mutex_unlock(&dst->lock);
    pthread_mutex_unlock(&src->lock);
    pthread_mutex_unlock(&u->lock);
    return cmd_ok(c, "RENAME completed");
  }
  /* the mailbox and its inferiors take the new prefix; missing new parents are made */
  for (size_t i = 0; i < u->live.n; i++) {   /* first: would any name grow too long? */
    const char *m = u->live.list[i]->name;
    if ((strcmp(m, from) == 0 || (strncmp(m, from, fl) == 0 && m[fl] == '/')) &&
        strlen(to) + strlen(m + fl) > MAX_MAILBOX_NAME) {
      pthread_mutex_unlock(&u->lock);
      return cmd_no(c, "[CANNOT] An inferior mailbox's new name would be too long");
    }
  }
  for (size_t i = 0; i < u->live.n; i++) {
    struct mailbox *mb = u->live.list[i];
    if (strcmp(mb->name, from) != 0 && !(strncmp(mb->name, from, fl) == 0 && mb->name[fl] == '/'))
      continue;
    size_t n = strlen(to) + strlen(mb->name + fl) + 1;
    char *nn = mem_alloc(n);
    if (!nn) continue;
    snprintf(nn, n, "%s%s", to, mb->name + fl);
    free(mb->name);
    mb->name = nn;
    pthread_mutex_lock(&mb->lock);
    mailbox_retire(mb, "renamed by another session");
    if (s->mb == mb) s->epoch = mb->epoch;   /* the renaming session keeps its selection */
    pthread_mutex_unlock(&mb->lock);
  }
  for (const char *p = strchr(to, '/'); p; p = strchr(p + 1, '/')) {
    char level[MAX_MAILBOX_NAME + 1];
    snprintf(level, sizeof level, "%.*s", (int)(p - to), to);
    int exists;
    if (!user_mailbox_locked(u, level)) user_create_locked(u, level, 0, uv, &exists);
  }
  pthread_mutex_unlock(&u->lock);
  return cmd_ok(c, "RENAME completed");
}

static int cmd_subscribe(struct session *s, struct command *c) {
  const char *name;
  int sub = c->def->name[0] == 'S';
  if (!cmd_mailbox_arg(c, &name)) return cmd_bad_args(c);
  struct user *u = s->user;
  pthread_mutex_lock(&u->lock);
  size_t i;
  for (i = 0; i < u->live.nsubs && strcmp(u->live.subs[i], name) != 0; i++) {}
  int ok = 1;
  if (sub) {
    ok = user_subscribe_locked(u, name);
  } else if (i < u->live.nsubs) {
    free(u->live.subs[i]);
    u->live.subs[i] = u->live.subs[--u->live.nsubs];
  } else {
    ok = -1;
  }
  pthread_mutex_unlock(&u->lock);
  store_changed(s->srv);     /* NOTIFY SubscriptionChange (RFC 5465 5.5) */
  if (ok == -1) return cmd_no(c, "[NONEXISTENT] Not subscribed: %s", name);
  if (!ok) return cmd_no(c, "[SERVERBUG] Out of memory");
  return cmd_ok(c, "%s completed", c->def->name);
}

/* LIST wildcards (6.3.8): '*' matches anything, '%' anything but the delimiter. */
/*
** LIST wildcards (6.3.8): '*' matches anything, '%' anything but the delimiter. Matched
** by dynamic programming over the name, in O(pattern x name) time: a recursive matcher
** is exponential in the number of wildcards, which a client chooses.
*/
static int list_match(const char *pat, const char *name) {
  size_t n = strlen(name), literal = 0;
  for (const char *p = pat; *p; p++) literal += *p != '*' && *p != '%';
  if (literal > n) return 0;         /* more characters to match than the name has */
  unsigned char *block = mem_alloc(2 * (n + 1));
  if (!block) return 0;
  unsigned char *prev = block, *cur = block + n + 1;
  memset(prev, 0, n + 1);
  prev[0] = 1;
  for (const char *p = pat; *p; p++) {
    if ((*p == '*' || *p == '%') && (p[1] == '*' || (*p == '%' && p[1] == '%'))) continue;
    for (size_t j = 0; j <= n; j++) {
      if (*p == '*') cur[j] = prev[j] || (j > 0 && cur[j - 1]);
      else if (*p == '%') cur[j] = prev[j] || (j > 0 && cur[j - 1] && name[j - 1] != '/');
      else cur[j] = j > 0 && prev[j - 1] && name[j - 1] == *p;
    }
    unsigned char *t = prev;
    prev = cur;
    cur = t;
  }
  int match = prev[n];
  free(block);
  return match;
}

static int list_match_name(const char *pat, const char *name) {
  if (list_match(pat, name)) return 1;
  if (strcmp(name, "INBOX") == 0) {   /* INBOX matches in any letter case */
    char up[8];
    size_t i;
    for (i = 0; pat[i] && i < sizeof up - 1; i++) up[i] = (char)toupper((unsigned char)pat[i]);
    up[i] = 0;
    return !pat[i] && list_match(up, name);
  }
  return 0;
}

static int cmp_names(const void *a, const void *b) {
  const char *x = *(const char *const *)a, *y = *(const char *const *)b;
  int xi = strcmp(x, "INBOX") == 0, yi = strcmp(y, "INBOX") == 0;
  if (xi != yi) return yi - xi;
  return strcmp(x, y);
}

struct list_entry {           /* a name and its attributes, copied out under the lock */
  const char *name;
  const char *attrs;
};

static int cmp_list_entries(const void *a, const void *b) {
  return cmp_names(&((const struct list_entry *)a)->name, &((const struct list_entry *)b)->name);
}

/* Add an entry to a LIST's arena array, growing it (a copy: the arena does not free). */
static int list_push(struct session *s, struct list_entry **e, size_t *n, size_t *cap,
                     const char *name, const char *attrs) {
  if (*n == *cap) {
    size_t ncap = *cap ? *cap * 2 : 16;
    struct list_entry *bigger = arena_alloc(&s->arena, ncap * sizeof *bigger);
    if (!bigger) return 0;
    if (*n) memcpy(bigger, *e, *n * sizeof *bigger);
    *e = bigger;
    *cap = ncap;
  }
  (*e)[*n].name = arena_strndup(&s->arena, name, strlen(name));
  (*e)[*n].attrs = attrs;
  return (*e)[(*n)++].name != NULL;
}

/*
** LIST in the other namespaces (RFC 2342 5, RFC 4314 4): each mailbox of another user or
** of the shared tree that this user may look up ("l"), under its full name, and the
** levels that hold them (the prefix, "Other Users/bob") as \Noselect; a level the user
** may not look up is left out, as if it did not exist. 0 if memory ran out.
*/
static int list_add_others(struct session *s, struct list_entry **e, size_t *n, size_t *cap,
                           int children) {
  struct imapmem *srv = s->srv;
  const char *level = children ? "\\Noselect \\HasChildren" : "\\Noselect";
  int others = 0;
  for (size_t k = 0;; k++) {
    struct user *u = NULL;
    char prefix[MAX_NS_PREFIX * 2 + 256];
    if (k == 0) {
      u = srv->shared;
      snprintf(prefix, sizeof prefix, "%s", srv->ns_shared);
    } else {
      pthread_mutex_lock(&srv->lock);
      if (k - 1 < srv->nusers) u = srv->users[k - 1];
      pthread_mutex_unlock(&srv->lock);
      if (!u) break;
      if (u == s->user || strlen(u->name) > 200) continue;
      snprintf(prefix, sizeof prefix, "%s%s/", srv->ns_other, u->name);
    }
    if (!u || !prefix[0]) continue;
    size_t first = *n;
    int ok = 1;
    pthread_mutex_lock(&u->lock);
    for (size_t i = 0; ok && i < u->live.n; i++) {
      struct mailbox *mb = u->live.list[i];
      if (!(acl_rights(mb, s->user->name) & RIGHT_L)) continue;
      char *full = arena_alloc(&s->arena, strlen(prefix) + strlen(mb->name) + 1);
      if (!full) ok = 0;
      else snprintf(full, strlen(prefix) + strlen(mb->name) + 1, "%s%s", prefix, mb->name);
      if (ok) ok = list_push(s, e, n, cap, full, mb->selectable ? "" : "\\Noselect");
    }
    pthread_mutex_unlock(&u->lock);
    if (!ok) return 0;
    for (size_t i = first; children && i < *n; i++) {   /* RFC 3348 among what is shown */
      size_t len = strlen((*e)[i].name);
      int has = 0;
      for (size_t j = first; j < *n && !has; j++)
        has = strncmp((*e)[j].name, (*e)[i].name, len) == 0 && (*e)[j].name[len] == '/';
      int sel = !(*e)[i].attrs[0];
      (*e)[i].attrs = has ? (sel ? "\\HasChildren" : "\\Noselect \\HasChildren")
                          : (sel ? "\\HasNoChildren" : "\\Noselect \\HasNoChildren");
    }
    if (*n == first) continue;
    prefix[strlen(prefix) - 1] = 0;       /* the level itself, without its delimiter */
    if (!list_push(s, e, n, cap, prefix, level)) return 0;
    if (k > 0 && !others++) {             /* the other users' prefix, once */
      snprintf(prefix, sizeof prefix, "%.*s", (int)strlen(srv->ns_other) - 1, srv->ns_other);
      if (!list_push(s, e, n, cap, prefix, level)) return 0;
    }
  }
  return 1;
}

/* ------------------------------------------------------------------------- */
/*
** STATUS items, for STATUS and for LIST's STATUS return option (RFC 5819 2): those of RFC
** 3501 6.3.10, RFC 7162 3.1.7's HIGHESTMODSEQ, RFC 7889's APPENDLIMIT, RFC 8438's SIZE,
** RFC 9051 6.3.11's DELETED, RFC 9208 4.1.4's DELETED-STORAGE and RFC 8474 4.3's
** MAILBOXID. ORDER enum status_item.
*/
enum status_item {
  SI_MESSAGES, SI_RECENT, SI_UIDNEXT, SI_UIDVALIDITY, SI_UNSEEN, SI_HIGHESTMODSEQ,
  SI_APPENDLIMIT, SI_SIZE, SI_DELETED, SI_DELETED_STORAGE, SI_MAILBOXID, SI_COUNT
};
static const struct {
  const char *name;
  capset cap;                 /* 0: always there */
} status_items[SI_COUNT] = {
  {"MESSAGES", 0}, {"RECENT", 0}, {"UIDNEXT", 0}, {"UIDVALIDITY", 0}, {"UNSEEN", 0},
  {"HIGHESTMODSEQ", CAP_CONDSTORE}, {"APPENDLIMIT", CAP_APPENDLIMIT},
  {"SIZE", CAP_STATUS_SIZE}, {"DELETED", 0},
  {"DELETED-STORAGE", CAP_QUOTA_RES_STORAGE}, {"MAILBOXID", CAP_OBJECTID}};

struct status_want {          /* the items asked for, in the order asked */
  unsigned item[16];
  int n;
};

/*
** status-att *(SP status-att) ")", the "(" read already. 0 with the BAD reply set if an
** item is unknown or switched off.
*/
static int status_parse_items(struct session *s, struct command *c, struct status_want *w) {
  struct parser *ps = &c->ps;
  w->n = 0;
  do {
    struct str it;
    if (!parse_atom(ps, &it)) return cmd_bad_args(c);
    unsigned k;
    for (k = 0; k < SI_COUNT && !(str_ieq(it, status_items[k].name) &&
                                  (!status_items[k].cap || cap_on(s->srv, status_items[k].cap)));
         k++) {}
    if (k == SI_COUNT)
      return cmd_bad(c, "%s Unknown status item: %.*s", c->def->name, (int)it.len, it.p);
    if (k == SI_RECENT && session_rev2(s))   /* RFC 9051 Appendix E 12 */
      return cmd_bad(c, "%s RECENT is not in IMAP4rev2 (RFC 9051 Appendix E 12)", c->def->name);
    if (w->n < 16) w->item[w->n++] = k;
    if (k == SI_HIGHESTMODSEQ) session_enable_condstore(s);
  } while (parse_char(ps, ' '));
  if (!parse_char(ps, ')')) return cmd_bad(c, "%s Expected ')'", c->def->name);
  return 1;
}

/* The untagged STATUS response for mb, called name. Takes mb->lock. */
static void status_send(struct session *s, struct mailbox *mb, const char *name,
                        const struct status_want *w) {
  uint64_t v[SI_COUNT] = {0};
  pthread_mutex_lock(&mb->lock);
  v[SI_MESSAGES] = mb->count;
  for (size_t i = 0; i < mb->count; i++) {
    v[SI_RECENT] += (mb->msgs[i].flags & FLAG_RECENT) != 0;
    v[SI_UNSEEN] += !(mb->msgs[i].flags & FLAG_SEEN);
    v[SI_SIZE] += mb->msgs[i].data->size;   /* RFC 8438 3: the sum of RFC822.SIZE */
    if (mb->msgs[i].flags & FLAG_DELETED) {   /* RFC 9208 4.1.4: what an EXPUNGE frees */
      v[SI_DELETED]++;
      v[SI_DELETED_STORAGE] += mb->msgs[i].data->size;   /* octets, not KiB */
    }
  }
  /* a session that has this mailbox selected holds its \Recent messages */
  if (s->mb == mb)
    for (size_t i = 0; i < s->nview; i++) v[SI_RECENT] += s->view[i].recent;
  v[SI_UIDNEXT] = mb->uidnext;
  v[SI_UIDVALIDITY] = mb->uidvalidity;
  v[SI_HIGHESTMODSEQ] = mb->nomodseq ? 0 : mb->modseq;   /* RFC 7162 3.1.7: 0 without */
  v[SI_APPENDLIMIT] = atomic_load(&s->srv->append_limit);   /* RFC 7889 3.1: one for all */
  char mailboxid[sizeof mb->id];
  memcpy(mailboxid, mb->id, sizeof mailboxid);
  pthread_mutex_unlock(&mb->lock);
  session_send(s, "* STATUS ");
  session_send_mailbox(s, session_mailbox_name(s, name));   /* UTF-8 where enabled */
  session_send(s, " (");
  for (int i = 0; i < w->n; i++)
    if (w->item[i] == SI_MAILBOXID)   /* RFC 8474 4.3: an objectid in parentheses */
      session_send(s, "%sMAILBOXID (%s)", i ? " " : "", mailboxid);
    else
      session_send(s, "%s%s %llu", i ? " " : "", status_items[w->item[i]].name,
                   (unsigned long long)v[w->item[i]]);
  session_send(s, ")\r\n");
}

/* ------------------------------------------------------------------------- */
/*
** The extended LIST of RFC 5258 (LIST-EXTENDED), with RFC 6154's SPECIAL-USE options and
** RFC 5819's STATUS return option. What the store knows of every name is copied into
** list_item rows under the user's lock (list_collect_locked); what a row shows is decided
** by list_item_attributes alone, for any LIST that wants the RFC 5258 attributes (IMAP4rev2
** needs the child flags and \NonExistent too). A plain LIST or LSUB never comes here: its
** answer stays as RFC 3501 gives it.
*/
enum {                        /* what a row knows of its name */
  LI_EXISTS = 1,              /* a mailbox, perhaps a \Noselect level */
  LI_SELECTABLE = 2,
  LI_CHILDREN = 4,            /* some mailbox lives below it (RFC 3348) */
  LI_SUBSCRIBED = 8
};
enum {                        /* what a LIST asks to see (RFC 5258 3.2, 6154 2, 5819 2) */
  LR_CHILDREN = 1, LR_SUBSCRIBED = 2, LR_SPECIAL_USE = 4, LR_STATUS = 8
};
enum {                        /* which names a LIST selects (RFC 5258 3.1, 6154 2) */
  LS_SUBSCRIBED = 1, LS_REMOTE = 2, LS_RECURSIVEMATCH = 4, LS_SPECIAL_USE = 8
};
struct list_item {
  const char *name;
  const char *shown;          /* the name as the session names it (UTF-8 in IMAP4rev2) */
  unsigned info;              /* LI_* */
  unsigned use;               /* special-use roles, USE_* */
  int matched;                /* matches one of the patterns */
};
struct list_request {
  unsigned select, ret;       /* LS_*, LR_* */
  const char *pattern[IMAPMEM_MAX_PATTERNS];  /* reference + pattern, canonical */
  int npatterns;
  struct status_want status;  /* with LR_STATUS */
};

/*
** The attributes of a row, "\Noselect \HasNoChildren" say, into out (cap bytes, 256 is
** plenty), for what ret asks: \NonExistent (RFC 5258 3: it implies \Noselect, which is then
** left out, as Dovecot does) or \Noselect, the child flags, the roles, \Subscribed.
*/
static void list_item_attributes(const struct list_item *it, unsigned ret, char *out,
                                 size_t cap) {
  const char *a[4 + USE_ROLES];
  int n = 0;
  if (!(it->info & LI_EXISTS)) a[n++] = "\\NonExistent";
  else if (!(it->info & LI_SELECTABLE)) a[n++] = "\\Noselect";
  if (ret & LR_CHILDREN) a[n++] = it->info & LI_CHILDREN ? "\\HasChildren" : "\\HasNoChildren";
  for (int i = 0; i < USE_ROLES; i++)
    if ((ret & LR_SPECIAL_USE) && (it->use >> i & 1)) a[n++] = special_use_names[i];
  if ((ret & LR_SUBSCRIBED) && (it->info & LI_SUBSCRIBED)) a[n++] = "\\Subscribed";
  size_t len = 0;
  out[0] = 0;
  for (int i = 0; i < n; i++)
    len += (size_t)snprintf(out + len, len < cap ? cap - len : 0, "%s%s", i ? " " : "", a[i]);
}

static int list_subscribed_locked(struct user *u, const char *name) {
  for (size_t i = 0; i < u->live.nsubs; i++)
    if (strcmp(u->live.subs[i], name) == 0) return 1;
  return 0;
}

static struct list_item *list_item_find(struct list_item *v, size_t n, const char *name,
                                        size_t len) {
  for (size_t i = 0; i < n; i++)
    if (strlen(v[i].name) == len && strncmp(v[i].name, name, len) == 0) return &v[i];
  return NULL;
}

/*
** Rows for every mailbox and every subscribed name (RFC 5258 3: a subscribed name need not
** exist), and with parents set, for the missing parent levels of subscribed names too
** (\NonExistent parents that RECURSIVEMATCH may show). The nothers rows of others, as
** list_add_others made them (what this user may look up in the other namespaces), come
** after the user's own. In the arena; *n rows. NULL if memory ran out.
** O(names x (names + subscriptions)). Caller holds u->lock.
*/
static struct list_item *list_collect_locked(struct session *s, struct user *u, int parents,
                                             const struct list_entry *others, size_t nothers,
                                             size_t *n) {
  size_t cap = u->live.n + nothers + u->live.nsubs;
  if (parents)
    for (size_t i = 0; i < u->live.nsubs; i++)
      for (const char *p = u->live.subs[i]; (p = strchr(p, '/')) != NULL; p++) cap++;
  struct list_item *v = arena_alloc(&s->arena, (cap ? cap : 1) * sizeof *v);
  *n = 0;
  if (!v) return NULL;
  for (size_t i = 0; i < u->live.n; i++) {
    struct mailbox *mb = u->live.list[i];
    struct list_item *it = &v[(*n)++];
    if (!(it->name = arena_strndup(&s->arena, mb->name, strlen(mb->name)))) return NULL;
    it->info = LI_EXISTS | (mb->selectable ? LI_SELECTABLE : 0) |
               (user_has_children_locked(u, mb->name) ? LI_CHILDREN : 0) |
               (list_subscribed_locked(u, mb->name) ? LI_SUBSCRIBED : 0);
    it->use = mailbox_special_use_locked(mb);
    it->matched = 0;
  }
  for (size_t i = 0; i < nothers; i++) {   /* roles are the owner's, never shown to others */
    const char *a = others[i].attrs;
    unsigned info = LI_EXISTS | (strstr(a, "\\Noselect") ? 0 : LI_SELECTABLE) |
                    (strstr(a, "\\HasChildren") ? LI_CHILDREN : 0) |
                    (list_subscribed_locked(u, others[i].name) ? LI_SUBSCRIBED : 0);
    struct list_item *it = list_item_find(v, *n, others[i].name, strlen(others[i].name));
    if (it) {                  /* a personal name under a namespace prefix: one row */
      it->info |= info & (unsigned)LI_CHILDREN;
      continue;
    }
    it = &v[(*n)++];
    it->name = others[i].name;  /* in the arena already */
    it->info = info;
    it->use = 0;
    it->matched = 0;
  }
  for (size_t i = 0; i < u->live.nsubs; i++) {
    const char *name = u->live.subs[i];
    for (const char *p = name; parents && (p = strchr(p, '/')) != NULL; p++) {
      size_t len = (size_t)(p - name);
      if (!len || list_item_find(v, *n, name, len)) continue;
      struct list_item *it = &v[(*n)++];
      if (!(it->name = arena_strndup(&s->arena, name, len))) return NULL;
      it->info = 0;            /* no mailbox lives below a name that does not exist */
      it->use = 0;
      it->matched = 0;
    }
    struct list_item *it = list_item_find(v, *n, name, strlen(name));
    if (it) {                  /* a parent level met before its own subscription */
      it->info |= LI_SUBSCRIBED;
      continue;
    }
    it = &v[(*n)++];
    if (!(it->name = arena_strndup(&s->arena, name, strlen(name)))) return NULL;
    it->info = LI_SUBSCRIBED;
    it->use = 0;
    it->matched = 0;
  }
  return v;
}

/* Does the row meet the selection criteria (RFC 5258 3)? */
static int list_selected(const struct list_request *rq, const struct list_item *it) {
  if ((rq->select & LS_SUBSCRIBED) ? !(it->info & LI_SUBSCRIBED) : !(it->info & LI_EXISTS))
    return 0;
  return !(rq->select & LS_SPECIAL_USE) || it->use != 0;
}

/*
** "(" option *(SP option) ")", each an atom from names (NULL-ended; bits[i] for names[i])
** or, for a return option, STATUS with its items. 0 with the BAD reply set.
*/
static int list_parse_options(struct session *s, struct command *c, const char *what,
                              const char *const *names, const unsigned *bits, unsigned *out,
                              struct status_want *status) {
  struct parser *ps = &c->ps;
  *out = 0;
  if (!parse_char(ps, '(')) return cmd_bad(c, "LIST Expected '(' before the %s options", what);
  if (parse_char(ps, ')')) return 1;
  do {
    struct str opt;
    if (!parse_atom(ps, &opt)) return cmd_bad(c, "LIST Expected a %s option", what);
    int k;
    for (k = 0; names[k] && !str_ieq(opt, names[k]); k++) {}
    if (!names[k])
      return cmd_bad(c, "LIST Unknown %s option: %.*s", what, (int)opt.len, opt.p);
    *out |= bits[k];
    if (status && bits[k] == LR_STATUS && (!parse_sp(ps) || !parse_char(ps, '(')))
      return cmd_bad(c, "LIST Expected STATUS (items)");
    if (status && bits[k] == LR_STATUS && !status_parse_items(s, c, status)) return 0;
  } while (parse_char(ps, ' '));
  if (!parse_char(ps, ')')) return cmd_bad(c, "LIST Expected ')' after the %s options", what);
  return 1;
}

/*
** RFC 5258 6: LIST [SP list-select-opts] SP mailbox SP mbox-or-pat [SP list-return-opts],
** into rq. 0 with the BAD reply set.
*/
static int list_parse_extended(struct session *s, struct command *c, struct list_request *rq) {
  struct parser *ps = &c->ps;
  int special = cap_on(s->srv, CAP_SPECIAL_USE), status = cap_on(s->srv, CAP_LIST_STATUS);
  const char *sel_names[] = {"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH",
                             special ? "SPECIAL-USE" : NULL, NULL};
  const unsigned sel_bits[] = {LS_SUBSCRIBED, LS_REMOTE, LS_RECURSIVEMATCH, LS_SPECIAL_USE};
  const char *ret_names[] = {"SUBSCRIBED", "CHILDREN", special ? "SPECIAL-USE" : "",
                             status ? "STATUS" : NULL, NULL};
  const unsigned ret_bits[] = {LR_SUBSCRIBED, LR_CHILDREN, LR_SPECIAL_USE, LR_STATUS};
  struct str ref, pat[IMAPMEM_MAX_PATTERNS];
  memset(rq, 0, sizeof *rq);
  if (!parse_sp(ps)) return cmd_bad_args(c);
  int options = parse_peek(ps, '(');
  if (options && !list_parse_options(s, c, "selection", sel_names, sel_bits, &rq->select, NULL))
    return 0;
  if ((rq->select & LS_SUBSCRIBED) == 0 && (rq->select & LS_RECURSIVEMATCH))   /* 3.1 */
    return cmd_bad(c, "LIST RECURSIVEMATCH needs the SUBSCRIBED selection option");
  if (options && !parse_sp(ps)) return cmd_bad_args(c);
  if (!parse_astring(ps, &ref) || !parse_sp(ps)) return cmd_bad_args(c);
  int n = 0, list = parse_char(ps, '(');
  do {
    if (n == IMAPMEM_MAX_PATTERNS)
      return cmd_bad(c, "LIST At most %d patterns", IMAPMEM_MAX_PATTERNS);
    if (!parse_list_mailbox(ps, &pat[n++])) return cmd_bad_args(c);
  } while (list && parse_char(ps, ' '));
  if (list && !parse_char(ps, ')')) return cmd_bad(c, "LIST Expected ')' after the patterns");
  if (parse_char(ps, ' ')) {
    struct str kw;
    if (!parse_atom(ps, &kw) || !str_ieq(kw, "RETURN") || !parse_sp(ps))
      return cmd_bad(c, "LIST Expected RETURN (options)");
    if (!list_parse_options(s, c, "return", ret_names, ret_bits, &rq->ret, &rq->status))
      return 0;
  }
  if (!parse_end(ps)) return cmd_bad_args(c);
  if (rq->select & LS_SUBSCRIBED) rq->ret |= LR_SUBSCRIBED;      /* RFC 5258 3.1 */
  if (rq->select & LS_SPECIAL_USE) rq->ret |= LR_SPECIAL_USE;    /* RFC 6154 2 */
  if (cap_on(s->srv, CAP_CHILDREN)) rq->ret |= LR_CHILDREN;      /* as a plain LIST */
  for (int i = 0; i < n; i++) {
    if (pat[i].len == 0) continue;   /* RFC 5258 3: an empty pattern matches nothing */
    char *full = arena_alloc(&s->arena, ref.len + pat[i].len + 1);
    if (!full) return cmd_no(c, "Out of memory");
    memcpy(full, ref.p, ref.len);
    memcpy(full + ref.len, pat[i].p, pat[i].len);
    full[ref.len + pat[i].len] = 0;
    mailbox_canonical(full, full, ref.len + pat[i].len + 1);
    rq->pattern[rq->npatterns++] = full;
  }
  return 1;
}

/*
** The extended LIST (RFC 5258 3). A row is shown when it matches a pattern and meets the
** selection criteria, or, with RECURSIVEMATCH, when a descendant meets them that matches
** no pattern (3.3 2B; 3.5's SHOULD: not when every such descendant is shown anyway). A
** row that meets the criteria gets CHILDINFO whenever a descendant does (RFC 5258 5,
** example 9). RFC 5819 2: STATUS follows the LIST line of each selectable row that meets
** the criteria.
*/
static int cmd_list_extended(struct session *s, struct command *c) {
  struct list_request rq;
  if (!list_parse_extended(s, c, &rq)) return 0;
  struct user *u = s->user;
  size_t n, nothers = 0, capothers = 0;
  struct list_entry *others = NULL;   /* RFC 4314 4: only what this user may look up */
  if (!list_add_others(s, &others, &nothers, &capothers, 1))
    return cmd_no(c, "[SERVERBUG] Out of memory");
  pthread_mutex_lock(&u->lock);
  struct list_item *v = list_collect_locked(s, u, (rq.select & LS_RECURSIVEMATCH) != 0, others,
                                            nothers, &n);
  pthread_mutex_unlock(&u->lock);
  if (!v) return cmd_no(c, "[SERVERBUG] Out of memory");
  qsort(v, n, sizeof *v, cmp_list_entries);
  for (size_t i = 0; i < n; i++) {
    v[i].shown = session_mailbox_name(s, v[i].name);   /* patterns match names as sent */
    for (int k = 0; k < rq.npatterns && !v[i].matched; k++)
      v[i].matched = list_match_name(rq.pattern[k], v[i].shown);
  }
  for (size_t i = 0; i < n; i++) {
    if (!v[i].matched) continue;
    int meets = list_selected(&rq, &v[i]), childinfo = 0;
    size_t len = strlen(v[i].name);
    for (size_t j = 0; (rq.select & LS_RECURSIVEMATCH) && !childinfo && j < n; j++)
      childinfo = strncmp(v[j].name, v[i].name, len) == 0 && v[j].name[len] == '/' &&
                  list_selected(&rq, &v[j]) && (meets || !v[j].matched);
    if (!meets && !childinfo) continue;
    struct mailbox *mb = NULL;
    if ((rq.ret & LR_STATUS) && meets && (v[i].info & LI_SELECTABLE)) {
      unsigned rights;         /* as STATUS finds it: another's mailbox needs "r" */
      mb = ns_mailbox(s->srv, u, v[i].name, &rights);
      /* RFC 5819 2: gone, \Noselect meanwhile, or no "r": \Noselect and no STATUS */
      if (!mb || !mb->selectable || !(rights & RIGHT_R)) v[i].info &= ~(unsigned)LI_SELECTABLE;
    }
    char attrs[256];
    list_item_attributes(&v[i], rq.ret, attrs, sizeof attrs);
    session_send(s, "* LIST (%s) \"/\" ", attrs);
    session_send_mailbox(s, v[i].shown);
    session_send(s, "%s\r\n", childinfo ? " (\"CHILDINFO\" (\"SUBSCRIBED\"))" : "");
    if (mb && (v[i].info & LI_SELECTABLE)) status_send(s, mb, v[i].name, &rq.status);
    mailbox_unref(mb);
  }
  return cmd_ok(c, "LIST completed");
}

/*
** Is this LIST's argument the extended form (RFC 5258 6): selection options, a list of
** patterns or return options? Looked at on a copy of the parser, so nothing is consumed.
*/
static int list_is_extended(struct parser ps) {
  struct str ref, pat;
  if (!parse_sp(&ps)) return 0;
  if (parse_peek(&ps, '(')) return 1;
  if (!parse_astring(&ps, &ref) || !parse_sp(&ps)) return 0;
  if (parse_peek(&ps, '(')) return 1;
  return parse_list_mailbox(&ps, &pat) && parse_peek(&ps, ' ');
}

/* attrs followed by the special-use roles in use, in the arena (NULL if out of memory). */
static const char *list_attrs_with_roles(struct session *s, const char *attrs, unsigned use) {
  char out[256];
  size_t len = (size_t)snprintf(out, sizeof out, "%s", attrs);
  for (int i = 0; i < USE_ROLES; i++)
    if (use >> i & 1)
      len += (size_t)snprintf(out + len, len < sizeof out ? sizeof out - len : 0, "%s%s",
                              len ? " " : "", special_use_names[i]);
  return arena_strndup(&s->arena, out, strlen(out));
}

/*
** 6.3.8 LIST and 6.3.9 LSUB. Names and attributes are copied under the user's lock and
** matched after it is released, so a slow pattern holds up no other session.
*/
static int cmd_list(struct session *s, struct command *c) {
  struct str ref, pat;
  int lsub = c->def->name[0] == 'L' && c->def->name[1] == 'S';
  if (!lsub && cap_on(s->srv, CAP_LIST_EXTENDED) && list_is_extended(c->ps))   /* RFC 5258 */
    return cmd_list_extended(s, c);
  if (!parse_sp(&c->ps) || !parse_astring(&c->ps, &ref) || !parse_sp(&c->ps) ||
      !parse_list_mailbox(&c->ps, &pat) || !parse_end(&c->ps))
    return cmd_bad_args(c);
  const char *cmd = c->def->name;
  if (pat.len == 0 && !lsub) {         /* the delimiter and the root of the reference */
    const char *slash = memchr(ref.p, '/', ref.len);
    session_send(s, "* LIST (\\Noselect) \"/\" ");
    out_string(&s->out, ref.p, slash ? (size_t)(slash - ref.p + 1) : 0);
    session_send(s, "\r\n");
    return cmd_ok(c, "LIST completed");
  }
  char *full = arena_alloc(&s->arena, ref.len + pat.len + 1);
  if (!full) return cmd_no(c, "Out of memory");
  memcpy(full, ref.p, ref.len);
  memcpy(full + ref.len, pat.p, pat.len);
  full[ref.len + pat.len] = 0;
  mailbox_canonical(full, full, ref.len + pat.len + 1);
  int children = cap_on(s->srv, CAP_CHILDREN) || session_rev2(s);  /* RFC 3348, 9051 */
  struct user *u = s->user;
  pthread_mutex_lock(&u->lock);
  size_t n = lsub ? u->live.nsubs : u->live.n;
  struct list_entry *e = arena_alloc(&s->arena, (n ? n : 1) * sizeof *e);
  int oom = !e;
  for (size_t i = 0; !oom && i < n; i++) {
    const char *name = lsub ? u->live.subs[i] : u->live.list[i]->name;
    struct mailbox *mb = lsub ? user_mailbox_locked(u, name) : u->live.list[i];
    int selectable = mb && mb->selectable;
    e[i].name = arena_strndup(&s->arena, name, strlen(name));
    if (e[i].name) e[i].name = session_mailbox_name(s, e[i].name);   /* matched as sent */
    if (lsub) e[i].attrs = selectable ? "" : "\\Noselect";
    else if (!children) e[i].attrs = selectable ? "" : "\\Noselect";
    else if (user_has_children_locked(u, name))
      e[i].attrs = selectable ? "\\HasChildren" : "\\Noselect \\HasChildren";
    else e[i].attrs = selectable ? "\\HasNoChildren" : "\\Noselect \\HasNoChildren";
    if (!lsub && session_rev2(s) && cap_on(s->srv, CAP_SPECIAL_USE))   /* RFC 9051 7.3.1 */
      e[i].attrs = list_attrs_with_roles(s, e[i].attrs, mailbox_special_use_locked(mb));
    oom = !e[i].name || !e[i].attrs;
  }
  pthread_mutex_unlock(&u->lock);
  size_t cap = n;
  if (!oom && !lsub) oom = !list_add_others(s, &e, &n, &cap, children);
  for (size_t i = 0; !oom && lsub && i < n; i++) {   /* another's, if this user may see it */
    unsigned rights;
    struct mailbox *mb = e[i].attrs[0] ? ns_mailbox(s->srv, u, e[i].name, &rights) : NULL;
    if (mb && mb->user != u && mb->selectable && (rights & RIGHT_L)) e[i].attrs = "";
    mailbox_unref(mb);
  }
  if (oom) return cmd_no(c, "Out of memory");
  qsort(e, n, sizeof *e, cmp_list_entries);
  for (size_t i = 0; i < n; i++) {
    if (!list_match_name(full, e[i].name)) continue;
    session_send(s, "* %s (%s) \"/\" ", cmd, e[i].attrs);
    session_send_mailbox(s, e[i].name);
    session_send(s, "\r\n");
  }
  if (lsub && strchr(full, '%')) {
    /* 6.3.9: a level matched by '%' whose inferiors are subscribed shows as \Noselect */
    for (size_t i = 0; i < n; i++) {
      const char *name = e[i].name;
      for (const char *p = strchr(name, '/'); p; p = strchr(p + 1, '/')) {
        size_t len = (size_t)(p - name);
        char *lvl = arena_strndup(&s->arena, name, len);
        int known = 0;       /* subscribed itself, or shown already for an earlier name */
        for (size_t j = 0; j < n && !known; j++)
          known = strcmp(e[j].name, lvl ? lvl : "") == 0 ||
                  (j < i && strncmp(e[j].name, name, len) == 0 && e[j].name[len] == '/');
        if (!lvl || known || !list_match_name(full, lvl)) continue;
        session_send(s, "* LSUB (\\Noselect) \"/\" ");
        session_send_mailbox(s, lvl);
        session_send(s, "\r\n");
      }
    }
  }
  return cmd_ok(c, "%s completed", cmd);
}

/* 6.3.10 STATUS, with the items above. */
static int cmd_status(struct session *s, struct command *c) {
  const char *name;
  struct parser *ps = &c->ps;
  struct status_want w;
  if (!parse_sp(ps) || !parse_mailbox(ps, &name) || !parse_sp(ps) || !parse_char(ps, '('))
    return cmd_bad(c, "STATUS Expected: STATUS mailbox (items)");
  if (!status_parse_items(s, c, &w)) return 0;
  if (!parse_end(ps)) return cmd_bad(c, "STATUS Expected ')'");
  unsigned rights;
  struct mailbox *mb = cmd_selectable(s, c, name, "NONEXISTENT", RIGHT_R, &rights);
  if (!mb) return 0;
  status_send(s, mb, name, &w);
  mailbox_unref(mb);
  return cmd_ok(c, "STATUS completed");
}

/* ------------------------------------------------------------------------- */
/*
** QUOTA (RFC 9208): GETQUOTA, GETQUOTAROOT, SETQUOTA (with QUOTASET), and the check that
** APPEND, COPY and MOVE make before they add (4.3.1 OVERQUOTA). Every mailbox of a user
** has the one quota root "" (section 3). A resource whose QUOTA=RES-* capability is off
** is neither reported, nor settable, nor enforced.
*/

/* The resources advertised now, as bits 1 << QUOTA_*. */
static unsigned quota_resources_on(struct imapmem *srv) {
  return (cap_on(srv, CAP_QUOTA_RES_STORAGE) ? 1u << QUOTA_STORAGE : 0) |
         (cap_on(srv, CAP_QUOTA_RES_MESSAGE) ? 1u << QUOTA_MESSAGE : 0);
}

/*
** Before adding messages of bytes to a mailbox of u: takes u->quota_lock (which
** quota_end lets go once they are added) and answers NO [OVERQUOTA] if they do not fit.
** Returns 1 if they may be added.
*/
static int quota_begin(struct session *s, struct command *c, struct user *u, uint64_t bytes,
                       uint64_t messages) {
  pthread_mutex_lock(&u->quota_lock);
  int over = user_quota_exceeded(u, quota_resources_on(s->srv), bytes, messages);
  if (over < 0) return 1;
  long long limit = (long long)u->quota_limit[over];
  pthread_mutex_unlock(&u->quota_lock);
  cmd_no(c, "[OVERQUOTA] Quota exceeded (mailbox for user is full): %s limit %lld",
         quota_resource_names[over], limit);
  return 0;
}

static void quota_end(struct user *u) {
  pthread_mutex_unlock(&u->quota_lock);
}

/* RFC 9208 4.2.1: "* QUOTA" root (name usage limit ...), the limited resources only. */
static void session_send_quota(struct session *s, struct user *u) {
  int64_t limit[QUOTA_NRES];
  struct quota_usage q = user_get_quota(u, limit);
  unsigned on = quota_resources_on(s->srv);
  const char *sep = "";
  session_send(s, "* QUOTA \"\" (");
  for (int r = 0; r < QUOTA_NRES; r++) {
    if (!(on >> r & 1) || limit[r] == QUOTA_NO_LIMIT) continue;
    session_send(s, "%s%s %llu %lld", sep, quota_resource_names[r],
                 (unsigned long long)quota_usage_of(&q, r), (long long)limit[r]);
    sep = " ";
  }
  session_send(s, ")\r\n");
}

/* 4.1.1 GETQUOTA quota-root: only the user's own root, "", exists. */
static int cmd_getquota(struct session *s, struct command *c) {
  struct str root;
  if (!parse_sp(&c->ps) || !parse_astring(&c->ps, &root) || !parse_end(&c->ps))
    return cmd_bad(c, "GETQUOTA Expected: GETQUOTA quota-root");
  if (root.len) return cmd_no(c, "Quota root doesn't exist");
  session_send_quota(s, s->user);
  return cmd_ok(c, "GETQUOTA completed");
}

/* 4.1.2 GETQUOTAROOT mailbox: the mailbox need not exist; its root would be "" anyway. */
static int cmd_getquotaroot(struct session *s, struct command *c) {
  const char *name;
  if (!parse_sp(&c->ps) || !parse_mailbox(&c->ps, &name) || !parse_end(&c->ps))
    return cmd_bad(c, "GETQUOTAROOT Expected: GETQUOTAROOT mailbox");
  session_send(s, "* QUOTAROOT ");
  out_string(&s->out, name, strlen(name));
  session_send(s, " \"\"\r\n");
  session_send_quota(s, s->user);
  return cmd_ok(c, "GETQUOTAROOT completed");
}

/* number64 (RFC 9051 9): 0 to 2^63-1. */
static int parse_number64(struct parser *ps, int64_t *out) {
  uint64_t v = 0;
  const char *start = ps->p;
  while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9') {
    uint64_t d = (uint64_t)(*ps->p++ - '0');
    if (v > ((uint64_t)INT64_MAX - d) / 10) return parse_fail(ps, "Number too large");
    v = v * 10 + d;
  }
  if (ps->p == start) return parse_fail(ps, "Expected a number");
  *out = (int64_t)v;
  return 1;
}

/*
** 4.1.3 SETQUOTA quota-root (resource limit ...): a user sets the limits of their own
** root; every limit not named goes. The new state is sent as "* QUOTA".
*/
static int cmd_setquota(struct session *s, struct command *c) {
  struct parser *ps = &c->ps;
  struct str root, name;
  int64_t limit[QUOTA_NRES], value;
  for (int r = 0; r < QUOTA_NRES; r++) limit[r] = QUOTA_NO_LIMIT;
  if (!parse_sp(ps) || !parse_astring(ps, &root) || !parse_sp(ps) || !parse_char(ps, '('))
    return cmd_bad(c, "SETQUOTA Expected: SETQUOTA quota-root (resource limit ...)");
  unsigned on = quota_resources_on(s->srv);
  int unknown = 0;
  for (int first = 1; !parse_peek(ps, ')'); first = 0) {
    if (!first && !parse_sp(ps)) return cmd_bad(c, "SETQUOTA Expected ' ' or ')'");
    if (!parse_atom(ps, &name) || !parse_sp(ps) || !parse_number64(ps, &value))
      return cmd_bad(c, "SETQUOTA Expected: resource limit (%s)", ps->err ? ps->err : "");
    int r = 0;
    while (r < QUOTA_NRES && !(str_ieq(name, quota_resource_names[r]) && (on >> r & 1))) r++;
    if (r == QUOTA_NRES) {
      unknown = 1;            /* resource-name-ext: valid syntax, a limit we cannot set */
      continue;
    }
    if (limit[r] != QUOTA_NO_LIMIT)
      return cmd_bad(c, "SETQUOTA %s given twice", quota_resource_names[r]);
    limit[r] = value;
  }
  if (!parse_char(ps, ')') || !parse_end(ps)) return cmd_bad(c, "SETQUOTA Expected ')'");
  if (root.len) return cmd_no(c, "Quota root doesn't exist");
  if (unknown) return cmd_no(c, "SETQUOTA Unknown resource: this server limits %s%s%s",
                             on & 1 ? "STORAGE" : "", on == 3 ? " and " : "",
                             on & 2 ? "MESSAGE" : "");
  user_set_quota(s->user, limit);
  session_send_quota(s, s->user);
  return cmd_ok(c, "SETQUOTA completed");
}

/* Keyword bits in mb for a parsed flag list; -1 when the mailbox has no room. */
static int flag_list_keywords(struct mailbox *mb, const struct flag_list *fl, uint64_t *kw) {
  *kw = 0;
  for (int i = 0; i < fl->nkw; i++) {
    int bit = mailbox_keyword(mb, fl->kw[i].p, fl->kw[i].len, 1);
    if (bit < 0) return -1;
    *kw |= (uint64_t)1 << bit;
  }
  return 0;
}

/* ------------------------------------------------------------------------- */
/*
** APPEND (RFC 3501 6.3.11) with its extensions: several messages at once (MULTIAPPEND,
** RFC 3502), literal8 (BINARY, RFC 3516 4.4), messages built from pieces (CATENATE, RFC
** 4469) and a size limit (APPENDLIMIT, RFC 7889). Grammar of RFC 4466 2.1:
**   append = "APPEND" SP mailbox 1*append-message
**   append-message = [SP flag-list] [SP date-time] SP append-data
**   append-data = literal / literal8 / "CATENATE" SP "(" cat-part *(SP cat-part) ")"
*/
struct cat_part {            /* CATENATE: TEXT literal or URL (RFC 4469 5) */
  int url;
  struct str v;
  struct cat_part *next;
};
struct append_msg {
  struct flag_list fl;
  int64_t t;
  int tz;
  int eight;                  /* the message came as a literal8 */
  int utf8;                   /* ... inside UTF8 ( ) (RFC 6855 4) */
  struct str literal;         /* the message, unless catenated */
  struct cat_part *parts;     /* CATENATE pieces, or NULL */
  struct msgdata *d;          /* built by append_build */
  uint64_t kw;
  struct append_msg *next;
};

/* CATENATE's list of TEXT literals and URLs. */
static int append_parse_catenate(struct parser *ps, struct append_msg *m) {
  struct cat_part **tail = &m->parts;
  if (!parse_sp(ps) || !parse_char(ps, '('))
    return parse_fail(ps, "CATENATE Expected '(' and TEXT or URL parts");
  do {
    struct str w;
    struct cat_part *cp = parse_new(ps, sizeof *cp);
    if (!cp || !parse_atom(ps, &w)) return parse_fail(ps, "CATENATE Expected TEXT or URL");
    cp->url = str_ieq(w, "URL");
    if (!cp->url && !str_ieq(w, "TEXT")) return parse_fail(ps, "CATENATE Expected TEXT or URL");
    if (!parse_sp(ps)) return 0;
    if (cp->url ? !parse_astring(ps, &cp->v) : !parse_peek(ps, '{') || !parse_literal(ps, &cp->v))
      return parse_fail(ps, cp->url ? "CATENATE URL Expected a string" :
                                      "CATENATE TEXT Expected a literal");
    *tail = cp;
    tail = &cp->next;
  } while (parse_char(ps, ' '));
  return parse_char(ps, ')') || parse_fail(ps, "CATENATE Expected ')'");
}

/* The messages of an APPEND, each with its flags and date; 0 with ps->err if malformed. */
static int append_parse(struct parser *ps, struct append_msg **out, int *n, int *eight,
                        int *catenate) {
  struct append_msg **tail = out;
  *n = *eight = *catenate = 0;
  while (parse_char(ps, ' ')) {
    struct append_msg *m = parse_new(ps, sizeof *m);
    if (!m) return 0;
    m->t = (int64_t)time(NULL);
    if (parse_peek(ps, '(') && (!parse_flags(ps, &m->fl, 0) || !parse_sp(ps))) return 0;
    if (parse_peek(ps, '"') && (!parse_date_time(ps, &m->t, &m->tz) || !parse_sp(ps)))
      return 0;
    m->eight = parse_char(ps, '~');
    if (m->eight || parse_peek(ps, '{')) {
      if (!parse_literal(ps, &m->literal)) return 0;
    } else {
      struct str w;
      if (!parse_atom(ps, &w) || (!str_ieq(w, "CATENATE") && !str_ieq(w, "UTF8")))
        return parse_fail(ps, "Expected the message as a literal, CATENATE or UTF8");
      if (str_ieq(w, "UTF8")) {   /* RFC 6855 4: "UTF8" SP "(" literal8 ")" */
        if (!parse_sp(ps) || !parse_char(ps, '(') || !parse_char(ps, '~') ||
            !parse_peek(ps, '{') || !parse_literal(ps, &m->literal) || !parse_char(ps, ')'))
          return parse_fail(ps, "Expected UTF8 (~{n} and the message then ')'");
        m->utf8 = 1;
      } else {
        if (!append_parse_catenate(ps, m)) return 0;
        *catenate = 1;
      }
    }
    *eight |= m->eight;
    *tail = m;
    tail = &m->next;
    ++*n;
  }
  if (!*n) return parse_fail(ps, "Expected the message as a literal");
  return parse_end(ps);
}

/* Undo %XX escapes (RFC 3986 2.1) into the arena; NULL for a malformed or unsafe one. */
static const char *url_decode(struct arena *a, struct str v) {
  char *out = arena_alloc(a, v.len + 1);
  size_t n = 0;
  for (size_t i = 0; out && i < v.len; i++) {
    int c = (unsigned char)v.p[i];
    if (c == '%') {
      int hi = i + 2 < v.len ? hexval((unsigned char)v.p[i + 1]) : -1;
      int lo = hi >= 0 ? hexval((unsigned char)v.p[i + 2]) : -1;
      if (lo < 0) return NULL;
      c = hi * 16 + lo;
      i += 2;
    }
    if (c == 0 || c == '\r' || c == '\n') return NULL;
    out[n++] = (char)c;
  }
  if (out) out[n] = 0;
  return out;
}

/* Does *p (before end) start with the keyword (any case)? Then step over it. */
static int url_keyword(const char **p, const char *end, const char *kw) {
  size_t n = strlen(kw);
  if ((size_t)(end - *p) < n || strncasecmp(*p, kw, n) != 0) return 0;
  *p += n;
  return 1;
}

static int url_number(const char **p, const char *end, uint32_t *out) {
  uint64_t v = 0;
  const char *s = *p;
  while (*p < end && **p >= '0' && **p <= '9' && v <= UINT32_MAX)
    v = v * 10 + (uint64_t)(*(*p)++ - '0');
  if (*p == s || v > UINT32_MAX) return 0;
  *out = (uint32_t)v;
  return 1;
}

/*
** Append what a CATENATE URL names to out (RFC 4469 3): "the literal returned in a FETCH
** BODY response", here UID FETCH uid BODY.PEEK[section]<partial> (RFC 5092 6). Only
** absolute-path URLs of the logged-in user's own messages are taken:
**   "/" enc-mailbox [";UIDVALIDITY=" n] "/;UID=" n ["/;SECTION=" enc-section]
**   ["/;PARTIAL=" number ["." nz-number]]
** Relative paths (RFC 5092 7.2: MUST NOT accept), "imap://" and "//" URLs (another user
** or server: outside RFC 4469, which then answers NO), mailbox lists and searches are
** refused. 0 for any URL it cannot resolve (BADURL, RFC 4469 4.1).
*/
static int append_url(struct session *s, struct arena *a, struct str url, struct buf *out) {
  const char *p = url.p, *end = url.p + url.len;
  if (url.len < 2 || p[0] != '/' || p[1] == '/') return 0;
  const char *semi = memchr(p, ';', url.len), *q = memchr(p, '?', url.len);
  if (!semi || (q && q < semi)) return 0;              /* a mailbox or a search */
  uint32_t uidvalidity = 0, uid, origin = 0, count = UINT32_MAX;
  struct str enc = str_make(p + 1, (size_t)(semi - p - 1));
  p = semi + 1;
  if (enc.len && enc.p[enc.len - 1] == '/') enc.len--;
  else if (!url_keyword(&p, end, "UIDVALIDITY=") || !url_number(&p, end, &uidvalidity) ||
           !uidvalidity || !url_keyword(&p, end, "/;"))
    return 0;
  if (!url_keyword(&p, end, "UID=") || !url_number(&p, end, &uid) || !uid) return 0;
  struct str sec = str_make("", 0);
  int partial = 0;
  if (url_keyword(&p, end, "/;SECTION=")) {
    const char *e = p;
    while (e < end && *e != ';') e++;
    if (e < end) e--;          /* a "/;" that follows is not the section's */
    if (e <= p || (e < end && *e != '/')) return 0;
    sec = str_make(p, (size_t)(e - p));
    p = e;
  }
  if (url_keyword(&p, end, "/;PARTIAL=")) {
    if (!url_number(&p, end, &origin)) return 0;
    if (url_keyword(&p, end, ".") && (!url_number(&p, end, &count) || !count)) return 0;
    partial = 1;
  }
  const char *name = url_decode(a, enc), *section = url_decode(a, sec);
  if (name) name = mutf7_from_utf8(a, name, NULL);   /* RFC 5092 8: UTF-8 */
  if (p != end || !name || !*name || !section || strlen(name) > MAX_MAILBOX_NAME) return 0;
  struct fetch_item it;        /* the section, read as FETCH reads BODY[section] */
  memset(&it, 0, sizeof it);
  size_t slen = strlen(section);
  char *spec = arena_alloc(a, slen + 2);
  if (!spec) return 0;
  memcpy(spec, section, slen);
  memcpy(spec + slen, "]", 2);
  struct parser sp = {spec, spec + slen + 1, a, NULL, 0};
  if (!fetch_parse_section(&sp, &it) || !parse_at_end(&sp)) return 0;
  it.partial = partial;
  it.origin = origin;
  it.count = count;
  unsigned rights;           /* RFC 4314 4: reading a message needs "r" */
  struct mailbox *mb = ns_mailbox(s->srv, s->user, name, &rights);
  struct msgdata *d = NULL;
  if (mb && mb->selectable && (rights & RIGHT_R)) {
    pthread_mutex_lock(&mb->lock);
    long k = mailbox_find_uid(mb, uid);
    if (k >= 0 && (!uidvalidity || uidvalidity == mb->uidvalidity))   /* else stale */
      d = msgdata_ref(mb->msgs[k].data);
    pthread_mutex_unlock(&mb->lock);
  }
  mailbox_unref(mb);
  if (!d) return 0;
  const struct msgmeta *mm = it.npath ? msgdata_meta(d) : NULL;
  int ok = !it.npath || (mm && fetch_find_part(mm, it.path, it.npath) >= 0);
  if (ok) {
    struct buf tmp = {0};
    struct str v = fetch_section_bytes(&it, d, &tmp);
    if (origin >= v.len) v.len = 0;
    else {
      v.p += origin;
      v.len -= origin;
      if (v.len > count) v.len = count;
    }
    buf_add(out, v.p, v.len);
    buf_free(&tmp);
  }
  msgdata_unref(d);
  return ok;
}

/*
** Build one message's bytes (m->d): the literal, with binary parts made base64 if it was
** a literal8, or the CATENATE pieces joined. 0 with the NO reply set.
*/
static int append_build(struct session *s, struct command *c, struct append_msg *m,
                        size_t limit) {
  struct buf b = {0};
  struct str msg = m->literal;
  if (m->parts) {
    for (struct cat_part *cp = m->parts; cp && b.len <= limit && !b.oom; cp = cp->next) {
      if (!cp->url) buf_add(&b, cp->v.p, cp->v.len);
      else if (!append_url(s, c->ps.arena, cp->v, &b)) {
        buf_free(&b);
        int n = cp->v.len > 2000 ? 2000 : (int)cp->v.len;
        for (int i = 0; i < n; i++)        /* url-resp-text: any TEXT-CHAR but "]" */
          if (cp->v.p[i] == ']') n = i;
        return cmd_no(c, "[BADURL %.*s] APPEND CATENATE cannot use this URL", n, cp->v.p);
      }
    }
    msg = str_make(b.p ? b.p : "", b.len);
  }
  size_t size = msg.len;     /* the limit is on what the client sent or named */
  if (m->eight && size <= limit) {   /* RFC 3516 6: binary parts are stored as base64 */
    int r = msg_binary_to_base64(msg.p, msg.len, &b);
    if (r < 0) b.oom = 1;
    if (r > 0) msg = str_make(b.p, b.len);
  }
  if (size > limit) {
    buf_free(&b);
    return cmd_no(c, "[TOOBIG] APPEND The message is larger than APPENDLIMIT=%zu", limit);
  }
  if (b.oom || (msg.len && !(m->d = msgdata_new(msg.p, msg.len)))) {
    buf_free(&b);
    return cmd_no(c, "[SERVERBUG] Out of memory");
  }
  buf_free(&b);
  if (!msg.len) return cmd_no(c, "APPEND An empty message cannot be stored");
  return 1;
}

/*
** 6.3.11 APPEND. Everything is checked before anything is stored: the mailbox (TRYCREATE,
** which RFC 3502 keeps), then each message built in order (its first failure answers),
** then room for all of them, under the mailbox's lock, which is held while all are added.
** CATENATE URLs lock their own mailbox, one at a time, before that.
*/
static int cmd_append(struct session *s, struct command *c) {
  const char *name;
  struct parser *ps = &c->ps;
  struct append_msg *msgs = NULL;
  int n, eight, catenate;
  if (!parse_sp(ps) || !parse_mailbox(ps, &name) || !append_parse(ps, &msgs, &n, &eight,
                                                                   &catenate))
    return cmd_bad_args(c);
  if (n > 1 && !cap_on(s->srv, CAP_MULTIAPPEND))
    return cmd_bad(c, "APPEND takes one message (no MULTIAPPEND)");
  if (eight && !cap_on(s->srv, CAP_BINARY)) return cmd_bad(c, "APPEND literal8 needs BINARY");
  if (catenate && !cap_on(s->srv, CAP_CATENATE)) return cmd_bad(c, "APPEND Unknown CATENATE");
  for (struct append_msg *m = msgs; m; m = m->next) {
    if (m->utf8 && !cap_on(s->srv, CAP_UTF8_ACCEPT)) return cmd_bad(c, "APPEND Unknown UTF8");
    if (m->utf8 && !session_utf8(s))   /* RFC 6855 3, 4 */
      return cmd_bad(c, "APPEND UTF8 needs ENABLE UTF8=ACCEPT first");
  }
  unsigned rights;            /* RFC 3502: no create; RFC 4314 4: "i" */
  struct mailbox *mb = cmd_selectable(s, c, name, "TRYCREATE", RIGHT_I, &rights);
  if (!mb) return 0;
  int kw_ok;                 /* RFC 4314 4: flags without the right to set them are dropped */
  uint32_t may = rights_flags(rights, &kw_ok);
  for (struct append_msg *m = msgs; m; m = m->next) {
    m->fl.flags &= may;
    if (!kw_ok) m->fl.nkw = 0;
  }
  size_t limit = atomic_load(&s->srv->append_limit);
  int built = 1;
  for (struct append_msg *m = msgs; m && built; m = m->next) built = append_build(s, c, m, limit);
  uint32_t first = 0, uv = 0;
  int full = 0, room = 0;
  uint64_t bytes = 0;
  for (struct append_msg *m = msgs; m && built; m = m->next) bytes += m->d->size;
  if (built) built = quota_begin(s, c, mb->user, bytes, (uint64_t)n);   /* RFC 9208 4.3.1 */
  if (built) {               /* RFC 3502: all or nothing, so every check comes first */
    pthread_mutex_lock(&mb->lock);
    for (struct append_msg *m = msgs; m && !full; m = m->next)
      full = flag_list_keywords(mb, &m->fl, &m->kw) < 0;
    room = !full && mailbox_reserve(mb, (size_t)n);
    uv = mb->uidvalidity;
    for (struct append_msg *m = msgs; m && room; m = m->next) {
      uint32_t uid = mailbox_append(mb, m->d, m->fl.flags | FLAG_RECENT, m->kw, m->t, m->tz);
      if (!first) first = uid;
      m->d = NULL;
    }
    pthread_mutex_unlock(&mb->lock);
    quota_end(mb->user);
  }
  for (struct append_msg *m = msgs; m; m = m->next)
    if (m->d) msgdata_unref(m->d);
  mailbox_unref(mb);
  if (!built) return 0;
  if (full) return cmd_no(c, "[LIMIT] Too many keywords in this mailbox");
  if (!room) return cmd_no(c, "[LIMIT] This mailbox cannot take %d more messages", n);
  if (!cap_on(s->srv, CAP_UIDPLUS)) return cmd_ok(c, "APPEND completed");
  if (n == 1) return cmd_ok(c, "[APPENDUID %u %u] APPEND completed", uv, first);
  return cmd_ok(c, "[APPENDUID %u %u:%u] APPEND completed", uv, first, first + (uint32_t)n - 1);
}

/* In IDLE or out of it: the mailbox wakes the session on every change meanwhile. */
static void session_set_idle(struct session *s, int on) {
  if (s->mb) {
    pthread_mutex_lock(&s->mb->lock);
    s->watch.idling = on;
    pthread_mutex_unlock(&s->mb->lock);
  }
  s->in_idle = on;
  session_publish(s);
}

/* ------------------------------------------------------------------------- */
/*
** NOTIFY (RFC 5465). A session with NOTIFY SET keeps, in struct notify, what its client
** last heard of every mailbox of its user (name, counts, subscriptions) and is woken by
** every change on the server (store_watch_all). On a wake-up between commands, before a
** command and during IDLE (4), it looks again and tells what differs: the selected
** mailbox's updates as they come (SELECTED) or without expunges (SELECTED-DELAYED, 6.1.2),
** with MessageNew's fetch attributes; STATUS for other mailboxes (5.1-5.3); LIST for names
** created, deleted and renamed (5.4) and subscriptions (5.5). What this session did itself
** is not told (5 SHOULD): the snapshot is taken again, silently, after each command.
*/
static const char *const notify_filter_names[] = {"SELECTED", "SELECTED-DELAYED", "INBOXES",
                                                  "PERSONAL", "SUBSCRIBED", "SUBTREE",
                                                  "MAILBOXES"};   /* ORDER NF_* */
static const struct { const char *name; unsigned bit; } notify_event_names[] = {
  {"MessageNew", NOTIFY_NEW}, {"MessageExpunge", NOTIFY_EXPUNGE}, {"FlagChange", NOTIFY_FLAGS},
  {"MailboxName", NOTIFY_NAME}, {"SubscriptionChange", NOTIFY_SUBS},
  {"AnnotationChange", 0}, {"MailboxMetadataChange", 0}, {"ServerMetadataChange", 0}};
#define NOTIFY_BADEVENT "[BADEVENT (MessageNew MessageExpunge FlagChange MailboxName " \
                        "SubscriptionChange)]"
enum { NS_MESSAGES = 1, NS_UIDNEXT = 2, NS_UIDVALIDITY = 4, NS_UNSEEN = 8, NS_HIGHESTMODSEQ = 16 };

static void notify_names_free(char **v, size_t n) {
  for (size_t i = 0; v && i < n; i++) free(v[i]);
  free(v);
}

static void notify_boxes_free(struct notify_box *b, size_t n) {
  for (size_t i = 0; b && i < n; i++) {
    mailbox_unref(b[i].mb);
    free(b[i].name);
  }
  free(b);
}

static void notify_free(struct notify *n) {
  if (!n) return;
  for (size_t i = 0; i < n->ngroups; i++) notify_names_free(n->groups[i].names, n->groups[i].nnames);
  free(n->groups);
  free(n->fetch_atts);
  notify_boxes_free(n->boxes, n->nboxes);
  notify_names_free(n->subs, n->nsubs);
  free(n);
}

/* Stop notifying: NOTIFY NONE, a new NOTIFY SET, an overflow, the end of the session. */
static void session_notify_off(struct session *s) {
  if (!s->notify) return;
  store_watch_all(s->srv, &s->notify_watch, 0);
  notify_free(s->notify);
  s->notify = NULL;
}

static int notify_name_in(char *const *v, size_t n, const char *name) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(v[i], name) == 0) return 1;
  return 0;
}

/*
** The events the groups ask for mailbox name (as any mailbox, not as the selected one).
** INBOXES is PERSONAL, as 6.3 allows: every mailbox may receive mail here.
*/
static unsigned notify_events_for(const struct notify *n, const char *name, int selectable,
                                  char *const *subs, size_t nsubs) {
  unsigned ev = 0;
  for (size_t i = 0; i < n->ngroups; i++) {
    const struct notify_group *g = &n->groups[i];
    int match = g->filter == NF_INBOXES || g->filter == NF_PERSONAL;
    if (g->filter == NF_SUBSCRIBED) match = notify_name_in(subs, nsubs, name);
    for (size_t k = 0; k < g->nnames && !match; k++) {
      size_t len = strlen(g->names[k]);
      match = strcmp(name, g->names[k]) == 0 ||   /* 6.5 SUBTREE: it and its inferiors */
              (g->filter == NF_SUBTREE && strncmp(name, g->names[k], len) == 0 && name[len] == '/');
    }
    if (match) ev |= g->events;
  }
  return selectable ? ev : ev & ~(unsigned)NOTIFY_MESSAGE_EVENTS;
}

/*
** What the client would hear of the user's mailboxes now: every name (under the user's
** lock), then the counts of those with message events (each under its own lock).
** 0 if memory ran out.
*/
static int notify_snapshot(struct session *s, const struct notify *n, struct notify_box **out,
                           size_t *nout, char ***subs_out, size_t *nsubs_out) {
  struct user *u = s->user;
  pthread_mutex_lock(&u->lock);
  size_t nb = u->live.n, ns = u->live.nsubs;
  struct notify_box *b = mem_calloc(nb ? nb : 1, sizeof *b);
  char **subs = mem_calloc(ns ? ns : 1, sizeof *subs);
  int ok = b && subs;
  for (size_t i = 0; ok && i < nb; i++) {
    struct mailbox *mb = u->live.list[i];
    b[i].mb = mailbox_ref(mb);
    b[i].selectable = atomic_load(&mb->selectable);
    ok = (b[i].name = mem_strdup(mb->name)) != NULL;
  }
  for (size_t i = 0; ok && i < ns; i++) ok = (subs[i] = mem_strdup(u->live.subs[i])) != NULL;
  pthread_mutex_unlock(&u->lock);
  for (size_t i = 0; ok && i < nb; i++) {
    struct notify_box *x = &b[i];
    x->events = notify_events_for(n, x->name, x->selectable, subs, ns);
    if (!(x->events & NOTIFY_MESSAGE_EVENTS)) continue;
    pthread_mutex_lock(&x->mb->lock);
    x->messages = (uint32_t)x->mb->count;
    x->uidnext = x->mb->uidnext;
    x->uidvalidity = x->mb->uidvalidity;
    x->modseq = x->mb->nomodseq ? 0 : x->mb->modseq;   /* RFC 7162 3.1.7 */
    if (x->events & NOTIFY_FLAGS)
      for (size_t k = 0; k < x->mb->count; k++) x->unseen += !(x->mb->msgs[k].flags & FLAG_SEEN);
    pthread_mutex_unlock(&x->mb->lock);
  }
  if (!ok) {
    notify_boxes_free(b, b ? nb : 0);
    notify_names_free(subs, subs ? ns : 0);
    return 0;
  }
  *out = b;
  *nout = nb;
  *subs_out = subs;
  *nsubs_out = ns;
  return 1;
}

static void notify_send_status(struct session *s, const struct notify_box *b, unsigned items) {
  session_send(s, "* STATUS ");
  out_string(&s->out, b->name, strlen(b->name));
  const char *sp = "";
  session_send(s, " (");
  if (items & NS_MESSAGES) session_send(s, "MESSAGES %u", b->messages), sp = " ";
  if (items & NS_UIDNEXT) session_send(s, "%sUIDNEXT %u", sp, b->uidnext), sp = " ";
  if (items & NS_UIDVALIDITY) session_send(s, "%sUIDVALIDITY %u", sp, b->uidvalidity), sp = " ";
  if (items & NS_UNSEEN) session_send(s, "%sUNSEEN %u", sp, b->unseen), sp = " ";
  if (items & NS_HIGHESTMODSEQ)
    session_send(s, "%sHIGHESTMODSEQ %llu", sp, (unsigned long long)b->modseq);
  session_send(s, ")\r\n");
}

/* An unsolicited LIST (RFC 5465 5.4, 5.5; RFC 5258's \NonExistent and OLDNAME). */
static void notify_send_list(struct session *s, const char *attrs, const char *name,
                             const char *oldname) {
  session_send(s, "* LIST (%s) \"/\" ", attrs);
  out_string(&s->out, name, strlen(name));
  if (oldname) {
    session_send(s, " (\"OLDNAME\" (");
    out_string(&s->out, oldname, strlen(oldname));
    session_send(s, "))");
  }
  session_send(s, "\r\n");
}

/*
** The STATUS items that tell of a change from was to now in another mailbox: 5.2 and 5.3
** (UIDNEXT MESSAGES), 5.1 (UNSEEN without CONDSTORE; UIDVALIDITY and HIGHESTMODSEQ with
** it), and HIGHESTMODSEQ whenever the client enabled CONDSTORE. 0: nothing to tell.
*/
static unsigned notify_status_change(const struct session *s, const struct notify_box *was,
                                     const struct notify_box *now) {
  unsigned ev = now->events & was->events, items = 0;
  int condstore = (s->enabled & ENABLED_CONDSTORE) != 0;   /* with or without a selection */
  if ((ev & (NOTIFY_NEW | NOTIFY_EXPUNGE)) &&
      (was->messages != now->messages || was->uidnext != now->uidnext))
    items |= NS_MESSAGES | NS_UIDNEXT;
  if ((ev & NOTIFY_MESSAGE_EVENTS) && was->uidvalidity != now->uidvalidity)
    items |= NS_UIDVALIDITY | NS_MESSAGES | NS_UIDNEXT;   /* 5.1: MUST tell */
  if ((ev & NOTIFY_FLAGS) && was->unseen != now->unseen) items |= NS_UNSEEN;
  if ((ev & NOTIFY_FLAGS) && condstore && was->modseq != now->modseq)
    items |= NS_UIDVALIDITY | NS_HIGHESTMODSEQ;
  if (items && condstore) items |= NS_HIGHESTMODSEQ;
  return items;
}

/* The STATUS that NOTIFY SET STATUS sends for a mailbox (3.1). */
static unsigned notify_status_initial(const struct session *s, unsigned ev) {
  unsigned items = 0;
  if (ev & (NOTIFY_NEW | NOTIFY_EXPUNGE)) items |= NS_MESSAGES;
  if (ev & NOTIFY_NEW) items |= NS_UIDNEXT | NS_UIDVALIDITY;
  if (ev & NOTIFY_FLAGS) {
    items |= NS_UIDVALIDITY | NS_UNSEEN;
    if (cap_on(s->srv, CAP_CONDSTORE)) items |= NS_HIGHESTMODSEQ;
  }
  return items;
}

/*
** The selected mailbox's message events (5.1-5.3) under SELECTED or SELECTED-DELAYED:
** its untagged updates, then a FETCH of MessageNew's attributes for the new messages (5.2,
** by UID: their numbers may change at any time).
*/
static void notify_selected(struct session *s) {
  static const struct cmd_def fetch_def = {"FETCH", ST_SELECTED, CMD_UID, 0, 0, cmd_fetch};
  struct notify *n = s->notify;
  if (!s->mb || n->selected < 0 || !(n->selected_events & NOTIFY_MESSAGE_EVENTS)) return;
  uint32_t known = s->nview ? s->view[s->nview - 1].uid : 0;
  int expunges = n->selected == NF_SELECTED && (n->selected_events & NOTIFY_EXPUNGE);
  if (!search_sync(s, expunges) || !n->fetch_atts || !s->mb || !s->nview ||
      s->view[s->nview - 1].uid <= known)
    return;
  struct buf text = {0};
  buf_printf(&text, " %u:%u %s", known + 1, s->view[s->nview - 1].uid, n->fetch_atts);
  if (!text.oom) {
    struct command c;
    memset(&c, 0, sizeof c);
    c.tag = "*";
    c.def = &fetch_def;
    c.uid = 1;
    c.ps.p = text.p;
    c.ps.end = text.p + text.len;
    c.ps.arena = &s->arena;
    cmd_fetch(s, &c);        /* its tagged reply is not sent: there is no command */
  }
  buf_free(&text);
}

/* Was the mailbox at old name x inside another renamed one (5.4: no event for children)? */
static int notify_parent_renamed(const struct notify_box *now, size_t n, const struct notify *was,
                                 const char *oldname) {
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < was->nboxes; j++) {
      const char *o = was->boxes[j].name;
      size_t len = strlen(o);
      if (was->boxes[j].mb == now[i].mb && strcmp(o, now[i].name) != 0 &&
          strncmp(oldname, o, len) == 0 && oldname[len] == '/')
        return 1;
    }
  return 0;
}

/*
** Look again and, if tell, send what changed since the client last heard. Too many
** mailboxes to watch ends NOTIFY with [NOTIFICATIONOVERFLOW] (5.8).
*/
static void notify_poll(struct session *s, int tell) {
  struct notify *n = s->notify;
  if (!n || !s->user) return;
  if (tell) notify_selected(s);
  struct notify_box *now;
  char **subs;
  size_t nnow, nsubs, watched = 0;
  if (!notify_snapshot(s, n, &now, &nnow, &subs, &nsubs)) return;   /* next time */
  for (size_t i = 0; i < nnow; i++) watched += (now[i].events & NOTIFY_MESSAGE_EVENTS) != 0;
  if (watched > IMAPMEM_NOTIFY_MAX) {
    session_send(s, "* OK [NOTIFICATIONOVERFLOW] More than %d mailboxes to watch: "
                 "NOTIFY NONE now\r\n", IMAPMEM_NOTIFY_MAX);
    notify_boxes_free(now, nnow);
    notify_names_free(subs, nsubs);
    session_notify_off(s);
    return;
  }
  for (size_t i = 0; tell && i < nnow; i++) {
    const struct notify_box *x = &now[i], *was = NULL;
    for (size_t j = 0; j < n->nboxes && !was; j++)
      if (n->boxes[j].mb == x->mb) was = &n->boxes[j];
    if (!was) {
      if (x->events & NOTIFY_NAME) notify_send_list(s, x->selectable ? "" : "\\Noselect", x->name,
                                                    NULL);
      continue;
    }
    if (strcmp(was->name, x->name) != 0 && ((x->events | was->events) & NOTIFY_NAME) &&
        !notify_parent_renamed(now, nnow, n, was->name))
      notify_send_list(s, "", x->name, was->name);
    else if (was->selectable && !x->selectable && (x->events & NOTIFY_NAME))
      notify_send_list(s, "\\Noselect", x->name, NULL);   /* deleted, its inferiors stay */
    unsigned items = x->mb == s->mb ? 0 : notify_status_change(s, was, x);   /* 3.1: SELECTED */
    if (items) notify_send_status(s, x, items);                              /* rules it */
  }
  for (size_t j = 0; tell && j < n->nboxes; j++) {
    size_t i;
    for (i = 0; i < nnow && now[i].mb != n->boxes[j].mb; i++) {}
    if (i == nnow && (n->boxes[j].events & NOTIFY_NAME))
      notify_send_list(s, "\\NonExistent", n->boxes[j].name, NULL);
  }
  for (size_t i = 0; tell && i < nsubs; i++)   /* 5.5: \Subscribed if and only if it is */
    if (!notify_name_in(n->subs, n->nsubs, subs[i]) &&
        (notify_events_for(n, subs[i], 1, subs, nsubs) & NOTIFY_SUBS))
      notify_send_list(s, "\\Subscribed", subs[i], NULL);
  for (size_t i = 0; tell && i < n->nsubs; i++)
    if (!notify_name_in(subs, nsubs, n->subs[i]) &&
        (notify_events_for(n, n->subs[i], 1, n->subs, n->nsubs) & NOTIFY_SUBS)) {
      size_t k;
      for (k = 0; k < nnow && strcmp(now[k].name, n->subs[i]) != 0; k++) {}
      notify_send_list(s, k == nnow ? "\\NonExistent" : "", n->subs[i], NULL);
    }
  notify_boxes_free(n->boxes, n->nboxes);
  notify_names_free(n->subs, n->nsubs);
  n->boxes = now;
  n->nboxes = nnow;
  n->subs = subs;
  n->nsubs = nsubs;
}

/* One or a parenthesized list of mailbox names (8: one-or-more-mailbox) into g. */
static int notify_parse_names(struct parser *ps, struct notify_group *g) {
  int list = parse_char(ps, '(');
  do {
    const char *name;
    if (!parse_mailbox(ps, &name)) return 0;
    char *copy = mem_strdup(name);
    char **v = copy ? mem_realloc(g->names, (g->nnames + 1) * sizeof *v) : NULL;
    if (!v) {
      free(copy);
      return parse_fail(ps, "Out of memory");
    }
    g->names = v;
    g->names[g->nnames++] = copy;
  } while (list && parse_char(ps, ' '));
  return !list || parse_char(ps, ')') || parse_fail(ps, "Expected ')' after the mailbox names");
}

/*
** The events of one event-group (8: "(" event *(SP event) ")" / "NONE"; the events also
** without parentheses, as 3.1's example writes them). *bad is set for an event this
** server does not support (3.1: NO [BADEVENT]), *atts to MessageNew's fetch attributes.
*/
static int notify_parse_events(struct parser *ps, struct notify_group *g, int *bad,
                               char **atts) {
  struct str w;
  int paren = parse_char(ps, '(');
  const char *start = ps->p;
  if (!paren && parse_atom(ps, &w) && str_ieq(w, "NONE")) return 1;
  ps->p = start;
  do {
    if (!parse_atom(ps, &w)) return parse_fail(ps, "Expected an event");
    size_t k;
    for (k = 0; k < sizeof notify_event_names / sizeof notify_event_names[0] &&
                !str_ieq(w, notify_event_names[k].name); k++) {}
    if (k == sizeof notify_event_names / sizeof notify_event_names[0])
      return parse_fail(ps, "Unknown event");
    g->events |= notify_event_names[k].bit;
    *bad |= notify_event_names[k].bit == 0;
    const char *after = ps->p;
    if (notify_event_names[k].bit == NOTIFY_NEW && parse_char(ps, ' ') && parse_peek(ps, '(')) {
      const char *start = ps->p;
      struct fetch_item *items = NULL, **tail = &items;
      parse_char(ps, '(');
      do {
        if (!fetch_parse_att(ps, &tail)) return 0;
      } while (parse_char(ps, ' '));
      if (!parse_char(ps, ')')) return parse_fail(ps, "Expected ')' after the fetch attributes");
      free(*atts);
      if (!(*atts = mem_strndup(start, (size_t)(ps->p - start))))
        return parse_fail(ps, "Out of memory");
    } else {
      ps->p = after;
    }
  } while (parse_char(ps, ' '));
  return !paren || parse_char(ps, ')') || parse_fail(ps, "Expected ')' after the events");
}

/*
** RFC 5465 3.1 NOTIFY SET [STATUS] event-groups, and NOTIFY NONE. As Dovecot does, MessageNew,
** MessageExpunge and FlagChange may be asked for one without the others (5 says BAD;
** imaptest's notify script and clients rely on it).
*/
static int cmd_notify(struct session *s, struct command *c) {
  struct parser *ps = &c->ps;
  struct str w;
  if (!parse_sp(ps) || !parse_atom(ps, &w)) return cmd_bad(c, "NOTIFY Expected SET or NONE");
  if (str_ieq(w, "NONE")) {
    if (!parse_end(ps)) return cmd_bad_args(c);
    session_notify_off(s);
    return cmd_ok(c, "NOTIFY completed");
  }
  if (!str_ieq(w, "SET") || !parse_sp(ps)) return cmd_bad(c, "NOTIFY Expected SET or NONE");
  struct notify *n = mem_calloc(1, sizeof *n);
  if (!n) return cmd_no(c, "[SERVERBUG] Out of memory");
  n->selected = -1;
  int status = 0, badevent = 0, ok = 1;
  const char *why = NULL;
  char *atts = NULL;
  const char *save = ps->p;
  if (parse_atom(ps, &w) && str_ieq(w, "STATUS")) status = parse_sp(ps);
  else ps->p = save;
  do {
    struct notify_group *g = mem_realloc(n->groups, (n->ngroups + 1) * sizeof *g);
    if (!g) {
      why = "Out of memory";
      break;
    }
    n->groups = g;
    g = &n->groups[n->ngroups++];
    memset(g, 0, sizeof *g);
    struct str f;
    if (!parse_char(ps, '(') || !parse_atom(ps, &f)) {
      ok = parse_fail(ps, "Expected '(' and a mailbox filter");
      break;
    }
    for (g->filter = 0; g->filter <= NF_MAILBOXES && !str_ieq(f, notify_filter_names[g->filter]);
         g->filter++) {}
    if (g->filter > NF_MAILBOXES) {
      ok = parse_fail(ps, "Unknown mailbox filter");
      break;
    }
    char *group_atts = NULL;
    ok = ((g->filter != NF_SUBTREE && g->filter != NF_MAILBOXES) ||
          (parse_sp(ps) && notify_parse_names(ps, g))) &&
         parse_sp(ps) && notify_parse_events(ps, g, &badevent, &group_atts) &&
         (parse_char(ps, ')') || parse_fail(ps, "Expected ')' after the event group"));
    int selected = g->filter == NF_SELECTED || g->filter == NF_SELECTED_DELAYED;
    if (ok && selected && n->selected >= 0)
      why = "Only one of SELECTED and SELECTED-DELAYED may be given (RFC 5465 6.1)";
    else if (ok && selected && (g->events & ~(unsigned)NOTIFY_MESSAGE_EVENTS))
      why = "SELECTED and SELECTED-DELAYED take only message events (RFC 5465 6.1)";
    else if (ok && !selected && group_atts)
      why = "MessageNew takes fetch attributes only for SELECTED (RFC 5465 8)";
    if (ok && selected && !why) {
      n->selected = g->filter;
      n->selected_events = g->events;
      atts = group_atts;
    } else {
      free(group_atts);
    }
  } while (ok && !why && parse_char(ps, ' '));
  if (ok && !why && !parse_end(ps)) ok = 0;
  n->fetch_atts = atts;
  if (!ok || why) {
    notify_free(n);
    if (why && strcmp(why, "Out of memory") == 0) return cmd_no(c, "[SERVERBUG] Out of memory");
    return why ? cmd_bad(c, "NOTIFY %s", why) : cmd_bad_args(c);
  }
  if (badevent) {
    notify_free(n);
    return cmd_no(c, NOTIFY_BADEVENT " Unsupported NOTIFY event (RFC 5465 3.1)");
  }
  session_notify_off(s);     /* 3.1: SET replaces what was set */
  size_t watched = 0;
  if (!notify_snapshot(s, n, &n->boxes, &n->nboxes, &n->subs, &n->nsubs)) {
    notify_free(n);
    return cmd_no(c, "[SERVERBUG] Out of memory");
  }
  for (size_t i = 0; i < n->nboxes; i++) watched += (n->boxes[i].events & NOTIFY_MESSAGE_EVENTS) != 0;
  if (watched > IMAPMEM_NOTIFY_MAX) {
    notify_free(n);
    return cmd_no(c, "[NOTIFICATIONOVERFLOW] More than %d mailboxes to watch", IMAPMEM_NOTIFY_MAX);
  }
  if (!session_wake_open(s)) {
    notify_free(n);
    return cmd_no(c, "[UNAVAILABLE] Out of file descriptors");
  }
  if (!store_watch_all(s->srv, &s->notify_watch, 1)) {
    notify_free(n);
    return cmd_no(c, "[SERVERBUG] Out of memory");
  }
  s->notify = n;
  for (size_t i = 0; status && i < n->nboxes; i++) {   /* 3.1: not for the selected one */
    const struct notify_box *x = &n->boxes[i];
    unsigned items = notify_status_initial(s, x->events);
    if (items && x->mb != s->mb) notify_send_status(s, x, items);
  }
  return cmd_ok(c, "NOTIFY completed");   /* the dispatcher's sync is 3.1's implicit NOOP */
}

/* RFC 2177 IDLE: updates as they happen, until the client sends DONE. */
static int cmd_idle(struct session *s, struct command *c) {
  if (!parse_end(&c->ps)) return cmd_bad_args(c);
  session_set_idle(s, 1);
  session_send(s, "+ idling\r\n");
  struct buf line = {0};
  int r = 0;
  for (;;) {
    if (s->notify) notify_poll(s, 1);   /* RFC 5465 4: the same events as without IDLE */
    if (s->mb && !search_sync(s, 1)) break;
    if (!session_flush(s)) {
      r = -1;
      break;
    }
    r = session_read_line(s, &line, IMAPMEM_MAX_LINE, 1);
    if (r == -3) continue;   /* woken by a change: report it */
    if (r >= 0 && atomic_load(&s->srv->tracing))
      session_trace(s, 'C', line.p ? line.p : "", line.len);
    break;
  }
  session_set_idle(s, 0);
  if (r == -4) session_send(s, "* BYE imapmem is shutting down\r\n");
  if (s->closing) cmd_bad(c, "IDLE ended");
  else if (r < 0) {
    s->closing = 1;
    cmd_bad(c, "IDLE ended: %s", r == -2 ? "line too long" : "connection lost or timed out");
  } else if (str_ieq(str_make(line.p ? line.p : "", line.len), "DONE")) {
    cmd_ok(c, "IDLE terminated");
  } else {
    cmd_bad(c, "IDLE Expected DONE");
  }
  buf_free(&line);
  return 0;
}

/*
** RFC 2342 5: the personal namespace, the other users' ("Other Users/" + user + "/") and
** the shared mailboxes' ("Shared/"), each with the one delimiter.
*/
static int cmd_namespace(struct session *s, struct command *c) {
  if (!parse_end(&c->ps)) return cmd_bad_args(c);
  session_send(s, "* NAMESPACE ((\"\" \"/\")) ((");
  out_string(&s->out, s->srv->ns_other, strlen(s->srv->ns_other));
  session_send(s, " \"/\")) ((");
  out_string(&s->out, s->srv->ns_shared, strlen(s->srv->ns_shared));
  session_send(s, " \"/\"))\r\n");
  return cmd_ok(c, "NAMESPACE completed");
}

/* ------------------------------------------------------------------------- */
/*
** RFC 4314 3: GETACL, SETACL, DELETEACL, LISTRIGHTS and MYRIGHTS. Each names a mailbox
** (its name as the client gave it comes back in the response) and checks the rights
** section 4 asks for: "a", or for MYRIGHTS any of "lrikxa". A mailbox the user may not
** look up answers as a missing one (section 6).
*/
static struct mailbox *cmd_acl_mailbox(struct session *s, struct command *c, const char *name,
                                       unsigned need, int any) {
  unsigned rights;
  struct mailbox *mb = ns_mailbox(s->srv, s->user, name, &rights);
  int ok = any ? (rights & need) != 0 : (rights & need) == need;
  if (!mb || (!ok && !(rights & RIGHT_L))) {
    mailbox_unref(mb);
    cmd_no(c, "[NONEXISTENT] Mailbox does not exist: %s", name);
    return NULL;
  }
  if (!ok) {
    mailbox_unref(mb);
    cmd_no(c, "[NOPERM] Permission denied: %s", name);
    return NULL;
  }
  return mb;
}

/* " identifier": an astring, not empty nor a lone "-" (RFC 4314 3: BAD). 0: BAD set. */
static int cmd_acl_identifier(struct session *s, struct command *c, const char **id) {
  struct str v;
  if (!parse_sp(&c->ps) || !parse_astring(&c->ps, &v)) return cmd_bad_args(c);
  if (v.len == 0 || (v.len == 1 && v.p[0] == '-') || memchr(v.p, 0, v.len))
    return cmd_bad(c, "%s Invalid identifier", c->def->name);
  *id = arena_strndup(&s->arena, v.p, v.len);
  return *id ? 1 : cmd_no(c, "[SERVERBUG] Out of memory");
}

/* Is id the owner of mb, whose rights are fixed ("-owner" too)? */
static int acl_is_owner(const struct mailbox *mb, const char *id) {
  if (*id == '-') id++;
  return mb->user && mb->user->name[0] && strcmp(mb->user->name, id) == 0;
}

static int cmd_getacl(struct session *s, struct command *c) {
  const char *name;
  if (!cmd_mailbox_arg(c, &name)) return cmd_bad_args(c);
  struct mailbox *mb = cmd_acl_mailbox(s, c, name, RIGHT_A, 0);
  if (!mb) return 0;
  struct buf line = {0};
  char letters[16];
  rights_format(RIGHTS_ALL, letters);
  pthread_mutex_lock(&mb->user->lock);
  if (mb->user->name[0]) {    /* the owner first, with every right (the shared tree has none) */
    buf_adds(&line, " ");
    out_string(&line, mb->user->name, strlen(mb->user->name));
    buf_printf(&line, " %s", letters);
  }
  for (size_t i = 0; i < mb->nacl; i++) {
    rights_format(mb->acl[i].rights, letters);
    buf_adds(&line, " ");
    out_string(&line, mb->acl[i].id, strlen(mb->acl[i].id));
    buf_printf(&line, " %s", letters);
  }
  pthread_mutex_unlock(&mb->user->lock);
  mailbox_unref(mb);
  if (line.oom) {
    buf_free(&line);
    return cmd_no(c, "[SERVERBUG] Out of memory");
  }
  session_send(s, "* ACL ");
  out_string(&s->out, name, strlen(name));
  session_send(s, "%s\r\n", line.p ? line.p : "");
  buf_free(&line);
  return cmd_ok(c, "GETACL completed");
}

static int cmd_setacl(struct session *s, struct command *c) {
  const char *name, *id;
  struct str mod;
  if (!parse_sp(&c->ps) || !parse_mailbox(&c->ps, &name)) return cmd_bad_args(c);
  if (!cmd_acl_identifier(s, c, &id)) return 0;
  if (!parse_sp(&c->ps) || !parse_astring(&c->ps, &mod) || !parse_end(&c->ps))
    return cmd_bad_args(c);
  int op = mod.len && (mod.p[0] == '+' || mod.p[0] == '-') ? mod.p[0] : '=';
  unsigned rights;
  char bad;
  if (op != '=') {
    mod.p++;
    mod.len--;
  }
  if (!rights_parse(mod.p, mod.len, &rights, &bad)) {   /* RFC 4314 3.1: never ignored */
    if (bad >= 'A' && bad <= 'Z') return cmd_bad(c, "SETACL Uppercase rights are not allowed");
    if (bad > ' ' && bad < 0x7f) return cmd_bad(c, "SETACL The %c right is not supported", bad);
    return cmd_bad(c, "SETACL Rights are letters of \"%s\", \"c\" and \"d\"", RIGHTS_LETTERS);
  }
  struct mailbox *mb = cmd_acl_mailbox(s, c, name, RIGHT_A, 0);
  if (!mb) return 0;
  int ok = 1, owner = acl_is_owner(mb, id);
  pthread_mutex_lock(&mb->user->lock);
  if (!owner) {
    long i = acl_find(mb, id);
    unsigned now = i >= 0 ? mb->acl[i].rights : 0;
    ok = acl_set(mb, id, op == '+' ? now | rights : op == '-' ? now & ~rights : rights);
  }
  pthread_mutex_unlock(&mb->user->lock);
  mailbox_unref(mb);
  if (owner) return cmd_no(c, "[CANNOT] The owner of a mailbox always has every right");
  if (!ok) return cmd_no(c, "[SERVERBUG] Out of memory");
  return cmd_ok(c, "SETACL completed");
}

static int cmd_deleteacl(struct session *s, struct command *c) {
  const char *name, *id;
  if (!parse_sp(&c->ps) || !parse_mailbox(&c->ps, &name)) return cmd_bad_args(c);
  if (!cmd_acl_identifier(s, c, &id)) return 0;
  if (!parse_end(&c->ps)) return cmd_bad_args(c);
  struct mailbox *mb = cmd_acl_mailbox(s, c, name, RIGHT_A, 0);
  if (!mb) return 0;
  int owner = acl_is_owner(mb, id);
  pthread_mutex_lock(&mb->user->lock);
  if (!owner) acl_delete(mb, id);
  pthread_mutex_unlock(&mb->user->lock);
  mailbox_unref(mb);
  if (owner) return cmd_no(c, "[CANNOT] The owner of a mailbox always has every right");
  return cmd_ok(c, "DELETEACL completed");
}

/*
** LISTRIGHTS (RFC 4314 3.4, 3.7): the owner is always granted every right; anyone else
** may be granted each right on its own, none tied to another, so "c" and "d" come alone.
*/
static int cmd_listrights(struct session *s, struct command *c) {
  const char *name, *id;
  if (!parse_sp(&c->ps) || !parse_mailbox(&c->ps, &name)) return cmd_bad_args(c);
  if (!cmd_acl_identifier(s, c, &id)) return 0;
  if (!parse_end(&c->ps)) return cmd_bad_args(c);
  struct mailbox *mb = cmd_acl_mailbox(s, c, name, RIGHT_A, 0);
  if (!mb) return 0;
  int owner = acl_is_owner(mb, id) && id[0] != '-';
  mailbox_unref(mb);
  char letters[16];
  rights_format(RIGHTS_ALL, letters);
  session_send(s, "* LISTRIGHTS ");
  out_string(&s->out, name, strlen(name));
  session_send(s, " ");
  out_string(&s->out, id, strlen(id));
  if (owner) session_send(s, " %s\r\n", letters);
  else session_send(s, " \"\" l r s w i p k x t e a c d\r\n");
  return cmd_ok(c, "LISTRIGHTS completed");
}

static int cmd_myrights(struct session *s, struct command *c) {
  const char *name;
  if (!cmd_mailbox_arg(c, &name)) return cmd_bad_args(c);
  struct mailbox *mb =
    cmd_acl_mailbox(s, c, name, RIGHT_L | RIGHT_R | RIGHT_I | RIGHT_K | RIGHT_X | RIGHT_A, 1);
  if (!mb) return 0;
  pthread_mutex_lock(&mb->user->lock);
  unsigned rights = acl_rights(mb, s->user->name);
  pthread_mutex_unlock(&mb->user->lock);
  mailbox_unref(mb);
  char letters[16];
  rights_format(rights, letters);
  session_send(s, "* MYRIGHTS ");
  out_string(&s->out, name, strlen(name));
  session_send(s, " %s\r\n", letters);
  return cmd_ok(c, "MYRIGHTS completed");
}


/* ------------------------------------------------------------------------- */
/* Selected state (RFC 3501 6.4). */

static int cmd_check(struct session *s, struct command *c) {
  (void)s;
  if (!parse_end(&c->ps)) return cmd_bad_args(c);
  return cmd_ok(c, "CHECK completed");
}

/*
** 6.4.2 CLOSE: expunge \Deleted silently (not when read-only, nor without the "e" right:
** RFC 4314 4 has CLOSE succeed then, expunging nothing), then deselect.
*/
static int cmd_close(struct session *s, struct command *c) {
  if (!parse_end(&c->ps)) return cmd_bad_args(c);
  if (!s->readonly && (s->rights & RIGHT_E)) {
    pthread_mutex_lock(&s->mb->lock);
    mailbox_expunge_deleted(s->mb, NULL);
    pthread_mutex_unlock(&s->mb->lock);
  }
  session_unselect(s);
  return cmd_ok(c, "%s completed", c->def->name);
}

/* RFC 3691 UNSELECT: deselect without expunging. */
static int cmd_unselect(struct session *s, struct command *c) {
  if (!parse_end(&c->ps)) return cmd_bad_args(c);
  session_unselect(s);
  return cmd_ok(c, "UNSELECT completed");
}

/* 6.4.3 EXPUNGE, and RFC 4315 UID EXPUNGE set. The EXPUNGE responses come from sync. */
static int cmd_expunge(struct session *s, struct command *c) {
  struct seqset set = {0};
  if (c->uid && (!parse_sp(&c->ps) || !parse_seqset(&c->ps, &set))) return cmd_bad_args(c);
  if (!parse_end(&c->ps)) return cmd_bad_args(c);
  if (s->readonly) return cmd_no(c, "[READ-ONLY] Mailbox is read-only");
  if (!(s->rights & RIGHT_E))   /* RFC 4314 4 */
    return cmd_no(c, "[NOPERM] Permission denied: no right to expunge");
  if (set.dollar && !view_check_set(s, c, &set, 1)) return 0;   /* RFC 5182 */
  pthread_mutex_lock(&s->mb->lock);
  if (c->uid) seqset_resolve(&set, s->mb->uidnext - 1);
  long n = mailbox_expunge_deleted(s->mb, c->uid ? &set : NULL);
  uint64_t highest = s->mb->modseq;   /* the sync before the tagged OK reports up to here */
  pthread_mutex_unlock(&s->mb->lock);
  if (n < 0) return cmd_no(c, "[SERVERBUG] Out of memory");
  if (n > 0 && session_qresync(s))    /* RFC 7162 3.2.7, 3.2.9 */
    return cmd_ok(c, "[HIGHESTMODSEQ %llu] %sEXPUNGE completed", (unsigned long long)highest,
                  c->uid ? "UID " : "");
  return cmd_ok(c, "%sEXPUNGE completed", c->uid ? "UID " : "");
}

/*
** 6.4.6 STORE set [(UNCHANGEDSINCE n)] (+|-)FLAGS[.SILENT] flags. With UNCHANGEDSINCE
** (RFC 7162 3.1.3), a message changed after n is left alone and named in [MODIFIED set],
** and its flags are sent so that the client need not ask (Example 10).
*/
static int cmd_store(struct session *s, struct command *c) {
  struct parser *ps = &c->ps;
  struct seqset set;
  struct str item;
  struct flag_list fl;
  int conditional = 0;
  uint64_t unchangedsince = 0;
  if (!parse_sp(ps) || !parse_seqset(ps, &set) || !parse_sp(ps)) return cmd_bad_args(c);
  if (parse_char(ps, '(')) {   /* store modifiers (RFC 4466 2.5) */
    do {
      struct str w;
      if (!parse_atom(ps, &w)) return cmd_bad_args(c);
      if (!str_ieq(w, "UNCHANGEDSINCE") || !cap_on(s->srv, CAP_CONDSTORE))
        return cmd_bad(c, "STORE Unknown modifier: %.*s", (int)w.len, w.p);
      if (conditional) return cmd_bad(c, "STORE UNCHANGEDSINCE given twice");
      if (!parse_sp(ps) || !parse_modseq(ps, &unchangedsince)) return cmd_bad_args(c);
      conditional = 1;
    } while (parse_char(ps, ' '));
    if (!parse_char(ps, ')') || !parse_sp(ps)) return cmd_bad(c, "STORE Expected ')'");
  }
  int op = parse_char(ps, '+') ? '+' : parse_char(ps, '-') ? '-' : '=';
  if (!parse_run(ps, is_atom_char, &item)) return cmd_bad(c, "STORE Expected FLAGS");
  int silent = str_ieq(item, "FLAGS.SILENT");
  if (!silent && !str_ieq(item, "FLAGS"))
    return cmd_bad(c, "STORE Unknown item %.*s (expected FLAGS)", (int)item.len, item.p);
  if (!parse_sp(ps) || !parse_flags(ps, &fl, 1) || !parse_end(ps)) return cmd_bad_args(c);
  if (conditional && s->nomodseq)   /* RFC 7162 3.1.2.2 */
    return cmd_bad(c, "STORE UNCHANGEDSINCE: this mailbox has no mod-sequences (NOMODSEQ)");
  size_t *idx, n;
  if (!view_resolve(s, c, &set, c->uid, &idx, &n)) return 0;
  if (s->readonly) return cmd_no(c, "[READ-ONLY] Mailbox is read-only");
  int kw_ok;                 /* RFC 4314 4: only the flags the rights allow are changed */
  uint32_t may = rights_flags(s->rights, &kw_ok);
  /* refused when none of the flags named may change, or "= ()" when none at all may;
     "+FLAGS ()" and "-FLAGS ()" change nothing and are never refused */
  int refused = (fl.flags || fl.nkw) ? !(fl.flags & may) && !(fl.nkw && kw_ok)
                                     : op == '=' && !may && !kw_ok;
  if (refused) return cmd_no(c, "[NOPERM] Permission denied: no right to change these flags");
  if (conditional) session_enable_condstore(s);
  struct mailbox *mb = s->mb;
  int gone = 0, full = 0, cs = session_condstore(s);
  struct buf modified = {0};
  struct set_writer mw = {&modified, 0, 0, 0};
  pthread_mutex_lock(&mb->lock);
  uint64_t kw = 0;
  full = kw_ok && flag_list_keywords(mb, &fl, &kw) < 0;
  if ((!silent || conditional) && mb->nkeywords > s->nkw_known)
    session_send_flags(s, mb);   /* before a FETCH shows a new keyword */
  int in_step = s->seen_modseq == mb->modseq;   /* nothing else unreported changed */
  for (size_t i = 0; i < n && !full; i++) {
    long k = mailbox_find_uid(mb, s->view[idx[i]].uid);
    if (k < 0) {             /* expunged by another session: nothing to change (RFC 2180 */
      gone = 1;              /* 4.2), and by default nothing to complain of either */
      continue;
    }
    struct message *m = &mb->msgs[k];
    if (conditional && m->modseq > unchangedsince) {
      set_add(&mw, c->uid ? m->uid : (uint32_t)idx[i] + 1);
      session_send_flags_fetch(s, idx[i], m);
      continue;
    }
    uint32_t f = m->flags;
    uint64_t w = m->keywords, before = m->modseq;
    if (op == '+') {
      f |= fl.flags & may;
      w |= kw;
    } else if (op == '-') {
      f &= ~(fl.flags & may);
      w &= ~kw;
    } else {
      f = (f & ~may) | (fl.flags & may);
      w = kw_ok ? kw : w;
    }
    mailbox_set_flags(mb, (size_t)k, f, w);
    if (!silent) {           /* UID STORE answers with UIDs (6.4.8); RFC 7162 3.2.4 */
      session_send_fetch_start(s, idx[i] + 1, m->uid);
      if (c->uid || cs) session_send(s, "UID %u ", m->uid);
      session_send(s, "FLAGS ");
      flags_out(&s->out, m->flags, m->keywords, mb->keywords, mb->nkeywords,
                s->view[idx[i]].recent);
      if (cs) {
        session_send(s, " ");
        session_send_modseq(s, m->modseq);
      }
      session_send(s, ")\r\n");
    } else if (cs && (conditional || m->modseq != before)) {
      /* RFC 7162 3.1.3: the new MODSEQ even for .SILENT */
      session_send_fetch_start(s, idx[i] + 1, m->uid);
      session_send(s, "UID %u ", m->uid);
      session_send_modseq(s, m->modseq);
      session_send(s, ")\r\n");
    }
  }
  if (in_step) s->seen_modseq = mb->modseq;     /* our own changes need no echo */
  pthread_mutex_unlock(&mb->lock);
  set_end(&mw);
  int oom = modified.oom;
  if (full || oom) {
    buf_free(&modified);
    return cmd_no(c, full ? "[LIMIT] Too many keywords in this mailbox"
                          : "[SERVERBUG] Out of memory");
  }
  if (gone && !silent && s->srv->cfg.strict_expunge && mw.n)   /* RFC 7162 Example 11 */
    cmd_no(c, "[MODIFIED %s] Some of the messages have been expunged", modified.p);
  else if (gone && !silent && s->srv->cfg.strict_expunge)
    cmd_no(c, "[EXPUNGEISSUED] Some of the messages have been expunged");
  else if (mw.n)
    cmd_ok(c, "[MODIFIED %s] Conditional %sSTORE failed", modified.p, c->uid ? "UID " : "");
  else
    cmd_ok(c, "%sSTORE completed", c->uid ? "UID " : "");
  buf_free(&modified);
  return 0;
}

/* One message taken out of a mailbox for COPY/MOVE, kept while no lock is held. */
struct copied {
  struct msgdata *data;
  uint32_t uid, flags;
  int64_t internaldate;
  int tz;
  const char *keywords[IMAPMEM_MAX_KEYWORDS];
  int nkw;
};

/*
** 6.4.7 COPY and RFC 6851 MOVE. The source is read under its lock, then the target is
** written under its own: never two mailbox locks at once. MOVE then expunges the
** originals; its EXPUNGE responses come after an untagged OK [COPYUID].
*/
static int cmd_copy(struct session *s, struct command *c) {
  struct parser *ps = &c->ps;
  struct seqset set;
  const char *name;
  int move = c->def->name[0] == 'M';
  if (!parse_sp(ps) || !parse_seqset(ps, &set) || !parse_sp(ps) || !parse_mailbox(ps, &name) ||
      !parse_end(ps))
    return cmd_bad_args(c);
  size_t *idx, n;
  if (!view_resolve(s, c, &set, c->uid, &idx, &n)) return 0;
  if (move && s->readonly) return cmd_no(c, "[READ-ONLY] Mailbox is read-only");
  if (move && (s->rights & (RIGHT_T | RIGHT_E)) != (RIGHT_T | RIGHT_E))   /* RFC 6851 4.2 */
    return cmd_no(c, "[NOPERM] Permission denied: no right to expunge from this mailbox");
  unsigned rights;
  struct mailbox *dst = cmd_selectable(s, c, name, "TRYCREATE", RIGHT_I, &rights);
  if (!dst) return 0;
  int kw_ok;                 /* RFC 4314 4: flags without the right to set them are dropped */
  uint32_t may = rights_flags(rights, &kw_ok);
  struct copied *cp = arena_alloc(&s->arena, (n ? n : 1) * sizeof *cp);
  if (!cp) {
    mailbox_unref(dst);
    return cmd_no(c, "[SERVERBUG] Out of memory");
  }
  struct mailbox *src = s->mb;
  size_t got = 0;
  int gone = 0;
  pthread_mutex_lock(&src->lock);
  for (size_t i = 0; i < n; i++) {
    long k = mailbox_find_uid(src, s->view[idx[i]].uid);
    if (k < 0) {
      gone = 1;
      continue;
    }
    struct message *m = &src->msgs[k];
    struct copied *x = &cp[got++];
    x->data = msgdata_ref(m->data);
    x->uid = m->uid;
    x->flags = m->flags & FLAGS_SYSTEM & may;
    x->internaldate = m->internaldate;
    x->tz = m->tz;
    x->nkw = 0;
    for (int b = 0; kw_ok && b < src->nkeywords; b++)   /* names never change or go */
      if (m->keywords >> b & 1) x->keywords[x->nkw++] = src->keywords[b];
  }
  pthread_mutex_unlock(&src->lock);
  if (gone) {
    for (size_t i = 0; i < got; i++) msgdata_unref(cp[i].data);
    mailbox_unref(dst);
    return cmd_no(c, "[EXPUNGEISSUED] Some of the requested messages no longer exist");
  }
  /* RFC 9208 4.3.1; a MOVE between mailboxes of one quota root changes no usage */
  struct user *owner = dst->user;
  int same_root = move && owner == src->user;
  uint64_t bytes = 0;
  for (size_t i = 0; i < got; i++) bytes += cp[i].data->size;
  if (!quota_begin(s, c, owner, same_root ? 0 : bytes, same_root ? 0 : got)) {
    for (size_t i = 0; i < got; i++) msgdata_unref(cp[i].data);
    mailbox_unref(dst);
    return 0;
  }
  struct buf srcuids = {0}, dstuids = {0};
  pthread_mutex_lock(&dst->lock);
  uint32_t uv = dst->uidvalidity;
  size_t done = 0;
  for (; done < got; done++) {
    struct copied *x = &cp[done];
    uint64_t kw = 0;
    for (int b = 0; b < x->nkw; b++) {
      int bit = mailbox_keyword(dst, x->keywords[b], strlen(x->keywords[b]), 1);
      if (bit >= 0) kw |= (uint64_t)1 << bit;
    }
    uint32_t uid = mailbox_append(dst, x->data, x->flags | FLAG_RECENT, kw, x->internaldate,
                                  x->tz);
    if (!uid) break;
    buf_printf(&srcuids, "%s%u", done ? "," : "", x->uid);
    buf_printf(&dstuids, "%s%u", done ? "," : "", uid);
  }
  int exhausted = mailbox_uids_exhausted(dst);
  pthread_mutex_unlock(&dst->lock);
  mailbox_unref(dst);
  for (size_t i = done; i < got; i++) msgdata_unref(cp[i].data);
  int oom = done < got || srcuids.oom || dstuids.oom;
  if (oom || !move || !got) quota_end(owner);   /* a MOVE keeps it until it expunged */
  if (oom) {
    buf_free(&srcuids);
    buf_free(&dstuids);
    if (exhausted && done < got)
      return cmd_no(c, "[LIMIT] The target mailbox has used every UID (%zu copied)", done);
    return cmd_no(c, "[SERVERBUG] Out of memory after copying %zu messages", done);
  }
  if (move && got) {
    pthread_mutex_lock(&src->lock);
    unsigned char *rm = mem_calloc(src->count ? src->count : 1, 1);
    if (rm) {
      for (size_t i = 0; i < got; i++) {
        long k = mailbox_find_uid(src, cp[i].uid);
        if (k >= 0) rm[k] = 1;
      }
      mailbox_expunge(src, rm);
      free(rm);
    }
    uint64_t highest = src->modseq;   /* as in cmd_expunge */
    pthread_mutex_unlock(&src->lock);
    quota_end(owner);
    if (cap_on(s->srv, CAP_UIDPLUS))
      session_send(s, "* OK [COPYUID %u %s %s] Moved\r\n", uv, srcuids.p, dstuids.p);
    if (session_qresync(s))   /* RFC 6851 4.4 */
      cmd_ok(c, "[HIGHESTMODSEQ %llu] %sMOVE completed", (unsigned long long)highest,
             c->uid ? "UID " : "");
    else
      cmd_ok(c, "%sMOVE completed", c->uid ? "UID " : "");
  } else if (got && cap_on(s->srv, CAP_UIDPLUS)) {
    cmd_ok(c, "[COPYUID %u %s %s] %sCOPY completed", uv, srcuids.p, dstuids.p,
           c->uid ? "UID " : "");
  } else {
    cmd_ok(c, "%s%s completed%s", c->uid ? "UID " : "", c->def->name, got ? "" : " (no messages)");
  }
  buf_free(&srcuids);
  buf_free(&dstuids);
  return 0;
}

/* ------------------------------------------------------------------------- */
/* The command table: name, states where allowed, flags, handler. */
#define ANY (ST_NOTAUTH | ST_AUTH | ST_SELECTED)
#define AUTHED (ST_AUTH | ST_SELECTED)
static const struct cmd_def commands[] = {
  /* name          states       flags                  extension  UID form's   handler */
  {"CAPABILITY",   ANY,         0,                     0,         0,           cmd_capability},
  {"NOOP",         ANY,         0,                     0,         0,           cmd_noop},
  {"LOGOUT",       ANY,         0,                     0,         0,           cmd_logout},
  {"ID",           ANY,         0,                     CAP_ID,    0,           cmd_id},
  {"STARTTLS",     ST_NOTAUTH,  0,                     0,         0,           cmd_starttls},
  {"AUTHENTICATE", ST_NOTAUTH,  0,                     0,         0,           cmd_authenticate},
  {"LOGIN",        ST_NOTAUTH,  0,                     0,         0,           cmd_login},
  {"SELECT",       AUTHED,      0,                     0,         0,           cmd_select},
  {"EXAMINE",      AUTHED,      0,                     0,         0,           cmd_select},
  {"CREATE",       AUTHED,      0,                     0,         0,           cmd_create},
  {"DELETE",       AUTHED,      0,                     0,         0,           cmd_delete},
  {"RENAME",       AUTHED,      0,                     0,         0,           cmd_rename},
  {"SUBSCRIBE",    AUTHED,      0,                     0,         0,           cmd_subscribe},
  {"UNSUBSCRIBE",  AUTHED,      0,                     0,         0,           cmd_subscribe},
  {"LIST",         AUTHED,      0,                     0,         0,           cmd_list},
  {"LSUB",         AUTHED,      CMD_NOT_REV2,          0,         0,           cmd_list},
  {"STATUS",       AUTHED,      0,                     0,         0,           cmd_status},
  {"APPEND",       AUTHED,      0,                     0,         0,           cmd_append},
  {"IDLE",         AUTHED,      0,                     CAP_IDLE,  0,           cmd_idle},
  {"NOTIFY",       AUTHED,      0,                     CAP_NOTIFY, 0,          cmd_notify},
  {"ENABLE",       AUTHED,      0,                     CAP_ENABLE, 0,          cmd_enable},
  {"NAMESPACE",    AUTHED,      0,                     CAP_NAMESPACE, 0,       cmd_namespace},
  {"GETACL",       AUTHED,      0,                     CAP_ACL,   0,           cmd_getacl},
  {"SETACL",       AUTHED,      0,                     CAP_ACL,   0,           cmd_setacl},
  {"DELETEACL",    AUTHED,      0,                     CAP_ACL,   0,           cmd_deleteacl},
  {"LISTRIGHTS",   AUTHED,      0,                     CAP_ACL,   0,           cmd_listrights},
  {"MYRIGHTS",     AUTHED,      0,                     CAP_ACL,   0,           cmd_myrights},
  {"GETQUOTA",     AUTHED,      0,                     CAP_QUOTA, 0,           cmd_getquota},
  {"GETQUOTAROOT", AUTHED,      0,                     CAP_QUOTA, 0,           cmd_getquotaroot},
  {"SETQUOTA",     AUTHED,      0,                     CAP_QUOTASET, 0,        cmd_setquota},
  {"CHECK",        ST_SELECTED, CMD_NOT_REV2,          0,         0,           cmd_check},
  {"CLOSE",        ST_SELECTED, 0,                     0,         0,           cmd_close},
  {"UNSELECT",     ST_SELECTED, 0,                     CAP_UNSELECT, 0,        cmd_unselect},
  {"EXPUNGE",      ST_SELECTED, CMD_UID,               0,         CAP_UIDPLUS, cmd_expunge},
  {"SEARCH",       ST_SELECTED, CMD_UID | CMD_KEEP_SEQ | CMD_SEQNUMS, 0, 0,           cmd_search},
  {"CANCELUPDATE", ST_SELECTED, 0,                     CAP_CONTEXT_SEARCH, 0,  cmd_cancelupdate},
  {"FETCH",        ST_SELECTED, CMD_UID | CMD_KEEP_SEQ | CMD_SEQNUMS, 0, 0,           cmd_fetch},
  {"STORE",        ST_SELECTED, CMD_UID | CMD_KEEP_SEQ | CMD_SEQNUMS, 0, 0,           cmd_store},
  {"COPY",         ST_SELECTED, CMD_UID | CMD_SEQNUMS, 0,         0,           cmd_copy},
  {"MOVE",         ST_SELECTED, CMD_UID | CMD_SEQNUMS, CAP_MOVE,  CAP_MOVE,    cmd_copy},
  {"SORT",         ST_SELECTED, CMD_UID | CMD_KEEP_SEQ | CMD_SEQNUMS, CAP_SORT, CAP_SORT, cmd_sort},
  {"THREAD",       ST_SELECTED, CMD_UID | CMD_KEEP_SEQ | CMD_SEQNUMS, 0, 0,           cmd_thread},
};

static const struct cmd_def *command_find(struct str name) {
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (str_ieq(name, commands[i].name)) return &commands[i];
  return NULL;
}

/*
** A fault set up for this command (imapmem_fault), copied out under the lock, or 0. name
** is the command name as sent, uid whether it came as "UID name". A fault with a count
** is spent as it fires, across all sessions.
*/
static int session_fault(struct session *s, struct str name, int uid, struct fault *out) {
  struct imapmem *srv = s->srv;
  if (atomic_load(&srv->nfaults_set) == 0) return 0;
  int found = 0;
  pthread_mutex_lock(&srv->lock);
  for (size_t i = 0; i < srv->nfaults && !found; i++) {
    struct fault *f = &srv->faults[i];
    if (f->left == 0) continue;
    if (f->nth) found = f->nth == s->ncommands;
    else if (strcmp(f->cmd, "*") == 0) found = 1;
    else found = str_ieq(name, f->cmd) && (uid || !f->uid_only);
    if (found) {
      if (f->left > 0) f->left--;
      *out = *f;
    }
  }
  pthread_mutex_unlock(&srv->lock);
  return found;
}

/* Carry out a fault. Returns 1 if the command is answered (or the session ended) here. */
static int session_apply_fault(struct session *s, struct command *c, const struct fault *f) {
  static const char *const names[] = {"NO", "BAD", "DROP", "BYE", "ALERT", "DELAY",
                                      "UIDVALIDITY", "MODSEQ-BACK",
                                      "FORGET-EXPUNGED", "AUTH-UNAVAILABLE",
                                      "AUTH-EXPIRED"};   /* ORDER FA_* */
  const char *when = f->nth ? "#N" : f->cmd;
  if (f->action == FA_DELAY) session_trace_event(s, "fault %s: DELAY %d ms", when, f->ms);
  else session_trace_event(s, "fault %s: %s", when, names[f->action]);
  switch (f->action) {
  case FA_NO:
  case FA_BAD:
    session_send(s, "%s %s %s\r\n", c->tag, names[f->action], f->text);
    return 1;
  case FA_DROP:              /* the connection ends, with nothing more said */
  case FA_BYE:               /* ... or with a BYE */
    if (f->action == FA_DROP) buf_reset(&s->out);
    else session_send(s, "* BYE %s\r\n", f->text);
    s->closing = 1;
    s->end_why = f->action == FA_DROP ? "a DROP fault" : "a BYE fault";
    return 1;
  case FA_ALERT:
    session_send(s, "* OK [ALERT] %s\r\n", f->text);
    return 0;
  case FA_DELAY:
    sleep_ms(f->ms);
    return 0;
  case FA_AUTH_UNAVAILABLE:  /* the login fails once its credentials proved right */
  case FA_AUTH_EXPIRED:
    s->auth_fault = f->action;
    return 0;
  case FA_UIDVALIDITY:
  case FA_MODSEQ_BACK:
  case FA_FORGET_EXPUNGED: {
    if (!s->user) return 0;  /* before login there is no mailbox to change */
    struct mailbox *mb = s->mb ? mailbox_ref(s->mb) : user_mailbox(s->user, "INBOX");
    if (mb && f->action == FA_UIDVALIDITY) mailbox_new_uidvalidity(s->srv, mb);
    if (mb && f->action == FA_MODSEQ_BACK) mailbox_modseq_back(mb);
    if (mb && f->action == FA_FORGET_EXPUNGED) {
      pthread_mutex_lock(&mb->lock);
      mailbox_forget_expunged(mb);
      pthread_mutex_unlock(&mb->lock);
    }
    mailbox_unref(mb);
    return 0;
  }
  }
  return 0;
}

/*
** Run one complete command (in s->cmd): parse the tag and name, check the state, the
** UID prefix and the extension from the table, run the handler, then send pending
** updates and the tagged reply.
*/
static void session_execute(struct session *s) {
  struct command c;
  memset(&c, 0, sizeof c);
  c.ps.p = s->cmd.p;
  c.ps.end = s->cmd.p + s->cmd.len;
  c.ps.arena = &s->arena;
  struct str tag, name;
  s->ncommands++;
  s->auth_fault = 0;          /* an AUTH- fault lasts one command */
  if (!parse_tag(&c.ps, &tag) || !parse_char(&c.ps, ' ')) {
    session_send(s, "* BAD Missing or invalid command tag\r\n");
    return;
  }
  c.tag = parse_cstr(&c.ps, tag);
  if (!c.tag) {
    session_send(s, "* BAD Out of memory\r\n");
    return;
  }
  if (!parse_run(&c.ps, is_atom_char, &name)) {
    session_send(s, "%s BAD Missing command name\r\n", c.tag);
    return;
  }
  if (str_ieq(name, "UID")) {
    c.uid = 1;
    if (!parse_char(&c.ps, ' ') || !parse_run(&c.ps, is_atom_char, &name)) {
      session_send(s, "%s BAD UID must be followed by a command\r\n", c.tag);
      return;
    }
  }
  char full[64];
  snprintf(full, sizeof full, "%s%.*s", c.uid ? "UID " : "", (int)(name.len > 40 ? 40 : name.len),
           name.p);
  struct fault f;
  if (session_fault(s, name, c.uid, &f) && session_apply_fault(s, &c, &f)) return;
  c.def = command_find(name);
  if (!c.def || (c.uid && !(c.def->flags & CMD_UID)) ||
      (c.def->cap && !cap_on(s->srv, c.def->cap)) ||   /* a switched-off extension */
      (c.uid && c.def->uid_cap && !cap_on(s->srv, c.def->uid_cap))) {
    session_send(s, "%s BAD Unknown command: %s\r\n", c.tag, full);
    return;
  }
  if (!(c.def->states & s->state)) {
    session_send(s, "%s BAD %s is not allowed in the %s state\r\n", c.tag, c.def->name,
                 state_name(s->state));
    return;
  }
  if ((c.def->flags & CMD_NOT_REV2) && session_rev2(s)) {   /* RFC 9051 Appendix E */
    session_send(s, "%s BAD %s is not in IMAP4rev2: use %s\r\n", c.tag, c.def->name,
                 strcmp(c.def->name, "CHECK") == 0 ? "NOOP" : "LIST (SUBSCRIBED)");
    return;
  }
  c.ps.utf8 = session_utf8(s);
  if (!c.uid && (c.def->flags & CMD_SEQNUMS) && session_uidonly(s)) {   /* RFC 9586 3.2 */
    session_send(s, "%s BAD [UIDREQUIRED] Message numbers are not allowed once UIDONLY is "
                 "enabled: use UID %s\r\n", c.tag, c.def->name);
    return;
  }
  if (s->notify) notify_poll(s, 1);   /* others' changes not yet told (RFC 5465) */
  s->modseq_sent = 0;         /* before the sync: the MODSEQs it sends count too */
  if (s->mb && !session_sync(s, 0)) return;   /* the mailbox went away under us */
  c.def->handler(s, &c);
  if (!c.status) cmd_no(&c, "[SERVERBUG] %s gave no reply", c.def->name);
  if (s->mb && s->state == ST_SELECTED && !search_sync(s, !(c.def->flags & CMD_KEEP_SEQ)))
    return;
  if (s->modseq_sent && session_condstore(s)) {
    /* RFC 7162 3.2, 6: MODSEQs went out while an expunge with a lower number waits to
       be reported; the client must not take them for its HIGHESTMODSEQ */
    pthread_mutex_lock(&s->mb->lock);
    uint64_t h = session_highestmodseq(s);
    pthread_mutex_unlock(&s->mb->lock);
    if (h < s->modseq_sent)
      session_send(s, "* OK [HIGHESTMODSEQ %llu] An expunge is still to be reported\r\n",
                   (unsigned long long)h);
  }
  session_send(s, "%s %s %s\r\n", c.tag, c.status, c.text);
  if (s->notify) notify_poll(s, 0);   /* its own changes are not told (RFC 5465 5) */
}

/*
** ===========================================================================
** 10  Sessions and network
** ===========================================================================
** Owns: a session's connection (its descriptors, input buffer and thread: net_io is its
** struct session_io, over a plain or a TLS struct transport), TLS (the handshake, the
** server's SSL_CTX, generated certificates), reading commands, the accept thread (plain
** and imaps ports), and the server's session list.
** Calls: sections 1, 3, 5, 6 and 9.
** Locking: server->lock guards the session list and what a session publishes for
** imapmem_wait() (pub_*); a session's other fields belong to its thread, except wake[]
** (written by anyone to wake it) and finished. Only a session's own thread closes its
** descriptors.
** Limits: a command line is at most IMAPMEM_MAX_LINE bytes and a literal at most
** config.max_literal (a non-synchronizing one at most 4096 bytes under LITERAL-); both are
** refused before anything is allocated for them. A session idle longer than
** config.idle_timeout is logged out (RFC 3501 5.4).
*/
/* ------------------------------------------------------------------------- */
/* Has imapmem_stop() begun? */
static int server_stopping(struct imapmem *srv) {
  pthread_mutex_lock(&srv->lock);
  int stopping = srv->stopping;
  pthread_mutex_unlock(&srv->lock);
  return stopping;
}

/* Empty the session's wake pipe, so that a poll() on it does not spin. */
static void session_drain_wake(struct session *s) {
  char tmp[64];
  if (s->wake[0] < 0) return;
  while (read(s->wake[0], tmp, sizeof tmp) > 0) {}
}

/*
** Wait until fd_out takes more bytes: for the autologout time at most, and not past
** imapmem_stop(). A wake-up that arrives meanwhile is noted in s->woken for the reader
** (and the pipe drained, so the wait does not spin on it). 0: give up the connection.
*/
static int session_wait_writable(struct session *s) {
  for (;;) {
    if (server_stopping(s->srv)) return 0;   /* the BYE of a stop is sent only if there is room */
    struct pollfd pf[3] = {{s->fd_out, POLLOUT, 0}, {s->wake[0], POLLIN, 0},
                           {s->srv->stop_pipe[0], POLLIN, 0}};   /* (-1 is skipped) */
    int r = poll(pf, 3, s->srv->cfg.idle_timeout * 1000);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return 0;
    if (pf[2].revents) continue;             /* imapmem_stop(): see the top */
    if (pf[1].revents) {
      session_drain_wake(s);
      s->woken = 1;
    }
    if (pf[0].revents) return 1;
  }
}

/* ------------------------------------------------------------------------- */
/* The plain transport: the descriptors as they are. */
static ssize_t plain_recv(struct session *s, char *p, size_t n) {
  return read(s->fd, p, n);
}

static ssize_t plain_send(struct session *s, const char *p, size_t n) {
  return s->out_socket ? send(s->fd_out, p, n, MSG_NOSIGNAL) : write(s->fd_out, p, n);
}

static int plain_pending(struct session *s) {
  (void)s;
  return 0;                  /* the kernel holds what is unread: poll() sees it */
}

static void plain_close(struct session *s) {
  (void)s;
}

static const struct transport plain_transport = {plain_recv, plain_send, plain_pending,
                                                 plain_close};

/* ------------------------------------------------------------------------- */
/*
** TLS through OpenSSL, in the opt-in build (make TLS=openssl): implicit TLS on the imaps
** port (RFC 8314 3.3) and STARTTLS (RFC 3501 6.2.1, RFC 9051 6.2.1). The handshake runs in
** the session's own thread on its non-blocking socket, so a slow client holds up no one
** else, and a client that does not finish it in time is dropped. Without IMAPMEM_TLS the
** stubs at the end say so and nothing here needs OpenSSL.
*/
static const char *const tls_fault_names[] = {"", "expired", "not-yet-valid", "wrong-host",
                                              "self-signed", "handshake"};   /* ORDER TLS_FAULT */
#define TLS_NO_BUILD "this imapmem was built without TLS: build it with 'make TLS=openssl' " \
                     "(Debian: libssl-dev), or compile imapmem.c with -DIMAPMEM_TLS and link " \
                     "-lssl -lcrypto"

#ifdef IMAPMEM_TLS
/* The newest OpenSSL error of this thread as text, for the transcript and errmsg. */
static const char *tls_error_text(char *out, size_t cap) {
  unsigned long e = ERR_peek_last_error();
  if (!e) snprintf(out, cap, "%s", errno ? strerror(errno) : "the connection ended");
  else ERR_error_string_n(e, out, cap);
  ERR_clear_error();
  return out;
}

/*
** Wait until the socket is readable (or writable) as OpenSSL asked, for at most ms.
** 1: go on; 0: timed out; -1: the server is stopping. Mailbox wake-ups are kept for
** session_wait in s->woken.
*/
static int tls_wait(struct session *s, int for_write, int ms) {
  for (;;) {
    struct pollfd pf[3] = {{for_write ? s->fd_out : s->fd, for_write ? POLLOUT : POLLIN, 0},
                           {s->wake[0], POLLIN, 0}, {s->srv->stop_pipe[0], POLLIN, 0}};
    int r = poll(pf, 3, ms);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return 0;
    if (pf[2].revents && server_stopping(s->srv)) return -1;
    if (pf[1].revents) {
      session_drain_wake(s);
      s->woken = 1;
      if (server_stopping(s->srv)) return -1;
    }
    if (pf[0].revents) return 1;
  }
}

static ssize_t tls_recv(struct session *s, char *p, size_t n) {
  for (;;) {
    size_t got = 0;
    ERR_clear_error();
    if (SSL_read_ex(s->ssl, p, n, &got)) return (ssize_t)got;
    int e = SSL_get_error(s->ssl, 0);
    if (e == SSL_ERROR_WANT_READ) {
      errno = EAGAIN;        /* session_wait polls again */
      return -1;
    }
    if (e == SSL_ERROR_WANT_WRITE && session_wait_writable(s)) continue;
    if (e == SSL_ERROR_ZERO_RETURN) return 0;   /* close_notify, or a bare EOF (see tls_new_ctx) */
    s->tls_failed = 1;
    char why[160];
    session_trace_event(s, "TLS read failed: %s", tls_error_text(why, sizeof why));
    errno = ECONNRESET;
    return -1;
  }
}

static ssize_t tls_send(struct session *s, const char *p, size_t n) {
  for (;;) {
    size_t put = 0;
    ERR_clear_error();
    if (SSL_write_ex(s->ssl, p, n, &put)) return (ssize_t)put;
    int e = SSL_get_error(s->ssl, 0);
    if (e == SSL_ERROR_WANT_WRITE) {
      errno = EAGAIN;        /* net_write waits, then retries with the same bytes */
      return -1;
    }
    if (e == SSL_ERROR_WANT_READ && tls_wait(s, 0, s->srv->cfg.idle_timeout * 1000) > 0)
      continue;
    s->tls_failed = 1;
    errno = EPIPE;
    return -1;
  }
}

/* Bytes OpenSSL has decrypted and not handed over: poll() cannot see them. */
static int tls_pending(struct session *s) {
  return SSL_pending(s->ssl) > 0;
}

/* One close_notify if it can go at once (the socket is non-blocking), then free. */
static void tls_close(struct session *s) {
  if (!s->tls_failed) {
    ERR_clear_error();
    SSL_shutdown(s->ssl);
  }
  SSL_free(s->ssl);
  s->ssl = NULL;
  s->tp = &plain_transport;
}

static const struct transport tls_transport = {tls_recv, tls_send, tls_pending, tls_close};

/*
** The handshake: 1 once TLS is on, 0 to end the session. It is bounded by
** IMAPMEM_TLS_HANDSHAKE_TIMEOUT, never longer than the idle timeout (RFC 9051 5.4 allows
** a server to drop a client that is not logged in), so a client that connects and never
** speaks TLS holds a thread only briefly.
*/
static int tls_start(struct session *s) {
  struct imapmem *srv = s->srv;
  int limit = IMAPMEM_TLS_HANDSHAKE_TIMEOUT < srv->cfg.idle_timeout ?
              IMAPMEM_TLS_HANDSHAKE_TIMEOUT : srv->cfg.idle_timeout;
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  ERR_clear_error();
  SSL *ssl = SSL_new(srv->tls_ctx);
  if (!ssl || !SSL_set_rfd(ssl, s->fd) || !SSL_set_wfd(ssl, s->fd_out)) {
    SSL_free(ssl);
    s->end_why = "TLS could not start: out of memory";
    return 0;
  }
  s->ssl = ssl;
  s->tp = &tls_transport;
  /* OpenSSL reads until a record is whole: on a blocking descriptor (the stdin pipe of
     --stdio-tls) that read could outlast the timeout and imapmem_stop() */
  fcntl(s->fd, F_SETFL, fcntl(s->fd, F_GETFL) | O_NONBLOCK);
  char why[160];
  for (;;) {
    ERR_clear_error();
    errno = 0;
    int r = SSL_accept(ssl);
    if (r == 1) break;
    int e = SSL_get_error(ssl, r);
    clock_gettime(CLOCK_MONOTONIC, &t);
    long left = limit * 1000L - ((t.tv_sec - t0.tv_sec) * 1000L +
                                 (t.tv_nsec - t0.tv_nsec) / 1000000L);
    if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) && left > 0) {
      int w = tls_wait(s, e == SSL_ERROR_WANT_WRITE, (int)left);
      if (w > 0) continue;
      s->end_why = w < 0 ? "the server is stopping" : "the TLS handshake timed out";
    } else if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      s->end_why = "the TLS handshake timed out";
    } else {
      session_trace_event(s, "TLS handshake failed: %s", tls_error_text(why, sizeof why));
      s->end_why = "the TLS handshake failed";
    }
    s->tls_failed = 1;
    return 0;
  }
  session_trace_event(s, "TLS started: %s, %s", SSL_get_version(ssl), SSL_get_cipher_name(ssl));
  return 1;
}

/* One X.509v3 extension from OpenSSL's configuration syntax ("critical,CA:TRUE"). */
static int tls_ext(X509 *x, X509 *issuer, int nid, const char *value) {
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
  X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
  int ok = e && X509_add_ext(x, e, -1);
  X509_EXTENSION_free(e);
  return ok;
}

/*
** A certificate for key named cn, valid from `from` to `to` seconds from now, signed by
** issuer and issuer_key (NULL: by itself). It carries what RFC 5280 profiles and strict
** verifiers (Python 3.13's VERIFY_X509_STRICT) want: basic constraints and key usage,
** both critical, subject and authority key identifiers, and for a server, serverAuth and
** the names in san.
*/
static X509 *tls_make_cert(EVP_PKEY *key, const char *cn, int ca, const char *san, long from,
                           long to, X509 *issuer, EVP_PKEY *issuer_key) {
  X509 *x = X509_new();
  unsigned char serial[16];
  BIGNUM *bn = NULL;
  if (x && RAND_bytes(serial, sizeof serial) == 1) {
    serial[0] = (unsigned char)((serial[0] & 0x7f) | 0x01);   /* RFC 5280 4.1.2.2: positive */
    bn = BN_bin2bn(serial, sizeof serial, NULL);
  }
  int ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) && X509_set_version(x, 2) &&
           X509_gmtime_adj(X509_getm_notBefore(x), from) &&
           X509_gmtime_adj(X509_getm_notAfter(x), to) && X509_set_pubkey(x, key) &&
           X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                                      (const unsigned char *)cn, -1, -1, 0) &&
           X509_set_issuer_name(x, X509_get_subject_name(issuer ? issuer : x)) &&
           tls_ext(x, issuer ? issuer : x, NID_basic_constraints,
                   ca ? "critical,CA:TRUE" : "critical,CA:FALSE") &&
           tls_ext(x, issuer ? issuer : x, NID_key_usage,
                   ca ? "critical,keyCertSign,cRLSign" : "critical,digitalSignature") &&
           tls_ext(x, issuer ? issuer : x, NID_subject_key_identifier, "hash") &&
           tls_ext(x, issuer ? issuer : x, NID_authority_key_identifier, "keyid:always") &&
           (ca || tls_ext(x, issuer ? issuer : x, NID_ext_key_usage, "serverAuth")) &&
           (!san || tls_ext(x, issuer ? issuer : x, NID_subject_alt_name, san)) &&
           X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0;
  BN_free(bn);
  if (!ok) {
    X509_free(x);
    return NULL;
  }
  return x;
}

/* A certificate as PEM text, which the caller frees; NULL if out of memory. */
static char *tls_pem(X509 *x) {
  BIO *b = BIO_new(BIO_s_mem());
  char *data, *out = NULL;
  if (b && PEM_write_bio_X509(b, x)) {
    long n = BIO_get_mem_data(b, &data);
    if (n > 0 && (out = mem_alloc((size_t)n + 1))) {
      memcpy(out, data, (size_t)n);
      out[n] = 0;
    }
  }
  BIO_free(b);
  return out;
}

/*
** The context every session's SSL comes from. TLS 1.2 is the minimum, set here rather
** than left to the library's configuration (RFC 8314 4.1, RFC 9051 11.1), and 1.3 is
** allowed; TLS 1.2 ciphers are ECDHE with AEAD only, RFC 9051 11.1's
** TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 among them for an RSA certificate. No
** renegotiation: a client cannot make a write wait for a read.
*/
static SSL_CTX *tls_new_ctx(void) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) return NULL;
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                      SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
      !SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) ||
      !SSL_CTX_set_cipher_list(ctx, "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
                               "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
                               "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")) {
    SSL_CTX_free(ctx);
    return NULL;
  }
  return ctx;
}

/* The "handshake" fault: every handshake fails with an alert, whatever the client offers. */
static int tls_refuse_hello(SSL *ssl, int *alert, void *arg) {
  (void)ssl;
  (void)arg;
  *alert = SSL_AD_HANDSHAKE_FAILURE;
  return SSL_CLIENT_HELLO_ERROR;
}

/*
** The generated certificates: a CA (what a client should trust, and what --tls-cert-out
** writes) and a leaf for localhost, 127.0.0.1 and ::1 that it signs, both on ECDSA P-256
** keys (fast to make: the ready line is not held up). The keys live only in memory. A
** fault gives the leaf exactly one defect; "self-signed" makes a leaf the CA did not sign.
*/
static int tls_generate(struct imapmem *srv, SSL_CTX *ctx, int fault, char *err, size_t cap) {
  static const long day = 24 * 3600;
  EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  X509 *leaf = NULL;
  if (!srv->tls_ca) {
    EVP_PKEY *ca_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *ca = ca_key ? tls_make_cert(ca_key, "imapmem test CA", 1, NULL, -day, 3650 * day,
                                      NULL, NULL) : NULL;
    char *pem = ca ? tls_pem(ca) : NULL;
    if (!pem) {
      X509_free(ca);
      EVP_PKEY_free(ca_key);
      EVP_PKEY_free(key);
      snprintf(err, cap, "cannot generate a CA certificate: out of memory");
      return IMAPMEM_NOMEM;
    }
    srv->tls_ca = ca;
    srv->tls_ca_key = ca_key;
    free(srv->tls_trust_pem);
    srv->tls_trust_pem = pem;
  }
  const char *san = fault == TLS_FAULT_WRONG_HOST ? "DNS:wrong-host.invalid"
                    : "DNS:localhost,IP:127.0.0.1,IP:::1";
  long from = -day, to = 397 * day;    /* the CA/Browser Forum's longest leaf */
  if (fault == TLS_FAULT_EXPIRED) from = -30 * day, to = -day;
  if (fault == TLS_FAULT_NOT_YET_VALID) from = day, to = 30 * day;
  int own = fault == TLS_FAULT_SELF_SIGNED;
  if (key)
    leaf = tls_make_cert(key, fault == TLS_FAULT_WRONG_HOST ? "wrong-host.invalid" : "localhost",
                         0, san, from, to, own ? NULL : srv->tls_ca, own ? NULL : srv->tls_ca_key);
  int ok = leaf && SSL_CTX_use_certificate(ctx, leaf) && SSL_CTX_use_PrivateKey(ctx, key) &&
           (own || SSL_CTX_add1_chain_cert(ctx, srv->tls_ca));
  X509_free(leaf);
  EVP_PKEY_free(key);
  if (!ok) {
    snprintf(err, cap, "cannot generate a certificate: out of memory");
    return IMAPMEM_NOMEM;
  }
  if (fault == TLS_FAULT_HANDSHAKE) SSL_CTX_set_client_hello_cb(ctx, tls_refuse_hello, NULL);
  return IMAPMEM_OK;
}

/* A given certificate (then its chain, if any) and key, in PEM. */
static int tls_use_pem(struct imapmem *srv, SSL_CTX *ctx, const char *cert_pem,
                       const char *key_pem, char *err, size_t cap) {
  BIO *cb = BIO_new_mem_buf(cert_pem, -1), *kb = BIO_new_mem_buf(key_pem, -1);
  X509 *leaf = cb ? PEM_read_bio_X509(cb, NULL, NULL, NULL) : NULL;
  EVP_PKEY *key = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
  char why[160];
  int rc = IMAPMEM_OK;
  if (!leaf) {
    snprintf(err, cap, "the certificate is not a PEM certificate: %s",
             tls_error_text(why, sizeof why));
    rc = IMAPMEM_PARSE;
  } else if (!key) {
    snprintf(err, cap, "the key is not a PEM private key (encrypted keys are not read): %s",
             tls_error_text(why, sizeof why));
    rc = IMAPMEM_PARSE;
  } else if (!SSL_CTX_use_certificate(ctx, leaf) || !SSL_CTX_use_PrivateKey(ctx, key) ||
             !SSL_CTX_check_private_key(ctx)) {
    snprintf(err, cap, "the certificate and key do not go together: %s",
             tls_error_text(why, sizeof why));
    rc = IMAPMEM_PARSE;
  } else {
    X509 *more;
    while (rc == IMAPMEM_OK && (more = PEM_read_bio_X509(cb, NULL, NULL, NULL)) != NULL)
      if (!SSL_CTX_add0_chain_cert(ctx, more)) {
        X509_free(more);
        snprintf(err, cap, "cannot use the certificate chain");
        rc = IMAPMEM_ERROR;
      }
    ERR_clear_error();       /* the end of the PEM text ends the chain */
    free(srv->tls_trust_pem);
    srv->tls_trust_pem = tls_pem(leaf);
    if (rc == IMAPMEM_OK && !srv->tls_trust_pem) {
      snprintf(err, cap, "out of memory");
      rc = IMAPMEM_NOMEM;
    }
  }
  X509_free(leaf);
  EVP_PKEY_free(key);
  BIO_free(cb);
  BIO_free(kb);
  return rc;
}

/* Free the server's TLS state (imapmem_free, or before it is configured again). */
static void tls_forget(struct imapmem *srv) {
  SSL_CTX_free(srv->tls_ctx);
  X509_free(srv->tls_ca);
  EVP_PKEY_free(srv->tls_ca_key);
  free(srv->tls_trust_pem);
  srv->tls_ctx = NULL;
  srv->tls_ca = NULL;
  srv->tls_ca_key = NULL;
  srv->tls_trust_pem = NULL;
}

/*
** Make the server serve TLS: with cert_pem and key_pem, those; with both NULL, generated
** ones with the given fault (TLS_FAULT_*). Returns an IMAPMEM_ code, err saying why.
*/
static int tls_configure(struct imapmem *srv, const char *cert_pem, const char *key_pem,
                         int fault, char *err, size_t cap) {
  SSL_CTX *ctx = tls_new_ctx();
  if (!ctx) {
    snprintf(err, cap, "cannot set up TLS: out of memory");
    return IMAPMEM_NOMEM;
  }
  int rc = cert_pem ? tls_use_pem(srv, ctx, cert_pem, key_pem, err, cap)
                    : tls_generate(srv, ctx, fault, err, cap);
  if (rc != IMAPMEM_OK) {
    SSL_CTX_free(ctx);
    return rc;
  }
  if (cert_pem) {            /* the generated CA, if any, is of no more use */
    X509_free(srv->tls_ca);
    EVP_PKEY_free(srv->tls_ca_key);
    srv->tls_ca = NULL;
    srv->tls_ca_key = NULL;
  }
  SSL_CTX_free(srv->tls_ctx);
  srv->tls_ctx = ctx;
  return IMAPMEM_OK;
}

/* The library serving TLS, for imapmem_tls_library(). */
static const char *tls_library(void) {
  return OpenSSL_version(OPENSSL_VERSION);
}
#else
/* Without IMAPMEM_TLS: nothing ever asks for TLS but the API, which is told why not. */
static int tls_start(struct session *s) {
  s->end_why = "no TLS in this build";
  return 0;
}

static void tls_forget(struct imapmem *srv) {
  (void)srv;
}

static int tls_configure(struct imapmem *srv, const char *cert_pem, const char *key_pem,
                         int fault, char *err, size_t cap) {
  (void)srv;
  (void)cert_pem;
  (void)key_pem;
  (void)fault;
  snprintf(err, cap, "%s", TLS_NO_BUILD);
  return IMAPMEM_MISUSE;
}

static const char *tls_library(void) {
  return NULL;
}
#endif

static int net_write(struct session *s, const char *p, size_t n) {
  if (atomic_load(&s->srv->tracing)) session_trace_out(s, p, n);
  int chunk = atomic_load(&s->srv->chunk);   /* "chunk=n" fault: tiny writes */
  while (n) {
    size_t k = chunk > 0 && (size_t)chunk < n ? (size_t)chunk : n;
    ssize_t w = s->tp->send(s, p, k);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (session_wait_writable(s)) continue;
      w = -1;
    }
    if (w <= 0) {
      s->closing = 1;
      if (!s->end_why) s->end_why = "the client does not take what is written";
      return 0;
    }
    p += w;
    n -= (size_t)w;
  }
  return 1;
}

/* Write what is buffered. 0 if the connection is gone. Never call with a lock held. */
static int net_flush(struct session *s) {
  if (s->out.oom) {          /* a reply was lost: say so and end this session only */
    buf_reset(&s->out);
    s->out.oom = 0;
    buf_adds(&s->out, "* BYE Out of memory\r\n");
    s->closing = 1;
  }
  int delay = atomic_load(&s->srv->delay_ms);   /* "delay=ms" fault */
  if (delay > 0 && s->out.len) {
    session_trace_event(s, "fault delay=%d: the response waits %d ms", delay, delay);
    sleep_ms(delay);
  }
  int ok = s->out.len == 0 || net_write(s, s->out.p, s->out.len);
  buf_reset(&s->out);
  if (s->out.cap > (1u << 20)) buf_free(&s->out);   /* do not keep a huge buffer */
  return ok && !s->closing;
}


static void session_wake(struct session *s) {
  if (s->wake[1] < 0) return;   /* never: watchers are added after session_wake_open */
  ssize_t r = write(s->wake[1], "x", 1);
  (void)r;                   /* a full pipe already holds a wake-up */
}

/* Wake a session from poll(): section 3 calls this through its watcher. */
static void session_wake_watcher(struct watcher *w) {
  session_wake((struct session *)((char *)w - offsetof(struct session, watch)));
}

/* ... and this through its NOTIFY watcher (RFC 5465). */
static void session_wake_notify(struct watcher *w) {
  session_wake((struct session *)((char *)w - offsetof(struct session, notify_watch)));
}

/*
** Wait until the socket is readable. Returns 1 readable, 0 timed out, -3 woken by a
** mailbox change (only if wake_ok), -4 the server is stopping, -5 the selected mailbox
** went away (deleted, reset or given a new UIDVALIDITY).
*/
static int session_wait(struct session *s, int wake_ok) {
  int timeout = s->srv->cfg.idle_timeout * 1000;
  if (s->tp->pending(s)) return 1;   /* TLS already holds it: poll() would wait in vain */
  for (;;) {
    struct pollfd pf[3] = {{s->fd, POLLIN, 0}, {s->wake[0], POLLIN, 0},
                           {s->srv->stop_pipe[0], POLLIN, 0}};
    int woken = s->woken;    /* taken from the pipe while a write waited */
    s->woken = 0;
    if (!woken) {
      int r = poll(pf, 3, timeout);
      if (r < 0 && errno == EINTR) continue;
      if (r == 0) return 0;
      if (r < 0) return 1;   /* let read() report the error */
      if (pf[1].revents) {
        session_drain_wake(s);
        woken = 1;
      }
      if (pf[2].revents) woken = 1;   /* imapmem_stop(); the byte stays for the others */
    }
    if (woken) {
      if (server_stopping(s->srv)) return -4;
      if (wake_ok) return -3;
      if (s->mb) {           /* its mailbox was deleted, reset, renumbered: end now */
        pthread_mutex_lock(&s->mb->lock);
        int gone = s->mb->epoch != s->epoch;
        pthread_mutex_unlock(&s->mb->lock);
        if (gone) return -5;
      }
    }
    if (pf[0].revents) return 1;
  }
}

#define SESSION_IN 16384
/* Make at least one more byte available in s->in. Returns as session_wait, or -1. */
static int session_fill(struct session *s, int wake_ok) {
  if (s->inpos == s->inlen) s->inpos = s->inlen = 0;
  int w = session_wait(s, wake_ok);
  if (w == 0) {
    session_send(s, "* BYE Autologout: idle for too long\r\n");
    s->end_why = "autologout";
    return -1;
  }
  if (w < 0) return w;
  ssize_t r;
  do {
    r = s->tp->recv(s, s->in + s->inlen, SESSION_IN - s->inlen);
  } while (r < 0 && errno == EINTR);
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 1;   /* nothing after all */
  if (r <= 0) {
    if (!s->end_why) s->end_why = r == 0 ? "the client closed the connection" : "a read error";
    return -1;
  }
  s->inlen += (size_t)r;
  return 1;
}

/*
** Read one line without its CRLF into line. Returns its length, or -1 (connection gone
** or timed out), -2 (longer than max: the first max bytes are kept, the rest of the line
** is read and dropped), -3 (woken by a mailbox change; wake_ok only), -4 (stopping).
*/
static int net_read_line(struct session *s, struct buf *line, size_t max, int wake_ok) {
  buf_reset(line);
  int toolong = 0;
  for (;;) {
    char *start = s->in + s->inpos;
    char *nl = memchr(start, '\n', s->inlen - s->inpos);
    size_t take = nl ? (size_t)(nl - start) : s->inlen - s->inpos;
    if (!toolong) {
      if (line->len + take > max) {
        buf_add(line, start, max - line->len);
        toolong = 1;
      } else {
        buf_add(line, start, take);
      }
    }
    s->inpos += take + (nl ? 1 : 0);
    if (nl) break;
    int r = session_fill(s, wake_ok && line->len == 0);
    if (r < 0) return r;
  }
  if (line->oom) return -1;
  if (line->len && line->p[line->len - 1] == '\r') line->p[--line->len] = 0;
  if (toolong) return -2;
  return (int)(line->len > INT_MAX ? INT_MAX : line->len);
}

static int session_read_bytes(struct session *s, struct buf *b, size_t n) {
  while (n) {
    if (s->inpos == s->inlen) {
      int r = session_fill(s, 0);
      if (r < 0) return r;
    }
    size_t take = s->inlen - s->inpos < n ? s->inlen - s->inpos : n;
    buf_add(b, s->in + s->inpos, take);
    s->inpos += take;
    n -= take;
  }
  return b->oom ? -1 : 1;
}

/* The tag at the start of a command that is being refused, or "*". */
static void session_refuse_as(struct session *s, const struct buf *cmd, const char *status,
                              const char *why) {
  size_t n = 0;
  while (n < cmd->len && n < 64 && is_tag_char((unsigned char)cmd->p[n])) n++;
  if (n == 0 || n >= cmd->len || cmd->p[n] != ' ') session_send(s, "* BAD %s\r\n", why);
  else session_send(s, "%.*s %s %s\r\n", (int)n, cmd->p, status, why);
}

static void session_refuse(struct session *s, const struct buf *cmd, const char *why) {
  session_refuse_as(s, cmd, "BAD", why);
}

static void session_refuse_no(struct session *s, const struct buf *cmd, const char *why) {
  session_refuse_as(s, cmd, "NO", why);
}

/* Skip n bytes of input: a literal that was refused but is sent anyway. */
static int session_skip_bytes(struct session *s, uint64_t n) {
  while (n) {
    if (s->inpos == s->inlen) {
      int r = session_fill(s, 0);
      if (r < 0) return r;
    }
    size_t take = s->inlen - s->inpos < n ? s->inlen - s->inpos : (size_t)n;
    s->inpos += take;
    n -= take;
  }
  return 1;
}

/*
** Is the command being read an APPEND ("tag APPEND ...")? Its literals but the mailbox
** name have APPENDLIMIT. Returns the length of "tag APPEND ", where the name starts, or 0.
*/
static size_t session_reading_append(const struct buf *cmd) {
  size_t n = 0;
  while (n < cmd->len && is_tag_char((unsigned char)cmd->p[n])) n++;
  return n && cmd->len - n > 8 && strncasecmp(cmd->p + n, " APPEND ", 8) == 0 ? n + 8 : 0;
}

/*
** Read one whole command into s->cmd, literals inline (RFC 3501 7.5: a synchronizing
** literal gets "+" only once its size is accepted). Returns 1 to execute it, 0 if it was
** refused (the reply is queued), or <0 to end the session.
**
** A non-synchronizing literal that cannot be taken comes anyway. Over 4096 bytes on a
** LITERAL- server, it is read and thrown away with the rest of the command, which is
** answered BAD [TOOBIG] (RFC 7888 5 and 4, choice 1): its bytes are never taken for
** commands. A synchronizing literal of an APPEND over APPENDLIMIT is refused before the
** "+" with NO [TOOBIG] (RFC 7889 4).
*/
static int session_read_command(struct session *s) {
  struct buf line = {0};
  size_t max_lit = s->srv->cfg.max_literal, traced = 0;   /* bytes of s->cmd in the transcript */
  int tracing = atomic_load(&s->srv->tracing), skipping = 0;
  buf_reset(&s->cmd);
  s->trace_words = 0;
  s->trace_secret = 0;
  for (;;) {
    /* with NOTIFY, a wake-up before a command begins is told at once (RFC 5465 3.1) */
    int r = net_read_line(s, &line, IMAPMEM_MAX_LINE, s->notify && s->cmd.len == 0);
    if (r == -2) {
      buf_add(&s->cmd, line.p, line.len);
      if (tracing) session_trace(s, 'C', "(a line too long)", 17);
      session_refuse(s, &s->cmd, "Command line too long");
      buf_free(&line);
      return 0;
    }
    if (r < 0) {
      buf_free(&line);
      return r;
    }
    if (!skipping) buf_add(&s->cmd, line.p, line.len);
    uint64_t size;
    int plus;
    size_t at = literal_announced(line.p ? line.p : "", line.len, &size, &plus);
    if (at == line.len) break;
    if (skipping) {          /* the rest of a refused command, up to a literal that waits */
      if (!plus) break;      /* for a "+" it will not get (RFC 3501 7.5) */
      r = session_skip_bytes(s, size);
      if (r < 0) {
        buf_free(&line);
        return r;
      }
      continue;
    }
    if (plus && !cap_on(s->srv, CAP_LITERALPLUS) && !cap_on(s->srv, CAP_LITERALMINUS)) {
      session_send(s, "* BYE Non-synchronizing literals are switched off (no LITERAL+)\r\n");
      buf_free(&line);       /* the bytes follow regardless: the stream is lost */
      return -1;
    }
    if (plus && size > LITERAL_MINUS_MAX && !cap_on(s->srv, CAP_LITERALPLUS)) {
      if (tracing) session_trace_command(s, s->cmd.p + traced, s->cmd.len - traced);
      r = session_skip_bytes(s, size);
      if (r < 0) {
        buf_free(&line);
        return r;
      }
      skipping = 1;
      continue;
    }
    if (size > max_lit || s->cmd.len + size > max_lit + 16 * IMAPMEM_MAX_LINE) {
      if (plus) {            /* the client sends it anyway: the stream is lost */
        session_send(s, "* BYE [TOOBIG] Literal too large (limit %zu bytes)\r\n", max_lit);
        buf_free(&line);
        return -1;
      }
      char why[96];          /* BAD: past what any command may send (RFC 7888 5's code) */
      snprintf(why, sizeof why, "[TOOBIG] Literal too large (limit %zu bytes)", max_lit);
      session_refuse(s, &s->cmd, why);
      buf_free(&line);
      return 0;
    }
    size_t limit = atomic_load(&s->srv->append_limit), name_at = session_reading_append(&s->cmd);
    if (!plus && size > limit && name_at && name_at != s->cmd.len - (line.len - at)) {
      char why[96];
      snprintf(why, sizeof why, "[TOOBIG] APPEND The message is larger than APPENDLIMIT=%zu",
               limit);
      session_refuse_no(s, &s->cmd, why);
      buf_free(&line);
      return 0;
    }
    if (!plus) {
      if (tracing) {         /* the command so far, then the "+" that answers it */
        session_trace_command(s, s->cmd.p + traced, s->cmd.len - traced);
        traced = s->cmd.len - (line.len - at);   /* the next piece starts "{n}" */
      }
      session_send(s, "+ Ready for literal data\r\n");
      if (!net_flush(s)) {
        buf_free(&line);
        return -1;
      }
    }
    buf_add(&s->cmd, "\r\n", 2);
    r = session_read_bytes(s, &s->cmd, (size_t)size);
    if (r < 0) {
      buf_free(&line);
      return r;
    }
  }
  buf_free(&line);
  if (skipping) {
    session_refuse(s, &s->cmd, "[TOOBIG] Non-synchronizing literals are limited to 4096 bytes "
                   "(LITERAL-)");
    return 0;
  }
  if (s->cmd.oom) {
    buf_free(&s->cmd);
    session_send(s, "* BAD Out of memory for this command\r\n");
    return 0;
  }
  if (tracing) session_trace_command(s, s->cmd.p + traced, s->cmd.len - traced);
  return 1;
}

/* Who is at the other end, for the transcript: "from ADDR:PORT", or the descriptors. */
static void session_peer(struct session *s, char *out, size_t cap) {
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  char host[INET6_ADDRSTRLEN], serv[16];
  if (getpeername(s->fd, (struct sockaddr *)&ss, &sl) == 0 &&
      (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) &&
      getnameinfo((struct sockaddr *)&ss, sl, host, sizeof host, serv, sizeof serv,
                  NI_NUMERICHOST | NI_NUMERICSERV) == 0)
    snprintf(out, cap, "from %s%s%s:%s", ss.ss_family == AF_INET6 ? "[" : "", host,
             ss.ss_family == AF_INET6 ? "]" : "", serv);
  else
    snprintf(out, cap, "on descriptors %d and %d", s->fd, s->fd_out);
}

static void session_run(struct session *s) {
  char caps[CAPS_MAX], peer[96];
  if (atomic_load(&s->srv->tracing)) {
    session_peer(s, peer, sizeof peer);
    session_trace_event(s, "connected %s", peer);
  }
  if (s->implicit_tls && !tls_start(s)) {   /* RFC 8314 3.3: TLS before the greeting */
    session_trace_event(s, "disconnected: %s", s->end_why);
    return;
  }
  capabilities(s->srv, s, caps, sizeof caps);
  struct str pre = str_make(s->preauth ? s->preauth : "", s->preauth ? strlen(s->preauth) : 0);
  if (s->preauth && (s->user = server_user(s->srv, pre)) != NULL) {
    s->state = ST_AUTH;      /* RFC 3501 7.1.4: already authenticated */
    session_publish(s);
    session_send(s, "* PREAUTH [CAPABILITY %s] imapmem ready, logged in as %s\r\n", caps,
                 s->preauth);
  } else {
    session_send(s, "* OK [CAPABILITY %s] imapmem ready\r\n", caps);
  }
  net_flush(s);
  while (!s->closing && s->state != ST_LOGOUT) {
    int r = session_read_command(s);
    if (r == -3) {           /* NOTIFY: something changed while no command was running */
      notify_poll(s, 1);
      arena_free(&s->arena);
      if (!net_flush(s)) break;
      continue;
    }
    if (r == -4) {
      session_send(s, "* BYE imapmem is shutting down\r\n");
      s->end_why = "the server is stopping";
    }
    if (r == -5) {
      session_sync(s, 0);    /* says "* BYE Selected mailbox was ..." */
      s->end_why = "the selected mailbox went away";
    }
    if (r < 0) break;
    if (r > 0 && s->cmd.len == 0) session_send(s, "* BAD Empty command line\r\n");
    else if (r > 0) session_execute(s);
    arena_free(&s->arena);
    if (!net_flush(s)) break;
    if (s->cmd.cap > (1u << 20)) buf_free(&s->cmd);
    if (s->starttls) {       /* the OK went out in plain text; now the handshake */
      s->starttls = 0;
      if (s->inpos < s->inlen)   /* RFC 9051 6.2.1: pipelined plaintext is never a command */
        session_trace_event(s, "discarded %zu bytes sent after STARTTLS before TLS",
                            s->inlen - s->inpos);
      s->inpos = s->inlen = 0;
      if (!tls_start(s)) break;
    }
  }
  net_flush(s);
  session_unselect(s);
  if (s->state == ST_LOGOUT && !s->end_why) s->end_why = "LOGOUT";
  session_trace_event(s, "disconnected: %s", s->end_why ? s->end_why : "the connection ended");
}

/* Close the connection: the client sees its end at once, even if it holds a copy. */
static void session_close(struct session *s) {
  s->tp->close(s);           /* TLS says close_notify first */
  if (s->fd_out >= 0 && s->fd_out != s->fd) {
    if (s->out_socket) shutdown(s->fd_out, SHUT_RDWR);
    close(s->fd_out);
  }
  if (s->fd >= 0) {
    shutdown(s->fd, SHUT_RDWR);   /* ENOTSOCK for a pipe: harmless */
    close(s->fd);
  }
  s->fd = s->fd_out = -1;
}

static void *session_thread(void *arg) {
  struct session *s = arg;
  sigset_t pipe_sig;         /* a peer gone from a pipe gives EPIPE, never kills the process */
  sigemptyset(&pipe_sig);
  sigaddset(&pipe_sig, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_sig, NULL);
  session_run(s);
  session_close(s);          /* only this thread ever closes the session's descriptors */
  atomic_fetch_sub(&s->srv->nactive, 1);
  atomic_store(&s->finished, 1);
  store_changed(s->srv);
  return NULL;
}

/* Free a session whose thread has been joined (or never started). */
static void session_free(struct session *s) {
  if (!s) return;
  session_notify_off(s);     /* before its wake pipe closes */
  session_close(s);
  if (s->wake[0] >= 0) close(s->wake[0]);
  if (s->wake[1] >= 0) close(s->wake[1]);
  buf_free(&s->out);
  buf_free(&s->cmd);
  buf_free(&s->trace_line);
  session_contexts_free(s);
  session_saved_clear(s);
  arena_free(&s->arena);
  free(s->in);
  free((char *)s->preauth);
  free(s->view);
  free(s);
}

static const struct session_io net_io = {net_flush, net_write, net_read_line};

static struct session *session_new(struct imapmem *srv, int fd, int fd_out) {
  struct session *s = mem_calloc(1, sizeof *s);
  if (!s) return NULL;
  if (!(s->in = mem_alloc(SESSION_IN))) {
    free(s);
    return NULL;
  }
  s->io = &net_io;
  s->tp = &plain_transport;
  s->srv = srv;
  s->fd = fd;
  s->fd_out = fd_out;
  s->state = ST_NOTAUTH;
  s->watch.wake = session_wake_watcher;
  s->notify_watch.wake = session_wake_notify;
  /* Output to a socket or pipe never blocks: a full one is waited for with poll(), which
     imapmem_stop() can interrupt. Files and terminals are written as they are. */
  struct stat st;
  if (fstat(fd_out, &st) == 0 && (S_ISSOCK(st.st_mode) || S_ISFIFO(st.st_mode)))
    fcntl(fd_out, F_SETFL, fcntl(fd_out, F_GETFL) | O_NONBLOCK);
  s->out_socket = fstat(fd_out, &st) == 0 && S_ISSOCK(st.st_mode);
  s->wake[0] = s->wake[1] = -1;   /* session_wake_open makes them when needed */
  atomic_init(&s->finished, 0);
  return s;
}

/* Join and free sessions whose threads have ended. Caller holds srv->lock. */
static void server_reap_locked(struct imapmem *srv) {
  size_t w = 0;
  for (size_t i = 0; i < srv->nsessions; i++) {
    struct session *s = srv->sessions[i];
    if (atomic_load(&s->finished)) {
      pthread_join(s->thread, NULL);
      session_free(s);
    } else {
      srv->sessions[w++] = s;
    }
  }
  srv->nsessions = w;
}

/*
** Start a session thread on the descriptors; the session owns them from now on, even
** on failure. tls: 0 never (imapmem_serve_fd), 1 STARTTLS may start it (the plain port),
** 2 from the first byte (the imaps port). Returns an IMAPMEM_ code.
*/
static int server_add_session(struct imapmem *srv, int fd, int fd_out, const char *preauth,
                              int tls) {
  pthread_mutex_lock(&srv->lock);
  server_reap_locked(srv);
  struct session *s = session_new(srv, fd, fd_out);
  if (s) {
    s->starttls_ok = tls == 1;
    s->implicit_tls = tls == 2;
  }
  if (!s || (preauth && !(s->preauth = mem_strdup(preauth))) ||
      !mem_grow(&srv->sessions, &srv->capsessions, srv->nsessions + 1, sizeof srv->sessions[0])) {
    pthread_mutex_unlock(&srv->lock);
    if (s) session_free(s);
    else {
      close(fd);
      if (fd_out != fd) close(fd_out);
    }
    return IMAPMEM_NOMEM;
  }
  s->id = ++srv->next_session_id;
  atomic_fetch_add(&srv->nactive, 1);
  if (pthread_create(&s->thread, NULL, session_thread, s) != 0) {
    atomic_fetch_sub(&srv->nactive, 1);
    pthread_mutex_unlock(&srv->lock);
    session_free(s);
    return IMAPMEM_ERROR;
  }
  srv->sessions[srv->nsessions++] = s;
  pthread_mutex_unlock(&srv->lock);
  return IMAPMEM_OK;
}

static void server_accept(struct imapmem *srv, int fd, int implicit_tls) {
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (atomic_load(&srv->nactive) >= srv->cfg.max_connections) {
    static const char bye[] = "* BYE Too many connections\r\n";
    if (!implicit_tls) {     /* an imaps client expects TLS: it gets only the close */
      ssize_t r = send(fd, bye, sizeof bye - 1, MSG_NOSIGNAL);
      (void)r;
    }
    close(fd);
    return;
  }
  server_add_session(srv, fd, fd, NULL, implicit_tls ? 2 : 1);
}

static void *accept_thread(void *arg) {
  struct imapmem *srv = arg;
  for (;;) {
    /* the plain port, the imaps port (-1, which poll() skips, if none) */
    struct pollfd pf[3] = {{srv->listen_fd, POLLIN, 0}, {srv->imaps_fd, POLLIN, 0},
                           {srv->wake[0], POLLIN, 0}};
    int r = poll(pf, 3, -1);
    if (r < 0 && errno != EINTR) break;
    if (pf[2].revents) break;          /* imapmem_stop() */
    for (int i = 0; i < 2 && r > 0; i++) {
      if (!pf[i].revents) continue;
      int fd = accept(pf[i].fd, NULL, NULL);
      if (fd >= 0) server_accept(srv, fd, i == 1);
      else if (errno == EMFILE || errno == ENFILE) {
        struct timespec ts = {0, 10 * 1000 * 1000};   /* out of descriptors: back off */
        nanosleep(&ts, NULL);
      }
    }
  }
  return NULL;
}

/*
** ===========================================================================
** 11  The public API (imapmem.h)
** ===========================================================================
** Owns: struct imapmem as a whole, and the error text of API calls.
** Calls: sections 1, 3-6, 9 and 10.
** Locking: as each function's comment in imapmem.h says.
**
** Every function checks its arguments, returns a code, and leaves the details for
** imapmem_errmsg(); none prints, exits or aborts. The error text is kept per thread (and
** per handle within it), so that threads sharing one server never read each other's
** text, nor a text being written.
*/
static _Thread_local struct {
  const struct imapmem *srv;  /* the handle the text is about (NULL: none was given) */
  char text[512];
} api_last_error;

/* Every non-OK return of the API goes through here. */
static int PRINTF_LIKE(3, 4) api_error(struct imapmem *srv, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  api_last_error.srv = srv;
  vsnprintf(api_last_error.text, sizeof api_last_error.text, fmt, ap);
  va_end(ap);
  return code;
}

const char *imapmem_version(void) {
  return IMAPMEM_VERSION;
}

const char *imapmem_errstr(int code) {
  switch (code) {
  case IMAPMEM_OK: return "no error";
  case IMAPMEM_ERROR: return "error";
  case IMAPMEM_NOMEM: return "out of memory";
  case IMAPMEM_IO: return "input/output error";
  case IMAPMEM_PARSE: return "malformed fixture";
  case IMAPMEM_NOTFOUND: return "not found";
  case IMAPMEM_EXISTS: return "already exists";
  case IMAPMEM_MISUSE: return "misuse of the API";
  default: return "unknown result code";
  }
}

const char *imapmem_errmsg(imapmem *srv) {
  return api_last_error.srv == srv ? api_last_error.text : "";
}

int imapmem_new(const struct imapmem_config *config, imapmem **out) {
  if (!out) return api_error(NULL, IMAPMEM_MISUSE, "imapmem_new: out is NULL");
  *out = NULL;
  struct imapmem_config cfg = {0};
  if (config) cfg = *config;
  /* Every later computation with these (milliseconds for poll(), sums of sizes) fits. */
  if (cfg.max_connections < 0 || cfg.idle_timeout < 0 || cfg.idle_timeout > IMAPMEM_MAX_IDLE ||
      cfg.max_literal > IMAPMEM_MAX_LITERAL_LIMIT || cfg.imap_version < 0 ||
      cfg.imap_version > IMAPMEM_REV2_ONLY)
    return api_error(NULL, IMAPMEM_MISUSE, "imapmem_new: a setting is out of range "
                     "(max_connections >= 0, idle_timeout 0-%d, max_literal 0-%lu, "
                     "imap_version 0-2)", IMAPMEM_MAX_IDLE,
                     (unsigned long)IMAPMEM_MAX_LITERAL_LIMIT);
  struct imapmem *srv = mem_calloc(1, sizeof *srv);
  if (!srv) return api_error(NULL, IMAPMEM_NOMEM, "imapmem_new: out of memory");
  srv->cfg = cfg;
  if (!srv->cfg.max_connections) srv->cfg.max_connections = 1000;
  if (!srv->cfg.idle_timeout) srv->cfg.idle_timeout = 1800;
  if (!srv->cfg.max_literal) srv->cfg.max_literal = IMAPMEM_MAX_LITERAL;
  pthread_mutex_init(&srv->lock, NULL);
  pthread_mutex_init(&srv->wait_lock, NULL);
  pthread_cond_init(&srv->wait_cond, NULL);
  srv->listen_fd = -1;
  srv->port = -1;
  srv->imaps_fd = srv->imaps_port = srv->imaps_want = -1;
  srv->wake[0] = srv->wake[1] = -1;
  if (pipe(srv->stop_pipe) < 0) {
    int e = errno;
    srv->stop_pipe[0] = srv->stop_pipe[1] = -1;
    imapmem_free(srv);
    return api_error(NULL, IMAPMEM_IO, "imapmem_new: pipe: %s", strerror(e));
  }
  for (int i = 0; i < 2; i++) {
    fcntl(srv->stop_pipe[i], F_SETFL, O_NONBLOCK);
    fcntl(srv->stop_pipe[i], F_SETFD, FD_CLOEXEC);
  }
  atomic_init(&srv->nactive, 0);
  atomic_init(&srv->caps_off, CAPS_OFF_AT_START |
              (cfg.imap_version == IMAPMEM_REV1_ONLY ? CAP_IMAP4REV2 : 0) |
              (cfg.imap_version == IMAPMEM_REV2_ONLY ? CAP_IMAP4REV1 : 0));
  atomic_init(&srv->append_limit, srv->cfg.max_literal);
  srv->events = 1;           /* a mark is never 0, which means "now" in imapmem_wait */
  snprintf(srv->ns_other, sizeof srv->ns_other, "Other Users/");   /* RFC 2342 5 */
  snprintf(srv->ns_shared, sizeof srv->ns_shared, "Shared/");
  if (!(srv->shared = user_new("", ""))) {
    imapmem_free(srv);
    return api_error(NULL, IMAPMEM_NOMEM, "imapmem_new: out of memory");
  }
  srv->shared->srv = srv;
  atomic_init(&srv->last_uidvalidity,
              srv->cfg.uidvalidity ? srv->cfg.uidvalidity : (uint32_t)time(NULL));
  *out = srv;
  return IMAPMEM_OK;
}

static struct user *api_user(struct imapmem *srv, const char *name) {
  return server_user(srv, str_make(name, strlen(name)));
}

int imapmem_add_user(imapmem *srv, const char *name, const char *password) {
  if (!srv || !name || !password || !*name)
    return api_error(srv, IMAPMEM_MISUSE, "imapmem_add_user: NULL argument or empty name");
  if (api_user(srv, name)) return api_error(srv, IMAPMEM_EXISTS, "user %s exists already", name);
  struct user *u = user_new(name, password);
  int exists;
  if (!u) return api_error(srv, IMAPMEM_NOMEM, "out of memory");
  u->srv = srv;
  uint32_t uv = srv->cfg.uidvalidity;     /* else the same in every run, as for fixtures */
  if (!uv) uv = uidvalidity_from(name, strlen(name), "INBOX");
  if (!user_create_locked(u, "INBOX", 1, uv, &exists) || !user_baseline(u, 0)) {
    user_free(u);
    return api_error(srv, IMAPMEM_NOMEM, "out of memory");
  }
  pthread_mutex_lock(&srv->lock);
  int taken = 0;             /* checked again: another thread may have added it meanwhile */
  for (size_t i = 0; i < srv->nusers && !taken; i++) taken = !strcmp(srv->users[i]->name, name);
  int ok = !taken && mem_grow(&srv->users, &srv->capusers, srv->nusers + 1, sizeof srv->users[0]);
  if (ok) srv->users[srv->nusers++] = u;
  pthread_mutex_unlock(&srv->lock);
  if (!ok) {
    user_free(u);
    if (taken) return api_error(srv, IMAPMEM_EXISTS, "user %s exists already", name);
    return api_error(srv, IMAPMEM_NOMEM, "out of memory");
  }
  return IMAPMEM_OK;
}

int imapmem_set_oauth_token(imapmem *srv, const char *user, const char *token) {
  if (!srv || !user) return api_error(srv, IMAPMEM_MISUSE, "imapmem_set_oauth_token: NULL argument");
  if (token && (!*token || strpbrk(token, "\x01\r\n")))
    return api_error(srv, IMAPMEM_MISUSE, "imapmem_set_oauth_token: empty token, or one with "
                     "a control character");
  struct user *u = api_user(srv, user);
  if (!u) return api_error(srv, IMAPMEM_NOTFOUND, "no such user: %s", user);
  char *copy = token ? mem_strdup(token) : NULL;
  if (token && !copy) return api_error(srv, IMAPMEM_NOMEM, "out of memory");
  pthread_mutex_lock(&srv->lock);
  char *old = u->oauth_token;
  u->oauth_token = copy;
  pthread_mutex_unlock(&srv->lock);
  free(old);
  return IMAPMEM_OK;
}

int imapmem_set_admin(imapmem *srv, const char *user, int on) {
  if (!srv || !user) return api_error(srv, IMAPMEM_MISUSE, "imapmem_set_admin: NULL argument");
  struct user *u = api_user(srv, user);
  if (!u) return api_error(srv, IMAPMEM_NOTFOUND, "no such user: %s", user);
  atomic_store(&u->admin, on != 0);
  return IMAPMEM_OK;
}

/* imapmem_load() into u: a user's mailboxes, or the shared tree. */
static int api_load(struct imapmem *srv, struct user *u, const char *path) {
  struct stat st;
  if (stat(path, &st) < 0)
    return api_error(srv, IMAPMEM_IO, "%s: cannot read: %s", path, strerror(errno));
  struct mbox_batch *list = NULL;
  char err[600], **subs = NULL, **use_names = NULL;
  unsigned *uses = NULL;
  size_t nsubs = 0, nuses = 0, nacl = 0;
  struct acl_line *acl = NULL;
  int rc;
  if (S_ISDIR(st.st_mode)) {
    size_t n = strlen(path);
    char dir[4096];
    snprintf(dir, sizeof dir, "%.*s", (int)(n > 1 && path[n - 1] == '/' ? n - 1 : n), path);
    rc = mbox_parse_dir(dir, "", &list, 0, err, sizeof err);
    if (rc == IMAPMEM_OK) rc = mbox_check_unique(list, err, sizeof err);
    if (rc == IMAPMEM_OK) rc = mbox_read_subscriptions(dir, &subs, &nsubs, err, sizeof err);
    if (rc == IMAPMEM_OK)
      rc = mbox_read_special_use(dir, list, &use_names, &uses, &nuses, err, sizeof err);
    if (rc == IMAPMEM_OK) rc = mbox_read_acl(dir, &acl, &nacl, err, sizeof err);
    if (rc == IMAPMEM_OK) rc = mbox_check_acl(u, list, acl, nacl, dir, err, sizeof err);
  } else {
    rc = mbox_parse_file(path, "INBOX", &list, err, sizeof err);
  }
  if (rc == IMAPMEM_OK) {
    char why[300] = "out of memory";
    rc = mbox_commit(u, list, srv->cfg.uidvalidity, subs, nsubs, why, sizeof why);
    if (rc == IMAPMEM_OK) rc = mbox_commit_acl(u, acl, nacl);
    if (rc != IMAPMEM_OK) snprintf(err, sizeof err, "%.280s: %s", path, why);
  }
  for (size_t i = 0; rc == IMAPMEM_OK && i < nuses; i++)   /* each names a mailbox now */
    user_set_special_use(u, use_names[i], uses[i], 1);
  mbox_batch_free(list);
  strings_free(subs, nsubs);
  acl_lines_free(acl, nacl);
  strings_free(use_names, nuses);
  free(uses);
  if (rc != IMAPMEM_OK) return api_error(srv, rc, "%s", err);
  return IMAPMEM_OK;
}

int imapmem_load(imapmem *srv, const char *user, const char *path) {
  if (!srv || !user || !path) return api_error(srv, IMAPMEM_MISUSE, "imapmem_load: NULL argument");
  struct user *u = api_user(srv, user);
  if (!u) return api_error(srv, IMAPMEM_NOTFOUND, "no such user: %s", user);
  return api_load(srv, u, path);
}

int imapmem_load_shared(imapmem *srv, const char *path) {
  if (!srv || !path) return api_error(srv, IMAPMEM_MISUSE, "imapmem_load_shared: NULL argument");
  return api_load(srv, srv->shared, path);
}

/* A namespace prefix: a level a client could CREATE, then '/'. NULL if fine, else why. */
static const char *api_prefix_invalid(const char *prefix) {
  size_t n = strlen(prefix);
  if (n < 2 || n > MAX_NS_PREFIX || prefix[n - 1] != '/') return "2-64 bytes ending in '/'";
  char level[MAX_NS_PREFIX + 1];
  snprintf(level, sizeof level, "%.*s", (int)n - 1, prefix);
  if (strchr(level, '/') || mailbox_name_invalid(level) || name_is_inbox(level, n - 1))
    return "one level a client could CREATE, not INBOX";
  return NULL;
}

int imapmem_set_namespace(imapmem *srv, const char *other_users, const char *shared) {
  if (!srv || !other_users || !shared)
    return api_error(srv, IMAPMEM_MISUSE, "imapmem_set_namespace: NULL argument");
  const char *why = api_prefix_invalid(other_users);
  if (!why) why = api_prefix_invalid(shared);
  if (!why && strcmp(other_users, shared) == 0) why = "the two prefixes must differ";
  if (why)
    return api_error(srv, IMAPMEM_MISUSE, "imapmem_set_namespace: \"%.80s\" \"%.80s\": %s",
                     other_users, shared, why);
  pthread_mutex_lock(&srv->lock);
  int started = srv->started;
  pthread_mutex_unlock(&srv->lock);
  if (started)
    return api_error(srv, IMAPMEM_MISUSE, "imapmem_set_namespace: the server has started");
  snprintf(srv->ns_other, sizeof srv->ns_other, "%s", other_users);
  snprintf(srv->ns_shared, sizeof srv->ns_shared, "%s", shared);
  return IMAPMEM_OK;
}

int imapmem_set_acl(imapmem *srv, const char *user, const char *mailbox, const char *identifier,
                    const char *rights) {
  if (!srv || !mailbox || !identifier || !rights)
    return api_error(srv, IMAPMEM_MISUSE, "imapmem_set_acl: NULL argument");
  struct user *u = user ? api_user(srv, user) : srv->shared;
  if (!u) return api_error(srv, IMAPMEM_NOTFOUND, "no such user: %s", user);
  if (!*identifier || !strcmp(identifier, "-") || (u->name[0] && !strcmp(identifier, u->name)))
    return api_error(srv, IMAPMEM_MISUSE, "imapmem_set_acl: \"%.100s\" is no identifier whose "
                     "rights can be set (empty, \"-\" or the owner)", identifier);
  int op = rights[0] == '+' || rights[0] == '-' ? rights[0] : '=';
  unsigned bits;
  char bad;
  if (!rights_parse(rights + (op != '='), strlen(rights + (op != '=')), &bits, &bad))
    return api_error(srv, IMAPMEM_MISUSE, "imapmem_set_acl: '%c' is no RFC 4314 right", bad);
  char canon[MAX_MAILBOX_NAME + 1];
  if (strlen(mailbox) > MAX_MAILBOX_NAME)
    return api_error(srv, IMAPMEM_NOTFOUND, "no such mailbox: %.100s", mailbox);
  mailbox_canonical(mailbox, canon, sizeof canon);
  pthread_mutex_lock(&u->lock);
  struct mailbox *mb = user_mailbox_locked(u, canon);
  int ok = -1;
  if (mb) {
    long i = acl_find(mb, identifier);
    unsigned now = i >= 0 ? mb->acl[i].rights : 0;
    ok = user_set_acl_locked(u, canon, identifier,
                             op == '+' ? now | bits : op == '-' ? now & ~bits : bits);
  }
  pthread_mutex_unlock(&u->lock);
  if (ok < 0) return api_error(srv, IMAPMEM_NOTFOUND, "no such mailbox: %.100s", mailbox);
  if (!ok) return api_error(srv, IMAPMEM_NOMEM, "out of memory");
  return IMAPMEM_OK;
}

int imapmem_load_mbox(imapmem *srv, const char *user, const char *mailbox, const char *bytes,
                      size_t len, const char *name) {
  if (!srv || !user || !mailbox || (!bytes && len))
    return api_error(srv, IMAPMEM_MISUSE, "imapmem_load_mbox: NULL argument");
  struct user *u = api_user(srv, user);
  if (!u) return api_error(srv, IMAPMEM_NOTFOUND, "no such user: %s", user);
  char canon[MAX_MAILBOX_NAME + 1];
  if (strlen(mailbox) > MAX_MAILBOX_NAME)
    return api_error(srv, IMAPMEM_MISUSE, "imapmem_load_mbox: the mailbox name is longer "
                     "than %d bytes", MAX_MAILBOX_NAME);
  mailbox_canonical(mailbox, canon, sizeof canon);
  const char *why = mailbox_name_invalid(canon);
  if (why)
    return api_error(srv, IMAPMEM_MISUSE, "imapmem_load_mbox: \"%.200s\" is not a mailbox "
                     "name a client could create (%s)", mailbox, why);
  struct mbox_batch *b = NULL;
  char err[600];
  int rc = mbox_parse(bytes ? bytes : "", len, name ? name : "(memory)", canon, &b, err,
                      sizeof err);
  if (rc == IMAPMEM_OK) {
    char why[300] = "out of memory";
    rc = mbox_commit(u, b, srv->cfg.uidvalidity, NULL, 0, why, sizeof why);
    if (rc != IMAPMEM_OK) snprintf(err, sizeof err, "%.280s: %s", name ? name : "(memory)", why);
  }
  mbox_batch_free(b);
  return rc == IMAPMEM_OK ? rc : api_error(srv, rc, "%s", err);
}

/* A listening TCP socket on the first of addr's addresses that binds; -1 and err if none. */
static int net_listen(const char *addr, int port, char *err, size_t errcap) {
  struct addrinfo hints, *res = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  char service[16];
  snprintf(service, sizeof service, "%d", port);
  int rc = getaddrinfo(addr, service, &hints, &res);
  if (rc != 0) {
    snprintf(err, errcap, "cannot resolve %.200s: %s", addr, gai_strerror(rc));
    return -1;
  }
  int fd = -1, e = 0;
  for (int pass = 0; pass < 2 && fd < 0; pass++)   /* IPv4 first, as the default address */
  for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
    if ((ai->ai_family == AF_INET) != (pass == 0)) continue;
    fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0) {
      e = errno;
      continue;
    }
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ai->ai_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    /* the system's largest backlog: a test suite that opens hundreds of connections at
       once must not wait for SYN retries (a second each) beyond a short queue */
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0) {
      e = errno;
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(res);
  if (fd < 0) snprintf(err, errcap, "cannot listen on %.200s port %d: %s", addr, port, strerror(e));
  return fd;
}

/* The port a listening socket is bound to, and its "ADDR:PORT" into address. */
static int api_bound(int fd, char *address, size_t cap) {
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  char host[INET6_ADDRSTRLEN] = "?", serv[16] = "0";
  if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
    getnameinfo((struct sockaddr *)&ss, sl, host, sizeof host, serv, sizeof serv,
                NI_NUMERICHOST | NI_NUMERICSERV);
  int port = atoi(serv);
  snprintf(address, cap, ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", host, port);
  return port;
}

int imapmem_start(imapmem *srv, const char *addr, int port) {
  if (!srv || port < 0 || port > 65535)
    return api_error(srv, IMAPMEM_MISUSE, "imapmem_start: no handle, or port not 0-65535");
  if (srv->started) return api_error(srv, IMAPMEM_MISUSE, "the server is already started");
  if (srv->imaps_want >= 0 && !srv->tls_ctx)
    return api_error(srv, IMAPMEM_MISUSE, "an imaps port needs TLS: call imapmem_set_tls first");
  char err[300];
  int fd = net_listen(addr ? addr : "127.0.0.1", port, err, sizeof err);
  if (fd < 0) return api_error(srv, IMAPMEM_IO, "%s", err);
  int tls_fd = -1;
  if (srv->imaps_want >= 0 &&
      (tls_fd = net_listen(addr ? addr : "127.0.0.1", srv->imaps_want, err, sizeof err)) < 0) {
    close(fd);
    return api_error(srv, IMAPMEM_IO, "imaps: %s", err);
  }
  srv->port = api_bound(fd, srv->address, sizeof srv->address);
  if (tls_fd >= 0)
    srv->imaps_port = api_bound(tls_fd, srv->imaps_address, sizeof srv->imaps_address);
  if (pipe(srv->wake) < 0) {
    close(fd);
    if (tls_fd >= 0) close(tls_fd);
    return api_error(srv, IMAPMEM_IO, "pipe: %s", strerror(errno));
  }
  fcntl(srv->wake[0], F_SETFD, FD_CLOEXEC);
  fcntl(srv->wake[1], F_SETFD, FD_CLOEXEC);
  srv->listen_fd = fd;
  srv->imaps_fd = tls_fd;
  srv->stopping = 0;
  if (pthread_create(&srv->accept_thread, NULL, accept_thread, srv) != 0) {
    close(fd);
    if (tls_fd >= 0) close(tls_fd);
    close(srv->wake[0]);
    close(srv->wake[1]);
    srv->wake[0] = srv->wake[1] = srv->listen_fd = srv->imaps_fd = -1;
    return api_error(srv, IMAPMEM_ERROR, "cannot start the accept thread");
  }
  srv->started = 1;
  return IMAPMEM_OK;
}

int imapmem_port(imapmem *srv) {
  return srv && srv->listen_fd >= 0 ? srv->port : -1;
}

const char *imapmem_address(imapmem *srv) {
  return srv ? srv->address : "";
}

int imapmem_stop(imapmem *srv) {
  if (!srv) return api_error(srv, IMAPMEM_MISUSE, "imapmem_stop: NULL handle");
  pthread_mutex_lock(&srv->lock);
  srv->stopping = 1;
  pthread_mutex_unlock(&srv->lock);
  if (srv->started) {
    ssize_t r = write(srv->wake[1], "x", 1);
    (void)r;
    pthread_join(srv->accept_thread, NULL);
    close(srv->listen_fd);
    srv->listen_fd = -1;
    if (srv->imaps_fd >= 0) close(srv->imaps_fd);
    srv->imaps_fd = -1;
    close(srv->wake[0]);
    close(srv->wake[1]);
    srv->wake[0] = srv->wake[1] = -1;
    srv->started = 0;
  }
  /* Wake every session: each says BYE (as far as its client reads), closes its own
     descriptors and ends; waiting for room to write gives way to the wake-up too. This
     thread never touches a session's descriptors, which may be reused the moment the
     session closes them. */
  ssize_t w = write(srv->stop_pipe[1], "x", 1);   /* not read until all have ended */
  (void)w;
  pthread_mutex_lock(&srv->lock);
  struct session **list = srv->sessions;   /* the threads need the lock: join outside it */
  size_t n = srv->nsessions;
  srv->sessions = NULL;
  srv->nsessions = srv->capsessions = 0;
  pthread_mutex_unlock(&srv->lock);
  for (size_t i = 0; i < n; i++) {
    pthread_join(list[i]->thread, NULL);
    session_free(list[i]);
  }
  free(list);
  char tmp[16];
  while (read(srv->stop_pipe[0], tmp, sizeof tmp) > 0) {}
  pthread_mutex_lock(&srv->lock);
  srv->stopping = 0;         /* serve_fd() may be used again */
  pthread_mutex_unlock(&srv->lock);
  return IMAPMEM_OK;
}

int imapmem_serve_fd(imapmem *srv, int in_fd, int out_fd, const char *preauth_user) {
  if (!srv || in_fd < 0 || out_fd < 0)
    return api_error(srv, IMAPMEM_MISUSE, "imapmem_serve_fd: NULL handle or bad descriptor");
  if (preauth_user && !api_user(srv, preauth_user)) {
    close(in_fd);
    if (out_fd != in_fd) close(out_fd);
    return api_error(srv, IMAPMEM_NOTFOUND, "no such user: %s", preauth_user);
  }
  int rc = server_add_session(srv, in_fd, out_fd, preauth_user, 0);
  return rc == IMAPMEM_OK ? rc : api_error(srv, rc, "cannot start a session thread");
}

int imapmem_serve_fd_tls(imapmem *srv, int in_fd, int out_fd, const char *preauth_user,
                         enum imapmem_fd_tls how) {
  if (!srv || in_fd < 0 || out_fd < 0 || (how != IMAPMEM_FD_IMAPS && how != IMAPMEM_FD_STARTTLS))
    return api_error(srv, IMAPMEM_MISUSE,
                     "imapmem_serve_fd_tls: NULL handle, bad descriptor or bad how");
  if (!tls_library()) return api_error(srv, IMAPMEM_MISUSE, "imapmem_serve_fd_tls: %s",
                                       TLS_NO_BUILD);
  if (!srv->tls_ctx)
    return api_error(srv, IMAPMEM_MISUSE, "imapmem_serve_fd_tls: call imapmem_set_tls first");
  if (how == IMAPMEM_FD_STARTTLS && preauth_user)   /* RFC 3501 6.2.1: not authenticated */
    return api_error(srv, IMAPMEM_MISUSE, "imapmem_serve_fd_tls: STARTTLS is for a session "
                     "that is not logged in: no preauth_user with IMAPMEM_FD_STARTTLS");
  if (preauth_user && !api_user(srv, preauth_user)) {
    close(in_fd);
    if (out_fd != in_fd) close(out_fd);
    return api_error(srv, IMAPMEM_NOTFOUND, "no such user: %s", preauth_user);
  }
  int rc = server_add_session(srv, in_fd, out_fd, preauth_user,
                              how == IMAPMEM_FD_IMAPS ? 2 : 1);
  return rc == IMAPMEM_OK ? rc : api_error(srv, rc, "cannot start a session thread");
}

/* ------------------------------------------------------------------------- */
/* TLS (section 10 does the work; without IMAPMEM_TLS each setter says how to get it). */

const char *imapmem_tls_library(void) {
  return tls_library();
}

/* The checks every TLS setter shares: a handle, a TLS build, not yet serving. */
static int api_tls_check(struct imapmem *srv, const char *fn) {
  if (!srv) return api_error(srv, IMAPMEM_MISUSE, "%s: NULL handle", fn);
  if (!tls_library()) return api_error(srv, IMAPMEM_MISUSE, "%s: %s", fn, TLS_NO_BUILD);
  if (srv->started)
    return api_error(srv, IMAPMEM_MISUSE, "%s: TLS is set before imapmem_start", fn);
  return IMAPMEM_OK;
}

int imapmem_set_tls(imapmem *srv, const char *cert_pem, const char *key_pem) {
  int rc = api_tls_check(srv, "imapmem_set_tls");
  if (rc != IMAPMEM_OK) return rc;
  if (!cert_pem != !key_pem)
    return api_error(srv, IMAPMEM_MISUSE, "imapmem_set_tls: give both a certificate and a key, "
                     "or neither (to generate them)");
  char err[400];
  rc = tls_configure(srv, cert_pem, key_pem, TLS_FAULT_NONE, err, sizeof err);
  return rc == IMAPMEM_OK ? rc : api_error(srv, rc, "%s", err);
}

int imapmem_set_tls_fault(imapmem *srv, const char *kind) {
  int rc = api_tls_check(srv, "imapmem_set_tls_fault");
  if (rc != IMAPMEM_OK) return rc;
  int fault = -1;
  for (int i = 0; i < (int)(sizeof tls_fault_names / sizeof tls_fault_names[0]); i++)
    if (!strcmp(kind ? kind : "", tls_fault_names[i])) fault = i;
  if (fault < 0)
    return api_error(srv, IMAPMEM_NOTFOUND, "no such TLS fault: %s (expired, not-yet-valid, "
                     "wrong-host, self-signed, handshake)", kind);
  if (!srv->tls_ctx || !srv->tls_ca)
    return api_error(srv, IMAPMEM_MISUSE, "imapmem_set_tls_fault: faults use generated "
                     "certificates: call imapmem_set_tls(srv, NULL, NULL) first");
  char err[400];
  rc = tls_configure(srv, NULL, NULL, fault, err, sizeof err);
  return rc == IMAPMEM_OK ? rc : api_error(srv, rc, "%s", err);
}

int imapmem_tls_cert(imapmem *srv, char **pem_out) {
  if (!srv || !pem_out) return api_error(srv, IMAPMEM_MISUSE, "imapmem_tls_cert: NULL argument");
  *pem_out = NULL;
  if (!tls_library()) return api_error(srv, IMAPMEM_MISUSE, "imapmem_tls_cert: %s", TLS_NO_BUILD);
  if (!srv->tls_trust_pem)
    return api_error(srv, IMAPMEM_MISUSE, "imapmem_tls_cert: no TLS: call imapmem_set_tls first");
  if (!(*pem_out = mem_strdup(srv->tls_trust_pem)))
    return api_error(srv, IMAPMEM_NOMEM, "out of memory");
  return IMAPMEM_OK;
}

int imapmem_set_imaps_port(imapmem *srv, int port) {
  int rc = api_tls_check(srv, "imapmem_set_imaps_port");
  if (rc != IMAPMEM_OK) return rc;
  if (port < -1 || port > 65535)
    return api_error(srv, IMAPMEM_MISUSE, "imapmem_set_imaps_port: port not -1 to 65535");
  srv->imaps_want = port;
  return IMAPMEM_OK;
}

int imapmem_imaps_port(imapmem *srv) {
  return srv && srv->imaps_fd >= 0 ? srv->imaps_port : -1;
}

const char *imapmem_imaps_address(imapmem *srv) {
  return srv && srv->imaps_fd >= 0 ? srv->imaps_address : "";
}

int imapmem_set_require_tls(imapmem *srv, int on) {
  int rc = api_tls_check(srv, "imapmem_set_require_tls");
  if (rc != IMAPMEM_OK) return rc;
  if (on && !srv->tls_ctx)
    return api_error(srv, IMAPMEM_MISUSE, "imapmem_set_require_tls: no TLS to require: call "
                     "imapmem_set_tls first");
  srv->require_tls = on != 0;
  return IMAPMEM_OK;
}

/*
** A space-separated flag list from the API ("\\Seen $Label1"; NULL or "" for none) into
** fl, its names in arena a, which the caller frees whatever the outcome.
*/
static int api_flags(struct imapmem *srv, const char *flags, struct arena *a,
                     struct flag_list *fl) {
  if (!flags || !*flags) return IMAPMEM_OK;
  size_t n = strlen(flags);
  char *list = arena_alloc(a, n + 3);
  if (list) snprintf(list, n + 3, "(%s)", flags);
  struct parser ps = {list, list ? list + n + 2 : NULL, a, NULL, 0};
  if (!list || !parse_flags(&ps, fl, 0) || !parse_end(&ps))
    return api_error(srv, IMAPMEM_MISUSE, "invalid flags \"%s\": %s", flags,
                     ps.err ? ps.err : "out of memory");
  return IMAPMEM_OK;
}

/* The user's mailbox, with a reference; errors go to errmsg. */
static int api_mailbox(struct imapmem *srv, const char *user, const char *mailbox,
                       struct mailbox **out) {
  *out = NULL;
  if (!srv || !user || !mailbox) return api_error(srv, IMAPMEM_MISUSE, "NULL argument");
  struct user *u = api_user(srv, user);
  if (!u) return api_error(srv, IMAPMEM_NOTFOUND, "no such user: %s", user);
  *out = user_mailbox(u, mailbox);
  if (!*out) return api_error(srv, IMAPMEM_NOTFOUND, "no such mailbox: %s", mailbox);
  return IMAPMEM_OK;
}

int imapmem_append(imapmem *srv, const char *user, const char *mailbox, const char *bytes,
                   size_t len, const char *flags, uint32_t *uid_out) {
  return imapmem_append_dated(srv, user, mailbox, bytes, len, flags, (int64_t)time(NULL), 0,
                              uid_out);
}

int imapmem_append_dated(imapmem *srv, const char *user, const char *mailbox,
                         const char *bytes, size_t len, const char *flags, int64_t date,
                         int tz_minutes, uint32_t *uid_out) {
  if (!bytes || !len)
    return api_error(srv, IMAPMEM_MISUSE, "imapmem_append: no message bytes");
  if (tz_minutes <= -24 * 60 || tz_minutes >= 24 * 60 || date < -62135596800 ||
      date > 253402300799)     /* years 1 to 9999, as INTERNALDATE can write them */
    return api_error(srv, IMAPMEM_MISUSE, "imapmem_append_dated: date or zone out of range");
  if (len > IMAPMEM_MAX_LITERAL_LIMIT)
    return api_error(srv, IMAPMEM_MISUSE, "imapmem_append: a message is at most %lu bytes",
                     (unsigned long)IMAPMEM_MAX_LITERAL_LIMIT);
  struct mailbox *mb;
  int rc = api_mailbox(srv, user, mailbox, &mb);
  if (rc) return rc;
  struct arena a = {0};
  struct flag_list fl = {0};
  if ((rc = api_flags(srv, flags, &a, &fl))) {
    mailbox_unref(mb);
    return rc;
  }
  struct msgdata *d = mb->selectable ? msgdata_new(bytes, len) : NULL;
  uint32_t uid = 0;
  uint64_t kw = 0;
  int full = 0;
  if (d) {
    pthread_mutex_lock(&mb->lock);
    full = flag_list_keywords(mb, &fl, &kw) < 0;
    if (!full) uid = mailbox_append(mb, d, fl.flags | FLAG_RECENT, kw, date, tz_minutes);
    if (!uid && !full && mailbox_uids_exhausted(mb)) full = 2;
    pthread_mutex_unlock(&mb->lock);
  }
  arena_free(&a);
  int selectable = mb->selectable;
  mailbox_unref(mb);
  if (!uid) {
    msgdata_unref(d);
    if (!selectable) return api_error(srv, IMAPMEM_NOTFOUND, "%s is \\Noselect", mailbox);
    if (full == 2) return api_error(srv, IMAPMEM_ERROR, "%s has used every UID", mailbox);
    return api_error(srv, full ? IMAPMEM_ERROR : IMAPMEM_NOMEM,
                     full ? "too many keywords in %s" : "out of memory in %s", mailbox);
  }
  if (uid_out) *uid_out = uid;
  return IMAPMEM_OK;
}

int imapmem_mailboxes(imapmem *srv, const char *user, char ***names_out, size_t *count_out) {
  if (!srv || !user || !names_out || !count_out)
    return api_error(srv, IMAPMEM_MISUSE, "imapmem_mailboxes: NULL argument");
  *names_out = NULL;
  *count_out = 0;
  struct user *u = api_user(srv, user);
  if (!u) return api_error(srv, IMAPMEM_NOTFOUND, "no such user: %s", user);
  pthread_mutex_lock(&u->lock);   /* one block: the array, then the names it points to */
  size_t n = u->live.n, bytes = (n + 1) * sizeof(char *);
  for (size_t i = 0; i < n; i++) bytes += strlen(u->live.list[i]->name) + 1;
  char **names = mem_alloc(bytes);
  char *p = names ? (char *)(names + n + 1) : NULL;
  for (size_t i = 0; names && i < n; i++) {
    size_t k = strlen(u->live.list[i]->name) + 1;
    names[i] = memcpy(p, u->live.list[i]->name, k);
    p += k;
  }
  pthread_mutex_unlock(&u->lock);
  if (!names) return api_error(srv, IMAPMEM_NOMEM, "out of memory");
  names[n] = NULL;
  qsort(names, n, sizeof *names, cmp_names);
  *names_out = names;
  *count_out = n;
  return IMAPMEM_OK;
}

/* The mailbox's message count and HIGHESTMODSEQ, read together under its lock. */
static int api_mailbox_numbers(struct imapmem *srv, const char *user, const char *mailbox,
                               size_t *count, uint64_t *modseq) {
  struct mailbox *mb;
  int rc = api_mailbox(srv, user, mailbox, &mb);
  if (rc) return rc;
  pthread_mutex_lock(&mb->lock);
  *count = mb->count;
  *modseq = mb->modseq;
  pthread_mutex_unlock(&mb->lock);
  mailbox_unref(mb);
  return IMAPMEM_OK;
}

int imapmem_count(imapmem *srv, const char *user, const char *mailbox, size_t *count_out) {
  uint64_t modseq;
  if (!count_out) return api_error(srv, IMAPMEM_MISUSE, "imapmem_count: count_out is NULL");
  return api_mailbox_numbers(srv, user, mailbox, count_out, &modseq);
}

int imapmem_uids(imapmem *srv, const char *user, const char *mailbox, uint32_t **uids_out,
                 size_t *count_out) {
  struct mailbox *mb;
  if (!uids_out || !count_out)
    return api_error(srv, IMAPMEM_MISUSE, "imapmem_uids: NULL output pointer");
  *uids_out = NULL;
  *count_out = 0;
  int rc = api_mailbox(srv, user, mailbox, &mb);
  if (rc) return rc;
  pthread_mutex_lock(&mb->lock);
  uint32_t *uids = mem_alloc((mb->count ? mb->count : 1) * sizeof *uids);
  for (size_t i = 0; uids && i < mb->count; i++) uids[i] = mb->msgs[i].uid;
  size_t n = mb->count;
  pthread_mutex_unlock(&mb->lock);
  mailbox_unref(mb);
  if (!uids) return api_error(srv, IMAPMEM_NOMEM, "out of memory");
  *uids_out = uids;
  *count_out = n;
  return IMAPMEM_OK;
}

/* Run fn on message uid of mailbox with its lock held. */
static int api_message(struct imapmem *srv, const char *user, const char *mailbox, uint32_t uid,
                       int (*fn)(struct mailbox *, struct message *, void *), void *arg) {
  struct mailbox *mb;
  int rc = api_mailbox(srv, user, mailbox, &mb);
  if (rc) return rc;
  pthread_mutex_lock(&mb->lock);
  long k = mailbox_find_uid(mb, uid);
  rc = k < 0 ? IMAPMEM_NOTFOUND : fn(mb, &mb->msgs[k], arg);
  pthread_mutex_unlock(&mb->lock);
  mailbox_unref(mb);
  if (rc == IMAPMEM_NOTFOUND)
    return api_error(srv, rc, "no message with UID %u in %s", uid, mailbox);
  if (rc == IMAPMEM_NOMEM) return api_error(srv, rc, "out of memory");
  return rc;
}

static int message_flags_string(struct mailbox *mb, struct message *m, void *arg) {
  struct buf b = {0};
  flags_out(&b, m->flags & FLAGS_SYSTEM, m->keywords, mb->keywords, mb->nkeywords, 0);
  if (b.oom) {
    buf_free(&b);
    return IMAPMEM_NOMEM;
  }
  memmove(b.p, b.p + 1, b.len - 2);  /* without the parentheses */
  b.p[b.len - 2] = 0;
  *(char **)arg = b.p;
  return IMAPMEM_OK;
}

int imapmem_flags(imapmem *srv, const char *user, const char *mailbox, uint32_t uid,
                  char **flags_out) {
  if (!flags_out) return api_error(srv, IMAPMEM_MISUSE, "imapmem_flags: flags_out is NULL");
  *flags_out = NULL;
  return api_message(srv, user, mailbox, uid, message_flags_string, flags_out);
}

static int message_set_flags(struct mailbox *mb, struct message *m, void *arg) {
  uint64_t kw;
  if (flag_list_keywords(mb, arg, &kw) < 0) return IMAPMEM_ERROR;
  mailbox_set_flags(mb, (size_t)(m - mb->msgs), ((const struct flag_list *)arg)->flags, kw);
  return IMAPMEM_OK;
}

int imapmem_set_flags(imapmem *srv, const char *user, const char *mailbox, uint32_t uid,
                      const char *flags) {
  struct arena a = {0};
  struct flag_list fl = {0};
  int rc = api_flags(srv, flags, &a, &fl);
  if (!rc) rc = api_message(srv, user, mailbox, uid, message_set_flags, &fl);
  arena_free(&a);
  if (rc == IMAPMEM_ERROR) return api_error(srv, rc, "too many keywords in %s", mailbox);
  return rc;
}

static int message_expunge(struct mailbox *mb, struct message *m, void *arg) {
  (void)arg;
  unsigned char *rm = mem_calloc(mb->count, 1);
  if (!rm) return IMAPMEM_NOMEM;
  rm[m - mb->msgs] = 1;
  long n = mailbox_expunge(mb, rm);
  free(rm);
  return n < 0 ? IMAPMEM_NOMEM : IMAPMEM_OK;
}

int imapmem_expunge(imapmem *srv, const char *user, const char *mailbox, uint32_t uid) {
  return api_message(srv, user, mailbox, uid, message_expunge, NULL);
}

static int message_modseq(struct mailbox *mb, struct message *m, void *arg) {
  (void)mb;
  *(uint64_t *)arg = m->modseq;
  return IMAPMEM_OK;
}

int imapmem_modseq(imapmem *srv, const char *user, const char *mailbox, uint32_t uid,
                   uint64_t *modseq_out) {
  if (!modseq_out) return api_error(srv, IMAPMEM_MISUSE, "imapmem_modseq: modseq_out is NULL");
  *modseq_out = 0;
  if (uid) return api_message(srv, user, mailbox, uid, message_modseq, modseq_out);
  size_t count;
  return api_mailbox_numbers(srv, user, mailbox, &count, modseq_out);
}

int imapmem_set_nomodseq(imapmem *srv, const char *user, const char *mailbox, int on) {
  if (!srv || !user || !mailbox) return api_error(srv, IMAPMEM_MISUSE, "NULL argument");
  struct user *u = api_user(srv, user);
  if (!u) return api_error(srv, IMAPMEM_NOTFOUND, "no such user: %s", user);
  if (!user_set_nomodseq(u, mailbox, on))
    return api_error(srv, IMAPMEM_NOTFOUND, "no such mailbox: %s", mailbox);
  return IMAPMEM_OK;
}

int imapmem_set_special_use(imapmem *srv, const char *user, const char *mailbox,
                            const char *uses) {
  if (!srv || !user || !mailbox) return api_error(srv, IMAPMEM_MISUSE, "NULL argument");
  struct user *u = api_user(srv, user);
  if (!u) return api_error(srv, IMAPMEM_NOTFOUND, "no such user: %s", user);
  unsigned use = 0;
  const char *bad;
  size_t badlen;
  if (uses && !special_use_parse(uses, &use, &bad, &badlen))
    return api_error(srv, IMAPMEM_MISUSE, "not a special-use attribute: %.*s (one of \\All "
                     "\\Archive \\Drafts \\Flagged \\Junk \\Sent \\Trash)", (int)badlen, bad);
  if (!user_set_special_use(u, mailbox, use, uses != NULL))
    return api_error(srv, IMAPMEM_NOTFOUND, "no such mailbox: %s", mailbox);
  return IMAPMEM_OK;
}

int imapmem_set_quota(imapmem *srv, const char *user, int64_t storage_kib, int64_t messages) {
  if (!srv || !user) return api_error(srv, IMAPMEM_MISUSE, "imapmem_set_quota: NULL argument");
  if (storage_kib < IMAPMEM_NO_LIMIT || messages < IMAPMEM_NO_LIMIT)
    return api_error(srv, IMAPMEM_MISUSE, "imapmem_set_quota: a limit is 0 or more, or "
                     "IMAPMEM_NO_LIMIT");
  struct user *u = api_user(srv, user);
  if (!u) return api_error(srv, IMAPMEM_NOTFOUND, "no such user: %s", user);
  int64_t limit[QUOTA_NRES];
  limit[QUOTA_STORAGE] = storage_kib < 0 ? QUOTA_NO_LIMIT : storage_kib;
  limit[QUOTA_MESSAGE] = messages < 0 ? QUOTA_NO_LIMIT : messages;
  user_set_quota(u, limit);
  return IMAPMEM_OK;
}

int imapmem_get_quota(imapmem *srv, const char *user, int64_t *storage_kib,
                      int64_t *messages, uint64_t *storage_used_kib, uint64_t *messages_used) {
  if (!srv || !user) return api_error(srv, IMAPMEM_MISUSE, "imapmem_get_quota: NULL argument");
  struct user *u = api_user(srv, user);
  if (!u) return api_error(srv, IMAPMEM_NOTFOUND, "no such user: %s", user);
  int64_t limit[QUOTA_NRES];
  struct quota_usage q = user_get_quota(u, limit);
  if (storage_kib) *storage_kib = limit[QUOTA_STORAGE];
  if (messages) *messages = limit[QUOTA_MESSAGE];
  if (storage_used_kib) *storage_used_kib = quota_usage_of(&q, QUOTA_STORAGE);
  if (messages_used) *messages_used = quota_usage_of(&q, QUOTA_MESSAGE);
  return IMAPMEM_OK;
}

struct bytes_out {
  char **p;
  size_t *n;
};

static int message_bytes(struct mailbox *mb, struct message *m, void *arg) {
  (void)mb;
  struct bytes_out *o = arg;
  char *p = mem_alloc(m->data->size + 1);
  if (!p) return IMAPMEM_NOMEM;
  memcpy(p, m->data->bytes, m->data->size + 1);
  *o->p = p;
  *o->n = m->data->size;
  return IMAPMEM_OK;
}

int imapmem_message(imapmem *srv, const char *user, const char *mailbox, uint32_t uid,
                    char **bytes_out, size_t *len_out) {
  if (!bytes_out || !len_out)
    return api_error(srv, IMAPMEM_MISUSE, "imapmem_message: NULL output pointer");
  *bytes_out = NULL;
  *len_out = 0;
  struct bytes_out o = {bytes_out, len_out};
  return api_message(srv, user, mailbox, uid, message_bytes, &o);
}

void imapmem_release(void *p) {
  free(p);
}

int imapmem_reset(imapmem *srv) {
  if (!srv) return api_error(srv, IMAPMEM_MISUSE, "imapmem_reset: NULL handle");
  for (size_t i = 0;; i++) {         /* users are never removed; the array may move */
    pthread_mutex_lock(&srv->lock);
    struct user *u = i < srv->nusers ? srv->users[i] : NULL;
    pthread_mutex_unlock(&srv->lock);
    if (!u) break;
    if (!user_baseline(u, 1)) return api_error(srv, IMAPMEM_NOMEM, "out of memory");
  }
  if (!user_baseline(srv->shared, 1)) return api_error(srv, IMAPMEM_NOMEM, "out of memory");
  store_changed(srv);
  return IMAPMEM_OK;
}

int imapmem_save(imapmem *srv, const char *user, const char *dir) {
  if (!srv || !user || !dir) return api_error(srv, IMAPMEM_MISUSE, "imapmem_save: NULL argument");
  struct user *u = api_user(srv, user);
  if (!u) return api_error(srv, IMAPMEM_NOTFOUND, "no such user: %s", user);
  char err[600];
  int rc = mbox_save_user(u, dir, err, sizeof err);
  if (rc == IMAPMEM_OK) rc = mbox_save_acl(u, dir, err, sizeof err);
  return rc == IMAPMEM_OK ? rc : api_error(srv, rc, "%s", err);
}

int imapmem_save_shared(imapmem *srv, const char *dir) {
  if (!srv || !dir) return api_error(srv, IMAPMEM_MISUSE, "imapmem_save_shared: NULL argument");
  char err[600];
  int rc = mbox_save_user(srv->shared, dir, err, sizeof err);
  if (rc == IMAPMEM_OK) rc = mbox_save_acl(srv->shared, dir, err, sizeof err);
  return rc == IMAPMEM_OK ? rc : api_error(srv, rc, "%s", err);
}

/*
** Does the condition hold now? Takes the locks it needs, one at a time. With w->since, an
** event counts (a login, SELECT or IDLE numbered after the mark), not the state.
*/
static int api_until_holds(struct imapmem *srv, const struct imapmem_until *w) {
  struct user *u = w->user ? api_user(srv, w->user) : NULL;
  struct mailbox *mb = NULL;
  int holds = 0;
  switch (w->kind) {
  case IMAPMEM_UNTIL_LOGIN:
  case IMAPMEM_UNTIL_SELECTED:
  case IMAPMEM_UNTIL_IDLE:
    if (w->user && !u) return 0;
    if (w->kind != IMAPMEM_UNTIL_LOGIN) {
      if (!u) return 0;
      mb = user_mailbox(u, w->mailbox);
      if (!mb) return 0;
    }
    pthread_mutex_lock(&srv->lock);
    if (w->since && w->kind == IMAPMEM_UNTIL_LOGIN)
      holds = (u ? u->last_login : srv->last_login) > w->since;
    else if (w->since)
      holds = (w->kind == IMAPMEM_UNTIL_SELECTED ? mb->last_select : mb->last_idle) > w->since;
    for (size_t i = 0; i < srv->nsessions && !holds && !w->since; i++) {
      struct session *s = srv->sessions[i];
      if (!s->pub_user || (w->user && s->pub_user != u)) continue;
      holds = w->kind == IMAPMEM_UNTIL_LOGIN ||
              (s->pub_mb == mb && (w->kind == IMAPMEM_UNTIL_SELECTED || s->pub_idle));
    }
    pthread_mutex_unlock(&srv->lock);
    mailbox_unref(mb);
    return holds;
  case IMAPMEM_UNTIL_NO_SESSIONS:
    return atomic_load(&srv->nactive) == 0;
  default:
    break;
  }
  if (!u || !(mb = user_mailbox(u, w->mailbox))) return 0;
  pthread_mutex_lock(&mb->lock);
  if (w->kind == IMAPMEM_UNTIL_COUNT) {
    holds = mb->count == w->count;
  } else {
    long k = mailbox_find_uid(mb, w->uid);
    int has = 0;
    if (k >= 0) {
      struct str f = str_make(w->flag, strlen(w->flag));
      int bit = parse_flag_bit(f);
      int kw = bit == 0 ? mailbox_keyword(mb, w->flag, f.len, 0) : -1;
      has = bit > 0 ? (mb->msgs[k].flags & (uint32_t)bit) != 0
                    : kw >= 0 && (mb->msgs[k].keywords >> kw & 1);
    }
    holds = w->kind == IMAPMEM_UNTIL_FLAG ? has : !has;
  }
  pthread_mutex_unlock(&mb->lock);
  mailbox_unref(mb);
  return holds;
}

uint64_t imapmem_mark(imapmem *srv) {
  if (!srv) return 0;
  pthread_mutex_lock(&srv->lock);
  uint64_t n = srv->events;
  pthread_mutex_unlock(&srv->lock);
  return n;
}

int imapmem_wait(imapmem *srv, const struct imapmem_until *until, int timeout_ms) {
  if (!srv || !until || timeout_ms < 0)
    return api_error(srv, IMAPMEM_MISUSE, "imapmem_wait: NULL argument or negative timeout");
  int k = until->kind;
  if (k < IMAPMEM_UNTIL_LOGIN || k > IMAPMEM_UNTIL_NO_SESSIONS ||
      ((k == IMAPMEM_UNTIL_SELECTED || k == IMAPMEM_UNTIL_IDLE) &&
       (!until->user || !until->mailbox)) ||
      ((k == IMAPMEM_UNTIL_FLAG || k == IMAPMEM_UNTIL_NO_FLAG) &&
       (!until->user || !until->mailbox || !until->flag)) ||
      (k == IMAPMEM_UNTIL_COUNT && (!until->user || !until->mailbox)) ||
      (until->since && k > IMAPMEM_UNTIL_IDLE))
    return api_error(srv, IMAPMEM_MISUSE, "imapmem_wait: the condition lacks a user, mailbox "
                     "or flag, or has a mark (since) where no event is counted");
  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  deadline.tv_sec += timeout_ms / 1000;
  deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (deadline.tv_nsec >= 1000000000L) {
    deadline.tv_sec++;
    deadline.tv_nsec -= 1000000000L;
  }
  for (;;) {
    pthread_mutex_lock(&srv->wait_lock);
    unsigned long gen = srv->generation;
    pthread_mutex_unlock(&srv->wait_lock);
    if (api_until_holds(srv, until)) return IMAPMEM_OK;
    pthread_mutex_lock(&srv->wait_lock);
    int r = 0;
    while (srv->generation == gen && r != ETIMEDOUT)
      r = pthread_cond_timedwait(&srv->wait_cond, &srv->wait_lock, &deadline);
    pthread_mutex_unlock(&srv->wait_lock);
    if (r == ETIMEDOUT) {
      if (api_until_holds(srv, until)) return IMAPMEM_OK;
      static const char *const what[] = {"a login", "a selection", "an IDLE", "the flag",
                                         "the flag to go", "the message count", "no sessions"};
      return api_error(srv, IMAPMEM_ERROR, "timed out after %d ms waiting for %s", timeout_ms,
                       what[k]);
    }
  }
}

int imapmem_set_trace(imapmem *srv, imapmem_trace_fn *fn, void *arg) {
  if (!srv) return api_error(srv, IMAPMEM_MISUSE, "imapmem_set_trace: NULL handle");
  pthread_mutex_lock(&srv->lock);
  srv->trace_fn = fn;
  srv->trace_arg = arg;
  atomic_store(&srv->tracing, fn != NULL);
  pthread_mutex_unlock(&srv->lock);
  return IMAPMEM_OK;
}

int imapmem_set_append_limit(imapmem *srv, size_t bytes) {
  if (!srv) return api_error(srv, IMAPMEM_MISUSE, "imapmem_set_append_limit: NULL handle");
  if (bytes > srv->cfg.max_literal)
    return api_error(srv, IMAPMEM_MISUSE, "imapmem_set_append_limit: %zu is over max_literal "
                     "(%zu), which no APPEND can pass anyway", bytes, srv->cfg.max_literal);
  atomic_store(&srv->append_limit, bytes);
  return IMAPMEM_OK;
}

int imapmem_set_capability(imapmem *srv, const char *name, int on) {
  if (!srv || !name) return api_error(srv, IMAPMEM_MISUSE, "imapmem_set_capability: NULL argument");
  for (size_t i = 0; i < NCAPS; i++) {
    if (!capability_list[i].bit || strcasecmp(name, capability_list[i].name) != 0) continue;
    pthread_mutex_lock(&srv->lock);
    capset off = capability_switch(atomic_load(&srv->caps_off), i, on);
    int versionless = (off & CAP_IMAP4REV1) && (off & CAP_IMAP4REV2);
    if (!versionless) atomic_store(&srv->caps_off, off);
    pthread_mutex_unlock(&srv->lock);
    if (versionless)
      return api_error(srv, IMAPMEM_MISUSE, "imapmem_set_capability: IMAP4rev1 and IMAP4rev2 "
                       "cannot both be off");
    return IMAPMEM_OK;
  }
  return api_error(srv, IMAPMEM_NOTFOUND, "no such optional capability: %s", name);
}

int imapmem_capabilities(imapmem *srv, char **caps_out) {
  if (!srv || !caps_out) return api_error(srv, IMAPMEM_MISUSE, "imapmem_capabilities: NULL argument");
  char caps[CAPS_MAX];
  if (!(*caps_out = mem_strdup(capabilities(srv, NULL, caps, sizeof caps))))
    return api_error(srv, IMAPMEM_NOMEM, "out of memory");
  return IMAPMEM_OK;
}

int imapmem_fault(imapmem *srv, const char *spec) {
  if (!srv || !spec) return api_error(srv, IMAPMEM_MISUSE, "imapmem_fault: NULL argument");
  static const struct { const char *name; int action, has_text, has_ms; } actions[] = {
    {"NO", FA_NO, 1, 0}, {"BAD", FA_BAD, 1, 0}, {"DROP", FA_DROP, 0, 0}, {"BYE", FA_BYE, 1, 0},
    {"ALERT", FA_ALERT, 1, 0}, {"DELAY", FA_DELAY, 0, 1}, {"UIDVALIDITY", FA_UIDVALIDITY, 0, 0},
    {"MODSEQ-BACK", FA_MODSEQ_BACK, 0, 0}, {"FORGET-EXPUNGED", FA_FORGET_EXPUNGED, 0, 0},
    {"AUTH-UNAVAILABLE", FA_AUTH_UNAVAILABLE, 0, 0}, {"AUTH-EXPIRED", FA_AUTH_EXPIRED, 0, 0}};
  const char *eq = strchr(spec, '=');
  if (!eq || eq == spec)
    return api_error(srv, IMAPMEM_PARSE, "fault \"%s\": expected WHEN=ACTION", spec);
  char *end;
  long v;
  if ((size_t)(eq - spec) == 5 && strncasecmp(spec, "delay", 5) == 0) {
    v = strtol(eq + 1, &end, 10);
    if (!eq[1] || *end || v < 0 || v > 600000)
      return api_error(srv, IMAPMEM_PARSE, "fault \"%s\": delay wants milliseconds", spec);
    atomic_store(&srv->delay_ms, (int)v);
    return IMAPMEM_OK;
  }
  if ((size_t)(eq - spec) == 5 && strncasecmp(spec, "chunk", 5) == 0) {
    v = strtol(eq + 1, &end, 10);
    if (!eq[1] || *end || v < 1 || v > 1 << 20)
      return api_error(srv, IMAPMEM_PARSE, "fault \"%s\": chunk wants a byte count", spec);
    atomic_store(&srv->chunk, (int)v);
    return IMAPMEM_OK;
  }
  struct fault f;
  memset(&f, 0, sizeof f);
  f.left = -1;
  const char *when_end = eq, *colon = memchr(spec, ':', (size_t)(eq - spec));
  if (colon) {               /* WHEN:N fires the first N times only */
    v = strtol(colon + 1, &end, 10);
    if (end != eq || colon[1] < '0' || colon[1] > '9' || v < 1 || v > INT_MAX)
      return api_error(srv, IMAPMEM_PARSE, "fault \"%s\": WHEN:N wants a count N >= 1", spec);
    f.left = v;
    when_end = colon;
  }
  size_t wn = (size_t)(when_end - spec);
  if (spec[0] == '#') {
    v = strtol(spec + 1, &end, 10);
    if (end != when_end || spec[1] < '0' || spec[1] > '9' || v < 1 || v > INT_MAX)
      return api_error(srv, IMAPMEM_PARSE, "fault \"%s\": #N wants N >= 1", spec);
    f.nth = (unsigned)v;
  } else if (wn == 1 && spec[0] == '*') {
    strcpy(f.cmd, "*");
  } else {
    /* a command of the table: NAME matches NAME and UID NAME; "UID NAME" only the latter */
    struct str w = str_make(spec, wn);
    if (wn > 4 && strncasecmp(spec, "UID ", 4) == 0) {
      f.uid_only = 1;
      w = str_make(spec + 4, wn - 4);
    }
    const struct cmd_def *def = command_find(w);
    if (!def || (f.uid_only && !(def->flags & CMD_UID)))
      return api_error(srv, IMAPMEM_PARSE, "fault \"%s\": no such command \"%.*s\" (a "
                       "command name such as FETCH, \"UID FETCH\", or * or #N)", spec,
                       (int)(wn > 40 ? 40 : wn), spec);
    snprintf(f.cmd, sizeof f.cmd, "%s", def->name);
  }
  const char *act = eq + 1;
  size_t an = strcspn(act, " ");
  const char *arg = act[an] ? act + an + 1 : "";
  size_t i;
  for (i = 0; i < sizeof actions / sizeof actions[0]; i++)
    if (strlen(actions[i].name) == an && strncasecmp(act, actions[i].name, an) == 0) break;
  if (i == sizeof actions / sizeof actions[0])
    return api_error(srv, IMAPMEM_PARSE, "fault \"%s\": unknown action (NO, BAD, DROP, BYE, ALERT, "
                     "DELAY, UIDVALIDITY, MODSEQ-BACK, FORGET-EXPUNGED, AUTH-UNAVAILABLE, "
                     "AUTH-EXPIRED)", spec);
  f.action = actions[i].action;
  if (actions[i].has_ms) {
    v = strtol(arg, &end, 10);
    if (!*arg || *end || v < 0 || v > 600000)
      return api_error(srv, IMAPMEM_PARSE, "fault \"%s\": DELAY wants milliseconds", spec);
    f.ms = (int)v;
  } else if (actions[i].has_text) {
    snprintf(f.text, sizeof f.text, "%s", *arg ? arg : "injected fault");
    for (char *c = f.text; *c; c++) {
      if (*c == '\r' || *c == '\n') *c = ' ';
      if ((unsigned char)*c >= 0x80) *c = '?';
    }
  } else if (*arg) {
    return api_error(srv, IMAPMEM_PARSE, "fault \"%s\": %s takes no argument", spec,
                     actions[i].name);
  }
  pthread_mutex_lock(&srv->lock);
  struct fault *nf = mem_realloc(srv->faults, (srv->nfaults + 1) * sizeof *nf);
  if (nf) {
    nf[srv->nfaults++] = f;
    srv->faults = nf;
    atomic_store(&srv->nfaults_set, (int)srv->nfaults);
  }
  pthread_mutex_unlock(&srv->lock);
  return nf ? IMAPMEM_OK : api_error(srv, IMAPMEM_NOMEM, "out of memory");
}

int imapmem_clear_faults(imapmem *srv) {
  if (!srv) return api_error(srv, IMAPMEM_MISUSE, "imapmem_clear_faults: NULL handle");
  pthread_mutex_lock(&srv->lock);
  free(srv->faults);
  srv->faults = NULL;
  srv->nfaults = 0;
  atomic_store(&srv->nfaults_set, 0);
  atomic_store(&srv->delay_ms, 0);
  atomic_store(&srv->chunk, 0);
  pthread_mutex_unlock(&srv->lock);
  return IMAPMEM_OK;
}

void imapmem_free(imapmem *srv) {
  if (!srv) return;
  imapmem_stop(srv);
  for (size_t i = 0; i < srv->nusers; i++) user_free(srv->users[i]);
  user_free(srv->shared);
  free(srv->users);
  free(srv->sessions);
  free(srv->notifiers);
  free(srv->faults);
  tls_forget(srv);
  for (int i = 0; i < 2; i++)
    if (srv->stop_pipe[i] >= 0) close(srv->stop_pipe[i]);
  pthread_mutex_destroy(&srv->lock);
  pthread_mutex_destroy(&srv->wait_lock);
  pthread_cond_destroy(&srv->wait_cond);
  free(srv);
}

/*
** ===========================================================================
** 12  main: the imapmem program, a thin user of the public API
** ===========================================================================
** Owns: the command line, the ready line on stdout, signals and the exit status.
** Calls: the public API only (imapmem.h).
** Locking: none of its own; signals reach it through a pipe.
**
** Everything it prints goes to stderr, except the ready line and the lines that say a
** SIGHUP or SIGUSR1 is done.
*/
#ifdef IMAPMEM_MAIN
static const char usage[] =
  "usage: imapmem [options] [PATH...]\n"
  "An in-memory IMAP4rev1 server for tests. PATHs (mbox files or fixture directories)\n"
  "load into the first --user, or into user 'test' (password 'test').\n"
  "\n"
  "  -p, --port N               port to listen on (default 1143; 0 picks a free one)\n"
  "  -b, --bind ADDR            address to listen on (default 127.0.0.1; ::1 for IPv6)\n"
  "  -u, --user NAME:PASSWORD[:PATH]\n"
  "                             add a user, loading PATH (repeatable)\n"
  "      --uidvalidity N        UIDVALIDITY of loaded and new mailboxes (default: now)\n"
  "      --max-connections N    concurrent sessions (default 1000)\n"
  "      --idle-timeout SECONDS autologout of idle sessions (default 1800)\n"
  "      --stdio                serve one session on stdin/stdout, logged in (PREAUTH)\n"
  "      --stdio-tls            the same, in TLS from the first byte (TLS build only)\n"
  "      --save DIR             write the mailboxes to DIR as mbox files on exit and on\n"
  "                             SIGUSR1 (SIGHUP resets them to the loaded fixtures)\n"
  "      --exit-with-parent     exit when the parent process ends or stdin closes\n"
  "      --capability -NAME|+NAME\n"
  "                             switch an extension off or on (IDLE, MOVE, UIDPLUS, ...)\n"
  "      --trace                write the protocol transcript to stderr\n"
  "      --strict-expunge       FETCH/STORE of a message another session expunged answer\n"
  "                             NO [EXPUNGEISSUED] (default: as it was / no change)\n"
  "      --imap-version both|rev1|rev2\n"
  "                             advertise IMAP4rev1 and IMAP4rev2 (default; a client ENABLEs\n"
  "                             IMAP4rev2), only IMAP4rev1, or only IMAP4rev2 (RFC 9051 for\n"
  "                             every session, no ENABLE needed)\n"
  "      --fault SPEC           misbehave on purpose, e.g. 'APPEND=NO [OVERQUOTA] full',\n"
  "                             '#3=DROP', 'delay=200', 'chunk=1' (see the README)\n"
  "      --nomodseq MAILBOX     MAILBOX has no mod-sequences: SELECT answers [NOMODSEQ]\n"
  "      --special-use MAILBOX:ROLES  give MAILBOX these special-use roles (\\Sent ...;\n"
  "                             none after the ':' for none), not those of its name\n"
  "                             (repeatable; CONDSTORE, RFC 7162 3.1.2.2)\n"
  "      --append-limit BYTES   refuse larger APPENDs with NO [TOOBIG]; advertised as\n"
  "                             APPENDLIMIT=BYTES (default and most: the 64 MiB literal limit)\n"
  "      --shared PATH          load PATH as the shared tree, \"Shared/...\" (repeatable)\n"
  "      --save-shared DIR      write the shared tree to DIR on exit and on SIGUSR1\n"
  "      --namespace OTHER,SHARED\n"
  "                             the namespace prefixes (default 'Other Users/,Shared/')\n"
  "      --quota NAME:STORAGE=KIB[,MESSAGE=N]\n"
  "                             the user's quota limits (RFC 9208; repeatable): APPEND,\n"
  "                             COPY and MOVE past them answer NO [OVERQUOTA]\n"
  "      --oauth-token NAME:TOKEN\n"
  "                             NAME logs in with AUTH=OAUTHBEARER or XOAUTH2 and TOKEN\n"
  "      --admin NAME           NAME may log in as any user (SASL authorization identity)\n"
  "TLS, in a build with it (make TLS=openssl; STARTTLS is then offered on the plain port):\n"
  "      --imaps-port N         also listen for implicit TLS (IMAPS) on N (0: a free port)\n"
  "      --tls-cert FILE        the certificate (and chain) to present, PEM\n"
  "      --tls-key FILE         its private key, PEM (default: generate both in memory)\n"
  "      --tls-cert-out FILE    write the certificate clients should trust (PEM) before\n"
  "                             the ready line\n"
  "      --require-tls          no LOGIN or AUTHENTICATE before STARTTLS (LOGINDISABLED)\n"
  "      --tls-fault KIND       present a defective certificate: expired, not-yet-valid,\n"
  "                             wrong-host, self-signed; or fail every handshake: handshake\n"
  "  -h, --help                 show this help\n"
  "  -V, --version              show the version\n"
  "\n"
  "When ready it prints one line to stdout, 'imapmem: ' and the address and port\n"
  "(with --imaps-port, then ', imaps ' and the address and port of that).\n"
  "SIGTERM or SIGINT ends it: sessions get '* BYE' and it exits 0.\n";

struct user_opt {
  char *name, *password, *path;
};

static int die_usage(const char *fmt, const char *arg) {
  fprintf(stderr, "imapmem: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\nTry 'imapmem --help'.\n");
  return 2;
}

static int number_arg(const char *s, long min, long max, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (!*s || *end || errno || v < min || v > max) return 0;
  *out = v;
  return 1;
}

/*
** --quota NAME:STORAGE=KIB[,MESSAGE=N] (either resource, or both, in any order): the name
** into user, the limits (or IMAPMEM_NO_LIMIT) into *kib and *messages. 0 if malformed.
*/
static int quota_arg(const char *spec, char *user, size_t cap, long long *kib,
                     long long *messages) {
  const char *colon = strrchr(spec, ':');
  if (!colon || colon == spec || (size_t)(colon - spec) >= cap) return 0;
  snprintf(user, cap, "%.*s", (int)(colon - spec), spec);
  *kib = *messages = IMAPMEM_NO_LIMIT;
  for (const char *p = colon + 1;;) {
    size_t n = strcspn(p, ",");
    char item[64], *eq;
    long v;
    if (n == 0 || n >= sizeof item) return 0;
    snprintf(item, sizeof item, "%.*s", (int)n, p);
    if (!(eq = strchr(item, '=')) || !number_arg(eq + 1, 0, LONG_MAX, &v)) return 0;
    *eq = 0;
    if (!strcasecmp(item, "STORAGE") && *kib < 0) *kib = v;
    else if (!strcasecmp(item, "MESSAGE") && *messages < 0) *messages = v;
    else return 0;
    if (!p[n]) return 1;
    p += n + 1;
  }
}

/*
** --user NAME:PASSWORD[:PATH], split in place. "\:" stands for ':' and "\\" for a
** backslash, so a name or password may hold them; any other backslash is itself.
*/
static int user_arg(char *val, struct user_opt *u) {
  char *field[3] = {val, NULL, NULL};
  int nfield = 1;
  char *w = val;
  for (char *r = val; *r; r++) {
    if (*r == '\\' && (r[1] == ':' || r[1] == '\\')) {
      *w++ = *++r;
    } else if (*r == ':' && nfield < 3) {
      *w++ = 0;
      field[nfield++] = w;
    } else {
      *w++ = *r;
    }
  }
  *w = 0;
  if (nfield < 2 || !*field[0]) return 0;
  u->name = field[0];
  u->password = field[1];
  u->path = field[2] && *field[2] ? field[2] : NULL;
  return 1;
}

struct options {
  const char *bind;
  long port;
  struct imapmem_config cfg;
  struct user_opt *users;
  int nusers;
  const char **paths;
  int npaths;
  const char **caps;          /* "-NAME" / "+NAME" */
  int ncaps;
  const char **faults;
  int nfaults;
  const char **nomodseq;      /* mailboxes of the first user */
  int nnomodseq;
  char **special_use;         /* MAILBOX:ROLES of the first user, split at the last ':' */
  int nspecial_use;
  const char **quotas;        /* --quota NAME:STORAGE=KIB[,MESSAGE=N] */
  int nquotas;
  char **oauth_tokens;        /* "NAME:TOKEN" */
  int noauth_tokens;
  const char **admins;
  int nadmins;
  const char *save;
  const char **shared;        /* --shared PATHs */
  int nshared;
  const char *save_shared, *namespace;
  long append_limit;          /* -1: the default */
  int stdio, stdio_tls, exit_with_parent, trace;
  const char *tls_cert, *tls_key, *tls_cert_out, *tls_fault;
  long imaps_port;            /* -1: none */
  int require_tls;
  const char *tls_option;     /* the first TLS option given, for the error without TLS */
};

/* Parse the command line into o. Returns -1 to go on, or the exit status. */
static int parse_options(int argc, char **argv, struct options *o) {
  int only_paths = 0;
  long num;
  for (int i = 1; i < argc; i++) {
    char *a = argv[i], *val = NULL;
    if (only_paths || a[0] != '-' || !a[1]) {
      o->paths[o->npaths++] = a;
      continue;
    }
    if (strcmp(a, "--") == 0) {
      only_paths = 1;
      continue;
    }
    char name[64];
    char *eq = strncmp(a, "--", 2) == 0 ? strchr(a, '=') : NULL;
    if (eq) {
      snprintf(name, sizeof name, "%.*s", (int)(eq - a), a);
      val = eq + 1;
    } else if (a[1] != '-' && a[2]) {  /* -p1143 */
      snprintf(name, sizeof name, "%.2s", a);
      val = a + 2;
    } else {
      snprintf(name, sizeof name, "%s", a);
    }
    static const char *const flags[] = {"-h", "--help", "-V", "--version", "--stdio",
                                        "--exit-with-parent", "--trace", "--strict-expunge",
                                        "--require-tls", "--stdio-tls"};
    static const char *const valued[] = {"-p", "--port", "-b", "--bind", "-u", "--user",
                                         "--uidvalidity", "--max-connections",
                                         "--idle-timeout", "--save", "--capability",
                                         "--fault", "--nomodseq", "--special-use", "--append-limit",
                                         "--quota",
                                         "--imaps-port", "--tls-cert", "--tls-key",
                                         "--tls-cert-out", "--tls-fault", "--oauth-token",
                                         "--admin", "--imap-version", "--shared",
                                         "--save-shared", "--namespace"};
    int is_flag = 0, known = 0;
    const char *option = NULL;   /* name, as a string that outlives this loop */
    for (size_t k = 0; k < sizeof flags / sizeof flags[0]; k++)
      if (!strcmp(name, flags[k])) is_flag = 1, option = flags[k];
    for (size_t k = 0; k < sizeof valued / sizeof valued[0]; k++)
      if (!strcmp(name, valued[k])) known = 1, option = valued[k];
    if (!is_flag && !known) return die_usage("unknown option: %s", name);
    if (is_flag && val) return die_usage("option %s takes no value", name);
    if (!is_flag && !val) {
      if (i + 1 >= argc) return die_usage("option %s needs a value", name);
      val = argv[++i];
    }
    if (!o->tls_option && (!strncmp(name, "--tls-", 6) || !strcmp(name, "--imaps-port") ||
                           !strcmp(name, "--require-tls") || !strcmp(name, "--stdio-tls")))
      o->tls_option = option;
    if (!strcmp(name, "-h") || !strcmp(name, "--help")) {
      fputs(usage, stdout);
      return 0;
    } else if (!strcmp(name, "-V") || !strcmp(name, "--version")) {
      const char *tls = imapmem_tls_library();
      printf("imapmem %s%s%s%s\n", imapmem_version(), tls ? " (TLS: " : "", tls ? tls : "",
             tls ? ")" : "");
      return 0;
    } else if (!strcmp(name, "-p") || !strcmp(name, "--port")) {
      if (!number_arg(val, 0, 65535, &o->port)) return die_usage("invalid port: %s", val);
    } else if (!strcmp(name, "-b") || !strcmp(name, "--bind")) {
      o->bind = val;
    } else if (!strcmp(name, "-u") || !strcmp(name, "--user")) {
      struct user_opt *u = &o->users[o->nusers++];
      if (!user_arg(val, u)) return die_usage("--user wants NAME:PASSWORD[:PATH], not %s", val);
    } else if (!strcmp(name, "--uidvalidity")) {
      if (!number_arg(val, 1, UINT32_MAX, &num)) return die_usage("invalid UIDVALIDITY: %s", val);
      o->cfg.uidvalidity = (uint32_t)num;
    } else if (!strcmp(name, "--max-connections")) {
      if (!number_arg(val, 1, 1000000, &num)) return die_usage("invalid connection limit: %s", val);
      o->cfg.max_connections = (int)num;
    } else if (!strcmp(name, "--idle-timeout")) {
      if (!number_arg(val, 1, IMAPMEM_MAX_IDLE, &num))
        return die_usage("invalid idle timeout (1-2147483 seconds): %s", val);
      o->cfg.idle_timeout = (int)num;
    } else if (!strcmp(name, "--stdio")) {
      o->stdio = 1;
    } else if (!strcmp(name, "--stdio-tls")) {
      o->stdio = o->stdio_tls = 1;
    } else if (!strcmp(name, "--exit-with-parent")) {
      o->exit_with_parent = 1;
    } else if (!strcmp(name, "--trace")) {
      o->trace = 1;
    } else if (!strcmp(name, "--strict-expunge")) {
      o->cfg.strict_expunge = 1;
    } else if (!strcmp(name, "--imap-version")) {
      static const char *const versions[] = {"both", "rev1", "rev2"};   /* ORDER IMAPMEM_REV */
      int v = 0;
      while (v < 3 && strcasecmp(val, versions[v]) != 0) v++;
      if (v == 3) return die_usage("--imap-version wants both, rev1 or rev2, not %s", val);
      o->cfg.imap_version = v;
    } else if (!strcmp(name, "--save")) {
      o->save = val;
    } else if (!strcmp(name, "--capability")) {
      if (val[0] != '-' && val[0] != '+')
        return die_usage("--capability wants -NAME or +NAME, not %s", val);
      o->caps[o->ncaps++] = val;
    } else if (!strcmp(name, "--fault")) {
      o->faults[o->nfaults++] = val;
    } else if (!strcmp(name, "--nomodseq")) {
      o->nomodseq[o->nnomodseq++] = val;
    } else if (!strcmp(name, "--shared")) {
      o->shared[o->nshared++] = val;
    } else if (!strcmp(name, "--save-shared")) {
      o->save_shared = val;
    } else if (!strcmp(name, "--namespace")) {
      if (!strchr(val, ',')) return die_usage("--namespace wants OTHER,SHARED, not %s", val);
      o->namespace = val;
    } else if (!strcmp(name, "--special-use")) {
      char *colon = strrchr(val, ':');   /* roles hold no ':'; a mailbox name may */
      if (!colon || colon == val)
        return die_usage("--special-use wants MAILBOX:ROLES (Sent:\\Sent), not %s", val);
      *colon = 0;
      o->special_use[o->nspecial_use++] = val;
    } else if (!strcmp(name, "--oauth-token")) {
      if (!strchr(val, ':') || val[0] == ':' || !strchr(val, ':')[1])
        return die_usage("--oauth-token wants NAME:TOKEN, not %s", val);
      o->oauth_tokens[o->noauth_tokens++] = val;
    } else if (!strcmp(name, "--admin")) {
      o->admins[o->nadmins++] = val;
    } else if (!strcmp(name, "--append-limit")) {
      if (!number_arg(val, 0, LONG_MAX, &o->append_limit))
        return die_usage("invalid append limit: %s", val);
    } else if (!strcmp(name, "--quota")) {
      char user[256];
      long long kib, n;
      if (!quota_arg(val, user, sizeof user, &kib, &n))
        return die_usage("--quota wants NAME:STORAGE=KIB[,MESSAGE=N], not %s", val);
      o->quotas[o->nquotas++] = val;
    } else if (!strcmp(name, "--imaps-port")) {
      if (!number_arg(val, 0, 65535, &o->imaps_port)) return die_usage("invalid port: %s", val);
    } else if (!strcmp(name, "--tls-cert")) {
      o->tls_cert = val;
    } else if (!strcmp(name, "--tls-key")) {
      o->tls_key = val;
    } else if (!strcmp(name, "--tls-cert-out")) {
      o->tls_cert_out = val;
    } else if (!strcmp(name, "--tls-fault")) {
      o->tls_fault = val;
    } else if (!strcmp(name, "--require-tls")) {
      o->require_tls = 1;
    } else {
      return die_usage("unknown option: %s", a);
    }
  }
  if (o->tls_option && !imapmem_tls_library()) {
    fprintf(stderr, "imapmem: %s needs TLS, and this imapmem was built without it.\n"
            "Build it with 'make TLS=openssl' (Debian: apt-get install libssl-dev).\n",
            o->tls_option);
    return 2;
  }
  if (o->stdio_tls && (o->imaps_port >= 0 || o->require_tls))
    return die_usage("%s", "--imaps-port and --require-tls do not go with --stdio-tls");
  if (o->tls_option && o->stdio && !o->stdio_tls)
    return die_usage("%s does not go with --stdio (--stdio-tls serves it in TLS)", o->tls_option);
  if (!o->tls_cert != !o->tls_key) return die_usage("%s", "--tls-cert and --tls-key go together");
  if (o->tls_fault && o->tls_cert)
    return die_usage("%s", "--tls-fault uses generated certificates, not --tls-cert");
  if (o->nusers == 0) {
    o->users[0].name = "test";
    o->users[0].password = "test";
    o->nusers = 1;
  }
  return -1;
}

/* The name in the first k bytes of a capability: "APPENDLIMIT=64" is APPENDLIMIT, but
   "CONTEXT=SORT" and "SORT=DISPLAY" are names of their own. */
static size_t capability_name_len(const char *p, size_t k) {
  size_t e = strcspn(p, "= ");
  return e < k && p[e] == '=' && isdigit((unsigned char)p[e + 1]) ? e : k;
}

/* Is word one of the space-separated words of list? Both are names: "=n" is left out. */
static int has_word(const char *list, const char *word, size_t n) {
  n = capability_name_len(word, n);
  for (const char *p = list; *p;) {
    size_t k = strcspn(p, " ");
    size_t name = capability_name_len(p, k);
    if (name == n && strncasecmp(p, word, n) == 0) return 1;
    p += k + (p[k] == ' ');
  }
  return 0;
}

/* --capability -NAME|+NAME, saying on stderr what else it switched (RFC dependencies). */
static int switch_capability(imapmem *srv, const char *arg) {
  char *before = NULL, *after = NULL;
  int rc = imapmem_capabilities(srv, &before);
  if (rc == IMAPMEM_OK) rc = imapmem_set_capability(srv, arg + 1, arg[0] == '+');
  if (rc == IMAPMEM_OK) rc = imapmem_capabilities(srv, &after);
  for (int on = 0; rc == IMAPMEM_OK && on < 2; on++) {
    const char *from = on ? before : after, *to = on ? after : before;
    for (const char *p = to; *p;) {   /* words in `to` but not in `from` */
      size_t k = strcspn(p, " ");
      if (!has_word(from, p, k) && !has_word(arg + 1, p, k))
        fprintf(stderr, "imapmem: --capability %s also switched %s %.*s\n", arg,
                on ? "on" : "off", (int)k, p);
      p += k + (p[k] == ' ');
    }
  }
  imapmem_release(before);
  imapmem_release(after);
  return rc;
}

static void trace_to_stderr(void *arg, int session, char dir, const char *line, size_t len) {
  (void)arg;
  fprintf(stderr, "imapmem[%d] %c: %.*s\n", session, dir, (int)len, line);
}

/* --save: every user's mailboxes, the first in DIR, others (if any) in DIR/NAME. */
static int save_all(imapmem *srv, struct options *o) {
  int rc = IMAPMEM_OK;
  for (int i = 0; i < o->nusers; i++) {
    char dir[4096];
    if (o->nusers == 1) snprintf(dir, sizeof dir, "%s", o->save);
    else snprintf(dir, sizeof dir, "%s/%s", o->save, o->users[i].name);
    int r = imapmem_save(srv, o->users[i].name, dir);
    if (r != IMAPMEM_OK) {
      fprintf(stderr, "imapmem: --save: %s\n", imapmem_errmsg(srv));
      rc = r;
    }
  }
  if (o->save_shared && imapmem_save_shared(srv, o->save_shared) != IMAPMEM_OK) {
    fprintf(stderr, "imapmem: --save-shared: %s\n", imapmem_errmsg(srv));
    rc = IMAPMEM_IO;
  }
  return rc;
}

/* Has the parent gone, or (when stdin is a pipe or socket) stdin reached its end? */
static int parent_gone(pid_t parent, int watch_stdin) {
  if (getppid() != parent) return 1;
  if (!watch_stdin) return 0;
  struct pollfd pf = {0, POLLIN, 0};
  if (poll(&pf, 1, 0) <= 0) return 0;
  char tmp[256];
  ssize_t r = read(0, tmp, sizeof tmp);
  return r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN);
}

/*
** Signals reach the main loop through a pipe: the handler only writes the signal's
** number, which is async-signal-safe, and the loop polls the pipe (POSIX has no portable
** sigtimedwait). The server's threads block these signals, so the handler runs here.
*/
static int signal_pipe[2] = {-1, -1};

static void signal_to_pipe(int sig) {
  int saved = errno;
  unsigned char b = (unsigned char)sig;
  ssize_t r = write(signal_pipe[1], &b, 1);
  (void)r;                   /* a full pipe already holds a signal to handle */
  errno = saved;
}

/* The next signal within ms milliseconds, or 0. */
static int signal_next(int ms) {
  struct pollfd pf = {signal_pipe[0], POLLIN, 0};
  unsigned char b;
  if (poll(&pf, 1, ms) > 0 && read(signal_pipe[0], &b, 1) == 1) return b;
  return 0;
}

/* A whole file, NUL-terminated, for --tls-cert and --tls-key; NULL (said on stderr) if not. */
static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "imapmem: %s: %s\n", path, strerror(errno));
    return NULL;
  }
  char *text = NULL;
  size_t n = 0, cap = 0, r;
  int ok = 1;
  do {
    if (n + 1 >= cap) {
      char *t = realloc(text, cap = cap ? 2 * cap : 8192);
      if (!t) {
        ok = 0;
        break;
      }
      text = t;
    }
    n += r = fread(text + n, 1, cap - n - 1, f);
  } while (r > 0);
  ok = ok && !ferror(f);
  fclose(f);
  if (!ok) {
    fprintf(stderr, "imapmem: %s: cannot read it\n", path);
    free(text);
    return NULL;
  }
  text[n] = 0;
  return text;
}

/* The TLS options, in a build with TLS: STARTTLS is offered in any case. */
static int setup_tls(imapmem *srv, struct options *o) {
  char *cert = NULL, *key = NULL;
  if (o->tls_cert && (!(cert = read_file(o->tls_cert)) || !(key = read_file(o->tls_key)))) {
    free(cert);
    return IMAPMEM_IO;       /* read_file said why */
  }
  int rc = imapmem_set_tls(srv, cert, key);
  free(cert);
  free(key);
  if (rc == IMAPMEM_OK && o->tls_fault) rc = imapmem_set_tls_fault(srv, o->tls_fault);
  if (rc == IMAPMEM_OK && o->imaps_port >= 0) rc = imapmem_set_imaps_port(srv, (int)o->imaps_port);
  if (rc == IMAPMEM_OK && o->require_tls) rc = imapmem_set_require_tls(srv, 1);
  return rc;
}

/*
** --tls-cert-out: the certificate a client should trust, written to a temporary file
** beside FILE and renamed over it, so that a test polling for FILE never reads half of
** it. Only a certificate: the private keys never touch the disk.
*/
static int write_cert(imapmem *srv, const char *path) {
  char *pem = NULL, tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp%ld", path, (long)getpid());
  FILE *f = NULL;
  int ok = imapmem_tls_cert(srv, &pem) == IMAPMEM_OK && (f = fopen(tmp, "w")) != NULL;
  if (ok) ok = fputs(pem, f) >= 0;
  if (f) ok = fclose(f) == 0 && ok;
  if (ok) ok = rename(tmp, path) == 0;
  if (!ok) {
    fprintf(stderr, "imapmem: --tls-cert-out %s: %s\n", path,
            pem ? strerror(errno) : imapmem_errmsg(srv));
    if (f) unlink(tmp);
  }
  imapmem_release(pem);
  return ok;
}

/* Load the fixtures and serve; print the ready line; run until told to stop. */
static int serve(struct options *o) {
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGHUP);
  sigaddset(&sigs, SIGUSR1);
  if (pipe(signal_pipe) < 0) {
    fprintf(stderr, "imapmem: pipe: %s\n", strerror(errno));
    return 2;
  }
  for (int i = 0; i < 2; i++) {
    fcntl(signal_pipe[i], F_SETFL, O_NONBLOCK);
    fcntl(signal_pipe[i], F_SETFD, FD_CLOEXEC);
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = signal_to_pipe;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGHUP, &sa, NULL);
  sigaction(SIGUSR1, &sa, NULL);
  pthread_sigmask(SIG_BLOCK, &sigs, NULL);   /* every thread started now inherits this */
  signal(SIGPIPE, SIG_IGN);
  pid_t parent = getppid();
  struct stat st;
  int watch_stdin = o->exit_with_parent && !o->stdio && fstat(0, &st) == 0 &&
                    (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode));
  imapmem *srv;
  if (imapmem_new(&o->cfg, &srv) != IMAPMEM_OK) {
    fprintf(stderr, "imapmem: out of memory\n");
    return 2;
  }
  int rc = IMAPMEM_OK;
  for (int i = 0; i < o->nusers && rc == IMAPMEM_OK; i++) {
    rc = imapmem_add_user(srv, o->users[i].name, o->users[i].password);
    if (rc == IMAPMEM_OK && o->users[i].path)
      rc = imapmem_load(srv, o->users[i].name, o->users[i].path);
  }
  for (int i = 0; i < o->npaths && rc == IMAPMEM_OK; i++)
    rc = imapmem_load(srv, o->users[0].name, o->paths[i]);
  for (int i = 0; i < o->nshared && rc == IMAPMEM_OK; i++)
    rc = imapmem_load_shared(srv, o->shared[i]);
  if (rc == IMAPMEM_OK && o->namespace) {
    char other[256];
    const char *comma = strchr(o->namespace, ',');
    snprintf(other, sizeof other, "%.*s", (int)(comma - o->namespace), o->namespace);
    rc = imapmem_set_namespace(srv, other, comma + 1);
  }
  for (int i = 0; i < o->ncaps && rc == IMAPMEM_OK; i++) rc = switch_capability(srv, o->caps[i]);
  for (int i = 0; i < o->nfaults && rc == IMAPMEM_OK; i++) rc = imapmem_fault(srv, o->faults[i]);
  for (int i = 0; i < o->nnomodseq && rc == IMAPMEM_OK; i++)
    rc = imapmem_set_nomodseq(srv, o->users[0].name, o->nomodseq[i], 1);
  for (int i = 0; i < o->nspecial_use && rc == IMAPMEM_OK; i++) {
    const char *box = o->special_use[i];
    rc = imapmem_set_special_use(srv, o->users[0].name, box, box + strlen(box) + 1);
  }
  for (int i = 0; i < o->noauth_tokens && rc == IMAPMEM_OK; i++) {
    char *colon = strchr(o->oauth_tokens[i], ':');   /* checked by parse_options */
    *colon = 0;
    rc = imapmem_set_oauth_token(srv, o->oauth_tokens[i], colon + 1);
  }
  for (int i = 0; i < o->nadmins && rc == IMAPMEM_OK; i++)
    rc = imapmem_set_admin(srv, o->admins[i], 1);
  if (rc == IMAPMEM_OK && o->append_limit >= 0)
    rc = imapmem_set_append_limit(srv, (size_t)o->append_limit);
  for (int i = 0; i < o->nquotas && rc == IMAPMEM_OK; i++) {
    char user[256];
    long long kib, n;
    quota_arg(o->quotas[i], user, sizeof user, &kib, &n);
    rc = imapmem_set_quota(srv, user, kib, n);
  }
  if (rc == IMAPMEM_OK && (!o->stdio || o->stdio_tls) && imapmem_tls_library())
    rc = setup_tls(srv, o);
  if (rc == IMAPMEM_OK && o->trace) imapmem_set_trace(srv, trace_to_stderr, NULL);
  /* --stdio-tls: the certificate to trust is there before the session's handshake */
  int cert_first = o->stdio_tls && o->tls_cert_out && rc == IMAPMEM_OK;
  if (cert_first && !write_cert(srv, o->tls_cert_out)) {
    imapmem_free(srv);
    return 2;
  }
  if (rc == IMAPMEM_OK && o->stdio_tls)
    rc = imapmem_serve_fd_tls(srv, 0, 1, o->users[0].name, IMAPMEM_FD_IMAPS);
  else if (rc == IMAPMEM_OK && o->stdio)
    rc = imapmem_serve_fd(srv, 0, 1, o->users[0].name);
  else if (rc == IMAPMEM_OK) rc = imapmem_start(srv, o->bind, (int)o->port);
  if (rc != IMAPMEM_OK) {
    if (*imapmem_errmsg(srv)) fprintf(stderr, "imapmem: %s\n", imapmem_errmsg(srv));
    imapmem_free(srv);
    return 2;
  }
  if (!cert_first && o->tls_cert_out && !write_cert(srv, o->tls_cert_out)) {
    imapmem_free(srv);
    return 2;
  }
  if (!o->stdio && imapmem_imaps_port(srv) >= 0) {
    printf("imapmem: listening on %s, imaps %s\n", imapmem_address(srv),
           imapmem_imaps_address(srv));
    fflush(stdout);
  } else if (!o->stdio) {
    printf("imapmem: listening on %s\n", imapmem_address(srv));
    fflush(stdout);
  }
  pthread_sigmask(SIG_UNBLOCK, &sigs, NULL);   /* only this thread takes them */
  struct imapmem_until none = {.kind = IMAPMEM_UNTIL_NO_SESSIONS};
  for (;;) {
    int sig = signal_next(100);
    if (sig == SIGTERM || sig == SIGINT) break;   /* a clean stop says nothing */
    /* SIGHUP and SIGUSR1 say when they are done, so a test can wait for the line; with
       --stdio, stdout is the session's and they say it on stderr */
    FILE *said = o->stdio ? stderr : stdout;
    if (sig == SIGHUP) {
      if (imapmem_reset(srv) == IMAPMEM_OK) fprintf(said, "imapmem: reset\n");
      else fprintf(stderr, "imapmem: reset: %s\n", imapmem_errmsg(srv));
      fflush(said);
    }
    if (sig == SIGUSR1 && !o->save)
      fprintf(stderr, "imapmem: SIGUSR1 saves only with --save DIR\n");
    if (sig == SIGUSR1 && o->save) {
      if (save_all(srv, o) == IMAPMEM_OK) fprintf(said, "imapmem: saved %s\n", o->save);
      fflush(said);
    }
    if (o->stdio && imapmem_wait(srv, &none, 0) == IMAPMEM_OK) break;   /* session over */
    if (o->exit_with_parent && parent_gone(parent, watch_stdin)) {
      fprintf(stderr, "imapmem: parent gone, stopping\n");
      break;
    }
  }
  imapmem_stop(srv);
  rc = o->save ? save_all(srv, o) : IMAPMEM_OK;
  imapmem_free(srv);
  return rc == IMAPMEM_OK ? 0 : 1;
}

int main(int argc, char **argv) {
  struct options o;
  memset(&o, 0, sizeof o);
  o.bind = "127.0.0.1";
  o.port = 1143;
  o.append_limit = -1;
  o.imaps_port = -1;
  o.users = calloc((size_t)argc + 1, sizeof *o.users);
  o.paths = calloc((size_t)argc + 1, sizeof *o.paths);
  o.caps = calloc((size_t)argc + 1, sizeof *o.caps);
  o.faults = calloc((size_t)argc + 1, sizeof *o.faults);
  o.nomodseq = calloc((size_t)argc + 1, sizeof *o.nomodseq);
  o.shared = calloc((size_t)argc + 1, sizeof *o.shared);
  o.special_use = calloc((size_t)argc + 1, sizeof *o.special_use);
  o.quotas = calloc((size_t)argc + 1, sizeof *o.quotas);
  o.oauth_tokens = calloc((size_t)argc + 1, sizeof *o.oauth_tokens);
  o.admins = calloc((size_t)argc + 1, sizeof *o.admins);
  int rc = 2;
  if (o.users && o.paths && o.caps && o.faults && o.nomodseq && o.special_use && o.quotas &&
      o.oauth_tokens && o.admins && o.shared) {
    rc = parse_options(argc, argv, &o);
    if (rc < 0) rc = serve(&o);
  }
  free(o.users);
  free(o.paths);
  free(o.caps);
  free(o.faults);
  free(o.nomodseq);
  free(o.shared);
  free(o.special_use);
  free(o.quotas);
  free(o.oauth_tokens);
  free(o.admins);
  return rc;
}
#endif /* IMAPMEM_MAIN */
