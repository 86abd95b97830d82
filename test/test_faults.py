"""The switches that make imapmem misbehave on purpose or show what it does, for testing
clients: --fault (NO, BAD, BYE, DROP, DELAY, ALERT, chunked output, a UIDVALIDITY change;
per command, after N commands, the first N times), --capability (a client's fallback when
an extension is off) and --trace (the transcript on stderr, secrets hidden).  Fixture
facts come from imapref.read_mbox, never hard-coded sizes.
"""
import base64
import imaplib
import re
import time
import unittest

import imapref
from imapref import NEWMSG
from wire import (ServerCase, codes, exists, fetches, fixture, responses, run,
                  status_parts)

BASIC = fixture("basic.mbox")


def seconds(r, command):
    """How long command takes to its tagged OK."""
    t0 = time.time()
    r.ok(command)
    return time.time() - t0

def caps(untagged):
    """The capabilities of the * CAPABILITY response in untagged (as sent)."""
    found = responses(untagged, "CAPABILITY")
    return {str(c) for c in found[0][1:]} if found else set()


def greeting_caps(greeting):
    """The capabilities of the greeting's [CAPABILITY ...] code (as sent)."""
    code = status_parts(greeting[2:])[1]
    return {str(c) for c in code[1:]} if code and code[0] == "CAPABILITY" else set()


class Capability(ServerCase):
    def test_move_off(self):
        s = self.start("--capability", "-MOVE", BASIC)
        r = self.raw(s)
        self.assertNotIn("MOVE", greeting_caps(r.greeting))
        self.assertIn("IMAP4rev1", greeting_caps(r.greeting))
        c = caps(r.ok("CAPABILITY"))
        self.assertNotIn("MOVE", c)
        self.assertIn("IDLE", c)
        r.ok("CREATE Target")
        r.ok("SELECT INBOX")
        self.assertTrue(r.cmd("MOVE 1 Target")[1].startswith(b"BAD"))
        self.assertTrue(r.cmd("UID MOVE 1 Target")[1].startswith(b"BAD"))
        # the client's fallback, COPY + EXPUNGE, works
        r.ok("COPY 1 Target")
        i = s.imap()
        self.assertNotIn("MOVE", i.capabilities)
        i.logout()

    def test_idle_off(self):
        s = self.start("--capability", "-IDLE", BASIC)
        r = self.raw(s)
        self.assertNotIn("IDLE", caps(r.ok("CAPABILITY")))
        r.ok("SELECT INBOX")
        u, t = r.cmd("IDLE")
        self.assertTrue(t.startswith(b"BAD"), (u, t))
        self.assertNotIn(b"+ ", u)
        r.ok("NOOP")

    def test_off_then_on_again(self):
        s = self.start("--capability", "-MOVE", "--capability", "+MOVE", "--capability",
                       "-UIDPLUS", BASIC)
        r = self.raw(s)
        c = caps(r.ok("CAPABILITY"))
        self.assertIn("MOVE", c)
        self.assertNotIn("UIDPLUS", c)
        r.ok("CREATE Target")
        t = r.append("Target", NEWMSG, plus=True)[1]
        self.assertTrue(t.startswith(b"OK") and b"APPENDUID" not in t, t)
        r.ok("SELECT INBOX")
        self.assertTrue(r.cmd("UID EXPUNGE 1")[1].startswith(b"BAD"))
        r.ok("MOVE 1 Target")

    def test_a_switch_that_pulls_another_says_so(self):
        """RFC 7162 3.2.3: QRESYNC needs CONDSTORE and ENABLE, so -CONDSTORE takes QRESYNC
        off too, and stderr names it; +QRESYNC brings CONDSTORE back; LITERAL- and LITERAL+
        exclude each other (RFC 7888 4)."""
        s = self.start("--capability", "-CONDSTORE", BASIC)
        c = caps(self.raw(s).ok("CAPABILITY"))
        self.assertNotIn("CONDSTORE", c)
        self.assertNotIn("QRESYNC", c)
        self.assertIn("ENABLE", c)
        err = s.stderr()
        self.assertIn("-CONDSTORE also switched off QRESYNC", err)
        self.assertNotIn("ENABLE", err)
        s = self.start("--capability", "-CONDSTORE", "--capability", "+QRESYNC",
                       "--capability", "+LITERAL-", BASIC)
        c = caps(self.raw(s).ok("CAPABILITY"))
        self.assertIn("CONDSTORE", c)
        self.assertIn("QRESYNC", c)
        self.assertIn("LITERAL-", c)
        self.assertNotIn("LITERAL+", c)
        err = s.stderr()
        self.assertIn("+QRESYNC also switched on CONDSTORE", err)
        self.assertIn("+LITERAL- also switched off LITERAL+", err)

    def test_append_extensions_switch_off_alone(self):
        """BINARY, MULTIAPPEND, CATENATE and APPENDLIMIT need nothing and pull nothing; the
        APPENDLIMIT=n word switches by its name, and the limit option keeps to it."""
        s = self.start("--capability", "-BINARY", "--capability", "-MULTIAPPEND",
                       "--capability", "-CATENATE", "--capability", "-APPENDLIMIT",
                       "--append-limit", "100", BASIC)
        r = self.raw(s)
        c = caps(r.ok("CAPABILITY"))
        for name in ("BINARY", "MULTIAPPEND", "CATENATE"):
            self.assertNotIn(name, c)
        self.assertFalse([w for w in c if w.startswith("APPENDLIMIT")], c)
        self.assertIn("UIDPLUS", c)
        self.assertEqual(s.stderr().strip(), "")
        r.ok("SELECT INBOX")
        for cmd in ("FETCH 1 BINARY.PEEK[1]", "STATUS INBOX (APPENDLIMIT)",
                    'APPEND INBOX CATENATE (URL "/INBOX/;UID=1")'):
            self.assertTrue(r.cmd(cmd)[1].startswith(b"BAD"), cmd)
        s = self.start("--capability", "-APPENDLIMIT", "--capability", "+APPENDLIMIT",
                       "--append-limit", "100", BASIC)
        self.assertIn("APPENDLIMIT=100", caps(self.raw(s).ok("CAPABILITY")))
        self.assertEqual(s.stderr().strip(), "")

    def test_unknown_capability_exits_2(self):
        p = run(["-p", "0", "--capability", "-XYZZY", BASIC])
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(b"XYZZY", p.stderr)
        self.assertEqual(p.stdout, b"")


