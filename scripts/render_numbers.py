#!/usr/bin/env python3
"""Rewrite the measured numbers marked in the Markdown documents from the logs that produced them.

    .venv/bin/python scripts/render_numbers.py           rewrite every marked number from its log
    .venv/bin/python scripts/render_numbers.py --check   exit 1 naming each stale copy

The marks and the logs are described in tests/harness/logged_numbers.py.
"""

import argparse
import os
import sys

from harness.logged_numbers import DOCUMENTS, REPO, render, stale_copies


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report stale copies, change nothing")
    args = parser.parse_args()
    if args.check:
        stale = stale_copies()
        for document, mark, written, logged in stale:
            print(f"{document}: {mark} says {written}, the log says {logged}")
        sys.exit(1 if stale else 0)
    cache = {}
    for document in DOCUMENTS:
        path = os.path.join(REPO, document)
        with open(path, encoding="utf-8") as f:
            text, changes = render(f.read(), cache)
        if changes:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            print(f"{document}: {len(changes)} number(s) updated")


if __name__ == "__main__":
    main()
