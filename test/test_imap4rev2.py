"""IMAP4rev2 (RFC 9051) beside IMAP4rev1, and UTF8=ACCEPT (RFC 6855), written from the RFCs.

Organised by RFC section: RFC 9051 Appendix A (one server for both versions; ENABLE
IMAP4rev2), then one test (or a few) per item of RFC 9051 Appendix E, "Changes from RFC
3501", each named test_eNN_... after its row in the README's table, then RFC 6855 (UTF8=
ACCEPT), RFC 3501 5.1.3 (modified UTF-7, with its example), and the switches
(--imap-version, --capability).

Fixtures: basic.mbox (INBOX: 6 messages; message 4 is \\Recent, 5 is \\Deleted) and the
tree folder (Lists with an inferior Lists/ietf). Helpers and parser: wire.py's.

Rows that depend on extensions another branch adds (LIST-EXTENDED, LIST-STATUS,
SPECIAL-USE, STATUS=SIZE) are skipped unless the server advertises them.
"""
import os
import time
import unittest

from wire import (Lit, ServerCase, capabilities, codes, enabled, esearches, exists,
                  fetches, fixture, flagset, has_tls, numbers, parse, responses, run,
                  search_of, status_parts)

BASIC = fixture("basic.mbox")
TREE = fixture("tree")

CLIENT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "imap4rev2_client.mjs")
UTF8_MSG = ("From: J\u00f6rg <jorg@example.org>\r\nTo: b@example.org\r\n"
            "Subject: Gr\u00fc\u00dfe aus K\u00f6ln\r\nMIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n\r\nHall\u00f6\r\n").encode()


class Rev2Case(ServerCase):
    ARGS = (BASIC,)

    def rev1(self, s, **kw):
        return self.raw(s, **kw)

    def rev2(self, s, select=None, examine=None):
        """A client that ENABLEd IMAP4rev2 (RFC 9051 Appendix A)."""
        r = self.raw(s)
        u = r.ok("ENABLE IMAP4rev2")
        self.assertEqual(enabled(u), {"IMAP4REV2"})
        if select:
            r.ok('SELECT "%s"' % select)
        if examine:
            r.ok('EXAMINE "%s"' % examine)
        return r

    def caps(self, s):
        r = self.raw(s, login=None)
        return capabilities(r.ok("CAPABILITY"))

    def need(self, s, cap):
        if cap not in self.caps(s):
            self.skipTest("the server does not advertise %s (another branch adds it)" % cap)


# ---------------------------------------------------------------------------------------
class AppendixA(Rev2Case):
    """RFC 9051 Appendix A: a server for both advertises both; a client ENABLEs IMAP4rev2."""

    def test_both_advertised(self):
        caps = self.caps(self.start())
        self.assertIn("IMAP4REV1", caps)
        self.assertIn("IMAP4REV2", caps)

    def test_enable_imap4rev2(self):
        r = self.raw(self.start())
        u, t = r.cmd("ENABLE IMAP4rev2")
        self.assertOK(t)
        self.assertEqual(enabled(u), {"IMAP4REV2"})
        u, t = r.cmd("ENABLE IMAP4rev2")    # already on: nothing new (RFC 5161 3.1)
        self.assertOK(t)
        self.assertEqual(enabled(u), set())

    def test_without_enable_a_client_sees_imap4rev1(self):
        r = self.rev1(self.start())
        u = r.ok("SELECT INBOX")
        self.assertEqual(numbers(u, "RECENT"), [1])
        self.assertIn("UNSEEN", codes(u))
        self.assertEqual(responses(u, "LIST"), [])
        self.assertEqual(search_of(r.ok("SEARCH ALL")), [1, 2, 3, 4, 5, 6])
        self.assertOK(r.cmd("CHECK")[1])

    def test_rev1_session_is_the_same_on_a_rev1_only_server(self):
        """Byte for byte, but for the capability list: a client that does not ENABLE
        IMAP4rev2 cannot tell the default server from one that has no IMAP4rev2."""
        script = ['SELECT INBOX', 'FETCH 1:* (FLAGS UID RFC822.SIZE)', 'SEARCH NEW',
                  'STATUS INBOX (MESSAGES RECENT UNSEEN)', 'CREATE "&ZeVnLIqe-"',
                  'LIST "" *', 'LSUB "" *', 'FETCH 2 RFC822.HEADER', 'CHECK',
                  'SELECT INBOX', 'STORE 1 +FLAGS ($Forwarded)', 'EXAMINE Nope', 'LOGOUT']
        out = []
        for args in ((BASIC,), (BASIC, "--imap-version", "rev1")):
            r = self.raw(self.start(*args))
            got = b""
            for i, c in enumerate(script):
                u, t = r.cmd(c, tag="a%d" % i)
                got += u + t + b"\r\n"
            out.append(got)
        self.assertEqual(out[0], out[1])


    def test_readme_example_is_what_the_server_says(self):
        """The README's IMAP4rev2 session, replayed."""
        text = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                 "README.md"), encoding="utf-8").read()
        start = text.index("    C: a1 ENABLE IMAP4rev2")
        block = text[start:text.index("\n\n", start)].split("\n")
        steps = []
        for line in block:
            line = line[4:]
            if line.startswith("C: "):
                steps.append((line[3:], []))
            else:
                steps[-1][1].append(line[3:])
        r = self.raw(self.start())
        for command, expected in steps:
            tag, rest = command.split(" ", 1)
            u, t = r.cmd(rest, tag=tag)
            got = (u + tag.encode() + b" " + t + b"\r\n").decode()
            self.assertEqual(got, "".join(e + "\r\n" for e in expected), command)


