#!/usr/bin/env bash
# Split a file 3-of-5, lose a fragment, corrupt another, restore it anyway.
set -euo pipefail
PY="${TESSERA_PYTHON:-python3}"
cd "$DEMO_DIR"
echo "-- a 5 MiB 'scan' split into 5 fragments, any 3 restore it"
head -c $((5 * 1024 * 1024)) /dev/urandom > scan.bin
tessera share split scan.bin --threshold 3 --shares 5 --out fragments
ls -l fragments
echo "-- fragment 1 is lost, fragment 3 is silently corrupted (one byte flipped)"
rm fragments/scan.bin.1-of-5.tfrag
"$PY" - <<'PY'
p = "fragments/scan.bin.3-of-5.tfrag"
data = bytearray(open(p, "rb").read())
data[len(data) // 2] ^= 0x20
open(p, "wb").write(bytes(data))
PY
echo "-- restore from the four that are left: the corrupted one is named and set aside"
tessera share combine fragments/*.tfrag --out restored.bin
cmp scan.bin restored.bin && echo "restored.bin is identical to scan.bin"
echo "-- an existing output is never overwritten silently (exit 1 without --force)"
if tessera share combine fragments/*.tfrag --out restored.bin 2>exists.err; then
  echo "unexpected success"; exit 1
fi
sed 's/^/   /' exists.err
echo "-- with only two good fragments left, Tessera refuses (exit 1) and writes nothing"
if tessera share combine fragments/scan.bin.2-of-5.tfrag fragments/scan.bin.3-of-5.tfrag \
     fragments/scan.bin.4-of-5.tfrag --out refused.bin; then
  echo "unexpected success"; exit 1
fi
test ! -e refused.bin && echo "no output was written"
