#!/usr/bin/env bash
# Tests for linux.sh: shellcheck, static checks, then real runs on this machine (as root, no systemd
# needed), some of them against a local HTTP PUT receiver standing in for S3's presigned URLs.
#
# Checks: exit code, every section header and end marker (memory first), the summary line, no crypt(3)
# hash pattern, no input ever evaluated, the memory image captured first by a stand-in avml, uploaded
# and hashed as its CORDON_ARTIFACT line says, the collection uploaded gzipped with the hash its line
# says, the URLs never printed, the gaps (memory not requested, no avml, too large, upload refused,
# budget spent), the time budget held, and nothing left behind (the working directory removed, nothing
# else written).
#
# The collection output is never printed (it holds every process's command line); only small
# excerpts are shown when a check fails. Last line: "N passed, M failed". Exit status 1 on failure.
set -u
set -o pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCRIPT="$HERE/linux.sh"
RUN_TIMEOUT=120
SECTIONS=(memory identity processes network logins kernel_modules cron systemd shell_histories
  recent_tmp_files accounts sudoers ssh packages)

PASSED=0
FAILED=0
ok() {
  PASSED=$((PASSED + 1))
  printf 'ok     - %s\n' "$1"
}
not_ok() {
  FAILED=$((FAILED + 1))
  printf 'FAILED - %s\n' "$1"
  if [ $# -gt 1 ]; then printf '%s\n' "$2" | head -n 40 | sed 's/^/         | /'; fi
}
check() { # check DESCRIPTION COMMAND...
  local desc=$1
  shift
  if "$@"; then ok "$desc"; else not_ok "$desc"; fi
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/test-linux-sh.XXXXXXXX") || {
  echo "cannot create a temporary directory"
  echo "0 passed, 1 failed"
  exit 1
}
decoy_pid=''
recv_pid=''
cleanup() {
  if [ -n "$decoy_pid" ]; then kill "$decoy_pid" 2>/dev/null; fi
  if [ -n "$recv_pid" ]; then kill "$recv_pid" 2>/dev/null; wait "$recv_pid" 2>/dev/null; fi
  rm -rf -- "$WORK"
}
trap cleanup EXIT

# shellcheck disable=SC2016 # literal dollar signs
HASH_6='$6$' HASH_Y='$y$' HASH_1='$1$'
# CORDON_CAPTURE_MEMORY may only be compared with a literal, or named inside a single-quoted string.
# shellcheck disable=SC2016 # literal dollar signs in a regular expression
LITERAL_USE='\[ (-z |-n )?"\$\{?CORDON_CAPTURE_MEMORY(\+x|-)?\}?"( (!?=) "[01]")? \]|'"'"'[^'"'"'$]*CORDON_CAPTURE_MEMORY[^'"'"']*'"'"
# The stand-in image: recognisable, and over 1 MiB so that curl sends "Expect: 100-continue" as for S3.
IMAGE_LINE='cordon test memory image'
IMAGE_BYTES=3000000
IMAGE_SHA=$(yes "$IMAGE_LINE" | head -c "$IMAGE_BYTES" | sha256sum | cut -d' ' -f1)
IS_ROOT=0
if [ "$(id -u)" = 0 ]; then IS_ROOT=1; fi
REAL_AVML=0
if PATH="/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/sbin:/usr/local/bin:$PATH" command -v avml >/dev/null 2>&1; then
  REAL_AVML=1
fi
MEM_TOTAL_K=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)

none_exist() {
  local f
  for f in "$@"; do [ ! -e "$f" ] || return 1; done
}
not_in_file() { ! grep -q -F -e "$1" "$2"; }
none_as_line() { # none_as_line FILE LINE...
  local f=$1 l
  shift
  for l in "$@"; do ! grep -q -x -F -e "$l" "$f" || return 1; done
}
no_eval_or_source() {
  ! grep -v '^[[:space:]]*#' "$1" | grep -q -E '(^|[;&|[:space:]])(eval|source|\.)[[:space:]]+[^=]'
}

# Fallback only: top-level entries of the temp directories, without this test's own directory.
snapshot() {
  local d
  for d in /tmp /var/tmp /dev/shm; do
    [ -d "$d" ] && find "$d" -mindepth 1 -maxdepth 1 -printf '%p\n' 2>/dev/null
  done | grep -v -x -F -e "$WORK" | sort
}

# Fallback only: files under /etc and /var/spool changed after the marker was touched.
changed_since() {
  find /etc /var/spool -xdev -newer "$1" -print 2>/dev/null | head -n 20
}

# section NAME FILE: the lines between a section's header and its end marker.
section() {
  awk -v h="===== section: $1 =====" -v e="===== end-section: $1 " \
    'index($0, e) == 1 { p = 0 } p { print } $0 == h { p = 1 }' "$2"
}

