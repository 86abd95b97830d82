"""BINARY (RFC 3516; and RFC 9051 6.4.5/7.5.2, which took FETCH BINARY into IMAP4rev2),
through raw connections.

Written from the RFC before the server implements it.  The fixture is built by
binary_mbox() from the decoded contents below, so every expected answer is known by
construction:

 INBOX  seq uid  flags   structure
         1   1   \\Seen   multipart/mixed (boundary "outer"):
                           1   text/plain utf-8, quoted-printable  -> QP_DECODED (8-bit, no NUL)
                           2   application/octet-stream, base64   -> BIN (512 octets, NULs)
                           3   text/plain, "Base64" (mixed case)  -> TXT
                           4   application/x-thing, x-imapmem-unknown (an unknown CTE)
                           5   message/rfc822 (Subject is an RFC 2047 encoded-word)
                           5.1   its text/plain body            -> b"Inner body."
                           6   multipart/alternative (boundary "inner")
                           6.1   text/plain 7bit                -> b"alt plain"
                           6.2   text/html base64               -> HTML
                           7   text/plain, no CTE (7bit)          -> SEVEN
                           8   text/plain utf-8, 8bit             -> EIGHT
         2   2   unseen  text/plain, base64 -> TXT
         3   3   unseen  application/octet-stream, base64 -> BIN
         4   4   unseen  application/x-thing, x-imapmem-unknown

Choices the RFC leaves open and that are not tested: whether NUL-free 8-bit data comes as a
quoted string, a literal or a literal8 (a SHOULD); whether the server re-encodes an APPENDed
binary part (any change MUST NOT lose data, and BODYSTRUCTURE must then describe BODY[]).
"""
import base64
import binascii
import re

from wire import Lit, Literal8, ServerCase, capabilities, fetches, status_parts, upper, write_mbox

# ---------------------------------------------------------------------------------------
# The fixture

QP_LINES = ["Caf=C3=A9 au lait =3D 3=E2=82=AC, soft=", "break here.", "Second line=20", "end"]
QP_DECODED = "Café au lait = 3€, softbreak here.\r\nSecond line \r\nend".encode()
BIN = bytes(range(256)) * 2
TXT = b"Hello from base64.\r\nSecond line.\r\n"
HTML = b"<p>alt html</p>\r\n"
SEVEN = b"Plain seven-bit text.\r\nTwo lines."
EIGHT = "Grüße aus München".encode()
INNER_LINES = ["Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=", "From: Inner <inner@example.com>", "",
               "Inner body."]
INNER = "\r\n".join(INNER_LINES).encode()
UNKNOWN_CTE = "x-imapmem-unknown"
LEAVES = {"1": QP_DECODED, "2": BIN, "3": TXT, "5.1": b"Inner body.", "6.1": b"alt plain",
          "6.2": HTML, "7": SEVEN, "8": EIGHT}


def b64lines(data):
    s = base64.b64encode(data).decode()
    return [s[i:i + 76] for i in range(0, len(s), 76)]


def message(n, status, headers, body):
    return "\n".join(["From sender@example.com Mon Jan %02d 10:00:00 2024" % (14 + n),
                      "From: Sender <sender@example.com>",
                      "To: Test <test@example.com>",
                      "Subject: binary test %d" % n,
                      "Date: Mon, %d Jan 2024 10:00:00 +0000" % (14 + n),
                      "Message-ID: <bin%d@binary.example>" % n,
                      "MIME-Version: 1.0"] + headers +
                     ["Status: " + status, "X-UID: %d" % n, ""] + body) + "\n"


def binary_mbox():
    m1 = message(1, "RO", ['Content-Type: multipart/mixed; boundary="outer"'], [
        "This is a multipart message.",
        "--outer",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: quoted-printable",
        ""] + QP_LINES + [
        "--outer",
        "Content-Type: application/octet-stream",
        "Content-Transfer-Encoding: base64",
        ""] + b64lines(BIN) + [
        "--outer",
        "Content-Type: text/plain; charset=us-ascii",
        "Content-Transfer-Encoding: Base64",
        ""] + b64lines(TXT) + [
        "--outer",
        "Content-Type: application/x-thing",
        "Content-Transfer-Encoding: " + UNKNOWN_CTE,
        "",
        "opaque data",
        "--outer",
        "Content-Type: message/rfc822",
        ""] + INNER_LINES + [
        "--outer",
        'Content-Type: multipart/alternative; boundary="inner"',
        "",
        "--inner",
        "Content-Type: text/plain",
        "",
        "alt plain",
        "--inner",
        "Content-Type: text/html",
        "Content-Transfer-Encoding: base64",
        ""] + b64lines(HTML) + [
        "--inner--",
        "",
        "--outer",
        "Content-Type: text/plain",
        "",
        "Plain seven-bit text.",
        "Two lines.",
        "--outer",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        "Grüße aus München",
        "--outer--"])
    m2 = message(2, "O", ["Content-Type: text/plain", "Content-Transfer-Encoding: base64"],
                 b64lines(TXT))
    m3 = message(3, "O", ["Content-Type: application/octet-stream",
                          "Content-Transfer-Encoding: base64"], b64lines(BIN))
    m4 = message(4, "O", ["Content-Type: application/x-thing",
                          "Content-Transfer-Encoding: " + UNKNOWN_CTE], ["opaque data"])
    return "\n".join([m1, m2, m3, m4])


