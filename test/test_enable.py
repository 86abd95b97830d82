"""ENABLE (RFC 5161), and ENABLE QRESYNC (RFC 7162 3.2.3), written from the RFCs.

Fixture and helpers: test_condstore.py's ModseqCase (INBOX UIDs 10..60, Other, Empty); the
parser and enabled(), vanished(): wire.py's.

Choices the RFCs leave and these tests accept:
  - ENABLE before LOGIN: BAD or NO (RFC 3501 3: "BAD or NO (depending upon server
    implementation)").
  - ENABLE with a mailbox selected: clients MUST NOT send it, servers "don't have to check"
    (RFC 5161 3.1): refusing it (BAD/NO, no ENABLED) and carrying it out are both fine; if
    carried out, it must then do what an enabling command does.
  - whether * ENABLED for `ENABLE QRESYNC` also lists CONDSTORE (implied, not named).
  - a second ENABLE of something already enabled: its ENABLED SHOULD list only what that
    command enabled; not tested.
"""
import unittest

from test_condstore import ModseqCase
from wire import codes, enabled, fetch_list, responses, status_parts, vanished


class Enable(ModseqCase):
    def test_capability_lists_enable(self):
        """RFC 5161 1: a server with ENABLE lists it in CAPABILITY."""
        r = self.conn(self.serve())
        self.need(r, "ENABLE")

    def test_enable_condstore_answers_enabled_condstore(self):
        """RFC 5161 3.1 (its example): ENABLE CONDSTORE -> `* ENABLED CONDSTORE`, then OK."""
        r = self.conn(self.serve())
        u, t = self.ok(r, "ENABLE CONDSTORE")
        self.assertEqual(u.upper(), b"* ENABLED CONDSTORE\r\n")

    def test_unknown_extensions_are_ignored(self):
        """RFC 5161 3.1: an argument the server does not know is ignored; ENABLED lists only
        what was enabled, and may list nothing (3.2): `* ENABLED` alone."""
        r = self.conn(self.serve())
        self.need(r, "ENABLE")
        u, _ = self.ok(r, "ENABLE X-GOOD-IDEA")
        self.assertEqual(u, b"* ENABLED\r\n")
        u, _ = self.ok(r, "ENABLE X-GOOD-IDEA CONDSTORE X-OTHER")
        self.assertEqual(enabled(u), {"CONDSTORE"})

    def test_extensions_that_need_no_enabling_are_ignored(self):
        """RFC 5161 3.1: a known extension not meant for ENABLE is ignored, not listed."""
        r = self.conn(self.serve())
        self.need(r, "ENABLE")
        u, _ = self.ok(r, "ENABLE IDLE MOVE UIDPLUS IMAP4rev1")
        self.assertEqual(u, b"* ENABLED\r\n")

    def test_enable_without_arguments_is_bad(self):
        """RFC 5161 3.1 (Result: BAD for no arguments) and 4 (1*(SP capability))."""
        r = self.conn(self.serve())
        self.assertIn("CONDSTORE", self.enable(r, "CONDSTORE"))
        u, t = self.bad(r, "ENABLE", "RFC 5161 3.1, no arguments")
        self.assertEqual(responses(u, "ENABLED"), [])

    def test_enable_is_case_insensitive(self):
        """RFC 5161 4: capability names are accepted in any case."""
        r = self.conn(self.serve())
        u, _ = self.ok(r, "enable condstore")
        self.assertEqual(enabled(u), {"CONDSTORE"})

    def test_enable_before_login_is_refused(self):
        """RFC 5161 3.1: ENABLE is valid only in the authenticated state; before LOGIN it is
        BAD or NO (RFC 3501 3) with no ENABLED, and after LOGIN it works."""
        s = self.serve()
        r = self.raw(s, login=None)
        u, t = r.cmd("ENABLE CONDSTORE")
        self.assertIn(status_parts(t)[0], ("BAD", "NO"), t)
        self.assertEqual(responses(u, "ENABLED"), [])
        self.ok(r, "LOGIN test test")
        self.assertIn("CONDSTORE", self.enable(r, "CONDSTORE"))
        self.hms(self.select(r), "after ENABLE CONDSTORE")

    def test_enable_does_not_change_capability(self):
        """RFC 5161 3.1: CAPABILITY after ENABLE lists exactly what it listed before."""
        r = self.conn(self.serve())
        before = self.caps(r)
        self.assertIn("ENABLE", before)
        self.ok(r, "ENABLE CONDSTORE QRESYNC X-GOOD-IDEA")
        self.assertEqual(self.caps(r), before)

    def test_enable_is_additive(self):
        """RFC 5161 3.1: `ENABLE a` then `ENABLE b` is `ENABLE a b`; what one ENABLE turned on
        stays on."""
        r = self.conn(self.serve())
        self.assertIn("CONDSTORE", self.enable(r, "CONDSTORE"))
        self.assertIn("QRESYNC", self.enable(r, "QRESYNC"))
        self.ok(r, "ENABLE X-GOOD-IDEA")
        u = self.select(r)
        self.hms(u, "after ENABLE CONDSTORE")
        u, _ = self.expunge(r, "2")
        self.assertEqual(vanished(u), [(False, [20])], "QRESYNC still enabled: %r" % u)

    def test_enable_then_select_pipelined(self):
        """RFC 5161 3.1: ENABLE may be pipelined; SELECT sent right behind it already sees
        CONDSTORE enabled."""
        r = self.conn(self.serve())
        r.send("p1 ENABLE CONDSTORE\r\np2 SELECT INBOX\r\n")
        u, t = r.until_tagged("p1")
        self.assertTrue(t.startswith(b"OK"), t)
        self.assertEqual(enabled(u), {"CONDSTORE"})
        u, t = r.until_tagged("p2")
        self.assertTrue(t.startswith(b"OK"), t)
        self.hms(u, "for the SELECT pipelined after ENABLE CONDSTORE")


