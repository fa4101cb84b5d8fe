#!/usr/bin/env bash
# The vault as a network drive: tessera vault mount serves it over WebDAV, so Explorer,
# Finder and Linux file managers open it; a steward signs in with her gateway token,
# lists it, drops a file in (split like any put) and reads it back, a guessed token and a
# path that climbs out are refused, and a read-only mount refuses writes.
set -euo pipefail
PY="${TESSERA_PYTHON:-python3}"
cd "$DEMO_DIR"
H="$DEMO_DIR/mount-env"
[ -e "$H/tessera.toml" ] || tessera init "$H" --nodes 3 >/dev/null
export TESSERA_HOME="$H"
dav=""
trap '[ -n "$dav" ] && kill "$dav" 2>/dev/null; tessera node stop --home "$H" >/dev/null 2>&1 || true' EXIT
echo "-- the vault holds two files of one patient (names with '/' are folders on the drive)"
head -c $((2 * 1024 * 1024)) /dev/urandom > ct.bin
printf 'consent given 2026-11-02\n' > consent.txt
tessera vault put ct.bin --name "patient-0042/ct-chest.dcm" >/dev/null
tessera vault put consent.txt --name "patient-0042/consent.txt" >/dev/null
tessera vault ls | sed 's/^/   /'
echo "-- the owner adds a steward; her API token is her WebDAV password"
SAM=$(tessera user add sam --role steward --as owner --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["token"])')
mount_it() {  # tessera vault mount ARGS...: waits for its URL
  tessera vault mount --port 0 --no-access-log "$@" >mount.out 2>mount.err &
  dav=$!
  for _ in $(seq 150); do grep -q "vault mounted at" mount.out 2>/dev/null && break; sleep 0.1; done
  URL=$(sed -n 's/^vault mounted at \([^ ]*\).*/\1/p' mount.out)
}
mount_it
sed 's/^/   /' mount.out
export URL SAM
"$PY" - <<'PY'
import os
import xml.etree.ElementTree as ET

import httpx

url, token = os.environ["URL"], os.environ["SAM"]
dav = httpx.Client(base_url=url, auth=("sam", token), timeout=120)


def listing(path):
    answer = dav.request("PROPFIND", path, headers={"Depth": "1"})
    print(f"   {path}  (HTTP {answer.status_code})")
    for response in list(ET.fromstring(answer.content).iter("{DAV:}response"))[1:]:
        href = response.findtext("{DAV:}href")
        size = response.findtext(".//{DAV:}getcontentlength")
        print(f"     {href:38} {size + ' bytes' if size else '(folder)'}")


print("-- what Explorer or Finder shows, through WebDAV (PROPFIND)")
listing("/")
listing("/patient-0042/")
print("-- sam drops a file into the folder (PUT): the vault splits it as it arrives")
answer = dav.put("/patient-0042/report.txt", content=b"radiology report: no findings\n")
print(f"   PUT /patient-0042/report.txt -> HTTP {answer.status_code}")
part = dav.get("/patient-0042/ct-chest.dcm", headers={"Range": "bytes=0-15"})
print(f"   GET with a range -> HTTP {part.status_code}, {len(part.content)} bytes")
print("-- refused: a guessed token, a path that climbs out of the vault")
guess = httpx.request("PROPFIND", url, auth=("sam", "guessed"), timeout=60)
print(f"   guessed token -> HTTP {guess.status_code}")
climb = dav.get("/patient-0042/%2e%2e/%2e%2e/etc/passwd")  # ../../ that no client resolved
print(f"   /patient-0042/%2e%2e/%2e%2e/etc/passwd -> HTTP {climb.status_code}: {climb.text.strip()}")
PY
echo "-- the CLI sees what came in through the drive"
tessera vault ls | sed 's/^/   /'
kill "$dav"; wait "$dav" 2>/dev/null || true; dav=""
echo "-- a read-only mount (no passphrase needed) refuses every write"
mount_it --read-only
code=$("$PY" -c 'import httpx, os; print(httpx.put(os.environ["URL"] + "patient-0042/x.txt",
  content=b"x", auth=("sam", os.environ["SAM"]), timeout=60).status_code)')
echo "   PUT on the read-only mount -> HTTP $code"
kill "$dav"; wait "$dav" 2>/dev/null || true; dav=""
echo "-- every request above is an event in the signed audit log: who, what, from where"
"$PY" - <<'PY'
import os
from pathlib import Path

from tessera.workflows.audit import gateway_log

events = [e for _, e in gateway_log(Path(os.environ["TESSERA_HOME"])).events()]
for e in [e for e in events if e.client == "tessera-webdav"][-8:]:
    print(f"   {e.action:14} {e.outcome:8} {e.user or '-':5} {e.address:10} {e.entity or '-'}")
PY
tessera audit verify --offline --json 2>/dev/null | "$PY" -c 'import json, sys
doc = json.load(sys.stdin)
print("   audit log verified:", doc["ok"], "-", doc["entries"], "entries")'
