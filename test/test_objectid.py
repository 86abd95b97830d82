"""OBJECTID (RFC 8474): MAILBOXID, EMAILID and THREADID, by RFC section, with the RFC's own
examples.  imapmem's EMAILID is a hash of the message's bytes (stable through COPY, MOVE
and --save/reload), its MAILBOXID is kept through RENAME and saved, and THREADID is NIL
(5.2 allows it: threads are not computed).
"""
import re
import unittest

from wire import ServerCase, fixture, responses, status_parts

BASIC = fixture("basic.mbox")
OBJECTID = re.compile(rb"^[A-Za-z][A-Za-z0-9_-]{0,254}$")   # 7 objectid, 8.1 a letter first


def mailboxid_code(tagged):
    """The objectid in [MAILBOXID (id)] of a response line."""
    m = re.search(rb"\[MAILBOXID \(([^)]*)\)\]", tagged)
    return m and m.group(1)


def status_mailboxid(r, box):
    u = r.ok("STATUS %s (MAILBOXID)" % box)
    m = re.search(rb"MAILBOXID \(([^)]*)\)", u)
    assert m, u
    return m.group(1)


def emailids(r, seqset="1:*", cmd="FETCH"):
    u = r.ok("%s %s (EMAILID THREADID)" % (cmd, seqset))
    return re.findall(rb"EMAILID \(([^)]*)\)", u), re.findall(rb"THREADID (\S+?)[ )]", u)


class Capability(ServerCase):
    def test_advertised_and_switchable(self):
        r = self.raw(self.start(BASIC))
        self.assertIn(b" OBJECTID", r.ok("CAPABILITY"))
        r = self.raw(self.start(BASIC, "--capability", "-OBJECTID"), select="INBOX")
        self.assertNotIn(b"OBJECTID", r.ok("CAPABILITY"))
        self.assertBAD(r.cmd("FETCH 1 (EMAILID)")[1])
        self.assertBAD(r.cmd("SEARCH EMAILID M1")[1])
        self.assertBAD(r.cmd("STATUS INBOX (MAILBOXID)")[1])
        self.assertIsNone(mailboxid_code(r.cmd("CREATE foo")[1]))


class Section4_Mailboxid(ServerCase):
    def test_4_1_create_answers_mailboxid_and_4_3_rfc_example(self):
        """The RFC's example: create foo, bar; status; rename foo renamed keeps the id."""
        r = self.raw(self.start(BASIC))
        foo = mailboxid_code(r.cmd("create foo")[1])
        bar = mailboxid_code(r.cmd("create bar")[1])
        self.assertTrue(foo and OBJECTID.match(foo) and bar and OBJECTID.match(bar))
        self.assertNotEqual(foo, bar)
        self.assertNO(r.cmd("create foo")[1])
        self.assertEqual(status_mailboxid(r, "foo"), foo)
        self.assertEqual(status_mailboxid(r, "bar"), bar)
        r.ok("rename foo renamed")
        self.assertEqual(status_mailboxid(r, "renamed"), foo)
        self.assertEqual(status_mailboxid(r, "bar"), bar)

    def test_4_2_select_and_examine_answer_mailboxid(self):
        r = self.raw(self.start(BASIC))
        inbox = status_mailboxid(r, "INBOX")
        for cmd in ("SELECT", "EXAMINE"):
            u = r.ok(cmd + " INBOX")
            self.assertIn(b"* OK [MAILBOXID (" + inbox + b")]", u)

    def test_a_new_mailbox_of_the_same_name_is_a_new_id(self):
        r = self.raw(self.start(BASIC))
        first = mailboxid_code(r.cmd("CREATE again")[1])
        r.ok("DELETE again")
        self.assertNotEqual(mailboxid_code(r.cmd("CREATE again")[1]), first)

    def test_8_2_rename_inbox_makes_a_new_mailbox(self):
        r = self.raw(self.start(BASIC))
        inbox = status_mailboxid(r, "INBOX")
        r.ok("RENAME INBOX Old")
        self.assertEqual(status_mailboxid(r, "INBOX"), inbox)
        self.assertNotEqual(status_mailboxid(r, "Old"), inbox)

    def test_mailboxid_survives_save_and_reload_even_after_rename(self):
        saved = self.tempdir() + "/saved"
        s = self.start("--save", saved, BASIC)
        r = self.raw(s)
        made = mailboxid_code(r.cmd("CREATE Made")[1])
        r.ok("RENAME Made Renamed")
        r.ok("CREATE Empty")
        ids = {b: status_mailboxid(r, b) for b in ("INBOX", "Renamed", "Empty")}
        r.append("Renamed", b"Subject: keep\r\n\r\nkeep\r\n")
        self.assertEqual(ids["Renamed"], made)
        r.close()
        s.finish()
        r = self.raw(self.start(saved))
        self.assertEqual({b: status_mailboxid(r, b) for b in ids}, ids)


