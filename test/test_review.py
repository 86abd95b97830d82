"""Regression tests for bugs a code review found (each names the bug it guards against)."""
import os
import shutil
import signal
import socket
import tempfile
import time
import unittest

from imapserver import Raw, Server, fixture, write_mbox


def literal_append(r, mailbox, data):
    return r.cmd(b"APPEND " + mailbox.encode() + b" {%d+}\r\n" % len(data) + data)


class TempDir(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="imapmem-review-")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)


class Review(TempDir):
    def test_envelope_with_stray_semicolon_does_not_hang(self):
        # out_address_list looped for ever on a ';' outside a group
        with Server(fixture("basic.mbox")) as srv:
            r = srv.raw(login=("test", "test"))
            u, t = literal_append(r, "INBOX", b"From: a@b\r\nTo: x@y;\r\nSubject: s\r\n\r\nbody\r\n")
            self.assertTrue(t.startswith(b"OK"), t)
            r.ok("SELECT INBOX")
            u = r.ok("FETCH 7 ENVELOPE")
            self.assertIn(b'((NIL NIL "x" "y"))', u)
            r.close()

    def test_list_pattern_with_many_wildcards_is_fast_and_blocks_nobody(self):
        # list_match was exponential in the number of wildcards, under the user's lock
        with Server(fixture("basic.mbox")) as srv:
            a, b = srv.raw(login=("test", "test")), srv.raw(login=("test", "test"))
            a.ok("CREATE " + "a" * 200)
            t0 = time.monotonic()
            u, t = a.cmd('LIST "" "' + "*" * 30 + 'b"')
            self.assertTrue(t.startswith(b"OK"), t)
            self.assertEqual(u, b"")
            u, t = a.cmd('LIST "" "' + "%*" * 40 + 'a"')
            self.assertIn(b'"' + b"a" * 200 + b'"', u)
            self.assertLess(time.monotonic() - t0, 5)
            self.assertIn(b'"INBOX"', b.ok('LIST "" INBOX'))
            a.close()
            b.close()

    def test_uids_run_out_cleanly(self):
        # uidnext wrapped to 0 and a stored message was freed (use after free)
        path = write_mbox(self.dir, "full.mbox",
                          "From a Mon Jan  1 00:00:00 2024\nX-IMAPbase: 7 4294967293\nX-UID: 3\n\nx\n")
        with Server(path) as srv:
            r = srv.raw(login=("test", "test"))
            u, t = literal_append(r, "INBOX", b"Subject: one\r\n\r\n1\r\n")
            self.assertIn(b"[APPENDUID 7 4294967294]", t)
            u, t = literal_append(r, "INBOX", b"Subject: two\r\n\r\n2\r\n")
            self.assertTrue(t.startswith(b"NO [LIMIT]"), t)
            u = r.ok("SELECT INBOX")
            self.assertIn(b"* 2 EXISTS", u)
            self.assertIn(b"[UIDNEXT 4294967295]", u)
            r.close()

    def test_uidvalidity_fault_before_login(self):
        # the fault needs a user; before LOGIN it used to crash the server
        with Server("--fault", "CAPABILITY=UIDVALIDITY", fixture("basic.mbox")) as srv:
            r = Raw(srv.host, srv.port)
            self.assertIn(b"* CAPABILITY", r.ok("CAPABILITY"))
            r.ok("LOGIN test test")
            r.close()

    def test_delete_of_own_selected_mailbox_completes(self):
        # the session got "* BYE ... by another session" and no tagged reply
        with Server(fixture("basic.mbox")) as srv:
            r = srv.raw(login=("test", "test"))
            r.ok("CREATE foo")
            r.ok("SELECT foo")
            u, t = r.cmd("DELETE foo")
            self.assertTrue(t.startswith(b"OK"), (u, t))
            self.assertNotIn(b"BYE", u)
            self.assertTrue(r.cmd("FETCH 1 FLAGS")[1].startswith(b"BAD"))  # authenticated now
            r.ok("SELECT INBOX")
            r.close()

    def test_number_4294967295_is_not_star(self):
        # '*' used to be stored as 4294967295
        with Server(fixture("basic.mbox")) as srv:
            r = srv.raw(login=("test", "test"))
            r.ok("SELECT INBOX")
            self.assertEqual(r.ok("UID FETCH 4294967295 (UID FLAGS)"), b"")
            self.assertTrue(r.cmd("FETCH 4294967295 (UID)")[1].startswith(b"BAD"))
            self.assertEqual(r.ok("UID SEARCH UID 4294967295"), b"* SEARCH\r\n")
            self.assertIn(b"UID 6", r.ok("UID FETCH 5:* (UID)"))
            r.close()

    def test_header_fields_not_with_many_names(self):
        # names after the 64th were dropped
        with Server(fixture("basic.mbox")) as srv:
            r = srv.raw(login=("test", "test"))
            r.ok("SELECT INBOX")
            names = " ".join("X-F%d" % i for i in range(64)) + " SUBJECT FROM TO DATE MESSAGE-ID"
            u = r.ok("FETCH 1 BODY.PEEK[HEADER.FIELDS.NOT (%s)]" % names)
            for field in (b"Subject:", b"From:", b"To:", b"Date:", b"Message-ID:"):
                self.assertNotIn(b"\r\n" + field, u)
            self.assertIn(b"\r\nReturn-Path:", u)
            r.close()

    def test_resp_text_is_seven_bit(self):
        with Server(fixture("basic.mbox")) as srv:
            r = srv.raw(login=("test", "test"))
            u, t = r.cmd(b"SELECT {3+}\r\n\xc3\xa9x")
            self.assertTrue(t.startswith(b"NO"), t)
            self.assertTrue(all(c < 0x80 for c in t), t)
            r.close()

    def test_trace_survives_text_ending_in_braces(self):
        # a status line ending "{12}" was taken for a literal and the transcript stopped
        with Server("--trace", "--fault", "NOOP=NO busy {12}", fixture("basic.mbox")) as srv:
            r = srv.raw(login=("test", "test"))
            r.send("t1 NOOP\r\n")
            self.assertEqual(r.readline(), b"t1 NO busy {12}\r\n")
            r.send("t2 LOGOUT\r\n")
            self.assertTrue(r.readline().startswith(b"* BYE"))
            r.close()
            time.sleep(0.2)
            err = srv.stderr()
            self.assertIn("S: t1 NO busy {12}", err)
            self.assertIn("S: t2 OK LOGOUT completed", err)

    def test_echoed_text_never_looks_like_a_literal(self):
        with Server(fixture("basic.mbox")) as srv:
            r = srv.raw(login=("test", "test"))
            r.send('t1 SELECT "x{9}"\r\n')
            line = r.readline()
            self.assertTrue(line.startswith(b"t1 NO"), line)
            self.assertFalse(line.endswith(b"}\r\n"), line)
            r.close()

    def test_save_keeps_uidvalidity_of_an_empty_mailbox(self):
        saved = os.path.join(self.dir, "saved")
        with Server("--save", saved, fixture("basic.mbox")) as srv:
            r = srv.raw(login=("test", "test"))
            r.ok("CREATE Empty")
            literal_append(r, "Empty", b"Subject: x\r\n\r\nx\r\n")
            r.ok("SELECT Empty")
            r.ok("STORE 1 +FLAGS (\\Deleted)")
            r.ok("EXPUNGE")
            before = r.ok("STATUS Empty (UIDVALIDITY UIDNEXT)")
            r.close()
        with Server(saved) as srv:
            r = srv.raw(login=("test", "test"))
            self.assertEqual(r.ok("STATUS Empty (UIDVALIDITY UIDNEXT)"), before)
            self.assertIn(b"MESSAGES 0", r.ok("STATUS Empty (MESSAGES)"))
            r.close()

    def test_rename_inbox_into_its_own_level(self):
        # RFC 3501 6.3.5 allows it: INBOX's messages move, its inferiors stay
        with Server(fixture("basic.mbox")) as srv:
            r = srv.raw(login=("test", "test"))
            r.ok("RENAME INBOX INBOX/old")
            self.assertIn(b"MESSAGES 6", r.ok("STATUS INBOX/old (MESSAGES)"))
            self.assertIn(b"MESSAGES 0", r.ok("STATUS INBOX (MESSAGES)"))
            r.close()



