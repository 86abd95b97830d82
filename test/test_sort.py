"""SORT and THREAD (RFC 5256), SORT=DISPLAY (RFC 5957), ESORT and the SORT parts of
CONTEXT=SORT (RFC 5267 3 and 4.4), through raw connections (test/wire.py).

Each class writes its own small INBOX, with the expected orders worked out by hand from the
RFC text in the tables below, so that a wrong key, a wrong tie-break or a wrong base subject
moves a message. imaptest's sort-* and thread* scripts and Dovecot 2.3 agree with these
choices where the RFCs leave room: an address group's name is its addr-mailbox and its
display value; ASCII letters compare as capitals (i;unicode-casemap titlecases them).
"""
import base64
import re
import time
import calendar

from wire import ServerCase, capabilities, codes, esearches, expand_set, search_of, sort_of, \
    thread_of, write_mbox

DAY = 86400


def mbox_from(t):
    return "From sender@example.org %s" % time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(t))


def rfc822_date(t, zone="+0000"):
    return time.strftime("%a, %d %b %Y %H:%M:%S ", time.gmtime(t)) + zone


def message(internal, headers, body="Hello."):
    """One mbox entry: INTERNALDATE internal (seconds), header lines, a body."""
    return "\n".join([mbox_from(internal)] + headers + ["", body]) + "\n"


def mbox(entries):
    return "\n".join(entries)


T0 = calendar.timegm((2024, 3, 1, 10, 0, 0))


class SortCase(ServerCase):
    INBOX = ""
    ARGS_EXTRA = ()

    def setUp(self):
        self.dir = self.tempdir()
        write_mbox(self.dir, "INBOX.mbox", self.INBOX)
        self.srv = self.start_or_fail(*(list(self.ARGS_EXTRA) + [self.dir]))

    def session(self):
        r = self.raw(self.srv)
        r.ok("SELECT INBOX")
        return r

    def sort(self, r, command):
        return sort_of(r.ok(command))

    def thread(self, r, command):
        return thread_of(r.ok(command))

    def refused(self, r, command, word=b"BAD"):
        untagged, tagged = r.cmd(command)
        self.assertTrue(tagged.startswith(word), "%s -> %r, wanted %s" % (command, tagged, word))
        self.assertNotRegex(untagged, rb"(?m)^\* (SORT|THREAD|ESEARCH)\b")
        return tagged


# ---------------------------------------------------------------------------------------
# RFC 5256 2.1: base subjects. Message 2i-1 has the raw subject and 2i a subject whose base
# is the expected one, in other letter cases; THREAD ORDEREDSUBJECT puts two messages in
# one thread exactly when their base subjects are equal (RFC 5256 3), and the pairs' dates
# ascend, so the answer must be (1 2)(3 4)... A base subject computed wrongly splits a pair.

def b_word(text):
    return "=?UTF-8?B?%s?=" % base64.b64encode(text.encode()).decode()


BASE_CASES = [
    ("Re: alpha", "alpha"),                                   # subj-refwd
    ("RE:  Re: re[2]: beta", "BETA"),                         # repeated, blob inside refwd
    ("Fwd: gamma", "gamma"), ("FW: delta", "Delta"),          # "fw" ["d"]
    ("re : rho", "rho"),                                      # *WSP before ':'
    ("[blob] Re: epsilon", "epsilon"),                        # *subj-blob subj-refwd
    ("[list] zeta", "zeta"),                                  # (4) a leading blob goes
    ("Re: [only-blob]", "[only-blob]"),                       # (4) ... unless it is all
    ("Re: [blob] omicron", "omicron"),                        # (3) then (4), repeated (5)
    ("Fwd: Re: [a] [b] Re: pi", "pi"),
    ("eta (fwd)", "eta"), ("theta (fwd) (FWD)  ", "theta"),   # (2) subj-trailer, repeated
    ("[Fwd: iota]", "iota"),                                  # (6) subj-fwd-hdr / -trl
    ("Re: [fwd: Re: kappa] (fwd)", "kappa"),                  # (6) then (2)-(5) again
    ("Re:lambda\t  tab", "lambda tab"),                       # (1) tabs, runs of spaces
    ("Ref: sigma", "ref: SIGMA"),                             # "Ref" is no subj-refwd
    (b_word("Re: l\u00e4mmel"), "L\u00c4MMEL"),               # (1) RFC 2047, then (3)
    ("=?iso-8859-1?q?Re:_caf=E9?=", "CAF\u00c9"),             # Q encoding, Latin-1
    ("Re: " + b_word("[tag]") + " mu", "mu"),                 # a blob that was encoded
]