class Trace(ServerCase):
    def test_transcript(self):
        s = self.start("--trace", "-u", "alice:Pw-s3cret", BASIC)
        m1 = imapref.read_mbox(BASIC)[0]
        b64 = base64.b64encode(b"\0alice\0Pw-s3cret").decode()
        r = s.raw(login=("alice", "Pw-s3cret"))                      # session 1
        r.ok("SELECT INBOX")
        r.send("t3 APPEND INBOX {%d}\r\n" % len(NEWMSG))           # synchronizing literal
        self.assertTrue(r.readline().startswith(b"+"))
        r.send(NEWMSG + b"\r\n")
        self.assertTrue(r.until_tagged("t3")[1].startswith(b"OK"))
        r.n = 3
        r.ok("FETCH 1 BODY[]")
        r.cmd("LOGOUT")
        r.close()
        r2 = s.raw()                                                # session 2
        r2.ok("AUTHENTICATE PLAIN " + b64)                           # SASL-IR
        r2.close()
        r3 = s.raw()                                                # session 3
        r3.send("a1 AUTHENTICATE PLAIN\r\n")
        self.assertTrue(r3.readline().startswith(b"+"))
        r3.send(b64 + "\r\n")
        self.assertTrue(r3.until_tagged("a1")[1].startswith(b"OK"))
        r3.close()
        i = s.imap("alice", "Pw-s3cret")                            # session 4: imaplib
        i.logout()
        rc = s.stop()
        err = s.stderr()
        self.assertEqual(rc, 0)
        lines = [l for l in err.split("\n") if l.startswith("imapmem[")]
        for l in lines:
            self.assertRegex(l, r"^imapmem\[\d+\] [CS*]: ")
            self.assertNotIn("\r", l)
        # events: every session's start and end
        self.assertRegex(lines[0], r"^imapmem\[1\] \*: connected from 127\.0\.0\.1:\d+$")
        self.assertIn("imapmem[1] *: disconnected: LOGOUT", lines)
        self.assertIn("imapmem[2] *: disconnected: the client closed the connection", lines)
        # a synchronizing literal: the command up to it, the server's "+", then the literal,
        # in the order they crossed the wire
        s1 = [l for l in lines if l.startswith("imapmem[1] ")]
        ann = s1.index("imapmem[1] C: t3 APPEND INBOX {%d}" % len(NEWMSG))
        self.assertRegex(s1[ann + 1], r"^imapmem\[1\] S: \+ ")
        self.assertEqual(s1[ann + 2], "imapmem[1] C: {%d bytes}" % len(NEWMSG))
        self.assertIn("imapmem[1] C: t1 LOGIN alice ***", lines)
        self.assertTrue(any(re.match(r"^imapmem\[1\] S: \* OK ", l) for l in lines), lines[:3])
        self.assertTrue(any(re.match(r"^imapmem\[1\] S: t1 OK", l) for l in lines))
        self.assertIn("imapmem[1] C: t2 SELECT INBOX", lines)
        self.assertTrue(any(re.match(r"^imapmem\[1\] S: \* 1 FETCH .*\{%d bytes\}" % m1.size, l)
                            for l in lines), lines)
        self.assertIn("imapmem[2] C: t1 AUTHENTICATE PLAIN ***", lines)
        self.assertTrue(any(l.startswith("imapmem[3] C: ") and "***" in l for l in lines))
        self.assertTrue(any(re.match(r"^imapmem\[4\] C: \S+ LOGIN alice \*\*\*$", l)
                            for l in lines), lines)
        self.assertNotIn("s3cret", err)
        self.assertNotIn(b64, err)
        self.assertNotIn("QWXZ-LITERAL-BODY", err)
        self.assertNotIn("It has been read and answered", err)

    def test_trace_survives_text_ending_in_braces(self):
        # a status line ending "{12}" was taken for a literal and the transcript stopped
        srv = self.start("--trace", "--fault", "NOOP=NO busy {12}", BASIC)
        r = self.raw(srv)
        r.send("t1 NOOP\r\n")
        self.assertEqual(r.readline(), b"t1 NO busy {12}\r\n")
        r.send("t2 LOGOUT\r\n")
        self.assertTrue(r.readline().startswith(b"* BYE"))
        r.close()
        time.sleep(0.2)
        err = srv.stderr()
        self.assertIn("S: t1 NO busy {12}", err)
        self.assertIn("S: t2 OK LOGOUT completed", err)