def binary_message(subject="=?UTF-8?Q?Gr=C3=BC=C3=9Fe?=", data=BIN):
    """A message to APPEND whose body is raw binary (NULs, lone CR and LF)."""
    return (b"From: Sender <sender@example.com>\r\nTo: Test <test@example.com>\r\n"
            b"Subject: " + subject.encode() + b"\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: application/octet-stream\r\n"
            b"Content-Transfer-Encoding: binary\r\n\r\n" + data)


def decode_cte(data, encoding):
    """Undo a BODYSTRUCTURE body-fld-enc on BODY[...] data."""
    enc = bytes(encoding).decode().upper()
    if enc == "BASE64":
        return base64.b64decode(b"".join(data.split()))
    if enc == "QUOTED-PRINTABLE":
        return binascii.a2b_qp(data)
    return bytes(data)


class Base(ServerCase):
    NEED = ("BINARY",)

    def setUp(self):
        self.dir = self.tempdir()
        write_mbox(self.dir, "INBOX.mbox", binary_mbox())
        self.srv = None

    def capabilities(self, r):
        return capabilities(r.ok("CAPABILITY"))

    def session(self, select="INBOX", need=None, args=()):
        if self.srv is None:
            self.srv = self.start_or_fail(*(list(args) + [self.dir]))
        r = self.raw(self.srv)
        have = self.capabilities(r)
        missing = [c for c in (self.NEED if need is None else need) if c not in have]
        self.assertFalse(missing, "capability %s not advertised; the server has: %s"
                         % (" ".join(missing), " ".join(sorted(have))))
        if select:
            r.ok("SELECT " + select)
        return r

    def ok(self, r, command, tag=None):
        return r.ok(command, tag)

    def fetch(self, r, seq, items, uid=False):
        """{ITEM: value} of message seq (a UID with uid=True) for FETCH items."""
        untagged = self.ok(r, "%sFETCH %d %s" % ("UID " if uid else "", seq, items))
        f = fetches(untagged)
        if uid:
            f = {v.get("UID"): v for v in f.values()}
        self.assertIn(seq, f, untagged[:300])
        return f[seq]

    def flags(self, r, seq):
        return {x.lower() for x in self.fetch(r, seq, "FLAGS")["FLAGS"]}

    def refused(self, r, command, words=(b"NO", b"BAD"), sections=None):
        """The command must fail (one of words) without sending BINARY data for the refused
        sections (any section when sections is None)."""
        untagged, tagged = r.cmd(command)
        self.assertTrue(tagged.startswith(words), "%s -> %r" % (command, tagged))
        for items in fetches(untagged).values():
            sent = [k for k in map(str.upper, items) if k.startswith("BINARY") and
                    (sections is None or re.sub(r"^BINARY(\.SIZE)?\[([^\]]*)\].*", r"\2", k)
                     in sections)]
            self.assertFalse(sent, "%s sent BINARY data: %r" % (command, untagged[:300]))
        return tagged

    def append(self, r, *pieces):
        untagged, tagged, _ = r.lit_command("APPEND INBOX ", *pieces)
        self.assertTrue(tagged.startswith(b"OK"), "APPEND -> %r" % tagged)
        return untagged + self.ok(r, "NOOP")


# ---------------------------------------------------------------------------------------
# FETCH BINARY, BINARY.PEEK, BINARY.SIZE

