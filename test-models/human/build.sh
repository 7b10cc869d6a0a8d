#!/usr/bin/env bash
# Rebuild fortunes.jsonl, the human-written null corpus of the text watermark tests, from the
# Debian packages `fortunes` and `fortunes-min` (fortune-mod 1.99.1 data files, BSD licence; see
# README.md). The JSONL is checked in, so tests and CI never run this; it documents where every
# line came from and reproduces the file byte for byte.
#
# Needs apt-get (Debian) and python3. Usage: test-models/human/build.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
apt-get download fortunes=1:1.99.1-7.3 fortunes-min=1:1.99.1-7.3 >&2
sha256sum -c - >&2 <<'SUMS'
41d0551dc0ff52f875a2ecef7c39da2f672ab468c37e170119f7e0245a9d63c5  fortunes_1%3a1.99.1-7.3_all.deb
9eed5b45064e41133dae0967cf3a17588ad77c014fcc7bf1527fa3ea48e44d07  fortunes-min_1%3a1.99.1-7.3_all.deb
SUMS
for d in *.deb; do dpkg-deb -x "$d" ext; done
python3 - ext/usr/share/games/fortunes "$here/fortunes.jsonl.tmp" <<'PY'
import json, os, sys
src, out = sys.argv[1:3]
# Files of pictures, one-liners and machine output are left out; everything else is prose or verse.
skip = {"ascii-art", "art", "disclaimer", "zippy", "translate-me", "perl", "linuxcookie"}
docs = []
for name in sorted(os.listdir(src)):
    p = os.path.join(src, name)
    if name in skip or "." in name or os.path.islink(p) or not os.path.isfile(p):
        continue
    text = open(p, encoding="utf-8", errors="strict").read()
    for i, item in enumerate(text.split("\n%\n")):
        item = "\n".join(line.rstrip() for line in item.strip("\n").split("\n")).strip()
        if len(item.split()) >= 40:
            docs.append({"text": item, "source": f"fortunes:{name}:{i}"})
with open(out, "w", encoding="utf-8") as f:
    for d in docs:
        f.write(json.dumps(d, ensure_ascii=False) + "\n")
print(f"{len(docs)} documents", file=sys.stderr)
PY
mv "$here/fortunes.jsonl.tmp" "$here/fortunes.jsonl"
sha256sum "$here/fortunes.jsonl" >&2
