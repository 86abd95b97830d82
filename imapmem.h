/*
** imapmem.h -- the public API of imapmem, an in-memory IMAP4rev1 server for tests.
**
** A C or C++ test adds imapmem.c and imapmem.h to its build and links with -pthread.
** The whole lesson for an embedder:
**
**   imapmem *srv;
**   imapmem_new(NULL, &srv);                        (a NULL config means defaults)
**   imapmem_add_user(srv, "alice", "secret");
**   imapmem_load(srv, "alice", "fixtures/basic.mbox");
**   imapmem_start(srv, "127.0.0.1", 0);             (0 picks a free port)
**   ... connect to imapmem_port(srv) with the client under test ...
**   imapmem_stop(srv);                              (sessions get "* BYE")
**   imapmem_free(srv);
**
** Every function returns IMAPMEM_OK (0) or one of the codes below; imapmem_errmsg()
** gives the text of the last error on that handle. Library code never exits, aborts or
** prints. Strings passed in are copied: the caller may free them when the call returns.
**
** Threads: a handle may be used from any thread, but calls on one handle must not run
** concurrently with imapmem_free() on it, and imapmem_start() and imapmem_stop() not
** concurrently with each other. Functions that change the store (load, append,
** add_user) take the store's locks and may be called while the server is serving.
*/
#ifndef IMAPMEM_H
#define IMAPMEM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct imapmem imapmem;  /* opaque server handle */

/* Result codes. */
#define IMAPMEM_OK        0  /* success */
#define IMAPMEM_ERROR     1  /* a generic failure; see imapmem_errmsg() */
#define IMAPMEM_NOMEM     2  /* an allocation failed; nothing was changed */
#define IMAPMEM_IO        3  /* a file or socket operation failed */
#define IMAPMEM_PARSE     4  /* a fixture is malformed; errmsg is "file:line: what" */
#define IMAPMEM_NOTFOUND  5  /* no such user, mailbox or message */
#define IMAPMEM_EXISTS    6  /* the user or mailbox exists already */
#define IMAPMEM_MISUSE    7  /* the call is not allowed here (NULL handle, wrong order) */

/*
** Settings fixed when the server is created. A zeroed struct (or a NULL pointer to
** imapmem_new) means the defaults given beside each field.
*/
struct imapmem_config {
  uint32_t uidvalidity;      /* UIDVALIDITY of mailboxes without X-IMAPbase; 0: load time */
  int max_connections;       /* concurrent sessions; 0: 1000 */
  int idle_timeout;          /* autologout after this many idle seconds; 0: 1800 */
  size_t max_literal;        /* largest literal a client may send; 0: 64 MiB (at most 1 GiB) */
  int strict_expunge;        /* 1: FETCH and STORE of a message another session expunged
                                answer NO [EXPUNGEISSUED] (RFC 2180 4.1.2, 4.2.2); 0: FETCH
                                returns it as it was and STORE changes nothing (4.1.1), as
                                Dovecot and Cyrus do */
};

/*
** Create a server with the given configuration (NULL: defaults) and store it in *out.
** It has no users and does not listen until imapmem_start(). Returns IMAPMEM_NOMEM or
** IMAPMEM_MISUSE (out is NULL); on failure *out is NULL. Free it with imapmem_free().
*/
int imapmem_new(const struct imapmem_config *config, imapmem **out);

/*
** Add a user who logs in with name and password. The user gets an empty INBOX.
** Returns IMAPMEM_EXISTS if the name is taken. Names are case-sensitive.
*/
int imapmem_add_user(imapmem *srv, const char *name, const char *password);

/*
** Load a fixture into a user's mailboxes. path is an mbox file, which is loaded into
** INBOX, or a directory whose *.mbox files become mailboxes (INBOX.mbox in any case is
** INBOX, Work/Projects.mbox is "Work/Projects", a folder without its own mbox file is a
** \Noselect level). Messages are appended to mailboxes that already hold some. On error
** nothing is loaded and errmsg names the file and line: IMAPMEM_IO (unreadable),
** IMAPMEM_PARSE (malformed), IMAPMEM_NOTFOUND (no such user).
*/
int imapmem_load(imapmem *srv, const char *user, const char *path);

/*
** Load mbox bytes from memory into the user's mailbox (created if missing, with its
** parent levels). name is used in error messages in place of a file name (may be NULL).
*/
int imapmem_load_mbox(imapmem *srv, const char *user, const char *mailbox,
                      const char *bytes, size_t len, const char *name);

