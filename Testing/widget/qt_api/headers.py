"""The C++ header parser behind ``generate.py`` (and ``Testing/mrml/slicer_api/generate.py``): finds a class's header
in a source tree or a git directory at a ref, and lists its Q_PROPERTYs (with writability and NOTIFY signal), signals,
slots, ``Q_INVOKABLE``s and public methods, normalised as moc does (``const T&`` → ``T``, names and defaults dropped,
one entry per callable arity)."""

import os
import re
import subprocess
from typing import Dict, List, Optional, Tuple

# Where Qt keeps a header in an installed include tree vs. a qtbase source tree: found by base name, preferring these
QT_PREFER = ("QtWidgets", "QtCore", "src/widgets", "src/corelib")


class Source:
    """A header tree: a directory, or a git directory at a ref."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.gitdir = None
        self.ref = None
        self.root = None
        if "@" in spec:
            self.gitdir, self.ref = spec.rsplit("@", 1)
            names = subprocess.run(
                ["git", "-C", self.gitdir, "ls-tree", "-r", "--name-only", self.ref],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.split("\n")
            self.commit = subprocess.run(
                ["git", "-C", self.gitdir, "rev-parse", self.ref + "^{commit}"],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
        else:
            self.root = spec
            names = []
            for dirpath, _dirs, files in os.walk(spec):
                for f in files:
                    if f.endswith(".h"):
                        names.append(os.path.relpath(os.path.join(dirpath, f), spec))
            self.commit = None
        self.index: Dict[str, List[str]] = {}
        for n in names:
            if n.endswith(".h"):
                self.index.setdefault(os.path.basename(n), []).append(n)

    def find(self, basename: str) -> Optional[str]:
        cands = self.index.get(basename, [])
        if not cands:
            return None
        for pref in QT_PREFER:
            for c in cands:
                if c.startswith(pref) or ("/" + pref) in c:
                    return c
        # shortest path that is not a test / example / private header
        good = [c for c in cands if not re.search(r"(Testing|test|example|_p\.h$|private)", c)] or cands
        return sorted(good, key=len)[0]

    def read(self, path: str) -> str:
        if self.gitdir:
            return subprocess.run(
                ["git", "-C", self.gitdir, "show", f"{self.ref}:{path}"], check=True, capture_output=True, text=True
            ).stdout
        with open(os.path.join(self.root, path), encoding="utf-8", errors="replace") as f:
            return f.read()

    def describe(self) -> str:
        if self.gitdir:
            return f"git {self.gitdir} {self.ref} ({self.commit})"
        return f"directory {self.root}"


# ----------------------------------------------------------------------------------------- parsing
def strip_comments(text: str) -> str:
    """Remove comments, keeping line breaks (for line numbers) and string literals."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == "/" and i + 1 < n and text[i + 1] == "/":
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif c == "/" and i + 1 < n and text[i + 1] == "*":
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def split_top(s: str, sep: str = ",") -> List[str]:
    parts, depth, cur = [], 0, []
    for ch in s:
        if ch in "(<[{":
            depth += 1
        elif ch in ")>]}":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur))
    return parts


TYPE_WORDS = {
    "int",
    "long",
    "short",
    "char",
    "double",
    "float",
    "bool",
    "unsigned",
    "signed",
    "void",
    "const",
    "qreal",
    "qint64",
    "quint64",
    "uint",
    "QString",
    "QStringList",
}


def normalise_param(p: str) -> Tuple[str, bool]:
    """'const QString& path = QString()' -> ('QString', True); moc-style normalisation."""
    has_default = False
    depth = 0
    for k, ch in enumerate(p):
        if ch in "(<":
            depth += 1
        elif ch in ")>":
            depth -= 1
        elif ch == "=" and depth == 0:
            p, has_default = p[:k], True
            break
    p = " ".join(p.replace("&", " & ").replace("*", " * ").split())
    toks = p.split(" ")
    # drop the parameter name: a trailing identifier after a complete type
    if len(toks) > 1 and re.fullmatch(r"[A-Za-z_]\w*", toks[-1]) and toks[-1] not in TYPE_WORDS and toks[-2] != "::":
        if not (len(toks) == 2 and toks[0] in ("const", "unsigned", "signed")):
            toks = toks[:-1]
    t = " ".join(toks)
    # moc: "const T &" -> "T"; "const T *" stays; "T &" stays
    m = re.fullmatch(r"const (.+?) &", t)
    if m:
        t = m.group(1)
    t = t.replace(" *", "*").replace(" &", "&").replace("< ", "<").replace(" >", ">")
    return t.strip(), has_default


