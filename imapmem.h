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
** Every function returns IMAPMEM_OK (0) or one of the codes below, and each says which
** codes it can return. After a non-OK return, imapmem_errmsg() gives the text of that
** error, in the thread that made the call. Library code never exits, aborts or prints.
** Strings passed in are copied: the caller may free them when the call returns.
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
  int imap_version;          /* which IMAP the server offers: IMAPMEM_REV1_AND_REV2 (0, the
                                default: both advertised, a client ENABLEs IMAP4rev2),
                                IMAPMEM_REV1_ONLY (no IMAP4rev2), IMAPMEM_REV2_ONLY (no
                                IMAP4rev1: every session follows RFC 9051 without ENABLE) */
};
#define IMAPMEM_REV1_AND_REV2 0
#define IMAPMEM_REV1_ONLY 1
#define IMAPMEM_REV2_ONLY 2

/*
** Create a server with the given configuration (NULL: defaults) and store it in *out.
** It has no users and does not listen until imapmem_start(). Free it with imapmem_free().
** Returns IMAPMEM_OK; IMAPMEM_MISUSE if out is NULL or a setting is out of range
** (negative, idle_timeout over 2147483, max_literal over 1 GiB, imap_version not one of
** the IMAPMEM_REV* values); IMAPMEM_NOMEM. On failure
** *out is NULL and imapmem_errmsg(NULL) says why.
*/
int imapmem_new(const struct imapmem_config *config, imapmem **out);

/*
** Add a user who logs in with name and password. The user gets an empty INBOX. Names are
** case-sensitive. Returns IMAPMEM_OK; IMAPMEM_EXISTS if the name is taken; IMAPMEM_MISUSE
** for a NULL argument or an empty name; IMAPMEM_NOMEM.
*/
int imapmem_add_user(imapmem *srv, const char *name, const char *password);

/*
** Give a user an OAuth 2.0 bearer token, with which it logs in by AUTHENTICATE OAUTHBEARER
** (RFC 7628) or XOAUTH2; a NULL token takes the user's away. One token per user: a new one
** replaces the old. The token is copied. May be called while clients are connected; a
** login that began before the call may see either token. Returns IMAPMEM_OK;
** IMAPMEM_NOTFOUND for an unknown user; IMAPMEM_MISUSE for a NULL srv or user, or an empty
** token or one with CR, LF or 0x01 in it; IMAPMEM_NOMEM.
*/
int imapmem_set_oauth_token(imapmem *srv, const char *user, const char *token);

/*
** Make a user an administrator (on != 0) or not: an administrator may log in as any other
** user by naming it as the SASL authorization identity (AUTHENTICATE PLAIN, SCRAM-*,
** OAUTHBEARER); anyone else who names another user gets NO [AUTHORIZATIONFAILED]. May be
** called while clients are connected. Returns IMAPMEM_OK; IMAPMEM_NOTFOUND for an
** unknown user; IMAPMEM_MISUSE for a NULL srv or user.
*/
int imapmem_set_admin(imapmem *srv, const char *user, int on);

/*
** Load a fixture into a user's mailboxes. path is an mbox file, which is loaded into
** INBOX, or a directory whose *.mbox files become mailboxes (INBOX.mbox in any case is
** INBOX, Work/Projects.mbox is "Work/Projects", a folder without its own mbox file is a
** \Noselect level) and whose ".subscriptions" file, if any, lists the subscribed names.
** Messages are appended to mailboxes that already hold some. A mailbox that gets its
** first messages takes its UIDVALIDITY from X-IMAPbase, else config.uidvalidity, else its
** file's bytes (the same in every run while the file is unchanged).
** Returns IMAPMEM_OK. On error nothing is loaded and errmsg names the file (and line):
** IMAPMEM_IO (unreadable); IMAPMEM_PARSE (not mbox, a file or folder whose name a client
** could not CREATE, such as "a*b.mbox" or ".hidden.mbox", or two files that are one
** mailbox, such as INBOX.mbox and inbox.mbox); IMAPMEM_ERROR (a mailbox would run out of
** UIDs); IMAPMEM_NOTFOUND (no such user); IMAPMEM_MISUSE (NULL argument); IMAPMEM_NOMEM.
*/
int imapmem_load(imapmem *srv, const char *user, const char *path);