# ---------------------------------------------------------------------------------------------------
# A local HTTP PUT receiver standing in for S3 presigned URLs (python3 -m http.server takes no PUT).
# It listens on 127.0.0.1 on a free port, answers 403 to paths under /deny/ and 200 to the others,
# stores each body and appends one line per request to log.tsv: seq, status, bytes, sha256, arrival
# time, body file, header names, path. It stops by itself after 20 minutes.
RECV_DIR="$WORK/receiver"
RECV_PORT=''
start_receiver() {
  mkdir -p "$RECV_DIR"
  : >"$RECV_DIR/log.tsv"
  python3 - "$RECV_DIR" <<'PY' >"$RECV_DIR/stdout" 2>"$RECV_DIR/stderr" &
import base64, hashlib, http.server, os, sys, threading, time

root = sys.argv[1]
lock = threading.Lock()
count = [0]

class Receiver(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # so that "Expect: 100-continue" is answered, as S3 does

    def do_PUT(self):
        arrived = time.time()
        length = int(self.headers.get("Content-Length", "-1"))
        body = self.rfile.read(length) if length >= 0 else b""
        # As S3 with Object Lock default retention: Content-MD5 is required and must match the body.
        digest = base64.b64encode(hashlib.md5(body).digest()).decode()
        if self.path.startswith("/deny/"):
            status = 403
        elif self.headers.get("Content-MD5") != digest:
            status = 400
        else:
            status = 200
        with lock:
            count[0] += 1
            seq = count[0]
            name = os.path.join(root, "body.%d" % seq)
            with open(name, "wb") as f:
                f.write(body)
            names = ",".join(sorted(k.lower() for k in self.headers.keys()))
            row = [str(seq), str(status), str(len(body)), hashlib.sha256(body).hexdigest(),
                   "%.6f" % arrived, name, names, self.path]
            with open(os.path.join(root, "log.tsv"), "a") as f:
                f.write("\t".join(row) + "\n")
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.send_header("Connection", "close")
        self.end_headers()

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
with open(os.path.join(root, "port.tmp"), "w") as f:
    f.write(str(server.server_address[1]))
os.rename(os.path.join(root, "port.tmp"), os.path.join(root, "port"))
threading.Timer(1200, server.shutdown).start()
server.serve_forever()
PY
  recv_pid=$!
  for _ in $(seq 1 100); do
    if [ -s "$RECV_DIR/port" ]; then
      RECV_PORT=$(cat "$RECV_DIR/port")
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# recv_entry PATH_PREFIX: the receiver's log line for the request whose path starts with PATH_PREFIX.
recv_entry() { awk -F '\t' -v p="$1" 'index($8, p) == 1 { print; exit }' "$RECV_DIR/log.tsv"; }
field() { cut -f "$1" <<<"$2"; }

# A fresh, unguessable stand-in for the signature of a presigned URL, to look for in every output.
new_token() { printf 'tok%s' "$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"; }

# url ROOT RUN KEY TOKEN: a presigned-looking URL on the receiver. Its query also carries shell syntax
# made only of URL-safe characters: if linux.sh ever evaluated the URL, $WORK/pwned-url would appear.
url() {
  # shellcheck disable=SC2016 # the $(...) and $IFS must reach linux.sh unexpanded
  printf 'http://127.0.0.1:%s/%s/%s/ssm/%s?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=%s&x=$(touch$IFS%s/pwned-url)' \
    "$RECV_PORT" "$1" "$2" "$3" "$4" "$WORK"
}

# ---------------------------------------------------------------------------------------------------
# Runs in a private mount namespace (unshare -m): optionally binds a stand-in over /proc/meminfo (to
# look like a host with little memory), puts a copy-on-write overlay over each directory in OVERLAID,
# runs the command, then lists to fd 3 everything that landed in the overlays' upper layers, i.e. every
# file the command created, changed or deleted there. Other processes on the machine do not see the
# overlays, so their concurrent writes cannot make the check fail. /tmp is mounted last: the scratch
# tmpfs holding the upper layers lives under it and is reached through the working directory.
OVERLAID=(/var/tmp /dev/shm /etc /root /home /var/spool /var/log /var/lib /tmp)
isolated_body() {
  local scratch=$1 size_k=$2 meminfo=$3 d n rc
  shift 3
  if ! mount -t tmpfs -o "size=${size_k}k,mode=700" cordon-test-scratch "$scratch" 2>/dev/null || ! cd "$scratch"; then
    echo "setup-failed: tmpfs" >&3
    exit 90
  fi
  if [ -n "$meminfo" ] && ! mount --bind "$meminfo" /proc/meminfo 2>/dev/null; then
    echo "setup-failed: bind over /proc/meminfo" >&3
    exit 90
  fi
  for d in "${OVERLAID[@]}"; do
    if [ ! -d "$d" ] || [ -L "$d" ]; then continue; fi
    n=${d//\//_}
    if ! mkdir "u$n" "w$n" || ! mount -t overlay cordon-test-overlay \
      -o "lowerdir=$d,upperdir=$scratch/u$n,workdir=$scratch/w$n" "$d" 2>/dev/null; then
      echo "setup-failed: overlay on $d" >&3
      exit 90
    fi
  done
  (cd / && "$@")
  rc=$?
  find u_* -mindepth 1 -printf 'written: %p (type %y)\n' >&3 2>&1
  exit "$rc"
}

# run_collection NAME [VAR=VALUE...]: run linux.sh with the CORDON_* variables removed from the
# environment plus the given ones (they travel as CORDON_TEST_VAR=VALUE in the environment, renamed by
# import_and_run, so that no URL is in any command line the processes section would show); leaves $WORK/NAME.stdout, .err, .rc, .secs, .writes, .avml-args, sets ISOLATED
# and checks that linux.sh wrote nothing. FAKE_MEMINFO (a file) makes /proc/meminfo look like it; it
# needs the isolation, so such a run is refused (rc 90, "setup-failed") without it.
FAKE_MEMINFO=''
ISOLATED=0
run_collection() {
  local name=$1 start rc mem_k changed kv
  shift
  local -a assignments=("$@")
  local cmd=(timeout -k 5 "$RUN_TIMEOUT" bash "$SCRIPT")
  ISOLATED=0
  start=$SECONDS
  if [ "$IS_ROOT" = 1 ] && command -v unshare >/dev/null 2>&1; then
    mkdir -p "$WORK/scratch-$name"
    mem_k=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
    # room for a memory image (linux.sh checks free space) although nothing that big is written here
    (
      for kv in ${assignments[@]+"${assignments[@]}"}; do export "CORDON_TEST_${kv?}"; done
      exec unshare -m --propagation private bash -c "OVERLAID=(${OVERLAID[*]}); $(declare -f isolated_body import_and_run); isolated_body \"\$@\"" \
        _ "$WORK/scratch-$name" "$((mem_k * 2 + 4194304))" "$FAKE_MEMINFO" import_and_run "${cmd[@]}"
    ) >"$WORK/$name.stdout" 2>"$WORK/$name.err" 3>"$WORK/$name.writes" 9>"$WORK/$name.avml-args"
    rc=$?
    if grep -q '^setup-failed:' "$WORK/$name.writes"; then
      echo "note   - [$name] overlay isolation unavailable ($(head -n 1 "$WORK/$name.writes")); using before/after listings"
    else
      ISOLATED=1
    fi
  fi
  if [ "$ISOLATED" = 0 ]; then
    if [ -n "$FAKE_MEMINFO" ]; then
      echo 90 >"$WORK/$name.rc"
      return 90
    fi
    snapshot >"$WORK/$name.before"
    touch "$WORK/$name.marker"
    sleep 1
    start=$SECONDS
    (
      for kv in ${assignments[@]+"${assignments[@]}"}; do export "CORDON_TEST_${kv?}"; done
      cd / && import_and_run "${cmd[@]}"
    ) >"$WORK/$name.stdout" 2>"$WORK/$name.err" 9>"$WORK/$name.avml-args"
    rc=$?
    snapshot >"$WORK/$name.after"
  fi
  echo "$rc" >"$WORK/$name.rc"
  echo "$((SECONDS - start))" >"$WORK/$name.secs"
  if [ "$ISOLATED" = 1 ]; then
    if [ ! -s "$WORK/$name.writes" ]; then
      ok "[$name] linux.sh left nothing behind (working directory removed; nothing created, changed or deleted under ${OVERLAID[*]})"
    else
      not_ok "[$name] linux.sh left nothing behind under ${OVERLAID[*]}" "$(cat "$WORK/$name.writes")"
    fi
    return "$rc"
  fi
  # Approximate: a concurrent process on the machine can make these fail.
  if diff -q "$WORK/$name.before" "$WORK/$name.after" >/dev/null; then
    ok "[$name] nothing added to or removed from /tmp, /var/tmp, /dev/shm (working directory removed)"
  else
    not_ok "[$name] /tmp, /var/tmp or /dev/shm changed (< before, > after)" \
      "$(diff "$WORK/$name.before" "$WORK/$name.after" | grep '^[<>]')"
  fi
  changed=$(changed_since "$WORK/$name.marker")
  if [ -z "$changed" ]; then
    ok "[$name] nothing under /etc or /var/spool modified"
  else
    not_ok "[$name] files under /etc or /var/spool modified during the run" "$changed"
  fi
  return "$rc"
}

# import_and_run CMD...: removes the CORDON_* variables this test was started with, turns every
# CORDON_TEST_X=V of the environment into X=V, then runs CMD.
import_and_run() {
  local v
  for v in $(compgen -e); do
    case $v in CORDON_TEST_*) ;; CORDON_*) unset -v "$v" ;; esac
  done
  for v in $(compgen -e); do
    case $v in CORDON_TEST_*) export "${v#CORDON_TEST_}=${!v}"; unset -v "$v" ;; esac
  done
  exec "$@"
}

