"""Wire tests for every RFC 3501 command (and the UIDPLUS, MOVE, UNSELECT, NAMESPACE, ID,
SASL-IR and LITERAL+ extensions the server advertises) but FETCH (test_fetch.py), SEARCH
(test_search.py) and IDLE (test_multi.py).

Each test asserts what a user would check: values in the responses, the state that
follows, the bytes of messages.  Expected sizes and bytes are computed from the fixture
files by imapref.read_mbox (LF/CRLF -> CRLF, flag headers removed, `>From ` unquoted).

Fixture facts
-------------
fixtures/basic.mbox (loaded with --uidvalidity 1 by the harness):
  seq uid flags                           INTERNALDATE (UTC)    what the message is for
  1   1   \\Seen \\Answered               23-Nov-2026 09:00:00  Status: RO, X-Status: A, in mid-header
  2   2   \\Flagged $Label1 work          24-Nov-2026 10:15:30  Status: O, X-Keywords before the
                                                                other fields; body `>From here`
                                                                must read `From here`
  3   3   \\Seen project                  25-Nov-2026 16:30:00  From line ends in +0200 (18:30 local);
                                                                body `>>From the` reads `>From the`;
                                                                a wrong Content-Length (not trusted)
  4   4   \\Recent (unseen)               03-Nov-2026 07:05:09  no Status header -> new; From line
                                                                day padded ("Nov  3")
  5   5   \\Seen \\Deleted todo later     26-Nov-2026 12:00:00  X-Keywords comma separated
  6   6   \\Seen \\Draft                  27-Nov-2026 23:59:59  body line `From the desk...` after a
                                                                text line: not a separator
  SELECT: 6 EXISTS, 1 RECENT, [UNSEEN 2], [UIDVALIDITY 1], [UIDNEXT 7];
  STATUS UNSEEN 2 (messages 2 and 4).  Sizes: computed (RFC822.SIZE excludes the removed
  Status/X-Status/X-Keywords lines).
fixtures/crlf.mbox: 2 messages with CRLF lines; 1 \\Seen, 2 new with a `>From ` line.
fixtures/uids.mbox: X-IMAPbase: 12345 39 (the last UID) and X-UID 10, 20, 30 -> UIDVALIDITY 12345,
  UIDNEXT 40, UIDs 10 20 30; 1 and 2 \\Seen, 3 not (Status: O); no blank line at the end.
fixtures/tree/: INBOX (2), Sent (1), Drafts (empty file, 0), Work (\\Noselect level, no
  Work.mbox), Work/Projects (2), Work/Old (1), Lists (1, has a child), Lists/ietf (3); every
  message there is \\Seen.
"""
import base64
import calendar
import imaplib
import time
import unittest

import imapref
from imapref import TREE_LIST, later_flags
from wire import (ServerCase, View, codes, expand_set, fetch_list, fetches, fixture, flagset,
                  has_tls, imap_date_time, lower, name_of, quote as q, responses, status_parts,
                  write_mbox)

BASIC_PATH = fixture("basic.mbox")
BASIC = imapref.read_mbox(BASIC_PATH)
CRLF = imapref.read_mbox(fixture("crlf.mbox"))
UIDS = imapref.read_mbox(fixture("uids.mbox"))
TREE = fixture("tree")
SYSTEM = {"\\answered", "\\flagged", "\\deleted", "\\seen", "\\draft"}
CAPS = {"IMAP4REV1", "LITERAL+", "SASL-IR", "AUTH=PLAIN", "IDLE", "UIDPLUS", "MOVE",
        "UNSELECT", "NAMESPACE", "ID", "CHILDREN"}


def b64(data):
    return base64.b64encode(data).decode()


def simulate_expunges(uids, untagged):
    """Apply the untagged EXPUNGE responses (RFC 3501 7.4.1) to a list of UIDs."""
    return View(uids).feed(untagged).uids


class Base(ServerCase):
    ARGS = (BASIC_PATH,)


class Shared(Base):
    """One server for the whole class: the tests must not depend on each other's changes."""
    SHARED = True


def message(subject, body=b"Hello.\r\n", extra=b""):
    return (b"From: Tester <tester@example.com>\r\nTo: test@example.com\r\nSubject: " +
            subject.encode() + b"\r\nDate: Thu, 5 Mar 2026 14:15:16 +0100\r\n" + extra +
            b"Message-ID: <" + subject.replace(" ", "-").encode() + b"@example.com>\r\n\r\n" +
            body)


# ========================================================================================
# Any state: greeting, CAPABILITY, NOOP, LOGOUT, ID (RFC 3501 6.1, RFC 2971)

class AnyState(Shared):
    def test_greeting(self):
        r = self.raw(login=None)
        self.assertTrue(r.greeting.startswith(b"* OK "), r.greeting)
        word, code, text = status_parts(r.greeting[2:])
        self.assertTrue(code and code[0].upper() == "CAPABILITY", r.greeting)
        self.assertIn("IMAP4REV1", {str(c).upper() for c in code[1:]})

    def capabilities(self, r):
        u, t = r.cmd("CAPABILITY")
        self.assertOK(t)
        caps = responses(u, "CAPABILITY")
        self.assertEqual(len(caps), 1, u)
        return {str(c).upper() for c in caps[0][1:]}

    def test_capability(self):
        r = self.raw(login=None)
        caps = self.capabilities(r)
        self.assertTrue(CAPS <= caps, CAPS - caps)
        if not has_tls():                           # test_tls.py tests STARTTLS
            self.assertNotIn("STARTTLS", caps)
        self.assertNotIn("LOGINDISABLED", caps)     # LOGIN works
        r.ok("LOGIN test test")
        self.assertIn("IMAP4REV1", self.capabilities(r))
        r.ok("SELECT INBOX")
        self.assertIn("IMAP4REV1", self.capabilities(r))

    def test_noop_in_every_state(self):
        r = self.raw(login=None)
        self.assertOK(r.cmd("NOOP")[1])
        r.ok("LOGIN test test")
        self.assertOK(r.cmd("NOOP")[1])
        r.ok("EXAMINE INBOX")
        self.assertOK(r.cmd("NOOP")[1])

    def check_logout(self, r):
        u, t = r.cmd("LOGOUT")
        self.assertOK(t)
        self.assertRegex(u, rb"(^|\r\n)\* BYE ", "BYE must come before the tagged OK")
        r.sock.settimeout(5)
        with self.assertRaises((EOFError, ConnectionResetError)):
            while True:
                r._fill()

    def test_logout_in_every_state(self):
        self.check_logout(self.raw(login=None))
        self.check_logout(self.raw())
        self.check_logout(self.raw(examine="INBOX"))

    def test_id(self):
        r = self.raw(login=None)                  # RFC 2971 3.1: valid in any state
        for arg in ("NIL", '("name" "imapmem-tests" "version" "1.0")'):
            u, t = r.cmd("ID " + arg)
            self.assertOK(t, arg)
            ids = responses(u, "ID")
            self.assertEqual(len(ids), 1, u)
            v = ids[0][1]
            if v is not None:
                self.assertIsInstance(v, list)
                self.assertEqual(len(v) % 2, 0, v)
        r.ok("LOGIN test test")
        self.assertOK(r.cmd("ID NIL")[1])

    def test_case_insensitive(self):
        # RFC 3501 section 9, note (1): keywords in any letter case; flags too (2.3.2).
        r = self.raw(login=None)
        r.ok("login test test")
        u = r.ok("examine inbox")
        self.assertEqual(responses(u, "EXISTS")[0][0], 6)
        f = fetches(r.ok("fetch 1 (flags uid body.peek[]<0.10>)"))[1]
        self.assertEqual((f["UID"], f["BODY[]<0>"]), (1, BASIC[0].raw[:10]))
        self.assertEqual(fetches(r.ok("uid fetch 2 rfc822.size"))[2]["RFC822.SIZE"], BASIC[1].size)
        u = r.ok("status inbox (messages uidnext)")
        st = responses(u, "STATUS")[0][2]
        self.assertEqual({k.upper(): v for k, v in zip(st[0::2], st[1::2])},
                         {"MESSAGES": 6, "UIDNEXT": 7})
        self.assertEqual(self.list(r, "", "*"), {"INBOX": {"\\hasnochildren"}})

    def test_tag_characters(self):
        # tag = 1*<any ASTRING-CHAR except "+">: "]" and "." and "-" are fine.
        r = self.raw(login=None)
        for tag in ("A.1-x", "t]1", "0", "~x_"):
            u, t = r.cmd("NOOP", tag=tag)
            self.assertOK(t, tag)

    def test_unknown_command(self):
        r = self.raw(login=None)
        self.assertBAD(r.cmd("FROBNICATE")[1])
        self.assertBAD(r.cmd("XNOTHING 1 2")[1])
        r.ok("LOGIN test test")
        self.assertBAD(r.cmd("FROBNICATE")[1])
        r.ok("SELECT INBOX")
        self.assertBAD(r.cmd("FROBNICATE")[1])
        self.assertOK(r.cmd("FETCH 1 (FLAGS)")[1])  # still selected


# ========================================================================================
# Not authenticated: LOGIN, AUTHENTICATE PLAIN, STARTTLS (RFC 3501 6.2, RFC 4616, 4959)