def base_subject_inbox():
    out = []
    for i, (raw, base) in enumerate(BASE_CASES):
        for k, subj in enumerate((raw, base)):
            t = T0 + (2 * i + k) * 60
            out.append(message(t, ["Subject: %s" % subj, "Date: %s" % rfc822_date(t),
                                   "Message-ID: <b%d.%d@example.org>" % (i, k)]))
    return mbox(out).encode("utf-8").decode("utf-8")


class BaseSubject(SortCase):
    """RFC 5256 2.1 steps (1)-(6), through THREAD ORDEREDSUBJECT and SORT (SUBJECT)."""
    INBOX = base_subject_inbox()

    def test_each_pair_shares_a_base_subject(self):
        r = self.session()
        got = self.thread(r, "THREAD ORDEREDSUBJECT UTF-8 ALL")
        want = [[2 * i + 1, 2 * i + 2] for i in range(len(BASE_CASES))]
        for i, (raw, base) in enumerate(BASE_CASES):
            self.assertIn([2 * i + 1, 2 * i + 2], got,
                          "base subject of %r should equal that of %r: %r" % (raw, base, got))
        self.assertEqual(got, want)

    def test_sort_subject_uses_the_base_subject(self):
        r = self.session()
        got = self.sort(r, "SORT (SUBJECT) UTF-8 ALL")
        self.assertEqual(len(got), 2 * len(BASE_CASES))
        for i in range(len(BASE_CASES)):   # equal keys: neighbours, in mailbox order
            k = got.index(2 * i + 1)
            self.assertEqual(got[k + 1], 2 * i + 2, "%r: %r" % (BASE_CASES[i], got))

    def test_different_subjects_stay_apart(self):
        r = self.session()
        # "Re: alpha" and "epsilon": never one thread
        got = self.thread(r, "THREAD ORDEREDSUBJECT UTF-8 1,12")
        self.assertEqual(got, [[1], [12]])


# ---------------------------------------------------------------------------------------
# RFC 5256 2.2: the sent date.
#   n  Date                                   sent date (UTC)       INTERNALDATE
#   1  Sun, 31 Dec 2000 16:01:33 -0800        2001-01-01 00:01:33   2001-01-05
#   2  Mon, 1 Jan 2001 00:01:33 +0000         2001-01-01 00:01:33   2001-01-04
#   3  Mon, 1 Jan 2001 00:01:32 +0000         2001-01-01 00:01:32   2001-01-03
#   4  (none)                                 INTERNALDATE          2000-12-31 23:00:00
#   5  "not a date"                           INTERNALDATE          2001-01-01 00:01:34
#   6  Mon, 1 Jan 2001 01:01:33 +0100         2001-01-01 00:01:33   2001-01-02
#   7  Mon, 1 Jan 2001 00:01:33 XYZ (zone ?)  2001-01-01 00:01:33   2001-01-06
# DATE: 4 3 1 2 6 7 5; REVERSE DATE: 5 1 2 6 7 3 4 (ties stay in mailbox order);
# ARRIVAL: 4 5 6 3 2 1 7.
J1 = calendar.timegm((2001, 1, 1, 0, 1, 33))
DATES = [("Sun, 31 Dec 2000 16:01:33 -0800", J1 + 4 * DAY),
         ("Mon, 1 Jan 2001 00:01:33 +0000", J1 + 3 * DAY),
         ("Mon, 1 Jan 2001 00:01:32 +0000", J1 + 2 * DAY),
         (None, calendar.timegm((2000, 12, 31, 23, 0, 0))),
         ("not a date", J1 + 1),
         ("Mon, 1 Jan 2001 01:01:33 +0100", J1 + DAY),
         ("Mon, 1 Jan 2001 00:01:33 XYZ", J1 + 5 * DAY)]


