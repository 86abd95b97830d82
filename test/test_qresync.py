"""QRESYNC (RFC 7162 section 3.2), wire tests written from the RFC, not from the server.

The fixture and the helpers are test_condstore.py's (ModseqCase), the parser wire.py's:
INBOX holds UIDs 10 20 30 40 50 60 (seq 1..6), Other UIDs 1 2, Empty nothing; UIDVALIDITY 1.

What the RFC leaves to the server, and these tests therefore accept:
  - VANISHED (EARLIER) may name more UIDs than were expunged after the given mod-sequence:
    a server that forgets old expunges reports every UID of the set that is not in the
    mailbox (5.1, and the note in 3.2.6).  So the tests check that it names every UID
    expunged since then and no UID of a message that is still there, and stays inside the
    UID set asked about; not that it is exactly the expunged UIDs.
  - how VANISHED lists are split over responses and written (30,40 or 30:40 or two lines).
  - the order of the standard SELECT responses.
  - whether a FETCH for a flag change made by another session comes before the VANISHED.
"""
import unittest

from test_condstore import ModseqCase
from wire import (codes, enabled, expand_set, fetch_list, fetches, flagset, parse, responses,
                  upper, vanished)

PRESENT_AFTER = [10, 20, 50, 60]     # INBOX after 30 and 40 are expunged


class QresyncCase(ModseqCase):
    def qresync_session(self, srv, mailbox="INBOX"):
        """A session with QRESYNC enabled and mailbox selected; returns (r, select bytes)."""
        r = self.conn(srv)
        self.enable_qresync(r)
        return r, self.select(r, mailbox)

    def offline_changes(self, srv):
        """What happens while a client is away: a plain session flags 50 \\Flagged, flags 20
        \\Answered, and expunges 30 and 40.  Returns the HIGHESTMODSEQ before them."""
        r, u = self.qresync_session(srv)
        h0 = self.hms(u)
        r.close()
        b = self.conn(srv)
        self.select(b)
        self.store(b, "STORE 5 +FLAGS (\\Flagged)")
        self.store(b, "STORE 2 +FLAGS (\\Answered)")
        self.expunge(b, "3:4")
        b.close()
        return h0

    def earlier(self, data, expunged, present, within=None):
        """The one VANISHED (EARLIER) in data names every UID in expunged, none in present
        (RFC 7162 3.2.10), only UIDs within the set asked about; no plain VANISHED."""
        v = vanished(data)
        self.assertEqual([e for e, _ in v], [True] * len(v),
                         "a VANISHED without (EARLIER): %r" % data)
        uids = set(u for _, us in v for u in us)
        self.assertLessEqual(set(expunged), uids,
                             "VANISHED (EARLIER) misses expunged UIDs: %r" % data)
        self.assertFalse(uids & set(present), "VANISHED names messages still there: %r" % data)
        if within is not None:
            self.assertLessEqual(uids, set(within),
                                 "VANISHED (EARLIER) beyond the UID set: %r" % data)
        return uids

    def order(self, data):
        """The kinds of the responses in data, in order: 'VANISHED', 'FETCH', 'EXISTS',
        'CLOSED', 'FLAGS', 'OK', ..."""
        out = []
        for r in parse(data):
            if r[0] in ("OK", "NO", "BAD", "BYE") and r[1]:
                out.append(upper(r[1][0]))
            elif isinstance(r[0], int):
                out.append(upper(r[1]))
            else:
                out.append(upper(r[0]))
        return out


class Advertising(QresyncCase):
    def test_capability_lists_qresync_and_enable(self):
        """RFC 7162 3.2.2 (QRESYNC) and 3.2.3 (a QRESYNC server MUST advertise ENABLE)."""
        r = self.conn(self.serve())
        self.need(r, "QRESYNC", "ENABLE")

    def test_enable_qresync_answers_enabled(self):
        """RFC 7162 3.2.3 and RFC 5161 3.1: ENABLE QRESYNC -> * ENABLED listing QRESYNC (it
        may list CONDSTORE too, which it implies)."""
        r = self.conn(self.serve())
        u, t = self.ok(r, "ENABLE QRESYNC")
        self.assertIn(enabled(u), ({"QRESYNC"}, {"QRESYNC", "CONDSTORE"}), u)


