#!/usr/bin/env python3
"""Run by hand (not by make test): the same CONDSTORE/QRESYNC command sequences against
imapmem and a private Dovecot, on fixtures/basic.mbox, and compare the SHAPES of the answers.

    python3 test/dovecot_shapes.py            # prints each step's shapes, differences marked
    python3 test/dovecot_shapes.py -v         # also both transcripts, line by line

Dovecot is Debian's dovecot-imapd, started privately on loopback exactly as `make bench`
does it (test/bench.py's Dovecot: own config and directories, mbox INBOX copied fresh,
user test/test); it needs root (the mail processes run as nobody).  Not in make test: .ci/run
does not install Dovecot.

A shape is a response with its values taken out: numbers become n, UID and sequence sets
`set`, strings `str`, flag lists `(flags)`, the human-readable text after a status is
dropped; FETCH items are sorted by name.  Per step, the shapes are compared as a set (how
many FETCH responses come, and in what order, are values) and separately in the order of
their first appearance.  Exit status 0 when every step has the same set of shapes, 1 if not.
"""
import os
import re
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench                                    # noqa: E402  (its Dovecot and Imapmem)
from wire import (Atom, Literal, Quoted, Raw, STATUS_WORDS, parse_line, split_units,  # noqa: E402
                  status_parts)

FIXTURE = os.path.join(os.path.dirname(HERE), "fixtures", "basic.mbox")
SETLIKE = re.compile(r"^[0-9*]+([:,][0-9*]+)+$")


def vshape(v):
    if v is None:
        return "NIL"
    if isinstance(v, int):
        return "n"
    if isinstance(v, (Quoted, Literal, bytes)):
        return "str"
    if isinstance(v, list):
        if v and all(isinstance(x, str) and not x.isdigit() for x in v) and \
                any(x.startswith("\\") or x.startswith("$") for x in v):
            return "(flags)"
        if not v:
            return "()"
        return "(" + " ".join(vshape(x) for x in v) + ")"
    if isinstance(v, str):
        if SETLIKE.match(v):
            return "set"
        return v.upper() if isinstance(v, Atom) else v
    return repr(type(v))


def code_shape(code):
    if not code:
        return ""
    name = str(code[0]).upper()
    args = code[1:]
    if name in ("PERMANENTFLAGS",):
        return " [%s (flags)]" % name
    return " [%s%s]" % (name, "".join(" " + vshape(a) for a in args))


def shape(line, tag=None):
    """One response line (bytes, with its CRLF) -> its shape (str)."""
    if tag is not None:
        word, code, _ = status_parts(line)
        return "tag %s%s" % (word, code_shape(code))
    r = parse_line(line)
    if r[0] == "+":
        return "+"
    if r[0] in STATUS_WORDS:
        return "* %s%s" % (r[0], code_shape(r[1]))
    if len(r) == 3 and r[1] == "FETCH":
        items = r[2]
        pairs = sorted(zip([str(k).upper() for k in items[0::2]], items[1::2]))
        return "* n FETCH (%s)" % " ".join("%s %s" % (k, vshape(v)) for k, v in pairs)
    if isinstance(r[0], int):
        return "* n " + " ".join(vshape(x) for x in r[1:])
    head = str(r[0]).upper()
    if head == "SEARCH":
        nums = [x for x in r[1:] if isinstance(x, int)]
        rest = [vshape(x) for x in r[1:] if not isinstance(x, int)]
        return "* SEARCH" + (" n..." if nums else "") + "".join(" " + x for x in rest)
    if head == "STATUS":
        d = r[2]
        return "* STATUS str (%s)" % " ".join("%s n" % str(k).upper() for k in sorted(d[0::2]))
    if head == "FLAGS":
        return "* FLAGS (flags)"
    if head == "ENABLED":
        return "* ENABLED" + "".join(" " + str(x).upper() for x in sorted(r[1:]))
    return "* " + " ".join(vshape(x) for x in r)