class SentDate(SortCase):
    INBOX = mbox(message(t, (["Date: " + d] if d else []) + ["Subject: d%d" % i])
                 for i, (d, t) in enumerate(DATES))

    def test_date_is_utc_with_internaldate_for_none(self):
        r = self.session()
        self.assertEqual(self.sort(r, "SORT (DATE) UTF-8 ALL"), [4, 3, 1, 2, 6, 7, 5])

    def test_reverse_keeps_ties_in_mailbox_order(self):
        r = self.session()
        self.assertEqual(self.sort(r, "SORT (REVERSE DATE) UTF-8 ALL"), [5, 1, 2, 6, 7, 3, 4])

    def test_arrival_is_the_internaldate(self):
        r = self.session()
        self.assertEqual(self.sort(r, "SORT (ARRIVAL) US-ASCII ALL"), [4, 5, 6, 3, 2, 1, 7])


# ---------------------------------------------------------------------------------------
# Subjects that share long prefixes: the sort compares a subject's first 16 bytes as numbers
# and only equal ones as texts, so these end or differ just before, at and after bytes 8 and
# 16, some twice (the sequence number decides, never reversed: RFC 5256 3). In mailbox order
# neither ascending nor descending; the order wanted is worked out here from the subjects.
LONG_SUBJECTS = [
    "Meeting: ABCDEFGH", "MEETING: A", "meeting:", "MEETING: ABCDEFGHIJKLMNOP1", "MEETING",
    "Meeting: abcdefg", "MEETING: ABCDEFGA", "MEETING: ABCDEFF", "MEETING: ABCDEFGH",
    "MEETING: ABCDEFGHIJKLMNOP0", "MEETING: B", "MEETING: ABCDEFGHIJKLMNOP",
    "MEETING: ABCDEFGHIJKLMNOP0", "MEETINF: ZZZZZZZZZ", "MEETING:", "MEETING: ABCDEFG",
]


class LongSubjects(SortCase):
    INBOX = mbox(message(T0 + i * 60, ["Subject: %s" % s])
                 for i, s in enumerate(LONG_SUBJECTS))

    def test_sorted_past_the_first_16_bytes(self):
        r = self.session()
        seqs = range(1, len(LONG_SUBJECTS) + 1)
        up = [s.upper() for s in LONG_SUBJECTS]
        ascending = sorted(seqs, key=lambda n: (up[n - 1], n))
        descending = sorted(seqs, key=lambda n: (tuple(-ord(c) for c in up[n - 1]) + (1,), n))
        self.assertNotEqual(ascending, list(seqs))
        self.assertEqual(self.sort(r, "SORT (SUBJECT) UTF-8 ALL"), ascending)
        self.assertEqual(self.sort(r, "SORT (REVERSE SUBJECT) UTF-8 ALL"), descending)
        self.assertEqual(self.sort(r, "SORT (SUBJECT ARRIVAL) UTF-8 ALL"), ascending)


