"""CONDSTORE (RFC 7162 section 3.1), wire tests written from the RFC, not from the server.

Every test writes its own fixture folder (ModseqCase.serve):

  INBOX   seq  uid  flags                Other  seq  uid  flags      Empty: no messages
           1    10  \\Seen                        1    1   none
           2    20  none                          2    2   \\Seen
           3    30  \\Flagged
           4    40  \\Seen \\Answered
           5    50  \\Draft
           6    60  $MDNSent

No message is \\Recent (Status: O); UIDVALIDITY is 1 (X-IMAPbase), UIDNEXT of INBOX 61.
MODSEQ values are the server's to choose: tests read them (FETCH MODSEQ, HIGHESTMODSEQ) and
check their relations, never a number.

Where RFC 7162 leaves a choice, a test checks only what it requires and says so:
  - HIGHESTMODSEQ before any CONDSTORE enabling command: allowed, not required (3.1.2.1).
  - FETCH for messages that failed UNCHANGEDSINCE: a SHOULD (Example 7), not checked.
  - MODIFIED in an OK or a NO (3.1 b): both accepted.
  - a message's MODSEQ after a STORE that changed nothing (3.1.11 SHOULD NOT change): not
    checked.
  - per-flag mod-sequences (3.1.5, 3.1.12): a server may keep one per message or one per
    flag; tests accept both wherever the answers differ.
  - UID in FETCH responses: required once CONDSTORE is enabled on a server that also offers
    QRESYNC (3.2.4), except for a FETCH that names neither UID nor MODSEQ.

Responses are read with wire.py's parser and helpers (search_modseq() for SEARCH MODSEQ's
answers); test_qresync.py and test_enable.py import ModseqCase from here.
"""
import unittest

from wire import (ServerCase, View, capabilities, codes, enabled, expand_set, fetch_list,
                  fetches, flagset, responses, search_modseq, status_parts, upper, write_mbox)

MAXMODSEQ = 2 ** 63 - 1          # RFC 7162 7: mod-sequence-value is 1..2^63-1

INBOX = [(10, ["\\Seen"]), (20, []), (30, ["\\Flagged"]), (40, ["\\Seen", "\\Answered"]),
         (50, ["\\Draft"]), (60, ["$MDNSent"])]
OTHER = [(1, []), (2, ["\\Seen"])]
_XSTATUS = {"\\Answered": "A", "\\Flagged": "F", "\\Draft": "T", "\\Deleted": "D"}


def mbox_text(msgs, name):
    """An mbox file holding msgs [(uid, [flags])] with those UIDs and flags, none \\Recent,
    UIDVALIDITY 1 (X-IMAPbase, as UW imapd and Dovecot write it)."""
    keywords = sorted({f for _, flags in msgs for f in flags if not f.startswith("\\")})
    out = []
    for i, (uid, flags) in enumerate(msgs, 1):
        base = ""
        if i == 1:
            base = "X-IMAPbase: 1 %d%s\n" % (msgs[-1][0], "".join(" " + k for k in keywords))
        xs = "".join(_XSTATUS[f] for f in flags if f in _XSTATUS)
        kw = " ".join(f for f in flags if not f.startswith("\\"))
        out.append("From sender@example.com Mon Jan %2d 10:00:00 2024\n"
                   "From: Sender <sender@example.com>\n"
                   "To: Test <test@example.com>\n"
                   "Subject: %s message %d\n"
                   "Message-ID: <%s-%d@modseq.example>\n"
                   "%sStatus: %s\n%s%s"
                   "X-UID: %d\n"
                   "\n"
                   "Body of %s message %d.\n"
                   % (i, name, i, name, uid, base, "RO" if "\\Seen" in flags else "O",
                      "X-Status: %s\n" % xs if xs else "", "X-Keywords: %s\n" % kw if kw else "",
                      uid, name, i))
    return "\n".join(out)


def new_message(n):
    return ("From: New <new@example.com>\r\nTo: Test <test@example.com>\r\n"
            "Subject: new %d\r\nMessage-ID: <new-%d@modseq.example>\r\n\r\n"
            "New message %d.\r\n" % (n, n, n)).encode()


# ---------------------------------------------------------------------------------------

