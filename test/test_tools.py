"""Wire tests for the program side of issue 5: the features that make imapmem a tool for
other people's test suites.

--stdio (with Python's own tunnel client imaplib.IMAP4_stream, and with raw pipes),
--save DIR (on SIGTERM, on SIGUSR1, at the end of --stdio) and reloading what it wrote,
SIGHUP (reset to the fixtures), --exit-with-parent, --capability, --trace and --fault.
Each is checked through the real program, as a test in another language would use it.
Fixture facts come from imapref.read_mbox, never hard-coded sizes.

imapserver.BIN is read at call time (test/run.py sets it per server binary).
"""
import base64
import ctypes
import imaplib
import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import imapref
import imapserver
from imapserver import Raw, Server, fixture, run

BASIC = fixture("basic.mbox")
TREE = fixture("tree")
READY = re.compile(rb"^imapmem: listening on (\[[^\]]+\]|[^:]+):(\d+)\n$")
SANITIZER_MARKERS = ("Sanitizer", "runtime error:")

NEWMSG = (b"From: Bob <bob@example.org>\r\n"
          b"To: test@example.com\r\n"
          b"Subject: appended by the test\r\n"
          b"\r\n"
          b"From the start of a line, needs quoting in mbox.\r\n"
          b">From quoted once already.\r\n"
          b"\r\n"
          b"From after a blank line: looks like a separator.\r\n"
          b"Body marker QWXZ-LITERAL-BODY.\r\n")


def exists(untagged):
    vals = [x[0] for x in imapref.responses(untagged, "EXISTS")]
    return vals[-1] if vals else None


def read_until_eof(r, limit=5.0):
    """Everything r still receives until the server closes (or limit seconds pass).
    Returns (data, closed)."""
    data, r.buf = r.buf, b""
    deadline = time.time() + limit
    while True:
        left = deadline - time.time()
        if left <= 0:
            return data, False
        r.sock.settimeout(left)
        try:
            chunk = r.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return data, True
        except socket.timeout:
            return data, False
        if not chunk:
            return data, True
        data += chunk


def no_sanitizer_report(testcase, err):
    for marker in SANITIZER_MARKERS:
        testcase.assertNotIn(marker, err, "sanitizer report from imapmem:\n" + err[-4000:])


def snapshot(host, port, user="test", password="test"):
    """{mailbox: None for \\Noselect, else (uidvalidity, {uid: (flags, internaldate, bytes)})}
    read over IMAP with EXAMINE, so that reading changes nothing.  Flags are lower-case
    and without \\Recent; internaldate is seconds since the epoch."""
    r = Raw(host, port)
    try:
        r.ok("LOGIN %s %s" % (user, password))
        state = {}
        for resp in imapref.responses(r.ok('LIST "" "*"'), "LIST"):
            name = imapref.name_of(resp[3])
            if "\\noselect" in {str(a).lower() for a in resp[1]}:
                state[name] = None
                continue
            u = r.ok('EXAMINE "%s"' % name)
            uidvalidity = imapref.codes(u)["UIDVALIDITY"][0]
            msgs = {}
            if exists(u):
                f = imapref.fetches(r.ok("UID FETCH 1:* (UID FLAGS INTERNALDATE BODY.PEEK[])"))
                for d in f.values():
                    msgs[d["UID"]] = (imapref.flagset(d["FLAGS"]) - {"\\recent"},
                                      imapref.imap_date_time(d["INTERNALDATE"].decode()),
                                      d["BODY[]"])
            state[name] = (uidvalidity, msgs)
        r.cmd("LOGOUT")
        return state
    finally:
        r.close()


class Base(imapserver.ServerCase):
    def tempdir(self):
        d = tempfile.mkdtemp(prefix="imapmem-tools-")
        self.addCleanup(shutil.rmtree, d, True)
        return d

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


