#!/usr/bin/env bash
# shellcheck disable=SC2317 # the section functions are called indirectly (run_section NAME FUNCTION)
# cordon-collection: OS-level forensic collection for a suspected compromised Linux EC2 instance.
#
# Sent unchanged by SSM Run Command (AWS-RunShellScript); its stdout/stderr go to S3. See README.md.
#
# Guarantees (keep them when editing):
#   * Read-only. It writes to stdout/stderr only; with memory capture on, it also writes the image into
#     one directory it creates with mktemp and removes before it exits. It installs, downloads, starts,
#     stops and changes nothing. (Reading files can still update their access times; see README.md.)
#   * No interpolation of the request. It takes no arguments. Its only input is the environment
#     variable CORDON_CAPTURE_MEMORY, compared literally with the string "1"; it is never evaluated,
#     never expanded into a command and never printed.
#   * Bounded. Every command runs under `timeout` (when the host has it) within a per-section time
#     budget, and every command's output and every section's output are capped in size.
#   * Not fatal. A failed command is reported in its section and the script goes on (set -u, no set -e).
#     Exit status is 0 whenever the collection ran, even with failed sections.
#
# Output: "===== section: NAME =====" ... "===== end-section: NAME status=ok|failed|truncated ... =====",
# then one last line "cordon-collection: complete sections=N failed=M". Section content is sanitised:
# control characters become "?", crypt(3) password hashes are redacted, and content lines that would
# look like these structural lines are indented by two spaces.

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
readonly SECTION_BUDGET=60                       # seconds for one section
readonly PROCESS_BUDGET=150                      # seconds for the processes section (hashing)
readonly MEMORY_TIMEOUT=2400                     # seconds for AVML
readonly MEMORY_HASH_TIMEOUT=900                 # seconds for hashing the memory image
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
MEM_TMP=''            # the only place the script writes to, created only for memory capture

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
# are redacted, lines that look like structural markers are indented, the output ends with a newline.
# shellcheck disable=SC1003,SC2016 # sed's '$a\' and a literal '$' in a regular expression
sanitize() {
  tr '\000-\010\013-\037\177' '?' | sed -E \
    -e 's#\$(1|2[abxy]|5|6|7|y|gy|sha1|md5)\$[./A-Za-z0-9$=,+-]*#[REDACTED-CRYPT-HASH]#g' \
    -e 's#^(=====|cordon-collection:)#  \1#' \
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

sec_memory() {
  local img avail mem sha size
  if [ -z "${CORDON_CAPTURE_MEMORY+x}" ]; then
    echo "skipped: memory capture not requested (CORDON_CAPTURE_MEMORY is unset)"
    return 0
  fi
  if [ "$CORDON_CAPTURE_MEMORY" != "1" ]; then
    echo "skipped: memory capture not requested (CORDON_CAPTURE_MEMORY is set but is not exactly 1)"
    return 0
  fi
  if ! have avml; then echo "skipped: avml is not on PATH (nothing is installed or downloaded)"; return 0; fi
  if [ "$EUID" -ne 0 ]; then echo "skipped: memory capture needs root"; return 0; fi
  if [ -z "$MEM_TMP" ] || [ ! -d "$MEM_TMP" ]; then echo "skipped: no temporary directory could be created"; return 0; fi
  mem=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo 2>/dev/null)
  avail=$(df -Pk -- "$MEM_TMP" 2>/dev/null | awk 'NR == 2 { print $4 }')
  case "$mem:$avail" in
    *[!0-9:]* | :* | *:)
      echo "skipped: cannot determine memory size or free disk space"
      return 0
      ;;
  esac
  if [ "$avail" -lt $((mem + 1048576)) ]; then
    echo "skipped: not enough free space in $MEM_TMP (${avail} KiB free, need MemTotal ${mem} KiB + 1 GiB)"
    return 0
  fi
  img="$MEM_TMP/memory.lime"
  note "capturing memory with $(command -v avml) into $img (MemTotal ${mem} KiB)"
  if ! exec_bounded "$MEMORY_TIMEOUT" avml "$img"; then
    note "failed: avml did not complete"
    fail
  elif [ ! -f "$img" ]; then
    note "failed: avml reported success but wrote no image"
    fail
  else
    size=$(stat -c %s -- "$img" 2>/dev/null)
    SECTION_DEADLINE=$((SECONDS + MEMORY_HASH_TIMEOUT))
    hash_file "$img" "$MEMORY_HASH_TIMEOUT"
    sha=$HASH
    echo "memory image: file=$img size=${size:-?} format=lime sha256=$sha"
    case $sha in not-hashed:*) fail ;; esac
  fi
  echo "note: uploading is not done by this script; the image is deleted before the script exits (now)"
  rm -f -- "$img"
  rmdir -- "$MEM_TMP" 2>/dev/null || true
  return $((FAILS > 0))
}

