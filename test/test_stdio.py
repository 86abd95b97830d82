"""--stdio: one session on the process's stdin and stdout, as a mail client's tunnel runs it
(Python's own tunnel client imaplib.IMAP4_stream, and raw pipes): the first user, the
transcript and the SIGHUP/SIGUSR1 reports on stderr so the protocol stream stays clean,
--save at the end, and a session waiting on a full pipe.  Fixture facts come from
imapref.read_mbox, never hard-coded sizes.
"""
import array
import fcntl
import imaplib
import os
import select
import shlex
import signal
import tempfile
import termios
import time
import unittest

import imapref
import wire
from wire import (PipeClient, ServerCase, codes, exists, fetches, fixture, flagset, lower,
                  read_line, wait_until)

BASIC = fixture("basic.mbox")


def cpu_seconds(pid):
    """utime + stime of process pid, in seconds (all its threads, from /proc/PID/stat)."""
    with open("/proc/%d/stat" % pid, "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2:].split()   # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Stdio(ServerCase):
    def test_imaplib_stream_tunnel(self):
        """Python's real tunnel client, as mutt's `tunnel` or mbsync's `Tunnel` would run it."""
        err = tempfile.NamedTemporaryFile(prefix="imapmem-stderr-")
        self.addCleanup(err.close)
        command = "%s --stdio %s 2>%s" % (shlex.quote(wire.BIN), shlex.quote(BASIC),
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
            self.assertNoSanitizerReport(f.read())

    def test_raw_pipes_logout(self):
        p = self.spawn("--stdio", "--uidvalidity", "7", BASIC)
        c = PipeClient(p)
        greeting = c.readline()         # no ready line: the greeting comes first
        self.assertRegex(greeting, rb"^\* PREAUTH \[CAPABILITY IMAP4rev1[ \]]")
        u = c.ok("SELECT INBOX")
        self.assertEqual(exists(u), len(imapref.read_mbox(BASIC)))
        self.assertEqual(codes(u)["UIDVALIDITY"], [7])
        f = fetches(c.ok("FETCH 2 (UID FLAGS RFC822.SIZE)"))
        m2 = imapref.read_mbox(BASIC)[1]
        self.assertEqual(f[2]["RFC822.SIZE"], m2.size)
        self.assertEqual(flagset(f[2]["FLAGS"]) - {"\\recent"},
                         lower(m2.flags_without_recent()))
        u, t = c.cmd("LOGOUT")
        self.assertTrue(t.startswith(b"OK"), t)
        self.assertRegex(u, rb"^\* BYE")
        self.assertEqual(p.wait(10), 0)
        self.assertEqual(os.read(c.fd, 100), b"")
        self.assertNoSanitizerReport(p.err())

    def test_raw_pipes_eof_ends_session(self):
        p = self.spawn("--stdio", BASIC)
        c = PipeClient(p)
        self.assertTrue(c.readline().startswith(b"* PREAUTH"))
        c.ok("NOOP")
        p.stdin.close()                 # the tunnel's client went away
        self.assertEqual(p.wait(10), 0)
        self.assertNoSanitizerReport(p.err())

    def test_stdio_first_user_and_trace_on_stderr(self):
        p = self.spawn("--stdio", "--trace", "-u", "bob:pw", BASIC)
        c = PipeClient(p)
        self.assertTrue(c.readline().startswith(b"* PREAUTH"))
        u = c.ok("SELECT INBOX")         # BASIC went to the first user, bob
        self.assertEqual(exists(u), len(imapref.read_mbox(BASIC)))
        c.cmd("LOGOUT")
        self.assertEqual(p.wait(10), 0)
        err = p.err()
        self.assertRegex(err, r"(?m)^imapmem\[1\] C: p1 SELECT INBOX$")    # stdout stays clean
        self.assertRegex(err, r"(?m)^imapmem\[1\] S: p1 OK")
        self.assertEqual(c.buf, b"")

    def test_stdio_save_at_end(self):
        d = self.tempdir()
        p = self.spawn("--stdio", "--save", d, BASIC)
        c = PipeClient(p)
        c.readline()
        c.ok("SELECT INBOX")
        c.ok("UID STORE 4 +FLAGS (\\Flagged $FromStdio)")
        c.cmd("LOGOUT")
        self.assertEqual(p.wait(10), 0, p.err())
        path = os.path.join(d, "INBOX.mbox")
        self.assertTrue(os.path.isfile(path), os.listdir(d))
        s = self.start(d)
        r = self.raw(s)
        r.ok("SELECT INBOX")
        f = fetches(r.ok("UID FETCH 4 (FLAGS)"))
        self.assertLessEqual({"\\flagged", "$fromstdio"}, flagset(f[4]["FLAGS"]))

    def test_stdio_reports_go_to_stderr(self):
        d = self.tempdir()
        p = self.spawn("--stdio", "--save", d, BASIC)
        stderr = p.err

        fd, buf, seen = p.stdout.fileno(), bytearray(), []

        def until_tagged(tag):
            while True:
                line = read_line(fd, buf)
                self.assertTrue(line, "no reply to %s; have %r" % (tag, seen))
                seen.append(line)
                if line.startswith(tag + b" "):
                    return line

        greeting = read_line(fd, buf)
        seen.append(greeting)
        self.assertTrue(greeting.startswith(b"* PREAUTH"), greeting)
        p.send_signal(signal.SIGHUP)
        self.assertTrue(wait_until(lambda: "imapmem: reset\n" in stderr()), stderr())
        p.stdin.write(b"a1 NOOP\r\n")
        p.stdin.flush()
        self.assertTrue(until_tagged(b"a1").startswith(b"a1 OK"), seen)
        p.send_signal(signal.SIGUSR1)
        self.assertTrue(wait_until(lambda: "imapmem: saved %s\n" % d in stderr()), stderr())
        self.assertTrue(os.path.isfile(os.path.join(d, "INBOX.mbox")), os.listdir(d))
        p.stdin.write(b"a2 NOOP\r\na3 LOGOUT\r\n")
        p.stdin.flush()
        self.assertTrue(until_tagged(b"a2").startswith(b"a2 OK"), seen)
        self.assertTrue(until_tagged(b"a3").startswith(b"a3 OK"), seen)
        self.assertEqual(p.wait(10), 0, stderr())
        rest = p.stdout.read()
        seen.append(bytes(buf) + rest)
        out = b"".join(seen)
        self.assertNotIn(b"imapmem:", out)            # the protocol stream stays clean
        self.assertEqual(bytes(buf) + rest, b"")
        self.assertEqual(stderr(), "imapmem: reset\nimapmem: saved %s\n" % d)

    def test_woken_session_waiting_to_write_does_not_spin(self):
        """A session waiting for room on a full output pipe, then woken (SIGHUP resets its
        mailbox), waits without using the CPU."""
        p = self.spawn("--stdio", BASIC)
        out, buf = p.stdout.fileno(), bytearray()
        self.assertTrue(read_line(out, buf).startswith(b"* PREAUTH"))
        inp = p.stdin.fileno()
        os.write(inp, b"s SELECT INBOX\r\n")
        os.set_blocking(inp, False)
        # Fill both pipes: the server writes FETCH answers nobody reads until stdout is
        # full, then stops reading commands until stdin is full too. Full: stdin takes no
        # more and what waits in stdout stays the same for a while.
        deadline = time.time() + 20
        n, last, steady = 0, -1, 0
        while steady < 5:
            if time.time() > deadline:
                self.fail("the pipes did not fill (%d commands sent)" % n)
            stdin_full = False
            try:
                for _ in range(1000):
                    os.write(inp, b"f%d FETCH 1:* BODY[]\r\n" % (n + 1))
                    n += 1
            except BlockingIOError:
                stdin_full = True
            queued = array.array("i", [0])
            fcntl.ioctl(out, termios.FIONREAD, queued)
            steady = steady + 1 if stdin_full and queued[0] == last and last > 0 else 0
            last = queued[0]
            time.sleep(0.05)
        self.assertIsNone(p.poll())
        p.send_signal(signal.SIGHUP)          # wakes the session: its mailbox is reset
        time.sleep(0.3)                       # let the wake-up arrive
        cpu0, t0 = cpu_seconds(p.pid), time.time()
        time.sleep(1.5)
        used, wall = cpu_seconds(p.pid) - cpu0, time.time() - t0
        self.assertLess(used, 0.3, "imapmem used %.2f s of CPU in %.2f s while its session "
                        "waited for room to write" % (used, wall))
        # and the wake-up was real: once the output is read, the session says BYE (its
        # selected mailbox was reset) and ends
        data, deadline = bytes(buf), time.time() + 20
        while b"* BYE" not in data and time.time() < deadline:
            if select.select([out], [], [], 1)[0]:
                chunk = os.read(out, 1 << 20)
                if not chunk:
                    break
                data = data[-100:] + chunk
        self.assertIn(b"* BYE", data)


if __name__ == "__main__":
    unittest.main()