class PipeClient(imapserver.Raw):
    """imapserver.Raw on a process's stdin/stdout pipes instead of a socket. The caller
    reads the greeting (there is no ready line: it comes first)."""

    def __init__(self, proc, timeout=10):
        self.proc = proc
        self.fd = proc.stdout.fileno()
        self.buf = b""
        self.timeout = timeout
        self.n = 0

    def _fill(self):
        ready, _, _ = select.select([self.fd], [], [], self.timeout)
        if not ready:
            raise TimeoutError("no data from imapmem; have %r" % self.buf[:200])
        chunk = os.read(self.fd, 65536)
        if not chunk:
            raise EOFError("imapmem closed stdout; have %r" % self.buf[:200])
        self.buf += chunk

    def send(self, data):
        self.proc.stdin.write(data.encode() if isinstance(data, str) else data)
        self.proc.stdin.flush()

    def tag(self):
        self.n += 1
        return "p%d" % self.n


# ---------------------------------------------------------------------------------------
class Stdio(Base):
    def test_imaplib_stream_tunnel(self):
        """Python's real tunnel client, as mutt's `tunnel` or mbsync's `Tunnel` would run it."""
        err = tempfile.NamedTemporaryFile(prefix="imapmem-stderr-")
        self.addCleanup(err.close)
        command = "%s --stdio %s 2>%s" % (shlex.quote(imapserver.BIN), shlex.quote(BASIC),
                                          shlex.quote(err.name))
        c = imaplib.IMAP4_stream(command)
        try:
            self.assertTrue(c.welcome.startswith(b"* PREAUTH"), c.welcome)
            self.assertEqual(c.state, "AUTH")
            self.assertIn("IMAP4REV1", c.capabilities)
            typ, data = c.select("INBOX")
            self.assertEqual(typ, "OK", data)
            msgs = imapref.read_mbox(BASIC)
            self.assertEqual(int(data[0]), len(msgs))
            typ, data = c.fetch("1:*", "(BODY.PEEK[])")
            self.assertEqual(typ, "OK")
            bodies = [d[1] for d in data if isinstance(d, tuple)]
            self.assertEqual(bodies, [m.raw for m in msgs])
            typ, data = c.uid("SEARCH", None, "ALL")
            self.assertEqual(typ, "OK")
            self.assertEqual(data[0].split(), [str(i).encode() for i in range(1, len(msgs) + 1)])
        finally:
            typ, _ = c.logout()        # imaplib waits for the process here
        self.assertEqual(typ, "BYE")
        self.assertEqual(c.process.wait(10), 0)
        with open(err.name, encoding="utf-8", errors="replace") as f:
            no_sanitizer_report(self, f.read())

    def _popen(self, *args):
        errf = tempfile.TemporaryFile()
        self.addCleanup(errf.close)
        p = subprocess.Popen([imapserver.BIN] + list(args), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=errf)

        def cleanup():
            if p.poll() is None:
                p.kill()
            p.wait()
            for f in (p.stdin, p.stdout):
                try:
                    f.close()
                except OSError:
                    pass
        self.addCleanup(cleanup)
        return p, errf

    def _stderr(self, errf):
        errf.seek(0)
        return errf.read().decode("utf-8", "replace")

    def test_raw_pipes_logout(self):
        p, errf = self._popen("--stdio", "--uidvalidity", "7", BASIC)
        c = PipeClient(p)
        greeting = c.readline()         # no ready line: the greeting comes first
        self.assertRegex(greeting, rb"^\* PREAUTH \[CAPABILITY IMAP4rev1[ \]]")
        u = c.ok("SELECT INBOX")
        self.assertEqual(exists(u), len(imapref.read_mbox(BASIC)))
        self.assertEqual(imapref.codes(u)["UIDVALIDITY"], [7])
        f = imapref.fetches(c.ok("FETCH 2 (UID FLAGS RFC822.SIZE)"))
        m2 = imapref.read_mbox(BASIC)[1]
        self.assertEqual(f[2]["RFC822.SIZE"], m2.size)
        self.assertEqual(imapref.flagset(f[2]["FLAGS"]) - {"\\recent"},
                         imapref.lower(m2.flags_without_recent()))
        u, t = c.cmd("LOGOUT")
        self.assertTrue(t.startswith(b"OK"), t)
        self.assertRegex(u, rb"^\* BYE")
        self.assertEqual(p.wait(10), 0)
        self.assertEqual(os.read(c.fd, 100), b"")
        no_sanitizer_report(self, self._stderr(errf))

    def test_raw_pipes_eof_ends_session(self):
        p, errf = self._popen("--stdio", BASIC)
        c = PipeClient(p)
        self.assertTrue(c.readline().startswith(b"* PREAUTH"))
        c.ok("NOOP")
        p.stdin.close()                 # the tunnel's client went away
        self.assertEqual(p.wait(10), 0)
        no_sanitizer_report(self, self._stderr(errf))

    def test_stdio_first_user_and_trace_on_stderr(self):
        p, errf = self._popen("--stdio", "--trace", "-u", "bob:pw", BASIC)
        c = PipeClient(p)
        self.assertTrue(c.readline().startswith(b"* PREAUTH"))
        u = c.ok("SELECT INBOX")         # BASIC went to the first user, bob
        self.assertEqual(exists(u), len(imapref.read_mbox(BASIC)))
        c.cmd("LOGOUT")
        self.assertEqual(p.wait(10), 0)
        err = self._stderr(errf)
        self.assertRegex(err, r"(?m)^imapmem\[1\] C: p1 SELECT INBOX$")    # stdout stays clean
        self.assertRegex(err, r"(?m)^imapmem\[1\] S: p1 OK")
        self.assertEqual(c.buf, b"")

    def test_stdio_save_at_end(self):
        d = self.tempdir()
        p, errf = self._popen("--stdio", "--save", d, BASIC)
        c = PipeClient(p)
        c.readline()
        c.ok("SELECT INBOX")
        c.ok("UID STORE 4 +FLAGS (\\Flagged $FromStdio)")
        c.cmd("LOGOUT")
        self.assertEqual(p.wait(10), 0, self._stderr(errf))
        path = os.path.join(d, "INBOX.mbox")
        self.assertTrue(os.path.isfile(path), os.listdir(d))
        s = self.start(d)
        r = self.raw(s)
        r.ok("SELECT INBOX")
        f = imapref.fetches(r.ok("UID FETCH 4 (FLAGS)"))
        self.assertLessEqual({"\\flagged", "$fromstdio"}, imapref.flagset(f[4]["FLAGS"]))