# collection_from_stdout NAME: the collection is the run's stdout (no collection URL).
collection_from_stdout() { cp "$WORK/$1.stdout" "$WORK/$1.out"; }

# Common checks of one collection ($WORK/NAME.out) and its run. EXPECTED_RC defaults to 0.
check_output() {
  local name=$1 want_rc=${2:-0} out="$WORK/$1.out" err="$WORK/$1.err" rc s missing='' last n bad first
  rc=$(cat "$WORK/$name.rc")
  if [ "$rc" = "$want_rc" ]; then
    ok "[$name] exit code $want_rc (ran in $(cat "$WORK/$name.secs")s)"
  else
    not_ok "[$name] exit code $want_rc (got $rc after $(cat "$WORK/$name.secs")s)" "$(tail -n 5 "$err")"
  fi
  if [ ! -s "$err" ]; then
    ok "[$name] nothing on stderr"
  else
    not_ok "[$name] nothing on stderr" "$(head -n 10 "$err")"
  fi
  check "[$name] start marker is the first line" \
    grep -q -E '^===== cordon-collection: start version=[0-9]+ utc=[0-9TZ:-]+ =====$' <(head -n 1 "$out")
  for s in "${SECTIONS[@]}"; do
    n=$(grep -c -x -F "===== section: $s =====" "$out")
    if [ "$n" != 1 ] || ! grep -q -E "^===== end-section: $s status=(ok|failed|truncated) elapsed=[0-9]+s =====\$" "$out"; then
      missing+="$s (headers: $n) "
    fi
  done
  if [ -z "$missing" ]; then
    ok "[$name] all ${#SECTIONS[@]} section headers and end markers present once"
  else
    not_ok "[$name] section headers and end markers" "missing or repeated: $missing"
  fi
  first=$(grep -m 1 '^===== section: ' "$out")
  check "[$name] memory is the first section (order of volatility)" [ "$first" = '===== section: memory =====' ]
  n=$(grep -c '^===== section: ' "$out")
  check "[$name] no unexpected section (found $n)" [ "$n" = "${#SECTIONS[@]}" ]
  last=$(tail -n 1 "$out")
  if [[ $last =~ ^cordon-collection:\ complete\ sections=([0-9]+)\ failed=([0-9]+)$ ]]; then
    ok "[$name] summary is the last line: $last"
    check "[$name] summary counts ${#SECTIONS[@]} sections" [ "${BASH_REMATCH[1]}" = "${#SECTIONS[@]}" ]
    n=$(grep -c -E '^===== end-section: .* status=failed ' "$out")
    check "[$name] summary failed count matches failed sections ($n)" [ "${BASH_REMATCH[2]}" = "$n" ]
  else
    not_ok "[$name] summary is the last line" "last line: ${last:0:200}"
  fi
  # Count only: matching lines are never printed, they could hold a hash.
  bad=$(cat "$out" "$err" | grep -c -F -e "$HASH_6" -e "$HASH_Y" -e "$HASH_1")
  check "[$name] no password hash pattern (\$6\$, \$y\$, \$1\$) in the output (found $bad lines)" [ "$bad" = 0 ]
  bad=$(cat "$out" "$err" | grep -c -E 'linux\.sh: line [0-9]+:|unbound variable|syntax error near')
  if [ "$bad" = 0 ]; then
    ok "[$name] no bash error in the output"
  else
    not_ok "[$name] no bash error in the output" "$(cat "$out" "$err" | grep -E 'linux\.sh: line [0-9]+:|unbound variable|syntax error near' | head -n 5 | cut -c1-200)"
  fi
}