class Vanished(QresyncCase):
    def test_expunge_reports_vanished_and_highestmodseq(self):
        """RFC 7162 3.2.7 and 3.2.10.2: after ENABLE QRESYNC, EXPUNGE reports `* VANISHED
        uids` (no EARLIER, no EXPUNGE), and the tagged OK has [HIGHESTMODSEQ n], n above
        every mod-sequence before (3.2: an expunge increments the mailbox's)."""
        r, u = self.qresync_session(self.serve())
        self.store(r, "STORE 2,4 +FLAGS.SILENT (\\Deleted)")
        h = max(self.modseqs(r).values())
        u, t = self.ok(r, "EXPUNGE")
        self.assertEqual(responses(u, "EXPUNGE"), [], u)
        self.assertEqual([e for e, _ in vanished(u)], [False] * len(vanished(u)), u)
        self.assertEqual(sorted(x for _, us in vanished(u) for x in us), [20, 40], u)
        code = self.tagged_code(t)
        self.assertTrue(code and code[0] == "HIGHESTMODSEQ",
                        "EXPUNGE's OK needs [HIGHESTMODSEQ]: %r" % t)
        self.assertGreater(self.modseq_value(code[1:]), h)
        self.assertEqual(sorted(self.modseqs(r)), [10, 30, 50, 60])

    def test_second_expunge_reports_only_new_uids(self):
        """RFC 7162 3.2.10.2 (the example continued): each VANISHED has only the UIDs expunged
        since the last one."""
        r, u = self.qresync_session(self.serve())
        u, _ = self.expunge(r, "3")
        self.assertEqual([(e, us) for e, us in vanished(u)], [(False, [30])], u)
        u, _ = self.expunge(r, "1,4")
        self.assertEqual(sorted(x for _, us in vanished(u) for x in us), [10, 50], u)
        self.assertEqual(responses(u, "EXPUNGE"), [])

    def test_uid_expunge_reports_vanished(self):
        """RFC 7162 3.2.9: UID EXPUNGE removes only the \\Deleted messages of its set, reported
        by VANISHED, with [HIGHESTMODSEQ n] in the tagged OK."""
        r, u = self.qresync_session(self.serve())
        self.store(r, "STORE 2,4 +FLAGS.SILENT (\\Deleted)")
        u, t = self.ok(r, "UID EXPUNGE 1:30")
        self.assertEqual([(e, us) for e, us in vanished(u)], [(False, [20])], u)
        self.assertEqual(responses(u, "EXPUNGE"), [], u)
        code = self.tagged_code(t)
        self.assertTrue(code and code[0] == "HIGHESTMODSEQ", t)
        self.assertEqual(sorted(self.modseqs(r)), [10, 30, 40, 50, 60])

    def test_expunge_by_another_session_reports_vanished(self):
        """RFC 7162 3.2.10.2: also for messages expunged in other connections; the session
        that did not enable QRESYNC still gets EXPUNGE."""
        s = self.serve()
        a, _ = self.qresync_session(s)
        b = self.conn(s)
        self.select(b)
        u, _ = self.expunge(b, "3")
        self.assertEqual(responses(u, "EXPUNGE"), [[3, "EXPUNGE"]])
        self.assertEqual(vanished(u), [])
        u, _ = self.ok(a, "NOOP")
        self.assertEqual(vanished(u), [(False, [30])], u)
        self.assertEqual(responses(u, "EXPUNGE"), [], u)
        self.every_fetch_has(u, "UID", "MODSEQ", why="RFC 7162 3.2.4")

    def test_vanished_names_only_messages_announced_by_exists(self):
        """RFC 7162 3.2.10.2: a VANISHED without EARLIER names only messages the session was
        told about (by EXISTS): a message appended and expunged meanwhile appears in it only
        after the EXISTS that announced it."""
        s = self.serve()
        a, _ = self.qresync_session(s)
        b = self.conn(s)
        code = self.tagged_code(self.append(b, "INBOX", 1)[1])
        self.assertTrue(code and code[0] == "APPENDUID", code)
        new = code[2]
        self.select(b)
        self.expunge(b, "7")
        u, _ = self.ok(a, "NOOP")
        count = 6
        for r in parse(u):
            if is_exists(r):
                count = r[0]
            elif upper(r[0]) == "VANISHED":
                self.assertEqual(len(r), 2, "a VANISHED (EARLIER) in NOOP's answer: %r" % u)
                gone = expand_set(r[1])
                self.assertTrue(new not in gone or count == 7,
                                "VANISHED %d before an EXISTS announced it: %r" % (new, u))
                count -= len(gone)
        self.assertEqual(count, 6, u)
        self.assertEqual(sorted(self.modseqs(a)), [10, 20, 30, 40, 50, 60])

    def test_no_vanished_while_answering_fetch_store_or_search(self):
        """RFC 7162 3.2.10.2: VANISHED is not sent while answering FETCH, STORE or SEARCH (nor
        UID SEARCH with message numbers); NOOP then sends it."""
        s = self.serve()
        a, _ = self.qresync_session(s)
        b = self.conn(s)
        self.select(b)
        self.expunge(b, "3")
        for command in ("FETCH 1:* (UID)", "STORE 1 +FLAGS (\\Answered)", "SEARCH ALL",
                        "UID SEARCH 1:3"):
            u, _ = self.ok(a, command)
            self.assertEqual(vanished(u), [], "VANISHED while answering %s: %r" % (command, u))
            self.assertEqual(responses(u, "EXPUNGE"), [],
                             "EXPUNGE while answering %s: %r" % (command, u))
        u, _ = self.ok(a, "NOOP")
        self.assertEqual(vanished(u), [(False, [30])], u)

    def test_move_reports_vanished_and_highestmodseq(self):
        """RFC 6851 4.4 with RFC 7162 3.2.10: MOVE in a QRESYNC session reports VANISHED, not
        EXPUNGE, sends HIGHESTMODSEQ in a tagged or untagged OK, and gives the moved message
        a mod-sequence above the target's highest."""
        s = self.serve()
        r, u = self.qresync_session(s)
        h_other = self.status_hms(r, "Other")
        u, t = self.ok(r, "MOVE 2 Other")
        self.assertEqual(vanished(u), [(False, [20])], u)
        self.assertEqual(responses(u, "EXPUNGE"), [], u)
        found = "HIGHESTMODSEQ" in codes(u)
        code = self.tagged_code(t)
        self.assertTrue(found or (code and code[0] == "HIGHESTMODSEQ"),
                        "no HIGHESTMODSEQ: %r %r" % (u, t))
        b = self.conn(s)
        self.select(b, "Other", "CONDSTORE", command="EXAMINE")
        ms = self.modseqs(b)
        self.assertEqual(len(ms), 3, ms)
        self.assertGreater(ms[max(ms)], h_other)

    def test_close_sends_no_highestmodseq_and_remembers_the_expunge(self):
        """RFC 7162 3.2.8: CLOSE expunges without VANISHED and without HIGHESTMODSEQ in its OK,
        and increments the mailbox's mod-sequence; a later SELECT (QRESYNC) from before the
        CLOSE reports the UID in VANISHED (EARLIER)."""
        s = self.serve()
        r, u = self.qresync_session(s)
        self.store(r, "STORE 2 +FLAGS.SILENT (\\Deleted)")
        m = self.modseqs(r, "2")[20]
        u, t = self.ok(r, "CLOSE")
        self.assertEqual((vanished(u), responses(u, "EXPUNGE")), ([], []), u)
        code = self.tagged_code(t)
        self.assertFalse(code and code[0] == "HIGHESTMODSEQ",
                         "CLOSE must not send HIGHESTMODSEQ: %r" % t)
        u = self.select(r, params="QRESYNC (1 %d)" % m)
        self.assertGreater(self.hms(u), m)
        self.earlier(u, [20], [10, 30, 40, 50, 60], within=range(1, 61))