# ---------------------------------------------------------------------------------------
class AppendixE(Rev2Case):
    """RFC 9051 Appendix E, item by item."""

    def test_e01_64bit_sizes(self):
        """Sizes are 64-bit numbers in the grammar; imapmem keeps messages in memory, so a
        literal beyond its limit is refused before the `+`, not misread."""
        s = self.start()
        r = self.rev2(s)
        r.send(b"a1 APPEND INBOX {5000000000}\r\n")
        u, t = r.until_tagged("a1")
        self.assertRefused(t)
        self.assertNotIn(b"+ ", u)
        r2 = self.rev2(s, select="INBOX")
        size = fetches(r2.ok("FETCH 1 RFC822.SIZE"))[1]["RFC822.SIZE"]
        self.assertIsInstance(size, int)

    def test_e02_folded_in_extensions(self):
        s = self.start()
        caps = self.caps(s)
        for c in ("NAMESPACE", "UNSELECT", "UIDPLUS", "ESEARCH", "SEARCHRES", "ENABLE",
                  "IDLE", "SASL-IR", "MOVE", "BINARY"):
            self.assertIn(c, caps)
        self.assertTrue({"LITERAL+", "LITERAL-"} & caps)   # LITERAL+ does all LITERAL- does
        r = self.rev2(s, select="INBOX")
        self.assertTrue(responses(r.ok("NAMESPACE"), "NAMESPACE"))
        u = r.ok("SEARCH RETURN (SAVE) FLAGGED")
        r.ok("FETCH $ (UID)")
        self.assertTrue(fetches(r.ok("FETCH 1 (BINARY.PEEK[1])")))
        r.ok("UNSELECT")

    def test_e02_list_extended_folded_in(self):
        s = self.start(TREE)
        self.need(s, "LIST-EXTENDED")
        r = self.rev2(s)
        r.ok('SUBSCRIBE "Lists/ietf"')
        u = r.ok('LIST (SUBSCRIBED) "" "*"')
        names = {resp[-1] for resp in responses(u, "LIST")}
        self.assertIn(b"Lists/ietf", names)

    def test_e02_list_status_folded_in(self):
        s = self.start()
        self.need(s, "LIST-STATUS")
        r = self.rev2(s)
        u = r.ok('LIST "" "INBOX" RETURN (STATUS (MESSAGES))')
        st = responses(u, "STATUS")
        self.assertEqual(st[0][2], ["MESSAGES", 6])

    def test_e02_special_use_attributes_folded_in(self):
        s = self.start(TREE)
        self.need(s, "SPECIAL-USE")
        r = self.rev2(s)
        u = r.ok('LIST "" "*"')
        attrs = {a.lower() for resp in responses(u, "LIST") for a in resp[1]}
        self.assertTrue({"\\sent", "\\drafts"} <= attrs, u)

    def test_e03_status_size_and_deleted(self):
        s = self.start()
        self.need(s, "STATUS=SIZE")
        r = self.rev2(s, examine="INBOX")
        sizes = [d["RFC822.SIZE"] for d in fetches(r.ok("FETCH 1:* RFC822.SIZE")).values()]
        u = r.ok("STATUS INBOX (SIZE DELETED)")
        d = responses(u, "STATUS")[0][2]
        got = dict(zip([k.upper() for k in d[0::2]], d[1::2]))
        self.assertEqual(got, {"SIZE": sum(sizes), "DELETED": 1})

    def test_e04_search_answers_esearch(self):
        r = self.rev2(self.start(), select="INBOX")
        u = r.ok("SEARCH ALL", tag="s1")
        self.assertEqual(responses(u, "SEARCH"), [])
        es = esearches(u)
        self.assertEqual(len(es), 1)
        self.assertEqual((es[0].tag, es[0].uid, str(es[0].get("ALL"))), ("s1", False, "1:6"))
        es = esearches(r.ok("UID SEARCH FLAGGED", tag="s2"))
        self.assertEqual((es[0].tag, es[0].uid, str(es[0].get("ALL"))), ("s2", True, "2"))
        es = esearches(r.ok("SEARCH SUBJECT nothing-like-this", tag="s3"))
        self.assertEqual((es[0].tag, es[0].items), ("s3", []))   # RFC 9051 6.4.4: no ALL
        es = esearches(r.ok("SEARCH RETURN (COUNT) ALL"))
        self.assertEqual(es[0].items, [("COUNT", 6)])

    def test_e05_substring_match(self):
        """RFC 9051 6.4.4: SUBJECT, FROM, BODY ... match substrings, case-insensitively."""
        r = self.rev2(self.start(), select="INBOX")
        es = esearches(r.ok('SEARCH SUBJECT "IRST MESS"'))
        self.assertEqual(str(es[0].get("ALL")), "1")

    def test_e06_rfc2231_continuations_decoded(self):
        s = self.start()
        r = self.rev2(s)
        msg = (b"From: a@example.org\r\nSubject: cont\r\nMIME-Version: 1.0\r\n"
               b"Content-Type: text/plain; charset=us-ascii\r\n"
               b"Content-Disposition: attachment; filename*0=\"long\"; filename*1=\"name.txt\""
               b"\r\n\r\nbody\r\n")
        self.assertOK(r.append("INBOX", msg)[1])
        r.ok("SELECT INBOX")
        bs = fetches(r.ok("FETCH 7 BODYSTRUCTURE"))[7]["BODYSTRUCTURE"]
        self.assertIn(b"longname.txt", repr(bs).encode(), bs)

    def test_e07_copyuid_for_move_and_uid_move(self):
        s = self.start()
        r = self.rev2(s)
        r.ok("CREATE Target")
        r.ok("SELECT INBOX")
        self.assertIn("COPYUID", codes(r.ok("MOVE 1 Target")))
        self.assertIn("COPYUID", codes(r.ok("UID MOVE 3 Target")))

    def test_e08_copy_and_move_do_not_create_the_target(self):
        r = self.rev2(self.start(), select="INBOX")
        for c in ("COPY 1 Nowhere", "MOVE 1 Nowhere", "UID COPY 1 Nowhere"):
            u, t = r.cmd(c)
            self.assertNO(t)
            self.assertCode(t, "TRYCREATE")
        u, t = r.cmd("STATUS Nowhere (MESSAGES)")
        self.assertNO(t)

    def test_e09_closed_before_a_reselect(self):
        """[CLOSED] before the second SELECT's responses, even with CONDSTORE (which also
        asks for it, RFC 7162 3.2.11) switched off."""
        s = self.start(BASIC, "--capability", "-CONDSTORE")
        r = self.rev2(s)
        u = r.ok("SELECT INBOX")
        self.assertNotIn("CLOSED", codes(u))
        u = r.ok("EXAMINE INBOX")
        self.assertIn("CLOSED", codes(u))
        self.assertTrue(u.startswith(b"* OK [CLOSED]"), u)
        r1 = self.rev1(s, select="INBOX")       # IMAP4rev1 without CONDSTORE: as before
        self.assertNotIn("CLOSED", codes(r1.ok("SELECT INBOX")))

    def test_e10_select_and_examine_send_list(self):
        s = self.start(TREE)
        r = self.rev2(s)
        for cmd, box, attr in (("SELECT", "INBOX", "\\hasnochildren"),
                               ("EXAMINE", "Lists", "\\haschildren"),
                               ("SELECT", "Lists/ietf", "\\hasnochildren")):
            u = r.ok('%s "%s"' % (cmd, box))
            ls = responses(u, "LIST")
            self.assertEqual(len(ls), 1, u)
            self.assertEqual(ls[0][2], b"/")
            self.assertEqual(ls[0][3], box.encode())
            self.assertEqual({a.lower() for a in ls[0][1]}, {attr})

    def test_e11_no_unseen_code(self):
        r = self.rev2(self.start())
        u = r.ok("SELECT INBOX")
        self.assertNotIn("UNSEEN", codes(u))
        for need in ("UIDVALIDITY", "UIDNEXT", "PERMANENTFLAGS"):   # RFC 9051 6.3.2
            self.assertIn(need, codes(u))
        self.assertEqual(exists(u), 6)

    def test_e12_no_recent_response_on_select(self):
        r = self.rev2(self.start())
        self.assertEqual(numbers(r.ok("SELECT INBOX"), "RECENT"), [])

    def test_e12_no_recent_flag(self):
        r = self.rev2(self.start(), select="INBOX")
        for d in fetches(r.ok("FETCH 1:* FLAGS")).values():
            self.assertNotIn("\\recent", flagset(d["FLAGS"]))
        u = r.ok("SELECT INBOX")
        self.assertNotIn(b"\\Recent", u)

    def test_e12_status_recent_is_bad(self):
        r = self.rev2(self.start())
        u, t = r.cmd("STATUS INBOX (MESSAGES RECENT)")
        self.assertBAD(t)
        self.assertEqual(responses(u, "STATUS"), [])
        self.assertOK(r.cmd("STATUS INBOX (MESSAGES UNSEEN)")[1])

    def test_e12_search_new_old_recent_are_bad(self):
        r = self.rev2(self.start(), select="INBOX")
        for key in ("NEW", "OLD", "RECENT", "NOT RECENT", "OR SEEN NEW"):
            self.assertBAD(r.cmd("SEARCH " + key)[1], key)
        self.assertOK(r.cmd("SEARCH UNSEEN")[1])

    def test_e12_no_recent_for_new_mail(self):
        s = self.start()
        r = self.rev2(s, select="INBOX")
        other = self.rev1(s)
        self.assertOK(other.append("INBOX", b"Subject: new\r\n\r\nx\r\n")[1])
        u = r.ok("NOOP")
        self.assertEqual(exists(u), 7)
        self.assertEqual(numbers(u, "RECENT"), [])

    def test_e12_rev2_session_leaves_recent_to_rev1(self):
        """A rev2 session does not take \\Recent (it has none), so a rev1 session after it
        still sees message 4 as \\Recent (RFC 3501 2.3.2)."""
        s = self.start()
        self.rev2(s, select="INBOX")
        r1 = self.rev1(s)
        self.assertEqual(numbers(r1.ok("SELECT INBOX"), "RECENT"), [1])

    def test_e13_permanentflags_not_repeated_for_new_keywords(self):
        s = self.start()
        r = self.rev2(s, select="INBOX")
        self.assertIn("\\*", codes(r.ok("SELECT INBOX"))["PERMANENTFLAGS"][0])
        r.ok("STORE 1 +FLAGS (NewKeyword)")
        other = self.rev2(s, examine="INBOX")
        self.assertIn("newkeyword", flagset(fetches(other.ok("FETCH 1 FLAGS"))[1]["FLAGS"]))

    def test_e14_tagged_ext_simple_number64(self):
        """No extension imapmem knows takes a bare number64; an unknown one is BAD, said
        clearly, and the session goes on."""
        r = self.rev2(self.start())
        u, t = r.cmd("SELECT INBOX (XNUMBER 12345678901)")
        self.assertBAD(t)
        self.assertIn(b"select parameter", t)
        self.assertOK(r.cmd("NOOP")[1])

    def test_e15_predefined_keywords(self):
        s = self.start()
        r = self.rev2(s, select="INBOX")
        kws = "$MDNSent $Forwarded $Junk $NotJunk $Phishing"
        r.ok("STORE 1 +FLAGS (%s)" % kws)
        other = self.rev2(s, examine="INBOX")
        got = flagset(fetches(other.ok("FETCH 1 FLAGS"))[1]["FLAGS"])
        self.assertTrue({k.lower() for k in kws.split()} <= got, got)

    def test_e16_utf8_mailbox_names(self):
        s = self.start()
        r2 = self.rev2(s)
        r2.ok('CREATE "Entw\u00fcrfe"'.encode())
        r1 = self.rev1(s)
        self.assertIn("Entw&APw-rfe", self.list(r1, "", "*"))
        r1.ok('CREATE "&ZeVnLIqe-"')
        u = r2.ok('LIST "" "*"')
        names = {resp[3] for resp in responses(u, "LIST")}
        self.assertIn("Entw\u00fcrfe".encode(), names)
        self.assertIn("\u65e5\u672c\u8a9e".encode(), names)
        self.assertIn("\"Entw\u00fcrfe\"".encode(), u)        # quoted, not a literal
        r2.ok('SELECT "\u65e5\u672c\u8a9e"'.encode())

    def test_e16_utf8_headers_served_as_is(self):
        s = self.start()
        r = self.rev2(s)
        self.assertOK(r.append("INBOX", UTF8_MSG)[1])
        r.ok("SELECT INBOX")
        d = fetches(r.ok("FETCH 7 (BODY.PEEK[HEADER.FIELDS (SUBJECT)] ENVELOPE)"))[7]
        self.assertIn("Gr\u00fc\u00dfe aus K\u00f6ln".encode(),
                      d["BODY[HEADER.FIELDS (SUBJECT)]"])
        self.assertEqual(d["ENVELOPE"][1], "Gr\u00fc\u00dfe aus K\u00f6ln".encode())

    def test_e17_check_removed(self):
        s = self.start()
        r = self.rev2(s, select="INBOX")
        u, t = r.cmd("CHECK")
        self.assertBAD(t)
        self.assertIn(b"NOOP", t)
        self.assertOK(self.rev1(s, select="INBOX").cmd("CHECK")[1])

    def test_e18_rfc822_fetch_items_deprecated(self):
        s = self.start()
        r = self.rev2(s, select="INBOX")
        for item in ("RFC822", "RFC822.HEADER", "RFC822.TEXT", "(FLAGS RFC822)"):
            u, t = r.cmd("FETCH 1 " + item)
            self.assertBAD(t, item)
            self.assertEqual(fetches(u), {})
        d = fetches(r.ok("FETCH 1 (RFC822.SIZE BODY.PEEK[])"))[1]
        self.assertEqual(d["RFC822.SIZE"], len(d["BODY[]"]))
        r1 = self.rev1(s, select="INBOX")
        self.assertIn("RFC822.HEADER", fetches(r1.ok("FETCH 1 RFC822.HEADER"))[1])

    def test_e19_lsub_deprecated(self):
        s = self.start(TREE)
        r = self.rev2(s)
        u, t = r.cmd('LSUB "" "*"')
        self.assertBAD(t)
        self.assertIn(b"LIST (SUBSCRIBED)", t)
        self.assertOK(self.rev1(s).cmd('LSUB "" "*"')[1])

    def test_e20_idle_updates(self):
        """IDLE may now report other mailboxes; imapmem reports the selected one (NOTIFY is
        another branch's), in rev2 form: EXISTS, no RECENT."""
        s = self.start()
        r = self.rev2(s, select="INBOX")
        r.send(b"i1 IDLE\r\n")
        self.assertTrue(r.readline().startswith(b"+"))
        self.assertOK(self.rev1(s).append("INBOX", b"Subject: idle\r\n\r\nx\r\n")[1])
        line = r.readline()
        self.assertEqual(line, b"* 7 EXISTS\r\n")
        r.send(b"DONE\r\n")
        u, t = r.until_tagged("i1")
        self.assertOK(t)
        self.assertEqual(numbers(u, "RECENT"), [])

    def test_e21_unsolicited_fetch_carries_uid(self):
        s = self.start()
        r = self.rev2(s, select="INBOX")
        other = self.rev2(s, select="INBOX")
        other.ok("STORE 3 +FLAGS (\\Flagged)")
        u = r.ok("NOOP")
        f = fetches(u)
        self.assertEqual(set(f), {3})
        self.assertEqual(f[3]["UID"], 3)
        self.assertNotIn("\\recent", flagset(f[3]["FLAGS"]))

    def test_e22_response_codes_are_registered(self):
        """Clients must ignore codes they do not know; imapmem sends only registered ones
        in a rev2 session's usual work."""
        known = {"CAPABILITY", "PERMANENTFLAGS", "UIDVALIDITY", "UIDNEXT", "READ-WRITE",
                 "READ-ONLY", "CLOSED", "APPENDUID", "COPYUID", "TRYCREATE", "NONEXISTENT",
                 "ALREADYEXISTS", "HIGHESTMODSEQ", "CANNOT", "MAILBOXID"}
        r = self.rev2(self.start())
        seen = set()
        for c in ("SELECT INBOX", "EXAMINE INBOX", "CREATE X", "CREATE X", "COPY 1 X",
                  "COPY 1 Y", "SELECT Nope", "SELECT INBOX"):
            u, t = r.cmd(c)
            seen |= set(codes(u))
            if status_parts(t)[1]:
                seen.add(status_parts(t)[1][0].upper())
        self.assertTrue(seen <= known, seen - known)

    def test_e23_resp_text_never_missing(self):
        """resp-text may now be empty; imapmem always says something, which both grammars
        accept."""
        r = self.rev2(self.start(), select="INBOX")
        for c in ("NOOP", "FETCH 1 FLAGS", "SEARCH ALL", "CHECK"):
            t = r.cmd(c)[1]
            self.assertTrue(status_parts(t)[2].strip(), t)

    def test_e24_utf8_resp_text_only_after_enable(self):
        s = self.start()
        r1 = self.rev1(s)
        r2 = self.rev2(s)
        t1 = r1.cmd('SELECT "&ZeVnLIqe-"')[1]
        self.assertTrue(all(b < 0x80 for b in t1), t1)
        t2 = r2.cmd('SELECT "\u65e5\u672c\u8a9e"'.encode())[1]
        self.assertNO(t2)
        t2.decode("utf-8")

    @unittest.skipUnless(has_tls(), "a build without TLS (make TLS=openssl)")
    def test_e25_tls(self):
        caps = self.caps(self.start())
        self.assertTrue("STARTTLS" in caps or "LOGINDISABLED" not in caps)

    def test_e26_no_preauth_greeting(self):
        s = self.start()
        r = s.raw()
        self.addCleanup(r.close)
        self.assertTrue(r.greeting.startswith(b"* OK"), r.greeting)

    def test_e27_scram_sha_256_and_no_digest_md5(self):
        s = self.start()
        caps = self.caps(s)
        self.assertIn("AUTH=SCRAM-SHA-256", caps)
        self.assertNotIn("AUTH=DIGEST-MD5", caps)
        r = s.raw()
        self.addCleanup(r.close)
        self.assertNO(r.cmd("AUTHENTICATE DIGEST-MD5")[1])
        # the server speaks second in SCRAM: its prompt is an empty challenge
        r.send("s1 AUTHENTICATE SCRAM-SHA-256\r\n")
        self.assertTrue(r.read_response_line().startswith(b"+"))
        r.send("*\r\n")                                # RFC 9051 6.2.2: cancelled
        self.assertBAD(r.until_tagged("s1")[1])

    def test_e28_any_command_resets_autologout(self):
        s = self.start(BASIC, "--idle-timeout", "2")
        r = self.rev2(s)
        for _ in range(4):
            time.sleep(0.8)
            self.assertOK(r.cmd("NOOP")[1])

    def test_e29_no_x_capabilities(self):
        self.assertEqual([c for c in self.caps(self.start()) if c.startswith("X")], [])

    def test_e30_logout_closes(self):
        r = self.rev2(self.start())
        u, t = r.cmd("LOGOUT")
        self.assertOK(t)
        self.assertTrue(u.startswith(b"* BYE"))
        self.assertEqual(r.read_to_eof(), (b"", True))


