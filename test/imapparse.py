"""A small parser for IMAP server responses (RFC 3501 section 9), for tests.

parse_untagged(data) turns the untagged bytes that Raw.cmd() returns into a list of
responses.  A FETCH response `* 3 FETCH (UID 7 FLAGS (\\Seen) BODY[]<0> {5}...)` becomes
("FETCH", 3, [("UID", 7), ("FLAGS", [...]), ("BODY[]<0>", b"...")]); every other line
becomes (None, None, line_bytes).

Values: NIL -> None, a number -> int, an atom (e.g. a flag) -> Atom (a str), a quoted
string -> Quoted (bytes), a literal -> Literal (bytes), a parenthesized list -> list.
Quoted and Literal compare equal to plain bytes; the class tells how it was sent.
A FETCH item name that carries a section (BODY[...]<n>) is read up to its closing "]"
and the optional "<origin>", spaces and parentheses included, and kept as sent.
"""


class ParseError(Exception):
    pass


class Atom(str):
    pass


class Quoted(bytes):
    pass


class Literal(bytes):
    pass


class Parser:
    def __init__(self, data):
        self.d = data
        self.i = 0

    def error(self, what):
        raise ParseError("%s at offset %d: %r" % (what, self.i, self.d[self.i:self.i + 60]))

    def peek(self):
        return self.d[self.i:self.i + 1]

    def expect(self, s):
        if self.d[self.i:self.i + len(s)] != s:
            self.error("expected %r" % s)
        self.i += len(s)

    def at_end(self):
        return self.i >= len(self.d)

    def value(self):
        c = self.peek()
        if c == b"(":
            return self.list_()
        if c == b'"':
            return self.quoted()
        if c == b"{":
            return self.literal()
        return self.atom()

    def list_(self):
        self.expect(b"(")
        out = []
        while True:
            if self.peek() == b")":
                self.i += 1
                return out
            # RFC 3501 9 puts no SP between adjacent lists in `"(" 1*address ")"` and
            # `1*body SP media-subtype`; everywhere else elements are SP-separated.
            if out and not (isinstance(out[-1], list) and self.peek() == b"("):
                self.expect(b" ")
            out.append(self.value())

    def quoted(self):
        self.expect(b'"')
        out = bytearray()
        while True:
            c = self.peek()
            if c == b"":
                self.error("unterminated quoted string")
            self.i += 1
            if c == b'"':
                return Quoted(bytes(out))
            if c == b"\\":
                e = self.peek()
                if e not in (b'"', b"\\"):
                    self.error("bad quoted-pair")
                self.i += 1
                out += e
            elif c in (b"\r", b"\n"):
                self.error("CR/LF in quoted string")
            else:
                out += c

    def literal(self):
        self.expect(b"{")
        j = self.d.index(b"}", self.i)
        n = int(self.d[self.i:j])
        self.i = j + 1
        self.expect(b"\r\n")
        if self.i + n > len(self.d):
            self.error("short literal")
        s = self.d[self.i:self.i + n]
        self.i += n
        return Literal(s)

    def atom(self):
        j = self.i
        while j < len(self.d) and self.d[j:j + 1] not in (b" ", b"(", b")", b"\r", b"\n"):
            j += 1
        if j == self.i:
            self.error("expected a value")
        a = self.d[self.i:j].decode("ascii")
        self.i = j
        if a.upper() == "NIL":
            return None
        if a.isdigit():
            return int(a)
        return Atom(a)

    def item_name(self):
        """A FETCH item name; BODY[section]<origin> is kept as one string."""
        j = self.i
        while j < len(self.d) and self.d[j:j + 1] not in (b" ", b"[", b")", b"\r"):
            j += 1
        if self.d[j:j + 1] == b"[":
            j = self.d.index(b"]", j) + 1
            if self.d[j:j + 1] == b"<":
                j = self.d.index(b">", j) + 1
        name = self.d[self.i:j].decode("ascii")
        self.i = j
        return name

    def fetch_att_list(self):
        self.expect(b"(")
        out = []
        while True:
            if self.peek() == b")":
                self.i += 1
                return out
            if out:
                self.expect(b" ")
            name = self.item_name()
            self.expect(b" ")
            out.append((name, self.value()))


def parse_untagged(data):
    p = Parser(data)
    out = []
    while not p.at_end():
        start = p.i
        p.expect(b"* ")
        j = p.d.find(b" ", p.i)
        k = p.d.find(b"\r\n", p.i)
        word = p.d[p.i:j] if j != -1 else b""
        if word.isdigit() and p.d[j + 1:j + 7] == b"FETCH ":
            n = int(word)
            p.i = j + 7
            items = p.fetch_att_list()
            p.expect(b"\r\n")
            out.append(("FETCH", n, items))
        else:
            p.i = k + 2
            out.append((None, None, p.d[start:p.i]))
    return out


def to_text(v):
    """Recursively turn strings (bytes) into str (UTF-8, undecodable bytes escaped)."""
    if isinstance(v, list):
        return [to_text(x) for x in v]
    if isinstance(v, tuple):
        return [to_text(x) for x in v]
    if isinstance(v, bytes):
        return v.decode("utf-8", "surrogateescape")
    if isinstance(v, Atom):
        return str(v)
    return v
