"""APPEND extensions: MULTIAPPEND (RFC 3502), CATENATE (RFC 4469) with IMAP URLs (RFC 5092),
APPENDLIMIT (RFC 7889) and LITERAL- (RFC 7888), through raw connections.

Written from the RFCs before the server implements them.  Fixtures (written by setUp):

 user test (password test):
  INBOX            uid 1  "first"   text/plain, unseen          body FIRST_BODY
                   uid 2  "second"  multipart/mixed: 1 text/plain, 2 application/octet-stream
                                    base64 of 1500 octets (RFC822.SIZE > 2000), \\Seen
                   uid 3  "third"   text/plain, \\Seen
  Drafts           X-IMAPbase 385759045 30 (RFC 4469 Appendix A's UIDVALIDITY), unseen:
                   uid 20 multipart/mixed, boundary B20: 1 text/plain, 2 application/x-zip-
                          compressed (base64)
                   uid 21 multipart/mixed, boundary B21: 1 text/plain, 2 application/
                          vnd.ms-powerpoint (base64)
                   uid 30 text/plain
  Sent, saved-messages   empty
  Other Messages   uid 1  "spaced"  text/plain
 user other (password secret):
  INBOX            uid 1  "other's" text/plain, body "This belongs to other."

The other mailboxes get UIDVALIDITY 1 (the harness's --uidvalidity 1); tests read it with
STATUS rather than assume it.  What a CATENATE URL part contributes is, by RFC 4469 3, "the
literal returned in a FETCH BODY response" for that section: the tests fetch it with
BODY.PEEK from another session, and check a few against the fixture text as well.

Choices left open and not tested: whether a refused APPEND is answered before or after its
literal is read (RFC 3502, RFC 4469 Example 4 note, RFC 7888 4); LITERAL-'s answer to an
over-long non-synchronizing literal may be a tagged BAD or a BYE (RFC 7888 4/5), both are
accepted; whether BADURL's URL is quoted (RFC 4469 5's url-resp-text has no quotes, its
Example 4 has them).
"""
import base64
import calendar
import re

from wire import (Lit, ServerCase, capabilities, expand_set, fetches, imap_date_time, quote,
                  responses, status_parts, upper, write_mbox)

# ---------------------------------------------------------------------------------------
# Fixtures

B20 = "------------030308070208000400050907"
B21 = "------------030308070208000400050903"
UIDV_DRAFTS = 385759045
FIRST_BODY = "First message body."
ATTACH = bytes(range(256)) * 6                     # 1536 octets, base64 about 2 KB
ZIP = bytes(range(50, 250))
PPT = bytes(range(0, 200))
PART1_20 = ["Our travel agent has sent the schedule.", "", "Cheers,", "Bob"]


def b64lines(data):
    s = base64.b64encode(data).decode()
    return [s[i:i + 76] for i in range(0, len(s), 76)]


def mbox_message(from_line, headers, hidden, body):
    """One mbox message: visible headers, then the flag/UID headers the server hides."""
    return "\n".join(["From " + from_line] + headers + hidden + [""] + body) + "\n"


def visible_header(headers):
    """BODY[HEADER] of a fixture message: its visible header lines and the blank line."""
    return ("\r\n".join(headers) + "\r\n\r\n").encode()


def simple_headers(subject, day):
    return ["From: Sender <sender@example.com>", "To: Test <test@example.com>",
            "Subject: " + subject, "Date: Mon, %d Jan 2024 10:00:00 +0000" % day,
            "Message-ID: <%s@append.example>" % subject.replace(" ", "-").replace("'", "")]


DRAFT20_HEADERS = ["Message-ID: <419399E1.6000505@example.org>",
                   "Date: Thu, 11 Nov 2004 16:57:05 +0000",
                   "From: Bob Ar <bar@example.org>",
                   "MIME-Version: 1.0",
                   "To: foo@example.net",
                   "Subject: About our holiday trip",
                   "Content-Type: multipart/mixed;",
                   ' boundary="%s"' % B20]


def inbox_text():
    m1 = mbox_message("sender@example.com Mon Jan 01 10:00:00 2024", simple_headers("first", 1),
                      ["Status: O", "X-UID: 1"], [FIRST_BODY])
    m2 = mbox_message("sender@example.com Tue Jan 02 10:00:00 2024",
                      simple_headers("second", 2) +
                      ["MIME-Version: 1.0", 'Content-Type: multipart/mixed; boundary="b2"'],
                      ["Status: RO", "X-UID: 2"],
                      ["--b2", "Content-Type: text/plain", "", "See the attachment.", "--b2",
                       "Content-Type: application/octet-stream",
                       "Content-Transfer-Encoding: base64", ""] + b64lines(ATTACH) + ["--b2--"])
    m3 = mbox_message("sender@example.com Wed Jan 03 10:00:00 2024", simple_headers("third", 3),
                      ["Status: RO", "X-UID: 3"], ["Third message body."])
    return "\n".join([m1, m2, m3])


def drafts_text():
    m20 = mbox_message("bar@example.org Thu Nov 11 16:57:07 2004", DRAFT20_HEADERS,
                       ["X-IMAPbase: %d 30" % UIDV_DRAFTS, "X-UID: 20", "Status: O"],
                       ["This is a multi-part message in MIME format.",
                        "--" + B20,
                        "Content-Type: text/plain; charset=us-ascii; format=flowed",
                        "Content-Transfer-Encoding: 7bit",
                        ""] + PART1_20 + [
                        "--" + B20,
                        'Content-Type: application/x-zip-compressed; name="schedule.zip"',
                        "Content-Transfer-Encoding: base64",
                        'Content-Disposition: attachment; filename="schedule.zip"',
                        ""] + b64lines(ZIP) + ["--" + B20 + "--"])
    m21 = mbox_message("bar@example.org Fri Nov 12 09:00:00 2004",
                       ["Message-ID: <21@example.org>", "Date: Fri, 12 Nov 2004 09:00:00 +0000",
                        "From: Bob Ar <bar@example.org>", "MIME-Version: 1.0",
                        "To: foo@example.net", "Subject: Slides",
                        'Content-Type: multipart/mixed; boundary="%s"' % B21],
                       ["X-UID: 21", "Status: O"],
                       ["--" + B21, "Content-Type: text/plain; charset=us-ascii", "",
                        "The slides are attached.", "--" + B21,
                        "Content-Type: application/vnd.ms-powerpoint",
                        "Content-Transfer-Encoding: base64", ""] + b64lines(PPT) +
                       ["--" + B21 + "--"])
    m30 = mbox_message("bar@example.org Sat Nov 13 09:00:00 2004",
                       ["Message-ID: <30@example.org>", "Date: Sat, 13 Nov 2004 09:00:00 +0000",
                        "From: Bob Ar <bar@example.org>", "To: foo@example.net",
                        "Subject: Notes"],
                       ["X-UID: 30", "Status: O"], ["Some notes.", "More notes."])
    return "\n".join([m20, m21, m30])