/*
** Start serving: bind addr ("127.0.0.1", "::1", ...; NULL means 127.0.0.1) and port
** (0 picks a free one), and accept connections in a background thread, one thread per
** session. Returns once the listener is bound, so a client may connect at once.
** IMAPMEM_IO if the address cannot be bound; IMAPMEM_MISUSE if already started.
*/
int imapmem_start(imapmem *srv, const char *addr, int port);

/* The port the server listens on (useful after port 0), or -1 if it is not listening. */
int imapmem_port(imapmem *srv);

/*
** The listening address in the form the program prints: "127.0.0.1:1143" or
** "[::1]:1143". The string is owned by the server and valid until imapmem_free().
*/
const char *imapmem_address(imapmem *srv);

/*
** Stop serving: close the listener, send "* BYE" to every open session, and join every
** thread. Idempotent; the store stays readable until imapmem_free().
*/
int imapmem_stop(imapmem *srv);

/*
** ---------------------------------------------------------------------------
** Serving without a port, and delivering while serving
** ---------------------------------------------------------------------------
*/

/*
** Serve one session on already-connected descriptors (a socketpair end, or stdin and
** stdout) in a background thread. in_fd and out_fd may be the same. If preauth_user is
** not NULL the session starts authenticated as that user ("* PREAUTH" greeting). The
** server owns the descriptors from now on and closes them when the session ends (also
** at imapmem_stop). Works whether or not imapmem_start() was called.
*/
int imapmem_serve_fd(imapmem *srv, int in_fd, int out_fd, const char *preauth_user);

/*
** Deliver a message into user's mailbox as if a client had APPENDed it: sessions that
** have the mailbox selected (or are idling on it) are told at once. flags may be NULL or
** a space-separated list like "\\Seen $Label1". The new UID goes to *uid_out if not NULL.
** IMAPMEM_NOTFOUND if there is no such user or mailbox.
*/
int imapmem_append(imapmem *srv, const char *user, const char *mailbox, const char *bytes,
                   size_t len, const char *flags, uint32_t *uid_out);

/*
** ---------------------------------------------------------------------------
** Reading the state back (for assertions). Returned memory is the caller's: free it
** with imapmem_release(). All of these may run while clients are connected.
** ---------------------------------------------------------------------------
*/

/* The user's mailbox names, one per line ("INBOX\nSent\nWork/Projects\n"), sorted. */
int imapmem_mailboxes(imapmem *srv, const char *user, char **names_out);

/* How many messages the mailbox holds now. */
int imapmem_count(imapmem *srv, const char *user, const char *mailbox, size_t *count_out);

/* The UIDs of the mailbox's messages, ascending, and how many there are. */
int imapmem_uids(imapmem *srv, const char *user, const char *mailbox, uint32_t **uids_out,
                 size_t *count_out);

/*
** The flags and keywords of message uid as one space-separated string, system flags
** first ("\\Seen \\Flagged $Label1"); \Recent is not included. IMAPMEM_NOTFOUND if the
** message does not exist.
*/
int imapmem_flags(imapmem *srv, const char *user, const char *mailbox, uint32_t uid,
                  char **flags_out);

/* A copy of message uid's bytes (CRLF, as clients see them) and their length. */
int imapmem_message(imapmem *srv, const char *user, const char *mailbox, uint32_t uid,
                    char **bytes_out, size_t *len_out);

/* Free memory returned by the functions above. NULL is a no-op. */
void imapmem_release(void *p);

/*
** Put every user's mailboxes back as they were after the last imapmem_load() or
** imapmem_load_mbox(): messages, flags, UIDs, UIDVALIDITY and subscriptions. Message
** bytes are shared, not copied, so this is fast. Sessions that have a mailbox selected
** are disconnected with "* BYE"; others stay.
*/
int imapmem_reset(imapmem *srv);

/*
** Write every mailbox of user to dir in the fixture layout (INBOX.mbox, Sent.mbox,
** Work/Projects.mbox), with Status/X-Status/X-Keywords flag headers and
** X-IMAPbase/X-UID, so that loading dir again gives the same UIDs, flags and bytes.
** *.mbox files in dir of mailboxes that no longer exist are removed; other files stay.
** A mailbox that cannot be written does not stop the others; the first error is returned.
*/
int imapmem_save(imapmem *srv, const char *user, const char *dir);