# check_machine_stdout NAME: with a collection URL, stdout holds only machine lines, then the summary.
check_machine_stdout() {
  local name=$1 other last
  other=$(grep -v -E '^CORDON_(ARTIFACT name=(memory\.lime|collection\.txt\.gz) sha256=[0-9a-f]{64} bytes=[0-9]+|GAP what=(memory|collection|upload) reason=.+)$' "$WORK/$name.stdout" | sed '$d')
  last=$(tail -n 1 "$WORK/$name.stdout")
  if [ -z "$other" ] && [[ $last =~ ^cordon-collection:\ complete\ sections=[0-9]+\ failed=[0-9]+$ ]]; then
    ok "[$name] stdout is only CORDON_ARTIFACT/CORDON_GAP lines and the summary ($(wc -l <"$WORK/$name.stdout") lines)"
  else
    not_ok "[$name] stdout is only CORDON_ARTIFACT/CORDON_GAP lines and the summary" "$(head -c 2000 "$WORK/$name.stdout")"
  fi
}

# check_line NAME DESCRIPTION EXACT_LINE: the run's stdout has this line.
check_line() {
  if grep -q -x -F -e "$3" "$WORK/$1.stdout"; then
    ok "[$1] $2"
  else
    not_ok "[$1] $2" "wanted: $3"$'\n'"stdout: $(grep -E '^(CORDON_|cordon-collection:)' "$WORK/$1.stdout" | head -n 10)"
  fi
}

# check_collection_uploaded NAME RUN_ROOT: the collection arrived gzipped at the receiver, with the
# sha256 and size of its CORDON_ARTIFACT line; leaves the decompressed collection in $WORK/NAME.out.
check_collection_uploaded() {
  local name=$1 root=$2 entry line sha bytes
  entry=$(recv_entry "/$root/$name/ssm/collection.txt.gz?")
  line=$(grep -E '^CORDON_ARTIFACT name=collection\.txt\.gz ' "$WORK/$name.stdout")
  if [ -z "$entry" ]; then
    not_ok "[$name] the collection archive arrived at the receiver" "artifact line: $line"
    : >"$WORK/$name.out"
    return 1
  fi
  sha=$(field 4 "$entry")
  bytes=$(field 3 "$entry")
  check "[$name] one PUT of collection.txt.gz (receiver answered $(field 2 "$entry"))" \
    [ "$(grep -c -F "/$root/$name/ssm/collection.txt.gz?" "$RECV_DIR/log.tsv")" = 1 ]
  if [ "$line" = "CORDON_ARTIFACT name=collection.txt.gz sha256=$sha bytes=$bytes" ]; then
    ok "[$name] CORDON_ARTIFACT for collection.txt.gz has the sha256 and size of what arrived"
  else
    not_ok "[$name] CORDON_ARTIFACT for collection.txt.gz has the sha256 and size of what arrived" \
      "line: $line"$'\n'"arrived: sha256=$sha bytes=$bytes"
  fi
  if gzip -t <"$(field 6 "$entry")" 2>/dev/null; then
    ok "[$name] the archive is gzip"
    gzip -d -c <"$(field 6 "$entry")" >"$WORK/$name.out"
  else
    not_ok "[$name] the archive is gzip"
    : >"$WORK/$name.out"
  fi
}

# check_put_request NAME ENTRY URL: the request came as sent: the full path and query, and no added
# header but Content-MD5 (a presigned URL is signed for the host header alone; S3 Object Lock needs
# the digest, which the receiver checks against the body: a missing or wrong one is answered 400).
check_put_request() {
  local name=$1 entry=$2 want=$3 headers extra
  check "[$name] the PUT used the URL's path and query exactly" [ "$(field 8 "$entry")" = "/${want#http://*/}" ]
  headers=$(field 7 "$entry")
  extra=$(tr ',' '\n' <<<"$headers" | grep -v -x -E 'host|user-agent|accept|content-length|expect|content-md5')
  check "[$name] the PUT added no header beyond Host, User-Agent, Accept, Content-Length, Expect, Content-MD5 ($headers)" [ -z "$extra" ]
  check "[$name] the PUT carried Content-MD5" grep -q 'content-md5' <<<"$headers"
  check "[$name] S3 (the receiver) accepted the PUT" [ "$(field 2 "$entry")" = 200 ]
}

# check_secret_absent NAME TOKEN...: no URL (its signature) in stdout, stderr, the collection, avml's args.
check_secret_absent() {
  local name=$1 t found=''
  shift
  for t in "$@"; do
    if grep -q -F -e "$t" "$WORK/$name.stdout" "$WORK/$name.err" "$WORK/$name.out" "$WORK/$name.avml-args" 2>/dev/null; then
      found+="$t "
    fi
  done
  check "[$name] the upload URLs are printed nowhere (stdout, stderr, collection, avml's arguments)" [ -z "$found" ]
}