def other_text():
    return mbox_message("other@example.com Mon Jan 01 10:00:00 2024",
                        simple_headers("other's", 1), ["Status: O"],
                        ["This belongs to other."])


def spaced_text():
    return mbox_message("sender@example.com Mon Jan 01 10:00:00 2024",
                        simple_headers("spaced", 1), ["Status: RO"], ["In Other Messages."])


def rfc_message(lines):
    return ("\r\n".join(lines) + "\r\n").encode()


A003_1 = rfc_message(["Date: Mon, 7 Feb 1994 21:52:25 -0800 (PST)",
                      "From: Fred Foobar <foobar@Blurdybloop.example.COM>",
                      "Subject: afternoon meeting",
                      "To: mooch@owatagu.example.net",
                      "Message-Id: <B27397-0100000@Blurdybloop.example.COM>",
                      "MIME-Version: 1.0",
                      "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII",
                      "",
                      "Hello Joe, do you think we can meet at 3:30 tomorrow?"])
A003_2 = rfc_message(["Date: Mon, 7 Feb 1994 22:43:04 -0800 (PST)",
                      "From: Joe Mooch <mooch@OWaTaGu.example.net>",
                      "Subject: Re: afternoon meeting",
                      "To: foobar@blurdybloop.example.com",
                      "Message-Id: <a0434793874930@OWaTaGu.example.net>",
                      "MIME-Version: 1.0",
                      "Content-Type: TEXT/PLAIN; CHARSET=US-ASCII",
                      "",
                      "3:30 is fine with me."])


def small(subject="small", size=None):
    """A message; with size, padded to exactly size octets."""
    msg = ("From: a@example.com\r\nSubject: %s\r\n\r\nBody.\r\n" % subject).encode()
    if size is not None:
        pad = size - len(msg) - 2
        assert pad >= 0
        msg = msg[:-2] + b"x" * pad + b"\r\n\r\n"
        msg = msg[:size]
        assert len(msg) == size
    return msg


def code_of(tagged):
    """('NO', 'TOOBIG', ['TOOBIG']) from a tagged text b'NO [TOOBIG] ...'."""
    word, code, _ = status_parts(tagged)
    return word, (upper(code[0]) if code else None), code


def badurl_of(tagged):
    """The URL in a [BADURL url] code (quotes, if any, removed), or None."""
    m = re.search(rb"\[BADURL ([^\]]*)\]", tagged, re.I)
    if not m:
        return None
    u = m.group(1).strip()
    if len(u) >= 2 and u[:1] == b'"' and u[-1:] == b'"':
        u = re.sub(rb'\\(["\\])', rb"\1", u[1:-1])
    return u.decode("latin-1")


class Base(ServerCase):
    NEED = ()

    def setUp(self):
        self.dir = self.tempdir()
        self.mine = self.dir + "/test"
        self.theirs = self.dir + "/other"
        write_mbox(self.mine, "INBOX.mbox", inbox_text())
        write_mbox(self.mine, "Drafts.mbox", drafts_text())
        write_mbox(self.mine, "Sent.mbox", "")
        write_mbox(self.mine, "saved-messages.mbox", "")
        write_mbox(self.mine, "Other Messages.mbox", spaced_text())
        write_mbox(self.theirs, "INBOX.mbox", other_text())
        self.srv = None

    def server(self, *args):
        """The server of this test: users test and other, then args."""
        if self.srv is None:
            self.srv = self.start_or_fail("-u", "test:test:" + self.mine,
                                  "-u", "other:secret:" + self.theirs, *args)
        return self.srv

    def capabilities(self, r):
        return capabilities(r.ok("CAPABILITY"))

    def need(self, r, caps):
        have = self.capabilities(r)
        missing = [c for c in caps if c not in have]
        self.assertFalse(missing, "capability %s not advertised; the server has: %s"
                         % (" ".join(missing), " ".join(sorted(have))))
        return have

    def session(self, select=None, need=None, user=("test", "test"), args=()):
        r = self.raw(self.server(*args), login=user)
        self.need(r, self.NEED if need is None else need)
        if select:
            r.ok("SELECT " + quote(select))
        return r

    def ok(self, r, command, tag=None):
        return r.ok(command, tag)

    def status(self, r, mailbox, item):
        """The number item of STATUS mailbox."""
        return super().status(r, mailbox, item)[item.upper()]

    def count(self, mailbox):
        """MESSAGES of mailbox, asked on a fresh connection of user test."""
        r = self.raw(self.server(), login=("test", "test"))
        n = self.status(r, mailbox, "MESSAGES")
        r.close()
        return n

    def body(self, mailbox, uid, section="", user=("test", "test")):
        """BODY.PEEK[section] of a message, read on a fresh connection (EXAMINE)."""
        r = self.raw(self.server(), login=user)
        self.ok(r, "EXAMINE " + quote(mailbox))
        f = fetches(self.ok(r, "UID FETCH %d BODY.PEEK[%s]" % (uid, section)))
        r.close()
        for items in f.values():
            if items.get("UID") == uid:
                for k, v in items.items():
                    if k.startswith("BODY["):
                        return bytes(v)
        self.fail("no BODY[%s] for %s UID %d" % (section, mailbox, uid))

    def flags(self, mailbox, uid, user=("test", "test")):
        r = self.raw(self.server(), login=user)
        self.ok(r, "EXAMINE " + quote(mailbox))
        f = fetches(self.ok(r, "UID FETCH %d FLAGS" % uid))
        r.close()
        for items in f.values():
            if items.get("UID") == uid:
                return {x.lower() for x in items["FLAGS"]}
        self.fail("no FLAGS for %s UID %d" % (mailbox, uid))

    def appenduid(self, tagged, mailbox):
        """The UIDs of APPENDUID in a tagged OK (RFC 4315, RFC 3502 with a set)."""
        word, code, full = code_of(tagged)
        self.assertEqual((word, code), ("OK", "APPENDUID"), tagged)
        self.assertEqual(len(full), 3, tagged)
        self.assertNotIn("*", str(full[2]), "no * in an APPENDUID set (RFC 3502)")
        return full[1], expand_set(full[2])

    def refused(self, tagged, word, code=None):
        w, c, _ = code_of(tagged)
        self.assertEqual(w, word, tagged)
        if code:
            self.assertEqual(c, code, tagged)


# ---------------------------------------------------------------------------------------
# MULTIAPPEND, RFC 3502

