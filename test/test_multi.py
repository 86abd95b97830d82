"""Many clients on one mailbox, through real connections (issue 4).

RFC 3501 5.2 (size and flag updates), 5.3/5.5 and 7.4.1 (when EXPUNGE may be sent), RFC 2180
(multi-accessed mailboxes: 3 for DELETE/RENAME, 4.1.2 for FETCH and 4.2 for STORE of a message
another session expunged), RFC 2177 (IDLE).  Every test starts its own server with a
generated INBOX of six messages:

 seq  uid  Message-ID              flags
  1    10  <m1@multi.example>      none (Status: O, so not \\Recent)
  2    20  <m2@multi.example>      none
  ...
  6    60  <m6@multi.example>      none

imapmem's choices (notes/conventions.md): EXPUNGE is never sent while answering FETCH, STORE
or SEARCH, nor their UID forms (stricter than RFC 3501 7.4.1, which allows it during UID
commands); FETCH of a message expunged by another session answers the rest and a tagged
NO [EXPUNGEISSUED] (RFC 2180 4.1.2); STORE .SILENT then is OK, plain STORE is NO
[EXPUNGEISSUED].  A session whose selected mailbox is deleted or renamed gets `* BYE` or a NO
with text on its next command.
"""
import re
import time
import unittest

from wire import (ServerCase, View, codes, fetch_each, flags_of, numbers, parse, responses,
                  search_of, uid_of, write_mbox)

N = 6


def mbox_text(n=N):
    out = []
    for i in range(1, n + 1):
        out.append("From sender@example.com Mon Jan %2d 10:00:00 2024\n"
                   "From: Sender <sender@example.com>\n"
                   "To: Test <test@example.com>\n"
                   "Subject: message %d\n"
                   "Date: Mon, %d Jan 2024 10:00:00 +0000\n"
                   "Message-ID: <m%d@multi.example>\n"
                   "Status: O\n"
                   "X-UID: %d\n"
                   "\n"
                   "Body of message %d.\n" % (i, i, i, i, 10 * i, i))
    return "\n".join(out)


def new_message(mid, subject="new"):
    return ("From: Other <other@example.com>\r\nTo: Test <test@example.com>\r\n"
            "Subject: %s\r\nMessage-ID: <%s>\r\n\r\nHello.\r\n" % (subject, mid)).encode()


def apply_updates(uids, untagged):
    """Apply EXISTS/EXPUNGE/FETCH UID responses in order to a list of UIDs (None = not yet
    known), checking each number is inside the view at that point (RFC 3501 7.4.1)."""
    return View(uids).feed(untagged).uids


def try_cmd(r, command):
    """Like Raw.cmd but survives the server closing the connection:
    returns (closed, untagged, tagged)."""
    tag = r.tag()
    got = b""
    try:
        r.send("%s %s\r\n" % (tag, command))
        while True:
            line = r.read_response_line()
            if line.startswith(tag.encode() + b" "):
                return False, got, line[len(tag) + 1:-2]
            got += line
    except (EOFError, OSError):
        return True, got + r.buf, b""