FUNC_RE = re.compile(r"(?P<name>~?[A-Za-z_]\w*)\s*\((?P<params>.*)\)\s*(?P<tail>[^()]*)$", re.S)
SKIP_STMT = re.compile(
    r"^\s*(enum|struct|class|typedef|using|friend|template|Q_OBJECT|Q_ENUM|Q_ENUMS|Q_FLAG|Q_FLAGS|"
    r"Q_DECLARE|Q_DISABLE_COPY|Q_DECLARE_PRIVATE|Q_DECLARE_PUBLIC|Q_PRIVATE_SLOT|Q_GADGET|QDOC_PROPERTY|"
    r"Q_CLASSINFO|Q_DECLARE_FLAGS|Q_DISABLE_COPY_MOVE)\b"
)
ACCESS_RE = re.compile(r"^\s*(public|protected|private)?\s*(Q_SLOTS|slots|Q_SIGNALS|signals)?\s*:\s*$")
PROP_RE = re.compile(r"Q_PROPERTY\s*\(")
# macros that end without ';': dropped (no arguments) or closed at their balanced ')'
NO_SEMICOLON = re.compile(r"\b(Q_OBJECT|Q_GADGET|Q_OBJECT_FAKE|QVTK_OBJECT)\b")
MACRO_STMT = re.compile(
    r"^(Q_(?!REVISION|INVOKABLE|SCRIPTABLE|DECL_|REQUIRED)\w*|QDOC_PROPERTY|QT_(?!DEPRECATED)\w*)\s*\("
)
MACRO_PREFIX = re.compile(
    r"^(?:\s*(?:Q_INVOKABLE|Q_SCRIPTABLE|Q_REVISION\s*\([^)]*\)|QT_DEPRECATED(?:_X|_VERSION_X_\d+_\d+|_VERSION_\d+_\d+)?"
    r"(?:\s*\((?:[^()]|\([^()]*\))*\))?|Q_DECL_DEPRECATED(?:_X\s*\([^)]*\))?|virtual|static|inline|explicit|"
    r"Q_REQUIRED_RESULT|Q_DECL_CONSTEXPR|constexpr|\[\[nodiscard\]\]|Q_WIDGETS_EXPORT|Q_CORE_EXPORT|"
    r"QT6_DECL_NEW_OVERLOAD|QT6_ONLY\([^)]*\)|QT7_ONLY\([^)]*\))\s+)+"
)


def base_list(text: str) -> str:
    """A class's base list without preprocessor lines, keeping the ``#if`` branch (QSettings: ": public QObject /
    #else / class Q_CORE_EXPORT QSettings / #endif")."""
    kept, skipping = [], False
    for line in text.split("\n"):
        directive = line.strip()
        if directive.startswith("#"):
            skipping = re.match(r"#\s*(else|elif)\b", directive) is not None or (
                skipping and not re.match(r"#\s*endif\b", directive)
            )
        elif not skipping:
            kept.append(line)
    return "\n".join(kept)


def class_bodies(text: str) -> Dict[str, Tuple[str, int, List[str]]]:
    """{class name: (body text, line of the opening brace, [public base classes])} for top-level class definitions."""
    out = {}
    # a base list may sit inside #if (QCoreApplication: "#ifndef QT_NO_QOBJECT / : public QObject / #endif")
    for m in re.finditer(r"\bclass\s+(?:\w+_EXPORT\s+)?(\w+)\s*(?:#[^\n]*\n\s*)*(:[^;{]*)?\{", text):
        name = m.group(1)
        bases = base_list(m.group(2) or "")
        start = m.end()  # just after '{'
        depth, i = 1, start
        while i < len(text) and depth:
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
            i += 1
        pub = [b.strip().split()[-1] for b in bases.lstrip(":").split(",") if b.strip().startswith("public")]
        if name not in out:
            out[name] = (text[start : i - 1], text.count("\n", 0, start) + 1, pub)
    return out