/*
** Load mbox bytes from memory into the user's mailbox (created if missing, with its
** parent levels). name is used in error messages in place of a file name (may be NULL).
** Returns as imapmem_load(); IMAPMEM_MISUSE also for a mailbox name a client could not
** CREATE ("../x", "/abs", "a*b", "a//b", a level starting with '.').
*/
int imapmem_load_mbox(imapmem *srv, const char *user, const char *mailbox,
                      const char *bytes, size_t len, const char *name);

/*
** ---------------------------------------------------------------------------
** Other users' and shared mailboxes: namespaces (RFC 2342) and ACLs (RFC 4314)
** ---------------------------------------------------------------------------
** A user sees another user's mailbox as "Other Users/NAME/MAILBOX" and a mailbox of the
** shared tree as "Shared/MAILBOX", and only where the mailbox's ACL grants it; a mailbox's
** owner always has every right. The shared tree belongs to nobody: its mailboxes have only
** the rights their ACLs give.
*/

/*
** Load a fixture into the shared tree, as imapmem_load() loads a user's (an mbox file
** becomes its INBOX, "Shared/INBOX"). A folder's ".acl" file, if any, gives ACL entries
** here and in imapmem_load(): one a line, MAILBOX<TAB>IDENTIFIER<TAB>RIGHTS; blank lines
** and lines starting with '#' are comments. Returns as imapmem_load(); IMAPMEM_PARSE also
** for an .acl line that is malformed, has a letter that is no RFC 4314 right, or names a
** mailbox the load would not have.
*/
int imapmem_load_shared(imapmem *srv, const char *path);

/*
** Set identifier's rights on mailbox (a name in user's own namespace, or in the shared
** tree when user is NULL), and in the baseline imapmem_reset() returns to. rights is as
** SETACL's third argument: RFC 4314 letters ("c" is "kx", "d" is "et"), replacing the
** entry, or after '+' added to it, after '-' taken from it; an entry left with no rights is
** removed. identifier is a user name, "anyone", or either after '-' (negative rights).
** Returns IMAPMEM_OK; IMAPMEM_NOTFOUND (no such user or mailbox); IMAPMEM_MISUSE (NULL
** argument, an unknown right, an empty identifier or the owner's); IMAPMEM_NOMEM.
*/
int imapmem_set_acl(imapmem *srv, const char *user, const char *mailbox, const char *identifier,
                    const char *rights);

/*
** The prefixes of the other users' namespace (default "Other Users/") and of the shared
** tree (default "Shared/"): each one level a client could CREATE (not INBOX) and then
** '/', at most 64 bytes, the two different. Before imapmem_start() only. Returns
** IMAPMEM_OK; IMAPMEM_MISUSE (NULL, a bad prefix, or already started).
*/
int imapmem_set_namespace(imapmem *srv, const char *other_users, const char *shared);

/*
** Write the shared tree to dir as imapmem_save() writes a user's, its ACLs in dir/.acl
** (imapmem_save() writes a user's ACLs there too). Returns as imapmem_save().
*/
int imapmem_save_shared(imapmem *srv, const char *dir);

/*
** Start serving: bind addr (an address or a host name: "127.0.0.1", "::1", "localhost";
** NULL means 127.0.0.1; a name's IPv4 address is preferred) and port (0 picks a free one),
** and accept connections in a background thread, one thread per session. Returns once the
** listener is bound, so a client may connect at once. Returns IMAPMEM_OK; IMAPMEM_IO if
** the name does not resolve or the address cannot be bound; IMAPMEM_MISUSE if already
** started or the port is not 0-65535; IMAPMEM_ERROR if the thread cannot start.
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
** thread. Each session closes its own descriptors; this call never touches them. A session
** waiting to write to a client that reads nothing gives up at once. Idempotent; the store
** stays readable until imapmem_free(). Returns IMAPMEM_OK; IMAPMEM_MISUSE for NULL.
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
** at imapmem_stop), in the session's own thread; output to a pipe or socket is made
** non-blocking. Works whether or not imapmem_start() was called. Returns IMAPMEM_OK;
** IMAPMEM_NOTFOUND if preauth_user does not exist (the descriptors are closed);
** IMAPMEM_MISUSE for a NULL handle or a negative descriptor (they are left alone);
** IMAPMEM_NOMEM or IMAPMEM_ERROR (no thread; the descriptors are closed).
*/
int imapmem_serve_fd(imapmem *srv, int in_fd, int out_fd, const char *preauth_user);

