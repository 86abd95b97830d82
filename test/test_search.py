"""SEARCH (RFC 3501 6.4.4) through the wire, against fixtures/search.mbox.

Every expected answer below comes from this table (the fixture was built to it), never from
the server.  INTERNALDATE is the mbox From-line date (10:00:00 +0000 unless noted); "sent" is
the Date: header (09:15:00 +0000 unless noted).  Flags come from Status (R = \\Seen, no O =
\\Recent), X-Status (A F T D) and X-Keywords.  Sizes are RFC822.SIZE (CRLF, without the
Status/X-Status/X-Keywords/X-UID lines), approximate to +-2 octets.  Every message has
`Message-ID: <mN@fixture.example>` where N is its sequence number.

 seq uid INTERNALDATE  sent         flags                      size facts
  1    3 01-Mar-2024   24-Feb-2024  \\Seen $Work                  254 From Alice Anders
       <alice@example.com>; To Bob Brown <bob@example.org>; Subject "Quarterly report";
       X-Project: Falcon; body "aardvark"
  2    5 02-Mar-2024   23-Feb-2024  \\Seen \\Answered              299 From bob; To alice;
       Cc Carol Chen <carol@example.net>; Subject "Re: Quarterly report";
       In-Reply-To <m1@...>; body "bumblebee"
  3    6 03-Mar-2024   22-Feb-2024  \\Seen \\Flagged               377 From carol;
       To Dave Dunn <dave@example.com>; Bcc Grace Hopper <grace@example.com>;
       Subject =?UTF-8?B?...?= = "Grüße aus München - Munich greetings"; 8bit body "Grüße"
  4   10 04-Mar-2024   21-Feb-2024  \\Recent                      615 From dave;
       To Erin Eve <erin@example.org>; Subject =?ISO-8859-1?Q?Caf=E9_Brunch_Menu?= =
       "Café Brunch Menu"; multipart/alternative: text/plain QP utf-8 "caf=C3=A9" (café),
       "xylo=" soft break "phone" (xylophone), "Total =3D 12 EUR"; text/html "marimba"
  5   11 05-Mar-2024   20-Feb-2024  \\Seen \\Answered \\Flagged     698 From erin; To alice,
       bob; Cc dave; Subject "Lunch plans"; multipart/mixed with a base64 text/plain part:
       "kumquat" split across two base64 lines, "only visible after base64"
  6   12 06-Mar-2024   19-Feb-2024  \\Deleted                     228 From Frank Fisher
       <frank@example.net>; To carol; Subject "Old minutes"; body "falcon"
  7   20 07-Mar-2024   18-Feb-2024  \\Draft                       229 From alice; To dave;
       sent 23:30 -0800 (19-Feb in UTC); Subject "Draft: proposal"; body "narwhal"
  8   21 08-Mar-2024   17-Feb-2024  \\Seen $Work Urgent            253 From bob; To carol;
       Cc alice; Subject "Budget"; X-Project: Heron; body "budget"
  9   22 09-Mar-2024   16-Feb-2024  \\Recent                      206 From
       =?UTF-8?Q?Zo=C3=AB_Zimmer?= (Zoë Zimmer) <zoe@example.com>; To bob;
       Subject "Hello from Zoe"; INTERNALDATE 00:30 +0100 (08-Mar in UTC)
 10   30 10-Mar-2024   15-Feb-2024  \\Seen \\Answered Urgent       257 From dave; To alice;
       Bcc bob; Subject "Re: Budget"; X-Note "alpha beta" folded onto " gamma delta";
       body "Budget"
 11   31 11-Mar-2024   14-Feb-2024  \\Flagged \\Draft             6474 From carol;
       To Frank Fisher <frank@example.net>; Subject "Weekly sync"; 90 filler lines
 12   40 12-Mar-2024   13-Feb-2024  \\Deleted                     179 From erin; To dave;
       Subject "Spam?"; body "pony"
 13   41 13-Mar-2024   12-Feb-2024  \\Seen \\Recent                120 From frank; no To;
       Subject "Tiny"
 14   50 14-Mar-2024   11-Feb-2024  \\Recent $Label1              706 From Grace Hopper
       <grace@example.com>; To alice; Cc carol, dave; Subject
       "=?UTF-8?Q?Sm=C3=B6rg=C3=A5s?= =?UTF-8?Q?bord_MiXeD_CaSe?=" = "Smörgåsbord MiXeD
       CaSe" (RFC 2047 6.2: no space between the words); multipart/mixed: text/plain
       ISO-8859-1 QP "cr=E8me br=FBl=E9e" (crème brûlée); base64 application/octet-stream

Derived: SEEN 1 2 3 5 8 10 13; RECENT 4 9 13 14; NEW 4 9 14; ANSWERED 2 5 10; FLAGGED 3 5 11;
DELETED 6 12; DRAFT 7 11; $Work 1 8; Urgent 8 10; $Label1 14.  UIDs have gaps (X-UID), so a
sequence number is never equal to its UID.  The \\Recent flags belong to the first session that
selects the mailbox: the shared connection of SearchTest.
"""
import re
import unittest

