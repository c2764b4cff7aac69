#!/usr/bin/env bash
# Builds a Trivy vulnerability DB offline from the real advisory records under
# shared/scanning/osv-db (trivy downloads its DB from ghcr.io, which is not reachable here),
# with the pinned trivy-db builder (build.sh trivy-db), and lays it out as a trivy cache dir:
#   OUT/db/trivy.db, OUT/db/metadata.json   (pass OUT as trivy's --cache-dir, or as
#                                             SCANNER_TRIVY_CACHE_DIR for harbor-scanner-trivy)
# Usage: make-trivy-db.sh OUT [DATA]   DATA: the folder holding osv-db/ (default:
#   $BERTH_SCANNING_DATA, else shared/scanning beside the repository, else /work/shared/scanning).
# What goes in, through trivy-db's own sources (it reads the upstream repositories' layouts):
#   ghsa      <- osv-db/npm/all.zip (GHSA records in OSV format), as
#                ghsa/advisories/github-reviewed/YYYY/MM/<id>/<id>.json
#   govulndb  <- osv-db/Go/all.zip, as govulndb/data/osv/<id>.json (trivy-db keeps only the
#                `stdlib` entries; Go modules come from GHSA upstream, which is not here)
# PYSEC (PyPI) and the derived Debian records have no trivy-db source, so trivy finds nothing
# for the python and debian fixtures with this DB. The metadata's NextUpdate is a century
# ahead, so trivy never tries to download a newer DB even without --skip-db-update.
# Needs `go` on PATH (trivy-db's GHSA source lists the standard library at start-up) and python3.
set -euo pipefail
out=${1:?usage: make-trivy-db.sh OUT [DATA]}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
data=${2:-${BERTH_SCANNING_DATA:-}}
if [ -z "$data" ]; then
  if [ -d "$repo/../shared/scanning/osv-db" ]; then data="$repo/../shared/scanning"; else data=/work/shared/scanning; fi
fi
[ -f "$data/osv-db/npm/all.zip" ] || { echo "no osv-db/npm/all.zip under $data" >&2; exit 1; }
trivy_db="$(bash "$here/build.sh" trivy-db)/trivy-db"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src/cocoapods-specs/Specs" "$work/src/govulndb/data/osv"
python3 - "$data/osv-db/npm/all.zip" "$work/src/ghsa/advisories/github-reviewed" <<'EOF'
import json, os, sys, zipfile
archive, root = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(archive) as z:
    for name in z.namelist():
        raw = z.read(name)
        rec = json.loads(raw)
        published = rec.get("published", "1970-01-01")
        d = os.path.join(root, published[:4], published[5:7], rec["id"])
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, rec["id"] + ".json"), "wb") as f:
            f.write(raw)
EOF
python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
  "$data/osv-db/Go/all.zip" "$work/src/govulndb/data/osv"
"$trivy_db" build --cache-dir "$work/src" --output-dir "$work/out" \
  --only-update ghsa --only-update govulndb --update-interval 876000h >&2
mkdir -p "$out/db"
cp "$work/out/trivy.db" "$work/out/metadata.json" "$out/db/"
echo "$out"