/*
** Deliver a message into user's mailbox as if a client had APPENDed it, with the
** current time as its INTERNALDATE (imapmem_append_dated chooses one). Sessions idling
** on the mailbox are told at once; other sessions that have it selected learn of it at
** their next command, as RFC 3501 5.2 has it. flags may be NULL or a space-separated list
** like "\\Seen $Label1". The new UID goes to *uid_out if not NULL. Returns IMAPMEM_OK;
** IMAPMEM_NOTFOUND if there is no such user or mailbox, or it is \Noselect;
** IMAPMEM_MISUSE for a NULL argument, no bytes, over 1 GiB, or malformed flags;
** IMAPMEM_ERROR if the mailbox has used every UID or has no room for another keyword;
** IMAPMEM_NOMEM.
*/
int imapmem_append(imapmem *srv, const char *user, const char *mailbox, const char *bytes,
                   size_t len, const char *flags, uint32_t *uid_out);

/*
** The same with a chosen INTERNALDATE: date in seconds since 1970-01-01 UTC (years 1 to
** 9999), shown in the zone tz_minutes east of UTC (-1439 to 1439), as SEARCH BEFORE/ON/
** SINCE and FETCH INTERNALDATE see it. Returns as imapmem_append; IMAPMEM_MISUSE also for
** a date or zone out of range. Example, 1 Feb 2026 10:00 +0100:
**   imapmem_append_dated(srv, "alice", "INBOX", msg, len, NULL, 1769936400, 60, &uid);
*/
int imapmem_append_dated(imapmem *srv, const char *user, const char *mailbox,
                         const char *bytes, size_t len, const char *flags, int64_t date,
                         int tz_minutes, uint32_t *uid_out);

/*
** ---------------------------------------------------------------------------
** Reading the state back (for assertions). Returned memory is the caller's: free it
** with imapmem_release(). All of these may run while clients are connected. Each returns
** IMAPMEM_OK; IMAPMEM_NOTFOUND for no such user, mailbox or message; IMAPMEM_MISUSE for a
** NULL argument; IMAPMEM_NOMEM.
** ---------------------------------------------------------------------------
*/

/*
** The user's mailbox names, sorted (INBOX first): an array of *count_out strings, NULL
** after the last, in one block that one imapmem_release() frees. Like imapmem_uids().
**   char **names; size_t n;
**   imapmem_mailboxes(srv, "alice", &names, &n);   ... names[0] is "INBOX" ...
**   imapmem_release(names);
*/
int imapmem_mailboxes(imapmem *srv, const char *user, char ***names_out, size_t *count_out);

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

/*
** The modification sequence (RFC 7162 CONDSTORE) of message uid, or with uid 0 the
** mailbox's HIGHESTMODSEQ. A fixture without saved ones starts every message at 1.
*/
int imapmem_modseq(imapmem *srv, const char *user, const char *mailbox, uint32_t uid,
                   uint64_t *modseq_out);

/* Free memory returned by the functions above. NULL is a no-op. */
void imapmem_release(void *p);

/*
** ---------------------------------------------------------------------------
** Changes behind the clients' backs (for testing clients' resync code)
** ---------------------------------------------------------------------------
*/

/*
** Set message uid's flags and keywords to exactly flags (space-separated, like
** imapmem_append's; NULL or "" clears them), as STORE FLAGS would: a real change takes a
** new MODSEQ, sessions with the mailbox selected see a FETCH at their next command (at
** once if idling), and a client resynchronizing later finds it through CHANGEDSINCE.
** Returns IMAPMEM_OK; IMAPMEM_NOTFOUND (no such user, mailbox or message);
** IMAPMEM_MISUSE (NULL argument, malformed flags); IMAPMEM_ERROR (no room for another
** keyword).
*/
int imapmem_set_flags(imapmem *srv, const char *user, const char *mailbox, uint32_t uid,
                      const char *flags);