# ---------------------------------------------------------------------------------------
# RFC 5256 3 SORT, and RFC 5957 DISPLAYFROM / DISPLAYTO.
#   n  arrival  From                       To                        Cc           Subject  size
#   1  Jan 3    Aaron <zed@x.org>          bob@x.org                 -            b        4th
#   2  Jan 1    alice@x.org                Zoe <carol@x.org>         dave@x.org   Re: a    1st
#   3  Jan 2    =?utf-8?q?Bj=C3=B6rn?=     undisclosed-recipients:;  Alice        [x] c    3rd
#               <bjorn@x.org>                                        <alice@x.org>
#   4  Jan 2    Mallory <MALLORY@x.org>    -                         -            A        2nd
SIZES = [400, 0, 200, 100]   # body padding
CRITERIA = [
    (T0 + 2 * DAY, ["From: Aaron <zed@x.org>", "To: bob@x.org", "Subject: b"]),
    (T0, ["From: alice@x.org", "To: Zoe <carol@x.org>", "Cc: dave@x.org", "Subject: Re: a"]),
    (T0 + DAY, ["From: =?utf-8?q?Bj=C3=B6rn?= <bjorn@x.org>", "To: undisclosed-recipients:;",
                "Cc: Alice <alice@x.org>", "Subject: [x] c"]),
    (T0 + DAY, ["From: Mallory <MALLORY@x.org>", "Subject: A"]),
]
EXPECTED = {
    "ARRIVAL": [2, 3, 4, 1], "REVERSE ARRIVAL": [1, 3, 4, 2],
    "FROM": [2, 3, 4, 1], "TO": [4, 1, 2, 3], "CC": [1, 4, 3, 2],
    "SIZE": [2, 4, 3, 1], "REVERSE SIZE": [1, 3, 4, 2],
    "SUBJECT": [2, 4, 1, 3], "SUBJECT REVERSE SIZE": [4, 2, 1, 3],
    "REVERSE SUBJECT": [3, 1, 2, 4],
    "DISPLAYFROM": [1, 2, 3, 4], "DISPLAYTO": [4, 1, 3, 2],
}


def criteria_inbox():
    return mbox(message(t, h + ["X-UID: %d" % (10 * (i + 1))], "x" * SIZES[i])
                for i, (t, h) in enumerate(CRITERIA))


class Sort(SortCase):
    INBOX = criteria_inbox()

    def test_each_criterion(self):
        r = self.session()
        for crit, want in EXPECTED.items():
            self.assertEqual(self.sort(r, "SORT (%s) UTF-8 ALL" % crit), want, crit)

    def test_uid_sort_answers_uids(self):
        r = self.session()
        self.assertEqual(self.sort(r, "UID SORT (SIZE) UTF-8 ALL"), [20, 40, 30, 10])
        self.assertEqual(self.sort(r, "UID SORT (SIZE) UTF-8 UID 20:30"), [20, 30])

    def test_search_keys_are_searchs(self):
        r = self.session()
        self.assertEqual(self.sort(r, 'SORT (REVERSE SIZE) UTF-8 NOT FROM "alice" 1:3'), [1, 3])
        self.assertEqual(self.sort(r, 'SORT (SUBJECT) UTF-8 OR TO "carol" CC "alice"'), [2, 3])
        self.assertEqual(self.sort(r, 'SORT (SIZE) "UTF-8" (SUBJECT "a")'), [2, 4])

    def test_rfc_examples(self):
        r = self.session()
        # A282: SORT (SUBJECT) UTF-8 SINCE 1-Feb-1994 (here: everything is later)
        self.assertEqual(self.sort(r, "SORT (SUBJECT) UTF-8 SINCE 1-Feb-1994"), [2, 4, 1, 3])
        # A283: SORT (SUBJECT REVERSE DATE); no Date, so the INTERNALDATE (2.2): 4 before 2
        self.assertEqual(self.sort(r, "SORT (SUBJECT REVERSE DATE) UTF-8 ALL"), [4, 2, 1, 3])
        # A284: nothing matches: an empty SORT response
        untagged = r.ok('SORT (SUBJECT) US-ASCII TEXT "not in mailbox"')
        self.assertRegex(untagged, rb"(?m)^\* SORT\r$")
        self.assertEqual(sort_of(untagged), [])

    def test_display_name_decoded(self):
        r = self.session()   # "Bj\xc3\xb6rn" sorts after "alice@x.org" and before "Mallory"
        self.assertEqual(self.sort(r, "SORT (DISPLAYFROM) UTF-8 2:4"), [2, 3, 4])

    def test_modseq_with_condstore(self):
        r = self.session()
        untagged = r.ok("SORT (SIZE) UTF-8 MODSEQ 1")
        self.assertRegex(untagged, rb"(?m)^\* SORT 2 4 3 1 \(MODSEQ \d+\)\r$")

    def test_bad_arguments(self):
        r = self.session()
        for cmd in ("SORT SIZE UTF-8 ALL", "SORT () UTF-8 ALL", "SORT (REVERSE) UTF-8 ALL",
                    "SORT (REVERSE REVERSE SIZE) UTF-8 ALL", "SORT (BOGUS) UTF-8 ALL",
                    "SORT (SIZE) ALL", "SORT (SIZE) UTF-8", "SORT (SIZE UTF-8 ALL",
                    "SORT (SIZE) UTF-8 NOSUCHKEY", "SORT", "UID SORT (SIZE)"):
            self.refused(r, cmd)

    def test_unknown_charset_is_no_badcharset(self):
        r = self.session()
        tagged = self.refused(r, "SORT (SIZE) KOI8-R ALL", b"NO")
        self.assertIn(b"[BADCHARSET", tagged)

    def test_not_selected(self):
        r = self.raw(self.srv)
        untagged, tagged = r.cmd("SORT (SIZE) UTF-8 ALL")
        self.assertFalse(tagged.startswith(b"OK"), tagged)