# ---------------------------------------------------------------------------------------
class Save(Base):
    def change_tree(self, s):
        """Change a TREE server the ways a client would: flags, keywords, expunge (a UID
        gap), APPEND with a date and tricky From lines, a new hierarchy, a copy."""
        r = self.raw(s)
        r.ok("SELECT INBOX")
        r.ok("UID STORE 1 +FLAGS (\\Flagged \\Answered $Custom)")
        r.ok("UID STORE 2 -FLAGS (\\Seen)")
        r.ok("UID STORE 2 +FLAGS (otherkw)")
        r.ok('APPEND INBOX (\\Draft appkw) "01-Feb-2026 10:00:00 +0100" {%d+}\r\n%s'
             % (len(NEWMSG), NEWMSG.decode()))
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
        s = Server("--save", d, TREE, uidvalidity=12345)
        try:
            self.change_tree(s)
            before = snapshot(s.host, s.port)
        finally:
            rc = s.stop()
            s.stderr_file.close()
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
        import random
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
        s = Server("--save", d, uidvalidity=777)
        try:
            r = self.raw(s)
            for i, m in enumerate(msgs):
                flags = ["\\Seen", "\\Flagged $kw%d" % (i % 3), "", "\\Draft \\Answered"][i % 4]
                r.ok(('APPEND INBOX (%s) "%02d-Mar-2026 1%d:0%d:%02d %s0%d00" {%d+}\r\n'
                      % (flags, i % 28 + 1, i % 10, i % 10, i % 60, "+-"[i % 2], i % 10,
                         len(m))).encode() + m)
            r.ok("SELECT INBOX")
            r.ok("UID STORE 3 +FLAGS (\\Deleted)")
            r.ok("EXPUNGE")                          # a UID gap
            before = r.ok("UID FETCH 1:* (FLAGS INTERNALDATE BODY.PEEK[] RFC822.SIZE)")
            r.cmd("LOGOUT")
        finally:
            rc = s.stop()
            s.stderr_file.close()
        self.assertEqual(rc, 0)
        s2 = self.start(d, uidvalidity=999)
        r2 = self.raw(s2)
        u = r2.ok("SELECT INBOX")
        self.assertEqual(imapref.codes(u)["UIDVALIDITY"], [777])
        self.assertEqual(imapref.codes(u)["UIDNEXT"], [len(msgs) + 1])
        after = r2.ok("UID FETCH 1:* (FLAGS INTERNALDATE BODY.PEEK[] RFC822.SIZE)")
        fb, fa = imapref.fetches(before), imapref.fetches(after)
        self.assertEqual(len(fb), len(msgs) - 1)
        for seq in fb:
            b, a = fb[seq], fa[seq]
            self.assertEqual(a["UID"], b["UID"])
            self.assertEqual(a["BODY[]"], b["BODY[]"], "UID %s" % b["UID"])
            self.assertEqual(a["RFC822.SIZE"], b["RFC822.SIZE"])
            self.assertEqual(a["INTERNALDATE"], b["INTERNALDATE"])
            self.assertEqual(imapref.flagset(a["FLAGS"]) - {"\\recent"},
                             imapref.flagset(b["FLAGS"]) - {"\\recent"})
        for seq, b in fb.items():                     # and what was appended, exactly
            uid = b["UID"]
            self.assertEqual(b["BODY[]"], msgs[uid - 1], "UID %d" % uid)

    def lsub(self, s):
        r = self.raw(s)
        names = sorted(bytes(x[3]).decode() for x in imapref.parse(r.ok('LSUB "" *')))
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
        s = Server("--save", out, os.path.join(d, "tree"))
        try:
            r = s.raw(login=("test", "test"))
            r.ok("SUBSCRIBE Sent")
            r.ok("UNSUBSCRIBE INBOX")
            r.cmd("LOGOUT")
        finally:
            self.assertEqual(s.stop(), 0)
            s.stderr_file.close()
        with open(os.path.join(out, ".subscriptions"), "rb") as f:
            self.assertEqual(sorted(f.read().split(b"\n")),
                             sorted(b"V\t2\n\nWork\tProjects\nLists\tietf\nSent\n".split(b"\n")))
        self.assertEqual(self.lsub(self.start(out)), ["Lists/ietf", "Sent", "Work/Projects"])
        s = Server("--save", out, out)                # nothing subscribed: no file left
        try:
            r = s.raw(login=("test", "test"))
            for n in ("Lists/ietf", "Sent", "Work/Projects"):
                r.ok("UNSUBSCRIBE " + n)
            r.cmd("LOGOUT")
        finally:
            self.assertEqual(s.stop(), 0)
            s.stderr_file.close()
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
        s = Server("-u", "alice:a:" + BASIC, "-u", "bob:b:" + TREE, "--save", d)
        try:
            r = s.raw(login=("bob", "b"))
            r.ok("SELECT Work/Old")
            r.ok("STORE 1 +FLAGS (bobkw)")
            r.close()
        finally:
            rc = s.stop()
            s.stderr_file.close()
        self.assertEqual(rc, 0)
        self.assertTrue(os.path.isfile(os.path.join(d, "alice", "INBOX.mbox")), os.listdir(d))
        self.assertTrue(os.path.isfile(os.path.join(d, "bob", "Work", "Old.mbox")))
        with open(os.path.join(d, "bob", "Work", "Old.mbox"), "rb") as f:
            self.assertIn(b"bobkw", f.read())