class Login(Shared):
    # bob's password has a space, a double quote and a backslash: only a quoted string
    # or a literal can carry it.
    ARGS = ("-u", "test:test:" + BASIC_PATH, "-u", 'bob:p"a\\s s')
    BOB_PW = 'p"a\\s s'

    def test_login_atoms(self):
        r = self.raw(login=None)
        self.assertBAD(r.cmd("SELECT INBOX")[1])
        u, t = r.cmd("LOGIN test test")
        self.assertOK(t)
        u = r.ok("SELECT INBOX")
        self.assertEqual(responses(u, "EXISTS")[0][0], 6)

    def test_login_imaplib(self):
        c = self.srv.imap()
        self.assertEqual(c.select("INBOX"), ("OK", [b"6"]))
        c.logout()
        c = self.srv.imap("bob", self.BOB_PW)
        self.assertEqual(c.select("INBOX"), ("OK", [b"0"]))
        c.logout()

    def test_login_quoted(self):
        r = self.raw(login=None)
        self.assertOK(r.cmd('LOGIN "bob" %s' % q(self.BOB_PW))[1])

    def test_login_synchronizing_literals(self):
        r = self.raw(login=None)
        pw = self.BOB_PW.encode()
        tag = r.tag()
        r.send("%s LOGIN {3}\r\n" % tag)
        self.assertTrue(r.readline().startswith(b"+"))
        r.send(b"bob {%d}\r\n" % len(pw))
        self.assertTrue(r.readline().startswith(b"+"))
        r.send(pw + b"\r\n")
        u, t = r.until_tagged(tag)
        self.assertOK(t)
        r.ok("SELECT INBOX")

    def test_login_literal_plus(self):
        r = self.raw(login=None)
        pw = self.BOB_PW.encode()
        tag = r.tag()
        r.send(b"%s LOGIN {3+}\r\nbob {%d+}\r\n%s\r\n" % (tag.encode(), len(pw), pw))
        u, t = r.until_tagged(tag)
        self.assertOK(t)
        self.assertNotRegex(u, rb"(^|\r\n)\+", "no continuation for LITERAL+")

    def test_wrong_password(self):
        r = self.raw(login=None)
        for cmd in ("LOGIN test wrong", "LOGIN nosuchuser test", "LOGIN bob %s" % q("p")):
            u, t = r.cmd(cmd)
            self.assertNO(t, cmd)
            self.assertCode(t, "AUTHENTICATIONFAILED", cmd)
        self.assertBAD(r.cmd("SELECT INBOX")[1], "still not authenticated")
        self.assertOK(r.cmd("LOGIN test test")[1])   # the same connection can still log in
        with self.assertRaises(imaplib.IMAP4.error):
            self.srv.imap("test", "nope")

    def test_login_twice(self):
        r = self.raw()
        self.assertBAD(r.cmd("LOGIN test test")[1])
        r.ok("SELECT INBOX")
        self.assertBAD(r.cmd("LOGIN test test")[1])

    def auth_continuation(self, r, response_line):
        tag = r.tag()
        r.send("%s AUTHENTICATE PLAIN\r\n" % tag)
        line = r.readline()
        self.assertTrue(line.startswith(b"+"), line)
        r.send(response_line + "\r\n")
        return r.until_tagged(tag)

    def test_authenticate_plain_continuation(self):
        r = self.raw(login=None)
        u, t = self.auth_continuation(r, b64(b"\0test\0test"))
        self.assertOK(t)
        self.assertEqual(responses(r.ok("SELECT INBOX"), "EXISTS")[0][0], 6)

    def test_authenticate_plain_initial_response(self):
        r = self.raw(login=None)
        u, t = r.cmd("AUTHENTICATE PLAIN " + b64(b"\0bob\0" + self.BOB_PW.encode()))
        self.assertOK(t)
        self.assertNotRegex(u, rb"(^|\r\n)\+", "SASL-IR needs no continuation")
        r.ok("SELECT INBOX")

    def test_authenticate_plain_authzid_same_as_user(self):
        r = self.raw(login=None)
        self.assertOK(r.cmd("AUTHENTICATE PLAIN " + b64(b"test\0test\0test"))[1])

    def test_authenticate_imaplib(self):
        c = self.srv.imap(login=None)
        typ, _ = c.authenticate("PLAIN", lambda _: b"\0test\0test")
        self.assertEqual(typ, "OK")
        self.assertEqual(c.select("INBOX"), ("OK", [b"6"]))
        c.logout()

    def test_authenticate_wrong_password(self):
        r = self.raw(login=None)
        self.assertNO(r.cmd("AUTHENTICATE PLAIN " + b64(b"\0test\0bad"))[1])
        self.assertNO(self.auth_continuation(r, b64(b"\0test\0bad"))[1])
        self.assertBAD(r.cmd("SELECT INBOX")[1])
        r.ok("LOGIN test test")

    def test_authenticate_cancel(self):
        r = self.raw(login=None)
        u, t = self.auth_continuation(r, "*")     # RFC 3501 6.2.2: MUST reject with BAD
        self.assertBAD(t)
        self.assertBAD(r.cmd("SELECT INBOX")[1], "cancelled: still not authenticated")
        r.ok("LOGIN test test")

    def test_authenticate_bad_base64(self):
        # RFC 3501 6.2.2 / RFC 9051 6.2.2: an invalid base64 response gets a tagged BAD.
        r = self.raw(login=None)
        self.assertBAD(self.auth_continuation(r, "!!!not base64!!!")[1])
        self.assertBAD(r.cmd("AUTHENTICATE PLAIN AAA=BBB")[1])
        self.assertBAD(r.cmd("SELECT INBOX")[1])
        r.ok("LOGIN test test")

    def test_authenticate_unknown_mechanism(self):
        r = self.raw(login=None)
        self.assertNO(r.cmd("AUTHENTICATE X-UNKNOWN-MECH")[1])   # RFC 3501 6.2.2: SHOULD NO
        r.ok("LOGIN test test")

    def test_authenticate_when_authenticated(self):
        r = self.raw()
        self.assertBAD(r.cmd("AUTHENTICATE PLAIN " + b64(b"\0test\0test"))[1])

    @unittest.skipIf(has_tls(), "this build has TLS: test_tls.py tests STARTTLS")
    def test_starttls_refused(self):
        r = self.raw(login=None)
        u, t = r.cmd("STARTTLS")
        self.assertRefused(t)
        r.ok("LOGIN test test")                      # plain text goes on: no TLS started
        r.ok("SELECT INBOX")


# ========================================================================================
# States (RFC 3501 3, 6): a command in the wrong state gets BAD and changes nothing

SELECTED_ONLY = ["CHECK", "CLOSE", "EXPUNGE", "UNSELECT", "FETCH 1 (FLAGS)",
                 "STORE 1 +FLAGS (\\Seen)", "COPY 1 INBOX", "MOVE 1 INBOX", "SEARCH ALL",
                 "UID FETCH 1 (FLAGS)", "UID STORE 1 +FLAGS (\\Seen)", "UID COPY 1 INBOX",
                 "UID MOVE 1 INBOX", "UID EXPUNGE 1", "UID SEARCH ALL"]
AUTH_ONLY = ["SELECT INBOX", "EXAMINE INBOX", "CREATE NewBox", "DELETE NewBox",
             "RENAME NewBox Other", "SUBSCRIBE INBOX", "UNSUBSCRIBE INBOX", 'LIST "" "*"',
             'LSUB "" "*"', "STATUS INBOX (MESSAGES)", "NAMESPACE"]


class States(Base):
    def test_not_authenticated(self):
        s = self.start()
        r = self.raw(s, login=None)
        for cmd in AUTH_ONLY + SELECTED_ONLY:
            self.assertBAD(r.cmd(cmd)[1], cmd)
        tag = r.tag()
        r.send(b"%s APPEND INBOX {5+}\r\nHello\r\n" % tag.encode())
        self.assertBAD(r.until_tagged(tag)[1], "APPEND before LOGIN")
        r.ok("LOGIN test test")
        st = self.status(r)
        self.assertEqual(st["MESSAGES"], 6)
        self.assertEqual(self.list(r, "", "*"), {"INBOX": {"\\hasnochildren"}})

    def test_authenticated(self):
        s = self.start()
        r = self.raw(s)
        for cmd in SELECTED_ONLY + ["LOGIN test test"]:
            self.assertBAD(r.cmd(cmd)[1], cmd)
        self.assertEqual(self.status(r)["MESSAGES"], 6)
        r2 = self.raw(s, select="INBOX")
        self.assertEqual(self.flags(r2)[1], later_flags(BASIC[0]))   # the STORE did nothing

    def test_selected(self):
        r = self.raw(self.start(), select="INBOX")
        self.assertBAD(r.cmd("LOGIN test test")[1])
        self.assertBAD(r.cmd("AUTHENTICATE PLAIN " + b64(b"\0test\0test"))[1])
        self.assertOK(r.cmd("FETCH 1 (UID)")[1])

    def test_failed_select_leaves_selected_state(self):
        # RFC 3501 6.3.1: a failed SELECT leaves no mailbox selected.
        r = self.raw(self.start(), select="INBOX")
        self.assertNO(r.cmd("SELECT NoSuchBox")[1])
        self.assertBAD(r.cmd("FETCH 1 (FLAGS)")[1])
        r.ok("EXAMINE INBOX")
        self.assertNO(r.cmd("EXAMINE NoSuchBox")[1])
        self.assertBAD(r.cmd("FETCH 1 (FLAGS)")[1])

    def test_bad_command_keeps_state(self):
        # RFC 3501 6: a BAD response never changes the state.
        r = self.raw(self.start(), select="INBOX")
        self.assertBAD(r.cmd("SELECT")[1])
        self.assertBAD(r.cmd("SELECT INBOX extra")[1])
        self.assertOK(r.cmd("FETCH 1 (FLAGS)")[1])


# ========================================================================================
# SELECT and EXAMINE (RFC 3501 6.3.1, 6.3.2, 2.3.2 \Recent)

