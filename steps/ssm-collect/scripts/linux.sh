#!/usr/bin/env bash
# shellcheck disable=SC2317 # the section functions are called indirectly (run_section NAME FUNCTION)
# cordon-collection: OS-level forensic collection for a suspected compromised Linux EC2 instance.
#
# Sent unchanged by SSM Run Command (AWS-RunShellScript). See README.md.
#
# Guarantees (keep them when editing):
#   * Read-only. It writes only into one working directory that it creates with mktemp (the memory
#     image, the collection archive) and removes before it exits, also on INT/TERM/HUP. It installs,
#     downloads, starts, stops and changes nothing. (Reading files can still update their access times.)
#   * No interpolation of the request. It takes no arguments. Its only inputs are five environment
#     variables that the sender sets to constants (README.md "Inputs"). Each is validated: "0"/"1"
#     literally, integers by a regular expression before any arithmetic, URLs by an allow-list of
#     characters. None is evaluated or expanded into a command. The two URLs are presigned S3 PUT URLs,
#     i.e. bearer credentials until they expire: they are never printed, and curl reads them from a
#     pipe (-K -), so they are not in any process's command line either.
#   * Memory first (order of volatility): the memory image is captured and uploaded before any other
#     section runs.
#   * Bounded. The whole run fits in CORDON_BUDGET_SECONDS: memory in CORDON_MEMORY_BUDGET_SECONDS,
#     then every section gets a share of what is left, minus a reserve for compressing and uploading.
#     Every command runs under `timeout` (when the host has it) within its section's share, and every
#     command's output and every section's output are capped in size.
#   * Not fatal. A failed command is reported in its section and the script goes on (set -u, no set -e).
#
# Output. The collection is "===== section: NAME =====" ... "===== end-section: NAME
# status=ok|failed|truncated ... =====", then "cordon-collection: complete sections=N failed=M". Section
# content is sanitised: control characters become "?", crypt(3) password hashes are redacted, and content
# lines that would look like structural or machine lines are indented by two spaces. With
# CORDON_UPLOAD_COLLECTION_URL the collection goes gzipped to that URL and stdout carries only the machine
# lines and the summary:
#   CORDON_ARTIFACT name=<memory.lime|collection.txt.gz> sha256=<64 hex> bytes=<n>
#   CORDON_GAP what=<memory|collection|upload> reason=<text to the end of the line>
#   cordon-collection: complete sections=N failed=M
# Without it (tests, manual use) the collection itself is printed on stdout, the machine lines between
# its sections. Exit status: 1 when a collection URL was given and the archive was not uploaded, else 0;
# 2 or 3 when the script cannot run at all (no bash >= 4; no head, sed or tr).

# Plain POSIX sh up to the bash check, so that the script still starts when a runner uses `sh`.
if [ -z "${BASH_VERSION:-}" ]; then
  if command -v bash >/dev/null 2>&1 && [ -f "$0" ] && grep -q 'cordon-collection' "$0" 2>/dev/null; then
    exec bash "$0"
  fi
  echo "cordon-collection: cannot run: bash is required" >&2
  exit 2
fi
if [ "${BASH_VERSINFO[0]}" -lt 4 ]; then
  echo "cordon-collection: cannot run: bash >= 4 is required (found ${BASH_VERSION})" >&2
  exit 2
fi

set -u
set -o pipefail
shopt -s nullglob dotglob

# A predictable environment: system directories first, C locale, UTC times, no pagers, no stdin.
PATH="/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/sbin:/usr/local/bin${PATH:+:${PATH}}"
export PATH LC_ALL=C LANG=C TZ=UTC PAGER=cat SYSTEMD_PAGER='' SYSTEMD_COLORS=0 TERM=dumb COLUMNS=512
unset -v LD_PRELOAD LD_LIBRARY_PATH BASH_ENV ENV CDPATH GREP_OPTIONS
umask 077
exec </dev/null

readonly CORDON_VERSION=1
readonly CMD_TIMEOUT=20                          # seconds for one command (capped by the section budget)
readonly HASH_TIMEOUT=30                         # seconds for hashing one file
readonly SECTION_BUDGET=60                       # seconds for one section (when the budget allows)
readonly PROCESS_BUDGET=150                      # seconds for the processes section (hashing)
readonly TMP_FILES_BUDGET=120                    # seconds for the recent_tmp_files section
# CORDON_BUDGET_SECONDS when unset or invalid: the script's share of the default 1,200 s collection budget
# (cordon_common::collection::Budget: 1200 - 240 delivery - 60 upload margin).
readonly DEFAULT_BUDGET=900
readonly MIN_BUDGET=60
readonly MAX_BUDGET=7200
# Kept at the end of the budget for gzip and the collection upload (at most a quarter of the budget).
readonly UPLOAD_RESERVE_MAX=30
# Parts of the memory budget (percent, counted from its start) by which AVML, then its hash must be
# done; the upload gets the rest. AVML writes the image at disk speed, the upload needs about as long.
readonly MEMORY_AVML_PCT=45
readonly MEMORY_HASH_PCT=60
# S3 takes at most 5 GiB in one PUT ("Upload an object in a single operation ... up to 5 GB",
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/upload-objects.html); a larger image would need a
# multipart upload, i.e. one presigned URL per part, which the sender does not provide.
readonly S3_SINGLE_PUT_MAX_BYTES=$((5 * 1024 * 1024 * 1024))
# Free space (KiB) wanted in the working directory beyond MemTotal, for the image.
readonly MEMORY_SPACE_MARGIN_K=$((1024 * 1024))
readonly CMD_MAX_BYTES=$((1024 * 1024))          # output of one command
readonly SECTION_MAX_BYTES=$((4 * 1024 * 1024))  # output of one section
readonly FILE_MAX_LINES=1000                     # lines shown of one configuration file
readonly HISTORY_MAX_LINES=500                   # last lines shown of one history file
readonly CMDLINE_MAX_CHARS=4096                  # characters shown of one process command line
readonly EXE_HASH_MAX_BYTES=$((256 * 1024 * 1024))
readonly TMP_HASH_MAX_BYTES=$((10 * 1024 * 1024))
readonly TMP_MAX_ENTRIES=2000
readonly RECENT_DAYS=7

have() { command -v -- "$1" >/dev/null 2>&1; }

for tool in head sed tr; do
  if ! have "$tool"; then
    echo "cordon-collection: cannot run: required tool '$tool' not found" >&2
    exit 3
  fi
done

HAVE_TIMEOUT=0
if have timeout; then HAVE_TIMEOUT=1; fi

SECTIONS=0
FAILED=0
FAILS=0               # failures inside the current section (the section runs in a subshell)
SECTION_DEADLINE=0
NOT_RUN=''            # sections not run because the budget was spent
FAILED_NAMES=''       # sections that ended failed
WORK_DIR=''           # the only place the script writes to (mktemp -d), created only when needed

# Settings, from the environment (read_settings).
BUDGET=$DEFAULT_BUDGET
MEMORY_BUDGET=$((DEFAULT_BUDGET * 3 / 5))
COLLECTION_URL=''     # presigned PUT URLs: bearer credentials, never printed
MEMORY_URL=''
COLLECTION_URL_STATE='unset'   # unset | valid | invalid
MEMORY_URL_STATE='unset'
SETTING_NOTES=()      # invalid settings, reported in the identity section