/*
** Remove message uid, as another client's EXPUNGE would: sessions with the mailbox
** selected are told when RFC 3501 7.4.1 allows, and a QRESYNC client that comes back
** later gets its UID in VANISHED (EARLIER). Returns as imapmem_set_flags.
*/
int imapmem_expunge(imapmem *srv, const char *user, const char *mailbox, uint32_t uid);

/*
** Make the mailbox have no mod-sequences (on 1) or have them again (on 0): SELECT and
** EXAMINE answer [NOMODSEQ], STATUS HIGHESTMODSEQ is 0, and MODSEQ, CHANGEDSINCE and
** UNCHANGEDSINCE are BAD there (RFC 7162 3.1.2.2). Sessions that have it selected keep
** what their SELECT said. A reset keeps the setting. The program's --nomodseq MAILBOX.
** Returns IMAPMEM_OK; IMAPMEM_NOTFOUND; IMAPMEM_MISUSE.
*/
int imapmem_set_nomodseq(imapmem *srv, const char *user, const char *mailbox, int on);

/*
** Give the mailbox the special-use roles in uses (RFC 6154 2): attributes separated by
** spaces, "\\Sent" or "\\Archive \\All" (any letter case); "" gives it none; NULL gives it
** back the roles its name has (README: "Special-use mailboxes"). LIST shows them with
** RETURN (SPECIAL-USE) or (SPECIAL-USE). A reset keeps them, and imapmem_save writes them
** (.special-use). The string is read during the call only. The program's --special-use.
** Returns IMAPMEM_OK; IMAPMEM_NOTFOUND (user or mailbox); IMAPMEM_MISUSE (NULL user or
** mailbox, or a word that is no role).
*/
int imapmem_set_special_use(imapmem *srv, const char *user, const char *mailbox,
                            const char *uses);

/*
** Quota (RFC 9208). Each user has one quota root, named "", over all of its mailboxes.
** Set its limits: storage_kib in units of 1024 octets (the STORAGE resource: the sum of
** the messages' RFC822.SIZEs, a begun KiB counting whole), messages a count (MESSAGE);
** IMAPMEM_NO_LIMIT for none; 0 lets nothing more in. Any earlier limits are replaced.
** APPEND, COPY and MOVE that would go past a limit answer NO [OVERQUOTA] and store
** nothing; imapmem_append and imapmem_load are never refused, so a test can put a user
** over quota on purpose. Limits are configuration: imapmem_reset keeps them and
** imapmem_save does not write them. Any thread, also while serving; the program's
** --quota NAME:STORAGE=KIB[,MESSAGE=N]. Returns IMAPMEM_OK; IMAPMEM_NOTFOUND for no such
** user; IMAPMEM_MISUSE for a NULL argument or a limit below IMAPMEM_NO_LIMIT.
*/
#define IMAPMEM_NO_LIMIT (-1)
int imapmem_set_quota(imapmem *srv, const char *user, int64_t storage_kib, int64_t messages);

/*
** A user's quota limits and usage, as GETQUOTA reports them: *storage_kib and *messages
** are the limits (IMAPMEM_NO_LIMIT for none), *storage_used_kib and *messages_used the
** usage now (the usage is reported whether or not a limit is set). Any out pointer may be
** NULL. Returns IMAPMEM_OK; IMAPMEM_NOTFOUND; IMAPMEM_MISUSE.
*/
int imapmem_get_quota(imapmem *srv, const char *user, int64_t *storage_kib,
                      int64_t *messages, uint64_t *storage_used_kib, uint64_t *messages_used);

/*
** Put every user's mailboxes back to what was loaded (imapmem_add_user's empty INBOX and
** every imapmem_load() and imapmem_load_mbox() since, in order), never what clients did:
** messages, flags, UIDs, UIDVALIDITY and subscriptions. A load while serving adds to this
** baseline as it adds to the live mailboxes. Message bytes are shared, not copied, so
** this is fast. Sessions that have a mailbox selected
** are disconnected with "* BYE"; others stay. Returns IMAPMEM_OK; IMAPMEM_MISUSE for NULL;
** IMAPMEM_NOMEM (then users reset before the failure stay reset).
*/
int imapmem_reset(imapmem *srv);

