"""A corpus of real English prose that needs no network: the docstrings of the local
CPython standard library, one paragraph per document (paragraphs separated by blank
lines, as `kiln pretrain --corpus` reads them).

    python3 tests/bench/python_docs.py OUT.txt [--max-bytes 2000000]

Walks a fixed, sorted list of modules; in each, the module's docstring, then every public
class and function defined there (by name), and every class's own public methods (by
name), each through inspect.getdoc. Paragraphs are stripped of trailing spaces, exact
repeats are dropped (so a paragraph cannot sit in both the training and the held-out
text), and the walk stops at --max-bytes. Deterministic for a given Python version (the
docstrings are that version's); prints bytes, paragraphs and the Python version.
"""

import argparse
import importlib
import inspect
import io
import json
import sys
import warnings
from contextlib import redirect_stderr, redirect_stdout

# Pure-Python and C modules with substantial docstrings, importable without side effects
# (no GUI, no network, no `this`/`antigravity`). Sorted; missing ones are skipped.
MODULES = sorted([
    "abc", "argparse", "ast", "asyncio", "base64", "bdb", "binascii", "bisect", "builtins", "bz2",
    "calendar", "cmd", "code", "codecs", "collections", "colorsys", "compileall", "concurrent.futures",
    "configparser", "contextlib", "contextvars", "copy", "copyreg", "csv", "ctypes", "dataclasses",
    "datetime", "decimal", "difflib", "dis", "doctest", "email", "email.message", "email.utils",
    "enum", "filecmp", "fileinput", "fnmatch", "fractions", "ftplib", "functools", "gc", "getopt",
    "gettext", "glob", "gzip", "hashlib", "heapq", "hmac", "html", "html.parser", "http.client",
    "http.cookies", "http.server", "imaplib", "importlib", "inspect", "io", "ipaddress", "itertools",
    "json", "keyword", "linecache", "locale", "logging", "logging.handlers", "lzma", "mailbox",
    "math", "mimetypes", "multiprocessing", "netrc", "numbers", "operator", "optparse", "os",
    "os.path", "pathlib", "pdb", "pickle", "pickletools", "pkgutil", "platform", "plistlib",
    "poplib", "pprint", "profile", "pstats", "pydoc", "queue", "quopri", "random", "re", "reprlib",
    "sched", "secrets", "selectors", "shelve", "shlex", "shutil", "signal", "smtplib", "socket",
    "socketserver", "sqlite3", "ssl", "stat", "statistics", "string", "struct", "subprocess",
    "symtable", "sys", "sysconfig", "tarfile", "tempfile", "textwrap", "threading", "time",
    "timeit", "token", "tokenize", "trace", "traceback", "tracemalloc", "types", "typing",
    "unittest", "unittest.mock", "urllib.parse", "urllib.request", "uuid", "warnings", "wave",
    "weakref", "wsgiref.handlers", "xml.dom.minidom", "xml.etree.ElementTree", "zipfile", "zipimport",
    "zlib", "zoneinfo",
])


def docs_of(name):
    """Docstrings of a module and what it defines, in a fixed order."""
    try:
        with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = importlib.import_module(name)
    except Exception:
        return
    yield inspect.getdoc(module)
    for attr in sorted(vars(module)):
        if attr.startswith("_"):
            continue
        obj = vars(module)[attr]
        if not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        if getattr(obj, "__module__", None) != module.__name__:
            continue  # imported from elsewhere: documented there
        yield inspect.getdoc(obj)
        if inspect.isclass(obj):
            for method in sorted(vars(obj)):
                if method.startswith("_"):
                    continue
                member = vars(obj)[method]
                if inspect.isroutine(member) or isinstance(member, (property, classmethod, staticmethod)):
                    yield inspect.getdoc(member.__func__ if hasattr(member, "__func__") else member)


def paragraphs(doc):
    if not doc:
        return
    lines = [line.rstrip() for line in doc.replace("\r\n", "\n").split("\n")]
    block = []
    for line in lines + [""]:
        if line.strip():
            block.append(line)
        elif block:
            yield "\n".join(block)
            block = []


def build(max_bytes):
    seen, out, size = set(), [], 0
    for name in MODULES:
        for doc in docs_of(name):
            for p in paragraphs(doc):
                if p in seen:
                    continue
                seen.add(p)
                add = len(p.encode()) + 2
                if size + add > max_bytes:
                    return out
                out.append(p)
                size += add
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--max-bytes", type=int, default=2_000_000)
    args = parser.parse_args()
    paras = build(args.max_bytes)
    text = "\n\n".join(paras) + "\n"
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    print(json.dumps({"out": args.out, "bytes": len(text.encode()), "paragraphs": len(paras),
                      "python": sys.version.split()[0]}))


if __name__ == "__main__":
    main()