class ModseqCase(ServerCase):
    """Starts servers on a fresh copy of the fixture; assertion helpers for MODSEQ."""

    def serve(self, *opts):
        d = self.tempdir()
        write_mbox(d, "INBOX.mbox", mbox_text(INBOX, "inbox"))
        write_mbox(d, "Other.mbox", mbox_text(OTHER, "other"))
        write_mbox(d, "Empty.mbox", "")
        return self.start_or_fail(*(list(opts) + [d]))

    # -- commands -----------------------------------------------------------------------

    def conn(self, srv):
        return self.raw(srv)

    def ok(self, r, command):
        u, t = r.cmd(command)
        self.assertTrue(t.startswith(b"OK"), "%s -> %r (untagged %r)" % (command, t, u[-600:]))
        return u, t

    def bad(self, r, command, why):
        u, t = r.cmd(command)
        self.assertTrue(t.startswith(b"BAD"), "%s must be BAD (%s); got %r" % (command, why, t))
        return u, t

    def caps(self, r):
        return capabilities(self.ok(r, "CAPABILITY")[0])

    def need(self, r, *names):
        have = self.caps(r)
        for n in names:
            self.assertIn(n, have, "CAPABILITY does not list %s: %s" % (n, " ".join(sorted(have))))

    def enable(self, r, *names):
        """ENABLE names: must be OK with one * ENABLED; returns the names it lists."""
        u, t = r.cmd("ENABLE " + " ".join(names))
        self.assertTrue(t.startswith(b"OK"), "ENABLE %s -> %r" % (" ".join(names), t))
        return enabled(u)

    def enable_qresync(self, r):
        self.assertIn("QRESYNC", self.enable(r, "QRESYNC"), "ENABLE QRESYNC did not enable it")

    def select(self, r, mailbox="INBOX", params="", command="SELECT"):
        return self.ok(r, "%s %s%s" % (command, mailbox, " (%s)" % params if params else ""))[0]

    def store(self, r, command):
        """A STORE that must succeed; returns its untagged bytes."""
        return self.ok(r, command)[0]

    def status(self, r, mailbox, items):
        u, _ = self.ok(r, "STATUS %s (%s)" % (mailbox, items))
        st = responses(u, "STATUS")
        self.assertEqual(len(st), 1, u)
        v = st[0][2]
        return {upper(v[k]): v[k + 1] for k in range(0, len(v), 2)}

    def status_hms(self, r, mailbox="INBOX"):
        st = self.status(r, mailbox, "HIGHESTMODSEQ")
        self.assertIn("HIGHESTMODSEQ", st, "STATUS (HIGHESTMODSEQ) without it: %r" % st)
        return st["HIGHESTMODSEQ"]

    def expunge(self, r, seqs):
        self.store(r, "STORE %s +FLAGS.SILENT (\\Deleted)" % seqs)
        return self.ok(r, "EXPUNGE")

    def append(self, r, mailbox, n):
        msg = new_message(n)
        return self.ok(r, b"APPEND %s {%d+}\r\n%s" % (mailbox.encode(), len(msg), msg))

    # -- reading answers ----------------------------------------------------------------

    def hms(self, data, where=""):
        """The HIGHESTMODSEQ of the one untagged OK [HIGHESTMODSEQ n] in data."""
        found = codes(data)          # the last of each code
        self.assertIn("HIGHESTMODSEQ", found, "no * OK [HIGHESTMODSEQ n] %s (RFC 7162 3.1.2.1): "
                      "%r" % (where, data[-800:]))
        return self.modseq_value(found["HIGHESTMODSEQ"], "HIGHESTMODSEQ")

    def hms_anywhere(self, untagged, tagged, where=""):
        """HIGHESTMODSEQ from an untagged OK or from the tagged response's code."""
        code = self.tagged_code(tagged)
        if code and code[0] == "HIGHESTMODSEQ":
            return self.modseq_value(code[1:], "HIGHESTMODSEQ")
        return self.hms(untagged, where)

    def modseq_value(self, v, what="MODSEQ"):
        ok = (isinstance(v, list) and len(v) == 1 and isinstance(v[0], int)
              and 1 <= v[0] <= MAXMODSEQ)
        self.assertTrue(ok, "%s must be one positive 63-bit number (RFC 7162 7): %r" % (what, v))
        return v[0]

    def modseq(self, items, what=""):
        self.assertIn("MODSEQ", items, "FETCH without MODSEQ %s: %r" % (what, items))
        return self.modseq_value(items["MODSEQ"], "MODSEQ %s" % what)

    def tagged_code(self, tagged):
        """The response code of a tagged line, its name upper-cased, or None."""
        code = status_parts(tagged)[1]
        return [upper(code[0])] + code[1:] if code else code

    def modified(self, tagged, words=("OK", "NO")):
        """The message numbers (or UIDs) of the tagged MODIFIED code, or None."""
        word, code = status_parts(tagged)[0], self.tagged_code(tagged)
        if code and code[0] == "MODIFIED":
            self.assertIn(word, words, "MODIFIED came in %r" % tagged)
            self.assertEqual(len(code), 2, tagged)
            return set(expand_set(code[1]))
        self.assertEqual(word, "OK", "STORE failed: %r" % tagged)
        return None

    def modseqs(self, r, seqset="1:*"):
        """{uid: modseq} by FETCH seqset (UID MODSEQ)."""
        u, _ = self.ok(r, "FETCH %s (UID MODSEQ)" % seqset)
        out = {}
        for seq, d in fetches(u).items():
            self.assertIn("UID", d, d)
            out[d["UID"]] = self.modseq(d, "of message %d" % seq)
        return out

    def flags(self, r, seqset="1:*"):
        """{uid: {lower-case flags}} by FETCH seqset (UID FLAGS)."""
        u, _ = self.ok(r, "FETCH %s (UID FLAGS)" % seqset)
        return {d["UID"]: flagset(d["FLAGS"]) for d in fetches(u).values()
                if "UID" in d and "FLAGS" in d}

    def every_fetch_has(self, data, *items, why=""):
        """Every untagged FETCH in data carries items; returns fetch_list(data)."""
        fl = fetch_list(data)
        for seq, d in fl:
            for item in items:
                self.assertIn(item, d, "* %d FETCH without %s (%s): %r" % (seq, item, why, data))
        return fl

    def fetch_for(self, data, seq):
        """The merged items of the FETCH responses for message seq (must be there)."""
        f = fetches(data)
        self.assertIn(seq, f, "no * %d FETCH in %r" % (seq, data))
        return f[seq]


# ---------------------------------------------------------------------------------------

class Advertising(ModseqCase):
    def test_capability_lists_condstore(self):
        """RFC 7162 3.1.1 (and 3.2.2: a QRESYNC server SHOULD list CONDSTORE too)."""
        r = self.conn(self.serve())
        self.need(r, "CONDSTORE")


class SelectHighestModseq(ModseqCase):
    def test_select_condstore_example_18(self):
        """RFC 7162 3.1.8, Example 18: SELECT (CONDSTORE) gives the usual SELECT data and
        * OK [HIGHESTMODSEQ n]."""
        r = self.conn(self.serve())
        u, t = self.ok(r, "SELECT INBOX (CONDSTORE)")
        self.assertTrue(t.startswith(b"OK [READ-WRITE]"), t)
        self.hms(u, "after SELECT INBOX (CONDSTORE)")
        self.assertEqual(responses(u, "EXISTS"), [[6, "EXISTS"]])
        c = codes(u)
        self.assertEqual(c.get("UIDVALIDITY"), [1])
        self.assertEqual(c.get("UIDNEXT"), [61])
        self.assertEqual(len(responses(u, "FLAGS")), 1, u)
        self.assertIn("PERMANENTFLAGS", c)
        self.assertNotIn("NOMODSEQ", c)

    def test_examine_condstore_gives_highestmodseq(self):
        """RFC 7162 3.1.8 (EXAMINE takes the same parameter) and 3.1.2.1."""
        r = self.conn(self.serve())
        u, t = self.ok(r, "EXAMINE Other (CONDSTORE)")
        self.assertTrue(t.startswith(b"OK [READ-ONLY]"), t)
        self.hms(u, "after EXAMINE Other (CONDSTORE)")
        self.assertEqual(responses(u, "EXISTS"), [[2, "EXISTS"]])

    def test_every_select_after_enable_gives_highestmodseq(self):
        """RFC 7162 3.1.2 and 3.1.2.1: after a CONDSTORE enabling command, every successful
        SELECT or EXAMINE, with or without the parameter, has HIGHESTMODSEQ."""
        r = self.conn(self.serve())
        self.assertIn("CONDSTORE", self.enable(r, "CONDSTORE"))
        for command, mailbox in (("SELECT", "INBOX"), ("EXAMINE", "Other"), ("SELECT", "Empty"),
                                 ("EXAMINE", "INBOX")):
            self.hms(self.select(r, mailbox, command=command), "after %s %s" % (command, mailbox))

    def test_select_after_status_highestmodseq_gives_highestmodseq(self):
        """RFC 7162 3.1 and 3.1.2: STATUS (HIGHESTMODSEQ) is a CONDSTORE enabling command, so
        the SELECT after it must have HIGHESTMODSEQ, equal to what STATUS said."""
        r = self.conn(self.serve())
        h = self.status_hms(r, "INBOX")
        self.assertEqual(self.hms(self.select(r), "after STATUS (HIGHESTMODSEQ)"), h)

    def test_highestmodseq_of_empty_mailbox_is_positive(self):
        """RFC 7162 7: resp-text-code HIGHESTMODSEQ takes a mod-sequence-value, 1 or more,
        even for a mailbox that never had a message."""
        r = self.conn(self.serve())
        self.hms(self.select(r, "Empty", "CONDSTORE"), "after SELECT Empty (CONDSTORE)")


