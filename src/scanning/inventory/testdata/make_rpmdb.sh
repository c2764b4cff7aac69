#!/usr/bin/env bash
# Makes rpmdb.sqlite.gz: a real rpm 4.18 sqlite database (Debian's `rpm` package) holding 16
# packages built here with rpmbuild: openssl and openssl-libs (epoch 1, source openssl), bash,
# tzdata, and 12 fillers with long descriptions so the Packages table spans an interior page,
# several leaves and overflow pages. rpm's index tables are dropped and the file vacuumed to
# keep it small; the Packages rows are rpm's own.
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/SPECS" "$work/db"
cat > "$work/SPECS/openssl.spec" <<'EOF'
Name: openssl
Epoch: 1
Version: 3.0.7
Release: 27.el9
Summary: Utilities from the general purpose cryptography library with TLS implementation
License: ASL 2.0
BuildArch: x86_64
%description
Test fixture for berth: the shape of openssl's binary packages on Red Hat family systems.
%package libs
Summary: A general purpose cryptography library with TLS implementation
%description libs
OpenSSL is a toolkit for supporting cryptography.
%files
%files libs
EOF
cat > "$work/SPECS/bash.spec" <<'EOF'
Name: bash
Version: 5.1.8
Release: 9.el9
Summary: The GNU Bourne Again shell
License: GPLv3+
BuildArch: x86_64
%description
Test fixture for berth.
%files
EOF
cat > "$work/SPECS/tzdata.spec" <<'EOF'
Name: tzdata
Version: 2024a
Release: 1.el9
Summary: Timezone data
License: Public Domain
BuildArch: noarch
%description
Test fixture for berth.
%files
EOF
filler=$(python3 -c "print('Filler text for a header large enough to overflow a page. ' * 60)")
for i in $(seq 1 12); do
  cat > "$work/SPECS/filler$i.spec" <<EOF
Name: filler$i
Version: 1.$i
Release: 1.el9
Summary: Filler package $i so the table spans several b-tree pages
License: MIT
BuildArch: noarch
%description
$filler
%files
EOF
done
for spec in "$work"/SPECS/*.spec; do
  rpmbuild -bb --quiet --define "_topdir $work" "$spec" >/dev/null
done
rpm --define '_db_backend sqlite' --dbpath "$work/db" --initdb
rpm --define '_db_backend sqlite' --dbpath "$work/db" -i --justdb --nodeps --noscripts \
  $(find "$work/RPMS" -name '*.rpm')
drops=""
for table in $(sqlite3 "$work/db/rpmdb.sqlite" ".tables"); do
  case "$table" in Packages) ;; *) drops+="DROP TABLE \"$table\";" ;; esac
done
sqlite3 "$work/db/rpmdb.sqlite" "$drops PRAGMA journal_mode=DELETE; VACUUM;"
gzip -9 -n -c "$work/db/rpmdb.sqlite" > "$(dirname "$0")/rpmdb.sqlite.gz"