class SelectQresync(QresyncCase):
    def test_select_qresync_reports_vanished_earlier_and_changes(self):
        """RFC 7162 3.2.5 and 3.2.5.1: SELECT (QRESYNC (uidvalidity modseq)) gives the usual
        SELECT data, then VANISHED (EARLIER) for the messages expunged since, then a FETCH
        with UID, FLAGS and MODSEQ for each message changed since, and nothing else."""
        s = self.serve()
        h0 = self.offline_changes(s)
        r = self.conn(s)
        self.enable_qresync(r)
        u, t = self.ok(r, "SELECT INBOX (QRESYNC (1 %d))" % h0)
        self.assertTrue(t.startswith(b"OK [READ-WRITE]"), t)
        self.assertEqual(responses(u, "EXISTS"), [[4, "EXISTS"]])
        c = codes(u)
        self.assertEqual((c.get("UIDVALIDITY"), c.get("UIDNEXT")), ([1], [61]), u)
        self.assertEqual(len(responses(u, "FLAGS")), 1, u)
        h1 = self.hms(u)
        self.assertGreater(h1, h0)
        self.earlier(u, [30, 40], PRESENT_AFTER, within=range(1, 61))
        fl = self.every_fetch_has(u, "UID", "FLAGS", "MODSEQ", why="RFC 7162 3.2.5.1")
        self.assertEqual(sorted((seq, d["UID"]) for seq, d in fl), [(2, 20), (3, 50)], u)
        for seq, d in fl:
            self.assertTrue(h0 < self.modseq(d) <= h1, (h0, d, h1))
        self.assertEqual(flagset(fetches(u)[3]["FLAGS"]), {"\\draft", "\\flagged"})
        self.assertEqual(flagset(fetches(u)[2]["FLAGS"]), {"\\answered"})
        kinds = self.order(u)
        self.assertLess(kinds.index("EXISTS"), kinds.index("VANISHED"), kinds)
        self.assertLess(kinds.index("VANISHED"), kinds.index("FETCH"),
                        "VANISHED before FETCH (3.2.6)")
        self.assertEqual(responses(u, "EXPUNGE"), [])

    def test_examine_qresync(self):
        """RFC 7162 3.2.5: the parameter works with EXAMINE as with SELECT."""
        s = self.serve()
        h0 = self.offline_changes(s)
        r = self.conn(s)
        self.enable_qresync(r)
        u, t = self.ok(r, "EXAMINE INBOX (QRESYNC (1 %d))" % h0)
        self.assertTrue(t.startswith(b"OK [READ-ONLY]"), t)
        self.earlier(u, [30, 40], PRESENT_AFTER, within=range(1, 61))
        self.assertEqual(sorted(d["UID"] for _, d in fetch_list(u)), [20, 50], u)

    def test_select_qresync_with_known_uids(self):
        """RFC 7162 3.2.5.1: with known UIDs, the answer is that of UID FETCH known-uids
        (FLAGS) (CHANGEDSINCE modseq VANISHED): expunges and changes of those UIDs only."""
        s = self.serve()
        h0 = self.offline_changes(s)
        r = self.conn(s)
        self.enable_qresync(r)
        u = self.select(r, params="QRESYNC (1 %d 10:30)" % h0)
        self.earlier(u, [30], PRESENT_AFTER, within=range(10, 31))
        self.assertEqual([d["UID"] for _, d in fetch_list(u)], [20], u)

    def test_select_qresync_with_sequence_match_data(self):
        """RFC 7162 3.2.5.2: the client knows seq 1 and 2 are UIDs 10 and 20, which still holds,
        so no UID up to 20 is in VANISHED; the expunged 30 and 40 are."""
        s = self.serve()
        h0 = self.offline_changes(s)
        r = self.conn(s)
        self.enable_qresync(r)
        u = self.select(r, params="QRESYNC (1 %d 1:60 (1,2 10,20))" % h0)
        self.earlier(u, [30, 40], PRESENT_AFTER, within=range(21, 61))
        self.assertEqual(sorted(d["UID"] for _, d in fetch_list(u)), [20, 50], u)

    def test_sequence_match_data_that_no_longer_matches_hides_nothing(self):
        """RFC 7162 3.2.5.2: the client thinks seq 3 is UID 30, no longer true (30 is gone):
        that pair does not match, so 30 must still be reported."""
        s = self.serve()
        h0 = self.offline_changes(s)
        r = self.conn(s)
        self.enable_qresync(r)
        u = self.select(r, params="QRESYNC (1 %d 1:60 (1:3 10,20,30))" % h0)
        self.earlier(u, [30, 40], PRESENT_AFTER, within=range(21, 61))

    def test_wrong_uidvalidity_is_a_full_resync(self):
        """RFC 7162 3.2.5: with another UIDVALIDITY the server ignores the rest: the usual
        SELECT data with the real UIDVALIDITY, no VANISHED, no FETCH."""
        s = self.serve()
        h0 = self.offline_changes(s)
        r = self.conn(s)
        self.enable_qresync(r)
        u, t = self.ok(r, "SELECT INBOX (QRESYNC (67890007 %d 1:60))" % h0)
        self.assertEqual(codes(u).get("UIDVALIDITY"), [1])
        self.assertEqual((vanished(u), fetch_list(u)), ([], []), u)
        self.assertEqual(responses(u, "EXISTS"), [[4, "EXISTS"]])
        self.hms(u)

    def test_qresync_parameter_without_enable_is_bad(self):
        """RFC 7162 3.2.3 and 3.2.5: the QRESYNC parameter before ENABLE QRESYNC (or after
        ENABLE CONDSTORE only) is BAD; after ENABLE QRESYNC the same command works."""
        r = self.conn(self.serve())
        self.need(r, "QRESYNC")
        self.bad(r, "SELECT INBOX (QRESYNC (1 1))", "RFC 7162 3.2.5, QRESYNC not enabled")
        self.assertIn("CONDSTORE", self.enable(r, "CONDSTORE"))
        self.bad(r, "EXAMINE INBOX (QRESYNC (1 1))", "RFC 7162 3.2.5, only CONDSTORE enabled")
        self.enable_qresync(r)
        self.ok(r, "SELECT INBOX (QRESYNC (1 1))")

    def test_malformed_qresync_parameter_is_bad_and_selects_nothing(self):
        """RFC 7162 3.2.5: arguments are checked before the mailbox is opened; a bad one is
        BAD and the mailbox stays unselected.  UIDVALIDITY 0 is malformed (7: nz-number);
        Dovecot 2.3 takes it as a mismatch instead."""
        r = self.conn(self.serve())
        self.enable_qresync(r)
        for param in ("QRESYNC (1)", "QRESYNC (0 5)", "QRESYNC 1 5", "QRESYNC (1 x5)",
                      "QRESYNC (1 5 10:20 (1,2))", "QRESYNC ()"):
            self.bad(r, "SELECT INBOX (%s)" % param, "malformed")
            u, t = r.cmd("FETCH 1 (FLAGS)")
            self.assertFalse(t.startswith(b"OK"),
                             "a mailbox was selected after %s: %r" % (param, t))

    def test_select_qresync_on_an_empty_mailbox(self):
        """RFC 7162 3.2.5.1: a mailbox that never had messages: no known UIDs means none,
        so no VANISHED and no FETCH; HIGHESTMODSEQ still positive (RFC 7162 7)."""
        r = self.conn(self.serve())
        self.enable_qresync(r)
        uv = self.status(r, "Empty", "UIDVALIDITY")["UIDVALIDITY"]
        u = self.select(r, "Empty", "QRESYNC (%d 1)" % uv)
        self.assertEqual((vanished(u), fetch_list(u)), ([], []), u)
        self.assertEqual(responses(u, "EXISTS"), [[0, "EXISTS"]])
        self.hms(u)

    def test_example_3_2_5_1_with_closed(self):
        """RFC 7162 3.2.5.1, the A03 example: selecting INBOX (QRESYNC ...) while another
        mailbox is selected starts with * OK [CLOSED], then the SELECT data, VANISHED
        (EARLIER), FETCH."""
        s = self.serve()
        h0 = self.offline_changes(s)
        r, _ = self.qresync_session(s, "Other")
        u = self.select(r, params="QRESYNC (1 %d 10:60)" % h0)
        kinds = self.order(u)
        self.assertEqual(kinds[0], "CLOSED", u)
        self.assertEqual(kinds.count("CLOSED"), 1, u)
        self.assertLess(kinds.index("EXISTS"), kinds.index("VANISHED"), kinds)
        self.assertLess(kinds.index("VANISHED"), kinds.index("FETCH"), kinds)
        self.earlier(u, [30, 40], PRESENT_AFTER, within=range(10, 61))

    def test_qresync_after_save_and_reload(self):
        """RFC 7162 3.2.5.1 and 3.2.6's note, across --save and a restart: the mod-sequence of a
        client from before the expunges still gets them in VANISHED (EARLIER) (all of them,
        if the server forgot when they happened), the changes as FETCH; HIGHESTMODSEQ does
        not go back, and the next change gets a higher MODSEQ."""
        saved = self.tempdir()
        s = self.serve("--save", saved)
        h0 = self.offline_changes(s)
        r, u = self.qresync_session(s)
        h1 = self.hms(u)
        r.close()
        self.assertEqual(s.stop(), 0)
        r = self.conn(self.start_or_fail(saved))
        self.enable_qresync(r)
        u = self.select(r, params="QRESYNC (1 %d)" % h0)
        self.assertGreaterEqual(self.hms(u), h1)
        self.earlier(u, [30, 40], PRESENT_AFTER, within=range(1, 61))
        self.assertEqual(sorted(d["UID"] for _, d in fetch_list(u)), [20, 50], u)
        u = self.select(r, params="QRESYNC (1 %d 1:60 (1,2 10,20))" % h0)
        self.earlier(u, [30, 40], PRESENT_AFTER, within=range(21, 61))
        u = self.store(r, "STORE 1 +FLAGS (\\Flagged)")
        self.assertGreater(self.modseq(self.fetch_for(u, 1)), h1)