class MultiBase(ServerCase):
    server_args = ()

    def setUp(self):
        path = write_mbox(self.tempdir(), "inbox.mbox", mbox_text())
        self.srv = self.start(*(list(self.server_args) + [path]))

    def tearDown(self):
        self.assertIsNone(self.srv.proc.poll(), "the server died; stderr: %s"
                          % self.srv.stderr()[-2000:])

    def conn(self, select="INBOX"):
        return self.raw(self.srv, select=select)

    def fresh_flags(self):
        """{Message-ID number: flags} seen by a new session (EXAMINE keeps \\Recent)."""
        r = self.conn(select=None)
        r.ok("EXAMINE INBOX")
        out = {}
        untagged = r.ok("FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        for seq, items in fetch_each(untagged).items():
            mid = re.search(rb"<m(\d+)@multi", items[0]["BODY[HEADER.FIELDS (MESSAGE-ID)]"])
            out[int(mid.group(1))] = flags_of(items[0])
        return out

    # -- steps the default and the --strict-expunge tests share: they differ only in what
    # -- a command on a message another session expunged answers

    def move_and_uid_expunge(self):
        """Another session MOVEs 2 to Work and UID EXPUNGEs 60 (40 is \\Deleted too);
        returns (b, w): a session on INBOX not told yet, and one on Work."""
        c = self.conn(select=None)
        c.ok("CREATE Work")
        a, b, w = self.conn(), self.conn(), self.conn("Work")
        a.ok("MOVE 2 Work")                            # RFC 6851: an expunge for the others
        a.ok("STORE 4 +FLAGS.SILENT (\\Deleted)")
        a.ok("UID STORE 60 +FLAGS.SILENT (\\Deleted)")
        a.ok("UID EXPUNGE 60")                         # RFC 4315: only 60, 40 stays
        return b, w

    def check_moved_and_uid_expunged(self, b, w):
        """b's NOOP tells it of 2 and 6 (and of nothing else); w has the moved message."""
        ub = b.ok("NOOP")
        self.assertEqual(apply_updates([10, 20, 30, 40, 50, 60], ub), [10, 30, 40, 50])
        self.assertEqual(numbers(w.ok("NOOP"), b"EXISTS"), [1])
        self.assertIn(b"<m2@multi.example>", w.ok("FETCH 1 BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"))

    def close_expunges(self):
        """Another session CLOSEs with 3 and 5 \\Deleted; returns (b, c), two sessions on
        INBOX not told yet."""
        a, b, c = self.conn(), self.conn(), self.conn()
        a.ok("STORE 3,5 +FLAGS.SILENT (\\Deleted)")
        untagged = a.ok("CLOSE")
        self.assertNotIn(b"EXPUNGE", untagged)          # CLOSE expunges silently (6.4.2)
        self.assertNotIn(b"EXPUNGE", b.pending(0.2))
        return b, c

    def check_close_expunges_told(self, b, c):
        """NOOP (b) and CHECK (c) tell of 3 and 5, in either order."""
        ub = b.ok("NOOP")
        self.assertEqual(len(numbers(ub, b"EXPUNGE")), 2, ub)
        self.assertIn(numbers(ub, b"EXPUNGE"), ([3, 4], [5, 3]), ub)   # either order
        uc = c.ok("CHECK")
        self.assertIn(numbers(uc, b"EXPUNGE"), ([3, 4], [5, 3]), uc)
        for r in (b, c):
            got = [uid_of(v[0]) for k, v in sorted(fetch_each(r.ok("FETCH 1:* UID")).items())]
            self.assertEqual(got, [10, 20, 40, 60])

    def check_told_of_3(self, b):
        """b's NOOP tells it that 3 (UID 30) is gone; 3 is UID 40 from then on."""
        untagged = b.ok("NOOP")
        self.assertEqual(numbers(untagged, b"EXPUNGE"), [3])
        self.assertEqual(uid_of(fetch_each(b.ok("FETCH 3 UID"))[3][0]), 40)


class UpdatesTest(MultiBase):

    def test_append_by_other_gives_exists_and_recent_to_one_session(self):
        a, b, c = self.conn(), self.conn(), self.conn(select=None)
        untagged, tagged = c.append("INBOX", new_message("n1@multi.example"))
        self.assertTrue(tagged.startswith(b"OK"), tagged)
        self.assertNotIn(b"EXISTS", untagged)          # c has nothing selected
        ua, ub = a.ok("NOOP"), b.ok("NOOP")
        self.assertEqual(numbers(ua, b"EXISTS"), [7], ua)
        self.assertEqual(numbers(ub, b"EXISTS"), [7], ub)
        # \Recent goes to exactly one of the sessions that had it selected (RFC 3501 2.3.2)
        recent = ["\\Recent" in flags_of(fetch_each(r.ok("FETCH 7 FLAGS"))[7][0]) for r in (a, b)]
        self.assertEqual(sorted(recent), [False, True], recent)
        holder, other = (ua, ub) if recent[0] else (ub, ua)
        self.assertEqual(numbers(holder, b"RECENT"), [1], holder)   # RFC 3501 7.3.2
        self.assertIn(numbers(other, b"RECENT"), ([], [0]), other)
        got = sorted([search_of(a.ok("SEARCH RECENT")), search_of(b.ok("SEARCH RECENT"))])
        self.assertEqual(got, [[], [7]])

    def test_append_to_own_selected_mailbox_gives_exists_at_once(self):
        a = self.conn()
        untagged, tagged = a.append("INBOX", new_message("n2@multi.example"))
        self.assertTrue(tagged.startswith(b"OK"), tagged)
        self.assertEqual(numbers(untagged, b"EXISTS"), [7], untagged)   # RFC 3501 5.2, 6.3.11

    def test_copy_by_other_gives_exists_and_recent_to_one_session(self):
        c = self.conn(select=None)
        c.ok("CREATE Src")
        for k in (1, 2):
            self.assertTrue(c.append("Src", new_message("src%d@multi.example" % k))[1]
                            .startswith(b"OK"))
        a, b = self.conn(), self.conn()
        c.ok("SELECT Src")
        c.ok("COPY 1:2 INBOX")
        ua, ub = a.ok("NOOP"), b.ok("NOOP")
        self.assertEqual(numbers(ua, b"EXISTS"), [8], ua)
        self.assertEqual(numbers(ub, b"EXISTS"), [8], ub)
        got = sorted([search_of(a.ok("SEARCH RECENT")), search_of(b.ok("SEARCH RECENT"))])
        self.assertEqual(got, [[], [7, 8]])             # COPY sets \Recent (RFC 3501 6.4.7)
        mids = fetch_each(a.ok("FETCH 7:8 BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"))
        self.assertIn(b"<src1@multi.example>", mids[7][0]["BODY[HEADER.FIELDS (MESSAGE-ID)]"])
        self.assertIn(b"<src2@multi.example>", mids[8][0]["BODY[HEADER.FIELDS (MESSAGE-ID)]"])

    def test_store_by_other_gives_fetch_flags(self):
        a, b = self.conn(), self.conn()
        ua = a.ok("STORE 2 +FLAGS (\\Flagged $Important)")
        self.assertEqual(flags_of(fetch_each(ua)[2][0]), {"\\Flagged", "$Important"})
        ub = b.ok("NOOP")
        self.assertIn(2, fetch_each(ub), ub)
        self.assertEqual(flags_of(fetch_each(ub)[2][-1]), {"\\Flagged", "$Important"})
        a.ok("STORE 2 -FLAGS.SILENT (\\Flagged)")
        ub = b.ok("NOOP")
        self.assertEqual(flags_of(fetch_each(ub)[2][-1]), {"$Important"}, ub)
        a.ok("STORE 5 FLAGS (\\Answered)")
        ub = b.ok("CHECK")                             # also before CHECK's tagged reply
        self.assertEqual(flags_of(fetch_each(ub)[5][-1]), {"\\Answered"}, ub)

    def test_new_keyword_announced_before_fetch_shows_it(self):
        # RFC 3501 7.2.6: FLAGS lists the flags the mailbox has; a client (imaptest, for one)
        # rejects a FETCH naming a keyword FLAGS never announced.  A keyword new to the
        # mailbox goes to every session with it selected as * FLAGS and * OK [PERMANENTFLAGS],
        # before any FETCH that shows it: to the storer within its own STORE answer, to the
        # others with their next command
        def order(untagged, keyword, fetch):
            """Positions of the first FLAGS, PERMANENTFLAGS and `fetch` FETCH responses
            naming keyword (None when absent), checking the lists of the first two."""
            got = {"FLAGS": None, "PERMANENTFLAGS": None, "FETCH": None}
            for i, r in enumerate(parse(untagged)):
                if r[0] == "FLAGS":
                    what, listed = "FLAGS", r[1]
                elif r[0] == "OK" and r[1] and r[1][0] == "PERMANENTFLAGS":
                    what, listed = "PERMANENTFLAGS", r[1][1]
                elif r[:2] == [fetch, "FETCH"] and "FLAGS" in r[2]:
                    what, listed = "FETCH", r[2][r[2].index("FLAGS") + 1]
                else:
                    continue
                if keyword not in listed:
                    continue
                if got[what] is None:
                    got[what] = i
                listed = set(listed)
                system = {"\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"}
                if what == "FLAGS":
                    self.assertTrue(system <= listed, r)
                elif what == "PERMANENTFLAGS":
                    self.assertTrue(system | {"\\*"} <= listed, r)
            return got

        a, b, c = self.conn(), self.conn(), self.conn(select=None)
        ua = a.ok("STORE 1 +FLAGS ($Brandnew)")
        got = order(ua, "$Brandnew", 1)
        self.assertIsNotNone(got["FETCH"], ua)
        self.assertIsNotNone(got["FLAGS"], "no * FLAGS announced $Brandnew: %r" % ua)
        self.assertIsNotNone(got["PERMANENTFLAGS"], "no PERMANENTFLAGS with $Brandnew: %r" % ua)
        self.assertLess(got["FLAGS"], got["FETCH"], ua)
        self.assertLess(got["PERMANENTFLAGS"], got["FETCH"], ua)
        ub = b.ok("NOOP")
        got = order(ub, "$Brandnew", 1)
        self.assertIsNotNone(got["FETCH"], ub)
        self.assertIsNotNone(got["FLAGS"], "no * FLAGS announced $Brandnew: %r" % ub)
        self.assertIsNotNone(got["PERMANENTFLAGS"], "no PERMANENTFLAGS with $Brandnew: %r" % ub)
        self.assertLess(got["FLAGS"], got["FETCH"], ub)
        self.assertLess(got["PERMANENTFLAGS"], got["FETCH"], ub)
        # a keyword an APPEND brings: announced by the time the new message can be fetched
        _, tagged = c.append("INBOX", new_message("kw@multi.example"), "($Appended)")
        self.assertTrue(tagged.startswith(b"OK"), tagged)
        ub = b.ok("NOOP") + b.ok("FETCH 7 (FLAGS)")
        got = order(ub, "$Appended", 7)
        self.assertIsNotNone(got["FETCH"], ub)
        self.assertIsNotNone(got["FLAGS"], "no * FLAGS announced $Appended: %r" % ub)
        self.assertLess(got["FLAGS"], got["FETCH"], ub)

    def test_many_flag_changes_reported_once_each_with_final_flags(self):
        # 400 STOREs on 6 messages: the server's flag-change log is compacted along the
        # way; a session that was not looking gets one FETCH per changed message, with
        # the flags it ends with, and none for the message nobody touched.
        a, b = self.conn(), self.conn()
        final = {}
        for i in range(400):
            seq = 1 + i % 5
            flag = ("\\Flagged", "\\Answered", "$K%d" % (i % 3))[i % 3]
            op = "+" if (i // 5) % 2 == 0 else "-"
            a.ok("STORE %d %sFLAGS.SILENT (%s)" % (seq, op, flag))
        for seq, lines in fetch_each(a.ok("FETCH 1:6 FLAGS")).items():
            final[seq] = flags_of(lines[-1]) - {"\\Recent"}
        ub = b.ok("NOOP")
        got = fetch_each(ub)
        self.assertEqual(sorted(got), [1, 2, 3, 4, 5], ub)
        for seq, lines in got.items():
            self.assertEqual(len(lines), 1, ub)
            self.assertEqual(flags_of(lines[0]) - {"\\Recent"}, final[seq], ub)

    def test_examine_sees_but_does_not_take_recent(self):
        a, c = self.conn(select=None), self.conn(select=None)
        a.ok("EXAMINE INBOX")
        c.append("INBOX", new_message("n3@multi.example"))
        self.assertEqual(numbers(a.ok("NOOP"), b"EXISTS"), [7])
        # a was the first session told of it: \Recent shows there (RFC 3501 2.3.2), as it does
        # for messages already recent at EXAMINE (6.3.2: same output as SELECT); being
        # read-only, a does not take it away from the next read-write session
        self.assertEqual(search_of(a.ok("SEARCH RECENT")), [7])
        b = self.conn()
        self.assertEqual(search_of(b.ok("SEARCH RECENT")), [7])
        d = self.conn()
        self.assertEqual(search_of(d.ok("SEARCH RECENT")), [])

    def test_search_sees_store_by_other_at_once(self):
        a, b = self.conn(), self.conn()
        a.ok("STORE 4 +FLAGS.SILENT (\\Flagged)")
        self.assertEqual(search_of(b.ok("SEARCH FLAGGED")), [4])
        self.assertEqual(search_of(b.ok("UID SEARCH FLAGGED")), [40])

    def test_mixed_updates_keep_numbers_right(self):
        a, b, c = self.conn(), self.conn(), self.conn(select=None)
        a.ok("STORE 2,5 +FLAGS.SILENT (\\Deleted)")
        a.ok("EXPUNGE")
        c.append("INBOX", new_message("n4@multi.example"))
        a.ok("STORE 1 +FLAGS.SILENT (\\Seen)")
        c.append("INBOX", new_message("n5@multi.example"))
        a.ok("STORE 5 +FLAGS.SILENT (\\Deleted)")     # a's 5 is the first new one
        a.ok("EXPUNGE")
        view = apply_updates([10, 20, 30, 40, 50, 60], b.ok("NOOP"))
        fresh = self.conn()
        want = [uid_of(v[0]) for k, v in sorted(fetch_each(fresh.ok("FETCH 1:* UID")).items())]
        self.assertEqual(len(view), len(want))
        self.assertEqual(len(want), 5)
        for got, w in zip(view, want):
            self.assertIn(got, (None, w))
        self.assertEqual([uid_of(v[0]) for k, v in
                          sorted(fetch_each(b.ok("FETCH 1:* UID")).items())], want)

    def test_move_and_uid_expunge_by_other(self):
        b, w = self.move_and_uid_expunge()
        untagged = b.ok("FETCH 1:* (UID)")            # RFC 2180 4.1.1: 2 and 6 as they were
        self.assertNotIn(b"EXPUNGE", untagged)
        self.assertEqual([uid_of(v[0]) for k, v in sorted(fetch_each(untagged).items())],
                         [10, 20, 30, 40, 50, 60])
        self.check_moved_and_uid_expunged(b, w)

    def test_expunge_by_other_waits_for_noop(self):
        a, b = self.conn(), self.conn()
        a.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
        self.assertEqual(numbers(a.ok("EXPUNGE"), b"EXPUNGE"), [2])
        # no command in progress on b: no EXPUNGE may be sent (RFC 3501 7.4.1)
        self.assertNotIn(b"EXPUNGE", b.pending(0.3))
        # FETCH, STORE, SEARCH and their UID forms: no EXPUNGE, b's old numbers still hold
        for command, seq, uid in (("FETCH 4 (UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])", 4, 40),
                                  ("STORE 5 +FLAGS (\\Answered)", 5, None),
                                  ("UID FETCH 40 (FLAGS)", 4, 40),
                                  ("UID STORE 60 +FLAGS (\\Seen)", 6, 60)):
            untagged = b.ok(command)
            self.assertNotIn(b"EXPUNGE", untagged, command)
            f = fetch_each(untagged)
            self.assertIn(seq, f, (command, untagged))
            if uid:
                self.assertEqual(uid_of(f[seq][0]), uid, (command, untagged))
        untagged = b.ok("FETCH 4 (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        self.assertIn(b"<m4@multi.example>", untagged)
        for command, want in (('SEARCH HEADER Message-ID "<m6@"', [6]),
                              ("SEARCH UID 40:60", [4, 5, 6]),
                              ('UID SEARCH HEADER Message-ID "<m5@"', [50]),
                              ("UID SEARCH 4:6", [40, 50, 60])):
            untagged = b.ok(command)
            self.assertNotIn(b"EXPUNGE", untagged, command)
            self.assertEqual(search_of(untagged), want, command)
        untagged = b.ok("SEARCH ALL")                  # RFC 2180 4.3: 2 may be left out
        self.assertNotIn(b"EXPUNGE", untagged)
        self.assertTrue({1, 3, 4, 5, 6} <= set(search_of(untagged)) <= {1, 2, 3, 4, 5, 6})
        # NOOP delivers it; from then on b's numbers are the new ones
        untagged = b.ok("NOOP")
        self.assertEqual(numbers(untagged, b"EXPUNGE"), [2], untagged)
        self.assertEqual(uid_of(fetch_each(b.ok("FETCH 4 UID"))[4][0]), 50)
        self.assertEqual(search_of(b.ok("SEARCH ALL")), [1, 2, 3, 4, 5])
        # b's STOREs went to the messages b meant
        flags = self.fresh_flags()
        self.assertNotIn(2, flags)
        self.assertIn("\\Answered", flags[5])
        self.assertIn("\\Seen", flags[6])
        self.assertNotIn("\\Answered", flags[4])

    def test_expunge_by_close_sent_before_check_and_noop(self):
        b, c = self.close_expunges()
        untagged = b.ok("FETCH 1:* (FLAGS)")           # 3 and 5 as they were (RFC 2180 4.1.1)
        self.assertNotIn(b"EXPUNGE", untagged)
        f = fetch_each(untagged)
        self.assertEqual(sorted(f), [1, 2, 3, 4, 5, 6], untagged)
        self.assertIn("\\Deleted", flags_of(f[3][0]))
        self.check_close_expunges_told(b, c)

    def test_copy_of_message_expunged_by_other(self):
        # RFC 2180 4.4: pending EXPUNGEs MUST come with the COPY; then either nothing is
        # copied and the answer is NO (4.4.1), or the remaining messages are (4.4.2)
        a, b = self.conn(), self.conn()
        a.ok("CREATE Other")
        a.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
        a.ok("EXPUNGE")
        untagged, tagged = b.cmd("COPY 1:3 Other")
        self.assertEqual(numbers(untagged, b"EXPUNGE"), [2], untagged)
        status = a.ok("STATUS Other (MESSAGES)")
        if tagged.startswith(b"NO"):
            self.assertIn(b"(MESSAGES 0)", status)
        else:
            self.assertTrue(tagged.startswith(b"OK"), tagged)
            self.assertIn(b"(MESSAGES 2)", status)
        self.assertEqual(uid_of(fetch_each(b.ok("FETCH 2 UID"))[2][0]), 30)


    def test_fetch_of_message_expunged_by_other(self):
        # RFC 2180 4.1.1, as Dovecot and Cyrus: the message answers as it was, and OK; STORE
        # on it succeeds and changes nothing; the EXPUNGE waits for a command that allows it
        a, b = self.conn(), self.conn()
        want = b.ok("FETCH 3 (BODY.PEEK[])")
        a.ok("STORE 3 +FLAGS.SILENT (\\Deleted)")
        a.ok("EXPUNGE")
        untagged = b.ok("FETCH 2:4 (UID FLAGS)")
        f = fetch_each(untagged)
        self.assertEqual(sorted(f), [2, 3, 4], untagged)
        self.assertEqual([uid_of(f[k][0]) for k in (2, 3, 4)], [20, 30, 40])
        self.assertIn("\\Deleted", flags_of(f[3][0]))
        self.assertNotIn(b"EXPUNGE", untagged)
        self.assertEqual(b.ok("FETCH 3 (BODY.PEEK[])"), want)
        self.assertIn(b"<m3@multi.example>", b.ok("UID FETCH 30 (BODY[HEADER])"))
        for store in ("STORE 2:4 +FLAGS.SILENT (\\Seen)", "STORE 2:4 +FLAGS (\\Flagged)",
                      "UID STORE 30 +FLAGS (\\Answered)"):
            untagged, tagged = b.cmd(store)
            self.assertTrue(tagged.startswith(b"OK"), (store, tagged))
            self.assertNotIn(3, fetch_each(untagged), (store, untagged))
            self.assertNotIn(b"EXPUNGE", untagged)
        self.assertEqual(search_of(b.ok("SEARCH 1:*")), [1, 2, 4, 5, 6])  # SEARCH leaves it out
        self.check_told_of_3(b)
        untagged, tagged = b.cmd("UID FETCH 30 (FLAGS)")   # told now: gone for good
        self.assertEqual(fetch_each(untagged), {})
        flags = self.fresh_flags()
        self.assertIn("\\Flagged", flags[2])
        self.assertIn("\\Flagged", flags[4])
        self.assertNotIn(3, flags)

    def test_copy_names_the_expunged_like_dovecot(self):
        a, b = self.conn(), self.conn()
        a.ok("CREATE Other")
        for uid, cmd in ((20, "UID MOVE 20 Other"), (30, "COPY 1:3 Other")):
            a.ok("UID STORE %d +FLAGS.SILENT (\\Deleted)" % uid)
            a.ok("EXPUNGE")
            untagged, tagged = b.cmd(cmd)       # nothing copied, and the EXPUNGE comes along
            self.assertEqual(tagged, b"NO [EXPUNGEISSUED] Some of the requested messages no "
                                     b"longer exist", cmd)
            self.assertEqual(numbers(untagged, b"EXPUNGE"), [uid // 10 - (uid == 30)], untagged)
        self.assertIn(b"(MESSAGES 0)", a.ok("STATUS Other (MESSAGES)"))


class ReselectTest(MultiBase):
    """SELECT of the mailbox a session has selected already (RFC 3501 6.3.1): what it answers,
    and the view it leaves, are those of a first SELECT, whatever happened since."""

    def summary(self, untagged):
        """The last EXISTS and RECENT (an update for the old view may come first) and the
        codes of a SELECT's answer."""
        c = codes(untagged)
        last = lambda word: (numbers(untagged, word) or [None])[-1]
        return {"EXISTS": last(b"EXISTS"), "RECENT": last(b"RECENT"), "UNSEEN": c.get("UNSEEN"),
                "UIDNEXT": c.get("UIDNEXT"), "UIDVALIDITY": c.get("UIDVALIDITY")}

    def uids(self, r):
        return [uid_of(v[0]) for k, v in sorted(fetch_each(r.ok("FETCH 1:* UID")).items())]

    def check_like_a_first_select(self, a, command="SELECT INBOX"):
        """a's SELECT answers as a new session's EXAMINE does now (but \\Recent: checked by
        the callers), and leaves a view with the same UIDs."""
        got = self.summary(a.ok(command))
        fresh = self.conn(select=None)
        want = self.summary(fresh.ok("EXAMINE INBOX"))
        for k in ("EXISTS", "UNSEEN", "UIDNEXT", "UIDVALIDITY"):
            self.assertEqual(got[k], want[k], (k, got, want))
        self.assertEqual(self.uids(a), self.uids(fresh))
        return got

    def test_unchanged_mailbox(self):
        a = self.conn()
        for _ in range(3):
            got = self.check_like_a_first_select(a)
            self.assertEqual(got["RECENT"], 0)
        self.assertEqual(got["UNSEEN"], [1])
        a.ok("STORE 2 +FLAGS.SILENT (\\Flagged)")     # the view serves as before
        self.assertEqual(search_of(a.ok("SEARCH FLAGGED")), [2])
        self.assertEqual(uid_of(fetch_each(a.ok("FETCH 6 UID"))[6][0]), 60)

    def test_first_unseen_after_own_and_others_stores(self):
        a, b = self.conn(), self.conn()
        a.ok("STORE 1:2 +FLAGS.SILENT (\\Seen)")       # a knows its own change
        self.assertEqual(self.check_like_a_first_select(a)["UNSEEN"], [3])
        b.ok("STORE 3 +FLAGS.SILENT (\\Seen)")         # a has not heard of this one
        self.assertEqual(self.check_like_a_first_select(a)["UNSEEN"], [4])
        a.ok("NOOP")
        b.ok("STORE 1:6 +FLAGS.SILENT (\\Seen)")
        a.ok("NOOP")                                    # told: nothing new for a since
        got = self.check_like_a_first_select(a)
        self.assertEqual(got["UNSEEN"], None)          # 7.1: no UNSEEN when all are seen

    def test_messages_added_and_expunged_by_another_session(self):
        a, b = self.conn(), self.conn(select=None)
        b.append("INBOX", new_message("n1@multi.example"))
        got = self.check_like_a_first_select(a)        # not told of it before: a new view
        # (the update before the SELECT, for the old selection, gave it as \Recent to a)
        self.assertEqual((got["EXISTS"], got["RECENT"]), (7, 0))
        b.ok("SELECT INBOX")
        b.ok("STORE 2,4 +FLAGS.SILENT (\\Deleted)")
        b.ok("EXPUNGE")
        a.ok("NOOP")                                    # told of both expunges
        got = self.check_like_a_first_select(a)
        self.assertEqual((got["EXISTS"], got["RECENT"]), (5, 0))
        self.assertEqual(self.uids(a), [10, 30, 50, 60, 61])

    def test_as_many_messages_but_not_the_same(self):
        a, b = self.conn(), self.conn()
        b.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
        b.ok("EXPUNGE")
        b.append("INBOX", new_message("n5@multi.example"))
        b.ok("STORE 3 +FLAGS.SILENT (\\Seen)")
        got = self.check_like_a_first_select(a)        # a was told of none of it
        self.assertEqual(got["EXISTS"], 6)
        self.assertEqual(self.uids(a), [10, 30, 40, 50, 60, 61])
        a.ok("STORE 1:2 +FLAGS.SILENT (\\Seen)")       # then flags only: the same view
        self.assertEqual(self.check_like_a_first_select(a)["UNSEEN"], [4])   # 3 was b's

    def test_recent_claimed_in_sync_is_not_recent_again(self):
        a, c = self.conn(), self.conn(select=None)
        c.append("INBOX", new_message("n2@multi.example"))
        self.assertEqual(numbers(a.ok("NOOP"), b"RECENT"), [1])   # a is the first told
        self.assertEqual(search_of(a.ok("SEARCH RECENT")), [7])
        got = self.check_like_a_first_select(a)                   # as any later SELECT
        self.assertEqual(got["RECENT"], 0)
        self.assertEqual(search_of(a.ok("SEARCH RECENT")), [])
        self.assertEqual(self.check_like_a_first_select(a)["RECENT"], 0)

    def test_examine_then_select_takes_recent(self):
        a, c = self.conn(select=None), self.conn(select=None)
        c.append("INBOX", new_message("n3@multi.example"))
        self.assertEqual(numbers(a.ok("EXAMINE INBOX"), b"RECENT"), [1])   # seen, not taken
        got = self.check_like_a_first_select(a)        # nothing changed since the EXAMINE
        self.assertEqual(got["RECENT"], 1)           # the first read-write session takes it
        self.assertEqual(search_of(a.ok("SEARCH RECENT")), [7])
        self.assertEqual(self.check_like_a_first_select(a)["RECENT"], 0)
        self.assertEqual(numbers(self.conn(select=None).ok("SELECT INBOX"), b"RECENT"), [0])

    def test_examine_then_select_after_expunge_and_append(self):
        # the new message lands where an expunged one was counted: still \Recent for the
        # first read-write selection
        a, b, c = self.conn(select=None), self.conn(), self.conn(select=None)
        a.ok("EXAMINE INBOX")
        b.ok("STORE 1 +FLAGS.SILENT (\\Deleted)")
        b.ok("EXPUNGE")
        c.append("INBOX", new_message("n4@multi.example"))
        a.ok("NOOP")                                    # told of both; read-only: not taken
        got = self.check_like_a_first_select(a)
        self.assertEqual((got["EXISTS"], got["RECENT"]), (6, 1))
        self.assertEqual(self.uids(a), [20, 30, 40, 50, 60, 61])
        self.assertEqual(search_of(a.ok("SEARCH RECENT")), [6])

    def test_examine_after_select_is_read_only(self):
        a = self.conn()
        self.assertIn(b"[READ-ONLY]", a.cmd("EXAMINE INBOX")[1])
        self.assertNO(a.cmd("STORE 1 +FLAGS (\\Seen)")[1])
        self.assertIn(b"[READ-WRITE]", a.cmd("SELECT INBOX")[1])
        a.ok("STORE 1 +FLAGS.SILENT (\\Seen)")
        self.assertEqual(self.check_like_a_first_select(a)["UNSEEN"], [2])


class StrictExpungeTest(MultiBase):
    """--strict-expunge: a message another session expunged answers NO [EXPUNGEISSUED]
    (RFC 2180 4.1.2, 4.2.2), for testing how clients handle that."""
    server_args = ("--strict-expunge",)

    def test_move_and_uid_expunge_by_other(self):
        b, w = self.move_and_uid_expunge()
        untagged, tagged = b.cmd("FETCH 1:* (UID)")   # 2 and 6 are gone: RFC 2180 4.1.2
        self.assertNotIn(b"EXPUNGE", untagged)
        self.assertTrue(tagged.startswith(b"NO [EXPUNGEISSUED]"), tagged)
        self.assertEqual(sorted(fetch_each(untagged)), [1, 3, 4, 5])
        self.check_moved_and_uid_expunged(b, w)

    def test_expunge_by_close_sent_before_check_and_noop(self):
        b, c = self.close_expunges()
        untagged, tagged = b.cmd("FETCH 1:* (FLAGS)")  # NO [EXPUNGEISSUED] (RFC 2180 4.1.2)
        self.assertNotIn(b"EXPUNGE", untagged)
        self.assertEqual(sorted(fetch_each(untagged)), [1, 2, 4, 6], untagged)
        self.assertTrue(tagged.startswith(b"NO [EXPUNGEISSUED]"), tagged)
        self.check_close_expunges_told(b, c)

    def test_fetch_of_message_expunged_by_other(self):
        # RFC 2180 4.1.2: data for the rest, tagged NO [EXPUNGEISSUED]
        a, b = self.conn(), self.conn()
        a.ok("STORE 3 +FLAGS.SILENT (\\Deleted)")
        a.ok("EXPUNGE")
        untagged, tagged = b.cmd("FETCH 2:4 (UID FLAGS)")
        f = fetch_each(untagged)
        self.assertEqual(sorted(f), [2, 4], untagged)
        self.assertEqual((uid_of(f[2][0]), uid_of(f[4][0])), (20, 40))
        self.assertNotIn(b"EXPUNGE", untagged)
        self.assertTrue(tagged.startswith(b"NO [EXPUNGEISSUED]"), tagged)
        untagged, tagged = b.cmd("FETCH 3 (BODY.PEEK[])")
        self.assertNotIn(b"FETCH", untagged)
        self.assertTrue(tagged.startswith(b"NO [EXPUNGEISSUED]"), tagged)
        # STORE: .SILENT is OK (4.2.1); otherwise NO [EXPUNGEISSUED]
        untagged, tagged = b.cmd("STORE 2:4 +FLAGS.SILENT (\\Seen)")
        self.assertTrue(tagged.startswith(b"OK"), tagged)
        self.assertNotIn(b"EXPUNGE", untagged)
        untagged, tagged = b.cmd("STORE 2:4 +FLAGS (\\Flagged)")
        self.assertTrue(tagged.startswith(b"NO [EXPUNGEISSUED]"), tagged)
        self.assertNotIn(3, fetch_each(untagged))
        self.assertNotIn(b"EXPUNGE", untagged)
        self.check_told_of_3(b)
        flags = self.fresh_flags()
        self.assertIn("\\Seen", flags[2])
        self.assertIn("\\Seen", flags[4])
        self.assertNotIn(3, flags)


class MailboxGoneTest(MultiBase):
    """DELETE / RENAME of a mailbox another session has selected (RFC 2180 3.3; issue 4)."""

    def setup_work(self):
        c = self.conn(select=None)
        c.ok("CREATE Work")
        for k in (1, 2):
            self.assertTrue(c.append("Work", new_message("w%d@multi.example" % k))[1]
                            .startswith(b"OK"))
        return c

    def check_selection_ended(self, a):
        closed, untagged, tagged = try_cmd(a, "FETCH 1 (FLAGS)")
        if closed or b"* BYE" in untagged:
            self.assertIn(b"* BYE", untagged, "closed without * BYE")
            return
        self.assertTrue(tagged.startswith(b"NO"), (untagged, tagged))
        self.assertTrue(re.match(rb"NO (\[[^\]]*\] )?\S", tagged), tagged)   # says why
        self.assertNotIn(b"* 1 FETCH", untagged)
        # the session goes on: it can select another mailbox
        self.assertIn(b"EXISTS", a.ok("SELECT INBOX"))

    def others_keep_working(self, c):
        c.ok("NOOP")
        d = self.conn()
        self.assertEqual(numbers(d.ok("SELECT INBOX"), b"EXISTS"), [N])
        self.assertIn(b"FETCH", d.ok("FETCH 1:* (FLAGS)"))

    def test_delete_of_selected_mailbox(self):
        c = self.setup_work()
        a = self.conn("Work")
        untagged, tagged = c.cmd("DELETE Work")
        self.assertTrue(tagged.startswith(b"OK"), tagged)
        self.check_selection_ended(a)
        listing = c.ok('LIST "" "*"')
        self.assertNotIn(b"Work", listing)
        self.others_keep_working(c)
        _, tagged = c.cmd("SELECT Work")
        self.assertTrue(tagged.startswith(b"NO"), tagged)

    def test_rename_of_selected_mailbox(self):
        c = self.setup_work()
        a = self.conn("Work")
        untagged, tagged = c.cmd("RENAME Work Play")
        self.assertTrue(tagged.startswith(b"OK"), tagged)
        self.check_selection_ended(a)
        self.assertEqual(numbers(c.ok("SELECT Play"), b"EXISTS"), [2])
        self.others_keep_working(c)

    def test_delete_while_idling(self):
        c = self.setup_work()
        a = self.conn("Work")
        a.send("i1 IDLE\r\n")
        self.assertTrue(a.readline().startswith(b"+"))
        c.ok("DELETE Work")
        # either BYE now, or DONE is answered and the next command says NO
        closed, got, tagged = False, b"", b""
        try:
            got = a.pending(0.5)
            if b"* BYE" not in got:
                a.send("DONE\r\n")
                untagged, tagged = a.until_tagged("i1")
                got += untagged
        except (EOFError, OSError):
            closed = True
        if closed or b"* BYE" in got:
            self.assertIn(b"* BYE", got + a.buf, "closed without * BYE")
        elif tagged.startswith(b"NO"):                 # IDLE itself ended with the reason
            self.assertTrue(re.match(rb"NO (\[[^\]]*\] )?\S", tagged), tagged)
            self.assertIn(b"EXISTS", a.ok("SELECT INBOX"))
        else:
            self.assertTrue(tagged.startswith(b"OK"), tagged)
            self.check_selection_ended(a)
        self.others_keep_working(c)


class IdleTest(MultiBase):
    """RFC 2177."""

    def start_idle(self, r, tag="i1"):
        r.send("%s IDLE\r\n" % tag)
        lines, _ = r.read_until(lambda ln: ln.startswith(b"+") or ln.startswith(tag.encode()), 5)
        self.assertTrue(lines[-1].startswith(b"+"), lines)
        return b"".join(lines[:-1])

    def done(self, r, tag="i1"):
        r.send("DONE\r\n")
        untagged, tagged = r.until_tagged(tag)
        self.assertTrue(tagged.startswith(b"OK"), tagged)
        return untagged

    def test_capability(self):
        r = self.conn(select=None)
        untagged = r.ok("CAPABILITY")
        self.assertIn("IDLE", responses(untagged, "CAPABILITY")[0][1:])

    def test_append_delivered_while_idling_within_a_second(self):
        a, c = self.conn(), self.conn(select=None)
        self.start_idle(a)
        t0 = time.monotonic()
        _, tagged = c.append("INBOX", new_message("idle1@multi.example"))
        t_ok = time.monotonic()
        self.assertTrue(tagged.startswith(b"OK"), tagged)
        lines, _ = a.read_until(lambda ln: ln == b"* 7 EXISTS\r\n", 5)
        delay = time.monotonic() - t_ok
        total = time.monotonic() - t0
        self.assertLess(delay, 1.0, "EXISTS came %.3fs after APPEND's OK" % delay)
        self.assertLess(total, 1.0, "APPEND to EXISTS took %.3fs" % total)
        self.done(a)
        self.assertEqual(search_of(a.ok("SEARCH RECENT")), [7])   # a was the first told

    def test_flags_and_expunge_delivered_while_idling(self):
        a, c = self.conn(), self.conn()
        self.start_idle(a)
        c.ok("STORE 2 +FLAGS (\\Flagged)")
        lines, dt = a.read_until(lambda ln: ln.startswith(b"* 2 FETCH"), 5)
        self.assertEqual(flags_of(fetch_each(lines[-1])[2][0]), {"\\Flagged"})
        self.assertLess(dt, 1.0)
        c.ok("STORE 3 +FLAGS.SILENT (\\Deleted)")
        c.ok("EXPUNGE")
        lines, dt = a.read_until(lambda ln: ln.startswith(b"* 3 EXPUNGE"), 5)
        self.assertLess(dt, 1.0)
        untagged = self.done(a)
        self.assertNotIn(b"EXPUNGE", untagged)         # not twice
        self.assertEqual(uid_of(fetch_each(a.ok("FETCH 3 UID"))[3][0]), 40)
        self.assertNotIn(b"EXPUNGE", a.ok("NOOP"))

    def test_pending_expunge_sent_when_idle_starts(self):
        a, c = self.conn(), self.conn()
        c.ok("STORE 2 +FLAGS.SILENT (\\Deleted)")
        c.ok("EXPUNGE")
        before = self.start_idle(a)                    # RFC 2177 example: before "+" or just after
        if b"* 2 EXPUNGE" not in before:
            a.read_until(lambda ln: ln == b"* 2 EXPUNGE\r\n", 1)
        self.done(a)
        self.assertEqual(uid_of(fetch_each(a.ok("FETCH 2 UID"))[2][0]), 30)

    def test_done_ends_idle_in_authenticated_state(self):
        r = self.conn(select=None)                     # IDLE is allowed without a mailbox
        self.start_idle(r)
        self.done(r)
        self.start_idle(r, "i2")
        r.send("done\r\n")                             # case-insensitive like all of 3501 9
        self.assertTrue(r.until_tagged("i2")[1].startswith(b"OK"))
        r.ok("NOOP")

    def test_bad_continuation_ends_idle_with_bad(self):
        r = self.conn()
        self.start_idle(r)
        r.send("FOO\r\n")
        untagged, tagged = r.until_tagged("i1")
        self.assertTrue(tagged.startswith(b"BAD"), tagged)
        r.ok("NOOP")                                   # the connection goes on

    def test_idle_not_authenticated_is_refused(self):
        r = self.raw(self.srv, login=None)
        untagged, tagged = r.cmd("IDLE")
        self.assertTrue(tagged.startswith(b"BAD"), tagged)
        self.assertFalse(untagged.startswith(b"+"))

    def test_two_idlers_both_told(self):
        a, b, c = self.conn(), self.conn(), self.conn(select=None)
        self.start_idle(a)
        self.start_idle(b)
        c.append("INBOX", new_message("idle2@multi.example"))
        for r in (a, b):
            r.read_until(lambda ln: ln == b"* 7 EXISTS\r\n", 1)
            self.done(r)


class IdleAutologoutTest(MultiBase):
    server_args = ("--idle-timeout", "2")

    def test_autologout_applies_while_idling(self):
        r = self.conn()
        r.send("i1 IDLE\r\n")
        self.assertTrue(r.readline().startswith(b"+"))
        t0 = time.monotonic()
        got = r.read_to_eof(10)[0]
        dt = time.monotonic() - t0
        self.assertIn(b"* BYE", got)
        self.assertGreater(dt, 1.0)
        self.assertLess(dt, 8.0)


if __name__ == "__main__":
    unittest.main()