# ---------------------------------------------------------------------------------------
class Utf8Accept(Rev2Case):
    """RFC 6855: UTF8=ACCEPT."""

    def utf8(self, s, select=None):
        r = self.raw(s)
        self.assertEqual(enabled(r.ok("ENABLE UTF8=ACCEPT")), {"UTF8=ACCEPT"})
        if select:
            r.ok("SELECT " + select)
        return r

    def test_3_advertised_and_enabled(self):
        s = self.start()
        self.assertIn("UTF8=ACCEPT", self.caps(s))
        self.utf8(s)

    def test_3_utf8_quoted_mailbox_names(self):
        s = self.start()
        r = self.utf8(s)
        r.ok('CREATE "K\u00f6ln"'.encode())
        self.assertIn("K\u00f6ln".encode(), r.ok('LIST "" "K*"'))
        st = responses(r.ok('STATUS "K\u00f6ln" (MESSAGES)'.encode()), "STATUS")
        self.assertEqual(st[0][1], "K\u00f6ln".encode())
        self.assertIn("K&APY-ln", self.list(self.rev1(s), "", "*"))   # still mUTF-7

    def test_3_invalid_utf8_is_bad(self):
        r = self.utf8(self.start())
        self.assertBAD(r.cmd(b'CREATE "K\xf6ln"')[1])
        self.assertBAD(r.cmd(b'LOGOUT "\xff"')[1])
        self.assertBAD(r.cmd('CREATE "a\u2028b"'.encode())[1])

    def test_3_search_charset_after_enable_is_bad(self):
        r = self.utf8(self.start(), select="INBOX")
        self.assertBAD(r.cmd("SEARCH CHARSET UTF-8 ALL")[1])
        self.assertEqual(search_of(r.ok('SEARCH SUBJECT "first"')), [1])

    def test_4_append_utf8_literal8(self):
        s = self.start()
        r = self.utf8(s)
        u, t, _ = r.lit_command("APPEND INBOX UTF8 (", Lit(UTF8_MSG, eight=True), ")")
        self.assertOK(t)
        r.ok("SELECT INBOX")
        d = fetches(r.ok("FETCH 7 BODY.PEEK[]"))[7]
        self.assertEqual(d["BODY[]"], UTF8_MSG)

    def test_4_append_utf8_needs_enable(self):
        r = self.rev1(self.start())
        u, t, _ = r.lit_command("APPEND INBOX UTF8 (", Lit(UTF8_MSG, eight=True), ")")
        self.assertBAD(t)
        self.assertIn(b"ENABLE UTF8=ACCEPT", t)

    def test_switched_off(self):
        s = self.start(BASIC, "--capability", "-UTF8=ACCEPT")
        self.assertNotIn("UTF8=ACCEPT", self.caps(s))
        r = self.raw(s)
        self.assertEqual(enabled(r.ok("ENABLE UTF8=ACCEPT")), set())
        r.ok('CREATE "K&APY-ln"')
        self.assertIn("K&APY-ln", self.list(r, "", "*"))

    def test_enable_off_takes_utf8_accept(self):
        caps = self.caps(self.start(BASIC, "--capability", "-ENABLE"))
        self.assertNotIn("UTF8=ACCEPT", caps)