# The stand-in avml: records its arguments and start time on fd 9 (opened by the test), waits 1.2 s (so
# that a capture after the identity section would show in the timestamps), writes a recognisable image
# to $1. AVML_SLEEP overrides the wait.
make_fake_avml() {
  mkdir -p "$WORK/bin"
  cat >"$WORK/bin/avml" <<STUB
#!/usr/bin/env bash
printf '%s\n' "\$#" "\$@" >&9
date +%s.%N >&9
sleep "\${AVML_SLEEP:-1.2}"
yes '$IMAGE_LINE' | head -c $IMAGE_BYTES >"\$1"
STUB
  chmod 755 "$WORK/bin/avml"
}

# A /proc/meminfo of a host with 1 GiB (the machine running the tests may have more than the 5 GiB an
# image may have to be uploaded in one PUT).
make_small_meminfo() {
  sed -E 's/^MemTotal:[[:space:]]+[0-9]+ kB$/MemTotal:        1048576 kB/' /proc/meminfo >"$WORK/meminfo-1g"
}

# ---------------------------------------------------------------------------------------------------
echo "# shellcheck"
if command -v shellcheck >/dev/null 2>&1; then
  if sc=$(shellcheck "$SCRIPT" 2>&1); then ok "shellcheck linux.sh: no findings"; else not_ok "shellcheck linux.sh" "$sc"; fi
  if sc=$(shellcheck "$HERE/test_linux.sh" 2>&1); then ok "shellcheck test_linux.sh: no findings"; else not_ok "shellcheck test_linux.sh" "$sc"; fi
else
  not_ok "shellcheck is installed (apt-get update && apt-get install -y shellcheck)"
fi
# Static guarantees: main is called without the script's arguments, nothing is eval'd or sourced, and
# CORDON_CAPTURE_MEMORY only appears in literal comparisons (and in the skip messages that name it).
check "linux.sh calls main without passing its arguments" grep -q -x 'main' "$SCRIPT"
check "linux.sh has no eval and sources nothing" no_eval_or_source "$SCRIPT"
uses=$(grep -v '^[[:space:]]*#' "$SCRIPT" | grep -F 'CORDON_CAPTURE_MEMORY' | grep -v -E "$LITERAL_USE")
if [ -z "$uses" ]; then
  ok "CORDON_CAPTURE_MEMORY is only compared literally"
else
  not_ok "CORDON_CAPTURE_MEMORY is only compared literally" "$uses"
fi
# The URLs reach curl only through its standard input (-K -): never on a command line, never echoed.
# shellcheck disable=SC2016 # literal dollar signs in a regular expression
uses=$(grep -v '^[[:space:]]*#' "$SCRIPT" | grep -E '\$\{?(COLLECTION_URL|MEMORY_URL|CORDON_UPLOAD_(COLLECTION|MEMORY)_URL)\b' |
  grep -v -E '^[[:space:]]*(COLLECTION_URL|MEMORY_URL)=\$CORDON_UPLOAD_(COLLECTION|MEMORY)_URL$|"\$\{CORDON_UPLOAD_(COLLECTION|MEMORY)_URL\+x\}"|valid_url "\$CORDON_UPLOAD_(COLLECTION|MEMORY)_URL"|upload "\$[a-z]+" "\$(COLLECTION|MEMORY)_URL"')
if [ -z "$uses" ]; then
  ok "the upload URLs are only validated, stored and passed to upload()"
else
  not_ok "the upload URLs are only validated, stored and passed to upload()" "$uses"
fi
check "upload() gives curl the URL on its standard input only" \
  grep -q -E "printf 'url = \"%s\"\\\\n' \"\\\$url\" \| curl -q " "$SCRIPT"

# ---------------------------------------------------------------------------------------------------
echo "# run 1: no CORDON_* variable (the collection on stdout, as for manual use)"
# A decoy process whose executable is deleted and whose argv tries to forge structural and machine
# lines and carries a crypt-hash-looking string: it must be flagged, hashed from /proc, and neutralised.
cp "$(command -v bash)" "$WORK/decoy"
decoy_sha=$(sha256sum "$WORK/decoy" | cut -d' ' -f1)
forged=$'x\n===== section: forged =====\ncordon-collection: complete sections=99 failed=0\nCORDON_ARTIFACT name=memory.lime sha256=0000000000000000000000000000000000000000000000000000000000000000 bytes=1\n'"${HASH_6}saltsalt\$hashhash"
# It waits with a builtin read on a FIFO (no child process to leave behind) for at most 90 s.
mkfifo "$WORK/decoy.fifo"
# shellcheck disable=SC2016 # $1 is the decoy's own argument
"$WORK/decoy" -c 'exec 3<>"$1"; read -r -t 90 -u 3 _; :' "$forged" "$WORK/decoy.fifo" </dev/null >/dev/null 2>&1 &
decoy_pid=$!
sleep 0.5
rm -f "$WORK/decoy"
run_collection default
kill "$decoy_pid" 2>/dev/null
wait "$decoy_pid" 2>/dev/null
decoy=$decoy_pid
decoy_pid=''
collection_from_stdout default
check_output default
proc=$(section processes "$WORK/default.out")
row=$(grep -E "^$decoy"$'\t' <<<"$proc")
if [[ $row == *$'\t'deleted,tmp-path$'\t'"$decoy_sha"$'\t'* ]]; then
  ok "[default] process with a deleted executable is flagged and hashed from /proc/PID/exe"
else
  not_ok "[default] process with a deleted executable is flagged and hashed from /proc/PID/exe" \
    "${row:0:300} (expected flags deleted,tmp-path and sha256 $decoy_sha)"
fi
check "[default] marker and machine lines forged in a command line are not at the start of a line" \
  none_as_line "$WORK/default.out" '===== section: forged =====' 'cordon-collection: complete sections=99 failed=0' \
  'CORDON_ARTIFACT name=memory.lime sha256=0000000000000000000000000000000000000000000000000000000000000000 bytes=1'