class ReviewSave(TempDir):
    """Round trips through --save found wrong by the second review."""

    def test_a_message_with_its_own_flag_headers_round_trips(self):
        saved = os.path.join(self.dir, "saved")
        msg = (b"Subject: appended\r\nStatus: RO\r\nX-Status: FD\r\nX-Keywords: junk\r\n"
               b"X-IMAPbase: 999 5000\r\nX-UID: 77\r\n\r\nhi\r\n")
        with Server("--save", saved, fixture("basic.mbox")) as srv:
            r = srv.raw(login=("test", "test"))
            r.ok("CREATE Box")
            self.assertTrue(literal_append(r, "Box", msg)[1].startswith(b"OK"))
            literal_append(r, "INBOX", msg)
            before = [r.ok("STATUS %s (UIDVALIDITY UIDNEXT MESSAGES)" % b) for b in ("Box", "INBOX")]
            r.close()
        with Server(saved) as srv:
            r = srv.raw(login=("test", "test"))
            after = [r.ok("STATUS %s (UIDVALIDITY UIDNEXT MESSAGES)" % b) for b in ("Box", "INBOX")]
            self.assertEqual(after, before)
            r.ok("EXAMINE Box")
            u = r.ok("FETCH 1 (FLAGS BODY.PEEK[])")
            self.assertIn(b"FLAGS (\\Recent)", u)
            self.assertIn(b"{%d}\r\n" % len(msg) + msg, u)
            r.close()

    def test_save_removes_what_is_gone_and_keeps_the_rest(self):
        saved = os.path.join(self.dir, "saved")
        with Server("--save", saved, fixture("basic.mbox")) as srv:
            r = srv.raw(login=("test", "test"))
            r.ok("CREATE Gone")
            r.ok("CREATE Old")
            srv.proc.send_signal(signal.SIGUSR1)
            deadline = time.monotonic() + 5
            while not os.path.exists(os.path.join(saved, "Old.mbox")) and time.monotonic() < deadline:
                time.sleep(0.05)
            r.ok("DELETE Gone")
            r.ok("RENAME Old New")
            r.close()
        files = sorted(os.listdir(saved))
        self.assertEqual(files, ["INBOX.mbox", "New.mbox"])

    def test_names_that_could_not_be_saved_are_refused(self):
        with Server(fixture("basic.mbox")) as srv:
            r = srv.raw(login=("test", "test"))
            for name in (".hidden", "A/..", "A/.x", "a//b", "/a"):
                u, t = r.cmd('CREATE "%s"' % name)
                self.assertTrue(t.startswith(b"NO [CANNOT]"), (name, t))
            r.ok("CREATE A")
            self.assertTrue(r.cmd("RENAME A .A")[1].startswith(b"NO [CANNOT]"))
            r.close()

    def test_nul_in_a_header_keeps_the_literal_honest(self):
        path = write_mbox(self.dir, "nul.mbox", b"From a Mon Nov 23 09:00:00 2026\nSubject: a\x00b\n\nx\n")
        with Server(path) as srv:
            r = srv.raw(login=("test", "test"))
            r.ok("SELECT INBOX")
            u = r.ok("FETCH 1 ENVELOPE")            # Raw follows the literal: lengths must agree
            self.assertIn(b"{3}\r\na b", u)
            r.ok("NOOP")
            r.close()

if __name__ == "__main__":
    unittest.main()