class SelectExamine(Base):
    def parse_select(self, untagged):
        out = {}
        fl = responses(untagged, "FLAGS")
        self.assertEqual(len(fl), 1, untagged)
        out["FLAGS"] = flagset(fl[0][1])
        for kw in ("EXISTS", "RECENT"):
            v = responses(untagged, kw)
            self.assertEqual(len(v), 1, (kw, untagged))
            out[kw] = v[0][0]
        out.update(codes(untagged))
        return out

    def test_select_responses(self):
        r = self.raw(self.start())
        u, t = r.cmd("SELECT INBOX")
        self.assertOK(t)
        self.assertCode(t, "READ-WRITE")
        d = self.parse_select(u)
        keywords = set()
        for m in BASIC:
            keywords |= {f.lower() for f in m.flags if not f.startswith("\\")}
        self.assertEqual(keywords, {"$label1", "work", "project", "todo", "later"})
        self.assertTrue(SYSTEM | keywords <= d["FLAGS"], d["FLAGS"])
        self.assertNotIn("\\recent", d["FLAGS"])     # flag-list has no \Recent (section 9)
        self.assertEqual(d["EXISTS"], len(BASIC))
        self.assertEqual(d["RECENT"], sum(m.recent for m in BASIC))
        self.assertEqual(d["RECENT"], 1)
        first_unseen = min(m.seq for m in BASIC if not m.seen)
        self.assertEqual(first_unseen, 2)
        self.assertEqual(d["UNSEEN"], [first_unseen])
        self.assertEqual(d["UIDVALIDITY"], [1])
        self.assertEqual(d["UIDNEXT"], [len(BASIC) + 1])
        perm = flagset(d["PERMANENTFLAGS"][0])
        self.assertTrue(SYSTEM | {"\\*"} <= perm, perm)
        self.assertNotIn("\\recent", perm)

    def test_select_then_fetch_flags_and_uids(self):
        r = self.raw(self.start(), select="INBOX")
        u, t = r.cmd("FETCH 1:* (FLAGS UID)")
        self.assertOK(t)
        f = fetches(u)
        self.assertEqual({k: flagset(v["FLAGS"]) for k, v in f.items()},
                         {m.seq: lower(m.flags) for m in BASIC})
        self.assertEqual({k: v["UID"] for k, v in f.items()}, {m.seq: m.seq for m in BASIC})

    def test_recent_goes_to_one_session(self):
        s = self.start()
        r1 = self.raw(s)
        self.assertEqual(self.parse_select(r1.ok("SELECT INBOX"))["RECENT"], 1)
        r2 = self.raw(s)
        self.assertEqual(self.parse_select(r2.ok("SELECT INBOX"))["RECENT"], 0)
        self.assertNotIn("\\recent", self.flags(r2, "4")[4])
        self.assertIn("\\recent", self.flags(r1, "4")[4])
        r1.cmd("LOGOUT")
        r3 = self.raw(s)
        self.assertEqual(self.parse_select(r3.ok("SELECT INBOX"))["RECENT"], 0)

    def test_examine_responses(self):
        s = self.start()
        r = self.raw(s)
        u, t = r.cmd("EXAMINE INBOX")
        self.assertOK(t)
        self.assertCode(t, "READ-ONLY")
        d = self.parse_select(u)
        self.assertEqual((d["EXISTS"], d["RECENT"]), (6, 1))
        self.assertEqual(d["UNSEEN"], [2])
        self.assertEqual(d["UIDVALIDITY"], [1])
        self.assertEqual(d["UIDNEXT"], [7])
        self.assertEqual(d["PERMANENTFLAGS"], [[]])
        # EXAMINE does not take \Recent: the next SELECT still gets it (RFC 3501 6.3.2).
        r2 = self.raw(s)
        self.assertEqual(self.parse_select(r2.ok("SELECT INBOX"))["RECENT"], 1)

    def test_examine_changes_nothing(self):
        s = self.start()
        r = self.raw(s, examine="INBOX")
        self.assertRefused(r.cmd("STORE 1 +FLAGS (\\Flagged)")[1])
        self.assertRefused(r.cmd("STORE 2 +FLAGS.SILENT (\\Seen)")[1])
        u, t = r.cmd("FETCH 2 BODY[]")               # not PEEK, but read-only
        self.assertOK(t)
        f = fetches(u)[2]
        self.assertEqual(f["BODY[]"], BASIC[1].raw)
        if "FLAGS" in f:
            self.assertNotIn("\\seen", flagset(f["FLAGS"]))
        self.assertRefused(r.cmd("EXPUNGE")[1])
        self.assertOK(r.cmd("CLOSE")[1])
        r2 = self.raw(s, select="INBOX")
        got = self.flags(r2)
        self.assertEqual({k: v - {"\\recent"} for k, v in got.items()},
                         {m.seq: later_flags(m) for m in BASIC})

    def test_select_missing_and_noselect(self):
        s = self.start(TREE)
        r = self.raw(s)
        for box in ("NoSuchBox", "Work", "Sent/Nothing"):
            self.assertNO(r.cmd("SELECT " + q(box))[1], box)
            self.assertNO(r.cmd("EXAMINE " + q(box))[1], box)

    def test_inbox_is_case_insensitive(self):
        r = self.raw(self.start())
        for name in ("inbox", "iNbOx", '"Inbox"'):
            u, t = r.cmd("SELECT " + name)
            self.assertOK(t, name)
            self.assertEqual(responses(u, "EXISTS")[0][0], 6)

    def test_select_empty_and_all_seen(self):
        r = self.raw(self.start(TREE))
        u, t = r.cmd("SELECT Drafts")
        self.assertOK(t)
        d = self.parse_select(u)
        self.assertEqual((d["EXISTS"], d["RECENT"]), (0, 0))
        self.assertNotIn("UNSEEN", d)                  # no unseen message: no [UNSEEN]
        self.assertTrue(d["UIDNEXT"][0] >= 1)
        u, t = r.cmd("SELECT Lists/ietf")               # all \Seen
        d = self.parse_select(u)
        self.assertEqual(d["EXISTS"], 3)
        self.assertNotIn("UNSEEN", d)
        self.assertEqual(d["UIDNEXT"], [4])

    def test_select_switches_mailbox(self):
        r = self.raw(self.start(TREE), select="INBOX")
        u = r.ok("SELECT Sent")
        self.assertEqual(self.parse_select(u)["EXISTS"], 1)
        got = fetches(r.ok("FETCH 1 (BODY.PEEK[])"))[1]["BODY[]"]
        self.assertEqual(got, imapref.read_mbox(fixture("tree", "Sent.mbox"))[0].raw)


# ========================================================================================
# CREATE, DELETE, RENAME (RFC 3501 6.3.3 - 6.3.5)

class Create(Base):
    def test_create(self):
        r = self.raw(self.start())
        self.assertOK(r.cmd("CREATE Projects")[1])
        self.assertEqual(self.list(r, "", "*"),
                         {"INBOX": {"\\hasnochildren"}, "Projects": {"\\hasnochildren"}})
        u = r.ok("SELECT Projects")
        self.assertEqual(responses(u, "EXISTS")[0][0], 0)
        self.assertEqual(self.status(r, "Projects")["MESSAGES"], 0)

    def test_create_hierarchy(self):
        r = self.raw(self.start())
        self.assertOK(r.cmd("CREATE a/b/c")[1])
        got = self.list(r, "", "a*")
        self.assertEqual(set(got), {"a", "a/b", "a/b/c"})
        self.assertIn("\\haschildren", got["a"])
        self.assertIn("\\haschildren", got["a/b"])
        self.assertEqual(got["a/b/c"], {"\\hasnochildren"})
        r.ok("SELECT a/b/c")

    def test_create_existing(self):
        r = self.raw(self.start(TREE))
        for box in ("Sent", "Lists/ietf"):
            u, t = r.cmd("CREATE " + box)
            self.assertNO(t, box)
            self.assertCode(t, "ALREADYEXISTS", box)
        r.ok("CREATE Fresh")
        self.assertCode(r.cmd("CREATE Fresh")[1], "ALREADYEXISTS")
        self.assertEqual(self.status(r, "Sent")["MESSAGES"], 1)   # untouched

    def test_create_inbox_fails(self):
        r = self.raw(self.start())
        for name in ("INBOX", "inbox", "InBox"):
            self.assertNO(r.cmd("CREATE " + name)[1], name)
        self.assertEqual(self.status(r)["MESSAGES"], 6)
        self.assertEqual(list(self.list(r, "", "*")), ["INBOX"])

    def test_create_trailing_delimiter(self):
        # RFC 3501 6.3.3: the name created is without the trailing delimiter.
        r = self.raw(self.start())
        self.assertOK(r.cmd("CREATE Folder/")[1])
        got = self.list(r, "", "*")
        self.assertIn("Folder", got)
        self.assertNotIn("Folder/", got)
        self.assertOK(r.cmd("CREATE Folder/Child")[1])
        self.assertIn("Folder/Child", self.list(r, "", "Folder/*"))

    def test_create_quoted_and_utf7_names(self):
        r = self.raw(self.start())
        names = ['My "Box"', "back\\slash", "with space", "Entw&APw-rfe"]
        for n in names:
            self.assertOK(r.cmd("CREATE " + q(n))[1], n)
        got = self.list(r, "", "*")
        for n in names:
            self.assertIn(n, got)
            self.assertOK(r.cmd("SELECT " + q(n))[1], n)
        tag = r.tag()                               # a mailbox name as a literal
        r.send("%s CREATE {7}\r\n" % tag)
        self.assertTrue(r.readline().startswith(b"+"))
        r.send("Literal\r\n")
        self.assertOK(r.until_tagged(tag)[1])
        self.assertIn("Literal", self.list(r, "", "*"))


    def test_names_that_could_not_be_saved_are_refused(self):
        srv = self.start()
        r = self.raw(srv)
        for name in (".hidden", "A/..", "A/.x", "a//b", "/a"):
            u, t = r.cmd('CREATE "%s"' % name)
            self.assertTrue(t.startswith(b"NO [CANNOT]"), (name, t))
        r.ok("CREATE A")
        self.assertTrue(r.cmd("RENAME A .A")[1].startswith(b"NO [CANNOT]"))

