#!/usr/bin/env bash
# DICOM: a modality sends a study over DICOM; Tessera de-identifies it to PS3.15 Annex E
# and stores it in the vault, the identity record and the original as received encrypted
# under keys the custodians hold; re-identifying needs two people's signatures, checked
# and logged by every custodian.
set -euo pipefail
cd "$DEMO_DIR"
PY="${TESSERA_PYTHON:-python3}"
STORESCU=/usr/bin/storescu  # dcmtk's (pynetdicom installs its own storescu in the venv)
H="$DEMO_DIR/dicom-env"
[ -e "$H/tessera.toml" ] || tessera init "$H" --nodes 3 --threshold 2 >/dev/null 2>&1
export TESSERA_HOME="$H"
trap 'tessera node stop --home "$H" >/dev/null 2>&1 || true' EXIT
files=$("$PY" -W ignore -c "
from pydicom.data import get_testdata_file as g
print(' '.join(g(n) for n in ['CT_small.dcm', 'MR_small.dcm', 'rtplan.dcm', 'SC_rgb_small_odd.dcm']))")

if [ -x "$STORESCU" ]; then
  echo "-- tessera dicom serve: a C-STORE node on a free port, storing into the vault (and the originals)"
  rm -f node.log
  tessera dicom serve --port 0 --ae-title TESSERA --vault --keep-original >node.log 2>node.err &
  node=$!
  trap 'kill $node 2>/dev/null || true; tessera node stop --home "$H" >/dev/null 2>&1 || true' EXIT
  for _ in $(seq 100); do grep -q listening node.log 2>/dev/null && break; sleep 0.1; done
  port=$(sed -n 's/^listening on [0-9.]*:\([0-9]*\).*/\1/p' node.log)
  echo "   $(cat node.log)"
  echo "-- dcmtk storescu sends CT, MR, RT plan and a secondary capture (burned-in text risk)"
  "$STORESCU" -nh -aec TESSERA -aet MODALITY 127.0.0.1 "$port" $files 2>&1 | grep -E 'Store Failed|Status' | sed 's/^/   storescu: /' || true
  kill $node; wait $node 2>/dev/null || true
  trap 'tessera node stop --home "$H" >/dev/null 2>&1 || true' EXIT
  sed 's/^/   node: /' node.err
  echo "-- what the vault holds (names only; stores see random ids)"
  tessera vault ls | { grep -E 'dicom' || true; } | sed 's/^/   /'

else
  echo "-- (dcmtk's storescu is not installed: the DICOM C-STORE node step is skipped)"
fi

echo "-- batch: de-identify a folder with the modified-dates and clean-descriptors options"
mkdir -p incoming && cp $files incoming/ && echo "not dicom" > incoming/notes.txt
status=0
tessera dicom deidentify incoming deid --option retain-modified-dates --option 113105 --json >report.json 2>deid.err || status=$?
echo "   exit code $status: notes.txt is not DICOM, so the batch is not clean (every file is still reported)"
"$PY" - <<'PY'
import json
doc = json.load(open("report.json"))
print("   summary:", json.dumps(doc["summary"]), "options:", json.dumps(doc["profile"]["options"]))
for f in doc["files"]:
    print(f"   {f['status']:13} {f['input'].split('/')[-1]:22} {f['reason'] or f['output']}")
ct = next(f for f in doc["files"] if f["input"].endswith("CT_small.dcm"))
acts = {}
for a in ct["actions"]:
    acts[a["action"]] = acts.get(a["action"], 0) + 1
print("   CT_small actions by code:", json.dumps(dict(sorted(acts.items()))), "date shift:", ct["date_shift_days"], "days")
open("pseudonym.txt", "w").write(ct["pseudonym"])
PY
echo "-- re-identify the CT patient alone (the owner, with every role and the folder):"
echo "   every custodian refuses to release its key share and logs it (exit 1)"
if tessera dicom reidentify "$(cat pseudonym.txt)" --reason "follow-up" --as owner 2>alone.err; then
  echo "unexpected success"; exit 1
fi
sed 's/^/   /' alone.err
echo "-- two people: the owner files the request with a reason, an officer co-signs it"
tessera person ls --json | grep -q '"otto"' \
  || tessera person add otto --role officer --as owner >/dev/null
rid=$(tessera request file --reidentify "$(cat pseudonym.txt)" \
  --purpose "adverse event follow-up (ticket 4711)" --as owner --json \
  | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["id"])')
tessera request approve "$rid" --reason "confirmed with the clinical lead" --as otto
echo "-- now t+1 custodians release their shares of the record's key; each logs the release"
tessera request run "$rid" --as owner | sed 's/^/   /'
if [ -x "$STORESCU" ]; then
  echo "-- the CT as the modality sent it: the same two-person rule"
  orig=$(tessera vault ls --json | "$PY" -c '
import json, sys
print(next(o["name"] for o in json.load(sys.stdin) if o["name"].startswith("dicom-original/")
           and "'"$(cat pseudonym.txt)"'" in o["name"]))')
  rid=$(tessera request file --reidentify "$orig" --purpose "image review with the patient" \
    --as owner --json | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["id"])')
  tessera request approve "$rid" --reason "patient consented" --as otto >/dev/null
  rm -f ct-original.dcm
  tessera request run "$rid" --out ct-original.dcm --as owner | sed 's/^/   /'
  "$PY" -W ignore -c "
from pydicom import dcmread
d = dcmread('ct-original.dcm'); print('   original PatientName:', d.PatientName, ' SOP Instance UID:', d.SOPInstanceUID)"
fi
tessera audit verify --json | "$PY" -c "import json,sys; d=json.load(sys.stdin); print('   audit log ok:', d['ok'], 'entries:', d['entries'])"