class FetchModseq(ModseqCase):
    def test_fetch_modseq_example_13(self):
        """RFC 7162 3.1.4.2, Example 13: FETCH 1:3 (MODSEQ) -> * n FETCH (MODSEQ (m)).
        A UID item beside it is allowed (3.2.4 is ambiguous for a FETCH naming MODSEQ)."""
        r = self.conn(self.serve())
        self.select(r, params="CONDSTORE")
        u, _ = self.ok(r, "FETCH 1:3 (MODSEQ)")
        fl = fetch_list(u)
        self.assertEqual(sorted(seq for seq, _ in fl), [1, 2, 3], u)
        for seq, d in fl:
            self.assertLessEqual(set(d), {"MODSEQ", "UID"}, u)
            self.modseq(d, "of message %d" % seq)
        self.assertRegex(u, rb"(?m)^\* 1 FETCH \((UID 10 )?MODSEQ \(\d+\)( UID 10)?\)\r$")

    def test_modseqs_are_positive_and_highestmodseq_is_their_maximum(self):
        """RFC 7162 3.1 (positive 63-bit values) and 3.1.2.1 (HIGHESTMODSEQ is the highest
        mod-sequence of all messages; nothing has been expunged here)."""
        r = self.conn(self.serve())
        h = self.hms(self.select(r, params="CONDSTORE"))
        ms = self.modseqs(r)
        self.assertEqual(sorted(ms), [10, 20, 30, 40, 50, 60])
        self.assertEqual(max(ms.values()), h, ms)

    def test_uid_fetch_modseq(self):
        """RFC 7162 3.1.4.2 with UID FETCH: each response has UID and MODSEQ."""
        r = self.conn(self.serve())
        self.select(r, params="CONDSTORE")
        before = self.modseqs(r)
        u, _ = self.ok(r, "UID FETCH 20:40 (MODSEQ)")
        got = {d["UID"]: self.modseq(d) for d in fetches(u).values()}
        self.assertEqual(got, {k: before[k] for k in (20, 30, 40)})

    def test_fetch_modseq_with_other_items(self):
        """RFC 7162 3.1.4.2: MODSEQ is a fetch-att like any other, in a list with FLAGS."""
        r = self.conn(self.serve())
        self.select(r, params="CONDSTORE")
        u, _ = self.ok(r, "FETCH 2,6 (FLAGS MODSEQ)")
        f = fetches(u)
        self.assertEqual(flagset(f[6]["FLAGS"]), {"$mdnsent"})
        self.modseq(f[2])
        self.modseq(f[6])

    def test_same_modseq_seen_from_two_sessions(self):
        """RFC 7162 3.1: the mod-sequence belongs to the message (one user here), so two
        sessions read the same values and the same HIGHESTMODSEQ."""
        s = self.serve()
        a, b = self.conn(s), self.conn(s)
        ha = self.hms(self.select(a, params="CONDSTORE"))
        hb = self.hms(self.select(b, command="EXAMINE", params="CONDSTORE"))
        self.assertEqual(ha, hb)
        self.assertEqual(self.modseqs(a), self.modseqs(b))


class StoreModseq(ModseqCase):
    def test_store_gives_a_new_higher_modseq(self):
        """RFC 7162 3.1: a flag change updates the message's mod-sequence; the new value is
        above the old HIGHESTMODSEQ (else a client resynchronising with CHANGEDSINCE would
        miss it), and HIGHESTMODSEQ follows it (3.1.2.1)."""
        s = self.serve()
        r, other = self.conn(s), self.conn(s)
        h = self.hms(self.select(r, params="CONDSTORE"))
        old = self.modseqs(r)[20]
        u = self.store(r, "STORE 2 +FLAGS (\\Seen)")
        d = self.fetch_for(u, 2)
        self.assertEqual(flagset(d["FLAGS"]), {"\\seen"})
        m = self.modseq(d, "in STORE's answer")
        self.assertGreater(m, h)
        self.assertGreater(m, old)
        self.assertEqual(self.modseqs(r, "2")[20], m)
        self.assertEqual(self.status_hms(other), m)

    def test_store_response_carries_modseq_and_uid(self):
        """RFC 7162 3.1.3 (last paragraphs: the mod-sequence in every FETCH sent to a
        CONDSTORE-aware client) and 3.2.4 (a QRESYNC server adds UID too, after any CONDSTORE
        enabling command, not only after ENABLE QRESYNC; Dovecot 2.3 does only the latter)."""
        r = self.conn(self.serve())
        self.select(r, params="CONDSTORE")
        u = self.store(r, "STORE 3 -FLAGS (\\Flagged)")
        fl = self.every_fetch_has(u, "MODSEQ", "UID", "FLAGS", why="RFC 7162 3.1.3, 3.2.4")
        self.assertEqual([(seq, d["UID"], flagset(d["FLAGS"])) for seq, d in fl], [(3, 30, set())])

    def test_modseq_strictly_increases_with_every_store(self):
        """RFC 7162 3.1: of two successful STOREs in one session, the second gets the
        greater mod-sequence."""
        r = self.conn(self.serve())
        self.select(r, params="CONDSTORE")
        seen = []
        for seq, change in ((2, "+FLAGS (\\Seen)"), (3, "+FLAGS (\\Seen)"), (2, "-FLAGS (\\Seen)"),
                            (5, "FLAGS (\\Answered)"), (2, "+FLAGS (work)")):
            u = self.store(r, "STORE %d %s" % (seq, change))
            seen.append(self.modseq(self.fetch_for(u, seq), "after STORE %d %s" % (seq, change)))
        self.assertEqual(seen, sorted(set(seen)), "mod-sequences must strictly increase: %r" % seen)

    def test_stores_from_two_sessions_get_different_modseqs(self):
        """RFC 7162 3.1: every STORE on a mailbox, from any connection, gets its own
        mod-sequence, and each session's values increase."""
        s = self.serve()
        a, b = self.conn(s), self.conn(s)
        self.select(a, params="CONDSTORE")
        self.select(b, params="CONDSTORE")
        got = {"a": [], "b": []}
        for i in range(3):
            for name, r, seq in (("a", a, 2), ("b", b, 3)):
                u = self.store(r, "STORE %d %sFLAGS (\\Seen)" % (seq, "+-"[i % 2]))
                got[name].append(self.modseq(self.fetch_for(u, seq)))
        everything = got["a"] + got["b"]
        self.assertEqual(len(set(everything)), len(everything), got)
        self.assertEqual(got["a"], sorted(got["a"]), got)
        self.assertEqual(got["b"], sorted(got["b"]), got)

    def test_store_silent_sends_modseq_whenever_it_sends_fetch(self):
        """RFC 7162 3.1.3: after a plain STORE .SILENT the server may send a FETCH, and if it
        does it carries MODSEQ (Example 14's `STORE 7 +FLAGS.SILENT` answer); the mod-sequence
        was updated either way."""
        r = self.conn(self.serve())
        h = self.hms(self.select(r, params="CONDSTORE"))
        u = self.store(r, "STORE 2 +FLAGS.SILENT (\\Seen)")
        self.every_fetch_has(u, "MODSEQ", why="RFC 7162 3.1.3")
        self.assertGreater(self.modseqs(r, "2")[20], h)
        self.assertEqual(self.flags(r, "2"), {20: {"\\seen"}})

    def test_append_gets_a_modseq_above_highestmodseq(self):
        """RFC 7162 3.1: an appended message gets a mod-sequence higher than every message
        in the mailbox."""
        s = self.serve()
        a, b = self.conn(s), self.conn(s)
        h = self.hms(self.select(a, params="CONDSTORE"))
        self.append(b, "INBOX", 1)
        u, _ = self.ok(a, "NOOP")
        self.assertIn([7, "EXISTS"], responses(u, "EXISTS"))
        m = self.modseqs(a, "7")
        self.assertEqual(len(m), 1)
        self.assertGreater(list(m.values())[0], h)
        self.assertEqual(self.status_hms(b), list(m.values())[0])

    def test_copy_gets_modseqs_above_the_target_highestmodseq(self):
        """RFC 7162 3.1: COPY to a mailbox gives the copies mod-sequences above the highest
        of the target's messages."""
        s = self.serve()
        a, b = self.conn(s), self.conn(s)
        self.select(a, params="CONDSTORE")
        h_other = self.hms(self.select(b, "Other", params="CONDSTORE", command="EXAMINE"))
        self.ok(a, "COPY 1:2 Other")
        self.ok(b, "NOOP")
        ms = self.modseqs(b)
        self.assertEqual(len(ms), 4, ms)
        self.assertEqual(sorted(uid for uid, m in ms.items() if m > h_other), sorted(ms)[2:], ms)


