#!/usr/bin/env bash
# Tests for linux.sh: shellcheck, then real runs on this machine (as root, no systemd needed).
#
# Checks: exit code 0, every section header and end marker, the summary line, no crypt(3) hash pattern,
# the memory section skipped when CORDON_CAPTURE_MEMORY is unset, the variable never evaluated, memory
# capture with a stand-in avml (when no real avml is installed), and no file left behind in /tmp,
# /var/tmp or /dev/shm and nothing changed under /etc or /var/spool.
#
# The collection output is never printed (it holds every process's command line); only small
# excerpts are shown when a check fails. Last line: "N passed, M failed". Exit status 1 on failure.
set -u
set -o pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCRIPT="$HERE/linux.sh"
RUN_TIMEOUT=120
SECTIONS=(identity processes network logins kernel_modules cron systemd shell_histories
  recent_tmp_files accounts sudoers ssh packages memory)

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
cleanup() {
  if [ -n "$decoy_pid" ]; then kill "$decoy_pid" 2>/dev/null; fi
  rm -rf -- "$WORK"
}
trap cleanup EXIT

# shellcheck disable=SC2016 # literal dollar signs
HASH_6='$6$' HASH_Y='$y$' HASH_1='$1$'
# shellcheck disable=SC2016 # literal dollar signs in a regular expression
LITERAL_USE='\[ (-z )?"\$\{?CORDON_CAPTURE_MEMORY(\+x|-)?\}?"( (!?=) "1")? \]|echo "skipped: .*CORDON_CAPTURE_MEMORY'

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

# Runs in a private mount namespace (unshare -m): puts a copy-on-write overlay over each directory in
# OVERLAID, runs the command, then lists to fd 3 everything that landed in the overlays' upper layers,
# i.e. every file the command created, changed or deleted there. Other processes on the machine do not
# see the overlays, so their concurrent writes cannot make the check fail. /tmp is mounted last: the
# scratch tmpfs holding the upper layers lives under it and is reached through the working directory.
OVERLAID=(/var/tmp /dev/shm /etc /root /home /var/spool /var/log /var/lib /tmp)
isolated_body() {
  local scratch=$1 size_k=$2 d n rc
  shift 2
  if ! mount -t tmpfs -o "size=${size_k}k,mode=700" cordon-test-scratch "$scratch" 2>/dev/null || ! cd "$scratch"; then
    echo "setup-failed: tmpfs" >&3
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
  (cd / && exec "$@")
  rc=$?
  find u_* -mindepth 1 -printf 'written: %p (type %y)\n' >&3 2>&1
  exit "$rc"
}