class MultiAppendTest(Base):
    NEED = ("MULTIAPPEND",)

    def test_capability_multiappend(self):
        """RFC 3502: capability MULTIAPPEND."""
        self.session()

    def test_example_a003_two_messages(self):
        """RFC 3502 6.3.11 example A003: two messages, each with its flags (and date)."""
        r = self.session()
        untagged, tagged, conts = r.lit_command(
            "APPEND saved-messages (\\Seen) ", Lit(A003_1),
            ' (\\Seen) " 7-Feb-1994 22:43:04 -0800" ', Lit(A003_2), tag="A003")
        self.assertTrue(tagged.startswith(b"OK"), tagged)
        self.assertEqual(conts, 2)
        uidv, uids = self.appenduid(tagged, "saved-messages")
        self.assertEqual(len(uids), 2)
        self.assertEqual(self.count("saved-messages"), 2)
        self.assertEqual(self.body("saved-messages", uids[0]), A003_1)
        self.assertEqual(self.body("saved-messages", uids[1]), A003_2)
        self.ok(r, "EXAMINE saved-messages")
        f = fetches(self.ok(r, "FETCH 1:2 (FLAGS INTERNALDATE)"))
        self.assertIn("\\seen", {x.lower() for x in f[1]["FLAGS"]})
        self.assertIn("\\seen", {x.lower() for x in f[2]["FLAGS"]})
        self.assertEqual(imap_date_time(f[2]["INTERNALDATE"]),
                         imap_date_time(" 7-Feb-1994 22:43:04 -0800"))

    def test_example_a004_no_such_mailbox_trycreate(self):
        """RFC 3502 6.3.11 example A004: MUST NOT create the mailbox; NO [TRYCREATE]."""
        r = self.session()
        untagged, tagged, _ = r.lit_command("APPEND bogusname (\\Flagged) ", Lit(small(size=1023)),
                                            " ", Lit(small()), tag="A004")
        self.refused(tagged, "NO", "TRYCREATE")
        self.assertNotIn(b"bogusname", self.ok(r, 'LIST "" *').lower())

    def test_example_a005_failure_appends_nothing(self):
        """RFC 3502 6.3.11 example A005 (refused for size, here over an APPENDLIMIT rather
        than a quota): a failed MULTIAPPEND leaves the mailbox as it was."""
        r = self.session(need=("MULTIAPPEND", "APPENDLIMIT=2000"), args=("--append-limit", "2000"))
        untagged, tagged, _ = r.lit_command("APPEND Sent (\\Flagged) ", Lit(small("ok")), " ",
                                            Lit(small("too big", size=3000)), tag="A005")
        self.refused(tagged, "NO")
        self.assertEqual(self.count("Sent"), 0)

    def test_zero_length_literal_cancels_everything(self):
        """RFC 3502: a zero-length message literal is an error and MUST return NO; the
        mailbox MUST be restored to its state before the APPEND."""
        r = self.session()
        untagged, tagged, _ = r.lit_command("APPEND Sent ", Lit(small("one")), " ",
                                            Lit(small("two")), " ", Lit(b""))
        self.refused(tagged, "NO")
        self.assertEqual(self.count("Sent"), 0)

    def test_bad_date_in_a_later_message_appends_nothing(self):
        """RFC 3502: no partial appending (the error may be NO or, for syntax, BAD)."""
        r = self.session()
        untagged, tagged, _ = r.lit_command("APPEND Sent ", Lit(small("one")),
                                            ' "31-Foo-2024 10:00:00 +0000" ', Lit(small("two")))
        self.assertTrue(tagged.startswith((b"NO", b"BAD")), tagged)
        self.assertEqual(self.count("Sent"), 0)

    def test_appenduid_lists_every_uid_in_order(self):
        """RFC 3502 (UIDPLUS): APPENDUID returns as many UIDs as messages, in append order,
        without extraneous UIDs or "*"."""
        r = self.session(need=("MULTIAPPEND", "UIDPLUS"))
        uidnext = self.status(r, "INBOX", "UIDNEXT")
        uidv = self.status(r, "INBOX", "UIDVALIDITY")
        msgs = [small("m%d" % k) for k in range(3)]
        untagged, tagged, _ = r.lit_command("APPEND INBOX ", Lit(msgs[0]), " ", Lit(msgs[1]), " ",
                                            Lit(msgs[2]))
        v, uids = self.appenduid(tagged, "INBOX")
        self.assertEqual(v, uidv)
        self.assertEqual(uids, [uidnext, uidnext + 1, uidnext + 2])
        for u, m in zip(uids, msgs):
            self.assertEqual(self.body("INBOX", u), m)

    def test_flags_and_dates_belong_to_each_message(self):
        """RFC 3502 6.3.11: each message has its own optional flags and date-time."""
        r = self.session()
        untagged, tagged, _ = r.lit_command(
            "APPEND Sent (\\Flagged) ", Lit(small("a")), ' "01-Feb-2020 08:00:00 +0000" ',
            Lit(small("b")), " (\\Answered $Label1) ", Lit(small("c")))
        self.assertTrue(tagged.startswith(b"OK"), tagged)
        self.ok(r, "EXAMINE Sent")
        f = fetches(self.ok(r, "FETCH 1:3 (FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT)])"))
        fl = {n: {x.lower() for x in f[n]["FLAGS"]} - {"\\recent"} for n in f}
        self.assertEqual(fl, {1: {"\\flagged"}, 2: set(), 3: {"\\answered", "$label1"}})
        self.assertEqual(imap_date_time(f[2]["INTERNALDATE"]),
                         calendar.timegm((2020, 2, 1, 8, 0, 0)))
        subjects = [bytes(f[n]["BODY[HEADER.FIELDS (SUBJECT)]"]) for n in (1, 2, 3)]
        self.assertEqual(subjects, [b"Subject: %s\r\n\r\n" % s for s in (b"a", b"b", b"c")])

    def test_nonsynchronizing_multiappend_is_one_round_trip(self):
        """RFC 3502 Introduction / RFC 7888 7: with LITERAL+ the whole upload needs no
        continuation request."""
        r = self.session(need=("MULTIAPPEND", "LITERAL+"))
        untagged, tagged, conts = r.lit_command("APPEND Sent ", Lit(small("a"), plus=True), " ",
                                                Lit(small("b"), plus=True))
        self.assertTrue(tagged.startswith(b"OK"), tagged)
        self.assertEqual(conts, 0)
        self.assertEqual(self.count("Sent"), 2)

    def test_selected_mailbox_learns_of_all_new_messages(self):
        """RFC 3502: the normal new message actions (EXISTS) for the selected mailbox."""
        r = self.session(select="INBOX")
        untagged, tagged, _ = r.lit_command("APPEND INBOX ", Lit(small("a")), " ", Lit(small("b")))
        self.assertTrue(tagged.startswith(b"OK"), tagged)
        untagged += self.ok(r, "NOOP")
        ex = [int(x) for x in re.findall(rb"^\* (\d+) EXISTS", untagged, re.M)]
        self.assertTrue(ex and ex[-1] == 5, untagged)


