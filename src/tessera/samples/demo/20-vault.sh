#!/usr/bin/env bash
# The vault: a file kept 3-of-5 across five stores survives losing two of them,
# is repaired without ever being reassembled on disk, and is re-randomised.
set -euo pipefail
PY="${TESSERA_PYTHON:-python3}"
cd "$DEMO_DIR"
H="$DEMO_DIR/vault-env"
[ -e "$H/tessera.toml" ] || tessera init "$H" --nodes 5 --threshold 3 >/dev/null
export TESSERA_HOME="$H"
echo "-- an 8 MiB 'scan' goes into the vault: 3-of-5 over five stores"
head -c $((8 * 1024 * 1024)) /dev/urandom > scan.bin
tessera vault put scan.bin --name "patient-0042/ct-chest.dcm"
tessera vault ls
echo "-- a second put under the same name is refused unless --replace says so (exit 1)"
if tessera vault put scan.bin --name "patient-0042/ct-chest.dcm" 2>put.err; then
  echo "unexpected success"; exit 1
fi
sed 's/^/   /' put.err
echo "-- what a store sees: random ids and bucketed sizes, no names"
find "$H/stores/node-1" -type f -printf '   %P  %s bytes\n'
echo "-- stores 2 and 5 are lost (folders deleted)"
rm -rf "$H/stores/node-2" "$H/stores/node-5"
tessera vault get "patient-0042/ct-chest.dcm" --out restored.bin
cmp scan.bin restored.bin && echo "restored.bin is identical to scan.bin"
echo "-- verify: damaged but recoverable (exit 1)"
set +e; tessera vault verify; code=$?; set -e
echo "   exit code $code"
echo "-- repair rewrites the lost fragments from three others (no plaintext on disk)"
tessera vault repair
tessera vault verify --json
echo "-- refresh re-randomises every fragment: stolen old fragments become useless"
before=$(sha256sum "$H"/stores/node-1/data/* | cut -c1-16)
tessera vault refresh
after=$(sha256sum "$H"/stores/node-1/data/* | cut -c1-16)
echo "   store 1 fragment digest: $before -> $after"
tessera vault get "patient-0042/ct-chest.dcm" --out again.bin
cmp scan.bin again.bin && echo "still restores to the same file"
tessera vault rm "patient-0042/ct-chest.dcm"
tessera vault ls --json
echo "-- a dead vault says so: three of five stores deleted, the owner's signed record"
echo "   of the catalogue names what is lost (verify exits 2, ls refuses)"
tessera vault put scan.bin --name "patient-0043/mr-knee.dcm" >/dev/null
rm -rf "$H/stores/node-1" "$H/stores/node-2" "$H/stores/node-3"
set +e; tessera vault verify; code=$?; set -e
echo "   exit code $code"
if tessera vault ls 2>ls.err; then echo "unexpected success"; exit 1; fi
sed 's/^/   /' ls.err
test ! -e "$H/stores/node-1" && echo "   (reading re-created no store folder)"