class SortCapabilities(SortCase):
    INBOX = criteria_inbox()
    NAMES = {"SORT", "SORT=DISPLAY", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES", "ESORT",
             "CONTEXT=SORT"}

    def test_all_advertised(self):
        r = self.session()
        have = capabilities(r.ok("CAPABILITY"))
        self.assertLessEqual(self.NAMES, have)


class SortSwitchedOff(SortCase):
    INBOX = criteria_inbox()
    ARGS_EXTRA = ("--capability", "-SORT", "--capability", "-THREAD=REFERENCES")

    def test_sort_goes_and_takes_what_needs_it(self):
        r = self.session()
        have = capabilities(r.ok("CAPABILITY"))
        self.assertFalse(have & {"SORT", "SORT=DISPLAY", "ESORT", "CONTEXT=SORT",
                                 "THREAD=REFERENCES"}, have)
        self.assertIn("THREAD=ORDEREDSUBJECT", have)
        err = self.srv.stderr()   # what else went is said on stderr
        for name in ("SORT=DISPLAY", "ESORT", "CONTEXT=SORT"):
            self.assertIn("--capability -SORT also switched off %s\n" % name, err)
        self.refused(r, "SORT (SIZE) UTF-8 ALL")
        self.refused(r, "THREAD REFERENCES UTF-8 ALL")
        self.assertEqual(self.thread(r, "THREAD ORDEREDSUBJECT UTF-8 ALL"),
                         [[2, 4], [3], [1]])


class DisplaySwitchedOff(SortCase):
    INBOX = criteria_inbox()
    ARGS_EXTRA = ("--capability", "-SORT=DISPLAY")

    def test_display_criteria_refused(self):
        r = self.session()
        self.refused(r, "SORT (DISPLAYFROM) UTF-8 ALL")
        self.assertEqual(self.sort(r, "SORT (FROM) UTF-8 ALL"), EXPECTED["FROM"])


# ---------------------------------------------------------------------------------------
# RFC 5267 3 (ESORT) and 4.4 (PARTIAL) on the criteria mailbox: SIZE order is 2 4 3 1,
# ARRIVAL order 2 3 4 1.