def parse_class(body: str, first_line: int) -> Dict[str, object]:
    info = {
        "properties": [],
        "property_info": {},
        "signals": [],
        "slots": [],
        "invokables": [],
        "methods": [],
        "where": {},
        "conditional": {},
    }
    section = "private"
    cond_stack: List[str] = []
    stmt, stmt_line, depth = [], None, 0
    lines = body.split("\n")

    def cond() -> Optional[str]:
        return " && ".join(cond_stack) if cond_stack else None

    def add(kind: str, sig: str, line: int) -> None:
        if sig not in info[kind]:
            info[kind].append(sig)
            info["where"].setdefault(sig if kind not in ("properties",) else sig, line)
            c = cond()
            if c:
                info["conditional"][sig] = c

    def finish(text: str, line: int) -> None:
        text = " ".join(text.split())
        if not text or SKIP_STMT.match(text):
            return
        if PROP_RE.match(text):
            inner = text[text.index("(") + 1 : text.rindex(")")]
            toks = inner.split()
            # type may contain spaces/templates: the name is the token before READ/MEMBER
            for k, t in enumerate(toks):
                if t in ("READ", "MEMBER", "WRITE"):
                    add("properties", toks[k - 1], line)
                    info["property_info"][toks[k - 1]] = {
                        "writable": "WRITE" in toks or "MEMBER" in toks,
                        "notify": toks[toks.index("NOTIFY") + 1] if "NOTIFY" in toks else None,
                    }
                    break
            return
        invokable = "Q_INVOKABLE" in text
        text2 = MACRO_PREFIX.sub("", text)
        text2 = re.sub(
            r"\b(QT_DEPRECATED\w*(\s*\((?:[^()]|\([^()]*\))*\))?|Q_DECL_DEPRECATED\w*(\s*\([^)]*\))?|"
            r"Q_REVISION\s*\([^)]*\)|Q_INVOKABLE|Q_SCRIPTABLE|virtual|inline|explicit)\s*",
            "",
            text2,
        )
        m = FUNC_RE.search(text2)
        if not m or "operator" in text2:
            return
        name = m.group("name")
        if name in ("Q_PROPERTY", "Q_OBJECT") or name.startswith("Q_") or name.startswith("QT_"):
            return
        params = [normalise_param(p) for p in split_top(m.group("params"))]
        params = [(t, d) for t, d in params if t and t != "void" and t != "QPrivateSignal"]
        required = sum(1 for _t, d in params if not d)
        types = [t for t, _d in params]
        if section in ("signals", "public slots", "protected slots", "private slots") or invokable:
            kind = {"signals": "signals", "public slots": "slots"}.get(section, "invokables" if invokable else None)
            if kind is None:  # protected/private slots are not callable from Python
                return
            if invokable and section not in ("signals", "public slots"):
                kind = "invokables" if section == "public" else None
                if kind is None:
                    return
            for n in range(len(types), required - 1, -1):  # moc registers one entry per arity
                add(kind, f"{name}({','.join(types[:n])})", line)
        elif section == "public":
            add("methods", f"{name}({','.join(types)})", line)

    for k, raw in enumerate(lines):
        lineno = first_line + k
        s = raw.strip()
        if depth == 0 and s.startswith("#"):
            d = s[1:].strip()
            if re.match(r"(if|ifdef|ifndef)\b", d):
                cond_stack.append(d)
            elif re.match(r"(else|elif)\b", d) and cond_stack:
                cond_stack[-1] = "NOT(" + cond_stack[-1] + ")" + ("" if d.startswith("else") else " " + d)
            elif d.startswith("endif") and cond_stack:
                cond_stack.pop()
            continue
        if depth == 0 and not "".join(stmt).strip():
            m = ACCESS_RE.match(s)
            if m:
                acc, kind = m.group(1), m.group(2)
                if kind in ("Q_SIGNALS", "signals"):
                    section = "signals"
                elif kind in ("Q_SLOTS", "slots"):
                    section = f"{acc or 'public'} slots"
                else:
                    section = acc
                continue
        if depth == 0:
            raw = NO_SEMICOLON.sub(" ", raw)
        for ch in raw + "\n":
            if depth > 0:
                if ch == "{":
                    depth += 1
                elif ch == "}":
                    depth -= 1
                    if depth == 0:  # an inline body or an enum/struct body ended: the declaration before it is complete
                        finish("".join(stmt), stmt_line or lineno)
                        stmt, stmt_line = [], None
                continue
            if ch == "{":
                depth = 1
                continue
            if ch == ";":
                finish("".join(stmt), stmt_line or lineno)
                stmt, stmt_line = [], None
                continue
            if stmt_line is None:
                if ch.isspace():
                    continue
                stmt_line = lineno
            # Q_PROPERTY(...) and other macros end without ';': close at the matching ')'
            stmt.append(ch)
            joined = "".join(stmt).strip()
            if ch == ")" and MACRO_STMT.match(joined):
                if joined.count("(") == joined.count(")"):
                    finish(joined, stmt_line or lineno)
                    stmt, stmt_line = [], None
    return info