class FetchBinaryTest(Base):

    def test_capability_binary(self):
        """RFC 3516 4.1: servers MUST include BINARY in the capability list."""
        self.session(select=None)

    def test_base64_part_with_nul_comes_as_literal8(self):
        """RFC 3516 4.2/4.3: the section after CTE decoding; data with NUL cannot be a
        string (RFC 3501 CHAR8 excludes NUL), so it is a literal8."""
        r = self.session()
        v = self.fetch(r, 1, "BINARY.PEEK[2]")["BINARY[2]"]
        self.assertIsInstance(v, Literal8, "data with NUL must come as ~{n}: %r" % (v[:20],))
        self.assertEqual(bytes(v), BIN)

    def test_quoted_printable_part_is_decoded(self):
        """RFC 3516 4.2: soft line breaks and =XX escapes are undone; CRLF kept (6)."""
        r = self.session()
        self.assertEqual(bytes(self.fetch(r, 1, "BINARY.PEEK[1]")["BINARY[1]"]), QP_DECODED)

    def test_base64_cte_name_is_case_insensitive(self):
        """RFC 2045 6.1: CTE values are case-insensitive ("Base64")."""
        r = self.session()
        self.assertEqual(bytes(self.fetch(r, 1, "BINARY.PEEK[3]")["BINARY[3]"]), TXT)

    def test_identity_encodings_are_unchanged(self):
        """RFC 3516 3: 7bit (no CTE header, implicitly 7bit) and 8bit need no decoding."""
        r = self.session()
        f = self.fetch(r, 1, "(BINARY.PEEK[7] BINARY.PEEK[8])")
        self.assertEqual(bytes(f["BINARY[7]"]), SEVEN)
        self.assertEqual(bytes(f["BINARY[8]"]), EIGHT)

    def test_nested_leaf_parts(self):
        """RFC 3516 7: section-binary = "[" [section-part] "]", nested parts too."""
        r = self.session()
        f = self.fetch(r, 1, "(BINARY.PEEK[6.1] BINARY.PEEK[6.2] BINARY.PEEK[5.1])")
        self.assertEqual(bytes(f["BINARY[6.1]"]), b"alt plain")
        self.assertEqual(bytes(f["BINARY[6.2]"]), HTML)
        self.assertEqual(bytes(f["BINARY[5.1]"]), b"Inner body.")

    def test_section_1_of_single_part_messages(self):
        """RFC 3501 6.4.5 part numbering: a single-part message has part 1."""
        r = self.session()
        self.assertEqual(bytes(self.fetch(r, 2, "BINARY.PEEK[1]")["BINARY[1]"]), TXT)
        v = self.fetch(r, 3, "BINARY.PEEK[1]")["BINARY[1]"]
        self.assertIsInstance(v, Literal8)
        self.assertEqual(bytes(v), BIN)

    def test_binary_size_is_the_decoded_size(self):
        """RFC 3516 4.3: BINARY.SIZE MUST match the size of the data FETCH BINARY returns."""
        r = self.session()
        for sec, data in sorted(LEAVES.items()):
            f = self.fetch(r, 1, "(BINARY.SIZE[%s] BINARY.PEEK[%s])" % (sec, sec))
            self.assertEqual(f["BINARY.SIZE[%s]" % sec], len(data), sec)
            self.assertEqual(f["BINARY.SIZE[%s]" % sec], len(f["BINARY[%s]" % sec]), sec)
        self.assertEqual(self.fetch(r, 3, "BINARY.SIZE[1]")["BINARY.SIZE[1]"], len(BIN))

    def test_binary_size_alone_sends_no_data(self):
        """RFC 3516 4.2: BINARY.SIZE asks for the size only."""
        r = self.session()
        f = self.fetch(r, 1, "BINARY.SIZE[2]")
        self.assertEqual(f["BINARY.SIZE[2]"], 512)
        self.assertNotIn("BINARY[2]", f)

    def test_partial_counts_decoded_octets(self):
        """RFC 3516 4.2/4.3: <partial> refers to the DECODED data; the response names the
        origin, BINARY[2]<250>."""
        r = self.session()
        f = self.fetch(r, 1, "(BINARY.PEEK[2]<0.10> BINARY.PEEK[1]<5.10>)")
        self.assertEqual(bytes(f["BINARY[2]<0>"]), BIN[:10])
        self.assertIsInstance(f["BINARY[2]<0>"], Literal8)
        self.assertEqual(bytes(f["BINARY[1]<5>"]), QP_DECODED[5:15])
        f = self.fetch(r, 1, "BINARY.PEEK[2]<250.12>")
        self.assertEqual(bytes(f["BINARY[2]<250>"]), BIN[250:262])
        f = self.fetch(r, 1, "BINARY.PEEK[2]<505.100>")
        self.assertEqual(bytes(f["BINARY[2]<505>"]), BIN[505:])

    def test_partial_past_the_end_is_empty(self):
        """RFC 3516 4.2: the same semantics as a partial BODY fetch (RFC 3501 6.4.5: an
        origin beyond the end gives an empty string)."""
        r = self.session()
        f = self.fetch(r, 1, "BINARY.PEEK[2]<1000.5>")
        self.assertEqual(bytes(f["BINARY[2]<1000>"]), b"")

    def test_binary_sets_seen(self):
        """RFC 3516 4.2: BINARY, unlike BINARY.PEEK, implicitly sets \\Seen."""
        r = self.session()
        self.assertNotIn("\\seen", self.flags(r, 2))
        self.assertEqual(bytes(self.fetch(r, 2, "BINARY[1]")["BINARY[1]"]), TXT)
        self.assertIn("\\seen", self.flags(r, 2))

    def test_binary_peek_does_not_set_seen(self):
        """RFC 3516 4.2: BINARY.PEEK does not set \\Seen."""
        r = self.session()
        self.fetch(r, 3, "BINARY.PEEK[1]")
        self.fetch(r, 3, "BINARY.PEEK[1]<0.4>")
        self.assertNotIn("\\seen", self.flags(r, 3))

    def test_uid_fetch_binary(self):
        """RFC 3516 4.2 items through UID FETCH."""
        r = self.session()
        f = self.fetch(r, 3, "BINARY.PEEK[1]", uid=True)
        self.assertEqual(bytes(f["BINARY[1]"]), BIN)

    def test_unknown_cte_is_no_unknown_cte(self):
        """RFC 3516 4.3: an unknown CTE MUST fail the request with NO [UNKNOWN-CTE], for
        BINARY and for BINARY.SIZE."""
        r = self.session()
        for cmd, sec in (("FETCH 4 BINARY[1]", "1"), ("FETCH 4 BINARY.PEEK[1]", "1"),
                         ("FETCH 4 BINARY.SIZE[1]", "1"), ("FETCH 1 BINARY.PEEK[4]", "4"),
                         ("FETCH 1 BINARY.SIZE[4]", "4"), ("UID FETCH 4 BINARY.PEEK[1]", "1"),
                         ("FETCH 1 (BINARY.PEEK[3] BINARY.PEEK[4])", "4")):
            # (whether part 3 of the last one is still sent is not said)
            tagged = self.refused(r, cmd, words=(b"NO",), sections=(sec,))
            word, code, _ = status_parts(tagged)
            self.assertEqual(upper(code[0]) if code else None, "UNKNOWN-CTE", "%s -> %r"
                             % (cmd, tagged))

    def test_binary_on_a_multipart_is_an_error(self):
        """RFC 9051 6.4.5: BINARY can only be requested for leaf body parts, not multipart/*
        (RFC 3516 itself does not say; NO or BAD)."""
        r = self.session()
        self.refused(r, "FETCH 1 BINARY.PEEK[6]")
        self.refused(r, "FETCH 1 BINARY.SIZE[6]")

    def test_binary_on_message_rfc822_does_not_decode_encoded_words(self):
        """RFC 9051 6.4.5 excludes message/rfc822 parts too; if a server returns one anyway
        (RFC 3516 allows any section-part), RFC 3516 5 says it MUST NOT convert RFC 2047
        encoded words in it."""
        r = self.session()
        untagged, tagged = r.cmd("FETCH 1 BINARY.PEEK[5]")
        if tagged.startswith(b"OK"):
            self.assertEqual(bytes(fetches(untagged)[1]["BINARY[5]"]), INNER)
        else:
            self.assertTrue(tagged.startswith((b"NO", b"BAD")), tagged)

    def test_section_binary_syntax(self):
        """RFC 3516 7: section-binary has only part numbers; partial is <number.nz-number>;
        BINARY.SIZE takes no partial."""
        r = self.session()
        for item in ("BINARY[HEADER]", "BINARY[TEXT]", "BINARY[1.MIME]", "BINARY.PEEK[1.HEADER]",
                     "BINARY.SIZE[1]<0.5>", "BINARY[1]<5>", "BINARY.PEEK[1]<0.0>",
                     "BINARY[0]", "BINARY.PEEK", "BINARY.SIZE", "BINARY[1"):
            self.refused(r, "FETCH 1 " + item, words=(b"BAD",))