from wire import ServerCase, fetches, fixture, numbers, search_of

ALL = list(range(1, 15))
UIDS = [3, 5, 6, 10, 11, 12, 20, 21, 22, 30, 31, 40, 41, 50]
SEEN = [1, 2, 3, 5, 8, 10, 13]
RECENT = [4, 9, 13, 14]
ANSWERED = [2, 5, 10]
FLAGGED = [3, 5, 11]
DELETED = [6, 12]
DRAFT = [7, 11]


def but(*sets):
    """ALL minus the union of sets."""
    drop = set().union(*map(set, sets))
    return [n for n in ALL if n not in drop]


class SearchTest(ServerCase):
    """Read-only searches on one shared session that selected the fixture first."""
    ARGS = (fixture("search.mbox"),)
    SHARED = True

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.r = cls.raw_shared()
        cls.select_untagged = cls.r.ok("SELECT INBOX")

    def search(self, criteria, uid=False):
        untagged, tagged = self.r.cmd(("UID SEARCH " if uid else "SEARCH ") + criteria)
        self.assertTrue(tagged.startswith(b"OK"), "%s -> %r" % (criteria, tagged))
        return search_of(untagged)

    def check(self, criteria, expected, uid=False):
        self.assertEqual(self.search(criteria, uid), sorted(expected), criteria)

    def bad(self, criteria):
        untagged, tagged = self.r.cmd("SEARCH " + criteria if criteria else "SEARCH")
        self.assertTrue(tagged.startswith(b"BAD"), "%r -> %r" % (criteria, tagged))
        self.assertNotIn(b"* SEARCH", untagged)

    def lit(self, pieces, expected, nonsync=False):
        untagged, tagged = self.r.command([b"SEARCH "] + pieces, nonsync)
        self.assertTrue(tagged.startswith(b"OK"), "%r -> %r" % (pieces, tagged))
        self.assertEqual(search_of(untagged), sorted(expected), repr(pieces))

    # -- the fixture as loaded (if these fail, everything below is suspect) ------------------

    def test_fixture_loaded_as_table_says(self):
        self.assertIn(b"* 14 EXISTS", self.select_untagged)
        self.assertIn(b"* 4 RECENT", self.select_untagged)
        untagged = self.r.ok("FETCH 1:* (UID FLAGS)")
        got = {n: (d["UID"], set(d["FLAGS"])) for n, d in fetches(untagged).items()}
        self.assertEqual([got[n][0] for n in ALL], UIDS)
        for n in ALL:
            f = got[n][1]
            self.assertEqual("\\Seen" in f, n in SEEN, (n, f))
            self.assertEqual("\\Recent" in f, n in RECENT, (n, f))
            self.assertEqual("\\Answered" in f, n in ANSWERED, (n, f))
            self.assertEqual("\\Flagged" in f, n in FLAGGED, (n, f))
            self.assertEqual("\\Deleted" in f, n in DELETED, (n, f))
            self.assertEqual("\\Draft" in f, n in DRAFT, (n, f))
            self.assertEqual("$Work" in f, n in (1, 8), (n, f))
            self.assertEqual("Urgent" in f, n in (8, 10), (n, f))
            self.assertEqual("$Label1" in f, n == 14, (n, f))

    # -- sequence sets, ALL, UID --------------------------------------------------------------

    def test_all(self):
        self.check("ALL", ALL)

    def test_sequence_sets(self):
        self.check("1", [1])
        self.check("2,4:6,13:*", [2, 4, 5, 6, 13, 14])
        self.check("5:3", [3, 4, 5])
        self.check("*", [14])
        self.check("1:*", ALL)
        self.check("3,3,2:3", [2, 3])

    def test_uid_key(self):
        self.check("UID 10:30", [4, 5, 6, 7, 8, 9, 10])
        self.check("UID 13:19", [])                     # a gap: no message, no error
        self.check("UID 41,3", [1, 13])
        self.check("UID *", [14])
        self.check("UID 100:*", [14])                   # * is the highest UID, 50 (6.4.8)
        self.check("UID 1:2", [])

    def test_uid_search_answers_uids(self):
        self.check("ALL", UIDS, uid=True)
        self.check("1:3", [3, 5, 6], uid=True)          # sequence numbers in, UIDs out
        self.check("FLAGGED", [6, 11, 31], uid=True)
        self.check("UID 13:19", [], uid=True)
        self.check("UID 45:*", [50], uid=True)
        self.check("UID 60:*", [50], uid=True)
        self.check("UID 10:30 DELETED", [12], uid=True)

    # -- flags --------------------------------------------------------------------------------

    def test_flag_keys(self):
        self.check("ANSWERED", ANSWERED)
        self.check("UNANSWERED", but(ANSWERED))
        self.check("DELETED", DELETED)
        self.check("UNDELETED", but(DELETED))
        self.check("DRAFT", DRAFT)
        self.check("UNDRAFT", but(DRAFT))
        self.check("FLAGGED", FLAGGED)
        self.check("UNFLAGGED", but(FLAGGED))
        self.check("SEEN", SEEN)
        self.check("UNSEEN", but(SEEN))

    def test_recent_new_old(self):
        self.check("RECENT", RECENT)
        self.check("NEW", [4, 9, 14])                   # recent and unseen: not 13
        self.check("OLD", but(RECENT))
        self.check("NOT NEW", but([4, 9, 14]))          # OLD is NOT RECENT, not NOT NEW

    def test_keyword(self):
        self.check("KEYWORD $Work", [1, 8])
        self.check("KEYWORD Urgent", [8, 10])
        self.check("KEYWORD $Label1", [14])
        self.check("KEYWORD NoSuchKeyword", [])
        self.check("UNKEYWORD $Work", but([1, 8]))
        self.check("UNKEYWORD Urgent", but([8, 10]))
        self.check("UNKEYWORD NoSuchKeyword", ALL)

    # -- addresses ----------------------------------------------------------------------------

    def test_from(self):
        self.check("FROM alice", [1, 7])
        self.check("FROM bob", [2, 8])
        self.check('FROM "Anders"', [1, 7])             # the display name counts too
        self.check("FROM example.net", [3, 6, 11, 13])
        self.check("FROM zoe@example.com", [9])
        self.check('FROM "nobody-here"', [])

    def test_to(self):
        self.check("TO bob", [1, 5, 9])
        self.check("TO alice", [2, 5, 10, 14])
        self.check("TO dave", [3, 7, 12])
        self.check("TO frank@example.net", [11])
        self.check("TO grace", [])                      # grace is only in Bcc

    def test_cc(self):
        self.check("CC carol", [2, 14])
        self.check("CC dave", [5, 14])
        self.check("CC alice", [8])
        self.check("CC grace", [])

    def test_bcc(self):
        self.check("BCC grace", [3])
        self.check("BCC bob", [10])
        self.check("BCC example", [3, 10])

    # -- subject, header, body, text ----------------------------------------------------------

    def test_subject(self):
        self.check("SUBJECT quarterly", [1, 2])
        self.check("SUBJECT Budget", [8, 10])
        self.check('SUBJECT "Re:"', [2, 10])
        self.check('SUBJECT "Draft: proposal"', [7])
        self.check('SUBJECT "Spam?"', [12])
        self.check('SUBJECT ""', ALL)                   # the empty string is in every subject

    def test_subject_decoded_rfc2047(self):
        # words visible only after decoding: base64 (3), Q with "_" for space (4)
        self.check('SUBJECT "Munich greetings"', [3])
        self.check('SUBJECT "Brunch Menu"', [4])
        self.check('SUBJECT "?UTF-8?B?"', [])           # the raw encoded word is not the subject

    def test_subject_adjacent_encoded_words_joined(self):
        # RFC 2047 6.2: white space between adjacent encoded-words is not displayed
        self.check('SUBJECT "bord MiXeD"', [14])
        self.lit([b"CHARSET UTF-8 SUBJECT ", ("Smörgåsbord".encode(),)], [14])

    def test_header(self):
        self.check('HEADER X-Project ""', [1, 8])       # empty string: has the field
        self.check("HEADER X-Project falcon", [1])
        self.check("HEADER X-Project Heron", [8])
        self.check('HEADER In-Reply-To "<m1@"', [2])
        self.check('HEADER Message-ID "<m12@fixture"', [12])
        self.check('HEADER X-Nothing ""', [])
        self.check('HEADER X-Note "beta gamma"', [10])  # folded field, unfolded
        self.check('HEADER X-Proj ""', [])              # the whole field name, not a prefix
        self.check('HEADER Subject "Munich greetings"', [3])   # decoded (issue 4)

    def test_header_hidden_mbox_fields_absent(self):
        # Status, X-Status, X-Keywords, X-UID are removed from what clients see (conventions)
        self.check('HEADER X-Status ""', [])
        self.check('HEADER X-Keywords ""', [])
        self.check('HEADER X-UID ""', [])
        self.check('HEADER Status ""', [])

    def test_body(self):
        self.check("BODY aardvark", [1])
        self.check("BODY falcon", [6])                  # Falcon in 1 is a header only
        self.check("BODY narwhal", [7])
        self.check("BODY pony", [12])
        self.check("BODY marimba", [4])                 # second alternative (text/html)
        self.check("BODY budget", [8, 10])
        self.check("BODY quarterly", [])                # only in subjects

    def test_body_decoded_transfer_encodings(self):
        self.check("BODY xylophone", [4])               # QP soft line break "xylo=\n"
        self.check('BODY "Total = 12 EUR"', [4])        # QP =3D
        self.check("BODY kumquat", [5])                 # base64, across a line break
        self.check('BODY "only visible after base64"', [5])
        self.check("TEXT kumquat", [5])
        self.lit([b"CHARSET UTF-8 BODY ", ("café au lait".encode(),)], [4])   # QP =C3=A9

    def test_body_decoded_charset_latin1(self):
        # ISO-8859-1 QP body compared in the UTF-8 of the search string (RFC 3501 6.4.4)
        self.lit([b"CHARSET UTF-8 BODY ", ("crème brûlée".encode(),)], [14])

    def test_text(self):
        self.check("TEXT falcon", [1, 6])               # header of 1, body of 6
        self.check("TEXT Heron", [8])
        self.check('TEXT "<m1@fixture"', [1, 2])        # Message-ID and In-Reply-To
        self.check("TEXT aardvark", [1])
        self.check('TEXT "string not in mailbox"', [])

    def test_text_decoded_headers(self):
        self.check('TEXT "Munich greetings"', [3])

    # -- sizes --------------------------------------------------------------------------------

    def test_larger_smaller(self):
        self.check("LARGER 1000", [11])
        self.check("LARGER 500", [4, 5, 11, 14])
        self.check("LARGER 0", ALL)
        self.check("SMALLER 150", [13])
        self.check("SMALLER 195", [12, 13])
        self.check("SMALLER 0", [])
        self.check("LARGER 200 SMALLER 240", [6, 7, 9])

    def test_larger_smaller_are_strict(self):
        # boundary against the server's own RFC822.SIZE of message 11: strictly larger/smaller
        untagged = self.r.ok("FETCH 11 RFC822.SIZE")
        size = fetches(untagged)[11]["RFC822.SIZE"]
        self.assertLess(abs(size - 6474), 3, "RFC822.SIZE of 11 should be about 6474")
        self.check("LARGER %d" % (size - 1), [11])
        self.check("LARGER %d" % size, [])
        self.check("SMALLER %d" % (size + 1), ALL)
        self.check("SMALLER %d" % size, but([11]))

    # -- dates --------------------------------------------------------------------------------

    def test_internaldate_keys(self):
        self.check("BEFORE 5-Mar-2024", [1, 2, 3, 4])
        self.check("ON 5-Mar-2024", [5])
        self.check("SINCE 12-Mar-2024", [12, 13, 14])
        self.check("SINCE 1-Mar-2024", ALL)
        self.check("BEFORE 1-Mar-2024", [])
        self.check("SINCE 15-Mar-2024", [])
        self.check("SINCE 22-Feb-2024", ALL)            # SENTSINCE 22-Feb-2024 is 1 2 3
        self.check("ON 1-Jan-2024", [])

    def test_sent_date_keys(self):
        self.check("SENTBEFORE 14-Feb-2024", [12, 13, 14])
        self.check("SENTON 20-Feb-2024", [5])
        self.check("SENTSINCE 22-Feb-2024", [1, 2, 3])
        self.check("SENTSINCE 1-Mar-2024", [])          # SINCE 1-Mar-2024 is ALL
        self.check("SENTBEFORE 1-Mar-2024", ALL)
        self.check("SENTBEFORE 11-Feb-2024", [])
        self.check("SENTSINCE 11-Feb-2024", ALL)

    def test_internal_and_sent_dates_differ(self):
        self.check("SINCE 4-Mar-2024 SENTSINCE 20-Feb-2024", [4, 5])
        self.check("BEFORE 4-Mar-2024 SENTBEFORE 24-Feb-2024", [2, 3])

    def test_date_forms(self):
        self.check("ON 05-Mar-2024", [5])               # date-day is 1*2DIGIT
        self.check('ON "5-Mar-2024"', [5])              # date = date-text / DQUOTE date-text DQUOTE
        self.check("ON 5-MAR-2024", [5])                # case-insensitive (RFC 3501 9, note 3)
        self.check("SENTON 20-feb-2024", [5])

    def test_dates_disregard_time_and_timezone(self):
        # 9: INTERNALDATE 09-Mar-2024 00:30 +0100 (08-Mar in UTC); 7: sent 18-Feb-2024 23:30
        # -0800 (19-Feb in UTC).  "disregarding time and timezone": the date as written.
        self.check("ON 9-Mar-2024", [9])
        self.check("ON 8-Mar-2024", [8])
        self.check("SENTON 18-Feb-2024", [7])
        self.check("SENTON 19-Feb-2024", [6])

    def test_date_that_does_not_exist(self):
        # 30-Feb is not 1-Mar: no internal date is within it (or the date is refused)
        for criteria in ("ON 30-Feb-2024", "ON 31-Apr-2024"):
            untagged, tagged = self.r.cmd("SEARCH " + criteria)
            if tagged.startswith(b"OK"):
                self.assertEqual(search_of(untagged), [], criteria)
            else:
                self.assertTrue(tagged.startswith(b"BAD"), (criteria, tagged))

    # -- combining keys -----------------------------------------------------------------------

    def test_implicit_and(self):
        self.check('FLAGGED SINCE 3-Mar-2024 NOT FROM "erin"', [3, 11])
        self.check("SEEN UNANSWERED UNFLAGGED", [1, 8, 13])
        self.check("1:10 KEYWORD Urgent TO alice", [10])

    def test_not(self):
        self.check("NOT SEEN", but(SEEN))
        self.check("NOT NOT SEEN", SEEN)
        self.check("NOT 2:13", [1, 14])
        self.check("NOT UID 3:22", [10, 11, 12, 13, 14])
        self.check("NOT (SEEN FLAGGED)", but([3, 5]))   # NOT of a group
        self.check("NOT (OR SEEN DELETED)", [4, 7, 9, 11, 14])

    def test_or(self):
        self.check("OR ANSWERED DRAFT", [2, 5, 7, 10, 11])
        self.check("OR 1:2 14", [1, 2, 14])
        self.check("OR (SEEN FLAGGED) (DELETED UNSEEN)", [3, 5, 6, 12])   # OR of groups
        self.check("OR OR DELETED DRAFT KEYWORD Urgent", [6, 7, 8, 10, 11, 12])
        self.check("OR FROM alice OR FROM bob FROM zoe", [1, 2, 7, 8, 9])
        self.check("OR SEEN NOT SEEN", ALL)

    def test_nested_groups(self):
        self.check("(SEEN)", SEEN)
        self.check("((OR FROM bob FROM dave) (NOT (OR SEEN DELETED)))", [4])
        self.check("(((UID 1:20) (NOT ((DELETED)))))", [1, 2, 3, 4, 5, 7])
        self.check("(" * 10 + "FLAGGED" + ")" * 10, FLAGGED)
        self.check("(FLAGGED) (" * 5 + "SEEN" + ")" * 5, [3, 5])
        self.check("OR (NOT (SEEN)) (KEYWORD $Work (SENTSINCE 17-Feb-2024))", but(SEEN) + [1, 8])

    def test_group_depth_limit_gives_bad(self):
        # the limit is at most 100 levels: 1000 levels must be refused with a tagged BAD,
        # and the session goes on
        self.bad("(" * 1000 + "ALL" + ")" * 1000)
        self.assertTrue(self.r.cmd("NOOP")[1].startswith(b"OK"))
        self.check("ALL", ALL)

    def test_deep_not_chain_survives(self):
        # a long NOT chain recurses as deeply as groups: BAD or the right answer, no crash
        untagged, tagged = self.r.cmd("SEARCH " + "NOT " * 2000 + "SEEN")
        if tagged.startswith(b"OK"):
            self.assertEqual(search_of(untagged), SEEN)
        else:
            self.assertTrue(tagged.startswith(b"BAD"), tagged)
        self.check("ALL", ALL)

    # -- case, charsets, literals ----------------------------------------------------------------

    def test_case_insensitive_substrings(self):
        self.check('SUBJECT "QUARTERLY REPORT"', [1, 2])
        self.check("SUBJECT uarterl", [1, 2])           # a substring, not a word
        self.check("FROM ALICE@EXAMPLE.COM", [1, 7])
        self.check("BODY KumQuat", [5])
        self.check("BODY XYLOPHONE", [4])
        self.check("HEADER x-PROJECT fAlCoN", [1])      # field name and value
        self.check('SUBJECT "mixed case"', [14])
        self.check("TO BOB", [1, 5, 9])
        self.check("cc CAROL", [2, 14])                 # the key itself is case-insensitive
        self.check("or seen flagged", sorted(set(SEEN) | set(FLAGGED)))

    def test_charset_accepted(self):
        self.check("CHARSET UTF-8 SUBJECT budget", [8, 10])
        self.check("CHARSET US-ASCII SUBJECT budget", [8, 10])
        self.check('CHARSET "UTF-8" FLAGGED', FLAGGED)
        self.check("CHARSET utf-8 FLAGGED", FLAGGED)    # charset names are case-insensitive
        self.check("CHARSET UTF-8 ALL", UIDS, uid=True)

    def test_badcharset(self):
        for cs in ("ISO-8859-2", "KOI8-R", "X-NO-SUCH-CHARSET"):
            untagged, tagged = self.r.cmd("SEARCH CHARSET %s SUBJECT x" % cs)
            self.assertNotIn(b"* SEARCH", untagged)
            m = re.match(rb"^NO \[BADCHARSET \(([^)]*)\)\] \S", tagged)
            self.assertTrue(m, "CHARSET %s -> %r" % (cs, tagged))
            names = {n.strip(b'"').upper() for n in m.group(1).split()}
            self.assertEqual(names, {b"US-ASCII", b"UTF-8"}, tagged)

    def test_utf8_literal_matches_decoded_subject(self):
        self.lit([b"CHARSET UTF-8 SUBJECT ", ("München".encode(),)], [3])
        self.lit([b"CHARSET UTF-8 SUBJECT ", ("Café Brunch".encode(),)], [4])   # ISO-8859-1 Q
        self.lit([b"CHARSET UTF-8 FROM ", ("Zoë Zimmer".encode(),)], [9])       # Q in a name
        self.lit([b"CHARSET UTF-8 BODY ", ("Grüße".encode(),)], [3])            # 8bit body
        self.lit([b"CHARSET UTF-8 SUBJECT ", ("München".encode(),)], [3], nonsync=True)

    def test_several_literals_in_one_command(self):
        self.lit([b"CHARSET UTF-8 OR SUBJECT ", ("München".encode(),), b" FROM ",
                  ("Zoë".encode(),)], [3, 9])
        self.lit([b"SUBJECT ", (b"Budget",), b" FROM ", (b"dave",)], [10])

    def test_utf8_literal_ascii_case_insensitive(self):
        # case-insensitive for the ASCII letters around the 8-bit ones; folding of non-ASCII
        # letters is not required (RFC 9051 6.4.4 makes RFC 3501's sentence precise: "SHOULD be
        # case insensitive for characters within the ASCII range"; full folding is RFC 5255)
        self.lit([b"CHARSET UTF-8 SUBJECT ", ("MüNCHEN".encode(),)], [3])
        self.lit([b"CHARSET UTF-8 BODY ", ("CAFé AU LAIT".encode(),)], [4])

    # -- errors ---------------------------------------------------------------------------------

    def test_bad_syntax(self):
        for criteria in ("", "FOO", "SEEN FOO", "BEFORE 1-Foo-2024", "BEFORE 2024-03-01",
                         "SINCE 1-Mar-24", "ON", "LARGER x", "LARGER", "SMALLER -1", "(SEEN",
                         "SEEN)", "()", "OR SEEN", "NOT", "KEYWORD", "SUBJECT", "HEADER Subject",
                         "UID", "UID x", "0", "1:x", "CHARSET", "CHARSET UTF-8", "SUBJECT {-1}",
                         "UID 0", "1,,2", "1:", "LARGER 4294967296", "UID 4294967296",
                         "SEEN (FLAGGED"):
            self.bad(criteria)
        _, tagged = self.r.cmd("UID SEARCH")
        self.assertTrue(tagged.startswith(b"BAD"), tagged)
        self.check("ALL", ALL)                          # the session goes on

    def test_search_needs_selected_state(self):
        r = self.srv.raw(login=("test", "test"))
        try:
            untagged, tagged = r.cmd("SEARCH ALL")
            self.assertTrue(tagged.startswith(b"BAD"), tagged)
            self.assertNotIn(b"* SEARCH", untagged)
        finally:
            r.close()