/*
** Write every mailbox of user to dir in the fixture layout (INBOX.mbox, Sent.mbox,
** Work/Projects.mbox), with Status/X-Status/X-Keywords flag headers and
** X-IMAPbase/X-UID, so that loading dir again gives the same UIDs, flags and bytes.
** Every byte of every message comes back on reload: line breaks that are not CRLF and a
** missing final one are recorded in an X-Imapmem-Eol header. The subscriptions go to
** dir/.subscriptions, as Dovecot writes them. *.mbox files in dir of mailboxes that no
** longer exist are removed; other files stay. A mailbox that cannot be written does not
** stop the others; the first error is returned: IMAPMEM_IO, IMAPMEM_NOMEM;
** IMAPMEM_NOTFOUND (no such user); IMAPMEM_MISUSE (NULL argument).
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
/*
** What imapmem_wait() waits for. Name the fields (C99 designated initialisers), so that
** only those the kind reads are set and the rest are zero:
**   struct imapmem_until u = {.kind = IMAPMEM_UNTIL_FLAG, .user = "alice",
**                             .mailbox = "INBOX", .uid = 3, .flag = "\\Seen"};
*/
struct imapmem_until {
  enum imapmem_event_kind kind;
  const char *user;          /* NULL: any user (LOGIN); SELECTED, IDLE, FLAG, NO_FLAG, COUNT */
  const char *mailbox;       /* SELECTED, IDLE, FLAG, NO_FLAG, COUNT */
  uint32_t uid;              /* FLAG, NO_FLAG */
  const char *flag;          /* FLAG, NO_FLAG: "\\Seen", "$Label1", ... */
  size_t count;              /* COUNT */
  uint64_t since;            /* LOGIN, SELECTED, IDLE: 0 waits for the state ("a session is
                                logged in now"); a mark from imapmem_mark() waits for the
                                event after it ("the next login"), even if that session has
                                ended again by the time the waiter looks */
};

/*
** A mark in the server's count of events (logins, SELECTs, IDLEs): take one before making
** a client act, then wait with .since = the mark for what it does next. Never 0. Any
** thread; 0 for a NULL handle.
**   uint64_t mark = imapmem_mark(srv);
**   ... start the client, which logs in ...
**   struct imapmem_until next = {.kind = IMAPMEM_UNTIL_LOGIN, .user = "alice", .since = mark};
**   imapmem_wait(srv, &next, 5000);
*/
uint64_t imapmem_mark(imapmem *srv);

/*
** Block until the condition holds or timeout_ms passes. Returns IMAPMEM_OK when it
** holds, IMAPMEM_ERROR ("timed out after N ms: ...") when it did not in time,
** IMAPMEM_MISUSE for a NULL argument, a negative timeout, a condition without the user,
** mailbox or flag it needs, or .since with a kind that counts no events. Any thread.
*/
int imapmem_wait(imapmem *srv, const struct imapmem_until *until, int timeout_ms);

/*
** ---------------------------------------------------------------------------
** Protocol transcript, capabilities and fault injection
** ---------------------------------------------------------------------------
*/

/*
** The transcript callback: one call per protocol line, in the order the lines crossed the
** wire. session numbers sessions from 1; direction is 'C' (client to server), 'S', or '*'
** for an event of the session itself ("connected from 127.0.0.1:5555", "disconnected:
** LOGOUT", "fault FETCH: DROP, ..."). A command with a synchronizing literal comes in
** pieces: "a1 APPEND INBOX {310}", then the server's "+", then "{310 bytes}". line has no
** CRLF and is valid only during the call; literals appear as "{N bytes}" and passwords as
** "***". It is called from session threads, so it must be thread-safe; it must not call
** back into the server.
*/
typedef void imapmem_trace_fn(void *arg, int session, char direction, const char *line,
                              size_t len);

/*
** Set (or with fn NULL, clear) the transcript callback. A session in the middle of a line
** when it is cleared may still deliver that one line to the old callback. Returns
** IMAPMEM_OK; IMAPMEM_MISUSE for a NULL handle.
*/
int imapmem_set_trace(imapmem *srv, imapmem_trace_fn *fn, void *arg);