# ---------------------------------------------------------------------------------------
# APPEND with literal8

class AppendBinaryTest(Base):

    def test_append_literal8_keeps_every_octet(self):
        """RFC 3516 4.4: APPEND takes a literal8; a CTE change MUST NOT lose data."""
        r = self.session()
        msg = binary_message()
        untagged = self.append(r, Lit(msg, eight=True))
        self.assertIn(b"* 5 EXISTS", untagged)
        f = self.fetch(r, 5, "(BINARY.PEEK[1] BINARY.SIZE[1])")
        self.assertIsInstance(f["BINARY[1]"], Literal8)
        self.assertEqual(bytes(f["BINARY[1]"]), BIN)
        self.assertEqual(f["BINARY.SIZE[1]"], len(BIN))

    def test_append_literal8_body_is_described_by_bodystructure(self):
        """RFC 3516 6: BODYSTRUCTURE describes the message as if encoded in a CTE of the base
        specification, and FETCH BODY returns it in that form (no NUL: RFC 3501 literals
        cannot carry one)."""
        r = self.session()
        self.append(r, Lit(binary_message(), eight=True))
        f = self.fetch(r, 5, "(BODYSTRUCTURE BODY.PEEK[1] BODY.PEEK[])")
        self.assertNotIn(b"\x00", bytes(f["BODY[]"]))
        self.assertNotIn(b"\x00", bytes(f["BODY[1]"]))
        bs = f["BODYSTRUCTURE"]
        self.assertEqual([bytes(x).upper() for x in bs[:2]], [b"APPLICATION", b"OCTET-STREAM"])
        self.assertEqual(decode_cte(f["BODY[1]"], bs[5]), BIN,
                         "BODY[1] decoded by the BODYSTRUCTURE encoding %r" % (bs[5],))

    def test_append_nonsynchronizing_literal8(self):
        """RFC 4466 2.7/3: literal8 = "~{" number ["+"] "}" CRLF *OCTET with LITERAL+."""
        r = self.session(need=("BINARY", "LITERAL+"))
        untagged, tagged, conts = r.lit_command("APPEND INBOX (\\Seen) ",
                                                Lit(binary_message(), plus=True, eight=True))
        self.assertTrue(tagged.startswith(b"OK"), tagged)
        self.assertEqual(conts, 0, "no continuation request for ~{n+}")
        self.ok(r, "NOOP")
        self.assertEqual(bytes(self.fetch(r, 5, "BINARY.PEEK[1]")["BINARY[1]"]), BIN)
        self.assertIn("\\seen", self.flags(r, 5))

    def test_append_literal8_with_flags_and_date(self):
        """RFC 3516 7: append =/ "APPEND" SP mailbox [SP flag-list] [SP date-time] SP literal8."""
        r = self.session()
        self.append(r, '(\\Flagged) "05-Mar-2024 12:00:00 +0000" ',
                    Lit(binary_message(), eight=True))
        f = self.fetch(r, 5, "(FLAGS INTERNALDATE BINARY.PEEK[1])")
        self.assertIn("\\flagged", {x.lower() for x in f["FLAGS"]})
        # RFC 3501 9: date-day-fixed = (SP DIGIT) / 2DIGIT, so either form of day 5
        self.assertIn(bytes(f["INTERNALDATE"]), (b" 5-Mar-2024 12:00:00 +0000",
                                                 b"05-Mar-2024 12:00:00 +0000"))
        self.assertEqual(bytes(f["BINARY[1]"]), BIN)

    def test_append_literal8_keeps_encoded_words(self):
        """RFC 3516 5: no conversion of RFC 2047 encoded header text on a binary APPEND."""
        r = self.session()
        self.append(r, Lit(binary_message(), eight=True))
        f = self.fetch(r, 5, "BODY.PEEK[HEADER.FIELDS (SUBJECT)]")
        self.assertEqual(bytes(f["BODY[HEADER.FIELDS (SUBJECT)]"]),
                         b"Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n\r\n")

    def test_append_literal8_multipart_binary_part(self):
        """RFC 3516 4.4: a binary part inside a multipart APPENDed as literal8."""
        r = self.session()
        msg = (b"From: a@example.com\r\nSubject: mixed\r\nMIME-Version: 1.0\r\n"
               b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
               b"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
               b"--b\r\nContent-Type: application/octet-stream\r\n"
               b"Content-Transfer-Encoding: binary\r\n\r\n" + BIN +
               b"\r\n--b--\r\n")
        self.append(r, Lit(msg, eight=True))
        f = self.fetch(r, 5, "(BINARY.PEEK[1] BINARY.PEEK[2])")
        self.assertEqual(bytes(f["BINARY[1]"]), b"hello")
        self.assertEqual(bytes(f["BINARY[2]"]), BIN)

    def test_append_literal8_of_plain_text(self):
        """RFC 3516 7: literal8 may hold any message, kept byte for byte."""
        r = self.session()
        msg = b"From: a@example.com\r\nSubject: plain\r\n\r\nJust text.\r\n"
        self.append(r, Lit(msg, eight=True))
        self.assertEqual(bytes(self.fetch(r, 5, "BODY.PEEK[]")["BODY[]"]), msg)
