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

parse(data): a small IMAP response parser for the bytes Raw.cmd() returns, so tests
  compare values (flags, numbers, strings, literals) rather than byte layouts.
"""
import calendar
import re

HIDDEN = {b"status", b"x-status", b"x-keywords", b"x-uid", b"x-imap", b"x-imapbase",
          b"x-imapmem-eol"}
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
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


def imap_date_time(s):
    """Seconds since the epoch for an IMAP date-time `dd-Mon-yyyy hh:mm:ss +zzzz`."""
    m = re.match(r"^([ \d]\d)-([A-Z][a-z]{2})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)$", s)
    if not m:
        raise ValueError("not an IMAP date-time: %r" % s)
    t = calendar.timegm((int(m.group(3)), MONTHS.index(m.group(2)) + 1, int(m.group(1)),
                         int(m.group(4)), int(m.group(5)), int(m.group(6)), 0, 0, 0))
    off = (int(m.group(8)) * 60 + int(m.group(9))) * 60
    return t - off if m.group(7) == "+" else t + off


# ---------------------------------------------------------------------------------------
# Response parsing.  Atoms become str (all-digit atoms become int, NIL becomes None),
# quoted strings and literals become bytes, parenthesised lists become lists.

class ParseError(ValueError):
    pass


def split_units(data):
    """Split response bytes into logical lines (a line plus any literals it carries)."""
    units, pos = [], 0
    while pos < len(data):
        start = pos
        while True:
            i = data.find(b"\r\n", pos)
            if i < 0:
                raise ParseError("no CRLF after %r" % data[start:start + 80])
            m = re.search(rb"\{(\d+)\+?\}$", data[pos:i])
            if m:
                pos = i + 2 + int(m.group(1))
                continue
            pos = i + 2
            break
        units.append(data[start:pos])
    return units


class _Tok:
    def __init__(self, data):
        self.d = data
        self.i = 0

    def peek(self):
        return self.d[self.i:self.i + 1]

    def at_end(self):
        return self.i >= len(self.d) or self.d[self.i:self.i + 2] == b"\r\n"

    def value(self):
        c = self.peek()
        if c == b"(":
            self.i += 1
            out = []
            while True:
                if self.peek() == b")":
                    self.i += 1
                    return out
                if self.at_end():
                    raise ParseError("unclosed list in %r" % self.d)
                out.append(self.value())
                if self.peek() == b" ":
                    self.i += 1
        if c == b'"':
            self.i += 1
            out = bytearray()
            while True:
                ch = self.d[self.i:self.i + 1]
                if ch == b"":
                    raise ParseError("unterminated quoted string in %r" % self.d)
                self.i += 1
                if ch == b'"':
                    return bytes(out)
                if ch == b"\\":
                    ch = self.d[self.i:self.i + 1]
                    self.i += 1
                out += ch
        if c == b"{":
            m = re.compile(rb"\{(\d+)\+?\}\r\n").match(self.d, self.i)
            if not m:
                raise ParseError("bad literal in %r" % self.d)
            n = int(m.group(1))
            self.i = m.end() + n
            return self.d[m.end():self.i]
        start, depth = self.i, 0
        while self.i < len(self.d):
            ch = self.d[self.i:self.i + 1]
            if ch == b"[":
                depth += 1
            elif ch == b"]":
                if depth == 0:
                    break
                depth -= 1
            elif depth == 0 and (ch in b" ()" or ch in b"\r\n"):
                break
            self.i += 1
        if self.i == start:
            raise ParseError("unexpected %r at %d in %r" % (c, self.i, self.d))
        atom = self.d[start:self.i].decode("latin-1")
        if atom.upper() == "NIL":
            return None
        return int(atom) if atom.isdigit() else atom


def tokens(line):
    """All values of one logical line (or of a code's text)."""
    t = _Tok(line)
    out = []
    while not t.at_end():
        out.append(t.value())
        if t.peek() == b" ":
            t.i += 1
    return out


STATUS_WORDS = ("OK", "NO", "BAD", "BYE", "PREAUTH")


def status_parts(text):
    """b'OK [UIDNEXT 7] text' -> ('OK', ['UIDNEXT', 7], 'text'); code None when absent."""
    text = text.rstrip(b"\r\n")
    word, _, rest = text.partition(b" ")
    code = None
    if rest.startswith(b"["):
        j = rest.find(b"]")
        code = tokens(rest[1:j]) if j > 0 else None
        rest = rest[j + 1:].lstrip(b" ")
    return word.decode().upper(), code, rest.decode("latin-1")


def parse(data):
    """Untagged/continuation bytes -> list of responses.

    `* OK [X y] text` -> ['OK', ['X', 'y'] or None, 'text'];  `+ text` -> ['+', text];
    other `* ...` -> their values, e.g. [6, 'EXISTS'] or ['LIST', [...], b'/', b'INBOX']."""
    out = []
    for u in split_units(data):
        if u.startswith(b"+"):
            out.append(["+", u[1:].strip().decode("latin-1")])
            continue
        if not u.startswith(b"* "):
            raise ParseError("not an untagged response: %r" % u[:100])
        body = u[2:]
        word = body.split(b" ", 1)[0].upper().rstrip(b"\r\n").decode("latin-1")
        if word in STATUS_WORDS:
            out.append(list(status_parts(body)))
        else:
            out.append(tokens(body))
    return out


def name_of(v):
    """A mailbox name value (atom, quoted, literal or number) as str."""
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return str(v)


def upper(v):
    return v.upper() if isinstance(v, str) else v


def responses(data, keyword):
    """Untagged data responses named keyword (`* LIST ...`, `* 3 EXISTS`, `* 2 FETCH ...`)."""
    kw = keyword.upper()
    out = []
    for r in parse(data):
        if r and upper(r[0]) == kw:
            out.append(r)
        elif len(r) > 1 and isinstance(r[0], int) and upper(r[1]) == kw:
            out.append(r)
    return out


def codes(data):
    """{CODE: args} from every untagged OK/NO/BAD/BYE response code in data."""
    out = {}
    for r in parse(data):
        if r and r[0] in STATUS_WORDS and r[1]:
            out[upper(r[1][0])] = r[1][1:]
    return out


def fetch_list(data):
    """[(seq, {ITEM: value})] for every untagged FETCH, in order."""
    out = []
    for r in responses(data, "FETCH"):
        items = r[2]
        if len(items) % 2:
            raise ParseError("odd FETCH item list %r" % (items,))
        d = {}
        for k in range(0, len(items), 2):
            d[items[k].upper()] = items[k + 1]
        out.append((r[0], d))
    return out


def fetches(data):
    """{seq: {ITEM: value}}, several FETCH responses for one message merged."""
    out = {}
    for seq, d in fetch_list(data):
        out.setdefault(seq, {}).update(d)
    return out


def flagset(v):
    """A FLAGS value as a set of lower-case names (flags are case-insensitive)."""
    return {f.lower() for f in v}


def lower(flags):
    return {f.lower() for f in flags}


def expand_set(s):
    """A uid-set such as '304,319:320' -> [304, 319, 320] (order kept, ranges ascending)."""
    out = []
    for part in str(s).split(","):
        if ":" in part:
            a, b = (int(x) for x in part.split(":"))
            out += list(range(min(a, b), max(a, b) + 1))
        else:
            out.append(int(part))
    return out


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