/*
** ---------------------------------------------------------------------------
** Waiting for what a client does, instead of sleeping
** ---------------------------------------------------------------------------
*/
enum imapmem_event_kind {
  IMAPMEM_UNTIL_LOGIN,      /* a session of user (any user if NULL) has authenticated */
  IMAPMEM_UNTIL_SELECTED,   /* a session of user has mailbox selected */
  IMAPMEM_UNTIL_IDLE,       /* a session of user is in IDLE with mailbox selected */
  IMAPMEM_UNTIL_FLAG,       /* message uid in mailbox has flag */
  IMAPMEM_UNTIL_NO_FLAG,    /* message uid in mailbox lacks flag (or is gone) */
  IMAPMEM_UNTIL_COUNT,      /* mailbox holds exactly count messages */
  IMAPMEM_UNTIL_NO_SESSIONS /* no session is open */
};
struct imapmem_until {
  enum imapmem_event_kind kind;
  const char *user;          /* NULL: any user (LOGIN, SELECTED, IDLE) */
  const char *mailbox;       /* SELECTED, IDLE, FLAG, NO_FLAG, COUNT */
  uint32_t uid;              /* FLAG, NO_FLAG */
  const char *flag;          /* FLAG, NO_FLAG: "\\Seen", "$Label1", ... */
  size_t count;              /* COUNT */
};

/*
** Block until the condition holds or timeout_ms passes. Returns IMAPMEM_OK when it
** holds, IMAPMEM_ERROR ("timed out after N ms: ...") when it did not in time. Any thread.
*/
int imapmem_wait(imapmem *srv, const struct imapmem_until *until, int timeout_ms);

/*
** ---------------------------------------------------------------------------
** Protocol transcript, capabilities and fault injection
** ---------------------------------------------------------------------------
*/

/*
** The transcript callback: one call per protocol line. session numbers sessions from 1;
** direction is 'C' (client to server) or 'S'. line has no CRLF and is valid only during
** the call; literals appear as "{N bytes}" and passwords as "***". It is called from
** session threads, so it must be thread-safe; it must not call back into the server.
*/
typedef void imapmem_trace_fn(void *arg, int session, char direction, const char *line,
                              size_t len);

/*
** Set (or with fn NULL, clear) the transcript callback. A session in the middle of a line
** when it is cleared may still deliver that one line to the old callback.
*/
int imapmem_set_trace(imapmem *srv, imapmem_trace_fn *fn, void *arg);

/*
** Switch an extension off (on = 0) or back on: "IDLE", "MOVE", "UIDPLUS", "UNSELECT",
** "NAMESPACE", "ID", "LITERAL+", "SASL-IR", "CHILDREN". Off means it is not advertised
** and its commands answer BAD as unknown. IMAPMEM_NOTFOUND for another name.
*/
int imapmem_set_capability(imapmem *srv, const char *name, int on);

/*
** Add a fault, in the same syntax as the program's --fault option:
**   "CMD=NO text"        answer command CMD (e.g. APPEND, "UID FETCH") with NO text
**   "CMD=BAD text"       ... with BAD text
**   "CMD=DROP"           close the connection when CMD arrives, with no reply
**   "CMD=BYE text"       send "* BYE text" and close
**   "CMD=ALERT text"     send "* OK [ALERT] text", then run CMD
**   "CMD=DELAY ms"       wait ms before answering CMD
**   "CMD=UIDVALIDITY"    give the selected mailbox (else INBOX) a new UIDVALIDITY and
**                        renumber its UIDs, then run CMD; sessions that had it selected
**                        get "* BYE" (clients must resync)
**   "#N=ACTION"          ACTION on the Nth command of every session (e.g. "#3=DROP")
**   "*=ACTION"           on every command
**   "delay=ms"           delay every response by ms
**   "chunk=n"            write responses n bytes at a time (1 shakes out client parsers)
** CMD is matched without regard to case. IMAPMEM_PARSE for a malformed spec.
*/
int imapmem_fault(imapmem *srv, const char *spec);

/* Remove every fault. */
int imapmem_clear_faults(imapmem *srv);

/* Stop if needed and free everything. NULL is a harmless no-op. */
void imapmem_free(imapmem *srv);

/*
** The text of the last error on this handle ("" if none). Owned by the server; valid
** until the next call on the handle from the same or another thread.
*/
const char *imapmem_errmsg(imapmem *srv);

/* A constant description of a result code ("out of memory", ...). */
const char *imapmem_errstr(int code);

/* The version string, e.g. "0.1.0". */
const char *imapmem_version(void);

#ifdef __cplusplus
}
#endif
#endif /* IMAPMEM_H */
