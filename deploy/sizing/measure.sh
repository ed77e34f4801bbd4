#!/usr/bin/env bash
# Measures what one hub node needs, for README "Running in production": a real `xinqiao serve`
# (release build), loaded through the real CLI as departments would load it. It publishes N
# records of about 1 KiB (legal-entity), then a second department pulls a snapshot of them, and
# prints the rates, the hub's resident memory (now and peak) and the database's size.
#
#   cargo build --release
#   deploy/sizing/measure.sh                       # SQLite, 200,000 records
#   deploy/sizing/measure.sh 1000000               # more records
#   deploy/sizing/measure.sh 200000 postgres://postgres@127.0.0.1:5432/test   # PostgreSQL (a schema of its own, dropped after)
#
# Client and hub share the machine, as they do on a 2-core development box; on separate
# machines the hub has the cores to itself.
set -euo pipefail
cd "$(dirname "$0")/../.."

records=${1:-200000}
database=${2:-}
X=./target/release/xinqiao
[ -x "$X" ] || { echo "build first: cargo build --release" >&2; exit 1; }

work=$(mktemp -d)
schema=""
hub=""
cleanup() {
  [ -n "$hub" ] && kill -TERM "$hub" 2>/dev/null && wait "$hub" 2>/dev/null
  if [ -n "$schema" ]; then psql -q "$database" -c "DROP SCHEMA $schema CASCADE" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

port=$((20000 + RANDOM % 20000))
metrics=$((port + 1))
args=(serve --dev --data "$work/data" --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$metrics")
if [ -n "$database" ]; then
  schema="xq_sizing_$$"
  psql -q "$database" -c "CREATE SCHEMA $schema" >/dev/null
  sep='?'; case "$database" in *\?*) sep='&';; esac
  args+=(--database-url "${database}${sep}options=-c%20search_path%3D${schema}")
fi
XINQIAO_LOG=warn "$X" "${args[@]}" > "$work/serve.log" 2>&1 &
hub=$!
for _ in $(seq 1 100); do
  curl -fs "127.0.0.1:$metrics/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fs "127.0.0.1:$metrics/readyz" >/dev/null || { cat "$work/serve.log"; exit 1; }

export XINQIAO_PKI="$work/data/pki" XINQIAO_HUB="https://127.0.0.1:$port"
P=11330100MB00010011; U=11330100MB0002002B
code=$("$X" catalog create deploy/examples/entry-enterprise-registration.toml --as $P --json \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["resource_code"])')
"$X" catalog submit "$code" --as $P >/dev/null
"$X" catalog publish "$code" --as admin >/dev/null
"$X" dataset create "$code" --schema legal-entity -k uscc --as $P >/dev/null

python3 - "$records" > "$work/records.ndjson" <<'EOF'
import json, sys
ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
WEIGHTS = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28]
def uscc(n):
    body = "91330100MA" + f"{n:07d}"
    total = sum(ALPHABET.index(c) * w for c, w in zip(body, WEIGHTS))
    return body + ALPHABET[(31 - total % 31) % 31]
scope = "软件开发；信息技术咨询服务；数据处理和存储支持服务；" * 12
for n in range(int(sys.argv[1])):
    print(json.dumps({"uscc": uscc(n), "name": f"杭州示例科技有限公司{n}", "legal_representative": "王五",
        "registered_capital": 1000, "established_on": "2018-05-20", "registration_authority": "杭州市市场监督管理局",
        "status": "存续", "business_scope": scope, "address": "浙江省杭州市上城区解放东路100号市民中心"}, ensure_ascii=False))
EOF
bytes=$(stat -c %s "$work/records.ndjson")

rss() { awk -v k="$1:" '$1 == k { printf "%.0f", $2 / 1024 }' "/proc/$hub/status"; }
idle=$(rss VmRSS)
t0=$(date +%s.%N)
"$X" publish "$code" "$work/records.ndjson" --as $P >/dev/null 2>&1
t1=$(date +%s.%N)
"$X" pull "$code" --snapshot --purpose "容量测算" -o "$work/pulled.ndjson" --as $U >/dev/null 2>&1
t2=$(date +%s.%N)
pulled=$(wc -l < "$work/pulled.ndjson")
[ "$pulled" -eq "$records" ] || { echo "pulled $pulled of $records records" >&2; exit 1; }

if [ -n "$database" ]; then
  size=$(psql -qtA "$database" -c "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = '$schema' AND c.relkind = 'r'")
  backend="PostgreSQL ($(psql -qtA "$database" -c 'SHOW server_version'))"
else
  size=$(du -cb "$work/data"/hub.db* | tail -1 | cut -f1)
  backend="SQLite"
fi

python3 - "$records" "$bytes" "$t0" "$t1" "$t2" "$idle" "$(rss VmRSS)" "$(rss VmHWM)" "$size" "$backend" <<'EOF'
import sys
n, size_in, t0, t1, t2, idle, rss, peak, db, backend = sys.argv[1:]
n, size_in, db = int(n), int(size_in), int(db)
t0, t1, t2 = float(t0), float(t1), float(t2)
print(f"backend                         {backend}")
print(f"records                         {n:,} (average {size_in / n:,.0f} bytes)")
print(f"publish (xinqiao publish)       {n / (t1 - t0):,.0f} records/s")
print(f"snapshot pull (xinqiao pull)    {n / (t2 - t1):,.0f} records/s")
print(f"hub memory idle / after / peak  {idle} / {rss} / {peak} MiB")
print(f"database size                   {db / 2**20:,.0f} MiB ({db / n:,.0f} bytes per record, {db / size_in:.2f}x the records)")
EOF