class ModifiedUtf7(Rev2Case):
    """RFC 3501 5.1.3 (and RFC 9051 Appendix A.1): names are kept in modified UTF-7."""

    def test_rfc3501_example(self):
        """RFC 3501 5.1.3: "~peter/mail/&U,BTFw-/&ZeVnLIqe-" is ~peter/mail/台北/日本語."""
        s = self.start()
        r1 = self.rev1(s)
        r1.ok('CREATE "~peter/mail/&U,BTFw-/&ZeVnLIqe-"')
        r2 = self.rev2(s)
        names = {resp[3] for resp in responses(r2.ok('LIST "" "~peter/*"'), "LIST")}
        self.assertIn("~peter/mail/\u53f0\u5317/\u65e5\u672c\u8a9e".encode(), names)
        r2.ok('CREATE "~peter/mail/\u53f0\u5317/x"'.encode())
        self.assertIn("~peter/mail/&U,BTFw-/x", self.list(r1, "", "~peter/*"))

    def test_ampersand_and_astral(self):
        s = self.start()
        r2 = self.rev2(s)
        r2.ok('CREATE "A&B \U0001F600"'.encode())
        self.assertIn("A&-B &2D3eAA-", self.list(self.rev1(s), "", "A*"))
        self.assertIn('"A&B \U0001F600"'.encode(), r2.ok('LIST "" "A*"'))

    def test_pattern_in_utf8(self):
        s = self.start()
        r2 = self.rev2(s)
        r2.ok('CREATE "\u00c4\u00d6"'.encode())
        u = r2.ok('LIST "" "\u00c4*\u00d6"'.encode())
        self.assertEqual(len(responses(u, "LIST")), 1, u)