mem=$(section memory "$WORK/default.out")
if [ "$mem" = 'skipped: memory capture not requested (CORDON_CAPTURE_MEMORY is unset)' ]; then
  ok "[default] memory section says skipped"
else
  not_ok "[default] memory section says skipped" "$mem"
fi
check_line default "memory gap: not requested" \
  'CORDON_GAP what=memory reason=memory capture not requested (CORDON_CAPTURE_MEMORY is unset)'
check "[default] no collection upload line without a URL" not_in_file 'what=upload' "$WORK/default.stdout"
proc=$(section processes "$WORK/default.out")
check "[default] process table has a row for the collector's own bash with a sha256" \
  grep -q -E $'^[0-9]+\t[0-9]+\t[0-9]+\t[^\t]*\t[^\t]*\t[0-9a-f]{64}\t[^\t]*bash' <<<"$proc"
check "[default] identity section has the UTC date" \
  grep -q -E '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$' <(section identity "$WORK/default.out")
check "[default] identity section states the default budget" \
  grep -q -x -F -- '--- budget: 900s in all, 540s for memory; collection upload: unset; memory upload: unset' <(section identity "$WORK/default.out")
check "[default] accounts section reports shadow counts only" \
  grep -q -E '^(accounts=[0-9]+ with_usable_password=[0-9]+ .*|--- shadow: absent)$' <(section accounts "$WORK/default.out")

# ---------------------------------------------------------------------------------------------------
echo "# run 2: every CORDON_* variable holds shell syntax (none may be evaluated)"
# shellcheck disable=SC2016 # the $(...) must reach linux.sh unexpanded
inject='1$(touch '"$WORK"'/pwned1);touch '"$WORK"'/pwned2`touch '"$WORK"'/pwned3`'
# shellcheck disable=SC2016 # bash arithmetic on a[$(...)] would run the command
inject_int='a[$(touch '"$WORK"'/pwned4)]'
# shellcheck disable=SC2016
inject_url='https://x/$(touch '"$WORK"'/pwned5)`touch '"$WORK"'/pwned6`'
run_collection injection "CORDON_CAPTURE_MEMORY=$inject" "CORDON_BUDGET_SECONDS=$inject_int" \
  "CORDON_MEMORY_BUDGET_SECONDS=$inject_int" "CORDON_UPLOAD_MEMORY_URL=$inject_url"
collection_from_stdout injection
check_output injection
check "[injection] no injected command ran" none_exist "$WORK"/pwned[1-6]
check "[injection] no injected command wrote in the overlay" not_in_file pwned "$WORK/injection.writes"
mem=$(section memory "$WORK/injection.out")
if [ "$mem" = 'skipped: memory capture not requested (CORDON_CAPTURE_MEMORY is set but is neither 0 nor 1)' ]; then
  ok "[injection] memory section says skipped (neither 0 nor 1)"
else
  not_ok "[injection] memory section says skipped (neither 0 nor 1)" "$mem"
fi
check "[injection] invalid budgets are reported and the defaults used" grep -q -x -F -e \
  '--- setting: CORDON_BUDGET_SECONDS is not an integer in 60..7200; 900s is used' <(section identity "$WORK/injection.out")
check "[injection] invalid memory budget is reported" grep -q -x -F -e \
  '--- setting: CORDON_MEMORY_BUDGET_SECONDS is not an integer in 10..890; 540s is used' <(section identity "$WORK/injection.out")
# (the processes section legitimately shows it: it is in the test harness's own command lines)
awk '/^===== section: processes =====$/ { p = 1 } !p { print } /^===== end-section: processes / { p = 0 }' \
  "$WORK/injection.out" >"$WORK/injection.no-processes"
check "[injection] the variables' values are not echoed" not_in_file pwned "$WORK/injection.no-processes"

# ---------------------------------------------------------------------------------------------------
echo "# run 2b: a collection URL that is not URL-safe (the sections are not run, exit 1)"
run_collection badurl "CORDON_UPLOAD_COLLECTION_URL=$inject_url"
check "[badurl] exit code 1" [ "$(cat "$WORK/badurl.rc")" = 1 ]
check "[badurl] nothing on stderr" [ ! -s "$WORK/badurl.err" ]
check_machine_stdout badurl
check_line badurl "upload gap: invalid URL" \
  'CORDON_GAP what=upload reason=CORDON_UPLOAD_COLLECTION_URL is not an http(s) URL of URL-safe characters'
check_line badurl "summary: only the memory section ran" 'cordon-collection: complete sections=1 failed=0'
check "[badurl] no injected command ran" none_exist "$WORK"/pwned[1-6]

# ---------------------------------------------------------------------------------------------------
# Runs 3 to 8 upload to the local receiver.
if ! command -v python3 >/dev/null 2>&1; then
  not_ok "python3 is installed (the upload runs need it for the PUT receiver)"
  echo "$PASSED passed, $FAILED failed"
  exit 1
fi
if start_receiver; then
  ok "PUT receiver listening on 127.0.0.1:$RECV_PORT"
else
  not_ok "PUT receiver started" "$(cat "$RECV_DIR/stderr" 2>/dev/null)"
  echo "$PASSED passed, $FAILED failed"
  exit 1
fi
make_fake_avml
make_small_meminfo
FAKE_PATH="PATH=$PATH:$WORK/bin"

echo "# run 3: memory requested, a stand-in avml on PATH, a 1 GiB host, both URLs"
if [ "$IS_ROOT" != 1 ]; then
  echo "skip   - memory capture needs root (and the /proc/meminfo stand-in needs a mount namespace)"
elif [ "$REAL_AVML" = 1 ]; then
  echo "skip   - a real avml is installed; not capturing this machine's memory in a test"