# run_collection NAME [VAR=VALUE...]: run linux.sh with CORDON_CAPTURE_MEMORY removed from the
# environment plus the given variables; leaves $WORK/NAME.out, .err, .rc, .secs, .writes and checks that
# linux.sh wrote nothing.
run_collection() {
  local name=$1 start rc isolated=0 mem_k changed
  shift
  local cmd=(env -u CORDON_CAPTURE_MEMORY "$@" timeout -k 5 "$RUN_TIMEOUT" bash "$SCRIPT")
  start=$SECONDS
  if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null 2>&1; then
    mkdir -p "$WORK/scratch-$name"
    mem_k=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
    # room for a memory image (linux.sh checks free space) although nothing that big is written here
    unshare -m --propagation private bash -c "OVERLAID=(${OVERLAID[*]}); $(declare -f isolated_body); isolated_body \"\$@\"" \
      _ "$WORK/scratch-$name" "$((mem_k * 2 + 4194304))" "${cmd[@]}" \
      >"$WORK/$name.out" 2>"$WORK/$name.err" 3>"$WORK/$name.writes" 9>"$WORK/$name.avml-args"
    rc=$?
    if grep -q '^setup-failed:' "$WORK/$name.writes"; then
      echo "note   - [$name] overlay isolation unavailable ($(head -n 1 "$WORK/$name.writes")); using before/after listings"
    else
      isolated=1
    fi
  fi
  if [ "$isolated" = 0 ]; then
    snapshot >"$WORK/$name.before"
    touch "$WORK/$name.marker"
    sleep 1
    start=$SECONDS
    (cd / && "${cmd[@]}") >"$WORK/$name.out" 2>"$WORK/$name.err" 9>"$WORK/$name.avml-args"
    rc=$?
    snapshot >"$WORK/$name.after"
  fi
  echo "$rc" >"$WORK/$name.rc"
  echo "$((SECONDS - start))" >"$WORK/$name.secs"
  if [ "$isolated" = 1 ]; then
    if [ ! -s "$WORK/$name.writes" ]; then
      ok "[$name] linux.sh created, changed or deleted nothing under ${OVERLAID[*]}"
    else
      not_ok "[$name] linux.sh created, changed or deleted nothing under ${OVERLAID[*]}" "$(cat "$WORK/$name.writes")"
    fi
    return "$rc"
  fi
  # Approximate: a concurrent process on the machine can make these fail.
  if diff -q "$WORK/$name.before" "$WORK/$name.after" >/dev/null; then
    ok "[$name] nothing added to or removed from /tmp, /var/tmp, /dev/shm"
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

# Common checks of one run's output.
check_output() {
  local name=$1 out="$WORK/$1.out" err="$WORK/$1.err" rc s missing='' last n bad
  rc=$(cat "$WORK/$name.rc")
  if [ "$rc" = 0 ]; then
    ok "[$name] exit code 0 (ran in $(cat "$WORK/$name.secs")s)"
  else
    not_ok "[$name] exit code 0 (got $rc after $(cat "$WORK/$name.secs")s)" "$(tail -n 5 "$err")"
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

# ---------------------------------------------------------------------------------------------------
echo "# run 1: CORDON_CAPTURE_MEMORY unset"
# A decoy process whose executable is deleted and whose argv tries to forge structural lines and
# carries a crypt-hash-looking string: it must be flagged, hashed from /proc, and neutralised.
cp "$(command -v bash)" "$WORK/decoy"
decoy_sha=$(sha256sum "$WORK/decoy" | cut -d' ' -f1)
forged=$'x\n===== section: forged =====\ncordon-collection: complete sections=99 failed=0\n'"${HASH_6}saltsalt\$hashhash"
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
check_output default
proc=$(section processes "$WORK/default.out")
row=$(grep -E "^$decoy"$'\t' <<<"$proc")
if [[ $row == *$'\t'deleted,tmp-path$'\t'"$decoy_sha"$'\t'* ]]; then
  ok "[default] process with a deleted executable is flagged and hashed from /proc/PID/exe"
else
  not_ok "[default] process with a deleted executable is flagged and hashed from /proc/PID/exe" \
    "${row:0:300} (expected flags deleted,tmp-path and sha256 $decoy_sha)"
fi
check "[default] marker lines forged in a command line are not at the start of a line" \
  none_as_line "$WORK/default.out" '===== section: forged =====' 'cordon-collection: complete sections=99 failed=0'
mem=$(section memory "$WORK/default.out")
if grep -q -x 'skipped: memory capture not requested (CORDON_CAPTURE_MEMORY is unset)' <<<"$mem" \
  && ! grep -q 'memory image:' <<<"$mem"; then
  ok "[default] memory section says skipped"
else
  not_ok "[default] memory section says skipped" "$mem"
fi
proc=$(section processes "$WORK/default.out")
check "[default] process table has a row for the collector's own bash with a sha256" \
  grep -q -E $'^[0-9]+\t[0-9]+\t[0-9]+\t[^\t]*\t[^\t]*\t[0-9a-f]{64}\t[^\t]*bash' <<<"$proc"
check "[default] identity section has the UTC date" \
  grep -q -E '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$' <(section identity "$WORK/default.out")
check "[default] accounts section reports shadow counts only" \
  grep -q -E '^(accounts=[0-9]+ with_usable_password=[0-9]+ .*|--- shadow: absent)$' <(section accounts "$WORK/default.out")

# ---------------------------------------------------------------------------------------------------
echo "# run 2: CORDON_CAPTURE_MEMORY holds shell syntax (must not be evaluated)"
# shellcheck disable=SC2016 # the $(...) must reach linux.sh unexpanded
inject='1$(touch '"$WORK"'/pwned1);touch '"$WORK"'/pwned2`touch '"$WORK"'/pwned3`'
run_collection injection "CORDON_CAPTURE_MEMORY=$inject"
check_output injection
check "[injection] no injected command ran" none_exist "$WORK/pwned1" "$WORK/pwned2" "$WORK/pwned3"
check "[injection] no injected command wrote in the overlay" not_in_file pwned "$WORK/injection.writes"
mem=$(section memory "$WORK/injection.out")
if grep -q -x 'skipped: memory capture not requested (CORDON_CAPTURE_MEMORY is set but is not exactly 1)' <<<"$mem"; then
  ok "[injection] memory section says skipped (not exactly 1)"
else
  not_ok "[injection] memory section says skipped (not exactly 1)" "$mem"
fi
# (the processes section legitimately shows it: it is in the test harness's own command lines)
awk '/^===== section: processes =====$/ { p = 1 } !p { print } /^===== end-section: processes / { p = 0 }' \
  "$WORK/injection.out" >"$WORK/injection.no-processes"
check "[injection] the variable's value is not echoed" not_in_file pwned "$WORK/injection.no-processes"

# ---------------------------------------------------------------------------------------------------
echo "# run 3: CORDON_CAPTURE_MEMORY=1 with a stand-in avml"
if PATH="/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/sbin:/usr/local/bin:$PATH" command -v avml >/dev/null 2>&1; then
  echo "skip   - a real avml is installed; not capturing this machine's memory in a test"
elif [ "$(id -u)" != 0 ]; then
  echo "skip   - memory capture needs root"
else
  mkdir -p "$WORK/bin"
  cat >"$WORK/bin/avml" <<'STUB'
#!/usr/bin/env bash
# stand-in for avml: records its arguments on fd 9 (opened by the test) and writes a small image to $1
printf '%s\n' "$#" "$@" >&9
printf 'cordon test memory image\n' >"$1"
STUB
  chmod 755 "$WORK/bin/avml"
  want=$(printf 'cordon test memory image\n' | sha256sum | cut -d' ' -f1)
  run_collection memory "CORDON_CAPTURE_MEMORY=1" "PATH=$PATH:$WORK/bin"
  check_output memory
  mem=$(section memory "$WORK/memory.out")
  if grep -q '^skipped: not enough free space' <<<"$mem"; then
    echo "skip   - [memory] not enough free disk space here for the capture path: $(grep '^skipped' <<<"$mem")"
  else
    if grep -q -E "^memory image: file=/(var/)?tmp/cordon-mem\.[A-Za-z0-9]{8}/memory\.lime size=25 format=lime sha256=$want\$" <<<"$mem"; then
      ok "[memory] image file, size and sha256 reported"
    else
      not_ok "[memory] image file, size and sha256 reported" "$mem"
    fi
    check "[memory] output says the script does not upload" grep -q 'uploading is not done by this script' <<<"$mem"
    if [ "$(head -n 1 "$WORK/memory.avml-args")" = 1 ] \
      && grep -q -E '^/(var/)?tmp/cordon-mem\.[A-Za-z0-9]{8}/memory\.lime$' <(sed -n 2p "$WORK/memory.avml-args"); then
      ok "[memory] avml was given exactly one argument, the image path in the script's temp dir"
    else
      not_ok "[memory] avml was given exactly one argument" "$(cat "$WORK/memory.avml-args")"
    fi
    left=$(find /tmp /var/tmp -maxdepth 1 -name 'cordon-mem.*' 2>/dev/null)
    check "[memory] the temp dir was removed" [ -z "$left" ]
  fi
fi

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
