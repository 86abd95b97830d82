"""Generated MIME torture messages for test/difftest.py (issue 16).

messages() returns the same list every time (a fixed seed): bytes with LF line ends, of
these kinds, mixed at random --
  * deep nesting: multiparts and message/rfc822 parts down to 14 levels;
  * boundary look-alikes: lines that start like a delimiter but are not one (more
    characters after the boundary, a leading space, `--b--x`), transport padding after
    real delimiters, missing close delimiters, preambles and epilogues, empty parts and
    parts with no header; messages whose look-alikes Dovecot takes for delimiters (it
    matches a boundary as a prefix of the line) carry `X-Torture: boundary-prefix`;
  * every transfer encoding (7bit, 8bit, binary, base64, quoted-printable, unknown
    tokens, odd case), with bodies encoded to match, and some that are not;
  * parameters: quoted, unquoted, RFC 2231 continuations and charsets, odd case, folded;
  * broken headers: lines with no colon, a space before the colon, 8-bit bytes, very long
    lines, a header with no body;
  * address fields built from a pool of real-world forms.
Run `python3 test/mimegen.py DIR` to write them as DIR/mimegen.mbox to look at.
"""
import base64
import os
import quopri
import random
import sys

SEED = 16
COUNT = 420

WORDS = ("alpha beta gamma delta the quick brown fox jumps over lazy dog mail part "
         "boundary text résumé naïve Grüße").split()

ADDRESSES = [
    "alice@example.com", "Alice Example <alice@example.com>", "\"Doe, John\" <jd@example.org>",
    "bob@example.net (Bob Builder)", "<carol@example.com>", "=?utf-8?q?J=C3=B8rn?= <j@x.example>",
    "undisclosed-recipients:;", "team: a@x.example, b@y.example;",
    "Dave <@relay.example:d@x.example>",
    "eve(comment)@example.com", "postmaster", "\"quoted local\"@example.com", "a@[192.0.2.1]",
    "Frank (the boss) <frank@example.com>", "group:;", "<>", "x@y.example (a) (b)",
]

SUBJECTS = ["Hello", "Re: Fwd: [list] weekly\t digest", "=?iso-8859-1?q?Gr=FC=DFe?= aus Köln",
            "  spaced   out  ", "", "tab\there", "folded\n line", "Re:  Re: x"]


def words(rnd, n):
    return " ".join(rnd.choice(WORDS) for _ in range(n))


def text_body(rnd, lines=None):
    n = rnd.randint(0, 6) if lines is None else lines
    return "".join(words(rnd, rnd.randint(1, 12)) + "\n" for _ in range(n))


def encode(rnd, raw):
    """(Content-Transfer-Encoding value or None, encoded body) for raw bytes."""
    kind = rnd.choice(["none", "7bit", "8bit", "binary", "base64", "qp", "BASE64",
                       "Quoted-Printable", "x-uuencode", "7-bit", "base64 (comment)",
                       "bad-base64"])
    if kind == "none":
        return None, raw.decode("utf-8", "replace")
    if kind in ("base64", "BASE64", "base64 (comment)"):
        enc = base64.encodebytes(raw).decode()
        return kind, enc
    if kind == "bad-base64":
        return "base64", "!!not base64 at all==\n" + raw.decode("utf-8", "replace")
    if kind in ("qp", "Quoted-Printable"):
        return "quoted-printable" if kind == "qp" else kind, quopri.encodestring(raw).decode()
    return kind, raw.decode("utf-8", "replace")


def content_type(rnd, ctype, params):
    """A Content-Type field with params written in one of the ways senders write them."""
    out = ctype if rnd.random() < 0.8 else ctype.upper() if rnd.random() < 0.5 else ctype.title()
    for name, value in params:
        style = rnd.random()
        sep = ";\n\t" if rnd.random() < 0.3 else "; "
        if style < 0.5:
            out += '%s%s="%s"' % (sep, name, value)
        elif style < 0.75 and all(c.isalnum() or c in "-._=+/" for c in value):
            out += "%s%s=%s" % (sep, name, value)
        elif style < 0.9 and len(value) > 4:
            half = len(value) // 2
            out += '%s%s*0="%s"%s%s*1="%s"' % (sep, name, value[:half], sep, name, value[half:])
        else:
            out += "%s%s*=utf-8''%s" % (sep, name, "".join(
                c if c.isalnum() else "%%%02X" % ord(c) for c in value))
    return "Content-Type: " + out


def leaf(rnd):
    """(header lines, body) of a leaf part."""
    kind = rnd.choice(["plain", "html", "plain-nocs", "octet", "image", "noheader",
                       "plain-latin1", "text-other"])
    raw = text_body(rnd).encode()
    hdr = []
    if kind == "noheader":
        return [], raw.decode()
    if kind == "plain":
        hdr.append(content_type(rnd, "text/plain", [("charset", rnd.choice(
            ["utf-8", "us-ascii", "UTF-8"])), ("format", "flowed")][:rnd.randint(1, 2)]))
    elif kind == "plain-nocs":
        hdr.append("Content-Type: text/plain")
    elif kind == "plain-latin1":
        hdr.append(content_type(rnd, "text/plain", [("charset", "iso-8859-1")]))
        raw = raw.decode().encode("latin-1", "replace")
    elif kind == "html":
        hdr.append(content_type(rnd, "text/html", [("charset", "utf-8")]))
        raw = b"<p>" + raw + b"</p>\n"
    elif kind == "text-other":
        hdr.append("Content-Type: text/x-" + rnd.choice(["vcard", "markdown", "diff"]))
    else:
        name = rnd.choice(["report.pdf", "a b.bin", "ünïcode.txt", "x=y.dat",
                           "long-" * 12 + ".z"])
        hdr.append(content_type(rnd, "application/octet-stream" if kind == "octet" else "image/png",
                                [("name", name)]))
        hdr.append("Content-Disposition: " + rnd.choice(["attachment", "inline", "ATTACHMENT"]) +
                   '; filename="%s"' % name)
        raw = bytes(rnd.randrange(1, 256) for _ in range(rnd.randint(0, 90)))   # no NUL
    if rnd.random() < 0.2:
        hdr.append("Content-ID: <%d@gen.example>" % rnd.randrange(10 ** 6))
    if rnd.random() < 0.15:
        hdr.append("Content-Description: " + words(rnd, 3))
    if rnd.random() < 0.1:
        hdr.append("Content-Language: " + rnd.choice(["en", "en, de", "fr-CA"]))
    cte, body = encode(rnd, raw)
    if cte:
        hdr.append("Content-Transfer-Encoding: " + cte)
    return hdr, body