/*
** Switch an extension off (on = 0) or back on: "IDLE", "MOVE", "UIDPLUS", "UNSELECT",
** "NAMESPACE", "ID", "LITERAL+", "LITERAL-", "SASL-IR", "CHILDREN", "ENABLE",
** "CONDSTORE", "QRESYNC", "ESEARCH", "SEARCHRES", "CONTEXT=SEARCH", "PARTIAL", "BINARY",
** "MULTIAPPEND", "CATENATE", "APPENDLIMIT" (advertised as APPENDLIMIT=n, switched by its
** name alone), "UIDONLY", "QUOTA", "QUOTASET", "QUOTA=RES-STORAGE", "QUOTA=RES-MESSAGE"
** (RFC 9208; see imapmem_set_quota), "NOTIFY", "OBJECTID", the list, sort, thread and
** AUTH= names of the README, "UTF8=ACCEPT", "IMAP4rev2" and "IMAP4rev1" (off: the server
** offers IMAP4rev2 alone, as with config.imap_version IMAPMEM_REV2_ONLY, and every
** session follows RFC 9051, even one already logged in). Off means it is not advertised and its commands (or their extended
** forms, and SEARCH RETURN options) answer BAD as unknown. Dependencies follow
** the RFCs: switching one off also switches off those that need it (CONDSTORE or ENABLE
** takes QRESYNC with it; ESEARCH takes SEARCHRES, CONTEXT=SEARCH and PARTIAL; ENABLE
** takes UIDONLY; QUOTA takes QUOTASET and QUOTA=RES-*), switching one on also switches on
** what it needs and off what it excludes (LITERAL+ and LITERAL- never go together;
** LITERAL- is off at start; ENABLE takes UTF8=ACCEPT). Returns IMAPMEM_OK;
** IMAPMEM_NOTFOUND for another name; IMAPMEM_MISUSE for a NULL argument, or for
** switching off the last of IMAP4rev1 and IMAP4rev2 (nothing changes then).
*/
int imapmem_set_capability(imapmem *srv, const char *name, int on);

/*
** Set the largest message APPEND accepts, in bytes (RFC 7889 APPENDLIMIT): a larger one,
** or a CATENATE result larger, is refused with NO [TOOBIG], and the capability list and
** STATUS (APPENDLIMIT) show the limit. The default is config.max_literal (64 MiB), past
** which no literal can go anyway; 0 refuses every APPEND (RFC 7889 5). It may be called
** from any thread, also while the server runs; commands read it as they start. Returns
** IMAPMEM_OK; IMAPMEM_MISUSE for a NULL handle or bytes over config.max_literal.
*/
int imapmem_set_append_limit(imapmem *srv, size_t bytes);

/*
** The capabilities advertised now, space-separated as in "* CAPABILITY", into
** *caps_out, which the caller frees with imapmem_release(). Those that depend on the
** session (STARTTLS, LOGINDISABLED: see imapmem_set_tls) are not among them. Returns IMAPMEM_OK;
** IMAPMEM_MISUSE; IMAPMEM_NOMEM.
*/
int imapmem_capabilities(imapmem *srv, char **caps_out);