# ---------------------------------------------------------------------------------------
class RealClient(Rev2Case):
    """imapflow (Node), which sends ENABLE IMAP4rev2 and UTF8=ACCEPT when offered: what its
    user would check. It is installed as test_qresync_client.py installs it."""

    @classmethod
    def setUpClass(cls):
        import test_qresync_client
        why = test_qresync_client.install()
        if why:
            raise unittest.SkipTest(why)
        super().setUpClass()

    def client(self, s):
        import test_qresync_client
        c = test_qresync_client.Imapflow(self, script=CLIENT)
        c.connected = c.request("connect", port=s.port)
        return c

    def test_imapflow_enables_imap4rev2(self):
        s = self.start()
        c = self.client(s)
        self.assertIn("IMAP4REV2", c.connected["enabled"])
        c.request("create", path="Entw\u00fcrfe")
        self.assertIn("Entw&APw-rfe", self.list(self.rev1(s), "", "*"))
        paths = {m["path"] for m in c.request("list")["mailboxes"]}
        self.assertEqual(paths, {"INBOX", "Entw\u00fcrfe"})
        st = c.request("status", path="INBOX")
        self.assertEqual((st["messages"], st["unseen"]), (6, 2))
        self.assertEqual(c.request("open", path="INBOX")["exists"], 6)
        self.assertEqual(c.request("search", query={"seen": False})["uids"], [2, 4])
        subjects = dict(c.request("subjects")["messages"])
        self.assertEqual(subjects[1], "First message")
        c.request("append", path="Entw\u00fcrfe", message=UTF8_MSG.decode())
        self.assertEqual(c.request("status", path="Entw\u00fcrfe")["messages"], 1)
        c.request("logout")

    def test_imapflow_against_a_rev2_only_server(self):
        s = self.start(BASIC, "--imap-version", "rev2")
        c = self.client(s)
        self.assertNotIn("IMAP4rev1", c.connected["capabilities"])
        self.assertEqual(c.request("open", path="INBOX")["exists"], 6)
        self.assertEqual(c.request("search", query={"flagged": True})["uids"], [2])
        c.request("logout")


