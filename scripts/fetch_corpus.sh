#!/usr/bin/env bash
# Fetch the default offline covariance corpus (Jane Austen's novels, Debian package r-cran-janeaustenr) into the
# project cache ($ALPHAEDIT_CACHE/corpus, default ~/.cache/alphaedit_core/corpus) and build austen.txt from it;
# likewise the held-out texts (Debian fortunes, wordnet-base -> fortunes.jsonl, wordnet.jsonl).
# Idempotent: nothing is downloaded (and apt-get update never runs) when the .deb or the text is already cached.
# apt-get update runs only if the download fails for lack of package lists and we are root.
# Usage: scripts/fetch_corpus.sh [python]   (default: the python on PATH, with alphaedit_core importable)
set -euo pipefail
PY="${1:-python}"
cd "$(dirname "$0")/.."
"$PY" - <<'PYEOF'
from alphaedit_core.corpus import AustenCorpus
c = AustenCorpus()
words = sum(len(p.split()) for paras in c.novels.values() for p in paras)
print(f"corpus ready: {c.path} ({len(c.novels)} novels, {words} words, {len(c)} documents)")
print(f"identity: {c.identity}")
# held-out text for the capability and representation checks (claims P2, P3): Debian fortunes and wordnet-base
from alphaedit_core.capability import held_out_corpus
for name in ("fortunes", "wordnet"):
    h = held_out_corpus(name)
    print(f"held-out corpus ready: {h.path} ({h.n_items} items, {h.n_words} words, {len(h)} documents)")
PYEOF