# ---------------------------------------------------------------------------------------
# CATENATE, RFC 4469, with IMAP URLs, RFC 5092

SEP20 = ("\r\n--" + B20 + "\r\n").encode()          # the {42} of Appendix A
END20 = ("\r\n--" + B20 + "--\r\n").encode()        # the {44}
SEP21 = ("\r\n--" + B21 + "\r\n").encode()
D20 = "/Drafts;UIDVALIDITY=%d/;UID=20" % UIDV_DRAFTS
D21 = "/Drafts;UIDVALIDITY=%d/;UID=21" % UIDV_DRAFTS
D30 = "/Drafts;UIDVALIDITY=%d/;UID=30" % UIDV_DRAFTS


class CatenateTest(Base):
    NEED = ("CATENATE", "UIDPLUS")

    def catenate(self, r, mailbox, *parts, flags="", tag=None):
        """APPEND mailbox [flags] CATENATE (parts): str parts are URLs, bytes TEXT literals."""
        pieces = ["APPEND %s %sCATENATE (" % (quote(mailbox), flags + " " if flags else "")]
        for k, p in enumerate(parts):
            sp = " " if k else ""
            if isinstance(p, str):
                pieces.append("%sURL %s" % (sp, quote(p)))
            else:
                pieces += ["%sTEXT " % sp, p if isinstance(p, Lit) else Lit(p)]
        pieces.append(")")
        return r.lit_command(*pieces, tag=tag)

    def expect(self, *parts):
        """What the catenated message must be: TEXT bytes as sent, each URL as its FETCH
        BODY.PEEK (RFC 4469 3).  URL parts are (mailbox, uid, section)."""
        return b"".join(p if isinstance(p, bytes) else self.body(*p) for p in parts)

    def badurl(self, r, url, *more, mailbox="Sent"):
        before = self.count(mailbox)
        untagged, tagged, _ = self.catenate(r, mailbox, b"Subject: x\r\n\r\n", url, *more)
        self.refused(tagged, "NO", "BADURL")
        self.assertEqual(badurl_of(tagged), url, tagged)
        self.assertEqual(self.count(mailbox), before, "a failed APPEND appends nothing")

    def test_capability_catenate(self):
        """RFC 4469 2."""
        self.session()

    def test_example1_replace_an_attachment(self):
        """RFC 4469 Appendix A, Example 1."""
        r = self.session()
        untagged, tagged, _ = self.catenate(
            r, "Drafts", D20 + "/;section=HEADER", SEP20, D20 + "/;section=1.MIME",
            D20 + "/;section=1", SEP20, D30, END20, flags="(\\Seen \\Draft $MDNSent)",
            tag="A003")
        self.assertTrue(tagged.startswith(b"OK"), tagged)
        uidv, uids = self.appenduid(tagged, "Drafts")
        self.assertEqual((uidv, uids), (UIDV_DRAFTS, [31]))
        want = self.expect(("Drafts", 20, "HEADER"), SEP20, ("Drafts", 20, "1.MIME"),
                           ("Drafts", 20, "1"), SEP20, ("Drafts", 30, ""), END20)
        self.assertEqual(self.body("Drafts", 31), want)
        self.assertTrue(want.startswith(visible_header(DRAFT20_HEADERS)), want[:400])
        self.assertIn(("\r\n".join(PART1_20)).encode() + SEP20, want)
        self.assertEqual(self.flags("Drafts", 31) - {"\\recent"},
                         {"\\seen", "\\draft", "$mdnsent"})
        self.assertNotIn("\\seen", self.flags("Drafts", 20), "CATENATE does not set \\Seen")
        self.assertNotIn("\\seen", self.flags("Drafts", 30))

    def test_example2_replace_edited_text_with_appenduid(self):
        """RFC 4469 Appendix A, Example 2: APPENDUID in the OK, then UID STORE of the old
        draft."""
        r = self.session(select="Drafts")
        text = ("\r\n".join(["Return-Path: <bar@example.org>",
                             "Message-ID: <419399E1.6000505@example.org>",
                             "Date: Thu, 12 Nov 2004 16:57:05 +0000",
                             "From: Bob Ar <bar@example.org>",
                             "MIME-Version: 1.0",
                             "To: foo@example.net",
                             "Subject: About our holiday trip",
                             "Content-Type: multipart/mixed;",
                             '              boundary="%s"' % B20,
                             "",
                             "--" + B20,
                             "Content-Type: text/plain; charset=us-ascii; format=flowed",
                             "Content-Transfer-Encoding: 7bit",
                             "",
                             "Our travel agent has sent the updated schedule.",
                             "",
                             "Cheers,",
                             "Bob",
                             "--" + B20, ""])).encode()
        untagged, tagged, _ = self.catenate(
            r, "Drafts", text, D20 + "/;Section=2.MIME", D20 + "/;Section=2", END20,
            flags="(\\Seen \\Draft $MDNSent)", tag="A003")
        uidv, uids = self.appenduid(tagged, "Drafts")
        self.assertEqual((uidv, uids), (UIDV_DRAFTS, [31]))
        self.ok(r, "UID STORE 20 +FLAGS.SILENT (\\Deleted)", tag="A004")
        want = self.expect(text, ("Drafts", 20, "2.MIME"), ("Drafts", 20, "2"), END20)
        self.assertEqual(self.body("Drafts", 31), want)
        self.assertIn(base64.b64encode(ZIP)[:40], want)

    def test_example3_strip_an_attachment(self):
        """RFC 4469 Appendix A, Example 3."""
        r = self.session()
        note = ("\r\n--" + B21 + "\r\n" + "\r\n".join([
            'Content-type: text/plain; charset="us-ascii"',
            "Content-transfer-encoding: 7bit",
            "",
            "This body part contained a Power Point presentation that was",
            "deleted upon your request.",
            "--" + B21 + "--", ""])).encode()
        untagged, tagged, _ = self.catenate(
            r, "Drafts", D21 + "/;section=HEADER", SEP21, D21 + "/;section=1.MIME",
            D21 + "/;section=1", note, flags="(\\Seen \\Draft $MDNSent)", tag="A003")
        self.assertTrue(tagged.startswith(b"OK"), tagged)
        _, uids = self.appenduid(tagged, "Drafts")
        want = self.expect(("Drafts", 21, "HEADER"), SEP21, ("Drafts", 21, "1.MIME"),
                           ("Drafts", 21, "1"), note)
        self.assertEqual(self.body("Drafts", uids[0]), want)
        self.assertNotIn(base64.b64encode(PPT)[:40], want)

    def test_example4_badurl_fails_the_whole_append(self):
        """RFC 4469 Appendix A, Example 4 (a digest; the second URL names no message): NO
        with BADURL naming that URL, and nothing appended."""
        r = self.session()
        uidv = self.status(r, "INBOX", "UIDVALIDITY")
        b04 = "------------030308070208000400050904"
        head = ("\r\n".join(["From: Farren Oo <foo@example.org>", "MIME-Version: 1.0",
                             "To: bar@example.org",
                             "Subject: Digest of the mailing list for today",
                             "Content-Type: multipart/digest;",
                             '              boundary="%s"' % b04, "", "--" + b04, ""])).encode()
        sep = ("\r\n--" + b04 + "\r\n").encode()
        bad = "/INBOX;UIDVALIDITY=%d/;UID=113330/;section=1.5.9" % uidv
        untagged, tagged, _ = self.catenate(
            r, "Sent", head, "/INBOX;UIDVALIDITY=%d/;UID=1" % uidv, sep, bad, sep,
            "/INBOX;UIDVALIDITY=%d/;UID=3" % uidv, ("\r\n--" + b04 + "--\r\n").encode(),
            flags="(\\Seen $MDNSent)", tag="A003")
        self.refused(tagged, "NO", "BADURL")
        self.assertEqual(badurl_of(tagged), bad)
        self.assertEqual(self.count("Sent"), 0)

    def test_catenate_does_not_set_seen_on_the_sources(self):
        """RFC 4469 3: APPEND does not set \\Seen for any catenated body part."""
        r = self.session()
        untagged, tagged, _ = self.catenate(r, "Sent", "/INBOX/;UID=1", b"\r\n",
                                            "/INBOX/;UID=1/;SECTION=TEXT")
        self.assertTrue(tagged.startswith(b"OK"), tagged)
        self.assertNotIn("\\seen", self.flags("INBOX", 1))

    def test_url_without_uidvalidity_is_the_whole_message(self):
        """RFC 5092 6: no <isection> means the whole message, UID FETCH BODY.PEEK[]."""
        r = self.session()
        untagged, tagged, _ = self.catenate(r, "Sent", "/INBOX/;UID=3")
        _, uids = self.appenduid(tagged, "Sent")
        self.assertEqual(self.body("Sent", uids[0]), self.body("INBOX", 3))
        self.assertIn(b"Subject: third\r\n", self.body("Sent", uids[0]))

    def test_url_keywords_are_case_insensitive(self):
        """RFC 5092 11: strings are not case sensitive (";uid=", ";section=", ";Section=")."""
        r = self.session()
        uidv = self.status(r, "INBOX", "UIDVALIDITY")
        untagged, tagged, _ = self.catenate(
            r, "Sent", "/INBOX;uidvalidity=%d/;uid=2/;section=header" % uidv, b"x",
            "/inbox/;Uid=2/;Section=1")
        _, uids = self.appenduid(tagged, "Sent")
        self.assertEqual(self.body("Sent", uids[0]),
                         self.body("INBOX", 2, "HEADER") + b"x" + self.body("INBOX", 2, "1"))

    def test_url_section_text_and_percent_encoded_header_fields(self):
        """RFC 5092 6: unsafe characters in <isection> are percent-encoded."""
        r = self.session()
        untagged, tagged, _ = self.catenate(
            r, "Sent", "/INBOX/;UID=1/;SECTION=HEADER.FIELDS%20(SUBJECT%20FROM)",
            "/INBOX/;UID=1/;SECTION=TEXT")
        _, uids = self.appenduid(tagged, "Sent")
        self.assertEqual(self.body("Sent", uids[0]),
                         b"From: Sender <sender@example.com>\r\nSubject: first\r\n\r\n" +
                         FIRST_BODY.encode() + b"\r\n")

    def test_url_partial(self):
        """RFC 5092 6: <ipartial> appends <<partial-range>> to the BODY.PEEK fetch."""
        r = self.session()
        untagged, tagged, _ = self.catenate(r, "Sent", "/INBOX/;UID=1/;SECTION=TEXT/;PARTIAL=0.5",
                                            b" ", "/INBOX/;UID=3/;PARTIAL=6.8")
        _, uids = self.appenduid(tagged, "Sent")
        self.assertEqual(self.body("Sent", uids[0]),
                         FIRST_BODY.encode()[:5] + b" " + self.body("INBOX", 3)[6:14])

    def test_url_percent_encoded_mailbox_name(self):
        """RFC 5092 5: unsafe characters (space) in enc-mailbox are percent-encoded."""
        r = self.session()
        untagged, tagged, _ = self.catenate(r, "Sent", "/Other%20Messages/;UID=1")
        _, uids = self.appenduid(tagged, "Sent")
        self.assertIn(b"In Other Messages.", self.body("Sent", uids[0]))

    def test_url_utf8_mailbox_name_is_modified_utf7(self):
        """RFC 5092 8: a URL carries a mailbox name in UTF-8 (percent-encoded), converted
        from and back to IMAP's modified UTF-7 (RFC 3501 5.1.3): "Entw&APw-rfe" is
        "Entw%C3%BCrfe", "A&-B" is "A%26B"; bytes that are not UTF-8 are a BADURL."""
        r = self.session()
        for name, url in (("Entw&APw-rfe", "Entw%C3%BCrfe"), ("A&-B", "A%26B"),
                          ("&2D3eAQ-", "%F0%9F%98%81")):
            self.ok(r, "CREATE " + quote(name))
            untagged, tagged, _ = r.lit_command("APPEND %s " % quote(name), Lit(small(name)))
            self.assertTrue(tagged.startswith(b"OK"), tagged)
            untagged, tagged, _ = self.catenate(r, "Sent", "/%s/;UID=1" % url)
            _, uids = self.appenduid(tagged, "Sent")
            self.assertEqual(self.body("Sent", uids[0]), small(name))
        self.badurl(r, "/Entw%FCrfe/;UID=1")

    def test_urls_name_the_logged_in_users_mailboxes(self):
        """RFC 4469 3: the base URL is imap://user@server/, user being the authenticated
        user: /INBOX is other's own INBOX when other is logged in."""
        r = self.session(user=("other", "secret"))
        untagged, tagged, _ = self.catenate(r, "INBOX", "/INBOX/;UID=1/;SECTION=TEXT")
        _, uids = self.appenduid(tagged, "INBOX")
        self.assertEqual(self.body("INBOX", uids[0], user=("other", "secret")),
                         b"This belongs to other.\r\n")
        self.assertEqual(self.count("INBOX"), 3, "user test's INBOX is not touched")

    def test_text_only_catenate(self):
        """RFC 4469 5: cat-part = text-literal / url; TEXT parts alone."""
        r = self.session()
        msg = small("text only")
        untagged, tagged, _ = self.catenate(r, "Sent", msg[:21], msg[21:])
        _, uids = self.appenduid(tagged, "Sent")
        self.assertEqual(self.body("Sent", uids[0]), msg)

    def test_text_as_nonsynchronizing_literal(self):
        """RFC 4469 5 (text-literal = "TEXT" SP literal) with LITERAL+ {n+}."""
        r = self.session(need=("CATENATE", "UIDPLUS", "LITERAL+"))
        msg = small("nonsync")
        untagged, tagged, conts = self.catenate(r, "Sent", Lit(msg[:21], plus=True),
                                                "/INBOX/;UID=3/;SECTION=TEXT",
                                                Lit(msg[21:], plus=True))
        self.assertEqual(conts, 0)
        _, uids = self.appenduid(tagged, "Sent")
        self.assertEqual(self.body("Sent", uids[0]),
                         msg[:21] + b"Third message body.\r\n" + msg[21:])

    def test_url_octets_are_copied_unchanged(self):
        """RFC 4469 3: no data conversion (the base64 part stays base64 text)."""
        r = self.session()
        untagged, tagged, _ = self.catenate(r, "Sent", b"Subject: raw\r\n\r\n",
                                            "/INBOX/;UID=2/;SECTION=2")
        _, uids = self.appenduid(tagged, "Sent")
        self.assertEqual(self.body("Sent", uids[0]),
                         b"Subject: raw\r\n\r\n" + "\r\n".join(b64lines(ATTACH)).encode())

    def test_catenate_into_the_selected_mailbox(self):
        """RFC 4469 3 (responses as for APPEND): EXISTS for the selected mailbox."""
        r = self.session(select="INBOX")
        untagged, tagged, _ = self.catenate(r, "INBOX", "/INBOX/;UID=1")
        self.assertTrue(tagged.startswith(b"OK"), tagged)
        untagged += self.ok(r, "NOOP")
        self.assertIn(b"* 4 EXISTS", untagged)

    def test_catenate_combined_with_multiappend(self):
        """RFC 4469 1/3: CATENATE coexists with MULTIAPPEND; APPENDUID lists all UIDs."""
        r = self.session(need=("CATENATE", "UIDPLUS", "MULTIAPPEND"))
        plain = small("plain")
        untagged, tagged, _ = r.lit_command(
            "APPEND Sent CATENATE (URL ", quote("/INBOX/;UID=1"), ") (\\Flagged) ", Lit(plain),
            " CATENATE (TEXT ", Lit(b"Subject: cat\r\n\r\n"), " URL ",
            quote("/INBOX/;UID=3/;SECTION=TEXT"), ")")
        _, uids = self.appenduid(tagged, "Sent")
        self.assertEqual(len(uids), 3)
        self.assertEqual(self.body("Sent", uids[0]), self.body("INBOX", 1))
        self.assertEqual(self.body("Sent", uids[1]), plain)
        self.assertEqual(self.body("Sent", uids[2]), b"Subject: cat\r\n\r\nThird message body.\r\n")
        self.assertIn("\\flagged", self.flags("Sent", uids[1]))

    def test_multiappend_with_a_bad_url_appends_nothing(self):
        """RFC 3502 atomicity with RFC 4469 4.1."""
        r = self.session(need=("CATENATE", "MULTIAPPEND"))
        untagged, tagged, _ = r.lit_command(
            "APPEND Sent ", Lit(small("first")), " CATENATE (URL ", quote("/INBOX/;UID=1"),
            ") CATENATE (URL ", quote("/INBOX/;UID=77"), ")")
        self.refused(tagged, "NO", "BADURL")
        self.assertEqual(badurl_of(tagged), "/INBOX/;UID=77")
        self.assertEqual(self.count("Sent"), 0)

    def test_badurl_stale_uidvalidity(self):
        """RFC 5092 5/6: a UIDVALIDITY that does not match makes the URL stale."""
        self.badurl(self.session(), "/Drafts;UIDVALIDITY=385759046/;UID=20")

    def test_badurl_no_such_uid(self):
        """RFC 4469 4.1: invalid message UID."""
        self.badurl(self.session(), "/INBOX/;UID=99")

    def test_badurl_no_such_mailbox(self):
        """RFC 4469 4.1 / RFC 5092 5: a mailbox that does not exist."""
        self.badurl(self.session(), "/NoSuchMailbox/;UID=1")

    def test_badurl_no_such_part(self):
        """RFC 4469 4.1: invalid body part."""
        self.badurl(self.session(), "/INBOX/;UID=2/;SECTION=7")
        self.badurl(self.session(), "/INBOX/;UID=2/;SECTION=BOGUS")

    def test_badurl_syntax(self):
        """RFC 4469 4.1: bad URL syntax (RFC 5092 11: nz-number UIDs)."""
        r = self.session()
        for url in ("/INBOX/;UID=abc", "/INBOX/;UID=0", "/INBOX/;UIDX=1", "/INBOX/;UID=",
                    "/INBOX/;UID=1/;PARTIAL=x"):
            self.badurl(r, url)

    def test_badurl_unknown_scheme(self):
        """RFC 4469 4.1: unrecognized URL schema."""
        self.badurl(self.session(), "http://example.com/INBOX/;UID=1")

    def test_badurl_not_a_message(self):
        """RFC 4469 3: URL parts name messages or message parts, not mailboxes or searches."""
        r = self.session()
        self.badurl(r, "/INBOX")
        self.badurl(r, "/INBOX?ALL")

    def test_relative_path_reference_is_refused(self):
        """RFC 5092 7.2: implementations MUST NOT accept relative-path IMAP references (even
        with a mailbox selected, where RFC 4469 3 names a base URL with the mailbox)."""
        r = self.session(select="INBOX")
        self.badurl(r, ";UID=1")
        self.badurl(r, "INBOX/;UID=1")

    def test_absolute_and_network_path_urls_are_refused(self):
        """RFC 4469 3 note: an absolute IMAP URL (or one naming another user or server) is
        outside the specification, and such a server returns NO (BADURL, 4.1)."""
        s = self.server()
        r = self.session()
        for url in ("imap://test@%s:%d/INBOX/;UID=1" % (s.host, s.port),
                    "imap://other@%s:%d/INBOX/;UID=1" % (s.host, s.port),
                    "//other@%s/INBOX/;UID=1" % s.host):
            self.badurl(r, url)

    def test_badurl_names_the_first_bad_url(self):
        """RFC 4469 4.1: BADURL contains the first URL that caused the failure."""
        r = self.session()
        self.badurl(r, "/INBOX/;UID=98", "/INBOX/;UID=1", "/INBOX/;UID=99")

    def test_empty_catenate_list_is_bad(self):
        """RFC 4469 5: "CATENATE" SP "(" cat-part *(SP cat-part) ")"."""
        r = self.session()
        untagged, tagged = r.cmd("APPEND Sent CATENATE ()")
        self.assertTrue(tagged.startswith(b"BAD"), tagged)
        untagged, tagged = r.cmd('APPEND Sent CATENATE (FOO "x")')
        self.assertTrue(tagged.startswith(b"BAD"), tagged)
        self.assertEqual(self.count("Sent"), 0)

    def test_catenate_to_missing_mailbox_is_trycreate(self):
        """RFC 4469 3: responses behave as the original APPEND's (RFC 3501 TRYCREATE)."""
        r = self.session()
        untagged, tagged, _ = self.catenate(r, "NoSuchBox", "/INBOX/;UID=1")
        self.refused(tagged, "NO", "TRYCREATE")


