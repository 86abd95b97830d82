"""Reference helpers for the wire tests (not a test module itself).

read_mbox(path): what an mbox fixture must look like through IMAP, computed from the file
  by the rules of issue 2 / notes/conventions.md, so tests never hard-code sizes:
  - a message starts at a `From ` line at the start of the file or after an empty line; the
    empty line before the next `From ` line (and one at the end of the file) belongs to the
    mbox format, not to the message;
  - `>From `, `>>From `, ... lose one `>` (mboxrd and mboxo quoting);
  - LF or CRLF lines; the message is given to clients in CRLF form;
  - the header fields Status, X-Status, X-Keywords, X-UID, X-IMAP, X-IMAPbase, X-Imapmem-Eol are removed;
  - flags: Status R -> \\Seen, no O (or no Status at all) -> \\Recent; X-Status A F T D ->
    \\Answered \\Flagged \\Draft \\Deleted; X-Keywords (space or comma separated) -> keywords;
  - INTERNALDATE from the From line (asctime, optional trailing numeric zone, else UTC).

later_flags(m): the flags of a fixture message as a session that is not the first to see it.
TREE_LIST: the LIST attributes of every mailbox of fixtures/tree.
NEWMSG: a message to APPEND whose lines need mbox quoting.

The data side of the wire tests; the server, the clients and the response parser are in
wire.py.
"""
import calendar
import re

from wire import MONTHS, lower

HIDDEN = {b"status", b"x-status", b"x-keywords", b"x-uid", b"x-imap", b"x-imapbase",
          b"x-imapmem-eol"}
XSTATUS = {"A": "\\Answered", "F": "\\Flagged", "T": "\\Draft", "D": "\\Deleted"}


class Msg:
    """One message of a fixture as IMAP must present it."""

    def __init__(self, seq, from_line, lines):
        self.seq = seq
        self.uid = None              # from X-UID, if any
        self.imapbase = None         # (uidvalidity, uidnext) from X-IMAPbase (uidvalidity last-uid)
        self.flags = set()           # system flags and keywords, \Recent included
        lines = [l[1:] if re.match(rb">+From ", l) else l for l in lines]
        end = lines.index(b"") if b"" in lines else len(lines)
        fields, cur = [], None
        for l in lines[:end]:
            if l[:1] in (b" ", b"\t") and cur is not None:
                cur.append(l)
            else:
                cur = [l]
                fields.append(cur)
        kept, status = [], None
        for f in fields:
            name, _, value = f[0].partition(b":")
            name = name.strip().lower()
            value = b" ".join([value] + f[1:]).strip().decode()
            if name not in HIDDEN:
                kept += f
                continue
            if name == b"status":
                status = value
            elif name == b"x-status":
                self.flags |= {XSTATUS[c] for c in value if c in XSTATUS}
            elif name == b"x-keywords":
                self.flags |= set(k for k in re.split(r"[ ,]+", value) if k)
            elif name == b"x-uid":
                self.uid = int(value)
            elif name == b"x-imapbase":
                v = value.split()
                self.imapbase = (int(v[0]), int(v[1]) + 1)
        if status is not None and "R" in status:
            self.flags.add("\\Seen")
        if status is None or "O" not in status:
            self.flags.add("\\Recent")
        self.raw = b"".join(l + b"\r\n" for l in kept + lines[end:])
        self.size = len(self.raw)
        self.internaldate = from_line_time(from_line)
        m = re.search(rb"^Subject: (.*)$", self.raw, re.M | re.I)
        self.subject = m.group(1).rstrip(b"\r").decode() if m else None

    @property
    def seen(self):
        return "\\Seen" in self.flags

    @property
    def recent(self):
        return "\\Recent" in self.flags

    def flags_without_recent(self):
        return self.flags - {"\\Recent"}


def from_line_time(line):
    """Seconds since the epoch for `From addr Www Mmm dd hh:mm:ss yyyy [+zzzz]`."""
    p = line.decode().split()
    mon, day, hms, year = MONTHS.index(p[3]) + 1, int(p[4]), p[5], int(p[6])
    h, m, s = (int(x) for x in hms.split(":"))
    t = calendar.timegm((year, mon, day, h, m, s, 0, 0, 0))
    if len(p) > 7:
        z = p[7]
        off = (int(z[1:3]) * 60 + int(z[3:5])) * 60
        t -= off if z[0] == "+" else -off
    return t


def later_flags(m):
    """The flags of fixture message m (lower case) as a session that is not the first to
    see it: without \\Recent."""
    return lower(m.flags_without_recent())


def read_mbox(path):
    """The messages of an mbox file, as a list of Msg (seq 1..n)."""
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        return []
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    lines = [l[:-1] if l.endswith(b"\r") else l for l in lines]
    starts = [i for i, l in enumerate(lines)
              if l.startswith(b"From ") and (i == 0 or lines[i - 1] == b"")]
    assert starts and starts[0] == 0, path
    msgs = []
    for k, s in enumerate(starts):
        e = starts[k + 1] if k + 1 < len(starts) else len(lines)
        body = lines[s + 1:e]
        if body and body[-1] == b"":
            body = body[:-1]
        msgs.append(Msg(k + 1, lines[s], body))
    return msgs


# LIST attributes of every mailbox in fixtures/tree (lower case), as the layout rules give them.
TREE_LIST = {
    "INBOX": {"\\hasnochildren"},
    "Sent": {"\\hasnochildren"},
    "Drafts": {"\\hasnochildren"},
    "Work": {"\\noselect", "\\haschildren"},
    "Work/Projects": {"\\hasnochildren"},
    "Work/Old": {"\\hasnochildren"},
    "Lists": {"\\haschildren"},
    "Lists/ietf": {"\\hasnochildren"},
}


# A message to APPEND whose lines need mbox quoting when saved ("From " at a line's start).
NEWMSG = (b"From: Bob <bob@example.org>\r\n"
          b"To: test@example.com\r\n"
          b"Subject: appended by the test\r\n"
          b"\r\n"
          b"From the start of a line, needs quoting in mbox.\r\n"
          b">From quoted once already.\r\n"
          b"\r\n"
          b"From after a blank line: looks like a separator.\r\n"
          b"Body marker QWXZ-LITERAL-BODY.\r\n")