# ---------------------------------------------------------------------------------------
class Sighup(Base):
    def test_sighup_resets(self):
        s = self.start(BASIC)
        msgs = imapref.read_mbox(BASIC)
        a = self.raw(s)
        a.ok("SELECT INBOX")
        a.ok("STORE 1:* +FLAGS (\\Deleted)")
        a.ok("EXPUNGE")
        a.ok("CREATE Gone/Soon")
        a.ok("APPEND INBOX {%d+}\r\n%s" % (len(NEWMSG), NEWMSG.decode()))
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
        f = imapref.fetches(c.ok("UID FETCH 1:* (UID FLAGS RFC822.SIZE)"))
        self.assertEqual(sorted(x["UID"] for x in f.values()), list(range(1, len(msgs) + 1)))
        for m in msgs:
            self.assertEqual(imapref.flagset(f[m.seq]["FLAGS"]) - {"\\recent"},
                             imapref.lower(m.flags_without_recent()), m.seq)
            self.assertEqual(f[m.seq]["RFC822.SIZE"], m.size)
        names = [imapref.name_of(x[3]) for x in imapref.responses(c.ok('LIST "" "*"'), "LIST")]
        self.assertEqual(names, ["INBOX"])
        b.ok("NOOP")
        self.assertIsNone(s.proc.poll())
        # the selected session was told (BYE) and closed, without having to ask
        data, closed = read_until_eof(a, 3)
        self.assertIn(b"* BYE", data)
        self.assertTrue(closed)