class Delete(Base):
    def test_delete(self):
        r = self.raw(self.start(TREE))
        self.assertOK(r.cmd("DELETE Sent")[1])
        self.assertNotIn("Sent", self.list(r, "", "*"))
        self.assertNO(r.cmd("SELECT Sent")[1])
        self.assertNO(r.cmd("STATUS Sent (MESSAGES)")[1])

    def test_delete_missing(self):
        r = self.raw(self.start(TREE))
        u, t = r.cmd("DELETE NoSuchBox")
        self.assertNO(t)
        self.assertCode(t, "NONEXISTENT")

    def test_delete_inbox_refused(self):
        r = self.raw(self.start())
        for name in ("INBOX", "inbox"):
            self.assertNO(r.cmd("DELETE " + name)[1], name)
        self.assertEqual(self.status(r)["MESSAGES"], 6)

    def test_delete_with_children_becomes_noselect(self):
        # RFC 3501 6.3.4: messages removed, children kept, the name gets \Noselect.
        r = self.raw(self.start(TREE))
        self.assertOK(r.cmd("DELETE Lists")[1])
        got = self.list(r, "", "Lists*")
        self.assertEqual(set(got), {"Lists", "Lists/ietf"})
        self.assertIn("\\noselect", got["Lists"])
        self.assertIn("\\haschildren", got["Lists"])
        self.assertNO(r.cmd("SELECT Lists")[1])
        self.assertEqual(self.status(r, "Lists/ietf")["MESSAGES"], 3)
        self.assertNO(r.cmd("DELETE Lists")[1])       # \Noselect with children: an error

    def test_delete_noselect_with_children_refused(self):
        r = self.raw(self.start(TREE))
        self.assertNO(r.cmd("DELETE Work")[1])
        got = self.list(r, "", "Work*")
        self.assertEqual(set(got), {"Work", "Work/Projects", "Work/Old"})
        self.assertEqual(self.status(r, "Work/Projects")["MESSAGES"], 2)

    def test_delete_child_only(self):
        r = self.raw(self.start(TREE))
        self.assertOK(r.cmd("DELETE Lists/ietf")[1])
        got = self.list(r, "", "Lists*")
        self.assertEqual(got, {"Lists": {"\\hasnochildren"}})
        self.assertEqual(self.status(r, "Lists")["MESSAGES"], 1)

    def test_recreated_mailbox_does_not_reuse_uids(self):
        # RFC 3501 6.3.4: new UIDs must be higher unless UIDVALIDITY changed.
        r = self.raw(self.start())
        r.ok("CREATE Reuse")
        for i in range(2):
            u, t = r.append("Reuse", message("reuse %d" % i))
            self.assertOK(t)
        v1, uid1 = self.assertCode(t, "APPENDUID")
        r.ok("DELETE Reuse")
        r.ok("CREATE Reuse")
        u, t = r.append("Reuse", message("reuse again"))
        self.assertOK(t)
        v2, uid2 = self.assertCode(t, "APPENDUID")
        self.assertTrue(v2 != v1 or uid2 > uid1, (v1, uid1, v2, uid2))


    def test_delete_of_own_selected_mailbox_completes(self):
        # the session got "* BYE ... by another session" and no tagged reply
        srv = self.start()
        r = self.raw(srv)
        r.ok("CREATE foo")
        r.ok("SELECT foo")
        u, t = r.cmd("DELETE foo")
        self.assertTrue(t.startswith(b"OK"), (u, t))
        self.assertNotIn(b"BYE", u)
        self.assertTrue(r.cmd("FETCH 1 FLAGS")[1].startswith(b"BAD"))  # authenticated now
        r.ok("SELECT INBOX")

class Rename(Base):
    def bodies(self, r, box):
        r.ok("EXAMINE " + q(box))
        f = fetches(r.ok("FETCH 1:* (BODY.PEEK[])"))
        r.ok("UNSELECT")
        return [f[k]["BODY[]"] for k in sorted(f)]

    def test_rename(self):
        r = self.raw(self.start(TREE))
        self.assertOK(r.cmd("RENAME Sent Archive")[1])
        got = self.list(r, "", "*")
        self.assertNotIn("Sent", got)
        self.assertIn("Archive", got)
        self.assertEqual(self.bodies(r, "Archive"),
                         [m.raw for m in imapref.read_mbox(fixture("tree", "Sent.mbox"))])

    def test_children_follow(self):
        r = self.raw(self.start(TREE))
        self.assertOK(r.cmd("RENAME Lists Groups")[1])
        self.assertOK(r.cmd("RENAME Work Job")[1])   # a \Noselect level can be renamed too
        got = self.list(r, "", "*")
        for old in ("Lists", "Lists/ietf", "Work", "Work/Projects", "Work/Old"):
            self.assertNotIn(old, got)
        self.assertEqual(got["Groups"], {"\\haschildren"})
        self.assertEqual(got["Groups/ietf"], {"\\hasnochildren"})
        self.assertEqual(got["Job"], {"\\noselect", "\\haschildren"})
        self.assertEqual(self.status(r, "Groups")["MESSAGES"], 1)
        self.assertEqual(self.status(r, "Groups/ietf")["MESSAGES"], 3)
        self.assertEqual(self.status(r, "Job/Projects")["MESSAGES"], 2)
        self.assertEqual(self.status(r, "Job/Old")["MESSAGES"], 1)

    def test_rename_inbox(self):
        # RFC 3501 6.3.5: moves the messages to the new name and leaves INBOX empty.
        s = self.start()
        r = self.raw(s)
        self.assertOK(r.cmd("RENAME INBOX Old")[1])
        self.assertEqual(self.bodies(r, "Old"), [m.raw for m in BASIC])
        got = self.list(r, "", "*")
        self.assertEqual(set(got), {"INBOX", "Old"})
        self.assertEqual(self.status(r)["MESSAGES"], 0)
        u, t = r.append("INBOX", message("after rename"))
        self.assertOK(t)
        self.assertEqual(self.status(r)["MESSAGES"], 1)
        r2 = self.raw(s, select="Old")
        self.assertEqual({k: v - {"\\recent"} for k, v in self.flags(r2).items()},
                         {m.seq: later_flags(m) for m in BASIC})

    def test_rename_to_existing_fails(self):
        r = self.raw(self.start(TREE))
        self.assertNO(r.cmd("RENAME Sent Drafts")[1])
        self.assertNO(r.cmd("RENAME Sent INBOX")[1])
        self.assertNO(r.cmd("RENAME Sent Lists/ietf")[1])
        self.assertEqual(self.status(r, "Sent")["MESSAGES"], 1)
        self.assertEqual(self.status(r, "Drafts")["MESSAGES"], 0)
        self.assertEqual(self.status(r, "INBOX")["MESSAGES"], 2)

    def test_rename_missing_fails(self):
        r = self.raw(self.start(TREE))
        self.assertNO(r.cmd("RENAME NoSuchBox Other")[1])
        self.assertNotIn("Other", self.list(r, "", "*"))

    def test_rename_creates_superiors(self):
        r = self.raw(self.start(TREE))
        self.assertOK(r.cmd("RENAME Sent x/y/Sent")[1])
        got = self.list(r, "", "x*")
        self.assertEqual(set(got), {"x", "x/y", "x/y/Sent"})
        self.assertEqual(self.status(r, "x/y/Sent")["MESSAGES"], 1)


    def test_rename_inbox_into_its_own_level(self):
        # RFC 3501 6.3.5 allows it: INBOX's messages move, its inferiors stay
        srv = self.start()
        r = self.raw(srv)
        r.ok("RENAME INBOX INBOX/old")
        self.assertIn(b"MESSAGES 6", r.ok("STATUS INBOX/old (MESSAGES)"))
        self.assertIn(b"MESSAGES 0", r.ok("STATUS INBOX (MESSAGES)"))

# ========================================================================================
# SUBSCRIBE, UNSUBSCRIBE, LSUB (RFC 3501 6.3.6, 6.3.7, 6.3.9)

class Subscriptions(Base):
    def test_subscribe_unsubscribe(self):
        r = self.raw(self.start(TREE))
        self.assertOK(r.cmd("SUBSCRIBE Sent")[1])
        self.assertOK(r.cmd("SUBSCRIBE Lists/ietf")[1])
        got = self.list(r, "", "*", "LSUB")
        self.assertIn("Sent", got)
        self.assertIn("Lists/ietf", got)
        self.assertOK(r.cmd("UNSUBSCRIBE Sent")[1])
        got = self.list(r, "", "*", "LSUB")
        self.assertNotIn("Sent", got)
        self.assertIn("Lists/ietf", got)

    def test_lsub_percent_gives_noselect_parent(self):
        # RFC 3501 6.3.9: "Work/Projects" subscribed, "Work" not: LSUB "" "%" returns Work
        # flagged \Noselect, not Work/Projects.
        r = self.raw(self.start(TREE))
        for box in self.list(r, "", "*", "LSUB"):
            r.ok("UNSUBSCRIBE " + q(box))
        r.ok("SUBSCRIBE Work/Projects")
        got = self.list(r, "", "%", "LSUB")
        self.assertEqual(set(got), {"Work"})
        self.assertIn("\\noselect", got["Work"])
        self.assertEqual(set(self.list(r, "", "*", "LSUB")), {"Work/Projects"})

    def test_subscription_survives_delete(self):
        # RFC 3501 6.3.6: the server MUST NOT remove a name from the subscriptions itself.
        r = self.raw(self.start(TREE))
        r.ok("SUBSCRIBE Sent")
        r.ok("DELETE Sent")
        self.assertIn("Sent", self.list(r, "", "*", "LSUB"))

    def test_subscriptions_shared_by_sessions(self):
        s = self.start(TREE)
        self.raw(s).ok("SUBSCRIBE Lists")
        self.assertIn("Lists", self.list(self.raw(s), "", "*", "LSUB"))