# ---------------------------------------------------------------------------------------------------
# Helpers (they run inside a section's subshell)

fail() { FAILS=$((FAILS + 1)); }

note() { printf -- '--- %s\n' "$*"; }

# Sets TIME_LEFT to the seconds a command may still take: the smaller of $1 (default CMD_TIMEOUT) and
# what is left of the section budget. Fails when the budget is spent. (Helpers that run once per process
# or file set a variable instead of printing, to avoid a fork per call.)
TIME_LEFT=0
time_left() {
  local want=${1:-$CMD_TIMEOUT} left=$((SECTION_DEADLINE - SECONDS))
  [ "$left" -gt 0 ] || return 1
  if [ "$left" -lt "$want" ]; then TIME_LEFT=$left; else TIME_LEFT=$want; fi
}

past_deadline() { [ "$SECONDS" -ge "$SECTION_DEADLINE" ]; }

# Report how a bounded command ended. Returns 0 for success or mere truncation.
report_rc() {
  local what=$1 rc=$2 secs=$3
  case $rc in
    0) return 0 ;;
    141) printf -- '\n--- truncated: output of [%s] exceeded %s bytes\n' "$what" "$CMD_MAX_BYTES"; return 0 ;;
    124 | 137) printf -- '\n--- failed: [%s] timed out after %ss\n' "$what" "$secs"; return 124 ;;
    *) printf -- '\n--- failed: [%s] exited with status %s\n' "$what" "$rc"; return "$rc" ;;
  esac
}

# exec_bounded SECONDS CMD [ARGS...]: run with a time limit and a size cap; output always ends in a
# newline (sed '$a\' adds one when missing). Prints no header.
# shellcheck disable=SC1003 # '$a\' is sed's "append", not an escaped quote
exec_bounded() {
  local secs=$1 st
  shift
  if [ "$HAVE_TIMEOUT" = 1 ]; then
    timeout -k 2 "$secs" "$@" 2>&1 | head -c "$CMD_MAX_BYTES" | sed -e '$a\'
  else
    "$@" 2>&1 | head -c "$CMD_MAX_BYTES" | sed -e '$a\'
  fi
  st=("${PIPESTATUS[@]}")
  report_rc "$*" "${st[0]}" "$secs"
}

# run CMD [ARGS...]: header line, then the bounded command. 127 when the tool is missing.
run() {
  local secs
  if ! have "$1"; then
    note "unavailable: $1 (not found on PATH)"
    return 127
  fi
  if ! time_left; then
    note "failed: [$*] not run: section time budget exhausted"
    return 124
  fi
  secs=$TIME_LEFT
  oneline "$*"
  note "command: $ONELINE"
  exec_bounded "$secs" "$@"
}

# try CMD...: run; a missing tool is only noted, any other failure counts against the section.
try() {
  local rc=0
  run "$@" || rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 127 ]; then fail; fi
  return "$rc"
}

# must CMD...: run; a missing tool also counts against the section.
must() { run "$@" || { fail; return 1; }; }

# One-line metadata of a path (no content).
meta() {
  stat -c 'type=%F size=%s owner=%U:%G mode=%a mtime=%y ctime=%z' -- "$1" 2>&1 | head -c 1024
}

# show_file PATH [LINES] [head|tail]: metadata then the first (or last) LINES lines of a regular file.
# Symlinks are reported with their target; FIFOs and devices are never opened.
show_file() {
  local f=$1 lines=${2:-$FILE_MAX_LINES} mode=${3:-head} secs
  if [ -L "$f" ]; then note "symlink: $f -> $(readlink -- "$f" 2>&1)"; fi
  if [ ! -e "$f" ]; then note "absent: $f"; return 0; fi
  if [ ! -f "$f" ]; then note "not a regular file, not read: $f ($(meta "$f"))"; return 0; fi
  if [ ! -r "$f" ]; then note "unreadable: $f ($(meta "$f"))"; fail; return 1; fi
  note "file: $f ($(meta "$f"))"
  if ! time_left; then note "failed: $f not read: section time budget exhausted"; fail; return 1; fi
  secs=$TIME_LEFT
  if [ "$mode" = tail ]; then
    exec_bounded "$secs" tail -n "$lines" -- "$f" || { fail; return 1; }
  else
    exec_bounded "$secs" head -n "$lines" -- "$f" || { fail; return 1; }
  fi
}