class UidFetchVanished(QresyncCase):
    def changed_here(self, srv):
        """QRESYNC session; 50 flagged, 30 and 40 expunged in it; returns (r, h0)."""
        r, u = self.qresync_session(srv)
        h0 = self.hms(u)
        self.store(r, "STORE 5 +FLAGS (\\Flagged)")
        self.expunge(r, "3:4")
        return r, h0

    def test_uid_fetch_changedsince_vanished(self):
        """RFC 7162 3.2.6 (the s100 example): UID FETCH 1:* (FLAGS) (CHANGEDSINCE m VANISHED)
        -> VANISHED (EARLIER) for the UIDs expunged since m, before the FETCH responses of
        the messages changed since m."""
        r, h0 = self.changed_here(self.serve())
        u, _ = self.ok(r, "UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)" % h0)
        self.earlier(u, [30, 40], [10, 20, 50, 60], within=range(1, 61))
        fl = self.every_fetch_has(u, "UID", "FLAGS", "MODSEQ", why="RFC 7162 3.2.6")
        self.assertEqual([(seq, d["UID"]) for seq, d in fl], [(3, 50)], u)
        kinds = self.order(u)
        self.assertLess(kinds.index("VANISHED"), kinds.index("FETCH"),
                        "VANISHED before FETCH (3.2.6)")

    def test_uid_fetch_vanished_stays_inside_the_uid_set(self):
        """RFC 7162 3.2.6: only messages of the UID set: 25:45 has the expunged 30 and 40 and
        no changed message."""
        r, h0 = self.changed_here(self.serve())
        u, _ = self.ok(r, "UID FETCH 25:45 (FLAGS) (CHANGEDSINCE %d VANISHED)" % h0)
        self.earlier(u, [30, 40], [10, 20, 50, 60], within=range(25, 46))
        self.assertEqual(fetch_list(u), [], u)

    def test_vanished_modifier_without_qresync_is_bad(self):
        """RFC 7162 3.2.6 and 3.2.3: the VANISHED modifier before ENABLE QRESYNC is BAD (also
        with CONDSTORE enabled); with QRESYNC enabled the same command works."""
        s = self.serve()
        r = self.conn(s)
        self.need(r, "QRESYNC")
        self.select(r, params="CONDSTORE")
        self.bad(r, "UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)", "QRESYNC not enabled")
        q, _ = self.qresync_session(s)
        self.ok(q, "UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)")

    def test_vanished_modifier_on_fetch_is_bad(self):
        """RFC 7162 3.2.6: VANISHED is a UID FETCH modifier; with FETCH it is BAD."""
        r, _ = self.qresync_session(self.serve())
        self.ok(r, "UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)")
        self.bad(r, "FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)", "RFC 7162 3.2.6, not UID FETCH")

    def test_vanished_modifier_without_changedsince_is_bad(self):
        """RFC 7162 3.2.6: VANISHED only together with CHANGEDSINCE."""
        r, _ = self.qresync_session(self.serve())
        self.ok(r, "UID FETCH 1:* (FLAGS) (VANISHED CHANGEDSINCE 1)")
        self.bad(r, "UID FETCH 1:* (FLAGS) (VANISHED)", "RFC 7162 3.2.6, without CHANGEDSINCE")