# ========================================================================================
# LIST (RFC 3501 6.3.8, 7.2.2; RFC 3348 CHILDREN)



def sub(names):
    return {n: TREE_LIST[n] for n in names}


class List(Shared):
    ARGS = (TREE,)

    def setUp(self):
        self.r = self.raw()

    def test_star(self):
        self.assertEqual(self.list(self.r, "", "*"), TREE_LIST)

    def test_percent(self):
        self.assertEqual(self.list(self.r, "", "%"),
                         sub(["INBOX", "Sent", "Drafts", "Work", "Lists"]))
        self.assertEqual(self.list(self.r, "", "Work/%"), sub(["Work/Projects", "Work/Old"]))
        self.assertEqual(self.list(self.r, "", "%/%"),
                         sub(["Work/Projects", "Work/Old", "Lists/ietf"]))

    def test_patterns(self):
        self.assertEqual(self.list(self.r, "", "W*"), sub(["Work", "Work/Projects", "Work/Old"]))
        self.assertEqual(self.list(self.r, "", "*s"),
                         sub(["Work/Projects", "Lists", "Drafts"]))
        self.assertEqual(self.list(self.r, "", "Lists"), sub(["Lists"]))
        self.assertEqual(self.list(self.r, "", "Li%"), sub(["Lists"]))
        self.assertEqual(self.list(self.r, "", "nothing*"), {})
        self.assertEqual(self.list(self.r, "", "Work/Projects"), sub(["Work/Projects"]))

    def test_reference(self):
        self.assertEqual(self.list(self.r, "Work/", "%"), sub(["Work/Projects", "Work/Old"]))
        self.assertEqual(self.list(self.r, "Work/", "*"), sub(["Work/Projects", "Work/Old"]))
        self.assertEqual(self.list(self.r, "Lists/", "ietf"), sub(["Lists/ietf"]))

    def test_empty_name_gives_delimiter(self):
        u, t = self.r.cmd('LIST "" ""')
        self.assertOK(t)
        got = responses(u, "LIST")
        self.assertEqual(len(got), 1, u)
        self.assertEqual([flagset(got[0][1])] + got[0][2:], [{"\\noselect"}, b"/", b""])

    def test_inbox_case_insensitive(self):
        for pat in ("inbox", "INBOX", "InBoX"):
            got = self.list(self.r, "", pat)
            self.assertEqual([n.upper() for n in got], ["INBOX"], pat)

    def test_unquoted_patterns(self):
        # list-mailbox = 1*list-char / string: `*` and `%` may be sent bare.
        for pat, want in (("*", TREE_LIST), ("%", sub(["INBOX", "Sent", "Drafts", "Work", "Lists"])),
                          ("Work/*", sub(["Work/Projects", "Work/Old"]))):
            u, t = self.r.cmd('LIST "" %s' % pat)
            self.assertOK(t, pat)
            got = {name_of(x[3]) for x in responses(u, "LIST")}
            self.assertEqual(got, set(want), pat)

    def test_list_in_selected_state(self):
        self.r.ok("EXAMINE INBOX")
        self.assertEqual(self.list(self.r, "", "*"), TREE_LIST)

    def test_list_imaplib(self):
        c = self.srv.imap()
        typ, data = c.list()
        self.assertEqual(typ, "OK")
        self.assertEqual(len(data), len(TREE_LIST))
        c.logout()



class ListPatterns(Base):
    """LIST patterns whose matching could be slow; each test its own server."""

    def test_list_pattern_with_many_wildcards_is_fast_and_blocks_nobody(self):
        # list_match was exponential in the number of wildcards, under the user's lock
        srv = self.start()
        a, b = self.raw(srv), self.raw(srv)
        a.ok("CREATE " + "a" * 200)
        t0 = time.monotonic()
        u, t = a.cmd('LIST "" "' + "*" * 30 + 'b"')
        self.assertTrue(t.startswith(b"OK"), t)
        self.assertEqual(u, b"")
        u, t = a.cmd('LIST "" "' + "%*" * 40 + 'a"')
        self.assertIn(b'"' + b"a" * 200 + b'"', u)
        self.assertLess(time.monotonic() - t0, 5)
        self.assertIn(b'"INBOX"', b.ok('LIST "" INBOX'))

# ========================================================================================
# STATUS (RFC 3501 6.3.10)

class Status(Base):
    def test_status_values(self):
        s = self.start()
        r = self.raw(s)
        st = self.status(r)
        self.assertEqual(st, {"MESSAGES": len(BASIC), "RECENT": sum(m.recent for m in BASIC),
                              "UIDNEXT": len(BASIC) + 1, "UIDVALIDITY": 1,
                              "UNSEEN": sum(not m.seen for m in BASIC)})
        self.assertEqual((st["RECENT"], st["UNSEEN"]), (1, 2))
        # STATUS MUST NOT clear \Recent
        self.assertEqual(responses(r.ok("SELECT INBOX"), "RECENT")[0][0], 1)

    def test_status_only_what_was_asked(self):
        r = self.raw(self.start())
        self.assertEqual(self.status(r, "INBOX", "UIDNEXT MESSAGES"), {"UIDNEXT": 7, "MESSAGES": 6})
        self.assertEqual(self.status(r, "inbox", "UNSEEN"), {"UNSEEN": 2})

    def test_status_uids_fixture(self):
        r = self.raw(self.start(fixture("uids.mbox")))
        self.assertEqual(self.status(r), {"MESSAGES": 3, "RECENT": 0, "UIDNEXT": 40,
                                          "UIDVALIDITY": 12345, "UNSEEN": 1})

    def test_status_tree(self):
        r = self.raw(self.start(TREE))
        self.assertEqual(self.status(r, "Lists/ietf"),
                         {"MESSAGES": 3, "RECENT": 0, "UIDNEXT": 4, "UIDVALIDITY": 1, "UNSEEN": 0})
        self.assertEqual(self.status(r, "Drafts", "MESSAGES UNSEEN"), {"MESSAGES": 0, "UNSEEN": 0})
        self.assertNO(r.cmd("STATUS NoSuchBox (MESSAGES)")[1])
        self.assertNO(r.cmd("STATUS Work (MESSAGES)")[1])
        self.assertBAD(r.cmd("STATUS INBOX (FROB)")[1])
        self.assertBAD(r.cmd("STATUS INBOX ()")[1])


# ========================================================================================
# APPEND (RFC 3501 6.3.11, RFC 4315 APPENDUID, RFC 7888 LITERAL+)