class Section5_Emailid(ServerCase):
    def test_5_3_fetch_emailid_threadid_nil(self):
        r = self.raw(self.start(BASIC), select="INBOX")
        ids, threads = emailids(r)
        self.assertEqual(len(ids), 6)
        self.assertEqual(len(set(ids)), 6)
        for i in ids:
            self.assertTrue(OBJECTID.match(i), i)
        self.assertEqual(set(threads), {b"NIL"})   # 5.2: NIL where threads are not computed
        self.assertEqual(emailids(r, cmd="FETCH")[0], emailids(r, "1:*", "UID FETCH")[0])

    def test_5_1_emailid_kept_by_copy_and_move_rfc_example(self):
        """The RFC's example: append three, move the second to foo: same EMAILID there."""
        r = self.raw(self.start(BASIC))
        r.ok("CREATE work")
        r.ok("CREATE foo")
        for subj in (b"Message A", b"Re: Message A", b"Message C"):
            r.append("work", b"Subject: " + subj + b"\r\nMessage-ID: <" +
                     subj.replace(b" ", b".") + b"@example.com>\r\n\r\nbody\r\n")
        r.ok("SELECT work")
        before, _ = emailids(r)
        self.assertEqual(len(set(before)), 3)
        r.ok("MOVE 2 foo")
        self.assertEqual(emailids(r)[0], [before[0], before[2]])
        r.ok("COPY 1 foo")
        r.ok("SELECT foo")
        self.assertEqual(emailids(r)[0], [before[1], before[0]])

    def test_emailid_survives_save_and_reload(self):
        saved = self.tempdir() + "/saved"
        s = self.start("--save", saved, BASIC)
        r = self.raw(s, select="INBOX")
        r.append("INBOX", b"Subject: new\r\nX: y\n\r\nlone LF\n")
        before, _ = emailids(r)
        r.close()
        s.finish()
        r = self.raw(self.start(saved), examine="INBOX")
        self.assertEqual(emailids(r)[0], before)


class Section6_Search(ServerCase):
    def test_search_emailid_and_threadid(self):
        r = self.raw(self.start(BASIC), select="INBOX")
        ids, _ = emailids(r)
        self.assertIn(b"* SEARCH 3\r\n", r.ok("SEARCH EMAILID " + ids[2].decode()))
        self.assertIn(b"* SEARCH\r\n", r.ok("SEARCH EMAILID " + ids[2].decode().swapcase()))
        self.assertIn(b"* SEARCH 2 3\r\n", r.ok("SEARCH OR EMAILID %s EMAILID %s"
                                               % (ids[1].decode(), ids[2].decode())))
        self.assertIn(b"* SEARCH\r\n", r.ok("SEARCH THREADID T1"))  # 5.2: NIL matches none
        self.assertBAD(r.cmd("SEARCH EMAILID")[1])


if __name__ == "__main__":
    unittest.main()