class Session:
    """A raw IMAP session recording (command, [response lines], tagged line) steps."""

    def __init__(self, port, log, who):
        self.r = Raw("127.0.0.1", port)
        self.r.ok("LOGIN test test")
        self.log = log
        self.who = who

    def step(self, name, command):
        tag = self.r.tag()
        self.r.send("%s %s\r\n" % (tag, command))
        untagged, tagged = self.r.until_tagged(tag)
        lines = split_units(untagged)
        self.log.append((name, command, lines, tagged))
        return untagged, tagged

    def close(self):
        try:
            self.r.cmd("LOGOUT")
        except Exception:
            pass
        self.r.close()


def hms_of(data):
    m = re.search(rb"\[HIGHESTMODSEQ (\d+)\]", data)
    return int(m.group(1)) if m else None


def scenario(port):
    """The command sequences; returns ([(step, command, lines, tagged)] in order, the
    HIGHESTMODSEQs seen).  Every number sent (UIDVALIDITY, mod-sequences) is the one this
    server gave, so both servers get the same questions about their own state."""
    log = []
    a = Session(port, log, "A")
    u, _ = a.step("select-condstore", "SELECT INBOX (CONDSTORE)")
    h0 = hms_of(u)
    uv = int(re.search(rb"\[UIDVALIDITY (\d+)\]", u).group(1))
    a.step("enable-after-select-condstore", "ENABLE CONDSTORE")
    a.step("fetch-modseq", "UID FETCH 1:* (MODSEQ)")
    a.step("fetch-changedsince-nothing", "FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % h0)
    a.step("store-flag", "STORE 1 +FLAGS (\\Flagged)")
    a.step("store-unchangedsince-modified", "STORE 1,2 (UNCHANGEDSINCE %d) +FLAGS (\\Seen)" % h0)
    a.step("uid-store-unchangedsince-silent",
           "UID STORE 3,4 (UNCHANGEDSINCE %d) +FLAGS.SILENT (\\Seen)" % h0)
    a.step("fetch-changedsince", "UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d)" % h0)
    a.step("search-modseq", "SEARCH MODSEQ %d" % h0)
    a.step("search-modseq-entry", 'SEARCH MODSEQ "/flags/\\\\Seen" all %d' % h0)
    a.step("search-modseq-none", "SEARCH MODSEQ 999999")
    u, _ = a.step("status-highestmodseq-selected", "STATUS INBOX (HIGHESTMODSEQ MESSAGES)")
    h1 = int(re.search(rb"HIGHESTMODSEQ (\d+)", u).group(1))
    a.step("examine-after-condstore", "EXAMINE INBOX")
    a.step("unselect", "UNSELECT")
    a.step("status-highestmodseq", "STATUS INBOX (HIGHESTMODSEQ)")
    a.close()

    q = Session(port, log, "Q")
    q.step("enable-qresync", "ENABLE QRESYNC")
    q.step("enable-qresync-again", "ENABLE QRESYNC CONDSTORE")
    q.step("select-qresync-nothing-changed", "SELECT INBOX (QRESYNC (%d %d))" % (uv, h1))
    q.close()

    b = Session(port, log, "B")
    b.step("plain-select", "SELECT INBOX")
    b.step("plain-uid-store", "UID STORE 4 +FLAGS.SILENT (\\Answered)")
    b.step("plain-uid-store-deleted", "UID STORE 3 +FLAGS.SILENT (\\Deleted)")
    b.step("plain-expunge", "EXPUNGE")
    b.close()

    q = Session(port, log, "Q2")
    q.step("enable-qresync", "ENABLE QRESYNC")
    u, _ = q.step("select-qresync-after-changes", "SELECT INBOX (QRESYNC (%d %d))" % (uv, h1))
    h2 = hms_of(u)
    q.step("reselect-qresync-known-uids-seqmatch",
           "SELECT INBOX (QRESYNC (%d %d 1:6 (1,3 1,3)))" % (uv, h1))
    q.step("uid-fetch-changedsince-vanished",
           "UID FETCH 1:* (FLAGS) (CHANGEDSINCE %d VANISHED)" % h1)
    q.step("store-deleted", "STORE 1 +FLAGS.SILENT (\\Deleted)")
    q.step("expunge-in-qresync", "EXPUNGE")
    c = Session(port, log, "C")
    c.step("plain-select", "SELECT INBOX")
    c.step("plain-uid-store-deleted", "UID STORE 6 +FLAGS.SILENT (\\Deleted)")
    c.step("plain-store-flag", "UID STORE 2 +FLAGS.SILENT (\\Draft)")
    c.step("plain-uid-expunge", "UID EXPUNGE 6")
    c.close()
    q.step("noop-sees-vanished-and-fetch", "NOOP")
    q.step("examine-qresync-wrong-uidvalidity", "EXAMINE INBOX (QRESYNC (%d %d))" % (uv + 1, h1))
    # an expunge held back during FETCH, a later flag change not (RFC 7162 3.2, section 6)
    q.step("reselect", "SELECT INBOX")
    d = Session(port, log, "D")
    d.step("plain-select", "SELECT INBOX")
    d.step("plain-uid-store-deleted", "UID STORE 4 +FLAGS.SILENT (\\Deleted)")
    q.step("noop-sees-deleted", "NOOP")
    d.step("plain-uid-expunge", "UID EXPUNGE 4")
    d.step("plain-store-flag", "UID STORE 2 +FLAGS.SILENT (\\Answered)")
    d.close()
    q.step("fetch-while-vanished-pending", "FETCH 1 (UID)")
    q.step("noop-after-fetch", "NOOP")
    q.close()
    return log, (h0, h1, h2)


def run(server_cls, tmp):
    srv = server_cls(FIXTURE, tmp)
    try:
        return scenario(srv.port)
    finally:
        srv.stop()


def first_order(shapes):
    seen = []
    for s in shapes:
        if s not in seen:
            seen.append(s)
    return seen


def main():
    verbose = "-v" in sys.argv[1:]
    if not bench.dovecot_bin():
        print("dovecot_shapes.py: Dovecot is not installed (apt-get install dovecot-imapd)")
        return 2
    with tempfile.TemporaryDirectory(prefix="imapmem-shapes-") as tmp:
        os.chmod(tmp, 0o755)             # Dovecot's mail processes run as nobody
        im, im_h = run(bench.Imapmem, tmp)
        dv, dv_h = run(bench.Dovecot, tmp)
    print("HIGHESTMODSEQ at start, after the STOREs, after the other session: imapmem %r, "
          "Dovecot %r" % (im_h, dv_h))
    differ = 0
    for (name, cmd, il, it), (_, cmd2, dl, dt) in zip(im, dv):
        ishapes = [shape(x) for x in il] + [shape(it, tag=True)]
        dshapes = [shape(x) for x in dl] + [shape(dt, tag=True)]
        same_set = set(ishapes) == set(dshapes)
        same_order = first_order(ishapes) == first_order(dshapes)
        mark = "same" if same_set and same_order else ("ORDER" if same_set else "DIFFER")
        differ += not same_set
        print("== %s: %s   [%s]" % (name, cmd, mark))
        if mark != "same" or verbose:
            for s in sorted(set(ishapes) | set(dshapes), key=lambda s: (s.startswith("tag"), s)):
                where = ("both" if s in ishapes and s in dshapes else
                         "imapmem only" if s in ishapes else "Dovecot only")
                print("   %-13s %s" % (where, s))
        if mark != "same" or verbose:
            print("   imapmem:  " + cmd)
            for x in il + [b"tag " + it + b"\r\n"]:
                print("     " + x.decode("latin-1").rstrip("\r\n")[:200])
            print("   Dovecot:  " + cmd2)
            for x in dl + [b"tag " + dt + b"\r\n"]:
                print("     " + x.decode("latin-1").rstrip("\r\n")[:200])
    print("%d of %d steps answer in different shapes" % (differ, len(im)))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