# ---------------------------------------------------------------------------------------
# APPENDLIMIT, RFC 7889

LIMIT = 1000


class AppendLimitTest(Base):

    def limited(self, select=None):
        return self.session(select=select, need=("APPENDLIMIT=%d" % LIMIT,),
                            args=("--append-limit", str(LIMIT)))

    def test_default_capability(self):
        """RFC 7889 2 (a): one limit for every mailbox; 64 MiB by default here."""
        self.session(need=("APPENDLIMIT=67108864",))

    def test_capability_follows_the_option(self):
        """RFC 7889 2 (a): --append-limit sets the advertised APPENDLIMIT=<n>, once."""
        r = self.limited()
        have = self.capabilities(r)
        self.assertEqual([c for c in have if c.startswith("APPENDLIMIT")],
                         ["APPENDLIMIT=%d" % LIMIT])

    def test_status_appendlimit_example(self):
        """RFC 7889 3.1 example: STATUS INBOX (APPENDLIMIT)."""
        r = self.limited()
        untagged = self.ok(r, "STATUS INBOX (APPENDLIMIT)", tag="t1")
        st = responses(untagged, "STATUS")
        self.assertEqual(len(st), 1, untagged)
        self.assertEqual(st[0][2], ["APPENDLIMIT", LIMIT])
        untagged = self.ok(r, "status Sent (messages appendlimit)")
        vals = responses(untagged, "STATUS")[0][2]
        self.assertEqual(dict(zip([upper(x) for x in vals[0::2]], vals[1::2])),
                         {"MESSAGES": 0, "APPENDLIMIT": LIMIT})

    def test_status_appendlimit_default(self):
        """RFC 7889 3.1 with the default limit."""
        r = self.session(need=("APPENDLIMIT=67108864",))
        self.assertEqual(self.status(r, "INBOX", "APPENDLIMIT"), 67108864)

    def test_append_over_the_limit_is_no_toobig(self):
        """RFC 7889 4: the server SHALL reject it with a tagged TOOBIG response code."""
        r = self.limited()
        untagged, tagged, _ = r.lit_command("APPEND Sent ", Lit(small(size=LIMIT + 1)))
        self.refused(tagged, "NO", "TOOBIG")
        self.assertEqual(self.count("Sent"), 0)
        self.ok(r, "NOOP")

    def test_append_of_exactly_the_limit_is_accepted(self):
        """RFC 7889 5: the number is the maximum message size the server will accept."""
        r = self.limited()
        untagged, tagged, _ = r.lit_command("APPEND Sent ", Lit(small(size=LIMIT)))
        self.assertTrue(tagged.startswith(b"OK"), tagged)
        self.assertEqual(self.count("Sent"), 1)

    def test_nonsync_literal_over_the_limit_is_skipped(self):
        """RFC 7889 4 (tagged TOOBIG) with RFC 7888 4 option 1: the server reads the
        literal it refuses; its octets are not taken as commands."""
        r = self.limited()
        body = b"Subject: big\r\n\r\n" + b"a99 LOGOUT\r\na98 CREATE Hacked\r\n" * 60
        tag = r.tag()
        r.send(tag.encode() + b" APPEND Sent {%d+}\r\n" % len(body) + body + b"\r\n")
        untagged, tagged = r.until_tagged(tag)
        self.assertTrue(tagged.startswith((b"NO", b"BAD")), tagged)
        self.assertEqual(code_of(tagged)[1], "TOOBIG", tagged)
        untagged2 = self.ok(r, "NOOP")
        for data in (untagged, untagged2):
            self.assertNotIn(b"BYE", data)
            self.assertIsNone(re.search(rb"^a9[89] ", data, re.M), data)
        self.assertNotIn(b"Hacked", self.ok(r, 'LIST "" *'))
        self.assertEqual(self.count("Sent"), 0)

    def test_mailbox_name_as_a_literal_is_not_limited(self):
        """RFC 7889 5: the limit is on the message; a mailbox name sent as a literal longer
        than APPENDLIMIT is not refused for it."""
        r = self.session(need=("APPENDLIMIT=4",), args=("--append-limit", "4"))
        untagged, tagged, conts = r.lit_command("APPEND ", Lit("Sent"), " ", Lit(small()))
        self.assertEqual(conts, 1, "a + for the name only")
        self.refused(tagged, "NO", "TOOBIG")
        untagged, tagged, conts = r.lit_command("APPEND ", Lit("saved-messages"), " ", Lit(b"x"))
        self.assertTrue(tagged.startswith(b"OK"), tagged)
        self.assertEqual((conts, self.count("saved-messages")), (2, 1))

    def test_catenate_over_the_limit_is_toobig(self):
        """RFC 4469 4.2 / RFC 7889 4: the catenated result is over the limit."""
        r = self.session(need=("APPENDLIMIT=%d" % LIMIT, "CATENATE"),
                         args=("--append-limit", str(LIMIT)))
        untagged, tagged, _ = r.lit_command("APPEND Sent CATENATE (TEXT ",
                                            Lit(b"Subject: x\r\n\r\n"), " URL ",
                                            quote("/INBOX/;UID=2"), ")")
        self.refused(tagged, "NO", "TOOBIG")
        self.assertEqual(self.count("Sent"), 0)

    def test_multiappend_with_one_message_over_the_limit(self):
        """RFC 7889 4 with RFC 3502: nothing is appended."""
        r = self.session(need=("APPENDLIMIT=%d" % LIMIT, "MULTIAPPEND"),
                         args=("--append-limit", str(LIMIT)))
        untagged, tagged, _ = r.lit_command("APPEND Sent ", Lit(small("a")), " ",
                                            Lit(small("b", size=LIMIT + 500)), " ", Lit(small("c")))
        self.refused(tagged, "NO", "TOOBIG")
        self.assertEqual(self.count("Sent"), 0)

    def test_limit_zero_accepts_no_append(self):
        """RFC 7889 5: APPENDLIMIT=0 means no APPEND is accepted at all; whatever limit the
        server advertises for --append-limit 0, it must keep to it."""
        r = self.session(need=(), args=("--append-limit", "0"))
        limits = [c for c in self.capabilities(r) if c.startswith("APPENDLIMIT")]
        untagged, tagged, _ = r.lit_command("APPEND Sent ", Lit(small()))
        if limits == ["APPENDLIMIT=0"]:
            self.refused(tagged, "NO", "TOOBIG")
        else:
            self.assertTrue(tagged.startswith(b"OK"), (limits, tagged))


