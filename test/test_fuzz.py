"""A bounded, seeded fuzz of the command parser through the wire.

Random commands built from IMAP words, and some random bytes, go to the server (run under
ASan+UBSan by make test); afterwards the server must still serve a normal client, and
wire.ServerCase fails the test on any sanitizer report.
"""
import random
import socket
import unittest

from wire import ServerCase, fixture

WORDS = [b"FETCH", b"UID", b"STORE", b"SEARCH", b"SORT", b"THREAD", b"REFERENCES",
         b"ORDEREDSUBJECT", b"(REVERSE SUBJECT DATE)", b"RETURN", b"SELECT", b"INBOX", b"1:*", b"*", b"(", b")",
         b"[", b"]", b"<", b">", b"BODY", b"BODY.PEEK[", b"HEADER.FIELDS", b"(FROM)", b"\"", b"\\",
         b"{5}", b"{0}", b"{3+}", b"1", b"2.1", b"MIME", b"TEXT", b"NOT", b"OR", b"ALL", b"FLAGS",
         b"+FLAGS", b"(\\Seen)", b"CHARSET", b"UTF-8", b"LIST", b"\"\"", b"%", b"APPEND", b"COPY",
         b"MOVE", b"EXPUNGE", b"IDLE", b"DONE", b"RENAME", b"CREATE", b"DELETE", b"a/b", b"STATUS",
         b"(MESSAGES UNSEEN)", b"SINCE", b"1-Jan-2020", b"LARGER", b"4294967295", b"0", b"-1",
         b"\x00", b"\xff", b"BODYSTRUCTURE", b"ENVELOPE", b"RFC822", b"AUTHENTICATE", b"PLAIN",
         b"NOOP", b"CLOSE", b"EXAMINE", b"UNSELECT", b"HEADER", b"1.2.3", b"<0.10>", b"BODY[1]",
         b"BODY[]<5.1>", b"BODY[2.HEADER]", b"(", b"((", b"))", b"UNDELETED", b"HEADER X-A b"]


class Fuzz(ServerCase):
    def test_random_commands_do_not_break_the_server(self):
        rnd = random.Random(20261125)
        srv = self.start(fixture("mime", "corpus.mbox"))
        for _ in range(12):
            s = socket.create_connection((srv.host, srv.port), timeout=5)
            s.settimeout(0.2)
            s.sendall(b"a LOGIN test test\r\nb SELECT INBOX\r\n")
            for i in range(40):
                words = [rnd.choice(WORDS) for _ in range(rnd.randint(1, 8))]
                line = b"t%d " % i + b" ".join(words)
                if rnd.random() < 0.1:
                    line = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 40)))
                try:
                    s.sendall(line + b"\r\n")
                    s.recv(1 << 20)
                except socket.timeout:
                    pass
                except OSError:
                    break
            s.close()
        c = srv.imap()
        typ, data = c.select("INBOX")
        self.assertEqual(typ, "OK")
        typ, data = c.fetch("1:*", "(UID)")
        self.assertEqual(typ, "OK")
        c.logout()


if __name__ == "__main__":
    unittest.main()