def boundary(rnd, depth):
    return rnd.choice(["b%d_%d" % (depth, rnd.randrange(1000)), "----=_Part_%d_%d.%d" % (
        depth, rnd.randrange(99), rnd.randrange(10 ** 6)), "=_%x" % rnd.randrange(1 << 30),
        "simple%d" % depth, "with space %d" % depth])


def entity(rnd, depth, flags):
    """(header lines, body) of a part that may be a multipart or a message."""
    r = rnd.random()
    if depth >= 14 or r < 0.45:
        return leaf(rnd)
    if r < 0.55:
        inner = message(rnd, depth + 1, flags, top=False)
        return [rnd.choice(["Content-Type: message/rfc822", "Content-Type: Message/RFC822"])], inner
    sub = rnd.choice(["mixed", "alternative", "related", "digest", "signed", "report"])
    b = boundary(rnd, depth)
    quoted = " " in b or "=" in b or rnd.random() < 0.5
    hdr = ["Content-Type: multipart/%s; boundary=%s" % (sub, '"%s"' % b if quoted else b)]
    out = []
    if rnd.random() < 0.5:
        out.append(text_body(rnd, rnd.randint(1, 3)))              # preamble
    for _ in range(rnd.randint(0, 4)):
        if sub == "digest" and rnd.random() < 0.6:
            h, body = [], message(rnd, depth + 1, flags, top=False)
        else:
            h, body = entity(rnd, depth + 1, flags)
        pad = rnd.choice(["", "", "", " ", "\t ", "  "])
        out.append("--%s%s\n%s\n%s" % (b, pad, "".join(x + "\n" for x in h), body))
        if not body.endswith("\n"):
            out.append("\n")
        look = rnd.random()
        if look < 0.08:
            out.append(" --%s\nnot a delimiter: a leading space\n" % b)
        elif look < 0.1:
            out.append("--%sX\n--%s--x\n" % (b, b))
            flags.add("prefix")
    close = rnd.random()
    if close < 0.8:
        out.append("--%s--%s\n" % (b, rnd.choice(["", " "])))
        if rnd.random() < 0.4:
            out.append(text_body(rnd, rnd.randint(1, 3)))          # epilogue
    return hdr, "".join(out)


def broken_header(rnd):
    return rnd.choice(["this line has no colon", "Subject : space before the colon",
                       "X-Long: " + "y" * rnd.randint(900, 1200), "X-8bit: caf\u00e9 \u00fc",
                       "X-Empty:", " leading continuation at the start", ":no name"])


def message(rnd, depth, flags, top=True):
    hdr = []
    if rnd.random() < 0.9:
        hdr.append("Date: %s, %d %s %d %02d:%02d:%02d %s" % (
            rnd.choice(["Mon", "Tue", "Sun"]), rnd.randint(1, 28),
            rnd.choice(["Jan", "Feb", "Dec"]), rnd.choice([1998, 2004, 2012, 2026]),
            rnd.randint(0, 23), rnd.randint(0, 59), rnd.randint(0, 59),
            rnd.choice(["+0000", "-0500", "+0130", "GMT", "EST"])))
    hdr.append("From: " + rnd.choice(ADDRESSES))
    if rnd.random() < 0.8:
        hdr.append("To: " + ", ".join(rnd.choice(ADDRESSES) for _ in range(rnd.randint(1, 3))))
    if rnd.random() < 0.3:
        hdr.append("Cc: " + rnd.choice(ADDRESSES))
    if rnd.random() < 0.1:
        hdr.append("Cc: " + rnd.choice(ADDRESSES))
    hdr.append("Subject: " + rnd.choice(SUBJECTS))
    hdr.append("Message-ID: <%d.%d@gen.example>" % (depth, rnd.randrange(10 ** 9)))
    if rnd.random() < 0.15:
        hdr.append(broken_header(rnd))
    if rnd.random() < 0.7:
        hdr.append("MIME-Version: 1.0")
    h, body = entity(rnd, depth, flags)
    if top and "prefix" in flags:
        hdr.append("X-Torture: boundary-prefix")
    if rnd.random() < 0.02 and not body:
        return "".join(x + "\n" for x in hdr + h)                   # no blank line, no body
    return "".join(x + "\n" for x in hdr + h) + "\n" + body


def messages():
    rnd = random.Random(SEED)
    out = []
    for _ in range(COUNT):
        flags = set()
        m = message(rnd, 0, flags)
        out.append(m.encode("utf-8"))
    return out


if __name__ == "__main__":
    d = sys.argv[1] if len(sys.argv) > 1 else "."
    with open(os.path.join(d, "mimegen.mbox"), "wb") as f:
        for m in messages():
            f.write(b"From gen@example.org Mon Jan  1 00:00:00 2024\n" + m +
                    (b"" if m.endswith(b"\n") else b"\n") + b"\n")