class Append(Base):
    def test_append_flags_date_literal(self):
        s = self.start()
        r = self.raw(s)
        msg = message("appended", b"Caf\xc3\xa9 8-bit line.\r\nSecond line.\r\n")
        u, t = r.append("INBOX", msg, '(\\Seen \\Flagged $Custom) "05-Mar-2026 14:15:16 +0100"')
        self.assertOK(t)
        self.assertEqual(self.assertCode(t, "APPENDUID"), [1, 7])
        r2 = self.raw(s)
        u = r2.ok("SELECT INBOX")
        self.assertEqual(responses(u, "EXISTS")[0][0], 7)
        self.assertIn("$custom", flagset(responses(u, "FLAGS")[0][1]))
        f = fetches(r2.ok("FETCH 7 (FLAGS INTERNALDATE RFC822.SIZE UID BODY.PEEK[])"))[7]
        self.assertEqual(flagset(f["FLAGS"]), {"\\seen", "\\flagged", "$custom", "\\recent"})
        self.assertEqual(imap_date_time(f["INTERNALDATE"].decode()),
                         calendar.timegm((2026, 3, 5, 13, 15, 16, 0, 0, 0)))
        self.assertEqual(f["RFC822.SIZE"], len(msg))
        self.assertEqual(f["UID"], 7)
        self.assertEqual(f["BODY[]"], msg)
        self.assertEqual(self.status(r, "INBOX", "UIDNEXT MESSAGES"), {"UIDNEXT": 8, "MESSAGES": 7})

    def test_append_defaults(self):
        # No flags: empty flag list plus \Recent; no date: the current time.
        s = self.start()
        r = self.raw(s)
        msg = message("plain")
        before = time.time()
        u, t = r.append("INBOX", msg)
        self.assertOK(t)
        r.ok("SELECT INBOX")
        f = fetches(r.ok("FETCH 7 (FLAGS INTERNALDATE BODY.PEEK[])"))[7]
        self.assertEqual(flagset(f["FLAGS"]), {"\\recent"})
        when = imap_date_time(f["INTERNALDATE"].decode())
        self.assertTrue(before - 120 <= when <= time.time() + 120, (before, when))
        self.assertEqual(f["BODY[]"], msg)

    def test_append_zone_minutes_must_be_below_60(self):
        """RFC 3501 9: zone = ("+" / "-") 4DIGIT, hours and minutes; +0960 is no zone (it
        would go out as +1000 and read back as another instant). +0959 is."""
        r = self.raw(self.start())
        msg = message("zone")
        for zone in ("+0960", "-9999"):
            t = r.append("INBOX", msg, '"01-Jan-2020 00:00:00 %s"' % zone)[1]
            self.assertTrue(t.startswith(b"BAD"), (zone, t))
        self.assertOK(r.append("INBOX", msg, '"01-Jan-2020 00:00:00 +0959"')[1])
        r.ok("EXAMINE INBOX")
        f = fetches(r.ok("FETCH 7 (INTERNALDATE)"))[7]
        self.assertEqual(f["INTERNALDATE"], b" 1-Jan-2020 00:00:00 +0959")

    def test_append_literal_plus(self):
        r = self.raw(self.start())
        msg = message("literal plus")
        u, t = r.append("INBOX", msg, "(\\Draft)", plus=True)
        self.assertOK(t)
        r.ok("EXAMINE INBOX")
        f = fetches(r.ok("FETCH 7 (FLAGS BODY.PEEK[])"))[7]
        self.assertEqual(f["BODY[]"], msg)
        self.assertIn("\\draft", flagset(f["FLAGS"]))

    def test_append_imaplib(self):
        s = self.start()
        c = s.imap()
        msg = message("from imaplib")
        date = imaplib.Time2Internaldate(calendar.timegm((2025, 12, 31, 23, 0, 0, 0, 0, 0)))
        typ, data = c.append("INBOX", "(\\Answered)", date, msg)
        self.assertEqual(typ, "OK", data)
        c.select("INBOX")
        typ, data = c.fetch("7", "(BODY.PEEK[] INTERNALDATE)")
        self.assertEqual(typ, "OK")
        self.assertEqual(data[0][1], msg)
        c.logout()

    def test_append_large_literal(self):
        # 1 MiB: far over any line limit, far under the literal limit.
        r = self.raw(self.start())
        msg = message("large", b"".join(b"%07d abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n" % i
                                        for i in range(16000)))
        self.assertGreater(len(msg), 1 << 20)
        u, t = r.append("INBOX", msg)
        self.assertOK(t)
        r.ok("EXAMINE INBOX")
        f = fetches(r.ok("FETCH 7 (RFC822.SIZE BODY.PEEK[])"))[7]
        self.assertEqual(f["RFC822.SIZE"], len(msg))
        self.assertEqual(f["BODY[]"], msg)

    def test_append_to_missing_mailbox(self):
        r = self.raw(self.start())
        u, t = r.append("NoSuchBox", message("lost"))
        self.assertNO(t)
        self.assertCode(t, "TRYCREATE")
        self.assertNotIn("NoSuchBox", self.list(r, "", "*"))   # MUST NOT create it
        self.assertOK(r.cmd("NOOP")[1])
        r.ok("CREATE NoSuchBox")
        u, t = r.append("NoSuchBox", message("found"))
        self.assertOK(t)
        self.assertEqual(self.status(r, "NoSuchBox", "MESSAGES"), {"MESSAGES": 1})

    def test_append_to_selected_mailbox_reports_exists(self):
        r = self.raw(self.start(), select="INBOX")
        u, t = r.append("INBOX", message("while selected"))
        self.assertOK(t)
        u += r.ok("NOOP")
        self.assertIn(7, [x[0] for x in responses(u, "EXISTS")])
        self.assertEqual(fetches(r.ok("FETCH 7 (UID)"))[7]["UID"], 7)

    def test_append_bad_arguments(self):
        r = self.raw(self.start())
        for opts in ('"32-Foo-2026 25:00:00 +0100"', "(\\Seen", '"05-Mar-2026"', "(\\Seen) x"):
            u, t = r.append("INBOX", message("bad"), opts)
            self.assertRefused(t, opts)
            self.assertOK(r.cmd("NOOP")[1])
        # A command refused while its LITERAL+ literal is still coming: the literal is
        # part of the command and must be read, not run as commands (RFC 7888).
        u, t = r.append("INBOX", message("bad plus"), '"32-Foo-2026 25:00:00 +0100"',
                           plus=True)
        self.assertRefused(t)
        u, t = r.cmd("NOOP")
        self.assertOK(t)
        self.assertEqual([l for l in u.split(b"\r\n") if l and not l.startswith(b"* ")], [],
                         "the literal's lines were run as commands")
        self.assertEqual(self.status(r, "INBOX", "MESSAGES"), {"MESSAGES": 6})


    def test_uids_run_out_cleanly(self):
        # uidnext wrapped to 0 and a stored message was freed (use after free)
        path = write_mbox(self.tempdir(), "full.mbox", "From a Mon Jan  1 00:00:00 2024\n"
                          "X-IMAPbase: 7 4294967293\nX-UID: 3\n\nx\n")
        srv = self.start(path)
        r = self.raw(srv)
        u, t = r.append("INBOX", b"Subject: one\r\n\r\n1\r\n", plus=True)
        self.assertIn(b"[APPENDUID 7 4294967294]", t)
        u, t = r.append("INBOX", b"Subject: two\r\n\r\n2\r\n", plus=True)
        self.assertTrue(t.startswith(b"NO [LIMIT]"), t)
        u = r.ok("SELECT INBOX")
        self.assertIn(b"* 2 EXISTS", u)
        self.assertIn(b"[UIDNEXT 4294967295]", u)

# ========================================================================================
# CHECK, CLOSE, UNSELECT, EXPUNGE, UID EXPUNGE (RFC 3501 6.4.1-6.4.3, RFC 3691, RFC 4315)

class CloseExpunge(Base):
    def test_check(self):
        r = self.raw(self.start(), select="INBOX")
        self.assertOK(r.cmd("CHECK")[1])
        self.assertOK(r.cmd("FETCH 1 (UID)")[1])

    def test_close_expunges_silently(self):
        s = self.start()
        r = self.raw(s, select="INBOX")
        r.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")      # 1 and 5 are \Deleted now
        u, t = r.cmd("CLOSE")
        self.assertOK(t)
        self.assertEqual(responses(u, "EXPUNGE"), [])
        self.assertBAD(r.cmd("FETCH 1 (FLAGS)")[1])      # back in authenticated state
        self.assertEqual(self.status(r, "INBOX", "MESSAGES"), {"MESSAGES": 4})
        r.ok("EXAMINE INBOX")
        self.assertEqual(self.uids(r), [2, 3, 4, 6])

    def test_close_under_examine_removes_nothing(self):
        r = self.raw(self.start(), examine="INBOX")
        self.assertOK(r.cmd("CLOSE")[1])
        self.assertEqual(self.status(r, "INBOX", "MESSAGES"), {"MESSAGES": 6})

    def test_close_outside_selected(self):
        r = self.raw(self.start())
        self.assertBAD(r.cmd("CLOSE")[1])

    def test_unselect(self):
        r = self.raw(self.start(), select="INBOX")
        u, t = r.cmd("UNSELECT")
        self.assertOK(t)
        self.assertEqual(responses(u, "EXPUNGE"), [])
        self.assertBAD(r.cmd("FETCH 1 (FLAGS)")[1])
        self.assertEqual(self.status(r, "INBOX", "MESSAGES"), {"MESSAGES": 6})  # 5 not expunged
        self.assertBAD(r.cmd("UNSELECT")[1])

    def test_expunge(self):
        s = self.start()
        r = self.raw(s, select="INBOX")
        r.ok("STORE 2:3 +FLAGS.SILENT (\\Deleted)")     # with 5: 2, 3, 5 are \Deleted
        u, t = r.cmd("EXPUNGE")
        self.assertOK(t)
        self.assertEqual(len(responses(u, "EXPUNGE")), 3, u)
        self.assertEqual(simulate_expunges([1, 2, 3, 4, 5, 6], u), [1, 4, 6])
        self.assertEqual(self.uids(r), [1, 4, 6])
        f = fetches(r.ok("FETCH 1:* (FLAGS BODY.PEEK[])"))
        self.assertEqual([f[k]["BODY[]"] for k in (1, 2, 3)],
                         [BASIC[0].raw, BASIC[3].raw, BASIC[5].raw])
        self.assertEqual(self.status(self.raw(s), "INBOX", "MESSAGES"), {"MESSAGES": 3})

    def test_expunge_nothing_deleted(self):
        r = self.raw(self.start(), select="INBOX")
        r.ok("STORE 5 -FLAGS.SILENT (\\Deleted)")
        u, t = r.cmd("EXPUNGE")
        self.assertOK(t)
        self.assertEqual(responses(u, "EXPUNGE"), [])
        self.assertEqual(self.uids(r), [1, 2, 3, 4, 5, 6])

    def test_uid_expunge(self):
        r = self.raw(self.start(), select="INBOX")
        r.ok("STORE 2:3 +FLAGS.SILENT (\\Deleted)")
        u, t = r.cmd("UID EXPUNGE 3:4")                 # 4 is not \Deleted: kept
        self.assertOK(t)
        self.assertEqual(simulate_expunges([1, 2, 3, 4, 5, 6], u), [1, 2, 4, 5, 6])
        self.assertEqual(self.uids(r), [1, 2, 4, 5, 6])
        fl = self.flags(r)
        self.assertIn("\\deleted", fl[2])
        self.assertIn("\\deleted", fl[4])                # uid 5
        u, t = r.cmd("UID EXPUNGE 1:*")
        self.assertOK(t)
        self.assertEqual(simulate_expunges([1, 2, 4, 5, 6], u), [1, 4, 6])