class UidAndModseqInFetch(QresyncCase):
    def test_store_answer_has_uid_and_modseq(self):
        """RFC 7162 3.2.4: after ENABLE QRESYNC, a STORE's FETCH responses carry UID and MODSEQ."""
        r, _ = self.qresync_session(self.serve())
        u = self.store(r, "STORE 2 +FLAGS (\\Seen)")
        fl = self.every_fetch_has(u, "UID", "MODSEQ", "FLAGS", why="RFC 7162 3.2.4")
        self.assertEqual([(seq, d["UID"], flagset(d["FLAGS"])) for seq, d in fl],
                         [(2, 20, {"\\seen"})])

    def test_fetch_that_sets_seen_answers_with_uid_and_modseq(self):
        """RFC 7162 3.2.4: a FETCH that implicitly sets \\Seen answers for the message with UID
        and its new MODSEQ as well.  (Whether each FETCH response for it must carry them, or
        the answer as a whole, is read both ways: Dovecot 2.3 sends the body with FLAGS, then
        `* 2 FETCH (UID 20 MODSEQ (m))`; both are accepted.)"""
        r, u = self.qresync_session(self.serve())
        h = self.hms(u)
        u, _ = self.ok(r, "FETCH 2 (BODY[TEXT])")
        d = self.fetch_for(u, 2)
        self.assertEqual(d.get("UID"), 20, u)
        self.assertGreater(self.modseq(d, "for the implicit \\Seen"), h)
        self.assertEqual(self.flags(r, "2"), {20: {"\\seen"}})