else
  mem_token=$(new_token)
  col_token=$(new_token)
  mem_url=$(url bucket memory memory.lime "$mem_token")
  col_url=$(url bucket memory collection.txt.gz "$col_token")
  FAKE_MEMINFO="$WORK/meminfo-1g"
  run_collection memory CORDON_CAPTURE_MEMORY=1 CORDON_BUDGET_SECONDS=300 CORDON_MEMORY_BUDGET_SECONDS=180 \
    "CORDON_UPLOAD_MEMORY_URL=$mem_url" "CORDON_UPLOAD_COLLECTION_URL=$col_url" "$FAKE_PATH"
  FAKE_MEMINFO=''
  if [ "$ISOLATED" != 1 ]; then
    echo "skip   - [memory] needs the mount namespace isolation (for the /proc/meminfo stand-in)"
  else
    check_machine_stdout memory
    check_collection_uploaded memory bucket
    check_output memory
    entry=$(recv_entry "/bucket/memory/ssm/memory.lime?")
    check_line memory "CORDON_ARTIFACT for memory.lime has the stand-in image's sha256 and size" \
      "CORDON_ARTIFACT name=memory.lime sha256=$IMAGE_SHA bytes=$IMAGE_BYTES"
    if [ -n "$entry" ] && [ "$(field 4 "$entry")" = "$IMAGE_SHA" ] && [ "$(field 3 "$entry")" = "$IMAGE_BYTES" ]; then
      ok "[memory] the image arrived at the receiver unchanged (sha256 and size)"
    else
      not_ok "[memory] the image arrived at the receiver unchanged" "entry: $(cut -f1-5 <<<"$entry")"
    fi
    if [ -n "$entry" ]; then check_put_request memory "$entry" "$mem_url"; fi
    col_entry=$(recv_entry "/bucket/memory/ssm/collection.txt.gz?")
    if [ -n "$col_entry" ]; then check_put_request memory "$col_entry" "$col_url"; fi
    # Memory first: its upload arrived before the identity section read the clock (second resolution;
    # the stand-in avml waits 1.2 s, so a capture after identity would arrive a second or more later),
    # and before the collection.
    id_date=$(section identity "$WORK/memory.out" | grep -m 1 -E '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$')
    id_epoch=$(date -u -d "$id_date" +%s 2>/dev/null || echo 0)
    arrived=$(field 5 "$entry")
    if [ -n "$entry" ] && [ "${arrived%.*}" -le "$id_epoch" ] && [ "$(field 1 "$entry")" -lt "$(field 1 "$col_entry")" ]; then
      ok "[memory] memory was captured and uploaded before the other sections ran (arrived $arrived, identity clock $id_epoch)"
    else
      not_ok "[memory] memory was captured and uploaded before the other sections ran" \
        "memory arrived: ${arrived:-never}; identity clock: $id_date ($id_epoch)"
    fi
    avml_start=$(sed -n 3p "$WORK/memory.avml-args")
    check "[memory] avml started before the identity section's clock" [ "${avml_start%.*}" -le "$id_epoch" ]
    if [ "$(head -n 1 "$WORK/memory.avml-args")" = 1 ] \
      && grep -q -E '^/(var/)?tmp/cordon-work\.[A-Za-z0-9]{8}/memory\.lime$' <(sed -n 2p "$WORK/memory.avml-args"); then
      ok "[memory] avml was given exactly one argument, the image path in the script's working directory"
    else
      not_ok "[memory] avml was given exactly one argument" "$(cat "$WORK/memory.avml-args")"
    fi
    mem=$(section memory "$WORK/memory.out")
    check "[memory] the memory section reports the image" grep -q -x -F -e "--- memory image: bytes=$IMAGE_BYTES sha256=$IMAGE_SHA" <<<"$mem"
    check "[memory] the memory section says the image is deleted" grep -q 'the image is deleted now' <<<"$mem"
    check "[memory] the identity section states the given budgets" \
      grep -q -x -F -- '--- budget: 300s in all, 180s for memory; collection upload: valid; memory upload: valid' <(section identity "$WORK/memory.out")
    check_secret_absent memory "$mem_token" "$col_token"
    check "[memory] the URLs' shell syntax was not evaluated" none_exist "$WORK/pwned-url"
  fi
fi

# ---------------------------------------------------------------------------------------------------
echo "# run 4: memory requested, no avml on PATH"
if [ "$REAL_AVML" = 1 ]; then
  echo "skip   - a real avml is installed"
else
  mem_token=$(new_token)
  col_token=$(new_token)
  run_collection noavml CORDON_CAPTURE_MEMORY=1 CORDON_BUDGET_SECONDS=300 CORDON_MEMORY_BUDGET_SECONDS=180 \
    "CORDON_UPLOAD_MEMORY_URL=$(url bucket noavml memory.lime "$mem_token")" \
    "CORDON_UPLOAD_COLLECTION_URL=$(url bucket noavml collection.txt.gz "$col_token")"
  check_machine_stdout noavml
  check_collection_uploaded noavml bucket
  check_output noavml
  check_line noavml "memory gap: no avml" 'CORDON_GAP what=memory reason=avml is not on PATH (nothing is installed or downloaded)'
  check "[noavml] no image was uploaded" [ -z "$(recv_entry "/bucket/noavml/ssm/memory.lime?")" ]
  check_secret_absent noavml "$mem_token" "$col_token"
fi

# ---------------------------------------------------------------------------------------------------
echo "# run 5: the receiver refuses both uploads (403)"
if [ "$IS_ROOT" != 1 ] || [ "$REAL_AVML" = 1 ]; then
  echo "skip   - needs root and no real avml"