# ========================================================================================
# STORE and UID STORE (RFC 3501 6.4.6, 6.4.8)

class Store(Base):
    def setUp(self):
        self.s = self.start()
        self.r = self.raw(self.s, select="INBOX")

    def store(self, cmd):
        u, t = self.r.cmd(cmd)
        self.assertOK(t, cmd)
        return u

    def test_replace(self):
        u = self.store("STORE 1 FLAGS (\\Flagged foo)")
        fl = fetch_list(u)
        self.assertEqual([seq for seq, _ in fl], [1])
        self.assertEqual(flagset(fl[0][1]["FLAGS"]), {"\\flagged", "foo"})
        self.assertEqual(self.flags(self.r, "1")[1], {"\\flagged", "foo"})

    def test_empty_list_adds_and_removes_nothing(self):
        """+FLAGS () and -FLAGS () are valid (RFC 3501 9: flag-list may be empty)."""
        before = self.flags(self.r, "1")[1]
        for cmd in ("STORE 1 +FLAGS ()", "STORE 1 -FLAGS ()", "STORE 1 +FLAGS.SILENT ()"):
            self.store(cmd)
        self.assertEqual(self.flags(self.r, "1")[1], before)

    def test_add_and_remove(self):
        u = self.store("STORE 1:2 +FLAGS (\\Deleted)")
        f = fetches(u)
        self.assertEqual(flagset(f[1]["FLAGS"]), {"\\seen", "\\answered", "\\deleted"})
        self.assertEqual(flagset(f[2]["FLAGS"]), {"\\flagged", "$label1", "work", "\\deleted"})
        u = self.store("STORE 1:2 -FLAGS (\\Deleted \\Seen work)")
        f = fetches(u)
        self.assertEqual(flagset(f[1]["FLAGS"]), {"\\answered"})
        self.assertEqual(flagset(f[2]["FLAGS"]), {"\\flagged", "$label1"})
        self.assertEqual(set(f), {1, 2})

    def test_silent(self):
        for cmd in ("STORE 1 +FLAGS.SILENT (\\Flagged)", "STORE 2 -FLAGS.SILENT (\\Flagged)",
                    "STORE 3 FLAGS.SILENT (\\Answered)"):
            self.assertEqual(fetch_list(self.store(cmd)), [], cmd)
        fl = self.flags(self.r, "1:3")
        self.assertEqual(fl[1], {"\\seen", "\\answered", "\\flagged"})
        self.assertEqual(fl[2], {"$label1", "work"})
        self.assertEqual(fl[3], {"\\answered"})

    def test_keywords(self):
        f = fetches(self.store("STORE 2 +FLAGS (NewKeyword)"))
        self.assertIn("newkeyword", flagset(f[2]["FLAGS"]))
        r2 = self.raw(self.s)                         # visible to a new session
        u = r2.ok("SELECT INBOX")
        self.assertIn("newkeyword", flagset(responses(u, "FLAGS")[0][1]))
        self.assertIn("\\*", flagset(codes(u)["PERMANENTFLAGS"][0]))
        self.assertIn("newkeyword", self.flags(r2, "2")[2])

    def test_recent_is_kept(self):
        # RFC 3501 6.4.6: FLAGS replaces the flags "other than \Recent".
        f = fetches(self.store("STORE 4 FLAGS (\\Seen)"))
        self.assertEqual(flagset(f[4]["FLAGS"]), {"\\seen", "\\recent"})
        f = fetches(self.store("STORE 4 FLAGS ()"))
        self.assertEqual(flagset(f[4]["FLAGS"]), {"\\recent"})

    def test_system_flags_any_case(self):
        f = fetches(self.store("store 2 +flags (\\SEEN \\deleted)"))
        self.assertEqual(flagset(f[2]["FLAGS"]), {"\\seen", "\\deleted", "\\flagged", "$label1", "work"})
        u = self.raw(self.s).ok("SELECT INBOX")         # no keyword "\SEEN" was made
        self.assertEqual(flagset(responses(u, "FLAGS")[0][1]) & {"\\seen"}, {"\\seen"})
        self.assertEqual(len(responses(u, "FLAGS")[0][1]), 10)

    def test_flags_without_parentheses(self):
        f = fetches(self.store("STORE 3 +FLAGS \\Flagged \\Answered"))
        self.assertEqual(flagset(f[3]["FLAGS"]), {"\\seen", "project", "\\flagged", "\\answered"})

    def test_persisted_for_other_sessions(self):
        self.store("STORE 1:* +FLAGS.SILENT (\\Flagged)")
        r2 = self.raw(self.s, examine="INBOX")
        for seq, fl in self.flags(r2).items():
            self.assertIn("\\flagged", fl, seq)

    def test_uid_store(self):
        fl = fetch_list(self.store("UID STORE 3 +FLAGS (\\Flagged)"))
        self.assertEqual(len(fl), 1)
        seq, d = fl[0]
        self.assertEqual((seq, d["UID"]), (3, 3))       # UID included though not asked
        self.assertIn("\\flagged", flagset(d["FLAGS"]))
        self.assertEqual(fetch_list(self.store("UID STORE 99 +FLAGS (\\Flagged)")), [])
        f = fetches(self.store("UID STORE 5:* -FLAGS (\\Seen)"))
        self.assertEqual({k: v["UID"] for k, v in f.items()}, {5: 5, 6: 6})


# ========================================================================================
# COPY, UID COPY, MOVE, UID MOVE (RFC 3501 6.4.7, RFC 4315 COPYUID, RFC 6851)

class CopyMove(Base):
    def setUp(self):
        self.s = self.start()
        self.r = self.raw(self.s)
        self.r.ok("CREATE Dest")
        self.dest_validity = self.status(self.r, "Dest", "UIDVALIDITY")["UIDVALIDITY"]
        self.r.ok("SELECT INBOX")

    def copyuid(self, text):
        c = self.assertCode(text, "COPYUID") if isinstance(text, bytes) else text
        self.assertEqual(c[0], self.dest_validity)
        src, dst = expand_set(c[1]), expand_set(c[2])
        self.assertEqual(len(src), len(dst))
        return dict(zip(src, dst))

    def dest_messages(self):
        """{dest uid: FETCH items} as another session sees Dest."""
        r2 = self.raw(self.s, examine="Dest")
        f = fetches(r2.ok("FETCH 1:* (UID FLAGS INTERNALDATE BODY.PEEK[])"))
        return {d["UID"]: d for d in f.values()}

    def check_copies(self, mapping):
        got = self.dest_messages()
        self.assertEqual(set(got), set(mapping.values()))
        for src, dst in mapping.items():
            m, d = BASIC[src - 1], got[dst]
            self.assertEqual(d["BODY[]"], m.raw)
            self.assertEqual(imap_date_time(d["INTERNALDATE"].decode()), m.internaldate)
            self.assertEqual(flagset(d["FLAGS"]) - {"\\recent"}, later_flags(m), src)

    def test_copy(self):
        u, t = self.r.cmd("COPY 2,4 Dest")
        self.assertOK(t)
        mapping = self.copyuid(t)
        self.assertEqual(set(mapping), {2, 4})
        self.check_copies(mapping)
        self.assertEqual(self.uids(self.r), [1, 2, 3, 4, 5, 6])    # the source is unchanged
        r3 = self.raw(self.s, select="Dest")                      # copies are \Recent
        for fl in self.flags(r3).values():
            self.assertIn("\\recent", fl)

    def test_copy_to_missing(self):
        u, t = self.r.cmd("COPY 1 NoSuchBox")
        self.assertNO(t)
        self.assertCode(t, "TRYCREATE")
        self.assertNotIn("NoSuchBox", self.list(self.r, "", "*"))

    def test_uid_copy(self):
        u, t = self.r.cmd("UID COPY 1,3 Dest")
        self.assertOK(t)
        mapping = self.copyuid(t)
        self.assertEqual(set(mapping), {1, 3})
        self.check_copies(mapping)
        u, t = self.r.cmd("UID COPY 99 Dest")            # no such UID: nothing, no error
        self.assertOK(t)
        self.assertEqual(self.status(self.r, "Dest", "MESSAGES"), {"MESSAGES": 2})

    def test_copy_into_selected_mailbox(self):
        u, t = self.r.cmd("COPY 1 INBOX")
        self.assertOK(t)
        u += self.r.ok("NOOP")
        self.assertIn(7, [x[0] for x in responses(u, "EXISTS")])
        self.assertEqual(fetches(self.r.ok("FETCH 7 (BODY.PEEK[])"))[7]["BODY[]"], BASIC[0].raw)

    def test_copy_under_examine(self):
        self.r.ok("EXAMINE INBOX")
        u, t = self.r.cmd("COPY 1:2 Dest")
        self.assertOK(t)
        self.check_copies(self.copyuid(t))

    def move_codes(self, u, t):
        c = codes(u).get("COPYUID")
        if c is None:
            return self.copyuid(t)
        return self.copyuid(c)

    def test_move(self):
        u, t = self.r.cmd("MOVE 2 Dest")
        self.assertOK(t)
        self.assertEqual([x[0] for x in responses(u, "EXPUNGE")], [2])
        mapping = self.move_codes(u, t)
        self.assertEqual(set(mapping), {2})
        self.assertEqual(self.uids(self.r), [1, 3, 4, 5, 6])
        self.check_copies(mapping)                      # flags kept, no \Deleted added

    def test_uid_move(self):
        u, t = self.r.cmd("UID MOVE 3:4 Dest")
        self.assertOK(t)
        self.assertEqual(simulate_expunges([1, 2, 3, 4, 5, 6], u), [1, 2, 5, 6])
        mapping = self.move_codes(u, t)
        self.assertEqual(set(mapping), {3, 4})
        self.assertEqual(self.uids(self.r), [1, 2, 5, 6])
        self.check_copies(mapping)

    def test_move_to_missing(self):
        u, t = self.r.cmd("MOVE 1 NoSuchBox")
        self.assertNO(t)
        self.assertCode(t, "TRYCREATE")
        self.assertEqual(responses(u, "EXPUNGE"), [])
        self.assertEqual(self.uids(self.r), [1, 2, 3, 4, 5, 6])


