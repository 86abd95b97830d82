"""Saving and resetting the state: --save DIR (on SIGTERM, on SIGUSR1) and reloading what it
wrote, byte for byte, with flags, keywords, UIDs, UIDVALIDITY, INTERNALDATE and the
subscriptions; what SIGUSR1 and SIGHUP say when done; SIGHUP (reset to the fixtures).
(--save at the end of --stdio is in test_stdio.py.)  Fixture facts come from
imapref.read_mbox, never hard-coded sizes.
"""
import os
import random
import shutil
import signal
import time
import unittest

import imapref
from imapref import NEWMSG
from wire import (Raw, ServerCase, codes, exists, fetches, fixture, flagset, imap_date_time,
                  lower, name_of, parse, read_line, responses, wait_until)

BASIC = fixture("basic.mbox")
TREE = fixture("tree")


def snapshot(host, port, user="test", password="test"):
    """{mailbox: None for \\Noselect, else (uidvalidity, {uid: (flags, internaldate, bytes)})}
    read over IMAP with EXAMINE, so that reading changes nothing.  Flags are lower-case
    and without \\Recent; internaldate is seconds since the epoch."""
    r = Raw(host, port)
    try:
        r.ok("LOGIN %s %s" % (user, password))
        state = {}
        for resp in responses(r.ok('LIST "" "*"'), "LIST"):
            name = name_of(resp[3])
            if "\\noselect" in {str(a).lower() for a in resp[1]}:
                state[name] = None
                continue
            u = r.ok('EXAMINE "%s"' % name)
            uidvalidity = codes(u)["UIDVALIDITY"][0]
            msgs = {}
            if exists(u):
                f = fetches(r.ok("UID FETCH 1:* (UID FLAGS INTERNALDATE BODY.PEEK[])"))
                for d in f.values():
                    msgs[d["UID"]] = (flagset(d["FLAGS"]) - {"\\recent"},
                                      imap_date_time(d["INTERNALDATE"].decode()),
                                      d["BODY[]"])
            state[name] = (uidvalidity, msgs)
        r.cmd("LOGOUT")
        return state
    finally:
        r.close()