else
  mem_token=$(new_token)
  col_token=$(new_token)
  FAKE_MEMINFO="$WORK/meminfo-1g"
  run_collection refused CORDON_CAPTURE_MEMORY=1 CORDON_BUDGET_SECONDS=300 CORDON_MEMORY_BUDGET_SECONDS=180 \
    "CORDON_UPLOAD_MEMORY_URL=$(url deny refused memory.lime "$mem_token")" \
    "CORDON_UPLOAD_COLLECTION_URL=$(url deny refused collection.txt.gz "$col_token")" "$FAKE_PATH"
  FAKE_MEMINFO=''
  if [ "$ISOLATED" != 1 ]; then
    echo "skip   - [refused] needs the mount namespace isolation"
  else
    check_machine_stdout refused
    check "[refused] exit code 1: the collection archive was not uploaded" [ "$(cat "$WORK/refused.rc")" = 1 ]
    check "[refused] nothing on stderr" [ ! -s "$WORK/refused.err" ]
    check_line refused "memory gap: upload refused" 'CORDON_GAP what=memory reason=upload failed: HTTP 403'
    check_line refused "upload gap: collection refused" 'CORDON_GAP what=upload reason=upload failed: HTTP 403'
    check "[refused] no CORDON_ARTIFACT line" not_in_file 'CORDON_ARTIFACT' "$WORK/refused.stdout"
    entry=$(recv_entry "/deny/refused/ssm/memory.lime?")
    check "[refused] the image was sent (and refused)" [ "$(field 2 "$entry")" = 403 ]
    : >"$WORK/refused.out"
    check_secret_absent refused "$mem_token" "$col_token"
  fi
fi

# ---------------------------------------------------------------------------------------------------
echo "# run 6: memory not requested (CORDON_CAPTURE_MEMORY=0, as the sender sets it), both URLs"
mem_token=$(new_token)
col_token=$(new_token)
run_collection nomemory CORDON_CAPTURE_MEMORY=0 CORDON_BUDGET_SECONDS=300 CORDON_MEMORY_BUDGET_SECONDS=180 \
  "CORDON_UPLOAD_MEMORY_URL=$(url bucket nomemory memory.lime "$mem_token")" \
  "CORDON_UPLOAD_COLLECTION_URL=$(url bucket nomemory collection.txt.gz "$col_token")" "$FAKE_PATH"
check_machine_stdout nomemory
check_collection_uploaded nomemory bucket
check_output nomemory
check_line nomemory "memory gap: not requested" 'CORDON_GAP what=memory reason=memory capture not requested (CORDON_CAPTURE_MEMORY=0)'
check "[nomemory] avml was not run" [ ! -s "$WORK/nomemory.avml-args" ]
check "[nomemory] no image was uploaded" [ -z "$(recv_entry "/bucket/nomemory/ssm/memory.lime?")" ]
check_secret_absent nomemory "$mem_token" "$col_token"

# ---------------------------------------------------------------------------------------------------
echo "# run 7: memory requested on a host with more than 5 GiB (this machine: $((MEM_TOTAL_K / 1024)) MiB)"
if [ "$((MEM_TOTAL_K * 1024))" -le $((5 * 1024 * 1024 * 1024)) ]; then
  echo "skip   - this machine has at most 5 GiB of memory"
elif [ "$IS_ROOT" != 1 ] || [ "$REAL_AVML" = 1 ]; then
  echo "skip   - needs root and no real avml"
else
  mem_token=$(new_token)
  # (no collection URL: the collection is printed on stdout, the memory line among its sections)
  run_collection large CORDON_CAPTURE_MEMORY=1 "CORDON_UPLOAD_MEMORY_URL=$(url bucket large memory.lime "$mem_token")" "$FAKE_PATH"
  collection_from_stdout large
  check_output large
  check_line large "memory gap: too large for one PUT" \
    "CORDON_GAP what=memory reason=too large: MemTotal is $MEM_TOTAL_K KiB, and an image over 5 GiB cannot be uploaded in one PUT"
  check "[large] avml was not run" [ ! -s "$WORK/large.avml-args" ]
  check_secret_absent large "$mem_token"
fi

# ---------------------------------------------------------------------------------------------------
echo "# run 8: a 60 s budget and an avml that would take 200 s"
if [ "$IS_ROOT" != 1 ] || [ "$REAL_AVML" = 1 ]; then
  echo "skip   - needs root and no real avml"
else
  mem_token=$(new_token)
  col_token=$(new_token)
  FAKE_MEMINFO="$WORK/meminfo-1g"
  run_collection budget CORDON_CAPTURE_MEMORY=1 CORDON_BUDGET_SECONDS=60 CORDON_MEMORY_BUDGET_SECONDS=30 AVML_SLEEP=200 \
    "CORDON_UPLOAD_MEMORY_URL=$(url bucket budget memory.lime "$mem_token")" \
    "CORDON_UPLOAD_COLLECTION_URL=$(url bucket budget collection.txt.gz "$col_token")" "$FAKE_PATH"
  FAKE_MEMINFO=''
  if [ "$ISOLATED" != 1 ]; then
    echo "skip   - [budget] needs the mount namespace isolation"
  else
    secs=$(cat "$WORK/budget.secs")
    check "[budget] the whole run took at most the 60 s budget (took ${secs}s)" [ "$secs" -le 60 ]
    check_machine_stdout budget
    check_collection_uploaded budget bucket
    check_output budget
    # 45 % of the 30 s memory budget (12 s if the clock ticked as the section started)
    check "[budget] memory gap: avml stopped at its share of the memory budget" \
      grep -q -x -E 'CORDON_GAP what=memory reason=avml timed out after 1[23]s' "$WORK/budget.stdout"
    check "[budget] no image was uploaded" [ -z "$(recv_entry "/bucket/budget/ssm/memory.lime?")" ]
    check_secret_absent budget "$mem_token" "$col_token"
  fi
fi

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
