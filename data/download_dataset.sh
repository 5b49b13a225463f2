#!/usr/bin/env bash
# Fetch the LM-BFF datasets (Gao et al. 2021) into data/original/, as the reference does:
# download the archive, untar it here, and make the GLUE version of SST-2 the default
# (original/SST-2 -> original/SST-2-original, original/GLUE-SST-2 -> original/SST-2).
# Then draw the k-shot splits from the repository root:
#   python tools/generate_k_shot_data.py --mode k-shot-1k-test --k 16
#   python tools/generate_k_shot_data.py --mode k-shot-1k-test --k 512
# Needs internet access and about 1 GB of disk. Safe to rerun: a finished step is skipped.
set -euo pipefail

URL="https://nlp.cs.princeton.edu/projects/lm-bff/datasets.tar"
ARCHIVE="datasets.tar"

cd "$(dirname "${BASH_SOURCE[0]}")"

if [ ! -f "$ARCHIVE" ]; then
    echo "*** Downloading $URL ***"
    if command -v wget >/dev/null 2>&1; then
        wget -O "$ARCHIVE.part" "$URL"
    elif command -v curl >/dev/null 2>&1; then
        curl -fL -o "$ARCHIVE.part" "$URL"
    else
        echo "error: neither wget nor curl is installed" >&2
        exit 1
    fi
    mv "$ARCHIVE.part" "$ARCHIVE"
fi

if [ -d original/SST-2-original ]; then
    echo "*** original/SST-2-original exists: archive already unpacked, nothing to do ***"
    exit 0
fi

echo "*** Unpacking $ARCHIVE ***"
tar xvf "$ARCHIVE"

echo "*** Use GLUE-SST-2 as default SST-2 ***"
mv original/SST-2 original/SST-2-original
mv original/GLUE-SST-2 original/SST-2

echo "*** Done: data/original/ is ready ***"