class OtherFixtures(Base):
    def test_crlf_fixture(self):
        r = self.raw(self.start(fixture("crlf.mbox")), select="INBOX")
        f = fetches(r.ok("FETCH 1:* (FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[])"))
        self.assertEqual(len(f), len(CRLF))
        for m in CRLF:
            d = f[m.seq]
            self.assertEqual(d["BODY[]"], m.raw, m.seq)
            self.assertEqual(d["RFC822.SIZE"], m.size)
            self.assertEqual(flagset(d["FLAGS"]), lower(m.flags))
            self.assertEqual(imap_date_time(d["INTERNALDATE"].decode()), m.internaldate)
        self.assertIn(b"\r\n\r\nFrom quoted in a CRLF file.\r\n", CRLF[1].raw)
        self.assertNotIn(b"\r\r", b"".join(m.raw for m in CRLF))

    def test_uids_fixture(self):
        r = self.raw(self.start(fixture("uids.mbox")), select="INBOX")
        self.assertEqual(self.uids(r), [10, 20, 30])
        f = fetches(r.ok("UID FETCH 15:25 (BODY.PEEK[] RFC822.SIZE)"))
        self.assertEqual(list(f), [2])
        self.assertEqual(f[2]["BODY[]"], UIDS[1].raw)
        self.assertEqual(f[2]["RFC822.SIZE"], UIDS[1].size)
        self.assertNotIn(b"X-UID", UIDS[0].raw + UIDS[1].raw)
        self.assertNotIn(b"X-IMAPbase", UIDS[0].raw)
        f = fetches(r.ok("FETCH 1 (BODY.PEEK[])"))
        self.assertEqual(f[1]["BODY[]"], UIDS[0].raw)
        u, t = r.append("INBOX", message("next uid"))
        self.assertEqual(self.assertCode(t, "APPENDUID"), [12345, 40])


# ========================================================================================
# NAMESPACE (RFC 2342)

class Namespace(Shared):
    def test_namespace(self):
        r = self.raw()
        u, t = r.cmd("NAMESPACE")
        self.assertOK(t)
        ns = responses(u, "NAMESPACE")
        self.assertEqual(len(ns), 1, u)
        self.assertEqual(ns[0][1:], [[[b"", b"/"]], [[b"Other Users/", b"/"]],
                                     [[b"Shared/", b"/"]]])


# ========================================================================================
# Bad input: BAD, and the connection and the server go on (RFC 3501 2.2.2, 5.5, 9)

MALFORMED = [
    "FETCH 1 (FLAGS", "FETCH 1 FLAGS)", "FETCH 1 ((FLAGS)", "STORE 1 +FLAGS (\\Seen",
    "FETCH 1:x FLAGS", "FETCH 0 FLAGS", "FETCH 1: FLAGS", "FETCH :1 FLAGS", "FETCH 1,,2 FLAGS",
    "FETCH 1, FLAGS", "FETCH abc FLAGS", "FETCH -1 FLAGS", "FETCH 1:2:3 FLAGS",
    "FETCH", "FETCH 1", "FETCH 1 (FROB)", "FETCH 1 BODY[", "FETCH 1 BODY[]<0>",
    "FETCH 1 BODY[]<0.0>", "STORE", "STORE 1", "STORE 1 +FLAGS", "STORE 1 FROB (\\Seen)",
    "COPY 1", "COPY", "MOVE 1", "SELECT", 'SELECT "INBOX', "SELECT INBOX INBOX", "EXAMINE",
    "STATUS INBOX", "STATUS INBOX (MESSAGES", 'LIST ""', "LIST", "LSUB", "RENAME INBOX",
    "CREATE", "DELETE", "SUBSCRIBE", "UNSUBSCRIBE", "APPEND", "APPEND INBOX",
    "NOOP extra", "CAPABILITY now", "CHECK 1", "EXPUNGE 1", "CLOSE x", "LOGOUT now",
    "UID", "UID FROB 1", "UID FETCH", "UID FETCH 1", "UID EXPUNGE", "UNSELECT x",
    "!!!", "\x01\x02\x03",
]


class BadInput(Shared):
    def test_malformed_commands(self):
        r = self.raw(select="INBOX")
        for cmd in MALFORMED:
            u, t = r.cmd(cmd)
            self.assertBAD(t, cmd)
        self.assertOK(r.cmd("FETCH 1 (UID)")[1])          # still selected (BAD changes nothing)
        self.assertEqual(self.flags(r, "1")[1], later_flags(BASIC[0]))
        self.still_serving(r)

    def test_malformed_before_login(self):
        r = self.raw(login=None)
        for cmd in ("LOGIN", "LOGIN test", 'LOGIN "test test', "LOGIN test test test",
                    "AUTHENTICATE", "(((", "LOGIN {x}"):
            self.assertBAD(r.cmd(cmd)[1], cmd)
        r.ok("LOGIN test test")
        self.still_serving(r)

    def test_no_tag(self):
        r = self.raw()
        for line in (b"\r\n", b" NOOP\r\n", b"+ NOOP\r\n"):
            r.send(line)
            got = r.readline()
            self.assertTrue(got.startswith(b"* BAD"), (line, got))
        self.still_serving(r)

    def test_huge_synchronizing_literal(self):
        r = self.raw(select="INBOX")
        # 67108865 is one byte over the 64 MiB literal limit of the contract.
        for cmd in ("APPEND INBOX {4000000000}", "APPEND INBOX (\\Seen) {99999999999}",
                    "SELECT {4000000000}", "APPEND INBOX {67108865}"):
            tag = r.tag()
            r.send("%s %s\r\n" % (tag, cmd))
            line = r.readline()
            self.assertFalse(line.startswith(b"+"), "continuation for %r" % cmd)
            self.assertTrue(line.startswith(tag.encode() + b" BAD"), (cmd, line))
        self.still_serving(r)
        self.assertEqual(self.status(self.raw(), "INBOX", "MESSAGES"), {"MESSAGES": 6})

    def test_huge_literal_before_login(self):
        r = self.raw(login=None)
        tag = r.tag()
        r.send("%s LOGIN {4000000000}\r\n" % tag)
        self.assertTrue(r.readline().startswith(tag.encode() + b" BAD"))
        r.ok("LOGIN test test")
        self.still_serving(r)

    def test_huge_nonsynchronizing_literal(self):
        # RFC 7888 section 4: the server either answers BAD or says BYE and closes.
        r = self.raw()
        tag = r.tag()
        r.send("%s APPEND INBOX {4000000000+}\r\n" % tag + "x" * 1000)
        line = r.readline()
        self.assertTrue(line.startswith(tag.encode() + b" BAD") or line.startswith(b"* BYE"),
                        line)
        self.still_serving()

    def long_line(self, r, cmd_prefix):
        tag, tag2 = r.tag(), r.tag()
        r.send(("%s %s" % (tag, cmd_prefix)).encode() + b"x" * 200000 + b"\r\n" +
               ("%s NOOP\r\n" % tag2).encode())
        lines = []
        while True:
            line = r.readline()
            if line.startswith(tag2.encode() + b" "):
                break
            lines.append(line)
        self.assertTrue(line.startswith(tag2.encode() + b" OK"), line)
        bad = [l for l in lines if l.startswith(tag.encode() + b" BAD") or l.startswith(b"* BAD")]
        self.assertEqual(len(bad), 1, lines[:5])
        self.assertFalse([l for l in lines if l.startswith(tag.encode() + b" OK")])

    def test_very_long_line(self):
        r = self.raw(select="INBOX")
        self.long_line(r, "NOOP ")
        self.long_line(r, "FETCH 1 (BODY.PEEK[HEADER.FIELDS (")
        self.still_serving(r)

    def test_very_long_line_before_login(self):
        r = self.raw(login=None)
        self.long_line(r, "LOGIN test test ")
        r.ok("LOGIN test test")
        self.still_serving(r)

    def test_nul_byte(self):
        r = self.raw()
        self.assertBAD(r.cmd(b"NOOP \x00")[1])
        self.still_serving(r)

    def test_resp_text_is_seven_bit(self):
        r = self.raw()
        u, t = r.cmd(b"SELECT {3+}\r\n\xc3\xa9x")
        self.assertTrue(t.startswith(b"NO"), t)
        self.assertTrue(all(c < 0x80 for c in t), t)

    def test_echoed_text_never_looks_like_a_literal(self):
        r = self.raw()
        r.send('t1 SELECT "x{9}"\r\n')
        line = r.readline()
        self.assertTrue(line.startswith(b"t1 NO"), line)
        self.assertFalse(line.endswith(b"}\r\n"), line)

    def test_zz_everything_then_new_client(self):
        # After all of the above on this server, a new client still logs in and reads mail.
        c = self.srv.imap()
        self.assertEqual(c.select("INBOX"), ("OK", [b"6"]))
        typ, data = c.fetch("1", "(BODY.PEEK[])")
        self.assertEqual(data[0][1], BASIC[0].raw)
        c.logout()


if __name__ == "__main__":
    unittest.main()
