"""Many TLS sessions at once (the TLS build, make TLS=openssl), meant above all for its
ThreadSanitizer twin, build/imapmem-tls-tsan (make test runs it there): each session's
handshake, reads and writes run in its own thread on one shared SSL_CTX, so this is where
a race between sessions, or between a session and the stopping server, would show.

  - test_concurrency.py's many clients on one mailbox (APPEND, COPY, EXPUNGE, STORE,
    FETCH, SEARCH, IDLE), every client over implicit TLS (RFC 8314);
  - handshakes at once: clients on the imaps port and through STARTTLS (RFC 9051 6.2.1)
    connect, log in and fetch together, beside a client that never handshakes;
  - plain and TLS sessions on one mailbox wake each other from IDLE;
  - the server stopped while sessions are mid-handshake, in IDLE over TLS, and
    mid-FETCH of a large message: BYE or a closed connection, exit status 0.

Against a build without TLS this file has one test, skipped.
"""
import socket
import threading
import time
import traceback
import unittest

import imapref
import wire
from wire import ServerCase, exists, fixture

BASIC = fixture("basic.mbox")

if wire.has_tls():
    wire.OVER_TLS = True      # every Server listens on an imaps port; raw() connects there
    from test_concurrency import ConcurrencyTest  # noqa: F401  (runs here again, over TLS)

    class TLSSessionsAtOnce(ServerCase):
        def setUp(self):
            self.s = self.start(BASIC)
            self.errors = []
            self.lock = threading.Lock()

        def starttls_raw(self):
            """A Raw client on the plain port that has done STARTTLS, verifying."""
            r = wire.Raw(self.s.host, self.s.port)
            self.addCleanup(r.close)
            r.ok("STARTTLS")
            r.sock = self.s.tls.wrap_socket(r.sock, server_hostname=self.s.host)
            return r

        def imaps_raw(self):
            r = wire.Raw(self.s.host, self.s.imaps_port, ssl_context=self.s.tls)
            self.addCleanup(r.close)
            return r

        def in_threads(self, fn, n):
            threads = [threading.Thread(target=self.guarded, args=(fn, i), daemon=True)
                       for i in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            self.assertFalse([t for t in threads if t.is_alive()], "clients still running")
            self.assertEqual(self.errors, [], "\n".join(self.errors))

        def guarded(self, fn, i):
            try:
                fn(i)
            except BaseException:
                with self.lock:
                    self.errors.append(traceback.format_exc())

        def test_handshakes_at_once_on_both_ports(self):
            want = imapref.read_mbox(BASIC)
            stalled = socket.create_connection((self.s.host, self.s.imaps_port), timeout=10)
            self.addCleanup(stalled.close)      # connects and never speaks TLS

            def client(i):
                r = self.starttls_raw() if i % 2 else self.imaps_raw()
                r.ok("LOGIN test test")
                assert exists(r.ok("SELECT INBOX")) == len(want)
                r.send("f UID FETCH 1 BODY.PEEK[]\r\n")
                line = r.readline()
                n = int(line[line.rindex(b"{") + 1:-3])
                assert r.read_exact(n) == want[0].raw, i
                r.read_until(lambda ln: ln.startswith(b"f OK"), 30)
                r.ok("LOGOUT")

            self.in_threads(client, 12)

        def test_plain_and_tls_sessions_wake_each_other(self):
            plain = wire.Raw(self.s.host, self.s.port)
            self.addCleanup(plain.close)
            plain.ok("LOGIN test test")
            tls = self.imaps_raw()
            tls.ok("LOGIN test test")
            for idler, writer in ((tls, plain), (plain, tls)):
                idler.ok("SELECT INBOX")
                idler.send("i IDLE\r\n")
                self.assertTrue(idler.readline().startswith(b"+"))
                writer.append("INBOX", b"Subject: wake\r\n\r\nup\r\n")
                idler.read_until(lambda ln: ln.endswith(b"EXISTS\r\n"), 20)
                idler.send("DONE\r\n")
                idler.read_until(lambda ln: ln.startswith(b"i OK"), 20)

        def test_stop_during_handshakes_idle_and_a_large_fetch(self):
            big = b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 4000   # 4 MB
            r = self.imaps_raw()
            r.ok("LOGIN test test")
            r.append("INBOX", big)
            idlers = []
            for _ in range(3):
                c = self.imaps_raw()
                c.ok("LOGIN test test")
                c.ok("SELECT INBOX")
                c.send("i IDLE\r\n")
                c.readline()
                idlers.append(c)
            half = []                           # mid-handshake: the hello, never the rest
            for _ in range(3):
                sock = socket.create_connection((self.s.host, self.s.imaps_port), timeout=10)
                self.addCleanup(sock.close)
                sock.sendall(b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00")
                half.append(sock)
            r.ok("SELECT INBOX")
            r.send("f FETCH * BODY.PEEK[]\r\n")   # never read: the server's writes wait
            time.sleep(0.3)
            t0 = time.monotonic()
            self.assertEqual(self.s.stop(timeout=30), 0, self.s.stderr()[-3000:])
            self.assertLess(time.monotonic() - t0, 20)
            for c in idlers:
                data, closed = c.read_to_eof(10)
                self.assertIn(b"* BYE", data)
else:
    class TLSConcurrency(unittest.TestCase):
        @unittest.skip("this imapmem was built without TLS (make TLS=openssl)")
        def test_tls_concurrency(self):
            pass


if __name__ == "__main__":
    unittest.main()
