"""imapmem.c reads bottom-up: this keeps it so (make test runs it once).

The file is cut into sections by its banners ("** N  Title" between "** ====" rules).
For every function and every table of function pointers it finds the functions it names:
* none may be in a later section;
* each section's banner says in a "Calls:" line which earlier sections it uses, and that
  line must be exactly true ("libc only", "section 1", "sections 1-3, 5 and 6", or for main
  "the public API only": the imapmem_ functions);
* every banner has Owns:, Calls: and Locking: lines;
* a function may be declared before its definition (a prototype) only where two
  functions call each other: some function between the two uses it, and is used by it.
"""
import os
import re
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "imapmem.c")
IDENT = re.compile(r"(?<![\w.>])([A-Za-z_]\w*)\b")


def strip(text):
    """Text without comments and the insides of string and character literals."""
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    text = re.sub(r'"(?:\\.|[^"\\\n])*"', '""', text)
    return re.sub(r"'(?:\\.|[^'\\\n])+'", "''", text)


class Source:
    def __init__(self, path=SOURCE):
        with open(path) as f:
            raw = f.read()
        self.raw_lines = raw.split("\n")
        self.lines = strip(raw).split("\n")
        self.sections = []            # (first line, number, banner text)
        for i, l in enumerate(self.raw_lines):
            m = re.match(r"^\*\* (\d+)  (\S.*)$", l)
            if m and i > 0 and self.raw_lines[i - 1].startswith("** ====="):
                end = i
                while not self.raw_lines[end].startswith("*/"):
                    end += 1
                self.sections.append((i, int(m.group(1)), "\n".join(self.raw_lines[i:end])))
        self.funcs = {}               # name -> (first line of signature, last line)
        self.protos = {}              # name -> line of a declaration without a body
        self.tables = []              # (line, last line) of initialised data at top level
        i = 0
        L = self.lines
        while i < len(L):
            l = L[i]
            if l and not l[0].isspace() and not l.startswith(("#", "}", "{")):
                j, sig = i, l
                while not re.search(r"[;{]\s*$", sig) and j + 1 < len(L):
                    j += 1
                    sig += " " + L[j].strip()
                head = re.sub(r"PRINTF_LIKE\(\d+,\s*\d+\)", "", sig)
                m = re.search(r"([A-Za-z_]\w*)\s*\(", head)
                if sig.rstrip().endswith("{") and m and "=" not in head.split("(")[0]:
                    k = j + 1
                    while L[k] != "}":
                        k += 1
                    self.funcs[m.group(1)] = (i, k)
                    i = k + 1
                    continue
                if "=" in sig and sig.rstrip().endswith("{"):      # a table
                    k = j + 1
                    while not L[k].startswith("}"):
                        k += 1
                    self.tables.append((i, k))
                    i = k + 1
                    continue
                if sig.rstrip().endswith(";") and m and re.match(r"^static\b", sig) \
                        and not re.search(r"=|\bstruct\s+\w+\s*\{", head):
                    self.protos[m.group(1)] = i
                i = j + 1
                continue
            i += 1

    def section_of(self, line):
        n = None
        for first, num, _ in self.sections:
            if first <= line:
                n = num
        return n

    def names_in(self, first, last):
        text = "\n".join(self.lines[first:last + 1])
        return {m.group(1) for m in IDENT.finditer(text)} & set(self.funcs)

    def uses(self):
        """[(user name or 'table', its line, its section, the function it names)]"""
        out = []
        for name, (first, last) in self.funcs.items():
            for callee in self.names_in(first, last) - {name}:
                out.append((name, first, self.section_of(first), callee))
        for first, last in self.tables:
            for callee in self.names_in(first, last):
                out.append(("a table", first, self.section_of(first), callee))
        return out


def declared_calls(banner):
    m = re.search(r"^\*\* Calls: (.*?)(?:\n\*\* [A-Z][a-z]+:|\n\*\*\n|\Z)", banner, re.M | re.S)
    if not m:
        return None
    text = " ".join(m.group(1).split())
    if text.startswith("libc only"):
        return set()
    if text.startswith("the public API only"):
        return {"api"}
    m = re.match(r"sections? ([\d ,\-and]+)", text)
    out = set()
    for part in re.split(r",|\band\b", m.group(1)):
        part = part.strip()
        if "-" in part:
            a, b = (int(x) for x in part.split("-"))
            out |= set(range(a, b + 1))
        elif part:
            out.add(int(part))
    return out


class Layering(unittest.TestCase):
    def setUp(self):
        self.src = Source()

    def test_sections_are_numbered_in_order(self):
        nums = [n for _, n, _ in self.src.sections]
        self.assertEqual(nums, list(range(len(nums))), nums)
        self.assertGreaterEqual(len(nums), 12)

    def test_nothing_calls_into_a_later_section(self):
        up = ["%s (section %s) -> %s (section %s)" % (who, sec, callee,
                                                     self.src.section_of(self.src.funcs[callee][0]))
              for who, line, sec, callee in self.src.uses()
              if self.src.section_of(self.src.funcs[callee][0]) > sec]
        self.assertEqual(up, [], "calls into later sections:\n" + "\n".join(sorted(up)))

    def test_banners_say_what_each_section_calls(self):
        used = {}
        for who, line, sec, callee in self.src.uses():
            cs = self.src.section_of(self.src.funcs[callee][0])
            if cs != sec:
                used.setdefault(sec, set()).add("api" if callee.startswith("imapmem_") and
                                                sec == max(n for _, n, _ in self.src.sections)
                                                else cs)
        wrong = []
        for first, num, banner in self.src.sections:
            if num == 0:
                continue
            for field in ("Owns:", "Calls:", "Locking:"):
                if "\n** " + field not in "\n" + banner:
                    wrong.append("section %d: no %s line" % (num, field))
            said = declared_calls(banner)
            if said is not None and said != used.get(num, set()):
                wrong.append("section %d says it calls %s but calls %s" %
                             (num, sorted(said, key=str), sorted(used.get(num, set()), key=str)))
        self.assertEqual(wrong, [], "\n".join(wrong))

    def test_prototypes_only_for_recursion(self):
        src = self.src
        calls = {name: src.names_in(f, l) - {name} for name, (f, l) in src.funcs.items()}

        def reaches(a, b, seen=None):
            seen = seen or set()
            if a == b:
                return True
            seen.add(a)
            return any(reaches(c, b, seen) for c in calls.get(a, ()) if c not in seen)

        wrong = []
        for name, line in src.protos.items():
            if name not in src.funcs:
                continue              # the public API's declarations are in imapmem.h
            defined = src.funcs[name][0]
            users = [u for u, (f, _) in src.funcs.items()
                     if line < f < defined and name in calls[u]]
            if not users or not all(reaches(name, u) for u in users):
                wrong.append("%s is declared at line %d without recursion that needs it"
                             % (name, line + 1))
        self.assertEqual(wrong, [], "\n".join(wrong))


if __name__ == "__main__":
    unittest.main()