class ESort(SortCase):
    INBOX = criteria_inbox()

    def esort(self, r, command):
        tag = r.tag()
        untagged = r.ok(command, tag)
        es = esearches(untagged)
        self.assertEqual(len(es), 1, untagged)
        self.assertNotRegex(untagged, rb"(?m)^\* SORT\b")
        self.assertEqual(es[0].tag, tag)
        return es[0]

    def test_min_max_count_follow_the_sort_order(self):
        r = self.session()
        e = self.esort(r, "SORT RETURN (MIN MAX COUNT) (SIZE) UTF-8 ALL")
        self.assertEqual((e.get("MIN"), e.get("MAX"), e.get("COUNT")), (2, 1, 4))
        self.assertFalse(e.uid)

    def test_empty_return_is_all_in_sort_order(self):
        r = self.session()
        e = self.esort(r, "SORT RETURN () (SIZE) UTF-8 ALL")
        self.assertEqual(expand_set(e.get("ALL")), [2, 4, 3, 1])
        e = self.esort(r, "UID SORT RETURN (ALL) (REVERSE SIZE) UTF-8 ALL")
        self.assertTrue(e.uid)
        self.assertEqual(expand_set(e.get("ALL")), [10, 30, 40, 20])

    def test_ranges_only_ascend(self):
        r = self.session()   # 3.2: "2:4" may stand for 2,3,4; nothing may read "4:2"
        e = self.esort(r, "SORT RETURN (ALL) (ARRIVAL) UTF-8 ALL")
        self.assertEqual(expand_set(e.get("ALL")), [2, 3, 4, 1])
        e = self.esort(r, "SORT RETURN (ALL) (REVERSE ARRIVAL) UTF-8 ALL")
        self.assertEqual(expand_set(e.get("ALL")), [1, 3, 4, 2])
        for a, b in re.findall(r"(\d+):(\d+)", str(e.get("ALL"))):
            self.assertLess(int(a), int(b), e.line)

    def test_nothing_found(self):
        r = self.session()
        e = self.esort(r, 'SORT RETURN (MIN MAX COUNT ALL) (SIZE) UTF-8 SUBJECT "nowhere"')
        self.assertEqual(e.get("COUNT"), 0)
        self.assertEqual(e.names(), {"COUNT"})

    def test_partial(self):
        r = self.session()
        e = self.esort(r, "SORT RETURN (PARTIAL 2:3) (SIZE) UTF-8 ALL")
        rng, got = e.get("PARTIAL")
        self.assertEqual((rng, expand_set(got)), ("2:3", [4, 3]))
        e = self.esort(r, "SORT RETURN (PARTIAL -1:-1) (SIZE) UTF-8 ALL")
        self.assertEqual(expand_set(e.get("PARTIAL")[1]), [1])
        e = self.esort(r, "SORT RETURN (PARTIAL 5:9) (SIZE) UTF-8 ALL")
        self.assertEqual(e.get("PARTIAL")[1], None)

    def test_update_is_declined_with_noupdate(self):
        r = self.session()
        tag = r.tag()
        untagged = r.ok("SORT RETURN (COUNT UPDATE) (SIZE) UTF-8 ALL", tag)
        self.assertEqual(esearches(untagged)[0].get("COUNT"), 4)
        self.assertIn("NOUPDATE", codes(untagged))

    def test_save(self):
        r = self.session()   # RFC 5182 1: SORT is "based on SEARCH"; SAVE alone: no answer
        untagged = r.ok("SORT RETURN (SAVE) (REVERSE SIZE) UTF-8 1:3")
        self.assertEqual(esearches(untagged), [], untagged)
        self.assertEqual(search_of(r.ok("SEARCH $")), [1, 2, 3])
        e = self.esort(r, "SORT RETURN (SAVE MIN) (REVERSE SIZE) UTF-8 ALL")
        self.assertEqual(e.get("MIN"), 1)
        self.assertEqual(search_of(r.ok("SEARCH $")), [1])   # 2.4: what MIN returned
        e = self.esort(r, "SORT RETURN (SAVE PARTIAL 2:3) (SIZE) UTF-8 ALL")
        self.assertEqual(search_of(r.ok("SEARCH $")), [3, 4])
        self.refused(r, "SORT RETURN (SAVE) (SIZE) KOI8-R ALL", b"NO")
        self.assertEqual(search_of(r.ok("SEARCH $")), [])    # 2.1: a failed SAVE empties $

    def test_bad_return_options(self):
        r = self.session()
        for cmd in ("SORT RETURN (ALL PARTIAL 1:2) (SIZE) UTF-8 ALL",
                    "SORT RETURN (PARTIAL 1:*) (SIZE) UTF-8 ALL",
                    "SORT RETURN (BOGUS) (SIZE) UTF-8 ALL",
                    "SORT RETURN (MIN) UTF-8 ALL"):
            self.refused(r, cmd)