# ---------------------------------------------------------------------------------------
PR_SET_CHILD_SUBREAPER = 36


def proc_gone(pid):
    """True once pid has exited (gone, or a zombie nobody reaped)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


class ExitWithParent(Base):
    def spawn_via_shell(self):
        """imapmem started by an intermediate `sh -c` parent; returns (sh, pid, port)."""
        errf = tempfile.TemporaryFile()
        self.addCleanup(errf.close)
        script = '"$0" --exit-with-parent -p 0 --uidvalidity 1 "$1" & echo "pid $!"; wait'
        sh = subprocess.Popen(["sh", "-c", script, imapserver.BIN, BASIC],
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errf)
        self.addCleanup(lambda: (sh.poll() is None and sh.kill(), sh.wait(), sh.stdout.close()))
        pid = port = None
        fd = sh.stdout.fileno()
        buf = b""
        deadline = time.time() + 10
        while (pid is None or port is None) and time.time() < deadline:
            ready, _, _ = select.select([fd], [], [], max(0, deadline - time.time()))
            if not ready:
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
            for line in buf.split(b"\n")[:-1]:
                m = READY.match(line + b"\n")
                if m:
                    port = int(m.group(2))
                elif line.startswith(b"pid "):
                    pid = int(line[4:])
        self.assertIsNotNone(pid, buf)
        self.assertIsNotNone(port, buf)
        self.addCleanup(lambda: proc_gone(pid) or os.kill(pid, signal.SIGKILL))
        return sh, pid, port, errf

    def test_parent_dies(self):
        sh, pid, port, errf = self.spawn_via_shell()
        r = Raw("127.0.0.1", port)
        self.addCleanup(r.close)
        r.ok("LOGIN test test")
        sh.kill()                       # SIGKILL: the parent cannot pass anything on
        sh.wait()
        deadline = time.time() + 5
        while not proc_gone(pid) and time.time() < deadline:
            time.sleep(0.05)
        self.assertTrue(proc_gone(pid), "imapmem outlived its parent")
        data, closed = read_until_eof(r, 2)
        self.assertTrue(closed)
        self.assertIn(b"* BYE", data)   # it stops as on SIGTERM
        errf.seek(0)
        no_sanitizer_report(self, errf.read().decode("utf-8", "replace"))

    def test_parent_dies_exit_status(self):
        """With this test process as subreaper, the orphan comes to us: it exits 0."""
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            self.skipTest("no PR_SET_CHILD_SUBREAPER")
        self.addCleanup(libc.prctl, PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        sh, pid, port, errf = self.spawn_via_shell()
        sh.kill()
        sh.wait()
        deadline = time.time() + 5
        status = None
        while time.time() < deadline:
            try:
                wpid, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                self.fail("imapmem was not reparented to this process")
            if wpid == pid:
                break
            status = None
            time.sleep(0.05)
        if status is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            self.fail("imapmem outlived its parent (reparented to a subreaper)")
        self.assertTrue(os.WIFEXITED(status), status)
        self.assertEqual(os.WEXITSTATUS(status), 0)

    def test_stdin_closes(self):
        errf = tempfile.TemporaryFile()
        self.addCleanup(errf.close)
        p = subprocess.Popen([imapserver.BIN, "--exit-with-parent", "-p", "0", "--uidvalidity",
                              "1", BASIC], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=errf)
        self.addCleanup(lambda: (p.poll() is None and p.kill(), p.wait(), p.stdout.close()))
        m = READY.match(p.stdout.readline())
        self.assertTrue(m)
        r = Raw("127.0.0.1", int(m.group(2)))
        self.addCleanup(r.close)
        r.ok("LOGIN test test")
        r.ok("SELECT INBOX")
        time.sleep(0.3)
        self.assertIsNone(p.poll())     # an open stdin keeps it running
        p.stdin.close()
        self.assertEqual(p.wait(5), 0)
        data, closed = read_until_eof(r, 2)
        self.assertTrue(closed)
        self.assertIn(b"* BYE", data)
        errf.seek(0)
        no_sanitizer_report(self, errf.read().decode("utf-8", "replace"))


# ---------------------------------------------------------------------------------------
def caps(untagged):
    line = [l for l in untagged.split(b"\r\n") if l.startswith(b"* CAPABILITY ")]
    return set(line[0].decode().split()[2:]) if line else set()


def greeting_caps(greeting):
    m = re.search(rb"\[CAPABILITY ([^\]]*)\]", greeting)
    return set(m.group(1).decode().split()) if m else set()


class Capability(Base):
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
        t = r.cmd("APPEND Target {%d+}\r\n%s" % (len(NEWMSG), NEWMSG.decode()))[1]
        self.assertTrue(t.startswith(b"OK") and b"APPENDUID" not in t, t)
        r.ok("SELECT INBOX")
        self.assertTrue(r.cmd("UID EXPUNGE 1")[1].startswith(b"BAD"))
        r.ok("MOVE 1 Target")

    def test_unknown_capability_exits_2(self):
        p = run(["-p", "0", "--capability", "-XYZZY", BASIC])
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(b"XYZZY", p.stderr)
        self.assertEqual(p.stdout, b"")


# ---------------------------------------------------------------------------------------
class Trace(Base):
    def test_transcript(self):
        s = Server("--trace", "-u", "alice:Pw-s3cret", BASIC)
        m1 = imapref.read_mbox(BASIC)[0]
        b64 = base64.b64encode(b"\0alice\0Pw-s3cret").decode()
        try:
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
        finally:
            rc = s.stop()
            err = s.stderr()
            s.stderr_file.close()
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


# ---------------------------------------------------------------------------------------
class Faults(Base):
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

    def test_drop_on_command(self):
        s = self.start("--fault", "NOOP=DROP", BASIC)
        r = self.raw(s)
        r.send("t9 NOOP\r\n")
        data, closed = read_until_eof(r, 5)
        self.assertTrue(closed)
        self.assertEqual(data, b"")

    def test_drop_after_n_commands(self):
        s = self.start("--fault", "#2=DROP", BASIC)
        for _ in range(2):              # every session
            r = Raw(s.host, s.port)
            self.addCleanup(r.close)
            r.ok("LOGIN test test")     # command 1
            r.send("t9 NOOP\r\n")       # command 2
            data, closed = read_until_eof(r, 5)
            self.assertTrue(closed)
            self.assertNotIn(b"t9 ", data)
        # imaplib: its CAPABILITY is command 1, so LOGIN is dropped
        c = s.imap(login=False)
        with self.assertRaises(imaplib.IMAP4.abort):
            c.login("test", "test")
        c.shutdown()

    def test_delay_every_response(self):
        s = self.start("--fault", "delay=300", BASIC)
        r = self.raw(s)
        t0 = time.time()
        r.ok("NOOP")
        self.assertGreaterEqual(time.time() - t0, 0.28)

    def test_delay_one_command(self):
        s = self.start("--fault", "NOOP=DELAY 300", BASIC)
        r = self.raw(s)
        t0 = time.time()
        r.ok("NOOP")
        self.assertGreaterEqual(time.time() - t0, 0.28)
        t0 = time.time()
        r.ok("CAPABILITY")
        self.assertLess(time.time() - t0, 0.25)

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
        s = self.start("--fault", "NOOP=BYE bye", BASIC)
        r = self.raw(s)
        r.send("t9 NOOP\r\n")
        data, closed = read_until_eof(r, 5)
        self.assertTrue(closed)
        self.assertEqual(data, b"* BYE bye\r\n")

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
        self.assertEqual(imapref.codes(u)["UIDVALIDITY"], [1])
        b = self.raw(s)
        b.ok("NOOP")                    # b has nothing selected: INBOX changes
        c = self.raw(s)
        u = c.ok("SELECT INBOX")
        self.assertNotEqual(imapref.codes(u)["UIDVALIDITY"], [1])
        self.assertEqual(exists(u), len(imapref.read_mbox(BASIC)))
        f = imapref.fetches(c.ok("UID FETCH 1:* (UID)"))
        self.assertEqual(len(f), len(imapref.read_mbox(BASIC)))
        # a, which had INBOX selected, is told at once (it is not asking anything)
        data, closed = read_until_eof(a, 3)
        self.assertIn(b"* BYE", data)
        self.assertTrue(closed)

    def test_uidvalidity_renumbers_old_uids_away(self):
        """A client that ignores UIDVALIDITY must not get the right messages by luck:
        after the fault every old UID names another message, or none."""
        s = self.start("--fault", "NOOP:1=UIDVALIDITY", BASIC)
        r = self.raw(s)
        r.ok("SELECT INBOX")
        before = {f["UID"]: f["BODY[HEADER.FIELDS (MESSAGE-ID)]"] for f in imapref.fetches(
            r.ok("FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")).values()}
        r.ok("UNSELECT")
        r.ok("NOOP")                     # the fault: INBOX gets new UIDs
        u = r.ok("SELECT INBOX")
        self.assertNotEqual(imapref.codes(u)["UIDVALIDITY"], [1])
        after = {f["UID"]: f["BODY[HEADER.FIELDS (MESSAGE-ID)]"] for f in imapref.fetches(
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
        v = imapref.codes(u)["UIDVALIDITY"]
        for _ in range(3):
            r.ok("NOOP")                 # spent: no more renumbering, no BYE
        self.assertEqual(imapref.codes(r.ok("SELECT INBOX"))["UIDVALIDITY"], v)
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
        s = Server("--trace", "--fault", "NOOP=DELAY 10", "--fault", "CHECK=ALERT look",
                   "--fault", "CAPABILITY=BYE gone", BASIC)
        try:
            r = s.raw(login=("test", "test"))
            r.ok("SELECT INBOX")
            r.ok("NOOP")
            r.ok("CHECK")
            r.send("t9 CAPABILITY\r\n")
            read_until_eof(r, 5)
            r.close()
        finally:
            s.stop()
            err = s.stderr()
            s.stderr_file.close()
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


if __name__ == "__main__":
    unittest.main()