class EnableQresync(ModseqCase):
    def test_enable_qresync_also_enables_condstore(self):
        """RFC 7162 3.2.3: ENABLE QRESYNC is a CONDSTORE enabling command: SELECT then has
        HIGHESTMODSEQ and FETCH responses MODSEQ (and UID, 3.2.4)."""
        r = self.conn(self.serve())
        self.assertIn("QRESYNC", self.enable(r, "QRESYNC"))
        self.hms(self.select(r), "after ENABLE QRESYNC")
        u = self.store(r, "STORE 2 +FLAGS (\\Seen)")
        fl = self.every_fetch_has(u, "MODSEQ", "UID", why="RFC 7162 3.2.3, 3.2.4")
        self.assertEqual([(seq, d["UID"]) for seq, d in fl], [(2, 20)])

    def test_enable_qresync_condstore_in_either_order(self):
        """RFC 7162 3.2.3: ENABLE QRESYNC CONDSTORE and ENABLE CONDSTORE QRESYNC (order is not
        significant) both work: ENABLED lists QRESYNC (CONDSTORE too or not: RFC 5161 3.2 says
        it lists what was enabled, RFC 7162 that the commands have identical results), and
        both are on: HIGHESTMODSEQ on SELECT, VANISHED on EXPUNGE."""
        s = self.serve()
        for uid, command in ((1, "ENABLE QRESYNC CONDSTORE"), (2, "ENABLE CONDSTORE QRESYNC")):
            r = self.conn(s)
            u, _ = self.ok(r, command)
            self.assertIn(enabled(u), ({"QRESYNC", "CONDSTORE"}, {"QRESYNC"}),
                          "%s: %r" % (command, u))
            self.hms(self.select(r, "Other"), "after %s" % command)
            u, _ = self.expunge(r, "1")
            self.assertEqual(vanished(u), [(False, [uid])], "after %s: %r" % (command, u))
            r.close()


class EnableWithMailboxSelected(ModseqCase):
    """RFC 5161 3.1: clients MUST NOT, servers need not check.  Either answer is sane; what
    the server says it did must then be true."""

    def test_enable_condstore_with_a_mailbox_selected(self):
        """If refused: BAD or NO, no ENABLED.  If carried out and CONDSTORE listed: it is the
        first enabling command with a mailbox selected, so HIGHESTMODSEQ is sent (RFC 7162
        3.1), and later FETCH responses carry MODSEQ."""
        s = self.serve()
        a, b = self.conn(s), self.conn(s)
        self.need(a, "ENABLE", "CONDSTORE")
        self.select(a)
        self.select(b)
        u, t = a.cmd("ENABLE CONDSTORE")
        word, code = status_parts(t)[0], self.tagged_code(t)
        if word in ("BAD", "NO"):
            self.assertEqual(responses(u, "ENABLED"), [], u)
            return
        self.assertEqual(word, "OK", t)
        if "CONDSTORE" in enabled(u):
            self.assertTrue("HIGHESTMODSEQ" in codes(u) or (code and code[0] == "HIGHESTMODSEQ"),
                            "RFC 7162 3.1: the first enabling command with a mailbox selected "
                            "returns HIGHESTMODSEQ: %r %r" % (u, t))
            self.store(b, "STORE 1 +FLAGS (\\Flagged)")
            u, _ = self.ok(a, "NOOP")
            self.every_fetch_has(u, "MODSEQ", why="CONDSTORE enabled")
            self.assertTrue(fetch_list(u), u)

    def test_enable_qresync_with_a_mailbox_selected(self):
        """If refused: BAD or NO, no ENABLED, expunges stay EXPUNGE.  If ENABLED lists QRESYNC:
        from then on expunges are VANISHED (RFC 7162 3.2.3); if not listed: EXPUNGE."""
        r = self.conn(self.serve())
        self.need(r, "ENABLE", "QRESYNC")
        self.select(r)
        u, t = r.cmd("ENABLE QRESYNC")
        word = status_parts(t)[0]
        self.assertIn(word, ("OK", "BAD", "NO"), t)
        on = False
        if word == "OK":
            on = "QRESYNC" in enabled(u)
        else:
            self.assertEqual(responses(u, "ENABLED"), [], u)
        u, _ = self.expunge(r, "2")
        if on:
            self.assertEqual((vanished(u), responses(u, "EXPUNGE")), ([(False, [20])], []), u)
        else:
            self.assertEqual((vanished(u), responses(u, "EXPUNGE")), ([], [[2, "EXPUNGE"]]), u)


if __name__ == "__main__":
    unittest.main()
