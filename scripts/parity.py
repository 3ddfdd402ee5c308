#!/usr/bin/env python3
"""Check our networks against fixtures produced by the OFFICIAL Step-Video code.

    .venv/bin/python scripts/parity.py DIR [DIR ...]

Each DIR is a fixture folder (holding manifest.json) or a folder of fixture folders. Every case prints
one line with its max abs error and bound, then a summary ``N passed, M failed``; exit status 1 if
anything failed. The checks themselves are harness/parity.py (tests/harness), which the unit tests run too.
"""

import sys

from harness.parity import find_fixtures, run_fixture


def main(argv):
    if not argv:
        print(__doc__)
        return 2
    fixtures = find_fixtures(argv)
    if not fixtures:
        print(f"no fixture folders (with manifest.json) under {', '.join(argv)}")
        return 2
    passed = failed = 0
    for folder in fixtures:
        for label, err, bound, message in run_fixture(folder):
            ok = message is None and err <= bound
            passed += ok
            failed += not ok
            if message is None:
                print(f"{'PASS' if ok else 'FAIL'} {label}: max abs error {err:.3e} (bound {bound:.3e})")
            else:
                print(f"FAIL {label}: {message}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