class Closed(QresyncCase):
    def test_select_of_another_mailbox_sends_closed_first(self):
        """RFC 7162 3.2.11: a CONDSTORE/QRESYNC server sends * OK [CLOSED] when SELECT or
        EXAMINE closes the selected mailbox, enabled or not, before the new mailbox's data."""
        s = self.serve()
        r = self.conn(s)
        self.need(r, "QRESYNC")
        self.select(r)
        for command, mailbox in (("SELECT", "Other"), ("EXAMINE", "INBOX"), ("EXAMINE", "Empty")):
            kinds = self.order(self.select(r, mailbox, command=command))
            what = "%s %s: %r" % (command, mailbox, kinds)
            self.assertEqual(kinds.count("CLOSED"), 1, what)
            self.assertLess(kinds.index("CLOSED"), kinds.index("EXISTS"), what)
            self.assertLess(kinds.index("CLOSED"), kinds.index("FLAGS"), what)

    def test_closed_with_qresync_enabled(self):
        """RFC 7162 3.2.11 with QRESYNC enabled: the same [CLOSED]."""
        r, _ = self.qresync_session(self.serve())
        kinds = self.order(self.select(r, "Other", "CONDSTORE"))
        self.assertEqual(kinds.count("CLOSED"), 1, kinds)
        self.assertLess(kinds.index("CLOSED"), kinds.index("EXISTS"), kinds)

    def test_closed_separates_the_old_mailbox_from_the_new(self):
        """RFC 7162 3.2.11: responses after [CLOSED] are about the new mailbox: INBOX news
        (another session's APPEND and STORE) may come before it, never after."""
        s = self.serve()
        r, _ = self.qresync_session(s)
        b = self.conn(s)
        self.append(b, "INBOX", 1)
        self.select(b)
        self.store(b, "STORE 1 +FLAGS (\\Flagged)")
        u = self.select(r, "Other")
        resp = parse(u)
        kinds = self.order(u)
        self.assertEqual(kinds.count("CLOSED"), 1, kinds)
        after = resp[kinds.index("CLOSED") + 1:]
        self.assertEqual([x[0] for x in after if len(x) > 1 and upper(x[1]) == "EXISTS"], [2], u)
        self.assertFalse([x for x in after if len(x) > 1 and upper(x[1]) in ("FETCH", "EXPUNGE")],
                         u)
        self.assertFalse([x for x in after if upper(x[0]) == "VANISHED"], u)