# ---------------------------------------------------------------------------------------
# LITERAL-, RFC 7888

MINUS = ("--capability", "-LITERAL+", "--capability", "+LITERAL-")


class LiteralMinusTest(Base):

    def minus(self, need=("LITERAL-",), select=None):
        return self.session(need=need, args=MINUS, select=select)

    def test_literal_minus_without_literal_plus(self):
        """RFC 7888 5: LITERAL- advertised; servers MUST NOT advertise both."""
        r = self.minus()
        self.assertNotIn("LITERAL+", self.capabilities(r))
        self.assertNotIn(b"LITERAL+", r.greeting)

    def test_plus_literal_minus_alone_never_advertises_both(self):
        """RFC 7888 5: MUST NOT advertise LITERAL+ and LITERAL- together."""
        r = self.session(need=("LITERAL-",), args=("--capability", "+LITERAL-"))
        self.assertNotIn("LITERAL+", self.capabilities(r))

    def test_example_login_with_nonsync_literals(self):
        """RFC 7888 3 example: A001 LOGIN {11+} FRED FOOBAR {7+} fat man."""
        s = self.start_or_fail("-u", "FRED FOOBAR:fat man:" + self.mine, *MINUS)
        r = s.raw()
        self.addCleanup(r.close)
        self.assertIn(b"LITERAL-", r.greeting + r.ok("CAPABILITY"))
        r.send(b"A001 LOGIN {11+}\r\nFRED FOOBAR {7+}\r\nfat man\r\n")
        try:
            untagged, tagged = r.until_tagged("A001")
        except EOFError as e:
            self.fail("the server closed the connection: %s" % e)
        self.assertTrue(tagged.startswith(b"OK"), tagged)
        self.assertNotIn(b"+ ", untagged)

    def test_nonsync_literal_of_4096_octets_is_accepted(self):
        """RFC 7888 5: non-synchronizing literals up to 4096 octets; no continuation request
        for them (3)."""
        r = self.minus()
        untagged, tagged, conts = r.lit_command("APPEND Sent ", Lit(small(size=4096), plus=True))
        self.assertTrue(tagged.startswith(b"OK"), tagged)
        self.assertEqual(conts, 0)
        self.assertEqual(self.count("Sent"), 1)

    def test_nonsync_append_over_4096_is_refused_with_toobig(self):
        """RFC 7888 5: a non-synchronizing literal over 4096 octets: for APPEND the tagged BAD
        MUST carry TOOBIG (or the server sends BYE, which SHOULD carry it, 4 option 2).  The
        literal's octets are never taken as commands."""
        r = self.minus()
        body = b"Subject: big\r\n\r\n" + b"a99 LOGOUT\r\na98 CREATE Hacked\r\n" * 140
        self.assertGreater(len(body), 4096)
        r.send(b"t50 APPEND Sent {%d+}\r\n" % len(body) + body + b"\r\n")
        seen = b""
        bye = False
        try:
            while True:
                line = r.read_response_line()
                seen += line
                if line.startswith(b"t50 "):
                    break
                if line.startswith(b"* BYE"):      # its TOOBIG code is only a SHOULD
                    bye = True
                    break
        except (EOFError, OSError):
            self.fail("connection closed without BAD [TOOBIG] or BYE: %r" % seen)
        self.assertIsNone(re.search(rb"^a9[89] ", seen, re.M), seen)
        if not bye:
            self.assertEqual(code_of(seen.split(b"t50 ", 1)[1])[:2], ("BAD", "TOOBIG"), seen)
            after = self.ok(r, "NOOP")
            self.assertIsNone(re.search(rb"^a9[89] |^\* BYE", after, re.M), after)
            self.assertNotIn(b"Hacked", self.ok(r, 'LIST "" *'))
        self.assertEqual(self.count("Sent"), 0)
        self.assertNotIn("Hacked", str(self.ok(self.raw(self.server()), 'LIST "" *')))

    def test_nonsync_literal_over_4096_in_another_command(self):
        """RFC 7888 5: the 4096 limit holds for any command (BAD, or BYE)."""
        r = self.minus(select="INBOX")
        text = b"a97 LOGOUT\r\n" * 400
        r.send(b"t60 SEARCH TEXT {%d+}\r\n" % len(text) + text + b"\r\n")
        seen = b""
        try:
            while True:
                line = r.read_response_line()
                seen += line
                if line.startswith((b"t60 ", b"* BYE")):
                    break
        except (EOFError, OSError):
            pass
        self.assertTrue(b"t60 BAD" in seen or b"* BYE" in seen,
                        "BAD or BYE for a 4800-octet {n+} literal: %r" % seen)
        self.assertNotIn(b"a97 ", seen)
        if b"t60 " in seen:
            self.assertTrue(seen.split(b"t60 ", 1)[1].startswith(b"BAD"), seen)
            self.assertNotIn(b"a97 ", self.ok(r, "NOOP"))

    def test_synchronizing_literal_over_4096_still_works(self):
        """RFC 7888 5: larger literals MUST be sent synchronizing, as in RFC 3501."""
        r = self.minus()
        untagged, tagged, conts = r.lit_command("APPEND Sent ", Lit(small(size=9000)))
        self.assertTrue(tagged.startswith(b"OK"), tagged)
        self.assertEqual(conts, 1)
        self.assertEqual(self.count("Sent"), 1)

    def test_nonsync_literal8_with_binary(self):
        """RFC 7888 6: ~{n+} is allowed with BINARY and LITERAL- (up to 4096)."""
        r = self.minus(need=("LITERAL-", "BINARY"))
        msg = b"Subject: bin\r\nContent-Transfer-Encoding: binary\r\n\r\n\x00\x01\x02end"
        untagged, tagged, conts = r.lit_command("APPEND Sent ", Lit(msg, plus=True, eight=True))
        self.assertTrue(tagged.startswith(b"OK"), tagged)
        self.assertEqual(conts, 0)

    def test_multiappend_with_nonsync_literals(self):
        """RFC 7888 7: LITERAL- works with MULTIAPPEND as LITERAL+ does."""
        r = self.minus(need=("LITERAL-", "MULTIAPPEND"))
        untagged, tagged, conts = r.lit_command("APPEND Sent ", Lit(small("a"), plus=True), " ",
                                                Lit(small("b"), plus=True))
        self.assertTrue(tagged.startswith(b"OK"), tagged)
        self.assertEqual(conts, 0)
        self.assertEqual(self.count("Sent"), 2)