# ---------------------------------------------------------------------------------------------------
# Driver

# run_section NAME FUNCTION BUDGET_SECONDS
run_section() {
  local name=$1 fn=$2 budget=$3 start st status
  SECTIONS=$((SECTIONS + 1))
  FAILS=0
  start=$SECONDS
  SECTION_DEADLINE=$((SECONDS + budget))
  printf '===== section: %s =====\n' "$name"
  "$fn" 2>&1 | sanitize | head -c "$SECTION_MAX_BYTES"
  st=("${PIPESTATUS[@]}")
  if [ "${st[0]}" = 0 ]; then
    status=ok
  elif [ "${st[0]}" = 141 ] && [ "${st[2]}" = 0 ]; then
    printf '\n--- section output truncated at %s bytes\n' "$SECTION_MAX_BYTES"
    status=truncated
  else
    status=failed
    FAILED=$((FAILED + 1))
  fi
  printf '===== end-section: %s status=%s elapsed=%ss =====\n' "$name" "$status" "$((SECONDS - start))"
}

cleanup() {
  case $MEM_TMP in
    /tmp/cordon-mem.* | /var/tmp/cordon-mem.*)
      if [ -d "$MEM_TMP" ]; then rm -rf -- "$MEM_TMP"; fi
      ;;
  esac
}

on_signal() {
  cleanup
  printf '\ncordon-collection: interrupted sections=%d failed=%d\n' "$SECTIONS" "$FAILED"
  exit 130
}

prepare_memory_dir() {
  local base
  [ "${CORDON_CAPTURE_MEMORY-}" = "1" ] || return 0
  have avml || return 0
  have mktemp || return 0
  [ "$EUID" -eq 0 ] || return 0
  # /var/tmp first: /tmp is often RAM-backed, which cannot hold an image of RAM.
  for base in /var/tmp /tmp; do
    if [ -d "$base" ] && [ ! -L "$base" ]; then
      MEM_TMP=$(mktemp -d "$base/cordon-mem.XXXXXXXX" 2>/dev/null) && return 0
      MEM_TMP=''
    fi
  done
}

main() {
  trap cleanup EXIT
  trap on_signal INT TERM HUP
  printf '===== cordon-collection: start version=%s utc=%s =====\n' "$CORDON_VERSION" "$(date -u '+%Y-%m-%dT%H:%M:%SZ' 2>/dev/null)"
  run_section identity sec_identity "$SECTION_BUDGET"
  run_section processes sec_processes "$PROCESS_BUDGET"
  run_section network sec_network "$SECTION_BUDGET"
  run_section logins sec_logins "$SECTION_BUDGET"
  run_section kernel_modules sec_kernel_modules "$SECTION_BUDGET"
  run_section cron sec_cron "$SECTION_BUDGET"
  run_section systemd sec_systemd "$SECTION_BUDGET"
  run_section shell_histories sec_shell_histories "$SECTION_BUDGET"
  run_section recent_tmp_files sec_recent_tmp_files "$((SECTION_BUDGET + 60))"
  run_section accounts sec_accounts "$SECTION_BUDGET"
  run_section sudoers sec_sudoers "$SECTION_BUDGET"
  run_section ssh sec_ssh "$SECTION_BUDGET"
  run_section packages sec_packages "$SECTION_BUDGET"
  prepare_memory_dir
  run_section memory sec_memory "$((MEMORY_TIMEOUT + MEMORY_HASH_TIMEOUT + 60))"
  cleanup
  printf 'cordon-collection: complete sections=%d failed=%d\n' "$SECTIONS" "$FAILED"
  exit 0
}

main