class Section6(QresyncCase):
    def test_highestmodseq_never_runs_ahead_of_a_delayed_vanished(self):
        """RFC 7162 3.2 and section 6: VANISHED cannot be sent during STORE (3.2.10.2), so
        while one is pending, a STORE's answer with MODSEQs above the expunge's must carry a
        HIGHESTMODSEQ below it; else a client computing its HIGHESTMODSEQ by section 6's rule
        would skip the expunge after losing the connection.  Checked after each tagged
        response: every change at or below the client's HIGHESTMODSEQ has reached it."""
        s = self.serve()
        a, u = self.qresync_session(s)
        client = self.hms(u)
        b, _ = self.qresync_session(s)
        u, t = self.expunge(b, "3")
        code = self.tagged_code(t)
        self.assertTrue(code and code[0] == "HIGHESTMODSEQ",
                        "EXPUNGE's OK needs it (3.2.7): %r" % t)
        e = self.modseq_value(code[1:], "EXPUNGE's HIGHESTMODSEQ")
        seen_vanished = False
        for command in ("STORE 2 +FLAGS (\\Seen)", "STORE 1 +FLAGS (\\Answered)", "NOOP"):
            u, t = self.ok(a, command)
            seen_vanished = seen_vanished or 30 in [x for _, us in vanished(u) for x in us]
            code = self.tagged_code(t)
            c = codes(u)             # the last of each code
            codes_here = [c["HIGHESTMODSEQ"][0]] if "HIGHESTMODSEQ" in c else []
            if code and code[0] == "HIGHESTMODSEQ":
                codes_here.append(code[1])
            mods = [self.modseq(d) for _, d in fetch_list(u) if "MODSEQ" in d]
            # section 6: a HIGHESTMODSEQ code wins; else the highest MODSEQ seen, if higher
            client = codes_here[-1] if codes_here else max([client] + mods)
            if client >= e:
                self.assertTrue(seen_vanished,
                                "after %s the client's HIGHESTMODSEQ is %d, not below the expunge "
                                "at %d it has not been told of: %r %r" % (command, client, e, u, t))
        self.assertTrue(seen_vanished, "NOOP never reported VANISHED 30")