# show_dir DIR [LINES]: list DIR, then show each regular file directly inside it.
show_dir() {
  local d=$1 lines=${2:-$FILE_MAX_LINES} f
  if [ ! -d "$d" ]; then note "absent: $d"; return 0; fi
  try ls -la --time-style=full-iso -- "$d"
  for f in "$d"/*; do
    if [ -f "$f" ] || [ -L "$f" ]; then show_file "$f" "$lines"; fi
  done
}

# hash_file PATH [MAX_SECONDS]: sets HASH to the sha256 of a regular file (or /proc/PID/exe), or to
# why it was not hashed.
HASH=''
HAVE_SHA256SUM=0
if have sha256sum; then HAVE_SHA256SUM=1; fi
hash_file() {
  local f=$1 out
  HASH='not-hashed:no-sha256sum'
  [ "$HAVE_SHA256SUM" = 1 ] || return 1
  HASH='not-hashed:time-budget'
  time_left "${2:-$HASH_TIMEOUT}" || return 1
  if [ "$HAVE_TIMEOUT" = 1 ]; then
    out=$(timeout -k 1 "$TIME_LEFT" sha256sum -- "$f" 2>/dev/null) || { HASH='not-hashed:error-or-timeout'; return 1; }
  else
    out=$(sha256sum -- "$f" 2>/dev/null) || { HASH='not-hashed:error'; return 1; }
  fi
  out=${out%% *}
  HASH=${out#\\}
}

# Sets ONELINE to $1 with the characters that would break one-record-per-line output escaped.
ONELINE=''
oneline() {
  ONELINE=${1//$'\\'/\\\\}
  ONELINE=${ONELINE//$'\n'/\\n}
  ONELINE=${ONELINE//$'\t'/\\t}
}

# Home directories: from /etc/passwd, plus /root and /home/*; each once.
home_dirs() {
  local -A seen=()
  local name pw uid gid gecos home shell d
  if [ -r /etc/passwd ]; then
    while IFS=: read -r name pw uid gid gecos home shell; do
      : "$name" "$pw" "$uid" "$gid" "$gecos" "$shell"
      if [ -n "$home" ] && [ -d "$home" ] && [ -z "${seen[$home]+x}" ]; then
        seen[$home]=1
        printf '%s\n' "$home"
      fi
    done </etc/passwd
  fi
  for d in /root /home/*; do
    if [ -d "$d" ] && [ -z "${seen[$d]+x}" ]; then
      seen[$d]=1
      printf '%s\n' "$d"
    fi
  done
}

# Sanitise a section's output: control characters (except tab and newline) become "?", crypt(3) hashes
# are redacted, lines that look like structural markers or machine lines (CORDON_ARTIFACT, CORDON_GAP)
# are indented, the output ends with a newline.
# shellcheck disable=SC1003,SC2016 # sed's '$a\' and a literal '$' in a regular expression
sanitize() {
  tr '\000-\010\013-\037\177' '?' | sed -E \
    -e 's#\$(1|2[abxy]|5|6|7|y|gy|sha1|md5)\$[./A-Za-z0-9$=,+-]*#[REDACTED-CRYPT-HASH]#g' \
    -e 's#^(=====|cordon-collection:|CORDON_)#  \1#' \
    -e '$a\'
}

# ---------------------------------------------------------------------------------------------------
# Sections. Each returns non-zero when something it needed could not be collected.

sec_identity() {
  local f k v rest
  try date -u '+%Y-%m-%dT%H:%M:%SZ'
  if have hostname; then try hostname; else show_file /proc/sys/kernel/hostname; fi
  try uname -a
  show_file /etc/os-release
  if have uptime; then try uptime; fi
  show_file /proc/uptime
  while read -r k v rest; do
    if [ "$k" = btime ]; then
      note "boot time (btime, UTC): $(date -u -d "@$v" '+%Y-%m-%dT%H:%M:%SZ' 2>&1)"
      break
    fi
  done 2>/dev/null </proc/stat
  show_file /proc/cmdline
  show_file /etc/machine-id
  show_file /etc/timezone
  if [ -L /etc/localtime ]; then note "localtime -> $(readlink -- /etc/localtime)"; fi
  for f in sys_vendor product_name product_uuid board_asset_tag; do
    if [ -r "/sys/devices/virtual/dmi/id/$f" ]; then show_file "/sys/devices/virtual/dmi/id/$f"; fi
  done
  note "collector: cordon-collection version=$CORDON_VERSION bash=$BASH_VERSION pid=$$ euid=$EUID timeout=$HAVE_TIMEOUT"
  note "budget: ${BUDGET}s in all, ${MEMORY_BUDGET}s for memory; collection upload: $COLLECTION_URL_STATE; memory upload: $MEMORY_URL_STATE"
  for f in ${SETTING_NOTES[@]+"${SETTING_NOTES[@]}"}; do note "setting: $f"; done
  try id
  return $((FAILS > 0))
}

sec_processes() {
  local d pid exe cwd cmd ppid uid user k v rest flags sha size key n=0 unreadable=0 readable=0
  local -a pids=()
  local -A uname_of=() hash_of=()
  local suspicious=''
  if [ -r /etc/passwd ]; then
    while IFS=: read -r k v uid rest; do
      : "$v" "$rest"
      uname_of[$uid]=$k
    done </etc/passwd
  fi
  if have ps; then
    try ps -ewwo pid,ppid,user,lstart,stat,args
  else
    note "unavailable: ps (the table below is read from /proc)"
  fi
  note "process table from /proc; sha256 is of /proc/PID/exe (the running image, even if deleted on disk)"
  printf 'pid\tppid\tuid\tuser\tflags\tsha256\texe\tcwd\tcmdline\n'
  # numeric pid order when sort is available (pids are digits only)
  if have sort; then
    mapfile -t pids < <(for d in /proc/[0-9]*; do printf '%s\n' "${d#/proc/}"; done | sort -n)
  else
    for d in /proc/[0-9]*; do pids+=("${d#/proc/}"); done
  fi
  for pid in ${pids[@]+"${pids[@]}"}; do
    d=/proc/$pid
    if past_deadline; then
      note "failed: section time budget exhausted after $n processes"
      fail
      break
    fi
    [ -d "$d" ] || continue
    n=$((n + 1))
    ppid='?'
    uid='?'
    while read -r k v rest; do
      case $k in
        PPid:) ppid=$v ;;
        Uid:) uid=$v ;;
      esac
    done 2>/dev/null <"$d/status"
    user=${uname_of[$uid]-?}
    cmd=$(tr '\0' ' ' 2>/dev/null <"$d/cmdline")
    cmd=${cmd:0:$CMDLINE_MAX_CHARS}
    cwd=$(readlink -- "$d/cwd" 2>/dev/null) || cwd='?'
    flags=''
    sha='-'
    if exe=$(readlink -- "$d/exe" 2>/dev/null); then
      readable=$((readable + 1))
      key=$exe
      case $exe in
        *' (deleted)') flags+='deleted,'; key="pid:$pid" ;;
      esac
      case $exe in
        /memfd:*) flags+='memfd,' ;;
        /tmp/* | /var/tmp/* | /dev/shm/* | /run/user/*) flags+='tmp-path,' ;;
      esac
      if [ -n "${hash_of[$key]+x}" ]; then
        sha=${hash_of[$key]}
      else
        size=$(stat -L -c %s -- "$d/exe" 2>/dev/null) || size=0
        if [ "$size" -gt "$EXE_HASH_MAX_BYTES" ]; then
          sha="not-hashed:larger-than-$EXE_HASH_MAX_BYTES"
        else
          hash_file "$d/exe"
          sha=$HASH
        fi
        hash_of[$key]=$sha
      fi
    elif [ -z "$cmd" ]; then
      exe='[kernel thread]'
    else
      exe='?'
      flags+='exe-unreadable,'
      unreadable=$((unreadable + 1))
    fi
    flags=${flags%,}
    case $flags in *deleted* | *memfd* | *tmp-path*) suspicious+="$pid " ;; esac
    oneline "$exe"
    exe=$ONELINE
    oneline "$cwd"
    cwd=$ONELINE
    oneline "$cmd"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$pid" "$ppid" "$uid" "$user" "${flags:--}" "$sha" \
      "$exe" "$cwd" "$ONELINE"
  done
  note "processes: $n; executables readable: $readable; unreadable: $unreadable"
  note "processes with a deleted, memfd or temp-directory executable: ${suspicious:-none}"
  if [ "$readable" -eq 0 ] && [ "$unreadable" -gt 0 ]; then
    note "failed: no process executable could be read (not root, or /proc is restricted)"
    fail
  fi
  return $((FAILS > 0))
}

# Decode /proc/net/{tcp,udp}{,6}; IPv4 addresses are shown dotted, IPv6 as the kernel's hex.
proc_net() {
  local -A pid_of=()
  local tbl line sl local_a remote_a st txrx trtm retr uid tmo inode rest fam la ra secs
  local states=('?' ESTABLISHED SYN_SENT SYN_RECV FIN_WAIT1 FIN_WAIT2 TIME_WAIT CLOSE CLOSE_WAIT LAST_ACK LISTEN CLOSING NEW_SYN_RECV)
  if time_left && have find; then
    secs=$TIME_LEFT
    # socket inode -> pid, from /proc/PID/fd links (one find process)
    while read -r sl line; do
      line=${line#socket:[}
      line=${line%]}
      sl=${sl#/proc/}
      pid_of[$line]+="${sl%%/*},"
    done < <(timeout -k 1 "$secs" find /proc/[0-9]*/fd -mindepth 1 -maxdepth 1 -lname 'socket:*' -printf '%h %l\n' 2>/dev/null)
  fi
  printf 'proto\tlocal\tremote\tstate\tuid\tinode\tpids\n'
  for tbl in tcp tcp6 udp udp6; do
    [ -r "/proc/net/$tbl" ] || { note "absent: /proc/net/$tbl"; continue; }
    fam=4
    case $tbl in *6) fam=6 ;; esac
    while read -r sl local_a remote_a st txrx trtm retr uid tmo inode rest; do
      [ "$sl" = sl ] && continue
      : "$txrx" "$trtm" "$retr" "$tmo" "$rest"
      if [ "$fam" = 4 ]; then
        la=$(ip4 "$local_a")
        ra=$(ip4 "$remote_a")
      else
        la=$local_a
        ra=$remote_a
      fi
      case $tbl in
        tcp*) case $st in [0-9A-Fa-f][0-9A-Fa-f]) st=${states[$((16#$st))]-$st} ;; esac ;;
        *) st=- ;;
      esac
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$tbl" "$la" "$ra" "$st" "$uid" "$inode" "${pid_of[$inode]:--}"
    done < <(head -n 5000 "/proc/net/$tbl" 2>/dev/null)
  done
}

ip4() {
  local h=${1%%:*} p=${1##*:}
  if [ "${#h}" -ne 8 ]; then printf '%s' "$1"; return; fi
  printf '%d.%d.%d.%d:%d' "0x${h:6:2}" "0x${h:4:2}" "0x${h:2:2}" "0x${h:0:2}" "0x$p"
}

sec_network() {
  local done_sockets=0
  if have ss && run ss -tunap; then
    done_sockets=1
    try ss -tulnp
  elif have netstat && run netstat -tunap; then
    done_sockets=1
    try netstat -tulnp
  fi
  if [ "$done_sockets" = 0 ]; then note "ss and netstat unavailable or failed; decoded /proc/net follows"; fi
  note "sockets from /proc/net (cross-check)"
  if ! proc_net; then
    [ "$done_sockets" = 1 ] || fail
  fi
  if have ip; then
    try ip -o addr show
    try ip route show
    try ip -6 route show
  else
    show_file /proc/net/dev
    show_file /proc/net/route
  fi
  show_file /proc/net/arp
  show_file /etc/hosts
  show_file /etc/resolv.conf
  return $((FAILS > 0))
}

sec_logins() {
  local f found=0
  try who -a
  try w
  if [ -e /var/log/wtmp ]; then
    try last -F -w -x -n 50
  else
    note "absent: /var/log/wtmp (no login history from last)"
  fi
  if [ -r /var/log/btmp ]; then
    try lastb -F -w -n 50
  else
    note "skipped: lastb (/var/log/btmp absent or not readable)"
  fi
  for f in /var/log/auth.log /var/log/secure; do
    if [ -e "$f" ]; then found=1; show_file "$f" 300 tail; fi
  done
  if [ "$found" = 0 ] && [ -d /run/systemd/system ] && have journalctl; then
    try journalctl --no-pager -q -n 300 -t sshd -t sudo -t su -t login
  fi
  return $((FAILS > 0))
}

sec_kernel_modules() {
  local f
  if have lsmod && run lsmod; then
    :
  elif [ -r /proc/modules ]; then
    show_file /proc/modules 5000
  else
    note "failed: neither lsmod nor /proc/modules is available"
    fail
  fi
  show_file /proc/sys/kernel/tainted
  show_file /etc/modules
  for f in /etc/modules-load.d /etc/modprobe.d; do show_dir "$f" 200; done
  return $((FAILS > 0))
}

sec_cron() {
  local d
  show_file /etc/crontab
  show_file /etc/anacrontab
  show_file /etc/cron.allow
  show_file /etc/cron.deny
  for d in /etc/cron.d /etc/cron.hourly /etc/cron.daily /etc/cron.weekly /etc/cron.monthly; do
    show_dir "$d" 200
  done
  for d in /var/spool/cron /var/spool/cron/* /var/spool/at /var/spool/at/*; do
    if [ -d "$d" ] && [ ! -L "$d" ]; then show_dir "$d" 500; fi
  done
  if [ ! -d /var/spool/cron ]; then note "absent: /var/spool/cron"; fi
  return $((FAILS > 0))
}

sec_systemd() {
  local h d
  if [ -d /run/systemd/system ] && have systemctl; then
    try systemctl list-timers --all --no-pager
    try systemctl list-unit-files --no-pager
    try systemctl list-unit-files --state=enabled --no-pager
    try systemctl list-units --type=service --all --no-pager
  else
    note "systemd is not running here (no /run/systemd/system); unit files and init scripts are read from disk"
  fi
  if have find; then
    note "enabled units and local unit files (symlinks in *.wants/*.requires, files under /etc/systemd)"
    for d in /etc/systemd/system /etc/systemd/user /run/systemd/system /run/systemd/transient; do
      [ -d "$d" ] || continue
      try find "$d" -maxdepth 3 \( -type l -printf 'link %p -> %l\n' \) -o \( -type f -printf 'file %p size=%s mtime=%T+\n' \)
    done
    note "vendor unit files"
    local real vendor_seen=" "
    for d in /usr/lib/systemd/system /lib/systemd/system; do
      [ -d "$d" ] || continue
      real=$(readlink -f -- "$d" 2>/dev/null) || real=$d
      case $vendor_seen in *" $real "*) continue ;; esac
      vendor_seen+="$real "
      try find "$d" -maxdepth 1 \( -name '*.service' -o -name '*.timer' -o -name '*.socket' -o -name '*.path' \) -printf '%p mtime=%T+\n'
    done
  fi
  note "contents of locally defined units"
  for h in /etc/systemd/system/* /etc/systemd/user/*; do
    if [ -f "$h" ] && [ ! -L "$h" ]; then show_file "$h" 200; fi
  done
  while IFS= read -r h; do
    for d in "$h"/.config/systemd/user/*; do
      if [ -f "$d" ] && [ ! -L "$d" ]; then show_file "$d" 200; fi
    done
  done < <(home_dirs)
  note "SysV init and rc.local"
  if [ -d /etc/init.d ]; then try ls -la --time-style=full-iso /etc/init.d; fi
  show_file /etc/rc.local
  return $((FAILS > 0))
}

sec_shell_histories() {
  local h n f found=0
  local names=(.bash_history .zsh_history .zhistory .sh_history .ash_history .ksh_history .history
    .local/share/fish/fish_history .python_history .mysql_history .psql_history)
  while IFS= read -r h; do
    for n in "${names[@]}"; do
      f="$h/$n"
      if [ -L "$f" ] || [ -e "$f" ]; then
        found=$((found + 1))
        show_file "$f" "$HISTORY_MAX_LINES" tail
      fi
    done
  done < <(home_dirs)
  note "history files found: $found (last $HISTORY_MAX_LINES lines of each shown)"
  return $((FAILS > 0))
}

sec_recent_tmp_files() {
  local dir secs st
  if ! have find; then note "failed: find is unavailable"; fail; return 1; fi
  for dir in /tmp /var/tmp /dev/shm; do
    if [ ! -d "$dir" ]; then note "absent: $dir"; continue; fi
    if ! time_left 40; then note "failed: $dir not scanned: section time budget exhausted"; fail; continue; fi
    secs=$TIME_LEFT
    note "entries under $dir changed in the last $RECENT_DAYS days (mtime or ctime; same filesystem; at most $TMP_MAX_ENTRIES; sha256 for regular files up to $TMP_HASH_MAX_BYTES bytes)"
    printf 'type\tsize\towner\tgroup\tmode\tmtime\tsha256\tpath\n'
    timeout -k 1 "$secs" find "$dir" -xdev \( -mtime "-$RECENT_DAYS" -o -ctime "-$RECENT_DAYS" \) \
      -printf '%y\t%s\t%u\t%g\t%m\t%T+\t%p\0' 2>/dev/null | {
      local count=0 type size owner group mode mtime path sha
      while IFS=$'\t' read -r -d '' type size owner group mode mtime path; do
        count=$((count + 1))
        if [ "$count" -gt "$TMP_MAX_ENTRIES" ]; then
          note "truncated: more than $TMP_MAX_ENTRIES entries"
          break
        fi
        sha='-'
        if [ "$type" = f ]; then
          if [ "$size" -le "$TMP_HASH_MAX_BYTES" ]; then
            hash_file "$path"
            sha=$HASH
          else
            sha='not-hashed:too-large'
          fi
        fi
        oneline "$path"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$type" "$size" "$owner" "$group" "$mode" "$mtime" "$sha" "$ONELINE"
      done
      note "entries listed under $dir: $((count > TMP_MAX_ENTRIES ? TMP_MAX_ENTRIES : count))"
    }
    st=("${PIPESTATUS[@]}")
    case ${st[0]} in
      0 | 141) ;;
      1) note "find reported errors under $dir (e.g. unreadable entries); listing may be incomplete" ;;
      *) report_rc "find $dir" "${st[0]}" "$secs" || fail ;;
    esac
  done
  return $((FAILS > 0))
}

# shellcheck disable=SC2016 # the $N are awk fields, not shell expansions
sec_accounts() {
  if ! have awk; then note "failed: awk is unavailable"; fail; return 1; fi
  note "/etc/passwd (a password field other than x, * or ! is replaced by <password-field-set>)"
  if [ -r /etc/passwd ]; then
    try awk -F: 'BEGIN { OFS = ":" } { if ($2 != "x" && $2 != "*" && $2 != "!" && $2 != "") $2 = "<password-field-set>"; print }' /etc/passwd
    note "accounts with uid 0"
    try awk -F: '$3 == 0 { print $1 }' /etc/passwd
    note "accounts with a login shell"
    try awk -F: '$7 !~ /(nologin|false|sync|halt|shutdown)$/ && $7 != "" { print $1 ":" $3 ":" $6 ":" $7 }' /etc/passwd
  else
    note "failed: /etc/passwd is not readable"
    fail
  fi
  note "/etc/group (password field masked the same way)"
  if [ -r /etc/group ]; then
    try awk -F: 'BEGIN { OFS = ":" } { if ($2 != "x" && $2 != "*" && $2 != "!" && $2 != "") $2 = "<password-field-set>"; print }' /etc/group
  else
    note "unreadable or absent: /etc/group"
  fi
  note "/etc/shadow: presence and counts only; no hash and no account name is printed"
  if [ -e /etc/shadow ]; then
    note "shadow: present ($(meta /etc/shadow))"
    if [ -r /etc/shadow ]; then
      try awk -F: '
        { n++; p = $2; q = p; sub(/^!+/, "", q)
          if (p == "") empty++
          else if (p ~ /^[!*]/) { if (q != "" && q != "*") locked++; else nopw++ }
          else usable++ }
        END { printf "accounts=%d with_usable_password=%d with_empty_password=%d locked_with_password=%d without_password=%d\n", n, usable, empty, locked, nopw }' /etc/shadow
    else
      note "failed: /etc/shadow is not readable"
      fail
    fi
  else
    note "shadow: absent"
  fi
  if [ -r /etc/passwd ]; then
    try awk -F: '$2 != "x" && $2 != "*" && $2 != "!" { n++ } END { printf "passwd entries with a password field in /etc/passwd itself: %d\n", n }' /etc/passwd
  fi
  if [ -e /etc/gshadow ]; then note "gshadow: present ($(meta /etc/gshadow))"; else note "gshadow: absent"; fi
  return $((FAILS > 0))
}

sec_sudoers() {
  local f
  show_file /etc/sudoers
  if [ -d /etc/sudoers.d ]; then
    try ls -la --time-style=full-iso /etc/sudoers.d
    for f in /etc/sudoers.d/*; do show_file "$f"; done
  else
    note "absent: /etc/sudoers.d"
  fi
  return $((FAILS > 0))
}

sec_ssh() {
  local h f
  show_file /etc/ssh/sshd_config
  for f in /etc/ssh/sshd_config.d/*; do show_file "$f"; done
  while IFS= read -r h; do
    for f in "$h/.ssh/authorized_keys" "$h/.ssh/authorized_keys2"; do
      if [ -L "$f" ] || [ -e "$f" ]; then show_file "$f" 200; fi
    done
    if [ -d "$h/.ssh" ]; then try ls -la --time-style=full-iso -- "$h/.ssh"; fi
  done < <(home_dirs)
  return $((FAILS > 0))
}

sec_packages() {
  if have dpkg-query; then
    # shellcheck disable=SC2016 # ${...} is dpkg-query's format syntax, not the shell's
    must dpkg-query -W -f '${db:Status-Abbrev}\t${binary:Package}\t${Version}\n'
    show_file /var/log/dpkg.log 300 tail
    show_file /var/log/apt/history.log 300 tail
  fi
  if have rpm; then
    must rpm -qa --qf '%{NAME}\t%{VERSION}-%{RELEASE}\t%{ARCH}\t%{INSTALLTIME:date}\n'
    show_file /var/log/dnf.rpm.log 300 tail
    show_file /var/log/yum.log 300 tail
  fi
  if ! have dpkg-query && ! have rpm; then note "unavailable: neither dpkg-query nor rpm is installed"; fi
  return $((FAILS > 0))
}

# ---------------------------------------------------------------------------------------------------
# Memory (the first section)

MEM_SKIP=''      # why memory is not captured ('' when it is)
MEM_TOTAL_K=0

# Sets MEM_SKIP when memory is not to be captured. Runs in the main shell (it may create WORK_DIR).
memory_precheck() {
  local avail
  MEM_SKIP=''
  if [ -z "${CORDON_CAPTURE_MEMORY+x}" ]; then
    MEM_SKIP='memory capture not requested (CORDON_CAPTURE_MEMORY is unset)'
    return
  fi
  if [ "$CORDON_CAPTURE_MEMORY" = "0" ]; then
    MEM_SKIP='memory capture not requested (CORDON_CAPTURE_MEMORY=0)'
    return
  fi
  if [ "$CORDON_CAPTURE_MEMORY" != "1" ]; then
    MEM_SKIP='memory capture not requested (CORDON_CAPTURE_MEMORY is set but is neither 0 nor 1)'
    return
  fi
  case $MEMORY_URL_STATE in
    unset) MEM_SKIP='no upload URL for the image (CORDON_UPLOAD_MEMORY_URL is unset): an image that cannot be kept is not taken'; return ;;
    invalid) MEM_SKIP='CORDON_UPLOAD_MEMORY_URL is not an http(s) URL of URL-safe characters'; return ;;
  esac
  if ! have avml; then MEM_SKIP='avml is not on PATH (nothing is installed or downloaded)'; return; fi
  if [ "$EUID" -ne 0 ]; then MEM_SKIP='memory capture needs root'; return; fi
  if ! have curl; then MEM_SKIP='curl is not on PATH (needed to upload the image)'; return; fi
  if [ "$HAVE_TIMEOUT" != 1 ]; then MEM_SKIP='coreutils timeout is not on PATH (avml could not be held to the budget)'; return; fi
  if [ "$HAVE_SHA256SUM" != 1 ]; then MEM_SKIP='sha256sum is not on PATH'; return; fi
  if ! have awk || ! have df; then MEM_SKIP='awk or df is not on PATH (memory size and free space unknown)'; return; fi
  MEM_TOTAL_K=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo 2>/dev/null)
  case $MEM_TOTAL_K in '' | *[!0-9]*) MEM_SKIP='cannot read MemTotal from /proc/meminfo'; return ;; esac
  # An image is about the size of physical memory: refuse before writing gigabytes to the disk.
  if [ "$((MEM_TOTAL_K * 1024))" -gt "$S3_SINGLE_PUT_MAX_BYTES" ]; then
    MEM_SKIP="too large: MemTotal is ${MEM_TOTAL_K} KiB, and an image over 5 GiB cannot be uploaded in one PUT"
    return
  fi
  if ! make_work_dir; then MEM_SKIP='no working directory could be created in /var/tmp or /tmp'; return; fi
  avail=$(df -Pk -- "$WORK_DIR" 2>/dev/null | awk 'NR == 2 { print $4 }')
  case $avail in '' | *[!0-9]*) MEM_SKIP="cannot determine the free space in $WORK_DIR"; return ;; esac
  if [ "$avail" -lt $((MEM_TOTAL_K + MEMORY_SPACE_MARGIN_K)) ]; then
    MEM_SKIP="not enough free space in $WORK_DIR (${avail} KiB free, need MemTotal ${MEM_TOTAL_K} KiB + 1 GiB)"
  fi
}

# The memory section: capture with AVML, hash, upload, delete. The machine line (CORDON_ARTIFACT or
# CORDON_GAP) goes to $WORK_DIR/memory.result; the main shell prints it after the section.
sec_memory() {
  local img="$WORK_DIR/memory.lime" result="$WORK_DIR/memory.result" start secs rc size sha t0
  if [ -n "$MEM_SKIP" ]; then
    echo "skipped: $MEM_SKIP"
    return 0
  fi
  start=$((SECTION_DEADLINE - MEMORY_BUDGET))
  note "capturing memory with $(command -v avml) into $img (MemTotal ${MEM_TOTAL_K} KiB; ${MEMORY_BUDGET}s for avml, hash and upload)"
  secs=$((start + MEMORY_BUDGET * MEMORY_AVML_PCT / 100 - SECONDS))
  if [ "$secs" -lt 1 ]; then memory_gap "memory budget spent before avml could start"; return 1; fi
  t0=$SECONDS
  rc=0
  exec_bounded "$secs" avml "$img" || rc=$?
  if [ "$rc" = 124 ]; then memory_gap "avml timed out after ${secs}s"; return 1; fi
  if [ "$rc" != 0 ]; then memory_gap "avml failed (exit status $rc)"; return 1; fi
  if [ ! -f "$img" ] || [ -L "$img" ] || [ ! -s "$img" ]; then memory_gap "avml reported success but wrote no image"; return 1; fi
  size=$(stat -c %s -- "$img" 2>/dev/null)
  case $size in '' | *[!0-9]*) memory_gap "cannot read the image size"; return 1 ;; esac
  note "avml: image of $size bytes in $((SECONDS - t0))s"
  if [ "$size" -gt "$S3_SINGLE_PUT_MAX_BYTES" ]; then
    memory_gap "too large: the image is $size bytes, and more than 5 GiB cannot be uploaded in one PUT"
    return 1
  fi
  secs=$((start + MEMORY_BUDGET * MEMORY_HASH_PCT / 100 - SECONDS))
  if [ "$secs" -lt 1 ]; then memory_gap "memory budget spent before the image could be hashed"; return 1; fi
  if ! sha=$(timeout -k 2 "$secs" sha256sum -- "$img" 2>/dev/null); then
    memory_gap "sha256sum of the image failed or timed out after ${secs}s"
    return 1
  fi
  sha=${sha%% *}
  note "memory image: bytes=$size sha256=$sha"
  t0=$SECONDS
  if ! upload "$img" "$MEMORY_URL" "$((SECTION_DEADLINE - SECONDS))"; then
    memory_gap "$UPLOAD_ERR"
    return 1
  fi
  note "uploaded in $((SECONDS - t0))s; the image is deleted now"
  rm -f -- "$img"
  printf 'CORDON_ARTIFACT name=memory.lime sha256=%s bytes=%s\n' "$sha" "$size" >"$result"
  return 0
}

# memory_gap REASON: note it, count it, record the machine line, delete the image.
memory_gap() {
  note "failed: $1"
  fail
  printf 'CORDON_GAP what=memory reason=%s\n' "$1" >"$WORK_DIR/memory.result"
  rm -f -- "$WORK_DIR/memory.lime"
  note "the image (if any) is deleted"
}

# The machine line for memory, printed by the main shell after the memory section.
memory_line() {
  local line=''
  if [ -n "$MEM_SKIP" ]; then
    emit "CORDON_GAP what=memory reason=$MEM_SKIP"
    return
  fi
  if [ -f "$WORK_DIR/memory.result" ]; then
    IFS= read -r line <"$WORK_DIR/memory.result"
    rm -f -- "$WORK_DIR/memory.result" "$WORK_DIR/memory.lime"
  fi
  case $line in
    'CORDON_ARTIFACT name=memory.lime sha256='* | 'CORDON_GAP what=memory reason='*) emit "$line" ;;
    *) emit "CORDON_GAP what=memory reason=the capture did not complete within its budget" ;;
  esac
}

# ---------------------------------------------------------------------------------------------------
# Settings, working directory, upload

# valid_int VALUE MIN MAX: sets INT when VALUE is a decimal integer in MIN..MAX. The regular expression
# comes first: bash arithmetic on an unchecked string can run commands (a[$(...)]).
INT=0
valid_int() {
  [[ $1 =~ ^[0-9]{1,6}$ ]] || return 1
  INT=$((10#$1))
  [ "$INT" -ge "$2" ] && [ "$INT" -le "$3" ]
}

# valid_url VALUE: http(s) and only URL-safe characters (RFC 3986 unreserved, reserved and "%"): no
# space, quote, backslash, backquote, brace, bracket or control character.
readonly URL_RE='^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?/[A-Za-z0-9._~:/?#@!$&'"'"'()*+,;=%-]*$'
valid_url() { [ "${#1}" -le 8192 ] && [[ $1 =~ $URL_RE ]]; }

read_settings() {
  if [ -n "${CORDON_BUDGET_SECONDS+x}" ]; then
    if valid_int "$CORDON_BUDGET_SECONDS" "$MIN_BUDGET" "$MAX_BUDGET"; then
      BUDGET=$INT
    else
      SETTING_NOTES+=("CORDON_BUDGET_SECONDS is not an integer in $MIN_BUDGET..$MAX_BUDGET; ${DEFAULT_BUDGET}s is used")
    fi
  fi
  MEMORY_BUDGET=$((BUDGET * 3 / 5))
  if [ -n "${CORDON_MEMORY_BUDGET_SECONDS+x}" ]; then
    if valid_int "$CORDON_MEMORY_BUDGET_SECONDS" 10 "$((BUDGET - 10))"; then
      MEMORY_BUDGET=$INT
    else
      SETTING_NOTES+=("CORDON_MEMORY_BUDGET_SECONDS is not an integer in 10..$((BUDGET - 10)); ${MEMORY_BUDGET}s is used")
    fi
  fi
  if [ -n "${CORDON_UPLOAD_COLLECTION_URL+x}" ]; then
    if valid_url "$CORDON_UPLOAD_COLLECTION_URL"; then
      COLLECTION_URL=$CORDON_UPLOAD_COLLECTION_URL
      COLLECTION_URL_STATE=valid
    else
      COLLECTION_URL_STATE=invalid
    fi
  fi
  if [ -n "${CORDON_UPLOAD_MEMORY_URL+x}" ]; then
    if valid_url "$CORDON_UPLOAD_MEMORY_URL"; then
      MEMORY_URL=$CORDON_UPLOAD_MEMORY_URL
      MEMORY_URL_STATE=valid
    else
      MEMORY_URL_STATE=invalid
    fi
  fi
  # The URLs stay in shell variables only: no command the script runs inherits them.
  unset -v CORDON_UPLOAD_COLLECTION_URL CORDON_UPLOAD_MEMORY_URL
}

# Creates WORK_DIR once: /var/tmp first, because /tmp is often RAM-backed and cannot hold an image of RAM.
make_work_dir() {
  local base
  if [ -n "$WORK_DIR" ]; then return 0; fi
  have mktemp || return 1
  for base in /var/tmp /tmp; do
    if [ -d "$base" ] && [ ! -L "$base" ]; then
      WORK_DIR=$(mktemp -d "$base/cordon-work.XXXXXXXX" 2>/dev/null) && return 0
      WORK_DIR=''
    fi
  done
  return 1
}

# emit LINE: a machine line or the summary, on the command's stdout (fd 3), never in the collection.
emit() { printf '%s\n' "$1" >&3; }

# content_md5 FILE: the base64 of FILE's MD5 digest (RFC 1864), for the Content-MD5 header.
content_md5() {
  local hex bin='' i
  hex=$(md5sum -- "$1" 2>/dev/null) || return 1
  hex=${hex%% *}
  [[ $hex =~ ^[0-9a-f]{32}$ ]] || return 1
  for ((i = 0; i < 32; i += 2)); do bin+="\\x${hex:i:2}"; done
  # shellcheck disable=SC2059 # the format is only \xHH escapes of the checked hex digest
  printf "$bin" | base64
}

# upload FILE URL SECONDS: one PUT of FILE to a presigned URL; sets UPLOAD_ERR on failure.
# -q (first) ignores any .curlrc on this host; the URL comes on a pipe (-K -) so that it is in no
# command line; -g: no globbing of the URL; --proto: http(s) only; no -L: no redirects. The one
# header added is Content-MD5: the evidence bucket has Object Lock with a default retention, and S3
# refuses a PUT that gets a retention period without Content-MD5 or an x-amz-checksum-* header
# ("Content-MD5 OR x-amz-checksum- HTTP header is required for Put Object requests with Object Lock
# parameters", https://docs.aws.amazon.com/AmazonS3/latest/userguide/object-lock.html). It cannot be
# signed into the URL (the URL is made before these bytes exist), and reports show S3 refusing an
# unsigned Content-MD5 on a presigned request (HeadersNotSigned, aws/aws-sdk-ruby#543): a KNOWN
# DEFECT listed in the README ("Not verified"), to be fixed with a staging bucket without Object Lock.
# curl's messages are discarded: they can name the URL.
UPLOAD_ERR=''
upload() {
  local file=$1 url=$2 secs=$3 code md5 rc=0
  UPLOAD_ERR=''
  if [ "$secs" -lt 1 ]; then UPLOAD_ERR='upload failed: no time left in the budget'; return 1; fi
  if ! md5=$(content_md5 "$file"); then
    UPLOAD_ERR='upload failed: cannot compute the Content-MD5 that S3 Object Lock requires (md5sum and base64 are needed)'
    return 1
  fi
  code=$(printf 'url = "%s"\n' "$url" | curl -q -sS -g --fail --proto '=http,https' -X PUT -T "$file" -H "Content-MD5: $md5" \
    --connect-timeout "$((secs < 30 ? secs : 30))" --max-time "$secs" -o /dev/null -w '%{http_code}' -K - 2>/dev/null) || rc=$?
  case $code in [0-9][0-9][0-9]) ;; *) code='none' ;; esac
  case $rc in
    0) return 0 ;;
    22) UPLOAD_ERR="upload failed: HTTP $code" ;;
    28) UPLOAD_ERR="upload failed: timed out after ${secs}s" ;;
    6) UPLOAD_ERR='upload failed: could not resolve the host' ;;
    7) UPLOAD_ERR='upload failed: could not connect' ;;
    35 | 51 | 53 | 54 | 58 | 59 | 60 | 77 | 80 | 82 | 83 | 90 | 91) UPLOAD_ERR="upload failed: TLS error (curl exit status $rc)" ;;
    *) UPLOAD_ERR="upload failed: curl exit status $rc (HTTP $code)" ;;
  esac
  return 1
}

# Why the collection cannot be uploaded ('' when it can). May create WORK_DIR.
COLLECTION_SKIP=''
collection_precheck() {
  COLLECTION_SKIP=''
  if [ "$COLLECTION_URL_STATE" = invalid ]; then COLLECTION_SKIP='CORDON_UPLOAD_COLLECTION_URL is not an http(s) URL of URL-safe characters'; return; fi
  if ! have curl; then COLLECTION_SKIP='curl is not on PATH'; return; fi
  if ! have gzip; then COLLECTION_SKIP='gzip is not on PATH'; return; fi
  if [ "$HAVE_SHA256SUM" != 1 ]; then COLLECTION_SKIP='sha256sum is not on PATH'; return; fi
  if ! make_work_dir; then COLLECTION_SKIP='no working directory could be created in /var/tmp or /tmp'; return; fi
  if ! : 2>/dev/null >"$WORK_DIR/collection.txt"; then COLLECTION_SKIP="cannot write in $WORK_DIR"; fi
}

# Compresses and uploads the collection; prints the machine line. Returns 1 when it was not uploaded.
upload_collection() {
  local txt="$WORK_DIR/collection.txt" gz="$WORK_DIR/collection.txt.gz" secs sha size
  # What is left of the budget, but at least 15 s: the sender keeps a minute between the script's
  # budget and SSM's execution timeout for this upload.
  secs=$((START + BUDGET - SECONDS))
  if [ "$secs" -lt 15 ]; then secs=15; fi
  if ! timeout -k 2 "$secs" gzip -c -n -- "$txt" >"$gz" 2>/dev/null; then
    emit "CORDON_GAP what=upload reason=gzip of the collection failed or timed out after ${secs}s"
    return 1
  fi
  rm -f -- "$txt"
  if ! sha=$(timeout -k 2 "$secs" sha256sum -- "$gz" 2>/dev/null); then
    emit "CORDON_GAP what=upload reason=sha256sum of the archive failed or timed out"
    return 1
  fi
  sha=${sha%% *}
  size=$(stat -c %s -- "$gz" 2>/dev/null)
  secs=$((START + BUDGET - SECONDS))
  if [ "$secs" -lt 15 ]; then secs=15; fi
  if ! upload "$gz" "$COLLECTION_URL" "$secs"; then
    emit "CORDON_GAP what=upload reason=$UPLOAD_ERR"
    return 1
  fi
  emit "CORDON_ARTIFACT name=collection.txt.gz sha256=$sha bytes=$size"
}

# ---------------------------------------------------------------------------------------------------
# Driver

# run_section NAME FUNCTION BUDGET_SECONDS (0: not run, the budget is spent)
run_section() {
  local name=$1 fn=$2 budget=$3 start st status
  SECTIONS=$((SECTIONS + 1))
  FAILS=0
  start=$SECONDS
  SECTION_DEADLINE=$((SECONDS + budget))
  printf '===== section: %s =====\n' "$name"
  if [ "$budget" -lt 1 ]; then
    printf -- '--- not run: the collection time budget (%ss) is spent\n' "$BUDGET"
    printf '===== end-section: %s status=failed elapsed=0s =====\n' "$name"
    FAILED=$((FAILED + 1))
    NOT_RUN+="$name "
    return
  fi
  # fd 3 (the command's stdout) is closed for the section: only the main shell prints machine lines.
  "$fn" 2>&1 3>&- | sanitize | head -c "$SECTION_MAX_BYTES"
  st=("${PIPESTATUS[@]}")
  if [ "${st[0]}" = 0 ]; then
    status=ok
  elif [ "${st[0]}" = 141 ] && [ "${st[2]}" = 0 ]; then
    printf '\n--- section output truncated at %s bytes\n' "$SECTION_MAX_BYTES"
    status=truncated
  else
    status=failed
    FAILED=$((FAILED + 1))
    # (memory reports its own CORDON_GAP line)
    if [ "$name" != memory ]; then FAILED_NAMES+="$name "; fi
  fi
  printf '===== end-section: %s status=%s elapsed=%ss =====\n' "$name" "$status" "$((SECONDS - start))"
}

# The sections after memory, NAME:FUNCTION:SECONDS, SECONDS being the most a section gets.
readonly SECTION_PLAN=(
  "identity:sec_identity:$SECTION_BUDGET"
  "processes:sec_processes:$PROCESS_BUDGET"
  "network:sec_network:$SECTION_BUDGET"
  "logins:sec_logins:$SECTION_BUDGET"
  "kernel_modules:sec_kernel_modules:$SECTION_BUDGET"
  "cron:sec_cron:$SECTION_BUDGET"
  "systemd:sec_systemd:$SECTION_BUDGET"
  "shell_histories:sec_shell_histories:$SECTION_BUDGET"
  "recent_tmp_files:sec_recent_tmp_files:$TMP_FILES_BUDGET"
  "accounts:sec_accounts:$SECTION_BUDGET"
  "sudoers:sec_sudoers:$SECTION_BUDGET"
  "ssh:sec_ssh:$SECTION_BUDGET"
  "packages:sec_packages:$SECTION_BUDGET"
)

# run_sections END: runs the plan so that it ends by SECONDS=END. Each section gets its usual maximum
# or, when what is left does not cover the maxima of the sections still to run, a proportional share
# of what is left; time a section does not use goes to the ones after it.
run_sections() {
  local end=$1 entry name fn want share rest=0 left
  for entry in "${SECTION_PLAN[@]}"; do rest=$((rest + ${entry##*:})); done
  for entry in "${SECTION_PLAN[@]}"; do
    name=${entry%%:*}
    fn=${entry#*:}
    fn=${fn%%:*}
    want=${entry##*:}
    left=$((end - SECONDS))
    if [ "$left" -lt 1 ]; then
      share=0
    else
      share=$((left * want / rest))
      if [ "$share" -gt "$want" ]; then share=$want; fi
    fi
    rest=$((rest - want))
    run_section "$name" "$fn" "$share"
  done
}

cleanup() {
  case $WORK_DIR in
    /tmp/cordon-work.* | /var/tmp/cordon-work.*)
      if [ -d "$WORK_DIR" ]; then rm -rf -- "$WORK_DIR"; fi
      ;;
  esac
}

on_signal() {
  cleanup
  printf 'cordon-collection: interrupted sections=%d failed=%d\n' "$SECTIONS" "$FAILED" >&3
  exit 130
}

main() {
  local summary rc=0 reserve=0
  exec 3>&1
  trap cleanup EXIT
  trap on_signal INT TERM HUP
  START=$SECONDS
  read_settings
  # Where the collection goes: stdout (no URL), the working directory (then uploaded), or nowhere
  # (a URL was given but the upload cannot work: the sections are not run, since their output could
  # not be kept; it is not printed either, because SSM keeps command output for anyone allowed to read
  # the account's command history).
  local mode=stdout
  if [ "$COLLECTION_URL_STATE" != unset ]; then
    collection_precheck
    if [ -z "$COLLECTION_SKIP" ]; then
      mode=upload
      exec >"$WORK_DIR/collection.txt"
      reserve=$((BUDGET / 4 < UPLOAD_RESERVE_MAX ? BUDGET / 4 : UPLOAD_RESERVE_MAX))
    else
      mode=none
      exec >/dev/null
      emit "CORDON_GAP what=upload reason=$COLLECTION_SKIP"
    fi
  fi
  memory_precheck
  printf '===== cordon-collection: start version=%s utc=%s =====\n' "$CORDON_VERSION" "$(date -u '+%Y-%m-%dT%H:%M:%SZ' 2>/dev/null)"
  # Memory first (order of volatility): nothing else has run on the host yet.
  if [ -n "$MEM_SKIP" ]; then
    run_section memory sec_memory 1
  else
    run_section memory sec_memory "$MEMORY_BUDGET"
  fi
  memory_line
  if [ "$mode" != none ]; then
    run_sections "$((START + BUDGET - reserve))"
  fi
  if [ -n "$NOT_RUN" ]; then emit "CORDON_GAP what=collection reason=not run, the time budget was spent: ${NOT_RUN% }"; fi
  if [ -n "$FAILED_NAMES" ]; then emit "CORDON_GAP what=collection reason=sections failed (details in the collection): ${FAILED_NAMES% }"; fi
  summary=$(printf 'cordon-collection: complete sections=%d failed=%d' "$SECTIONS" "$FAILED")
  printf '%s\n' "$summary"
  case $mode in
    upload)
      exec >&3
      upload_collection || rc=1
      emit "$summary"
      ;;
    none)
      exec >&3
      rc=1
      emit "$summary"
      ;;
  esac
  cleanup
  exit "$rc"
}

main