class Save(ServerCase):
    def assertSameState(self, before, after, uidvalidity=True):
        self.assertEqual(sorted(before), sorted(after), "mailboxes")
        for box in before:
            if before[box] is None:
                self.assertIsNone(after[box], "%s should be \\Noselect" % box)
                continue
            self.assertIsNotNone(after[box], "%s became \\Noselect" % box)
            (uv0, m0), (uv1, m1) = before[box], after[box]
            if uidvalidity and m0:   # an empty mailbox has no message to carry X-IMAPbase
                self.assertEqual(uv0, uv1, "UIDVALIDITY of %s" % box)
            self.assertEqual(sorted(m0), sorted(m1), "UIDs of %s" % box)
            for uid in m0:
                f0, d0, b0 = m0[uid]
                f1, d1, b1 = m1[uid]
                self.assertEqual(f0, f1, "flags of %s uid %d" % (box, uid))
                self.assertEqual(d0, d1, "INTERNALDATE of %s uid %d" % (box, uid))
                self.assertEqual(b0, b1, "bytes of %s uid %d" % (box, uid))

    def change_tree(self, s):
        """Change a TREE server the ways a client would: flags, keywords, expunge (a UID
        gap), APPEND with a date and tricky From lines, a new hierarchy, a copy."""
        r = self.raw(s)
        r.ok("SELECT INBOX")
        r.ok("UID STORE 1 +FLAGS (\\Flagged \\Answered $Custom)")
        r.ok("UID STORE 2 -FLAGS (\\Seen)")
        r.ok("UID STORE 2 +FLAGS (otherkw)")
        u, t = r.append("INBOX", NEWMSG, '(\\Draft appkw) "01-Feb-2026 10:00:00 +0100"', plus=True)
        self.assertOK(t)
        r.ok("SELECT Work/Projects")
        r.ok("UID STORE 1 +FLAGS (\\Deleted)")
        r.ok("EXPUNGE")
        r.ok("CREATE New/Sub")
        r.ok("COPY 1 New/Sub")
        r.ok("SELECT Lists/ietf")
        r.ok("STORE 1:* +FLAGS (listkw)")
        r.cmd("LOGOUT")

    def test_save_on_sigterm_and_reload(self):
        d = self.tempdir()
        s = self.start("--save", d, TREE, uidvalidity=12345)
        self.change_tree(s)
        before = snapshot(s.host, s.port)
        rc = s.stop()
        self.assertEqual(rc, 0)
        for name in ("INBOX.mbox", "Sent.mbox", "Drafts.mbox", "Lists.mbox", "Lists/ietf.mbox",
                     "Work/Old.mbox", "Work/Projects.mbox", "New/Sub.mbox"):
            self.assertTrue(os.path.isfile(os.path.join(d, name)), "%s missing" % name)
        self.assertTrue(os.path.isdir(os.path.join(d, "Work")))
        self.assertFalse(os.path.exists(os.path.join(d, "Work.mbox")), "Work is \\Noselect")
        with open(os.path.join(d, "INBOX.mbox"), "rb") as f:
            inbox = f.read()
        self.assertTrue(inbox.startswith(b"From "), inbox[:100])
        self.assertNotIn(b"\r\n", inbox)                       # LF line endings
        self.assertRegex(inbox, rb"(?m)^X-IMAPbase: 12345 \d+( .*)?$")   # (+ keywords, as Dovecot)
        self.assertRegex(inbox, rb"(?m)^X-UID: 3$")
        self.assertRegex(inbox, rb"(?m)^X-Keywords: .*\$Custom")
        self.assertIn(b"\n>From the start of a line", inbox)   # mboxrd quoting
        self.assertIn(b"\n>>From quoted once already.", inbox)
        self.assertIn(b"\n>From after a blank line", inbox)
        # the reload: X-IMAPbase wins over --uidvalidity
        s2 = self.start(d, uidvalidity=999)
        after = snapshot(s2.host, s2.port)
        self.assertSameState(before, after)
        self.assertEqual(sorted(after["Work/Projects"][1]), [2])   # the gap is kept
        self.assertEqual(after["INBOX"][0], 12345)

    def test_every_appended_message_reloads_byte_for_byte(self):
        """A property test: random messages a client could APPEND (lines starting "From "
        and ">From ", no final line break, bare CR and LF, CR before CRLF, long lines, 8-bit
        bytes) come back after --save and a reload exactly, with flags, keywords, UIDs,
        UIDVALIDITY and INTERNALDATE."""
        rng = random.Random(2026)
        pieces = [b"From ", b">From ", b">>From x", b"\r\n", b"\n", b"\r", b"\r\r\n", b" ",
                  b"\t", b"Subject: x", b"\xe9\xff\x80", b"X-Imapmem-Eol: lf", b"Status: RO",
                  b"x" * 1200, b"--", b"=?", b"\r\n\r\n", b"\n\n", b"From: a@b"]
        msgs = []
        for i in range(60):
            m = b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 30)))
            if rng.random() < 0.3:
                m = b"Message-ID: <p%d@x>\r\n\r\n" % i + m
            msgs.append(m.replace(b"\0", b" ") or b"x")
        d = self.tempdir()
        s = self.start("--save", d, uidvalidity=777)
        r = self.raw(s)
        for i, m in enumerate(msgs):
            flags = ["\\Seen", "\\Flagged $kw%d" % (i % 3), "", "\\Draft \\Answered"][i % 4]
            u, t = r.append("INBOX", m, '(%s) "%02d-Mar-2026 1%d:0%d:%02d %s0%d00"'
                            % (flags, i % 28 + 1, i % 10, i % 10, i % 60, "+-"[i % 2], i % 10),
                            plus=True)
            self.assertOK(t)
        r.ok("SELECT INBOX")
        r.ok("UID STORE 3 +FLAGS (\\Deleted)")
        r.ok("EXPUNGE")                          # a UID gap
        before = r.ok("UID FETCH 1:* (FLAGS INTERNALDATE BODY.PEEK[] RFC822.SIZE)")
        r.cmd("LOGOUT")
        rc = s.stop()
        self.assertEqual(rc, 0)
        s2 = self.start(d, uidvalidity=999)
        r2 = self.raw(s2)
        u = r2.ok("SELECT INBOX")
        self.assertEqual(codes(u)["UIDVALIDITY"], [777])
        self.assertEqual(codes(u)["UIDNEXT"], [len(msgs) + 1])
        after = r2.ok("UID FETCH 1:* (FLAGS INTERNALDATE BODY.PEEK[] RFC822.SIZE)")
        fb, fa = fetches(before), fetches(after)
        self.assertEqual(len(fb), len(msgs) - 1)
        for seq in fb:
            b, a = fb[seq], fa[seq]
            self.assertEqual(a["UID"], b["UID"])
            self.assertEqual(a["BODY[]"], b["BODY[]"], "UID %s" % b["UID"])
            self.assertEqual(a["RFC822.SIZE"], b["RFC822.SIZE"])
            self.assertEqual(a["INTERNALDATE"], b["INTERNALDATE"])
            self.assertEqual(flagset(a["FLAGS"]) - {"\\recent"},
                             flagset(b["FLAGS"]) - {"\\recent"})
        for seq, b in fb.items():                     # and what was appended, exactly
            uid = b["UID"]
            self.assertEqual(b["BODY[]"], msgs[uid - 1], "UID %d" % uid)

    def lsub(self, s):
        r = self.raw(s)
        names = sorted(bytes(x[3]).decode() for x in parse(r.ok('LSUB "" *')))
        r.cmd("LOGOUT")
        return names

    def test_subscriptions_load_and_save_as_dovecot_writes_them(self):
        """A fixture folder's .subscriptions (Dovecot's mbox subscription file) gives LSUB
        and survives --save and a reload, so clients showing only subscribed folders see
        them."""
        d = self.tempdir()
        shutil.copytree(TREE, os.path.join(d, "tree"))
        with open(os.path.join(d, "tree", ".subscriptions"), "wb") as f:
            f.write(b"V\t2\n\nINBOX\nWork\tProjects\nLists\tietf\n")   # Dovecot 2.3's bytes
        s = self.start(os.path.join(d, "tree"))
        self.assertEqual(self.lsub(s), ["INBOX", "Lists/ietf", "Work/Projects"])
        plain = self.tempdir()                       # a plain list, one name a line
        shutil.copytree(TREE, os.path.join(plain, "tree"))
        with open(os.path.join(plain, "tree", ".subscriptions"), "wb") as f:
            f.write(b"Sent\r\nWork/Old\n")
        self.assertEqual(self.lsub(self.start(os.path.join(plain, "tree"))), ["Sent", "Work/Old"])
        out = self.tempdir()
        s = self.start("--save", out, os.path.join(d, "tree"))
        r = self.raw(s)
        r.ok("SUBSCRIBE Sent")
        r.ok("UNSUBSCRIBE INBOX")
        r.cmd("LOGOUT")
        self.assertEqual(s.stop(), 0)
        with open(os.path.join(out, ".subscriptions"), "rb") as f:
            self.assertEqual(sorted(f.read().split(b"\n")),
                             sorted(b"V\t2\n\nWork\tProjects\nLists\tietf\nSent\n".split(b"\n")))
        self.assertEqual(self.lsub(self.start(out)), ["Lists/ietf", "Sent", "Work/Projects"])
        s = self.start("--save", out, out)           # nothing subscribed: no file left
        r = self.raw(s)
        for n in ("Lists/ietf", "Sent", "Work/Projects"):
            r.ok("UNSUBSCRIBE " + n)
        r.cmd("LOGOUT")
        self.assertEqual(s.stop(), 0)
        self.assertFalse(os.path.exists(os.path.join(out, ".subscriptions")))

    def test_save_on_sigusr1_while_running(self):
        d = self.tempdir()
        s = self.start("--save", d, BASIC, uidvalidity=4242)
        r = self.raw(s)
        r.ok("SELECT INBOX")
        r.ok("UID STORE 3 +FLAGS (\\Flagged $Usr1)")
        r.ok("UID STORE 5 -FLAGS (\\Deleted)")
        path = os.path.join(d, "INBOX.mbox")
        self.assertFalse(os.path.exists(path))
        s.proc.send_signal(signal.SIGUSR1)
        self.wait_for_file(path, b"$Usr1")
        r.ok("NOOP")                    # still serving, session intact
        self.assertIsNone(s.proc.poll())
        before = snapshot(s.host, s.port)
        s2 = self.start(d, uidvalidity=1)
        self.assertSameState(before, snapshot(s2.host, s2.port))
        # a second SIGUSR1 writes the newer state
        r.ok("UID STORE 1 +FLAGS ($Second)")
        s.proc.send_signal(signal.SIGUSR1)
        self.wait_for_file(path, b"$Second")

    def wait_for_file(self, path, needle, limit=5.0):
        deadline = time.time() + limit
        last = None
        while time.time() < deadline:
            if os.path.exists(path):
                with open(path, "rb") as f:
                    data = f.read()
                if needle in data and data == last:   # complete: unchanged for a moment
                    return data
                last = data
            time.sleep(0.1)
        self.fail("%s does not contain %r after %.0f s" % (path, needle, limit))

    def test_save_several_users(self):
        d = self.tempdir()
        s = self.start("-u", "alice:a:" + BASIC, "-u", "bob:b:" + TREE, "--save", d)
        r = self.raw(s, login=("bob", "b"))
        r.ok("SELECT Work/Old")
        r.ok("STORE 1 +FLAGS (bobkw)")
        r.close()
        rc = s.stop()
        self.assertEqual(rc, 0)
        self.assertTrue(os.path.isfile(os.path.join(d, "alice", "INBOX.mbox")), os.listdir(d))
        self.assertTrue(os.path.isfile(os.path.join(d, "bob", "Work", "Old.mbox")))
        with open(os.path.join(d, "bob", "Work", "Old.mbox"), "rb") as f:
            self.assertIn(b"bobkw", f.read())

    def test_save_keeps_uidvalidity_of_an_empty_mailbox(self):
        saved = os.path.join(self.tempdir(), "saved")
        s = self.start("--save", saved, BASIC)
        r = self.raw(s)
        r.ok("CREATE Empty")
        r.append("Empty", b"Subject: x\r\n\r\nx\r\n", plus=True)
        r.ok("SELECT Empty")
        r.ok("STORE 1 +FLAGS (\\Deleted)")
        r.ok("EXPUNGE")
        before = r.ok("STATUS Empty (UIDVALIDITY UIDNEXT)")
        r.close()
        s.finish()
        r = self.raw(self.start(saved))
        self.assertEqual(r.ok("STATUS Empty (UIDVALIDITY UIDNEXT)"), before)
        self.assertIn(b"MESSAGES 0", r.ok("STATUS Empty (MESSAGES)"))

    def test_a_message_with_its_own_flag_headers_round_trips(self):
        saved = os.path.join(self.tempdir(), "saved")
        msg = (b"Subject: appended\r\nStatus: RO\r\nX-Status: FD\r\nX-Keywords: junk\r\n"
               b"X-IMAPbase: 999 5000\r\nX-UID: 77\r\n\r\nhi\r\n")
        s = self.start("--save", saved, BASIC)
        r = self.raw(s)
        r.ok("CREATE Box")
        self.assertTrue(r.append("Box", msg, plus=True)[1].startswith(b"OK"))
        r.append("INBOX", msg, plus=True)
        before = [r.ok("STATUS %s (UIDVALIDITY UIDNEXT MESSAGES)" % b) for b in ("Box", "INBOX")]
        r.close()
        s.finish()
        r = self.raw(self.start(saved))
        after = [r.ok("STATUS %s (UIDVALIDITY UIDNEXT MESSAGES)" % b) for b in ("Box", "INBOX")]
        self.assertEqual(after, before)
        r.ok("EXAMINE Box")
        u = r.ok("FETCH 1 (FLAGS BODY.PEEK[])")
        self.assertIn(b"FLAGS (\\Recent)", u)
        self.assertIn(b"{%d}\r\n" % len(msg) + msg, u)

    def test_save_removes_what_is_gone_and_keeps_the_rest(self):
        saved = os.path.join(self.tempdir(), "saved")
        s = self.start("--save", saved, BASIC)
        r = self.raw(s)
        r.ok("CREATE Gone")
        r.ok("CREATE Old")
        s.proc.send_signal(signal.SIGUSR1)
        wait_until(lambda: os.path.exists(os.path.join(saved, "Old.mbox")), 5, 0.05)
        r.ok("DELETE Gone")
        r.ok("RENAME Old New")
        r.close()
        s.finish()
        files = sorted(os.listdir(saved))
        self.assertEqual(files, ["INBOX.mbox", "New.mbox"])

    def test_sigusr1_says_saved_after_the_files_exist(self):
        d = self.tempdir()
        s = self.start("--save", d, BASIC)
        r = self.raw(s)
        r.ok("SELECT INBOX")
        r.ok("UID STORE 4 +FLAGS ($SavedNow)")
        s.proc.send_signal(signal.SIGUSR1)
        buf = bytearray()
        self.assertEqual(read_line(s.proc.stdout.fileno(), buf),
                         b"imapmem: saved %s\n" % d.encode())
        path = os.path.join(d, "INBOX.mbox")
        self.assertTrue(os.path.isfile(path), os.listdir(d))
        with open(path, "rb") as f:
            self.assertIn(b"$SavedNow", f.read())
        r.ok("NOOP")

    def test_sigusr1_without_save_says_so_and_serves_on(self):
        s = self.start(BASIC)
        r = self.raw(s)
        s.proc.send_signal(signal.SIGUSR1)
        got = wait_until(lambda: "--save" in s.stderr())
        self.assertTrue(got, "nothing on stderr after SIGUSR1: %r" % s.stderr())
        err = s.stderr()
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertRegex(err, r"^imapmem: .*--save.*\n$")
        r.ok("NOOP")                    # still serving, session intact
        self.assertEqual(exists(r.ok("SELECT INBOX")), len(imapref.read_mbox(BASIC)))
        self.assertIsNone(s.proc.poll())
        buf = bytearray()
        self.assertEqual(read_line(s.proc.stdout.fileno(), buf, 0.3), b"")   # stdout: nothing