class NoModseqMailbox(QresyncCase):
    def test_expunge_in_a_nomodseq_mailbox_stays_expunge(self):
        """RFC 7162 3.2.3 and 3.2.10: VANISHED replaces EXPUNGE only in mailboxes that do not
        answer NOMODSEQ; and no HIGHESTMODSEQ code there (3.2.7)."""
        r = self.conn(self.serve("--nomodseq", "Other"))
        self.enable_qresync(r)
        self.assertIn("NOMODSEQ", codes(self.select(r, "Other")))
        u, t = self.expunge(r, "1")
        self.assertEqual(responses(u, "EXPUNGE"), [[1, "EXPUNGE"]], u)
        self.assertEqual(vanished(u), [], u)
        self.assertNotIn(b"HIGHESTMODSEQ", u + t)
        self.select(r, "INBOX")
        u, _ = self.expunge(r, "1")
        self.assertEqual(vanished(u), [(False, [10])], "INBOX keeps VANISHED: %r" % u)

    def test_qresync_parameter_on_a_nomodseq_mailbox_is_ignored(self):
        """RFC 7162 3.2.5.1: a mailbox without mod-sequences answers NOMODSEQ and ignores the
        rest of the parameter: no VANISHED, no FETCH, even after an expunge."""
        s = self.serve("--nomodseq", "Other")
        b = self.conn(s)
        self.select(b, "Other")
        self.expunge(b, "1")
        r = self.conn(s)
        self.enable_qresync(r)
        u = self.select(r, "Other", "QRESYNC (1 1 1:2)")
        self.assertIn("NOMODSEQ", codes(u))
        self.assertEqual((vanished(u), fetch_list(u)), ([], []), u)
        self.assertEqual(responses(u, "EXISTS"), [[1, "EXISTS"]])


def is_exists(r):
    return len(r) > 1 and isinstance(r[0], int) and upper(r[1]) == "EXISTS"


if __name__ == "__main__":
    unittest.main()