class SearchChangesTest(ServerCase):
    """Searches after the mailbox changes: each test has its own server."""

    def setUp(self):
        self.srv = self.start(fixture("search.mbox"))
        self.r = self.raw(select="INBOX")

    def search(self, criteria):
        untagged, tagged = self.r.cmd(criteria)
        self.assertTrue(tagged.startswith(b"OK"), "%s -> %r" % (criteria, tagged))
        return search_of(untagged)

    def test_uid_search_after_expunge(self):
        untagged = self.r.ok("STORE 1:2 +FLAGS.SILENT (\\Deleted)")
        self.assertNotIn(b"FETCH", untagged)
        untagged = self.r.ok("EXPUNGE")                 # removes 1 2 6 12
        self.assertEqual(len(numbers(untagged, "EXPUNGE")), 4, untagged)
        # left: old 3 4 5 7 8 9 10 11 13 14 -> new 1..10
        self.assertEqual(self.search("SEARCH ALL"), list(range(1, 11)))
        self.assertEqual(self.search("UID SEARCH ALL"), [6, 10, 11, 20, 21, 22, 30, 31, 41, 50])
        self.assertEqual(self.search("SEARCH FLAGGED"), [1, 3, 8])
        self.assertEqual(self.search("UID SEARCH FLAGGED"), [6, 11, 31])
        self.assertEqual(self.search("UID SEARCH 1:2"), [6, 10])
        self.assertEqual(self.search("SEARCH UID 20:40"), [4, 5, 6, 7, 8])
        self.assertEqual(self.search("SEARCH DELETED"), [])
        self.assertEqual(self.search("SEARCH *"), [10])
        self.assertEqual(self.search("SEARCH SUBJECT Budget"), [5, 7])

    def test_search_sees_store(self):
        self.r.ok("STORE 4 +FLAGS (\\Flagged NewKeyword)")
        self.r.ok("STORE 3 -FLAGS (\\Flagged \\Seen)")
        self.assertEqual(self.search("SEARCH FLAGGED"), [4, 5, 11])
        self.assertEqual(self.search("SEARCH KEYWORD NewKeyword"), [4])
        self.assertEqual(self.search("SEARCH UNKEYWORD NewKeyword"), but([4]))
        self.assertEqual(self.search("SEARCH SEEN"), [1, 2, 5, 8, 10, 13])
        self.assertEqual(self.search("UID SEARCH KEYWORD NewKeyword"), [10])

    def test_search_sees_append(self):
        msg = (b"From: New Person <new@example.com>\r\nSubject: appended ocelot\r\n"
               b"Date: Fri, 01 Mar 2024 12:00:00 +0000\r\n\r\nBody with quetzal.\r\n")
        untagged, tagged = self.r.append("INBOX", msg, '(\\Flagged) "20-Mar-2024 08:00:00 +0000"')
        self.assertTrue(tagged.startswith(b"OK"), tagged)
        self.assertIn(b"* 15 EXISTS", untagged + self.r.ok("NOOP"))
        self.assertEqual(self.search("SEARCH SUBJECT ocelot"), [15])
        self.assertEqual(self.search("SEARCH BODY quetzal"), [15])
        self.assertEqual(self.search("SEARCH ON 20-Mar-2024"), [15])
        self.assertEqual(self.search("SEARCH SENTON 1-Mar-2024"), [15])
        self.assertEqual(self.search("SEARCH FLAGGED"), [3, 5, 11, 15])
        self.assertEqual(self.search("SEARCH RECENT"), RECENT + [15])
        new_uid = self.search("UID SEARCH UID 51:*")      # above the last X-UID, 50
        self.assertEqual(len(new_uid), 1)
        self.assertGreater(new_uid[0], 50)
        self.assertEqual(self.search("UID SEARCH SUBJECT ocelot"), new_uid)


if __name__ == "__main__":
    unittest.main()