class Sighup(ServerCase):
    def test_sighup_resets(self):
        s = self.start(BASIC)
        msgs = imapref.read_mbox(BASIC)
        a = self.raw(s)
        a.ok("SELECT INBOX")
        a.ok("STORE 1:* +FLAGS (\\Deleted)")
        a.ok("EXPUNGE")
        a.ok("CREATE Gone/Soon")
        self.assertOK(a.append("INBOX", NEWMSG, plus=True)[1])
        b = self.raw(s)                 # logged in, nothing selected: stays
        s.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 5
        while True:
            c = Raw(s.host, s.port)
            c.ok("LOGIN test test")
            u = c.ok("SELECT INBOX")
            if exists(u) == len(msgs) or time.time() > deadline:
                break
            c.close()
            time.sleep(0.1)
        self.addCleanup(c.close)
        self.assertEqual(exists(u), len(msgs))
        f = fetches(c.ok("UID FETCH 1:* (UID FLAGS RFC822.SIZE)"))
        self.assertEqual(sorted(x["UID"] for x in f.values()), list(range(1, len(msgs) + 1)))
        for m in msgs:
            self.assertEqual(flagset(f[m.seq]["FLAGS"]) - {"\\recent"},
                             lower(m.flags_without_recent()), m.seq)
            self.assertEqual(f[m.seq]["RFC822.SIZE"], m.size)
        names = [name_of(x[3]) for x in responses(c.ok('LIST "" "*"'), "LIST")]
        self.assertEqual(names, ["INBOX"])
        b.ok("NOOP")
        self.assertIsNone(s.proc.poll())
        # the selected session was told (BYE) and closed, without having to ask
        data, closed = a.read_to_eof(3)
        self.assertIn(b"* BYE", data)
        self.assertTrue(closed)

    def test_sighup_says_reset_when_done(self):
        s = self.start(BASIC)
        n = len(imapref.read_mbox(BASIC))
        r = self.raw(s)
        r.ok("CREATE Extra")
        self.assertOK(r.append("INBOX", b"Subject: x\r\n\r\nbody\r\n", plus=True)[1])
        self.assertEqual(self.count(r, "INBOX"), n + 1)
        buf = bytearray()
        s.proc.send_signal(signal.SIGHUP)
        self.assertEqual(read_line(s.proc.stdout.fileno(), buf), b"imapmem: reset\n")
        # the line comes after the reset: the state is the fixture's at once
        self.assertEqual(self.count(r, "INBOX"), n)
        u, t = r.cmd('STATUS "Extra" (MESSAGES)')
        self.assertTrue(t.startswith(b"NO"), t)
        s.proc.send_signal(signal.SIGHUP)            # and again
        self.assertEqual(read_line(s.proc.stdout.fileno(), buf), b"imapmem: reset\n")
        self.assertEqual(bytes(buf), b"")


if __name__ == "__main__":
    unittest.main()