# ---------------------------------------------------------------------------------------
# RFC 5256 3 THREAD REFERENCES, steps 1-4 and 6. Subjects all differ (no step 5 merges);
# every Date is a minute after the one before, so siblings sort in mailbox order.
#   1 <m1>                          thread (1 17)
#   2 <m2>                          thread (2 3 (4 5)(6 7 8)): RFC 5256 4's example shape
#   3 <m3>   References <m2>
#   4 <m4>   References <m2> <m3>
#   5 <m5>   References <m2> <m3> <m4>
#   6 <m6>   References <m2> <m3>
#   7 <m7>   References <m6>          (a truncated References)
#   8 <m8>   In-Reply-To <m7> (a comment)   (no References: In-Reply-To's first msg-id)
#   9 <m9>   References <gone>        ((9)(10)): siblings under a dummy (RFC 5256 4 example 2)
#  10 <m10>  References <gone>
#  11 <m1>   a duplicate Message-ID: a thread of its own
#  12 <m12>  References <m12>         itself: no loop
#  13 <a13>  References <b13>         (14 13): b13 is 13's parent, so 13 may not be 14's
#  14 <b13>  References <a13>
#  15 <"q15"@x>                      (15 16): quoting does not make msg-ids differ
#  16 <m16>  References <q15@x>
#  17 <m17>  References <m1>  In-Reply-To <m2>   (References wins)
REFS = [
    ("<m1@x>", []), ("<m2@x>", []), ("<m3@x>", ["References: <m2@x>"]),
    ("<m4@x>", ["References: <m2@x> <m3@x>"]),
    ("<m5@x>", ["References: <m2@x>\n <m3@x>\n\t<m4@x>"]),
    ("<m6@x>", ["References: <m2@x> <m3@x>"]), ("<m7@x>", ["References: <m6@x>"]),
    ("<m8@x>", ["In-Reply-To: <m7@x> (Message from Seven)"]),
    ("<m9@x>", ["References: <gone@x>"]), ("<m10@x>", ["References: <gone@x>"]),
    ("<m1@x>", []), ("<m12@x>", ["References: <m12@x>"]),
    ("<a13@x>", ["References: <b13@x>"]), ("<b13@x>", ["References: <a13@x>"]),
    ('<"q15"@x>', []), ("<m16@x>", ["References: <q15@x>"]),
    ("<m17@x>", ["References: <m1@x>", "In-Reply-To: <m2@x>"]),
]
REFS_THREADS = [[1, 17], [2, 3, [4, 5], [6, 7, 8]], [[9], [10]], [11], [12], [14, 13],
                [15, 16]]


def refs_inbox():
    out = []
    for i, (mid, extra) in enumerate(REFS):
        t = T0 + i * 60
        out.append(message(t, ["Message-ID: " + mid, "Subject: s%d" % (i + 1),
                               "Date: " + rfc822_date(t)] + extra))
    return mbox(out)