class Faults(ServerCase):
    def test_append_overquota(self):
        s = self.start("--fault", "APPEND=NO [OVERQUOTA] mailbox full", BASIC)
        c = s.imap()
        try:
            typ, data = c.append("INBOX", None, None, NEWMSG)
            self.assertEqual(typ, "NO")
            self.assertEqual(data[0], b"[OVERQUOTA] mailbox full")
            typ, data = c.select("INBOX")
            self.assertEqual(int(data[0]), len(imapref.read_mbox(BASIC)))
        finally:
            c.logout()

    def test_no_and_bad_with_text(self):
        s = self.start("--fault", "NOOP=NO nope", "--fault", "check=BAD not checking", BASIC)
        r = self.raw(s)
        self.assertEqual(r.cmd("NOOP")[1], b"NO nope")
        r.ok("SELECT INBOX")
        self.assertEqual(r.cmd("CHECK")[1], b"BAD not checking")
        r.ok("CAPABILITY")

    def test_two_word_command(self):
        s = self.start("--fault", "UID FETCH=NO not by uid", BASIC)
        r = self.raw(s)
        r.ok("SELECT INBOX")
        self.assertEqual(r.cmd("UID FETCH 1 (FLAGS)")[1], b"NO not by uid")
        r.ok("FETCH 1 (FLAGS)")

    def until_closed(self, r, line):
        """Send line; what the server sends until it closes the connection (it must)."""
        r.send(line)
        data, closed = r.read_to_eof(5)
        self.assertTrue(closed)
        return data

    def test_drop_on_command(self):
        r = self.raw(self.start("--fault", "NOOP=DROP", BASIC))
        self.assertEqual(self.until_closed(r, "t9 NOOP\r\n"), b"")

    def test_drop_after_n_commands(self):
        s = self.start("--fault", "#2=DROP", BASIC)
        for _ in range(2):              # every session
            r = self.raw(s)                                      # LOGIN: command 1
            self.assertNotIn(b"t9 ", self.until_closed(r, "t9 NOOP\r\n"))   # command 2
        # imaplib: its CAPABILITY is command 1, so LOGIN is dropped
        c = s.imap(login=False)
        with self.assertRaises(imaplib.IMAP4.abort):
            c.login("test", "test")
        c.shutdown()

    def test_delay_every_response(self):
        r = self.raw(self.start("--fault", "delay=300", BASIC))
        self.assertGreaterEqual(seconds(r, "NOOP"), 0.28)

    def test_delay_one_command(self):
        r = self.raw(self.start("--fault", "NOOP=DELAY 300", BASIC))
        self.assertGreaterEqual(seconds(r, "NOOP"), 0.28)
        self.assertLess(seconds(r, "CAPABILITY"), 0.25)

    def test_chunk_1(self):
        s = self.start("--fault", "chunk=1", BASIC)
        msgs = imapref.read_mbox(BASIC)
        c = s.imap()
        try:
            typ, data = c.select("INBOX")
            self.assertEqual(int(data[0]), len(msgs))
            typ, data = c.fetch("1:*", "(FLAGS BODY.PEEK[])")
            self.assertEqual(typ, "OK")
            bodies = [d[1] for d in data if isinstance(d, tuple)]
            self.assertEqual(bodies, [m.raw for m in msgs])
        finally:
            c.logout()
        r = self.raw(s)
        u = r.ok("SELECT INBOX")
        self.assertEqual(exists(u), len(msgs))

    def test_bye(self):
        r = self.raw(self.start("--fault", "NOOP=BYE bye", BASIC))
        self.assertEqual(self.until_closed(r, "t9 NOOP\r\n"), b"* BYE bye\r\n")

    def test_alert(self):
        s = self.start("--fault", "SELECT=ALERT hello", BASIC)
        c = s.imap()
        try:
            typ, data = c.select("INBOX")
            self.assertEqual(typ, "OK")
            # imaplib records the ALERT code (it keeps only a code's bracketed data, not
            # the text after it: [None] would mean no ALERT was seen)
            self.assertNotEqual(c.response("ALERT"), ("ALERT", [None]))
        finally:
            c.logout()
        r = self.raw(s)
        u = r.ok("SELECT INBOX")
        self.assertIn(b"* OK [ALERT] hello\r\n", u)
        self.assertEqual(exists(u), len(imapref.read_mbox(BASIC)))

    def test_every_command(self):
        s = self.start("--fault", "*=BAD broken", BASIC)
        r = self.raw(s, login=None)
        self.assertEqual(r.cmd("CAPABILITY")[1], b"BAD broken")
        self.assertEqual(r.cmd("LOGIN test test")[1], b"BAD broken")

    def test_uidvalidity_change(self):
        s = self.start("--fault", "NOOP=UIDVALIDITY", BASIC)
        a = self.raw(s)
        u = a.ok("SELECT INBOX")
        self.assertEqual(codes(u)["UIDVALIDITY"], [1])
        b = self.raw(s)
        b.ok("NOOP")                    # b has nothing selected: INBOX changes
        c = self.raw(s)
        u = c.ok("SELECT INBOX")
        self.assertNotEqual(codes(u)["UIDVALIDITY"], [1])
        self.assertEqual(exists(u), len(imapref.read_mbox(BASIC)))
        f = fetches(c.ok("UID FETCH 1:* (UID)"))
        self.assertEqual(len(f), len(imapref.read_mbox(BASIC)))
        # a, which had INBOX selected, is told at once (it is not asking anything)
        data, closed = a.read_to_eof(3)
        self.assertIn(b"* BYE", data)
        self.assertTrue(closed)

    def test_uidvalidity_renumbers_old_uids_away(self):
        """A client that ignores UIDVALIDITY must not get the right messages by luck:
        after the fault every old UID names another message, or none."""
        s = self.start("--fault", "NOOP:1=UIDVALIDITY", BASIC)
        r = self.raw(s)
        r.ok("SELECT INBOX")
        before = {f["UID"]: f["BODY[HEADER.FIELDS (MESSAGE-ID)]"] for f in fetches(
            r.ok("FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")).values()}
        r.ok("UNSELECT")
        r.ok("NOOP")                     # the fault: INBOX gets new UIDs
        u = r.ok("SELECT INBOX")
        self.assertNotEqual(codes(u)["UIDVALIDITY"], [1])
        after = {f["UID"]: f["BODY[HEADER.FIELDS (MESSAGE-ID)]"] for f in fetches(
            r.ok("FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")).values()}
        self.assertEqual(sorted(before.values()), sorted(after.values()))
        for uid, mid in before.items():
            self.assertNotEqual(after.get(uid), mid, "UID %d still names its old message" % uid)

    def test_count_fires_once(self):
        """WHEN:N fires on the first N matching commands only, across sessions: a client
        that reconnects after a UIDVALIDITY change can recover."""
        s = self.start("--fault", "NOOP:1=UIDVALIDITY", "--fault", "CHECK:2=NO not now", BASIC)
        r = self.raw(s)
        r.ok("NOOP")
        u = r.ok("SELECT INBOX")
        v = codes(u)["UIDVALIDITY"]
        for _ in range(3):
            r.ok("NOOP")                 # spent: no more renumbering, no BYE
        self.assertEqual(codes(r.ok("SELECT INBOX"))["UIDVALIDITY"], v)
        self.assertEqual(r.cmd("CHECK")[1], b"NO not now")
        r2 = self.raw(s)
        r2.ok("SELECT INBOX")
        self.assertEqual(r2.cmd("CHECK")[1], b"NO not now")
        r2.ok("CHECK")
        r.ok("CHECK")

    def test_plain_name_matches_the_uid_form(self):
        s = self.start("--fault", "FETCH=NO no fetching", "--fault", "UID STORE=NO by uid", BASIC)
        r = self.raw(s)
        r.ok("SELECT INBOX")
        self.assertEqual(r.cmd("FETCH 1 (FLAGS)")[1], b"NO no fetching")
        self.assertEqual(r.cmd("UID FETCH 1 (FLAGS)")[1], b"NO no fetching")
        self.assertEqual(r.cmd("uid store 1 +FLAGS (x)")[1], b"NO by uid")
        r.ok("STORE 1 +FLAGS (x)")       # "UID STORE" is the UID form only

    def test_drop_fires_for_uid_fetch(self):
        s = self.start("--fault", "FETCH=DROP", BASIC)
        c = s.imap()
        c.select("INBOX")
        with self.assertRaises(imaplib.IMAP4.abort):
            c.uid("FETCH", "1:*", "(FLAGS)")    # what most clients send
        c.shutdown()

    def test_unknown_command_in_a_fault_is_refused(self):
        for spec in ("xyz=NO", "uid  fetch=NO", "UID NOOP=NO", "FECTH=DROP", "NOOP:0=NO",
                     "NOOP:x=NO", ":1=NO"):
            p = run(["-p", "0", "--fault", spec, BASIC])
            self.assertEqual(p.returncode, 2, (spec, p.stderr))
            self.assertIn(b"imapmem: fault", p.stderr, spec)
        for spec in ("uid fetch=NO x", "fetch:3=DROP", "#4:1=BYE", "*:2=BAD x"):
            p = run(["-p", "0", "--fault", spec, "--help"])
            self.assertEqual(p.returncode, 0, (spec, p.stderr))
        s = self.start("--fault", "uid fetch=NO x", BASIC)   # case does not matter
        r = self.raw(s)
        r.ok("SELECT INBOX")
        self.assertEqual(r.cmd("UID FETCH 1 UID")[1], b"NO x")

    def test_fault_actions_are_in_the_transcript(self):
        s = self.start("--trace", "--fault", "NOOP=DELAY 10", "--fault", "CHECK=ALERT look",
                       "--fault", "CAPABILITY=BYE gone", BASIC)
        r = s.raw(login=("test", "test"))
        r.ok("SELECT INBOX")
        r.ok("NOOP")
        r.ok("CHECK")
        r.send("t9 CAPABILITY\r\n")
        r.read_to_eof(5)
        r.close()
        s.stop()
        err = s.stderr()
        self.assertIn("imapmem[1] *: fault NOOP: DELAY 10 ms", err)
        self.assertIn("imapmem[1] *: fault CHECK: ALERT", err)
        self.assertIn("imapmem[1] *: fault CAPABILITY: BYE", err)
        self.assertIn("imapmem[1] *: disconnected: a BYE fault", err)

    def test_malformed_fault_exits_2(self):
        for spec in ("NOOP=EXPLODE", "no-equals-sign", "delay=soon", "#x=DROP"):
            p = run(["-p", "0", "--fault", spec, BASIC])
            self.assertEqual(p.returncode, 2, (spec, p.stderr))
            self.assertEqual(p.stdout, b"", spec)
            self.assertTrue(p.stderr.startswith(b"imapmem: "), p.stderr)

    def test_uidvalidity_fault_before_login(self):
        # the fault needs a user; before LOGIN it used to crash the server
        s = self.start("--fault", "CAPABILITY=UIDVALIDITY", BASIC)
        r = self.raw(s, login=None)
        self.assertIn(b"* CAPABILITY", r.ok("CAPABILITY"))
        r.ok("LOGIN test test")


if __name__ == "__main__":
    unittest.main()