/*
** Add a fault, in the same syntax as the program's --fault option:
**   "CMD=NO text"        answer command CMD (e.g. APPEND, "UID FETCH") with NO text
**   "CMD=BAD text"       ... with BAD text
**   "CMD=DROP"           close the connection when CMD arrives, with no reply
**   "CMD=BYE text"       send "* BYE text" and close
**   "CMD=ALERT text"     send "* OK [ALERT] text", then run CMD
**   "CMD=DELAY ms"       wait ms before answering CMD
**   "CMD=UIDVALIDITY"    give the selected mailbox (else INBOX) a new UIDVALIDITY and
**                        new UIDs (each message takes the next one's old UID, so an old
**                        UID names another message or none), then run CMD; sessions that
**                        had it selected get "* BYE" (clients must resync)
**   "CMD=MODSEQ-BACK"    put the selected mailbox's (else INBOX's) mod-sequences back to
**                        a fresh fixture's (every message and HIGHESTMODSEQ 1) and forget
**                        its expunges, as a server restored from a backup would; sessions
**                        that had it selected get "* BYE" (clients must resync fully)
**   "CMD=FORGET-EXPUNGED" forget which UIDs the mailbox expunged when: a later QRESYNC
**                        SELECT reports every UID it does not hold as VANISHED (EARLIER),
**                        narrowed only by the client's known-uids and sequence match data
**                        (RFC 7162 3.2.5.2)
**   "#N=ACTION"          ACTION on the Nth command of every session (e.g. "#3=DROP")
**   "*=ACTION"           on every command
**   "WHEN:N=ACTION"      only the first N times WHEN matches, across sessions ("NOOP:1=...")
**   "delay=ms"           delay every response by ms
**   "chunk=n"            write responses n bytes at a time (1 shakes out client parsers)
** CMD is a command name, matched without regard to case: FETCH matches FETCH and UID FETCH,
** "UID FETCH" only the UID form. Returns IMAPMEM_OK; IMAPMEM_PARSE for a malformed spec or
** a command imapmem does not have (a typo would otherwise never fire); IMAPMEM_MISUSE for
** a NULL argument; IMAPMEM_NOMEM.
*/
int imapmem_fault(imapmem *srv, const char *spec);

/* Remove every fault. Returns IMAPMEM_OK; IMAPMEM_MISUSE for a NULL handle. */
int imapmem_clear_faults(imapmem *srv);

/*
** ---------------------------------------------------------------------------
** TLS: STARTTLS and implicit TLS (IMAPS), in the opt-in build only
** ---------------------------------------------------------------------------
** imapmem.c serves TLS only when compiled with -DIMAPMEM_TLS and linked with
** -lssl -lcrypto (OpenSSL 3; `make TLS=openssl`). In a build without it every setter below
** returns IMAPMEM_MISUSE, and imapmem_errmsg() says how to build with TLS. TLS is set up
** before imapmem_start(); once serving, the setters return IMAPMEM_MISUSE. Sessions of
** imapmem_serve_fd() are never TLS: they neither offer STARTTLS nor are held to
** imapmem_set_require_tls(); imapmem_serve_fd_tls() serves one in TLS. TLS 1.2 is the
** minimum and 1.3 is offered; each handshake runs in its session's thread, and a client
** that does not finish it within 10 seconds (or the idle timeout, if shorter) is dropped.
*/

/*
** The TLS library in this build ("OpenSSL 3.0.13 30 Jan 2024"), or NULL in a build
** without TLS: a test can skip its TLS cases on NULL. Any thread.
*/
const char *imapmem_tls_library(void);

/*
** Serve TLS: STARTTLS is then advertised on the plain port before login (RFC 3501 6.2.1),
** and imapmem_set_imaps_port() may add a port for implicit TLS. cert_pem is a PEM
** certificate, optionally followed by its chain; key_pem its private key in PEM
** (unencrypted). With both NULL, imapmem generates, in memory only, a CA and a leaf
** certificate it signs, for "localhost", 127.0.0.1 and ::1, on ECDSA P-256 keys; a client
** should trust the CA, which imapmem_tls_cert() returns. Calling it again replaces the
** certificate. Returns IMAPMEM_OK; IMAPMEM_PARSE (not PEM, or the key does not match the
** certificate); IMAPMEM_MISUSE (NULL handle, only one of cert_pem and key_pem, already
** started, or no TLS in this build); IMAPMEM_NOMEM.
*/
int imapmem_set_tls(imapmem *srv, const char *cert_pem, const char *key_pem);

/*
** The certificate a client should trust, in PEM, into *pem_out, which the caller frees
** with imapmem_release(): the generated CA, or the given certificate (its first).
** Returns IMAPMEM_OK; IMAPMEM_MISUSE (NULL argument, TLS not set, no TLS in this build);
** IMAPMEM_NOMEM.
*/
int imapmem_tls_cert(imapmem *srv, char **pem_out);

/*
** Also listen for implicit TLS (RFC 8314) on port (0 picks a free one; -1: no imaps
** port, the default), on imapmem_start()'s address. Returns IMAPMEM_OK; IMAPMEM_MISUSE
** (NULL handle, port out of range, already started, no TLS in this build).
** imapmem_start() returns IMAPMEM_MISUSE if imapmem_set_tls() was not called, and
** IMAPMEM_IO if the port cannot be bound (then it listens on neither).
*/
int imapmem_set_imaps_port(imapmem *srv, int port);