class ThreadReferences(SortCase):
    INBOX = refs_inbox()

    def test_links_from_references(self):
        r = self.session()
        self.assertEqual(self.thread(r, "THREAD REFERENCES UTF-8 ALL"), REFS_THREADS)

    def test_wire_form(self):
        r = self.session()   # RFC 5256 4: nested lists with no SP between them
        untagged = r.ok("THREAD REFERENCES US-ASCII 1:10")
        self.assertIn(b"* THREAD (1)(2 3 (4 5)(6 7 8))((9)(10))\r\n", untagged)

    def test_searched_messages_only(self):
        r = self.session()   # 5 is not searched; 6 is not: 7 hangs from a dummy, promoted
        self.assertEqual(self.thread(r, "THREAD REFERENCES UTF-8 2:4,6"), [[2, 3, [4], [6]]])
        self.assertEqual(self.thread(r, "THREAD REFERENCES UTF-8 2:5,7:8"),
                         [[2, 3, 4, 5], [7, 8]])
        self.assertEqual(self.thread(r, "THREAD REFERENCES UTF-8 9"), [[9]])

    def test_uid_thread_and_no_match(self):
        r = self.session()
        got = self.thread(r, "UID THREAD REFERENCES UTF-8 1:5")
        self.assertEqual(got, [[1], [2, 3, 4, 5]])   # mbox UIDs are 1..n here
        untagged = r.ok('THREAD REFERENCES UTF-8 SUBJECT "nowhere"')
        self.assertIn(b"* THREAD\r\n", untagged)

    def test_bad(self):
        r = self.session()
        for cmd in ("THREAD", "THREAD REFERENCES", "THREAD REFERENCES UTF-8",
                    "THREAD NOSUCH UTF-8 ALL", "THREAD (REFERENCES) UTF-8 ALL"):
            self.refused(r, cmd)
        self.refused(r, "THREAD REFERENCES KOI8-R ALL", b"NO")


# RFC 5256 3 THREAD REFERENCES step 5: threads with one base subject come together.
#   1 tau        2 Re: tau                   -> (1 2): a reply goes under the non-reply
#   3 Re: ups    4 Re: ups                   -> ((3)(4)): both replies: a new dummy
#   5 phi        6 phi                       -> ((5)(6)): neither a reply: a new dummy
#   7 chi        8 Re: chi (References <t7>) 9 Re: chi  -> (7 (8)(9))
#  10 Re: psi   11 psi                       -> (11 10): the non-reply holds the subject
SUBJECTS = ["tau", "Re: tau", "Re: ups", "Re: ups", "phi", "phi", "chi", "Re: chi", "Re: chi",
            "Re: psi", "psi"]


class ThreadSubjects(SortCase):
    INBOX = mbox(message(T0 + i * 60, ["Message-ID: <t%d@x>" % (i + 1), "Subject: " + s,
                                       "Date: " + rfc822_date(T0 + i * 60)] +
                         (["References: <t7@x>"] if i == 7 else []))
                 for i, s in enumerate(SUBJECTS))

    def test_step_5(self):
        r = self.session()
        self.assertEqual(self.thread(r, "THREAD REFERENCES UTF-8 ALL"),
                         [[1, 2], [[3], [4]], [[5], [6]], [7, [8], [9]], [11, 10]])


# RFC 5256 3 THREAD ORDEREDSUBJECT.
#   1 a (5th)  2 Re: a (1st)  3 b (2nd)  4 a (3rd)  5 c (4th)  6 Fwd: c (6th)
#   -> (2 (4)(1))(3)(5 6): by the first sent dates; two members as "x y"
ORDERED = [("a", 5), ("Re: a", 1), ("b", 2), ("a", 3), ("c", 4), ("Fwd: c", 6)]


class ThreadOrderedSubject(SortCase):
    INBOX = mbox(message(T0, ["Subject: " + s, "Date: " + rfc822_date(T0 + k * 60),
                              "X-UID: %d" % (101 + i)])
                 for i, (s, k) in enumerate(ORDERED))

    def test_threads(self):
        r = self.session()
        untagged = r.ok("THREAD ORDEREDSUBJECT UTF-8 ALL")
        self.assertIn(b"* THREAD (2 (4)(1))(3)(5 6)\r\n", untagged)
        self.assertEqual(self.thread(r, "UID THREAD ORDEREDSUBJECT UTF-8 NOT 3"),
                         [[102, [104], [101]], [105, 106]])