class Unsolicited(ModseqCase):
    def test_no_modseq_before_an_enabling_command(self):
        """RFC 5161 1 and RFC 7162 3.1: MODSEQ goes only to a CONDSTORE-aware client; before
        any enabling command, FETCH answers and updates are RFC 3501's."""
        s = self.serve()
        a, b = self.conn(s), self.conn(s)
        self.need(a, "CONDSTORE")
        self.select(a)
        self.select(b)
        self.store(b, "STORE 1 +FLAGS (\\Flagged)")
        u, _ = self.ok(a, "NOOP")
        self.assertEqual(flagset(self.fetch_for(u, 1)["FLAGS"]), {"\\seen", "\\flagged"})
        u = self.store(a, "STORE 2 +FLAGS (\\Seen)")
        self.assertNotIn(b"MODSEQ", u)

    def test_every_enabling_command_adds_modseq_to_later_fetches(self):
        """RFC 7162 3.1: after any CONDSTORE enabling command (the list in 3.1), every
        untagged FETCH carries MODSEQ, also those caused by another session's STORE."""
        s = self.serve()
        b, c = self.conn(s), self.conn(s)
        self.need(b, "CONDSTORE")
        self.select(b)
        cases = [
            ("ENABLE CONDSTORE", ["ENABLE CONDSTORE", "SELECT INBOX"]),
            ("SELECT (CONDSTORE)", ["SELECT INBOX (CONDSTORE)"]),
            ("EXAMINE (CONDSTORE)", ["EXAMINE INBOX (CONDSTORE)"]),
            ("STATUS (HIGHESTMODSEQ)", ["STATUS INBOX (HIGHESTMODSEQ)", "SELECT INBOX"]),
            ("FETCH (MODSEQ)", ["SELECT INBOX", "FETCH 1 (MODSEQ)"]),
            ("FETCH (CHANGEDSINCE)", ["SELECT INBOX", "FETCH 1:* (FLAGS) (CHANGEDSINCE 1)"]),
            ("SEARCH MODSEQ", ["SELECT INBOX", "SEARCH MODSEQ 1"]),
            ("STORE (UNCHANGEDSINCE)",
             ["SELECT INBOX", "STORE 4 (UNCHANGEDSINCE %d) +FLAGS.SILENT (\\Answered)"]),
        ]
        for i, (name, commands) in enumerate(cases):
            a = self.conn(s)
            for command in commands:
                if "%d" in command:
                    command = command % self.status_hms(c)
                self.ok(a, command)
            self.store(b, "STORE 1 %sFLAGS (\\Flagged)" % "+-"[i % 2])
            u, _ = self.ok(a, "NOOP")
            fl = self.every_fetch_has(u, "MODSEQ", why="after %s" % name)
            self.assertIn(1, [seq for seq, _ in fl],
                          "after %s, B's STORE 1 not reported: %r" % (name, u))
            a.close()

    def test_other_sessions_store_example_14(self):
        """RFC 7162 3.1.4.2, Example 14 (sessions 1 and 2; one user, so no private/shared
        distinction): a change made in one session reaches the other with FLAGS and the
        MODSEQ the change got, and UID (3.1.4.2's note under Example 14, and 3.2.4)."""
        s = self.serve()
        one, two = self.conn(s), self.conn(s)
        self.select(one, params="CONDSTORE")
        self.select(two, params="CONDSTORE")
        self.store(one, "STORE 6 +FLAGS.SILENT (\\Deleted)")
        m1 = self.modseqs(one, "6")[60]
        u, _ = self.ok(two, "NOOP")
        d = self.fetch_for(u, 6)
        self.every_fetch_has(u, "MODSEQ", "UID", why="RFC 7162 3.1.4.2, 3.2.4")
        self.assertEqual((d["UID"], flagset(d["FLAGS"]), self.modseq(d)),
                         (60, {"\\deleted", "$mdnsent"}, m1))
        self.store(one, "STORE 6 -FLAGS.SILENT (\\Deleted $MDNSent)")
        m2 = self.modseqs(one, "6")[60]
        u, _ = self.ok(two, "NOOP")
        d = self.fetch_for(u, 6)
        self.assertEqual((flagset(d["FLAGS"]), self.modseq(d)), (set(), m2))
        self.assertGreater(m2, m1)

    def test_first_enabling_command_with_a_mailbox_selected_sends_highestmodseq(self):
        """RFC 7162 3.1: the first CONDSTORE enabling command with a mailbox selected MUST
        return HIGHESTMODSEQ for it (even when the SELECT already showed one)."""
        s = self.serve()
        c = self.conn(s)
        self.need(c, "CONDSTORE")
        for command in ("FETCH 1 (MODSEQ)", "FETCH 1:* (FLAGS) (CHANGEDSINCE 1)",
                        "SEARCH MODSEQ 1", "UID FETCH 10 (MODSEQ)",
                        "STORE 4 (UNCHANGEDSINCE %d) +FLAGS.SILENT (\\Seen)"):
            if "%d" in command:
                command = command % self.status_hms(c)
            a = self.conn(s)
            self.select(a)
            u, t = self.ok(a, command)
            self.hms_anywhere(u, t, "in the answer to %s, the first enabling command" % command)
            a.close()

    def test_unchangedsince_as_first_enabling_command_example_5(self):
        """RFC 7162 3.1.3, Example 5: STORE 50 (UNCHANGEDSINCE n) -FLAGS.SILENT, the first
        enabling command: * OK [HIGHESTMODSEQ h], * 50 FETCH (MODSEQ (m)), OK.  The h sent
        may be taken before or after the STORE."""
        s = self.serve()
        a, c = self.conn(s), self.conn(s)
        self.select(a)
        h = self.status_hms(c)
        u, t = self.ok(a, "STORE 5 (UNCHANGEDSINCE %d) -FLAGS.SILENT (\\Draft)" % h)
        self.assertIsNone(self.modified(t))
        m = self.modseq(self.fetch_for(u, 5), "for the conditional STORE (3.1.3)")
        self.assertGreater(m, h)
        self.assertTrue(h <= self.hms_anywhere(u, t, "for the first enabling command") <= m)
        self.assertEqual(self.flags(a, "5"), {50: set()})