# ---------------------------------------------------------------------------------------
class Switches(Rev2Case):
    """--imap-version and --capability."""

    def test_rev2_only(self):
        s = self.start(BASIC, "--imap-version", "rev2")
        caps = self.caps(s)
        self.assertIn("IMAP4REV2", caps)
        self.assertNotIn("IMAP4REV1", caps)
        r = self.raw(s)                        # no ENABLE needed
        u = r.ok("SELECT INBOX")
        self.assertEqual(numbers(u, "RECENT"), [])
        self.assertEqual(len(responses(u, "LIST")), 1)
        self.assertEqual(len(esearches(r.ok("SEARCH ALL"))), 1)

    def test_rev1_only(self):
        s = self.start(BASIC, "--imap-version", "rev1")
        caps = self.caps(s)
        self.assertIn("IMAP4REV1", caps)
        self.assertNotIn("IMAP4REV2", caps)
        r = self.raw(s)
        self.assertEqual(enabled(r.ok("ENABLE IMAP4rev2")), set())
        self.assertEqual(numbers(r.ok("SELECT INBOX"), "RECENT"), [1])

    def test_bad_version_is_a_usage_error(self):
        p = run(["-p", "0", "--imap-version", "rev3", BASIC], timeout=5)
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"--imap-version", p.stderr)

    def test_capability_minus_imap4rev1_is_rev2_only(self):
        s = self.start(BASIC, "--capability", "-IMAP4rev1")
        self.assertNotIn("IMAP4REV1", self.caps(s))
        self.assertEqual(len(esearches(self.raw(s, select="INBOX").ok("SEARCH ALL"))), 1)

    def test_capability_minus_imap4rev2(self):
        s = self.start(BASIC, "--capability", "-IMAP4rev2")
        self.assertNotIn("IMAP4REV2", self.caps(s))

    def test_both_versions_off_is_refused(self):
        p = run(["-p", "0", "--capability", "-IMAP4rev1", "--capability", "-IMAP4rev2",
                 BASIC], timeout=5)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(b"IMAP4rev1", p.stderr)


if __name__ == "__main__":
    unittest.main()