/* The imaps port (useful after 0), or -1 if there is none or the server is not started. */
int imapmem_imaps_port(imapmem *srv);

/*
** The imaps listening address as "127.0.0.1:1993" or "[::1]:1993", or "" if none. Owned
** by the server, valid until imapmem_free().
*/
const char *imapmem_imaps_address(imapmem *srv);

/*
** Require TLS (on = 1) for logging in: before STARTTLS the plain port advertises
** LOGINDISABLED and no AUTH= mechanism, and LOGIN and AUTHENTICATE answer
** "NO [PRIVACYREQUIRED]" (AUTHENTICATE before its "+", so no password is sent in the
** clear: RFC 3501 11.2). Returns IMAPMEM_OK; IMAPMEM_MISUSE (NULL handle, already started,
** on without imapmem_set_tls() first, no TLS in this build).
*/
int imapmem_set_require_tls(imapmem *srv, int on);

/*
** Present a certificate with one defect, so a test can check that the client under test
** refuses it (with verification on, trusting imapmem_tls_cert()), on the imaps port and
** after STARTTLS alike: "expired", "not-yet-valid", "wrong-host" (a leaf for
** wrong-host.invalid only), "self-signed" (a leaf the CA did not sign), "handshake" (every
** handshake fails with a handshake_failure alert); NULL or "" for none. Only with
** generated certificates. Returns IMAPMEM_OK; IMAPMEM_NOTFOUND for another kind;
** IMAPMEM_MISUSE (NULL handle, already started, TLS not set or set with a given
** certificate, no TLS in this build); IMAPMEM_NOMEM.
*/
int imapmem_set_tls_fault(imapmem *srv, const char *kind);

/* How imapmem_serve_fd_tls() starts TLS. */
enum imapmem_fd_tls {
  IMAPMEM_FD_IMAPS = 1,       /* TLS from the first byte, then the greeting (RFC 8314) */
  IMAPMEM_FD_STARTTLS = 2     /* a plain greeting offering STARTTLS (RFC 3501 6.2.1) */
};

/*
** imapmem_serve_fd() in TLS, with the certificate of imapmem_set_tls() (and its fault):
** for descriptors the embedder accepted itself (its own listener, socket activation) or
** a pipe pair, as `imapmem --stdio-tls` uses stdin and stdout. IMAPMEM_FD_IMAPS does the
** handshake before the greeting (then "* PREAUTH" if preauth_user is not NULL), as on the
** imaps port; IMAPMEM_FD_STARTTLS greets in plain text and offers STARTTLS, as the plain
** port does, and is held to imapmem_set_require_tls(). The handshake runs in the
** session's thread with the same timeout as on a port. Call imapmem_set_tls() first, and
** change no TLS setting while such a session runs. Ownership of the descriptors and the
** other results are as for imapmem_serve_fd(), and IMAPMEM_MISUSE also when the build
** has no TLS, imapmem_set_tls() was not called, how is neither value, or preauth_user is
** given with IMAPMEM_FD_STARTTLS (STARTTLS is only for a session not yet logged in); the
** descriptors are then left alone.
*/
int imapmem_serve_fd_tls(imapmem *srv, int in_fd, int out_fd, const char *preauth_user,
                         enum imapmem_fd_tls how);

/* Stop if needed and free everything. NULL is a harmless no-op. */
void imapmem_free(imapmem *srv);

/*
** The text of the last error a call on this handle returned in the calling thread ("" if
** none; imapmem_errmsg(NULL) for the errors of calls given no handle, like imapmem_new).
** Each thread has its own, so threads sharing a server never see each other's. Owned by
** imapmem; valid until the calling thread's next call into imapmem.
*/
const char *imapmem_errmsg(imapmem *srv);

/* A constant description of a result code ("out of memory", ...). */
const char *imapmem_errstr(int code);

/* The version string, e.g. "0.2.0". */
const char *imapmem_version(void);

#ifdef __cplusplus
}
#endif
#endif /* IMAPMEM_H */