class ChangedSince(ModseqCase):
    def changed(self, r):
        """SELECT (CONDSTORE), then change messages 2 and 5; returns (h, m2, m5)."""
        h = self.hms(self.select(r, params="CONDSTORE"))
        m2 = self.modseq(self.fetch_for(self.store(r, "STORE 2 +FLAGS (\\Seen)"), 2))
        m5 = self.modseq(self.fetch_for(self.store(r, "STORE 5 +FLAGS (\\Flagged)"), 5))
        return h, m2, m5

    def test_changedsince_returns_exactly_the_messages_changed_after(self):
        """RFC 7162 3.1.4.1: only messages whose mod-sequence is bigger than the value, with
        MODSEQ added implicitly."""
        r = self.conn(self.serve())
        h, m2, m5 = self.changed(r)
        u, _ = self.ok(r, "FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % h)
        f = fetches(u)
        self.assertEqual(sorted(f), [2, 5], u)
        self.assertEqual((flagset(f[2]["FLAGS"]), self.modseq(f[2])), ({"\\seen"}, m2))
        self.assertEqual((flagset(f[5]["FLAGS"]), self.modseq(f[5])),
                         ({"\\draft", "\\flagged"}, m5))
        u, _ = self.ok(r, "FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % m2)
        self.assertEqual(sorted(fetches(u)), [5], "CHANGEDSINCE is strictly greater: %r" % u)
        u, _ = self.ok(r, "FETCH 1:4 (FLAGS) (CHANGEDSINCE %d)" % h)
        self.assertEqual(sorted(fetches(u)), [2], "only inside the sequence set: %r" % u)

    def test_changedsince_with_nothing_changed_returns_nothing(self):
        """RFC 7162 3.1.4.1: nothing above HIGHESTMODSEQ, so no FETCH at all; the largest
        63-bit value is valid too."""
        r = self.conn(self.serve())
        h = self.hms(self.select(r, params="CONDSTORE"))
        for value in (h, MAXMODSEQ):
            u, _ = self.ok(r, "FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % value)
            self.assertEqual(fetch_list(u), [], u)

    def test_uid_fetch_changedsince_example_12(self):
        """RFC 7162 3.1.4.1, Example 12: UID FETCH 1:* (FLAGS) (CHANGEDSINCE n) gives
        * s FETCH (UID u MODSEQ (m) FLAGS (...)) for the changed messages only."""
        r = self.conn(self.serve())
        h, m2, m5 = self.changed(r)
        u, _ = self.ok(r, "UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % h)
        fl = self.every_fetch_has(u, "UID", "MODSEQ", "FLAGS", why="RFC 7162 Example 12")
        self.assertEqual(sorted((seq, d["UID"], self.modseq(d)) for seq, d in fl),
                         [(2, 20, m2), (5, 50, m5)])

    def test_changedsince_other_items(self):
        """RFC 7162 3.1.4.1: CHANGEDSINCE subsets the messages whatever the items asked."""
        r = self.conn(self.serve())
        h, m2, m5 = self.changed(r)
        u, _ = self.ok(r, "FETCH 1:* (UID RFC822.SIZE) (CHANGEDSINCE %d)" % m2)
        f = fetches(u)
        self.assertEqual(sorted(f), [5], u)
        self.assertEqual((f[5]["UID"], self.modseq(f[5])), (50, m5))
        self.assertIn("RFC822.SIZE", f[5])

    def test_changedsince_beyond_63_bits_is_never_wrapped_around(self):
        """RFC 7162 7: a mod-sequence-value is at most 2^63-1 (an ABNF comment, so a server
        may refuse a larger one with BAD or take it as it is); it must never wrap around to
        a small number and return messages (Dovecot 2.3 answers OK with nothing)."""
        r = self.conn(self.serve())
        self.select(r, params="CONDSTORE")
        for value in (MAXMODSEQ + 1, 2 ** 64, 2 ** 64 + 1):
            u, t = r.cmd("FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % value)
            self.assertTrue(t.startswith(b"BAD") or (t.startswith(b"OK") and not fetch_list(u)),
                            "CHANGEDSINCE %d -> %r %r" % (value, u, t))

    def test_unknown_fetch_modifier_is_bad(self):
        """RFC 4466 2.4: modifiers not defined by a supported extension are BAD; CHANGEDSINCE
        without its value is BAD too."""
        r = self.conn(self.serve())
        self.select(r, params="CONDSTORE")
        self.ok(r, "FETCH 1 (FLAGS) (CHANGEDSINCE 1)")
        self.bad(r, "FETCH 1 (FLAGS) (BLURDYBLOOP 1)", "RFC 4466 2.4")
        self.bad(r, "FETCH 1 (FLAGS) (CHANGEDSINCE)", "no value")
        self.bad(r, "FETCH 1 (FLAGS) (CHANGEDSINCE x1)", "not a number")


class UnchangedSince(ModseqCase):
    def two(self):
        s = self.serve()
        a, b = self.conn(s), self.conn(s)
        h = self.hms(self.select(a, params="CONDSTORE"))
        self.select(b)
        return a, b, h

    def test_uid_store_all_pass_example_3(self):
        """RFC 7162 3.1.3, Example 3: UID STORE 60,40,20 (UNCHANGEDSINCE h) +FLAGS.SILENT:
        every message passes; a FETCH with MODSEQ (and UID) for each, even with .SILENT."""
        r = self.conn(self.serve())
        h = self.hms(self.select(r, params="CONDSTORE"))
        u, t = self.ok(r, "UID STORE 60,40,20 (UNCHANGEDSINCE %d) +FLAGS.SILENT (\\Deleted)" % h)
        self.assertIsNone(self.modified(t))
        f = fetches(u)
        self.assertEqual(sorted((seq, d.get("UID")) for seq, d in f.items()),
                         [(2, 20), (4, 40), (6, 60)], u)
        for seq, d in f.items():
            self.assertGreater(self.modseq(d, "for message %d (3.1.3 MUST)" % seq), h)
        self.assertEqual({k for k, v in self.flags(r).items() if "\\deleted" in v}, {20, 40, 60})

    def test_silent_store_still_sends_modseq_example_4(self):
        """RFC 7162 3.1.3, Example 4: STORE * (UNCHANGEDSINCE h) +FLAGS.SILENT (\\Deleted
        $Processed) -> * 6 FETCH (MODSEQ (m)), OK."""
        r = self.conn(self.serve())
        h = self.hms(self.select(r, params="CONDSTORE"))
        u, t = self.ok(r, "STORE * (UNCHANGEDSINCE %d) +FLAGS.SILENT (\\Deleted $Processed)" % h)
        self.assertIsNone(self.modified(t))
        self.assertEqual([seq for seq, _ in fetch_list(u)], [6], u)
        self.assertGreater(self.modseq(self.fetch_for(u, 6)), h)
        self.assertEqual(self.flags(r, "6"), {60: {"\\deleted", "$processed", "$mdnsent"}})

    def test_modified_lists_the_failed_messages_example_6(self):
        """RFC 7162 3.1.3, Example 6: STORE 3,2,5 (UNCHANGEDSINCE h) FLAGS.SILENT (...) with 3
        and 5 changed by another session after h: OK [MODIFIED 3,5], message 2 stored (FETCH
        with MODSEQ), 3 and 5 left alone.  (FLAGS replaces every flag, so every flag is
        affected: 3.1.12's optimisation does not apply.)"""
        a, b, h = self.two()
        self.store(b, "STORE 3,5 +FLAGS (work)")
        u, t = a.cmd("STORE 3,2,5 (UNCHANGEDSINCE %d) FLAGS.SILENT (\\Answered)" % h)
        self.assertEqual(self.modified(t), {3, 5}, t)
        self.assertGreater(self.modseq(self.fetch_for(u, 2)), h)
        self.every_fetch_has(u, "MODSEQ", why="RFC 7162 3.1.3")
        self.assertEqual(self.flags(a, "2,3,5"), {20: {"\\answered"}, 30: {"\\flagged", "work"},
                                                  50: {"\\draft", "work"}})

    def test_messages_whose_flag_changed_fail_and_keep_their_flags(self):
        """RFC 7162 3.1.3: STORE 1:* (UNCHANGEDSINCE h) +FLAGS (\\Seen) after another session
        set and cleared \\Seen on 2 and 5: exactly those fail (MODIFIED 2,5) and stay unseen;
        the others pass, 3 and 6 get \\Seen with a FETCH carrying MODSEQ."""
        a, b, h = self.two()
        self.store(b, "STORE 2,5 +FLAGS (\\Seen)")
        self.store(b, "STORE 2,5 -FLAGS (\\Seen)")
        u, t = a.cmd("STORE 1:* (UNCHANGEDSINCE %d) +FLAGS (\\Seen)" % h)
        self.assertEqual(self.modified(t), {2, 5}, t)
        self.every_fetch_has(u, "MODSEQ", why="RFC 7162 3.1.3")
        for seq in (3, 6):
            d = self.fetch_for(u, seq)
            self.assertIn("\\seen", flagset(d["FLAGS"]))
            self.assertGreater(self.modseq(d), h)
        self.assertEqual({k for k, v in self.flags(a).items() if "\\seen" not in v}, {20, 50})

    def test_uid_store_modified_lists_uids(self):
        """RFC 7162 3.1.3: for UID STORE the MODIFIED code holds UIDs, not message numbers."""
        a, b, h = self.two()
        self.store(b, "STORE 3 +FLAGS (\\Answered)")
        u, t = a.cmd("UID STORE 20:30 (UNCHANGEDSINCE %d) +FLAGS (\\Answered)" % h)
        self.assertEqual(self.modified(t), {30}, t)
        self.assertEqual(self.fetch_for(u, 2).get("UID"), 20)
        self.assertIn("\\answered", self.flags(a, "2")[20])

    def test_unchangedsince_0_always_fails_for_a_system_flag(self):
        """RFC 7162 3.1.3 (text before Example 8): UNCHANGEDSINCE 0 always fails when the
        metadata item exists, and a system flag always exists, set or not."""
        r = self.conn(self.serve())
        self.select(r, params="CONDSTORE")
        before = self.modseqs(r, "2")
        u, t = r.cmd("STORE 2 (UNCHANGEDSINCE 0) +FLAGS.SILENT (\\Seen)")
        self.assertEqual(self.modified(t), {2}, t)
        self.assertEqual(self.flags(r, "2"), {20: set()})
        self.assertEqual(self.modseqs(r, "2"), before, "a failed STORE does not update MODSEQ")

    def test_unchangedsince_0_with_a_present_keyword_example_8(self):
        """RFC 7162 3.1.3, Example 8: STORE 6 (UNCHANGEDSINCE 0) +FLAGS.SILENT ($MDNSent) on a
        message that has $MDNSent -> OK [MODIFIED 6], its MODSEQ unchanged.  (For a keyword the
        message lacks, the RFC lets a per-flag server succeed: not tested.)"""
        r = self.conn(self.serve())
        self.select(r, params="CONDSTORE")
        before = self.modseqs(r, "6")
        u, t = r.cmd("STORE 6 (UNCHANGEDSINCE 0) +FLAGS.SILENT ($MDNSent)")
        self.assertEqual(self.modified(t), {6}, t)
        self.assertEqual(self.modseqs(r, "6"), before)

    def test_retry_after_modified_examples_9_and_10(self):
        """RFC 7162 3.1.3, Examples 9 and 10: another session changed a different flag of
        message 3.  The server may report MODIFIED 3 (one mod-sequence per message) or store
        it anyway (3.1.12); after MODIFIED, a retry with the message's new MODSEQ succeeds."""
        a, b, h = self.two()
        self.store(b, "STORE 3 +FLAGS (\\Answered)")
        u, t = a.cmd("STORE 1:6 (UNCHANGEDSINCE %d) +FLAGS.SILENT ($Processed)" % h)
        failed = self.modified(t) or set()
        self.assertLessEqual(failed, {3}, t)
        for seq in {1, 2, 3, 4, 5, 6} - failed:
            self.assertGreater(self.modseq(self.fetch_for(u, seq), "for message %d" % seq), h)
        if failed:
            m3 = self.modseqs(a, "3")[30]
            u, t = a.cmd("STORE 3 (UNCHANGEDSINCE %d) +FLAGS.SILENT ($Processed)" % m3)
            self.assertIsNone(self.modified(t), "the retry must pass: %r" % t)
            self.assertGreater(self.modseq(self.fetch_for(u, 3)), m3)
        fl = self.flags(a)
        self.assertTrue(all("$processed" in v for v in fl.values()), fl)
        self.assertIn("\\answered", fl[30])

    def test_modified_with_expunged_messages_example_11(self):
        """RFC 7162 3.1.3, Example 11 (after RFC 2180 4.2.3): another session toggled \\Seen
        on 2 and expunged 4:6.  STORE 1:6 (UNCHANGEDSINCE h) +FLAGS (\\Seen): OK or NO with
        MODIFIED naming 2 (and perhaps the expunged ones), 3 stored; after NOOP's EXPUNGEs a
        retry of 2 with its new MODSEQ succeeds."""
        a, b, h = self.two()
        self.store(b, "STORE 2 +FLAGS (\\Seen)")
        self.store(b, "STORE 2 -FLAGS (\\Seen)")
        self.expunge(b, "4:6")
        u, t = a.cmd("STORE 1:6 (UNCHANGEDSINCE %d) +FLAGS (\\Seen)" % h)
        failed = self.modified(t)
        self.assertIsNotNone(failed, t)
        self.assertIn(2, failed)
        self.assertLessEqual(failed, {2, 4, 5, 6}, t)
        d = self.fetch_for(u, 3)
        self.assertIn("\\seen", flagset(d["FLAGS"]))
        self.assertGreater(self.modseq(d), h)
        u, _ = self.ok(a, "NOOP")
        self.assertEqual(View([10, 20, 30, 40, 50, 60]).feed(u).uids, [10, 20, 30], u)
        m2 = self.modseqs(a, "2")[20]
        u, t = a.cmd("STORE 2 (UNCHANGEDSINCE %d) +FLAGS (\\Seen)" % m2)
        self.assertIsNone(self.modified(t))
        self.assertIn("\\seen", flagset(self.fetch_for(u, 2)["FLAGS"]))

    def test_a_message_named_twice_does_not_fail_the_second_time(self):
        """RFC 7162 3.1.3 (note after Example 11): STORE 2,1:3 (UNCHANGEDSINCE h) must not fail
        message 2 the second time after it passed the first."""
        r = self.conn(self.serve())
        h = self.hms(self.select(r, params="CONDSTORE"))
        u, t = r.cmd("STORE 2,1:3 (UNCHANGEDSINCE %d) +FLAGS.SILENT (\\Deleted)" % h)
        self.assertIsNone(self.modified(t), t)
        self.assertEqual({k for k, v in self.flags(r).items() if "\\deleted" in v}, {10, 20, 30})

    def test_store_modifier_syntax(self):
        """RFC 4466 2.5: unknown store modifiers are BAD, and UNCHANGEDSINCE needs its number.
        (RFC 7162 7 allows one UNCHANGEDSINCE per STORE, a rule for clients: a server may
        refuse a second one or not, so that is not tested.)"""
        r = self.conn(self.serve())
        h = self.hms(self.select(r, params="CONDSTORE"))
        self.ok(r, "STORE 1 (UNCHANGEDSINCE %d) +FLAGS (\\Seen)" % h)
        self.bad(r, "STORE 1 (BLURDYBLOOP 5) +FLAGS (\\Seen)", "RFC 4466 2.5")
        self.bad(r, "STORE 1 (UNCHANGEDSINCE) +FLAGS (\\Seen)", "no value")
        self.bad(r, "STORE 1 (UNCHANGEDSINCE -1) +FLAGS (\\Seen)", "not a number")


class SearchModseq(ModseqCase):
    def changed(self, r):
        """SELECT (CONDSTORE); \\Draft on 2, then \\Seen on 3; returns (m2, m3)."""
        self.select(r, params="CONDSTORE")
        m2 = self.modseq(self.fetch_for(self.store(r, "STORE 2 +FLAGS (\\Draft)"), 2))
        m3 = self.modseq(self.fetch_for(self.store(r, "STORE 3 +FLAGS (\\Seen)"), 3))
        return m2, m3

    def search(self, r, command):
        """(numbers, modseq or None) of the one * SEARCH answer."""
        u, _ = self.ok(r, command)
        found, ms = search_modseq(u)
        if ms is not None:
            ms = self.modseq_value([ms], "SEARCH's (MODSEQ n)")
        return set(found), ms

    def test_search_modseq_appends_the_highest_modseq(self):
        """RFC 7162 3.1.5 and 3.1.6: SEARCH MODSEQ n finds messages with mod-sequence >= n
        and appends (MODSEQ m), m the highest of the messages found."""
        r = self.conn(self.serve())
        m2, m3 = self.changed(r)
        self.assertEqual(self.search(r, "SEARCH MODSEQ %d" % m2), ({2, 3}, m3))
        self.assertEqual(self.search(r, "SEARCH MODSEQ %d" % m3), ({3}, m3))
        self.assertEqual(self.search(r, "SEARCH MODSEQ %d UNSEEN" % m2), ({2}, m2))

    def test_search_modseq_without_match_has_no_modseq(self):
        """RFC 7162 3.1.6: the mod-sequence is omitted when nothing matched: `* SEARCH`."""
        r = self.conn(self.serve())
        m2, m3 = self.changed(r)
        u, _ = self.ok(r, "SEARCH MODSEQ %d" % (m3 + 1))
        self.assertEqual(u, b"* SEARCH\r\n")

    def test_uid_search_modseq(self):
        """RFC 7162 3.1.5: UID SEARCH MODSEQ answers UIDs, and the (MODSEQ m)."""
        r = self.conn(self.serve())
        m2, m3 = self.changed(r)
        self.assertEqual(self.search(r, "UID SEARCH MODSEQ %d" % m2), ({20, 30}, m3))

    def test_search_modseq_with_entry_name_example_15(self):
        """RFC 7162 3.1.5, Example 15: SEARCH MODSEQ "/flags/\\\\draft" all n.  A server with
        one mod-sequence per message ignores the entry name; one per flag narrows: message
        2 (its \\Draft changed at m2) is found either way, 3 only by the first kind; the
        (MODSEQ m) is the highest of those found.  priv and shared are valid types too."""
        r = self.conn(self.serve())
        m2, m3 = self.changed(r)
        found, ms = self.search(r, 'SEARCH MODSEQ "/flags/\\\\draft" all %d' % m2)
        self.assertIn(found, ({2}, {2, 3}))
        self.assertEqual(ms, m2 if found == {2} else m3)
        found, ms = self.search(r, 'SEARCH MODSEQ "/flags/\\\\Seen" all %d' % m2)
        self.assertIn(3, found)
        self.assertLessEqual(found, {2, 3})
        for kind in ("priv", "shared"):
            self.ok(r, 'SEARCH MODSEQ "/flags/$mdnsent" %s 1' % kind)

    def test_search_not_modseq_example_16(self):
        """RFC 7162 3.1.5, Example 16: SEARCH OR NOT MODSEQ n LARGER 50000 finding nothing is
        `* SEARCH` alone; NOT MODSEQ finding something still appends (MODSEQ m)."""
        r = self.conn(self.serve())
        m2, m3 = self.changed(r)
        u, _ = self.ok(r, "SEARCH OR NOT MODSEQ 1 LARGER 50000")
        self.assertEqual(u, b"* SEARCH\r\n")
        ms = self.modseqs(r)
        found, top = self.search(r, "SEARCH NOT MODSEQ %d" % m2)
        self.assertEqual(found, {1, 4, 5, 6})
        self.assertEqual(top, max(ms[u] for u in (10, 40, 50, 60)))


class StatusHighestModseq(ModseqCase):
    def test_status_example_17(self):
        """RFC 7162 3.1.7, Example 17: STATUS (UIDNEXT MESSAGES HIGHESTMODSEQ), the same
        value SELECT's HIGHESTMODSEQ gives."""
        s = self.serve()
        a, b = self.conn(s), self.conn(s)
        st = self.status(a, "Other", "UIDNEXT MESSAGES HIGHESTMODSEQ")
        self.assertEqual((st.get("MESSAGES"), st.get("UIDNEXT")), (2, 3), st)
        self.assertIn("HIGHESTMODSEQ", st, st)
        self.assertEqual(self.hms(self.select(b, "Other", "CONDSTORE", command="EXAMINE")),
                         st["HIGHESTMODSEQ"])

    def test_status_highestmodseq_follows_changes_made_elsewhere(self):
        """RFC 7162 3.1.7 and 3.1: another session's flag change raises STATUS HIGHESTMODSEQ
        to that change's MODSEQ."""
        s = self.serve()
        a, b = self.conn(s), self.conn(s)
        h = self.status_hms(a, "Other")
        self.select(b, "Other", "CONDSTORE")
        m = self.modseq(self.fetch_for(self.store(b, "STORE 1 +FLAGS (\\Flagged)"), 1))
        self.assertGreater(m, h)
        self.assertEqual(self.status_hms(a, "Other"), m)


class SaveAndReload(ModseqCase):
    def test_modseqs_survive_save_and_reload(self):
        """RFC 7162 3.1.2 (a mailbox with HIGHESTMODSEQ stores mod-sequences persistently):
        after --save and a restart from the saved folder, every message has its MODSEQ,
        HIGHESTMODSEQ is the same, and the next change gets a higher MODSEQ."""
        saved = self.tempdir()
        s = self.serve("--save", saved)
        a = self.conn(s)
        self.select(a, params="CONDSTORE")
        for command in ("STORE 2 +FLAGS (\\Seen)", "STORE 5 +FLAGS (\\Flagged)",
                        "STORE 2 +FLAGS (work)", "STORE 6 -FLAGS ($MDNSent)"):
            self.store(a, command)
        before, h = self.modseqs(a), self.status_hms(a)
        before_other = self.status_hms(a, "Other")
        a.close()
        self.assertEqual(s.stop(), 0)
        r = self.conn(self.start_or_fail(saved))
        u = self.select(r, params="CONDSTORE")
        self.assertEqual(codes(u).get("UIDVALIDITY"), [1])
        self.assertEqual(self.hms(u, "after the reload"), h)
        self.assertEqual(self.modseqs(r), before)
        self.assertEqual(self.status_hms(r, "Other"), before_other)
        u = self.store(r, "STORE 1 +FLAGS (\\Flagged)")
        self.assertGreater(self.modseq(self.fetch_for(u, 1)), h)


class NoModseq(ModseqCase):
    """--nomodseq MAILBOX (repeatable): that mailbox answers [NOMODSEQ] (RFC 7162 3.1.2.2)."""

    def test_select_condstore_gives_nomodseq_example_2(self):
        """RFC 7162 3.1.2.2, Example 2: * OK [NOMODSEQ] and no HIGHESTMODSEQ; the other
        mailboxes still give HIGHESTMODSEQ."""
        r = self.conn(self.serve("--nomodseq", "Other"))
        self.need(r, "CONDSTORE")
        u, t = self.ok(r, "SELECT Other (CONDSTORE)")
        self.assertTrue(t.startswith(b"OK [READ-WRITE]"), t)
        self.assertIn("NOMODSEQ", codes(u), u)
        self.assertEqual(codes(u)["NOMODSEQ"], [])
        self.assertNotIn(b"HIGHESTMODSEQ", u)
        self.assertEqual(responses(u, "EXISTS"), [[2, "EXISTS"]])
        self.hms(self.select(r, "INBOX", "CONDSTORE"), "for INBOX, which keeps MODSEQ")

    def test_select_after_enable_gives_nomodseq(self):
        """RFC 7162 3.1.2.2: with every SELECT/EXAMINE after an enabling command."""
        r = self.conn(self.serve("--nomodseq", "Other"))
        self.assertIn("CONDSTORE", self.enable(r, "CONDSTORE"))
        for command in ("SELECT", "EXAMINE"):
            u = self.select(r, "Other", command=command)
            self.assertIn("NOMODSEQ", codes(u), u)
            self.assertNotIn(b"HIGHESTMODSEQ", u)

    def test_modseq_commands_are_bad_in_a_nomodseq_mailbox(self):
        """RFC 7162 3.1.2.2: while such a mailbox is selected, FETCH CHANGEDSINCE, FETCH or
        SEARCH with MODSEQ, and STORE UNCHANGEDSINCE are BAD (and the STORE changes nothing)."""
        r = self.conn(self.serve("--nomodseq", "Other"))
        self.assertIn("NOMODSEQ", codes(self.select(r, "Other", "CONDSTORE")))
        for command in ("FETCH 1 (MODSEQ)", "UID FETCH 1 (FLAGS MODSEQ)",
                        "FETCH 1:* (FLAGS) (CHANGEDSINCE 1)",
                        "UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1)",
                        "STORE 1 (UNCHANGEDSINCE 5) +FLAGS (\\Seen)",
                        "UID STORE 1 (UNCHANGEDSINCE 5) +FLAGS (\\Seen)", "SEARCH MODSEQ 1",
                        "UID SEARCH MODSEQ 1"):
            self.bad(r, command, "RFC 7162 3.1.2.2, mailbox answered NOMODSEQ")
        self.assertEqual(self.flags(r), {1: set(), 2: {"\\seen"}})

    def test_status_highestmodseq_of_a_nomodseq_mailbox_is_0(self):
        """RFC 7162 3.1.7: HIGHESTMODSEQ 0 for a mailbox without persistent mod-sequences."""
        r = self.conn(self.serve("--nomodseq", "Other"))
        self.assertEqual(self.status_hms(r, "Other"), 0)
        self.assertGreater(self.status_hms(r, "INBOX"), 0)

    def test_nomodseq_is_repeatable(self):
        """--nomodseq for two mailboxes; INBOX unaffected."""
        r = self.conn(self.serve("--nomodseq", "Other", "--nomodseq", "Empty"))
        self.assertIn("CONDSTORE", self.enable(r, "CONDSTORE"))
        for mailbox in ("Other", "Empty"):
            self.assertIn("NOMODSEQ", codes(self.select(r, mailbox)), mailbox)
        self.hms(self.select(r, "INBOX"), "for INBOX")


class CapabilityOff(ModseqCase):
    def test_capability_minus_condstore_switches_condstore_and_qresync_off(self):
        """--capability -CONDSTORE: neither CONDSTORE nor QRESYNC is advertised or can be
        enabled; their parameters, modifiers and items are unknown, so BAD (RFC 4466 2.1,
        2.4, 2.5; RFC 3501 for the FETCH item and the STATUS item)."""
        s = self.serve("--capability", "-CONDSTORE")
        r = self.conn(s)
        have = self.caps(r)
        self.assertFalse({"CONDSTORE", "QRESYNC"} & have, have)
        u, t = r.cmd("ENABLE CONDSTORE QRESYNC")
        if t.startswith(b"OK"):
            listed = {str(x).upper() for e in responses(u, "ENABLED") for x in e[1:]}
            self.assertFalse({"CONDSTORE", "QRESYNC"} & listed, u)
        else:
            self.assertNotIn("ENABLE", have, "ENABLE is advertised but refused: %r" % t)
        self.bad(r, "SELECT INBOX (CONDSTORE)", "CONDSTORE is off")
        self.bad(r, "STATUS INBOX (HIGHESTMODSEQ)", "CONDSTORE is off")
        u = self.select(r)
        self.assertFalse({"HIGHESTMODSEQ", "NOMODSEQ"} & set(codes(u)), u)
        for command in ("FETCH 1 (MODSEQ)", "FETCH 1:* (FLAGS) (CHANGEDSINCE 1)",
                        "STORE 1 (UNCHANGEDSINCE 5) +FLAGS (\\Seen)", "SEARCH MODSEQ 1"):
            self.bad(r, command, "CONDSTORE is off")
        u = self.store(r, "STORE 2 +FLAGS (\\Seen)")
        self.assertNotIn(b"MODSEQ", u)

    def test_capability_minus_qresync_leaves_condstore(self):
        """--capability -QRESYNC: CONDSTORE stays (advertised, enabled, working); QRESYNC is
        neither advertised nor enabled, and expunges stay EXPUNGE."""
        r = self.conn(self.serve("--capability", "-QRESYNC"))
        have = self.caps(r)
        self.assertIn("CONDSTORE", have)
        self.assertNotIn("QRESYNC", have)
        self.assertEqual(self.enable(r, "QRESYNC", "CONDSTORE"), {"CONDSTORE"})
        self.hms(self.select(r), "after ENABLE CONDSTORE")
        self.bad(r, "UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)", "QRESYNC is off")
        u, _ = self.expunge(r, "2")
        self.assertIn(b"* 2 EXPUNGE\r\n", u)
        self.assertNotIn(b"VANISHED", u)


if __name__ == "__main__":
    unittest.main()
