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
** concurrently with imapmem_free() on it. Functions that change the store (load, append,
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
  size_t max_literal;        /* largest literal a client may send; 0: 64 MiB */
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
